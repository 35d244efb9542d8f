//! Settlements: the durable trace of outbox entries that left the outbox, so that a write's
//! receipt can be answered after a restart (see `tidesync::Receipt`).
//!
//! An entry leaves the outbox in one of a few ways, each recorded here in the transaction that
//! removes it: the server acknowledged it (or a pulled version showed it), a conflict's
//! resolution settled it, a later local write cancelled it before it was sent (a create then a
//! delete), or the application discarded it as a dead letter. A dead letter still in the
//! outbox needs no row: the entry itself says why it was refused.
//!
//! The trace is bounded: the most recent [`SETTLED_KEEP`] settlements are kept (in the order
//! they happened, not by sequence number, so an entry that waited long is not forgotten the
//! moment it settles); each new settlement prunes at most a few of the oldest. A row is about
//! 100 bytes, so the trace stays under about 7 MB.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::outbox::{DeadLetterInfo, OutboxEntry};
use crate::record::Key;
use crate::store::{ReadTxn, WriteTxn};

use super::layout::{self, seq_bytes};
use super::outbox_ops::Outbox;
use super::{now_ms, read_u64};

/// How many settlements are kept (the most recent ones).
pub const SETTLED_KEEP: u64 = 65_536;

/// Most old settlements pruned by one new one (keeps the bound after the limit is lowered,
/// without making any one transaction long).
const PRUNE_STEP: usize = 4;

/// How an outbox entry left the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Settlement {
    /// The server acknowledged it (or a pulled version already showed what it wrote).
    Acked,
    /// A conflict's resolution settled it. With `keep_local` or `merged` (or a local write
    /// made while the strategy decided) the outcome goes out as a new entry, `follow_up`.
    Conflict {
        /// The resolution: `take_remote`, `keep_local` or `merged`.
        resolution: String,
        /// The sequence number of the entry that pushes the outcome, if any.
        follow_up: Option<u64>,
    },
    /// A later local write cancelled it before it was ever sent (a create, then a delete):
    /// the server never needed it.
    Superseded,
    /// The application discarded it as a dead letter: it never reached the server.
    Discarded {
        /// Why it had been dead-lettered.
        reason: DeadLetterInfo,
    },
}

/// A settlement as stored: what happened, to which record, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledEntry {
    /// The entry's sequence number.
    pub seq: u64,
    /// The table.
    pub table: String,
    /// The record key (before a server-assigned remap).
    pub key: Key,
    /// What happened.
    pub settlement: Settlement,
    /// When (wall-clock ms).
    pub at_ms: u64,
    /// Its place in the order of settlements (what the bound prunes by).
    #[serde(default)]
    pub ordinal: u64,
}

/// Where one write's outbox entry stands, read from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeState {
    /// Still in the outbox, waiting to be pushed (or in flight, or held back).
    Pending(Box<OutboxEntry>),
    /// In the outbox as a dead letter: the server refused it.
    Refused(Box<OutboxEntry>),
    /// Left the outbox, as recorded.
    Settled(Box<SettledEntry>),
    /// No trace: the number was never issued by this store (`issued == false`), or the
    /// entry settled longer ago than the kept trace reaches.
    Unknown {
        /// Whether this store ever issued the number.
        issued: bool,
    },
}

impl Outbox<'_> {
    /// Records how `entry` left the outbox (in the transaction that removed it), pruning the
    /// oldest settlements beyond [`SETTLED_KEEP`].
    pub(super) fn record_settlement(
        &self,
        txn: &mut dyn WriteTxn,
        entry: &OutboxEntry,
        settlement: Settlement,
    ) -> Result<()> {
        record_within(txn, entry, settlement, SETTLED_KEEP)
    }

    /// How entry `seq` left the outbox, if that is still recorded.
    pub fn settlement(&self, txn: &dyn ReadTxn, seq: u64) -> Result<Option<SettledEntry>> {
        txn.get(layout::SETTLED, &seq_bytes(seq))?
            .map(|bytes| decode_settled(&bytes))
            .transpose()
    }

    /// Where the write that queued (or folded into) entry `seq` stands: pending, refused (a
    /// dead letter), settled (and how), or unknown.
    pub fn change_state(&self, txn: &dyn ReadTxn, seq: u64) -> Result<ChangeState> {
        if let Some(entry) = self.entry(txn, seq)? {
            return Ok(if entry.dead.is_some() {
                ChangeState::Refused(Box::new(entry))
            } else {
                ChangeState::Pending(Box::new(entry))
            });
        }
        if let Some(row) = self.settlement(txn, seq)? {
            return Ok(ChangeState::Settled(Box::new(row)));
        }
        let next = match txn.get(layout::META, layout::META_NEXT_SEQ)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        Ok(ChangeState::Unknown {
            issued: seq >= 1 && seq < next,
        })
    }
}

/// Records a settlement, keeping the most recent `keep` ones.
fn record_within(
    txn: &mut dyn WriteTxn,
    entry: &OutboxEntry,
    settlement: Settlement,
    keep: u64,
) -> Result<()> {
    let ordinal = match txn.get(layout::META, layout::META_SETTLED_ORDINAL)? {
        Some(bytes) => read_u64(&bytes)?,
        None => 0,
    };
    let row = SettledEntry {
        seq: entry.seq,
        table: entry.table.clone(),
        key: entry.key.clone(),
        settlement,
        at_ms: now_ms(),
        ordinal,
    };
    let bytes = serde_json::to_vec(&row).map_err(|e| {
        Error::internal(format!(
            "cannot encode settlement of entry #{}: {e}",
            row.seq
        ))
        .table(row.table.clone())
        .key(&row.key)
    })?;
    txn.put(
        layout::META,
        layout::META_SETTLED_ORDINAL,
        &(ordinal + 1).to_be_bytes(),
    )?;
    txn.put(layout::SETTLED, &seq_bytes(entry.seq), &bytes)?;
    txn.put(
        layout::SETTLED_ORDER,
        &seq_bytes(ordinal),
        &seq_bytes(entry.seq),
    )?;
    let Some(oldest_kept) = (ordinal + 1).checked_sub(keep) else {
        return Ok(());
    };
    let end = seq_bytes(oldest_kept);
    let old = txn.range(
        layout::SETTLED_ORDER,
        Bound::Unbounded,
        Bound::Excluded(end.as_slice()),
        Some(PRUNE_STEP),
        false,
    )?;
    for (order_key, seq) in old {
        txn.discard(layout::SETTLED_ORDER, &order_key)?;
        let pruned = layout::seq_from_suffix(&order_key)?;
        // An entry that settled twice (a dead letter put back, then acknowledged) keeps the
        // row of its latest settlement until that one's turn comes.
        let latest = txn
            .get(layout::SETTLED, &seq)?
            .map(|bytes| decode_settled(&bytes))
            .transpose()?
            .is_some_and(|row| row.ordinal != pruned);
        if !latest {
            txn.discard(layout::SETTLED, &seq)?;
        }
    }
    Ok(())
}

fn decode_settled(bytes: &[u8]) -> Result<SettledEntry> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("corrupt settlement in store: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::HybridClock;
    use crate::local::test_txn::MapTxn;
    use crate::local::{LocalDb, Schema, WriteOp};
    use crate::spec::TableSpec;
    use serde_json::json;
    use std::sync::Arc;

    fn db() -> LocalDb {
        LocalDb::new(
            Schema::new([TableSpec::new("posts")]).unwrap(),
            Arc::new(HybridClock::new()),
        )
    }

    fn put(db: &LocalDb, txn: &mut MapTxn, id: &str, title: &str) -> Option<u64> {
        let written = db
            .records()
            .apply_local_tracked(
                txn,
                &[WriteOp::Put {
                    table: "posts".into(),
                    record: json!({"id": id, "title": title}),
                }],
            )
            .unwrap();
        written.seqs[0]
    }

    #[test]
    fn a_write_is_pending_then_settled_and_unknown_numbers_say_whether_they_were_issued() {
        let db = db();
        let mut txn = MapTxn::default();
        let seq = put(&db, &mut txn, "p1", "a").unwrap();
        // A second write folds into the unsent entry: same number.
        assert_eq!(put(&db, &mut txn, "p1", "b"), Some(seq));
        assert!(matches!(
            db.outbox().change_state(&txn, seq).unwrap(),
            ChangeState::Pending(_)
        ));
        db.outbox()
            .remove_as(&mut txn, seq, Settlement::Acked)
            .unwrap();
        match db.outbox().change_state(&txn, seq).unwrap() {
            ChangeState::Settled(row) => {
                assert_eq!(row.settlement, Settlement::Acked);
                assert_eq!(row.key, Key::from("p1"));
            }
            other => panic!("expected settled, got {other:?}"),
        }
        assert_eq!(
            db.outbox().change_state(&txn, seq + 1).unwrap(),
            ChangeState::Unknown { issued: false }
        );
    }

    #[test]
    fn a_create_cancelled_by_a_delete_is_superseded_and_the_delete_queues_nothing() {
        let db = db();
        let mut txn = MapTxn::default();
        let seq = put(&db, &mut txn, "p1", "a").unwrap();
        let deleted = db
            .records()
            .apply_local_tracked(
                &mut txn,
                &[WriteOp::Delete {
                    table: "posts".into(),
                    key: Key::from("p1"),
                }],
            )
            .unwrap();
        assert_eq!(deleted.seqs, vec![None]);
        assert_eq!(deleted.changes.len(), 1);
        match db.outbox().change_state(&txn, seq).unwrap() {
            ChangeState::Settled(row) => assert_eq!(row.settlement, Settlement::Superseded),
            other => panic!("expected superseded, got {other:?}"),
        }
    }

    #[test]
    fn the_trace_keeps_the_most_recent_settlements_only() {
        let db = db();
        let mut txn = MapTxn::default();
        let mut seqs = Vec::new();
        for i in 0..6 {
            let seq = put(&db, &mut txn, &format!("p{i}"), "a").unwrap();
            let entry = db.outbox().remove_raw(&mut txn, seq).unwrap();
            record_within(&mut txn, &entry, Settlement::Acked, 3).unwrap();
            seqs.push(seq);
        }
        let kept: Vec<bool> = seqs
            .iter()
            .map(|s| db.outbox().settlement(&txn, *s).unwrap().is_some())
            .collect();
        assert_eq!(kept, vec![false, false, false, true, true, true]);
        assert_eq!(txn.len(layout::SETTLED_ORDER).unwrap(), 3);
        assert_eq!(
            db.outbox().change_state(&txn, seqs[0]).unwrap(),
            ChangeState::Unknown { issued: true }
        );
    }
}
