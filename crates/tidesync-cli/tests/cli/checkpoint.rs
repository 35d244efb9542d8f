//! `checkpoint show|reset TABLE`.

use serde_json::json;

use crate::support::Env;

#[test]
fn checkpoints_are_shown_and_reset() {
    let env = Env::new();
    let none = env.ok(&["checkpoint", "show", "posts", "--json"]).json();
    assert_eq!(none, json!({"table": "posts", "checkpoint": null}));
    let text = env.ok(&["checkpoint", "show", "posts"]);
    assert!(text.stdout.contains("no checkpoint"), "{text:?}");

    env.server
        .insert_direct("posts", json!({"id": "s1", "title": "From the server"}))
        .expect("server insert");
    env.ok(&["sync"]);
    let shown = env.ok(&["checkpoint", "show", "posts", "--json"]).json();
    let since = shown["checkpoint"]["changes"]["since"].clone();
    assert!(since["ts"].is_number(), "{shown}");

    // Keep the filter values, drop walk state.
    let kept = env
        .ok(&["checkpoint", "reset", "posts", "--keep-filter", "--json"])
        .json();
    assert_eq!(kept["checkpoint"]["changes"]["since"], since, "{kept}");
    assert!(kept["checkpoint"]["changes"]["pass"].is_null(), "{kept}");

    // A full reset: the next sync reads the feed again and the checkpoint comes back.
    let reset = env.ok(&["checkpoint", "reset", "posts", "--json"]).json();
    assert!(reset["checkpoint"].is_null(), "{reset}");
    assert_eq!(reset["previous"]["changes"]["since"], since, "{reset}");
    assert!(env.ok(&["checkpoint", "show", "posts", "--json"]).json()["checkpoint"].is_null());
    env.server.clear_log();
    env.ok(&["sync", "--table", "posts"]);
    let first_pull = env
        .server
        .request_log()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == "/api/posts")
        .expect("pulled");
    assert!(
        !first_pull
            .query
            .unwrap_or_default()
            .contains("after_updated"),
        "read from the start after the reset"
    );
    let back = env.ok(&["checkpoint", "show", "posts", "--json"]).json();
    assert_eq!(back["checkpoint"]["changes"]["since"], since);

    // Unknown tables are usage errors naming the declared ones.
    let run = env.run(&["checkpoint", "reset", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("declared tables"), "{run:?}");
}
