//! One collection: its options ([`CollectionConfig`]), its records (live and tombstones) and
//! the write operations with their optimistic-concurrency checks. Pure data: no locking, no
//! HTTP; the caller passes the current time.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use axum::http::StatusCode;
use axum::http::header::{ETAG, LOCATION};
use serde_json::{Map, Value, json};

use super::counts::TsCounts;
use super::ids::{cmp_keys, id_json_from_key, key_from_json};
use super::query::encode;
use super::reply::Reply;
use super::time::format_rfc3339;

/// How a collection renders its server-owned timestamps (`updatedAt`, `deletedAt`), and so
/// which unit its numeric filter values are read in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampFormat {
    /// Integer milliseconds since the Unix epoch (the default).
    #[default]
    EpochMillis,
    /// Integer seconds since the Unix epoch. Ordering, filters and keyset cursors use the
    /// rendered seconds, so many records share a timestamp.
    EpochSeconds,
    /// An RFC 3339 string in UTC with millisecond precision (`2024-05-01T12:00:00.123Z`).
    /// Numeric filter values are then read as milliseconds.
    Rfc3339,
    /// Text like many SQL-backed APIs write it: a space instead of the `T`, milliseconds and
    /// `Z` (`2024-05-01 12:00:00.123Z`). Numeric filter values are read as milliseconds.
    SpaceSeparated,
}

/// How a collection checks the version a write was based on (real servers differ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// `If-Match` with the ETag (quoted or weak) → 412 on a mismatch; a body `version` that
    /// is not the stored one → 409 with the current record. The server bumps `version` on
    /// every write (the default).
    #[default]
    Standard,
    /// A row rule comparing `If-Match` with the stored version number, bare (`If-Match: 3`;
    /// the quoted `"3"` never matches): a mismatch answers 404, as the rule hides the row. The
    /// server never bumps `version`: it stores the `version` the client sends (a create
    /// without one starts at 1); a write without `If-Match` is not checked.
    BareIfMatch404,
    /// No concurrency control at all, as most simple CRUD APIs: `If-Match` and a body
    /// `version` are ignored (the server still bumps `version`), and a PATCH of a soft-deleted
    /// record updates its fields and answers it, `deleted: true` and all (the flag is a column
    /// a PATCH does not touch). A PUT replaces the whole row and so revives it, as before.
    Unchecked,
    /// The standard checks, but a stale version is answered 400 with
    /// `{"errors": ["version conflict"]}` (no current record), for both `If-Match` and a
    /// body `version`.
    Conflict400,
}

/// Per-collection options. Collections that were not configured use the server default
/// ([`super::ReferenceServerBuilder::default_collection`]).
#[derive(Clone, Debug)]
pub struct CollectionConfig {
    /// The server assigns ids (integers from a per-collection counter, starting at 1) on
    /// create, replacing any id the client sent. PUT to an unknown id is then a 404.
    pub server_ids: bool,
    /// How `updatedAt` is rendered.
    pub timestamps: TimestampFormat,
    /// Page size of a pull that names none (default 100).
    pub default_limit: usize,
    /// Largest page size honoured; larger `limit`/`per_page` values are clamped (default 1000).
    pub max_limit: usize,
    /// Render `Link` headers as origin-relative paths (`/api/...`) instead of absolute URLs.
    pub relative_links: bool,
    /// Render absolute `Link` headers on this origin (`http://internal:8080`) instead of the
    /// request's `Host`: an application behind a proxy that rewrites `Host`.
    pub link_origin: Option<String>,
    /// Read the sort order from `orderby.<field>=asc` parameters (fields `updatedAt` and `id`)
    /// in the order they are written, and sort by id when none is given: an API that hands its
    /// parameters to `ORDER BY` as they come. Off: always `(updatedAt, id)`.
    pub sort_from_params: bool,
    /// Round timestamps in answers down to a multiple of this many milliseconds (1: exact)
    /// while filters, ordering and cursors keep the exact time: a server whose answers are
    /// coarser than what its filter compares.
    pub answer_rounding_ms: i64,
    /// Compare timestamp filter values as text with the rendered timestamps (a text column),
    /// instead of parsing them as times: `2024-05-01T…` is then greater than every
    /// `2024-05-01 …` of the same day.
    pub text_compare: bool,
    /// After every `n`-th page served from the change feed, the server edits the live record
    /// that comes first in `(updatedAt, id)` order, as another client would (a `serverEdits`
    /// counter field; `updatedAt` and `version` move): updates during a walk, which move that
    /// record to the end and shift every later one a place forward.
    pub edit_during_pulls: Option<usize>,
    /// Deletes remove the record for good (no tombstone, nothing in either feed), as most
    /// CRUD APIs do: other clients only learn of a delete by listing the keys.
    pub hard_deletes: bool,
    /// Clients may write the `deleted` flag: a PATCH or PUT whose body sets `"deleted": true`
    /// turns the record into a tombstone, as a DELETE would (a soft-delete column the API
    /// exposes). Off: `deleted` in a body is ignored (server-owned).
    pub client_tombstones: bool,
    /// How writes are checked against the stored version.
    pub concurrency: Concurrency,
    /// Fields every POST/PUT/PATCH body must carry (e.g. `deleted` and `version`): a body
    /// without one is refused with 400 `missing required field`.
    pub required_fields: Vec<String>,
    /// Write bodies in a row envelope with options, as some SQL-backed APIs take them:
    /// `{"row": {..}}`, plus `"return": true` to get the written record back. Creates answer
    /// `{"rows": [record]}`; updates answer `{"ok": true}` unless `return` is true. Any other
    /// top-level field is refused with 400 `invalid columns`.
    pub row_envelope: bool,
    /// With [`CollectionConfig::server_ids`]: a create whose body carries an `id` is refused
    /// with 400 (`id` is assigned by the server), as servers that mint their own ids do,
    /// instead of the id being replaced silently.
    pub refuse_client_ids: bool,
    /// A soft delete keeps the id in a unique index the API does not map to a status: a create
    /// of an id held by a tombstone fails with 500 `{"error": "duplicate id"}` (instead of 409
    /// `exists`), as APIs that let the database error through do.
    pub duplicate_id_500: bool,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        Self {
            server_ids: false,
            timestamps: TimestampFormat::EpochMillis,
            default_limit: 100,
            max_limit: 1000,
            relative_links: false,
            link_origin: None,
            sort_from_params: false,
            answer_rounding_ms: 1,
            text_compare: false,
            edit_during_pulls: None,
            hard_deletes: false,
            client_tombstones: false,
            concurrency: Concurrency::Standard,
            required_fields: Vec::new(),
            row_envelope: false,
            refuse_client_ids: false,
            duplicate_id_500: false,
        }
    }
}

impl CollectionConfig {
    /// Sets [`CollectionConfig::server_ids`].
    #[must_use]
    pub fn server_ids(mut self, on: bool) -> Self {
        self.server_ids = on;
        self
    }

    /// Sets [`CollectionConfig::timestamps`].
    #[must_use]
    pub fn timestamps(mut self, format: TimestampFormat) -> Self {
        self.timestamps = format;
        self
    }

    /// Sets [`CollectionConfig::default_limit`] (at least 1).
    #[must_use]
    pub fn default_limit(mut self, limit: usize) -> Self {
        self.default_limit = limit.max(1);
        self
    }

    /// Sets [`CollectionConfig::max_limit`] (at least 1).
    #[must_use]
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max_limit = limit.max(1);
        self
    }

    /// Sets [`CollectionConfig::relative_links`].
    #[must_use]
    pub fn relative_links(mut self, on: bool) -> Self {
        self.relative_links = on;
        self
    }

    /// Sets [`CollectionConfig::link_origin`].
    #[must_use]
    pub fn link_origin(mut self, origin: impl Into<String>) -> Self {
        self.link_origin = Some(origin.into());
        self
    }

    /// Sets [`CollectionConfig::sort_from_params`].
    #[must_use]
    pub fn sort_from_params(mut self, on: bool) -> Self {
        self.sort_from_params = on;
        self
    }

    /// Sets [`CollectionConfig::answer_rounding_ms`] (at least 1).
    #[must_use]
    pub fn answer_rounding_ms(mut self, ms: i64) -> Self {
        self.answer_rounding_ms = ms.max(1);
        self
    }

    /// Sets [`CollectionConfig::edit_during_pulls`] (`0` turns it off).
    #[must_use]
    pub fn edit_during_pulls(mut self, every: usize) -> Self {
        self.edit_during_pulls = (every > 0).then_some(every);
        self
    }

    /// Sets [`CollectionConfig::hard_deletes`].
    #[must_use]
    pub fn hard_deletes(mut self, on: bool) -> Self {
        self.hard_deletes = on;
        self
    }

    /// Sets [`CollectionConfig::client_tombstones`].
    #[must_use]
    pub fn client_tombstones(mut self, on: bool) -> Self {
        self.client_tombstones = on;
        self
    }

    /// Sets [`CollectionConfig::concurrency`].
    #[must_use]
    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`CollectionConfig::required_fields`].
    #[must_use]
    pub fn required_fields(mut self, fields: &[&str]) -> Self {
        self.required_fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// Sets [`CollectionConfig::row_envelope`].
    #[must_use]
    pub fn row_envelope(mut self, on: bool) -> Self {
        self.row_envelope = on;
        self
    }

    /// Sets [`CollectionConfig::refuse_client_ids`].
    #[must_use]
    pub fn refuse_client_ids(mut self, on: bool) -> Self {
        self.refuse_client_ids = on;
        self
    }

    /// Sets [`CollectionConfig::duplicate_id_500`].
    #[must_use]
    pub fn duplicate_id_500(mut self, on: bool) -> Self {
        self.duplicate_id_500 = on;
        self
    }

    /// Sets [`CollectionConfig::text_compare`].
    #[must_use]
    pub fn text_compare(mut self, on: bool) -> Self {
        self.text_compare = on;
        self
    }
}

/// A stored record. `fields` never contains the server-owned keys.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) id: Value,
    pub(crate) fields: Map<String, Value>,
    pub(crate) updated_ms: i64,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
}

/// Preconditions of a write.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pre {
    /// The raw `If-Match` header.
    pub(crate) if_match: Option<String>,
    /// The `version` the client based its write on.
    pub(crate) version: Option<u64>,
}

/// A client body split into its parts: user fields, the id and the base version.
#[derive(Debug, Default)]
pub(crate) struct Body {
    pub(crate) fields: Map<String, Value>,
    pub(crate) id: Option<Value>,
    pub(crate) version: Option<u64>,
    /// The body set `"deleted": true` (honoured with
    /// [`CollectionConfig::client_tombstones`]).
    pub(crate) deleted: bool,
}

impl Body {
    /// Splits a JSON object; the server-owned `updatedAt` and `deleted` are dropped.
    pub(crate) fn split(mut fields: Map<String, Value>) -> Result<Self, String> {
        let id = fields.remove("id");
        if let Some(id) = &id {
            key_from_json(id)?;
        }
        let version = match fields.remove("version") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Some(v),
                None => return Err("`version` must be a non-negative integer".into()),
            },
            Some(_) => return Err("`version` must be a non-negative integer".into()),
        };
        fields.remove("updatedAt");
        let deleted = fields.remove("deleted") == Some(Value::Bool(true));
        Ok(Self {
            fields,
            id,
            version,
            deleted,
        })
    }

    /// Parses a request body that must be a JSON object.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Self::split(m),
            Ok(_) => Err("request body must be a JSON object".into()),
            Err(e) => Err(format!("request body is not valid JSON: {e}")),
        }
    }
}

/// Whether an `If-Match` header value matches a record.
fn etag_matches(header: &str, rec: &Record) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return !rec.deleted;
        }
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        let tag = tag.trim_matches('"');
        tag.parse::<u64>().is_ok_and(|v| v == rec.version)
    })
}

/// A body `id`, if any, must name the record of the path.
fn check_body_id(body: &Body, key: &str) -> Result<(), Reply> {
    match &body.id {
        Some(id) if key_from_json(id).ok().as_deref() != Some(key) => Err(Reply::bad_request(
            "`id` in the body does not match the id in the path",
        )),
        _ => Ok(()),
    }
}

/// The `ETag` of a version.
pub(crate) fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// An id's place in the order of [`cmp_keys`], as a derived `Ord` so that a `BTreeSet` can
/// hold it: integer ids first (by value, then text), then the others (by bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum IdRank {
    Num(i64, String),
    Str(String),
}

impl IdRank {
    pub(crate) fn of(key: &str) -> Self {
        match key.parse::<i64>() {
            Ok(n) => Self::Num(n, key.to_owned()),
            Err(_) => Self::Str(key.to_owned()),
        }
    }

    /// Below every real id (no id parses to `i64::MIN` with an empty text).
    pub(crate) fn min() -> Self {
        Self::Num(i64::MIN, String::new())
    }

    /// The smallest rank strictly above this one (no string lies between `s` and `s\0`).
    pub(crate) fn successor(&self) -> Self {
        match self {
            Self::Num(n, s) => Self::Num(*n, format!("{s}\0")),
            Self::Str(s) => Self::Str(format!("{s}\0")),
        }
    }

    fn key(&self) -> &str {
        match self {
            Self::Num(_, s) | Self::Str(s) => s,
        }
    }
}

/// A place in `(updatedAt, id)` order, the timestamp in the collection's unit.
pub(crate) type Place = (i64, IdRank);

/// Which records a feed lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    All,
    Live,
    Dead,
}

/// One page of a feed, already filtered and positioned.
#[derive(Debug)]
pub(crate) struct FeedQuery<'q> {
    pub(crate) which: Which,
    /// Only these keys (`id=eq.`/`id=in.`).
    pub(crate) ids: Option<&'q [String]>,
    /// Inclusive bounds on the unit timestamp; `None` when the filters exclude everything.
    pub(crate) ts: Option<(i64, i64)>,
    /// The first wanted place (inclusive), from the keyset or cursor position; `None` when
    /// nothing can come after the position.
    pub(crate) from: Option<Place>,
    pub(crate) skip: usize,
    pub(crate) limit: usize,
    /// Order by id first (then `updatedAt`) instead of `(updatedAt, id)`.
    pub(crate) by_id: bool,
}

/// The answer to a [`FeedQuery`].
#[derive(Debug)]
pub(crate) struct FeedPage<'a> {
    /// Rows matching the filters, before positioning.
    pub(crate) total: usize,
    /// At most `limit` rows as `(unit timestamp, key, record)`.
    pub(crate) rows: Vec<(i64, &'a str, &'a Record)>,
    /// Whether rows follow the page.
    pub(crate) has_more: bool,
}

/// One collection.
#[derive(Debug)]
pub(crate) struct Collection {
    name: String,
    pub(crate) config: CollectionConfig,
    records: HashMap<String, Record>,
    /// Every record's place, kept on every write, so a feed page is a range scan rather
    /// than a sort of the whole collection.
    order: BTreeSet<Place>,
    /// The tombstones' places (a subset of `order`), for the deleted feed.
    dead: BTreeSet<Place>,
    /// Records and tombstones per unit timestamp, so a feed's `total` costs O(log n).
    all_counts: TsCounts,
    dead_counts: TsCounts,
    next_server_id: i64,
    creates: HashMap<String, usize>,
    /// Change-feed pages served (for [`CollectionConfig::edit_during_pulls`]).
    pages_served: usize,
    /// Records changed since the store last collected them (key, rendered record), for the
    /// change history.
    pub(crate) changed: Vec<(String, Value)>,
}

impl Collection {
    pub(crate) fn new(name: &str, config: CollectionConfig) -> Self {
        Self {
            name: name.to_owned(),
            config,
            records: HashMap::new(),
            order: BTreeSet::new(),
            dead: BTreeSet::new(),
            all_counts: TsCounts::default(),
            dead_counts: TsCounts::default(),
            next_server_id: 1,
            creates: HashMap::new(),
            pages_served: 0,
            changed: Vec::new(),
        }
    }

    /// A timestamp in the collection's comparison unit (seconds or milliseconds).
    pub(crate) fn unit(&self, ms: i64) -> i64 {
        match self.config.timestamps {
            TimestampFormat::EpochSeconds => ms.div_euclid(1000),
            _ => ms,
        }
    }

    /// A timestamp as the collection renders it (rounded per `answer_rounding_ms`).
    pub(crate) fn render_ts(&self, ms: i64) -> Value {
        let step = self.config.answer_rounding_ms.max(1);
        let ms = ms - ms.rem_euclid(step);
        match self.config.timestamps {
            TimestampFormat::EpochMillis => Value::from(ms),
            TimestampFormat::EpochSeconds => Value::from(ms.div_euclid(1000)),
            TimestampFormat::Rfc3339 | TimestampFormat::SpaceSeparated => {
                Value::from(self.text_ts(ms))
            }
        }
    }

    /// A timestamp as text in the collection's text format (RFC 3339 or space-separated).
    pub(crate) fn text_ts(&self, ms: i64) -> String {
        let text = format_rfc3339(ms);
        if self.config.timestamps == TimestampFormat::SpaceSeparated {
            text.replacen('T', " ", 1)
        } else {
            text
        }
    }

    /// A unit timestamp as a query parameter value (for keyset `Link`s).
    pub(crate) fn unit_param(&self, unit: i64) -> String {
        match self.config.timestamps {
            TimestampFormat::Rfc3339 | TimestampFormat::SpaceSeparated => self.text_ts(unit),
            _ => unit.to_string(),
        }
    }

    /// The JSON form of a record.
    pub(crate) fn render(&self, r: &Record) -> Value {
        let mut m = Map::with_capacity(r.fields.len() + 4);
        m.insert("id".into(), r.id.clone());
        for (k, v) in &r.fields {
            m.insert(k.clone(), v.clone());
        }
        m.insert("updatedAt".into(), self.render_ts(r.updated_ms));
        m.insert("version".into(), Value::from(r.version));
        if r.deleted {
            m.insert("deleted".into(), Value::Bool(true));
        }
        Value::Object(m)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Record> {
        self.records.get(key)
    }

    /// Records (live or tombstones) sorted by id.
    pub(crate) fn sorted(&self, deleted: bool) -> Vec<Value> {
        let mut v: Vec<(&String, &Record)> = self
            .records
            .iter()
            .filter(|(_, r)| r.deleted == deleted)
            .collect();
        v.sort_by(|a, b| cmp_keys(a.0, b.0));
        v.into_iter().map(|(_, r)| self.render(r)).collect()
    }

    /// Replaces the options; a new timestamp unit reorders the index.
    pub(crate) fn set_config(&mut self, config: CollectionConfig) {
        let reorder = config.timestamps != self.config.timestamps;
        self.config = config;
        if reorder {
            self.order.clear();
            self.dead.clear();
            self.all_counts.clear();
            self.dead_counts.clear();
            let keys: Vec<String> = self.records.keys().cloned().collect();
            for key in keys {
                self.index(&key);
            }
        }
    }

    /// Drops a record's place from the index (before its timestamp or state changes).
    fn unindex(&mut self, key: &str) {
        if let Some(r) = self.records.get(key) {
            let place = (self.unit(r.updated_ms), IdRank::of(key));
            if r.deleted {
                self.dead.remove(&place);
                self.dead_counts.remove(place.0);
            }
            self.all_counts.remove(place.0);
            self.order.remove(&place);
        }
    }

    /// Adds a record's current place to the index.
    fn index(&mut self, key: &str) {
        if let Some(r) = self.records.get(key) {
            let place = (self.unit(r.updated_ms), IdRank::of(key));
            if r.deleted {
                self.dead.insert(place.clone());
                self.dead_counts.add(place.0);
            }
            self.all_counts.add(place.0);
            self.order.insert(place);
        }
    }

    /// Notes a record's new state for the change history.
    fn note(&mut self, key: &str) {
        if let Some(r) = self.records.get(key) {
            let rendered = self.render(r);
            self.changed.push((key.to_owned(), rendered));
        }
    }

    /// One page of a feed in `(updatedAt, id)` order: `total` counts the rows matching the
    /// filters, then the page starts at `from`, skips `skip` rows and holds `limit`.
    pub(crate) fn feed(&self, q: &FeedQuery<'_>) -> FeedPage<'_> {
        let empty = FeedPage {
            total: 0,
            rows: Vec::new(),
            has_more: false,
        };
        let Some((ts_lo, ts_hi)) = q.ts.filter(|(lo, hi)| lo <= hi) else {
            return empty;
        };
        if q.by_id {
            return self.feed_by_id(q, ts_lo, ts_hi);
        }
        let lo: Place = (ts_lo, IdRank::min());
        let hi: Bound<Place> = match ts_hi.checked_add(1) {
            Some(t) => Bound::Excluded((t, IdRank::min())),
            None => Bound::Unbounded,
        };
        let wanted = |r: &Record| match q.which {
            Which::All => true,
            Which::Live => !r.deleted,
            Which::Dead => r.deleted,
        };
        let start = q.from.as_ref().map(|f| f.max(&lo).clone());
        let below_hi = |p: &Place| match &hi {
            Bound::Excluded(h) => p < h,
            _ => true,
        };
        let (total, positioned): (usize, Box<dyn Iterator<Item = &Place> + '_>) = match q.ids {
            // A few named ids: look each one up instead of scanning.
            Some(ids) => {
                let places: BTreeSet<Place> = ids
                    .iter()
                    .filter_map(|k| self.records.get_key_value(k.as_str()))
                    .filter(|(_, r)| wanted(r))
                    .map(|(k, r)| (self.unit(r.updated_ms), IdRank::of(k)))
                    .filter(|p| *p >= lo && below_hi(p))
                    .collect();
                let total = places.len();
                let rows: Vec<&Place> = match &start {
                    Some(s) => places
                        .iter()
                        .filter(|p| *p >= s)
                        .filter_map(|p| self.order.get(p))
                        .collect(),
                    None => Vec::new(),
                };
                (total, Box::new(rows.into_iter()))
            }
            None => {
                let set = if q.which == Which::Dead {
                    &self.dead
                } else {
                    &self.order
                };
                let total = match q.which {
                    Which::All => self.all_counts.within(ts_lo, ts_hi),
                    Which::Dead => self.dead_counts.within(ts_lo, ts_hi),
                    Which::Live => self
                        .all_counts
                        .within(ts_lo, ts_hi)
                        .saturating_sub(self.dead_counts.within(ts_lo, ts_hi)),
                };
                let rows: Box<dyn Iterator<Item = &Place> + '_> = match start {
                    // `range` panics on a start above its end.
                    Some(s) if below_hi(&s) => Box::new(set.range((Bound::Included(s), hi))),
                    _ => Box::new(std::iter::empty()),
                };
                (total, rows)
            }
        };
        let mut rows: Vec<(i64, &str, &Record)> = positioned
            .filter_map(|(ts, rank)| {
                self.records
                    .get_key_value(rank.key())
                    .map(|(k, r)| (*ts, k.as_str(), r))
            })
            .filter(|(_, _, r)| wanted(r))
            .skip(q.skip)
            .take(q.limit.saturating_add(1))
            .collect();
        let has_more = rows.len() > q.limit;
        rows.truncate(q.limit);
        FeedPage {
            total,
            rows,
            has_more,
        }
    }

    /// A feed page in `(id, updatedAt)` order: a full scan and sort (positions do not apply).
    fn feed_by_id(&self, q: &FeedQuery<'_>, ts_lo: i64, ts_hi: i64) -> FeedPage<'_> {
        let mut rows: Vec<(i64, &str, &Record)> = self
            .records
            .iter()
            .filter(|(_, r)| match q.which {
                Which::All => true,
                Which::Live => !r.deleted,
                Which::Dead => r.deleted,
            })
            .filter(|(k, _)| q.ids.is_none_or(|ids| ids.iter().any(|i| i == *k)))
            .map(|(k, r)| (self.unit(r.updated_ms), k.as_str(), r))
            .filter(|(ts, _, _)| (ts_lo..=ts_hi).contains(ts))
            .collect();
        rows.sort_by(|a, b| cmp_keys(a.1, b.1).then(a.0.cmp(&b.0)));
        let total = rows.len();
        let mut rows: Vec<_> = rows
            .into_iter()
            .skip(q.skip)
            .take(q.limit.saturating_add(1))
            .collect();
        let has_more = rows.len() > q.limit;
        rows.truncate(q.limit);
        FeedPage {
            total,
            rows,
            has_more,
        }
    }

    /// Counts a change-feed page served and, per [`CollectionConfig::edit_during_pulls`],
    /// edits the live record that comes first. Returns its key when it did.
    pub(crate) fn page_served(&mut self, now: i64) -> Option<String> {
        let every = self.config.edit_during_pulls?;
        self.pages_served = self.pages_served.saturating_add(1);
        if !self.pages_served.is_multiple_of(every) {
            return None;
        }
        let key = self
            .order
            .iter()
            .map(|(_, rank)| rank.key())
            .find(|k| self.records.get(*k).is_some_and(|r| !r.deleted))?
            .to_owned();
        let edits = self
            .records
            .get(&key)
            .and_then(|r| r.fields.get("serverEdits"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut fields = Map::new();
        fields.insert("serverEdits".into(), Value::from(edits + 1));
        let body = Body {
            fields,
            id: None,
            version: None,
            deleted: false,
        };
        let reply = self.patch(&key, body, &Pre::default(), now);
        (reply.status == StatusCode::OK).then_some(key)
    }

    pub(crate) fn create_count(&self, key: &str) -> usize {
        self.creates.get(key).copied().unwrap_or(0)
    }

    fn next_server_id(&mut self) -> (String, Value) {
        loop {
            let n = self.next_server_id;
            self.next_server_id = self.next_server_id.saturating_add(1);
            let key = n.to_string();
            if !self.records.contains_key(&key) {
                return (key, Value::from(n));
            }
        }
    }

    /// Chooses the key and JSON id of a new record.
    fn new_id(&mut self, client_id: Option<Value>) -> Result<(String, Value), String> {
        if self.config.server_ids {
            return Ok(self.next_server_id());
        }
        match client_id {
            Some(id) => Ok((key_from_json(&id)?, id)),
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                Ok((id.clone(), Value::String(id)))
            }
        }
    }

    fn record_reply(&self, status: StatusCode, r: &Record) -> Reply {
        Reply::json(status, self.render(r)).header(ETAG, &etag(r.version))
    }

    fn missing(&self, key: &str) -> Reply {
        match self.records.get(key) {
            Some(r) if r.deleted => Reply::json(
                StatusCode::NOT_FOUND,
                json!({ "error": "not found", "deleted": true }),
            ),
            _ => Reply::not_found(),
        }
    }

    fn check(&self, rec: Option<&Record>, pre: &Pre) -> Result<(), Reply> {
        match self.config.concurrency {
            Concurrency::Standard => self.check_standard(rec, pre),
            Concurrency::BareIfMatch404 => match &pre.if_match {
                Some(im) if !rec.is_some_and(|r| im.trim().parse::<u64>() == Ok(r.version)) => {
                    Err(Reply::not_found())
                }
                _ => Ok(()),
            },
            Concurrency::Unchecked => Ok(()),
            Concurrency::Conflict400 => self.check_standard(rec, pre).map_err(|_| {
                Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!({ "errors": ["version conflict"] }),
                )
            }),
        }
    }

    /// The version a write leaves: bumped, or (when the client owns versions) the one sent.
    fn next_version(&self, current: u64, sent: Option<u64>) -> u64 {
        match self.config.concurrency {
            Concurrency::BareIfMatch404 => sent.unwrap_or(current),
            _ => current.saturating_add(1),
        }
    }

    fn check_standard(&self, rec: Option<&Record>, pre: &Pre) -> Result<(), Reply> {
        if let Some(im) = &pre.if_match
            && !rec.is_some_and(|r| etag_matches(im, r))
        {
            return Err(Reply::conflict(
                StatusCode::PRECONDITION_FAILED,
                "precondition failed",
                rec.map(|r| self.render(r)),
            ));
        }
        if let Some(v) = pre.version
            && rec.map_or(0, |r| r.version) != v
        {
            return Err(Reply::conflict(
                StatusCode::CONFLICT,
                "version conflict",
                rec.map(|r| self.render(r)),
            ));
        }
        Ok(())
    }

    fn insert_new(
        &mut self,
        key: String,
        id: Value,
        fields: Map<String, Value>,
        now: i64,
    ) -> Reply {
        let rec = Record {
            id,
            fields,
            updated_ms: now,
            version: 1,
            deleted: false,
        };
        let reply = self.record_reply(StatusCode::CREATED, &rec).header(
            LOCATION,
            &format!("/api/{}/{}", encode(&self.name), encode(&key)),
        );
        *self.creates.entry(key.clone()).or_insert(0) += 1;
        self.unindex(&key);
        self.records.insert(key.clone(), rec);
        self.index(&key);
        self.note(&key);
        reply
    }

    /// Whether `key` names a record: `Some(true)` live, `Some(false)` a tombstone.
    pub(crate) fn holds(&self, key: &str) -> Option<bool> {
        self.records.get(key).map(|r| !r.deleted)
    }

    /// POST: creates; 409 `exists` if the id is taken (also by a tombstone).
    pub(crate) fn create(&mut self, body: Body, now: i64) -> Reply {
        if self.config.server_ids && self.config.refuse_client_ids && body.id.is_some() {
            return Reply::bad_request("`id` is assigned by the server: leave it out");
        }
        let (key, id) = match self.new_id(body.id) {
            Ok(v) => v,
            Err(e) => return Reply::bad_request(e),
        };
        if let Some(cur) = self.records.get(&key) {
            if cur.deleted && self.config.duplicate_id_500 {
                return Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "duplicate id");
            }
            return Reply::conflict(StatusCode::CONFLICT, "exists", Some(self.render(cur)));
        }
        let sent = body.version;
        let reply = self.insert_new(key.clone(), id, body.fields, now);
        self.own_version(&key, sent, reply)
    }

    /// When the client owns versions, a new record takes the version it was sent with.
    fn own_version(&mut self, key: &str, sent: Option<u64>, reply: Reply) -> Reply {
        if self.config.concurrency != Concurrency::BareIfMatch404 {
            return reply;
        }
        let Some(v) = sent else { return reply };
        let Some(rec) = self.records.get_mut(key) else {
            return reply;
        };
        rec.version = v;
        let rec = rec.clone();
        self.record_reply(reply.status, &rec)
    }

    /// PUT: full replace of a record (reviving a tombstone), or create (upsert).
    pub(crate) fn replace(&mut self, key: &str, body: Body, pre: &Pre, now: i64) -> Reply {
        if let Err(r) = check_body_id(&body, key) {
            return r;
        }
        if let Err(r) = self.check(self.records.get(key), pre) {
            return r;
        }
        if body.deleted && self.config.client_tombstones {
            return match self.records.get(key) {
                Some(rec) if !rec.deleted => self.tombstone(key, now),
                _ => self.missing(key),
            };
        }
        self.unindex(key);
        let sent = body.version;
        let next = self
            .records
            .get(key)
            .map(|r| self.next_version(r.version, sent));
        match self.records.get_mut(key) {
            Some(rec) => {
                rec.fields = body.fields;
                rec.version = next.unwrap_or(rec.version);
                rec.updated_ms = now;
                rec.deleted = false;
                let rec = rec.clone();
                self.index(key);
                self.note(key);
                self.record_reply(StatusCode::OK, &rec)
            }
            None if self.config.server_ids => Reply::not_found(),
            None => {
                let id = body.id.unwrap_or_else(|| id_json_from_key(key));
                let reply = self.insert_new(key.to_owned(), id, body.fields, now);
                self.own_version(key, sent, reply)
            }
        }
    }

    /// PATCH: shallow merge of top-level fields into a live record.
    pub(crate) fn patch(&mut self, key: &str, body: Body, pre: &Pre, now: i64) -> Reply {
        if let Err(r) = check_body_id(&body, key) {
            return r;
        }
        let unchecked = self.config.concurrency == Concurrency::Unchecked;
        let Some(rec) = self.records.get(key).filter(|r| !r.deleted || unchecked) else {
            return self.missing(key);
        };
        if let Err(r) = self.check(Some(rec), pre) {
            return r;
        }
        if body.deleted && self.config.client_tombstones {
            return self.tombstone(key, now);
        }
        let next = self.next_version(rec.version, body.version);
        self.unindex(key);
        let Some(rec) = self.records.get_mut(key) else {
            return Reply::not_found();
        };
        for (k, v) in body.fields {
            rec.fields.insert(k, v);
        }
        rec.version = next;
        rec.updated_ms = now;
        let rec = rec.clone();
        self.index(key);
        self.note(key);
        self.record_reply(StatusCode::OK, &rec)
    }

    /// DELETE: soft delete (tombstone) of a live record, or its removal for good with
    /// [`CollectionConfig::hard_deletes`].
    pub(crate) fn delete(&mut self, key: &str, pre: &Pre, now: i64) -> Reply {
        let Some(rec) = self.records.get(key).filter(|r| !r.deleted) else {
            return self.missing(key);
        };
        if let Err(r) = self.check(Some(rec), pre) {
            return r;
        }
        let next = self.next_version(rec.version, None);
        self.unindex(key);
        if self.config.hard_deletes {
            self.records.remove(key);
            return Reply::empty(StatusCode::NO_CONTENT);
        }
        if let Some(rec) = self.records.get_mut(key) {
            rec.deleted = true;
            rec.version = next;
            rec.updated_ms = now;
        }
        self.index(key);
        self.note(key);
        Reply::empty(StatusCode::NO_CONTENT)
    }

    /// A client's soft delete (a write setting `deleted`): the record becomes a tombstone;
    /// answers it (200).
    fn tombstone(&mut self, key: &str, now: i64) -> Reply {
        self.unindex(key);
        let Some(rec) = self.records.get_mut(key) else {
            return Reply::not_found();
        };
        rec.deleted = true;
        rec.version += 1;
        rec.updated_ms = now;
        let rec = rec.clone();
        self.index(key);
        self.record_reply(StatusCode::OK, &rec)
    }

    /// A conditional write by query (`where.id.eq=…&where.version.eq=…`), as SQL-backed APIs
    /// do it: the rows matching the filter are written and returned as an array, so a stale
    /// version matches nothing and answers 200 with `[]`. `fields` replaces the record's
    /// fields (an update), `None` soft-deletes it.
    pub(crate) fn write_where(
        &mut self,
        key: &str,
        version: Option<u64>,
        fields: Option<Map<String, Value>>,
        now: i64,
    ) -> Reply {
        let matches = self
            .records
            .get(key)
            .is_some_and(|r| !r.deleted && version.is_none_or(|v| v == r.version));
        if !matches {
            return Reply::json(StatusCode::OK, json!([]));
        }
        self.unindex(key);
        let Some(rec) = self.records.get_mut(key) else {
            return Reply::json(StatusCode::OK, json!([]));
        };
        match fields {
            Some(fields) => rec.fields = fields,
            None => rec.deleted = true,
        }
        rec.version = rec.version.saturating_add(1);
        rec.updated_ms = now;
        let rec = rec.clone();
        self.index(key);
        Reply::json(StatusCode::OK, json!([self.render(&rec)]))
    }

    /// Inspection-API upsert: creates or replaces, no preconditions. Returns the record.
    pub(crate) fn upsert_direct(&mut self, body: Body, now: i64) -> Result<Value, String> {
        let key = match &body.id {
            Some(id) => key_from_json(id)?,
            None => {
                let (key, id) = self.new_id(None)?;
                self.insert_new(key.clone(), id, body.fields, now);
                return self.live_json(&key);
            }
        };
        if self.records.contains_key(&key) {
            self.replace(&key, body, &Pre::default(), now);
        } else {
            let id = body.id.unwrap_or_else(|| id_json_from_key(&key));
            self.insert_new(key.clone(), id, body.fields, now);
        }
        self.live_json(&key)
    }

    /// The rendered live record.
    pub(crate) fn live_json(&self, key: &str) -> Result<Value, String> {
        match self.records.get(key) {
            Some(r) if !r.deleted => Ok(self.render(r)),
            _ => Err(format!("no live record `{key}`")),
        }
    }

    /// The rendered record, live or tombstone.
    pub(crate) fn any_json(&self, key: &str) -> Option<Value> {
        self.records.get(key).map(|r| self.render(r))
    }
}
