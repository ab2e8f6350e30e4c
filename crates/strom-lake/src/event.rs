//! An event taken apart just enough: the envelope's fields and the `properties`/`traits`
//! objects as raw JSON slices of the record's value. Nothing else of the event (its context,
//! usually the larger part) is built into a tree: it is only tokenized.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
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
    fields: [Option<&'a RawValue>; FIELD_COUNT],
}

impl<'a> Envelope<'a> {
    /// `None` when the value is not a JSON object (a raw record of another producer).
    pub fn parse(text: &'a str) -> Option<Envelope<'a>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let envelope = deserializer.deserialize_map(EnvelopeVisitor).ok()?;
        deserializer.end().ok()?;
        Some(envelope)
    }

    pub fn raw(&self, field: Field) -> Option<&'a RawValue> {
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

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Envelope<'de>, M::Error> {
        let mut envelope = Envelope::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match FIELDS.iter().find(|(name, ..)| *name == key.0.as_ref()) {
                Some((_, field, _)) => envelope.fields[*field as usize] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The members of a JSON object, as raw values, in their order.
pub(crate) fn object_members(raw: &RawValue) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct MembersVisitor;
    impl<'de> Visitor<'de> for MembersVisitor {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut members = Vec::new();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                members.push((key.0, map.next_value::<&'de RawValue>()?));
            }
            Ok(members)
        }
    }
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::Deserializer::from_str(raw.get()).deserialize_map(MembersVisitor).ok()
}

/// A JSON string's content; `None` for anything else.
pub(crate) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A value as text: a string's content, anything else but null as its JSON text.
pub(crate) fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    match raw.get() {
        "null" => None,
        quoted if quoted.starts_with('"') => string(raw),
        other => Some(Cow::Borrowed(other)),
    }
}

/// A JSON integer (also `2.0`, which JSON Schema counts as an integer) that fits 64 bits.
pub(crate) fn integer(raw: &RawValue) -> Option<i64> {
    let text = raw.get();
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

pub(crate) fn number(raw: &RawValue) -> Option<f64> {
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

pub(crate) fn boolean(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// An RFC 3339 date-time string, in microseconds since the epoch (UTC).
pub(crate) fn timestamp_us(raw: &RawValue) -> Option<i64> {
    let text = string(raw)?;
    if let Some(us) = strom_log::rfc3339::common_shape_us(&text) {
        return Some(us);
    }
    let time = chrono::DateTime::parse_from_rfc3339(&text).ok()?;
    time.timestamp_micros().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
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
        assert_eq!(
            members.iter().map(|(k, v)| (k.as_ref(), v.get())).collect::<Vec<_>>(),
            [("sku", "\"S\""), ("n", "1")]
        );
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
