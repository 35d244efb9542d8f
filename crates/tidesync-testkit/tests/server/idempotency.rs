//! Idempotent replay (header keys and bulk-op keys) and leader fencing.

use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use tidesync_testkit::server::ReferenceServer;

use crate::{Api, send};

#[tokio::test]
async fn same_key_replays_the_first_response() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let post = || {
        api.req(Method::POST, "/api/o")
            .header("idempotency-key", "k-1")
            .json(&json!({"id": "a", "n": 1}))
    };
    let first = send(post()).await?;
    assert_eq!(first.status, 201);
    assert!(first.header("idempotent-replayed").is_none());
    server.freeze_clock(Some(5)); // a re-applied create would carry this timestamp
    let again = send(post()).await?;
    assert_eq!(again.status, 201, "replayed, not 409 exists");
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(server.replay_count(), 1);
    assert_eq!(server.create_count("o", "a"), 1);
    let log = server.request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].idempotency_key(), Some("k-1"));
    assert!(!log[0].replayed && log[1].replayed);
    assert_eq!(log[1].status, Some(201));

    // PATCH and DELETE replay too: a retried DELETE is 204, not 404.
    for (m, key, want) in [(Method::PATCH, "k-2", 200), (Method::DELETE, "k-3", 204)] {
        for _ in 0..2 {
            let r = send(
                api.req(m.clone(), "/api/o/a")
                    .header("idempotency-key", key)
                    .json(&json!({"n": 2})),
            )
            .await?;
            assert_eq!(r.status, want, "{m} {key}: {}", r.text);
        }
    }
    assert_eq!(server.replay_count(), 3);
    assert_eq!(
        server.record_any("o", "a").map(|r| r["version"].clone()),
        Some(json!(3))
    );
    Ok(())
}

#[tokio::test]
async fn refused_writes_are_not_stored_and_keys_cannot_be_reused_elsewhere() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    api.post("/api/o", &json!({"id": "a"})).await?;
    let put = |version: u64| {
        api.req(Method::PUT, "/api/o/a")
            .header("idempotency-key", "k-put")
            .json(&json!({"n": 1, "version": version}))
    };
    assert_eq!(send(put(9)).await?.status, 409);
    let ok = send(put(1)).await?;
    assert_eq!(
        ok.status, 200,
        "a refused write is evaluated afresh on retry"
    );
    assert!(ok.header("idempotent-replayed").is_none());
    assert_eq!(
        send(put(1)).await?.header("idempotent-replayed"),
        Some("true")
    );

    // The same key for another record, action or collection: 422.
    for (m, path) in [
        (Method::PUT, "/api/o/b"),
        (Method::DELETE, "/api/o/a"),
        (Method::PUT, "/api/other/a"),
    ] {
        let r = send(
            api.req(m, path)
                .header("idempotency-key", "k-put")
                .json(&json!({})),
        )
        .await?;
        assert_eq!(r.status, 422, "{path}: {}", r.text);
    }
    assert_eq!(server.idempotency_mismatches(), 3);
    assert!(server.record("o", "b").is_none());
    Ok(())
}

#[tokio::test]
async fn bulk_op_keys_share_the_key_space() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let body = json!({"ops": [
        {"op": "create", "id": "a", "record": {"n": 1}, "idempotencyKey": "op-a"},
        {"op": "create", "id": "b", "record": {"n": 1}, "idempotencyKey": "op-b"}
    ]});
    let first = api.post("/api/o/bulk", &body).await?;
    assert_eq!(first.body["results"][0]["status"], 201);
    // The same bulk again (no header key): each op is replayed from its own key.
    let again = api.post("/api/o/bulk", &body).await?;
    assert_eq!(again.body["results"][0]["status"], 201);
    assert_eq!(again.body["results"][0]["replayed"], true);
    assert_eq!(
        again.body["results"][1]["record"],
        first.body["results"][1]["record"]
    );
    // One op retried alone, with its key as the header.
    let alone = send(
        api.req(Method::POST, "/api/o")
            .header("idempotency-key", "op-a")
            .json(&json!({"id": "a", "n": 1})),
    )
    .await?;
    assert_eq!(alone.status, 201);
    assert_eq!(alone.body, first.body["results"][0]["record"]);
    assert_eq!(server.replay_count(), 3);
    assert_eq!(server.create_count("o", "a"), 1);

    // A whole bulk request keyed by the header replays as a whole.
    let keyed = |n: i64| {
        api.req(Method::POST, "/api/o/bulk")
            .header("idempotency-key", "bulk-1")
            .json(&json!({"ops": [{"op": "update", "id": "a", "record": {"n": n}}]}))
    };
    let r1 = send(keyed(5)).await?;
    let r2 = send(keyed(5)).await?;
    assert_eq!(r1.body, r2.body);
    assert_eq!(r2.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        server.record("o", "a").map(|r| r["version"].clone()),
        Some(json!(2))
    );
    Ok(())
}

#[tokio::test]
async fn stale_epochs_are_fenced() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let write = |epoch: Option<&str>, id: &str| {
        let mut req = api
            .req(Method::POST, "/api/e")
            .header("idempotency-key", format!("key-{id}"))
            .json(&json!({ "id": id }));
        if let Some(e) = epoch {
            req = req.header("x-tidesync-epoch", e);
        }
        req
    };
    assert_eq!(server.max_epoch_seen(), None);
    assert_eq!(send(write(Some("5"), "a")).await?.status, 201);
    assert_eq!(send(write(Some("7"), "b")).await?.status, 201);
    let stale = send(write(Some("6"), "c")).await?;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["error"], "stale epoch");
    // A stale leader retrying an old write is refused too, even with a known key.
    assert_eq!(send(write(Some("5"), "a")).await?.status, 409);
    assert_eq!(
        send(write(None, "d")).await?.status,
        201,
        "no header, no fencing"
    );
    assert_eq!(send(write(Some("7"), "e")).await?.status, 201);
    // Reads are not fenced.
    let r = send(
        api.req(Method::GET, "/api/e")
            .header("x-tidesync-epoch", "1"),
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_eq!(server.max_epoch_seen(), Some(7));
    assert_eq!(server.stale_epoch_rejections(), 2);
    assert!(server.record("e", "c").is_none());
    let log = server.request_log();
    assert_eq!(log[0].header("x-tidesync-epoch"), Some("5"));
    Ok(())
}
