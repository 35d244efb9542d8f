//! Bulk writes: many records in batches, each batch one transaction (all its accepted records
//! and their outbox entries commit together, or none do), with the records that could not be
//! written reported by position instead of failing the whole import.
//!
//! A record is rejected (and the rest of its batch still commits) when it is not a JSON
//! object, has a key of the wrong type, cannot be stored (e.g. a non-scalar value in an
//! indexed field), already exists (`Insert`), or does not exist (`Merge`). A store failure
//! fails the batch as a whole: nothing of it is written.

use serde::Serialize;
use serde_json::Value;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tidesync_actors::StoreCommand;
use tidesync_core::batched_puts::BatchedPuts;
use tidesync_core::local::{Change, LocalBatch, LocalDb, PreparedPut, Staged, WriteOp, layout};
use tidesync_core::spec::describe;
use tidesync_core::{Error, ErrorKind, Key, TableSpec};
use tidesync_core::{ReadTxn, WriteTxn};

/// What a bulk write does with each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkMode {
    /// Only new records: a record whose key exists is rejected.
    Insert,
    /// Insert or replace the whole record (like [`crate::Table::put`]).
    #[default]
    Upsert,
    /// Apply each record as a JSON merge patch (RFC 7386: `null` removes a field) to the
    /// existing record with its key (like [`crate::Table::update`]); a record that does not
    /// exist is rejected.
    Merge,
}

impl BulkMode {
    /// `insert`, `upsert` or `merge`.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkMode::Insert => "insert",
            BulkMode::Upsert => "upsert",
            BulkMode::Merge => "merge",
        }
    }
}

/// Default records per batch (per transaction) of [`crate::Table::bulk_write`].
pub const DEFAULT_BULK_BATCH: usize = 1000;

/// A record a bulk write did not write.
#[derive(Debug)]
pub struct Rejected {
    /// Its position in the input (0-based, counted over all batches).
    pub index: usize,
    /// Its key, when it has one.
    pub key: Option<Key>,
    /// Why (names the table, the key and the field).
    pub error: Error,
}

/// The outcome of one batch (one transaction).
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Position (0-based, in the whole input) of the batch's first record.
    pub first: usize,
    /// Records in the batch.
    pub records: usize,
    /// Records written (accepted); writes identical to the stored record count here too.
    pub written: usize,
    /// Records that changed something (and, in a pushed table, were queued for push).
    pub changed: usize,
    /// Records not written, with their positions and reasons.
    pub rejected: Vec<Rejected>,
}

/// The outcome of [`crate::Table::bulk_write`]: one result per batch.
#[derive(Debug, Default)]
pub struct BulkReport {
    /// Every batch, in input order.
    pub batches: Vec<BatchResult>,
}

impl BulkReport {
    /// Records seen.
    pub fn records(&self) -> usize {
        self.batches.iter().map(|b| b.records).sum()
    }

    /// Records written.
    pub fn written(&self) -> usize {
        self.batches.iter().map(|b| b.written).sum()
    }

    /// Records that changed something.
    pub fn changed(&self) -> usize {
        self.batches.iter().map(|b| b.changed).sum()
    }

    /// Every rejected record, in input order.
    pub fn rejected(&self) -> impl Iterator<Item = &Rejected> {
        self.batches.iter().flat_map(|b| b.rejected.iter())
    }
}

/// One record of a bulk write, ready for its transaction: a put checked and encoded ahead
/// ([`PreparedPut`], done on the caller's thread while the batch before is written), or a
/// merge patch (which needs the stored record, so it is checked at write time).
#[derive(Debug)]
pub(crate) enum BulkOp {
    Put(PreparedPut),
    Merge(WriteOp),
}

impl BulkOp {
    /// The merge's patch (a put's values were checked when it was prepared).
    fn patch(&self) -> Option<&serde_json::Map<String, Value>> {
        match self {
            BulkOp::Merge(WriteOp::Update { patch, .. }) => patch.as_object(),
            _ => None,
        }
    }

    fn key(&self) -> Option<&Key> {
        match self {
            BulkOp::Put(put) => Some(put.key()),
            BulkOp::Merge(WriteOp::Update { key, .. }) => Some(key),
            BulkOp::Merge(_) => None,
        }
    }
}

/// Turns one JSON record into its write, or the reason it cannot be written. Keys are
/// generated here (UUIDv7 for string-key tables) so every rejection can name one.
pub(crate) fn prepare(
    spec: &TableSpec,
    mode: BulkMode,
    json: Value,
) -> std::result::Result<(Key, BulkOp), (Option<Key>, Error)> {
    let table = spec.name.as_str();
    if mode != BulkMode::Merge {
        let put = PreparedPut::new(spec, json, mode == BulkMode::Insert)?;
        return Ok((put.key().clone(), BulkOp::Put(put)));
    }
    let Value::Object(record) = &json else {
        return Err((
            None,
            Error::invalid(format!(
                "a record must be a JSON object, got {}",
                describe(&json)
            ))
            .table(table),
        ));
    };
    let key = match spec.key_of(record) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Err((
                None,
                Error::invalid("a merge patch needs the record's key")
                    .table(table)
                    .field(spec.key.clone()),
            ));
        }
        Err(err) => return Err((None, err)),
    };
    let op = WriteOp::Update {
        table: table.to_owned(),
        key: key.clone(),
        patch: json,
    };
    Ok((key, BulkOp::Merge(op)))
}

/// What a batch job sends back: per accepted op whether it changed something, the rejected
/// ops (by their position among the ops), and the ops themselves, so that the caller's thread
/// frees them rather than the writer's.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) changed: usize,
    pub(crate) refused: Vec<(usize, Error)>,
    pub(crate) spent: Vec<BulkOp>,
}

/// The ops of one batch, shared with its write job so that they come back if the fast path
/// has to give up (see [`job`]).
pub(crate) type Slot = Arc<Mutex<Option<Vec<BulkOp>>>>;

/// The write job of one batch.
///
/// Fast path (`isolate = false`): every refusal that can be known before writing (an existing
/// key for `Insert`, a missing record for `Merge`, a non-scalar indexed value) is found with
/// reads first, and the accepted ops then run straight on the transaction. If an op still
/// fails (something the checks did not foresee), the job fails as a whole (its transaction is
/// dropped: nothing of the batch is written) and puts the ops back in `slot`, for the caller
/// to run them again with `isolate = true`: every op in its own sub-transaction, so a refused
/// op is left out alone.
pub(crate) fn job(spec: TableSpec, mode: BulkMode, slot: Slot, isolate: bool) -> BatchJob {
    BatchJob {
        spec,
        mode,
        slot,
        isolate,
    }
}

/// One batch of a bulk write, as a typed store command (see [`job`]).
pub(crate) struct BatchJob {
    spec: TableSpec,
    mode: BulkMode,
    slot: Slot,
    isolate: bool,
}

impl StoreCommand for BatchJob {
    type Output = Applied;

    fn run(
        self,
        db: &LocalDb,
        txn: &mut dyn WriteTxn,
    ) -> tidesync_core::Result<(Applied, Vec<Change>)> {
        let BatchJob {
            spec,
            mode,
            slot,
            isolate,
        } = self;

        let mut ops = slot
            .lock()
            .map_err(|_| Error::internal("bulk write slot poisoned"))?
            .take()
            .ok_or_else(|| Error::internal("bulk write ran twice"))?;
        let mut changes: Vec<Change> = Vec::with_capacity(ops.len());
        let mut refused = Vec::new();
        // One proof for the batch that its new keys have nothing stored, instead of three
        // reads per record that would find nothing (an import of new records).
        let mut batch = db.records().prove_new(
            &*txn,
            &spec.name,
            ops.iter().filter_map(|op| match op {
                BulkOp::Put(put) => Some(put.key().clone()),
                BulkOp::Merge(_) => None,
            }),
        )?;
        if isolate {
            for (i, op) in ops.iter_mut().enumerate() {
                let mut staged = Staged::new(&mut *txn);
                match write(db, &mut staged, op, &mut batch) {
                    Ok(change) => {
                        staged.apply()?;
                        changes.extend(change);
                    }
                    Err(err) if is_record_error(&err) => refused.push((i, err)),
                    Err(err) => return Err(err),
                }
            }
        } else {
            refused = precheck(&spec, mode, &*txn, &ops, &batch)?;
            let mut skip = refused.iter().map(|(i, _)| *i).peekable();
            // The batch's rows reach the store a keyspace at a time, not one put at a time.
            let mut puts = BatchedPuts::new(&mut *txn);
            for i in 0..ops.len() {
                if skip.peek() == Some(&i) {
                    skip.next();
                    continue;
                }
                match write(db, &mut puts, &mut ops[i], &mut batch) {
                    Ok(change) => changes.extend(change),
                    Err(err) => {
                        if is_record_error(&err)
                            && let Ok(mut back) = slot.lock()
                        {
                            *back = Some(ops);
                        }
                        return Err(err);
                    }
                }
            }
            puts.finish()?;
        }
        let applied = Applied {
            changed: changes.len(),
            refused,
            spent: ops,
        };
        Ok((applied, changes))
    }
}

/// Writes one op of a batch; the change it made, if any.
fn write(
    db: &LocalDb,
    txn: &mut dyn WriteTxn,
    op: &mut BulkOp,
    batch: &mut LocalBatch,
) -> tidesync_core::Result<Option<Change>> {
    match op {
        BulkOp::Put(put) => db.records().apply_prepared_in(txn, put, batch),
        BulkOp::Merge(op) => Ok(db
            .records()
            .apply_local_in(txn, std::slice::from_ref(op), batch)?
            .changes
            .pop()),
    }
}

/// The refusals of a batch that reads can tell before anything is written, in op order.
/// A key `batch` proved new has no record, so it is not read. (A put's values were checked
/// when it was prepared.)
fn precheck(
    spec: &TableSpec,
    mode: BulkMode,
    txn: &dyn ReadTxn,
    ops: &[BulkOp],
    batch: &LocalBatch,
) -> tidesync_core::Result<Vec<(usize, Error)>> {
    let records = layout::records(&spec.name);
    let mut inserted: HashSet<&Key> = HashSet::new();
    let mut refused = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(key) = op.key() else {
            continue;
        };
        // A merge patch only changes the indexed fields it names (null removes: fine).
        let unstorable = op.patch().and_then(|patch| {
            spec.indexes.iter().find_map(|field| {
                let value = patch.get(field)?;
                layout::index_value(value).err().map(|got| {
                    Error::invalid(format!(
                        "an indexed field must be null, a boolean, a number or a string, got {got}"
                    ))
                    .table(spec.name.clone())
                    .key(key)
                    .field(field.clone())
                })
            })
        });
        let stored = || -> tidesync_core::Result<bool> {
            Ok(!batch.contains(&spec.name, key) && txn.get(&records, &key.encode())?.is_some())
        };
        let refusal = match (unstorable, mode) {
            (Some(err), _) => Some(err),
            (None, BulkMode::Insert) if !inserted.insert(key) || stored()? => Some(
                Error::new(ErrorKind::AlreadyExists, "record already exists")
                    .table(spec.name.clone())
                    .key(key),
            ),
            (None, BulkMode::Merge) if !stored()? => Some(
                Error::new(ErrorKind::NotFound, "no such record")
                    .table(spec.name.clone())
                    .key(key),
            ),
            (None, _) => None,
        };
        if let Some(err) = refusal {
            refused.push((i, err));
        }
    }
    Ok(refused)
}

/// Errors about one record (the rest of its batch can commit); anything else (the store
/// failing) fails the batch.
fn is_record_error(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::InvalidInput | ErrorKind::AlreadyExists | ErrorKind::NotFound
    )
}
