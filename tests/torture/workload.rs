//! What the torture and fault workloads share: their three tables and the REST routes of the
//! reference server's collections. Both suites compile this file (`#[path]` from
//! tests/faults).

use crate::verify::{Check, TableCheck};

/// `posts` client wins, `notes` server wins, `tasks` with server-assigned ids (identified by
/// their client id `cid`, checked for exactly-once creation). All three are pushed and pulled:
/// a pulled task may meet a create whose answer is still to come (BUG-3, BUG-7).
pub const TABLES: [TableCheck; 3] = [
    TableCheck {
        name: "posts",
        check: Check::ClientWins,
        by: None,
        pulled: true,
    },
    TableCheck {
        name: "notes",
        check: Check::ServerWins,
        by: None,
        pulled: true,
    },
    TableCheck {
        name: "tasks",
        check: Check::ClientWins,
        by: Some("cid"),
        pulled: true,
    },
];
