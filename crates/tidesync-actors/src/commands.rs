//! The typed writes of the sync actors and of the application's maintenance calls, as
//! [`StoreCommand`]s the store writer runs. Sync commands go out wrapped in
//! [`Fenced`](crate::store_writer::Fenced) (the writer checks the cycle's epoch once before each);
//! maintenance commands in [`Unfenced`](crate::store_writer::Unfenced).
//!
//! | command | sent by | does |
//! |---|---|---|
//! | [`PushTurn`] | pusher | records answers (ack, retry, dead letter, release), marks the next ready heads in flight |
//! | [`MakeDue`] | pusher, back online | entries waiting out a delay become due now |
//! | [`RequeueUnsent`] | pusher, a cycle stopped early | its in-flight entries go back in the queue, sealed |
//! | [`RetryLater`] | pusher, conflict follow-up failed | one entry waits again |
//! | [`CreateAsUpsert`] | pusher, a create met a tombstone | the create becomes an upsert |
//! | [`ApplyPushResolution`] | pusher | a push conflict's outcome (parked: the entry waits) |
//! | [`ApplyPage`] | puller | a pulled page with its checkpoint |
//! | [`ApplyResolutions`] | puller | a page's conflict outcomes together |
//! | [`TakeOver`] | scheduler (unfenced: it claims the epoch) | claims the database for a new epoch |
//! | [`RetryDeadLetter`], [`DiscardDeadLetter`] | application | dead-letter operations |
//! | [`RetryQuarantined`], [`DiscardQuarantined`] | application | quarantine operations |
//! | [`SettleParked`] | application | settles a parked conflict |

use std::sync::Arc;

use tidesync_core::local::{AppliedPage, Change, LocalDb, Quarantined, RemoteMeta};
use tidesync_core::{
    Conflict, Error, ErrorKind, Key, OutboxEntry, PullPage, Record, Resolution, Result, Transport,
    WriteTxn,
};

use crate::push_turn::{TurnDone, TurnPlan, run_turn};
use crate::store_writer::StoreCommand;

/// One turn of the push loop (see `push_turn`).
pub(crate) struct PushTurn(pub TurnPlan);

impl StoreCommand for PushTurn {
    type Output = TurnDone;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(TurnDone, Vec<Change>)> {
        run_turn(db, txn, self.0)
    }
}

/// Entries waiting out a retry delay become due at `now_ms` (the server answers again).
pub struct MakeDue {
    /// Wall-clock now.
    pub now_ms: u64,
}

impl StoreCommand for MakeDue {
    type Output = usize;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(usize, Vec<Change>)> {
        Ok((db.outbox().make_due(txn, self.now_ms)?, Vec::new()))
    }
}

/// A push cycle stopped early: the entries it marked in flight and never settled go back in
/// the queue (still sealed), instead of waiting for a restart or a new leader.
pub struct RequeueUnsent {
    /// The entries marked in flight by the cycle.
    pub seqs: Vec<u64>,
}

impl StoreCommand for RequeueUnsent {
    type Output = ();

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<((), Vec<Change>)> {
        for seq in self.seqs {
            if db.outbox().entry(&*txn, seq)?.is_some_and(|e| e.in_flight) {
                db.outbox()
                    .retry_later(txn, seq, 0, "push cycle stopped early")?;
            }
        }
        Ok(((), Vec::new()))
    }
}

/// One entry waits again, uncharged, until `at_ms`.
pub struct RetryLater {
    /// The entry.
    pub seq: u64,
    /// Not before this wall-clock millisecond.
    pub at_ms: u64,
    /// Why.
    pub message: String,
}

impl StoreCommand for RetryLater {
    type Output = ();

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<((), Vec<Change>)> {
        db.outbox()
            .retry_later(txn, self.seq, self.at_ms, &self.message)?;
        Ok(((), Vec::new()))
    }
}

/// A create the server refused because the id is taken by a tombstone goes out again as an
/// upsert (the update route).
pub struct CreateAsUpsert {
    /// The create.
    pub seq: u64,
}

impl StoreCommand for CreateAsUpsert {
    type Output = ();

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<((), Vec<Change>)> {
        db.outbox().create_as_upsert(txn, self.seq)?;
        Ok(((), Vec::new()))
    }
}

/// The outcome of a push conflict: record, base and pending entries in one transaction. A
/// parked outcome leaves the entry waiting for the application.
pub struct ApplyPushResolution {
    /// The entry the server refused.
    pub seq: u64,
    /// The conflict.
    pub conflict: Conflict,
    /// The server's version token of the remote record.
    pub version: Option<String>,
    /// The strategy's decision.
    pub resolution: Resolution,
}

impl StoreCommand for ApplyPushResolution {
    type Output = ();

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<((), Vec<Change>)> {
        if self.resolution == Resolution::Park {
            db.outbox()
                .retry_later(txn, self.seq, 0, "conflict parked for the application")?;
        }
        let changes =
            db.remote()
                .apply_resolution(txn, &self.conflict, self.version, &self.resolution)?;
        Ok(((), changes))
    }
}

/// A pulled page: records, deletes and the new checkpoint in one transaction. Server
/// timestamps become local-clock time (for last-write-wins) with `clock_offset_ms`.
pub struct ApplyPage {
    /// The table.
    pub table: String,
    /// The page.
    pub page: PullPage,
    /// Reads versions and modification times off pulled records.
    pub transport: Arc<dyn Transport>,
    /// Server clock minus local clock.
    pub clock_offset_ms: i64,
}

impl StoreCommand for ApplyPage {
    /// How many changes were applied, and what the page did.
    type Output = (u64, AppliedPage);

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(Self::Output, Vec<Change>)> {
        let ApplyPage {
            table,
            page,
            transport,
            clock_offset_ms,
        } = self;
        let meta = |record: &Record| RemoteMeta {
            version: transport.version_of(&table, record),
            modified_ms: transport
                .modified_at_ms(&table, record)
                .map(|ms| ms - clock_offset_ms),
        };
        let mut applied = db
            .remote()
            .apply_pull_page_owned(txn, &table, page, &meta)?;
        // The changes go to the watchers; the puller only needs their number.
        let changes = std::mem::take(&mut applied.changes);
        Ok(((changes.len() as u64, applied), changes))
    }
}

/// A page's conflict outcomes, applied together; one that the store refuses is left out.
pub struct ApplyResolutions(pub Vec<(Conflict, Option<String>, Resolution)>);

impl StoreCommand for ApplyResolutions {
    /// The refusals.
    type Output = Vec<Error>;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(Vec<Error>, Vec<Change>)> {
        let (changes, refused) = db.remote().apply_resolutions(txn, &self.0)?;
        Ok((refused, changes))
    }
}

/// Claims the database for a new leadership epoch; entries a previous leader left in flight
/// go back in the queue (held until `hold_until_ms` when the epoch changes hands).
pub struct TakeOver {
    /// The new epoch.
    pub epoch: u64,
    /// Until when the previous leader's in-flight records wait.
    pub hold_until_ms: u64,
}

impl StoreCommand for TakeOver {
    /// Entries re-queued.
    type Output = usize;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(usize, Vec<Change>)> {
        Ok((
            db.fence().take_over(txn, self.epoch, self.hold_until_ms)?,
            Vec::new(),
        ))
    }
}

/// Puts a dead letter back at its place in its record's order, optionally edited.
pub struct RetryDeadLetter {
    /// The dead letter.
    pub seq: u64,
    /// A corrected record.
    pub edited: Option<Record>,
}

impl StoreCommand for RetryDeadLetter {
    type Output = OutboxEntry;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(OutboxEntry, Vec<Change>)> {
        Ok((
            db.outbox().retry_dead_letter(txn, self.seq, self.edited)?,
            Vec::new(),
        ))
    }
}

/// Discards a dead letter for good.
pub struct DiscardDeadLetter {
    /// The dead letter.
    pub seq: u64,
}

impl StoreCommand for DiscardDeadLetter {
    type Output = OutboxEntry;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(OutboxEntry, Vec<Change>)> {
        Ok((db.outbox().discard_dead_letter(txn, self.seq)?, Vec::new()))
    }
}

/// Applies a quarantined pulled record again, as a pull would.
pub struct RetryQuarantined {
    /// The quarantined item.
    pub seq: u64,
}

impl StoreCommand for RetryQuarantined {
    type Output = AppliedPage;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(AppliedPage, Vec<Change>)> {
        let applied = db.parked().retry_quarantined(txn, self.seq)?;
        let changes = applied.changes.clone();
        Ok((applied, changes))
    }
}

/// Drops a quarantined item.
pub struct DiscardQuarantined {
    /// The quarantined item.
    pub seq: u64,
}

impl StoreCommand for DiscardQuarantined {
    type Output = Quarantined;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(Quarantined, Vec<Change>)> {
        Ok((db.parked().discard_quarantined(txn, self.seq)?, Vec::new()))
    }
}

/// Settles a parked conflict with the application's decision.
pub struct SettleParked {
    /// The table.
    pub table: String,
    /// The record.
    pub key: Key,
    /// The decision.
    pub resolution: Resolution,
}

impl StoreCommand for SettleParked {
    type Output = ();

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<((), Vec<Change>)> {
        let SettleParked {
            table,
            key,
            resolution,
        } = self;
        let parked = db
            .parked()
            .parked_conflict(&*txn, &table, &key)?
            .ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "no parked conflict for this record")
                    .table(table.clone())
                    .key(&key)
            })?;
        let changes = db.remote().apply_resolution(
            txn,
            &parked.conflict,
            parked.remote_version,
            &resolution,
        )?;
        Ok(((), changes))
    }
}
