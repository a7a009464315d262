//! The current time of a decision: the [`Clock`] the decision path reads to
//! supply `context.now` (a Cedar `datetime`, see
//! [`crate::policies::CLOCK_ATTRIBUTE`]), and the conversions between
//! milliseconds since the Unix epoch and Cedar's datetime strings.
//!
//! The caller never picks "now": [`crate::authz::Authz`] refuses a request
//! whose context sets it and supplies its own clock's reading, which the
//! decision log records with the context (so `audit replay` decides at the
//! same instant). Owns [`Clock`], [`SystemClock`] and [`ManualClock`]; it
//! never knows what a policy does with the time.

use std::sync::atomic::{AtomicI64, Ordering};

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Where the decision path and the orchestrator read the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch (Cedar's datetime precision).
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to: for tests that decide at and
/// around an instant, and for embedders that replay a known time.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn at(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Set the reading.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Move the reading by `delta_ms` (may be negative).
    pub fn advance(&self, delta_ms: i64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `ms` as an RFC 3339 UTC string with milliseconds
/// (`2026-12-03T06:00:00.123Z`), a form Cedar's `datetime` accepts; `None`
/// outside the years 0000-9999.
pub fn format_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// The Cedar entity/context JSON of the datetime `ms`
/// (`{"__extn": {"fn": "datetime", "arg": ...}}`).
pub fn datetime_json(ms: i64) -> Option<serde_json::Value> {
    Some(serde_json::json!({"__extn": {"fn": "datetime", "arg": format_ms(ms)?}}))
}

/// An RFC 3339 timestamp (`2027-01-01T00:00:00Z`, `...+01:00`, fractions
/// allowed) as milliseconds since the epoch; the error says why not.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))?;
    Ok(to_ms(t))
}

/// One of Cedar's datetime strings (`YYYY-MM-DD`, `YYYY-MM-DDThh:mm:ssZ`,
/// `YYYY-MM-DDThh:mm:ss.SSSZ`, `YYYY-MM-DDThh:mm:ss(+|-)hhmm`,
/// `YYYY-MM-DDThh:mm:ss.SSS(+|-)hhmm`) as milliseconds since the epoch;
/// `None` for anything else.
pub fn parse_cedar_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    if b.len() == 10 {
        return Some(to_ms(
            PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc(),
        ));
    }
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        millis = num(20..23)?;
        rest = frac.get(3..)?;
    }
    let offset = match rest {
        "Z" => UtcOffset::UTC,
        _ if rest.len() == 5 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let hh = i8::try_from(rest[1..3].parse::<u8>().ok()?).ok()?;
            let mm = i8::try_from(rest[3..5].parse::<u8>().ok()?).ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            UtcOffset::from_hms(sign * hh, sign * mm, 0).ok()?
        }
        _ => return None,
    };
    let t = Time::from_hms_milli(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(sec).ok()?,
        u16::try_from(millis).ok()?,
    )
    .ok()?;
    Some(to_ms(PrimitiveDateTime::new(date, t).assume_offset(offset)))
}

fn to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A `datetime` value whose argument [`parse_cedar_ms`] cannot read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable datetime `{0}`")]
pub struct UnreadableDatetime(pub String);

/// Every Cedar datetime value in `v` (entity or context JSON, any depth),
/// as milliseconds: the argument of every `datetime` extension value
/// (`{"__extn": {"fn": "datetime", "arg": ..}}` or `{"fn": "datetime", "arg": ..}`)
/// and, conservatively, every string that reads as a datetime (a schema
/// lets a context give one as a plain string). `Err` if a `datetime`
/// argument cannot be read: the caller must then assume the worst.
pub fn datetimes_in(v: &serde_json::Value, out: &mut Vec<i64>) -> Result<(), UnreadableDatetime> {
    match v {
        serde_json::Value::Object(map) => {
            match map.get("fn").and_then(|f| f.as_str()) {
                Some("datetime") => {
                    let arg = map.get("arg").and_then(|a| a.as_str());
                    let ms = arg.and_then(parse_cedar_ms);
                    out.push(ms.ok_or_else(|| UnreadableDatetime(arg.unwrap_or("").to_string()))?);
                    return Ok(());
                }
                // A datetime written as arithmetic (`offset(datetime(..), duration(..))`,
                // as a solver writes one): not read here, so assume the worst.
                Some("offset" | "duration" | "toDate" | "toTime") => {
                    return Err(UnreadableDatetime(
                        serde_json::Value::Object(map.clone()).to_string(),
                    ));
                }
                _ => {}
            }
            map.values().try_for_each(|x| datetimes_in(x, out))
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|x| datetimes_in(x, out)),
        serde_json::Value::String(s) => {
            out.extend(parse_cedar_ms(s));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// [`datetimes_in`] of the JSON text `text` (a stored entity), without
/// parsing a text that cannot hold one: only a text with a `"fn"` key (an
/// extension value), an escape, or ten characters shaped like `YYYY-MM-DD`
/// (every form [`parse_cedar_ms`] reads starts so) is parsed and walked. An
/// unparsable text is an error, as an unreadable datetime is.
pub fn datetimes_in_text(text: &str, out: &mut Vec<i64>) -> Result<(), UnreadableDatetime> {
    if !text.contains("\"fn\"") && !text.contains('\\') && !has_date_shape(text.as_bytes()) {
        return Ok(());
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| UnreadableDatetime(e.to_string()))?;
    datetimes_in(&v, out)
}

/// Whether `b` holds `DDDD-DD-DD` (D an ASCII digit) anywhere.
fn has_date_shape(b: &[u8]) -> bool {
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    b.iter().enumerate().any(|(i, &c)| {
        c == b'-'
            && i >= 4
            && (i - 4..i).all(digit)
            && b.get(i + 3) == Some(&b'-')
            && [i + 1, i + 2, i + 4, i + 5].into_iter().all(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cedar_datetime_forms_read_as_the_same_instants_cedar_compares() {
        let end = parse_rfc3339_ms("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_cedar_ms("2027-01-01"), Some(end));
        assert_eq!(parse_cedar_ms("2027-01-01T00:00:00Z"), Some(end));
        assert_eq!(parse_cedar_ms("2027-01-01T00:00:00.001Z"), Some(end + 1));
        assert_eq!(
            parse_cedar_ms("2027-01-01T01:00:00+0100"),
            Some(end),
            "an offset is subtracted"
        );
        assert_eq!(
            parse_cedar_ms("2026-12-31T23:00:00.500-0100"),
            Some(end + 500)
        );
        for bad in [
            "2027-13-01",
            "2027-01-01T00:00:00",
            "2027-01-01T00:00:00+01:00",
            "x",
            "",
        ] {
            assert_eq!(parse_cedar_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatted_instants_read_back_exactly() {
        for ms in [
            0,
            1,
            1_798_761_599_999,
            1_798_761_600_000,
            253_402_300_799_999,
        ] {
            let s = format_ms(ms).unwrap();
            assert_eq!(parse_cedar_ms(&s), Some(ms), "{s}");
            assert_eq!(parse_rfc3339_ms(&s), Ok(ms), "{s}");
        }
        assert_eq!(format_ms(253_402_300_800_000), None, "year 10000");
    }

    #[test]
    fn datetimes_are_found_at_any_depth_and_unreadable_ones_are_errors() {
        let v = serde_json::json!([{"attrs": {"partner": {"expires_at":
            {"__extn": {"fn": "datetime", "arg": "2027-01-01"}}}, "ip": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}},
            "note": "2027-02-01T00:00:00Z", "name": "ann"}}]);
        let mut out = Vec::new();
        datetimes_in(&v, &mut out).unwrap();
        out.sort_unstable();
        assert_eq!(
            out,
            vec![
                parse_cedar_ms("2027-01-01").unwrap(),
                parse_cedar_ms("2027-02-01T00:00:00Z").unwrap()
            ]
        );
        let bad = serde_json::json!({"__extn": {"fn": "datetime", "arg": "soon"}});
        assert!(datetimes_in(&bad, &mut Vec::new()).is_err());
        let arithmetic = serde_json::json!({"__extn": {"fn": "offset", "args": [
            {"__extn": {"fn": "datetime", "arg": "1970-01-01"}},
            {"__extn": {"fn": "duration", "arg": "-1ms"}}]}});
        assert!(
            datetimes_in(&arithmetic, &mut Vec::new()).is_err(),
            "an offset is not read as its first argument"
        );
    }

    #[test]
    fn datetimes_in_text_finds_what_the_parsed_json_holds() {
        let texts = [
            r#"{"uid":{"type":"User","id":"ann"},"attrs":{"partner":{"expires_at":{"__extn":{"fn":"datetime","arg":"2027-01-01"}}}},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"bob"},"attrs":{"note":"2027-02-01T00:00:00Z"},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"2027-03-01"},"attrs":{},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"cy"},"attrs":{"note":"\u0032\u0030\u0032\u0037-04-01"},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"dee"},"attrs":{"n":1234,"m":"12-34-56","e":"a@b.c"},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"eve"},"attrs":{"t":{"__extn":{"fn":"datetime","arg":"soon"}}},"parents":[]}"#,
            r#"{"uid":{"type":"User","id":"fay"},"attrs":{"t":{"fn":"offset"}},"parents":[]}"#,
        ];
        for text in texts {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let ra = datetimes_in(&v, &mut a).map_err(|e| e.to_string());
            let rb = datetimes_in_text(text, &mut b).map_err(|e| e.to_string());
            assert_eq!((ra, a), (rb, b), "{text}");
        }
        assert!(datetimes_in_text("{not json 2027-01-01", &mut Vec::new()).is_err());
        assert!(!has_date_shape(b"2027-01-0"));
        assert!(has_date_shape(b"x2027-01-01"));
    }
}
