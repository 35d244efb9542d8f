//! # tidesync
//!
//! An offline-first sync engine for Rust applications. The application reads and writes a
//! local embedded store (redb by default) and keeps working with no network; every local write
//! lands in a durable outbox in the same transaction; the engine pushes the outbox to the
//! application's existing REST API and pulls back what changed.
//!
//! ```no_run
//! # async fn demo() -> tidesync::Result<()> {
//! use tidesync::{Engine, RedbStore, TableSpec};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Default)]
//! struct Post { id: String, title: String }
//!
//! let engine = Engine::builder()
//!     .store(RedbStore::open("app.redb")?)
//!     .table(TableSpec::new("posts").index("title"))
//!     .start()?;
//! let posts = engine.table::<Post>("posts")?;
//! let key = posts.put(&Post { title: "Hello".into(), ..Default::default() }).await?;
//! assert!(posts.get(&key).await?.is_some());
//! # Ok(()) }
//! ```
//!
//! To know when a write is on the server, write it with a receipt
//! (`posts.put_with_receipt(&post).await?.receipt.pushed().await`): see [`receipt`] (it
//! survives restarts through [`Engine::receipt`]). [`Engine::synced_through`] tells which
//! server cursor each table's local copy reflects.
//!
//! The pieces: [`tidesync_core`] (types and plugin traits), [`tidesync_actors`] (the actors),
//! and the plugins, each behind a cargo feature of this crate (in the style of sqlx):
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `store-redb` | yes | `RedbStore` (also `store::redb`): the durable embedded store |
//! | `store-memory` | no | `MemoryStore` (also `store::memory`): a store that lives in memory, for tests and caches |
//! | `transport-rest` | no | `transport::rest`: `RestTransport`, `RestConfig` and the route configuration |
//! | `conflict-policies` | no | [`conflict`]`::{ClientWins, LastWriteWins, ParkForApp, strategy_fn, async_strategy_fn}` and `conflict::policies` |
//! | `conflict-merge` | no | [`conflict`]`::{FieldMerge, MergePolicy}` and `conflict::merge` |
//!
//! ```toml
//! [dependencies]
//! tidesync = { version = "0.1", features = ["transport-rest", "conflict-policies"] }
//! ```
//!
//! Without `store-redb` (`default-features = false`) bring a store: `store-memory` or any
//! [`Store`] implementation. [`ServerWins`] and [`InProcessLeader`], the defaults, are always
//! there. The other plugins (`tidesync-leader-lockfile`, `tidesync-metrics-prometheus`) are
//! crates of their own.

mod batch;
mod bulk;
mod bulk_writer;
mod engine;
pub mod receipt;
mod status;
mod table;
mod watch;

pub use batch::{Batch, BatchWritten};
pub use bulk::{BatchResult, BulkMode, BulkReport, DEFAULT_BULK_BATCH, Rejected};
pub use bulk_writer::BulkWriter;
pub use engine::{Engine, EngineBuilder, SyncedThrough};
pub use receipt::{ChangeId, PushError, Pushed, Receipt, ReceiptState, Written};
pub use status::{Health, HealthCheck, HealthStatus, LiveStatus, PendingEntry, Status};
pub use table::Table;
pub use tidesync_actors::LiveState;
pub use watch::{EventItem, Events, Watch, WatchEvent};

pub use tidesync_actors::events::{Remaining, TablePullWarning};
pub use tidesync_actors::{RateLimit, SyncEvent, SyncReport, SyncSettings, Trigger};

pub use tidesync_core::local::{
    AppliedPage, Change, EntryState, IndexRange, Origin, OutboxStats, OutboxSummary, SchemaChanges,
    SchemaProgress,
};
pub use tidesync_core::local::{ParkedConflict, Quarantined};
pub use tidesync_core::{
    Conflict, ConflictStrategy, DetectedBy, Error, ErrorKind, InProcessLeader, Key, KeyKind,
    LeaderElector, Op, OutboxEntry, Record, Reference, Resolution, Result, ServerWins, Store,
    TableSpec, Transport,
};
#[cfg(feature = "store-memory")]
pub use tidesync_store_memory::MemoryStore;
#[cfg(feature = "store-redb")]
pub use tidesync_store_redb::RedbStore;

/// The store plugins enabled by features: `redb` (`store-redb`, default) and `memory`
/// (`store-memory`).
pub mod store {
    pub use tidesync_core::{KeyValue, ReadTxn, Store, WriteTxn};
    #[cfg(feature = "store-memory")]
    pub use tidesync_store_memory as memory;
    #[cfg(feature = "store-redb")]
    pub use tidesync_store_redb as redb;
}

/// The transport plugins enabled by features: `rest` (`transport-rest`).
pub mod transport {
    pub use tidesync_core::live::{LiveChannel, LiveSession, LiveSignal};
    pub use tidesync_core::{
        Fetched, PullPage, PullRequest, PullWarning, PushOutcome, PushRequest, Transport,
    };
    #[cfg(feature = "transport-rest")]
    pub use tidesync_transport_rest as rest;
}

/// Conflict strategies: core's [`ServerWins`] always; the policies
/// (`conflict-policies`) and the field merge (`conflict-merge`) by feature, flat and as the
/// modules `policies` and `merge`.
///
/// ```
/// use tidesync::conflict::{ClientWins, ConflictStrategy, FieldMerge, MergePolicy, ServerWins};
///
/// let strategies: Vec<Box<dyn ConflictStrategy>> = vec![
///     Box::new(ServerWins),
///     Box::new(ClientWins),
///     Box::new(FieldMerge::with_default(MergePolicy::Latest)),
/// ];
/// let names: Vec<&str> = strategies.iter().map(|s| s.name()).collect();
/// assert_eq!(names[..2], ["server_wins", "client_wins"]);
/// ```
pub mod conflict {
    #[cfg(feature = "conflict-merge")]
    pub use tidesync_conflict_merge as merge;
    #[cfg(feature = "conflict-merge")]
    pub use tidesync_conflict_merge::{FieldMerge, MergePolicy};
    #[cfg(feature = "conflict-policies")]
    pub use tidesync_conflict_policies as policies;
    #[cfg(feature = "conflict-policies")]
    pub use tidesync_conflict_policies::{
        ClientWins, LastWriteWins, ParkForApp, TimestampFormat, async_strategy_fn, strategy_fn,
    };
    pub use tidesync_core::{Conflict, ConflictStrategy, DetectedBy, Resolution, ServerWins};
}

/// The actors, for hosts that compose them in their own actix System.
pub use tidesync_actors as actors;
/// The core crate: types and plugin traits, for plugin authors.
pub use tidesync_core as core;
