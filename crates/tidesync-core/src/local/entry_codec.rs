//! How an outbox entry is stored: a compact binary header followed by the record's JSON.
//!
//! Layout v2 writes entries in this form; entries written by layout v1 are JSON objects and
//! are still read (their first byte is `{`), so a store's entries change form one by one as
//! they are rewritten, with no upgrade pass. Every push reads an entry several times (ready
//! scan, in-flight mark, acknowledgement), so its scalar fields are read without a JSON parser:
//! only the record (what the transport sends) is JSON.
//!
//! ```text
//! 0x02                       format tag (a JSON entry starts with `{`)
//! seq, hlc, created_at_ms, next_attempt_at_ms   u64 big-endian each
//! attempts, failures         u32 big-endian each
//! op                         u8: 0 create, 1 update, 2 delete
//! flags                      u8: in flight, deleted remotely, has record, last error, dead
//! table, idempotency key     u32 length ‖ UTF-8
//! key                        `Key::encode` (self-delimiting)
//! changed                    u32 count, then u32 length ‖ UTF-8 each
//! last error                 u32 length ‖ UTF-8, if flagged
//! dead-letter info           u32 length ‖ JSON, if flagged
//! record                     JSON, to the end, if flagged
//! ```

use crate::error::{Error, Result};
use crate::outbox::{DeadLetterInfo, Op, OutboxEntry};
use crate::record::{Key, Record};

const TAG_BINARY: u8 = 0x02;

const IN_FLIGHT: u8 = 1;
const DELETED_REMOTELY: u8 = 1 << 1;
const HAS_RECORD: u8 = 1 << 2;
const HAS_LAST_ERROR: u8 = 1 << 3;
const IS_DEAD: u8 = 1 << 4;

/// Encodes `entry` in the binary form.
#[cfg(test)]
pub(super) fn encode_entry(entry: &OutboxEntry) -> Result<Vec<u8>> {
    encode_entry_with_record(entry, None)
}

/// [`encode_entry`], with the record's JSON already encoded (by the record row it was written
/// to): a local write then serializes the record once, not twice. `record_json` must be
/// `serde_json`'s encoding of `entry.record`.
pub(super) fn encode_entry_with_record(
    entry: &OutboxEntry,
    record_json: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        Error::internal(format!("cannot encode the {what} of an outbox entry: {e}"))
            .table(entry.table.clone())
            .key(&entry.key)
    };
    let mut out = Vec::with_capacity(128 + entry.table.len());
    out.push(TAG_BINARY);
    for n in [
        entry.seq,
        entry.hlc,
        entry.created_at_ms,
        entry.next_attempt_at_ms,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&entry.attempts.to_be_bytes());
    out.extend_from_slice(&entry.failures.to_be_bytes());
    out.push(match entry.op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
    });
    let mut flags = 0;
    for (set, flag) in [
        (entry.in_flight, IN_FLIGHT),
        (entry.deleted_remotely, DELETED_REMOTELY),
        (entry.record.is_some(), HAS_RECORD),
        (entry.last_error.is_some(), HAS_LAST_ERROR),
        (entry.dead.is_some(), IS_DEAD),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    put_bytes(&mut out, entry.table.as_bytes());
    put_bytes(&mut out, entry.idempotency_key.as_bytes());
    entry.key.encode_into(&mut out);
    put_len(&mut out, entry.changed.len());
    for field in &entry.changed {
        put_bytes(&mut out, field.as_bytes());
    }
    if let Some(error) = &entry.last_error {
        put_bytes(&mut out, error.as_bytes());
    }
    if let Some(dead) = &entry.dead {
        let json = serde_json::to_vec(dead).map_err(|e| cannot("dead-letter reason", &e))?;
        put_bytes(&mut out, &json);
    }
    if let Some(record) = &entry.record {
        match record_json {
            Some(json) => {
                debug_assert_eq!(
                    serde_json::to_vec(record).ok().as_deref(),
                    Some(json),
                    "the record bytes handed to the entry are the entry's record"
                );
                out.extend_from_slice(json);
            }
            None => serde_json::to_writer(&mut out, record).map_err(|e| cannot("record", &e))?,
        }
    }
    Ok(out)
}

/// Decodes an entry in either form (binary, or layout v1's JSON).
pub(super) fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry> {
    match bytes.first() {
        Some(&TAG_BINARY) => decode_binary(&bytes[1..]),
        _ => serde_json::from_slice(bytes)
            .map_err(|e| Error::internal(format!("corrupt outbox entry in store: {e}"))),
    }
}

fn decode_binary(bytes: &[u8]) -> Result<OutboxEntry> {
    let mut r = Reader(bytes);
    let seq = r.u64()?;
    let hlc = r.u64()?;
    let created_at_ms = r.u64()?;
    let next_attempt_at_ms = r.u64()?;
    let attempts = r.u32()?;
    let failures = r.u32()?;
    let op = match r.u8()? {
        0 => Op::Create,
        1 => Op::Update,
        2 => Op::Delete,
        other => return Err(corrupt(&format!("unknown operation {other}"))),
    };
    let flags = r.u8()?;
    let table = r.string()?;
    let idempotency_key = r.string()?;
    let (key, rest) = Key::decode(r.0)?;
    r.0 = rest;
    let changed = (0..r.u32()?)
        .map(|_| r.string())
        .collect::<Result<Vec<_>>>()?;
    let last_error = if flags & HAS_LAST_ERROR != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let dead = if flags & IS_DEAD != 0 {
        let json = r.bytes()?;
        Some(
            serde_json::from_slice::<DeadLetterInfo>(json)
                .map_err(|e| corrupt(&format!("dead-letter reason: {e}")))?,
        )
    } else {
        None
    };
    let record = if flags & HAS_RECORD != 0 {
        Some(serde_json::from_slice::<Record>(r.0).map_err(|e| corrupt(&format!("record: {e}")))?)
    } else if !r.0.is_empty() {
        return Err(corrupt("bytes after the last field"));
    } else {
        None
    };
    Ok(OutboxEntry {
        seq,
        table,
        key,
        op,
        record,
        changed,
        idempotency_key,
        hlc,
        created_at_ms,
        attempts,
        failures,
        next_attempt_at_ms,
        last_error,
        in_flight: flags & IN_FLIGHT != 0,
        dead,
        deleted_remotely: flags & DELETED_REMOTELY != 0,
    })
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt outbox entry in store: {what}"))
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths are bounded by MAX_RECORD_BYTES and the like, far below u32::MAX.
    out.extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A cursor over the bytes of an entry; every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(buf))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("text that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry() -> OutboxEntry {
        OutboxEntry {
            seq: 42,
            table: "posts".into(),
            key: Key::Str("p-1".into()),
            op: Op::Update,
            record: Some(
                serde_json::from_value(json!({"id": "p-1", "title": "ü \"quoted\"", "n": 1.5}))
                    .unwrap(),
            ),
            changed: vec!["title".into(), "n".into()],
            idempotency_key: "01a24f8a-7832-7224-8923-80d729e512eb".into(),
            hlc: 117_743_996_405_743_617,
            created_at_ms: 1_796_630_804_530,
            attempts: 3,
            failures: 2,
            next_attempt_at_ms: 1_796_630_900_000,
            last_error: Some("503 Service Unavailable".into()),
            in_flight: true,
            dead: Some(DeadLetterInfo {
                kind: "permanent".into(),
                error: "422".into(),
                status: Some(422),
                response_excerpt: None,
                at_ms: 5,
            }),
            deleted_remotely: true,
        }
    }

    #[test]
    fn every_field_round_trips_in_the_binary_form() {
        let full = entry();
        assert_eq!(decode_entry(&encode_entry(&full).unwrap()).unwrap(), full);
        let bare = OutboxEntry {
            key: Key::Int(-7),
            op: Op::Delete,
            record: None,
            changed: vec![],
            last_error: None,
            in_flight: false,
            dead: None,
            deleted_remotely: false,
            ..entry()
        };
        assert_eq!(decode_entry(&encode_entry(&bare).unwrap()).unwrap(), bare);
    }

    #[test]
    fn layout_v1_json_entries_are_still_read() {
        let full = entry();
        let json = serde_json::to_vec(&full).unwrap();
        assert_eq!(decode_entry(&json).unwrap(), full);
    }

    #[test]
    fn the_binary_form_is_smaller_than_json() {
        let full = entry();
        let binary = encode_entry(&full).unwrap().len();
        let json = serde_json::to_vec(&full).unwrap().len();
        assert!(binary < json, "binary {binary} bytes, JSON {json}");
    }

    #[test]
    fn truncated_or_garbled_entries_are_errors_not_panics() {
        let bytes = encode_entry(&entry()).unwrap();
        for cut in 1..bytes.len() {
            // The record is flagged and comes last, so every strict prefix is incomplete.
            assert!(
                decode_entry(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut garbled = bytes.clone();
        garbled[1 + 8 * 4 + 4 * 2] = 9; // the operation byte
        assert!(decode_entry(&garbled).is_err());
    }
}
