//! The lake's layout: `<stream>/date=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.parquet`.
//!
//! Offsets are written with 20 digits (as the log's segment files are), so that a listing
//! sorted by name is sorted by partition and offset. `first` and `last` are the smallest and
//! largest offset of the rows in the file.

use chrono::{DateTime, Datelike, Timelike};

const HOUR_MS: i64 = 3_600_000;
/// 0000-01-01T00:00Z and 10000-01-01T00:00Z in hours since the epoch: directory names keep
/// four-digit years.
const HOUR_MIN: i64 = -62_167_219_200_000 / HOUR_MS;
const HOUR_MAX: i64 = 253_402_300_800_000 / HOUR_MS - 1;

/// An hour since the Unix epoch (UTC): the unit of the `date=/hour=` directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(pub i64);

impl Hour {
    /// The hour holding `ms`, or `None` outside the years 0 to 9999.
    pub fn of_ms(ms: i64) -> Option<Hour> {
        let hour = ms.div_euclid(HOUR_MS);
        (HOUR_MIN..=HOUR_MAX).contains(&hour).then_some(Hour(hour))
    }

    /// The hour holding `ms`, clamped into the years 0 to 9999.
    pub fn of_ms_clamped(ms: i64) -> Hour {
        Hour(ms.div_euclid(HOUR_MS).clamp(HOUR_MIN, HOUR_MAX))
    }

    pub fn start_ms(self) -> i64 {
        self.0 * HOUR_MS
    }

    pub fn end_ms(self) -> i64 {
        (self.0 + 1) * HOUR_MS
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn dir(self) -> String {
        let time = DateTime::from_timestamp_millis(self.start_ms()).unwrap_or_default();
        format!("date={:04}-{:02}-{:02}/hour={:02}", time.year(), time.month(), time.day(), time.hour())
    }

    /// Parses the two directory names of `dir`.
    pub fn parse(date: &str, hour: &str) -> Option<Hour> {
        let date = chrono::NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
        let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
        let time = date.and_hms_opt(hour, 0, 0)?.and_utc();
        Hour::of_ms(time.timestamp_millis())
    }
}

/// What a data file's name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName {
    pub partition: u32,
    pub first: u64,
    pub last: u64,
}

impl FileName {
    pub fn parse(name: &str) -> Option<FileName> {
        let stem = name.strip_suffix(".parquet")?;
        let mut parts = stem.split('-');
        let (partition, first, last) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let file =
            FileName { partition: partition.parse().ok()?, first: first.parse().ok()?, last: last.parse().ok()? };
        (file.first <= file.last).then_some(file)
    }

    /// Whether this file's range lies within `other`'s (same partition).
    pub fn within(&self, other: &FileName) -> bool {
        self.partition == other.partition && other.first <= self.first && self.last <= other.last && self != other
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:020}-{:020}.parquet", self.partition, self.first, self.last)
    }
}

/// A data file's path below the lake's root.
pub fn file_path(stream: &str, hour: Hour, file: &FileName) -> String {
    format!("{stream}/{}/{file}", hour.dir())
}

/// Splits `<stream>/date=../hour=../<file>` (below the root) into its parts.
pub fn parse_file_path(path: &str) -> Option<(&str, Hour, FileName)> {
    let mut parts = path.split('/');
    let (stream, date, hour, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((stream, Hour::parse(date, hour)?, FileName::parse(file)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let file = FileName { partition: 3, first: 10, last: 99 };
        assert_eq!(file.to_string(), "3-00000000000000000010-00000000000000000099.parquet");
        assert_eq!(FileName::parse(&file.to_string()), Some(file));
        // 2026-11-22T08:30:00Z
        let hour = Hour::of_ms(1_795_336_200_000).unwrap();
        assert_eq!(hour.dir(), "date=2026-11-22/hour=08");
        let path = file_path("events", hour, &file);
        assert_eq!(path, "events/date=2026-11-22/hour=08/3-00000000000000000010-00000000000000000099.parquet");
        assert_eq!(parse_file_path(&path), Some(("events", hour, file)));
        for bad in ["3-1.parquet", "3-1-2-4.parquet", "x-1-2.parquet", "3-5-2.parquet", "3-1-2.parq"] {
            assert_eq!(FileName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hours_at_the_edges() {
        assert_eq!(Hour::of_ms(-1).unwrap().dir(), "date=1969-12-31/hour=23");
        assert_eq!(Hour::of_ms(0).unwrap().dir(), "date=1970-01-01/hour=00");
        assert_eq!(Hour::of_ms(i64::MAX), None);
        assert_eq!(Hour::of_ms_clamped(i64::MAX).dir(), "date=9999-12-31/hour=23");
        assert_eq!(Hour::of_ms_clamped(i64::MIN).dir(), "date=0000-01-01/hour=00");
        assert_eq!(Hour::parse("date=9999-12-31", "hour=23"), Some(Hour::of_ms_clamped(i64::MAX)));
        assert_eq!(Hour::parse("date=2026-02-30", "hour=01"), None);
        assert_eq!(Hour::parse("date=2026-02-03", "hour=24"), None);
    }

    #[test]
    fn containment() {
        let outer = FileName { partition: 0, first: 0, last: 99 };
        assert!(FileName { partition: 0, first: 10, last: 20 }.within(&outer));
        assert!(!FileName { partition: 1, first: 10, last: 20 }.within(&outer));
        assert!(!outer.within(&outer));
        assert!(!FileName { partition: 0, first: 90, last: 100 }.within(&outer));
    }
}
