//! The outbox queue ([`Outbox`]): the application's changes waiting to reach the server, one
//! entry per unsent change of a record, pushed in order.
//!
//! It owns the outbox keyspaces (entries, the per-record queue index, the in-flight, backoff
//! and dead-letter indexes, the sequence floor and the settlements). This file holds enqueue
//! with coalescing, the listings, the ready heads a pusher may send, and the state changes the
//! pusher makes (in flight, retry later, acknowledged, dead-lettered); `entry_state.rs` says
//! where each entry stands ([`Outbox::entry_state`], [`Outbox::summary`]); `settled.rs` keeps
//! the trace of entries that left the queue ([`Outbox::change_state`]).
//!
//! The rules it guards: a record's entries are sent one at a time, in order (only a head is
//! ever offered, and a sealed entry in flight is never folded into); a sequence number is never
//! issued twice (receipts name entries by it); and every entry that leaves the queue records
//! how it left, in the transaction that removes it.
//!
//! Dead letters are on this type, not on [`Parked`](super::Parked): a dead letter is an
//! outbox entry that keeps its place in its record's queue (the record's later entries wait
//! behind it), and retrying, editing or discarding it rewrites or removes that entry and its
//! queue index rows, records its settlement and raises the sequence floor, all of which are
//! this type's own invariants. [`Parked`](super::Parked) holds what never was an entry
//! (conflicts, quarantined pulled items).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::outbox::{Coalesced, DeadLetterInfo, LocalChange, Op, OutboxEntry, coalesce};
use crate::record::{Key, Record};
use crate::spec::TableSpec;
use crate::store::{ReadTxn, WriteTxn};

use super::layout::{self, seq_bytes};
pub(super) use super::record_queue::RecordQueue;
use super::record_row;
use super::settled::Settlement;
use super::{LocalDb, now_ms, read_u64};

/// The outbox queue of a [`LocalDb`]: enqueue, listings, ready heads, in-flight and backoff
/// state, dead letters, entry states and settlements. Borrowed from [`LocalDb::outbox`]; its
/// methods act on the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    pub(super) db: &'a LocalDb,
}

/// The `last_error` of an entry a new leader holds back because the previous leader left it
/// in flight (see [`Outbox::reset_in_flight_held`]).
pub const TAKEOVER_HOLD_NOTE: &str = "held after a leader change until the previous leader's \
                                      request for it can no longer reach the server";

/// Cheap figures about one table's outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Entries waiting to be pushed (not dead-lettered).
    pub depth: u64,
    /// When the oldest entry of the table was enqueued (wall-clock ms), if any.
    pub oldest_created_at_ms: Option<u64>,
}

impl Outbox<'_> {
    /// Queues `change` for the record, folding it into the record's unsent tail entry.
    /// Returns the sequence number of the entry that now carries the change (`None` when it
    /// cancelled the unsent tail: a create, then a delete).
    pub(super) fn enqueue(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        change: &LocalChange,
        hlc: u64,
        written: Option<WrittenRow<'_>>,
    ) -> Result<Option<u64>> {
        let mut read;
        let (record_json, queue, mut batch) = match written {
            Some(written) => (written.json, written.queue, Some(written.batch)),
            None => {
                read = self.record_queue(&*txn, &spec.name, key)?;
                (None, &mut read, None)
            }
        };
        // A local write lists a new entry in the record row it writes after this; any other
        // caller lists it here (layout v4, `record_queue`).
        let lists_itself = batch.is_none();
        // The bytes stand for the change's record, which the entry carries unless it deletes.
        let record_json = record_json.filter(|_| change.op != Op::Delete);
        let tail = queue
            .rows
            .last()
            .map(|(_, bytes)| self.decode(&*txn, bytes))
            .transpose()?;
        // A record's stamps only grow, even if the stamp last persisted was lost to a crash
        // and the wall clock went back (the clock is not persisted by local writes).
        let hlc = match &tail {
            Some(tail) if tail.hlc >= hlc => {
                self.db.clock.observe(crate::hlc::Stamp(tail.hlc));
                self.db.clock.now().0
            }
            _ => hlc,
        };
        match coalesce(tail.as_ref(), change, hlc) {
            Coalesced::Replace(entry) => {
                let body = self.body_in_row(entry.record.as_ref(), record_json);
                match &tail {
                    Some(tail) => {
                        self.update_entry_with(txn, tail, &entry, body)?;
                    }
                    None => {
                        let stored = self.insert_entry_with(txn, &entry, body)?;
                        queue.push(entry.seq, stored);
                        if lists_itself {
                            self.list_in_queue(txn, &spec.name, key, entry.seq)?;
                        }
                    }
                }
                Ok(Some(entry.seq))
            }
            Coalesced::RemoveTail => {
                if let Some(tail) = tail {
                    self.remove_entry(txn, &tail)?;
                    self.record_settlement(txn, &tail, Settlement::Superseded)?;
                    queue.remove(tail.seq);
                }
                Ok(None)
            }
            Coalesced::Append => {
                let seq = match batch.as_ref().and_then(|batch| batch.next_seq()) {
                    Some(seq) => seq,
                    None => self.next_seq(&*txn)?,
                };
                if let Some(batch) = batch.as_mut() {
                    batch.issued(seq);
                }
                let body = self.body_in_row(change.record.as_ref(), record_json);
                let entry = OutboxEntry {
                    seq,
                    table: spec.name.clone(),
                    key: key.clone(),
                    op: change.op,
                    // An entry pointing at its row is written without its record: no copy.
                    record: match body {
                        EntryBody::InRow => None,
                        _ => change.record.clone(),
                    },
                    changed: change.changed.clone(),
                    idempotency_key: uuid::Uuid::now_v7()
                        .hyphenated()
                        .encode_lower(&mut uuid::Uuid::encode_buffer())
                        .to_owned(),
                    hlc,
                    created_at_ms: now_ms(),
                    attempts: 0,
                    failures: 0,
                    next_attempt_at_ms: 0,
                    last_error: None,
                    in_flight: false,
                    dead: None,
                    deleted_remotely: false,
                };
                let stored = self.insert_entry_with(txn, &entry, body)?;
                queue.push(seq, stored);
                if lists_itself {
                    self.list_in_queue(txn, &spec.name, key, seq)?;
                }
                Ok(Some(seq))
            }
        }
    }

    /// The next sequence number: one past the last entry in the outbox, and never below the
    /// floor that removals raise ([`Outbox::raise_seq_floor`]), so a number is never issued
    /// twice. Read, not written: a local write keeps the counter off its commit (layout v2).
    /// The last number this process handed out is remembered (`LocalDb::seq_hint`), so the
    /// read looks only at entries from there on: normally none, and no entry is copied. Other
    /// processes' entries (redb's multi-process mode) are past the hint, so the read still
    /// sees them; a number whose transaction rolled back is found free and handed out again.
    fn next_seq(&self, txn: &dyn ReadTxn) -> Result<u64> {
        let start = self
            .db
            .seq_hint
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        let after_last = match txn
            .range(
                layout::OUTBOX,
                std::ops::Bound::Included(&seq_bytes(start)[..]),
                std::ops::Bound::Unbounded,
                Some(1),
                true,
            )?
            .first()
        {
            Some((k, _)) => layout::seq_from_suffix(k)? + 1,
            None if start > 1 => start,
            // No hint yet: the outbox may hold anything below.
            None => 1,
        };
        let floor = match txn.get(layout::META, layout::META_NEXT_SEQ)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        let next = after_last.max(floor);
        self.db
            .seq_hint
            .fetch_max(next, std::sync::atomic::Ordering::Relaxed);
        Ok(next)
    }

    /// Remembers that numbers below `next` were issued: a removal of the last entry must not
    /// let the next write reuse its number (receipts name entries by it).
    fn raise_seq_floor(&self, txn: &mut dyn WriteTxn, next: u64) -> Result<()> {
        let floor = match txn.get(layout::META, layout::META_NEXT_SEQ)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        if next > floor {
            txn.put(layout::META, layout::META_NEXT_SEQ, &next.to_be_bytes())?;
        }
        Ok(())
    }

    /// The body of an entry a local write queues: "the record row" when the entry carries the
    /// record just written to its row as `record_json` (the store keeps one copy, see
    /// `entry_codec`), else the record itself. The local write puts `record_json` in the
    /// record row after the enqueue, in the same transaction (`Records::write_local`).
    fn body_in_row<'j>(
        &self,
        record: Option<&Record>,
        record_json: Option<&'j [u8]>,
    ) -> EntryBody<'j> {
        match record_json {
            Some(json) if record.is_some() && self.db.entries_point_at_rows => {
                debug_assert_eq!(
                    record.and_then(|r| serde_json::to_vec(r).ok()).as_deref(),
                    Some(json),
                    "the record bytes handed to the entry are the entry's record"
                );
                EntryBody::InRow
            }
            _ => EntryBody::Encode,
        }
    }

    /// Writes an entry's row (a new one has no state index rows: not in flight, not in
    /// backoff) with `body` as its record; returns the bytes stored.
    fn insert_entry_with(
        &self,
        txn: &mut dyn WriteTxn,
        entry: &OutboxEntry,
        body: EntryBody<'_>,
    ) -> Result<Vec<u8>> {
        let bytes = encode_entry_body(entry, body)?;
        txn.put(layout::OUTBOX, &seq_bytes(entry.seq), &bytes)?;
        Ok(bytes)
    }

    /// Rewrites an entry that was `before`, keeping the in-flight and backoff indexes in step.
    /// When its record does not change, only its header is rewritten: the stored record (or
    /// the pointer at the record row) stays as it is.
    fn update_entry(
        &self,
        txn: &mut dyn WriteTxn,
        before: &OutboxEntry,
        after: &OutboxEntry,
    ) -> Result<()> {
        if after.record.is_some()
            && after.record == before.record
            && let Some(stored) = txn.get(layout::OUTBOX, &seq_bytes(after.seq))?
        {
            return self.update_entry_with(txn, before, after, EntryBody::KeepFrom(&stored));
        }
        self.update_entry_with(txn, before, after, EntryBody::Encode)
    }

    /// [`Outbox::update_entry`] with the entry's body given.
    fn update_entry_with(
        &self,
        txn: &mut dyn WriteTxn,
        before: &OutboxEntry,
        after: &OutboxEntry,
        body: EntryBody<'_>,
    ) -> Result<()> {
        self.update_state_with(txn, EntryState::of(before), after, body)
    }

    /// [`Outbox::update_entry_with`] for an entry whose state was `was`.
    fn update_state_with(
        &self,
        txn: &mut dyn WriteTxn,
        was: EntryState,
        after: &OutboxEntry,
        body: EntryBody<'_>,
    ) -> Result<()> {
        self.insert_entry_with(txn, after, body)?;
        let key = seq_bytes(after.seq);
        let is = EntryState::of(after);
        if was.in_flight != is.in_flight {
            if is.in_flight {
                txn.put(layout::IN_FLIGHT, &key, &[])?;
            } else {
                txn.discard(layout::IN_FLIGHT, &key)?;
            }
        }
        if was.backoff_until != is.backoff_until {
            match is.backoff_until {
                Some(at) => txn.put(layout::BACKOFF, &key, &at.to_be_bytes())?,
                None => {
                    txn.discard(layout::BACKOFF, &key)?;
                }
            }
        }
        Ok(())
    }

    fn remove_entry(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        txn.discard(layout::OUTBOX, &seq_bytes(entry.seq))?;
        let state = EntryState::of(entry);
        if state.in_flight {
            txn.discard(layout::IN_FLIGHT, &seq_bytes(entry.seq))?;
        }
        if state.backoff_until.is_some() {
            txn.discard(layout::BACKOFF, &seq_bytes(entry.seq))?;
        }
        // The record row's header keeps listing the entry until the row is written again
        // (`record_row`); only a `d/` row of a deleted record goes with its last entry.
        self.forget_deleted_queue(txn, &entry.table, &entry.key)?;
        if entry.dead.is_some() {
            txn.discard(layout::DEAD, &seq_bytes(entry.seq))?;
        }
        self.raise_seq_floor(txn, entry.seq + 1)?;
        // Removals are the sync path's commits (and a create cancelled by its delete): the
        // clock's last stamp is kept here, off the local write's commit (layout v2).
        self.db.persist_clock(txn)
    }

    /// The outbox entry with sequence number `seq`.
    pub fn entry(&self, txn: &dyn ReadTxn, seq: u64) -> Result<Option<OutboxEntry>> {
        txn.get(layout::OUTBOX, &seq_bytes(seq))?
            .map(|bytes| self.decode(txn, &bytes))
            .transpose()
    }

    /// Decodes stored entry bytes with their record, read from the record row when the entry
    /// points at it.
    pub(super) fn decode(&self, txn: &dyn ReadTxn, bytes: &[u8]) -> Result<OutboxEntry> {
        let (mut entry, at) = decode_parts(bytes)?;
        self.resolve_record(txn, &mut entry, at)?;
        Ok(entry)
    }

    /// Fills in the record of an entry decoded by `decode_parts`.
    fn resolve_record(
        &self,
        txn: &dyn ReadTxn,
        entry: &mut OutboxEntry,
        at: RecordAt<'_>,
    ) -> Result<()> {
        let row = match at {
            RecordAt::InRow => txn.get(&layout::records(&entry.table), &entry.key.encode())?,
            RecordAt::Decoded | RecordAt::Json(_) => None,
        };
        self.resolve_record_with_row(entry, at, row.as_deref())
    }

    /// [`Outbox::resolve_record`] with the record row already read (`None`: there is none).
    fn resolve_record_with_row(
        &self,
        entry: &mut OutboxEntry,
        at: RecordAt<'_>,
        record_row: Option<&[u8]>,
    ) -> Result<()> {
        match at {
            RecordAt::Decoded => {}
            RecordAt::Json(json) => {
                entry.record = Some(
                    decode_record_json(json)
                        .map_err(|e| e.table(entry.table.clone()).key(&entry.key))?,
                );
            }
            RecordAt::InRow => {
                let Some(row) = record_row else {
                    return Err(Error::internal(format!(
                        "corrupt outbox entry #{}: it points at a record row that is missing",
                        entry.seq
                    ))
                    .table(entry.table.clone())
                    .key(&entry.key));
                };
                entry.record = Some(
                    record_row::json(row)
                        .and_then(decode_record_json)
                        .map_err(|e| e.table(entry.table.clone()).key(&entry.key))?,
                );
            }
        }
        Ok(())
    }

    fn stored_entry(&self, txn: &dyn ReadTxn, seq: u64) -> Result<Option<Vec<u8>>> {
        txn.get(layout::OUTBOX, &seq_bytes(seq))
    }

    /// Before `table`'s record row `key` (stored under `key_bytes`) changes to `new_json`
    /// (`None`: deleted): every queued entry of the record that points at the row is given the
    /// row's bytes as they are, so it stays what it was (see `entry_codec`).
    /// `Records::write_row` calls it before it writes the row; `queue`, when given, is the
    /// record's queue read in this transaction, and is kept in step.
    pub(super) fn keep_entries_true(
        &self,
        txn: &mut dyn WriteTxn,
        table: &str,
        key: &Key,
        key_bytes: &[u8],
        new_json: Option<&[u8]>,
        queue: Option<&mut RecordQueue>,
    ) -> Result<()> {
        let mut read;
        let queue = match queue {
            Some(queue) => queue,
            None => {
                read = self.record_queue(&*txn, table, key)?;
                &mut read
            }
        };
        let mut old_row: Option<Option<Vec<u8>>> = None;
        for (seq, stored) in &mut queue.rows {
            if !record_in_row(stored) {
                continue;
            }
            let seq = *seq;
            let old = match &old_row {
                Some(old) => old,
                None => old_row.insert(txn.get(&layout::records(table), key_bytes)?),
            };
            let Some(old) = old else {
                return Err(Error::internal(format!(
                    "corrupt outbox entry #{seq}: it points at a record row that is missing"
                ))
                .table(table)
                .key(key));
            };
            let old = record_row::json(old)?;
            if new_json == Some(old) {
                return Ok(()); // the record does not change
            }
            *stored = with_record_inline(stored, old);
            txn.put(layout::OUTBOX, &seq_bytes(seq), stored)?;
        }
        Ok(())
    }

    fn entry_or_err(&self, txn: &dyn ReadTxn, seq: u64) -> Result<OutboxEntry> {
        self.entry(txn, seq)?.ok_or_else(|| no_entry(seq))
    }

    /// The record's queued entries, oldest first.
    pub fn pending(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Vec<OutboxEntry>> {
        self.queued_seqs(txn, table, key)?
            .into_iter()
            .map(|seq| self.entry_or_err(txn, seq))
            .collect()
    }

    /// Whether `table` has a create that was sent at least once and not acknowledged, and
    /// that the server may have applied (not dead-lettered, or dead-lettered after the server
    /// accepted it, see [`DeadLetterInfo::may_have_been_applied`]): the server may hold its
    /// record already, under a key no answer has told us. Reads the table's queue in order
    /// until it finds one: sent entries sit near its head, so this is short unless the table
    /// holds a long queue of which nothing was sent yet (it is then read whole).
    pub fn has_unacknowledged_create(&self, txn: &dyn ReadTxn, table: &str) -> Result<bool> {
        let mut found = false;
        self.for_each_table_entry(txn, table, |_, bytes| {
            // The header says it all: the record is not needed.
            let (e, _) = decode_parts(bytes)?;
            found = e.op == crate::Op::Create
                && e.attempts > 0
                && e.dead.as_ref().is_none_or(|d| d.may_have_been_applied());
            Ok(!found)
        })?;
        Ok(found)
    }

    /// The sequence numbers of `table`'s entries, in enqueue order (dead letters included),
    /// read from the outbox a page at a time (entries name their table). 8 bytes per entry
    /// are kept, not the entries.
    pub fn table_seqs(&self, txn: &dyn ReadTxn, table: &str) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        self.for_each_table_entry(txn, table, |seq, _| {
            seqs.push(seq);
            Ok(true)
        })?;
        Ok(seqs)
    }

    /// Outbox entries in enqueue order, optionally of one table, at most `limit`.
    pub fn entries(
        &self,
        txn: &dyn ReadTxn,
        table: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        match table {
            None => txn
                .range(
                    layout::OUTBOX,
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Unbounded,
                    Some(limit),
                    false,
                )?
                .iter()
                .map(|(_, v)| self.decode(txn, v))
                .collect(),
            Some(table) => self.entries_after(txn, table, None, limit),
        }
    }

    /// Entries of `table` after sequence number `after` (from its first when `None`), in
    /// enqueue order, at most `limit`: for walking a long queue page by page.
    pub fn entries_after(
        &self,
        txn: &dyn ReadTxn,
        table: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        // The outbox is in enqueue order: the walk starts right after `after`.
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.for_each_table_entry_after(txn, table, after, |_, stored| {
            out.push(self.decode(txn, stored)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Queue depth and oldest entry of `table`: one walk over the outbox for the table's
    /// entries and one read of the dead-letter numbers (no counter is kept on the write path,
    /// layout v2), and one entry read.
    pub fn stats(&self, txn: &dyn ReadTxn, table: &str) -> Result<OutboxStats> {
        let dead: HashSet<Vec<u8>> = dead_keys(txn)?.into_iter().collect();
        let (mut depth, mut oldest) = (0u64, None::<u64>);
        self.for_each_table_entry(txn, table, |seq, _| {
            depth += u64::from(!dead.contains(seq_bytes(seq).as_slice()));
            oldest = Some(oldest.map_or(seq, |o| o.min(seq)));
            Ok(true)
        })?;
        let oldest_created_at_ms = match oldest {
            Some(seq) => {
                let bytes = self.stored_entry(txn, seq)?;
                let bytes = bytes.ok_or_else(|| {
                    Error::new(
                        crate::ErrorKind::NotFound,
                        format!("no outbox entry #{seq}"),
                    )
                })?;
                Some(decode_parts(&bytes)?.0.created_at_ms)
            }
            None => None,
        };
        Ok(OutboxStats {
            depth,
            oldest_created_at_ms,
        })
    }

    /// [`Outbox::stats`] of every table that has entries, in one pass over the outbox (what a
    /// metrics refresh reads: one pass, not one per table). Tables with no entry are absent.
    pub fn stats_by_table(
        &self,
        txn: &dyn ReadTxn,
    ) -> Result<std::collections::BTreeMap<String, OutboxStats>> {
        let dead: HashSet<Vec<u8>> = dead_keys(txn)?.into_iter().collect();
        let mut by_table: std::collections::HashMap<Vec<u8>, OutboxStats> = Default::default();
        self.for_each_outbox_row(txn, |key, stored| {
            let table = super::entry_codec::entry_table(stored)?;
            let live = u64::from(!dead.contains(key));
            match by_table.get_mut(table.as_ref()) {
                Some(stats) => stats.depth += live,
                None => {
                    // The outbox is in enqueue order: a table's first entry is its oldest.
                    let oldest = decode_parts(stored)?.0.created_at_ms;
                    by_table.insert(
                        table.into_owned(),
                        OutboxStats {
                            depth: live,
                            oldest_created_at_ms: Some(oldest),
                        },
                    );
                }
            }
            Ok(true)
        })?;
        by_table
            .into_iter()
            .map(|(table, stats)| {
                let table = String::from_utf8(table)
                    .map_err(|_| Error::internal("corrupt outbox entry: its table is not UTF-8"))?;
                Ok((table, stats))
            })
            .collect()
    }

    /// Queue depth and oldest entry over every table, in a few point reads whatever the
    /// queue's length: the entries' and the dead letters' counts (redb keeps a table's length
    /// in its header) and the first entry. [`Outbox::stats`] counts one table's queue instead.
    pub fn totals(&self, txn: &dyn ReadTxn) -> Result<OutboxStats> {
        let entries = txn.len(layout::OUTBOX)?;
        let dead = txn.len(layout::DEAD)?;
        let first = txn.range(
            layout::OUTBOX,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            Some(1),
            false,
        )?;
        let oldest_created_at_ms = match first.first() {
            Some((_, bytes)) => Some(decode_parts(bytes)?.0.created_at_ms),
            None => None,
        };
        Ok(OutboxStats {
            depth: entries.saturating_sub(dead),
            oldest_created_at_ms,
        })
    }

    /// The entries that may be sent now: for each record, its head entry, if that head is not
    /// in flight, not dead, due at `now_ms`, its table not in `paused_tables`, the record has
    /// no parked conflict, and every record it references has no pending create. At most
    /// `limit`, in enqueue order; records in `busy` (already being pushed) are skipped.
    pub fn ready_heads(
        &self,
        txn: &dyn ReadTxn,
        now_ms: u64,
        limit: usize,
        busy: &HashSet<(String, Key)>,
        paused_tables: &HashSet<String>,
    ) -> Result<Vec<OutboxEntry>> {
        Ok(self
            .scan_ready(txn, now_ms, None, limit, busy, paused_tables)?
            .entries)
    }

    /// Like [`Outbox::ready_heads`], but only among entries after sequence number `after`, so
    /// a pusher draining a long backlog resumes where its last scan stopped instead of
    /// re-reading the head of the queue every time.
    pub fn scan_ready(
        &self,
        txn: &dyn ReadTxn,
        now_ms: u64,
        after: Option<u64>,
        limit: usize,
        busy: &HashSet<(String, Key)>,
        paused_tables: &HashSet<String>,
    ) -> Result<ReadyScan> {
        let mut scan = ReadyScan {
            entries: Vec::new(),
            last_seq: after,
            exhausted: false,
        };
        if limit == 0 {
            return Ok(scan);
        }
        // Read a little more than asked (some rows are not ready), never a huge page.
        let page = limit.saturating_mul(2).clamp(16, 512);
        loop {
            let after_key = scan.last_seq.map(seq_bytes);
            let rows = txn.range(
                layout::OUTBOX,
                match &after_key {
                    Some(a) => std::ops::Bound::Excluded(a.as_slice()),
                    None => std::ops::Bound::Unbounded,
                },
                std::ops::Bound::Unbounded,
                Some(page),
                false,
            )?;
            let end_of_queue = rows.len() < page;
            for (k, v) in &rows {
                scan.last_seq = Some(layout::seq_from_suffix(k)?);
                let (mut entry, at) = decode_parts(v)?;
                if !may_be_due(&entry, now_ms, busy, paused_tables) {
                    continue;
                }
                // The record row is read once, for the head check and for the record.
                let key_bytes = entry.key.encode();
                let row = txn.get(&layout::records(&entry.table), &key_bytes)?;
                if !self.is_first_queued_with_row(
                    txn,
                    &entry.table,
                    &key_bytes,
                    row.as_deref(),
                    entry.seq,
                )? || self.db.parked().is_parked(txn, &entry.table, &entry.key)?
                {
                    continue;
                }
                self.resolve_record_with_row(&mut entry, at, row.as_deref())?;
                if self.waits_for_reference(txn, &entry)? {
                    continue;
                }
                scan.entries.push(entry);
                if scan.entries.len() >= limit {
                    return Ok(scan);
                }
            }
            if end_of_queue {
                scan.exhausted = true;
                return Ok(scan);
            }
        }
    }

    /// Whether `entry` references a record whose create has not reached the server yet.
    fn waits_for_reference(&self, txn: &dyn ReadTxn, entry: &OutboxEntry) -> Result<bool> {
        Ok(self.pending_reference(txn, entry)?.is_some())
    }

    /// Marks an entry as handed to the transport (one more attempt). From now on it is sealed:
    /// later edits queue behind it.
    pub fn mark_in_flight(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        let before = self.entry_or_err(&*txn, seq)?;
        self.mark_read_entry_in_flight(txn, before)
    }

    /// [`Outbox::mark_in_flight`] for an entry just read in this same transaction (e.g. by
    /// [`Outbox::scan_ready`]), which saves reading and decoding it again.
    pub fn mark_read_entry_in_flight(
        &self,
        txn: &mut dyn WriteTxn,
        mut entry: OutboxEntry,
    ) -> Result<OutboxEntry> {
        // Only the header changes: the stored body (a copy of the record, or the pointer at
        // the record row) is kept as it is, so the record is neither copied nor compared.
        let was = EntryState::of(&entry);
        entry.in_flight = true;
        entry.attempts += 1;
        let stored = self
            .stored_entry(&*txn, entry.seq)?
            .ok_or_else(|| no_entry(entry.seq))?;
        self.update_state_with(txn, was, &entry, EntryBody::KeepFrom(&stored))?;
        Ok(entry)
    }

    /// Takes back an entry that was marked in flight but never sent. It stays sealed (its
    /// attempt still counts): edits made meanwhile queued behind it, and unsealing it would
    /// let them overtake or fold into it.
    pub fn release(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<()> {
        let before = self.entry_or_err(&*txn, seq)?;
        if !before.in_flight {
            return Ok(());
        }
        let mut entry = before.clone();
        entry.in_flight = false;
        self.update_entry(txn, &before, &entry)
    }

    /// Puts an in-flight entry back in the queue, not to be sent before `next_attempt_at_ms`.
    pub fn retry_later(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<()> {
        self.requeue(txn, seq, next_attempt_at_ms, error, false)
    }

    /// [`Outbox::retry_later`] after an answer of the server that refused the entry for now:
    /// the failure counts toward the entry's dead-letter budget ([`OutboxEntry::failures`]).
    pub fn retry_later_charged(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<()> {
        self.requeue(txn, seq, next_attempt_at_ms, error, true)
    }

    fn requeue(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        next_attempt_at_ms: u64,
        error: &str,
        charged: bool,
    ) -> Result<()> {
        let before = self.entry_or_err(&*txn, seq)?;
        let mut entry = before.clone();
        entry.in_flight = false;
        if charged {
            entry.failures = entry.failures.saturating_add(1);
        }
        entry.next_attempt_at_ms = next_attempt_at_ms;
        entry.last_error = Some(error.to_owned());
        self.update_entry(txn, &before, &entry)
    }

    /// Removes an acknowledged entry (and records it as acknowledged, for its receipt).
    pub fn remove(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        Ok(self.remove_acked(txn, seq, None)?.0)
    }

    /// [`Outbox::remove`], also telling whether the entry pointed at its record row: then
    /// its record is the row as it is, which the acknowledgement need not read again.
    pub(super) fn remove_acked(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        sent: Option<Record>,
    ) -> Result<(OutboxEntry, bool)> {
        let bytes = self
            .stored_entry(&*txn, seq)?
            .ok_or_else(|| no_entry(seq))?;
        let (mut entry, at) = decode_parts(&bytes)?;
        let sent_is_row = matches!(at, RecordAt::InRow);
        match sent {
            // The caller kept the record it sent: not read and decoded a second time.
            Some(sent) if entry.op != Op::Delete => entry.record = Some(sent),
            _ => self.resolve_record(&*txn, &mut entry, at)?,
        }
        self.remove_entry(txn, &entry)?;
        self.record_settlement(txn, &entry, Settlement::Acked)?;
        Ok((entry, sent_is_row))
    }

    /// Removes entry `seq` and records how it left the outbox.
    #[cfg(test)]
    pub(super) fn remove_as(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        settlement: Settlement,
    ) -> Result<OutboxEntry> {
        let entry = self.remove_raw(txn, seq)?;
        self.record_settlement(txn, &entry, settlement)?;
        Ok(entry)
    }

    /// Removes entry `seq`; the caller records how it left the outbox.
    pub(super) fn remove_raw(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        let entry = self.entry_or_err(&*txn, seq)?;
        self.remove_entry(txn, &entry)?;
        Ok(entry)
    }

    /// Replaces an entry in place (same position and idempotency key), e.g. after a conflict
    /// resolution rewrote what must be pushed.
    pub fn rewrite(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        let before = self.entry_or_err(&*txn, entry.seq)?;
        self.update_entry(txn, &before, entry)
    }

    /// Turns a create the server refused because the id is taken by a tombstone into an
    /// update carrying every field (PUT upserts), due now. Keeps its place and key.
    pub fn create_as_upsert(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<()> {
        let before = self.entry_or_err(&*txn, seq)?;
        if before.op != crate::Op::Create {
            return Ok(());
        }
        let mut entry = before.clone();
        entry.op = crate::Op::Update;
        entry.changed = entry
            .record
            .as_ref()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        entry.in_flight = false;
        entry.next_attempt_at_ms = 0;
        // The server refused the create, so no attempt applied it: a delete a pull showed
        // meanwhile came before it (see `OutboxEntry::deleted_remotely`).
        entry.deleted_remotely = false;
        self.update_entry(txn, &before, &entry)
    }

    /// Moves an entry to the dead-letter queue. It keeps its place in the record's order, so
    /// the record's later entries wait behind it (parked, not failed).
    pub fn dead_letter(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        info: DeadLetterInfo,
    ) -> Result<()> {
        let before = self.entry_or_err(&*txn, seq)?;
        let mut entry = before.clone();
        entry.in_flight = false;
        entry.last_error = Some(info.error.clone());
        entry.dead = Some(info);
        txn.put(layout::DEAD, &seq_bytes(seq), &[])?;
        self.update_entry(txn, &before, &entry)
    }

    /// Dead-lettered entries, oldest first, optionally of one table.
    pub fn dead_letters(&self, txn: &dyn ReadTxn, table: Option<&str>) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for key in dead_keys(txn)? {
            let entry = self.entry_or_err(txn, layout::seq_from_suffix(&key)?)?;
            if table.is_none_or(|t| t == entry.table) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Number of dead-lettered entries.
    pub fn dead_letter_count(&self, txn: &dyn ReadTxn) -> Result<u64> {
        txn.len(layout::DEAD)
    }

    /// Puts a dead letter back into its record's queue at its original place, optionally with
    /// an edited record.
    pub fn retry_dead_letter(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        edited: Option<Record>,
    ) -> Result<OutboxEntry> {
        let before = self.entry_or_err(&*txn, seq)?;
        if before.dead.is_none() {
            return Err(
                Error::invalid(format!("outbox entry #{seq} is not a dead letter"))
                    .table(before.table.clone())
                    .key(&before.key),
            );
        }
        let mut entry = before.clone();
        if let Some(mut record) = edited {
            let spec = self.db.schema.table(&entry.table)?;
            match spec.key_of(&record)? {
                // Written without its key (as a server-id table's record is sent, or a
                // record whose key the server assigns): it keeps the entry's.
                None => {
                    record.insert(spec.key.clone(), entry.key.to_json());
                }
                Some(key) if key == entry.key => {}
                Some(_) => {
                    return Err(Error::invalid("an edited dead letter must keep its key")
                        .table(entry.table.clone())
                        .key(&entry.key)
                        .field(spec.key.clone()));
                }
            }
            entry.record = Some(record);
        }
        entry.dead = None;
        entry.next_attempt_at_ms = 0;
        entry.failures = 0; // a fresh budget: the user decided to try again
        txn.discard(layout::DEAD, &seq_bytes(seq))?;
        self.update_entry(txn, &before, &entry)?;
        Ok(entry)
    }

    /// Discards a dead letter for good; the record's later entries may then proceed.
    pub fn discard_dead_letter(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        let entry = self.entry_or_err(&*txn, seq)?;
        if entry.dead.is_none() {
            return Err(
                Error::invalid(format!("outbox entry #{seq} is not a dead letter"))
                    .table(entry.table.clone())
                    .key(&entry.key),
            );
        }
        self.remove_entry(txn, &entry)?;
        if let Some(reason) = entry.dead.clone() {
            self.record_settlement(txn, &entry, Settlement::Discarded { reason })?;
        }
        Ok(entry)
    }

    /// Makes every waiting entry due now (e.g. when the network comes back, entries in backoff
    /// need not wait out their delay), except entries held after a leader change
    /// ([`Outbox::reset_in_flight_held`]). Returns how many changed. Reads only the entries in
    /// backoff.
    pub fn make_due(&self, txn: &mut dyn WriteTxn, now_ms: u64) -> Result<usize> {
        let mut changed = 0;
        for (k, v) in self.all_rows(&*txn, layout::BACKOFF)? {
            if read_u64(&v)? <= now_ms {
                continue;
            }
            let before = self.entry_or_err(&*txn, layout::seq_from_suffix(&k)?)?;
            if before.last_error.as_deref() == Some(TAKEOVER_HOLD_NOTE) {
                // Not a backoff: a previous leader's request for it may still land.
                continue;
            }
            let mut entry = before.clone();
            entry.next_attempt_at_ms = 0;
            self.update_entry(txn, &before, &entry)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// When the earliest entry in backoff becomes due (wall-clock ms), if any entry waits.
    /// Reads the backoff index only (8 bytes per waiting entry), never the entries.
    pub fn earliest_retry_at(&self, txn: &dyn ReadTxn) -> Result<Option<u64>> {
        self.earliest_retry_after(txn, 0)
    }

    /// The earliest time after `after_ms` at which an entry in backoff becomes due, if any.
    /// (Entries due at or before `after_ms` were due for a whole push that did not send
    /// them: a paused table, a record parked or waiting for a reference.)
    pub fn earliest_retry_after(&self, txn: &dyn ReadTxn, after_ms: u64) -> Result<Option<u64>> {
        let mut earliest: Option<u64> = None;
        for (_, v) in self.all_rows(txn, layout::BACKOFF)? {
            let at = read_u64(&v)?;
            if at > after_ms {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest)
    }

    /// After a restart, entries that were in flight when the process died are put back in the
    /// queue (still sealed: they may have reached the server, so they keep their idempotency
    /// key and are never coalesced). Returns how many were reset. Costs O(entries in flight).
    pub fn reset_in_flight(&self, txn: &mut dyn WriteTxn) -> Result<usize> {
        self.reset_in_flight_held(txn, None)
    }

    /// [`Outbox::reset_in_flight`] for a new leader: with `Some(hold_until_ms)`, the entries
    /// a previous leader left in flight are also not sent before `hold_until_ms` (their
    /// `last_error` says why: [`TAKEOVER_HOLD_NOTE`]), because the previous leader's request
    /// may still be inside the server and land after a newer edit of the same record. The
    /// record's later entries wait behind its head as always; other records are not held.
    /// [`Outbox::make_due`] leaves such a hold in place.
    pub fn reset_in_flight_held(
        &self,
        txn: &mut dyn WriteTxn,
        hold_until_ms: Option<u64>,
    ) -> Result<usize> {
        if txn.get(layout::META, layout::META_STATE_INDEXES)?.is_none() {
            self.rebuild_state_indexes(txn)?;
        }
        let mut reset = 0;
        for (k, _) in self.all_rows(&*txn, layout::IN_FLIGHT)? {
            let before = self.entry_or_err(&*txn, layout::seq_from_suffix(&k)?)?;
            let mut entry = before.clone();
            entry.in_flight = false;
            if let Some(until) = hold_until_ms {
                entry.next_attempt_at_ms = entry.next_attempt_at_ms.max(until);
                entry.last_error = Some(TAKEOVER_HOLD_NOTE.to_owned());
            }
            self.update_entry(txn, &before, &entry)?;
            reset += 1;
        }
        Ok(reset)
    }

    /// Builds the in-flight and backoff indexes of a database written before they existed
    /// (one pass over the outbox, once in the database's life).
    fn rebuild_state_indexes(&self, txn: &mut dyn WriteTxn) -> Result<()> {
        let mut after: Option<[u8; 8]> = None;
        const PAGE: usize = 512;
        loop {
            let rows = txn.range(
                layout::OUTBOX,
                match &after {
                    Some(a) => std::ops::Bound::Excluded(a.as_slice()),
                    None => std::ops::Bound::Unbounded,
                },
                std::ops::Bound::Unbounded,
                Some(PAGE),
                false,
            )?;
            for (k, v) in &rows {
                let (entry, _) = decode_parts(v)?;
                let state = EntryState::of(&entry);
                if state.in_flight {
                    txn.put(layout::IN_FLIGHT, k, &[])?;
                }
                if let Some(at) = state.backoff_until {
                    txn.put(layout::BACKOFF, k, &at.to_be_bytes())?;
                }
            }
            match rows.last() {
                Some((k, _)) if rows.len() == PAGE => {
                    after = Some(seq_bytes(layout::seq_from_suffix(k)?));
                }
                _ => break,
            }
        }
        txn.put(layout::META, layout::META_STATE_INDEXES, &[1])
    }

    fn all_rows(&self, txn: &dyn ReadTxn, keyspace: &str) -> Result<Vec<crate::store::KeyValue>> {
        txn.range(
            keyspace,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            None,
            false,
        )
    }
}

/// The error for an entry that is not in the outbox.
fn no_entry(seq: u64) -> Error {
    Error::new(
        crate::ErrorKind::NotFound,
        format!("no outbox entry #{seq}"),
    )
}

/// What a local write hands its enqueue: the bytes it just wrote to the record row (`None`:
/// deleted), the record's queue it read before, and the batch it is part of (which knows the
/// next sequence number once it has handed one out).
pub(super) struct WrittenRow<'a> {
    pub(super) json: Option<&'a [u8]>,
    pub(super) queue: &'a mut RecordQueue,
    pub(super) batch: &'a mut super::LocalBatch,
}

/// Where a scan for ready entries ([`Outbox::scan_ready`]) stopped.
#[derive(Debug, Clone, Default)]
pub struct ReadyScan {
    /// The ready entries found, in enqueue order.
    pub entries: Vec<OutboxEntry>,
    /// The last sequence number looked at (where the next scan may resume).
    pub last_seq: Option<u64>,
    /// The scan reached the end of the queue.
    pub exhausted: bool,
}

/// The outbox keys (sequence numbers, as stored) of every dead-lettered entry, oldest first.
fn dead_keys(txn: &dyn ReadTxn) -> Result<Vec<Vec<u8>>> {
    let rows = txn.range(
        layout::DEAD,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        None,
        false,
    )?;
    Ok(rows.into_iter().map(|(key, _)| key).collect())
}

/// Whether `entry`'s own state lets it be sent now: not in flight, not dead, due, its table not
/// paused and its record not held out. (Being its record's head, not parked and its references
/// created are checked by [`Outbox::scan_ready`] with the store.)
fn may_be_due(
    entry: &OutboxEntry,
    now_ms: u64,
    busy: &HashSet<(String, Key)>,
    paused_tables: &HashSet<String>,
) -> bool {
    !(entry.in_flight
        || entry.dead.is_some()
        || entry.next_attempt_at_ms > now_ms
        || paused_tables.contains(&entry.table)
        || busy.contains(&(entry.table.clone(), entry.key.clone())))
}

/// The parts of an entry's state that the in-flight and backoff indexes mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryState {
    in_flight: bool,
    /// Due time of an entry that waits out a retry delay (not in flight, not dead).
    backoff_until: Option<u64>,
}

impl EntryState {
    fn of(entry: &OutboxEntry) -> Self {
        let waiting = !entry.in_flight && entry.dead.is_none() && entry.next_attempt_at_ms > 0;
        EntryState {
            in_flight: entry.in_flight,
            backoff_until: waiting.then_some(entry.next_attempt_at_ms),
        }
    }
}

use super::entry_codec::{
    EntryBody, RecordAt, decode_parts, decode_record_json, encode_entry_body, record_in_row,
    with_record_inline,
};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::hlc::HybridClock;
    use crate::local::test_txn::MapTxn;
    use crate::local::{Schema, WriteOp};

    fn db() -> LocalDb {
        let schema =
            Schema::new([crate::TableSpec::new("posts")]).unwrap_or_else(|e| panic!("{e}"));
        LocalDb::new(schema, Arc::new(HybridClock::new()))
    }

    fn put(db: &LocalDb, txn: &mut MapTxn, id: &str, title: &str) {
        db.records()
            .apply_local(
                txn,
                &[WriteOp::Put {
                    table: "posts".into(),
                    record: json!({"id": id, "title": title}),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn ready_keys(db: &LocalDb, txn: &MapTxn, now: u64) -> Vec<(String, String)> {
        db.outbox()
            .ready_heads(txn, now, 100, &HashSet::new(), &HashSet::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| {
                let title = e.record.as_ref().and_then(|r| r.get("title")).cloned();
                (
                    e.key.to_string(),
                    title.map(|t| t.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn only_a_change_of_epoch_holds_what_was_left_in_flight() {
        let db = db();
        let mut txn = MapTxn::default();
        put(&db, &mut txn, "a", "a1");
        let in_flight = |db: &LocalDb, txn: &mut MapTxn| {
            let head =
                db.outbox()
                    .ready_heads(&*txn, u64::MAX, 1, &HashSet::new(), &HashSet::new());
            let seq = head.unwrap_or_else(|e| panic!("{e}"))[0].seq;
            db.outbox()
                .mark_in_flight(txn, seq)
                .unwrap_or_else(|e| panic!("{e}"));
            seq
        };
        let due = |db: &LocalDb, txn: &MapTxn, seq| {
            db.outbox()
                .entry(txn, seq)
                .ok()
                .flatten()
                .map(|e| e.next_attempt_at_ms)
        };
        // The first claim, and the same epoch again (an always-leader election restarting):
        // re-queued at once.
        let seq = in_flight(&db, &mut txn);
        assert_eq!(db.fence().take_over(&mut txn, 1, 5_000).ok(), Some(1));
        assert_eq!(due(&db, &txn, seq), Some(0));
        in_flight(&db, &mut txn);
        assert_eq!(db.fence().take_over(&mut txn, 1, 5_000).ok(), Some(1));
        assert_eq!(due(&db, &txn, seq), Some(0));
        // A new epoch after another one: held.
        in_flight(&db, &mut txn);
        assert_eq!(db.fence().take_over(&mut txn, 2, 5_000).ok(), Some(1));
        assert_eq!(due(&db, &txn, seq), Some(5_000));
        // A deposed leader's claim is refused and changes nothing.
        assert!(db.fence().take_over(&mut txn, 1, 9_000).is_err());
        assert_eq!(due(&db, &txn, seq), Some(5_000));
    }

    #[test]
    fn a_new_leader_holds_the_records_left_in_flight_and_everything_queued_behind_them() {
        let db = db();
        let mut txn = MapTxn::default();
        put(&db, &mut txn, "a", "a1");
        put(&db, &mut txn, "b", "b1");
        // The previous leader sent a's head; a newer edit of a queues behind it.
        let head = db
            .outbox()
            .ready_heads(&txn, 1, 1, &HashSet::new(), &HashSet::new());
        let seq = head.unwrap_or_else(|e| panic!("{e}"))[0].seq;
        db.outbox()
            .mark_in_flight(&mut txn, seq)
            .unwrap_or_else(|e| panic!("{e}"));
        put(&db, &mut txn, "a", "a2");

        let now = 1_000;
        let reset = db
            .outbox()
            .reset_in_flight_held(&mut txn, Some(now + 30_000));
        assert_eq!(reset.ok(), Some(1));
        // b goes at once; a (head and the edit behind it) waits out the hold.
        assert_eq!(
            ready_keys(&db, &txn, now),
            vec![("b".into(), "\"b1\"".into())]
        );
        let held = db
            .outbox()
            .entry(&txn, seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(held.as_ref().map(|e| e.in_flight), Some(false));
        assert_eq!(
            held.as_ref().and_then(|e| e.last_error.as_deref()),
            Some(TAKEOVER_HOLD_NOTE)
        );
        // Coming back online does not shorten the hold.
        assert_eq!(db.outbox().make_due(&mut txn, now).ok(), Some(0));
        assert_eq!(ready_keys(&db, &txn, now).len(), 1);
        // Once it is over, a's head goes first (still sealed: same entry).
        let after = ready_keys(&db, &txn, now + 30_000);
        assert!(after.contains(&("a".into(), "\"a1\"".into())), "{after:?}");
        assert!(!after.iter().any(|(_, t)| t == "\"a2\""), "{after:?}");
        // A reset without a hold (a restart) leaves the retry time as it was.
        db.outbox()
            .mark_in_flight(&mut txn, seq)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.outbox().reset_in_flight(&mut txn).ok(), Some(1));
        let due = db
            .outbox()
            .entry(&txn, seq)
            .ok()
            .flatten()
            .map(|e| e.next_attempt_at_ms);
        assert_eq!(due, Some(now + 30_000));
    }

    fn seqs(db: &LocalDb, txn: &MapTxn) -> Vec<u64> {
        db.outbox()
            .entries(txn, None, 100)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    /// Sequence numbers are read from the store, not kept in a counter row: two writers on one
    /// store (two processes in redb's multi-process mode) never hand out the same number, a
    /// number whose transaction rolled back is handed out again, and one whose entry left the
    /// outbox is never reused.
    #[test]
    fn sequence_numbers_stay_unique_across_writers_rollbacks_and_removals() {
        let (one, two) = (db(), db());
        let mut txn = MapTxn::default();
        put(&one, &mut txn, "a", "1");
        put(&two, &mut txn, "b", "1");
        put(&one, &mut txn, "c", "1");
        put(&two, &mut txn, "d", "1");
        assert_eq!(seqs(&one, &txn), vec![1, 2, 3, 4]);

        let before = txn.clone();
        put(&one, &mut txn, "e", "1");
        assert_eq!(seqs(&one, &txn), vec![1, 2, 3, 4, 5]);
        let mut txn = before; // that transaction rolled back
        put(&one, &mut txn, "f", "1");
        assert_eq!(seqs(&one, &txn), vec![1, 2, 3, 4, 5], "5 was free again");

        // The last entry leaves the outbox (acknowledged): its number is not issued again,
        // by either writer.
        one.outbox().mark_in_flight(&mut txn, 5).unwrap();
        one.outbox().remove(&mut txn, 5).unwrap();
        put(&two, &mut txn, "g", "1");
        put(&one, &mut txn, "h", "1");
        assert_eq!(seqs(&one, &txn), vec![1, 2, 3, 4, 6, 7]);
    }

    /// The stored bytes of entry `seq`.
    fn stored(txn: &MapTxn, seq: u64) -> Vec<u8> {
        txn.get(layout::OUTBOX, &seq_bytes(seq))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no entry #{seq}"))
    }

    fn title(entry: &OutboxEntry) -> &str {
        entry
            .record
            .as_ref()
            .and_then(|r| r.get("title"))
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("entry #{} has no title: {entry:?}", entry.seq))
    }

    #[test]
    fn a_queued_entry_points_at_its_record_row_until_the_row_changes() {
        let db = db();
        let mut txn = MapTxn::default();
        let key = Key::Str("p1".into());
        let pending = |txn: &MapTxn| {
            db.outbox()
                .pending(txn, "posts", &key)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        put(&db, &mut txn, "p1", "a");
        let first = pending(&txn)[0].seq;
        assert!(record_in_row(&stored(&txn, first)), "a local write's entry");
        assert_eq!(title(&pending(&txn)[0]), "a");

        // Folded into the unsent entry: it still points at the row, which now holds "b".
        put(&db, &mut txn, "p1", "b");
        assert_eq!(pending(&txn).len(), 1);
        assert!(record_in_row(&stored(&txn, first)));
        assert_eq!(title(&pending(&txn)[0]), "b");

        // Sent: only the header changes.
        let sent = db.outbox().mark_in_flight(&mut txn, first).unwrap();
        assert!(sent.in_flight && title(&sent) == "b");
        assert!(
            record_in_row(&stored(&txn, first)),
            "state changes keep the body"
        );

        // A later edit queues behind the sent entry, which keeps what was sent.
        put(&db, &mut txn, "p1", "c");
        let queue = pending(&txn);
        assert_eq!(queue.len(), 2);
        assert!(!record_in_row(&stored(&txn, first)), "given the old row");
        assert_eq!((title(&queue[0]), title(&queue[1])), ("b", "c"));
        assert!(record_in_row(&stored(&txn, queue[1].seq)));

        // Retried later, dead-lettered: still the same records.
        db.outbox()
            .retry_later(&mut txn, first, 10, "503")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(title(&pending(&txn)[0]), "b");

        // Deleted: nothing may point at the row that is gone.
        db.records()
            .apply_local(
                &mut txn,
                &[WriteOp::Delete {
                    table: "posts".into(),
                    key: key.clone(),
                }],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let queue = pending(&txn);
        assert_eq!(title(&queue[0]), "b");
        for entry in &queue {
            assert!(!record_in_row(&stored(&txn, entry.seq)), "{entry:?}");
        }
        assert!(queue.iter().any(|e| e.op == Op::Delete));
    }

    #[test]
    fn an_entry_whose_record_row_is_missing_is_an_error_naming_the_record() {
        let db = db();
        let mut txn = MapTxn::default();
        put(&db, &mut txn, "p1", "a");
        let seq = seqs(&db, &txn)[0];
        // What only a damaged store could hold: the row gone behind the entry's back.
        txn.delete(&layout::records("posts"), &Key::Str("p1".into()).encode())
            .unwrap();
        let err = db.outbox().entry(&txn, seq).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("posts") && text.contains("p1") && text.contains("missing"),
            "{text}"
        );
    }

    /// The table's queue is read a page at a time (1 024 rows): a queue over several pages is
    /// counted and listed whole, dead letters left out of the depth, and a table whose name
    /// extends this one's is not mixed in.
    #[test]
    fn queue_figures_read_the_outbox_page_by_page() {
        let schema = Schema::new([
            crate::TableSpec::new("posts"),
            crate::TableSpec::new("posts2"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        let mut txn = MapTxn::default();
        let ops: Vec<WriteOp> = (0..2_500)
            .map(|i| WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": format!("p{i:05}"), "title": "t"}),
            })
            .chain((0..7).map(|i| WriteOp::Put {
                table: "posts2".into(),
                record: json!({"id": format!("q{i}"), "title": "t"}),
            }))
            .collect();
        db.records()
            .apply_local(&mut txn, &ops)
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs = db.outbox().table_seqs(&txn, "posts").unwrap();
        assert_eq!(seqs.len(), 2_500);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "enqueue order");
        let first = seqs[0];
        db.outbox().mark_in_flight(&mut txn, first).unwrap();
        db.outbox()
            .dead_letter(
                &mut txn,
                first,
                DeadLetterInfo {
                    kind: "permanent".into(),
                    error: "422".into(),
                    status: Some(422),
                    response_excerpt: None,
                    at_ms: 1,
                },
            )
            .unwrap();
        let stats = db.outbox().stats(&txn, "posts").unwrap();
        assert_eq!(stats.depth, 2_499, "the dead letter is not queued");
        let oldest = db.outbox().entry(&txn, first).unwrap().unwrap();
        assert_eq!(stats.oldest_created_at_ms, Some(oldest.created_at_ms));
        assert_eq!(db.outbox().stats(&txn, "posts2").unwrap().depth, 7);
        assert_eq!(db.outbox().table_seqs(&txn, "posts2").unwrap().len(), 7);
        // Every table's figures in one pass are each table's own.
        let all = db.outbox().stats_by_table(&txn).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all.get("posts"), Some(&stats));
        assert_eq!(
            all.get("posts2"),
            Some(&db.outbox().stats(&txn, "posts2").unwrap())
        );
        let after = db
            .outbox()
            .entries_after(&txn, "posts", Some(seqs[1_999]), 1_000)
            .unwrap();
        assert_eq!(after.len(), 500);
        assert_eq!(after[0].seq, seqs[2_000]);
    }
}
