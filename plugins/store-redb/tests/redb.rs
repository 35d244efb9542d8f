//! What is particular to the redb backend: opening, options, and the errors around the file.

use std::sync::Arc;

use tidesync_core::{ErrorKind, Store};
use tidesync_store_redb::{RedbOptions, RedbStore};

fn put(store: &dyn Store, keyspace: &str, key: &[u8], value: &[u8]) {
    let mut w = store.write().expect("write()");
    w.put(keyspace, key, value).expect("put");
    w.commit().expect("commit");
}

fn get(store: &dyn Store, keyspace: &str, key: &[u8]) -> Option<Vec<u8>> {
    store
        .read()
        .expect("read()")
        .get(keyspace, key)
        .expect("get")
}

#[test]
fn opening_the_same_file_twice_is_a_clear_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.redb");
    let first = RedbStore::open(&path).expect("first open");

    let err = RedbStore::open(&path).expect_err("a second open of a file that is open");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(!err.retryable());
    let message = err.to_string();
    assert!(message.contains("already open"), "message: {message}");
    assert!(
        message.contains("app.redb"),
        "the message names the file: {message}"
    );
    let source = std::error::Error::source(&err).expect("the redb error is the source");
    assert!(
        matches!(
            source.downcast_ref::<redb::DatabaseError>(),
            Some(redb::DatabaseError::DatabaseAlreadyOpen)
        ),
        "source: {source:?}"
    );

    // A clone is another handle on the same open database, not a second open.
    let clone = first.clone();
    put(&clone, "ks", b"k", b"v");
    assert_eq!(get(&first, "ks", b"k"), Some(b"v".to_vec()));

    // Once every handle is gone, the file opens again.
    drop(first);
    assert!(
        RedbStore::open(&path).is_err(),
        "the clone still holds the file"
    );
    drop(clone);
    let reopened = RedbStore::open(&path).expect("open after close");
    assert_eq!(get(&reopened, "ks", b"k"), Some(b"v".to_vec()));
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.redb");
    {
        let store = RedbStore::open(&path).expect("open");
        put(&store, "posts", b"p1", b"hello");
        put(&store, "outbox", &1u64.to_be_bytes(), b"op");
        let mut w = store.write().expect("write()");
        w.put("posts", b"p2", b"never committed").expect("put");
        // Dropped: rolled back.
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(get(&store, "posts", b"p1"), Some(b"hello".to_vec()));
    assert_eq!(get(&store, "posts", b"p2"), None);
    assert_eq!(
        get(&store, "outbox", &1u64.to_be_bytes()),
        Some(b"op".to_vec())
    );
    assert_eq!(store.backend(), "redb");
}

#[test]
fn options_set_cache_size_and_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.redb");
    {
        let store = RedbOptions::new()
            .cache_size(1024 * 1024)
            .durability(redb::Durability::None)
            .open(&path)
            .expect("open with options");
        put(&store, "ks", b"fast", b"1");
        assert_eq!(get(&store, "ks", b"fast"), Some(b"1".to_vec()));
        // A non-durable commit is persisted by the next durable one.
        let durable = store.with_durability(redb::Durability::Immediate);
        put(&durable, "ks", b"durable", b"2");
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(get(&store, "ks", b"fast"), Some(b"1".to_vec()));
    assert_eq!(get(&store, "ks", b"durable"), Some(b"2".to_vec()));
}

#[test]
fn wraps_a_database_opened_by_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::builder()
        .set_cache_size(4 * 1024 * 1024)
        .create(dir.path().join("own.redb"))
        .expect("create");
    let db = Arc::new(db);
    let store = RedbStore::from_database(Arc::clone(&db));
    assert!(Arc::ptr_eq(store.database(), &db));
    put(&store, "ks", b"k", b"v");

    // The data is in an ordinary redb table named after the keyspace.
    use redb::ReadableDatabase;
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("ks");
    let read = db.begin_read().expect("begin_read");
    let value = read
        .open_table(table)
        .expect("open_table")
        .get(&b"k"[..])
        .expect("get")
        .map(|v| v.value().to_vec());
    assert_eq!(value, Some(b"v".to_vec()));
}

#[test]
fn a_file_that_is_not_a_database_is_a_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5Au8; 64 * 1024]).expect("write garbage");
    let err = RedbStore::open(&path).expect_err("garbage is not a database");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("garbage.redb"), "{err}");
}

#[test]
fn a_missing_directory_is_a_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no such dir").join("app.redb");
    let err = RedbStore::open(&path).expect_err("cannot create a file in a missing directory");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("no such dir"), "{err}");
}

#[test]
fn an_empty_keyspace_left_by_a_write_txn_reads_like_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path().join("app.redb")).expect("open");
    let mut w = store.write().expect("write()");
    // Reading in a write transaction creates the table.
    assert_eq!(w.get("empty", b"k").expect("get"), None);
    w.put("other", b"k", b"v").expect("put");
    w.commit().expect("commit");
    let r = store.read().expect("read()");
    assert_eq!(r.len("empty").expect("len"), 0);
    assert!(r.scan_prefix("empty", b"", None).expect("scan").is_empty());
}

/// Set in the child process of [`committed_data_survives_a_crash`]: the database file to write.
const CRASH_CHILD_ENV: &str = "TIDESYNC_REDB_CRASH_CHILD_DB";

/// The child half of [`committed_data_survives_a_crash`]; does nothing in a normal test run.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(path).expect("open in the child");
    put(&store, "ks", b"committed", b"1");
    let mut w = store.write().expect("write()");
    w.put("ks", b"in flight", b"2").expect("put");
    // Die with the write transaction open: `exit` runs no destructor, so nothing is dropped,
    // aborted or flushed (and unlike `abort` it leaves no core file behind).
    std::process::exit(3);
}

#[test]
fn committed_data_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.redb");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert!(
        !status.success(),
        "the child must have exited without cleanup: {status}"
    );

    // The kernel released the child's file lock; redb recovers the file on open.
    let store = RedbStore::open(&path).expect("open after the crash");
    assert_eq!(get(&store, "ks", b"committed"), Some(b"1".to_vec()));
    assert_eq!(get(&store, "ks", b"in flight"), None);
}

#[test]
fn multi_process_handles_share_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.redb");
    let one = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect("first open");
    let two = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect("a second multi-process open of an open file");
    put(&one, "ks", b"a", b"1");
    assert_eq!(get(&two, "ks", b"a"), Some(b"1".to_vec()));
    put(&two, "ks", b"b", b"2");
    assert_eq!(get(&one, "ks", b"b"), Some(b"2".to_vec()));
}

#[test]
fn mixing_modes_on_one_file_is_a_clear_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.redb");
    {
        let _shared = RedbOptions::new()
            .multi_process(true)
            .open(&path)
            .expect("multi-process open");
        let err = RedbStore::open(&path).expect_err("an exclusive open beside a shared one");
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(err.to_string().contains("multi_process(true)"), "{err}");
    }
    let _exclusive = RedbStore::open(&path).expect("exclusive open");
    let err = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect_err("a shared open beside an exclusive one");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("multi_process(true)"), "{err}");
}

#[test]
fn multi_process_refuses_non_durable_commits_up_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nd.redb");
    let err = RedbOptions::new()
        .multi_process(true)
        .durability(redb::Durability::None)
        .open(&path)
        .expect_err("Durability::None in multi-process mode");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("Durability::None"), "{err}");

    // Set later on the handle, it fails at the commit, as a storage error.
    let store = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect("open")
        .with_durability(redb::Durability::None);
    let err = store.write().err().expect("non-durable write refused");
    assert_eq!(err.kind(), ErrorKind::Storage);
}

/// Set in the child process of [`a_killed_peer_leaves_a_shared_file_usable`].
const SHARED_CHILD_ENV: &str = "TIDESYNC_REDB_SHARED_CHILD_DB";

/// The child half of [`a_killed_peer_leaves_a_shared_file_usable`]; does nothing normally.
#[test]
fn shared_child() {
    let Some(path) = std::env::var_os(SHARED_CHILD_ENV) else {
        return;
    };
    let store = RedbOptions::new()
        .multi_process(true)
        .open(path)
        .expect("open in the child");
    put(&store, "ks", b"from child", b"1");
    let mut w = store.write().expect("write()");
    w.put("ks", b"in flight", b"2").expect("put");
    // Die holding the cross-process write lock, with the transaction open.
    std::process::exit(3);
}

#[test]
fn a_killed_peer_leaves_a_shared_file_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.redb");
    let parent = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect("parent open");
    put(&parent, "ks", b"from parent", b"0");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "shared_child", "--nocapture", "--test-threads=1"])
        .env(SHARED_CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must have died: {status}");

    // The parent kept the file open throughout: it sees the child's commit, not its open
    // transaction, and can write (the child's write lock went with it).
    assert_eq!(get(&parent, "ks", b"from child"), Some(b"1".to_vec()));
    assert_eq!(get(&parent, "ks", b"in flight"), None);
    put(&parent, "ks", b"after", b"3");
    drop(parent);
    let reopened = RedbOptions::new()
        .multi_process(true)
        .open(&path)
        .expect("reopen");
    assert_eq!(get(&reopened, "ks", b"after"), Some(b"3".to_vec()));
    assert_eq!(get(&reopened, "ks", b"from child"), Some(b"1".to_vec()));
}

/// Writes `n` rows of `size` bytes one commit each, then deletes all but every tenth: what an
/// outbox burst that was pushed and acknowledged leaves behind.
fn burst_then_drain(path: &std::path::Path, n: u32, size: usize) {
    let store = RedbOptions::new()
        .compact_at_open(false)
        .open(path)
        .expect("open");
    let value = vec![7u8; size];
    for i in 0..n {
        put(&store, "o/entries", &i.to_be_bytes(), &value);
    }
    let mut txn = store.write().expect("write");
    for i in (0..n).filter(|i| i % 10 != 0) {
        txn.delete("o/entries", &i.to_be_bytes()).expect("delete");
    }
    txn.commit().expect("commit");
}

#[test]
fn a_mostly_free_file_is_compacted_at_open_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("burst.redb");
    burst_then_drain(&path, 2_000, 2_000);
    let before = std::fs::metadata(&path).expect("size").len();
    assert!(
        before > 4 * 1024 * 1024,
        "the burst grew the file: {before}"
    );

    // Not asked for (the default), it is not compacted (redb may trim a few pages at open
    // and close); nor below the threshold.
    drop(RedbStore::open(&path).expect("open with the defaults"));
    let untouched = std::fs::metadata(&path).expect("size").len();
    assert!(untouched * 10 > before * 9, "{before} -> {untouched} bytes");
    drop(
        RedbOptions::new()
            .compact_at_open(true)
            .compact_min_bytes(before + 1)
            .open(&path)
            .expect("open"),
    );
    let untouched = std::fs::metadata(&path).expect("size").len();
    assert!(untouched * 10 > before * 9, "{before} -> {untouched} bytes");
    let before = untouched;

    let store = RedbOptions::new()
        .compact_at_open(true)
        .compact_min_bytes(1024 * 1024)
        .open(&path)
        .expect("open and compact");
    let after = std::fs::metadata(&path).expect("size").len();
    assert!(after * 2 < before, "compacted {before} -> {after} bytes");
    for i in 0..2_000u32 {
        let expected = (i % 10 == 0).then(|| vec![7u8; 2_000]);
        assert_eq!(
            get(&store, "o/entries", &i.to_be_bytes()),
            expected,
            "row {i}"
        );
    }
}

#[test]
fn a_file_open_in_several_processes_is_never_compacted_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.redb");
    burst_then_drain(&path, 2_000, 2_000);
    let before = std::fs::metadata(&path).expect("size").len();
    let _store = RedbOptions::new()
        .multi_process(true)
        .compact_at_open(true)
        .compact_min_bytes(1024 * 1024)
        .open(&path)
        .expect("open");
    let after = std::fs::metadata(&path).expect("size").len();
    assert!(after * 10 > before * 9, "{before} -> {after} bytes");
}
