//! Every fault kind, observed from the client side, plus filters and seed determinism.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};
use tidesync_testkit::server::{
    FaultFilter, FaultKind, Faults, Latency, ReferenceServer, RetryAfter,
};

use crate::{Api, client, client_with_timeout, send};

#[tokio::test]
async fn error_statuses_with_retry_after_in_both_forms() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());

    server.fail_next(
        1,
        FaultKind::status_retry_after(503, RetryAfter::Seconds(2)),
    );
    let r = api.post("/api/e", &json!({"id": "a"})).await?;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(r.body["error"].is_string());
    assert!(
        server.record("e", "a").is_none(),
        "an error fault does not apply the write"
    );

    server.fail_next(
        1,
        FaultKind::status_retry_after(429, RetryAfter::HttpDate(30)),
    );
    let r = api.get("/api/e").await?;
    assert_eq!(r.status, 429);
    let when = httpdate::parse_http_date(r.header("retry-after").unwrap_or_default())?;
    let ahead = when.duration_since(SystemTime::now())?;
    assert!(
        ahead > Duration::from_secs(25) && ahead <= Duration::from_secs(31),
        "{ahead:?}"
    );

    for status in [500, 502] {
        server.fail_next(1, FaultKind::status(status));
        let r = api.get("/api/e").await?;
        assert_eq!(r.status, status);
        assert!(r.header("retry-after").is_none());
        assert!(r.header("date").is_some());
    }
    assert_eq!(
        api.get("/api/e").await?.status,
        200,
        "one-shots are used up"
    );
    let log = server.request_log();
    assert_eq!(log[0].fault.as_deref(), Some("status 503"));
    assert_eq!(log[0].status, Some(503));
    assert_eq!(server.faults_injected(), 4);
    Ok(())
}

#[tokio::test]
async fn dropped_connection_is_a_connection_error() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    assert_eq!(
        api.get("/api/d").await?.status,
        200,
        "warm up a pooled connection"
    );

    server.fail_next(1, FaultKind::Drop);
    let err = api
        .post("/api/d", &json!({"id": "a"}))
        .await
        .expect_err("no response on a dropped connection");
    let err = err.downcast::<reqwest::Error>()?;
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    assert!(
        server.record("d", "a").is_none(),
        "a dropped request is not applied"
    );

    // Also on a brand-new connection, and the server keeps serving.
    server.fail_next(1, FaultKind::Drop);
    assert!(Api::new(server.url()).get("/api/d").await.is_err());
    assert_eq!(api.post("/api/d", &json!({"id": "a"})).await?.status, 201);
    let log = server.request_log();
    let dropped: Vec<_> = log
        .iter()
        .filter(|e| e.fault.as_deref() == Some("drop"))
        .collect();
    assert_eq!(dropped.len(), 2);
    assert!(dropped.iter().all(|e| e.status.is_none()));
    Ok(())
}

#[tokio::test]
async fn hang_outlasts_the_client_timeout() -> Result<()> {
    let server = ReferenceServer::start().await;
    let impatient = Api::with_client(
        server.url(),
        client_with_timeout(Duration::from_millis(300)),
    );
    server.fail_next(1, FaultKind::hang());
    let started = Instant::now();
    let err = impatient
        .post("/api/h", &json!({"id": "a"}))
        .await
        .expect_err("the client gives up");
    let err = err.downcast::<reqwest::Error>()?;
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still serves others while one request hangs.
    assert_eq!(Api::new(server.url()).get("/api/h").await?.status, 200);
    assert!(
        server.record("h", "a").is_none(),
        "not applied before the hang ends"
    );
    assert_eq!(server.request_log()[0].fault.as_deref(), Some("hang"));
    Ok(())
}

#[tokio::test]
async fn commit_then_fail_applies_and_a_keyed_retry_replays() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let create = || {
        api.req(Method::POST, "/api/c")
            .header("idempotency-key", "create-a")
            .json(&json!({"id": "a", "n": 1}))
    };

    server.fail_next_where(FaultFilter::writes(), 1, FaultKind::CommitThenDrop);
    assert!(send(create()).await.is_err(), "the client sees no response");
    let stored = server
        .record("c", "a")
        .expect("committed although the client saw an error");
    let retry = send(create()).await?;
    assert_eq!(retry.status, 201, "the original response, not 409 exists");
    assert_eq!(retry.body, stored);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(server.create_count("c", "a"), 1);

    let patch = || {
        api.req(Method::PATCH, "/api/c/a")
            .header("idempotency-key", "patch-a")
            .json(&json!({"n": 2}))
    };
    server.fail_next(1, FaultKind::CommitThenStatus(503));
    assert_eq!(send(patch()).await?.status, 503);
    assert_eq!(
        server.record("c", "a").map(|r| r["n"].clone()),
        Some(json!(2))
    );
    let retry = send(patch()).await?;
    assert_eq!(
        (retry.status, retry.body["version"].clone()),
        (200, json!(2))
    );
    assert_eq!(server.replay_count(), 2);

    // Without a key, a retried create meets its own first attempt.
    server.fail_next(1, FaultKind::CommitThenStatus(500));
    assert_eq!(api.post("/api/c", &json!({"id": "b"})).await?.status, 500);
    let dup = api.post("/api/c", &json!({"id": "b"})).await?;
    assert_eq!(
        (dup.status, dup.body["error"].clone()),
        (409, json!("exists"))
    );
    let log = server.request_log();
    assert_eq!(log[0].fault.as_deref(), Some("commit-then-drop"));
    assert_eq!(log[0].status, None);
    // The log still tells what the handler did behind the fault.
    assert_eq!(log[0].handler_status, Some(201));
    assert!(
        log[0].applied_fresh(),
        "applied, although the client saw nothing"
    );
    assert!(!log[1].applied_fresh(), "the retry was a replay");
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversized_bodies() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    server.insert_direct("m", json!({"id": "a"}))?;

    server.fail_next(1, FaultKind::Malformed);
    let r = api.get("/api/m").await?;
    assert_eq!(r.status, 200);
    assert!(!r.text.is_empty());
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "truncated: {}",
        r.text
    );

    server.fail_next(1, FaultKind::Malformed);
    let r = api.post("/api/m", &json!({"id": "b"})).await?;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    assert!(server.record("m", "b").is_some(), "the write was applied");

    server.fail_next(1, FaultKind::Malformed);
    let r = api.delete("/api/m/b").await?;
    assert_eq!(r.status, 200, "even a 204 becomes a garbled 200");
    assert!(serde_json::from_str::<Value>(&r.text).is_err());

    // A refused write under a garbled 200 was not applied, and the log says so.
    server.fail_next(1, FaultKind::Malformed);
    let r = api.post("/api/m", &json!({"id": "a"})).await?;
    assert_eq!(r.status, 200);
    let refused = server.request_log().pop().expect("logged");
    assert_eq!(refused.handler_status, Some(409));
    assert!(!refused.applied_fresh());

    server.fail_next(1, FaultKind::oversized());
    let r = api.get("/api/m").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.text.len(), 20 * 1024 * 1024);
    assert!(r.body.is_object(), "oversized but valid JSON");
    Ok(())
}

#[tokio::test]
async fn a_pull_page_that_repeats_forever() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    for i in 0..5 {
        server.insert_direct("r", json!({ "id": i }))?;
    }
    server.fail_next_where(FaultFilter::path("/api/r"), 6, FaultKind::RepeatPage);
    // A non-pull request is neither affected nor consumes a one-shot.
    assert_eq!(api.get("/api/r/1").await?.status, 200);

    let first = api.get("/api/r?limit=2").await?;
    assert_eq!(first.body["hasMore"], true);
    let cursor = first.body["nextCursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!cursor.is_empty());
    let link = first.header("link").map(str::to_owned);
    assert!(link.is_some());
    let mut q = format!("limit=2&cursor={cursor}");
    for _ in 0..3 {
        let r = api.get(&format!("/api/r?{q}")).await?;
        assert_eq!(r.body, first.body, "the same page again");
        assert_eq!(r.header("link").map(str::to_owned), link);
        q = format!(
            "limit=2&cursor={}",
            r.body["nextCursor"].as_str().unwrap_or_default()
        );
    }
    // A keyset client that advances gets the same page too.
    let r = api
        .get("/api/r?limit=2&after_updated=99999999999999&after_id=3")
        .await?;
    assert_eq!(r.body, first.body);
    // Bare arrays repeat as well (it is the same memoized response).
    let r = api.get("/api/r?limit=2&envelope=none").await?;
    assert_eq!(r.body, first.body);
    assert_eq!(server.pending_faults(), 0);
    // After the fault, the repeated cursor is a valid one: it leads to the real first page.
    let r = api.get(&format!("/api/r?{q}")).await?;
    assert_eq!(r.body["data"], first.body["data"]);
    assert_ne!(r.body["nextCursor"], first.body["nextCursor"]);
    let rest = api
        .get(&format!(
            "/api/r?limit=9&cursor={}",
            r.body["nextCursor"].as_str().unwrap_or_default()
        ))
        .await?;
    assert_eq!(rest.body["data"].as_array().map(Vec::len), Some(3));

    // As a random rule at rate 1 for pulls only.
    server.set_faults(
        Faults::none()
            .filter(FaultFilter::reads())
            .rule(1.0, FaultKind::RepeatPage),
    );
    let a = api.get("/api/r?limit=1").await?;
    let b = api.get("/api/r?limit=1&offset=3").await?;
    assert_eq!(a.body, b.body);
    assert_eq!(api.get("/api/r/4").await?.status, 200);
    server.clear_faults();
    let c = api.get("/api/r?limit=1&offset=3").await?;
    assert_ne!(c.body, a.body);
    Ok(())
}

#[tokio::test]
async fn latency_fixed_and_ranged() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    server.set_faults(Faults::none().latency(Latency::Fixed(Duration::from_millis(150))));
    let t = Instant::now();
    assert_eq!(api.get("/api/l").await?.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    server.set_faults(Faults::none().latency(Latency::Range(
        Duration::from_millis(40),
        Duration::from_millis(80),
    )));
    for _ in 0..3 {
        let t = Instant::now();
        api.get("/api/l").await?;
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
    server.fail_next(1, FaultKind::Delay(Duration::from_millis(100)));
    server.clear_faults();
    let t = Instant::now();
    api.get("/api/l").await?;
    assert!(t.elapsed() < Duration::from_millis(40), "cleared");
    server.fail_next(1, FaultKind::Delay(Duration::from_millis(100)));
    let t = Instant::now();
    assert_eq!(api.post("/api/l", &json!({"id": 1})).await?.status, 201);
    assert!(t.elapsed() >= Duration::from_millis(100));
    Ok(())
}

#[tokio::test]
async fn filters_target_pushes_or_pulls() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    server.set_faults(
        Faults::none()
            .filter(FaultFilter::writes().under("/api/push"))
            .errors(1.0, 500, None),
    );
    assert_eq!(api.get("/api/push").await?.status, 200);
    assert_eq!(api.post("/api/push", &json!({})).await?.status, 500);
    assert_eq!(api.post("/api/other", &json!({})).await?.status, 201);
    server.clear_faults();

    server.fail_next_where(FaultFilter::reads(), 2, FaultKind::status(502));
    assert_eq!(api.post("/api/push", &json!({"id": 1})).await?.status, 201);
    assert_eq!(api.get("/api/push").await?.status, 502);
    assert_eq!(api.put("/api/push/1", &json!({})).await?.status, 200);
    assert_eq!(api.get("/api/push/1").await?.status, 502);
    assert_eq!(api.get("/api/push/1").await?.status, 200);

    server.fail_next_where(FaultFilter::method("DELETE"), 1, FaultKind::Drop);
    assert_eq!(api.patch("/api/push/1", &json!({})).await?.status, 200);
    assert!(api.delete("/api/push/1").await.is_err());
    assert!(server.record("push", 1).is_some());
    Ok(())
}

/// Runs the same 40 requests and describes what the client saw.
async fn fault_pattern(base: &str) -> Result<Vec<String>> {
    let api = Api::with_client(base, client());
    let mut out = Vec::new();
    for i in 0..40 {
        let r = if i % 3 == 0 {
            api.get("/api/det").await
        } else {
            send(
                api.req(Method::POST, "/api/det")
                    .header("idempotency-key", format!("k{i}"))
                    .json(&json!({ "id": i })),
            )
            .await
        };
        out.push(match r {
            Ok(r) if serde_json::from_str::<Value>(&r.text).is_err() && !r.text.is_empty() => {
                format!("{} garbled", r.status)
            }
            Ok(r) => r.status.to_string(),
            Err(_) => "no response".to_owned(),
        });
    }
    Ok(out)
}

#[tokio::test]
async fn same_seed_same_fault_pattern() -> Result<()> {
    let faults = Faults::none()
        .errors(0.2, 503, Some(RetryAfter::Seconds(1)))
        .rule(0.1, FaultKind::Drop)
        .rule(0.1, FaultKind::CommitThenStatus(500))
        .rule(0.1, FaultKind::Malformed);
    let a = ReferenceServer::builder()
        .seed(11)
        .faults(faults.clone())
        .start()
        .await;
    let b = ReferenceServer::builder()
        .seed(11)
        .faults(faults.clone())
        .start()
        .await;
    let pa = fault_pattern(a.url()).await?;
    let pb = fault_pattern(b.url()).await?;
    assert_eq!(pa, pb);
    let kinds: std::collections::HashSet<&String> = pa.iter().collect();
    assert!(kinds.len() >= 4, "a mix of outcomes: {pa:?}");
    let labels = |s: &ReferenceServer| {
        s.request_log()
            .into_iter()
            .map(|e| e.fault)
            .collect::<Vec<_>>()
    };
    assert_eq!(labels(&a), labels(&b));

    // Setting the faults again reseeds: the pattern starts over (on fresh data).
    let c = ReferenceServer::builder().seed(11).start().await;
    c.set_faults(faults.clone());
    assert_eq!(fault_pattern(c.url()).await?, pa);
    // An explicit seed in `Faults` wins over the server seed.
    let d = ReferenceServer::builder().seed(999).start().await;
    d.set_faults(faults.clone().seed(11));
    assert_eq!(fault_pattern(d.url()).await?, pa);
    let e = ReferenceServer::builder()
        .seed(12)
        .faults(faults)
        .start()
        .await;
    assert_ne!(
        fault_pattern(e.url()).await?,
        pa,
        "another seed, another pattern"
    );
    Ok(())
}
