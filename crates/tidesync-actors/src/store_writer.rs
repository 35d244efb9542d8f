//! The store writer ([`StoreWriterActor`]): the single writer of the store, with group commit.
//! It runs jobs over one transaction; the rules of what they write live in `tidesync-core`
//! (the outbox queue's in [`tidesync_core::local::Outbox`]).
//!
//! Every write — the application's local writes, push acknowledgements, pulled pages, conflict
//! outcomes, dead-letter operations — reaches the store through this actor. Writes that arrive
//! while a commit is running are collected and committed together in the next transaction
//! (group commit), so many concurrent writers share one fsync, while each caller still gets its
//! own result: a write that fails is dropped from the group without affecting the others.
//!
//! Commits block on fsync, so they run on a dedicated writer thread, never on the actor's
//! thread. The actor forwards jobs to it; the table API can also hand jobs to it directly
//! through a [`StoreWriter`] (see [`GetStoreWriter`]), which saves two thread hand-offs per write.
//!
//! A group runs straight on the store transaction when that is safe to undo: a single job (if it
//! fails, the transaction is dropped uncommitted), or jobs that can all run again
//! ([`WriterJob::rerunnable`], e.g. [`LocalWrite`]: if one fails, the transaction is dropped and
//! the others run again without it). Otherwise each job runs in a [`Staged`] sub-transaction.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{broadcast, oneshot};

use tidesync_core::local::{Change, LocalDb, LocalWritten, Origin, Staged, WriteOp};
use tidesync_core::{Error, ErrorKind, Result, Store, WriteTxn};

use crate::telemetry;

/// Most write jobs committed in one transaction.
const MAX_GROUP: usize = 1024;

/// How long the writer waits for one more job while a group is smaller than the last one.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(50);

/// A unit of work run inside a group-commit transaction.
pub trait WriterJob: Send + 'static {
    /// Does the work against the (possibly staged) transaction; returns the changes to announce.
    fn run(&mut self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<Vec<Change>>;
    /// Delivers the outcome once the transaction committed (or failed).
    fn finish(self: Box<Self>, outcome: Result<()>);
    /// Takes this job's changes that nobody was watching, before [`WriterJob::finish`], so
    /// that they are freed where the caller is rather than on the writer thread (a bulk
    /// batch's thousand records). The default frees them here.
    fn keep_unwatched(&mut self, unwatched: Vec<Change>) {
        drop(unwatched);
    }
    /// Whether [`WriterJob::run`] may be called again after the transaction it ran in was
    /// dropped uncommitted (its work is plain data, not a one-shot closure). Such jobs skip the
    /// per-job [`Staged`] buffer.
    fn rerunnable(&self) -> bool {
        false
    }
}

#[cfg(feature = "test-support")]
/// A [`WriterJob`] built from a closure that returns a typed value.
struct FnJob<T, F> {
    work: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

#[cfg(feature = "test-support")]
impl<T, F> WriterJob for FnJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&LocalDb, &mut dyn WriteTxn) -> Result<(T, Vec<Change>)> + Send + 'static,
{
    fn run(&mut self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<Vec<Change>> {
        let work = self
            .work
            .take()
            .ok_or_else(|| Error::internal("write job ran twice"))?;
        let (value, changes) = work(db, txn)?;
        self.value = Some(value);
        Ok(changes)
    }

    fn finish(self: Box<Self>, outcome: Result<()>) {
        let FnJob { value, reply, .. } = *self;
        let result = outcome.and_then(|()| {
            value.ok_or_else(|| Error::internal("write job finished without a value"))
        });
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }
}

/// The application's writes as a job: plain data, so it can run again.
struct LocalJob {
    ops: Vec<WriteOp>,
    written: Option<LocalWritten>,
    reply: oneshot::Sender<Result<LocalWritten>>,
}

impl LocalJob {
    fn boxed(ops: Vec<WriteOp>) -> (Box<dyn WriterJob>, oneshot::Receiver<Result<LocalWritten>>) {
        let (reply, rx) = oneshot::channel();
        let job = LocalJob {
            ops,
            written: None,
            reply,
        };
        (Box::new(job), rx)
    }
}

impl WriterJob for LocalJob {
    fn run(&mut self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<Vec<Change>> {
        let written = db.records().apply_local_tracked(txn, &self.ops)?;
        let changes = written.changes.clone();
        self.written = Some(written);
        Ok(changes)
    }

    fn finish(self: Box<Self>, outcome: Result<()>) {
        let LocalJob { written, reply, .. } = *self;
        let result = outcome.and_then(|()| {
            written.ok_or_else(|| Error::internal("write job finished without a value"))
        });
        let _ = reply.send(result);
    }

    fn rerunnable(&self) -> bool {
        true
    }
}

#[cfg(feature = "test-support")]
/// Any write, as a closure over the local database and the transaction: for tests and tools
/// only (the `test-support` feature). Library code sends typed [`StoreCommand`]s, so every
/// write the engine makes can be read by name.
#[derive(Message)]
#[rtype(result = "Result<T>")]
pub struct StoreClosure<T: Send + 'static> {
    job: Box<dyn WriterJob>,
    reply: oneshot::Receiver<Result<T>>,
}

#[cfg(feature = "test-support")]
impl<T: Send + 'static> StoreClosure<T> {
    /// Wraps `work`, which returns a value for the caller and the changes to announce.
    pub fn new<F>(work: F) -> Self
    where
        F: FnOnce(&LocalDb, &mut dyn WriteTxn) -> Result<(T, Vec<Change>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        StoreClosure {
            job: Box::new(FnJob {
                work: Some(work),
                value: None,
                reply: tx,
            }),
            reply: rx,
        }
    }
}

/// A typed write the store writer runs inside a group-commit transaction: plain data (no
/// closure crosses the actor boundary), whose [`StoreCommand::run`] says exactly what it does
/// to the local database. The commands the sync actors send live in [`crate::commands`]; an
/// application or a tool may define its own.
pub trait StoreCommand: Send + 'static {
    /// What the caller gets back once the transaction committed.
    type Output: Send + 'static;
    /// Does the work; returns the caller's value and the changes to announce to watchers.
    fn run(self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<(Self::Output, Vec<Change>)>;
}

/// A sync command, run under the leadership epoch its cycle started with: the writer checks
/// the epoch once, before the command runs, and refuses it with [`ErrorKind::Fenced`] once a
/// newer leader claimed the database (DESIGN invariant 9). Every write of the pusher and the
/// puller goes through this message, so fencing cannot be forgotten at a call site.
pub struct Fenced<C: StoreCommand> {
    /// The epoch the command runs under.
    pub epoch: u64,
    /// The command.
    pub command: C,
}

impl<C: StoreCommand> Message for Fenced<C> {
    type Result = Result<C::Output>;
}

/// A command that is not part of a sync cycle (the application's dead-letter, quarantine and
/// conflict operations; claiming an epoch), run without an epoch check.
pub struct Unfenced<C: StoreCommand>(pub C);

impl<C: StoreCommand> Message for Unfenced<C> {
    type Result = Result<C::Output>;
}

/// A [`StoreCommand`] as a one-shot job of the writer thread.
struct CommandJob<C: StoreCommand> {
    epoch: Option<u64>,
    command: Option<C>,
    value: Option<C::Output>,
    unwatched: Vec<Change>,
    reply: oneshot::Sender<CommandReply<C::Output>>,
}

/// A command's result, and its changes nobody watched (freed by whoever receives the reply).
type CommandReply<T> = (Result<T>, Vec<Change>);

impl<C: StoreCommand> CommandJob<C> {
    fn boxed(
        epoch: Option<u64>,
        command: C,
    ) -> (
        Box<dyn WriterJob>,
        oneshot::Receiver<CommandReply<C::Output>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let job = CommandJob {
            epoch,
            command: Some(command),
            value: None,
            unwatched: Vec::new(),
            reply,
        };
        (Box::new(job), rx)
    }
}

impl<C: StoreCommand> WriterJob for CommandJob<C> {
    fn run(&mut self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<Vec<Change>> {
        let command = self
            .command
            .take()
            .ok_or_else(|| Error::internal("store command ran twice"))?;
        if let Some(epoch) = self.epoch {
            db.fence().check_epoch(&*txn, Some(epoch))?;
        }
        let (value, changes) = command.run(db, txn)?;
        self.value = Some(value);
        Ok(changes)
    }

    fn finish(self: Box<Self>, outcome: Result<()>) {
        let CommandJob {
            value,
            unwatched,
            reply,
            ..
        } = *self;
        let result = outcome.and_then(|()| {
            value.ok_or_else(|| Error::internal("store command finished without a value"))
        });
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send((result, unwatched));
    }

    fn keep_unwatched(&mut self, unwatched: Vec<Change>) {
        self.unwatched = unwatched;
    }
}

/// The application's writes, applied all or nothing with their outbox entries.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Change>>")]
pub struct LocalWrite(pub Vec<WriteOp>);

/// Sent to the scheduler after a commit that queued local changes.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct OutboxChanged;

/// Asks the actor for a [`StoreWriter`], a direct line to its writer thread.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<StoreWriter>")]
pub struct GetStoreWriter;

enum Msg {
    /// A job, and when it was submitted (for [`telemetry::STORE_QUEUE_WAIT`]).
    Job(Box<dyn WriterJob>, Instant),
    Stop,
}

/// A direct line to the writer thread: local writes submitted here join the same queue (and
/// the same group commits) as the actor's, without passing through the actor's thread. Cheap
/// to clone. Fails with [`ErrorKind::Closed`] once the actor stopped.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Msg>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("closed", &self.closed.load(Ordering::Acquire))
            .finish()
    }
}

impl StoreWriter {
    /// Applies the application's writes, all or nothing with their outbox entries, once
    /// durable; returns the changes.
    pub async fn local_write(&self, ops: Vec<WriteOp>) -> Result<Vec<Change>> {
        Ok(self.local_write_tracked(ops).await?.changes)
    }

    /// [`StoreWriter::local_write`], also telling which outbox entry carries each op (what a
    /// write receipt follows).
    pub async fn local_write_tracked(&self, ops: Vec<WriteOp>) -> Result<LocalWritten> {
        let (job, reply) = LocalJob::boxed(ops);
        self.submit(job);
        await_reply(reply).await
    }

    /// Queues `command` now, not when the answer is awaited, and returns what waits for it:
    /// the caller can prepare its next command while the writer thread commits this one (a
    /// bulk import overlaps preparing a batch with writing the one before). Unfenced, like
    /// [`crate::wiring::EngineActors::command`].
    pub fn submit_command<C: StoreCommand>(&self, command: C) -> PendingReply<C::Output> {
        let (job, reply) = CommandJob::boxed(None, command);
        self.submit(job);
        PendingReply(reply)
    }

    /// Queues a job; if the writer is gone, the job is dropped and its caller sees `Closed`.
    fn submit(&self, job: Box<dyn WriterJob>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        // A send error means the thread exited: dropping the job closes its reply channel.
        let _ = self.tx.send(Msg::Job(job, Instant::now()));
    }
}

/// The answer to a command queued with [`StoreWriter::submit_command`].
#[derive(Debug)]
pub struct PendingReply<T>(oneshot::Receiver<CommandReply<T>>);

impl<T> PendingReply<T> {
    /// The command's result, once its transaction committed (or failed); `Closed` if the
    /// writer stopped first.
    pub async fn result(self) -> Result<T> {
        await_command(self.0).await
    }

    /// [`PendingReply::result`], with the command's changes nobody watched, for the caller
    /// to free when it suits it (a bulk writer frees them once its next batch is queued).
    pub async fn result_and_unwatched(self) -> Result<(T, Vec<Change>)> {
        match self.0.await {
            Ok((result, unwatched)) => result.map(|value| (value, unwatched)),
            Err(_) => Err(closed()),
        }
    }
}

/// Stops the writer thread when the actor goes away (however the actor system ends): jobs
/// queued before are still committed, later ones fail with `Closed`. Waits for the thread, so
/// that the store is released once the actor system is down (the file can be reopened).
struct StopOnDrop {
    writer: StoreWriter,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.writer.closed.store(true, Ordering::Release);
        let _ = self.writer.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

/// The store writer actor. See the module docs.
pub struct StoreWriterActor {
    store: Arc<dyn Store>,
    db: LocalDb,
    changes: broadcast::Sender<Change>,
    on_local_change: Option<Recipient<OutboxChanged>>,
    writer: Option<StopOnDrop>,
}

impl StoreWriterActor {
    /// A writer for `store`; committed changes are announced on `changes`.
    pub fn new(store: Arc<dyn Store>, db: LocalDb, changes: broadcast::Sender<Change>) -> Self {
        StoreWriterActor {
            store,
            db,
            changes,
            on_local_change: None,
            writer: None,
        }
    }

    /// Who to tell when local changes were queued (the scheduler).
    pub fn notify_local_changes(mut self, recipient: Recipient<OutboxChanged>) -> Self {
        self.on_local_change = Some(recipient);
        self
    }

    fn enqueue(&mut self, job: Box<dyn WriterJob>) {
        match &self.writer {
            Some(stop) => stop.writer.submit(job),
            None => job.finish(Err(closed())),
        }
    }

    fn spawn_writer(&self) -> std::io::Result<StopOnDrop> {
        let (tx, rx) = mpsc::channel();
        let thread = WriterThread {
            store: self.store.clone(),
            db: self.db.clone(),
            changes: self.changes.clone(),
            on_local_change: self.on_local_change.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tidesync-writer".into())
            .spawn(move || thread.run(rx))?;
        Ok(StopOnDrop {
            writer: StoreWriter {
                tx,
                closed: Arc::new(AtomicBool::new(false)),
            },
            thread: Some(thread),
        })
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the store writer stopped")
}

struct WriterThread {
    store: Arc<dyn Store>,
    db: LocalDb,
    changes: broadcast::Sender<Change>,
    on_local_change: Option<Recipient<OutboxChanged>>,
}

impl WriterThread {
    /// Takes whatever is queued (up to [`MAX_GROUP`], waiting briefly while the group is
    /// smaller than the last one) as one group, commits it, repeats until stopped.
    fn run(self, rx: mpsc::Receiver<Msg>) {
        let mut stopping = false;
        // Size of the last group: about how many writers are waiting on each commit.
        let mut expected = 1;
        while !stopping {
            let Ok(first) = rx.recv() else { return };
            let mut group = Vec::new();
            let mut oldest: Option<Instant> = None;
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Job(job, submitted) => {
                        oldest.get_or_insert(submitted);
                        group.push(job);
                    }
                    Msg::Stop => {
                        stopping = true;
                        break;
                    }
                }
                next = if group.len() >= MAX_GROUP {
                    None
                } else if group.len() < expected {
                    // The writers just answered are still coming back: wait a moment for
                    // them rather than commit the first arrival alone and the rest next time
                    // (a commit costs far more than the wait).
                    rx.recv_timeout(GATHER_WAIT).ok()
                } else {
                    rx.try_recv().ok()
                };
            }
            if group.is_empty() {
                continue;
            }
            expected = group.len();
            let (store, db, changes) = (&*self.store, &self.db, &self.changes);
            let mut times = GroupTimes {
                queue_wait: oldest.map_or(Duration::ZERO, |at| at.elapsed()),
                ..GroupTimes::default()
            };
            let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                commit_group(store, db, group, changes, &mut times)
            }));
            // A group that failed is measured too (a committed one was, before its replies).
            times.record();
            match committed {
                Ok(local) if local > 0 => {
                    if let Some(recipient) = &self.on_local_change {
                        recipient.do_send(OutboxChanged);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // A bug in a job: its group's callers see their reply channels closed
                    // (`ErrorKind::Closed`); keep serving the others.
                    tracing::error!("group commit panicked");
                }
            }
        }
    }
}

/// Where a group's time went on the writer thread (see [`telemetry::store_group`]).
#[derive(Debug, Default)]
struct GroupTimes {
    /// How long its oldest job waited for the writer.
    queue_wait: Duration,
    /// Running the jobs in the transaction (every attempt).
    work: Duration,
    /// The store's commit (every attempt).
    commit: Duration,
    /// Recorded already.
    recorded: bool,
}

impl GroupTimes {
    /// Commits `txn`, counting the time since `started` (the transaction's opening) as work
    /// and the commit's own as commit.
    fn commit_timed(&mut self, txn: Box<dyn WriteTxn>, started: Instant) -> Result<()> {
        let committing = Instant::now();
        self.work += committing - started;
        let committed = txn.commit();
        self.commit += committing.elapsed();
        committed
    }

    /// Records the group's times once. A committed group is recorded before its callers get
    /// their replies, so a caller that reads the metrics next sees its own commit counted.
    fn record(&mut self) {
        if !std::mem::replace(&mut self.recorded, true) {
            telemetry::store_group(self.queue_wait, self.work, self.commit);
        }
    }
}

/// Runs one group in one transaction; replies to every job; announces changes in commit
/// order. Returns how many local (application) changes were committed.
fn commit_group(
    store: &dyn Store,
    db: &LocalDb,
    mut group: Vec<Box<dyn WriterJob>>,
    changes: &broadcast::Sender<Change>,
    times: &mut GroupTimes,
) -> usize {
    if group.len() == 1 || group.iter().all(|job| job.rerunnable()) {
        match commit_direct(store, db, &mut group, times) {
            Direct::Done(outcomes) => {
                times.record();
                return finish_group(group, outcomes, changes);
            }
            Direct::Failed(index, err) => {
                // The transaction was dropped: nothing of the group was written. The failed job
                // gets its error; the others run again, each in its own sub-transaction.
                group.remove(index).finish(Err(err));
                if group.is_empty() {
                    return 0;
                }
            }
            Direct::Broken(err) => {
                fail_all(group, &err);
                return 0;
            }
        }
    }
    commit_staged(store, db, group, changes, times)
}

enum Direct {
    /// Committed; each job's changes.
    Done(Vec<Result<Vec<Change>>>),
    /// Job `index` failed; the transaction was dropped uncommitted.
    Failed(usize, Error),
    /// The store failed (open or commit): every job fails.
    Broken(Error),
}

/// Runs every job straight on the transaction, stopping at the first failure.
fn commit_direct(
    store: &dyn Store,
    db: &LocalDb,
    group: &mut [Box<dyn WriterJob>],
    times: &mut GroupTimes,
) -> Direct {
    let started = Instant::now();
    let mut txn = match store.write() {
        Ok(txn) => txn,
        Err(err) => return Direct::Broken(err),
    };
    let mut outcomes = Vec::with_capacity(group.len());
    for (index, job) in group.iter_mut().enumerate() {
        match job.run(db, &mut *txn) {
            Ok(job_changes) => outcomes.push(Ok(job_changes)),
            Err(err) => {
                times.work += started.elapsed();
                return Direct::Failed(index, err);
            }
        }
    }
    match times.commit_timed(txn, started) {
        Ok(()) => Direct::Done(outcomes),
        Err(err) => Direct::Broken(err),
    }
}

/// Runs each job in a [`Staged`] sub-transaction, so a failing job is dropped alone.
fn commit_staged(
    store: &dyn Store,
    db: &LocalDb,
    mut group: Vec<Box<dyn WriterJob>>,
    changes: &broadcast::Sender<Change>,
    times: &mut GroupTimes,
) -> usize {
    let started = Instant::now();
    let mut txn = match store.write() {
        Ok(txn) => txn,
        Err(err) => {
            fail_all(group, &err);
            return 0;
        }
    };
    let mut outcomes: Vec<Result<Vec<Change>>> = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let mut staged = Staged::new(&mut *txn);
        let outcome = job.run(db, &mut staged);
        match outcome {
            Ok(job_changes) => {
                if let Err(err) = staged.apply() {
                    // The transaction itself is broken: nothing of the group can commit.
                    fail_all(group, &err);
                    return 0;
                }
                outcomes.push(Ok(job_changes));
            }
            Err(err) => outcomes.push(Err(err)),
        }
    }
    if let Err(err) = times.commit_timed(txn, started) {
        fail_all(group, &err);
        return 0;
    }
    times.record();
    finish_group(group, outcomes, changes)
}

/// Replies to every job of a committed group and announces its changes in commit order.
fn finish_group(
    group: Vec<Box<dyn WriterJob>>,
    outcomes: Vec<Result<Vec<Change>>>,
    changes: &broadcast::Sender<Change>,
) -> usize {
    let mut local = 0;
    for (mut job, outcome) in group.into_iter().zip(outcomes) {
        match outcome {
            Ok(job_changes) => {
                let mut unwatched = Vec::new();
                for change in job_changes {
                    if change.origin == Origin::Local {
                        local += 1;
                    }
                    // No receivers is fine: nobody is watching.
                    if let Err(broadcast::error::SendError(change)) = changes.send(change) {
                        unwatched.push(change);
                    }
                }
                job.keep_unwatched(unwatched);
                job.finish(Ok(()));
            }
            Err(err) => job.finish(Err(err)),
        }
    }
    local
}

fn fail_all(group: Vec<Box<dyn WriterJob>>, err: &Error) {
    tracing::error!(error = %err, jobs = group.len(), "group commit failed");
    for job in group {
        job.finish(Err(Error::new(err.kind(), err.message().to_owned())));
    }
}

impl Actor for StoreWriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Writers wait on their reply channel, not on the mailbox, so a deep mailbox only
        // means callers are queueing; keep it generous so `send` rarely waits.
        ctx.set_mailbox_capacity(4096);
        match self.spawn_writer() {
            Ok(stop) => self.writer = Some(stop),
            Err(err) => {
                tracing::error!(error = %err, "cannot start the store writer thread");
                ctx.stop();
            }
        }
    }
}

/// A command's result; its unwatched changes are freed here, on the receiving side.
async fn await_command<T>(reply: oneshot::Receiver<CommandReply<T>>) -> Result<T> {
    match reply.await {
        Ok((result, unwatched)) => {
            drop(unwatched);
            result
        }
        Err(_) => Err(closed()),
    }
}

async fn await_reply<T>(reply: oneshot::Receiver<Result<T>>) -> Result<T> {
    reply.await.unwrap_or_else(|_| Err(closed()))
}

impl<C: StoreCommand> Handler<Fenced<C>> for StoreWriterActor {
    type Result = ResponseFuture<Result<C::Output>>;

    fn handle(&mut self, msg: Fenced<C>, _ctx: &mut Context<Self>) -> Self::Result {
        let (job, reply) = CommandJob::boxed(Some(msg.epoch), msg.command);
        self.enqueue(job);
        Box::pin(await_command(reply))
    }
}

impl<C: StoreCommand> Handler<Unfenced<C>> for StoreWriterActor {
    type Result = ResponseFuture<Result<C::Output>>;

    fn handle(&mut self, msg: Unfenced<C>, _ctx: &mut Context<Self>) -> Self::Result {
        let (job, reply) = CommandJob::boxed(None, msg.0);
        self.enqueue(job);
        Box::pin(await_command(reply))
    }
}

#[cfg(feature = "test-support")]
impl<T: Send + 'static> Handler<StoreClosure<T>> for StoreWriterActor {
    type Result = ResponseFuture<Result<T>>;

    fn handle(&mut self, msg: StoreClosure<T>, _ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.job);
        Box::pin(await_reply(msg.reply))
    }
}

impl Handler<LocalWrite> for StoreWriterActor {
    type Result = ResponseFuture<Result<Vec<Change>>>;

    fn handle(&mut self, msg: LocalWrite, _ctx: &mut Context<Self>) -> Self::Result {
        let (job, reply) = LocalJob::boxed(msg.0);
        self.enqueue(job);
        Box::pin(async move { Ok(await_reply(reply).await?.changes) })
    }
}

impl Handler<GetStoreWriter> for StoreWriterActor {
    type Result = Result<StoreWriter>;

    fn handle(&mut self, _msg: GetStoreWriter, _ctx: &mut Context<Self>) -> Self::Result {
        self.writer
            .as_ref()
            .map(|stop| stop.writer.clone())
            .ok_or_else(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_core::{HybridClock, Key, TableSpec};
    use tidesync_store_memory::MemoryStore;

    fn setup() -> (MemoryStore, LocalDb, broadcast::Sender<Change>) {
        let schema = tidesync_core::local::Schema::new([TableSpec::new("posts")]).unwrap();
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        (MemoryStore::new(), db, broadcast::channel(64).0)
    }

    fn put(id: &str) -> Vec<WriteOp> {
        vec![WriteOp::Put {
            table: "posts".into(),
            record: json!({"id": id, "title": "t"}),
        }]
    }

    fn update_missing(id: &str) -> Vec<WriteOp> {
        vec![WriteOp::Update {
            table: "posts".into(),
            key: Key::from(id),
            patch: json!({"title": "x"}),
        }]
    }

    fn insert(id: &str) -> Vec<WriteOp> {
        vec![WriteOp::Insert {
            table: "posts".into(),
            record: json!({"id": id}),
        }]
    }

    fn stored(store: &MemoryStore, db: &LocalDb, id: &str) -> bool {
        db.records()
            .get(&*store.read().unwrap(), "posts", &Key::from(id))
            .unwrap()
            .is_some()
    }

    fn outbox_len(store: &MemoryStore, db: &LocalDb) -> usize {
        db.outbox()
            .entries(&*store.read().unwrap(), None, 100)
            .unwrap()
            .len()
    }

    #[test]
    fn a_failing_local_write_leaves_the_rest_of_its_group_committed() {
        let (store, db, changes) = setup();
        let mut replies = Vec::new();
        let mut group = Vec::new();
        for ops in [put("a"), update_missing("b"), put("c")] {
            let (job, reply) = LocalJob::boxed(ops);
            group.push(job);
            replies.push(reply);
        }
        let mut times = GroupTimes::default();
        assert_eq!(commit_group(&store, &db, group, &changes, &mut times), 2);
        // Measured, both attempts' work (the direct run, then each job staged) and the commit,
        // and recorded before the replies went out.
        assert!(times.recorded, "{times:?}");
        assert!(
            times.work > Duration::ZERO && times.commit > Duration::ZERO,
            "{times:?}"
        );
        let outcomes: Vec<_> = replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect();
        assert_eq!(outcomes[0].as_ref().unwrap().changes.len(), 1);
        let err = outcomes[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.table_name(), Some("posts"));
        assert_eq!(outcomes[2].as_ref().unwrap().changes.len(), 1);
        assert!(stored(&store, &db, "a") && stored(&store, &db, "c"));
        assert!(!stored(&store, &db, "b"));
        assert_eq!(outbox_len(&store, &db), 2);
    }

    #[test]
    fn a_job_sees_the_writes_of_earlier_jobs_of_its_group() {
        let (store, db, changes) = setup();
        let (first, mut first_reply) = LocalJob::boxed(insert("a"));
        let (second, mut second_reply) = LocalJob::boxed(insert("a"));
        assert_eq!(
            commit_group(
                &store,
                &db,
                vec![first, second],
                &changes,
                &mut GroupTimes::default()
            ),
            1
        );
        assert!(first_reply.try_recv().unwrap().is_ok());
        let err = second_reply.try_recv().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(outbox_len(&store, &db), 1);
    }

    #[test]
    fn a_single_failing_job_writes_nothing_and_gets_its_error() {
        let (store, db, changes) = setup();
        let write = StoreClosure::new(|db: &LocalDb, txn: &mut dyn WriteTxn| {
            db.records().apply_local(txn, &put("a"))?;
            Err::<((), Vec<Change>), _>(Error::invalid("refused after writing").table("posts"))
        });
        let mut reply = write.reply;
        assert_eq!(
            commit_group(
                &store,
                &db,
                vec![write.job],
                &changes,
                &mut GroupTimes::default()
            ),
            0
        );
        let err = reply.try_recv().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!stored(&store, &db, "a"));
        assert_eq!(outbox_len(&store, &db), 0);
    }

    #[test]
    fn a_mixed_group_stages_each_job() {
        let (store, db, changes) = setup();
        let closure = StoreClosure::new(|db: &LocalDb, txn: &mut dyn WriteTxn| {
            let changes = db.records().apply_local(txn, &put("a"))?;
            Ok(((), changes))
        });
        let mut closure_reply = closure.reply;
        let (failing, mut failing_reply) = LocalJob::boxed(update_missing("b"));
        let (ok, mut ok_reply) = LocalJob::boxed(put("c"));
        let local = commit_group(
            &store,
            &db,
            vec![closure.job, failing, ok],
            &changes,
            &mut GroupTimes::default(),
        );
        assert_eq!(local, 2);
        assert!(closure_reply.try_recv().unwrap().is_ok());
        assert!(failing_reply.try_recv().unwrap().is_err());
        assert!(ok_reply.try_recv().unwrap().is_ok());
        assert!(stored(&store, &db, "a") && stored(&store, &db, "c"));
        assert_eq!(outbox_len(&store, &db), 2);
    }

    #[test]
    fn writes_after_the_actor_stopped_fail_as_closed() {
        let system = actix::System::new();
        let (store, db, changes) = setup();
        let store: Arc<dyn Store> = Arc::new(store);
        let writer = system.block_on(async {
            let addr = StoreWriterActor::new(store.clone(), db.clone(), changes).start();
            let writer = addr.send(GetStoreWriter).await.unwrap().unwrap();
            writer.local_write(put("a")).await.unwrap();
            addr.send(LocalWrite(put("b"))).await.unwrap().unwrap();
            writer
        });
        drop(system);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime.block_on(writer.local_write(put("c"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert_eq!(
            db.outbox()
                .entries(&*store.read().unwrap(), None, 10)
                .unwrap()
                .len(),
            2
        );
    }
}
