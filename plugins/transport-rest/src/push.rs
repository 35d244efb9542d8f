//! Pushing outbox entries: URL and body of a write, decoding what the server answered, and the
//! bulk endpoint.

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tidesync_core::{Error, ErrorKind, Key, Op, PushOutcome, PushRequest, Record, Result};

use crate::client::{Incoming, Outgoing, RestTransport, unwrap_single};
use crate::routes::{
    Answer, BodyMode, BodyVersion, BulkFormat, BulkMatch, BulkRoute, Headers, TableRoutes,
    WriteRoute,
};
use crate::template::Value as Slot;

fn permanent(req: &PushRequest, message: String) -> Error {
    Error::new(ErrorKind::Permanent, message)
        .table(req.table.clone())
        .key(&req.key)
}

/// A record field as URL text (scalars only).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A version token as it goes into a body: a number when it looks like one (and the record
/// does not already hold it as a string).
fn version_value(token: &str, existing: Option<&Value>) -> Value {
    match (existing, token.parse::<i64>()) {
        (Some(Value::String(_)), _) | (_, Err(_)) => Value::String(token.to_owned()),
        (_, Ok(n)) => Value::from(n),
    }
}

impl RestTransport {
    /// Renders a write route's URL for `req`.
    pub(crate) fn write_url(
        &self,
        routes: &TableRoutes,
        route: &WriteRoute,
        req: &PushRequest,
    ) -> Result<reqwest::Url> {
        let rendered = route.url.render(true, |name| -> Result<Slot> {
            if name == "key" {
                return Ok(Slot::Text(req.key.to_string()));
            }
            if name == "version" {
                return req.base_version.clone().map(Slot::Text).ok_or_else(|| {
                    permanent(
                        req,
                        "the URL uses `{version}` but the entry has no base version".into(),
                    )
                    .field("version")
                });
            }
            match req.record.as_ref().and_then(|r| r.get(name)) {
                Some(value) => scalar_text(value).map(Slot::Text).ok_or_else(|| {
                    permanent(
                        req,
                        format!("field `{name}` used in the URL is not a string, number or bool"),
                    )
                    .field(name.to_owned())
                }),
                None if name == routes.key => Ok(Slot::Text(req.key.to_string())),
                None => Err(permanent(
                    req,
                    format!("the record has no field `{name}`, which the URL template needs"),
                )
                .field(name.to_owned())),
            }
        })?;
        // No lookup returns Absent, so there is always a string.
        let path = rendered.unwrap_or_default();
        self.url(&path, &[])
            .map_err(|e| e.table(req.table.clone()).key(&req.key))
    }

    /// The JSON body of a write (before the envelope), or `None`.
    pub(crate) fn write_body(
        &self,
        routes: &TableRoutes,
        mode: BodyMode,
        req: &PushRequest,
    ) -> Result<Option<Value>> {
        if mode == BodyMode::Tombstone {
            return self.tombstone_body(routes, req).map(Some);
        }
        let record = match (mode, &req.record) {
            (BodyMode::None | BodyMode::Tombstone, _) => return Ok(None),
            (_, Some(record)) => record,
            (_, None) if req.op == Op::Delete => return Ok(None),
            (_, None) => {
                return Err(Error::invalid("the push request carries no record to send")
                    .table(req.table.clone())
                    .key(&req.key));
            }
        };
        let mut body: Record = if mode == BodyMode::Changed && !req.changed.is_empty() {
            // Changed fields only; a field removed locally is sent as null (merge-patch).
            let mut subset = Map::new();
            for field in &req.changed {
                subset.insert(
                    field.clone(),
                    record.get(field).cloned().unwrap_or(Value::Null),
                );
            }
            if let Some(vf) = &routes.version.field
                && let Some(v) = record.get(vf)
            {
                subset.insert(vf.clone(), v.clone());
            }
            subset
        } else {
            record.clone()
        };
        if let Some(vf) = &routes.version.field {
            match (routes.version.body, req.op, &req.base_version) {
                (BodyVersion::None, _, _) => {
                    body.remove(vf);
                }
                (BodyVersion::Base, Op::Create, _) => {}
                (BodyVersion::Base, _, Some(base)) => {
                    let value = version_value(base, body.get(vf));
                    body.insert(vf.clone(), value);
                }
                (BodyVersion::Next, _, Some(base)) if req.op != Op::Create => {
                    let next = base
                        .trim_matches('"')
                        .parse::<i64>()
                        .ok()
                        .and_then(|n| n.checked_add(1))
                        .ok_or_else(|| {
                            permanent(
                                req,
                                format!(
                                    "`version.body = \"next\"` needs an integer version, \
                                     the base version is `{base}`"
                                ),
                            )
                            .field(vf.clone())
                        })?;
                    let value = match body.get(vf) {
                        Some(Value::String(_)) => Value::String(next.to_string()),
                        _ => Value::from(next),
                    };
                    body.insert(vf.clone(), value);
                }
                // A create (or a write with no agreed version) starts the record at 1.
                (BodyVersion::Next, _, _) => {
                    body.insert(vf.clone(), Value::from(1));
                }
                // No agreed version (e.g. an upsert over a server tombstone): a version left
                // in the record is stale and would only make the server refuse the write.
                (BodyVersion::Base, _, None) => {
                    body.remove(vf);
                }
            }
        }
        for field in &routes.local_only {
            body.remove(field);
        }
        if routes.server_ids && req.op == Op::Create {
            body.remove(&routes.key);
        }
        if let Some(route) = routes.route(req.op) {
            for (field, value) in &route.defaults {
                if !body.contains_key(field) {
                    body.insert(field.clone(), value.clone());
                }
            }
        }
        Ok(Some(Value::Object(body)))
    }

    /// The body of a soft delete: the pull feed's tombstone flag, plus the base version when
    /// versions travel in the body.
    fn tombstone_body(&self, routes: &TableRoutes, req: &PushRequest) -> Result<Value> {
        let tombstone = routes
            .pull
            .as_ref()
            .and_then(|feed| feed.tombstone.as_ref())
            .ok_or_else(|| {
                Error::config("delete route: body `tombstone` needs pull.tombstone")
                    .table(req.table.clone())
                    .key(&req.key)
                    .field("tombstone")
            })?;
        let mut body = Map::new();
        body.insert(tombstone.field.clone(), tombstone.value.clone());
        if let (Some(vf), Some(base)) = (&routes.version.field, &req.base_version) {
            let existing = req.record.as_ref().and_then(|r| r.get(vf));
            body.insert(vf.clone(), version_value(base, existing));
        }
        Ok(Value::Object(body))
    }

    /// The full body of a write through `route`: the record (see [`Self::write_body`]) in its
    /// envelope, with the route's static fields beside it.
    pub(crate) fn route_body(
        &self,
        routes: &TableRoutes,
        route: &WriteRoute,
        req: &PushRequest,
    ) -> Result<Option<Value>> {
        let Some(body) = self.write_body(routes, route.body_mode(req.op), req)? else {
            return Ok(None);
        };
        let mut outer = match (&route.envelope, body) {
            (Some(name), b) => {
                let mut wrapper = Map::new();
                wrapper.insert(name.clone(), b);
                wrapper
            }
            (None, Value::Object(map)) => map,
            (None, other) => return Ok(Some(other)),
        };
        for (field, value) in &route.extra {
            outer.insert(field.clone(), value.clone());
        }
        Ok(Some(Value::Object(outer)))
    }

    /// Headers of a write: global, route, idempotency, epoch, If-Match.
    pub(crate) fn write_headers(
        &self,
        routes: &TableRoutes,
        route_headers: &Headers,
        req: &PushRequest,
    ) -> Vec<(HeaderName, HeaderValue)> {
        // Header templates: `{key}` and `{version}` (a header whose `{version}` has no value,
        // e.g. on a create, is not sent: there is no agreed version to hold the server to).
        let mut rendered = Headers::default();
        for (name, value) in &route_headers.0 {
            if value.contains("{version}") && req.base_version.is_none() {
                continue;
            }
            let value = value
                .replace("{key}", &req.key.to_string())
                .replace("{version}", req.base_version.as_deref().unwrap_or_default());
            rendered.insert(name.clone(), value);
        }
        let mut headers = self.headers(&rendered);
        let mut add = |name: &str, value: &str| {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.retain(|(existing, _)| existing != n);
                headers.push((n, v));
            }
        };
        if let Some(name) = &self.config.idempotency_header {
            add(name, &req.idempotency_key);
        }
        if let Some(epoch) = req.epoch {
            add(&self.config.epoch_header, &epoch.to_string());
        }
        if routes.version.etag
            && req.op != Op::Create
            && let Some(base) = &req.base_version
        {
            let tag = if base.starts_with('"') || base.starts_with("W/") {
                base.clone()
            } else {
                format!("\"{base}\"")
            };
            add("If-Match", &tag);
        }
        headers
    }

    /// Fetch before write (`conflict_detection`): reads the server's current record of an
    /// update or delete based on a known version and compares the versions. `Ok(None)`: send
    /// the write; `Ok(Some(outcome))`: settled without writing (a delete of a record that is
    /// gone already); `Err` with kind `Conflict`: the record changed on the server since the
    /// base (the error carries the server's record when it is live).
    pub(crate) async fn check_before_write(
        &self,
        routes: &TableRoutes,
        req: &PushRequest,
    ) -> Result<Option<PushOutcome>> {
        let Some(base) = req.base_version.as_deref() else {
            return Ok(None); // nothing agreed to compare with (a create, an upsert)
        };
        if !routes.conflict_detection.fetches_before_write() || req.op == Op::Create {
            return Ok(None);
        }
        let fetched = self
            .fetch_one(&req.table, &req.key)
            .await
            .map_err(|e| e.key(&req.key))?;
        self.judge_fetched(routes, req, base, fetched)
    }

    /// Whether an update or delete based on `base` may go, given the server's current record.
    fn judge_fetched(
        &self,
        routes: &TableRoutes,
        req: &PushRequest,
        base: &str,
        fetched: Option<tidesync_core::Fetched>,
    ) -> Result<Option<PushOutcome>> {
        let Some(fetched) = fetched else {
            if req.op == Op::Delete {
                tracing::debug!(table = %req.table, key = %req.key, "fetch before delete: already gone");
                return Ok(Some(PushOutcome::default()));
            }
            return Err(Error::new(
                ErrorKind::Conflict,
                "fetch before write: the record was deleted on the server",
            )
            .table(req.table.clone())
            .key(&req.key));
        };
        let current = fetched.version.as_deref().map(|v| v.trim_matches('"'));
        if current == Some(base.trim_matches('"')) {
            return Ok(None);
        }
        if req.op == Op::Update && self.shows_write(routes, req, &fetched.record) {
            // Our own earlier attempt, whose answer was lost: the write is sent again (the
            // server replays it or writes the same values).
            tracing::debug!(table = %req.table, key = %req.key, "fetch before write: the server shows this write already");
            return Ok(None);
        }
        tracing::debug!(
            table = %req.table,
            key = %req.key,
            base,
            current = current.unwrap_or("none"),
            "fetch before write: the record changed on the server since the base"
        );
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "fetch before write: the server's version is `{}`, the edit was based on `{base}`",
                current.unwrap_or("none")
            ),
        )
        .table(req.table.clone())
        .key(&req.key)
        .remote(fetched.record))
    }

    /// Whether `remote` already holds every value an update writes (server-owned fields
    /// aside: the version, the pull cursor field, local-only fields).
    fn shows_write(&self, routes: &TableRoutes, req: &PushRequest, remote: &Record) -> bool {
        let Some(record) = &req.record else {
            return false;
        };
        let cursor = routes.pull.as_ref().and_then(|f| f.cursor_field.as_deref());
        let skip = |field: &str| {
            Some(field) == routes.version.field.as_deref()
                || Some(field) == cursor
                || routes.local_only.iter().any(|f| f == field)
        };
        let fields: Vec<&String> = if req.changed.is_empty() {
            record.keys().collect()
        } else {
            req.changed.iter().collect()
        };
        fields.into_iter().filter(|f| !skip(f)).all(|f| {
            record.get(f.as_str()).unwrap_or(&Value::Null)
                == remote.get(f.as_str()).unwrap_or(&Value::Null)
        })
    }

    /// One push.
    pub(crate) async fn push_one(&self, req: &PushRequest) -> Result<PushOutcome> {
        let routes = self.routes(&req.table)?;
        let route = routes
            .route_for(req.op, req.base_version.as_deref())
            .ok_or_else(|| {
                Error::config(format!("no `{}` route configured", req.op.as_str()))
                    .table(req.table.clone())
                    .key(&req.key)
            })?;
        if let Some(settled) = self.check_before_write(routes, req).await? {
            return Ok(settled);
        }
        let url = self.write_url(routes, route, req)?;
        let body = self.route_body(routes, route, req)?;
        let out = Outgoing {
            method: route.method.to_reqwest(),
            url,
            headers: self.write_headers(routes, &route.headers, req),
            body: body.map(|b| b.to_string().into_bytes()),
        };
        let resp = self
            .execute(&req.table, &out)
            .await
            .map_err(|e| e.key(&req.key))?;
        let rule = if resp.overflow {
            None
        } else {
            route
                .answers
                .iter()
                .find(|r| r.matches(resp.status, &resp.body))
        };
        if let Some(rule) = rule {
            tracing::debug!(
                table = %req.table,
                key = %req.key,
                status = resp.status,
                outcome = ?rule.outcome,
                "an answer rule matched"
            );
            return self.apply_answer(routes, route, req, &resp, rule.outcome);
        }
        if resp.success() {
            return self.write_outcome(routes, route, req, &resp);
        }
        // A delete that carried a precondition and was answered 404 may have been refused
        // (servers that filter rows by version answer 404): a conflict, never "already gone".
        let preconditioned =
            req.base_version.is_some() && route.sends_precondition(&routes.version);
        if resp.status == 404 && req.op == Op::Delete && preconditioned {
            tracing::debug!(table = %req.table, key = %req.key, "delete with a precondition: 404 is a refusal");
            return self.apply_answer(routes, route, req, &resp, Answer::Conflict);
        }
        if resp.status == 404 && req.op == Op::Delete && routes.delete_not_found_ok {
            tracing::debug!(table = %req.table, key = %req.key, "delete: already gone (404)");
            return Ok(PushOutcome {
                server_time_ms: resp.server_time_ms(),
                ..PushOutcome::default()
            });
        }
        let failed = self.status_error(&req.table, Some(&req.key), Some(routes), &resp);
        if req.op == Op::Create
            && resp.status >= 500
            && !routes.server_ids
            && routes.fetch.is_some()
            && routes.recreate.is_some()
        {
            return self.probe_failed_create(routes, req, failed).await;
        }
        Err(failed)
    }

    /// A create answered 5xx on a table with a `recreate` route: the write may have committed
    /// (the answer was an error anyway), or the id may be held by a deleted record (a unique
    /// index the API lets fail as a 500). The fetch route settles it: the server showing what
    /// the create wrote is its success; another live record there is a conflict; nothing live
    /// there is a conflict too (the engine then writes the record again through `recreate`).
    /// A fetch that fails leaves the failure as it was (retried).
    async fn probe_failed_create(
        &self,
        routes: &TableRoutes,
        req: &PushRequest,
        failed: Error,
    ) -> Result<PushOutcome> {
        let fetched = match self.fetch_one(&req.table, &req.key).await {
            Ok(fetched) => fetched,
            Err(err) => {
                tracing::debug!(table = %req.table, key = %req.key, error = %err, "the probe after a failed create got no answer");
                return Err(failed);
            }
        };
        match fetched {
            Some(found) if self.shows_write(routes, req, &found.record) => {
                tracing::debug!(table = %req.table, key = %req.key, "the probe shows the failed create committed");
                Ok(PushOutcome {
                    version: found.version,
                    record: Some(found.record),
                    ..PushOutcome::default()
                })
            }
            Some(found) => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the create failed ({failed}) and the server holds another record with this key"
                ),
            )
            .table(req.table.clone())
            .key(&req.key)
            .remote(found.record)),
            None => {
                tracing::debug!(table = %req.table, key = %req.key, "the probe finds no live record after a failed create: written again through the recreate route");
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the create failed ({failed}) and no live record holds the key: a deleted one may"),
                )
                .table(req.table.clone())
                .key(&req.key))
            }
        }
    }

    /// What an answer means when an answer rule decided it.
    fn apply_answer(
        &self,
        routes: &TableRoutes,
        route: &WriteRoute,
        req: &PushRequest,
        resp: &Incoming,
        answer: Answer,
    ) -> Result<PushOutcome> {
        let done = || PushOutcome {
            server_time_ms: resp.server_time_ms(),
            ..PushOutcome::default()
        };
        let kind = match answer {
            Answer::Success if resp.success() => {
                // The record, when the answer carries it; otherwise acknowledged as is.
                return Ok(self
                    .write_outcome(routes, route, req, resp)
                    .unwrap_or_else(|_| done()));
            }
            Answer::Success => return Ok(done()),
            Answer::NotFound if req.op == Op::Delete => return Ok(done()),
            Answer::NotFound => ErrorKind::NotFound,
            Answer::Conflict => ErrorKind::Conflict,
            Answer::Retry => ErrorKind::Server,
            Answer::Permanent => ErrorKind::Permanent,
            Answer::Auth => ErrorKind::Auth,
        };
        let default = self.status_error(&req.table, Some(&req.key), Some(routes), resp);
        let mut out = Error::new(
            kind,
            format!(
                "server answered {} ({} by the route's answer rules)",
                resp.status,
                match answer {
                    Answer::Conflict => "a conflict",
                    Answer::NotFound => "not found",
                    Answer::Retry => "to retry",
                    Answer::Permanent => "refused for good",
                    Answer::Auth => "an auth refusal",
                    Answer::Success => "a success",
                }
            ),
        )
        .status(resp.status)
        .table(req.table.clone())
        .key(&req.key);
        if let Some(excerpt) = default.response_excerpt() {
            out = out.excerpt(excerpt.to_owned());
        }
        if let Some(delay) = default.retry_after_delay() {
            out = out.retry_after(delay);
        }
        if kind == ErrorKind::Conflict
            && !resp.overflow
            && let Ok(body) = serde_json::from_slice::<Value>(&resp.body)
            && let Some(current) = crate::client::conflict_record(routes, &body)
        {
            out = out.remote(current);
        }
        Err(out)
    }

    /// Decodes a 2xx answer to a write.
    fn write_outcome(
        &self,
        routes: &TableRoutes,
        route: &WriteRoute,
        req: &PushRequest,
        resp: &Incoming,
    ) -> Result<PushOutcome> {
        let mut outcome = PushOutcome {
            server_time_ms: resp.server_time_ms(),
            version: if routes.version.etag {
                resp.etag()
            } else {
                None
            },
            ..PushOutcome::default()
        };
        // Deletes rarely answer with the record; their body is never an error.
        if route.ignore_response || req.op == Op::Delete {
            return Ok(outcome);
        }
        if resp.overflow {
            // Not read past the limit; `json_body` reports it.
            self.json_body(&req.table, Some(&req.key), resp)?;
        }
        if resp.body_is_empty() {
            return Ok(outcome);
        }
        let body = self.json_body(&req.table, Some(&req.key), resp)?;
        let pointer = route.response.clone().unwrap_or_default();
        let record = pointer
            .get(&body)
            .and_then(unwrap_single)
            .and_then(Value::as_object)
            .ok_or_else(|| {
                self.decode_error(
                    &req.table,
                    Some(&req.key),
                    resp,
                    format!("no record object at `{pointer}` in the response"),
                )
            })?;
        self.check_record(routes, req.op, &req.key, record, &mut outcome)
            .map_err(|msg| {
                self.decode_error(&req.table, Some(&req.key), resp, msg)
                    .field(routes.key.clone())
            })?;
        // A server without concurrency control may write a soft-deleted row and answer it:
        // the record was deleted remotely, which is a conflict, not a success.
        if crate::client::is_tombstone(routes, record) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the answer shows the record deleted on the server (the table's tombstone rule)",
            )
            .status(resp.status)
            .table(req.table.clone())
            .key(&req.key)
            .excerpt(resp.excerpt(self.config.excerpt_bytes)));
        }
        outcome.record = Some(record.clone());
        Ok(outcome)
    }

    /// Checks the key of a returned record, fills `server_key` and `version`.
    pub(crate) fn check_record(
        &self,
        routes: &TableRoutes,
        op: Op,
        local: &Key,
        record: &Record,
        outcome: &mut PushOutcome,
    ) -> std::result::Result<(), String> {
        let key = record
            .get(&routes.key)
            .and_then(Key::from_json)
            .ok_or_else(|| format!("the returned record has no key field `{}`", routes.key))?;
        if &key != local && key.to_string() != local.to_string() {
            if routes.server_ids && op == Op::Create {
                outcome.server_key = Some(key);
            } else {
                return Err(format!(
                    "the returned record has key `{key}`, not `{local}` (set `server_ids` if \
                     the server assigns ids)"
                ));
            }
        }
        if let Some(field) = &routes.version.field
            && let Some(v) = record.get(field).and_then(scalar_text)
        {
            outcome.version = Some(v);
        }
        Ok(())
    }

    /// Several pushes through the bulk endpoint (after the fetch before write, when the
    /// table asks for it: what that settles is not sent).
    pub(crate) async fn push_bulk(
        &self,
        requests: &[PushRequest],
    ) -> Result<Vec<Result<PushOutcome>>> {
        let fetches = requests.first().is_some_and(|first| {
            self.routes(&first.table)
                .is_ok_and(|r| r.conflict_detection.fetches_before_write())
        });
        if !fetches {
            return self.send_bulk(requests).await;
        }
        let mut settled: Vec<Option<Result<PushOutcome>>> = Vec::with_capacity(requests.len());
        let mut to_send = Vec::new();
        let mut fetched_many = self.fetch_many(requests).await;
        for req in requests {
            let routes = self.routes(&req.table)?;
            let checked = match (&mut fetched_many, req.base_version.as_deref()) {
                (Some(found), Some(base)) if req.op != Op::Create => {
                    let current = found.remove(&req.key.to_string());
                    self.judge_fetched(routes, req, base, current)
                }
                _ => self.check_before_write(routes, req).await,
            };
            match checked {
                Ok(None) => {
                    settled.push(None);
                    to_send.push(req.clone());
                }
                Ok(Some(outcome)) => settled.push(Some(Ok(outcome))),
                Err(err) => settled.push(Some(Err(err))),
            }
        }
        let mut sent = if to_send.is_empty() {
            Vec::new()
        } else {
            self.send_bulk(&to_send).await?
        }
        .into_iter();
        settled
            .into_iter()
            .map(|early| {
                early.or_else(|| sent.next()).ok_or_else(|| {
                    Error::internal("the bulk answer has fewer results than requests")
                })
            })
            .collect()
    }

    /// The fetch before write of a whole batch in one request, through the table's
    /// `fetch_many` route: the live records by key text (`None`: no such route, fewer than two
    /// records to check, or the request failed, so each is fetched alone).
    async fn fetch_many(
        &self,
        requests: &[PushRequest],
    ) -> Option<std::collections::HashMap<String, tidesync_core::Fetched>> {
        let first = requests.first()?;
        let table = first.table.as_str();
        let routes = self.routes(table).ok()?;
        let many = routes.fetch_many.as_ref()?;
        let version_field = routes.version.field.as_ref()?;
        let keys: Vec<String> = requests
            .iter()
            .filter(|r| r.op != Op::Create && r.base_version.is_some())
            .map(|r| {
                let mut encoded = String::new();
                crate::template::encode_component(&r.key.to_string(), &mut encoded);
                encoded
            })
            .collect();
        if keys.len() < 2 {
            return None;
        }
        let joined = keys.join(",");
        let path = many
            .url
            .render::<Error>(false, |_| Ok(Slot::Text(joined.clone())))
            .ok()??;
        let out = Outgoing {
            method: reqwest::Method::GET,
            url: self.url(&path, &[]).ok()?,
            headers: self.headers(&many.headers),
            body: None,
        };
        let resp = match self.execute(table, &out).await {
            Ok(resp) if resp.success() => resp,
            Ok(resp) => {
                tracing::debug!(
                    table,
                    status = resp.status,
                    "fetch_many refused: records are fetched one by one"
                );
                return None;
            }
            Err(err) => {
                tracing::debug!(table, error = %err, "fetch_many failed: records are fetched one by one");
                return None;
            }
        };
        let body = self.json_body(table, None, &resp).ok()?;
        let items = many.items.get(&body)?.as_array()?;
        let mut found = std::collections::HashMap::new();
        for item in items {
            let Some(record) = item.as_object() else {
                continue;
            };
            let Some(key) = record.get(&routes.key).and_then(Key::from_json) else {
                continue;
            };
            if crate::client::is_tombstone(routes, record) {
                continue;
            }
            let version = record.get(version_field).and_then(scalar_text);
            found.insert(
                key.to_string(),
                tidesync_core::Fetched {
                    record: record.clone(),
                    version,
                },
            );
        }
        Some(found)
    }

    /// Sends requests through the bulk endpoint, one result per request, in order.
    /// Each operation kind goes through its bulk route (`bulk_create` … or the mixed `bulk`),
    /// one request per route; an operation with none is sent alone. A refused request is the
    /// refusal of each of its entries.
    async fn send_bulk(&self, requests: &[PushRequest]) -> Result<Vec<Result<PushOutcome>>> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let table = first.table.as_str();
        if let Some(other) = requests.iter().find(|r| r.table != table) {
            return Err(Error::invalid(format!(
                "a batch mixes tables `{table}` and `{}`",
                other.table
            )));
        }
        let routes = self.routes(table)?;
        let mut results: Vec<Option<Result<PushOutcome>>> =
            (0..requests.len()).map(|_| None).collect();
        // Routes in a fixed order (creates first), each with the entries it sends.
        let mut groups: Vec<(&BulkRoute, Vec<usize>)> = Vec::new();
        for (i, req) in requests.iter().enumerate() {
            match routes.bulk_route(req.op) {
                Some(bulk) => match groups.iter_mut().find(|(b, _)| std::ptr::eq(*b, bulk)) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((bulk, vec![i])),
                },
                None => results[i] = Some(self.push_one(req).await),
            }
        }
        for (bulk, members) in groups {
            let batch: Vec<&PushRequest> = members.iter().map(|&i| &requests[i]).collect();
            let sent = match bulk.format {
                BulkFormat::Ops => self.send_ops(routes, bulk, &batch).await,
                BulkFormat::Rows => self.send_rows(routes, bulk, &batch).await,
            };
            match sent {
                Ok(outcomes) => {
                    for (i, outcome) in members.into_iter().zip(outcomes) {
                        results[i] = Some(outcome);
                    }
                }
                // A plain-row request is all or nothing: refused for one entry's sake, it
                // says nothing of the others. Each is sent alone then, to get its own answer.
                Err(err)
                    if bulk.format == BulkFormat::Rows
                        && members.len() > 1
                        && matches!(
                            err.kind(),
                            ErrorKind::Conflict | ErrorKind::Permanent | ErrorKind::NotFound
                        ) =>
                {
                    tracing::debug!(table, error = %err, entries = members.len(), "a plain-row bulk request was refused: its entries go one by one");
                    for i in members {
                        results[i] = Some(self.push_one(&requests[i]).await);
                    }
                }
                Err(err) => {
                    for i in members {
                        results[i] = Some(Err(err.duplicate()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::internal("a bulk entry got no result").table(table)))
            .collect()
    }

    /// The headers of a bulk request: the route's and the leader's epoch.
    fn bulk_headers(
        &self,
        bulk: &BulkRoute,
        requests: &[&PushRequest],
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = self.headers(&bulk.headers);
        if let Some(epoch) = requests.iter().find_map(|r| r.epoch)
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(self.config.epoch_header.as_bytes()),
                HeaderValue::from_str(&epoch.to_string()),
            )
        {
            headers.push((n, v));
        }
        headers
    }

    /// A `rows` bulk request: plain records (for deletes, their keys), results matched back by
    /// position or key.
    async fn send_rows(
        &self,
        routes: &TableRoutes,
        bulk: &BulkRoute,
        requests: &[&PushRequest],
    ) -> Result<Vec<Result<PushOutcome>>> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let table = first.table.as_str();
        let mut rows = Vec::with_capacity(requests.len());
        for req in requests {
            let row = match req.op {
                Op::Delete => {
                    let mut row = Map::new();
                    row.insert(routes.key.clone(), req.key.to_json());
                    Value::Object(row)
                }
                op => {
                    let mode = match op {
                        Op::Update => routes
                            .update
                            .as_ref()
                            .map_or(BodyMode::Full, |r| r.body_mode(Op::Update)),
                        _ => BodyMode::Full,
                    };
                    let mut body = self.write_body(routes, mode, req)?.unwrap_or_default();
                    if op == Op::Update
                        && let Value::Object(map) = &mut body
                    {
                        // A changed-fields row still names its record.
                        map.entry(routes.key.clone())
                            .or_insert_with(|| req.key.to_json());
                    }
                    body
                }
            };
            rows.push(row);
        }
        let body = if bulk.ops_field.is_empty() {
            Value::Array(rows)
        } else {
            let mut envelope = Map::new();
            envelope.insert(bulk.ops_field.clone(), Value::Array(rows));
            Value::Object(envelope)
        };
        let path = bulk
            .url
            .render::<Error>(true, |_| Ok(Slot::Absent))?
            .unwrap_or_default();
        let out = Outgoing {
            method: bulk.method.to_reqwest(),
            url: self.url(&path, &[]).map_err(|e| e.table(table))?,
            headers: self.bulk_headers(bulk, requests),
            body: Some(body.to_string().into_bytes()),
        };
        let resp = self.execute(table, &out).await?;
        if !resp.success() {
            return Err(self.status_error(table, None, Some(routes), &resp));
        }
        let server_time_ms = resp.server_time_ms();
        let done = || PushOutcome {
            server_time_ms,
            ..PushOutcome::default()
        };
        if resp.body_is_empty() && !resp.overflow {
            return Ok(requests.iter().map(|_| Ok(done())).collect());
        }
        let answer = self.json_body(table, None, &resp)?;
        let items = bulk
            .results
            .get(&answer)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                self.decode_error(
                    table,
                    None,
                    &resp,
                    format!("expected an array of results at `{}`", bulk.results),
                )
            })?;
        let by_key = bulk.match_by == BulkMatch::Key;
        let positional = !by_key || (routes.server_ids && first.op == Op::Create);
        if positional && items.len() != requests.len() {
            return Err(self.decode_error(
                table,
                None,
                &resp,
                format!(
                    "expected {} results at `{}`, found {}",
                    requests.len(),
                    bulk.results,
                    items.len()
                ),
            ));
        }
        let key_of = |item: &Value| -> Option<Key> {
            match item {
                Value::Object(map) => map.get(&routes.key).and_then(Key::from_json),
                other => Key::from_json(other),
            }
        };
        let mut out = Vec::with_capacity(requests.len());
        for (n, req) in requests.iter().enumerate() {
            let item = if positional {
                items.get(n)
            } else {
                items.iter().find(|item| {
                    key_of(item)
                        .is_some_and(|k| k == req.key || k.to_string() == req.key.to_string())
                })
            };
            let Some(item) = item else {
                out.push(match req.op {
                    Op::Delete => Ok(done()),
                    Op::Update => Err(Error::new(
                        ErrorKind::Conflict,
                        "the bulk update's answer does not list the record: it matched nothing \
                         on the server",
                    )
                    .table(table)
                    .key(&req.key)),
                    Op::Create => Err(self.decode_error(
                        table,
                        Some(&req.key),
                        &resp,
                        "the bulk create's answer does not list the record",
                    )),
                });
                continue;
            };
            out.push(self.row_result(routes, req, item, server_time_ms, &resp));
        }
        Ok(out)
    }

    /// One result of a `rows` answer: a record (full, or only its key) or a bare id.
    fn row_result(
        &self,
        routes: &TableRoutes,
        req: &PushRequest,
        item: &Value,
        server_time_ms: Option<i64>,
        resp: &Incoming,
    ) -> Result<PushOutcome> {
        let mut outcome = PushOutcome {
            server_time_ms,
            ..PushOutcome::default()
        };
        if req.op == Op::Delete {
            return Ok(outcome);
        }
        let record = match item {
            Value::Object(map) => map.clone(),
            id => {
                let mut map = Map::new();
                map.insert(routes.key.clone(), id.clone());
                map
            }
        };
        self.check_record(routes, req.op, &req.key, &record, &mut outcome)
            .map_err(|msg| {
                self.decode_error(&req.table, Some(&req.key), resp, msg)
                    .field(routes.key.clone())
            })?;
        if crate::client::is_tombstone(routes, &record) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the answer shows the record deleted on the server (the table's tombstone rule)",
            )
            .table(req.table.clone())
            .key(&req.key));
        }
        // Only a key (or an id): acknowledged, nothing to learn about the record.
        if record.len() > 1 {
            outcome.record = Some(record);
        }
        Ok(outcome)
    }

    /// An `ops` bulk request: operations with a status each.
    async fn send_ops(
        &self,
        routes: &TableRoutes,
        bulk: &BulkRoute,
        requests: &[&PushRequest],
    ) -> Result<Vec<Result<PushOutcome>>> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let table = first.table.as_str();
        let mut ops = Vec::with_capacity(requests.len());
        for req in requests {
            let mode = match req.op {
                Op::Delete => BodyMode::None,
                Op::Update => routes
                    .update
                    .as_ref()
                    .map_or(BodyMode::Full, |r| r.body_mode(Op::Update)),
                Op::Create => BodyMode::Full,
            };
            let mut op = Map::new();
            op.insert("op".into(), Value::from(req.op.as_str()));
            op.insert(routes.key.clone(), req.key.to_json());
            if routes.key != "id" {
                op.insert("id".into(), req.key.to_json());
            }
            if let Some(body) = self.write_body(routes, mode, req)? {
                op.insert("record".into(), body);
            }
            op.insert(
                "idempotencyKey".into(),
                Value::from(req.idempotency_key.as_str()),
            );
            if let Some(base) = &req.base_version {
                op.insert("baseVersion".into(), Value::from(base.as_str()));
            }
            ops.push(Value::Object(op));
        }
        let mut envelope = Map::new();
        envelope.insert(bulk.ops_field.clone(), Value::Array(ops));
        let path = bulk
            .url
            .render::<Error>(true, |_| Ok(Slot::Absent))?
            .unwrap_or_default();
        let out = Outgoing {
            method: bulk.method.to_reqwest(),
            url: self.url(&path, &[]).map_err(|e| e.table(table))?,
            headers: self.bulk_headers(bulk, requests),
            body: Some(Value::Object(envelope).to_string().into_bytes()),
        };
        let resp = self.execute(table, &out).await?;
        if !resp.success() {
            return Err(self.status_error(table, None, Some(routes), &resp));
        }
        let body = self.json_body(table, None, &resp)?;
        let results = bulk
            .results
            .get(&body)
            .and_then(Value::as_array)
            .filter(|r| r.len() == requests.len())
            .ok_or_else(|| {
                self.decode_error(
                    table,
                    None,
                    &resp,
                    format!(
                        "expected an array of {} results at `{}`",
                        requests.len(),
                        bulk.results
                    ),
                )
            })?;
        let server_time_ms = resp.server_time_ms();
        let mut out = Vec::with_capacity(requests.len());
        for (req, result) in requests.iter().zip(results) {
            out.push(self.bulk_result(routes, bulk, req, result, server_time_ms));
        }
        Ok(out)
    }

    fn bulk_result(
        &self,
        routes: &TableRoutes,
        bulk: &BulkRoute,
        req: &PushRequest,
        result: &Value,
        server_time_ms: Option<i64>,
    ) -> Result<PushOutcome> {
        let excerpt =
            || crate::classify::excerpt(result.to_string().as_bytes(), self.config.excerpt_bytes);
        let status = result
            .get(&bulk.status_field)
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Decode,
                    format!("bulk result has no numeric `{}`", bulk.status_field),
                )
                .table(req.table.clone())
                .key(&req.key)
                .excerpt(excerpt())
            })?;
        let mut outcome = PushOutcome {
            server_time_ms,
            ..PushOutcome::default()
        };
        if (200..300).contains(&status) {
            if req.op == Op::Delete {
                return Ok(outcome);
            }
            if let Some(record) = bulk.record.get(result).and_then(Value::as_object) {
                self.check_record(routes, req.op, &req.key, record, &mut outcome)
                    .map_err(|msg| {
                        Error::new(ErrorKind::Decode, msg)
                            .table(req.table.clone())
                            .key(&req.key)
                            .excerpt(excerpt())
                    })?;
                outcome.record = Some(record.clone());
            }
            return Ok(outcome);
        }
        if status == 404 && req.op == Op::Delete && routes.delete_not_found_ok {
            return Ok(outcome);
        }
        let kind = crate::classify::kind_for_status(status);
        let mut err = Error::new(kind, format!("bulk operation answered {status}"))
            .status(status)
            .table(req.table.clone())
            .key(&req.key)
            .excerpt(excerpt());
        if kind == ErrorKind::Conflict
            && let Some(current) = crate::client::conflict_record(routes, result)
        {
            err = err.remote(current);
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::WriteRoute;
    use serde_json::json;

    fn transport(routes: TableRoutes) -> RestTransport {
        RestTransport::builder("http://127.0.0.1:9/base/")
            .table("posts", routes)
            .build()
            .unwrap()
    }

    fn req(op: Op, record: Value) -> PushRequest {
        PushRequest {
            table: "posts".into(),
            key: Key::from("p 1/x"),
            op,
            record: record.as_object().cloned(),
            changed: vec!["title".into()],
            idempotency_key: "idem-1".into(),
            base_version: Some("3".into()),
            epoch: Some(7),
        }
    }

    #[test]
    fn urls_take_fields_from_the_record_encoded() {
        let routes = TableRoutes::new()
            .field("slug")
            .update(WriteRoute::patch("/api/posts?id=eq.{id}&s={slug}"))
            .delete(WriteRoute::delete("/api/posts/{key}"));
        let t = transport(routes.clone());
        let r = req(Op::Update, json!({"id": "p 1/x", "slug": "a&b"}));
        let url = t
            .write_url(&routes, routes.update.as_ref().unwrap(), &r)
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/api/posts?id=eq.p%201%2Fx&s=a%26b"
        );
        // A delete without a record still renders the key field from the key.
        let mut d = req(Op::Delete, Value::Null);
        d.record = None;
        let url = t
            .write_url(&routes, routes.delete.as_ref().unwrap(), &d)
            .unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/base/api/posts/p%201%2Fx");
    }

    #[test]
    fn missing_template_field_is_permanent_and_named() {
        let routes = TableRoutes::new()
            .field("slug")
            .update(WriteRoute::put("/api/{slug}"));
        let t = transport(routes.clone());
        let r = req(Op::Update, json!({"id": "p1"}));
        let err = t
            .write_url(&routes, routes.update.as_ref().unwrap(), &r)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.table_name(), Some("posts"));
        assert_eq!(err.record_key(), Some("p 1/x"));
        assert_eq!(err.field_name(), Some("slug"));
    }

    #[test]
    fn patch_bodies_carry_changed_fields_and_the_base_version() {
        let routes = TableRoutes::new().version_field("version");
        let t = transport(routes.clone());
        let r = req(
            Op::Update,
            json!({"id": "p1", "title": "new", "body": "same", "version": 2}),
        );
        let body = t.write_body(&routes, BodyMode::Changed, &r).unwrap();
        assert_eq!(body, Some(json!({"title": "new", "version": 3})));
        let full = t.write_body(&routes, BodyMode::Full, &r).unwrap().unwrap();
        assert_eq!(full["body"], json!("same"));
        assert_eq!(t.write_body(&routes, BodyMode::None, &r).unwrap(), None);
    }

    #[test]
    fn soft_deletes_send_the_tombstone_flag_and_the_base_version() {
        let routes = TableRoutes::new()
            .version_field("version")
            .pull(crate::Feed::get("/posts").tombstone_value("state", json!("gone")));
        let t = transport(routes.clone());
        let r = req(Op::Delete, json!({"id": "p1", "title": "x", "version": 2}));
        let body = t.write_body(&routes, BodyMode::Tombstone, &r).unwrap();
        assert_eq!(body, Some(json!({"state": "gone", "version": 3})));
        // No tombstone flag configured: a config error naming the setting.
        let bare = TableRoutes::new();
        let err = t.write_body(&bare, BodyMode::Tombstone, &r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.field_name(), Some("tombstone"));
        let invalid = TableRoutes::new()
            .delete(crate::WriteRoute::patch("/posts/{id}").body(BodyMode::Tombstone));
        assert!(invalid.validate("posts").is_err());
        let valid = invalid.pull(crate::Feed::get("/posts").tombstone("deleted"));
        assert!(valid.validate("posts").is_ok());
    }

    #[test]
    fn write_headers_include_idempotency_epoch_and_if_match() {
        let routes = TableRoutes::new().etag();
        let t = transport(routes.clone());
        let r = req(Op::Update, json!({"id": "p1"}));
        let headers = t.write_headers(&routes, &Default::default(), &r);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(name, _)| name.as_str().eq_ignore_ascii_case(n))
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(get("idempotency-key").as_deref(), Some("idem-1"));
        assert_eq!(get("x-tidesync-epoch").as_deref(), Some("7"));
        assert_eq!(get("if-match").as_deref(), Some("\"3\""));
    }

    #[test]
    fn returned_keys_are_checked() {
        let t = transport(TableRoutes::new());
        let routes = TableRoutes::new().version_field("version");
        let mut outcome = PushOutcome::default();
        let rec = json!({"id": "srv-9", "version": 4});
        let rec = rec.as_object().unwrap();
        let err = t
            .check_record(&routes, Op::Create, &Key::from("tmp"), rec, &mut outcome)
            .unwrap_err();
        assert!(err.contains("server_ids"), "{err}");
        let routes = routes.server_ids();
        t.check_record(&routes, Op::Create, &Key::from("tmp"), rec, &mut outcome)
            .unwrap();
        assert_eq!(outcome.server_key, Some(Key::from("srv-9")));
        assert_eq!(outcome.version.as_deref(), Some("4"));
        let no_key = json!({"title": "x"});
        assert!(
            t.check_record(
                &routes,
                Op::Update,
                &Key::from("a"),
                no_key.as_object().unwrap(),
                &mut outcome
            )
            .is_err()
        );
        // 5 and "5" are the same key.
        let int_key = json!({"id": 5});
        t.check_record(
            &routes,
            Op::Update,
            &Key::from("5"),
            int_key.as_object().unwrap(),
            &mut outcome,
        )
        .unwrap();
    }

    #[test]
    fn header_templates_render_the_base_version_bare_or_quoted_and_skip_without_one() {
        let routes = TableRoutes::new();
        let t = transport(routes.clone());
        let mut headers = Headers::default();
        headers.insert("If-Match", "{version}");
        headers.insert("X-Quoted", "\"{version}\"");
        headers.insert("X-Row", "row-{key}");
        let r = req(Op::Update, json!({"id": "p1"}));
        let sent = t.write_headers(&routes, &headers, &r);
        let get = |sent: &[(HeaderName, HeaderValue)], n: &str| {
            sent.iter()
                .find(|(name, _)| name.as_str().eq_ignore_ascii_case(n))
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(get(&sent, "if-match").as_deref(), Some("3"));
        assert_eq!(get(&sent, "x-quoted").as_deref(), Some("\"3\""));
        assert_eq!(get(&sent, "x-row").as_deref(), Some("row-p 1/x"));
        let mut create = req(Op::Create, json!({"id": "p1"}));
        create.base_version = None;
        let sent = t.write_headers(&routes, &headers, &create);
        assert_eq!(
            get(&sent, "if-match"),
            None,
            "no agreed version, no precondition"
        );
        assert_eq!(get(&sent, "x-row").as_deref(), Some("row-p 1/x"));
    }

    #[test]
    fn body_versions_base_next_or_none() {
        let r = req(Op::Update, json!({"id": "p1", "version": 3}));
        let mut create = req(Op::Create, json!({"id": "p1"}));
        create.base_version = None;
        for (which, update, created) in [
            (BodyVersion::Base, Some(json!(3)), None),
            (BodyVersion::Next, Some(json!(4)), Some(json!(1))),
            (BodyVersion::None, None, None),
        ] {
            let routes = TableRoutes::new()
                .version_field("version")
                .body_version(which);
            let t = transport(routes.clone());
            let body = t.write_body(&routes, BodyMode::Full, &r).unwrap().unwrap();
            assert_eq!(body.get("version").cloned(), update, "{which:?}");
            let body = t
                .write_body(&routes, BodyMode::Full, &create)
                .unwrap()
                .unwrap();
            assert_eq!(body.get("version").cloned(), created, "{which:?} create");
        }
        let routes = TableRoutes::new()
            .version_field("version")
            .body_version(BodyVersion::Next);
        let t = transport(routes.clone());
        let mut etag = r.clone();
        etag.base_version = Some("abc".into());
        let err = t.write_body(&routes, BodyMode::Full, &etag).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.field_name(), Some("version"));
    }

    #[test]
    fn bodies_take_defaults_extra_fields_and_leave_local_only_and_server_keys_out() {
        let routes = TableRoutes::new().server_ids().local_only("draft").create(
            WriteRoute::post("/r")
                .envelope("row")
                .default_field("deleted", json!(false))
                .extra_field("return", json!(true)),
        );
        let t = transport(routes.clone());
        let mut create = req(
            Op::Create,
            json!({"id": "tmp", "title": "t", "draft": "x", "deleted": true}),
        );
        create.base_version = None;
        let body = t
            .route_body(&routes, routes.create.as_ref().unwrap(), &create)
            .unwrap();
        assert_eq!(
            body,
            Some(json!({"row": {"title": "t", "deleted": true}, "return": true})),
            "the record's own value wins over a default"
        );
        create.record = json!({"id": "tmp"}).as_object().cloned();
        let body = t
            .route_body(&routes, routes.create.as_ref().unwrap(), &create)
            .unwrap();
        assert_eq!(
            body,
            Some(json!({"row": {"deleted": false}, "return": true}))
        );
    }

    #[test]
    fn answer_rules_match_status_pointer_value_substring_and_empty_arrays() {
        use crate::routes::{Answer, AnswerRule};
        let errors = br#"{"errors": ["version conflict"]}"#;
        let rule = AnswerRule::status(400, Answer::Conflict)
            .pointer("/errors/0")
            .equals(json!("version conflict"));
        assert!(rule.matches(400, errors));
        assert!(!rule.matches(409, errors));
        assert!(!rule.matches(400, br#"{"errors": ["invalid columns"]}"#));
        assert!(!rule.matches(400, b"not json"));
        let rule = AnswerRule::status(400, Answer::Conflict).contains("version conflict");
        assert!(rule.matches(400, errors));
        assert!(!rule.matches(400, b"bad request"));
        let rule = AnswerRule::status(200, Answer::Conflict).empty_array();
        assert!(rule.matches(200, b"[]"));
        assert!(rule.matches(200, b" [ ] "));
        assert!(!rule.matches(200, br#"[{"id": 1}]"#));
        assert!(!rule.matches(200, b""));
        assert!(AnswerRule::status(404, Answer::NotFound).matches(404, b""));
    }

    fn incoming(status: u16, body: &str) -> Incoming {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("etag", reqwest::header::HeaderValue::from_static("W/\"9\""));
        Incoming {
            status,
            headers,
            body: body.as_bytes().to_vec(),
            overflow: false,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn responses_are_found_by_pointer_in_envelopes_and_arrays() {
        let routes = TableRoutes::new().etag();
        let t = transport(routes.clone());
        let r = req(Op::Update, json!({"id": "p 1/x"}));
        for (route, body) in [
            (WriteRoute::put("/p"), r#"{"id": "p 1/x", "a": 1}"#),
            (WriteRoute::put("/p"), r#"[{"id": "p 1/x", "a": 1}]"#),
            (
                WriteRoute::put("/p").response("/data"),
                r#"{"data": {"id": "p 1/x", "a": 1}}"#,
            ),
            (
                WriteRoute::put("/p").response("/data"),
                r#"{"data": [{"id": "p 1/x", "a": 1}]}"#,
            ),
        ] {
            let out = t
                .write_outcome(&routes, &route, &r, &incoming(200, body))
                .unwrap();
            assert_eq!(out.record.unwrap()["a"], json!(1), "{body}");
            assert_eq!(out.version.as_deref(), Some("9"), "weak ETag unquoted");
        }
        let empty = t
            .write_outcome(&routes, &WriteRoute::put("/p"), &r, &incoming(204, ""))
            .unwrap();
        assert!(empty.record.is_none());
        for (route, body) in [
            (WriteRoute::put("/p"), "{not json"),
            (WriteRoute::put("/p"), r#"{"a": 1}"#),
            (WriteRoute::put("/p"), "[]"),
            (
                WriteRoute::put("/p").response("/data"),
                r#"{"id": "p 1/x"}"#,
            ),
        ] {
            let err = t
                .write_outcome(&routes, &route, &r, &incoming(200, body))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{body}");
            assert_eq!(err.record_key(), Some("p 1/x"));
            assert!(err.response_excerpt().is_some());
        }
    }
}
