//! Conflict resolution cost on the pull path: N records edited locally (pending) and on the
//! server (another client), then one pull that meets N conflicts and resolves them.
//!
//! Run: `cargo bench --bench conflicts` (release). For each strategy — server-wins
//! (`tidesync::ServerWins`) and field-level merge (`tidesync_conflict_merge::FieldMerge`, the
//! local edit touches `title`, the remote one `body`, so the merge keeps both) — and each
//! store (durable redb, memory) it times:
//! - the pull of N remote changes that meet N pending local edits (N conflicts resolved);
//! - next to it, in the same run, the baseline: the pull of the same N remote changes with no
//!   local edits (no conflict, the records are simply applied).
//!
//! It prints the time per conflict, the time per plain applied record, and the difference:
//! what resolving a conflict costs on top of applying the record. The outcome is checked
//! (server-wins: the remote title; merge: local title and remote body).
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3, medians), `TIDESYNC_BENCH_CONFLICTS` (N, default
//! 1000), `TIDESYNC_BENCH_PAGE` (pull page size, default 200 = the engine default).

#[allow(dead_code)]
mod common;

use std::time::Instant;

use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, RedbStore, ServerWins, SyncSettings};
use tidesync_conflict_merge::FieldMerge;
use tidesync_testkit::server::ReferenceServer;

use common::{median, record, secs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    ServerWins,
    FieldMerge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Redb,
    Memory,
}

fn key(i: usize) -> String {
    format!("rec-{i:08}")
}

/// Seconds of the pull that meets the remote edits; with `local_edits`, every record also has
/// a pending local edit, so every remote change is a conflict.
fn pull_with_remote_changes(
    rt: &tokio::runtime::Runtime,
    n: usize,
    page: usize,
    strategy: Strategy,
    store: StoreKind,
    local_edits: bool,
) -> f64 {
    let server = ReferenceServer::start_background();
    for i in 0..n {
        server.insert_direct("posts", record(i)).expect("fill");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = SyncSettings {
        page_size: page,
        max_pages: n / page + 10,
        ..common::manual_settings()
    };
    let builder = Engine::builder()
        .table(common::posts())
        .transport(common::transport(server.url(), false))
        .settings(settings);
    let builder = match strategy {
        Strategy::ServerWins => builder.conflicts("posts", ServerWins),
        Strategy::FieldMerge => builder.conflicts("posts", FieldMerge::new()),
    };
    let builder = match store {
        StoreKind::Redb => {
            builder.store(RedbStore::open(dir.path().join("engine.redb")).expect("open"))
        }
        StoreKind::Memory => builder.store(MemoryStore::new()),
    };
    let engine = builder.start().expect("engine");
    let posts = engine.table::<Value>("posts").expect("table");
    let initial = rt.block_on(engine.pull(None)).expect("initial pull");
    assert_eq!(initial.applied, n as u64);

    if local_edits {
        rt.block_on(async {
            let ids: Vec<usize> = (0..n).collect();
            for chunk in ids.chunks(500) {
                let mut batch = engine.batch();
                for &i in chunk {
                    batch = batch.update("posts", key(i), json!({"title": format!("local {i}")}));
                }
                batch.commit().await.expect("local edits");
            }
        });
        assert_eq!(engine.outbox_stats("posts").expect("stats").depth, n as u64);
    }
    for i in 0..n {
        server
            .update_direct("posts", key(i), json!({"body": format!("remote {i}")}))
            .expect("remote edit");
    }

    let start = Instant::now();
    let report = rt.block_on(engine.pull(None)).expect("pull");
    let elapsed = secs(start);

    let expected_conflicts = if local_edits { n as u64 } else { 0 };
    assert_eq!(report.conflicts, expected_conflicts, "{report:?}");
    for i in [0, n / 2, n - 1] {
        let local = rt
            .block_on(posts.get(key(i)))
            .expect("get")
            .expect("record");
        assert_eq!(local["body"], format!("remote {i}"));
        let title = match (local_edits, strategy) {
            (true, Strategy::FieldMerge) => format!("local {i}"),
            _ => format!("title {i}"),
        };
        assert_eq!(local["title"], title, "{strategy:?} record {i}");
    }
    engine.shutdown();
    elapsed
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_CONFLICTS", 1000, 30).max(1);
    let page = common::env_usize("TIDESYNC_BENCH_PAGE", 200, 10).max(1);
    let rt = common::runtime();
    println!(
        "conflicts: {n} conflicting records per pull, page size {page}, median of {runs} runs{}",
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    for store in [StoreKind::Redb, StoreKind::Memory] {
        common::section(&format!(
            "{} store: pull of {n} remote changes, with vs without pending local edits",
            format!("{store:?}").to_lowercase()
        ));
        for strategy in [Strategy::ServerWins, Strategy::FieldMerge] {
            let (mut with, mut without) = (vec![], vec![]);
            for run in 0..runs {
                let (w, wo) = if run % 2 == 0 {
                    let w = pull_with_remote_changes(&rt, n, page, strategy, store, true);
                    (
                        w,
                        pull_with_remote_changes(&rt, n, page, strategy, store, false),
                    )
                } else {
                    let wo = pull_with_remote_changes(&rt, n, page, strategy, store, false);
                    (
                        pull_with_remote_changes(&rt, n, page, strategy, store, true),
                        wo,
                    )
                };
                with.push(w);
                without.push(wo);
            }
            let (with, without) = (median(&with), median(&without));
            let per_conflict = with / n as f64 * 1e3;
            let per_record = without / n as f64 * 1e3;
            println!(
                "  {:<11} {n} conflicts in {with:.3} s = {per_conflict:.3} ms/conflict   \
                 baseline (no local edit) {without:.3} s = {per_record:.3} ms/record   \
                 resolution adds {:.3} ms/conflict   [{}]",
                format!("{strategy:?}"),
                per_conflict - per_record,
                common::machine_note()
            );
        }
        common::section_end();
    }
}
