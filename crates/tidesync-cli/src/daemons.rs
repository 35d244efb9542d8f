//! The registry of `tidesync run` daemons on a store: one record per process,
//! `<store>.daemons/<pid>.json`, so that any number of daemons can start and stop together
//! (each writes only its own files) and `status` can list them.
//!
//! A registration cannot go stale: its process holds an exclusive OS lock (`File::lock`, an
//! `flock` on Unix) on `<pid>.lock` for as long as it runs, and the kernel releases that lock
//! when the process exits, even on `SIGKILL`. Whoever lists the registry probes each lock file
//! with a shared lock: refused means its process is alive; granted (or no lock file) means it
//! is dead, and its files are removed there and then (survivors and `status` clean up after
//! the dead). The lock is taken before the record is written (under a temporary name, then
//! renamed), so a record is never mistaken for a dead one while its process starts. The record
//! itself is not locked, so it can be read on every platform.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Appended to the store file name to name the registry directory (`app.redb.daemons`).
pub const DIR_SUFFIX: &str = ".daemons";

/// A half-made registration (a process died while registering) older than this is removed by
/// the next listing.
const GRACE: Duration = Duration::from_secs(10);

/// `<store>.daemons` for a store file.
pub fn registry_dir(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(DIR_SUFFIX);
    PathBuf::from(name)
}

/// What a daemon records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// When it started (wall clock, Unix milliseconds).
    pub started_at_ms: u64,
    /// The `tidesync` version it runs.
    pub version: String,
}

/// This process's registration: created by [`Registration::register`], removed on drop. The
/// exclusive lock on `<pid>.lock` is what says "alive"; it goes with the process.
#[derive(Debug)]
pub struct Registration {
    lock: File,
    lock_path: PathBuf,
    path: PathBuf,
    info: DaemonInfo,
}

impl Registration {
    /// Registers this process as a daemon of `store`: creates the directory if needed, locks
    /// `<pid>.lock`, writes `<pid>.json.tmp` and renames it to `<pid>.json`. Another process's
    /// files are never touched, so concurrent starts cannot collide.
    pub fn register(store: &Path) -> io::Result<Registration> {
        let dir = registry_dir(store);
        fs::create_dir_all(&dir)?;
        let pid = std::process::id();
        let info = DaemonInfo {
            pid,
            started_at_ms: tidesync::core::hlc::wall_millis(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let lock_path = dir.join(format!("{pid}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another process", lock_path.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let path = dir.join(format!("{pid}.json"));
        let tmp = dir.join(format!("{pid}.json.tmp"));
        let text = serde_json::to_string(&info).map_err(io::Error::other)?;
        {
            let mut file = File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        Ok(Registration {
            lock,
            lock_path,
            path,
            info,
        })
    }

    /// The registration record (`<pid>.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it records.
    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }
}

impl Drop for Registration {
    /// Removes the record and the lock file if they are still ours (a later process with the
    /// same pid may have replaced them after we were presumed dead), then releases the lock.
    fn drop(&mut self) {
        if same_file(&self.lock, &self.lock_path) {
            for path in [&self.path, &self.lock_path] {
                if let Err(err) = fs::remove_file(path)
                    && err.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove the daemon registration");
                }
            }
        }
        let _ = self.lock.unlock();
    }
}

/// The live daemons of `store`, oldest first. Registrations of dead processes are removed on
/// the way. Records that cannot be read or parsed are skipped (with a debug log).
pub fn live(store: &Path) -> io::Result<Vec<DaemonInfo>> {
    let dir = registry_dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut daemons = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(pid) = name
            .strip_suffix(".json")
            .and_then(|p| p.parse::<u32>().ok())
        {
            if let Some(info) = probe(&dir, pid) {
                daemons.push(info);
            }
        } else if let Some(pid) = name
            .strip_suffix(".lock")
            .and_then(|p| p.parse::<u32>().ok())
        {
            if !dir.join(format!("{pid}.json")).exists() && is_old(&path) {
                // Locked, then died before writing its record.
                let _ = remove_if_dead(&path, &[]);
            }
        } else if name.ends_with(".json.tmp") && is_old(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    daemons.sort_by_key(|d| (d.started_at_ms, d.pid));
    Ok(daemons)
}

/// Whether `pid` is a live registered daemon of `store`.
pub fn is_live(store: &Path, pid: u32) -> bool {
    live(store).is_ok_and(|daemons| daemons.iter().any(|d| d.pid == pid))
}

/// The record of daemon `pid` if its process is alive; removes its files if it is dead.
fn probe(dir: &Path, pid: u32) -> Option<DaemonInfo> {
    let record = dir.join(format!("{pid}.json"));
    let lock_path = dir.join(format!("{pid}.lock"));
    if !remove_if_dead(&lock_path, &[&record]) {
        return None;
    }
    let text = match fs::read_to_string(&record) {
        Ok(text) => text,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %record.display(), error = %e, "cannot read a daemon registration");
            }
            return None;
        }
    };
    match serde_json::from_str::<DaemonInfo>(&text) {
        Ok(info) if info.pid == pid => Some(info),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(path = %record.display(), error = %e, "unreadable daemon registration");
            None
        }
    }
}

/// Probes the lock file at `lock_path`: `true` if a live process holds it; otherwise removes
/// `also` and the lock file (unless the lock file was just replaced) and returns `false`.
fn remove_if_dead(lock_path: &Path, also: &[&Path]) -> bool {
    let file = match File::open(lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A record without its lock file: its process is gone (a live one locks first).
            for path in also {
                let _ = fs::remove_file(path);
            }
            return false;
        }
        Err(e) => {
            tracing::debug!(path = %lock_path.display(), error = %e, "cannot open a daemon lock");
            return false;
        }
    };
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => true,
        Ok(()) => {
            if same_file(&file, lock_path) {
                for path in also {
                    let _ = fs::remove_file(path);
                }
                let _ = fs::remove_file(lock_path);
            }
            let _ = file.unlock();
            false
        }
        Err(TryLockError::Error(e)) => {
            tracing::debug!(path = %lock_path.display(), error = %e, "cannot probe a daemon lock");
            false
        }
    }
}

/// Whether the file was last modified more than [`GRACE`] ago.
fn is_old(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > GRACE)
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(ours), Ok(on_disk)) => ours.dev() == on_disk.dev() && ours.ino() == on_disk.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// Whether a process with this pid exists (Linux: `/proc/<pid>`; elsewhere assumed yes).
pub fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_listed_while_held_and_removed_on_drop() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = dir.path().join("app.redb");
        assert_eq!(live(&store).ok(), Some(Vec::new()));
        let reg = Registration::register(&store).expect("registers");
        assert!(
            reg.path()
                .ends_with(format!("app.redb.daemons/{}.json", std::process::id()))
        );
        let listed = live(&store).expect("lists");
        assert_eq!(listed, vec![reg.info().clone()]);
        assert!(is_live(&store, std::process::id()));
        drop(reg);
        assert_eq!(live(&store).ok(), Some(Vec::new()));
        let left = fs::read_dir(registry_dir(&store)).map(|d| d.count()).ok();
        assert_eq!(left, Some(0), "record and lock file removed");
        assert!(!is_live(&store, std::process::id()));
    }

    #[test]
    fn an_unlocked_registration_is_a_dead_process_and_is_removed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = dir.path().join("app.redb");
        let registry = registry_dir(&store);
        fs::create_dir_all(&registry).expect("dir");
        let dead = registry.join("4000000.json");
        let info = r#"{"pid":4000000,"started_at_ms":1,"version":"0.1.0"}"#;
        // A record whose lock nobody holds, and one without a lock file.
        fs::write(&dead, info).expect("write");
        fs::write(registry.join("4000000.lock"), "").expect("write");
        fs::write(
            registry.join("4000001.json"),
            info.replace("4000000", "4000001"),
        )
        .expect("write");
        assert_eq!(live(&store).ok(), Some(Vec::new()));
        let left: Vec<_> = fs::read_dir(&registry)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert!(
            left.is_empty(),
            "the dead processes' files are cleaned up: {left:?}"
        );
    }
}
