//! The log's timestamps: RFC 3339, UTC, microseconds ([`format_ts`]),
//! written digit by digit for every record.
//!
//! Knows nothing of records or files.

use time::OffsetDateTime;

const TS_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// Format a timestamp as the log does: RFC 3339, UTC, microseconds.
pub fn format_ts(t: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(32);
    format_ts_into(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_ts`], appended to `out` (digits written directly: this runs
/// for every record).
pub(super) fn format_ts_into(t: OffsetDateTime, out: &mut Vec<u8>) {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        // Not a date the clock gives; the general formatter handles it.
        let _ = t.format_into(out, TS_FORMAT);
        return;
    }
    let parts = [
        (t.year() as u32, 4, b'-'),
        (u32::from(u8::from(t.month())), 2, b'-'),
        (u32::from(t.day()), 2, b'T'),
        (u32::from(t.hour()), 2, b':'),
        (u32::from(t.minute()), 2, b':'),
        (u32::from(t.second()), 2, b'.'),
        (t.microsecond(), 6, b'Z'),
    ];
    for (n, width, then) in parts {
        for i in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
        out.push(then);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_formatted_as_the_general_formatter_does() {
        let base = OffsetDateTime::from_unix_timestamp(1_764_400_000).unwrap();
        for offset_us in [
            0i64,
            1,
            999_999,
            86_399_000_001,
            -31_536_000_000_000,
            7_000_000_000_123_456,
        ] {
            let t = base + time::Duration::microseconds(offset_us);
            let mut ours = Vec::new();
            format_ts_into(t, &mut ours);
            let general = t.to_offset(time::UtcOffset::UTC).format(TS_FORMAT).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), general);
        }
    }
}
