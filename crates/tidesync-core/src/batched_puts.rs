//! A write transaction that collects puts and hands them down in one call per keyspace
//! ([`BatchedPuts`]).
//!
//! A backend buffers every put (redb: in a sorted map, so each table is opened once per
//! commit), and for a bulk import of a thousand records that buffering costs as much as a
//! third of the rows' insertion into redb. A bulk write rarely reads what it has just written
//! (keys proved new are not read at all), so this wrapper appends its puts to a plain list per
//! keyspace and hands each list down with [`WriteTxn::put_rows`], which a backend may insert
//! directly. Any read of a keyspace, and any delete in it, first hands that keyspace's
//! collected puts down, so reads always see every earlier write.

use std::cell::RefCell;
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::store::{KeyValue, ReadTxn, WriteTxn};

/// Collected puts of one keyspace, in put order.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Wraps a write transaction for many puts (see the module docs). Call
/// [`BatchedPuts::finish`] before the transaction below commits: dropping the wrapper drops
/// the puts it still holds.
pub struct BatchedPuts<'t> {
    inner: RefCell<&'t mut dyn WriteTxn>,
    // A handful of keyspaces: a list beats a map.
    pending: RefCell<Vec<(String, Rows)>>,
}

impl<'t> BatchedPuts<'t> {
    /// Wraps `inner`.
    pub fn new(inner: &'t mut dyn WriteTxn) -> Self {
        BatchedPuts {
            inner: RefCell::new(inner),
            pending: RefCell::new(Vec::new()),
        }
    }

    /// Hands every collected put down to the transaction below.
    pub fn finish(self) -> Result<()> {
        let inner = self.inner.into_inner();
        for (keyspace, rows) in self.pending.into_inner() {
            inner.put_rows(&keyspace, rows)?;
        }
        Ok(())
    }

    /// Hands the collected puts of `keyspace` down (before anything reads or deletes there).
    fn hand_down(&self, keyspace: &str) -> Result<()> {
        let rows = {
            let mut pending = self.pending.try_borrow_mut().map_err(reentrant)?;
            match pending.iter().position(|(name, _)| name == keyspace) {
                Some(at) => pending.swap_remove(at).1,
                None => return Ok(()),
            }
        };
        self.inner
            .try_borrow_mut()
            .map_err(reentrant)?
            .put_rows(keyspace, rows)
    }

    /// Runs a read on the transaction below, after handing `keyspace`'s puts down.
    fn read<R>(&self, keyspace: &str, f: impl FnOnce(&dyn WriteTxn) -> Result<R>) -> Result<R> {
        self.hand_down(keyspace)?;
        let inner = self.inner.try_borrow().map_err(reentrant)?;
        f(&**inner)
    }
}

fn reentrant<E>(_: E) -> Error {
    Error::internal("batched puts: re-entrant use of the transaction")
}

impl ReadTxn for BatchedPuts<'_> {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(keyspace, |txn| txn.get(keyspace, key))
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.read(keyspace, |txn| {
            txn.range(keyspace, start, end, limit, reverse)
        })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.read(keyspace, |txn| txn.len(keyspace))
    }
}

impl WriteTxn for BatchedPuts<'_> {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let pending = self.pending.get_mut();
        let row = (key.to_vec(), value.to_vec());
        match pending.iter_mut().find(|(name, _)| name == keyspace) {
            Some((_, rows)) => rows.push(row),
            None => pending.push((keyspace.to_owned(), vec![row])),
        }
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        self.hand_down(keyspace)?;
        self.inner.get_mut().delete(keyspace, key)
    }

    fn discard(&mut self, keyspace: &str, key: &[u8]) -> Result<()> {
        self.hand_down(keyspace)?;
        self.inner.get_mut().discard(keyspace, key)
    }

    fn put_rows(&mut self, keyspace: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        for (key, value) in rows {
            self.put(keyspace, &key, &value)?;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        Err(Error::internal(
            "batched puts are committed by the transaction below: call finish, then commit it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::test_txn::MapTxn;

    #[test]
    fn reads_see_every_earlier_put_and_finish_hands_the_rest_down() {
        let mut below = MapTxn::default();
        below.put("a", b"k0", b"stored").unwrap();
        {
            let mut txn = BatchedPuts::new(&mut below);
            txn.put("a", b"k2", b"two").unwrap();
            txn.put("a", b"k1", b"one").unwrap();
            txn.put("a", b"k1", b"one again").unwrap();
            txn.put("b", b"x", b"bx").unwrap();
            // A read of `a` hands `a` down; `b` stays collected.
            assert_eq!(
                txn.get("a", b"k1").unwrap().as_deref(),
                Some(&b"one again"[..])
            );
            assert_eq!(txn.len("a").unwrap(), 3);
            assert_eq!(txn.pending.borrow().len(), 1);
            let rows = txn
                .range("a", Bound::Unbounded, Bound::Unbounded, None, false)
                .unwrap();
            let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(keys, vec![&b"k0"[..], b"k1", b"k2"]);
            // A delete after a collected put of the same key wins.
            txn.put("b", b"y", b"by").unwrap();
            txn.discard("b", b"y").unwrap();
            txn.put("c", b"z", b"cz").unwrap();
            txn.finish().unwrap();
        }
        assert_eq!(below.get("b", b"x").unwrap().as_deref(), Some(&b"bx"[..]));
        assert_eq!(below.get("b", b"y").unwrap(), None);
        assert_eq!(below.get("c", b"z").unwrap().as_deref(), Some(&b"cz"[..]));
    }

    #[test]
    fn puts_not_handed_down_are_dropped_with_the_wrapper() {
        let mut below = MapTxn::default();
        {
            let mut txn = BatchedPuts::new(&mut below);
            txn.put("a", b"k", b"v").unwrap();
        }
        assert_eq!(below.get("a", b"k").unwrap(), None);
    }
}
