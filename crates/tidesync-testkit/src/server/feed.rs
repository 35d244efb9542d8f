//! The pull endpoints: `GET /api/{c}` (changed records, tombstones included) and
//! `GET /api/{c}/deleted` (deleted ids). Filters, then position, then one page, rendered in an
//! envelope (or bare) with `Link`, `X-Total-Count`, `X-Has-More` and `X-Next-Cursor` headers.

use axum::http::StatusCode;
use axum::http::header::{HeaderName, LINK};
use serde_json::{Value, json};

use super::collection::Collection;
use super::pagination::{encode_cursor, is_after, next_query, parse_paging};
use super::query::{Tombstones, encode_pairs, param, parse_filters};
use super::reply::Reply;

/// Which feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// Records ordered by `(updatedAt, id)`.
    Records,
    /// `{"id", "deletedAt"}` of tombstones, ordered by `(deletedAt, id)`.
    Deleted,
}

/// Where a `Link` points: `origin` (`http://host:port`) is `None` for relative links.
#[derive(Clone, Debug)]
pub(crate) struct LinkBase {
    pub(crate) origin: Option<String>,
    pub(crate) path: String,
}

impl LinkBase {
    pub(crate) fn url(&self, query: &str) -> String {
        let origin = self.origin.as_deref().unwrap_or("");
        if query.is_empty() {
            format!("{origin}{}", self.path)
        } else {
            format!("{origin}{}?{query}", self.path)
        }
    }
}

/// Whether the request asked for a bare JSON array.
fn bare(pairs: &[(String, String)]) -> bool {
    matches!(param(pairs, "envelope"), Some("none" | "false" | "bare"))
}

/// Answers a pull.
pub(crate) fn list(
    coll: &Collection,
    feed: Feed,
    pairs: &[(String, String)],
    base: &LinkBase,
) -> Reply {
    let filters = match parse_filters(coll, pairs) {
        Ok(f) => f,
        Err(e) => return Reply::bad_request(e),
    };
    let paging = match parse_paging(coll, pairs) {
        Ok(p) => p,
        Err(e) => return Reply::bad_request(e),
    };
    let rows: Vec<_> = coll
        .rows()
        .into_iter()
        .filter(|(_, _, r)| match (feed, filters.tombstones) {
            (Feed::Deleted, _) | (Feed::Records, Tombstones::Only) => r.deleted,
            (Feed::Records, Tombstones::Exclude) => !r.deleted,
            (Feed::Records, Tombstones::Include) => true,
        })
        .filter(|(_, k, _)| {
            filters
                .ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == k))
        })
        .filter(|(ts, _, _)| filters.ts.iter().all(|(cmp, v)| cmp.holds(*ts, *v)))
        .collect();
    let total = rows.len();
    let positioned: Vec<_> = rows
        .into_iter()
        .filter(|(ts, k, _)| paging.after.as_ref().is_none_or(|p| is_after(*ts, k, p)))
        .filter(|(ts, k, _)| match &paging.cursor {
            Some(Some(p)) => is_after(*ts, k, p),
            _ => true,
        })
        .collect();
    let end = paging.skip.saturating_add(paging.limit);
    let has_more = positioned.len() > end;
    let page = positioned
        .get(paging.skip.min(positioned.len())..end.min(positioned.len()))
        .unwrap_or(&[]);
    let items: Vec<Value> = page
        .iter()
        .map(|(_, _, r)| match feed {
            Feed::Records => coll.render(r),
            Feed::Deleted => json!({ "id": r.id, "deletedAt": coll.render_ts(r.updated_ms) }),
        })
        .collect();
    let last = page.last().filter(|_| has_more).map(|(ts, k, _)| (*ts, *k));
    let next_cursor = last.map(|l| encode_cursor(Some(l)));
    let mut reply = if bare(pairs) {
        Reply::json(StatusCode::OK, Value::Array(items))
    } else {
        Reply::json(
            StatusCode::OK,
            json!({ "data": items, "hasMore": has_more, "total": total, "nextCursor": next_cursor }),
        )
    };
    reply = reply
        .header(HeaderName::from_static("x-total-count"), &total.to_string())
        .header(HeaderName::from_static("x-has-more"), &has_more.to_string());
    if let (Some(last), Some(cursor)) = (last, &next_cursor) {
        let next = encode_pairs(&next_query(coll, pairs, &paging, last));
        reply = reply
            .header(LINK, &format!("<{}>; rel=\"next\"", base.url(&next)))
            .header(HeaderName::from_static("x-next-cursor"), cursor);
    }
    reply
}
