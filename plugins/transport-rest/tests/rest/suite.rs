//! The testkit's transport conformance suite, run with three differently-shaped route sets.

use std::sync::Arc;
use std::time::Duration;

use tidesync_core::Transport;
use tidesync_testkit::transport_suite;
use tidesync_transport_rest::{
    Feed, FetchRoute, Filter, Pagination, RestTransport, TableRoutes, TimeFormat, WriteRoute,
};

fn build(base_url: &str, table: &str, routes: TableRoutes) -> Arc<dyn Transport> {
    Arc::new(
        RestTransport::builder(base_url)
            .request_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .table(table, routes)
            .build()
            .expect("valid routes"),
    )
}

/// json-server-like: PUT full records with a body version, `updatedAt_gte` (inclusive) on a
/// bare array, tombstone flag.
fn json_server_like(base_url: &str, table: &str) -> Arc<dyn Transport> {
    let collection = format!("/api/{table}");
    let routes = TableRoutes::rest(&collection)
        .version_field("version")
        .pull(
            Feed::get(&collection)
                .query("updatedAt_gte", "{cursor}")
                .query("limit", "{limit}")
                .query("envelope", "none")
                .cursor_field("updatedAt", TimeFormat::EpochMs)
                .filter(Filter::Inclusive)
                .tombstone("deleted"),
        );
    build(base_url, table, routes)
}

/// PostgREST-like: ids in the query string, PATCH with changed fields and `If-Match`,
/// `updated_at=gt.` with limit/offset pages, a separate deleted-ids feed.
fn postgrest_like(base_url: &str, table: &str) -> Arc<dyn Transport> {
    let collection = format!("/api/{table}");
    let by_id = format!("{collection}?id=eq.{{id}}");
    let routes = TableRoutes::new()
        .create(WriteRoute::post(&collection))
        .update(WriteRoute::patch(&by_id))
        .delete(WriteRoute::delete(&by_id))
        .fetch(FetchRoute::get(&format!(
            "{collection}?id=eq.{{id}}&envelope=none"
        )))
        .etag()
        .version_field("version")
        .pull(
            Feed::get(&collection)
                .query("updated_at", "gt.{cursor}")
                .query("limit", "{limit}")
                .query("offset", "{offset}")
                .query("envelope", "none")
                .query("tombstones", "exclude")
                .cursor_field("updatedAt", TimeFormat::EpochMs)
                .filter(Filter::Exclusive)
                .pagination(Pagination::offset())
                .deleted_feed(
                    Feed::get(&format!("{collection}/deleted"))
                        .query("since", "{cursor}")
                        .query("limit", "{limit}")
                        .items("/data")
                        .cursor_field("deletedAt", TimeFormat::EpochMs)
                        .filter(Filter::Exclusive),
                ),
        );
    build(base_url, table, routes)
}

/// Envelope + keyset: `{"data": [..], "hasMore": ..}` walked by `(updatedAt, id)`.
fn keyset_envelope(base_url: &str, table: &str) -> Arc<dyn Transport> {
    let collection = format!("/api/{table}");
    let routes = TableRoutes::rest(&collection)
        .version_field("version")
        .pull(
            Feed::get(&collection)
                .query("after_updated", "{cursor}")
                .query("after_id", "{after_key}")
                .query("limit", "{limit}")
                .items("/data")
                .cursor_field("updatedAt", TimeFormat::EpochMs)
                .filter(Filter::Keyset)
                .pagination(Pagination::none().has_more("/hasMore").total("/total"))
                .tombstone("deleted"),
        );
    build(base_url, table, routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_json_server_like() {
    transport_suite::run_all(&json_server_like).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgrest_like() {
    transport_suite::run_all(&postgrest_like).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_keyset_envelope() {
    transport_suite::run_all(&keyset_envelope).await;
}
