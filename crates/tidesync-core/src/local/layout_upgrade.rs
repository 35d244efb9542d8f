//! Opening a store written by an older storage layout: the upgrade steps, each resumable.
//!
//! The layout version lives in the meta keyspace ([`layout::META_LAYOUT`]); a store without
//! it was written by layout v1. Every step commits in batches and only the last commit
//! records the new version, so a crash in the middle leaves a store that the next open
//! upgrades again from where it stopped (every step is idempotent). A store written by a
//! newer layout than this build knows is refused, never guessed at.
//!
//! | from | what changes |
//! |------|--------------|
//! | v1 | The per-table queue index (`o/by_table`) and the per-table queue depths (`m/depth/…`) are dropped: layout v2 lists a table's queue from the per-record index, whose keys start with the table, and counts depths when asked instead of on every local write. The sequence counter and the clock stay as floors (v2 writes them on the sync path only). |
//! | v2 | Nothing is rewritten. v3 lets a queued entry point at its record row instead of carrying a copy of the record (`entry_codec`); entries that carry their record are read as before. The version is raised so that an older build, which cannot read such an entry, refuses the store instead of reporting corrupt entries. |
//! | v3 | The per-record queue index (`o/by_record`) moves into the record rows: each record with queued entries gets a header listing them (`record_row`), a record deleted locally a `d/<table>` row. Records with nothing queued are not rewritten. In chunks of [`QUEUE_ROWS_PER_COMMIT`] index rows, each chunk one transaction that writes the headers and removes its index rows, so a crash resumes after the last chunk committed. A store whose record migration was cut short in its outbox phase is refused: that phase's position is a place in the v3 index (finish it with the build that started it). |

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{Key, unescape};
use crate::store::Store;

use super::layout;
use super::{LocalDb, read_u64};

/// The storage layout this build writes.
pub const LAYOUT_VERSION: u64 = 4;

/// Index rows of layout v3's `o/by_record` moved per transaction by the v3 → v4 step.
pub const QUEUE_ROWS_PER_COMMIT: usize = 1000;

/// What opening a store did to its layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayoutUpgrade {
    /// The layout the store was written by.
    pub from: u64,
    /// The layout it has now ([`LAYOUT_VERSION`]).
    pub to: u64,
    /// Rows the upgrade removed.
    pub rows_removed: u64,
}

impl LocalDb {
    /// Brings `store` to this build's storage layout ([`LAYOUT_VERSION`]); call once at
    /// start-up, before anything reads it. Returns `None` when it already had it. Refuses a
    /// store written by a newer layout, with an error that says so.
    pub fn upgrade_layout(&self, store: &dyn Store) -> Result<Option<LayoutUpgrade>> {
        let from = match store.read()?.get(layout::META, layout::META_LAYOUT)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        if from == LAYOUT_VERSION {
            return Ok(None);
        }
        if from > LAYOUT_VERSION {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "this store was written by a newer tidesync (storage layout v{from}); this \
                     build reads layouts up to v{LAYOUT_VERSION}: open it with the version \
                     that wrote it, or a newer one"
                ),
            ));
        }
        let mut upgrade = LayoutUpgrade {
            from,
            to: LAYOUT_VERSION,
            rows_removed: 0,
        };
        if from < 2 {
            upgrade.rows_removed +=
                super::schema_sync::clear_keyspace(store, layout::LEGACY_OUTBOX_BY_TABLE)?;
        }
        if from < 4 {
            if let Some(table) = super::migrate::outbox_phase_cut_short(&*store.read()?)? {
                return Err(Error::new(
                    ErrorKind::Storage,
                    format!(
                        "this store is in the middle of a record migration of table `{table}` \
                         (its outbox phase), begun by a tidesync that writes storage layout \
                         v{from}; this build writes v{LAYOUT_VERSION} and cannot resume that \
                         phase: open the store once with the version that began the migration, \
                         then with this one"
                    ),
                )
                .table(table));
            }
            upgrade.rows_removed += self.move_queues_into_rows(store)?;
        }
        let mut txn = store.write()?;
        if from < 2 {
            let depths = txn.scan_prefix(layout::META, layout::LEGACY_META_DEPTH_PREFIX, None)?;
            for (key, _) in &depths {
                txn.discard(layout::META, key)?;
            }
            upgrade.rows_removed += depths.len() as u64;
            // A v1 database that never queued an entry has no counter yet; v2 keeps its
            // state indexes complete from the start.
            if txn.get(layout::META, layout::META_NEXT_SEQ)?.is_none() {
                txn.put(layout::META, layout::META_STATE_INDEXES, &[1])?;
            }
        }
        txn.put(
            layout::META,
            layout::META_LAYOUT,
            &LAYOUT_VERSION.to_be_bytes(),
        )?;
        txn.commit()?;
        if upgrade.rows_removed > 0 || from > 1 {
            tracing::info!(
                from,
                to = LAYOUT_VERSION,
                rows_removed = upgrade.rows_removed,
                "storage layout upgraded"
            );
        }
        Ok(Some(upgrade))
    }

    /// The v3 → v4 step: every row of `o/by_record` (`table ‖ key ‖ seq`) becomes a number in
    /// its record's queue header, a chunk of rows per transaction; returns the rows moved.
    fn move_queues_into_rows(&self, store: &dyn Store) -> Result<u64> {
        let mut moved = 0u64;
        loop {
            let rows = store.read()?.range(
                layout::LEGACY_OUTBOX_BY_RECORD,
                Bound::Unbounded,
                Bound::Unbounded,
                Some(QUEUE_ROWS_PER_COMMIT),
                false,
            )?;
            if rows.is_empty() {
                return Ok(moved);
            }
            let mut txn = store.write()?;
            let mut queues: BTreeMap<(String, Vec<u8>), Vec<u64>> = BTreeMap::new();
            for (row, _) in &rows {
                let (table, key_bytes, seq) = parse_queue_row(row)?;
                queues.entry((table, key_bytes)).or_default().push(seq);
            }
            for ((table, key_bytes), seqs) in queues {
                let (key, _) = Key::decode(&key_bytes).map_err(|e| e.table(table.clone()))?;
                // Numbers listed by an earlier chunk stay; an index row whose entry is gone is
                // dropped with it.
                let mut listed = self.outbox().queued_seqs(&*txn, &table, &key)?;
                for seq in seqs {
                    if txn.get(layout::OUTBOX, &layout::seq_bytes(seq))?.is_some() {
                        listed.push(seq);
                    }
                }
                listed.sort_unstable();
                listed.dedup();
                self.outbox().set_listed(&mut *txn, &table, &key, &listed)?;
            }
            for (row, _) in &rows {
                txn.discard(layout::LEGACY_OUTBOX_BY_RECORD, row)?;
            }
            txn.commit()?;
            moved += rows.len() as u64;
            tracing::info!(
                moved,
                "storage layout v4: queue index rows moved into record rows"
            );
        }
    }
}

/// `(table, encoded key, seq)` of a layout v3 `o/by_record` row.
fn parse_queue_row(row: &[u8]) -> Result<(String, Vec<u8>, u64)> {
    let corrupt = || Error::internal("corrupt layout v3 queue index row");
    let (table, rest) = unescape(row).ok_or_else(corrupt)?;
    let table = String::from_utf8(table).map_err(|_| corrupt())?;
    let (_, after_key) = Key::decode(rest).map_err(|e| e.table(table.clone()))?;
    let key_len = rest.len() - after_key.len();
    if after_key.len() != 8 {
        return Err(corrupt().table(table));
    }
    let seq = layout::seq_from_suffix(after_key)?;
    Ok((table, rest[..key_len].to_vec(), seq))
}
