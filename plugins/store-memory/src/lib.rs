//! # tidesync-store-memory
//!
//! An in-memory [`Store`] for tests, examples and caches. Nothing survives the process.
//!
//! - **Snapshot reads.** A read transaction holds an [`Arc`] of the committed data as it was when
//!   the transaction began; later commits replace the shared `Arc` and never touch the snapshot.
//! - **One writer at a time.** [`Store::write`] waits until the running write transaction is
//!   committed or dropped.
//! - **Buffered writes.** A write transaction keeps its puts and deletes in an overlay that its own
//!   reads see (`get`, `range`, `scan_prefix`, `len`); `commit` applies the overlay in one step
//!   under a lock, so readers see all of it or none of it. Dropping the transaction discards it.
//! - **Cheap commits.** Each keyspace is its own `Arc`, and a commit copies (with
//!   [`Arc::make_mut`]) only the keyspaces it touches, and only when a reader still holds the old
//!   version.
//!
//! [`MemoryStore`] is `Clone`; clones share the same data, like clones of an `Arc<dyn Store>`.
//!
//! ```
//! use tidesync_core::Store;
//! use tidesync_store_memory::MemoryStore;
//!
//! # fn main() -> tidesync_core::Result<()> {
//! let store = MemoryStore::new();
//! let mut txn = store.write()?;
//! txn.put("posts", b"p1", b"hello")?;
//! txn.commit()?;
//! assert_eq!(store.read()?.get("posts", b"p1")?, Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use tidesync_core::error::ErrorKind;
use tidesync_core::store::bounds_select_nothing;
use tidesync_core::write_buffer::WriteBuffer;
use tidesync_core::{Error, KeyValue, ReadTxn, Result, Store, WriteTxn};

const BACKEND: &str = "memory";

/// The pairs of one keyspace, ordered bytewise by key.
type Keyspace = BTreeMap<Vec<u8>, Vec<u8>>;
/// Every keyspace by name. Each keyspace is shared separately so a commit copies only the ones it
/// changes.
type Data = BTreeMap<String, Arc<Keyspace>>;

/// An in-memory [`Store`] with snapshot reads and a single writer. Clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The committed data. Readers clone the `Arc`; commits swap in a new version.
    data: Mutex<Arc<Data>>,
    /// Whether a write transaction is open.
    writer_busy: Mutex<bool>,
    /// Signalled when the open write transaction ends.
    writer_free: Condvar,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keyspaces = self.shared.data.lock().map(|data| data.len()).ok();
        f.debug_struct("MemoryStore")
            .field("keyspaces", &keyspaces)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn snapshot(&self) -> Result<Arc<Data>> {
        let data = self.shared.data.lock().map_err(poisoned)?;
        Ok(Arc::clone(&data))
    }
}

/// A poisoned lock means a thread panicked while changing the data; the data may be half
/// updated, so refuse to go on rather than serve it.
fn poisoned<T>(_: PoisonError<T>) -> Error {
    Error::new(
        ErrorKind::Storage,
        "memory store: a lock is poisoned (a thread panicked while holding it)",
    )
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn read(&self) -> Result<Box<dyn ReadTxn>> {
        Ok(Box::new(MemoryRead {
            snapshot: self.snapshot()?,
        }))
    }

    fn write(&self) -> Result<Box<dyn WriteTxn>> {
        let permit = WriterPermit::acquire(Arc::clone(&self.shared))?;
        // Taken after the permit: no commit can happen between here and our own commit, so this
        // snapshot stays the latest committed data for the whole transaction.
        let base = self.snapshot()?;
        Ok(Box::new(MemoryWrite {
            permit,
            base,
            overlay: WriteBuffer::new(),
        }))
    }
}

/// The right to be the one write transaction; given back when dropped.
struct WriterPermit {
    shared: Arc<Shared>,
}

impl WriterPermit {
    fn acquire(shared: Arc<Shared>) -> Result<Self> {
        {
            let mut busy = shared.writer_busy.lock().map_err(poisoned)?;
            while *busy {
                busy = shared.writer_free.wait(busy).map_err(poisoned)?;
            }
            *busy = true;
        }
        Ok(WriterPermit { shared })
    }
}

impl Drop for WriterPermit {
    fn drop(&mut self) {
        // The flag is a plain bool that is never left half-written, so a poisoned mutex is still
        // safe to use here; refusing would lock every future writer out.
        let mut busy = self
            .shared
            .writer_busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *busy = false;
        drop(busy);
        self.shared.writer_free.notify_one();
    }
}

/// A snapshot read transaction.
struct MemoryRead {
    snapshot: Arc<Data>,
}

impl ReadTxn for MemoryRead {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get(keyspace)
            .and_then(|ks| ks.get(key))
            .cloned())
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        Ok(scan(
            self.snapshot.get(keyspace).map(|ks| &**ks),
            start,
            end,
            limit,
            reverse,
        ))
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        Ok(self.snapshot.get(keyspace).map_or(0, |ks| ks.len() as u64))
    }
}

/// The write transaction: the committed data it started from plus its own pending changes.
struct MemoryWrite {
    permit: WriterPermit,
    base: Arc<Data>,
    overlay: WriteBuffer,
}

impl MemoryWrite {
    fn base_keyspace(&self, keyspace: &str) -> Option<&Keyspace> {
        self.base.get(keyspace).map(|ks| &**ks)
    }
}

impl ReadTxn for MemoryWrite {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.overlay.get_through(keyspace, key, || {
            Ok(self
                .base_keyspace(keyspace)
                .and_then(|ks| ks.get(key))
                .cloned())
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
        self.overlay
            .range_through(keyspace, start, end, limit, reverse, |limit| {
                Ok(scan(
                    self.base_keyspace(keyspace),
                    start,
                    end,
                    limit,
                    reverse,
                ))
            })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        let base = self.base_keyspace(keyspace);
        self.overlay
            .len_through(keyspace, base.map_or(0, |ks| ks.len() as u64), |key| {
                Ok(base.is_some_and(|ks| ks.contains_key(key)))
            })
    }
}

impl WriteTxn for MemoryWrite {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay.put(keyspace, key, value);
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        let existed = self.get(keyspace, key)?.is_some();
        if existed {
            self.overlay.delete(keyspace, key);
        }
        Ok(existed)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let MemoryWrite {
            permit,
            base,
            mut overlay,
        } = *self;
        // Our own reference to the base would force `make_mut` to copy everything.
        drop(base);
        {
            let mut guard = permit.shared.data.lock().map_err(poisoned)?;
            // Copies the keyspace map (not the keyspaces) only if a reader holds this version.
            let data = Arc::make_mut(&mut *guard);
            for (name, changes) in overlay.drain() {
                let shared_ks = data.entry(name).or_default();
                // Copies this keyspace only if a reader holds it.
                let ks = Arc::make_mut(shared_ks);
                for (key, pending) in changes {
                    match pending {
                        Some(value) => {
                            ks.insert(key, value);
                        }
                        None => {
                            ks.remove(&key);
                        }
                    }
                }
            }
            data.retain(|_, ks| !ks.is_empty());
        }
        // The permit is released only now, after the data is in place.
        drop(permit);
        Ok(())
    }
}

/// At most `limit` pairs of `ks` within the bounds, in key order (descending if `reverse`);
/// empty or inverted bounds select nothing.
fn scan(
    ks: Option<&Keyspace>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: Option<usize>,
    reverse: bool,
) -> Vec<KeyValue> {
    let limit = limit.unwrap_or(usize::MAX);
    let Some(ks) = ks else {
        return Vec::new();
    };
    if limit == 0 || bounds_select_nothing(start, end) {
        return Vec::new();
    }
    let iter = ks.range::<[u8], _>((start, end));
    let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    if reverse {
        iter.rev().take(limit).map(clone).collect()
    } else {
        iter.take(limit).map(clone).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_its_snapshot_while_commits_copy_on_write() -> Result<()> {
        let store = MemoryStore::new();
        let mut w = store.write()?;
        w.put("ks", b"k", b"1")?;
        w.commit()?;
        let before = store.read()?;
        let mut w = store.write()?;
        w.put("ks", b"k", b"2")?;
        w.commit()?;
        assert_eq!(before.get("ks", b"k")?, Some(b"1".to_vec()));
        assert_eq!(store.read()?.get("ks", b"k")?, Some(b"2".to_vec()));
        Ok(())
    }

    #[test]
    fn clones_share_data() -> Result<()> {
        let store = MemoryStore::new();
        let clone = store.clone();
        let mut w = clone.write()?;
        w.put("ks", b"k", b"v")?;
        w.commit()?;
        assert_eq!(store.read()?.len("ks")?, 1);
        Ok(())
    }

    #[test]
    fn deleting_everything_drops_the_keyspace() -> Result<()> {
        let store = MemoryStore::new();
        let mut w = store.write()?;
        w.put("ks", b"k", b"v")?;
        w.commit()?;
        let mut w = store.write()?;
        assert!(w.delete("ks", b"k")?);
        w.commit()?;
        assert!(store.snapshot()?.is_empty());
        Ok(())
    }
}
