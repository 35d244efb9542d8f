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

use tidesync_actors::store_writer::StoreWriter;
use tidesync_core::local::{IndexRange, LocalWritten, WriteOp};
use tidesync_core::spec::describe;
use tidesync_core::{Error, ErrorKind, Key, Record, Result, TableSpec};

use crate::bulk::{BatchResult, BulkMode, BulkReport};
use crate::bulk_writer::BulkWriter;
use crate::engine::Engine;
use crate::receipt::{ChangeId, Receipt, Written};
use crate::watch::Watch;

/// A handle on one table. Cheap to clone.
pub struct Table<T> {
    engine: Engine,
    name: Arc<str>,
    // A direct line to the store writer, fetched on the first write and shared by clones:
    // writes then skip the actor's thread on their way in and out.
    store_writer: Arc<tokio::sync::OnceCell<StoreWriter>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            engine: self.engine.clone(),
            name: self.name.clone(),
            store_writer: self.store_writer.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

/// A record as JSON; a `serde_json::Value` is taken as it is (no copy).
pub(crate) fn into_json<T: Serialize + 'static>(table: &str, value: T) -> Result<Value> {
    let boxed: Box<dyn std::any::Any> = Box::new(value);
    match boxed.downcast::<Value>() {
        Ok(json) => Ok(*json),
        Err(other) => match other.downcast::<T>() {
            Ok(value) => to_json(table, &*value),
            Err(_) => Err(Error::internal("bulk record lost its type").table(table)),
        },
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
            store_writer: Arc::new(tokio::sync::OnceCell::new()),
            _type: PhantomData,
        }
    }

    /// Applies `ops` through the store writer, once durable; tells which outbox entry
    /// carries each.
    async fn local_write_tracked(&self, ops: Vec<WriteOp>) -> Result<LocalWritten> {
        self.writer().await?.local_write_tracked(ops).await
    }

    /// The receipt of the single op of a write.
    fn receipt(&self, written: &LocalWritten) -> Receipt {
        let change = written.seqs.first().copied().flatten().map(ChangeId);
        Receipt::new(self.engine.clone(), change)
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
        let key = spec.key_or_new(record)?;
        Ok((key, json))
    }

    /// The record under `key`.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<T>> {
        let key = key.into();
        let record =
            self.engine
                .db()
                .records()
                .get(&*self.engine.store().read()?, &self.name, &key)?;
        record.map(|r| self.decode(&key, r)).transpose()
    }

    /// Inserts or replaces a record; returns its key (generated when missing). Queued for push.
    pub async fn put(&self, value: &T) -> Result<Key> {
        Ok(self.put_with_receipt(value).await?.value)
    }

    /// [`Table::put`], with the write's [`Receipt`] (await `receipt.pushed()` to know when
    /// the server has it).
    pub async fn put_with_receipt(&self, value: &T) -> Result<Written<Key>> {
        let (key, record) = self.keyed_record(value)?;
        let written = self
            .local_write_tracked(vec![WriteOp::Put {
                table: self.name.to_string(),
                record,
            }])
            .await?;
        Ok(Written {
            value: key,
            receipt: self.receipt(&written),
        })
    }

    /// Inserts a record that must not exist yet; returns its key.
    pub async fn insert(&self, value: &T) -> Result<Key> {
        Ok(self.insert_with_receipt(value).await?.value)
    }

    /// [`Table::insert`], with the write's [`Receipt`].
    pub async fn insert_with_receipt(&self, value: &T) -> Result<Written<Key>> {
        let (key, record) = self.keyed_record(value)?;
        let written = self
            .local_write_tracked(vec![WriteOp::Insert {
                table: self.name.to_string(),
                record,
            }])
            .await?;
        Ok(Written {
            value: key,
            receipt: self.receipt(&written),
        })
    }

    /// Applies a JSON merge patch (RFC 7386: `null` removes a field) to an existing record;
    /// returns the updated record. Only the changed fields are pushed where the route uses
    /// PATCH.
    pub async fn update(&self, key: impl Into<Key>, patch: Value) -> Result<T> {
        Ok(self.update_with_receipt(key, patch).await?.value)
    }

    /// [`Table::update`], with the write's [`Receipt`].
    pub async fn update_with_receipt(
        &self,
        key: impl Into<Key>,
        patch: Value,
    ) -> Result<Written<T>> {
        let key = key.into();
        let written = self
            .local_write_tracked(vec![WriteOp::Update {
                table: self.name.to_string(),
                key: key.clone(),
                patch,
            }])
            .await?;
        let receipt = self.receipt(&written);
        // The record as this write left it: reading it back could meet a later change (a
        // pulled delete), and the write did commit (BUG-13).
        let record = written
            .changes
            .into_iter()
            .find(|c| c.key == key)
            .and_then(|c| c.record);
        let value = match record {
            Some(record) => self.decode(&key, record)?,
            // A patch that changed nothing: the record is as it was.
            None => self.get(key.clone()).await?.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "record vanished after update")
                    .table(self.name.to_string())
                    .key(&key)
            })?,
        };
        Ok(Written { value, receipt })
    }

    /// Writes `records` in one transaction: every accepted record and its outbox entry commit
    /// together, or (if the store fails) none do. A record that cannot be written (not an
    /// object, a key of the wrong type, an unstorable indexed value, already there for
    /// [`BulkMode::Insert`], missing for [`BulkMode::Merge`]) is left out and reported in
    /// [`BatchResult::rejected`] with its position in `records`; the others still commit.
    /// Records without a key get a UUIDv7 (string-key tables). Returns once durable.
    pub async fn write_batch(
        &self,
        records: impl IntoIterator<Item = T>,
        mode: BulkMode,
    ) -> Result<BatchResult>
    where
        T: 'static,
    {
        let mut writer = self.bulk_writer(mode);
        writer.write(records).await?;
        writer
            .finish()
            .await?
            .ok_or_else(|| Error::internal("a queued batch has no outcome").table(self.name()))
    }

    /// Writes `records` in batches of `batch_size` (one transaction each, see
    /// [`Table::write_batch`]), in order, preparing each batch while the one before commits
    /// ([`BulkWriter`]). Stops at the first batch the store fails to commit and returns its
    /// error; the batches before it stay committed.
    pub async fn bulk_write(
        &self,
        records: impl IntoIterator<Item = T>,
        mode: BulkMode,
        batch_size: usize,
    ) -> Result<BulkReport>
    where
        T: 'static,
    {
        let batch_size = batch_size.max(1);
        let mut report = BulkReport::default();
        let mut records = records.into_iter().peekable();
        let mut writer = self.bulk_writer(mode);
        while records.peek().is_some() {
            let chunk: Vec<T> = records.by_ref().take(batch_size).collect();
            report.batches.extend(writer.write(chunk).await?);
        }
        report.batches.extend(writer.finish().await?);
        Ok(report)
    }

    /// A writer of batches into this table that prepares each batch while the one before
    /// commits: for imports that produce their batches as they go (see [`BulkWriter`]).
    pub fn bulk_writer(&self, mode: BulkMode) -> BulkWriter<T>
    where
        T: 'static,
    {
        BulkWriter::new(self.clone(), mode)
    }

    /// This table's declaration.
    pub(crate) fn spec(&self) -> Result<TableSpec> {
        Ok(self.engine.db().schema().table(&self.name)?.clone())
    }

    /// The direct line to the store writer (fetched once, shared by clones).
    pub(crate) async fn writer(&self) -> Result<&StoreWriter> {
        self.store_writer
            .get_or_try_init(|| async { self.engine.actors().store_writer().await })
            .await
    }

    /// Deletes a record; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Key>) -> Result<bool> {
        Ok(self.delete_with_receipt(key).await?.value)
    }

    /// [`Table::delete`], with the write's [`Receipt`]. A delete that cancels an unsent
    /// create queues nothing ([`crate::Pushed::NothingToPush`]); the create's own receipt
    /// says [`crate::Pushed::Superseded`].
    pub async fn delete_with_receipt(&self, key: impl Into<Key>) -> Result<Written<bool>> {
        let written = self
            .local_write_tracked(vec![WriteOp::Delete {
                table: self.name.to_string(),
                key: key.into(),
            }])
            .await?;
        Ok(Written {
            value: !written.changes.is_empty(),
            receipt: self.receipt(&written),
        })
    }

    /// Records in key order after `after` (exclusive), at most `limit`.
    pub async fn scan(&self, after: Option<&Key>, limit: usize) -> Result<Vec<T>> {
        let records = self.engine.db().records().scan(
            &*self.engine.store().read()?,
            &self.name,
            after,
            limit,
        )?;
        self.decode_all(records)
    }

    /// Records whose indexed `field` matches `range`, in index order, at most `limit`.
    pub async fn query(&self, field: &str, range: IndexRange, limit: usize) -> Result<Vec<T>> {
        let records = self.engine.db().records().query(
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
            .records()
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
