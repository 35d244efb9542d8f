//! The axum router and the endpoint handlers. Handlers validate input (every malformed request
//! is a 4xx with `{"error": …}`), then run one atomic step on the [`Store`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, ETAG, HOST, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::collection::{Body, Collection, Pre, etag};
use super::feed::{self, Feed, LinkBase};
use super::idempotency::{Action, Fingerprint, valid_key};
use super::ids::{id_json_from_key, key_from_json};
use super::pipeline::pipeline;
use super::query::{param, parse_id_filter, parse_pairs};
use super::reply::Reply;
use super::state::Shared;
use super::store::{Store, WriteCtx};

/// Most ops in one bulk request.
const MAX_BULK_OPS: usize = 1000;

type St = State<Arc<Shared>>;

/// The whole HTTP surface, with the request pipeline (log, faults, auth) around it.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/{collection}",
            get(list)
                .post(create)
                .put(put_by_query)
                .patch(patch_by_query)
                .delete(delete_by_query),
        )
        .route("/api/{collection}/bulk", post(bulk))
        .route(
            "/api/{collection}/rows",
            post(rows_create).patch(rows_update).delete(rows_delete),
        )
        .route("/api/{collection}/deleted", get(deleted_feed))
        .route(
            "/api/{collection}/{id}",
            get(get_one)
                .put(put_one)
                .patch(patch_one)
                .delete(delete_one),
        )
        .route("/auth/token", post(token))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(shared.clone(), pipeline))
        .with_state(shared)
}

fn respond(r: Result<Reply, Reply>) -> Response {
    r.unwrap_or_else(|e| e).into_response()
}

fn path_error(e: PathRejection) -> Reply {
    Reply::bad_request(format!("invalid path: {e}"))
}

fn check_collection(name: &str) -> Result<(), Reply> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Reply::bad_request(
            "collection name must be 1 to 128 characters without control characters",
        ));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), Reply> {
    key_from_json(&Value::String(id.to_owned()))
        .map(|_| ())
        .map_err(Reply::bad_request)
}

fn one(path: Result<Path<String>, PathRejection>) -> Result<String, Reply> {
    let Path(c) = path.map_err(path_error)?;
    check_collection(&c)?;
    Ok(c)
}

fn two(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), Reply> {
    let Path((c, id)) = path.map_err(path_error)?;
    check_collection(&c)?;
    check_id(&id)?;
    Ok((c, id))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The `id` of a PostgREST-style `?id=eq.<id>` write.
fn id_from_query(pairs: &[(String, String)]) -> Result<String, Reply> {
    let raw = param(pairs, "id")
        .ok_or_else(|| Reply::bad_request("`id=eq.<id>` is required in the query string"))?;
    let ids = parse_id_filter(raw).map_err(Reply::bad_request)?;
    match <[String; 1]>::try_from(ids) {
        Ok([id]) => {
            check_id(&id)?;
            Ok(id)
        }
        Err(_) => Err(Reply::bad_request(
            "exactly one id is required (`id=eq.<id>`)",
        )),
    }
}

/// The origin of absolute `Link`s, from the `Host` header.
fn origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| format!("http://{host}"))
}

fn link_base(coll: &Collection, headers: &HeaderMap, path: String) -> LinkBase {
    LinkBase {
        origin: if coll.config.relative_links {
            None
        } else if let Some(origin) = &coll.config.link_origin {
            Some(origin.trim_end_matches('/').to_owned())
        } else {
            origin(headers)
        },
        path,
    }
}

async fn not_found() -> Response {
    Reply::not_found().into_response()
}

async fn method_not_allowed() -> Response {
    Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response()
}

// ---- pulls ---------------------------------------------------------------------------------

async fn list(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    pull(&st, path, q.as_deref(), &headers, Feed::Records)
}

async fn deleted_feed(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    pull(&st, path, q.as_deref(), &headers, Feed::Deleted)
}

fn pull(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    q: Option<&str>,
    headers: &HeaderMap,
    feed: Feed,
) -> Response {
    respond(pull_inner(st, path, q, headers, feed))
}

fn pull_inner(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    q: Option<&str>,
    headers: &HeaderMap,
    feed: Feed,
) -> Result<Reply, Reply> {
    let c = one(path)?;
    let pairs = parse_pairs(q);
    let url_path = match feed {
        Feed::Records => format!("/api/{}", super::query::encode(&c)),
        Feed::Deleted => format!("/api/{}/deleted", super::query::encode(&c)),
    };
    let mut store = st.store();
    let reply = store.with_view(&c, |coll| {
        let base = link_base(coll, headers, url_path);
        feed::list(coll, feed, &pairs, &base)
    });
    if feed == Feed::Records && reply.status == StatusCode::OK && store.get(&c).is_some() {
        let now = store.now();
        store.collection_mut(&c).page_served(now);
    }
    Ok(reply)
}

async fn get_one(
    State(st): St,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    respond(get_inner(&st, path, &headers))
}

fn get_inner(
    st: &Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
) -> Result<Reply, Reply> {
    let (c, id) = two(path)?;
    let store = st.store();
    let Some(coll) = store.get(&c) else {
        return Err(Reply::not_found());
    };
    match coll.get(&id) {
        Some(r) if !r.deleted => {
            let tag = etag(r.version);
            let not_modified = headers
                .get(IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(',')
                        .map(|t| t.trim().trim_start_matches("W/"))
                        .any(|t| t == tag || t == "*")
                });
            if not_modified {
                return Ok(Reply::empty(StatusCode::NOT_MODIFIED).header(ETAG, &tag));
            }
            Ok(Reply::json(StatusCode::OK, coll.render(r)).header(ETAG, &tag))
        }
        Some(_) => Err(Reply::json(
            StatusCode::NOT_FOUND,
            json!({ "error": "not found", "deleted": true }),
        )),
        None => Err(Reply::not_found()),
    }
}

// ---- writes --------------------------------------------------------------------------------

async fn create(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(create_inner(&st, path, &headers, &body))
}

fn create_inner(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, Reply> {
    let c = one(path)?;
    let ctx = WriteCtx::from_headers(headers)?;
    let (body, shape) = shape_body(st, &c, body, true)?;
    let fp = Fingerprint {
        collection: c.clone(),
        action: Action::Create,
        id: body.id.as_ref().and_then(|i| key_from_json(i).ok()),
    };
    let mut store = st.store();
    let reply = store.mutate(&ctx, fp, |s| {
        let now = s.now();
        s.collection_mut(&c).create(body, now)
    });
    Ok(shape.reply(reply))
}

/// How a collection's write answers are shaped (see [`CollectionConfig::row_envelope`]).
struct Shape {
    row_envelope: bool,
    wants_record: bool,
}

impl Shape {
    fn reply(&self, reply: Reply) -> Reply {
        if !self.row_envelope || !reply.status.is_success() {
            return reply;
        }
        let body = if self.wants_record {
            json!({ "rows": [reply.body.clone().unwrap_or(Value::Null)] })
        } else {
            json!({ "ok": true })
        };
        Reply {
            body: Some(body),
            ..reply
        }
    }
}

/// Parses a write body under the collection's rules: the row envelope and its options, then
/// the required fields.
fn shape_body(st: &Shared, c: &str, raw: &[u8], create: bool) -> Result<(Body, Shape), Reply> {
    let config = st.store().config_for(c);
    let mut top = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Reply::bad_request("request body must be a JSON object")),
        Err(e) => {
            return Err(Reply::bad_request(format!(
                "request body is not valid JSON: {e}"
            )));
        }
    };
    let mut shape = Shape {
        row_envelope: config.row_envelope,
        wants_record: true,
    };
    let record = if config.row_envelope {
        let Some(Value::Object(row)) = top.remove("row") else {
            return Err(Reply::bad_request("`row` (an object) is required"));
        };
        let wants = match top.remove("return") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(Reply::bad_request("`return` must be a boolean")),
        };
        if let Some(column) = top.keys().next() {
            return Err(Reply::bad_request(format!("invalid columns: `{column}`")));
        }
        shape.wants_record = create || wants;
        row
    } else {
        top
    };
    if let Some(field) = config
        .required_fields
        .iter()
        .find(|f| !record.contains_key(f.as_str()))
    {
        return Err(Reply::bad_request(format!(
            "missing required field `{field}`"
        )));
    }
    let body = Body::split(record).map_err(Reply::bad_request)?;
    Ok((body, shape))
}

/// The kinds of single-record writes addressed by id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Replace,
    Patch,
    Delete,
}

fn write_by_id(
    st: &Shared,
    c: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    w: Write,
) -> Reply {
    write_by_id_inner(st, c, id, headers, body, w).unwrap_or_else(|e| e)
}

fn write_by_id_inner(
    st: &Shared,
    c: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    w: Write,
) -> Result<Reply, Reply> {
    let ctx = WriteCtx::from_headers(headers)?;
    let (body, shape) = match w {
        Write::Delete if body.iter().all(u8::is_ascii_whitespace) => (
            Body::default(),
            Shape {
                row_envelope: false,
                wants_record: false,
            },
        ),
        Write::Delete => (
            Body::parse(body).map_err(Reply::bad_request)?,
            Shape {
                row_envelope: false,
                wants_record: false,
            },
        ),
        Write::Replace | Write::Patch => shape_body(st, c, body, false)?,
    };
    let pre = Pre {
        if_match: if_match(headers),
        version: body.version,
    };
    let action = match w {
        Write::Replace | Write::Patch => Action::Update,
        Write::Delete => Action::Delete,
    };
    let fp = Fingerprint {
        collection: c.to_owned(),
        action,
        id: Some(id.to_owned()),
    };
    let mut store = st.store();
    let reply = store.mutate(&ctx, fp, |s| {
        let now = s.now();
        let coll = s.collection_mut(c);
        match w {
            Write::Replace => coll.replace(id, body, &pre, now),
            Write::Patch => coll.patch(id, body, &pre, now),
            Write::Delete => coll.delete(id, &pre, now),
        }
    });
    Ok(shape.reply(reply))
}

async fn put_one(
    State(st): St,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(two(path).map(|(c, id)| write_by_id(&st, &c, &id, &headers, &body, Write::Replace)))
}

async fn patch_one(
    State(st): St,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(two(path).map(|(c, id)| write_by_id(&st, &c, &id, &headers, &body, Write::Patch)))
}

async fn delete_one(
    State(st): St,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(two(path).map(|(c, id)| write_by_id(&st, &c, &id, &headers, &body, Write::Delete)))
}

async fn patch_by_query(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(by_query(
        &st,
        path,
        q.as_deref(),
        &headers,
        &body,
        Write::Patch,
    ))
}

async fn delete_by_query(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(by_query(
        &st,
        path,
        q.as_deref(),
        &headers,
        &body,
        Write::Delete,
    ))
}

fn by_query(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    q: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    w: Write,
) -> Result<Reply, Reply> {
    let c = one(path)?;
    let pairs = parse_pairs(q);
    if param(&pairs, "where.id.eq").is_some() {
        return write_where(st, &c, &pairs, headers, body, w);
    }
    let id = id_from_query(&pairs)?;
    Ok(write_by_id(st, &c, &id, headers, body, w))
}

async fn put_by_query(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(one(path).and_then(|c| {
        let pairs = parse_pairs(q.as_deref());
        if param(&pairs, "where.id.eq").is_none() {
            return Err(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "PUT on a collection needs `where.id.eq=<id>`",
            ));
        }
        write_where(&st, &c, &pairs, &headers, &body, Write::Replace)
    }))
}

/// A conditional write by `where.id.eq=<id>[&where.version.eq=<v>]`: 200 with the written rows,
/// `[]` when none matched.
fn write_where(
    st: &Shared,
    c: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    w: Write,
) -> Result<Reply, Reply> {
    let id = param(pairs, "where.id.eq").unwrap_or_default().to_owned();
    check_id(&id)?;
    let version = match param(pairs, "where.version.eq") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Reply::bad_request("`where.version.eq` must be a non-negative integer")
        })?),
    };
    let ctx = WriteCtx::from_headers(headers)?;
    let fields = match w {
        Write::Delete => None,
        Write::Replace | Write::Patch => {
            let (body, _) = shape_body(st, c, body, false)?;
            check_body_matches(&body, &id)?;
            Some(body.fields)
        }
    };
    let fp = Fingerprint {
        collection: c.to_owned(),
        action: if w == Write::Delete {
            Action::Delete
        } else {
            Action::Update
        },
        id: Some(id.clone()),
    };
    let mut store = st.store();
    Ok(store.mutate(&ctx, fp, |s| {
        let now = s.now();
        s.collection_mut(c).write_where(&id, version, fields, now)
    }))
}

/// A body `id`, if any, must name the record of the filter.
fn check_body_matches(body: &Body, id: &str) -> Result<(), Reply> {
    match &body.id {
        Some(v) if key_from_json(v).ok().as_deref() != Some(id) => Err(Reply::bad_request(
            "`id` in the body does not match `where.id.eq`",
        )),
        _ => Ok(()),
    }
}

// ---- bulk ----------------------------------------------------------------------------------

/// One parsed bulk op.
struct BulkOp {
    write: Option<Write>,
    key: Option<String>,
    body: Body,
    pre: Pre,
    idem_key: Option<String>,
}

fn parse_op(op: &Value) -> Result<BulkOp, String> {
    let Value::Object(op) = op else {
        return Err("each op must be a JSON object".into());
    };
    let write = match op.get("op").and_then(Value::as_str) {
        Some("create") => None,
        Some("update" | "patch") => Some(Write::Patch),
        Some("replace" | "upsert" | "put") => Some(Write::Replace),
        Some("delete") => Some(Write::Delete),
        Some(other) => {
            return Err(format!(
                "unknown op `{other}` (create, update, replace, delete)"
            ));
        }
        None => return Err("`op` is required".into()),
    };
    let mut body = match op.get("record") {
        None | Some(Value::Null) => Body::default(),
        Some(Value::Object(m)) => Body::split(m.clone())?,
        Some(_) => return Err("`record` must be a JSON object".into()),
    };
    if matches!(write, Some(Write::Patch | Write::Replace))
        && !matches!(op.get("record"), Some(Value::Object(_)))
    {
        return Err("`record` is required".into());
    }
    let op_id = match op.get("id") {
        None | Some(Value::Null) => None,
        Some(id) => {
            key_from_json(id)?;
            Some(id.clone())
        }
    };
    match (&op_id, &body.id) {
        (Some(a), Some(b)) if key_from_json(a).ok() != key_from_json(b).ok() => {
            return Err("`id` and `record.id` differ".into());
        }
        (Some(a), None) => body.id = Some(a.clone()),
        _ => {}
    }
    let key = body.id.as_ref().and_then(|i| key_from_json(i).ok());
    if write.is_some() && key.is_none() {
        return Err("`id` is required".into());
    }
    let mut pre = Pre {
        if_match: op.get("ifMatch").and_then(Value::as_str).map(str::to_owned),
        version: body.version,
    };
    match op.get("version") {
        None | Some(Value::Null) => {}
        Some(v) => {
            pre.version = Some(
                v.as_u64()
                    .ok_or("`version` must be a non-negative integer")?,
            );
        }
    }
    let idem_key = match op.get("idempotencyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if valid_key(k) => Some(k.clone()),
        Some(_) => return Err("`idempotencyKey` must be 1 to 255 visible ASCII characters".into()),
    };
    Ok(BulkOp {
        write,
        key,
        body,
        pre,
        idem_key,
    })
}

fn apply_op(store: &mut Store, c: &str, op: BulkOp) -> Reply {
    let action = match op.write {
        None => Action::Create,
        Some(Write::Replace | Write::Patch) => Action::Update,
        Some(Write::Delete) => Action::Delete,
    };
    let fp = Fingerprint {
        collection: c.to_owned(),
        action,
        id: op.key.clone(),
    };
    let ctx = WriteCtx {
        idem_key: op.idem_key,
        epoch: None,
    };
    store.mutate(&ctx, fp, |s| {
        let now = s.now();
        let coll = s.collection_mut(c);
        let key = op.key.unwrap_or_default();
        match op.write {
            None => coll.create(op.body, now),
            Some(Write::Replace) => coll.replace(&key, op.body, &op.pre, now),
            Some(Write::Patch) => coll.patch(&key, op.body, &op.pre, now),
            Some(Write::Delete) => coll.delete(&key, &op.pre, now),
        }
    })
}

/// `{"status": …, "record": …}` or `{"status": …, "error": …, "current": …}`.
fn op_result(r: &Reply) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), Value::from(r.status.as_u16()));
    match &r.body {
        Some(body) if r.status.is_success() => {
            m.insert("record".into(), body.clone());
        }
        Some(Value::Object(body)) => {
            for (k, v) in body {
                m.insert(k.clone(), v.clone());
            }
        }
        _ => {}
    }
    if r.replayed {
        m.insert("replayed".into(), Value::Bool(true));
    }
    Value::Object(m)
}

async fn bulk(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(bulk_inner(&st, path, &headers, &body))
}

fn bulk_inner(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, Reply> {
    let c = one(path)?;
    let ctx = WriteCtx::from_headers(headers)?;
    let ops = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => match m.remove("ops") {
            Some(Value::Array(ops)) => ops,
            _ => return Err(Reply::bad_request("`ops` must be an array")),
        },
        Ok(_) => return Err(Reply::bad_request("request body must be a JSON object")),
        Err(e) => {
            return Err(Reply::bad_request(format!(
                "request body is not valid JSON: {e}"
            )));
        }
    };
    if ops.len() > MAX_BULK_OPS {
        return Err(Reply::bad_request(format!(
            "too many ops ({}, at most {MAX_BULK_OPS})",
            ops.len()
        )));
    }
    let fp = Fingerprint {
        collection: c.clone(),
        action: Action::Bulk,
        id: None,
    };
    let mut store = st.store();
    Ok(store.mutate(&ctx, fp, |s| {
        let results: Vec<Value> = ops
            .iter()
            .map(|op| match parse_op(op) {
                Ok(op) => op_result(&apply_op(s, &c, op)),
                Err(e) => op_result(&Reply::bad_request(e)),
            })
            .collect();
        Reply::json(StatusCode::OK, json!({ "results": results }))
    }))
}

// ---- plain-row bulk ------------------------------------------------------------------------

/// What a plain-row bulk request does to every row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowsOp {
    Create,
    Update,
    Delete,
}

async fn rows_create(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(rows_inner(&st, path, &headers, &body, RowsOp::Create))
}

async fn rows_update(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(rows_inner(&st, path, &headers, &body, RowsOp::Update))
}

async fn rows_delete(
    State(st): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(rows_inner(&st, path, &headers, &body, RowsOp::Delete))
}

/// `POST|PATCH|DELETE /api/{c}/rows` with `{"rows": [{..}, ..]}`: plain records, one kind of
/// write per request, applied all or nothing (as a bulk route of NocoDB, or PostgREST's array
/// insert, in one transaction), with no version check. A create of a taken id (a tombstone
/// included) is 409 `{"error":"exists","id":…}`; an update or delete of a record that is not
/// live is 404 `{"error":"not found","id":…}`; nothing is applied then. Answers: 201 (create)
/// or 200 `{"rows": [<records>]}`; a delete answers `{"rows": [{"id": …}, ..]}`.
fn rows_inner(
    st: &Shared,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: &[u8],
    op: RowsOp,
) -> Result<Reply, Reply> {
    let c = one(path)?;
    let ctx = WriteCtx::from_headers(headers)?;
    let rows = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => match m.remove("rows") {
            Some(Value::Array(rows)) => rows,
            _ => return Err(Reply::bad_request("`rows` must be an array")),
        },
        Ok(_) => return Err(Reply::bad_request("request body must be a JSON object")),
        Err(e) => {
            return Err(Reply::bad_request(format!(
                "request body is not valid JSON: {e}"
            )));
        }
    };
    if rows.len() > MAX_BULK_OPS {
        return Err(Reply::bad_request(format!(
            "too many rows ({}, at most {MAX_BULK_OPS})",
            rows.len()
        )));
    }
    let mut parsed = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(Reply::bad_request(format!(
                "rows[{i}] must be a JSON object"
            )));
        };
        let body = Body::split(row).map_err(|e| Reply::bad_request(format!("rows[{i}]: {e}")))?;
        let key = body.id.as_ref().and_then(|id| key_from_json(id).ok());
        if op != RowsOp::Create && key.is_none() {
            return Err(Reply::bad_request(format!("rows[{i}]: `id` is required")));
        }
        parsed.push((key, body));
    }
    let fp = Fingerprint {
        collection: c.clone(),
        action: Action::Bulk,
        id: None,
    };
    let mut store = st.store();
    Ok(store.mutate(&ctx, fp, |s| {
        let now = s.now();
        let coll = s.collection_mut(&c);
        // All or nothing: every row is checked before any is written.
        for (key, _) in &parsed {
            let Some(key) = key else { continue };
            let refused = match op {
                RowsOp::Create if !coll.config.server_ids => coll
                    .holds(key)
                    .is_some()
                    .then_some((StatusCode::CONFLICT, "exists")),
                RowsOp::Create => None,
                RowsOp::Update | RowsOp::Delete => {
                    (coll.holds(key) != Some(true)).then_some((StatusCode::NOT_FOUND, "not found"))
                }
            };
            if let Some((status, error)) = refused {
                return Reply::json(status, json!({ "error": error, "id": key }));
            }
        }
        let no_check = Pre::default();
        let mut written = Vec::with_capacity(parsed.len());
        for (key, body) in parsed {
            let key = key.unwrap_or_default();
            let reply = match op {
                RowsOp::Create => coll.create(body, now),
                RowsOp::Update => coll.patch(&key, body, &no_check, now),
                RowsOp::Delete => coll.delete(&key, &no_check, now),
            };
            if !reply.status.is_success() {
                // Checked above; a row the checks let through that still fails (a bad id)
                // answers as it is. Rows before it are written: the checks cover what the
                // clients send.
                return reply;
            }
            written.push(match op {
                RowsOp::Delete => json!({ "id": id_json_from_key(&key) }),
                _ => reply.body.unwrap_or(Value::Null),
            });
        }
        let status = if op == RowsOp::Create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Reply::json(status, json!({ "rows": written }))
    }))
}

// ---- auth ----------------------------------------------------------------------------------

async fn token(State(st): St, body: Bytes) -> Response {
    let refresh = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let pairs = parse_pairs(Some(&text));
            param(&pairs, "refresh_token").map(str::to_owned)
        }
    };
    let Some(refresh) = refresh else {
        return Reply::error(StatusCode::BAD_REQUEST, "invalid_request")
            .header(CACHE_CONTROL, "no-store")
            .into_response();
    };
    let issued = st.auth().exchange(&refresh);
    match issued {
        Some((token, expires_in)) => Reply::json(
            StatusCode::OK,
            json!({ "access_token": token, "token_type": "Bearer", "expires_in": expires_in }),
        ),
        None => Reply::error(StatusCode::BAD_REQUEST, "invalid_grant"),
    }
    .header(CACHE_CONTROL, "no-store")
    .into_response()
}
