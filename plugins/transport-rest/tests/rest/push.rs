//! Write routes: methods, URL templates, bodies, envelopes, headers, versions, server ids,
//! bulk.

use serde_json::json;
use tidesync_core::{ErrorKind, Key, Op, Transport};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer};
use tidesync_transport_rest::{BulkRoute, RestTransport, TableRoutes, WriteRoute};

use crate::support::{push, server, transport};

#[tokio::test]
async fn put_sends_the_full_record_and_patch_only_changed_fields() -> anyhow::Result<()> {
    let server = server().await;
    let routes = TableRoutes::rest("/api/posts").version_field("version");
    let t = transport(&server, "posts", routes.clone());
    t.push(push(
        "posts",
        Op::Create,
        "p1",
        Some(json!({"id": "p1", "title": "a", "body": "long text"})),
    ))
    .await?;

    let mut put = push(
        "posts",
        Op::Update,
        "p1",
        Some(json!({"id": "p1", "title": "b", "body": "long text", "version": 1})),
    );
    put.base_version = Some("1".into());
    let outcome = t.push(put).await?;
    assert_eq!(outcome.version.as_deref(), Some("2"));
    let last = server.request_log().pop().expect("logged");
    assert_eq!(last.method, "PUT");
    assert_eq!(last.path, "/api/posts/p1");
    assert!(last.body.contains("long text"), "PUT sends everything");

    let t = transport(
        &server,
        "posts",
        routes.update(WriteRoute::patch("/api/posts/{id}")),
    );
    let mut patch = push(
        "posts",
        Op::Update,
        "p1",
        Some(json!({"id": "p1", "title": "c", "body": "long text", "version": 2})),
    );
    patch.changed = vec!["title".into()];
    patch.base_version = Some("2".into());
    patch.idempotency_key = "idem-patch".into();
    let outcome = t.push(patch).await?;
    let last = server.request_log().pop().expect("logged");
    assert_eq!(last.method, "PATCH");
    let sent: serde_json::Value = serde_json::from_str(&last.body)?;
    assert_eq!(sent, json!({"title": "c", "version": 2}));
    assert_eq!(outcome.version.as_deref(), Some("3"));
    assert_eq!(
        outcome.record.and_then(|r| r.get("body").cloned()),
        Some(json!("long text"))
    );
    Ok(())
}

#[tokio::test]
async fn ids_in_the_query_string_are_encoded() -> anyhow::Result<()> {
    let server = server().await;
    let routes = TableRoutes::new()
        .create(WriteRoute::post("/api/notes"))
        .update(WriteRoute::patch("/api/notes?id=eq.{id}"))
        .delete(WriteRoute::delete("/api/notes?id=eq.{id}"));
    let t = transport(&server, "notes", routes);
    let id = "a b&c/d";
    t.push(push(
        "notes",
        Op::Create,
        id,
        Some(json!({"id": id, "n": 1})),
    ))
    .await?;
    let mut update = push("notes", Op::Update, id, Some(json!({"id": id, "n": 2})));
    update.changed = vec!["n".into()];
    t.push(update).await?;
    let last = server.request_log().pop().expect("logged");
    assert_eq!(last.query.as_deref(), Some("id=eq.a%20b%26c%2Fd"));
    assert_eq!(
        server.record("notes", id).map(|r| r["n"].clone()),
        Some(json!(2))
    );
    t.push(push("notes", Op::Delete, id, None)).await?;
    assert!(server.record("notes", id).is_none());
    Ok(())
}

#[tokio::test]
async fn envelopes_extra_headers_and_ignored_responses() -> anyhow::Result<()> {
    let server = server().await;
    let routes = TableRoutes::new().create(
        WriteRoute::post("/api/wrapped")
            .envelope("data")
            .header("Prefer", "return=minimal")
            .ignore_response(),
    );
    let t = transport(&server, "wrapped", routes);
    let outcome = t
        .push(push(
            "wrapped",
            Op::Create,
            "w1",
            Some(json!({"id": "w1", "x": 1})),
        ))
        .await?;
    assert!(outcome.record.is_none());
    assert!(outcome.server_time_ms.is_some(), "Date header read");
    let last = server.request_log().pop().expect("logged");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last.body)?,
        json!({"data": {"id": "w1", "x": 1}})
    );
    assert_eq!(last.header("prefer"), Some("return=minimal"));
    assert_eq!(last.header("content-type"), Some("application/json"));
    Ok(())
}

#[tokio::test]
async fn server_assigned_ids_are_reported_and_otherwise_refused() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .start()
        .await;
    let routes = TableRoutes::rest("/api/tasks").server_ids();
    let t = transport(&server, "tasks", routes.clone());
    let outcome = t
        .push(push(
            "tasks",
            Op::Create,
            "tmp-1",
            Some(json!({"id": "tmp-1", "t": "x"})),
        ))
        .await?;
    assert_eq!(outcome.server_key, Some(Key::Int(1)));

    let strict = transport(&server, "tasks", TableRoutes::rest("/api/tasks"));
    let err = strict
        .push(push(
            "tasks",
            Op::Create,
            "tmp-2",
            Some(json!({"id": "tmp-2"})),
        ))
        .await
        .expect_err("a different key without server_ids");
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(err.record_key(), Some("tmp-2"));
    assert!(err.to_string().contains("server_ids"), "{err}");
    Ok(())
}

#[tokio::test]
async fn body_versions_conflict_with_409_and_etags_with_412() -> anyhow::Result<()> {
    let server = server().await;
    server.insert_direct("docs", json!({"id": "d1", "t": "v1"}))?;
    server.update_direct("docs", "d1", json!({"t": "v2"}))?;

    // Version in the body → 409 with the current record.
    let body_v = transport(
        &server,
        "docs",
        TableRoutes::rest("/api/docs").version_field("version"),
    );
    let mut stale = push(
        "docs",
        Op::Update,
        "d1",
        Some(json!({"id": "d1", "t": "mine"})),
    );
    stale.base_version = Some("1".into());
    let err = body_v.push(stale.clone()).await.expect_err("stale");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.http_status(), Some(409));
    assert_eq!(
        err.remote_record().and_then(|r| r.get("t")),
        Some(&json!("v2"))
    );
    assert_eq!(
        (err.table_name(), err.record_key()),
        (Some("docs"), Some("d1"))
    );

    // ETag / If-Match → 412 with the current record; versions read from ETag.
    let etag = transport(&server, "docs", TableRoutes::rest("/api/docs").etag());
    let err = etag.push(stale.clone()).await.expect_err("stale");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Conflict, Some(412))
    );
    assert!(err.remote_record().is_some());
    assert_eq!(
        server
            .request_log()
            .pop()
            .and_then(|r| r.header("if-match").map(str::to_owned)),
        Some("\"1\"".to_owned())
    );
    let fetched = etag.fetch("docs", &Key::from("d1")).await?.expect("exists");
    assert_eq!(fetched.version.as_deref(), Some("2"), "from ETag");
    stale.base_version = fetched.version;
    let ok = etag.push(stale).await?;
    assert_eq!(ok.version.as_deref(), Some("3"), "from the response ETag");
    assert_eq!(
        server.record("docs", "d1").map(|r| r["t"].clone()),
        Some(json!("mine"))
    );
    Ok(())
}

#[tokio::test]
async fn idempotency_and_epoch_headers() -> anyhow::Result<()> {
    let server = server().await;
    let t = transport(&server, "posts", TableRoutes::rest("/api/posts"));
    let mut create = push("posts", Op::Create, "e1", Some(json!({"id": "e1"})));
    create.epoch = Some(7);
    t.push(create.clone()).await?;
    // The same key again is a replay, not a second create (and not a 409).
    t.push(create).await?;
    assert_eq!(server.create_count("posts", "e1"), 1);
    assert_eq!(server.replay_count(), 1);
    assert_eq!(server.max_epoch_seen(), Some(7));
    let log = server.request_log();
    assert!(
        log.iter()
            .all(|r| r.header("idempotency-key") == Some("idem-posts-e1-create"))
    );
    assert!(
        log.iter()
            .all(|r| r.header("x-tidesync-epoch") == Some("7"))
    );

    // A deposed leader (lower epoch) is refused.
    let mut stale = push("posts", Op::Create, "e2", Some(json!({"id": "e2"})));
    stale.epoch = Some(3);
    let err = t.push(stale).await.expect_err("stale epoch");
    assert_eq!(err.http_status(), Some(409));

    // Header name configurable, or off.
    let renamed = RestTransport::builder(server.url())
        .idempotency_header(Some("X-Request-Id"))
        .table("posts", TableRoutes::rest("/api/posts"))
        .build()?;
    renamed
        .push(push("posts", Op::Create, "e3", Some(json!({"id": "e3"}))))
        .await?;
    assert_eq!(
        server
            .request_log()
            .pop()
            .and_then(|r| r.header("idempotency-key").map(str::to_owned)),
        None
    );
    Ok(())
}

#[tokio::test]
async fn not_found_delete_is_success_other_404s_are_permanent() -> anyhow::Result<()> {
    let server = server().await;
    let routes = TableRoutes::rest("/api/posts").update(WriteRoute::patch("/api/posts/{id}"));
    let t = transport(&server, "posts", routes.clone());
    t.push(push("posts", Op::Delete, "ghost", None)).await?;
    let mut update = push(
        "posts",
        Op::Update,
        "ghost",
        Some(json!({"id": "ghost", "a": 1})),
    );
    update.changed = vec!["a".into()];
    let err = t.push(update).await.expect_err("404 on update");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Permanent, Some(404))
    );
    assert!(err.response_excerpt().is_some());

    let strict = transport(&server, "posts", routes.delete_not_found_is_error());
    let err = strict
        .push(push("posts", Op::Delete, "ghost", None))
        .await
        .expect_err("404");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    Ok(())
}

#[tokio::test]
async fn a_record_missing_a_templated_field_is_permanent_and_sends_nothing() -> anyhow::Result<()> {
    let server = server().await;
    let routes = TableRoutes::new()
        .field("slug")
        .update(WriteRoute::put("/api/posts/{slug}"));
    let t = transport(&server, "posts", routes);
    let err = t
        .push(push("posts", Op::Update, "p1", Some(json!({"id": "p1"}))))
        .await
        .expect_err("no slug");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(
        (err.table_name(), err.record_key(), err.field_name()),
        (Some("posts"), Some("p1"), Some("slug"))
    );
    assert!(server.request_log().is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_templates_are_rejected_when_the_transport_is_built() {
    let build = |routes: TableRoutes| {
        RestTransport::builder("http://127.0.0.1:1")
            .table("posts", routes)
            .build()
            .expect_err("invalid")
    };
    let err = build(TableRoutes::new().update(WriteRoute::put("/api/posts/{slug}")));
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field_name(), Some("slug"));
    assert!(
        err.to_string().contains("unknown placeholder `{slug}`"),
        "{err}"
    );
    let err = build(TableRoutes::new().update(WriteRoute::put("/api/posts/{id")));
    assert!(err.to_string().contains("unclosed"), "{err}");
    let err = build(
        TableRoutes::rest("/api/p")
            .pull(tidesync_transport_rest::Feed::get("/api/p?since={cursor}")),
    );
    assert!(err.to_string().contains("`{cursor}`"), "{err}");
}

#[tokio::test]
async fn bulk_endpoint_returns_per_entry_results() -> anyhow::Result<()> {
    let server = server().await;
    server.insert_direct("posts", json!({"id": "b2", "t": "x"}))?;
    server.insert_direct("posts", json!({"id": "b3", "t": "x"}))?;
    server.update_direct("posts", "b3", json!({"t": "y"}))?;
    let routes = TableRoutes::rest("/api/posts")
        .update(WriteRoute::patch("/api/posts/{id}"))
        .version_field("version")
        .bulk(BulkRoute::post("/api/posts/bulk"));
    let t = transport(&server, "posts", routes);
    assert!(t.supports_batch("posts"));
    let mut update = push(
        "posts",
        Op::Update,
        "b2",
        Some(json!({"id": "b2", "t": "z", "version": 1})),
    );
    update.changed = vec!["t".into()];
    update.base_version = Some("1".into());
    let mut stale = push(
        "posts",
        Op::Update,
        "b3",
        Some(json!({"id": "b3", "t": "z", "version": 1})),
    );
    stale.changed = vec!["t".into()];
    stale.base_version = Some("1".into());
    let results = t
        .push_batch(vec![
            push("posts", Op::Create, "b1", Some(json!({"id": "b1"}))),
            update,
            stale,
            push("posts", Op::Delete, "b9", None),
        ])
        .await?;
    assert_eq!(results.len(), 4);
    let created = results[0].as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(created.version.as_deref(), Some("1"));
    let updated = results[1].as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(updated.version.as_deref(), Some("2"));
    let conflict = results[2].as_ref().expect_err("stale");
    assert_eq!(conflict.kind(), ErrorKind::Conflict);
    assert_eq!(
        conflict.remote_record().and_then(|r| r.get("t")),
        Some(&json!("y"))
    );
    assert!(
        results[3].is_ok(),
        "deleting a missing record: already gone"
    );
    assert_eq!(server.request_log().len(), 1, "one request");
    Ok(())
}

/// A server without concurrency control writes a soft-deleted row and answers it with
/// `deleted: true`: that is a conflict (deleted remotely), and fetching it finds nothing.
#[tokio::test]
async fn a_write_answered_with_a_tombstone_is_a_conflict() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "posts",
            CollectionConfig::default()
                .concurrency(tidesync_testkit::server::Concurrency::Unchecked),
        )
        .start()
        .await;
    let routes =
        TableRoutes::reference_server("posts").update(WriteRoute::patch("/api/posts/{id}"));
    let t = transport(&server, "posts", routes);
    t.push(push(
        "posts",
        Op::Create,
        "p1",
        Some(json!({"id": "p1", "title": "a"})),
    ))
    .await?;
    let mut stale = push(
        "posts",
        Op::Update,
        "p1",
        Some(json!({"id": "p1", "title": "b"})),
    );
    stale.base_version = Some("7".into());
    stale.changed = vec!["title".into()];
    assert_eq!(
        t.push(stale.clone()).await?.version.as_deref(),
        Some("2"),
        "no concurrency control: a stale base is written all the same"
    );
    server.delete_direct("posts", "p1")?;
    stale.idempotency_key = "after-delete".into();
    let err = t.push(stale).await.expect_err("deleted remotely");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.remote_record().is_none(),
        "a tombstone is no live version"
    );
    let written = server.record_any("posts", "p1").expect("tombstone");
    assert_eq!(
        written["deleted"],
        json!(true),
        "the server wrote the row anyway"
    );
    assert!(t.fetch("posts", &Key::from("p1")).await?.is_none());
    // A fetch through a list filter that also lists soft-deleted rows finds the tombstone:
    // by the table's rule, that is "not there" too.
    let listed = TableRoutes::reference_server("posts").fetch(
        tidesync_transport_rest::FetchRoute::get("/api/posts?id=eq.{id}&envelope=none"),
    );
    let t = transport(&server, "posts", listed);
    assert!(t.fetch("posts", &Key::from("p1")).await?.is_none());
    let answered = server.request_log().pop().expect("logged");
    assert!(
        answered.status == Some(200),
        "the list answered the tombstone: {answered:?}"
    );
    Ok(())
}
