//! Hard-delete reconciliation: servers that delete rows for good (no tombstone, no
//! deleted-ids feed) never report a delete in a change feed. Comparing the server's complete
//! key listing with the local table finds them: a local record the server no longer lists is
//! deleted locally exactly like a pulled delete (no outbox entry, the base dropped, a `Pull`
//! change), unless it has a pending local change or a parked conflict, which always win here
//! (its push decides what happens on the server).

use std::collections::HashSet;
use std::ops::Bound;

use super::{Change, RemoteChanges, RemoteMeta, layout};
use crate::error::{Error, Result};
use crate::record::Key;
use crate::store::{ReadTxn, WriteTxn};

/// Local keys read per range scan.
const SCAN_BATCH: usize = 1024;

/// What a reconciliation pass found (and, unless it was a dry run, did).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Local records compared with the server's listing.
    pub checked: usize,
    /// Local records the server no longer has, deleted locally (or, in a dry run, that would
    /// be).
    pub deleted: Vec<Key>,
    /// Local records the server no longer has that were kept: they have a pending local
    /// change or a parked conflict.
    pub kept: Vec<Key>,
    /// The local changes written (empty in a dry run), for subscribers.
    pub changes: Vec<Change>,
}

impl RemoteChanges<'_> {
    /// When `table`'s last completed reconciliation began listing the server (wall-clock
    /// ms); `None` if it never ran (see [`RemoteChanges::set_reconciled_at`]).
    pub fn reconciled_at(&self, txn: &dyn ReadTxn, table: &str) -> Result<Option<u64>> {
        let Some(bytes) = txn.get(layout::META, &layout::meta_reconciled(table))? else {
            return Ok(None);
        };
        let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
            Error::internal("corrupt reconciliation time in the meta keyspace").table(table)
        })?;
        Ok(Some(u64::from_be_bytes(raw)))
    }

    /// Records that a reconciliation of `table` completed, listing from `at_ms` on: written
    /// in the transaction that applies its deletes, so a crash before that leaves the pass
    /// due again (it starts its listing over; nothing was written).
    pub fn set_reconciled_at(&self, txn: &mut dyn WriteTxn, table: &str, at_ms: u64) -> Result<()> {
        self.db.schema.table(table)?;
        txn.put(
            layout::META,
            &layout::meta_reconciled(table),
            &at_ms.to_be_bytes(),
        )
    }

    /// Compares `table`'s local records with `server_keys` (every key the server lists, each
    /// [`Key::encode`]d) and deletes locally, as a pulled delete, every record the server no
    /// longer has and that has neither a pending outbox entry nor a parked conflict. Nothing is
    /// enqueued and the pull checkpoint is left as it is. With `dry_run` nothing is written.
    ///
    /// The listing must be complete and taken after the last pull was applied: a key missing
    /// from it is taken as deleted on the server.
    pub fn reconcile_deletes(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        server_keys: &HashSet<Vec<u8>>,
        dry_run: bool,
    ) -> Result<Reconciled> {
        self.db.schema.table(table)?;
        let keyspace = layout::records(table);
        let mut out = Reconciled::default();
        let mut gone = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = txn.range(
                &keyspace,
                match &after {
                    Some(last) => Bound::Excluded(last.as_slice()),
                    None => Bound::Unbounded,
                },
                Bound::Unbounded,
                Some(SCAN_BATCH),
                false,
            )?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = Some(last.clone());
            for (encoded, _) in &rows {
                out.checked += 1;
                if server_keys.contains(encoded) {
                    continue;
                }
                let (key, _) = Key::decode(encoded).map_err(|e| e.table(table))?;
                if !self.db.outbox().pending(&*txn, table, &key)?.is_empty()
                    || self.db.parked().is_parked(&*txn, table, &key)?
                {
                    out.kept.push(key);
                } else {
                    gone.push(key);
                }
            }
            if rows.len() < SCAN_BATCH {
                break;
            }
        }
        if !dry_run && !gone.is_empty() {
            // Applied like a page of pulled deletes; the checkpoint is written back unchanged.
            let checkpoint = self.checkpoint(&*txn, table)?;
            let applied = self.apply_page(
                txn,
                table,
                std::iter::empty(),
                &gone,
                checkpoint.as_ref(),
                &|_| RemoteMeta::default(),
            )?;
            out.changes = applied.changes;
        }
        out.deleted = gone;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::local::test_txn::MapTxn;
    use crate::local::{LocalDb, Schema, WriteOp};
    use crate::{HybridClock, PullPage, Record, TableSpec};

    fn rec(id: &str) -> Record {
        match json!({ "id": id, "title": id }) {
            serde_json::Value::Object(map) => map,
            _ => Record::new(),
        }
    }

    #[test]
    fn deletes_what_the_server_no_longer_lists_but_never_a_pending_change() -> Result<()> {
        let schema = Schema::new(vec![TableSpec::new("posts")])?;
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        let mut txn = MapTxn::default();
        let page = PullPage {
            records: ["a", "b", "c", "d"].iter().map(|k| rec(k)).collect(),
            cursor: Some(json!({ "at": 5 })),
            ..PullPage::default()
        };
        db.remote()
            .apply_pull_page(&mut txn, "posts", &page, &|_| RemoteMeta::default())?;
        // A local edit of `c` waits to be pushed.
        db.records().apply_local(
            &mut txn,
            &[WriteOp::Update {
                table: "posts".into(),
                key: Key::from("c"),
                patch: json!({ "title": "local" }),
            }],
        )?;
        let listed: HashSet<Vec<u8>> = [Key::from("a")].iter().map(Key::encode).collect();

        let dry = db
            .remote()
            .reconcile_deletes(&mut txn, "posts", &listed, true)?;
        assert_eq!(dry.deleted, vec![Key::from("b"), Key::from("d")]);
        assert!(db.records().get(&txn, "posts", &Key::from("b"))?.is_some());

        let outbox_before = db.outbox().pending(&txn, "posts", &Key::from("c"))?.len();
        let done = db
            .remote()
            .reconcile_deletes(&mut txn, "posts", &listed, false)?;
        assert_eq!(done.checked, 4);
        assert_eq!(done.deleted, vec![Key::from("b"), Key::from("d")]);
        assert_eq!(done.kept, vec![Key::from("c")]);
        assert_eq!(done.changes.len(), 2);
        assert!(db.records().get(&txn, "posts", &Key::from("b"))?.is_none());
        assert!(db.records().get(&txn, "posts", &Key::from("c"))?.is_some());
        assert!(db.records().get(&txn, "posts", &Key::from("a"))?.is_some());
        assert!(
            db.outbox()
                .pending(&txn, "posts", &Key::from("b"))?
                .is_empty()
        );
        assert_eq!(
            db.outbox().pending(&txn, "posts", &Key::from("c"))?.len(),
            outbox_before
        );
        assert_eq!(
            db.remote().checkpoint(&txn, "posts")?,
            Some(json!({ "at": 5 }))
        );

        assert_eq!(db.remote().reconciled_at(&txn, "posts")?, None);
        db.remote().set_reconciled_at(&mut txn, "posts", 1_234)?;
        assert_eq!(db.remote().reconciled_at(&txn, "posts")?, Some(1_234));
        assert!(db.remote().set_reconciled_at(&mut txn, "nope", 1).is_err());
        Ok(())
    }
}
