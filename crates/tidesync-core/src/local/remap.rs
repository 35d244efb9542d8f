//! Remapping a record to the key the server assigned: the record, its base, its queued
//! entries and the references to it move to the new key in one transaction.

use crate::error::Result;
use crate::outbox::Op;
use crate::record::{Key, Record};
use crate::store::WriteTxn;

use super::record_write::{overlay_fields, rebase_entry};
use super::{Change, Origin, RemoteChanges, layout};

/// A change made by an id remap.
pub(super) fn remap_change(table: &str, key: &Key, op: Op, record: Option<Record>) -> Change {
    Change {
        table: table.into(),
        key: key.clone(),
        op,
        record,
        origin: Origin::PushAck,
    }
}

impl RemoteChanges<'_> {
    /// Moves a record from `old` to `new` key (server-assigned id): the record, its base, its
    /// pending entries and every declared reference to it in other records and their pending
    /// entries. No outbox entries are created for the rewrite itself.
    pub(super) fn remap_key(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        old: &Key,
        new: &Key,
    ) -> Result<Vec<Change>> {
        let spec = self.db.schema.table(table)?.clone();
        let key_json = new.to_json();
        // References to `old` written from now on are pointed at `new` (`follow_remaps`).
        txn.put(
            layout::REMAPPED,
            &layout::record_prefix(table, old),
            key_json.to_string().as_bytes(),
        )?;
        let copy = self.db.records().get(&*txn, table, new)?;
        let mut changes = match &copy {
            Some(copy) => self.remap_onto_pulled_copy(txn, &spec, old, new, copy)?,
            None => self.move_record(txn, &spec, old, new)?,
        };
        // Edits queued behind the create now edit the pulled copy, if there is one: their
        // records are rebased onto it, so a route that sends whole records does not send the
        // create-time fields over newer ones.
        let mut rebased = copy;
        let mut moved = Vec::new();
        for mut entry in self.db.outbox().pending(&*txn, table, old)? {
            moved.push(entry.seq);
            entry.key = new.clone();
            if let Some(onto) = rebased.as_mut() {
                rebase_entry(onto, &mut entry);
            }
            if let Some(record) = entry.record.as_mut() {
                record.insert(spec.key.clone(), key_json.clone());
            }
            self.db.outbox().rewrite(txn, &entry)?;
        }
        // The queue header moves with the entries (layout v4): `new` lists them after its
        // own, and nothing under `old` lists them any more.
        if !moved.is_empty() {
            let mut listed = self.db.outbox().queued_seqs(&*txn, table, new)?;
            listed.extend(moved);
            listed.sort_unstable();
            listed.dedup();
            self.db.outbox().set_listed(txn, table, new, &listed)?;
            self.db.outbox().set_listed(txn, table, old, &[])?;
        }
        // Declared references from other tables.
        let referencing: Vec<(crate::TableSpec, String)> = self
            .db
            .schema
            .tables()
            .flat_map(|s| {
                s.references
                    .iter()
                    .filter(|r| r.table == table)
                    .map(|r| (s.clone(), r.field.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let old_json = old.to_json();
        for (other, field) in referencing {
            let mut after: Option<Key> = None;
            loop {
                let page = self
                    .db
                    .records()
                    .scan(&*txn, &other.name, after.as_ref(), 512)?;
                let Some(last) = page.last() else { break };
                after = other.key_of(last)?;
                for record in page {
                    if record.get(&field) != Some(&old_json) {
                        continue;
                    }
                    let Some(key) = other.key_of(&record)? else {
                        continue;
                    };
                    let mut updated = record.clone();
                    updated.insert(field.clone(), key_json.clone());
                    self.db.records().write_row(
                        txn,
                        &other,
                        &key,
                        Some(&record),
                        Some(&updated),
                    )?;
                    changes.push(remap_change(&other.name, &key, Op::Update, Some(updated)));
                }
                if after.is_none() {
                    break;
                }
            }
            // Pending entries of that table that carry the old reference, a page at a time
            // (the queue may be long).
            let mut after_seq: Option<u64> = None;
            loop {
                let page = self
                    .db
                    .outbox()
                    .entries_after(&*txn, &other.name, after_seq, 512)?;
                let Some(last) = page.last() else { break };
                after_seq = Some(last.seq);
                for mut entry in page {
                    if let Some(record) = entry.record.as_mut()
                        && record.get(&field) == Some(&old_json)
                    {
                        record.insert(field.clone(), key_json.clone());
                        self.db.outbox().rewrite(txn, &entry)?;
                    }
                }
            }
        }
        Ok(changes)
    }

    /// The record and its base move from `old` to `new` as they are.
    pub(super) fn move_record(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        old: &Key,
        new: &Key,
    ) -> Result<Vec<Change>> {
        let table = spec.name.as_str();
        let key_json = new.to_json();
        let mut changes = Vec::new();
        if let Some(mut record) = self.db.records().get(&*txn, table, old)? {
            let before = record.clone();
            record.insert(spec.key.clone(), key_json.clone());
            self.db
                .records()
                .write_row(txn, spec, old, Some(&before), None)?;
            self.db
                .records()
                .write_row(txn, spec, new, None, Some(&record))?;
            changes.push(remap_change(table, old, Op::Delete, None));
            changes.push(remap_change(table, new, Op::Create, Some(record)));
        }
        if let Some(mut base) = self.db.records().base(&*txn, table, old)? {
            base.record.insert(spec.key.clone(), key_json);
            self.db.records().set_base(txn, table, old, None)?;
            self.db.records().set_base(txn, table, new, Some(&base))?;
        }
        Ok(changes)
    }

    /// A pull already brought the server's copy of the record under `new` (its create
    /// committed but the answer came later). That copy was pulled after the create committed,
    /// so it is at least as new as the create's answer: it stays, with its base and its own
    /// pending edits, and the local edits queued behind the create under `old` are applied to
    /// it (their entries move to `new` afterwards, in `remap_key`).
    pub(super) fn remap_onto_pulled_copy(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        old: &Key,
        new: &Key,
        copy: &Record,
    ) -> Result<Vec<Change>> {
        let table = spec.name.as_str();
        let queued = self.db.outbox().pending(&*txn, table, old)?;
        let local = self.db.records().get(&*txn, table, old)?;
        let merged = match &local {
            // Deleted locally after the create was sent: the delete is queued.
            None if queued.iter().any(|e| e.op == Op::Delete) => None,
            None => Some(copy.clone()),
            Some(local) => {
                let mut merged = copy.clone();
                if queued.iter().any(|e| e.op == Op::Create) {
                    // Deleted and created again locally: the local record replaces it.
                    merged = local.clone();
                } else {
                    overlay_fields(&mut merged, local, queued.iter().flat_map(|e| &e.changed));
                }
                merged.insert(spec.key.clone(), new.to_json());
                Some(merged)
            }
        };
        let mut changes = Vec::new();
        if local.is_some() {
            self.db
                .records()
                .write_row(txn, spec, old, local.as_ref(), None)?;
            changes.push(remap_change(table, old, Op::Delete, None));
        }
        self.db.records().set_base(txn, table, old, None)?;
        if merged.as_ref() != Some(copy) {
            self.db
                .records()
                .write_row(txn, spec, new, Some(copy), merged.as_ref())?;
            let op = if merged.is_some() {
                Op::Update
            } else {
                Op::Delete
            };
            changes.push(remap_change(table, new, op, merged));
        }
        Ok(changes)
    }
}
