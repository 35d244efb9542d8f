//! # tidesync-actors
//!
//! The actix actors of tidesync and their typed messages. This is the only crate that depends
//! on actix. A host application that runs actix itself can start and wire these actors in its
//! own `System` (see `examples/compose_actors.rs`); everyone else uses the `tidesync` facade,
//! which runs them on a dedicated thread.
//!
//! | actor | owns | receives |
//! |---|---|---|
//! | [`StoreWriterActor`] | every store write (the store writer thread), group commit | [`LocalWrite`], [`Fenced`], [`Unfenced`], [`GetStoreWriter`](store_writer::GetStoreWriter) |
//! | [`PusherActor`] | in-flight pushes, per-record order | [`PushNow`] |
//! | [`PullerActor`] | the paging loop per table | [`PullNow`] |
//! | [`ConflictResolverActor`] | per-table strategies | [`Resolve`] |
//! | [`SchedulerActor`] | triggers, one cycle at a time, lifecycle | [`SyncNow`], [`Control`], [`OutboxChanged`], [`LeadershipChanged`] |
//! | [`LeaderActor`] | the election backend, the epoch | [`Campaign`], [`Resign`] |
//! | [`MetricsActor`] | store-derived gauges | [`Refresh`] |

pub mod backoff;
pub mod circuit;
pub mod commands;
pub mod events;
pub mod leader;
pub mod live;
pub mod metrics;
pub mod puller;
mod push_turn;
pub mod pusher;
pub mod rate_limit;
pub mod reconcile;
pub mod resolver;
pub mod runtime;
pub mod scheduler;
pub mod settings;
pub mod shared;
pub mod store_writer;
pub mod telemetry;
pub mod wiring;

pub use events::{EventBus, SyncEvent, SyncReport, TablePullWarning, Trigger};
pub use leader::{Campaign, LeaderActor, Resign};
pub use live::{LiveEvent, LiveState, LiveStats};
pub use metrics::{MetricsActor, Refresh};
pub use puller::{PullNow, PullReport, PullerActor};
pub use pusher::{PushNow, PushReport, PusherActor};
pub use resolver::{ConflictResolverActor, Resolve};
pub use runtime::ActorSystem;
pub use scheduler::{Control, LeadershipChanged, SchedulerActor, Scope, SyncNow};
pub use settings::{RateLimit, RetryDelayFn, SyncSettings};
pub use shared::{EngineState, SyncShared};
#[cfg(feature = "test-support")]
pub use store_writer::StoreClosure;
pub use store_writer::{
    Fenced, LocalWrite, OutboxChanged, StoreCommand, StoreWriterActor, Unfenced, WriterJob,
};
pub use wiring::{EngineActors, SyncActors, SyncParts};
