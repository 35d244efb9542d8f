//! # tidesync-actors
//!
//! The actix actors of tidesync and their typed messages. This is the only crate that depends
//! on actix. A host application that runs actix itself can start and wire these actors in its
//! own `System`; everyone else uses the `tidesync` facade, which runs them on a dedicated
//! thread.

pub mod outbox;
pub mod runtime;

pub use outbox::{LocalWrite, OutboxActor, OutboxChanged, Write, WriteJob};
pub use runtime::ActorSystem;
