//! Failure classification against injected faults.

use std::time::{Duration, Instant};

use serde_json::json;
use tidesync_core::{ErrorKind, Op, PullRequest, Transport};
use tidesync_testkit::server::{FaultKind, ReferenceServer, RetryAfter};
use tidesync_transport_rest::{Feed, Pagination, RestTransport, TableRoutes};

use crate::support::{push, seed, server};

fn routes() -> TableRoutes {
    TableRoutes::rest("/api/posts").pull(
        Feed::get("/api/posts")
            .query("limit", "{limit}")
            .items("/data")
            .pagination(Pagination::none().has_more("/hasMore")),
    )
}

fn fast(server: &ReferenceServer) -> RestTransport {
    RestTransport::builder(server.url())
        .request_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(800))
        .table("posts", routes())
        .build()
        .expect("valid")
}

fn create(id: &str) -> tidesync_core::PushRequest {
    push("posts", Op::Create, id, Some(json!({"id": id})))
}

fn pull() -> PullRequest {
    PullRequest {
        table: "posts".into(),
        cursor: None,
        page_size: 10,
    }
}

#[tokio::test]
async fn statuses_map_to_kinds_with_retry_after() -> anyhow::Result<()> {
    let server = server().await;
    let t = fast(&server);
    for (status, kind) in [
        (500, ErrorKind::Server),
        (502, ErrorKind::Server),
        (503, ErrorKind::Server),
        (408, ErrorKind::Server),
        (425, ErrorKind::Server),
        (429, ErrorKind::RateLimited),
        (400, ErrorKind::Permanent),
        (422, ErrorKind::Permanent),
        (401, ErrorKind::Auth),
        (403, ErrorKind::Auth),
    ] {
        server.fail_next(1, FaultKind::status(status));
        let err = t.push(create("s1")).await.expect_err("fault");
        assert_eq!(
            (err.kind(), err.http_status()),
            (kind, Some(status)),
            "{err}"
        );
        assert_eq!(err.retryable(), kind.retryable());
        assert_eq!(
            (err.table_name(), err.record_key()),
            (Some("posts"), Some("s1"))
        );
        assert!(
            err.response_excerpt()
                .is_some_and(|e| e.contains("injected"))
        );
    }
    for (ra, secs) in [
        (RetryAfter::Seconds(42), 42),
        (RetryAfter::HttpDate(90), 90),
    ] {
        server.fail_next(1, FaultKind::status_retry_after(429, ra));
        let err = t.push(create("s2")).await.expect_err("429");
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        let delay = err
            .retry_after_delay()
            .expect("Retry-After parsed")
            .as_secs();
        assert!(delay <= secs && delay + 3 >= secs, "{ra:?}: {delay}");
        server.fail_next(1, FaultKind::status_retry_after(503, ra));
        let err = t.pull(pull()).await.expect_err("503");
        assert_eq!(err.kind(), ErrorKind::Server);
        assert!(err.retry_after_delay().is_some());
    }
    Ok(())
}

#[tokio::test]
async fn a_hang_times_out_within_the_configured_bound() -> anyhow::Result<()> {
    let server = server().await;
    let t = fast(&server);
    for pulling in [false, true] {
        server.fail_next(1, FaultKind::Hang(Duration::from_secs(30)));
        let started = Instant::now();
        let err = if pulling {
            t.pull(pull()).await.expect_err("hang")
        } else {
            t.push(create("h1")).await.expect_err("hang")
        };
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.retryable());
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(2500),
            "{took:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn drops_and_refused_connections_are_retryable_network_errors() -> anyhow::Result<()> {
    let server = server().await;
    let t = fast(&server);
    server.fail_next(1, FaultKind::Drop);
    let err = t.push(create("d1")).await.expect_err("drop");
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    server.fail_next(1, FaultKind::Drop);
    assert_eq!(
        t.pull(pull()).await.expect_err("drop").kind(),
        ErrorKind::Network
    );

    // Nothing listening.
    let url = server.url().to_owned();
    drop(server);
    let gone = RestTransport::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .table("posts", routes())
        .build()?;
    let err = gone.push(create("d2")).await.expect_err("refused");
    assert!(
        matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout),
        "{err}"
    );
    assert!(err.retryable());
    Ok(())
}

#[tokio::test]
async fn commit_then_fail_is_retryable_and_the_retry_is_a_replay() -> anyhow::Result<()> {
    let server = server().await;
    let t = fast(&server);
    for (id, fault) in [
        ("c1", FaultKind::CommitThenStatus(500)),
        ("c2", FaultKind::CommitThenDrop),
    ] {
        server.fail_next(1, fault);
        let err = t.push(create(id)).await.expect_err("lost response");
        assert!(err.retryable(), "{err}");
        let ok = t.push(create(id)).await?;
        assert_eq!(ok.version.as_deref(), None, "no version field configured");
        assert_eq!(server.create_count("posts", id), 1);
    }
    assert_eq!(server.replay_count(), 2);
    Ok(())
}

#[tokio::test]
async fn malformed_bodies_are_decode_errors_with_an_excerpt() -> anyhow::Result<()> {
    let server = server().await;
    seed(&server, "posts", "m", 3);
    let t = fast(&server);
    server.fail_next(1, FaultKind::Malformed);
    let err = t.push(create("m9")).await.expect_err("malformed");
    assert_eq!(
        (err.kind(), err.record_key()),
        (ErrorKind::Decode, Some("m9"))
    );
    assert!(!err.retryable());
    assert!(err.response_excerpt().is_some_and(|e| !e.is_empty()));
    server.fail_next(1, FaultKind::Malformed);
    let err = t.pull(pull()).await.expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::Decode);
    let excerpt = err.response_excerpt().unwrap_or_default();
    assert!(
        excerpt.len() <= 512 + 40,
        "bounded excerpt: {}",
        excerpt.len()
    );
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_stop_at_the_limit() -> anyhow::Result<()> {
    let server = server().await;
    // Default limit (16 MiB) against the default 20 MiB oversized body.
    let t = RestTransport::builder(server.url())
        .table("posts", routes())
        .build()?;
    server.fail_next(1, FaultKind::oversized());
    let started = Instant::now();
    let err = t.pull(pull()).await.expect_err("oversized");
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(err.to_string().contains("max_response_bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A small limit: 2 MiB body, 64 KiB limit.
    let small = RestTransport::builder(server.url())
        .max_response_bytes(64 * 1024)
        .table("posts", routes())
        .build()?;
    server.fail_next(1, FaultKind::Oversized(2 * 1024 * 1024));
    let err = small.push(create("o1")).await.expect_err("oversized");
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(err.response_excerpt().is_none_or(|e| e.len() < 1024));
    Ok(())
}
