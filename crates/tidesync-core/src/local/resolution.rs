//! Applying a conflict's outcome: record, base and pending entries rewritten in one
//! transaction, with local writes made after the decision kept on top.

use crate::conflict::{Conflict, Resolution};
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::Op;
use crate::record::{Record, changed_fields};
use crate::store::WriteTxn;

use super::parked::{PARKED, parked_key};
use super::settled::Settlement;
use super::{Base, Change, Origin, RemoteChanges, Staged};

/// The outcome of a conflict with the local writes made after the decision on top: the
/// fields those writes changed (from the `decided_on` local to the `current` record) are
/// copied onto the outcome; a later delete wins; a later re-create of a record decided gone
/// stands as written.
pub(super) fn rebase_later_write(
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

impl RemoteChanges<'_> {
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
        let spec = self.db.schema.table(&conflict.table)?.clone();
        let (table, key) = (conflict.table.as_str(), &conflict.key);
        if let Resolution::Park = resolution {
            self.db.parked().park(txn, conflict, remote_version)?;
            return Ok(Vec::new());
        }
        txn.discard(PARKED, &parked_key(table, key))?;
        let current = self.db.records().get(&*txn, table, key)?;
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
        let settled = self.db.outbox().pending(&*txn, table, key)?;
        for entry in &settled {
            self.db.outbox().remove_raw(txn, entry.seq)?;
        }
        let base = conflict.remote.clone().map(|record| Base {
            record,
            version: remote_version,
        });
        self.db.records().set_base(txn, table, key, base.as_ref())?;
        let mut changes = Vec::new();
        if current != outcome {
            self.db
                .records()
                .write_row(txn, &spec, key, current.as_ref(), outcome.as_ref())?;
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
                let stamp = self.db.clock.now();
                follow_up = self
                    .db
                    .outbox()
                    .enqueue(txn, &spec, key, &change, stamp.0, None)?;
            }
        }
        // The settled entries' receipts: resolved through this conflict (and followed by the
        // entry pushing the outcome, if any).
        for entry in &settled {
            let settlement = Settlement::Conflict {
                resolution: resolution.as_str().to_owned(),
                follow_up,
            };
            self.db.outbox().record_settlement(txn, entry, settlement)?;
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
}
