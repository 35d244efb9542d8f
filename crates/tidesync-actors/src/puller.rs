//! The Puller actor: brings remote changes in, page after page, one transaction per page
//! (records, deletes and the new checkpoint together), never echoing them into the outbox.
//! Remote versions that meet pending local changes go to the resolver.

use std::time::Instant;

use actix::prelude::*;

use tidesync_core::local::RemoteMeta;
use tidesync_core::{Error, ErrorKind, PullRequest, Result};

use crate::events::SyncEvent;
use crate::outbox::{OutboxActor, Write};
use crate::resolver::{ConflictResolverActor, Resolve};
use crate::shared::SyncShared;
use crate::telemetry;

/// Pull one table until it is up to date (or `max_pages` pages were applied).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PullReport>")]
pub struct PullNow {
    /// The table.
    pub table: String,
}

/// What a table's pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Pages applied.
    pub pages: u64,
    /// Remote records and deletes applied.
    pub applied: u64,
    /// Conflicts resolved or parked.
    pub conflicts: u64,
    /// The server has more (the page budget ran out).
    pub more: bool,
}

/// The Puller actor.
pub struct PullerActor {
    shared: SyncShared,
    outbox: Addr<OutboxActor>,
    resolver: Addr<ConflictResolverActor>,
}

impl PullerActor {
    /// A puller writing through `outbox` and resolving conflicts with `resolver`.
    pub fn new(
        shared: SyncShared,
        outbox: Addr<OutboxActor>,
        resolver: Addr<ConflictResolverActor>,
    ) -> Self {
        PullerActor {
            shared,
            outbox,
            resolver,
        }
    }
}

impl Actor for PullerActor {
    type Context = Context<Self>;
}

impl Handler<PullNow> for PullerActor {
    // Atomic: one pull at a time, so checkpoints advance in order.
    type Result = AtomicResponse<Self, Result<PullReport>>;

    fn handle(&mut self, msg: PullNow, _ctx: &mut Context<Self>) -> Self::Result {
        let fut = pull_table(
            self.shared.clone(),
            self.outbox.clone(),
            self.resolver.clone(),
            msg.table,
        );
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(fut)))
    }
}

async fn write<T: Send + 'static>(outbox: &Addr<OutboxActor>, job: Write<T>) -> Result<T> {
    outbox
        .send(job)
        .await
        .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
}

async fn pull_table(
    sh: SyncShared,
    outbox: Addr<OutboxActor>,
    resolver: Addr<ConflictResolverActor>,
    table: String,
) -> Result<PullReport> {
    sh.db.schema().table(&table)?;
    // Every page is applied under the epoch this pull started with (fencing).
    let Some(epoch) = sh.state.epoch().map(Some) else {
        return Err(Error::new(
            ErrorKind::Fenced,
            "not the sync leader: nothing is pulled",
        ));
    };
    let mut report = PullReport::default();
    let initial = sh.db.checkpoint(&*sh.store.read()?, &table)?.is_none();
    let mut records_so_far = 0u64;
    for _ in 0..sh.settings.max_pages {
        let cursor = sh.db.checkpoint(&*sh.store.read()?, &table)?;
        let started = Instant::now();
        let result = sh
            .transport
            .pull(PullRequest {
                table: table.clone(),
                cursor: cursor.clone(),
                page_size: sh.settings.page_size,
            })
            .await;
        telemetry::request_latency(&table, "pull", started.elapsed());
        telemetry::pull_request(&table, result.is_ok());
        sh.state.record_request(result.is_ok());
        let page = result.map_err(|e| e.table(table.clone()))?;
        if let Some(server_ms) = page.server_time_ms {
            telemetry::observe_server_clock(&sh.state, server_ms);
        }
        if page.has_more && page.cursor == cursor {
            return Err(Error::new(
                ErrorKind::Decode,
                "the server answered the same page again without advancing: stopping this pull",
            )
            .table(table));
        }
        let received = (page.records.len() + page.deleted.len()) as u64;
        let (has_more, total) = (page.has_more, page.total);
        let transport = sh.transport.clone();
        let page_table = table.clone();
        // Server timestamps are turned into local-clock time for last-write-wins.
        let offset_ms = sh
            .state
            .clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let applied = write(
            &outbox,
            Write::new(move |db, txn| {
                let meta = |record: &tidesync_core::Record| RemoteMeta {
                    version: transport.version_of(&page_table, record),
                    modified_ms: transport
                        .modified_at_ms(&page_table, record)
                        .map(|ms| ms - offset_ms),
                };
                db.check_epoch(&*txn, epoch)?;
                let applied = db.apply_pull_page(txn, &page_table, &page, &meta)?;
                let changes = applied.changes.clone();
                Ok((applied, changes))
            }),
        )
        .await?;
        report.pages += 1;
        for item in &applied.quarantined {
            sh.events.emit(SyncEvent::Quarantined {
                table: table.clone(),
                key: item.key.clone(),
                error: item.error.clone(),
            });
        }
        report.applied += applied.changes.len() as u64;
        telemetry::pulled_page(&table, applied.changes.len() as u64);
        for (conflict, version) in applied.conflicts {
            let resolution = resolver
                .send(Resolve(conflict.clone()))
                .await
                .map_err(|_| Error::new(ErrorKind::Closed, "the conflict resolver stopped"))??;
            write(
                &outbox,
                Write::new(move |db, txn| {
                    db.check_epoch(&*txn, epoch)?;
                    let changes = db.apply_resolution(txn, &conflict, version, &resolution)?;
                    Ok(((), changes))
                }),
            )
            .await?;
            report.conflicts += 1;
        }
        records_so_far += received;
        if initial {
            sh.events.emit(SyncEvent::InitialSyncProgress {
                table: table.clone(),
                pages: report.pages,
                records: records_so_far,
                total,
            });
        }
        if !has_more {
            return Ok(report);
        }
    }
    report.more = true;
    Ok(report)
}
