//! Local write throughput and latency, next to raw redb in the same run.
//!
//! Run: `cargo bench --bench local_writes` (release). Prints:
//! 1. durable writes/s through the table API vs raw redb inserts of the same records with the
//!    same durability (one `Immediate` commit each), and their ratio (target ≥ 0.8);
//! 2. 16 concurrent writers through the table API (group commit) vs raw redb with one commit
//!    per write from 16 threads, and their ratio (target ≥ 10×);
//! 3. p50 / p99 latency of one durable write through the table API.
//!
//! Each figure is the median of `TIDESYNC_BENCH_RUNS` runs (default 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use serde_json::json;
use tidesync::{Engine, RedbStore, TableSpec};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

fn record(i: usize) -> serde_json::Value {
    json!({"id": format!("rec-{i:08}"), "title": format!("title {i}"), "body": "x".repeat(200), "n": i})
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn engine(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(RedbStore::open(dir.join("engine.redb")).expect("open"))
        .table(TableSpec::new("posts"))
        .start()
        .expect("start")
}

fn raw_db(dir: &std::path::Path) -> Arc<Database> {
    Arc::new(Database::create(dir.join("raw.redb")).expect("create"))
}

fn raw_insert(db: &Database, i: usize) {
    let value = serde_json::to_vec(&record(i)).expect("json");
    let key = format!("rec-{i:08}");
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    {
        let mut table = txn.open_table(RAW).expect("table");
        table
            .insert(key.as_bytes(), value.as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
}

fn sequential(n: usize, runtime: &tokio::runtime::Runtime) -> (f64, f64, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    runtime.block_on(async {
        for i in 0..n {
            let t = Instant::now();
            posts.put(&record(i)).await.expect("put");
            latencies.push(t.elapsed());
        }
    });
    let api = n as f64 / start.elapsed().as_secs_f64();
    engine.shutdown();

    let db = raw_db(dir.path());
    let start = Instant::now();
    for i in 0..n {
        raw_insert(&db, i);
    }
    let raw = n as f64 / start.elapsed().as_secs_f64();
    (api, raw, latencies)
}

fn concurrent(writers: usize, per_writer: usize, runtime: &tokio::runtime::Runtime) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let posts = posts.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        posts.put(&record(w * per_writer + i)).await.expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
    });
    let api = (writers * per_writer) as f64 / start.elapsed().as_secs_f64();
    engine.shutdown();

    let db = raw_db(dir.path());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let db = &db;
            scope.spawn(move || {
                for i in 0..per_writer {
                    raw_insert(db, w * per_writer + i);
                }
            });
        }
    });
    let raw = (writers * per_writer) as f64 / start.elapsed().as_secs_f64();
    (api, raw)
}

fn main() {
    let runs: usize = std::env::var("TIDESYNC_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let n: usize = std::env::var("TIDESYNC_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let (mut api, mut raw, mut ratio, mut p50, mut p99) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (a, r, mut lat) = sequential(n, &runtime);
        lat.sort();
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
        p50.push(lat[lat.len() / 2].as_secs_f64() * 1e3);
        p99.push(lat[lat.len() * 99 / 100].as_secs_f64() * 1e3);
    }
    println!("sequential durable writes ({n} records, median of {runs} runs):");
    println!("  table API        {:>9.0} writes/s", median(api));
    println!("  raw redb         {:>9.0} writes/s", median(raw));
    println!(
        "  ratio            {:>9.2}   (target >= 0.8)",
        median(ratio)
    );
    println!("  latency p50      {:>9.3} ms", median(p50));
    println!("  latency p99      {:>9.3} ms", median(p99));

    let writers = 16;
    let per_writer = n / 4;
    let (mut api, mut raw, mut ratio) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let (a, r) = concurrent(writers, per_writer, &runtime);
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
    }
    println!(
        "{writers} concurrent writers ({} records, median of {runs} runs):",
        writers * per_writer
    );
    println!(
        "  table API, group commit     {:>9.0} writes/s",
        median(api)
    );
    println!(
        "  raw redb, commit per write  {:>9.0} writes/s",
        median(raw)
    );
    println!(
        "  ratio                       {:>9.1}x  (target >= 10x)",
        median(ratio)
    );
}
