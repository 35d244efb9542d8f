//! The local database: records, secondary indexes and the atomic, coalescing outbox, written on
//! top of any [`Store`](crate::Store).
//!
//! [`LocalDb`] owns the shared state (schema, clock, migrations); a few narrow types borrow it,
//! each with one job and its own file:
//!
//! | type | file | owns |
//! |---|---|---|
//! | [`Records`] (`db.records()`) | `records.rs` | records, secondary indexes, bases; the application's writes and reads |
//! | [`Outbox`] (`db.outbox()`) | `outbox_ops.rs`, `record_queue.rs` (+ `record_row.rs`), `entry_state.rs`, `settled.rs` | the outbox queue: enqueue and coalescing, each record's queue (listed in its record row), listings, ready heads, in-flight and backoff state, dead letters, entry states, settlements |
//! | [`RemoteChanges`] (`db.remote()`) | `remote.rs` (+ `ack.rs`, `pull_apply.rs`, `echo.rs`, `remap.rs`, `resolution.rs`, `reconcile.rs`, `remote_decode.rs`) | what the server said: push acks, pulled pages and checkpoints, echoes, key remaps, conflict outcomes, hard deletes, decoding |
//! | [`Parked`] (`db.parked()`) | `parked.rs`, `quarantine_ops.rs` | parked conflicts, quarantined pulled items |
//! | [`Fence`] (`db.fence()`) | `fence.rs` | the leadership epoch (claim, take over, check) |
//! | [`SchemaSync`] (`db.schema_sync()`) | `schema_sync.rs`, `migrate.rs` | the recorded schema, index builds, record migrations |
//!
//! The views hold only a `&LocalDb`, and their methods take the caller's transaction (except
//! [`SchemaSync`], which runs at open on the store itself), so several of them act on one
//! shared transaction: a local write, its index entries and its outbox entry always commit
//! together (DESIGN invariant 1). Writes that come from the server (pulled pages, push
//! acknowledgements, conflict outcomes) go through [`RemoteChanges`], which never turns them
//! into outbox entries (invariant 2).

mod ack;
mod base_row;
mod echo;
mod entry_codec;
#[cfg(test)]
mod entry_in_row_props;
mod entry_state;
mod fence;
pub mod layout;
mod layout_upgrade;
mod local_batch;
mod migrate;
mod outbox_ops;
mod parked;
mod prepared_put;
mod pull_apply;
mod pulled;
mod quarantine_ops;
mod reconcile;
mod record_queue;
mod record_row;
mod record_write;
mod records;
mod remap;
mod remote;
mod remote_decode;
mod resolution;
mod schema_sync;
mod settled;
mod staged;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
pub(crate) mod test_txn;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::hlc::{HybridClock, Stamp, wall_millis};
use crate::outbox::Op;
use crate::record::{Key, Record};
use crate::spec::TableSpec;
use crate::store::{ReadTxn, WriteTxn};

pub use ack::Acked;
pub use entry_state::{EntryState, OutboxSummary};
pub use fence::Fence;
pub use layout_upgrade::{LAYOUT_VERSION, LayoutUpgrade};
pub use local_batch::LocalBatch;
pub use migrate::{MigrationDone, MigrationFn, Migrations};
pub use outbox_ops::{Outbox, OutboxStats, ReadyScan, TAKEOVER_HOLD_NOTE};
pub use parked::{Parked, ParkedConflict};
pub use prepared_put::PreparedPut;
pub use pulled::{AppliedPage, RemoteMeta};
pub use quarantine_ops::Quarantined;
pub use reconcile::Reconciled;
pub use records::Records;
use records::{decode_row, encode_record, index_entry};
pub use remote::RemoteChanges;
pub use schema_sync::{
    SchemaChanges, SchemaProgress, SchemaProgressFn, SchemaSync, TableSchemaStatus,
};
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

/// One operation of an application's local write: a change to one record made through the
/// table API, applied by [`Records::apply_local`] together with its outbox entry. (Not a row
/// write, [`Records`]' storage of a record, nor a store transaction, [`WriteTxn`].)
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

/// What [`Records::apply_local_tracked`] wrote.
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
    /// [`RemoteChanges`]).
    migrations: Arc<Migrations>,
    /// The last outbox sequence number handed out here (0: none yet): where the next one's
    /// read of the outbox starts (`Outbox::next_seq`). Shared by clones.
    seq_hint: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a local write's entry points at its record row (layout v3) instead of carrying
    /// a copy of the record. Always on; tests turn it off to compare both forms.
    entries_point_at_rows: bool,
}

impl LocalDb {
    /// A database over `schema`, stamping writes with `clock`.
    pub fn new(schema: Schema, clock: Arc<HybridClock>) -> Self {
        LocalDb {
            schema: Arc::new(schema),
            clock,
            migrations: Arc::default(),
            seq_hint: Arc::default(),
            entries_point_at_rows: true,
        }
    }

    /// This database with entries that always carry a copy of their record (what layout v2
    /// wrote): the reference the pointer form is compared against in tests.
    #[cfg(test)]
    pub(crate) fn copying_records_into_entries(mut self) -> Self {
        self.entries_point_at_rows = false;
        self
    }

    /// Records from the server (pulled pages, push answers) go through `migrations`: the
    /// table's decoder, then the version steps from the version they carry (see
    /// [`RemoteChanges`]).
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

    /// The records, indexes and bases, and the application's writes (see [`Records`]).
    pub fn records(&self) -> Records<'_> {
        Records { db: self }
    }

    /// The outbox queue: enqueue, listings, ready heads, in-flight and backoff state, dead
    /// letters, entry states, settlements (see [`Outbox`]).
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox { db: self }
    }

    /// Reconciliation of what the server said: acks, pulled pages, echoes, remaps, conflict
    /// outcomes, hard deletes (see [`RemoteChanges`]).
    pub fn remote(&self) -> RemoteChanges<'_> {
        RemoteChanges { db: self }
    }

    /// Parked conflicts and quarantined pulled items (see [`Parked`]).
    pub fn parked(&self) -> Parked<'_> {
        Parked { db: self }
    }

    /// The leadership epoch: claim, take over, check (see [`Fence`]).
    pub fn fence(&self) -> Fence<'_> {
        Fence { db: self }
    }

    /// Bringing a store in step with this schema at open: indexes, migrations (see
    /// [`SchemaSync`]).
    pub fn schema_sync(&self) -> SchemaSync<'_> {
        SchemaSync { db: self }
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
