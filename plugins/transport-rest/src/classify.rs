//! Failure classification: one place that maps HTTP statuses and client errors to
//! [`ErrorKind`]s, and parses `Retry-After`.
//!
//! | what happened                                  | kind          | retryable |
//! |------------------------------------------------|---------------|-----------|
//! | connect/DNS/reset, body cut short              | `Network`     | yes       |
//! | connect or request timeout                     | `Timeout`     | yes       |
//! | 408, 425, 5xx                                  | `Server`      | yes       |
//! | 429                                            | `RateLimited` | yes       |
//! | 401, 403 (after the auth provider's refreshes) | `Auth`        | no        |
//! | 426 (this client is too old)                   | `UpgradeRequired` | no    |
//! | 409, 412                                       | `Conflict`    | no        |
//! | any other status outside 2xx                   | `Permanent`   | no        |
//! | 2xx whose body does not decode or lacks the key, or is too large | `Decode` | no |
//!
//! A write route's answer rules (`answers`, applied in `push.rs`) are tried before this table
//! and can give any answer another meaning (a 400 or a 200 `[]` that is a conflict); a 404 to a
//! delete that carried a precondition is a `Conflict`.
//!
//! `Retry-After` is read from every failed response, in both forms: delay-seconds and
//! HTTP-date. A date in the past means "now" (zero); anything unparsable is ignored.

use std::time::{Duration, SystemTime};

use tidesync_core::ErrorKind;

/// The kind for a response status outside 2xx.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        408 | 425 | 500..=599 => ErrorKind::Server,
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Auth,
        426 => ErrorKind::UpgradeRequired,
        409 | 412 => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

/// The kind for a failure of the HTTP client itself (no status received).
pub fn kind_for_client_error(err: &reqwest::Error) -> ErrorKind {
    if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_builder() {
        ErrorKind::Config
    } else if err.is_redirect() {
        ErrorKind::Permanent
    } else {
        // connect errors, resets, truncated bodies, protocol errors: the network failed.
        ErrorKind::Network
    }
}

/// A short description of a client error, without URLs (they may carry query tokens).
pub fn describe_client_error(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "failed while reading the response body"
    } else if err.is_request() {
        "failed to send the request"
    } else if err.is_redirect() {
        "too many or bad redirects"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        format!("request {what}")
    } else {
        format!("request {what}: {cause}")
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date. Dates in the past give zero;
/// garbage gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Huge numbers saturate rather than fail: the server clearly wants us to wait.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Up to `max` bytes of `body` as text, cut on a character boundary, marked when cut.
pub fn excerpt(body: &[u8], max: usize) -> String {
    let cut = body.len() > max;
    let mut end = body.len().min(max);
    let text = loop {
        match std::str::from_utf8(&body[..end]) {
            Ok(text) => break text.to_owned(),
            // A multi-byte character was cut: back off to its start (at most 3 bytes).
            Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&body[..end]).into_owned(),
        }
    };
    if cut {
        format!("{text}… ({} bytes in all)", body.len())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        for (status, kind) in [
            (408, ErrorKind::Server),
            (425, ErrorKind::Server),
            (500, ErrorKind::Server),
            (502, ErrorKind::Server),
            (503, ErrorKind::Server),
            (599, ErrorKind::Server),
            (429, ErrorKind::RateLimited),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (409, ErrorKind::Conflict),
            (412, ErrorKind::Conflict),
            (400, ErrorKind::Permanent),
            (404, ErrorKind::Permanent),
            (410, ErrorKind::Permanent),
            (422, ErrorKind::Permanent),
            (302, ErrorKind::Permanent),
        ] {
            assert_eq!(kind_for_status(status), kind, "{status}");
        }
        assert!(kind_for_status(429).retryable());
        assert!(!kind_for_status(409).retryable());
    }

    #[test]
    fn retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for garbage in ["", "soon", "-5", "1.5", "Mon, 99 Foo 2024 00:00:00 GMT"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn excerpts_are_bounded_and_utf8_safe() {
        assert_eq!(excerpt(b"short", 512), "short");
        let long = "é".repeat(600);
        let cut = excerpt(long.as_bytes(), 513);
        assert!(cut.starts_with(&"é".repeat(256)));
        assert!(cut.ends_with("(1200 bytes in all)"), "{cut}");
        assert_eq!(excerpt(&[0xff, 0xfe], 10), "\u{fffd}\u{fffd}");
    }
}
