//! Convergence checks shared by the crash-torture suite (`tests/torture`) and the seeded fault
//! suite (`tests/faults`, which includes this file with `#[path]`).
//!
//! After a run has converged (outbox empty, a pull finds nothing new), [`verify`] checks the
//! claim "loses nothing, duplicates nothing":
//! - local and server hold the same live records, field by field (server-owned `updatedAt` and
//!   `version` compared separately: the local copy gets them on ack or pull);
//! - the last local write of every record reached the server: the server's copy carries its
//!   version counter `v` (a delete: the record is not live there), unless the table's strategy
//!   let a remote edit win ([`Check::ServerWins`] on a record another client touched) or
//!   another client deleted the record afterwards (its tombstone still carries `v`);
//! - nothing is duplicated: no id created twice, no client id (`by` field, for tables whose
//!   ids the server assigns) on two server records, no idempotency key applied twice, no key
//!   reused for another operation.

#![allow(dead_code)] // each suite uses a different part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use tidesync::Engine;
use tidesync_testkit::server::ServerHandle;

/// Fields the server owns (stamped on every write).
pub const SERVER_FIELDS: [&str; 2] = ["updatedAt", "version"];

/// How strictly a table's last local writes must show on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Client wins: every record's last local write is on the server.
    ClientWins,
    /// Server wins: as client-wins for records no other client touched; a touched record may
    /// have lost its local write to the server's version (then local must equal server).
    ServerWins,
}

/// One synced table and how to check it.
#[derive(Clone, Copy, Debug)]
pub struct TableCheck {
    /// Table (and collection) name.
    pub name: &'static str,
    /// Its conflict strategy, as far as the check is concerned.
    pub check: Check,
    /// For tables whose ids the server assigns: the client field that identifies a record
    /// (expectations are keyed by it, and it must be unique on the server).
    pub by: Option<&'static str>,
    /// Whether the table is pulled (a push-only table cannot equal the server locally).
    pub pulled: bool,
}

/// The last local write of a record: its version counter and whether it was a delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastWrite {
    /// The value of the record's `v` field after the write (per-record counter).
    pub v: u64,
    /// The write deleted the record.
    pub deleted: bool,
}

/// What other clients did on the server (the tests, through the inspection API).
#[derive(Debug, Default)]
pub struct ServerEdits {
    touched: Mutex<BTreeSet<(String, String)>>,
    deleted: Mutex<BTreeSet<(String, String)>>,
    count: AtomicU64,
}

impl ServerEdits {
    /// Records that another client changed `table/key` (keyed by the `by` field where set).
    pub fn touch(&self, table: &str, key: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        lock(&self.touched).insert((table.to_owned(), key.to_owned()));
    }

    /// Records that another client deleted `table/key`.
    pub fn delete(&self, table: &str, key: &str) {
        self.touch(table, key);
        lock(&self.deleted).insert((table.to_owned(), key.to_owned()));
    }

    /// Whether another client changed the record.
    pub fn touched(&self, table: &str, key: &str) -> bool {
        lock(&self.touched).contains(&(table.to_owned(), key.to_owned()))
    }

    /// Whether another client deleted the record.
    pub fn deleted(&self, table: &str, key: &str) -> bool {
        lock(&self.deleted).contains(&(table.to_owned(), key.to_owned()))
    }

    /// How many server-side edits were made.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Live records compared local against server.
    pub records: usize,
    /// Records whose last local write was checked against the server exactly.
    pub exact: usize,
    /// Records whose local write legitimately lost to a server edit (server wins).
    pub superseded: usize,
    /// Records another client deleted after the last local write reached the server.
    pub deleted_by_others: usize,
    /// Write requests in the server log, and how many were answered by idempotent replay.
    pub writes: usize,
    /// Replays (a retried write that had already been applied).
    pub replays: u64,
    /// Everything that is wrong.
    pub violations: Vec<String>,
}

impl Verdict {
    /// Panics with every violation (and `context`) if there is any.
    pub fn assert_clean(&self, context: &str) {
        assert!(
            self.violations.is_empty(),
            "{} violation(s):\n  {}\n{context}",
            self.violations.len(),
            self.violations.join("\n  ")
        );
    }
}

/// An id as a string (`5` and `"5"` name the same record).
pub fn id_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The application's fields of a record: server-owned fields removed, the id as a string.
pub fn user_fields(record: &Map<String, Value>) -> Map<String, Value> {
    let mut out = record.clone();
    for field in SERVER_FIELDS {
        out.remove(field);
    }
    if let Some(id) = out.get("id").map(id_text) {
        out.insert("id".into(), Value::String(id));
    }
    out
}

fn obj(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn short(value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

/// All local records of `table`, straight from the store.
///
/// Not through `Table::scan`: that fails for the whole table once a pull stored a record
/// whose integer id the table accepted as a string key (BUG-1 in docs/reliability.md).
pub async fn scan_raw(engine: &Engine, table: &str) -> Vec<Value> {
    let table = table.to_owned();
    engine
        .store_writer()
        .send(tidesync::actors::StoreClosure::new(move |db, txn| {
            Ok((
                db.records().scan(&*txn, &table, None, usize::MAX)?,
                Vec::new(),
            ))
        }))
        .await
        .expect("the store writer runs")
        .expect("local scan")
        .into_iter()
        .map(Value::Object)
        .collect()
}

/// All local records of `table`, by key.
pub async fn local_records(engine: &Engine, table: &str) -> BTreeMap<String, Map<String, Value>> {
    scan_raw(engine, table)
        .await
        .iter()
        .map(|r| (id_text(&r["id"]), obj(r)))
        .collect()
}

/// All live server records of `table`, by id.
pub fn server_records(server: &ServerHandle, table: &str) -> BTreeMap<String, Map<String, Value>> {
    server
        .records(table)
        .iter()
        .map(|r| (id_text(&r["id"]), obj(r)))
        .collect()
}

/// Checks a converged run. `expect` maps `(table, key)` to the last local write (for tables
/// with `by`, the key is that field's value).
pub async fn verify(
    engine: &Engine,
    server: &ServerHandle,
    tables: &[TableCheck],
    expect: &BTreeMap<(String, String), LastWrite>,
    edits: &ServerEdits,
) -> Verdict {
    let mut verdict = Verdict::default();
    let bad = &mut verdict.violations;

    // 1. Local and server agree record by record.
    for t in tables.iter().filter(|t| t.pulled) {
        let local = local_records(engine, t.name).await;
        let remote = server_records(server, t.name);
        verdict.records += remote.len();
        let keys: BTreeSet<&String> = local.keys().chain(remote.keys()).collect();
        for key in keys {
            match (local.get(key), remote.get(key)) {
                (Some(l), None) => bad.push(format!(
                    "{}/{key}: only local (server has {}): {}",
                    t.name,
                    server
                        .record_any(t.name, key.as_str())
                        .map_or("nothing".to_owned(), |r| short(&r)),
                    short(l)
                )),
                (None, Some(s)) => bad.push(format!(
                    "{}/{key}: only on the server: {}",
                    t.name,
                    short(s)
                )),
                (Some(l), Some(s)) => {
                    if user_fields(l) != user_fields(s) {
                        bad.push(format!(
                            "{}/{key}: local and server differ\n    local  {}\n    server {}",
                            t.name,
                            short(l),
                            short(s)
                        ));
                    } else if l.get("version") != s.get("version") {
                        bad.push(format!(
                            "{}/{key}: same data, but local version {:?} and server version {:?}",
                            t.name,
                            l.get("version"),
                            s.get("version")
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }

    // 2. Every record's last local write reached the server (or lost legitimately).
    for ((table, key), last) in expect {
        let Some(t) = tables.iter().find(|t| t.name == table) else {
            continue;
        };
        let touched = edits.touched(table, key);
        if t.check == Check::ServerWins && touched {
            verdict.superseded += 1;
            continue;
        }
        if let Some(field) = t.by {
            let mut found: Vec<Value> = server
                .records(table)
                .into_iter()
                .chain(server.tombstones(table))
                .filter(|r| r.get(field).map(id_text).as_deref() == Some(key.as_str()))
                .collect();
            match found.len() {
                0 => bad.push(format!(
                    "{table} {field}={key}: acknowledged create never reached the server"
                )),
                1 => {
                    let r = found.remove(0);
                    if !last.deleted && r["v"].as_u64() != Some(last.v) {
                        bad.push(format!(
                            "{table} {field}={key}: server has v{} but the last local write is v{}",
                            r["v"], last.v
                        ));
                    }
                    verdict.exact += 1;
                }
                n => bad.push(format!(
                    "{table} {field}={key}: DUPLICATED: {n} server records: {}",
                    short(&found)
                )),
            }
            continue;
        }
        let any = server.record_any(table.as_str(), key.as_str());
        let tombstone = any
            .as_ref()
            .is_some_and(|r| r["deleted"] == Value::Bool(true));
        match (last.deleted, &any) {
            (false, None) => bad.push(format!(
                "{table}/{key}: acknowledged write v{} never reached the server",
                last.v
            )),
            (false, Some(r)) => {
                if r["v"].as_u64() != Some(last.v) {
                    bad.push(format!(
                        "{table}/{key}: server has v{} but the last local write is v{}: {}",
                        r["v"],
                        last.v,
                        short(r)
                    ));
                } else if tombstone && !edits.deleted(table, key) {
                    bad.push(format!(
                        "{table}/{key}: deleted on the server, but the last local write (v{}) \
                         is not a delete and no other client deleted it",
                        last.v
                    ));
                } else if tombstone {
                    verdict.deleted_by_others += 1;
                }
            }
            (true, Some(r)) if !tombstone => bad.push(format!(
                "{table}/{key}: the last local write deleted it, but it is live on the server: {}",
                short(r)
            )),
            (true, _) => {}
        }
        verdict.exact += 1;
    }

    // 3. Nothing duplicated.
    for t in tables {
        let all: Vec<Value> = server
            .records(t.name)
            .into_iter()
            .chain(server.tombstones(t.name))
            .collect();
        for r in &all {
            let created = server.create_count(t.name, &r["id"]);
            if created > 1 {
                bad.push(format!(
                    "{}/{}: created {created} times",
                    t.name,
                    id_text(&r["id"])
                ));
            }
        }
        if let Some(field) = t.by {
            let mut by: HashMap<String, usize> = HashMap::new();
            for r in &all {
                if let Some(v) = r.get(field) {
                    *by.entry(id_text(v)).or_default() += 1;
                }
            }
            for (value, n) in by.into_iter().filter(|(_, n)| *n > 1) {
                bad.push(format!(
                    "{} {field}={value}: {n} server records (duplicate)",
                    t.name
                ));
            }
        }
    }
    let mut applied: HashMap<String, usize> = HashMap::new();
    for r in server.request_log() {
        if !r.is_write() {
            continue;
        }
        verdict.writes += 1;
        if let (true, Some(key)) = (r.applied_fresh(), r.idempotency_key()) {
            *applied.entry(key.to_owned()).or_default() += 1;
        }
    }
    for (key, n) in applied.into_iter().filter(|(_, n)| *n > 1) {
        // Every request that carried the key, so the report shows how it got applied twice.
        let history: Vec<String> = server
            .request_log()
            .iter()
            .filter(|r| r.idempotency_key() == Some(key.as_str()))
            .map(|r| {
                format!(
                    "#{} {} {} -> {} (handler {}){}{}",
                    r.seq,
                    r.method,
                    r.path,
                    r.status.map_or("none".to_owned(), |s| s.to_string()),
                    r.handler_status
                        .map_or("none".to_owned(), |s| s.to_string()),
                    r.fault
                        .as_deref()
                        .map(|f| format!(" [{f}]"))
                        .unwrap_or_default(),
                    if r.replayed { " (replayed)" } else { "" },
                )
            })
            .collect();
        bad.push(format!(
            "idempotency key {key} applied {n} times: {}",
            history.join(", ")
        ));
    }
    if server.idempotency_mismatches() > 0 {
        bad.push(format!(
            "{} requests reused an idempotency key for another operation",
            server.idempotency_mismatches()
        ));
    }
    verdict.replays = server.replay_count();
    verdict
}

/// The last `n` requests of the server log, one line each (for failure reports).
pub fn trace(server: &ServerHandle, n: usize) -> String {
    let log = server.request_log();
    let start = log.len().saturating_sub(n);
    let mut out = format!("last {} of {} requests:\n", log.len() - start, log.len());
    for r in &log[start..] {
        out.push_str(&format!(
            "  #{} {} {}{} -> {} {}{} key={}\n",
            r.seq,
            r.method,
            r.path,
            r.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            r.status.map_or("none".to_owned(), |s| s.to_string()),
            r.fault
                .as_deref()
                .map(|f| format!("[{f}] "))
                .unwrap_or_default(),
            if r.replayed { "(replayed)" } else { "" },
            r.idempotency_key().unwrap_or("-"),
        ));
    }
    out
}

/// The engine's outbox and dead letters (for failure reports).
pub fn engine_state(engine: &Engine) -> String {
    let mut out = String::new();
    let outbox = engine.outbox(None, 50).unwrap_or_default();
    out.push_str(&format!("outbox ({} shown):\n", outbox.len()));
    for e in &outbox {
        out.push_str(&format!(
            "  #{} {:?} {}/{} attempts={} in_flight={} dead={} last_error={:?}\n",
            e.seq,
            e.op,
            e.table,
            e.key,
            e.attempts,
            e.in_flight,
            e.dead.is_some(),
            e.last_error
        ));
    }
    let dead = engine.dead_letters(None).unwrap_or_default();
    out.push_str(&format!("dead letters ({}):\n", dead.len()));
    for e in &dead {
        out.push_str(&format!(
            "  #{} {:?} {}/{} {:?}\n",
            e.seq, e.op, e.table, e.key, e.dead
        ));
    }
    if let Ok(parked) = engine.parked_conflicts(None) {
        out.push_str(&format!("parked conflicts: {}\n", parked.len()));
    }
    out
}
