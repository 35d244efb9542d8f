//! The registry of `tidesync run` daemons on a store: one file per process,
//! `<store>.daemons/<pid>.json`, so that any number of daemons can start and stop together
//! (each writes only its own file) and `status` can list them.
//!
//! A registration cannot go stale: its process holds an exclusive OS lock (`File::lock`, an
//! `flock` on Unix) on the file for as long as it runs, and the kernel releases that lock when
//! the process exits, even on `SIGKILL`. Whoever lists the registry probes each file with a
//! shared lock: refused means its process is alive; granted means it is dead, and the file is
//! removed there and then (survivors and `status` clean up after the dead). A file only gets
//! its final name once it is locked and written (`<pid>.json.tmp` is renamed), so a file under
//! its final name is never mistaken for a dead one while its process starts.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Appended to the store file name to name the registry directory (`app.redb.daemons`).
pub const DIR_SUFFIX: &str = ".daemons";

/// A temporary file older than this whose process is gone is removed by the next listing.
const TMP_GRACE: Duration = Duration::from_secs(10);

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
/// exclusive lock on the file is what says "alive"; it goes with the process.
#[derive(Debug)]
pub struct Registration {
    file: File,
    path: PathBuf,
    info: DaemonInfo,
}

impl Registration {
    /// Registers this process as a daemon of `store`: creates the directory if needed, writes
    /// `<pid>.json.tmp` under an exclusive lock and renames it to `<pid>.json`. Another
    /// process's file is never touched, so concurrent starts cannot collide.
    pub fn register(store: &Path) -> io::Result<Registration> {
        let dir = registry_dir(store);
        fs::create_dir_all(&dir)?;
        let pid = std::process::id();
        let info = DaemonInfo {
            pid,
            started_at_ms: tidesync::core::hlc::wall_millis(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let path = dir.join(format!("{pid}.json"));
        let tmp = dir.join(format!("{pid}.json.tmp"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another process", tmp.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let text = serde_json::to_string(&info).map_err(io::Error::other)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(Registration { file, path, info })
    }

    /// The registration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it records.
    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }
}

impl Drop for Registration {
    /// Removes the file if it is still ours (a later process with the same pid may have
    /// replaced it after we were presumed dead), then lets the lock go with the file.
    fn drop(&mut self) {
        if same_file(&self.file, &self.path)
            && let Err(err) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove the daemon registration");
        }
        let _ = self.file.unlock();
    }
}

/// The live daemons of `store`, oldest first. Registrations of dead processes are removed on
/// the way. Files that cannot be read or parsed are skipped (with a debug log).
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
        if name.ends_with(".json") {
            if let Some(info) = probe(&path) {
                daemons.push(info);
            }
        } else if name.ends_with(".json.tmp") {
            sweep_tmp(&path);
        }
    }
    daemons.sort_by_key(|d| (d.started_at_ms, d.pid));
    Ok(daemons)
}

/// Whether `pid` is a live registered daemon of `store`.
pub fn is_live(store: &Path, pid: u32) -> bool {
    live(store).is_ok_and(|daemons| daemons.iter().any(|d| d.pid == pid))
}

/// The daemon recorded in `path` if its process is alive; removes the file if it is dead.
fn probe(path: &Path) -> Option<DaemonInfo> {
    // A few tries: the file may be replaced (same pid, new process) between open and lock.
    for _ in 0..3 {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot open a daemon registration");
                return None;
            }
        };
        match file.try_lock_shared() {
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                if let Err(e) = file.read_to_string(&mut text) {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read a daemon registration");
                    return None;
                }
                return match serde_json::from_str(&text) {
                    Ok(info) => Some(info),
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "unreadable daemon registration");
                        None
                    }
                };
            }
            Ok(()) => {
                // Nobody holds it: its process is gone. Remove it, unless it was just replaced.
                let ours = same_file(&file, path);
                if ours
                    && let Err(e) = fs::remove_file(path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::debug!(path = %path.display(), error = %e, "cannot remove a dead daemon's registration");
                }
                let _ = file.unlock();
                if ours {
                    return None;
                }
            }
            Err(TryLockError::Error(e)) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot probe a daemon registration");
                return None;
            }
        }
    }
    None
}

/// Removes a temporary registration left by a process that died while registering.
fn sweep_tmp(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > TMP_GRACE);
    if old && file.try_lock_shared().is_ok() {
        if same_file(&file, path) {
            let _ = fs::remove_file(path);
        }
        let _ = file.unlock();
    }
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
        assert!(!is_live(&store, std::process::id()));
    }

    #[test]
    fn an_unlocked_registration_is_a_dead_process_and_is_removed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = dir.path().join("app.redb");
        let registry = registry_dir(&store);
        fs::create_dir_all(&registry).expect("dir");
        let dead = registry.join("4000000.json");
        fs::write(
            &dead,
            r#"{"pid":4000000,"started_at_ms":1,"version":"0.1.0"}"#,
        )
        .expect("write");
        assert_eq!(live(&store).ok(), Some(Vec::new()));
        assert!(!dead.exists(), "the dead process's file is cleaned up");
    }
}
