//! When to try a failed delivery again: exponential backoff with jitter, at least what the
//! receiver asked for in `Retry-After`. Time is passed in.

use std::time::{Duration, SystemTime};

/// The delay before attempt `attempt + 1` after `attempt` failures (1-based): the doubling
/// step from `initial_ms`, capped at `max_ms`, of which a random half is kept, so that many
/// deliveries failing together do not retry together. `jitter` is in [0, 1).
pub fn backoff_ms(attempt: u32, initial_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let step = initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40)).min(max_ms);
    step / 2 + ((step / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64
}

/// `Retry-After` as seconds or as an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.999), 999);
        assert_eq!(backoff_ms(3, 1000, 60_000, 0.0), 2000);
        assert_eq!(backoff_ms(10, 1000, 60_000, 0.0), 30_000);
        assert_eq!(backoff_ms(200, 1000, 60_000, 0.5), 45_000);
    }

    #[test]
    fn reads_both_forms_of_retry_after() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
