//! End-to-end tests of the built `tidesync` binary against the testkit's reference server and
//! temp redb stores.

mod bulk;
mod check_rules;
mod checkpoint;
mod config;
mod conflicts;
mod daemon;
mod doctor;
mod reconcile;
mod records;
mod schema;
mod support;
mod sync;
