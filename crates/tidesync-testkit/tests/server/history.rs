//! The change history (`ServerHandle::changes`) and the skewed clock (`skew_clock`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use tidesync_testkit::server::ReferenceServer;

use crate::{Api, send};

/// `(seq, version, deleted, idempotency key, direct)` of a change.
type Row<'a> = (u64, Option<u64>, bool, Option<&'a str>, bool);

#[tokio::test]
async fn every_applied_change_is_listed_with_its_cause() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let write = |m: Method, path: &str, key: &str, body: serde_json::Value| {
        api.req(m, path).header("idempotency-key", key).json(&body)
    };
    assert_eq!(
        send(write(
            Method::POST,
            "/api/o",
            "k1",
            json!({"id": "a", "n": 1})
        ))
        .await?
        .status,
        201
    );
    assert_eq!(
        send(write(Method::PATCH, "/api/o/a", "k2", json!({"n": 2})))
            .await?
            .status,
        200
    );
    // A replay and a refused write change nothing.
    assert_eq!(
        send(write(Method::PATCH, "/api/o/a", "k2", json!({"n": 2})))
            .await?
            .status,
        200
    );
    let stale = write(
        Method::PATCH,
        "/api/o/a",
        "k3",
        json!({"n": 9, "version": 1}),
    );
    assert_eq!(send(stale).await?.status, 409);
    server.update_direct("o", "a", json!({"n": 3}))?;
    assert!(
        server
            .update_direct("o", "missing", json!({"n": 3}))
            .is_err()
    );
    assert_eq!(
        send(
            api.req(Method::DELETE, "/api/o/a")
                .header("idempotency-key", "k4")
        )
        .await?
        .status,
        204
    );
    server.insert_direct("o", json!({"id": "a", "n": 5}))?;

    let changes = server.changes();
    let summary: Vec<Row<'_>> = changes
        .iter()
        .map(|c| {
            (
                c.seq,
                c.version(),
                c.deleted(),
                c.idempotency_key.as_deref(),
                c.direct,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, Some(1), false, Some("k1"), false),
            (1, Some(2), false, Some("k2"), false),
            (2, Some(3), false, None, true),
            (3, Some(4), true, Some("k4"), false),
            (4, Some(5), false, None, true),
        ]
    );
    assert!(changes.iter().all(|c| c.collection == "o" && c.key == "a"));
    assert_eq!(changes[1].record["n"], json!(2));
    assert_eq!(changes[4].record["n"], json!(5));
    Ok(())
}

#[tokio::test]
async fn a_skewed_clock_moves_timestamps_and_the_date_header() -> Result<()> {
    let server = ReferenceServer::start().await;
    server.skew_clock(-90_000);
    let api = Api::new(server.url());
    let created = send(api.req(Method::POST, "/api/o").json(&json!({"id": "a"}))).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let stamped = created.body["updatedAt"].as_i64().unwrap_or_default();
    assert!(
        (stamped - (now - 90_000)).abs() < 5_000,
        "updatedAt {stamped}, now {now}"
    );
    let date = httpdate::parse_http_date(created.header("date").unwrap_or_default())?;
    let date_ms = date.duration_since(UNIX_EPOCH)?.as_millis() as i64;
    assert!(
        (date_ms - (now - 90_000)).abs() < 5_000,
        "Date {date_ms}, now {now}"
    );
    server.skew_clock(0);
    let again = send(api.req(Method::PATCH, "/api/o/a").json(&json!({"n": 1}))).await?;
    let stamped = again.body["updatedAt"].as_i64().unwrap_or_default();
    assert!(
        (stamped - now).abs() < 5_000,
        "updatedAt {stamped} after the skew was undone"
    );
    Ok(())
}
