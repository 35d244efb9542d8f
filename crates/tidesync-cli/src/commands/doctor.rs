//! `tidesync doctor [--table TABLE] [--write]`: checks the configured server against the
//! config, table by table, and says which setting to change. Every check is a request built
//! exactly as sync builds it (the REST transport's probes); nothing local is read or written.
//!
//! Read-only checks: the feed is reachable and authenticated; its `items` pointer finds an
//! array; `cursor_field` is in the items and parses with `timestamp` (to a plausible time);
//! items come in ascending cursor order; the filter filters (from the newest cursor only newer
//! items come back) and compares `{cursor}` the way it is written (from the oldest cursor the
//! newer items do come back); a page shorter than asked while more exist (a silent cap); the
//! tombstone field; the version field or `ETag`; the origin of next links; the server clock
//! (`Date`). With `--write`, on a scratch record per table (deleted afterwards): create, update
//! with the base version and with a stale one (a conflict expected), and check the change comes
//! back through the pull feed, then delete and check the delete shows in the feed.
//!
//! Exit 0 when no finding is an error (warnings and notes included), 1 otherwise.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tidesync::core::{Op, PullRequest, PushRequest, Transport};
use tidesync::{Key, KeyKind, Record, TableSpec};
use tidesync_transport_rest::{
    FeedProbe, Filter, ForeignLinks, PageStyle, ProbeResponse, RestTransport, TableRoutes,
    TimeFormat,
};

use crate::build;
use crate::commands::{Ctx, unknown_table};
use crate::error::{CliError, Exit};

/// Clock skew from which the server's `Date` is a warning.
const SKEW_WARNING_MS: i64 = 30_000;
/// Pages a `--write` check walks on a feed without a filter before giving up.
const MAX_WALK_PAGES: usize = 1000;
/// Plausible timestamps: 2000-01-01 to 2100-01-01, in nanoseconds.
const PLAUSIBLE_NS: (i128, i128) = (946_684_800_000_000_000, 4_102_444_800_000_000_000);

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; nothing to change.
    Info,
    /// Works, but costs requests or depends on luck.
    Warning,
    /// Data goes missing or sync fails: change the setting.
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Info => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One finding: the table, the check, the setting to change and how.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The table.
    pub table: String,
    /// The check (`reachable`, `auth`, `items`, `cursor_field`, `timestamp`, `order`,
    /// `filter`, `cursor_text`, `page_cap`, `tombstone`, `version`, `etag`, `next_links`,
    /// `clock`, `write`).
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The config setting to change (a dotted path in the config file).
    pub setting: String,
    /// What was seen.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// The checks of one table.
struct TableDoctor<'a> {
    transport: &'a RestTransport,
    spec: &'a TableSpec,
    routes: &'a TableRoutes,
    page_size: u64,
    findings: Vec<Finding>,
    passed: Vec<&'static str>,
}

/// An item of the first page, as the doctor reads it.
#[derive(Debug, Clone)]
struct Item {
    key: Option<Value>,
    raw_cursor: Option<Value>,
    ns: Option<i128>,
    tombstone: bool,
    record: Map<String, Value>,
}

/// Runs the doctor.
pub async fn run(ctx: &Ctx, table: Option<&str>, write: bool) -> Result<(), CliError> {
    let loaded = ctx.load()?;
    if let Some(name) = table
        && loaded.table(name).is_none()
    {
        return Err(unknown_table(&loaded, name));
    }
    let transport = build::transport(&loaded, &build::process_env)?;
    let page_size = u64::try_from(loaded.config.sync.page_size.max(1)).unwrap_or(u64::MAX);
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    for spec in &loaded.config.tables {
        if table.is_some_and(|t| t != spec.name) || (!spec.pull && !spec.push) {
            continue;
        }
        let Some(routes) = transport.config().tables.get(&spec.name) else {
            continue;
        };
        let mut doctor = TableDoctor {
            transport: &transport,
            spec,
            routes,
            page_size,
            findings: Vec::new(),
            passed: Vec::new(),
        };
        doctor.check(write).await;
        checked.push(json!({ "table": spec.name, "passed": doctor.passed }));
        if !ctx.out.json {
            for finding in &doctor.findings {
                ctx.out.line(format!(
                    "{:<7} {}: {} [{}]: {} -> fix: {}",
                    finding.severity.label(),
                    finding.table,
                    finding.setting,
                    finding.check,
                    finding.message,
                    finding.fix
                ));
            }
            ctx.out.line(format!(
                "ok      {}: {} check(s) passed{}",
                spec.name,
                doctor.passed.len(),
                if doctor.passed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", doctor.passed.join(", "))
                }
            ));
        }
        findings.extend(doctor.findings);
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if ctx.out.json {
        ctx.out.json(&json!({
            "ok": errors == 0,
            "errors": errors,
            "findings": findings,
            "tables": checked,
        }))?;
        if errors > 0 {
            return Err(CliError::reported(
                Exit::Failed,
                format!("doctor: {errors} error(s)"),
            ));
        }
        return Ok(());
    }
    if errors > 0 {
        return Err(CliError::msg(
            Exit::Failed,
            format!("doctor found {errors} error(s); each line above names the setting to change"),
        ));
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A guess of the `timestamp` setting for a value the server wrote.
fn guess_format(value: &Value) -> Option<String> {
    let magnitude = |n: f64| {
        let n = n.abs();
        if n >= 1e14 {
            "\"epoch_us\""
        } else if n >= 1e11 {
            "\"epoch_ms\""
        } else {
            "\"epoch_s\""
        }
    };
    match value {
        Value::Number(n) => n.as_f64().map(|n| magnitude(n).to_owned()),
        Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
            s.parse::<f64>().ok().map(|n| magnitude(n).to_owned())
        }
        Value::String(s) => {
            let as_rfc = s.replacen(' ', "T", 1);
            let is_time = TimeFormat::Rfc3339
                .parse(&Value::String(as_rfc.clone()))
                .is_some()
                || TimeFormat::Rfc3339
                    .parse(&Value::String(format!("{as_rfc}Z")))
                    .is_some();
            if !is_time {
                return None;
            }
            let time_part = s.get(11..).unwrap_or_default();
            let fraction = time_part
                .split_once('.')
                .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).count());
            let zone = if s.ends_with('Z') {
                "Z"
            } else if time_part.contains('+') || time_part.contains('-') {
                "+00:00"
            } else {
                "none"
            };
            let separator = if s.as_bytes().get(10) == Some(&b' ') {
                " "
            } else {
                "T"
            };
            if separator == "T" && zone != "none" && fraction.is_none_or(|f| f >= 3) {
                return Some("\"rfc3339\"".to_owned());
            }
            Some(format!(
                "{{ separator = \"{separator}\"{}, zone = \"{zone}\" }}",
                fraction.map_or(String::new(), |f| format!(", fraction = {f}"))
            ))
        }
        _ => None,
    }
}

/// The JSON text of a value, short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl TableDoctor<'_> {
    fn table(&self) -> &str {
        &self.spec.name
    }

    fn setting(&self, path: &str) -> String {
        if path.is_empty() {
            format!("server.tables.{}", self.table())
        } else {
            format!("server.tables.{}.{path}", self.table())
        }
    }

    fn find(
        &mut self,
        check: &'static str,
        severity: Severity,
        setting: String,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            table: self.spec.name.clone(),
            check,
            severity,
            setting,
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn pass(&mut self, check: &'static str) {
        if !self.passed.contains(&check) {
            self.passed.push(check);
        }
    }

    /// The feed's key field.
    fn key_field(&self) -> String {
        self.routes
            .pull
            .as_ref()
            .and_then(|feed| feed.key.clone())
            .unwrap_or_else(|| self.routes.key.clone())
    }

    /// Checks a probe's status; `false` when the answer cannot be used.
    fn answered(&mut self, what: &str, setting: &str, probe: &ProbeResponse) -> bool {
        match probe.status {
            s if (200..300).contains(&s) => true,
            401 | 403 => {
                self.find(
                    "auth",
                    Severity::Error,
                    "auth".to_owned(),
                    format!(
                        "GET {} answered {} (credentials refused)",
                        probe.url, probe.status
                    ),
                    "set [auth] bearer_env or headers_env to an environment variable holding a \
                     valid credential, exported before running tidesync",
                );
                false
            }
            404 => {
                self.find(
                    "reachable",
                    Severity::Error,
                    self.setting(setting),
                    format!("{what}: GET {} answered 404", probe.url),
                    format!(
                        "correct the path in {} (and base_url, which it is appended to)",
                        self.setting(setting)
                    ),
                );
                false
            }
            status => {
                self.find(
                    "reachable",
                    Severity::Error,
                    self.setting(setting),
                    format!(
                        "{what}: GET {} answered {status}: {}",
                        probe.url, probe.excerpt
                    ),
                    "check the parameters this route sends (the server refused them)",
                );
                false
            }
        }
    }

    async fn check(&mut self, write: bool) {
        let Some(feed) = self.routes.pull.clone() else {
            if self.spec.pull {
                self.find(
                    "reachable",
                    Severity::Error,
                    self.setting("pull"),
                    "the table pulls (pull = true) but has no pull route",
                    format!("add [{}] with the change feed", self.setting("pull")),
                );
            }
            return;
        };
        let first = match self
            .transport
            .probe_feed(self.table(), false, &FeedProbe::first(self.page_size))
            .await
        {
            Ok(probe) => probe,
            Err(err) => {
                self.find(
                    "reachable",
                    Severity::Error,
                    "server.base_url".to_owned(),
                    format!("the feed could not be requested: {err}"),
                    "check server.base_url and that the server runs and is reachable from here",
                );
                return;
            }
        };
        if !self.answered("the change feed", "pull.url", &first) {
            return;
        }
        self.pass("reachable");
        self.check_clock(&first);
        let Some(items) = self.items(&feed, &first) else {
            return;
        };
        self.check_next_links(&feed, &first);
        let items = self.read_items(&feed, &items);
        self.check_cursor_field(&feed, &items);
        self.check_order(&feed, &items);
        self.check_filter(&feed, &items).await;
        self.check_page_cap(&feed, &first, &items).await;
        self.check_tombstone(&feed, &items);
        self.check_version(&items).await;
        if write {
            self.check_writes(&feed, &items).await;
        }
    }

    fn check_clock(&mut self, probe: &ProbeResponse) {
        let Some(server) = probe.server_time_ms else {
            self.find(
                "clock",
                Severity::Info,
                "(server)".to_owned(),
                "the server sends no Date header: its clock cannot be compared",
                "nothing to change; clock-based conflict strategies then trust record \
                 timestamps as they are",
            );
            return;
        };
        let skew = server - now_ms();
        // `Date` has whole seconds.
        if skew.abs() >= SKEW_WARNING_MS {
            self.find(
                "clock",
                Severity::Warning,
                "(system clock)".to_owned(),
                format!(
                    "the server's clock (Date header) is {:.1}s {} this machine's",
                    skew.abs() as f64 / 1000.0,
                    if skew > 0 { "ahead of" } else { "behind" }
                ),
                "synchronize the clocks (NTP) of the server and this machine; \
                 last_write_wins compares them",
            );
        } else {
            self.pass("clock");
        }
    }

    /// The item list of a feed answer, or a finding.
    fn items(
        &mut self,
        feed: &tidesync_transport_rest::Feed,
        probe: &ProbeResponse,
    ) -> Option<Vec<Value>> {
        let body = match &probe.body {
            Ok(body) => body,
            Err(why) => {
                self.find(
                    "items",
                    Severity::Error,
                    self.setting("pull.url"),
                    format!("GET {}: {why}: {}", probe.url, probe.excerpt),
                    "point pull.url at the API's JSON list of records",
                );
                return None;
            }
        };
        if let Some(Value::Array(items)) = feed.items.get(body) {
            self.pass("items");
            return Some(items.clone());
        }
        let arrays: Vec<String> = match body {
            Value::Array(_) => vec!["\"\"".to_owned()],
            Value::Object(map) => map
                .iter()
                .filter(|(_, v)| v.is_array())
                .map(|(k, _)| format!("\"/{k}\""))
                .collect(),
            _ => Vec::new(),
        };
        self.find(
            "items",
            Severity::Error,
            self.setting("pull.items"),
            format!(
                "items = \"{}\" finds no array in the answer of GET {}",
                feed.items, probe.url
            ),
            if arrays.is_empty() {
                "point items at the array of records (a JSON pointer; \"\" for a bare array)"
                    .to_owned()
            } else {
                format!(
                    "set items = {} (the arrays in the answer)",
                    arrays.join(" or ")
                )
            },
        );
        None
    }

    fn read_items(&self, feed: &tidesync_transport_rest::Feed, items: &[Value]) -> Vec<Item> {
        let key_field = self.key_field();
        items
            .iter()
            .filter_map(Value::as_object)
            .map(|record| {
                let raw_cursor = feed
                    .cursor_field
                    .as_ref()
                    .and_then(|f| record.get(f))
                    .cloned();
                Item {
                    key: record.get(&key_field).cloned(),
                    ns: raw_cursor.as_ref().and_then(|v| feed.timestamp.parse(v)),
                    raw_cursor,
                    tombstone: feed
                        .tombstone
                        .as_ref()
                        .is_some_and(|t| record.get(&t.field) == Some(&t.value)),
                    record: record.clone(),
                }
            })
            .collect()
    }

    fn check_cursor_field(&mut self, feed: &tidesync_transport_rest::Feed, items: &[Item]) {
        let Some(field) = feed.cursor_field.clone() else {
            return;
        };
        if items.is_empty() {
            self.find(
                "cursor_field",
                Severity::Info,
                self.setting("pull.cursor_field"),
                "the feed is empty: cursor field, timestamp format, order and filter cannot be \
                 checked",
                "run doctor again once the server has records (or with --write)",
            );
            return;
        }
        if let Some(item) = items.iter().find(|i| i.raw_cursor.is_none()) {
            let candidates: Vec<String> = item
                .record
                .iter()
                .filter(|(name, value)| {
                    let lower = name.to_ascii_lowercase();
                    (lower.contains("updat") || lower.contains("modif") || lower.contains("chang"))
                        && guess_format(value).is_some()
                })
                .map(|(name, _)| format!("\"{name}\""))
                .collect();
            self.find(
                "cursor_field",
                Severity::Error,
                self.setting("pull.cursor_field"),
                format!(
                    "item {} has no `{field}` field",
                    item.key.as_ref().map(shown).unwrap_or_default()
                ),
                if candidates.is_empty() {
                    "set cursor_field to the field holding each record's change time".to_owned()
                } else {
                    format!("set cursor_field = {}", candidates.join(" or "))
                },
            );
            return;
        }
        self.pass("cursor_field");
        let bad = items.iter().find(|i| {
            i.ns.is_none_or(|ns| !(PLAUSIBLE_NS.0..PLAUSIBLE_NS.1).contains(&ns))
        });
        match bad {
            Some(item) => {
                let raw = item.raw_cursor.clone().unwrap_or(Value::Null);
                let what = if item.ns.is_none() {
                    "does not parse"
                } else {
                    "parses to a time outside 2000–2100"
                };
                self.find(
                    "timestamp",
                    Severity::Error,
                    self.setting("pull.timestamp"),
                    format!(
                        "`{field}` = {} {what} with timestamp = {}",
                        shown(&raw),
                        feed.timestamp
                    ),
                    match guess_format(&raw) {
                        Some(guess) => format!("set timestamp = {guess}"),
                        None => "set timestamp to how the API writes the field".to_owned(),
                    },
                );
            }
            None => self.pass("timestamp"),
        }
    }

    fn check_order(&mut self, feed: &tidesync_transport_rest::Feed, items: &[Item]) {
        let times: Vec<i128> = items.iter().filter_map(|i| i.ns).collect();
        if times.len() < 2 || times.len() != items.len() {
            return;
        }
        let Some(at) = times.windows(2).position(|w| w[1] < w[0]) else {
            self.pass("order");
            return;
        };
        let severity = if feed.filter == Filter::None && feed.pagination.style != PageStyle::None {
            Severity::Warning
        } else {
            Severity::Error
        };
        let field = feed.cursor_field.clone().unwrap_or_default();
        self.find(
            "order",
            severity,
            self.setting("pull.query"),
            format!(
                "items are not in ascending `{field}` order: item {} ({}) comes after item {} \
                 ({})",
                items[at + 1].key.as_ref().map(shown).unwrap_or_default(),
                items[at + 1]
                    .raw_cursor
                    .as_ref()
                    .map(shown)
                    .unwrap_or_default(),
                items[at].key.as_ref().map(shown).unwrap_or_default(),
                items[at].raw_cursor.as_ref().map(shown).unwrap_or_default(),
            ),
            format!(
                "add the API's sort parameters to pull.query so items come by `{field}` \
                 ascending, then key (written first: query parameters go out in the order \
                 written)"
            ),
        );
    }

    async fn check_filter(&mut self, feed: &tidesync_transport_rest::Feed, items: &[Item]) {
        if feed.filter == Filter::None {
            if !items.is_empty() {
                self.find(
                    "filter",
                    Severity::Info,
                    self.setting("pull.filter"),
                    "no filter: every sync reads the whole feed",
                    "if the API filters by change time, add it to pull.query with `{cursor}` \
                     and set filter",
                );
            }
            return;
        }
        let dated: Vec<&Item> = items.iter().filter(|i| i.ns.is_some()).collect();
        let (Some(oldest), Some(newest)) = (
            dated.iter().min_by_key(|i| i.ns).copied(),
            dated.iter().max_by_key(|i| i.ns).copied(),
        ) else {
            return;
        };
        let format = feed.cursor_format.unwrap_or(feed.timestamp);
        let (old_ns, new_ns) = (oldest.ns.unwrap_or(0), newest.ns.unwrap_or(0));
        let keyset = feed.filter == Filter::Keyset;
        let new_key = newest.key.as_ref().map(key_text);
        // From the newest cursor: only newer items, or nothing.
        let probe = FeedProbe::after(
            format.format(new_ns),
            if keyset { new_key.clone() } else { None },
            self.page_size,
        );
        let Some(after_newest) = self.probe_items(feed, &probe).await else {
            return;
        };
        let stale = after_newest.iter().find(|i| match i.ns {
            Some(ns) if ns < new_ns => true,
            Some(ns) if ns == new_ns => {
                feed.filter != Filter::Inclusive && i.key.as_ref().map(key_text) == new_key
            }
            _ => false,
        });
        if let Some(item) = stale {
            self.find(
                "filter",
                Severity::Error,
                self.setting("pull.query"),
                format!(
                    "from {{cursor}} = {} the server still returned item {} ({}): the filter \
                     is not applied",
                    probe.cursor.clone().unwrap_or_default(),
                    item.key.as_ref().map(shown).unwrap_or_default(),
                    item.raw_cursor.as_ref().map(shown).unwrap_or_default(),
                ),
                "use the parameter name and syntax the API filters with in the pull.query entry \
                 holding {cursor}, and set filter to what it does (exclusive, inclusive, keyset)",
            );
            return;
        }
        // From the oldest cursor: the newer items do come back (the server compares
        // `{cursor}` the way it is written).
        if old_ns < new_ns {
            let probe = FeedProbe::after(format.format(old_ns), None, self.page_size);
            let Some(after_oldest) = self.probe_items(feed, &probe).await else {
                return;
            };
            if after_oldest.is_empty() {
                let server_text = newest.raw_cursor.as_ref().map(shown).unwrap_or_default();
                self.find(
                    "cursor_text",
                    Severity::Error,
                    self.setting("pull.cursor_format"),
                    format!(
                        "from {{cursor}} = {} the server returned nothing, although item {} \
                         changed later ({server_text}): it compares {{cursor}} differently from \
                         how tidesync writes it",
                        probe.cursor.clone().unwrap_or_default(),
                        newest.key.as_ref().map(shown).unwrap_or_default(),
                    ),
                    match newest.raw_cursor.as_ref().and_then(guess_format) {
                        Some(guess) => format!(
                            "write {{cursor}} the way the server writes `{}`: cursor_format = \
                             {guess}",
                            feed.cursor_field.clone().unwrap_or_default()
                        ),
                        None => "set cursor_format to how the server writes the field".to_owned(),
                    },
                );
                return;
            }
        }
        self.pass("filter");
    }

    /// One probe of the feed, read into items; a finding and `None` when it failed.
    async fn probe_items(
        &mut self,
        feed: &tidesync_transport_rest::Feed,
        probe: &FeedProbe,
    ) -> Option<Vec<Item>> {
        let answer = match self.transport.probe_feed(self.table(), false, probe).await {
            Ok(answer) => answer,
            Err(err) => {
                self.find(
                    "reachable",
                    Severity::Error,
                    "server.base_url".to_owned(),
                    format!("the feed could not be requested: {err}"),
                    "check server.base_url and that the server is reachable",
                );
                return None;
            }
        };
        if !self.answered("the change feed with {cursor}", "pull.query", &answer) {
            return None;
        }
        let items = match answer.body.as_ref().ok().and_then(|b| feed.items.get(b)) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        Some(self.read_items(feed, &items))
    }

    async fn check_page_cap(
        &mut self,
        feed: &tidesync_transport_rest::Feed,
        first: &ProbeResponse,
        items: &[Item],
    ) {
        let sends_limit =
            feed.url.uses("limit") || feed.query.values().any(|template| template.uses("limit"));
        let got = items.len() as u64;
        if !sends_limit || got == 0 || got >= self.page_size {
            return;
        }
        let body = first.body.as_ref().ok();
        let p = &feed.pagination;
        let mut more = p
            .has_more
            .as_ref()
            .and_then(|ptr| body.and_then(|b| ptr.get(b)))
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || p.total
                .as_ref()
                .and_then(|ptr| body.and_then(|b| ptr.get(b)))
                .and_then(Value::as_u64)
                .is_some_and(|total| total > got)
            || p.next
                .as_ref()
                .and_then(|ptr| body.and_then(|b| ptr.get(b)))
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
            || (p.style == PageStyle::Link && first.link_next.is_some());
        if !more && feed.filter != Filter::None {
            let last = items.iter().rev().find(|i| i.ns.is_some());
            if let Some(last) = last {
                let format = feed.cursor_format.unwrap_or(feed.timestamp);
                let probe = FeedProbe::after(
                    format.format(last.ns.unwrap_or(0)),
                    (feed.filter == Filter::Keyset)
                        .then(|| last.key.as_ref().map(key_text))
                        .flatten(),
                    self.page_size,
                );
                if let Ok(answer) = self.transport.probe_feed(self.table(), false, &probe).await
                    && answer.success()
                {
                    let next = answer.body.as_ref().ok().and_then(|b| feed.items.get(b));
                    more = matches!(next, Some(Value::Array(next)) if !next.is_empty());
                }
            }
        }
        if more {
            self.find(
                "page_cap",
                Severity::Warning,
                "sync.page_size".to_owned(),
                format!(
                    "asked for {} items and got {got} while more exist: the server caps pages \
                     at {got} without saying so",
                    self.page_size
                ),
                format!(
                    "set sync.page_size = {got} (tidesync learns the cap, but each new walk \
                     asks for {} first)",
                    self.page_size
                ),
            );
        } else {
            self.pass("page_cap");
        }
    }

    fn check_tombstone(&mut self, feed: &tidesync_transport_rest::Feed, items: &[Item]) {
        let Some(tombstone) = &feed.tombstone else {
            return;
        };
        if items.is_empty() {
            return;
        }
        if items.iter().any(|i| i.tombstone) {
            self.pass("tombstone");
            return;
        }
        if items
            .iter()
            .any(|i| i.record.contains_key(&tombstone.field))
        {
            let seen = items
                .iter()
                .find_map(|i| i.record.get(&tombstone.field))
                .cloned()
                .unwrap_or(Value::Null);
            if seen.is_boolean() != tombstone.value.is_boolean() {
                self.find(
                    "tombstone",
                    Severity::Warning,
                    self.setting("pull.tombstone.value"),
                    format!(
                        "`{}` holds {} but the configured tombstone value is {}",
                        tombstone.field,
                        shown(&seen),
                        shown(&tombstone.value)
                    ),
                    "set tombstone.value to what the API writes for a deleted record",
                );
            }
            return;
        }
        let candidates: Vec<String> = items
            .iter()
            .flat_map(|i| i.record.iter())
            .filter(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                (lower.contains("delet") || lower.contains("remov") || lower.contains("trash"))
                    && !value.is_null()
                    && value != &&Value::Bool(false)
            })
            .map(|(name, _)| format!("\"{name}\""))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if candidates.is_empty() {
            self.find(
                "tombstone",
                Severity::Info,
                self.setting("pull.tombstone"),
                format!(
                    "no item on the first page carries `{}`: no record is deleted yet, or the \
                     server deletes for good",
                    tombstone.field
                ),
                "doctor --write deletes a scratch record and checks the tombstone comes back",
            );
        } else {
            self.find(
                "tombstone",
                Severity::Error,
                self.setting("pull.tombstone.field"),
                format!(
                    "no item carries `{}`, but deleted items carry {}",
                    tombstone.field,
                    candidates.join(", ")
                ),
                format!("set tombstone = {{ field = {} }}", candidates.join(" or ")),
            );
        }
    }

    async fn check_version(&mut self, items: &[Item]) {
        if let Some(field) = self.routes.version.field.clone() {
            match items.iter().find(|i| !i.record.contains_key(&field)) {
                None if !items.is_empty() => self.pass("version"),
                None => {}
                Some(item) => {
                    let candidates: Vec<String> = item
                        .record
                        .keys()
                        .filter(|name| {
                            let lower = name.to_ascii_lowercase();
                            lower.contains("version")
                                || lower == "rev"
                                || lower == "_rev"
                                || lower.contains("etag")
                        })
                        .map(|name| format!("\"{name}\""))
                        .collect();
                    self.find(
                        "version",
                        Severity::Error,
                        self.setting("version.field"),
                        format!(
                            "item {} has no `{field}` field: updates cannot carry their base \
                             version",
                            item.key.as_ref().map(shown).unwrap_or_default()
                        ),
                        if candidates.is_empty() {
                            "set version = { field = \"...\" } to the API's version field, or \
                             version = { etag = true } if it uses ETags"
                                .to_owned()
                        } else {
                            format!("set version = {{ field = {} }}", candidates.join(" or "))
                        },
                    );
                }
            }
        }
        if !self.routes.version.etag {
            return;
        }
        let key = items
            .iter()
            .find(|i| !i.tombstone)
            .and_then(|i| i.key.as_ref())
            .and_then(|k| self.key_of(k));
        let Some(key) = key else {
            return;
        };
        if self.routes.fetch.is_none() {
            self.find(
                "etag",
                Severity::Info,
                self.setting("fetch"),
                "version = { etag = true } but no fetch route: the ETag cannot be checked",
                "add a fetch route",
            );
            return;
        }
        match self.transport.probe_fetch(self.table(), &key).await {
            Ok(answer) if answer.success() && answer.etag.is_some() => self.pass("etag"),
            Ok(answer) if answer.success() => self.find(
                "etag",
                Severity::Error,
                self.setting("version.etag"),
                format!("GET {} has no ETag header", answer.url),
                "the API does not send ETags: set version = { field = \"...\" } to its version \
                 field instead",
            ),
            Ok(answer) => {
                self.answered("the fetch route", "fetch.url", &answer);
            }
            Err(err) => self.find(
                "reachable",
                Severity::Error,
                self.setting("fetch.url"),
                format!("the fetch route could not be requested: {err}"),
                "check the fetch route",
            ),
        }
    }

    fn key_of(&self, value: &Value) -> Option<Key> {
        match (self.spec.key_kind, value) {
            (KeyKind::Integer, Value::Number(n)) => n.as_i64().map(Key::Int),
            (KeyKind::Integer, Value::String(s)) => s.parse().ok().map(Key::Int),
            (KeyKind::String, Value::String(s)) => Some(Key::Str(s.clone())),
            (KeyKind::String, Value::Number(n)) => Some(Key::Str(n.to_string())),
            _ => None,
        }
    }

    fn check_next_links(&mut self, feed: &tidesync_transport_rest::Feed, first: &ProbeResponse) {
        let Some(link) = &first.link_next else {
            return;
        };
        if self.transport.is_same_origin(link) {
            self.pass("next_links");
            return;
        }
        let origin = reqwest_origin(link);
        let base = &self.transport.config().base_url;
        if feed.pagination.style != PageStyle::Link {
            self.find(
                "next_links",
                Severity::Info,
                self.setting("pull.pagination"),
                format!(
                    "the server's next links name {origin}, not base_url {base}; they are \
                     ignored (pagination style is not `link`)"
                ),
                "nothing to change",
            );
            return;
        }
        let (severity, fix) = match feed.pagination.foreign_links {
            ForeignLinks::Refuse => (
                Severity::Error,
                "set pagination.foreign_links = \"rewrite\" (path and query go to base_url), or \
                 make the proxy keep the Host",
            ),
            ForeignLinks::Follow => (
                Severity::Warning,
                "credentials are sent to that origin too; prefer foreign_links = \"rewrite\" \
                 unless it is the right host",
            ),
            ForeignLinks::Rewrite => (
                Severity::Info,
                "nothing to change: they are rewritten onto base_url (foreign_links = \
                 \"rewrite\")",
            ),
        };
        self.find(
            "next_links",
            severity,
            self.setting("pull.pagination.foreign_links"),
            format!("the server's next links name {origin}, not base_url {base}"),
            fix,
        );
    }

    async fn check_writes(&mut self, feed: &tidesync_transport_rest::Feed, items: &[Item]) {
        let table = self.table().to_owned();
        if !self.spec.push || self.routes.create.is_none() {
            self.find(
                "write",
                Severity::Info,
                self.setting("create"),
                "no create route: --write has nothing to try",
                "nothing to change",
            );
            return;
        }
        let end = self.feed_end(feed, items).await;
        let stamp = now_ms();
        let mut key = match self.spec.key_kind {
            KeyKind::Integer => Key::Int(stamp),
            KeyKind::String => Key::Str(format!("tidesync-doctor-{stamp}-{}", std::process::id())),
        };
        let key_field = self.routes.key.clone();
        // A scratch record shaped like the server's records (required fields present).
        let mut record: Record = items
            .iter()
            .find(|i| !i.tombstone)
            .map(|i| i.record.clone())
            .unwrap_or_default();
        for field in [feed.cursor_field.clone(), self.routes.version.field.clone()]
            .into_iter()
            .flatten()
            .chain(feed.tombstone.as_ref().map(|t| t.field.clone()))
        {
            record.remove(&field);
        }
        record.insert(key_field.clone(), key.to_json());
        let marker = record
            .iter()
            .find(|(name, value)| **name != key_field && value.is_string())
            .map(|(name, _)| name.clone());
        let request = |op: Op, key: &Key, record: Option<Record>, base: Option<String>, n: &str| {
            PushRequest {
                table: table.clone(),
                key: key.clone(),
                op,
                record,
                changed: Vec::new(),
                idempotency_key: format!("tidesync-doctor-{stamp}-{n}"),
                base_version: base,
                epoch: None,
            }
        };
        let created = match self
            .transport
            .push(request(
                Op::Create,
                &key,
                Some(record.clone()),
                None,
                "create",
            ))
            .await
        {
            Ok(outcome) => outcome,
            Err(err) => {
                self.find(
                    "write",
                    Severity::Error,
                    self.setting("create"),
                    format!("creating scratch record {key} failed: {err}"),
                    "check the create route (method, url, body)",
                );
                return;
            }
        };
        if let Some(server_key) = created.server_key.clone() {
            key = server_key;
            record.insert(key_field.clone(), key.to_json());
        }
        let mut version = created.version.clone();
        let versioned = self.routes.version.field.is_some() || self.routes.version.etag;
        if versioned && version.is_none() {
            self.find(
                "version",
                Severity::Warning,
                self.setting("version"),
                format!("the create of {key} returned no version token"),
                "set version to where the API returns it (a field of the answer, or the ETag)",
            );
        }
        let marked = marker.as_ref().map(|field| {
            let text = format!("tidesync doctor {stamp}");
            record.insert(field.clone(), Value::String(text.clone()));
            (field.clone(), Value::String(text))
        });
        let mut update = request(
            Op::Update,
            &key,
            Some(record.clone()),
            version.clone(),
            "update",
        );
        update.changed = marked.iter().map(|(f, _)| f.clone()).collect();
        let mut updated_ok = false;
        if self.routes.update.is_some() {
            match self.transport.push(update).await {
                Ok(outcome) => {
                    version = outcome.version.or(version);
                    updated_ok = true;
                }
                Err(err) => self.find(
                    "write",
                    Severity::Error,
                    if err.kind() == tidesync::ErrorKind::Conflict {
                        self.setting("version")
                    } else {
                        self.setting("update")
                    },
                    format!(
                        "updating scratch record {key} with its base version {} failed: {err}",
                        version.clone().unwrap_or_else(|| "(none)".to_owned())
                    ),
                    if err.kind() == tidesync::ErrorKind::Conflict {
                        "the server refused its own version as stale: make version name the \
                         field (or ETag) the server checks"
                    } else {
                        "check the update route (method, url, body)"
                    },
                ),
            }
        }
        // An update based on the version the update replaced must be refused as a conflict.
        if updated_ok
            && versioned
            && let Some(stale) = created.version.clone()
            && version.as_ref() != Some(&stale)
        {
            let again = request(
                Op::Update,
                &key,
                Some(record.clone()),
                Some(stale.clone()),
                "stale",
            );
            match self.transport.push(again).await {
                Err(err) if err.kind() == tidesync::ErrorKind::Conflict => {
                    self.pass("stale_version");
                }
                Ok(outcome) => {
                    version = outcome.version.or(version);
                    self.find(
                        "stale_version",
                        Severity::Warning,
                        self.setting("version"),
                        format!(
                            "an update of {key} based on the stale version {stale} was accepted: \
                             the server does not check the version this config sends, so \
                             concurrent edits overwrite each other"
                        ),
                        "make version name the field (or ETag) the server checks; without one, \
                         pick a conflict strategy that tolerates lost updates",
                    );
                }
                Err(err) => self.find(
                    "stale_version",
                    Severity::Warning,
                    self.setting("version"),
                    format!(
                        "an update of {key} based on the stale version {stale} failed, but not \
                         as a conflict ({}): {err}",
                        err.kind()
                    ),
                    "a stale write should be answered 409 or 412, which tidesync resolves as a \
                     conflict; other answers are retried or dead-lettered",
                ),
            }
        }
        match self.find_in_feed(feed, end, &key).await {
            Some(found) => {
                let shows_update = marked
                    .as_ref()
                    .is_none_or(|(field, value)| found.get(field) == Some(value));
                if shows_update || !updated_ok {
                    self.pass("write");
                } else {
                    self.find(
                        "write",
                        Severity::Error,
                        self.setting("pull"),
                        format!("the pull feed returned {key} without its update"),
                        "the feed must list a record again after each change: check the \
                         filter parameter and cursor_field",
                    );
                }
            }
            None => self.find(
                "write",
                Severity::Error,
                self.setting("pull"),
                format!(
                    "scratch record {key}, created and updated, did not come back through the \
                     pull feed"
                ),
                "the feed must list changed records: check pull.url, pull.query and the filter",
            ),
        }
        if self.routes.delete.is_none() {
            self.find(
                "write",
                Severity::Warning,
                self.setting("delete"),
                format!("no delete route: scratch record {key} stays on the server"),
                "delete it by hand, and add a delete route",
            );
            return;
        }
        let delete = request(Op::Delete, &key, Some(record), version, "delete");
        if let Err(err) = self.transport.push(delete).await {
            self.find(
                "write",
                Severity::Error,
                self.setting("delete"),
                format!("deleting scratch record {key} failed (it stays on the server): {err}"),
                "check the delete route",
            );
            return;
        }
        if feed.deleted.is_some() {
            return;
        }
        let after = self.find_in_feed(feed, end, &key).await;
        let tombstoned = after.as_ref().is_some_and(|found| {
            feed.tombstone
                .as_ref()
                .is_some_and(|t| found.get(&t.field) == Some(&t.value))
        });
        match (&feed.tombstone, after.is_some(), tombstoned) {
            (Some(_), _, true) => {
                // Seen for real: the read-only note ("no tombstone on the first page") is moot.
                self.findings
                    .retain(|f| !(f.check == "tombstone" && f.severity == Severity::Info));
                self.pass("tombstone");
            }
            (Some(t), true, false) => self.find(
                "tombstone",
                Severity::Error,
                self.setting("pull.tombstone"),
                format!(
                    "after deleting {key} the feed still lists it, without `{}` = {}",
                    t.field,
                    shown(&t.value)
                ),
                "set tombstone to the field and value the API marks deleted records with",
            ),
            (_, false, _) => self.find(
                "tombstone",
                Severity::Warning,
                self.setting("pull.tombstone"),
                format!(
                    "after deleting {key} the feed does not list it: the server deletes for \
                     good, so other clients' deletes never reach this store"
                ),
                format!(
                    "run `tidesync reconcile {}` on a schedule (it deletes locally what the \
                     server no longer has), or configure a deleted-ids feed (pull.deleted)",
                    self.table()
                ),
            ),
            (None, true, _) => self.find(
                "tombstone",
                Severity::Error,
                self.setting("pull.tombstone"),
                format!("after deleting {key} the feed still lists it, and no tombstone is set"),
                "set tombstone = { field = \"...\" } to how the API marks deleted records",
            ),
        }
    }

    /// The newest change time in a filtered feed (walked from the first page's newest item to
    /// the end with the feed's own filter), `None` without a filter or items.
    async fn feed_end(
        &mut self,
        feed: &tidesync_transport_rest::Feed,
        items: &[Item],
    ) -> Option<i128> {
        if feed.filter == Filter::None {
            return None;
        }
        let newest = |items: &[Item]| {
            items
                .iter()
                .filter_map(|i| Some((i.ns?, i.key.as_ref().map(key_text))))
                .max()
        };
        let (mut at, mut at_key) = newest(items)?;
        let format = feed.cursor_format.unwrap_or(feed.timestamp);
        let keyset = feed.filter == Filter::Keyset;
        for _ in 0..MAX_WALK_PAGES {
            let probe = FeedProbe::after(
                format.format(at),
                if keyset { at_key.clone() } else { None },
                self.page_size,
            );
            let page = self.probe_items(feed, &probe).await?;
            match newest(&page) {
                Some((ns, key)) if ns > at || (keyset && ns == at && key > at_key) => {
                    (at, at_key) = (ns, key);
                }
                _ => break,
            }
        }
        Some(at)
    }

    /// The latest version of `key` in the pull feed: from the feed's newest change time
    /// before the writes (`end`) when the feed filters, else by walking the whole feed.
    async fn find_in_feed(
        &mut self,
        feed: &tidesync_transport_rest::Feed,
        end: Option<i128>,
        key: &Key,
    ) -> Option<Record> {
        let wanted = key.to_json();
        let key_field = self.key_field();
        let same = |record: &Record| {
            record
                .get(&key_field)
                .is_some_and(|k| k == &wanted || key_text(k) == key.to_string())
        };
        if feed.filter != Filter::None
            && let Some(newest) = end
        {
            let format = feed.cursor_format.unwrap_or(feed.timestamp);
            // A millisecond earlier: the scratch record may share the newest timestamp.
            let probe = FeedProbe::after(format.format(newest - 1_000_000), None, self.page_size);
            let found = self.probe_items(feed, &probe).await?;
            return found.into_iter().map(|i| i.record).rev().find(|r| same(r));
        }
        let mut cursor = None;
        let mut last = None;
        for _ in 0..MAX_WALK_PAGES {
            let page = self
                .transport
                .pull(PullRequest {
                    table: self.table().to_owned(),
                    cursor: cursor.take(),
                    page_size: usize::try_from(self.page_size).unwrap_or(usize::MAX),
                })
                .await
                .ok()?;
            if let Some(found) = page.records.iter().rev().find(|r| same(r)) {
                last = Some(found.clone());
            }
            if page.deleted.contains(key) {
                let mut tombstone = Record::new();
                tombstone.insert(key_field.clone(), wanted.clone());
                if let Some(t) = &feed.tombstone {
                    tombstone.insert(t.field.clone(), t.value.clone());
                }
                last = Some(tombstone);
            }
            if !page.has_more {
                break;
            }
            cursor = page.cursor;
        }
        last
    }
}

fn reqwest_origin(link: &str) -> String {
    match link.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{host}")
        }
        None => link.to_owned(),
    }
}
