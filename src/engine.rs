//! The engine handle and its builder.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use tidesync_actors::commands::{
    DiscardDeadLetter, DiscardQuarantined, RetryDeadLetter, RetryQuarantined, SettleParked,
};
use tidesync_actors::{
    ActorSystem, Control, EngineActors, EngineState, EventBus, Scope, StoreCommand, SyncParts,
    SyncReport, SyncSettings, SyncShared,
};
use tidesync_core::hlc::wall_millis;
use tidesync_core::local::{
    AppliedPage, Change, LocalDb, Migrations, OutboxStats, OutboxSummary, ParkedConflict,
    Quarantined, Schema, SchemaChanges, SchemaProgress, SchemaProgressFn, WriteOp,
};
use tidesync_core::{
    ConflictStrategy, Error, HybridClock, InProcessLeader, Key, LeaderElector, OutboxEntry, Record,
    Resolution, Result, Store, TableSpec, Transport,
};

use crate::batch::Batch;
use crate::receipt::{ChangeId, Receipt};
use crate::status::{EngineView, Health, HealthCheck, HealthStatus, PendingEntry, Status};
use crate::table::Table;
use crate::watch::{Events, Watch};
use tidesync_actors::LiveState;

/// How many committed changes a slow watcher may fall behind before it is told it lagged.
const WATCH_CAPACITY: usize = 4096;
/// How many events a slow event subscriber may fall behind.
const EVENT_CAPACITY: usize = 4096;

/// Which server cursor the local store reflects, per table that pulls (see
/// [`Engine::synced_through`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncedThrough {
    /// Each pulling table's stored checkpoint (the transport's cursor, as the server gave
    /// it); `None` for a table never pulled.
    pub tables: std::collections::BTreeMap<String, Option<serde_json::Value>>,
}

impl SyncedThrough {
    /// The cursor `table` was last pulled through; `None` if it was never pulled (or does
    /// not pull).
    pub fn table(&self, table: &str) -> Option<&serde_json::Value> {
        self.tables.get(table).and_then(Option::as_ref)
    }
}

/// Configures and starts an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    tables: Vec<TableSpec>,
    transport: Option<Arc<dyn Transport>>,
    strategies: HashMap<String, Arc<dyn ConflictStrategy>>,
    default_strategy: Option<Arc<dyn ConflictStrategy>>,
    settings: SyncSettings,
    leader: Option<Arc<dyn LeaderElector>>,
    leader_every: Option<Duration>,
    metrics_every: Option<Duration>,
    migrations: Migrations,
    schema_progress: Option<Arc<SchemaProgressFn>>,
    /// Created early when someone subscribes before `start` (see [`EngineBuilder::events`]).
    events: Option<EventBus>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store.as_ref().map(|s| s.backend()))
            .field("tables", &self.tables)
            .field(
                "transport",
                &self.transport.as_ref().map(|t| t.name().to_owned()),
            )
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Registers the migration of `table`'s records from version `to_version - 1` to
    /// `to_version` (declare the version with `TableSpec::version`). At open, the steps from
    /// the version the store holds run over the stored records, the unsent outbox payloads
    /// and the bases, in resumable batches; a record a step refuses (`Err(why)`) is
    /// quarantined with the reason, an unsent entry it refuses is dead-lettered. See
    /// `tidesync_core::local::Migrations` and docs/schema.md.
    pub fn migration(
        mut self,
        table: &str,
        to_version: u32,
        step: impl Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.migrations.add(table, to_version, Arc::new(step));
        self
    }

    /// Registers `table`'s decoder of records from the server (pulled pages and the records
    /// push answers carry), for shape changes that are not version steps (renamed wire fields,
    /// an envelope, a version inferred from the shape). It runs first, on the record as the
    /// server sent it; then, when the table names a `remote_version_field`, the version steps
    /// from the version the record carries. `Err(why)` quarantines the record with the reason.
    /// It must be idempotent (a retried quarantined item goes through it again). See
    /// docs/schema.md.
    pub fn from_remote(
        mut self,
        table: &str,
        decode: impl Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.migrations.add_decoder(table, Arc::new(decode));
        self
    }

    /// Receives the progress of the schema work [`EngineBuilder::start`] does before the
    /// engine exists (index builds and record migrations, a report per batch), e.g. for a
    /// progress bar. Runs on the thread that calls `start`.
    pub fn on_schema_progress(
        mut self,
        progress: impl Fn(&SchemaProgress) + Send + Sync + 'static,
    ) -> Self {
        self.schema_progress = Some(Arc::new(progress));
        self
    }

    /// The local store (e.g. `RedbStore::open("app.redb")?` or `MemoryStore::new()`).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared elsewhere.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Declares a table.
    pub fn table(mut self, spec: TableSpec) -> Self {
        self.tables.push(spec);
        self
    }

    /// The transport (e.g. the REST transport). Without one the engine is local-only.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// A transport already shared elsewhere.
    pub fn shared_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The conflict strategy of one table (default: server wins).
    pub fn conflicts(mut self, table: &str, strategy: impl ConflictStrategy) -> Self {
        self.strategies.insert(table.to_owned(), Arc::new(strategy));
        self
    }

    /// A shared conflict strategy for one table.
    pub fn shared_conflicts(mut self, table: &str, strategy: Arc<dyn ConflictStrategy>) -> Self {
        self.strategies.insert(table.to_owned(), strategy);
        self
    }

    /// The strategy for tables without their own (default: server wins).
    pub fn default_conflicts(mut self, strategy: impl ConflictStrategy) -> Self {
        self.default_strategy = Some(Arc::new(strategy));
        self
    }

    /// All sync settings at once.
    pub fn settings(mut self, settings: SyncSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The periodic sync interval (`None` disables it).
    pub fn interval(mut self, interval: Option<Duration>) -> Self {
        self.settings.interval = interval;
        self
    }

    /// The leader election backend (default: in-process, always leader) and how often to
    /// campaign.
    pub fn leader(mut self, elector: impl LeaderElector, campaign_every: Duration) -> Self {
        self.leader = Some(Arc::new(elector));
        self.leader_every = Some(campaign_every);
        self
    }

    /// How often store-derived gauges (outbox depth, oldest age …) are refreshed (default 5 s).
    pub fn metrics_refresh(mut self, every: Duration) -> Self {
        self.metrics_every = Some(every);
        self
    }

    /// Subscribes to the engine's events before it starts, so that nothing of the first
    /// cycle is missed (`sync_on_start` may finish a cycle before `Engine::events` could be
    /// called on the started engine).
    pub fn events(&mut self) -> Events {
        Events::new(
            self.events
                .get_or_insert_with(|| EventBus::new(EVENT_CAPACITY))
                .subscribe(),
        )
    }

    /// Validates the configuration, recovers from any previous crash (entries that were in
    /// flight go back in the queue) and starts the actors on a dedicated thread.
    pub fn start(self) -> Result<Engine> {
        let store = self.store.ok_or_else(|| {
            Error::config("no store configured: call .store(RedbStore::open(path)?) first")
        })?;
        self.settings.validate()?;
        let schema = Schema::new(self.tables)?;
        for table in self.strategies.keys() {
            schema.table(table).map_err(|_| {
                Error::config("conflict strategy for an undeclared table").table(table)
            })?;
        }
        if let Some(transport) = &self.transport {
            // The transport's own view of each table (a pushed table needs write routes …),
            // so a mistake is refused here rather than met as dead letters at push time.
            for spec in schema.tables() {
                transport.check_table(spec)?;
            }
        }
        for table in self.migrations.tables() {
            schema.table(table).map_err(|_| {
                Error::config("migration or from_remote decoder for an undeclared table")
                    .table(table)
            })?;
        }
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()))
            .with_migrations(self.migrations.clone());
        // A store written by an older storage layout is upgraded first (resumable).
        db.upgrade_layout(&*store)?;
        db.restore_clock(&*store.read()?)?;
        // Before anything can read: indexes declared since the last open are built over the
        // stored records, dropped ones removed, a changed key refused (invariant 13).
        let schema_changes = match &self.schema_progress {
            Some(progress) => db.schema_sync().reconcile_schema_with_progress(
                &*store,
                &self.migrations,
                &**progress,
            )?,
            None => db
                .schema_sync()
                .reconcile_schema(&*store, &self.migrations)?,
        };
        // Entries left in flight by a crash are re-queued when this instance claims
        // leadership (not here: in a multi-process setup they may belong to a live leader).

        let stale_after = self.settings.stale_after;
        let (changes, _) = broadcast::channel(WATCH_CAPACITY);
        let events = self.events.unwrap_or_else(|| EventBus::new(EVENT_CAPACITY));
        let state = Arc::new(EngineState::new());
        let has_live = self.transport.as_ref().is_some_and(|t| t.live().is_some());
        let wiring = Wiring {
            store: store.clone(),
            db: db.clone(),
            changes: changes.clone(),
            events: events.clone(),
            state: state.clone(),
            transport: self.transport,
            strategies: self.strategies,
            default_strategy: self.default_strategy,
            settings: Arc::new(self.settings),
            leader: self.leader.unwrap_or_else(|| Arc::new(InProcessLeader)),
            leader_every: self.leader_every.unwrap_or(Duration::from_secs(2)),
            metrics_every: self.metrics_every.unwrap_or(Duration::from_secs(5)),
        };
        let (system, actors) = ActorSystem::start("engine", move || wiring.start())?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                db,
                actors,
                changes,
                events,
                state,
                stale_after,
                schema_changes,
                has_live,
                system: Mutex::new(system),
            }),
        })
    }
}

/// Everything needed to start the actors inside the engine's System.
struct Wiring {
    store: Arc<dyn Store>,
    db: LocalDb,
    changes: broadcast::Sender<Change>,
    events: EventBus,
    state: Arc<EngineState>,
    transport: Option<Arc<dyn Transport>>,
    strategies: HashMap<String, Arc<dyn ConflictStrategy>>,
    default_strategy: Option<Arc<dyn ConflictStrategy>>,
    settings: Arc<SyncSettings>,
    leader: Arc<dyn LeaderElector>,
    leader_every: Duration,
    metrics_every: Duration,
}

impl Wiring {
    /// Runs inside the System: starts the writer, and the seven sync actors when there is a
    /// transport (`SyncActors::start`).
    fn start(self) -> EngineActors {
        let Some(transport) = self.transport else {
            return EngineActors::start_local(self.store, self.db, self.changes);
        };
        let shared = SyncShared {
            store: self.store,
            db: self.db,
            transport,
            settings: self.settings,
            events: self.events,
            state: self.state,
        };
        EngineActors::start_sync(SyncParts {
            shared,
            changes: self.changes,
            strategies: self.strategies,
            default_strategy: self.default_strategy,
            elector: self.leader,
            campaign_every: self.leader_every,
            metrics_every: self.metrics_every,
        })
    }
}

struct Inner {
    store: Arc<dyn Store>,
    db: LocalDb,
    actors: EngineActors,
    changes: broadcast::Sender<Change>,
    events: EventBus,
    state: Arc<EngineState>,
    stale_after: Duration,
    schema_changes: SchemaChanges,
    /// The transport offers a live channel (`Status::live` is then reported).
    has_live: bool,
    system: Mutex<ActorSystem>,
}

/// A running engine. Cheap to clone; `Send + Sync`; usable from any async runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.inner.store.backend())
            .finish()
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    // ----- local data --------------------------------------------------------------------

    /// A typed handle on `table`; `T` is any serde type whose JSON form is an object.
    /// Use `serde_json::Value` for untyped JSON access.
    pub fn table<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<Table<T>> {
        self.inner.db.schema().table(table)?;
        Ok(Table::new(self.clone(), table))
    }

    /// An atomic multi-record, multi-table batch.
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }

    /// Committed changes, of one table or of all; includes changes made by sync.
    pub fn watch(&self, table: Option<&str>) -> Result<Watch> {
        if let Some(table) = table {
            self.inner.db.schema().table(table)?;
        }
        Ok(Watch::new(
            self.inner.changes.subscribe(),
            table.map(str::to_owned),
        ))
    }

    // ----- sync --------------------------------------------------------------------------

    async fn run(&self, scope: Scope) -> Result<SyncReport> {
        self.inner.actors.sync(scope).await
    }

    /// Pushes, then pulls every table; joins a running cycle instead of racing it.
    pub async fn sync(&self) -> Result<SyncReport> {
        self.run(Scope::all()).await
    }

    /// Pushes the outbox only.
    pub async fn push(&self) -> Result<SyncReport> {
        self.run(Scope::push_only()).await
    }

    /// Pulls every table (or one) only.
    pub async fn pull(&self, table: Option<&str>) -> Result<SyncReport> {
        let mut scope = Scope::pull_only();
        if let Some(table) = table {
            self.inner.db.schema().table(table)?;
            scope.tables = Some([table.to_owned()].into());
        }
        self.run(scope).await
    }

    /// Pushes and pulls one table.
    pub async fn sync_table(&self, table: &str) -> Result<SyncReport> {
        self.inner.db.schema().table(table)?;
        self.run(Scope::table(table)).await
    }

    /// Sends a lifecycle message to the scheduler. A local-only engine has nothing to start,
    /// stop, pause or resume: these calls succeed and do nothing.
    fn control(&self, control: Control) -> Result<()> {
        self.inner.actors.control(control);
        Ok(())
    }

    /// What opening the store with this engine's schema changed: tables added, indexes built
    /// over the stored records or dropped, tables the store holds that the schema no longer
    /// declares (kept untouched).
    pub fn schema_changes(&self) -> &SchemaChanges {
        &self.inner.schema_changes
    }

    /// Starts syncing again after [`Engine::stop`] (idempotent). Writes made while stopped
    /// were queued and are pushed now.
    pub fn start(&self) -> Result<()> {
        self.control(Control::Start)
    }

    /// Stops syncing (idempotent). Local reads and writes keep working and writes keep being
    /// queued: nothing is lost, it is pushed after [`Engine::start`].
    pub fn stop(&self) -> Result<()> {
        self.control(Control::Stop)
    }

    /// Pauses syncing (idempotent); manual calls fail while paused.
    pub fn pause(&self) -> Result<()> {
        self.control(Control::Pause)
    }

    /// Resumes syncing and syncs now (idempotent).
    pub fn resume(&self) -> Result<()> {
        self.control(Control::Resume)
    }

    /// Pauses one table: its entries wait and it is not pulled.
    pub fn pause_table(&self, table: &str) -> Result<()> {
        self.inner.db.schema().table(table)?;
        self.control(Control::PauseTable(table.to_owned()))
    }

    /// Resumes one table.
    pub fn resume_table(&self, table: &str) -> Result<()> {
        self.inner.db.schema().table(table)?;
        self.control(Control::ResumeTable(table.to_owned()))
    }

    /// Tells the engine the network is (un)available (e.g. from the OS).
    pub fn set_online(&self, online: bool) -> Result<()> {
        self.control(Control::SetOnline(online))
    }

    /// The host app came to the foreground: sync now.
    pub fn foreground(&self) -> Result<()> {
        self.control(Control::Foreground)
    }

    /// New credentials are available (after an `AuthRequired` event): resume pushing.
    pub fn credentials_updated(&self) -> Result<()> {
        self.control(Control::CredentialsUpdated)
    }

    /// Engine events (sync started/completed/failed, conflicts, dead letters, …).
    pub fn events(&self) -> Events {
        Events::new(self.inner.events.subscribe())
    }

    // ----- receipts and checkpoints ---------------------------------------------------------

    /// The receipt of a change, by the id a [`crate::Receipt`] gave before (e.g. in a run of
    /// the application before a restart). Reads nothing until asked: see
    /// [`crate::Receipt::pushed`] and [`crate::Receipt::state`].
    pub fn receipt(&self, change: ChangeId) -> Receipt {
        Receipt::new(self.clone(), Some(change))
    }

    /// Which server cursor (pull checkpoint) the local store reflects, per table that pulls:
    /// `None` for a table never pulled. Read from the stored checkpoints, so it is what a
    /// restart would resume from.
    pub fn synced_through(&self) -> Result<SyncedThrough> {
        let read = self.inner.store.read()?;
        let mut tables = std::collections::BTreeMap::new();
        for spec in self.inner.db.schema().tables().filter(|spec| spec.pull) {
            let cursor = self.inner.db.remote().checkpoint(&*read, &spec.name)?;
            tables.insert(spec.name.clone(), cursor);
        }
        Ok(SyncedThrough { tables })
    }

    /// A raw subscription to the engine's events (receipts wait on it).
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<tidesync_actors::SyncEvent> {
        self.inner.events.subscribe()
    }

    /// Whether the engine syncs (has a transport).
    pub(crate) fn syncs(&self) -> bool {
        self.inner.actors.syncs()
    }

    /// Whether the engine's store writer still runs (false after [`Engine::shutdown`]).
    pub(crate) fn is_running(&self) -> bool {
        self.inner
            .actors
            .liveness()
            .first()
            .is_none_or(|(_, alive)| *alive)
    }

    // ----- inspection ----------------------------------------------------------------------

    /// Outbox entries in push order (optionally of one table), at most `limit`.
    pub fn outbox(&self, table: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner
            .db
            .outbox()
            .entries(&*self.inner.store.read()?, table, limit)
    }

    /// Queue depth and oldest pending entry of `table`. Counts the table's queue (O(queue),
    /// in pages of 1 024 index rows); [`Engine::status`] gives the totals over every table in
    /// a few point reads.
    pub fn outbox_stats(&self, table: &str) -> Result<OutboxStats> {
        self.inner
            .db
            .outbox()
            .stats(&*self.inner.store.read()?, table)
    }

    /// The entries the pusher may send now (per-record heads that are due and whose
    /// references have been created), at most `limit`, in push order.
    pub fn ready_for_push(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner.db.outbox().ready_heads(
            &*self.inner.store.read()?,
            wall_millis(),
            limit,
            &Default::default(),
            &self.inner.state.paused_tables(),
        )
    }

    /// Outbox entries in push order (optionally of one table), at most `limit`, each with where
    /// it stands and why it has not reached the server yet: `ready`, `retry in 3.2s`,
    /// `blocked behind #12 (dead letter)`, `waiting for posts/p1`, `paused: auth`, `offline`.
    pub fn outbox_states(&self, table: Option<&str>, limit: usize) -> Result<Vec<PendingEntry>> {
        let read = self.inner.store.read()?;
        let db = &self.inner.db;
        let now = wall_millis();
        let engine = EngineView::of(&self.inner.state);
        db.outbox()
            .entries(&*read, table, limit)?
            .into_iter()
            .map(|entry| {
                let state = db.outbox().entry_state(&*read, &entry, now)?;
                let reason = engine.reason(&entry, &state, now);
                Ok(PendingEntry {
                    entry,
                    state,
                    reason,
                })
            })
            .collect()
    }

    /// The outbox counted by entry state, reading at most `limit` entries (the total is
    /// exact; `complete` says whether every entry was counted).
    pub fn outbox_summary(&self, limit: usize) -> Result<OutboxSummary> {
        self.inner
            .db
            .outbox()
            .summary(&*self.inner.store.read()?, wall_millis(), limit)
    }

    /// A snapshot of the engine's state; queue figures are read live from the store.
    pub fn status(&self) -> Result<Status> {
        let state = &self.inner.state;
        let read = self.inner.store.read()?;
        // A few point reads, however long the queue: a UI may poll this.
        let totals = self.inner.db.outbox().totals(&*read)?;
        let (depth, oldest) = (totals.depth, totals.oldest_created_at_ms);
        let mut paused_tables: Vec<String> = state.paused_tables().into_iter().collect();
        paused_tables.sort();
        let last = state.last_success_ms.load(Ordering::SeqCst);
        Ok(Status {
            running: state.running.load(Ordering::SeqCst),
            paused: state.paused.load(Ordering::SeqCst),
            online: state.online.load(Ordering::SeqCst),
            offline_since_ms: match state.offline_since_ms.load(Ordering::SeqCst) {
                0 => None,
                since => Some(since),
            },
            leader: state.leader.load(Ordering::SeqCst),
            epoch: state.epoch(),
            syncing: state.syncing.load(Ordering::SeqCst),
            auth_required: state.auth_required.load(Ordering::SeqCst),
            upgrade_required: state.upgrade_required.load(Ordering::SeqCst),
            last_successful_sync_ms: (last > 0).then_some(last),
            last_error: state.last_error(),
            queue_depth: depth,
            oldest_pending_age_ms: oldest.map(|t| wall_millis().saturating_sub(t)),
            dead_letters: self.inner.db.outbox().dead_letter_count(&*read)?,
            parked_conflicts: self.inner.db.parked().parked_conflicts(&*read, None)?.len() as u64,
            quarantined: self.inner.db.parked().quarantined_count(&*read)?,
            paused_tables,
            live: self
                .inner
                .has_live
                .then(|| crate::status::LiveStatus::of(&state.live)),
        })
    }

    /// Health: actor liveness, store readability, staleness (never before the first sync;
    /// `SyncSettings::stale_after`), the error rate as a true ratio, credentials, dead letters.
    pub async fn health(&self) -> Health {
        let stale_after = self.inner.stale_after;
        let mut checks = Vec::new();
        let mut critical = false;
        let mut check = |name: &str, ok: bool, detail: String, is_critical: bool| {
            critical |= !ok && is_critical;
            checks.push(HealthCheck {
                name: name.to_owned(),
                ok,
                detail,
            });
        };
        let alive = self.inner.actors.liveness();
        let dead: Vec<&str> = alive
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        check(
            "actors",
            dead.is_empty(),
            if dead.is_empty() {
                "all running".into()
            } else {
                format!("stopped: {}", dead.join(", "))
            },
            true,
        );
        match self.status() {
            Err(err) => check("store", false, err.to_string(), true),
            Ok(status) => {
                check("store", true, "readable".into(), true);
                let stale = status
                    .last_successful_sync_ms
                    .map(|t| wall_millis().saturating_sub(t) > stale_after.as_millis() as u64);
                check(
                    "freshness",
                    stale != Some(true),
                    match status.last_successful_sync_ms {
                        None => "no sync yet".into(),
                        Some(t) => format!(
                            "last successful sync {} ms ago",
                            wall_millis().saturating_sub(t)
                        ),
                    },
                    false,
                );
                check(
                    "credentials",
                    !status.auth_required,
                    if status.auth_required {
                        "auth required".into()
                    } else {
                        "ok".into()
                    },
                    false,
                );
                check(
                    "client_version",
                    !status.upgrade_required,
                    if status.upgrade_required {
                        "upgrade required: the server refuses this version (426)".into()
                    } else {
                        "ok".into()
                    },
                    false,
                );
                check(
                    "online",
                    status.online,
                    if status.online {
                        "reachable".into()
                    } else {
                        "offline".into()
                    },
                    false,
                );
                if let Some(live) = &status.live {
                    let open = live.state == LiveState::Connected;
                    check(
                        "live_channel",
                        open,
                        format!("{} ({} reconnects)", live.state.as_str(), live.reconnects),
                        false,
                    );
                }
                check(
                    "dead_letters",
                    status.dead_letters == 0,
                    format!("{} waiting", status.dead_letters),
                    false,
                );
                check(
                    "quarantine",
                    status.quarantined == 0,
                    format!("{} pulled items quarantined", status.quarantined),
                    false,
                );
            }
        }
        let state = &self.inner.state;
        let requests = state.requests.load(Ordering::Relaxed);
        let failures = state.request_failures.load(Ordering::Relaxed);
        let error_rate = if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        };
        check(
            "error_rate",
            error_rate <= 0.5,
            format!("{failures} of {requests} requests failed"),
            false,
        );
        let status = if critical {
            HealthStatus::Unhealthy
        } else if checks.iter().any(|c| !c.ok) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        Health {
            status,
            error_rate,
            checks,
        }
    }

    // ----- dead letters and parked conflicts ----------------------------------------------

    /// Dead-lettered entries, optionally of one table.
    pub fn dead_letters(&self, table: Option<&str>) -> Result<Vec<OutboxEntry>> {
        self.inner
            .db
            .outbox()
            .dead_letters(&*self.inner.store.read()?, table)
    }

    /// Runs a maintenance command (not part of a sync cycle) through the store writer.
    async fn command<C: StoreCommand>(&self, command: C) -> Result<C::Output> {
        self.inner.actors.command(command).await
    }

    /// Puts a dead letter back at its place in its record's order (optionally with an edited
    /// record) and pushes soon.
    pub async fn retry_dead_letter(&self, seq: u64, edited: Option<Record>) -> Result<OutboxEntry> {
        let entry = self.command(RetryDeadLetter { seq, edited }).await?;
        self.inner.actors.outbox_changed();
        Ok(entry)
    }

    /// Discards a dead letter for good; the record's later entries proceed.
    pub async fn discard_dead_letter(&self, seq: u64) -> Result<OutboxEntry> {
        let entry = self.command(DiscardDeadLetter { seq }).await?;
        self.inner.actors.outbox_changed();
        Ok(entry)
    }

    /// Pulled items that could not be applied (bad key, wrong type …), oldest first.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>> {
        self.inner
            .db
            .parked()
            .quarantined(&*self.inner.store.read()?, limit)
    }

    /// Applies quarantined item `seq` again, as the pulled version it was (e.g. after the
    /// table's spec was fixed); it leaves the quarantine, and comes back under a new number if
    /// it is refused again (see the returned [`AppliedPage::quarantined`]). A record with
    /// local changes waiting to be pushed is refused with [`ErrorKind::Conflict`](tidesync_core::ErrorKind::Conflict).
    pub async fn retry_quarantined(&self, seq: u64) -> Result<AppliedPage> {
        self.command(RetryQuarantined { seq }).await
    }

    /// Drops quarantined item `seq` for good; returns it.
    pub async fn discard_quarantined(&self, seq: u64) -> Result<Quarantined> {
        self.command(DiscardQuarantined { seq }).await
    }

    /// Conflicts parked for the application.
    pub fn parked_conflicts(&self, table: Option<&str>) -> Result<Vec<ParkedConflict>> {
        self.inner
            .db
            .parked()
            .parked_conflicts(&*self.inner.store.read()?, table)
    }

    /// Settles a parked conflict with the application's decision (it must not be `Park`).
    pub async fn settle_conflict(
        &self,
        table: &str,
        key: impl Into<Key>,
        resolution: Resolution,
    ) -> Result<()> {
        let key = key.into();
        if resolution == Resolution::Park {
            return Err(
                Error::invalid("settle a conflict with take_remote, keep_local or merged")
                    .table(table)
                    .key(&key),
            );
        }
        let table = table.to_owned();
        self.command(SettleParked {
            table,
            key,
            resolution,
        })
        .await?;
        self.inner.actors.outbox_changed();
        Ok(())
    }

    // ----- lifecycle ---------------------------------------------------------------------

    /// The running actors (typed calls).
    pub(crate) fn actors(&self) -> &EngineActors {
        &self.inner.actors
    }

    /// The store writer, for tests and tools that run closures against the local database
    /// (`tidesync_actors::StoreClosure`). Only with the `test-support` feature: applications write
    /// through tables, batches and the typed commands, which keep the engine's rules.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn store_writer(&self) -> actix::Addr<tidesync_actors::StoreWriterActor> {
        self.inner.actors.store_writer_addr()
    }

    /// Stops the actors and the engine thread (resigning leadership first). Later writes fail
    /// with [`ErrorKind::Closed`](tidesync_core::ErrorKind::Closed); reads keep working. Idempotent.
    pub fn shutdown(&self) {
        let leading_epoch = self.inner.state.epoch();
        if self.inner.actors.syncs() {
            let resign = self.inner.actors.stop_and_resign();
            // Give the elector a moment to release its lease; never hang shutdown on it.
            let _ = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .build()
                            .map(|rt| {
                                rt.block_on(async {
                                    tokio::time::timeout(Duration::from_secs(2), resign).await
                                })
                            })
                    })
                    .join()
            });
        }
        match self.inner.system.lock() {
            Ok(mut system) => system.stop(),
            Err(poisoned) => poisoned.into_inner().stop(),
        }
        // The actors are gone: what this leader had in flight goes back in the queue (still
        // sealed, same idempotency keys), unless a newer leader already took over.
        if let Some(epoch) = leading_epoch
            && let Err(err) = self.requeue_in_flight(epoch)
        {
            tracing::warn!(error = %err, "in-flight entries stay flagged until the next leader");
        }
    }

    fn requeue_in_flight(&self, epoch: u64) -> Result<()> {
        let mut txn = self.inner.store.write()?;
        self.inner.db.fence().check_epoch(&*txn, Some(epoch))?;
        self.inner.db.outbox().reset_in_flight(&mut *txn)?;
        txn.commit()
    }

    pub(crate) fn db(&self) -> &LocalDb {
        &self.inner.db
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) async fn local_write(&self, ops: Vec<WriteOp>) -> Result<Vec<Change>> {
        self.inner.actors.local_write(ops).await
    }
}
