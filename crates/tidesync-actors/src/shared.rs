//! What the sync actors share: the store and schema, the transport, settings, the event bus,
//! and the engine's observable state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tidesync_core::local::LocalDb;
use tidesync_core::{Store, Transport};

use crate::events::EventBus;
use crate::settings::SyncSettings;

/// Shared, read-mostly context of the sync actors.
#[derive(Clone)]
pub struct SyncShared {
    /// The store (reads go straight to it; writes go through the store writer actor).
    pub store: Arc<dyn Store>,
    /// The local database logic.
    pub db: LocalDb,
    /// The transport.
    pub transport: Arc<dyn Transport>,
    /// Settings.
    pub settings: Arc<SyncSettings>,
    /// The event bus.
    pub events: EventBus,
    /// Observable state.
    pub state: Arc<EngineState>,
}

impl std::fmt::Debug for SyncShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncShared")
            .field("store", &self.store.backend())
            .field("transport", &self.transport.name())
            .finish_non_exhaustive()
    }
}

/// The engine's live state, readable without asking an actor.
#[derive(Debug, Default)]
pub struct EngineState {
    /// Actors are running (between start and stop).
    pub running: AtomicBool,
    /// Sync paused by the application.
    pub paused: AtomicBool,
    /// The network is believed reachable.
    pub online: AtomicBool,
    /// This instance leads.
    pub leader: AtomicBool,
    /// The fencing epoch (0 = none).
    pub epoch: AtomicU64,
    /// A cycle is running.
    pub syncing: AtomicBool,
    /// Pushing waits for new credentials.
    pub auth_required: AtomicBool,
    /// The server said this client is too old (426): nothing is pushed until a newer version
    /// of the application starts.
    pub upgrade_required: AtomicBool,
    /// The next push should first make entries in backoff due (the network came back).
    pub retry_waiting_now: AtomicBool,
    /// Wall-clock ms of the last successful cycle (0 = never).
    pub last_success_ms: AtomicU64,
    /// Wall-clock ms of the last failed cycle (0 = never).
    pub last_failure_ms: AtomicU64,
    /// Requests sent (for the error rate).
    pub requests: AtomicU64,
    /// Requests that failed (for the error rate).
    pub request_failures: AtomicU64,
    /// Measured server clock minus local clock, in ms (from HTTP `Date`).
    pub clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Entries acknowledged so far in the running cycle (for progress logs).
    pub cycle_pushed: AtomicU64,
    /// Remote records applied so far in the running cycle (for progress logs).
    pub cycle_applied: AtomicU64,
    /// Wall-clock ms since which the server is unreachable (0 = online).
    pub offline_since_ms: AtomicU64,
    /// Tables paused by the application: written by the facade from any thread, read by the
    /// pusher on every cycle (a concurrent set, no lock held across either).
    pub paused_tables: dashmap::DashSet<String>,
    /// The last cycle error, if the last cycle failed.
    pub last_error: Mutex<Option<String>>,
    /// The live channel's state and counters.
    pub live: Arc<crate::live::LiveStats>,
}

impl EngineState {
    /// A new state: not running, online until proven otherwise, not leading.
    pub fn new() -> Self {
        let state = EngineState::default();
        state.online.store(true, Ordering::SeqCst);
        state
    }

    /// The paused tables (a copy).
    pub fn paused_tables(&self) -> HashSet<String> {
        self.paused_tables.iter().map(|t| t.key().clone()).collect()
    }

    /// Pauses or resumes one table; returns whether anything changed.
    pub fn set_table_paused(&self, table: &str, paused: bool) -> bool {
        if paused {
            self.paused_tables.insert(table.to_owned())
        } else {
            self.paused_tables.remove(table).is_some()
        }
    }

    /// Records the last cycle error (or clears it).
    pub fn set_last_error(&self, error: Option<String>) {
        match self.last_error.lock() {
            Ok(mut slot) => *slot = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    /// The last cycle error.
    pub fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notes a request's outcome (for the error rate).
    pub fn record_request(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.request_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The epoch to send with requests, if leading.
    pub fn epoch(&self) -> Option<u64> {
        match self.epoch.load(Ordering::SeqCst) {
            0 => None,
            e => Some(e),
        }
    }
}
