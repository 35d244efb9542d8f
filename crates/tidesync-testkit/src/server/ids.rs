//! Record ids: the JSON forms the server accepts, the string key it stores them under, and
//! the total order used for `(updatedAt, id)` sorting and keyset comparisons.

use std::cmp::Ordering;

use serde_json::Value;

/// Anything that names a record in the inspection API: `"a1"`, `String`, integers, or the
/// `id` field of a JSON record (`&record["id"]`).
///
/// A record is stored under a string key: a string id is its own key, an integer id is its
/// decimal form. So `5` and `"5"` name the same record, as `/api/c/5` does.
pub trait RecordId {
    /// The storage key of this id.
    fn record_key(&self) -> String;
}

impl RecordId for &str {
    fn record_key(&self) -> String {
        (*self).to_owned()
    }
}

impl RecordId for String {
    fn record_key(&self) -> String {
        self.clone()
    }
}

impl RecordId for &String {
    fn record_key(&self) -> String {
        (*self).clone()
    }
}

macro_rules! int_record_id {
    ($($t:ty),*) => {$(
        impl RecordId for $t {
            fn record_key(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
int_record_id!(i32, i64, u32, u64, usize);

impl RecordId for Value {
    fn record_key(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl RecordId for &Value {
    fn record_key(&self) -> String {
        (*self).record_key()
    }
}

/// Maximum length of an id, in bytes.
const MAX_ID_LEN: usize = 512;

/// The storage key of a JSON id sent by a client: a non-empty string or an integer.
pub(crate) fn key_from_json(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.is_empty() => Err("`id` must not be empty".into()),
        Value::String(s) if s.len() > MAX_ID_LEN => Err("`id` is too long".into()),
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err("`id` must be a string or an integer".into()),
    }
}

/// The JSON id of a record created from a path segment alone (PUT upsert without `id` in the
/// body): an integer if the segment is the canonical decimal form of one, else a string.
pub(crate) fn id_json_from_key(key: &str) -> Value {
    match key.parse::<i64>() {
        Ok(n) if n.to_string() == key => Value::from(n),
        _ => Value::String(key.to_owned()),
    }
}

/// The total order of ids: ids that parse as integers come first, in numeric order; all other
/// ids follow, in byte-wise string order. For a collection whose ids are all numeric or all
/// non-numeric this is "compare as numbers if both numeric, else as strings".
pub(crate) fn cmp_keys(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_total_and_numeric_first() {
        let mut v = vec!["10", "9", "1a", "2", "b", "007", "7", "-3"];
        v.sort_by(|a, b| cmp_keys(a, b));
        assert_eq!(v, ["-3", "2", "007", "7", "9", "10", "1a", "b"]);
    }

    #[test]
    fn json_ids() {
        assert_eq!(key_from_json(&Value::from(5)).as_deref(), Ok("5"));
        assert_eq!(key_from_json(&Value::from("x")).as_deref(), Ok("x"));
        assert!(key_from_json(&Value::from(1.5)).is_err());
        assert!(key_from_json(&Value::from("")).is_err());
        assert!(key_from_json(&Value::Null).is_err());
        assert_eq!(id_json_from_key("12"), Value::from(12));
        assert_eq!(id_json_from_key("012"), Value::from("012"));
    }
}
