//! Last-write-wins on the hybrid logical clock.

use async_trait::async_trait;
use serde_json::Value;
use tidesync_core::{Conflict, ConflictStrategy, Record, Resolution, Result, Stamp};

use crate::policies::converged;
use crate::timestamp::{TimestampFormat, parse_timestamp_ms};

/// Which side wrote last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Winner {
    /// The local write is strictly newer.
    Local,
    /// The remote write is newer, as new, or its time (or the local time) is unknown.
    Remote,
}

/// The last-write-wins rule shared by every tidesync strategy that orders writes by time.
///
/// Compares the wall-clock milliseconds of the local HLC stamp (`Stamp(local_hlc).millis()`)
/// with the remote write's time in epoch milliseconds:
///
/// - the local write wins only when it is **strictly** later;
/// - equal milliseconds → the **remote** wins (the server's version is the one copy every device
///   sees, so every device breaks the tie the same way and they converge);
/// - unknown remote time (`None`) or unknown local time (`local_hlc == 0`) → the remote wins.
///
/// The HLC's logical counter is ignored: the remote side has no counter to compare it with.
///
/// ```
/// use tidesync_conflict_policies::{Winner, last_write_winner};
/// use tidesync_core::Stamp;
///
/// let local = Stamp::from_millis(2_000).0 + 7; // 2 000 ms, counter 7
/// assert_eq!(last_write_winner(local, Some(1_999)), Winner::Local);
/// assert_eq!(last_write_winner(local, Some(2_000)), Winner::Remote); // tie: server wins
/// assert_eq!(last_write_winner(local, None), Winner::Remote);
/// ```
pub fn last_write_winner(local_hlc: u64, remote_ms: Option<i64>) -> Winner {
    let Some(remote_ms) = remote_ms else {
        return Winner::Remote;
    };
    if local_hlc == 0 {
        return Winner::Remote;
    }
    // A stamp's millis fit in 48 bits, so this conversion cannot fail; saturate anyway.
    let local_ms = i64::try_from(Stamp(local_hlc).millis()).unwrap_or(i64::MAX);
    if local_ms > remote_ms {
        Winner::Local
    } else {
        Winner::Remote
    }
}

/// The remote write's time as [`LastWriteWins`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteTime {
    /// From [`Conflict::remote_time_ms`]: the server's time, corrected by the engine for the
    /// measured clock offset.
    Server(i64),
    /// From the configured field of the remote record (the server's own clock, uncorrected).
    Field(i64),
    /// Neither is available.
    Unknown,
}

impl RemoteTime {
    /// The time in epoch milliseconds, if known.
    pub fn millis(self) -> Option<i64> {
        match self {
            RemoteTime::Server(ms) | RemoteTime::Field(ms) => Some(ms),
            RemoteTime::Unknown => None,
        }
    }

    fn source(self) -> &'static str {
        match self {
            RemoteTime::Server(_) => "remote_time_ms",
            RemoteTime::Field(_) => "timestamp_field",
            RemoteTime::Unknown => "unknown",
        }
    }
}

/// Last write wins, ordered by the hybrid logical clock.
///
/// - **Local time** is always the HLC stamp of the latest local write
///   ([`Conflict::local_hlc`]), never a field of the local record: a local `updatedAt` is usually
///   a stale copy of the server's, which is how timestamp-field LWW silently loses edits.
/// - **Remote time** is [`Conflict::remote_time_ms`] (already corrected by the engine for the
///   client–server clock offset). When that is unknown, it is read from the remote record's
///   [`timestamp_field`](LastWriteWins::timestamp_field) if one is configured (epoch ms, epoch s
///   or RFC 3339, see [`TimestampFormat`]; a dotted name such as `meta.updatedAt` reaches into
///   nested objects when no top-level field has that exact name). When neither is available, the
///   server wins.
/// - **Order** is [`last_write_winner`]: the local write must be strictly later; **equal
///   milliseconds go to the server**, so every device decides a tie the same way.
///
/// Outcomes, including deletes (a delete is a write like any other, stamped by the HLC locally
/// and by the tombstone's time remotely):
///
/// | local | remote | local later | otherwise (tie, older, unknown) |
/// |---|---|---|---|
/// | record | record | [`KeepLocal`](Resolution::KeepLocal) | [`TakeRemote`](Resolution::TakeRemote) |
/// | record | deleted | `KeepLocal`: re-created on the server | `TakeRemote`: deleted locally |
/// | deleted | record | `KeepLocal`: the delete is pushed | `TakeRemote`: the record comes back |
/// | same as remote / both deleted | | `TakeRemote` (converged) | `TakeRemote` |
///
/// A remote delete has no record to read a field from, so without `remote_time_ms` it is the
/// server's (the delete stands). The outcome never depends on [`Conflict::detected_by`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastWriteWins {
    timestamp_field: Option<String>,
    timestamp_format: TimestampFormat,
}

impl LastWriteWins {
    /// LWW on `local_hlc` and `remote_time_ms` only (no fallback field).
    pub fn new() -> Self {
        Self::default()
    }

    /// Falls back to this field of the remote record when `remote_time_ms` is unknown.
    pub fn timestamp_field(mut self, field: impl Into<String>) -> Self {
        self.timestamp_field = Some(field.into());
        self
    }

    /// How the fallback field is encoded (default [`TimestampFormat::Auto`]).
    pub fn timestamp_format(mut self, format: TimestampFormat) -> Self {
        self.timestamp_format = format;
        self
    }

    /// The configured fallback field, if any.
    pub fn field(&self) -> Option<&str> {
        self.timestamp_field.as_deref()
    }

    /// The configured encoding of the fallback field.
    pub fn format(&self) -> TimestampFormat {
        self.timestamp_format
    }

    /// The remote write's time: `remote_time_ms`, else the fallback field, else unknown.
    pub fn remote_time(&self, conflict: &Conflict) -> RemoteTime {
        if let Some(ms) = conflict.remote_time_ms {
            return RemoteTime::Server(ms);
        }
        let (Some(field), Some(remote)) = (self.timestamp_field.as_deref(), &conflict.remote)
        else {
            return RemoteTime::Unknown;
        };
        match lookup(remote, field) {
            Some(value) => match parse_timestamp_ms(value, self.timestamp_format) {
                Some(ms) => RemoteTime::Field(ms),
                None => {
                    tracing::warn!(
                        table = %conflict.table,
                        key = %conflict.key,
                        field,
                        format = ?self.timestamp_format,
                        "last_write_wins: the remote timestamp field is not a timestamp; server wins"
                    );
                    RemoteTime::Unknown
                }
            },
            None => RemoteTime::Unknown,
        }
    }

    /// The decision, synchronously.
    pub fn decide(&self, conflict: &Conflict) -> Resolution {
        self.decide_with_source(conflict).0
    }

    fn decide_with_source(&self, conflict: &Conflict) -> (Resolution, &'static str) {
        if converged(conflict) {
            return (Resolution::TakeRemote, "converged");
        }
        let remote_time = self.remote_time(conflict);
        let resolution = match last_write_winner(conflict.local_hlc, remote_time.millis()) {
            Winner::Local => Resolution::KeepLocal,
            Winner::Remote => Resolution::TakeRemote,
        };
        (resolution, remote_time.source())
    }
}

/// `record[field]`, or, when there is no such top-level field and the name has dots, the value
/// at that path of nested objects.
fn lookup<'a>(record: &'a Record, field: &str) -> Option<&'a Value> {
    if let Some(value) = record.get(field) {
        return Some(value);
    }
    let mut segments = field.split('.');
    let mut current = record.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

#[async_trait]
impl ConflictStrategy for LastWriteWins {
    fn name(&self) -> &str {
        "last_write_wins"
    }

    async fn resolve(&self, conflict: &Conflict) -> Result<Resolution> {
        let (resolution, source) = self.decide_with_source(conflict);
        crate::log_outcome(self.name(), conflict, &resolution, source);
        Ok(resolution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_core::{DetectedBy, Key};

    fn rec(v: Value) -> Option<Record> {
        match v {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    fn conflict(local_ms: u64, remote_ms: Option<i64>, remote: Value) -> Conflict {
        Conflict {
            table: "posts".into(),
            key: Key::from("p1"),
            base: rec(json!({"title": "base"})),
            local: rec(json!({"title": "local"})),
            remote: rec(remote),
            detected_by: DetectedBy::Pull,
            local_hlc: Stamp::from_millis(local_ms).0 + 3,
            remote_time_ms: remote_ms,
        }
    }

    #[test]
    fn winner_table() {
        let at = |ms: u64| Stamp::from_millis(ms).0;
        let cases = [
            (at(10), Some(9), Winner::Local),
            (at(10), Some(10), Winner::Remote),
            (at(10) + 65_535, Some(10), Winner::Remote),
            (at(10), Some(11), Winner::Remote),
            (at(10), None, Winner::Remote),
            (0, Some(-1), Winner::Remote),
            (0, None, Winner::Remote),
            (at(1), Some(i64::MIN), Winner::Local),
            (u64::MAX, Some(i64::MAX), Winner::Remote),
            (u64::MAX, Some(0), Winner::Local),
        ];
        for (local, remote, want) in cases {
            assert_eq!(
                last_write_winner(local, remote),
                want,
                "{local} vs {remote:?}"
            );
        }
    }

    #[test]
    fn remote_time_prefers_the_corrected_server_time_over_the_field() {
        let lww = LastWriteWins::new().timestamp_field("updatedAt");
        let c = conflict(
            5_000,
            Some(4_000),
            json!({"title": "r", "updatedAt": 9_000_000_000_000_i64}),
        );
        assert_eq!(lww.remote_time(&c), RemoteTime::Server(4_000));
        assert_eq!(lww.decide(&c), Resolution::KeepLocal);
    }

    #[test]
    fn remote_time_falls_back_to_the_field_then_to_unknown() {
        let lww = LastWriteWins::new().timestamp_field("updatedAt");
        let cases = [
            (json!({"updatedAt": 4}), RemoteTime::Field(4_000)),
            (
                json!({"updatedAt": 4_000_000_000_000_i64}),
                RemoteTime::Field(4_000_000_000_000),
            ),
            (
                json!({"updatedAt": "1970-01-01T00:00:04Z"}),
                RemoteTime::Field(4_000),
            ),
            (json!({"updatedAt": "soon"}), RemoteTime::Unknown),
            (json!({"updatedAt": null}), RemoteTime::Unknown),
            (json!({"updatedAt": {"$date": 4}}), RemoteTime::Unknown),
            (json!({"other": 4}), RemoteTime::Unknown),
        ];
        for (remote, want) in cases {
            let c = conflict(5_000, None, remote.clone());
            assert_eq!(lww.remote_time(&c), want, "remote {remote}");
        }
        let without_field = LastWriteWins::new();
        let c = conflict(5_000, None, json!({"updatedAt": 4}));
        assert_eq!(without_field.remote_time(&c), RemoteTime::Unknown);
        assert_eq!(without_field.decide(&c), Resolution::TakeRemote);
    }

    #[test]
    fn the_fallback_field_can_be_a_dotted_path_and_an_exact_name_wins() {
        let lww = LastWriteWins::new().timestamp_field("meta.updatedAt");
        let nested = conflict(5_000, None, json!({"meta": {"updatedAt": 4}}));
        assert_eq!(lww.remote_time(&nested), RemoteTime::Field(4_000));
        let exact = conflict(
            5_000,
            None,
            json!({"meta.updatedAt": 6, "meta": {"updatedAt": 4}}),
        );
        assert_eq!(lww.remote_time(&exact), RemoteTime::Field(6_000));
        let not_object = conflict(5_000, None, json!({"meta": [4]}));
        assert_eq!(lww.remote_time(&not_object), RemoteTime::Unknown);
    }

    #[test]
    fn explicit_format_is_respected() {
        let lww = LastWriteWins::new()
            .timestamp_field("ts")
            .timestamp_format(TimestampFormat::EpochMs);
        // 4 000 read as ms: local at 5 000 ms is later.
        let c = conflict(5_000, None, json!({"ts": 4_000}));
        assert_eq!(lww.decide(&c), Resolution::KeepLocal);
        let lww = lww.timestamp_format(TimestampFormat::EpochS);
        // 4 000 read as seconds: remote is later.
        assert_eq!(lww.decide(&c), Resolution::TakeRemote);
    }
}
