//! The local database: records, secondary indexes and the atomic, coalescing outbox, written on
//! top of any [`Store`](crate::Store).
//!
//! Every function here works inside a transaction the caller opened, so a local write, its
//! index entries and its outbox entry always commit together (DESIGN invariant 1). Writes that
//! come from the server (pulled pages, push acknowledgements, conflict outcomes) go through
//! other functions that never create outbox entries (invariant 2).

mod ack;
mod echo;
mod entry_state;
pub mod layout;
mod layout_upgrade;
mod migrate;
mod outbox_ops;
mod parked;
mod pull_apply;
mod pulled;
mod quarantine_ops;
mod reconcile;
mod record_write;
mod remap;
mod remote_decode;
mod resolution;
mod schema_sync;
mod settled;
mod staged;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod test_txn;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::hlc::{HybridClock, Stamp, wall_millis};
use crate::outbox::{LocalChange, Op};
use crate::record::{Key, Record, changed_fields, merge_patch};
use crate::spec::{TableSpec, describe};
use crate::store::{ReadTxn, WriteTxn, prefix_end};

pub use ack::Acked;
pub use entry_state::{EntryState, OutboxSummary};
pub use layout_upgrade::{LAYOUT_VERSION, LayoutUpgrade};
pub use migrate::{MigrationDone, MigrationFn, Migrations};
pub use outbox_ops::{OutboxStats, ReadyScan, TAKEOVER_HOLD_NOTE};
pub use parked::ParkedConflict;
pub use pulled::{AppliedPage, RemoteMeta};
pub use quarantine_ops::Quarantined;
pub use reconcile::Reconciled;
pub use schema_sync::{SchemaChanges, SchemaProgress, SchemaProgressFn, TableSchemaStatus};
pub use settled::{ChangeState, SETTLED_KEEP, SettledEntry, Settlement};
pub use staged::Staged;

/// Largest accepted record, serialized.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// The tables of a database.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    tables: BTreeMap<String, TableSpec>,
}

impl Schema {
    /// Builds and validates a schema.
    pub fn new(specs: impl IntoIterator<Item = TableSpec>) -> Result<Schema> {
        let mut tables = BTreeMap::new();
        for spec in specs {
            spec.validate()?;
            let name = spec.name.clone();
            if tables.insert(name.clone(), spec).is_some() {
                return Err(Error::config("table declared twice").table(name));
            }
        }
        for spec in tables.values() {
            for reference in &spec.references {
                if !tables.contains_key(&reference.table) {
                    return Err(Error::config(format!(
                        "references unknown table `{}`",
                        reference.table
                    ))
                    .table(spec.name.clone())
                    .field(reference.field.clone()));
                }
            }
        }
        Ok(Schema { tables })
    }

    /// The spec of `table`, or an error naming it.
    pub fn table(&self, table: &str) -> Result<&TableSpec> {
        self.tables.get(table).ok_or_else(|| {
            Error::invalid(format!(
                "unknown table (declared: {})",
                self.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
            .table(table)
        })
    }

    /// All table specs, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }
}

/// A local write requested by the application.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace a record; a record without a key gets a UUIDv7 (string-key tables).
    Put {
        /// The table.
        table: String,
        /// The record (must be a JSON object).
        record: Value,
    },
    /// Insert a record that must not exist yet.
    Insert {
        /// The table.
        table: String,
        /// The record (must be a JSON object).
        record: Value,
    },
    /// Apply a JSON merge patch (RFC 7386) to an existing record.
    Update {
        /// The table.
        table: String,
        /// The record key.
        key: Key,
        /// The patch (must be a JSON object).
        patch: Value,
    },
    /// Delete a record (no-op if it does not exist).
    Delete {
        /// The table.
        table: String,
        /// The record key.
        key: Key,
    },
}

/// What [`LocalDb::apply_local_tracked`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalWritten {
    /// The changes in order (a write that changes nothing yields no change).
    pub changes: Vec<Change>,
    /// For each op, in order: the sequence number of the outbox entry that carries it (a new
    /// entry, or the unsent entry it was folded into); `None` when the op queued nothing (it
    /// changed nothing, its table does not push, or it cancelled an unsent create).
    pub seqs: Vec<Option<u64>>,
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The application, through the table API.
    Local,
    /// A pulled page.
    Pull,
    /// A push acknowledgement (server-owned fields merged, id remapped).
    PushAck,
    /// A conflict resolution.
    Resolution,
}

/// One committed change to one record, as watchers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: String,
    /// The record key.
    pub key: Key,
    /// What happened to the record.
    pub op: Op,
    /// The record after the change; `None` after a delete.
    pub record: Option<Record>,
    /// Who made it.
    pub origin: Origin,
}

/// A record's base: the last version both sides agreed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Base {
    /// The record as the server last had it.
    pub record: Record,
    /// Its version token, if the transport reports one.
    pub version: Option<String>,
}

/// A secondary-index condition.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexRange {
    /// Field equals the value.
    Eq(Value),
    /// Field within the bounds.
    Between(Bound<Value>, Bound<Value>),
}

/// The local database logic over one schema and clock.
#[derive(Debug, Clone)]
pub struct LocalDb {
    schema: Arc<Schema>,
    clock: Arc<HybridClock>,
    /// The migrations and decoders records from the server go through (see
    /// [`LocalDb::decode_remote`]).
    migrations: Arc<Migrations>,
}

impl LocalDb {
    /// A database over `schema`, stamping writes with `clock`.
    pub fn new(schema: Schema, clock: Arc<HybridClock>) -> Self {
        LocalDb {
            schema: Arc::new(schema),
            clock,
            migrations: Arc::default(),
        }
    }

    /// Records from the server (pulled pages, push answers) go through `migrations`: the
    /// table's decoder, then the version steps from the version they carry (see
    /// [`LocalDb::decode_remote`]).
    pub fn with_migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = Arc::new(migrations);
        self
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.clock
    }

    /// Restores the clock from the last stamp persisted in the store (call once at start-up).
    pub fn restore_clock(&self, txn: &dyn ReadTxn) -> Result<()> {
        if let Some(bytes) = txn.get(layout::META, layout::META_HLC)? {
            self.clock.observe(Stamp(read_u64(&bytes)?));
        }
        Ok(())
    }

    /// Keeps the clock's last stamp in the store, so a restarted clock does not issue stamps
    /// below it ([`LocalDb::restore_clock`]). Called by commits of the sync path (entries
    /// leaving the outbox, a leader's claim), not by local writes: a stamp a crash loses
    /// before the next such commit is still carried by the pending entry it was given to, and
    /// the next write to that record stamps past it (`enqueue`).
    pub(super) fn persist_clock(&self, txn: &mut dyn WriteTxn) -> Result<()> {
        txn.put(
            layout::META,
            layout::META_HLC,
            &self.clock.last().0.to_be_bytes(),
        )
    }

    // ----- fencing ------------------------------------------------------------------------

    /// Records that leadership `epoch` now owns this database (never lowers the stored epoch).
    /// Fails with [`ErrorKind::Fenced`] if a newer leader already claimed it.
    pub fn claim_epoch(&self, txn: &mut dyn WriteTxn, epoch: u64) -> Result<()> {
        self.check_epoch(&*txn, Some(epoch))?;
        txn.put(layout::META, layout::META_EPOCH, &epoch.to_be_bytes())?;
        self.persist_clock(txn)
    }

    /// What a leader does when it wins `epoch`, in one transaction: claims the database
    /// ([`LocalDb::claim_epoch`]) and puts back in the queue the entries left in flight. When
    /// another epoch held the database before (a new leader after another one, or after this
    /// process restarted under a new epoch), they are held until `hold_until_ms`
    /// ([`LocalDb::reset_in_flight_held`]): the previous leader's requests may still land. The
    /// same epoch again (an always-leader election after a restart) re-queues them at once.
    /// Returns how many were re-queued.
    pub fn take_over(
        &self,
        txn: &mut dyn WriteTxn,
        epoch: u64,
        hold_until_ms: u64,
    ) -> Result<usize> {
        let previous = match txn.get(layout::META, layout::META_EPOCH)? {
            Some(bytes) => Some(read_u64(&bytes)?),
            None => None,
        };
        self.claim_epoch(txn, epoch)?;
        let hold = previous
            .is_some_and(|p| p != epoch)
            .then_some(hold_until_ms);
        self.reset_in_flight_held(txn, hold)
    }

    /// Refuses a sync write made under `epoch` when a newer leader has claimed the database
    /// (DESIGN invariant 9: a deposed leader's commits are refused). `None` (no election in
    /// use) always passes.
    pub fn check_epoch(&self, txn: &dyn ReadTxn, epoch: Option<u64>) -> Result<()> {
        let Some(epoch) = epoch else { return Ok(()) };
        if let Some(bytes) = txn.get(layout::META, layout::META_EPOCH)? {
            let current = read_u64(&bytes)?;
            if current > epoch {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    format!("leadership epoch {epoch} was superseded by epoch {current}"),
                ));
            }
        }
        Ok(())
    }

    // ----- local writes -------------------------------------------------------------------

    /// Applies the application's writes, all or nothing, each with its outbox entry.
    /// Returns the changes in order (a write that changes nothing yields no change).
    pub fn apply_local(&self, txn: &mut dyn WriteTxn, ops: &[WriteOp]) -> Result<Vec<Change>> {
        Ok(self.apply_local_tracked(txn, ops)?.changes)
    }

    /// [`LocalDb::apply_local`], also telling which outbox entry carries each op (what a
    /// write receipt follows).
    pub fn apply_local_tracked(
        &self,
        txn: &mut dyn WriteTxn,
        ops: &[WriteOp],
    ) -> Result<LocalWritten> {
        let mut written = LocalWritten {
            changes: Vec::with_capacity(ops.len()),
            seqs: Vec::with_capacity(ops.len()),
        };
        for op in ops {
            let (change, seq) = match self.apply_one(txn, op)? {
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
    ) -> Result<Option<(Change, Option<u64>)>> {
        match op {
            WriteOp::Put { table, record } => self.put(txn, table, record, false),
            WriteOp::Insert { table, record } => self.put(txn, table, record, true),
            WriteOp::Update { table, key, patch } => self.update(txn, table, key, patch),
            WriteOp::Delete { table, key } => self.delete(txn, table, key),
        }
    }

    fn put(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        record: &Value,
        must_be_new: bool,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.schema.table(table)?;
        let mut record = as_object(spec, record, None)?;
        let key = spec.key_or_new(&mut record)?;
        check_record(spec, &key, &record)?;
        let old = self.get(&*txn, table, &key)?;
        if must_be_new && old.is_some() {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "record already exists")
                    .table(table)
                    .key(&key),
            );
        }
        self.write_local(txn, spec, key, old, Some(record))
    }

    fn update(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        patch: &Value,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.schema.table(table)?;
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
        self.write_local(txn, spec, key.clone(), Some(old), Some(new))
    }

    fn delete(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
    ) -> Result<Option<(Change, Option<u64>)>> {
        let spec = self.schema.table(table)?;
        spec.check_key(key).map_err(|e| e.key(key))?;
        let old = self.get(&*txn, table, key)?;
        if old.is_none() {
            return Ok(None);
        }
        self.write_local(txn, spec, key.clone(), old, None)
    }

    /// Writes a local change and queues it (when the table pushes); returns the change and
    /// the outbox entry that carries it.
    fn write_local(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: Key,
        old: Option<Record>,
        mut new: Option<Record>,
    ) -> Result<Option<(Change, Option<u64>)>> {
        if let Some(record) = new.as_mut() {
            self.follow_remaps(&*txn, spec, record)?;
        }
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
        self.write_record(txn, spec, &key, old.as_ref(), new.as_ref())?;
        let mut seq = None;
        let new = if spec.push {
            // Not persisted here: the clock's last stamp is kept by the sync path's commits
            // and the record's queue carries its own (layout v2, `LocalDb::persist_clock`).
            let stamp = self.clock.now();
            let change = LocalChange {
                op,
                record: if op == Op::Delete { old } else { new },
                changed,
            };
            seq = self.enqueue(txn, spec, &key, &change, stamp.0)?;
            // The outbox only borrowed the record: hand it on instead of copying it.
            if op == Op::Delete {
                None
            } else {
                change.record
            }
        } else {
            new
        };
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
    /// ([`LocalDb::remap_key`]) at the keys it assigned. The application may still hold a
    /// temporary key it read before the create was acknowledged, and the server never had it:
    /// the remap rewrote the references that existed then, this rewrites later ones (BUG-10).
    /// A key that names a local record again is left alone.
    fn follow_remaps(
        &self,
        txn: &dyn ReadTxn,
        spec: &TableSpec,
        record: &mut Record,
    ) -> Result<()> {
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
        }
        Ok(())
    }

    /// Writes (or deletes, when `new` is `None`) a record and keeps its indexes in step.
    /// Creates no outbox entry.
    pub fn write_record(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        old: Option<&Record>,
        new: Option<&Record>,
    ) -> Result<()> {
        let key_bytes = key.encode();
        for field in &spec.indexes {
            let keyspace = layout::index(&spec.name, field);
            let old_entry = old.map(|r| index_entry(spec, key, r, field)).transpose()?;
            let new_entry = new.map(|r| index_entry(spec, key, r, field)).transpose()?;
            if old_entry == new_entry {
                continue;
            }
            if let Some(entry) = old_entry {
                txn.delete(&keyspace, &entry)?;
            }
            if let Some(entry) = new_entry {
                txn.put(&keyspace, &entry, &key_bytes)?;
            }
        }
        let keyspace = layout::records(&spec.name);
        match new {
            Some(record) => txn.put(&keyspace, &key_bytes, &encode_record(spec, key, record)?)?,
            None => {
                txn.delete(&keyspace, &key_bytes)?;
            }
        }
        Ok(())
    }

    // ----- reads ----------------------------------------------------------------------------

    /// The record of `table` under `key`.
    pub fn get(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Option<Record>> {
        let spec = self.schema.table(table)?;
        txn.get(&layout::records(table), &key.encode())?
            .map(|bytes| decode_record(spec, key, &bytes))
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
        let spec = self.schema.table(table)?;
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
                decode_record(spec, &key, &v)
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
        let spec = self.schema.table(table)?;
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
                Some(bytes) => out.push(decode_record(spec, &key, &bytes)?),
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
        self.schema.table(table)?;
        txn.len(&layout::records(table))
    }

    /// The base (last agreed version) of a record.
    pub fn base(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Option<Base>> {
        self.schema.table(table)?;
        txn.get(&layout::bases(table), &key.encode())?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::internal(format!("corrupt base in store: {e}"))
                        .table(table)
                        .key(key)
                })
            })
            .transpose()
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
        match base {
            Some(base) => {
                let bytes = serde_json::to_vec(base).map_err(|e| {
                    Error::internal(format!("cannot encode base: {e}"))
                        .table(table)
                        .key(key)
                })?;
                txn.put(&keyspace, &key.encode(), &bytes)
            }
            None => txn.delete(&keyspace, &key.encode()).map(|_| ()),
        }
    }

    /// The stored pull checkpoint of `table`.
    pub fn checkpoint(&self, txn: &dyn ReadTxn, table: &str) -> Result<Option<Value>> {
        txn.get(layout::CHECKPOINTS, table.as_bytes())?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::internal(format!("corrupt checkpoint: {e}")).table(table))
            })
            .transpose()
    }

    /// Stores the pull checkpoint of `table` (in the transaction that applies the page).
    pub fn set_checkpoint(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        cursor: Option<&Value>,
    ) -> Result<()> {
        match cursor {
            Some(cursor) => {
                let bytes = serde_json::to_vec(cursor)
                    .map_err(|e| Error::internal(format!("cannot encode cursor: {e}")))?;
                txn.put(layout::CHECKPOINTS, table.as_bytes(), &bytes)
            }
            None => txn
                .delete(layout::CHECKPOINTS, table.as_bytes())
                .map(|_| ()),
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

fn check_record(spec: &TableSpec, key: &Key, record: &Record) -> Result<()> {
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

fn encode_record(spec: &TableSpec, key: &Key, record: &Record) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(record).map_err(|e| {
        Error::invalid(format!("record is not serializable: {e}"))
            .table(spec.name.clone())
            .key(key)
    })?;
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

pub(super) fn decode_record(spec: &TableSpec, key: &Key, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!("corrupt record in store: {e}"))
            .table(spec.name.clone())
            .key(key)
    })
}

pub(crate) fn read_u64(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::internal("corrupt counter in store"))?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn now_ms() -> u64 {
    wall_millis()
}
