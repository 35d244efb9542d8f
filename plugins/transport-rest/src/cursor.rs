//! The checkpoint stored in `PullPage.cursor`: opaque JSON to the engine, defined here.
//!
//! ```json
//! {
//!   "v": 1,
//!   "phase": "changes",            // or "deleted": which feed the next pull reads
//!   "changes": {                   // the change feed
//!     "since": {                   // the committed checkpoint (absent before the first one)
//!       "ts": 1700000000123,       // cursor_field value as the server wrote it
//!       "key": "p9",               // keyset filter: the last key at `ts`
//!       "seen": ["p7", "p9"]       // inclusive filter: keys already applied at `ts`
//!     },
//!     "pass": {                    // only while walking offset/page/token/link pages
//!       "walk": 81726354,          // which walk (matches the transport's in-memory state)
//!       "offset": 200, "page": 3,  // the next page to ask for
//!       "token": "abc",            // token style: the server's next-page token, as-is
//!       "limit": 100,              // page size fixed for the pass
//!       "read": 200,               // items read so far (for `total`)
//!       "total": 5000,             // the total the server last reported in this pass
//!       "last": { "key": "p9", "ts": … },   // offset style: the last item read (overlap)
//!       "high": { "ts": …, "seen": […] },   // highest checkpoint seen in this pass
//!       "fp": 1234567              // fingerprint of the last page (repeat guard)
//!     },
//!     "boost": 2,                  // limit multiplier after a timestamp tie filled a page
//!     "cap": 1000,                 // the largest page the server was seen to answer
//!     "rewalks": 1,                // walks restarted in a row after a shift
//!     "token": "…"                 // `since_token`: the server's opaque checkpoint, as-is
//!   },
//!   "deleted": { … }               // the deleted-ids feed, same shape
//! }
//! ```
//!
//! A checkpoint never holds a URL from a response: a `Link` walk keeps its next link in the
//! transport's memory only, and a stored cursor of an older version that held one (`"next"`)
//! drops that walk with a warning and starts it again from `since`. The filter value of a pass
//! (`since`) only moves when the pass is complete and continuous. Offset and token walks resume
//! after a crash at the first page not yet applied; page and link walks (whose continuity
//! check lives in memory) start again from `since`, which re-reads but never skips.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::{Error, Key, Result};

/// Current cursor format version.
pub const VERSION: u32 = 1;

/// Which feed the next pull reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The deleted-ids feed (read first in each cycle).
    Deleted,
    /// The change feed.
    #[default]
    Changes,
}

/// The whole checkpoint of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableCursor {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// The feed the next pull reads.
    #[serde(default)]
    pub phase: Phase,
    /// The change feed.
    #[serde(default, skip_serializing_if = "FeedCursor::is_empty")]
    pub changes: FeedCursor,
    /// The deleted-ids feed.
    #[serde(default, skip_serializing_if = "FeedCursor::is_empty")]
    pub deleted: FeedCursor,
}

/// The checkpoint of one feed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedCursor {
    /// The committed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Mark>,
    /// The page walk in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<Pass>,
    /// Limit multiplier (1 = none) after a group of equal timestamps filled a page.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub boost: u32,
    /// The server's opaque checkpoint token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Value>,
    /// The largest page the server answered while saying more exist (a silent page cap);
    /// later requests ask for no more than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
    /// Page walks restarted in a row because the data shifted under them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewalks: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n <= 1
}

impl FeedCursor {
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.pass.is_none()
            && self.boost <= 1
            && self.token.is_none()
            && self.cap.is_none()
            && self.rewalks == 0
    }
}

/// A position in a change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    /// The timestamp, as the server wrote it.
    pub ts: Value,
    /// The last key at `ts` (keyset filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    /// Keys already applied at `ts` (inclusive filter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<Key>,
}

/// An item's place: its key and its timestamp as the server wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The key.
    pub key: Key,
    /// The cursor field's value (`null` without one).
    #[serde(default)]
    pub ts: Value,
}

/// A page walk in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pass {
    /// Which walk this is (the transport's in-memory state of a walk carries the same id).
    #[serde(default)]
    pub walk: u64,
    /// The next offset.
    #[serde(default)]
    pub offset: u64,
    /// The next page number.
    #[serde(default)]
    pub page: u64,
    /// The next-page token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Value>,
    /// A next-page URL stored by an older version (link style). Read so that such a cursor
    /// loads, never written: the walk it belongs to is started again.
    #[serde(default, rename = "next", skip_serializing)]
    pub legacy_next: Option<String>,
    /// The page size of this pass.
    #[serde(default)]
    pub limit: u64,
    /// Items read so far in this pass.
    #[serde(default)]
    pub read: u64,
    /// The total the server last reported in this pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Offset style: the last item read, asked for again as the first item of the next page
    /// to prove that nothing shifted in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Edge>,
    /// The highest position seen in this pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<Mark>,
    /// A short page without an end signal was read (its size): the next page is asked for
    /// once, to tell the end from a silent page cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<u64>,
    /// Fingerprint of the last page read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<u64>,
    /// New items (past the checkpoint) delivered so far in this pass: a pass that delivered
    /// some and ends without moving the checkpoint is reported.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub fresh: u64,
}

impl TableCursor {
    /// Reads a stored cursor; `None` means a first sync.
    pub fn load(table: &str, value: Option<&Value>) -> Result<TableCursor> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(TableCursor {
                v: VERSION,
                ..TableCursor::default()
            });
        };
        let cursor: TableCursor = serde_json::from_value(value.clone()).map_err(|e| {
            Error::invalid(format!(
                "stored pull cursor is not a REST transport cursor ({e}); reset the table's \
                 checkpoint"
            ))
            .table(table)
        })?;
        if cursor.v != VERSION {
            return Err(Error::invalid(format!(
                "stored pull cursor has version {}, this transport writes {VERSION}",
                cursor.v
            ))
            .table(table));
        }
        let mut cursor = cursor;
        for (name, feed) in [
            ("changes", &mut cursor.changes),
            ("deleted", &mut cursor.deleted),
        ] {
            if feed.pass.as_ref().is_some_and(|p| p.legacy_next.is_some()) {
                tracing::warn!(
                    table,
                    feed = name,
                    "the stored checkpoint holds a next-page link from an older version; \
                     ignored: the page walk starts again from the checkpoint's filter value"
                );
                feed.pass = None;
            }
        }
        Ok(cursor)
    }

    /// The cursor as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_rejects_foreign_cursors() {
        let cursor = TableCursor {
            v: VERSION,
            phase: Phase::Deleted,
            changes: FeedCursor {
                since: Some(Mark {
                    ts: json!(5),
                    key: Some(Key::from("a")),
                    seen: vec![Key::from("a"), Key::Int(3)],
                }),
                pass: Some(Pass {
                    offset: 10,
                    token: Some(json!("t")),
                    ..Pass::default()
                }),
                boost: 1,
                token: None,
                cap: Some(7),
                rewalks: 0,
            },
            deleted: FeedCursor::default(),
        };
        let value = cursor.to_value();
        assert_eq!(value["changes"]["since"]["seen"], json!(["a", 3]));
        assert!(value.get("deleted").is_none());
        assert_eq!(TableCursor::load("t", Some(&value)).unwrap(), cursor);
        assert_eq!(
            TableCursor::load("t", None).unwrap().v,
            VERSION,
            "no cursor = first sync"
        );
        let err = TableCursor::load("t", Some(&json!({"offset": 3}))).unwrap_err();
        assert_eq!(err.kind(), tidesync_core::ErrorKind::InvalidInput);
        let err = TableCursor::load("t", Some(&json!({"v": 9}))).unwrap_err();
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn a_stored_next_link_of_an_older_version_is_dropped_not_followed() {
        let old = json!({"v": 1, "changes": {
            "since": {"ts": 5},
            "pass": {"next": "http://elsewhere.example/api?page=3", "page": 3, "limit": 2}
        }});
        let cursor = TableCursor::load("t", Some(&old)).unwrap();
        assert_eq!(cursor.changes.pass, None, "the walk starts again");
        assert_eq!(
            cursor.changes.since.as_ref().map(|m| m.ts.clone()),
            Some(json!(5)),
            "filter value kept"
        );
        assert!(!cursor.to_value().to_string().contains("http"));
    }
}
