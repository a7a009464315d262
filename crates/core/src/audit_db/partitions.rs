//! The day partitions of `audit_records` (range on `ts`, UTC days): each
//! created once, before the first record of its day is inserted, under a
//! transaction-level advisory lock so that replicas creating the same day
//! at once do not collide. Knows nothing of log files.

use std::collections::HashSet;

use postgres::Client;
use time::{Date, Duration, OffsetDateTime};

/// Serialises the creation of partitions across replicas, and their
/// retention.
pub(super) const PARTITION_LOCK: i64 = 0x5047_0003;

/// The name of the partition holding `day`: `audit_records_YYYYMMDD`.
pub fn partition_name(day: Date) -> String {
    format!(
        "audit_records_{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The day of a partition named by [`partition_name`]; None for any other
/// name (only such names are ever put in a statement).
pub fn partition_day(name: &str) -> Option<Date> {
    let digits = name.strip_prefix("audit_records_")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let day = Date::from_calendar_date(
        i32::try_from(n(0..4)?).ok()?,
        month,
        u8::try_from(n(6..8)?).ok()?,
    )
    .ok()?;
    (partition_name(day) == name).then_some(day)
}

/// The UTC day of an RFC 3339 time, None when it does not parse.
pub fn day_of(ts: &str) -> Option<Date> {
    OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.to_offset(time::UtcOffset::UTC).date())
}

/// The partitions known to exist, so that each is looked up once.
#[derive(Debug, Default)]
pub struct Partitions {
    known: HashSet<Date>,
}

impl Partitions {
    /// Make sure a partition exists for each of `days` (and for today and
    /// tomorrow, ahead of the records that will need them).
    pub fn ensure(
        &mut self,
        client: &mut Client,
        days: impl IntoIterator<Item = Date>,
    ) -> Result<(), postgres::Error> {
        let today = OffsetDateTime::now_utc().date();
        let mut wanted: Vec<Date> = days.into_iter().collect();
        wanted.push(today);
        wanted.extend(today.next_day());
        wanted.sort_unstable();
        wanted.dedup();
        wanted.retain(|d| !self.known.contains(d));
        if wanted.is_empty() {
            return Ok(());
        }
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])?;
        for day in &wanted {
            let next = day.saturating_add(Duration::days(1));
            // The names and bounds are made of a date's digits only.
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF audit_records \
                 FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                partition_name(*day)
            ))?;
        }
        tx.commit()?;
        self.known.extend(wanted);
        Ok(())
    }

    /// Forget the partitions known (one may have been dropped by a
    /// retention since): the next [`Self::ensure`] looks them up again.
    pub fn forget(&mut self) {
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_names_are_utc() {
        let d = day_of("2026-12-07T23:30:00-02:00").unwrap();
        assert_eq!(partition_name(d), "audit_records_20261208");
        assert_eq!(day_of("yesterday"), None);
        assert_eq!(partition_day("audit_records_20261208"), Some(d));
        for bad in [
            "audit_records_20261308",
            "audit_records_2026120",
            "audit_records_2026120x",
            "audit_records_20261208; DROP TABLE x",
            "other_20261208",
            "audit_records_+2026120",
        ] {
            assert_eq!(partition_day(bad), None, "{bad}");
        }
    }
}
