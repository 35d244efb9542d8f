//! Retry delays: exponential backoff with full jitter, and `Retry-After` wins.

use std::time::Duration;

use rand::Rng;

use crate::settings::SyncSettings;

/// The delay before retry number `attempt` (1 = first retry).
///
/// With a server `Retry-After`, that delay is used as is (the server knows best). Otherwise,
/// the user's function if set, else full jitter: uniform in `0..=min(cap, base · 2^(attempt-1))`
/// (AWS architecture blog, "Exponential Backoff and Jitter"), which spreads retries of many
/// clients instead of synchronising them.
pub fn retry_delay(
    settings: &SyncSettings,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(delay) = retry_after {
        return delay.min(Duration::from_secs(24 * 3600));
    }
    if let Some(custom) = &settings.retry_delay {
        return custom(attempt);
    }
    let ceiling = exponential_ceiling(settings.backoff_base, settings.backoff_cap, attempt);
    let ms = ceiling.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// `min(cap, base · 2^(attempt-1))`, without overflow.
pub fn exponential_ceiling(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    base.checked_mul(1u32 << exponent.min(31))
        .unwrap_or(cap)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (1..=6)
            .map(|a| exponential_ceiling(base, cap, a).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(exponential_ceiling(base, cap, 10_000), cap);
    }

    #[test]
    fn jittered_delays_stay_within_the_ceiling_and_vary() {
        let settings = SyncSettings::default();
        let delays: Vec<Duration> = (0..200).map(|_| retry_delay(&settings, 3, None)).collect();
        let ceiling = exponential_ceiling(settings.backoff_base, settings.backoff_cap, 3);
        assert!(delays.iter().all(|d| *d <= ceiling));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads delays");
    }

    #[test]
    fn retry_after_wins_and_custom_functions_replace_backoff() {
        let mut settings = SyncSettings::default();
        assert_eq!(
            retry_delay(&settings, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        settings.retry_delay = Some(std::sync::Arc::new(|attempt| {
            Duration::from_secs(attempt as u64)
        }));
        assert_eq!(retry_delay(&settings, 4, None), Duration::from_secs(4));
        // The server's Retry-After still wins over the user's function.
        assert_eq!(
            retry_delay(&settings, 4, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
