//! # tidesync-core
//!
//! The foundation of tidesync: the domain types (records, keys, table specs, outbox entries),
//! the plugin traits that backends implement ([`Store`], [`Transport`], [`ConflictStrategy`]),
//! the error type, the hybrid logical clock, and the local database logic that every backend
//! shares (records, secondary indexes and the atomic, coalescing outbox, see [`local`]).
//!
//! Architecture rule: this crate does no IO of its own and starts no runtime. It describes and
//! decides; plugins and actors act.

pub mod error;
pub mod record;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use record::{Key, Record};
pub use store::{KeyValue, ReadTxn, Store, WriteTxn};
