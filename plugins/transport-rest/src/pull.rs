//! Pulling: one page of a table's change feed (or deleted-ids feed), and fetching one record.

use serde_json::Value;
use tidesync_core::{Error, ErrorKind, Fetched, Key, PullPage, PullRequest, Result};

use crate::client::{Incoming, Outgoing, RestTransport, unwrap_single};
use crate::cursor::{Phase, TableCursor};
use crate::feed::{Feed, ForeignLinks};
use crate::pagination::{self, FeedCtx, Params, RawPage, WalkMemory};
use crate::template::Value as Slot;

/// Page walks' in-memory state (next links, keys seen) per (table, deleted-ids feed): shared
/// by the clones of a transport, never stored.
pub(crate) type Walks =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, bool), WalkMemory>>>;

/// The `rel="next"` target of a `Link` header value.
pub fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let params_end = after[end..].find('<').map_or(after.len(), |i| end + i);
        let params = &after[end + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            let Some((name, value)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = &after[params_end..];
    }
    None
}

impl RestTransport {
    /// Takes the in-memory state of a table's walk (empty if none); put it back with
    /// `keep_walk_memory` (a concurrent pull of the same feed finds none and walks again).
    fn walk_memory(&self, key: &(String, bool)) -> WalkMemory {
        self.walks
            .lock()
            .ok()
            .and_then(|mut walks| walks.remove(key))
            .unwrap_or_default()
    }

    fn keep_walk_memory(&self, key: (String, bool), mem: WalkMemory) {
        if let Ok(mut walks) = self.walks.lock() {
            if mem.id == 0 {
                walks.remove(&key);
            } else {
                walks.insert(key, mem);
            }
        }
    }

    /// The request URL for one page of `feed`.
    pub(crate) fn feed_url(
        &self,
        table: &str,
        feed: &Feed,
        params: &Params,
    ) -> Result<reqwest::Url> {
        if let Some(next) = &params.next_url {
            let mut url = reqwest::Url::parse(next).map_err(|e| {
                Error::invalid(format!("the next-page link is not a URL: {e}")).table(table)
            })?;
            if !self.same_origin(&url) {
                match feed.pagination.foreign_links {
                    ForeignLinks::Follow => {}
                    ForeignLinks::Refuse => {
                        return Err(Error::new(
                            ErrorKind::Permanent,
                            format!(
                                "the next-page link points to another origin ({}) than \
                                 base_url; not followed (pagination.foreign_links = \
                                 \"refuse\"; \"rewrite\" puts it on base_url)",
                                url.origin().ascii_serialization()
                            ),
                        )
                        .table(table));
                    }
                    ForeignLinks::Rewrite => {
                        tracing::debug!(
                            table,
                            from = %url.origin().ascii_serialization(),
                            "next-page link on another origin rewritten onto base_url"
                        );
                        let rewritten = url.set_scheme(self.base.scheme()).is_ok()
                            && url.set_host(self.base.host_str()).is_ok()
                            && url.set_port(self.base.port()).is_ok();
                        if !rewritten {
                            return Err(Error::new(
                                ErrorKind::Permanent,
                                "the next-page link cannot be rewritten onto base_url",
                            )
                            .table(table));
                        }
                    }
                }
            }
            return Ok(url);
        }
        let lookup =
            |name: &str| -> Result<Slot> { Ok(params.get(name).map_or(Slot::Absent, Slot::Text)) };
        let path = feed.url.render(true, lookup)?.ok_or_else(|| {
            Error::internal("pull url uses a placeholder without a value").table(table)
        })?;
        let mut query = Vec::new();
        for (name, template) in &feed.query {
            if let Some(value) = template.render(false, lookup)? {
                query.push((name.to_owned(), value));
            }
        }
        self.url(&path, &query).map_err(|e| e.table(table))
    }

    fn raw_page(
        &self,
        table: &str,
        feed: &Feed,
        request_url: &reqwest::Url,
        resp: &Incoming,
    ) -> Result<RawPage> {
        let mut body = self.json_body(table, None, resp)?;
        let items = match feed.items.get(&body) {
            Some(Value::Array(_)) => Vec::new(), // moved out below, once the rest is read
            Some(Value::Null) | None if !feed.items.is_root() => {
                return Err(self.decode_error(
                    table,
                    None,
                    resp,
                    format!("no item list at `{}` in the pull response", feed.items),
                ));
            }
            _ => {
                return Err(self.decode_error(
                    table,
                    None,
                    resp,
                    format!("the pull response's `{}` is not an array", feed.items),
                ));
            }
        };
        let p = &feed.pagination;
        let next_token = p
            .next
            .as_ref()
            .and_then(|ptr| ptr.get(&body))
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
            .cloned();
        // Only a link walk reads `Link`: the pagination style alone decides what is followed.
        let next_link = if p.style == crate::feed::PageStyle::Link {
            resp.header("link")
                .and_then(link_next)
                .and_then(|target| request_url.join(&target).ok())
                .map(|u| u.to_string())
        } else {
            None
        };
        let mut page = RawPage {
            items,
            has_more: p
                .has_more
                .as_ref()
                .and_then(|ptr| ptr.get(&body))
                .and_then(Value::as_bool),
            total: p
                .total
                .as_ref()
                .and_then(|ptr| ptr.get(&body))
                .and_then(Value::as_u64),
            next_token,
            next_link,
            since_token: feed
                .since_token
                .as_ref()
                .and_then(|ptr| ptr.get(&body))
                .cloned(),
        };
        // Checked above to be an array.
        if let Some(Value::Array(items)) = feed.items.take(&mut body) {
            page.items = items;
        }
        Ok(page)
    }

    /// One pull step.
    pub(crate) async fn pull_page(&self, request: &PullRequest) -> Result<PullPage> {
        let table = request.table.as_str();
        let routes = self.routes(table)?;
        let feed = routes
            .pull
            .as_ref()
            .ok_or_else(|| Error::config("no pull route configured").table(table))?;
        let mut cursor = TableCursor::load(table, request.cursor.as_ref())?;
        if request.cursor.is_none() && feed.deleted.is_some() {
            // Every cycle reads deletes first, so a delete never lands after a re-create.
            cursor.phase = Phase::Deleted;
        }
        let (active, state, deletes_only) = match (cursor.phase, feed.deleted.as_deref()) {
            (Phase::Deleted, Some(deleted)) => (deleted, &cursor.deleted, true),
            _ => (feed, &cursor.changes, false),
        };
        let key_field = active.key.as_deref().unwrap_or(&routes.key);
        let ctx = FeedCtx {
            feed: active,
            table,
            key_field,
            deletes_only,
        };
        let walk_key = (table.to_owned(), deletes_only);
        let mut mem = self.walk_memory(&walk_key);
        let state = pagination::resume(&ctx, state, &mut mem);
        let params = pagination::plan(&ctx, &state, request.page_size, &mem)?;
        let url = self.feed_url(table, active, &params)?;
        let out = Outgoing {
            method: reqwest::Method::GET,
            url: url.clone(),
            headers: self.headers(&active.headers),
            body: None,
        };
        let resp = self.execute(table, &out).await?;
        if !resp.success() {
            return Err(self.status_error(table, None, Some(routes), &resp));
        }
        let raw = self.raw_page(table, active, &url, &resp)?;
        let step = pagination::advance_walk(&ctx, &state, &params, raw, &mut mem);
        self.keep_walk_memory(walk_key, mem);
        let step = step?;
        let has_more = if deletes_only {
            cursor.deleted = step.state;
            if !step.more {
                cursor.phase = Phase::Changes;
            }
            true
        } else {
            cursor.changes = step.state;
            if !step.more && feed.deleted.is_some() {
                cursor.phase = Phase::Deleted;
            }
            step.more
        };
        tracing::debug!(
            table,
            feed = if deletes_only { "deleted" } else { "changes" },
            records = step.records.len(),
            deleted = step.deleted.len(),
            has_more,
            "tidesync rest pull page"
        );
        Ok(PullPage {
            records: step.records,
            deleted: step.deleted,
            cursor: Some(cursor.to_value()),
            has_more,
            server_time_ms: resp.server_time_ms(),
            total: step.total,
            warnings: step.warnings,
        })
    }

    /// The request of `table`'s fetch route for `key`, and the route.
    pub(crate) fn fetch_request(
        &self,
        table: &str,
        key: &Key,
    ) -> Result<(&crate::FetchRoute, Outgoing)> {
        let routes = self.routes(table)?;
        let route = routes.fetch.as_ref().ok_or_else(|| {
            Error::config("no fetch route configured")
                .table(table)
                .key(key)
        })?;
        let path = route
            .url
            .render::<Error>(true, |_| Ok(Slot::Text(key.to_string())))?
            .unwrap_or_default();
        let out = Outgoing {
            method: reqwest::Method::GET,
            url: self.url(&path, &[]).map_err(|e| e.table(table).key(key))?,
            headers: self.headers(&route.headers),
            body: None,
        };
        Ok((route, out))
    }

    /// Fetches one record.
    pub(crate) async fn fetch_one(&self, table: &str, key: &Key) -> Result<Option<Fetched>> {
        let routes = self.routes(table)?;
        let (route, out) = self.fetch_request(table, key)?;
        let resp = self.execute(table, &out).await.map_err(|e| e.key(key))?;
        if resp.status == 404 {
            return Ok(None);
        }
        if !resp.success() {
            return Err(self.status_error(table, Some(key), Some(routes), &resp));
        }
        let body = self.json_body(table, Some(key), &resp)?;
        let pointer = route.response.clone().unwrap_or_default();
        let found = pointer.get(&body);
        // `[]` (a filtered list with no match) means "not there".
        if matches!(found, Some(Value::Array(items)) if items.is_empty()) {
            return Ok(None);
        }
        let record = found
            .and_then(unwrap_single)
            .and_then(Value::as_object)
            .filter(|r| r.contains_key(&routes.key))
            .ok_or_else(|| {
                self.decode_error(
                    table,
                    Some(key),
                    &resp,
                    format!(
                        "no record with key field `{}` at `{pointer}` in the response",
                        routes.key
                    ),
                )
            })?;
        // An API that answers soft-deleted rows: a tombstone is "not there".
        if crate::client::is_tombstone(routes, record) {
            return Ok(None);
        }
        let version = routes
            .version
            .field
            .as_ref()
            .and_then(|f| record.get(f))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .or_else(|| resp.etag());
        Ok(Some(Fetched {
            record: record.clone(),
            version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_is_found() {
        assert_eq!(
            link_next(r#"<https://x/a?page=2>; rel="next", <https://x/a?page=9>; rel="last""#)
                .as_deref(),
            Some("https://x/a?page=2")
        );
        assert_eq!(
            link_next(r#"</a?page=1>; rel="prev", </a?page=3>; rel="next""#).as_deref(),
            Some("/a?page=3")
        );
        assert_eq!(
            link_next(r#"</a?p=3>; title="x"; rel="last next""#).as_deref(),
            Some("/a?p=3")
        );
        assert_eq!(link_next(r#"</a?page=1>; rel="prev""#), None);
        assert_eq!(link_next("garbage <unclosed"), None);
        assert_eq!(link_next(""), None);
    }
}
