//! The pid file `tidesync run` keeps next to the store (`<store>.pid`), so that a command that
//! finds the store locked can name the process holding it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `<store>.pid` for a store file.
pub fn pid_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// The pid recorded in a pid file, if the file exists and holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A pid file owned by this process: written on creation, removed on drop (only if it still
/// holds this process's pid).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's pid to `path` (replacing a stale file).
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        let pid = std::process::id();
        let tmp = {
            let mut name = path.as_os_str().to_owned();
            name.push(".tmp");
            PathBuf::from(name)
        };
        {
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{pid}")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid)
            && let Err(err) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove the pid file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_round_trip_and_removal() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = pid_path(&dir.path().join("app.redb"));
        assert!(path.ends_with("app.redb.pid"));
        let file = PidFile::create(&path).ok();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(file);
        assert!(!path.exists());
        // A file that another process rewrote is left alone.
        let file = PidFile::create(&path).ok();
        let _ = std::fs::write(&path, "1\n");
        drop(file);
        assert_eq!(read_pid(&path), Some(1));
    }
}
