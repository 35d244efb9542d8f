//! What sync set aside for the application or an operator ([`Parked`]): conflicts parked with
//! both sides (this file), and pulled items that could not be stored, kept in quarantine
//! (`quarantine_ops.rs`) to be retried or discarded.
//!
//! It owns the parked-conflict and quarantine keyspaces. The rule it guards: a record with a
//! parked conflict keeps its pending entries waiting (the outbox queue asks
//! `Parked::is_parked` before it offers a head) until the conflict is settled through
//! [`RemoteChanges::apply_resolutions`](super::RemoteChanges::apply_resolutions). Refused
//! outbox entries (dead letters) belong to the outbox queue ([`Outbox`](super::Outbox)), where
//! they keep their place in their record's queue.

use serde::{Deserialize, Serialize};

use crate::conflict::Conflict;
use crate::error::{Error, Result};
use crate::record::Key;
use crate::store::{ReadTxn, WriteTxn};

use super::layout;
use super::{LocalDb, now_ms};

/// Keyspace of parked conflicts: table ‖ key → [`ParkedConflict`] JSON.
pub(super) const PARKED: &str = "x/conflicts";

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

/// Parked conflicts and quarantined pulled items of a [`LocalDb`]. Borrowed from
/// [`LocalDb::parked`]; its methods act on the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Parked<'a> {
    pub(super) db: &'a LocalDb,
}

pub(super) fn parked_key(table: &str, key: &Key) -> Vec<u8> {
    layout::record_prefix(table, key)
}

impl Parked<'_> {
    pub(super) fn park(
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

    /// Whether the record has a parked conflict (its pending entries then wait): the outbox
    /// queue asks this of every head it offers.
    pub(super) fn is_parked(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<bool> {
        Ok(txn.get(PARKED, &parked_key(table, key))?.is_some())
    }
}
