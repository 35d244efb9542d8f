//! A Server-Sent Events parser (the WHATWG "event stream interpretation"), fed with the bytes
//! of a `text/event-stream` body as they arrive, chunk boundaries anywhere.
//!
//! Lines end with CRLF, LF or CR; a leading BOM is skipped; `:` lines are comments
//! (keep-alives); `data:` lines accumulate (joined by `\n`); `event:` names the event
//! (`message` when absent); `id:` sets the last event id (ignored if it contains NUL) even on
//! events without data; `retry:` (digits only) sets the reconnection time; a blank line
//! dispatches the event, unless its data is empty. One space after the colon is dropped.

use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the server named none).
    pub event: String,
    /// The data lines, joined by `\n`.
    pub data: String,
    /// The last event id in force when it was dispatched.
    pub id: Option<String>,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    started: bool,
    data: String,
    event: String,
    id_buffer: Option<String>,
    last_id: Option<String>,
    retry: Option<Duration>,
    /// Longest line kept (a server sending an endless line must not exhaust memory).
    max_line: usize,
    overflowed: bool,
}

/// A line longer than this is cut (the rest of it ignored) by default: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

impl SseParser {
    /// A parser with the default line limit.
    pub fn new() -> Self {
        SseParser {
            max_line: DEFAULT_MAX_LINE,
            ..SseParser::default()
        }
    }

    /// The last event id seen (to send as `Last-Event-ID` on reconnect).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the server asked for, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds bytes; returns the events they completed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if !self.started && !rest.is_empty() {
            // Only the stream's first bytes may be a BOM; wait until three bytes are there.
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(rest);
            if head.len() < 3 && b"\xEF\xBB\xBF".starts_with(&head) {
                self.line = head;
                return out;
            }
            self.started = true;
            let start = if head.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            return self.feed_started(&head[start..]);
        }
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        out.extend(self.feed_started(rest));
        out
    }

    fn feed_started(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    self.end_line(&mut out);
                    i += 1;
                }
                b'\r' => {
                    self.end_line(&mut out);
                    if i + 1 < bytes.len() {
                        if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.after_cr = true;
                    }
                    i += 1;
                }
                b => {
                    if self.line.len() < self.max_line {
                        self.line.push(b);
                    } else {
                        self.overflowed = true;
                    }
                    i += 1;
                }
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overflowed) {
            tracing::warn!(
                limit = self.max_line,
                "server-sent event line longer than the limit: ignored"
            );
            return;
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with(':') {
            return; // a comment: keep-alive
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.id_buffer = Some(value.to_owned()),
            // Digits only; more than fit a u64 are not a delay anyone means: ignored.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(id) = &self.id_buffer {
            self.last_id = (!id.is_empty()).then(|| id.clone());
        }
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
        }
        (out, p)
    }

    #[test]
    fn fields_multiline_data_comments_and_ids() {
        let (events, p) = all(&[
            b": keep-alive\n\nevent: change\nid: 7\ndata: {\"a\":\ndata:  1}\n\n",
            b"data: plain\n\n",
        ]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "change".into(),
                    data: "{\"a\":\n 1}".into(),
                    id: Some("7".into())
                },
                SseEvent {
                    event: "message".into(),
                    data: "plain".into(),
                    id: Some("7".into())
                },
            ]
        );
        assert_eq!(p.last_event_id(), Some("7"));
    }

    #[test]
    fn any_line_ending_and_any_chunk_boundary() {
        let text = b"\xEF\xBB\xBFevent: e\r\ndata: x\r\rdata: y\n\nid: 9\r\n\r\n";
        let (whole, _) = all(&[text]);
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            let (parts, p) = all(&[a, b]);
            assert_eq!(parts, whole, "split at {split}");
            assert_eq!(p.last_event_id(), Some("9"), "split at {split}");
        }
        // byte by byte
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes).0, whole);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "e".into(),
                    data: "x".into(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: "y".into(),
                    id: None
                },
            ]
        );
    }

    #[test]
    fn retry_digits_only_and_id_without_data_and_nul_ids() {
        let (events, p) = all(&[b"retry: 1500\n\nretry: 1x\n\nid: 3\n\nid: a\0b\ndata: d\n\n"]);
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("3"));
        // an empty id resets the last event id
        let (_, p) = all(&[b"id: 4\n\nid\n\n"]);
        assert_eq!(p.last_event_id(), None);
        // a field with no colon is a field with an empty value; unknown fields are ignored
        let (events, _) = all(&[b"data\nfoo: bar\n\n"]);
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched_and_long_lines_are_cut() {
        let (events, _) = all(&[b"data: half"]);
        assert!(events.is_empty());
        let mut p = SseParser::new();
        p.max_line = 8;
        let events = p.feed(b"data: 0123456789\ndata: ok\n\n");
        assert_eq!(events[0].data, "ok");
    }
}
