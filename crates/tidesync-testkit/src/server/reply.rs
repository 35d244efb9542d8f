//! [`Reply`]: a JSON response as the handlers build it, cheap to clone (the idempotency store
//! keeps replies to replay them) and converted into an HTTP response at the edge.

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use axum::http::{Response, StatusCode};
use serde_json::{Value, json};

/// Response header set on a reply replayed from the idempotency store.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Marker put in the response extensions of a replayed reply, read by the request log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replayed;

/// A JSON response (or an empty one).
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) replayed: bool,
}

impl Reply {
    /// A response with a JSON body.
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            replayed: false,
        }
    }

    /// A response without a body.
    pub(crate) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
            replayed: false,
        }
    }

    /// `{"error": msg}`.
    pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Self {
        Self::json(status, json!({ "error": msg.into() }))
    }

    /// `{"error": msg, "current": current}`.
    pub(crate) fn conflict(status: StatusCode, msg: &str, current: Option<Value>) -> Self {
        Self::json(
            status,
            json!({ "error": msg, "current": current.unwrap_or(Value::Null) }),
        )
    }

    /// 400 `{"error": msg}`.
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::error(StatusCode::BAD_REQUEST, msg)
    }

    /// 404 `{"error": "not found"}`.
    pub(crate) fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "not found")
    }

    /// Adds a header; a value that is not a valid header value is skipped.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The same reply, marked as replayed from the idempotency store.
    pub(crate) fn as_replay(&self) -> Self {
        let mut r = self.clone();
        r.replayed = true;
        r
    }

    /// The HTTP response.
    pub(crate) fn into_response(self) -> Response<Body> {
        let body = match &self.body {
            Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Body::empty(),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        if self.body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in self.headers {
            headers.append(k, v);
        }
        if self.replayed {
            headers.insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
            resp.extensions_mut().insert(Replayed);
        }
        resp
    }
}
