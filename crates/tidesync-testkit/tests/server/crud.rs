//! Single-record endpoints, bulk, optimistic concurrency, id handling, input validation.

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer, TimestampFormat};

use crate::{Api, send};

#[tokio::test]
async fn create_read_replace_merge_delete_and_revive() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());

    let r = api
        .post(
            "/api/posts",
            &json!({"id": "p1", "title": "a", "updatedAt": 5, "deleted": true}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["id"], "p1");
    assert_eq!(r.body["version"], 1);
    assert!(
        r.body["updatedAt"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    assert!(
        r.body.get("deleted").is_none(),
        "client `deleted` is ignored"
    );
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("location"), Some("/api/posts/p1"));
    assert!(r.header("date").is_some());

    let dup = api
        .post("/api/posts", &json!({"id": "p1", "title": "z"}))
        .await?;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["error"], "exists");
    assert_eq!(dup.body["current"]["title"], "a");

    let g = api.get("/api/posts/p1").await?;
    assert_eq!((g.status, g.header("etag")), (200, Some("\"1\"")));
    assert_eq!(g.body["title"], "a");
    let nm = send(
        api.req(Method::GET, "/api/posts/p1")
            .header("if-none-match", "\"1\""),
    )
    .await?;
    assert_eq!(nm.status, 304);

    let put = api
        .put("/api/posts/p1", &json!({"other": 1, "updatedAt": 1}))
        .await?;
    assert_eq!(put.status, 200);
    assert_eq!(put.body["version"], 2);
    assert!(
        put.body.get("title").is_none(),
        "PUT replaces the whole record"
    );
    assert!(put.body["updatedAt"].as_i64() > Some(1));

    let patch = api
        .patch("/api/posts/p1", &json!({"title": "b", "other": null}))
        .await?;
    assert_eq!(patch.status, 200);
    assert_eq!(patch.body["version"], 3);
    assert_eq!(patch.body["title"], "b");
    assert_eq!(patch.body["other"], Value::Null);
    assert_eq!(patch.header("etag"), Some("\"3\""));

    let del = api.delete("/api/posts/p1").await?;
    assert_eq!(del.status, 204);
    assert!(del.text.is_empty());
    let gone = api.get("/api/posts/p1").await?;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["deleted"], true);
    assert_eq!(api.delete("/api/posts/p1").await?.status, 404);
    assert_eq!(
        api.patch("/api/posts/p1", &json!({"a": 1})).await?.status,
        404
    );
    let tombs = server.tombstones("posts");
    assert_eq!(tombs.len(), 1);
    assert_eq!(
        (tombs[0]["deleted"].clone(), tombs[0]["version"].clone()),
        (json!(true), json!(4))
    );
    assert!(server.records("posts").is_empty());
    assert!(server.record("posts", "p1").is_none());
    assert!(server.record_any("posts", "p1").is_some());

    // A POST on a tombstone's id is a conflict; a PUT revives it.
    let again = api.post("/api/posts", &json!({"id": "p1"})).await?;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["current"]["deleted"], true);
    let revive = api.put("/api/posts/p1", &json!({"title": "c"})).await?;
    assert_eq!(revive.status, 200);
    assert_eq!(revive.body["version"], 5);
    assert!(revive.body.get("deleted").is_none());
    assert_eq!(server.create_count("posts", "p1"), 1);
    Ok(())
}

#[tokio::test]
async fn ids_uuid_integer_and_upsert() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());

    let r = api.post("/api/notes", &json!({"text": "no id"})).await?;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    assert_eq!(api.get(&format!("/api/notes/{id}")).await?.status, 200);

    let r = api
        .post("/api/notes", &json!({"id": 7, "text": "int"}))
        .await?;
    assert_eq!(r.body["id"], 7, "integer ids stay integers");
    assert_eq!(api.get("/api/notes/7").await?.body["text"], "int");
    assert_eq!(
        server.record("notes", 7).map(|r| r["id"].clone()),
        Some(json!(7))
    );

    let up = api.put("/api/notes/42", &json!({"text": "upsert"})).await?;
    assert_eq!(up.status, 201);
    assert_eq!(up.body["id"], 42);
    assert_eq!(up.body["version"], 1);
    let up = api
        .put("/api/notes/abc", &json!({"text": "upsert"}))
        .await?;
    assert_eq!(up.body["id"], "abc");

    let mismatch = api.put("/api/notes/42", &json!({"id": 43})).await?;
    assert_eq!(mismatch.status, 400);
    let ids: Vec<Value> = server
        .records("notes")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        &ids[..2],
        &[json!(7), json!(42)],
        "numeric ids first, numerically"
    );
    assert_eq!(server.create_count("notes", 42), 1);
    Ok(())
}

#[tokio::test]
async fn optimistic_concurrency() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    api.post("/api/t", &json!({"id": "a", "n": 0})).await?;

    let stale = api.put("/api/t/a", &json!({"n": 1, "version": 7})).await?;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["error"], "version conflict");
    assert_eq!(stale.body["current"]["version"], 1);

    let ok = api
        .patch("/api/t/a", &json!({"n": 1, "version": 1}))
        .await?;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["version"], 2);

    let pre = send(
        api.req(Method::PATCH, "/api/t/a")
            .header("if-match", "\"1\"")
            .json(&json!({"n": 2})),
    )
    .await?;
    assert_eq!(pre.status, 412);
    assert_eq!(pre.body["error"], "precondition failed");
    assert_eq!(pre.body["current"]["version"], 2);

    for template in ["\"{v}\"", "W/\"{v}\"", "\"99\", \"{v}\"", "*"] {
        let v = server
            .record("t", "a")
            .and_then(|r| r["version"].as_u64())
            .unwrap_or(0);
        let tag = template.replace("{v}", &v.to_string());
        let r = send(
            api.req(Method::PUT, "/api/t/a")
                .header("if-match", tag.as_str())
                .json(&json!({"n": 3})),
        )
        .await?;
        assert_eq!(r.status, 200, "If-Match {tag}: {}", r.text);
    }

    // DELETE with a stale version in its body, then with the right one.
    let v = server
        .record("t", "a")
        .map(|r| r["version"].clone())
        .unwrap_or_default();
    let del = send(
        api.req(Method::DELETE, "/api/t/a")
            .json(&json!({"version": 1})),
    )
    .await?;
    assert_eq!(del.status, 409);
    let del = send(
        api.req(Method::DELETE, "/api/t/a")
            .json(&json!({"version": v})),
    )
    .await?;
    assert_eq!(del.status, 204);

    // Preconditions on a record that does not exist.
    let r = api.put("/api/t/new", &json!({"version": 3})).await?;
    assert_eq!((r.status, r.body["current"].clone()), (409, Value::Null));
    let r = send(
        api.req(Method::PUT, "/api/t/new")
            .header("if-match", "*")
            .json(&json!({})),
    )
    .await?;
    assert_eq!(r.status, 412);
    let r = api.put("/api/t/new", &json!({"version": 0})).await?;
    assert_eq!(r.status, 201, "version 0 means: expected not to exist");
    Ok(())
}

#[tokio::test]
async fn postgrest_style_addressing() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    api.post("/api/items", &json!({"id": 5, "v": 1})).await?;
    api.post("/api/items", &json!({"id": 6, "v": 1})).await?;

    let p = api.patch("/api/items?id=eq.5", &json!({"v": 2})).await?;
    assert_eq!((p.status, p.body["v"].clone()), (200, json!(2)));
    let g = api.get("/api/items?id=eq.5").await?;
    assert_eq!(g.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(g.body["data"][0]["v"], 2);
    let g = api.get("/api/items?id=in.(5,6)&tombstones=exclude").await?;
    assert_eq!(g.body["total"], 2);
    assert_eq!(api.delete("/api/items?id=eq.5").await?.status, 204);
    assert_eq!(api.delete("/api/items?id=eq.5").await?.status, 404);
    assert_eq!(api.delete("/api/items").await?.status, 400);
    assert_eq!(api.delete("/api/items?id=5").await?.status, 400);
    assert_eq!(
        api.patch("/api/items?id=in.(5,6)", &json!({}))
            .await?
            .status,
        400
    );
    assert_eq!(server.records("items").len(), 1);
    Ok(())
}

#[tokio::test]
async fn bulk_applies_in_order() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    api.post("/api/b", &json!({"id": "x", "n": 1})).await?;
    let r = api
        .post(
            "/api/b/bulk",
            &json!({"ops": [
                {"op": "create", "record": {"id": "a", "n": 1}},
                {"op": "update", "id": "a", "record": {"n": 2}},
                {"op": "create", "id": "x", "record": {"n": 9}},
                {"op": "update", "id": "x", "record": {"n": 3, "version": 5}},
                {"op": "delete", "id": "x"},
                {"op": "delete", "id": "nope"},
                {"op": "replace", "id": "c", "record": {"n": 1}},
                {"op": "frobnicate"},
                "not an object",
                {"op": "update", "record": {"n": 1}}
            ]}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let res = r.body["results"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<i64> = res
        .iter()
        .map(|x| x["status"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [201, 200, 409, 409, 204, 404, 201, 400, 400, 400]);
    assert_eq!(res[1]["record"]["n"], 2);
    assert_eq!(res[1]["record"]["version"], 2);
    assert_eq!(res[2]["error"], "exists");
    assert_eq!(res[3]["error"], "version conflict");
    assert_eq!(res[3]["current"]["n"], 1);
    assert!(res[7]["error"].as_str().is_some());
    assert_eq!(server.records("b").len(), 2);
    assert_eq!(server.tombstones("b").len(), 1);

    for bad in [json!({}), json!({"ops": 1}), json!([1])] {
        assert_eq!(api.post("/api/b/bulk", &bad).await?.status, 400);
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "create", "id": i}))
        .collect();
    assert_eq!(
        api.post("/api/b/bulk", &json!({ "ops": many }))
            .await?
            .status,
        400
    );
    assert_eq!(api.get("/api/b/bulk").await?.status, 405);
    Ok(())
}

#[tokio::test]
async fn server_assigned_ids() -> Result<()> {
    let server = ReferenceServer::builder()
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .start()
        .await;
    let api = Api::new(server.url());
    let a = api
        .post("/api/tasks", &json!({"id": "tmp-1", "t": "a"}))
        .await?;
    let b = api.post("/api/tasks", &json!({"t": "b"})).await?;
    assert_eq!((a.status, a.body["id"].clone()), (201, json!(1)));
    assert_eq!(b.body["id"], 2);
    assert_eq!(a.header("location"), Some("/api/tasks/1"));
    assert_eq!(
        api.put("/api/tasks/tmp-1", &json!({"t": "x"}))
            .await?
            .status,
        404
    );
    assert_eq!(
        api.put("/api/tasks/1", &json!({"t": "x"})).await?.status,
        200
    );
    server.insert_direct("tasks", json!({"id": 3, "t": "direct"}))?;
    let c = api.post("/api/tasks", &json!({"t": "c"})).await?;
    assert_eq!(c.body["id"], 4, "the counter skips ids in use");
    let bulk = api
        .post(
            "/api/tasks/bulk",
            &json!({"ops": [{"op": "create", "id": "tmp-9", "record": {"t": "d"}}]}),
        )
        .await?;
    assert_eq!(bulk.body["results"][0]["record"]["id"], 5);
    Ok(())
}

#[tokio::test]
async fn timestamp_formats() -> Result<()> {
    let server = ReferenceServer::builder()
        .collection(
            "secs",
            CollectionConfig::default().timestamps(TimestampFormat::EpochSeconds),
        )
        .collection(
            "iso",
            CollectionConfig::default().timestamps(TimestampFormat::Rfc3339),
        )
        .start()
        .await;
    server.freeze_clock(Some(1_700_000_000_123));
    let api = Api::new(server.url());
    let s = api.post("/api/secs", &json!({"id": 1})).await?;
    assert_eq!(s.body["updatedAt"], 1_700_000_000);
    let i = api.post("/api/iso", &json!({"id": 1})).await?;
    assert_eq!(i.body["updatedAt"], "2023-11-14T22:13:20.123Z");
    let m = api.post("/api/ms", &json!({"id": 1})).await?;
    assert_eq!(m.body["updatedAt"], 1_700_000_000_123_i64);
    // Filters read values in the collection's unit, or as RFC 3339.
    let f = api.get("/api/secs?updated_after=1699999999").await?;
    assert_eq!(f.body["total"], 1);
    let f = api.get("/api/secs?updated_after=1700000000").await?;
    assert_eq!(f.body["total"], 0);
    let f = api.get("/api/iso?since=2023-11-14T22:13:20.122Z").await?;
    assert_eq!(f.body["total"], 1);
    let f = api
        .get("/api/iso?since=2023-11-14T23:13:20.123%2B01:00")
        .await?;
    assert_eq!(f.body["total"], 0);
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_4xx_json() -> Result<()> {
    let server = ReferenceServer::builder()
        .body_limit(64 * 1024)
        .start()
        .await;
    let api = Api::new(server.url());
    api.post("/api/c", &json!({"id": "a"})).await?;
    let raw = |m: Method, path: &str, body: &'static str| {
        api.req(m, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (raw(Method::POST, "/api/c", "{not json"), 400),
        (raw(Method::POST, "/api/c", "[1,2]"), 400),
        (raw(Method::POST, "/api/c", ""), 400),
        (raw(Method::POST, "/api/c", "{\"id\": true}"), 400),
        (raw(Method::POST, "/api/c", "{\"id\": \"\"}"), 400),
        (raw(Method::POST, "/api/c", "{\"id\": 1.5}"), 400),
        (raw(Method::PUT, "/api/c/a", "{\"version\": \"x\"}"), 400),
        (raw(Method::PATCH, "/api/c/a", "{\"version\": -1}"), 400),
        (raw(Method::DELETE, "/api/c/a", "{oops"), 400),
        (raw(Method::POST, "/api/c/bulk", "\u{0}"), 400),
        (api.req(Method::GET, "/api/c?updated_after=yesterday"), 400),
        (api.req(Method::GET, "/api/c?updated_at=gt"), 400),
        (api.req(Method::GET, "/api/c?updated_at=zz.5"), 400),
        (
            api.req(Method::GET, "/api/c?filter=(title%20%3E%20'x')"),
            400,
        ),
        (api.req(Method::GET, "/api/c?limit=0"), 400),
        (api.req(Method::GET, "/api/c?limit=-3"), 400),
        (api.req(Method::GET, "/api/c?page=0"), 400),
        (api.req(Method::GET, "/api/c?page=1&offset=3"), 400),
        (api.req(Method::GET, "/api/c?cursor=garbage"), 400),
        (api.req(Method::GET, "/api/c?after_id=5"), 400),
        (api.req(Method::GET, "/api/c?tombstones=maybe"), 400),
        (api.req(Method::GET, "/api/c?id=5"), 400),
        (api.req(Method::GET, "/api/c/deleted?since=x"), 400),
        (api.req(Method::GET, "/api/c/%FF%FE"), 400),
        (
            raw(Method::POST, "/api/c", "{}").header("idempotency-key", "x".repeat(300)),
            400,
        ),
        (
            raw(Method::POST, "/api/c", "{}").header("x-tidesync-epoch", "minus one"),
            400,
        ),
        (api.req(Method::GET, "/nowhere"), 404),
        (api.req(Method::GET, "/api"), 404),
        (api.req(Method::GET, "/api/c/a/b"), 404),
        (api.req(Method::PUT, "/api/c"), 405),
        (api.req(Method::GET, "/api/c/missing"), 404),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let r = send(req).await?;
        assert_eq!(r.status, want, "case {i}: {}", r.text);
        assert!(
            r.body["error"].is_string(),
            "case {i}: JSON error body, got {}",
            r.text
        );
        assert!(r.header("date").is_some(), "case {i}: Date header");
    }
    // Over the body limit: 413, and the server is still fine.
    let big = format!("{{\"id\":\"big\",\"pad\":\"{}\"}}", "x".repeat(100 * 1024));
    let r = send(
        api.req(Method::POST, "/api/c")
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    match r {
        Ok(r) => assert_eq!(r.status, 413),
        // The server may close before reading it all; that is a refusal too.
        Err(e) => assert!(e.is::<reqwest::Error>(), "{e}"),
    }
    assert_eq!(api.get("/api/c/a").await?.status, 200);
    assert!(server.record("c", "big").is_none());
    Ok(())
}

#[tokio::test]
async fn default_body_limit_is_8_mib() -> Result<()> {
    let server = ReferenceServer::start().await;
    let api = Api::new(server.url());
    let ok = format!(
        "{{\"id\":\"a\",\"pad\":\"{}\"}}",
        "x".repeat(7 * 1024 * 1024)
    );
    let r = send(
        api.req(Method::POST, "/api/c")
            .header("content-type", "application/json")
            .body(ok),
    )
    .await?;
    assert_eq!(r.status, 201);
    let too_big = format!(
        "{{\"id\":\"b\",\"pad\":\"{}\"}}",
        "x".repeat(9 * 1024 * 1024)
    );
    let r = send(
        api.req(Method::POST, "/api/c")
            .header("content-type", "application/json")
            .body(too_big),
    )
    .await;
    if let Ok(r) = r {
        assert_eq!(r.status, 413);
    }
    assert!(server.record("c", "b").is_none());
    Ok(())
}
