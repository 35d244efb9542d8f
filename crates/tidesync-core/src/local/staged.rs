//! A write transaction inside a write transaction: buffers one request's writes so that a
//! failing request can be dropped from a group commit without touching the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;
use crate::store::{KeyValue, ReadTxn, WriteTxn, bounds_select_nothing};

/// Buffers writes over `inner`; reads see the buffer first. [`Staged::apply`] moves the buffer
/// into `inner`; dropping it discards the buffer.
pub struct Staged<'a> {
    inner: &'a mut dyn WriteTxn,
    // (keyspace, key) → Some(value) for a put, None for a delete.
    overlay: BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> Staged<'a> {
    /// Starts buffering over `inner`.
    pub fn new(inner: &'a mut dyn WriteTxn) -> Self {
        Staged {
            inner,
            overlay: BTreeMap::new(),
        }
    }

    /// Writes the buffered changes into the underlying transaction.
    pub fn apply(self) -> Result<()> {
        for ((keyspace, key), value) in self.overlay {
            match value {
                Some(value) => self.inner.put(&keyspace, &key, &value)?,
                None => {
                    self.inner.delete(&keyspace, &key)?;
                }
            }
        }
        Ok(())
    }
}

impl ReadTxn for Staged<'_> {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(&(keyspace.to_owned(), key.to_vec())) {
            Some(value) => Ok(value.clone()),
            None => self.inner.get(keyspace, key),
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
        // Only this keyspace's buffered rows within the bounds: a range over the overlay,
        // not a scan of it (the overlay holds a whole page when a pull applies one).
        let owned = |k: &[u8]| (keyspace.to_owned(), k.to_vec());
        let lo = match start {
            Bound::Included(s) => Bound::Included(owned(s)),
            Bound::Excluded(s) => Bound::Excluded(owned(s)),
            Bound::Unbounded => Bound::Included((keyspace.to_owned(), Vec::new())),
        };
        let hi = match end {
            Bound::Included(e) => Bound::Included(owned(e)),
            Bound::Excluded(e) => Bound::Excluded(owned(e)),
            // `keyspace + "\0"` is the next keyspace name: every key of this one sorts before.
            Bound::Unbounded => Bound::Excluded((format!("{keyspace}\0"), Vec::new())),
        };
        let staged: BTreeMap<&[u8], &Option<Vec<u8>>> =
            if bounds_select_nothing(lo.as_ref(), hi.as_ref()) {
                BTreeMap::new()
            } else {
                self.overlay
                    // Exact: only `keyspace` lies between these tuple bounds.
                    .range((lo, hi))
                    .map(|((_, key), value)| (key.as_slice(), value))
                    .collect()
            };
        // Deleted keys may hide base rows, so ask the base for enough rows to fill `limit`.
        let base_limit = limit.map(|l| l + staged.len());
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .inner
            .range(keyspace, start, end, base_limit, reverse)?
            .into_iter()
            .collect();
        for (key, value) in staged {
            match value {
                Some(v) => merged.insert(key.to_vec(), v.clone()),
                None => merged.remove(key),
            };
        }
        let take = limit.unwrap_or(usize::MAX);
        Ok(if reverse {
            merged.into_iter().rev().take(take).collect()
        } else {
            merged.into_iter().take(take).collect()
        })
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        let mut len = self.inner.len(keyspace)? as i64;
        for ((ks, key), value) in &self.overlay {
            if ks != keyspace {
                continue;
            }
            let existed = self.inner.get(ks, key)?.is_some();
            match (existed, value.is_some()) {
                (false, true) => len += 1,
                (true, false) => len -= 1,
                _ => {}
            }
        }
        Ok(len.max(0) as u64)
    }
}

impl WriteTxn for Staged<'_> {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.overlay
            .insert((keyspace.to_owned(), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        let existed = self.get(keyspace, key)?.is_some();
        self.overlay
            .insert((keyspace.to_owned(), key.to_vec()), None);
        Ok(existed)
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
