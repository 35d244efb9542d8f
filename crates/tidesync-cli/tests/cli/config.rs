//! `init` and `check`.

use crate::support::{BIN, Env, replace};

#[test]
fn init_writes_a_config_that_checks_and_refuses_to_overwrite() {
    let env = Env::new();
    let run = env.ok(&["check"]);
    assert!(
        run.stdout.contains(": ok: 2 tables (posts, comments)"),
        "{run:?}"
    );
    let json = env.ok(&["check", "--json"]).json();
    assert_eq!(json["valid"], true);
    assert_eq!(json["errors"], 0);

    // The untouched sample checks too (it points at 127.0.0.1:8080).
    let sample = env.path("sample.toml");
    let first = std::process::Command::new(BIN)
        .args(["init"])
        .arg(&sample)
        .output()
        .expect("runs");
    assert!(first.status.success());
    let check = std::process::Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&sample)
        .output()
        .expect("runs");
    assert!(check.status.success(), "{check:?}");
    let again = std::process::Command::new(BIN)
        .args(["init"])
        .arg(&sample)
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn check_prints_line_and_column_of_every_problem() {
    let env = Env::new();
    // A type/unknown-field error (the first one serde meets).
    env.edit(|t| {
        replace(
            t,
            "request_timeout_ms = 30000",
            "request_timeout_ms = 30000\ntimeout = 5",
        )
    });
    let run = env.run(&["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("unknown field `timeout`"))
        .unwrap_or_else(|| panic!("{run:?}"));
    let text = std::fs::read_to_string(&env.config).expect("config");
    let expected_line = text
        .lines()
        .position(|l| l == "timeout = 5")
        .expect("the line")
        + 1;
    assert!(
        line.contains(&format!("tidesync.toml:{expected_line}:1: error:")),
        "{line}"
    );

    // Semantic errors: all reported, each with its position, table and field.
    env.edit(|t| {
        let t = replace(t, "timeout = 5\n", "");
        let t = replace(
            &t,
            "posts = { strategy = \"last_write_wins\", timestamp_field = \"updatedAt\" }",
            "posts = { strategy = \"lww\" }\nnotes = { strategy = \"server_wins\" }",
        );
        let t = replace(
            &t,
            "url = \"/api/posts/{id}\" }",
            "url = \"/api/posts/{slug}\" }",
        );
        replace(&t, "concurrency = 4", "concurrency = 0")
    });
    let run = env.run(&["check", "--json"]);
    assert_eq!(run.code, 2, "{run:?}");
    let json = run.json();
    let diags = json["diagnostics"].as_array().expect("diagnostics");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i as u64 + 1)
    };
    let find = |path: &str| {
        diags
            .iter()
            .find(|d| d["path"] == path)
            .unwrap_or_else(|| panic!("no diagnostic at {path}: {diags:#?}"))
    };
    let strategy = find("conflicts.posts.strategy");
    assert_eq!(strategy["line"].as_u64(), line_of("strategy = \"lww\""));
    assert!(strategy["message"].as_str().is_some_and(|m| {
        m.contains("server_wins, client_wins, last_write_wins, park, field_merge")
    }));
    assert_eq!(find("conflicts.notes")["table"], "notes");
    let url = find("server.tables.posts.update.url");
    assert_eq!(url["line"].as_u64(), line_of("{slug}"));
    assert_eq!(url["field"], "slug");
    assert!(url["column"].as_u64().is_some_and(|c| c > 1));
    assert_eq!(
        find("sync.concurrency")["line"].as_u64(),
        line_of("concurrency = 0")
    );
    assert_eq!(json["errors"], 4);

    // A syntax error.
    env.edit(|t| replace(t, "[sync]", "[sync"));
    let run = env.run(&["check"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("TOML syntax error") && run.stdout.contains("tidesync.toml:"),
        "{run:?}"
    );

    // Other commands refuse an invalid config with exit 2 and point at `check`.
    let run = env.run(&["status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("tidesync check"), "{run:?}");
}

#[test]
fn a_missing_config_says_how_to_make_one() {
    let env = Env::new();
    let run = std::process::Command::new(BIN)
        .arg("-c")
        .arg(env.path("nope.toml"))
        .arg("status")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("tidesync init"),
        "{run:?}"
    );
}

#[test]
fn check_warns_when_the_first_sort_parameter_is_not_the_cursor_field() {
    let env = Env::new();
    let sorted = |first: &str, second: &str| {
        format!(
            "query = {{ {first} = \"asc\", {second} = \"asc\", after_updated = \"{{cursor}}\", \
             after_id = \"{{after_key}}\", limit = \"{{limit}}\" }}"
        )
    };
    let original =
        "query = { after_updated = \"{cursor}\", after_id = \"{after_key}\", limit = \"{limit}\" }";
    env.edit(|t| {
        t.replacen(
            original,
            &sorted("\"orderby.id\"", "\"orderby.updatedAt\""),
            1,
        )
    });
    let run = env.ok(&["check", "--json"]);
    let json = run.json();
    let diags = json["diagnostics"].as_array().cloned().unwrap_or_default();
    let warning = diags
        .iter()
        .find(|d| {
            d["path"] == "server.tables.posts.pull.query.\"orderby.id\""
                || d["field"] == "orderby.id"
        })
        .unwrap_or_else(|| panic!("no sort warning: {diags:#?}"));
    assert_eq!(warning["severity"], "warning", "{warning}");
    assert!(
        warning["message"]
            .as_str()
            .is_some_and(|m| m.contains("`updatedAt`")),
        "{warning}"
    );
    // In the right order: no warning.
    env.edit(|t| {
        t.replacen(
            &sorted("\"orderby.id\"", "\"orderby.updatedAt\""),
            &sorted("\"orderby.updatedAt\"", "\"orderby.id\""),
            1,
        )
    });
    let json = env.ok(&["check", "--json"]).json();
    let text = json.to_string();
    assert!(!text.contains("first sort parameter"), "{json:#}");
}
