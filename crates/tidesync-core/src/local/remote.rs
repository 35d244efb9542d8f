//! Reconciliation of remote changes ([`RemoteChanges`]): everything the server tells the
//! local database is written through this type, one rule per file.
//!
//! - `ack.rs`: a push answer acknowledges its entry ([`RemoteChanges::ack_push`]): the entry
//!   leaves the queue, the server's version becomes the base, server-owned fields merge in.
//! - `pull_apply.rs`: a pulled page is applied with its cursor
//!   ([`RemoteChanges::apply_pull_page`]); a version meeting a pending change is a conflict,
//!   one that cannot be stored is quarantined.
//! - `echo.rs`: a pulled version showing our own sent write settles that entry.
//! - `remap.rs`: a server-assigned key moves the record, its base, its entries and the
//!   references to it ([`RemoteChanges::remap_key`]).
//! - `resolution.rs`: a conflict's outcome rewrites record, base and pending entries
//!   ([`RemoteChanges::apply_resolutions`]), or parks the conflict.
//! - `reconcile.rs`: hard deletes found by comparing the server's key listing
//!   ([`RemoteChanges::reconcile_deletes`]).
//! - `remote_decode.rs`: records from the server go through the table's decoder and version
//!   steps ([`RemoteChanges::decode_remote`]).
//! - this file: the pull checkpoints, stored in the transaction that applies a page.
//!
//! The rule it guards: a write that comes from the server never becomes an outbox entry
//! (DESIGN invariant 2, no echo). The only entry it queues is a conflict outcome the strategy
//! says must reach the server. Records are written through
//! [`Records::write_row`](super::Records::write_row), the queue through
//! [`Outbox`](super::Outbox), parking and quarantine through [`Parked`](super::Parked).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{ReadTxn, WriteTxn};

use super::{LocalDb, layout};

/// Reconciliation of what the server said with a [`LocalDb`]: push acknowledgements, pulled
/// pages, echoes, key remaps, conflict outcomes, hard deletes and decoding of server records.
/// Borrowed from [`LocalDb::remote`]; its methods act on the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct RemoteChanges<'a> {
    pub(super) db: &'a LocalDb,
}

impl RemoteChanges<'_> {
    /// The stored pull checkpoint of `table`.
    pub fn checkpoint(&self, txn: &dyn ReadTxn, table: &str) -> Result<Option<Value>> {
        txn.get(layout::CHECKPOINTS, table.as_bytes())?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::internal(format!("corrupt checkpoint: {e}")).table(table))
            })
            .transpose()
    }

    /// Stores the pull checkpoint of `table` (in the transaction that applies the page).
    pub fn set_checkpoint(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        cursor: Option<&Value>,
    ) -> Result<()> {
        match cursor {
            Some(cursor) => {
                let bytes = serde_json::to_vec(cursor)
                    .map_err(|e| Error::internal(format!("cannot encode cursor: {e}")))?;
                txn.put(layout::CHECKPOINTS, table.as_bytes(), &bytes)
            }
            None => txn
                .delete(layout::CHECKPOINTS, table.as_bytes())
                .map(|_| ()),
        }
    }
}
