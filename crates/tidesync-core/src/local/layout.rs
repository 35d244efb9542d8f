//! Where everything lives in the store: keyspace names and key encodings.
//!
//! | keyspace            | key                              | value               |
//! |---------------------|----------------------------------|---------------------|
//! | `r/<table>`         | key                              | queue header ‖ record JSON (`record_row`) |
//! | `d/<table>`         | key                              | queue header of a record deleted locally whose entries are still queued |
//! | `i/<table>/<field>` | index value ‖ key                | key                 |
//! | `b/<table>`         | key                              | base (`base_row`)   |
//! | `o/entries`         | seq (u64 BE)                     | entry (`entry_codec`) |
//! | `o/dead`            | seq                              | empty               |
//! | `o/in_flight`       | seq                              | empty               |
//! | `o/backoff`         | seq                              | next attempt (ms)   |
//! | `o/settled`         | seq                              | settlement JSON     |
//! | `o/settled_order`   | settlement ordinal               | seq                 |
//! | `x/conflicts`       | table ‖ key                      | parked conflict     |
//! | `x/remapped`        | table ‖ temporary key            | server key JSON     |
//! | `q`                 | quarantine seq                   | quarantined item    |
//! | `m`                 | meta name                        | meta value          |
//! | `c`                 | table                            | pull cursor JSON    |
//!
//! `‖` is concatenation of self-delimiting encodings, so prefix scans are exact.
//!
//! Layout v2 (`layout_upgrade` upgrades older stores, see [`super::LocalDb::upgrade_layout`]). What a local write
//! commits: its record (and index rows), its outbox entry and, for a new entry, its
//! `o/by_record` row; nothing else. The sequence counter is derived from the last entry (a
//! floor in `m` is raised by removals), the clock's last stamp is kept by the sync path's
//! commits, and queue depths are counted from `o/by_record` when asked. Layout v1 also kept
//! `o/by_table` and a depth counter per table, and wrote the counter and the clock on every
//! local write.
//!
//! Layout v3 is v2 where a queued entry may point at its record row instead of carrying a
//! copy of the record: a local write's entry does, until the row changes (`entry_codec`).
//! While a burst of writes waits to be pushed, each record is stored once.
//!
//! Layout v4 (the current one) drops v3's per-record queue index (`o/by_record`, rows
//! `table ‖ key ‖ seq`): a record's queued entries are listed in a header of its record row
//! (`record_row`), or of its `d/<table>` row once the record is deleted locally, so a local
//! write commits its record row and its entry, and an acknowledgement leaves the record row
//! alone. A table's queue is read from `o/entries` (entries name their table).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::record::{Key, escape_into};
use crate::spec::describe;

/// Keyspace of the records of `table`.
pub fn records(table: &str) -> String {
    keyspace_name(&["r/", table])
}

/// The concatenation of `parts` (keyspace names are built on every read and write: without
/// the formatting machinery).
fn keyspace_name(parts: &[&str]) -> String {
    let mut name = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        name.push_str(part);
    }
    name
}

/// Keyspace of the secondary index on `field` of `table`.
pub fn index(table: &str, field: &str) -> String {
    keyspace_name(&["i/", table, "/", field])
}

/// Keyspace of the queue headers of `table`'s records that were deleted locally while
/// entries of theirs were still queued (see `record_row`).
pub fn deleted(table: &str) -> String {
    keyspace_name(&["d/", table])
}

/// Keyspace of the bases (last agreed versions) of `table`.
pub fn bases(table: &str) -> String {
    keyspace_name(&["b/", table])
}

/// Outbox entries by sequence number.
pub const OUTBOX: &str = "o/entries";
/// Layout v3's per-record queues (table ‖ key ‖ seq); layout v4 moves them into the record
/// rows' headers when it opens such a store.
pub const LEGACY_OUTBOX_BY_RECORD: &str = "o/by_record";
/// Layout v1's per-table order (table ‖ seq); layout v2 drops it when it opens such a store.
pub const LEGACY_OUTBOX_BY_TABLE: &str = "o/by_table";
/// Dead-lettered entries by sequence number.
pub const DEAD: &str = "o/dead";
/// Entries handed to the transport and not settled yet, by sequence number (so that
/// re-queueing them after a crash costs O(in flight), not O(backlog)).
pub const IN_FLIGHT: &str = "o/in_flight";
/// Entries waiting out a retry delay, by sequence number, with the time they become due.
pub const BACKOFF: &str = "o/backoff";
/// Keys the server replaced (temporary key → the key it assigned), kept so that a reference
/// to a temporary key written after its remap still points at the record (BUG-10).
pub const REMAPPED: &str = "x/remapped";
/// How entries left the outbox (acknowledged, settled by a conflict, cancelled, discarded),
/// by sequence number: the durable part of write receipts (bounded, see `settled`).
pub const SETTLED: &str = "o/settled";
/// The order settlements happened in: ordinal → seq (what the bound prunes by).
pub const SETTLED_ORDER: &str = "o/settled_order";
/// Engine metadata (sequence counter, clock, queue depths, epoch).
pub const META: &str = "m";
/// Pull checkpoints by table.
pub const CHECKPOINTS: &str = "c";

/// Meta key of the floor of the next outbox sequence number (raised when entries leave).
pub const META_NEXT_SEQ: &[u8] = b"next_seq";
/// Meta key of the storage layout version the store is written in (absent: layout v1).
pub const META_LAYOUT: &[u8] = b"layout_version";
/// Meta key of the last issued HLC stamp.
pub const META_HLC: &[u8] = b"hlc";
/// Meta key of the highest leadership epoch that claimed this database.
pub const META_EPOCH: &[u8] = b"leader_epoch";
/// Meta key set once [`IN_FLIGHT`] and [`BACKOFF`] are maintained for every entry (databases
/// written before they existed get them rebuilt once).
pub const META_STATE_INDEXES: &[u8] = b"outbox_state_indexes";

/// Meta key of when `table`'s last hard-delete reconciliation listed the server (wall-clock
/// ms, 8 bytes big-endian).
pub fn meta_reconciled(table: &str) -> Vec<u8> {
    format!("reconciled/{table}").into_bytes()
}
/// Meta key of the next settlement ordinal ([`SETTLED_ORDER`]).
pub const META_SETTLED_ORDINAL: &[u8] = b"settled_ordinal";

/// Prefix of layout v1's per-table queue depth counters (dropped by layout v2).
pub const LEGACY_META_DEPTH_PREFIX: &[u8] = b"depth/";

/// `table ‖ key`: a record's name in keyspaces of several tables ([`REMAPPED`], parked
/// conflicts, layout v3's [`LEGACY_OUTBOX_BY_RECORD`]).
pub fn record_prefix(table: &str, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 2 + 24);
    escape_into(table.as_bytes(), &mut out);
    key.encode_into(&mut out);
    out
}

/// `table`: the prefix of one table's rows in keyspaces keyed by [`record_prefix`].
pub fn table_prefix(table: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 2);
    escape_into(table.as_bytes(), &mut out);
    out
}

/// Encodes a sequence number so byte order is numeric order.
pub fn seq_bytes(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads a sequence number from the last 8 bytes of `bytes`.
pub fn seq_from_suffix(bytes: &[u8]) -> Result<u64> {
    let start = bytes
        .len()
        .checked_sub(8)
        .ok_or_else(|| Error::internal("corrupt outbox index key"))?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[start..]);
    Ok(u64::from_be_bytes(buf))
}

const IDX_NULL: u8 = 0x01;
const IDX_FALSE: u8 = 0x02;
const IDX_TRUE: u8 = 0x03;
const IDX_NUMBER: u8 = 0x04;
const IDX_STRING: u8 = 0x05;

/// Order-preserving, self-delimiting encoding of an indexable value (null < false < true <
/// numbers < strings). Objects and arrays cannot be indexed.
pub fn index_value(value: &Value) -> std::result::Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    match value {
        Value::Null => out.push(IDX_NULL),
        Value::Bool(false) => out.push(IDX_FALSE),
        Value::Bool(true) => out.push(IDX_TRUE),
        Value::Number(n) => {
            let f = n.as_f64().ok_or("a number that does not fit in f64")?;
            out.push(IDX_NUMBER);
            out.extend_from_slice(&ordered_f64(f));
        }
        Value::String(s) => {
            out.push(IDX_STRING);
            escape_into(s.as_bytes(), &mut out);
        }
        other => return Err(describe(other)),
    }
    Ok(out)
}

/// Big-endian bytes of `f` whose byte order matches numeric order.
fn ordered_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 and 0.0 index alike
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_encoding_orders_types_and_numbers() {
        let values = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e9),
            json!(-2),
            json!(0),
            json!(0.5),
            json!(3),
            json!(1e12),
            json!(""),
            json!("a"),
            json!("b"),
        ];
        let encoded: Vec<_> = values.iter().map(|v| index_value(v).unwrap()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        assert!(index_value(&json!({"a": 1})).is_err());
        assert!(index_value(&json!([1])).is_err());
    }
}
