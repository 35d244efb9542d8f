#![doc = include_str!("../README.md")]

pub mod auth;
pub mod classify;
mod client;
pub mod config;
pub mod cursor;
pub mod feed;
pub mod live;
pub mod pagination;
pub mod pointer;
pub mod probe;
mod pull;
mod push;
pub mod query;
pub mod routes;
pub mod template;
pub mod time;
mod transport;

pub use auth::{AuthHeaders, AuthProvider, Secret, StaticAuth};
pub use client::RestTransport;
pub use config::{RestConfig, RestTransportBuilder};
pub use feed::{Feed, Filter, ForeignLinks, PageStyle, Pagination, Tombstone};
pub use live::{EventRule, LiveAction, LiveConfig, LiveKind, Subscribe};
pub use pointer::Pointer;
pub use probe::{FeedProbe, ProbeResponse};
pub use pull::link_next;
pub use query::QueryParams;
pub use routes::{
    Answer, AnswerRule, BodyMode, BodyVersion, BulkFormat, BulkMatch, BulkRoute, ConflictDetection,
    FetchManyRoute, FetchRoute, Headers, Method, TableRoutes, Versioning, WriteRoute,
};
pub use template::Template;
pub use time::{Separator, TextFormat, TimeFormat, Zone};
