//! The store conformance suite on `MemoryStore`.

use std::sync::Arc;

use tidesync_core::Store;
use tidesync_store_memory::MemoryStore;
use tidesync_testkit::store_suite::{self, FnFactory};

/// A new, empty store for every `open()`.
fn fresh() -> FnFactory<impl Fn() -> tidesync_core::Result<Arc<dyn Store>>> {
    FnFactory::fresh(|| Ok(Arc::new(MemoryStore::new()) as Arc<dyn Store>))
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                store_suite::$name(&fresh());
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

/// The whole suite on one store shared by clones: "reopening" hands out another clone, so the
/// data must carry over and the reopen check runs too.
#[test]
fn run_all_on_clones_of_one_store() {
    let store = MemoryStore::new();
    store_suite::run_all(&FnFactory::durable(move || {
        Ok(Arc::new(store.clone()) as Arc<dyn Store>)
    }));
}
