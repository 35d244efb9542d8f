//! Recognising our own write in a pulled version: after an entry was sent and its answer
//! lost (or unreadable), a remote version showing what it wrote settles the entry instead of
//! meeting the edits behind it as a conflict.

use crate::error::Result;
use crate::outbox::{Op, OutboxEntry};
use crate::record::{Key, Record};
use crate::store::WriteTxn;

use super::AppliedPage;
use super::record_write::{change_op, rebase_entry};
use super::{Base, Change, Origin, RemoteChanges};

/// Whether `remote` shows what `sent` (an entry that went to the server) wrote: the record
/// gone for a delete; the changed fields (an update), or every field but the key (a create),
/// as sent. Fields the entry did not write may differ (server-owned ones always do).
///
/// A field the update removed counts as shown when the remote lacks it, or when the remote
/// holds a value other than `base`'s: a whole-record replace leaves out the server-owned
/// fields (`updatedAt`, `version`) the local copy had, and the server, which owns them, wrote
/// new values. A remote that still holds the base's value never saw the removal.
pub(super) fn shows_write(
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

impl RemoteChanges<'_> {
    /// A pulled version that shows the write of `pending[0]` (sent, not in flight, perhaps
    /// dead-lettered on an answer that came after the server applied it): that entry counts
    /// as acknowledged and the version becomes the base. The entries behind it stay,
    /// rebased onto it, and the local record takes the version's other fields (server-owned
    /// ones, another client's edits of fields no pending entry touches).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle_echo(
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
        self.db.outbox().remove(txn, pending[0].seq)?;
        let base = remote.map(|r| Base {
            record: r.clone(),
            version,
        });
        self.db.records().set_base(txn, table, key, base.as_ref())?;
        let queued = &pending[1..];
        let merged = match remote {
            _ if queued.is_empty() => remote.cloned(),
            // A re-create (or a delete) behind it: the local record is the application's.
            Some(remote) if queued.iter().all(|e| e.op == Op::Update) => {
                let mut onto = remote.clone();
                for entry in queued {
                    let mut entry = entry.clone();
                    rebase_entry(&mut onto, &mut entry);
                    self.db.outbox().rewrite(txn, &entry)?;
                }
                Some(onto)
            }
            _ => local.clone(),
        };
        if merged != local {
            self.db
                .records()
                .write_row(txn, spec, key, local.as_ref(), merged.as_ref())?;
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
}
