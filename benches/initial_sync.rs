//! Initial sync of a large collection, next to a plain "fetch the same pages with reqwest and
//! insert them into redb" client, with the peak RSS of each.
//!
//! Run: `cargo bench --bench initial_sync` (release): 100 000 records. Add
//! `TIDESYNC_BENCH_BIG=1` for 1 000 000 records as well (long: the reference server answers
//! every page by sorting the whole collection, see BENCHMARKS.md).
//!
//! For each size the parent process starts the reference server on 127.0.0.1 (its own
//! thread) and fills it with `insert_direct` (timed and printed). Every measurement then runs
//! in a fresh child process — this binary re-executed with `TIDESYNC_BENCH_CHILD` — so that
//! the peak RSS (`VmHWM` from `/proc/self/status`) is the client's alone (the server's data
//! stays in the parent) and sizes never mix:
//! - `engine`: a redb-backed engine with the REST transport pulls until it has every record
//!   (`engine.pull(None)`, keyset feed, `TIDESYNC_BENCH_PAGE` records per page);
//! - `raw`: reqwest GETs the same pages (same query, same page size) and inserts each page's
//!   records into redb in one `Durability::Immediate` transaction with the cursor, the same
//!   cache size as the engine's store;
//! - `fetch` (once per size): the same GETs, JSON parsed, nothing stored: the server-and-HTTP
//!   floor both sides share.
//!
//! Printed: seconds and records/s of each side and their ratio (target >= 0.7), peak RSS of
//! each side (target: 1M within 1.5x of 100k), and the fetch-only floor.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3, medians), `TIDESYNC_BENCH_SYNC_RECORDS` (default
//! 100000; replaces the size list), `TIDESYNC_BENCH_BIG=1` (adds 1 000 000),
//! `TIDESYNC_BENCH_PAGE` (default 1000, the server's largest page), `TIDESYNC_BENCH_CACHE_MB`
//! (redb's page cache on both sides, default the store's 64 MiB), `TIDESYNC_BENCH_DEFAULTS=1`
//! (the engine keeps the default `SyncSettings` paging: `page_size` 200, `max_pages` 1000, no
//! `initial_max_pages`, and must get every record in ONE `pull`: a first sync is never cut;
//! the raw side uses the same page size).
//!
//! The 1M first sync with default settings:
//! `TIDESYNC_BENCH_DEFAULTS=1 TIDESYNC_BENCH_SYNC_RECORDS=1000000 TIDESYNC_BENCH_RUNS=1 cargo bench --bench initial_sync`.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::Instant;

use redb::{Database, Durability, ReadableTableMetadata, TableDefinition};
use serde_json::Value;
use tidesync::{Engine, SyncSettings};
use tidesync_store_redb::{DEFAULT_CACHE_SIZE, RedbOptions};
use tidesync_testkit::server::ReferenceServer;

use common::{median, record, secs, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const RAW_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What a child measured.
#[derive(Debug, Clone, Copy, Default)]
struct ChildResult {
    secs: f64,
    records: u64,
    pages: u64,
    hwm_start_kb: u64,
    hwm_kb: u64,
}

impl ChildResult {
    fn line(&self) -> String {
        format!(
            "CHILD_RESULT secs={} records={} pages={} hwm_start_kb={} hwm_kb={}",
            self.secs, self.records, self.pages, self.hwm_start_kb, self.hwm_kb
        )
    }

    fn parse(stdout: &str) -> Option<ChildResult> {
        let line = stdout.lines().find(|l| l.starts_with("CHILD_RESULT "))?;
        let mut r = ChildResult::default();
        for field in line.split_whitespace().skip(1) {
            let (name, value) = field.split_once('=')?;
            match name {
                "secs" => r.secs = value.parse().ok()?,
                "records" => r.records = value.parse().ok()?,
                "pages" => r.pages = value.parse().ok()?,
                "hwm_start_kb" => r.hwm_start_kb = value.parse().ok()?,
                "hwm_kb" => r.hwm_kb = value.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }
}

fn hwm() -> u64 {
    common::proc_status_kb("VmHWM").unwrap_or(0)
}

/// redb's page cache on both sides: the store's default, or `TIDESYNC_BENCH_CACHE_MB` MiB (a
/// small cache shows the pull's own memory, which the default cache's growth hides).
fn cache_size() -> usize {
    std::env::var("TIDESYNC_BENCH_CACHE_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .map_or(DEFAULT_CACHE_SIZE, |mb| mb * 1024 * 1024)
}

/// Child: the engine pulls everything.
fn child_engine(url: &str, n: usize, page: usize) -> ChildResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime();
    let defaults = common::env_flag("TIDESYNC_BENCH_DEFAULTS");
    let settings = if defaults {
        common::manual_settings()
    } else {
        SyncSettings {
            page_size: page,
            max_pages: n / page + 10,
            ..common::manual_settings()
        }
    };
    let engine = Engine::builder()
        .store(
            RedbOptions::new()
                .cache_size(cache_size())
                .open(dir.path().join("engine.redb"))
                .expect("open"),
        )
        .table(common::posts())
        .transport(common::transport(url, false))
        .settings(settings)
        .start()
        .expect("engine");
    let posts = engine.table::<Value>("posts").expect("table");
    let hwm_start_kb = hwm();
    let start = Instant::now();
    let (mut records, mut pages) = (0u64, 0u64);
    while records < n as u64 {
        let report = rt.block_on(engine.pull(None)).expect("pull");
        if defaults {
            // A first sync with the default settings runs to its end in one cycle.
            assert!(report.converged, "first sync cut: {:?}", report.remaining);
            assert_eq!(report.applied, n as u64, "first sync: {report:?}");
        }
        if report.pages == 0 || report.applied == 0 {
            break;
        }
        records += report.applied;
        pages += report.pages;
    }
    let elapsed = secs(start);
    let hwm_kb = hwm();
    assert_eq!(rt.block_on(posts.count()).expect("count"), n as u64);
    engine.shutdown();
    ChildResult {
        secs: elapsed,
        records,
        pages,
        hwm_start_kb,
        hwm_kb,
    }
}

/// Child: reqwest fetches the same pages; with `store`, each page goes into redb in one
/// durable transaction together with the cursor.
fn child_raw(url: &str, n: usize, page: usize, store: bool) -> ChildResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime();
    let client = common::http_client();
    let db = store.then(|| {
        Database::builder()
            .set_cache_size(cache_size())
            .create(dir.path().join("raw.redb"))
            .expect("create")
    });
    let hwm_start_kb = hwm();
    let start = Instant::now();
    let (mut records, mut pages) = (0u64, 0u64);
    let mut cursor: Option<(String, String)> = None;
    rt.block_on(async {
        loop {
            let (items, has_more) = common::raw_keyset_page(&client, url, page, &mut cursor).await;
            if let Some(db) = &db {
                let mut txn = db.begin_write().expect("begin");
                txn.set_durability(Durability::Immediate)
                    .expect("durability");
                {
                    let mut table = txn.open_table(RAW).expect("table");
                    for item in &items {
                        let key = item["id"].as_str().expect("string id");
                        let value = serde_json::to_vec(item).expect("json");
                        table
                            .insert(key.as_bytes(), value.as_slice())
                            .expect("insert");
                    }
                    let mut meta = txn.open_table(RAW_META).expect("meta");
                    let cursor = serde_json::to_vec(&cursor).expect("cursor");
                    meta.insert("cursor", cursor.as_slice()).expect("cursor");
                }
                txn.commit().expect("commit");
            }
            records += items.len() as u64;
            pages += 1;
            if !has_more {
                break;
            }
        }
    });
    let elapsed = secs(start);
    let hwm_kb = hwm();
    assert_eq!(records, n as u64);
    if let Some(db) = &db {
        let read = redb::ReadableDatabase::begin_read(db).expect("read");
        let table = read.open_table(RAW).expect("table");
        assert_eq!(table.len().expect("len"), n as u64);
    }
    ChildResult {
        secs: elapsed,
        records,
        pages,
        hwm_start_kb,
        hwm_kb,
    }
}

fn run_child(mode: &str, url: &str, n: usize, page: usize) -> ChildResult {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(std::env::args().skip(1))
        .env("TIDESYNC_BENCH_CHILD", mode)
        .env("TIDESYNC_BENCH_URL", url)
        .env("TIDESYNC_BENCH_N", n.to_string())
        .env("TIDESYNC_BENCH_PAGE", page.to_string())
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), ChildResult::parse(&stdout)) {
        (true, Some(result)) => result,
        _ => panic!(
            "{mode} child failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    if let Ok(mode) = std::env::var("TIDESYNC_BENCH_CHILD") {
        let url = std::env::var("TIDESYNC_BENCH_URL").expect("url");
        let n: usize = std::env::var("TIDESYNC_BENCH_N")
            .expect("n")
            .parse()
            .expect("n");
        let page = common::env_usize("TIDESYNC_BENCH_PAGE", 1000, 1000);
        let result = match mode.as_str() {
            "engine" => child_engine(&url, n, page),
            "raw" => child_raw(&url, n, page, true),
            "fetch" => child_raw(&url, n, page, false),
            other => panic!("unknown child mode {other}"),
        };
        println!("{}", result.line());
        return;
    }

    let runs = common::runs();
    let page = if common::env_flag("TIDESYNC_BENCH_DEFAULTS") {
        SyncSettings::default().page_size
    } else {
        common::env_usize("TIDESYNC_BENCH_PAGE", 1000, 100)
    };
    let sizes: Vec<usize> = match std::env::var("TIDESYNC_BENCH_SYNC_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) => vec![n],
        None if !common::bench_mode() => vec![500],
        None if common::env_flag("TIDESYNC_BENCH_BIG") => vec![100_000, 1_000_000],
        None => vec![100_000],
    };
    println!(
        "initial_sync: sizes {sizes:?}, page size {page}, median of {runs} runs, one child process per measurement{}",
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    let mut engine_hwm = Vec::new();
    let mut raw_hwm = Vec::new();
    for &n in &sizes {
        common::section(&format!("{} records", thousands(n as f64)));
        let server = ReferenceServer::start_background();
        let start = Instant::now();
        for i in 0..n {
            server.insert_direct("posts", record(i)).expect("fill");
        }
        let fill = secs(start);
        println!(
            "  server filled with insert_direct in {fill:.2} s ({} records/s)",
            thousands(n as f64 / fill)
        );
        let (mut engine, mut raw) = (Vec::new(), Vec::new());
        for run in 0..runs {
            if run % 2 == 0 {
                engine.push(run_child("engine", server.url(), n, page));
                raw.push(run_child("raw", server.url(), n, page));
            } else {
                raw.push(run_child("raw", server.url(), n, page));
                engine.push(run_child("engine", server.url(), n, page));
            }
        }
        let fetch = run_child("fetch", server.url(), n, page);
        let e_secs = median(&engine.iter().map(|r| r.secs).collect::<Vec<_>>());
        let r_secs = median(&raw.iter().map(|r| r.secs).collect::<Vec<_>>());
        let ratios: Vec<f64> = engine
            .iter()
            .zip(&raw)
            .map(|(e, r)| r.secs / e.secs)
            .collect();
        let e_hwm = median(&engine.iter().map(|r| r.hwm_kb as f64).collect::<Vec<_>>()) as u64;
        let r_hwm = median(&raw.iter().map(|r| r.hwm_kb as f64).collect::<Vec<_>>()) as u64;
        let e_start = engine[0].hwm_start_kb;
        let r_start = raw[0].hwm_start_kb;
        println!(
            "  engine (pull, redb)        {e_secs:>8.2} s  {:>8} records/s  {} pages  peak RSS {:>7.1} MB (before the pull {:.1} MB)",
            thousands(n as f64 / e_secs),
            engine[0].pages,
            mb(e_hwm),
            mb(e_start)
        );
        println!(
            "  raw reqwest + redb         {r_secs:>8.2} s  {:>8} records/s  {} pages  peak RSS {:>7.1} MB (before the fetch {:.1} MB)",
            thousands(n as f64 / r_secs),
            raw[0].pages,
            mb(r_hwm),
            mb(r_start)
        );
        println!(
            "  ratio engine / raw         {:>8.2}   (target >= 0.7)",
            median(&ratios)
        );
        println!(
            "  fetch only (no store)      {:>8.2} s  {:>8} records/s  (1 run: the server + HTTP floor both share)   [{}]",
            fetch.secs,
            thousands(n as f64 / fetch.secs),
            common::machine_note()
        );
        engine_hwm.push((n, e_hwm));
        raw_hwm.push((n, r_hwm));
        drop(server);
        common::section_end();
    }
    if engine_hwm.len() > 1 {
        common::section("peak RSS growth");
        let (small_n, small) = engine_hwm[0];
        for &(n, kb) in &engine_hwm[1..] {
            println!(
                "  engine: {} records {:.1} MB vs {} records {:.1} MB = {:.2}x   (target <= 1.5x)",
                thousands(n as f64),
                mb(kb),
                thousands(small_n as f64),
                mb(small),
                kb as f64 / small as f64
            );
        }
        let (small_n, small) = raw_hwm[0];
        for &(n, kb) in &raw_hwm[1..] {
            println!(
                "  raw:    {} records {:.1} MB vs {} records {:.1} MB = {:.2}x",
                thousands(n as f64),
                mb(kb),
                thousands(small_n as f64),
                mb(small),
                kb as f64 / small as f64
            );
        }
        common::section_end();
    }
}
