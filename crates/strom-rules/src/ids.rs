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
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Milliseconds since the epoch of an RFC 3339 timestamp (any offset).
pub fn parse_time_ms(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// RFC 3339 in UTC with milliseconds, as Segment writes timestamps.
pub fn format_time_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => ms.to_string(),
    }
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
    fn times_round_trip() {
        let ms = parse_time_ms("2026-11-22T08:00:01.250+01:00").unwrap();
        assert_eq!(format_time_ms(ms), "2026-11-22T07:00:01.250Z");
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
