//! The pull endpoints: `GET /api/{c}` (changed records, tombstones included) and
//! `GET /api/{c}/deleted` (deleted ids). Filters, then position, then one page, rendered in an
//! envelope (or bare) with `Link`, `X-Total-Count`, `X-Has-More` and `X-Next-Cursor` headers.

use axum::http::StatusCode;
use axum::http::header::{HeaderName, LINK};
use serde_json::{Value, json};

use super::collection::{Collection, FeedQuery, IdRank, Place, Which};
use super::pagination::{Position, Style, encode_cursor, next_query, parse_paging};
use super::query::{Cmp, Tombstones, encode_pairs, param, parse_filters};
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

/// The first place strictly after a keyset or cursor position; `None` if none can be.
fn first_after(pos: &Position) -> Option<Place> {
    match &pos.1 {
        Some(id) => Some((pos.0, IdRank::of(id).successor())),
        None => pos.0.checked_add(1).map(|ts| (ts, IdRank::min())),
    }
}

/// The inclusive timestamp bounds of the filters; `None` if they exclude every timestamp.
fn ts_bounds(filters: &[(Cmp, i64)]) -> Option<(i64, i64)> {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for &(cmp, v) in filters {
        match cmp {
            Cmp::Gt => lo = lo.max(v.checked_add(1)?),
            Cmp::Gte => lo = lo.max(v),
            Cmp::Lt => hi = hi.min(v.checked_sub(1)?),
            Cmp::Lte => hi = hi.min(v),
            Cmp::Eq => {
                lo = lo.max(v);
                hi = hi.min(v);
            }
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// With [`CollectionConfig::sort_from_params`](super::CollectionConfig::sort_from_params):
/// whether the `orderby.<field>` parameters, read in order, sort by id first (also when none
/// is given: a table without `ORDER BY` answers in key order).
fn sort_by_id(coll: &Collection, pairs: &[(String, String)]) -> Result<bool, String> {
    if !coll.config.sort_from_params {
        return Ok(false);
    }
    let mut first = None;
    for (name, value) in pairs {
        let Some(field) = name.strip_prefix("orderby.") else {
            continue;
        };
        if !matches!(value.as_str(), "" | "asc") {
            return Err(format!("`{name}`: only `asc` is supported, got `{value}`"));
        }
        let by_id = match field {
            "id" => true,
            "updatedAt" | "updated_at" | "updated" => false,
            other => return Err(format!("`orderby.{other}`: unknown field")),
        };
        first.get_or_insert(by_id);
    }
    Ok(first.unwrap_or(true))
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
    let by_id = match sort_by_id(coll, pairs) {
        Ok(b) => b,
        Err(e) => return Reply::bad_request(e),
    };
    if by_id && (paging.after.is_some() || matches!(paging.cursor, Some(Some(_)))) {
        return Reply::bad_request("cursor and keyset positions need `orderby.updatedAt` first");
    }
    let mut paging = paging;
    if by_id && paging.style == Style::Cursor {
        // Links of an id-ordered answer advance the offset.
        paging.style = Style::Offset;
    }
    let which = match (feed, filters.tombstones) {
        (Feed::Deleted, _) | (Feed::Records, Tombstones::Only) => Which::Dead,
        (Feed::Records, Tombstones::Exclude) => Which::Live,
        (Feed::Records, Tombstones::Include) => Which::All,
    };
    let mut from = Some((i64::MIN, IdRank::min()));
    for pos in [
        paging.after.as_ref(),
        paging.cursor.as_ref().and_then(Option::as_ref),
    ]
    .into_iter()
    .flatten()
    {
        from = from.zip(first_after(pos)).map(|(a, b)| a.max(b));
    }
    let answer = coll.feed(&FeedQuery {
        which,
        ids: filters.ids.as_deref(),
        ts: ts_bounds(&filters.ts),
        from,
        skip: paging.skip,
        limit: paging.limit,
        by_id,
    });
    let (total, has_more, page) = (answer.total, answer.has_more, answer.rows);
    let items: Vec<Value> = page
        .iter()
        .map(|(_, _, r)| match feed {
            Feed::Records => coll.render(r),
            Feed::Deleted => json!({ "id": r.id, "deletedAt": coll.render_ts(r.updated_ms) }),
        })
        .collect();
    let last = page.last().filter(|_| has_more).map(|(ts, k, _)| (*ts, *k));
    let next_cursor = last.filter(|_| !by_id).map(|l| encode_cursor(Some(l)));
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
    if let Some(last) = last {
        let next = encode_pairs(&next_query(coll, pairs, &paging, last));
        reply = reply.header(LINK, &format!("<{}>; rel=\"next\"", base.url(&next)));
    }
    if let Some(cursor) = &next_cursor {
        reply = reply.header(HeaderName::from_static("x-next-cursor"), cursor);
    }
    reply
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::Map;

    use super::*;
    use crate::server::collection::{Body, CollectionConfig, Pre, Record, TimestampFormat};
    use crate::server::ids::cmp_keys;
    use crate::server::pagination::is_after;

    /// The feed as it was before the index: sort everything, then filter and position.
    #[allow(clippy::too_many_arguments)]
    fn brute<'a>(
        coll: &'a Collection,
        all: &'a [(String, Record)],
        which: Which,
        ids: Option<&[String]>,
        ts: &[(Cmp, i64)],
        positions: &[Position],
        skip: usize,
        limit: usize,
    ) -> (usize, Vec<String>, bool) {
        let mut rows: Vec<(i64, &str, &Record)> = all
            .iter()
            .map(|(k, r)| (coll.unit(r.updated_ms), k.as_str(), r))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_keys(a.1, b.1)));
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|(_, _, r)| match which {
                Which::All => true,
                Which::Live => !r.deleted,
                Which::Dead => r.deleted,
            })
            .filter(|(_, k, _)| ids.is_none_or(|ids| ids.iter().any(|i| i == k)))
            .filter(|(t, _, _)| ts.iter().all(|(c, v)| c.holds(*t, *v)))
            .collect();
        let total = rows.len();
        let positioned: Vec<_> = rows
            .into_iter()
            .filter(|(t, k, _)| positions.iter().all(|p| is_after(*t, k, p)))
            .collect();
        let end = skip.saturating_add(limit);
        let has_more = positioned.len() > end;
        let page = positioned
            .get(skip.min(positioned.len())..end.min(positioned.len()))
            .unwrap_or(&[]);
        (
            total,
            page.iter().map(|r| r.1.to_owned()).collect(),
            has_more,
        )
    }

    #[test]
    fn index_agrees_with_a_full_sort() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..60 {
            let format = match round % 3 {
                0 => TimestampFormat::EpochMillis,
                1 => TimestampFormat::EpochSeconds,
                _ => TimestampFormat::Rfc3339,
            };
            let mut coll = Collection::new("t", CollectionConfig::default());
            let n = rng.random_range(0..60);
            let key = |i: u32| match i % 3 {
                0 => format!("{}", i as i64 - 20),
                1 => format!("k{i}"),
                _ => format!("0{i}"),
            };
            for _ in 0..n * 2 {
                let k = key(rng.random_range(0..n.max(1)));
                let now = rng.random_range(0..8_000);
                match rng.random_range(0..4) {
                    0 => {
                        coll.delete(&k, &Pre::default(), now);
                    }
                    1 => {
                        let mut m = Map::new();
                        m.insert("x".into(), Value::from(now));
                        let body = Body::split(m).unwrap_or_default();
                        coll.patch(&k, body, &Pre::default(), now);
                    }
                    _ => {
                        let mut m = Map::new();
                        m.insert("id".into(), Value::from(k.clone()));
                        let body = Body::split(m).unwrap_or_default();
                        coll.upsert_direct(body, now).ok();
                    }
                }
            }
            // A unit change reorders the index.
            coll.set_config(CollectionConfig::default().timestamps(format));
            let all: Vec<(String, Record)> = (0..n)
                .map(key)
                .filter_map(|k| coll.get(&k).cloned().map(|r| (k, r)))
                .collect();
            let unit_max = coll.unit(8_000);
            for _ in 0..40 {
                let which = [Which::All, Which::Live, Which::Dead][rng.random_range(0..3)];
                let ids: Option<Vec<String>> = rng.random_bool(0.2).then(|| {
                    (0..4)
                        .map(|_| key(rng.random_range(0..n.max(1) + 2)))
                        .collect()
                });
                let cmps = [Cmp::Gt, Cmp::Gte, Cmp::Lt, Cmp::Lte, Cmp::Eq];
                let ts: Vec<(Cmp, i64)> = (0..rng.random_range(0..3))
                    .map(|_| {
                        (
                            cmps[rng.random_range(0..5)],
                            rng.random_range(-1..unit_max + 2),
                        )
                    })
                    .collect();
                let positions: Vec<Position> = (0..rng.random_range(0..3))
                    .map(|_| {
                        let id = rng
                            .random_bool(0.8)
                            .then(|| key(rng.random_range(0..n.max(1) + 2)));
                        (rng.random_range(-1..unit_max + 2), id)
                    })
                    .collect();
                let (skip, limit) = (rng.random_range(0..4), rng.random_range(1..12));
                let mut from = Some((i64::MIN, IdRank::min()));
                for p in &positions {
                    from = from.zip(first_after(p)).map(|(a, b)| a.max(b));
                }
                let got = coll.feed(&FeedQuery {
                    which,
                    ids: ids.as_deref(),
                    ts: ts_bounds(&ts),
                    from,
                    skip,
                    limit,
                    by_id: false,
                });
                let want = brute(
                    &coll,
                    &all,
                    which,
                    ids.as_deref(),
                    &ts,
                    &positions,
                    skip,
                    limit,
                );
                let keys: Vec<String> = got.rows.iter().map(|r| r.1.to_owned()).collect();
                assert_eq!(
                    (got.total, keys, got.has_more),
                    want,
                    "round {round} {which:?} ids {ids:?} ts {ts:?} pos {positions:?} skip {skip} limit {limit}"
                );
            }
        }
    }

    #[test]
    fn extreme_bounds_do_not_panic() {
        assert_eq!(ts_bounds(&[(Cmp::Gt, i64::MAX)]), None);
        assert_eq!(ts_bounds(&[(Cmp::Lt, i64::MIN)]), None);
        assert_eq!(ts_bounds(&[(Cmp::Gt, 5), (Cmp::Lt, 6)]), None);
        assert_eq!(ts_bounds(&[(Cmp::Gte, 5), (Cmp::Lte, 5)]), Some((5, 5)));
        assert_eq!(first_after(&(i64::MAX, None)), None);
    }
}
