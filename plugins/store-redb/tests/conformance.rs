//! The store conformance suite on `RedbStore`, each check on a file of its own, plus the whole
//! suite on one shared file.

use std::sync::Arc;

use tempfile::TempDir;
use tidesync_core::{Result, Store};
use tidesync_store_redb::{RedbOptions, RedbStore};
use tidesync_testkit::store_suite::{self, StoreFactory};

/// Reopens the same file on every `open()`; the suite drops the previous handle first.
struct RedbFile {
    dir: TempDir,
}

impl RedbFile {
    fn new() -> Self {
        RedbFile {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl StoreFactory for RedbFile {
    fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(RedbStore::open(
            self.dir.path().join("suite.redb"),
        )?))
    }

    fn reopens_durably(&self) -> bool {
        true
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                store_suite::$name(&RedbFile::new());
            }
        )*

        /// Every check of the suite has a test above.
        #[test]
        fn every_check_is_listed() {
            let listed: &[&str] = &[$(stringify!($name)),*];
            let suite: Vec<&str> = store_suite::CHECKS.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, suite.as_slice());
        }
    };
}

checks!(
    basics,
    commit_is_atomic,
    drop_rolls_back,
    error_midway_leaves_nothing,
    snapshot_isolation,
    write_txn_reads_its_own_writes,
    put_rows_is_puts_in_order,
    parts_are_undone_alone,
    range_scans,
    prefix_scans,
    len_counts_keys,
    keyspaces_are_independent,
    unknown_keyspace_reads_empty,
    large_values,
    many_keys,
    durability_across_reopen,
    concurrent_writers_are_serialised,
);

/// Like [`RedbFile`], opened with `multi_process(true)` (redb's `MultiWriter` mode).
struct SharedRedbFile {
    dir: TempDir,
}

impl StoreFactory for SharedRedbFile {
    fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(
            RedbOptions::new()
                .multi_process(true)
                .open(self.dir.path().join("suite.redb"))?,
        ))
    }

    fn reopens_durably(&self) -> bool {
        true
    }
}

/// The whole suite in multi-process mode, each check on a file of its own.
#[test]
fn every_check_in_multi_process_mode() {
    for (name, check) in store_suite::CHECKS {
        eprintln!("multi-process: {name}");
        check(&SharedRedbFile {
            dir: tempfile::tempdir().expect("a temporary directory"),
        });
    }
}
