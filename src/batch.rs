//! Atomic multi-record, multi-table batches.

use serde::Serialize;
use serde_json::Value;

use tidesync_core::local::{Change, WriteOp};
use tidesync_core::{Error, Key, Result};

use crate::engine::Engine;
use crate::receipt::{ChangeId, Receipt};
use crate::table::to_json;

/// What [`Batch::commit_with_receipts`] wrote.
#[derive(Debug, Clone)]
pub struct BatchWritten {
    /// The changes, as [`Batch::commit`] returns them.
    pub changes: Vec<Change>,
    /// One receipt per write, in the order the writes were added.
    pub receipts: Vec<Receipt>,
}

/// Writes that commit together or not at all, each with its outbox entry.
#[derive(Debug)]
pub struct Batch {
    engine: Engine,
    ops: Vec<WriteOp>,
    error: Option<Error>,
}

impl Batch {
    pub(crate) fn new(engine: Engine) -> Self {
        Batch {
            engine,
            ops: Vec::new(),
            error: None,
        }
    }

    /// Inserts or replaces a record.
    pub fn put<T: Serialize>(mut self, table: &str, record: &T) -> Self {
        match to_json(table, record) {
            Ok(record) => self.ops.push(WriteOp::Put {
                table: table.to_owned(),
                record,
            }),
            Err(err) => self.error = self.error.or(Some(err)),
        }
        self
    }

    /// Applies a JSON merge patch to an existing record.
    pub fn update(mut self, table: &str, key: impl Into<Key>, patch: Value) -> Self {
        self.ops.push(WriteOp::Update {
            table: table.to_owned(),
            key: key.into(),
            patch,
        });
        self
    }

    /// Deletes a record.
    pub fn delete(mut self, table: &str, key: impl Into<Key>) -> Self {
        self.ops.push(WriteOp::Delete {
            table: table.to_owned(),
            key: key.into(),
        });
        self
    }

    /// Commits all writes atomically; the first invalid write fails the whole batch and
    /// nothing is written.
    pub async fn commit(self) -> Result<Vec<Change>> {
        if let Some(err) = self.error {
            return Err(err);
        }
        self.engine.local_write(self.ops).await
    }

    /// [`Batch::commit`], with one [`Receipt`] per write, in the order they were added
    /// (writes to one record share their change id: they travel in one outbox entry).
    pub async fn commit_with_receipts(self) -> Result<BatchWritten> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let written = self
            .engine
            .actors()
            .store_writer()
            .await?
            .local_write_tracked(self.ops)
            .await?;
        let receipts = written
            .seqs
            .iter()
            .map(|seq| Receipt::new(self.engine.clone(), seq.map(ChangeId)))
            .collect();
        Ok(BatchWritten {
            changes: written.changes,
            receipts,
        })
    }
}
