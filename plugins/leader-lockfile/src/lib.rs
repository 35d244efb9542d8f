#![doc = include_str!("../README.md")]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tidesync_core::{Error, ErrorKind, LeaderElector, Result};

/// The campaign interval we recommend passing to `EngineBuilder::leader`: a follower notices
/// that the leader died within this long (plus a few milliseconds to persist the new epoch).
pub const RECOMMENDED_CAMPAIGN_EVERY: Duration = Duration::from_secs(1);

/// Appended to the database file name to name the lock file (`app.redb.leader.lock`).
pub const LOCK_SUFFIX: &str = ".leader.lock";

/// Appended to the database file name to name the epoch file (`app.redb.leader.epoch`).
pub const EPOCH_SUFFIX: &str = ".leader.epoch";

/// Appended to the epoch file name for the temporary file of an atomic epoch update.
const TMP_SUFFIX: &str = ".tmp";

/// A leader election among the processes of one host that share one database file.
///
/// The election is scoped to the database: its lock file is derived from the database path
/// (after resolving symlinks), so two databases never share an election and two paths to one
/// database always do. Whoever holds an exclusive OS lock (`File::try_lock`) on the lock file
/// leads; the kernel releases the lock when the holder exits, even on `SIGKILL`. Every new
/// leader increments a fencing epoch kept in a separate file, written atomically and fsynced
/// before the epoch is handed out, so epochs only grow.
///
/// Clones share one membership: they lead together and resign together. Dropping the last
/// clone releases the lock. [`LeaderElector::resign`] (called by the engine on shutdown) is
/// final: later campaigns, including one already running, return `None`.
/// [`step_down`](LockfileLeader::step_down) only releases the lock: a later campaign may lead
/// again.
#[derive(Debug, Clone)]
pub struct LockfileLeader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    database: PathBuf,
    lock_path: PathBuf,
    epoch_path: PathBuf,
    held: Mutex<Option<Held>>,
    /// Set by [`LeaderElector::resign`]: never lead again.
    retired: AtomicBool,
}

/// The locked lock file and the epoch it was won with.
#[derive(Debug)]
struct Held {
    file: File,
    epoch: u64,
}

impl Drop for Held {
    /// Unlocks explicitly rather than only closing the file: a child process forked by this one
    /// shares the open file until it execs, and closing our descriptor alone would leave the
    /// lock held through the child's copy for that moment.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The last leader recorded in the lock file (for diagnostics: it may have died since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The epoch it won.
    pub epoch: u64,
}

impl LockfileLeader {
    /// The election of the database at `database` (the file need not exist yet; its directory
    /// must). The lock file is `<database>.leader.lock`, the epoch file
    /// `<database>.leader.epoch`, both next to the database.
    ///
    /// Checks up front that the lock file can be opened for writing and that the epoch file,
    /// if present, is readable, so a permission problem shows at start-up, not as a warning at
    /// every campaign. Fails with [`ErrorKind::Config`] if the path names no file or its
    /// directory does not exist, and with [`ErrorKind::Storage`] if the files cannot be
    /// accessed.
    pub fn for_database(database: impl AsRef<Path>) -> Result<Self> {
        let database = resolve(database.as_ref())?;
        let inner = Inner {
            lock_path: sibling(&database, LOCK_SUFFIX),
            epoch_path: sibling(&database, EPOCH_SUFFIX),
            database,
            held: Mutex::new(None),
            retired: AtomicBool::new(false),
        };
        // Opening does not take the lock, and closing this descriptor does not release a lock
        // held through another one.
        drop(inner.open_lock_file()?);
        inner.read_epoch()?;
        Ok(LockfileLeader {
            inner: Arc::new(inner),
        })
    }

    /// The database this election is for (absolute, symlinks resolved).
    pub fn database(&self) -> &Path {
        &self.inner.database
    }

    /// The lock file (`<database>.leader.lock`).
    pub fn lock_path(&self) -> &Path {
        &self.inner.lock_path
    }

    /// The epoch file (`<database>.leader.epoch`).
    pub fn epoch_path(&self) -> &Path {
        &self.inner.epoch_path
    }

    /// The epoch this instance leads with, or `None` when it does not lead (as of its last
    /// campaign).
    pub fn epoch(&self) -> Option<u64> {
        self.inner.state().as_ref().map(|held| held.epoch)
    }

    /// Whether this instance leads (as of its last campaign).
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// The highest epoch ever handed out for this database (0 if none yet).
    pub fn persisted_epoch(&self) -> Result<u64> {
        self.inner.read_epoch()
    }

    /// The last leader recorded in the lock file, if any. The record is not removed when a
    /// leader dies, so it may name a process that is gone; `None` also while a new leader is
    /// rewriting it.
    pub fn last_holder(&self) -> Result<Option<Holder>> {
        let text = match fs::read_to_string(&self.inner.lock_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &self.inner.lock_path, e)),
        };
        Ok(parse_holder(&text))
    }

    /// Whether some process (this one included) holds the leader lock right now: for
    /// diagnostics such as telling whether [`last_holder`](LockfileLeader::last_holder) still
    /// leads. Probes with a shared lock that is released at once; a campaign that runs at that
    /// very moment fails and tries again at its next interval, so do not call this in a loop.
    pub fn lock_is_held(&self) -> Result<bool> {
        if self.is_leader() {
            return Ok(true);
        }
        let file = self.inner.open_lock_file()?;
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Ok(false)
            }
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(io_error("probe", &self.inner.lock_path, e)),
        }
    }

    /// The blocking form of [`LeaderElector::campaign`]: stays leader if this instance holds
    /// the lock, else tries to take it without waiting and, on success, persists the next
    /// epoch. Returns the epoch when leading.
    ///
    /// Errors ([`ErrorKind::Storage`], naming the file) leave this instance a follower that
    /// holds no lock, so they never block another process from leading. After
    /// [`LeaderElector::resign`], always `None`.
    pub fn try_lead(&self) -> Result<Option<u64>> {
        let inner = &self.inner;
        let mut held = inner.state();
        // Checked under the membership lock: a campaign racing a resign cannot win after it.
        if inner.retired.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(current) = held.as_ref() {
            if inner.is_current(&current.file) {
                return Ok(Some(current.epoch));
            }
            tracing::warn!(
                lock = %inner.lock_path.display(),
                epoch = current.epoch,
                "the leader lock file was removed or replaced: leadership lost"
            );
            *held = None;
        }

        let file = inner.open_lock_file()?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(io_error("lock", &inner.lock_path, e)),
        }
        // From here on, returning early drops `won`, which unlocks: never lead (or block the
        // others) without a persisted epoch.
        let mut won = Held { file, epoch: 0 };
        // The file may have been removed or replaced between open and lock: then the lock is
        // on a file nobody else looks at. Try again at the next campaign.
        if !inner.is_current(&won.file) {
            return Ok(None);
        }
        won.epoch = inner.bump_epoch()?;
        if let Err(e) = record_holder(&won.file, won.epoch) {
            tracing::debug!(error = %e, "cannot record the leader in the lock file (diagnostics only)");
        }
        tracing::info!(
            epoch = won.epoch,
            database = %inner.database.display(),
            "this process is now the sync leader"
        );
        let epoch = won.epoch;
        *held = Some(won);
        Ok(Some(epoch))
    }

    /// Releases the lock if held (idempotent); unlike [`LeaderElector::resign`], a later
    /// campaign may lead again (with a new epoch).
    pub fn step_down(&self) -> Result<()> {
        let mut held = self.inner.state();
        self.inner.release(&mut held)
    }
}

#[async_trait]
impl LeaderElector for LockfileLeader {
    fn name(&self) -> &str {
        "lockfile"
    }

    async fn campaign(&self) -> Result<Option<u64>> {
        let me = self.clone();
        blocking(move || me.try_lead()).await
    }

    /// Releases the lock for good: this elector and its clones never lead again.
    async fn resign(&self) -> Result<()> {
        let me = self.clone();
        blocking(move || {
            let mut held = me.inner.state();
            me.inner.retired.store(true, Ordering::SeqCst);
            me.inner.release(&mut held)
        })
        .await
    }
}

impl Inner {
    /// The membership state; a panic elsewhere while holding it cannot corrupt it.
    fn state(&self) -> MutexGuard<'_, Option<Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Releases the lock in `held`, if any.
    fn release(&self, held: &mut Option<Held>) -> Result<()> {
        let Some(held) = held.take() else {
            return Ok(());
        };
        // Clear the record first, while the lock still keeps other writers out.
        let _ = held.file.set_len(0);
        let unlocked = held.file.unlock();
        drop(held); // closing the file releases the lock in any case
        tracing::info!(database = %self.database.display(), "resigned sync leadership");
        unlocked.map_err(|e| io_error("unlock", &self.lock_path, e))
    }

    fn open_lock_file(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| io_error("open", &self.lock_path, e))
    }

    /// Whether the lock file path still names `file` (it was not removed or replaced). Errors
    /// other than "not found" are taken as yes: the lock itself is still held.
    fn is_current(&self, file: &File) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let on_disk = match fs::metadata(&self.lock_path) {
                Ok(meta) => meta,
                Err(e) => return e.kind() != io::ErrorKind::NotFound,
            };
            match file.metadata() {
                Ok(ours) => ours.dev() == on_disk.dev() && ours.ino() == on_disk.ino(),
                Err(_) => true,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            match fs::metadata(&self.lock_path) {
                Ok(_) => true,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            }
        }
    }

    /// The last persisted epoch (0 when there is no epoch file yet).
    fn read_epoch(&self) -> Result<u64> {
        let text = match fs::read_to_string(&self.epoch_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error("read", &self.epoch_path, e)),
        };
        text.trim().parse::<u64>().map_err(|e| {
            Error::new(
                ErrorKind::Storage,
                format!(
                    "leader epoch file {} is corrupt (expected a decimal number, found {:?}); \
                     write the highest epoch the database has seen, plus one, into it",
                    self.epoch_path.display(),
                    text.chars().take(40).collect::<String>()
                ),
            )
            .with_source(e)
        })
    }

    /// Persists and returns the next epoch. Call only while holding the lock.
    fn bump_epoch(&self) -> Result<u64> {
        let next = self.read_epoch()?.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::Storage,
                format!(
                    "leader epoch file {} is at the maximum epoch",
                    self.epoch_path.display()
                ),
            )
        })?;
        // Write a temporary file, fsync it, rename it over the old one, fsync the directory:
        // a crash at any point leaves either the old epoch or the new one, never a torn file.
        let tmp = sibling(&self.epoch_path, TMP_SUFFIX);
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(format!("{next}\n").as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, &self.epoch_path).map_err(|e| io_error("replace", &self.epoch_path, e))?;
        sync_dir(&self.epoch_path)?;
        Ok(next)
    }
}

/// Fsyncs the directory holding `path`, so a rename in it is durable.
#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync the directory", dir, e))
}

/// Directories cannot be opened for fsync here; the rename is as durable as the platform makes
/// it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> Result<()> {
    Ok(())
}

/// Writes `pid=<pid> epoch=<epoch>` into the (locked) lock file.
fn record_holder(file: &File, epoch: u64) -> io::Result<()> {
    let mut file = file;
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("pid={} epoch={epoch}\n", std::process::id()).as_bytes())
}

fn parse_holder(text: &str) -> Option<Holder> {
    let (mut pid, mut epoch) = (None, None);
    for part in text.split_whitespace() {
        match part.split_once('=') {
            Some(("pid", value)) => pid = value.parse().ok(),
            Some(("epoch", value)) => epoch = value.parse().ok(),
            _ => {}
        }
    }
    Some(Holder {
        pid: pid?,
        epoch: epoch?,
    })
}

/// Runs file IO off the async thread when there is a tokio runtime (the engine's actors run on
/// one), inline otherwise.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(job)
            .await
            .map_err(|e| Error::internal(format!("leader lock file task failed: {e}")))?,
        Err(_) => job(),
    }
}

/// `<path><suffix>`, next to `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The absolute database path, symlinks resolved (also when the file does not exist yet).
fn resolve(database: &Path) -> Result<PathBuf> {
    let Some(name) = database.file_name() else {
        return Err(Error::config(format!(
            "leader election: `{}` does not name a database file",
            database.display()
        )));
    };
    let parent = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = fs::canonicalize(parent).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::config(format!(
                "leader election: the directory {} of the database {} does not exist; create it \
                 first",
                parent.display(),
                database.display()
            ))
            .with_source(e)
        } else {
            io_error("resolve the directory", parent, e)
        }
    })?;
    if !dir.is_dir() {
        return Err(Error::config(format!(
            "leader election: {} (the directory of the database {}) is not a directory",
            parent.display(),
            database.display()
        )));
    }
    let path = dir.join(name);
    match fs::canonicalize(&path) {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(io_error("resolve", &path, e)),
    }
}

/// A storage error naming the file, with a hint for the common causes.
fn io_error(action: &str, path: &Path, err: io::Error) -> Error {
    let hint = match err.kind() {
        io::ErrorKind::PermissionDenied => {
            "; this process needs read and write access to the file and its directory"
        }
        io::ErrorKind::NotFound => "; its directory does not exist (any more)",
        io::ErrorKind::ReadOnlyFilesystem => "; the file system is read-only",
        _ => "",
    };
    Error::new(
        ErrorKind::Storage,
        format!(
            "leader election: cannot {action} {}: {err}{hint}",
            path.display()
        ),
    )
    .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_records_parse() {
        assert_eq!(
            parse_holder("pid=42 epoch=7\n"),
            Some(Holder { pid: 42, epoch: 7 })
        );
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("pid=42"), None);
        assert_eq!(parse_holder("pid=x epoch=1"), None);
    }

    #[test]
    fn siblings_append_to_the_file_name() {
        assert_eq!(
            sibling(Path::new("/data/app.redb"), LOCK_SUFFIX),
            Path::new("/data/app.redb.leader.lock")
        );
        assert_eq!(
            sibling(Path::new("/data/app.redb.leader.epoch"), TMP_SUFFIX),
            Path::new("/data/app.redb.leader.epoch.tmp")
        );
    }
}
