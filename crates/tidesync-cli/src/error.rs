//! Exit codes and the error every command returns.

use std::fmt;

use tidesync::ErrorKind;

use crate::build::StoreError;
use crate::config::ConfigError;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 1: the sync cycle or the operation failed (server error, network, rejected write).
    Failed,
    /// 2: usage or configuration error (bad arguments, invalid config, bad JSON input).
    Usage,
    /// 3: the store is locked by another process (normally a running `tidesync run`).
    Locked,
    /// 4: not found (record, dead letter, parked conflict, quarantined item).
    NotFound,
    /// 5: the sync cycle ran but did not converge: entries wait out a retry delay, are blocked
    /// (behind a dead letter, waiting for a referenced create, paused for credentials), the
    /// server is unreachable, or a pull stopped early. Nothing is lost; a later sync goes on.
    Incomplete,
    /// 6: `put --wait`: the server refused the write for good (it was dead-lettered).
    Refused,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Locked => 3,
            Exit::NotFound => 4,
            Exit::Incomplete => 5,
            Exit::Refused => 6,
        }
    }
}

/// The exit code table, as printed in `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the sync cycle or the operation failed (server error, network, rejected write)
  2  usage or configuration error (bad arguments, invalid config, bad JSON input)
  3  the store is locked by another process (a running `tidesync run`)
  4  not found (record, dead letter, parked conflict, quarantined item)
  5  sync incomplete: something could not be sent yet (waiting to retry, blocked, offline);
     nothing is lost, the reasons are printed; `put --wait`: not on the server
     within --timeout (the write stays queued)
  6  `put --wait`: the server refused the write (dead-lettered; see `dead-letters list`)";

/// A command's failure: what to print and which exit code to use.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong (its chain of causes is printed too).
    pub error: anyhow::Error,
    /// What to do about it.
    pub hint: Option<String>,
    /// The command already reported the failure on stdout (`--json` documents): print nothing
    /// more, just exit.
    pub reported: bool,
}

impl CliError {
    /// A failure with an exit code.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            exit,
            error: error.into(),
            hint: None,
            reported: false,
        }
    }

    /// A failure from a message.
    pub fn msg(exit: Exit, message: impl fmt::Display) -> Self {
        Self::new(exit, anyhow::anyhow!("{message}"))
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Self::msg(Exit::Usage, message)
    }

    /// A not-found error (exit 4).
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::msg(Exit::NotFound, message)
    }

    /// A failure already reported on stdout.
    pub fn reported(exit: Exit, message: impl fmt::Display) -> Self {
        let mut err = Self::msg(exit, message);
        err.reported = true;
        err
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// From an engine error: the exit code by its kind, and a hint where one helps.
    pub fn engine(err: tidesync::Error) -> Self {
        let (exit, hint) = match err.kind() {
            ErrorKind::NotFound => (Exit::NotFound, None),
            ErrorKind::InvalidInput | ErrorKind::Config | ErrorKind::AlreadyExists => {
                (Exit::Usage, None)
            }
            ErrorKind::Storage if crate::build::is_already_open(&err) => (
                Exit::Locked,
                Some("stop the running `tidesync run` first".to_owned()),
            ),
            ErrorKind::Auth => (
                Exit::Failed,
                Some(
                    "the server refused the credentials: check the variables named in [auth]"
                        .to_owned(),
                ),
            ),
            kind if kind.retryable() => (
                Exit::Failed,
                Some(
                    "nothing is lost: the entries stay queued and are retried by the next \
                     `tidesync sync` or `tidesync run`"
                        .to_owned(),
                ),
            ),
            _ => (Exit::Failed, None),
        };
        CliError {
            exit,
            error: anyhow::Error::new(err),
            hint,
            reported: false,
        }
    }
}

impl From<tidesync::Error> for CliError {
    fn from(err: tidesync::Error) -> Self {
        CliError::engine(err)
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        let hint = match &err {
            ConfigError::Read { path, .. } => format!(
                "create one with `tidesync init {}`, or pass -c FILE (or set TIDESYNC_CONFIG)",
                path.display()
            ),
            ConfigError::Invalid { path, .. } => {
                format!(
                    "run `tidesync check -c {}` to see every problem",
                    path.display()
                )
            }
        };
        CliError::new(Exit::Usage, err).hint(hint)
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Locked { pid: Some(pid), .. } => {
                let hint = format!(
                    "stop it first (`kill -TERM {pid}`): it syncs and shuts down cleanly; \
                     inspection commands need the store to themselves"
                );
                CliError::new(Exit::Locked, err).hint(hint)
            }
            StoreError::Locked { pid: None, .. } => CliError::new(Exit::Locked, err)
                .hint("another program has the file open; close it and try again"),
            StoreError::Open { .. } => CliError::new(Exit::Failed, err),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError::new(Exit::Failed, err)
    }
}
