//! The Segment spec's envelope: which calls exist, which fields each needs, and the
//! enrichment every accepted event gets (receivedAt, messageId, clock-skew correction).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::Violation;

/// The Segment calls (`type` of a message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

impl Call {
    pub const ALL: [Call; 6] = [Call::Track, Call::Page, Call::Screen, Call::Identify, Call::Group, Call::Alias];

    pub fn as_str(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Identify => "identify",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Call {
    type Err = ();

    fn from_str(s: &str) -> Result<Call, ()> {
        Call::ALL.into_iter().find(|call| call.as_str() == s).ok_or(())
    }
}

/// Bytes of a messageId. Longer ids are refused: they are kept in the dedup index's
/// verification headers and are a mistake in every SDK we know.
pub const MESSAGE_ID_BYTES_MAX: usize = 256;

/// Bytes of an event name (`event`, `name`).
pub const NAME_BYTES_MAX: usize = 256;

/// Checks the envelope of one message and returns its call. `call` is the endpoint's call
/// (`/v1/track`), or `None` for batch, where each message names its own `type`.
pub fn check(message: &Map<String, Value>, endpoint_call: Option<Call>) -> Result<Call, Violation> {
    let call = match (message.get("type"), endpoint_call) {
        (None, Some(call)) => call,
        (Some(Value::String(given)), Some(call)) if given == call.as_str() => call,
        (Some(given), Some(call)) => {
            return Err(Violation::envelope("/type", "const", format!("type is {given} on the /v1/{call} endpoint")));
        }
        (Some(Value::String(given)), None) => given.parse().map_err(|()| {
            Violation::envelope(
                "/type",
                "enum",
                format!("type {given:?} is not one of track, page, screen, identify, group, alias"),
            )
        })?,
        (Some(_), None) => return Err(Violation::envelope("/type", "type", "type must be a string")),
        (None, None) => return Err(Violation::envelope("/type", "required", "a batch message needs a type")),
    };
    let user_id = id_field(message, "userId")?;
    let anonymous_id = id_field(message, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Violation::envelope("", "required", "userId or anonymousId is required"));
    }
    match call {
        Call::Track => name_field(message, "event", true)?,
        Call::Page | Call::Screen => name_field(message, "name", false)?,
        Call::Group => {
            id_field(message, "groupId")?
                .ok_or_else(|| Violation::envelope("/groupId", "required", "group needs a groupId"))?;
        }
        Call::Alias => {
            id_field(message, "previousId")?
                .ok_or_else(|| Violation::envelope("/previousId", "required", "alias needs a previousId"))?;
            if user_id.is_none() {
                return Err(Violation::envelope("/userId", "required", "alias needs a userId"));
            }
        }
        Call::Identify => {}
    }
    if let Some(id) = message.get("messageId") {
        match id {
            Value::String(id) if !id.is_empty() && id.len() <= MESSAGE_ID_BYTES_MAX => {}
            Value::String(_) => {
                return Err(Violation::envelope(
                    "/messageId",
                    "maxLength",
                    format!("messageId must have 1 to {MESSAGE_ID_BYTES_MAX} bytes"),
                ));
            }
            _ => return Err(Violation::envelope("/messageId", "type", "messageId must be a string")),
        }
    }
    for (field, object) in [("properties", true), ("traits", true), ("context", true), ("integrations", true)] {
        if object && message.get(field).is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(Violation::envelope(&format!("/{field}"), "type", format!("{field} must be an object")));
        }
    }
    for field in ["timestamp", "sentAt", "originalTimestamp"] {
        if let Some(value) = message.get(field) {
            parse_time(value).map_err(|message| Violation::envelope(&format!("/{field}"), "format", message))?;
        }
    }
    Ok(call)
}

/// `userId`, `anonymousId`, `groupId`, `previousId`: a non-empty string or a number (SDKs
/// send numeric ids), never longer than a key may be.
fn id_field<'a>(message: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Value>, Violation> {
    match message.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v @ Value::String(s)) if s.len() <= crate::KEY_BYTES_MAX => Ok(Some(v)),
        Some(Value::String(_)) => Err(Violation::envelope(
            &format!("/{field}"),
            "maxLength",
            format!("{field} is longer than {} bytes", crate::KEY_BYTES_MAX),
        )),
        Some(v @ Value::Number(_)) => Ok(Some(v)),
        Some(_) => {
            Err(Violation::envelope(&format!("/{field}"), "type", format!("{field} must be a string or a number")))
        }
    }
}

fn name_field(message: &Map<String, Value>, field: &str, required: bool) -> Result<(), Violation> {
    match message.get(field) {
        None | Some(Value::Null) if !required => Ok(()),
        None | Some(Value::Null) => {
            Err(Violation::envelope(&format!("/{field}"), "required", format!("{field} is required")))
        }
        Some(Value::String(s)) if s.is_empty() && required => {
            Err(Violation::envelope(&format!("/{field}"), "minLength", format!("{field} must not be empty")))
        }
        Some(Value::String(s)) if s.len() > NAME_BYTES_MAX => Err(Violation::envelope(
            &format!("/{field}"),
            "maxLength",
            format!("{field} is longer than {NAME_BYTES_MAX} bytes"),
        )),
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(Violation::envelope(&format!("/{field}"), "type", format!("{field} must be a string"))),
    }
}

/// The key that picks the partition: `userId`, else `anonymousId`, as text.
pub fn partition_key(message: &Map<String, Value>) -> Option<String> {
    ["userId", "anonymousId"].iter().find_map(|field| match message.get(*field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// The name the catalog knows a message by: the event name for track, else the call.
pub fn type_name(message: &Map<String, Value>, call: Call) -> &str {
    match call {
        Call::Track => message.get("event").and_then(Value::as_str).unwrap_or(""),
        other => other.as_str(),
    }
}

/// The name the catalog looks a message up by: the event name for track, the page or screen
/// name for page and screen (the catalog falls back to its catch-all page or screen type),
/// else the call.
pub fn lookup_name(message: &Map<String, Value>, call: Call) -> &str {
    match call {
        Call::Track => message.get("event").and_then(Value::as_str).unwrap_or(""),
        Call::Page | Call::Screen => message.get("name").and_then(Value::as_str).unwrap_or(""),
        other => other.as_str(),
    }
}

fn parse_time(value: &Value) -> Result<Timestamp, String> {
    let Value::String(text) = value else {
        return Err("must be an ISO-8601 date-time string".to_string());
    };
    // Segment SDKs send RFC 3339 with an offset or Z; a bare date-time without one is
    // ambiguous and refused rather than guessed.
    Timestamp::from_str(text).map_err(|error| format!("{text:?} is not an ISO-8601 date-time with an offset: {error}"))
}

/// Formats like the Segment API does: UTC, milliseconds, `Z`.
pub fn format_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Sets `receivedAt`, a `messageId` when absent, and corrects the client's clock:
/// `timestamp = receivedAt − (sentAt − originalTimestamp)` when `sentAt` is given, keeping the
/// client's value as `originalTimestamp`. Returns the corrected event time in milliseconds.
/// `check` must have accepted the message.
pub fn enrich_time(message: &mut Map<String, Value>, received_at: Timestamp) -> i64 {
    let received_ms = received_at.as_millisecond();
    let original = message.get("timestamp").and_then(|v| parse_time(v).ok());
    let sent_at = message.remove("sentAt").and_then(|v| parse_time(&v).ok().map(|t| (v, t)));
    let event_time = match (original, &sent_at) {
        (Some(original), Some((_, sent))) => {
            let skew_ms = sent.as_millisecond() - original.as_millisecond();
            received_ms.saturating_sub(skew_ms)
        }
        (Some(original), None) => original.as_millisecond(),
        (None, _) => received_ms,
    };
    if let Some(original) = message.remove("timestamp") {
        message.insert("originalTimestamp".to_string(), original);
    }
    let event_time_stamp = Timestamp::from_millisecond(event_time).unwrap_or(received_at);
    message.insert("timestamp".to_string(), Value::String(format_time(event_time_stamp)));
    if let Some((raw, _)) = sent_at {
        message.insert("sentAt".to_string(), raw);
    }
    message.insert("receivedAt".to_string(), Value::String(format_time(received_at)));
    if !message.contains_key("messageId") {
        message.insert("messageId".to_string(), Value::String(format!("strom-{}", uuid::Uuid::new_v4())));
    }
    event_time_stamp.as_millisecond()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn envelope_rules() {
        let cases = [
            (json!({"userId": "u", "event": "A"}), Some(Call::Track), Ok(Call::Track)),
            (json!({"anonymousId": 42, "event": "A"}), Some(Call::Track), Ok(Call::Track)),
            (json!({"event": "A"}), Some(Call::Track), Err("required")),
            (json!({"userId": "u"}), Some(Call::Track), Err("required")),
            (json!({"userId": "u", "event": ""}), Some(Call::Track), Err("minLength")),
            (json!({"userId": "u", "event": 3}), Some(Call::Track), Err("type")),
            (json!({"userId": "u", "type": "page"}), Some(Call::Track), Err("const")),
            (json!({"userId": "u", "type": "page"}), None, Ok(Call::Page)),
            (json!({"userId": "u", "type": "nope"}), None, Err("enum")),
            (json!({"userId": "u"}), None, Err("required")),
            (json!({"userId": "u", "type": "group"}), None, Err("required")),
            (json!({"userId": "u", "type": "group", "groupId": "g"}), None, Ok(Call::Group)),
            (json!({"anonymousId": "a", "type": "alias", "previousId": "p"}), None, Err("required")),
            (json!({"userId": "u", "type": "alias", "previousId": "p"}), None, Ok(Call::Alias)),
            (json!({"userId": "u", "type": "identify", "traits": [1]}), None, Err("type")),
            (json!({"userId": "u", "type": "identify", "timestamp": "yesterday"}), None, Err("format")),
            (json!({"userId": "u", "type": "identify", "messageId": ""}), None, Err("maxLength")),
        ];
        for (message, call, expected) in cases {
            let got = check(&object(message.clone()), call).map_err(|v| v.keyword);
            assert_eq!(got, expected.map_err(String::from), "{message}");
        }
    }

    #[test]
    fn clock_skew_is_corrected_and_the_original_kept() {
        let received: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        // The client's clock runs 1 hour ahead: it stamped the event at 13:00:00 and sent it at
        // 13:00:05, so the event happened 5 s before it was received.
        let mut message = object(json!({
            "userId": "u", "event": "A",
            "timestamp": "2026-11-23T13:00:00.000Z", "sentAt": "2026-11-23T13:00:05.000Z"
        }));
        let event_ms = enrich_time(&mut message, received);
        assert_eq!(message["timestamp"], "2026-11-23T11:59:55.000Z");
        assert_eq!(message["originalTimestamp"], "2026-11-23T13:00:00.000Z");
        assert_eq!(message["receivedAt"], "2026-11-23T12:00:00.000Z");
        assert_eq!(event_ms, received.as_millisecond() - 5_000);
        assert!(message["messageId"].as_str().unwrap().starts_with("strom-"));

        let mut without_sent_at = object(json!({"userId": "u", "timestamp": "2026-11-23T10:00:00+02:00"}));
        enrich_time(&mut without_sent_at, received);
        assert_eq!(without_sent_at["timestamp"], "2026-11-23T08:00:00.000Z");

        let mut bare = object(json!({"userId": "u", "messageId": "m1"}));
        enrich_time(&mut bare, received);
        assert_eq!(bare["timestamp"], "2026-11-23T12:00:00.000Z");
        assert_eq!(bare["messageId"], "m1");
        assert!(!bare.contains_key("originalTimestamp"));
    }
}
