//! The schema a store was last opened with, and bringing the store in step with the schema it
//! is opened with now ([`SchemaSync`]; DESIGN invariant 13: schema changes never answer
//! wrongly). The record migrations it runs live in `migrate.rs`.
//!
//! At open, for each declared table: an index the store does not hold yet is built over the
//! existing records (in batches, before any query can run, so a query never sees a half-built
//! index); an index no longer declared has its keyspace dropped; a changed key field or key
//! kind over existing records is refused with an error that names the table and the way out.
//! Tables the store knows but the schema no longer declares are kept untouched and reported.
//!
//! A store written before the schema was recorded has no record of its indexes: every declared
//! index of a table that holds records is rebuilt once. A crash in the middle of a build leaves
//! the schema record as it was, so the next open builds that index again from scratch: the
//! build is idempotent (each index row is `value ‖ key`), and dropping its keyspace first
//! removes rows of a previous, different declaration.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::record::Key;
use crate::spec::{KeyKind, TableSpec};
use crate::store::Store;

use super::{LocalDb, decode_row, index_entry, layout};

/// Where the schema is recorded (in the meta keyspace).
const META_SCHEMA: &[u8] = b"schema";

/// Records indexed (or index rows dropped) per transaction.
const BATCH: usize = 1_000;

/// One table as the store last knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredTable {
    key: String,
    key_kind: KeyKind,
    indexes: Vec<String>,
    /// The record shape's version (0 for stores written before versions existed).
    #[serde(default)]
    version: u32,
}

impl StoredTable {
    fn of(spec: &TableSpec) -> Self {
        StoredTable {
            key: spec.key.clone(),
            key_kind: spec.key_kind,
            indexes: spec.indexes.clone(),
            version: spec.version,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredSchema {
    tables: BTreeMap<String, StoredTable>,
}

/// What opening the store with this schema changed in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemaChanges {
    /// Tables declared for the first time.
    pub tables_added: Vec<String>,
    /// Tables the store holds that the schema no longer declares: kept untouched (their
    /// records stay in the file; declare the table again to reach them).
    pub tables_not_declared: Vec<String>,
    /// Indexes built over existing records: `(table, field, records indexed)`.
    pub indexes_built: Vec<(String, String, u64)>,
    /// Indexes no longer declared, whose rows were dropped: `(table, field)`.
    pub indexes_dropped: Vec<(String, String)>,
    /// Record migrations run (stored records, unsent outbox payloads, bases).
    pub migrations: Vec<super::MigrationDone>,
}

impl SchemaChanges {
    /// Whether the store was already in step.
    pub fn is_empty(&self) -> bool {
        self.tables_added.is_empty()
            && self.tables_not_declared.is_empty()
            && self.indexes_built.is_empty()
            && self.indexes_dropped.is_empty()
            && self.migrations.is_empty()
    }
}

/// How far the schema work of an open got, reported after each batch (see
/// [`SchemaSync::reconcile_schema_with_progress`]). The work runs before the engine exists, so
/// nothing can query the store meanwhile: a query never sees a half-built index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchemaProgress {
    /// A new index being built over the stored records.
    IndexBuild {
        /// The table.
        table: String,
        /// The indexed field.
        index: String,
        /// Records indexed so far.
        done: u64,
        /// Records to index.
        total: u64,
    },
    /// A record migration step.
    Migration {
        /// The table.
        table: String,
        /// The version migrated to.
        to_version: u32,
        /// `records`, `outbox` (the table's queued entries, unsent ones rewritten) or `bases`.
        phase: &'static str,
        /// Rows of the phase handled so far (across a crash: a resumed step goes on counting).
        done: u64,
        /// Rows of the phase when it started.
        total: u64,
    },
}

/// Brings a store in step with the schema of a [`LocalDb`] at open: builds and drops indexes,
/// runs record migrations, refuses a changed key, records the schema. Borrowed from
/// [`LocalDb::schema_sync`]. Unlike the other views it works on the store itself, one
/// transaction per batch, because it runs once at open, before anything else reads the store.
#[derive(Debug, Clone, Copy)]
pub struct SchemaSync<'a> {
    pub(super) db: &'a LocalDb,
}

/// Receives [`SchemaProgress`] reports.
pub type SchemaProgressFn = dyn Fn(&SchemaProgress) + Send + Sync;

/// Progress is also logged (tracing, info) at least every this many rows.
pub(super) const LOG_EVERY: u64 = 10_000;

impl SchemaSync<'_> {
    /// Brings `store` in step with this schema (see the module docs) and records the schema.
    /// Call once at open, before anything reads the store.
    pub fn reconcile_schema(
        &self,
        store: &dyn Store,
        migrations: &super::Migrations,
    ) -> Result<SchemaChanges> {
        self.reconcile_schema_with_progress(store, migrations, &|_| {})
    }

    /// [`SchemaSync::reconcile_schema`], reporting each batch of index builds and migrations to
    /// `progress` (on the calling thread, between two transactions).
    pub fn reconcile_schema_with_progress(
        &self,
        store: &dyn Store,
        migrations: &super::Migrations,
        progress: &SchemaProgressFn,
    ) -> Result<SchemaChanges> {
        let stored = match read_stored(store)? {
            Some(stored) => Some(stored),
            None => self.first_record(store)?,
        };
        let mut changes = SchemaChanges::default();
        let mut build: Vec<(&TableSpec, String)> = Vec::new();
        let mut drop: Vec<(String, String)> = Vec::new();
        // (table, the version its stored records have)
        let mut migrate: Vec<(&TableSpec, u32)> = Vec::new();
        {
            let read = store.read()?;
            for spec in self.db.schema.tables() {
                let has_records = read.len(&layout::records(&spec.name))? > 0;
                match stored.as_ref().and_then(|s| s.tables.get(&spec.name)) {
                    Some(before) => {
                        if has_records
                            && (before.key != spec.key || before.key_kind != spec.key_kind)
                        {
                            return Err(key_changed(spec, before));
                        }
                        for field in &spec.indexes {
                            if !before.indexes.contains(field) {
                                build.push((spec, field.clone()));
                            }
                        }
                        for field in &before.indexes {
                            if !spec.indexes.contains(field) {
                                drop.push((spec.name.clone(), field.clone()));
                            }
                        }
                        if has_records && before.version > spec.version {
                            return Err(Error::config(format!(
                                "the store holds version {} of this table, written by a newer \
                                 version of the application; this one declares version {}",
                                before.version, spec.version
                            ))
                            .table(spec.name.clone())
                            .field("version"));
                        }
                        if before.version < spec.version {
                            migrate.push((spec, before.version));
                        }
                    }
                    // A store from before schemas were recorded: which indexes it maintained
                    // is unknown, so every declared one is rebuilt once.
                    None if has_records => {
                        build.extend(spec.indexes.iter().map(|field| (spec, field.clone())));
                        // Written before versions existed: version 0.
                        if spec.version > 0 {
                            migrate.push((spec, 0));
                        }
                    }
                    None => changes.tables_added.push(spec.name.clone()),
                }
            }
        }
        if let Some(stored) = &stored {
            for name in stored.tables.keys() {
                if self.db.schema.table(name).is_err() {
                    changes.tables_not_declared.push(name.clone());
                }
            }
        }
        for (table, field) in drop {
            clear_keyspace(store, &layout::index(&table, &field))?;
            tracing::info!(table = %table, field = %field, "dropped an index no longer declared");
            changes.indexes_dropped.push((table, field));
        }
        for (spec, from_version) in migrate {
            for done in self.migrate_table(store, spec, from_version, migrations, progress)? {
                tracing::info!(table = %done.table, to_version = done.to_version, records = done.records, entries = done.entries, quarantined = done.quarantined, "migrated the stored records");
                changes.migrations.push(done);
            }
        }
        for (spec, field) in build {
            let indexed = self.build_index(store, spec, &field, progress)?;
            tracing::info!(table = %spec.name, field = %field, records = indexed, "built a new index over the stored records");
            changes
                .indexes_built
                .push((spec.name.clone(), field, indexed));
        }
        if !changes.tables_not_declared.is_empty() {
            tracing::warn!(
                tables = ?changes.tables_not_declared,
                "the store holds tables the schema no longer declares; they are kept untouched"
            );
        }
        // Record the schema (tables no longer declared keep their entry: their data is there).
        let mut recorded = stored.unwrap_or_default();
        for spec in self.db.schema.tables() {
            recorded
                .tables
                .insert(spec.name.clone(), StoredTable::of(spec));
        }
        let bytes = serde_json::to_vec(&recorded)
            .map_err(|e| Error::internal(format!("cannot encode the schema record: {e}")))?;
        let mut txn = store.write()?;
        txn.put(layout::META, META_SCHEMA, &bytes)?;
        txn.commit()?;
        Ok(changes)
    }

    /// A store opened for the first time since schemas are recorded: tables that hold records
    /// are recorded as version 0 with no index (so every declared index is built, and every
    /// migration step runs once), and the record is written before any of it starts, so a
    /// crash in between resumes from what is recorded. Returns `None` for an empty store.
    fn first_record(&self, store: &dyn Store) -> Result<Option<StoredSchema>> {
        let mut recorded = StoredSchema::default();
        {
            let read = store.read()?;
            for spec in self.db.schema.tables() {
                if read.len(&layout::records(&spec.name))? > 0 {
                    recorded.tables.insert(
                        spec.name.clone(),
                        StoredTable {
                            indexes: Vec::new(),
                            version: 0,
                            ..StoredTable::of(spec)
                        },
                    );
                }
            }
        }
        if recorded.tables.is_empty() {
            return Ok(None);
        }
        let bytes = serde_json::to_vec(&recorded)
            .map_err(|e| Error::internal(format!("cannot encode the schema record: {e}")))?;
        let mut txn = store.write()?;
        txn.put(layout::META, META_SCHEMA, &bytes)?;
        txn.commit()?;
        Ok(Some(recorded))
    }

    /// Builds `field`'s index of `spec` over the stored records, one batch per transaction.
    /// Returns how many records it indexed.
    fn build_index(
        &self,
        store: &dyn Store,
        spec: &TableSpec,
        field: &str,
        progress: &SchemaProgressFn,
    ) -> Result<u64> {
        let keyspace = layout::index(&spec.name, field);
        clear_keyspace(store, &keyspace)?;
        let records = layout::records(&spec.name);
        let total = store.read()?.len(&records)?;
        let report = |done: u64| {
            progress(&SchemaProgress::IndexBuild {
                table: spec.name.clone(),
                index: field.to_owned(),
                done,
                total,
            })
        };
        report(0);
        let mut after: Option<Vec<u8>> = None;
        let mut indexed = 0u64;
        loop {
            let rows = store.read()?.range(
                &records,
                match &after {
                    Some(key) => Bound::Excluded(key.as_slice()),
                    None => Bound::Unbounded,
                },
                Bound::Unbounded,
                Some(BATCH),
                false,
            )?;
            let Some((last, _)) = rows.last() else {
                return Ok(indexed);
            };
            after = Some(last.clone());
            let mut txn = store.write()?;
            for (key_bytes, value) in &rows {
                let (key, _) = Key::decode(key_bytes)?;
                let record = decode_row(spec, &key, value)?;
                let entry = index_entry(spec, &key, &record, field).map_err(|err| {
                    Error::config(format!(
                        "cannot build the new index: {}; fix or delete the record, or remove the \
                         index from the schema",
                        err.message()
                    ))
                    .table(spec.name.clone())
                    .key(&key)
                    .field(field)
                })?;
                txn.put(&keyspace, &entry, key_bytes)?;
            }
            txn.commit()?;
            let before = indexed;
            indexed += rows.len() as u64;
            report(indexed);
            if before / LOG_EVERY != indexed / LOG_EVERY {
                tracing::info!(table = %spec.name, field, indexed, total, "building an index");
            }
        }
    }
}

/// One table as the store holds it and what opening it with this schema would do, read
/// without changing anything ([`SchemaSync::schema_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSchemaStatus {
    /// The table.
    pub table: String,
    /// The version of the record shape the store holds (`None`: the store has not recorded
    /// this table yet, e.g. a table never opened, or a store from before schemas were
    /// recorded that holds no records of it).
    pub stored_version: Option<u32>,
    /// The version the schema declares (`None`: the table is no longer declared; it is kept).
    pub declared_version: Option<u32>,
    /// The migration steps the next open runs (the versions they migrate to).
    pub pending_migrations: Vec<u32>,
    /// A step a crash cut short, resumed by the next open.
    pub interrupted_migration: Option<u32>,
    /// Indexes the next open builds over the stored records.
    pub indexes_to_build: Vec<String>,
    /// Indexes the next open drops.
    pub indexes_to_drop: Vec<String>,
}

impl SchemaSync<'_> {
    /// Per table (declared ones, then ones the store holds that are no longer declared): the
    /// version the store holds and what [`SchemaSync::reconcile_schema`] would do, read only.
    pub fn schema_status(&self, store: &dyn Store) -> Result<Vec<TableSchemaStatus>> {
        let stored = read_stored(store)?;
        let read = store.read()?;
        let mut out = Vec::new();
        for spec in self.db.schema.tables() {
            let has_records = read.len(&layout::records(&spec.name))? > 0;
            let before = stored
                .as_ref()
                .and_then(|s| s.tables.get(&spec.name))
                .cloned();
            // Unrecorded tables that hold records are treated as version 0 with no index.
            let before = before.or_else(|| {
                has_records.then(|| StoredTable {
                    indexes: Vec::new(),
                    version: 0,
                    ..StoredTable::of(spec)
                })
            });
            let interrupted = read
                .get(layout::META, &super::migrate::progress_key(&spec.name))?
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .and_then(|progress| progress["to_version"].as_u64())
                .and_then(|v| u32::try_from(v).ok());
            let status = match &before {
                Some(before) => TableSchemaStatus {
                    table: spec.name.clone(),
                    stored_version: Some(before.version),
                    declared_version: Some(spec.version),
                    pending_migrations: (before.version + 1..=spec.version).collect(),
                    interrupted_migration: interrupted,
                    indexes_to_build: spec
                        .indexes
                        .iter()
                        .filter(|f| !before.indexes.contains(f))
                        .cloned()
                        .collect(),
                    indexes_to_drop: before
                        .indexes
                        .iter()
                        .filter(|f| !spec.indexes.contains(f))
                        .cloned()
                        .collect(),
                },
                None => TableSchemaStatus {
                    table: spec.name.clone(),
                    stored_version: None,
                    declared_version: Some(spec.version),
                    pending_migrations: Vec::new(),
                    interrupted_migration: None,
                    indexes_to_build: Vec::new(),
                    indexes_to_drop: Vec::new(),
                },
            };
            out.push(status);
        }
        if let Some(stored) = &stored {
            for (name, table) in &stored.tables {
                if self.db.schema.table(name).is_err() {
                    out.push(TableSchemaStatus {
                        table: name.clone(),
                        stored_version: Some(table.version),
                        declared_version: None,
                        pending_migrations: Vec::new(),
                        interrupted_migration: None,
                        indexes_to_build: Vec::new(),
                        indexes_to_drop: Vec::new(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Records, in `txn`, that `table`'s stored records now have shape `version` (the last
    /// transaction of a migration step).
    pub(super) fn record_table_version(
        &self,
        txn: &mut dyn crate::store::WriteTxn,
        table: &str,
        version: u32,
    ) -> Result<()> {
        let Some(bytes) = txn.get(layout::META, META_SCHEMA)? else {
            // No record yet: the record written at the end of this open says it.
            return Ok(());
        };
        let mut recorded: StoredSchema = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("corrupt schema record in store: {e}")))?;
        if let Some(entry) = recorded.tables.get_mut(table) {
            entry.version = version;
        }
        let bytes = serde_json::to_vec(&recorded)
            .map_err(|e| Error::internal(format!("cannot encode the schema record: {e}")))?;
        txn.put(layout::META, META_SCHEMA, &bytes)
    }
}

fn read_stored(store: &dyn Store) -> Result<Option<StoredSchema>> {
    let bytes = store.read()?.get(layout::META, META_SCHEMA)?;
    bytes
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("corrupt schema record in store: {e}")))
        })
        .transpose()
}

fn key_changed(spec: &TableSpec, before: &StoredTable) -> Error {
    Error::config(format!(
        "the store holds this table's records under key `{}` ({:?}), but the schema now says \
         `{}` ({:?}); stored records cannot be read with a different key. Keep the old key, \
         or export the records (`tidesync export`), declare a new table and import them",
        before.key, before.key_kind, spec.key, spec.key_kind
    ))
    .table(spec.name.clone())
    .field("key")
}

/// Deletes every row of `keyspace`, a batch per transaction (so a crash leaves fewer rows, never
/// a half-applied batch); returns how many. Used when a dropped index is removed and when a
/// storage layout upgrade drops a keyspace the new layout does not keep.
pub(super) fn clear_keyspace(store: &dyn Store, keyspace: &str) -> Result<u64> {
    let mut removed = 0;
    loop {
        let mut txn = store.write()?;
        let rows = txn.range(
            keyspace,
            Bound::Unbounded,
            Bound::Unbounded,
            Some(BATCH),
            false,
        )?;
        if rows.is_empty() {
            return Ok(removed);
        }
        for (key, _) in &rows {
            txn.discard(keyspace, key)?;
        }
        txn.commit()?;
        removed += rows.len() as u64;
    }
}
