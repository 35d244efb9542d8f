//! Shared set-up: a reference server, a REST transport for its collections, an engine.

use std::time::Duration;

use tidesync::{Engine, EventItem, MemoryStore, SyncEvent, SyncSettings, TableSpec};
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// Fast settings for tests: no timer, no sync at start, short backoff; local writes do not
/// trigger a push by themselves (tests call `push`/`sync`), except where a test says so.
pub fn settings() -> SyncSettings {
    SyncSettings {
        interval: None,
        sync_on_start: false,
        debounce: Duration::from_secs(600),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        probe_base: Duration::from_millis(50),
        probe_cap: Duration::from_millis(200),
        page_size: 50,
        ..SyncSettings::default()
    }
}

/// A transport for `tables` on `server`, with a short request timeout.
pub fn transport(server: &ReferenceServer, tables: &[&str], timeout_ms: u64) -> RestTransport {
    let mut builder = RestTransport::builder(server.url());
    for table in tables {
        builder = builder.table(*table, TableRoutes::reference_server(table));
    }
    builder
        .request_timeout(Duration::from_millis(timeout_ms))
        .build()
        .expect("transport")
}

/// An engine on a memory store syncing `posts` and `comments` (comments reference posts).
pub fn engine(server: &ReferenceServer) -> Engine {
    engine_with(server, settings(), |b| b)
}

/// An engine with custom settings and builder tweaks.
pub fn engine_with(
    server: &ReferenceServer,
    settings: SyncSettings,
    tweak: impl FnOnce(tidesync::EngineBuilder) -> tidesync::EngineBuilder,
) -> Engine {
    let builder = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts").index("updatedAt").index("author"))
        .table(TableSpec::new("comments").references("postId", "posts"))
        .transport(transport(server, &["posts", "comments"], 2_000))
        .settings(settings);
    tweak(builder).start().expect("engine starts")
}

/// Waits until an event matches, or fails the test after `secs`.
pub async fn expect_event(
    events: &mut tidesync::Events,
    secs: u64,
    what: &str,
    pred: impl FnMut(&SyncEvent) -> bool,
) -> SyncEvent {
    events
        .wait_for(Duration::from_secs(secs), pred)
        .await
        .unwrap_or_else(|| panic!("no {what} event within {secs}s"))
}

/// Drains events that are already there, for assertions on what happened.
pub async fn drain(events: &mut tidesync::Events) -> Vec<SyncEvent> {
    let mut out = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        if let EventItem::Event(event) = item {
            out.push(event);
        }
    }
    out
}

/// Polls `check` every 20 ms until it holds, or fails the test after `secs`.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {secs}s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
