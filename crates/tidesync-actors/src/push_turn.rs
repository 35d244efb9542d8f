//! One turn of the push loop, as one store transaction: settle the entries the server answered
//! since the last turn (acknowledge, retry later, dead-letter, release), then find the next
//! ready heads after the scan cursor, group them into requests and mark them in flight.
//!
//! Doing all of it in one transaction is what makes pushing fast on a durable store: a turn
//! costs one commit (one fsync) however many entries it settles and marks, and the pusher keeps
//! sending requests it prepared earlier while the turn commits.

use std::collections::HashSet;

use tidesync_core::local::{Acked, LocalDb, Staged};
use tidesync_core::outbox::DeadLetterInfo;
use tidesync_core::{Error, ErrorKind, Key, OutboxEntry, PushOutcome, PushRequest, WriteTxn};

/// What to record for one entry the pusher handed out.
#[derive(Debug)]
pub(crate) enum Settle {
    /// The server took it: drop the entry, store the base, merge server-owned fields.
    Ack {
        entry: OutboxEntry,
        outcome: PushOutcome,
    },
    /// Send it again, not before `at_ms`. `charged`: the answer counts toward the entry's
    /// dead-letter budget (see `tidesync_core::push_policy`).
    Retry {
        entry: OutboxEntry,
        at_ms: u64,
        message: String,
        charged: bool,
    },
    /// It can never succeed as it is: to the dead-letter queue, keeping its place.
    DeadLetter {
        entry: OutboxEntry,
        info: DeadLetterInfo,
    },
    /// Marked in flight but never sent (pushing stopped): back in the queue, still sealed.
    Release { entry: OutboxEntry },
}

/// What a [`Settle`] became once committed.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Its changes were moved to the turn's (the writer announces them), so `changes` is empty.
    Acked(Acked),
    /// The server took it, but its answer could not be applied here (e.g. a key the table
    /// cannot hold). Nothing of that ack was written; the entry is still in flight.
    AckFailed(OutboxEntry, Error),
    Retried(OutboxEntry),
    DeadLettered(OutboxEntry, DeadLetterInfo),
    Released(OutboxEntry),
}

/// Everything one turn needs; moved into the store writer.
pub(crate) struct TurnPlan {
    /// The cycle's leadership epoch, sent with each request (the writer fences the turn
    /// itself: `Fenced`).
    pub epoch: Option<u64>,
    pub settle: Vec<Settle>,
    /// How many new requests to prepare (0: no scan).
    pub want_requests: usize,
    /// Resume the scan after this sequence number (`None`: from the head of the queue).
    pub scan_after: Option<u64>,
    /// Records held out of this cycle (their push met a conflict).
    pub held_out: HashSet<(String, Key)>,
    pub paused_tables: HashSet<String>,
    /// Tables whose transport has a bulk endpoint.
    pub bulk_tables: HashSet<String>,
    pub batch_size: usize,
    pub now_ms: u64,
}

/// Where the turn's scan stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanEnd {
    /// Where the next scan resumes.
    pub resume_after: Option<u64>,
    /// Nothing ready is left after `resume_after`.
    pub exhausted: bool,
}

/// What a turn did.
pub(crate) struct TurnDone {
    pub settled: Vec<Settled>,
    /// Requests ready to send, each already marked in flight: one entry, or a bulk group of
    /// one table.
    pub requests: Vec<Vec<(OutboxEntry, PushRequest)>>,
    /// `None` when the turn did not scan.
    pub scan: Option<ScanEnd>,
}

/// Runs `plan` inside the writer's transaction. Fails as a whole only on errors that end the
/// cycle (storage, fencing); an ack that cannot be applied fails alone ([`Settled::AckFailed`]).
pub(crate) fn run_turn(
    db: &LocalDb,
    txn: &mut dyn WriteTxn,
    plan: TurnPlan,
) -> tidesync_core::Result<(TurnDone, Vec<tidesync_core::local::Change>)> {
    // The writer checked the cycle's epoch before this runs (`Fenced`).
    let mut changes = Vec::new();
    let mut settled = Vec::with_capacity(plan.settle.len());
    for op in plan.settle {
        match op {
            Settle::Ack { mut entry, outcome } => match acknowledge(db, txn, &mut entry, outcome) {
                Ok(mut acked) => {
                    // Announced by the writer once the turn commits; nobody reads them here.
                    changes.append(&mut acked.changes);
                    settled.push(Settled::Acked(acked));
                }
                Err(err) if ends_cycle(&err) => return Err(err),
                Err(err) => settled.push(Settled::AckFailed(entry, err)),
            },
            Settle::Retry {
                entry,
                at_ms,
                message,
                charged,
            } => {
                if charged {
                    db.outbox()
                        .retry_later_charged(txn, entry.seq, at_ms, &message)?;
                } else {
                    db.outbox().retry_later(txn, entry.seq, at_ms, &message)?;
                }
                settled.push(Settled::Retried(entry));
            }
            Settle::DeadLetter { entry, info } => {
                db.outbox().dead_letter(txn, entry.seq, info.clone())?;
                settled.push(Settled::DeadLettered(entry, info));
            }
            Settle::Release { entry } => {
                db.outbox().release(txn, entry.seq)?;
                settled.push(Settled::Released(entry));
            }
        }
    }

    let mut requests = Vec::new();
    let mut scan = None;
    if plan.want_requests > 0 {
        let per_request = if plan.bulk_tables.is_empty() {
            1
        } else {
            plan.batch_size
        };
        let found = db.outbox().scan_ready(
            &*txn,
            plan.now_ms,
            plan.scan_after,
            plan.want_requests.saturating_mul(per_request),
            &plan.held_out,
            &plan.paused_tables,
        )?;
        let grouped = group_heads(
            found.entries,
            &plan.bulk_tables,
            plan.batch_size,
            plan.want_requests,
        );
        // Heads left out of every group are looked at again by the next scan.
        let resume_after = match grouped.first_left_out {
            Some(seq) => seq.checked_sub(1),
            None => found.last_seq,
        };
        scan = Some(ScanEnd {
            resume_after,
            exhausted: found.exhausted && grouped.first_left_out.is_none(),
        });
        for group in grouped.groups {
            let mut request_group = Vec::with_capacity(group.len());
            for head in group {
                // Read by the scan in this transaction: current, no need to read it again.
                let entry = db.outbox().mark_read_entry_in_flight(txn, head)?;
                let base_version = db.records().base_version(&*txn, &entry.table, &entry.key)?;
                let request = PushRequest {
                    table: entry.table.clone(),
                    key: entry.key.clone(),
                    op: entry.op,
                    record: entry.record.clone(),
                    changed: entry.changed.clone(),
                    idempotency_key: entry.idempotency_key.clone(),
                    base_version,
                    epoch: plan.epoch,
                };
                request_group.push((entry, request));
            }
            requests.push(request_group);
        }
    }
    Ok((
        TurnDone {
            settled,
            requests,
            scan,
        },
        changes,
    ))
}

/// Records one acknowledgement so that an answer that cannot be applied leaves nothing
/// behind: as a part of the turn's transaction that is undone on failure, or, where the store
/// cannot undo a part, staged over it and applied on success. The record the request carried
/// moves from `entry` into the acknowledgement (a failed one is dead-lettered by its
/// sequence number, from the stored entry).
fn acknowledge(
    db: &LocalDb,
    txn: &mut dyn WriteTxn,
    entry: &mut OutboxEntry,
    outcome: PushOutcome,
) -> tidesync_core::Result<Acked> {
    let sent = entry.record.take();
    if txn.begin_part() {
        return match db.remote().ack_push_as_sent(txn, entry.seq, sent, outcome) {
            Ok(acked) => txn.keep_part().map(|()| acked),
            Err(err) => {
                txn.undo_part()?;
                Err(err)
            }
        };
    }
    let mut staged = Staged::new(txn);
    let acked = db
        .remote()
        .ack_push_as_sent(&mut staged, entry.seq, sent, outcome)?;
    staged.apply()?;
    Ok(acked)
}

/// Failures that end a push cycle (as opposed to failures of one entry).
pub(crate) fn ends_cycle(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Storage | ErrorKind::Closed | ErrorKind::Fenced | ErrorKind::Internal
    )
}

/// Heads grouped into requests.
#[derive(Debug, Default)]
pub(crate) struct Grouped {
    pub groups: Vec<Vec<OutboxEntry>>,
    /// The first head that fit in no group (all `slots` were taken).
    pub first_left_out: Option<u64>,
}

/// Forms up to `slots` requests, in queue order: one entry each, or up to `batch_size`
/// entries of one table where that table has a bulk endpoint.
pub(crate) fn group_heads(
    heads: Vec<OutboxEntry>,
    bulk_tables: &HashSet<String>,
    batch_size: usize,
    slots: usize,
) -> Grouped {
    let mut grouped = Grouped::default();
    for entry in heads {
        if bulk_tables.contains(&entry.table)
            && let Some(group) = grouped
                .groups
                .iter_mut()
                .find(|g| g[0].table == entry.table && g.len() < batch_size)
        {
            group.push(entry);
            continue;
        }
        if grouped.groups.len() < slots {
            grouped.groups.push(vec![entry]);
        } else if grouped.first_left_out.is_none() {
            grouped.first_left_out = Some(entry.seq);
        }
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_core::Op;

    fn entry(seq: u64, table: &str) -> OutboxEntry {
        OutboxEntry {
            seq,
            table: table.into(),
            key: Key::from(format!("k{seq}")),
            op: Op::Create,
            record: None,
            changed: Vec::new(),
            idempotency_key: String::new(),
            hlc: 0,
            created_at_ms: 0,
            attempts: 0,
            failures: 0,
            next_attempt_at_ms: 0,
            last_error: None,
            in_flight: false,
            dead: None,
            deleted_remotely: false,
        }
    }

    fn seqs(grouped: &Grouped) -> Vec<Vec<u64>> {
        grouped
            .groups
            .iter()
            .map(|g| g.iter().map(|e| e.seq).collect())
            .collect()
    }

    #[test]
    fn without_bulk_each_head_is_a_request_up_to_the_slots() {
        let heads = (1..=5).map(|s| entry(s, "posts")).collect();
        let grouped = group_heads(heads, &HashSet::new(), 50, 3);
        assert_eq!(seqs(&grouped), vec![vec![1], vec![2], vec![3]]);
        assert_eq!(grouped.first_left_out, Some(4));
    }

    #[test]
    fn bulk_tables_fill_groups_of_batch_size_in_queue_order() {
        let bulk: HashSet<String> = ["posts".to_owned()].into();
        let heads = vec![
            entry(1, "posts"),
            entry(2, "tags"),
            entry(3, "posts"),
            entry(4, "posts"),
            entry(5, "tags"),
            entry(6, "posts"),
        ];
        let grouped = group_heads(heads, &bulk, 2, 3);
        assert_eq!(seqs(&grouped), vec![vec![1, 3], vec![2], vec![4, 6]]);
        assert_eq!(grouped.first_left_out, Some(5));
    }

    /// A turn that settles two answers, one of which cannot be applied (the server sends an
    /// object for an indexed field: the record row write fails after the entry was removed
    /// and its receipt written): that one is reported `AckFailed` and leaves no trace, the
    /// other is acknowledged, in the same commit.
    fn an_answer_that_cannot_be_applied_fails_alone(store: &dyn tidesync_core::Store) {
        use serde_json::json;
        use std::sync::Arc;
        use tidesync_core::local::{ChangeState, Schema, WriteOp};
        use tidesync_core::{HybridClock, Record, TableSpec};

        let schema = Schema::new([TableSpec::new("posts").index("rank")]).unwrap();
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        let mut txn = store.write().unwrap();
        for id in ["good", "bad"] {
            db.records()
                .apply_local(
                    &mut *txn,
                    &[WriteOp::Put {
                        table: "posts".into(),
                        record: json!({"id": id, "rank": 1}),
                    }],
                )
                .unwrap();
        }
        txn.commit().unwrap();
        let plan = |settle: Vec<Settle>, want_requests: usize| TurnPlan {
            epoch: Some(1),
            settle,
            want_requests,
            scan_after: None,
            held_out: HashSet::new(),
            paused_tables: HashSet::new(),
            bulk_tables: HashSet::new(),
            batch_size: 50,
            now_ms: u64::MAX,
        };
        let mut txn = store.write().unwrap();
        let (sent, _) = run_turn(&db, &mut *txn, plan(Vec::new(), 2)).unwrap();
        txn.commit().unwrap();
        assert_eq!(sent.requests.len(), 2);
        let answer = |entry: &OutboxEntry, rank: serde_json::Value| {
            let mut record: Record = entry.record.clone().unwrap();
            record.insert("rank".into(), rank);
            record.insert("version".into(), json!(2));
            Settle::Ack {
                entry: entry.clone(),
                outcome: PushOutcome {
                    record: Some(record),
                    version: Some("2".into()),
                    server_key: None,
                    server_time_ms: None,
                },
            }
        };
        let settle: Vec<Settle> = sent
            .requests
            .iter()
            .map(|group| {
                let entry = &group[0].0;
                match entry.key.to_string().as_str() {
                    "bad" => answer(entry, json!({"not": "indexable"})),
                    _ => answer(entry, json!(2)),
                }
            })
            .collect();
        let mut txn = store.write().unwrap();
        let (done, _) = run_turn(&db, &mut *txn, plan(settle, 0)).unwrap();
        txn.commit().unwrap();
        let read = store.read().unwrap();
        let kinds: Vec<&str> = done
            .settled
            .iter()
            .map(|settled| match settled {
                Settled::Acked(_) => "acked",
                Settled::AckFailed(..) => "failed",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(
            kinds.contains(&"acked") && kinds.contains(&"failed"),
            "{kinds:?}"
        );
        for settled in done.settled {
            match settled {
                Settled::Acked(acked) => {
                    assert_eq!(acked.entry.key, Key::from("good"));
                    let record = db.records().get(&*read, "posts", &acked.entry.key).unwrap();
                    assert_eq!(record.unwrap()["rank"], json!(2));
                    assert!(matches!(
                        db.outbox().change_state(&*read, acked.entry.seq).unwrap(),
                        ChangeState::Settled(_)
                    ));
                }
                Settled::AckFailed(entry, err) => {
                    assert_eq!(entry.key, Key::from("bad"));
                    assert!(err.to_string().contains("rank"), "{err}");
                    // Nothing of the failed acknowledgement was written: the entry is still
                    // queued and in flight, the record and its base as they were.
                    match db.outbox().change_state(&*read, entry.seq).unwrap() {
                        ChangeState::Pending(pending) => assert!(pending.in_flight),
                        other => panic!("expected the entry still pending, got {other:?}"),
                    }
                    let record = db.records().get(&*read, "posts", &entry.key).unwrap();
                    assert_eq!(record.unwrap()["rank"], json!(1));
                    assert_eq!(
                        db.records().base(&*read, "posts", &entry.key).unwrap(),
                        None
                    );
                }
                other => panic!("unexpected settlement {other:?}"),
            }
        }
    }

    #[test]
    fn an_answer_that_cannot_be_applied_fails_alone_on_the_memory_store() {
        an_answer_that_cannot_be_applied_fails_alone(&tidesync_store_memory::MemoryStore::new());
    }

    #[test]
    fn an_answer_that_cannot_be_applied_fails_alone_on_redb() {
        let dir = tempfile::tempdir().unwrap();
        let store = tidesync_store_redb::RedbStore::open(dir.path().join("turn.redb")).unwrap();
        an_answer_that_cannot_be_applied_fails_alone(&store);
    }
}
