//! JSON pointers (RFC 6901) naming where something sits in a response body.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A JSON pointer: `""` is the whole document, `/data/0/id` a path into it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Pointer(String);

impl Pointer {
    /// Parses a pointer; it must be empty or start with `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.starts_with('/') {
            Ok(Pointer(text.to_owned()))
        } else {
            Err(format!(
                "bad JSON pointer `{text}`: it must be empty (the whole body) or start with `/`, \
                 e.g. `/{text}`"
            ))
        }
    }

    /// The whole document.
    pub fn root() -> Self {
        Pointer(String::new())
    }

    /// The pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Looks the pointer up in `value`.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        value.pointer(&self.0)
    }

    /// Takes the pointed-to value out of `value` (leaving `null` behind).
    pub fn take(&self, value: &mut Value) -> Option<Value> {
        value.pointer_mut(&self.0).map(Value::take)
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({:?})", self.0)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Pointer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pointer::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Shorthand for [`Pointer::parse`] in builders: an invalid pointer is kept as written and
/// reported by the transport builder's validation.
pub(crate) fn lenient(text: &str) -> Pointer {
    Pointer(text.to_owned())
}

/// Checks a pointer built through [`lenient`].
pub(crate) fn check(pointer: &Pointer) -> Result<(), String> {
    Pointer::parse(&pointer.0).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_get() {
        let body = json!({"data": [{"id": 1}], "a/b": 2});
        assert_eq!(
            Pointer::parse("/data/0/id").unwrap().get(&body),
            Some(&json!(1))
        );
        assert_eq!(Pointer::parse("/a~1b").unwrap().get(&body), Some(&json!(2)));
        assert_eq!(Pointer::root().get(&body), Some(&body));
        assert!(Pointer::parse("data").unwrap_err().contains("`/data`"));
    }
}
