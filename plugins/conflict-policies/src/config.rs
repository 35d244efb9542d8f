//! Choosing a policy from a configuration file.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::options::decode_options;
use tidesync_core::{ConflictStrategy, Error, Result};

use crate::lww::LastWriteWins;
use crate::policies::{ClientWins, ParkForApp, ServerWins};
use crate::timestamp::TimestampFormat;

/// The names [`by_name`] accepts, in the order they are listed in errors.
pub const STRATEGY_NAMES: &[&str] = &["server_wins", "client_wins", "last_write_wins", "park"];

/// A policy as written in a configuration file, tagged by `strategy`.
///
/// ```toml
/// [conflicts.posts]                # the CLI's layout: one table of options per synced table
/// strategy = "last_write_wins"
/// timestamp_field = "updatedAt"   # optional fallback when the server time is unknown
/// timestamp_format = "rfc3339"    # optional: auto (default), epoch_ms, epoch_s, rfc3339
/// ```
///
/// Unknown keys are rejected, so a typo is a configuration error rather than a silent default.
///
/// ```
/// use tidesync_conflict_policies::PolicyConfig;
///
/// let config: PolicyConfig = serde_json::from_str(
///     r#"{"strategy": "last_write_wins", "timestamp_field": "updatedAt"}"#,
/// )?;
/// let strategy = config.build()?;
/// assert_eq!(strategy.name(), "last_write_wins");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "strategy",
    rename_all = "snake_case",
    try_from = "RawPolicyConfig"
)]
pub enum PolicyConfig {
    /// [`ServerWins`].
    ServerWins,
    /// [`ClientWins`].
    ClientWins,
    /// [`LastWriteWins`].
    LastWriteWins {
        /// The remote record's field to read when the server's time is unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_field: Option<String>,
        /// How that field is encoded.
        #[serde(default)]
        timestamp_format: TimestampFormat,
    },
    /// [`ParkForApp`].
    Park,
}

/// What a configuration file may contain, before the per-strategy checks. (Serde's
/// `deny_unknown_fields` does not reject extra keys next to a unit variant of an internally
/// tagged enum, so [`PolicyConfig`] deserializes through this flat form.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyConfig {
    strategy: StrategyName,
    #[serde(default)]
    timestamp_field: Option<String>,
    #[serde(default)]
    timestamp_format: Option<TimestampFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    ServerWins,
    ClientWins,
    LastWriteWins,
    Park,
}

impl TryFrom<RawPolicyConfig> for PolicyConfig {
    type Error = String;

    fn try_from(raw: RawPolicyConfig) -> std::result::Result<Self, String> {
        let config = match raw.strategy {
            StrategyName::LastWriteWins => {
                return Ok(PolicyConfig::LastWriteWins {
                    timestamp_field: raw.timestamp_field,
                    timestamp_format: raw.timestamp_format.unwrap_or_default(),
                });
            }
            StrategyName::ServerWins => PolicyConfig::ServerWins,
            StrategyName::ClientWins => PolicyConfig::ClientWins,
            StrategyName::Park => PolicyConfig::Park,
        };
        let stray = [
            ("timestamp_field", raw.timestamp_field.is_some()),
            ("timestamp_format", raw.timestamp_format.is_some()),
        ];
        match stray.iter().find(|(_, present)| *present) {
            Some((option, _)) => Err(format!(
                "`{option}` applies to `last_write_wins` only, not to `{}`",
                config.name()
            )),
            None => Ok(config),
        }
    }
}

impl PolicyConfig {
    /// The strategy's name, as in [`STRATEGY_NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::ServerWins => "server_wins",
            PolicyConfig::ClientWins => "client_wins",
            PolicyConfig::LastWriteWins { .. } => "last_write_wins",
            PolicyConfig::Park => "park",
        }
    }

    /// Checks the options and builds the strategy.
    pub fn build(&self) -> Result<Arc<dyn ConflictStrategy>> {
        Ok(match self {
            PolicyConfig::ServerWins => Arc::new(ServerWins),
            PolicyConfig::ClientWins => Arc::new(ClientWins),
            PolicyConfig::Park => Arc::new(ParkForApp),
            PolicyConfig::LastWriteWins {
                timestamp_field,
                timestamp_format,
            } => {
                let mut lww = LastWriteWins::new().timestamp_format(*timestamp_format);
                if let Some(field) = timestamp_field {
                    if field.trim().is_empty() {
                        return Err(Error::config(
                            "conflict strategy `last_write_wins`: `timestamp_field` is empty",
                        )
                        .field("timestamp_field")
                        .setting(["timestamp_field"]));
                    }
                    lww = lww.timestamp_field(field.clone());
                }
                Arc::new(lww)
            }
        })
    }
}

/// Builds a strategy from its name and its options, as a configuration file gives them.
///
/// `options` is `null` or a JSON object; only `last_write_wins` takes options
/// (`timestamp_field`, `timestamp_format`). An unknown name, unknown options or options of the
/// wrong type give an [`ErrorKind::Config`](tidesync_core::ErrorKind::Config) error; for an
/// unknown name it lists the valid names.
///
/// ```
/// use serde_json::json;
/// use tidesync_conflict_policies::by_name;
///
/// let lww = by_name("last_write_wins", &json!({"timestamp_field": "updatedAt"}))?;
/// assert_eq!(lww.name(), "last_write_wins");
/// let err = by_name("lww", &json!(null)).err().map(|e| e.to_string()).unwrap_or_default();
/// assert!(err.contains("server_wins, client_wins, last_write_wins, park"));
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
        other => {
            return Err(Error::config(format!(
                "options of conflict strategy `{name}` must be an object, not {}",
                json_type(other)
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
    let config: PolicyConfig = decode_options(
        &format!("invalid options for conflict strategy `{name}`"),
        &map,
        &[("strategy", Value::from(name))],
    )?;
    config.build()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_core::ErrorKind;

    #[test]
    fn every_name_builds_a_strategy_with_that_name() {
        for name in STRATEGY_NAMES {
            for options in [json!(null), json!({})] {
                let strategy = by_name(name, &options);
                assert_eq!(
                    strategy.map(|s| s.name().to_owned()).ok().as_deref(),
                    Some(*name)
                );
            }
        }
    }

    #[test]
    fn bad_input_is_a_config_error() {
        let cases = [
            (
                "lww",
                json!(null),
                "valid names: server_wins, client_wins, last_write_wins, park",
            ),
            ("", json!(null), "unknown conflict strategy ``"),
            ("server_wins", json!([]), "must be an object, not an array"),
            ("park", json!("x"), "must be an object, not a string"),
            (
                "client_wins",
                json!({"timestamp_field": "t"}),
                "`last_write_wins` only",
            ),
            (
                "server_wins",
                json!({"timestamp_format": "auto"}),
                "`last_write_wins` only",
            ),
            ("park", json!({"other": 1}), "unknown field"),
            (
                "last_write_wins",
                json!({"timestamp_feild": "t"}),
                "unknown field",
            ),
            (
                "last_write_wins",
                json!({"timestamp_field": 5}),
                "invalid type",
            ),
            (
                "last_write_wins",
                json!({"timestamp_format": "iso"}),
                "unknown variant",
            ),
            (
                "last_write_wins",
                json!({"timestamp_field": " "}),
                "is empty",
            ),
            (
                "park",
                json!({"strategy": "server_wins"}),
                "different `strategy`",
            ),
        ];
        for (name, options, needle) in cases {
            match by_name(name, &options) {
                Ok(s) => panic!("{name} {options} built {}", s.name()),
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
    fn config_round_trips_and_defaults() {
        let cases = [
            (json!({"strategy": "server_wins"}), PolicyConfig::ServerWins),
            (json!({"strategy": "client_wins"}), PolicyConfig::ClientWins),
            (json!({"strategy": "park"}), PolicyConfig::Park),
            (
                json!({"strategy": "last_write_wins"}),
                PolicyConfig::LastWriteWins {
                    timestamp_field: None,
                    timestamp_format: TimestampFormat::Auto,
                },
            ),
            (
                json!({"strategy": "last_write_wins", "timestamp_field": "updatedAt",
                       "timestamp_format": "epoch_s"}),
                PolicyConfig::LastWriteWins {
                    timestamp_field: Some("updatedAt".into()),
                    timestamp_format: TimestampFormat::EpochS,
                },
            ),
        ];
        for (input, want) in cases {
            let parsed: PolicyConfig =
                serde_json::from_value(input.clone()).expect("valid config parses");
            assert_eq!(parsed, want, "{input}");
            let back = serde_json::to_value(&parsed).expect("serializes");
            let again: PolicyConfig = serde_json::from_value(back).expect("round-trips");
            assert_eq!(again, want);
            assert_eq!(
                parsed.name(),
                input["strategy"].as_str().unwrap_or_default()
            );
        }
        let unknown = serde_json::from_value::<PolicyConfig>(json!({"strategy": "lww"}));
        assert!(unknown.is_err_and(|e| e.to_string().contains("server_wins")));
        let extra = serde_json::from_value::<PolicyConfig>(json!({"strategy": "park", "x": 1}));
        assert!(extra.is_err());
    }
}
