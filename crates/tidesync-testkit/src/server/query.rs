//! Query strings: decoding and encoding of `application/x-www-form-urlencoded` pairs, and the
//! filter syntaxes of the pull endpoints (`updated_after=`, `updatedAt_gte=`,
//! `updated_at=gt.`, `since=`, `filter=(updated > '…')`, `id=eq.`/`id=in.(…)`, `tombstones=`).

use super::collection::Collection;
use super::time::parse_rfc3339;

/// Decoded `(name, value)` pairs of a raw query string, in order.
pub(crate) fn parse_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form decoding: `+` is a space, `%XX` a byte; a stray `%` stays literal; invalid UTF-8 is
/// replaced.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_val);
                let lo = b.get(i + 2).copied().and_then(hex_val);
                if let (Some(h), Some(l)) = (hi, lo) {
                    out.push(h << 4 | l);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes pairs back into a query string.
pub(crate) fn encode_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The first value of a parameter.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

impl Cmp {
    #[cfg(test)]
    pub(crate) fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Cmp::Gt => left > right,
            Cmp::Gte => left >= right,
            Cmp::Lt => left < right,
            Cmp::Lte => left <= right,
            Cmp::Eq => left == right,
        }
    }

    fn from_word(w: &str) -> Option<Self> {
        match w {
            "gt" | ">" => Some(Cmp::Gt),
            "gte" | "ge" | ">=" => Some(Cmp::Gte),
            "lt" | "<" => Some(Cmp::Lt),
            "lte" | "le" | "<=" => Some(Cmp::Lte),
            "eq" | "=" | "==" => Some(Cmp::Eq),
            _ => None,
        }
    }
}

/// Whether tombstones are part of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tombstones {
    Include,
    Exclude,
    Only,
}

/// The filters of a pull, timestamps in the collection's unit.
#[derive(Clone, Debug)]
pub(crate) struct Filters {
    pub(crate) ts: Vec<(Cmp, i64)>,
    pub(crate) ids: Option<Vec<String>>,
    pub(crate) tombstones: Tombstones,
}

/// A timestamp filter value in the collection's unit: an integer (read in that unit), or an
/// RFC 3339 date-time. Surrounding quotes are ignored.
pub(crate) fn ts_value(coll: &Collection, raw: &str) -> Option<i64> {
    let v = raw.trim().trim_matches(|c| c == '\'' || c == '"');
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    parse_rfc3339(v).map(|ms| coll.unit(ms))
}

/// The earliest and latest instants a text timestamp is searched between (years 1 and 9999).
const TEXT_MIN_MS: i64 = -62_135_596_800_000;
const TEXT_MAX_MS: i64 = 253_402_300_799_999;

/// The latest instant whose rendered text is `<= text` (`< text` when `strict`), found by
/// bisection (rendering is monotonic); `TEXT_MIN_MS - 1` if there is none.
fn text_bound(coll: &Collection, text: &str, strict: bool) -> i64 {
    let below = |t: i64| {
        let rendered = coll.render_ts(t);
        let rendered = rendered.as_str().unwrap_or_default();
        if strict {
            rendered < text
        } else {
            rendered <= text
        }
    };
    if !below(TEXT_MIN_MS) {
        return TEXT_MIN_MS - 1;
    }
    let (mut lo, mut hi) = (TEXT_MIN_MS, TEXT_MAX_MS);
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        if below(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

/// A timestamp comparison as filter bounds in the collection's unit. With
/// [`CollectionConfig::text_compare`](super::CollectionConfig::text_compare) and text
/// timestamps, a value that is not an integer is compared as text with the rendered
/// timestamps, like a database comparing a text column.
fn ts_filter(coll: &Collection, cmp: Cmp, raw: &str) -> Option<Vec<(Cmp, i64)>> {
    let v = raw.trim().trim_matches(|c| c == '\'' || c == '"');
    let text = matches!(
        coll.config.timestamps,
        super::collection::TimestampFormat::Rfc3339
            | super::collection::TimestampFormat::SpaceSeparated
    );
    if coll.config.text_compare && text && v.parse::<i64>().is_err() {
        let le = text_bound(coll, v, false);
        let lt = text_bound(coll, v, true);
        return Some(match cmp {
            Cmp::Gt => vec![(Cmp::Gt, le)],
            Cmp::Gte => vec![(Cmp::Gt, lt)],
            Cmp::Lt => vec![(Cmp::Lte, lt)],
            Cmp::Lte => vec![(Cmp::Lte, le)],
            Cmp::Eq => vec![(Cmp::Gt, lt), (Cmp::Lte, le)],
        });
    }
    ts_value(coll, raw).map(|ts| vec![(cmp, ts)])
}

fn bad_ts(name: &str, raw: &str) -> String {
    format!("`{name}`: `{raw}` is not an integer timestamp or an RFC 3339 date-time")
}

/// `(updated > '123')`, `updatedAt >= 123`, `updated gt 123`.
fn parse_filter_expr(coll: &Collection, expr: &str) -> Result<Vec<(Cmp, i64)>, String> {
    let mut e = expr.trim();
    if let Some(inner) = e.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        e = inner.trim();
    }
    let field_end = e
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(e.len());
    let (field, rest) = e.split_at(field_end);
    if !matches!(field, "updated" | "updatedAt" | "updated_at") {
        return Err(format!(
            "`filter`: unsupported field `{field}` (use updated, updatedAt or updated_at)"
        ));
    }
    let rest = rest.trim_start();
    let op_end = if rest.starts_with(['>', '<', '=']) {
        rest.find(|c: char| !matches!(c, '>' | '<' | '='))
            .unwrap_or(rest.len())
    } else {
        rest.find(char::is_whitespace).unwrap_or(rest.len())
    };
    let (op, value) = rest.split_at(op_end);
    let cmp = Cmp::from_word(op).ok_or_else(|| format!("`filter`: unsupported operator `{op}`"))?;
    ts_filter(coll, cmp, value).ok_or_else(|| bad_ts("filter", value.trim()))
}

/// `id=eq.X` or `id=in.(a,b,"c")`.
pub(crate) fn parse_id_filter(raw: &str) -> Result<Vec<String>, String> {
    if let Some(v) = raw.strip_prefix("eq.") {
        if v.is_empty() {
            return Err("`id=eq.` needs a value".into());
        }
        return Ok(vec![v.to_owned()]);
    }
    if let Some(list) = raw
        .strip_prefix("in.(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return Ok(list
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty())
            .collect());
    }
    Err(format!(
        "`id`: expected `eq.<id>` or `in.(<id>,…)`, got `{raw}`"
    ))
}

/// Parses the filter parameters of a pull. Unknown parameters are ignored; a malformed value
/// of a known one is an error naming the parameter.
pub(crate) fn parse_filters(
    coll: &Collection,
    pairs: &[(String, String)],
) -> Result<Filters, String> {
    let mut f = Filters {
        ts: Vec::new(),
        ids: None,
        tombstones: Tombstones::Include,
    };
    for (name, raw) in pairs {
        let simple = match name.as_str() {
            "updated_after" | "since" | "updatedAt_gt" => Some(Cmp::Gt),
            "updatedAt_gte" => Some(Cmp::Gte),
            "updatedAt_lt" => Some(Cmp::Lt),
            "updatedAt_lte" => Some(Cmp::Lte),
            _ => None,
        };
        if let Some(cmp) = simple {
            f.ts.extend(ts_filter(coll, cmp, raw).ok_or_else(|| bad_ts(name, raw))?);
            continue;
        }
        match name.as_str() {
            "updated_at" | "updatedAt" => {
                let (op, value) = raw
                    .split_once('.')
                    .ok_or_else(|| format!("`{name}`: expected `<op>.<timestamp>`, e.g. gt.123"))?;
                let cmp = Cmp::from_word(op)
                    .ok_or_else(|| format!("`{name}`: unsupported operator `{op}`"))?;
                f.ts.extend(ts_filter(coll, cmp, value).ok_or_else(|| bad_ts(name, value))?);
            }
            "filter" => f.ts.extend(parse_filter_expr(coll, raw)?),
            "id" => f.ids = Some(parse_id_filter(raw)?),
            "tombstones" => {
                f.tombstones = match raw.as_str() {
                    "include" | "" => Tombstones::Include,
                    "exclude" => Tombstones::Exclude,
                    "only" => Tombstones::Only,
                    other => {
                        return Err(format!(
                            "`tombstones`: expected include, exclude or only, got `{other}`"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::collection::CollectionConfig;

    fn coll() -> Collection {
        Collection::new("t", CollectionConfig::default())
    }

    #[test]
    fn decode_and_encode() {
        let p = parse_pairs(Some("a=1+2&b=%3Ax%zz&c&since=2024-01-01T00:00:00%2B01:00"));
        assert_eq!(p[0], ("a".into(), "1 2".into()));
        assert_eq!(p[1], ("b".into(), ":x%zz".into()));
        assert_eq!(p[2], ("c".into(), String::new()));
        assert_eq!(p[3].1, "2024-01-01T00:00:00+01:00");
        assert_eq!(encode("a b:+/é"), "a%20b%3A%2B%2F%C3%A9");
    }

    #[test]
    fn filter_expressions() {
        let c = coll();
        assert_eq!(
            parse_filter_expr(&c, "(updated > '5')"),
            Ok(vec![(Cmp::Gt, 5)])
        );
        assert_eq!(
            parse_filter_expr(&c, "updatedAt>=7"),
            Ok(vec![(Cmp::Gte, 7)])
        );
        assert_eq!(
            parse_filter_expr(&c, "updated gt \"9\""),
            Ok(vec![(Cmp::Gt, 9)])
        );
        assert!(parse_filter_expr(&c, "(title > '5')").is_err());
        assert!(parse_filter_expr(&c, "(updated ~ '5')").is_err());
        assert!(parse_filter_expr(&c, "(updated > 'x')").is_err());
        assert!(parse_filter_expr(&c, "").is_err());
    }

    #[test]
    fn text_compare_compares_text_like_a_database() {
        use crate::server::collection::TimestampFormat;
        let c = Collection::new(
            "t",
            CollectionConfig::default()
                .timestamps(TimestampFormat::SpaceSeparated)
                .text_compare(true),
        );
        let noon = parse_rfc3339("2024-05-01T12:00:00.000Z").unwrap_or_default();
        // A `T` sorts after the space: no time of the same day is greater.
        let t = ts_filter(&c, Cmp::Gt, "2024-05-01T00:00:00.000Z").unwrap_or_default();
        let end_of_day = parse_rfc3339("2024-05-01T23:59:59.999Z").unwrap_or_default();
        assert_eq!(t, vec![(Cmp::Gt, end_of_day)]);
        // The same shape compares like time.
        let t = ts_filter(&c, Cmp::Gt, "2024-05-01 12:00:00.000Z").unwrap_or_default();
        assert_eq!(t, vec![(Cmp::Gt, noon)]);
        let t = ts_filter(&c, Cmp::Gte, "2024-05-01 12:00:00.000Z").unwrap_or_default();
        assert_eq!(t, vec![(Cmp::Gt, noon - 1)]);
        // Integers stay numbers.
        assert_eq!(ts_filter(&c, Cmp::Gt, "5"), Some(vec![(Cmp::Gt, 5)]));
    }

    #[test]
    fn id_filters() {
        assert_eq!(parse_id_filter("eq.5"), Ok(vec!["5".to_owned()]));
        assert_eq!(
            parse_id_filter("in.(1, \"b\")"),
            Ok(vec!["1".to_owned(), "b".to_owned()])
        );
        assert!(parse_id_filter("5").is_err());
        assert!(parse_id_filter("eq.").is_err());
    }
}
