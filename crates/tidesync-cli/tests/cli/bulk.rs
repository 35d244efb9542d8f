//! `import`, `export`, `patch`, `quarantine`, and the notes of listings that a limit cut.

use serde_json::{Value, json};

use crate::support::{Env, replace};

/// `n` NDJSON records `p00000`… with nested values.
fn ndjson(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({
                "id": format!("p{i:05}"),
                "title": format!("Post {i}"),
                "n": i,
                "odd": i % 2 == 1,
                "tags": ["a", format!("t{}", i % 7)],
                "meta": {"score": i as f64 / 4.0, "note": null},
            })
            .to_string()
                + "\n"
        })
        .collect()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn export_then_import_into_a_fresh_store_gives_identical_records() {
    let env = Env::new();
    let input = ndjson(2500);
    std::fs::write(env.path("in.ndjson"), &input).expect("write input");
    let run = env.ok(&[
        "import",
        "posts",
        env.path("in.ndjson").to_str().expect("path"),
    ]);
    assert!(
        run.stdout.starts_with(
            "imported into `posts` (ndjson, upsert): 2500 records in 3 batches: 2500 written \
             (2500 changed), 0 rejected"
        ),
        "{run:?}"
    );
    // Each record is queued for push, like any local write.
    assert_eq!(env.ok(&["status", "--json"]).json()["queue_depth"], 2500);

    let exported = env.ok(&["export", "posts"]);
    assert_eq!(lines(&exported.stdout), lines(&input), "export = input");

    // Into a fresh store, from stdin, then out again: the same bytes.
    let fresh = Env::new();
    let run = fresh.run_with_stdin(&["import", "posts", "-", "--json"], &exported.stdout);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["records"], 2500);
    assert_eq!(report["batches"], 3);
    assert_eq!(report["written"], 2500);
    assert_eq!(report["rejected"], json!([]));
    let again = fresh.ok(&["export", "posts"]);
    assert_eq!(again.stdout, exported.stdout);

    // A JSON array of the same records, in batches of 700: the same table again.
    let array = format!(
        "[\n{}\n]\n",
        lines(&input)
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let third = Env::new();
    let run = third.run_with_stdin(
        &["import", "posts", "--batch-size", "700", "--json"],
        &array,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["format"], "array");
    assert_eq!(run.json()["batches"], 4);
    assert_eq!(third.ok(&["export", "posts"]).stdout, exported.stdout);
}

#[test]
fn import_reports_each_rejected_line_and_writes_the_rest() {
    let env = Env::new();
    let input = [
        r#"{"id": "a", "title": "A"}"#,
        "",
        r#"{"id": "b", "title": "B"#,
        r#"{"id": 7, "title": "int key"}"#,
        r#"[1, 2]"#,
        r#"{"id": "c", "updatedAt": {"not": "a scalar"}}"#,
        r#"{"title": "no key: gets a UUIDv7"}"#,
    ]
    .join("\n");
    let run = env.run_with_stdin(&["import", "posts", "--batch-size", "2"], &input);
    assert_eq!(run.code, 1, "{run:?}");
    let out: Vec<&str> = run.stdout.lines().collect();
    assert!(
        out[0].starts_with(
            "imported into `posts` (ndjson, upsert): 6 records in 3 batches: 2 written (2 \
             changed), 4 rejected"
        ),
        "{run:?}"
    );
    assert_eq!(
        out[1..],
        [
            "  line 3: not valid JSON: EOF while parsing a string at line 1 column 23",
            "  line 4: invalid_input: key must be a string, got an integer (table `posts`, \
             field `id`)",
            "  line 5: invalid_input: a record must be a JSON object, got an array (table \
             `posts`)",
            "  line 6 (key `c`): invalid_input: an indexed field must be null, a boolean, a \
             number or a string, got an object (table `posts`, key `c`, field `updatedAt`)",
        ]
    );
    assert!(
        run.stderr.contains("error: 4 of 6 records rejected"),
        "{run:?}"
    );
    assert_eq!(env.ok(&["get", "posts", "a"]).json()["title"], "A");
    assert_eq!(env.run(&["get", "posts", "c"]).code, 4);
    assert_eq!(env.ok(&["export", "posts"]).stdout.lines().count(), 2);

    // insert: an existing key is rejected; merge: a patch, and a missing record is rejected.
    let run = env.run_with_stdin(
        &["import", "posts", "--mode", "insert", "--json"],
        "{\"id\": \"a\", \"title\": \"again\"}\n{\"id\": \"d\", \"title\": \"D\"}\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["mode"], "insert");
    assert_eq!(report["written"], 1);
    assert_eq!(
        report["rejected"],
        json!([{"line": 1, "key": "a",
                "reason": "already_exists: record already exists (table `posts`, key `a`)"}])
    );
    assert_eq!(env.ok(&["get", "posts", "a"]).json()["title"], "A");

    let run = env.run_with_stdin(
        &["import", "posts", "--mode", "merge", "--json"],
        "{\"id\": \"a\", \"title\": null, \"extra\": 1}\n{\"id\": \"zz\", \"x\": 1}\n{\"x\": 2}\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["written"], 1);
    assert_eq!(
        report["rejected"],
        json!([
            {"line": 2, "key": "zz",
             "reason": "not_found: no such record (table `posts`, key `zz`)"},
            {"line": 3, "key": null,
             "reason": "invalid_input: a merge patch needs the record's key (table `posts`, \
                        field `id`)"},
        ])
    );
    assert_eq!(
        env.ok(&["get", "posts", "a"]).json(),
        json!({"id": "a", "extra": 1})
    );
}

#[test]
fn import_local_only_seeds_a_local_table_and_refuses_a_pushed_one() {
    let env = Env::new();
    env.edit(|t| {
        replace(
            t,
            "[[tables]]\nname = \"comments\"",
            "[[tables]]\nname = \"drafts\"\npush = false\npull = false\n\n[[tables]]\nname = \
             \"comments\"",
        )
    });
    let run = env.run_with_stdin(&["import", "posts", "--local-only"], "{\"id\": \"x\"}\n");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "error: table `posts` is pushed (push = true): --local-only refuses to import into \
             it, so that seed data is never queued for the server"
        ),
        "{run:?}"
    );
    assert_eq!(env.run(&["get", "posts", "x"]).code, 4);

    let run = env.run_with_stdin(
        &["import", "drafts", "--local-only"],
        &(0..30)
            .map(|i| format!("{{\"id\": \"d{i}\"}}\n"))
            .collect::<String>(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("the table is not pushed: nothing was queued for the server"),
        "{run:?}"
    );
    let status = env.ok(&["status", "--json"]).json();
    assert_eq!(status["queue_depth"], 0);
    let drafts = status["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "drafts"))
        .cloned()
        .expect("drafts");
    assert_eq!(drafts["records"], 30);
}

#[test]
fn export_where_keeps_only_matching_records() {
    let env = Env::new();
    let run = env.run_with_stdin(&["import", "posts"], &ndjson(20));
    assert_eq!(run.code, 0, "{run:?}");
    let odd = lines(&env.ok(&["export", "posts", "--where", "odd=true"]).stdout);
    assert_eq!(odd.len(), 10);
    assert!(odd.iter().all(|r| r["odd"] == true));
    let one = lines(
        &env.ok(&[
            "export",
            "posts",
            "--where",
            "odd=true",
            "--where",
            "title=Post 7",
        ])
        .stdout,
    );
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], "p00007");
    let run = env.run(&["export", "posts", "--where", "odd"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--where `odd` is not FIELD=VALUE"),
        "{run:?}"
    );
}

#[test]
fn patch_merges_into_the_record_and_queues_the_change() {
    let env = Env::new();
    env.ok(&[
        "put",
        "posts",
        r#"{"id": "p1", "title": "Hello", "body": "Text", "deleted": false}"#,
    ]);
    let patched = env.ok(&["patch", "posts", "p1", r#"{"title": "Hi", "body": null}"#]);
    assert_eq!(
        patched.json(),
        json!({"id": "p1", "title": "Hi", "deleted": false})
    );
    assert!(
        patched
            .stderr
            .contains("patched posts/p1: queued for push by the next `tidesync sync`"),
        "{patched:?}"
    );
    assert_eq!(
        env.ok(&["get", "posts", "p1"]).json(),
        json!({"id": "p1", "title": "Hi", "deleted": false})
    );
    let run = env.run_with_stdin(&["patch", "posts", "p1", "-"], r#"{"title": "stdin"}"#);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.ok(&["get", "posts", "p1"]).json()["title"], "stdin");

    let run = env.run(&["patch", "posts", "nope", "{}"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("tidesync put posts JSON"), "{run:?}");
    let run = env.run(&["patch", "posts", "p1", "[1]"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("the patch must be a JSON object"),
        "{run:?}"
    );
}

#[test]
fn scan_says_on_stderr_when_its_limit_cuts_the_output() {
    let env = Env::new();
    let run = env.run_with_stdin(&["import", "posts"], &ndjson(120));
    assert_eq!(run.code, 0, "{run:?}");

    let cut = env.ok(&["scan", "posts"]);
    assert_eq!(cut.stdout.lines().count(), 100);
    assert_eq!(
        cut.stderr.trim(),
        "note: output cut at 100 records by the default limit; there are more: see them with \
         --limit N or --all, or page on with --after p00099"
    );
    let cut = env.ok(&["scan", "posts", "--limit", "7"]);
    assert_eq!(cut.stdout.lines().count(), 7);
    assert_eq!(
        cut.stderr.trim(),
        "note: output cut at 7 records by --limit; there are more: see them with --limit N or \
         --all, or page on with --after p00006"
    );
    // Exactly the size of the table: nothing is cut, nothing is said.
    let whole = env.ok(&["scan", "posts", "--limit", "120"]);
    assert_eq!(whole.stdout.lines().count(), 120);
    assert_eq!(whole.stderr, "");
    let all = env.ok(&["scan", "posts", "--all"]);
    assert_eq!(all.stdout, whole.stdout);
    assert_eq!(all.stderr, "");
    // --json is complete by default.
    let json = env.ok(&["scan", "posts", "--json"]);
    assert_eq!(json.json().as_array().map(Vec::len), Some(120));
    assert_eq!(json.stderr, "");
    let json = env.ok(&["scan", "posts", "--json", "--limit", "3"]);
    assert_eq!(json.json().as_array().map(Vec::len), Some(3));
    assert!(json.stderr.contains("output cut at 3 records"), "{json:?}");
    // Paging on from the note's key gives the rest.
    let rest = env.ok(&["scan", "posts", "--after", "p00099"]);
    assert_eq!(rest.stdout.lines().count(), 20);
    assert_eq!(rest.stderr, "");
}

#[test]
fn outbox_says_on_stderr_when_its_limit_cuts_the_output() {
    let env = Env::new();
    let run = env.run_with_stdin(&["import", "posts"], &ndjson(60));
    assert_eq!(run.code, 0, "{run:?}");
    let cut = env.ok(&["outbox"]);
    assert_eq!(cut.stdout.lines().count(), 51, "header + 50 rows: {cut:?}");
    assert_eq!(
        cut.stderr.trim(),
        "note: output cut at 50 entries by the default limit; there are more: see them with \
         --limit N or --all"
    );
    let all = env.ok(&["outbox", "--all"]);
    assert_eq!(all.stdout.lines().count(), 61);
    assert_eq!(all.stderr, "");
    let json = env.ok(&["outbox", "--json"]);
    assert_eq!(json.json().as_array().map(Vec::len), Some(60));
    assert_eq!(json.stderr, "");
    let json = env.ok(&["outbox", "--json", "--limit", "10"]);
    assert_eq!(json.json().as_array().map(Vec::len), Some(10));
    assert_eq!(
        json.stderr.trim(),
        "note: output cut at 10 entries by --limit; there are more: see them with --limit N or \
         --all"
    );
}

#[test]
fn quarantined_pulls_are_counted_listed_retried_and_discarded() {
    let env = Env::new();
    // An index on `tags`: a pulled post whose tags are a list cannot be stored.
    env.edit(|t| {
        replace(
            t,
            "indexes = [\"updatedAt\"]",
            "indexes = [\"updatedAt\", \"tags\"]",
        )
    });
    for (id, tags) in [
        ("s1", json!(["a"])),
        ("s2", json!({"b": 1})),
        ("ok", json!("x")),
    ] {
        env.server
            .insert_direct("posts", json!({"id": id, "title": id, "tags": tags}))
            .expect("server insert");
    }
    env.run(&["sync"]);
    assert_eq!(env.ok(&["get", "posts", "ok"]).json()["tags"], "x");
    assert_eq!(env.ok(&["status", "--json"]).json()["quarantined"], 2);
    assert!(
        env.ok(&["status"])
            .stdout
            .contains("quarantined:      2  (tidesync quarantine list)"),
    );

    let items = env.ok(&["quarantine", "list", "--json"]).json();
    let items = items.as_array().expect("array").clone();
    assert_eq!(items.len(), 2, "{items:?}");
    let seq_of = |key: &str| {
        items
            .iter()
            .find(|i| i["key"] == key)
            .and_then(|i| i["seq"].as_u64())
            .unwrap_or_else(|| panic!("no {key} in {items:?}"))
    };
    let (s1, s2) = (seq_of("s1"), seq_of("s2"));
    assert!(
        items[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("field `tags`")),
        "{items:?}"
    );
    let text = env.ok(&["quarantine", "list", "--limit", "1"]);
    assert!(
        text.stdout.contains("SEQ") && text.stdout.contains("s1"),
        "{text:?}"
    );
    assert!(
        text.stderr.contains(
            "note: output cut at 1 items by --limit; there are more: see them with --limit N \
             or --all"
        ),
        "{text:?}"
    );

    // Still refused: back in quarantine under a new number.
    let run = env.run(&["quarantine", "retry", &s1.to_string()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "item {s1} was refused again and is back in quarantine"
        )),
        "{run:?}"
    );
    let items = env.ok(&["quarantine", "list", "--json"]).json();
    let s1 = items
        .as_array()
        .and_then(|a| a.iter().find(|i| i["key"] == "s1"))
        .and_then(|i| i["seq"].as_u64())
        .expect("s1 again");

    // Drop the index: the retry applies the record.
    env.edit(|t| {
        replace(
            t,
            "indexes = [\"updatedAt\", \"tags\"]",
            "indexes = [\"updatedAt\"]",
        )
    });
    let run = env.ok(&["quarantine", "retry", &s1.to_string()]);
    assert_eq!(run.stdout.trim(), format!("item {s1} applied (1 change)"));
    assert_eq!(env.ok(&["get", "posts", "s1"]).json()["tags"], json!(["a"]));

    let run = env.ok(&["quarantine", "discard", &s2.to_string()]);
    assert_eq!(run.stdout.trim(), format!("discarded item {s2} (posts/s2)"));
    assert_eq!(env.ok(&["status", "--json"]).json()["quarantined"], 0);
    assert_eq!(
        env.ok(&["quarantine", "list"]).stdout.trim(),
        "nothing is quarantined"
    );
    let run = env.run(&["quarantine", "discard", &s2.to_string()]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("tidesync quarantine list"), "{run:?}");
}

#[test]
fn import_line_numbers_count_leading_blank_lines() {
    let env = Env::new();
    let run = env.run_with_stdin(
        &["import", "posts", "--json"],
        "\n\n   {\"id\": 1}\n{\"id\": \"ok\"}\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["format"], "ndjson");
    assert_eq!(report["written"], 1);
    assert_eq!(report["rejected"][0]["line"], 3, "{report}");
}
