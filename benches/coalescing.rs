//! Outbox coalescing: how many requests reach the server for many edits made offline.
//!
//! Run: `cargo bench --bench coalescing` (release). Three cases, each on a durable redb
//! store against the reference server (127.0.0.1, in process):
//! 1. one record, 100 edits offline (a create, then 99 updates) → push → write requests sent
//!    (expected: 1, a create carrying the last state);
//! 2. 1000 records × 10 edits each offline (creates, then 9 updates each, interleaved across
//!    records by 16 concurrent writers) → push → requests (expected: 1000);
//! 3. one record already on the server, 100 updates offline → push → requests (expected: 1).
//!
//! Next to each count it prints what an outbox without coalescing would send (one request per
//! edit), the outbox depth before the push, the time the edits took and the push time. The
//! server's final state is checked against the last edit every time.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3; times are medians, counts must not vary),
//! `TIDESYNC_BENCH_EDITS` (edits to the one record, default 100),
//! `TIDESYNC_BENCH_COALESCE_RECORDS` (default 1000), `TIDESYNC_BENCH_COALESCE_EDITS`
//! (edits per record, default 10).

#[allow(dead_code)]
mod common;

use std::time::Instant;

use serde_json::{Value, json};
use tidesync::{Engine, RedbStore};
use tidesync_testkit::server::ReferenceServer;

use common::{median, record, secs};

struct Outcome {
    edits: usize,
    depth_before_push: u64,
    requests: usize,
    edit_secs: f64,
    push_secs: f64,
}

fn engine(server: &ReferenceServer, dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(RedbStore::open(dir.join("engine.redb")).expect("open"))
        .table(common::posts())
        .transport(common::transport(server.url(), false))
        .settings(common::manual_settings())
        .start()
        .expect("engine")
}

/// `records` records, `edits` edits each (a create, then updates), by 16 concurrent writers
/// (record `r` belongs to writer `r % 16`, which edits its records round-robin), then a push.
/// With `synced_first`, the records are created and pushed before the timed edits, and all
/// `edits` are updates.
fn run_case(
    rt: &tokio::runtime::Runtime,
    records: usize,
    edits: usize,
    synced_first: bool,
) -> Outcome {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(&server, dir.path());
    let posts = engine.table::<Value>("posts").expect("table");
    if synced_first {
        rt.block_on(async {
            for r in 0..records {
                posts.put(&record(r)).await.expect("create");
            }
            engine.push().await.expect("first push");
        });
        server.clear_log();
    }
    let writers = 16.min(records);
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let posts = posts.clone();
            tasks.spawn(async move {
                let mine: Vec<usize> = (w..records).step_by(writers).collect();
                for edit in 0..edits {
                    for &r in &mine {
                        if edit == 0 && !synced_first {
                            posts.put(&record(r)).await.expect("create");
                        } else {
                            let key = format!("rec-{r:08}");
                            posts
                                .update(key, json!({"title": format!("edit {edit}"), "n": edit}))
                                .await
                                .expect("update");
                        }
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer");
        }
    });
    let edit_secs = secs(start);
    let depth_before_push = engine.outbox_stats("posts").expect("stats").depth;
    let start = Instant::now();
    let report = rt.block_on(engine.push()).expect("push");
    let push_secs = secs(start);
    assert_eq!(report.pushed, depth_before_push, "{report:?}");
    let requests = server.request_log().iter().filter(|r| r.is_write()).count();
    // The server holds the last edit of every record.
    let last = edits - 1;
    for r in [0, records / 2, records - 1] {
        let on_server = server
            .record("posts", format!("rec-{r:08}"))
            .expect("record on the server");
        if last == 0 && !synced_first {
            assert_eq!(on_server["title"], record(r)["title"]);
        } else {
            assert_eq!(on_server["title"], format!("edit {last}"), "record {r}");
            assert_eq!(on_server["n"], last);
        }
    }
    assert_eq!(server.records("posts").len(), records);
    engine.shutdown();
    Outcome {
        edits: records * edits,
        depth_before_push,
        requests,
        edit_secs,
        push_secs,
    }
}

fn report(
    rt: &tokio::runtime::Runtime,
    title: &str,
    runs: usize,
    records: usize,
    edits: usize,
    synced_first: bool,
    expected: usize,
) {
    common::section(title);
    let mut outcomes = Vec::new();
    for _ in 0..runs {
        outcomes.push(run_case(rt, records, edits, synced_first));
    }
    let first = &outcomes[0];
    let requests: Vec<usize> = outcomes.iter().map(|o| o.requests).collect();
    let stable = requests.iter().all(|&r| r == first.requests);
    println!(
        "  edits made offline          {:>8}   (an outbox without coalescing sends {} requests)",
        first.edits, first.edits
    );
    println!(
        "  outbox entries before push  {:>8}",
        first.depth_before_push
    );
    println!(
        "  write requests sent         {:>8}   (expected {expected}){}",
        first.requests,
        if stable {
            String::new()
        } else {
            format!("  VARIED across runs: {requests:?}")
        }
    );
    println!(
        "  edits took                  {:>8.3} s   push took {:.3} s   [{}]",
        median(&outcomes.iter().map(|o| o.edit_secs).collect::<Vec<_>>()),
        median(&outcomes.iter().map(|o| o.push_secs).collect::<Vec<_>>()),
        common::machine_note()
    );
    common::section_end();
}

fn main() {
    let runs = common::runs();
    let one_edits = common::env_usize("TIDESYNC_BENCH_EDITS", 100, 20).max(1);
    let many = common::env_usize("TIDESYNC_BENCH_COALESCE_RECORDS", 1000, 40).max(1);
    let many_edits = common::env_usize("TIDESYNC_BENCH_COALESCE_EDITS", 10, 3).max(1);
    let rt = common::runtime();
    println!(
        "coalescing: redb store, reference server on 127.0.0.1, {runs} runs{}",
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    report(
        &rt,
        &format!("1 record, {one_edits} edits offline (create + updates)"),
        runs,
        1,
        one_edits,
        false,
        1,
    );
    report(
        &rt,
        &format!("{many} records x {many_edits} edits offline (create + updates, 16 writers)"),
        runs,
        many,
        many_edits,
        false,
        many,
    );
    report(
        &rt,
        &format!("1 synced record, {one_edits} updates offline"),
        runs,
        1,
        one_edits,
        true,
        1,
    );
}
