//! The Puller actor: brings remote changes in, page after page, one transaction per page
//! (records, deletes and the new checkpoint together), never echoing them into the outbox.
//! Remote versions that meet pending local changes go to the resolver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;

use tidesync_core::{
    Conflict, Error, ErrorKind, PullPage, PullRequest, PullWarning, Result, Transport,
};

use crate::backoff::retry_delay;
use crate::commands::{ApplyPage, ApplyResolutions};
use crate::events::SyncEvent;
use crate::resolver::{ConflictResolverActor, ResolveAll};
use crate::shared::{EngineState, SyncShared};
use crate::store_writer::{Fenced, StoreCommand, StoreWriterActor};
use crate::telemetry;

/// Pull one table until it is up to date (or its page budget ran out: `max_pages`, and
/// `initial_max_pages` for a first sync).
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
    /// Pages fetched again after a retryable failure (5xx, 429) within this pull.
    pub retries: u64,
    /// Not pulled this time: the server assigns this table's keys and one of its creates was
    /// sent but not acknowledged yet (see [`Transport::assigns_keys`]); the next cycle pulls.
    ///
    /// [`Transport::assigns_keys`]: tidesync_core::Transport::assigns_keys
    pub deferred: bool,
    /// What the pulled pages showed that the configuration can fix, summed over the pages.
    pub warnings: Vec<PullWarning>,
}

/// The Puller actor.
pub struct PullerActor {
    shared: SyncShared,
    store_writer: Addr<StoreWriterActor>,
    resolver: Addr<ConflictResolverActor>,
}

impl PullerActor {
    /// A puller writing through `store_writer` and resolving conflicts with `resolver`.
    pub fn new(
        shared: SyncShared,
        store_writer: Addr<StoreWriterActor>,
        resolver: Addr<ConflictResolverActor>,
    ) -> Self {
        PullerActor {
            shared,
            store_writer,
            resolver,
        }
    }
}

impl PullerActor {
    /// What a reconciliation pass needs: the shared parts and the store writer.
    pub(crate) fn parts(&self) -> (SyncShared, Addr<StoreWriterActor>) {
        (self.shared.clone(), self.store_writer.clone())
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
            self.store_writer.clone(),
            self.resolver.clone(),
            msg.table,
        );
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(fut)))
    }
}

/// Runs a sync command under the pull's epoch (the writer checks it first).
async fn fenced<C: StoreCommand>(
    store_writer: &Addr<StoreWriterActor>,
    epoch: u64,
    command: C,
) -> Result<C::Output> {
    store_writer
        .send(Fenced { epoch, command })
        .await
        .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
}

/// Fetches one page and records the request's telemetry.
async fn fetch(
    transport: Arc<dyn Transport>,
    state: Arc<EngineState>,
    table: String,
    cursor: Option<Value>,
    page_size: usize,
) -> Result<PullPage> {
    let started = Instant::now();
    let result = transport
        .pull(PullRequest {
            table: table.clone(),
            cursor,
            page_size,
        })
        .await;
    telemetry::request_latency(&table, "pull", started.elapsed());
    telemetry::pull_request(&table, result.is_ok());
    state.record_request(result.is_ok());
    result.map_err(|e| e.table(table))
}

/// The next page, fetched on the runtime's workers while the current one is applied. At
/// most one page is ahead, so memory stays flat; dropping it (the pull stopped) aborts the
/// request.
struct Prefetch(tokio::task::JoinHandle<Result<PullPage>>);

impl Prefetch {
    fn start(sh: &SyncShared, table: &str, cursor: Option<Value>) -> Self {
        Prefetch(tokio::spawn(fetch(
            sh.transport.clone(),
            sh.state.clone(),
            table.to_owned(),
            cursor,
            sh.settings.page_size,
        )))
    }

    async fn page(mut self) -> Result<PullPage> {
        (&mut self.0).await.map_err(|e| {
            Error::new(
                ErrorKind::Closed,
                format!("the page request task stopped: {e}"),
            )
        })?
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pull_table(
    sh: SyncShared,
    store_writer: Addr<StoreWriterActor>,
    resolver: Addr<ConflictResolverActor>,
    table: String,
) -> Result<PullReport> {
    sh.db.schema().table(&table)?;
    // Every page is applied under the epoch this pull started with (fencing).
    let Some(epoch) = sh.state.epoch() else {
        return Err(Error::new(
            ErrorKind::Fenced,
            "not the sync leader: nothing is pulled",
        ));
    };
    let mut report = PullReport::default();
    if sh.transport.assigns_keys(&table)
        && sh
            .db
            .outbox()
            .has_unacknowledged_create(&*sh.store.read()?, &table)?
    {
        tracing::debug!(
            table = %table,
            "pull deferred: a create awaits the server's key"
        );
        report.deferred = true;
        return Ok(report);
    }
    // Only this pull writes the checkpoint, one page at a time: after the first read, the
    // cursor to ask for next is the one the last applied page stored.
    let mut cursor = sh.db.remote().checkpoint(&*sh.store.read()?, &table)?;
    let initial = cursor.is_none();
    let mut records_so_far = 0u64;
    let mut ahead: Option<Prefetch> = None;
    // A first sync runs to its end unless the application set a budget for it; later pulls
    // take `max_pages` per cycle and report the table as cut when more remain.
    let budget = if initial {
        sh.settings.initial_max_pages.unwrap_or(usize::MAX)
    } else {
        sh.settings.max_pages
    };
    for n in 0..budget {
        let fetched = match ahead.take() {
            Some(prefetch) => prefetch.page().await,
            None => {
                fetch(
                    sh.transport.clone(),
                    sh.state.clone(),
                    table.clone(),
                    cursor.clone(),
                    sh.settings.page_size,
                )
                .await
            }
        };
        let mut page = match fetched {
            Ok(page) => page,
            Err(err) => refetch(&sh, &table, &cursor, err, &mut report).await?,
        };
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
        if sh.settings.pull_prefetch && page.has_more && n + 1 < budget {
            ahead = Some(Prefetch::start(&sh, &table, page.cursor.clone()));
        }
        cursor = page.cursor.clone();
        for warning in std::mem::take(&mut page.warnings) {
            note_warning(&sh, &table, &mut report.warnings, warning);
        }
        let received = (page.records.len() + page.deleted.len()) as u64;
        let (has_more, total) = (page.has_more, page.total);
        let apply = ApplyPage {
            table: table.clone(),
            page,
            transport: sh.transport.clone(),
            // Server timestamps are turned into local-clock time for last-write-wins.
            clock_offset_ms: sh
                .state
                .clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        let applied = fenced(&store_writer, epoch, apply).await?;
        let (changed, applied) = applied;
        report.pages += 1;
        for item in &applied.quarantined {
            sh.events.emit(SyncEvent::Quarantined {
                table: table.clone(),
                key: item.key.clone(),
                error: item.error.clone(),
            });
        }
        report.applied += changed;
        sh.state
            .cycle_applied
            .fetch_add(changed, std::sync::atomic::Ordering::Relaxed);
        telemetry::pulled_page(&table, changed);
        if !applied.conflicts.is_empty() {
            report.conflicts +=
                resolve_page(&store_writer, &resolver, epoch, applied.conflicts).await?;
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

/// Adds a page's warning to the pull's: the first of its kind is announced as an event.
fn note_warning(sh: &SyncShared, table: &str, found: &mut Vec<PullWarning>, warning: PullWarning) {
    if found.iter_mut().any(|seen| seen.absorb(&warning)) {
        return;
    }
    sh.events.emit(SyncEvent::PullWarning {
        table: table.to_owned(),
        warning: warning.clone(),
    });
    found.push(warning);
}

/// Times one page is fetched again within a pull after a retryable answer (5xx, 429).
const PAGE_RETRIES: u32 = 3;

/// The longest wait for one page retry within a pull; a server asking for longer is asked
/// again by the next cycle.
const PAGE_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// Fetches a page again after `err`, with backoff (`Retry-After` wins), while the server keeps
/// answering with a retryable failure: one 503 must not fail the whole cycle. Failures where
/// the server did not answer at all are not retried here: the scheduler's offline handling
/// owns those.
async fn refetch(
    sh: &SyncShared,
    table: &str,
    cursor: &Option<Value>,
    mut err: Error,
    report: &mut PullReport,
) -> Result<PullPage> {
    for attempt in 1..=PAGE_RETRIES {
        if !matches!(err.kind(), ErrorKind::Server | ErrorKind::RateLimited) {
            return Err(err);
        }
        let delay = retry_delay(&sh.settings, attempt, err.retry_after_delay());
        if delay > PAGE_RETRY_MAX_WAIT {
            return Err(err);
        }
        tracing::info!(table, error = %err, attempt, delay_ms = delay.as_millis() as u64, "pull page failed; fetching it again");
        tokio::time::sleep(delay).await;
        report.retries += 1;
        match fetch(
            sh.transport.clone(),
            sh.state.clone(),
            table.to_owned(),
            cursor.clone(),
            sh.settings.page_size,
        )
        .await
        {
            Ok(page) => return Ok(page),
            Err(next) => err = next,
        }
    }
    Err(err)
}

/// Resolves a page's conflicts (one message to the resolver), then applies every resolution
/// in one write job. Returns how many were applied; the first failure, if any, after the
/// others were committed.
async fn resolve_page(
    store_writer: &Addr<StoreWriterActor>,
    resolver: &Addr<ConflictResolverActor>,
    epoch: u64,
    conflicts: Vec<(Conflict, Option<String>)>,
) -> Result<u64> {
    let (conflicts, versions): (Vec<Conflict>, Vec<Option<String>>) = conflicts.into_iter().unzip();
    let outcomes = resolver
        .send(ResolveAll(conflicts))
        .await
        .map_err(|_| Error::new(ErrorKind::Closed, "the conflict resolver stopped"))?;
    let mut failed: Option<Error> = None;
    let mut resolved = Vec::with_capacity(outcomes.len());
    for ((conflict, outcome), version) in outcomes.into_iter().zip(versions) {
        match outcome {
            Ok(resolution) => resolved.push((conflict, version, resolution)),
            Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    let count = resolved.len() as u64;
    if count > 0 {
        let refused = fenced(store_writer, epoch, ApplyResolutions(resolved)).await?;
        let refused_count = refused.len() as u64;
        if let Some(err) = failed.or_else(|| refused.into_iter().next()) {
            return Err(err);
        }
        return Ok(count - refused_count);
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(0),
    }
}
