//! `conflicts list` and `conflicts settle` on conflicts parked by the `park` strategy.

use serde_json::json;

use crate::support::{Env, replace};

#[test]
fn parked_conflicts_can_be_listed_and_settled() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "posts = { strategy = \"last_write_wins\", timestamp_field = \"updatedAt\" }",
            "posts = { strategy = \"park\" }",
        )
    });
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "v1"}"#]);
    env.ok(&["sync"]);
    // Another client edits on the server while this one edits locally.
    env.server
        .update_direct("posts", "p1", json!({"title": "server edit"}))
        .expect("server update");
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "local edit"}"#]);
    let run = env.run(&["sync"]);
    assert!(run.stderr.contains("conflict posts/p1: park"), "{run:?}");

    let parked = env.ok(&["conflicts", "list", "--json"]).json();
    assert_eq!(parked.as_array().map(Vec::len), Some(1), "{parked}");
    assert_eq!(parked[0]["conflict"]["key"], "p1");
    assert_eq!(parked[0]["conflict"]["local"]["title"], "local edit");
    let text = env.ok(&["conflicts", "list"]);
    assert!(text.stdout.contains("p1"), "{text:?}");
    assert_eq!(env.ok(&["status", "--json"]).json()["parked_conflicts"], 1);

    env.ok(&[
        "conflicts",
        "settle",
        "posts",
        "p1",
        "--merged",
        r#"{"id": "p1", "title": "merged"}"#,
    ]);
    assert_eq!(env.ok(&["conflicts", "list", "--json"]).json(), json!([]));
    env.ok(&["sync"]);
    let server = env.server.record("posts", "p1").expect("on the server");
    assert_eq!(server["title"], "merged");
    // Nothing left to settle.
    let run = env.run(&["conflicts", "settle", "posts", "p1", "--take-remote"]);
    assert_eq!(run.code, 4, "{run:?}");
}
