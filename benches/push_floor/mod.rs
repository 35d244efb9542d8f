//! The floors under the engine's push, in the `push` bench: raw reqwest plus the durable
//! bookkeeping an acknowledgement needs, with no engine. They tell a target no durable engine
//! can reach from a gap of the engine's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde_json::Value;
use tidesync_testkit::server::ReferenceServer;

use crate::common::{self, record};
use crate::{BULK_BATCH, Pushed, pushed};

/// A redb file in `dir` holding `n` queued entries (outbox row: sequence number → the record's
/// JSON) and their records (id → the same JSON), written in one commit (not timed); and the
/// records' ids, as the entries carry them.
fn queued_store(dir: &std::path::Path, n: usize) -> (Arc<Database>, Vec<String>) {
    let db = Database::builder()
        .set_cache_size(tidesync_store_redb::DEFAULT_CACHE_SIZE)
        .create(dir.join("floor.redb"))
        .expect("create");
    let mut ids = Vec::with_capacity(n);
    let txn = db.begin_write().expect("write");
    {
        let mut outbox = txn.open_table(FLOOR_OUTBOX).expect("outbox");
        let mut records = txn.open_table(FLOOR_RECORDS).expect("records");
        for i in 0..n {
            let rec = record(i);
            let json = rec.to_string().into_bytes();
            outbox.insert(i as u64 + 1, json.as_slice()).expect("queue");
            let id = rec["id"].as_str().expect("id");
            records.insert(id, json.as_slice()).expect("record");
            ids.push(id.to_owned());
        }
    }
    txn.commit().expect("commit");
    (Arc::new(db), ids)
}

/// The queue as an engine reads it: the outbox rows, in order.
fn read_queue(db: &Database) -> Vec<(u64, Vec<u8>)> {
    let txn = db.begin_read().expect("read");
    let outbox = txn.open_table(FLOOR_OUTBOX).expect("outbox");
    outbox
        .iter()
        .expect("iter")
        .map(|row| {
            let (seq, json) = row.expect("row");
            (seq.value(), json.value().to_vec())
        })
        .collect()
}

/// What a floor did, once its writer recorded every acknowledgement: the outbox is empty and
/// the server holds the `n` records.
fn finished(
    writer: std::thread::JoinHandle<()>,
    server: &tidesync_testkit::server::ServerHandle,
    db: &Database,
    n: usize,
    start: Instant,
    cpu: Option<std::time::Duration>,
) -> Pushed {
    writer.join().expect("writer thread");
    let pushed = pushed(server, n, start, cpu);
    let txn = db.begin_read().expect("read");
    let outbox = txn.open_table(FLOOR_OUTBOX).expect("outbox");
    assert_eq!(outbox.len().expect("len"), 0, "every entry acknowledged");
    pushed
}

/// A bulk request's body: the create ops of entries `indices`, built around the stored record
/// bytes, as an engine would build them.
fn bulk_body(
    indices: impl Iterator<Item = usize>,
    ids: &[String],
    keys: &[String],
    queued: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let mut body = b"{\"ops\":[".to_vec();
    for (n, i) in indices.enumerate() {
        if n > 0 {
            body.push(b',');
        }
        let op = format!(
            "{{\"op\":\"create\",\"id\":\"{}\",\"idempotencyKey\":\"{}\",\"record\":",
            ids[i], keys[i]
        );
        body.extend_from_slice(op.as_bytes());
        body.extend_from_slice(&queued[i].1);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// The server's versions in an answer: the record of a single request, or each result's
/// record of a bulk one.
fn answered_versions(answer: &Value, bulk: bool) -> Vec<&Value> {
    if bulk {
        let results = answer["results"].as_array().expect("results");
        results.iter().map(|r| &r["record"]).collect()
    } else {
        vec![answer]
    }
}

/// Outbox rows of the durable floor: sequence number → the record's JSON.
const FLOOR_OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Record rows of the durable floor: id → the record's JSON.
const FLOOR_RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Most acknowledgements one floor commit records (a group commit, as the engine's turns).
const FLOOR_GROUP_MAX: usize = 256;

/// Raw reqwest plus the least an engine must do to make an acknowledgement durable, with no
/// engine: `n` entries queued in a redb file (the outbox row and the record row of each,
/// written before the clock starts), read back in order, sent as `raw_push` sends them
/// (`concurrency` requests in flight, the same headers; bulk bodies built around the stored
/// record bytes), each answer decoded as JSON (the server's fields have to be read to be
/// merged) and handed to one writer thread, which group-commits them durably: the outbox row
/// deleted and the record row replaced by the server's version, up to `FLOOR_GROUP_MAX` per
/// `Durability::Immediate` commit, gathering for up to `TIDESYNC_BENCH_FLOOR_GATHER_US` first.
/// No in-flight marking, retries, events, conflicts, base or receipts: a floor, not an engine.
pub(crate) fn durable_floor_push(
    rt: &tokio::runtime::Runtime,
    n: usize,
    concurrency: usize,
    bulk: bool,
) -> Pushed {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, ids) = queued_store(dir.path(), n);
    let keys: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let url = Arc::new(if bulk {
        format!("{}/api/posts/bulk", server.url())
    } else {
        format!("{}/api/posts", server.url())
    });
    let client = common::http_client();
    let cpu = common::process_cpu();
    let start = Instant::now();
    let queued = read_queue(&db);
    let (acks, acked) = std::sync::mpsc::channel::<(u64, String, Vec<u8>)>();
    let gather = std::time::Duration::from_micros(common::env_usize(
        "TIDESYNC_BENCH_FLOOR_GATHER_US",
        2000,
        2000,
    ) as u64);
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut recorded = 0;
            while recorded < n {
                let first = acked.recv().expect("an acknowledgement");
                let mut group = vec![first];
                let gather_until = Instant::now() + gather;
                while group.len() < FLOOR_GROUP_MAX && recorded + group.len() < n {
                    let left = gather_until.saturating_duration_since(Instant::now());
                    match acked.recv_timeout(left) {
                        Ok(ack) => group.push(ack),
                        Err(_) => break,
                    }
                }
                let mut txn = db.begin_write().expect("write");
                txn.set_durability(Durability::Immediate)
                    .expect("durability");
                {
                    let mut outbox = txn.open_table(FLOOR_OUTBOX).expect("outbox");
                    let mut records = txn.open_table(FLOOR_RECORDS).expect("records");
                    for (seq, id, answer) in &group {
                        outbox.remove(*seq).expect("remove");
                        records
                            .insert(id.as_str(), answer.as_slice())
                            .expect("record");
                    }
                }
                txn.commit().expect("commit");
                recorded += group.len();
            }
        })
    };
    // One request: a queued entry, or `BULK_BATCH` of them through the bulk endpoint.
    let per_request = if bulk { BULK_BATCH } else { 1 };
    let requests: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(per_request)
        .map(|first| first..(first + per_request).min(n))
        .collect();
    let (queued, keys, ids, requests) = (
        Arc::new(queued),
        Arc::new(keys),
        Arc::new(ids),
        Arc::new(requests),
    );
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, queued, keys, ids, requests, url, next, acks) = (
                client.clone(),
                queued.clone(),
                keys.clone(),
                ids.clone(),
                requests.clone(),
                url.clone(),
                next.clone(),
                acks.clone(),
            );
            tasks.spawn(async move {
                while let Some(range) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let request = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("x-tidesync-epoch", "1");
                    let request = if bulk {
                        request.body(bulk_body(range.clone(), &ids, &keys, &queued))
                    } else {
                        let i = range.start;
                        request
                            .header("idempotency-key", keys[i].as_str())
                            .body(queued[i].1.clone())
                    };
                    let response = request.send().await.expect("send");
                    assert_eq!(response.status().as_u16(), if bulk { 200 } else { 201 });
                    let answer = response.bytes().await.expect("body");
                    let answer: Value = serde_json::from_slice(&answer).expect("json");
                    let versions = answered_versions(&answer, bulk);
                    assert_eq!(versions.len(), range.len());
                    for (i, version) in range.clone().zip(versions) {
                        let id = version["id"].as_str().expect("id").to_owned();
                        let bytes = serde_json::to_vec(version).expect("encode");
                        acks.send((queued[i].0, id, bytes)).expect("writer");
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task");
        }
    });
    finished(writer, &server, &db, n, start, cpu)
}

/// Base rows of the protocol floor: id → the marker "the record row, version V".
const FLOOR_BASES: TableDefinition<&str, &[u8]> = TableDefinition::new("bases");
/// Receipts of the protocol floor: sequence number → how the entry left the outbox.
const FLOOR_SETTLED: TableDefinition<u64, &[u8]> = TableDefinition::new("settled");
/// The receipts' order: ordinal → sequence number (what a bound on them prunes by).
const FLOOR_SETTLED_ORDER: TableDefinition<u64, u64> = TableDefinition::new("settled_order");
/// The next receipt ordinal.
const FLOOR_META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What the protocol floor's writer hands a sender: an entry marked in flight (its index in
/// the queue).
type Ready = usize;

/// The durable floor plus the rows the engine's guarantees write, still with no engine: an
/// entry is marked in flight in a durable commit before it is sent (DESIGN invariant 4: an
/// entry that may be on the server is never rewritten, and a crash must not forget that), and
/// its acknowledgement also stores the base (a marker row with the version: invariant 7) and a
/// receipt (two rows: the settlement and its place in the bounded trace). One writer thread
/// runs turns as the engine's store writer does: each commit records the acknowledgements that
/// arrived and marks the next entries, keeping as many marked ahead of the answers as the
/// engine prepares (single requests: `max(2 × concurrency, 32)`; bulk: `concurrency` requests
/// in flight and as many prepared, `BULK_BATCH` entries each); senders take them from a queue,
/// one entry per request or up to `BULK_BATCH` per bulk request. What is left between this and
/// the engine is the engine's own cost: decoding and encoding entries and records, actors,
/// events, checks.
pub(crate) fn protocol_floor_push(
    rt: &tokio::runtime::Runtime,
    n: usize,
    concurrency: usize,
    bulk: bool,
) -> Pushed {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, ids) = queued_store(dir.path(), n);
    let keys: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let url = Arc::new(if bulk {
        format!("{}/api/posts/bulk", server.url())
    } else {
        format!("{}/api/posts", server.url())
    });
    let client = common::http_client();
    let per_request = if bulk { BULK_BATCH } else { 1 };
    let ahead = if bulk {
        2 * concurrency * BULK_BATCH
    } else {
        (2 * concurrency).max(32)
    };
    let cpu = common::process_cpu();
    let start = Instant::now();
    let queued = Arc::new(read_queue(&db));
    // (sequence number, record id, version token, the server's version of the record)
    let (acks, acked) = std::sync::mpsc::channel::<(u64, String, String, Vec<u8>)>();
    let (ready_tx, ready_rx) = tokio::sync::mpsc::unbounded_channel::<Ready>();
    let ready_rx = Arc::new(tokio::sync::Mutex::new(ready_rx));
    let writer = {
        let (db, queued) = (db.clone(), queued.clone());
        std::thread::spawn(move || {
            // Dropped once every entry is marked: the senders then stop when the queue is empty.
            let mut ready_tx = Some(ready_tx);
            let (mut marked, mut recorded, mut ordinal) = (0usize, 0usize, 0u64);
            while recorded < n {
                // Wait for an acknowledgement only when nothing more can be marked.
                let mut group = Vec::new();
                if marked - recorded >= ahead || marked == n {
                    group.push(acked.recv().expect("an acknowledgement"));
                }
                group.extend(acked.try_iter());
                let mark = (ahead + recorded + group.len())
                    .saturating_sub(marked)
                    .min(n - marked);
                let mut txn = db.begin_write().expect("write");
                txn.set_durability(Durability::Immediate)
                    .expect("durability");
                {
                    let mut outbox = txn.open_table(FLOOR_OUTBOX).expect("outbox");
                    let mut records = txn.open_table(FLOOR_RECORDS).expect("records");
                    let mut bases = txn.open_table(FLOOR_BASES).expect("bases");
                    let mut settled = txn.open_table(FLOOR_SETTLED).expect("settled");
                    let mut order = txn.open_table(FLOOR_SETTLED_ORDER).expect("order");
                    let mut meta = txn.open_table(FLOOR_META).expect("meta");
                    for (seq, id, version, answer) in &group {
                        outbox.remove(*seq).expect("remove");
                        records
                            .insert(id.as_str(), answer.as_slice())
                            .expect("record");
                        let marker = format!("\u{1}\u{1}{version}");
                        bases.insert(id.as_str(), marker.as_bytes()).expect("base");
                        let receipt = serde_json::json!({
                            "seq": seq, "table": "posts", "key": id,
                            "settlement": {"kind": "acked"}, "at_ms": 0, "ordinal": ordinal,
                        });
                        let receipt = serde_json::to_vec(&receipt).expect("receipt");
                        settled.insert(*seq, receipt.as_slice()).expect("receipt");
                        order.insert(ordinal, *seq).expect("order");
                        ordinal += 1;
                    }
                    meta.insert("settled_ordinal", ordinal).expect("ordinal");
                    for i in marked..marked + mark {
                        // The entry's header rewritten with its in-flight flag.
                        let (seq, body) = &queued[i];
                        let mut row = Vec::with_capacity(body.len() + 1);
                        row.push(1);
                        row.extend_from_slice(body);
                        outbox.insert(*seq, row.as_slice()).expect("mark");
                    }
                }
                txn.commit().expect("commit");
                if let Some(ready) = &ready_tx {
                    for i in marked..marked + mark {
                        ready.send(i).expect("senders");
                    }
                }
                marked += mark;
                if marked == n {
                    ready_tx = None;
                }
                recorded += group.len();
            }
        })
    };
    let (keys, ids) = (Arc::new(keys), Arc::new(ids));
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, queued, keys, ids, url, ready, acks) = (
                client.clone(),
                queued.clone(),
                keys.clone(),
                ids.clone(),
                url.clone(),
                ready_rx.clone(),
                acks.clone(),
            );
            tasks.spawn(async move {
                loop {
                    // One request: the next marked entry, and for a bulk request as many more
                    // as are marked, up to `BULK_BATCH`.
                    let taken: Vec<usize> = {
                        let mut ready = ready.lock().await;
                        let Some(first) = ready.recv().await else {
                            break;
                        };
                        let mut taken = vec![first];
                        while taken.len() < per_request {
                            match ready.try_recv() {
                                Ok(i) => taken.push(i),
                                Err(_) => break,
                            }
                        }
                        taken
                    };
                    let request = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("x-tidesync-epoch", "1");
                    let request = if bulk {
                        request.body(bulk_body(taken.iter().copied(), &ids, &keys, &queued))
                    } else {
                        request
                            .header("idempotency-key", keys[taken[0]].as_str())
                            .body(queued[taken[0]].1.clone())
                    };
                    let response = request.send().await.expect("send");
                    assert_eq!(response.status().as_u16(), if bulk { 200 } else { 201 });
                    let answer = response.bytes().await.expect("body");
                    let answer: Value = serde_json::from_slice(&answer).expect("json");
                    let versions = answered_versions(&answer, bulk);
                    assert_eq!(versions.len(), taken.len());
                    for (i, version) in taken.into_iter().zip(versions) {
                        let id = version["id"].as_str().expect("id").to_owned();
                        let token = version["version"].to_string();
                        let bytes = serde_json::to_vec(version).expect("encode");
                        acks.send((queued[i].0, id, token, bytes)).expect("writer");
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task");
        }
    });
    let pushed = finished(writer, &server, &db, n, start, cpu);
    let txn = db.begin_read().expect("read");
    let settled = txn.open_table(FLOOR_SETTLED).expect("settled");
    assert_eq!(settled.len().expect("len"), n as u64, "a receipt each");
    pushed
}
