//! The store conformance suite: what every [`Store`] backend must do, checked on a real instance.
//!
//! A backend crate runs it from an integration test (`tests/conformance.rs`). An in-memory
//! backend hands out a new store per `open()` with [`FnFactory::fresh`]; a persistent backend
//! implements [`StoreFactory`] so that `open()` reopens the same file, and says so with
//! [`StoreFactory::reopens_durably`]: the suite then also checks that committed data, and only
//! committed data, survives closing and reopening.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use tidesync_core::{Result, Store};
//! use tidesync_testkit::store_suite::{self, FnFactory, StoreFactory};
//! # struct MyStore;
//! # impl MyStore {
//! #     fn new() -> Self { MyStore }
//! #     fn open(_: &Path) -> Result<Self> { Ok(MyStore) }
//! # }
//! # impl Store for MyStore {
//! #     fn backend(&self) -> &'static str { "doc" }
//! #     fn read(&self) -> Result<Box<dyn tidesync_core::ReadTxn>> {
//! #         Err(tidesync_core::Error::internal("doc"))
//! #     }
//! #     fn write(&self) -> Result<Box<dyn tidesync_core::WriteTxn>> {
//! #         Err(tidesync_core::Error::internal("doc"))
//! #     }
//! # }
//!
//! // In memory: a new, empty store for every `open()`.
//! store_suite::run_all(&FnFactory::fresh(|| Ok(Arc::new(MyStore::new()) as Arc<dyn Store>)));
//!
//! // On disk: every `open()` reopens the same file (the suite drops the previous handle first).
//! struct OnDisk {
//!     dir: tempfile::TempDir,
//! }
//! impl StoreFactory for OnDisk {
//!     fn open(&self) -> Result<Arc<dyn Store>> {
//!         Ok(Arc::new(MyStore::open(&self.dir.path().join("suite.db"))?))
//!     }
//!     fn reopens_durably(&self) -> bool {
//!         true
//!     }
//! }
//! store_suite::run_all(&OnDisk { dir: tempfile::tempdir().unwrap() });
//! ```
//!
//! Every check is a `pub fn` taking the factory, so a backend can also run them one by one (one
//! `#[test]` each gives better reports). A check panics with a message naming the backend, the
//! check and what was wrong; store errors are reported the same way.
//!
//! The checks never assume the store is empty: each one works in keyspaces of its own, named
//! `suite.<check>.<nonce>.<name>`, so the checks can share one database file and can run again
//! on a file that earlier runs left data in. They open the store with `open()` and drop it (and
//! every transaction) before returning, so a persistent backend may refuse a second live handle.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidesync_core::{Error, KeyValue, ReadTxn, Result, Store, WriteTxn};

/// Opens the store under test.
pub trait StoreFactory {
    /// Opens the store. A persistent backend opens the same storage (file, directory …) every
    /// time; the suite drops the previous handle and all its transactions first.
    fn open(&self) -> Result<Arc<dyn Store>>;

    /// Whether data committed through one handle is read back by the next `open()` after that
    /// handle was dropped. Only then does [`durability_across_reopen`] check anything.
    fn reopens_durably(&self) -> bool;
}

/// A [`StoreFactory`] from a closure.
pub struct FnFactory<F> {
    open: F,
    durable: bool,
}

impl<F> FnFactory<F>
where
    F: Fn() -> Result<Arc<dyn Store>>,
{
    /// The closure opens a store whose data does not survive reopening (e.g. a new in-memory
    /// store each time).
    pub fn fresh(open: F) -> Self {
        FnFactory {
            open,
            durable: false,
        }
    }

    /// The closure reopens the same storage each time, and committed data survives that.
    pub fn durable(open: F) -> Self {
        FnFactory {
            open,
            durable: true,
        }
    }
}

impl<F> StoreFactory for FnFactory<F>
where
    F: Fn() -> Result<Arc<dyn Store>>,
{
    fn open(&self) -> Result<Arc<dyn Store>> {
        (self.open)()
    }

    fn reopens_durably(&self) -> bool {
        self.durable
    }
}

/// One check of the suite.
pub type CheckFn = fn(&dyn StoreFactory);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, CheckFn)] = &[
    ("basics", basics),
    ("commit_is_atomic", commit_is_atomic),
    ("drop_rolls_back", drop_rolls_back),
    ("error_midway_leaves_nothing", error_midway_leaves_nothing),
    ("snapshot_isolation", snapshot_isolation),
    (
        "write_txn_reads_its_own_writes",
        write_txn_reads_its_own_writes,
    ),
    ("put_rows_is_puts_in_order", put_rows_is_puts_in_order),
    ("parts_are_undone_alone", parts_are_undone_alone),
    ("range_scans", range_scans),
    ("prefix_scans", prefix_scans),
    ("len_counts_keys", len_counts_keys),
    ("keyspaces_are_independent", keyspaces_are_independent),
    ("unknown_keyspace_reads_empty", unknown_keyspace_reads_empty),
    ("large_values", large_values),
    ("many_keys", many_keys),
    ("durability_across_reopen", durability_across_reopen),
    (
        "concurrent_writers_are_serialised",
        concurrent_writers_are_serialised,
    ),
];

/// Runs every check in [`CHECKS`]; panics at the first violation.
pub fn run_all(factory: &dyn StoreFactory) {
    for (_, check) in CHECKS {
        check(factory);
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// `put`, `get`, `delete` and their return values, within a transaction and after commit.
pub fn basics(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "basics");
    let ks = c.ks("kv");
    c.eq(
        c.store.backend().is_empty(),
        false,
        "backend() is a non-empty name",
    );

    let mut w = c.write();
    c.ok(w.put(&ks, b"alpha", b"1"), "put");
    c.ok(w.put(&ks, b"beta", b"2"), "put");
    c.ok(w.put(&ks, b"gamma", b""), "put of an empty value");
    c.eq(
        c.get(&*w, &ks, b"alpha"),
        Some(b"1".to_vec()),
        "get in the writing txn",
    );
    c.ok(w.put(&ks, b"alpha", b"one"), "put over an existing key");
    c.eq(
        c.get(&*w, &ks, b"alpha"),
        Some(b"one".to_vec()),
        "get after overwrite",
    );
    c.commit(w);

    let r = c.read();
    c.eq(
        c.get(&*r, &ks, b"alpha"),
        Some(b"one".to_vec()),
        "get after commit",
    );
    c.eq(
        c.get(&*r, &ks, b"beta"),
        Some(b"2".to_vec()),
        "get after commit",
    );
    c.eq(
        c.get(&*r, &ks, b"gamma"),
        Some(Vec::new()),
        "an empty value is kept, not absent",
    );
    c.eq(
        c.get(&*r, &ks, b"delta"),
        None,
        "get of a key never written",
    );
    drop(r);

    let mut w = c.write();
    c.eq(
        c.ok(w.delete(&ks, b"beta"), "delete"),
        true,
        "delete of an existing key returns true",
    );
    c.eq(
        c.ok(w.delete(&ks, b"beta"), "delete"),
        false,
        "second delete returns false",
    );
    c.eq(
        c.ok(w.delete(&ks, b"delta"), "delete"),
        false,
        "delete of a missing key returns false",
    );
    c.eq(
        c.get(&*w, &ks, b"beta"),
        None,
        "get after delete in the same txn",
    );
    c.ok(w.put(&ks, b"beta", b"again"), "put after delete");
    c.eq(
        c.get(&*w, &ks, b"beta"),
        Some(b"again".to_vec()),
        "get after delete then put",
    );
    c.eq(
        c.ok(w.delete(&ks, b"gamma"), "delete"),
        true,
        "delete of an empty value returns true",
    );
    c.commit(w);

    let r = c.read();
    c.eq(
        c.all(&*r, &ks),
        pairs(&[(b"alpha", b"one"), (b"beta", b"again")]),
        "all pairs after the second commit",
    );
}

/// A commit's writes become visible together: a concurrent reader sees all of them or none.
pub fn commit_is_atomic(factory: &dyn StoreFactory) {
    const KEYS: u32 = 40;
    const GENERATIONS: u64 = 50;
    let c = Check::open(factory, "commit_is_atomic");
    let (a, b) = (c.ks("a"), c.ks("b"));
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            let mut last_generation = 0u64;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let r = c.read();
                let in_a = c.all(&*r, &a);
                let in_b = c.all(&*r, &b);
                let len_a = c.ok(r.len(&a), "len");
                // Generation g has written keys 0..KEYS to `a` and one key per generation to `b`.
                if !in_a.is_empty() {
                    c.eq(
                        in_a.len() as u32,
                        KEYS,
                        "keys of a commit seen by a concurrent reader",
                    );
                }
                let values: std::collections::BTreeSet<&[u8]> =
                    in_a.iter().map(|(_, v)| v.as_slice()).collect();
                c.eq(
                    values.len() <= 1,
                    true,
                    "all values of one commit come from one commit",
                );
                let seen = values.first().map_or(0, |v| decode_u64(&c, v));
                c.eq(
                    in_b.len() as u64,
                    seen,
                    "keyspace `b` is from the same commit as `a`",
                );
                c.eq(
                    len_a == 0 || len_a == u64::from(KEYS),
                    true,
                    "len is all-or-none",
                );
                c.eq(
                    seen >= last_generation,
                    true,
                    "generations never go backwards",
                );
                last_generation = seen;
                reads += 1;
            }
        });
        for g in 1..=GENERATIONS {
            let mut w = c.write();
            for k in 0..KEYS {
                c.ok(w.put(&a, &k.to_be_bytes(), &g.to_be_bytes()), "put");
            }
            c.ok(w.put(&b, &g.to_be_bytes(), b""), "put");
            c.commit(w);
        }
        done.store(true, Ordering::Release);
        if let Err(panic) = reader.join() {
            std::panic::resume_unwind(panic);
        }
    });

    let r = c.read();
    let values: Vec<u64> = c
        .all(&*r, &a)
        .iter()
        .map(|(_, v)| decode_u64(&c, v))
        .collect();
    c.eq(
        values,
        vec![GENERATIONS; KEYS as usize],
        "the last commit wins everywhere",
    );
    c.eq(
        c.ok(r.len(&b), "len"),
        GENERATIONS,
        "every commit reached keyspace `b`",
    );
}

/// Dropping a write transaction without commit discards every write (puts, overwrites and
/// deletes, in several keyspaces), and the next write transaction can start.
pub fn drop_rolls_back(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "drop_rolls_back");
    let (a, b) = (c.ks("a"), c.ks("b"));
    let before = pairs(&[(b"k1", b"v1"), (b"k2", b"v2")]);
    c.fill(&a, &before);

    let mut w = c.write();
    c.ok(w.put(&a, b"k1", b"changed"), "put");
    c.ok(w.delete(&a, b"k2"), "delete");
    c.ok(w.put(&a, b"k3", b"new"), "put");
    c.ok(w.put(&b, b"k", b"new keyspace"), "put");
    drop(w);

    let r = c.read();
    c.eq(c.all(&*r, &a), before.clone(), "pairs after a dropped txn");
    c.eq(
        c.all(&*r, &b),
        vec![],
        "a keyspace written only by a dropped txn",
    );
    drop(r);

    // The dropped transaction must have released the writer.
    let w = c.write();
    c.eq(
        c.all(&*w, &a),
        before,
        "the next write txn starts from the committed data",
    );
    drop(w);
}

/// A write transaction abandoned because a later step failed leaves nothing behind.
pub fn error_midway_leaves_nothing(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "error_midway_leaves_nothing");
    let (a, b) = (c.ks("a"), c.ks("b"));
    let before = pairs(&[(b"keep", b"1"), (b"other", b"2")]);
    c.fill(&a, &before);

    // The caller's shape: writes, then a step that fails, and `?` drops the transaction.
    let store = Arc::clone(&c.store);
    let attempt = || -> Result<()> {
        let mut w = store.write()?;
        w.put(&a, b"keep", b"overwritten")?;
        w.put(&a, b"added", b"3")?;
        w.delete(&a, b"other")?;
        w.put(&b, b"x", b"y")?;
        validate_step()?;
        w.commit()
    };
    let result = attempt();
    c.eq(result.is_err(), true, "the simulated step failed");

    let r = c.read();
    c.eq(c.all(&*r, &a), before, "pairs after the failed transaction");
    c.eq(
        c.all(&*r, &b),
        vec![],
        "the other keyspace after the failed transaction",
    );
    drop(r);

    let mut w = c.write();
    c.ok(w.put(&a, b"after", b"ok"), "put after the failure");
    c.commit(w);
    c.eq(
        c.get(&*c.read(), &a, b"after"),
        Some(b"ok".to_vec()),
        "a later txn commits",
    );
}

/// Read transactions are snapshots: one opened before a commit sees none of it, however long it
/// stays open; one opened after sees all of it.
pub fn snapshot_isolation(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "snapshot_isolation");
    let (a, b) = (c.ks("a"), c.ks("b"));
    let old = pairs(&[(b"k1", b"old"), (b"k2", b"old"), (b"k3", b"old")]);
    c.fill(&a, &old);

    let before_writer = c.read();
    let mut w = c.write();
    c.ok(w.put(&a, b"k1", b"new"), "put");
    c.ok(w.delete(&a, b"k2"), "delete");
    c.ok(w.put(&a, b"k4", b"new"), "put");
    c.ok(w.put(&b, b"k", b"new"), "put");
    let during_writer = c.read();

    let snapshot_is_old = |r: &dyn ReadTxn, when: &str| {
        c.eq(c.all(r, &a), old.clone(), &format!("{when}: pairs"));
        c.eq(
            c.get(r, &a, b"k2"),
            Some(b"old".to_vec()),
            &format!("{when}: get"),
        );
        c.eq(
            c.get(r, &a, b"k4"),
            None,
            &format!("{when}: get of a key added later"),
        );
        c.eq(c.ok(r.len(&a), "len"), 3, &format!("{when}: len"));
        c.eq(
            c.all(r, &b),
            vec![],
            &format!("{when}: keyspace created later"),
        );
        c.eq(
            c.ok(r.scan_prefix(&a, b"k", None), "scan_prefix").len(),
            3,
            &format!("{when}: scan_prefix"),
        );
    };
    snapshot_is_old(
        &*before_writer,
        "reader opened before the write txn, txn open",
    );
    snapshot_is_old(
        &*during_writer,
        "reader opened during the write txn, txn open",
    );
    c.commit(w);
    snapshot_is_old(
        &*before_writer,
        "reader opened before the write txn, after commit",
    );
    snapshot_is_old(
        &*during_writer,
        "reader opened during the write txn, after commit",
    );

    // A later commit must not leak into old snapshots either.
    let after_first = c.read();
    let mut w = c.write();
    c.ok(w.put(&a, b"k5", b"newer"), "put");
    c.commit(w);
    snapshot_is_old(&*before_writer, "reader opened before two commits");

    let new = pairs(&[(b"k1", b"new"), (b"k3", b"old"), (b"k4", b"new")]);
    c.eq(
        c.all(&*after_first, &a),
        new.clone(),
        "reader opened after the first commit",
    );
    c.eq(
        c.all(&*after_first, &b),
        pairs(&[(b"k", b"new")]),
        "reader after commit, keyspace b",
    );
    let mut newest = new;
    newest.push((b"k5".to_vec(), b"newer".to_vec()));
    let r = c.read();
    c.eq(
        c.all(&*r, &a),
        newest,
        "reader opened after the second commit",
    );
    c.eq(c.ok(r.len(&a), "len"), 4, "len after the second commit");
}

/// `put_rows` stores what a `put` of each row in order would: many rows (which a backend may
/// insert directly) and a few (which it may buffer), after and before buffered puts and
/// deletes of the same keys, a later row of a key winning; reads inside the transaction and
/// after its commit agree with a model.
pub fn put_rows_is_puts_in_order(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "put_rows_is_puts_in_order");
    let ks = c.ks("rows");
    let other = c.ks("other");
    let mut model = model_of(&sample_keys());
    c.fill(&ks, &model.clone().into_iter().collect::<Vec<_>>());
    let mut w = c.write();
    // Buffered first: a put, a delete of a committed key, a put later overwritten by a row.
    for (key, value) in [
        (&b"aa"[..], Some(&b"buffered"[..])),
        (b"ab", None),
        (b"zz", Some(b"old")),
    ] {
        match value {
            Some(value) => {
                c.ok(w.put(&ks, key, value), "put");
                model.insert(key.to_vec(), value.to_vec());
            }
            None => {
                c.ok(w.discard(&ks, key), "discard");
                model.remove(key);
            }
        }
    }
    c.ok(w.put(&other, b"x", b"untouched"), "put");
    // Many rows, out of key order, one key twice (the later wins), one overwriting "zz".
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = (0..150u32)
        .rev()
        .map(|i| {
            (
                format!("row{i:03}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    rows.push((b"row007".to_vec(), b"later".to_vec()));
    rows.push((b"zz".to_vec(), b"from rows".to_vec()));
    for (key, value) in &rows {
        model.insert(key.clone(), value.clone());
    }
    c.ok(w.put_rows(&ks, rows), "put_rows (many)");
    let probes: Vec<Vec<u8>> = probe_keys()
        .into_iter()
        .chain([b"row007".to_vec(), b"zz".to_vec(), b"ab".to_vec()])
        .collect();
    c.reads_like(&*w, &ks, &model, &probes, "after many rows");
    // Then single writes of the same keyspace, and a few rows.
    c.ok(w.put(&ks, b"row001", b"single after"), "put");
    model.insert(b"row001".to_vec(), b"single after".to_vec());
    c.ok(w.discard(&ks, b"row002"), "discard");
    model.remove(&b"row002"[..]);
    let few = vec![
        (b"ab".to_vec(), b"back".to_vec()),
        (b"row003".to_vec(), b"few".to_vec()),
    ];
    for (key, value) in &few {
        model.insert(key.clone(), value.clone());
    }
    c.ok(w.put_rows(&ks, few), "put_rows (few)");
    c.reads_like(&*w, &ks, &model, &probes, "after a few rows");
    c.commit(w);
    c.reads_like(&*c.read(), &ks, &model, &probes, "after the commit");
    c.eq(
        c.get(&*c.read(), &other, b"x"),
        Some(b"untouched".to_vec()),
        "the other keyspace",
    );
}

/// A store that offers parts of a transaction (`WriteTxn::begin_part` returns `true`) undoes
/// one alone: its puts, overwrites and deletes, in two keyspaces, leave reads as they were
/// before it, writes before and after it stay, a kept part stays, and the commit holds exactly
/// that. A store that does not offer them passes (the engine stages such parts itself).
pub fn parts_are_undone_alone(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "parts_are_undone_alone");
    let ks = c.ks("parts");
    let other = c.ks("parts_other");
    let mut model = model_of(&sample_keys());
    c.fill(&ks, &model.clone().into_iter().collect::<Vec<_>>());
    let probes: Vec<Vec<u8>> = probe_keys()
        .into_iter()
        .chain([b"new".to_vec(), b"ab".to_vec()])
        .collect();
    let mut w = c.write();
    c.ok(w.put(&ks, b"before", b"kept"), "put before the part");
    model.insert(b"before".to_vec(), b"kept".to_vec());
    if !w.begin_part() {
        return;
    }
    c.ok(w.put(&ks, b"new", b"undone"), "put in the part");
    c.ok(
        w.put(&ks, b"before", b"overwritten, undone"),
        "overwrite in the part",
    );
    c.ok(
        w.put(&ks, b"ab", b"overwritten, undone"),
        "overwrite in the part",
    );
    c.ok(w.discard(&ks, b"aa"), "discard in the part");
    c.ok(w.put(&other, b"x", b"undone"), "put in another keyspace");
    c.ok(w.undo_part(), "undo_part");
    c.reads_like(&*w, &ks, &model, &probes, "after the part was undone");
    c.eq(
        c.get(&*w, &other, b"x"),
        None,
        "the other keyspace after the undo",
    );
    if !w.begin_part() {
        c.fail("begin_part said yes, then no");
    }
    c.ok(w.put(&ks, b"new", b"kept part"), "put in a kept part");
    model.insert(b"new".to_vec(), b"kept part".to_vec());
    c.ok(w.keep_part(), "keep_part");
    c.ok(w.put(&ks, b"after", b"kept"), "put after the part");
    model.insert(b"after".to_vec(), b"kept".to_vec());
    c.reads_like(&*w, &ks, &model, &probes, "after the kept part");
    c.commit(w);
    c.reads_like(&*c.read(), &ks, &model, &probes, "after the commit");
    c.eq(
        c.get(&*c.read(), &other, b"x"),
        None,
        "the other keyspace after the commit",
    );
}

/// A write transaction sees its own puts, overwrites and deletes through `get`, `range` (every
/// bound kind, limit, reverse), `scan_prefix` and `len`, merged with the committed data; readers
/// see none of it until commit, and then all of it.
pub fn write_txn_reads_its_own_writes(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "write_txn_reads_its_own_writes");
    let ks = c.ks("kv");
    let mut model = model_of(&sample_keys());
    c.fill(&ks, &model.clone().into_iter().collect::<Vec<_>>());
    let committed = model.clone();

    // (key, Some(value)) is a put, (key, None) a delete.
    let ops: Vec<(&[u8], Option<&[u8]>)> = vec![
        (b"ab", Some(b"overwritten")),
        (b"aa", Some(b"added between")),
        (b"", Some(b"overwritten empty key")),
        (&[0xFF, 0xFF, 0xFF, 0xFF], Some(b"added last")),
        (&[0x00, 0x01], Some(b"added")),
        (b"temp", Some(b"put then deleted")),
        (b"b", Some(b"put then deleted then put")),
        (b"b", None),
        (b"abc", None),
        (&[0xFF], None),
        (b"temp", None),
        (b"temp", None),
        (b"never there", None),
        (&[0x7F], None),
        (b"b", Some(b"deleted then put")),
    ];
    let mut w = c.write();
    for (i, (key, value)) in ops.into_iter().enumerate() {
        match value {
            Some(value) => {
                c.ok(w.put(&ks, key, value), "put");
                model.insert(key.to_vec(), value.to_vec());
            }
            // Every other delete is a `discard` (no answer): the reads below must agree.
            None if i % 2 == 0 => {
                c.ok(w.discard(&ks, key), "discard");
                model.remove(key);
            }
            None => {
                let existed = c.ok(w.delete(&ks, key), "delete");
                let want = model.remove(key).is_some();
                c.eq(existed, want, &format!("delete({key:?}) return value"));
            }
        }
    }

    c.reads_like(
        &*w,
        &ks,
        &model,
        &probe_keys(),
        "write txn over committed data",
    );
    let r = c.read();
    c.reads_like(
        &*r,
        &ks,
        &committed,
        &probe_keys(),
        "reader while the write txn is open",
    );
    c.commit(w);
    c.reads_like(
        &*r,
        &ks,
        &committed,
        &probe_keys(),
        "reader opened before the commit",
    );
    c.reads_like(
        &*c.read(),
        &ks,
        &model,
        &probe_keys(),
        "reader opened after the commit",
    );
}

/// Ordered range scans on committed data: every combination of included, excluded and
/// unbounded ends, limits, reverse order, empty and inverted bounds; keys compare as unsigned
/// bytes, shorter first.
pub fn range_scans(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "range_scans");
    let ks = c.ks("kv");
    let keys = sample_keys();
    let model = model_of(&keys);
    c.fill(&ks, &model.clone().into_iter().collect::<Vec<_>>());
    let r = c.read();

    // A few cases spelled out, so the suite does not only trust its own model.
    let range = |start: Bound<&[u8]>, end: Bound<&[u8]>, limit: Option<usize>, rev: bool| {
        let got = c.ok(r.range(&ks, start, end, limit, rev), "range");
        got.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    use Bound::Unbounded;
    fn incl(key: &[u8]) -> Bound<&[u8]> {
        Bound::Included(key)
    }
    fn excl(key: &[u8]) -> Bound<&[u8]> {
        Bound::Excluded(key)
    }
    c.eq(
        range(incl(b"ab"), excl(b"b"), None, false),
        vec![b"ab".to_vec(), b"abc".to_vec()],
        "[ab, b)",
    );
    c.eq(
        range(excl(b"ab"), incl(b"b"), None, false),
        vec![b"abc".to_vec(), b"b".to_vec()],
        "(ab, b]",
    );
    c.eq(
        range(incl(&[0x7F]), Unbounded, Some(2), false),
        vec![vec![0x7F], vec![0x80]],
        "0x80 sorts after 0x7F (bytes are unsigned)",
    );
    c.eq(
        range(Unbounded, Unbounded, Some(3), true),
        vec![vec![0xFF, 0xFF, 0xFF], vec![0xFF, 0xFF], vec![0xFF, 0x00]],
        "the last three, descending",
    );
    c.eq(
        range(Unbounded, excl(b"a"), None, false),
        vec![vec![], vec![0x00], vec![0x00, 0x00]],
        "a shorter key sorts before its extensions; the empty key first",
    );
    c.eq(
        range(Unbounded, incl(b""), None, true),
        vec![vec![]],
        "up to the empty key",
    );
    c.eq(
        range(incl(b"b"), incl(b"a"), None, false),
        vec![],
        "inverted bounds are empty",
    );
    c.eq(
        range(excl(b"b"), excl(b"b"), None, false),
        vec![],
        "(b, b) is empty",
    );
    c.eq(
        range(incl(b"b"), excl(b"b"), None, true),
        vec![],
        "[b, b) is empty",
    );
    c.eq(
        range(incl(b"b"), incl(b"b"), None, true),
        vec![b"b".to_vec()],
        "[b, b]",
    );
    c.eq(
        range(Unbounded, Unbounded, Some(0), false),
        vec![],
        "limit 0",
    );
    c.eq(
        range(incl(b"zz"), Unbounded, None, false),
        vec![
            vec![0x7F],
            vec![0x80],
            vec![0xFF],
            vec![0xFF, 0x00],
            vec![0xFF, 0xFF],
            vec![0xFF, 0xFF, 0xFF],
        ],
        "from a key that is not stored",
    );

    // Then every combination against the model.
    c.reads_like(&*r, &ks, &model, &probe_keys(), "committed data");
}

/// Prefix scans, including prefixes that end in (or are all) `0xFF`, the empty prefix, and
/// limits; on committed data and through a write transaction's overlay.
pub fn prefix_scans(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "prefix_scans");
    let ks = c.ks("kv");
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        b"a".to_vec(),
        b"a\xFF".to_vec(),
        b"a\xFF\x00".to_vec(),
        b"a\xFF\xFF".to_vec(),
        b"b".to_vec(),
        vec![0xFE],
        vec![0xFE, 0xFF],
        vec![0xFE, 0xFF, 0xFF],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFE],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0x01],
    ];
    let mut model = model_of(&keys);
    c.fill(&ks, &model.clone().into_iter().collect::<Vec<_>>());
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        b"a".to_vec(),
        b"a\xFF".to_vec(),
        b"a\xFF\xFF".to_vec(),
        vec![0xFE],
        vec![0xFE, 0xFF],
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF],
        b"c".to_vec(),
    ];

    let r = c.read();
    let scan = |txn: &dyn ReadTxn, prefix: &[u8], limit: Option<usize>| {
        let got = c.ok(txn.scan_prefix(&ks, prefix, limit), "scan_prefix");
        got.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    c.eq(
        scan(&*r, &[0xFF], None),
        vec![
            vec![0xFF],
            vec![0xFF, 0x00],
            vec![0xFF, 0xFE],
            vec![0xFF, 0xFF],
            vec![0xFF, 0xFF, 0x01],
        ],
        "prefix [FF]",
    );
    c.eq(
        scan(&*r, &[0xFF, 0xFF], None),
        vec![vec![0xFF, 0xFF], vec![0xFF, 0xFF, 0x01]],
        "prefix [FF FF]",
    );
    c.eq(
        scan(&*r, b"a\xFF", Some(2)),
        vec![b"a\xFF".to_vec(), b"a\xFF\x00".to_vec()],
        "prefix [a FF], limit 2",
    );
    c.eq(
        scan(&*r, &[0xFE, 0xFF], None).len(),
        2,
        "prefix [FE FF] stops before [FF]",
    );
    c.eq(
        scan(&*r, b"", None).len(),
        keys.len(),
        "the empty prefix matches everything",
    );
    c.eq(
        scan(&*r, b"c", None),
        Vec::<Vec<u8>>::new(),
        "a prefix nothing starts with",
    );
    for prefix in &prefixes {
        c.scans_like(&*r, &ks, &model, prefix, "committed data");
    }

    let mut w = c.write();
    let puts: [(&[u8], &[u8]); 4] = [
        (&[0xFF, 0xFF, 0xFF], b"added"),
        (&[0xFF, 0x80], b"added"),
        (b"a\xFF\x80", b"added"),
        (&[0xFF, 0xFF], b"overwritten"),
    ];
    for (key, value) in puts {
        c.ok(w.put(&ks, key, value), "put");
        model.insert(key.to_vec(), value.to_vec());
    }
    let deletes: [&[u8]; 3] = [&[0xFF, 0x00], b"a\xFF", &[0xFF, 0xFF, 0x01]];
    for key in deletes {
        c.ok(w.delete(&ks, key), "delete");
        model.remove(key);
    }
    for prefix in &prefixes {
        c.scans_like(&*w, &ks, &model, prefix, "write txn overlay");
    }
    c.commit(w);
    let r = c.read();
    for prefix in &prefixes {
        c.scans_like(&*r, &ks, &model, prefix, "after commit");
    }
}

/// `len` counts keys: not overwrites, not deletes of missing keys; inside a write transaction it
/// includes the transaction's own changes.
pub fn len_counts_keys(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "len_counts_keys");
    let ks = c.ks("kv");
    let len = |txn: &dyn ReadTxn| c.ok(txn.len(&ks), "len");

    let mut w = c.write();
    c.eq(len(&*w), 0, "len of a new keyspace in a write txn");
    for k in [b"a", b"b", b"c"] {
        c.ok(w.put(&ks, k, b"v"), "put");
    }
    c.eq(len(&*w), 3, "len after three puts");
    c.ok(w.put(&ks, b"b", b"again"), "put");
    c.eq(len(&*w), 3, "len after an overwrite");
    c.commit(w);
    let before = c.read();
    c.eq(len(&*before), 3, "len after commit");

    let mut w = c.write();
    c.ok(w.delete(&ks, b"a"), "delete");
    c.ok(w.delete(&ks, b"missing"), "delete");
    c.eq(len(&*w), 2, "len after deleting one key and a missing one");
    c.ok(w.put(&ks, b"d", b"v"), "put");
    c.ok(w.put(&ks, b"e", b"v"), "put");
    c.ok(w.delete(&ks, b"e"), "delete");
    c.ok(w.put(&ks, b"a", b"back"), "put");
    c.eq(
        len(&*w),
        4,
        "len after put, put-then-delete and delete-then-put",
    );
    c.eq(
        len(&*before),
        3,
        "a reader's len does not see an open write txn",
    );
    c.commit(w);
    c.eq(
        len(&*before),
        3,
        "a reader's len does not see a later commit",
    );
    c.eq(len(&*c.read()), 4, "len after the second commit");
}

/// Keyspaces do not share keys, even when the names are prefixes of each other or a name plus a
/// key spells another name plus key.
pub fn keyspaces_are_independent(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "keyspaces_are_independent");
    let (k, k2, ka, kab) = (c.ks("k"), c.ks("k2"), c.ks("a"), c.ks("ab"));

    let mut w = c.write();
    c.ok(w.put(&k, b"key", b"in k"), "put");
    c.ok(w.put(&k2, b"key", b"in k2"), "put");
    c.ok(w.put(&k2, b"only", b"in k2"), "put");
    // A backend that concatenates keyspace and key would merge these two.
    c.ok(w.put(&ka, b"bc", b"a/bc"), "put");
    c.ok(w.put(&kab, b"c", b"ab/c"), "put");
    c.commit(w);

    let r = c.read();
    c.eq(
        c.get(&*r, &k, b"key"),
        Some(b"in k".to_vec()),
        "same key, keyspace k",
    );
    c.eq(
        c.get(&*r, &k2, b"key"),
        Some(b"in k2".to_vec()),
        "same key, keyspace k2",
    );
    c.eq(c.get(&*r, &k, b"only"), None, "a key of k2 is not in k");
    c.eq(c.all(&*r, &k), pairs(&[(b"key", b"in k")]), "scan of k");
    c.eq(c.ok(r.len(&k2), "len"), 2, "len of k2");
    c.eq(c.all(&*r, &ka), pairs(&[(b"bc", b"a/bc")]), "scan of a");
    c.eq(c.all(&*r, &kab), pairs(&[(b"c", b"ab/c")]), "scan of ab");
    c.eq(
        c.ok(r.scan_prefix(&ka, b"", None), "scan_prefix").len(),
        1,
        "prefix scan of a",
    );
    drop(r);

    let mut w = c.write();
    c.eq(c.ok(w.delete(&k, b"key"), "delete"), true, "delete in k");
    c.eq(
        c.get(&*w, &k2, b"key"),
        Some(b"in k2".to_vec()),
        "k2 in the txn after delete in k",
    );
    c.eq(
        c.ok(w.delete(&k, b"only"), "delete"),
        false,
        "delete in k of a key only in k2",
    );
    c.commit(w);
    let r = c.read();
    c.eq(
        c.get(&*r, &k2, b"key"),
        Some(b"in k2".to_vec()),
        "k2 after delete in k",
    );
    c.eq(c.ok(r.len(&k), "len"), 0, "len of k after delete");
    c.eq(c.ok(r.len(&k2), "len"), 2, "len of k2 after delete in k");
}

/// A keyspace that was never written reads as empty, in read and write transactions, and a
/// delete there returns false.
pub fn unknown_keyspace_reads_empty(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "unknown_keyspace_reads_empty");
    let (known, unknown) = (c.ks("known"), c.ks("never written"));
    c.fill(&known, &pairs(&[(b"k", b"v")]));

    let empty = |txn: &dyn ReadTxn, what: &str| {
        c.eq(c.get(txn, &unknown, b"k"), None, &format!("{what}: get"));
        c.eq(c.all(txn, &unknown), vec![], &format!("{what}: range"));
        let rev = c.ok(
            txn.range(&unknown, Bound::Unbounded, Bound::Unbounded, Some(5), true),
            "range",
        );
        c.eq(rev, vec![], &format!("{what}: reverse range"));
        let scanned = c.ok(txn.scan_prefix(&unknown, b"", None), "scan_prefix");
        c.eq(scanned, vec![], &format!("{what}: scan_prefix"));
        c.eq(c.ok(txn.len(&unknown), "len"), 0, &format!("{what}: len"));
    };
    empty(&*c.read(), "read txn");
    let mut w = c.write();
    empty(&*w, "write txn");
    c.eq(
        c.ok(w.delete(&unknown, b"k"), "delete"),
        false,
        "delete in an unknown keyspace",
    );
    drop(w);
    empty(&*c.read(), "read txn after a dropped write txn");
}

/// Values of 1 MiB (and a few odd sizes) round-trip byte for byte.
pub fn large_values(factory: &dyn StoreFactory) {
    let c = Check::open(factory, "large_values");
    let ks = c.ks("blobs");
    let blob = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    let values: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"mib".to_vec(), blob(1 << 20, 1)),
        (b"mib+1".to_vec(), blob((1 << 20) + 1, 2)),
        (b"page-ish".to_vec(), blob(4097, 3)),
        (b"second mib".to_vec(), blob(1 << 20, 4)),
    ];

    let mut w = c.write();
    for (k, v) in &values {
        c.ok(w.put(&ks, k, v), "put of a large value");
    }
    c.same_bytes(
        c.get(&*w, &ks, b"mib"),
        &values[0].1,
        "1 MiB value read in its own txn",
    );
    c.commit(w);

    let r = c.read();
    for (k, v) in &values {
        c.same_bytes(
            c.get(&*r, &ks, k),
            v,
            &format!("value {} after commit", String::from_utf8_lossy(k)),
        );
    }
    let scanned = c.all(&*r, &ks);
    c.eq(
        scanned.len(),
        values.len(),
        "number of large values scanned",
    );
    for (k, v) in &values {
        let found = scanned
            .iter()
            .find(|(sk, _)| sk == k)
            .map(|(_, sv)| sv.clone());
        c.same_bytes(found, v, "large value returned by a scan");
    }
    drop(r);

    // Replacing a large value with a small one must not leave any of the old bytes behind.
    let mut w = c.write();
    c.ok(w.put(&ks, b"mib", b"small"), "put");
    c.commit(w);
    c.eq(
        c.get(&*c.read(), &ks, b"mib"),
        Some(b"small".to_vec()),
        "large value replaced",
    );
}

/// 100 000 keys written in one transaction in scrambled order come back in key order, with the
/// right values, from full scans in both directions and `len`.
pub fn many_keys(factory: &dyn StoreFactory) {
    const N: u32 = 100_000;
    // 7919 is prime and does not divide N, so `i * 7919 mod N` visits every index once.
    const STRIDE: u64 = 7_919;
    let c = Check::open(factory, "many_keys");
    let ks = c.ks("many");
    let key = |i: u32| -> [u8; 5] {
        let b = i.to_be_bytes();
        [b'k', b[0], b[1], b[2], b[3]]
    };

    let started = Instant::now();
    let mut w = c.write();
    for j in 0..u64::from(N) {
        let i = ((j * STRIDE) % u64::from(N)) as u32;
        // Little-endian values, so a backend that sorted by value would be caught.
        c.ok(w.put(&ks, &key(i), &i.to_le_bytes()), "put");
    }
    c.eq(
        c.ok(w.len(&ks), "len"),
        u64::from(N),
        "len inside the writing txn",
    );
    c.commit(w);

    let r = c.read();
    c.eq(c.ok(r.len(&ks), "len"), u64::from(N), "len after commit");
    let all = c.all(&*r, &ks);
    c.eq(all.len(), N as usize, "pairs returned by a full scan");
    for (i, (k, v)) in (0..N).zip(&all) {
        if k.as_slice() != key(i) || v.as_slice() != i.to_le_bytes() {
            c.fail(&format!(
                "full scan position {i}: got key {k:?} value {v:?}, want key {:?} value {:?}",
                key(i),
                i.to_le_bytes()
            ));
        }
    }
    let reversed = c.ok(
        r.range(&ks, Bound::Unbounded, Bound::Unbounded, None, true),
        "range",
    );
    c.eq(
        reversed.len(),
        all.len(),
        "pairs returned by a full reverse scan",
    );
    if !reversed.iter().eq(all.iter().rev()) {
        c.fail("a full reverse scan is not the full forward scan reversed");
    }
    drop((all, reversed));
    let last: Vec<Vec<u8>> = c
        .ok(
            r.range(&ks, Bound::Unbounded, Bound::Unbounded, Some(3), true),
            "range",
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    c.eq(
        last,
        vec![
            key(N - 1).to_vec(),
            key(N - 2).to_vec(),
            key(N - 3).to_vec(),
        ],
        "reverse scan",
    );
    let middle = c.ok(
        r.range(
            &ks,
            Bound::Excluded(&key(50_000)),
            Bound::Included(&key(50_010)),
            None,
            false,
        ),
        "range",
    );
    c.eq(middle.len(), 10, "a range in the middle");
    c.eq(
        middle[0].0.clone(),
        key(50_001).to_vec(),
        "the first key of a range in the middle",
    );
    let page = c.ok(r.scan_prefix(&ks, &key(70_000)[..4], None), "scan_prefix");
    c.eq(page.len(), 256, "a prefix covering 256 keys");
    drop(r);

    let mut w = c.write();
    for i in (0..N).step_by(100) {
        c.ok(w.delete(&ks, &key(i)), "delete");
    }
    c.eq(
        c.ok(w.len(&ks), "len"),
        u64::from(N - N / 100),
        "len after deleting every 100th key",
    );
    c.commit(w);
    let r = c.read();
    c.eq(
        c.ok(r.len(&ks), "len"),
        u64::from(N - N / 100),
        "len after deleting, committed",
    );
    c.eq(c.get(&*r, &ks, &key(200)), None, "a deleted key");
    c.eq(
        c.get(&*r, &ks, &key(201)),
        Some(201u32.to_le_bytes().to_vec()),
        "a kept key",
    );
    drop(r);

    let elapsed = started.elapsed();
    if elapsed > Duration::from_secs(120) {
        c.fail(&format!(
            "100 000 keys took {elapsed:?}; something is quadratic"
        ));
    }
}

/// Committed data survives dropping the store and opening it again; uncommitted data does not.
/// Does nothing unless [`StoreFactory::reopens_durably`].
pub fn durability_across_reopen(factory: &dyn StoreFactory) {
    if !factory.reopens_durably() {
        return;
    }
    let c = Check::open(factory, "durability_across_reopen");
    let (a, b) = (c.ks("a"), c.ks("b"));
    let namespace = c.namespace.clone();

    let mut w = c.write();
    for i in 0u32..100 {
        c.ok(w.put(&a, &i.to_be_bytes(), &[i as u8; 100]), "put");
    }
    c.ok(w.put(&b, b"kept", b"1"), "put");
    c.ok(w.put(&b, b"deleted later", b"1"), "put");
    c.commit(w);
    let mut w = c.write();
    c.ok(w.put(&b, b"changed", b"2"), "put");
    c.ok(w.delete(&b, b"deleted later"), "delete");
    c.ok(w.delete(&a, &0u32.to_be_bytes()), "delete");
    c.commit(w);
    let mut w = c.write();
    c.ok(w.put(&b, b"never committed", b"x"), "put");
    c.ok(w.delete(&b, b"kept"), "delete");
    drop(w);
    c.close();

    let expect = |c: &Check, round: &str| {
        let r = c.read();
        c.eq(c.ok(r.len(&a), "len"), 99, &format!("{round}: len of a"));
        c.eq(
            c.get(&*r, &a, &0u32.to_be_bytes()),
            None,
            &format!("{round}: deleted key"),
        );
        c.eq(
            c.get(&*r, &a, &99u32.to_be_bytes()),
            Some(vec![99; 100]),
            &format!("{round}: a value"),
        );
        c.eq(
            c.all(&*r, &b),
            pairs(&[(b"changed", b"2"), (b"kept", b"1")]),
            &format!("{round}: keyspace b (no uncommitted writes)"),
        );
    };

    let c = Check::reopen(factory, "durability_across_reopen", namespace.clone());
    expect(&c, "after the first reopen");
    let mut w = c.write();
    c.ok(w.put(&b, b"second session", b"3"), "put");
    c.commit(w);
    c.close();

    let c = Check::reopen(factory, "durability_across_reopen", namespace);
    let r = c.read();
    c.eq(
        c.get(&*r, &b, b"second session"),
        Some(b"3".to_vec()),
        "a commit of the second session after the second reopen",
    );
    drop(r);
    let mut w = c.write();
    c.ok(w.delete(&b, b"second session"), "delete");
    c.commit(w);
    expect(&c, "after the second reopen");
}

/// Write transactions are serialised: `write()` waits while another write transaction is open,
/// and two threads doing read-modify-write increments never lose one. Transactions can move
/// between threads.
pub fn concurrent_writers_are_serialised(factory: &dyn StoreFactory) {
    const PER_THREAD: u64 = 200;
    let c = Check::open(factory, "concurrent_writers_are_serialised");
    let ks = c.ks("counter");
    let read_counter = |txn: &dyn ReadTxn| c.get(txn, &ks, b"n").map_or(0, |v| decode_u64(&c, &v));

    // 1. A second writer waits for the first, then starts from the first one's commit.
    let mut first = c.write();
    c.ok(first.put(&ks, b"n", &0u64.to_be_bytes()), "put");
    c.ok(first.put(&ks, b"holder", b"first"), "put");
    let second_started = AtomicBool::new(false);
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            let w = c.write();
            second_started.store(true, Ordering::SeqCst);
            let holder = c.get(&*w, &ks, b"holder");
            drop(w);
            holder
        });
        std::thread::sleep(Duration::from_millis(150));
        c.eq(
            second_started.load(Ordering::SeqCst),
            false,
            "write() returned while another write txn was open",
        );
        c.commit(first);
        match second.join() {
            Ok(holder) => c.eq(
                holder,
                Some(b"first".to_vec()),
                "the waiting writer sees the commit it waited for",
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });

    // 2. Transactions are `Send`: open on one thread, use and finish on others.
    let r = c.read();
    let w = c.write();
    let (c_ref, ks_ref, read_counter_ref) = (&c, &ks, &read_counter);
    let w = std::thread::scope(|s| {
        let moved = s.spawn(move || {
            let mut w = w;
            c_ref.eq(
                read_counter_ref(&*r),
                0,
                "a read txn used on another thread",
            );
            c_ref.ok(w.put(ks_ref, b"moved", b"yes"), "put on another thread");
            w
        });
        match moved.join() {
            Ok(w) => w,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    std::thread::scope(|s| {
        s.spawn(move || c_ref.commit(w));
    });
    c.eq(
        c.get(&*c.read(), &ks, b"moved"),
        Some(b"yes".to_vec()),
        "commit on another thread",
    );

    // 3. Two threads incrementing: a lost update or two writers at once fails.
    let inside = AtomicBool::new(false);
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..PER_THREAD {
                        let mut w = c.write();
                        if inside.swap(true, Ordering::SeqCst) {
                            c.fail("two write transactions were open at the same time");
                        }
                        let n = read_counter(&*w);
                        c.ok(w.put(&ks, b"n", &(n + 1).to_be_bytes()), "put");
                        // Cleared before commit: until commit returns, no other writer may start.
                        inside.store(false, Ordering::SeqCst);
                        c.commit(w);
                    }
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    c.eq(
        read_counter(&*c.read()),
        2 * PER_THREAD,
        "counter after concurrent increments",
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A failing step in the middle of a caller's write transaction.
fn validate_step() -> Result<()> {
    Err(Error::invalid(
        "simulated failure in the middle of a write transaction",
    ))
}

/// One check's context: the store, and names for messages and keyspaces.
struct Check {
    store: Arc<dyn Store>,
    check: &'static str,
    backend: &'static str,
    namespace: String,
}

impl Check {
    fn open(factory: &dyn StoreFactory, check: &'static str) -> Check {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let nonce = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_right(16);
        let c = Check::reopen(factory, check, format!("suite.{check}.{nonce:016x}"));
        c.eq(
            c.all(&*c.read(), &c.ks("probe")),
            vec![],
            "a fresh keyspace is empty",
        );
        c
    }

    fn reopen(factory: &dyn StoreFactory, check: &'static str, namespace: String) -> Check {
        let store = match factory.open() {
            Ok(store) => store,
            Err(e) => panic!("store conformance, check `{check}`: opening the store failed: {e}"),
        };
        let backend = store.backend();
        Check {
            store,
            check,
            backend,
            namespace,
        }
    }

    /// Drops this handle, as the last one, so the store can be reopened.
    fn close(self) {
        if Arc::strong_count(&self.store) != 1 {
            self.fail("the suite still holds another handle on the store");
        }
    }

    fn ks(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    fn fail(&self, message: &str) -> ! {
        panic!(
            "store conformance [{}], check `{}`: {message}",
            self.backend, self.check
        )
    }

    fn ok<T>(&self, result: Result<T>, what: &str) -> T {
        match result {
            Ok(value) => value,
            Err(e) => self.fail(&format!("{what} failed: {e}")),
        }
    }

    fn eq<T: PartialEq + Debug>(&self, got: T, want: T, what: &str) {
        if got != want {
            self.fail(&format!(
                "{what}:\n   got: {}\n  want: {}",
                short_debug(&got),
                short_debug(&want)
            ));
        }
    }

    /// Compares possibly large values without printing them whole.
    fn same_bytes(&self, got: Option<Vec<u8>>, want: &[u8], what: &str) {
        let Some(got) = got else {
            self.fail(&format!("{what}: missing"));
        };
        if got != want {
            let at = got.iter().zip(want).position(|(g, w)| g != w);
            self.fail(&format!(
                "{what}: got {} bytes, want {}; first difference at {at:?}",
                got.len(),
                want.len()
            ));
        }
    }

    fn read(&self) -> Box<dyn ReadTxn> {
        self.ok(self.store.read(), "read()")
    }

    fn write(&self) -> Box<dyn WriteTxn> {
        self.ok(self.store.write(), "write()")
    }

    fn commit(&self, txn: Box<dyn WriteTxn>) {
        self.ok(txn.commit(), "commit")
    }

    fn get(&self, txn: &dyn ReadTxn, ks: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.ok(txn.get(ks, key), "get")
    }

    /// Every pair of `ks`, ascending.
    fn all(&self, txn: &dyn ReadTxn, ks: &str) -> Vec<KeyValue> {
        self.ok(
            txn.range(ks, Bound::Unbounded, Bound::Unbounded, None, false),
            "range",
        )
    }

    /// Writes `pairs` into `ks` and commits.
    fn fill(&self, ks: &str, pairs: &[KeyValue]) {
        let mut w = self.write();
        for (k, v) in pairs {
            self.ok(w.put(ks, k, v), "put");
        }
        self.commit(w);
    }

    /// Checks every read of `txn` on `ks` against `model`: `len`, `get` of every probe, and
    /// `range` for every pair of bounds built from the probes (included, excluded, unbounded)
    /// with several limits in both directions, and `scan_prefix` on every prefix of the probes.
    fn reads_like(
        &self,
        txn: &dyn ReadTxn,
        ks: &str,
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        probes: &[Vec<u8>],
        label: &str,
    ) {
        self.eq(
            self.ok(txn.len(ks), "len"),
            model.len() as u64,
            &format!("{label}: len"),
        );
        for key in probes.iter().chain(model.keys()) {
            self.eq(
                self.get(txn, ks, key),
                model.get(key).cloned(),
                &format!("{label}: get({key:?})"),
            );
        }
        let bounds: Vec<Bound<&[u8]>> = std::iter::once(Bound::Unbounded)
            .chain(probes.iter().map(|p| Bound::Included(p.as_slice())))
            .chain(probes.iter().map(|p| Bound::Excluded(p.as_slice())))
            .collect();
        for &start in &bounds {
            for &end in &bounds {
                let all: Vec<KeyValue> = model
                    .iter()
                    .filter(|(k, _)| RangeBounds::<[u8]>::contains(&(start, end), k.as_slice()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for limit in [None, Some(0), Some(1), Some(2), Some(5)] {
                    for reverse in [false, true] {
                        let got = self.ok(txn.range(ks, start, end, limit, reverse), "range");
                        let mut want = all.clone();
                        if reverse {
                            want.reverse();
                        }
                        want.truncate(limit.unwrap_or(usize::MAX));
                        self.eq(
                            got,
                            want,
                            &format!(
                                "{label}: range({start:?}, {end:?}, limit {limit:?}, reverse {reverse})"
                            ),
                        );
                    }
                }
            }
        }
        let mut prefixes: Vec<&[u8]> = probes
            .iter()
            .flat_map(|p| (0..=p.len()).map(move |n| &p[..n]))
            .collect();
        prefixes.sort();
        prefixes.dedup();
        for prefix in prefixes {
            self.scans_like(txn, ks, model, prefix, label);
        }
    }

    /// Checks `scan_prefix(prefix)` with several limits against `model`.
    fn scans_like(
        &self,
        txn: &dyn ReadTxn,
        ks: &str,
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        prefix: &[u8],
        label: &str,
    ) {
        let all: Vec<KeyValue> = model
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for limit in [None, Some(0), Some(1), Some(2)] {
            let mut want = all.clone();
            want.truncate(limit.unwrap_or(usize::MAX));
            self.eq(
                self.ok(txn.scan_prefix(ks, prefix, limit), "scan_prefix"),
                want,
                &format!("{label}: scan_prefix({prefix:?}, limit {limit:?})"),
            );
        }
    }
}

/// Keys that exercise byte order: the empty key, zero bytes, shared prefixes, bytes above 0x7F
/// and runs of 0xFF.
fn sample_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
        b"ba".to_vec(),
        vec![0x7F],
        vec![0x80],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF],
    ]
}

/// Bound and lookup keys: some stored, some falling between or beyond the stored ones.
fn probe_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        b"a".to_vec(),
        b"aa".to_vec(),
        b"abc".to_vec(),
        b"abd".to_vec(),
        b"b".to_vec(),
        vec![0x7F],
        vec![0x80],
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0xFF, 0xFF],
    ]
}

/// A model keyspace holding `keys`, each with a value derived from its key.
fn model_of(keys: &[Vec<u8>]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    keys.iter()
        .map(|k| {
            let mut v = b"v:".to_vec();
            v.extend_from_slice(k);
            (k.clone(), v)
        })
        .collect()
}

fn pairs(items: &[(&[u8], &[u8])]) -> Vec<KeyValue> {
    items
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn decode_u64(c: &Check, bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(b) => u64::from_be_bytes(b),
        Err(_) => c.fail(&format!("expected an 8-byte counter, got {bytes:?}")),
    }
}

/// `Debug` output cut to a readable length (a failed scan of 100 000 keys must not print them
/// all).
fn short_debug(value: &impl Debug) -> String {
    const MAX: usize = 2_000;
    let mut s = format!("{value:?}");
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    s
}
