//! Quarantined pulled items: count, retry (apply the kept record again, e.g. after the table's
//! spec was fixed) and discard.

use std::borrow::Cow;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{Key, Record};
use crate::spec::KeyKind;
use crate::store::{ReadTxn, WriteTxn};

use serde::{Deserialize, Serialize};

use super::layout;
use super::{AppliedPage, Parked, RemoteMeta, now_ms, read_u64};

/// Keyspace of quarantined pulled items: seq → [`Quarantined`] JSON.
pub(super) const QUARANTINE: &str = "q";

/// Meta key of the last quarantine sequence number.
pub(super) const QUARANTINE_SEQ: &[u8] = b"quarantine_seq";

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

/// Decodes a stored quarantined item, taking its number from its store key.
pub(super) fn decode_quarantined(key: &[u8], value: &[u8]) -> Result<Quarantined> {
    let mut item: Quarantined = serde_json::from_slice(value)
        .map_err(|e| Error::internal(format!("corrupt quarantined item: {e}")))?;
    item.seq = read_u64(key)?;
    Ok(item)
}

fn not_found(seq: u64) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no quarantined item number {seq}"),
    )
}

impl Parked<'_> {
    /// Number of quarantined items.
    pub fn quarantined_count(&self, txn: &dyn ReadTxn) -> Result<u64> {
        txn.len(QUARANTINE)
    }

    /// The quarantined item number `seq`.
    pub(super) fn quarantined_item(
        &self,
        txn: &dyn ReadTxn,
        seq: u64,
    ) -> Result<Option<Quarantined>> {
        txn.get(QUARANTINE, &seq.to_be_bytes())?
            .map(|bytes| decode_quarantined(&seq.to_be_bytes(), &bytes))
            .transpose()
    }

    /// Drops quarantined item `seq` for good; returns it.
    pub fn discard_quarantined(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<Quarantined> {
        let item = self
            .quarantined_item(&*txn, seq)?
            .ok_or_else(|| not_found(seq))?;
        txn.discard(QUARANTINE, &seq.to_be_bytes())?;
        Ok(item)
    }

    /// Applies quarantined item `seq` again as the pulled version it was (a record, or a
    /// delete when only its key was kept), exactly as a pull would, without moving the
    /// table's checkpoint. The item leaves the quarantine; if it is refused again it comes
    /// back under a new number (in [`AppliedPage::quarantined`]). A record with local changes
    /// waiting to be pushed is refused (push them first): a retry never raises a conflict.
    pub fn retry_quarantined(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<AppliedPage> {
        let item = self.discard_quarantined(txn, seq)?;
        let table = item.table.clone();
        let spec = self.db.schema.table(&table)?;
        let record: Option<Record> = match item.record {
            Some(record) => Some(record),
            // Items quarantined before whole records were kept: the excerpt, when complete.
            None if !item.excerpt.is_empty() => {
                match serde_json::from_str::<Record>(&item.excerpt) {
                    Ok(record) => Some(record),
                    Err(_) => {
                        return Err(Error::invalid(format!(
                            "quarantined item {seq} kept only the start of the record; \
                             discard it, and a full pull brings the record again"
                        ))
                        .table(table));
                    }
                }
            }
            None => None,
        };
        let cursor = self.db.remote().checkpoint(&*txn, &table)?;
        let meta = |_: &Record| RemoteMeta::default();
        let applied = match record {
            Some(record) => self.db.remote().apply_page(
                txn,
                &table,
                std::iter::once(Cow::Owned(record)),
                &[],
                cursor.as_ref(),
                &meta,
            )?,
            None => {
                let text = item.key.ok_or_else(|| {
                    Error::invalid(format!(
                        "quarantined item {seq} has neither a record nor a key to apply"
                    ))
                    .table(table.clone())
                })?;
                let key = match spec.key_kind {
                    KeyKind::Integer => text.parse::<i64>().map(Key::Int).map_err(|_| {
                        Error::invalid(format!(
                            "the deleted key `{text}` is still not an integer; discard it"
                        ))
                        .table(table.clone())
                    })?,
                    KeyKind::String => Key::Str(text),
                };
                self.db.remote().apply_page(
                    txn,
                    &table,
                    std::iter::empty(),
                    &[key],
                    cursor.as_ref(),
                    &meta,
                )?
            }
        };
        if let Some((conflict, _)) = applied.conflicts.first() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the record has local changes waiting to be pushed; push them (sync) and \
                 retry",
            )
            .table(table)
            .key(&conflict.key));
        }
        Ok(applied)
    }
}

impl Parked<'_> {
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
}
