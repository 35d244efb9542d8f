//! The lock-file election: one leader per database, growing epochs, clear errors, and release
//! on SIGKILL (with a real child process).
//!
//! Two electors in one process compete like two processes do: each opens the lock file
//! itself, and an OS file lock held through one open file excludes the others.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidesync_core::{ErrorKind, LeaderElector};
use tidesync_leader_lockfile::{Holder, LockfileLeader};

fn elector(path: &Path) -> LockfileLeader {
    LockfileLeader::for_database(path).expect("elector")
}

#[test]
fn one_leader_per_database_and_epochs_grow_with_each_new_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let a = elector(&db);
    let b = elector(&db);
    assert_eq!(a.try_lead().expect("a campaigns"), Some(1));
    assert_eq!(b.try_lead().expect("b campaigns"), None, "one leader only");
    // The leader keeps its epoch; the follower stays a follower.
    assert_eq!(a.try_lead().expect("a again"), Some(1));
    assert_eq!(b.try_lead().expect("b again"), None);
    assert!(a.is_leader() && !b.is_leader());
    assert_eq!(a.epoch(), Some(1));

    a.step_down().expect("a resigns");
    a.step_down().expect("resigning twice is fine");
    assert!(!a.is_leader());
    assert_eq!(b.try_lead().expect("b takes over"), Some(2));
    assert_eq!(a.try_lead().expect("a follows"), None);

    // Dropping the leader releases the lock; the epoch lives on in the epoch file.
    drop(b);
    assert_eq!(a.try_lead().expect("a leads again"), Some(3));
    drop(a);
    let c = elector(&db);
    assert_eq!(c.persisted_epoch().expect("epoch file"), 3);
    assert_eq!(c.try_lead().expect("c"), Some(4));
    assert_eq!(
        std::fs::read_to_string(c.epoch_path()).expect("epoch file"),
        "4\n"
    );
}

#[test]
fn lock_is_held_tells_whether_anyone_leads_without_taking_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let a = elector(&db);
    let b = elector(&db);
    assert!(!b.lock_is_held().expect("probe"), "nobody leads yet");
    assert_eq!(a.try_lead().expect("a campaigns"), Some(1));
    assert!(a.lock_is_held().expect("probe") && b.lock_is_held().expect("probe"));
    a.step_down().expect("a steps down");
    assert!(!b.lock_is_held().expect("probe"));
    // The probe released its shared lock: a campaign right after it wins.
    assert_eq!(b.try_lead().expect("b campaigns"), Some(2));
}

#[test]
fn files_sit_next_to_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let e = elector(&db);
    let real_dir = std::fs::canonicalize(dir.path()).expect("canonical dir");
    assert_eq!(e.database(), real_dir.join("app.redb"));
    assert_eq!(e.lock_path(), real_dir.join("app.redb.leader.lock"));
    assert_eq!(e.epoch_path(), real_dir.join("app.redb.leader.epoch"));
    assert_eq!(e.last_holder().expect("no holder yet"), None);
    e.try_lead().expect("campaign");
    assert_eq!(
        e.last_holder().expect("holder"),
        Some(Holder {
            pid: std::process::id(),
            epoch: 1
        })
    );
    e.step_down().expect("resign");
    assert_eq!(e.last_holder().expect("cleared on resign"), None);
}

/// Seed bug B9: every database shared one election. Here each database has its own.
#[test]
fn two_databases_have_two_independent_elections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = elector(&dir.path().join("one.redb"));
    let two = elector(&dir.path().join("two.redb"));
    assert_eq!(one.try_lead().expect("one"), Some(1));
    assert_eq!(two.try_lead().expect("two"), Some(1));
    assert_ne!(one.lock_path(), two.lock_path());
    // A second contender per database does not disturb the other database.
    let one_b = elector(&dir.path().join("one.redb"));
    assert_eq!(one_b.try_lead().expect("one_b"), None);
    assert_eq!(two.try_lead().expect("two still"), Some(1));
}

#[cfg(unix)]
#[test]
fn paths_to_the_same_database_share_one_election() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    std::fs::write(&db, b"").expect("db file");
    let link = dir.path().join("link.redb");
    std::os::unix::fs::symlink(&db, &link).expect("symlink");
    let direct = elector(&db);
    let via_link = elector(&link);
    std::fs::create_dir(dir.path().join("sub")).expect("sub");
    let relative = elector(&dir.path().join("sub").join("..").join("app.redb"));
    assert_eq!(direct.lock_path(), via_link.lock_path());
    assert_eq!(direct.lock_path(), relative.lock_path());
    assert_eq!(via_link.try_lead().expect("link"), Some(1));
    assert_eq!(direct.try_lead().expect("direct"), None);
    assert_eq!(relative.try_lead().expect("relative"), None);
}

#[test]
fn a_missing_directory_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("no such dir").join("app.redb");
    let err = LockfileLeader::for_database(&db).expect_err("missing directory");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("no such dir"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let err = LockfileLeader::for_database("/").expect_err("no file name");
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn an_unusable_lock_file_is_a_storage_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    std::fs::create_dir(dir.path().join("app.redb.leader.lock")).expect("a directory in the way");
    let err = LockfileLeader::for_database(&db).expect_err("cannot open the lock file");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("app.redb.leader.lock"), "{err}");
}

#[test]
fn a_corrupt_epoch_file_fails_clearly_and_never_keeps_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let a = elector(&db);
    let b = elector(&db);
    std::fs::write(a.epoch_path(), "garbage").expect("corrupt it");
    let err = a.try_lead().expect_err("corrupt epoch");
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("app.redb.leader.epoch"), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(!a.is_leader());
    // The lock was released: b can take it once the file is repaired.
    assert!(b.try_lead().is_err(), "still corrupt");
    std::fs::write(a.epoch_path(), "41\n").expect("repair");
    assert_eq!(b.try_lead().expect("b"), Some(42));
    // A new elector refuses a corrupt file up front.
    std::fs::write(a.epoch_path(), "x").expect("corrupt again");
    let err = LockfileLeader::for_database(&db).expect_err("checked at creation");
    assert_eq!(err.kind(), ErrorKind::Storage);
}

#[cfg(unix)]
#[test]
fn a_leader_whose_lock_file_was_removed_steps_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let a = elector(&db);
    let b = elector(&db);
    assert_eq!(a.try_lead().expect("a"), Some(1));
    std::fs::remove_file(a.lock_path()).expect("someone cleans up");
    // b locks the new file; a must notice and not stay leader too.
    assert_eq!(b.try_lead().expect("b"), Some(2));
    assert_eq!(a.try_lead().expect("a"), None, "two leaders");
    assert!(!a.is_leader());
}

#[tokio::test(flavor = "current_thread")]
async fn the_trait_campaigns_and_resigns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let a: Box<dyn LeaderElector> = Box::new(elector(&db));
    let b: Box<dyn LeaderElector> = Box::new(elector(&db));
    assert_eq!(a.name(), "lockfile");
    assert_eq!(a.campaign().await.expect("a"), Some(1));
    assert_eq!(b.campaign().await.expect("b"), None);
    a.resign().await.expect("resign");
    assert_eq!(b.campaign().await.expect("b"), Some(2));
    assert_eq!(a.campaign().await.expect("a"), None);
    // Resigning is final: even with the lock free, a resigned elector does not lead again.
    b.resign().await.expect("resign");
    assert_eq!(a.campaign().await.expect("a"), None);
    let c = elector(&dir.path().join("app.redb"));
    assert_eq!(c.try_lead().expect("c"), Some(3));
}

/// Set in the child of [`sigkill_frees_leadership_for_the_next_campaign`]: the database path.
const CHILD_ENV: &str = "TIDESYNC_LOCKFILE_CHILD_DB";

/// The child: leads, says so, and waits to be killed. Does nothing in a normal run.
#[test]
fn lockfile_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let e = LockfileLeader::for_database(db).expect("child elector");
    let epoch = loop {
        if let Some(epoch) = e.try_lead().expect("child campaign") {
            break epoch;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("LEADING {epoch}");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn sigkill_frees_leadership_for_the_next_campaign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.redb");
    let parent = elector(&db);
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "lockfile_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The harness prints `test lockfile_child ... ` without a newline before the child's line.
    let leading = loop {
        match lines.next() {
            Some(Ok(line)) => match line.split_once("LEADING ") {
                Some((_, epoch)) => break epoch.trim().to_owned(),
                None => continue,
            },
            other => {
                let _ = child.kill();
                panic!("the child did not lead: {other:?}");
            }
        }
    };
    assert_eq!(leading, "1");
    assert_eq!(parent.try_lead().expect("parent"), None, "the child leads");
    assert_eq!(
        parent.last_holder().expect("holder").map(|h| h.pid),
        Some(child.id())
    );

    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    child.wait().expect("reap");
    let epoch = loop {
        if let Some(epoch) = parent.try_lead().expect("parent campaigns") {
            break epoch;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the kernel did not release the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(epoch, 2);
}
