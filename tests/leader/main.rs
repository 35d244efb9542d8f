//! Multi-process leader election with real processes (DESIGN invariant 9; seed bugs B8, B9).
//!
//! The test binary re-runs itself as `leader_child` (see `child.rs`): each child is an instance
//! of the app that opens one shared redb file with `multi_process(true)`, runs an engine
//! elected by `LockfileLeader` (campaigning every 300 ms) and syncing with one reference server,
//! writes its own records in a loop and reports acknowledged writes and leadership changes on
//! stdout. The parent (`cluster.rs`) kills, pauses and restarts them and checks:
//!
//! - at most one live process leads a database at any time, and every new leader's epoch is
//!   the previous one plus one;
//! - failover (SIGKILL of the leader → the next `LEADER` report) stays within the bound:
//!   the campaign interval plus the take-over work (epoch fsync, the epoch claim in the
//!   database, the event);
//! - after convergence every acknowledged write of every process is on the server, created
//!   exactly once, the outbox is empty, the server never refused a stale epoch, and the
//!   epochs of the pushes it received never went down.
//!
//! `TIDESYNC_LEADER_ROUNDS` sets the number of kills (default 5).

mod child;
mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tidesync::{Engine, RedbStore, TableSpec};
use tidesync_leader_lockfile::LockfileLeader;
use tidesync_testkit::server::{FaultFilter, FaultKind, ReferenceServer};

use child::{CAMPAIGN_EVERY, TABLE};
use cluster::Cluster;

/// What a failover may take: one campaign interval plus generous room for the take-over on a
/// loaded 2-core CI machine (measured take-over work: a few ms to a few tens of ms).
const FAILOVER_BOUND: Duration = Duration::from_millis(300 + 1200);

/// Runs the child when the parent started this binary as one; nothing otherwise.
#[test]
fn leader_child() {
    if let Some(db) = std::env::var_os(child::DB_ENV) {
        child::run(db.into());
    }
}

/// Waits until the server has every acknowledged write of `prefix` and a process of `db`
/// reports an empty outbox (no dead letters either).
fn converge(cluster: &mut Cluster, server: &ReferenceServer, db: &Path, prefix: &str) {
    cluster.stop_writers();
    let converged = cluster.wait_until(Duration::from_secs(60), |c| {
        c.missing_on(server, prefix).is_empty()
            && c.procs
                .iter()
                .any(|p| p.alive && p.db == db && p.depth == Some((0, 0)))
    });
    assert!(
        converged,
        "no convergence: missing {:?}{}",
        cluster
            .missing_on(server, prefix)
            .into_iter()
            .take(10)
            .collect::<Vec<_>>(),
        cluster.diagnostics()
    );
}

/// Every acknowledged write of `prefix` is on the server, created exactly once; nothing on
/// the server was created twice; no stale epoch was refused; push epochs never went down and
/// every push carried one.
fn check_server(cluster: &Cluster, server: &ReferenceServer, prefix: &str) {
    let missing = cluster.missing_on(server, prefix);
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
    let acked = cluster.acked_with_prefix(prefix);
    assert!(!acked.is_empty(), "nothing was acknowledged");
    for (id, _) in &acked {
        assert_eq!(
            server.create_count(TABLE, id.as_str()),
            1,
            "{id} created more than once"
        );
    }
    let records = server.records(TABLE);
    for record in &records {
        let id = record["id"].as_str().expect("string ids");
        assert_eq!(server.create_count(TABLE, id), 1, "{id} created twice");
    }
    assert_eq!(
        server.stale_epoch_rejections(),
        0,
        "the server refused a stale leader"
    );
    let mut last = 0u64;
    for request in server.request_log() {
        if request.method == "GET" {
            continue;
        }
        let epoch: u64 = request
            .header("x-tidesync-epoch")
            .unwrap_or_else(|| {
                panic!(
                    "a push without an epoch: {} {}",
                    request.method, request.path
                )
            })
            .parse()
            .expect("a numeric epoch");
        assert!(
            epoch >= last,
            "push #{} carried epoch {epoch} after epoch {last}",
            request.seq
        );
        last = epoch;
    }
    eprintln!(
        "server: {} records, {} acknowledged writes checked, max epoch {:?}, {} replays",
        records.len(),
        acked.len(),
        server.max_epoch_seen(),
        server.replay_count()
    );
}

/// After every process exited: the file reopens in the default mode and its outbox is empty.
fn check_outbox_empty(db: &Path) {
    let engine = Engine::builder()
        .store(RedbStore::open(db).expect("the file reopens after the processes exited"))
        .table(TableSpec::new(TABLE))
        .start()
        .expect("engine");
    let left = engine.outbox(None, 10).expect("outbox");
    assert!(left.is_empty(), "entries left in the outbox: {left:?}");
    assert!(engine.dead_letters(None).expect("dead letters").is_empty());
    engine.shutdown();
}

#[test]
fn sigkill_the_leader_repeatedly_loses_nothing_and_fails_over_within_the_bound() {
    let rounds: usize = std::env::var("TIDESYNC_LEADER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let lock_view = LockfileLeader::for_database(&db).expect("elector (never campaigns)");
    let mut cluster = Cluster::new(dir.path());
    let mut rng = StdRng::seed_from_u64(0x1eade7);
    let mut slots: Vec<usize> = (0..3)
        .map(|slot| cluster.spawn(&db, &server, &format!("p{slot}g0"), &[]))
        .collect();

    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.leader_of(&db).is_some()),
        "no first leader: {}",
        cluster.diagnostics()
    );
    let mut epochs = vec![cluster.leaders[0].epoch];
    assert_eq!(epochs[0], 1, "the first leader's epoch");
    let mut failovers = Vec::new();
    for round in 0..rounds {
        cluster.pump(Duration::from_millis(rng.random_range(400..1000)));
        let leader = cluster.leader_of(&db).expect("a leader");
        let epoch = cluster.procs[leader].leading.expect("its epoch");
        assert_eq!(
            lock_view.last_holder().expect("lock file"),
            Some(tidesync_leader_lockfile::Holder {
                pid: cluster.procs[leader].pid,
                epoch
            }),
            "the lock file names the reported leader"
        );
        let killed_at = cluster.kill(leader);
        let found = cluster.wait_until(FAILOVER_BOUND + Duration::from_secs(10), |c| {
            c.leader_since(&db, killed_at).is_some()
        });
        assert!(found, "no new leader: {}", cluster.diagnostics());
        let next = cluster.leader_since(&db, killed_at).expect("new leader");
        let took = next.at - killed_at;
        assert_eq!(next.epoch, epoch + 1, "epochs grow by one per new leader");
        epochs.push(next.epoch);
        failovers.push(took);
        eprintln!(
            "round {round}: killed {} (epoch {epoch}); {} leads with epoch {} after {took:?}; \
             {} writes acknowledged so far",
            cluster.procs[leader].name,
            cluster.procs[next.proc].name,
            next.epoch,
            cluster.acked.len()
        );
        // A new instance takes the dead one's place.
        let slot = slots
            .iter()
            .position(|&p| p == leader)
            .expect("a slot per process");
        slots[slot] = cluster.spawn(&db, &server, &format!("p{slot}g{}", round + 1), &[]);
    }
    assert!(
        cluster.violations.is_empty(),
        "two leaders at once: {:?}",
        cluster.violations
    );

    converge(&mut cluster, &server, &db, "p");
    assert!(
        cluster.violations.is_empty(),
        "two leaders at once: {:?}",
        cluster.violations
    );
    cluster.shutdown_all();
    // Clean shutdowns resign, which clears the holder record.
    assert_eq!(lock_view.last_holder().expect("lock file"), None);
    check_server(&cluster, &server, "p");
    assert_eq!(server.max_epoch_seen(), epochs.last().copied());
    check_outbox_empty(&db);

    let worst = failovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{rounds} failovers, epochs {epochs:?}, took {failovers:?} (worst {worst:?}, bound \
         {FAILOVER_BOUND:?}), {} acknowledged writes",
        cluster.acked.len()
    );
    for (round, took) in failovers.iter().enumerate() {
        assert!(
            *took <= FAILOVER_BOUND,
            "failover {round} took {took:?}, more than {FAILOVER_BOUND:?}"
        );
    }
}

/// Seed bug B9: every database shared one election. Two databases, two processes each: each
/// database gets its own leader, and each syncs.
#[test]
fn two_databases_get_two_independent_leaders() {
    // One server per database: the reference server fences epochs globally, not per database
    // (see the report), so two databases at different epochs cannot share one.
    let servers = [
        ReferenceServer::start_background(),
        ReferenceServer::start_background(),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let dbs = [dir.path().join("one.redb"), dir.path().join("two.redb")];
    let mut cluster = Cluster::new(dir.path());
    for (d, db) in dbs.iter().enumerate() {
        for p in 0..2 {
            cluster.spawn(db, &servers[d], &format!("d{d}p{p}"), &[]);
        }
    }
    let both = cluster.wait_until(Duration::from_secs(30), |c| {
        dbs.iter().all(|db| c.leader_of(db).is_some())
    });
    assert!(
        both,
        "not one leader per database: {}",
        cluster.diagnostics()
    );
    cluster.pump(Duration::from_millis(1500));
    for db in &dbs {
        let leaders: Vec<&str> = cluster
            .procs
            .iter()
            .filter(|p| p.db == *db && p.leading.is_some())
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(leaders.len(), 1, "{}: leaders {leaders:?}", db.display());
    }
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    for db in &dbs {
        let elector = LockfileLeader::for_database(db).expect("elector");
        assert_eq!(elector.persisted_epoch().expect("epoch"), 1);
        assert!(elector.lock_path().ends_with(format!(
            "{}.leader.lock",
            db.file_name().expect("name").to_string_lossy()
        )));
    }
    cluster.stop_writers();
    for (d, db) in dbs.iter().enumerate() {
        let prefix = format!("d{d}");
        let server = &servers[d];
        let converged = cluster.wait_until(Duration::from_secs(60), |c| {
            c.missing_on(server, &prefix).is_empty()
                && c.procs
                    .iter()
                    .any(|p| p.alive && p.db == *db && p.depth == Some((0, 0)))
        });
        assert!(
            converged,
            "{prefix} did not sync: {}",
            cluster.diagnostics()
        );
    }
    cluster.shutdown_all();
    for (d, db) in dbs.iter().enumerate() {
        check_server(&cluster, &servers[d], &format!("d{d}"));
        // Each server only got its own database's records.
        let other = format!("d{}", 1 - d);
        assert!(
            servers[d]
                .records(TABLE)
                .iter()
                .all(|r| !r["id"].as_str().unwrap_or_default().starts_with(&other))
        );
        check_outbox_empty(db);
    }
}

/// P7 (seed bug B8: a slow leader and a newcomer both ended up leader). The leader is frozen
/// (SIGSTOP) for many campaign intervals while a newcomer starts: the newcomer stays a
/// follower (and keeps writing), the leader resumes as the only leader and pushes the
/// newcomer's writes; when it dies, the newcomer takes over with the next epoch.
#[test]
fn a_paused_leader_and_a_newcomer_converge_to_one_leader() {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let mut cluster = Cluster::new(dir.path());
    // The old leader syncs only when told: frozen, it then holds no database transaction.
    let old = cluster.spawn(
        &db,
        &server,
        "old",
        &[(child::INTERVAL_ENV, "0"), (child::WRITES_ENV, "0")],
    );
    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.procs[old].leading == Some(1)
            && c.procs[old].cycles > 0),
        "the first process did not lead and sync: {}",
        cluster.diagnostics()
    );
    cluster.signal(old, "STOP");
    let paused_at = Instant::now();
    let newcomer = cluster.spawn(&db, &server, "new", &[]);
    // The newcomer starts (the frozen leader holds no database transaction) and writes…
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| c.procs[newcomer].ready
            && !c.acked_with_prefix("new").is_empty()),
        "{}",
        cluster.diagnostics()
    );
    // … and campaigns many times while the leader does not answer anything.
    cluster.pump(CAMPAIGN_EVERY * 8);
    assert_eq!(
        cluster.procs[newcomer].leading, None,
        "the newcomer took over from a paused leader"
    );
    assert!(
        cluster.leader_since(&db, paused_at).is_none(),
        "a leadership change while the leader was paused"
    );
    let written = cluster.acked_with_prefix("new").len();
    assert!(written > 0, "the follower kept writing: {written} writes");

    cluster.signal(old, "CONT");
    cluster.command(old, "SYNC");
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| !c.procs[old].synced.is_empty()),
        "{}",
        cluster.diagnostics()
    );
    assert_eq!(cluster.procs[old].synced[0], "SYNCED ok");
    assert_eq!(cluster.procs[old].leading, Some(1), "still the leader");
    assert_eq!(cluster.procs[newcomer].leading, None, "still a follower");
    assert!(
        cluster.missing_on(&server, "new").len() < cluster.acked_with_prefix("new").len(),
        "the resumed leader pushed the follower's writes"
    );

    // When the old leader dies, the newcomer takes over with the next epoch.
    let killed_at = cluster.kill(old);
    assert!(
        cluster.wait_until(FAILOVER_BOUND, |c| c.leader_since(&db, killed_at).is_some()),
        "{}",
        cluster.diagnostics()
    );
    let next = cluster.leader_since(&db, killed_at).expect("leader");
    assert_eq!((next.proc, next.epoch), (newcomer, 2));
    converge(&mut cluster, &server, &db, "new");
    assert!(cluster.violations.is_empty(), "{:?}", cluster.violations);
    cluster.shutdown_all();
    check_server(&cluster, &server, "new");
    assert_eq!(server.max_epoch_seen(), Some(2));
}

/// A leader that lost its lock without noticing (its lock file was deleted while it was
/// frozen, and it campaigns rarely) is deposed by the database: the newer leader claimed a
/// higher epoch there, so the old one's sync is refused (`Fenced`) and the server never sees
/// its epoch again.
#[test]
fn a_leader_that_lost_its_lock_is_fenced() {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let mut cluster = Cluster::new(dir.path());
    let old = cluster.spawn(
        &db,
        &server,
        "old",
        &[
            (child::INTERVAL_ENV, "0"),
            (child::WRITES_ENV, "0"),
            // It does not campaign again during the test: only the database can depose it.
            (child::CAMPAIGN_ENV, "600000"),
        ],
    );
    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.procs[old].leading == Some(1)
            && c.procs[old].cycles > 0),
        "{}",
        cluster.diagnostics()
    );
    cluster.signal(old, "STOP");
    let lock = LockfileLeader::for_database(&db).expect("elector");
    std::fs::remove_file(lock.lock_path()).expect("someone deletes the lock file");
    let newcomer = cluster.spawn(&db, &server, "new", &[]);
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| c.procs[newcomer].leading
            == Some(2)),
        "{}",
        cluster.diagnostics()
    );
    // The new leader pushes its writes with epoch 2.
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| server.max_epoch_seen()
            == Some(2)
            && c.acked_with_prefix("new").len() > 3),
        "{}",
        cluster.diagnostics()
    );
    let requests_before = server.request_log().len();

    cluster.signal(old, "CONT");
    cluster.command(old, "SYNC");
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| !c.procs[old].synced.is_empty()
            && c.procs[old].leading.is_none()),
        "{}",
        cluster.diagnostics()
    );
    let answer = &cluster.procs[old].synced[0];
    assert!(
        answer.starts_with("SYNCED err fenced"),
        "the deposed leader's sync: {answer}"
    );
    let after: Vec<_> = server
        .request_log()
        .into_iter()
        .skip(requests_before)
        .collect();
    assert!(
        after
            .iter()
            .filter(|r| r.method != "GET")
            .all(|r| r.header("x-tidesync-epoch") == Some("2")),
        "the deposed leader reached the server"
    );
    assert_eq!(cluster.procs[newcomer].leading, Some(2));
    converge(&mut cluster, &server, &db, "new");
    cluster.shutdown_all();
    check_server(&cluster, &server, "new");
}

/// Kills a leader while its pushes hang (in flight in the database), then checks that the
/// survivor, without any restart, pushes everything.
fn in_flight_entries_of_a_dead_leader() {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let mut cluster = Cluster::new(dir.path());
    let env = [(child::TIMEOUT_ENV, "30000"), (child::WRITES_ENV, "0")];
    let a = cluster.spawn(&db, &server, "a", &env);
    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.procs[a].leading.is_some()),
        "{}",
        cluster.diagnostics()
    );
    let b = cluster.spawn(&db, &server, "b", &env);
    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.procs[b].ready),
        "{}",
        cluster.diagnostics()
    );
    // The next pushes hang (for longer than the test): the leader's entries stay in flight.
    server.fail_next_where(
        FaultFilter::writes(),
        4,
        FaultKind::Hang(Duration::from_secs(300)),
    );
    cluster.command(b, "START");
    let hanging = cluster.wait_until(Duration::from_secs(20), |_| {
        server
            .request_log()
            .iter()
            .filter(|r| r.method != "GET" && r.status.is_none())
            .count()
            >= 1
    });
    assert!(
        hanging,
        "no hanging pushes: {:?} {}",
        server
            .request_log()
            .iter()
            .map(|r| (r.method.clone(), r.status, r.fault.clone()))
            .collect::<Vec<_>>(),
        cluster.diagnostics()
    );
    // The hanging requests stay in flight in the dead leader; the next ones go through.
    server.clear_faults();
    cluster.kill(a);
    assert!(
        cluster.wait_until(FAILOVER_BOUND, |c| c.procs[b].leading == Some(2)),
        "{}",
        cluster.diagnostics()
    );
    cluster.pump(Duration::from_millis(500));
    converge(&mut cluster, &server, &db, "b");
    cluster.shutdown_all();
    check_server(&cluster, &server, "b");
    check_outbox_empty(&db);
}

/// The new leader re-queues (in its leadership claim) what the dead leader left in flight.
#[test]
fn a_new_leader_pushes_what_the_dead_leader_left_in_flight() {
    in_flight_entries_of_a_dead_leader();
}

/// A leader that loses leadership in the middle of a sync cycle (here: its lock file is
/// deleted while slow pushes keep the cycle busy, and a newcomer takes over) must not push
/// anything more: each cycle runs under the epoch it started with, stops taking entries once
/// leadership is lost, and its writes are fenced by that epoch, so no push ever goes out
/// without one.
#[test]
fn a_leader_deposed_mid_cycle_stops_and_never_pushes_without_an_epoch() {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let mut cluster = Cluster::new(dir.path());
    let old = cluster.spawn(&db, &server, "old", &[]);
    assert!(
        cluster.wait_until(Duration::from_secs(30), |c| c.procs[old].leading == Some(1)),
        "{}",
        cluster.diagnostics()
    );
    // Slow pushes: the old leader's cycle is busy for a long time.
    server.fail_next_where(
        FaultFilter::writes(),
        100_000,
        FaultKind::Delay(Duration::from_millis(300)),
    );
    cluster.pump(Duration::from_millis(1500));
    let lock = LockfileLeader::for_database(&db).expect("elector");
    std::fs::remove_file(lock.lock_path()).expect("someone deletes the lock file");
    let newcomer = cluster.spawn(&db, &server, "new", &[]);
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| c.procs[newcomer].leading
            == Some(2)
            && c.procs[old].leading.is_none()),
        "{}",
        cluster.diagnostics()
    );
    cluster.pump(Duration::from_secs(3));
    let unfenced: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET" && r.header("x-tidesync-epoch").is_none())
        .map(|r| format!("#{} {} {}", r.seq, r.method, r.path))
        .collect();
    assert!(
        unfenced.is_empty(),
        "{} pushes without an epoch, e.g. {:?}",
        unfenced.len(),
        &unfenced[..unfenced.len().min(5)]
    );
}
