//! Route specifications: how one table maps onto an API. Built in Rust with builder methods or
//! deserialized from TOML/JSON (every struct rejects unknown fields).
//!
//! Validation happens when the transport is built ([`crate::RestTransportBuilder::build`]):
//! every template placeholder is checked against the names allowed where it is used, every
//! header name and value, every JSON pointer. See the crate docs for the placeholder rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use tidesync_core::{Error, Op, Result, TableSpec};

use crate::feed::Feed;
use crate::pointer::{self, Pointer};
use crate::template::Template;

/// HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    #[serde(alias = "get")]
    Get,
    /// POST
    #[serde(alias = "post")]
    Post,
    /// PUT
    #[serde(alias = "put")]
    Put,
    /// PATCH
    #[serde(alias = "patch")]
    Patch,
    /// DELETE
    #[serde(alias = "delete")]
    Delete,
}

impl Method {
    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// Extra request headers. Values may be secrets, so `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl Headers {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub(crate) fn validate(&self, table: &str, at: &str) -> Result<()> {
        for (name, value) in &self.0 {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(Error::config(format!("{at}: invalid header name `{name}`"))
                    .table(table)
                    .field(name.clone())
                    .setting([name.as_str()]));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(Error::config(format!(
                    "{at}: invalid value for header `{name}` (control characters?)"
                ))
                .table(table)
                .field(name.clone())
                .setting([name.as_str()]));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What body a write sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// The full record (POST/PUT).
    Full,
    /// Only the fields changed since the last synced version (`PushRequest.changed`), plus the
    /// version field when versions travel in the body (PATCH).
    Changed,
    /// No body (typical for DELETE).
    None,
    /// Delete routes only: a soft delete. The body is the pull feed's tombstone flag
    /// (`{"deleted": true}` for `tombstone = { field = "deleted" }`), plus the base version
    /// when versions travel in the body; sent with the route's method (`PATCH` or `PUT`), so
    /// other clients that read tombstones learn of the delete. Needs `pull.tombstone`.
    Tombstone,
}

/// A create, update or delete route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRoute {
    /// HTTP method.
    pub method: Method,
    /// URL template, relative to the base URL (or absolute). Placeholders: `{key}`,
    /// `{version}`, the table's key field, and the fields declared in the table's `fields`.
    pub url: Template,
    /// The body to send; default: `full` for create/update, `none` for delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyMode>,
    /// Wraps the body in an object under this name: `"data"` sends `{"data": <record>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// Extra headers for this route.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Where the written record is in the response: `""` (default) is the whole body, `/data`
    /// an envelope. A one-element array there is unwrapped. An empty body is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Pointer>,
    /// Ignore the response body entirely (for APIs that answer `{"ok": true}`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_response: bool,
    /// Answer rules, tried in order before the default classification: the first that
    /// matches decides what the answer means (see [`AnswerRule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<AnswerRule>,
    /// Fields every body of this route carries: each is added with this value when the record
    /// lacks it (`{ deleted = false }` for an API that requires the field on every write).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// Static fields sent beside the record, outside the envelope (`{ return = true }` with
    /// `envelope = "row"` sends `{"row": {..}, "return": true}`); without an envelope they are
    /// added to the record body.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What an answer means, when an [`AnswerRule`] matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// A version conflict: the table's conflict strategy decides (kind `Conflict`).
    Conflict,
    /// The record is not on the server: a delete is done (already gone); a create or update
    /// fails with kind `NotFound`.
    NotFound,
    /// The write succeeded (a body that is not the record is ignored).
    Success,
    /// A passing failure: send it again later (kind `Server`).
    Retry,
    /// Refused for good (kind `Permanent`).
    Permanent,
    /// The credentials were refused (kind `Auth`).
    Auth,
}

/// One answer rule of a write route: when the status matches and every condition given holds,
/// the answer means `outcome`. Example (TOML): `{ status = 400, pointer = "/errors/0", equals
/// = "version conflict", outcome = "conflict" }`, or `{ status = 200, empty_array = true,
/// outcome = "conflict" }` for a conditional update that answers `[]` when nothing matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRule {
    /// The HTTP status to match.
    pub status: u16,
    /// A JSON pointer into the body: the value there must exist (and equal `equals` if given;
    /// be an empty array if `empty_array`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<Pointer>,
    /// The value at `pointer` (default: the whole body) must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// The body, as text, must contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The value at `pointer` (default: the whole body) must be an empty array.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_array: bool,
    /// What a matching answer means.
    pub outcome: Answer,
}

impl AnswerRule {
    /// A rule matching `status` alone.
    pub fn status(status: u16, outcome: Answer) -> Self {
        AnswerRule {
            status,
            pointer: None,
            equals: None,
            contains: None,
            empty_array: false,
            outcome,
        }
    }

    /// Also requires a value at `pointer`.
    pub fn pointer(mut self, pointer: &str) -> Self {
        self.pointer = Some(pointer::lenient(pointer));
        self
    }

    /// Also requires the value (at the pointer, or the whole body) to equal `value`.
    pub fn equals(mut self, value: serde_json::Value) -> Self {
        self.equals = Some(value);
        self
    }

    /// Also requires the body text to contain `text`.
    pub fn contains(mut self, text: impl Into<String>) -> Self {
        self.contains = Some(text.into());
        self
    }

    /// Also requires the value (at the pointer, or the whole body) to be `[]`.
    pub fn empty_array(mut self) -> Self {
        self.empty_array = true;
        self
    }

    /// Whether an answer with `status` and `body` matches.
    pub fn matches(&self, status: u16, body: &[u8]) -> bool {
        if status != self.status {
            return false;
        }
        if let Some(text) = &self.contains
            && !String::from_utf8_lossy(body).contains(text.as_str())
        {
            return false;
        }
        if self.pointer.is_none() && self.equals.is_none() && !self.empty_array {
            return true;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let at = match &self.pointer {
            Some(p) => p.get(&json),
            None => Some(&json),
        };
        let Some(at) = at else { return false };
        if let Some(want) = &self.equals
            && at != want
        {
            return false;
        }
        !self.empty_array || at.as_array().is_some_and(Vec::is_empty)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl WriteRoute {
    /// A route with `method` and `url` (a template; errors surface at build time).
    pub fn new(method: Method, url: &str) -> Self {
        WriteRoute {
            method,
            url: template_lenient(url),
            body: None,
            envelope: None,
            headers: Headers::default(),
            response: None,
            ignore_response: false,
            answers: Vec::new(),
            defaults: serde_json::Map::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// `POST url` with the full record.
    pub fn post(url: &str) -> Self {
        WriteRoute::new(Method::Post, url)
    }

    /// `PUT url` with the full record.
    pub fn put(url: &str) -> Self {
        WriteRoute::new(Method::Put, url)
    }

    /// `PATCH url` with the changed fields only.
    pub fn patch(url: &str) -> Self {
        WriteRoute::new(Method::Patch, url).body(BodyMode::Changed)
    }

    /// `DELETE url` without a body.
    pub fn delete(url: &str) -> Self {
        WriteRoute::new(Method::Delete, url)
    }

    /// Sets the body mode.
    pub fn body(mut self, body: BodyMode) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends only the changed fields.
    pub fn changed_only(self) -> Self {
        self.body(BodyMode::Changed)
    }

    /// Wraps the body: `{"<name>": <body>}`.
    pub fn envelope(mut self, name: impl Into<String>) -> Self {
        self.envelope = Some(name.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Where the record is in the response (a JSON pointer such as `/data`).
    pub fn response(mut self, pointer: &str) -> Self {
        self.response = Some(pointer::lenient(pointer));
        self
    }

    /// Ignores the response body.
    pub fn ignore_response(mut self) -> Self {
        self.ignore_response = true;
        self
    }

    /// A field every body carries (added with `value` when the record lacks it).
    pub fn default_field(mut self, field: impl Into<String>, value: serde_json::Value) -> Self {
        self.defaults.insert(field.into(), value);
        self
    }

    /// A static field sent beside the record (outside the envelope).
    pub fn extra_field(mut self, field: impl Into<String>, value: serde_json::Value) -> Self {
        self.extra.insert(field.into(), value);
        self
    }

    /// Adds an answer rule (tried in the order added).
    pub fn answer(mut self, rule: AnswerRule) -> Self {
        self.answers.push(rule);
        self
    }

    /// Whether a request for an entry with a base version carries a precondition: a header
    /// template using `{version}` (or ETags on, for updates and deletes).
    pub(crate) fn sends_precondition(&self, versioning: &Versioning) -> bool {
        versioning.etag || self.headers.0.values().any(|v| v.contains("{version}"))
    }

    pub(crate) fn body_mode(&self, op: Op) -> BodyMode {
        self.body.unwrap_or(match op {
            Op::Delete => BodyMode::None,
            _ => BodyMode::Full,
        })
    }
}

/// The route that reads one record (conflict follow-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRoute {
    /// URL template (GET). Placeholders: `{key}` and the table's key field (both the key).
    pub url: Template,
    /// Where the record is in the response (default: the whole body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Pointer>,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

impl FetchRoute {
    /// `GET url`.
    pub fn get(url: &str) -> Self {
        FetchRoute {
            url: template_lenient(url),
            response: None,
            headers: Headers::default(),
        }
    }

    /// Where the record is in the response.
    pub fn response(mut self, pointer: &str) -> Self {
        self.response = Some(pointer::lenient(pointer));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// The body shape of a bulk endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkFormat {
    /// Operations with their own status each (the default): `{"ops": [{"op", "id", "record",
    /// "idempotencyKey"}, ..]}` answered with `{"results": [{"status", "record"}, ..]}`.
    #[default]
    Ops,
    /// Plain records, as most bulk APIs take them (PostgREST's array insert, NocoDB's bulk
    /// routes): `{"<ops_field>": [{..record..}, ..]}` (a bare array when `ops_field` is `""`;
    /// a delete sends only each record's key field). One request per operation kind, through
    /// the table's `bulk_create` / `bulk_update` / `bulk_delete` routes. The answer holds the
    /// written records (or only their keys, or ids) at `results`, matched back to the entries
    /// by position or by key (`match_by`); an empty answer acknowledges every entry. The whole
    /// request succeeds or fails: a refusal is every entry's.
    Rows,
}

/// How the results of a `rows` bulk answer are matched back to the entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkMatch {
    /// The n-th result is the n-th record sent (the default).
    #[default]
    Position,
    /// By the key field of each result (creates of server-id tables match by position). An
    /// update missing from the answer matched nothing on the server (a conflict: the record is
    /// gone), a delete missing from it was gone already.
    Key,
}

fn is_default_format(f: &BulkFormat) -> bool {
    *f == BulkFormat::Ops
}

fn is_default_match(m: &BulkMatch) -> bool {
    *m == BulkMatch::Position
}

/// The route that reads many records by key in one request, for a batched fetch before write:
/// `GET url`, where `{keys}` is the keys, each percent-encoded, joined by `,` (e.g.
/// `/posts?id=in.({keys})`). Records missing from the answer, or tombstones by the table's
/// rule, are not there. Needs `version.field` (an answer list carries no ETags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchManyRoute {
    /// URL template (GET) with `{keys}`.
    pub url: Template,
    /// Where the list of records is in the answer (default: the whole body).
    #[serde(default)]
    pub items: Pointer,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

impl FetchManyRoute {
    /// `GET url`, the list at `items`.
    pub fn get(url: &str, items: &str) -> Self {
        FetchManyRoute {
            url: template_lenient(url),
            items: pointer::lenient(items),
            headers: Headers::default(),
        }
    }
}

/// A bulk endpoint taking several operations in one request.
///
/// Format `ops` (default): `{"<ops_field>": [{"op": "create"|"update"|"delete", "id": <key>,
/// "record": {..}, "idempotencyKey": ".."}, ..]}`. Response: an array at `results` with one
/// item per operation, in order: `{"status": <http status>, "record": {..}}` on success,
/// `{"status": 409, "current": {..}}` on conflict. Field names are configurable. Format
/// `rows`: plain records, see [`BulkFormat::Rows`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRoute {
    /// URL template (no placeholders).
    pub url: Template,
    /// HTTP method (default POST).
    #[serde(default = "default_post")]
    pub method: Method,
    /// Name of the operations array in the request (default `ops`).
    #[serde(default = "default_ops")]
    pub ops_field: String,
    /// Where the results array is in the response (default `/results`).
    #[serde(default = "default_results")]
    pub results: Pointer,
    /// Name of each result's status field (default `status`).
    #[serde(default = "default_status")]
    pub status_field: String,
    /// Pointer, inside a result, to the written record (default `/record`).
    #[serde(default = "default_result_record")]
    pub record: Pointer,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// The body shape: `ops` (default) or `rows` (plain records).
    #[serde(default, skip_serializing_if = "is_default_format")]
    pub format: BulkFormat,
    /// `rows` format: how results are matched back to entries (`position` or `key`).
    #[serde(default, skip_serializing_if = "is_default_match")]
    pub match_by: BulkMatch,
}

fn default_post() -> Method {
    Method::Post
}
fn default_ops() -> String {
    "ops".to_owned()
}
fn default_results() -> Pointer {
    pointer::lenient("/results")
}
fn default_status() -> String {
    "status".to_owned()
}
fn default_result_record() -> Pointer {
    pointer::lenient("/record")
}

impl BulkRoute {
    /// `POST url` with the default field names.
    pub fn post(url: &str) -> Self {
        BulkRoute {
            url: template_lenient(url),
            method: Method::Post,
            ops_field: default_ops(),
            results: default_results(),
            status_field: default_status(),
            record: default_result_record(),
            headers: Headers::default(),
            format: BulkFormat::Ops,
            match_by: BulkMatch::Position,
        }
    }

    /// A `rows` bulk route (plain records under `rows_field`, `""` for a bare array) with
    /// `method`; results are read at `results` (e.g. `/rows`, `""` for a bare array).
    pub fn rows(method: Method, url: &str, rows_field: &str, results: &str) -> Self {
        BulkRoute {
            method,
            ops_field: rows_field.to_owned(),
            results: pointer::lenient(results),
            format: BulkFormat::Rows,
            ..BulkRoute::post(url)
        }
    }

    /// Matches `rows` results back to entries by key (default: by position).
    pub fn match_by_key(mut self) -> Self {
        self.match_by = BulkMatch::Key;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Name of the operations array in the request.
    pub fn ops_field(mut self, name: impl Into<String>) -> Self {
        self.ops_field = name.into();
        self
    }

    /// Where the results array is in the response.
    pub fn results(mut self, pointer: &str) -> Self {
        self.results = pointer::lenient(pointer);
        self
    }
}

/// Which version the body of a write carries in the version field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyVersion {
    /// The base version (the one the edit was made on); the server checks and bumps it.
    #[default]
    Base,
    /// The version the record gets by this write: base + 1 for integer versions, 1 for a
    /// create. For servers that store the version they are sent and never bump it.
    Next,
    /// No version in the body (it travels only in a header template or the URL).
    None,
}

fn is_default_body_version(v: &BodyVersion) -> bool {
    *v == BodyVersion::Base
}

/// How version tokens for optimistic concurrency travel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versioning {
    /// A version field in the record (e.g. `version`): sent in the body of updates (set to
    /// `PushRequest.base_version` when given, see `body`) and read back from responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Which version writes carry in `field`: `base` (default), `next` or `none`.
    #[serde(default, skip_serializing_if = "is_default_body_version")]
    pub body: BodyVersion,
    /// ETags: `If-Match: "<base_version>"` on updates and deletes; the response `ETag` is the
    /// new version.
    #[serde(default, skip_serializing_if = "is_false")]
    pub etag: bool,
}

/// How conflicts are found for a table, for servers that check nothing.
///
/// The default, `server`, trusts the server to refuse a write based on a stale version (a 409,
/// a 412 or an answer rule). Most simple CRUD APIs refuse nothing: the last write wins there,
/// silently. The other modes find the conflicts on the client side, each with a race window
/// (a remote edit inside it is still overwritten):
///
/// - `pull_first`: a sync cycle pulls the table before it pushes it, so pending local edits
///   meet the remote changes on the pull path, where the table's conflict strategy decides.
///   Window: from the pull of the record to the push of the local edit (one cycle's push
///   phase). Costs one extra pull per cycle that pushes.
/// - `fetch_before_write`: before each update or delete of a record with a base version, the
///   fetch route reads the server's current record; a version that differs from the base is a
///   conflict (unless the server already shows exactly what the write sends: the echo of an
///   earlier attempt whose answer was lost), resolved like a refused write. Window: one round
///   trip (the fetch to the write). Costs one GET per update and delete. Needs a fetch route
///   and a version (`version.field` or `version.etag`); a server that only stamps an update
///   time can use that field as its version.
/// - `both`: both of the above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictDetection {
    /// The server refuses stale writes (the default).
    #[default]
    Server,
    /// Pull the table before pushing it in every cycle.
    PullFirst,
    /// Fetch the server's record before each update and delete and compare its version.
    FetchBeforeWrite,
    /// `pull_first` and `fetch_before_write`.
    Both,
}

impl ConflictDetection {
    /// Whether cycles pull the table before pushing it.
    pub fn pulls_first(self) -> bool {
        matches!(self, ConflictDetection::PullFirst | ConflictDetection::Both)
    }

    /// Whether updates and deletes fetch the server's record first.
    pub fn fetches_before_write(self) -> bool {
        matches!(
            self,
            ConflictDetection::FetchBeforeWrite | ConflictDetection::Both
        )
    }
}

fn is_default_detection(d: &ConflictDetection) -> bool {
    *d == ConflictDetection::Server
}

/// All routes of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRoutes {
    /// The key field of records (default `id`).
    #[serde(default = "default_key")]
    pub key: String,
    /// Record fields that write templates may use besides the key field (`{slug}` …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The server assigns ids: a create's response key may differ from the local key and is
    /// reported as `PushOutcome.server_key`. Without it a different key is a `Decode` error.
    #[serde(default, skip_serializing_if = "is_false")]
    pub server_ids: bool,
    /// Fields kept only locally: never sent in a write body (creates, updates, bulk). With
    /// `server_ids`, the key field is also left out of create bodies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_only: Vec<String>,
    /// Create route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<WriteRoute>,
    /// Update route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<WriteRoute>,
    /// Delete route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<WriteRoute>,
    /// A 404 answer to a delete counts as success (already gone). Default true. Not when the
    /// delete carried a precondition (`{version}` in a header template, or ETags): a 404 is
    /// then a refusal, a conflict, unless an answer rule says otherwise.
    #[serde(default = "default_true")]
    pub delete_not_found_ok: bool,
    /// The route that writes a record again over a server tombstone (an upsert with no agreed
    /// version: a kept local record against a remote delete, or a create refused because a
    /// deleted record holds its id), e.g. `PUT /posts/{id}` or an upsert endpoint. Default:
    /// the update route. With it (and a fetch route), a create answered 5xx is settled by a
    /// fetch: the record as sent is the create's success (its answer was an error anyway),
    /// another live record a conflict, nothing live the id held by a tombstone: the record
    /// goes again through this route instead of being retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate: Option<WriteRoute>,
    /// Fetch-one route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchRoute>,
    /// Fetch-many route: batches the fetch before write of a bulk push (see
    /// [`FetchManyRoute`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_many: Option<FetchManyRoute>,
    /// Bulk route (every operation kind in one request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkRoute>,
    /// Bulk route for creates only (taken before `bulk` for creates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_create: Option<BulkRoute>,
    /// Bulk route for updates only (taken before `bulk` for updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_update: Option<BulkRoute>,
    /// Bulk route for deletes only (taken before `bulk` for deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_delete: Option<BulkRoute>,
    /// Pull (change feed) route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<Feed>,
    /// Version tokens.
    #[serde(default)]
    pub version: Versioning,
    /// Where a 409/412 response carries the server's current record, tried in order; each
    /// candidate must be an object with the key field. Default `["/current", "/data", ""]`.
    #[serde(default = "default_conflict_record")]
    pub conflict_record: Vec<Pointer>,
    /// Hard-delete reconciliation on an interval (`"1h"`, `"30m"`, `"1d"`, or milliseconds):
    /// when due, a sync cycle lists every key of the pull feed after the table's pull and
    /// deletes locally the records the server no longer has (unless they have a pending local
    /// change). For APIs that delete rows for good and have no tombstones or deleted-ids feed.
    /// It costs one walk of the whole feed; absent (the default): only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "every_ms")]
    pub reconcile_every: Option<std::time::Duration>,

    /// How conflicts are found: `server` (default: the server refuses stale writes),
    /// `pull_first`, `fetch_before_write` or `both`, for servers that check nothing (see
    /// [`ConflictDetection`]).
    #[serde(default, skip_serializing_if = "is_default_detection")]
    pub conflict_detection: ConflictDetection,
}

/// `reconcile_every`: milliseconds, or a number with a unit (`ms`, `s`, `m`, `h`, `d`).
mod every_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub(super) fn parse(text: &str) -> Result<Duration, String> {
        tidesync_core::duration::parse(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(Raw::Text(text)) => parse(&text).map(Some).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
}

fn default_key() -> String {
    "id".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_conflict_record() -> Vec<Pointer> {
    ["/current", "/data", ""]
        .iter()
        .map(|p| pointer::lenient(p))
        .collect()
}

impl Default for TableRoutes {
    fn default() -> Self {
        TableRoutes {
            key: default_key(),
            fields: Vec::new(),
            server_ids: false,
            local_only: Vec::new(),
            create: None,
            update: None,
            delete: None,
            delete_not_found_ok: true,
            recreate: None,
            fetch: None,
            fetch_many: None,
            bulk: None,
            bulk_create: None,
            bulk_update: None,
            bulk_delete: None,
            pull: None,
            version: Versioning::default(),
            conflict_record: default_conflict_record(),
            reconcile_every: None,
            conflict_detection: ConflictDetection::default(),
        }
    }
}

impl TableRoutes {
    /// No routes yet, key field `id`.
    pub fn new() -> Self {
        TableRoutes::default()
    }

    /// The conventional REST shape for a collection at `base` (e.g. `/api/posts`):
    /// `POST base`, `PUT base/{key}`, `DELETE base/{key}`, `GET base/{key}`, and a pull of
    /// `GET base` (no filter, whole list) to be refined with [`TableRoutes::pull`].
    pub fn rest(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let item = format!("{base}/{{key}}");
        TableRoutes::new()
            .create(WriteRoute::post(base))
            .update(WriteRoute::put(&item))
            .delete(WriteRoute::delete(&item))
            .fetch(FetchRoute::get(&item))
            .pull(Feed::get(base))
    }

    /// The routes of a collection of the testkit's reference server
    /// (`tidesync-reference-server`): [`TableRoutes::rest`] at `/api/<collection>` with a
    /// `version` field, and a change feed `GET /api/<collection>?after_updated=…&after_id=…&limit=…`
    /// read with a gap-free keyset cursor on `updatedAt` (epoch ms), items under `/data`,
    /// `/hasMore`, and `deleted: true` tombstones. For trying tidesync and for tests; describe
    /// your own API with the builder (the quickstart example spells these same routes out).
    pub fn reference_server(collection: &str) -> Self {
        let base = format!("/api/{collection}");
        TableRoutes::rest(&base).version_field("version").pull(
            Feed::get(&base)
                .query("after_updated", "{cursor}")
                .query("after_id", "{after_key}")
                .query("limit", "{limit}")
                .items("/data")
                .cursor_field("updatedAt", crate::TimeFormat::EpochMs)
                .filter(crate::Filter::Keyset)
                .pagination(crate::Pagination::none().has_more("/hasMore"))
                .tombstone("deleted"),
        )
    }

    /// Sets the key field.
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = field.into();
        self
    }

    /// Declares a record field that write templates may use.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.fields.push(field.into());
        self
    }

    /// The server assigns ids (see [`TableRoutes::server_ids`](#structfield.server_ids)).
    pub fn server_ids(mut self) -> Self {
        self.server_ids = true;
        self
    }

    /// Declares a field kept only locally (never sent in write bodies).
    pub fn local_only(mut self, field: impl Into<String>) -> Self {
        self.local_only.push(field.into());
        self
    }

    /// Sets the create route.
    pub fn create(mut self, route: WriteRoute) -> Self {
        self.create = Some(route);
        self
    }

    /// Sets the update route.
    pub fn update(mut self, route: WriteRoute) -> Self {
        self.update = Some(route);
        self
    }

    /// Sets the delete route.
    pub fn delete(mut self, route: WriteRoute) -> Self {
        self.delete = Some(route);
        self
    }

    /// A 404 answer to a delete is an error (default: success).
    pub fn delete_not_found_is_error(mut self) -> Self {
        self.delete_not_found_ok = false;
        self
    }

    /// Sets the route that writes a record again over a server tombstone (see
    /// [`TableRoutes::recreate`](#structfield.recreate)).
    pub fn recreate(mut self, route: WriteRoute) -> Self {
        self.recreate = Some(route);
        self
    }

    /// The route a push goes through: an update with no agreed version on a versioned table
    /// (an upsert over a tombstone) takes the `recreate` route when there is one.
    pub(crate) fn route_for(&self, op: Op, base_version: Option<&str>) -> Option<&WriteRoute> {
        let versioned = self.version.field.is_some() || self.version.etag;
        match (&self.recreate, op, base_version) {
            (Some(recreate), Op::Update, None) if versioned => Some(recreate),
            _ => self.route(op),
        }
    }

    /// Sets the fetch route.
    pub fn fetch(mut self, route: FetchRoute) -> Self {
        self.fetch = Some(route);
        self
    }

    /// Sets the bulk route.
    pub fn bulk(mut self, route: BulkRoute) -> Self {
        self.bulk = Some(route);
        self
    }

    /// Sets the bulk route for one operation kind (`rows` format, typically).
    pub fn bulk_for(mut self, op: Op, route: BulkRoute) -> Self {
        match op {
            Op::Create => self.bulk_create = Some(route),
            Op::Update => self.bulk_update = Some(route),
            Op::Delete => self.bulk_delete = Some(route),
        }
        self
    }

    /// The bulk route that sends `op`: its own, else the mixed one.
    pub(crate) fn bulk_route(&self, op: Op) -> Option<&BulkRoute> {
        match op {
            Op::Create => self.bulk_create.as_ref(),
            Op::Update => self.bulk_update.as_ref(),
            Op::Delete => self.bulk_delete.as_ref(),
        }
        .or(self.bulk.as_ref())
    }

    /// Whether any bulk route is configured.
    pub fn has_bulk(&self) -> bool {
        self.bulk.is_some()
            || self.bulk_create.is_some()
            || self.bulk_update.is_some()
            || self.bulk_delete.is_some()
    }

    /// Sets the pull feed.
    pub fn pull(mut self, feed: Feed) -> Self {
        self.pull = Some(feed);
        self
    }

    /// Reconciles hard deletes every `every` (see
    /// [`TableRoutes::reconcile_every`](#structfield.reconcile_every)).
    pub fn reconcile_every(mut self, every: std::time::Duration) -> Self {
        self.reconcile_every = Some(every);
        self
    }

    /// Version tokens travel in this record field.
    pub fn version_field(mut self, field: impl Into<String>) -> Self {
        self.version.field = Some(field.into());
        self
    }

    /// Which version the body carries (default [`BodyVersion::Base`]).
    pub fn body_version(mut self, which: BodyVersion) -> Self {
        self.version.body = which;
        self
    }

    /// Version tokens travel as ETag / If-Match.
    pub fn etag(mut self) -> Self {
        self.version.etag = true;
        self
    }

    /// Where conflicts carry the server's record (replaces the default list).
    pub fn conflict_record(mut self, pointers: &[&str]) -> Self {
        self.conflict_record = pointers.iter().map(|p| pointer::lenient(p)).collect();
        self
    }

    /// How conflicts are found on this table's server (see [`ConflictDetection`]).
    pub fn conflict_detection(mut self, detection: ConflictDetection) -> Self {
        self.conflict_detection = detection;
        self
    }

    pub(crate) fn route(&self, op: Op) -> Option<&WriteRoute> {
        match op {
            Op::Create => self.create.as_ref(),
            Op::Update => self.update.as_ref(),
            Op::Delete => self.delete.as_ref(),
        }
    }

    /// Checks these routes against the table they serve: a pushed table needs a create,
    /// update, delete or bulk route, a pulled one a pull feed. The engine runs this when it
    /// starts (`Transport::check_table`), and `tidesync check` reports the same errors.
    pub fn check_spec(&self, spec: &TableSpec) -> Result<()> {
        let has_writes = self.create.is_some()
            || self.update.is_some()
            || self.delete.is_some()
            || self.has_bulk();
        if spec.push && !has_writes {
            return Err(Error::config(
                "the table is pushed but has no create, update, delete or bulk route",
            )
            .table(&spec.name));
        }
        if spec.pull && self.pull.is_none() {
            return Err(Error::config("the table is pulled but has no pull route")
                .table(&spec.name)
                .setting(["pull"]));
        }
        Ok(())
    }

    /// Checks the routes of table `table` (templates, headers, pointers, pagination).
    pub fn validate(&self, table: &str) -> Result<()> {
        let cfg = |msg: String| Error::config(msg).table(table);
        if self.key.is_empty() {
            return Err(cfg("the key field name is empty".into()).setting(["key"]));
        }
        if let Some(every) = self.reconcile_every {
            if self.pull.is_none() {
                return Err(cfg(
                    "reconcile_every needs a pull route: the reconciliation lists the keys of \
                     the pull feed"
                        .into(),
                )
                .field("reconcile_every"));
            }
            if every < std::time::Duration::from_secs(1) {
                return Err(
                    cfg("reconcile_every must be at least 1s".into()).field("reconcile_every")
                );
            }
        }
        let mut record_fields: BTreeSet<&str> = self.fields.iter().map(String::as_str).collect();
        record_fields.insert(self.key.as_str());
        for (op, route) in [
            (Op::Create, &self.create),
            (Op::Update, &self.update),
            (Op::Delete, &self.delete),
            (Op::Update, &self.recreate),
        ] {
            let Some(route) = route else { continue };
            validate_write_route(table, op, route, self, &record_fields)
                .map_err(|e| e.within(op.as_str()))?;
        }
        self.validate_rest(table)
    }

    /// The checks after the write routes (each error's setting path is relative to the
    /// table's routes).
    fn validate_rest(&self, table: &str) -> Result<()> {
        let cfg = |msg: String| Error::config(msg).table(table);
        if self.server_ids
            && let Some(create) = &self.create
            && let Some(name) = create
                .url
                .placeholders()
                .find(|name| *name == "key" || *name == self.key.as_str())
        {
            return Err(cfg(format!(
                "create route: url `{}` uses `{{{name}}}`, but with `server_ids` the server \
                 assigns the key: a create has only a temporary local one",
                create.url
            ))
            .field(name.to_owned())
            .setting(["create", "url"]));
        }
        if let Some(fetch) = &self.fetch {
            check_template(table, "fetch route", "url", &fetch.url, |name| {
                name == "key" || name == self.key
            })
            .map_err(|e| e.setting(["fetch", "url"]))?;
            fetch
                .headers
                .validate(table, "fetch route")
                .map_err(|e| e.within("headers").within("fetch"))?;
            if let Some(p) = &fetch.response {
                pointer::check(p).map_err(|e| {
                    cfg(format!("fetch route: response: {e}")).setting(["fetch", "response"])
                })?;
            }
        }
        for (name, bulk) in [
            ("bulk", &self.bulk),
            ("bulk_create", &self.bulk_create),
            ("bulk_update", &self.bulk_update),
            ("bulk_delete", &self.bulk_delete),
        ] {
            let Some(bulk) = bulk else { continue };
            validate_bulk_route(table, name, bulk, self.server_ids).map_err(|e| e.within(name))?;
        }
        if let Some(feed) = &self.pull {
            feed.validate(table, "pull", true)
                .map_err(|e| e.within("pull"))?;
        }
        for p in &self.conflict_record {
            pointer::check(p)
                .map_err(|e| cfg(format!("conflict_record: {e}")).setting(["conflict_record"]))?;
        }
        if self.version.field.as_deref() == Some("") {
            return Err(cfg("version.field is empty".into()).setting(["version", "field"]));
        }
        if self.conflict_detection.fetches_before_write() {
            if self.fetch.is_none() {
                return Err(cfg(
                    "conflict_detection: fetching before a write needs a fetch route".into(),
                )
                .field("fetch"));
            }
            if self.version.field.is_none() && !self.version.etag {
                return Err(cfg(
                    "conflict_detection: fetching before a write compares versions: set \
                     version.field (an update time will do) or version.etag"
                        .into(),
                )
                .field("version"));
            }
        }
        if let Some(many) = &self.fetch_many {
            check_template(table, "fetch_many route", "url", &many.url, |name| {
                name == "keys"
            })?;
            many.headers.validate(table, "fetch_many route")?;
            pointer::check(&many.items)
                .map_err(|e| cfg(format!("fetch_many route: items: {e}")))?;
            if self.version.field.is_none() {
                return Err(cfg(
                    "fetch_many route: a list of records carries no ETags: set version.field"
                        .into(),
                )
                .field("version"));
            }
        }
        if self.conflict_detection.pulls_first() && self.pull.is_none() {
            return Err(
                cfg("conflict_detection: pulling first needs a pull route".into()).field("pull"),
            );
        }
        Ok(())
    }
}

/// Checks one write route of `routes` (setting paths relative to the route).
fn validate_write_route(
    table: &str,
    op: Op,
    route: &WriteRoute,
    routes: &TableRoutes,
    record_fields: &BTreeSet<&str>,
) -> Result<()> {
    let cfg = |msg: String| Error::config(msg).table(table);
    let at = format!("{} route", op.as_str());
    check_template(table, &at, "url", &route.url, |name| {
        name == "key" || name == "version" || record_fields.contains(name)
    })
    .map_err(|e| {
        e.setting(["url"]).excerpt(format!(
            "{}.url: record fields usable here: {record_fields:?} (declare more in \
                 `fields`); built-ins: key, version",
            op.as_str()
        ))
    })?;
    route
        .headers
        .validate(table, &at)
        .map_err(|e| e.within("headers"))?;
    for (name, value) in &route.headers.0 {
        check_header_template(table, &at, name, value)
            .map_err(|e| e.setting(["headers", name.as_str()]))?;
    }
    for (i, rule) in route.answers.iter().enumerate() {
        if !(100..=599).contains(&rule.status) {
            return Err(cfg(format!(
                "{at}: answers[{i}]: status {} is not an HTTP status",
                rule.status
            ))
            .setting(["answers"]));
        }
        if let Some(p) = &rule.pointer {
            pointer::check(p).map_err(|e| {
                cfg(format!("{at}: answers[{i}]: pointer: {e}")).setting(["answers"])
            })?;
        }
    }
    if let Some(p) = &route.response {
        pointer::check(p).map_err(|e| cfg(format!("{at}: response: {e}")).setting(["response"]))?;
    }
    if route.envelope.as_deref() == Some("") {
        return Err(cfg(format!("{at}: envelope name is empty")).setting(["envelope"]));
    }
    if route.body_mode(op) == BodyMode::Tombstone {
        if op != Op::Delete {
            return Err(cfg(format!(
                "{at}: body `tombstone` is for the delete route only"
            ))
            .field("body")
            .setting(["body"]));
        }
        if routes
            .pull
            .as_ref()
            .and_then(|p| p.tombstone.as_ref())
            .is_none()
        {
            return Err(cfg(
                "delete route: body `tombstone` needs pull.tombstone (the field and \
                     value that mark a deleted record)"
                    .into(),
            )
            .field("tombstone")
            .setting(["body"]));
        }
    }
    if route.body_mode(op) == BodyMode::Changed && op != Op::Update {
        tracing::debug!(
            table,
            op = op.as_str(),
            "`changed` body on a non-update route sends the full record"
        );
    }
    Ok(())
}

/// Checks one bulk route (`name`: `bulk`, `bulk_create` …; setting paths relative to it).
fn validate_bulk_route(table: &str, name: &str, bulk: &BulkRoute, server_ids: bool) -> Result<()> {
    let cfg = |msg: String| Error::config(msg).table(table);
    let at = format!("{name} route");
    check_template(table, &at, "url", &bulk.url, |_| false).map_err(|e| e.setting(["url"]))?;
    bulk.headers
        .validate(table, &at)
        .map_err(|e| e.within("headers"))?;
    pointer::check(&bulk.results)
        .map_err(|e| cfg(format!("{at}: results: {e}")).setting(["results"]))?;
    pointer::check(&bulk.record)
        .map_err(|e| cfg(format!("{at}: record: {e}")).setting(["record"]))?;
    let rows = bulk.format == BulkFormat::Rows;
    if bulk.ops_field.is_empty() && !rows {
        return Err(cfg(format!("{at}: empty field name")).setting(["ops_field"]));
    }
    if bulk.status_field.is_empty() {
        return Err(cfg(format!("{at}: empty field name")).setting(["status_field"]));
    }
    if rows && name == "bulk" {
        return Err(cfg(
            "bulk route: format `rows` sends one kind of operation per request: use \
             bulk_create, bulk_update and bulk_delete"
                .into(),
        )
        .field("format")
        .setting(["format"]));
    }
    if rows && bulk.match_by == BulkMatch::Key && name == "bulk_create" && server_ids {
        return Err(cfg(
            "bulk_create route: with `server_ids` the answer's keys are new: match \
             results by position"
                .into(),
        )
        .field("match_by")
        .setting(["match_by"]));
    }
    Ok(())
}

/// Header values of write routes may use `{version}` (the base version) and `{key}`; any other
/// `{name}` is a configuration error naming it.
fn check_header_template(table: &str, at: &str, name: &str, value: &str) -> Result<()> {
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let placeholder = &after[..end];
        if placeholder != "version" && placeholder != "key" {
            return Err(Error::config(format!(
                "{at}: header `{name}` uses unknown placeholder `{{{placeholder}}}` (header \
                 templates know `{{version}}` and `{{key}}`)"
            ))
            .table(table)
            .field(name.to_owned()));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Checks that every placeholder of `template` is allowed; names the offending one.
pub(crate) fn check_template(
    table: &str,
    at: &str,
    what: &str,
    template: &Template,
    allowed: impl Fn(&str) -> bool,
) -> Result<()> {
    // A template that failed to parse in a builder is kept with its error text.
    if let Some(reason) = template.error() {
        return Err(
            Error::config(format!("{at}: {what}: bad template `{template}`: {reason}"))
                .table(table),
        );
    }
    for name in template.placeholders() {
        if !allowed(name) {
            return Err(Error::config(format!(
                "{at}: {what} `{template}` uses unknown placeholder `{{{name}}}`"
            ))
            .table(table)
            .field(name.to_owned()));
        }
    }
    Ok(())
}

pub(crate) fn template_lenient(text: &str) -> Template {
    Template::lenient(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reconcile_every_reads_units_and_needs_a_pull_route() {
        let routes: TableRoutes = serde_json::from_value(serde_json::json!({
            "pull": { "url": "/api/posts" },
            "reconcile_every": "1h"
        }))
        .unwrap();
        assert_eq!(routes.reconcile_every, Some(Duration::from_secs(3_600)));
        assert!(routes.validate("posts").is_ok());
        let routes: TableRoutes = serde_json::from_value(serde_json::json!({
            "pull": { "url": "/api/posts" },
            "reconcile_every": 90_000
        }))
        .unwrap();
        assert_eq!(routes.reconcile_every, Some(Duration::from_secs(90)));
        let err = serde_json::from_value::<TableRoutes>(
            serde_json::json!({ "reconcile_every": "2 fortnights" }),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
        let no_pull = TableRoutes::new().reconcile_every(Duration::from_secs(60));
        let err = no_pull.validate("posts").unwrap_err();
        assert_eq!(err.field_name(), Some("reconcile_every"));
        let too_often = TableRoutes::rest("/api/posts").reconcile_every(Duration::from_millis(10));
        assert!(too_often.validate("posts").is_err());
    }
}
