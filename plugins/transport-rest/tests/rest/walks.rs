//! Issue 16: pulls never skip silently. Query order, checkpoints without URLs, timestamp text
//! as the API writes it, shifts during page walks, rounding, and silent page caps, each
//! against the reference server configured to behave like the real servers that showed them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tidesync_core::{PullRequest, Transport};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer};
use tidesync_transport_rest::{RestConfig, RestTransport};

use crate::support::{drain, key_text, seed};

const T: &str = "items";

async fn server_with(config: CollectionConfig) -> ReferenceServer {
    ReferenceServer::builder()
        .without_auth()
        .collection(T, config)
        .start()
        .await
}

/// A transport from a TOML config (the `[tables.items.pull]` part), pointed at `server`.
fn from_toml(server: &ReferenceServer, pull: &str) -> anyhow::Result<RestTransport> {
    let text = format!(
        "base_url = \"{}\"\n[tables.items.pull]\n{pull}",
        server.url()
    );
    let config: RestConfig = toml::from_str(&text)?;
    Ok(RestTransport::from_config(config).build()?)
}

/// The query strings of the pulls the server saw.
fn pull_queries(server: &ReferenceServer) -> Vec<String> {
    server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/api/items")
        .map(|r| r.query.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn query_parameters_go_out_in_the_order_written() -> anyhow::Result<()> {
    let server = server_with(CollectionConfig::default().sort_from_params(true)).await;
    let all = seed(&server, T, "q", 7);
    // Reverse-alphabetical on purpose: a sorted map would send `limit` first and `orderby.id`
    // before `orderby.updatedAt`.
    let t = from_toml(
        &server,
        r#"url = "/api/items"
query = { "orderby.updatedAt" = "asc", "orderby.id" = "asc", updatedAt_gt = "{cursor}", offset = "{offset}", limit = "{limit}" }
items = "/data"
cursor_field = "updatedAt"
filter = "exclusive"
pagination = { style = "offset", has_more = "/hasMore" }
"#,
    )?;
    let got = drain(&t, T, None, 3).await?;
    assert_eq!(got.changed_set(), all);
    let queries = pull_queries(&server);
    assert!(!queries.is_empty());
    for q in &queries {
        let names: Vec<&str> = q.split('&').filter_map(|p| p.split('=').next()).collect();
        let expected: Vec<&str> = [
            "orderby.updatedAt",
            "orderby.id",
            "updatedAt_gt",
            "offset",
            "limit",
        ]
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
        assert_eq!(names, expected, "{q}");
    }
    // The server sorted by `updatedAt` (the first parameter), so the items came in the order
    // they were written (ids were seeded in that order too, so check the timestamps).
    let stamps: Vec<i64> = got
        .pages
        .iter()
        .flat_map(|p| p.records.iter())
        .filter_map(|r| r.get("updatedAt").and_then(Value::as_i64))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    Ok(())
}

/// A server whose `Link`s name an origin where nothing listens (a proxy rewriting `Host`).
async fn proxied_server() -> ReferenceServer {
    server_with(CollectionConfig::default().link_origin("http://127.0.0.1:9")).await
}

#[tokio::test]
async fn links_to_another_origin_are_rewritten_onto_base_url_or_refused() -> anyhow::Result<()> {
    let server = proxied_server().await;
    let all = seed(&server, T, "l", 7);
    let link = |policy: &str| {
        format!(
            "url = \"/api/items\"\nquery = {{ limit = \"{{limit}}\" }}\nitems = \"/data\"\n\
             pagination = {{ style = \"link\", foreign_links = \"{policy}\" }}\n"
        )
    };
    let t = from_toml(&server, &link("rewrite"))?;
    let got = drain(&t, T, None, 2).await?;
    assert_eq!(got.changed_set(), all);
    assert_eq!(got.pages.len(), 4, "followed on base_url");

    let t = from_toml(&server, &link("refuse"))?;
    let err = drain(&t, T, None, 2).await.expect_err("refused");
    let err = err
        .downcast_ref::<tidesync_core::Error>()
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(err.kind(), tidesync_core::ErrorKind::Permanent);
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");

    let t = from_toml(&server, &link("follow"))?;
    let err = drain(&t, T, None, 2)
        .await
        .expect_err("nothing listens there");
    let err = err
        .downcast_ref::<tidesync_core::Error>()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(err.retryable(), "followed to the dead origin: {err}");
    Ok(())
}

#[tokio::test]
async fn only_the_pagination_style_decides_what_is_followed() -> anyhow::Result<()> {
    // Every answer carries a `Link` to a dead origin; page and token walks must not read it.
    let server = proxied_server().await;
    let all = seed(&server, T, "s", 8);
    for pull in [
        "url = \"/api/items\"\nquery = { page = \"{page}\", per_page = \"{limit}\" }\n\
         items = \"/data\"\npagination = { style = \"page\", total = \"/total\", foreign_links = \"refuse\" }\n",
        "url = \"/api/items\"\nquery = { cursor = \"{token}\", limit = \"{limit}\" }\n\
         items = \"/data\"\npagination = { style = \"token\", next = \"/nextCursor\", foreign_links = \"refuse\" }\n",
    ] {
        server.clear_log();
        let t = from_toml(&server, pull)?;
        let got = drain(&t, T, None, 3).await?;
        assert_eq!(got.changed_set(), all, "{pull}");
        let queries = pull_queries(&server);
        assert_eq!(queries.len(), 3, "{pull}: {queries:?}");
        if pull.contains("page") {
            let pages: Vec<&str> = queries
                .iter()
                .filter_map(|q| q.split('&').find_map(|p| p.strip_prefix("page=")))
                .collect();
            assert_eq!(pages, ["1", "2", "3"], "page numbers, not links");
        }
        // The stored checkpoint never holds a URL.
        for page in &got.pages {
            let stored = page
                .cursor
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(!stored.contains("http"), "{stored}");
        }
    }
    Ok(())
}

/// The feeds of every walking style, in the reference server's syntax.
fn every_style() -> Vec<(&'static str, String)> {
    let common =
        "items = \"/data\"\ncursor_field = \"updatedAt\"\ntombstone = { field = \"deleted\" }\n";
    vec![
        (
            "none + exclusive",
            format!(
                "url = \"/api/items\"\nquery = {{ updated_after = \"{{cursor}}\", limit = \"{{limit}}\" }}\n{common}filter = \"exclusive\"\npagination = {{ has_more = \"/hasMore\" }}\n"
            ),
        ),
        (
            "none + inclusive",
            format!(
                "url = \"/api/items\"\nquery = {{ updatedAt_gte = \"{{cursor}}\", limit = \"{{limit}}\" }}\n{common}filter = \"inclusive\"\n"
            ),
        ),
        (
            "keyset",
            format!(
                "url = \"/api/items\"\nquery = {{ after_updated = \"{{cursor}}\", after_id = \"{{after_key}}\", limit = \"{{limit}}\" }}\n{common}filter = \"keyset\"\npagination = {{ has_more = \"/hasMore\" }}\n"
            ),
        ),
        (
            "offset",
            format!(
                "url = \"/api/items\"\nquery = {{ updated_at = \"gt.{{cursor}}\", limit = \"{{limit}}\", offset = \"{{offset}}\" }}\n{common}filter = \"exclusive\"\npagination = {{ style = \"offset\" }}\n"
            ),
        ),
        (
            "page",
            format!(
                "url = \"/api/items\"\nquery = {{ since = \"{{cursor}}\", page = \"{{page}}\", per_page = \"{{limit}}\" }}\n{common}filter = \"exclusive\"\npagination = {{ style = \"page\", total = \"/total\" }}\n"
            ),
        ),
        (
            "token",
            format!(
                "url = \"/api/items\"\nquery = {{ filter = \"(updated > '{{cursor}}')\", cursor = \"{{token}}\", limit = \"{{limit}}\" }}\n{common}filter = \"exclusive\"\npagination = {{ style = \"token\", next = \"/nextCursor\" }}\n"
            ),
        ),
        (
            "link",
            format!(
                "url = \"/api/items\"\nquery = {{ updated_after = \"{{cursor}}\", limit = \"{{limit}}\" }}\n{common}filter = \"exclusive\"\npagination = {{ style = \"link\" }}\n"
            ),
        ),
    ]
}

/// What the client holds: id → version, or `None` for a delete.
pub type Local = std::collections::BTreeMap<String, Option<u64>>;

/// Applies a pulled page to `local`.
pub fn apply(local: &mut Local, page: &tidesync_core::PullPage) {
    for r in &page.records {
        let version = r.get("version").and_then(Value::as_u64);
        local.insert(key_text(r.get("id")), version);
    }
    for key in &page.deleted {
        local.insert(key.to_string(), None);
    }
}

/// The server's state of `table` in the same shape.
pub fn table_state(server: &ReferenceServer, table: &str) -> Local {
    let mut out = Local::new();
    for r in server.records(table) {
        out.insert(
            key_text(r.get("id")),
            r.get("version").and_then(Value::as_u64),
        );
    }
    for r in server.tombstones(table) {
        out.insert(key_text(r.get("id")), None);
    }
    out
}

fn server_state(server: &ReferenceServer) -> Local {
    table_state(server, T)
}

/// Pulls `table` page by page, running `edit` on the server after page `at`, until the
/// cycle ends; returns the last cursor.
pub async fn pull_table_with_edit(
    t: &RestTransport,
    table: &str,
    local: &mut Local,
    cursor: Option<Value>,
    page_size: usize,
    at: usize,
    edit: &dyn Fn(),
) -> anyhow::Result<Option<Value>> {
    let mut cursor = cursor;
    for n in 0..200 {
        let page = t
            .pull(PullRequest {
                table: table.into(),
                cursor: cursor.clone(),
                page_size,
            })
            .await?;
        apply(local, &page);
        cursor = page.cursor.clone();
        if n == at {
            edit();
        }
        if !page.has_more {
            return Ok(cursor);
        }
    }
    anyhow::bail!("the pull did not end")
}

async fn pull_with_edit(
    t: &RestTransport,
    local: &mut Local,
    cursor: Option<Value>,
    page_size: usize,
    at: usize,
    edit: &dyn Fn(),
) -> anyhow::Result<Option<Value>> {
    pull_table_with_edit(t, T, local, cursor, page_size, at, edit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_insert_and_delete_during_a_walk_never_lose_a_record() -> anyhow::Result<()> {
    for (name, pull) in every_style() {
        let server = server_with(CollectionConfig::default()).await;
        let t0 = server.now_ms();
        for i in 0..12 {
            server.freeze_clock(Some(t0 + i));
            server.insert_direct(T, json!({"id": format!("w{i:02}"), "n": i}))?;
        }
        let mut clock = t0 + 100;
        let t = from_toml(&server, &pull)?;
        let mut local = Local::new();
        let edit = || {
            // Earlier records change: later ones move one place forward under offsets.
            server.freeze_clock(Some(clock));
            server
                .update_direct(T, "w00", json!({"n": 100}))
                .expect("update");
            server.freeze_clock(Some(clock + 1));
            server.delete_direct(T, "w01").expect("delete");
            server.freeze_clock(Some(clock + 2));
            server
                .insert_direct(T, json!({"id": "new", "n": 1}))
                .expect("insert");
        };
        let cursor = pull_with_edit(&t, &mut local, None, 3, 0, &edit).await?;
        assert_eq!(local, server_state(&server), "{name}: first sync");

        // And again on an incremental walk, edits after its second page.
        clock += 100;
        let edit = || {
            server.freeze_clock(Some(clock));
            for i in [2, 3, 4] {
                server
                    .update_direct(T, format!("w{i:02}").as_str(), json!({"n": -1}))
                    .expect("update");
            }
            server.freeze_clock(Some(clock + 1));
            server.delete_direct(T, "w05").expect("delete");
            server
                .insert_direct(T, json!({"id": "newer"}))
                .expect("insert");
            server.freeze_clock(Some(clock + 2));
            server
                .update_direct(T, "w03", json!({"n": -2}))
                .expect("update");
        };
        server.freeze_clock(Some(clock - 50));
        for i in [6, 7, 8, 9, 10, 11] {
            server.update_direct(T, format!("w{i:02}").as_str(), json!({"n": 0}))?;
        }
        let cursor = pull_with_edit(&t, &mut local, cursor, 2, 1, &edit).await?;
        assert_eq!(local, server_state(&server), "{name}: incremental sync");
        // Nothing is left behind the checkpoint.
        let rest = drain(&t, T, cursor, 4).await?;
        assert!(
            rest.changed.is_empty() && rest.deleted.is_empty(),
            "{name}: caught up, got {rest:?}"
        );
        server.freeze_clock(None);
    }
    Ok(())
}

#[tokio::test]
async fn cursor_text_is_written_the_way_the_server_compares_it() -> anyhow::Result<()> {
    use tidesync_testkit::server::TimestampFormat;
    // The server stores `YYYY-MM-DD HH:MM:SS.sssZ` and compares the filter value as text.
    let server = server_with(
        CollectionConfig::default()
            .timestamps(TimestampFormat::SpaceSeparated)
            .text_compare(true),
    )
    .await;
    seed(&server, T, "a", 5);
    let feed = |timestamp: &str| {
        format!(
            "url = \"/api/items\"\nquery = {{ filter = \"(updated > '{{cursor}}')\", limit = \"{{limit}}\" }}\n\
             items = \"/data\"\ncursor_field = \"updatedAt\"\ntimestamp = {timestamp}\nfilter = \"exclusive\"\n\
             pagination = {{ has_more = \"/hasMore\" }}\n"
        )
    };
    let right = from_toml(
        &server,
        &feed(r#"{ separator = " ", fraction = 3, zone = "Z" }"#),
    )?;
    // The old behaviour, for contrast: read as RFC 3339, written with a `T`.
    let wrong = from_toml(&server, &feed("\"rfc3339\""))?;
    let first_right = drain(&right, T, None, 2).await?;
    // (One page: its second page would already go wrong, as below.)
    let first_wrong = drain(&wrong, T, None, 10).await?;
    assert_eq!(first_right.changed.len(), 5);
    assert_eq!(first_wrong.changed.len(), 5);
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    for i in 0..3 {
        server.update_direct(T, format!("a{i:03}").as_str(), json!({"n": -1}))?;
    }
    server.insert_direct(T, json!({"id": "b"}))?;
    let next = drain(&right, T, first_right.cursor, 2).await?;
    assert_eq!(
        next.changed_set(),
        ["a000", "a001", "a002", "b"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let cursor_sent = pull_queries(&server)
        .into_iter()
        .rev()
        .find(|q| q.contains("filter="))
        .unwrap_or_default();
    assert!(
        cursor_sent.contains("%20"),
        "a space, not a T: {cursor_sent}"
    );
    // Written with a `T`, the cursor is greater than every time of the same day as text.
    let missed = drain(&wrong, T, first_wrong.cursor, 2).await?;
    assert!(
        missed.changed.is_empty(),
        "the server models the text comparison"
    );
    Ok(())
}

#[tokio::test]
async fn records_inside_a_rounded_instant_are_all_applied() -> anyhow::Result<()> {
    use tidesync_testkit::server::TimestampFormat;
    // Answers show whole seconds; the filter compares milliseconds.
    let server = server_with(
        CollectionConfig::default()
            .timestamps(TimestampFormat::Rfc3339)
            .answer_rounding_ms(1000),
    )
    .await;
    let t = from_toml(
        &server,
        "url = \"/api/items\"\nquery = { updated_after = \"{cursor}\", limit = \"{limit}\" }\n\
         items = \"/data\"\ncursor_field = \"updatedAt\"\ntimestamp = \"rfc3339\"\n\
         filter = \"exclusive\"\npagination = { has_more = \"/hasMore\" }\n",
    )?;
    let second = (server.now_ms() / 1000 + 10) * 1000;
    let mut cursor = None;
    let mut got = BTreeSet::new();
    for (i, at) in [100, 200, 500, 900].into_iter().enumerate() {
        server.freeze_clock(Some(second + at));
        server.insert_direct(T, json!({"id": format!("r{i}")}))?;
        let pulled = drain(&t, T, cursor, 2).await?;
        got.extend(pulled.changed_set());
        cursor = pulled.cursor;
    }
    server.freeze_clock(None);
    assert_eq!(
        got.len(),
        4,
        "every row of the same rounded second: {got:?}"
    );
    let again = drain(&t, T, cursor, 2).await?;
    assert!(again.changed.is_empty(), "caught up: {again:?}");
    Ok(())
}

#[tokio::test]
async fn a_silent_page_cap_is_learned_and_every_record_read() -> anyhow::Result<()> {
    let server = server_with(CollectionConfig::default().max_limit(4)).await;
    let t0 = server.now_ms();
    let mut all = BTreeSet::new();
    for i in 0..11 {
        server.freeze_clock(Some(t0 + i));
        all.extend(seed(&server, T, &format!("c{i}-"), 1));
    }
    server.freeze_clock(None);
    for pull in [
        "url = \"/api/items\"\nquery = { updated_after = \"{cursor}\", limit = \"{limit}\" }\n\
         items = \"/data\"\ncursor_field = \"updatedAt\"\nfilter = \"exclusive\"\n\
         pagination = { has_more = \"/hasMore\" }\n",
        "url = \"/api/items\"\nquery = { page = \"{page}\", per_page = \"{limit}\" }\n\
         items = \"/data\"\npagination = { style = \"page\", has_more = \"/hasMore\" }\n",
        "url = \"/api/items\"\nquery = { limit = \"{limit}\", offset = \"{offset}\" }\n\
         items = \"/data\"\npagination = { style = \"offset\", total = \"/total\" }\n",
    ] {
        server.clear_log();
        let t = from_toml(&server, pull)?;
        let got = drain(&t, T, None, 10).await?;
        assert_eq!(got.changed_set(), all, "{pull}");
        let cap = got.cursor.as_ref().map(|c| c["changes"]["cap"].clone());
        assert_eq!(cap, Some(json!(4)), "{pull}");
        let limits: Vec<String> = pull_queries(&server)
            .iter()
            .filter_map(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("limit=").or(p.strip_prefix("per_page=")))
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(limits.first().map(String::as_str), Some("10"), "{pull}");
        assert!(
            limits[1..].iter().all(|l| l == "4"),
            "{pull}: asks for the cap afterwards: {limits:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn page_and_link_walks_cut_by_a_restart_start_again_and_lose_nothing() -> anyhow::Result<()> {
    let server = server_with(CollectionConfig::default()).await;
    let all = seed(&server, T, "x", 9);
    for (name, pull) in every_style()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "page" | "link"))
    {
        let before = from_toml(&server, &pull)?;
        let first = before
            .pull(PullRequest {
                table: T.into(),
                cursor: None,
                page_size: 3,
            })
            .await?;
        assert!(first.has_more, "{name}");
        let mut local = Local::new();
        apply(&mut local, &first);
        drop(before);
        // Another process: the walk's memory is gone; the stored cursor holds no URL.
        let stored = first.cursor.clone().unwrap_or_default();
        assert!(!stored.to_string().contains("http"), "{name}: {stored}");
        server.update_direct(T, "x000", json!({"n": -1}))?;
        let after = from_toml(&server, &pull)?;
        let rest = pull_with_edit(&after, &mut local, first.cursor, 3, usize::MAX, &|| {}).await?;
        assert_eq!(local, server_state(&server), "{name}");
        assert_eq!(local.len(), all.len(), "{name}");
        let again = drain(&after, T, rest, 3).await?;
        assert!(again.changed.is_empty(), "{name}: caught up: {again:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_offset_walk_at_the_servers_page_cap_reads_everything_in_one_cycle() -> anyhow::Result<()>
{
    // The overlap item must not make a request ask for more than the page size: a server
    // capping at exactly the page size would answer a "short" page and end the walk early.
    let server = server_with(CollectionConfig::default().max_limit(5)).await;
    let t0 = server.now_ms();
    let mut all = BTreeSet::new();
    for i in 0..23 {
        server.freeze_clock(Some(t0 + i));
        all.extend(seed(&server, T, &format!("o{i:02}-"), 1));
    }
    server.freeze_clock(None);
    for filter in ["filter = \"exclusive\"\n", ""] {
        server.clear_log();
        let query = if filter.is_empty() {
            "query = { limit = \"{limit}\", offset = \"{offset}\" }"
        } else {
            "query = { updated_at = \"gt.{cursor}\", limit = \"{limit}\", offset = \"{offset}\" }"
        };
        let t = from_toml(
            &server,
            &format!(
                "url = \"/api/items\"\n{query}\nitems = \"/data\"\ncursor_field = \"updatedAt\"\n\
                 {filter}pagination = {{ style = \"offset\" }}\n"
            ),
        )?;
        let got = drain(&t, T, None, 5).await?;
        assert_eq!(got.changed_set(), all, "{filter}");
        let limits: BTreeSet<String> = pull_queries(&server)
            .iter()
            .filter_map(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("limit="))
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(limits, BTreeSet::from(["5".to_owned()]), "{filter}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_editing_during_walks_never_makes_a_walk_skip() -> anyhow::Result<()> {
    for (name, pull) in every_style() {
        // Every 7th page served, the server edits its oldest record (another client). (Every
        // walk here is shorter than that, so walks started again after an edit complete; a
        // server editing more often than a walk is long is the next test.)
        let server = server_with(CollectionConfig::default().edit_during_pulls(7)).await;
        let t0 = server.now_ms() - 10_000;
        for i in 0..14 {
            server.freeze_clock(Some(t0 + i));
            server.insert_direct(T, json!({"id": format!("e{i:02}")}))?;
        }
        server.freeze_clock(None);
        let t = from_toml(&server, &pull)?;
        let mut local = Local::new();
        let mut cursor = None;
        for _ in 0..6 {
            cursor = pull_with_edit(&t, &mut local, cursor, 5, usize::MAX, &|| {}).await?;
        }
        let edited = server
            .records(T)
            .iter()
            .filter(|r| r.get("serverEdits").is_some())
            .count();
        assert!(edited > 0, "{name}: the server edited during the walks");
        // Quiet again: one more sync brings the rest, unless a walk skipped something.
        server.configure_collection(T, CollectionConfig::default());
        pull_with_edit(&t, &mut local, cursor, 5, usize::MAX, &|| {}).await?;
        assert_eq!(local, server_state(&server), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn walks_that_never_finish_before_the_next_edit_fail_instead_of_skipping()
-> anyhow::Result<()> {
    for (name, pull) in every_style()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "offset" | "page"))
    {
        // An edit every 2nd page while a walk needs 5 pages: no walk completes.
        let server = server_with(CollectionConfig::default().edit_during_pulls(2)).await;
        let t0 = server.now_ms() - 10_000;
        for i in 0..14 {
            server.freeze_clock(Some(t0 + i));
            server.insert_direct(T, json!({"id": format!("f{i:02}")}))?;
        }
        server.freeze_clock(None);
        let t = from_toml(&server, &pull)?;
        let err = drain(&t, T, None, 3)
            .await
            .expect_err("livelock is an error");
        let err = err
            .downcast_ref::<tidesync_core::Error>()
            .unwrap_or_else(|| panic!("{name}: {err}"));
        assert_eq!(err.kind(), tidesync_core::ErrorKind::Permanent, "{name}");
        assert!(
            err.to_string().contains("Re-filter instead"),
            "{name}: {err}"
        );
    }
    Ok(())
}
