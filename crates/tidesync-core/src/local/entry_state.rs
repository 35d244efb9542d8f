//! Where each pending outbox entry stands, and why it has not reached the server yet: the
//! store's side of an honest sync outcome (DESIGN invariant 12). The engine adds what only it
//! knows (offline, paused for credentials, a paused table) on top.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::outbox::{Op, OutboxEntry};
use crate::record::Key;
use crate::store::ReadTxn;

use super::layout;
use super::outbox_ops::Outbox;

/// Why a pending entry has not been acknowledged yet, as far as the store can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// It can be sent now.
    Ready,
    /// It was handed to the transport and its answer has not been recorded.
    InFlight,
    /// It waits out a retry delay.
    RetryAt {
        /// Not before this wall-clock millisecond.
        at_ms: u64,
    },
    /// It is in the dead-letter queue (`dead-letters list|retry|edit|discard`).
    DeadLetter,
    /// It waits behind an earlier entry of the same record (per-record order).
    Behind {
        /// The record's head entry.
        seq: u64,
        /// That head is a dead letter: nothing moves until it is retried or discarded.
        head_dead: bool,
    },
    /// It references a record whose create has not reached the server yet.
    WaitingFor {
        /// The referenced table.
        table: String,
        /// The referenced record.
        key: Key,
        /// That create is a dead letter.
        dead: bool,
    },
    /// Its record has a parked conflict for the application to settle.
    Parked,
}

impl EntryState {
    /// A short text for listings: `ready`, `retry at <ms>`, `blocked behind #12 (dead letter)`.
    pub fn describe(&self) -> String {
        match self {
            EntryState::Ready => "ready".into(),
            EntryState::InFlight => "in flight".into(),
            EntryState::RetryAt { at_ms } => format!("retry at {at_ms}"),
            EntryState::DeadLetter => "dead letter".into(),
            EntryState::Behind { seq, head_dead } => {
                let why = if *head_dead { " (dead letter)" } else { "" };
                format!("blocked behind #{seq}{why}")
            }
            EntryState::WaitingFor { table, key, dead } => {
                let why = if *dead {
                    " (its create is a dead letter)"
                } else {
                    ""
                };
                format!("waiting for {table}/{key}{why}")
            }
            EntryState::Parked => "parked conflict".into(),
        }
    }
}

/// What the outbox holds, counted by [`EntryState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxSummary {
    /// Every entry in the outbox, dead letters included.
    pub total: u64,
    /// Entries that can be sent now.
    pub ready: u64,
    /// Entries handed to the transport, answer not recorded.
    pub in_flight: u64,
    /// Entries waiting out a retry delay.
    pub waiting: u64,
    /// The earliest of their retry times (wall-clock ms).
    pub next_retry_at_ms: Option<u64>,
    /// Dead letters.
    pub dead_letters: u64,
    /// Entries queued behind a dead letter of their record.
    pub behind_dead_letter: u64,
    /// Entries queued behind a head that is not a dead letter (it waits for its own reason).
    pub behind_head: u64,
    /// Entries waiting for a referenced record's create.
    pub waiting_for_reference: u64,
    /// Entries of records with a parked conflict.
    pub parked: u64,
    /// `false` when the walk stopped at its limit: the counts cover only the oldest entries
    /// (`total` is still exact).
    pub complete: bool,
}

impl OutboxSummary {
    fn count(&mut self, state: &EntryState) {
        match state {
            EntryState::Ready => self.ready += 1,
            EntryState::InFlight => self.in_flight += 1,
            EntryState::RetryAt { at_ms } => {
                self.waiting += 1;
                let earliest = self.next_retry_at_ms.map_or(*at_ms, |t| t.min(*at_ms));
                self.next_retry_at_ms = Some(earliest);
            }
            EntryState::DeadLetter => self.dead_letters += 1,
            EntryState::Behind {
                head_dead: true, ..
            } => self.behind_dead_letter += 1,
            EntryState::Behind { .. } => self.behind_head += 1,
            EntryState::WaitingFor { .. } => self.waiting_for_reference += 1,
            EntryState::Parked => self.parked += 1,
        }
    }
}

impl Outbox<'_> {
    /// Where `entry` stands at wall-clock `now_ms`.
    pub fn entry_state(
        &self,
        txn: &dyn ReadTxn,
        entry: &OutboxEntry,
        now_ms: u64,
    ) -> Result<EntryState> {
        let head = self.first_of_record(txn, &entry.table, &entry.key)?;
        self.state_given_head(txn, entry, head.as_ref(), now_ms)
    }

    /// Counts the outbox by [`EntryState`], reading at most `limit` entries (oldest first).
    pub fn summary(&self, txn: &dyn ReadTxn, now_ms: u64, limit: usize) -> Result<OutboxSummary> {
        let mut summary = OutboxSummary {
            total: txn.len(layout::OUTBOX)?,
            complete: true,
            ..OutboxSummary::default()
        };
        if summary.total == 0 {
            return Ok(summary);
        }
        // In enqueue order, a record's first entry met is its head.
        let mut heads: HashMap<(String, Key), OutboxEntry> = HashMap::new();
        let mut after: Option<[u8; 8]> = None;
        let mut read = 0usize;
        loop {
            let rows = txn.range(
                layout::OUTBOX,
                match &after {
                    Some(a) => std::ops::Bound::Excluded(a.as_slice()),
                    None => std::ops::Bound::Unbounded,
                },
                std::ops::Bound::Unbounded,
                Some(512),
                false,
            )?;
            let Some((last, _)) = rows.last() else {
                return Ok(summary);
            };
            after = Some(layout::seq_bytes(layout::seq_from_suffix(last)?));
            for (_, bytes) in &rows {
                if read >= limit {
                    summary.complete = false;
                    return Ok(summary);
                }
                read += 1;
                let entry = self.decode(txn, bytes)?;
                let record = (entry.table.clone(), entry.key.clone());
                let state = match heads.get(&record) {
                    Some(head) => self.state_given_head(txn, &entry, Some(head), now_ms)?,
                    None => {
                        let state = self.state_given_head(txn, &entry, Some(&entry), now_ms)?;
                        heads.insert(record, entry.clone());
                        state
                    }
                };
                summary.count(&state);
            }
        }
    }

    fn first_of_record(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
    ) -> Result<Option<OutboxEntry>> {
        match self.queued_seqs(txn, table, key)?.first() {
            Some(seq) => self.entry(txn, *seq),
            None => Ok(None),
        }
    }

    fn state_given_head(
        &self,
        txn: &dyn ReadTxn,
        entry: &OutboxEntry,
        head: Option<&OutboxEntry>,
        now_ms: u64,
    ) -> Result<EntryState> {
        if entry.dead.is_some() {
            return Ok(EntryState::DeadLetter);
        }
        if let Some(head) = head.filter(|h| h.seq != entry.seq) {
            return Ok(EntryState::Behind {
                seq: head.seq,
                head_dead: head.dead.is_some(),
            });
        }
        if entry.in_flight {
            return Ok(EntryState::InFlight);
        }
        if self.db.parked().is_parked(txn, &entry.table, &entry.key)? {
            return Ok(EntryState::Parked);
        }
        if let Some((table, key, dead)) = self.pending_reference(txn, entry)? {
            return Ok(EntryState::WaitingFor { table, key, dead });
        }
        if entry.next_attempt_at_ms > now_ms {
            return Ok(EntryState::RetryAt {
                at_ms: entry.next_attempt_at_ms,
            });
        }
        Ok(EntryState::Ready)
    }

    /// The first record `entry` references whose create is still queued, and whether that
    /// create is a dead letter.
    pub(super) fn pending_reference(
        &self,
        txn: &dyn ReadTxn,
        entry: &OutboxEntry,
    ) -> Result<Option<(String, Key, bool)>> {
        let spec = self.db.schema.table(&entry.table)?;
        let Some(record) = &entry.record else {
            return Ok(None);
        };
        for reference in &spec.references {
            let Some(target) = record.get(&reference.field).and_then(Key::from_json) else {
                continue;
            };
            let pending = self.pending(txn, &reference.table, &target)?;
            if let Some(create) = pending.iter().find(|e| e.op == Op::Create) {
                return Ok(Some((
                    reference.table.clone(),
                    target,
                    create.dead.is_some(),
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::local::test_txn::MapTxn;
    use crate::local::{LocalDb, Schema, WriteOp};
    use crate::outbox::DeadLetterInfo;
    use crate::{HybridClock, TableSpec};

    fn db() -> LocalDb {
        let schema = Schema::new([
            TableSpec::new("posts"),
            TableSpec::new("comments").references("post", "posts"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        LocalDb::new(schema, Arc::new(HybridClock::new()))
    }

    fn put(db: &LocalDb, txn: &mut MapTxn, table: &str, record: serde_json::Value) {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Put {
                    table: table.into(),
                    record,
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn dead() -> DeadLetterInfo {
        DeadLetterInfo {
            kind: "permanent".into(),
            error: "400".into(),
            status: Some(400),
            response_excerpt: None,
            at_ms: 1,
        }
    }

    #[test]
    fn every_reason_is_told_apart_and_counted() {
        let db = db();
        let mut txn = MapTxn::default();
        put(&db, &mut txn, "posts", json!({"id": "p1", "v": 1}));
        put(&db, &mut txn, "comments", json!({"id": "c1", "post": "p1"}));
        put(&db, &mut txn, "posts", json!({"id": "p2", "v": 1}));
        put(&db, &mut txn, "posts", json!({"id": "p3", "v": 1}));
        let all = db
            .outbox()
            .entries(&txn, None, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        let seq = |key: &str| {
            all.iter()
                .find(|e| e.key == Key::from(key.to_owned()))
                .map(|e| e.seq)
                .unwrap_or_else(|| panic!("no entry for {key}"))
        };
        let (p1, c1, p2, p3) = (seq("p1"), seq("c1"), seq("p2"), seq("p3"));

        // p1's create is sent and refused for good; an edit of p1 queues behind it.
        db.outbox()
            .mark_in_flight(&mut txn, p1)
            .unwrap_or_else(|e| panic!("{e}"));
        db.outbox()
            .dead_letter(&mut txn, p1, dead())
            .unwrap_or_else(|e| panic!("{e}"));
        put(&db, &mut txn, "posts", json!({"id": "p1", "v": 2}));
        // p2 waits out a retry delay; p3 is in flight.
        db.outbox()
            .mark_in_flight(&mut txn, p2)
            .unwrap_or_else(|e| panic!("{e}"));
        db.outbox()
            .retry_later_charged(&mut txn, p2, 5_000, "503")
            .unwrap_or_else(|e| panic!("{e}"));
        db.outbox()
            .mark_in_flight(&mut txn, p3)
            .unwrap_or_else(|e| panic!("{e}"));

        let state_of = |seq: u64| {
            let entry = db
                .outbox()
                .entry(&txn, seq)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no entry #{seq}"));
            db.outbox()
                .entry_state(&txn, &entry, 1_000)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(state_of(p1), EntryState::DeadLetter);
        assert_eq!(
            state_of(c1),
            EntryState::WaitingFor {
                table: "posts".into(),
                key: Key::from("p1".to_owned()),
                dead: true
            }
        );
        assert_eq!(state_of(p2), EntryState::RetryAt { at_ms: 5_000 });
        assert_eq!(state_of(p3), EntryState::InFlight);
        let behind = db
            .outbox()
            .pending(&txn, "posts", &Key::from("p1".to_owned()))
            .unwrap_or_else(|e| panic!("{e}"))[1]
            .seq;
        assert_eq!(
            state_of(behind),
            EntryState::Behind {
                seq: p1,
                head_dead: true
            }
        );
        assert_eq!(
            state_of(behind).describe(),
            format!("blocked behind #{p1} (dead letter)")
        );
        assert_eq!(
            db.outbox().entry(&txn, p2).unwrap().map(|e| e.failures),
            Some(1)
        );

        let summary = db
            .outbox()
            .summary(&txn, 1_000, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            summary,
            OutboxSummary {
                total: 5,
                ready: 0,
                in_flight: 1,
                waiting: 1,
                next_retry_at_ms: Some(5_000),
                dead_letters: 1,
                behind_dead_letter: 1,
                behind_head: 0,
                waiting_for_reference: 1,
                parked: 0,
                complete: true,
            }
        );
        // Past the retry time p2 is ready; a limit cuts the walk and says so.
        let later = db
            .outbox()
            .summary(&txn, 6_000, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!later.complete);
        assert_eq!(later.total, 5);
        let later = db
            .outbox()
            .summary(&txn, 6_000, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((later.ready, later.waiting), (1, 0));
    }
}
