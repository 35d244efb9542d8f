//! Pull feeds: every filter syntax, pagination style, end signal and tombstone style of the
//! reference server, with ties at page boundaries, resumption and the repeat guard.

use std::time::Duration;

use serde_json::json;
use tidesync_core::{ErrorKind, PullRequest, Transport};
use tidesync_testkit::server::{CollectionConfig, FaultKind, ReferenceServer, TimestampFormat};
use tidesync_transport_rest::{Feed, Filter, Pagination, RestTransport, TableRoutes, TimeFormat};

use crate::support::{drain, seed, server, transport};

const T: &str = "items";

fn base() -> Feed {
    Feed::get("/api/items").cursor_field("updatedAt", TimeFormat::EpochMs)
}

/// The feeds under test, by name.
fn feeds() -> Vec<(&'static str, Feed)> {
    vec![
        (
            "updated_after (exclusive) + limit, envelope, hasMore",
            base()
                .query("updated_after", "{cursor}")
                .query("limit", "{limit}")
                .items("/data")
                .filter(Filter::Exclusive)
                .pagination(Pagination::none().has_more("/hasMore"))
                .tombstone("deleted"),
        ),
        (
            "updatedAt_gte (inclusive) + limit, bare array, short page",
            base()
                .query("updatedAt_gte", "{cursor}")
                .query("limit", "{limit}")
                .query("envelope", "none")
                .filter(Filter::Inclusive)
                .tombstone("deleted"),
        ),
        (
            "updated_at=gt. + limit/offset, deleted-ids feed",
            base()
                .query("updated_at", "gt.{cursor}")
                .query("limit", "{limit}")
                .query("offset", "{offset}")
                .query("envelope", "none")
                .query("tombstones", "exclude")
                .filter(Filter::Exclusive)
                .pagination(Pagination::offset())
                .deleted_feed(
                    Feed::get("/api/items/deleted")
                        .query("since", "{cursor}")
                        .query("limit", "{limit}")
                        .items("/data")
                        .cursor_field("deletedAt", TimeFormat::EpochMs)
                        .filter(Filter::Exclusive)
                        .pagination(Pagination::none().has_more("/hasMore")),
                ),
        ),
        (
            "since=<RFC 3339> + page/per_page, total",
            base()
                .query("since", "{cursor}")
                .query("page", "{page}")
                .query("per_page", "{limit}")
                .items("/data")
                .cursor_format(TimeFormat::Rfc3339)
                .filter(Filter::Exclusive)
                .pagination(Pagination::page(1).total("/total"))
                .tombstone("deleted"),
        ),
        (
            "filter=(updated > '…') + nextCursor token",
            base()
                .query("filter", "(updated > '{cursor}')")
                .query("cursor", "{token}")
                .query("limit", "{limit}")
                .items("/data")
                .filter(Filter::Exclusive)
                .pagination(Pagination::token("/nextCursor"))
                .tombstone("deleted"),
        ),
        (
            "updated_after + Link rel=next",
            base()
                .query("updated_after", "{cursor}")
                .query("limit", "{limit}")
                .items("/data")
                .filter(Filter::Exclusive)
                .pagination(Pagination::link())
                .tombstone("deleted"),
        ),
        (
            "keyset after_updated/after_id",
            base()
                .query("after_updated", "{cursor}")
                .query("after_id", "{after_key}")
                .query("limit", "{limit}")
                .items("/data")
                .filter(Filter::Keyset)
                .pagination(Pagination::none().has_more("/hasMore"))
                .tombstone("deleted"),
        ),
    ]
}

/// Seeds 3 groups of records sharing timestamps (4, 7 and 3 records).
fn seed_ties(server: &ReferenceServer) -> std::collections::BTreeSet<String> {
    let t0 = server.now_ms();
    let mut all = std::collections::BTreeSet::new();
    for (i, n) in [4usize, 7, 3].into_iter().enumerate() {
        server.freeze_clock(Some(t0 + i as i64));
        all.extend(seed(server, T, &format!("g{i}-"), n));
    }
    server.freeze_clock(None);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_style_is_gap_free_and_incremental() -> anyhow::Result<()> {
    for (name, feed) in feeds() {
        let server = server().await;
        let all = seed_ties(&server);
        let t = transport(&server, T, TableRoutes::new().pull(feed));
        for page_size in [3, 5] {
            let first = drain(&t, T, None, page_size).await?;
            assert_eq!(first.changed_set(), all, "{name}, page size {page_size}");
            assert_eq!(
                first.changed.len(),
                all.len(),
                "{name}, page size {page_size}: duplicates {:?}",
                first.changed
            );
            assert!(first.pages.len() > 1, "{name}: paged");
            let again = drain(&t, T, first.cursor.clone(), page_size).await?;
            assert!(
                again.changed.is_empty() && again.deleted.is_empty(),
                "{name}: caught up, got {again:?}"
            );
        }
        let cursor = drain(&t, T, None, 4).await?.cursor;
        tokio::time::sleep(Duration::from_millis(3)).await;
        server.update_direct(T, "g1-002", json!({"n": 99}))?;
        server.delete_direct(T, "g2-000")?;
        server.insert_direct(T, json!({"id": "late"}))?;
        let next = drain(&t, T, cursor, 4).await?;
        let mut changed = next.changed.clone();
        changed.sort();
        assert_eq!(changed, ["g1-002", "late"], "{name}");
        assert_eq!(next.deleted, ["g2-000"], "{name}");
        if name.contains("total") {
            assert_eq!(next.pages.last().and_then(|p| p.total), Some(3), "{name}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn rfc3339_and_epoch_second_timestamps() -> anyhow::Result<()> {
    for (format, wire) in [
        (TimestampFormat::Rfc3339, TimeFormat::Rfc3339),
        (TimestampFormat::EpochSeconds, TimeFormat::EpochS),
    ] {
        let server = ReferenceServer::builder()
            .without_auth()
            .collection(T, CollectionConfig::default().timestamps(format))
            .start()
            .await;
        // Epoch seconds: all of these share one or two timestamps.
        let all = seed(&server, T, "r", 20);
        for filter in [Filter::Inclusive, Filter::Exclusive] {
            let query = if filter == Filter::Inclusive {
                ("updatedAt_gte", "{cursor}")
            } else {
                ("updated_after", "{cursor}")
            };
            let feed = Feed::get("/api/items")
                .query(query.0, query.1)
                .query("limit", "{limit}")
                .items("/data")
                .cursor_field("updatedAt", wire)
                .filter(filter);
            let t = transport(&server, T, TableRoutes::new().pull(feed));
            let got = drain(&t, T, None, 3).await?;
            assert_eq!(got.changed_set(), all, "{format:?} {filter:?}");
            let again = drain(&t, T, got.cursor, 3).await?;
            assert!(again.changed.is_empty(), "{format:?} {filter:?}: {again:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn offset_and_token_walks_resume_after_a_crash() -> anyhow::Result<()> {
    let server = server().await;
    let all = seed(&server, T, "c", 11);
    let feeds = [
        base()
            .query("updated_after", "{cursor}")
            .query("limit", "{limit}")
            .query("offset", "{offset}")
            .items("/data")
            .filter(Filter::Exclusive)
            .pagination(Pagination::offset()),
        base()
            .query("updated_after", "{cursor}")
            .query("cursor", "{token}")
            .query("limit", "{limit}")
            .items("/data")
            .filter(Filter::Exclusive)
            .pagination(Pagination::token("/nextCursor")),
    ];
    for feed in feeds {
        let routes = TableRoutes::new().pull(feed);
        let before = transport(&server, T, routes.clone());
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..2 {
            let page = before
                .pull(PullRequest {
                    table: T.into(),
                    cursor: cursor.clone(),
                    page_size: 3,
                })
                .await?;
            assert!(page.has_more);
            seen.extend(page.records.iter().map(|r| r["id"].to_string()));
            cursor = page.cursor;
        }
        drop(before);
        // The stored cursor says which page comes next.
        let stored: serde_json::Value = serde_json::from_str(&serde_json::to_string(&cursor)?)?;
        assert!(stored["changes"]["pass"].is_object(), "{stored}");
        let after = transport(&server, T, routes);
        let rest = drain(&after, T, Some(stored), 3).await?;
        seen.extend(rest.changed.iter().map(|id| format!("\"{id}\"")));
        let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), all.len());
        assert_eq!(seen.len(), all.len(), "no page applied twice");
    }
    Ok(())
}

#[tokio::test]
async fn a_server_repeating_its_page_is_an_error_not_a_loop() -> anyhow::Result<()> {
    let server = server().await;
    seed(&server, T, "p", 6);
    let feeds = [
        base()
            .query("cursor", "{token}")
            .query("limit", "{limit}")
            .items("/data")
            .pagination(Pagination::token("/nextCursor")),
        base()
            .query("limit", "{limit}")
            .items("/data")
            .pagination(Pagination::link()),
        base()
            .query("limit", "{limit}")
            .query("offset", "{offset}")
            .items("/data")
            .pagination(Pagination::offset().has_more("/hasMore")),
        base()
            .query("updated_after", "{cursor}")
            .query("limit", "{limit}")
            .items("/data")
            .filter(Filter::Exclusive)
            .pagination(Pagination::none().has_more("/hasMore")),
    ];
    for feed in feeds {
        let t = transport(&server, T, TableRoutes::new().pull(feed.clone()));
        server.fail_next(50, FaultKind::RepeatPage);
        let err = drain(&t, T, None, 2).await.expect_err("repeat page");
        let err = err
            .downcast_ref::<tidesync_core::Error>()
            .unwrap_or_else(|| panic!("{err}"));
        assert_eq!(
            err.kind(),
            ErrorKind::Permanent,
            "{:?}: {err}",
            feed.pagination.style
        );
        assert_eq!(err.table_name(), Some(T));
        server.clear_faults();
    }
    Ok(())
}

#[tokio::test]
async fn relative_links_are_followed_and_stored_links_are_not() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(T, CollectionConfig::default().relative_links(true))
        .start()
        .await;
    let all = seed(&server, T, "l", 7);
    let feed = base()
        .query("limit", "{limit}")
        .items("/data")
        .pagination(Pagination::link());
    let t = transport(&server, T, TableRoutes::new().pull(feed));
    let got = drain(&t, T, None, 2).await?;
    assert_eq!(got.changed_set(), all);
    assert_eq!(got.pages.len(), 4);

    // A stored link (written by an older version) is never followed: the walk starts again
    // from the checkpoint's filter value, and no URL is stored again.
    let evil =
        json!({"v": 1, "changes": {"pass": {"next": "http://evil.example/steal", "limit": 2}}});
    let again = drain(&t, T, Some(evil), 2).await?;
    assert_eq!(again.changed_set(), all);
    for page in &again.pages {
        let stored = page
            .cursor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(!stored.contains("http"), "{stored}");
    }
    Ok(())
}

#[tokio::test]
async fn a_foreign_or_corrupt_cursor_is_rejected_clearly() -> anyhow::Result<()> {
    let server = server().await;
    let t = RestTransport::builder(server.url())
        .table(T, TableRoutes::rest("/api/items"))
        .build()?;
    let err = t
        .pull(PullRequest {
            table: T.into(),
            cursor: Some(json!("opaque-from-another-transport")),
            page_size: 2,
        })
        .await
        .expect_err("foreign cursor");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("reset"), "{err}");
    Ok(())
}

#[tokio::test]
async fn item_lists_that_are_not_arrays_are_decode_errors() -> anyhow::Result<()> {
    let server = server().await;
    seed(&server, T, "x", 2);
    // The envelope is an object; pointing at `/total` finds a number.
    let t = transport(
        &server,
        T,
        TableRoutes::new().pull(base().query("limit", "{limit}").items("/total")),
    );
    let err = drain(&t, T, None, 5).await.expect_err("not an array");
    let err = err
        .downcast_ref::<tidesync_core::Error>()
        .expect("core error");
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(
        err.response_excerpt()
            .is_some_and(|e| e.contains("\"data\""))
    );
    Ok(())
}
