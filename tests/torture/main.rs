//! Crash torture (issue 8): a real tidesync process syncing against the reference server is
//! SIGKILLed at chosen phases of sync, restarted, killed again, many times; then the system
//! converges and `verify.rs` checks that nothing was lost and nothing duplicated.
//!
//! The child is this test binary re-run as `torture_child` with `TIDESYNC_TORTURE_DB` (a redb
//! file) and `TIDESYNC_TORTURE_URL` (the server the parent started) set. It writes (puts,
//! merge-patch updates, deletes; creates with server-assigned ids), pushes, pulls and syncs in
//! a random loop, with three tables:
//! - `posts`, client wins; `notes`, server wins; `tasks`, client wins, ids assigned by the
//!   server (the create a crash can duplicate if retries are not idempotent);
//! - every write also bumps a per-record counter in a local-only `versions` table in the same
//!   batch, so the last write of every record is known exactly, even for writes whose `ACK`
//!   line the kill cut off.
//!
//! The child prints phase markers, from wrappers around its transport and conflict strategies
//! (so they sit exactly between the engine and the network): `push-send` (request in flight),
//! `push-acked`/`push-failed` (the server answered; the outcome is not durable yet),
//! `pull-send`, `page-apply` (a page arrived; it is being applied), `resolve`/`fetch`
//! (conflict resolution), and `write` from the workload. Each round the parent picks a target
//! phase, lets the child run for 50–700 ms, waits for the phase's next marker, sleeps
//! 0–5 ms and sends SIGKILL; the kill is then classified
//! by the last marker the child printed (its whole output is read after the kill). Meanwhile
//! the parent edits, deletes and inserts records on the server, mostly ones the child just
//! wrote, so conflicts happen on both paths.
//!
//! After every kill the parent reopens the store and checks that every acknowledged write is
//! there. After the last round it opens the store in-process, syncs until the outbox is empty
//! and a pull finds nothing new, and runs [`verify::verify`]. It prints a summary table (kills
//! by phase); run with `--nocapture` to see it.
//!
//! `TIDESYNC_TORTURE_ROUNDS` sets the number of kills (default 36), `TIDESYNC_TORTURE_SEED`
//! the parent's seed.

mod verify;
mod workload;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tidesync::core::{Fetched, PullPage, PullRequest, PushOutcome, PushRequest};
use tidesync::{
    Conflict, ConflictStrategy, Engine, ErrorKind, Key, RedbStore, Resolution, ServerWins,
    SyncSettings, TableSpec, Transport,
};
use tidesync_conflict_policies::ClientWins;
use tidesync_testkit::server::{
    CollectionConfig, ReferenceServer, ReferenceServerBuilder, ServerHandle,
};
use tidesync_transport_rest::{RestTransport, TableRoutes};

use verify::{LastWrite, ServerEdits};
use workload::TABLES;

const CHILD_DB: &str = "TIDESYNC_TORTURE_DB";
const CHILD_URL: &str = "TIDESYNC_TORTURE_URL";
const CHILD_SEED: &str = "TIDESYNC_TORTURE_CHILD_SEED";

/// Keys the client writes per table (`p0`…); the server inserts keys after them.
const CLIENT_KEYS: u32 = 24;
/// Keys only the server creates (`p24`…), which the client may then edit.
const SERVER_KEYS: u32 = 8;

/// Whether this process prints phase markers (only the child does).
static MARKERS: AtomicBool = AtomicBool::new(false);

fn marker(text: impl std::fmt::Display) {
    if MARKERS.load(Ordering::Relaxed) {
        println!("PHASE {text}");
    }
}

// ----- the phases ----------------------------------------------------------------------------

/// Where a kill landed, from the last marker the child printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Write,
    PushInFlight,
    PushAnswered,
    PullInFlight,
    PageApply,
    Resolution,
    Between,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Write,
        Phase::PushInFlight,
        Phase::PushAnswered,
        Phase::PullInFlight,
        Phase::PageApply,
        Phase::Resolution,
        Phase::Between,
    ];
    /// The phases the parent aims at, in rotation.
    const TARGETS: [Phase; 6] = [
        Phase::Write,
        Phase::PushInFlight,
        Phase::PushAnswered,
        Phase::PullInFlight,
        Phase::PageApply,
        Phase::Resolution,
    ];

    fn of(marker: Option<&str>) -> Phase {
        match marker.and_then(|m| m.split(' ').next()) {
            Some("write") => Phase::Write,
            Some("push-send") => Phase::PushInFlight,
            Some("push-acked" | "push-failed") => Phase::PushAnswered,
            Some("pull-send") => Phase::PullInFlight,
            Some("page-apply") => Phase::PageApply,
            Some("resolve" | "fetch") => Phase::Resolution,
            _ => Phase::Between,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Write => "local write (batch + outbox entry committing)",
            Phase::PushInFlight => "push: request in flight",
            Phase::PushAnswered => "push: answered, outcome not yet durable",
            Phase::PullInFlight => "pull: request in flight",
            Phase::PageApply => "pull: page being applied",
            Phase::Resolution => "conflict resolution (fetch/resolve/apply)",
            Phase::Between => "between steps (cycle start, mark in flight)",
        }
    }
}

// ----- the child's plugins: the real ones, wrapped to print markers --------------------------

/// The REST transport, printing a marker before each request and when its answer arrives.
struct Probe(RestTransport);

#[async_trait]
impl Transport for Probe {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn push(&self, request: PushRequest) -> tidesync::Result<PushOutcome> {
        marker(format_args!(
            "push-send {} {} {:?}",
            request.table, request.key, request.op
        ));
        let result = self.0.push(request).await;
        marker(if result.is_ok() {
            "push-acked"
        } else {
            "push-failed"
        });
        result
    }

    fn supports_batch(&self, table: &str) -> bool {
        self.0.supports_batch(table)
    }

    fn assigns_keys(&self, table: &str) -> bool {
        self.0.assigns_keys(table)
    }

    async fn push_batch(
        &self,
        requests: Vec<PushRequest>,
    ) -> tidesync::Result<Vec<tidesync::Result<PushOutcome>>> {
        marker(format_args!("push-send batch of {}", requests.len()));
        let result = self.0.push_batch(requests).await;
        marker("push-acked batch");
        result
    }

    async fn pull(&self, request: PullRequest) -> tidesync::Result<PullPage> {
        marker(format_args!("pull-send {}", request.table));
        let result = self.0.pull(request).await;
        match &result {
            Ok(page) => marker(format_args!(
                "page-apply {} records={} deleted={}",
                page.records.len() + page.deleted.len(),
                page.records.len(),
                page.deleted.len()
            )),
            Err(_) => marker("pull-failed"),
        }
        result
    }

    async fn fetch(&self, table: &str, key: &Key) -> tidesync::Result<Option<Fetched>> {
        marker(format_args!("fetch {table} {key}"));
        self.0.fetch(table, key).await
    }

    fn version_of(&self, table: &str, record: &tidesync::Record) -> Option<String> {
        self.0.version_of(table, record)
    }

    fn modified_at_ms(&self, table: &str, record: &tidesync::Record) -> Option<i64> {
        self.0.modified_at_ms(table, record)
    }
}

/// A conflict strategy printing a marker before deciding (the outcome is applied right after).
struct Probed(Arc<dyn ConflictStrategy>);

#[async_trait]
impl ConflictStrategy for Probed {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn resolve(&self, conflict: &Conflict) -> tidesync::Result<Resolution> {
        marker(format_args!(
            "resolve {} {} {}",
            conflict.table,
            conflict.key,
            conflict.detected_by.as_str()
        ));
        self.0.resolve(conflict).await
    }
}

// ----- set-up --------------------------------------------------------------------------------

fn settings() -> SyncSettings {
    SyncSettings {
        interval: None,
        sync_on_start: true,
        debounce: Duration::from_millis(60),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        probe_base: Duration::from_millis(50),
        probe_cap: Duration::from_millis(200),
        page_size: 16,
        ..SyncSettings::default()
    }
}

fn server_builder() -> ReferenceServerBuilder {
    ReferenceServer::builder().collection("tasks", CollectionConfig::default().server_ids(true))
}

/// An engine on the redb file; with `url`, syncing through the probed REST transport.
fn open_engine(path: &Path, url: Option<&str>) -> Engine {
    let store = RedbStore::open(path).expect("the store reopens after SIGKILL");
    let mut builder = Engine::builder()
        .store(store)
        .table(TableSpec::new("posts"))
        .table(TableSpec::new("notes").index("v"))
        .table(TableSpec::new("tasks").index("cid"))
        .table(TableSpec::new("versions").local_only())
        .settings(settings());
    if let Some(url) = url {
        let transport = RestTransport::builder(url)
            .table("posts", TableRoutes::reference_server("posts"))
            .table("notes", TableRoutes::reference_server("notes"))
            .table("tasks", TableRoutes::reference_server("tasks").server_ids())
            .request_timeout(Duration::from_secs(3))
            .build()
            .expect("transport");
        builder = builder
            .shared_transport(Arc::new(Probe(transport)))
            .shared_conflicts("posts", Arc::new(Probed(Arc::new(ClientWins))))
            .shared_conflicts("notes", Arc::new(Probed(Arc::new(ServerWins))))
            .shared_conflicts("tasks", Arc::new(Probed(Arc::new(ClientWins))));
    }
    builder.start().expect("engine starts")
}

// ----- the workload --------------------------------------------------------------------------

/// One local write: returns `(versions id, v, deleted)` once committed.
async fn write(engine: &Engine, rng: &mut StdRng) -> Option<(String, u64, bool)> {
    let table = match rng.random_range(0..100) {
        0..40 => "posts",
        40..75 => "notes",
        _ => return write_task(engine, rng).await,
    };
    let key = format!(
        "{}{}",
        &table[..1],
        rng.random_range(0..CLIENT_KEYS + SERVER_KEYS)
    );
    let vid = format!("{table}/{key}");
    let v = version_of(engine, &vid).await + 1;
    let exists = engine
        .table::<Value>(table)
        .unwrap()
        .get(key.as_str())
        .await
        .unwrap()
        .is_some();
    let body = "x".repeat(rng.random_range(0..300));
    let (batch, deleted) = if !exists {
        let record = json!({"id": key, "v": v, "body": body});
        (engine.batch().put(table, &record), false)
    } else {
        match rng.random_range(0..100) {
            0..55 => {
                let patch = json!({"v": v, "n": rng.random_range(0..1000)});
                (engine.batch().update(table, key.as_str(), patch), false)
            }
            55..75 => {
                let record = json!({"id": key, "v": v, "body": body});
                (engine.batch().put(table, &record), false)
            }
            // Any record may be deleted: server-wins notes re-created over their own
            // tombstone (BUG-2) and records whose create is still unsent (BUG-4) included.
            _ => (engine.batch().delete(table, key.as_str()), true),
        }
    };
    let batch = batch.put("versions", &json!({"id": vid, "v": v, "deleted": deleted}));
    marker(format_args!("write {vid} v{v}"));
    commit(batch).await.map(|()| (vid, v, deleted))
}

/// Creates a task (the server assigns its id) or edits one, identified by its `cid`.
async fn write_task(engine: &Engine, rng: &mut StdRng) -> Option<(String, u64, bool)> {
    // Through the table API: pulled tasks carry server-assigned integer ids (BUG-1).
    let existing = engine
        .table::<Value>("tasks")
        .unwrap()
        .scan(None, usize::MAX)
        .await
        .unwrap();
    let title = format!("t{}", rng.random_range(0..1000));
    if existing.is_empty() || rng.random_bool(0.4) {
        let cid = format!("c{}", uuid::Uuid::now_v7().simple());
        let vid = format!("tasks/{cid}");
        let batch = engine
            .batch()
            .put("tasks", &json!({"cid": cid, "v": 1, "title": title}))
            .put("versions", &json!({"id": vid, "v": 1, "deleted": false}));
        marker(format_args!("write {vid} v1 create"));
        return commit(batch).await.map(|()| (vid, 1, false));
    }
    let task = &existing[rng.random_range(0..existing.len())];
    let (Some(cid), key) = (task["cid"].as_str(), verify::id_text(&task["id"])) else {
        return None;
    };
    let vid = format!("tasks/{cid}");
    let v = version_of(engine, &vid).await + 1;
    let batch = engine
        .batch()
        .update("tasks", key.as_str(), json!({"v": v, "title": title}))
        .put("versions", &json!({"id": vid, "v": v, "deleted": false}));
    marker(format_args!("write {vid} v{v}"));
    commit(batch).await.map(|()| (vid, v, false))
}

async fn version_of(engine: &Engine, vid: &str) -> u64 {
    engine
        .table::<Value>("versions")
        .unwrap()
        .get(vid)
        .await
        .unwrap()
        .and_then(|r| r["v"].as_u64())
        .unwrap_or(0)
}

async fn commit(batch: tidesync::Batch) -> Option<()> {
    match batch.commit().await {
        Ok(_) => Some(()),
        // A pull or an id remap removed the record between our read and the write.
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => panic!("FATAL: a valid local write failed: {err}"),
    }
}

/// One step of the child's loop.
async fn step(engine: &Engine, rng: &mut StdRng, child: bool) {
    let outcome = match rng.random_range(0..100) {
        0..62 => {
            if let Some((vid, v, deleted)) = write(engine, rng).await
                && child
            {
                println!("ACK {vid} {v} {deleted}");
            }
            return;
        }
        62..80 => {
            marker("push");
            engine.push().await
        }
        80..92 => {
            marker("pull");
            engine.pull(None).await
        }
        _ => {
            marker("sync");
            engine.sync().await
        }
    };
    if let (Err(err), true) = (outcome, child) {
        println!("SYNCERR {} {err}", err.kind());
    }
}

// ----- the parent's side -----------------------------------------------------------------------

/// Another client editing the server: mostly records the child just wrote.
fn server_edit(
    server: &ServerHandle,
    rng: &mut StdRng,
    edits: &ServerEdits,
    recent: &Mutex<VecDeque<String>>,
) {
    let n = rng.random_range(0..1_000_000);
    let table = match rng.random_range(0..100) {
        0..45 => "posts",
        45..85 => "notes",
        _ => {
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
    };
    let recent_key = {
        let recent = recent.lock().unwrap();
        let mine: Vec<&String> = recent.iter().filter(|vid| vid.starts_with(table)).collect();
        (!mine.is_empty() && rng.random_bool(0.65))
            .then(|| mine[rng.random_range(0..mine.len())].clone())
    };
    let key = match recent_key {
        Some(vid) => vid[table.len() + 1..].to_owned(),
        None => format!(
            "{}{}",
            &table[..1],
            rng.random_range(0..CLIENT_KEYS + SERVER_KEYS)
        ),
    };
    match rng.random_range(0..100) {
        0..10 => {
            let key = format!(
                "{}{}",
                &table[..1],
                rng.random_range(CLIENT_KEYS..CLIENT_KEYS + SERVER_KEYS)
            );
            if server.record_any(table, key.as_str()).is_none()
                && server
                    .insert_direct(table, json!({"id": key, "srv": n, "body": "from server"}))
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

/// Syncs until the outbox is empty and a sync pushes, pulls and resolves nothing.
async fn converge(engine: &Engine) -> Result<u32, String> {
    let mut last = String::new();
    for round in 1..=60 {
        let report = engine.sync().await;
        let waiting = engine.outbox(None, usize::MAX).unwrap();
        match report {
            Ok(r) if waiting.is_empty() && r.pushed == 0 && r.applied == 0 && r.conflicts == 0 => {
                return Ok(round);
            }
            Ok(r) => last = format!("{r:?}, {} entries waiting", waiting.len()),
            Err(err) => last = format!("sync failed: {err}"),
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err(format!("did not converge in 60 syncs; last: {last}"))
}

/// The last write of every record, from the local-only `versions` table.
async fn expectations(engine: &Engine) -> BTreeMap<(String, String), LastWrite> {
    let versions = engine.table::<Value>("versions").unwrap();
    versions
        .scan(None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let (table, key) = r["id"].as_str()?.split_once('/')?;
            Some((
                (table.to_owned(), key.to_owned()),
                LastWrite {
                    v: r["v"].as_u64()?,
                    deleted: r["deleted"].as_bool()?,
                },
            ))
        })
        .collect()
}

/// Every acknowledged write is in the reopened store (its version counter at least as high).
async fn check_durable(path: &Path, acked: &HashMap<String, u64>) -> usize {
    let engine = open_engine(path, None);
    let expect = expectations(&engine).await;
    for (vid, v) in acked {
        let (table, key) = vid.split_once('/').unwrap();
        let stored = expect
            .get(&(table.to_owned(), key.to_owned()))
            .map_or(0, |w| w.v);
        assert!(
            stored >= *v,
            "{vid}: acknowledged write v{v} lost by the kill (store has v{stored})"
        );
    }
    let depth = engine.outbox(None, usize::MAX).unwrap().len();
    engine.shutdown();
    depth
}

/// Without `TIDESYNC_TORTURE_DB`: the same workload in-process for a few hundred steps with
/// server edits in between, then converge and verify (the no-crash baseline). With it: the
/// child, which loops until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_child() {
    let seed: u64 = std::env::var(CHILD_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut rng = StdRng::seed_from_u64(seed);
    if let (Ok(db), Ok(url)) = (std::env::var(CHILD_DB), std::env::var(CHILD_URL)) {
        MARKERS.store(true, Ordering::Relaxed);
        let engine = open_engine(Path::new(&db), Some(&url));
        println!("\nREADY");
        loop {
            step(&engine, &mut rng, true).await;
        }
    }
    let server = server_builder().start().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("inproc.redb"), Some(server.url()));
    let (edits, recent) = (ServerEdits::default(), Mutex::new(VecDeque::new()));
    for i in 0..300 {
        step(&engine, &mut rng, false).await;
        if i % 4 == 0 {
            server_edit(&server, &mut rng, &edits, &recent);
        }
    }
    let rounds = converge(&engine).await.unwrap_or_else(|e| {
        panic!(
            "{e}\n{}{}",
            verify::engine_state(&engine),
            verify::trace(&server, 30)
        )
    });
    let expect = expectations(&engine).await;
    let verdict = verify::verify(&engine, &server, &TABLES, &expect, &edits).await;
    println!(
        "in-process baseline: converged in {rounds} syncs; {} records, {} last writes checked \
         exactly, {} superseded by server edits, {} server edits",
        verdict.records,
        verdict.exact,
        verdict.superseded,
        edits.count()
    );
    verdict.assert_clean(&verify::trace(&server, 30));
    assert!(verdict.exact > 20, "too little was checked: {verdict:?}");
    engine.shutdown();
}

#[test]
fn sigkill_during_sync_loses_and_duplicates_nothing() {
    let rounds: usize = std::env::var("TIDESYNC_TORTURE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(36);
    let seed: u64 = std::env::var("TIDESYNC_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7027);
    let started = Instant::now();
    let server = server_builder().start_background();
    let url = server.url().to_owned();
    let handle = server.handle();
    let edits = Arc::new(ServerEdits::default());
    let recent: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torture.redb");
    let exe = std::env::current_exe().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);

    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut kills: BTreeMap<Phase, usize> = BTreeMap::new();
    let (mut acks, mut hits, mut sync_errors, mut resolves, mut max_depth) = (0, 0, 0, 0, 0);
    let mut error_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..rounds {
        let target = Phase::TARGETS[round % Phase::TARGETS.len()];
        for _ in 0..rng.random_range(0..4) {
            server_edit(&handle, &mut rng, &edits, &recent);
        }
        let stderr_path = dir.path().join(format!("child-{round}.err"));
        let mut child = Command::new(&exe)
            .args([
                "torture_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .env(CHILD_URL, &url)
            .env(CHILD_SEED, (seed ^ (round as u64 * 0x9e37)).to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader_recent = recent.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(vid) = line.strip_prefix("ACK ").and_then(|l| l.split(' ').next()) {
                    let mut recent = reader_recent.lock().unwrap();
                    recent.push_back(vid.to_owned());
                    if recent.len() > 40 {
                        recent.pop_front();
                    }
                }
                let _ = tx.send(line.clone());
                lines.push(line);
            }
            lines
        });
        let stop = Arc::new(AtomicBool::new(false));
        let editor = {
            let (stop, handle, edits, recent) =
                (stop.clone(), handle.clone(), edits.clone(), recent.clone());
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(round as u64));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(rng.random_range(10..50)));
                    server_edit(&handle, &mut rng, &edits, &recent);
                }
            })
        };

        // Let the child work for a while (state piles up, conflicts happen), then wait for
        // the target phase and kill a few milliseconds into it.
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        while rx.try_recv().is_ok() {}
        let deadline = Instant::now() + Duration::from_secs(6);
        let mut hit = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let marker = line.strip_prefix("PHASE ");
                    if marker.is_some() && Phase::of(marker) == target {
                        hit = true;
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if hit {
            // A request to the local server is answered within a millisecond or two: aim
            // inside that window for the in-flight phases, a little later for the others.
            let within_us = match target {
                Phase::PushInFlight | Phase::PullInFlight => 300,
                _ => 5_000,
            };
            std::thread::sleep(Duration::from_micros(rng.random_range(0..within_us)));
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::fs::File::open(&stderr_path).map(|mut f| f.read_to_string(&mut err));
            panic!("round {round}: the child exited by itself ({status}):\n{err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        editor.join().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            lines.iter().any(|l| l == "READY"),
            "round {round}: the child never got its engine started (store did not reopen?)"
        );

        let last = lines.iter().rev().find_map(|l| l.strip_prefix("PHASE "));
        let phase = Phase::of(last);
        *kills.entry(phase).or_default() += 1;
        hits += usize::from(hit);
        for line in &lines {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut parts = rest.split(' ');
                let (Some(vid), Some(Ok(v))) = (parts.next(), parts.next().map(str::parse::<u64>))
                else {
                    continue; // a line cut by the kill
                };
                acks += 1;
                let entry = acked.entry(vid.to_owned()).or_default();
                *entry = (*entry).max(v);
            } else if let Some(rest) = line.strip_prefix("SYNCERR ") {
                sync_errors += 1;
                let kind = rest.split(' ').next().unwrap_or_default().to_owned();
                *error_kinds.entry(kind).or_default() += 1;
            } else if line.starts_with("PHASE resolve") {
                resolves += 1;
            }
        }
        let depth = runtime.block_on(check_durable(&path, &acked));
        max_depth = max_depth.max(depth);
        eprintln!(
            "round {round}: aimed at {target:?}, killed in {phase:?} (last marker {:?}); \
             {acks} acks so far, all durable; outbox depth {depth}",
            last.unwrap_or("-")
        );
    }

    // Converge in-process on the same file and check everything.
    let summary = runtime.block_on(async {
        let engine = open_engine(&path, Some(&url));
        let syncs = converge(&engine).await.unwrap_or_else(|e| {
            panic!(
                "{e}\n{}{}",
                verify::engine_state(&engine),
                verify::trace(&handle, 40)
            )
        });
        let dead = engine.dead_letters(None).unwrap();
        assert!(
            dead.is_empty(),
            "no faults were injected, yet entries were dead-lettered:\n{}",
            verify::engine_state(&engine)
        );
        assert!(engine.parked_conflicts(None).unwrap().is_empty());
        let expect = expectations(&engine).await;
        let verdict = verify::verify(&engine, &handle, &TABLES, &expect, &edits).await;
        engine.shutdown();
        (syncs, verdict)
    });
    let (syncs, verdict) = summary;

    println!(
        "\ncrash torture: {rounds} SIGKILLs in {:.1?}",
        started.elapsed()
    );
    println!(
        "  {:<46} {:>5}",
        "kill point (last marker before SIGKILL)", "kills"
    );
    for phase in Phase::ALL {
        println!(
            "  {:<46} {:>5}",
            phase.label(),
            kills.get(&phase).copied().unwrap_or(0)
        );
    }
    println!(
        "  kills that landed after their target marker: {hits}/{rounds}\n  \
         acknowledged writes: {acks} ({} records), all durable after every kill; \
         largest outbox after a kill: {max_depth}\n  \
         conflicts resolved by the child: {resolves}; server-side edits: {}; \
         failed syncs in the child: {sync_errors} {error_kinds:?}\n  \
         converged in {syncs} syncs: {} live records compared, {} last writes checked exactly, \
         {} lost to server-wins conflicts, {} deleted by the other client afterwards\n  \
         server: {} write requests, {} answered by idempotent replay",
        acked.len(),
        edits.count(),
        verdict.records,
        verdict.exact,
        verdict.superseded,
        verdict.deleted_by_others,
        verdict.writes,
        verdict.replays,
    );
    verdict.assert_clean(&verify::trace(&handle, 40));
    assert!(
        acks > rounds,
        "the child made too little progress to test anything ({acks} acks)"
    );
    assert!(verdict.exact > 20, "too little was checked: {verdict:?}");
    for phase in [Phase::PushInFlight, Phase::PageApply] {
        assert!(
            kills.get(&phase).copied().unwrap_or(0) > 0 || rounds < Phase::TARGETS.len(),
            "no kill landed in {phase:?}: {kills:?}"
        );
    }
}
