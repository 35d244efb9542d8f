//! The request pipeline around every handler, in order: body limit (413) → request log →
//! fault decision (latency; `Drop`, `Status`, `Hang`, `Delay` before the handler) → auth (401)
//! → handler → response faults (`CommitThen*`, `Malformed`, `Oversized`, `RepeatPage`) →
//! `Date` header and the logged status.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, HeaderName, HeaderValue, LINK, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::{FaultKind, RepeatMemo, RequestInfo, RetryAfter};
use super::log::{LoggedRequest, logged_body, selected_headers};
use super::net::ConnControl;
use super::pagination::encode_cursor;
use super::query::{param, parse_pairs};
use super::reply::{Replayed, Reply};
use super::state::Shared;
use super::time::http_date_in;

/// The memo key of a pull (`records:<c>` or `deleted:<c>`), `None` for other requests.
fn feed_key(method: &Method, path: &str) -> Option<String> {
    if method != Method::GET {
        return None;
    }
    let rest = path.strip_prefix("/api/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [c] if !c.is_empty() => Some(format!("records:{c}")),
        [c, "deleted"] if !c.is_empty() => Some(format!("deleted:{c}")),
        _ => None,
    }
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The body of an injected error.
fn status_reply(status: u16, retry_after: Option<RetryAfter>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = Reply::json(
        code,
        json!({ "error": "injected fault", "status": code.as_u16() }),
    );
    match retry_after {
        Some(RetryAfter::Seconds(s)) => reply = reply.header(RETRY_AFTER, &s.to_string()),
        Some(RetryAfter::HttpDate(s)) => {
            reply = reply.header(RETRY_AFTER, &http_date_in(Duration::from_secs(s)));
        }
        None => {}
    }
    reply.into_response()
}

/// Closes the client's connection without a response: the connection task is told to drop
/// the connection, and this future never completes (so nothing can be written first).
async fn drop_connection(conn: Option<ConnControl>) -> Response {
    match conn {
        Some(c) => {
            c.kill();
            std::future::pending::<Response>().await
        }
        // Not served by our accept loop (cannot happen): the closest thing is an empty 502.
        None => Reply::empty(StatusCode::BAD_GATEWAY).into_response(),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// 200 with the first half of the real body.
async fn malformed(resp: Response) -> Response {
    let bytes = to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let cut = if bytes.len() >= 2 {
        bytes.slice(..bytes.len() / 2)
    } else {
        Bytes::from_static(b"{\"data\":[{\"id\":")
    };
    json_response(StatusCode::OK, cut.to_vec())
}

/// 200 with a valid JSON body of `size` bytes.
fn oversized(size: usize) -> Response {
    let head: &[u8] =
        b"{\"data\":[],\"hasMore\":false,\"total\":0,\"nextCursor\":null,\"padding\":\"";
    let tail: &[u8] = b"\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = Vec::with_capacity(head.len() + pad + tail.len());
    body.extend_from_slice(head);
    body.resize(head.len() + pad, b'x');
    body.extend_from_slice(tail);
    json_response(StatusCode::OK, body)
}

fn memo_response(memo: &RepeatMemo) -> Response {
    let mut resp = json_response(StatusCode::OK, memo.body.clone());
    for (k, v) in &memo.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// The same page forever: the first pull of the feed is memoized with `hasMore: true`, a
/// `nextCursor` and a `Link` that lead back to it.
async fn repeat_page(
    st: &Shared,
    key: &str,
    self_url: String,
    cursor: Option<String>,
    resp: Response,
) -> Response {
    if let Some(memo) = st.faults().repeat_memo.get(key) {
        return memo_response(memo);
    }
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let total = resp
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return json_response(StatusCode::OK, bytes.to_vec()),
    };
    let cursor = cursor.unwrap_or_else(|| encode_cursor(None));
    if let Value::Object(m) = &mut value {
        m.insert("hasMore".into(), Value::Bool(true));
        m.insert("nextCursor".into(), Value::String(cursor.clone()));
    }
    let mut headers = vec![
        (
            LINK.as_str().to_owned(),
            format!("<{self_url}>; rel=\"next\""),
        ),
        ("x-has-more".to_owned(), "true".to_owned()),
        ("x-next-cursor".to_owned(), cursor),
    ];
    if let Some(t) = total {
        headers.push(("x-total-count".to_owned(), t));
    }
    let memo = RepeatMemo {
        headers,
        body: serde_json::to_vec(&value).unwrap_or_default(),
    };
    let resp = memo_response(&memo);
    st.faults().repeat_memo.insert(key.to_owned(), memo);
    resp
}

/// Stamps `Date`, records the outcome in the log.
fn finish(st: &Shared, seq: u64, mut resp: Response) -> Response {
    let skew = {
        let store = st.store();
        store.skew_ms + store.date_skew_ms
    };
    let magnitude = std::time::Duration::from_millis(skew.unsigned_abs());
    let now = if skew >= 0 {
        SystemTime::now().checked_add(magnitude)
    } else {
        SystemTime::now().checked_sub(magnitude)
    };
    let now = now.unwrap_or_else(SystemTime::now);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        resp.headers_mut().insert(DATE, v);
    }
    let status = resp.status().as_u16();
    let replayed = resp.extensions().get::<Replayed>().is_some();
    st.log().update(seq, |e| {
        e.status = Some(status);
        e.replayed |= replayed;
    });
    resp
}

/// The middleware.
pub(crate) async fn pipeline(State(st): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let conn = parts.extensions.get::<ConnControl>().cloned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let limit = st.body_limit;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        None
    } else {
        to_bytes(body, limit).await.ok()
    };
    let seq = st.log().begin(LoggedRequest {
        seq: 0,
        method: parts.method.as_str().to_owned(),
        path: path.clone(),
        query: query.clone(),
        headers: selected_headers(&parts.headers),
        // The token endpoint's body holds the refresh token: never logged.
        body: if path.starts_with("/auth/") {
            "<redacted>".to_owned()
        } else {
            bytes.as_deref().map(logged_body).unwrap_or_default()
        },
        status: None,
        fault: None,
        handler_status: None,
        replayed: false,
    });
    let Some(bytes) = bytes else {
        let reply = Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        return finish(&st, seq, reply.into_response());
    };

    let feed = feed_key(&parts.method, &path);
    let decision = st.faults().decide(&RequestInfo {
        method: &parts.method,
        path: &path,
        feed: feed.as_deref(),
    });
    if let Some(kind) = &decision.kind {
        tracing::debug!(fault = %kind.label(), method = %parts.method, %path, "injecting fault");
        let label = kind.label();
        st.log().update(seq, |e| e.fault = Some(label));
    }
    if let Some(d) = decision.latency {
        tokio::time::sleep(d).await;
    }
    match &decision.kind {
        Some(FaultKind::Delay(d) | FaultKind::Hang(d)) => tokio::time::sleep(*d).await,
        Some(FaultKind::Drop) => return drop_connection(conn).await,
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => return finish(&st, seq, status_reply(*status, *retry_after)),
        _ => {}
    }

    if is_api(&path) || path.starts_with("/live/") {
        let authorized = {
            let mut auth = st.auth();
            let ok = !auth.required || auth.authorized(&parts.headers);
            if !ok {
                auth.rejections += 1;
            }
            ok
        };
        if !authorized {
            let reply = Reply::error(StatusCode::UNAUTHORIZED, "unauthorized")
                .header(WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"");
            return finish(&st, seq, reply.into_response());
        }
    }

    let self_url = {
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
        let origin = host.map(|h| format!("http://{h}")).unwrap_or_default();
        match &query {
            Some(q) => format!("{origin}{path}?{q}"),
            None => format!("{origin}{path}"),
        }
    };
    let cursor = param(&parse_pairs(query.as_deref()), "cursor").map(str::to_owned);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // What the handler did, recorded before a response fault hides it.
    let handler_status = resp.status().as_u16();
    let replayed = resp.extensions().get::<Replayed>().is_some();
    st.log().update(seq, |e| {
        e.handler_status = Some(handler_status);
        e.replayed = replayed;
    });

    let resp = match decision.kind {
        Some(FaultKind::CommitThenDrop) => return drop_connection(conn).await,
        Some(FaultKind::CommitThenStatus(s)) => status_reply(s, None),
        Some(FaultKind::Malformed) => malformed(resp).await,
        Some(FaultKind::Oversized(n)) => oversized(n),
        Some(FaultKind::RepeatPage) => match &feed {
            Some(key) => repeat_page(&st, key, self_url, cursor, resp).await,
            None => resp,
        },
        _ => resp,
    };
    finish(&st, seq, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_keys() {
        assert_eq!(
            feed_key(&Method::GET, "/api/posts").as_deref(),
            Some("records:posts")
        );
        assert_eq!(
            feed_key(&Method::GET, "/api/posts/deleted").as_deref(),
            Some("deleted:posts")
        );
        assert_eq!(feed_key(&Method::GET, "/api/posts/1"), None);
        assert_eq!(feed_key(&Method::POST, "/api/posts"), None);
        assert_eq!(feed_key(&Method::GET, "/api/"), None);
    }

    #[tokio::test]
    async fn oversized_is_valid_json_of_the_size() {
        let resp = oversized(10_000);
        let bytes = to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        assert_eq!(bytes.len(), 10_000);
        assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
    }
}
