//! `tidesync doctor`: one test per finding, each against the reference server configured in
//! the misbehaving way (or the config written wrong), and a correct configuration passing.

use std::time::Duration;

use serde_json::{Value, json};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer, TimestampFormat};

use crate::support::{Env, Run, free_port, replace};

/// The sample's pull section of `posts`.
const POSTS_PULL: &str = "[server.tables.posts.pull]
url = \"/api/posts\"
query = { after_updated = \"{cursor}\", after_id = \"{after_key}\", limit = \"{limit}\" }
items = \"/data\"
cursor_field = \"updatedAt\"
timestamp = \"epoch_ms\"
filter = \"keyset\"
pagination = { has_more = \"/hasMore\" }
tombstone = { field = \"deleted\" }
";

fn env_with(config: CollectionConfig) -> Env {
    Env::with_server(
        ReferenceServer::builder()
            .collection("posts", config)
            .start_background(),
    )
}

/// `n` posts on the server, each a few milliseconds after the previous one.
fn seed(env: &Env, ids: &[&str]) {
    for id in ids {
        env.server
            .insert_direct("posts", json!({ "id": id, "title": format!("Post {id}") }))
            .expect("server insert");
        std::thread::sleep(Duration::from_millis(3));
    }
}

fn posts_pull(env: &Env, section: &str) {
    env.edit(|text| replace(text, POSTS_PULL, section));
}

fn doctor(env: &Env, extra: &[&str]) -> (Run, Value) {
    let mut args = vec!["doctor", "--table", "posts", "--json"];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    let doc = run.json();
    (run, doc)
}

/// The findings of a check.
fn findings<'a>(doc: &'a Value, check: &str) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .map(|all| all.iter().filter(|f| f["check"] == check).collect())
        .unwrap_or_default()
}

/// The finding of `check` with this severity and setting (asserted to be there).
fn finding<'a>(doc: &'a Value, check: &str, severity: &str, setting: &str) -> &'a Value {
    let found = findings(doc, check)
        .into_iter()
        .find(|f| f["severity"] == severity && f["setting"] == setting && f["table"] == "posts");
    match found {
        Some(f) => f,
        None => panic!("no `{check}` {severity} on {setting}: {doc:#}"),
    }
}

fn passed(doc: &Value) -> Vec<String> {
    doc["tables"][0]["passed"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_correct_configuration_passes_read_only_and_with_writes() {
    let env = Env::new();
    seed(&env, &["a", "b", "c", "d"]);
    env.server.delete_direct("posts", "b").expect("tombstone");
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(doc["errors"], 0, "{doc:#}");
    let warnings: Vec<&Value> = doc["findings"]
        .as_array()
        .map(|f| f.iter().filter(|f| f["severity"] != "info").collect())
        .unwrap_or_default();
    assert!(warnings.is_empty(), "{doc:#}");
    let ok = passed(&doc);
    for check in [
        "reachable",
        "clock",
        "items",
        "cursor_field",
        "timestamp",
        "order",
        "filter",
        "tombstone",
        "version",
    ] {
        assert!(ok.iter().any(|p| p == check), "{check} not passed: {doc:#}");
    }

    // Pages smaller than the table: the scratch record is found past the first page.
    env.edit(|text| replace(text, "page_size = 200", "page_size = 2"));
    let (run, doc) = doctor(&env, &["--write"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(passed(&doc).iter().any(|p| p == "write"), "{doc:#}");
    assert!(passed(&doc).iter().any(|p| p == "tombstone"), "{doc:#}");
    assert!(passed(&doc).iter().any(|p| p == "stale_version"), "{doc:#}");
    // The scratch record was deleted again (a tombstone on this server).
    let live: Vec<Value> = env
        .server
        .records("posts")
        .into_iter()
        .filter(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("tidesync-doctor"))
        })
        .collect();
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(env.server.records("posts").len(), 3);

    // Text output: one line per table, exit 0.
    let text = env.ok(&["doctor"]);
    assert!(text.stdout.contains("ok      posts:"), "{text:?}");
    assert!(text.stdout.contains("ok      comments:"), "{text:?}");
}

#[test]
fn refused_credentials_name_the_auth_section() {
    let env = Env::with_server(
        ReferenceServer::builder()
            .auth(Duration::from_secs(60))
            .start_background(),
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(&doc, "auth", "error", "auth");
    assert!(
        f["fix"].as_str().is_some_and(|s| s.contains("bearer_env")),
        "{f}"
    );
}

#[test]
fn an_unreachable_server_names_base_url() {
    let env = Env::new();
    let url = env.server.url().to_owned();
    env.edit(|text| replace(text, &url, &format!("http://127.0.0.1:{}", free_port())));
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    finding(&doc, "reachable", "error", "server.base_url");
}

#[test]
fn a_wrong_path_names_the_pull_url() {
    let env = Env::new();
    posts_pull(
        &env,
        &POSTS_PULL.replace("url = \"/api/posts\"", "url = \"/api/v2/posts\""),
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    finding(&doc, "reachable", "error", "server.tables.posts.pull.url");
}

#[test]
fn an_items_pointer_that_finds_no_array_suggests_the_arrays_there() {
    let env = Env::new();
    seed(&env, &["a"]);
    posts_pull(
        &env,
        &POSTS_PULL.replace("items = \"/data\"", "items = \"/records\""),
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(&doc, "items", "error", "server.tables.posts.pull.items");
    assert!(
        f["fix"].as_str().is_some_and(|s| s.contains("\"/data\"")),
        "{f}"
    );
}

#[test]
fn a_missing_cursor_field_suggests_the_change_time_field() {
    let env = Env::new();
    seed(&env, &["a", "b"]);
    posts_pull(
        &env,
        &POSTS_PULL.replace(
            "cursor_field = \"updatedAt\"",
            "cursor_field = \"modified\"",
        ),
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "cursor_field",
        "error",
        "server.tables.posts.pull.cursor_field",
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|s| s.contains("\"updatedAt\"")),
        "{f}"
    );
}

#[test]
fn a_wrong_timestamp_format_suggests_the_servers_shape() {
    let env = env_with(CollectionConfig::default().timestamps(TimestampFormat::SpaceSeparated));
    seed(&env, &["a", "b"]);
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "timestamp",
        "error",
        "server.tables.posts.pull.timestamp",
    );
    let fix = f["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("separator = \" \"") && fix.contains("fraction = 3"),
        "{f}"
    );

    // Seconds read as milliseconds parse, but to 1970: flagged too.
    let env = env_with(CollectionConfig::default().timestamps(TimestampFormat::EpochSeconds));
    seed(&env, &["a"]);
    let (_, doc) = doctor(&env, &[]);
    let f = finding(
        &doc,
        "timestamp",
        "error",
        "server.tables.posts.pull.timestamp",
    );
    assert!(
        f["fix"].as_str().is_some_and(|s| s.contains("epoch_s")),
        "{f}"
    );
}

#[test]
fn a_server_comparing_cursor_text_differently_names_cursor_format() {
    let env = env_with(
        CollectionConfig::default()
            .timestamps(TimestampFormat::SpaceSeparated)
            .text_compare(true),
    );
    seed(&env, &["a", "b", "c"]);
    posts_pull(
        &env,
        "[server.tables.posts.pull]
url = \"/api/posts\"
query = { filter = \"(updated > '{cursor}')\", limit = \"{limit}\" }
items = \"/data\"
cursor_field = \"updatedAt\"
timestamp = { separator = \" \", fraction = 3, zone = \"Z\" }
cursor_format = \"rfc3339\"
filter = \"exclusive\"
tombstone = { field = \"deleted\" }
",
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "cursor_text",
        "error",
        "server.tables.posts.pull.cursor_format",
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|s| s.contains("separator = \" \"")),
        "{f}"
    );

    // Written the way the server writes it, the same server passes.
    env.edit(|text| replace(text, "cursor_format = \"rfc3339\"\n", ""));
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "{doc:#}");
    assert!(passed(&doc).iter().any(|p| p == "filter"), "{doc:#}");
}

#[test]
fn items_out_of_cursor_order_name_the_query() {
    // Sorted by id unless told otherwise: ids in reverse time order.
    let env = env_with(CollectionConfig::default().sort_from_params(true));
    seed(&env, &["c", "b", "a"]);
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(&doc, "order", "error", "server.tables.posts.pull.query");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|s| s.contains("ascending")),
        "{f}"
    );
}

#[test]
fn a_filter_the_server_ignores_names_the_query() {
    let env = Env::new();
    seed(&env, &["a", "b"]);
    posts_pull(
        &env,
        "[server.tables.posts.pull]
url = \"/api/posts\"
query = { changed_since = \"{cursor}\", limit = \"{limit}\" }
items = \"/data\"
cursor_field = \"updatedAt\"
timestamp = \"epoch_ms\"
filter = \"exclusive\"
tombstone = { field = \"deleted\" }
",
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(&doc, "filter", "error", "server.tables.posts.pull.query");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|s| s.contains("not applied")),
        "{f}"
    );
}

#[test]
fn a_silent_page_cap_names_page_size() {
    let env = env_with(CollectionConfig::default().max_limit(5));
    seed(&env, &["a", "b", "c", "d", "e", "f", "g"]);
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "a warning only: {run:?}");
    let f = finding(&doc, "page_cap", "warning", "sync.page_size");
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|s| s.contains("page_size = 5")),
        "{f}"
    );
}

#[test]
fn a_wrong_tombstone_field_suggests_the_one_deleted_items_carry() {
    let env = Env::new();
    seed(&env, &["a", "b"]);
    env.server.delete_direct("posts", "a").expect("tombstone");
    posts_pull(
        &env,
        &POSTS_PULL.replace(
            "tombstone = { field = \"deleted\" }",
            "tombstone = { field = \"isDeleted\" }",
        ),
    );
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "tombstone",
        "error",
        "server.tables.posts.pull.tombstone.field",
    );
    assert!(
        f["fix"].as_str().is_some_and(|s| s.contains("\"deleted\"")),
        "{f}"
    );
}

#[test]
fn a_missing_version_field_suggests_the_servers() {
    let env = Env::new();
    seed(&env, &["a"]);
    env.edit(|text| {
        replace(
            text,
            "[server.tables.posts]\nversion = { field = \"version\" }",
            "[server.tables.posts]\nversion = { field = \"rev\" }",
        )
    });
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "version",
        "error",
        "server.tables.posts.version.field",
    );
    assert!(
        f["fix"].as_str().is_some_and(|s| s.contains("\"version\"")),
        "{f}"
    );
}

#[test]
fn etags_expected_where_the_fetch_route_sends_none() {
    let env = Env::new();
    seed(&env, &["a"]);
    env.edit(|text| {
        let text = replace(
            text,
            "[server.tables.posts]\nversion = { field = \"version\" }",
            "[server.tables.posts]\nversion = { etag = true }",
        );
        // A list answer filtered by id: no ETag header.
        replace(
            &text,
            "fetch = { url = \"/api/posts/{id}\" }",
            "fetch = { url = \"/api/posts?id=eq.{id}\", response = \"/data\" }",
        )
    });
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    finding(&doc, "etag", "error", "server.tables.posts.version.etag");

    // The record route sends one.
    env.edit(|text| {
        replace(
            text,
            "fetch = { url = \"/api/posts?id=eq.{id}\", response = \"/data\" }",
            "fetch = { url = \"/api/posts/{id}\" }",
        )
    });
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "{doc:#}");
    assert!(passed(&doc).iter().any(|p| p == "etag"), "{doc:#}");
}

#[test]
fn next_links_to_another_origin_name_foreign_links() {
    let env = env_with(CollectionConfig::default().link_origin("http://internal.example:8080"));
    seed(&env, &["a", "b", "c", "d", "e"]);
    env.edit(|text| replace(text, "page_size = 200", "page_size = 2"));
    let link_pull = "[server.tables.posts.pull]
url = \"/api/posts\"
query = { limit = \"{limit}\" }
items = \"/data\"
cursor_field = \"updatedAt\"
timestamp = \"epoch_ms\"
pagination = { style = \"link\", foreign_links = \"refuse\" }
tombstone = { field = \"deleted\" }
";
    posts_pull(&env, link_pull);
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    let f = finding(
        &doc,
        "next_links",
        "error",
        "server.tables.posts.pull.pagination.foreign_links",
    );
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|s| s.contains("internal.example")),
        "{f}"
    );

    // Rewritten (the default): a note, no error.
    env.edit(|text| replace(text, ", foreign_links = \"refuse\"", ""));
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "{doc:#}");
    finding(
        &doc,
        "next_links",
        "info",
        "server.tables.posts.pull.pagination.foreign_links",
    );
}

#[test]
fn a_skewed_server_clock_is_a_warning() {
    let env = Env::new();
    seed(&env, &["a"]);
    env.server.set_date_skew_ms(-120_000);
    let (run, doc) = doctor(&env, &[]);
    assert_eq!(run.code, 0, "a warning only: {run:?}");
    let f = finding(&doc, "clock", "warning", "(system clock)");
    assert!(
        f["message"].as_str().is_some_and(|s| s.contains("behind")),
        "{f}"
    );
}

#[test]
fn writes_on_a_hard_deleting_server_point_to_reconcile() {
    let env = env_with(CollectionConfig::default().hard_deletes(true));
    seed(&env, &["a", "b"]);
    let (run, doc) = doctor(&env, &["--write"]);
    assert_eq!(run.code, 0, "a warning only: {doc:#}");
    assert!(passed(&doc).iter().any(|p| p == "write"), "{doc:#}");
    let f = finding(
        &doc,
        "tombstone",
        "warning",
        "server.tables.posts.pull.tombstone",
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|s| s.contains("tidesync reconcile posts")),
        "{f}"
    );
    // The scratch record is gone for good.
    assert_eq!(env.server.records("posts").len(), 2);
    assert!(env.server.tombstones("posts").is_empty());
}
