//! Records and their indexes ([`Records`]): where records, their secondary indexes and their
//! bases are written and read, and the application's writes.
//!
//! It owns the records keyspace of every table, its secondary indexes and the bases (the last
//! version both sides agreed on). It guards two rules. A record and its index entries always
//! change together: [`Records::write_row`] writes both, and the other types write records
//! through it (only the quiet pull path computes the same rows with
//! `record_write::prepare_row`; index builds at open belong to
//! [`SchemaSync`](super::SchemaSync)). An application write commits with its outbox entry in
//! the caller's transaction (DESIGN invariant 1: [`Records::apply_local`] queues through the
//! [`Outbox`](super::Outbox)). Writes that come from the server go through
//! [`RemoteChanges`](super::RemoteChanges), which never queues them.

use std::borrow::Cow;
use std::ops::Bound;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::outbox::{LocalChange, Op};
use crate::record::{Key, Record, changed_fields, merge_patch};
use crate::spec::{TableSpec, describe};
use crate::store::{ReadTxn, WriteTxn, prefix_end};

use super::{
    Base, Change, IndexRange, LocalBatch, LocalDb, LocalWritten, MAX_RECORD_BYTES, Origin,
    PreparedPut, WriteOp, base_row, layout, record_row,
};

/// The records, indexes and bases of a [`LocalDb`], and the application's writes. Borrowed
/// from [`LocalDb::records`]; its methods act on the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    pub(super) db: &'a LocalDb,
}

impl Records<'_> {
    /// Applies the application's writes, all or nothing, each with its outbox entry.
    /// Returns the changes in order (a write that changes nothing yields no change).
    pub fn apply_local(&self, txn: &mut dyn WriteTxn, ops: &[WriteOp]) -> Result<Vec<Change>> {
        Ok(self.apply_local_tracked(txn, ops)?.changes)
    }

    /// [`Records::apply_local`], also telling which outbox entry carries each op (what a
    /// write receipt follows).
    pub fn apply_local_tracked(
        &self,
        txn: &mut dyn WriteTxn,
        ops: &[WriteOp],
    ) -> Result<LocalWritten> {
        self.apply_local_in(txn, ops, &mut LocalBatch::new())
    }

    /// Proves which of `keys` of `table` have nothing stored yet (no record row, no base, no
    /// queued entry), with three range reads over their span instead of three reads per key:
    /// see [`LocalBatch`]. Use the result in the same transaction, with
    /// [`Records::apply_local_in`].
    pub fn prove_new(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        keys: impl IntoIterator<Item = Key>,
    ) -> Result<LocalBatch> {
        self.db.schema.table(table)?;
        LocalBatch::prove(txn, table, keys)
    }

    /// [`Records::apply_local_tracked`] as part of `batch` (made in this transaction): writes of
    /// keys it proved new skip the reads that would find nothing (each key once: after its
    /// first write it exists), and sequence numbers follow the batch's last.
    pub fn apply_local_in(
        &self,
        txn: &mut dyn WriteTxn,
        ops: &[WriteOp],
        batch: &mut LocalBatch,
    ) -> Result<LocalWritten> {
        let mut written = LocalWritten {
            changes: Vec::with_capacity(ops.len()),
            seqs: Vec::with_capacity(ops.len()),
        };
        for op in ops {
            let (change, seq) = match self.apply_one(txn, op, batch)? {
                Some((change, seq)) => (Some(change), seq),
                None => (None, None),
            };
            written.changes.extend(change);
            written.seqs.push(seq);
        }
        Ok(written)
    }

    fn apply_one(
        &self,
        txn: &mut dyn WriteTxn,
        op: &WriteOp,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        match op {
            WriteOp::Put { table, record } => self.put(txn, table, record, false, batch),
            WriteOp::Insert { table, record } => self.put(txn, table, record, true, batch),
            WriteOp::Update { table, key, patch } => self.update(txn, table, key, patch, batch),
            WriteOp::Delete { table, key } => self.delete(txn, table, key, batch),
        }
    }

    fn put(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        record: &Value,
        must_be_new: bool,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.db.schema.table(table)?;
        let mut record = as_object(spec, record, None)?;
        let key = spec.key_or_new(&mut record)?;
        check_record(spec, &key, &record)?;
        let key_bytes = key.encode();
        let put = CheckedPut {
            key,
            key_bytes: &key_bytes,
            record,
            row: None,
            must_be_new,
        };
        self.put_checked(txn, spec, put, batch)
    }

    /// Writes a put that [`PreparedPut::new`] checked and encoded, as part of `batch` (see
    /// [`Records::apply_local_in`]); returns the change it made, if any. The put can be
    /// written again if the transaction was dropped.
    pub fn apply_prepared_in(
        &self,
        txn: &mut dyn WriteTxn,
        put: &mut PreparedPut,
        batch: &mut LocalBatch,
    ) -> Result<Option<Change>> {
        let spec = self.db.schema.table(put.table())?;
        let key = put.key().clone();
        let must_be_new = put.must_be_new();
        let (record, row, key_bytes) = put.take_for_write()?;
        let checked = CheckedPut {
            key,
            key_bytes,
            record,
            row: Some(row),
            must_be_new,
        };
        Ok(self
            .put_checked(txn, spec, checked, batch)?
            .map(|(change, _)| change))
    }

    /// A put of a checked record: reads what is stored (unless `batch` proved the key new)
    /// and writes.
    fn put_checked(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        put: CheckedPut<'_>,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let CheckedPut {
            key,
            key_bytes,
            record,
            row,
            must_be_new,
        } = put;
        let known_new = batch.knows_new_keys() && batch.take(&spec.name, key_bytes);
        let old = if known_new {
            None
        } else {
            self.get(&*txn, &spec.name, &key)?
        };
        if must_be_new && old.is_some() {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "record already exists")
                    .table(spec.name.clone())
                    .key(&key),
            );
        }
        let new = NewRecord { record, row };
        self.write_local(txn, spec, key, old, Some(new), known_new, batch)
    }

    fn update(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        patch: &Value,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.db.schema.table(table)?;
        spec.check_key(key).map_err(|e| e.key(key))?;
        let patch = as_object(spec, patch, Some(key))?;
        if let Some(value) = patch.get(&spec.key)
            && Key::from_json(value).as_ref() != Some(key)
        {
            return Err(Error::invalid("a patch cannot change the record's key")
                .table(table)
                .key(key)
                .field(spec.key.clone()));
        }
        let Some(old) = self.get(&*txn, table, key)? else {
            return Err(Error::new(ErrorKind::NotFound, "no such record")
                .table(table)
                .key(key));
        };
        let mut new = old.clone();
        merge_patch(&mut new, &patch);
        check_record(spec, key, &new)?;
        let new = NewRecord {
            record: new,
            row: None,
        };
        self.write_local(txn, spec, key.clone(), Some(old), Some(new), false, batch)
    }

    fn delete(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.db.schema.table(table)?;
        spec.check_key(key).map_err(|e| e.key(key))?;
        let old = self.get(&*txn, table, key)?;
        if old.is_none() {
            return Ok(None);
        }
        self.write_local(txn, spec, key.clone(), old, None, false, batch)
    }

    /// Writes a local change and queues it (when the table pushes); returns the change and
    /// the outbox entry that carries it. `known_new`: `batch` proved the key has nothing
    /// stored, so its queue and base are not read.
    #[allow(clippy::too_many_arguments)]
    fn write_local(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: Key,
        old: Option<Record>,
        new: Option<NewRecord<'_>>,
        known_new: bool,
        batch: &mut LocalBatch,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let (new, row) = match new {
            Some(NewRecord {
                mut record,
                mut row,
            }) => {
                if self.follow_remaps(&*txn, spec, &mut record)? {
                    row = None; // the bytes were of the record before the remap
                }
                (Some(record), row)
            }
            None => (None, None),
        };
        let (op, changed) = match (&old, &new) {
            (None, Some(_)) => (Op::Create, Vec::new()),
            (Some(old), Some(new)) => {
                let changed = changed_fields(old, new);
                if changed.is_empty() {
                    return Ok(None); // identical write: nothing to store, nothing to push
                }
                (Op::Update, changed)
            }
            (Some(_), None) => (Op::Delete, Vec::new()),
            (None, None) => return Ok(None),
        };
        // The record's queue, read once for the row write and the enqueue.
        let mut queue = if known_new {
            Default::default()
        } else {
            self.db.outbox().record_queue(&*txn, &spec.name, &key)?
        };
        debug_assert!(
            !known_new
                || self
                    .db
                    .outbox()
                    .record_queue(&*txn, &spec.name, &key)
                    .is_ok_and(|q| q.is_empty()),
            "{}/{key} was proved new but has queued entries",
            spec.name
        );
        let key_bytes = key.encode();
        let record_json = self.write_row_queued(
            txn,
            spec,
            &key,
            &key_bytes,
            old.as_ref(),
            new.as_ref(),
            row,
            &mut queue,
            known_new,
        )?;
        let mut seq = None;
        let new = if spec.push {
            // Not persisted here: the clock's last stamp is kept by the sync path's commits
            // and the record's queue carries its own (layout v2, `LocalDb::persist_clock`).
            let stamp = self.db.clock.now();
            let change = LocalChange {
                op,
                record: if op == Op::Delete { old } else { new },
                changed,
            };
            seq = self.db.outbox().enqueue(
                txn,
                spec,
                &key,
                &change,
                stamp.0,
                Some(super::outbox_ops::WrittenRow {
                    json: record_json.as_deref(),
                    queue: &mut queue,
                    batch,
                }),
            )?;
            // The outbox only borrowed the record: hand it on instead of copying it.
            if op == Op::Delete {
                None
            } else {
                change.record
            }
        } else {
            new
        };
        // The row goes in after the enqueue: its header lists the record's queue as the
        // enqueue left it (layout v4, `record_row`).
        self.db.outbox().put_record_row(
            txn,
            &spec.name,
            &key_bytes,
            record_json.as_deref(),
            &queue,
        )?;
        let change = Change {
            table: spec.name.clone(),
            key,
            op,
            record: new,
            origin: Origin::Local,
        };
        Ok(Some((change, seq)))
    }

    /// Points the record's references to keys the server has replaced since
    /// ([`RemoteChanges::remap_key`]) at the keys it assigned. The application may still hold a
    /// temporary key it read before the create was acknowledged, and the server never had it:
    /// the remap rewrote the references that existed then, this rewrites later ones (BUG-10).
    /// A key that names a local record again is left alone.
    fn follow_remaps(
        &self,
        txn: &dyn ReadTxn,
        spec: &TableSpec,
        record: &mut Record,
    ) -> Result<bool> {
        let mut rewritten = false;
        for reference in &spec.references {
            let Some(target) = record.get(&reference.field).and_then(Key::from_json) else {
                continue;
            };
            let remapped = txn.get(
                layout::REMAPPED,
                &layout::record_prefix(&reference.table, &target),
            )?;
            let Some(bytes) = remapped else {
                continue;
            };
            if self.get(txn, &reference.table, &target)?.is_some() {
                continue;
            }
            let new_key = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .as_ref()
                .and_then(Key::from_json)
                .ok_or_else(|| {
                    Error::new(ErrorKind::Decode, "unreadable remapped key")
                        .table(reference.table.clone())
                        .key(&target)
                })?;
            tracing::debug!(
                table = %spec.name,
                field = %reference.field,
                from = %target,
                to = %new_key,
                "a reference to a remapped key follows the remap"
            );
            record.insert(reference.field.clone(), new_key.to_json());
            rewritten = true;
        }
        Ok(rewritten)
    }

    /// A row write: writes (or deletes, when `new` is `None`) a record's row and keeps its
    /// index rows in step. Creates no outbox entry: it is not a local write
    /// ([`Records::apply_local`] queues one), only the storage of a record; the record's
    /// queue header goes along (`record_row`). Returns the new record's JSON.
    pub(super) fn write_row(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        old: Option<&Record>,
        new: Option<&Record>,
    ) -> Result<Option<Vec<u8>>> {
        let key_bytes = key.encode();
        let mut queue = self.db.outbox().record_queue(&*txn, &spec.name, key)?;
        let encoded = self.write_row_queued(
            txn, spec, key, &key_bytes, old, new, None, &mut queue, false,
        )?;
        self.db
            .outbox()
            .put_record_row(txn, &spec.name, &key_bytes, encoded.as_deref(), &queue)?;
        Ok(encoded.map(Cow::into_owned))
    }

    /// What [`Records::write_row`] writes but the record row itself, with the record's queue
    /// already read in this transaction; returns the new record's JSON, for the caller to put
    /// ([`super::Outbox::put_record_row`]). `row`: `new` already encoded, if it is;
    /// `known_new`: the key was proved to have no base ([`LocalBatch`]), which is then not
    /// read.
    #[allow(clippy::too_many_arguments)]
    fn write_row_queued<'r>(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        key_bytes: &[u8],
        old: Option<&Record>,
        new: Option<&Record>,
        row: Option<&'r [u8]>,
        queue: &mut super::outbox_ops::RecordQueue,
        known_new: bool,
    ) -> Result<Option<Cow<'r, [u8]>>> {
        for field in &spec.indexes {
            let keyspace = layout::index(&spec.name, field);
            let old_entry = old.map(|r| index_entry(spec, key, r, field)).transpose()?;
            let new_entry = new.map(|r| index_entry(spec, key, r, field)).transpose()?;
            if old_entry == new_entry {
                continue;
            }
            if let Some(entry) = old_entry {
                txn.discard(&keyspace, &entry)?;
            }
            if let Some(entry) = new_entry {
                txn.put(&keyspace, &entry, key_bytes)?;
            }
        }
        let encoded = match (new, row) {
            (Some(_), Some(row)) => Some(Cow::Borrowed(row)),
            (Some(record), None) => Some(Cow::Owned(encode_record(spec, key, record)?)),
            (None, _) => None,
        };
        debug_assert_eq!(
            encoded.as_deref(),
            new.and_then(|record| serde_json::to_vec(record).ok())
                .as_deref(),
            "the row bytes given for {}/{key} are its record's",
            spec.name
        );
        debug_assert!(
            !known_new
                || txn
                    .get(&layout::bases(&spec.name), key_bytes)
                    .is_ok_and(|b| b.is_none()),
            "{}/{key} was proved new but has a base",
            spec.name
        );
        if !known_new {
            self.keep_base_true(txn, spec, key_bytes, old, encoded.as_deref())?;
        }
        debug_assert!(
            old.is_some()
                || txn
                    .get(&layout::records(&spec.name), key_bytes)
                    .ok()
                    .flatten()
                    .is_none(),
            "write_row is told the old record of {}/{key}",
            spec.name
        );
        if old.is_some() {
            // Only an existing row can have entries pointing at it.
            self.db.outbox().keep_entries_true(
                txn,
                &spec.name,
                key,
                key_bytes,
                encoded.as_deref(),
                Some(queue),
            )?;
        }
        Ok(encoded)
    }

    /// Before a record row changes from `old` to `new_json`: a base stored as "the record row"
    /// (see [`base_row`]) is written out as the old record, so it stays what it was; a base of
    /// its own that holds exactly the new record becomes such a marker (the store keeps one
    /// copy).
    fn keep_base_true(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key_bytes: &[u8],
        old: Option<&Record>,
        new_json: Option<&[u8]>,
    ) -> Result<()> {
        let bases = layout::bases(&spec.name);
        let Some(row) = txn.get(&bases, key_bytes)? else {
            return Ok(());
        };
        let key = Key::decode(key_bytes)?.0;
        if base_row::is_marker(&row) {
            let base_row::BaseRow::AsRecord(version) = base_row::decode(&row, &spec.name, &key)?
            else {
                return Err(Error::internal("corrupt base marker")
                    .table(spec.name.clone())
                    .key(&key));
            };
            return match old {
                Some(old) => {
                    let old_json = encode_record(spec, &key, old)?;
                    if new_json == Some(old_json.as_slice()) {
                        return Ok(()); // the row does not change
                    }
                    txn.put(
                        &bases,
                        key_bytes,
                        &base_row::own(&old_json, version.as_deref()),
                    )
                }
                // No record to be the base: the marker pointed at nothing.
                None => txn.discard(&bases, key_bytes),
            };
        }
        // A base of its own: it becomes the marker when it holds exactly the new record
        // (compared as bytes; nothing is decoded otherwise).
        match new_json {
            Some(new) if base_row::holds_record(&row, new) => {
                let version = base_row::version_after(&row, new, &spec.name, &key)?;
                txn.put(&bases, key_bytes, &base_row::as_record(version.as_deref()))
            }
            _ => Ok(()),
        }
    }

    // ----- reads ----------------------------------------------------------------------------

    /// The record of `table` under `key`.
    pub fn get(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Option<Record>> {
        let spec = self.db.schema.table(table)?;
        txn.get(&layout::records(table), &key.encode())?
            .map(|row| decode_row(spec, key, &row))
            .transpose()
    }

    /// Records of `table` in key order, after `after` (exclusive), at most `limit`.
    pub fn scan(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let spec = self.db.schema.table(table)?;
        let start = after.map(Key::encode);
        let rows = txn.range(
            &layout::records(table),
            match &start {
                Some(s) => Bound::Excluded(s.as_slice()),
                None => Bound::Unbounded,
            },
            Bound::Unbounded,
            Some(limit),
            false,
        )?;
        rows.into_iter()
            .map(|(k, v)| {
                let (key, _) = Key::decode(&k)?;
                decode_row(spec, &key, &v)
            })
            .collect()
    }

    /// Records of `table` whose indexed `field` matches `range`, in index order, at most `limit`.
    pub fn query(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        field: &str,
        range: &IndexRange,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let spec = self.db.schema.table(table)?;
        if !spec.indexes.iter().any(|f| f == field) {
            return Err(Error::invalid(format!(
                "no index on this field (indexed: {})",
                spec.indexes.join(", ")
            ))
            .table(table)
            .field(field));
        }
        let encode = |v: &Value| {
            layout::index_value(v).map_err(|got| {
                Error::invalid(format!("cannot query an index by {got}"))
                    .table(table)
                    .field(field)
            })
        };
        let (start, end): (Bound<Vec<u8>>, Bound<Vec<u8>>) = match range {
            IndexRange::Eq(value) => {
                let prefix = encode(value)?;
                let end = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
                (Bound::Included(prefix), end)
            }
            IndexRange::Between(lower, upper) => {
                let start = match lower {
                    Bound::Included(v) => Bound::Included(encode(v)?),
                    Bound::Excluded(v) => {
                        prefix_end(&encode(v)?).map_or(Bound::Unbounded, Bound::Included)
                    }
                    Bound::Unbounded => Bound::Unbounded,
                };
                let end = match upper {
                    Bound::Included(v) => {
                        prefix_end(&encode(v)?).map_or(Bound::Unbounded, Bound::Excluded)
                    }
                    Bound::Excluded(v) => Bound::Excluded(encode(v)?),
                    Bound::Unbounded => Bound::Unbounded,
                };
                (start, end)
            }
        };
        let hits = txn.range(
            &layout::index(table, field),
            as_slice_bound(&start),
            as_slice_bound(&end),
            Some(limit),
            false,
        )?;
        let records_keyspace = layout::records(table);
        let mut out = Vec::with_capacity(hits.len());
        for (_, key_bytes) in hits {
            let (key, _) = Key::decode(&key_bytes)?;
            match txn.get(&records_keyspace, &key_bytes)? {
                Some(row) => out.push(decode_row(spec, &key, &row)?),
                None => {
                    return Err(Error::internal("index entry without its record")
                        .table(table)
                        .key(&key)
                        .field(field));
                }
            }
        }
        Ok(out)
    }

    /// Number of records in `table`.
    pub fn count(&self, txn: &dyn ReadTxn, table: &str) -> Result<u64> {
        self.db.schema.table(table)?;
        txn.len(&layout::records(table))
    }

    /// The base (last agreed version) of a record.
    pub fn base(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Option<Base>> {
        self.db.schema.table(table)?;
        let Some(row) = txn.get(&layout::bases(table), &key.encode())? else {
            return Ok(None);
        };
        Ok(match base_row::decode(&row, table, key)? {
            base_row::BaseRow::Own(base) => Some(base),
            base_row::BaseRow::AsRecord(version) => self
                .get(txn, table, key)?
                .map(|record| Base { record, version }),
        })
    }

    /// The version token of a record's base (what a push is based on), without reading the
    /// base's record.
    pub fn base_version(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
    ) -> Result<Option<String>> {
        self.db.schema.table(table)?;
        match txn.get(&layout::bases(table), &key.encode())? {
            Some(row) => base_row::decode_version(&row, table, key),
            None => Ok(None),
        }
    }

    /// Writes `table`'s record `key` from `old` to `new` and makes `new` its base, with
    /// `version`: the base is stored as "the record row" (see [`base_row`]), never as a copy.
    pub(super) fn set_base_as_row(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        old: Option<&Record>,
        new: &Record,
        version: Option<&str>,
    ) -> Result<()> {
        let spec = self.db.schema.table(table)?;
        let bases = layout::bases(table);
        let key_bytes = key.encode();
        // The old base is being replaced: cleared first, so the row write does not write it
        // out to keep it true.
        txn.discard(&bases, &key_bytes)?;
        self.write_row(txn, spec, key, old, Some(new))?;
        txn.put(&bases, &key_bytes, &base_row::as_record(version))
    }

    /// Stores (or clears) the base of a record.
    pub fn set_base(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        base: Option<&Base>,
    ) -> Result<()> {
        let keyspace = layout::bases(table);
        let spec = self.db.schema.table(table)?;
        let key_bytes = key.encode();
        match base {
            Some(base) => {
                let record_json = encode_record(spec, key, &base.record)?;
                // The same as the record row: stored once (see `base_row`).
                let current = txn.get(&layout::records(table), &key_bytes)?;
                let current = current.as_deref().map(record_row::json).transpose()?;
                let row = match current {
                    Some(current) if current == record_json.as_slice() => {
                        base_row::as_record(base.version.as_deref())
                    }
                    _ => base_row::own(&record_json, base.version.as_deref()),
                };
                txn.put(&keyspace, &key_bytes, &row)
            }
            None => txn.discard(&keyspace, &key_bytes),
        }
    }
}

fn as_slice_bound(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A put whose record passed the checks: its key (encoded too), the record and, when it was
/// encoded ahead ([`PreparedPut`]), its row bytes.
struct CheckedPut<'k> {
    key: Key,
    key_bytes: &'k [u8],
    record: Record,
    row: Option<&'k [u8]>,
    must_be_new: bool,
}

/// The record a local write stores, and its row bytes when they were encoded ahead.
struct NewRecord<'r> {
    record: Record,
    row: Option<&'r [u8]>,
}

fn as_object(spec: &TableSpec, value: &Value, key: Option<&Key>) -> Result<Record> {
    match value {
        Value::Object(map) => Ok(map.clone()),
        other => {
            let err = Error::invalid(format!(
                "a record must be a JSON object, got {}",
                describe(other)
            ))
            .table(spec.name.clone());
            Err(match key {
                Some(key) => err.key(key),
                None => err,
            })
        }
    }
}

pub(super) fn check_record(spec: &TableSpec, key: &Key, record: &Record) -> Result<()> {
    for field in &spec.indexes {
        index_entry(spec, key, record, field)?;
    }
    Ok(())
}

/// `index value ‖ key` for `field` of `record`; a missing field indexes as null.
pub(super) fn index_entry(
    spec: &TableSpec,
    key: &Key,
    record: &Record,
    field: &str,
) -> Result<Vec<u8>> {
    let value = record.get(field).unwrap_or(&Value::Null);
    let mut entry = layout::index_value(value).map_err(|got| {
        Error::invalid(format!(
            "an indexed field must be null, a boolean, a number or a string, got {got}"
        ))
        .table(spec.name.clone())
        .key(key)
        .field(field)
    })?;
    key.encode_into(&mut entry);
    Ok(entry)
}

/// About how many bytes the last record encoded to: the next encoding starts with that much
/// room, instead of growing from 128 bytes by copying (records of one app are alike in size).
static RECORD_BYTES_HINT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(256);

pub(super) fn encode_record(spec: &TableSpec, key: &Key, record: &Record) -> Result<Vec<u8>> {
    use std::sync::atomic::Ordering::Relaxed;
    let hint = RECORD_BYTES_HINT.load(Relaxed).min(MAX_RECORD_BYTES);
    let mut bytes = Vec::with_capacity(hint + hint / 8);
    serde_json::to_writer(&mut bytes, record).map_err(|e| {
        Error::invalid(format!("record is not serializable: {e}"))
            .table(spec.name.clone())
            .key(key)
    })?;
    RECORD_BYTES_HINT.store(bytes.len(), Relaxed);
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Error::invalid(format!(
            "record is {} bytes, more than the {} byte limit",
            bytes.len(),
            MAX_RECORD_BYTES
        ))
        .table(spec.name.clone())
        .key(key));
    }
    Ok(bytes)
}

/// Decodes a record row (its JSON after the queue header, see `record_row`).
pub(super) fn decode_row(spec: &TableSpec, key: &Key, row: &[u8]) -> Result<Record> {
    let json = record_row::json(row).map_err(|e| e.table(spec.name.clone()).key(key))?;
    decode_record(spec, key, json)
}

/// Decodes a record's JSON.
pub(super) fn decode_record(spec: &TableSpec, key: &Key, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!("corrupt record in store: {e}"))
            .table(spec.name.clone())
            .key(key)
    })
}
