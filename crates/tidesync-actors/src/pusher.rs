//! The Pusher actor: sends the outbox to the server.
//!
//! Per cycle it repeatedly takes the *ready heads* (each record's first entry, if due, not in
//! flight, not parked, its references created), up to `concurrency` requests in flight, and
//! handles each outcome in its own transaction: acknowledged → dropped and merged; retryable →
//! back in the queue with backoff; auth → pushing pauses; conflict → the resolver; permanent →
//! the dead-letter queue. A record's next entry becomes ready only after its head is settled,
//! so per-record order holds across retries, restarts and dead letters, while one failing
//! record never holds up the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tokio::task::JoinSet;

use tidesync_core::hlc::wall_millis;
use tidesync_core::outbox::DeadLetterInfo;
use tidesync_core::{
    Conflict, DetectedBy, Error, ErrorKind, Key, Op, OutboxEntry, PushOutcome, PushRequest,
    Resolution, Result,
};

use crate::backoff::retry_delay;
use crate::events::SyncEvent;
use crate::outbox::{OutboxActor, Write};
use crate::rate_limit::RateLimiter;
use crate::resolver::{ConflictResolverActor, Resolve};
use crate::shared::SyncShared;
use crate::telemetry;

/// Push ready entries until none is left (or the server refuses our credentials).
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "Result<PushReport>")]
pub struct PushNow {
    /// Only these tables (all when `None`).
    pub tables: Option<Vec<String>>,
}

/// What a push phase did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Entries acknowledged.
    pub pushed: u64,
    /// Failures that will be retried later.
    pub retried: u64,
    /// Entries dead-lettered.
    pub dead_lettered: u64,
    /// Push conflicts resolved.
    pub conflicts: u64,
    /// Failures where the server could not be reached.
    pub network_failures: u64,
    /// Pushing stopped because the server refused our credentials.
    pub auth_blocked: bool,
    /// The first failure that will be retried, if any (for the cycle's outcome).
    pub first_error: Option<(ErrorKind, String)>,
}

/// The Pusher actor. See the module docs.
pub struct PusherActor {
    shared: SyncShared,
    outbox: Addr<OutboxActor>,
    resolver: Addr<ConflictResolverActor>,
    limiter: Arc<RateLimiter>,
}

impl PusherActor {
    /// A pusher writing through `outbox` and resolving conflicts with `resolver`.
    pub fn new(
        shared: SyncShared,
        outbox: Addr<OutboxActor>,
        resolver: Addr<ConflictResolverActor>,
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(&shared.settings));
        PusherActor {
            shared,
            outbox,
            resolver,
            limiter,
        }
    }
}

impl Actor for PusherActor {
    type Context = Context<Self>;
}

impl Handler<PushNow> for PusherActor {
    // Atomic: one push phase at a time, so a record is never sent twice concurrently.
    type Result = AtomicResponse<Self, Result<PushReport>>;

    fn handle(&mut self, msg: PushNow, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(epoch) = self.shared.state.epoch() else {
            let refused = Error::new(ErrorKind::Fenced, "not the sync leader: nothing is pushed");
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(refused))));
        };
        let cycle = PushCycle {
            epoch,
            shared: self.shared.clone(),
            outbox: self.outbox.clone(),
            resolver: self.resolver.clone(),
            limiter: self.limiter.clone(),
        };
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(cycle.run(msg.tables))))
    }
}

/// One entry and the answer the server gave for it.
type Answered = (OutboxEntry, Result<PushOutcome>);

struct PushCycle {
    /// The leadership epoch this cycle runs under; every write it makes is fenced by it.
    epoch: u64,
    shared: SyncShared,
    outbox: Addr<OutboxActor>,
    resolver: Addr<ConflictResolverActor>,
    limiter: Arc<RateLimiter>,
}

async fn write<T: Send + 'static>(outbox: &Addr<OutboxActor>, job: Write<T>) -> Result<T> {
    outbox
        .send(job)
        .await
        .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
}

impl PushCycle {
    async fn run(self, tables: Option<Vec<String>>) -> Result<PushReport> {
        let sh = &self.shared;
        let mut excluded = sh.state.paused_tables();
        if let Some(only) = &tables {
            for spec in sh.db.schema().tables() {
                if !only.contains(&spec.name) {
                    excluded.insert(spec.name.clone());
                }
            }
        }
        if sh.state.retry_waiting_now.swap(false, Ordering::SeqCst) {
            // Back online: entries that failed while the network was down need not wait.
            write(
                &self.outbox,
                Write::new(|db, txn| Ok((db.make_due(txn, wall_millis())?, Vec::new()))),
            )
            .await?;
        }
        let mut report = PushReport::default();
        let mut unsettled: HashSet<u64> = HashSet::new();
        let result = self.push_loop(excluded, &mut report, &mut unsettled).await;
        if result.is_err() && !unsettled.is_empty() {
            // The cycle stops early: what it marked in flight and never settled goes back in
            // the queue (still sealed), instead of waiting for a restart or a new leader.
            let seqs: Vec<u64> = unsettled.into_iter().collect();
            let requeued = write(
                &self.outbox,
                Write::new(move |db, txn| {
                    for seq in seqs {
                        if db.entry(&*txn, seq)?.is_some_and(|e| e.in_flight) {
                            db.retry_later(txn, seq, 0, "push cycle stopped early")?;
                        }
                    }
                    Ok(((), Vec::new()))
                }),
            )
            .await;
            if let Err(err) = requeued {
                tracing::warn!(error = %err, "could not re-queue entries of a stopped push cycle");
            }
        }
        result.map(|()| report)
    }

    async fn push_loop(
        &self,
        excluded: HashSet<String>,
        report: &mut PushReport,
        unsettled: &mut HashSet<u64>,
    ) -> Result<()> {
        let sh = &self.shared;
        let settings = sh.settings.clone();
        let mut busy: HashSet<(String, Key)> = HashSet::new();
        let mut tasks: JoinSet<Vec<Answered>> = JoinSet::new();
        loop {
            let free = settings.concurrency.saturating_sub(tasks.len());
            let still_leading = sh.state.leader.load(Ordering::SeqCst);
            if free > 0 && still_leading && !sh.state.auth_required.load(Ordering::SeqCst) {
                let heads = {
                    let read = sh.store.read()?;
                    sh.db.ready_heads(
                        &*read,
                        wall_millis(),
                        free * settings.batch_size,
                        &busy,
                        &excluded,
                    )?
                };
                for group in self.group(heads, free) {
                    let requests = self.mark_in_flight(group).await?;
                    for (entry, _) in &requests {
                        busy.insert((entry.table.clone(), entry.key.clone()));
                        unsettled.insert(entry.seq);
                    }
                    if !requests.is_empty() {
                        self.spawn_send(&mut tasks, requests);
                    }
                }
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let answered = joined.map_err(|e| Error::internal(format!("push task failed: {e}")))?;
            for (entry, result) in answered {
                let record = (entry.table.clone(), entry.key.clone());
                // A record whose push met a conflict is not pushed again in this cycle: its
                // resolution may queue a new entry, and a server that keeps refusing it must
                // not turn the cycle into a loop (the next cycle tries again).
                let conflicted = matches!(&result, Err(e) if e.kind() == ErrorKind::Conflict);
                if !conflicted {
                    busy.remove(&record);
                }
                let seq = entry.seq;
                self.settle(entry, result, report).await?;
                unsettled.remove(&seq);
            }
        }
        Ok(())
    }

    /// Forms up to `slots` requests: one entry each, or up to `batch_size` entries of one
    /// table where the transport has a bulk endpoint for it.
    fn group(&self, heads: Vec<OutboxEntry>, slots: usize) -> Vec<Vec<OutboxEntry>> {
        let batch_size = self.shared.settings.batch_size;
        let mut groups: Vec<Vec<OutboxEntry>> = Vec::new();
        for entry in heads {
            if self.shared.transport.supports_batch(&entry.table)
                && let Some(group) = groups
                    .iter_mut()
                    .find(|g| g[0].table == entry.table && g.len() < batch_size)
            {
                group.push(entry);
                continue;
            }
            if groups.len() < slots {
                groups.push(vec![entry]);
            }
        }
        groups
    }

    /// Marks the group in flight (one transaction) and builds its requests.
    async fn mark_in_flight(
        &self,
        group: Vec<OutboxEntry>,
    ) -> Result<Vec<(OutboxEntry, PushRequest)>> {
        let epoch = Some(self.epoch);
        let seqs: Vec<u64> = group.iter().map(|e| e.seq).collect();
        write(
            &self.outbox,
            Write::new(move |db, txn| {
                let mut out = Vec::with_capacity(seqs.len());
                db.check_epoch(&*txn, epoch)?;
                for seq in seqs {
                    // Between reading the heads and now, a local write may have coalesced an
                    // entry away (create + delete) or another path settled it: skip those.
                    let still_ready = db
                        .entry(&*txn, seq)?
                        .is_some_and(|e| !e.in_flight && e.dead.is_none());
                    if !still_ready {
                        continue;
                    }
                    let entry = db.mark_in_flight(txn, seq)?;
                    let base_version = db
                        .base(&*txn, &entry.table, &entry.key)?
                        .and_then(|b| b.version);
                    let request = PushRequest {
                        table: entry.table.clone(),
                        key: entry.key.clone(),
                        op: entry.op,
                        record: entry.record.clone(),
                        changed: entry.changed.clone(),
                        idempotency_key: entry.idempotency_key.clone(),
                        base_version,
                        epoch,
                    };
                    out.push((entry, request));
                }
                Ok((out, Vec::new()))
            }),
        )
        .await
    }

    fn spawn_send(
        &self,
        tasks: &mut JoinSet<Vec<Answered>>,
        requests: Vec<(OutboxEntry, PushRequest)>,
    ) {
        let transport = self.shared.transport.clone();
        let limiter = self.limiter.clone();
        tasks.spawn(async move {
            let table = requests
                .first()
                .map(|(e, _)| e.table.clone())
                .unwrap_or_default();
            limiter.acquire(&table).await;
            let started = std::time::Instant::now();
            let (entries, requests): (Vec<OutboxEntry>, Vec<PushRequest>) =
                requests.into_iter().unzip();
            let results: Vec<Result<PushOutcome>> = if requests.len() == 1 {
                let request = requests.into_iter().next();
                match request {
                    Some(request) => vec![transport.push(request).await],
                    None => Vec::new(),
                }
            } else {
                let count = requests.len();
                match transport.push_batch(requests).await {
                    Ok(results) if results.len() == count => results,
                    Ok(results) => {
                        let err = Error::new(
                            ErrorKind::Decode,
                            format!(
                                "bulk response has {} results for {count} entries",
                                results.len()
                            ),
                        )
                        .table(table.clone());
                        (0..count).map(|_| Err(err.duplicate())).collect()
                    }
                    Err(err) => (0..count).map(|_| Err(err.duplicate())).collect(),
                }
            };
            telemetry::request_latency(&table, "push", started.elapsed());
            entries.into_iter().zip(results).collect()
        });
    }

    /// Records one entry's outcome durably.
    async fn settle(
        &self,
        entry: OutboxEntry,
        result: Result<PushOutcome>,
        report: &mut PushReport,
    ) -> Result<()> {
        let sh = &self.shared;
        // A conflict is a normal answer (the resolver handles it), not a failed request.
        let answered = match &result {
            Ok(_) => true,
            Err(err) => err.kind() == ErrorKind::Conflict,
        };
        sh.state.record_request(answered);
        let table = entry.table.clone();
        match result {
            Ok(outcome) => {
                telemetry::push_outcome(&table, "acked");
                if let Some(server_ms) = outcome.server_time_ms {
                    telemetry::observe_server_clock(&sh.state, server_ms);
                }
                let seq = entry.seq;
                let epoch = Some(self.epoch);
                let acked = write(
                    &self.outbox,
                    Write::new(move |db, txn| {
                        db.check_epoch(&*txn, epoch)?;
                        let acked = db.ack_push(txn, seq, &outcome)?;
                        let changes = acked.changes.clone();
                        Ok((acked, changes))
                    }),
                )
                .await;
                let acked = match acked {
                    Ok(acked) => acked,
                    // The store or the engine failed, or a newer leader took over: stop here.
                    Err(err) if is_fatal(&err) => return Err(err),
                    // The server took it, but its answer cannot be applied here (e.g. a bad
                    // server key): this one entry is dead-lettered, the cycle goes on.
                    Err(err) => {
                        let why = format!(
                            "the server accepted it, but applying its answer failed: {err}"
                        );
                        return self
                            .dead_letter(&entry, "ack_failed", why, &err, report)
                            .await;
                    }
                };
                if let Some((from, to)) = acked.remapped {
                    sh.events.emit(SyncEvent::IdRemapped { table, from, to });
                }
                report.pushed += 1;
            }
            Err(err) => self.settle_failure(entry, err, report).await?,
        }
        Ok(())
    }

    async fn settle_failure(
        &self,
        entry: OutboxEntry,
        mut err: Error,
        report: &mut PushReport,
    ) -> Result<()> {
        let sh = &self.shared;
        let (seq, table) = (entry.seq, entry.table.clone());
        let message = err.to_string();
        match err.kind() {
            ErrorKind::Auth => {
                telemetry::push_outcome(&table, "auth");
                // Nothing is dead-lettered: the entry waits for new credentials.
                self.retry_at(seq, 0, &message).await?;
                if !sh.state.auth_required.swap(true, Ordering::SeqCst) {
                    sh.events.emit(SyncEvent::AuthRequired { table });
                }
                report.auth_blocked = true;
                report.first_error.get_or_insert((ErrorKind::Auth, message));
            }
            ErrorKind::Conflict => {
                telemetry::push_outcome(&table, "conflict");
                let remote = err.take_remote_record();
                self.resolve_push_conflict(entry, remote, report).await?;
            }
            kind if kind.retryable() => {
                telemetry::push_outcome(&table, "retry");
                telemetry::retry(kind);
                if matches!(kind, ErrorKind::Network | ErrorKind::Timeout) {
                    report.network_failures += 1;
                }
                if entry.attempts >= sh.settings.max_attempts {
                    let why = format!("gave up after {} attempts: {message}", entry.attempts);
                    self.dead_letter(&entry, "retries_exhausted", why, &err, report)
                        .await?;
                } else {
                    let delay = retry_delay(&sh.settings, entry.attempts, err.retry_after_delay());
                    let next = wall_millis() + delay.as_millis() as u64;
                    self.retry_at(seq, next, &message).await?;
                    report.retried += 1;
                    report.first_error.get_or_insert((kind, message));
                }
            }
            kind => {
                telemetry::push_outcome(&table, "dead_letter");
                self.dead_letter(&entry, kind.as_str(), message, &err, report)
                    .await?;
            }
        }
        Ok(())
    }

    async fn retry_at(&self, seq: u64, next_ms: u64, message: &str) -> Result<()> {
        let message = message.to_owned();
        let epoch = Some(self.epoch);
        write(
            &self.outbox,
            Write::new(move |db, txn| {
                db.check_epoch(&*txn, epoch)?;
                Ok((db.retry_later(txn, seq, next_ms, &message)?, Vec::new()))
            }),
        )
        .await
    }

    async fn dead_letter(
        &self,
        entry: &OutboxEntry,
        kind: &str,
        message: String,
        err: &Error,
        report: &mut PushReport,
    ) -> Result<()> {
        let info = DeadLetterInfo {
            kind: kind.to_owned(),
            error: message.clone(),
            status: err.http_status(),
            response_excerpt: err.response_excerpt().map(str::to_owned),
            at_ms: wall_millis(),
        };
        let seq = entry.seq;
        let epoch = Some(self.epoch);
        write(
            &self.outbox,
            Write::new(move |db, txn| {
                db.check_epoch(&*txn, epoch)?;
                Ok((db.dead_letter(txn, seq, info)?, Vec::new()))
            }),
        )
        .await?;
        tracing::warn!(table = %entry.table, key = %entry.key, seq, error = %message, "entry dead-lettered");
        telemetry::dead_lettered(&entry.table);
        self.shared.events.emit(SyncEvent::DeadLettered {
            table: entry.table.clone(),
            key: entry.key.clone(),
            seq,
            error: message,
        });
        report.dead_lettered += 1;
        Ok(())
    }

    /// A 409/412: find the server's current version, ask the table's strategy, and apply the
    /// outcome to the record, its base and its pending entries in one transaction.
    async fn resolve_push_conflict(
        &self,
        entry: OutboxEntry,
        remote: Option<tidesync_core::Record>,
        report: &mut PushReport,
    ) -> Result<()> {
        let sh = &self.shared;
        let (table, key) = (entry.table.clone(), entry.key.clone());
        let (remote, version) = match remote {
            Some(record) => {
                let version = sh.transport.version_of(&table, &record);
                (Some(record), version)
            }
            None => match sh.transport.fetch(&table, &key).await {
                Ok(Some(fetched)) => (Some(fetched.record), fetched.version),
                Ok(None) => (None, None),
                Err(err) => {
                    // Could not see the server's version: try the whole thing again later.
                    let delay = retry_delay(&sh.settings, entry.attempts, err.retry_after_delay());
                    self.retry_at(
                        entry.seq,
                        wall_millis() + delay.as_millis() as u64,
                        &err.to_string(),
                    )
                    .await?;
                    report.retried += 1;
                    report
                        .first_error
                        .get_or_insert((err.kind(), err.to_string()));
                    return Ok(());
                }
            },
        };
        let (local, base) = {
            let read = sh.store.read()?;
            (
                sh.db.get(&*read, &table, &key)?,
                sh.db.base(&*read, &table, &key)?,
            )
        };
        if remote.is_none() && base.is_none() && entry.op == Op::Create {
            // The server has no live version and we never saw one: nothing conflicts. A
            // create refused there meets a tombstone (deleted ids stay taken), so the record
            // is written again as an upsert (the update route) instead.
            let seq = entry.seq;
            let epoch = Some(self.epoch);
            write(
                &self.outbox,
                Write::new(move |db, txn| {
                    db.check_epoch(&*txn, epoch)?;
                    Ok((db.create_as_upsert(txn, seq)?, Vec::new()))
                }),
            )
            .await?;
            report.retried += 1;
            return Ok(());
        }
        let offset_ms = sh.state.clock_offset_ms.load(Ordering::Relaxed);
        let remote_time_ms = remote
            .as_ref()
            .and_then(|r| sh.transport.modified_at_ms(&table, r))
            .map(|ms| ms - offset_ms);
        let conflict = Conflict {
            table,
            key,
            base: base.map(|b| b.record),
            local,
            remote,
            detected_by: DetectedBy::PushRejected,
            local_hlc: entry.hlc,
            remote_time_ms,
        };
        let resolution = self
            .resolver
            .send(Resolve(conflict.clone()))
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the conflict resolver stopped"))??;
        let seq = entry.seq;
        let epoch = Some(self.epoch);
        write(
            &self.outbox,
            Write::new(move |db, txn| {
                if resolution == Resolution::Park {
                    // The entry waits (parked) until the application settles the conflict.
                    db.retry_later(txn, seq, 0, "conflict parked for the application")?;
                }
                db.check_epoch(&*txn, epoch)?;
                let changes = db.apply_resolution(txn, &conflict, version, &resolution)?;
                Ok(((), changes))
            }),
        )
        .await?;
        report.conflicts += 1;
        Ok(())
    }
}

/// Failures that end a push cycle (as opposed to failures of one entry).
fn is_fatal(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Storage | ErrorKind::Closed | ErrorKind::Fenced | ErrorKind::Internal
    )
}

/// How long until the earliest entry in backoff becomes due, if any (for the scheduler).
pub fn next_due_in(shared: &SyncShared) -> Result<Option<Duration>> {
    let read = shared.store.read()?;
    let now = wall_millis();
    let earliest = shared
        .db
        .outbox(&*read, None, 10_000)?
        .into_iter()
        .filter(|e| e.dead.is_none() && e.next_attempt_at_ms > now)
        .map(|e| e.next_attempt_at_ms)
        .min();
    Ok(earliest.map(|at| Duration::from_millis(at - now)))
}
