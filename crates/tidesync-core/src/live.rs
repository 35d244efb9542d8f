//! The live channel contract: how a transport tells the engine, as soon as the server says so,
//! that something changed (Server-Sent Events, a WebSocket, …).
//!
//! The pull path stays the source of truth. A live signal only says *which tables to pull
//! now*; the engine pulls them through [`crate::Transport::pull`], so a signal never moves a
//! checkpoint by itself and a lost signal costs latency, never data: after every (re)connect
//! the engine runs a full delta pull, and polling at the configured interval goes on as the
//! fallback.
//!
//! A transport offers a channel through [`crate::Transport::live`] (default: none). The engine
//! owns the connection loop: it calls [`LiveChannel::connect`], reads
//! [`LiveSession::next`] until the session ends or fails, then reconnects with backoff and
//! jitter, passing the last event id so a server that supports it can resume.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::record::{Key, Record};

/// What one event of the live channel asks the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveSignal {
    /// Pull these tables soon (debounced and coalesced); empty means every pulled table.
    Hint {
        /// The tables named by the event.
        tables: Vec<String>,
    },
    /// A record of `table` changed on the server. The engine applies it through a pull of
    /// `table` (the carried record is not trusted as a checkpoint: a pull sees it, in order).
    Change {
        /// The table.
        table: String,
        /// The record's key, when the event named it.
        key: Option<Key>,
        /// The record the event carried, when its shape is configured.
        record: Option<Record>,
    },
}

impl LiveSignal {
    /// The tables this signal asks to pull (empty: every table).
    pub fn tables(&self) -> Vec<String> {
        match self {
            LiveSignal::Hint { tables } => tables.clone(),
            LiveSignal::Change { table, .. } => vec![table.clone()],
        }
    }
}

/// A server's live channel, as configured in its transport. Cheap to share.
#[async_trait]
pub trait LiveChannel: Send + Sync + 'static {
    /// What the channel is, for logs and status (`"sse http://host/live"`); no secrets.
    fn describe(&self) -> String;

    /// Opens the channel, handshake included. `last_event_id` is the id of the last event
    /// received on a previous session (sent as `Last-Event-ID` by SSE). Failures are
    /// classified like requests (`Network`, `Timeout`, `Auth`, `Server`, `Permanent`…).
    async fn connect(&self, last_event_id: Option<String>) -> Result<Box<dyn LiveSession>>;
}

/// One open session of a live channel.
#[async_trait]
pub trait LiveSession: Send {
    /// The next signal. `Ok(None)`: the server closed the channel. An error: the channel
    /// broke or stalled (nothing, not even a keep-alive, for the configured stall time).
    async fn next(&mut self) -> Result<Option<LiveSignal>>;

    /// The id of the last event received, to resume from after a reconnect.
    fn last_event_id(&self) -> Option<String> {
        None
    }

    /// The reconnection delay the server asked for (SSE `retry:`), if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}
