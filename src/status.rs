//! `status()` and `health()`: what the engine is doing, and whether it is well.

use serde::Serialize;

/// A snapshot of the engine's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Sync is started (between `start` and `stop`).
    pub running: bool,
    /// Sync is paused.
    pub paused: bool,
    /// The server is believed reachable.
    pub online: bool,
    /// This instance is the sync leader.
    pub leader: bool,
    /// The fencing epoch, when leading.
    pub epoch: Option<u64>,
    /// A cycle is running right now.
    pub syncing: bool,
    /// Pushing waits for new credentials.
    pub auth_required: bool,
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
