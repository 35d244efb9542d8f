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
//! flags                      u8: in flight, deleted remotely, has record, last error, dead,
//!                            record is the record row
//! table, idempotency key     u32 length ‖ UTF-8
//! key                        `Key::encode` (self-delimiting)
//! changed                    u32 count, then u32 length ‖ UTF-8 each
//! last error                 u32 length ‖ UTF-8, if flagged
//! dead-letter info           u32 length ‖ JSON, if flagged
//! record                     JSON, to the end, if flagged (and not in the record row)
//! ```
//!
//! **Record in the row (layout v3).** A local write stores the record's row and queues an entry
//! carrying the same record: the entry then says "the record is the record row, as it is"
//! (a flag, no bytes), so the store keeps one copy while the entry waits. The rule that keeps
//! it true is the one that keeps a base marker true (`base_row`): nothing changes a record row
//! while an entry points at it without first writing the old record into the entry
//! (`Records::write_row` does it through `Outbox::keep_entries_true`). Changes to an entry's
//! state (in flight, retry, dead letter) rewrite its header and keep its body as it is.

use crate::error::{Error, Result};
use crate::outbox::{DeadLetterInfo, Op, OutboxEntry};
use crate::record::{Key, Record};

const TAG_BINARY: u8 = 0x02;

const IN_FLIGHT: u8 = 1;
const DELETED_REMOTELY: u8 = 1 << 1;
const HAS_RECORD: u8 = 1 << 2;
const HAS_LAST_ERROR: u8 = 1 << 3;
const IS_DEAD: u8 = 1 << 4;
const RECORD_IN_ROW: u8 = 1 << 5;

/// Where the flags byte sits: after the tag, four u64, two u32 and the operation.
const FLAGS_AT: usize = 1 + 4 * 8 + 2 * 4 + 1;

/// What an encoded entry carries as its record.
#[derive(Debug, Clone, Copy)]
pub(super) enum EntryBody<'a> {
    /// Serialize `entry.record` into the entry.
    Encode,
    /// Nothing: the entry's record is the record row as it is now (see the module doc);
    /// `entry.record` may then be `None`.
    InRow,
    /// The body of these stored bytes of the same entry, whatever form it has: a rewrite of
    /// the entry's state that leaves its record as it is.
    KeepFrom(&'a [u8]),
}

/// Where a decoded entry's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordAt<'a> {
    /// In the decoded entry already (or it has none).
    Decoded,
    /// In these JSON bytes, not decoded yet.
    Json(&'a [u8]),
    /// In the record row of the entry's table and key.
    InRow,
}

/// Encodes `entry` in the binary form, its record inline.
#[cfg(test)]
pub(super) fn encode_entry(entry: &OutboxEntry) -> Result<Vec<u8>> {
    encode_entry_body(entry, EntryBody::Encode)
}

/// Encodes `entry` in the binary form with `body` as its record (see [`EntryBody`]).
pub(super) fn encode_entry_body(entry: &OutboxEntry, body: EntryBody<'_>) -> Result<Vec<u8>> {
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        Error::internal(format!("cannot encode the {what} of an outbox entry: {e}"))
            .table(entry.table.clone())
            .key(&entry.key)
    };
    // A stored body is kept as it is only from an entry of the binary form.
    let kept = match body {
        EntryBody::KeepFrom(stored) => stored_body(stored)?,
        _ => None,
    };
    let body = match (body, kept) {
        (EntryBody::KeepFrom(_), None) => EntryBody::Encode,
        (body, _) => body,
    };
    let record_flags = match (&entry.record, body, kept) {
        (_, EntryBody::KeepFrom(_), Some((flags, _))) => flags,
        // The caller says the record is in the row: whether `entry.record` holds a copy of it
        // or not (a new entry is built without one).
        (_, EntryBody::InRow, _) => HAS_RECORD | RECORD_IN_ROW,
        (None, _, _) => 0,
        (Some(_), _, _) => HAS_RECORD,
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
    let mut flags = record_flags;
    for (set, flag) in [
        (entry.in_flight, IN_FLIGHT),
        (entry.deleted_remotely, DELETED_REMOTELY),
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
    match (body, kept, &entry.record) {
        (EntryBody::KeepFrom(_), Some((_, bytes)), _) => out.extend_from_slice(bytes),
        (_, _, None) | (EntryBody::InRow, _, _) => {}
        (_, _, Some(record)) => {
            serde_json::to_writer(&mut out, record).map_err(|e| cannot("record", &e))?
        }
    }
    Ok(out)
}

/// The record flags and record bytes of a stored entry of the binary form (`None`: layout
/// v1's JSON form, whose record cannot be kept apart from the rest).
fn stored_body(stored: &[u8]) -> Result<Option<(u8, &[u8])>> {
    if stored.first() != Some(&TAG_BINARY) {
        return Ok(None);
    }
    let (entry, at) = decode_binary_parts(&stored[1..])?;
    let flags = stored[FLAGS_AT] & (HAS_RECORD | RECORD_IN_ROW);
    let bytes = match at {
        RecordAt::Json(bytes) => bytes,
        RecordAt::Decoded | RecordAt::InRow => &[],
    };
    debug_assert!(entry.record.is_none());
    Ok(Some((flags, bytes)))
}

/// Whether stored entry bytes point at their record row instead of carrying the record.
pub(super) fn record_in_row(stored: &[u8]) -> bool {
    stored.first() == Some(&TAG_BINARY)
        && stored
            .get(FLAGS_AT)
            .is_some_and(|flags| flags & RECORD_IN_ROW != 0)
}

/// Stored entry bytes that pointed at their record row, made to carry `record_json` (the
/// row's bytes before it changes) instead.
pub(super) fn with_record_inline(stored: &[u8], record_json: &[u8]) -> Vec<u8> {
    debug_assert!(record_in_row(stored));
    let mut out = Vec::with_capacity(stored.len() + record_json.len());
    out.extend_from_slice(stored);
    out[FLAGS_AT] &= !RECORD_IN_ROW;
    // The record comes last, so it goes at the end.
    out.extend_from_slice(record_json);
    out
}

/// Decodes an entry that carries its record (tests, and entries known not to point at
/// their row); an entry whose record is in its row is an error here.
#[cfg(test)]
pub(super) fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry> {
    let (mut entry, at) = decode_parts(bytes)?;
    match at {
        RecordAt::Decoded => {}
        RecordAt::Json(json) => entry.record = Some(decode_record_json(json)?),
        RecordAt::InRow => return Err(corrupt("the record is in its row")),
    }
    Ok(entry)
}

/// Whether stored entry bytes are an entry of `table`, read without decoding the rest (a
/// table's queue is listed from the outbox in sequence order, layout v4).
pub(super) fn entry_is_of_table(bytes: &[u8], table: &str) -> Result<bool> {
    Ok(*entry_table(bytes)? == *table.as_bytes())
}

/// The table of stored entry bytes (UTF-8), read without decoding the rest.
pub(super) fn entry_table(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if bytes.first() != Some(&TAG_BINARY) {
        return Ok(decode_parts(bytes)?.0.table.into_bytes().into());
    }
    let rest = bytes
        .get(FLAGS_AT + 1..)
        .ok_or_else(|| corrupt("truncated"))?;
    Ok(Reader(rest).bytes()?.into())
}

/// Decodes an entry in either form (binary, or layout v1's JSON) without decoding its record:
/// says where the record is instead.
pub(super) fn decode_parts(bytes: &[u8]) -> Result<(OutboxEntry, RecordAt<'_>)> {
    match bytes.first() {
        Some(&TAG_BINARY) => decode_binary_parts(&bytes[1..]),
        _ => serde_json::from_slice(bytes)
            .map(|entry| (entry, RecordAt::Decoded))
            .map_err(|e| Error::internal(format!("corrupt outbox entry in store: {e}"))),
    }
}

/// Decodes an entry's inline record.
pub(super) fn decode_record_json(json: &[u8]) -> Result<Record> {
    serde_json::from_slice::<Record>(json).map_err(|e| corrupt(&format!("record: {e}")))
}

fn decode_binary_parts(bytes: &[u8]) -> Result<(OutboxEntry, RecordAt<'_>)> {
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
    let at = match (flags & HAS_RECORD != 0, flags & RECORD_IN_ROW != 0) {
        (true, true) if r.0.is_empty() => RecordAt::InRow,
        (true, false) if !r.0.is_empty() => RecordAt::Json(r.0),
        (false, false) if r.0.is_empty() => RecordAt::Decoded,
        (false, false) => return Err(corrupt("bytes after the last field")),
        (false, true) => return Err(corrupt("a record in its row flagged without a record")),
        (true, true) => return Err(corrupt("bytes after a record kept in its row")),
        (true, false) => return Err(corrupt("record: no bytes")),
    };
    let entry = OutboxEntry {
        seq,
        table,
        key,
        op,
        record: None,
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
    };
    Ok((entry, at))
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

    #[test]
    fn an_entry_can_point_at_its_record_row_and_be_given_the_record_later() {
        let full = entry();
        let json = serde_json::to_vec(full.record.as_ref().unwrap()).unwrap();
        let in_row = encode_entry_body(&full, EntryBody::InRow).unwrap();
        assert!(record_in_row(&in_row));
        let (header, at) = decode_parts(&in_row).unwrap();
        assert_eq!(at, RecordAt::InRow);
        assert_eq!(
            header,
            OutboxEntry {
                record: None,
                ..full.clone()
            }
        );
        assert!(decode_entry(&in_row).is_err(), "needs the row");
        let inline = with_record_inline(&in_row, &json);
        assert!(!record_in_row(&inline));
        assert_eq!(decode_entry(&inline).unwrap(), full);
        assert_eq!(
            inline,
            encode_entry(&full).unwrap(),
            "the same bytes either way"
        );
    }

    #[test]
    fn a_state_change_keeps_the_stored_body_as_it_is() {
        let full = entry();
        let retried = OutboxEntry {
            attempts: 9,
            in_flight: false,
            last_error: None,
            dead: None,
            ..full.clone()
        };
        let in_row = encode_entry_body(&full, EntryBody::InRow).unwrap();
        let kept = encode_entry_body(&retried, EntryBody::KeepFrom(&in_row)).unwrap();
        assert!(record_in_row(&kept));
        assert_eq!(decode_parts(&kept).unwrap().0.attempts, 9);
        let inline = encode_entry(&full).unwrap();
        let kept = encode_entry_body(&retried, EntryBody::KeepFrom(&inline)).unwrap();
        assert_eq!(decode_entry(&kept).unwrap(), retried);
        // Layout v1's JSON form has no separate body: the record is encoded.
        let v1 = serde_json::to_vec(&full).unwrap();
        let kept = encode_entry_body(&retried, EntryBody::KeepFrom(&v1)).unwrap();
        assert_eq!(decode_entry(&kept).unwrap(), retried);
    }

    #[test]
    fn contradictory_record_flags_are_errors() {
        let full = entry();
        let mut in_row = encode_entry_body(&full, EntryBody::InRow).unwrap();
        in_row.push(b'{');
        assert!(
            decode_parts(&in_row).is_err(),
            "bytes after a record in its row"
        );
        let mut flagless = encode_entry_body(&full, EntryBody::InRow).unwrap();
        flagless[FLAGS_AT] &= !HAS_RECORD;
        assert!(decode_parts(&flagless).is_err());
    }
}
