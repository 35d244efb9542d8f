//! Page walking and gap-free checkpoints, as pure functions: [`plan`] turns a feed's cursor into
//! request parameters, [`advance`] turns a response into the records to apply and the next
//! cursor. No IO here, so every decision is unit-tested.
//!
//! Two walking modes:
//! - **Re-filtering** (`pagination.style = "none"`): every request starts from the committed
//!   checkpoint. Ties are handled per filter: `exclusive` cuts a full page before its last
//!   timestamp group (fetched whole next time); `inclusive` skips keys already seen at the
//!   checkpoint timestamp and raises the limit by their number; `keyset` is exact. When one
//!   timestamp group fills a whole page, the limit doubles (`boost`, up to ×64, then an error).
//! - **Passes** (offset/page/token/link): the filter value stays fixed while the pages of one
//!   pass are walked; the checkpoint moves to the highest position seen only when the pass ends
//!   and nothing shifted during it. A server that returns the same page again (or the same
//!   next token or link) is an error, never a loop.
//!
//! **No silent skip.** Offsets and page numbers shift when records move during a walk (an
//! update moves a record to the end of an `updatedAt` order; a hard delete pulls every later
//! record one place forward), and the record pulled across the page boundary would be skipped.
//! So a walk checks its continuity: an offset walk asks for each page from one item earlier and
//! checks that this first item is the previous page's last; page and link walks remember the
//! keys of the walk and treat a key seen twice (a record that moved) as a shift; every style
//! treats a falling `total` as one. On a shift the walk starts again from the committed
//! checkpoint, which therefore never advances past a record the walk did not see.
//!
//! **Silent page caps.** A page shorter than asked while the server says more exist means the
//! server caps its page size: the cap is stored (`FeedCursor::cap`), later requests ask for no
//! more, and a warning says so once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tidesync_core::{Error, ErrorKind, Key, PullWarning, Record, Result};

use crate::cursor::{Edge, FeedCursor, Mark, Pass};
use crate::feed::{Feed, Filter, PageStyle};

/// The largest limit multiplier before a timestamp tie is reported as an error.
pub const MAX_BOOST: u32 = 64;

/// How many page walks in a row may be restarted after a shift before the pull fails (the
/// data then changes faster than a walk can read it; re-filtering does not have this limit).
pub const MAX_REWALKS: u32 = 8;

/// What a walk keeps in memory only (never in the stored checkpoint): the next link of a link
/// walk and the keys a page or link walk has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkMemory {
    /// The walk this memory belongs to ([`Pass::walk`]); 0: none.
    pub id: u64,
    /// Link style: the next page's URL.
    pub next_link: Option<String>,
    /// Hashes of the keys seen in this walk (page and link styles).
    pub seen: HashSet<u64>,
}

impl WalkMemory {
    fn start(&mut self, id: u64) {
        self.id = id;
        self.next_link = None;
        self.seen.clear();
    }
}

/// A new walk id: unique within the process, and unlike any id of an earlier process.
fn new_walk_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(0)
        });
    (nanos ^ base.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1)
}

/// The values for one page request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `{cursor}`.
    pub cursor: Option<String>,
    /// `{after_key}`.
    pub after_key: Option<String>,
    /// `{limit}`.
    pub limit: u64,
    /// `{offset}`.
    pub offset: u64,
    /// `{page}`.
    pub page: u64,
    /// `{token}`.
    pub token: Option<String>,
    /// `{since_token}`.
    pub since_token: Option<String>,
    /// Link style: the URL to fetch instead of the template.
    pub next_url: Option<String>,
}

impl Params {
    /// The value of a feed placeholder (`None`: absent).
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "cursor" => self.cursor.clone(),
            "after_key" => self.after_key.clone(),
            "limit" => Some(self.limit.to_string()),
            "offset" => Some(self.offset.to_string()),
            "page" => Some(self.page.to_string()),
            "token" => self.token.clone(),
            "since_token" => self.since_token.clone(),
            _ => None,
        }
    }
}

/// What one response said, decoded from the body and headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawPage {
    /// The items.
    pub items: Vec<Value>,
    /// The "more pages" field, if configured and present.
    pub has_more: Option<bool>,
    /// The total count, if configured and present.
    pub total: Option<u64>,
    /// Token style: the next-page token (null and empty strings are `None`).
    pub next_token: Option<Value>,
    /// Link style: the next page's URL.
    pub next_link: Option<String>,
    /// The opaque checkpoint token, if configured and present.
    pub since_token: Option<Value>,
}

/// The outcome of one page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Records to apply.
    pub records: Vec<Record>,
    /// Keys deleted on the server.
    pub deleted: Vec<Key>,
    /// The feed's next cursor.
    pub state: FeedCursor,
    /// Whether this feed has more to read now.
    pub more: bool,
    /// The total the server reported.
    pub total: Option<u64>,
    /// What the configuration can fix (unparsed cursor values, no progress).
    pub warnings: Vec<PullWarning>,
}

/// What [`advance`] needs to know about the feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedCtx<'a> {
    /// The feed spec.
    pub feed: &'a Feed,
    /// The table name (for errors and logs).
    pub table: &'a str,
    /// The key field of items.
    pub key_field: &'a str,
    /// Whether this is a deleted-ids feed (every item is a delete).
    pub deletes_only: bool,
}

/// A token value as request text.
pub fn token_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_ts(ctx: &FeedCtx<'_>, mark: &Mark) -> Result<i128> {
    ctx.feed.timestamp.parse(&mark.ts).ok_or_else(|| {
        Error::invalid(format!(
            "stored checkpoint timestamp {} does not parse as {:?}; was the route changed? \
             reset the table's checkpoint",
            mark.ts, ctx.feed.timestamp
        ))
        .table(ctx.table)
    })
}

/// Makes a stored cursor fit for [`plan`]: a page or link walk whose in-memory state is gone
/// (another process, a restart) starts again from its committed filter value, because what
/// proves its continuity was in memory; offset and token walks go on (their proof is in the
/// cursor, or the token is the server's own position).
pub fn resume(ctx: &FeedCtx<'_>, state: &FeedCursor, mem: &mut WalkMemory) -> FeedCursor {
    let mut state = state.clone();
    let style = ctx.feed.pagination.style;
    if let Some(pass) = &state.pass {
        let known = pass.walk != 0 && mem.id == pass.walk;
        match style {
            PageStyle::Page | PageStyle::Link
                if !known || (style == PageStyle::Link && mem.next_link.is_none()) =>
            {
                tracing::info!(
                    table = ctx.table,
                    "a page walk was interrupted (restart or another process); walking again \
                     from the checkpoint"
                );
                state.pass = None;
            }
            _ if !known => mem.start(pass.walk),
            _ => {}
        }
    }
    state
}

/// The request parameters for the next page of a feed.
pub fn plan(
    ctx: &FeedCtx<'_>,
    state: &FeedCursor,
    page_size: usize,
    mem: &WalkMemory,
) -> Result<Params> {
    let feed = ctx.feed;
    let cap = state.cap.unwrap_or(u64::MAX).max(1);
    let page_size = u64::try_from(page_size.max(1)).unwrap_or(u64::MAX).min(cap);
    let mut params = Params {
        limit: page_size,
        page: feed.pagination.first_page,
        since_token: state.token.as_ref().map(token_text),
        ..Params::default()
    };
    if let Some(since) = &state.since {
        let ns = parse_ts(ctx, since)?;
        params.cursor = Some(feed.cursor_format_or_default().format(ns));
        if feed.filter == Filter::Keyset {
            params.after_key = since.key.as_ref().map(ToString::to_string);
        }
    }
    let style = feed.pagination.style;
    if style == PageStyle::None {
        let boost = u64::from(state.boost.max(1));
        params.limit = page_size.saturating_mul(boost);
        // Seen keys come back with `inclusive`, and with `exclusive` where answers are coarser
        // than the server's filter: ask for that many more.
        if matches!(feed.filter, Filter::Inclusive | Filter::Exclusive) {
            let seen = state.since.as_ref().map_or(0, |s| s.seen.len());
            params.limit = params.limit.saturating_add(seen as u64);
        }
        // Never more than the server was seen to answer.
        params.limit = params.limit.min(cap);
    } else if let Some(pass) = &state.pass {
        params.limit = pass.limit.max(1);
        params.offset = pass.offset;
        params.page = pass.page;
        match style {
            PageStyle::Offset if pass.last.is_some() && pass.offset > 0 && pass.limit > 1 => {
                // One item of overlap: it must be the previous page's last. The page size stays
                // (asking for one more would cross a server's cap equal to the page size).
                params.offset = pass.offset - 1;
            }
            PageStyle::Token => params.token = pass.token.as_ref().map(token_text),
            PageStyle::Link => params.next_url = mem.next_link.clone(),
            _ => {}
        }
    }
    Ok(params)
}

/// One decoded item.
struct Entry {
    /// Its place among the page's decoded entries.
    pos: usize,
    key: Key,
    /// The timestamp (parsed, raw).
    ts: Option<(i128, Value)>,
    record: Option<Record>,
    delete: bool,
}

/// Decodes a page's items (moving each record out, no copy); the warning counts the items
/// whose cursor field does not parse.
fn decode_entries(ctx: &FeedCtx<'_>, items: Vec<Value>) -> (Vec<Entry>, Option<PullWarning>) {
    let feed = ctx.feed;
    let mut out = Vec::with_capacity(items.len());
    let mut unparsed = 0usize;
    let mut example: Option<String> = None;
    let total = items.len();
    for (index, item) in items.into_iter().enumerate() {
        let (key_value, ts_value, record) = match &item {
            Value::Object(map) => (
                map.get(ctx.key_field),
                feed.cursor_field.as_ref().and_then(|f| map.get(f)),
                Some(map),
            ),
            scalar if ctx.deletes_only => (Some(scalar), None, None),
            _ => {
                tracing::warn!(
                    table = ctx.table,
                    index,
                    "pulled item is not an object; skipped"
                );
                continue;
            }
        };
        let Some(key) = key_value.and_then(Key::from_json) else {
            tracing::warn!(
                table = ctx.table,
                index,
                field = ctx.key_field,
                "pulled item has no usable key; skipped"
            );
            continue;
        };
        let ts = match (feed.cursor_field.as_deref(), ts_value) {
            (None, _) => None,
            (Some(_), value) => {
                let parsed = value.and_then(|v| feed.timestamp.parse(v).map(|ns| (ns, v.clone())));
                if parsed.is_none() && (feed.filter != Filter::None || value.is_some()) {
                    unparsed += 1;
                    if example.is_none() {
                        example = Some(format!(
                            "key {key}: {}",
                            value.map_or_else(|| "missing".to_owned(), Value::to_string)
                        ));
                    }
                }
                parsed
            }
        };
        let delete = ctx.deletes_only
            || feed
                .tombstone
                .as_ref()
                .is_some_and(|t| record.and_then(|r| r.get(&t.field)) == Some(&t.value));
        let record = match item {
            Value::Object(map) if !ctx.deletes_only => Some(map),
            _ => None,
        };
        out.push(Entry {
            pos: out.len(),
            key,
            ts,
            record,
            delete,
        });
    }
    let mut warning = None;
    if unparsed > 0 {
        // One warning per page (not one per item), and in the sync report.
        warning = Some(PullWarning::CursorUnparsed {
            field: feed.cursor_field.clone().unwrap_or_default(),
            format: feed.timestamp.to_string(),
            items: unparsed as u64,
            example: example.clone().unwrap_or_default(),
        });
        tracing::warn!(
            table = ctx.table,
            field = feed.cursor_field.as_deref().unwrap_or_default(),
            format = %feed.timestamp,
            unparsed,
            items = total,
            example = example.as_deref().unwrap_or_default(),
            "pulled items whose cursor field does not parse in the configured `timestamp` \
             format: they are applied, but the checkpoint cannot move past them (every sync \
             reads them again); fix `timestamp`"
        );
    }
    (out, warning)
}

/// The key and raw timestamp of a raw item, as [`Edge`] (for the offset overlap check).
fn edge_of(ctx: &FeedCtx<'_>, item: &Value) -> Option<Edge> {
    let key = match item {
        Value::Object(map) => map.get(ctx.key_field).and_then(Key::from_json)?,
        scalar if ctx.deletes_only => Key::from_json(scalar)?,
        _ => return None,
    };
    let ts = ctx
        .feed
        .cursor_field
        .as_ref()
        .and_then(|f| item.get(f))
        .cloned()
        .unwrap_or(Value::Null);
    Some(Edge { key, ts })
}

fn key_hash(key: &Key) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .to_string()
        .bytes()
        .chain(std::iter::once(u8::from(matches!(key, Key::Int(_)))))
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a over the items' JSON: stable across Rust versions (it is stored in cursors).
fn fingerprint(items: &[Value]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for item in items {
        for b in item.to_string().bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The highest position among `entries`, merged with `prev`: for the inclusive filter, the
/// keys at the highest timestamp are collected.
fn high_mark(prev: Option<&Mark>, prev_ns: Option<i128>, entries: &[&Entry]) -> Option<Mark> {
    let mut best: Option<(i128, Mark)> = prev.cloned().and_then(|m| prev_ns.map(|ns| (ns, m)));
    for entry in entries {
        let Some((ns, raw)) = &entry.ts else { continue };
        match &mut best {
            Some((best_ns, mark)) if *ns == *best_ns => {
                if !mark.seen.contains(&entry.key) {
                    mark.seen.push(entry.key.clone());
                }
                mark.key = Some(entry.key.clone());
            }
            Some((best_ns, _)) if *ns < *best_ns => {}
            _ => {
                best = Some((
                    *ns,
                    Mark {
                        ts: raw.clone(),
                        key: Some(entry.key.clone()),
                        seen: vec![entry.key.clone()],
                    },
                ));
            }
        }
    }
    best.map(|(_, mark)| mark)
}

/// Keeps only what each filter needs in a stored mark. The exclusive filter keeps the keys
/// seen at the checkpoint instant too: an answer may carry a coarser time than the server's
/// filter compares (milliseconds shown, microseconds compared), so the server can return a
/// record from inside the checkpoint's rounded instant, and it must be applied, not dropped.
fn trim_mark(filter: Filter, mut mark: Mark) -> Mark {
    if !matches!(filter, Filter::Inclusive | Filter::Exclusive) {
        mark.seen.clear();
    }
    if filter != Filter::Keyset {
        mark.key = None;
    }
    mark
}

fn ordered(entries: &[&Entry]) -> bool {
    let mut last: Option<i128> = None;
    for ns in entries
        .iter()
        .filter_map(|e| e.ts.as_ref().map(|(ns, _)| *ns))
    {
        if last.is_some_and(|l| ns < l) {
            return false;
        }
        last = Some(ns);
    }
    true
}

/// New items were delivered and the checkpoint's filter value did not move.
fn no_progress(ctx: &FeedCtx<'_>, items: u64) -> PullWarning {
    let field = ctx.feed.cursor_field.as_deref().unwrap_or_default();
    PullWarning::NoProgress {
        items,
        reason: format!(
            "none of them carries a `{field}` past the checkpoint that the configured \
             timestamp `{}` reads",
            ctx.feed.timestamp
        ),
    }
}

fn repeat_error(ctx: &FeedCtx<'_>, what: &str) -> Error {
    Error::new(
        ErrorKind::Permanent,
        format!(
            "the server {what}; is the pagination parameter ignored? stopping instead of \
             looping"
        ),
    )
    .table(ctx.table)
}

/// Applies one response to a feed's cursor, without a walk memory (page and link walks then
/// cannot notice a key seen twice; offset overlap and falling totals still count). The
/// transport itself uses [`advance_walk`].
pub fn advance(
    ctx: &FeedCtx<'_>,
    state: &FeedCursor,
    params: &Params,
    page: RawPage,
) -> Result<Step> {
    advance_walk(ctx, state, params, page, &mut WalkMemory::default())
}

/// Applies one response to a feed's cursor. `mem` is the walk's in-memory state (see
/// [`WalkMemory`]); pass the one [`resume`] was given.
pub fn advance_walk(
    ctx: &FeedCtx<'_>,
    state: &FeedCursor,
    params: &Params,
    mut page: RawPage,
    mem: &mut WalkMemory,
) -> Result<Step> {
    let feed = ctx.feed;
    let filter = feed.filter;
    let style = feed.pagination.style;
    let raw_count = page.items.len() as u64;
    let fp = fingerprint(&page.items);

    // Offset walks: the first item must be the previous page's last (one item of overlap).
    let mut shift: Option<String> = None;
    if style == PageStyle::Offset
        && let Some(pass) = &state.pass
        && let Some(last) = &pass.last
        && params.offset.saturating_add(1) == pass.offset
    {
        let first = page.items.first().and_then(|item| edge_of(ctx, item));
        if first.as_ref() == Some(last) {
            page.items.remove(0);
        } else if pass.fp != Some(fp) {
            shift = Some(format!(
                "the item before offset {} is no longer `{}`",
                pass.offset, last.key
            ));
        }
    }
    let count = page.items.len() as u64;
    let items_empty = page.items.is_empty();
    // Offset walks remember the last item (the next page must start with it).
    let last_edge = if style == PageStyle::Offset {
        page.items.last().and_then(|item| edge_of(ctx, item))
    } else {
        None
    };
    let (entries, unparsed) = decode_entries(ctx, std::mem::take(&mut page.items));
    let mut warnings: Vec<PullWarning> = unparsed.into_iter().collect();
    let since_ns = state.since.as_ref().map(|m| parse_ts(ctx, m)).transpose()?;

    // Drop what an earlier page already delivered.
    let fresh: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            let (Some(since), Some(since_ns), Some((ns, raw))) = (&state.since, since_ns, &e.ts)
            else {
                return true;
            };
            match filter {
                Filter::None => true,
                Filter::Keyset => !(raw == &since.ts && since.key.as_ref() == Some(&e.key)),
                Filter::Inclusive | Filter::Exclusive => {
                    *ns > since_ns || (*ns == since_ns && !since.seen.contains(&e.key))
                }
            }
        })
        .collect();

    let signalled = match style {
        PageStyle::Token => page.next_token.is_some() && page.has_more != Some(false),
        PageStyle::Link => page.next_link.is_some() && page.has_more != Some(false),
        _ => match (page.has_more, page.total) {
            (Some(more), _) => more,
            (None, Some(total)) if style != PageStyle::None => {
                let read = state.pass.as_ref().map_or(0, |p| p.read);
                read.saturating_add(count) < total
            }
            _ => false,
        },
    };
    let explicit = match style {
        PageStyle::Token | PageStyle::Link => true,
        _ => page.has_more.is_some() || (style != PageStyle::None && page.total.is_some()),
    };
    let more = if items_empty && raw_count == 0 {
        false
    } else if explicit {
        signalled
    } else {
        feed.sends_limit() && raw_count >= params.limit
    };

    let mut next = state.clone();
    if let Some(token) = page.since_token.filter(|t| !t.is_null()) {
        next.token = Some(token);
    }
    // A silent page cap: fewer items than asked while the server says more exist.
    // (Token and link pages may be short by design; only offset, page and re-filtering
    // requests ask for an exact number.)
    if signalled
        && !matches!(style, PageStyle::Token | PageStyle::Link)
        && raw_count > 0
        && raw_count < params.limit
        && feed.sends_limit()
    {
        if state.cap.is_none_or(|c| raw_count < c) {
            tracing::warn!(
                table = ctx.table,
                asked = params.limit,
                answered = raw_count,
                "the server answered fewer items than asked while saying more exist: it caps \
                 its page size; asking for {raw_count} per page from now on"
            );
        }
        next.cap = Some(raw_count);
    }
    let mut emit: Vec<&Entry> = fresh.clone();
    let more = if style == PageStyle::None {
        match filter {
            Filter::None => {
                if more {
                    tracing::warn!(
                        table = ctx.table,
                        "the server has more items but the feed has neither a filter nor \
                         pagination; only the first page is read"
                    );
                }
                false
            }
            Filter::Keyset => {
                let last = fresh.iter().rev().find_map(|e| {
                    e.ts.as_ref().map(|(_, raw)| Mark {
                        ts: raw.clone(),
                        key: Some(e.key.clone()),
                        seen: Vec::new(),
                    })
                });
                if let Some(last) = last {
                    next.since = Some(last);
                }
                if more && next.since == state.since {
                    return Err(repeat_error(
                        ctx,
                        "returned no record past the keyset cursor",
                    ));
                }
                if !fresh.is_empty() && next.since == state.since {
                    warnings.push(no_progress(ctx, fresh.len() as u64));
                }
                more
            }
            Filter::Inclusive | Filter::Exclusive => {
                if more && !ordered(&fresh) {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!(
                            "pulled items are not ordered by `{}`; add the API's sort \
                             parameter (ascending) to the pull query",
                            feed.cursor_field.as_deref().unwrap_or_default()
                        ),
                    )
                    .table(ctx.table));
                }
                if more && filter == Filter::Exclusive {
                    // Hold back the last timestamp group: the next `> ts` request gets it whole.
                    let top = fresh
                        .iter()
                        .filter_map(|e| e.ts.as_ref().map(|t| t.0))
                        .max();
                    if let Some(top) = top {
                        emit.retain(|e| e.ts.as_ref().is_none_or(|(ns, _)| *ns < top));
                    }
                }
                let progressed = emit.iter().any(|e| e.ts.is_some());
                if more && !progressed {
                    next.boost = state.boost.max(1).saturating_mul(2);
                    if next.boost > MAX_BOOST {
                        return Err(Error::new(
                            ErrorKind::Permanent,
                            format!(
                                "more than {} records share one `{}` value and the filter \
                                 cannot step inside it; use a keyset or offset pagination{}",
                                params.limit.min(state.cap.unwrap_or(u64::MAX)),
                                feed.cursor_field.as_deref().unwrap_or_default(),
                                state.cap.map_or_else(String::new, |c| format!(
                                    " (the server answers at most {c} items per page)"
                                ))
                            ),
                        )
                        .table(ctx.table));
                    }
                } else {
                    next.boost = 1;
                    if let Some(high) = high_mark(state.since.as_ref(), since_ns, &emit) {
                        next.since = Some(trim_mark(filter, high));
                    }
                    if !emit.is_empty() && next.since == state.since {
                        warnings.push(no_progress(ctx, emit.len() as u64));
                    }
                }
                more
            }
        }
    } else {
        let mut pass = match &state.pass {
            Some(pass) => pass.clone(),
            None => {
                let pass = Pass {
                    walk: new_walk_id(),
                    offset: 0,
                    page: feed.pagination.first_page,
                    limit: params.limit,
                    ..Pass::default()
                };
                mem.start(pass.walk);
                pass
            }
        };
        if more && pass.fp == Some(fp) {
            return Err(repeat_error(ctx, "returned the same page twice"));
        }
        let next_token = page.next_token.filter(|t| !t.is_null());
        if more && style == PageStyle::Token && next_token.is_some() && next_token == pass.token {
            return Err(repeat_error(ctx, "returned the same next-page token twice"));
        }
        if more
            && style == PageStyle::Link
            && page.next_link.is_some()
            && page.next_link == mem.next_link
        {
            return Err(repeat_error(ctx, "returned the same next link twice"));
        }
        // Page and link walks: a key seen twice in one walk is a record that moved.
        if matches!(style, PageStyle::Page | PageStyle::Link) {
            for entry in &entries {
                if !mem.seen.insert(key_hash(&entry.key)) && shift.is_none() {
                    shift = Some(format!("`{}` came twice in one walk (it moved)", entry.key));
                }
            }
        }
        // Every style: a falling total means records left the walk's range.
        if let (Some(before), Some(now)) = (pass.total, page.total)
            && now < before
            && shift.is_none()
        {
            shift = Some(format!("the total went down from {before} to {now}"));
        }
        if page.total.is_some() {
            pass.total = page.total;
        }
        // Without an end signal, a short page of an offset or page walk may be a silent cap:
        // the next page is asked for once. Empty, the walk is complete; not empty, the server
        // caps its pages. (Ending the walk there would move the checkpoint to the highest
        // position seen, past every unseen record unless the order is the cursor field's.)
        let mut more = more;
        let probed = pass.probe.take();
        if !explicit
            && matches!(style, PageStyle::Offset | PageStyle::Page)
            && feed.sends_limit()
            && shift.is_none()
        {
            if let Some(short) = probed.filter(|_| count > 0) {
                if pass.fp == Some(fp) {
                    return Err(repeat_error(ctx, "returned the same page twice"));
                }
                tracing::warn!(
                    table = ctx.table,
                    asked = pass.limit,
                    answered = short,
                    "the server answered fewer items than asked and then more: it caps its \
                     page size; asking for {short} per page from now on"
                );
                next.cap = Some(short);
                pass.limit = pass.limit.min(short).max(1);
                more = more || count > 0;
            } else if probed.is_none() && raw_count > 0 && raw_count < params.limit && count > 0 {
                pass.probe = Some(raw_count);
                more = true;
            }
        }
        if let Some(reason) = shift {
            next.pass = None;
            next.rewalks = state.rewalks.saturating_add(1);
            mem.start(0);
            if next.rewalks > MAX_REWALKS {
                return Err(Error::new(
                    ErrorKind::Permanent,
                    format!(
                        "the data shifted under {} page walks in a row ({reason}); the \
                         checkpoint stays where it is. Re-filter instead (pagination style \
                         `none` with a filter, or `keyset`), or check that the server honours \
                         the page parameter",
                        next.rewalks
                    ),
                )
                .table(ctx.table));
            }
            tracing::warn!(
                table = ctx.table,
                reason = %reason,
                rewalks = next.rewalks,
                "the data shifted during a page walk; walking again from the last checkpoint \
                 so that no record is skipped"
            );
            true
        } else {
            let pass_high_ns = pass.high.as_ref().and_then(|m| feed.timestamp.parse(&m.ts));
            let high = if filter == Filter::None {
                None
            } else {
                high_mark(pass.high.as_ref(), pass_high_ns, &fresh)
            };
            if more {
                pass.offset = pass.offset.saturating_add(count);
                pass.page = pass.page.saturating_add(1);
                pass.read = pass.read.saturating_add(count);
                if let Some(cap) = next.cap {
                    pass.limit = pass.limit.min(cap).max(1);
                }
                pass.token = if style == PageStyle::Token {
                    next_token
                } else {
                    None
                };
                if style == PageStyle::Link {
                    mem.next_link = page.next_link;
                }
                if style == PageStyle::Offset && !items_empty {
                    // (An undecodable last item leaves no edge: that boundary goes unchecked.)
                    pass.last = last_edge;
                }
                pass.high = high;
                pass.fp = Some(fp);
                pass.fresh = pass.fresh.saturating_add(fresh.len() as u64);
                next.pass = Some(pass);
            } else {
                next.pass = None;
                next.rewalks = 0;
                mem.start(0);
                if let Some(high) = high {
                    let high_ns = feed.timestamp.parse(&high.ts);
                    let merged = match (since_ns, high_ns, &state.since) {
                        (Some(s), Some(h), Some(since)) if h == s => {
                            let mut merged = since.clone();
                            for key in high.seen {
                                if !merged.seen.contains(&key) {
                                    merged.seen.push(key);
                                }
                            }
                            merged
                        }
                        (Some(s), Some(h), Some(since)) if h < s => since.clone(),
                        _ => high,
                    };
                    next.since = Some(trim_mark(filter, merged));
                }
                // The walk delivered new items and the filter value stayed where it was.
                let walk_fresh = pass.fresh.saturating_add(fresh.len() as u64);
                if filter != Filter::None && walk_fresh > 0 && next.since == state.since {
                    warnings.push(no_progress(ctx, walk_fresh));
                }
            }
            more
        }
    };

    // (Unparsed cursor values were logged above: they explain a page without progress.)
    let explained = warnings
        .iter()
        .any(|w| matches!(w, PullWarning::CursorUnparsed { .. }));
    for warning in warnings.iter().filter(|_| !explained) {
        if let PullWarning::NoProgress { items, .. } = warning {
            tracing::warn!(
                table = ctx.table,
                items,
                "pulled new items without moving the checkpoint: every sync reads them again"
            );
        }
    }
    let mut step = Step {
        state: next,
        more,
        total: page.total,
        warnings,
        ..Step::default()
    };
    // The emitted entries, moved out in page order (no copy of a record).
    let mut chosen = vec![false; entries.len()];
    for entry in &emit {
        chosen[entry.pos] = true;
    }
    drop(emit);
    drop(fresh);
    for (entry, keep) in entries.into_iter().zip(chosen) {
        if !keep {
            continue;
        }
        if entry.delete {
            step.deleted.push(entry.key);
        } else if let Some(record) = entry.record {
            step.records.push(record);
        }
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Pagination;
    use crate::time::TimeFormat;
    use serde_json::json;
    use std::cell::RefCell;

    thread_local! {
        /// The walk memory of the tests' transport.
        static MEM: RefCell<WalkMemory> = RefCell::new(WalkMemory::default());
    }

    fn plan(ctx: &FeedCtx<'_>, state: &FeedCursor, page_size: usize) -> Result<Params> {
        MEM.with(|m| super::plan(ctx, state, page_size, &m.borrow()))
    }

    fn advance(
        ctx: &FeedCtx<'_>,
        state: &FeedCursor,
        params: &Params,
        page: RawPage,
    ) -> Result<Step> {
        MEM.with(|m| super::advance_walk(ctx, state, params, page, &mut m.borrow_mut()))
    }

    fn items(pairs: &[(&str, i64)]) -> Vec<Value> {
        pairs
            .iter()
            .map(|(id, ts)| json!({"id": id, "updatedAt": ts}))
            .collect()
    }

    fn ids(step: &Step) -> Vec<String> {
        step.records
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn feed(filter: Filter, pagination: Pagination) -> Feed {
        let mut feed = Feed::get("/api/posts")
            .cursor_field("updatedAt", TimeFormat::EpochMs)
            .filter(filter)
            .pagination(pagination)
            .query("limit", "{limit}");
        if filter != Filter::None {
            feed = feed.query("since", "{cursor}");
        }
        feed
    }

    fn ctx(feed: &Feed) -> FeedCtx<'_> {
        FeedCtx {
            feed,
            table: "posts",
            key_field: "id",
            deletes_only: false,
        }
    }

    /// Serves `data` (sorted by (ts, id)) the way a server with `filter` would.
    fn serve(data: &[(&str, i64)], filter: Filter, p: &Params) -> Vec<Value> {
        let mut sorted = data.to_vec();
        sorted.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        let since: Option<i64> = p.cursor.as_ref().and_then(|c| c.parse().ok());
        let rows: Vec<(&str, i64)> = sorted
            .into_iter()
            .filter(|(id, ts)| match (filter, since) {
                (_, None) => true,
                (Filter::Exclusive, Some(s)) => *ts > s,
                (Filter::Inclusive, Some(s)) => *ts >= s,
                (Filter::Keyset, Some(s)) => {
                    (*ts, *id) > (s, p.after_key.as_deref().unwrap_or_default())
                }
                (Filter::None, _) => true,
            })
            .skip(p.offset as usize)
            .take(p.limit as usize)
            .collect();
        items(&rows)
    }

    fn drain(feed: &Feed, data: &[(&str, i64)], page_size: usize) -> (Vec<String>, FeedCursor) {
        let ctx = ctx(feed);
        let mut state = FeedCursor::default();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let p = plan(&ctx, &state, page_size).unwrap();
            let page = RawPage {
                items: serve(data, feed.filter, &p),
                ..RawPage::default()
            };
            let step = advance(&ctx, &state, &p, page).unwrap();
            seen.extend(ids(&step));
            state = step.state;
            if !step.more {
                return (seen, state);
            }
        }
        panic!("did not finish");
    }

    const TIES: &[(&str, i64)] = &[
        ("a", 1),
        ("b", 2),
        ("c", 2),
        ("d", 2),
        ("e", 2),
        ("f", 3),
        ("g", 4),
        ("h", 4),
    ];

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn every_filter_walks_ties_without_gaps() {
        for filter in [Filter::Exclusive, Filter::Inclusive, Filter::Keyset] {
            let mut f = feed(filter, Pagination::none());
            if filter == Filter::Keyset {
                f = f.query("after_id", "{after_key}");
            }
            for page_size in [1, 2, 3, 5, 100] {
                let (seen, state) = drain(&f, TIES, page_size);
                assert_eq!(
                    sorted(seen.clone()),
                    ["a", "b", "c", "d", "e", "f", "g", "h"],
                    "{filter:?} page {page_size}"
                );
                assert_eq!(state.since.as_ref().map(|m| m.ts.clone()), Some(json!(4)));
                // A later pull sees only new records.
                let mut more = TIES.to_vec();
                more.push(("i", 4));
                more.push(("j", 5));
                let ctx = ctx(&f);
                let p = plan(&ctx, &state, page_size.max(3)).unwrap();
                let page = RawPage {
                    items: serve(&more, filter, &p),
                    ..RawPage::default()
                };
                let step = advance(&ctx, &state, &p, page).unwrap();
                let fresh = ids(&step);
                assert!(
                    fresh.iter().all(|id| id == "i" || id == "j"),
                    "{filter:?} {page_size}: {fresh:?}"
                );
            }
        }
    }

    #[test]
    fn exclusive_holds_back_the_trailing_tie() {
        let f = feed(Filter::Exclusive, Pagination::none());
        let ctx = ctx(&f);
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 3).unwrap();
        let page = RawPage {
            items: items(&[("a", 1), ("b", 2), ("c", 2)]),
            ..RawPage::default()
        };
        let step = advance(&ctx, &state, &p, page).unwrap();
        assert_eq!(ids(&step), ["a"]);
        assert!(step.more);
        assert_eq!(step.state.since.unwrap().ts, json!(1));
    }

    #[test]
    fn exclusive_boosts_the_limit_when_one_tie_fills_a_page_then_gives_up() {
        let f = feed(Filter::Exclusive, Pagination::none());
        let ctx = ctx(&f);
        let mut state = FeedCursor::default();
        let mut limits = Vec::new();
        let err = loop {
            let p = plan(&ctx, &state, 2).unwrap();
            limits.push(p.limit);
            let page = RawPage {
                items: (0..p.limit)
                    .map(|i| json!({"id": format!("k{i}"), "updatedAt": 7}))
                    .collect(),
                ..RawPage::default()
            };
            match advance(&ctx, &state, &p, page) {
                Ok(step) => {
                    assert!(step.records.is_empty() && step.more);
                    state = step.state;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(limits, [2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("share one `updatedAt`"), "{err}");
    }

    #[test]
    fn inclusive_raises_the_limit_by_the_seen_keys() {
        let f = feed(Filter::Inclusive, Pagination::none());
        let ctx = ctx(&f);
        let state = FeedCursor {
            since: Some(Mark {
                ts: json!(2),
                key: None,
                seen: vec![Key::from("b"), Key::from("c")],
            }),
            ..FeedCursor::default()
        };
        let p = plan(&ctx, &state, 3).unwrap();
        assert_eq!(p.limit, 5);
        assert_eq!(p.cursor.as_deref(), Some("2"));
    }

    #[test]
    fn unordered_items_are_an_error_when_more_follow() {
        let f = feed(Filter::Exclusive, Pagination::none());
        let ctx = ctx(&f);
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 2).unwrap();
        let page = RawPage {
            items: items(&[("a", 5), ("b", 1)]),
            ..RawPage::default()
        };
        let err = advance(&ctx, &state, &p, page).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[test]
    fn offset_pass_keeps_the_filter_and_resumes() {
        let f = feed(Filter::Exclusive, Pagination::offset()).query("offset", "{offset}");
        let (seen, state) = drain(&f, TIES, 3);
        assert_eq!(seen, ["a", "b", "c", "d", "e", "f", "g", "h"]);
        assert_eq!(state.pass, None);
        assert_eq!(state.since.unwrap().ts, json!(4));

        // Mid-pass the cursor says where to go on.
        let ctx = ctx(&f);
        let s0 = FeedCursor::default();
        let p0 = plan(&ctx, &s0, 3).unwrap();
        let page = RawPage {
            items: serve(TIES, Filter::Exclusive, &p0),
            ..RawPage::default()
        };
        let s1 = advance(&ctx, &s0, &p0, page).unwrap().state;
        let resumed: FeedCursor =
            serde_json::from_value(serde_json::to_value(&s1).unwrap()).unwrap();
        let p1 = plan(&ctx, &resumed, 50).unwrap();
        assert_eq!(
            (p1.offset, p1.limit, p1.cursor.clone()),
            (2, 3, None),
            "one item of overlap with the previous page, same page size"
        );
    }

    /// Walks `data` in pages of 3, calling `change` on it after the first page, until the pull
    /// ends; returns every id applied and the final state.
    fn walk_with_change(
        feed: &Feed,
        mut data: Vec<(&'static str, i64)>,
        change: impl Fn(&mut Vec<(&'static str, i64)>),
    ) -> (Vec<String>, FeedCursor) {
        let ctx = ctx(feed);
        let mut state = FeedCursor::default();
        let mut seen = Vec::new();
        for round in 0..100 {
            let p = plan(&ctx, &state, 3).unwrap();
            let page = RawPage {
                items: serve(&data, feed.filter, &p),
                ..RawPage::default()
            };
            let step = advance(&ctx, &state, &p, page).unwrap();
            seen.extend(ids(&step));
            state = step.state;
            if round == 0 {
                change(&mut data);
            }
            if !step.more {
                return (seen, state);
            }
        }
        panic!("did not finish");
    }

    #[test]
    fn an_offset_walk_that_shifts_walks_again_instead_of_skipping() {
        let f = feed(Filter::Exclusive, Pagination::offset()).query("offset", "{offset}");
        let data: Vec<(&str, i64)> = vec![("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)];
        // `a` is updated after the first page: everything moves one place forward, so `d`
        // would be pulled across the boundary and skipped by a plain offset walk.
        let (seen, state) = walk_with_change(&f, data, |d| d[0].1 = 9);
        assert_eq!(sorted(seen), ["a", "b", "c", "d", "e"]);
        assert_eq!(state.since.unwrap().ts, json!(9));
        assert_eq!(state.rewalks, 0, "reset once a walk completes");
    }

    #[test]
    fn exclusive_keeps_records_inside_a_rounded_instant() {
        // The server filters on finer time than it shows: `b` shows 2 like the checkpoint but
        // is newer in the server's eyes, so it comes back for `> 2`; it must be applied.
        let f = feed(Filter::Exclusive, Pagination::none());
        let ctx = ctx(&f);
        let state = FeedCursor {
            since: Some(Mark {
                ts: json!(2),
                key: None,
                seen: vec![Key::from("a")],
            }),
            ..FeedCursor::default()
        };
        let p = plan(&ctx, &state, 10).unwrap();
        let page = RawPage {
            items: items(&[("a", 2), ("b", 2), ("c", 3)]),
            ..RawPage::default()
        };
        let step = advance(&ctx, &state, &p, page).unwrap();
        assert_eq!(
            ids(&step),
            ["b", "c"],
            "`a` was applied already; `b` is new"
        );
    }

    #[test]
    fn a_silent_cap_without_any_signal_is_found_by_one_more_request() {
        let f = feed(Filter::None, Pagination::page(1)).query("page", "{page}");
        let data: Vec<(&str, i64)> = (0..10)
            .map(|i| {
                (
                    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][i],
                    i as i64,
                )
            })
            .collect();
        let ctx = ctx(&f);
        let mut state = FeedCursor::default();
        let mut seen = Vec::new();
        let mut requests = 0;
        loop {
            let p = plan(&ctx, &state, 6).unwrap();
            requests += 1;
            // The server caps pages at 4 and numbers them by the capped size.
            let size = p.limit.min(4) as usize;
            let start = (p.page as usize - 1) * size;
            let rows: Vec<(&str, i64)> = data.iter().copied().skip(start).take(size).collect();
            let step = advance(
                &ctx,
                &state,
                &p,
                RawPage {
                    items: items(&rows),
                    ..RawPage::default()
                },
            )
            .unwrap();
            seen.extend(ids(&step));
            state = step.state;
            if !step.more {
                break;
            }
            assert!(requests < 20, "did not end");
        }
        assert_eq!(
            sorted(seen),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
        );
        assert_eq!(state.cap, Some(4));
        assert_eq!(
            requests, 4,
            "pages 1-3, and one probe past the short last page"
        );
    }

    /// Collects the messages of `warn` events emitted while `f` runs (this thread only).
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        use tracing::field::{Field, Visit};
        use tracing::span::{Attributes, Id, Record as SpanRecord};
        use tracing::{Event, Level, Metadata, Subscriber};

        struct Collect(Arc<Mutex<Vec<String>>>);
        struct Message(String);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        impl Subscriber for Collect {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                if *event.metadata().level() == Level::WARN {
                    let mut message = Message(String::new());
                    event.record(&mut message);
                    if let Ok(mut all) = self.0.lock() {
                        all.push(message.0);
                    }
                }
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let all = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Collect(all.clone()), f);
        all.lock().map(|v| v.clone()).unwrap_or_default()
    }

    #[test]
    fn unparsable_cursor_values_are_one_visible_warning_per_page() {
        let f = feed(Filter::Exclusive, Pagination::none());
        let ctx = ctx(&f);
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 10).unwrap();
        let page = RawPage {
            items: vec![
                json!({"id": "a", "updatedAt": "2024-05-01 12:00:00.000Z"}),
                json!({"id": "b", "updatedAt": "2024-05-01 12:00:01.000Z"}),
            ],
            ..RawPage::default()
        };
        let mut step = None;
        let warned = warnings(|| step = Some(advance(&ctx, &state, &p, page)));
        let step = step.unwrap().unwrap();
        assert_eq!(ids(&step), ["a", "b"], "applied");
        assert_eq!(step.state.since, None, "not checkpointed");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("fix `timestamp`"), "{warned:?}");
        // Typed, for the sync report: both items unparsed, and no progress.
        assert_eq!(
            step.warnings,
            vec![
                PullWarning::CursorUnparsed {
                    field: "updatedAt".into(),
                    format: "epoch_ms".into(),
                    items: 2,
                    example: "key a: \"2024-05-01 12:00:00.000Z\"".into(),
                },
                PullWarning::NoProgress {
                    items: 2,
                    reason: "none of them carries a `updatedAt` past the checkpoint that the \
                             configured timestamp `epoch_ms` reads"
                        .into(),
                },
            ]
        );
    }

    #[test]
    fn a_page_walk_that_delivers_items_without_moving_the_checkpoint_is_a_warning() {
        // A page walk whose items carry no cursor value: the walk ends where it began.
        let f = feed(Filter::Inclusive, Pagination::page(1)).query("page", "{page}");
        let ctx = ctx(&f);
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 2).unwrap();
        let step = advance(
            &ctx,
            &state,
            &p,
            RawPage {
                items: vec![json!({"id": "a"}), json!({"id": "b"})],
                has_more: Some(true),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(step.more);
        assert!(
            !step
                .warnings
                .iter()
                .any(|w| matches!(w, PullWarning::NoProgress { .. })),
            "mid-walk the checkpoint does not move by design: {:?}",
            step.warnings
        );
        let p2 = plan(&ctx, &step.state, 2).unwrap();
        let last = advance(
            &ctx,
            &step.state,
            &p2,
            RawPage {
                items: vec![json!({"id": "c"})],
                has_more: Some(false),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(!last.more);
        assert_eq!(last.state.since, None);
        assert!(
            last.warnings
                .iter()
                .any(|w| matches!(w, PullWarning::NoProgress { items: 3, .. })),
            "the whole walk's new items: {:?}",
            last.warnings
        );

        // A walk that moves the checkpoint is clean.
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 2).unwrap();
        let clean = advance(
            &ctx,
            &state,
            &p,
            RawPage {
                items: items(&[("a", 1)]),
                has_more: Some(false),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
        assert!(clean.state.since.is_some());
    }

    #[test]
    fn a_short_page_while_more_exist_learns_the_cap_once() {
        let f = feed(Filter::Exclusive, Pagination::none().has_more("/hasMore"));
        let ctx = ctx(&f);
        let state = FeedCursor::default();
        let p = plan(&ctx, &state, 10).unwrap();
        let step = advance(
            &ctx,
            &state,
            &p,
            RawPage {
                items: items(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]),
                has_more: Some(true),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(step.more);
        assert_eq!(step.state.cap, Some(4));
        assert_eq!(plan(&ctx, &step.state, 10).unwrap().limit, 4);
        // Pages at the cap say nothing more.
        let state = step.state;
        let p = plan(&ctx, &state, 10).unwrap();
        let warned = warnings(|| {
            let step = advance(
                &ctx,
                &state,
                &p,
                RawPage {
                    items: items(&[("e", 5), ("f", 6), ("g", 7), ("h", 8)]),
                    has_more: Some(true),
                    ..RawPage::default()
                },
            );
            assert!(step.is_ok_and(|s| s.more && s.state.cap == Some(4)));
        });
        assert!(warned.is_empty(), "said once: {warned:?}");
    }

    #[test]
    fn repeated_page_is_an_error() {
        let f = feed(Filter::None, Pagination::page(1)).query("page", "{page}");
        let ctx = ctx(&f);
        let s0 = FeedCursor::default();
        let p0 = plan(&ctx, &s0, 2).unwrap();
        assert_eq!(p0.page, 1);
        let same = items(&[("a", 1), ("b", 2)]);
        let page = RawPage {
            items: same.clone(),
            ..RawPage::default()
        };
        let s1 = advance(&ctx, &s0, &p0, page).unwrap().state;
        let p1 = plan(&ctx, &s1, 2).unwrap();
        assert_eq!(p1.page, 2);
        let page = RawPage {
            items: same,
            ..RawPage::default()
        };
        let err = advance(&ctx, &s1, &p1, page).unwrap_err();
        assert!(err.to_string().contains("same page twice"), "{err}");
    }

    #[test]
    fn token_and_link_end_and_repeat_signals() {
        let f = Feed::get("/x")
            .query("cursor", "{token}")
            .pagination(Pagination::token("/nextCursor"));
        let ctx = ctx(&f);
        let s0 = FeedCursor::default();
        let p0 = plan(&ctx, &s0, 2).unwrap();
        assert_eq!(p0.token, None);
        let step = advance(
            &ctx,
            &s0,
            &p0,
            RawPage {
                items: items(&[("a", 1)]),
                next_token: Some(json!("t1")),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(step.more, "a short page with a next token is not the end");
        let p1 = plan(&ctx, &step.state, 2).unwrap();
        assert_eq!(p1.token.as_deref(), Some("t1"));
        let err = advance(
            &ctx,
            &step.state,
            &p1,
            RawPage {
                items: items(&[("b", 1)]),
                next_token: Some(json!("t1")),
                ..RawPage::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("token twice"), "{err}");
        let end = advance(
            &ctx,
            &step.state,
            &p1,
            RawPage {
                items: items(&[("b", 1), ("c", 1)]),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(!end.more && end.state.pass.is_none());
    }

    #[test]
    fn has_more_and_total_end_signals() {
        let f = feed(Filter::None, Pagination::offset().has_more("/hasMore"))
            .query("offset", "{offset}");
        let ctx = ctx(&f);
        let s0 = FeedCursor::default();
        let p0 = plan(&ctx, &s0, 2).unwrap();
        let full = items(&[("a", 1), ("b", 2)]);
        let step = advance(
            &ctx,
            &s0,
            &p0,
            RawPage {
                items: full.clone(),
                has_more: Some(false),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(!step.more, "hasMore=false wins over a full page");
        let step = advance(
            &ctx,
            &s0,
            &p0,
            RawPage {
                items: full,
                total: Some(2),
                ..RawPage::default()
            },
        )
        .unwrap();
        assert!(!step.more, "total reached");
        assert_eq!(step.total, Some(2));
    }

    #[test]
    fn tombstones_and_deleted_feed_items_become_deletes() {
        let f = Feed::get("/x").tombstone("deleted");
        let ctx1 = ctx(&f);
        let s = FeedCursor::default();
        let p = plan(&ctx1, &s, 10).unwrap();
        let step = advance(
            &ctx1,
            &s,
            &p,
            RawPage {
                items: vec![
                    json!({"id": "a", "deleted": true}),
                    json!({"id": "b", "deleted": false}),
                    json!({"title": "no key"}),
                    json!(7),
                ],
                ..RawPage::default()
            },
        )
        .unwrap();
        assert_eq!(step.deleted, [Key::from("a")]);
        assert_eq!(ids(&step), ["b"]);

        let d = Feed::get("/x/deleted");
        let ctx2 = FeedCtx {
            deletes_only: true,
            ..ctx(&d)
        };
        let step = advance(
            &ctx2,
            &s,
            &p,
            RawPage {
                items: vec![json!({"id": "a"}), json!("b"), json!(3), json!(null)],
                ..RawPage::default()
            },
        )
        .unwrap();
        assert_eq!(step.deleted, [Key::from("a"), Key::from("b"), Key::Int(3)]);
        assert!(step.records.is_empty());
    }

    #[test]
    fn cursor_is_rendered_in_the_cursor_format() {
        let f = feed(Filter::Exclusive, Pagination::none()).cursor_format(TimeFormat::Rfc3339);
        let ctx = ctx(&f);
        let state = FeedCursor {
            since: Some(Mark {
                ts: json!(1_700_000_000_123i64),
                key: None,
                seen: vec![],
            }),
            ..FeedCursor::default()
        };
        let p = plan(&ctx, &state, 1).unwrap();
        assert_eq!(p.cursor.as_deref(), Some("2023-11-14T22:13:20.123Z"));
        let bad = FeedCursor {
            since: Some(Mark {
                ts: json!("nope"),
                key: None,
                seen: vec![],
            }),
            ..FeedCursor::default()
        };
        assert_eq!(
            plan(&ctx, &bad, 1).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
