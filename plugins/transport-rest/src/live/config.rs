//! The live channel's configuration (`[server.live]` in the CLI's TOML) and how events map
//! to actions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::live::LiveSignal;
use tidesync_core::{Error, Key, Result};

use crate::pointer::Pointer;
use crate::routes::{Headers, Method};

/// Default stall timeout: no byte (keep-alives included) for this long closes the channel.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 90_000;

/// Which protocol the channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveKind {
    /// Server-Sent Events (`GET`, `text/event-stream`).
    Sse,
    /// A WebSocket (`ws://`, `wss://`; an `http(s)` URL is mapped to `ws(s)`).
    #[serde(alias = "ws")]
    Websocket,
}

/// What an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveAction {
    /// Pull the named tables soon (debounced, coalesced).
    Hint,
    /// A record changed: its table is pulled (the record, when carried, is reported with it).
    Change,
    /// Nothing (heartbeats, presence, …).
    Ignore,
}

/// One mapping rule: events it matches and what they ask for. Rules are tried in order; the
/// first that matches wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    /// The event name to match: SSE's `event:` field (`message` when absent), or for a
    /// WebSocket the string at [`LiveConfig::type_pointer`]. Absent: every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// What the event asks for.
    pub action: LiveAction,
    /// Where the table name sits in the event's JSON data (e.g. `/table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Pointer>,
    /// Fixed tables to pull, for events that name none (empty with no `table`: every table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Where the record's key sits (`change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Pointer>,
    /// Where the carried record sits (`change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Pointer>,
}

/// A subscription handshake: read a client id from an early event, then tell the server
/// which tables to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// The event carrying the client id (absent: the first event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Where the client id sits in that event's JSON data (e.g. `/clientId`).
    pub client_id: Pointer,
    /// The subscription request's method (default `POST`).
    #[serde(default = "post")]
    pub method: Method,
    /// The subscription request's URL (relative to `base_url`, or absolute). Absent, for a
    /// WebSocket: the body is sent over the socket as a text message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The body template: `{client_id}` becomes the client id (a JSON string's content,
    /// escaped) and `{tables}` the JSON array of the tables to follow.
    pub body: String,
    /// Extra headers of the subscription request.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

fn post() -> Method {
    Method::Post
}

/// The server's live channel.
///
/// ```toml
/// [server.live]
/// kind = "sse"                      # or "websocket"
/// url = "/live/events"              # relative to base_url, or absolute
/// [[server.live.events]]
/// event = "change"
/// action = "hint"
/// table = "/table"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// The protocol.
    pub kind: LiveKind,
    /// The channel's URL: relative to `base_url`, or absolute (`http(s)`, `ws(s)`).
    pub url: String,
    /// Extra headers of the channel's request (the transport's global headers and
    /// credentials are sent too).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Send the auth provider's credentials. Default: only when the channel has the base
    /// URL's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_credentials: Option<bool>,
    /// No byte for this long (keep-alives count) closes the channel, which then reconnects
    /// (default 90 000 ms).
    #[serde(default = "default_stall")]
    pub stall_timeout_ms: u64,
    /// WebSocket messages: where the event name sits in the JSON message (default `/type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_pointer: Option<Pointer>,
    /// Server names of tables (topics) → local table names, where they differ.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub table_names: BTreeMap<String, String>,
    /// The mapping rules, first match wins. Without rules (and after the last one): a JSON
    /// object with a string `table` is a hint for that table, one with a `tables` array a
    /// hint for those; anything else pulls every table (when in doubt, pull).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventRule>,
    /// An optional subscription handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
}

fn default_stall() -> u64 {
    DEFAULT_STALL_TIMEOUT_MS
}

impl LiveConfig {
    /// A channel of `kind` at `url` with the defaults.
    pub fn new(kind: LiveKind, url: impl Into<String>) -> Self {
        LiveConfig {
            kind,
            url: url.into(),
            headers: Headers::default(),
            send_credentials: None,
            stall_timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
            type_pointer: None,
            table_names: BTreeMap::new(),
            events: Vec::new(),
            subscribe: None,
        }
    }

    /// Server-Sent Events at `url`.
    pub fn sse(url: impl Into<String>) -> Self {
        LiveConfig::new(LiveKind::Sse, url)
    }

    /// A WebSocket at `url`.
    pub fn websocket(url: impl Into<String>) -> Self {
        LiveConfig::new(LiveKind::Websocket, url)
    }

    /// Adds a mapping rule (tried after the ones already there).
    #[must_use]
    pub fn rule(mut self, rule: EventRule) -> Self {
        self.events.push(rule);
        self
    }

    /// Sets the subscription handshake.
    #[must_use]
    pub fn subscribe(mut self, subscribe: Subscribe) -> Self {
        self.subscribe = Some(subscribe);
        self
    }

    /// Checks the URL scheme, headers, timeouts and the handshake.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::config(why).field(format!("live.{field}")));
        if self.url.contains("://") {
            let scheme = self.url.split("://").next().unwrap_or_default();
            let allowed: &[&str] = match self.kind {
                LiveKind::Sse => &["http", "https"],
                LiveKind::Websocket => &["http", "https", "ws", "wss"],
            };
            if !allowed.contains(&scheme) {
                return bad(
                    "url",
                    format!(
                        "live.url: scheme `{scheme}` does not fit kind {:?}",
                        self.kind
                    ),
                );
            }
        }
        if self.stall_timeout_ms == 0 {
            return bad(
                "stall_timeout_ms",
                "live.stall_timeout_ms must be > 0".into(),
            );
        }
        self.headers.validate("*", "live.headers")?;
        if let Some(sub) = &self.subscribe {
            sub.headers.validate("*", "live.subscribe.headers")?;
            if sub.url.is_none() && self.kind == LiveKind::Sse {
                return bad(
                    "subscribe.url",
                    "live.subscribe.url is required for SSE (only a WebSocket can subscribe over the channel)".into(),
                );
            }
        }
        Ok(())
    }

    /// The local table for a server table name.
    fn local_table(&self, name: &str) -> String {
        self.table_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// What an event asks for: `None` to ignore it.
    pub fn map(&self, event: &str, data: &str) -> Option<LiveSignal> {
        let json: Option<Value> = serde_json::from_str(data).ok();
        for rule in &self.events {
            if rule.event.as_deref().is_some_and(|e| e != event) {
                continue;
            }
            return self.apply(rule, json.as_ref());
        }
        // The defaults: a table, or tables, named in the data; when in doubt, every table.
        let table = json
            .as_ref()
            .and_then(|j| j.get("table"))
            .and_then(Value::as_str);
        if let Some(table) = table {
            return Some(LiveSignal::Hint {
                tables: vec![self.local_table(table)],
            });
        }
        let tables = json
            .as_ref()
            .and_then(|j| j.get("tables"))
            .and_then(Value::as_array);
        if let Some(tables) = tables {
            let tables: Vec<String> = tables
                .iter()
                .filter_map(Value::as_str)
                .map(|t| self.local_table(t))
                .collect();
            if !tables.is_empty() {
                return Some(LiveSignal::Hint { tables });
            }
        }
        Some(LiveSignal::Hint { tables: Vec::new() })
    }

    fn apply(&self, rule: &EventRule, json: Option<&Value>) -> Option<LiveSignal> {
        let named = rule
            .table
            .as_ref()
            .and_then(|p| json.and_then(|j| p.get(j)))
            .and_then(Value::as_str)
            .map(|t| self.local_table(t));
        match rule.action {
            LiveAction::Ignore => None,
            LiveAction::Hint => Some(LiveSignal::Hint {
                tables: match named {
                    Some(t) => vec![t],
                    None => rule.tables.clone(),
                },
            }),
            LiveAction::Change => {
                let table = named.or_else(|| match rule.tables.as_slice() {
                    [only] => Some(only.clone()),
                    _ => None,
                });
                match table {
                    Some(table) => Some(LiveSignal::Change {
                        table,
                        key: rule
                            .key
                            .as_ref()
                            .and_then(|p| json.and_then(|j| p.get(j)))
                            .and_then(Key::from_json),
                        record: rule
                            .record
                            .as_ref()
                            .and_then(|p| json.and_then(|j| p.get(j)))
                            .and_then(|r| r.as_object().cloned()),
                    }),
                    // A change that names no table we can tell: pull the configured ones.
                    None => Some(LiveSignal::Hint {
                        tables: rule.tables.clone(),
                    }),
                }
            }
        }
    }
}

/// Renders a subscription body: `{client_id}` (escaped as JSON string content) and
/// `{tables}` (a JSON array).
pub(crate) fn render_body(template: &str, client_id: &str, tables: &[String]) -> String {
    let quoted = Value::String(client_id.to_owned()).to_string();
    let escaped = &quoted[1..quoted.len() - 1];
    let tables = Value::from(tables.to_vec()).to_string();
    template
        .replace("{client_id}", escaped)
        .replace("{tables}", &tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(tables: &[&str]) -> Option<LiveSignal> {
        Some(LiveSignal::Hint {
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        })
    }

    #[test]
    fn defaults_hint_the_named_table_or_everything() {
        let c = LiveConfig::sse("/live");
        assert_eq!(
            c.map("message", r#"{"table":"posts","id":"1"}"#),
            hint(&["posts"])
        );
        assert_eq!(c.map("x", r#"{"tables":["a","b"]}"#), hint(&["a", "b"]));
        assert_eq!(c.map("message", "not json"), hint(&[]));
        let mut c = c;
        c.table_names.insert("post".into(), "posts".into());
        assert_eq!(c.map("message", r#"{"table":"post"}"#), hint(&["posts"]));
    }

    #[test]
    fn rules_match_by_event_name_in_order() {
        let toml = r#"
            kind = "sse"
            url = "/live"
            [[events]]
            event = "ping"
            action = "ignore"
            [[events]]
            event = "change"
            action = "change"
            table = "/table"
            key = "/id"
            record = "/record"
            [[events]]
            action = "hint"
            tables = ["posts"]
        "#;
        let c: LiveConfig = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.map("ping", "{}"), None);
        assert_eq!(
            c.map(
                "change",
                r#"{"table":"posts","id":"7","record":{"id":"7","t":1}}"#
            ),
            Some(LiveSignal::Change {
                table: "posts".into(),
                key: Some(Key::from("7")),
                record: serde_json::json!({"id":"7","t":1}).as_object().cloned(),
            })
        );
        assert_eq!(c.map("other", "{}"), hint(&["posts"]));
        // a change that names no table falls back to a hint of the rule's tables
        assert_eq!(c.map("change", r#"{"id":"7"}"#), hint(&[]));
    }

    #[test]
    fn bad_configs_are_named() {
        let err =
            toml::from_str::<LiveConfig>("kind = \"sse\"\nurl = \"/l\"\nstal = 1").unwrap_err();
        assert!(err.to_string().contains("stal"), "{err}");
        let err = LiveConfig::sse("ws://x/l").validate().unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
        let mut c = LiveConfig::sse("/l");
        c.subscribe = Some(Subscribe {
            event: None,
            client_id: Pointer::parse("/id").unwrap(),
            method: Method::Post,
            url: None,
            body: "{}".into(),
            headers: Headers::default(),
        });
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("subscribe.url"), "{err}");
    }

    #[test]
    fn subscription_bodies_escape_the_client_id() {
        assert_eq!(
            render_body(
                r#"{"clientId":"{client_id}","topics":{tables}}"#,
                "a\"b",
                &["posts".into()]
            ),
            r#"{"clientId":"a\"b","topics":["posts"]}"#
        );
    }
}
