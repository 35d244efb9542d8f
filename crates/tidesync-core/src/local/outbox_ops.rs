//! Outbox operations on top of the store: enqueue with coalescing, per-record heads, and the
//! state changes the pusher makes (in flight, retry later, acknowledged, dead-lettered).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::outbox::{Coalesced, DeadLetterInfo, LocalChange, OutboxEntry, coalesce};
use crate::record::{Key, Record};
use crate::spec::TableSpec;
use crate::store::{ReadTxn, WriteTxn};

use super::layout::{self, seq_bytes};
use super::{LocalDb, now_ms, read_u64};

/// Cheap figures about one table's outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Entries waiting to be pushed (not dead-lettered).
    pub depth: u64,
    /// When the oldest entry of the table was enqueued (wall-clock ms), if any.
    pub oldest_created_at_ms: Option<u64>,
}

impl LocalDb {
    /// Queues `change` for the record, folding it into the record's unsent tail entry.
    pub(super) fn enqueue(
        &self,
        txn: &mut dyn WriteTxn,
        spec: &TableSpec,
        key: &Key,
        change: &LocalChange,
        hlc: u64,
    ) -> Result<()> {
        let tail = self.pending(&*txn, &spec.name, key)?.pop();
        match coalesce(tail.as_ref(), change, hlc) {
            Coalesced::Replace(entry) => self.save_entry(txn, &entry),
            Coalesced::RemoveTail => match tail {
                Some(tail) => self.remove_entry(txn, &tail),
                None => Ok(()),
            },
            Coalesced::Append => {
                let seq = self.next_seq(txn)?;
                let entry = OutboxEntry {
                    seq,
                    table: spec.name.clone(),
                    key: key.clone(),
                    op: change.op,
                    record: change.record.clone(),
                    changed: change.changed.clone(),
                    idempotency_key: uuid::Uuid::now_v7().to_string(),
                    hlc,
                    created_at_ms: now_ms(),
                    attempts: 0,
                    next_attempt_at_ms: 0,
                    last_error: None,
                    in_flight: false,
                    dead: None,
                };
                self.save_entry(txn, &entry)?;
                let mut by_record = layout::record_prefix(&spec.name, key);
                by_record.extend_from_slice(&seq_bytes(seq));
                txn.put(layout::OUTBOX_BY_RECORD, &by_record, &[])?;
                let mut by_table = layout::table_prefix(&spec.name);
                by_table.extend_from_slice(&seq_bytes(seq));
                txn.put(layout::OUTBOX_BY_TABLE, &by_table, &[])?;
                self.add_depth(txn, &spec.name, 1)
            }
        }
    }

    fn next_seq(&self, txn: &mut dyn WriteTxn) -> Result<u64> {
        let next = match txn.get(layout::META, layout::META_NEXT_SEQ)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        txn.put(
            layout::META,
            layout::META_NEXT_SEQ,
            &(next + 1).to_be_bytes(),
        )?;
        Ok(next)
    }

    fn add_depth(&self, txn: &mut dyn WriteTxn, table: &str, delta: i64) -> Result<()> {
        let key = layout::meta_depth(table);
        let current = match txn.get(layout::META, &key)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let next = (current as i64 + delta).max(0) as u64;
        txn.put(layout::META, &key, &next.to_be_bytes())
    }

    fn save_entry(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(|e| {
            Error::internal(format!("cannot encode outbox entry: {e}"))
                .table(entry.table.clone())
                .key(&entry.key)
        })?;
        txn.put(layout::OUTBOX, &seq_bytes(entry.seq), &bytes)
    }

    fn remove_entry(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        txn.delete(layout::OUTBOX, &seq_bytes(entry.seq))?;
        let mut by_record = layout::record_prefix(&entry.table, &entry.key);
        by_record.extend_from_slice(&seq_bytes(entry.seq));
        txn.delete(layout::OUTBOX_BY_RECORD, &by_record)?;
        let mut by_table = layout::table_prefix(&entry.table);
        by_table.extend_from_slice(&seq_bytes(entry.seq));
        txn.delete(layout::OUTBOX_BY_TABLE, &by_table)?;
        if entry.dead.is_some() {
            txn.delete(layout::DEAD, &seq_bytes(entry.seq))?;
            Ok(())
        } else {
            self.add_depth(txn, &entry.table, -1)
        }
    }

    /// The outbox entry with sequence number `seq`.
    pub fn entry(&self, txn: &dyn ReadTxn, seq: u64) -> Result<Option<OutboxEntry>> {
        txn.get(layout::OUTBOX, &seq_bytes(seq))?
            .map(|bytes| decode_entry(&bytes))
            .transpose()
    }

    fn entry_or_err(&self, txn: &dyn ReadTxn, seq: u64) -> Result<OutboxEntry> {
        self.entry(txn, seq)?.ok_or_else(|| {
            Error::new(
                crate::ErrorKind::NotFound,
                format!("no outbox entry #{seq}"),
            )
        })
    }

    /// The record's queued entries, oldest first.
    pub fn pending(&self, txn: &dyn ReadTxn, table: &str, key: &Key) -> Result<Vec<OutboxEntry>> {
        let prefix = layout::record_prefix(table, key);
        let rows = txn.scan_prefix(layout::OUTBOX_BY_RECORD, &prefix, None)?;
        rows.iter()
            .map(|(k, _)| {
                let seq = layout::seq_from_suffix(k)?;
                self.entry_or_err(txn, seq)
            })
            .collect()
    }

    /// Outbox entries in enqueue order, optionally of one table, at most `limit`.
    pub fn outbox(
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
                .map(|(_, v)| decode_entry(v))
                .collect(),
            Some(table) => {
                self.schema.table(table)?;
                let rows = txn.scan_prefix(
                    layout::OUTBOX_BY_TABLE,
                    &layout::table_prefix(table),
                    Some(limit),
                )?;
                rows.iter()
                    .map(|(k, _)| self.entry_or_err(txn, layout::seq_from_suffix(k)?))
                    .collect()
            }
        }
    }

    /// Queue depth and oldest pending entry of `table`: two point reads.
    pub fn outbox_stats(&self, txn: &dyn ReadTxn, table: &str) -> Result<OutboxStats> {
        self.schema.table(table)?;
        let depth = match txn.get(layout::META, &layout::meta_depth(table))? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let first = txn.scan_prefix(
            layout::OUTBOX_BY_TABLE,
            &layout::table_prefix(table),
            Some(1),
        )?;
        let oldest_created_at_ms = match first.first() {
            Some((k, _)) => Some(
                self.entry_or_err(txn, layout::seq_from_suffix(k)?)?
                    .created_at_ms,
            ),
            None => None,
        };
        Ok(OutboxStats {
            depth,
            oldest_created_at_ms,
        })
    }

    /// The entries that may be sent now: for each record, its head entry, if that head is not
    /// in flight, not dead, due at `now_ms`, its table not in `paused_tables`, the record has
    /// no parked conflict, and every
    /// record it references has no pending create. At most `limit`, in enqueue order;
    /// records in `busy` (already being pushed) are skipped.
    pub fn ready_heads(
        &self,
        txn: &dyn ReadTxn,
        now_ms: u64,
        limit: usize,
        busy: &HashSet<(String, Key)>,
        paused_tables: &HashSet<String>,
    ) -> Result<Vec<OutboxEntry>> {
        let mut seen: HashSet<(String, Key)> = HashSet::new();
        let mut ready = Vec::new();
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
            let exhausted = rows.len() < PAGE;
            for (_, v) in &rows {
                let entry = decode_entry(v)?;
                let id = (entry.table.clone(), entry.key.clone());
                // Only a record's first entry can be sent; later ones wait behind it.
                if !seen.insert(id.clone()) {
                    continue;
                }
                if entry.in_flight
                    || entry.dead.is_some()
                    || entry.next_attempt_at_ms > now_ms
                    || busy.contains(&id)
                    || paused_tables.contains(&entry.table)
                    || self.is_parked(txn, &entry.table, &entry.key)?
                    || self.waits_for_reference(txn, &entry)?
                {
                    continue;
                }
                ready.push(entry);
                if ready.len() >= limit {
                    return Ok(ready);
                }
            }
            match rows.last() {
                Some((k, _)) if !exhausted => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(k.get(..8).ok_or_else(|| Error::internal("bad seq key"))?);
                    after = Some(a);
                }
                _ => return Ok(ready),
            }
        }
    }

    /// Whether `entry` references a record whose create has not reached the server yet.
    fn waits_for_reference(&self, txn: &dyn ReadTxn, entry: &OutboxEntry) -> Result<bool> {
        let spec = self.schema.table(&entry.table)?;
        let Some(record) = &entry.record else {
            return Ok(false);
        };
        for reference in &spec.references {
            let Some(target) = record.get(&reference.field).and_then(Key::from_json) else {
                continue;
            };
            let pending = self.pending(txn, &reference.table, &target)?;
            if pending.iter().any(|e| e.op == crate::Op::Create) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Marks an entry as handed to the transport (one more attempt). From now on it is sealed:
    /// later edits queue behind it.
    pub fn mark_in_flight(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        let mut entry = self.entry_or_err(&*txn, seq)?;
        entry.in_flight = true;
        entry.attempts += 1;
        self.save_entry(txn, &entry)?;
        Ok(entry)
    }

    /// Puts an in-flight entry back in the queue, not to be sent before `next_attempt_at_ms`.
    pub fn retry_later(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<()> {
        let mut entry = self.entry_or_err(&*txn, seq)?;
        entry.in_flight = false;
        entry.next_attempt_at_ms = next_attempt_at_ms;
        entry.last_error = Some(error.to_owned());
        self.save_entry(txn, &entry)
    }

    /// Removes an acknowledged entry.
    pub fn remove(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<OutboxEntry> {
        let entry = self.entry_or_err(&*txn, seq)?;
        self.remove_entry(txn, &entry)?;
        Ok(entry)
    }

    /// Replaces an entry in place (same position and idempotency key), e.g. after a conflict
    /// resolution rewrote what must be pushed.
    pub fn rewrite(&self, txn: &mut dyn WriteTxn, entry: &OutboxEntry) -> Result<()> {
        self.entry_or_err(&*txn, entry.seq)?;
        self.save_entry(txn, entry)
    }

    /// Turns a create the server refused because the id is taken by a tombstone into an
    /// update carrying every field (PUT upserts), due now. Keeps its place and key.
    pub fn create_as_upsert(&self, txn: &mut dyn WriteTxn, seq: u64) -> Result<()> {
        let mut entry = self.entry_or_err(&*txn, seq)?;
        if entry.op != crate::Op::Create {
            return Ok(());
        }
        entry.op = crate::Op::Update;
        entry.changed = entry
            .record
            .as_ref()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        entry.in_flight = false;
        entry.next_attempt_at_ms = 0;
        self.save_entry(txn, &entry)
    }

    /// Moves an entry to the dead-letter queue. It keeps its place in the record's order, so
    /// the record's later entries wait behind it (parked, not failed).
    pub fn dead_letter(
        &self,
        txn: &mut dyn WriteTxn,
        seq: u64,
        info: DeadLetterInfo,
    ) -> Result<()> {
        let mut entry = self.entry_or_err(&*txn, seq)?;
        if entry.dead.is_none() {
            self.add_depth(txn, &entry.table, -1)?;
        }
        entry.in_flight = false;
        entry.last_error = Some(info.error.clone());
        entry.dead = Some(info);
        txn.put(layout::DEAD, &seq_bytes(seq), &[])?;
        self.save_entry(txn, &entry)
    }

    /// Dead-lettered entries, oldest first, optionally of one table.
    pub fn dead_letters(&self, txn: &dyn ReadTxn, table: Option<&str>) -> Result<Vec<OutboxEntry>> {
        let rows = txn.range(
            layout::DEAD,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            None,
            false,
        )?;
        let mut out = Vec::new();
        for (k, _) in rows {
            let entry = self.entry_or_err(txn, layout::seq_from_suffix(&k)?)?;
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
        let mut entry = self.entry_or_err(&*txn, seq)?;
        if entry.dead.is_none() {
            return Err(
                Error::invalid(format!("outbox entry #{seq} is not a dead letter"))
                    .table(entry.table.clone())
                    .key(&entry.key),
            );
        }
        if let Some(record) = edited {
            let spec = self.schema.table(&entry.table)?;
            if spec.key_of(&record)?.as_ref() != Some(&entry.key) {
                return Err(Error::invalid("an edited dead letter must keep its key")
                    .table(entry.table.clone())
                    .key(&entry.key)
                    .field(spec.key.clone()));
            }
            entry.record = Some(record);
        }
        entry.dead = None;
        entry.next_attempt_at_ms = 0;
        txn.delete(layout::DEAD, &seq_bytes(seq))?;
        self.add_depth(txn, &entry.table, 1)?;
        self.save_entry(txn, &entry)?;
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
        Ok(entry)
    }

    /// Makes every waiting entry due now (e.g. when the network comes back, entries in backoff
    /// need not wait out their delay). Returns how many changed.
    pub fn make_due(&self, txn: &mut dyn WriteTxn, now_ms: u64) -> Result<usize> {
        let mut changed = 0;
        let all = self.outbox(&*txn, None, usize::MAX)?;
        for mut entry in all
            .into_iter()
            .filter(|e| e.dead.is_none() && !e.in_flight && e.next_attempt_at_ms > now_ms)
        {
            entry.next_attempt_at_ms = 0;
            self.save_entry(txn, &entry)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// After a restart, entries that were in flight when the process died are put back in the
    /// queue (still sealed: they may have reached the server, so they keep their idempotency
    /// key and are never coalesced). Returns how many were reset.
    pub fn reset_in_flight(&self, txn: &mut dyn WriteTxn) -> Result<usize> {
        let mut reset = 0;
        let all = self.outbox(&*txn, None, usize::MAX)?;
        for mut entry in all.into_iter().filter(|e| e.in_flight) {
            entry.in_flight = false;
            self.save_entry(txn, &entry)?;
            reset += 1;
        }
        Ok(reset)
    }
}

fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("corrupt outbox entry in store: {e}")))
}
