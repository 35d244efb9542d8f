//! The child process: one instance of the app. It opens the shared redb file in multi-process
//! mode, runs an engine elected by `LockfileLeader`, writes its own records in a loop and
//! reports on stdout, one `@@ `-prefixed line each:
//!
//! - `READY <pid>`: the engine started;
//! - `ACK C <id>` / `ACK U <id> <n>`: a create / an update (`touched: n`) was acknowledged;
//! - `LEADER <epoch>` / `FOLLOWER`: leadership changed (from the engine's events, with a
//!   status poll as a fallback);
//! - `CYCLE ok|err`: a sync cycle ended; `SYNCED ok|err <msg>`: a `SYNC` command's outcome;
//! - `STOPPED <n>`: the write loop ended after `n` rounds (every ACK is printed before it);
//! - `DEPTH <queue> <dead>`: the shared outbox, every 200 ms after `STOPPED`;
//! - `BYE`: shut down cleanly.
//!
//! Commands on stdin: `STOP` (stop writing), `START` (start writing), `SYNC` (sync now);
//! end of input: shut the engine down (resigning) and exit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, EventItem, SyncEvent, SyncSettings, TableSpec};
use tidesync_leader_lockfile::LockfileLeader;
use tidesync_store_redb::RedbOptions;
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// The database path; its presence makes `leader_child` act as a child.
pub const DB_ENV: &str = "TIDESYNC_LEADER_CHILD_DB";
/// The reference server's URL.
pub const URL_ENV: &str = "TIDESYNC_LEADER_CHILD_URL";
/// The process name, the prefix of its record ids (unique per incarnation).
pub const NAME_ENV: &str = "TIDESYNC_LEADER_CHILD_NAME";
/// `0`: start without writing (default `1`).
pub const WRITES_ENV: &str = "TIDESYNC_LEADER_CHILD_WRITES";
/// The sync interval in ms; `0` disables it (default 200).
pub const INTERVAL_ENV: &str = "TIDESYNC_LEADER_CHILD_INTERVAL_MS";
/// The request timeout in ms (default 2000).
pub const TIMEOUT_ENV: &str = "TIDESYNC_LEADER_CHILD_TIMEOUT_MS";
/// The campaign interval in ms (default [`CAMPAIGN_EVERY`]).
pub const CAMPAIGN_ENV: &str = "TIDESYNC_LEADER_CHILD_CAMPAIGN_MS";

/// The table (and server collection) every child writes.
pub const TABLE: &str = "items";
/// How often the engine campaigns: the failover bound is this plus the take-over work.
pub const CAMPAIGN_EVERY: Duration = Duration::from_millis(300);
/// The pause between two writes of one child.
const WRITE_PAUSE: Duration = Duration::from_millis(25);

fn say(line: &str) {
    println!("@@ {line}");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings() -> SyncSettings {
    let interval = env_u64(INTERVAL_ENV, 200);
    SyncSettings {
        interval: (interval > 0).then(|| Duration::from_millis(interval)),
        sync_on_start: true,
        debounce: Duration::from_millis(50),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        probe_base: Duration::from_millis(50),
        probe_cap: Duration::from_millis(300),
        page_size: 200,
        // A new leader holds what its predecessor left in flight for the request timeout.
        takeover_hold: Duration::from_millis(env_u64(TIMEOUT_ENV, 2000)),
        ..SyncSettings::default()
    }
}

/// Runs the child until its stdin closes.
pub fn run(db: PathBuf) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child runtime");
    runtime.block_on(child_main(db));
}

async fn child_main(db: PathBuf) {
    let url = std::env::var(URL_ENV).expect("server url");
    let name = std::env::var(NAME_ENV).expect("process name");
    let store = RedbOptions::new()
        .multi_process(true)
        .cache_size(8 * 1024 * 1024)
        .open(&db)
        .expect("the shared store opens");
    let elector = LockfileLeader::for_database(&db).expect("elector");
    let transport = RestTransport::builder(url)
        .table(TABLE, TableRoutes::reference_server(TABLE))
        .request_timeout(Duration::from_millis(env_u64(TIMEOUT_ENV, 2000)))
        .build()
        .expect("transport");
    let engine = Engine::builder()
        .store(store)
        .table(TableSpec::new(TABLE))
        .transport(transport)
        .settings(settings())
        .leader(
            elector,
            Duration::from_millis(env_u64(CAMPAIGN_ENV, CAMPAIGN_EVERY.as_millis() as u64)),
        )
        .start()
        .expect("engine starts");
    say(&format!("READY {}", std::process::id()));

    let writing = Arc::new(AtomicBool::new(env_u64(WRITES_ENV, 1) == 1));
    let stop = Arc::new(AtomicBool::new(false));
    let exit = Arc::new(AtomicBool::new(false));
    let (sync_tx, mut sync_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    {
        let (writing, stop, exit) = (writing.clone(), stop.clone(), exit.clone());
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => match line.trim() {
                        "STOP" => stop.store(true, Ordering::SeqCst),
                        "START" => writing.store(true, Ordering::SeqCst),
                        "SYNC" => {
                            let _ = sync_tx.send(());
                        }
                        _ => {}
                    },
                }
            }
            exit.store(true, Ordering::SeqCst);
        });
    }

    // Leadership reports: from the events, and from a status poll in case an event came
    // before the subscription.
    let announced: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let announce = {
        let announced = announced.clone();
        move |epoch: Option<u64>| {
            let mut last = announced.lock().expect("announce lock");
            if *last == epoch {
                return;
            }
            *last = epoch;
            match epoch {
                Some(epoch) => say(&format!("LEADER {epoch}")),
                None => say("FOLLOWER"),
            }
        }
    };
    {
        let mut events = engine.events();
        let announce = announce.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    EventItem::Event(SyncEvent::LeadershipChanged { leader, epoch }) => {
                        announce(if leader { epoch } else { None });
                    }
                    EventItem::Event(SyncEvent::SyncCompleted { .. }) => say("CYCLE ok"),
                    EventItem::Event(SyncEvent::SyncFailed { error, kind, .. }) => {
                        say("CYCLE err");
                        eprintln!("sync failed ({kind}): {error}");
                    }
                    EventItem::Event(SyncEvent::DeadLettered { key, error, .. }) => {
                        eprintln!("dead letter {key}: {error}");
                    }
                    _ => {}
                }
            }
        });
    }
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(status) = engine.status() {
                    match (status.leader, status.epoch) {
                        (true, Some(epoch)) => announce(Some(epoch)),
                        (false, _) => announce(None),
                        (true, None) => {} // between the two updates of a change
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            while sync_rx.recv().await.is_some() {
                match engine.sync().await {
                    Ok(_) => say("SYNCED ok"),
                    Err(err) => say(&format!("SYNCED err {err}")),
                }
            }
        });
    }

    let items = engine.table::<Value>(TABLE).expect("table");
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && !exit.load(Ordering::SeqCst) {
        if !writing.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let id = format!("{name}-{n}");
        match items.put(&json!({"id": id, "by": name, "n": n})).await {
            Ok(_) => say(&format!("ACK C {id}")),
            Err(err) => eprintln!("write {id} failed: {err}"),
        }
        if n % 4 == 3 {
            let previous = format!("{name}-{}", n - 1);
            match items
                .update(previous.as_str(), json!({ "touched": n }))
                .await
            {
                Ok(_) => say(&format!("ACK U {previous} {n}")),
                Err(err) => eprintln!("update {previous} failed: {err}"),
            }
        }
        n += 1;
        tokio::time::sleep(WRITE_PAUSE).await;
    }
    say(&format!("STOPPED {n}"));
    while !exit.load(Ordering::SeqCst) {
        if let Ok(status) = engine.status() {
            say(&format!(
                "DEPTH {} {}",
                status.queue_depth, status.dead_letters
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engine.shutdown();
    say("BYE");
}
