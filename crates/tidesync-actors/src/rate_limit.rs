//! Request budgets per table and overall (sliding window), as the seed SDK's `rateLimit`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::{RateLimit, SyncSettings};

/// Sliding-window limiter. `acquire` waits until a request fits every budget that applies.
#[derive(Debug, Default)]
pub struct RateLimiter {
    per_table: HashMap<String, RateLimit>,
    global: Option<RateLimit>,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const GLOBAL: &str = "\u{0}global";

impl RateLimiter {
    /// A limiter with the budgets of `settings`.
    pub fn new(settings: &SyncSettings) -> Self {
        RateLimiter {
            per_table: settings.rate_limits.clone(),
            global: settings.global_rate_limit,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until one more request for `table` fits its budgets, then counts it.
    pub async fn acquire(&self, table: &str) {
        loop {
            let wait = self.try_acquire(table, Instant::now());
            match wait {
                None => return,
                Some(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// Counts the request and returns `None` if it fits now, else how long to wait.
    fn try_acquire(&self, table: &str, now: Instant) -> Option<Duration> {
        let budgets: Vec<(&str, RateLimit)> = self
            .per_table
            .get(table)
            .map(|l| (table, *l))
            .into_iter()
            .chain(self.global.map(|l| (GLOBAL, l)))
            .collect();
        if budgets.is_empty() {
            return None;
        }
        let mut sent = match self.sent.lock() {
            Ok(sent) => sent,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut wait = Duration::ZERO;
        for (name, limit) in &budgets {
            let log = sent.entry((*name).to_owned()).or_default();
            while log
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limit.window)
            {
                log.pop_front();
            }
            if log.len() >= limit.max_requests as usize
                && let Some(oldest) = log.front()
            {
                wait = wait.max(limit.window - now.duration_since(*oldest));
            }
        }
        if !wait.is_zero() {
            return Some(wait);
        }
        for (name, _) in &budgets {
            sent.entry((*name).to_owned()).or_default().push_back(now);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_asks_to_wait_until_the_oldest_request_expires() {
        let mut settings = SyncSettings::default();
        settings.rate_limits.insert(
            "posts".into(),
            RateLimit {
                max_requests: 2,
                window: Duration::from_millis(100),
            },
        );
        let limiter = RateLimiter::new(&settings);
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire("posts", t0), None);
        assert_eq!(
            limiter.try_acquire("posts", t0 + Duration::from_millis(10)),
            None
        );
        let wait = limiter
            .try_acquire("posts", t0 + Duration::from_millis(20))
            .unwrap();
        assert_eq!(wait, Duration::from_millis(80));
        assert_eq!(
            limiter.try_acquire("posts", t0 + Duration::from_millis(100)),
            None
        );
        assert_eq!(limiter.try_acquire("other", t0), None, "unlimited table");
    }
}
