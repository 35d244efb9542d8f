//! The live channel: the server publishes every applied change over Server-Sent Events
//! (`GET /live/events`) and a WebSocket (`GET /live/ws`), as real APIs do, and can drop,
//! stall or lose events on purpose ([`LiveOptions`], seeded).
//!
//! - SSE: `text/event-stream`, one event per change with `id: <change seq>` (a reconnect
//!   with `Last-Event-ID: <seq>` replays every later change the server still keeps), and a
//!   `: keep-alive` comment every [`LiveOptions::keepalive`].
//! - WebSocket: one JSON text message per change with `"type"` and `"seq"`, and a ping
//!   every [`LiveOptions::keepalive`].
//! - Payloads ([`LivePayload`]): `event: change` with
//!   `{"table":"posts","id":"7","op":"create"|"update"|"delete","record":{…}}`, or
//!   hint-only `event: hint` with `{"table":"posts"}`.
//! - Subscription handshake ([`LiveOptions::handshake`]): the first event is
//!   `event: connected` / `{"type":"connected","clientId":"c-1"}`; nothing else is sent until
//!   `POST /live/subscribe {"clientId":"c-1","tables":["posts"]}` (or, on the WebSocket, the
//!   same JSON as a text message) names the tables to follow.
//! - Auth: with [`super::ReferenceServerBuilder::auth`], `/live/…` needs a token like `/api`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::history::ServerChange;
use super::ids::id_json_from_key;
use super::reply::Reply;
use super::state::{Shared, lock};

/// What a change event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivePayload {
    /// `event: change`, `{"table","id","op","record"}`.
    Change,
    /// `event: hint`, `{"table"}` only: the client must pull.
    Hint,
}

/// Options of the live channel (see the module docs). Faults are drawn from a `StdRng`
/// seeded with [`LiveOptions::seed`]: the same seed and the same event order give the same
/// faults.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Serve `GET /live/events` (else 404).
    pub sse: bool,
    /// Serve `GET /live/ws` (else 404).
    pub websocket: bool,
    /// Require the subscription handshake.
    pub handshake: bool,
    /// What change events carry.
    pub payload: LivePayload,
    /// Keep-alive period (SSE comment, WebSocket ping).
    pub keepalive: Duration,
    /// Probability that an event is silently not sent (a lost event).
    pub lose_rate: f64,
    /// Probability that the channel breaks instead of sending an event.
    pub drop_rate: f64,
    /// The fault generator's seed.
    pub seed: u64,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            sse: true,
            websocket: true,
            handshake: false,
            payload: LivePayload::Change,
            keepalive: Duration::from_secs(15),
            lose_rate: 0.0,
            drop_rate: 0.0,
            seed: super::DEFAULT_SEED,
        }
    }
}

/// The live channel's state on the server.
#[derive(Debug)]
pub(crate) struct LiveHub {
    pub(crate) options: LiveOptions,
    rng: StdRng,
    /// Bumped to break every open channel.
    drops: watch::Sender<u64>,
    /// While true, open channels send nothing (no events, no keep-alives).
    stalled: watch::Sender<bool>,
    next_client: u64,
    /// Subscriptions by client id (`None` until the client subscribed).
    subscriptions: HashMap<String, watch::Sender<Option<HashSet<String>>>>,
    pub(crate) open: usize,
    pub(crate) connects: u64,
    pub(crate) sent: u64,
    pub(crate) lost: u64,
}

impl LiveHub {
    pub(crate) fn new(options: LiveOptions) -> Self {
        LiveHub {
            rng: StdRng::seed_from_u64(options.seed),
            options,
            drops: watch::channel(0).0,
            stalled: watch::channel(false).0,
            next_client: 0,
            subscriptions: HashMap::new(),
            open: 0,
            connects: 0,
            sent: 0,
            lost: 0,
        }
    }

    pub(crate) fn set_options(&mut self, options: LiveOptions) {
        self.rng = StdRng::seed_from_u64(options.seed);
        self.options = options;
    }

    pub(crate) fn drop_all(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    pub(crate) fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// What to do with the next event: send it, lose it, or break the channel.
    fn decide(&mut self) -> Fate {
        let (lose, drop) = (self.options.lose_rate, self.options.drop_rate);
        if drop > 0.0 && self.rng.random_bool(drop.clamp(0.0, 1.0)) {
            return Fate::Break;
        }
        if lose > 0.0 && self.rng.random_bool(lose.clamp(0.0, 1.0)) {
            self.lost += 1;
            return Fate::Lose;
        }
        self.sent += 1;
        Fate::Send
    }
}

enum Fate {
    Send,
    Lose,
    Break,
}

/// One open channel's view.
struct Conn {
    st: Arc<Shared>,
    /// The next change seq to send.
    from: u64,
    client_id: Option<String>,
    subscription: Option<watch::Receiver<Option<HashSet<String>>>>,
    drops: watch::Receiver<u64>,
    stalled: watch::Receiver<bool>,
    changes: watch::Receiver<u64>,
    keepalive: Duration,
    payload: LivePayload,
}

/// What the writer loop asks its protocol to send.
enum Out {
    Connected(String),
    Change(ServerChange),
    KeepAlive,
}

impl Conn {
    fn open(st: &Arc<Shared>, last_event_id: Option<u64>) -> Conn {
        let (from, changes) = {
            let store = st.store();
            let from = match last_event_id {
                Some(id) => id.saturating_add(1),
                None => store.next_change_seq(),
            };
            (from, store.live_seq.subscribe())
        };
        let mut hub = lock(&st.live);
        hub.open += 1;
        hub.connects += 1;
        let (client_id, subscription) = if hub.options.handshake {
            hub.next_client += 1;
            let id = format!("c-{}", hub.next_client);
            let (tx, rx) = watch::channel(None);
            hub.subscriptions.insert(id.clone(), tx);
            (Some(id), Some(rx))
        } else {
            (None, None)
        };
        Conn {
            st: st.clone(),
            from,
            client_id,
            subscription,
            drops: hub.drops.subscribe(),
            stalled: hub.stalled.subscribe(),
            changes,
            keepalive: hub.options.keepalive,
            payload: hub.options.payload,
        }
    }

    /// The changes to send now (subscription and faults applied); `Err` to break.
    fn pending(&mut self) -> Result<Vec<ServerChange>, ()> {
        let tables = match &self.subscription {
            Some(rx) => match rx.borrow().clone() {
                Some(tables) => Some(tables),
                None => return Ok(Vec::new()), // not subscribed yet: nothing is sent
            },
            None => None,
        };
        let news: Vec<ServerChange> = {
            let store = self.st.store();
            store
                .changes
                .iter()
                .filter(|c| c.seq >= self.from)
                .cloned()
                .collect()
        };
        let mut out = Vec::new();
        for change in news {
            self.from = change.seq + 1;
            if tables
                .as_ref()
                .is_some_and(|t| !t.contains(&change.collection))
            {
                continue;
            }
            match lock(&self.st.live).decide() {
                Fate::Send => out.push(change),
                Fate::Lose => {}
                Fate::Break => return Err(()),
            }
        }
        Ok(out)
    }

    /// Runs the channel: `send` writes one item (false: the client is gone). Returns when
    /// the client left, or the channel is dropped on purpose (then `true`).
    async fn run<F, Fut>(&mut self, mut send: F) -> bool
    where
        F: FnMut(Out) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if let Some(id) = self.client_id.clone()
            && !send(Out::Connected(id)).await
        {
            return false;
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.keepalive, self.keepalive);
        let mut subscribed = self.subscription.clone();
        loop {
            if !*self.stalled.borrow() {
                match self.pending() {
                    Err(()) => return true,
                    Ok(changes) => {
                        for change in changes {
                            if !send(Out::Change(change)).await {
                                return false;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { return false },
                _ = self.drops.changed() => return true,
                _ = self.stalled.changed() => {}
                Some(()) = async {
                    match subscribed.as_mut() {
                        Some(rx) => rx.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tick.tick() => {
                    if !*self.stalled.borrow() && !send(Out::KeepAlive).await {
                        return false;
                    }
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut hub = lock(&self.st.live);
        hub.open = hub.open.saturating_sub(1);
        if let Some(id) = &self.client_id {
            hub.subscriptions.remove(id);
        }
    }
}

/// A change as an event: its name and its JSON body (with `type` and `seq` for the
/// WebSocket, where there is no event name or id field).
fn event_json(
    change: &ServerChange,
    payload: LivePayload,
    with_type: bool,
) -> (&'static str, Value) {
    let op = if change.deleted() {
        "delete"
    } else if change.version() == Some(1) {
        "create"
    } else {
        "update"
    };
    let (name, mut body) = match payload {
        LivePayload::Change => (
            "change",
            json!({
                "table": change.collection,
                "id": id_json_from_key(&change.key),
                "op": op,
                "record": change.record,
            }),
        ),
        LivePayload::Hint => ("hint", json!({ "table": change.collection })),
    };
    if with_type && let Some(obj) = body.as_object_mut() {
        obj.insert("type".into(), json!(name));
        obj.insert("seq".into(), json!(change.seq));
    }
    (name, body)
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /live/events`.
pub(crate) async fn sse(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !lock(&st.live).options.sse {
        return Reply::error(StatusCode::NOT_FOUND, "not found").into_response();
    }
    let mut conn = Conn::open(&st, last_event_id(&headers));
    let payload = conn.payload;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let out = tx.clone();
        let run = conn.run(|item| {
            let frame = match item {
                Out::Connected(id) => {
                    format!("event: connected\ndata: {}\n\n", json!({ "clientId": id }))
                }
                Out::KeepAlive => ": keep-alive\n\n".to_owned(),
                Out::Change(change) => {
                    let (name, body) = event_json(&change, payload, false);
                    format!("id: {}\nevent: {name}\ndata: {body}\n\n", change.seq)
                }
            };
            let out = out.clone();
            async move { out.send(Ok(Bytes::from(frame))).await.is_ok() }
        });
        // The client going away ends the channel at once (not at the next write).
        let dropped = tokio::select! {
            dropped = run => dropped,
            () = tx.closed() => false,
        };
        if dropped {
            // Break the response mid-stream: the client sees the connection fail.
            let _ = tx
                .send(Err(std::io::Error::other(
                    "live channel dropped on purpose",
                )))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /live/ws`.
pub(crate) async fn websocket(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !lock(&st.live).options.websocket {
        return Reply::error(StatusCode::NOT_FOUND, "not found").into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return Reply::bad_request(format!("not a WebSocket upgrade: {e}")).into_response();
        }
    };
    let resume = last_event_id(&headers);
    upgrade.on_upgrade(move |socket| serve_socket(st, socket, resume))
}

async fn serve_socket(st: Arc<Shared>, socket: WebSocket, resume: Option<u64>) {
    use futures_util::{SinkExt, StreamExt};
    let mut conn = Conn::open(&st, resume);
    let payload = conn.payload;
    let client_id = conn.client_id.clone();
    let (sink, mut stream) = socket.split();
    // Incoming messages (a subscription sent over the socket; pongs; the client's close) are
    // read by a task of their own; the writer loop below sends.
    let reader = {
        let st = st.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Text(text) => {
                        if let (Some(id), Ok(body)) = (
                            client_id.as_deref(),
                            serde_json::from_str::<Value>(text.as_str()),
                        ) {
                            subscribe(&st, id, &body);
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        })
    };
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let out = sink.clone();
    let mut reader = reader;
    let run = conn.run(|item| {
        let msg = match item {
            Out::Connected(id) => Message::Text(
                json!({ "type": "connected", "clientId": id })
                    .to_string()
                    .into(),
            ),
            Out::KeepAlive => Message::Ping(Bytes::from_static(b"keep-alive")),
            Out::Change(change) => {
                Message::Text(event_json(&change, payload, true).1.to_string().into())
            }
        };
        let out = out.clone();
        async move { out.lock().await.send(msg).await.is_ok() }
    });
    // The client closing the socket ends the channel at once (not at the next write).
    let dropped = tokio::select! {
        dropped = run => dropped,
        _ = &mut reader => false,
    };
    reader.abort();
    if !dropped {
        let _ = sink.lock().await.send(Message::Close(None)).await;
    }
    // Dropped on purpose: the socket goes away without a close frame.
}

/// Records a subscription: `{"clientId": "...", "tables": ["posts", ...]}`.
fn subscribe(st: &Shared, client_id: &str, body: &Value) -> bool {
    let tables: HashSet<String> = body
        .get("tables")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let hub = lock(&st.live);
    match hub.subscriptions.get(client_id) {
        Some(tx) => {
            tx.send_replace(Some(tables));
            true
        }
        None => false,
    }
}

/// `POST /live/subscribe` with `{"clientId": "...", "tables": [...]}`: 204, 404 for an
/// unknown client id, 400 for a body that is not such an object.
pub(crate) async fn subscribe_http(State(st): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return Reply::bad_request("the body must be JSON").into_response();
    };
    let (Some(id), Some(_)) = (
        json.get("clientId").and_then(Value::as_str),
        json.get("tables").and_then(Value::as_array),
    ) else {
        return Reply::bad_request("expected {\"clientId\": \"...\", \"tables\": [...]}")
            .into_response();
    };
    if subscribe(&st, id, &json) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Reply::error(StatusCode::NOT_FOUND, "unknown client id").into_response()
    }
}
