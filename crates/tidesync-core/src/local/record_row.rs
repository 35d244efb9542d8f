//! How a record row is stored (layout v4): the record's JSON, after a header that lists the
//! outbox entries that may be queued for the record.
//!
//! ```text
//! {…}                                   no header: the record's JSON (every row before v4)
//! 0x01 ‖ n (u32 BE) ‖ n × seq (u64 BE) ‖ {…}   a header, then the record's JSON
//! ```
//!
//! A record's JSON always starts with `{`, so a row without a header is told apart by its
//! first byte, and a v3 row needs no rewrite. A record deleted locally whose delete (or an
//! earlier entry) is still queued has no record row; its header is kept alone in the table's
//! deleted-queue keyspace (`d/<table>`, [`super::layout::deleted`]), in the same form without
//! the JSON.
//!
//! **The header is a superset.** Every entry queued for a record is listed in the header of
//! its row (or of its `d/` row when it has none): an entry is added by the transaction that
//! queues it. An entry that leaves the queue (acknowledged, settled, discarded) is not taken
//! out of the header then: sequence numbers are never issued twice, so a listed number with no
//! entry is simply skipped by readers, and the next write of the row drops it. So an
//! acknowledgement does not rewrite the record row, and a local write commits two rows (the
//! record and its entry) where layout v3 committed three (`o/by_record`).

use crate::error::{Error, Result};

/// First byte of a row that has a header (a record's JSON starts with `{`).
const TAG_HEADER: u8 = 0x01;
/// Tag and count.
const HEADER_FIXED: usize = 1 + 4;

/// The sequence numbers listed in `row`'s header, in the order they were queued (ascending).
pub(super) fn seqs(row: &[u8]) -> Result<Vec<u64>> {
    let (seqs, _) = split(row)?;
    Ok(seqs.collect())
}

/// The record's JSON in `row` (the row after its header, if it has one).
pub(super) fn json(row: &[u8]) -> Result<&[u8]> {
    Ok(split(row)?.1)
}

/// `row`'s listed sequence numbers and the record's JSON (empty in a `d/` row).
pub(super) fn split(row: &[u8]) -> Result<(impl Iterator<Item = u64> + '_, &[u8])> {
    let (count, listed, json) = match row.first() {
        Some(&TAG_HEADER) => {
            let count = row
                .get(1..HEADER_FIXED)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(corrupt)?;
            let end = count
                .checked_mul(8)
                .and_then(|n| n.checked_add(HEADER_FIXED))
                .filter(|end| *end <= row.len())
                .ok_or_else(corrupt)?;
            (count, &row[HEADER_FIXED..end], &row[end..])
        }
        _ => (0, &row[..0], row),
    };
    let seqs = (0..count).map(move |i| {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&listed[i * 8..i * 8 + 8]);
        u64::from_be_bytes(buf)
    });
    Ok((seqs, json))
}

/// A record row: `json` after a header listing `seqs` (none: the JSON alone).
pub(super) fn encode(seqs: &[u64], json: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(header_len(seqs) + json.len());
    write_header(seqs, &mut row);
    row.extend_from_slice(json);
    row
}

/// The bytes a header listing `seqs` takes (0 for none).
pub(super) fn header_len(seqs: &[u64]) -> usize {
    if seqs.is_empty() {
        0
    } else {
        HEADER_FIXED + 8 * seqs.len()
    }
}

/// Appends the header listing `seqs` to `out` (nothing for none).
pub(super) fn write_header(seqs: &[u64], out: &mut Vec<u8>) {
    if seqs.is_empty() {
        return;
    }
    out.push(TAG_HEADER);
    out.extend_from_slice(&(seqs.len() as u32).to_be_bytes());
    for seq in seqs {
        out.extend_from_slice(&seq.to_be_bytes());
    }
}

fn corrupt() -> Error {
    Error::internal("corrupt record row header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_a_header_is_its_json() {
        let row = br#"{"id":"a"}"#;
        assert_eq!(json(row).unwrap(), row);
        assert!(seqs(row).unwrap().is_empty());
        assert_eq!(encode(&[], row), row.to_vec());
    }

    #[test]
    fn a_header_round_trips_and_keeps_the_json_intact() {
        let row = encode(&[3, 9, u64::MAX], br#"{"id":"a"}"#);
        assert_eq!(row.len(), header_len(&[3, 9, u64::MAX]) + 10);
        assert_eq!(seqs(&row).unwrap(), vec![3, 9, u64::MAX]);
        assert_eq!(json(&row).unwrap(), br#"{"id":"a"}"#);
        let alone = encode(&[5], b"");
        assert_eq!(seqs(&alone).unwrap(), vec![5]);
        assert!(json(&alone).unwrap().is_empty());
    }

    #[test]
    fn a_cut_header_is_an_error_not_a_panic() {
        let row = encode(&[3, 9], b"{}");
        for cut in 1..HEADER_FIXED + 16 {
            assert!(split(&row[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = vec![TAG_HEADER];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(split(&huge).is_err());
    }
}
