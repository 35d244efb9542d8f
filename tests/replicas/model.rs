//! What every replica shares: the tables and their strategies, the engine set-up, the
//! conflict recorder, and the shape of the history lines a replica reports.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tidesync::{
    Conflict, ConflictStrategy, Engine, RedbStore, Resolution, ServerWins, SyncSettings, TableSpec,
};
use tidesync_conflict_merge::{FieldMerge, MergePolicy};
use tidesync_conflict_policies::{ClientWins, LastWriteWins};
use tidesync_transport_rest::{RestTransport, TableRoutes};

/// The user fields every record carries; each write sets some of them to its own token.
pub const FIELDS: [&str; 3] = ["a", "b", "c"];

/// Keys per client-key table (`sw0`…): few, so replicas meet on the same records.
pub const KEYS: u32 = 8;

/// The request timeout of every replica (hung requests outlast it).
pub const TIMEOUT: Duration = Duration::from_millis(400);

/// A table's conflict strategy, as far as the checker is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    ServerWins,
    ClientWins,
    LastWriteWins,
    /// Field merge, `latest` for fields both sides changed (and for deletes).
    FieldMerge,
}

impl Strategy {
    pub fn label(self) -> &'static str {
        match self {
            Strategy::ServerWins => "server_wins",
            Strategy::ClientWins => "client_wins",
            Strategy::LastWriteWins => "last_write_wins",
            Strategy::FieldMerge => "field_merge",
        }
    }
}

/// One synced table.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub strategy: Strategy,
    /// The server assigns ids; records are identified by their `cid` (the creating write's
    /// token) instead.
    pub server_ids: bool,
    /// `Some(table)`: the `task` field references a key of that table.
    pub references: Option<&'static str>,
}

/// `sw` server wins, `cw` client wins, `lww` last write wins, `fm` field merge, `tasks` ids
/// assigned by the server (client wins), `steps` referencing tasks (client wins).
pub const TABLES: [Table; 6] = [
    Table {
        name: "sw",
        strategy: Strategy::ServerWins,
        server_ids: false,
        references: None,
    },
    Table {
        name: "cw",
        strategy: Strategy::ClientWins,
        server_ids: false,
        references: None,
    },
    Table {
        name: "lww",
        strategy: Strategy::LastWriteWins,
        server_ids: false,
        references: None,
    },
    Table {
        name: "fm",
        strategy: Strategy::FieldMerge,
        server_ids: false,
        references: None,
    },
    Table {
        name: "tasks",
        strategy: Strategy::ClientWins,
        server_ids: true,
        references: None,
    },
    Table {
        name: "steps",
        strategy: Strategy::ClientWins,
        server_ids: false,
        references: Some("tasks"),
    },
];

pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// Wall-clock milliseconds (every process of a run shares the machine's clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where a replica's history events go: stdout in a child, a vector in the parent.
pub type Sink = Arc<dyn Fn(Value) + Send + Sync>;

fn record_json(record: &Option<Map<String, Value>>) -> Value {
    record.clone().map_or(Value::Null, Value::Object)
}

/// A real strategy, recording every decision it makes (the whole conflict and the outcome).
struct Recorded {
    inner: Arc<dyn ConflictStrategy>,
    replica: usize,
    sink: Sink,
}

#[async_trait]
impl ConflictStrategy for Recorded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn resolve(&self, conflict: &Conflict) -> tidesync::Result<Resolution> {
        let resolution = self.inner.resolve(conflict).await?;
        let merged = match &resolution {
            Resolution::Merged(m) => Value::Object(m.clone()),
            _ => Value::Null,
        };
        (self.sink)(json!({
            "kind": "C",
            "replica": self.replica,
            "table": conflict.table,
            "key": conflict.key.to_json(),
            "detected_by": conflict.detected_by.as_str(),
            "base": record_json(&conflict.base),
            "local": record_json(&conflict.local),
            "remote": record_json(&conflict.remote),
            "local_hlc": conflict.local_hlc,
            "remote_time_ms": conflict.remote_time_ms,
            "outcome": resolution.as_str(),
            "merged": merged,
            "at": now_ms(),
        }));
        Ok(resolution)
    }
}

fn strategy(s: Strategy) -> Arc<dyn ConflictStrategy> {
    match s {
        Strategy::ServerWins => Arc::new(ServerWins),
        Strategy::ClientWins => Arc::new(ClientWins),
        Strategy::LastWriteWins => Arc::new(LastWriteWins::new()),
        Strategy::FieldMerge => Arc::new(FieldMerge::with_default(MergePolicy::Latest)),
    }
}

/// A replica's engine on its redb file, syncing every table with the reference server.
pub fn open_engine(
    path: &Path,
    url: &str,
    replica: usize,
    sink: Sink,
    settings: SyncSettings,
) -> Engine {
    let store = RedbStore::open(path).expect("the replica's store opens (also after SIGKILL)");
    let mut transport = RestTransport::builder(url).request_timeout(TIMEOUT);
    let mut builder = Engine::builder().store(store).settings(settings);
    for t in TABLES {
        let routes = TableRoutes::reference_server(t.name);
        transport = transport.table(
            t.name,
            if t.server_ids {
                routes.server_ids()
            } else {
                routes
            },
        );
        let mut spec = TableSpec::new(t.name);
        if t.server_ids {
            spec = spec.index("cid");
        }
        if let Some(target) = t.references {
            spec = spec.references("task", target);
        }
        builder = builder.table(spec).shared_conflicts(
            t.name,
            Arc::new(Recorded {
                inner: strategy(t.strategy),
                replica,
                sink: sink.clone(),
            }),
        );
    }
    builder
        .transport(transport.build().expect("transport"))
        .start()
        .expect("engine starts")
}
