//! `reconcile TABLE`: hard deletes on the server are found, pending local changes never lost.

use serde_json::{Value, json};
use tidesync_testkit::server::{CollectionConfig, ReferenceServer};

use crate::support::Env;

fn ids(doc: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = doc[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn reconciliation_finds_every_hard_delete_and_keeps_pending_changes() {
    let env = Env::with_server(
        ReferenceServer::builder()
            .collection("posts", CollectionConfig::default().hard_deletes(true))
            .start_background(),
    );
    // Several pages (page_size 7) so the listing walks.
    env.edit(|text| text.replace("page_size = 200", "page_size = 7"));
    for n in 0..40 {
        env.server
            .insert_direct("posts", json!({ "id": format!("p{n:02}"), "title": "t" }))
            .expect("server insert");
    }
    env.ok(&["sync"]);
    assert_eq!(
        env.ok(&["scan", "posts", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(40)
    );

    // Another client deletes ten records for good; a pull cannot see it.
    for n in 0..10 {
        let gone = env
            .server
            .delete_direct("posts", format!("p{n:02}"))
            .expect("server delete");
        assert!(gone.is_null(), "hard delete leaves nothing: {gone}");
    }
    assert!(env.server.tombstones("posts").is_empty());
    env.ok(&["sync", "--table", "posts"]);
    assert_eq!(
        env.ok(&["scan", "posts", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(40),
        "a pull does not see hard deletes"
    );
    // Local changes waiting to be pushed: an edit of a record the server deleted, and a create
    // the server has never seen.
    env.ok(&["patch", "posts", "p05", r#"{"title": "edited here"}"#]);
    env.ok(&["put", "posts", r#"{"id": "local-new", "title": "mine"}"#]);
    let outbox_before = env.ok(&["outbox", "--table", "posts", "--json"]).json();
    assert_eq!(
        outbox_before.as_array().map(Vec::len),
        Some(2),
        "{outbox_before:#}"
    );

    let dry = env
        .ok(&["reconcile", "posts", "--dry-run", "--json"])
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        env.ok(&["scan", "posts", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(41),
        "a dry run deletes nothing"
    );

    let doc = env.ok(&["reconcile", "posts", "--json"]).json();
    assert_eq!(doc["deleted"], dry["deleted"], "{doc:#}");
    let expected_gone: Vec<String> = (0..10)
        .filter(|n| *n != 5)
        .map(|n| format!("p{n:02}"))
        .collect();
    assert_eq!(ids(&doc, "deleted"), expected_gone, "{doc:#}");
    assert_eq!(
        ids(&doc, "kept_pending"),
        vec!["local-new", "p05"],
        "{doc:#}"
    );
    assert_eq!(doc["server_keys"], 30, "{doc:#}");
    assert_eq!(doc["local_checked"], 41, "{doc:#}");
    assert!(
        doc["keys_per_s"].as_f64().is_some_and(|k| k > 0.0),
        "{doc:#}"
    );
    println!(
        "reconcile: {} server keys in {} pages, {} ms ({} keys/s, debug build)",
        doc["server_keys"], doc["pages"], doc["listing_ms"], doc["keys_per_s"]
    );

    // Deleted locally, nothing enqueued for them; the pending records are untouched.
    for id in &expected_gone {
        assert_eq!(env.run(&["get", "posts", id]).code, 4, "{id} still local");
    }
    assert_eq!(
        env.ok(&["outbox", "--table", "posts", "--json"]).json(),
        outbox_before,
        "reconciliation enqueues nothing"
    );
    let edited = env.ok(&["get", "posts", "p05"]).json();
    assert_eq!(edited["title"], "edited here");
    env.ok(&["get", "posts", "local-new"]);
    assert_eq!(env.run(&["get", "posts", "p10"]).code, 0);

    // A second pass finds nothing more; a sync then pushes the pending changes as usual.
    let again = env.ok(&["reconcile", "posts", "--json"]).json();
    assert_eq!(again["deleted"], json!([]), "{again:#}");
}

#[test]
fn a_local_delete_is_pushed_as_a_soft_delete_when_the_route_says_so() {
    // DELETE would remove the row for good here; a PATCH setting `deleted` keeps a tombstone
    // that other clients read.
    let env = Env::with_server(
        ReferenceServer::builder()
            .collection(
                "posts",
                CollectionConfig::default()
                    .hard_deletes(true)
                    .client_tombstones(true),
            )
            .start_background(),
    );
    env.edit(|text| {
        crate::support::replace(
            text,
            "delete = { method = \"DELETE\", url = \"/api/posts/{id}\" }",
            "delete = { method = \"PATCH\", url = \"/api/posts/{id}\", body = \"tombstone\" }",
        )
    });
    env.ok(&["check"]);
    env.server
        .insert_direct("posts", json!({ "id": "s1", "title": "shared" }))
        .expect("server insert");
    env.ok(&["sync"]);
    env.ok(&["delete", "posts", "s1"]);
    env.server.clear_log();
    env.ok(&["sync"]);

    let sent = env
        .server
        .request_log()
        .into_iter()
        .find(|r| r.path == "/api/posts/s1")
        .expect("the delete was pushed");
    assert_eq!(sent.method, "PATCH", "{sent:?}");
    let body: Value = serde_json::from_str(&sent.body).expect("a JSON body");
    assert_eq!(body, json!({ "deleted": true, "version": 1 }), "{sent:?}");
    assert_eq!(sent.status, Some(200), "{sent:?}");
    // A tombstone other clients' pulls see; nothing left to push locally.
    let tombstones = env.server.tombstones("posts");
    assert_eq!(tombstones.len(), 1, "{tombstones:?}");
    assert_eq!(tombstones[0]["id"], "s1");
    assert_eq!(tombstones[0]["deleted"], true);
    assert!(env.server.records("posts").is_empty());
    assert_eq!(env.run(&["get", "posts", "s1"]).code, 4);
    assert_eq!(env.ok(&["outbox", "--json"]).json(), json!([]));

    // Without a tombstone flag in the pull feed the setting is refused by `check`.
    env.edit(|text| text.replace("tombstone = { field = \"deleted\" }\n", ""));
    let run = env.run(&["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("tombstone") || run.stderr.contains("tombstone"),
        "{run:?}"
    );
}
