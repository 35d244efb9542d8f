//! Sync settings, with defaults that suit a client application.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use tidesync_core::{Error, Result};

/// A user-supplied retry delay: given the attempt number (1 = first retry), returns how long
/// to wait. Replaces the built-in backoff; a server's `Retry-After` still wins (the function
/// is not called when the failed answer carried one).
pub type RetryDelayFn = Arc<dyn Fn(u32) -> Duration + Send + Sync>;

/// A request budget: at most `max_requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// The window.
    #[serde(with = "humantime_ms")]
    pub window: Duration,
}

/// How the engine syncs. Every field has a default (see [`SyncSettings::default`]).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Periodic sync interval; `None` disables the timer.
    #[serde(with = "opt_humantime_ms")]
    pub interval: Option<Duration>,
    /// Quiet time after a local write before a sync starts.
    #[serde(with = "humantime_ms")]
    pub debounce: Duration,
    /// Sync when the engine starts.
    pub sync_on_start: bool,
    /// Records pushed concurrently.
    pub concurrency: usize,
    /// Entries per bulk request, where the route has a bulk endpoint.
    pub batch_size: usize,
    /// First retry delay (full jitter: the actual delay is uniform in `0..=min(cap, base·2ⁿ)`).
    #[serde(with = "humantime_ms")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_ms")]
    pub backoff_cap: Duration,
    /// Failed answers of the server (5xx, 408, 425, or a timeout while the server answers
    /// other requests) before an entry is dead-lettered as `retries_exhausted`.
    ///
    /// What never counts: a server that cannot be reached or does not answer at all (connect
    /// refused, DNS, TLS, connect timeout, every request timing out alike): the circuit opens,
    /// the engine goes offline and probes, and the entry waits, however long the outage (a
    /// week offline dead-letters nothing); 429 (the server throttles everyone alike); 401/403
    /// (pushing pauses for credentials); conflicts (the strategy decides). Refusals (other
    /// 4xx, undecodable answers) are dead-lettered at once. With the defaults, an entry a
    /// server keeps failing with 5xx is dead-lettered after 25 answers, about an hour and a
    /// half of backoff at the 5 min cap. The policy is `tidesync_core::push_policy`.
    pub max_attempts: u32,
    /// Records per pulled page.
    pub page_size: usize,
    /// Pages per table per cycle once the table has a checkpoint (the rest follows in the
    /// next cycle, and the cycle reports the table as cut at its budget).
    pub max_pages: usize,
    /// Pages per table in one cycle of a first (initial) sync, when the table has no
    /// checkpoint yet: `None` (the default) pulls until done, so a first sync never stops
    /// part way; set a number to spread a very large first sync over several cycles.
    pub initial_max_pages: Option<usize>,
    /// Fetch a table's next page while the current one is applied (at most one page ahead,
    /// so memory stays flat; a checkpoint still commits only with its own page). Off: one
    /// pull request at a time, for APIs that allow a client one request in flight.
    pub pull_prefetch: bool,
    /// Request budget per table.
    pub rate_limits: HashMap<String, RateLimit>,
    /// Request budget for all tables together.
    pub global_rate_limit: Option<RateLimit>,
    /// First delay between offline probes (doubles up to `probe_cap`). A probe is a sync
    /// cycle that sends one request until the server answers.
    #[serde(with = "humantime_ms")]
    pub probe_base: Duration,
    /// Longest delay between offline probes.
    #[serde(with = "humantime_ms")]
    pub probe_cap: Duration,
    /// `health()` reports degraded when the last successful sync is older than this.
    #[serde(with = "humantime_ms")]
    pub stale_after: Duration,
    /// With a leader election: how long a new leader (a claim over another epoch) holds back
    /// the records whose head the previous leader left in flight, so that request can no
    /// longer land after a newer edit. Set it to the transport's request timeout (the CLI
    /// does); other records go at once.
    #[serde(with = "humantime_ms")]
    pub takeover_hold: Duration,
    /// Replaces the built-in backoff when the server sent no `Retry-After`.
    #[serde(skip)]
    pub retry_delay: Option<RetryDelayFn>,
    /// Quiet time after a live-channel hint before its pull starts: hints arriving meanwhile
    /// join the same pull.
    #[serde(with = "humantime_ms")]
    pub live_debounce: Duration,
    /// The live channel's reconnect backoff: full jitter in `0..=min(cap, base · 2^(n-1))`.
    #[serde(with = "humantime_ms")]
    pub live_backoff_base: Duration,
    /// The live channel's longest reconnect delay.
    #[serde(with = "humantime_ms")]
    pub live_backoff_cap: Duration,
}

impl std::fmt::Debug for SyncSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSettings")
            .field("interval", &self.interval)
            .field("debounce", &self.debounce)
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("max_attempts", &self.max_attempts)
            .field("page_size", &self.page_size)
            .field("max_pages", &self.max_pages)
            .field("initial_max_pages", &self.initial_max_pages)
            .field("pull_prefetch", &self.pull_prefetch)
            .field("takeover_hold", &self.takeover_hold)
            .field("custom_retry_delay", &self.retry_delay.is_some())
            .field("live_debounce", &self.live_debounce)
            .field("live_backoff_base", &self.live_backoff_base)
            .field("live_backoff_cap", &self.live_backoff_cap)
            .finish_non_exhaustive()
    }
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval: Some(Duration::from_secs(30)),
            debounce: Duration::from_millis(250),
            sync_on_start: true,
            concurrency: 4,
            batch_size: 50,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(300),
            max_attempts: 25,
            page_size: 200,
            max_pages: 1000,
            initial_max_pages: None,
            pull_prefetch: true,
            rate_limits: HashMap::new(),
            global_rate_limit: None,
            probe_base: Duration::from_secs(1),
            probe_cap: Duration::from_secs(60),
            stale_after: Duration::from_secs(600),
            takeover_hold: Duration::from_secs(30),
            retry_delay: None,
            live_debounce: Duration::from_millis(5),
            live_backoff_base: Duration::from_millis(500),
            live_backoff_cap: Duration::from_secs(30),
        }
    }
}

impl SyncSettings {
    /// Checks the settings for values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::config(why.to_owned()).field(field));
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.page_size == 0 {
            return bad("page_size", "must be at least 1");
        }
        if self.initial_max_pages == Some(0) {
            return bad(
                "initial_max_pages",
                "must be at least 1 (or unset: no limit)",
            );
        }
        if self.max_pages == 0 {
            return bad("max_pages", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return bad(
                "backoff_cap",
                "backoff_base must be > 0 and backoff_cap >= backoff_base",
            );
        }
        if self.probe_base.is_zero() || self.probe_cap < self.probe_base {
            return bad(
                "probe_cap",
                "probe_base must be > 0 and probe_cap >= probe_base",
            );
        }
        if self.live_backoff_base.is_zero() || self.live_backoff_cap < self.live_backoff_base {
            return bad(
                "live_backoff_cap",
                "live_backoff_base must be > 0 and live_backoff_cap >= live_backoff_base",
            );
        }
        if self.interval.is_some_and(|i| i < Duration::from_millis(10)) {
            return bad("interval", "must be at least 10 ms");
        }
        for (table, limit) in self
            .rate_limits
            .iter()
            .map(|(t, l)| (t.as_str(), l))
            .chain(self.global_rate_limit.as_ref().map(|l| ("*", l)))
        {
            if limit.max_requests == 0 || limit.window.is_zero() {
                return Err(
                    Error::config("a rate limit needs max_requests > 0 and a window > 0")
                        .table(table)
                        .field("rate_limits"),
                );
            }
        }
        Ok(())
    }
}

/// Parses a duration as written in config files and on command lines: plain milliseconds
/// (`250`) or a number with a unit (`250ms`, `30s`, `5m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_ms::parse(text)
}

/// Durations in config files as milliseconds (`250`) or strings with a unit (`"250ms"`,
/// `"30s"`, `"5m"`, `"1h"`).
mod humantime_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub(super) fn parse(text: &str) -> Result<Duration, String> {
        tidesync_core::duration::parse(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

mod opt_humantime_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Millis(0)) => Ok(None),
            Some(Raw::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(Raw::Text(text)) if text == "off" || text == "never" => Ok(None),
            Some(Raw::Text(text)) => super::humantime_ms::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        let s: SyncSettings = serde_json::from_value(serde_json::json!({
            "interval": "5m", "debounce": 100, "backoff_cap": "2s", "backoff_base": "250ms"
        }))
        .unwrap();
        assert_eq!(s.interval, Some(Duration::from_secs(300)));
        assert_eq!(s.debounce, Duration::from_millis(100));
        assert_eq!(s.backoff_cap, Duration::from_secs(2));
        assert!(s.validate().is_ok());
        let err =
            serde_json::from_value::<SyncSettings>(serde_json::json!({"debounce": "5 parsecs"}))
                .err()
                .unwrap();
        assert!(err.to_string().contains("invalid duration unit"), "{err}");
        assert!(serde_json::from_value::<SyncSettings>(serde_json::json!({"bogus": 1})).is_err());
    }

    #[test]
    fn impossible_settings_are_refused_with_the_field() {
        let s = SyncSettings {
            concurrency: 0,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().field_name(), Some("concurrency"));
    }
}
