//! Lifecycle, guards, auth, pause, stop/start, restart, status and health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{HealthStatus, SyncEvent, SyncSettings};
use tidesync_testkit::server::{FaultFilter, FaultKind, ReferenceServer};
use tidesync_transport_rest::{AuthHeaders, AuthProvider, RestTransport, Secret, TableRoutes};

use crate::support::{drain, engine, engine_with, expect_event, settings};

#[tokio::test]
async fn a_paused_table_waits_and_resumes() {
    // Upstream scenario 18.
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine.pause_table("posts").unwrap();
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "p"}))
        .await
        .unwrap();
    let report = engine.push().await.unwrap();
    assert_eq!(report.pushed, 0);
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 1);
    assert!(
        server.request_log().iter().all(|r| r.method == "GET"),
        "nothing pushed"
    );
    engine.resume_table("posts").unwrap();
    engine.push().await.unwrap();
    assert!(
        server.record("posts", "p").is_some(),
        "pushed once the table resumed"
    );
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 0);
}

#[tokio::test]
async fn pause_guards_every_manual_call_and_resume_syncs() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine.pause().unwrap();
    engine.pause().unwrap(); // idempotent
    for err in [
        engine.sync().await.unwrap_err(),
        engine.push().await.unwrap_err(),
        engine.pull(None).await.unwrap_err(),
    ] {
        assert!(err.to_string().contains("paused"), "{err}");
    }
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "p"}))
        .await
        .unwrap();
    let mut events = engine.events();
    engine.resume().unwrap();
    expect_event(&mut events, 5, "sync completed", |e| {
        matches!(e, SyncEvent::SyncCompleted { .. })
    })
    .await;
    assert!(server.record("posts", "p").is_some());
}

#[tokio::test]
async fn stop_then_start_keeps_queuing_and_pushes_after_start() {
    // Probe P2, restated: after stop() nothing is sent, writes are still recorded (nothing
    // lost), and start() works again and pushes them.
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine.stop().unwrap();
    engine.stop().unwrap();
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "while-stopped"}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.request_log().iter().all(|r| r.method == "GET"),
        "stopped: nothing pushed"
    );
    assert!(
        engine
            .sync()
            .await
            .unwrap_err()
            .to_string()
            .contains("stopped")
    );
    engine.start().unwrap();
    engine.start().unwrap();
    engine.sync().await.unwrap();
    assert!(server.record("posts", "while-stopped").is_some());
}

#[tokio::test]
async fn concurrent_manual_calls_join_one_cycle() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "j"}))
        .await
        .unwrap();
    let mut events = engine.events();
    let (a, b, c) = tokio::join!(engine.sync(), engine.sync(), engine.push());
    let pushed = a.unwrap().pushed + b.unwrap().pushed + c.unwrap().pushed;
    assert!(
        pushed >= 1,
        "the write made before the calls was pushed by a cycle they waited for"
    );
    let started = drain(&mut events)
        .await
        .into_iter()
        .filter(|e| matches!(e, SyncEvent::SyncStarted { .. }))
        .count();
    assert!(
        started <= 2,
        "calls join cycles instead of racing: {started} cycles for 3 calls"
    );
    assert_eq!(server.create_count("posts", "j"), 1);
}

#[tokio::test]
async fn status_and_health_tell_the_truth() {
    // Probe P6: no "stale" before the first sync; a failed cycle is reported as failed.
    let server = ReferenceServer::start().await;
    // No automatic push or retry during the test: only the calls below sync.
    let quiet = SyncSettings {
        debounce: Duration::from_secs(600),
        backoff_base: Duration::from_secs(300),
        backoff_cap: Duration::from_secs(300),
        ..settings()
    };
    let engine = engine_with(&server, quiet, |b| b);
    let health = engine.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(health.error_rate, 0.0);
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "s"}))
        .await
        .unwrap();
    // Leadership is claimed asynchronously right after start.
    crate::support::eventually(5, "leadership", || engine.status().unwrap().leader).await;
    let status = engine.status().unwrap();
    assert_eq!(
        (status.queue_depth, status.running, status.epoch),
        (1, true, Some(1))
    );
    assert!(status.last_successful_sync_ms.is_none());

    server.fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(503));
    let mut events = engine.events();
    assert!(engine.push().await.is_err());
    let seen = drain(&mut events).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, SyncEvent::SyncFailed { .. })),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, SyncEvent::SyncCompleted { .. }))
    );
    let health = engine.health().await;
    assert!(health.error_rate > 0.0 && health.error_rate <= 1.0);
    assert!(engine.status().unwrap().last_error.is_some());
}

struct SharedToken(Arc<Mutex<String>>);

#[async_trait::async_trait]
impl AuthProvider for SharedToken {
    async fn headers(&self) -> tidesync::Result<AuthHeaders> {
        let token = self.0.lock().unwrap().clone();
        Ok(vec![(
            "Authorization".into(),
            Secret::new(format!("Bearer {token}")),
        )])
    }
    async fn refresh(&self) -> tidesync::Result<()> {
        Ok(()) // cannot refresh by itself: the app must supply a new token
    }
}

/// A server that requires tokens, and an engine whose token the test can replace.
async fn auth_engine() -> (ReferenceServer, Arc<Mutex<String>>, tidesync::Engine) {
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(60))
        .start()
        .await;
    let token = Arc::new(Mutex::new(server.issue_token()));
    let transport = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .auth(SharedToken(token.clone()))
        .build()
        .unwrap();
    let engine = tidesync::Engine::builder()
        .store(tidesync::MemoryStore::new())
        .table(tidesync::TableSpec::new("posts"))
        .transport(transport)
        .settings(settings())
        .start()
        .unwrap();
    (server, token, engine)
}

#[tokio::test]
async fn refused_credentials_pause_pushing_without_dead_letters() {
    let (server, token, engine) = auth_engine().await;
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "a1"}))
        .await
        .unwrap();
    engine.push().await.unwrap();
    assert!(server.record("posts", "a1").is_some());

    server.expire_all_tokens();
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "a2"}))
        .await
        .unwrap();
    let mut events = engine.events();
    let err = engine.push().await.unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::Auth);
    expect_event(&mut events, 2, "auth required", |e| {
        matches!(e, SyncEvent::AuthRequired { .. })
    })
    .await;
    assert!(engine.status().unwrap().auth_required);
    assert!(
        engine.dead_letters(None).unwrap().is_empty(),
        "nothing dead-lettered"
    );
    *token.lock().unwrap() = server.issue_token();
    engine.credentials_updated().unwrap();
    expect_event(&mut events, 5, "push completed", |e| {
        matches!(e, SyncEvent::PushCompleted { pushed: 1, .. })
    })
    .await;
    assert!(server.record("posts", "a2").is_some());
    let logged = format!("{:?}", server.request_log());
    assert!(
        !logged.contains(&*token.lock().unwrap()),
        "tokens are never logged by the server log"
    );
}

#[tokio::test]
async fn an_auth_pause_mid_backlog_leaves_nothing_in_flight_and_loses_nothing() {
    let (server, token, engine) = auth_engine().await;
    let posts = engine.table::<Value>("posts").unwrap();
    // More records than the pusher sends and prepares at once, so some are prepared (marked
    // in flight) but never sent when the first refusal pauses pushing.
    for i in 0..200 {
        posts.put(&json!({"id": format!("p{i}")})).await.unwrap();
    }
    server.expire_all_tokens();
    let err = engine.push().await.unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::Auth);
    let outbox = engine.outbox(None, 1000).unwrap();
    assert_eq!(outbox.len(), 200, "nothing lost");
    assert!(
        outbox.iter().all(|e| !e.in_flight),
        "nothing left in flight: {:?}",
        outbox.iter().filter(|e| e.in_flight).count()
    );
    assert!(engine.dead_letters(None).unwrap().is_empty());

    *token.lock().unwrap() = server.issue_token();
    engine.credentials_updated().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !engine.outbox(None, 1).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog did not drain"
        );
        let _ = engine.push().await;
    }
    for i in 0..200 {
        assert_eq!(
            server.create_count("posts", format!("p{i}").as_str()),
            1,
            "p{i}"
        );
    }
}

#[tokio::test]
async fn rate_limit_spaces_requests() {
    // Upstream scenario 19.
    let server = ReferenceServer::start().await;
    let mut settings = settings();
    settings.rate_limits.insert(
        "posts".into(),
        tidesync::RateLimit {
            max_requests: 1,
            window: Duration::from_millis(100),
        },
    );
    let engine = engine_with(&server, settings, |b| b);
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "r1"})).await.unwrap();
    posts.put(&json!({"id": "r2"})).await.unwrap();
    posts.put(&json!({"id": "r3"})).await.unwrap();
    let started = std::time::Instant::now();
    let report = engine.push().await.unwrap();
    assert_eq!(report.pushed, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_restart_mid_push_resumes_without_loss_or_duplicates() {
    let server = ReferenceServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        tidesync::Engine::builder()
            .store(tidesync::RedbStore::open(dir.path().join("e.redb")).unwrap())
            .table(tidesync::TableSpec::new("posts"))
            .transport(crate::support::transport(&server, &["posts"], 5_000))
            .settings(SyncSettings {
                sync_on_start: true,
                ..settings()
            })
            .start()
            .unwrap()
    };
    let engine = open();
    let posts = engine.table::<Value>("posts").unwrap();
    for i in 0..10 {
        posts
            .put(&json!({"id": format!("k{i}"), "n": i}))
            .await
            .unwrap();
    }
    // The server applies the first create, then stalls; the engine dies mid-push.
    server.fail_next_where(
        FaultFilter::method("POST"),
        1,
        FaultKind::CommitThenStatus(503),
    );
    server.fail_next_where(
        FaultFilter::method("POST"),
        1,
        FaultKind::Hang(Duration::from_secs(30)),
    );
    let pushing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.push().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.shutdown();
    pushing.abort();
    let _ = pushing.await;
    drop(posts);
    drop(engine);
    server.clear_faults();
    let engine = open();
    let mut events = engine.events();
    expect_event(&mut events, 10, "sync completed", |e| {
        matches!(e, SyncEvent::SyncCompleted { .. })
    })
    .await;
    engine.sync().await.unwrap();
    assert_eq!(server.records("posts").len(), 10);
    for i in 0..10 {
        assert_eq!(
            server.create_count("posts", format!("k{i}")),
            1,
            "k{i} created exactly once"
        );
    }
    assert!(engine.outbox(None, 20).unwrap().is_empty());
}

/// The transport checks each table at start (`Transport::check_table`): a table that syncs
/// but that the REST transport cannot serve is refused by `start`, naming the table and the
/// missing setting, instead of dead-lettering every write at push time.
#[tokio::test]
async fn start_refuses_a_synced_table_the_transport_cannot_serve() {
    let server = ReferenceServer::start().await;
    let build = |routes: Option<TableRoutes>, spec: tidesync::TableSpec| {
        let mut transport = RestTransport::builder(server.url());
        if let Some(routes) = routes {
            transport = transport.table("posts", routes);
        }
        tidesync::Engine::builder()
            .store(tidesync::MemoryStore::new())
            .table(spec)
            .transport(transport.build().expect("transport"))
            .start()
    };
    let spec = || tidesync::TableSpec::new("posts");

    let err = build(None, spec()).expect_err("no routes at all");
    assert_eq!(err.kind(), tidesync::ErrorKind::Config, "{err}");
    assert_eq!(err.table_name(), Some("posts"), "{err}");

    let mut pull_only = TableRoutes::reference_server("posts");
    pull_only.create = None;
    pull_only.update = None;
    pull_only.delete = None;
    pull_only.bulk = None;
    let err = build(Some(pull_only.clone()), spec()).expect_err("pushed without write routes");
    assert!(
        err.message()
            .contains("no create, update, delete or bulk route"),
        "{err}"
    );
    // The same routes serve a table that is only pulled.
    let engine = build(Some(pull_only), spec().pull_only()).expect("a pull-only table starts");
    engine.shutdown();

    let mut push_only = TableRoutes::reference_server("posts");
    push_only.pull = None;
    let err = build(Some(push_only), spec()).expect_err("pulled without a feed");
    assert_eq!(err.setting_path(), ["pull"], "{err}");
    // A local-only table needs no routes.
    let engine = build(None, spec().local_only()).expect("a local table starts");
    engine.shutdown();
}
