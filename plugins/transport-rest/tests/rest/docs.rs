//! Keeps `docs/rest-routes.md` true: its TOML blocks parse, equal the Rust forms shown next to
//! them (copied here verbatim), and work against the reference server.

use serde_json::json;
use tidesync_core::{ErrorKind, Key, Op, Transport};
use tidesync_testkit::server::{CollectionConfig, Concurrency, ReferenceServer, TimestampFormat};
use tidesync_transport_rest::{RestConfig, RestTransport};

use crate::support::{drain, push};
use crate::walks::{Local, pull_table_with_edit, table_state};

const DOC: &str = include_str!("../../../../docs/rest-routes.md");

/// The ```toml blocks of the doc, in order.
fn toml_blocks() -> Vec<&'static str> {
    DOC.split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("\n```").next())
        .collect()
}

fn parse(block: &str) -> RestConfig {
    toml::from_str(block).unwrap_or_else(|e| panic!("doc TOML does not parse: {e}\n{block}"))
}

/// The Rust forms of the doc, verbatim.
mod rust_forms {
    pub fn posts() -> anyhow::Result<tidesync_transport_rest::RestTransport> {
        use tidesync_transport_rest::*;

        let posts = TableRoutes::new()
            .key("id")
            .version_field("version")
            .create(WriteRoute::post("/api/posts"))
            .update(WriteRoute::put("/api/posts/{id}"))
            .delete(WriteRoute::delete("/api/posts/{id}"))
            .fetch(FetchRoute::get("/api/posts/{id}"))
            .pull(
                Feed::get("/api/posts")
                    .query("updatedAt_gte", "{cursor}")
                    .query("page", "{page}")
                    .query("per_page", "{limit}")
                    .query("envelope", "none")
                    .cursor_field("updatedAt", TimeFormat::EpochMs)
                    .filter(Filter::Inclusive)
                    .pagination(Pagination::page(1))
                    .tombstone("deleted"),
            );
        let transport = RestTransport::builder("https://api.example.com")
            .table("posts", posts)
            .build()?;
        Ok(transport)
    }

    pub fn todos() -> anyhow::Result<tidesync_transport_rest::RestTransport> {
        use tidesync_transport_rest::*;

        let todos = TableRoutes::new()
            .etag()
            .create(WriteRoute::post("/api/todos").header("Prefer", "return=representation"))
            .update(WriteRoute::patch("/api/todos?id=eq.{id}"))
            .delete(WriteRoute::delete("/api/todos?id=eq.{id}"))
            .fetch(FetchRoute::get("/api/todos?id=eq.{id}&envelope=none"))
            .pull(
                Feed::get("/api/todos")
                    .query("updated_at", "gt.{cursor}")
                    .query("limit", "{limit}")
                    .query("offset", "{offset}")
                    .query("envelope", "none")
                    .query("tombstones", "exclude")
                    .cursor_field("updatedAt", TimeFormat::EpochMs)
                    .filter(Filter::Exclusive)
                    .pagination(Pagination::offset())
                    .deleted_feed(
                        Feed::get("/api/todos/deleted")
                            .query("since", "{cursor}")
                            .query("limit", "{limit}")
                            .items("/data")
                            .cursor_field("deletedAt", TimeFormat::EpochMs)
                            .filter(Filter::Exclusive)
                            .pagination(Pagination::none().has_more("/hasMore")),
                    ),
            );
        let transport = RestTransport::builder("https://api.example.com")
            .table("todos", todos)
            .build()?;
        Ok(transport)
    }

    pub fn notes() -> anyhow::Result<tidesync_transport_rest::RestTransport> {
        use std::time::Duration;
        use tidesync_transport_rest::*;

        let notes = TableRoutes::new()
            .server_ids()
            .version_field("version")
            .create(WriteRoute::post("/api/notes"))
            .update(WriteRoute::patch("/api/notes/{id}"))
            .delete(WriteRoute::delete("/api/notes/{id}"))
            .fetch(FetchRoute::get("/api/notes/{id}"))
            .bulk(BulkRoute::post("/api/notes/bulk"))
            .pull(
                Feed::get("/api/notes")
                    .query("filter", "(updated > '{cursor}')")
                    .query("cursor", "{token}")
                    .query("limit", "{limit}")
                    .items("/data")
                    .cursor_field("updatedAt", TimeFormat::Rfc3339)
                    .filter(Filter::Exclusive)
                    .pagination(
                        Pagination::token("/nextCursor")
                            .has_more("/hasMore")
                            .total("/total"),
                    )
                    .tombstone("deleted"),
            );
        let transport = RestTransport::builder("https://api.example.com")
            .idempotency_header(Some("Idempotency-Key"))
            .request_timeout(Duration::from_secs(15))
            .table("notes", notes)
            .build()?;
        Ok(transport)
    }
}

/// The doc's config, pointed at `server`.
fn against(config: &RestConfig, server: &ReferenceServer) -> anyhow::Result<RestTransport> {
    let mut config = config.clone();
    config.base_url = server.url().to_owned();
    Ok(RestTransport::from_config(config).build()?)
}

#[test]
fn the_doc_has_twelve_toml_blocks_and_the_first_three_equal_their_rust_forms() -> anyhow::Result<()>
{
    let blocks = toml_blocks();
    assert_eq!(blocks.len(), 12);
    for block in &blocks[3..] {
        parse(block).validate()?;
    }
    let forms = [
        rust_forms::posts()?,
        rust_forms::todos()?,
        rust_forms::notes()?,
    ];
    for (block, rust) in blocks.iter().zip(&forms) {
        let parsed = parse(block);
        parsed.validate()?;
        assert_eq!(
            &parsed,
            rust.config(),
            "TOML and Rust forms differ:\n{block}"
        );
    }
    Ok(())
}

#[test]
fn toml_errors_name_the_problem() {
    let bad = toml_blocks()[0].replace("filter = \"inclusive\"", "filter = \"sometimes\"");
    let err = toml::from_str::<RestConfig>(&bad).expect_err("bad enum");
    assert!(err.to_string().contains("sometimes"), "{err}");
    let bad = toml_blocks()[0].replace("cursor_field", "cursor_feild");
    let err = toml::from_str::<RestConfig>(&bad).expect_err("typo");
    assert!(
        err.to_string().contains("unknown field `cursor_feild`"),
        "{err}"
    );
    let bad = toml_blocks()[0].replace(
        "/api/posts/{id}\" }\ndelete",
        "/api/posts/{slug}\" }\ndelete",
    );
    let err = RestTransport::from_config(toml::from_str(&bad).expect("parses"))
        .build()
        .expect_err("unknown placeholder");
    assert!(err.to_string().contains("{slug}"), "{err}");
}

#[tokio::test]
async fn json_server_like_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder().without_auth().start().await;
    let t = against(&parse(toml_blocks()[0]), &server)?;
    t.push(push(
        "posts",
        Op::Create,
        "p1",
        Some(json!({"id": "p1", "title": "hi"})),
    ))
    .await?;
    let mut update = push(
        "posts",
        Op::Update,
        "p1",
        Some(json!({"id": "p1", "title": "ho"})),
    );
    update.base_version = Some("1".into());
    assert_eq!(t.push(update).await?.version.as_deref(), Some("2"));
    let first = drain(&t, "posts", None, 2).await?;
    assert_eq!(first.changed, ["p1"]);
    t.push(push("posts", Op::Delete, "p1", None)).await?;
    let next = drain(&t, "posts", first.cursor, 2).await?;
    assert_eq!(next.deleted, ["p1"]);
    Ok(())
}

#[tokio::test]
async fn postgrest_like_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder().without_auth().start().await;
    let t = against(&parse(toml_blocks()[1]), &server)?;
    let created = t
        .push(push(
            "todos",
            Op::Create,
            "t1",
            Some(json!({"id": "t1", "done": false})),
        ))
        .await?;
    assert_eq!(created.version.as_deref(), Some("1"), "from the ETag");
    let mut update = push(
        "todos",
        Op::Update,
        "t1",
        Some(json!({"id": "t1", "done": true})),
    );
    update.changed = vec!["done".into()];
    update.base_version = created.version;
    t.push(update).await?;
    let fetched = t.fetch("todos", &Key::from("t1")).await?.expect("found");
    assert_eq!(fetched.record.get("done"), Some(&json!(true)));
    assert!(t.fetch("todos", &Key::from("t9")).await?.is_none());
    let first = drain(&t, "todos", None, 2).await?;
    assert_eq!(first.changed, ["t1"]);
    t.push(push("todos", Op::Delete, "t1", None)).await?;
    let next = drain(&t, "todos", first.cursor, 2).await?;
    assert_eq!(
        (next.changed.len(), next.deleted.clone()),
        (0, vec!["t1".to_owned()])
    );
    Ok(())
}

#[tokio::test]
async fn envelope_cursor_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "notes",
            CollectionConfig::default()
                .server_ids(true)
                .timestamps(TimestampFormat::Rfc3339),
        )
        .start()
        .await;
    let t = against(&parse(toml_blocks()[2]), &server)?;
    let created = t
        .push(push(
            "notes",
            Op::Create,
            "tmp-a",
            Some(json!({"id": "tmp-a", "text": "a"})),
        ))
        .await?;
    assert_eq!(created.server_key, Some(Key::Int(1)));
    let results = t
        .push_batch(vec![
            push("notes", Op::Create, "tmp-b", Some(json!({"text": "b"}))),
            {
                let mut u = push(
                    "notes",
                    Op::Update,
                    1i64,
                    Some(json!({"id": 1, "text": "a2"})),
                );
                u.changed = vec!["text".into()];
                u.base_version = Some("1".into());
                u
            },
        ])
        .await?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let first = drain(&t, "notes", None, 1).await?;
    assert_eq!(first.changed_set().len(), 2);
    assert_eq!(first.pages.first().and_then(|p| p.total), Some(2));
    t.push(push("notes", Op::Delete, 1i64, None)).await?;
    let next = drain(&t, "notes", first.cursor, 1).await?;
    assert_eq!(next.deleted, ["1"]);
    Ok(())
}

/// Seeds `n` records of `table` one millisecond apart (`prefix000`, …).
fn seed_apart(server: &ReferenceServer, table: &str, prefix: &str, n: i64) {
    let t0 = server.now_ms();
    for i in 0..n {
        server.freeze_clock(Some(t0 + i));
        server
            .insert_direct(table, json!({"id": format!("{prefix}{i:03}"), "n": i}))
            .expect("seed");
    }
    server.freeze_clock(None);
}

/// A first sync with an update, a delete and an insert after its first page, then an
/// incremental one: the client ends equal to the server both times, and caught up.
async fn walk_with_edits(
    server: &ReferenceServer,
    t: &RestTransport,
    table: &str,
    page_size: usize,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut local = Local::new();
    let clock = server.now_ms() + 5_000;
    let edit = || {
        server.freeze_clock(Some(clock));
        server
            .update_direct(table, "r000", json!({"n": -1}))
            .expect("update");
        server.freeze_clock(Some(clock + 1));
        server.delete_direct(table, "r001").expect("delete");
        server.freeze_clock(Some(clock + 2));
        server
            .insert_direct(table, json!({"id": "late"}))
            .expect("insert");
        server.freeze_clock(None);
    };
    let cursor = pull_table_with_edit(t, table, &mut local, None, page_size, 0, &edit).await?;
    assert_eq!(local, table_state(server, table), "{table}: first sync");
    let edit = || {
        server.freeze_clock(Some(clock + 3_000));
        server
            .update_direct(table, "r002", json!({"n": -2}))
            .expect("update");
        server.freeze_clock(None);
    };
    // Seven changes: more than one page (size 3, or the cap of 5) before the edit lands.
    for i in 3..10 {
        server.freeze_clock(Some(clock + 2_000 + i));
        server.update_direct(table, format!("r{i:03}").as_str(), json!({"n": i}))?;
    }
    server.freeze_clock(None);
    let cursor = pull_table_with_edit(t, table, &mut local, cursor, page_size, 0, &edit).await?;
    assert_eq!(
        local,
        table_state(server, table),
        "{table}: incremental sync"
    );
    let rest = drain(t, table, cursor.clone(), page_size).await?;
    assert!(
        rest.changed.is_empty() && rest.deleted.is_empty(),
        "{table}: caught up: {rest:?}"
    );
    Ok(rest.cursor)
}

#[tokio::test]
async fn sql_backed_text_timestamp_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "orders",
            CollectionConfig::default()
                .timestamps(TimestampFormat::SpaceSeparated)
                .text_compare(true)
                .sort_from_params(true)
                .max_limit(5),
        )
        .start()
        .await;
    let t = against(&parse(toml_blocks()[3]), &server)?;
    seed_apart(&server, "orders", "r", 12);
    let cursor = walk_with_edits(&server, &t, "orders", 50).await?;
    let cursor = cursor.unwrap_or_default();
    assert_eq!(
        cursor["changes"]["cap"],
        json!(5),
        "the silent cap was learned"
    );
    let ts = cursor["changes"]["since"]["ts"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        ts.as_bytes().get(10),
        Some(&b' '),
        "stored as the API wrote it: {ts}"
    );
    let sent = server
        .request_log()
        .into_iter()
        .filter_map(|r| r.query)
        .find(|q| q.contains("filter="))
        .unwrap_or_default();
    assert!(
        sent.starts_with("filter=") && sent.contains("&orderby.updatedAt=asc&orderby.id=asc&"),
        "in the order written: {sent}"
    );
    Ok(())
}

#[tokio::test]
async fn link_pages_behind_a_proxy_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "events",
            CollectionConfig::default()
                .timestamps(TimestampFormat::Rfc3339)
                .answer_rounding_ms(1000)
                .link_origin("http://10.0.0.7:8080"),
        )
        .start()
        .await;
    let t = against(&parse(toml_blocks()[4]), &server)?;
    seed_apart(&server, "events", "r", 10);
    walk_with_edits(&server, &t, "events", 3).await?;
    let log = server.request_log();
    assert!(log.iter().all(|r| r.path.starts_with("/api/events")));
    assert!(
        log.iter().filter(|r| r.method == "GET").count() > 4,
        "walked several pages via the rewritten links"
    );
    Ok(())
}

/// A push of `op` on `key` based on `base`.
fn based(table: &str, op: Op, key: &str, title: &str, base: &str) -> tidesync_core::PushRequest {
    let record = (op != Op::Delete).then(|| json!({"id": key, "title": title}));
    let mut req = push(table, op, key, record);
    req.base_version = Some(base.to_owned());
    req.idempotency_key = format!("{}-{key}-{title}-{base}", op.as_str());
    req
}

/// One write shape end to end on the transport: create, update on the agreed version, a stale
/// update and a stale delete (both conflicts, the server unchanged), a delete on the agreed
/// version, and the pull showing it. Returns the server's versions after the update.
async fn write_shape(
    block: usize,
    table: &str,
    config: CollectionConfig,
) -> anyhow::Result<(ReferenceServer, RestTransport)> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(table, config)
        .start()
        .await;
    let t = against(&parse(toml_blocks()[block]), &server)?;
    let created = t
        .push(push(
            table,
            Op::Create,
            "k1",
            Some(json!({"id": "k1", "title": "a"})),
        ))
        .await?;
    assert_eq!(created.version.as_deref(), Some("1"), "{table}: create");
    let updated = t.push(based(table, Op::Update, "k1", "b", "1")).await?;
    assert_eq!(updated.version.as_deref(), Some("2"), "{table}: update");
    let on_server = server.record(table, "k1").expect("live");
    assert_eq!(
        (on_server["title"].clone(), on_server["version"].clone()),
        (json!("b"), json!(2))
    );
    for op in [Op::Update, Op::Delete] {
        let err = t
            .push(based(table, op, "k1", "stale", "1"))
            .await
            .expect_err("stale");
        assert_eq!(
            err.kind(),
            ErrorKind::Conflict,
            "{table}: stale {op:?}: {err}"
        );
        assert_eq!(err.record_key(), Some("k1"));
        let on_server = server.record(table, "k1").expect("still live");
        assert_eq!(
            on_server["title"],
            json!("b"),
            "{table}: stale {op:?} changed nothing"
        );
    }
    t.push(based(table, Op::Delete, "k1", "", "2")).await?;
    assert_eq!(
        server.record_any(table, "k1").expect("tombstone")["deleted"],
        json!(true)
    );
    let pulled = drain(&t, table, None, 10).await?;
    assert_eq!(pulled.deleted, ["k1"], "{table}");
    Ok((server, t))
}

#[tokio::test]
async fn bare_if_match_404_config_works() -> anyhow::Result<()> {
    let (server, t) = write_shape(
        5,
        "tasks",
        CollectionConfig::default().concurrency(Concurrency::BareIfMatch404),
    )
    .await?;
    let sent: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(n, _)| n == "if-match")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(sent, ["1", "1", "1", "2"], "bare, the base version");
    // The server stores what it is sent: the body carried base + 1.
    t.push(push("tasks", Op::Create, "k2", Some(json!({"id": "k2"}))))
        .await?;
    t.push(based("tasks", Op::Update, "k2", "x", "1")).await?;
    assert_eq!(
        server.record("tasks", "k2").expect("live")["version"],
        json!(2)
    );
    // The quoted form `etag = true` sends is refused with 404, which without a rule is not a
    // conflict: the rule is what makes it one.
    let mut config = parse(toml_blocks()[5]);
    if let Some(tasks) = config.tables.get_mut("tasks") {
        tasks.version.etag = true;
        if let Some(update) = tasks.update.as_mut() {
            update.headers = Default::default();
            update.answers.clear();
        }
    }
    let quoted = against(&config, &server)?;
    let err = quoted
        .push(based("tasks", Op::Update, "k2", "y", "2"))
        .await
        .expect_err("quoted refused");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Permanent, Some(404))
    );
    Ok(())
}

#[tokio::test]
async fn conflict_as_400_config_works() -> anyhow::Result<()> {
    let (_server, t) = write_shape(
        6,
        "items",
        CollectionConfig::default().concurrency(Concurrency::Conflict400),
    )
    .await?;
    // Another 400 stays a refusal for good.
    t.push(push("items", Op::Create, "k3", Some(json!({"id": "k3"}))))
        .await?;
    let err = t
        .push(based("items", Op::Update, "k3", "x", "not-a-number"))
        .await
        .expect_err("bad version");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Permanent, Some(400))
    );
    Ok(())
}

#[tokio::test]
async fn conditional_update_by_query_config_works() -> anyhow::Result<()> {
    let (server, _t) = write_shape(7, "posts", CollectionConfig::default()).await?;
    let stale: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PUT" || r.method == "DELETE")
        .filter_map(|r| r.query)
        .collect();
    assert_eq!(
        stale,
        [
            "where.id.eq=k1&where.version.eq=1",
            "where.id.eq=k1&where.version.eq=1",
            "where.id.eq=k1&where.version.eq=1",
            "where.id.eq=k1&where.version.eq=2"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn row_envelope_and_required_fields_config_works() -> anyhow::Result<()> {
    let (server, t) = write_shape(
        8,
        "rows",
        CollectionConfig::default()
            .row_envelope(true)
            .required_fields(&["deleted", "version"]),
    )
    .await?;
    let bodies: Vec<serde_json::Value> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST" || r.method == "PUT")
        .map(|r| serde_json::from_str(&r.body))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        bodies[0],
        json!({"row": {"id": "k1", "title": "a", "deleted": false, "version": 1}})
    );
    assert_eq!(
        bodies[1],
        json!({"row": {"id": "k1", "title": "b", "deleted": false, "version": 1}, "return": true})
    );
    // Without the defaults the server refuses the write, naming the field.
    let mut config = parse(toml_blocks()[8]);
    if let Some(create) = config
        .tables
        .get_mut("rows")
        .and_then(|r| r.create.as_mut())
    {
        create.defaults.clear();
    }
    let err = against(&config, &server)?
        .push(push("rows", Op::Create, "k4", Some(json!({"id": "k4"}))))
        .await
        .expect_err("required fields");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Permanent, Some(400))
    );
    let excerpt = err.response_excerpt().unwrap_or_default();
    assert!(
        excerpt.contains("missing required field `deleted`"),
        "{excerpt}"
    );
    // Without `extra` the update answers `{"ok": true}`, which holds no record.
    let mut config = parse(toml_blocks()[8]);
    if let Some(update) = config
        .tables
        .get_mut("rows")
        .and_then(|r| r.update.as_mut())
    {
        update.extra.clear();
    }
    t.push(push("rows", Op::Create, "k5", Some(json!({"id": "k5"}))))
        .await?;
    let err = against(&config, &server)?
        .push(based("rows", Op::Update, "k5", "x", "1"))
        .await
        .expect_err("no record in {\"ok\": true}");
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    Ok(())
}

#[tokio::test]
async fn server_assigned_keys_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "memos",
            CollectionConfig::default()
                .server_ids(true)
                .refuse_client_ids(true),
        )
        .start()
        .await;
    let config = parse(toml_blocks()[9]);
    let t = against(&config, &server)?;
    let created = t
        .push(push(
            "memos",
            Op::Create,
            "tmp-1",
            Some(json!({"id": "tmp-1", "text": "a", "draft": "mine"})),
        ))
        .await?;
    assert_eq!(created.server_key, Some(Key::Int(1)));
    assert_eq!(
        server
            .record("memos", 1i64)
            .map(|r| (r["text"].clone(), r.get("draft").cloned())),
        Some((json!("a"), None)),
        "created without the local key and the local-only field"
    );
    let mut update = push(
        "memos",
        Op::Update,
        1i64,
        Some(json!({"id": 1, "text": "b", "draft": "mine"})),
    );
    update.base_version = Some("1".into());
    t.push(update).await?;
    let on_server = server.record("memos", 1i64).expect("live");
    assert_eq!(
        (on_server["text"].clone(), on_server.get("draft")),
        (json!("b"), None)
    );
    // Sending the key is what this server refuses: the setting is what makes creates work.
    let mut keyed = config.clone();
    if let Some(memos) = keyed.tables.get_mut("memos") {
        memos.server_ids = false;
    }
    let err = against(&keyed, &server)?
        .push(push(
            "memos",
            Op::Create,
            "tmp-2",
            Some(json!({"id": "tmp-2"})),
        ))
        .await
        .expect_err("client id refused");
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Permanent, Some(400))
    );
    // A create URL that needs the key cannot work with server ids.
    let mut bad = config;
    if let Some(create) = bad.tables.get_mut("memos").and_then(|m| m.create.as_mut()) {
        create.url = tidesync_transport_rest::Template::parse("/api/memos/{id}")?;
    }
    let err = bad.validate().expect_err("create url needs the key");
    assert!(err.to_string().contains("server_ids"), "{err}");
    Ok(())
}

/// Recipe 11 on a server with no concurrency control: the table asks to be pulled first, and
/// with `fetch_before_write` a stale update or delete is a conflict found by the fetch (which
/// the server itself would have accepted), while one on the current version goes through.
#[tokio::test]
async fn a_server_that_checks_nothing_config_works() -> anyhow::Result<()> {
    use tidesync_transport_rest::ConflictDetection;
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "posts",
            CollectionConfig::default().concurrency(Concurrency::Unchecked),
        )
        .start()
        .await;
    let config = parse(toml_blocks()[10]);
    let t = against(&config, &server)?;
    assert!(t.pull_before_push("posts"));
    // Pulling first finds nothing by itself on the push path: a stale update is accepted.
    t.push(push(
        "posts",
        Op::Create,
        "k1",
        Some(json!({"id": "k1", "title": "a"})),
    ))
    .await?;
    t.push(based("posts", Op::Update, "k1", "b", "1")).await?;
    t.push(based("posts", Op::Update, "k1", "stale", "1"))
        .await
        .expect("the server checks nothing");
    assert_eq!(
        server.record("posts", "k1").expect("live")["title"],
        json!("stale")
    );
    // Fetching before the write finds it.
    let mut fetching = config;
    if let Some(posts) = fetching.tables.get_mut("posts") {
        posts.conflict_detection = ConflictDetection::FetchBeforeWrite;
    }
    let t = against(&fetching, &server)?;
    assert!(!t.pull_before_push("posts"));
    for op in [Op::Update, Op::Delete] {
        let err = t
            .push(based("posts", op, "k1", "late", "1"))
            .await
            .expect_err("stale");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{op:?}: {err}");
        assert_eq!(err.record_key(), Some("k1"));
        let mut remote = err;
        let current = remote.take_remote_record().expect("the fetched record");
        assert_eq!(current["title"], json!("stale"), "{op:?}");
    }
    assert_eq!(
        server.record("posts", "k1").expect("unchanged")["version"],
        json!(3)
    );
    t.push(based("posts", Op::Update, "k1", "c", "3")).await?;
    t.push(based("posts", Op::Delete, "k1", "", "4")).await?;
    assert!(server.record("posts", "k1").is_none());
    // A delete of a record that is gone already is done, without sending it.
    server.clear_log();
    t.push(based("posts", Op::Delete, "k1", "", "5")).await?;
    assert!(server.request_log().iter().all(|r| r.method == "GET"));
    // Without a fetch route or a version to compare, the setting is refused when built.
    let mut no_fetch = fetching.clone();
    if let Some(posts) = no_fetch.tables.get_mut("posts") {
        posts.fetch = None;
    }
    let err = no_fetch.validate().expect_err("needs a fetch route");
    assert_eq!(err.field_name(), Some("fetch"), "{err}");
    let mut no_version = fetching;
    if let Some(posts) = no_version.tables.get_mut("posts") {
        posts.version = Default::default();
    }
    let err = no_version.validate().expect_err("needs a version");
    assert_eq!(err.field_name(), Some("version"), "{err}");
    Ok(())
}

/// Recipe 12: creates, updates and deletes of one batch go out as one plain-row request per
/// kind, and every entry gets its own result back (by position for creates, by key for the
/// others); a refused request is every entry's refusal.
#[tokio::test]
async fn plain_row_bulk_config_works() -> anyhow::Result<()> {
    let server = ReferenceServer::builder()
        .without_auth()
        .collection("lines", CollectionConfig::default())
        .start()
        .await;
    let t = against(&parse(toml_blocks()[11]), &server)?;
    assert!(t.supports_batch("lines"));
    let line = |key: &str, title: &str| Some(json!({"id": key, "title": title, "n": 1}));
    let created = t
        .push_batch(vec![
            push("lines", Op::Create, "a", line("a", "a")),
            push("lines", Op::Create, "b", line("b", "b")),
            push("lines", Op::Create, "c", line("c", "c")),
        ])
        .await?;
    for (result, key) in created.iter().zip(["a", "b", "c"]) {
        let outcome = result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(outcome.version.as_deref(), Some("1"), "{key}");
        assert_eq!(
            outcome.record.as_ref().map(|r| r["id"].clone()),
            Some(json!(key))
        );
    }
    // A mixed batch: updates (changed fields only, listed in another order by no one) and a
    // delete, each kind in its own request.
    let mut update_b = based("lines", Op::Update, "b", "b2", "1");
    update_b.changed = vec!["title".into()];
    let mixed = t
        .push_batch(vec![
            based("lines", Op::Update, "a", "a2", "1"),
            based("lines", Op::Delete, "c", "", "1"),
            update_b,
        ])
        .await?;
    assert_eq!(mixed.len(), 3);
    assert_eq!(
        mixed[0].as_ref().map(|o| o.version.clone()).ok(),
        Some(Some("2".into()))
    );
    assert!(mixed[1].is_ok());
    assert_eq!(
        mixed[2].as_ref().map(|o| o.version.clone()).ok(),
        Some(Some("2".into()))
    );
    let log = server.request_log();
    let sent: Vec<(String, String)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        sent,
        [
            ("POST".to_owned(), "/api/lines/rows".to_owned()),
            ("PATCH".to_owned(), "/api/lines/rows".to_owned()),
            ("DELETE".to_owned(), "/api/lines/rows".to_owned()),
        ]
    );
    let bodies: Vec<serde_json::Value> = log
        .iter()
        .map(|r| serde_json::from_str(&r.body))
        .collect::<Result<_, _>>()?;
    assert_eq!(bodies[0]["rows"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        bodies[1]["rows"],
        json!([{"id": "a", "title": "a2", "version": 1}, {"id": "b", "title": "b2", "version": 1}])
    );
    assert_eq!(bodies[2], json!({"rows": [{"id": "c"}]}));
    assert_eq!(server.record("lines", "a").expect("live")["title"], "a2");
    assert_eq!(server.record("lines", "b").expect("live")["title"], "b2");
    assert!(server.record("lines", "c").is_none());
    // All or nothing: a create of a taken id refuses the whole request; its entries are then
    // sent one by one, so each gets its own answer.
    server.clear_log();
    let refused = t
        .push_batch(vec![
            push("lines", Op::Create, "d", line("d", "d")),
            push("lines", Op::Create, "c", line("c", "again")),
        ])
        .await?;
    assert!(refused[0].is_ok(), "{:?}", refused[0]);
    let err = refused[1].as_ref().expect_err("taken by a tombstone");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.record_key(), Some("c"));
    assert_eq!(
        server.record("lines", "d").expect("created alone")["title"],
        "d"
    );
    let statuses: Vec<(String, Option<u16>)> = server
        .request_log()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("/api/lines/rows".to_owned(), Some(409)),
            ("/api/lines".to_owned(), Some(201)),
            ("/api/lines".to_owned(), Some(409)),
        ]
    );
    // The mixed `bulk` route cannot take plain rows: one kind of operation per request.
    let mut mixed_rows = parse(toml_blocks()[11]);
    if let Some(lines) = mixed_rows.tables.get_mut("lines") {
        lines.bulk = lines.bulk_create.take();
    }
    let err = mixed_rows.validate().expect_err("rows on the mixed route");
    assert_eq!(err.field_name(), Some("format"), "{err}");
    Ok(())
}

/// Fetch before write, batched: a bulk push of recipe 12 with `fetch_before_write` and a
/// `fetch_many` route reads every record it updates or deletes in one GET; the stale update is
/// a conflict carrying the server's record and is not sent, the others go in one request.
#[tokio::test]
async fn fetch_before_write_is_batched_through_fetch_many() -> anyhow::Result<()> {
    use tidesync_transport_rest::{ConflictDetection, FetchManyRoute};
    let server = ReferenceServer::builder()
        .without_auth()
        .collection(
            "lines",
            CollectionConfig::default().concurrency(Concurrency::Unchecked),
        )
        .start()
        .await;
    let mut config = parse(toml_blocks()[11]);
    if let Some(lines) = config.tables.get_mut("lines") {
        lines.conflict_detection = ConflictDetection::FetchBeforeWrite;
        lines.fetch_many = Some(FetchManyRoute::get(
            "/api/lines?id=in.({keys})&limit=1000",
            "/data",
        ));
    }
    let t = against(&config, &server)?;
    for key in ["a", "b", "c"] {
        t.push(push(
            "lines",
            Op::Create,
            key,
            Some(json!({"id": key, "title": key})),
        ))
        .await?;
    }
    server
        .update_direct("lines", "b", json!({"title": "remote"}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    server.clear_log();
    let results = t
        .push_batch(vec![
            based("lines", Op::Update, "a", "a2", "1"),
            based("lines", Op::Update, "b", "b2", "1"),
            based("lines", Op::Delete, "c", "", "1"),
        ])
        .await?;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let mut stale = results[1]
        .as_ref()
        .map(|_| ())
        .expect_err("b changed on the server")
        .duplicate();
    assert_eq!(stale.kind(), ErrorKind::Conflict, "{stale}");
    assert_eq!(
        stale.take_remote_record().map(|r| r["title"].clone()),
        Some(json!("remote"))
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let sent: Vec<String> = server
        .request_log()
        .into_iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query.unwrap_or_default()))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent[0].starts_with("GET /api/lines?id=in.(a,b,c)"),
        "{sent:?}"
    );
    assert_eq!(server.record("lines", "a").expect("live")["title"], "a2");
    assert_eq!(
        server.record("lines", "b").expect("live")["title"],
        "remote"
    );
    assert!(server.record("lines", "c").is_none());
    Ok(())
}
