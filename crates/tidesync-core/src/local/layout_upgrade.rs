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

use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;

use super::layout;
use super::{LocalDb, read_u64};

/// The storage layout this build writes.
pub const LAYOUT_VERSION: u64 = 3;

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
        if from > 1 || upgrade.rows_removed > 0 {
            tracing::info!(
                from,
                to = LAYOUT_VERSION,
                rows_removed = upgrade.rows_removed,
                "storage layout upgraded"
            );
        }
        Ok(Some(upgrade))
    }
}
