//! Hard-delete reconciliation (`reconcile_every`) next to a raw key listing of the same route.
//!
//! Run: `cargo bench --bench reconcile` (release): 100 000 records on the reference server
//! (hard deletes, no tombstones), 1 % of them deleted for good before each measured pass.
//!
//! Measured, in one process, median of `TIDESYNC_BENCH_RUNS` (default 3):
//! - `engine pass`: a redb-backed engine that holds every record runs one pull-only cycle in
//!   which its reconciliation is due: the pull (nothing new, one page), the listing of every
//!   key through the REST transport (the keyset feed walked from the start), and the local
//!   deletes with the last-run time in one transaction. keys/s = keys listed / cycle time.
//! - `engine listing`: the listing alone, as the pass's `Reconciled` event reports it.
//! - `raw listing`: reqwest GETs the same route with the same page size, parses each page and
//!   collects the ids in a `HashSet` (no store): the server-and-HTTP floor.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3), `TIDESYNC_BENCH_RECORDS` (default 100000),
//! `TIDESYNC_BENCH_PAGE` (default 1000, the server's largest page).

#[allow(dead_code)]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tidesync::{Engine, RedbStore, SyncEvent, SyncSettings};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer};
use tidesync_transport_rest::RestTransport;

use common::{median, record, secs, thousands};

/// Raw: every id of the keyset feed, page by page.
async fn raw_listing(client: &reqwest::Client, url: &str, page: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor: Option<(String, String)> = None;
    loop {
        let (items, has_more) = common::raw_keyset_page(client, url, page, &mut cursor).await;
        for item in &items {
            ids.insert(item["id"].as_str().expect("string id").to_owned());
        }
        if !has_more {
            return ids;
        }
    }
}

/// The Reconciled event's (listed, deleted, listing_ms), waiting briefly for it.
async fn reconciled(events: &mut tidesync::Events) -> (u64, u64, u64) {
    let event = events
        .wait_for(Duration::from_secs(30), |e| {
            matches!(e, SyncEvent::Reconciled { .. })
        })
        .await
        .expect("a Reconciled event");
    match event {
        SyncEvent::Reconciled {
            listed,
            deleted,
            listing_ms,
            ..
        } => (listed, deleted, listing_ms),
        _ => (0, 0, 0),
    }
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_RECORDS", 100_000, 2_000);
    let page = common::env_usize("TIDESYNC_BENCH_PAGE", 1000, 100);
    println!(
        "reconcile: {} records, page size {page}, 1% hard-deleted before each pass, median of {runs} runs{}",
        thousands(n as f64),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    let server = ReferenceServer::builder()
        .collection("posts", CollectionConfig::default().hard_deletes(true))
        .start_background();
    let start = Instant::now();
    for i in 0..n {
        server.insert_direct("posts", record(i)).expect("fill");
    }
    println!("  server filled with insert_direct in {:.2} s", secs(start));

    let rt = common::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let transport = RestTransport::builder(server.url())
        .table(
            "posts",
            common::routes("posts", false).reconcile_every(Duration::from_secs(1)),
        )
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("transport");
    let engine = Engine::builder()
        .store(RedbStore::open(dir.path().join("engine.redb")).expect("open"))
        .table(common::posts())
        .transport(transport)
        .settings(SyncSettings {
            page_size: page,
            ..common::manual_settings()
        })
        .start()
        .expect("engine");
    let mut events = engine.events();
    // The first sync (its reconciliation, never run before, is due and finds nothing).
    let first = rt.block_on(engine.pull(None)).expect("first sync");
    assert_eq!(first.applied, n as u64);
    let (listed, _, _) = rt.block_on(reconciled(&mut events));
    assert_eq!(listed, n as u64);

    let client = common::http_client();
    let (mut pass, mut listing, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut remaining = n;
    let mut next_delete = 0usize;
    for _ in 0..runs {
        // 1 % deleted for good on the server; the pass is due again after its 1 s interval.
        let gone = (n / 100).max(1);
        for _ in 0..gone {
            server
                .delete_direct("posts", format!("rec-{next_delete:08}"))
                .expect("server delete");
            next_delete += 1;
        }
        remaining -= gone;
        std::thread::sleep(Duration::from_millis(1_100));

        let start = Instant::now();
        let report = rt.block_on(engine.pull(None)).expect("pull cycle");
        let cycle = secs(start);
        let (listed, deleted, listing_ms) = rt.block_on(reconciled(&mut events));
        assert_eq!(report.reconciled, gone as u64);
        assert_eq!((listed, deleted), (remaining as u64, gone as u64));
        pass.push(listed as f64 / cycle);
        listing.push(listed as f64 / (listing_ms.max(1) as f64 / 1000.0));

        let start = Instant::now();
        let ids = rt.block_on(raw_listing(&client, server.url(), page));
        let raw_secs = secs(start);
        assert_eq!(ids.len(), remaining);
        raw.push(ids.len() as f64 / raw_secs);
    }
    let (pass, listing, raw) = (median(&pass), median(&listing), median(&raw));
    println!(
        "  engine pass (pull + listing + deletes) {:>9} keys/s",
        thousands(pass)
    );
    println!(
        "  engine listing (Reconciled event)      {:>9} keys/s",
        thousands(listing)
    );
    println!(
        "  raw reqwest listing, same route        {:>9} keys/s",
        thousands(raw)
    );
    println!(
        "  ratio engine pass / raw listing        {:>9.2}   [{}]",
        pass / raw,
        common::machine_note()
    );
    engine.shutdown();
}
