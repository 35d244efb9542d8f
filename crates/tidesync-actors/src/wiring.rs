//! The one way to start the seven sync actors and wire them together, inside the current
//! actix `System`: the facade's engine thread does it, and so does a host application that
//! runs actix itself (`examples/compose_actors.rs`). Every part is a required field of
//! [`SyncParts`], so an actor cannot be left without a peer it needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::broadcast;

use tidesync_core::local::Change;
use tidesync_core::{ConflictStrategy, LeaderElector};

use crate::leader::LeaderActor;
use crate::metrics::MetricsActor;
use crate::puller::PullerActor;
use crate::pusher::PusherActor;
use crate::resolver::ConflictResolverActor;
use crate::scheduler::{Control, SchedulerActor};
use crate::shared::SyncShared;
use crate::store_writer::StoreWriterActor;

/// Everything the seven actors need.
pub struct SyncParts {
    /// The store, the local database logic, the transport, settings, events and state.
    pub shared: SyncShared,
    /// Committed changes (local and from sync), for live queries.
    pub changes: broadcast::Sender<Change>,
    /// Conflict strategies by table.
    pub strategies: HashMap<String, Arc<dyn ConflictStrategy>>,
    /// The strategy of tables without one (server wins when `None`).
    pub default_strategy: Option<Arc<dyn ConflictStrategy>>,
    /// The leader election backend.
    pub elector: Arc<dyn LeaderElector>,
    /// How often the leader actor campaigns (or renews).
    pub campaign_every: Duration,
    /// How often the metrics actor refreshes store-derived gauges.
    pub metrics_every: Duration,
}

/// The addresses of the seven running actors.
#[derive(Clone)]
pub struct SyncActors {
    /// The single store writer.
    pub store_writer: Addr<StoreWriterActor>,
    /// Decides when to sync; lifecycle.
    pub scheduler: Addr<SchedulerActor>,
    /// Pushes the outbox.
    pub pusher: Addr<PusherActor>,
    /// Pulls remote changes.
    pub puller: Addr<PullerActor>,
    /// Applies the tables' conflict strategies.
    pub resolver: Addr<ConflictResolverActor>,
    /// Campaigns for leadership; tells the scheduler.
    pub leader: Addr<LeaderActor>,
    /// Refreshes store-derived gauges.
    pub metrics: Addr<MetricsActor>,
}

impl SyncActors {
    /// Starts the seven actors in the current actix `System`, wires them, and starts
    /// scheduling (`Control::Start`). Must run inside a System (`actix::System` or
    /// `actix_rt`): `Actor::start` panics elsewhere.
    pub fn start(parts: SyncParts) -> SyncActors {
        let SyncParts {
            shared,
            changes,
            strategies,
            default_strategy,
            elector,
            campaign_every,
            metrics_every,
        } = parts;
        // The store writer tells the scheduler about local writes and the scheduler drives
        // the pusher and puller, which write through the store writer: the scheduler's
        // address is needed before it runs.
        let scheduler_ctx: Context<SchedulerActor> = Context::new();
        let store_writer = StoreWriterActor::new(shared.store.clone(), shared.db.clone(), changes)
            .notify_local_changes(scheduler_ctx.address().recipient())
            .start();
        let mut resolver = ConflictResolverActor::new(strategies, shared.events.clone());
        if let Some(default) = default_strategy {
            resolver = resolver.with_default(default);
        }
        let resolver = resolver.start();
        let pusher =
            PusherActor::new(shared.clone(), store_writer.clone(), resolver.clone()).start();
        let puller =
            PullerActor::new(shared.clone(), store_writer.clone(), resolver.clone()).start();
        let scheduler = scheduler_ctx.run(SchedulerActor::new(
            shared.clone(),
            pusher.clone(),
            puller.clone(),
            store_writer.clone(),
        ));
        scheduler.do_send(Control::Start);
        let leader =
            LeaderActor::new(elector, scheduler.clone().recipient(), campaign_every).start();
        let metrics = MetricsActor::new(shared, metrics_every).start();
        SyncActors {
            store_writer,
            scheduler,
            pusher,
            puller,
            resolver,
            leader,
            metrics,
        }
    }
}

/// The running actors as the facade sees them: typed calls, no actix types, so the facade
/// (and the applications on it) need not depend on actix. Cheap to clone.
#[derive(Clone)]
pub struct EngineActors {
    store_writer: Addr<StoreWriterActor>,
    sync: Option<SyncActors>,
}

impl EngineActors {
    /// Only the store writer (a local-only engine: no transport, nothing syncs). Must run
    /// inside an actix `System`.
    pub fn start_local(
        store: Arc<dyn tidesync_core::Store>,
        db: tidesync_core::local::LocalDb,
        changes: broadcast::Sender<Change>,
    ) -> Self {
        EngineActors {
            store_writer: StoreWriterActor::new(store, db, changes).start(),
            sync: None,
        }
    }

    /// The seven actors ([`SyncActors::start`]). Must run inside an actix `System`.
    pub fn start_sync(parts: SyncParts) -> Self {
        let sync = SyncActors::start(parts);
        EngineActors {
            store_writer: sync.store_writer.clone(),
            sync: Some(sync),
        }
    }

    /// Whether the sync actors run (the engine has a transport).
    pub fn syncs(&self) -> bool {
        self.sync.is_some()
    }

    fn sync_actors(&self) -> tidesync_core::Result<&SyncActors> {
        self.sync.as_ref().ok_or_else(|| {
            tidesync_core::Error::config("no transport configured: this engine is local-only")
        })
    }

    /// Runs a maintenance command through the store writer (no epoch check).
    pub async fn command<C: crate::store_writer::StoreCommand>(
        &self,
        command: C,
    ) -> tidesync_core::Result<C::Output> {
        self.store_writer
            .send(crate::store_writer::Unfenced(command))
            .await
            .map_err(|_| closed())?
    }

    /// The application's writes, all or nothing with their outbox entries.
    pub async fn local_write(
        &self,
        ops: Vec<tidesync_core::local::WriteOp>,
    ) -> tidesync_core::Result<Vec<Change>> {
        self.store_writer
            .send(crate::store_writer::LocalWrite(ops))
            .await
            .map_err(|_| closed())?
    }

    /// A direct line to the writer thread, for the table API's writes.
    pub async fn store_writer(&self) -> tidesync_core::Result<crate::store_writer::StoreWriter> {
        self.store_writer
            .send(crate::store_writer::GetStoreWriter)
            .await
            .map_err(|_| closed())?
    }

    /// Runs a sync cycle covering `scope` (joining a running one that covers it).
    pub async fn sync(
        &self,
        scope: crate::scheduler::Scope,
    ) -> tidesync_core::Result<crate::events::SyncReport> {
        self.sync_actors()?
            .scheduler
            .send(crate::scheduler::SyncNow { scope })
            .await
            .map_err(|_| closed())?
    }

    /// A lifecycle message for the scheduler; nothing on a local-only engine.
    pub fn control(&self, control: Control) {
        if let Some(sync) = &self.sync {
            sync.scheduler.do_send(control);
        }
    }

    /// Tells the scheduler the outbox changed outside a local write (a dead letter retried,
    /// a conflict settled): it pushes soon.
    pub fn outbox_changed(&self) {
        if let Some(sync) = &self.sync {
            sync.scheduler.do_send(crate::store_writer::OutboxChanged);
        }
    }

    /// Which actors are alive, by name.
    pub fn liveness(&self) -> Vec<(&'static str, bool)> {
        let mut alive = vec![("outbox", self.store_writer.connected())];
        if let Some(sync) = &self.sync {
            alive.extend([
                ("scheduler", sync.scheduler.connected()),
                ("pusher", sync.pusher.connected()),
                ("puller", sync.puller.connected()),
                ("resolver", sync.resolver.connected()),
                ("leader", sync.leader.connected()),
                ("metrics", sync.metrics.connected()),
            ]);
        }
        alive
    }

    /// Stops scheduling and gives up leadership; resolves when the elector released its
    /// lease (callers bound the wait).
    pub async fn stop_and_resign(&self) {
        if let Some(sync) = &self.sync {
            sync.scheduler.do_send(Control::Stop);
            let _ = sync.leader.send(crate::leader::Resign).await;
        }
    }

    /// The writer actor's address, for tests and tools (`test-support`).
    #[cfg(feature = "test-support")]
    pub fn store_writer_addr(&self) -> Addr<StoreWriterActor> {
        self.store_writer.clone()
    }
}

fn closed() -> tidesync_core::Error {
    tidesync_core::Error::new(tidesync_core::ErrorKind::Closed, "the engine is stopped")
}
