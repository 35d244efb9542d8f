//! Store size: the redb file against the bytes of the records it holds, as JSON (issue 20's
//! store-size target: ≤ 1.5× after an initial sync and after a local write burst with its
//! outbox drained, ≤ 2.5× while that burst's outbox is still pending).
//!
//! Run: `cargo bench --bench store_size` (release): N = 20 000 records of about 1 KB of JSON
//! (`record_1k`, the shape of the `import` and `schema` benches), in redb files in a temp dir:
//! 1. `burst, pending`: a local-only engine (no transport) writes the N records one by one
//!    through the table API (`Table::put`, one durable commit each); the outbox then holds N
//!    entries. The engine is shut down and dropped, then the file is measured.
//! 2. `burst, drained`: the same file is reopened with the REST transport to a fresh reference
//!    server (127.0.0.1, in this process); once the engine leads, `engine.push()` runs until the
//!    outbox depth is 0 (the server is checked to hold the N records); shut down, measured.
//! 3. `initial sync`: a fresh server is filled directly (`insert_direct`, as `initial_sync`
//!    does) with N records; a fresh engine pulls them all (pages of 1000); shut down, measured.
//!
//! And two raw redb files of the same records under their ids, no engine: one durable commit
//! per record (the floor for 1 and 2), and one commit per 1000 records (the floor for 3).
//!
//! "Measured" means: the records' JSON bytes (the sum of `serde_json::to_vec(record).len()`
//! over the records the store holds, read back through the table API before the shutdown);
//! the file's size (`std::fs::metadata().len()`) once the store is closed; the live bytes
//! (redb's `stored_bytes`: keys and values in the leaves, every table) and where they are, per
//! keyspace (one redb table each); the file's size after `Database::compact()` on a copy,
//! which shows how much of the file is free pages rather than data; and the file's size once
//! the store has reopened it with `RedbOptions::compact_at_open(true)` (which compacts a file
//! of 64 MiB or more with a third or more free).
//!
//! MB are 10^6 bytes. Env: `TIDESYNC_BENCH_SIZE_N` (default 20000; smoke mode 200). One run:
//! sizes do not vary between runs the way times do.

#[allow(dead_code)]
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition,
};
use serde_json::Value;
use tidesync::{Engine, Key, RedbStore, SyncSettings};
use tidesync_testkit::server::ReferenceServer;

use common::{record_1k, secs, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
/// Records per commit of the raw paged baseline and per pull page of the initial sync.
const PAGE: usize = 1000;
/// The drain fails if no entry was acknowledged for this long.
const STALL: Duration = Duration::from_secs(120);
/// Keyspaces listed per scenario, largest first.
const TOP: usize = 6;

fn json_len(v: &Value) -> u64 {
    serde_json::to_vec(v).expect("json").len() as u64
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// What one scenario measured.
struct Measure {
    label: &'static str,
    records: u64,
    json_bytes: u64,
    file_bytes: u64,
    live_bytes: u64,
    compacted_bytes: u64,
    /// The file's size after the store reopened it with `compact_at_open(true)` (which
    /// compacts a file with a third or more free space).
    reopened_bytes: u64,
    /// `(keyspace, live bytes, rows)`, largest first.
    keyspaces: Vec<(String, u64, u64)>,
    /// The bound for this scenario, if it has one.
    target: Option<f64>,
    /// What the scenario did and how long it took.
    note: String,
}

/// Opens `path` with redb directly, retrying while the engine's threads still hold it.
fn open_closed(path: &Path) -> Database {
    let start = Instant::now();
    loop {
        match Database::open(path) {
            Ok(db) => return db,
            Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < STALL => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }
}

/// Live bytes of every table of `db` (keys and values in the leaves), largest first.
fn keyspaces(db: &Database) -> Vec<(String, u64, u64)> {
    let txn = db.begin_read().expect("read");
    let mut out: Vec<(String, u64, u64)> = txn
        .list_tables()
        .expect("list tables")
        .map(|handle| {
            let table = txn.open_untyped_table(handle).expect("open table");
            let stats = table.stats().expect("stats");
            (
                redb::TableHandle::name(&table).to_owned(),
                stats.stored_bytes(),
                table.len().expect("len"),
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Measures the closed file at `path`: its size, the live bytes per keyspace, and the size of
/// a compacted copy (the file itself is left as it is, for the next scenario).
fn measure_file(path: &Path) -> (u64, u64, u64, Vec<(String, u64, u64)>) {
    // Wait until the store is closed before reading the size: the last commit may still run.
    drop(open_closed(path));
    let file_bytes = std::fs::metadata(path).expect("metadata").len();
    let copy: PathBuf = path.with_extension("compacted.redb");
    std::fs::copy(path, &copy).expect("copy");
    let mut db = Database::open(&copy).expect("open copy");
    let spaces = keyspaces(&db);
    let live_bytes = spaces.iter().map(|k| k.1).sum();
    let mut rounds = 0;
    while db.compact().expect("compact") {
        rounds += 1;
        if rounds >= 10 {
            break;
        }
    }
    drop(db);
    let compacted_bytes = std::fs::metadata(&copy).expect("metadata").len();
    std::fs::remove_file(&copy).expect("remove copy");
    (file_bytes, live_bytes, compacted_bytes, spaces)
}

/// The records the engine's `posts` table holds: how many, and their JSON bytes.
fn local_json(engine: &Engine, rt: &tokio::runtime::Runtime) -> (u64, u64) {
    let posts = engine.table::<Value>("posts").expect("table");
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut after: Option<Key> = None;
    loop {
        let page = rt.block_on(posts.scan(after.as_ref(), PAGE)).expect("scan");
        let Some(last) = page.last() else { break };
        after = Some(Key::from(last["id"].as_str().expect("string id")));
        count += page.len() as u64;
        bytes += page.iter().map(json_len).sum::<u64>();
    }
    (count, bytes)
}

fn open_engine(path: &Path, url: Option<&str>, settings: SyncSettings) -> Engine {
    let builder = Engine::builder()
        .store(RedbStore::open(path).expect("open store"))
        .table(common::posts())
        .settings(settings);
    let builder = match url {
        Some(url) => builder.transport(common::transport(url, false)),
        None => builder,
    };
    builder.start().expect("engine")
}

fn wait_leading(engine: &Engine) {
    let wait = Instant::now();
    while !engine.status().expect("status").leader {
        assert!(
            wait.elapsed() < STALL,
            "the engine never claimed leadership"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Builds a [`Measure`] for the closed file at `path`.
fn finish(
    label: &'static str,
    path: &Path,
    (records, json_bytes): (u64, u64),
    target: Option<f64>,
    note: String,
) -> Measure {
    let (file_bytes, live_bytes, compacted_bytes, keyspaces) = measure_file(path);
    drop(
        tidesync::store::redb::RedbOptions::new()
            .compact_at_open(true)
            .open(path)
            .expect("reopen"),
    );
    let reopened_bytes = std::fs::metadata(path).expect("metadata").len();
    Measure {
        label,
        records,
        json_bytes,
        file_bytes,
        live_bytes,
        compacted_bytes,
        reopened_bytes,
        keyspaces,
        target,
        note,
    }
}

/// 1: N creates one by one through `Table::put`, outbox pending.
fn burst_pending(path: &Path, rt: &tokio::runtime::Runtime, n: usize) -> Measure {
    let engine = open_engine(path, None, common::manual_settings());
    let posts = engine.table::<Value>("posts").expect("table");
    let start = Instant::now();
    for i in 0..n {
        rt.block_on(posts.put(&record_1k(i))).expect("put");
    }
    let write = secs(start);
    let depth = engine.outbox_stats("posts").expect("stats").depth;
    assert_eq!(depth, n as u64, "one outbox entry per create");
    let json = local_json(&engine, rt);
    assert_eq!(json.0, n as u64, "local records");
    drop(posts);
    engine.shutdown();
    drop(engine);
    finish(
        "burst, outbox pending",
        path,
        json,
        Some(2.5),
        format!(
            "{} puts in {write:.1} s ({} /s), outbox depth {depth}",
            thousands(n as f64),
            thousands(n as f64 / write)
        ),
    )
}

/// 2: the file of 1, reopened with a transport and pushed until the outbox is empty.
fn burst_drained(path: &Path, rt: &tokio::runtime::Runtime, n: usize) -> Measure {
    let server = ReferenceServer::start_background();
    let engine = open_engine(path, Some(server.url()), common::manual_settings());
    wait_leading(&engine);
    let start = Instant::now();
    let (mut pushed, mut calls) = (0u64, 0u64);
    let mut progress = Instant::now();
    loop {
        let report = rt.block_on(engine.push()).expect("push");
        calls += 1;
        pushed += report.pushed;
        assert_eq!(report.dead_lettered, 0, "dead letters: {report:?}");
        if engine.outbox_stats("posts").expect("stats").depth == 0 {
            break;
        }
        if report.pushed > 0 {
            progress = Instant::now();
        } else {
            assert!(progress.elapsed() < STALL, "the drain stalled: {report:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let drain = secs(start);
    assert_eq!(pushed, n as u64, "entries acknowledged");
    let on_server = server.records("posts");
    let ids: HashSet<&str> = on_server
        .iter()
        .map(|r| r["id"].as_str().expect("string id"))
        .collect();
    assert_eq!(ids.len(), n, "records on the server");
    let json = local_json(&engine, rt);
    assert_eq!(json.0, n as u64, "local records");
    engine.shutdown();
    drop(engine);
    finish(
        "burst, outbox drained",
        path,
        json,
        Some(1.5),
        format!(
            "pushed {pushed} in {drain:.1} s ({calls} push calls), server holds {} records",
            ids.len()
        ),
    )
}

/// 3: a fresh store pulls N records from a server filled directly.
fn initial_sync(path: &Path, rt: &tokio::runtime::Runtime, n: usize) -> Measure {
    let server = ReferenceServer::start_background();
    for i in 0..n {
        server.insert_direct("posts", record_1k(i)).expect("fill");
    }
    let settings = SyncSettings {
        page_size: PAGE,
        max_pages: n / PAGE + 10,
        ..common::manual_settings()
    };
    let engine = open_engine(path, Some(server.url()), settings);
    let start = Instant::now();
    let mut applied = 0u64;
    while applied < n as u64 {
        let report = rt.block_on(engine.pull(None)).expect("pull");
        if report.pages == 0 || report.applied == 0 {
            break;
        }
        applied += report.applied;
    }
    let pull = secs(start);
    let json = local_json(&engine, rt);
    assert_eq!(json.0, n as u64, "local records after the pull");
    engine.shutdown();
    drop(engine);
    finish(
        "initial sync",
        path,
        json,
        Some(1.5),
        format!("pulled {applied} records in {pull:.1} s, pages of {PAGE}"),
    )
}

/// Raw redb: record `i` under its id, `per_commit` records per durable commit.
fn raw(path: &Path, n: usize, per_commit: usize, label: &'static str) -> Measure {
    let start = Instant::now();
    let mut json_bytes = 0u64;
    {
        let db = Database::builder()
            .set_cache_size(tidesync_store_redb::DEFAULT_CACHE_SIZE)
            .create(path)
            .expect("create");
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(per_commit) {
            let mut txn = db.begin_write().expect("begin");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for &i in chunk {
                    let rec = record_1k(i);
                    let value = serde_json::to_vec(&rec).expect("json");
                    json_bytes += value.len() as u64;
                    let key = format!("rec-{i:08}");
                    table
                        .insert(key.as_bytes(), value.as_slice())
                        .expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
    }
    let took = secs(start);
    finish(
        label,
        path,
        (n as u64, json_bytes),
        None,
        format!("{per_commit} per durable commit, {took:.1} s"),
    )
}

fn print_table(rows: &[Measure]) {
    println!(
        "  {:<26} | {:>7} | {:>8} | {:>8} | {:>6} | {:>8} | {:>6} | {:>9} | {:>6} | {:>9} | {:>6} | {:>6}",
        "scenario",
        "records",
        "JSON MB",
        "file MB",
        "ratio",
        "live MB",
        "ratio",
        "compacted",
        "ratio",
        "reopened",
        "ratio",
        "target"
    );
    for m in rows {
        let ratio = |b: u64| b as f64 / m.json_bytes as f64;
        let verdict = match m.target {
            Some(t) if ratio(m.file_bytes) <= t => format!("≤ {t}: yes"),
            Some(t) => format!("≤ {t}: NO"),
            None => "-".to_owned(),
        };
        println!(
            "  {:<26} | {:>7} | {:>8.1} | {:>8.1} | {:>5.2}x | {:>8.1} | {:>5.2}x | {:>6.1} MB | {:>5.2}x | {:>6.1} MB | {:>5.2}x | {verdict}",
            m.label,
            thousands(m.records as f64),
            mb(m.json_bytes),
            mb(m.file_bytes),
            ratio(m.file_bytes),
            mb(m.live_bytes),
            ratio(m.live_bytes),
            mb(m.compacted_bytes),
            ratio(m.compacted_bytes),
            mb(m.reopened_bytes),
            ratio(m.reopened_bytes),
        );
    }
    println!();
    println!("  live bytes by keyspace (keys + values in the leaves; rows), largest first:");
    for m in rows {
        let spaces: Vec<String> = m
            .keyspaces
            .iter()
            .take(TOP)
            .map(|(name, bytes, rows)| {
                format!("{name} {:.1} MB ({})", mb(*bytes), thousands(*rows as f64))
            })
            .collect();
        let rest = m.keyspaces.len().saturating_sub(TOP);
        println!(
            "  {:<26} | {}{}",
            m.label,
            spaces.join(", "),
            if rest > 0 {
                format!(" + {rest} more")
            } else {
                String::new()
            }
        );
    }
}

fn main() {
    let n = common::env_usize("TIDESYNC_BENCH_SIZE_N", 20_000, 200);
    assert!(n > 0, "TIDESYNC_BENCH_SIZE_N must be > 0");
    println!(
        "store_size: N = {} records of {} bytes of JSON (record 0), redb files, one run{}",
        thousands(n as f64),
        json_len(&record_1k(0)),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime();
    let mut rows = Vec::new();

    common::section("scenarios");
    let burst = dir.path().join("burst.redb");
    let mut done = |m: Measure| {
        println!(
            "  {:<26}: {}; file {} bytes, compacted {} bytes   [{}]",
            m.label,
            m.note,
            thousands(m.file_bytes as f64),
            thousands(m.compacted_bytes as f64),
            common::machine_note()
        );
        rows.push(m);
    };
    done(burst_pending(&burst, &rt, n));
    done(burst_drained(&burst, &rt, n));
    done(initial_sync(&dir.path().join("sync.redb"), &rt, n));
    done(raw(
        &dir.path().join("raw-one.redb"),
        n,
        1,
        "raw redb, 1 per commit",
    ));
    done(raw(
        &dir.path().join("raw-page.redb"),
        n,
        PAGE,
        "raw redb, 1000 per commit",
    ));
    common::section_end();

    common::section("sizes (ratio = bytes / the records' JSON bytes)");
    print_table(&rows);
    common::section_end();
}
