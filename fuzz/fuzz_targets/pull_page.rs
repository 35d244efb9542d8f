//! A pull response body of any bytes: decoded as the REST transport does (JSON, the item list
//! at `/data`, `pagination::advance` with the first byte choosing filter and feed kind), then
//! applied with `RemoteChanges::apply_pull_page` to a memory store. Must never panic; whatever the
//! transport hands over must apply (bad items are quarantined, not errors).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidesync_core::local::{LocalDb, RemoteMeta, Schema};
use tidesync_core::{HybridClock, PullPage, Store, TableSpec};
use tidesync_store_memory::MemoryStore;
use tidesync_transport_rest::cursor::TableCursor;
use tidesync_transport_rest::pagination::{FeedCtx, Params, RawPage, advance};
use tidesync_transport_rest::{Feed, Filter, Pagination, TimeFormat};

fuzz_target!(|data: &[u8]| {
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return; // the transport turns this into a Decode error
    };
    let filter = [
        Filter::Keyset,
        Filter::Inclusive,
        Filter::Exclusive,
        Filter::None,
    ][usize::from(options & 3)];
    let pagination = match (options >> 2) & 3 {
        0 => Pagination::none().has_more("/hasMore"),
        1 => Pagination::offset().total("/total"),
        2 => Pagination::token("/next"),
        _ => Pagination::page(1),
    };
    let feed = Feed::get("/api/posts")
        .query("limit", "{limit}")
        .query("after", "{cursor}")
        .items("/data")
        .cursor_field(
            "updatedAt",
            if options & 16 == 0 {
                TimeFormat::EpochMs
            } else {
                TimeFormat::Rfc3339
            },
        )
        .filter(filter)
        .pagination(pagination)
        .tombstone("deleted");
    let ctx = FeedCtx {
        feed: &feed,
        table: "posts",
        key_field: "id",
        deletes_only: options & 32 != 0,
    };
    // A stored cursor of any shape loads or is refused.
    let state = TableCursor::load("posts", body.get("cursor"))
        .map(|c| c.changes)
        .unwrap_or_default();
    let items = match body.get("data") {
        Some(Value::Array(items)) => items.clone(),
        _ => return,
    };
    let raw = RawPage {
        items,
        has_more: body.get("hasMore").and_then(Value::as_bool),
        total: body.get("total").and_then(Value::as_u64),
        next_token: body.get("next").cloned(),
        ..RawPage::default()
    };
    let params = Params {
        limit: 10,
        ..Params::default()
    };
    let Ok(step) = advance(&ctx, &state, &params, raw) else {
        return;
    };
    let db = LocalDb::new(
        Schema::new([TableSpec::new("posts").index("rank")]).unwrap(),
        Arc::new(HybridClock::new()),
    );
    let store = MemoryStore::new();
    let page = PullPage {
        records: step.records,
        deleted: step.deleted,
        cursor: serde_json::to_value(&step.state).ok(),
        has_more: step.more,
        ..PullPage::default()
    };
    let mut txn = store.write().unwrap();
    db.remote().apply_pull_page(&mut *txn, "posts", &page, &|_| RemoteMeta::default())
        .expect("a page the transport accepted applies");
    txn.commit().unwrap();
});
