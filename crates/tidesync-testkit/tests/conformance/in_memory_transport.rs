//! The transport suite is not REST-specific: a transport over an in-process message channel
//! (no HTTP, no URLs, no status codes) passes it against an in-memory service of its own.
//!
//! The service answers requests with JSON text or a refusal; the transport encodes requests,
//! decodes answers, applies its own timeout and classifies what went wrong, as a client of any
//! protocol has to.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value, json};
use tidesync_core::{
    Error, ErrorKind, Fetched, Key, Op, PullPage, PullRequest, PushOutcome, PushRequest, Record,
    Result, Transport,
};
use tidesync_testkit::server::RetryAfter;
use tidesync_testkit::transport_suite::{
    self, BoxFuture, Fault, Remote, RemoteFactory, TransportFactory,
};

/// How long the transport waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A request on the wire.
#[derive(Debug, Clone)]
enum Request {
    Write {
        table: String,
        id: String,
        op: Op,
        record: Option<Record>,
        base_version: Option<String>,
        idempotency_key: String,
    },
    Fetch {
        table: String,
        id: String,
    },
    Pull {
        table: String,
        after: u64,
        limit: usize,
    },
}

/// An answer on the wire.
#[derive(Debug, Clone)]
enum Answer {
    /// JSON text.
    Body(String),
    /// The write was refused because of the current state (JSON text of the current record, or
    /// `null`).
    Conflict(String),
    Missing,
    Unavailable,
    Busy {
        retry_after_secs: u64,
    },
    /// The channel closed before an answer came.
    Lost,
}

/// One stored record or tombstone.
#[derive(Debug, Clone)]
struct Stored {
    record: Value,
    version: u64,
    seq: u64,
    deleted: bool,
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<String, BTreeMap<String, Stored>>,
    seq: u64,
    frozen_ms: Option<i64>,
    faults: VecDeque<Fault>,
    creates_applied: HashMap<(String, String), usize>,
    create_keys: Vec<String>,
    /// The answer of every applied write, by idempotency key.
    answered: HashMap<String, Answer>,
}

impl State {
    fn now_ms(&self) -> i64 {
        self.frozen_ms.unwrap_or_else(|| {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
    }

    /// Stores `record` as version `version` of `table`/`id` with a new change sequence number.
    fn put(&mut self, table: &str, id: &str, mut record: Value, version: u64, deleted: bool) {
        self.seq += 1;
        let now = self.now_ms();
        if let Some(fields) = record.as_object_mut() {
            fields.insert("id".to_owned(), json!(id));
            fields.insert("updatedAt".to_owned(), json!(now));
            fields.insert("version".to_owned(), json!(version));
        }
        let stored = Stored {
            record,
            version,
            seq: self.seq,
            deleted,
        };
        self.tables
            .entry(table.to_owned())
            .or_default()
            .insert(id.to_owned(), stored);
    }

    fn live(&self, table: &str, id: &str) -> Option<&Stored> {
        self.tables
            .get(table)
            .and_then(|t| t.get(id))
            .filter(|s| !s.deleted)
    }

    fn write(
        &mut self,
        table: &str,
        id: &str,
        op: Op,
        record: Option<Record>,
        base_version: Option<String>,
    ) -> Answer {
        let current = self.live(table, id).cloned();
        let stale = |current: &Stored| {
            base_version
                .as_deref()
                .is_some_and(|base| base != current.version.to_string())
        };
        match (op, current) {
            (Op::Create, Some(current)) => Answer::Conflict(current.record.to_string()),
            (Op::Create, None) => {
                let version = self
                    .tables
                    .get(table)
                    .and_then(|t| t.get(id))
                    .map_or(1, |tombstone| tombstone.version + 1);
                let record = Value::Object(record.unwrap_or_default());
                self.put(table, id, record, version, false);
                *self
                    .creates_applied
                    .entry((table.to_owned(), id.to_owned()))
                    .or_default() += 1;
                self.answer_with(table, id)
            }
            (Op::Update, None) => Answer::Missing,
            (Op::Update, Some(current)) if stale(&current) => {
                Answer::Conflict(current.record.to_string())
            }
            (Op::Update, Some(current)) => {
                let mut merged = current.record.clone();
                if let (Some(fields), Some(changes)) = (merged.as_object_mut(), record) {
                    fields.extend(changes);
                }
                self.put(table, id, merged, current.version + 1, false);
                self.answer_with(table, id)
            }
            // Deleting what is not there is done already.
            (Op::Delete, None) => Answer::Body("null".to_owned()),
            (Op::Delete, Some(current)) if stale(&current) => {
                Answer::Conflict(current.record.to_string())
            }
            (Op::Delete, Some(current)) => {
                self.put(table, id, current.record, current.version + 1, true);
                Answer::Body("null".to_owned())
            }
        }
    }

    fn answer_with(&self, table: &str, id: &str) -> Answer {
        match self.tables.get(table).and_then(|t| t.get(id)) {
            Some(stored) => Answer::Body(stored.record.to_string()),
            None => Answer::Missing,
        }
    }

    fn pull(&self, table: &str, after: u64, limit: usize) -> Answer {
        let mut changes: Vec<&Stored> = self
            .tables
            .get(table)
            .map(|t| t.values().filter(|s| s.seq > after).collect())
            .unwrap_or_default();
        changes.sort_by_key(|s| s.seq);
        let has_more = changes.len() > limit;
        changes.truncate(limit.max(1));
        let last = changes.last().map_or(after, |s| s.seq);
        let items: Vec<Value> = changes
            .iter()
            .map(|s| json!({"record": s.record, "deleted": s.deleted}))
            .collect();
        Answer::Body(json!({"items": items, "last": last, "hasMore": has_more}).to_string())
    }
}

/// The in-memory service: the remote end of the channel. Clones share the service.
#[derive(Debug, Clone, Default)]
struct Service {
    state: Arc<Mutex<State>>,
    number: u64,
}

impl Service {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call(&self, request: Request) -> Answer {
        let fault = {
            let mut state = self.state();
            if let Request::Write {
                op: Op::Create,
                idempotency_key,
                ..
            } = &request
            {
                state.create_keys.push(idempotency_key.clone());
            }
            state.faults.pop_front()
        };
        match fault {
            Some(Fault::Unavailable) => return Answer::Unavailable,
            Some(Fault::RateLimited(RetryAfter::Seconds(s) | RetryAfter::HttpDate(s))) => {
                return Answer::Busy {
                    retry_after_secs: s,
                };
            }
            Some(Fault::Dropped) => return Answer::Lost,
            Some(Fault::Garbled) => return Answer::Body("{\"items\": [tr".to_owned()),
            Some(Fault::Hang(duration)) => tokio::time::sleep(duration).await,
            Some(Fault::AnswerLost) | None => {}
        }
        let answer = self.handle(request);
        if fault == Some(Fault::AnswerLost) {
            Answer::Lost
        } else {
            answer
        }
    }

    fn handle(&self, request: Request) -> Answer {
        let mut state = self.state();
        match request {
            Request::Write {
                table,
                id,
                op,
                record,
                base_version,
                idempotency_key,
            } => {
                if let Some(answer) = state.answered.get(&idempotency_key) {
                    return answer.clone();
                }
                let answer = state.write(&table, &id, op, record, base_version);
                if let Answer::Body(_) = answer {
                    state.answered.insert(idempotency_key, answer.clone());
                }
                answer
            }
            Request::Fetch { table, id } => match state.live(&table, &id) {
                Some(stored) => Answer::Body(stored.record.to_string()),
                None => Answer::Missing,
            },
            Request::Pull {
                table,
                after,
                limit,
            } => state.pull(&table, after, limit),
        }
    }
}

impl Remote for Service {
    fn address(&self) -> String {
        // Registered under this address by `Services::start`.
        format!("memory://{}", self.number)
    }

    fn speaks_http(&self) -> bool {
        false
    }

    fn record(&self, table: &str, id: &str) -> Option<Value> {
        self.state().live(table, id).map(|s| s.record.clone())
    }

    fn insert(&self, table: &str, record: Value) -> std::result::Result<(), String> {
        let id = record["id"].as_str().ok_or("a record needs a string id")?;
        let mut state = self.state();
        if state.live(table, id).is_some() {
            return Err(format!("{table}/{id} exists"));
        }
        state.put(table, id, record.clone(), 1, false);
        Ok(())
    }

    fn update(&self, table: &str, id: &str, patch: Value) -> std::result::Result<(), String> {
        let mut state = self.state();
        let current = state
            .live(table, id)
            .cloned()
            .ok_or(format!("{table}/{id} is missing"))?;
        let mut record = current.record;
        if let (Some(fields), Value::Object(changes)) = (record.as_object_mut(), patch) {
            fields.extend(changes);
        }
        state.put(table, id, record, current.version + 1, false);
        Ok(())
    }

    fn delete(&self, table: &str, id: &str) -> std::result::Result<(), String> {
        let mut state = self.state();
        let current = state
            .live(table, id)
            .cloned()
            .ok_or(format!("{table}/{id} is missing"))?;
        state.put(table, id, current.record, current.version + 1, true);
        Ok(())
    }

    fn create_count(&self, table: &str, id: &str) -> usize {
        let key = (table.to_owned(), id.to_owned());
        self.state().creates_applied.get(&key).copied().unwrap_or(0)
    }

    fn create_idempotency_keys(&self) -> Vec<String> {
        self.state().create_keys.clone()
    }

    fn now_ms(&self) -> i64 {
        self.state().now_ms()
    }

    fn freeze_clock(&self, at_ms: Option<i64>) {
        self.state().frozen_ms = at_ms;
    }

    fn fail_next(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }
}

/// Starts services and finds them by address, for the transport factory.
#[derive(Debug, Default)]
struct Services {
    by_address: Mutex<HashMap<String, Service>>,
    started: AtomicU64,
}

impl Services {
    fn find(&self, address: &str) -> Option<Service> {
        let services = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        services.get(address).cloned()
    }
}

impl RemoteFactory for Services {
    fn start(&self) -> BoxFuture<'_, Box<dyn Remote>> {
        Box::pin(async {
            let service = Service {
                number: self.started.fetch_add(1, Ordering::Relaxed) + 1,
                ..Service::default()
            };
            let mut services = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
            services.insert(service.address(), service.clone());
            Box::new(service) as Box<dyn Remote>
        })
    }
}

/// The client end: encodes requests, decodes answers, times out, classifies.
struct ChannelTransport {
    service: Service,
}

impl ChannelTransport {
    async fn call(&self, table: &str, key: Option<&Key>, request: Request) -> Result<Value> {
        let named = |e: Error| match key {
            Some(key) => e.table(table).key(key),
            None => e.table(table),
        };
        let answer = tokio::time::timeout(TIMEOUT, self.service.call(request))
            .await
            .map_err(|_| {
                named(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {TIMEOUT:?}"),
                ))
            })?;
        match answer {
            Answer::Body(text) => serde_json::from_str(&text).map_err(|e| {
                named(Error::new(ErrorKind::Decode, "undecodable answer").with_source(e))
            }),
            Answer::Conflict(text) => {
                let mut err = named(Error::new(
                    ErrorKind::Conflict,
                    "refused: the record changed",
                ));
                if let Ok(Value::Object(current)) = serde_json::from_str(&text) {
                    err = err.remote(current);
                }
                Err(err)
            }
            Answer::Missing => Err(named(Error::new(ErrorKind::NotFound, "no such record"))),
            Answer::Unavailable => Err(named(Error::new(ErrorKind::Server, "service unavailable"))),
            Answer::Busy { retry_after_secs } => Err(named(
                Error::new(ErrorKind::RateLimited, "service busy")
                    .retry_after(Duration::from_secs(retry_after_secs)),
            )),
            Answer::Lost => Err(named(Error::new(
                ErrorKind::Network,
                "the channel closed before the answer",
            ))),
        }
    }
}

fn id_of(key: &Key) -> String {
    key.to_string()
}

fn outcome(answer: Value) -> PushOutcome {
    let record = match answer {
        Value::Object(record) => Some(record),
        _ => None,
    };
    let version = record
        .as_ref()
        .and_then(|r| r.get("version"))
        .map(|v| v.to_string());
    PushOutcome {
        record,
        version,
        server_key: None,
        server_time_ms: None,
    }
}

#[async_trait]
impl Transport for ChannelTransport {
    fn name(&self) -> &str {
        "in_memory_channel"
    }

    async fn push(&self, request: PushRequest) -> Result<PushOutcome> {
        let table = request.table.clone();
        let wire = Request::Write {
            table: request.table,
            id: id_of(&request.key),
            op: request.op,
            record: request.record,
            base_version: request.base_version,
            idempotency_key: request.idempotency_key,
        };
        self.call(&table, Some(&request.key), wire)
            .await
            .map(outcome)
    }

    async fn pull(&self, request: PullRequest) -> Result<PullPage> {
        let after = match &request.cursor {
            None => 0,
            Some(cursor) => cursor["after"].as_u64().ok_or_else(|| {
                Error::invalid(format!("not a checkpoint of this transport: {cursor}"))
                    .table(&request.table)
            })?,
        };
        let wire = Request::Pull {
            table: request.table.clone(),
            after,
            limit: request.page_size,
        };
        let page = self.call(&request.table, None, wire).await?;
        let undecodable = || {
            Error::new(ErrorKind::Decode, "a page without items, last or hasMore")
                .table(&request.table)
        };
        let items = page["items"].as_array().ok_or_else(undecodable)?;
        let (mut records, mut deleted) = (Vec::new(), Vec::new());
        for item in items {
            let Value::Object(record) = item["record"].clone() else {
                return Err(undecodable());
            };
            if item["deleted"] == json!(true) {
                let key = record.get("id").and_then(Key::from_json);
                deleted.push(key.ok_or_else(undecodable)?);
            } else {
                records.push(record);
            }
        }
        Ok(PullPage {
            records,
            deleted,
            cursor: Some(json!({"after": page["last"].as_u64().ok_or_else(undecodable)?})),
            has_more: page["hasMore"].as_bool().ok_or_else(undecodable)?,
            server_time_ms: None,
            total: None,
            warnings: Vec::new(),
        })
    }

    async fn fetch(&self, table: &str, key: &Key) -> Result<Option<Fetched>> {
        let wire = Request::Fetch {
            table: table.to_owned(),
            id: id_of(key),
        };
        match self.call(table, Some(key), wire).await {
            Ok(Value::Object(record)) => Ok(Some(Fetched {
                version: self.version_of(table, &record),
                record,
            })),
            Ok(other) => Err(
                Error::new(ErrorKind::Decode, format!("not a record: {other}"))
                    .table(table)
                    .key(key),
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn version_of(&self, _table: &str, record: &Record) -> Option<String> {
        record.get("version").map(|v| v.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_channel_transport_passes_the_transport_suite() {
    let services = Arc::new(Services::default());
    let lookup = Arc::clone(&services);
    let factory = move |address: &str, _table: &str| -> Arc<dyn Transport> {
        let service = lookup
            .find(address)
            .unwrap_or_else(|| panic!("no service at {address}"));
        Arc::new(ChannelTransport { service })
    };
    let factory: &dyn TransportFactory = &factory;
    transport_suite::run_all_against(services.as_ref(), factory).await;
    // One remote per check, none of them the reference server.
    assert_eq!(services.started.load(Ordering::Relaxed), 6);
}
