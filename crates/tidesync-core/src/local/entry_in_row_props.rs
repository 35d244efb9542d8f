//! Entries that point at their record row (layout v3) against entries that carry a copy of
//! their record (layout v2's form): the same random histories of local writes, sends,
//! acknowledgements (some under a key the server assigns, which rewrites the comments that
//! reference the record), retries, dead letters, pulls and remote deletes run on two
//! databases, one
//! of each form, and after every step both must hold the same records and the same queue,
//! entry by entry, record by record. A pointer left on a row that changed would show here as
//! an entry whose record differs from the copy's.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::test_txn::MapTxn;
use super::{LocalDb, PreparedPut, RemoteMeta, Schema, WriteOp, layout};
use crate::outbox::{DeadLetterInfo, OutboxEntry};
use crate::record::{Key, Record};
use crate::store::ReadTxn;
use crate::transport::{PullPage, PushOutcome};
use crate::{HybridClock, TableSpec};

const KEYS: [&str; 3] = ["a", "b", "c"];
const TABLES: [&str; 2] = ["posts", "comments"];

#[derive(Debug, Clone)]
enum Step {
    Put(usize, u8),
    Patch(usize, u8),
    Delete(usize),
    /// The record's first entry is handed to the transport.
    Send(usize),
    /// The server acknowledges the record's entry in flight, adding a field of its own.
    Ack(usize, u8),
    /// The server acknowledges the record's create in flight under a key of its own choosing
    /// (another of the keys, which may hold a pulled copy already): the record is remapped.
    AckRemap(usize, usize),
    /// The entry in flight is to be retried later.
    Retry(usize),
    /// The entry in flight is dead-lettered.
    DeadLetter(usize),
    /// A dead letter goes back to the queue, edited or not.
    RetryDead(usize, Option<u8>),
    /// The server's version arrives in a pull.
    Pull(usize, u8),
    /// A pull says the server deleted the record.
    PullDelete(usize),
    /// A comment (its own table, pushed too) is written that references a post: a remap of
    /// that post rewrites the comment's row and its queued entries.
    Comment(usize, usize, u8),
    /// Several local writes (posts, and comments that may follow a remap) in one call. The
    /// pointer side runs them as a bulk import does: one batch (`Records::prove_new`; writes
    /// of keys proved new skip their reads, sequence numbers follow the batch's last), puts
    /// checked and encoded ahead (`PreparedPut`, `Records::apply_prepared_in`), the rest
    /// through `Records::apply_local_in`; the copying side runs them one call each, reading
    /// everything.
    Batch(Vec<BatchOp>),
}

#[derive(Debug, Clone)]
enum BatchOp {
    Put(usize, u8),
    Patch(usize, u8),
    Delete(usize),
    /// A comment (a reference to a post, followed if the post's key was remapped).
    Comment(usize, usize, u8),
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    let k = 0..KEYS.len();
    prop_oneof![
        3 => (k.clone(), any::<u8>()).prop_map(|(k, n)| BatchOp::Put(k, n)),
        1 => (k.clone(), any::<u8>()).prop_map(|(k, n)| BatchOp::Patch(k, n)),
        1 => k.clone().prop_map(BatchOp::Delete),
        1 => (k.clone(), k, any::<u8>()).prop_map(|(c, post, n)| BatchOp::Comment(c, post, n)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let k = 0..KEYS.len();
    prop_oneof![
        3 => (k.clone(), any::<u8>()).prop_map(|(k, n)| Step::Put(k, n)),
        2 => (k.clone(), any::<u8>()).prop_map(|(k, n)| Step::Patch(k, n)),
        1 => k.clone().prop_map(Step::Delete),
        3 => k.clone().prop_map(Step::Send),
        2 => (k.clone(), any::<u8>()).prop_map(|(k, n)| Step::Ack(k, n)),
        1 => (k.clone(), k.clone()).prop_map(|(k, to)| Step::AckRemap(k, to)),
        1 => k.clone().prop_map(Step::Retry),
        1 => k.clone().prop_map(Step::DeadLetter),
        1 => (k.clone(), proptest::option::of(any::<u8>())).prop_map(|(k, n)| Step::RetryDead(k, n)),
        2 => (k.clone(), any::<u8>()).prop_map(|(k, n)| Step::Pull(k, n)),
        1 => k.clone().prop_map(Step::PullDelete),
        2 => (k.clone(), k, any::<u8>()).prop_map(|(c, post, n)| Step::Comment(c, post, n)),
        2 => proptest::collection::vec(batch_op(), 1..6).prop_map(Step::Batch),
    ]
}

fn db(copying: bool) -> LocalDb {
    let schema = Schema::new([
        TableSpec::new("posts"),
        TableSpec::new("comments").references("post", "posts"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
    if copying {
        db.copying_records_into_entries()
    } else {
        db
    }
}

fn record(value: Value) -> Record {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
}

/// The record's first entry.
fn head(db: &LocalDb, txn: &MapTxn, key: &Key) -> Option<OutboxEntry> {
    db.outbox()
        .pending(txn, "posts", key)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .next()
}

/// Runs `step` on one database (a step that does not apply, e.g. sending a record with no
/// entry, does nothing). `batched`: a [`Step::Batch`] runs as one batch, else op by op; and an
/// acknowledgement is given the record that was sent (as the pusher does), else reads it.
fn run(db: &LocalDb, txn: &mut MapTxn, step: &Step, batched: bool) -> Result<(), String> {
    let key_of = |k: usize| Key::Str(KEYS[k].to_owned());
    let local = |txn: &mut MapTxn, op: WriteOp| {
        db.records()
            .apply_local(txn, &[op])
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match step {
        Step::Put(k, n) => local(
            txn,
            WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": KEYS[*k], "title": format!("local {n}"), "n": n}),
            },
        ),
        Step::Patch(k, n) => local(
            txn,
            WriteOp::Update {
                table: "posts".into(),
                key: key_of(*k),
                patch: json!({"title": format!("patched {n}")}),
            },
        ),
        Step::Delete(k) => local(
            txn,
            WriteOp::Delete {
                table: "posts".into(),
                key: key_of(*k),
            },
        ),
        Step::Send(k) => match head(db, txn, &key_of(*k)) {
            Some(e) if !e.in_flight && e.dead.is_none() => db
                .outbox()
                .mark_in_flight(txn, e.seq)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
        Step::Ack(k, n) => match head(db, txn, &key_of(*k)) {
            Some(e) if e.in_flight => {
                let record = e.record.clone().map(|mut r| {
                    r.insert("server_field".into(), json!(n));
                    r
                });
                let sent = e.record.as_ref().filter(|_| batched);
                ack(db, txn, e.seq, sent, record, Some(format!("v{n}")), None)
            }
            _ => Ok(()),
        },
        Step::AckRemap(k, to) => match head(db, txn, &key_of(*k)) {
            Some(e) if e.in_flight && e.op == crate::outbox::Op::Create && k != to => {
                let record = e.record.clone().map(|mut r| {
                    r.insert("id".into(), json!(KEYS[*to]));
                    r
                });
                let sent = e.record.as_ref().filter(|_| batched);
                ack(db, txn, e.seq, sent, record, None, Some(key_of(*to)))
            }
            _ => Ok(()),
        },
        Step::Retry(k) => match head(db, txn, &key_of(*k)) {
            Some(e) if e.in_flight => db
                .outbox()
                .retry_later(txn, e.seq, 7, "503 Service Unavailable")
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
        Step::DeadLetter(k) => match head(db, txn, &key_of(*k)) {
            Some(e) if e.in_flight => db
                .outbox()
                .dead_letter(
                    txn,
                    e.seq,
                    DeadLetterInfo {
                        kind: "permanent".into(),
                        error: "422".into(),
                        status: Some(422),
                        response_excerpt: None,
                        at_ms: 1,
                    },
                )
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
        Step::RetryDead(k, edit) => match head(db, txn, &key_of(*k)) {
            Some(e) if e.dead.is_some() => {
                let edited = match (edit, &e.record) {
                    (Some(n), Some(r)) => {
                        let mut r = r.clone();
                        r.insert("title".into(), json!(format!("edited {n}")));
                        Some(r)
                    }
                    _ => None,
                };
                db.outbox()
                    .retry_dead_letter(txn, e.seq, edited)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        },
        Step::Pull(k, n) => pull(
            db,
            txn,
            vec![record(
                json!({"id": KEYS[*k], "title": format!("remote {n}"), "n": n}),
            )],
            vec![],
        ),
        Step::PullDelete(k) => pull(db, txn, vec![], vec![key_of(*k)]),
        Step::Comment(c, post, n) => local(
            txn,
            WriteOp::Put {
                table: "comments".into(),
                record: json!({"id": KEYS[*c], "post": KEYS[*post], "text": format!("c {n}")}),
            },
        ),
        Step::Batch(ops) => {
            let ops: Vec<WriteOp> = ops
                .iter()
                .map(|op| match op {
                    BatchOp::Put(k, n) => WriteOp::Put {
                        table: "posts".into(),
                        record: json!({"id": KEYS[*k], "title": format!("batch {n}"), "n": n}),
                    },
                    BatchOp::Patch(k, n) => WriteOp::Update {
                        table: "posts".into(),
                        key: key_of(*k),
                        patch: json!({"title": format!("batch patch {n}")}),
                    },
                    BatchOp::Delete(k) => WriteOp::Delete {
                        table: "posts".into(),
                        key: key_of(*k),
                    },
                    BatchOp::Comment(c, post, n) => WriteOp::Put {
                        table: "comments".into(),
                        record: json!({"id": KEYS[*c], "post": KEYS[*post], "text": format!("bc {n}")}),
                    },
                })
                .collect();
            if !batched {
                return ops.into_iter().try_for_each(|op| local(txn, op));
            }
            let puts = ops.iter().filter_map(|op| match op {
                WriteOp::Put { record, .. } => record.get("id").and_then(Key::from_json),
                _ => None,
            });
            let mut batch = db
                .records()
                .prove_new(txn, "posts", puts)
                .map_err(|e| e.to_string())?;
            // Puts go the bulk import's way: checked and encoded ahead (`PreparedPut`).
            for op in ops {
                let written = match op {
                    WriteOp::Put { table, record } => {
                        let spec = db.schema.table(&table).map_err(|e| e.to_string())?;
                        let mut put = PreparedPut::new(spec, record, false)
                            .map_err(|(_, e)| e.to_string())?;
                        db.records()
                            .apply_prepared_in(txn, &mut put, &mut batch)
                            .map(|_| ())
                    }
                    op => db
                        .records()
                        .apply_local_in(txn, &[op], &mut batch)
                        .map(|_| ()),
                };
                written.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// The server's answer to entry `seq`: its version of the record, a version token, and the key
/// it assigned (a remap) if any.
/// `sent`: the record the request carried, when the caller kept it (the pusher does); `None`
/// has the acknowledgement read it from the store.
fn ack(
    db: &LocalDb,
    txn: &mut MapTxn,
    seq: u64,
    sent: Option<&Record>,
    record: Option<Record>,
    version: Option<String>,
    server_key: Option<Key>,
) -> Result<(), String> {
    let outcome = PushOutcome {
        record,
        version,
        server_key,
        server_time_ms: None,
    };
    db.remote()
        .ack_push_as_sent(txn, seq, sent.cloned(), outcome)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn pull(
    db: &LocalDb,
    txn: &mut MapTxn,
    records: Vec<Record>,
    deleted: Vec<Key>,
) -> Result<(), String> {
    let page = PullPage {
        records,
        deleted,
        cursor: None,
        has_more: false,
        server_time_ms: None,
        total: None,
        warnings: vec![],
    };
    db.remote()
        .apply_pull_page_owned(txn, "posts", page, &|_| RemoteMeta::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What must be the same on both sides: each record and each entry (but for what the clock
/// and the UUID generator give each side).
fn state(db: &LocalDb, txn: &MapTxn) -> Vec<Value> {
    let mut out = Vec::new();
    for (table, k) in TABLES
        .iter()
        .flat_map(|t| KEYS.iter().map(move |k| (*t, *k)))
    {
        let key = Key::Str(k.to_owned());
        let row = db
            .records()
            .get(txn, table, &key)
            .unwrap_or_else(|e| panic!("{e}"));
        out.push(json!({"table": table, "record": row}));
        for e in db
            .outbox()
            .pending(txn, table, &key)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            out.push(json!({
                "seq": e.seq, "table": table, "key": k, "op": format!("{:?}", e.op), "record": e.record,
                "changed": e.changed, "attempts": e.attempts, "failures": e.failures,
                "in_flight": e.in_flight, "dead": e.dead.is_some(),
                "deleted_remotely": e.deleted_remotely, "next_attempt_at_ms": e.next_attempt_at_ms,
            }));
        }
    }
    out
}

/// Every record's queue as its row's header lists it (layout v4) is exactly the outbox's
/// entries of that record, in order: the outbox is read whole, independently of the headers.
fn queues_match_outbox(db: &LocalDb, txn: &MapTxn) -> Result<(), String> {
    let mut by_record: std::collections::BTreeMap<(String, Key), Vec<u64>> = Default::default();
    for entry in db
        .outbox()
        .entries(txn, None, usize::MAX)
        .map_err(|e| e.to_string())?
    {
        by_record
            .entry((entry.table.clone(), entry.key.clone()))
            .or_default()
            .push(entry.seq);
    }
    for table in TABLES {
        for k in KEYS {
            let key = Key::Str(k.to_owned());
            let listed: Vec<u64> = db
                .outbox()
                .pending(txn, table, &key)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|e| e.seq)
                .collect();
            let queued = by_record
                .remove(&(table.to_owned(), key.clone()))
                .unwrap_or_default();
            if listed != queued {
                return Err(format!(
                    "{table}/{k}: the record lists {listed:?}, the outbox holds {queued:?}"
                ));
            }
        }
    }
    match by_record.into_keys().next() {
        Some((table, key)) => Err(format!("entries of {table}/{key} outside the keys")),
        None => Ok(()),
    }
}

/// Entries of the pointer side that point at their row.
fn pointing(txn: &MapTxn) -> usize {
    txn.range(
        layout::OUTBOX,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        None,
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .iter()
    .filter(|(_, v)| super::entry_codec::record_in_row(v))
    .count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn entries_pointing_at_their_rows_send_what_copies_would(steps in proptest::collection::vec(step(), 1..60)) {
        let (pointers, copies) = (db(false), db(true));
        let (mut p_txn, mut c_txn) = (MapTxn::default(), MapTxn::default());
        for (i, step) in steps.iter().enumerate() {
            let p = run(&pointers, &mut p_txn, step, true);
            let c = run(&copies, &mut c_txn, step, false);
            prop_assert_eq!(p.is_ok(), c.is_ok(), "step {} {:?}: {:?} / {:?}", i, step, p, c);
            prop_assert_eq!(state(&pointers, &p_txn), state(&copies, &c_txn), "after step {} {:?}", i, step);
            prop_assert_eq!(pointing(&c_txn), 0, "the copying side never points");
            prop_assert_eq!(queues_match_outbox(&pointers, &p_txn), Ok(()), "after step {} {:?}", i, step);
            prop_assert_eq!(queues_match_outbox(&copies, &c_txn), Ok(()), "after step {} {:?}", i, step);
            // The totals read in a few point reads agree with the table's count.
            let totals = pointers.outbox().totals(&p_txn).unwrap_or_else(|e| panic!("{e}"));
            let (mut depth, mut oldest) = (0, None::<u64>);
            for table in TABLES {
                let stats = pointers.outbox().stats(&p_txn, table).unwrap_or_else(|e| panic!("{e}"));
                depth += stats.depth;
                oldest = match (oldest, stats.oldest_created_at_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            prop_assert_eq!((totals.depth, totals.oldest_created_at_ms), (depth, oldest), "after step {} {:?}", i, step);
        }
    }
}

/// The property above is not vacuous: a plain history leaves entries pointing at their rows,
/// and the form changes what is stored.
#[test]
fn the_two_sides_store_entries_differently() {
    let (pointers, copies) = (db(false), db(true));
    let (mut p_txn, mut c_txn) = (MapTxn::default(), MapTxn::default());
    for step in [
        Step::Put(0, 1),
        Step::Put(1, 2),
        Step::Send(0),
        Step::Patch(1, 3),
    ] {
        run(&pointers, &mut p_txn, &step, true).unwrap_or_else(|e| panic!("{e}"));
        run(&copies, &mut c_txn, &step, false).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(pointing(&p_txn), 2);
    assert_eq!(pointing(&c_txn), 0);
    assert_eq!(state(&pointers, &p_txn), state(&copies, &c_txn));
}
