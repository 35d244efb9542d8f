//! End-to-end sync against the testkit's reference server over real HTTP (loopback), with the
//! REST transport and a redb or in-memory store. Scenario numbers refer to the seed SDK's
//! upstream tests and probes (reference/seed-inventory.md §4), restated with the behaviour
//! tidesync guarantees.

mod conflicts;
mod failures;
mod lifecycle;
mod push_pull;
mod quarantine;
mod reconcile;
mod schema_remote;
mod seed_scenarios;
mod support;
mod unchecked_servers;
mod write_shapes;
