//! Fault injection: the public description ([`Faults`], [`FaultKind`], [`FaultFilter`],
//! [`Latency`], [`RetryAfter`]) and the engine that decides, per request, which fault (if any)
//! applies.
//!
//! Decisions are deterministic: scripted one-shots ([`super::ServerHandle::fail_next`]) are
//! consumed in the order they were queued; random faults draw from a
//! [`rand::rngs::StdRng`] seeded with [`Faults::seed`] (or the server seed), reseeded each time
//! faults are set. For a matching request the engine draws one number for a latency range (if
//! any) and one for the rules, so the same seed and the same request order give the same
//! pattern.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long [`FaultKind::Hang`] waits when built by [`FaultKind::hang`]: longer than any
/// sensible client timeout.
pub const DEFAULT_HANG: Duration = Duration::from_secs(300);

/// Size of the body sent by [`FaultKind::oversized`]: 20 MiB.
pub const DEFAULT_OVERSIZED: usize = 20 * 1024 * 1024;

/// The form of a `Retry-After` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>`, this many seconds from now.
    HttpDate(u64),
}

/// Extra delay before a request is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly drawn from `min..=max` (seeded).
    Range(Duration, Duration),
}

/// One misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Answer this status (e.g. 500, 502, 503, 429) with `{"error":"injected fault",…}`
    /// and an optional `Retry-After`, without handling the request.
    Status {
        /// The status code (an invalid one becomes 500).
        status: u16,
        /// The `Retry-After` header to send, if any.
        retry_after: Option<RetryAfter>,
    },
    /// Close the connection without any response, without handling the request.
    Drop,
    /// Wait this long, then handle the request and answer (the client has usually given up).
    Hang(Duration),
    /// Handle the request (a write is committed and its idempotency key recorded), then close
    /// the connection without any response.
    CommitThenDrop,
    /// Handle the request (committed, key recorded), then answer this status (e.g. 500/503)
    /// instead of the real response.
    CommitThenStatus(u16),
    /// Handle the request, then answer 200 with the first half of the real body (invalid
    /// JSON; a body-less reply becomes a truncated object).
    Malformed,
    /// Handle the request, then answer 200 with a valid JSON body of this many bytes.
    Oversized(usize),
    /// For pulls (`GET /api/{c}`, `GET /api/{c}/deleted`) only: answer the same page forever:
    /// the first matching pull is answered with `hasMore: true`, a `nextCursor` and a `Link`
    /// that lead back to it, and every later one (of the same feed) gets that very response.
    /// Other requests are not affected (and do not consume a scripted one-shot).
    RepeatPage,
}

impl FaultKind {
    /// [`FaultKind::Status`] without `Retry-After`.
    pub fn status(status: u16) -> Self {
        FaultKind::Status {
            status,
            retry_after: None,
        }
    }

    /// [`FaultKind::Status`] with `Retry-After`.
    pub fn status_retry_after(status: u16, retry_after: RetryAfter) -> Self {
        FaultKind::Status {
            status,
            retry_after: Some(retry_after),
        }
    }

    /// [`FaultKind::Hang`] for [`DEFAULT_HANG`].
    pub fn hang() -> Self {
        FaultKind::Hang(DEFAULT_HANG)
    }

    /// [`FaultKind::Oversized`] of [`DEFAULT_OVERSIZED`] bytes.
    pub fn oversized() -> Self {
        FaultKind::Oversized(DEFAULT_OVERSIZED)
    }

    /// A short label, as recorded in [`super::LoggedRequest::fault`]: `delay`, `status 503`,
    /// `drop`, `hang`, `commit-then-drop`, `commit-then-status 500`, `malformed`, `oversized`,
    /// `repeat-page`.
    pub fn label(&self) -> String {
        match self {
            FaultKind::Delay(_) => "delay".into(),
            FaultKind::Status { status, .. } => format!("status {status}"),
            FaultKind::Drop => "drop".into(),
            FaultKind::Hang(_) => "hang".into(),
            FaultKind::CommitThenDrop => "commit-then-drop".into(),
            FaultKind::CommitThenStatus(s) => format!("commit-then-status {s}"),
            FaultKind::Malformed => "malformed".into(),
            FaultKind::Oversized(_) => "oversized".into(),
            FaultKind::RepeatPage => "repeat-page".into(),
        }
    }

    fn applies_to(&self, req: &RequestInfo<'_>) -> bool {
        !matches!(self, FaultKind::RepeatPage) || req.feed.is_some()
    }
}

/// Which requests a fault applies to. The default matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultFilter {
    /// Methods to match (upper case, e.g. `"POST"`); empty matches all.
    pub methods: Vec<String>,
    /// Path prefix to match (e.g. `"/api/posts"`); `None` matches all.
    pub path_prefix: Option<String>,
}

impl FaultFilter {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Matches one method.
    pub fn method(method: &str) -> Self {
        Self {
            methods: vec![method.to_ascii_uppercase()],
            path_prefix: None,
        }
    }

    /// Matches writes: POST, PUT, PATCH and DELETE ("pushes").
    pub fn writes() -> Self {
        Self {
            methods: ["POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            path_prefix: None,
        }
    }

    /// Matches GET requests ("pulls" and fetches).
    pub fn reads() -> Self {
        Self::method("GET")
    }

    /// Matches paths under a prefix.
    pub fn path(prefix: &str) -> Self {
        Self {
            methods: Vec::new(),
            path_prefix: Some(prefix.to_owned()),
        }
    }

    /// Restricts to paths under a prefix.
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Whether a request matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// A random fault: `kind` happens to a matching request with probability `rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// Probability in `0.0..=1.0`.
    pub rate: f64,
    /// What happens.
    pub kind: FaultKind,
}

/// Random faults, set at run time with [`super::ServerHandle::set_faults`].
///
/// For each request matching `filter`: a latency is added (if set), then one uniform draw
/// picks at most one rule (rules are tried in order, each owning a slice of the probability
/// space of its `rate`; rates summing past 1 are cut at 1).
///
/// ```
/// use std::time::Duration;
/// use tidesync_testkit::server::{FaultFilter, FaultKind, Faults, Latency, RetryAfter};
///
/// let faults = Faults::none()
///     .filter(FaultFilter::writes().under("/api/posts"))
///     .latency(Latency::Range(Duration::from_millis(1), Duration::from_millis(5)))
///     .rule(0.2, FaultKind::status_retry_after(503, RetryAfter::Seconds(1)))
///     .rule(0.1, FaultKind::CommitThenDrop)
///     .seed(7);
/// assert_eq!(faults.rules.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Which requests are affected.
    pub filter: FaultFilter,
    /// Added latency.
    pub latency: Option<Latency>,
    /// The random faults.
    pub rules: Vec<FaultRule>,
    /// Seed of the draws; `None` uses the server seed.
    pub seed: Option<u64>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the filter.
    #[must_use]
    pub fn filter(mut self, filter: FaultFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the latency.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Adds a rule.
    #[must_use]
    pub fn rule(mut self, rate: f64, kind: FaultKind) -> Self {
        self.rules.push(FaultRule { rate, kind });
        self
    }

    /// Adds an error-status rule (`retry_after` optional).
    #[must_use]
    pub fn errors(self, rate: f64, status: u16, retry_after: Option<RetryAfter>) -> Self {
        self.rule(
            rate,
            FaultKind::Status {
                status,
                retry_after,
            },
        )
    }

    /// Sets the seed.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// What the engine needs to know of a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestInfo<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    /// `Some(memo key)` for a pull.
    pub(crate) feed: Option<&'a str>,
}

/// The decision for one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decision {
    pub(crate) latency: Option<Duration>,
    pub(crate) kind: Option<FaultKind>,
}

#[derive(Clone, Debug)]
struct Script {
    filter: FaultFilter,
    remaining: usize,
    kind: FaultKind,
}

/// A memoized response of [`FaultKind::RepeatPage`].
#[derive(Clone, Debug)]
pub(crate) struct RepeatMemo {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// Decides faults.
#[derive(Debug)]
pub(crate) struct FaultEngine {
    server_seed: u64,
    faults: Faults,
    rng: StdRng,
    scripts: VecDeque<Script>,
    pub(crate) repeat_memo: HashMap<String, RepeatMemo>,
    pub(crate) injected: u64,
}

impl FaultEngine {
    pub(crate) fn new(server_seed: u64, faults: Faults) -> Self {
        let rng = StdRng::seed_from_u64(faults.seed.unwrap_or(server_seed));
        Self {
            server_seed,
            faults,
            rng,
            scripts: VecDeque::new(),
            repeat_memo: HashMap::new(),
            injected: 0,
        }
    }

    /// Replaces the random faults and reseeds; forgets repeated pages.
    pub(crate) fn set(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed.unwrap_or(self.server_seed));
        self.faults = faults;
        self.repeat_memo.clear();
    }

    /// Removes random and scripted faults.
    pub(crate) fn clear(&mut self) {
        self.set(Faults::none());
        self.scripts.clear();
    }

    pub(crate) fn script(&mut self, filter: FaultFilter, n: usize, kind: FaultKind) {
        if n > 0 {
            if kind == FaultKind::RepeatPage {
                self.repeat_memo.clear();
            }
            self.scripts.push_back(Script {
                filter,
                remaining: n,
                kind,
            });
        }
    }

    pub(crate) fn pending_scripted(&self) -> usize {
        self.scripts.iter().map(|s| s.remaining).sum()
    }

    /// Decides the fault of one request.
    pub(crate) fn decide(&mut self, req: &RequestInfo<'_>) -> Decision {
        let method = req.method.as_str();
        let scripted = self
            .scripts
            .iter()
            .position(|s| s.filter.matches(method, req.path) && s.kind.applies_to(req));
        if let Some(i) = scripted {
            let kind = self.scripts[i].kind.clone();
            self.scripts[i].remaining -= 1;
            if self.scripts[i].remaining == 0 {
                self.scripts.remove(i);
            }
            self.injected += 1;
            return Decision {
                latency: None,
                kind: Some(kind),
            };
        }
        if !self.faults.filter.matches(method, req.path) {
            return Decision::default();
        }
        let latency = match self.faults.latency {
            None => None,
            Some(Latency::Fixed(d)) => Some(d),
            Some(Latency::Range(a, b)) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
                let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX);
                Some(Duration::from_micros(self.rng.random_range(lo_us..=hi_us)))
            }
        };
        let mut kind = None;
        if !self.faults.rules.is_empty() {
            let x: f64 = self.rng.random();
            let mut acc = 0.0;
            for rule in &self.faults.rules {
                let rate = if rule.rate.is_finite() {
                    rule.rate.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                acc += rate;
                if x < acc {
                    if rule.kind.applies_to(req) {
                        kind = Some(rule.kind.clone());
                    }
                    break;
                }
            }
        }
        if kind.is_some() {
            self.injected += 1;
        }
        Decision { latency, kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(m: &'a Method, path: &'a str) -> RequestInfo<'a> {
        RequestInfo {
            method: m,
            path,
            feed: None,
        }
    }

    #[test]
    fn same_seed_same_pattern() {
        let faults = Faults::none()
            .rule(0.3, FaultKind::status(503))
            .rule(0.2, FaultKind::Drop)
            .seed(42);
        let run = || {
            let mut e = FaultEngine::new(1, faults.clone());
            (0..200)
                .map(|_| e.decide(&info(&Method::POST, "/api/x")).kind)
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|k| k.is_some()).count();
        assert!((60..=140).contains(&hits), "{hits}");
    }

    #[test]
    fn scripts_respect_filters_and_counts() {
        let mut e = FaultEngine::new(1, Faults::none());
        e.script(FaultFilter::method("post"), 2, FaultKind::Drop);
        assert_eq!(e.decide(&info(&Method::GET, "/api/x")).kind, None);
        assert_eq!(
            e.decide(&info(&Method::POST, "/api/x")).kind,
            Some(FaultKind::Drop)
        );
        assert_eq!(e.pending_scripted(), 1);
        assert_eq!(
            e.decide(&info(&Method::POST, "/api/x")).kind,
            Some(FaultKind::Drop)
        );
        assert_eq!(e.decide(&info(&Method::POST, "/api/x")).kind, None);
        e.script(FaultFilter::any(), 1, FaultKind::RepeatPage);
        assert_eq!(e.decide(&info(&Method::GET, "/api/x/1")).kind, None);
        assert_eq!(e.pending_scripted(), 1);
    }
}
