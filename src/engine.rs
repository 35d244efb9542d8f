//! The engine handle and its builder.

use std::sync::{Arc, Mutex};

use actix::Addr;
use tokio::sync::broadcast;

use tidesync_actors::{ActorSystem, LocalWrite, OutboxActor};
use tidesync_core::local::{Change, LocalDb, OutboxStats, Schema, WriteOp};
use tidesync_core::{Error, ErrorKind, HybridClock, OutboxEntry, Result, Store, TableSpec};

use crate::batch::Batch;
use crate::table::Table;
use crate::watch::Watch;

/// How many committed changes a slow watcher may fall behind before it is told it lagged.
const WATCH_CAPACITY: usize = 4096;

/// Configures and starts an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    tables: Vec<TableSpec>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store.as_ref().map(|s| s.backend()))
            .field("tables", &self.tables)
            .finish()
    }
}

impl EngineBuilder {
    /// The local store (e.g. `RedbStore::open("app.redb")?` or `MemoryStore::new()`).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared elsewhere.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Declares a table.
    pub fn table(mut self, spec: TableSpec) -> Self {
        self.tables.push(spec);
        self
    }

    /// Validates the configuration, recovers from any previous crash (entries that were in
    /// flight go back in the queue) and starts the actors on a dedicated thread.
    pub fn start(self) -> Result<Engine> {
        let store = self.store.ok_or_else(|| {
            Error::config("no store configured: call .store(RedbStore::open(path)?) first")
        })?;
        let schema = Schema::new(self.tables)?;
        let db = LocalDb::new(schema, Arc::new(HybridClock::new()));
        db.restore_clock(&*store.read()?)?;
        let mut txn = store.write()?;
        let reset = db.reset_in_flight(&mut *txn)?;
        txn.commit()?;
        if reset > 0 {
            tracing::info!(
                entries = reset,
                "re-queued entries that were in flight at the last stop"
            );
        }

        let (changes, _) = broadcast::channel(WATCH_CAPACITY);
        let (actor_store, actor_db, actor_changes) = (store.clone(), db.clone(), changes.clone());
        let (system, outbox) = ActorSystem::start("engine", move || {
            actix::Actor::start(OutboxActor::new(actor_store, actor_db, actor_changes))
        })?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                db,
                outbox,
                changes,
                system: Mutex::new(system),
            }),
        })
    }
}

struct Inner {
    store: Arc<dyn Store>,
    db: LocalDb,
    outbox: Addr<OutboxActor>,
    changes: broadcast::Sender<Change>,
    system: Mutex<ActorSystem>,
}

/// A running engine. Cheap to clone; `Send + Sync`; usable from any async runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.inner.store.backend())
            .finish()
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A typed handle on `table`; `T` is any serde type whose JSON form is an object.
    /// Use `serde_json::Value` for untyped JSON access.
    pub fn table<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<Table<T>> {
        self.inner.db.schema().table(table)?;
        Ok(Table::new(self.clone(), table))
    }

    /// An atomic multi-record, multi-table batch.
    pub fn batch(&self) -> Batch {
        Batch::new(self.clone())
    }

    /// Committed changes, of one table or of all; includes changes made by sync.
    pub fn watch(&self, table: Option<&str>) -> Result<Watch> {
        if let Some(table) = table {
            self.inner.db.schema().table(table)?;
        }
        Ok(Watch::new(
            self.inner.changes.subscribe(),
            table.map(str::to_owned),
        ))
    }

    /// Outbox entries in push order (optionally of one table), at most `limit`.
    pub fn outbox(&self, table: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner
            .db
            .outbox(&*self.inner.store.read()?, table, limit)
    }

    /// Queue depth and oldest pending entry of `table` (two point reads).
    pub fn outbox_stats(&self, table: &str) -> Result<OutboxStats> {
        self.inner
            .db
            .outbox_stats(&*self.inner.store.read()?, table)
    }

    /// Dead-lettered entries, optionally of one table.
    pub fn dead_letters(&self, table: Option<&str>) -> Result<Vec<OutboxEntry>> {
        self.inner
            .db
            .dead_letters(&*self.inner.store.read()?, table)
    }

    /// The entries the pusher may send now (per-record heads that are due and whose
    /// references have been created), at most `limit`, in push order.
    pub fn ready_for_push(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.inner.db.ready_heads(
            &*self.inner.store.read()?,
            tidesync_core::hlc::wall_millis(),
            limit,
            &Default::default(),
            &Default::default(),
        )
    }

    /// The store writer (the Outbox actor), for hosts that compose actors themselves and for
    /// custom write jobs ([`tidesync_actors::Write`]).
    pub fn writer(&self) -> Addr<OutboxActor> {
        self.inner.outbox.clone()
    }

    /// Stops the actors. Later writes fail with [`ErrorKind::Closed`]; reads keep working.
    /// Idempotent.
    pub fn shutdown(&self) {
        match self.inner.system.lock() {
            Ok(mut system) => system.stop(),
            Err(poisoned) => poisoned.into_inner().stop(),
        }
    }

    pub(crate) fn db(&self) -> &LocalDb {
        &self.inner.db
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<Change>> {
        self.inner
            .outbox
            .send(LocalWrite(ops))
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the engine is stopped"))?
    }
}
