//! The rows a write transaction has written but not yet handed to what lies below it.
//!
//! Every backend buffers (redb: to open each table once per commit; the memory store: to
//! publish a commit at once), and so does [`Staged`](crate::local::Staged) (to drop one
//! request from a group commit). Reading through a buffer has one set of rules, kept here
//! once: a buffered put shadows the row below, a buffered delete hides it, scans merge both
//! in key order.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;
use crate::store::{KeyValue, bounds_select_nothing};

/// One keyspace's buffered rows: key → `Some(value)` for a put, `None` for a delete.
pub type BufferedRows = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Buffered writes, per keyspace.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    /// Per keyspace (a transaction touches a handful: a sorted map beats hashing the name).
    keyspaces: BTreeMap<String, BufferedRows>,
    bytes: usize,
    /// While a part is open ([`WriteBuffer::begin_part`]): how to undo it.
    part: Option<UndoLog>,
}

/// What the writes of an open part replaced, so that it can be undone.
#[derive(Debug)]
struct UndoLog {
    /// The buffer's byte count when the part began.
    bytes: usize,
    /// One per write, oldest first.
    replaced: Vec<Replaced>,
}

/// What one write replaced: its keyspace, its key, and what the buffer held for that key
/// before it (`None`: nothing; `Some(None)`: a buffered delete).
type Replaced = (String, Vec<u8>, Option<Option<Vec<u8>>>);

impl WriteBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers a put of `value` under `key`.
    pub fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) {
        self.record(keyspace, key, Some(value.to_vec()));
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, keyspace: &str, key: &[u8]) {
        self.record(keyspace, key, None);
    }

    fn record(&mut self, keyspace: &str, key: &[u8], value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        let replaced = match self.keyspaces.get_mut(keyspace) {
            Some(rows) => rows.insert(key.to_vec(), value),
            None => {
                self.keyspaces.insert(
                    keyspace.to_owned(),
                    BufferedRows::from([(key.to_vec(), value)]),
                );
                None
            }
        };
        if let Some(part) = &mut self.part {
            part.replaced
                .push((keyspace.to_owned(), key.to_vec(), replaced));
        }
    }

    /// Opens a part: the writes from now on can be undone together ([`WriteBuffer::undo_part`])
    /// or kept ([`WriteBuffer::keep_part`]). Opening a part while one is open keeps the open
    /// one's writes and starts anew. Taking rows out of the buffer ([`WriteBuffer::take`],
    /// [`WriteBuffer::drain`]) ends the part: what left the buffer cannot be undone here.
    pub fn begin_part(&mut self) {
        self.part = Some(UndoLog {
            bytes: self.bytes,
            replaced: Vec::new(),
        });
    }

    /// Whether a part is open.
    pub fn part_open(&self) -> bool {
        self.part.is_some()
    }

    /// Keeps the open part's writes (they stay buffered) and closes it.
    pub fn keep_part(&mut self) {
        self.part = None;
    }

    /// Undoes every write of the open part and closes it: the buffer holds what it held when
    /// the part began. `false` when no part was open (nothing is changed).
    pub fn undo_part(&mut self) -> bool {
        let Some(part) = self.part.take() else {
            return false;
        };
        for (keyspace, key, before) in part.replaced.into_iter().rev() {
            let Some(rows) = self.keyspaces.get_mut(&keyspace) else {
                continue;
            };
            match before {
                Some(value) => {
                    rows.insert(key, value);
                }
                None => {
                    rows.remove(&key);
                    if rows.is_empty() {
                        self.keyspaces.remove(&keyspace);
                    }
                }
            }
        }
        self.bytes = part.bytes;
        true
    }

    /// What the buffer says about `key`: `None` if it holds nothing for it, `Some(None)` for a
    /// buffered delete, `Some(Some(value))` for a buffered put.
    pub fn lookup(&self, keyspace: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.keyspaces
            .get(keyspace)
            .and_then(|rows| rows.get(key))
            .map(Option::as_deref)
    }

    /// The value of `key` read through the buffer; `below` reads what lies under it.
    pub fn get_through(
        &self,
        keyspace: &str,
        key: &[u8],
        below: impl FnOnce() -> Result<Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>> {
        match self.lookup(keyspace, key) {
            Some(value) => Ok(value.map(<[u8]>::to_vec)),
            None => below(),
        }
    }

    /// A scan read through the buffer. `below(limit)` scans what lies under it with the same
    /// bounds and direction, returning at most `limit` rows.
    pub fn range_through(
        &self,
        keyspace: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
        below: impl FnOnce(Option<usize>) -> Result<Vec<KeyValue>>,
    ) -> Result<Vec<KeyValue>> {
        let take = limit.unwrap_or(usize::MAX);
        if take == 0 || bounds_select_nothing(start, end) {
            return Ok(Vec::new());
        }
        let buffered: Vec<(&[u8], &Option<Vec<u8>>)> = match self.keyspaces.get(keyspace) {
            Some(rows) => {
                let iter = rows
                    .range::<[u8], _>((start, end))
                    .map(|(k, v)| (k.as_slice(), v));
                if reverse {
                    first_puts(iter.rev(), take)
                } else {
                    first_puts(iter, take)
                }
            }
            None => Vec::new(),
        };
        if buffered.is_empty() {
            return below(limit);
        }
        // Each buffered row hides at most one row below, so this many rows fill `limit`.
        let below_limit = limit.map(|l| l.saturating_add(buffered.len()));
        Ok(merge(below(below_limit)?, buffered, take, reverse))
    }

    /// The number of keys in `keyspace` read through the buffer, from the count below and a
    /// point check of each buffered key below.
    pub fn len_through(
        &self,
        keyspace: &str,
        below_len: u64,
        below_has: impl Fn(&[u8]) -> Result<bool>,
    ) -> Result<u64> {
        let mut len = i64::try_from(below_len).unwrap_or(i64::MAX);
        for (key, value) in self.keyspaces.get(keyspace).into_iter().flatten() {
            len += i64::from(value.is_some()) - i64::from(below_has(key)?);
        }
        Ok(u64::try_from(len).unwrap_or(0))
    }

    /// The bytes of keys and values buffered so far (for spilling a large transaction).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.keyspaces.is_empty()
    }

    /// Takes the buffered rows of one keyspace out (`None` if it has none).
    pub fn take(&mut self, keyspace: &str) -> Option<BufferedRows> {
        self.part = None;
        let rows = self.keyspaces.remove(keyspace)?;
        let bytes: usize = rows
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        self.bytes = self.bytes.saturating_sub(bytes);
        Some(rows)
    }

    /// Takes every buffered row out, per keyspace, leaving the buffer empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (String, BufferedRows)> + use<> {
        self.part = None;
        self.bytes = 0;
        std::mem::take(&mut self.keyspaces).into_iter()
    }
}

/// Merges rows from below and buffered rows (both in scan order; a buffered `None` deletes),
/// at most `take` rows.
/// The buffered rows a read of `take` rows can see, in read order: every row up to and
/// including the `take`-th put. Rows after it sort after `take` visible rows, so neither they
/// nor the rows below they hide can be among the first `take`; stopping there keeps a small
/// read (the last entry, one page) from copying a large transaction's whole buffer.
fn first_puts<'a>(
    rows: impl Iterator<Item = (&'a [u8], &'a Option<Vec<u8>>)>,
    take: usize,
) -> Vec<(&'a [u8], &'a Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut puts = 0;
    for row in rows {
        let is_put = row.1.is_some();
        out.push(row);
        if is_put {
            puts += 1;
            if puts >= take {
                break;
            }
        }
    }
    out
}

fn merge(
    below: Vec<KeyValue>,
    buffered: Vec<(&[u8], &Option<Vec<u8>>)>,
    take: usize,
    reverse: bool,
) -> Vec<KeyValue> {
    use std::cmp::Ordering;
    let mut out = Vec::with_capacity(take.min(below.len() + buffered.len()));
    let mut below = below.into_iter().peekable();
    let mut buffered = buffered.into_iter().peekable();
    while out.len() < take {
        let order = match (below.peek(), buffered.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((b, _)), Some((k, _))) => {
                let order = b.as_slice().cmp(k);
                if reverse { order.reverse() } else { order }
            }
        };
        if order == Ordering::Less {
            out.extend(below.next());
            continue;
        }
        if order == Ordering::Equal {
            below.next(); // replaced or deleted by the buffered row
        }
        if let Some((key, Some(value))) = buffered.next() {
            out.push((key.to_vec(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn below() -> Vec<KeyValue> {
        ["a", "b", "c", "d"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), b"old".to_vec()))
            .collect()
    }

    fn scan(buffer: &WriteBuffer, limit: Option<usize>, reverse: bool) -> Vec<String> {
        buffer
            .range_through(
                "t",
                Bound::Unbounded,
                Bound::Unbounded,
                limit,
                reverse,
                |l| {
                    let mut rows = below();
                    if reverse {
                        rows.reverse();
                    }
                    rows.truncate(l.unwrap_or(usize::MAX));
                    Ok(rows)
                },
            )
            .expect("scan")
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect()
    }

    #[test]
    fn puts_shadow_deletes_hide_and_scans_merge_in_both_directions() {
        let mut buffer = WriteBuffer::new();
        buffer.put("t", b"b", b"new");
        buffer.delete("t", b"c");
        buffer.put("t", b"e", b"new");
        buffer.put("other", b"a", b"x");
        assert_eq!(
            scan(&buffer, None, false),
            ["a=old", "b=new", "d=old", "e=new"]
        );
        assert_eq!(scan(&buffer, Some(2), true), ["e=new", "d=old"]);
        assert_eq!(scan(&buffer, Some(0), false), Vec::<String>::new());
        assert_eq!(buffer.lookup("t", b"c"), Some(None));
        assert_eq!(buffer.lookup("t", b"a"), None);
        let len = buffer
            .len_through("t", 4, |k| Ok(k < b"e".as_slice()))
            .expect("len");
        assert_eq!(len, 4, "b replaced, c deleted, e added");
    }

    #[test]
    fn drain_empties_the_buffer() {
        let mut buffer = WriteBuffer::new();
        buffer.put("t", b"k", b"v");
        assert_eq!(buffer.bytes(), 2);
        let drained: Vec<_> = buffer.drain().collect();
        assert_eq!(drained.len(), 1);
        assert!(buffer.is_empty() && buffer.bytes() == 0);
    }

    /// Every limit, both directions, against a model (a `BTreeMap` with the buffer applied),
    /// over buffers that mix puts and deletes before and after the rows below: a small read
    /// stops early in the buffer and must still answer exactly.
    #[test]
    fn limited_reads_through_any_buffer_match_the_merged_model() {
        let keys: Vec<Vec<u8>> = (b'a'..=b'h').map(|c| vec![c]).collect();
        // Each key is: absent (0), put (1) or deleted (2) in the buffer; below holds a..d.
        for pattern in 0..3u32.pow(keys.len() as u32) {
            let mut buffer = WriteBuffer::new();
            let mut model: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
                below().into_iter().collect();
            let mut p = pattern;
            for key in &keys {
                match p % 3 {
                    1 => {
                        buffer.put("t", key, b"new");
                        model.insert(key.clone(), b"new".to_vec());
                    }
                    2 => {
                        buffer.delete("t", key);
                        model.remove(key);
                    }
                    _ => {}
                }
                p /= 3;
            }
            for reverse in [false, true] {
                let mut expected: Vec<String> = model
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect();
                if reverse {
                    expected.reverse();
                }
                for limit in 1..=keys.len() + 1 {
                    let want: Vec<String> = expected.iter().take(limit).cloned().collect();
                    assert_eq!(
                        scan(&buffer, Some(limit), reverse),
                        want,
                        "pattern {pattern}, limit {limit}, reverse {reverse}"
                    );
                }
            }
        }
    }

    /// One write to a buffer: a put of `Some(value)` or a delete, in one of three keyspaces,
    /// of one of four keys.
    type Write = (u8, u8, Option<u8>);

    fn apply(buffer: &mut WriteBuffer, writes: &[Write]) {
        for &(keyspace, key, value) in writes {
            let keyspace = format!("k{}", keyspace % 3);
            let key = [key % 4];
            match value {
                Some(v) => buffer.put(&keyspace, &key, &[v]),
                None => buffer.delete(&keyspace, &key),
            }
        }
    }

    /// Everything the buffer holds, as `drain` would hand it over, and its byte count.
    fn contents(buffer: &WriteBuffer) -> (Vec<(String, BufferedRows)>, usize) {
        let rows = buffer
            .keyspaces
            .iter()
            .map(|(k, rows)| (k.clone(), rows.clone()))
            .collect();
        (rows, buffer.bytes())
    }

    proptest::proptest! {
        /// Undoing a part leaves the buffer exactly as it was when the part began (what a
        /// commit would hand over, and the byte count); keeping it leaves what the writes made.
        #[test]
        fn an_undone_part_leaves_the_buffer_as_it_was(
            before in proptest::collection::vec(proptest::prelude::any::<Write>(), 0..12),
            during in proptest::collection::vec(proptest::prelude::any::<Write>(), 0..12),
        ) {
            let mut buffer = WriteBuffer::new();
            apply(&mut buffer, &before);
            let at_begin = contents(&buffer);
            buffer.begin_part();
            apply(&mut buffer, &during);
            let mut kept = WriteBuffer::new();
            apply(&mut kept, &before);
            apply(&mut kept, &during);
            proptest::prop_assert_eq!(&contents(&buffer).0, &contents(&kept).0);
            proptest::prop_assert!(buffer.undo_part());
            proptest::prop_assert_eq!(contents(&buffer), at_begin);
            proptest::prop_assert!(!buffer.part_open() && !buffer.undo_part());

            buffer.begin_part();
            apply(&mut buffer, &during);
            buffer.keep_part();
            proptest::prop_assert!(!buffer.undo_part(), "a kept part cannot be undone");
            proptest::prop_assert_eq!(contents(&buffer).0, contents(&kept).0);
        }
    }

    #[test]
    fn taking_rows_out_ends_the_part() {
        let mut buffer = WriteBuffer::new();
        buffer.begin_part();
        buffer.put("t", b"a", b"1");
        let _ = buffer.take("t");
        assert!(!buffer.part_open() && !buffer.undo_part());
        buffer.begin_part();
        buffer.put("t", b"a", b"1");
        let _ = buffer.drain().count();
        assert!(!buffer.part_open() && !buffer.undo_part());
    }
}
