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

/// What an event subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum EventItem {
    /// An engine event.
    Event(tidesync_actors::SyncEvent),
    /// The subscriber fell behind and missed this many events.
    Lagged(u64),
}

/// A stream of engine events (see [`crate::Engine::events`]).
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<tidesync_actors::SyncEvent>,
}

impl Events {
    pub(crate) fn new(receiver: broadcast::Receiver<tidesync_actors::SyncEvent>) -> Self {
        Events { receiver }
    }

    /// The next event; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<EventItem> {
        match self.receiver.recv().await {
            Ok(event) => Some(EventItem::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(EventItem::Lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Waits for the first event matching `pred`, up to `timeout`.
    pub async fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        mut pred: impl FnMut(&tidesync_actors::SyncEvent) -> bool,
    ) -> Option<tidesync_actors::SyncEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(EventItem::Event(event))) if pred(&event) => return Some(event),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}
