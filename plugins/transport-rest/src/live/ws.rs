//! The WebSocket channel: `ws://` over TCP, `wss://` over rustls (the ring provider the
//! transport installs, the platform's trust store), no other TLS stack.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tidesync_core::live::{LiveSession, LiveSignal};
use tidesync_core::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::config::{LiveConfig, Subscribe};
use super::{RestLive, client_id_of};
use crate::classify;

/// One message: its event name and its text.
struct WsEvent {
    event: String,
    data: String,
}

pub(super) async fn connect(live: &RestLive) -> Result<Box<dyn LiveSession>> {
    let http_url = live.url()?;
    let secure = http_url.scheme() == "https";
    let mut ws_url = http_url.clone();
    // http → ws and https → wss are both "special" schemes: the change cannot fail.
    let _ = ws_url.set_scheme(if secure { "wss" } else { "ws" });
    let host = http_url
        .host_str()
        .ok_or_else(|| Error::config("live.url has no host").field("live.url"))?
        .to_owned();
    let port = http_url.port_or_known_default().unwrap_or(80);
    let connect_timeout = Duration::from_millis(live.transport.config.connect_timeout_ms);
    let mut refreshed = 0;
    loop {
        let mut request = ws_url.as_str().into_client_request().map_err(|e| {
            Error::config(format!("live.url is not a WebSocket URL: {e}")).field("live.url")
        })?;
        for (name, value) in live.request_headers(&http_url).await? {
            request.headers_mut().insert(name, value);
        }
        let tcp = tokio::time::timeout(
            connect_timeout,
            TcpStream::connect(format!("{host}:{port}")),
        )
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout, "live channel: connect timed out"))?
        .map_err(|e| {
            Error::new(
                ErrorKind::Network,
                format!("live channel: could not connect: {e}"),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        let attempt = if secure {
            let tls = tls(&host, tcp, connect_timeout).await?;
            handshake(live, request, tls, connect_timeout).await
        } else {
            handshake(live, request, tcp, connect_timeout).await
        };
        match attempt {
            Err(err)
                if err.kind() == ErrorKind::Auth
                    && refreshed < live.transport.config.auth_retries
                    && live.transport.auth.is_some()
                    && live.sends_credentials(&http_url) =>
            {
                refreshed += 1;
                if let Some(auth) = &live.transport.auth {
                    auth.refresh().await?;
                }
            }
            other => return other,
        }
    }
}

async fn tls(
    host: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| Error::config(format!("live channel: cannot set up TLS: {e}")))?;
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| Error::config(format!("live.url: bad TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout, "live channel: TLS handshake timed out"))?
        .map_err(|e| Error::new(ErrorKind::Network, format!("live channel: TLS failed: {e}")))
}

async fn handshake<S>(
    live: &RestLive,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    timeout: Duration,
) -> Result<Box<dyn LiveSession>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _response) =
        tokio::time::timeout(timeout, tokio_tungstenite::client_async(request, stream))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    "live channel: WebSocket handshake timed out",
                )
            })?
            .map_err(ws_error)?;
    let mut session = WsSession {
        ws,
        pending: VecDeque::new(),
        stall: live.stall(),
        config: live.config.clone(),
    };
    if let Some(sub) = &live.config.subscribe {
        let (client_id, skipped) = session.read_handshake(sub).await?;
        match &sub.url {
            Some(url) => live.subscribe_http(sub, url, &client_id).await?,
            None => {
                let body = super::config::render_body(&sub.body, &client_id, &live.topics());
                session
                    .ws
                    .send(Message::Text(body.into()))
                    .await
                    .map_err(ws_error)?;
            }
        }
        for event in skipped.into_iter().rev() {
            session.pending.push_front(event);
        }
    }
    Ok(Box::new(session))
}

fn ws_error(e: WsError) -> Error {
    match e {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            Error::new(
                classify::kind_for_status(status),
                format!("live channel: the server answered HTTP {status} to the WebSocket upgrade"),
            )
        }
        WsError::Url(e) => Error::config(format!("live.url: {e}")).field("live.url"),
        other => Error::new(ErrorKind::Network, format!("live channel: {other}")),
    }
}

struct WsSession<S> {
    ws: WebSocketStream<S>,
    pending: VecDeque<WsEvent>,
    stall: Duration,
    config: Arc<LiveConfig>,
}

impl<S> WsSession<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn event_name(&self, data: &str) -> String {
        let pointer = self.config.type_pointer.clone();
        let json: Option<Value> = serde_json::from_str(data).ok();
        let name = match (&pointer, &json) {
            (Some(p), Some(j)) => p.get(j).and_then(Value::as_str).map(str::to_owned),
            (None, Some(j)) => j.get("type").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        name.unwrap_or_else(|| "message".to_owned())
    }

    async fn next_event(&mut self) -> Result<Option<WsEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let message = match tokio::time::timeout(self.stall, self.ws.next()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "live channel stalled: nothing received for {} ms",
                            self.stall.as_millis()
                        ),
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                    return Ok(None);
                }
                Ok(Some(Err(e))) => return Err(ws_error(e)),
                Ok(Some(Ok(message))) => message,
            };
            let data = match message {
                Message::Text(text) => text.as_str().to_owned(),
                Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Message::Close(_) => return Ok(None),
                // Pings are answered by the library; pongs and frames only prove liveness.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            let event = self.event_name(&data);
            return Ok(Some(WsEvent { event, data }));
        }
    }

    async fn read_handshake(&mut self, sub: &Subscribe) -> Result<(String, Vec<WsEvent>)> {
        let mut skipped = Vec::new();
        loop {
            let Some(event) = self.next_event().await? else {
                return Err(Error::new(
                    ErrorKind::Network,
                    "live channel closed before its handshake message",
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
impl<S> LiveSession for WsSession<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
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
}
