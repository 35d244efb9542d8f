//! The fixed policies: [`ServerWins`] (core's), [`ClientWins`] and [`ParkForApp`].

use async_trait::async_trait;
use tidesync_core::{Conflict, ConflictStrategy, Resolution, Result};

pub use tidesync_core::ServerWins;

/// Whether both sides already hold the same thing: the same record, or both deleted.
///
/// Such a "conflict" needs no push: [`Resolution::TakeRemote`] adopts the remote version as the
/// base and drops the pending entry, which is exactly right. [`ClientWins`] and
/// [`LastWriteWins`](crate::LastWriteWins) use it so they never push a redundant write (in
/// particular never a `DELETE` of a record the server already deleted, which a REST API may answer
/// with 404 and send to the dead-letter queue).
pub fn converged(conflict: &Conflict) -> bool {
    conflict.local == conflict.remote
}

/// The local version wins.
///
/// | local | remote | outcome |
/// |---|---|---|
/// | record | record (different) | [`KeepLocal`](Resolution::KeepLocal): the local record is pushed again |
/// | record | deleted | `KeepLocal`: the record is re-created on the server |
/// | deleted | record | `KeepLocal`: the delete is pushed again |
/// | same as remote (or both deleted) | | [`TakeRemote`](Resolution::TakeRemote): already converged, nothing to push |
///
/// The outcome depends only on the data, never on [`Conflict::detected_by`], so a push rejection
/// and a pull resolve alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientWins;

impl ClientWins {
    /// The decision, synchronously.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        if converged(conflict) {
            Resolution::TakeRemote
        } else {
            Resolution::KeepLocal
        }
    }
}

#[async_trait]
impl ConflictStrategy for ClientWins {
    fn name(&self) -> &str {
        "client_wins"
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let resolution = self.decide(conflict);
        crate::log_outcome(self.name(), conflict, &resolution, "policy");
        Ok(resolution)
    }
}

/// Every conflict is parked for the application, whatever the data (deletes and already-converged
/// versions included): the engine keeps it in the conflict queue until the app settles it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParkForApp;

impl ParkForApp {
    /// The decision, synchronously: always [`Resolution::Park`].
    pub fn decide(&self, _conflict: &Conflict) -> Resolution {
        Resolution::Park
    }
}

#[async_trait]
impl ConflictStrategy for ParkForApp {
    fn name(&self) -> &str {
        "park"
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let resolution = self.decide(conflict);
        crate::log_outcome(self.name(), conflict, &resolution, "policy");
        Ok(resolution)
    }
}
