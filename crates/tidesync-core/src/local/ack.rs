//! Acknowledging a push: the entry leaves the queue, the server's version becomes the
//! base, server-owned fields merge into the local record, a server-assigned key is remapped.

use crate::error::Result;
use crate::outbox::{Op, OutboxEntry};
use crate::record::{Key, Record};
use crate::store::WriteTxn;
use crate::transport::PushOutcome;

use super::{Base, Change, Origin, RemoteChanges};

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

impl RemoteChanges<'_> {
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
        self.ack_push_as_sent(txn, seq, None, outcome.clone())
    }

    /// [`RemoteChanges::ack_push`] for a caller that kept the record the request carried
    /// (`sent`, the entry's record as it was handed out in flight; the pusher keeps it): it is
    /// not read from the store and decoded again, nor copied. `None` reads it from the store.
    /// The answer is taken by value: its record becomes the base without being copied.
    pub fn ack_push_as_sent(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        sent: Option<Record>,
        outcome: PushOutcome,
    ) -> Result<Acked> {
        // An entry that points at its record row sent the row as it is: the local record is
        // then what was sent, not read a second time.
        let (mut entry, sent_is_row) = self.db.outbox().remove_acked(txn, seq, sent)?;
        let spec = self.db.schema.table(&entry.table)?;
        let mut changes = Vec::new();
        if entry.op == Op::Delete {
            self.db
                .records()
                .set_base(txn, &entry.table, &entry.key, None)?;
            return Ok(Acked {
                entry,
                changes,
                remapped: None,
            });
        }
        if entry.deleted_remotely
            && self
                .db
                .outbox()
                .pending(&*txn, &entry.table, &entry.key)?
                .is_empty()
        {
            // A pull showed the record deleted while this write's answer was unknown, and
            // the answer says the server applied it (perhaps replaying an earlier attempt's
            // answer): the delete came after the write, and the pull cursor is past it. The
            // delete is the server's state: installing the answer would keep, for good, a
            // record the server deleted (BUG-15). Had the write been applied after that pull,
            // its change is past the cursor and the next pull brings the record back.
            // Edits queued behind the write take the usual path instead: the answer becomes
            // their base and they meet the delete on the server, as a conflict.
            tracing::debug!(
                table = %entry.table,
                key = %entry.key,
                "the server deleted the record after this acknowledged write: the delete applies"
            );
            self.db
                .records()
                .set_base(txn, &entry.table, &entry.key, None)?;
            if let Some(local) = self.db.records().get(&*txn, &entry.table, &entry.key)? {
                self.db
                    .records()
                    .write_row(txn, spec, &entry.key, Some(&local), None)?;
                changes.push(Change {
                    table: entry.table.clone(),
                    key: entry.key.clone(),
                    op: Op::Delete,
                    record: None,
                    origin: Origin::Pull,
                });
            }
            return Ok(Acked {
                entry,
                changes,
                remapped: None,
            });
        }
        let sent_record = entry.record.take();
        let empty = Record::new();
        let sent = sent_record.as_ref().unwrap_or(&empty);
        let server = self.decode_answer(txn, spec, &entry.key, outcome.record)?;

        let read_local;
        let local = match &server {
            None => None,
            // The row has not changed since the entry pointed at it: it is what was sent.
            Some(_) if sent_is_row => sent_record.as_ref(),
            Some(_) => {
                read_local = self.db.records().get(&*txn, &entry.table, &entry.key)?;
                read_local.as_ref()
            }
        };
        // The local record with the server's fields merged in, when that changes it.
        let merged = match (&server, local) {
            (Some(server), Some(local)) => merge_server_fields(&spec.key, local, sent, server),
            _ => None,
        };
        let mut base_record = server.unwrap_or_else(|| sent.clone());
        // The base's key field reads like the local key (a server's integer id becomes "7" in a
        // string-key table), so pulled copies compare equal to it.
        base_record.insert(spec.key.clone(), entry.key.to_json());
        let base = Base {
            record: base_record,
            version: outcome.version,
        };
        let records = self.db.records();
        match (merged, local) {
            (Some(merged), Some(local)) => {
                if merged == base.record {
                    // The usual answer: the new row is the server's version, so the base is
                    // stored as "the record row" at once (no copy encoded and written, then
                    // folded into the marker by the row write).
                    records.set_base_as_row(
                        txn,
                        &entry.table,
                        &entry.key,
                        Some(local),
                        &merged,
                        base.version.as_deref(),
                    )?;
                } else {
                    records.set_base(txn, &entry.table, &entry.key, Some(&base))?;
                    records.write_row(txn, spec, &entry.key, Some(local), Some(&merged))?;
                }
                changes.push(Change {
                    table: entry.table.clone(),
                    key: entry.key.clone(),
                    op: Op::Update,
                    record: Some(merged),
                    origin: Origin::PushAck,
                });
            }
            _ => records.set_base(txn, &entry.table, &entry.key, Some(&base))?,
        }

        entry.record = sent_record;
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
}

/// `local` with the server's fields of `server` merged in, or `None` when that changes
/// nothing. The key field is left alone (keys change only through a remap), and a field
/// edited locally since `sent` was sent keeps the local edit.
fn merge_server_fields(
    key_field: &str,
    local: &Record,
    sent: &Record,
    server: &Record,
) -> Option<Record> {
    // The usual acknowledgement: the local record is the very record sent (the row did not
    // change in flight), so no field was edited since and none need comparing with `sent`.
    let unedited = std::ptr::eq(local, sent);
    let takes = |(field, value): &(&String, &serde_json::Value)| {
        let here = local.get(field.as_str());
        field.as_str() != key_field
            && (unedited || here == sent.get(field.as_str()))
            && here != Some(*value)
    };
    if !server.iter().any(|pair| takes(&pair)) {
        return None;
    }
    let mut merged = local.clone();
    for (field, value) in server.iter().filter(|pair| takes(pair)) {
        merged.insert(field.clone(), value.clone());
    }
    Some(merged)
}
