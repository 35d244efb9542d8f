//! The one error type of tidesync, with a kind and a retryable classification.
//!
//! Every error names what it is about where that is known: the table, the record key and the
//! field. Secrets never go into an error: transports put response excerpts here, never request
//! headers.

use std::fmt;
use std::time::Duration;

use crate::record::Record;

/// What went wrong, coarsely; drives what the engine does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid (bad record, wrong key type, unknown table …).
    InvalidInput,
    /// A configuration or route specification is invalid.
    Config,
    /// The record or item does not exist.
    NotFound,
    /// An insert met an existing record.
    AlreadyExists,
    /// The storage backend failed (IO, corruption, lock).
    Storage,
    /// The network failed before a response arrived (connect, reset, DNS).
    Network,
    /// A request or operation took longer than its timeout.
    Timeout,
    /// The server asked us to slow down (429).
    RateLimited,
    /// The server failed (5xx, 408, 425).
    Server,
    /// The server refused our credentials (401, 403).
    Auth,
    /// The server says this client is too old (426 Upgrade Required): pushing pauses until
    /// a newer version of the application runs; nothing is dead-lettered.
    UpgradeRequired,
    /// The server reported a version conflict (409, 412).
    Conflict,
    /// The server rejected the request for good (other 4xx).
    Permanent,
    /// A response could not be decoded (bad JSON, missing key, wrong type).
    Decode,
    /// The engine or an actor is stopped.
    Closed,
    /// A newer leader took over: this instance's sync writes are refused (fencing).
    Fenced,
    /// A bug or an invariant violation inside tidesync.
    Internal,
}

impl ErrorKind {
    /// Whether an operation that failed with this kind may succeed when tried again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Network | ErrorKind::Timeout | ErrorKind::RateLimited | ErrorKind::Server
        )
    }

    /// A stable lowercase name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Storage => "storage",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Auth => "auth",
            ErrorKind::UpgradeRequired => "upgrade_required",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Decode => "decode",
            ErrorKind::Closed => "closed",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tidesync error. Boxed inside, so `Result<T, Error>` stays one pointer wide.
#[derive(Debug)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    table: Option<String>,
    key: Option<String>,
    field: Option<String>,
    status: Option<u16>,
    retry_after: Option<Duration>,
    remote: Option<Box<Record>>,
    excerpt: Option<String>,
    /// The request never reached the server (connect refused, DNS, TLS, connect timeout).
    unsent: bool,
    /// The server's clock when it answered (HTTP `Date`), in epoch ms.
    server_time_ms: Option<i64>,
    /// Where in the validated settings the mistake is, outermost first
    /// (`["create", "headers", "If-Match"]`); empty when not a settings error.
    setting: Vec<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                table: None,
                key: None,
                field: None,
                status: None,
                retry_after: None,
                remote: None,
                excerpt: None,
                unsent: false,
                server_time_ms: None,
                setting: Vec::new(),
                source: None,
            }),
        }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Shorthand for [`ErrorKind::Storage`] wrapping a backend error.
    pub fn storage(backend: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorKind::Storage, format!("{backend} store: {source}")).with_source(source)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Names the table the error is about.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.inner.table = Some(table.into());
        self
    }

    /// Names the record key the error is about.
    pub fn key(mut self, key: impl fmt::Display) -> Self {
        self.inner.key = Some(key.to_string());
        self
    }

    /// Names the field the error is about.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.inner.field = Some(field.into());
        self
    }

    /// Records the HTTP status that caused the error.
    pub fn status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Records how long the server asked us to wait.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.inner.retry_after = Some(delay);
        self
    }

    /// Attaches the server's current record (for conflicts).
    pub fn remote(mut self, record: Record) -> Self {
        self.inner.remote = Some(Box::new(record));
        self
    }

    /// Attaches an excerpt of the response body (never request headers).
    pub fn excerpt(mut self, excerpt: impl Into<String>) -> Self {
        self.inner.excerpt = Some(excerpt.into());
        self
    }

    /// Marks a network failure as one where the request never reached the server (connect
    /// refused, DNS, TLS handshake, connect timeout): the server cannot have applied it, and
    /// it says nothing about the request itself, only that the server is unreachable.
    pub fn unsent(mut self) -> Self {
        self.inner.unsent = true;
        self
    }

    /// Appends `segments` to the path of the offending setting (innermost validators name
    /// the setting they check: `.setting(["url"])`, `.setting(["headers", name])`).
    pub fn setting<S: Into<String>>(mut self, segments: impl IntoIterator<Item = S>) -> Self {
        self.inner
            .setting
            .extend(segments.into_iter().map(Into::into));
        self
    }

    /// Prefixes the setting path with `segment`: a validator that checks a nested part
    /// (`create` of a table's routes) says where that part sits.
    pub fn within(mut self, segment: impl Into<String>) -> Self {
        self.inner.setting.insert(0, segment.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// A copy of this error with everything but its source (errors are not `Clone` because
    /// sources are not); used when one failure answers several requests.
    pub fn duplicate(&self) -> Error {
        let mut copy = Error::new(self.inner.kind, self.inner.message.clone());
        copy.inner.table = self.inner.table.clone();
        copy.inner.key = self.inner.key.clone();
        copy.inner.field = self.inner.field.clone();
        copy.inner.status = self.inner.status;
        copy.inner.retry_after = self.inner.retry_after;
        copy.inner.remote = self.inner.remote.clone();
        copy.inner.excerpt = self.inner.excerpt.clone();
        copy.inner.unsent = self.inner.unsent;
        copy.inner.server_time_ms = self.inner.server_time_ms;
        copy.inner.setting = self.inner.setting.clone();
        copy
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        self.inner.kind.retryable()
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The table named by the error, if any.
    pub fn table_name(&self) -> Option<&str> {
        self.inner.table.as_deref()
    }

    /// The record key named by the error, if any.
    pub fn record_key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// The field named by the error, if any.
    pub fn field_name(&self) -> Option<&str> {
        self.inner.field.as_deref()
    }

    /// The HTTP status, if the error came from a response.
    pub fn http_status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The server's requested delay before retrying, if any.
    pub fn retry_after_delay(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The server's current record carried by a conflict, if any.
    pub fn remote_record(&self) -> Option<&Record> {
        self.inner.remote.as_deref()
    }

    /// Takes the server's current record out of a conflict error.
    pub fn take_remote_record(&mut self) -> Option<Record> {
        self.inner.remote.take().map(|b| *b)
    }

    /// The response excerpt, if any.
    pub fn response_excerpt(&self) -> Option<&str> {
        self.inner.excerpt.as_deref()
    }

    /// Records the server's clock when it answered (HTTP `Date`, epoch ms): a refusal tells
    /// the clock offset as well as an acknowledgement does.
    pub fn server_time(mut self, epoch_ms: i64) -> Self {
        self.inner.server_time_ms = Some(epoch_ms);
        self
    }

    /// The server's clock when it answered, if the answer said.
    pub fn server_time_ms(&self) -> Option<i64> {
        self.inner.server_time_ms
    }

    /// The path of the offending setting, outermost first, relative to what was validated
    /// (a transport's table routes: `["pull", "query", "sort"]`); empty if unknown. Tools map
    /// it to a position in a config file without reading the message.
    pub fn setting_path(&self) -> &[String] {
        &self.inner.setting
    }

    /// Whether the request never reached the server (see [`Error::unsent`]).
    pub fn was_unsent(&self) -> bool {
        self.inner.unsent
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        let mut context = Vec::new();
        if let Some(table) = &self.inner.table {
            context.push(format!("table `{table}`"));
        }
        if let Some(key) = &self.inner.key {
            context.push(format!("key `{key}`"));
        }
        if let Some(field) = &self.inner.field {
            context.push(format!("field `{field}`"));
        }
        if let Some(status) = self.inner.status {
            context.push(format!("HTTP {status}"));
        }
        if !context.is_empty() {
            write!(f, " ({})", context.join(", "))?;
        }
        Ok(())
    }
}

/// `Result` with the tidesync [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_table_key_and_field() {
        let err = Error::invalid("expected a string")
            .table("posts")
            .key("p1")
            .field("title");
        assert_eq!(
            err.to_string(),
            "invalid_input: expected a string (table `posts`, key `p1`, field `title`)"
        );
    }

    #[test]
    fn setting_paths_nest_outermost_first() {
        let err = Error::config("bad header")
            .setting(["headers", "If-Match"])
            .within("update");
        assert_eq!(err.setting_path(), ["update", "headers", "If-Match"]);
        assert_eq!(err.duplicate().setting_path(), err.setting_path());
        assert!(Error::config("x").setting_path().is_empty());
    }

    #[test]
    fn only_transient_kinds_are_retryable() {
        assert!(ErrorKind::Server.retryable());
        assert!(ErrorKind::RateLimited.retryable());
        assert!(!ErrorKind::Auth.retryable());
        assert!(!ErrorKind::Permanent.retryable());
        assert!(!ErrorKind::Conflict.retryable());
    }
}
