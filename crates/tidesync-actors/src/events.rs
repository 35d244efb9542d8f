//! Typed events: everything the engine does that an application may want to react to.

use serde::Serialize;
use tokio::sync::broadcast;

use tidesync_core::{DetectedBy, Key};

/// Why a sync cycle started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The engine started.
    Start,
    /// The periodic interval.
    Interval,
    /// Local writes (debounced).
    LocalChange,
    /// The network came back.
    Online,
    /// This instance became the leader.
    Leadership,
    /// The host application came to the foreground.
    Foreground,
    /// A manual call (`sync()`, `push()`, `pull()`, `sync_table()`).
    Manual,
    /// An offline probe.
    Probe,
    /// Entries waiting for their retry time became due.
    Retry,
}

/// What a finished cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Entries acknowledged by the server.
    pub pushed: u64,
    /// Push attempts that failed and will be retried.
    pub retried: u64,
    /// Entries moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Conflicts resolved (or parked).
    pub conflicts: u64,
    /// Pages pulled.
    pub pages: u64,
    /// Remote records and deletes applied locally.
    pub applied: u64,
    /// Tables pulled.
    pub tables_pulled: Vec<String>,
}

impl SyncReport {
    /// Adds another report's figures to this one.
    pub fn absorb(&mut self, other: &SyncReport) {
        self.pushed += other.pushed;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.conflicts += other.conflicts;
        self.pages += other.pages;
        self.applied += other.applied;
        for table in &other.tables_pulled {
            if !self.tables_pulled.contains(table) {
                self.tables_pulled.push(table.clone());
            }
        }
    }
}

/// An engine event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SyncEvent {
    /// A cycle started.
    SyncStarted {
        /// Why.
        trigger: Trigger,
    },
    /// A cycle finished without failures.
    SyncCompleted {
        /// What it did.
        report: SyncReport,
        /// How long it took, in milliseconds.
        duration_ms: u64,
    },
    /// A cycle failed (some work could not be done; it will be retried).
    SyncFailed {
        /// What failed.
        error: String,
        /// The error kind.
        kind: String,
        /// What it did before failing.
        report: SyncReport,
    },
    /// The push phase started.
    PushStarted,
    /// The push phase finished.
    PushCompleted {
        /// Entries acknowledged.
        pushed: u64,
        /// Entries to be retried.
        retried: u64,
    },
    /// A table's pull started.
    PullStarted {
        /// The table.
        table: String,
    },
    /// A table's pull finished.
    PullCompleted {
        /// The table.
        table: String,
        /// Pages pulled.
        pages: u64,
        /// Records and deletes applied.
        applied: u64,
    },
    /// A table's pull failed.
    PullFailed {
        /// The table.
        table: String,
        /// Why.
        error: String,
    },
    /// Progress of a first (initial) sync of a table.
    InitialSyncProgress {
        /// The table.
        table: String,
        /// Pages so far.
        pages: u64,
        /// Records so far.
        records: u64,
        /// Total records, when the server reports it.
        total: Option<u64>,
    },
    /// A conflict was resolved (or parked).
    Conflict {
        /// The table.
        table: String,
        /// The record key.
        key: Key,
        /// How it was detected.
        detected_by: DetectedBy,
        /// The strategy that decided.
        strategy: String,
        /// The outcome (`take_remote`, `keep_local`, `merged`, `park`).
        outcome: String,
    },
    /// An entry was dead-lettered.
    DeadLettered {
        /// The table.
        table: String,
        /// The record key.
        key: Key,
        /// The entry's sequence number (to retry, edit or discard it).
        seq: u64,
        /// Why.
        error: String,
    },
    /// A pulled item could not be applied and was quarantined (the rest of the page was).
    Quarantined {
        /// The table.
        table: String,
        /// The record key, when readable.
        key: Option<String>,
        /// Why (names table, key and field).
        error: String,
    },
    /// The server assigned a new key to a record created here.
    IdRemapped {
        /// The table.
        table: String,
        /// The local (temporary) key.
        from: Key,
        /// The server's key.
        to: Key,
    },
    /// The server refused our credentials; pushing is paused until new ones are supplied.
    AuthRequired {
        /// The table whose request was refused.
        table: String,
    },
    /// The network is reachable again.
    Online,
    /// The network is unreachable; sync waits and probes.
    Offline,
    /// Leadership changed.
    LeadershipChanged {
        /// Whether this instance now leads.
        leader: bool,
        /// The fencing epoch when leading.
        epoch: Option<u64>,
    },
    /// An actor stopped unexpectedly (and was restarted where possible).
    ActorFailed {
        /// Which actor.
        actor: String,
        /// Why.
        error: String,
    },
}

/// The event bus: a broadcast channel. Slow subscribers miss events (and are told how many),
/// they never slow the engine down.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<SyncEvent>,
}

impl EventBus {
    /// A bus keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            sender: broadcast::channel(capacity).0,
        }
    }

    /// Publishes an event (no subscribers is fine).
    pub fn emit(&self, event: SyncEvent) {
        tracing::debug!(?event, "sync event");
        let _ = self.sender.send(event);
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.sender.subscribe()
    }
}
