//! What a batch of local writes knows without reading ([`LocalBatch`]): which of its keys have
//! nothing stored yet, and the next outbox sequence number once it has queued an entry.
//!
//! A local write reads, before it writes, the record's old row, its base and its queued
//! entries. For a bulk import of new records all three find nothing, and each is a B-tree
//! descent. [`Records::prove_new`](super::Records::prove_new) replaces them with three range
//! reads over the span of the batch's keys: when the span holds no record row, no base and no
//! `d/` row (the queue header of a record deleted locally), no key in it has any. The proof is made in the batch's own transaction, and each
//! key is used once: after its first write the key exists, and a second write of it in the
//! same batch reads as usual.
//!
//! Each new entry also reads the outbox's last sequence number (no other writer can add
//! entries inside this transaction, not even another process in redb's multi-process mode,
//! whose write transactions are serialised). After the batch's first entry, the next number is
//! one more than the last it handed out.

use std::collections::HashSet;
use std::ops::Bound;

use crate::error::Result;
use crate::record::Key;
use crate::store::ReadTxn;

use super::layout;

/// What one batch of local writes, in one transaction, knows without reading: keys of one
/// table with no record row, no base and no queued entry (proved by
/// [`Records::prove_new`](super::Records::prove_new)), and the next sequence number once the
/// batch has queued an entry. Valid only in the transaction it was made in.
#[derive(Debug, Default)]
pub struct LocalBatch {
    table: String,
    keys: HashSet<Vec<u8>>,
    next_seq: Option<u64>,
}

impl LocalBatch {
    /// A batch that knows nothing yet: every write reads what is stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Proves `keys` of `table` new, or knows no key when the span from the smallest to the
    /// largest key holds any record row, base or queued entry of `table`.
    pub(super) fn prove(
        txn: &dyn ReadTxn,
        table: &str,
        keys: impl IntoIterator<Item = Key>,
    ) -> Result<Self> {
        let mut encoded: Vec<Vec<u8>> = keys.into_iter().map(|key| key.encode()).collect();
        encoded.sort_unstable();
        encoded.dedup();
        let (Some(first), Some(last)) = (encoded.first(), encoded.last()) else {
            return Ok(Self::new());
        };
        let span_holds_anything = |keyspace: &str, start: &[u8], end: Bound<&[u8]>| {
            txn.range(keyspace, Bound::Included(start), end, Some(1), false)
                .map(|rows| !rows.is_empty())
        };
        // A key with queued entries has a record row or, deleted locally, a `d/` row that
        // lists them (layout v4): the three spans cover it.
        for keyspace in [
            layout::records(table),
            layout::bases(table),
            layout::deleted(table),
        ] {
            if span_holds_anything(&keyspace, first, Bound::Included(last))? {
                return Ok(Self::new());
            }
        }
        Ok(Self {
            table: table.to_owned(),
            keys: encoded.into_iter().collect(),
            next_seq: None,
        })
    }

    /// Whether `key` of `table` is still known to be new (not written since the proof).
    pub fn contains(&self, table: &str, key: &Key) -> bool {
        self.table == table && !self.keys.is_empty() && self.keys.contains(&key.encode())
    }

    /// Whether the key encoded as `key_bytes` is new, forgetting it: the caller is about to
    /// write it, after which it exists.
    pub(super) fn take(&mut self, table: &str, key_bytes: &[u8]) -> bool {
        self.table == table && self.keys.remove(key_bytes)
    }

    /// How many keys are still known to be new.
    pub fn new_keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether any key is known to be new.
    pub(super) fn knows_new_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The sequence number after the last one this batch handed out, if it handed out any.
    pub(super) fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Remembers that this batch handed out `seq`.
    pub(super) fn issued(&mut self, seq: u64) {
        self.next_seq = Some(seq + 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::hlc::HybridClock;
    use crate::local::test_txn::MapTxn;
    use crate::local::{LocalDb, Schema, WriteOp};
    use crate::record::Key;

    fn db() -> LocalDb {
        let schema = Schema::new([
            crate::TableSpec::new("posts"),
            crate::TableSpec::new("posts2"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        LocalDb::new(schema, Arc::new(HybridClock::new()))
    }

    fn put(db: &LocalDb, txn: &mut MapTxn, table: &str, id: &str) {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Put {
                    table: table.into(),
                    record: json!({"id": id}),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn keys(ids: &[&str]) -> Vec<Key> {
        ids.iter().map(|id| Key::Str((*id).to_owned())).collect()
    }

    /// How many of `ids` of posts the batch proves new.
    fn proved(db: &LocalDb, txn: &MapTxn, ids: &[&str]) -> usize {
        db.records()
            .prove_new(txn, "posts", keys(ids))
            .unwrap_or_else(|e| panic!("{e}"))
            .new_keys()
    }

    #[test]
    fn keys_are_proved_new_only_when_their_span_holds_nothing_of_the_table() {
        let db = db();
        let mut txn = MapTxn::default();
        assert_eq!(
            proved(&db, &txn, &["b", "d", "b"]),
            2,
            "an empty table; duplicates once"
        );
        assert_eq!(proved(&db, &txn, &[]), 0);

        // A record outside the span does not matter; one inside does.
        put(&db, &mut txn, "posts", "a");
        put(&db, &mut txn, "posts", "z");
        assert_eq!(proved(&db, &txn, &["b", "d"]), 2);
        put(&db, &mut txn, "posts", "c");
        assert_eq!(proved(&db, &txn, &["b", "d"]), 0, "c lies between b and d");

        // A record deleted locally after its create was sent has no row, but its delete is
        // queued: not new.
        let c = Key::Str("c".into());
        let create = db
            .outbox()
            .pending(&txn, "posts", &c)
            .unwrap_or_else(|e| panic!("{e}"));
        db.outbox()
            .mark_in_flight(&mut txn, create[0].seq)
            .unwrap_or_else(|e| panic!("{e}"));
        db.records()
            .apply_local(
                &mut txn,
                &[WriteOp::Delete {
                    table: "posts".into(),
                    key: c.clone(),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let get = db
            .records()
            .get(&txn, "posts", &c)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(get.is_none(), "the row is gone");
        let queue = db
            .outbox()
            .pending(&txn, "posts", &c)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            queue.len(),
            2,
            "the create in flight and the delete behind it"
        );
        assert_eq!(
            proved(&db, &txn, &["b", "d"]),
            0,
            "c's queued entry lies in the span"
        );
        assert_eq!(proved(&db, &txn, &["d", "e"]), 2);

        // A neighbouring table whose name extends this one's does not count.
        put(&db, &mut txn, "posts2", "e");
        assert_eq!(proved(&db, &txn, &["d", "f"]), 2);
    }

    #[test]
    fn a_key_proved_new_is_used_once() {
        let db = db();
        let txn = MapTxn::default();
        let mut batch = db
            .records()
            .prove_new(&txn, "posts", keys(&["a"]))
            .unwrap_or_else(|e| panic!("{e}"));
        let a = Key::Str("a".into()).encode();
        assert!(!batch.take("posts2", &a), "another table's key");
        assert!(batch.contains("posts", &Key::Str("a".into())));
        assert!(batch.take("posts", &a));
        assert!(!batch.take("posts", &a), "written once, it exists");
        assert_eq!(batch.new_keys(), 0);
    }

    #[test]
    fn an_unknown_table_is_an_error() {
        let db = db();
        let err = db
            .records()
            .prove_new(&MapTxn::default(), "nope", keys(&["a"]))
            .err()
            .unwrap_or_else(|| panic!("an unknown table was accepted"));
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
