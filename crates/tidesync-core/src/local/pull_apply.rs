//! Applying a pulled page: each remote version is written, or met with the pending local
//! change as a conflict, or quarantined; the page's cursor goes in the same transaction.
//! Nothing here creates outbox entries (DESIGN invariant 2: no echo).

use std::borrow::Cow;

use crate::conflict::{Conflict, DetectedBy};
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::Op;
use crate::record::{Key, Record};
use crate::store::{ReadTxn, WriteTxn};
use crate::transport::PullPage;

use super::echo::shows_write;
use super::layout;
use super::parked::{PARKED, parked_key};
use super::record_write::{change_op, prepare_row};
use super::{AppliedPage, Base, Change, Origin, RemoteChanges, RemoteMeta, Staged};

impl RemoteChanges<'_> {
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
        let spec = self.db.schema.table(table)?.clone();
        let mut applied = AppliedPage::default();
        let quiet = self
            .is_quiet(&*txn, table)?
            .then(|| (layout::records(table), layout::bases(table)));
        for remote in records {
            // Versions and times are read off the record as the server sent it.
            let meta = remote_meta(&remote);
            let Some(mut remote) = self.decode_pulled(txn, &spec, remote, &mut applied)? else {
                continue;
            };
            let key = match spec.remote_key_of(&remote) {
                Ok(Some(key)) => Ok(key),
                Ok(None) => Err("pulled record has no key".to_owned()),
                Err(err) => Err(err.message().to_owned()),
            };
            let key = match key {
                Ok(key) => key,
                Err(why) => {
                    let err = Error::new(ErrorKind::Decode, why)
                        .table(table)
                        .field(spec.key.clone());
                    self.db.parked().quarantine(
                        txn,
                        table,
                        None,
                        Some(&remote),
                        &err,
                        &mut applied,
                    )?;
                    continue;
                }
            };
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
                self.db
                    .parked()
                    .quarantine(txn, table, Some(key), None, &err, &mut applied)?;
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
    /// (The outbox is ordered by sequence number, not by table: past the first thousand or so
    /// entries of other tables the table is taken as busy, which costs only this fast path.)
    pub(super) fn is_quiet(&self, txn: &dyn ReadTxn, table: &str) -> Result<bool> {
        const LOOK_AT_ENTRIES: usize = 1024;
        let prefix = layout::table_prefix(table);
        Ok(!self
            .db
            .outbox()
            .table_may_have_entries(txn, table, LOOK_AT_ENTRIES)?
            && txn.scan_prefix(PARKED, &prefix, Some(1))?.is_empty())
    }

    /// [`Self::apply_remote`] for a table that [`Self::is_quiet`]: the remote version becomes
    /// the local one and the base. Everything that can refuse the record runs before the
    /// first write, so a refused record is quarantined with nothing written and needs no
    /// sub-transaction. `keyspaces` are the table's records and bases keyspaces.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_remote_quiet(
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
            .map(|bytes| super::decode_row(spec, key, &bytes))
            .transpose()?;
        let changed = local.as_ref() != remote.as_deref();
        if changed {
            let prepared = match prepare_row(spec, key, local.as_ref(), remote.as_deref()) {
                Ok(prepared) => prepared,
                Err(err) if matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Decode) => {
                    return self.db.parked().quarantine(
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
                    txn.discard(keyspace, old)?;
                }
                if let Some(new) = new {
                    txn.put(keyspace, new, &key_bytes)?;
                }
            }
            match &prepared.record {
                Some(bytes) => txn.put(records, &key_bytes, bytes)?,
                None => {
                    txn.discard(records, &key_bytes)?;
                }
            }
        }
        match &remote {
            // The record row now holds exactly the remote version: the base is stored as "the
            // record row" (see `base_row`), one copy instead of two.
            Some(_) => {
                txn.put(
                    bases,
                    &key_bytes,
                    &super::base_row::as_record(version.as_deref()),
                )?;
            }
            None => {
                txn.discard(bases, &key_bytes)?;
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
    pub(super) fn apply_remote_isolated(
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
                self.db
                    .parked()
                    .quarantine(txn, &spec.name, Some(key), remote, &err, applied)
            }
            Err(err) => Err(err),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_remote(
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
        let local = self.db.records().get(&*txn, table, key)?;
        let base = self.db.records().base(&*txn, table, key)?;
        let pending = self.db.outbox().pending(&*txn, table, key)?;
        let parked = txn.get(PARKED, &parked_key(table, key))?;
        if remote.is_some()
            && let Some(head) = pending.first()
            && head.deleted_remotely
        {
            // A live version pulled after the delete the head kept (BUG-15) is the server's
            // state now: the head's answer must not apply that older delete.
            let mut head = head.clone();
            head.deleted_remotely = false;
            self.db.outbox().rewrite(txn, &head)?;
        }
        if pending.is_empty() && parked.is_none() {
            // Nothing local in the way: the remote version becomes the local one and the base.
            if local.as_ref() != remote {
                self.db
                    .records()
                    .write_row(txn, spec, key, local.as_ref(), remote)?;
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
            self.db.records().set_base(txn, table, key, base.as_ref())?;
            return Ok(());
        }
        if remote.is_none()
            && base.is_none()
            && parked.is_none()
            && let Some(head) = pending.first()
            && head.op != Op::Delete
            && head.attempts > 0
            && head.dead.as_ref().is_none_or(|d| d.may_have_been_applied())
        {
            // Deleted remotely, never known here. An unsent create decides (it comes later),
            // but this write (a create, or one sent as an upsert) was sent and its answer is
            // unknown: it may be what was deleted (BUG-15). Its answer tells, so the head
            // keeps the delete for its acknowledgement (`ack_push`) instead of the delete
            // being lost behind the cursor.
            if !head.deleted_remotely {
                let mut head = head.clone();
                head.deleted_remotely = true;
                self.db.outbox().rewrite(txn, &head)?;
            }
            applied.unchanged += 1;
            return Ok(());
        }
        if base.as_ref().map(|b| &b.record) == remote {
            applied.unchanged += 1; // the server still has what we based our edit on
            return Ok(());
        }
        if parked.is_none() && local.as_ref() == remote {
            // Both sides already agree: no conflict, nothing left to push.
            for entry in &pending {
                self.db.outbox().remove(txn, entry.seq)?;
            }
            let base = remote.map(|r| Base {
                record: r.clone(),
                version,
            });
            self.db.records().set_base(txn, table, key, base.as_ref())?;
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
            self.db.parked().park(txn, &conflict, version)?;
            return Ok(());
        }
        applied.conflicts.push((conflict, version));
        Ok(())
    }
}
