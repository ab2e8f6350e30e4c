//! An event taken apart just enough: the envelope's fields and the `properties`/`traits`
//! objects as raw JSON slices of the record's value.
//!
//! The lake reads each event twice (once to place it, once to write its row), and most of an
//! event (its `context`) is of no use to it; so objects are read by a scanner of their own
//! that finds the top-level members and steps over everything else without validating it.
//! On valid JSON it gives exactly what a JSON parser would (tested against serde_json); on
//! invalid JSON it may still find top-level members, where a parser would find none. The
//! lake never needs more: events were validated when they were accepted (collector, catalog),
//! `event_json` keeps each record as stored, and a scalar that does not read as its column's
//! type is null there.

use std::borrow::Cow;

use strom_catalog::EventKind;

/// The envelope fields the lake gives columns of, in column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    MessageId,
    Type,
    Event,
    Name,
    UserId,
    AnonymousId,
    GroupId,
    PreviousId,
    Timestamp,
    OriginalTimestamp,
    SentAt,
    ReceivedAt,
    Properties,
    Traits,
}

const FIELD_COUNT: usize = 14;

/// (JSON key, field, column name); the column is absent for `properties` and `traits`,
/// which become columns of their own fields.
pub(crate) const FIELDS: [(&str, Field, &str); FIELD_COUNT] = [
    ("messageId", Field::MessageId, "message_id"),
    ("type", Field::Type, "type"),
    ("event", Field::Event, "event"),
    ("name", Field::Name, "name"),
    ("userId", Field::UserId, "user_id"),
    ("anonymousId", Field::AnonymousId, "anonymous_id"),
    ("groupId", Field::GroupId, "group_id"),
    ("previousId", Field::PreviousId, "previous_id"),
    ("timestamp", Field::Timestamp, "timestamp"),
    ("originalTimestamp", Field::OriginalTimestamp, "original_timestamp"),
    ("sentAt", Field::SentAt, "sent_at"),
    ("receivedAt", Field::ReceivedAt, "received_at"),
    ("properties", Field::Properties, ""),
    ("traits", Field::Traits, ""),
];

/// Envelope fields that are text columns, and those that are timestamps.
pub(crate) const TEXT_FIELDS: [Field; 8] = [
    Field::MessageId,
    Field::Type,
    Field::Event,
    Field::Name,
    Field::UserId,
    Field::AnonymousId,
    Field::GroupId,
    Field::PreviousId,
];
pub(crate) const TIME_FIELDS: [Field; 4] =
    [Field::Timestamp, Field::OriginalTimestamp, Field::SentAt, Field::ReceivedAt];

pub(crate) fn column_name(field: Field) -> &'static str {
    FIELDS[field as usize].2
}

/// The envelope of one event: each known field's value as the raw JSON text it was sent as.
#[derive(Default)]
pub(crate) struct Envelope<'a> {
    fields: [Option<&'a str>; FIELD_COUNT],
}

impl<'a> Envelope<'a> {
    /// `None` when the value is not a JSON object (a raw record of another producer).
    pub fn parse(text: &'a str) -> Option<Envelope<'a>> {
        let mut envelope = Envelope::default();
        let mut scanner = Scanner::new(text);
        scanner.members(|key, value| {
            if let Some(field) = field_of(&key) {
                // The last of a repeated name wins, as in serde_json's maps.
                envelope.fields[field as usize] = Some(value);
            }
        })?;
        scanner.end()?;
        Some(envelope)
    }

    pub fn raw(&self, field: Field) -> Option<&'a str> {
        self.fields[field as usize]
    }

    pub fn text(&self, field: Field) -> Option<Cow<'a, str>> {
        self.raw(field).and_then(text)
    }

    pub fn time_us(&self, field: Field) -> Option<i64> {
        self.raw(field).and_then(timestamp_us)
    }

    /// What the catalog is asked for this event's type (Segment calls by their `type`;
    /// anything else is a raw record of its stream).
    pub fn type_key(&self) -> TypeKey<'a> {
        let name = |field| self.raw(field).and_then(string).unwrap_or(Cow::Borrowed(""));
        match self.raw(Field::Type).and_then(string).as_deref() {
            Some("track") => TypeKey { kind: EventKind::Track, name: name(Field::Event) },
            Some("page") => TypeKey { kind: EventKind::Page, name: name(Field::Name) },
            Some("screen") => TypeKey { kind: EventKind::Screen, name: name(Field::Name) },
            Some("identify") => TypeKey { kind: EventKind::Identify, name: Cow::Borrowed("") },
            Some("group") => TypeKey { kind: EventKind::Group, name: Cow::Borrowed("") },
            Some("alias") => TypeKey { kind: EventKind::Alias, name: Cow::Borrowed("") },
            _ => TypeKey { kind: EventKind::Raw, name: Cow::Borrowed("") },
        }
    }
}

/// An event's catalog look-up: its kind and name (the stream's raw type for `Raw`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TypeKey<'a> {
    pub kind: EventKind,
    pub name: Cow<'a, str>,
}

fn field_of(key: &str) -> Option<Field> {
    Some(match key {
        "messageId" => Field::MessageId,
        "type" => Field::Type,
        "event" => Field::Event,
        "name" => Field::Name,
        "userId" => Field::UserId,
        "anonymousId" => Field::AnonymousId,
        "groupId" => Field::GroupId,
        "previousId" => Field::PreviousId,
        "timestamp" => Field::Timestamp,
        "originalTimestamp" => Field::OriginalTimestamp,
        "sentAt" => Field::SentAt,
        "receivedAt" => Field::ReceivedAt,
        "properties" => Field::Properties,
        "traits" => Field::Traits,
        _ => return None,
    })
}

/// The members of a JSON object, as raw values, in their order; `None` when `raw` is not an
/// object.
pub(crate) fn object_members(raw: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut members = Vec::new();
    let mut scanner = Scanner::new(raw);
    scanner.members(|key, value| members.push((key, value)))?;
    scanner.end()?;
    Some(members)
}

/// Nesting within a member's value deeper than this is refused (serde_json stops at 128
/// levels too).
const DEPTH_MAX: u32 = 128;

/// A position in a JSON text. It moves over values without building them; positions are
/// only ever at ASCII delimiters, so every slice it hands out is a `str`.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.skip_whitespace();
        (self.at == self.text.len()).then_some(())
    }

    /// The object at the cursor, member by member: each name (unescaped) and raw value.
    fn members(&mut self, mut each: impl FnMut(Cow<'a, str>, &'a str)) -> Option<()> {
        self.skip_whitespace();
        if self.peek()? != b'{' {
            return None;
        }
        self.at += 1;
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let key = string(self.string()?)?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            let value = self.value()?;
            each(key, value);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Moves over one value; its raw text.
    fn value(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at;
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                self.nested()?;
                Some(&self.text[start..self.at])
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let bytes = self.text.as_bytes();
                while let Some(byte) = bytes.get(self.at)
                    && !matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    self.at += 1;
                }
                Some(&self.text[start..self.at])
            }
            _ => None,
        }
    }

    /// At a `"`: moves past the string's closing quote; the string's raw text, quotes included.
    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut from = start + 1;
        loop {
            let found = find(bytes, from, quote_or_backslash, |b| b == b'"' || b == b'\\')?;
            if bytes[found] == b'\\' {
                // The escaped byte is never the closing quote.
                from = found + 2;
                continue;
            }
            self.at = found + 1;
            return Some(&self.text[start..self.at]);
        }
    }

    /// At a `{` or `[`: moves past its matching close. Brackets must pair up; nothing else
    /// inside is checked.
    fn nested(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        // One bit per open level, innermost lowest: set for an object, clear for an array.
        let mut objects: u128 = 0;
        let mut depth = 0;
        loop {
            let found = find(bytes, self.at, quote_or_bracket, |b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))?;
            let byte = bytes[found];
            self.at = found;
            match byte {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => {
                    if depth == DEPTH_MAX {
                        return None;
                    }
                    objects = (objects << 1) | u128::from(byte == b'{');
                    depth += 1;
                }
                _ => {
                    if (objects & 1 == 1) != (byte == b'}') {
                        return None;
                    }
                    objects >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
            }
            self.at += 1;
        }
    }
}

/// Eight bytes at a time (SWAR): a mask with the high bit set in every byte of `word` that
/// is zero, and perhaps in some bytes above such a byte (a borrow carries into them), never
/// below the lowest one.
fn zero_bytes(word: u64) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    word.wrapping_sub(LOW) & !word & HIGH
}

fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Candidates for the end of a string's run of plain bytes.
fn quote_or_backslash(word: u64) -> u64 {
    zero_bytes(word ^ splat(b'"')) | zero_bytes(word ^ splat(b'\\'))
}

/// Candidates for a quote or a bracket: setting bit 5 makes `[` `{` and `]` `}` (and only
/// them, of the bytes JSON allows outside strings) alike.
fn quote_or_bracket(word: u64) -> u64 {
    let folded = word | splat(0x20);
    zero_bytes(folded ^ splat(b'"')) | zero_bytes(folded ^ splat(b'{')) | zero_bytes(folded ^ splat(b'}'))
}

/// The first index at or after `from` of a byte that is `wanted`, looking at eight bytes at a
/// time: `candidates` marks (at least) the wanted bytes of a little-endian word, and each mark
/// is checked.
fn find(bytes: &[u8], from: usize, candidates: fn(u64) -> u64, wanted: impl Fn(u8) -> bool) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let mut marks = candidates(u64::from_le_bytes(*chunk));
        while marks != 0 {
            let index = at + (marks.trailing_zeros() / 8) as usize;
            if wanted(bytes[index]) {
                return Some(index);
            }
            marks &= marks - 1;
        }
        at += 8;
    }
    bytes.get(at..)?.iter().position(|b| wanted(*b)).map(|i| at + i)
}

/// A JSON string's content; `None` for anything else.
pub(crate) fn string(raw: &str) -> Option<Cow<'_, str>> {
    let text = raw;
    if text.len() < 2 || !text.starts_with('"') || !text.ends_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A value as text: a string's content, anything else but null as its JSON text.
pub(crate) fn text(raw: &str) -> Option<Cow<'_, str>> {
    match raw {
        "null" => None,
        quoted if quoted.starts_with('"') => string(raw),
        other => Some(Cow::Borrowed(other)),
    }
}

/// A JSON integer (also `2.0`, which JSON Schema counts as an integer) that fits 64 bits.
pub(crate) fn integer(raw: &str) -> Option<i64> {
    let text = raw;
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().or_else(|| {
        let number = text.parse::<f64>().ok()?;
        // 2^63 is exactly representable; anything at or beyond it does not fit.
        (number.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&number))
            .then_some(number as i64)
    })
}

pub(crate) fn number(raw: &str) -> Option<f64> {
    let text = raw;
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

pub(crate) fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// An RFC 3339 date-time string, in microseconds since the epoch (UTC).
pub(crate) fn timestamp_us(raw: &str) -> Option<i64> {
    let text = string(raw)?;
    if let Some(us) = strom_log::rfc3339::common_shape_us(&text) {
        return Some(us);
    }
    let time = chrono::DateTime::parse_from_rfc3339(&text).ok()?;
    time.timestamp_micros().into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn raw(text: &str) -> &str {
        text
    }

    #[test]
    fn the_envelope_is_taken_from_the_top_level_only() {
        let text = r#"{"type":"track","event":"Add\u0054oCart","userId":42,"context":{"event":"no","type":"x"},
                       "timestamp":"2026-11-22T08:00:00.019Z","properties":{"sku":"S","n":1}, "x\"y": [1, {"a": 2}]}"#;
        let envelope = Envelope::parse(text).unwrap();
        assert_eq!(envelope.text(Field::Event).as_deref(), Some("AddToCart"));
        assert_eq!(envelope.text(Field::UserId).as_deref(), Some("42"));
        assert_eq!(envelope.time_us(Field::Timestamp), Some(1_795_334_400_019_000));
        assert_eq!(envelope.type_key(), TypeKey { kind: EventKind::Track, name: "AddToCart".into() });
        let members = object_members(envelope.raw(Field::Properties).unwrap()).unwrap();
        assert_eq!(members.iter().map(|(k, v)| (k.as_ref(), *v)).collect::<Vec<_>>(), [("sku", "\"S\""), ("n", "1")]);
        assert!(envelope.raw(Field::Traits).is_none());
    }

    #[test]
    fn what_is_not_an_object_has_no_envelope() {
        for text in ["[1]", "\"x\"", "12", "{\"a\":1} trailing", "{\"a\":", "not json"] {
            assert!(Envelope::parse(text).is_none(), "{text}");
        }
        let bare = Envelope::parse("{}").unwrap();
        assert_eq!(bare.type_key(), TypeKey { kind: EventKind::Raw, name: "".into() });
    }

    /// A small deterministic generator (no dependency for it).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// JSON text of a random value, with whitespace, escapes and repeated names; `depth`
    /// bounds the nesting.
    fn random_json(rng: &mut Lcg, depth: u32) -> String {
        let space = |rng: &mut Lcg| [" ", "", "\n\t", "", "\r\n "][rng.below(5) as usize];
        let strings = [
            "",
            "a",
            "2026-11-22T08:00:00.019Z",
            "quote\\\"d",
            "back\\\\slash",
            "\\u00e9t\\u00e9",
            "tab\\t",
            "ünï{[,:]}",
            "\\\"",
            "{\\\"x\\\":1}",
        ];
        let names =
            ["type", "event", "name", "timestamp", "properties", "traits", "context", "userId", "t\\u0079pe", "x"];
        match if depth == 0 { rng.below(4) } else { rng.below(6) } {
            0 => format!("\"{}\"", strings[rng.below(strings.len() as u64) as usize]),
            1 => ["0", "-1", "12.5", "1e3", "-0.25E-2", "9223372036854775807", "18446744073709551616"]
                [rng.below(7) as usize]
                .to_string(),
            2 => ["true", "false"][rng.below(2) as usize].to_string(),
            3 => "null".to_string(),
            4 => {
                let items: Vec<String> = (0..rng.below(4)).map(|_| random_json(rng, depth - 1)).collect();
                format!("[{}{}{}]", space(rng), items.join(&format!(",{}", space(rng))), space(rng))
            }
            _ => {
                let members: Vec<String> = (0..rng.below(6))
                    .map(|_| {
                        let name = names[rng.below(names.len() as u64) as usize];
                        format!("\"{name}\"{}:{}{}", space(rng), space(rng), random_json(rng, depth - 1))
                    })
                    .collect();
                format!("{{{}{}{}}}", space(rng), members.join(&format!("{},", space(rng))), space(rng))
            }
        }
    }

    /// What serde_json makes of an object's members: each name's last value.
    fn serde_members(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        Some(object.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The scanner's view of an object, in serde_json's terms (the last value of a name).
    fn scanned_members(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
        let members = object_members(text)?;
        let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for (key, value) in members {
            let value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{value:?} of {text:?}: {e}"));
            last.insert(key.into_owned(), value);
        }
        Some(last.into_iter().collect())
    }

    /// Where serde_json accepts a text, the scanner finds the same members and envelope.
    fn agrees_with_serde(text: &str) {
        let Some(mut expected) = serde_members(text) else {
            // Not a JSON object: the scanner must not panic; what it finds is not checked.
            let _ = Envelope::parse(text).map(|e| e.type_key());
            let _ = object_members(text);
            return;
        };
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(scanned_members(text), Some(expected.clone()), "{text}");
        let envelope = Envelope::parse(text).unwrap_or_else(|| panic!("no envelope in {text}"));
        for (name, field, _) in FIELDS {
            let found = envelope.raw(field).map(|raw| serde_json::from_str::<serde_json::Value>(raw).unwrap());
            let wanted = expected.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            assert_eq!(found, wanted, "{name} of {text}");
        }
    }

    #[test]
    fn the_scanner_reads_valid_objects_as_serde_json_does() {
        let mut rng = Lcg(11);
        for _ in 0..20_000 {
            let text = random_json(&mut rng, 4);
            agrees_with_serde(&text);
        }
    }

    #[test]
    fn the_scanner_survives_every_one_byte_change_and_agrees_where_the_text_stays_json() {
        let events = [
            r#"{"type":"track","event":"Order Completed","properties":{"total":12.5,"items":[{"sku":"A","n":2}],"note":"a \"b\" \\ c"},"timestamp":"2026-11-22T08:00:00.019Z","context":{"ip":"203.0.113.9","page":{"path":"/"}}}"#,
            r#"{ "type" : "identify", "userId" : 42, "traits" : { "email" : "x@example.com", "address" : { "city" : "Köln" } } , "sentAt" : null }"#,
        ];
        let replacements = [b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'x', b'1', b'n'];
        for event in events {
            agrees_with_serde(event);
            let bytes = event.as_bytes();
            for at in 0..bytes.len() {
                for replacement in replacements {
                    let mut changed = bytes.to_vec();
                    changed[at] = replacement;
                    if let Ok(text) = std::str::from_utf8(&changed) {
                        agrees_with_serde(text);
                    }
                    let mut shorter = bytes.to_vec();
                    shorter.remove(at);
                    if let Ok(text) = std::str::from_utf8(&shorter) {
                        agrees_with_serde(text);
                    }
                }
            }
        }
    }

    #[test]
    fn eight_bytes_at_a_time_finds_what_one_at_a_time_finds() {
        let mut rng = Lcg(3);
        let alphabet = [b'"', b'\\', b'{', b'}', b'[', b']', b'a', 0x01, 0x02, 0x5b, 0x7f, 0x80, 0xff, 0x00, b' '];
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect();
            let from = rng.below(len as u64 + 2) as usize;
            let string_end = |b: u8| b == b'"' || b == b'\\';
            let structural = |b: u8| matches!(b, b'"' | b'{' | b'}' | b'[' | b']');
            let naive = |wanted: &dyn Fn(u8) -> bool| {
                bytes.get(from..).and_then(|rest| rest.iter().position(|b| wanted(*b))).map(|i| from + i)
            };
            assert_eq!(find(&bytes, from, quote_or_backslash, string_end), naive(&string_end), "{bytes:?} {from}");
            assert_eq!(find(&bytes, from, quote_or_bracket, structural), naive(&structural), "{bytes:?} {from}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        // Within a member's value: 128 levels are read, one more is refused.
        assert!(Envelope::parse(&deep(128)).is_some());
        assert!(Envelope::parse(&deep(129)).is_none());
        assert!(Envelope::parse(&deep(100_000)).is_none());
        assert!(Envelope::parse("{\"a\":[1}").is_none());
        assert!(Envelope::parse("{\"a\":{\"b\":1]}").is_none());
        assert!(Envelope::parse("{\"a\":\"unterminated\\\"}").is_none());
    }

    #[test]
    fn the_common_timestamp_shape_reads_as_chrono_reads_it() {
        use strom_log::rfc3339::common_shape_us;
        let chrono_us = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros());
        let cases = [
            "2026-11-22T08:00:00.019Z",
            "2026-11-22T08:00:00Z",
            "2026-11-22T08:00:00.123456789+05:30",
            "2026-11-22T08:00:00.1-00:45",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T12:00:00Z",
            "1900-03-01T00:00:00+23:59",
            "2000-02-29T00:00:00-23:59",
        ];
        for case in cases {
            assert_eq!(common_shape_us(case), chrono_us(case), "{case}");
            assert!(chrono_us(case).is_some(), "{case}");
        }
        // Left to chrono: a leap second, other separators, long fractions, impossible dates.
        let refused = [
            "2026-11-22T08:00:60Z",
            "2026-11-22t08:00:00Z",
            "2026-11-22 08:00:00Z",
            "2026-11-22T08:00:00.1234567891Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T08:00:00.Z",
            "2026-11-22T08:00:00+24:00",
            "2026-11-22T08:00:00",
            "2026-11-22T08:00:00Zx",
            "+026-11-22T08:00:00Z",
        ];
        for case in refused {
            assert_eq!(common_shape_us(case), None, "{case}");
        }
        // Every day of a few years, at a spread of times and offsets.
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = seed >> 16;
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}",
                1600 + r % 800,
                1 + (r >> 10) % 12,
                1 + (r >> 14) % 31,
                (r >> 19) % 24,
                (r >> 24) % 60,
                (r >> 30) % 60,
                (r >> 36) % 1_000_000,
                ["Z", "+01:00", "-09:30"][((r >> 56) % 3) as usize]
            );
            assert_eq!(common_shape_us(&text), chrono_us(&text), "{text}");
        }
    }

    #[test]
    fn conversions_refuse_what_does_not_fit() {
        assert_eq!(integer(raw("12")), Some(12));
        assert_eq!(integer(raw("2.0")), Some(2));
        assert_eq!(integer(raw("2.5")), None);
        assert_eq!(integer(raw("1e300")), None);
        assert_eq!(integer(raw("9223372036854775807")), Some(i64::MAX));
        assert_eq!(integer(raw("9223372036854775808")), None);
        assert_eq!(integer(raw("\"12\"")), None);
        assert_eq!(number(raw("1e3")), Some(1000.0));
        assert_eq!(number(raw("true")), None);
        assert_eq!(boolean(raw("false")), Some(false));
        assert_eq!(string(raw("\"a\\nb\"")).as_deref(), Some("a\nb"));
        assert_eq!(text(raw("null")), None);
        assert_eq!(text(raw("[1, 2]")).as_deref(), Some("[1, 2]"));
        assert_eq!(timestamp_us(raw("\"2026-11-22T09:00:00+01:00\"")), Some(1_795_334_400_000_000));
        assert_eq!(timestamp_us(raw("\"yesterday\"")), None);
    }
}
