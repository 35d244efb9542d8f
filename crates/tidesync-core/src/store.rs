//! The storage plugin contract: a small transactional key-value interface over named keyspaces.
//!
//! Everything tidesync keeps (records, indexes, the outbox, bases, checkpoints, dead letters) is
//! written on top of this trait by `tidesync-core`, once. A backend only has to provide ordered
//! byte keys per keyspace, snapshot reads, and atomic durable write transactions; the testkit's
//! store conformance suite (`tidesync_testkit::store_suite`) proves that a backend does.
//!
//! The interface is synchronous on purpose: embedded stores block on fsync, and the engine runs
//! every write transaction on a blocking thread, never on an async event loop.

use std::ops::Bound;

use crate::error::Error;

/// One key-value pair returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A storage backend. Implementations must be cheap to share (`Arc<dyn Store>`).
///
/// Contract (checked by the conformance suite):
/// - keys within a keyspace are ordered bytewise (lexicographic `&[u8]` order);
/// - a read transaction sees one consistent snapshot and never sees uncommitted writes;
/// - a write transaction sees its own writes; `commit` makes all of them visible and durable at
///   once; dropping it without `commit` discards all of them;
/// - at most one write transaction is open at a time (others wait in `write`);
/// - a keyspace that was never written reads as empty.
pub trait Store: Send + Sync + 'static {
    /// A short name of the backend, used in errors and logs (`"redb"`, `"memory"`).
    fn backend(&self) -> &'static str;
    /// Opens a snapshot read transaction.
    fn read(&self) -> Result<Box<dyn ReadTxn>, Error>;
    /// Opens the (single) write transaction, waiting for a running one to finish.
    ///
    /// Calling it again on a thread that already holds a write transaction of the same store
    /// waits forever: the engine has exactly one writer (the store writer actor of `tidesync-actors`) for this reason.
    fn write(&self) -> Result<Box<dyn WriteTxn>, Error>;
}

/// Reads shared by read and write transactions.
pub trait ReadTxn: Send {
    /// The value stored under `key` in `keyspace`.
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Pairs with keys within the bounds in key order (descending if `reverse`), at most `limit`.
    /// Empty or inverted bounds return an empty result (never a panic).
    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, Error>;

    /// Number of keys in `keyspace`.
    fn len(&self, keyspace: &str) -> Result<u64, Error>;

    /// Pairs whose key starts with `prefix`, in key order, at most `limit`.
    fn scan_prefix(
        &self,
        keyspace: &str,
        prefix: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, Error> {
        match prefix_end(prefix) {
            Some(end) => self.range(
                keyspace,
                Bound::Included(prefix),
                Bound::Excluded(&end),
                limit,
                false,
            ),
            None => self.range(
                keyspace,
                Bound::Included(prefix),
                Bound::Unbounded,
                limit,
                false,
            ),
        }
    }
}

/// A write transaction. Dropping it without [`WriteTxn::commit`] rolls everything back.
pub trait WriteTxn: ReadTxn {
    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<(), Error>;
    /// Removes `key`; returns whether it existed.
    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool, Error>;
    /// Removes `key` if it exists, without telling whether it did. The engine's own deletes
    /// use this: a backend that buffers writes can then skip the read that
    /// [`WriteTxn::delete`] needs for its answer. The default calls `delete`.
    fn discard(&mut self, keyspace: &str, key: &[u8]) -> Result<(), Error> {
        self.delete(keyspace, key).map(|_| ())
    }
    /// Stores many rows of one keyspace, as [`WriteTxn::put`] of each in order would (a later
    /// row of the same key wins). A backend may hand them to its storage in one go, skipping
    /// the buffering single puts get; the default puts them one by one. For writes that put
    /// many rows at once (a bulk import through [`BatchedPuts`](crate::batched_puts::BatchedPuts)).
    fn put_rows(&mut self, keyspace: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), Error> {
        for (key, value) in rows {
            self.put(keyspace, &key, &value)?;
        }
        Ok(())
    }
    /// Opens a part of this transaction that can be undone alone, e.g. one acknowledgement
    /// among the many a push turn commits together: the writes from now on are kept
    /// ([`WriteTxn::keep_part`]) or undone ([`WriteTxn::undo_part`]) as one. Returns `false`
    /// when the backend cannot (the default): the caller then buffers the part itself
    /// ([`Staged`](crate::local::Staged)). Parts do not nest.
    fn begin_part(&mut self) -> bool {
        false
    }
    /// Keeps the writes of the open part and closes it.
    fn keep_part(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// Undoes every write made since [`WriteTxn::begin_part`] and closes the part.
    fn undo_part(&mut self) -> Result<(), Error> {
        Err(Error::internal(
            "this transaction cannot undo a part of itself",
        ))
    }
    /// Makes every write of this transaction visible and durable, atomically.
    fn commit(self: Box<Self>) -> Result<(), Error>;
}

/// Whether `(start, end)` selects nothing by construction: start after end, or equal with an
/// excluded side. `BTreeMap::range` panics on such bounds and backends may not define them, so
/// every range answers them with an empty result first.
pub fn bounds_select_nothing<T: Ord + ?Sized>(start: Bound<&T>, end: Bound<&T>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when there is
/// none (the prefix is empty or all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{bounds_select_nothing, prefix_end};
    use std::ops::Bound;

    #[test]
    fn empty_bounds_are_detected() {
        let (a, b): (&[u8], &[u8]) = (b"a", b"b");
        assert!(bounds_select_nothing(
            Bound::Included(b),
            Bound::Included(a)
        ));
        assert!(bounds_select_nothing(
            Bound::Excluded(a),
            Bound::Excluded(a)
        ));
        assert!(bounds_select_nothing(
            Bound::Included(a),
            Bound::Excluded(a)
        ));
        assert!(bounds_select_nothing(
            Bound::Excluded(a),
            Bound::Included(a)
        ));
        assert!(!bounds_select_nothing(
            Bound::Included(a),
            Bound::Included(a)
        ));
        assert!(!bounds_select_nothing(Bound::Unbounded, Bound::Excluded(a)));
    }

    #[test]
    fn prefix_end_increments_last_byte_that_can_grow() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
