//! A replica process: this test binary re-run as `replica_child`. It opens its redb store,
//! runs an engine against the parent's server and makes random writes until it is killed,
//! online and in offline stretches (sync stopped), with manual syncs in between and the
//! periodic timer on. It reports on stdout, one `H <json>` line per history event:
//!
//! - `{"kind":"W", …}`: an acknowledged local write (after `commit` returned): its token,
//!   table, key, op, fields, the HLC stamp and idempotency key of the outbox entry that
//!   carries it (when still queued), the wall-clock time;
//! - `{"kind":"C", …}`: a conflict its strategy decided (from `model::Recorded`).
//!
//! A write's token is `<src>.<n>`, `src` naming the replica and its incarnation (`r1k3`), so
//! every field value on the server names the write that produced it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};
use tidesync::{Engine, ErrorKind, SyncSettings};

use crate::model::{self, FIELDS, KEYS, TABLES};
use crate::verify::id_text;

pub const DB_ENV: &str = "TIDESYNC_REPLICA_CHILD_DB";
pub const URL_ENV: &str = "TIDESYNC_REPLICA_CHILD_URL";
pub const SRC_ENV: &str = "TIDESYNC_REPLICA_CHILD_SRC";
pub const INDEX_ENV: &str = "TIDESYNC_REPLICA_CHILD_INDEX";
pub const SEED_ENV: &str = "TIDESYNC_REPLICA_CHILD_SEED";

pub fn emit(event: Value) {
    println!("H {event}");
}

pub fn settings() -> SyncSettings {
    SyncSettings {
        interval: Some(Duration::from_millis(250)),
        sync_on_start: true,
        debounce: Duration::from_millis(40),
        concurrency: 2,
        backoff_base: Duration::from_millis(15),
        backoff_cap: Duration::from_millis(250),
        probe_base: Duration::from_millis(50),
        probe_cap: Duration::from_millis(250),
        page_size: 8,
        ..SyncSettings::default()
    }
}

/// Runs the child until it is killed.
pub fn run(db: PathBuf) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child runtime");
    runtime.block_on(child_main(db));
}

async fn child_main(db: PathBuf) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let url = var(URL_ENV);
    let src = var(SRC_ENV);
    let replica: usize = var(INDEX_ENV).parse().expect("replica index");
    let seed: u64 = var(SEED_ENV).parse().expect("seed");
    let sink: model::Sink = Arc::new(emit);
    let engine = model::open_engine(&db, &url, replica, sink, settings());
    println!("\nREADY");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    let mut offline_left = 0u32;
    loop {
        match rng.random_range(0..100) {
            0..64 => {
                n += 1;
                if let Some(event) = write(&engine, &mut rng, replica, &src, n).await {
                    emit(event);
                }
            }
            64..74 if offline_left == 0 => {
                let _ = tokio::time::timeout(Duration::from_secs(5), engine.sync()).await;
            }
            74..77 if offline_left == 0 => {
                engine.stop().expect("stop");
                offline_left = rng.random_range(10..60);
            }
            _ => {}
        }
        if offline_left > 0 {
            offline_left -= 1;
            if offline_left == 0 {
                engine.start().expect("start");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..20))).await;
    }
}

fn token_record(tok: &str, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .map(|f| ((*f).to_owned(), Value::from(tok)))
        .collect()
}

/// A random non-empty subset of the fields.
fn some_fields(rng: &mut StdRng) -> Vec<&'static str> {
    loop {
        let picked: Vec<&str> = FIELDS
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.45))
            .collect();
        if !picked.is_empty() {
            return picked;
        }
    }
}

/// The idempotency key and HLC stamp of the record's last queued entry (the one carrying the
/// write just made), if it is still queued.
fn last_entry(engine: &Engine, table: &str, key: &str) -> (Value, Value) {
    let entries = engine.outbox(Some(table), usize::MAX).unwrap_or_default();
    match entries
        .iter()
        .rev()
        .find(|e| id_text(&e.key.to_json()) == key)
    {
        Some(e) => (Value::from(e.idempotency_key.clone()), Value::from(e.hlc)),
        None => (Value::Null, Value::Null),
    }
}

/// Announces a write about to be made to an existing record (`A` event): if a SIGKILL cuts
/// off its acknowledgement, the checker still knows which record it may have changed.
fn attempt(replica: usize, src: &str, n: u64, table: &str, key: &str) {
    emit(json!({
        "kind": "A",
        "replica": replica,
        "src": src,
        "n": n,
        "table": table,
        "key": key,
        "at": model::now_ms(),
    }));
}

/// One local write; the history event once it is acknowledged.
async fn write(
    engine: &Engine,
    rng: &mut StdRng,
    replica: usize,
    src: &str,
    n: u64,
) -> Option<Value> {
    let tok = format!("{src}.{n}");
    let t = &TABLES[rng.random_range(0..TABLES.len())];
    let records = engine.table::<Value>(t.name).expect("table");
    // (logical key, local key, op, fields, outcome)
    let (logical, local_key, op, fields, result): (String, String, &str, Vec<&str>, _) = if t
        .server_ids
    {
        let all = records.scan(None, usize::MAX).await.expect("scan tasks");
        if all.is_empty() || rng.random_bool(0.3) {
            let mut rec = token_record(&tok, &FIELDS);
            rec.insert("cid".into(), Value::from(tok.clone()));
            let result = records
                .put(&Value::Object(rec))
                .await
                .map(|k| k.to_string());
            (
                tok.clone(),
                String::new(),
                "create",
                FIELDS.to_vec(),
                result,
            )
        } else {
            let task = &all[rng.random_range(0..all.len())];
            let cid = task["cid"].as_str()?.to_owned();
            let key = id_text(&task["id"]);
            attempt(replica, src, n, t.name, &cid);
            let fields = some_fields(rng);
            let patch = Value::Object(token_record(&tok, &fields));
            let result = records
                .update(key.as_str(), patch)
                .await
                .map(|_| key.clone());
            (cid, key, "patch", fields, result)
        }
    } else {
        let prefix = t.name;
        let key = format!("{prefix}{}", rng.random_range(0..KEYS));
        attempt(replica, src, n, t.name, &key);
        let existing = records.get(key.as_str()).await.expect("get");
        let roll = rng.random_range(0..100);
        match existing {
            Some(_) if roll < 45 => {
                let fields = some_fields(rng);
                let patch = Value::Object(token_record(&tok, &fields));
                let result = records
                    .update(key.as_str(), patch)
                    .await
                    .map(|_| key.clone());
                (key.clone(), key, "patch", fields, result)
            }
            Some(_) if roll >= 72 => {
                let result = records.delete(key.as_str()).await.map(|_| key.clone());
                (key.clone(), key, "delete", Vec::new(), result)
            }
            existing => {
                let mut rec = token_record(&tok, &FIELDS);
                rec.insert("id".into(), Value::from(key.clone()));
                if t.references.is_some() {
                    let (task, tcid) = match existing.as_ref() {
                        Some(e) if !e["task"].is_null() => (e["task"].clone(), e["tcid"].clone()),
                        _ => {
                            let tasks = engine.table::<Value>("tasks").expect("tasks");
                            let all = tasks.scan(None, usize::MAX).await.expect("scan");
                            if all.is_empty() {
                                return None;
                            }
                            let task = &all[rng.random_range(0..all.len())];
                            (task["id"].clone(), task["cid"].clone())
                        }
                    };
                    rec.insert("task".into(), task);
                    rec.insert("tcid".into(), tcid);
                }
                let op = if existing.is_some() { "put" } else { "create" };
                let result = records.put(&Value::Object(rec)).await.map(|_| key.clone());
                (key.clone(), key, op, FIELDS.to_vec(), result)
            }
        }
    };
    let local_key = match result {
        Ok(k) if local_key.is_empty() => k,
        Ok(_) => local_key,
        // `Table::update` committed the write, then found the record gone when it read it
        // back (an id remap or a pull right after the commit): it reports NotFound for a
        // write it made (BUG-13). The write may well be pushed; report it as uncertain.
        Err(err)
            if err.kind() == ErrorKind::NotFound
                && err.to_string().contains("vanished after update") =>
        {
            return Some(json!({
                "kind": "U",
                "replica": replica,
                "src": src,
                "n": n,
                "tok": tok,
                "table": t.name,
                "key": logical,
                "op": op,
                "fields": fields,
                "at": model::now_ms(),
            }));
        }
        // A pull, a conflict outcome or an id remap removed the record meanwhile.
        Err(err) if err.kind() == ErrorKind::NotFound => return None,
        Err(err) => panic!("FATAL: a valid local write failed: {err}"),
    };
    let at = model::now_ms();
    let (idem, hlc) = last_entry(engine, t.name, &local_key);
    Some(json!({
        "kind": "W",
        "replica": replica,
        "src": src,
        "n": n,
        "tok": tok,
        "table": t.name,
        "key": logical,
        "local_key": local_key,
        "op": op,
        "fields": fields,
        "idem": idem,
        "hlc": hlc,
        "at": at,
    }))
}
