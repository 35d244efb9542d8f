//! The reference REST server: a real HTTP/1.1 server (axum on hyper, plain HTTP, loopback by
//! default) that behaves like a well-made production API over in-memory data, and misbehaves
//! on purpose when told to. This page is the contract the engine, the REST transport and their
//! tests code against.
//!
//! # Starting it
//!
//! ```no_run
//! use std::time::Duration;
//! use tidesync_testkit::server::{CollectionConfig, ReferenceServer, TimestampFormat};
//! # async fn demo() {
//! let server = ReferenceServer::start().await;           // 127.0.0.1:0, current runtime
//! let other = ReferenceServer::start_background();       // own thread + runtime (sync code, actix)
//! let custom = ReferenceServer::builder()
//!     .auth(Duration::from_secs(60))                     // Bearer tokens required on /api
//!     .seed(42)                                          // fault generator seed
//!     .collection("tasks", CollectionConfig::default().server_ids(true))
//!     .collection("notes", CollectionConfig::default().timestamps(TimestampFormat::Rfc3339))
//!     .start()
//!     .await;
//! println!("{}", server.url());                          // http://127.0.0.1:PORT
//! # drop((other, custom));
//! # }
//! ```
//!
//! [`ReferenceServer`] derefs to a [`ServerHandle`] (`Clone`, synchronous) for inspection and
//! control: [`records`](ServerHandle::records), [`record`](ServerHandle::record),
//! [`tombstones`](ServerHandle::tombstones), [`insert_direct`](ServerHandle::insert_direct) /
//! [`update_direct`](ServerHandle::update_direct) / [`delete_direct`](ServerHandle::delete_direct)
//! (another client editing on the server), [`request_log`](ServerHandle::request_log),
//! [`create_count`](ServerHandle::create_count), [`replay_count`](ServerHandle::replay_count),
//! [`freeze_clock`](ServerHandle::freeze_clock), faults, tokens and fencing. Dropping the
//! server (or [`ReferenceServer::shutdown`]) stops it and closes all its connections.
//!
//! # Data model
//!
//! Collections are created on first write. A record is a JSON object with:
//! - `id`: a non-empty string or an integer, as the client sent it. Without one, the server
//!   assigns a uuid (v7) string. With [`CollectionConfig::server_ids`], the server assigns
//!   integers from a counter (1, 2, …) and ignores any client id on create.
//!   `5` and `"5"` name the same record (the storage key is the decimal/string form).
//!   The ids `bulk`, `rows` and `deleted` are reserved by the routes below.
//! - `updatedAt`: server-owned (client values are ignored), stamped on every change; epoch
//!   milliseconds by default, or epoch seconds or RFC 3339 per [`TimestampFormat`].
//! - `version`: server-owned integer, 1 on create, +1 on every change (delete included).
//! - `deleted: true` on tombstones (deletes are soft). Live records carry no `deleted` field;
//!   a client-sent `deleted` is ignored. Tombstones keep their last fields.
//!
//! Every response carries `Date`; error bodies are `{"error": "<message>", …}`; writes that
//! return a record carry `ETag: "<version>"`.
//!
//! # Endpoints
//!
//! | method and path | success | errors |
//! |---|---|---|
//! | `POST /api/{c}` | 201 + record, `ETag`, `Location` | 409 `{"error":"exists","current":{…}}` (a tombstone counts) |
//! | `GET /api/{c}/{id}` | 200 + record, `ETag` (`If-None-Match` → 304) | 404 (`{"error":"not found","deleted":true}` for a tombstone) |
//! | `PUT /api/{c}/{id}` | 200 + record (replace, revives a tombstone); 201 if created (upsert) | 404 on a `server_ids` collection for an unknown id; 400 if body `id` ≠ path id |
//! | `PATCH /api/{c}/{id}` | 200 + record (shallow top-level merge; `null` sets null) | 404 if missing or deleted |
//! | `DELETE /api/{c}/{id}` | 204 (tombstone; bumps `updatedAt` and `version`) | 404 if missing or already deleted |
//! | `PATCH /api/{c}?id=eq.{id}` | as `PATCH /api/{c}/{id}` | 400 without exactly one `id=eq.` |
//! | `DELETE /api/{c}?id=eq.{id}` | as `DELETE /api/{c}/{id}` | idem |
//! | `GET /api/{c}?id=eq.{id}` (or `id=in.(a,b)`) | a pull restricted to those ids | |
//! | `POST /api/{c}/bulk` | 200 `{"results":[…]}` (see below) | 400 if the body is not `{"ops":[…]}` or has > 1000 ops |
//! | `POST`/`PATCH`/`DELETE /api/{c}/rows` | 201/200 `{"rows":[…]}` (plain-row bulk, see below) | 400 if the body is not `{"rows":[…]}`; 409/404 for a taken or missing id, nothing applied |
//! | `GET /api/{c}` | 200 pull page (see below) | 400 on a malformed filter, page or cursor |
//! | `GET /api/{c}/deleted` | 200 `{"data":[{"id":…,"deletedAt":…}],…}` | idem |
//! | `POST /auth/token` | 200 `{"access_token","token_type":"Bearer","expires_in"}` | 400 `invalid_request` / `invalid_grant` |
//!
//! Other paths: 404; other methods on a known path: 405. Bodies larger than the limit
//! (8 MiB by default, [`ReferenceServerBuilder::body_limit`]): 413. A body that is not a JSON
//! object where one is needed, an `id` that is not a non-empty string or integer, a `version`
//! that is not a non-negative integer: 400. No input makes the server panic.
//!
//! ## Optimistic concurrency (PUT, PATCH, DELETE, and bulk ops)
//!
//! 1. `If-Match` (`"<version>"`, `W/"<version>"`, bare `<version>`, lists, `*`) present and not
//!    matching the current record → **412** `{"error":"precondition failed","current":{…}|null}`.
//! 2. `version` in the body (DELETE: an optional JSON body `{"version":N}`) different from the
//!    current version → **409** `{"error":"version conflict","current":{…}|null}`. For a record
//!    that does not exist the current version is 0.
//!
//! ## Bulk
//!
//! `POST /api/{c}/bulk` with `{"ops":[{"op":"create"|"update"|"replace"|"delete", "id":…,
//! "record":{…}, "version":N, "ifMatch":"…", "idempotencyKey":"…"}, …]}`, applied in order,
//! each op independently. `update` merges like PATCH, `replace` (alias `upsert`) is PUT. The
//! id comes from `id` or `record.id`. Results, in op order:
//! `{"status":201|200,"record":{…}}`, `{"status":204}`,
//! `{"status":409,"error":"…","current":{…}}`, `{"status":404,"error":"not found"}`,
//! `{"status":400,"error":"…"}`; a replayed op adds `"replayed":true`.
//!
//! Plain-row bulk, as NocoDB's bulk routes or PostgREST's array insert: `POST /api/{c}/rows`
//! creates, `PATCH` merges like PATCH, `DELETE` soft-deletes, each with `{"rows": [{…}, …]}`
//! (records; an update or delete row needs its `id`). All or nothing, with no version check:
//! a create of a taken id (a tombstone included) answers 409 `{"error":"exists","id":…}`, an
//! update or delete of a record that is not live 404 `{"error":"not found","id":…}`, and no
//! row is written. Success: `{"rows": [<records>]}` in row order (201 for creates; a delete
//! lists `{"id": …}` only). The request's `Idempotency-Key` covers the whole request.
//!
//! ## Pulls: `GET /api/{c}` and `GET /api/{c}/deleted`
//!
//! Rows are ordered by `(updatedAt, id)` ascending (ids: numeric ids numerically, before
//! non-numeric ids, which compare as strings). Timestamps compare in the collection's unit
//! (seconds for [`TimestampFormat::EpochSeconds`], else milliseconds). A timestamp value is an
//! integer in that unit or an RFC 3339 date-time.
//!
//! Filters (combinable, all must hold; unknown parameters are ignored):
//! - `updated_after=<ts>` — `updatedAt > ts`;
//! - `updatedAt_gte=<ts>` — `>=` (also `updatedAt_gt`, `updatedAt_lt`, `updatedAt_lte`);
//! - `updated_at=gt.<ts>` — PostgREST style, operators `gt gte lt lte eq` (also `updatedAt=`);
//! - `since=<RFC 3339 or ts>` — `>`;
//! - `filter=(updated > '<ts>')` — also `>=`, `<`, `<=`, `=`, `gt`/`ge`/…, fields `updated`,
//!   `updatedAt`, `updated_at`, quotes optional;
//! - `id=eq.<id>` or `id=in.(<id>,…)`;
//! - `tombstones=include` (default: tombstones appear with `deleted:true`) | `exclude` | `only`
//!   (the deleted feed always lists tombstones only).
//!
//! Pagination (page size `limit` or `per_page`, default 100, clamped to 1000, per
//! [`CollectionConfig`]):
//! - `limit=N&offset=M`;
//! - `page=P&per_page=N` (1-based);
//! - `cursor=<opaque>&limit=N` — start without `cursor`; follow `nextCursor`;
//! - keyset `after_updated=<ts>&after_id=<id>` — rows with `(updatedAt, id) > (ts, id)`
//!   (`after_updated` alone: `updatedAt > ts`).
//!
//! `total` counts the rows matching the filters (not the position). The cursor encodes the
//! position of the page's last row, so rows changed while paging move behind the cursor and
//! are seen again later, never skipped. Response (default envelope):
//! `{"data":[…],"hasMore":bool,"total":N,"nextCursor":"…"|null}`; with `envelope=none` a bare
//! JSON array. Headers: `X-Total-Count`, `X-Has-More`, and when there is a next page
//! `X-Next-Cursor` and `Link: <next url>; rel="next"` — absolute (`http://host/…`, from the
//! `Host` header) unless [`CollectionConfig::relative_links`]; the next URL keeps the
//! request's parameters and advances them in the request's own style (`offset`, `page`,
//! `cursor` or `after_updated`/`after_id`; `cursor` if it named none). Deleted-feed rows are
//! `{"id":…,"deletedAt":…}` (the tombstone's `updatedAt`, same format), ordered by
//! `(deletedAt, id)`; `since=<ts>` is `deletedAt > ts`.
//!
//! ### Behaviours of real servers, by configuration ([`CollectionConfig`])
//!
//! - [`TimestampFormat::SpaceSeparated`]: `updatedAt` as `2024-05-01 12:00:00.123Z`.
//! - [`CollectionConfig::text_compare`]: a text filter value is compared as text with the
//!   rendered timestamps (a text column): `2024-05-01T…` is greater than every `2024-05-01 …`.
//! - [`CollectionConfig::answer_rounding_ms`]: answers show times rounded down (e.g. to whole
//!   seconds) while filters, order and cursors use the exact time.
//! - [`CollectionConfig::sort_from_params`]: `orderby.<field>=asc` parameters (`updatedAt`,
//!   `id`) sort in the order they are written, key order without them; id-first orders page
//!   by offset or page only (cursor and keyset positions are a 400).
//! - [`CollectionConfig::concurrency`]: how a stale write is refused: the standard 409/412,
//!   a bare `If-Match` compared with a client-owned version and refused with 404
//!   ([`Concurrency::BareIfMatch404`]), 400 `{"errors": ["version conflict"]}`
//!   ([`Concurrency::Conflict400`]), or not at all ([`Concurrency::Unchecked`]: a PATCH of a
//!   soft-deleted row writes it and answers it with `deleted: true`).
//! - [`CollectionConfig::required_fields`], [`CollectionConfig::row_envelope`] (`{"row": …}`
//!   bodies with a `return` option), [`CollectionConfig::refuse_client_ids`] (with server ids,
//!   a create carrying an `id` is refused with 400), [`CollectionConfig::duplicate_id_500`]
//!   (a soft delete keeps the id: a create of a tombstone's id fails with 500 `duplicate id`).
//! - Conditional writes by query on every collection: `PUT /api/<c>?where.id.eq=<id>&where.version.eq=<v>`
//!   replaces the record's fields and `DELETE` with the same filter soft-deletes it; both answer
//!   200 with the written rows as an array, `[]` when the filter matches nothing (a stale
//!   version): a conflict that looks like a success.
//! - [`CollectionConfig::max_limit`]: a silent page cap (the page is shorter, `hasMore` true).
//! - [`CollectionConfig::link_origin`]: absolute `Link`s on another origin (a proxy that
//!   rewrites `Host`).
//! - [`CollectionConfig::edit_during_pulls`]: after every `n`-th change-feed page, the server
//!   edits its oldest live record, as another client would (updates during a walk); tests can
//!   also call [`ServerHandle::update_direct`] and friends between two requests. Offsets and
//!   page numbers then shift as on any server.
//!
//! ## Idempotency
//!
//! A write (POST, PUT, PATCH, DELETE under `/api`) with `Idempotency-Key: <1–255 visible
//! ASCII>` whose key was seen before is not applied again: the first response (status and
//! body) is replayed, with `Idempotent-Replayed: true`, and counted
//! ([`ServerHandle::replay_count`]). Bulk ops' `idempotencyKey`s share the same key space, so
//! an op may be retried alone or in another bulk. Only 2xx responses are stored (a refused
//! write had no effect). A key reused for another operation (collection, action or id
//! differ) → 422.
//!
//! ## Auth ([`ReferenceServerBuilder::auth`])
//!
//! Every `/api` request needs `Authorization: Bearer <token>` with an issued, unexpired token,
//! else 401 `{"error":"unauthorized"}` with `WWW-Authenticate: Bearer`. `POST /auth/token` with
//! `{"refresh_token":"<ServerHandle::refresh_token()>"}` (JSON or form) returns a fresh
//! token. See [`ServerHandle::issue_token`], [`ServerHandle::expire_all_tokens`],
//! [`ServerHandle::revoke_refresh`]. Token values are never logged.
//!
//! ## Leader fencing
//!
//! A write with `X-Tidesync-Epoch: <u64>` lower than the highest epoch seen so far is refused
//! with 409 `{"error":"stale epoch","epoch":E,"maxEpoch":M}` (before idempotency replay);
//! otherwise the epoch is recorded. See [`ServerHandle::max_epoch_seen`] and
//! [`ServerHandle::stale_epoch_rejections`].
//!
//! # Fault injection
//!
//! Random faults ([`Faults`], set with [`ServerHandle::set_faults`] or
//! [`ReferenceServerBuilder::faults`]) draw from a seeded `StdRng`: the same seed and the same
//! request order give the same faults. Scripted one-shots
//! ([`ServerHandle::fail_next`], [`ServerHandle::fail_next_where`]) hit the next `n` matching
//! requests first (such a request gets no random latency or fault). [`FaultFilter`]
//! restricts either to methods and/or a path prefix
//! (`FaultFilter::writes().under("/api/posts")` targets pushes only). Every fault is recorded
//! in [`LoggedRequest::fault`]. Kinds ([`FaultKind`]):
//!
//! | kind | the request is applied? | the client sees |
//! |---|---|---|
//! | [`Latency`] (random faults) / `Delay(d)` | yes, after the delay | the real response, late |
//! | `Status{status, retry_after}` | no | that status (e.g. 500/502/503/429), `Retry-After` as seconds or HTTP-date |
//! | `Drop` | no | the connection closed, no response |
//! | `Hang(d)` | after `d` | nothing until `d` (default 300 s): a client timeout |
//! | `CommitThenDrop` | yes, key recorded | the connection closed, no response |
//! | `CommitThenStatus(s)` | yes, key recorded | status `s` instead of the real response |
//! | `Malformed` | yes | 200 with the first half of the real body (invalid JSON) |
//! | `Oversized(n)` | yes | 200 with a valid JSON body of `n` bytes (default 20 MiB) |
//! | `RepeatPage` | pulls only | the same page forever: `hasMore:true`, same `nextCursor`, same `Link` |
//!
//! Faults act before auth: a fault can hit a request with a bad token.
//!
//! # Request log
//!
//! [`ServerHandle::request_log`] lists every request: method, path, query, selected headers
//! (`Idempotency-Key`, `If-Match`, `If-None-Match`, `X-Tidesync-Epoch`, `Content-Type`,
//! `Prefer`; `Authorization` only as `<redacted>`), body (`<redacted>` for `/auth/…`, which
//! carries the refresh token), the status the client saw (`None` when it saw none), the
//! injected fault and whether the response was a replay.
//!
//! # Change history
//!
//! [`ServerHandle::changes`] lists every applied change of every record, in application
//! order: the record after the change, and its cause (the write's `Idempotency-Key`, or a
//! direct edit). Refused and replayed writes change nothing and are not listed.

mod auth;
mod builder;
mod collection;
mod counts;
mod faults;
mod feed;
mod handle;
mod history;
mod idempotency;
mod ids;
mod live;
mod log;
mod net;
mod pagination;
mod pipeline;
mod query;
mod reply;
mod routes;
mod state;
mod store;
mod time;

pub use builder::{DEFAULT_BODY_LIMIT, DEFAULT_SEED, ReferenceServer, ReferenceServerBuilder};
pub use collection::{CollectionConfig, Concurrency, TimestampFormat};
pub use faults::{
    DEFAULT_HANG, DEFAULT_OVERSIZED, FaultFilter, FaultKind, FaultRule, Faults, Latency, RetryAfter,
};
pub use handle::{DirectError, ServerHandle};
pub use history::ServerChange;
pub use ids::RecordId;
pub use live::{LiveOptions, LivePayload};
pub use log::LoggedRequest;
