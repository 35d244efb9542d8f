//! Pull specifications: the change feed of a table (and its optional deleted-ids feed).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::{Error, Result};

use crate::pointer::{self, Pointer};
use crate::query::QueryParams;
use crate::routes::{Headers, check_template};
use crate::template::Template;
use crate::time::TimeFormat;

/// Placeholders every feed template may use; they always have a value.
pub const FEED_ALWAYS: &[&str] = &["limit", "offset", "page"];
/// Placeholders that may be absent (first sync, first page): only usable in `query` entries,
/// which are left out of the request when one of their placeholders has no value.
pub const FEED_OPTIONAL: &[&str] = &["cursor", "after_key", "token", "since_token"];

/// What the API's checkpoint filter does with `{cursor}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// No change filter: every pull walks the whole list.
    #[default]
    None,
    /// `cursor_field > {cursor}` (`updated_after=`, `updated_at=gt.`, `filter=(updated > …)`).
    /// A page that ends inside a group of records sharing one timestamp is cut before that
    /// group, which is fetched whole by the next request (the limit grows if one group fills
    /// a page), so ties at a page boundary are never skipped.
    Exclusive,
    /// `cursor_field >= {cursor}` (`updatedAt_gte=`): the keys already seen at the checkpoint
    /// timestamp are remembered and skipped, and the limit is raised by their number.
    Inclusive,
    /// `(cursor_field, key) > ({cursor}, {after_key})`: a compound keyset filter.
    Keyset,
}

/// How pages are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageStyle {
    /// Only a limit: each request starts from the latest checkpoint (needs a filter to
    /// advance; without one, a pull is a single request).
    #[default]
    None,
    /// `{offset}` + `{limit}`.
    Offset,
    /// `{page}` + `{limit}` (page numbers start at `first_page`).
    Page,
    /// A next-page token from the body (pointer `next`), sent back as `{token}`.
    Token,
    /// The `Link: <…>; rel="next"` response header (a link to another origin is rewritten
    /// onto `base_url` unless `foreign_links` says otherwise). Only this style reads `Link`.
    Link,
}

/// Pagination and end-of-data signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    /// How pages are walked.
    #[serde(default)]
    pub style: PageStyle,
    /// A boolean "more pages follow" field (e.g. `/hasMore`); when present it decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<Pointer>,
    /// A total count field (e.g. `/total`): with offset/page walking, the end is reached when
    /// that many items were read. Also reported as `PullPage.total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Pointer>,
    /// Token style: where the next-page token is (e.g. `/nextCursor`); null or missing ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Pointer>,
    /// Page style: the number of the first page (default 1).
    #[serde(default = "default_first_page")]
    pub first_page: u64,
    /// Link style: what to do with a next link to another origin than `base_url` (a proxy
    /// that rewrites `Host`, an internal host name): `rewrite` it onto `base_url` (default),
    /// `follow` it (credentials go there too), or `refuse` it (an error).
    #[serde(default, skip_serializing_if = "ForeignLinks::is_default")]
    pub foreign_links: ForeignLinks,
}

/// What a link walk does with a next link to another origin than `base_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignLinks {
    /// Keep the link's path and query, on `base_url`'s scheme, host and port.
    #[default]
    Rewrite,
    /// Follow it as it is (the auth headers are sent there too).
    Follow,
    /// Refuse it: the pull fails with a `Permanent` error (nothing is stored).
    Refuse,
}

impl ForeignLinks {
    fn is_default(&self) -> bool {
        *self == ForeignLinks::Rewrite
    }
}

fn default_first_page() -> u64 {
    1
}

impl Default for Pagination {
    fn default() -> Self {
        Pagination {
            style: PageStyle::None,
            has_more: None,
            total: None,
            next: None,
            first_page: 1,
            foreign_links: ForeignLinks::Rewrite,
        }
    }
}

impl Pagination {
    /// Limit only.
    pub fn none() -> Self {
        Pagination::default()
    }

    /// `{offset}` + `{limit}`.
    pub fn offset() -> Self {
        Pagination {
            style: PageStyle::Offset,
            ..Pagination::default()
        }
    }

    /// `{page}` + `{limit}`, pages numbered from `first_page`.
    pub fn page(first_page: u64) -> Self {
        Pagination {
            style: PageStyle::Page,
            first_page,
            ..Pagination::default()
        }
    }

    /// A next-page token at `next` (a JSON pointer), sent back as `{token}`.
    pub fn token(next: &str) -> Self {
        Pagination {
            style: PageStyle::Token,
            next: Some(pointer::lenient(next)),
            ..Pagination::default()
        }
    }

    /// The `Link rel="next"` header.
    pub fn link() -> Self {
        Pagination {
            style: PageStyle::Link,
            ..Pagination::default()
        }
    }

    /// A boolean "more pages" field.
    pub fn has_more(mut self, pointer: &str) -> Self {
        self.has_more = Some(pointer::lenient(pointer));
        self
    }

    /// A total-count field.
    pub fn total(mut self, pointer: &str) -> Self {
        self.total = Some(pointer::lenient(pointer));
        self
    }

    /// What a link walk does with a next link to another origin.
    pub fn foreign_links(mut self, policy: ForeignLinks) -> Self {
        self.foreign_links = policy;
        self
    }
}

/// A tombstone flag: a pulled record whose `field` equals `value` is a server delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstone {
    /// The flag field (e.g. `deleted`).
    pub field: String,
    /// The value meaning "deleted" (default `true`).
    #[serde(default = "default_tombstone_value")]
    pub value: Value,
}

fn default_tombstone_value() -> Value {
    Value::Bool(true)
}

/// A pull feed: the table's change feed or its deleted-ids feed.
///
/// Items must come ordered by `cursor_field` ascending (then key) whenever a filter is used
/// with `pagination.style = "none"`; with offset/page/token/link walking the order only needs
/// to be stable during one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// URL template (GET). Placeholders: `{limit}`, `{offset}`, `{page}` only.
    pub url: Template,
    /// Query parameters (name → value template, URL-encoded), sent in the order written. A
    /// parameter whose template uses a placeholder without a value (`{cursor}` on a first
    /// sync, `{token}` on a first page, …) is left out.
    #[serde(default, skip_serializing_if = "QueryParams::is_empty")]
    pub query: QueryParams,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Where the item list is: `""` (default) for a bare array, `/data` for an envelope.
    #[serde(default)]
    pub items: Pointer,
    /// The key field of items (default: the table's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The field holding each item's change timestamp (e.g. `updatedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_field: Option<String>,
    /// How `cursor_field` values are written (default `epoch_ms`).
    #[serde(default)]
    pub timestamp: TimeFormat,
    /// How `{cursor}` is written in the request (default: like `timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_format: Option<TimeFormat>,
    /// What the API's filter does with `{cursor}`.
    #[serde(default)]
    pub filter: Filter,
    /// Pagination and end signals.
    #[serde(default)]
    pub pagination: Pagination,
    /// A tombstone flag (change feed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
    /// A separate deleted-ids feed (change feed only); its items are objects with the key (and
    /// `cursor_field`) or bare keys. It is walked before the change feed on every pull cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Box<Feed>>,
    /// An opaque checkpoint token the server returns (e.g. `/syncToken`), stored as-is and
    /// sent back as `{since_token}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_token: Option<Pointer>,
}

impl Feed {
    /// `GET url`, bare-array items, no filter, no pagination.
    pub fn get(url: &str) -> Self {
        Feed {
            url: Template::lenient(url),
            query: QueryParams::new(),
            headers: Headers::default(),
            items: Pointer::root(),
            key: None,
            cursor_field: None,
            timestamp: TimeFormat::EpochMs,
            cursor_format: None,
            filter: Filter::None,
            pagination: Pagination::default(),
            tombstone: None,
            deleted: None,
            since_token: None,
        }
    }

    /// Adds a query parameter (`value` is a template); parameters go out in the order added.
    pub fn query(mut self, name: impl Into<String>, value: &str) -> Self {
        self.query.insert(name.into(), Template::lenient(value));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Where the item list is (JSON pointer).
    pub fn items(mut self, pointer: &str) -> Self {
        self.items = pointer::lenient(pointer);
        self
    }

    /// The key field of items.
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = Some(field.into());
        self
    }

    /// The change-timestamp field and its format.
    pub fn cursor_field(mut self, field: impl Into<String>, format: TimeFormat) -> Self {
        self.cursor_field = Some(field.into());
        self.timestamp = format;
        self
    }

    /// How `{cursor}` is written.
    pub fn cursor_format(mut self, format: TimeFormat) -> Self {
        self.cursor_format = Some(format);
        self
    }

    /// The filter semantics.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Pagination.
    pub fn pagination(mut self, pagination: Pagination) -> Self {
        self.pagination = pagination;
        self
    }

    /// Tombstone flag `field == true`.
    pub fn tombstone(self, field: impl Into<String>) -> Self {
        self.tombstone_value(field, Value::Bool(true))
    }

    /// Tombstone flag `field == value`.
    pub fn tombstone_value(mut self, field: impl Into<String>, value: Value) -> Self {
        self.tombstone = Some(Tombstone {
            field: field.into(),
            value,
        });
        self
    }

    /// A separate deleted-ids feed.
    pub fn deleted_feed(mut self, feed: Feed) -> Self {
        self.deleted = Some(Box::new(feed));
        self
    }

    /// An opaque checkpoint token at `pointer`.
    pub fn since_token(mut self, pointer: &str) -> Self {
        self.since_token = Some(pointer::lenient(pointer));
        self
    }

    /// The format `{cursor}` is rendered in.
    pub(crate) fn cursor_format_or_default(&self) -> TimeFormat {
        self.cursor_format.unwrap_or(self.timestamp)
    }

    fn uses(&self, name: &str) -> bool {
        self.url.uses(name) || self.query.values().any(|t| t.uses(name))
    }

    /// Whether `{limit}` reaches the server (else a short page means nothing).
    pub(crate) fn sends_limit(&self) -> bool {
        self.uses("limit")
    }

    /// Checks the feed; `top` is false for a nested deleted-ids feed.
    pub(crate) fn validate(&self, table: &str, at: &str, top: bool) -> Result<()> {
        let cfg = |msg: String| Error::config(format!("{at}: {msg}")).table(table);
        check_template(table, at, "url", &self.url, |n| FEED_ALWAYS.contains(&n)).map_err(|e| {
            let e = e.setting(["url"]);
            if e.field_name().is_some_and(|f| FEED_OPTIONAL.contains(&f)) {
                e.excerpt(
                    "placeholders that can be absent (cursor, after_key, token, \
                         since_token) belong in `query` entries, which are left out when absent",
                )
            } else {
                e
            }
        })?;
        for (name, template) in &self.query {
            if name.is_empty() {
                return Err(cfg("empty query parameter name".into()).setting(["query"]));
            }
            check_template(table, at, &format!("query `{name}`"), template, |n| {
                FEED_ALWAYS.contains(&n) || FEED_OPTIONAL.contains(&n)
            })
            .map_err(|e| e.setting(["query", name]))?;
        }
        self.headers
            .validate(table, at)
            .map_err(|e| e.within("headers"))?;
        for (what, p) in [
            ("items", Some(&self.items)),
            ("pagination.has_more", self.pagination.has_more.as_ref()),
            ("pagination.total", self.pagination.total.as_ref()),
            ("pagination.next", self.pagination.next.as_ref()),
            ("since_token", self.since_token.as_ref()),
        ] {
            if let Some(p) = p {
                pointer::check(p)
                    .map_err(|e| cfg(format!("{what}: {e}")).setting(what.split('.')))?;
            }
        }
        if self.key.as_deref() == Some("") {
            return Err(cfg("empty field name".into()).setting(["key"]));
        }
        if self.cursor_field.as_deref() == Some("") {
            return Err(cfg("empty field name".into()).setting(["cursor_field"]));
        }
        if self.filter != Filter::None {
            if self.cursor_field.is_none() {
                return Err(cfg(format!(
                    "filter `{:?}` needs `cursor_field` (the record's change timestamp)",
                    self.filter
                ))
                .field("cursor_field")
                .setting(["cursor_field"]));
            }
            if !self.uses("cursor") {
                return Err(
                    cfg("a filter is set but no template uses `{cursor}`; add e.g. \
                     query `updated_after = \"{cursor}\"`"
                        .into())
                    .field("cursor")
                    .setting(["query"]),
                );
            }
        } else if self.uses("cursor") || self.uses("after_key") {
            return Err(cfg(
                "`{cursor}` is used but `filter` is `none`; say what the filter does \
                 (`exclusive`, `inclusive` or `keyset`)"
                    .into(),
            )
            .field("filter")
            .setting(["filter"]));
        }
        if self.filter == Filter::Keyset {
            if !self.uses("after_key") {
                return Err(
                    cfg("keyset filter needs `{after_key}` in a query entry".into())
                        .field("after_key")
                        .setting(["query"]),
                );
            }
            if self.pagination.style != PageStyle::None {
                return Err(cfg(
                    "keyset filter is its own pagination; use pagination style `none`".into(),
                )
                .field("pagination")
                .setting(["pagination", "style"]));
            }
        }
        let need = |placeholder: &str, style: &str| -> Result<()> {
            if self.uses(placeholder) {
                Ok(())
            } else {
                Err(cfg(format!(
                    "pagination style `{style}` needs `{{{placeholder}}}` in the url or a \
                     query entry"
                ))
                .field(placeholder.to_owned())
                .setting(["pagination"]))
            }
        };
        match self.pagination.style {
            PageStyle::None | PageStyle::Link => {}
            PageStyle::Offset => need("offset", "offset")?,
            PageStyle::Page => need("page", "page")?,
            PageStyle::Token => {
                need("token", "token")?;
                if self.pagination.next.is_none() {
                    return Err(cfg(
                        "pagination style `token` needs `next` (where the token is)".into()
                    )
                    .field("pagination.next")
                    .setting(["pagination", "next"]));
                }
            }
        }
        if self.uses("token") && self.pagination.style != PageStyle::Token {
            return Err(
                cfg("`{token}` is only set by pagination style `token`".into())
                    .field("token")
                    .setting(["pagination", "style"]),
            );
        }
        if self.uses("since_token") && self.since_token.is_none() {
            return Err(
                cfg("`{since_token}` needs `since_token` (where it is)".into())
                    .field("since_token")
                    .setting(["since_token"]),
            );
        }
        if let Some(t) = &self.tombstone {
            if !top {
                return Err(
                    cfg("a deleted-ids feed cannot have a tombstone flag".into())
                        .setting(["tombstone"]),
                );
            }
            if t.field.is_empty() {
                return Err(cfg("tombstone.field is empty".into()).setting(["tombstone", "field"]));
            }
        }
        if let Some(deleted) = &self.deleted {
            if !top {
                return Err(
                    cfg("a deleted-ids feed cannot have its own deleted feed".into())
                        .setting(["deleted"]),
                );
            }
            deleted
                .validate(table, &format!("{at}.deleted"), false)
                .map_err(|e| e.within("deleted"))?;
        }
        Ok(())
    }
}
