//! Policies and configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::options::decode_options;
use tidesync_core::{ConflictStrategy, Error, Result};

use crate::merge::FieldMerge;

/// What to do with a field both sides changed to different values (or, for the default policy,
/// with a record deleted on one side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The server's value (the default).
    #[default]
    PreferRemote,
    /// The local value.
    PreferLocal,
    /// The later write, by the record's times: the local value only if the local write's HLC
    /// milliseconds are strictly later than `remote_time_ms`; ties and unknown times go to the
    /// server. The times are per record, not per field.
    Latest,
    /// Park the whole record for the application.
    Park,
}

impl MergePolicy {
    /// A stable lowercase name, as in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            MergePolicy::PreferRemote => "prefer_remote",
            MergePolicy::PreferLocal => "prefer_local",
            MergePolicy::Latest => "latest",
            MergePolicy::Park => "park",
        }
    }
}

impl fmt::Display for MergePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configuration of a [`FieldMerge`]: the options a configuration file gives after the
/// strategy's name (the CLI's `[conflicts.contacts]` with `strategy = "field_merge"`; pass the
/// whole table to [`by_name`], which removes `strategy`).
///
/// ```toml
/// default = "prefer_remote"          # prefer_remote (default) | prefer_local | latest | park
/// [fields]
/// "notes" = "prefer_local"
/// "address.city" = "latest"
/// "balance" = "park"
/// ```
///
/// Unknown keys (`strategy` among them) are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMergeConfig {
    /// The policy for fields without their own, and for deletes.
    #[serde(default)]
    pub default: MergePolicy,
    /// Per-field policies by dotted path (`"address.city"`). A policy on a path also covers
    /// everything below it unless a longer path has its own.
    #[serde(default)]
    pub fields: BTreeMap<String, MergePolicy>,
}

impl FieldMergeConfig {
    /// Checks the field paths: non-empty, no empty segments (`"a..b"`, `".a"`, `"a."`).
    pub fn validate(&self) -> Result<()> {
        for path in self.fields.keys() {
            if path.split('.').any(str::is_empty) {
                return Err(Error::config(format!(
                    "conflict strategy `field_merge`: invalid field path `{path}` \
                     (expected dot-separated field names, e.g. `address.city`)"
                ))
                .field(format!("fields.{path}"))
                .setting(["fields", path.as_str()]));
            }
        }
        Ok(())
    }

    /// Checks the configuration and builds the strategy.
    pub fn build(&self) -> Result<FieldMerge> {
        FieldMerge::from_config(self.clone())
    }
}

/// The names [`by_name`] accepts.
pub const STRATEGY_NAMES: &[&str] = &["field_merge"];

/// Builds a strategy from its name and its options, as a configuration file gives them.
///
/// The one name is `field_merge`; `options` is `null` or a [`FieldMergeConfig`] as a JSON object
/// (a `strategy` key equal to the name is allowed and ignored). An unknown name (the error lists
/// the valid ones), unknown options or an invalid path give an
/// [`ErrorKind::Config`](tidesync_core::ErrorKind::Config) error.
///
/// ```
/// use serde_json::json;
/// use tidesync_conflict_merge::by_name;
///
/// let merge = by_name(
///     "field_merge",
///     &json!({"default": "prefer_remote", "fields": {"address.city": "prefer_local"}}),
/// )?;
/// assert_eq!(merge.name(), "field_merge");
/// assert!(by_name("merge", &json!(null)).is_err());
/// # Ok::<(), tidesync_core::Error>(())
/// ```
pub fn by_name(name: &str, options: &Value) -> Result<Arc<dyn ConflictStrategy>> {
    if !STRATEGY_NAMES.contains(&name) {
        return Err(Error::config(format!(
            "unknown conflict strategy `{name}`; valid names: {}",
            STRATEGY_NAMES.join(", ")
        )));
    }
    let mut map = match options {
        Value::Null => serde_json::Map::new(),
        Value::Object(map) => map.clone(),
        _ => {
            return Err(Error::config(format!(
                "options of conflict strategy `{name}` must be an object"
            )));
        }
    };
    match map.remove("strategy") {
        None => {}
        Some(Value::String(s)) if s == name => {}
        Some(_) => {
            return Err(Error::config(format!(
                "options of conflict strategy `{name}` name a different `strategy`"
            ))
            .field("strategy")
            .setting(["strategy"]));
        }
    }
    let config: FieldMergeConfig = decode_options(
        &format!("invalid options for conflict strategy `{name}`"),
        &map,
        &[],
    )?;
    Ok(Arc::new(config.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_core::ErrorKind;

    #[test]
    fn config_parses_with_defaults() {
        let cases = [
            (json!({}), FieldMergeConfig::default()),
            (
                json!({"default": "latest"}),
                FieldMergeConfig {
                    default: MergePolicy::Latest,
                    fields: BTreeMap::new(),
                },
            ),
            (
                json!({"fields": {"a.b": "park", "c": "prefer_local", "d": "prefer_remote"}}),
                FieldMergeConfig {
                    default: MergePolicy::PreferRemote,
                    fields: BTreeMap::from([
                        ("a.b".to_owned(), MergePolicy::Park),
                        ("c".to_owned(), MergePolicy::PreferLocal),
                        ("d".to_owned(), MergePolicy::PreferRemote),
                    ]),
                },
            ),
        ];
        for (input, want) in cases {
            let parsed: FieldMergeConfig =
                serde_json::from_value(input.clone()).expect("valid config parses");
            assert_eq!(parsed, want, "{input}");
            let back: FieldMergeConfig =
                serde_json::from_value(serde_json::to_value(&parsed).expect("serializes"))
                    .expect("round-trips");
            assert_eq!(back, want);
        }
    }

    #[test]
    fn bad_options_are_config_errors() {
        let cases = [
            ("merge", json!(null), "valid names: field_merge"),
            ("field_merge", json!(7), "must be an object"),
            (
                "field_merge",
                json!({"default": "newest"}),
                "unknown variant",
            ),
            (
                "field_merge",
                json!({"fields": {"a": "local"}}),
                "unknown variant",
            ),
            ("field_merge", json!({"fields": ["a"]}), "invalid type"),
            ("field_merge", json!({"defaults": "park"}), "unknown field"),
            (
                "field_merge",
                json!({"fields": {"a..b": "park"}}),
                "invalid field path `a..b`",
            ),
            (
                "field_merge",
                json!({"fields": {"": "park"}}),
                "invalid field path ``",
            ),
            (
                "field_merge",
                json!({"fields": {"a.": "park"}}),
                "invalid field path",
            ),
            (
                "field_merge",
                json!({"strategy": "park"}),
                "different `strategy`",
            ),
        ];
        for (name, options, needle) in cases {
            match by_name(name, &options) {
                Ok(_) => panic!("{name} {options} should fail"),
                Err(err) => {
                    assert_eq!(err.kind(), ErrorKind::Config, "{name} {options}");
                    assert!(
                        err.to_string().contains(needle),
                        "{name} {options}: {err} lacks {needle:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn good_options_build() {
        for options in [
            json!(null),
            json!({}),
            json!({"strategy": "field_merge", "default": "park"}),
            json!({"fields": {"address.city": "latest"}}),
        ] {
            let built = by_name("field_merge", &options);
            assert_eq!(
                built.map(|s| s.name().to_owned()).ok().as_deref(),
                Some("field_merge")
            );
        }
    }

    #[test]
    fn policy_names_match_serde() {
        for policy in [
            MergePolicy::PreferRemote,
            MergePolicy::PreferLocal,
            MergePolicy::Latest,
            MergePolicy::Park,
        ] {
            assert_eq!(
                serde_json::to_value(policy).ok(),
                Some(json!(policy.as_str()))
            );
            assert_eq!(policy.to_string(), policy.as_str());
        }
    }
}
