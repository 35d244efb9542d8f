#![doc = include_str!("../README.md")]

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{
    CommitError, ConcurrencyMode, Database, DatabaseError, Durability, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
    TableError, TransactionError, WriteTransaction,
};
use tidesync_core::error::ErrorKind;
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
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            cache_size: DEFAULT_CACHE_SIZE,
            durability: Durability::Immediate,
            multi_process: false,
        }
    }
}

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
        let db = Database::builder()
            .set_cache_size(self.cache_size)
            .set_concurrency_mode(mode)
            .create(path)
            .map_err(|e| open_error(path, self.multi_process, e))?;
        Ok(RedbStore {
            db: Arc::new(db),
            durability: self.durability,
        })
    }
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
        Ok(Box::new(RedbRead { txn }))
    }

    fn write(&self) -> Result<Box<dyn WriteTxn>> {
        // Blocks while another write transaction is open: that is the contract.
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(self.durability).map_err(storage)?;
        Ok(Box::new(RedbWrite { txn }))
    }
}

/// A snapshot read transaction. Tables are opened per call: that is a lookup in the snapshot's
/// table tree, and it keeps the transaction free of self-references.
struct RedbRead {
    txn: ReadTransaction,
}

impl RedbRead {
    /// The keyspace's table, or `None` if it was never created.
    fn open(
        &self,
        keyspace: &str,
    ) -> Result<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
        match self.txn.open_table(table(keyspace)) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }
}

impl ReadTxn for RedbRead {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.open(keyspace)? {
            Some(t) => get(&t, key),
            None => Ok(None),
        }
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        match self.open(keyspace)? {
            Some(t) => range(&t, start, end, limit, reverse),
            None => Ok(Vec::new()),
        }
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        match self.open(keyspace)? {
            Some(t) => t.len().map_err(storage),
            None => Ok(0),
        }
    }
}

/// The write transaction. redb aborts it when it is dropped without commit.
struct RedbWrite {
    txn: WriteTransaction,
}

impl RedbWrite {
    /// `Table` borrows the transaction, so it cannot be kept in `self`; it is opened per call.
    /// Opening creates the table if it is missing.
    fn open(&self, keyspace: &str) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>> {
        self.txn.open_table(table(keyspace)).map_err(storage)
    }
}

impl ReadTxn for RedbWrite {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get(&self.open(keyspace)?, key)
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        range(&self.open(keyspace)?, start, end, limit, reverse)
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.open(keyspace)?.len().map_err(storage)
    }
}

impl WriteTxn for RedbWrite {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.open(keyspace)?.insert(key, value).map_err(storage)?;
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        let removed = self.open(keyspace)?.remove(key).map_err(storage)?.is_some();
        Ok(removed)
    }

    fn commit(self: Box<Self>) -> Result<()> {
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
    if limit == 0 || range_is_empty(start, end) {
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

/// Whether `(start, end)` selects nothing by construction (start after end, or equal with an
/// excluded side); answered without asking redb, whose behaviour on such bounds is unspecified.
fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
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
