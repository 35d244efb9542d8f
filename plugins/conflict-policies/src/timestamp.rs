//! Reading a timestamp out of a record field: epoch milliseconds, epoch seconds or RFC 3339.
//!
//! Everything here is a pure function that never panics: a value that is not a timestamp gives
//! `None`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Numbers whose magnitude is below this are epoch **seconds** in [`TimestampFormat::Auto`];
/// larger ones are epoch **milliseconds**.
///
/// 10¹¹ seconds is the year 5138, and 10¹¹ milliseconds is 1973-03-03, so every realistic
/// timestamp of today is classified correctly in both units.
pub const AUTO_SECONDS_BELOW: i64 = 100_000_000_000;

/// How a timestamp field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// Guess from the value: a string is RFC 3339 (or a number in a string); a number is epoch
    /// seconds when its magnitude is below [`AUTO_SECONDS_BELOW`], epoch milliseconds otherwise.
    #[default]
    Auto,
    /// Epoch milliseconds (a JSON number, or a number in a string).
    EpochMs,
    /// Epoch seconds, fractions allowed (a JSON number, or a number in a string).
    EpochS,
    /// An RFC 3339 date-time string with an explicit offset (`Z` or `±hh:mm`).
    Rfc3339,
}

/// Reads `value` as a timestamp in epoch milliseconds; `None` if it is not one in `format`.
///
/// Fractions of a millisecond are truncated toward negative infinity. Values outside the range
/// of `i64` milliseconds, non-finite floats, booleans, arrays, objects and `null` give `None`.
///
/// ```
/// use serde_json::json;
/// use tidesync_conflict_policies::{TimestampFormat, parse_timestamp_ms};
///
/// let auto = TimestampFormat::Auto;
/// assert_eq!(parse_timestamp_ms(&json!(1_700_000_000), auto), Some(1_700_000_000_000));
/// assert_eq!(parse_timestamp_ms(&json!(1_700_000_000_123_i64), auto), Some(1_700_000_000_123));
/// assert_eq!(parse_timestamp_ms(&json!("1970-01-01T00:00:01.5Z"), auto), Some(1_500));
/// assert_eq!(parse_timestamp_ms(&json!("yesterday"), auto), None);
/// ```
pub fn parse_timestamp_ms(value: &Value, format: TimestampFormat) -> Option<i64> {
    match (format, value) {
        (TimestampFormat::Rfc3339, Value::String(s)) => parse_rfc3339_ms(s),
        (TimestampFormat::Rfc3339, _) => None,
        (_, Value::Number(n)) => number_ms(n, format),
        (TimestampFormat::Auto, Value::String(s)) => {
            parse_rfc3339_ms(s).or_else(|| numeric_string_ms(s, format))
        }
        (_, Value::String(s)) => numeric_string_ms(s, format),
        _ => None,
    }
}

fn numeric_string_ms(s: &str, format: TimestampFormat) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return int_ms(i, format);
    }
    // Only plain decimal notation; `f64::from_str` would also take "inf" and "NaN".
    if s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return s.parse::<f64>().ok().and_then(|f| float_ms(f, format));
    }
    None
}

fn number_ms(n: &serde_json::Number, format: TimestampFormat) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        int_ms(i, format)
    } else if n.is_u64() {
        // Larger than i64::MAX: not representable as milliseconds.
        None
    } else {
        n.as_f64().and_then(|f| float_ms(f, format))
    }
}

fn is_seconds(magnitude_is_small: bool, format: TimestampFormat) -> bool {
    match format {
        TimestampFormat::EpochS => true,
        TimestampFormat::EpochMs => false,
        TimestampFormat::Auto => magnitude_is_small,
        TimestampFormat::Rfc3339 => false,
    }
}

fn int_ms(i: i64, format: TimestampFormat) -> Option<i64> {
    if is_seconds(i.unsigned_abs() < AUTO_SECONDS_BELOW.unsigned_abs(), format) {
        i.checked_mul(1_000)
    } else {
        Some(i)
    }
}

fn float_ms(f: f64, format: TimestampFormat) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let ms = if is_seconds(f.abs() < AUTO_SECONDS_BELOW as f64, format) {
        f * 1_000.0
    } else {
        f
    };
    let ms = ms.floor();
    // i64::MAX is not exactly representable as f64; stay strictly inside the range.
    if (-9.2e18..=9.2e18).contains(&ms) {
        Some(ms as i64)
    } else {
        None
    }
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:30:00Z`, `2024-05-01t12:30:00.250+02:00`,
/// `2024-05-01 12:30:00Z`) to epoch milliseconds.
///
/// The offset is required (`Z`, `z` or `±hh:mm`): a local time without one could mean anything,
/// so it gives `None`. Fractions beyond milliseconds are truncated; a leap second (`:60`) counts
/// as the first second of the next minute. Years 0000–9999 only, as RFC 3339 allows.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    // YYYY-MM-DDTHH:MM:SS is 19 bytes, and an offset adds at least one.
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    byte_at(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    byte_at(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    byte_at(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    byte_at(b, 16, b':')?;
    let second = digits(b, 17, 2)?;

    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // The first three digits, right-padded: ".5" is 500 ms, ".123456" is 123 ms.
        for k in 0..3 {
            let digit = b
                .get(start + k)
                .filter(|_| start + k < i)
                .map_or(0, |d| d - b'0');
            millis = millis * 10 + i64::from(digit);
        }
    }

    let offset_minutes = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let h = digits(rest, 0, 2)?;
            let m = digits(rest, 3, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let slice = b.get(at..at + len)?;
    slice.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

fn byte_at(b: &[u8], at: usize, want: u8) -> Option<()> {
    (b.get(at) == Some(&want)).then_some(())
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:00.001Z", Some(1)),
            ("1970-01-01T00:00:01.5Z", Some(1_500)),
            ("1970-01-01T00:00:01.123999Z", Some(1_123)),
            ("1969-12-31T23:59:59Z", Some(-1_000)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000)),
            ("2023-11-14t22:13:20z", Some(1_700_000_000_000)),
            ("2023-11-14 22:13:20Z", Some(1_700_000_000_000)),
            ("2023-11-15T00:13:20+02:00", Some(1_700_000_000_000)),
            ("2023-11-14T20:13:20-02:00", Some(1_700_000_000_000)),
            ("  2023-11-14T22:13:20Z  ", Some(1_700_000_000_000)),
            ("2016-12-31T23:59:60Z", Some(1_483_228_800_000)),
            ("0000-01-01T00:00:00Z", Some(-62_167_219_200_000)),
            ("9999-12-31T23:59:59.999Z", Some(253_402_300_799_999)),
            // Rejected.
            ("2023-11-14T22:13:20", None),
            ("2023-11-14", None),
            ("2023-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2023-13-01T00:00:00Z", None),
            ("2023-00-01T00:00:00Z", None),
            ("2023-11-31T00:00:00Z", None),
            ("2023-11-14T24:00:00Z", None),
            ("2023-11-14T22:60:00Z", None),
            ("2023-11-14T22:13:61Z", None),
            ("2023-11-14T22:13:20.Z", None),
            ("2023-11-14T22:13:20+2:00", None),
            ("2023-11-14T22:13:20+24:00", None),
            ("2023-11-14T22:13:20+02:60", None),
            ("2023-11-14T22:13:20Zjunk", None),
            ("2023-11-14X22:13:20Z", None),
            ("+2023-11-14T22:13:20Z", None),
            ("２０２３-11-14T22:13:20Z", None),
            ("", None),
            ("Z", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rfc3339_ms(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn values_table() {
        use TimestampFormat::*;
        let cases: Vec<(Value, TimestampFormat, Option<i64>)> = vec![
            (json!(1_700_000_000), Auto, Some(1_700_000_000_000)),
            (json!(1_700_000_000_000_i64), Auto, Some(1_700_000_000_000)),
            (json!(1_700_000_000.5), Auto, Some(1_700_000_000_500)),
            (json!(-5), Auto, Some(-5_000)),
            (json!(0), Auto, Some(0)),
            (json!("1700000000"), Auto, Some(1_700_000_000_000)),
            (json!("1700000000123"), Auto, Some(1_700_000_000_123)),
            (json!("2023-11-14T22:13:20Z"), Auto, Some(1_700_000_000_000)),
            (json!(1_700_000_000), EpochMs, Some(1_700_000_000)),
            (
                json!(1_700_000_000_123_i64),
                EpochS,
                Some(1_700_000_000_123_000),
            ),
            (json!(1_700_000_000), EpochS, Some(1_700_000_000_000)),
            (json!("12.5"), EpochS, Some(12_500)),
            (json!(1.9), EpochMs, Some(1)),
            (json!(-1.5), EpochMs, Some(-2)),
            (json!("2023-11-14T22:13:20Z"), EpochMs, None),
            (json!(1_700_000_000), Rfc3339, None),
            (
                json!("2023-11-14T22:13:20Z"),
                Rfc3339,
                Some(1_700_000_000_000),
            ),
            (json!(u64::MAX), Auto, None),
            (json!(i64::MAX), Auto, Some(i64::MAX)),
            (json!(i64::MIN), Auto, Some(i64::MIN)),
            (json!(i64::MAX / 10), EpochS, None),
            (json!(1e300), Auto, None),
            (json!("inf"), Auto, None),
            (json!("NaN"), EpochMs, None),
            (json!("1e400"), EpochMs, None),
            (json!(""), Auto, None),
            (json!("  "), EpochMs, None),
            (json!(null), Auto, None),
            (json!(true), Auto, None),
            (json!([1_700_000_000]), Auto, None),
            (json!({"ms": 1}), Auto, None),
        ];
        for (value, format, want) in cases {
            assert_eq!(
                parse_timestamp_ms(&value, format),
                want,
                "value {value} as {format:?}"
            );
        }
    }

    #[test]
    fn formats_deserialize_in_snake_case() {
        let parsed: Vec<TimestampFormat> =
            serde_json::from_value(json!(["auto", "epoch_ms", "epoch_s", "rfc3339"]))
                .expect("formats deserialize");
        assert_eq!(
            parsed,
            vec![
                TimestampFormat::Auto,
                TimestampFormat::EpochMs,
                TimestampFormat::EpochS,
                TimestampFormat::Rfc3339
            ]
        );
    }
}
