//! Table specifications: key field, secondary indexes, declared references.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::record::{Key, Record};

/// The kind of a table's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// String keys; a record written without one gets a client-generated UUIDv7.
    #[default]
    String,
    /// Integer keys; the application must supply them.
    Integer,
}

/// A declared reference: `field` holds the key of a record in `table`. A record waits to be
/// pushed until the record it references has been created on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The field holding the referenced key.
    pub field: String,
    /// The referenced table.
    pub table: String,
}

/// How a table is stored and synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Primary key field (default `id`).
    #[serde(default = "default_key_field")]
    pub key: String,
    /// Primary key kind (default string).
    #[serde(default)]
    pub key_kind: KeyKind,
    /// Fields with a secondary index.
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Declared references to other tables' keys.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// Whether local writes are queued for push (false for pull-only or local-only tables).
    #[serde(default = "default_true")]
    pub push: bool,
    /// Whether remote changes are pulled (false for push-only or local-only tables).
    #[serde(default = "default_true")]
    pub pull: bool,
    /// The application's version of this table's record shape (0 by default). Raising it
    /// runs the table's registered migrations over the stored records and the unsent outbox
    /// payloads when the store opens.
    #[serde(default)]
    pub version: u32,
    /// The field of a record *from the server* (pulled, or in a push answer) that says which
    /// version of the record shape wrote it (e.g. `schemaVersion`). Records below `version`
    /// run the table's migrations before they are stored; records above it are quarantined
    /// ("written by a newer app version") unless `accept_newer_remote` is set. `None` (the default): records from the
    /// server are taken to be in this version's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_version_field: Option<String>,
    /// The version assumed for a record from the server without the version field (default:
    /// `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_default_version: Option<u32>,
    /// Stores records from the server written by a newer shape as they are, instead of
    /// quarantining them (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_newer_remote: bool,
}

fn default_key_field() -> String {
    "id".to_owned()
}

fn default_true() -> bool {
    true
}

impl TableSpec {
    /// A table named `name` with key field `id` (string keys), no indexes.
    pub fn new(name: impl Into<String>) -> Self {
        TableSpec {
            name: name.into(),
            key: default_key_field(),
            key_kind: KeyKind::String,
            indexes: Vec::new(),
            references: Vec::new(),
            push: true,
            pull: true,
            version: 0,
            remote_version_field: None,
            remote_default_version: None,
            accept_newer_remote: false,
        }
    }

    /// Sets the primary key field.
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = field.into();
        self
    }

    /// The version of this table's record shape; each step from the version the store last
    /// saw needs a migration registered with the engine (`EngineBuilder::migration`).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The field of records from the server that carries their shape's version (see the
    /// field of the same name): older ones are migrated before they are stored, newer ones quarantined.
    pub fn remote_version_field(mut self, field: impl Into<String>) -> Self {
        self.remote_version_field = Some(field.into());
        self
    }

    /// The version assumed for a record from the server that lacks the version field
    /// (default: the table's version).
    pub fn remote_default_version(mut self, version: u32) -> Self {
        self.remote_default_version = Some(version);
        self
    }

    /// Stores records from the server written by a newer shape than this app knows as they
    /// are, instead of quarantining them.
    pub fn accept_newer_remote(mut self) -> Self {
        self.accept_newer_remote = true;
        self
    }

    /// Uses integer keys.
    pub fn integer_keys(mut self) -> Self {
        self.key_kind = KeyKind::Integer;
        self
    }

    /// Adds a secondary index on `field`.
    pub fn index(mut self, field: impl Into<String>) -> Self {
        self.indexes.push(field.into());
        self
    }

    /// Declares that `field` references a key of `table`.
    pub fn references(mut self, field: impl Into<String>, table: impl Into<String>) -> Self {
        self.references.push(Reference {
            field: field.into(),
            table: table.into(),
        });
        self
    }

    /// Neither pushed nor pulled: a table that lives only on this device.
    pub fn local_only(mut self) -> Self {
        self.push = false;
        self.pull = false;
        self
    }

    /// Pulled but never pushed: local writes are allowed and stay local (never queued).
    pub fn pull_only(mut self) -> Self {
        self.push = false;
        self.pull = true;
        self
    }

    /// Pushed but never pulled.
    pub fn push_only(mut self) -> Self {
        self.push = true;
        self.pull = false;
        self
    }

    /// Checks the spec itself: names non-empty and printable, no duplicates.
    pub fn validate(&self) -> Result<()> {
        check_name(&self.name, "table name").map_err(|e| e.table(self.name.clone()))?;
        check_name(&self.key, "key field").map_err(|e| e.table(self.name.clone()))?;
        let mut seen = std::collections::BTreeSet::new();
        for index in &self.indexes {
            check_name(index, "index field")
                .map_err(|e| e.table(self.name.clone()).field(index.clone()))?;
            if index == &self.key {
                return Err(Error::config("the key field is already indexed")
                    .table(self.name.clone())
                    .field(index.clone()));
            }
            if !seen.insert(index) {
                return Err(Error::config("index declared twice")
                    .table(self.name.clone())
                    .field(index.clone()));
            }
        }
        if let Some(field) = &self.remote_version_field {
            check_name(field, "remote version field")
                .map_err(|e| e.table(self.name.clone()).field(field.clone()))?;
            if field == &self.key {
                return Err(
                    Error::config("the key field cannot also be the remote version field")
                        .table(self.name.clone())
                        .field(field.clone()),
                );
            }
        }
        if let Some(assumed) = self.remote_default_version
            && assumed > self.version
        {
            return Err(Error::config(format!(
                "remote_default_version {assumed} is above the table's version {}",
                self.version
            ))
            .table(self.name.clone())
            .field("remote_default_version"));
        }
        for reference in &self.references {
            check_name(&reference.field, "reference field")
                .and_then(|_| check_name(&reference.table, "referenced table"))
                .map_err(|e| e.table(self.name.clone()).field(reference.field.clone()))?;
        }
        Ok(())
    }

    /// Reads and checks the key of `record`; `Ok(None)` if the record has no key yet (the
    /// field is missing, null, or an empty string as left by `Default`).
    pub fn key_of(&self, record: &Record) -> Result<Option<Key>> {
        match record.get(&self.key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() && self.key_kind == KeyKind::String => Ok(None),
            Some(value) => self.check_key_value(value).map(Some),
        }
    }

    /// The key of a record about to be written locally: its own, or a new UUIDv7 written
    /// into it (string-key tables; integer-key tables need an explicit key).
    pub fn key_or_new(&self, record: &mut Record) -> Result<Key> {
        if let Some(key) = self.key_of(record)? {
            return Ok(key);
        }
        if self.key_kind != KeyKind::String {
            return Err(Error::invalid("integer-key tables need an explicit key")
                .table(self.name.clone())
                .field(self.key.clone()));
        }
        let key = Key::Str(
            uuid::Uuid::now_v7()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .to_owned(),
        );
        record.insert(self.key.clone(), key.to_json());
        Ok(key)
    }

    /// Reads the key of a record that came from the server. Unlike [`TableSpec::key_of`], a
    /// string-key table accepts integer ids and reads them as strings ("5"), because APIs
    /// that assign ids mix server integers with client-generated string ids.
    pub fn remote_key_of(&self, record: &Record) -> Result<Option<Key>> {
        match record.get(&self.key) {
            Some(Value::Number(n)) if self.key_kind == KeyKind::String && n.is_i64() => {
                Ok(n.as_i64().map(|i| Key::Str(i.to_string())))
            }
            _ => self.key_of(record),
        }
    }

    /// A key assigned by the server, in this table's key kind (integers become strings in a
    /// string-key table, as in [`TableSpec::remote_key_of`]).
    pub fn normalize_remote_key(&self, key: Key) -> Result<Key> {
        let key = match (self.key_kind, key) {
            (KeyKind::String, Key::Int(i)) => Key::Str(i.to_string()),
            (_, key) => key,
        };
        self.check_key(&key)?;
        Ok(key)
    }

    /// Checks that `value` is a valid key for this table.
    pub fn check_key_value(&self, value: &Value) -> Result<Key> {
        let bad = |what: &str| {
            Error::invalid(format!("{what}, got {}", describe(value)))
                .table(self.name.clone())
                .field(self.key.clone())
        };
        match (self.key_kind, value) {
            (KeyKind::String, Value::String(s)) if s.is_empty() => {
                Err(bad("key must be a non-empty string"))
            }
            (KeyKind::String, Value::String(s)) => Ok(Key::Str(s.clone())),
            (KeyKind::String, _) => Err(bad("key must be a string")),
            (KeyKind::Integer, Value::Number(n)) => n
                .as_i64()
                .map(Key::Int)
                .ok_or_else(|| bad("key must be a 64-bit integer")),
            (KeyKind::Integer, _) => Err(bad("key must be an integer")),
        }
    }

    /// Checks that `key` has this table's key kind.
    pub fn check_key(&self, key: &Key) -> Result<()> {
        self.check_key_value(&key.to_json()).map(|_| ())
    }
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(Error::config(format!(
            "{what} must be 1–128 printable characters, got {name:?}"
        )));
    }
    Ok(())
}

/// A short description of a JSON value's type, for error messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
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

    #[test]
    fn wrong_key_types_are_named_errors() {
        let spec = TableSpec::new("posts");
        let err = spec.check_key_value(&json!(5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid_input: key must be a string, got an integer (table `posts`, field `id`)"
        );
        let ints = TableSpec::new("n").integer_keys();
        assert!(ints.check_key_value(&json!("x")).is_err());
        assert!(ints.check_key_value(&json!(1.5)).is_err());
        assert_eq!(ints.check_key_value(&json!(3)).unwrap(), Key::Int(3));
    }

    #[test]
    fn spec_validation_rejects_duplicates_and_empty_names() {
        assert!(TableSpec::new("").validate().is_err());
        assert!(
            TableSpec::new("t")
                .index("a")
                .index("a")
                .validate()
                .is_err()
        );
        assert!(TableSpec::new("t").index("id").validate().is_err());
        assert!(TableSpec::new("t").index("a").validate().is_ok());
    }

    #[test]
    fn spec_deserializes_from_toml_like_json_with_defaults() {
        let spec: TableSpec =
            serde_json::from_value(json!({"name": "posts", "indexes": ["updatedAt"]})).unwrap();
        assert_eq!(spec.key, "id");
        assert!(spec.push);
        assert!(serde_json::from_value::<TableSpec>(json!({"name": "p", "bogus": 1})).is_err());
    }
}
