//! The server's live channel: Server-Sent Events or a WebSocket, by configuration
//! ([`LiveConfig`], `[server.live]` in the CLI's TOML), with an optional subscription
//! handshake and a mapping from events to actions ([`EventRule`]).
//!
//! The engine owns the connection loop (`tidesync_core::live`): this module opens one
//! session at a time and turns the server's events into [`LiveSignal`]s. Credentials are the
//! transport's own ([`crate::AuthProvider`], refreshed once on 401/403), sent only to the base
//! URL's origin unless [`LiveConfig::send_credentials`] says otherwise.

mod config;
pub mod sse;
mod ws;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use tidesync_core::live::{LiveChannel, LiveSession, LiveSignal};
use tidesync_core::{Error, ErrorKind, Result};

pub use config::{
    DEFAULT_STALL_TIMEOUT_MS, EventRule, LiveAction, LiveConfig, LiveKind, Subscribe,
};

use crate::classify;
use crate::client::{Outgoing, RestTransport};
use sse::{SseEvent, SseParser};

/// The name errors and logs of the live channel use in place of a table.
const CHANNEL: &str = "live";

/// A configured live channel of a [`RestTransport`].
pub(crate) struct RestLive {
    transport: RestTransport,
    config: Arc<LiveConfig>,
    client: reqwest::Client,
}

impl RestLive {
    pub(crate) fn new(
        transport: RestTransport,
        config: LiveConfig,
        client: reqwest::Client,
    ) -> Self {
        RestLive {
            transport,
            config: Arc::new(config),
            client,
        }
    }

    fn stall(&self) -> Duration {
        Duration::from_millis(self.config.stall_timeout_ms)
    }

    /// The channel's URL (http(s) form).
    fn url(&self) -> Result<reqwest::Url> {
        let url = self.config.url.as_str();
        let mapped = if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else {
            url.to_owned()
        };
        self.transport.url(&mapped, &[])
    }

    fn sends_credentials(&self, url: &reqwest::Url) -> bool {
        self.config
            .send_credentials
            .unwrap_or_else(|| self.transport.same_origin(url))
    }

    /// The credential headers of the auth provider (none without one).
    async fn credentials(&self) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let mut out = Vec::new();
        if let Some(auth) = &self.transport.auth {
            for (name, secret) in auth.headers().await? {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    Error::new(
                        ErrorKind::Auth,
                        format!("auth provider returned an invalid header name `{name}`"),
                    )
                })?;
                let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                    Error::new(
                        ErrorKind::Auth,
                        format!("auth provider returned an invalid value for `{name}`"),
                    )
                })?;
                value.set_sensitive(true);
                out.push((name, value));
            }
        }
        Ok(out)
    }

    /// Every header of the channel's request: global, the channel's own, credentials.
    async fn request_headers(&self, url: &reqwest::Url) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let mut headers = self.transport.headers(&self.config.headers);
        if self.sends_credentials(url) {
            headers.extend(self.credentials().await?);
        }
        Ok(headers)
    }

    /// The tables to subscribe to, as the server names them.
    fn topics(&self) -> Vec<String> {
        self.transport
            .config
            .tables
            .iter()
            .filter(|(_, routes)| routes.pull.is_some())
            .map(|(local, _)| {
                self.config
                    .table_names
                    .iter()
                    .find(|(_, l)| *l == local)
                    .map(|(server, _)| server.clone())
                    .unwrap_or_else(|| local.clone())
            })
            .collect()
    }

    /// Sends the subscription request of the handshake (HTTP).
    async fn subscribe_http(&self, sub: &Subscribe, url: &str, client_id: &str) -> Result<()> {
        let url = self.transport.url(url, &[])?;
        let mut headers = self.transport.headers(&sub.headers);
        headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        let out = Outgoing {
            method: sub.method.to_reqwest(),
            url,
            headers,
            body: Some(config::render_body(&sub.body, client_id, &self.topics()).into_bytes()),
        };
        let resp = self.transport.execute(CHANNEL, &out).await?;
        if resp.success() {
            Ok(())
        } else {
            Err(Error::new(
                classify::kind_for_status(resp.status),
                format!(
                    "live channel: the subscription was refused with HTTP {}",
                    resp.status
                ),
            )
            .table(CHANNEL))
        }
    }

    async fn connect_sse(&self, last_event_id: Option<String>) -> Result<Box<dyn LiveSession>> {
        let url = self.url()?;
        let mut refreshed = 0;
        let response = loop {
            let mut request = self
                .client
                .get(url.clone())
                .header(ACCEPT, "text/event-stream")
                .header(CACHE_CONTROL, "no-cache");
            for (name, value) in self.request_headers(&url).await? {
                request = request.header(name, value);
            }
            if let Some(id) = last_event_id.as_deref()
                && let Ok(value) = HeaderValue::from_str(id)
            {
                request = request.header("Last-Event-ID", value);
            }
            let response = request.send().await.map_err(|e| {
                Error::new(
                    classify::kind_for_client_error(&e),
                    format!("live channel: {}", classify::describe_client_error(&e)),
                )
            })?;
            let status = response.status().as_u16();
            if matches!(status, 401 | 403)
                && refreshed < self.transport.config.auth_retries
                && let Some(auth) = &self.transport.auth
                && self.sends_credentials(&url)
            {
                refreshed += 1;
                auth.refresh().await?;
                continue;
            }
            if !(200..300).contains(&status) {
                let mut err = Error::new(
                    classify::kind_for_status(status),
                    format!("live channel: the server answered HTTP {status}"),
                );
                if let Some(after) = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| classify::parse_retry_after(v, std::time::SystemTime::now()))
                {
                    err = err.retry_after(after);
                }
                return Err(err);
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !content_type.starts_with("text/event-stream") {
                return Err(Error::new(
                    ErrorKind::Permanent,
                    format!(
                        "live channel: expected text/event-stream, the server sent `{content_type}`"
                    ),
                ));
            }
            break response;
        };
        let mut session = SseSession {
            response,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            stall: self.stall(),
            config: self.config.clone(),
            resumed_id: last_event_id,
        };
        if let Some(sub) = &self.config.subscribe {
            let (client_id, skipped) = session.handshake(sub).await?;
            let target = sub.url.as_deref().unwrap_or_default();
            self.subscribe_http(sub, target, &client_id).await?;
            for event in skipped.into_iter().rev() {
                session.pending.push_front(event);
            }
        }
        Ok(Box::new(session))
    }
}

/// Reads the client id of a handshake from an event's JSON data.
fn client_id_of(sub: &Subscribe, data: &str) -> Result<String> {
    let json: Value = serde_json::from_str(data).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("live channel: the handshake event is not JSON: {e}"),
        )
        .field("live.subscribe.client_id")
    })?;
    match sub.client_id.get(&json) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Error::new(
            ErrorKind::Decode,
            format!(
                "live channel: no client id at `{}` in the handshake event",
                sub.client_id
            ),
        )
        .field("live.subscribe.client_id")),
    }
}

#[async_trait]
impl LiveChannel for RestLive {
    fn describe(&self) -> String {
        let kind = match self.config.kind {
            LiveKind::Sse => "sse",
            LiveKind::Websocket => "websocket",
        };
        // The path only: a query string may carry a token.
        match self.url() {
            Ok(url) => format!("{kind} {}", url.path()),
            Err(_) => kind.to_owned(),
        }
    }

    async fn connect(&self, last_event_id: Option<String>) -> Result<Box<dyn LiveSession>> {
        match self.config.kind {
            LiveKind::Sse => self.connect_sse(last_event_id).await,
            LiveKind::Websocket => ws::connect(self).await,
        }
    }
}

struct SseSession {
    response: reqwest::Response,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    stall: Duration,
    config: Arc<LiveConfig>,
    /// The id this session resumed from, until the server sends a newer one.
    resumed_id: Option<String>,
}

impl SseSession {
    async fn next_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match tokio::time::timeout(self.stall, self.response.chunk()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "live channel stalled: nothing received for {} ms",
                            self.stall.as_millis()
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!(
                            "live channel broke: {}",
                            classify::describe_client_error(&e)
                        ),
                    ));
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some(bytes))) => self.pending.extend(self.parser.feed(&bytes)),
            }
        }
    }

    /// Reads events up to the one carrying the client id; returns it and the events read
    /// before it (to be handled after the subscription).
    async fn handshake(&mut self, sub: &Subscribe) -> Result<(String, Vec<SseEvent>)> {
        let mut skipped = Vec::new();
        loop {
            let Some(event) = self.next_event().await? else {
                return Err(Error::new(
                    ErrorKind::Network,
                    "live channel closed before its handshake event",
                ));
            };
            if sub.event.as_deref().is_none_or(|name| name == event.event) {
                return Ok((client_id_of(sub, &event.data)?, skipped));
            }
            skipped.push(event);
        }
    }
}

#[async_trait]
impl LiveSession for SseSession {
    async fn next(&mut self) -> Result<Option<LiveSignal>> {
        loop {
            let Some(event) = self.next_event().await? else {
                return Ok(None);
            };
            if let Some(signal) = self.config.map(&event.event, &event.data) {
                return Ok(Some(signal));
            }
        }
    }

    fn last_event_id(&self) -> Option<String> {
        self.parser
            .last_event_id()
            .map(str::to_owned)
            .or_else(|| self.resumed_id.clone())
    }

    fn retry_after(&self) -> Option<Duration> {
        self.parser.retry()
    }
}
