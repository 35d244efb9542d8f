//! A write transaction for unit tests: one ordered map, nothing durable.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use crate::error::Result;
use crate::store::{KeyValue, ReadTxn, WriteTxn};

/// Every keyspace's pairs in one map keyed by `(keyspace, key)`; `commit` does nothing.
#[derive(Default, Clone, PartialEq, Debug)]
pub(crate) struct MapTxn(pub(crate) BTreeMap<(String, Vec<u8>), Vec<u8>>);

impl ReadTxn for MapTxn {
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(keyspace.to_owned(), key.to_vec())).cloned())
    }

    fn range(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        let mut rows: Vec<KeyValue> = self
            .0
            .iter()
            .filter(|((ks, k), _)| {
                ks == keyspace && RangeBounds::<[u8]>::contains(&(start, end), k.as_slice())
            })
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            rows.reverse();
        }
        rows.truncate(limit.unwrap_or(usize::MAX));
        Ok(rows)
    }

    fn len(&self, keyspace: &str) -> Result<u64> {
        Ok(self.0.keys().filter(|(ks, _)| ks == keyspace).count() as u64)
    }
}

impl WriteTxn for MapTxn {
    fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.0
            .insert((keyspace.to_owned(), key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, keyspace: &str, key: &[u8]) -> Result<bool> {
        Ok(self
            .0
            .remove(&(keyspace.to_owned(), key.to_vec()))
            .is_some())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
