//! The live channel end to end: the reference server publishes its changes over SSE and
//! WebSocket (real HTTP on 127.0.0.1), the REST transport's channel turns them into hints,
//! and the engine pulls. The poll interval is an hour in every test, so a change that
//! arrives came through the channel (or the full delta pull after a (re)connect), never a
//! poll. Bounds are generous (seconds): they catch "never", not "slow".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use tidesync::core::hlc::HybridClock;
use tidesync::core::local::{LocalDb, Schema};
use tidesync::transport::{
    Fetched, LiveChannel, LiveSession, LiveSignal, PullPage, PullRequest, PushOutcome, PushRequest,
    Transport,
};
use tidesync::{
    Engine, EventItem, Events, Key, LiveState, MemoryStore, Origin, Record, Result, Store,
    SyncEvent, SyncSettings, TableSpec, WatchEvent,
};
use tidesync_testkit::server::{LiveOptions, LivePayload, ReferenceServer};
use tidesync_transport_rest::{LiveConfig, LiveKind, RestTransport, Subscribe, TableRoutes};

const BOUND: Duration = Duration::from_secs(10);

/// Settings of a live engine: polling every hour (the fallback, never reached here), no
/// sync at start (the channel's connect pulls), quick pushes, quick reconnects.
fn settings() -> SyncSettings {
    SyncSettings {
        interval: Some(Duration::from_secs(3600)),
        sync_on_start: false,
        debounce: Duration::from_millis(10),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        live_backoff_base: Duration::from_millis(20),
        live_backoff_cap: Duration::from_millis(200),
        // Offline probes would reopen the channel on their own: keep them out of the way.
        probe_base: Duration::from_secs(30),
        probe_cap: Duration::from_secs(60),
        ..SyncSettings::default()
    }
}

fn transport(server: &ReferenceServer, live: Option<LiveConfig>) -> RestTransport {
    let mut builder = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .request_timeout(Duration::from_secs(5));
    if let Some(live) = live {
        builder = builder.live(live);
    }
    builder.build().expect("transport")
}

fn engine_on(store: MemoryStore, transport: impl Transport) -> (Engine, Events) {
    let mut builder = Engine::builder()
        .store(store)
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(settings());
    let events = builder.events();
    (builder.start().expect("engine starts"), events)
}

fn checkpoint(store: &MemoryStore) -> Option<Value> {
    let schema = Schema::new([TableSpec::new("posts")]).expect("schema");
    let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
    let read = store.read().expect("read");
    db.remote().checkpoint(&*read, "posts").expect("checkpoint")
}

/// Waits for the channel to connect and for the full delta pull that follows.
async fn connected(events: &mut Events) {
    events
        .wait_for(BOUND, |e| matches!(e, SyncEvent::LiveConnected))
        .await
        .expect("the live channel connects");
    events
        .wait_for(BOUND, |e| {
            matches!(
                e,
                SyncEvent::SyncCompleted { .. } | SyncEvent::SyncFailed { .. }
            )
        })
        .await
        .expect("the pull after connecting finishes");
}

/// Waits until the watcher sees a pulled version of `id` for which `check` holds.
async fn pulled(watch: &mut tidesync::Watch, id: &str, mut check: impl FnMut(&Record) -> bool) {
    let wanted = Key::from(id);
    let found = tokio::time::timeout(BOUND, async {
        while let Some(event) = watch.next().await {
            if let WatchEvent::Change(change) = event
                && change.key == wanted
                && change.origin == Origin::Pull
                && change.record.as_ref().is_some_and(&mut check)
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{id} not pulled within {BOUND:?}");
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + BOUND;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn subscribe_http() -> Subscribe {
    Subscribe {
        event: Some("connected".into()),
        client_id: "/clientId".parse_pointer(),
        method: tidesync_transport_rest::Method::Post,
        url: Some("/live/subscribe".into()),
        body: r#"{"clientId":"{client_id}","tables":{tables}}"#.into(),
        headers: Default::default(),
    }
}

trait ParsePointer {
    fn parse_pointer(self) -> tidesync_transport_rest::Pointer;
}

impl ParsePointer for &str {
    fn parse_pointer(self) -> tidesync_transport_rest::Pointer {
        tidesync_transport_rest::Pointer::parse(self).expect("pointer")
    }
}

/// One server change made by another engine reaches this engine's watcher through the
/// channel: `kind`, with or without the subscription handshake.
async fn another_engines_change_arrives_live(live: LiveConfig, options: LiveOptions) {
    let server = ReferenceServer::builder().live(options).start().await;
    let (engine, mut events) = engine_on(MemoryStore::new(), transport(&server, Some(live)));
    connected(&mut events).await;
    assert_eq!(server.live_open(), 1);
    let mut watch = engine.watch(Some("posts")).unwrap();

    let (writer, _) = engine_on(MemoryStore::new(), transport(&server, None));
    let posts = writer.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "p1", "title": "hello"}))
        .await
        .unwrap();
    writer.push().await.unwrap();
    assert!(server.record("posts", "p1").is_some());

    pulled(&mut watch, "p1", |r| {
        r.get("title") == Some(&json!("hello"))
    })
    .await;
    let status = engine.status().unwrap();
    let live = status.live.expect("a live status");
    assert_eq!(live.state, LiveState::Connected);
    assert!(live.events >= 1 && live.last_event_ms.is_some(), "{live:?}");
    let health = engine.health().await;
    assert!(
        health
            .checks
            .iter()
            .any(|c| c.name == "live_channel" && c.ok),
        "{health:?}"
    );
    engine.shutdown();
    writer.shutdown();
}

#[tokio::test]
async fn sse_brings_another_engines_change_without_waiting_for_the_poll() {
    another_engines_change_arrives_live(LiveConfig::sse("/live/events"), LiveOptions::default())
        .await;
}

#[tokio::test]
async fn websocket_brings_another_engines_change_without_waiting_for_the_poll() {
    another_engines_change_arrives_live(LiveConfig::websocket("/live/ws"), LiveOptions::default())
        .await;
}

#[tokio::test]
async fn sse_with_a_subscription_handshake_and_hint_only_events() {
    let live = LiveConfig::sse("/live/events").subscribe(subscribe_http());
    let options = LiveOptions {
        handshake: true,
        payload: LivePayload::Hint,
        ..LiveOptions::default()
    };
    another_engines_change_arrives_live(live, options).await;
}

#[tokio::test]
async fn websocket_subscribing_over_the_socket() {
    let mut sub = subscribe_http();
    sub.url = None;
    let live = LiveConfig::websocket("/live/ws").subscribe(sub);
    let options = LiveOptions {
        handshake: true,
        ..LiveOptions::default()
    };
    another_engines_change_arrives_live(live, options).await;
}

#[tokio::test]
async fn changes_made_while_events_are_lost_arrive_with_the_pull_after_reconnecting() {
    let server = ReferenceServer::builder().start().await;
    let store = MemoryStore::new();
    let (engine, mut events) = engine_on(
        store.clone(),
        transport(&server, Some(LiveConfig::sse("/live/events"))),
    );
    connected(&mut events).await;
    // Every event is lost from now on: only a (re)connect's delta pull can bring changes.
    server.set_live(LiveOptions {
        lose_rate: 1.0,
        ..LiveOptions::default()
    });
    for i in 0..5 {
        server
            .insert_direct("posts", json!({"id": format!("gone-{i}")}))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = engine.table::<Value>("posts").unwrap();
    assert!(
        posts.get("gone-4").await.unwrap().is_none(),
        "no event, no poll: nothing could have brought it yet"
    );
    let (_, lost) = server.live_events();
    assert_eq!(lost, 5);

    server.drop_live();
    eventually("the channel reconnects", || {
        engine
            .status()
            .unwrap()
            .live
            .is_some_and(|l| l.reconnects >= 1 && l.state == LiveState::Connected)
    })
    .await;
    for i in 0..5 {
        let id = format!("gone-{i}");
        let deadline = std::time::Instant::now() + BOUND;
        while posts.get(id.as_str()).await.unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "{id} lost");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    engine.shutdown();
}

#[tokio::test]
async fn no_change_is_lost_across_seeded_drops_stalls_and_lost_events() {
    let options = LiveOptions {
        lose_rate: 0.3,
        drop_rate: 0.05,
        keepalive: Duration::from_millis(100),
        seed: 21,
        ..LiveOptions::default()
    };
    let server = ReferenceServer::builder().live(options).start().await;
    let mut live = LiveConfig::sse("/live/events");
    live.stall_timeout_ms = 400;
    let (engine, mut events) = engine_on(MemoryStore::new(), transport(&server, Some(live)));
    connected(&mut events).await;
    for round in 0..40 {
        let id = format!("r{}", round % 10);
        if round < 10 {
            server
                .insert_direct("posts", json!({"id": id, "n": round}))
                .unwrap();
        } else {
            server
                .update_direct("posts", id.as_str(), json!({"n": round}))
                .unwrap();
        }
        match round {
            15 => server.drop_live(),
            25 => server.stall_live(true),
            // Stalled past the client's stall timeout: it reconnects on its own.
            32 => {
                tokio::time::sleep(Duration::from_millis(700)).await;
                server.stall_live(false);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // A lost *last* event waits for the next event, reconnect or poll: end with a clean one.
    server.set_live(LiveOptions::default());
    server
        .insert_direct("posts", json!({"id": "last"}))
        .unwrap();

    let posts = engine.table::<Value>("posts").unwrap();
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let mut same = true;
        for expected in server.records("posts") {
            let id = expected["id"].as_str().unwrap().to_owned();
            let local = posts.get(id.as_str()).await.unwrap();
            same &= local.as_ref().map(|r| &r["version"]) == Some(&expected["version"]);
        }
        if same {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "local store never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, lost) = server.live_events();
    let live = engine.status().unwrap().live.unwrap();
    assert!(lost > 0, "the seed loses events");
    assert!(live.reconnects >= 2, "dropped and stalled: {live:?}");
    assert!(server.live_connects() >= 3);
    engine.shutdown();
}

#[tokio::test]
async fn echoes_of_our_own_writes_settle_like_pulled_echoes() {
    let server = ReferenceServer::builder().start().await;
    let (engine, mut events) = engine_on(
        MemoryStore::new(),
        transport(&server, Some(LiveConfig::websocket("/live/ws"))),
    );
    connected(&mut events).await;
    let posts = engine.table::<Value>("posts").unwrap();
    for n in 0..20 {
        posts.put(&json!({"id": "mine", "n": n})).await.unwrap();
        posts
            .put(&json!({"id": format!("other-{n}"), "n": n}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("the outbox drains", || {
        engine.status().unwrap().queue_depth == 0
    })
    .await;
    // Let the echoes' pulls run.
    eventually("every write echoed back", || {
        engine.status().unwrap().live.unwrap().events >= 21
    })
    .await;
    engine.sync().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        if let EventItem::Event(e) = item {
            seen.push(e);
        }
    }
    assert!(
        !seen.iter().any(|e| matches!(e, SyncEvent::Conflict { .. })),
        "an echo was taken for a conflict: {seen:?}"
    );
    let local = posts.get("mine").await.unwrap().unwrap();
    let remote = server.record("posts", "mine").unwrap();
    assert_eq!(local.get("n"), Some(&json!(19)));
    assert_eq!(local.get("version"), remote.get("version"));
    assert!(engine.dead_letters(None).unwrap().is_empty());
    engine.shutdown();
}

#[tokio::test]
async fn set_online_true_reconnects_the_channel() {
    let server = ReferenceServer::builder().start().await;
    let (engine, mut events) = engine_on(
        MemoryStore::new(),
        transport(&server, Some(LiveConfig::sse("/live/events"))),
    );
    connected(&mut events).await;
    engine.set_online(false).unwrap();
    eventually("the channel closes while offline", || {
        server.live_open() == 0
            && engine.status().unwrap().live.unwrap().state == LiveState::Disconnected
    })
    .await;
    server
        .insert_direct("posts", json!({"id": "while-away"}))
        .unwrap();
    let mut watch = engine.watch(Some("posts")).unwrap();
    engine.set_online(true).unwrap();
    pulled(&mut watch, "while-away", |_| true).await;
    eventually("connected again", || {
        let live = engine.status().unwrap().live.unwrap();
        live.state == LiveState::Connected && live.reconnects == 1
    })
    .await;
    assert_eq!(server.live_open(), 1);
    engine.shutdown();
}

/// A transport that is the REST transport for everything but its live channel, which the
/// test feeds by hand: hints that match no server change.
struct HandFed {
    rest: RestTransport,
    signals: Arc<Mutex<mpsc::UnboundedReceiver<LiveSignal>>>,
}

struct HandFedChannel(Arc<Mutex<mpsc::UnboundedReceiver<LiveSignal>>>);

struct HandFedSession(Arc<Mutex<mpsc::UnboundedReceiver<LiveSignal>>>);

#[async_trait]
impl LiveChannel for HandFedChannel {
    fn describe(&self) -> String {
        "hand-fed".into()
    }
    async fn connect(&self, _last: Option<String>) -> Result<Box<dyn LiveSession>> {
        Ok(Box::new(HandFedSession(self.0.clone())))
    }
}

#[async_trait]
impl LiveSession for HandFedSession {
    async fn next(&mut self) -> Result<Option<LiveSignal>> {
        Ok(self.0.lock().await.recv().await)
    }
}

#[async_trait]
impl Transport for HandFed {
    fn name(&self) -> &str {
        "hand-fed"
    }
    async fn push(&self, request: PushRequest) -> Result<PushOutcome> {
        self.rest.push(request).await
    }
    async fn pull(&self, request: PullRequest) -> Result<PullPage> {
        self.rest.pull(request).await
    }
    async fn fetch(&self, table: &str, key: &Key) -> Result<Option<Fetched>> {
        self.rest.fetch(table, key).await
    }
    fn live(&self) -> Option<Arc<dyn LiveChannel>> {
        Some(Arc::new(HandFedChannel(self.signals.clone())))
    }
}

#[tokio::test]
async fn a_hint_alone_never_moves_a_checkpoint_nor_writes_a_carried_record() {
    let server = ReferenceServer::builder().start().await;
    server.insert_direct("posts", json!({"id": "p1"})).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let store = MemoryStore::new();
    let hand_fed = HandFed {
        rest: transport(&server, None),
        signals: Arc::new(Mutex::new(rx)),
    };
    let (engine, mut events) = engine_on(store.clone(), hand_fed);
    connected(&mut events).await;
    let before = checkpoint(&store);
    assert!(
        before.is_some(),
        "the pull after connecting stored a checkpoint"
    );

    server.clear_log();
    let fake: Record = json!({"id": "ghost", "version": 99})
        .as_object()
        .cloned()
        .unwrap();
    tx.send(LiveSignal::Hint {
        tables: vec!["posts".into()],
    })
    .unwrap();
    tx.send(LiveSignal::Change {
        table: "posts".into(),
        key: Some(Key::from("ghost")),
        record: Some(fake),
    })
    .unwrap();
    events
        .wait_for(BOUND, |e| {
            matches!(e, SyncEvent::SyncStarted { trigger } if *trigger == tidesync::Trigger::Live)
        })
        .await
        .expect("the hints start a pull");
    events
        .wait_for(BOUND, |e| matches!(e, SyncEvent::SyncCompleted { .. }))
        .await
        .expect("the pull finishes");
    let pulls = server
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/posts")
        .count();
    assert!(pulls >= 1, "the hint pulled");
    assert_eq!(
        checkpoint(&store),
        before,
        "nothing new: the checkpoint stays"
    );
    let posts = engine.table::<Value>("posts").unwrap();
    assert!(
        posts.get("ghost").await.unwrap().is_none(),
        "a carried record the server does not list is never written"
    );
    // A hint for a table this engine does not pull starts nothing.
    server.clear_log();
    tx.send(LiveSignal::Hint {
        tables: vec!["unknown".into()],
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.request_log().is_empty());
    engine.shutdown();
}

#[test]
fn the_live_section_reads_from_toml() {
    let config: tidesync_transport_rest::RestConfig = toml::from_str(
        r#"
        base_url = "http://127.0.0.1:1"
        [live]
        kind = "websocket"
        url = "/live/ws"
        stall_timeout_ms = 5000
        [[live.events]]
        event = "ping"
        action = "ignore"
        [live.subscribe]
        client_id = "/clientId"
        body = '{"clientId":"{client_id}","tables":{tables}}'
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    let live = config.live.unwrap();
    assert_eq!(live.kind, LiveKind::Websocket);
    assert_eq!(live.stall_timeout_ms, 5000);
    assert_eq!(live.events.len(), 1);
    assert!(live.subscribe.unwrap().url.is_none());
}

const CRASH_CHILD_DB: &str = "TIDESYNC_LIVE_CHILD_DB";
const CRASH_CHILD_URL: &str = "TIDESYNC_LIVE_CHILD_URL";

/// A live engine on a redb file, as both the killed child and the restarted parent run it.
fn live_engine_on_file(path: &std::path::Path, url: &str) -> (Engine, Events) {
    let transport = RestTransport::builder(url)
        .table("posts", TableRoutes::reference_server("posts"))
        .request_timeout(Duration::from_secs(5))
        .live(LiveConfig::sse("/live/events"))
        .build()
        .expect("transport");
    let mut builder = Engine::builder()
        .store(tidesync::RedbStore::open(path).expect("the store opens"))
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(settings());
    let events = builder.events();
    (builder.start().expect("engine starts"), events)
}

/// The child side of the crash test: connect, show the records so far, say `ready`, then
/// keep applying what the channel brings until the parent kills the process.
fn live_crash_child(path: &str, url: &str) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (engine, mut events) = live_engine_on_file(std::path::Path::new(path), url);
        connected(&mut events).await;
        let posts = engine.table::<Value>("posts").expect("posts");
        let deadline = std::time::Instant::now() + BOUND;
        while posts.get("before-4").await.expect("a local read").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child pulled nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("\nlive-child-ready");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// A client killed (SIGKILL) while its live channel delivers changes loses none of them: the
/// changes made on the server while it was down, and those whose events were in flight when
/// it died, arrive with the delta pull of the restarted engine's first connect, from the
/// checkpoint the dead process committed.
#[test]
fn a_client_killed_while_changes_stream_in_loses_none_of_them() {
    if let (Ok(path), Ok(url)) = (
        std::env::var(CRASH_CHILD_DB),
        std::env::var(CRASH_CHILD_URL),
    ) {
        live_crash_child(&path, &url);
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(ReferenceServer::builder().start());
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("live.redb");
    for i in 0..5 {
        server
            .insert_direct("posts", json!({"id": format!("before-{i}"), "n": 0}))
            .unwrap();
    }

    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_client_killed_while_changes_stream_in_loses_none_of_them",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, &path)
        .env(CRASH_CHILD_URL, server.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("stdout");
    let ready = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
            .any(|line| line.trim() == "live-child-ready")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ready.join().expect("reader"), "the child said ready");

    // Changes stream in; the child dies in the middle of them.
    for i in 0..20 {
        server
            .insert_direct("posts", json!({"id": format!("during-{i}"), "n": i}))
            .unwrap();
        server
            .update_direct(
                "posts",
                format!("before-{}", i % 5).as_str(),
                json!({"n": i + 1}),
            )
            .unwrap();
        if i == 10 {
            child.kill().expect("SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait().expect("reaped");
    for i in 0..5 {
        server
            .insert_direct("posts", json!({"id": format!("after-{i}"), "n": 0}))
            .unwrap();
    }

    // Restarted on the same file: everything the server holds arrives, as the server has it.
    runtime.block_on(async {
        let (engine, mut events) = live_engine_on_file(&path, server.url());
        connected(&mut events).await;
        let posts = engine.table::<Value>("posts").unwrap();
        let on_server = server.records("posts");
        assert_eq!(on_server.len(), 30);
        for record in &on_server {
            let id = record["id"].as_str().expect("string id").to_owned();
            let deadline = std::time::Instant::now() + BOUND;
            loop {
                let local = posts.get(id.as_str()).await.unwrap();
                if local.as_ref().is_some_and(|l| l["n"] == record["n"]) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id}: local {local:?}, server {record}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(posts.count().await.unwrap(), 30);
        assert!(
            engine.outbox(None, 10).unwrap().is_empty(),
            "nothing to push"
        );
        engine.shutdown();
    });
}
