//! A write transaction inside a write transaction: buffers one request's writes so that a
//! failing request can be dropped from a group commit without touching the others.

use std::ops::Bound;

use crate::error::Result;
use crate::store::{KeyValue, ReadTxn, WriteTxn};
use crate::write_buffer::WriteBuffer;

/// Buffers writes over `inner`; reads see the buffer first. [`Staged::apply`] moves the buffer
/// into `inner`; dropping it discards the buffer.
pub struct Staged<'a> {
    inner: &'a mut dyn WriteTxn,
    buffer: WriteBuffer,
}

impl<'a> Staged<'a> {
    /// Starts buffering over `inner`.
    pub fn new(inner: &'a mut dyn WriteTxn) -> Self {
        Staged {
            inner,
            buffer: WriteBuffer::new(),
        }
    }

    /// Writes the buffered changes into the underlying transaction.
    pub fn apply(mut self) -> Result<()> {
        for (keyspace, rows) in self.buffer.drain() {
            for (key, value) in rows {
                match value {
                    Some(value) => self.inner.put(&keyspace, &key, &value)?,
                    None => self.inner.discard(&keyspace, &key)?,
                }
            }
        }
        Ok(())
    }
}

impl ReadTxn for Staged<'_> {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.buffer
            .get_through(keyspace, key, || self.inner.get(keyspace, key))
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.buffer
            .range_through(keyspace, start, end, limit, reverse, |limit| {
                self.inner.range(keyspace, start, end, limit, reverse)
            })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        self.buffer
            .len_through(keyspace, self.inner.len(keyspace)?, |key| {
                Ok(self.inner.get(keyspace, key)?.is_some())
            })
    }
}

impl WriteTxn for Staged<'_> {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.buffer.put(keyspace, key, value);
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        let existed = self.get(keyspace, key)?.is_some();
        self.buffer.delete(keyspace, key);
        Ok(existed)
    }

    fn discard(&mut self, keyspace: &str, key: &[u8]) -> Result<()> {
        self.buffer.delete(keyspace, key);
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        (*self).apply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::test_txn::MapTxn;

    fn keys(rows: Vec<KeyValue>) -> Vec<Vec<u8>> {
        rows.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn range_merges_the_buffer_of_one_keyspace_only() {
        let mut base = MapTxn::default();
        for ks in ["r/post", "r/posts", "r/posts/x", "r/posts\u{1}"] {
            base.put(ks, b"b", b"base").unwrap();
        }
        base.put("r/posts", b"d", b"base").unwrap();
        let mut staged = Staged::new(&mut base);
        for ks in ["r/post", "r/posts", "r/posts/x", "r/posts\u{1}"] {
            staged.put(ks, b"a", b"new").unwrap();
            staged.put(ks, b"c", b"new").unwrap();
        }
        staged.delete("r/posts", b"d").unwrap();

        let all = staged
            .range("r/posts", Bound::Unbounded, Bound::Unbounded, None, false)
            .unwrap();
        assert_eq!(keys(all), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let from_b = staged
            .range(
                "r/posts",
                Bound::Excluded(b"a"),
                Bound::Unbounded,
                None,
                false,
            )
            .unwrap();
        assert_eq!(keys(from_b), vec![b"b".to_vec(), b"c".to_vec()]);
        let last = staged
            .range("r/posts", Bound::Unbounded, Bound::Unbounded, Some(1), true)
            .unwrap();
        assert_eq!(keys(last), vec![b"c".to_vec()]);
        let up_to_b = staged
            .range(
                "r/posts",
                Bound::Unbounded,
                Bound::Included(b"b"),
                None,
                false,
            )
            .unwrap();
        assert_eq!(keys(up_to_b), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(staged.len("r/posts").unwrap(), 3);
    }

    #[test]
    fn empty_and_inverted_bounds_return_nothing() {
        let mut base = MapTxn::default();
        let mut staged = Staged::new(&mut base);
        staged.put("k", b"m", b"v").unwrap();
        let inverted = staged
            .range(
                "k",
                Bound::Included(b"z"),
                Bound::Included(b"a"),
                None,
                false,
            )
            .unwrap();
        assert!(inverted.is_empty());
        let empty = staged
            .range(
                "k",
                Bound::Excluded(b"m"),
                Bound::Excluded(b"m"),
                None,
                false,
            )
            .unwrap();
        assert!(empty.is_empty());
    }
}
