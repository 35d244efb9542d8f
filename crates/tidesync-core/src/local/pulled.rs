//! What applying remote data returns: the transport's view of a pulled record, and what a
//! page did (shared by the pull, echo, quarantine-retry and migration paths).

use crate::conflict::Conflict;

use super::{Change, Quarantined};

/// What the transport knows about a pulled record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteMeta {
    /// Its version token.
    pub version: Option<String>,
    /// When the server last modified it, in *local* clock milliseconds (the server's
    /// timestamp corrected by the measured clock offset), when known.
    pub modified_ms: Option<i64>,
}

/// What applying a pulled page did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedPage {
    /// Changes written to local records.
    pub changes: Vec<Change>,
    /// Remote versions that met pending local changes: to be resolved.
    pub conflicts: Vec<(Conflict, Option<String>)>,
    /// Remote records equal to their base while a local change is pending (no conflict).
    pub unchanged: usize,
    /// Items that could not be applied and were quarantined.
    pub quarantined: Vec<Quarantined>,
}
