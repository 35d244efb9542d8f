//! Initial sync per pagination style, with the next page fetched while the current one is
//! applied (`pull_prefetch = true`, the default) and without (one request at a time), next
//! to a raw "fetch a page with reqwest, insert it into redb, fetch the next" client.
//!
//! Run: `cargo bench --bench pull_overlap` (release): 100 000 records.
//!
//! Every style can overlap: the next request depends only on the page's answer (a token, a
//! link, a page number, an offset) or, when re-filtering, on the page's last cursor value,
//! which is known before the page is applied. A checkpoint still commits only with its own
//! page. Styles measured against the reference server:
//! - `keyset`: `after_updated`/`after_id` re-filtering (style `none`, filter `keyset`);
//! - `token`: `cursor=<nextCursor>` (filter `exclusive` on `updated_after`);
//! - `page`: `page`/`per_page` (filter `inclusive` on `updatedAt_gte`);
//! - `link`: `Link: rel="next"` (filter `exclusive` on `updated_after`);
//! - `offset`: `limit`/`offset` (one item of overlap per page to prove continuity).
//!
//! Each measurement is a fresh engine on a fresh redb file, in this process (the server runs
//! on its own threads); medians of `TIDESYNC_BENCH_RUNS` (default 3), on and off alternating.
//!
//! Env: `TIDESYNC_BENCH_RUNS`, `TIDESYNC_BENCH_SYNC_RECORDS` (default 100000),
//! `TIDESYNC_BENCH_PAGE` (default 1000, the server's largest page).

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use serde_json::Value;
use tidesync::{Engine, RedbStore, SyncSettings};
use tidesync_store_redb::DEFAULT_CACHE_SIZE;
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::{Feed, Filter, Pagination, RestTransport, TableRoutes, TimeFormat};

use common::{median, record, secs, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// The change feed of `posts` in one pagination style.
fn feed(style: &str) -> Feed {
    let base = Feed::get("/api/posts")
        .items("/data")
        .cursor_field("updatedAt", TimeFormat::EpochMs);
    match style {
        "keyset" => base
            .query("after_updated", "{cursor}")
            .query("after_id", "{after_key}")
            .query("limit", "{limit}")
            .filter(Filter::Keyset)
            .pagination(Pagination::none().has_more("/hasMore")),
        "token" => base
            .query("updated_after", "{cursor}")
            .query("cursor", "{token}")
            .query("limit", "{limit}")
            .filter(Filter::Exclusive)
            .pagination(Pagination::token("/nextCursor").has_more("/hasMore")),
        "page" => base
            .query("updatedAt_gte", "{cursor}")
            .query("page", "{page}")
            .query("per_page", "{limit}")
            .filter(Filter::Inclusive)
            .pagination(Pagination::page(1).has_more("/hasMore")),
        "link" => base
            .query("updated_after", "{cursor}")
            .query("limit", "{limit}")
            .filter(Filter::Exclusive)
            .pagination(Pagination::link().has_more("/hasMore")),
        _ => base
            .query("updated_after", "{cursor}")
            .query("limit", "{limit}")
            .query("offset", "{offset}")
            .filter(Filter::Exclusive)
            .pagination(Pagination::offset().has_more("/hasMore")),
    }
}

/// One initial sync of `n` records by a fresh engine; seconds.
fn engine_sync(
    rt: &tokio::runtime::Runtime,
    url: &str,
    style: &str,
    n: usize,
    page: usize,
    prefetch: bool,
) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let transport = RestTransport::builder(url)
        .table(
            "posts",
            TableRoutes::rest("/api/posts")
                .version_field("version")
                .pull(feed(style)),
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
            pull_prefetch: prefetch,
            ..common::manual_settings()
        })
        .start()
        .expect("engine");
    let posts = engine.table::<Value>("posts").expect("table");
    let start = Instant::now();
    let report = rt.block_on(engine.pull(None)).expect("pull");
    let elapsed = secs(start);
    assert!(report.converged, "{style}: {report:?}");
    assert_eq!(
        rt.block_on(posts.count()).expect("count"),
        n as u64,
        "{style}"
    );
    engine.shutdown();
    elapsed
}

/// Raw: keyset GETs, each page inserted into redb in one durable transaction before the next
/// request; seconds.
fn raw_sync(rt: &tokio::runtime::Runtime, url: &str, n: usize, page: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = common::http_client();
    let db = Database::builder()
        .set_cache_size(DEFAULT_CACHE_SIZE)
        .create(dir.path().join("raw.redb"))
        .expect("create");
    let start = Instant::now();
    let mut records = 0usize;
    let mut cursor: Option<(String, String)> = None;
    rt.block_on(async {
        loop {
            let (items, has_more) = common::raw_keyset_page(&client, url, page, &mut cursor).await;
            let mut txn = db.begin_write().expect("begin");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for item in &items {
                    let key = item["id"].as_str().expect("string id");
                    let value = serde_json::to_vec(item).expect("json");
                    table
                        .insert(key.as_bytes(), value.as_slice())
                        .expect("insert");
                }
            }
            txn.commit().expect("commit");
            records += items.len();
            if !has_more {
                break;
            }
        }
    });
    let elapsed = secs(start);
    assert_eq!(records, n);
    elapsed
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_SYNC_RECORDS", 100_000, 1_000);
    let page = common::env_usize("TIDESYNC_BENCH_PAGE", 1000, 100);
    println!(
        "pull_overlap: {} records, page size {page}, median of {runs} runs{}",
        thousands(n as f64),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );
    let server = ReferenceServer::start_background();
    let start = Instant::now();
    for i in 0..n {
        server.insert_direct("posts", record(i)).expect("fill");
    }
    println!("  server filled with insert_direct in {:.2} s", secs(start));
    let rt = common::runtime();

    let raw: Vec<f64> = (0..runs)
        .map(|_| raw_sync(&rt, server.url(), n, page))
        .collect();
    let raw = median(&raw);
    println!(
        "  raw reqwest + redb (keyset, sequential) {raw:>6.2} s  {:>8} records/s",
        thousands(n as f64 / raw)
    );
    println!("  style     prefetch off            prefetch on (default)    on/off   on vs raw");
    for style in ["keyset", "token", "page", "link", "offset"] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for run in 0..runs {
            if run % 2 == 0 {
                off.push(engine_sync(&rt, server.url(), style, n, page, false));
                on.push(engine_sync(&rt, server.url(), style, n, page, true));
            } else {
                on.push(engine_sync(&rt, server.url(), style, n, page, true));
                off.push(engine_sync(&rt, server.url(), style, n, page, false));
            }
        }
        let (off, on) = (median(&off), median(&on));
        println!(
            "  {style:<8} {off:>6.2} s {:>8} rec/s   {on:>6.2} s {:>8} rec/s   {:>5.2}x   {:>5.2}",
            thousands(n as f64 / off),
            thousands(n as f64 / on),
            off / on,
            raw / on
        );
    }
    println!("  [{}]", common::machine_note());
}
