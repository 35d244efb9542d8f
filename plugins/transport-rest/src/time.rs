//! Timestamps as APIs write them: epoch seconds, milliseconds or microseconds, RFC 3339, or
//! date-time text with its own separator, fractional precision and zone.
//!
//! Internally a timestamp is an `i128` count of nanoseconds since the Unix epoch, so values of
//! any shape compare exactly. Formatting rounds *down* to the target precision: a checkpoint
//! sent to the server can only be earlier than the real one, which may re-deliver a record
//! (harmless: applying it again is idempotent) but never skips one.
//!
//! In a config file `timestamp` (and `cursor_format`) is a preset name — `"epoch_ms"`,
//! `"epoch_s"`, `"epoch_us"`, `"rfc3339"` — or a table describing date-time text:
//!
//! ```toml
//! timestamp = { separator = " ", fraction = 3, zone = "Z" }   # 2024-05-01 12:00:00.123Z
//! ```
//!
//! `separator` is `"T"` (default) or `" "`; `fraction` is the number of fraction digits
//! written (0–9; absent: as many as needed, at least 3); `zone` is `"Z"` (default),
//! `"+00:00"` or `"none"` (UTC without a zone). Text is *read* leniently (either separator,
//! any fraction, `Z` or any offset, no zone where `zone = "none"`), and *written* exactly so,
//! which is what matters when the server compares `{cursor}` as text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

const NS_PER_US: i128 = 1_000;
const NS_PER_MS: i128 = 1_000_000;
const NS_PER_S: i128 = 1_000_000_000;

/// The character between date and time in date-time text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Separator {
    /// `2024-05-01T12:00:00Z` (RFC 3339).
    #[default]
    #[serde(rename = "T")]
    T,
    /// `2024-05-01 12:00:00Z` (SQL style).
    #[serde(rename = " ")]
    Space,
}

/// How date-time text names its zone (always UTC when written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Zone {
    /// `Z`.
    #[default]
    #[serde(rename = "Z")]
    Z,
    /// `+00:00`.
    #[serde(rename = "+00:00")]
    Offset,
    /// No zone at all (UTC assumed when read).
    #[serde(rename = "none")]
    None,
}

/// Date-time text: separator, fraction digits and zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextFormat {
    /// Between date and time.
    #[serde(default)]
    pub separator: Separator,
    /// Fraction digits written (0–9); `None`: as needed, at least milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<u8>,
    /// The zone suffix.
    #[serde(default)]
    pub zone: Zone,
}

/// How a timestamp is written, in records or in a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// Milliseconds since the Unix epoch (a JSON number, or a string of digits). `"epoch_ms"`.
    #[default]
    EpochMs,
    /// Seconds since the Unix epoch (a JSON number, possibly fractional, or a string).
    /// `"epoch_s"`.
    EpochS,
    /// Microseconds since the Unix epoch. `"epoch_us"`.
    EpochUs,
    /// An RFC 3339 date-time string (`2024-05-01T12:00:00.123Z`, any offset). `"rfc3339"`.
    Rfc3339,
    /// Date-time text in the given shape (a table in config files).
    Text(TextFormat),
}

impl TimeFormat {
    /// Date-time text with a space between date and time, `fraction` digits and a `Z`
    /// (`2024-05-01 12:00:00.123Z` for 3): how many SQL-backed APIs write timestamps.
    pub fn space_separated(fraction: u8) -> Self {
        TimeFormat::Text(TextFormat {
            separator: Separator::Space,
            fraction: Some(fraction.min(9)),
            zone: Zone::Z,
        })
    }

    /// The preset name, if this is one.
    pub fn preset_name(self) -> Option<&'static str> {
        match self {
            TimeFormat::EpochMs => Some("epoch_ms"),
            TimeFormat::EpochS => Some("epoch_s"),
            TimeFormat::EpochUs => Some("epoch_us"),
            TimeFormat::Rfc3339 => Some("rfc3339"),
            TimeFormat::Text(_) => None,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "epoch_ms" => Some(TimeFormat::EpochMs),
            "epoch_s" => Some(TimeFormat::EpochS),
            "epoch_us" => Some(TimeFormat::EpochUs),
            "rfc3339" => Some(TimeFormat::Rfc3339),
            _ => None,
        }
    }

    /// Parses a timestamp written in this format; `None` if it is not one.
    pub fn parse(self, value: &Value) -> Option<i128> {
        match self {
            TimeFormat::EpochMs => parse_number(value, NS_PER_MS),
            TimeFormat::EpochS => parse_number(value, NS_PER_S),
            TimeFormat::EpochUs => parse_number(value, NS_PER_US),
            TimeFormat::Rfc3339 => value.as_str().and_then(parse_rfc3339),
            TimeFormat::Text(text) => value.as_str().and_then(|s| {
                parse_rfc3339(s).or_else(|| {
                    if text.zone == Zone::None {
                        parse_rfc3339(&format!("{}Z", s.trim()))
                    } else {
                        None
                    }
                })
            }),
        }
    }

    /// Formats nanoseconds since the epoch in this format, rounding down.
    pub fn format(self, ns: i128) -> String {
        match self {
            TimeFormat::EpochMs => ns.div_euclid(NS_PER_MS).to_string(),
            TimeFormat::EpochS => ns.div_euclid(NS_PER_S).to_string(),
            TimeFormat::EpochUs => ns.div_euclid(NS_PER_US).to_string(),
            TimeFormat::Rfc3339 => format_rfc3339(ns),
            TimeFormat::Text(text) => format_text(ns, text),
        }
    }
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.preset_name(), self) {
            (Some(name), _) => f.write_str(name),
            (None, TimeFormat::Text(t)) => write!(
                f,
                "text (separator {:?}, fraction {}, zone {})",
                match t.separator {
                    Separator::T => "T",
                    Separator::Space => " ",
                },
                t.fraction
                    .map_or_else(|| "as needed".to_owned(), |d| d.to_string()),
                match t.zone {
                    Zone::Z => "Z",
                    Zone::Offset => "+00:00",
                    Zone::None => "none",
                }
            ),
            (None, _) => f.write_str("?"),
        }
    }
}

impl Serialize for TimeFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.preset_name(), self) {
            (Some(name), _) => s.serialize_str(name),
            (None, TimeFormat::Text(t)) => t.serialize(s),
            (None, _) => s.serialize_str("epoch_ms"),
        }
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Text(TextFormat),
        }
        match Repr::deserialize(d) {
            Ok(Repr::Name(name)) => TimeFormat::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown timestamp format `{name}`: expected epoch_ms, epoch_s, epoch_us, \
                     rfc3339, or a table {{ separator = \"T\" | \" \", fraction = 0..9, \
                     zone = \"Z\" | \"+00:00\" | \"none\" }}"
                ))
            }),
            Ok(Repr::Text(text)) => {
                if text.fraction.is_some_and(|d| d > 9) {
                    return Err(serde::de::Error::custom(
                        "timestamp fraction: at most 9 digits",
                    ));
                }
                Ok(TimeFormat::Text(text))
            }
            Err(_) => Err(serde::de::Error::custom(
                "timestamp format: expected epoch_ms, epoch_s, epoch_us, rfc3339, or a table \
                 { separator = \"T\" | \" \", fraction = 0..9, zone = \"Z\" | \"+00:00\" | \
                 \"none\" } (no other keys)",
            )),
        }
    }
}

/// Formats as date-time text in UTC in the given shape, rounding down to its precision.
pub fn format_text(ns: i128, text: TextFormat) -> String {
    let rfc = format_rfc3339(ns);
    // `YYYY-MM-DDTHH:MM:SS.fff…Z`
    let (head, rest) = rfc.split_at(19);
    let frac_digits = rest.trim_start_matches('.').trim_end_matches('Z');
    let frac = match text.fraction {
        None => format!(".{frac_digits}"),
        Some(0) => String::new(),
        Some(d) => {
            let nanos = format!("{:09}", ns.rem_euclid(NS_PER_S));
            format!(".{}", &nanos[..usize::from(d.min(9))])
        }
    };
    let mut head = head.to_owned();
    if text.separator == Separator::Space {
        head.replace_range(10..11, " ");
    }
    let zone = match text.zone {
        Zone::Z => "Z",
        Zone::Offset => "+00:00",
        Zone::None => "",
    };
    format!("{head}{frac}{zone}")
}

fn parse_number(value: &Value, unit: i128) -> Option<i128> {
    let parse_text = |s: &str| -> Option<i128> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Some(i128::from(i) * unit);
        }
        s.parse::<f64>().ok().and_then(|f| float_to_ns(f, unit))
    };
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(i128::from(i) * unit),
            None => n.as_f64().and_then(|f| float_to_ns(f, unit)),
        },
        Value::String(s) => parse_text(s),
        _ => None,
    }
}

fn float_to_ns(f: f64, unit: i128) -> Option<i128> {
    // Bounded to years −9999..9999 or so, which also rules out NaN and infinities.
    if !f.is_finite() || f.abs() * (unit as f64 / 1e9) > 4e11 {
        return None;
    }
    // Rounded to whole microseconds first, so 1.1 s is exactly 1_100_000_000 ns.
    let micros = (f * (unit / 1_000) as f64).round();
    Some(micros as i128 * 1_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time; `Z`, `z` or a
/// `±HH:MM` offset; any number of fraction digits, nanoseconds kept).
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (hour, minute, second) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(len).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + i128::from(c - b'0');
            }
        }
        for _ in len..9 {
            nanos *= 10;
        }
        rest = &frac[len..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (digits(rest, 1..3)?, digits(rest, 4..6)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(i128::from(secs) * NS_PER_S + nanos)
}

/// Formats as RFC 3339 in UTC with millisecond precision, or micro/nanoseconds when needed.
pub fn format_rfc3339(ns: i128) -> String {
    let secs = ns.div_euclid(NS_PER_S);
    let nanos = ns.rem_euclid(NS_PER_S);
    let days = i64::try_from(secs.div_euclid(86_400)).unwrap_or(0);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let frac = if nanos % 1_000_000 == 0 {
        format!("{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{:06}", nanos / 1_000)
    } else {
        format!("{nanos:09}")
    };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epoch_formats_parse_numbers_and_strings() {
        assert_eq!(
            TimeFormat::EpochMs.parse(&json!(1_700_000_000_123i64)),
            Some(1_700_000_000_123 * NS_PER_MS)
        );
        assert_eq!(
            TimeFormat::EpochMs.parse(&json!("1700000000123")),
            Some(1_700_000_000_123 * NS_PER_MS)
        );
        assert_eq!(TimeFormat::EpochS.parse(&json!(1.5)), Some(1_500_000_000));
        assert_eq!(TimeFormat::EpochS.parse(&json!(true)), None);
        assert_eq!(TimeFormat::EpochMs.parse(&json!("soon")), None);
        assert_eq!(TimeFormat::EpochS.parse(&json!(1e300)), None);
    }

    #[test]
    fn rfc3339_round_trips() {
        let ns = parse_rfc3339("2024-02-29T23:59:58.123Z").unwrap();
        assert_eq!(ns, 1_709_251_198_123 * NS_PER_MS);
        assert_eq!(format_rfc3339(ns), "2024-02-29T23:59:58.123Z");
        assert_eq!(
            parse_rfc3339("2024-03-01T01:59:58.123+02:00"),
            Some(ns),
            "offsets are applied"
        );
        let micro = parse_rfc3339("1970-01-01T00:00:00.000001Z").unwrap();
        assert_eq!(micro, 1_000);
        assert_eq!(format_rfc3339(micro), "1970-01-01T00:00:00.000001Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(TimeFormat::Rfc3339.format(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_rejects_garbage() {
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "yesterday at noon, roughly",
            "2024-01-01T00:00:00Zjunk",
            "२०२४-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_formats_write_exactly_and_read_leniently() {
        let ns = parse_rfc3339("2024-05-01T12:00:05.123456789Z").unwrap();
        let sql = TimeFormat::space_separated(3);
        assert_eq!(sql.format(ns), "2024-05-01 12:00:05.123Z");
        assert_eq!(
            sql.parse(&json!("2024-05-01 12:00:05.123Z")),
            Some(ns - 456_789)
        );
        assert_eq!(
            sql.parse(&json!("2024-05-01T12:00:05.123+00:00")),
            Some(ns - 456_789)
        );
        let naive = TimeFormat::Text(TextFormat {
            separator: Separator::Space,
            fraction: Some(0),
            zone: Zone::None,
        });
        assert_eq!(naive.format(ns), "2024-05-01 12:00:05");
        assert_eq!(
            naive.parse(&json!("2024-05-01 12:00:05")),
            Some(ns - 123_456_789)
        );
        let micro = TimeFormat::Text(TextFormat {
            separator: Separator::T,
            fraction: Some(6),
            zone: Zone::Offset,
        });
        assert_eq!(micro.format(ns), "2024-05-01T12:00:05.123456+00:00");
        assert_eq!(TimeFormat::EpochUs.format(ns), "1714564805123456");
        assert_eq!(
            TimeFormat::EpochUs.parse(&json!(1_714_564_805_123_456i64)),
            Some(ns - 789)
        );
        assert_eq!(
            TimeFormat::Rfc3339.parse(&json!("2024-05-01 12:00:05")),
            None,
            "rfc3339 needs a zone"
        );
    }

    #[test]
    fn presets_and_tables_deserialize() {
        let f: TimeFormat = serde_json::from_str(r#""epoch_us""#).unwrap();
        assert_eq!(f, TimeFormat::EpochUs);
        let f: TimeFormat =
            serde_json::from_str(r#"{"separator": " ", "fraction": 3, "zone": "Z"}"#).unwrap();
        assert_eq!(f, TimeFormat::space_separated(3));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"separator":" ","fraction":3,"zone":"Z"}"#
        );
        assert_eq!(
            serde_json::to_string(&TimeFormat::Rfc3339).unwrap(),
            r#""rfc3339""#
        );
        let err = serde_json::from_str::<TimeFormat>(r#""iso""#).unwrap_err();
        assert!(
            err.to_string().contains("unknown timestamp format `iso`"),
            "{err}"
        );
        assert!(serde_json::from_str::<TimeFormat>(r#"{"fraction": 12}"#).is_err());
        assert!(serde_json::from_str::<TimeFormat>(r#"{"sep": " "}"#).is_err());
    }

    #[test]
    fn formatting_rounds_down() {
        assert_eq!(TimeFormat::EpochS.format(1_999_999_999), "1");
        assert_eq!(TimeFormat::EpochMs.format(1_999_999), "1");
        assert_eq!(TimeFormat::EpochMs.format(-1), "-1");
    }
}
