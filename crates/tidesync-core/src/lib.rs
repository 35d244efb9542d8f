//! # tidesync-core
//!
//! The foundation of tidesync: the domain types (records, keys, table specs, outbox entries),
//! the plugin traits that backends implement ([`Store`], [`Transport`], [`ConflictStrategy`],
//! [`LeaderElector`]),
//! the error type, the hybrid logical clock, and the local database logic that every backend
//! shares (records, secondary indexes and the atomic, coalescing outbox, see [`local`]).
//!
//! Architecture rule: this crate does no IO of its own and starts no runtime. It describes and
//! decides; plugins and actors act.

pub mod batched_puts;
pub mod conflict;
pub mod duration;
pub mod error;
pub mod hlc;
pub mod leader;
pub mod live;
pub mod local;
pub mod options;
pub mod outbox;
pub mod push_policy;
pub mod record;
pub mod spec;
pub mod store;
pub mod transport;
pub mod write_buffer;

pub use conflict::{Conflict, ConflictStrategy, DetectedBy, Resolution, ServerWins};
pub use error::{Error, ErrorKind, Result};
pub use hlc::{HybridClock, Stamp};
pub use leader::{InProcessLeader, LeaderElector};
pub use live::{LiveChannel, LiveSession, LiveSignal};
pub use outbox::{Op, OutboxEntry};
pub use record::{Key, Record};
pub use spec::{KeyKind, Reference, TableSpec};
pub use store::{KeyValue, ReadTxn, Store, WriteTxn};
pub use transport::{
    Fetched, PullPage, PullRequest, PullWarning, PushOutcome, PushRequest, Transport,
};
