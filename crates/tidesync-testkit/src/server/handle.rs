//! [`ServerHandle`]: the synchronous, `Clone` inspection and control API of a running server
//! (usable from async code, blocking code and other threads; it never awaits).

use std::fmt;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;

use super::collection::{Body, CollectionConfig, Pre};
use super::faults::{FaultFilter, FaultKind, Faults};
use super::history::ServerChange;
use super::ids::RecordId;
use super::live::LiveOptions;
use super::log::LoggedRequest;
use super::state::{Shared, lock};

/// Why a direct write ([`ServerHandle::insert_direct`] and friends) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectError {
    /// The record or patch is not a JSON object.
    NotAnObject,
    /// The record is invalid (e.g. its `id` is neither a string nor an integer).
    Invalid(String),
    /// No live record has that id.
    NotFound,
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectError::NotAnObject => f.write_str("the record must be a JSON object"),
            DirectError::Invalid(e) => write!(f, "invalid record: {e}"),
            DirectError::NotFound => f.write_str("no live record with that id"),
        }
    }
}

impl std::error::Error for DirectError {}

/// A cheap, `Clone + Send + Sync` handle on a running server's state. Every method is
/// synchronous. It stays usable after the server stopped (the state is kept).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    url: Arc<str>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("url", &self.url)
            .finish()
    }
}

fn body_of(value: Value) -> Result<Body, DirectError> {
    match value {
        Value::Object(m) => Body::split(m).map_err(DirectError::Invalid),
        _ => Err(DirectError::NotAnObject),
    }
}

impl ServerHandle {
    pub(crate) fn new(shared: Arc<Shared>, url: String) -> Self {
        Self {
            shared,
            url: url.into(),
        }
    }

    /// Replaces the live channel's options (faults reseeded); open channels keep their
    /// handshake and payload settings.
    pub fn set_live(&self, options: LiveOptions) {
        lock(&self.shared.live).set_options(options);
    }

    /// Breaks every open live channel now (the clients see the connection fail).
    pub fn drop_live(&self) {
        lock(&self.shared.live).drop_all();
    }

    /// Stalls every open live channel (nothing sent, keep-alives included) or lets them go
    /// on; a stalled channel then sends what it held back.
    pub fn stall_live(&self, stalled: bool) {
        lock(&self.shared.live).stall(stalled);
    }

    /// Live channels open right now.
    pub fn live_open(&self) -> usize {
        lock(&self.shared.live).open
    }

    /// Live channels opened so far.
    pub fn live_connects(&self) -> u64 {
        lock(&self.shared.live).connects
    }

    /// Live events sent and lost on purpose so far: `(sent, lost)`.
    pub fn live_events(&self) -> (u64, u64) {
        let hub = lock(&self.shared.live);
        (hub.sent, hub.lost)
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    // ---- data ----------------------------------------------------------------------------

    /// The live records of a collection, sorted by id (numeric ids numerically, first).
    pub fn records(&self, collection: &str) -> Vec<Value> {
        let store = self.shared.store();
        store
            .get(collection)
            .map(|c| c.sorted(false))
            .unwrap_or_default()
    }

    /// One live record (`None` if missing or deleted).
    pub fn record(&self, collection: &str, id: impl RecordId) -> Option<Value> {
        let store = self.shared.store();
        store
            .get(collection)
            .and_then(|c| c.live_json(&id.record_key()).ok())
    }

    /// One record, live or tombstone (a tombstone has `"deleted": true`).
    pub fn record_any(&self, collection: &str, id: impl RecordId) -> Option<Value> {
        let store = self.shared.store();
        store
            .get(collection)
            .and_then(|c| c.any_json(&id.record_key()))
    }

    /// The tombstones of a collection, sorted by id.
    pub fn tombstones(&self, collection: &str) -> Vec<Value> {
        let store = self.shared.store();
        store
            .get(collection)
            .map(|c| c.sorted(true))
            .unwrap_or_default()
    }

    /// Writes a record as another client would (upsert): stamps `updatedAt` and `version`
    /// (1, or +1 over an existing record or tombstone). A record without `id` gets one (a uuid,
    /// or the next integer in a `server_ids` collection). Returns the stored record.
    pub fn insert_direct(&self, collection: &str, record: Value) -> Result<Value, DirectError> {
        let body = body_of(record)?;
        let mut store = self.shared.store();
        let now = store.now();
        let result = store
            .collection_mut(collection)
            .upsert_direct(body, now)
            .map_err(DirectError::Invalid);
        store.collect_changes(None, true);
        result
    }

    /// Merges top-level fields into a live record as another client would (stamps
    /// `updatedAt`, bumps `version`). Returns the stored record.
    pub fn update_direct(
        &self,
        collection: &str,
        id: impl RecordId,
        patch: Value,
    ) -> Result<Value, DirectError> {
        let mut body = body_of(patch)?;
        body.id = None;
        let key = id.record_key();
        let mut store = self.shared.store();
        let now = store.now();
        let coll = store.collection_mut(collection);
        let reply = coll.patch(&key, body, &Pre::default(), now);
        store.collect_changes(None, true);
        match (reply.status, reply.body) {
            (StatusCode::OK, Some(v)) => Ok(v),
            _ => Err(DirectError::NotFound),
        }
    }

    /// Deletes a live record as another client would (tombstone; stamps `updatedAt`, bumps
    /// `version`). Returns the tombstone, or `null` in a collection with
    /// [`CollectionConfig::hard_deletes`] (the record is gone).
    pub fn delete_direct(&self, collection: &str, id: impl RecordId) -> Result<Value, DirectError> {
        let key = id.record_key();
        let mut store = self.shared.store();
        let now = store.now();
        let coll = store.collection_mut(collection);
        let deleted = coll.delete(&key, &Pre::default(), now).status == StatusCode::NO_CONTENT;
        let tombstone = coll.any_json(&key);
        let hard_deletes = coll.config.hard_deletes;
        store.collect_changes(None, true);
        if !deleted {
            return Err(DirectError::NotFound);
        }
        if hard_deletes {
            return Ok(Value::Null);
        }
        tombstone.ok_or(DirectError::NotFound)
    }

    /// How many times a record with this id was created (POST, PUT upsert, bulk create,
    /// direct insert). More than 1 means a duplicate create got through.
    pub fn create_count(&self, collection: &str, id: impl RecordId) -> usize {
        let store = self.shared.store();
        store
            .get(collection)
            .map_or(0, |c| c.create_count(&id.record_key()))
    }

    /// Sets the options of a collection (existing or future).
    pub fn configure_collection(&self, collection: &str, config: CollectionConfig) {
        self.shared.store().configure(collection, config);
    }

    /// Freezes the server clock at `Some(epoch ms)` (every write then gets that `updatedAt`),
    /// or unfreezes it with `None`.
    pub fn freeze_clock(&self, at_ms: Option<i64>) {
        self.shared.store().freeze(at_ms);
    }

    /// Runs the server clock `ms` milliseconds ahead of the system clock (negative: behind),
    /// as a server whose clock is off: `updatedAt` stamps and the `Date` header both move.
    /// `0` puts it right again. A frozen clock ([`ServerHandle::freeze_clock`]) still wins
    /// for `updatedAt`.
    pub fn skew_clock(&self, ms: i64) {
        self.shared.store().skew_ms = ms;
    }

    /// Sets how far the `Date` header of every response is off the real time, in
    /// milliseconds (positive: ahead), on top of [`Self::skew_clock`]: a server whose `Date`
    /// is wrong while its record timestamps are right.
    pub fn set_date_skew_ms(&self, skew_ms: i64) {
        self.shared.store().date_skew_ms = skew_ms;
    }

    /// The server clock, in epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.shared.store().now()
    }

    // ---- idempotency and fencing ----------------------------------------------------------

    /// How many responses were replayed from the idempotency store (single requests and
    /// bulk ops).
    pub fn replay_count(&self) -> u64 {
        self.shared.store().replays
    }

    /// How many requests reused an idempotency key for a different operation (refused, 422).
    pub fn idempotency_mismatches(&self) -> u64 {
        self.shared.store().mismatches
    }

    /// How many idempotency keys are stored.
    pub fn idempotency_keys(&self) -> usize {
        self.shared.store().idem.len()
    }

    /// The highest `X-Tidesync-Epoch` seen on a write.
    pub fn max_epoch_seen(&self) -> Option<u64> {
        self.shared.store().max_epoch
    }

    /// How many writes were refused with 409 `stale epoch`.
    pub fn stale_epoch_rejections(&self) -> u64 {
        self.shared.store().stale_rejections
    }

    // ---- request log ------------------------------------------------------------------------

    /// Every request since start (or the last [`ServerHandle::clear_log`]), in arrival order.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.log().snapshot()
    }

    /// Every applied change of every record since start, in application order (requests and
    /// direct edits; refused and replayed writes change nothing and are not listed). The
    /// change history to check a run against; see [`ServerChange`].
    pub fn changes(&self) -> Vec<ServerChange> {
        self.shared.store().changes.iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.shared.log().clear();
    }

    // ---- faults ------------------------------------------------------------------------------

    /// Replaces the random faults (and reseeds their generator).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults().set(faults);
    }

    /// Removes random faults and pending scripted ones.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// The next `n` requests get `kind` (before any random fault).
    pub fn fail_next(&self, n: usize, kind: FaultKind) {
        self.fail_next_where(FaultFilter::any(), n, kind);
    }

    /// The next `n` requests matching `filter` get `kind`. One-shots are consumed in the order
    /// they were queued.
    pub fn fail_next_where(&self, filter: FaultFilter, n: usize, kind: FaultKind) {
        self.shared.faults().script(filter, n, kind);
    }

    /// How many scripted one-shots are still pending.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults().pending_scripted()
    }

    /// How many faults were injected so far (scripted and random; latency not counted).
    pub fn faults_injected(&self) -> u64 {
        self.shared.faults().injected
    }

    // ---- auth --------------------------------------------------------------------------------

    /// Issues a fresh access token (valid for the configured ttl).
    pub fn issue_token(&self) -> String {
        self.shared.auth().issue()
    }

    /// The refresh token accepted by `POST /auth/token`.
    pub fn refresh_token(&self) -> String {
        self.shared.auth().refresh_token()
    }

    /// Expires every access token issued so far.
    pub fn expire_all_tokens(&self) {
        self.shared.auth().expire_all();
    }

    /// Revokes the refresh token: `POST /auth/token` then answers 400 `invalid_grant`.
    pub fn revoke_refresh(&self) {
        self.shared.auth().revoke_refresh();
    }

    /// Turns the token requirement on `/api` on or off at run time.
    pub fn set_auth_required(&self, required: bool) {
        self.shared.auth().required = required;
    }

    /// How many requests were refused with 401.
    pub fn auth_rejections(&self) -> u64 {
        self.shared.auth().rejections
    }
}
