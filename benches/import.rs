//! Bulk import (issue 18): `Table::bulk_write` and `tidesync import`, next to raw redb batched
//! inserts of the same rows in the same run; `tidesync put` one process per record for a small
//! N, extrapolated; `tidesync export` time and peak RSS.
//!
//! Run: `cargo build --release -p tidesync-cli && cargo bench --bench import` (the CLI figures
//! need the release `tidesync` binary next to the bench's `target/release`; without it they are
//! skipped). Prints, per run (the figure is the median of `TIDESYNC_BENCH_RUNS`, default 3):
//! 1. raw redb: the same N records serialized to JSON and inserted under their keys, 1 000
//!    per transaction, `Durability::Immediate` (one fsync per transaction); and the same
//!    plus, per record, an outbox row holding the record again in a second table (what an
//!    outbox that copies each record costs, as storage layout v2's entries did; layout v3's
//!    entries point at the record row instead, so the engine can pass this line);
//! 2. `Table::<Value>::bulk_write(records, Upsert, 1000)`: same batches, each one transaction
//!    with every record's outbox entry;
//! 3. `tidesync import posts FILE` (NDJSON of the same records, batches of 1 000), the whole
//!    process: start, config, store open, parse, writes, shutdown;
//! 4. `tidesync put posts JSON`, one process per record, for `TIDESYNC_BENCH_PUTS` records
//!    (default 200), extrapolated to N;
//! 5. `tidesync export posts > /dev/null` of the imported store: time and the child's peak
//!    RSS (`VmHWM`, polled), at N and at N/10, to show memory does not grow with the table.
//!
//! Records are about 1 KB of JSON each (`record_1k`). Fairness: both in-process sides get the
//! same `Vec<Value>` (cloned before the timer), write into a fresh file in the same directory
//! with the same durability and cache size; the order alternates between runs.
//!
//! Env: `TIDESYNC_BENCH_IMPORT` (N, default 100 000), `TIDESYNC_BENCH_PUTS` (default 200),
//! `TIDESYNC_BENCH_RUNS`.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use serde_json::{Value, json};
use tidesync::{BulkMode, Engine, RedbStore};
use tidesync_store_redb::DEFAULT_CACHE_SIZE;

use common::{env_usize, median, record_1k, runs, secs, section, section_end, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const RAW_ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raw_entries");
const BATCH: usize = 1000;

/// Raw redb: each record serialized and inserted under its key, `BATCH` per transaction.
/// With `entry`, also an outbox row per record in a second table, holding the record again
/// (serialized a second time), keyed by a sequence: an outbox that copies each record.
fn raw_import(dir: &Path, records: &[Value], entry: bool) -> f64 {
    let db = Database::builder()
        .set_cache_size(DEFAULT_CACHE_SIZE)
        .create(dir.join(if entry { "raw2.redb" } else { "raw.redb" }))
        .expect("create");
    let start = Instant::now();
    let mut seq = 0u64;
    for chunk in records.chunks(BATCH) {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        {
            let mut table = txn.open_table(RAW).expect("table");
            let mut entries = txn.open_table(RAW_ENTRIES).expect("table");
            for record in chunk {
                let key = record["id"].as_str().expect("id");
                let bytes = serde_json::to_vec(record).expect("json");
                table
                    .insert(key.as_bytes(), bytes.as_slice())
                    .expect("insert");
                if entry {
                    seq += 1;
                    let op = json!({"op": "create", "key": key, "record": record});
                    let bytes = serde_json::to_vec(&op).expect("json");
                    entries.insert(seq, bytes.as_slice()).expect("insert");
                }
            }
        }
        txn.commit().expect("commit");
    }
    secs(start)
}

fn table_import(dir: &Path, records: Vec<Value>) -> f64 {
    let engine = Engine::builder()
        .store(RedbStore::open(dir.join("engine.redb")).expect("open"))
        .table(common::posts())
        .start()
        .expect("start");
    let posts = engine.table::<Value>("posts").expect("table");
    let n = records.len();
    let rt = common::runtime();
    let start = Instant::now();
    let report = rt
        .block_on(posts.bulk_write(records, BulkMode::Upsert, BATCH))
        .expect("bulk write");
    let elapsed = secs(start);
    assert_eq!(report.written(), n, "every record written");
    assert_eq!(report.rejected().count(), 0);
    assert_eq!(rt.block_on(posts.count()).expect("count"), n as u64);
    assert_eq!(
        engine.outbox_stats("posts").expect("stats").depth,
        n as u64,
        "one outbox entry per record"
    );
    engine.shutdown();
    elapsed
}

/// The release (or debug, in smoke mode) `tidesync` binary next to this bench, if built.
fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/import-<hash> → target/<profile>/tidesync
    let bin = exe.parent()?.parent()?.join("tidesync");
    bin.exists().then_some(bin)
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("tidesync.toml");
    std::fs::write(
        &path,
        "[store]\npath = \"cli.redb\"\n\n[[tables]]\nname = \"posts\"\n",
    )
    .expect("config");
    path
}

fn cli(bin: &Path, cfg: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("-c")
        .arg(cfg)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

fn cli_import(bin: &Path, dir: &Path, file: &Path, n: usize) -> f64 {
    let cfg = config(dir);
    let start = Instant::now();
    let out = cli(
        bin,
        &cfg,
        &["import", "posts", file.to_str().expect("path"), "--json"],
    )
    .output()
    .expect("runs");
    let elapsed = secs(start);
    assert!(out.status.success(), "import failed: {out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["written"], n, "{report}");
    elapsed
}

/// Seconds per record of `tidesync put`, one process each, over `puts` records.
fn cli_puts(bin: &Path, dir: &Path, records: &[Value]) -> f64 {
    let cfg = config(dir);
    let start = Instant::now();
    for record in records {
        let out = cli(bin, &cfg, &["put", "posts", &record.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runs");
        assert!(out.success());
    }
    secs(start) / records.len() as f64
}

/// `tidesync export posts > /dev/null`: seconds and the child's peak RSS in kB (polled).
fn cli_export(bin: &Path, dir: &Path) -> (f64, u64) {
    let cfg = dir.join("tidesync.toml");
    let start = Instant::now();
    let mut child = cli(bin, &cfg, &["export", "posts"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kb) = text.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        {
            peak = peak.max(kb);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (secs(start), peak)
}

fn main() {
    let n = env_usize("TIDESYNC_BENCH_IMPORT", 100_000, 500);
    let puts = env_usize("TIDESYNC_BENCH_PUTS", 200, 5).min(n).max(1);
    let runs = runs();
    let records: Vec<Value> = (0..n).map(record_1k).collect();
    let bytes: usize = records.iter().map(|r| r.to_string().len() + 1).sum();
    let work = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let ndjson = work.path().join("records.ndjson");
    std::fs::write(
        &ndjson,
        records
            .iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .expect("ndjson");
    let bin = cli_binary();

    section(&format!(
        "import: {} records, {:.0} bytes each ({:.1} MB of NDJSON), batches of {BATCH}, {runs} \
         run(s)",
        thousands(n as f64),
        bytes as f64 / n as f64,
        bytes as f64 / 1e6
    ));
    let (mut raw, mut raw2, mut table, mut cli_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let dir = tempfile::tempdir_in(work.path()).expect("run dir");
        let copy = records.clone();
        let (r, r2, t) = if run.is_multiple_of(2) {
            let r = raw_import(dir.path(), &records, false);
            let r2 = raw_import(dir.path(), &records, true);
            (r, r2, table_import(dir.path(), copy))
        } else {
            let t = table_import(dir.path(), copy);
            let r2 = raw_import(dir.path(), &records, true);
            (raw_import(dir.path(), &records, false), r2, t)
        };
        let c = bin
            .as_ref()
            .map(|bin| cli_import(bin, dir.path(), &ndjson, n));
        println!(
            "   run {}: raw redb {r:.2} s, raw redb + outbox row {r2:.2} s, Table::bulk_write \
             {t:.2} s{}",
            run + 1,
            c.map(|c| format!(", tidesync import {c:.2} s"))
                .unwrap_or_default()
        );
        raw.push(r);
        raw2.push(r2);
        table.push(t);
        cli_times.extend(c);
    }
    let (raw, raw2, table) = (median(&raw), median(&raw2), median(&table));
    let rate = |s: f64| thousands(n as f64 / s);
    println!(
        "   raw redb batched inserts   {:>10} records/s  ({raw:.2} s)",
        rate(raw)
    );
    println!(
        "   raw redb + an outbox row   {:>10} records/s  ({raw2:.2} s)  = {:.2}x raw (an \
         outbox row copying each record)",
        rate(raw2),
        raw / raw2
    );
    println!(
        "   Table::bulk_write vs raw redb + an outbox row: {:.2}x",
        raw2 / table
    );
    println!(
        "   Table::bulk_write          {:>10} records/s  ({table:.2} s)  = {:.2}x raw (target >= 0.5)",
        rate(table),
        raw / table
    );
    match &bin {
        None => println!(
            "   tidesync import            skipped: build the CLI first (cargo build --release \
             -p tidesync-cli)"
        ),
        Some(bin) => {
            let cli = median(&cli_times);
            println!(
                "   tidesync import            {:>10} records/s  ({cli:.2} s)  = {:.2}x raw (target >= 0.5)",
                rate(cli),
                raw / cli
            );
            let dir = tempfile::tempdir_in(work.path()).expect("puts dir");
            let per_put = cli_puts(bin, dir.path(), &records[..puts]);
            println!(
                "   tidesync put, 1 process/record: {:.1} ms each over {puts} records → {:.0} s \
                 for {} (extrapolated); import is {:.0}x faster (target >= 50)",
                per_put * 1e3,
                per_put * n as f64,
                thousands(n as f64),
                per_put * n as f64 / cli
            );
            // Export of the last import, and of a table a tenth its size.
            let last = tempfile::tempdir_in(work.path()).expect("export dir");
            cli_import(bin, last.path(), &ndjson, n);
            let (secs_big, rss_big) = cli_export(bin, last.path());
            let small = tempfile::tempdir_in(work.path()).expect("export dir");
            let tenth = work.path().join("tenth.ndjson");
            std::fs::write(
                &tenth,
                records[..n / 10]
                    .iter()
                    .map(|r| r.to_string() + "\n")
                    .collect::<String>(),
            )
            .expect("tenth");
            cli_import(bin, small.path(), &tenth, n / 10);
            let (secs_small, rss_small) = cli_export(bin, small.path());
            println!(
                "   tidesync export: {} records in {secs_big:.2} s ({} records/s), peak RSS \
                 {:.1} MB; {} records: {secs_small:.2} s, peak RSS {:.1} MB (ratio {:.2}x for \
                 10x the records)",
                thousands(n as f64),
                rate(secs_big),
                rss_big as f64 / 1024.0,
                thousands((n / 10) as f64),
                rss_small as f64 / 1024.0,
                rss_big as f64 / rss_small.max(1) as f64
            );
        }
    }
    section_end();
}
