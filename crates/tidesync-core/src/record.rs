//! Records (JSON objects) and their primary keys.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// A record: a JSON object.
pub type Record = serde_json::Map<String, Value>;

/// A primary key: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A string key.
    Str(String),
}

const TAG_INT: u8 = 0x01;
const TAG_STR: u8 = 0x02;

impl Key {
    /// Reads a key from a JSON value; `None` if it is neither a string nor an integer.
    pub fn from_json(value: &Value) -> Option<Key> {
        match value {
            Value::String(s) => Some(Key::Str(s.clone())),
            Value::Number(n) => n.as_i64().map(Key::Int),
            _ => None,
        }
    }

    /// The key as a JSON value.
    pub fn to_json(&self) -> Value {
        match self {
            Key::Int(i) => Value::from(*i),
            Key::Str(s) => Value::from(s.as_str()),
        }
    }

    /// An order-preserving, self-delimiting byte encoding (integers sort numerically before
    /// strings; strings sort bytewise). Used as the storage key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(match self {
            Key::Int(_) => 9,
            Key::Str(s) => s.len() + 3,
        });
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Key::encode`] to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Key::Int(i) => {
                out.push(TAG_INT);
                out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
            }
            Key::Str(s) => {
                out.push(TAG_STR);
                escape_into(s.as_bytes(), out);
            }
        }
    }

    /// Decodes one key from the front of `bytes`, returning it and the rest.
    pub fn decode(bytes: &[u8]) -> Result<(Key, &[u8]), Error> {
        let corrupt = || Error::internal("corrupt key encoding in store");
        match bytes.split_first() {
            Some((&TAG_INT, rest)) if rest.len() >= 8 => {
                let (head, tail) = rest.split_at(8);
                let mut buf = [0u8; 8];
                buf.copy_from_slice(head);
                Ok((Key::Int((u64::from_be_bytes(buf) ^ (1 << 63)) as i64), tail))
            }
            Some((&TAG_STR, rest)) => {
                let (raw, tail) = unescape(rest).ok_or_else(corrupt)?;
                let s = String::from_utf8(raw).map_err(|_| corrupt())?;
                Ok((Key::Str(s), tail))
            }
            _ => Err(corrupt()),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::Str(s.to_owned())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::Str(s)
    }
}

impl From<&Key> for Key {
    fn from(key: &Key) -> Self {
        key.clone()
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Self {
        Key::Int(i)
    }
}

/// Writes `bytes` so that the result is prefix-free and keeps bytewise order:
/// `0x00` becomes `0x00 0xFF`, and the end is marked by `0x00 0x00`.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    if !bytes.contains(&0) {
        // The usual case (text keys and names): copied at once.
        out.extend_from_slice(bytes);
        out.extend_from_slice(&[0, 0]);
        return;
    }
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Reverses [`escape_into`], returning the bytes and the rest of the input.
pub fn unescape(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0 {
            match bytes.get(i + 1)? {
                0 => return Some((out, &bytes[i + 2..])),
                0xFF => {
                    out.push(0);
                    i += 2;
                }
                _ => return None,
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Applies a JSON merge patch (RFC 7386) to `target`; returns the names of top-level fields
/// whose value changed.
pub fn merge_patch(target: &mut Record, patch: &Record) -> Vec<String> {
    let mut changed = Vec::new();
    for (field, value) in patch {
        let before = target.get(field).cloned();
        if value.is_null() {
            target.remove(field);
        } else if let (Some(Value::Object(existing)), Value::Object(inner)) =
            (target.get_mut(field), value)
        {
            merge_object(existing, inner);
        } else {
            target.insert(field.clone(), strip_nulls(value.clone()));
        }
        if target.get(field) != before.as_ref() {
            changed.push(field.clone());
        }
    }
    changed
}

fn merge_object(target: &mut Record, patch: &Record) {
    for (field, value) in patch {
        if value.is_null() {
            target.remove(field);
        } else if let (Some(Value::Object(existing)), Value::Object(inner)) =
            (target.get_mut(field), value)
        {
            merge_object(existing, inner);
        } else {
            target.insert(field.clone(), strip_nulls(value.clone()));
        }
    }
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Names of top-level fields whose values differ between `old` and `new` (added, removed or
/// changed), in sorted order.
pub fn changed_fields(old: &Record, new: &Record) -> Vec<String> {
    let mut fields: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(new.keys().filter(|k| !old.contains_key(*k)).cloned())
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test helper takes objects"),
        }
    }

    #[test]
    fn key_encoding_round_trips_and_keeps_order() {
        let keys = vec![
            Key::Int(i64::MIN),
            Key::Int(-1),
            Key::Int(0),
            Key::Int(7),
            Key::Int(i64::MAX),
            Key::from(""),
            Key::from("a"),
            Key::from("a\0b"),
            Key::from("ab"),
            Key::from("b"),
        ];
        let encoded: Vec<Vec<u8>> = keys.iter().map(Key::encode).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted, "encoding must preserve key order");
        for (key, bytes) in keys.iter().zip(&encoded) {
            let (decoded, rest) = Key::decode(bytes).expect("decodes");
            assert_eq!(&decoded, key);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn merge_patch_follows_rfc7386_and_reports_changes() {
        let mut target = obj(json!({"a": 1, "b": {"c": 1, "d": 2}, "e": 5}));
        let changed = merge_patch(
            &mut target,
            &obj(json!({"a": 1, "b": {"c": null, "x": {"y": null, "z": 1}}, "e": null, "f": 3})),
        );
        assert_eq!(
            Value::Object(target),
            json!({"a": 1, "b": {"d": 2, "x": {"z": 1}}, "f": 3})
        );
        assert_eq!(changed, vec!["b", "e", "f"]);
    }

    #[test]
    fn changed_fields_sees_additions_removals_and_changes() {
        let old = obj(json!({"a": 1, "b": 2, "c": 3}));
        let new = obj(json!({"a": 1, "b": 9, "d": 4}));
        assert_eq!(changed_fields(&old, &new), vec!["b", "c", "d"]);
    }
}
