//! What sync does to the local database, each in the caller's transaction: acknowledge a push,
//! apply a pulled page, apply a conflict's resolution, park and settle conflicts, remap ids.
//! None of these create outbox entries except where a resolution must push the outcome
//! (DESIGN invariant 2: no echo).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::conflict::{Conflict, DetectedBy, Resolution};
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::{Op, OutboxEntry};
use crate::record::{Key, Record, changed_fields};
use crate::store::{ReadTxn, WriteTxn};
use crate::transport::{PullPage, PushOutcome};

use super::layout;
use super::settled::Settlement;
use super::{Base, Change, LocalDb, Origin, Staged, now_ms};

/// Keyspace of parked conflicts: table ‖ key → [`ParkedConflict`] JSON.
const PARKED: &str = "x/conflicts";
/// Keyspace of quarantined pulled items: seq → [`Quarantined`] JSON.
pub(super) const QUARANTINE: &str = "q";
/// Meta key of the last quarantine sequence number.
const QUARANTINE_SEQ: &[u8] = b"quarantine_seq";

/// A pulled item that could not be applied (bad key, wrong type …), kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The table.
    pub table: String,
    /// The record key, when it could be read.
    pub key: Option<String>,
    /// Why it was refused (names table, key and field).
    pub error: String,
    /// The start of the item's JSON.
    pub excerpt: String,
    /// When (wall-clock ms).
    pub at_ms: u64,
    /// Its number, to retry or discard it (assigned in order; read from the store).
    #[serde(default)]
    pub seq: u64,
    /// The whole pulled record, to apply it again (`None` for a refused delete, and for items
    /// quarantined before records were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
}

/// A conflict left for the application to settle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedConflict {
    /// The conflict as the strategy saw it (the remote side is refreshed by later pulls).
    pub conflict: Conflict,
    /// The remote version token.
    pub remote_version: Option<String>,
    /// When it was parked (wall-clock ms).
    pub parked_at_ms: u64,
}

/// What acknowledging a push did.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    /// The acknowledged entry.
    pub entry: OutboxEntry,
    /// The local record changed (server-owned fields merged, or key remapped).
    pub changes: Vec<Change>,
    /// `Some((old, new))` when the server assigned a new key.
    pub remapped: Option<(Key, Key)>,
}

/// What the transport knows about a pulled record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteMeta {
    /// Its version token.
    pub version: Option<String>,
    /// When the server last modified it, in *local* clock milliseconds (the server's
    /// timestamp corrected by the measured clock offset), when known.
    pub modified_ms: Option<i64>,
}

/// What applying a pulled page did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedPage {
    /// Changes written to local records.
    pub changes: Vec<Change>,
    /// Remote versions that met pending local changes: to be resolved.
    pub conflicts: Vec<(Conflict, Option<String>)>,
    /// Remote records equal to their base while a local change is pending (no conflict).
    pub unchanged: usize,
    /// Items that could not be applied and were quarantined.
    pub quarantined: Vec<Quarantined>,
}

fn parked_key(table: &str, key: &Key) -> Vec<u8> {
    layout::record_prefix(table, key)
}

/// `(keyspace, old entry, new entry)` of an index whose entry changes.
type IndexChange = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// The writes of [`LocalDb::write_record`], computed without writing.
struct PreparedWrite {
    index: Vec<IndexChange>,
    /// The encoded new record (`None`: delete).
    record: Option<Vec<u8>>,
}

/// Checks and encodes a record write (index entries, size limit) without touching the store.
fn prepare_write(
    spec: &crate::TableSpec,
    key: &Key,
    old: Option<&Record>,
    new: Option<&Record>,
) -> Result<PreparedWrite> {
    let mut index = Vec::new();
    for field in &spec.indexes {
        let old_entry = old
            .map(|r| super::index_entry(spec, key, r, field))
            .transpose()?;
        let new_entry = new
            .map(|r| super::index_entry(spec, key, r, field))
            .transpose()?;
        if old_entry != new_entry {
            index.push((layout::index(&spec.name, field), old_entry, new_entry));
        }
    }
    let record = new
        .map(|r| super::encode_record(spec, key, r))
        .transpose()?;
    Ok(PreparedWrite { index, record })
}

/// The operation a change of a record is: `before` and `after` say whether it exists.
fn change_op(before: bool, after: bool) -> Op {
    match (before, after) {
        (false, _) => Op::Create,
        (true, true) => Op::Update,
        (true, false) => Op::Delete,
    }
}

/// A change made by an id remap.
fn remap_change(table: &str, key: &Key, op: Op, record: Option<Record>) -> Change {
    Change {
        table: table.into(),
        key: key.clone(),
        op,
        record,
        origin: Origin::PushAck,
    }
}

/// Rebases a pending entry's record onto `onto`, a newer version its edit now applies to,
/// and advances `onto` by that edit: an update keeps its changed fields (a route that sends
/// whole records must not send older values of the other fields), a create replaces it all.
fn rebase_entry(onto: &mut Record, entry: &mut OutboxEntry) {
    match (entry.op, entry.record.as_ref()) {
        (Op::Update, Some(record)) => {
            overlay_fields(onto, record, &entry.changed);
            entry.record = Some(onto.clone());
        }
        (Op::Create, Some(record)) => *onto = record.clone(),
        _ => {}
    }
}

/// Gives `onto` the values `from` has for `fields` (a field `from` lacks is removed).
fn overlay_fields<'f>(
    onto: &mut Record,
    from: &Record,
    fields: impl IntoIterator<Item = &'f String>,
) {
    for field in fields {
        match from.get(field) {
            Some(value) => onto.insert(field.clone(), value.clone()),
            None => onto.remove(field),
        };
    }
}

/// Whether `remote` shows what `sent` (an entry that went to the server) wrote: the record
/// gone for a delete; the changed fields (an update), or every field but the key (a create),
/// as sent. Fields the entry did not write may differ (server-owned ones always do).
///
/// A field the update removed counts as shown when the remote lacks it, or when the remote
/// holds a value other than `base`'s: a whole-record replace leaves out the server-owned
/// fields (`updatedAt`, `version`) the local copy had, and the server, which owns them, wrote
/// new values. A remote that still holds the base's value never saw the removal.
fn shows_write(
    sent: &OutboxEntry,
    remote: Option<&Record>,
    base: Option<&Record>,
    key_field: &str,
) -> bool {
    match (sent.op, remote, sent.record.as_ref()) {
        (Op::Delete, None, _) => true,
        (Op::Update, Some(remote), Some(record)) if !sent.changed.is_empty() => {
            sent.changed.iter().all(|field| match record.get(field) {
                Some(value) => remote.get(field) == Some(value),
                None => match (remote.get(field), base) {
                    (None, _) => true,
                    (Some(now), Some(base)) => base.get(field) != Some(now),
                    (Some(_), None) => false,
                },
            })
        }
        (Op::Create | Op::Update, Some(remote), Some(record)) => record
            .iter()
            .filter(|(field, _)| field.as_str() != key_field)
            .all(|(field, value)| remote.get(field) == Some(value)),
        _ => false,
    }
}

/// The JSON of a [`Base`] around an already encoded record: what `serde_json::to_vec(&Base)`
/// writes, without encoding the record a second time.
fn base_bytes(record_json: &[u8], version: Option<&str>) -> Vec<u8> {
    let version = match version {
        Some(v) => serde_json::Value::String(v.to_owned()).to_string(),
        None => "null".to_owned(),
    };
    let mut out = Vec::with_capacity(record_json.len() + version.len() + 24);
    out.extend_from_slice(b"{\"record\":");
    out.extend_from_slice(record_json);
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(version.as_bytes());
    out.push(b'}');
    out
}

impl LocalDb {
    /// Acknowledges a successful push of entry `seq`: drops it, records the server's version
    /// as the base, merges the server's fields into the local record wherever the record was
    /// not edited since the entry was sent, and remaps the key when the server assigned a new
    /// one. One transaction, no outbox entries created.
    pub fn ack_push(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        outcome: &PushOutcome,
    ) -> Result<Acked> {
        let entry = self.remove(txn, seq)?;
        let spec = self.schema.table(&entry.table)?.clone();
        let mut changes = Vec::new();
        if entry.op == Op::Delete {
            self.set_base(txn, &entry.table, &entry.key, None)?;
            return Ok(Acked {
                entry,
                changes,
                remapped: None,
            });
        }
        let sent = entry.record.clone().unwrap_or_default();
        let server = outcome.record.clone();
        let mut base_record = server.clone().unwrap_or_else(|| sent.clone());
        // The base's key field reads like the local key (a server's integer id becomes "7" in a
        // string-key table), so pulled copies compare equal to it.
        base_record.insert(spec.key.clone(), entry.key.to_json());
        let base = Base {
            record: base_record,
            version: outcome.version.clone(),
        };
        self.set_base(txn, &entry.table, &entry.key, Some(&base))?;

        if let Some(server) = &server
            && let Some(local) = self.get(&*txn, &entry.table, &entry.key)?
        {
            {
                let mut merged = local.clone();
                for (field, value) in server {
                    if field == &spec.key {
                        continue; // keys change only through a remap
                    }
                    // A field edited locally since the send keeps the local edit.
                    if local.get(field) == sent.get(field) {
                        merged.insert(field.clone(), value.clone());
                    }
                }
                if merged != local {
                    self.write_record(txn, &spec, &entry.key, Some(&local), Some(&merged))?;
                    changes.push(Change {
                        table: entry.table.clone(),
                        key: entry.key.clone(),
                        op: Op::Update,
                        record: Some(merged),
                        origin: Origin::PushAck,
                    });
                }
            }
        }

        let mut remapped = None;
        if let Some(new_key) = outcome.server_key.clone().filter(|k| k != &entry.key) {
            let new_key = spec
                .normalize_remote_key(new_key)
                .map_err(|e| e.key(&entry.key))?;
            if new_key == entry.key {
                return Ok(Acked {
                    entry,
                    changes,
                    remapped: None,
                });
            }
            changes.extend(self.remap_key(txn, &entry.table, &entry.key, &new_key)?);
            remapped = Some((entry.key.clone(), new_key));
        }
        Ok(Acked {
            entry,
            changes,
            remapped,
        })
    }

    /// Moves a record from `old` to `new` key (server-assigned id): the record, its base, its
    /// pending entries and every declared reference to it in other records and their pending
    /// entries. No outbox entries are created for the rewrite itself.
    pub fn remap_key(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        old: &Key,
        new: &Key,
    ) -> Result<Vec<Change>> {
        let spec = self.schema.table(table)?.clone();
        let key_json = new.to_json();
        let copy = self.get(&*txn, table, new)?;
        let mut changes = match &copy {
            Some(copy) => self.remap_onto_pulled_copy(txn, &spec, old, new, copy)?,
            None => self.move_record(txn, &spec, old, new)?,
        };
        // Edits queued behind the create now edit the pulled copy, if there is one: their
        // records are rebased onto it, so a route that sends whole records does not send the
        // create-time fields over newer ones.
        let mut rebased = copy;
        for mut entry in self.pending(&*txn, table, old)? {
            self.unindex_entry(txn, &entry)?;
            entry.key = new.clone();
            if let Some(onto) = rebased.as_mut() {
                rebase_entry(onto, &mut entry);
            }
            if let Some(record) = entry.record.as_mut() {
                record.insert(spec.key.clone(), key_json.clone());
            }
            self.index_entry(txn, &entry)?;
            self.rewrite(txn, &entry)?;
        }
        // Declared references from other tables.
        let referencing: Vec<(crate::TableSpec, String)> = self
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
                let page = self.scan(&*txn, &other.name, after.as_ref(), 512)?;
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
                    self.write_record(txn, &other, &key, Some(&record), Some(&updated))?;
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
                let page = self.outbox_after(&*txn, &other.name, after_seq, 512)?;
                let Some(last) = page.last() else { break };
                after_seq = Some(last.seq);
                for mut entry in page {
                    if let Some(record) = entry.record.as_mut()
                        && record.get(&field) == Some(&old_json)
                    {
                        record.insert(field.clone(), key_json.clone());
                        self.rewrite(txn, &entry)?;
                    }
                }
            }
        }
        Ok(changes)
    }

    /// The record and its base move from `old` to `new` as they are.
    fn move_record(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        old: &Key,
        new: &Key,
    ) -> Result<Vec<Change>> {
        let table = spec.name.as_str();
        let key_json = new.to_json();
        let mut changes = Vec::new();
        if let Some(mut record) = self.get(&*txn, table, old)? {
            let before = record.clone();
            record.insert(spec.key.clone(), key_json.clone());
            self.write_record(txn, spec, old, Some(&before), None)?;
            self.write_record(txn, spec, new, None, Some(&record))?;
            changes.push(remap_change(table, old, Op::Delete, None));
            changes.push(remap_change(table, new, Op::Create, Some(record)));
        }
        if let Some(mut base) = self.base(&*txn, table, old)? {
            base.record.insert(spec.key.clone(), key_json);
            self.set_base(txn, table, old, None)?;
            self.set_base(txn, table, new, Some(&base))?;
        }
        Ok(changes)
    }

    /// A pull already brought the server's copy of the record under `new` (its create
    /// committed but the answer came later). That copy was pulled after the create committed,
    /// so it is at least as new as the create's answer: it stays, with its base and its own
    /// pending edits, and the local edits queued behind the create under `old` are applied to
    /// it (their entries move to `new` afterwards, in `remap_key`).
    fn remap_onto_pulled_copy(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        old: &Key,
        new: &Key,
        copy: &Record,
    ) -> Result<Vec<Change>> {
        let table = spec.name.as_str();
        let queued = self.pending(&*txn, table, old)?;
        let local = self.get(&*txn, table, old)?;
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
            self.write_record(txn, spec, old, local.as_ref(), None)?;
            changes.push(remap_change(table, old, Op::Delete, None));
        }
        self.set_base(txn, table, old, None)?;
        if merged.as_ref() != Some(copy) {
            self.write_record(txn, spec, new, Some(copy), merged.as_ref())?;
            let op = if merged.is_some() {
                Op::Update
            } else {
                Op::Delete
            };
            changes.push(remap_change(table, new, op, merged));
        }
        Ok(changes)
    }

    /// Applies one pulled page and stores its cursor, in the caller's transaction. Remote
    /// records that meet a pending local change (or a parked conflict) are not applied but
    /// returned as conflicts; a remote record equal to its base is no conflict.
    pub fn apply_pull_page(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        page: &PullPage,
        remote_meta: &dyn Fn(&Record) -> RemoteMeta,
    ) -> Result<AppliedPage> {
        self.apply_page(
            txn,
            table,
            page.records.iter().map(Cow::Borrowed),
            &page.deleted,
            page.cursor.as_ref(),
            remote_meta,
        )
    }

    /// [`Self::apply_pull_page`] taking the page by value: applied records move into the
    /// returned changes instead of being copied.
    pub fn apply_pull_page_owned(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        page: PullPage,
        remote_meta: &dyn Fn(&Record) -> RemoteMeta,
    ) -> Result<AppliedPage> {
        self.apply_page(
            txn,
            table,
            page.records.into_iter().map(Cow::Owned),
            &page.deleted,
            page.cursor.as_ref(),
            remote_meta,
        )
    }

    pub(super) fn apply_page<'p>(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        records: impl Iterator<Item = Cow<'p, Record>>,
        deleted: &[Key],
        cursor: Option<&serde_json::Value>,
        remote_meta: &dyn Fn(&Record) -> RemoteMeta,
    ) -> Result<AppliedPage> {
        let spec = self.schema.table(table)?.clone();
        let mut applied = AppliedPage::default();
        let quiet = self
            .is_quiet(&*txn, table)?
            .then(|| (layout::records(table), layout::bases(table)));
        for mut remote in records {
            let key = match spec.remote_key_of(&remote) {
                Ok(Some(key)) => key,
                Ok(None) => {
                    let err = Error::new(ErrorKind::Decode, "pulled record has no key")
                        .table(table)
                        .field(spec.key.clone());
                    self.quarantine(txn, table, None, Some(&remote), &err, &mut applied)?;
                    continue;
                }
                Err(err) => {
                    let err = Error::new(ErrorKind::Decode, err.message().to_owned())
                        .table(table)
                        .field(spec.key.clone());
                    self.quarantine(txn, table, None, Some(&remote), &err, &mut applied)?;
                    continue;
                }
            };
            let meta = remote_meta(&remote);
            // Store the key field as the key reads (an integer id in a string-key table is
            // kept as "7"), so every later read sees a well-formed record.
            let key_json = key.to_json();
            if remote.get(&spec.key) != Some(&key_json) {
                remote.to_mut().insert(spec.key.clone(), key_json);
            }
            if let Some(keyspaces) = &quiet {
                self.apply_remote_quiet(
                    txn,
                    keyspaces,
                    &spec,
                    &key,
                    Some(remote),
                    meta.version,
                    &mut applied,
                )?;
                continue;
            }
            self.apply_remote_isolated(
                txn,
                &spec,
                &key,
                Some(&remote),
                meta.version,
                meta.modified_ms,
                &mut applied,
            )?;
        }
        for key in deleted {
            if let Err(err) = spec.check_key(key) {
                let err = Error::new(ErrorKind::Decode, err.message().to_owned())
                    .table(table)
                    .key(key);
                self.quarantine(txn, table, Some(key), None, &err, &mut applied)?;
                continue;
            }
            if let Some(keyspaces) = &quiet {
                self.apply_remote_quiet(txn, keyspaces, &spec, key, None, None, &mut applied)?;
                continue;
            }
            self.apply_remote_isolated(txn, &spec, key, None, None, None, &mut applied)?;
        }
        self.set_checkpoint(txn, table, cursor)?;
        Ok(applied)
    }

    /// Whether `table` has neither pending entries nor parked conflicts. Applying a page
    /// creates neither (pulls never enqueue; parking needs an existing parked conflict), so
    /// this holds for the whole page once it holds at its start, and each record can skip
    /// reading its base, its queue and its parked key.
    fn is_quiet(&self, txn: &dyn ReadTxn, table: &str) -> Result<bool> {
        let prefix = layout::table_prefix(table);
        Ok(txn
            .scan_prefix(layout::OUTBOX_BY_RECORD, &prefix, Some(1))?
            .is_empty()
            && txn.scan_prefix(PARKED, &prefix, Some(1))?.is_empty())
    }

    /// [`Self::apply_remote`] for a table that [`Self::is_quiet`]: the remote version becomes
    /// the local one and the base. Everything that can refuse the record runs before the
    /// first write, so a refused record is quarantined with nothing written and needs no
    /// sub-transaction. `keyspaces` are the table's records and bases keyspaces.
    #[allow(clippy::too_many_arguments)]
    fn apply_remote_quiet(
        &self,
        txn: &mut dyn WriteTxn,
        keyspaces: &(String, String),
        spec: &crate::TableSpec,
        key: &Key,
        remote: Option<Cow<'_, Record>>,
        version: Option<String>,
        applied: &mut AppliedPage,
    ) -> Result<()> {
        let (records, bases) = keyspaces;
        let table = spec.name.as_str();
        let key_bytes = key.encode();
        let local = txn
            .get(records, &key_bytes)?
            .map(|bytes| super::decode_record(spec, key, &bytes))
            .transpose()?;
        let mut encoded = None;
        let changed = local.as_ref() != remote.as_deref();
        if changed {
            let prepared = match prepare_write(spec, key, local.as_ref(), remote.as_deref()) {
                Ok(prepared) => prepared,
                Err(err) if matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Decode) => {
                    return self.quarantine(
                        txn,
                        table,
                        Some(key),
                        remote.as_deref(),
                        &err,
                        applied,
                    );
                }
                Err(err) => return Err(err),
            };
            for (keyspace, old, new) in &prepared.index {
                if let Some(old) = old {
                    txn.delete(keyspace, old)?;
                }
                if let Some(new) = new {
                    txn.put(keyspace, new, &key_bytes)?;
                }
            }
            match &prepared.record {
                Some(bytes) => txn.put(records, &key_bytes, bytes)?,
                None => {
                    txn.delete(records, &key_bytes)?;
                }
            }
            encoded = prepared.record;
        }
        match &remote {
            Some(record) => {
                let record = match encoded {
                    Some(bytes) => bytes,
                    None => serde_json::to_vec(record).map_err(|e| {
                        Error::internal(format!("cannot encode base: {e}"))
                            .table(table)
                            .key(key)
                    })?,
                };
                txn.put(bases, &key_bytes, &base_bytes(&record, version.as_deref()))?;
            }
            None => {
                txn.delete(bases, &key_bytes)?;
            }
        }
        if changed {
            applied.changes.push(Change {
                table: table.into(),
                key: key.clone(),
                op: change_op(local.is_some(), remote.is_some()),
                record: remote.map(Cow::into_owned),
                origin: Origin::Pull,
            });
        }
        Ok(())
    }

    /// Applies one remote version in a sub-transaction: a record that cannot be stored (e.g. a
    /// non-scalar value in an indexed field) is quarantined alone; the page goes on.
    #[allow(clippy::too_many_arguments)]
    fn apply_remote_isolated(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        key: &Key,
        remote: Option<&Record>,
        version: Option<String>,
        remote_time_ms: Option<i64>,
        applied: &mut AppliedPage,
    ) -> Result<()> {
        let mut staged = Staged::new(txn);
        let mut scratch = AppliedPage::default();
        match self.apply_remote(
            &mut staged,
            spec,
            key,
            remote,
            version,
            remote_time_ms,
            &mut scratch,
        ) {
            Ok(()) => {
                staged.apply()?;
                applied.changes.extend(scratch.changes);
                applied.conflicts.extend(scratch.conflicts);
                applied.unchanged += scratch.unchanged;
                Ok(())
            }
            Err(err) if matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Decode) => {
                drop(staged);
                self.quarantine(txn, &spec.name, Some(key), remote, &err, applied)
            }
            Err(err) => Err(err),
        }
    }

    pub(super) fn quarantine(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: Option<&Key>,
        remote: Option<&Record>,
        err: &Error,
        applied: &mut AppliedPage,
    ) -> Result<()> {
        let excerpt = remote
            .map(|r| {
                let text = serde_json::to_string(r).unwrap_or_default();
                text.chars().take(512).collect::<String>()
            })
            .unwrap_or_default();
        let item = Quarantined {
            table: table.to_owned(),
            key: key.map(|k| k.to_string()),
            error: err.to_string(),
            excerpt,
            at_ms: now_ms(),
            seq: 0,
            record: remote.cloned(),
        };
        tracing::warn!(table, key = ?item.key, error = %item.error, "record quarantined");
        let seq = match txn.get(layout::META, QUARANTINE_SEQ)? {
            Some(bytes) => super::read_u64(&bytes)? + 1,
            None => 1,
        };
        txn.put(layout::META, QUARANTINE_SEQ, &seq.to_be_bytes())?;
        let item = Quarantined { seq, ..item };
        let bytes = serde_json::to_vec(&item)
            .map_err(|e| Error::internal(format!("cannot encode quarantined item: {e}")))?;
        txn.put(QUARANTINE, &seq.to_be_bytes(), &bytes)?;
        applied.quarantined.push(item);
        Ok(())
    }

    /// Pulled items that could not be applied (newest last), at most `limit`.
    pub fn quarantined(&self, txn: &dyn ReadTxn, limit: usize) -> Result<Vec<Quarantined>> {
        txn.range(
            QUARANTINE,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            Some(limit),
            false,
        )?
        .iter()
        .map(|(k, v)| super::quarantine_ops::decode_quarantined(k, v))
        .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_remote(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        key: &Key,
        remote: Option<&Record>,
        version: Option<String>,
        remote_time_ms: Option<i64>,
        applied: &mut AppliedPage,
    ) -> Result<()> {
        let table = spec.name.as_str();
        let local = self.get(&*txn, table, key)?;
        let base = self.base(&*txn, table, key)?;
        let pending = self.pending(&*txn, table, key)?;
        let parked = txn.get(PARKED, &parked_key(table, key))?;
        if pending.is_empty() && parked.is_none() {
            // Nothing local in the way: the remote version becomes the local one and the base.
            if local.as_ref() != remote {
                self.write_record(txn, spec, key, local.as_ref(), remote)?;
                applied.changes.push(Change {
                    table: table.into(),
                    key: key.clone(),
                    op: change_op(local.is_some(), remote.is_some()),
                    record: remote.cloned(),
                    origin: Origin::Pull,
                });
            }
            let base = remote.map(|r| Base {
                record: r.clone(),
                version,
            });
            self.set_base(txn, table, key, base.as_ref())?;
            return Ok(());
        }
        if base.as_ref().map(|b| &b.record) == remote {
            applied.unchanged += 1; // the server still has what we based our edit on
            return Ok(());
        }
        if parked.is_none() && local.as_ref() == remote {
            // Both sides already agree: no conflict, nothing left to push.
            for entry in &pending {
                self.remove(txn, entry.seq)?;
            }
            let base = remote.map(|r| Base {
                record: r.clone(),
                version,
            });
            self.set_base(txn, table, key, base.as_ref())?;
            applied.unchanged += 1;
            return Ok(());
        }
        if parked.is_none()
            && let Some(head) = pending.first()
            && head.attempts > 0
            && head.dead.as_ref().is_none_or(|d| d.may_have_been_applied())
            && shows_write(head, remote, base.as_ref().map(|b| &b.record), &spec.key)
        {
            // The server shows what our head entry, already sent, wrote: most likely the echo
            // of a write whose answer was lost (or could not be read: then it was even
            // dead-lettered). That is no remote change to resolve against the edits queued
            // behind it, and the head counts as acknowledged.
            if head.in_flight {
                applied.unchanged += 1; // its answer, on its way, settles it
            } else {
                self.settle_echo(txn, spec, key, local, &pending, remote, version, applied)?;
            }
            return Ok(());
        }
        if remote.is_none() && base.is_none() {
            return Ok(()); // deleted remotely, never known here: our pending create decides
        }
        let local_hlc = pending.last().map(|e| e.hlc).unwrap_or(0);
        let detected_by = if remote.is_none() {
            DetectedBy::RemoteDelete
        } else if local.is_none() {
            DetectedBy::LocalDelete
        } else {
            DetectedBy::Pull
        };
        let conflict = Conflict {
            table: table.into(),
            key: key.clone(),
            base: base.map(|b| b.record),
            local,
            remote: remote.cloned(),
            detected_by,
            local_hlc,
            remote_time_ms,
        };
        if parked.is_some() {
            // Keep the parked conflict current; the application settles it later.
            self.park(txn, &conflict, version)?;
            return Ok(());
        }
        applied.conflicts.push((conflict, version));
        Ok(())
    }

    /// A pulled version that shows the write of `pending[0]` (sent, not in flight, perhaps
    /// dead-lettered on an answer that came after the server applied it): that entry counts
    /// as acknowledged and the version becomes the base. The entries behind it stay,
    /// rebased onto it, and the local record takes the version's other fields (server-owned
    /// ones, another client's edits of fields no pending entry touches).
    #[allow(clippy::too_many_arguments)]
    fn settle_echo(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &crate::TableSpec,
        key: &Key,
        local: Option<Record>,
        pending: &[OutboxEntry],
        remote: Option<&Record>,
        version: Option<String>,
        applied: &mut AppliedPage,
    ) -> Result<()> {
        let table = spec.name.as_str();
        self.remove(txn, pending[0].seq)?;
        let base = remote.map(|r| Base {
            record: r.clone(),
            version,
        });
        self.set_base(txn, table, key, base.as_ref())?;
        let queued = &pending[1..];
        let merged = match remote {
            _ if queued.is_empty() => remote.cloned(),
            // A re-create (or a delete) behind it: the local record is the application's.
            Some(remote) if queued.iter().all(|e| e.op == Op::Update) => {
                let mut onto = remote.clone();
                for entry in queued {
                    let mut entry = entry.clone();
                    rebase_entry(&mut onto, &mut entry);
                    self.rewrite(txn, &entry)?;
                }
                Some(onto)
            }
            _ => local.clone(),
        };
        if merged != local {
            self.write_record(txn, spec, key, local.as_ref(), merged.as_ref())?;
            applied.changes.push(Change {
                table: table.into(),
                key: key.clone(),
                op: change_op(local.is_some(), merged.is_some()),
                record: merged,
                origin: Origin::Pull,
            });
        } else {
            applied.unchanged += 1;
        }
        Ok(())
    }

    /// Applies a conflict's resolution in one transaction: rewrites the local record, the
    /// base and the pending entries. Take-remote drops pending entries; keep-local and merged
    /// replace them with one entry pushing the outcome against the remote version.
    pub fn apply_resolution(
        &self,
        txn: &mut dyn WriteTxn,
        conflict: &Conflict,
        remote_version: Option<String>,
        resolution: &Resolution,
    ) -> Result<Vec<Change>> {
        let spec = self.schema.table(&conflict.table)?.clone();
        let (table, key) = (conflict.table.as_str(), &conflict.key);
        if let Resolution::Park = resolution {
            self.park(txn, conflict, remote_version)?;
            return Ok(Vec::new());
        }
        txn.delete(PARKED, &parked_key(table, key))?;
        let current = self.get(&*txn, table, key)?;
        let decided: Option<Record> = match resolution {
            Resolution::TakeRemote => conflict.remote.clone(),
            Resolution::KeepLocal => current.clone(),
            Resolution::Merged(record) => {
                let mut record = record.clone();
                record.insert(spec.key.clone(), key.to_json());
                Some(record)
            }
            Resolution::Park => None, // handled above
        };
        // A local write committed while the strategy was deciding (the record is no longer
        // the `local` it decided on) is kept on top of the outcome and pushed, instead of
        // being thrown away with the entries the decision settled (BUG-12).
        let later_write = !matches!(resolution, Resolution::KeepLocal) && current != conflict.local;
        let outcome = if later_write {
            rebase_later_write(conflict.local.as_ref(), current.as_ref(), decided)
        } else {
            decided
        };
        let settled = self.pending(&*txn, table, key)?;
        for entry in &settled {
            self.remove_raw(txn, entry.seq)?;
        }
        let base = conflict.remote.clone().map(|record| Base {
            record,
            version: remote_version,
        });
        self.set_base(txn, table, key, base.as_ref())?;
        let mut changes = Vec::new();
        if current != outcome {
            self.write_record(txn, &spec, key, current.as_ref(), outcome.as_ref())?;
            changes.push(Change {
                table: table.into(),
                key: key.clone(),
                op: match (&current, &outcome) {
                    (None, _) => Op::Create,
                    (_, None) => Op::Delete,
                    _ => Op::Update,
                },
                record: outcome.clone(),
                origin: Origin::Resolution,
            });
        }
        let mut follow_up = None;
        if (later_write || !matches!(resolution, Resolution::TakeRemote)) && spec.push {
            // Push the outcome against the remote version.
            let change = match (&conflict.remote, &outcome) {
                (Some(remote), Some(out)) if remote != out => Some(crate::outbox::LocalChange {
                    op: Op::Update,
                    record: Some(out.clone()),
                    changed: changed_fields(remote, out),
                }),
                (None, Some(out)) => Some(crate::outbox::LocalChange {
                    op: Op::Create,
                    record: Some(out.clone()),
                    changed: Vec::new(),
                }),
                (Some(remote), None) => Some(crate::outbox::LocalChange {
                    op: Op::Delete,
                    record: Some(remote.clone()),
                    changed: Vec::new(),
                }),
                _ => None,
            };
            if let Some(change) = change {
                let stamp = self.clock.now();
                follow_up = self.enqueue(txn, &spec, key, &change, stamp.0)?;
            }
        }
        // The settled entries' receipts: resolved through this conflict (and followed by the
        // entry pushing the outcome, if any).
        for entry in &settled {
            let settlement = Settlement::Conflict {
                resolution: resolution.as_str().to_owned(),
                follow_up,
            };
            self.record_settlement(txn, entry, settlement)?;
        }
        Ok(changes)
    }

    /// Applies the resolutions of many conflicts (a pulled page's) in the caller's
    /// transaction, in order, each exactly as [`Self::apply_resolution`] would in a
    /// transaction of its own. A resolution the store refuses (invalid or undecodable input)
    /// is left out alone and its error returned; the others still apply.
    pub fn apply_resolutions(
        &self,
        txn: &mut dyn WriteTxn,
        resolved: &[(Conflict, Option<String>, Resolution)],
    ) -> Result<(Vec<Change>, Vec<Error>)> {
        let mut changes = Vec::new();
        let mut refused = Vec::new();
        for (conflict, remote_version, resolution) in resolved {
            let mut staged = Staged::new(txn);
            match self.apply_resolution(&mut staged, conflict, remote_version.clone(), resolution) {
                Ok(applied) => {
                    staged.apply()?;
                    changes.extend(applied);
                }
                Err(err) if matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Decode) => {
                    refused.push(err.table(conflict.table.clone()).key(&conflict.key));
                }
                Err(err) => return Err(err),
            }
        }
        Ok((changes, refused))
    }

    fn park(
        &self,
        txn: &mut dyn WriteTxn,
        conflict: &Conflict,
        remote_version: Option<String>,
    ) -> Result<()> {
        let parked = ParkedConflict {
            conflict: conflict.clone(),
            remote_version,
            parked_at_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&parked)
            .map_err(|e| Error::internal(format!("cannot encode conflict: {e}")))?;
        txn.put(PARKED, &parked_key(&conflict.table, &conflict.key), &bytes)
    }

    /// Conflicts parked for the application, optionally of one table.
    pub fn parked_conflicts(
        &self,
        txn: &dyn ReadTxn,
        table: Option<&str>,
    ) -> Result<Vec<ParkedConflict>> {
        let rows = match table {
            Some(table) => txn.scan_prefix(PARKED, &layout::table_prefix(table), None)?,
            None => txn.range(
                PARKED,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                None,
                false,
            )?,
        };
        rows.iter()
            .map(|(_, v)| {
                serde_json::from_slice(v)
                    .map_err(|e| Error::internal(format!("corrupt parked conflict: {e}")))
            })
            .collect()
    }

    /// The parked conflict of one record, if any.
    pub fn parked_conflict(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        key: &Key,
    ) -> Result<Option<ParkedConflict>> {
        txn.get(PARKED, &parked_key(table, key))?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt parked conflict: {e}")))
            })
            .transpose()
    }

    /// Whether the record has a parked conflict (its pending entries then wait).
    pub fn is_parked(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<bool> {
        Ok(txn.get(PARKED, &parked_key(table, key))?.is_some())
    }

    fn unindex_entry(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        let mut by_record = layout::record_prefix(&entry.table, &entry.key);
        by_record.extend_from_slice(&layout::seq_bytes(entry.seq));
        txn.delete(layout::OUTBOX_BY_RECORD, &by_record).map(|_| ())
    }

    fn index_entry(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        let mut by_record = layout::record_prefix(&entry.table, &entry.key);
        by_record.extend_from_slice(&layout::seq_bytes(entry.seq));
        txn.put(layout::OUTBOX_BY_RECORD, &by_record, &[])
    }
}

/// The outcome of a conflict with the local writes made after the decision on top: the
/// fields those writes changed (from the `decided_on` local to the `current` record) are
/// copied onto the outcome; a later delete wins; a later re-create of a record decided gone
/// stands as written.
fn rebase_later_write(
    decided_on: Option<&Record>,
    current: Option<&Record>,
    outcome: Option<Record>,
) -> Option<Record> {
    let current = current?;
    let Some(mut outcome) = outcome else {
        return Some(current.clone());
    };
    let empty = Record::new();
    for field in changed_fields(decided_on.unwrap_or(&empty), current) {
        match current.get(&field) {
            Some(value) => {
                outcome.insert(field, value.clone());
            }
            None => {
                outcome.remove(&field);
            }
        }
    }
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::hlc::HybridClock;
    use crate::local::test_txn::MapTxn;
    use crate::local::{Schema, WriteOp};

    fn db() -> LocalDb {
        let schema = Schema::new([crate::TableSpec::new("posts").index("rank")])
            .unwrap_or_else(|e| panic!("{e}"));
        LocalDb::new(schema, Arc::new(HybridClock::new()))
    }

    fn rec(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => Record::new(),
        }
    }

    fn key(s: &str) -> Key {
        Key::Str(s.to_owned())
    }

    fn meta(r: &Record) -> RemoteMeta {
        RemoteMeta {
            version: r.get("v").map(|v| v.to_string()),
            modified_ms: None,
        }
    }

    /// A page with a create, an update, an unchanged record, a bad record (object in an
    /// indexed field), a delete and a delete of an unknown key.
    fn page() -> PullPage {
        PullPage {
            records: vec![
                rec(json!({"id": "a", "rank": 1, "v": 1})),
                rec(json!({"id": "b", "rank": 5, "v": 2})),
                rec(json!({"id": "c", "rank": 3, "v": 1})),
                rec(json!({"id": "bad", "rank": {"x": 1}})),
            ],
            deleted: vec![key("d"), key("nope")],
            cursor: Some(json!("c1")),
            has_more: false,
            server_time_ms: None,
            total: None,
        }
    }

    /// Records b, c, d as pulled earlier, plus `extra` (a record with a pending local edit
    /// when `pending`).
    fn seeded(db: &LocalDb, pending: bool) -> MapTxn {
        let mut txn = MapTxn::default();
        let earlier = PullPage {
            records: vec![
                rec(json!({"id": "b", "rank": 2, "v": 1})),
                rec(json!({"id": "c", "rank": 3, "v": 1})),
                rec(json!({"id": "d", "rank": 4, "v": 1})),
                rec(json!({"id": "extra", "rank": 9, "v": 1})),
            ],
            ..PullPage::default()
        };
        db.apply_pull_page(&mut txn, "posts", &earlier, &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        if pending {
            db.apply_local(
                &mut txn,
                &[WriteOp::Update {
                    table: "posts".into(),
                    key: key("extra"),
                    patch: json!({"title": "local"}),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        txn
    }

    fn without(txn: &MapTxn, skip: &[&str]) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
        txn.0
            .iter()
            .filter(|((ks, _), _)| !skip.iter().any(|s| ks.starts_with(s)))
            .filter(|((_, k), _)| {
                !(k.windows(5).any(|w| w == b"extra") || k.windows(9).any(|w| w == b"quarantin"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Record `a` synced at `v` 1, then edited to `v` 2 (that entry sent: in flight) and to
    /// `title` "x" (queued behind it). Returns the transaction and the sent entry's seq.
    fn sent_head_with_an_edit_behind(db: &LocalDb) -> (MapTxn, u64) {
        let mut txn = MapTxn::default();
        let synced = PullPage {
            records: vec![rec(json!({"id": "a", "v": 1}))],
            ..PullPage::default()
        };
        db.apply_pull_page(&mut txn, "posts", &synced, &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        let update = |txn: &mut MapTxn, patch: Value| {
            db.apply_local(
                txn,
                &[WriteOp::Update {
                    table: "posts".into(),
                    key: key("a"),
                    patch,
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        };
        update(&mut txn, json!({"v": 2}));
        let head = db.outbox(&txn, None, 10).unwrap_or_else(|e| panic!("{e}"))[0].seq;
        db.mark_in_flight(&mut txn, head)
            .unwrap_or_else(|e| panic!("{e}"));
        update(&mut txn, json!({"title": "x"}));
        (txn, head)
    }

    /// A pulled version showing what a sent head entry wrote (its answer lost) settles it and
    /// keeps the edit behind it; a version that differs in what the head wrote is a conflict.
    #[test]
    fn the_echo_of_a_sent_head_settles_it_and_a_different_version_conflicts() {
        let db = db();
        let (mut txn, head) = sent_head_with_an_edit_behind(&db);
        db.retry_later(&mut txn, head, 0, "answer lost")
            .unwrap_or_else(|e| panic!("{e}"));
        let page = |record: Value| PullPage {
            records: vec![rec(record)],
            ..PullPage::default()
        };

        let mut other = txn.clone();
        let applied = db
            .apply_pull_page(
                &mut other,
                "posts",
                &page(json!({"id": "a", "v": 3})),
                &meta,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.conflicts.len(), 1, "v 3 is not what the head wrote");

        let echo = json!({"id": "a", "v": 2, "srv": 1});
        let applied = db
            .apply_pull_page(&mut txn, "posts", &page(echo.clone()), &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(applied.conflicts.is_empty());
        let want = rec(json!({"id": "a", "v": 2, "srv": 1, "title": "x"}));
        assert_eq!(
            db.get(&txn, "posts", &key("a")).ok().flatten(),
            Some(want.clone())
        );
        let base = db.base(&txn, "posts", &key("a")).ok().flatten();
        assert_eq!(base.map(|b| b.record), Some(rec(echo)));
        let queued = db
            .pending(&txn, "posts", &key("a"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            queued.len(),
            1,
            "the head is settled, the edit behind it stays"
        );
        assert_eq!(queued[0].changed, vec!["title".to_owned()]);
        assert_eq!(queued[0].record, Some(want));
    }

    /// A head dead-lettered on a 2xx whose body did not decode was applied by the server: the
    /// pulled version showing it settles the dead letter and frees the edit parked behind it.
    /// A head the server refused (a 4xx) is still a conflict.
    #[test]
    fn the_echo_of_a_dead_lettered_head_the_server_applied_settles_it() {
        use crate::outbox::DeadLetterInfo;
        let db = db();
        let (txn, head) = sent_head_with_an_edit_behind(&db);
        let echo = PullPage {
            records: vec![rec(json!({"id": "a", "v": 2}))],
            ..PullPage::default()
        };
        for (kind, status, settles) in [("decode", 200, true), ("permanent", 422, false)] {
            let mut txn = txn.clone();
            let info = DeadLetterInfo {
                kind: kind.into(),
                error: "e".into(),
                status: Some(status),
                response_excerpt: None,
                at_ms: 0,
            };
            db.dead_letter(&mut txn, head, info)
                .unwrap_or_else(|e| panic!("{e}"));
            let applied = db
                .apply_pull_page(&mut txn, "posts", &echo, &meta)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(applied.conflicts.is_empty(), settles, "{kind} {status}");
            let dead = db
                .dead_letters(&txn, None)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(dead.is_empty(), settles, "{kind} {status}: {dead:?}");
            if settles {
                let queued = db
                    .pending(&txn, "posts", &key("a"))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(queued.len(), 1);
                assert_eq!(queued[0].changed, vec!["title".to_owned()]);
            }
        }
    }

    /// A table waits to be pulled while a create was sent and the server may have applied it:
    /// in flight or waiting to retry, or dead-lettered on an answer that came after a commit;
    /// not before it is sent, not after a refusal, not once acknowledged.
    #[test]
    fn a_sent_create_the_server_may_have_applied_holds_back_pulls() {
        use crate::outbox::DeadLetterInfo;
        let db = db();
        let mut txn = MapTxn::default();
        let waits = |txn: &MapTxn| {
            db.has_unacknowledged_create(txn, "posts")
                .unwrap_or_else(|e| panic!("{e}"))
        };
        db.apply_local(
            &mut txn,
            &[WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "tmp", "v": 1}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let seq = db.outbox(&txn, None, 10).unwrap_or_else(|e| panic!("{e}"))[0].seq;
        assert!(!waits(&txn), "not sent yet");
        db.mark_in_flight(&mut txn, seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(waits(&txn), "in flight");
        db.retry_later(&mut txn, seq, 0, "timeout")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(waits(&txn), "waiting to retry");
        let dead = |kind: &str, status: Option<u16>| DeadLetterInfo {
            kind: kind.into(),
            error: "e".into(),
            status,
            response_excerpt: None,
            at_ms: 0,
        };
        for (info, applied) in [
            (dead("decode", Some(200)), true),
            (dead("retries_exhausted", Some(503)), true),
            (dead("ack_failed", Some(201)), true),
            (dead("permanent", Some(422)), false),
            (dead("decode", Some(400)), false),
        ] {
            let mut dead_txn = txn.clone();
            db.dead_letter(&mut dead_txn, seq, info.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(waits(&dead_txn), applied, "{info:?}");
        }
        let answer = PushOutcome::default();
        db.ack_push(&mut txn, seq, &answer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!waits(&txn), "acknowledged");
    }

    /// A create whose answer was lost is pulled under its server id (with a server edit) while
    /// the application edits the temporary record; the replayed answer then remaps the record
    /// onto the pulled copy: the copy's newer fields, its base and the local edit all survive.
    #[test]
    fn a_remap_onto_a_pulled_copy_keeps_the_copy_and_the_queued_edit() {
        let db = db();
        let mut txn = MapTxn::default();
        let put = |txn: &mut MapTxn, op: WriteOp| {
            db.apply_local(txn, &[op]).unwrap_or_else(|e| panic!("{e}"));
        };
        put(
            &mut txn,
            WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "tmp", "cid": "c1", "v": 1, "title": "t"}),
            },
        );
        let create = db.outbox(&txn, None, 10).unwrap_or_else(|e| panic!("{e}"))[0].clone();
        db.mark_in_flight(&mut txn, create.seq)
            .unwrap_or_else(|e| panic!("{e}"));
        put(
            &mut txn,
            WriteOp::Update {
                table: "posts".into(),
                key: key("tmp"),
                patch: json!({"v": 2}),
            },
        );
        let pulled = PullPage {
            records: vec![rec(
                json!({"id": "7", "cid": "c1", "v": 1, "title": "t", "srv": 9, "version": 2}),
            )],
            ..PullPage::default()
        };
        let version = |r: &Record| RemoteMeta {
            version: r.get("version").map(|v| v.to_string()),
            modified_ms: None,
        };
        db.apply_pull_page(&mut txn, "posts", &pulled, &version)
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = PushOutcome {
            record: Some(rec(
                json!({"id": 7, "cid": "c1", "v": 1, "title": "t", "version": 1}),
            )),
            version: Some("1".into()),
            server_key: Some(Key::Int(7)),
            server_time_ms: None,
        };
        let acked = db
            .ack_push(&mut txn, create.seq, &answer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(acked.remapped, Some((key("tmp"), key("7"))));
        assert_eq!(db.get(&txn, "posts", &key("tmp")).ok().flatten(), None);
        assert_eq!(
            db.get(&txn, "posts", &key("7")).ok().flatten(),
            Some(rec(
                json!({"id": "7", "cid": "c1", "v": 2, "title": "t", "srv": 9, "version": 2})
            )),
            "the pulled copy with the local edit on top"
        );
        let base = db.base(&txn, "posts", &key("7")).ok().flatten();
        assert_eq!(base.and_then(|b| b.version), Some("2".into()));
        let queued = db
            .pending(&txn, "posts", &key("7"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].changed, vec!["v".to_owned()]);
        assert_eq!(
            queued[0].record.as_ref().and_then(|r| r.get("srv")),
            Some(&json!(9)),
            "a whole-record PUT of the edit carries the server's newer fields"
        );
        assert!(
            db.pending(&txn, "posts", &key("tmp"))
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[test]
    fn a_quiet_page_writes_what_the_isolated_path_writes() {
        let db = db();
        let mut quiet = seeded(&db, false);
        let mut busy = seeded(&db, true);
        assert!(db.is_quiet(&quiet, "posts").unwrap_or(false));
        assert!(!db.is_quiet(&busy, "posts").unwrap_or(true));
        let a = db
            .apply_pull_page_owned(&mut quiet, "posts", page(), &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        let b = db
            .apply_pull_page(&mut busy, "posts", &page(), &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.changes, b.changes);
        let ops: Vec<(String, Op)> = a
            .changes
            .iter()
            .map(|c| (c.key.to_string(), c.op))
            .collect();
        assert_eq!(
            ops,
            [
                ("a".to_owned(), Op::Create),
                ("b".to_owned(), Op::Update),
                ("d".to_owned(), Op::Delete)
            ]
        );
        assert_eq!(a.quarantined.len(), 1);
        assert_eq!(b.quarantined.len(), 1);
        assert_eq!(a.quarantined[0].key.as_deref(), Some("bad"));
        assert!(a.conflicts.is_empty() && b.conflicts.is_empty());
        // Records, index entries, bases and the checkpoint: byte for byte the same (the
        // outbox and meta differ only by the pending edit of `extra`).
        assert_eq!(
            without(&quiet, &["o/", "m", "q"]),
            without(&busy, &["o/", "m", "q"])
        );
        let base = db.base(&quiet, "posts", &key("b")).unwrap_or(None);
        assert_eq!(
            base,
            Some(Base {
                record: rec(json!({"id": "b", "rank": 5, "v": 2})),
                version: Some("2".into()),
            })
        );
        assert_eq!(db.base(&quiet, "posts", &key("d")).unwrap_or(None), None);
        assert_eq!(db.get(&quiet, "posts", &key("bad")).unwrap_or(None), None);
        assert_eq!(
            db.checkpoint(&quiet, "posts").unwrap_or(None),
            Some(json!("c1"))
        );
        // Pulls never enqueue.
        assert_eq!(db.outbox(&quiet, None, 10).map(|o| o.len()).unwrap_or(9), 0);
    }

    #[test]
    fn a_page_meeting_a_pending_edit_returns_the_conflict() {
        let db = db();
        let mut txn = seeded(&db, true);
        let page = PullPage {
            records: vec![
                rec(json!({"id": "extra", "rank": 9, "v": 2, "body": "remote"})),
                rec(json!({"id": "z", "rank": 0, "v": 1})),
            ],
            ..PullPage::default()
        };
        let applied = db
            .apply_pull_page_owned(&mut txn, "posts", page, &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.conflicts.len(), 1);
        assert_eq!(applied.conflicts[0].0.key, key("extra"));
    }

    #[test]
    fn resolutions_apply_together_and_a_refused_one_alone_is_left_out() {
        let db = db();
        let mut txn = seeded(&db, true);
        db.apply_local(
            &mut txn,
            &[WriteOp::Update {
                table: "posts".into(),
                key: key("c"),
                patch: json!({"title": "local c"}),
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let page = PullPage {
            records: vec![
                rec(json!({"id": "extra", "rank": 9, "v": 2, "body": "remote"})),
                rec(json!({"id": "c", "rank": 3, "v": 2, "body": "remote c"})),
            ],
            ..PullPage::default()
        };
        let applied = db
            .apply_pull_page(&mut txn, "posts", &page, &meta)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(applied.conflicts.len(), 2);
        let mut resolved: Vec<(Conflict, Option<String>, Resolution)> = Vec::new();
        for (conflict, version) in applied.conflicts {
            let resolution = if conflict.key == key("c") {
                // Not storable: an object in the indexed field.
                Resolution::Merged(rec(json!({"id": "c", "rank": {"bad": true}})))
            } else {
                Resolution::TakeRemote
            };
            resolved.push((conflict, version, resolution));
        }
        let (changes, refused) = db
            .apply_resolutions(&mut txn, &resolved)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, key("extra"));
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].record_key(), Some("c"));
        // `extra` took the remote version, its pending edit dropped; `c` is untouched.
        let extra = db.get(&txn, "posts", &key("extra")).unwrap_or(None);
        assert_eq!(
            extra.and_then(|r| r.get("body").cloned()),
            Some(json!("remote"))
        );
        assert!(
            db.pending(&txn, "posts", &key("extra"))
                .unwrap_or_default()
                .is_empty()
        );
        assert_eq!(
            db.pending(&txn, "posts", &key("c"))
                .map(|p| p.len())
                .unwrap_or(0),
            1
        );
    }

    #[test]
    fn base_bytes_read_back_as_the_base() {
        let mut record = Record::new();
        record.insert("id".into(), serde_json::json!("a\"1"));
        record.insert("n".into(), serde_json::json!({"x": [1, 2.5, null]}));
        for version in [None, Some("7"), Some("W/\"q\\\u{1}\"")] {
            let base = Base {
                record: record.clone(),
                version: version.map(str::to_owned),
            };
            let json = serde_json::to_vec(&record).unwrap_or_default();
            let bytes = base_bytes(&json, version);
            assert_eq!(bytes, serde_json::to_vec(&base).unwrap_or_default());
            let back: Base = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, base);
        }
    }
}
