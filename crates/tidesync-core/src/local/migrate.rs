//! Record migrations (DESIGN invariant 13): when a table's declared `version` is above the
//! version the store last saw, each step's migration runs at open over
//!
//! 1. the stored records (indexes kept in step),
//! 2. the payloads of the table's *unsealed* outbox entries (never sent, not in flight, not
//!    dead): they will be sent in the new shape. Sealed entries keep their bytes: the server
//!    may already have applied them under their idempotency key, and a retry must send
//!    exactly what the first attempt sent.
//! 3. the bases (the last versions both sides agreed on), so a three-way merge compares like
//!    with like.
//!
//! Each batch is one transaction that also records where the step got to, so a crash in the
//! middle resumes where it stopped, and no record is migrated twice. A migration that fails
//! for one record quarantines that record (with the reason; the rest goes on); one that fails
//! for an unsent entry dead-letters that entry (`migration_failed`, editable and retryable).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::outbox::DeadLetterInfo;
use crate::record::{Key, Record};
use crate::spec::TableSpec;
use crate::store::{Store, WriteTxn};

use super::schema_sync::{LOG_EVERY, SchemaProgress, SchemaProgressFn};
use super::{AppliedPage, Base, SchemaSync, decode_row, layout, now_ms};

/// One migration step: the record in the previous shape in, the record in the new shape out
/// (or why it cannot be migrated).
pub type MigrationFn = Arc<dyn Fn(Value) -> std::result::Result<Value, String> + Send + Sync>;

/// The registered migrations, by table and the version each one migrates *to*, and the
/// per-table decoders of records from the server (see [`Migrations::add_decoder`]).
#[derive(Clone, Default)]
pub struct Migrations {
    steps: HashMap<(String, u32), MigrationFn>,
    decoders: HashMap<String, MigrationFn>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut steps: Vec<_> = self.steps.keys().collect();
        steps.sort();
        let mut decoders: Vec<_> = self.decoders.keys().collect();
        decoders.sort();
        f.debug_struct("Migrations")
            .field("steps", &steps)
            .field("decoders", &decoders)
            .finish()
    }
}

impl Migrations {
    /// Registers the step of `table` from version `to_version - 1` to `to_version`.
    pub fn add(&mut self, table: &str, to_version: u32, step: MigrationFn) {
        self.steps.insert((table.to_owned(), to_version), step);
    }

    /// Registers `table`'s decoder of records from the server (pulled, or in a push answer):
    /// it runs first, on the record as the server sent it, and returns the record in a shape
    /// the version steps take from there (it may set the version field). `Err(why)`
    /// quarantines the record with the reason.
    pub fn add_decoder(&mut self, table: &str, decoder: MigrationFn) {
        self.decoders.insert(table.to_owned(), decoder);
    }

    /// The tables that have a migration or a decoder registered.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.steps
            .keys()
            .map(|(table, _)| table.as_str())
            .chain(self.decoders.keys().map(String::as_str))
    }

    pub(super) fn step(&self, table: &str, to_version: u32) -> Option<&MigrationFn> {
        self.steps.get(&(table.to_owned(), to_version))
    }

    pub(super) fn decoder(&self, table: &str) -> Option<&MigrationFn> {
        self.decoders.get(table)
    }
}

/// What the migrations of one open did, for one table and step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationDone {
    /// The table.
    pub table: String,
    /// The version migrated to.
    pub to_version: u32,
    /// Records migrated.
    pub records: u64,
    /// Unsent outbox entries migrated.
    pub entries: u64,
    /// Bases migrated.
    pub bases: u64,
    /// Records the migration refused, quarantined with the reason.
    pub quarantined: u64,
    /// Unsent entries the migration refused, dead-lettered.
    pub dead_lettered: u64,
}

/// Where a step got to (in the meta keyspace, per table), so a crash resumes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    to_version: u32,
    phase: Phase,
    after: Option<Vec<u8>>,
    /// Rows of the phase handled so far.
    #[serde(default)]
    visited: u64,
    done: MigrationDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Records,
    Outbox,
    Bases,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Records => "records",
            Phase::Outbox => "outbox",
            Phase::Bases => "bases",
        }
    }
}

/// Rows per transaction.
const BATCH: usize = 500;

pub(super) fn progress_key(table: &str) -> Vec<u8> {
    format!("migration/{table}").into_bytes()
}

/// The table whose record migration a crash cut short in its outbox phase, if any: that phase
/// walked layout v3's per-record queue index, whose order layout v4 cannot resume from.
pub(super) fn outbox_phase_cut_short(read: &dyn crate::store::ReadTxn) -> Result<Option<String>> {
    for (key, value) in read.scan_prefix(layout::META, b"migration/", None)? {
        let progress: Progress = serde_json::from_slice(&value)
            .map_err(|e| Error::internal(format!("corrupt migration progress: {e}")))?;
        if progress.phase == Phase::Outbox && progress.after.is_some() {
            let table = String::from_utf8_lossy(&key["migration/".len()..]).into_owned();
            return Ok(Some(table));
        }
    }
    Ok(None)
}

impl SchemaSync<'_> {
    /// Runs the steps of `spec` from `from_version` to its declared version (see the module
    /// docs). Fails, changing nothing more, when a step has no registered migration.
    pub(super) fn migrate_table(
        &self,
        store: &dyn Store,
        spec: &TableSpec,
        from_version: u32,
        migrations: &Migrations,
        progress: &SchemaProgressFn,
    ) -> Result<Vec<MigrationDone>> {
        let mut done = Vec::new();
        for to_version in from_version + 1..=spec.version {
            let step = migrations.step(&spec.name, to_version).ok_or_else(|| {
                Error::config(format!(
                    "the store holds version {from_version} of this table and the schema \
                     declares version {}, but no migration to version {to_version} is \
                     registered (EngineBuilder::migration)",
                    spec.version
                ))
                .table(spec.name.clone())
                .field("version")
            })?;
            done.push(self.migrate_step(store, spec, to_version, step, progress)?);
        }
        Ok(done)
    }

    fn migrate_step(
        &self,
        store: &dyn Store,
        spec: &TableSpec,
        to_version: u32,
        step: &MigrationFn,
        report: &SchemaProgressFn,
    ) -> Result<MigrationDone> {
        let key = progress_key(&spec.name);
        let resumed: Option<Progress> = store
            .read()?
            .get(layout::META, &key)?
            .map(|bytes| serde_json::from_slice(&bytes))
            .transpose()
            .map_err(|e| Error::internal(format!("corrupt migration progress: {e}")))?;
        let mut progress = match resumed {
            Some(progress) if progress.to_version == to_version => {
                tracing::info!(table = %spec.name, to_version, "resuming a migration a crash cut short");
                progress
            }
            _ => Progress {
                to_version,
                phase: Phase::Records,
                after: None,
                visited: 0,
                done: MigrationDone {
                    table: spec.name.clone(),
                    to_version,
                    ..MigrationDone::default()
                },
            },
        };
        let mut counted: Option<u64> = None;
        loop {
            let keyspace = match progress.phase {
                Phase::Records => layout::records(&spec.name),
                Phase::Outbox => layout::OUTBOX.to_owned(),
                Phase::Bases => layout::bases(&spec.name),
            };
            let total = match counted {
                Some(total) => total,
                None => {
                    let total = self.phase_total(store, spec, progress.phase, &keyspace)?;
                    counted = Some(total);
                    total
                }
            };
            let rows = self.batch_rows(store, &keyspace, &progress.after)?;
            let mut txn = store.write()?;
            // Rows of this table's phase (the outbox holds every table's entries).
            let mut of_table = 0u64;
            for (row_key, value) in &rows {
                of_table += 1;
                match progress.phase {
                    Phase::Records => self.migrate_record(
                        &mut *txn,
                        spec,
                        row_key,
                        value,
                        step,
                        &mut progress.done,
                    )?,
                    // The outbox in sequence order, this table's entries only.
                    Phase::Outbox => {
                        if super::entry_codec::entry_is_of_table(value, &spec.name)? {
                            let seq = layout::seq_from_suffix(row_key)?;
                            self.migrate_entry(&mut *txn, spec, seq, step, &mut progress.done)?
                        } else {
                            of_table -= 1;
                        }
                    }
                    Phase::Bases => self.migrate_base(
                        &mut *txn,
                        spec,
                        row_key,
                        value,
                        step,
                        &mut progress.done,
                    )?,
                }
            }
            match rows.last() {
                Some((last, _)) => {
                    progress.after = Some(last.clone());
                    let before = progress.visited;
                    progress.visited += of_table;
                    if before / LOG_EVERY != progress.visited / LOG_EVERY {
                        tracing::info!(table = %spec.name, to_version, phase = progress.phase.name(), done = progress.visited, total, "migrating");
                    }
                }
                None => {
                    progress.after = None;
                    progress.visited = 0;
                    progress.phase = match progress.phase {
                        Phase::Records => Phase::Outbox,
                        Phase::Outbox => Phase::Bases,
                        Phase::Bases => {
                            txn.discard(layout::META, &key)?;
                            self.record_table_version(&mut *txn, &spec.name, to_version)?;
                            txn.commit()?;
                            return Ok(progress.done);
                        }
                    };
                }
            }
            let bytes = serde_json::to_vec(&progress)
                .map_err(|e| Error::internal(format!("cannot encode migration progress: {e}")))?;
            txn.put(layout::META, &key, &bytes)?;
            txn.commit()?;
            if rows.is_empty() {
                // The next phase counts its own rows.
                counted = None;
            } else {
                report(&SchemaProgress::Migration {
                    table: spec.name.clone(),
                    to_version,
                    phase: progress.phase.name(),
                    done: progress.visited,
                    total,
                });
            }
        }
    }

    /// The rows of `phase` to go through: the table's records, its queued entries or its
    /// bases.
    fn phase_total(
        &self,
        store: &dyn Store,
        spec: &TableSpec,
        phase: Phase,
        keyspace: &str,
    ) -> Result<u64> {
        let read = store.read()?;
        match phase {
            // Every entry of the table is visited, dead letters too.
            Phase::Outbox => Ok(self.db.outbox().table_seqs(&*read, &spec.name)?.len() as u64),
            Phase::Records | Phase::Bases => read.len(keyspace),
        }
    }

    /// The next batch of a phase's keyspace after `after` (the outbox phase reads the whole
    /// outbox, in sequence order, and skips other tables' entries).
    fn batch_rows(
        &self,
        store: &dyn Store,
        keyspace: &str,
        after: &Option<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let read = store.read()?;
        read.range(
            keyspace,
            match after {
                Some(key) => Bound::Excluded(key.as_slice()),
                None => Bound::Unbounded,
            },
            Bound::Unbounded,
            Some(BATCH),
            false,
        )
    }

    fn migrate_record(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key_bytes: &[u8],
        value: &[u8],
        step: &MigrationFn,
        done: &mut MigrationDone,
    ) -> Result<()> {
        let (key, _) = Key::decode(key_bytes)?;
        let old = decode_row(spec, &key, value)?;
        match run_step(spec, &key, step, &old) {
            Ok(new) => {
                self.db
                    .records()
                    .write_row(txn, spec, &key, Some(&old), Some(&new))?;
                done.records += 1;
            }
            Err(err) => {
                tracing::warn!(table = %spec.name, key = %key, error = %err, "record quarantined by a migration");
                self.db
                    .records()
                    .write_row(txn, spec, &key, Some(&old), None)?;
                let mut sink = AppliedPage::default();
                self.db.parked().quarantine(
                    txn,
                    &spec.name,
                    Some(&key),
                    Some(&old),
                    &err,
                    &mut sink,
                )?;
                done.quarantined += 1;
            }
        }
        Ok(())
    }

    fn migrate_entry(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        seq: u64,
        step: &MigrationFn,
        done: &mut MigrationDone,
    ) -> Result<()> {
        let Some(mut entry) = self.db.outbox().entry(&*txn, seq)? else {
            return Ok(());
        };
        let sealed = entry.attempts > 0 || entry.in_flight || entry.dead.is_some();
        let Some(record) = entry.record.as_ref().filter(|_| !sealed) else {
            return Ok(());
        };
        match run_step(spec, &entry.key, step, record) {
            Ok(new) => {
                entry.record = Some(new);
                self.db.outbox().rewrite(txn, &entry)?;
                done.entries += 1;
            }
            Err(err) => {
                let info = DeadLetterInfo {
                    kind: "migration_failed".into(),
                    error: err.to_string(),
                    status: None,
                    response_excerpt: None,
                    at_ms: now_ms(),
                };
                self.db.outbox().dead_letter(txn, seq, info)?;
                done.dead_lettered += 1;
            }
        }
        Ok(())
    }

    fn migrate_base(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key_bytes: &[u8],
        value: &[u8],
        step: &MigrationFn,
        done: &mut MigrationDone,
    ) -> Result<()> {
        let (key, _) = Key::decode(key_bytes)?;
        let base: Base = match super::base_row::decode(value, &spec.name, &key)? {
            super::base_row::BaseRow::Own(base) => base,
            // The base is the record row, which the records phase migrated already.
            super::base_row::BaseRow::AsRecord(_) => {
                done.bases += 1;
                return Ok(());
            }
        };
        let migrated = match run_step(spec, &key, step, &base.record) {
            Ok(record) => Some(Base {
                record,
                version: base.version,
            }),
            // Without a base a later conflict is decided two-way; never a wrong three-way.
            Err(_) => None,
        };
        self.db
            .records()
            .set_base(txn, &spec.name, &key, migrated.as_ref())?;
        done.bases += 1;
        Ok(())
    }
}

/// Runs one step on one record; the result must be an object with the same key.
fn run_step(spec: &TableSpec, key: &Key, step: &MigrationFn, record: &Record) -> Result<Record> {
    let failed = |why: String| {
        Error::invalid(format!("migration failed: {why}"))
            .table(spec.name.clone())
            .key(key)
    };
    let migrated = step(Value::Object(record.clone())).map_err(failed)?;
    let Value::Object(migrated) = migrated else {
        return Err(failed("it did not return a JSON object".into()));
    };
    if spec.key_of(&migrated)?.as_ref() != Some(key) {
        return Err(failed(format!(
            "it changed or removed the key field `{}`",
            spec.key
        ))
        .field(spec.key.clone()));
    }
    Ok(migrated)
}
