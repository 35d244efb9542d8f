//! The HTTP exchange: building URLs, sending one request (with the auth refresh loop),
//! reading the body within the size limit, and turning failures into classified errors.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tidesync_core::{Error, ErrorKind, Key, Record, Result};

use crate::auth::AuthProvider;
use crate::classify;
use crate::config::{RestConfig, RestTransportBuilder};
use crate::pointer::Pointer;
use crate::routes::{Headers, TableRoutes};
use crate::template::encoded;

/// The REST transport. Cheap to clone; share it as `Arc<dyn Transport>`.
#[derive(Clone)]
pub struct RestTransport {
    pub(crate) config: Arc<RestConfig>,
    pub(crate) auth: Option<Arc<dyn AuthProvider>>,
    pub(crate) client: reqwest::Client,
    pub(crate) base: reqwest::Url,
    /// Page walks' in-memory state per (table, deleted-ids feed).
    pub(crate) walks: crate::pull::Walks,
    /// The live channel's client (no whole-request timeout: the stream stays open; stalls
    /// are caught by the channel's own timeout), when a channel is configured.
    pub(crate) live_client: Option<reqwest::Client>,
}

impl fmt::Debug for RestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestTransport")
            .field("base_url", &self.config.base_url)
            .field("tables", &self.config.tables.keys().collect::<Vec<_>>())
            .field("auth", &self.auth.as_ref().map(|_| "<provider>"))
            .finish_non_exhaustive()
    }
}

/// One request to send.
pub(crate) struct Outgoing {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
}

/// One response, body read (up to the limit).
pub(crate) struct Incoming {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body was larger than the limit; `body` holds only its first part.
    pub overflow: bool,
    /// The credential values sent with the request, to redact from excerpts (a server may
    /// echo request headers in an error body; those must not reach a dead letter).
    pub secrets: Vec<String>,
}

impl Incoming {
    /// An excerpt of the body of at most `max` bytes, with credentials redacted.
    pub fn excerpt(&self, max: usize) -> String {
        redact(classify::excerpt(&self.body, max), &self.secrets)
    }
}

/// Replaces every credential value (and, for `Scheme token` values, the bare token) by `***`.
pub(crate) fn redact(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        let token = secret.split_once(' ').map(|(_, t)| t.trim()).unwrap_or("");
        for needle in [secret.as_str(), token] {
            if needle.len() >= 4 && text.contains(needle) {
                text = text.replace(needle, "***");
            }
        }
    }
    text
}

impl Incoming {
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The server clock from the `Date` header, in epoch milliseconds.
    pub fn server_time_ms(&self) -> Option<i64> {
        let at = httpdate::parse_http_date(self.header("date")?).ok()?;
        let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(ms).ok()
    }

    /// The `ETag` without quotes or the weak prefix.
    pub fn etag(&self) -> Option<String> {
        let raw = self.header("etag")?.trim();
        let raw = raw.strip_prefix("W/").unwrap_or(raw);
        Some(raw.trim_matches('"').to_owned())
    }

    /// The body is empty or only whitespace.
    pub fn body_is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }
}

impl RestTransport {
    /// A builder for the API at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> RestTransportBuilder {
        RestTransportBuilder::from_config(RestConfig::new(base_url))
    }

    /// A builder starting from a deserialized config.
    pub fn from_config(config: RestConfig) -> RestTransportBuilder {
        RestTransportBuilder::from_config(config)
    }

    /// The configuration in force.
    pub fn config(&self) -> &RestConfig {
        &self.config
    }

    pub(crate) fn from_parts(
        config: RestConfig,
        auth: Option<Arc<dyn AuthProvider>>,
    ) -> Result<RestTransport> {
        // Ok or "already installed": either way a provider is there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| Error::config(format!("base_url: {e}")).field("base_url"))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("tidesync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::config(format!("cannot build the HTTP client: {e}")).with_source(e)
            })?;
        let live_client = match &config.live {
            None => None,
            Some(_) => Some(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .user_agent(concat!("tidesync/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| {
                        Error::config(format!("cannot build the live channel's HTTP client: {e}"))
                            .with_source(e)
                    })?,
            ),
        };
        Ok(RestTransport {
            config: Arc::new(config),
            auth,
            client,
            base,
            walks: crate::pull::Walks::default(),
            live_client,
        })
    }

    pub(crate) fn routes(&self, table: &str) -> Result<&TableRoutes> {
        self.config
            .tables
            .get(table)
            .ok_or_else(|| Error::config("no REST routes configured for this table").table(table))
    }

    /// `base_url` + a rendered path (or the path itself when absolute), plus query pairs
    /// (already rendered, encoded here).
    pub(crate) fn url(&self, path: &str, query: &[(String, String)]) -> Result<reqwest::Url> {
        let text = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            let base = self.config.base_url.trim_end_matches('/');
            if path.starts_with('/') || path.is_empty() {
                format!("{base}{path}")
            } else {
                format!("{base}/{path}")
            }
        };
        let mut url = reqwest::Url::parse(&text)
            .map_err(|e| Error::config(format!("route produced an invalid URL: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query().unwrap_or_default().to_owned();
            for (name, value) in query {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(&encoded(name));
                q.push('=');
                q.push_str(&encoded(value));
            }
            url.set_query(Some(&q));
        }
        Ok(url)
    }

    /// Whether `url` has the base URL's origin (credentials are only sent there).
    pub(crate) fn same_origin(&self, url: &reqwest::Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Global headers, then route headers (overriding).
    pub(crate) fn headers(&self, route: &Headers) -> Vec<(HeaderName, HeaderValue)> {
        let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (name, value) in self.config.headers.0.iter().chain(route.0.iter()) {
            // Validated at build time; anything odd is skipped rather than panicking.
            if let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                v.set_sensitive(true);
                out.retain(|(existing, _)| existing != n);
                out.push((n, v));
            }
        }
        out
    }

    /// Sends `out`, asking the auth provider to refresh and retrying on 401/403 up to
    /// `auth_retries` times. Any status is returned; client failures are classified errors.
    pub(crate) async fn execute(&self, table: &str, out: &Outgoing) -> Result<Incoming> {
        let mut refreshes = 0;
        loop {
            let mut secrets = Vec::new();
            let mut request = self.client.request(out.method.clone(), out.url.clone());
            for (name, value) in &out.headers {
                request = request.header(name, value);
            }
            if let Some(auth) = &self.auth {
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
                    secrets.push(secret.expose().to_owned());
                    request = request.header(name, value);
                }
            }
            if let Some(body) = &out.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let started = std::time::Instant::now();
            let mut response = request.send().await.map_err(|e| client_error(table, &e))?;
            let status = response.status().as_u16();
            tracing::debug!(
                table,
                method = %out.method,
                path = out.url.path(),
                status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "tidesync rest request"
            );
            if matches!(status, 401 | 403)
                && refreshes < self.config.auth_retries
                && let Some(auth) = &self.auth
            {
                refreshes += 1;
                tracing::info!(
                    table,
                    status,
                    attempt = refreshes,
                    "credentials refused; refreshing"
                );
                drop(response);
                auth.refresh().await.map_err(|e| e.table(table))?;
                continue;
            }
            let headers = response.headers().clone();
            let (body, overflow) = read_limited(
                &mut response,
                self.config.max_response_bytes,
                success(status),
            )
            .await
            .map_err(|e| client_error(table, &e))?;
            return Ok(Incoming {
                status,
                headers,
                body,
                overflow,
                secrets,
            });
        }
    }

    /// The error for a response outside 2xx (or a 2xx that could not be used).
    pub(crate) fn status_error(
        &self,
        table: &str,
        key: Option<&Key>,
        routes: Option<&TableRoutes>,
        resp: &Incoming,
    ) -> Error {
        let kind = classify::kind_for_status(resp.status);
        let reason = reqwest::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut err = Error::new(
            kind,
            format!("server answered {} {reason}", resp.status)
                .trim_end()
                .to_owned(),
        )
        .status(resp.status)
        .table(table);
        if let Some(key) = key {
            err = err.key(key);
        }
        if let Some(server_ms) = resp.server_time_ms() {
            err = err.server_time(server_ms);
        }
        if let Some(delay) = resp
            .header("retry-after")
            .and_then(|v| classify::parse_retry_after(v, SystemTime::now()))
        {
            err = err.retry_after(delay);
        }
        if !resp.body_is_empty() {
            err = err.excerpt(resp.excerpt(self.config.excerpt_bytes));
        }
        if kind == ErrorKind::Conflict
            && !resp.overflow
            && let (Some(routes), Ok(body)) = (routes, serde_json::from_slice::<Value>(&resp.body))
            && let Some(current) = conflict_record(routes, &body)
        {
            err = err.remote(current);
        }
        err
    }

    /// A `Decode` error about a 2xx response, with an excerpt.
    pub(crate) fn decode_error(
        &self,
        table: &str,
        key: Option<&Key>,
        resp: &Incoming,
        what: impl Into<String>,
    ) -> Error {
        let mut err = Error::new(ErrorKind::Decode, what)
            .status(resp.status)
            .table(table);
        if let Some(key) = key {
            err = err.key(key);
        }
        if !resp.body.is_empty() {
            err = err.excerpt(resp.excerpt(self.config.excerpt_bytes));
        }
        err
    }

    /// Parses a 2xx body as JSON (`Decode` on failure or overflow).
    pub(crate) fn json_body(
        &self,
        table: &str,
        key: Option<&Key>,
        resp: &Incoming,
    ) -> Result<Value> {
        if resp.overflow {
            return Err(self.decode_error(
                table,
                key,
                resp,
                format!(
                    "response body is larger than max_response_bytes ({} bytes); not read further",
                    self.config.max_response_bytes
                ),
            ));
        }
        serde_json::from_slice(&resp.body).map_err(|e| {
            self.decode_error(table, key, resp, format!("response is not valid JSON: {e}"))
        })
    }
}

fn success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn client_error(table: &str, err: &reqwest::Error) -> Error {
    let error = Error::new(
        classify::kind_for_client_error(err),
        classify::describe_client_error(err),
    )
    .table(table);
    // Connect, DNS and TLS failures (and connect timeouts): the request never left.
    if err.is_connect() {
        error.unsent()
    } else {
        error
    }
}

/// Reads the body in chunks, stopping past `limit`. A `Content-Length` above the limit stops
/// before reading anything. For error statuses the first part is kept for the excerpt.
async fn read_limited(
    response: &mut reqwest::Response,
    limit: u64,
    success: bool,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    let keep = if success { limit } else { limit.min(64 * 1024) };
    if response.content_length().is_some_and(|len| len > limit) {
        return Ok((Vec::new(), true));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = usize::try_from(keep)
            .unwrap_or(usize::MAX)
            .saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The server's current record in a conflict response, per the table's pointers; each
/// candidate must be an object carrying the key field.
/// Whether a record is a tombstone by the table's pull feed rule (`deleted: true` …).
pub(crate) fn is_tombstone(routes: &TableRoutes, record: &Record) -> bool {
    routes
        .pull
        .as_ref()
        .and_then(|feed| feed.tombstone.as_ref())
        .is_some_and(|t| record.get(&t.field) == Some(&t.value))
}

pub(crate) fn conflict_record(routes: &TableRoutes, body: &Value) -> Option<Record> {
    let record = routes.conflict_record.iter().find_map(|p: &Pointer| {
        let candidate = unwrap_single(p.get(body)?)?;
        match candidate {
            Value::Object(map) if map.contains_key(&routes.key) => Some(map.clone()),
            _ => None,
        }
    })?;
    // A tombstone (by the table's pull feed rule) is a deleted record, not a live version.
    let tombstone = routes
        .pull
        .as_ref()
        .and_then(|feed| feed.tombstone.as_ref());
    match tombstone {
        Some(t) if record.get(&t.field) == Some(&t.value) => None,
        _ => Some(record),
    }
}

/// A one-element array is its element; other values are themselves; an empty array is none.
pub(crate) fn unwrap_single(value: &Value) -> Option<&Value> {
    match value {
        Value::Array(items) if items.len() == 1 => items.first(),
        Value::Array(_) => None,
        other => Some(other),
    }
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn credentials_echoed_in_a_body_are_redacted() {
        let secrets = vec!["Bearer s3cr3t-token".to_owned(), "k".to_owned()];
        let body =
            r#"{"error":"bad","echo":{"authorization":"Bearer s3cr3t-token","t":"s3cr3t-token"}}"#;
        let out = super::redact(body.to_owned(), &secrets);
        assert!(!out.contains("s3cr3t-token"), "{out}");
        assert_eq!(out.matches("***").count(), 2, "{out}");
        assert!(
            out.contains("\"error\":\"bad\""),
            "values too short to be secrets are kept"
        );
    }
}
