//! The transport's configuration (serde) and its builder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tidesync_core::{Error, Result};

use crate::auth::AuthProvider;
use crate::client::RestTransport;
use crate::routes::{Headers, TableRoutes};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default whole-request timeout (connect, send, and reading the body).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default response size limit.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Default size of response excerpts in errors.
pub const DEFAULT_EXCERPT_BYTES: usize = 512;
/// Default idempotency header.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Default fencing-epoch header.
pub const DEFAULT_EPOCH_HEADER: &str = "X-Tidesync-Epoch";

/// Everything the REST transport needs except credentials (those come from an
/// [`AuthProvider`], in code). This is what a TOML or JSON config file deserializes into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The API's base URL (`https://api.example.com`); route templates are appended to it.
    pub base_url: String,
    /// Connect timeout in milliseconds (default 10 000).
    #[serde(default = "default_connect")]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in milliseconds, body included (default 30 000).
    #[serde(default = "default_request")]
    pub request_timeout_ms: u64,
    /// Largest response body read, in bytes (default 16 MiB); a larger 2xx body is a
    /// `Decode` error, read no further than the limit.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    /// Largest response excerpt attached to errors, in bytes (default 512).
    #[serde(default = "default_excerpt")]
    pub excerpt_bytes: usize,
    /// The idempotency-key header name (default `Idempotency-Key`); `false` turns it off.
    #[serde(
        default = "default_idempotency",
        deserialize_with = "name_or_false",
        serialize_with = "ser_name_or_false"
    )]
    pub idempotency_header: Option<String>,
    /// The fencing-epoch header name (default `X-Tidesync-Epoch`), sent when the push
    /// request carries an epoch.
    #[serde(default = "default_epoch")]
    pub epoch_header: String,
    /// How many times a request refused with 401/403 is retried after asking the auth
    /// provider to refresh (default 1).
    #[serde(default = "default_auth_retries")]
    pub auth_retries: u32,
    /// Headers sent with every request (non-secret ones; credentials belong in an
    /// `AuthProvider`).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Routes per table name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableRoutes>,
    /// The server's live channel (SSE or WebSocket), if it has one: server changes then
    /// arrive within a blink instead of at the next poll (`[server.live]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::live::LiveConfig>,
}

fn default_connect() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_request() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_MS
}
fn default_max_response() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}
fn default_excerpt() -> usize {
    DEFAULT_EXCERPT_BYTES
}
fn default_idempotency() -> Option<String> {
    Some(DEFAULT_IDEMPOTENCY_HEADER.to_owned())
}
fn default_epoch() -> String {
    DEFAULT_EPOCH_HEADER.to_owned()
}
fn default_auth_retries() -> u32 {
    1
}

fn name_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Toggle {
        Flag(bool),
        Name(String),
    }
    match Toggle::deserialize(d) {
        Ok(Toggle::Flag(false)) => Ok(None),
        Ok(Toggle::Flag(true)) => Ok(default_idempotency()),
        Ok(Toggle::Name(name)) => Ok(Some(name)),
        Err(_) => Err(serde::de::Error::custom(
            "expected a header name or `false` (to send no idempotency key)",
        )),
    }
}

fn ser_name_or_false<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(name) => s.serialize_str(name),
        None => s.serialize_bool(false),
    }
}

impl RestConfig {
    /// A config for `base_url` with the defaults and no tables.
    pub fn new(base_url: impl Into<String>) -> Self {
        RestConfig {
            base_url: base_url.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            excerpt_bytes: DEFAULT_EXCERPT_BYTES,
            idempotency_header: default_idempotency(),
            epoch_header: default_epoch(),
            auth_retries: 1,
            headers: Headers::default(),
            tables: BTreeMap::new(),
            live: None,
        }
    }

    /// Parses a JSON config (TOML works the same through the `toml` crate's serde support).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::config(format!("REST config: {e}")))
    }

    /// Checks everything: URL, timeouts, headers, every table's routes.
    pub fn validate(&self) -> Result<()> {
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            Error::config(format!("base_url `{}` is not a URL: {e}", self.base_url))
                .field("base_url")
                .setting(["base_url"])
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config("base_url must be http or https")
                .field("base_url")
                .setting(["base_url"]));
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::config("timeouts must be greater than zero")
                    .field("timeout")
                    .setting([name]));
            }
        }
        if self.max_response_bytes == 0 {
            return Err(
                Error::config("max_response_bytes must be greater than zero")
                    .field("max_response_bytes")
                    .setting(["max_response_bytes"]),
            );
        }
        let named_headers = self
            .idempotency_header
            .iter()
            .map(|name| ("idempotency_header", name))
            .chain([("epoch_header", &self.epoch_header)]);
        for (setting, name) in named_headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(
                    Error::config(format!("invalid header name `{name}`")).setting([setting])
                );
            }
        }
        self.headers
            .validate("*", "headers")
            .map_err(|e| e.within("headers"))?;
        for (table, routes) in &self.tables {
            routes
                .validate(table)
                .map_err(|e| e.within(table.as_str()).within("tables"))?;
        }
        if let Some(live) = &self.live {
            live.validate()?;
        }
        Ok(())
    }
}

/// Builds a [`RestTransport`]; every check runs in [`RestTransportBuilder::build`].
#[must_use]
pub struct RestTransportBuilder {
    pub(crate) config: RestConfig,
    pub(crate) auth: Option<Arc<dyn AuthProvider>>,
}

impl std::fmt::Debug for RestTransportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTransportBuilder")
            .field("config", &self.config)
            .field("auth", &self.auth.as_ref().map(|_| "<provider>"))
            .finish()
    }
}

impl RestTransportBuilder {
    /// Starts from a config (e.g. deserialized from a file).
    pub fn from_config(config: RestConfig) -> Self {
        RestTransportBuilder { config, auth: None }
    }

    /// Adds or replaces the routes of `table`.
    pub fn table(mut self, table: impl Into<String>, routes: TableRoutes) -> Self {
        self.config.tables.insert(table.into(), routes);
        self
    }

    /// Sets the auth provider (static headers: [`crate::StaticAuth`]).
    pub fn auth(mut self, provider: impl AuthProvider) -> Self {
        self.auth = Some(Arc::new(provider));
        self
    }

    /// Sets a shared auth provider.
    pub fn auth_arc(mut self, provider: Arc<dyn AuthProvider>) -> Self {
        self.auth = Some(provider);
        self
    }

    /// The server's live channel (SSE or WebSocket).
    pub fn live(mut self, live: crate::live::LiveConfig) -> Self {
        self.config.live = Some(live);
        self
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout_ms = duration_ms(timeout);
        self
    }

    /// Whole-request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout_ms = duration_ms(timeout);
        self
    }

    /// Response size limit in bytes.
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.config.max_response_bytes = limit;
        self
    }

    /// Excerpt size in errors.
    pub fn excerpt_bytes(mut self, limit: usize) -> Self {
        self.config.excerpt_bytes = limit;
        self
    }

    /// The idempotency header name; `None` sends none.
    pub fn idempotency_header(mut self, name: Option<&str>) -> Self {
        self.config.idempotency_header = name.map(str::to_owned);
        self
    }

    /// The fencing-epoch header name.
    pub fn epoch_header(mut self, name: &str) -> Self {
        self.config.epoch_header = name.to_owned();
        self
    }

    /// Retries after an auth refresh.
    pub fn auth_retries(mut self, retries: u32) -> Self {
        self.config.auth_retries = retries;
        self
    }

    /// A header for every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.insert(name, value);
        self
    }

    /// Validates the config and builds the transport (installing rustls' `ring` crypto
    /// provider as the process default if none is installed yet).
    pub fn build(self) -> Result<RestTransport> {
        self.config.validate()?;
        RestTransport::from_parts(self.config, self.auth)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_idempotency_toggle() {
        let c = RestConfig::from_json(r#"{"base_url": "http://x"}"#).unwrap();
        assert_eq!(c, RestConfig::new("http://x"));
        let c = RestConfig::from_json(r#"{"base_url": "http://x", "idempotency_header": false}"#)
            .unwrap();
        assert_eq!(c.idempotency_header, None);
        let c = RestConfig::from_json(r#"{"base_url": "http://x", "idempotency_header": "X-Req"}"#)
            .unwrap();
        assert_eq!(c.idempotency_header.as_deref(), Some("X-Req"));
        let err = RestConfig::from_json(r#"{"base_url": "http://x", "idempotency_header": 3}"#)
            .unwrap_err();
        assert!(err.to_string().contains("header name or `false`"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = RestConfig::from_json(r#"{"base_url": "http://x", "timeout": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
        let err = RestConfig::from_json(
            r#"{"base_url": "http://x", "tables": {"posts": {"create": {"method": "POST", "url": "/p", "bdy": "full"}}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `bdy`"), "{err}");
    }

    #[test]
    fn header_templates_and_answer_rules_are_checked_with_their_names() {
        let with = |update: &str| {
            RestConfig::from_json(&format!(
                r#"{{"base_url": "http://x", "tables": {{"posts": {{"update": {update}}}}}}}"#
            ))
        };
        let ok = with(
            r#"{"method": "PUT", "url": "/p/{key}", "headers": {"If-Match": "\"{version}\"", "X-Row": "{key}"},
               "answers": [{"status": 400, "pointer": "/errors/0", "equals": "version conflict", "outcome": "conflict"},
                           {"status": 200, "empty_array": true, "outcome": "conflict"}]}"#,
        )
        .unwrap();
        ok.validate().unwrap();
        let err = with(r#"{"method": "PUT", "url": "/p", "headers": {"If-Match": "{etag}"}}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("`{etag}`"), "{err}");
        assert_eq!(err.field_name(), Some("If-Match"));
        let err = with(
            r#"{"method": "PUT", "url": "/p", "answers": [{"status": 400, "outcome": "maybe"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        let err = with(r#"{"method": "PUT", "url": "/p", "answers": [{"status": 4000, "outcome": "conflict"}]}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("4000"), "{err}");
        let err = RestConfig::from_json(
            r#"{"base_url": "http://x", "tables": {"posts": {"server_ids": true, "create": {"method": "PUT", "url": "/p/{key}"}}}}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("server_ids"), "{err}");
    }

    #[test]
    fn bad_base_url_and_timeouts_are_config_errors() {
        for json in [
            r#"{"base_url": "not a url"}"#,
            r#"{"base_url": "ftp://x"}"#,
            r#"{"base_url": "http://x", "request_timeout_ms": 0}"#,
            r#"{"base_url": "http://x", "epoch_header": "bad header"}"#,
        ] {
            let err = RestConfig::from_json(json).unwrap().validate().unwrap_err();
            assert_eq!(err.kind(), tidesync_core::ErrorKind::Config, "{json}");
        }
    }
}
