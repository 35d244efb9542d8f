//! Pagination of the pull endpoints: `limit`+`offset`, `page`+`per_page`, opaque `cursor`,
//! keyset `after_updated`+`after_id`; the cursor codec; the query of the next page (for `Link`).

use super::collection::Collection;
use super::query::{param, ts_value};

/// How the client paginates; decides the shape of the `Link` to the next page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// `cursor=` (also the style of a request that names none).
    Cursor,
    /// `after_updated=`+`after_id=`.
    Keyset,
    /// `page=`+`per_page=`.
    Page,
    /// `limit=`+`offset=`.
    Offset,
}

/// A position in `(updatedAt, id)` order: rows strictly after it are wanted.
pub(crate) type Position = (i64, Option<String>);

/// The pagination of one request.
#[derive(Clone, Debug)]
pub(crate) struct Paging {
    pub(crate) style: Style,
    pub(crate) limit: usize,
    pub(crate) skip: usize,
    page: usize,
    /// Keyset position (`after_updated`, `after_id`).
    pub(crate) after: Option<Position>,
    /// Cursor position; `Some(None)` is a cursor at the start.
    pub(crate) cursor: Option<Option<Position>>,
}

fn positive(pairs: &[(String, String)], name: &str) -> Result<Option<usize>, String> {
    match param(pairs, name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!("`{name}` must be a positive integer, got `{v}`")),
        },
    }
}

/// Parses the pagination parameters against a collection's limits and timestamp unit.
pub(crate) fn parse_paging(
    coll: &Collection,
    pairs: &[(String, String)],
) -> Result<Paging, String> {
    let limit = positive(pairs, "limit")?;
    let per_page = positive(pairs, "per_page")?;
    let page = positive(pairs, "page")?;
    let offset = match param(pairs, "offset") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("`offset` must be a non-negative integer, got `{v}`"))?,
        ),
    };
    if page.is_some() && offset.is_some() {
        return Err("`page` and `offset` cannot be combined".into());
    }
    let after = match (param(pairs, "after_updated"), param(pairs, "after_id")) {
        (None, None) => None,
        (None, Some(_)) => return Err("`after_id` needs `after_updated`".into()),
        (Some(ts), id) => {
            let ts = ts_value(coll, ts).ok_or_else(|| {
                format!(
                    "`after_updated`: `{ts}` is not an integer timestamp or an RFC 3339 date-time"
                )
            })?;
            Some((ts, id.map(str::to_owned)))
        }
    };
    let cursor = match param(pairs, "cursor") {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| format!("invalid cursor `{c}`"))?),
    };
    let style = if cursor.is_some() {
        Style::Cursor
    } else if after.is_some() {
        Style::Keyset
    } else if page.is_some() || per_page.is_some() {
        Style::Page
    } else if offset.is_some() {
        Style::Offset
    } else {
        Style::Cursor
    };
    let size = match style {
        Style::Page => per_page.or(limit),
        _ => limit.or(per_page),
    }
    .unwrap_or(coll.config.default_limit)
    .min(coll.config.max_limit)
    .max(1);
    let page = page.unwrap_or(1);
    let skip = match style {
        Style::Page => (page - 1).saturating_mul(size),
        _ => offset.unwrap_or(0),
    };
    Ok(Paging {
        style,
        limit: size,
        skip,
        page,
        after,
        cursor,
    })
}

/// Whether row `(ts, key)` comes strictly after `pos` (the feed's index must agree).
#[cfg(test)]
pub(crate) fn is_after(ts: i64, key: &str, pos: &Position) -> bool {
    use std::cmp::Ordering;
    match ts.cmp(&pos.0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => match &pos.1 {
            Some(id) => super::ids::cmp_keys(key, id) == Ordering::Greater,
            None => false,
        },
    }
}

const CURSOR_PREFIX: &str = "c1";

/// Encodes a position as an opaque cursor (hex of `c1:<ts>:<id>`, or `c1:start`).
pub(crate) fn encode_cursor(pos: Option<(i64, &str)>) -> String {
    let plain = match pos {
        Some((ts, key)) => format!("{CURSOR_PREFIX}:{ts}:{key}"),
        None => format!("{CURSOR_PREFIX}:start"),
    };
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a cursor; `None` if it is not one this server made.
pub(crate) fn decode_cursor(c: &str) -> Option<Option<Position>> {
    let c = c.trim();
    if !c.len().is_multiple_of(2) || !c.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok())
        .collect();
    let plain = String::from_utf8(bytes?).ok()?;
    let rest = plain.strip_prefix(CURSOR_PREFIX)?.strip_prefix(':')?;
    if rest == "start" {
        return Some(None);
    }
    let (ts, key) = rest.split_once(':')?;
    Some(Some((ts.parse().ok()?, Some(key.to_owned()))))
}

/// The query of the next page, in the style of the request: the request's own parameters with
/// the position parameters replaced.
pub(crate) fn next_query(
    coll: &Collection,
    pairs: &[(String, String)],
    paging: &Paging,
    last: (i64, &str),
) -> Vec<(String, String)> {
    let replace: &[&str] = match paging.style {
        Style::Cursor => &["cursor", "offset", "page"],
        Style::Keyset => &["after_updated", "after_id", "offset", "page"],
        Style::Page => &["page"],
        Style::Offset => &["offset"],
    };
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !replace.contains(&k.as_str()))
        .cloned()
        .collect();
    match paging.style {
        Style::Cursor => out.push(("cursor".into(), encode_cursor(Some(last)))),
        Style::Keyset => {
            out.push(("after_updated".into(), coll.unit_param(last.0)));
            out.push(("after_id".into(), last.1.to_owned()));
        }
        Style::Page => out.push(("page".into(), (paging.page + 1).to_string())),
        Style::Offset => out.push((
            "offset".into(),
            paging.skip.saturating_add(paging.limit).to_string(),
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = encode_cursor(Some((42, "a:b")));
        assert_eq!(decode_cursor(&c), Some(Some((42, Some("a:b".to_owned())))));
        assert_eq!(decode_cursor(&encode_cursor(None)), Some(None));
        for bad in ["", "zz", "abc", "6331", "é1", &encode_cursor(None)[2..]] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn keyset_order() {
        let pos = (5, Some("10".to_owned()));
        assert!(is_after(6, "1", &pos));
        assert!(is_after(5, "11", &pos));
        assert!(!is_after(5, "10", &pos));
        assert!(!is_after(5, "9", &pos));
        assert!(!is_after(5, "x", &(5, None)));
    }
}
