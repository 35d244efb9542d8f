//! Bulk writes as a pipeline ([`BulkWriter`]): each batch is prepared on the caller's thread
//! (converted to JSON, checked, keyed, encoded: see [`tidesync_core::local::PreparedPut`])
//! while the batch before it commits on the store's writer thread, so an import keeps two
//! cores busy instead of one.
//!
//! A batch is queued only once the one before it has committed and its outcome is known, so
//! batches still commit in order, one transaction each, and a failed batch stops the
//! pipeline before anything after it is written.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use tidesync_actors::store_writer::PendingReply;
use tidesync_core::{Error, ErrorKind, Key, Result, TableSpec};

use crate::bulk::{self, Applied, BatchResult, BulkMode, Rejected};
use crate::table::{Table, into_json};

/// Writes batches of records into one table, one transaction per batch, preparing each batch
/// while the one before commits (see the module docs). Made by [`Table::bulk_writer`]; what
/// [`Table::bulk_write`] and `tidesync import` use.
///
/// [`BulkWriter::write`] answers for the batch before the one it is given (that one is still
/// being written when it returns); [`BulkWriter::finish`] answers for the last. Dropping the
/// writer does not cancel a batch already queued: it still commits, unreported.
#[derive(Debug)]
pub struct BulkWriter<T> {
    table: Table<T>,
    mode: BulkMode,
    /// Position in the whole input of the next batch's first record.
    next_first: usize,
    in_flight: Option<InFlight>,
    /// A batch failed: nothing more is written.
    stopped: bool,
}

/// What a written batch leaves to free: its ops and the changes nobody watched (a thousand
/// records each), freed once the next batch is queued, so that neither the writer thread nor
/// the gap between two batches pays for it.
#[derive(Debug, Default)]
#[expect(dead_code, reason = "held only to be freed at the right moment")]
struct Spent {
    ops: Vec<bulk::BulkOp>,
    unwatched: Vec<tidesync_core::local::Change>,
}

/// A batch queued on the writer thread, and what its report needs.
#[derive(Debug)]
struct InFlight {
    spec: TableSpec,
    /// The report so far: the records refused while preparing.
    result: BatchResult,
    /// Position (in the input) and key of each op sent, in op order.
    sent: Vec<(usize, Key)>,
    slot: bulk::Slot,
    /// `None` when every record was refused while preparing: nothing was sent.
    reply: Option<PendingReply<Applied>>,
}

impl<T: Serialize + DeserializeOwned + 'static> BulkWriter<T> {
    pub(crate) fn new(table: Table<T>, mode: BulkMode) -> Self {
        BulkWriter {
            table,
            mode,
            next_first: 0,
            in_flight: None,
            stopped: false,
        }
    }

    /// Prepares `records` as the next batch, waits for the batch before it (if any) to
    /// commit, then queues this one; returns the outcome of the batch before. If that batch
    /// failed, its error is returned and this batch is not written (nor is anything after:
    /// the writer is spent).
    pub async fn write(
        &mut self,
        records: impl IntoIterator<Item = T>,
    ) -> Result<Option<BatchResult>> {
        if self.stopped {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "this bulk writer stopped at a failed batch: nothing more is written",
            )
            .table(self.table.name()));
        }
        let spec = self.table.spec()?;
        // Fetched first: if the engine is gone, nothing of the batch before is lost here
        // (`finish` still answers for it).
        let writer = self.table.writer().await?.clone();
        let (result, sent, ops) = self.prepare(&spec, records);
        let (before, spent) = match self.in_flight.take() {
            Some(in_flight) => match self.settle(in_flight).await {
                Ok((result, spent)) => (Some(result), spent),
                Err(err) => {
                    self.stopped = true;
                    return Err(err);
                }
            },
            None => (None, Spent::default()),
        };
        let slot: bulk::Slot = Arc::new(std::sync::Mutex::new(Some(ops)));
        let reply = if sent.is_empty() {
            None
        } else {
            let job = bulk::job(spec.clone(), self.mode, slot.clone(), false);
            Some(writer.submit_command(job))
        };
        self.in_flight = Some(InFlight {
            spec,
            result,
            sent,
            slot,
            reply,
        });
        // Freed here, on the caller's thread, once the writer has its next batch.
        drop(spent);
        Ok(before)
    }

    /// Waits for the last batch queued; its outcome (`None` if no batch was queued).
    pub async fn finish(mut self) -> Result<Option<BatchResult>> {
        match self.in_flight.take() {
            Some(in_flight) => Ok(Some(self.settle(in_flight).await?.0)),
            None => Ok(None),
        }
    }

    /// Turns `records` into the ops of the next batch: the report so far (records refused
    /// here), the position and key of each op, and the ops.
    fn prepare(
        &mut self,
        spec: &TableSpec,
        records: impl IntoIterator<Item = T>,
    ) -> (BatchResult, Vec<(usize, Key)>, Vec<bulk::BulkOp>) {
        let table = self.table.name();
        let mut result = BatchResult {
            first: self.next_first,
            ..BatchResult::default()
        };
        let mut sent = Vec::new();
        let mut ops = Vec::new();
        for value in records {
            let index = self.next_first + result.records;
            result.records += 1;
            let prepared = into_json(table, value)
                .map_err(|err| (None, err))
                .and_then(|json| bulk::prepare(spec, self.mode, json));
            match prepared {
                Ok((key, op)) => {
                    sent.push((index, key));
                    ops.push(op);
                }
                Err((key, error)) => result.rejected.push(Rejected { index, key, error }),
            }
        }
        self.next_first += result.records;
        (result, sent, ops)
    }

    /// Waits for a queued batch and completes its report; also returns what the batch is done
    /// with, for the caller to free once the next batch is queued. A fast path that met a refusal its
    /// checks did not foresee wrote nothing and gave the ops back: they are written again,
    /// each record in its own sub-transaction.
    async fn settle(&self, in_flight: InFlight) -> Result<(BatchResult, Spent)> {
        let InFlight {
            spec,
            mut result,
            sent,
            slot,
            reply,
        } = in_flight;
        let Some(reply) = reply else {
            return Ok((result, Spent::default()));
        };
        let (applied, unwatched) = match reply.result_and_unwatched().await {
            Ok(answer) => answer,
            Err(_) if slot.lock().is_ok_and(|s| s.is_some()) => {
                let job = bulk::job(spec, self.mode, slot, true);
                self.table
                    .writer()
                    .await?
                    .submit_command(job)
                    .result_and_unwatched()
                    .await?
            }
            Err(err) => return Err(err),
        };
        let Applied {
            changed,
            refused,
            spent,
        } = applied;
        result.written = sent.len() - refused.len();
        result.changed = changed;
        for (i, error) in refused {
            if let Some((index, key)) = sent.get(i) {
                result.rejected.push(Rejected {
                    index: *index,
                    key: Some(key.clone()),
                    error,
                });
            }
        }
        result.rejected.sort_by_key(|r| r.index);
        Ok((
            result,
            Spent {
                ops: spent,
                unwatched,
            },
        ))
    }
}
