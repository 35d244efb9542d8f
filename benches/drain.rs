//! Draining a large outbox backlog: time, throughput, and whether memory stays bounded.
//!
//! Run: `cargo bench --bench drain` (release): backlogs of 10 000 and 100 000 entries.
//!
//! Every measurement runs in fresh child processes (this binary re-executed with
//! `TIDESYNC_BENCH_CHILD`), so their RSS is the client's alone; the reference server runs in
//! the parent (127.0.0.1, its own thread), fresh for every measurement. Two ways to get a
//! backlog:
//! - `written`: one child starts a redb-backed engine with the REST transport and no automatic
//!   sync (no timer, no sync at start, no push after local writes), waits until it leads, and
//!   writes N records offline — batches of 500 through `engine.batch()`, one outbox entry per
//!   record — timed separately (not part of the drain figure); then it drains.
//! - `restart`: a first child writes the same backlog with a local-only engine and shuts down
//!   normally (the server must see no request from it); a second child opens the file with
//!   the REST transport, is timed until it leads (its leadership claim re-queues entries left
//!   in flight, see BENCHMARKS.md F2) with its peak RSS so far, then drains.
//!   `TIDESYNC_BENCH_DRAIN_NO_RESTART=1` skips this case.
//!
//! The drain: reset the peak RSS (`/proc/self/clear_refs`), read `VmRSS` ("before"), call
//! `engine.push()` until the outbox depth is 0 while a thread samples `VmRSS` and the depth
//! every 50 ms; `VmHWM` at the end is the drain's true peak. The child then checks: outbox
//! empty, nothing dead-lettered or parked, N entries acknowledged, N records in the local
//! table. The parent checks the server holds exactly the N records (ids `rec-00000000`…,
//! the fields written, each created once, no tombstones). Any failure panics.
//!
//! Printed: two lines per run (with the drain rate and the peak RSS over each fifth of the
//! backlog, to show whether speed or memory depend on what is left), then a table of medians:
//! N, write time, drain time, entries/s, RSS before the drain, peak RSS during it,
//! peak / before, and the peak RSS of the largest backlog over the smallest (bounded memory:
//! close to 1). Every line carries the load average and the number of running `rustc`.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3, medians), `TIDESYNC_BENCH_DRAIN_SIZES` (comma list,
//! default `10000,100000`; smoke mode `100,300`), `TIDESYNC_BENCH_DRAIN_BULK=1` (push through
//! the bulk endpoint, 50 entries per request, instead of one POST per entry),
//! `TIDESYNC_BENCH_DRAIN_NO_RESTART=1`, `TIDESYNC_BENCH_DRAIN_CACHE_MB` (redb's page cache,
//! default the store's 64 MiB; it bounds most of the client's RSS).

#[allow(dead_code)]
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidesync::{Engine, SyncReport};
use tidesync_store_redb::{DEFAULT_CACHE_SIZE, RedbOptions};
use tidesync_testkit::server::ReferenceServer;

use common::{median, record, secs, thousands};

/// How often the sampler reads RSS and the outbox depth.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The drain fails if no entry was acknowledged for this long.
const STALL: Duration = Duration::from_secs(120);
/// The backlog is reported in this many equal parts.
const PARTS: usize = 5;

/// What a child measured.
#[derive(Debug, Clone, Default)]
struct ChildResult {
    write_secs: f64,
    drain_secs: f64,
    push_calls: u64,
    retried: u64,
    rss_before_kb: u64,
    /// Max of the 50 ms `VmRSS` samples.
    sampled_peak_kb: u64,
    /// `VmHWM` at the end of the drain.
    hwm_kb: u64,
    /// Whether the peak was reset before the drain (then `hwm_kb` is the drain's alone).
    hwm_reset: bool,
    rss_end_kb: u64,
    samples: u64,
    /// `restart`: seconds from opening the file until the engine leads.
    ready_secs: f64,
    /// `restart`: RSS at process start, before opening the file.
    rss_start_kb: u64,
    /// `restart`: `VmHWM` once the engine leads (open + leadership claim).
    hwm_ready_kb: u64,
    /// Filled by the parent: write requests in the server's log, whether the log still held
    /// every request (it keeps only the most recent ones), idempotent replays.
    write_requests: usize,
    log_complete: bool,
    replays: u64,
    /// Entries/s over each fifth of the backlog, first fifth first.
    part_rates: Vec<f64>,
    /// Peak sampled RSS during each fifth.
    part_peaks_kb: Vec<u64>,
}

impl ChildResult {
    /// The drain's peak RSS: `VmHWM` when it was reset before the drain, else the samples'.
    fn peak_kb(&self) -> u64 {
        if self.hwm_reset {
            self.hwm_kb.max(self.sampled_peak_kb)
        } else {
            self.sampled_peak_kb
        }
    }

    fn line(&self) -> String {
        let rates: Vec<String> = self.part_rates.iter().map(|r| format!("{r:.1}")).collect();
        let peaks: Vec<String> = self.part_peaks_kb.iter().map(u64::to_string).collect();
        format!(
            "CHILD_RESULT write_secs={} drain_secs={} push_calls={} retried={} rss_before_kb={} sampled_peak_kb={} hwm_kb={} hwm_reset={} rss_end_kb={} samples={} ready_secs={} rss_start_kb={} hwm_ready_kb={} part_rates={} part_peaks_kb={}",
            self.write_secs,
            self.drain_secs,
            self.push_calls,
            self.retried,
            self.rss_before_kb,
            self.sampled_peak_kb,
            self.hwm_kb,
            self.hwm_reset,
            self.rss_end_kb,
            self.samples,
            self.ready_secs,
            self.rss_start_kb,
            self.hwm_ready_kb,
            rates.join(","),
            peaks.join(","),
        )
    }

    fn parse(stdout: &str) -> Option<ChildResult> {
        let line = stdout.lines().find(|l| l.starts_with("CHILD_RESULT "))?;
        let mut r = ChildResult::default();
        for field in line.split_whitespace().skip(1) {
            let (name, value) = field.split_once('=')?;
            match name {
                "write_secs" => r.write_secs = value.parse().ok()?,
                "drain_secs" => r.drain_secs = value.parse().ok()?,
                "push_calls" => r.push_calls = value.parse().ok()?,
                "retried" => r.retried = value.parse().ok()?,
                "rss_before_kb" => r.rss_before_kb = value.parse().ok()?,
                "sampled_peak_kb" => r.sampled_peak_kb = value.parse().ok()?,
                "hwm_kb" => r.hwm_kb = value.parse().ok()?,
                "hwm_reset" => r.hwm_reset = value.parse().ok()?,
                "rss_end_kb" => r.rss_end_kb = value.parse().ok()?,
                "samples" => r.samples = value.parse().ok()?,
                "ready_secs" => r.ready_secs = value.parse().ok()?,
                "rss_start_kb" => r.rss_start_kb = value.parse().ok()?,
                "hwm_ready_kb" => r.hwm_ready_kb = value.parse().ok()?,
                "part_rates" => {
                    r.part_rates = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().ok())
                        .collect::<Option<_>>()?
                }
                "part_peaks_kb" => {
                    r.part_peaks_kb = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().ok())
                        .collect::<Option<_>>()?
                }
                _ => {}
            }
        }
        Some(r)
    }
}

fn rss_kb() -> u64 {
    common::proc_status_kb("VmRSS").unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// One sample: seconds since the drain started, `VmRSS` in kB, outbox depth.
type Sample = (f64, u64, u64);

/// Samples `VmRSS` and the outbox depth every [`SAMPLE_EVERY`] until `stop` is set.
fn spawn_sampler(
    engine: Engine,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        loop {
            // `status()` reads the totals in a few point reads; counting the table's queue
            // (`outbox_stats`) every 50 ms would take CPU from the drain it measures.
            let depth = engine.status().map_or(u64::MAX, |s| s.queue_depth);
            samples.push((secs(start), rss_kb(), depth));
            if stop.load(Ordering::SeqCst) {
                return samples;
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    })
}

/// Entries/s and peak sampled RSS over each of [`PARTS`] equal parts of the backlog, from
/// the samples (the time a part ends is the first sample at or below its depth).
fn parts(n: u64, drain_secs: f64, samples: &[Sample]) -> (Vec<f64>, Vec<u64>) {
    let (mut rates, mut peaks) = (Vec::new(), Vec::new());
    let mut from = 0.0;
    for k in 1..=PARTS as u64 {
        let left = n - n * k / PARTS as u64;
        let to = if k == PARTS as u64 {
            drain_secs
        } else {
            samples
                .iter()
                .find(|s| s.2 <= left)
                .map_or(drain_secs, |s| s.0)
                .min(drain_secs)
        };
        let entries = (n * k / PARTS as u64 - n * (k - 1) / PARTS as u64) as f64;
        rates.push(if to > from {
            entries / (to - from)
        } else {
            f64::NAN
        });
        peaks.push(
            samples
                .iter()
                .filter(|s| s.0 >= from && s.0 <= to)
                .map(|s| s.1)
                .max()
                .unwrap_or(0),
        );
        from = to;
    }
    (rates, peaks)
}

/// The redb cache size: `TIDESYNC_BENCH_DRAIN_CACHE_MB`, else the store's default (64 MiB).
fn cache_bytes() -> usize {
    std::env::var("TIDESYNC_BENCH_DRAIN_CACHE_MB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(DEFAULT_CACHE_SIZE, |mb| mb << 20)
}

fn open_engine(path: &Path, url: Option<&str>, bulk: bool) -> Engine {
    let store = RedbOptions::new()
        .cache_size(cache_bytes())
        .open(path)
        .expect("open");
    let builder = Engine::builder()
        .store(store)
        .table(common::posts())
        .settings(common::manual_settings());
    let builder = match url {
        Some(url) => builder.transport(common::transport(url, bulk)),
        None => builder,
    };
    builder.start().expect("engine")
}

/// Waits until the engine leads (its leadership claim, which re-queues what was left in
/// flight in the same transaction, committed).
fn wait_leading(engine: &Engine) {
    let wait = Instant::now();
    while !engine.status().expect("status").leader {
        assert!(secs(wait) < 120.0, "the engine never claimed leadership");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes records `0..n` offline in batches of 500 (one outbox entry each); returns seconds.
fn write_backlog(engine: &Engine, rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(500) {
            let mut batch = engine.batch();
            for &i in chunk {
                batch = batch.put("posts", &record(i));
            }
            batch.commit().await.expect("offline writes");
        }
    });
    let elapsed = secs(start);
    assert_eq!(
        engine.outbox_stats("posts").expect("stats").depth,
        n as u64,
        "one outbox entry per record written"
    );
    elapsed
}

/// Resets the peak RSS, then pushes until the outbox is empty while sampling RSS; checks the
/// outcome. Fills the drain figures of `out`.
fn drain(engine: &Engine, rt: &tokio::runtime::Runtime, n: usize, out: &mut ChildResult) {
    out.hwm_reset = common::reset_peak_rss();
    out.rss_before_kb = rss_kb();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let sampler = spawn_sampler(engine.clone(), start, stop.clone());
    let mut total = SyncReport::default();
    let mut progress = Instant::now();
    loop {
        let report = rt.block_on(engine.push()).expect("push");
        out.push_calls += 1;
        total.absorb(&report);
        assert_eq!(
            report.dead_lettered, 0,
            "entries were dead-lettered during the drain: {report:?}"
        );
        let depth = engine.outbox_stats("posts").expect("stats").depth;
        if depth == 0 {
            break;
        }
        if report.pushed > 0 {
            progress = Instant::now();
        } else {
            assert!(
                progress.elapsed() < STALL,
                "the drain stalled: {depth} entries left, nothing acknowledged for {STALL:?}, last report {report:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    out.drain_secs = secs(start);
    out.hwm_kb = common::proc_status_kb("VmHWM").unwrap_or(0);
    out.rss_end_kb = rss_kb();
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().expect("sampler");

    // The outcome: everything acknowledged, nothing left, lost or dead-lettered.
    assert_eq!(total.pushed, n as u64, "entries acknowledged: {total:?}");
    assert_eq!(total.dead_lettered, 0, "dead letters: {total:?}");
    let left = engine.outbox(None, usize::MAX).expect("outbox");
    assert!(left.is_empty(), "{} entries left in the outbox", left.len());
    let dead = engine.dead_letters(None).expect("dead letters");
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    let status = engine.status().expect("status");
    assert_eq!(status.queue_depth, 0, "queue depth: {status:?}");
    assert_eq!(status.dead_letters, 0, "dead letters: {status:?}");
    assert_eq!(status.parked_conflicts, 0, "parked conflicts: {status:?}");
    let posts = engine.table::<Value>("posts").expect("table");
    assert_eq!(
        rt.block_on(posts.count()).expect("count"),
        n as u64,
        "local records"
    );

    out.retried = total.retried;
    out.sampled_peak_kb = samples.iter().map(|s| s.1).max().unwrap_or(0);
    out.samples = samples.len() as u64;
    (out.part_rates, out.part_peaks_kb) = parts(n as u64, out.drain_secs, &samples);
}

/// Child `drain`: one process writes the backlog offline, then drains it.
fn child_drain(url: &str, n: usize, bulk: bool) -> ChildResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = common::runtime();
    let engine = open_engine(&dir.path().join("engine.redb"), Some(url), bulk);
    // Lead before writing, so that the leadership claim (which scans the outbox) runs on an
    // empty outbox and is not part of either figure.
    wait_leading(&engine);
    let mut out = ChildResult {
        write_secs: write_backlog(&engine, &rt, n),
        ..ChildResult::default()
    };
    drain(&engine, &rt, n, &mut out);
    engine.shutdown();
    out
}

/// Child `write`: writes the backlog into `path` with a local-only engine and shuts it down
/// normally.
fn child_write(path: &Path, n: usize) -> ChildResult {
    let rt = common::runtime();
    let engine = open_engine(path, None, false);
    let write_secs = write_backlog(&engine, &rt, n);
    engine.shutdown();
    ChildResult {
        write_secs,
        ..ChildResult::default()
    }
}

/// Child `restart`: a fresh process opens the file with the backlog, waits until it leads
/// (timed, with its peak RSS), then drains it.
fn child_restart(path: &Path, url: &str, n: usize, bulk: bool) -> ChildResult {
    let rt = common::runtime();
    let rss_start_kb = rss_kb();
    let start = Instant::now();
    let engine = open_engine(path, Some(url), bulk);
    wait_leading(&engine);
    let mut out = ChildResult {
        ready_secs: secs(start),
        rss_start_kb,
        hwm_ready_kb: common::proc_status_kb("VmHWM").unwrap_or(0),
        ..ChildResult::default()
    };
    drain(&engine, &rt, n, &mut out);
    engine.shutdown();
    out
}

fn run_child(mode: &str, url: &str, n: usize, bulk: bool, file: Option<&Path>) -> ChildResult {
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command
        .args(std::env::args().skip(1))
        .env("TIDESYNC_BENCH_CHILD", mode)
        .env("TIDESYNC_BENCH_URL", url)
        .env("TIDESYNC_BENCH_N", n.to_string())
        .env("TIDESYNC_BENCH_DRAIN_BULK", if bulk { "1" } else { "0" });
    if let Some(file) = file {
        command.env("TIDESYNC_BENCH_FILE", file);
    }
    let out = command.output().expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), ChildResult::parse(&stdout)) {
        (true, Some(result)) => result,
        _ => panic!(
            "{mode} child (N = {n}) failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The server holds exactly the N records written: the ids `rec-00000000`… `rec-{N-1}`, each
/// once, with the fields written, each created once, and no tombstones. Returns the number
/// of write requests in its log, whether the log still holds every request, and the number
/// of idempotent replays.
fn check_server(server: &ReferenceServer, n: usize) -> (usize, bool, u64) {
    let records = server.records("posts");
    assert_eq!(
        records.len(),
        n,
        "the server holds {} records, expected {n}",
        records.len()
    );
    let mut seen = HashSet::with_capacity(n);
    for rec in &records {
        let id = rec["id"].as_str().expect("string id");
        assert!(seen.insert(id.to_owned()), "record {id} is there twice");
        let i: usize = id
            .strip_prefix("rec-")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected id {id}"));
        assert!(i < n, "unexpected id {id}");
        let expected = record(i);
        for field in ["title", "body", "n"] {
            assert_eq!(rec[field], expected[field], "field {field} of {id}");
        }
        assert_eq!(
            server.create_count("posts", id),
            1,
            "{id} created more than once"
        );
    }
    let tombstones = server.tombstones("posts");
    assert!(tombstones.is_empty(), "{} tombstones", tombstones.len());
    let log = server.request_log();
    let complete = log.first().is_none_or(|r| r.seq == 0);
    let writes = log.iter().filter(|r| r.is_write()).count();
    (writes, complete, server.replay_count())
}

/// How the backlog came to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// Written offline by the process that then drains it (the same engine).
    Written,
    /// Written by another process that shut down; a fresh process opens the file and drains.
    Restart,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Written => "written",
            Scenario::Restart => "restart",
        }
    }
}

/// One measurement: a fresh server, the child(ren), the server checked.
fn measure(scenario: Scenario, n: usize, bulk: bool) -> ChildResult {
    let server = ReferenceServer::start_background();
    let mut r = match scenario {
        Scenario::Written => run_child("drain", server.url(), n, bulk, None),
        Scenario::Restart => {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("backlog.redb");
            let written = run_child("write", server.url(), n, bulk, Some(&file));
            assert!(
                server.request_log().is_empty(),
                "the writing process contacted the server"
            );
            let mut r = run_child("restart", server.url(), n, bulk, Some(&file));
            r.write_secs = written.write_secs;
            r
        }
    };
    (r.write_requests, r.log_complete, r.replays) = check_server(&server, n);
    r
}

fn fmt_rate(x: f64) -> String {
    if x.is_finite() {
        thousands(x)
    } else {
        "n/a".to_owned()
    }
}

fn print_run(run: usize, scenario: Scenario, n: usize, r: &ChildResult) {
    let ready = if scenario == Scenario::Restart {
        format!(
            ", ready (open + leading) {:.3} s with RSS {:.1} MB at process start and peak {:.1} MB until leading",
            r.ready_secs,
            mb(r.rss_start_kb),
            mb(r.hwm_ready_kb)
        )
    } else {
        String::new()
    };
    println!(
        "  run {run} {:<7} N={:>7}: write {:.2} s{ready}; drain {:.2} s = {} entries/s ({} push calls, {} retried, {}{} write requests{}, {} replays)   [{}]",
        scenario.label(),
        thousands(n as f64),
        r.write_secs,
        r.drain_secs,
        thousands(n as f64 / r.drain_secs),
        r.push_calls,
        r.retried,
        if r.log_complete { "" } else { ">= " },
        r.write_requests,
        if r.log_complete {
            ""
        } else {
            " (the server log keeps only the latest)"
        },
        r.replays,
        common::machine_note()
    );
    let rates: Vec<String> = r.part_rates.iter().map(|&x| fmt_rate(x)).collect();
    let peaks: Vec<String> = r
        .part_peaks_kb
        .iter()
        .map(|&kb| format!("{:.1}", mb(kb)))
        .collect();
    println!(
        "        RSS {:.1} MB before the drain, peak {:.1} MB ({}), sampled peak {:.1} MB ({} samples), {:.1} MB after; by fifth of the backlog: [{}] entries/s, peak sampled RSS [{}] MB; server checked: {n} records, each created once   [{}]",
        mb(r.rss_before_kb),
        mb(r.peak_kb()),
        if r.hwm_reset {
            "VmHWM, reset before the drain"
        } else {
            "VmHWM could NOT be reset: sampled peak"
        },
        mb(r.sampled_peak_kb),
        r.samples,
        mb(r.rss_end_kb),
        rates.join(" / "),
        peaks.join(" / "),
        common::machine_note()
    );
}

fn med(rs: &[ChildResult], f: impl Fn(&ChildResult) -> f64) -> f64 {
    median(&rs.iter().map(f).collect::<Vec<_>>())
}

fn main() {
    let bulk = common::env_flag("TIDESYNC_BENCH_DRAIN_BULK");
    if let Ok(mode) = std::env::var("TIDESYNC_BENCH_CHILD") {
        let url = std::env::var("TIDESYNC_BENCH_URL").expect("url");
        let n: usize = std::env::var("TIDESYNC_BENCH_N")
            .expect("n")
            .parse()
            .expect("n");
        let file = std::env::var("TIDESYNC_BENCH_FILE").map(PathBuf::from);
        let result = match mode.as_str() {
            "drain" => child_drain(&url, n, bulk),
            "write" => child_write(&file.expect("file"), n),
            "restart" => child_restart(&file.expect("file"), &url, n, bulk),
            other => panic!("unknown child mode {other}"),
        };
        println!("{}", result.line());
        return;
    }

    let runs = common::runs();
    let sizes: Vec<usize> = match std::env::var("TIDESYNC_BENCH_DRAIN_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("TIDESYNC_BENCH_DRAIN_SIZES: a comma list of sizes")
            })
            .collect(),
        Err(_) if common::bench_mode() => vec![10_000, 100_000],
        Err(_) => vec![100, 300],
    };
    assert!(
        !sizes.is_empty() && sizes.iter().all(|&n| n > 0),
        "no sizes"
    );
    let scenarios = if common::env_flag("TIDESYNC_BENCH_DRAIN_NO_RESTART") {
        vec![Scenario::Written]
    } else {
        vec![Scenario::Written, Scenario::Restart]
    };
    println!(
        "drain: backlogs of {sizes:?} outbox entries ({} bytes per record), redb (cache {} MiB), {}, concurrency {}, median of {runs} runs, one child process per measurement{}",
        record(0).to_string().len(),
        cache_bytes() >> 20,
        if bulk {
            "bulk endpoint (50 per request)"
        } else {
            "one POST per entry"
        },
        common::manual_settings().concurrency,
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );

    common::section("runs");
    let cases: Vec<(Scenario, usize)> = scenarios
        .iter()
        .flat_map(|&sc| sizes.iter().map(move |&n| (sc, n)))
        .collect();
    let mut results: Vec<Vec<ChildResult>> = vec![Vec::new(); cases.len()];
    for run in 0..runs {
        // Alternate the order of the cases, so drift in the machine's load hits all of them.
        let order: Vec<usize> = if run % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for idx in order {
            let (scenario, n) = cases[idx];
            let r = measure(scenario, n, bulk);
            print_run(run + 1, scenario, n, &r);
            results[idx].push(r);
        }
    }
    common::section_end();

    common::section(&format!("medians of {runs} runs"));
    println!(
        "  {:>9} | {:<7} | {:>8} | {:>8} | {:>9} | {:>9} | {:>10} | {:>10} | {:>11} | {:>18} |",
        "N",
        "backlog",
        "write",
        "drain",
        "entries/s",
        "ready",
        "RSS before",
        "peak RSS",
        "peak/before",
        "peak until leading"
    );
    for (&(scenario, n), rs) in cases.iter().zip(&results) {
        let drain = med(rs, |r| r.drain_secs);
        let restart = scenario == Scenario::Restart;
        println!(
            "  {:>9} | {:<7} | {:>6.2} s | {:>6.2} s | {:>9} | {:>9} | {:>7.1} MB | {:>7.1} MB | {:>10.2}x | {:>18} |   [{}]",
            thousands(n as f64),
            scenario.label(),
            med(rs, |r| r.write_secs),
            drain,
            thousands(n as f64 / drain),
            if restart {
                format!("{:.3} s", med(rs, |r| r.ready_secs))
            } else {
                "-".to_owned()
            },
            med(rs, |r| r.rss_before_kb as f64) / 1024.0,
            med(rs, |r| r.peak_kb() as f64) / 1024.0,
            med(rs, |r| r.peak_kb() as f64 / r.rss_before_kb as f64),
            if restart {
                format!("{:.1} MB", med(rs, |r| r.hwm_ready_kb as f64) / 1024.0)
            } else {
                "-".to_owned()
            },
            common::machine_note()
        );
    }
    // Bounded memory: the peak of the largest backlog over that of the smallest.
    for &scenario in &scenarios {
        let of = |n: usize, f: &dyn Fn(&ChildResult) -> f64| {
            let idx = cases
                .iter()
                .position(|&c| c == (scenario, n))
                .expect("case");
            med(&results[idx], f)
        };
        let (Some(&small), Some(&big)) = (sizes.iter().min(), sizes.iter().max()) else {
            continue;
        };
        if small == big {
            continue;
        }
        let drain_peak = |r: &ChildResult| r.peak_kb() as f64;
        let (d_big, d_small) = (of(big, &drain_peak), of(small, &drain_peak));
        let mut line = format!(
            "  {:<7} peak RSS during the drain, {} vs {} entries: {:.1} MB vs {:.1} MB = {:.2}x",
            scenario.label(),
            thousands(big as f64),
            thousands(small as f64),
            d_big / 1024.0,
            d_small / 1024.0,
            d_big / d_small
        );
        if scenario == Scenario::Restart {
            let whole = |r: &ChildResult| r.peak_kb().max(r.hwm_ready_kb) as f64;
            let (w_big, w_small) = (of(big, &whole), of(small, &whole));
            line += &format!(
                "; whole process (start + drain): {:.1} MB vs {:.1} MB = {:.2}x",
                w_big / 1024.0,
                w_small / 1024.0,
                w_big / w_small
            );
        }
        println!(
            "{line}   (bounded memory: close to 1; the backlog is {:.0}x larger)   [{}]",
            big as f64 / small as f64,
            common::machine_note()
        );
    }
    common::section_end();
}
