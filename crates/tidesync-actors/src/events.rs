//! Typed events: everything the engine does that an application may want to react to.

use serde::Serialize;
use tokio::sync::broadcast;

use tidesync_core::local::OutboxSummary;
use tidesync_core::{DetectedBy, Key, PullWarning};

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
    /// The server's live channel: a hint or change event, or a (re)connect (which pulls
    /// every table).
    Live,
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
    /// Pull pages fetched again after a retryable failure within the cycle.
    pub pull_retries: u64,
    /// Local records deleted by hard-delete reconciliation passes (the server no longer
    /// lists them; see `reconcile_every`).
    pub reconciled: u64,
    /// Everything is in sync: the outbox is empty (dead letters included), no pulled item is
    /// quarantined, the server answered, and every pull of the cycle ran to its end.
    pub converged: bool,
    /// What remains and why, when the cycle did not converge.
    pub remaining: Remaining,
}

/// What a cycle left undone, by reason (DESIGN invariant 12).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Remaining {
    /// The outbox by entry state (ready, waiting out a retry delay, blocked, dead …).
    pub outbox: OutboxSummary,
    /// The server was unreachable or hung: the engine is offline and probes.
    pub offline: bool,
    /// Pushing waits for new credentials.
    pub paused_for_auth: bool,
    /// The server said this client is too old (426): pushing waits for an upgrade.
    pub paused_for_upgrade: bool,
    /// Tables the application paused.
    pub paused_tables: Vec<String>,
    /// Tables whose pull stopped at the page budget (`max_pages`) with more on the server.
    pub pulls_cut_at_budget: Vec<String>,
    /// Tables not pulled this time: the server assigns their keys and a create of theirs
    /// awaits its answer.
    pub pulls_deferred: Vec<String>,
    /// Tables whose pull failed.
    pub pulls_failed: Vec<String>,
    /// Pulled items in quarantine (could not be applied).
    pub quarantined: u64,
    /// What was wrong with the pulled pages, per table, that the configuration can fix
    /// (cursor values that do not parse, pages that did not move the checkpoint). The pages
    /// were applied, so these warnings do not make a cycle incomplete; [`Remaining::reasons`]
    /// lists them.
    pub pull_warnings: Vec<TablePullWarning>,
}

/// A pull warning of one table, with its figures summed over the cycle's pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablePullWarning {
    /// The table.
    pub table: String,
    /// The finding.
    pub warning: PullWarning,
}

impl Remaining {
    /// Whether anything remains.
    pub fn is_empty(&self) -> bool {
        self.outbox.total == 0
            && !self.offline
            && !self.paused_for_auth
            && !self.paused_for_upgrade
            && self.pulls_cut_at_budget.is_empty()
            && self.pulls_deferred.is_empty()
            && self.pulls_failed.is_empty()
            && self.quarantined == 0
    }

    /// One line per reason, for people (the CLI prints them; the daemon logs them).
    pub fn reasons(&self, now_ms: u64) -> Vec<String> {
        let o = &self.outbox;
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut lines = Vec::new();
        if self.offline {
            lines.push(format!(
                "offline: the server does not answer; {} wait{} for it (nothing is dead-lettered for an outage)",
                plural(o.total - o.dead_letters, "entry", "entries"),
                if o.total - o.dead_letters == 1 { "s" } else { "" }
            ));
        }
        if self.paused_for_auth {
            lines.push(
                "paused: auth: the server refused the credentials; pushing resumes with new ones"
                    .into(),
            );
        }
        if self.paused_for_upgrade {
            lines.push(
                "paused: upgrade required: the server says this version is too old (426); \
                 nothing is lost, pushing resumes once a newer version runs"
                    .into(),
            );
        }
        if o.ready > 0 && !self.offline && !self.paused_for_auth && !self.paused_for_upgrade {
            lines.push(format!(
                "{} ready to send",
                plural(o.ready, "entry", "entries")
            ));
        }
        if o.in_flight > 0 {
            lines.push(format!(
                "{} in flight (answer not recorded)",
                plural(o.in_flight, "entry", "entries")
            ));
        }
        if o.waiting > 0 {
            let at = o
                .next_retry_at_ms
                .map(|at| format!(", next in {}", human_ms(at.saturating_sub(now_ms))))
                .unwrap_or_default();
            lines.push(format!(
                "waiting: {} out a retry delay{at}",
                plural(o.waiting, "entry waits", "entries wait")
            ));
        }
        if o.dead_letters > 0 {
            lines.push(format!(
                "dead letters: {} (inspect with `tidesync dead-letters list`)",
                o.dead_letters
            ));
        }
        if o.behind_dead_letter > 0 {
            lines.push(format!(
                "blocked: {} behind a dead letter of their record",
                plural(o.behind_dead_letter, "entry", "entries")
            ));
        }
        if o.waiting_for_reference > 0 {
            lines.push(format!(
                "blocked: {} waiting for a referenced record's create",
                plural(o.waiting_for_reference, "entry", "entries")
            ));
        }
        if o.parked > 0 {
            lines.push(format!(
                "blocked: {} of records with a parked conflict (`tidesync conflicts list`)",
                plural(o.parked, "entry", "entries")
            ));
        }
        if o.behind_head > 0 {
            lines.push(format!(
                "queued: {} behind their record's earlier entry",
                plural(o.behind_head, "entry", "entries")
            ));
        }
        if !self.paused_tables.is_empty() {
            lines.push(format!("paused tables: {}", self.paused_tables.join(", ")));
        }
        if !self.pulls_cut_at_budget.is_empty() {
            lines.push(format!(
                "incomplete pull: {} stopped at the page budget (max_pages); the next sync goes on",
                self.pulls_cut_at_budget.join(", ")
            ));
        }
        if !self.pulls_deferred.is_empty() {
            lines.push(format!(
                "deferred pull: {} (a create awaits the server's key)",
                self.pulls_deferred.join(", ")
            ));
        }
        if !self.pulls_failed.is_empty() {
            lines.push(format!("failed pull: {}", self.pulls_failed.join(", ")));
        }
        for found in &self.pull_warnings {
            lines.push(format!("warning: pull {}: {}", found.table, found.warning));
        }
        if self.quarantined > 0 {
            lines.push(format!(
                "quarantined: {} pulled item{} could not be applied",
                self.quarantined,
                if self.quarantined == 1 { "" } else { "s" }
            ));
        }
        if !o.complete {
            lines.push(format!(
                "(counted the oldest entries only; {} in all)",
                o.total
            ));
        }
        lines
    }
}

/// `1.2s`, `3m 5s`, `2h 10m`: a short duration for people.
pub fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{}.{}s", secs, (ms % 1000) / 100)
    } else if secs < 3600 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
    }
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
        self.pull_retries += other.pull_retries;
        self.reconciled += other.reconciled;
        // What remains is the later report's view.
        self.converged = other.converged;
        self.remaining = other.remaining.clone();
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
        /// What it did, and what remains (boxed: the report is large).
        report: Box<SyncReport>,
        /// How long it took, in milliseconds.
        duration_ms: u64,
    },
    /// A cycle failed (some work could not be done; it will be retried).
    SyncFailed {
        /// What failed.
        error: String,
        /// The error kind.
        kind: String,
        /// What it did before failing, and what remains.
        report: Box<SyncReport>,
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
    /// A pulled page showed something the configuration can fix (sent once per kind of
    /// finding and pull; the sync report sums it over the pages).
    PullWarning {
        /// The table.
        table: String,
        /// The finding, with the figures of the page it was first seen on.
        warning: PullWarning,
    },
    /// A hard-delete reconciliation pass of a table completed (see `reconcile_every`).
    Reconciled {
        /// The table.
        table: String,
        /// Keys the server listed.
        listed: u64,
        /// Local records the server no longer has, deleted locally.
        deleted: u64,
        /// Local records the server no longer has, kept for their pending local change.
        kept: u64,
        /// How long the listing took, in milliseconds.
        listing_ms: u64,
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
    /// The server acknowledged an outbox entry (what a write receipt waits for; see
    /// `tidesync::Receipt`). Acknowledgements that come another way (a pulled version showing
    /// the write, a conflict's outcome) are not announced one by one: receipts read them from
    /// the store after the cycle's `PushCompleted`/`PullCompleted`.
    Acknowledged {
        /// The table.
        table: String,
        /// The record key (as sent: before a server-assigned remap).
        key: Key,
        /// The entry's sequence number: the write's change id.
        seq: u64,
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
    /// The server says this client is too old (HTTP 426): pushing is paused until a newer
    /// version of the application runs; nothing is dead-lettered.
    UpgradeRequired {
        /// The table whose request was refused.
        table: String,
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
    /// The server's live channel (re)connected: a full delta pull follows.
    LiveConnected,
    /// The live channel closed; polling goes on and a reconnect is scheduled.
    LiveDisconnected {
        /// Why (closed by the server, broke, stalled, closed by the engine).
        reason: String,
    },
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
