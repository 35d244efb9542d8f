//! `Retry-After` and failure classification: any header value is parsed without panicking,
//! both forms are read, and the delay the engine derives is never absurd: at most one day for a
//! server's `Retry-After`, at most `backoff_cap` for its own backoff.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tidesync::ErrorKind;
use tidesync::SyncSettings;
use tidesync::actors::backoff::retry_delay;
use tidesync_transport_rest::classify::{excerpt, kind_for_status, parse_retry_after};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// Header values: garbage, numbers of every size, dates in and out of range.
fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,30}",
        " ?-?[0-9]{1,6}(\\.[0-9])? ?",
        (-400_000_000i64..400_000_000).prop_map(|offset| {
            let at = if offset >= 0 {
                now() + Duration::from_secs(offset as u64)
            } else {
                now() - Duration::from_secs(offset.unsigned_abs())
            };
            httpdate::fmt_http_date(at)
        }),
        "(Mon|Tue|Foo), [0-9]{1,2} (Jan|Feb|Xyz) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|UTC)",
    ]
}

proptest! {
    #![proptest_config(crate::cases(1000))]

    #[test]
    fn any_retry_after_value_parses_or_is_ignored(value in retry_after_value()) {
        let parsed = parse_retry_after(&value, now());
        let trimmed = value.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
            prop_assert_eq!(parsed, Some(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn http_dates_give_the_time_until_then(offset in -400_000_000i64..400_000_000) {
        let at = if offset >= 0 {
            now() + Duration::from_secs(offset as u64)
        } else {
            now() - Duration::from_secs(offset.unsigned_abs())
        };
        let parsed = parse_retry_after(&httpdate::fmt_http_date(at), now());
        prop_assert_eq!(parsed, Some(Duration::from_secs(offset.max(0) as u64)));
    }

    #[test]
    fn the_engine_never_waits_absurdly(
        value in retry_after_value(),
        attempt in any::<u32>(),
        base_ms in 1u64..10_000,
        cap_ms in 0u64..10_000_000,
    ) {
        let settings = SyncSettings {
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_millis(base_ms + cap_ms),
            ..SyncSettings::default()
        };
        let retry_after = parse_retry_after(&value, now());
        let delay = retry_delay(&settings, attempt, retry_after);
        match retry_after {
            Some(wanted) => prop_assert_eq!(delay, wanted.min(DAY)),
            None => prop_assert!(delay <= settings.backoff_cap),
        }
        // What the pusher does with it: no overflow for any delay.
        let due = tidesync::core::hlc::wall_millis().checked_add(delay.as_millis() as u64);
        prop_assert!(due.is_some());
    }

    #[test]
    fn every_status_has_one_documented_kind(status in any::<u16>()) {
        let kind = kind_for_status(status);
        let expected = match status {
            408 | 425 | 500..=599 => ErrorKind::Server,
            429 => ErrorKind::RateLimited,
            401 | 403 => ErrorKind::Auth,
            409 | 412 => ErrorKind::Conflict,
            _ => ErrorKind::Permanent,
        };
        prop_assert_eq!(kind, expected);
        prop_assert_eq!(
            kind.retryable(),
            matches!(status, 408 | 425 | 429 | 500..=599)
        );
    }

    #[test]
    fn excerpts_are_bounded_utf8(body in prop::collection::vec(any::<u8>(), 0..2000), max in 0usize..600) {
        let text = excerpt(&body, max);
        if body.len() <= max {
            // All of it, except that an incomplete character at the very end may be dropped.
            let whole = String::from_utf8_lossy(&body).into_owned();
            prop_assert!(whole.starts_with(&text), "{:?} vs {:?}", text, whole);
            prop_assert!(whole.len() - text.len() <= 3, "{:?} vs {:?}", text, whole);
        } else {
            prop_assert!(text.ends_with(&format!("({} bytes in all)", body.len())), "{}", text);
            // The cut part is at most `max` bytes of the body (lossy chars take 3 bytes each).
            prop_assert!(text.len() <= max * 3 + 40);
        }
    }
}
