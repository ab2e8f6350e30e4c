//! Screening events on their raw bytes, before any parsing.
//!
//! Most rules begin with a selective condition on the event's name (`where: event.event in
//! ["AddToCart", "Checkout"]`). For the condition to hold, one of those strings must be a
//! string value in the event, so its JSON text must contain `"AddToCart"` or `"Checkout"`:
//! when it contains neither, the event is not for the rule, and only its time is needed (for
//! the watermark), which `top_level_time` finds without building anything. This replaces a
//! parse of the whole event for most events.
//!
//! Soundness: a JSON writer may escape any character (`\u0041`), so texts with `\u` are
//! never screened out, and needles with characters that are commonly escaped (`"`, `\`, `/`,
//! controls, non-ASCII) are not used at all.

use crate::fast::{Comparison, Fast};
use crate::ids::parse_time_ms;
use serde_json::Value as Json;

/// The strings of which at least one must appear as a JSON string in an event for `fast` to
/// be true; `None` when the expression gives no such guarantee.
pub(crate) fn required_literals(fast: &Fast) -> Option<Vec<String>> {
    let literal_string = |f: &Fast| match f {
        Fast::Literal(Json::String(s)) => Some(s.clone()),
        _ => None,
    };
    let is_path = |f: &Fast| matches!(f, Fast::Path { .. });
    match fast {
        Fast::Compare(Comparison::Equal, left, right) => {
            if is_path(left) {
                literal_string(right).map(|s| vec![s])
            } else if is_path(right) {
                literal_string(left).map(|s| vec![s])
            } else {
                None
            }
        }
        Fast::In(needle, haystack) if is_path(needle) => match haystack.as_ref() {
            Fast::Literal(Json::Array(items)) if !items.is_empty() => {
                items.iter().map(|item| item.as_str().map(str::to_string)).collect()
            }
            _ => None,
        },
        // Both must hold: either side's strings are required (the fewer, the better).
        Fast::And(left, right) => match (required_literals(left), required_literals(right)) {
            (Some(a), Some(b)) => Some(if a.len() <= b.len() { a } else { b }),
            (a, b) => a.or(b),
        },
        // One must hold: the strings of both sides together.
        Fast::Or(left, right) => {
            let mut strings = required_literals(left)?;
            strings.extend(required_literals(right)?);
            Some(strings)
        }
        _ => None,
    }
}

/// The JSON texts to look for (`"AddToCart"`, quotes included), or `None` when a string
/// could be written escaped.
pub(crate) fn needles(strings: &[String]) -> Option<Vec<Vec<u8>>> {
    let plain = |s: &String| s.bytes().all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\\' | b'/'));
    if strings.is_empty() || !strings.iter().all(plain) {
        return None;
    }
    Some(strings.iter().map(|s| format!("\"{s}\"").into_bytes()).collect())
}

/// True when the text contains none of the needles (and no `\u` escape that could hide one).
pub(crate) fn lacks_all(text: &[u8], needles: &[Vec<u8>]) -> bool {
    memchr::memmem::find(text, b"\\u").is_none()
        && needles.iter().all(|needle| memchr::memmem::find(text, needle).is_none())
}

/// The event time of a JSON object's top-level `timestamp` field, found by walking the text
/// (strings skipped with their escapes, depth counted) without parsing. `None` when there is
/// no such field or it is not a time the engine reads: the caller then parses.
pub(crate) fn top_level_time(text: &[u8]) -> Option<i64> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let start = i + 1;
                i = start;
                loop {
                    match *text.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let string = &text[start..i];
                i += 1;
                if depth == 1 && string == b"timestamp" {
                    let mut j = i;
                    while text.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if text.get(j) != Some(&b':') {
                        continue; // a value, not a key
                    }
                    j += 1;
                    while text.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if text.get(j) != Some(&b'"') {
                        return None;
                    }
                    let value_start = j + 1;
                    let value_end = value_start + memchr::memchr(b'"', text.get(value_start..)?)?;
                    let value = std::str::from_utf8(&text[value_start..value_end]).ok()?;
                    if value.contains('\\') {
                        return None;
                    }
                    return parse_time_ms(value);
                }
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    #[test]
    fn the_top_level_time_is_the_one_the_engine_reads() {
        let cases = [
            r#"{"type":"track","properties":{"timestamp":"2020-01-01T00:00:00.000Z"},"timestamp":"2026-11-22T08:00:01.250Z"}"#,
            r#"{ "timestamp" : "2026-11-22T09:00:00+01:00", "context": {"a": [1, {"timestamp": 3}]} }"#,
            r#"{"event":"timestamp","x":"a \"timestamp\": b","timestamp":"2026-11-22T08:00:00.000Z"}"#,
            r#"{"originalTimestamp":"2026-11-22T08:00:00.000Z"}"#,
            r#"{"timestamp":12}"#,
            r#"{"timestamp":"not a time"}"#,
        ];
        for text in cases {
            let engine_time = serde_json::from_str::<Json>(text).ok().map(|event| Engine::event_time_ms(&event, -1));
            match top_level_time(text.as_bytes()) {
                Some(time) => assert_eq!(Some(time), engine_time, "{text}"),
                // Not found: the caller parses, which is always right.
                None => assert!(engine_time.is_none_or(|t| t == -1 || !text.contains("\"timestamp\"")), "{text}"),
            }
        }
    }

    #[test]
    fn needles_are_only_used_when_no_escape_can_hide_them() {
        assert_eq!(needles(&["AddToCart".into()]), Some(vec![b"\"AddToCart\"".to_vec()]));
        assert_eq!(needles(&["a/b".into()]), None);
        assert_eq!(needles(&["Käse".into()]), None);
        let needles = needles(&["AddToCart".into(), "Checkout".into()]).unwrap();
        assert!(lacks_all(br#"{"event":"PageViewed"}"#, &needles));
        assert!(!lacks_all(br#"{"event":"Checkout"}"#, &needles));
        assert!(!lacks_all(br#"{"event":"\u0043heckout"}"#, &needles), "an escape could hide a needle");
    }
}
