//! Deterministic ids: a derived event's or delivery's id is a function of the rule and of the
//! input that caused it, so that a re-run after a crash produces the same ids and the
//! runtime can recognise what already went out.

/// A 128-bit XXH3 of the parts (each followed by a 0 byte, so `("ab", "c")` and
/// `("a", "bc")` differ), written as a UUID (version 8: "custom") so that it fits wherever
/// Segment's `messageId` goes.
pub fn id(parts: &[&[u8]]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
        hasher.update(&[0]);
    }
    let mut bytes = hasher.digest128().to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    text
}

/// Milliseconds since the epoch of an RFC 3339 timestamp (any offset).
pub fn parse_time_ms(text: &str) -> Option<i64> {
    // The shape SDKs and Strom write without a general parser (it is read for every event).
    strom_log::rfc3339::common_shape_ms(text)
        .or_else(|| text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond()))
}

/// RFC 3339 in UTC with milliseconds, as Segment writes timestamps.
pub fn format_time_ms(ms: i64) -> String {
    // Years 0 to 9999 by hand (every derived event has one); others through jiff.
    if !(-62_167_219_200_000..253_402_300_800_000).contains(&ms) {
        return match jiff::Timestamp::from_millisecond(ms) {
            Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            Err(_) => ms.to_string(),
        };
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // The civil date of a day number (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Fixed-width digits, then the separator that follows them.
    let push = |out: &mut String, value: i64, width: usize, after: char| {
        let mut buffer = [b'0'; 4];
        let mut rest = value;
        for slot in buffer[..width].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend(buffer[..width].iter().map(|&b| b as char));
        out.push(after);
    };
    let mut out = String::with_capacity(24);
    push(&mut out, year, 4, '-');
    push(&mut out, month, 2, '-');
    push(&mut out, day, 2, 'T');
    push(&mut out, in_day / 3_600_000, 2, ':');
    push(&mut out, in_day / 60_000 % 60, 2, ':');
    push(&mut out, in_day / 1000 % 60, 2, '.');
    push(&mut out, in_day % 1000, 3, 'Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_uuids_and_parts_are_delimited() {
        let a = id(&[b"rule", b"1", b"events/0/42"]);
        assert_eq!(a, id(&[b"rule", b"1", b"events/0/42"]));
        assert_ne!(id(&[b"ab", b"c"]), id(&[b"a", b"bc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn the_fast_path_agrees_with_jiff() {
        for text in [
            "2026-11-22T08:00:01.250Z",
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "1969-12-31T23:59:59.999Z",
            "2100-03-01T00:00:00.000Z",
        ] {
            let jiff = text.parse::<jiff::Timestamp>().unwrap().as_millisecond();
            assert_eq!(strom_log::rfc3339::common_shape_ms(text), Some(jiff), "{text}");
        }
        for bad in
            ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-11-22T24:00:00.000Z", "2026-11-22T08:00:01"]
        {
            assert_eq!(strom_log::rfc3339::common_shape_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_agrees_with_jiff() {
        for ms in
            [0, 1_795_334_401_250, 951_868_799_999, -1, 253_402_207_199_999, -62_167_219_200_000, 4_102_444_800_000]
        {
            let jiff = jiff::Timestamp::from_millisecond(ms).unwrap().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(format_time_ms(ms), jiff, "{ms}");
        }
    }

    #[test]
    fn times_round_trip() {
        let ms = parse_time_ms("2026-11-22T08:00:01.250+01:00").unwrap();
        assert_eq!(format_time_ms(ms), "2026-11-22T07:00:01.250Z");
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
