//! A write transaction inside a write transaction: buffers one request's writes so that a
//! failing request can be dropped from a group commit without touching the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;
use crate::store::{KeyValue, ReadTxn, WriteTxn};

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

fn in_bounds(key: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let after_start = match start {
        Bound::Included(s) => key >= s,
        Bound::Excluded(s) => key > s,
        Bound::Unbounded => true,
    };
    let before_end = match end {
        Bound::Included(e) => key <= e,
        Bound::Excluded(e) => key < e,
        Bound::Unbounded => true,
    };
    after_start && before_end
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
        let staged: BTreeMap<&[u8], &Option<Vec<u8>>> = self
            .overlay
            .iter()
            .filter(|((ks, key), _)| ks == keyspace && in_bounds(key, start, end))
            .map(|((_, key), value)| (key.as_slice(), value))
            .collect();
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
