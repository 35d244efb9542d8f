//! `status()` and `health()`: what the engine is doing, and whether it is well.

use std::sync::atomic::Ordering;

use serde::Serialize;
use tidesync_actors::events::human_ms;
use tidesync_actors::{EngineState, LiveState, LiveStats};
use tidesync_core::OutboxEntry;
use tidesync_core::local::EntryState;

/// A snapshot of the engine's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Sync is started (between `start` and `stop`).
    pub running: bool,
    /// Sync is paused.
    pub paused: bool,
    /// The server is believed reachable.
    pub online: bool,
    /// Since when (wall-clock ms) the server is unreachable, while offline.
    pub offline_since_ms: Option<u64>,
    /// This instance is the sync leader.
    pub leader: bool,
    /// The fencing epoch, when leading.
    pub epoch: Option<u64>,
    /// A cycle is running right now.
    pub syncing: bool,
    /// Pushing waits for new credentials.
    pub auth_required: bool,
    /// The server said this client is too old (HTTP 426): pushing waits for an upgrade.
    pub upgrade_required: bool,
    /// Wall-clock ms of the last successful cycle.
    pub last_successful_sync_ms: Option<u64>,
    /// The last cycle's error, if it failed.
    pub last_error: Option<String>,
    /// Outbox entries waiting (all tables), read live from the store.
    pub queue_depth: u64,
    /// Age of the oldest waiting entry, in ms.
    pub oldest_pending_age_ms: Option<u64>,
    /// Dead letters waiting.
    pub dead_letters: u64,
    /// Conflicts parked for the application.
    pub parked_conflicts: u64,
    /// Pulled items that could not be applied, kept in quarantine.
    pub quarantined: u64,
    /// Tables paused by the application.
    pub paused_tables: Vec<String>,
    /// The server's live channel, when the transport has one (`None`: polling only).
    pub live: Option<LiveStatus>,
}

/// The live channel's state (see `tidesync_core::live`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveStatus {
    /// `connecting`, `connected`, `disconnected` (polling goes on), or `off` (not started).
    pub state: LiveState,
    /// Successful connects after the first one.
    pub reconnects: u64,
    /// Events received (hints and changes).
    pub events: u64,
    /// Wall-clock ms of the last event received.
    pub last_event_ms: Option<u64>,
    /// Wall-clock ms of the last successful connect.
    pub connected_since_ms: Option<u64>,
}

impl LiveStatus {
    pub(crate) fn of(stats: &LiveStats) -> Self {
        let ms = |v: u64| (v > 0).then_some(v);
        LiveStatus {
            state: stats.state(),
            reconnects: stats.reconnects.load(Ordering::SeqCst),
            events: stats.events.load(Ordering::SeqCst),
            last_event_ms: ms(stats.last_event_ms.load(Ordering::SeqCst)),
            connected_since_ms: ms(stats.connected_since_ms.load(Ordering::SeqCst)),
        }
    }
}

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Working, but something needs attention (see the failed checks).
    Degraded,
    /// Not working (an actor died or the store is unreadable).
    Unhealthy,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The result of [`crate::Engine::health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Overall status: unhealthy if a critical check failed, degraded if another one did.
    pub status: HealthStatus,
    /// Failed requests / requests, in `[0, 1]` (0 before any request).
    pub error_rate: f64,
    /// Every check, passed or not.
    pub checks: Vec<HealthCheck>,
}

/// One outbox entry, where it stands and why (see [`crate::Engine::outbox_states`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingEntry {
    /// The entry (its fields at the top level in JSON).
    #[serde(flatten)]
    pub entry: OutboxEntry,
    /// Where it stands, as far as the store can tell.
    pub state: EntryState,
    /// Why it has not reached the server, for people (engine state included: offline,
    /// paused for credentials, a paused table).
    pub reason: String,
}

/// What the engine knows beyond the store, for entry reasons.
pub(crate) struct EngineView {
    online: bool,
    auth_required: bool,
    upgrade_required: bool,
    paused: bool,
    paused_tables: std::collections::HashSet<String>,
}

impl EngineView {
    pub(crate) fn of(state: &EngineState) -> Self {
        EngineView {
            online: state.online.load(Ordering::SeqCst),
            auth_required: state.auth_required.load(Ordering::SeqCst),
            upgrade_required: state.upgrade_required.load(Ordering::SeqCst),
            paused: state.paused.load(Ordering::SeqCst),
            paused_tables: state.paused_tables(),
        }
    }

    /// Why `entry` (in `state`) has not reached the server.
    pub(crate) fn reason(&self, entry: &OutboxEntry, state: &EntryState, now_ms: u64) -> String {
        let last_error = || {
            entry
                .last_error
                .as_deref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        };
        match state {
            EntryState::Ready | EntryState::RetryAt { .. } if !self.online => {
                format!("offline: waits for the server{}", last_error())
            }
            EntryState::Ready if self.auth_required => "paused: auth".into(),
            EntryState::Ready if self.upgrade_required => "paused: upgrade required".into(),
            EntryState::Ready if self.paused => "paused: sync is paused".into(),
            EntryState::Ready if self.paused_tables.contains(&entry.table) => {
                "paused: table".into()
            }
            EntryState::RetryAt { at_ms } => format!(
                "retry in {}{}",
                human_ms(at_ms.saturating_sub(now_ms)),
                last_error()
            ),
            EntryState::DeadLetter => match &entry.dead {
                Some(dead) => format!("dead letter: {}", dead.error),
                None => "dead letter".into(),
            },
            other => other.describe(),
        }
    }
}
