//! Decoding a plugin's options from a configuration file (a JSON object), with errors that
//! say which option is wrong as a structured setting path, so a tool can point at the line.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Deserializes `options` (plus the `fixed` entries, e.g. a `strategy` tag) into `T`.
///
/// On failure the error is a `Config` error whose message starts with `what`, and whose
/// [`Error::setting_path`] names the option at fault when one option alone is enough to fail
/// (an unknown option, or one of the wrong type): each option is decoded on its own to find it.
pub fn decode_options<T: DeserializeOwned>(
    what: &str,
    options: &Map<String, Value>,
    fixed: &[(&str, Value)],
) -> Result<T> {
    let with = |entries: &mut dyn Iterator<Item = (&String, &Value)>| {
        let mut map: Map<String, Value> = entries.map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, value) in fixed {
            map.insert((*name).to_owned(), value.clone());
        }
        serde_json::from_value::<T>(Value::Object(map))
    };
    let err = match with(&mut options.iter()) {
        Ok(decoded) => return Ok(decoded),
        Err(err) => err,
    };
    let culprit = options
        .iter()
        .find(|(name, value)| with(&mut std::iter::once((*name, *value))).is_err())
        .map(|(name, _)| name.clone());
    let mut error = Error::config(format!("{what}: {err}"));
    if let Some(name) = culprit {
        error = error.field(name.clone()).setting([name]);
    }
    Err(error.with_source(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        kind: String,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        name: Option<String>,
    }

    fn decode(options: Value) -> Result<Options> {
        let Value::Object(map) = options else {
            panic!("an object")
        };
        decode_options("options of `demo`", &map, &[("kind", json!("demo"))])
    }

    #[test]
    fn the_option_at_fault_is_named_by_its_setting_path() {
        let unknown = decode(json!({"limit": 3, "nmae": "x"})).expect_err("unknown option");
        assert_eq!(unknown.setting_path(), ["nmae"]);
        assert!(
            unknown.message().starts_with("options of `demo`: "),
            "{unknown}"
        );
        let wrong_type = decode(json!({"name": "x", "limit": "three"})).expect_err("a string");
        assert_eq!(wrong_type.setting_path(), ["limit"]);
        assert_eq!(wrong_type.field_name(), Some("limit"));
    }

    #[test]
    fn good_options_decode() {
        let ok = decode(json!({"limit": 3})).expect("valid");
        assert_eq!(ok.limit, Some(3));
    }
}
