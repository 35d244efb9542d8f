//! Shared steps of the sync writes: checking and encoding a record write with its index
//! entries, rebasing a pending entry onto a newer version, the per-record queue index.

use crate::error::Result;
use crate::outbox::{Op, OutboxEntry};
use crate::record::{Key, Record};

use super::layout;

/// `(keyspace, old entry, new entry)` of an index whose entry changes.
pub(super) type IndexChange = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// The writes of [`Records::write_row`], computed without writing.
pub(super) struct PreparedRow {
    pub(super) index: Vec<IndexChange>,
    /// The encoded new record (`None`: delete).
    pub(super) record: Option<Vec<u8>>,
}

/// Checks and encodes a record write (index entries, size limit) without touching the store.
pub(super) fn prepare_row(
    spec: &crate::TableSpec,
    key: &Key,
    old: Option<&Record>,
    new: Option<&Record>,
) -> Result<PreparedRow> {
    let mut index = Vec::new();
    for field in &spec.indexes {
        let old_entry = old
            .map(|r| super::index_entry(spec, key, r, field))
            .transpose()?;
        let new_entry = new
            .map(|r| super::index_entry(spec, key, r, field))
            .transpose()?;
        if old_entry != new_entry {
            index.push((layout::index(&spec.name, field), old_entry, new_entry));
        }
    }
    let record = new
        .map(|r| super::encode_record(spec, key, r))
        .transpose()?;
    Ok(PreparedRow { index, record })
}

/// The operation a change of a record is: `before` and `after` say whether it exists.
pub(super) fn change_op(before: bool, after: bool) -> Op {
    match (before, after) {
        (false, _) => Op::Create,
        (true, true) => Op::Update,
        (true, false) => Op::Delete,
    }
}

/// Rebases a pending entry's record onto `onto`, a newer version its edit now applies to,
/// and advances `onto` by that edit: an update keeps its changed fields (a route that sends
/// whole records must not send older values of the other fields), a create replaces it all.
pub(super) fn rebase_entry(onto: &mut Record, entry: &mut OutboxEntry) {
    match (entry.op, entry.record.as_ref()) {
        (Op::Update, Some(record)) => {
            overlay_fields(onto, record, &entry.changed);
            entry.record = Some(onto.clone());
        }
        (Op::Create, Some(record)) => *onto = record.clone(),
        _ => {}
    }
}

/// Gives `onto` the values `from` has for `fields` (a field `from` lacks is removed).
pub(super) fn overlay_fields<'f>(
    onto: &mut Record,
    from: &Record,
    fields: impl IntoIterator<Item = &'f String>,
) {
    for field in fields {
        match from.get(field) {
            Some(value) => onto.insert(field.clone(), value.clone()),
            None => onto.remove(field),
        };
    }
}
