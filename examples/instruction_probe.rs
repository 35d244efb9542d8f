//! A fixed workload for instruction counts (`valgrind --tool=callgrind`), which stay the same
//! whatever else the machine is doing, so two commits can be compared on a busy machine:
//! N sequential durable writes through the table API on a redb file, then, when a server URL
//! is given, one push of all N to that server (start `tidesync-reference-server` first).
//!
//! ```text
//! cargo build --release --example instruction_probe
//! valgrind --tool=callgrind target/release/examples/instruction_probe 300
//! valgrind --tool=callgrind target/release/examples/instruction_probe 1300
//! ```
//! The difference of the two totals over 1 000 is the cost of one write (the start-up cost
//! cancels out); with `http://127.0.0.1:PORT` as a second argument, of one write and its push;
//! with `raw` as the second argument, of the baseline: one raw redb durable commit of one row
//! with the same record bytes. `bulk` writes the N records through `Table::bulk_write` in
//! batches of 1 000 (upsert, a pushed table), `raw-bulk` the same rows into redb, 1 000 per
//! commit: the cost of one imported record and of its baseline. `concurrent` writes the N
//! records from 16 concurrent writers (group commit; for `perf record`, since callgrind runs
//! one thread at a time and changes how groups form). `bulk-push URL` bulk-writes the N records
//! and pushes them, printing the push's rate: for `perf record` of the push alone;
//! `bulk-push-batch URL` does the same through the bulk endpoint (50 entries per request), where
//! the engine's work per entry is most of the cost.
//! BENCHMARKS.md ("Instruction counts") has the figures.

use serde_json::json;
use tidesync::{Engine, RedbStore, SyncSettings, TableSpec};
use tidesync_transport_rest::{BulkRoute, RestTransport, TableRoutes};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let url = std::env::args().nth(2);
    let dir = tempfile::tempdir()?;
    if url.as_deref() == Some("raw") {
        return raw_commits(n, dir.path());
    }
    if url.as_deref() == Some("raw-bulk") {
        return raw_bulk(n, dir.path());
    }
    if url.as_deref() == Some("bulk") {
        return bulk(n, dir.path());
    }
    if url.as_deref() == Some("concurrent") {
        return concurrent(n, dir.path());
    }
    if let Some(mode @ ("bulk-push" | "bulk-push-batch")) = url.as_deref() {
        let server = std::env::args()
            .nth(3)
            .ok_or("bulk-push needs a server URL")?;
        return bulk_then_push(n, dir.path(), &server, mode == "bulk-push-batch");
    }
    let mut builder = Engine::builder()
        .store(RedbStore::open(dir.path().join("probe.redb"))?)
        .table(TableSpec::new("posts"));
    if let Some(url) = &url {
        let transport = RestTransport::builder(url.as_str())
            .table("posts", TableRoutes::reference_server("posts"))
            .build()?;
        builder = builder.transport(transport).settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: std::time::Duration::from_secs(3600),
            ..SyncSettings::default()
        });
    }
    let engine = builder.start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let posts = engine.table::<serde_json::Value>("posts")?;
        let body = "x".repeat(200);
        // Keys unique per run, so a server kept between runs never sees the same record twice.
        let run = std::process::id();
        for i in 0..n {
            posts
                .put(&json!({"id": format!("k{run}-{i:08}"), "title": "probe", "body": body, "n": i}))
                .await?;
        }
        if url.is_some() {
            let report = engine.push().await?;
            if report.pushed as usize != n {
                return Err(format!("pushed {} of {n}: {report:?}", report.pushed).into());
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    engine.shutdown();
    Ok(())
}

/// The baseline: `n` durable redb commits of one row each, the same record bytes the table API
/// writes (serialized the same way), into one table.
fn raw_commits(n: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let db = raw_db(dir)?;
    let body = "x".repeat(200);
    let run = std::process::id();
    for i in 0..n {
        let id = format!("k{run}-{i:08}");
        let record = json!({"id": id, "title": "probe", "body": body, "n": i});
        let bytes = serde_json::to_vec(&record)?;
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(RAW)?;
            t.insert(id.as_bytes(), bytes.as_slice())?;
        }
        txn.commit()?;
    }
    Ok(())
}

/// The `n` records a bulk mode writes (the same as the sequential modes write one by one).
fn probe_records(n: usize) -> Vec<serde_json::Value> {
    let body = "x".repeat(200);
    let run = std::process::id();
    (0..n).map(|i| probe_record(run, i, &body)).collect()
}

fn probe_record(run: u32, i: usize, body: &str) -> serde_json::Value {
    json!({"id": format!("k{run}-{i:08}"), "title": "probe", "body": body, "n": i})
}

/// `n` records through the bulk API, batches of 1 000.
fn bulk(n: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .store(RedbStore::open(dir.join("bulk.redb"))?)
        .table(TableSpec::new("posts"))
        .start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = probe_records(n);
    let report = runtime.block_on(async {
        engine
            .table::<serde_json::Value>("posts")?
            .bulk_write(records, tidesync::BulkMode::Upsert, 1_000)
            .await
    })?;
    if report.written() != n {
        return Err(format!("wrote {} of {n}", report.written()).into());
    }
    engine.shutdown();
    Ok(())
}

/// `n` records written through the bulk API, then pushed to the server at `url` (single
/// requests, the default concurrency): for `perf record` of the push alone, since the writes
/// take a fraction of the push's time.
fn bulk_then_push(
    n: usize,
    dir: &std::path::Path,
    url: &str,
    batch: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut routes = TableRoutes::reference_server("posts");
    if batch {
        routes = routes.bulk(BulkRoute::post("/api/posts/bulk"));
    }
    let transport = RestTransport::builder(url).table("posts", routes).build()?;
    let engine = Engine::builder()
        .store(RedbStore::open(dir.join("bulk-push.redb"))?)
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(SyncSettings {
            interval: None,
            sync_on_start: false,
            debounce: std::time::Duration::from_secs(3600),
            ..SyncSettings::default()
        })
        .start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = probe_records(n);
    runtime.block_on(async {
        let posts = engine.table::<serde_json::Value>("posts")?;
        posts
            .bulk_write(records, tidesync::BulkMode::Upsert, 1_000)
            .await?;
        let started = std::time::Instant::now();
        let report = engine.push().await?;
        if report.pushed as usize != n {
            return Err(format!("pushed {} of {n}: {report:?}", report.pushed).into());
        }
        eprintln!(
            "pushed {n} in {:.2} s ({:.0} entries/s)",
            started.elapsed().as_secs_f64(),
            n as f64 / started.elapsed().as_secs_f64()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    engine.shutdown();
    Ok(())
}

/// `n` durable writes from 16 concurrent writers (16 tasks on a two-worker runtime): the
/// group-commit path, where commits carry up to 16 writes.
fn concurrent(n: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    const WRITERS: usize = 16;
    let engine = Engine::builder()
        .store(RedbStore::open(dir.join("concurrent.redb"))?)
        .table(TableSpec::new("posts"))
        .start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let posts = engine.table::<serde_json::Value>("posts")?;
    let run = std::process::id();
    runtime.block_on(async {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let posts = posts.clone();
                tokio::spawn(async move {
                    let body = "x".repeat(200);
                    for i in (w..n).step_by(WRITERS) {
                        posts.put(&probe_record(run, i, &body)).await?;
                    }
                    Ok::<_, tidesync::Error>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    engine.shutdown();
    Ok(())
}

/// The baseline of `bulk`: the same rows into one redb table, 1 000 per durable commit.
fn raw_bulk(n: usize, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let db = raw_db(dir)?;
    let body = "x".repeat(200);
    let run = std::process::id();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(RAW)?;
            for &i in chunk {
                let record = probe_record(run, i, &body);
                let bytes = serde_json::to_vec(&record)?;
                t.insert(format!("k{run}-{i:08}").as_bytes(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(())
}

/// The baselines' one table.
const RAW: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("raw");

/// The baselines' redb file, with the store's cache size.
fn raw_db(dir: &std::path::Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Database::builder()
        .set_cache_size(tidesync_store_redb::DEFAULT_CACHE_SIZE)
        .create(dir.join("raw.redb"))
}
