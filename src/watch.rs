//! Streams of committed changes, for live queries.

use tokio::sync::broadcast;

use tidesync_core::local::Change;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A committed change.
    Change(Change),
    /// The watcher fell behind and missed this many changes: re-read what it shows.
    Lagged(u64),
}

/// A stream of committed changes (see [`crate::Engine::watch`]).
#[derive(Debug)]
pub struct Watch {
    receiver: broadcast::Receiver<Change>,
    table: Option<String>,
}

impl Watch {
    pub(crate) fn new(receiver: broadcast::Receiver<Change>, table: Option<String>) -> Self {
        Watch { receiver, table }
    }

    /// The next event; `None` once the engine has stopped.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(change) => {
                    if self.table.as_deref().is_none_or(|t| t == change.table) {
                        return Some(WatchEvent::Change(change));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(WatchEvent::Lagged(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
