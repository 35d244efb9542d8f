//! The Outbox actor: the single writer of the store, with group commit.
//!
//! Every write — the application's local writes, push acknowledgements, pulled pages, conflict
//! outcomes, dead-letter operations — reaches the store through this actor. Writes that arrive
//! while a commit is running are collected and committed together in the next transaction
//! (group commit), so many concurrent writers share one fsync, while each caller still gets its
//! own result: a write that fails validation is dropped from the group without affecting the
//! others (each runs in a [`Staged`] sub-transaction).
//!
//! Commits block on fsync, so they run on tokio's blocking pool, never on the actor's thread.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{broadcast, oneshot};

use tidesync_core::local::{Change, LocalDb, Staged, WriteOp};
use tidesync_core::{Error, ErrorKind, Result, Store, WriteTxn};

/// Most write jobs committed in one transaction.
const MAX_GROUP: usize = 1024;

/// A unit of work run inside a group-commit transaction.
pub trait WriteJob: Send + 'static {
    /// Does the work against the (staged) transaction; returns the changes to announce.
    fn run(&mut self, db: &LocalDb, txn: &mut dyn WriteTxn) -> Result<Vec<Change>>;
    /// Delivers the outcome once the transaction committed (or failed).
    fn finish(self: Box<Self>, outcome: Result<()>);
}

/// A [`WriteJob`] built from a closure that returns a typed value.
struct FnJob<T, F> {
    work: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for FnJob<T, F>
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

/// Any write, as a closure over the local database and the transaction.
#[derive(Message)]
#[rtype(result = "Result<T>")]
pub struct Write<T: Send + 'static> {
    job: Box<dyn WriteJob>,
    reply: oneshot::Receiver<Result<T>>,
}

impl<T: Send + 'static> Write<T> {
    /// Wraps `work`, which returns a value for the caller and the changes to announce.
    pub fn new<F>(work: F) -> Self
    where
        F: FnOnce(&LocalDb, &mut dyn WriteTxn) -> Result<(T, Vec<Change>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Write {
            job: Box::new(FnJob {
                work: Some(work),
                value: None,
                reply: tx,
            }),
            reply: rx,
        }
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

/// The Outbox actor. See the module docs.
pub struct OutboxActor {
    store: Arc<dyn Store>,
    db: LocalDb,
    queue: Vec<Box<dyn WriteJob>>,
    committing: bool,
    changes: broadcast::Sender<Change>,
    on_local_change: Option<Recipient<OutboxChanged>>,
}

impl OutboxActor {
    /// A writer for `store`; committed changes are announced on `changes`.
    pub fn new(store: Arc<dyn Store>, db: LocalDb, changes: broadcast::Sender<Change>) -> Self {
        OutboxActor {
            store,
            db,
            queue: Vec::new(),
            committing: false,
            changes,
            on_local_change: None,
        }
    }

    /// Who to tell when local changes were queued (the scheduler).
    pub fn notify_local_changes(mut self, recipient: Recipient<OutboxChanged>) -> Self {
        self.on_local_change = Some(recipient);
        self
    }

    fn enqueue(&mut self, job: Box<dyn WriteJob>, ctx: &mut Context<Self>) {
        self.queue.push(job);
        if !self.committing {
            self.commit_next_group(ctx);
        }
    }

    fn commit_next_group(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            self.committing = false;
            return;
        }
        self.committing = true;
        let take = self.queue.len().min(MAX_GROUP);
        let group: Vec<Box<dyn WriteJob>> = self.queue.drain(..take).collect();
        let store = self.store.clone();
        let db = self.db.clone();
        let changes = self.changes.clone();
        let blocking =
            tokio::task::spawn_blocking(move || commit_group(&*store, &db, group, &changes));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(blocking).map(|result, actor, ctx| {
                match result {
                    Ok(local_changes) if local_changes > 0 => {
                        if let Some(recipient) = &actor.on_local_change {
                            recipient.do_send(OutboxChanged);
                        }
                    }
                    Ok(_) => {}
                    Err(join_error) => {
                        // The commit thread panicked: a bug. Its callers see their reply
                        // channels closed (`ErrorKind::Closed`); keep serving the others.
                        tracing::error!(error = %join_error, "group commit task failed");
                    }
                }
                actor.commit_next_group(ctx);
            }),
        );
    }
}

/// Runs one group in one transaction; replies to every job; announces changes in commit
/// order. Returns how many local (application) changes were committed.
fn commit_group(
    store: &dyn Store,
    db: &LocalDb,
    mut group: Vec<Box<dyn WriteJob>>,
    changes: &broadcast::Sender<Change>,
) -> usize {
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
    if let Err(err) = txn.commit() {
        fail_all(group, &err);
        return 0;
    }
    let mut local = 0;
    for (job, outcome) in group.into_iter().zip(outcomes) {
        match outcome {
            Ok(job_changes) => {
                for change in job_changes {
                    if change.origin == tidesync_core::local::Origin::Local {
                        local += 1;
                    }
                    // No receivers is fine: nobody is watching.
                    let _ = changes.send(change);
                }
                job.finish(Ok(()));
            }
            Err(err) => job.finish(Err(err)),
        }
    }
    local
}

fn fail_all(group: Vec<Box<dyn WriteJob>>, err: &Error) {
    tracing::error!(error = %err, jobs = group.len(), "group commit failed");
    for job in group {
        job.finish(Err(Error::new(err.kind(), err.message().to_owned())));
    }
}

impl Actor for OutboxActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Writers wait on their reply channel, not on the mailbox, so a deep mailbox only
        // means callers are queueing; keep it generous so `send` rarely waits.
        ctx.set_mailbox_capacity(4096);
    }
}

async fn await_reply<T>(reply: oneshot::Receiver<Result<T>>) -> Result<T> {
    reply
        .await
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Closed, "the store writer stopped")))
}

impl<T: Send + 'static> Handler<Write<T>> for OutboxActor {
    type Result = ResponseFuture<Result<T>>;

    fn handle(&mut self, msg: Write<T>, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.job, ctx);
        Box::pin(await_reply(msg.reply))
    }
}

impl Handler<LocalWrite> for OutboxActor {
    type Result = ResponseFuture<Result<Vec<Change>>>;

    fn handle(&mut self, msg: LocalWrite, ctx: &mut Context<Self>) -> Self::Result {
        let write = Write::new(move |db: &LocalDb, txn: &mut dyn WriteTxn| {
            let changes = db.apply_local(txn, &msg.0)?;
            Ok((changes.clone(), changes))
        });
        self.enqueue(write.job, ctx);
        Box::pin(await_reply(write.reply))
    }
}
