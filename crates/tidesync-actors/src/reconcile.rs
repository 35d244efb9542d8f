//! Hard-delete reconciliation on an interval: most CRUD APIs delete rows for good and have no
//! tombstones or deleted-ids feed, so a change feed never reports their deletes. For a table
//! whose transport names an interval ([`Transport::reconcile_every`]), the scheduler asks the
//! puller, after the table's pull ran to its end, to reconcile when due: the puller lists every
//! key of the pull feed (a walk from no cursor, page by page, the checkpoint neither read nor
//! moved) and deletes locally, like a pulled delete, each record the server no longer lists
//! and that has no pending local change or parked conflict
//! ([`RemoteChanges::reconcile_deletes`](tidesync_core::local::RemoteChanges::reconcile_deletes)).
//!
//! When it last ran is stored in the transaction that applies its deletes, so a restart does
//! not redo it at once; a crash during the listing wrote nothing, and the pass is due again at
//! the next cycle (it starts its listing over). The puller runs it between pulls (its handler
//! is atomic), so no page is applied while the listing is taken.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::prelude::*;

use tidesync_core::local::{Change, LocalDb, Reconciled};
use tidesync_core::{Error, ErrorKind, Key, PullRequest, Result, TableSpec, Transport, WriteTxn};

use crate::events::SyncEvent;
use crate::puller::PullerActor;
use crate::shared::SyncShared;
use crate::store_writer::{Fenced, StoreCommand, StoreWriterActor};

/// Pages a listing walks at most (a feed that never ends is an error, not a hang).
pub const MAX_LISTING_PAGES: usize = 10_000_000;

/// Reconcile one table's hard deletes if its interval has passed since the last completed
/// pass (or it never ran). Answered `None` when not due or not configured.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Option<ReconcileReport>>")]
pub struct ReconcileIfDue {
    /// The table.
    pub table: String,
}

/// What a reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Keys the server listed.
    pub listed: u64,
    /// Pages of the listing.
    pub pages: u64,
    /// How long the listing took.
    pub listing: Duration,
    /// Local records checked against the listing.
    pub checked: u64,
    /// Local records the server no longer has, deleted locally.
    pub deleted: Vec<Key>,
    /// Local records the server no longer has, kept: they have a pending local change or a
    /// parked conflict (their push decides).
    pub kept: Vec<Key>,
}

/// Every key the server lists for `spec`'s table ([`Key::encode`]d), by walking the pull feed
/// from no cursor; and the number of pages. Fails, naming the table and the key field, when a
/// listed record has no valid key (the listing must be complete to be used).
pub async fn list_server_keys(
    transport: &dyn Transport,
    spec: &TableSpec,
    page_size: usize,
) -> Result<(HashSet<Vec<u8>>, u64)> {
    let table = spec.name.as_str();
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    let mut cursor = None;
    let mut pages = 0u64;
    loop {
        let page = transport
            .pull(PullRequest {
                table: table.to_owned(),
                cursor: cursor.take(),
                page_size: page_size.max(1),
            })
            .await
            .map_err(|e| e.table(table))?;
        pages += 1;
        for record in &page.records {
            match spec.remote_key_of(record) {
                Ok(Some(key)) => {
                    keys.insert(key.encode());
                }
                Ok(None) | Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        "a listed record has no valid key: the listing is incomplete, nothing \
                         is deleted",
                    )
                    .table(table)
                    .field(&spec.key));
                }
            }
        }
        if !page.has_more {
            return Ok((keys, pages));
        }
        if pages >= MAX_LISTING_PAGES as u64 {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!("the pull feed did not end after {pages} pages: nothing is deleted"),
            )
            .table(table));
        }
        cursor = page.cursor;
    }
}

/// Deletes what the listing no longer has and records when the listing began, in one
/// transaction.
pub struct ReconcileDeletes {
    /// The table.
    pub table: String,
    /// Every key the server listed, encoded.
    pub server_keys: HashSet<Vec<u8>>,
    /// When the listing began (wall-clock ms).
    pub listed_from_ms: u64,
}

impl StoreCommand for ReconcileDeletes {
    type Output = Reconciled;

    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(Reconciled, Vec<Change>)> {
        let mut done = db
            .remote()
            .reconcile_deletes(txn, &self.table, &self.server_keys, false)?;
        db.remote()
            .set_reconciled_at(txn, &self.table, self.listed_from_ms)?;
        let changes = std::mem::take(&mut done.changes);
        Ok((done, changes))
    }
}

/// Whether a pass that last began at `last_ms` is due at `now_ms` (a wall clock that went
/// back counts as due: waiting for it could take arbitrarily long).
pub fn due(last_ms: Option<u64>, every: Duration, now_ms: u64) -> bool {
    let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    match last_ms {
        None => true,
        Some(last) => now_ms < last || now_ms - last >= every_ms,
    }
}

impl Handler<ReconcileIfDue> for PullerActor {
    // Atomic, like pulls: no page is applied while the listing is taken.
    type Result = AtomicResponse<Self, Result<Option<ReconcileReport>>>;

    fn handle(&mut self, msg: ReconcileIfDue, _ctx: &mut Context<Self>) -> Self::Result {
        let fut = reconcile_if_due(self.parts(), msg.table);
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(fut)))
    }
}

async fn reconcile_if_due(
    (sh, store_writer): (SyncShared, Addr<StoreWriterActor>),
    table: String,
) -> Result<Option<ReconcileReport>> {
    let Some(every) = sh.transport.reconcile_every(&table) else {
        return Ok(None);
    };
    let spec = sh.db.schema().table(&table)?.clone();
    let last = sh.db.remote().reconciled_at(&*sh.store.read()?, &table)?;
    let now = tidesync_core::hlc::wall_millis();
    if !due(last, every, now) {
        return Ok(None);
    }
    let Some(epoch) = sh.state.epoch() else {
        return Err(Error::new(
            ErrorKind::Fenced,
            "not the sync leader: nothing is reconciled",
        ));
    };
    let started = Instant::now();
    let (server_keys, pages) =
        list_server_keys(&*sh.transport, &spec, sh.settings.page_size).await?;
    let listing = started.elapsed();
    let listed = server_keys.len() as u64;
    let done = store_writer
        .send(Fenced {
            epoch,
            command: ReconcileDeletes {
                table: table.clone(),
                server_keys,
                listed_from_ms: now,
            },
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))??;
    let keys_per_s = listed as f64 / listing.as_secs_f64().max(1e-9);
    tracing::info!(
        table,
        listed,
        pages,
        listing_ms = listing.as_millis() as u64,
        keys_per_s = keys_per_s.round(),
        deleted = done.deleted.len(),
        kept = done.kept.len(),
        "hard-delete reconciliation"
    );
    let report = ReconcileReport {
        listed,
        pages,
        listing,
        checked: done.checked as u64,
        deleted: done.deleted,
        kept: done.kept,
    };
    sh.events.emit(SyncEvent::Reconciled {
        table,
        listed,
        deleted: report.deleted.len() as u64,
        kept: report.kept.len() as u64,
        listing_ms: listing.as_millis() as u64,
    });
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_due_after_its_interval_or_when_it_never_ran() {
        let hour = Duration::from_secs(3600);
        assert!(due(None, hour, 0));
        assert!(!due(Some(1_000), hour, 1_000 + 3_599_999));
        assert!(due(Some(1_000), hour, 1_000 + 3_600_000));
        assert!(due(Some(5_000), hour, 4_000), "the clock went back");
    }
}
