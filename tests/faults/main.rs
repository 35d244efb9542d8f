//! Seeded fault runs (issue 8): long randomized runs against the reference server with every
//! kind of network and server misbehaviour switched on at once, while the application keeps
//! writing, editing and deleting and another client edits the server. At the end the faults
//! are cleared, the engine converges, and `../torture/verify.rs` checks that server and local
//! hold the same records, that every acknowledged local write is on the server (or lost to a
//! server-wins conflict), and that nothing was duplicated.
//!
//! Faults (rates vary with the seed): 500 and 503, 429 with `Retry-After` in seconds and as an
//! HTTP date, dropped connections, requests that hang past the client timeout (and commit
//! later), commit-then-drop, commit-then-503, malformed JSON on a 2xx (after the server
//! committed), and random latency on every request. Next to them, outages (DESIGN invariant
//! 11): a TCP gate in front of the server now and then refuses every connection (server down)
//! or accepts and never answers (server hung) for a stretch of the workload, cutting the
//! requests in progress; no outage may dead-letter anything.
//!
//! Dead letters. Every failure above is transient except one: a 2xx whose body is not JSON is
//! a `Decode` error, which the engine dead-letters by design (DESIGN invariant 8: an
//! undecodable response is permanent; the engine cannot tell a committed write from a broken
//! one). Usually the write *did* commit (the `malformed` fault cuts the real answer in half
//! and sends it as 200, whatever the real status was). The suite asserts the precise expected
//! set: every dead letter is a `decode` one whose idempotency key appears in the request log
//! on a write that got the `malformed` fault, and nothing else is ever dead-lettered (no
//! `retries_exhausted`, no transient kind). It then retries those dead letters (the
//! application's move): the retry carries the same idempotency key, so a committed write is
//! answered by replay (never applied twice), a refused one (real answer 409) goes to the
//! resolver, and the run converges with nothing duplicated. A dead letter whose write a pull
//! already showed applied is settled by that pull (BUG-8) and is not among them.
//!
//! Reproducible from the printed seed: `TIDESYNC_FAULT_SEED=<seed>` reruns one seed (the
//! fault decisions and the workload are seeded; request interleavings under concurrency and
//! timers can still differ from run to run). `TIDESYNC_FAULT_RUNS=<n>` runs n seeds (default
//! 2), starting from the `TIDESYNC_FAULT_FIRST`-th of the seed sequence (default 0: the seeds
//! CI runs), so a long run can explore seeds no earlier run tried; `TIDESYNC_FAULT_STEPS` sets the workload length (default 500). A failure prints the
//! seed, the profile, the last requests and the engine's outbox and dead letters.

#[path = "../torture/verify.rs"]
mod verify;
#[path = "../torture/workload.rs"]
mod workload;

mod known_bugs;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tidesync::{
    Engine, ErrorKind, EventItem, MemoryStore, ServerWins, SyncEvent, SyncSettings, TableSpec,
};
use tidesync_conflict_policies::ClientWins;
use tidesync_testkit::gate::{Gate, GateMode};
use tidesync_testkit::server::{
    CollectionConfig, Concurrency, FaultKind, Faults, Latency, ReferenceServer, RetryAfter,
    ServerHandle,
};
use tidesync_transport_rest::{RestTransport, TableRoutes};

use verify::{LastWrite, ServerEdits};
use workload::TABLES;

const POST_KEYS: u32 = 60;
const NOTE_KEYS: u32 = 40;

/// What one seed runs with.
#[derive(Debug, Clone)]
struct Profile {
    seed: u64,
    steps: usize,
    concurrency: usize,
    page_size: usize,
    timeout: Duration,
    hang: Duration,
    /// Scales every fault rate.
    intensity: f64,
    latency_ms: u64,
}

impl Profile {
    fn from_seed(seed: u64, steps: usize) -> Profile {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
        Profile {
            seed,
            steps,
            concurrency: [1, 2, 4][rng.random_range(0..3)],
            page_size: [7, 20, 50][rng.random_range(0..3)],
            timeout: Duration::from_millis(400),
            hang: Duration::from_millis(900),
            intensity: rng.random_range(0.5..1.5),
            latency_ms: rng.random_range(1..25),
        }
    }

    fn faults(&self) -> Faults {
        let r = |rate: f64| rate * self.intensity;
        Faults::none()
            .seed(self.seed)
            .latency(Latency::Range(
                Duration::ZERO,
                Duration::from_millis(self.latency_ms),
            ))
            .rule(r(0.05), FaultKind::status(500))
            .rule(r(0.04), FaultKind::status(503))
            .rule(
                r(0.02),
                FaultKind::status_retry_after(429, RetryAfter::Seconds(1)),
            )
            .rule(
                r(0.02),
                FaultKind::status_retry_after(429, RetryAfter::HttpDate(1)),
            )
            .rule(r(0.04), FaultKind::Drop)
            .rule(r(0.02), FaultKind::Hang(self.hang))
            .rule(r(0.03), FaultKind::CommitThenDrop)
            .rule(r(0.03), FaultKind::CommitThenStatus(503))
            .rule(r(0.015), FaultKind::Malformed)
    }
}

/// Notes run on a server that answers a stale version with 400 `{"errors": ["version
/// conflict"]}` (docs/rest-routes.md, recipe 7): answer rules make those conflicts, and deletes
/// carry a quoted `If-Match` header template.
fn notes_routes() -> TableRoutes {
    use tidesync_transport_rest::{Answer, AnswerRule, WriteRoute};
    let conflict = || {
        AnswerRule::status(400, Answer::Conflict)
            .pointer("/errors/0")
            .equals(json!("version conflict"))
    };
    TableRoutes::reference_server("notes")
        .update(WriteRoute::put("/api/notes/{id}").answer(conflict()))
        .delete(
            WriteRoute::delete("/api/notes/{id}")
                .header("If-Match", "\"{version}\"")
                .answer(conflict()),
        )
}

/// Posts run on a server with no concurrency control at all (docs/rest-routes.md, recipe 11):
/// the table is pulled before it is pushed in every cycle, so remote edits meet pending local
/// ones on the pull path, where client wins decides.
fn posts_routes() -> TableRoutes {
    TableRoutes::reference_server("posts")
        .conflict_detection(tidesync_transport_rest::ConflictDetection::PullFirst)
}

fn engine(url: &str, profile: &Profile) -> Engine {
    let transport = RestTransport::builder(url)
        .table("posts", posts_routes())
        .table("notes", notes_routes())
        .table("tasks", TableRoutes::reference_server("tasks").server_ids())
        .request_timeout(profile.timeout)
        .build()
        .expect("transport");
    Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts").index("v"))
        .table(TableSpec::new("notes"))
        .table(TableSpec::new("tasks").index("cid"))
        .transport(transport)
        .conflicts("posts", ClientWins)
        .conflicts("notes", ServerWins)
        .conflicts("tasks", ClientWins)
        .settings(SyncSettings {
            interval: Some(Duration::from_millis(300)),
            sync_on_start: true,
            debounce: Duration::from_millis(30),
            concurrency: profile.concurrency,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(300),
            probe_base: Duration::from_millis(50),
            probe_cap: Duration::from_millis(300),
            page_size: profile.page_size,
            ..SyncSettings::default()
        })
        .start()
        .expect("engine starts")
}

/// The application's side: writes, and what it expects the server to end up with.
struct App {
    expect: BTreeMap<(String, String), LastWrite>,
    versions: HashMap<String, u64>,
    writes: u64,
    skipped: u64,
}

impl App {
    async fn write(&mut self, engine: &Engine, rng: &mut StdRng) {
        let roll = rng.random_range(0..100);
        let (table, keys) = match roll {
            0..50 => ("posts", POST_KEYS),
            50..80 => ("notes", NOTE_KEYS),
            _ => return self.write_task(engine, rng).await,
        };
        let key = format!("{}{}", &table[..1], rng.random_range(0..keys));
        let v = self
            .versions
            .get(&format!("{table}/{key}"))
            .copied()
            .unwrap_or(0)
            + 1;
        let records = engine.table::<Value>(table).unwrap();
        let exists = records.get(key.as_str()).await.unwrap().is_some();
        let body = "y".repeat(rng.random_range(0..200));
        let result = if !exists {
            records
                .put(&json!({"id": key, "v": v, "body": body}))
                .await
                .map(|_| false)
        } else {
            match rng.random_range(0..100) {
                0..55 => records
                    .update(key.as_str(), json!({"v": v, "n": rng.random_range(0..999)}))
                    .await
                    .map(|_| false),
                55..75 => records
                    .put(&json!({"id": key, "v": v, "body": body}))
                    .await
                    .map(|_| false),
                // Any record may be deleted: server-wins notes re-created over their own
                // tombstone (BUG-2) and records whose create is still unsent (BUG-4) included.
                _ => records.delete(key.as_str()).await.map(|_| true),
            }
        };
        self.settle(table, key, v, result);
    }

    async fn write_task(&mut self, engine: &Engine, rng: &mut StdRng) {
        let tasks = engine.table::<Value>("tasks").unwrap();
        // Through the table API: pulled tasks carry server-assigned integer ids (BUG-1).
        let existing = tasks.scan(None, usize::MAX).await.unwrap();
        if existing.is_empty() || rng.random_bool(0.4) {
            let cid = format!("c{}", self.writes);
            let result = tasks.put(&json!({"cid": cid, "v": 1})).await.map(|_| false);
            return self.settle("tasks", cid, 1, result);
        }
        let task = &existing[rng.random_range(0..existing.len())];
        let Some(cid) = task["cid"].as_str().map(str::to_owned) else {
            return;
        };
        let v = self
            .versions
            .get(&format!("tasks/{cid}"))
            .copied()
            .unwrap_or(0)
            + 1;
        let result = tasks
            .update(verify::id_text(&task["id"]), json!({"v": v}))
            .await
            .map(|_| false);
        self.settle("tasks", cid, v, result);
    }

    fn settle(&mut self, table: &str, key: String, v: u64, result: tidesync::Result<bool>) {
        match result {
            Ok(deleted) => {
                self.writes += 1;
                self.versions.insert(format!("{table}/{key}"), v);
                self.expect
                    .insert((table.to_owned(), key), LastWrite { v, deleted });
            }
            // A pull or an id remap removed the record between our read and the write.
            Err(err) if err.kind() == ErrorKind::NotFound => self.skipped += 1,
            Err(err) => panic!("a valid local write failed: {err}"),
        }
    }
}

/// Another client: edits, server-side deletes, new server records.
fn server_edit(server: &ServerHandle, rng: &mut StdRng, edits: &ServerEdits) {
    let n = rng.random_range(0..1_000_000);
    let roll = rng.random_range(0..100);
    if roll < 15 {
        let all = server.records("tasks");
        if !all.is_empty() {
            let task = &all[rng.random_range(0..all.len())];
            if server
                .update_direct("tasks", &task["id"], json!({"srv": n}))
                .is_ok()
            {
                edits.touch("tasks", &verify::id_text(&task["cid"]));
            }
        }
        return;
    }
    let (table, keys) = if roll < 60 {
        ("posts", POST_KEYS)
    } else {
        ("notes", NOTE_KEYS)
    };
    let key = format!("{}{}", &table[..1], rng.random_range(0..keys + 10));
    match rng.random_range(0..100) {
        0..10 => {
            if server.record_any(table, key.as_str()).is_none()
                && server
                    .insert_direct(table, json!({"id": key, "srv": n}))
                    .is_ok()
            {
                edits.touch(table, &key);
            }
        }
        10..20 => {
            if server.delete_direct(table, key.as_str()).is_ok() {
                edits.delete(table, &key);
            }
        }
        _ => {
            if server
                .update_direct(table, key.as_str(), json!({"srv": n}))
                .is_ok()
            {
                edits.touch(table, &key);
            }
        }
    }
}

/// Entries that still wait to be pushed: neither dead nor parked behind a dead letter.
fn waiting(engine: &Engine) -> usize {
    let outbox = engine.outbox(None, usize::MAX).unwrap();
    let dead: Vec<(String, tidesync::Key)> = outbox
        .iter()
        .filter(|e| e.dead.is_some())
        .map(|e| (e.table.clone(), e.key.clone()))
        .collect();
    outbox
        .iter()
        .filter(|e| !dead.contains(&(e.table.clone(), e.key.clone())))
        .count()
}

/// Syncs until nothing waits and a sync pushes, pulls and resolves nothing.
async fn converge(engine: &Engine) -> Result<u32, String> {
    let mut last = String::new();
    for round in 1..=150 {
        let report = tokio::time::timeout(Duration::from_secs(20), engine.sync())
            .await
            .map_err(|_| "a sync without faults took more than 20 s (wedged?)".to_owned())?;
        let waiting = waiting(engine);
        match report {
            Ok(r) if waiting == 0 && r.pushed == 0 && r.applied == 0 && r.conflicts == 0 => {
                return Ok(round);
            }
            Ok(r) => last = format!("{r:?}, {waiting} entries waiting"),
            Err(err) => last = format!("sync failed: {err}"),
        }
        if waiting > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(format!("did not converge in 150 syncs; last: {last}"))
}

/// What a run did.
#[derive(Debug, Default)]
struct RunStats {
    writes: u64,
    skipped: u64,
    syncs: u64,
    failed_syncs: u64,
    server_edits: u64,
    requests: usize,
    /// Notes writes the server refused as stale with its 400 conflict body (recipe 7).
    notes_conflicts_400: usize,
    faults: u64,
    fault_kinds: BTreeMap<String, usize>,
    dead_letters: usize,
    dead_letter_replays: u64,
    /// Outages by kind (`Closed`: connections refused; `Hang`: accepted, never answered).
    outages: BTreeMap<String, usize>,
    records: usize,
    exact: usize,
    superseded: usize,
    replays: u64,
    elapsed: Duration,
}

/// One seeded run; panics with the seed and a trace on any violation.
async fn run(profile: Profile) -> RunStats {
    let started = Instant::now();
    let server = ReferenceServer::builder()
        .seed(profile.seed)
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .collection(
            "posts",
            CollectionConfig::default().concurrency(Concurrency::Unchecked),
        )
        .collection(
            "notes",
            CollectionConfig::default().concurrency(Concurrency::Conflict400),
        )
        .start()
        .await;
    let handle = server.handle();
    // Every request goes through the gate, which the outages close or hang.
    let gate = Gate::start(server.addr(), GateMode::Forward).await;
    let engine = engine(&gate.url(), &profile);
    // Outage decisions have their own generator: the workload of a seed stays what it was.
    let mut outage_rng = StdRng::seed_from_u64(profile.seed ^ 0x07a6_e5e5);
    let mut outage_steps_left = 0usize;
    let edits = ServerEdits::default();
    let mut rng = StdRng::seed_from_u64(profile.seed);
    let mut app = App {
        expect: BTreeMap::new(),
        versions: HashMap::new(),
        writes: 0,
        skipped: 0,
    };
    let mut stats = RunStats::default();
    // The engine's failures, for the trace: the last distinct ones.
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut events = engine.events();
    let sink = failures.clone();
    let collector = tokio::spawn(async move {
        while let Some(item) = events.next().await {
            let text = match item {
                EventItem::Event(SyncEvent::SyncFailed { error, kind, .. }) => {
                    if !matches!(
                        kind.as_str(),
                        "network" | "timeout" | "server" | "rate_limited"
                    ) {
                        // Not a transient failure: keep it whatever follows.
                        sink.lock().unwrap().insert(0, format!("[{kind}] {error}"));
                    }
                    error
                }
                EventItem::Event(SyncEvent::PullFailed { table, error }) => {
                    format!("pull {table}: {error}")
                }
                EventItem::Event(SyncEvent::ActorFailed { actor, error }) => {
                    format!("ACTOR {actor}: {error}")
                }
                EventItem::Event(SyncEvent::DeadLettered {
                    table, key, error, ..
                }) => {
                    format!("dead letter {table}/{key}: {error}")
                }
                _ => continue,
            };
            let mut seen = sink.lock().unwrap();
            seen.retain(|e| e != &text);
            seen.push(text);
            if seen.len() > 24 {
                let first_transient = seen.iter().position(|e| !e.starts_with('['));
                seen.remove(first_transient.unwrap_or(0));
            }
        }
    });
    let context = |engine: &Engine, what: &str| {
        format!(
            "\nseed {} ({:?}): {what}\nrerun: TIDESYNC_FAULT_SEED={} cargo test --test faults -- \
             --nocapture\n{}{}last distinct engine failures:\n  {}",
            profile.seed,
            profile,
            profile.seed,
            verify::trace(&handle, 40),
            verify::engine_state(engine),
            failures.lock().unwrap().join("\n  ")
        )
    };

    // Seed some records before the faults start, then misbehave.
    for _ in 0..30 {
        app.write(&engine, &mut rng).await;
    }
    handle.set_faults(profile.faults());
    for _ in 0..profile.steps {
        if outage_steps_left == 0 {
            if gate.mode() != GateMode::Forward {
                gate.set_mode(GateMode::Forward).await;
            } else if outage_rng.random_bool(0.01) {
                let mode = if outage_rng.random_bool(0.5) {
                    GateMode::Closed
                } else {
                    GateMode::Hang
                };
                *stats.outages.entry(format!("{mode:?}")).or_default() += 1;
                gate.set_mode(mode).await;
                outage_steps_left = outage_rng.random_range(10..40);
            }
        }
        outage_steps_left = outage_steps_left.saturating_sub(1);
        match rng.random_range(0..100) {
            0..55 => app.write(&engine, &mut rng).await,
            55..68 => server_edit(&handle, &mut rng, &edits),
            68..86 => {
                let which = rng.random_range(0..3);
                let call = async {
                    match which {
                        0 => engine.sync().await,
                        1 => engine.push().await,
                        _ => engine.pull(None).await,
                    }
                };
                let outcome = tokio::time::timeout(Duration::from_secs(30), call).await;
                stats.syncs += 1;
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => stats.failed_syncs += 1,
                    Err(_) => panic!("{}", context(&engine, "a sync call hung for 30 s")),
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(1..25))).await,
        }
    }

    // Stop misbehaving; let hung requests land (they commit late), then converge.
    gate.set_mode(GateMode::Forward).await;
    handle.clear_faults();
    tokio::time::sleep(profile.hang + Duration::from_millis(300)).await;
    if let Err(e) = converge(&engine).await {
        panic!("{}", context(&engine, &e));
    }

    // The only dead letters allowed: writes the server committed and answered with a
    // malformed 2xx body.
    let log = handle.request_log();
    let malformed: Vec<&str> = log
        .iter()
        .filter(|r| r.is_write() && r.fault.as_deref() == Some("malformed"))
        .filter_map(|r| r.idempotency_key())
        .collect();
    let dead = engine.dead_letters(None).unwrap();
    stats.dead_letters = dead.len();
    for entry in &dead {
        let info = entry.dead.as_ref().unwrap();
        let expected = info.kind == "decode" && malformed.contains(&entry.idempotency_key.as_str());
        assert!(
            expected,
            "{}",
            context(
                &engine,
                &format!(
                    "entry #{} {}/{} dead-lettered ({}: {}) but no malformed 2xx explains it: a \
                     transient failure was dead-lettered",
                    entry.seq, entry.table, entry.key, info.kind, info.error
                )
            )
        );
    }
    // The application retries them: a write the server had committed is answered by replay
    // (same idempotency key); one whose real answer was a 409 goes to the resolver.
    let replays_before = handle.replay_count();
    for entry in &dead {
        engine.retry_dead_letter(entry.seq, None).await.unwrap();
    }
    if let Err(e) = converge(&engine).await {
        panic!(
            "{}",
            context(&engine, &format!("after retrying dead letters: {e}"))
        );
    }
    let left = engine.dead_letters(None).unwrap();
    assert!(
        left.is_empty(),
        "{}",
        context(&engine, "dead letters came back after their retry")
    );
    stats.dead_letter_replays = handle.replay_count() - replays_before;
    assert!(engine.outbox(None, 1).unwrap().is_empty());

    let verdict = verify::verify(&engine, &handle, &TABLES, &app.expect, &edits).await;
    if !verdict.violations.is_empty() {
        verdict.assert_clean(&context(&engine, "the converged state is wrong"));
    }
    assert!(verdict.exact > 20, "too little was checked: {verdict:?}");
    stats.writes = app.writes;
    stats.skipped = app.skipped;
    stats.server_edits = edits.count();
    stats.requests = log.len();
    stats.notes_conflicts_400 = log
        .iter()
        .filter(|r| r.path.starts_with("/api/notes/") && r.handler_status == Some(400))
        .count();
    stats.faults = handle.faults_injected();
    for r in &log {
        if let Some(f) = &r.fault {
            *stats.fault_kinds.entry(f.clone()).or_default() += 1;
        }
    }
    stats.records = verdict.records;
    stats.exact = verdict.exact;
    stats.superseded = verdict.superseded;
    stats.replays = verdict.replays;
    stats.elapsed = started.elapsed();
    engine.shutdown();
    collector.abort();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_runs_lose_and_duplicate_nothing() {
    let steps: usize = std::env::var("TIDESYNC_FAULT_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let seeds: Vec<u64> = match std::env::var("TIDESYNC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let env = |name: &str, default: u64| {
                std::env::var(name)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(default)
            };
            let (first, runs) = (
                env("TIDESYNC_FAULT_FIRST", 0),
                env("TIDESYNC_FAULT_RUNS", 2),
            );
            (first..first + runs)
                .map(|i| 0x5eed_0000 + i * 7919)
                .collect()
        }
    };
    for seed in seeds {
        let profile = Profile::from_seed(seed, steps);
        println!("fault run: seed {seed} {profile:?}");
        let s = run(profile).await;
        println!(
            "  ok in {:.1?}: {} local writes ({} skipped: record gone meanwhile), {} manual \
             syncs ({} failed), {} server edits, {} requests ({} notes writes refused as stale \
             with a 400), {} faults {:?}, outages {:?}, {} dead letters \
             (all decode errors on a malformed 2xx; retried: {} answered by replay), {} records compared, {} last writes \
             exact, {} lost to server wins, {} idempotent replays",
            s.elapsed,
            s.writes,
            s.skipped,
            s.syncs,
            s.failed_syncs,
            s.server_edits,
            s.requests,
            s.notes_conflicts_400,
            s.faults,
            s.fault_kinds,
            s.outages,
            s.dead_letters,
            s.dead_letter_replays,
            s.records,
            s.exact,
            s.superseded,
            s.replays
        );
        assert!(s.faults > 20, "too few faults injected to test anything");
    }
}
