//! Integration tests of the REST transport against the testkit's reference server.

mod auth;
mod docs;
mod faults;
mod pull;
mod push;
mod suite;
mod support;
mod walks;
