//! Conflicts left for the application to settle: parked with both sides, the record's
//! pending entries waiting behind them.

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

pub(super) fn parked_key(table: &str, key: &Key) -> Vec<u8> {
    layout::record_prefix(table, key)
}

impl LocalDb {
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

    /// Whether the record has a parked conflict (its pending entries then wait).
    pub fn is_parked(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<bool> {
        Ok(txn.get(PARKED, &parked_key(table, key))?.is_some())
    }
}
