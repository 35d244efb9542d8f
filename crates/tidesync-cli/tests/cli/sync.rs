//! `sync` against the reference server, failures, the outbox and dead letters.

use std::time::Duration;

use serde_json::json;
use tidesync_testkit::server::{
    CollectionConfig, FaultFilter, FaultKind, Faults, ReferenceServer, RetryAfter, TimestampFormat,
};

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
fn sync_is_incomplete_with_exit_5_while_entries_wait_and_says_why() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Hello"}"#]);
    // A 503 asking for 2 s: the entry still waits when the cycle ends (`Retry-After` wins
    // over the jittered backoff, so the delay is exact).
    env.server
        .set_faults(Faults::none().filter(FaultFilter::writes()).errors(
            1.0,
            503,
            Some(RetryAfter::Seconds(2)),
        ));
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stdout.contains("sync incomplete: pushed 0"), "{run:?}");
    assert!(
        run.stdout
            .contains("  - waiting: 1 entry waits out a retry delay, next in"),
        "{run:?}"
    );
    assert!(run.stderr.contains("error: sync incomplete"), "{run:?}");
    assert!(run.stderr.contains("nothing is lost"), "{run:?}");
    assert!(env.server.records("posts").is_empty());

    let outbox = env.ok(&["outbox", "--json"]).json();
    assert!(
        outbox[0]["attempts"].as_u64().is_some_and(|a| a >= 1),
        "{outbox}"
    );
    assert_eq!(outbox[0]["failures"], 1, "a 503 counts: {outbox}");
    assert!(outbox[0]["dead"].is_null(), "{outbox}");
    assert_eq!(outbox[0]["state"]["state"], "retry_at", "{outbox}");
    assert!(
        outbox[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{outbox}"
    );
    let text = env.ok(&["outbox"]);
    assert!(
        text.stdout.contains("SEQ") && text.stdout.contains("p1"),
        "{text:?}"
    );
    assert!(text.stdout.contains("retry in"), "{text:?}");
    assert!(text.stdout.contains("(last: "), "{text:?}");

    // --json document on stdout, with the outcome and its reasons.
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 5, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["outcome"], "incomplete");
    assert_eq!(doc["report"]["converged"], false);
    assert_eq!(doc["report"]["remaining"]["outbox"]["waiting"], 1, "{doc}");
    assert!(
        doc["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("waiting: 1 entry waits")),
        "{doc}"
    );

    // The server recovers: the entry goes through (after its backoff); converged.
    env.server.clear_faults();
    std::thread::sleep(Duration::from_millis(2_100));
    let run = env.ok(&["sync", "--json"]);
    assert_eq!(run.json()["outcome"], "converged", "{run:?}");
    assert_eq!(env.server.records("posts").len(), 1);
}

#[test]
fn sync_against_a_server_that_is_down_is_incomplete_and_dead_letters_nothing() {
    let env = Env::new();
    env.edit(|t| replace(t, env.server.url(), "http://127.0.0.1:9"));
    for i in 0..5 {
        env.ok(&["put", "posts", &format!(r#"{{"id": "p{i}"}}"#)]);
    }
    // Many offline syncs in a row: before, each spent an attempt of every entry.
    for _ in 0..4 {
        let run = env.run(&["sync"]);
        assert_eq!(run.code, 5, "{run:?}");
        assert!(
            run.stdout.contains(
                "  - offline: the server does not answer; 5 entries wait for it (nothing is \
                 dead-lettered for an outage)"
            ),
            "{run:?}"
        );
    }
    assert_eq!(
        env.ok(&["dead-letters", "list", "--json"]).json(),
        json!([])
    );
    let outbox = env.ok(&["outbox", "--json"]).json();
    let outbox = outbox.as_array().expect("array");
    assert_eq!(outbox.len(), 5);
    assert!(outbox.iter().all(|e| e["failures"] == 0), "{outbox:?}");
}

#[test]
fn blocked_entries_say_what_they_wait_for() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Bad"}"#]);
    env.ok(&[
        "put",
        "comments",
        r#"{"id": "c1", "postId": "p1", "body": "hi"}"#,
    ]);
    env.server.fail_next_where(
        FaultFilter::writes().under("/api/posts"),
        1,
        FaultKind::Status {
            status: 422,
            retry_after: None,
        },
    );
    // The post is refused for good: exit 1, and its comment is blocked behind it.
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 1, "{run:?}");
    env.ok(&["put", "posts", r#"{"id": "p1", "title": "Edited"}"#]);
    let text = env.ok(&["outbox"]).stdout;
    assert!(text.contains("dead letter: "), "{text}");
    assert!(
        text.contains("waiting for posts/p1 (its create is a dead letter)"),
        "{text}"
    );
    assert!(
        text.contains("(dead letter)") && text.contains("blocked behind #"),
        "{text}"
    );
    // A later sync still has the dead letter and what it blocks: incomplete, with reasons.
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 5, "{run:?}");
    for line in [
        "  - dead letters: 1 (inspect with `tidesync dead-letters list`)",
        "  - blocked: 1 entry behind a dead letter of their record",
        "  - blocked: 1 entry waiting for a referenced record's create",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in {run:?}");
    }
    let status = env.ok(&["status"]).stdout;
    assert!(
        status.contains("1 blocked behind a dead letter, 1 waiting for a referenced create"),
        "{status}"
    );
    assert!(status.contains("outbox:           2 waiting"), "{status}");
    // The dead letter shows the server's own answer.
    let dead = env.ok(&["dead-letters", "list"]).stdout;
    assert!(dead.contains("422"), "{dead}");
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

/// The pull warnings of one table in a `sync --json` outcome.
fn pull_warnings(outcome: &serde_json::Value, table: &str) -> Vec<serde_json::Value> {
    outcome["report"]["remaining"]["pull_warnings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|w| w["table"] == table)
                .map(|w| w["warning"].clone())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_wrong_timestamp_setting_is_a_visible_warning_in_the_sync_report() {
    // The server writes `updatedAt` as RFC 3339 text; the sample config reads it as epoch
    // milliseconds, so no cursor value parses and the checkpoint can never move.
    let env = Env::with_server(
        ReferenceServer::builder()
            .collection(
                "posts",
                CollectionConfig::default().timestamps(TimestampFormat::Rfc3339),
            )
            .start_background(),
    );
    for id in ["a", "b", "c"] {
        env.server
            .insert_direct("posts", json!({"id": id, "title": id}))
            .expect("server insert");
    }

    let run = env.ok(&["sync", "--table", "posts"]);
    assert!(run.stdout.contains("sync ok"), "{run:?}");
    assert!(
        run.stdout.contains(
            "warning: pull posts: 3 pulled items whose cursor field `updatedAt` does not parse \
             as the configured timestamp `epoch_ms`"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("warning: pull posts: 3 new items pulled without moving the checkpoint"),
        "{run:?}"
    );
    // The event, as the progress shows it.
    assert!(run.stderr.contains("warning: pull posts:"), "{run:?}");

    // Typed in the JSON report; and the next sync reads the same items again.
    let outcome = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert_eq!(outcome["ok"], true, "{outcome:#}");
    let warnings = pull_warnings(&outcome, "posts");
    let unparsed = warnings
        .iter()
        .find(|w| w["kind"] == "cursor_unparsed")
        .unwrap_or_else(|| panic!("no cursor_unparsed warning: {outcome:#}"));
    assert_eq!(unparsed["field"], "updatedAt");
    assert_eq!(unparsed["format"], "epoch_ms");
    assert_eq!(unparsed["items"], 3);
    assert!(
        unparsed["example"]
            .as_str()
            .is_some_and(|e| e.contains('T')),
        "the example shows the server's text: {unparsed}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w["kind"] == "no_progress" && w["items"] == 3),
        "{outcome:#}"
    );
    assert!(
        outcome["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|l| l
                .as_str()
                .is_some_and(|l| l.starts_with("warning: pull posts:")))),
        "{outcome:#}"
    );

    // Fixed: the same pull is clean, and the next one reads nothing again.
    env.edit(|text| text.replacen("timestamp = \"epoch_ms\"", "timestamp = \"rfc3339\"", 1));
    let fixed = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert!(pull_warnings(&fixed, "posts").is_empty(), "{fixed:#}");
    let again = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert!(pull_warnings(&again, "posts").is_empty(), "{again:#}");
    assert_eq!(again["report"]["applied"], 0, "{again:#}");
}

#[test]
fn a_first_sync_over_more_pages_than_max_pages_completes_and_a_later_cut_is_incomplete() {
    let env = Env::new();
    // 30 posts in pages of 5 (6 pages) against a budget of 2 pages per cycle; no
    // `initial_max_pages`, as by default.
    env.edit(|text| text.replace("page_size = 200", "page_size = 5\nmax_pages = 2"));
    for n in 0..30 {
        env.server
            .insert_direct(
                "posts",
                json!({"id": format!("s{n:02}"), "title": "server"}),
            )
            .expect("server insert");
    }
    let first = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert_eq!(first["outcome"], "converged", "{first:#}");
    assert_eq!(first["report"]["applied"], 30, "{first:#}");
    assert_eq!(
        env.ok(&["scan", "posts", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(30)
    );

    // With a checkpoint, the budget holds: 20 changes take two cycles, and the first says so.
    for n in 0..20 {
        env.server
            .update_direct(
                "posts",
                format!("s{n:02}").as_str(),
                json!({"title": "edited"}),
            )
            .expect("server update");
    }
    let cut = env.run(&["sync", "--table", "posts"]);
    assert_eq!(cut.code, 5, "incomplete: {cut:?}");
    assert!(
        cut.stdout
            .contains("incomplete pull: posts stopped at the page budget"),
        "{cut:?}"
    );
    let rest = env.ok(&["sync", "--table", "posts", "--json"]).json();
    assert_eq!(rest["outcome"], "converged", "{rest:#}");
}

#[test]
fn put_wait_exits_0_once_the_server_has_it_6_when_refused_5_after_the_timeout() {
    let env = Env::new();
    // On the server: exit 0, the key on stdout, the outcome on stderr.
    let run = env.ok(&[
        "put",
        "posts",
        r#"{"id": "w1", "title": "waited"}"#,
        "--wait",
    ]);
    assert_eq!(run.stdout.trim(), "w1", "{run:?}");
    assert!(run.stderr.contains("on the server: acked"), "{run:?}");
    assert_eq!(env.server.record("posts", "w1").unwrap()["title"], "waited");
    let json = env
        .ok(&["put", "posts", r#"{"id": "w2"}"#, "--wait", "--json"])
        .json();
    assert_eq!(json["pushed"], "acked", "{json}");
    assert_eq!(json["key"], "w2");
    assert!(json["change_id"].as_u64().is_some(), "{json}");

    // Refused by the server (422): dead-lettered, exit 6 with the reason.
    env.server
        .fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(422));
    let run = env.run(&["put", "posts", r#"{"id": "w3"}"#, "--wait"]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(run.stderr.contains("the server refused"), "{run:?}");
    assert!(run.stderr.contains("posts/w3"), "{run:?}");
    assert!(run.stderr.contains("dead-letters list"), "{run:?}");
    assert!(env.server.record("posts", "w3").is_none());
    let dead = env.ok(&["dead-letters", "list", "--json"]).json();
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");

    // Not on the server within the timeout (the server asks for a minute): exit 5, queued.
    env.server
        .set_faults(Faults::none().filter(FaultFilter::writes()).errors(
            1.0,
            503,
            Some(RetryAfter::Seconds(60)),
        ));
    let run = env.run(&[
        "put",
        "posts",
        r#"{"id": "w4"}"#,
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr.contains("posts/w4 is not on the server after"),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing is lost"), "{run:?}");
    let outbox = env.ok(&["outbox", "--json"]).json();
    assert!(
        outbox
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["key"] == "w4"),
        "{outbox}"
    );
    // --timeout without --wait is a usage error.
    assert_eq!(env.run(&["put", "posts", "{}", "--timeout", "1s"]).code, 2);
}
