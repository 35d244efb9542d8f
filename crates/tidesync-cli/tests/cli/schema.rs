//! `tidesync status` shows each table's schema: the version the store holds, the indexes an
//! open built or dropped, and the migrations waiting for the application (issue 17).

use crate::support::{Env, replace};

fn posts(status: &serde_json::Value) -> serde_json::Value {
    status["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == "posts")
        .cloned()
        .expect("posts")
}

#[test]
fn status_shows_schema_versions_index_builds_and_pending_migrations() {
    let env = Env::new();
    env.ok(&["put", "posts", r#"{"id": "a", "title": "x"}"#]);
    let table = posts(&env.ok(&["status", "--json"]).json());
    assert_eq!(table["schema_version"], 0, "{table}");
    assert_eq!(table["declared_version"], 0, "{table}");
    assert_eq!(table["indexes_built"], serde_json::json!([]), "{table}");

    // The next config indexes `title`: this open builds it, and says so.
    env.edit(|text| {
        replace(
            text,
            "indexes = [\"updatedAt\"]",
            "indexes = [\"updatedAt\", \"title\"]",
        )
    });
    let run = env.ok(&["status"]);
    assert!(run.stdout.contains("SCHEMA"), "{run:?}");
    assert!(run.stdout.contains("v0, index title built"), "{run:?}");
    // The build's progress went to stderr.
    assert!(
        run.stderr
            .contains("building the new index posts.title over 1 records")
            && run
                .stderr
                .contains("building the new index posts.title: 1 / 1"),
        "{run:?}"
    );
    // Built once: the next status has nothing to do.
    let table = posts(&env.ok(&["status", "--json"]).json());
    assert_eq!(table["indexes_built"], serde_json::json!([]), "{table}");

    // A config declaring version 2: the CLI cannot run Rust migrations; status names them.
    env.edit(|text| {
        replace(
            text,
            "name = \"posts\"\n",
            "name = \"posts\"\nversion = 2\n",
        )
    });
    let run = env.run(&["status"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("table `posts`: the store holds version 0, the config declares 2")
            && run.stderr.contains("2 migration steps pending"),
        "{run:?}"
    );
    // Nothing was changed: the records are still there under the old config.
    env.edit(|text| {
        replace(
            text,
            "name = \"posts\"\nversion = 2\n",
            "name = \"posts\"\n",
        )
    });
    let table = posts(&env.ok(&["status", "--json"]).json());
    assert_eq!(
        (table["records"].clone(), table["schema_version"].clone()),
        (1.into(), 0.into())
    );
}
