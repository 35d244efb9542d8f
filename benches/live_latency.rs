//! Live channel: how soon a server change shows in a local `watch()`, live vs polling, and
//! what an idle channel costs.
//!
//! Run: `cargo bench --bench live_latency` (release). Against the reference server
//! (127.0.0.1, in process), on a memory store:
//! 1. latency: `TIDESYNC_BENCH_LIVE_CHANGES` (default 1000) server changes, one every
//!    `TIDESYNC_BENCH_LIVE_GAP_MS` (default 5 ms), made by another client (the server's direct
//!    edit API, from another thread); for each, the time from the change to the `watch()`
//!    event of the pulled record. Live: SSE and WebSocket (hint-carrying change events, the
//!    engine pulls), polling at 1 h. Polling: no channel, `interval = 1 s` (30 times more
//!    often than the default 30 s, so a lower bound for what polling gives).
//! 2. idle cost: the channel open and nothing changing for `TIDESYNC_BENCH_LIVE_IDLE_S`
//!    (default 10) seconds: HTTP requests the server saw, scaled to an hour; next to it the
//!    same for polling at 1 s.
//!
//! Every change is checked to arrive (the run fails otherwise).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tidesync::{Engine, MemoryStore, Origin, SyncEvent, SyncSettings, WatchEvent};
use tidesync_testkit::server::{LiveOptions, ReferenceServer};
use tidesync_transport_rest::{LiveConfig, RestTransport, TableRoutes};

use common::{env_usize, percentile, posts, runtime, section, section_end};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Sse,
    WebSocket,
    Polling1s,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Sse => "live, SSE",
            Mode::WebSocket => "live, WebSocket",
            Mode::Polling1s => "polling, interval 1 s",
        }
    }
}

fn engine(server: &ReferenceServer, mode: Mode) -> (Engine, tidesync::Events) {
    let mut builder = RestTransport::builder(server.url())
        .table("posts", TableRoutes::reference_server("posts"))
        .request_timeout(Duration::from_secs(30));
    let interval = match mode {
        Mode::Sse => {
            builder = builder.live(LiveConfig::sse("/live/events"));
            Duration::from_secs(3600)
        }
        Mode::WebSocket => {
            builder = builder.live(LiveConfig::websocket("/live/ws"));
            Duration::from_secs(3600)
        }
        Mode::Polling1s => Duration::from_secs(1),
    };
    let transport = builder.build().expect("transport");
    let mut b = Engine::builder()
        .store(MemoryStore::new())
        .table(posts())
        .transport(transport)
        .settings(SyncSettings {
            interval: Some(interval),
            // Live: the channel's connect runs the first (full delta) pull.
            sync_on_start: matches!(mode, Mode::Polling1s),
            ..SyncSettings::default()
        });
    let events = b.events();
    (b.start().expect("engine"), events)
}

/// Waits for the live channel (and its first pull), or for the first cycle when polling.
async fn ready(events: &mut tidesync::Events, mode: Mode) {
    if !matches!(mode, Mode::Polling1s) {
        events
            .wait_for(Duration::from_secs(10), |e| {
                matches!(e, SyncEvent::LiveConnected)
            })
            .await
            .expect("live channel connects");
    }
    events
        .wait_for(Duration::from_secs(10), |e| {
            matches!(e, SyncEvent::SyncCompleted { .. })
        })
        .await
        .expect("first cycle");
}

fn latency(mode: Mode, changes: usize, gap: Duration) -> Vec<Duration> {
    let rt = runtime();
    rt.block_on(async move {
        let server = ReferenceServer::builder()
            .live(LiveOptions::default())
            .start_background();
        let (engine, mut events) = engine(&server, mode);
        ready(&mut events, mode).await;
        let mut watch = engine.watch(Some("posts")).expect("watch");
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let handle = server.handle();
        let sent_by_writer = sent.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..changes {
                let id = format!("c{i:05}");
                sent_by_writer
                    .lock()
                    .expect("lock")
                    .insert(id.clone(), Instant::now());
                handle
                    .insert_direct("posts", json!({"id": id, "n": i}))
                    .expect("insert");
                std::thread::sleep(gap);
            }
        });
        let mut out = Vec::with_capacity(changes);
        let deadline = Instant::now() + gap * changes as u32 + Duration::from_secs(30);
        while out.len() < changes {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(event)) = tokio::time::timeout(left, watch.next()).await else {
                panic!(
                    "{}: only {} of {changes} changes arrived",
                    mode.label(),
                    out.len()
                );
            };
            let now = Instant::now();
            match event {
                WatchEvent::Change(change) if change.origin == Origin::Pull => {
                    let key = change.key.to_string();
                    if let Some(at) = sent.lock().expect("lock").remove(&key) {
                        out.push(now.duration_since(at));
                    }
                }
                WatchEvent::Lagged(n) => panic!("the watcher lagged by {n}"),
                WatchEvent::Change(_) => {}
            }
        }
        writer.join().expect("writer");
        engine.shutdown();
        out
    })
}

fn idle(mode: Mode, secs: u64) -> (usize, f64) {
    let rt = runtime();
    rt.block_on(async move {
        let server = ReferenceServer::builder()
            .live(LiveOptions::default())
            .start_background();
        let (engine, mut events) = engine(&server, mode);
        ready(&mut events, mode).await;
        // Let anything the start queued settle, then count from a clean log.
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.clear_log();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let requests = server.request_log().len();
        engine.shutdown();
        (requests, requests as f64 * 3600.0 / secs as f64)
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let changes = env_usize("TIDESYNC_BENCH_LIVE_CHANGES", 1000, 20);
    let gap = Duration::from_millis(env_usize("TIDESYNC_BENCH_LIVE_GAP_MS", 5, 5) as u64);
    let idle_s = env_usize("TIDESYNC_BENCH_LIVE_IDLE_S", 10, 1) as u64;

    section(&format!(
        "server change -> local watch() event: {changes} changes, one every {} ms",
        gap.as_millis()
    ));
    for mode in [Mode::Sse, Mode::WebSocket, Mode::Polling1s] {
        let mut lat = latency(mode, changes, gap);
        lat.sort();
        println!(
            "   {:<24} p50 {:>9}   p99 {:>9}   max {:>9}",
            mode.label(),
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(percentile(&lat, 100.0)),
        );
    }
    section_end();

    section(&format!("idle cost: nothing changes for {idle_s} s"));
    for mode in [Mode::Sse, Mode::WebSocket, Mode::Polling1s] {
        let (requests, per_hour) = idle(mode, idle_s);
        println!(
            "   {:<24} {requests} requests in {idle_s} s  (= {per_hour:.0} per hour)",
            mode.label()
        );
    }
    section_end();
}
