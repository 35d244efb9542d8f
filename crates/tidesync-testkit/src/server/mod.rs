//! The reference REST server (being written).
