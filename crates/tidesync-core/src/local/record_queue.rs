//! A record's queue (layout v4): which outbox entries are queued for one record, read from the
//! header of its record row, or of its `d/<table>` row once it is deleted locally (see
//! `record_row` for the form and why a header may list entries that left).
//!
//! The rule this file keeps: every entry queued for a record is listed in the header of the
//! row that holds the record's header. The transaction that queues an entry lists it
//! ([`Outbox::put_record_row`] for a local write, [`Outbox::list_in_queue`] otherwise), every
//! write of a record row carries the live part of the header along, and a remap moves it with
//! the entries. Readers keep only the listed numbers that still have an entry.

use crate::error::Result;
use crate::record::Key;
use crate::store::{ReadTxn, WriteTxn};

use super::layout::{self, seq_bytes};
use super::outbox_ops::Outbox;
use super::record_row;

/// A record's queued entries as stored (sequence number, bytes), oldest first, and where its
/// header was: read once by a write of the record for both the row write and the enqueue.
#[derive(Debug, Default)]
pub(super) struct RecordQueue {
    pub(super) rows: Vec<(u64, Vec<u8>)>,
    /// The header was read from the record's `d/` row (it has no record row).
    in_deleted_row: bool,
}

impl RecordQueue {
    /// Whether the record has no queued entry.
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The sequence numbers of the queued entries, oldest first.
    pub(super) fn seqs(&self) -> Vec<u64> {
        self.rows.iter().map(|(seq, _)| *seq).collect()
    }

    /// An entry was queued behind the others.
    pub(super) fn push(&mut self, seq: u64, stored: Vec<u8>) {
        self.rows.push((seq, stored));
    }

    /// An entry left the queue.
    pub(super) fn remove(&mut self, seq: u64) {
        self.rows.retain(|(s, _)| *s != seq);
    }
}

/// The numbers a record's header lists, and whether they came from its `d/` row.
struct Listed {
    seqs: Vec<u64>,
    in_deleted_row: bool,
}

impl Outbox<'_> {
    /// The numbers listed for `table`'s record stored under `key_bytes`: its record row's
    /// header, or its `d/` row's when it has no record row.
    fn listed(&self, txn: &dyn ReadTxn, table: &str, key_bytes: &[u8]) -> Result<Listed> {
        let row = txn.get(&layout::records(table), key_bytes)?;
        self.listed_with_row(txn, table, key_bytes, row.as_deref())
    }

    /// [`Outbox::listed`] with the record row already read (`None`: there is none).
    fn listed_with_row(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key_bytes: &[u8],
        record_row: Option<&[u8]>,
    ) -> Result<Listed> {
        if let Some(row) = record_row {
            return Ok(Listed {
                seqs: record_row::seqs(row)?,
                in_deleted_row: false,
            });
        }
        Ok(match txn.get(&layout::deleted(table), key_bytes)? {
            Some(row) => Listed {
                seqs: record_row::seqs(&row)?,
                in_deleted_row: true,
            },
            None => Listed {
                seqs: Vec::new(),
                in_deleted_row: false,
            },
        })
    }

    /// The stored entries of `table`'s record `key`, oldest first, not decoded.
    pub(super) fn record_queue(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
    ) -> Result<RecordQueue> {
        let listed = self.listed(txn, table, &key.encode())?;
        let mut rows = Vec::with_capacity(listed.seqs.len());
        for seq in listed.seqs {
            if let Some(stored) = txn.get(layout::OUTBOX, &seq_bytes(seq))? {
                rows.push((seq, stored));
            }
        }
        Ok(RecordQueue {
            rows,
            in_deleted_row: listed.in_deleted_row,
        })
    }

    /// The sequence numbers of the entries queued for `table`'s record `key`, oldest first.
    pub(super) fn queued_seqs(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
    ) -> Result<Vec<u64>> {
        let listed = self.listed(txn, table, &key.encode())?;
        let mut live = Vec::with_capacity(listed.seqs.len());
        for seq in listed.seqs {
            if txn.get(layout::OUTBOX, &seq_bytes(seq))?.is_some() {
                live.push(seq);
            }
        }
        Ok(live)
    }

    /// Whether `seq` is the first entry queued for `table`'s record `key` (only a head is
    /// ever sent). Reads the record's header and, for each number listed before `seq`, whether
    /// its entry is still there (usually none is listed before it).
    #[cfg(test)]
    pub(super) fn is_first_queued(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
        seq: u64,
    ) -> Result<bool> {
        let key_bytes = key.encode();
        let row = txn.get(&layout::records(table), &key_bytes)?;
        self.is_first_queued_with_row(txn, table, &key_bytes, row.as_deref(), seq)
    }

    /// [`Outbox::is_first_queued`] with the record row already read (`None`: there is none).
    pub(super) fn is_first_queued_with_row(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key_bytes: &[u8],
        record_row: Option<&[u8]>,
        seq: u64,
    ) -> Result<bool> {
        let listed = self.listed_with_row(txn, table, key_bytes, record_row)?;
        let mut found = false;
        for listed_seq in listed.seqs {
            if listed_seq == seq {
                found = true;
            } else if listed_seq < seq && txn.get(layout::OUTBOX, &seq_bytes(listed_seq))?.is_some()
            {
                return Ok(false);
            }
        }
        Ok(found)
    }

    /// Writes `table`'s record row under `key_bytes` as `json` (`None`: the record is deleted),
    /// with the header listing `queue`. A deleted record whose queue is not empty keeps the
    /// header in its `d/` row; a record row written again takes the header back from there.
    pub(super) fn put_record_row(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key_bytes: &[u8],
        json: Option<&[u8]>,
        queue: &RecordQueue,
    ) -> Result<()> {
        let seqs = queue.seqs();
        match json {
            Some(json) => {
                if seqs.is_empty() {
                    txn.put(&layout::records(table), key_bytes, json)?;
                } else {
                    txn.put(
                        &layout::records(table),
                        key_bytes,
                        &record_row::encode(&seqs, json),
                    )?;
                }
                if queue.in_deleted_row {
                    txn.discard(&layout::deleted(table), key_bytes)?;
                }
            }
            None => {
                txn.discard(&layout::records(table), key_bytes)?;
                if !seqs.is_empty() {
                    txn.put(
                        &layout::deleted(table),
                        key_bytes,
                        &record_row::encode(&seqs, b""),
                    )?;
                } else if queue.in_deleted_row {
                    txn.discard(&layout::deleted(table), key_bytes)?;
                }
            }
        }
        Ok(())
    }

    /// Lists entry `seq` in the header of `table`'s record `key` (queued by a transaction that
    /// does not write the record row itself). The numbers listed before stay listed only if
    /// their entries are still there.
    pub(super) fn list_in_queue(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        seq: u64,
    ) -> Result<()> {
        let mut seqs = self.queued_seqs(&*txn, table, key)?;
        if !seqs.contains(&seq) {
            seqs.push(seq);
            seqs.sort_unstable();
        }
        self.set_listed(txn, table, key, &seqs)
    }

    /// Makes the header of `table`'s record `key` list exactly `seqs`: in its record row (its
    /// JSON kept as it is) or, when it has none, in its `d/` row (removed when `seqs` is
    /// empty).
    pub(super) fn set_listed(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        seqs: &[u64],
    ) -> Result<()> {
        let key_bytes = key.encode();
        let records = layout::records(table);
        if let Some(row) = txn.get(&records, &key_bytes)? {
            let json = record_row::json(&row)?;
            let rewritten = record_row::encode(seqs, json);
            if rewritten != row {
                txn.put(&records, &key_bytes, &rewritten)?;
            }
            return Ok(());
        }
        let deleted = layout::deleted(table);
        let existing = txn.get(&deleted, &key_bytes)?;
        match (seqs.is_empty(), existing) {
            (true, Some(_)) => txn.discard(&deleted, &key_bytes),
            (true, None) => Ok(()),
            (false, _) => txn.put(&deleted, &key_bytes, &record_row::encode(seqs, b"")),
        }
    }

    /// After an entry of `table`'s record `key` left the queue: a record deleted locally keeps
    /// its `d/` row only while entries of it are still queued (a record row keeps its header
    /// as it is, see `record_row`). Reads the `d/` row first: most records have none, and the
    /// keyspace is usually empty.
    pub(super) fn forget_deleted_queue(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
    ) -> Result<()> {
        let key_bytes = key.encode();
        let deleted = layout::deleted(table);
        let Some(row) = txn.get(&deleted, &key_bytes)? else {
            return Ok(());
        };
        // A stale `d/` row beside a record row is not read (the record row's header counts).
        if txn.get(&layout::records(table), &key_bytes)?.is_some() {
            return Ok(());
        }
        for seq in record_row::seqs(&row)? {
            if txn.get(layout::OUTBOX, &seq_bytes(seq))?.is_some() {
                return Ok(());
            }
        }
        txn.discard(&deleted, &key_bytes)
    }

    /// Calls `f` with each of `table`'s entries (dead letters included) in enqueue order,
    /// sequence number and stored bytes (memory stays flat however long the queue); `f`
    /// returns `false` to stop.
    pub(super) fn for_each_table_entry(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        f: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.for_each_table_entry_after(txn, table, None, f)
    }

    /// [`Outbox::for_each_table_entry`] from the entry after sequence number `after` on.
    pub(super) fn for_each_table_entry_after(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        after: Option<u64>,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.db.schema.table(table)?;
        self.for_each_outbox_row_after(txn, after, |key, stored| {
            if !super::entry_codec::entry_is_of_table(stored, table)? {
                return Ok(true);
            }
            f(layout::seq_from_suffix(key)?, stored)
        })
    }

    /// Calls `f` with each outbox row (key, stored entry) in sequence order, reading a page
    /// at a time; `f` returns `false` to stop.
    pub(super) fn for_each_outbox_row(
        &self,
        txn: &dyn ReadTxn,
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.for_each_outbox_row_after(txn, None, f)
    }

    /// [`Outbox::for_each_outbox_row`] from the row after sequence number `after` on.
    fn for_each_outbox_row_after(
        &self,
        txn: &dyn ReadTxn,
        after: Option<u64>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        const PAGE: usize = 1024;
        let mut after: Option<Vec<u8>> = after.map(|seq| seq_bytes(seq).to_vec());
        loop {
            let rows = txn.range(
                layout::OUTBOX,
                match &after {
                    Some(last) => std::ops::Bound::Excluded(last.as_slice()),
                    None => std::ops::Bound::Unbounded,
                },
                std::ops::Bound::Unbounded,
                Some(PAGE),
                false,
            )?;
            for (key, stored) in &rows {
                if !f(key, stored)? {
                    return Ok(());
                }
            }
            if rows.len() < PAGE {
                return Ok(());
            }
            after = rows.into_iter().last().map(|(key, _)| key);
        }
    }

    /// Whether `table` has any queued entry (dead letters included). Looks at the outbox's
    /// first entries only: past `limit` entries of other tables it answers `true`, which only
    /// costs a caller its fast path.
    pub(super) fn table_may_have_entries(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        limit: usize,
    ) -> Result<bool> {
        let (mut found, mut looked) = (false, 0usize);
        self.for_each_outbox_row(txn, |_, stored| {
            looked += 1;
            found = looked > limit || super::entry_codec::entry_is_of_table(stored, table)?;
            Ok(!found)
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::json;

    use crate::hlc::HybridClock;
    use crate::local::test_txn::MapTxn;
    use crate::local::{LocalDb, Schema, WriteOp, layout, record_row};
    use crate::record::Key;
    use crate::store::ReadTxn;

    fn db() -> LocalDb {
        let schema =
            Schema::new([crate::TableSpec::new("posts")]).unwrap_or_else(|e| panic!("{e}"));
        LocalDb::new(schema, Arc::new(HybridClock::new()))
    }

    fn write(db: &LocalDb, txn: &mut MapTxn, op: WriteOp) -> Option<u64> {
        db.records()
            .apply_local_tracked(txn, &[op])
            .unwrap_or_else(|e| panic!("{e}"))
            .seqs[0]
    }

    fn put(id: &str, title: &str) -> WriteOp {
        WriteOp::Put {
            table: "posts".into(),
            record: json!({"id": id, "title": title}),
        }
    }

    fn delete(id: &str) -> WriteOp {
        WriteOp::Delete {
            table: "posts".into(),
            key: Key::from(id.to_owned()),
        }
    }

    fn row(txn: &MapTxn, keyspace: &str, id: &str) -> Option<Vec<u8>> {
        txn.get(keyspace, &Key::from(id.to_owned()).encode())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn listed(txn: &MapTxn, keyspace: &str, id: &str) -> Option<Vec<u64>> {
        row(txn, keyspace, id).map(|row| record_row::seqs(&row).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The `(keyspace, key)` pairs whose value differs between two states.
    fn changed_rows(before: &MapTxn, after: &MapTxn) -> BTreeSet<String> {
        let keys: BTreeSet<_> = before.0.keys().chain(after.0.keys()).collect();
        keys.into_iter()
            .filter(|k| before.0.get(*k) != after.0.get(*k))
            .map(|(keyspace, _)| keyspace.clone())
            .collect()
    }

    #[test]
    fn a_local_write_changes_its_record_row_and_its_entry_only() {
        let db = db();
        let mut txn = MapTxn::default();
        let before = txn.clone();
        let seq = write(&db, &mut txn, put("a", "one")).expect("queued");
        let rows: Vec<_> = txn
            .0
            .keys()
            .filter(|(ks, _)| !ks.starts_with('m'))
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            changed_rows(&before, &txn),
            BTreeSet::from(["o/entries".to_owned(), "r/posts".to_owned()])
        );
        assert_eq!(listed(&txn, "r/posts", "a"), Some(vec![seq]));
        // An edit folded into the queued entry changes the same two rows.
        let before = txn.clone();
        assert_eq!(write(&db, &mut txn, put("a", "two")), Some(seq));
        assert_eq!(
            changed_rows(&before, &txn),
            BTreeSet::from(["o/entries".to_owned(), "r/posts".to_owned()])
        );
        let got = db.records().get(&txn, "posts", &Key::from("a".to_owned()));
        assert_eq!(
            got.unwrap_or_else(|e| panic!("{e}")),
            json!({"id": "a", "title": "two"}).as_object().cloned()
        );
    }

    #[test]
    fn an_acknowledgement_leaves_the_record_row_alone_and_the_next_write_drops_its_number() {
        let db = db();
        let mut txn = MapTxn::default();
        let first = write(&db, &mut txn, put("a", "one")).expect("queued");
        db.outbox()
            .mark_in_flight(&mut txn, first)
            .unwrap_or_else(|e| panic!("{e}"));
        let row_before = row(&txn, "r/posts", "a");
        db.outbox()
            .remove(&mut txn, first)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            row(&txn, "r/posts", "a"),
            row_before,
            "the ack did not touch the row"
        );
        let key = Key::from("a".to_owned());
        assert!(
            db.outbox()
                .pending(&txn, "posts", &key)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        let second = write(&db, &mut txn, put("a", "two")).expect("queued");
        assert_ne!(second, first);
        assert_eq!(listed(&txn, "r/posts", "a"), Some(vec![second]));
        assert!(
            db.outbox()
                .is_first_queued(&txn, "posts", &key, second)
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn a_record_deleted_locally_keeps_its_queue_in_a_deleted_row_until_its_last_entry_leaves() {
        let db = db();
        let mut txn = MapTxn::default();
        let key = Key::from("a".to_owned());
        let create = write(&db, &mut txn, put("a", "one")).expect("queued");
        db.outbox()
            .mark_in_flight(&mut txn, create)
            .unwrap_or_else(|e| panic!("{e}"));
        let delete = write(&db, &mut txn, delete("a")).expect("a delete behind the sent create");
        assert_eq!(row(&txn, "r/posts", "a"), None);
        assert_eq!(listed(&txn, "d/posts", "a"), Some(vec![create, delete]));
        let pending: Vec<u64> = db
            .outbox()
            .pending(&txn, "posts", &key)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(pending, vec![create, delete]);
        assert!(
            db.outbox()
                .is_first_queued(&txn, "posts", &key, create)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            !db.outbox()
                .is_first_queued(&txn, "posts", &key, delete)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        db.outbox()
            .remove(&mut txn, create)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            row(&txn, "d/posts", "a").is_some(),
            "the delete is still queued"
        );
        assert!(
            db.outbox()
                .is_first_queued(&txn, "posts", &key, delete)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        db.outbox()
            .remove(&mut txn, delete)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row(&txn, "d/posts", "a"), None, "gone with the last entry");
        assert!(txn.0.keys().all(|(ks, _)| ks != &layout::deleted("posts")));
    }

    #[test]
    fn a_record_written_again_after_a_local_delete_takes_its_queue_back() {
        let db = db();
        let mut txn = MapTxn::default();
        let create = write(&db, &mut txn, put("a", "one")).expect("queued");
        db.outbox()
            .mark_in_flight(&mut txn, create)
            .unwrap_or_else(|e| panic!("{e}"));
        let delete = write(&db, &mut txn, delete("a")).expect("queued");
        let again = write(&db, &mut txn, put("a", "two")).expect("queued");
        assert_eq!(row(&txn, "d/posts", "a"), None);
        let listed_now = listed(&txn, "r/posts", "a").expect("a record row");
        // The delete and the create again fold or follow; every queued entry is listed.
        let key = Key::from("a".to_owned());
        let pending: Vec<u64> = db
            .outbox()
            .pending(&txn, "posts", &key)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(listed_now, pending);
        assert_eq!(pending.first(), Some(&create));
        assert!(
            pending.contains(&again) || pending.contains(&delete),
            "{pending:?}"
        );
    }

    #[test]
    fn a_table_s_entries_are_told_apart_in_the_outbox() {
        let schema = Schema::new([
            crate::TableSpec::new("posts"),
            crate::TableSpec::new("post"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        let mut txn = MapTxn::default();
        for (table, id) in [("post", "x"), ("posts", "a"), ("post", "y")] {
            let op = WriteOp::Put {
                table: table.into(),
                record: json!({"id": id}),
            };
            write(&db, &mut txn, op);
        }
        let outbox = db.outbox();
        assert_eq!(
            outbox.table_seqs(&txn, "posts").unwrap_or_default(),
            vec![2]
        );
        assert_eq!(
            outbox.table_seqs(&txn, "post").unwrap_or_default(),
            vec![1, 3]
        );
        assert!(
            outbox
                .table_may_have_entries(&txn, "posts", 10)
                .unwrap_or(false)
        );
        // Past its limit of other tables' entries it says "maybe".
        let mut only_post = MapTxn::default();
        write(
            &db,
            &mut only_post,
            WriteOp::Put {
                table: "post".into(),
                record: json!({"id": "x"}),
            },
        );
        write(
            &db,
            &mut only_post,
            WriteOp::Put {
                table: "post".into(),
                record: json!({"id": "y"}),
            },
        );
        assert!(
            !outbox
                .table_may_have_entries(&only_post, "posts", 10)
                .unwrap_or(true)
        );
        assert!(
            outbox
                .table_may_have_entries(&only_post, "posts", 1)
                .unwrap_or(false)
        );
        assert!(
            !outbox
                .table_may_have_entries(&MapTxn::default(), "posts", 1)
                .unwrap_or(true)
        );
    }
}
