//! The local table API: typed (`Table<MyType>`) or untyped (`Table<serde_json::Value>`).
//!
//! Writes go through the engine's single writer (group commit) and return once durable.
//! Reads go straight to the store: they see the last committed state and never wait for
//! writers.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use tidesync_actors::outbox::{GetWriter, Writer};
use tidesync_core::local::{Change, IndexRange, WriteOp};
use tidesync_core::spec::describe;
use tidesync_core::{Error, ErrorKind, Key, KeyKind, Record, Result};

use crate::engine::Engine;
use crate::watch::Watch;

/// A handle on one table. Cheap to clone.
pub struct Table<T> {
    engine: Engine,
    name: Arc<str>,
    // A direct line to the store writer, fetched on the first write and shared by clones:
    // writes then skip the actor's thread on their way in and out.
    writer: Arc<tokio::sync::OnceCell<Writer>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            engine: self.engine.clone(),
            name: self.name.clone(),
            writer: self.writer.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

pub(crate) fn to_json<T: Serialize>(table: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::invalid(format!("value is not JSON-serializable: {e}")).table(table))
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    pub(crate) fn new(engine: Engine, name: &str) -> Self {
        Table {
            engine,
            name: Arc::from(name),
            writer: Arc::new(tokio::sync::OnceCell::new()),
            _type: PhantomData,
        }
    }

    /// Applies `ops` through the store writer, once durable.
    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<Change>> {
        let writer = self
            .writer
            .get_or_try_init(|| async {
                self.engine
                    .writer()
                    .send(GetWriter)
                    .await
                    .map_err(|_| Error::new(ErrorKind::Closed, "the engine is stopped"))?
            })
            .await?;
        writer.local_write(ops).await
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn decode(&self, key: &Key, record: Record) -> Result<T> {
        serde_json::from_value(Value::Object(record)).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("stored record does not match the requested type: {e}"),
            )
            .table(self.name.to_string())
            .key(key)
        })
    }

    /// Serializes `value` and makes sure it has a key, generating a UUIDv7 for string-key
    /// tables when it has none.
    fn keyed_record(&self, value: &T) -> Result<(Key, Value)> {
        let mut json = to_json(&self.name, value)?;
        let spec = self.engine.db().schema().table(&self.name)?;
        let Value::Object(record) = &mut json else {
            return Err(Error::invalid(format!(
                "a record must be a JSON object, got {}",
                describe(&json)
            ))
            .table(self.name.to_string()));
        };
        let key = match spec.key_of(record)? {
            Some(key) => key,
            None if spec.key_kind == KeyKind::String => {
                let key = Key::Str(uuid::Uuid::now_v7().to_string());
                record.insert(spec.key.clone(), key.to_json());
                key
            }
            None => {
                return Err(Error::invalid("integer-key tables need an explicit key")
                    .table(self.name.to_string())
                    .field(spec.key.clone()));
            }
        };
        Ok((key, json))
    }

    /// The record under `key`.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<T>> {
        let key = key.into();
        let record = self
            .engine
            .db()
            .get(&*self.engine.store().read()?, &self.name, &key)?;
        record.map(|r| self.decode(&key, r)).transpose()
    }

    /// Inserts or replaces a record; returns its key (generated when missing). Queued for push.
    pub async fn put(&self, value: &T) -> Result<Key> {
        let (key, record) = self.keyed_record(value)?;
        self.write(vec![WriteOp::Put {
            table: self.name.to_string(),
            record,
        }])
        .await?;
        Ok(key)
    }

    /// Inserts a record that must not exist yet; returns its key.
    pub async fn insert(&self, value: &T) -> Result<Key> {
        let (key, record) = self.keyed_record(value)?;
        self.write(vec![WriteOp::Insert {
            table: self.name.to_string(),
            record,
        }])
        .await?;
        Ok(key)
    }

    /// Applies a JSON merge patch (RFC 7386: `null` removes a field) to an existing record;
    /// returns the updated record. Only the changed fields are pushed where the route uses
    /// PATCH.
    pub async fn update(&self, key: impl Into<Key>, patch: Value) -> Result<T> {
        let key = key.into();
        self.write(vec![WriteOp::Update {
            table: self.name.to_string(),
            key: key.clone(),
            patch,
        }])
        .await?;
        self.get(key.clone()).await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "record vanished after update")
                .table(self.name.to_string())
                .key(&key)
        })
    }

    /// Deletes a record; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Key>) -> Result<bool> {
        let changes = self
            .write(vec![WriteOp::Delete {
                table: self.name.to_string(),
                key: key.into(),
            }])
            .await?;
        Ok(!changes.is_empty())
    }

    /// Records in key order after `after` (exclusive), at most `limit`.
    pub async fn scan(&self, after: Option<&Key>, limit: usize) -> Result<Vec<T>> {
        let records =
            self.engine
                .db()
                .scan(&*self.engine.store().read()?, &self.name, after, limit)?;
        self.decode_all(records)
    }

    /// Records whose indexed `field` matches `range`, in index order, at most `limit`.
    pub async fn query(&self, field: &str, range: IndexRange, limit: usize) -> Result<Vec<T>> {
        let records = self.engine.db().query(
            &*self.engine.store().read()?,
            &self.name,
            field,
            &range,
            limit,
        )?;
        self.decode_all(records)
    }

    /// Records whose indexed `field` equals `value`.
    pub async fn query_eq(
        &self,
        field: &str,
        value: impl Into<Value>,
        limit: usize,
    ) -> Result<Vec<T>> {
        self.query(field, IndexRange::Eq(value.into()), limit).await
    }

    /// Number of records.
    pub async fn count(&self) -> Result<u64> {
        self.engine
            .db()
            .count(&*self.engine.store().read()?, &self.name)
    }

    /// Committed changes of this table.
    pub fn watch(&self) -> Result<Watch> {
        self.engine.watch(Some(&self.name))
    }

    fn decode_all(&self, records: Vec<Record>) -> Result<Vec<T>> {
        let spec = self.engine.db().schema().table(&self.name)?;
        records
            .into_iter()
            .map(|r| {
                let key = spec.key_of(&r)?.unwrap_or(Key::Str(String::new()));
                self.decode(&key, r)
            })
            .collect()
    }
}
