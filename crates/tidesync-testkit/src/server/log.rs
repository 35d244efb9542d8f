//! The request log: what each request asked and what the client saw. `Authorization` values are
//! never kept (only the fact that the header was there).

use std::collections::VecDeque;

use axum::http::HeaderMap;
use serde_json::Value;

/// Headers copied into the log (lower case). `authorization` is logged as `<redacted>`.
const LOGGED_HEADERS: &[&str] = &[
    "idempotency-key",
    "if-match",
    "if-none-match",
    "x-tidesync-epoch",
    "content-type",
    "prefer",
    "authorization",
];

/// Longest body kept in the log, in bytes.
const MAX_LOGGED_BODY: usize = 1024 * 1024;

/// Most entries kept; older ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Arrival order, from 0, never reused (also across [`super::ServerHandle::clear_log`]).
    pub seq: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, still percent-encoded, e.g. `/api/posts/7`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Selected headers, lower-case names: `idempotency-key`, `if-match`, `if-none-match`,
    /// `x-tidesync-epoch`, `content-type`, `prefer`, and `authorization` with the value
    /// replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8, cut at 1 MiB); `<redacted>` for `/auth/…` requests,
    /// whose bodies carry the refresh token.
    pub body: String,
    /// The status the client received; `None` if it got no response (dropped connection,
    /// or a request still in progress such as a hang).
    pub status: Option<u16>,
    /// The injected fault, as [`super::FaultKind::label`].
    pub fault: Option<String>,
    /// The status the handler answered with, before any response fault rewrote or dropped it
    /// (`commit-then-…`, `malformed`, …); `None` if no handler ran.
    pub handler_status: Option<u16>,
    /// Whether the handler's answer was replayed from the idempotency store.
    pub replayed: bool,
}

impl LoggedRequest {
    /// Whether the handler applied a write here for the first time: it answered 2xx and the
    /// answer was not a replay. Unlike [`LoggedRequest::status`], this holds also when a fault
    /// then dropped the answer or replaced it (a `malformed` 200 over a refused write).
    pub fn applied_fresh(&self) -> bool {
        self.is_write()
            && self.handler_status.is_some_and(|s| (200..300).contains(&s))
            && !self.replayed
    }

    /// A logged header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Whether the method is a write (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// The selected headers of a request.
pub(crate) fn selected_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in LOGGED_HEADERS {
        for v in headers.get_all(*name) {
            let value = if *name == "authorization" {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            out.push(((*name).to_owned(), value));
        }
    }
    out
}

/// A body as logged.
pub(crate) fn logged_body(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_LOGGED_BODY)];
    String::from_utf8_lossy(cut).into_owned()
}

/// The log.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
    next_seq: u64,
}

impl RequestLog {
    /// Appends an entry and returns its `seq`.
    pub(crate) fn begin(&mut self, mut entry: LoggedRequest) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        entry.seq = seq;
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
        seq
    }

    /// Updates an entry (if it is still there).
    pub(crate) fn update(&mut self, seq: u64, f: impl FnOnce(&mut LoggedRequest)) {
        // Entries are in seq order; search from the back, where recent ones are.
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            f(e);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}
