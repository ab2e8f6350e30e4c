//! The catalog's vocabulary: event kinds, compatibility levels, violations, differences, and
//! the `x-strom` metadata a schema carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CatalogError;

/// What kind of call an event type describes: the Segment spec's call types, plus `Raw` for a
/// stream's events that are not Segment calls (Kafka producers, devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
    Raw,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Track,
        EventKind::Page,
        EventKind::Screen,
        EventKind::Identify,
        EventKind::Group,
        EventKind::Alias,
        EventKind::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Identify => "identify",
            EventKind::Group => "group",
            EventKind::Alias => "alias",
            EventKind::Raw => "raw",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<EventKind, String> {
        EventKind::ALL.into_iter().find(|kind| kind.as_str() == text).ok_or_else(|| {
            format!("unknown kind {text:?} (expected track, page, screen, identify, group, alias or raw)")
        })
    }
}

/// A compatibility level with the Confluent Schema Registry's meaning. BACKWARD: readers using
/// the new schema accept everything written under the old one (the new schema may only relax).
/// FORWARD: the reverse (the new schema may only tighten). FULL: both. The TRANSITIVE forms
/// check against every earlier version instead of the latest only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compatibility {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Compatibility {
    pub const ALL: [Compatibility; 7] = [
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
        Compatibility::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::None => "NONE",
        }
    }

    /// Whether every instance valid under the old schema must stay valid under the new one.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// Whether every instance valid under the new schema must be valid under the old one.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = CatalogError;

    /// Accepts Confluent's names in any case.
    fn from_str(text: &str) -> Result<Compatibility, CatalogError> {
        let upper = text.trim().to_ascii_uppercase();
        Compatibility::ALL
            .into_iter()
            .find(|level| level.as_str() == upper)
            .ok_or_else(|| CatalogError::InvalidCompatibility(text.to_string()))
    }
}

impl Serialize for Compatibility {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Compatibility {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Compatibility, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One reason an event does not match its type's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON pointer into the event (`/properties/price`); empty for the event itself.
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `pattern`, ...).
    pub keyword: String,
    /// What is wrong, without quoting the event's value (it may be personal data).
    pub message: String,
    /// JSON pointer into the schema, to the failing keyword.
    pub schema_pointer: String,
}

/// One change between two versions of a schema that breaks a compatibility direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// JSON pointer into the schema where the change is (`/properties/properties/properties/price`).
    pub pointer: String,
    /// Machine-readable name of the change from the old version to the new one, after
    /// Confluent's JSON Schema diff names in lower case (`property_removed_from_closed_content_model`,
    /// `type_narrowed`, `required_attribute_added`, `max_length_decreased`, ...).
    pub kind: String,
    pub message: String,
}

/// Strom's metadata in a schema's `x-strom` keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: EventKind,
    /// The lookup name: the event name of a track type, an optional page or screen name,
    /// the stream of a raw type. `None` is the kind's catch-all type.
    pub event: Option<String>,
    pub stream: String,
    pub compatibility: Option<Compatibility>,
}

impl Metadata {
    /// Reads `x-strom` from a schema; `Ok(None)` when the schema has none. `subject` names the
    /// default event of a track type (the file stem).
    pub(crate) fn from_schema(subject: &str, schema: &Value) -> Result<Option<Metadata>, String> {
        let Some(raw) = schema.get("x-strom") else { return Ok(None) };
        let Some(object) = raw.as_object() else { return Err("x-strom must be an object".into()) };
        for key in object.keys() {
            if !matches!(key.as_str(), "kind" | "event" | "stream" | "compatibility") {
                return Err(format!("x-strom has an unknown key {key:?} (known: kind, event, stream, compatibility)"));
            }
        }
        let text = |key: &str| -> Result<Option<&str>, String> {
            match object.get(key) {
                None => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str())),
                Some(_) => Err(format!("x-strom.{key} must be a non-empty string")),
            }
        };
        let kind: EventKind = text("kind")?.ok_or("x-strom.kind is missing")?.parse()?;
        let stream = text("stream")?.ok_or("x-strom.stream is missing")?.to_string();
        let event = match (kind, text("event")?) {
            (EventKind::Track, None) => Some(subject.to_string()),
            (EventKind::Raw, Some(_)) => {
                return Err("x-strom.event does not apply to raw types (they are looked up by stream)".into());
            }
            (EventKind::Raw, None) => Some(stream.clone()),
            (EventKind::Identify | EventKind::Group | EventKind::Alias, Some(_)) => {
                return Err(format!("x-strom.event does not apply to {kind} types (one {kind} type per catalog)"));
            }
            (_, event) => event.map(str::to_string),
        };
        let compatibility = match text("compatibility")? {
            None => None,
            Some(level) => Some(level.parse::<Compatibility>().map_err(|e| e.to_string())?),
        };
        Ok(Some(Metadata { kind, event, stream, compatibility }))
    }

    /// A Confluent subject `<stream>-value` without `x-strom`: the stream's raw type.
    pub(crate) fn raw_for_subject(subject: &str) -> Option<Metadata> {
        let stream = subject.strip_suffix("-value").filter(|s| !s.is_empty())?;
        Some(Metadata {
            kind: EventKind::Raw,
            event: Some(stream.to_string()),
            stream: stream.to_string(),
            compatibility: None,
        })
    }

    /// The lookup key, as shown in conflicts: `track:AddToCart`, `page:*`, `raw:orders`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.event.as_deref().unwrap_or("*"))
    }
}
