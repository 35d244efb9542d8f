//! `sync` against the reference server, failures, the outbox and dead letters.

use std::time::Duration;

use serde_json::json;
use tidesync_testkit::server::{FaultFilter, FaultKind, Faults, ReferenceServer};

use crate::support::{Env, replace};

#[test]
fn sync_pushes_and_pulls_and_reports() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Hello"}"#]);
    env.ok(&[
        "put",
        "comments",
        r#"{"id": "c1", "postId": "p1", "body": "Nice"}"#,
    ]);
    env.server
        .insert_direct("posts", json!({"id": "s1", "title": "From the server"}))
        .expect("server insert");

    let run = env.ok(&["sync"]);
    assert!(run.stdout.contains("sync ok: pushed 2"), "{run:?}");
    // Not a terminal: plain progress lines on stderr.
    assert!(run.stderr.contains("push: 2 pushed"), "{run:?}");
    assert!(run.stderr.contains("pull posts:"), "{run:?}");

    let posts = env.server.records("posts");
    assert!(
        posts
            .iter()
            .any(|p| p["id"] == "p1" && p["title"] == "Hello"),
        "{posts:?}"
    );
    assert_eq!(env.server.records("comments").len(), 1);
    let pulled = env.ok(&["get", "posts", "s1"]).json();
    assert_eq!(pulled["title"], "From the server");
    assert_eq!(env.ok(&["status", "--json"]).json()["queue_depth"], 0);

    // --json report, one table.
    env.ok(&["put", "posts", r#"{"id": "p2", "title": "Two"}"#]);
    let report = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["report"]["pushed"], 1);
    assert_eq!(report["table"], "posts");
    assert_eq!(env.run(&["sync", "--table", "nope"]).code, 2);
}

#[test]
fn sync_fails_with_exit_1_when_the_server_fails_and_keeps_the_entry() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Hello"}"#]);
    env.server.set_faults(
        Faults::none()
            .filter(FaultFilter::writes())
            .errors(1.0, 500, None),
    );
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("error:"), "{run:?}");
    assert!(run.stderr.contains("retried by the next"), "{run:?}");
    assert!(env.server.records("posts").is_empty());

    let outbox = env.ok(&["outbox", "--json"]).json();
    assert!(
        outbox[0]["attempts"].as_u64().is_some_and(|a| a >= 1),
        "{outbox}"
    );
    assert!(outbox[0]["dead"].is_null(), "{outbox}");
    assert!(
        outbox[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{outbox}"
    );
    let text = env.ok(&["outbox"]);
    assert!(
        text.stdout.contains("SEQ") && text.stdout.contains("p1"),
        "{text:?}"
    );

    // --json failure document on stdout.
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["ok"], false);

    // The server recovers: the entry goes through (after its short backoff).
    env.server.clear_faults();
    std::thread::sleep(Duration::from_millis(150));
    env.ok(&["sync"]);
    assert_eq!(env.server.records("posts").len(), 1);

    // A server that is down: exit 1 too.
    let env2 = Env::new();
    env2.edit(|t| replace(t, env2.server.url(), "http://127.0.0.1:9"));
    env2.ok(&["put", "posts", r#"{"id": "p1"}"#]);
    assert_eq!(env2.run(&["sync"]).code, 1);
}

#[test]
fn dead_letters_can_be_listed_retried_edited_and_discarded() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Bad"}"#]);
    env.ok(&["put", "posts", r#"{"id": "p2", "title": "Also bad"}"#]);
    env.server.fail_next_where(
        FaultFilter::writes().under("/api/posts"),
        2,
        FaultKind::status(400),
    );
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("dead-letters list"), "{run:?}");

    let dead = env.ok(&["dead-letters", "list", "--json"]).json();
    let dead = dead.as_array().expect("array").clone();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["dead"]["status"], 400);
    let seq = |i: usize| dead[i]["seq"].as_u64().expect("seq").to_string();
    let text = env.ok(&["dead-letters", "list"]);
    assert!(text.stdout.contains("400"), "{text:?}");
    assert_eq!(env.ok(&["status", "--json"]).json()["dead_letters"], 2);

    // Retry the first as is, fix the second, then sync.
    let retried = env.ok(&["dead-letters", "retry", &seq(0), "--json"]).json();
    assert!(retried["dead"].is_null(), "{retried}");
    env.ok(&[
        "dead-letters",
        "edit",
        &seq(1),
        "--record",
        r#"{"id": "p2", "title": "Fixed"}"#,
    ]);
    env.ok(&["sync"]);
    let posts = env.server.records("posts");
    assert!(posts.iter().any(|p| p["id"] == "p1"), "{posts:?}");
    assert!(
        posts
            .iter()
            .any(|p| p["id"] == "p2" && p["title"] == "Fixed"),
        "{posts:?}"
    );

    // Discard.
    env.ok(&["put", "posts", r#"{"id": "p3"}"#]);
    env.server.fail_next_where(
        FaultFilter::writes().under("/api/posts"),
        1,
        FaultKind::status(400),
    );
    assert_eq!(env.run(&["sync"]).code, 1);
    let dead = env.ok(&["dead-letters", "list", "--json"]).json();
    let seq3 = dead[0]["seq"].as_u64().expect("seq").to_string();
    env.ok(&["dead-letters", "discard", &seq3]);
    assert_eq!(
        env.ok(&["dead-letters", "list", "--json"]).json(),
        json!([])
    );
    assert_eq!(env.ok(&["outbox", "--json"]).json(), json!([]));
    // Unknown seq: not found.
    assert_eq!(env.run(&["dead-letters", "retry", "999"]).code, 4);
    assert_eq!(env.run(&["dead-letters", "discard", "999"]).code, 4);
}

#[test]
fn credentials_come_from_the_environment() {
    let server = ReferenceServer::builder()
        .auth(Duration::from_secs(300))
        .start_background();
    let token = server.issue_token();
    let env = Env::with_server(server);
    env.edit(|t| {
        replace(
            t,
            "# [auth]\n# bearer_env = \"API_TOKEN\"",
            "[auth]\nbearer_env = \"TIDESYNC_TEST_TOKEN\"\n# x",
        )
    });
    env.ok(&["put", "posts", r#"{"id": "p1"}"#]);
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("TIDESYNC_TEST_TOKEN"), "{run:?}");
    let run = env.run(&["check"]);
    assert!(
        run.stdout.contains("warning") && run.stdout.contains("TIDESYNC_TEST_TOKEN"),
        "{run:?}"
    );

    let run = env
        .command(&["sync"])
        .env("TIDESYNC_TEST_TOKEN", &token)
        .output()
        .expect("runs");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(env.server.records("posts").len(), 1);
    // The token is never printed.
    assert!(!String::from_utf8_lossy(&run.stderr).contains(&token));
    assert!(!String::from_utf8_lossy(&run.stdout).contains(&token));

    let run = env
        .command(&["sync"])
        .env("TIDESYNC_TEST_TOKEN", "wrong")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
}
