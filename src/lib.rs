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
//! The pieces: [`tidesync_core`] (types and plugin traits), [`tidesync_actors`] (the actors),
//! store plugins ([`RedbStore`], [`MemoryStore`]).

mod batch;
mod bulk;
mod engine;
mod status;
mod table;
mod watch;

pub use batch::Batch;
pub use bulk::{BatchResult, BulkMode, BulkReport, DEFAULT_BULK_BATCH, Rejected};
pub use engine::{Engine, EngineBuilder};
pub use status::{Health, HealthCheck, HealthStatus, PendingEntry, Status};
pub use table::Table;
pub use watch::{EventItem, Events, Watch, WatchEvent};

pub use tidesync_actors::events::Remaining;
pub use tidesync_actors::{RateLimit, SyncEvent, SyncReport, SyncSettings, Trigger};

pub use tidesync_core::local::{
    AppliedPage, Change, EntryState, IndexRange, Origin, OutboxStats, OutboxSummary, SchemaChanges,
};
pub use tidesync_core::local::{ParkedConflict, Quarantined};
pub use tidesync_core::{
    Conflict, ConflictStrategy, DetectedBy, Error, ErrorKind, InProcessLeader, Key, KeyKind,
    LeaderElector, Op, OutboxEntry, Record, Reference, Resolution, Result, ServerWins, Store,
    TableSpec, Transport,
};
pub use tidesync_store_memory::MemoryStore;
#[cfg(feature = "store-redb")]
pub use tidesync_store_redb::RedbStore;

/// The actors, for hosts that compose them in their own actix System.
pub use tidesync_actors as actors;
/// The core crate: types and plugin traits, for plugin authors.
pub use tidesync_core as core;
