//! Push throughput of the engine against the reference server, next to a plain reqwest client
//! sending the same requests at the same concurrency, in the same run.
//!
//! Run: `cargo bench --bench push` (release). For each concurrency (4, 8, 16) it:
//! 1. writes `TIDESYNC_BENCH_PUSH_RECORDS` records (default 5000) offline through the table
//!    API (not timed), then times `engine.push()` until every entry is acknowledged;
//! 2. times a plain `reqwest::Client` POSTing the same record bodies (with an
//!    `Idempotency-Key` and the epoch header, as the engine sends them) to the same endpoint
//!    of a fresh reference server, `concurrency` requests in flight;
//! 3. prints entries/s of both and their ratio (target >= 0.7), and the CPU time the whole
//!    process spent per entry on each side (`/proc/self/stat`, all threads: the client side
//!    *and* the in-process server). On a machine whose cores are all busy, the ratio of
//!    throughputs follows the inverse ratio of CPU per entry.
//!
//! Each engine figure is taken twice: on a durable redb store (the default, every outbox
//! state change is an fsync'd commit) and on the memory store (the same pipeline without
//! fsync), so the cost of the store can be told from the cost of the pipeline; a third row
//! calls the REST transport alone (`Transport::push`, no engine, no store), so the cost of the
//! transport can be told from the engine's; a fourth, the *durable floor*, is raw reqwest plus
//! the least durable bookkeeping an acknowledgement needs, so the target can be told from what
//! any durable engine could reach; a fifth, the *protocol floor*, adds the rows this engine's
//! guarantees write (an in-flight mark before the send, a base, a receipt), so what the
//! protocol costs can be told from what the engine's implementation adds (`push_floor`). A
//! last section does the same through the bulk endpoint (`POST /api/posts/bulk`, 50 entries
//! per request) against raw bulk requests of the same 50 operations. Under each engine row, the
//! store writer's share per pushed entry, from its `tidesync_store_*` metrics (a Prometheus
//! recorder installed for the run): the push turns' work, their commits, the time turns waited
//! for the writer, and pushed entries per commit (each is marked in one turn, settled in another).
//!
//! The server is the testkit's reference server on 127.0.0.1 (in process, its own thread and
//! single-threaded runtime), fresh for every measurement. Env: `TIDESYNC_BENCH_RUNS` (default
//! 3, medians), `TIDESYNC_BENCH_PUSH_RECORDS` (default 5000),
//! `TIDESYNC_BENCH_PUSH_CONCURRENCY` (comma list, default `4,8,16`),
//! `TIDESYNC_BENCH_PUSH_BULK=0` skips the bulk section, `TIDESYNC_BENCH_PUSH_ROWS` (comma list
//! of `redb`, `memory`, `transport`, `floor`, `protocol`; default all) picks the rows,
//! `TIDESYNC_BENCH_FLOOR_GATHER_US` (default 2000) is how long the durable floor's writer waits
//! for more acknowledgements before each commit (of 0, 1000, 2000 and 5000 µs, 0 was clearly
//! slower, 1000 and 2000 alike, 5000 slower at c = 16).

#[allow(dead_code)]
mod common;
mod push_floor;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, RedbStore, SyncSettings};
use tidesync_testkit::server::ReferenceServer;

use common::store_times::StoreTimes;
use common::{median, record, secs, thousands};

/// Entries per bulk request (the engine's `batch_size`).
pub(crate) const BULK_BATCH: usize = 50;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StoreKind {
    Redb,
    Memory,
    /// No engine at all: the REST transport's `push` called directly, `concurrency` calls at a
    /// time, to tell the transport's cost from the engine pipeline's.
    Transport,
    /// No engine either: raw reqwest plus the least durable bookkeeping any engine must do
    /// for an acknowledged entry (`push_floor::durable_floor_push`): the floor under any engine.
    DurableFloor,
    /// The durable floor plus the rows the engine's guarantees write (in-flight mark, base,
    /// receipt; `push_floor::protocol_floor_push`): the floor under this engine's protocol.
    ProtocolFloor,
}

/// What one measured push did.
pub(crate) struct Pushed {
    per_sec: f64,
    write_requests: usize,
    /// CPU of the whole process (client side and the in-process server) per entry, in µs.
    cpu_us: f64,
    /// The engine's store writer during the push (engine rows only).
    writer: Option<StoreTimes>,
}

impl StoreKind {
    /// The row's name in `TIDESYNC_BENCH_PUSH_ROWS`.
    fn name(self) -> String {
        match self {
            StoreKind::Redb => "redb",
            StoreKind::Memory => "memory",
            StoreKind::Transport => "transport",
            StoreKind::DurableFloor => "floor",
            StoreKind::ProtocolFloor => "protocol",
        }
        .to_owned()
    }
}

fn engine_push(
    rt: &tokio::runtime::Runtime,
    n: usize,
    concurrency: usize,
    store: StoreKind,
    bulk: bool,
) -> Pushed {
    if store == StoreKind::Transport {
        return transport_push(rt, n, concurrency, bulk);
    }
    if store == StoreKind::DurableFloor {
        return push_floor::durable_floor_push(rt, n, concurrency, bulk);
    }
    if store == StoreKind::ProtocolFloor {
        return push_floor::protocol_floor_push(rt, n, concurrency, bulk);
    }
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = SyncSettings {
        concurrency,
        batch_size: BULK_BATCH,
        ..common::manual_settings()
    };
    let builder = Engine::builder()
        .table(common::posts())
        .transport(common::transport(server.url(), bulk))
        .settings(settings);
    let builder = match store {
        StoreKind::Redb => {
            builder.store(RedbStore::open(dir.path().join("engine.redb")).expect("open"))
        }
        StoreKind::Memory
        | StoreKind::Transport
        | StoreKind::DurableFloor
        | StoreKind::ProtocolFloor => builder.store(MemoryStore::new()),
    };
    let engine = builder.start().expect("engine");
    rt.block_on(async {
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(500) {
            let mut batch = engine.batch();
            for &i in chunk {
                batch = batch.put("posts", &record(i));
            }
            batch.commit().await.expect("offline writes");
        }
    });
    assert_eq!(engine.outbox_stats("posts").expect("stats").depth, n as u64);
    let cpu = common::process_cpu();
    let writer_before = StoreTimes::read();
    let start = Instant::now();
    let report = rt.block_on(engine.push()).expect("push");
    let elapsed = secs(start);
    let cpu_us = common::cpu_us_per(cpu, common::process_cpu(), n);
    let writer = StoreTimes::read().since(writer_before);
    assert_eq!(
        report.pushed, n as u64,
        "every entry acknowledged: {report:?}"
    );
    assert_eq!(server.records("posts").len(), n);
    let write_requests = server.request_log().iter().filter(|r| r.is_write()).count();
    engine.shutdown();
    Pushed {
        per_sec: n as f64 / elapsed,
        write_requests,
        cpu_us,
        writer: Some(writer),
    }
}

/// The same creates as the engine sends them: `POST /api/posts` with the record as the body
/// (or bulk requests of `BULK_BATCH` create ops), a fresh idempotency key each, the epoch
/// header; every response body read.
fn raw_push(rt: &tokio::runtime::Runtime, n: usize, concurrency: usize, bulk: bool) -> Pushed {
    let server = ReferenceServer::start_background();
    let keys: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (url, bodies): (String, Vec<Vec<u8>>) = if bulk {
        let bodies = (0..n)
            .collect::<Vec<_>>()
            .chunks(BULK_BATCH)
            .map(|chunk| {
                let ops: Vec<Value> = chunk
                    .iter()
                    .map(|&i| {
                        let rec = record(i);
                        json!({"op": "create", "id": rec["id"], "record": rec, "idempotencyKey": keys[i]})
                    })
                    .collect();
                json!({ "ops": ops }).to_string().into_bytes()
            })
            .collect();
        (format!("{}/api/posts/bulk", server.url()), bodies)
    } else {
        let bodies = (0..n).map(|i| record(i).to_string().into_bytes()).collect();
        (format!("{}/api/posts", server.url()), bodies)
    };
    let expected = if bulk { 200 } else { 201 };
    let client = common::http_client();
    let bodies = Arc::new(bodies);
    let keys = Arc::new(keys);
    let url = Arc::new(url);
    let cpu = common::process_cpu();
    let start = Instant::now();
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, bodies, keys, url, next) = (
                client.clone(),
                bodies.clone(),
                keys.clone(),
                url.clone(),
                next.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        break;
                    }
                    let mut request = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("x-tidesync-epoch", "1");
                    if !bulk {
                        request = request.header("idempotency-key", keys[i].as_str());
                    }
                    let response = request.body(bodies[i].clone()).send().await.expect("send");
                    assert_eq!(response.status().as_u16(), expected);
                    let body = response.bytes().await.expect("body");
                    assert!(!body.is_empty());
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task");
        }
    });
    pushed(&server, n, start, cpu)
}

/// The engine's requests sent by the REST transport alone: `Transport::push` (or `push_batch`
/// of `BULK_BATCH`), `concurrency` calls at a time, each answer decoded as the engine would
/// get it; no store, no actors.
fn transport_push(
    rt: &tokio::runtime::Runtime,
    n: usize,
    concurrency: usize,
    bulk: bool,
) -> Pushed {
    use tidesync::core::PushRequest;
    use tidesync::{Key, Op, Transport};
    let server = ReferenceServer::start_background();
    let transport: Arc<dyn Transport> = Arc::new(common::transport(server.url(), bulk));
    let requests: Vec<PushRequest> = (0..n)
        .map(|i| PushRequest {
            table: "posts".into(),
            key: Key::from(format!("rec-{i:08}")),
            op: Op::Create,
            record: record(i).as_object().cloned(),
            changed: Vec::new(),
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            base_version: None,
            epoch: Some(1),
        })
        .collect();
    let per_call = if bulk { BULK_BATCH } else { 1 };
    let calls: Vec<Vec<PushRequest>> = requests.chunks(per_call).map(<[_]>::to_vec).collect();
    let calls = Arc::new(std::sync::Mutex::new(calls.into_iter()));
    let cpu = common::process_cpu();
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (transport, calls) = (transport.clone(), calls.clone());
            tasks.spawn(async move {
                loop {
                    let Some(call) = calls.lock().expect("calls").next() else {
                        break;
                    };
                    let results = if bulk {
                        transport.push_batch(call).await.expect("bulk push")
                    } else {
                        let request = call.into_iter().next().expect("one request");
                        vec![transport.push(request).await]
                    };
                    for result in results {
                        result.expect("acknowledged");
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("transport task");
        }
    });
    pushed(&server, n, start, cpu)
}

/// What a baseline measurement did, once its `n` records all reached `server`.
pub(crate) fn pushed(
    server: &tidesync_testkit::server::ServerHandle,
    n: usize,
    start: Instant,
    cpu: Option<std::time::Duration>,
) -> Pushed {
    let elapsed = secs(start);
    let cpu_us = common::cpu_us_per(cpu, common::process_cpu(), n);
    assert_eq!(server.records("posts").len(), n);
    let write_requests = server.request_log().iter().filter(|r| r.is_write()).count();
    Pushed {
        per_sec: n as f64 / elapsed,
        write_requests,
        cpu_us,
        writer: None,
    }
}

/// What the engine's first write request looked like (to check the baseline sends the same).
fn show_engine_request(rt: &tokio::runtime::Runtime) {
    let server = ReferenceServer::start_background();
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(common::posts())
        .transport(common::transport(server.url(), false))
        .settings(common::manual_settings())
        .start()
        .expect("engine");
    rt.block_on(async {
        engine
            .table::<Value>("posts")
            .expect("table")
            .put(&record(0))
            .await
            .expect("put");
        engine.push().await.expect("push");
    });
    if let Some(req) = server.request_log().iter().find(|r| r.is_write()) {
        let headers: Vec<String> = req
            .headers
            .iter()
            .map(|(k, v)| match k.as_str() {
                "idempotency-key" => format!("{k}: <uuid>"),
                _ => format!("{k}: {v}"),
            })
            .collect();
        println!(
            "engine request: {} {} [{}], body {} bytes; baseline body {} bytes",
            req.method,
            req.path,
            headers.join(", "),
            req.body.len(),
            record(0).to_string().len()
        );
    }
    engine.shutdown();
}

struct Row {
    /// Entries pushed per measurement.
    entries: usize,
    engine: Vec<f64>,
    raw: Vec<f64>,
    ratio: Vec<f64>,
    engine_requests: usize,
    raw_requests: usize,
    engine_cpu_us: Vec<f64>,
    raw_cpu_us: Vec<f64>,
    /// The engine's store writer in each run (engine rows only).
    writer: Vec<StoreTimes>,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    n: usize,
    concurrency: usize,
    store: StoreKind,
    bulk: bool,
    runs: usize,
) -> Row {
    let mut row = Row {
        entries: n,
        engine: vec![],
        raw: vec![],
        ratio: vec![],
        engine_requests: 0,
        raw_requests: 0,
        engine_cpu_us: vec![],
        raw_cpu_us: vec![],
        writer: vec![],
    };
    for run in 0..runs {
        // Alternate which side goes first, so drift in the machine's load hits both.
        let (e, r) = if run % 2 == 0 {
            let e = engine_push(rt, n, concurrency, store, bulk);
            (e, raw_push(rt, n, concurrency, bulk))
        } else {
            let r = raw_push(rt, n, concurrency, bulk);
            (engine_push(rt, n, concurrency, store, bulk), r)
        };
        row.engine.push(e.per_sec);
        row.raw.push(r.per_sec);
        row.ratio.push(e.per_sec / r.per_sec);
        row.engine_requests = e.write_requests;
        row.raw_requests = r.write_requests;
        row.engine_cpu_us.push(e.cpu_us);
        row.raw_cpu_us.push(r.cpu_us);
        row.writer.extend(e.writer);
    }
    row
}

fn print_row(row: &Row, concurrency: usize, store: StoreKind) {
    println!(
        "  c={concurrency:<3} {:<17} {:>7} entries/s ({:>5} req, {:>4.0} µs CPU each)   raw reqwest {:>7} entries/s ({:>5} req, {:>4.0} µs CPU each)   ratio {:>5.2}  (target >= 0.7)   [{}]",
        match store {
            StoreKind::Redb => "engine, redb",
            StoreKind::Memory => "engine, memory",
            StoreKind::Transport => "transport alone",
            StoreKind::DurableFloor => "durable floor",
            StoreKind::ProtocolFloor => "protocol floor",
        },
        thousands(median(&row.engine)),
        row.engine_requests,
        median(&row.engine_cpu_us),
        thousands(median(&row.raw)),
        row.raw_requests,
        median(&row.raw_cpu_us),
        median(&row.ratio),
        common::machine_note(),
    );
    if !row.writer.is_empty() {
        let n = row.entries;
        let per_entry: Vec<[f64; 3]> = row.writer.iter().map(|t| t.us_per(n)).collect();
        let part = |i: usize| median(&per_entry.iter().map(|p| p[i]).collect::<Vec<_>>());
        let entries_per_commit: Vec<f64> = row
            .writer
            .iter()
            .map(|t| n as f64 / t.commits.max(1.0))
            .collect();
        println!(
            "        store writer per entry: work {:.1} µs, commit {:.1} µs, waiting {:.1} µs ({:.0} entries per commit)",
            part(1),
            part(2),
            part(0),
            median(&entries_per_commit)
        );
    }
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_PUSH_RECORDS", 5000, 200);
    let concurrencies: Vec<usize> = std::env::var("TIDESYNC_BENCH_PUSH_CONCURRENCY")
        .ok()
        .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if common::bench_mode() {
                vec![4, 8, 16]
            } else {
                vec![4]
            }
        });
    let bulk = std::env::var("TIDESYNC_BENCH_PUSH_BULK").map_or(true, |v| v != "0");
    let only: Option<Vec<String>> = std::env::var("TIDESYNC_BENCH_PUSH_ROWS")
        .ok()
        .map(|s| s.split(',').map(|r| r.trim().to_owned()).collect());
    common::install_crypto();
    // The store writer's metrics, installed before any engine starts.
    StoreTimes::read();
    let rt = common::runtime();
    println!(
        "push: {n} records of {} bytes, median of {runs} runs{}",
        record(0).to_string().len(),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    show_engine_request(&rt);

    common::section("single requests (POST /api/posts), engine vs raw reqwest");
    for &concurrency in &concurrencies {
        for store in [
            StoreKind::Redb,
            StoreKind::Memory,
            StoreKind::Transport,
            StoreKind::DurableFloor,
            StoreKind::ProtocolFloor,
        ]
        .into_iter()
        .filter(|store| {
            only.as_ref()
                .is_none_or(|only| only.contains(&store.name()))
        }) {
            let row = measure(&rt, n, concurrency, store, false, runs);
            print_row(&row, concurrency, store);
        }
    }
    common::section_end();

    if bulk {
        common::section(&format!(
            "bulk endpoint (POST /api/posts/bulk, {BULK_BATCH} ops per request), engine vs raw reqwest"
        ));
        for &concurrency in &concurrencies {
            for store in [
                StoreKind::Redb,
                StoreKind::Memory,
                StoreKind::Transport,
                StoreKind::DurableFloor,
                StoreKind::ProtocolFloor,
            ]
            .into_iter()
            .filter(|store| {
                only.as_ref()
                    .is_none_or(|only| only.contains(&store.name()))
            }) {
                let row = measure(&rt, n, concurrency, store, true, runs);
                print_row(&row, concurrency, store);
            }
        }
        common::section_end();
    }
}
