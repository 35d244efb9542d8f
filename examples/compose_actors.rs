//! # Composing the actors in a host actix application
//!
//! ```text
//! cargo run --example compose_actors
//! ```
//!
//! Most applications use the [`tidesync::Engine`] facade, which runs the actors on a thread of
//! its own. An application that already runs actix can instead start the seven actors in its
//! own `System` and talk to them with their typed messages — this is what `EngineBuilder::start`
//! does internally (`Wiring::start` in `src/engine.rs`), spelled out:
//!
//! | actor | role | messages used here |
//! |---|---|---|
//! | `OutboxActor` | the single store writer (group commit) | `LocalWrite` |
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

use actix::prelude::*;
use anyhow::{Context as _, ensure};
use serde_json::json;
use tidesync::MemoryStore;
use tidesync::actors::{
    ConflictResolverActor, Control, EngineState, EventBus, LeaderActor, LocalWrite, MetricsActor,
    OutboxActor, PullerActor, PusherActor, Resign, SchedulerActor, Scope, SyncEvent, SyncNow,
    SyncSettings, SyncShared,
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
    // clock, and put entries that were in flight at the last stop back in the queue.
    db.restore_clock(&*store.read()?)?;
    let mut txn = store.write()?;
    db.reset_in_flight(&mut *txn)?;
    txn.commit()?;

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
    // The outbox notifies the scheduler of local writes, and the scheduler drives pusher and
    // puller, which write through the outbox: create the scheduler's context first to have
    // its address, and run the scheduler in it once its peers exist.
    let scheduler_ctx: Context<SchedulerActor> = Context::new();
    let outbox = OutboxActor::new(store.clone(), db.clone(), changes)
        .notify_local_changes(scheduler_ctx.address().recipient())
        .start();
    let resolver = ConflictResolverActor::new(HashMap::new(), events.clone()).start(); // server-wins
    let pusher = PusherActor::new(shared.clone(), outbox.clone(), resolver.clone()).start();
    let puller = PullerActor::new(shared.clone(), outbox.clone(), resolver.clone()).start();
    let scheduler = scheduler_ctx.run(
        SchedulerActor::new(shared.clone(), pusher, puller)
            // Leaders claim the database for their fencing epoch through the writer.
            .with_writer(outbox.clone()),
    );
    let leader = LeaderActor::new(
        Arc::new(InProcessLeader), // always the leader; see tidesync-leader-lockfile
        scheduler.clone().recipient(),
        Duration::from_secs(2),
    )
    .start();
    let _metrics = MetricsActor::new(shared.clone(), Duration::from_secs(5)).start();
    scheduler.do_send(Control::Start);
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
    let changes = outbox
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
        .get(&*read, "posts", &Key::from("from-server"))?
        .context("the server's post was pulled")?;
    println!(
        "local copy of the server's post: {}",
        serde_json::Value::Object(pulled)
    );
    // The writes may already have gone out with the debounced push their commit triggered;
    // either way, SyncNow answers only after a cycle that started after the call.
    ensure!(server.record("posts", "p1").is_some() && server.record("posts", "p2").is_some());
    ensure!(db.outbox(&*read, None, 10)?.is_empty(), "outbox drained");

    // Shut down as `Engine::shutdown` does: stop scheduling, give up leadership (a real
    // elector releases its lease). The System and its actors end when `main` returns.
    scheduler.do_send(Control::Stop);
    leader.send(Resign).await?;
    println!("Done.");
    Ok(())
}
