//! RFC 3339 timestamps in the shape nearly every SDK sends, read without a general parser:
//! the collector's rules and the lake read one or more per event. Anything else is `None`,
//! and callers fall back to their general parser (chrono, jiff).

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` as microseconds since the epoch (UTC, fractions
/// beyond microseconds dropped, towards the past); `None` for any other shape and for what
/// is not a date (leap seconds, lower-case separators, fractions over nine digits, 31 April).
pub fn common_shape_us(text: &str) -> Option<i64> {
    let text = text.as_bytes();
    fn digits(text: &[u8], from: usize, count: usize) -> Option<i64> {
        let slice = text.get(from..from + count)?;
        slice.iter().try_fold(0i64, |n, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
    }
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || text[10] != b'T' || text[13] != b':' || text[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(text, 0, 4)?, digits(text, 5, 2)?, digits(text, 8, 2)?);
    let (hour, minute, second) = (digits(text, 11, 2)?, digits(text, 14, 2)?, digits(text, 17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if text[at] == b'.' {
        let count = text[at + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        let fraction = digits(text, at + 1, count)?;
        let nanos = fraction * 10i64.pow(9 - count as u32);
        micros = nanos / 1000;
        at += 1 + count;
    }
    let offset_seconds = match text.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2], 0, 2)?, digits(&[*m1, *m2], 0, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

/// The same in milliseconds (towards the past).
pub fn common_shape_ms(text: &str) -> Option<i64> {
    common_shape_us(text).map(|us| us.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_times() {
        assert_eq!(common_shape_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(common_shape_us("2026-11-22T08:00:00.019Z"), Some(1_795_334_400_019_000));
        assert_eq!(common_shape_us("2026-11-22T09:00:00.019+01:00"), Some(1_795_334_400_019_000));
        assert_eq!(common_shape_us("1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(common_shape_ms("1969-12-31T23:59:59.9995Z"), Some(-1));
        assert_eq!(common_shape_us("2024-02-29T00:00:00Z"), Some(1_709_164_800_000_000));
        assert_eq!(common_shape_us("2023-02-29T00:00:00Z"), None);
        assert_eq!(common_shape_us("2026-11-22T08:00:60Z"), None);
        assert_eq!(common_shape_us("2026-11-22 08:00:00Z"), None);
    }
}
