//! Coalescing and the outbox under any sequence of operations (DESIGN invariants 2–4): local
//! put/insert/update/delete, mark in flight, acknowledge, fail (retry later), dead-letter,
//! retry or discard a dead letter, restart (in-flight entries re-queued), and pulls meeting
//! pending changes with either resolution. After every step, for every record:
//! - its queue is in sequence order; the last entry carries the current record (a delete when
//!   the record is gone); an empty queue means the record equals its base (both compared
//!   without server-owned fields, see [`user_fields`]);
//! - an unsent entry is never followed by another, except a delete by a re-create;
//! - a sealed entry (in flight, attempted, dead) is never rewritten: same idempotency key, op
//!   and record for as long as it exists;
//! - the per-table depth counter equals the number of live (not dead) entries;
//! - the in-flight and backoff indexes list exactly the entries in flight and in backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tidesync::core::local::{LocalDb, RemoteMeta, Schema, WriteOp, layout};
use tidesync::core::outbox::DeadLetterInfo;
use tidesync::core::{HybridClock, PullPage, PushOutcome};
use tidesync::{ErrorKind, Key, MemoryStore, Op, Resolution, Store, TableSpec};

const TABLE: &str = "posts";
const KEYS: u8 = 3;

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u16),
    Insert(u8, u16),
    Update(u8, u16),
    Delete(u8),
    /// Hands the n-th ready head to the "transport".
    Send(u8),
    /// Acknowledges the n-th in-flight entry (the server echoes the record with a version).
    Ack(u8),
    /// A retryable failure of the n-th in-flight entry.
    Fail(u8),
    /// A permanent failure of the n-th in-flight entry.
    Dead(u8),
    RetryDead,
    DiscardDead,
    /// The process died: in-flight entries go back in the queue (still sealed).
    Restart,
    /// The n-th in-flight entry was prepared but never sent: taken back.
    Release(u8),
    /// Back online: entries in backoff become due.
    MakeDue,
    /// A pulled version of a record (`None`: deleted on the server), resolved either way.
    Pull(u8, Option<u16>, bool),
}

fn arb_step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS;
    prop_oneof![
        4 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Step::Put(k, v)),
        1 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Step::Insert(k, v)),
        4 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Step::Update(k, v)),
        2 => key.clone().prop_map(Step::Delete),
        3 => any::<u8>().prop_map(Step::Send),
        2 => any::<u8>().prop_map(Step::Ack),
        1 => any::<u8>().prop_map(Step::Fail),
        1 => any::<u8>().prop_map(Step::Dead),
        1 => Just(Step::RetryDead),
        1 => Just(Step::DiscardDead),
        1 => Just(Step::Restart),
        1 => any::<u8>().prop_map(Step::Release),
        1 => Just(Step::MakeDue),
        2 => (key, prop::option::of(any::<u16>()), any::<bool>())
            .prop_map(|(k, v, keep)| Step::Pull(k, v, keep)),
    ]
}

/// The record without its server-owned field. An ack merges the server's fields into the
/// local record, and a later entry queued while the first was in flight does not carry them
/// (they are not the application's data, and the next pull refreshes them).
fn user_fields(record: &Map<String, Value>) -> Map<String, Value> {
    let mut out = record.clone();
    out.remove("version");
    out
}

fn key(k: u8) -> Key {
    Key::Str(format!("k{k}"))
}

/// A record whose changed fields vary with `v`.
fn record(k: u8, v: u16) -> Value {
    json!({"id": format!("k{k}"), "v": v, format!("f{}", v % 3): v})
}

/// What a sealed entry must keep: its idempotency key, op and record.
type Sealed = (String, Op, Option<Map<String, Value>>);

struct Model {
    store: MemoryStore,
    db: LocalDb,
    /// seq → (idempotency key, op, record) when first seen sealed.
    sealed: HashMap<u64, Sealed>,
    /// Records whose dead letter was discarded: they may legitimately differ from their base.
    discarded: HashSet<String>,
}

impl Model {
    fn new() -> Model {
        let schema = Schema::new([TableSpec::new(TABLE).index("v")]).unwrap();
        Model {
            store: MemoryStore::new(),
            db: LocalDb::new(schema, Arc::new(HybridClock::new())),
            sealed: HashMap::new(),
            discarded: HashSet::new(),
        }
    }

    fn entries(&self) -> Vec<tidesync::OutboxEntry> {
        self.db
            .outbox()
            .entries(&*self.store.read().unwrap(), None, usize::MAX)
            .unwrap()
    }

    fn in_flight(&self) -> Vec<tidesync::OutboxEntry> {
        self.entries().into_iter().filter(|e| e.in_flight).collect()
    }

    /// Runs `f` in one write transaction, committed if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&LocalDb, &mut dyn tidesync::core::WriteTxn) -> tidesync::Result<T>,
    ) -> tidesync::Result<T> {
        let mut txn = self.store.write()?;
        let out = f(&self.db, &mut *txn)?;
        txn.commit()?;
        Ok(out)
    }

    fn local(&self, op: WriteOp) {
        match self.write(|db, txn| db.records().apply_local(txn, &[op])) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists) => {}
            Err(e) => panic!("a valid local write failed: {e}"),
        }
    }

    fn apply(&mut self, step: &Step) {
        let pick = |list: Vec<tidesync::OutboxEntry>, n: u8| {
            (!list.is_empty()).then(|| list[usize::from(n) % list.len()].clone())
        };
        match step {
            Step::Put(k, v) => self.local(WriteOp::Put {
                table: TABLE.into(),
                record: record(*k, *v),
            }),
            Step::Insert(k, v) => self.local(WriteOp::Insert {
                table: TABLE.into(),
                record: record(*k, *v),
            }),
            Step::Update(k, v) => self.local(WriteOp::Update {
                table: TABLE.into(),
                key: key(*k),
                patch: json!({"v": v, format!("g{}", v % 2): v}),
            }),
            Step::Delete(k) => self.local(WriteOp::Delete {
                table: TABLE.into(),
                key: key(*k),
            }),
            Step::Send(n) => {
                let heads = self
                    .db
                    .outbox()
                    .ready_heads(
                        &*self.store.read().unwrap(),
                        u64::MAX,
                        100,
                        &HashSet::new(),
                        &HashSet::new(),
                    )
                    .unwrap();
                if let Some(head) = pick(heads, *n) {
                    self.write(|db, txn| db.outbox().mark_in_flight(txn, head.seq))
                        .unwrap();
                }
            }
            Step::Ack(n) => {
                if let Some(entry) = pick(self.in_flight(), *n) {
                    let outcome = PushOutcome {
                        record: entry.record.clone().filter(|_| entry.op != Op::Delete).map(
                            |mut r| {
                                r.insert("version".into(), json!(entry.seq));
                                r
                            },
                        ),
                        version: Some(entry.seq.to_string()),
                        ..PushOutcome::default()
                    };
                    self.write(|db, txn| db.remote().ack_push(txn, entry.seq, &outcome))
                        .unwrap();
                }
            }
            Step::Fail(n) => {
                if let Some(entry) = pick(self.in_flight(), *n) {
                    // Odd picks wait out a delay (the backoff index), even ones are due now.
                    let at_ms = u64::from(*n % 2) * (1_000 + entry.seq);
                    self.write(|db, txn| db.outbox().retry_later(txn, entry.seq, at_ms, "503"))
                        .unwrap();
                }
            }
            Step::Dead(n) => {
                if let Some(entry) = pick(self.in_flight(), *n) {
                    let info = DeadLetterInfo {
                        kind: "permanent".into(),
                        error: "400".into(),
                        status: Some(400),
                        response_excerpt: None,
                        at_ms: 0,
                    };
                    self.write(|db, txn| db.outbox().dead_letter(txn, entry.seq, info))
                        .unwrap();
                }
            }
            Step::RetryDead => {
                let dead = self
                    .db
                    .outbox()
                    .dead_letters(&*self.store.read().unwrap(), None);
                if let Some(entry) = dead.unwrap().first() {
                    self.write(|db, txn| db.outbox().retry_dead_letter(txn, entry.seq, None))
                        .unwrap();
                }
            }
            Step::DiscardDead => {
                let dead = self
                    .db
                    .outbox()
                    .dead_letters(&*self.store.read().unwrap(), None);
                if let Some(entry) = dead.unwrap().first() {
                    self.discarded.insert(entry.key.to_string());
                    self.write(|db, txn| db.outbox().discard_dead_letter(txn, entry.seq))
                        .unwrap();
                }
            }
            Step::Restart => {
                self.write(|db, txn| db.outbox().reset_in_flight(txn))
                    .unwrap();
            }
            Step::Release(n) => {
                if let Some(entry) = pick(self.in_flight(), *n) {
                    self.write(|db, txn| db.outbox().release(txn, entry.seq))
                        .unwrap();
                }
            }
            Step::MakeDue => {
                self.write(|db, txn| db.outbox().make_due(txn, 0)).unwrap();
            }
            Step::Pull(k, v, keep_local) => {
                // The engine pulls only between push phases: nothing is in flight then.
                if !self.in_flight().is_empty() {
                    return;
                }
                let page = match v {
                    Some(v) => PullPage {
                        records: vec![
                            json!({"id": format!("k{k}"), "v": 10_000 + u32::from(*v), "srv": v})
                                .as_object()
                                .cloned()
                                .unwrap(),
                        ],
                        ..PullPage::default()
                    },
                    None => PullPage {
                        deleted: vec![key(*k)],
                        ..PullPage::default()
                    },
                };
                let meta = |_: &tidesync::Record| RemoteMeta {
                    version: Some("r".into()),
                    modified_ms: None,
                };
                let applied = self
                    .write(|db, txn| db.remote().apply_pull_page(txn, TABLE, &page, &meta))
                    .unwrap();
                assert!(applied.quarantined.is_empty());
                for (conflict, version) in applied.conflicts {
                    let resolution = if *keep_local {
                        Resolution::KeepLocal
                    } else {
                        Resolution::TakeRemote
                    };
                    self.write(|db, txn| {
                        db.remote()
                            .apply_resolution(txn, &conflict, version.clone(), &resolution)
                    })
                    .unwrap();
                    // A resolution settles the record anew (keep-local re-pushes it).
                    self.discarded.remove(&conflict.key.to_string());
                }
            }
        }
    }

    fn check(&mut self, history: &[Step]) -> Result<(), TestCaseError> {
        let read = self.store.read().unwrap();
        let entries = self.entries();
        for entry in &entries {
            if entry.sealed() {
                let now = (
                    entry.idempotency_key.clone(),
                    entry.op,
                    entry.record.clone(),
                );
                let first = self.sealed.entry(entry.seq).or_insert_with(|| now.clone());
                prop_assert_eq!(
                    &*first,
                    &now,
                    "sealed entry #{} was rewritten; steps {:?}",
                    entry.seq,
                    history
                );
            }
        }
        for k in 0..KEYS {
            let key = key(k);
            let queue: Vec<_> = entries.iter().filter(|e| e.key == key).collect();
            let current = self.db.records().get(&*read, TABLE, &key).unwrap();
            let base = self
                .db
                .records()
                .base(&*read, TABLE, &key)
                .unwrap()
                .map(|b| b.record);
            for pair in queue.windows(2) {
                prop_assert!(pair[0].seq < pair[1].seq);
                prop_assert!(
                    pair[0].sealed() || (pair[0].op == Op::Delete && pair[1].op == Op::Create),
                    "{}: unsent {:?} followed by {:?}; steps {:?}",
                    key,
                    pair[0].op,
                    pair[1].op,
                    history
                );
            }
            match (queue.last(), &current) {
                (Some(last), Some(record)) => {
                    prop_assert_ne!(
                        last.op,
                        Op::Delete,
                        "{}: exists, queue ends in a delete; steps {:?}",
                        key,
                        history
                    );
                    prop_assert_eq!(
                        last.record.as_ref().map(user_fields),
                        Some(user_fields(record)),
                        "{}: last entry does not carry the current record; steps {:?}",
                        key,
                        history
                    );
                }
                (Some(last), None) => prop_assert_eq!(
                    last.op,
                    Op::Delete,
                    "{}: gone, queue ends in {:?}; steps {:?}",
                    key,
                    last.op,
                    history
                ),
                (None, _) if self.discarded.contains(&key.to_string()) => {}
                (None, record) => prop_assert_eq!(
                    base.as_ref().map(user_fields),
                    record.as_ref().map(user_fields),
                    "{}: nothing queued, but record and base differ; steps {:?}",
                    key,
                    history
                ),
            }
        }
        // The in-flight and backoff indexes mirror the entries exactly.
        let rows = |keyspace: &str| {
            read.range(
                keyspace,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                None,
                false,
            )
            .unwrap()
        };
        let in_flight_index: Vec<u64> = rows(layout::IN_FLIGHT)
            .iter()
            .map(|(k, _)| layout::seq_from_suffix(k).unwrap())
            .collect();
        let in_flight: Vec<u64> = entries
            .iter()
            .filter(|e| e.in_flight)
            .map(|e| e.seq)
            .collect();
        prop_assert_eq!(
            in_flight_index,
            in_flight,
            "in-flight index drifted; steps {:?}",
            history
        );
        let backoff_index: Vec<(u64, u64)> = rows(layout::BACKOFF)
            .iter()
            .map(|(k, v)| {
                let at = u64::from_be_bytes(v.as_slice().try_into().unwrap());
                (layout::seq_from_suffix(k).unwrap(), at)
            })
            .collect();
        let waiting: Vec<(u64, u64)> = entries
            .iter()
            .filter(|e| !e.in_flight && e.dead.is_none() && e.next_attempt_at_ms > 0)
            .map(|e| (e.seq, e.next_attempt_at_ms))
            .collect();
        prop_assert_eq!(
            self.db.outbox().earliest_retry_at(&*read).unwrap(),
            waiting.iter().map(|(_, at)| *at).min()
        );
        prop_assert_eq!(
            backoff_index,
            waiting,
            "backoff index drifted; steps {:?}",
            history
        );
        let live = entries.iter().filter(|e| e.dead.is_none()).count() as u64;
        let depth = self.db.outbox().stats(&*read, TABLE).unwrap().depth;
        prop_assert_eq!(depth, live, "depth counter drifted; steps {:?}", history);
        Ok(())
    }
}

proptest! {
    #![proptest_config(crate::cases(256))]

    #[test]
    fn any_sequence_keeps_the_outbox_invariants(steps in prop::collection::vec(arb_step(), 1..60)) {
        let mut model = Model::new();
        for (i, step) in steps.iter().enumerate() {
            model.apply(step);
            model.check(&steps[..=i])?;
        }
    }
}
