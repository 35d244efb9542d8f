//! The Pusher actor: sends the outbox to the server.
//!
//! Per cycle it repeatedly takes the *ready heads* (each record's first entry, if due, not in
//! flight, not parked, its references created), up to `concurrency` requests in flight, and
//! handles each outcome in its own transaction: acknowledged → dropped and merged; retryable →
//! back in the queue with backoff; auth → pushing pauses; conflict → the resolver; permanent →
//! the dead-letter queue. A record's next entry becomes ready only after its head is settled,
//! so per-record order holds across retries, restarts and dead letters, while one failing
//! record never holds up the others.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tokio::task::JoinSet;

use tidesync_core::hlc::wall_millis;
use tidesync_core::outbox::DeadLetterInfo;
use tidesync_core::push_policy::{Judging, Verdict, judge};
use tidesync_core::{
    Conflict, DetectedBy, Error, ErrorKind, Key, Op, OutboxEntry, PushOutcome, PushRequest, Result,
};

use crate::backoff::retry_delay;
use crate::circuit::Circuit;
use crate::commands::{
    ApplyPushResolution, CreateAsUpsert, MakeDue, PushTurn, RequeueUnsent, RetryLater,
};
use crate::events::SyncEvent;
use crate::push_turn::{Settle, Settled, TurnDone, TurnPlan};
use crate::rate_limit::RateLimiter;
use crate::resolver::{ConflictResolverActor, Resolve};
use crate::shared::SyncShared;
use crate::store_writer::{Fenced, StoreCommand, StoreWriterActor};
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
    /// Requests that got no answer (never sent, reset, timed out).
    pub network_failures: u64,
    /// The server looked unreachable or hung: the circuit opened and sending stopped (see
    /// `crate::circuit`).
    pub unreachable: bool,
    /// Pushing stopped because the server refused our credentials.
    pub auth_blocked: bool,
    /// The entries whose failure will be retried (the cycle reports a failure only while one
    /// of them is still queued at its end: a later retry or the pull may settle it).
    pub retry_seqs: Vec<u64>,
    /// The first failure that will be retried, if any (for the cycle's outcome).
    pub first_error: Option<(ErrorKind, String)>,
}

/// The Pusher actor. See the module docs.
pub struct PusherActor {
    shared: SyncShared,
    store_writer: Addr<StoreWriterActor>,
    resolver: Addr<ConflictResolverActor>,
    limiter: Arc<RateLimiter>,
}

impl PusherActor {
    /// A pusher writing through `store_writer` and resolving conflicts with `resolver`.
    pub fn new(
        shared: SyncShared,
        store_writer: Addr<StoreWriterActor>,
        resolver: Addr<ConflictResolverActor>,
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(&shared.settings));
        PusherActor {
            shared,
            store_writer,
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
            store_writer: self.store_writer.clone(),
            resolver: self.resolver.clone(),
            limiter: self.limiter.clone(),
        };
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(cycle.run(msg.tables))))
    }
}

/// Fewest single-entry requests the push loop keeps prepared beyond those in flight.
const PREPARE_AHEAD_MIN: usize = 32;

/// Longest an answer waits for its turn while requests are still flowing (see
/// `PushCycle::push_loop`: answers are recorded in batches, one commit for many).
const SETTLE_WAIT_MAX: Duration = Duration::from_millis(20);

/// One entry and the answer the server gave for it.
type Answered = (OutboxEntry, Result<PushOutcome>);

/// A turn on its way through the store writer.
type TurnFuture = Pin<Box<dyn Future<Output = Result<TurnDone>>>>;

/// What woke the push loop.
enum Woke {
    Turn(Result<TurnDone>),
    Answered(Option<std::result::Result<Vec<Answered>, tokio::task::JoinError>>),
    /// The oldest answer waiting for a turn has waited long enough.
    SettleDue,
}

/// What an answer asks for: a record in the next turn, or a conflict resolution now.
enum Answer {
    Settle(Settle),
    Conflict(OutboxEntry, Option<tidesync_core::Record>),
}

/// The push loop's state between turns.
#[derive(Default)]
struct LoopState {
    /// Requests prepared (marked in flight) and not sent yet.
    prepared: VecDeque<Vec<(OutboxEntry, PushRequest)>>,
    /// Answers waiting for the next turn to record them.
    settle: Vec<Settle>,
    /// Since when the oldest of them waits.
    settle_since: Option<tokio::time::Instant>,
    /// Records whose push met a conflict: not pushed again in this cycle.
    held_out: HashSet<(String, Key)>,
    /// Where the next scan resumes.
    scan_after: Option<u64>,
    /// The last scan reached the end of the queue.
    exhausted: bool,
    /// The queue changed (outside a scanning turn) since the last scan.
    dirty: bool,
    /// Whether the server answers at all.
    circuit: Circuit,
    /// Entries whose request got no answer (reset, timeout) while the server was not proven
    /// unreachable: still in flight, so not sent again in this cycle, and judged when the
    /// cycle ends, once it is known whether the server answered others (the failure then
    /// singles the entry out) or went away (then it is not the entry's fault).
    unanswered: Vec<(OutboxEntry, Error)>,
    /// Sending is over; the last turns only record answers.
    finishing: bool,
}

struct PushCycle {
    /// The leadership epoch this cycle runs under; every write it makes is fenced by it.
    epoch: u64,
    shared: SyncShared,
    store_writer: Addr<StoreWriterActor>,
    resolver: Addr<ConflictResolverActor>,
    limiter: Arc<RateLimiter>,
}

impl PushCycle {
    /// Runs a sync command under this cycle's epoch (the writer checks it first).
    async fn fenced<C: StoreCommand>(&self, command: C) -> Result<C::Output> {
        let epoch = self.epoch;
        self.store_writer
            .send(Fenced { epoch, command })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
    }

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
            self.fenced(MakeDue {
                now_ms: wall_millis(),
            })
            .await?;
        }
        let mut report = PushReport::default();
        let mut unsettled: HashSet<u64> = HashSet::new();
        let result = self.push_loop(excluded, &mut report, &mut unsettled).await;
        if result.is_err() && !unsettled.is_empty() {
            // The cycle stops early: what it marked in flight and never settled goes back in
            // the queue (still sealed), instead of waiting for a restart or a new leader.
            // A deposed leader's cycle is fenced here too: the new leader re-queues them.
            let seqs: Vec<u64> = unsettled.into_iter().collect();
            let requeued = self.fenced(RequeueUnsent { seqs }).await;
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
        let concurrency = sh.settings.concurrency;
        let bulk_tables: HashSet<String> = sh
            .db
            .schema()
            .tables()
            .filter(|spec| sh.transport.supports_batch(&spec.name))
            .map(|spec| spec.name.clone())
            .collect();
        let mut st = LoopState {
            circuit: Circuit::new(!sh.state.online.load(Ordering::SeqCst)),
            ..LoopState::default()
        };
        let mut tasks: JoinSet<Vec<Answered>> = JoinSet::new();
        let mut turn: Option<TurnFuture> = None;
        loop {
            let can_push = sh.state.leader.load(Ordering::SeqCst)
                && !sh.state.auth_required.load(Ordering::SeqCst)
                && !sh.state.upgrade_required.load(Ordering::SeqCst)
                && !st.circuit.is_open()
                && !st.finishing;
            if !can_push {
                // Prepared but not sent: give them back (the attempt does not count).
                for group in st.prepared.drain(..) {
                    st.settle.extend(
                        group
                            .into_iter()
                            .map(|(entry, _)| Settle::Release { entry }),
                    );
                }
            }
            while tasks.len() < st.circuit.allowed_in_flight(concurrency)
                && let Some(group) = st.prepared.pop_front()
            {
                self.spawn_send(&mut tasks, group);
            }
            if turn.is_none() {
                // Keep requests prepared beyond those in flight, so a freed slot is refilled
                // at once while the next turn commits (a commit may take longer than many
                // requests); bulk requests carry many entries each, so fewer of them.
                // Until the server answered, nothing more than can be sent is prepared: marking
                // an entry in flight seals it, and an unreachable server would leave them all
                // sealed for nothing.
                let ahead = if !st.circuit.server_answering() {
                    0
                } else if bulk_tables.is_empty() {
                    (2 * concurrency).max(PREPARE_AHEAD_MIN)
                } else {
                    concurrency
                };
                let room = (st.circuit.allowed_in_flight(concurrency) + ahead)
                    .saturating_sub(tasks.len() + st.prepared.len());
                let queue_changed = st.dirty || !st.settle.is_empty();
                let scan = can_push && room > 0 && (!st.exhausted || queue_changed);
                // One turn is one durable commit: while enough requests are prepared, answers
                // wait and are recorded together when the pool runs low, nothing is in flight,
                // or the oldest has waited `SETTLE_WAIT_MAX`. An answer not yet recorded is an
                // entry still in flight, the state a crash during its request leaves too.
                let worth_a_turn = tasks.is_empty()
                    || !can_push
                    || st.finishing
                    || st.prepared.len() < (ahead / 2).max(1)
                    || st
                        .settle_since
                        .is_some_and(|since| since.elapsed() >= SETTLE_WAIT_MAX);
                if (scan || !st.settle.is_empty()) && worth_a_turn {
                    st.settle_since = None;
                    let plan = TurnPlan {
                        epoch: Some(self.epoch),
                        settle: std::mem::take(&mut st.settle),
                        want_requests: if scan { room } else { 0 },
                        // Past the end of the queue, a settled entry may have made an earlier
                        // one ready (a record's next entry): start again from the head.
                        scan_after: if st.exhausted { None } else { st.scan_after },
                        held_out: st.held_out.clone(),
                        paused_tables: excluded.clone(),
                        bulk_tables: bulk_tables.clone(),
                        batch_size: sh.settings.batch_size,
                        now_ms: wall_millis(),
                    };
                    turn = Some(self.start_turn(plan));
                }
            }
            if turn.is_none() && tasks.is_empty() {
                if st.unanswered.is_empty() {
                    break;
                }
                // Sending is over: judge the unanswered requests, then record them.
                st.finishing = true;
                let server_answering = st.circuit.server_answering();
                for (entry, err) in std::mem::take(&mut st.unanswered) {
                    let answer = self.judge_failure(entry, err, server_answering, report);
                    if let Answer::Settle(op) = answer {
                        st.settle.push(op);
                    }
                }
                continue;
            }
            if st.settle.is_empty() {
                st.settle_since = None;
            } else if st.settle_since.is_none() {
                st.settle_since = Some(tokio::time::Instant::now());
            }
            let settle_due = st
                .settle_since
                .filter(|_| turn.is_none())
                .map(|since| since + SETTLE_WAIT_MAX);
            let woke = tokio::select! {
                done = poll_turn(&mut turn) => Woke::Turn(done),
                joined = tasks.join_next(), if !tasks.is_empty() => Woke::Answered(joined),
                () = sleep_until_some(settle_due) => Woke::SettleDue,
            };
            match woke {
                Woke::Turn(done) => {
                    turn = None;
                    self.turn_committed(done?, &mut st, report, unsettled);
                }
                Woke::Answered(None) | Woke::SettleDue => {}
                Woke::Answered(Some(joined)) => {
                    let answered =
                        joined.map_err(|e| Error::internal(format!("push task failed: {e}")))?;
                    self.watch_circuit(&answered, &mut st.circuit, report);
                    for (entry, result) in answered {
                        let seq = entry.seq;
                        let result = match result {
                            Err(err) if is_unanswered(&err) && !err.was_unsent() => {
                                // Judged when the cycle ends (see `LoopState::unanswered`).
                                st.unanswered.push((entry, err));
                                continue;
                            }
                            result => result,
                        };
                        match self.classify(entry, result, st.circuit.server_answering(), report) {
                            Answer::Settle(op) => st.settle.push(op),
                            Answer::Conflict(entry, remote) => {
                                // Not pushed again in this cycle: its resolution may queue a
                                // new entry, and a server that keeps refusing it must not turn
                                // the cycle into a loop (the next cycle tries again).
                                st.held_out.insert((entry.table.clone(), entry.key.clone()));
                                self.resolve_push_conflict(entry, remote, report).await?;
                                unsettled.remove(&seq);
                                st.dirty = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `plan` to the store writer; the returned future resolves when it committed.
    fn start_turn(&self, plan: TurnPlan) -> TurnFuture {
        let reply = self.store_writer.send(Fenced {
            epoch: self.epoch,
            command: PushTurn(plan),
        });
        Box::pin(async move {
            reply
                .await
                .map_err(|_| Error::new(ErrorKind::Closed, "the store writer stopped"))?
        })
    }

    /// Takes in what a committed turn did: reports, events, new requests, the scan cursor.
    fn turn_committed(
        &self,
        done: TurnDone,
        st: &mut LoopState,
        report: &mut PushReport,
        unsettled: &mut HashSet<u64>,
    ) {
        let sh = &self.shared;
        let settled_any = !done.settled.is_empty();
        for settled in done.settled {
            match settled {
                Settled::Acked(acked) => {
                    unsettled.remove(&acked.entry.seq);
                    report.pushed += 1;
                    sh.state.cycle_pushed.fetch_add(1, Ordering::Relaxed);
                    sh.events.emit(SyncEvent::Acknowledged {
                        table: acked.entry.table.clone(),
                        key: acked.entry.key.clone(),
                        seq: acked.entry.seq,
                    });
                    if let Some((from, to)) = acked.remapped {
                        sh.events.emit(SyncEvent::IdRemapped {
                            table: acked.entry.table,
                            from,
                            to,
                        });
                    }
                }
                // The server took it, but its answer cannot be applied here (e.g. a bad
                // server key): this one entry is dead-lettered, the cycle goes on.
                Settled::AckFailed(entry, err) => {
                    let why =
                        format!("the server accepted it, but applying its answer failed: {err}");
                    let info = dead_letter_info("ack_failed", why, &err);
                    st.settle.push(Settle::DeadLetter { entry, info });
                }
                Settled::Retried(entry) | Settled::Released(entry) => {
                    unsettled.remove(&entry.seq);
                }
                Settled::DeadLettered(entry, info) => {
                    unsettled.remove(&entry.seq);
                    tracing::warn!(table = %entry.table, key = %entry.key, seq = entry.seq, error = %info.error, "entry dead-lettered");
                    telemetry::dead_lettered(&entry.table);
                    sh.events.emit(SyncEvent::DeadLettered {
                        table: entry.table,
                        key: entry.key,
                        seq: entry.seq,
                        error: info.error,
                    });
                    report.dead_lettered += 1;
                }
            }
        }
        match done.scan {
            Some(scan) => {
                st.scan_after = scan.resume_after;
                st.exhausted = scan.exhausted;
                // The turn settled before it scanned: the scan saw everything.
                st.dirty = false;
            }
            None => st.dirty |= settled_any,
        }
        for group in done.requests {
            unsettled.extend(group.iter().map(|(entry, _)| entry.seq));
            st.prepared.push_back(group);
        }
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

    /// Opens the circuit when a request got no answer in a way that shows the server is
    /// unreachable or hung; any answer keeps it closed.
    fn watch_circuit(&self, answered: &[Answered], circuit: &mut Circuit, report: &mut PushReport) {
        let got_answer = answered.iter().any(|(_, result)| match result {
            Ok(_) => true,
            Err(err) => !is_unanswered(err),
        });
        if got_answer {
            circuit.answered();
            return;
        }
        let Some((_, Err(err))) = answered.first() else {
            return;
        };
        report.network_failures += 1;
        let was_open = circuit.is_open();
        if circuit.unanswered(err.was_unsent()) && !was_open {
            report.unreachable = true;
            report
                .first_error
                .get_or_insert((err.kind(), err.to_string()));
            tracing::warn!(error = %err, "the server does not answer: sending stops until a probe gets through");
        }
    }

    /// Decides what the server's answer means for the entry (recorded by the next turn).
    fn classify(
        &self,
        entry: OutboxEntry,
        result: Result<PushOutcome>,
        server_answering: bool,
        report: &mut PushReport,
    ) -> Answer {
        let sh = &self.shared;
        match result {
            Ok(outcome) => {
                sh.state.record_request(true);
                telemetry::push_outcome(&entry.table, "acked");
                if let Some(server_ms) = outcome.server_time_ms {
                    telemetry::observe_server_clock(&sh.state, server_ms);
                }
                Answer::Settle(Settle::Ack { entry, outcome })
            }
            Err(err) => self.judge_failure(entry, err, server_answering, report),
        }
    }

    /// What a failed push means for its entry: the push policy (`tidesync_core::push_policy`)
    /// decides, this records it.
    fn judge_failure(
        &self,
        entry: OutboxEntry,
        mut err: Error,
        server_answering: bool,
        report: &mut PushReport,
    ) -> Answer {
        let sh = &self.shared;
        let judging = Judging {
            failures: entry.failures,
            max_failures: sh.settings.max_attempts,
            server_answering,
        };
        let verdict = judge(&err, judging);
        // A refusal carries the server's clock too: the first conflict after a start must
        // already be decided with skew correction (BUG-11).
        if let Some(server_ms) = err.server_time_ms() {
            telemetry::observe_server_clock(&sh.state, server_ms);
        }
        // A conflict is a normal answer (the resolver handles it), not a failed request.
        sh.state.record_request(verdict == Verdict::Conflict);
        let table = entry.table.clone();
        let message = err.to_string();
        match verdict {
            Verdict::PauseForAuth => {
                telemetry::push_outcome(&table, "auth");
                if !sh.state.auth_required.swap(true, Ordering::SeqCst) {
                    sh.events.emit(SyncEvent::AuthRequired { table });
                }
                report.auth_blocked = true;
                report
                    .first_error
                    .get_or_insert((ErrorKind::Auth, message.clone()));
                // Nothing is dead-lettered: the entry waits for new credentials.
                Answer::Settle(Settle::Retry {
                    entry,
                    at_ms: 0,
                    message,
                    charged: false,
                })
            }
            Verdict::PauseForUpgrade => {
                telemetry::push_outcome(&table, "upgrade_required");
                if !sh.state.upgrade_required.swap(true, Ordering::SeqCst) {
                    tracing::error!(table = %table, error = %err, "the server says this client is too old: pushing pauses until a newer version runs");
                    sh.events.emit(SyncEvent::UpgradeRequired { table });
                }
                report
                    .first_error
                    .get_or_insert((ErrorKind::UpgradeRequired, message.clone()));
                Answer::Settle(Settle::Retry {
                    entry,
                    at_ms: 0,
                    message,
                    charged: false,
                })
            }
            Verdict::Conflict => {
                telemetry::push_outcome(&table, "conflict");
                let remote = err.take_remote_record();
                Answer::Conflict(entry, remote)
            }
            // Not the entry's fault: back in the queue uncharged. The delay matters only while
            // online (one lost answer); offline, the probe decides, and reconnecting makes
            // every waiting entry due at once.
            Verdict::Unreachable { .. } => {
                telemetry::push_outcome(&table, "unreachable");
                self.retry_later(entry, &err, message, false, report)
            }
            Verdict::Retry { charged } => {
                telemetry::push_outcome(&table, "retry");
                telemetry::retry(err.kind());
                self.retry_later(entry, &err, message, charged, report)
            }
            Verdict::RetriesExhausted => {
                telemetry::push_outcome(&table, "dead_letter");
                let answers = entry.failures.saturating_add(1);
                let why = format!("gave up after {answers} failed answers: {message}");
                let info = dead_letter_info("retries_exhausted", why, &err);
                Answer::Settle(Settle::DeadLetter { entry, info })
            }
            Verdict::Refused => {
                telemetry::push_outcome(&table, "dead_letter");
                let info = dead_letter_info(err.kind().as_str(), message, &err);
                Answer::Settle(Settle::DeadLetter { entry, info })
            }
        }
    }

    /// A retry after the backoff delay (`Retry-After` wins), noted in the report.
    fn retry_later(
        &self,
        entry: OutboxEntry,
        err: &Error,
        message: String,
        charged: bool,
        report: &mut PushReport,
    ) -> Answer {
        let delay = retry_delay(
            &self.shared.settings,
            entry.attempts,
            err.retry_after_delay(),
        );
        report.retried += 1;
        report.retry_seqs.push(entry.seq);
        report
            .first_error
            .get_or_insert((err.kind(), message.clone()));
        Answer::Settle(Settle::Retry {
            entry,
            at_ms: wall_millis() + delay.as_millis() as u64,
            message,
            charged,
        })
    }

    /// A conflict that cannot be decided now: the entry is tried again later, with the reason.
    async fn retry_conflict_later(
        &self,
        entry: &OutboxEntry,
        err: Error,
        report: &mut PushReport,
    ) -> Result<()> {
        let delay = retry_delay(
            &self.shared.settings,
            entry.attempts,
            err.retry_after_delay(),
        );
        self.fenced(RetryLater {
            seq: entry.seq,
            at_ms: wall_millis() + delay.as_millis() as u64,
            message: err.to_string(),
        })
        .await?;
        report.retried += 1;
        report.retry_seqs.push(entry.seq);
        report
            .first_error
            .get_or_insert((err.kind(), err.to_string()));
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
                // Could not see the server's version: try the whole thing again later.
                Err(err) => return self.retry_conflict_later(&entry, err, report).await,
            },
        };
        // The server's version in this app's shape (migrated, decoded), so the strategy
        // compares like with like; one it cannot decode (e.g. written by a newer app version)
        // waits, with the reason, until an upgrade can.
        let remote = match remote
            .map(|record| sh.db.remote().decode_remote_record(&table, record))
            .transpose()
        {
            Ok(remote) => remote,
            Err(err) => return self.retry_conflict_later(&entry, err, report).await,
        };
        let (local, base, local_hlc) = {
            let read = sh.store.read()?;
            // The local side of the conflict is the record as it is now, so its stamp is the
            // latest local write's: edits queued behind the refused entry count (BUG-14).
            let latest_hlc = sh
                .db
                .outbox()
                .pending(&*read, &table, &key)?
                .iter()
                .map(|pending| pending.hlc)
                .max()
                .unwrap_or(entry.hlc)
                .max(entry.hlc);
            (
                sh.db.records().get(&*read, &table, &key)?,
                sh.db.records().base(&*read, &table, &key)?,
                latest_hlc,
            )
        };
        if remote.is_none() && base.is_none() && entry.op == Op::Create {
            // The server has no live version and we never saw one: nothing conflicts. A
            // create refused there meets a tombstone (deleted ids stay taken), so the record
            // is written again as an upsert (the update route) instead.
            self.fenced(CreateAsUpsert { seq: entry.seq }).await?;
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
            local_hlc,
            remote_time_ms,
        };
        let resolution = self
            .resolver
            .send(Resolve(conflict.clone()))
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the conflict resolver stopped"))??;
        self.fenced(ApplyPushResolution {
            seq: entry.seq,
            conflict,
            version,
            resolution,
        })
        .await?;
        report.conflicts += 1;
        Ok(())
    }
}

/// Whether a failure means the request got no answer at all (nothing came back from the
/// server: refused, reset, timed out).
fn is_unanswered(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout)
}

fn dead_letter_info(kind: &str, message: String, err: &Error) -> DeadLetterInfo {
    DeadLetterInfo {
        kind: kind.to_owned(),
        error: message,
        status: err.http_status(),
        response_excerpt: err.response_excerpt().map(str::to_owned),
        at_ms: wall_millis(),
    }
}

/// Sleeps until `at`, or forever when there is none (for `select!`).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the running turn, or forever when there is none (for `select!`).
async fn poll_turn(turn: &mut Option<TurnFuture>) -> Result<TurnDone> {
    match turn {
        Some(running) => running.await,
        None => std::future::pending().await,
    }
}

/// How long until the earliest entry in backoff becomes due, if any (for the scheduler).
///
/// Only entries due after `after_ms` count: pass the start of the push that just ran, whose
/// scans saw every entry due before it (those it did not send cannot be sent now: a paused
/// table, a record parked or waiting for a reference). An entry that became due while that
/// push ended is due already: `Some(Duration::ZERO)`, not `None`, or it would wait for
/// another trigger.
pub fn next_due_in(shared: &SyncShared, after_ms: u64) -> Result<Option<Duration>> {
    let read = shared.store.read()?;
    let now = wall_millis();
    let earliest = shared.db.outbox().earliest_retry_after(&*read, after_ms)?;
    Ok(earliest.map(|at| Duration::from_millis(at.saturating_sub(now))))
}
