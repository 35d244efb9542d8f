//! `put`, `get`, `scan`, `delete`: JSON in and out, offline (no server needed).

use serde_json::json;

use crate::support::Env;

#[test]
fn records_round_trip_as_json() {
    let env = Env::new();
    let put = env.ok(&[
        "put",
        "posts",
        r#"{"id": "p1", "title": "Hello", "tags": ["a"]}"#,
        "--json",
    ]);
    let put = put.json();
    assert_eq!(put["key"], "p1");
    assert_eq!(put["record"]["title"], "Hello");

    // A record without a key gets a UUIDv7, printed on stdout.
    let generated = env.ok(&["put", "posts", r#"{"title": "Second"}"#]);
    let key = generated.stdout.trim().to_owned();
    assert_eq!(key.len(), 36, "{generated:?}");

    // From stdin.
    let stdin = env.run_with_stdin(&["put", "posts", "-"], r#"{"id": "p0", "title": "Zero"}"#);
    assert_eq!(stdin.code, 0, "{stdin:?}");

    let got = env.ok(&["get", "posts", "p1"]).json();
    assert_eq!(got, json!({"id": "p1", "title": "Hello", "tags": ["a"]}));

    let all = env.ok(&["scan", "posts", "--json"]).json();
    let ids: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    // Key order: the UUIDv7 ("01…") sorts before "p0".
    assert_eq!(ids, vec![key.as_str(), "p0", "p1"]);
    // Text mode: one JSON object per line; paging with --after/--limit.
    let page = env.ok(&["scan", "posts", "--after", "p0", "--limit", "1"]);
    let lines: Vec<serde_json::Value> = page
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines,
        vec![json!({"id": "p1", "title": "Hello", "tags": ["a"]})]
    );

    // The writes are queued for push.
    let outbox = env.ok(&["outbox", "--json"]).json();
    assert_eq!(outbox.as_array().map(Vec::len), Some(3), "{outbox}");
    assert_eq!(outbox[0]["op"], "create");
    let status = env.ok(&["status", "--json"]).json();
    assert_eq!(status["queue_depth"], 3);
    assert_eq!(status["tables"][0]["name"], "posts");
    assert_eq!(status["tables"][0]["records"], 3);

    let deleted = env.ok(&["delete", "posts", "p1", "--json"]).json();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(env.run(&["get", "posts", "p1"]).code, 4);
    assert_eq!(env.run(&["delete", "posts", "p1"]).code, 4);
}

#[test]
fn bad_input_is_a_usage_error_that_says_what_to_do() {
    let env = Env::new();
    let run = env.run(&["put", "posts", "{\"id\": \"p1\", "]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not valid JSON") && run.stderr.contains("line 1"),
        "{run:?}"
    );
    let run = env.run(&["put", "posts", "[1, 2]"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("must be a JSON object"), "{run:?}");
    let run = env.run(&["put", "nope", "{}"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("declared tables: posts, comments"),
        "{run:?}"
    );
    let run = env.run(&["put", "posts", r#"{"id": 5}"#]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("key must be a string"), "{run:?}");
    let run = env.run(&["get", "posts", "missing", "--json"]);
    assert_eq!(run.code, 4, "{run:?}");
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect("JSON error");
    assert_eq!(error["exit_code"], 4);
    let run = env.run(&["frobnicate"]);
    assert_eq!(run.code, 2, "{run:?}");
}
