//! Configuration from files: `RestConfig` (TOML and JSON), `TableRoutes`, `TableSpec` and
//! `SyncSettings` never panic on any input, refuse bad input with a clear error, and whatever
//! deserializes either validates or is refused by `validate` with an error that names what
//! is wrong.

use proptest::prelude::*;
use serde_json::{Value, json};
use tidesync::core::local::Schema;
use tidesync::{ErrorKind, SyncSettings, TableSpec};
use tidesync_transport_rest::{RestConfig, TableRoutes};

use crate::{WORDS, arb_json};

/// A JSON object shaped like a route (known fields, values of any type).
fn arb_route() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(WORDS),
        prop::sample::select(WORDS),
        prop::option::of(prop::sample::select(WORDS)),
        prop::option::of(arb_json()),
    )
        .prop_map(|(method, url, body, extra)| {
            let mut route = json!({"method": method, "url": url});
            if let Some(body) = body {
                route["body"] = json!(body);
            }
            if let Some(extra) = extra {
                route["headers"] = extra;
            }
            route
        })
}

/// A JSON object shaped like a pull feed.
fn arb_feed() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(WORDS),
        prop::collection::btree_map("[a-z_]{1,8}", prop::sample::select(WORDS), 0..4),
        prop::sample::select(WORDS),
        prop::sample::select(WORDS),
        prop::sample::select(WORDS),
        prop::option::of(arb_json()),
    )
        .prop_map(|(url, query, items, filter, style, tombstone)| {
            let mut feed = json!({
                "url": url, "query": query, "items": items, "filter": filter,
                "cursor_field": "updatedAt", "pagination": {"style": style, "has_more": items},
            });
            if let Some(value) = tombstone {
                feed["tombstone"] = json!({"field": "deleted", "value": value});
            }
            feed
        })
}

/// A JSON object shaped like a table's routes.
fn arb_routes() -> impl Strategy<Value = Value> {
    (
        prop::option::of(arb_route()),
        prop::option::of(arb_route()),
        prop::option::of(arb_feed()),
        prop::option::of(prop::sample::select(WORDS)),
        prop::option::of(arb_json()),
    )
        .prop_map(|(create, update, pull, key, version)| {
            let mut routes = serde_json::Map::new();
            for (name, value) in [("create", create), ("update", update), ("pull", pull)] {
                if let Some(value) = value {
                    routes.insert(name.into(), value);
                }
            }
            if let Some(key) = key {
                routes.insert("key".into(), json!(key));
            }
            if let Some(version) = version {
                routes.insert("version".into(), version);
            }
            Value::Object(routes)
        })
}

fn check_rest_config(result: Result<RestConfig, String>) -> Result<(), TestCaseError> {
    if let Ok(config) = result {
        match config.validate() {
            Ok(()) => {
                // Whatever validates, builds (templates and headers were all checked).
                let built = RestConfig::from_json(&serde_json::to_string(&config).unwrap());
                prop_assert!(
                    built.is_ok(),
                    "a valid config does not round-trip: {:?}",
                    built
                );
            }
            Err(err) => {
                prop_assert_eq!(err.kind(), ErrorKind::Config, "{}", err);
                prop_assert!(!err.message().is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases(256))]

    #[test]
    fn rest_config_json_text_never_panics(text in any::<String>()) {
        if let Err(err) = RestConfig::from_json(&text) {
            prop_assert_eq!(err.kind(), ErrorKind::Config);
            prop_assert!(err.to_string().contains("REST config"), "{}", err);
        }
    }

    #[test]
    fn rest_config_toml_text_never_panics(text in any::<String>()) {
        let _ = toml::from_str::<RestConfig>(&text);
    }

    #[test]
    fn rest_config_toml_shaped_text_never_panics(
        lines in prop::collection::vec(
            (prop::sample::select(crate::FIELD_NAMES), prop::sample::select(WORDS)),
            0..8,
        ),
        table in "[a-z]{1,6}",
    ) {
        let mut text = String::from("base_url = \"http://127.0.0.1:1\"\n");
        text.push_str(&format!("[tables.{table}]\n"));
        for (field, value) in &lines {
            text.push_str(&format!("{field} = {}\n", toml_value(value)));
        }
        check_rest_config(toml::from_str::<RestConfig>(&text).map_err(|e| e.to_string()))?;
    }

    #[test]
    fn rest_config_values_validate_or_explain(
        base in prop::sample::select(WORDS),
        tables in prop::collection::btree_map("[a-z]{1,6}", arb_routes(), 0..3),
        extra in prop::option::of(arb_json()),
    ) {
        let mut config = json!({"base_url": base, "tables": tables});
        if let Some(extra) = extra {
            config["headers"] = extra;
        }
        let parsed = serde_json::from_value::<RestConfig>(config).map_err(|e| e.to_string());
        check_rest_config(parsed)?;
    }

    #[test]
    fn table_routes_never_panic(value in arb_routes(), table in ".{0,8}") {
        if let Ok(routes) = serde_json::from_value::<TableRoutes>(value)
            && let Err(err) = routes.validate(&table)
        {
            prop_assert_eq!(err.kind(), ErrorKind::Config, "{}", err);
            prop_assert_eq!(err.table_name(), Some(table.as_str()), "{}", err);
        }
    }

    #[test]
    fn any_json_is_a_config_or_an_error(value in arb_json()) {
        let _ = serde_json::from_value::<RestConfig>(value.clone()).map(|c| c.validate());
        let _ = serde_json::from_value::<TableRoutes>(value.clone()).map(|r| r.validate("t"));
        let _ = serde_json::from_value::<TableSpec>(value.clone()).map(|s| s.validate());
        let _ = serde_json::from_value::<SyncSettings>(value).map(|s| s.validate());
    }

    #[test]
    fn table_specs_validate_or_name_the_table(
        name in prop_oneof![".{0,10}", prop::sample::select(WORDS).prop_map(str::to_owned)],
        key in prop_oneof![".{0,6}", Just("id".to_owned())],
        indexes in prop::collection::vec(prop_oneof![".{0,6}", Just("id".to_owned())], 0..4),
        refs in prop::collection::vec((".{0,6}", prop::sample::select(WORDS)), 0..3),
        kind in prop::sample::select(&["string", "integer", "uuid", ""][..]),
    ) {
        let spec = json!({
            "name": name, "key": key, "indexes": indexes, "key_kind": kind,
            "references": refs.iter().map(|(f, t)| json!({"field": f, "table": t}))
                .collect::<Vec<_>>(),
        });
        let Ok(spec) = serde_json::from_value::<TableSpec>(spec) else {
            prop_assert!(!["string", "integer"].contains(&kind));
            return Ok(());
        };
        match Schema::new([spec.clone()]) {
            Ok(_) => prop_assert!(spec.validate().is_ok()),
            Err(err) => {
                prop_assert!(matches!(err.kind(), ErrorKind::Config | ErrorKind::InvalidInput));
                prop_assert_eq!(err.table_name(), Some(spec.name.as_str()), "{}", err);
            }
        }
        // The TOML form reads the same (JSON string escapes are valid TOML escapes).
        let s = |text: &str| serde_json::to_string(text).unwrap().replace('\u{7f}', "\\u007F");
        let list = |items: &[String]| {
            format!("[{}]", items.iter().map(|i| s(i)).collect::<Vec<_>>().join(", "))
        };
        let mut toml_text = format!(
            "name = {}\nkey = {}\nkey_kind = {}\nindexes = {}\n",
            s(&spec.name),
            s(&spec.key),
            s(kind),
            list(&spec.indexes)
        );
        for r in &spec.references {
            toml_text.push_str(&format!(
                "[[references]]\nfield = {}\ntable = {}\n",
                s(&r.field),
                s(&r.table)
            ));
        }
        let from_toml = toml::from_str::<TableSpec>(&toml_text);
        prop_assert_eq!(from_toml.as_ref().ok(), Some(&spec), "{}: {:?}", toml_text, from_toml);
    }

    #[test]
    fn sync_settings_validate_or_name_the_field(
        fields in prop::collection::vec(
            (
                prop::sample::select(&[
                    "interval", "debounce", "concurrency", "batch_size", "backoff_base",
                    "backoff_cap", "max_attempts", "page_size", "max_pages", "probe_base",
                    "probe_cap", "stale_after", "sync_on_start", "global_rate_limit",
                ][..]),
                prop_oneof![
                    arb_json(),
                    prop::sample::select(WORDS).prop_map(|w| json!(w)),
                    (0u64..100_000).prop_map(|n| json!(n)),
                    ("[0-9]{1,25}", prop::sample::select(&["", "ms", "s", "m", "h", "d", " s"][..]))
                        .prop_map(|(n, u)| json!(format!("{n}{u}"))),
                ],
            ),
            0..6,
        ),
    ) {
        let object: serde_json::Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        match serde_json::from_value::<SyncSettings>(Value::Object(object)) {
            Ok(settings) => {
                if let Err(err) = settings.validate() {
                    prop_assert_eq!(err.kind(), ErrorKind::Config);
                    prop_assert!(err.field_name().is_some(), "no field named: {}", err);
                }
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }
}

/// A TOML value for a word: booleans and numbers bare, anything else quoted.
fn toml_value(word: &str) -> String {
    if word.parse::<i64>().is_ok() || word == "true" || word == "false" {
        word.to_owned()
    } else {
        format!("{word:?}")
    }
}
