#![doc = include_str!("../README.md")]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{
    CommitError, ConcurrencyMode, Database, DatabaseError, Durability, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
    TableError, TransactionError, WriteTransaction,
};
use tidesync_core::error::ErrorKind;
use tidesync_core::store::bounds_select_nothing;
use tidesync_core::write_buffer::WriteBuffer;
use tidesync_core::{Error, KeyValue, ReadTxn, Result, Store, WriteTxn};

const BACKEND: &str = "redb";

/// The cache size [`RedbStore::open`] uses: 64 MiB (redb's default of 1 GiB is too much for a
/// client application).
pub const DEFAULT_CACHE_SIZE: usize = 64 * 1024 * 1024;

/// The redb table that holds `keyspace`.
fn table(keyspace: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(keyspace)
}

/// Maps any redb error to a storage error that keeps the redb error as its source.
fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage(BACKEND, e)
}

/// Maps an open failure, spelling out the common "already open" case.
fn open_error(path: &Path, multi_process: bool, e: DatabaseError) -> Error {
    match e {
        DatabaseError::DatabaseAlreadyOpen if multi_process => Error::new(
            ErrorKind::Storage,
            format!(
                "redb store: the database file {} is open in another process that did not open \
                 it for multi-process use; every process sharing the file must open it with \
                 RedbOptions::multi_process(true)",
                path.display()
            ),
        )
        .with_source(e),
        DatabaseError::LockProtocolMismatch => Error::new(
            ErrorKind::Storage,
            format!(
                "redb store: the database file {} is open in another process that uses another \
                 version of redb's multi-process locking; all processes must use the same redb \
                 version",
                path.display()
            ),
        )
        .with_source(e),
        DatabaseError::DatabaseAlreadyOpen => Error::new(
            ErrorKind::Storage,
            format!(
                "redb store: the database file {} is already open, by another process or by \
                 another handle in this process; share one RedbStore instead of opening the \
                 file twice (or, for several processes, open it with \
                 RedbOptions::multi_process(true) in each)",
                path.display()
            ),
        )
        .with_source(e),
        e => Error::new(
            ErrorKind::Storage,
            format!("redb store: cannot open {}: {e}", path.display()),
        )
        .with_source(e),
    }
}

/// Options for opening a [`RedbStore`]; start from [`RedbOptions::new`] (or `default()`).
#[derive(Debug, Clone, Copy)]
pub struct RedbOptions {
    cache_size: usize,
    durability: Durability,
    multi_process: bool,
    compact_at_open: bool,
    compact_min_bytes: u64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            cache_size: DEFAULT_CACHE_SIZE,
            durability: Durability::Immediate,
            multi_process: false,
            compact_at_open: false,
            compact_min_bytes: COMPACT_MIN_FILE_BYTES,
        }
    }
}

/// By default, a file smaller than this is never compacted at open: the space is not worth the
/// time ([`RedbOptions::compact_min_bytes`]).
pub const COMPACT_MIN_FILE_BYTES: u64 = 64 * 1024 * 1024;

impl RedbOptions {
    /// The defaults: a [`DEFAULT_CACHE_SIZE`] cache, [`Durability::Immediate`], and the file
    /// open in this process only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets redb's page cache size in bytes.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// Sets the durability of every commit. [`Durability::None`] commits are persisted only by a
    /// later [`Durability::Immediate`] commit, so a crash may lose them.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Lets several processes (and several handles in this process) open the file for reading
    /// and writing at once: redb's [`ConcurrencyMode::MultiWriter`]. Write transactions are
    /// serialised across processes (`write()` waits for another process's transaction) and each
    /// one sees the others' commits. Every process must open the file this way; commits are
    /// two-phase and always durable, so [`Durability::None`] is refused.
    ///
    /// For several processes of one app: pair it with a leader election (only one of them
    /// syncs; see `tidesync-leader-lockfile`). Same host, local file systems only.
    pub fn multi_process(mut self, enabled: bool) -> Self {
        self.multi_process = enabled;
        self
    }

    /// Whether [`open`](RedbOptions::open) compacts a file with much free space (off by
    /// default). redb never gives a file's pages back on its own: after a burst of writes
    /// has been pushed and acknowledged, the file keeps the burst's size. With this on, when
    /// the file is at least [`compact_min_bytes`](RedbOptions::compact_min_bytes), `open`
    /// measures how much of it is allocated and, when a third of it or more is free, compacts
    /// it once (redb's `Database::compact`, crash-safe). Both cost time in proportion to the
    /// file: measuring walks every table's pages, so it is not done unless asked. Never in
    /// [`multi_process`](RedbOptions::multi_process) mode, where other processes may hold the
    /// file.
    pub fn compact_at_open(mut self, enabled: bool) -> Self {
        self.compact_at_open = enabled;
        self
    }

    /// The smallest file [`compact_at_open`](RedbOptions::compact_at_open) considers
    /// ([`COMPACT_MIN_FILE_BYTES`] by default).
    pub fn compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }

    /// Opens the database file at `path`, creating it if it is missing.
    ///
    /// Fails with [`ErrorKind::Storage`] if the file is already open (in another process, or by
    /// another live handle in this one, unless every opener uses
    /// [`multi_process`](RedbOptions::multi_process)), unreadable or corrupt; with
    /// [`ErrorKind::Config`] for [`Durability::None`] in multi-process mode.
    pub fn open(self, path: impl AsRef<Path>) -> Result<RedbStore> {
        let path = path.as_ref();
        if self.multi_process && matches!(self.durability, Durability::None) {
            return Err(Error::config(format!(
                "redb store {}: Durability::None is not supported with multi_process(true) \
                 (other processes could not see such commits); use Durability::Immediate",
                path.display()
            )));
        }
        let mode = if self.multi_process {
            ConcurrencyMode::MultiWriter
        } else {
            ConcurrencyMode::ExclusiveWriter
        };
        let mut db = Database::builder()
            .set_cache_size(self.cache_size)
            .set_concurrency_mode(mode)
            .create(path)
            .map_err(|e| open_error(path, self.multi_process, e))?;
        if self.compact_at_open && !self.multi_process {
            compact_if_sparse(&mut db, path, self.compact_min_bytes)?;
        }
        Ok(RedbStore {
            db: Arc::new(db),
            durability: self.durability,
        })
    }
}

/// Compacts the freshly opened `db` when its file is at least `min_bytes` and less than two
/// thirds of it are allocated; returns whether it did.
fn compact_if_sparse(db: &mut Database, path: &Path, min_bytes: u64) -> Result<bool> {
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if file_bytes < min_bytes {
        return Ok(false);
    }
    let used_bytes = {
        let txn = db.begin_write().map_err(storage)?;
        let stats = txn.stats().map_err(storage)?;
        let used = stats.allocated_pages() * stats.page_size() as u64;
        txn.abort().map_err(storage)?;
        used
    };
    // Worth a pass when at least a third of the file would come back.
    if used_bytes.saturating_mul(3) >= file_bytes.saturating_mul(2) {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    // Each call moves what it can; a few rounds reach the end of what can be given back.
    for _ in 0..4 {
        if !db.compact().map_err(storage)? {
            break;
        }
    }
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        path = %path.display(),
        before_bytes = file_bytes,
        after_bytes = after,
        ms = started.elapsed().as_millis() as u64,
        "redb store: compacted a mostly free file at open"
    );
    Ok(true)
}

/// A [`Store`] on a redb database file. Clones share the same open database.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    durability: Durability,
}

impl RedbStore {
    /// Opens (creating if missing) the database file at `path` with the default
    /// [`RedbOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        RedbOptions::new().open(path)
    }

    /// Wraps a database opened by the caller, for redb settings [`RedbOptions`] does not cover.
    /// Commits use [`Durability::Immediate`]; see [`RedbStore::with_durability`].
    pub fn from_database(db: Arc<Database>) -> Self {
        RedbStore {
            db,
            durability: Durability::Immediate,
        }
    }

    /// Sets the durability of every later commit through this handle. A store opened with
    /// [`RedbOptions::multi_process`] refuses [`Durability::None`]: every `write()` then fails.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The underlying redb database, e.g. for maintenance or statistics.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}

impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn read(&self) -> Result<Box<dyn ReadTxn>> {
        let txn = self.db.begin_read().map_err(storage)?;
        Ok(Box::new(RedbRead {
            snapshot: Snapshot::new(txn),
        }))
    }

    fn write(&self) -> Result<Box<dyn WriteTxn>> {
        Ok(Box::new(self.begin(SPILL_BYTES)?))
    }
}

impl RedbStore {
    fn begin(&self, spill_bytes: usize) -> Result<RedbWrite> {
        // Blocks while another write transaction is open: that is the contract.
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(self.durability).map_err(storage)?;
        // Taken while this transaction holds the writer lock (in every concurrency mode, across
        // processes too), so no commit can come between: the snapshot is exactly the state the
        // transaction starts from.
        let base = self.db.begin_read().map_err(storage)?;
        Ok(RedbWrite {
            txn,
            base: Some(Snapshot::new(base)),
            overlay: WriteBuffer::new(),
            spill_bytes,
            spilled: BTreeSet::new(),
        })
    }
}

type ReadOnly = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A read snapshot whose tables are opened once and kept: opening a table costs a lookup in the
/// table tree and a few allocations, and a local write reads the same few keyspaces many times.
struct Snapshot {
    txn: ReadTransaction,
    // keyspace → its table, `None` if it does not exist in the snapshot. A handful of
    // keyspaces, read on every get: a sorted map beats hashing the name.
    tables: RefCell<BTreeMap<String, Option<ReadOnly>>>,
}

impl Snapshot {
    fn new(txn: ReadTransaction) -> Self {
        Snapshot {
            txn,
            tables: RefCell::new(BTreeMap::new()),
        }
    }

    /// Runs `f` on the keyspace's table (`None` if it was never created).
    fn with<R>(&self, keyspace: &str, f: impl FnOnce(Option<&ReadOnly>) -> Result<R>) -> Result<R> {
        let mut tables = self
            .tables
            .try_borrow_mut()
            .map_err(|_| Error::internal("redb store: re-entrant read of a transaction"))?;
        if let Some(opened) = tables.get(keyspace) {
            return f(opened.as_ref());
        }
        let opened = match self.txn.open_table(table(keyspace)) {
            Ok(t) => Some(t),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage(e)),
        };
        f(tables.entry(keyspace.to_owned()).or_insert(opened).as_ref())
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(keyspace, |t| match t {
            Some(t) => get(t, key),
            None => Ok(None),
        })
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.with(keyspace, |t| match t {
            Some(t) => range(t, start, end, limit, reverse),
            None => Ok(Vec::new()),
        })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.with(keyspace, |t| match t {
            Some(t) => t.len().map_err(storage),
            None => Ok(0),
        })
    }
}

/// A snapshot read transaction.
struct RedbRead {
    snapshot: Snapshot,
}

impl ReadTxn for RedbRead {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot.get(keyspace, key)
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.snapshot.range(keyspace, start, end, limit, reverse)
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.snapshot.len(keyspace)
    }
}

/// Writes buffered rows (a `None` value removes the key) into an open table.
fn write_buffered(
    t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    rows: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) -> Result<()> {
    for (key, value) in rows {
        match value {
            Some(value) => {
                t.insert(key.as_slice(), value.as_slice())
                    .map_err(storage)?;
            }
            None => {
                t.remove(key.as_slice()).map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// Rows of one `put_rows` call from which they go straight into the table.
const DIRECT_ROWS: usize = 64;

/// Buffered rows beyond which a write transaction hands them to redb (bounds its memory).
const SPILL_BYTES: usize = 32 * 1024 * 1024;

/// The write transaction. Writes are buffered per keyspace and handed to redb at commit, each
/// table opened once (redb's `Table` borrows the transaction, so it cannot be kept across
/// calls, and opening one per operation cost more than the operation). Reads see the buffer
/// over `base`, the snapshot the transaction started from. redb aborts the transaction when it
/// is dropped without commit, and the buffer goes with it.
struct RedbWrite {
    txn: WriteTransaction,
    base: Option<Snapshot>,
    overlay: WriteBuffer,
    spill_bytes: usize,
    // Keyspaces whose rows were already handed to redb (a large transaction): their reads go
    // to the transaction itself, below the buffer.
    spilled: BTreeSet<String>,
}

impl RedbWrite {
    /// The transaction's table; opening creates it if it is missing.
    fn open(&self, keyspace: &str) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>> {
        self.txn.open_table(table(keyspace)).map_err(storage)
    }

    /// Whether reads of `keyspace` below the buffer go to the snapshot.
    fn base_of(&self, keyspace: &str) -> Option<&Snapshot> {
        self.base
            .as_ref()
            .filter(|_| !self.spilled.contains(keyspace))
    }

    fn base_get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.base_of(keyspace) {
            Some(base) => base.get(keyspace, key),
            None => get(&self.open(keyspace)?, key),
        }
    }

    fn base_range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        match self.base_of(keyspace) {
            Some(base) => base.range(keyspace, start, end, limit, reverse),
            None => range(&self.open(keyspace)?, start, end, limit, reverse),
        }
    }

    fn base_len(&self, keyspace: &str) -> Result<u64> {
        match self.base_of(keyspace) {
            Some(base) => base.len(keyspace),
            None => self.open(keyspace)?.len().map_err(storage),
        }
    }

    /// Hands the buffer to redb once it holds more than `spill_bytes` (bounds its memory);
    /// never while a part is open: what reached redb could not be undone.
    fn spill_if_large(&mut self) -> Result<()> {
        if self.overlay.bytes() > self.spill_bytes && !self.overlay.part_open() {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands every buffered row to redb, one table opening per keyspace.
    fn flush(&mut self) -> Result<()> {
        for (keyspace, rows) in self.overlay.drain() {
            write_buffered(&mut self.open(&keyspace)?, rows)?;
            self.spilled.insert(keyspace);
        }
        Ok(())
    }
}

impl ReadTxn for RedbWrite {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.overlay
            .get_through(keyspace, key, || self.base_get(keyspace, key))
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.overlay
            .range_through(keyspace, start, end, limit, reverse, |limit| {
                self.base_range(keyspace, start, end, limit, reverse)
            })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.overlay
            .len_through(keyspace, self.base_len(keyspace)?, |key| {
                Ok(self.base_get(keyspace, key)?.is_some())
            })
    }
}

impl WriteTxn for RedbWrite {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay.put(keyspace, key, value);
        self.spill_if_large()
    }

    /// Many rows go straight into the table (after the keyspace's buffered rows, which came
    /// first), skipping the buffer; reads of the keyspace then go to the transaction, as after
    /// a spill. A few rows are buffered like single puts: opening the table costs more.
    fn put_rows(&mut self, keyspace: &str, mut rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if rows.len() < DIRECT_ROWS || self.overlay.part_open() {
            for (key, value) in rows {
                self.overlay.put(keyspace, &key, &value);
            }
            return self.spill_if_large();
        }
        let buffered = self.overlay.take(keyspace);
        // Key order inserts faster; the sort is stable, so a later row of a key still wins.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        {
            let mut t = self.open(keyspace)?;
            write_buffered(&mut t, buffered.into_iter().flatten())?;
            for (key, value) in &rows {
                t.insert(key.as_slice(), value.as_slice())
                    .map_err(storage)?;
            }
        }
        self.spilled.insert(keyspace.to_owned());
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        let existed = self.get(keyspace, key)?.is_some();
        self.discard(keyspace, key)?;
        Ok(existed)
    }

    fn discard(&mut self, keyspace: &str, key: &[u8]) -> Result<()> {
        // Removing a key that is not there is a no-op at commit.
        self.overlay.delete(keyspace, key);
        self.spill_if_large()
    }

    /// A part is undone in the buffer: its writes stay there until it ends (no spill).
    fn begin_part(&mut self) -> bool {
        self.overlay.begin_part();
        true
    }

    fn keep_part(&mut self) -> Result<()> {
        self.overlay.keep_part();
        // What the part could not spill goes now if the buffer grew large.
        self.spill_if_large()
    }

    fn undo_part(&mut self) -> Result<()> {
        if self.overlay.undo_part() {
            Ok(())
        } else {
            Err(Error::internal(
                "redb store: no part of the transaction to undo",
            ))
        }
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        // Release the snapshot first: it pins the pages this commit replaces.
        self.base = None;
        self.txn.commit().map_err(storage)
    }
}

fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    Ok(table.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
}

fn range(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: Option<usize>,
    reverse: bool,
) -> Result<Vec<KeyValue>> {
    let limit = limit.unwrap_or(usize::MAX);
    if limit == 0 || bounds_select_nothing(start, end) {
        return Ok(Vec::new());
    }
    let iter = table.range::<&[u8]>((start, end)).map_err(storage)?;
    let pair = |item: std::result::Result<_, StorageError>| {
        let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) = item.map_err(storage)?;
        Ok((k.value().to_vec(), v.value().to_vec()))
    };
    if reverse {
        iter.rev().take(limit).map(pair).collect()
    } else {
        iter.take(limit).map(pair).collect()
    }
}

// The five redb error enums all become storage errors through `storage`; these assertions keep
// that true if redb changes them (each must be a `Send + Sync` error).
const _: () = {
    const fn is_storage_error<T: std::error::Error + Send + Sync + 'static>() {}
    is_storage_error::<DatabaseError>();
    is_storage_error::<TransactionError>();
    is_storage_error::<TableError>();
    is_storage_error::<StorageError>();
    is_storage_error::<CommitError>();
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A tiny deterministic generator (no `rand` dependency here).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    type Model = BTreeMap<(String, Vec<u8>), Vec<u8>>;

    fn model_range(
        model: &Model,
        ks: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Vec<KeyValue> {
        let mut rows: Vec<KeyValue> = model
            .iter()
            .filter(|((k, key), _)| {
                k == ks
                    && match start {
                        Bound::Included(s) => key.as_slice() >= s,
                        Bound::Excluded(s) => key.as_slice() > s,
                        Bound::Unbounded => true,
                    }
                    && match end {
                        Bound::Included(e) => key.as_slice() <= e,
                        Bound::Excluded(e) => key.as_slice() < e,
                        Bound::Unbounded => true,
                    }
            })
            .map(|((_, key), v)| (key.clone(), v.clone()))
            .collect();
        if reverse {
            rows.reverse();
        }
        rows.truncate(limit.unwrap_or(usize::MAX));
        rows
    }

    fn bound(kind: u64, key: &[u8]) -> Bound<&[u8]> {
        match kind {
            0 => Bound::Included(key),
            1 => Bound::Excluded(key),
            _ => Bound::Unbounded,
        }
    }

    /// Buffered writes over committed rows read exactly like a model map, with and without
    /// spilling the buffer into redb mid-transaction, with parts of transactions kept or
    /// undone along the way (no spill while a part is open).
    fn reads_match_the_model(spill_bytes: usize) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("t.redb")).unwrap();
        let mut model = Model::new();
        let mut rng = Lcg(7);
        let keyspaces = ["a", "a/b", "b"];
        for _round in 0..12 {
            let mut txn = store.begin(spill_bytes).unwrap();
            let mut shadow = model.clone();
            // The shadow as it was when the open part began (see `WriteTxn::begin_part`).
            let mut part: Option<Model> = None;
            for _op in 0..40 {
                match (&part, rng.next(6)) {
                    (None, 0) => {
                        assert!(txn.begin_part());
                        part = Some(shadow.clone());
                    }
                    (Some(_), 0) => {
                        txn.undo_part().unwrap();
                        shadow = part.take().unwrap();
                    }
                    (Some(_), 1) => {
                        txn.keep_part().unwrap();
                        part = None;
                    }
                    _ => {}
                }
                let ks = keyspaces[rng.next(3) as usize];
                let key = vec![b'k', rng.next(20) as u8];
                match rng.next(4) {
                    0 => {
                        let existed = shadow.remove(&(ks.to_owned(), key.clone())).is_some();
                        assert_eq!(txn.delete(ks, &key).unwrap(), existed);
                    }
                    _ => {
                        let value = vec![rng.next(255) as u8; 3];
                        shadow.insert((ks.to_owned(), key.clone()), value.clone());
                        txn.put(ks, &key, &value).unwrap();
                    }
                }
                let ks = keyspaces[rng.next(3) as usize];
                let (lo, hi) = (
                    vec![b'k', rng.next(22) as u8],
                    vec![b'k', rng.next(22) as u8],
                );
                let (start, end) = (bound(rng.next(3), &lo), bound(rng.next(3), &hi));
                let limit = [None, Some(0), Some(1), Some(3)][rng.next(4) as usize];
                let reverse = rng.next(2) == 1;
                assert_eq!(
                    txn.range(ks, start, end, limit, reverse).unwrap(),
                    model_range(&shadow, ks, start, end, limit, reverse),
                    "{ks} {start:?} {end:?} {limit:?} {reverse}"
                );
                let count = shadow.keys().filter(|(k, _)| k == ks).count() as u64;
                assert_eq!(txn.len(ks).unwrap(), count);
                assert_eq!(
                    txn.get(ks, &lo).unwrap(),
                    shadow.get(&(ks.to_owned(), lo.clone())).cloned()
                );
            }
            if part.take().is_some() {
                txn.keep_part().unwrap();
            }
            if rng.next(3) == 0 {
                drop(txn); // rolled back
            } else {
                Box::new(txn).commit().unwrap();
                model = shadow;
            }
            let read = store.read().unwrap();
            for ks in keyspaces {
                assert_eq!(
                    read.range(ks, Bound::Unbounded, Bound::Unbounded, None, false)
                        .unwrap(),
                    model_range(&model, ks, Bound::Unbounded, Bound::Unbounded, None, false)
                );
            }
        }
    }

    #[test]
    fn buffered_writes_read_like_the_model() {
        reads_match_the_model(SPILL_BYTES);
    }

    #[test]
    fn spilled_writes_read_like_the_model() {
        reads_match_the_model(16);
    }

    /// In multi-process mode a write transaction's reads see the other handle's last commit:
    /// a counter incremented alternately through two handles on one file loses no increment.
    #[test]
    fn multi_process_writes_read_the_latest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.redb");
        let open = || RedbOptions::new().multi_process(true).open(&path).unwrap();
        let handles = [open(), open()];
        for i in 0..40u64 {
            let mut txn = handles[(i % 2) as usize].write().unwrap();
            let current = match txn.get("m", b"counter").unwrap() {
                Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().unwrap()),
                None => 0,
            };
            assert_eq!(current, i);
            txn.put("m", b"counter", &(current + 1).to_be_bytes())
                .unwrap();
            txn.commit().unwrap();
        }
    }
}
