//! # Composing the actors in a host actix application
//!
//! ```text
//! cargo run --example compose_actors
//! ```
//!
//! Most applications use the [`tidesync::Engine`] facade, which runs the actors on a thread of
//! its own. An application that already runs actix can instead start the seven actors in its
//! own `System` with `SyncActors::start` (what `EngineBuilder::start` does on its own thread)
//! and talk to them with their typed messages:
//!
//! | actor | role | messages used here |
//! |---|---|---|
//! | `StoreWriterActor` | the single store writer (group commit) | `LocalWrite` |
//! | `ConflictResolverActor` | per-table strategies | (from pusher/puller) |
//! | `PusherActor` / `PullerActor` | push the outbox / pull changes | (from the scheduler) |
//! | `SchedulerActor` | one sync cycle at a time, lifecycle | `Control::Start`, `SyncNow` |
//! | `LeaderActor` | the election, the fencing epoch | (tells the scheduler) |
//! | `MetricsActor` | store-derived gauges | (timer) |
//!
//! The store is a `MemoryStore` and the server the testkit's reference server, started on a
//! thread of its own (`start_background`) since this `main` is actix's, not tokio's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::json;
use tidesync::MemoryStore;
use tidesync::actors::{
    Control, EngineState, EventBus, LocalWrite, Resign, Scope, SyncActors, SyncEvent, SyncNow,
    SyncParts, SyncSettings, SyncShared,
};
use tidesync::core::local::{LocalDb, Schema, WriteOp};
use tidesync::core::{HybridClock, InProcessLeader, Key, Store, TableSpec};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let server = ReferenceServer::start_background();
    server.insert_direct(
        "posts",
        json!({"id": "from-server", "title": "already there"}),
    )?;
    println!("reference server at {}", server.url());

    // -- The shared pieces -------------------------------------------------------------------
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let db = LocalDb::new(
        Schema::new([TableSpec::new("posts")])?,
        Arc::new(HybridClock::new()),
    );
    // With a persistent store, recover first as `EngineBuilder::start` does: restore the
    // clock and bring the store in step with the schema. Entries a previous run left in
    // flight go back in the queue when the scheduler claims the database for its epoch.
    db.restore_clock(&*store.read()?)?;
    db.schema_sync()
        .reconcile_schema(&*store, &Default::default())?;

    let transport = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .build()?;
    let events = EventBus::new(1024);
    let shared = SyncShared {
        store: store.clone(),
        db: db.clone(),
        transport: Arc::new(transport),
        settings: Arc::new(SyncSettings {
            interval: None, // this host triggers sync itself
            ..SyncSettings::default()
        }),
        events: events.clone(),
        state: Arc::new(EngineState::new()),
    };
    // Committed changes (local and from sync), for live queries.
    let (changes, _) = tokio::sync::broadcast::channel(1024);

    // -- Start and wire the actors -----------------------------------------------------------
    // One call starts the seven actors in this System and wires them (the store writer notifies the
    // scheduler, the scheduler drives pusher and puller and claims the database for each
    // leadership epoch through the store writer, the leader tells the scheduler).
    let actors = SyncActors::start(SyncParts {
        shared: shared.clone(),
        changes,
        strategies: HashMap::new(), // server wins
        default_strategy: None,
        elector: Arc::new(InProcessLeader), // always the leader; see tidesync-leader-lockfile
        campaign_every: Duration::from_secs(2),
        metrics_every: Duration::from_secs(5),
    });
    let (store_writer, scheduler, leader) = (actors.store_writer, actors.scheduler, actors.leader);
    println!("actors started in the host's System");

    // The host follows the engine's events like any other stream, on its own arbiter.
    let mut subscription = events.subscribe();
    actix::spawn(async move {
        while let Ok(event) = subscription.recv().await {
            match event {
                SyncEvent::SyncCompleted {
                    report,
                    duration_ms,
                } => println!(
                    "  event: sync completed in {duration_ms} ms: pushed {}, applied {}",
                    report.pushed, report.applied
                ),
                SyncEvent::LeadershipChanged { leader, epoch } => {
                    println!("  event: leadership changed: leader={leader} epoch={epoch:?}")
                }
                _ => {}
            }
        }
    });

    // -- Use them ----------------------------------------------------------------------------
    let changes = store_writer
        .send(LocalWrite(vec![
            WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "p1", "title": "written through LocalWrite"}),
            },
            WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": "p2", "title": "same transaction"}),
            },
        ]))
        .await??;
    println!(
        "LocalWrite committed {} change(s) with their outbox entries",
        changes.len()
    );

    let report = scheduler
        .send(SyncNow {
            scope: Scope::all(),
        })
        .await??;
    println!(
        "SyncNow -> pushed {}, pulled {} page(s), applied {} remote record(s)",
        report.pushed, report.pages, report.applied
    );

    let read = store.read()?;
    let pulled = db
        .records()
        .get(&*read, "posts", &Key::from("from-server"))?
        .context("the server's post was pulled")?;
    println!(
        "local copy of the server's post: {}",
        serde_json::Value::Object(pulled)
    );
    // The writes may already have gone out with the debounced push their commit triggered;
    // either way, SyncNow answers only after a cycle that started after the call.
    ensure!(server.record("posts", "p1").is_some() && server.record("posts", "p2").is_some());
    ensure!(
        db.outbox().entries(&*read, None, 10)?.is_empty(),
        "outbox drained"
    );

    // Shut down as `Engine::shutdown` does: stop scheduling, give up leadership (a real
    // elector releases its lease). The System and its actors end when `main` returns.
    scheduler.do_send(Control::Stop);
    leader.send(Resign).await?;
    println!("Done.");
    Ok(())
}
