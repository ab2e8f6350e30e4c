//! Durations as rules write them: `500ms`, `30s`, `5m`, `1h`, `2d`, or sums like `1h30m`.

/// Milliseconds of a duration text; the error says what is wrong with it.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let usage = || format!("{text:?} is not a duration like \"500ms\", \"30s\", \"5m\", \"1h\", \"2d\" or \"1h30m\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(usage());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(usage());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| usage())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(usage()),
        };
        rest = rest[unit_len..].trim_start();
        total = number.checked_mul(unit_ms).and_then(|ms| total.checked_add(ms)).ok_or_else(usage)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        for (text, ms) in
            [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("1h30m", 5_400_000), ("2d", 172_800_000), ("0s", 0)]
        {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "30", "s", "1x", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
