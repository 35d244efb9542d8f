//! The conflict strategy plugin contract.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::record::{Key, Record};

/// How a conflict was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectedBy {
    /// A pulled remote version met a pending local change.
    Pull,
    /// The server rejected a push (409 or 412).
    PushRejected,
    /// A remote delete (tombstone) met a pending local update.
    RemoteDelete,
    /// A local delete met a remote update.
    LocalDelete,
}

impl DetectedBy {
    /// A stable lowercase name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectedBy::Pull => "pull",
            DetectedBy::PushRejected => "push_rejected",
            DetectedBy::RemoteDelete => "remote_delete",
            DetectedBy::LocalDelete => "local_delete",
        }
    }
}

/// Two diverging versions of one record, and the version both sides last agreed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// The table.
    pub table: String,
    /// The record key.
    pub key: Key,
    /// The last version both sides agreed on; `None` if the record was never synced.
    pub base: Option<Record>,
    /// The local version; `None` if deleted locally.
    pub local: Option<Record>,
    /// The remote version; `None` if deleted on the server.
    pub remote: Option<Record>,
    /// How the conflict was found.
    pub detected_by: DetectedBy,
    /// The hybrid logical clock stamp of the latest local write to the record.
    pub local_hlc: u64,
    /// The server's timestamp of the remote version, corrected for the measured clock offset,
    /// in epoch milliseconds, when known.
    pub remote_time_ms: Option<i64>,
}

/// What to do with a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "record", rename_all = "snake_case")]
pub enum Resolution {
    /// The remote version wins: it replaces the local record and the pending entry is dropped.
    TakeRemote,
    /// The local version wins: it is pushed again against the remote version.
    KeepLocal,
    /// A merged record replaces the local one and is pushed.
    Merged(Record),
    /// Left for the application: parked in the conflict queue until settled.
    Park,
}

impl Resolution {
    /// A stable lowercase name, used as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Resolution::TakeRemote => "take_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Merged(_) => "merged",
            Resolution::Park => "park",
        }
    }
}

/// A conflict strategy plugin.
#[async_trait]
pub trait ConflictStrategy: Send + Sync + 'static {
    /// A short name for events and metrics (`"server_wins"`).
    fn name(&self) -> &str;
    /// Decides the outcome of one conflict.
    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution>;
}

/// The default strategy: the server's version wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerWins;

#[async_trait]
impl ConflictStrategy for ServerWins {
    fn name(&self) -> &str {
        "server_wins"
    }
    async fn resolve(&self, _conflict: &Conflict) -> Result<Resolution> {
        Ok(Resolution::TakeRemote)
    }
}
