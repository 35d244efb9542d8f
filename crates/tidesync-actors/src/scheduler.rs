//! The Scheduler actor: decides when to sync, runs one cycle (push, then pull; tables whose
//! transport asks for it are pulled before the push) at a time, and
//! keeps the engine's lifecycle: start/stop, pause/resume, online/offline, leadership.
//!
//! Manual calls (`sync`, `push`, `pull`, `sync_table`) obey the same guards as automatic
//! triggers and *join* a running cycle that covers them instead of racing it; what the running
//! cycle does not cover runs right after it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use tidesync_core::local::OutboxSummary;
use tidesync_core::{Error, ErrorKind, Result};

use crate::backoff::exponential_ceiling;
use crate::commands::TakeOver;
use crate::events::{Remaining, SyncEvent, SyncReport, TablePullWarning, Trigger};
use crate::live::{LiveEvent, Want};
use crate::puller::{PullNow, PullerActor};
use crate::pusher::{PushNow, PusherActor, next_due_in};
use crate::reconcile::ReconcileIfDue;
use crate::shared::SyncShared;
use crate::store_writer::{OutboxChanged, StoreWriterActor, Unfenced};
use crate::telemetry;

/// What a cycle covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Push the outbox.
    pub push: bool,
    /// Pull remote changes.
    pub pull: bool,
    /// Only these tables (`None`: all).
    pub tables: Option<BTreeSet<String>>,
}

impl Scope {
    /// Push and pull everything.
    pub fn all() -> Self {
        Scope {
            push: true,
            pull: true,
            tables: None,
        }
    }

    /// Push only.
    pub fn push_only() -> Self {
        Scope {
            push: true,
            pull: false,
            tables: None,
        }
    }

    /// Pull only.
    pub fn pull_only() -> Self {
        Scope {
            push: false,
            pull: true,
            tables: None,
        }
    }

    /// Push and pull one table.
    pub fn table(table: &str) -> Self {
        Scope {
            push: true,
            pull: true,
            tables: Some(BTreeSet::from([table.to_owned()])),
        }
    }

    fn covers(&self, other: &Scope) -> bool {
        (!other.push || self.push)
            && (!other.pull || self.pull)
            && match (&self.tables, &other.tables) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.is_subset(mine),
            }
    }

    fn union(&self, other: &Scope) -> Scope {
        Scope {
            push: self.push || other.push,
            pull: self.pull || other.pull,
            tables: match (&self.tables, &other.tables) {
                (Some(a), Some(b)) => Some(a.union(b).cloned().collect()),
                _ => None,
            },
        }
    }
}

/// Run a cycle now (a manual call); resolves when a cycle covering `scope` finished.
#[derive(Message, Debug)]
#[rtype(result = "Result<SyncReport>")]
pub struct SyncNow {
    /// What to sync.
    pub scope: Scope,
}

/// Lifecycle and trigger messages.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Control {
    /// Start scheduling (idempotent).
    Start,
    /// Stop scheduling; a running cycle finishes (idempotent).
    Stop,
    /// Pause all syncing (idempotent).
    Pause,
    /// Resume syncing and sync now (idempotent).
    Resume,
    /// Pause one table.
    PauseTable(String),
    /// Resume one table.
    ResumeTable(String),
    /// The host says the network is (un)available.
    SetOnline(bool),
    /// The host app came to the foreground.
    Foreground,
    /// New credentials are available: resume pushing.
    CredentialsUpdated,
}

/// Leadership changed (from the Leader actor).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    /// Whether this instance leads now.
    pub leader: bool,
    /// The fencing epoch when leading.
    pub epoch: Option<u64>,
}

struct Waiter {
    scope: Scope,
    reply: oneshot::Sender<Result<SyncReport>>,
    /// The caller arrived after the running cycle began: it needs the next cycle.
    needs_next: bool,
}

/// The Scheduler actor. See the module docs.
pub struct SchedulerActor {
    shared: SyncShared,
    pusher: Addr<PusherActor>,
    puller: Addr<PullerActor>,
    writer: Addr<StoreWriterActor>,
    started: bool,
    leadership_known: bool,
    cycle_running: bool,
    /// Set by the running cycle once its push phase began: later callers need a new cycle.
    cycle_began: Arc<AtomicBool>,
    waiters: Vec<Waiter>,
    queued_auto: Option<(Scope, Trigger)>,
    interval: Option<SpawnHandle>,
    debounce: Option<SpawnHandle>,
    retry_timer: Option<SpawnHandle>,
    /// When the last cycle that pushed started (wall-clock ms; 0 before any): entries due
    /// before it were seen by its push, so only later ones need a retry timer.
    pushed_since_ms: u64,
    probe: Option<SpawnHandle>,
    probe_attempt: u32,
    /// Logs the running cycle's progress now and then (a long cycle is not silent).
    progress_log: Option<SpawnHandle>,
    /// Since when the server is unreachable.
    offline_since: Option<Instant>,
    /// The live channel's loop, when the transport has one (see `crate::live`).
    live: Option<watch::Sender<Want>>,
    /// The host said the network is gone: the live channel stays closed until it returns.
    live_suspended: bool,
    /// Tables named by live hints since the last hint-driven pull began (`None` in the set's
    /// place: every table).
    live_pending: Option<BTreeSet<String>>,
    live_pending_all: bool,
    live_debounce: Option<SpawnHandle>,
}

/// How often a running cycle logs its progress at `info`.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(10);

impl SchedulerActor {
    /// A scheduler driving `pusher` and `puller`; `writer` claims the database for each new
    /// leadership epoch (fencing) and re-queues what a previous leader left in flight.
    pub fn new(
        shared: SyncShared,
        pusher: Addr<PusherActor>,
        puller: Addr<PullerActor>,
        writer: Addr<StoreWriterActor>,
    ) -> Self {
        SchedulerActor {
            shared,
            pusher,
            puller,
            writer,
            started: false,
            leadership_known: false,
            cycle_running: false,
            cycle_began: Arc::new(AtomicBool::new(false)),
            waiters: Vec::new(),
            queued_auto: None,
            interval: None,
            debounce: None,
            retry_timer: None,
            pushed_since_ms: 0,
            probe: None,
            probe_attempt: 0,
            progress_log: None,
            offline_since: None,
            live: None,
            live_suspended: false,
            live_pending: None,
            live_pending_all: false,
            live_debounce: None,
        }
    }

    /// Opens or closes the live channel as the engine's state asks: open while started,
    /// leading and not told by the host that the network is gone.
    fn update_live(&mut self) {
        let open =
            self.started && self.shared.state.leader.load(Ordering::SeqCst) && !self.live_suspended;
        if let Some(want) = &self.live {
            want.send_if_modified(|w| {
                let changed = w.open != open;
                w.open = open;
                changed
            });
        }
    }

    /// Cuts the live channel's reconnect wait short (the network or the app came back).
    fn kick_live(&mut self) {
        if let Some(want) = &self.live {
            want.send_modify(|w| w.kick = w.kick.wrapping_add(1));
        }
    }

    /// Starts the live channel's loop once, if the transport offers a channel.
    fn start_live(&mut self, ctx: &mut Context<Self>) {
        if self.live.is_some() {
            return;
        }
        let Some(channel) = self.shared.transport.live() else {
            return;
        };
        let (tx, rx) = watch::channel(Want::default());
        let fut = crate::live::run(self.shared.clone(), channel, rx, ctx.address().recipient());
        ctx.spawn(actix::fut::wrap_future::<_, Self>(fut));
        self.live = Some(tx);
    }

    fn guard(&self) -> Result<()> {
        let state = &self.shared.state;
        if !self.started {
            return Err(Error::new(
                ErrorKind::Closed,
                "sync is stopped: call start() first",
            ));
        }
        if !state.leader.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Closed,
                "this instance is not the sync leader",
            ));
        }
        if state.paused.load(Ordering::SeqCst) {
            return Err(Error::invalid("sync is paused: call resume() first"));
        }
        Ok(())
    }

    /// An automatic trigger: runs if the guards pass and (unless it is a probe) we are online.
    fn trigger(&mut self, trigger: Trigger, scope: Scope, ctx: &mut Context<Self>) {
        if self.guard().is_err() {
            return;
        }
        let online = self.shared.state.online.load(Ordering::SeqCst);
        // Offline, only a probe, a reconnection or the app coming to the foreground tries
        // the server (and such a cycle sends one request until the server answers).
        if !online
            && !matches!(
                trigger,
                Trigger::Probe | Trigger::Online | Trigger::Foreground | Trigger::Live
            )
        {
            return;
        }
        if self.cycle_running {
            self.queued_auto = Some(match self.queued_auto.take() {
                Some((queued, t)) => (queued.union(&scope), t),
                None => (scope, trigger),
            });
            return;
        }
        self.run_cycle(scope, trigger, ctx);
    }

    fn run_cycle(&mut self, scope: Scope, trigger: Trigger, ctx: &mut Context<Self>) {
        self.cycle_running = true;
        let started_ms = tidesync_core::hlc::wall_millis();
        let state = &self.shared.state;
        state.syncing.store(true, Ordering::SeqCst);
        state.cycle_pushed.store(0, Ordering::Relaxed);
        state.cycle_applied.store(0, Ordering::Relaxed);
        self.cycle_began = Arc::new(AtomicBool::new(false));
        let cycle_start = Instant::now();
        self.progress_log = Some(ctx.run_interval(PROGRESS_LOG_EVERY, move |act, _ctx| {
            let state = &act.shared.state;
            tracing::info!(
                running_s = cycle_start.elapsed().as_secs(),
                pushed = state.cycle_pushed.load(Ordering::Relaxed),
                applied = state.cycle_applied.load(Ordering::Relaxed),
                ?trigger,
                "sync cycle in progress"
            );
        }));
        let fut = cycle(
            self.cycle_began.clone(),
            self.shared.clone(),
            self.pusher.clone(),
            self.puller.clone(),
            scope.clone(),
            trigger,
        );
        ctx.spawn(actix::fut::wrap_future::<_, Self>(fut).map(
            move |(result, network_down), act, ctx| {
                if scope.push && scope.tables.is_none() {
                    act.pushed_since_ms = started_ms;
                }
                act.cycle_done(scope, result, network_down, ctx);
            },
        ));
    }

    fn cycle_done(
        &mut self,
        scope: Scope,
        result: Result<SyncReport>,
        network_down: bool,
        ctx: &mut Context<Self>,
    ) {
        self.cycle_running = false;
        if let Some(handle) = self.progress_log.take() {
            ctx.cancel_future(handle);
        }
        let state = &self.shared.state;
        state.syncing.store(false, Ordering::SeqCst);
        let now = tidesync_core::hlc::wall_millis();
        match &result {
            Ok(_) => {
                state.last_success_ms.store(now, Ordering::SeqCst);
                state.set_last_error(None);
            }
            Err(err) => {
                state.last_failure_ms.store(now, Ordering::SeqCst);
                state.set_last_error(Some(err.to_string()));
            }
        }

        // Offline first: a cycle started next (for callers it did not cover) is then a probe,
        // sending one request until the server answers.
        if network_down {
            self.go_offline(ctx);
        }

        // Answer every caller this cycle covered; the others get a cycle of their own.
        let mut uncovered: Option<Scope> = None;
        let mut still_waiting = Vec::new();
        for waiter in self.waiters.drain(..) {
            if !waiter.needs_next && scope.covers(&waiter.scope) {
                let answer = match &result {
                    Ok(report) => Ok(report.clone()),
                    Err(err) => Err(err.duplicate()),
                };
                let _ = waiter.reply.send(answer);
            } else {
                uncovered = Some(match uncovered {
                    Some(u) => u.union(&waiter.scope),
                    None => waiter.scope.clone(),
                });
                still_waiting.push(Waiter {
                    needs_next: false,
                    ..waiter
                });
            }
        }
        self.waiters = still_waiting;
        if let Some(next) = uncovered {
            let next = match self.queued_auto.take() {
                Some((auto, _)) => next.union(&auto),
                None => next,
            };
            self.run_cycle(next, Trigger::Manual, ctx);
        } else if let Some((auto, trigger)) = self.queued_auto.take() {
            self.trigger(trigger, auto, ctx);
        }
        if let Err(err) = &result
            && err.kind() == ErrorKind::Fenced
        {
            tracing::warn!(error = %err, "deposed by a newer leader: sync stops here");
            self.apply_leadership(
                LeadershipChanged {
                    leader: false,
                    epoch: None,
                },
                ctx,
            );
        }
        if !network_down {
            // The server answered (whatever it said): coming back online pushes what waited
            // (entries in backoff are made due); if a cycle is already running, the trigger
            // queues behind it.
            self.go_online(ctx, true);
        }
        self.arm_retry_timer(ctx);
    }

    /// Wakes up when the earliest entry in backoff becomes due.
    fn arm_retry_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.retry_timer.take() {
            ctx.cancel_future(handle);
        }
        match next_due_in(&self.shared, self.pushed_since_ms) {
            Ok(Some(delay)) => {
                let delay = delay + Duration::from_millis(5);
                self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
                    act.retry_timer = None;
                    act.trigger(Trigger::Retry, Scope::push_only(), ctx);
                }));
            }
            Ok(None) => {}
            Err(err) => tracing::error!(error = %err, "cannot read the outbox to schedule retries"),
        }
    }

    fn go_offline(&mut self, ctx: &mut Context<Self>) {
        let state = &self.shared.state;
        if state.online.swap(false, Ordering::SeqCst) {
            self.offline_since = Some(Instant::now());
            state
                .offline_since_ms
                .store(tidesync_core::hlc::wall_millis(), Ordering::SeqCst);
            tracing::warn!("server unreachable: sync goes offline and probes with backoff");
            metrics::gauge!(telemetry::ONLINE).set(0.0);
            self.shared.events.emit(SyncEvent::Offline);
        }
        self.schedule_probe(ctx);
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.probe.take() {
            ctx.cancel_future(handle);
        }
        self.probe_attempt = self.probe_attempt.saturating_add(1);
        let settings = &self.shared.settings;
        let delay =
            exponential_ceiling(settings.probe_base, settings.probe_cap, self.probe_attempt);
        self.probe = Some(ctx.run_later(delay, |act, ctx| {
            act.probe = None;
            act.trigger(Trigger::Probe, Scope::all(), ctx);
        }));
    }

    fn go_online(&mut self, ctx: &mut Context<Self>, sync_now: bool) {
        if let Some(handle) = self.probe.take() {
            ctx.cancel_future(handle);
        }
        self.probe_attempt = 0;
        if !self.shared.state.online.swap(true, Ordering::SeqCst) {
            let offline_for = self.offline_since.take().map(|since| since.elapsed());
            if let Some(elapsed) = offline_for {
                telemetry::offline_for(elapsed);
            }
            self.shared
                .state
                .offline_since_ms
                .store(0, Ordering::SeqCst);
            tracing::info!(
                offline_s = offline_for.map(|e| e.as_secs()),
                "server reachable again"
            );
            self.shared
                .state
                .retry_waiting_now
                .store(true, Ordering::SeqCst);
            metrics::gauge!(telemetry::ONLINE).set(1.0);
            self.shared.events.emit(SyncEvent::Online);
            // The server answered: the live channel may open again even if the host's
            // `set_online(true)` never comes.
            if std::mem::take(&mut self.live_suspended) {
                self.update_live();
                self.kick_live();
            }
            if sync_now {
                self.trigger(Trigger::Online, Scope::all(), ctx);
            }
        }
    }

    fn start(&mut self, ctx: &mut Context<Self>) {
        if self.started {
            return;
        }
        self.started = true;
        self.shared.state.running.store(true, Ordering::SeqCst);
        self.start_live(ctx);
        self.update_live();
        if let Some(interval) = self.shared.settings.interval {
            self.interval = Some(ctx.run_interval(interval, |act, ctx| {
                act.trigger(Trigger::Interval, Scope::all(), ctx);
            }));
        }
        if self.shared.settings.sync_on_start {
            self.trigger(Trigger::Start, Scope::all(), ctx);
        } else {
            self.arm_retry_timer(ctx);
        }
    }

    fn stop(&mut self, ctx: &mut Context<Self>) {
        if !self.started {
            return;
        }
        self.started = false;
        self.shared.state.running.store(false, Ordering::SeqCst);
        self.update_live();
        self.live_pending = None;
        self.live_pending_all = false;
        for handle in [
            self.interval.take(),
            self.debounce.take(),
            self.live_debounce.take(),
            self.retry_timer.take(),
            self.probe.take(),
        ]
        .into_iter()
        .flatten()
        {
            ctx.cancel_future(handle);
        }
        self.queued_auto = None;
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;
}

impl Handler<SyncNow> for SchedulerActor {
    type Result = ResponseFuture<Result<SyncReport>>;

    fn handle(&mut self, msg: SyncNow, ctx: &mut Context<Self>) -> Self::Result {
        let undecided = self.started && !self.leadership_known;
        if !undecided && let Err(err) = self.guard() {
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = oneshot::channel();
        let needs_next = self.cycle_running && self.cycle_began.load(Ordering::SeqCst);
        self.waiters.push(Waiter {
            scope: msg.scope.clone(),
            reply: tx,
            needs_next,
        });
        // Right after start the first election may still run: wait for it, then sync.
        if !undecided && !self.cycle_running {
            self.run_cycle(msg.scope, Trigger::Manual, ctx);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Closed, "the scheduler stopped")))
        })
    }
}

impl Handler<OutboxChanged> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, _msg: OutboxChanged, ctx: &mut Context<Self>) {
        if self.debounce.is_some() || !self.started {
            return; // a debounced push is already on its way
        }
        self.debounce = Some(ctx.run_later(self.shared.settings.debounce, |act, ctx| {
            act.debounce = None;
            act.trigger(Trigger::LocalChange, Scope::push_only(), ctx);
        }));
    }
}

impl Handler<LiveEvent> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: LiveEvent, ctx: &mut Context<Self>) {
        match msg {
            // Whatever changed while the channel was closed: a full delta pull of every table.
            LiveEvent::Connected => self.trigger(Trigger::Live, Scope::pull_only(), ctx),
            LiveEvent::Pull(tables) => {
                if tables.is_empty() {
                    self.live_pending_all = true;
                } else {
                    let schema = self.shared.db.schema();
                    let pending = self.live_pending.get_or_insert_with(BTreeSet::new);
                    for table in tables {
                        if schema.tables().any(|s| s.pull && s.name == table) {
                            pending.insert(table);
                        } else {
                            tracing::debug!(
                                table,
                                "live hint for a table this engine does not pull"
                            );
                        }
                    }
                }
                let nothing = !self.live_pending_all
                    && self.live_pending.as_ref().is_none_or(BTreeSet::is_empty);
                if nothing || self.live_debounce.is_some() || !self.started {
                    return;
                }
                // Debounced and coalesced: hints arriving meanwhile join this pull; a hint
                // arriving while a cycle runs queues one more pull behind it (`trigger`).
                let delay = self.shared.settings.live_debounce;
                self.live_debounce = Some(ctx.run_later(delay, |act, ctx| {
                    act.live_debounce = None;
                    let tables = act.live_pending.take();
                    let all = std::mem::take(&mut act.live_pending_all);
                    let scope = Scope {
                        push: false,
                        pull: true,
                        tables: if all { None } else { tables },
                    };
                    act.trigger(Trigger::Live, scope, ctx);
                }));
            }
        }
    }
}

impl Handler<Control> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        let state = self.shared.state.clone();
        match msg {
            Control::Start => self.start(ctx),
            Control::Stop => self.stop(ctx),
            Control::Pause => state.paused.store(true, Ordering::SeqCst),
            Control::Resume => {
                if state.paused.swap(false, Ordering::SeqCst) {
                    self.trigger(Trigger::Manual, Scope::all(), ctx);
                }
            }
            Control::PauseTable(table) => {
                state.set_table_paused(&table, true);
            }
            Control::ResumeTable(table) => {
                if state.set_table_paused(&table, false) {
                    self.trigger(Trigger::Manual, Scope::table(&table), ctx);
                }
            }
            Control::SetOnline(true) => {
                self.live_suspended = false;
                self.update_live();
                self.kick_live();
                self.go_online(ctx, true);
            }
            Control::SetOnline(false) => {
                self.live_suspended = true;
                self.update_live();
                self.go_offline(ctx);
            }
            Control::Foreground => {
                self.kick_live();
                self.trigger(Trigger::Foreground, Scope::all(), ctx);
            }
            Control::CredentialsUpdated => {
                if state.auth_required.swap(false, Ordering::SeqCst) {
                    self.trigger(Trigger::Manual, Scope::all(), ctx);
                }
            }
        }
    }
}

impl Handler<LeadershipChanged> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        let writer = self.writer.clone();
        let (Some(epoch), true) = (msg.epoch, msg.leader) else {
            self.apply_leadership(msg, ctx);
            return;
        };
        // Claim the database for this epoch first: if a newer leader already did, this
        // instance is deposed and must not sync. In the same transaction, entries a previous
        // leader left in flight go back in the queue (still sealed, same idempotency keys).
        // After another epoch they wait `takeover_hold`: its requests may still land.
        let hold =
            u64::try_from(self.shared.settings.takeover_hold.as_millis()).unwrap_or(u64::MAX);
        let hold_until = tidesync_core::hlc::wall_millis().saturating_add(hold);
        let claim = async move {
            writer
                .send(Unfenced(TakeOver {
                    epoch,
                    hold_until_ms: hold_until,
                }))
                .await
                .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
        };
        let claimed = actix::fut::wrap_future::<_, Self>(claim);
        ctx.wait(claimed.map(move |result, act, ctx| match result {
            Ok(reset) => {
                if reset > 0 {
                    tracing::info!(entries = reset, epoch, "re-queued entries left in flight");
                }
                act.apply_leadership(msg, ctx);
            }
            Err(err) => {
                tracing::warn!(error = %err, epoch, "leadership claim refused; acting as follower");
                let follower = LeadershipChanged {
                    leader: false,
                    epoch: None,
                };
                act.apply_leadership(follower, ctx);
            }
        }));
    }
}

impl SchedulerActor {
    fn apply_leadership(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        let state = &self.shared.state;
        let was = state.leader.swap(msg.leader, Ordering::SeqCst);
        state.epoch.store(msg.epoch.unwrap_or(0), Ordering::SeqCst);
        self.update_live();
        metrics::gauge!(telemetry::LEADER).set(if msg.leader { 1.0 } else { 0.0 });
        metrics::gauge!(telemetry::LEADER_EPOCH).set(msg.epoch.unwrap_or(0) as f64);
        let first = !self.leadership_known;
        self.leadership_known = true;
        if was != msg.leader {
            self.shared.events.emit(SyncEvent::LeadershipChanged {
                leader: msg.leader,
                epoch: msg.epoch,
            });
        }
        if first && !self.waiters.is_empty() {
            // Manual calls made before the first election result: serve or refuse them now.
            match self.guard() {
                Ok(()) if !self.cycle_running => {
                    let scope = self
                        .waiters
                        .iter()
                        .map(|w| w.scope.clone())
                        .reduce(|a, b| a.union(&b));
                    if let Some(scope) = scope {
                        self.run_cycle(scope, Trigger::Manual, ctx);
                    }
                    return;
                }
                Ok(()) => {}
                Err(err) => {
                    for waiter in self.waiters.drain(..) {
                        let _ = waiter.reply.send(Err(err.duplicate()));
                    }
                }
            }
        }
        // Gaining leadership syncs, except at start-up when the settings say not to.
        if was != msg.leader && msg.leader && (!first || self.shared.settings.sync_on_start) {
            self.trigger(Trigger::Leadership, Scope::all(), ctx);
        }
    }
}

/// One cycle: pull the tables that ask to be pulled first, push, then pull each other table.
/// Returns the outcome and whether the server looked
/// unreachable (for offline detection).
async fn cycle(
    began: Arc<AtomicBool>,
    sh: SyncShared,
    pusher: Addr<PusherActor>,
    puller: Addr<PullerActor>,
    scope: Scope,
    trigger: Trigger,
) -> (Result<SyncReport>, bool) {
    let started = Instant::now();
    // From here on, writes made by a caller may be missed by this cycle's push.
    began.store(true, Ordering::SeqCst);
    sh.events.emit(SyncEvent::SyncStarted { trigger });
    let mut report = SyncReport::default();
    let mut failure: Option<Error> = None;
    let mut push_failure: Option<Error> = None;
    let mut retry_seqs: Vec<u64> = Vec::new();
    let mut network_down = false;
    let tables: Option<Vec<String>> = scope.tables.as_ref().map(|t| t.iter().cloned().collect());

    let mut remaining = Remaining::default();
    let paused = sh.state.paused_tables();
    let pullable: Vec<String> = sh
        .db
        .schema()
        .tables()
        .filter(|s| s.pull && !paused.contains(&s.name))
        .filter(|s| tables.as_ref().is_none_or(|only| only.contains(&s.name)))
        .map(|s| s.name.clone())
        .collect();
    // Tables whose server checks nothing may ask to be pulled before they are pushed
    // (`Transport::pull_before_push`): their pending edits then meet remote changes on the
    // pull path, where the resolver decides, before they go out. A push never skips that.
    let (pull_first, pull_after): (Vec<String>, Vec<String>) = if scope.push {
        pullable
            .into_iter()
            .partition(|table| sh.transport.pull_before_push(table))
    } else {
        (Vec::new(), pullable)
    };
    let mut phase = PullPhase {
        report: &mut report,
        remaining: &mut remaining,
        failure: &mut failure,
        network_down: &mut network_down,
    };
    let first_failed = pull_phase(&sh, &puller, pull_first, &mut phase).await;
    if scope.push && !network_down {
        // A table whose pull-first pull failed is not pushed in this cycle.
        let push_tables = if first_failed.is_empty() {
            tables.clone()
        } else {
            Some(
                sh.db
                    .schema()
                    .tables()
                    .map(|s| s.name.clone())
                    .filter(|t| tables.as_ref().is_none_or(|only| only.contains(t)))
                    .filter(|t| !first_failed.contains(t))
                    .collect(),
            )
        };
        sh.events.emit(SyncEvent::PushStarted);
        match pusher
            .send(PushNow {
                tables: push_tables,
            })
            .await
        {
            Ok(Ok(push)) => {
                report.pushed += push.pushed;
                report.retried += push.retried;
                report.dead_lettered += push.dead_lettered;
                report.conflicts += push.conflicts;
                sh.events.emit(SyncEvent::PushCompleted {
                    pushed: push.pushed,
                    retried: push.retried,
                });
                network_down = push.unreachable;
                retry_seqs = push.retry_seqs;
                if let Some((kind, message)) = push.first_error {
                    // The message already starts with its kind; say it once.
                    let message = message
                        .strip_prefix(&format!("{kind}: "))
                        .unwrap_or(&message)
                        .to_owned();
                    push_failure = Some(Error::new(kind, format!("push: {message}")));
                }
            }
            Ok(Err(err)) => {
                failure.get_or_insert(err);
            }
            Err(_) => {
                failure.get_or_insert(Error::new(ErrorKind::Closed, "the pusher stopped"));
            }
        }
    }

    if scope.pull && !network_down {
        let mut phase = PullPhase {
            report: &mut report,
            remaining: &mut remaining,
            failure: &mut failure,
            network_down: &mut network_down,
        };
        pull_phase(&sh, &puller, pull_after, &mut phase).await;
    }

    // What remains, and why: the honest outcome of the cycle.
    remaining.offline = network_down;
    remaining.paused_for_auth = sh.state.auth_required.load(Ordering::SeqCst);
    remaining.paused_for_upgrade = sh.state.upgrade_required.load(Ordering::SeqCst);
    remaining.paused_tables = sh.state.paused_tables().into_iter().collect();
    remaining.paused_tables.sort();
    let mut failed_still_queued = false;
    match store_view(&sh, retry_seqs).await {
        Ok((outbox, quarantined, still_queued)) => {
            remaining.outbox = outbox;
            remaining.quarantined = quarantined;
            failed_still_queued = still_queued;
        }
        Err(err) => {
            failure.get_or_insert(err);
        }
    }
    telemetry::outbox_states(&remaining.outbox);
    // A retryable push failure that the same cycle settled (a later retry or the pull's
    // echo) is not a failure: only one that left entries waiting or the server unreachable.
    if let Some(err) = push_failure {
        let settled = !network_down
            && !failed_still_queued
            && !remaining.paused_for_auth
            && !remaining.paused_for_upgrade;
        if !settled {
            failure.get_or_insert(err);
        }
    }
    report.converged = failure.is_none() && remaining.is_empty();
    report.remaining = remaining;

    let elapsed = started.elapsed();
    telemetry::cycle(failure.is_none(), elapsed);
    log_outcome(&report, failure.as_ref(), elapsed);
    match failure {
        None => {
            sh.events.emit(SyncEvent::SyncCompleted {
                report: Box::new(report.clone()),
                duration_ms: elapsed.as_millis() as u64,
            });
            (Ok(report), network_down)
        }
        Some(err) => {
            sh.events.emit(SyncEvent::SyncFailed {
                error: err.to_string(),
                kind: err.kind().as_str().to_owned(),
                report: Box::new(report),
            });
            (Err(err), network_down)
        }
    }
}

/// What a cycle's pull phases add to.
struct PullPhase<'a> {
    report: &'a mut SyncReport,
    remaining: &'a mut Remaining,
    failure: &'a mut Option<Error>,
    network_down: &'a mut bool,
}

/// Pulls `pull_tables` one after the other; returns the tables whose pull failed.
async fn pull_phase(
    sh: &SyncShared,
    puller: &Addr<PullerActor>,
    pull_tables: Vec<String>,
    phase: &mut PullPhase<'_>,
) -> Vec<String> {
    let PullPhase {
        report,
        remaining,
        failure,
        network_down,
    } = phase;
    let mut failed = Vec::new();
    for table in pull_tables {
        sh.events.emit(SyncEvent::PullStarted {
            table: table.clone(),
        });
        match puller
            .send(PullNow {
                table: table.clone(),
            })
            .await
        {
            Ok(Ok(pull)) => {
                if pull.more {
                    remaining.pulls_cut_at_budget.push(table.clone());
                }
                if pull.deferred {
                    remaining.pulls_deferred.push(table.clone());
                }
                remaining
                    .pull_warnings
                    .extend(pull.warnings.iter().map(|warning| TablePullWarning {
                        table: table.clone(),
                        warning: warning.clone(),
                    }));
                report.pull_retries += pull.retries;
                report.pages += pull.pages;
                report.applied += pull.applied;
                report.conflicts += pull.conflicts;
                report.tables_pulled.push(table.clone());
                sh.events.emit(SyncEvent::PullCompleted {
                    table: table.clone(),
                    pages: pull.pages,
                    applied: pull.applied,
                });
                // Hard deletes, when the table's interval says so: only after a pull that ran
                // to its end (the listing is compared with a complete table).
                if !pull.more && !pull.deferred {
                    let reconciled = puller
                        .send(ReconcileIfDue {
                            table: table.clone(),
                        })
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::new(ErrorKind::Closed, "the puller stopped"))
                        });
                    match reconciled {
                        Ok(done) => {
                            report.reconciled += done.map_or(0, |done| done.deleted.len() as u64);
                        }
                        Err(err) => {
                            let err = Error::new(
                                err.kind(),
                                format!("hard-delete reconciliation: {err}"),
                            )
                            .table(&table);
                            remaining.pulls_failed.push(table.clone());
                            failed.push(table.clone());
                            sh.events.emit(SyncEvent::PullFailed {
                                table,
                                error: err.to_string(),
                            });
                            failure.get_or_insert(err);
                        }
                    }
                }
            }
            Ok(Err(err)) => {
                remaining.pulls_failed.push(table.clone());
                failed.push(table.clone());
                if err.kind() == ErrorKind::UpgradeRequired
                    && !sh.state.upgrade_required.swap(true, Ordering::SeqCst)
                {
                    sh.events.emit(SyncEvent::UpgradeRequired {
                        table: table.clone(),
                    });
                }
                sh.events.emit(SyncEvent::PullFailed {
                    table: table.clone(),
                    error: err.to_string(),
                });
                let unreachable = matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout);
                if unreachable {
                    **network_down = err.was_unsent() || (report.pushed == 0 && report.pages == 0);
                }
                failure.get_or_insert(err);
                if unreachable {
                    break; // the other tables would only wait for the same timeout
                }
            }
            Err(_) => {
                failure.get_or_insert(Error::new(ErrorKind::Closed, "the puller stopped"));
                break;
            }
        }
    }
    failed
}

/// How many outbox entries the end-of-cycle summary reads at most (the total stays exact).
const SUMMARY_LIMIT: usize = 10_000;

/// The outbox by entry state, the number of quarantined pulled items, and whether any of
/// `failed` (entries whose push failed) is still queued; read off the runtime's event loop
/// (a long outbox takes a while to walk).
async fn store_view(sh: &SyncShared, failed: Vec<u64>) -> Result<(OutboxSummary, u64, bool)> {
    let (store, db) = (sh.store.clone(), sh.db.clone());
    tokio::task::spawn_blocking(move || {
        let read = store.read()?;
        let summary =
            db.outbox()
                .summary(&*read, tidesync_core::hlc::wall_millis(), SUMMARY_LIMIT)?;
        let mut still_queued = false;
        for seq in failed {
            if db.outbox().entry(&*read, seq)?.is_some() {
                still_queued = true;
                break;
            }
        }
        Ok((
            summary,
            db.parked().quarantined_count(&*read)?,
            still_queued,
        ))
    })
    .await
    .map_err(|e| Error::internal(format!("the outbox summary task failed: {e}")))?
}

/// Logs a cycle's outcome at `info` (a daemon's log shows every cycle and why it did not
/// converge), and failures at `warn`.
fn log_outcome(report: &SyncReport, failure: Option<&Error>, elapsed: Duration) {
    let reasons = report
        .remaining
        .reasons(tidesync_core::hlc::wall_millis())
        .join("; ");
    let elapsed_ms = elapsed.as_millis() as u64;
    let idle = report.pushed + report.applied + report.conflicts + report.dead_lettered == 0;
    match failure {
        // A quiet converged cycle (an interval tick with nothing to do) is no news.
        None if report.converged && !report.remaining.pull_warnings.is_empty() => {
            tracing::warn!(
                pushed = report.pushed,
                pages = report.pages,
                applied = report.applied,
                elapsed_ms,
                warnings = %reasons,
                "sync cycle converged with warnings"
            );
        }
        None if report.converged && idle => {
            tracing::debug!(elapsed_ms, "sync cycle converged, nothing to do");
        }
        None if report.converged => tracing::info!(
            pushed = report.pushed,
            pages = report.pages,
            applied = report.applied,
            conflicts = report.conflicts,
            elapsed_ms,
            "sync cycle converged"
        ),
        None => tracing::info!(
            pushed = report.pushed,
            pages = report.pages,
            applied = report.applied,
            elapsed_ms,
            remaining = %reasons,
            "sync cycle incomplete"
        ),
        Some(err) => tracing::warn!(
            error = %err,
            pushed = report.pushed,
            pages = report.pages,
            elapsed_ms,
            remaining = %reasons,
            "sync cycle failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_and_unite() {
        let all = Scope::all();
        assert!(all.covers(&Scope::push_only()));
        assert!(all.covers(&Scope::table("posts")));
        assert!(!Scope::push_only().covers(&Scope::all()));
        assert!(!Scope::table("a").covers(&Scope::table("b")));
        let ab = Scope::table("a").union(&Scope::table("b"));
        assert!(ab.covers(&Scope::table("a")) && ab.covers(&Scope::table("b")));
        assert!(!ab.covers(&Scope::all()));
        assert_eq!(Scope::push_only().union(&Scope::pull_only()), Scope::all());
    }
}
