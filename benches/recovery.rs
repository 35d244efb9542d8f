//! Crash recovery time: reopening an engine on a redb file left by a crash with a backlog of
//! outbox entries, some of them in flight, next to a plain `RedbStore::open` of the same file.
//!
//! Run: `cargo bench --bench recovery` (release).
//! 1. A child process (this binary, re-executed with `TIDESYNC_BENCH_CHILD=build`) writes
//!    `TIDESYNC_BENCH_BACKLOG` records (default 100 000) offline through the engine — one
//!    outbox entry each — marks the first `TIDESYNC_BENCH_IN_FLIGHT` entries (default 800:
//!    16 requests of 50) in flight as a pusher would, and exits without closing anything
//!    (`std::process::exit`): the file is left as a crash leaves it (redb must repair it).
//! 2. For each run, two fresh copies of that file (copying is not timed; the copies are in
//!    the page cache, as after a quick restart):
//!    - plain: `RedbStore::open` (redb's repair of the unclean file included);
//!    - engine: `RedbStore::open` + `Engine::builder()…start()` with a REST transport, timed
//!      until `start()` returns and until the engine leads (`status().leader`): the
//!      leadership claim re-queues the entries left in flight in its transaction, so that is
//!      when the engine is ready to push. Checked afterwards: the whole backlog is still
//!      queued and nothing is left in flight.
//! 3. The same figures for a clean restart (the engine's file after a normal shutdown).
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3, medians), `TIDESYNC_BENCH_BACKLOG`,
//! `TIDESYNC_BENCH_IN_FLIGHT`.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tidesync::actors::StoreClosure;
use tidesync::{Engine, RedbStore};

use common::{median, record, secs};

/// Child: writes the backlog, marks entries in flight, exits without closing the database.
fn build_backlog(path: &Path, n: usize, in_flight: usize) -> ! {
    let rt = common::runtime();
    let engine = Engine::builder()
        .store(RedbStore::open(path).expect("open"))
        .table(common::posts())
        .start()
        .expect("engine");
    let start = Instant::now();
    rt.block_on(async {
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(1000) {
            let mut batch = engine.batch();
            for &i in chunk {
                batch = batch.put("posts", &record(i));
            }
            batch.commit().await.expect("backlog write");
        }
        let marked = engine
            .store_writer()
            .send(StoreClosure::new(move |db, txn| {
                let heads: Vec<u64> = db
                    .outbox()
                    .entries(&*txn, None, in_flight)?
                    .iter()
                    .map(|e| e.seq)
                    .collect();
                for &seq in &heads {
                    db.outbox().mark_in_flight(txn, seq)?;
                }
                Ok((heads.len(), Vec::new()))
            }))
            .await
            .expect("writer")
            .expect("mark in flight");
        assert_eq!(marked, in_flight.min(n));
    });
    let depth = engine.outbox_stats("posts").expect("stats").depth;
    println!(
        "CHILD_RESULT built={depth} secs={:.3} bytes={}",
        secs(start),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    );
    // A crash: no destructor runs, the redb file is not closed.
    std::process::exit(0)
}

fn copy(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).expect("copy");
    to
}

fn plain_open(path: &Path) -> f64 {
    let start = Instant::now();
    let store = RedbStore::open(path).expect("open");
    let elapsed = secs(start);
    drop(store);
    elapsed
}

/// Seconds until `start()` returned and until the engine leads (its leadership claim, which
/// re-queues what was left in flight in the same transaction, committed: ready to push);
/// returns the engine for checks and a clean shutdown.
fn engine_open(path: &Path, url: &str) -> (f64, f64, Engine) {
    let start = Instant::now();
    let engine = Engine::builder()
        .store(RedbStore::open(path).expect("open"))
        .table(common::posts())
        .transport(common::transport(url, false))
        .settings(common::manual_settings())
        .start()
        .expect("engine");
    let started = secs(start);
    while !engine.status().expect("status").leader {
        assert!(secs(start) < 60.0, "the engine never claimed leadership");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    (started, secs(start), engine)
}

fn check_recovered(engine: &Engine, n: usize, when: &str) {
    assert_eq!(
        engine.outbox_stats("posts").expect("stats").depth,
        n as u64,
        "the backlog survived ({when})"
    );
    let in_flight = engine
        .outbox(None, usize::MAX)
        .expect("outbox")
        .iter()
        .filter(|e| e.in_flight)
        .count();
    assert_eq!(in_flight, 0, "nothing left in flight ({when})");
}

fn main() {
    let n = common::env_usize("TIDESYNC_BENCH_BACKLOG", 100_000, 500);
    let in_flight = common::env_usize("TIDESYNC_BENCH_IN_FLIGHT", 800, 20);
    if std::env::var("TIDESYNC_BENCH_CHILD").as_deref() == Ok("build") {
        let path = PathBuf::from(std::env::var("TIDESYNC_BENCH_FILE").expect("file"));
        build_backlog(&path, n, in_flight);
    }
    let runs = common::runs();
    println!(
        "recovery: backlog of {n} outbox entries, {in_flight} in flight at the crash, median of {runs} runs{}",
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = dir.path().join("crashed.redb");
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(std::env::args().skip(1))
        .env("TIDESYNC_BENCH_CHILD", "build")
        .env("TIDESYNC_BENCH_FILE", &crashed)
        .env("TIDESYNC_BENCH_BACKLOG", n.to_string())
        .env("TIDESYNC_BENCH_IN_FLIGHT", in_flight.to_string())
        .output()
        .expect("build child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD_RESULT"),
        "build child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&crashed).expect("file").len();
    println!(
        "backlog built in {:.1} s by a child that then exited without closing the file ({} MB)",
        secs(start),
        size / 1_000_000
    );
    // The engines get a transport (as an app's would) but never sync: nothing is contacted.
    let server = tidesync_testkit::server::ReferenceServer::start_background();

    common::section("restart after a crash (unclean file, entries in flight)");
    let (mut plain, mut started, mut engine) = (vec![], vec![], vec![]);
    let (mut clean_plain, mut clean_started, mut clean_engine) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let plain_copy = copy(&crashed, dir.path(), &format!("plain-{run}.redb"));
        let engine_copy = copy(&crashed, dir.path(), &format!("engine-{run}.redb"));
        let (p, (s, e, eng)) = if run % 2 == 0 {
            let p = plain_open(&plain_copy);
            (p, engine_open(&engine_copy, server.url()))
        } else {
            let e = engine_open(&engine_copy, server.url());
            (plain_open(&plain_copy), e)
        };
        check_recovered(&eng, n, "after the crash");
        plain.push(p);
        started.push(s);
        engine.push(e);
        eng.shutdown();
        drop(eng);
        // A clean restart of the same file: closed normally, nothing in flight.
        let cp = plain_open(&engine_copy);
        let (cs, ce, eng) = engine_open(&engine_copy, server.url());
        check_recovered(&eng, n, "after a clean restart");
        eng.shutdown();
        drop(eng);
        clean_plain.push(cp);
        clean_started.push(cs);
        clean_engine.push(ce);
        let _ = std::fs::remove_file(&plain_copy);
        let _ = std::fs::remove_file(&engine_copy);
    }
    let ratio = median(&engine) / median(&plain);
    println!(
        "  RedbStore::open (redb repair)          {:>9.1} ms",
        median(&plain) * 1e3
    );
    println!(
        "  engine: start() returned               {:>9.1} ms",
        median(&started) * 1e3
    );
    println!(
        "  engine: leading, in-flight re-queued   {:>9.1} ms   ({ratio:.1}x the plain open)   [{}]",
        median(&engine) * 1e3,
        common::machine_note()
    );
    common::section_end();

    common::section("clean restart (same backlog, closed normally, nothing in flight)");
    println!(
        "  RedbStore::open                        {:>9.1} ms",
        median(&clean_plain) * 1e3
    );
    println!(
        "  engine: start() returned               {:>9.1} ms",
        median(&clean_started) * 1e3
    );
    println!(
        "  engine: leading                        {:>9.1} ms   ({:.1}x the plain open)   [{}]",
        median(&clean_engine) * 1e3,
        median(&clean_engine) / median(&clean_plain),
        common::machine_note()
    );
    common::section_end();
}
