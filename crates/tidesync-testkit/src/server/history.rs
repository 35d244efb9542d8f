//! The change history: every state change of every record, in the order the server applied
//! them, with what caused it (a request's idempotency key, or a direct edit through the
//! inspection API). Tests use it to check histories (who overwrote what, when a tombstone came
//! back to life); the request log says what was *asked*, this says what was *applied*.

use serde_json::Value;

/// Most changes kept; older ones are dropped first.
pub(crate) const MAX_CHANGES: usize = 200_000;

/// One applied change of one record.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerChange {
    /// Application order, from 0, over all collections.
    pub seq: u64,
    /// The collection.
    pub collection: String,
    /// The record's storage key (`5` and `"5"` are both `"5"`).
    pub key: String,
    /// The record after the change, as the server renders it (`version`, `updatedAt`, and
    /// `deleted: true` for a tombstone).
    pub record: Value,
    /// The `Idempotency-Key` of the write that made the change (the bulk op's own key for a
    /// bulk op); `None` for a write without one and for direct edits.
    pub idempotency_key: Option<String>,
    /// Made through the inspection API ([`super::ServerHandle::insert_direct`] and friends):
    /// another client, not a request.
    pub direct: bool,
}

impl ServerChange {
    /// The record's version after the change.
    pub fn version(&self) -> Option<u64> {
        self.record.get("version").and_then(Value::as_u64)
    }

    /// Whether the change left a tombstone.
    pub fn deleted(&self) -> bool {
        self.record.get("deleted") == Some(&Value::Bool(true))
    }
}
