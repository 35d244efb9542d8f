//! How a record's base (the last version both sides agreed on) is stored.
//!
//! Most of the time the base *is* the local record: after a pull, an acknowledged push or a
//! conflict taken from the server, both hold the server's version. Storing it twice doubled
//! the store. Layout v2 stores such a base as a marker (`0x01`, then the version token) that
//! reads "the record row, as it is"; a base that differs from the record is stored whole, as
//! JSON (layout v1's form, still read).
//!
//! The rule that keeps a marker true: nothing changes a record row while its base is a marker
//! without first writing the old record as the base (`Records::write_row` does it, and it
//! is the only door to the record rows besides the pull's fast path, which rewrites the base
//! in the same step).
//!
//! ```text
//! 0x01 0x00          the record row, no version token
//! 0x01 0x01 ‖ UTF-8  the record row, with this version token
//! { "record": …, "version": … }   a base of its own (JSON)
//! ```

use crate::error::{Error, Result};
use crate::record::Key;

use super::Base;

const TAG_AS_RECORD: u8 = 0x01;
const JSON_PREFIX: &[u8] = b"{\"record\":";

/// A stored base row, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum BaseRow {
    /// The base is the record row as it is, with this version token.
    AsRecord(Option<String>),
    /// A base of its own.
    Own(Base),
}

/// The marker row: the base is the record row, with `version`.
pub(super) fn as_record(version: Option<&str>) -> Vec<u8> {
    match version {
        None => vec![TAG_AS_RECORD, 0],
        Some(v) => {
            let mut out = Vec::with_capacity(2 + v.len());
            out.extend_from_slice(&[TAG_AS_RECORD, 1]);
            out.extend_from_slice(v.as_bytes());
            out
        }
    }
}

/// A base of its own, from the record's JSON bytes (the same bytes `serde_json` would write for
/// [`Base`], without decoding the record again).
pub(super) fn own(record_json: &[u8], version: Option<&str>) -> Vec<u8> {
    let version = match version {
        Some(v) => serde_json::Value::String(v.to_owned()).to_string(),
        None => "null".to_owned(),
    };
    let mut out = Vec::with_capacity(record_json.len() + version.len() + 24);
    out.extend_from_slice(JSON_PREFIX);
    out.extend_from_slice(record_json);
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(version.as_bytes());
    out.push(b'}');
    out
}

/// Whether a base row of its own holds exactly `record_json` (as written by [`own`] or by
/// `serde_json` for [`Base`]): then it can become a marker.
pub(super) fn holds_record(row: &[u8], record_json: &[u8]) -> bool {
    row.strip_prefix(JSON_PREFIX)
        .and_then(|rest| rest.strip_prefix(record_json))
        .is_some_and(|rest| rest.starts_with(b",\"version\":"))
}

/// Whether the row is the marker form ("the record row").
pub(super) fn is_marker(row: &[u8]) -> bool {
    row.first() == Some(&TAG_AS_RECORD)
}

/// The version token of a base row of its own that [`holds_record`] `record_json`, read
/// without decoding the record: the JSON after it.
pub(super) fn version_after(
    row: &[u8],
    record_json: &[u8],
    table: &str,
    key: &Key,
) -> Result<Option<String>> {
    let rest = row
        .strip_prefix(JSON_PREFIX)
        .and_then(|rest| rest.strip_prefix(record_json))
        .and_then(|rest| rest.strip_prefix(b",\"version\":".as_slice()))
        .and_then(|rest| rest.strip_suffix(b"}".as_slice()));
    let corrupt = || {
        Error::internal("corrupt base in store: no version after the record")
            .table(table)
            .key(key)
    };
    let json = rest.ok_or_else(corrupt)?;
    serde_json::from_slice::<Option<String>>(json).map_err(|_| corrupt())
}

/// The version token of a base row of `table`'s record `key`, read without building the
/// record (a request needs only the version it was based on).
pub(super) fn decode_version(bytes: &[u8], table: &str, key: &Key) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        #[allow(dead_code)]
        record: serde::de::IgnoredAny,
        version: Option<String>,
    }
    match decode_marker(bytes, table, key)? {
        Some(BaseRow::AsRecord(version)) => Ok(version),
        _ => serde_json::from_slice::<VersionOnly>(bytes)
            .map(|row| row.version)
            .map_err(|e| {
                Error::internal(format!("corrupt base in store: {e}"))
                    .table(table)
                    .key(key)
            }),
    }
}

/// Decodes a base row of `table`'s record `key`.
pub(super) fn decode(bytes: &[u8], table: &str, key: &Key) -> Result<BaseRow> {
    match decode_marker(bytes, table, key)? {
        Some(marker) => Ok(marker),
        None => serde_json::from_slice(bytes)
            .map(BaseRow::Own)
            .map_err(|e| {
                Error::internal(format!("corrupt base in store: {e}"))
                    .table(table)
                    .key(key)
            }),
    }
}

/// The marker form of a base row, or `None` for a base of its own (JSON).
fn decode_marker(bytes: &[u8], table: &str, key: &Key) -> Result<Option<BaseRow>> {
    match bytes {
        [TAG_AS_RECORD, 0] => Ok(Some(BaseRow::AsRecord(None))),
        [TAG_AS_RECORD, 1, version @ ..] => String::from_utf8(version.to_vec())
            .map(|v| Some(BaseRow::AsRecord(Some(v))))
            .map_err(|_| {
                Error::internal("corrupt base in store: a version token that is not UTF-8")
                    .table(table)
                    .key(key)
            }),
        [TAG_AS_RECORD, ..] => Err(Error::internal("corrupt base in store: a bad marker")
            .table(table)
            .key(key)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::Record;

    #[test]
    fn both_forms_read_back() {
        let key = Key::Str("a".into());
        for version in [None, Some("7"), Some("W/\"q\\\u{1}\"")] {
            assert_eq!(
                decode(&as_record(version), "t", &key).unwrap(),
                BaseRow::AsRecord(version.map(str::to_owned))
            );
            let record: Record =
                serde_json::from_value(json!({"id": "a\"1", "n": {"x": [1, 2.5, null]}})).unwrap();
            let json = serde_json::to_vec(&record).unwrap();
            let row = own(&json, version);
            let base = Base {
                record,
                version: version.map(str::to_owned),
            };
            assert_eq!(
                row,
                serde_json::to_vec(&base).unwrap(),
                "same bytes as serde"
            );
            assert_eq!(decode(&row, "t", &key).unwrap(), BaseRow::Own(base));
            for form in [&row, &as_record(version)] {
                assert_eq!(decode_version(form, "t", &key).unwrap().as_deref(), version);
            }
            assert!(holds_record(&row, &json));
            assert!(!is_marker(&row) && is_marker(&as_record(version)));
            assert_eq!(
                version_after(&row, &json, "t", &key).unwrap().as_deref(),
                version
            );
            assert!(!holds_record(&row, b"{\"id\":\"a\"}"));
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_record() {
        let err = decode(b"\x01\x01\xff", "posts", &Key::Str("k".into())).unwrap_err();
        assert!(err.to_string().contains("posts"), "{err}");
        assert!(decode(b"\x07", "posts", &Key::Int(1)).is_err());
        assert!(decode(b"\x01\x02", "posts", &Key::Int(1)).is_err());
        for garbage in [&b"\x01\x01\xff"[..], b"\x07", b"{\"version\": 1}"] {
            let err = decode_version(garbage, "posts", &Key::Int(1)).unwrap_err();
            assert!(err.to_string().contains("posts"), "{err}");
        }
    }
}
