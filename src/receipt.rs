//! Write receipts: await "this write is on the server".
//!
//! Every local write lands in the outbox in its own transaction; its receipt follows the outbox
//! entry that carries it (identified by the entry's sequence number, the write's
//! [`ChangeId`]). Several writes to one record before a push fold into one entry (DESIGN
//! invariant 4), so their receipts share a change id and resolve together: the entry carries
//! the latest of them.
//!
//! ## API shape
//!
//! The plain writes (`Table::put`, `insert`, `update`, `delete`, `Batch::commit`) keep
//! returning what they always did; the receipt-returning variants sit beside them
//! (`Table::put_with_receipt` …, `Batch::commit_with_receipts`) and return a [`Written`]
//! (the plain result plus its [`Receipt`]). Most writes never need a receipt, so they pay
//! nothing for it and no existing caller changes; the variants add no cost either (the change
//! id comes back from the same transaction).
//!
//! ## Outcomes
//!
//! [`Receipt::pushed`] resolves with [`Pushed`] when the server has the write:
//! [`Pushed::Acked`]; [`Pushed::Conflict`] when a conflict's resolution settled it (with the
//! change id of the entry pushing the outcome, if the outcome had to be pushed); and two
//! cases where nothing had to reach the server: [`Pushed::Superseded`] (a later local delete
//! cancelled an unsent create) and [`Pushed::NothingToPush`] (the write changed nothing or
//! its table does not push). It fails with [`PushError::Refused`] and the dead-letter reason
//! when the server refused the write, [`PushError::LocalOnly`] on an engine without a
//! transport (it never hangs there), [`PushError::Unknown`] for a change id the store has no
//! trace of, and [`PushError::Closed`] when the engine shut down first.
//!
//! ## Durability
//!
//! The outcome is read from the store, so a receipt survives restarts: keep
//! [`Receipt::change_id`], and after reopening call [`crate::Engine::receipt`]. An entry
//! still in the outbox is pending; a dead letter is refused; an entry that left the outbox
//! left a row in a small settlement table written in the same transaction (acknowledged,
//! settled by a conflict, superseded, discarded), even when another process instance did
//! it. The table keeps the most recent [`SETTLED_KEEP`](tidesync_core::local::SETTLED_KEEP)
//! settlements (65,536, a few MB at most): a receipt asked for much later may find no trace
//! ([`PushError::Unknown`] with `issued: true`).
//!
//! ## How waiting works
//!
//! A waiting receipt listens to the engine's events ([`crate::SyncEvent::Acknowledged`] and
//! [`crate::SyncEvent::DeadLettered`] name the change id; the end of a push or pull phase
//! may have settled it another way) and reads its entry's state from the store when one
//! concerns it. As a bounded fallback (an instance that does not lead, a subscriber that
//! lagged) it also reads the store once every [`FALLBACK_CHECK`].

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use tidesync_actors::SyncEvent;
use tidesync_core::local::{ChangeState, Settlement};
use tidesync_core::outbox::DeadLetterInfo;
use tidesync_core::{Key, OutboxEntry};

use crate::engine::Engine;

/// How often a waiting receipt reads the store when no event told it to.
pub const FALLBACK_CHECK: Duration = Duration::from_secs(1);

/// The identity of a local write on its way to the server: the sequence number of the
/// outbox entry that carries it. Stable across restarts (store it to re-obtain the receipt
/// with [`crate::Engine::receipt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeId(pub u64);

impl std::fmt::Display for ChangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How a write reached (or did not need to reach) the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The server acknowledged it (or a pulled version already showed it).
    Acked,
    /// A conflict's resolution settled it.
    Conflict {
        /// `take_remote` (the server's version stays; this write was overridden),
        /// `keep_local` or `merged` (the outcome is pushed as `follow_up`).
        resolution: String,
        /// The change that pushes the outcome, if one was needed: await its own receipt
        /// ([`crate::Engine::receipt`]) to know when the outcome is on the server.
        follow_up: Option<ChangeId>,
    },
    /// A later local write cancelled it before it was sent (a create, then a delete): the
    /// server never needed it.
    Superseded,
    /// The write queued nothing: it changed nothing, its table does not push, or it was the
    /// delete that cancelled an unsent create.
    NothingToPush,
}

/// Why a receipt cannot report the write as on the server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    /// The server refused the write: it is a dead letter (or was, and the application
    /// discarded it).
    #[error("the server refused change {change} ({table}/{key}): {}", reason.error)]
    Refused {
        /// The change.
        change: ChangeId,
        /// The table.
        table: String,
        /// The record key.
        key: Key,
        /// The dead letter's reason (kind, message, HTTP status, response excerpt).
        reason: Box<DeadLetterInfo>,
        /// The application discarded the dead letter (it can no longer be retried).
        discarded: bool,
    },
    /// The engine has no transport: nothing is pushed by it (the entry stays queued for an
    /// engine that syncs).
    #[error(
        "change {change} ({table}/{key}) waits in the outbox of a local-only engine (no transport): it is not pushed"
    )]
    LocalOnly {
        /// The change.
        change: ChangeId,
        /// The table.
        table: String,
        /// The record key.
        key: Key,
    },
    /// The store has no trace of the change: never issued here (`issued == false`), or it
    /// settled longer ago than the settlement trace reaches.
    #[error("no trace of change {change} in the store ({})", if *issued { "it settled longer ago than the kept trace reaches" } else { "never issued by this store" })]
    Unknown {
        /// The change.
        change: ChangeId,
        /// Whether this store issued the number.
        issued: bool,
    },
    /// The engine shut down while the change was still pending (reopen it and ask again).
    #[error("the engine shut down while change {change} ({table}/{key}) was still pending")]
    Closed {
        /// The change.
        change: ChangeId,
        /// The table.
        table: String,
        /// The record key.
        key: Key,
    },
    /// The store could not be read.
    #[error("cannot read the state of change {change}: {error}")]
    Store {
        /// The change.
        change: ChangeId,
        /// The store error's kind.
        kind: tidesync_core::ErrorKind,
        /// The store's error message.
        error: String,
    },
}

/// Where a change stands now (see [`Receipt::state`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptState {
    /// Still in the outbox: not on the server yet.
    Pending(Box<OutboxEntry>),
    /// Settled: the final answer.
    Done(Result<Pushed, PushError>),
}

/// A write's receipt. Cheap to clone; [`Receipt::pushed`] may be awaited any number of times
/// and always gives the same final answer.
#[derive(Debug, Clone)]
pub struct Receipt {
    engine: Engine,
    change: Option<ChangeId>,
}

/// A write's usual result, with its receipt.
#[derive(Debug, Clone)]
pub struct Written<T> {
    /// What the plain write returns (the key, the updated record, whether it existed, …).
    pub value: T,
    /// The receipt.
    pub receipt: Receipt,
}

impl Receipt {
    pub(crate) fn new(engine: Engine, change: Option<ChangeId>) -> Self {
        Receipt { engine, change }
    }

    /// The change id to keep (to re-obtain the receipt after a restart); `None` when the
    /// write queued nothing ([`Pushed::NothingToPush`]).
    pub fn change_id(&self) -> Option<ChangeId> {
        self.change
    }

    /// Where the change stands now, read from the store (does not wait).
    pub fn state(&self) -> ReceiptState {
        let Some(change) = self.change else {
            return ReceiptState::Done(Ok(Pushed::NothingToPush));
        };
        let read = self
            .engine
            .store()
            .read()
            .and_then(|read| self.engine.db().outbox().change_state(&*read, change.0));
        let state = match read {
            Ok(state) => state,
            Err(error) => {
                return ReceiptState::Done(Err(PushError::Store {
                    change,
                    kind: error.kind(),
                    error: error.to_string(),
                }));
            }
        };
        match state {
            ChangeState::Pending(entry) => ReceiptState::Pending(entry),
            ChangeState::Refused(entry) => {
                let OutboxEntry {
                    table, key, dead, ..
                } = *entry;
                ReceiptState::Done(Err(PushError::Refused {
                    change,
                    table,
                    key,
                    reason: Box::new(dead.unwrap_or_else(|| DeadLetterInfo {
                        kind: "unknown".into(),
                        error: "dead-lettered".into(),
                        status: None,
                        response_excerpt: None,
                        at_ms: 0,
                    })),
                    discarded: false,
                }))
            }
            ChangeState::Settled(row) => ReceiptState::Done(match row.settlement {
                Settlement::Acked => Ok(Pushed::Acked),
                Settlement::Conflict {
                    resolution,
                    follow_up,
                } => Ok(Pushed::Conflict {
                    resolution,
                    follow_up: follow_up.map(ChangeId),
                }),
                Settlement::Superseded => Ok(Pushed::Superseded),
                Settlement::Discarded { reason } => Err(PushError::Refused {
                    change,
                    table: row.table,
                    key: row.key,
                    reason: Box::new(reason),
                    discarded: true,
                }),
            }),
            ChangeState::Unknown { issued } => {
                ReceiptState::Done(Err(PushError::Unknown { change, issued }))
            }
        }
    }

    /// Waits until the server has the write (or refused it), and says how. Returns at once
    /// when the answer is already known, and on a local-only engine.
    pub async fn pushed(&self) -> Result<Pushed, PushError> {
        let Some(change) = self.change else {
            return Ok(Pushed::NothingToPush);
        };
        // Subscribe before the first read: nothing that settles it in between is missed.
        let mut events = self.engine.subscribe_events();
        loop {
            let entry = match self.state() {
                ReceiptState::Done(done) => return done,
                ReceiptState::Pending(entry) => entry,
            };
            if !self.engine.syncs() {
                return Err(PushError::LocalOnly {
                    change,
                    table: entry.table,
                    key: entry.key,
                });
            }
            if !self.engine.is_running() {
                return Err(PushError::Closed {
                    change,
                    table: entry.table,
                    key: entry.key,
                });
            }
            // Wait for an event that may have settled it, or the fallback tick.
            let _ = tokio::time::timeout(FALLBACK_CHECK, async {
                loop {
                    match events.recv().await {
                        Ok(event) if concerns(&event, change) => return,
                        Ok(_) => continue,
                        // Missed events: read the store.
                        Err(RecvError::Lagged(_)) => return,
                        // No more events: only the fallback tick is left.
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
        }
    }
}

/// Whether `event` may have settled `change`.
fn concerns(event: &SyncEvent, change: ChangeId) -> bool {
    match event {
        SyncEvent::Acknowledged { seq, .. } | SyncEvent::DeadLettered { seq, .. } => {
            *seq == change.0
        }
        // Settled another way (a pulled echo, a conflict's outcome, a discard): the end of a
        // phase or cycle says it is time to look.
        SyncEvent::PushCompleted { .. }
        | SyncEvent::PullCompleted { .. }
        | SyncEvent::SyncCompleted { .. }
        | SyncEvent::SyncFailed { .. } => true,
        _ => false,
    }
}
