//! An event type: one version of one subject's schema, compiled, with its PII plan.

use std::sync::Arc;

use serde_json::Value;

use crate::limits::{VIOLATION_MESSAGE_CHARS_MAX, VIOLATIONS_MAX};
use crate::model::Metadata;
use crate::pii::PiiPlan;
use crate::{Compatibility, EventKind, Violation};

pub struct EventType {
    /// The subject (the catalog file's stem).
    pub name: String,
    pub kind: EventKind,
    /// The lookup name: the track event name, a page or screen name, the raw type's stream;
    /// `None` for a kind's catch-all type.
    pub event: Option<String>,
    pub stream: String,
    pub version: u32,
    pub schema_id: u32,
    /// The compatibility level the schema itself asks for (`x-strom.compatibility`).
    pub compatibility: Option<Compatibility>,
    pub schema: Arc<Value>,
    validator: jsonschema::Validator,
    pii: PiiPlan,
}

impl std::fmt::Debug for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventType")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("event", &self.event)
            .field("stream", &self.stream)
            .field("version", &self.version)
            .field("schema_id", &self.schema_id)
            .finish_non_exhaustive()
    }
}

/// A parsed and compiled schema, before it becomes a version of a subject.
pub(crate) struct Compiled {
    pub schema: Arc<Value>,
    pub validator: jsonschema::Validator,
    pub pii: PiiPlan,
}

/// Checks the draft, compiles the schema (refusing remote references) and plans its PII.
pub(crate) fn compile(schema: Value) -> Result<Compiled, String> {
    let draft = match schema.get("$schema") {
        None => jsonschema::Draft::Draft202012,
        Some(Value::String(uri)) => draft_of(uri)?,
        Some(other) => return Err(format!("$schema must be a string, not {other}")),
    };
    if !(schema.is_object() || schema.is_boolean()) {
        return Err("a schema is a JSON object or a boolean".into());
    }
    let validator = jsonschema::options()
        .with_draft(draft)
        // Formats are assertions in every draft here, so `"format": "email"` means the same in
        // draft-07 and 2020-12 schemas.
        .should_validate_formats(true)
        // Schemas come from files and API calls: a `$ref` to anything outside the schema
        // itself is refused instead of fetched.
        .offline()
        .build(&schema)
        .map_err(|error| error.to_string())?;
    let pii = PiiPlan::from_schema(&schema)?;
    Ok(Compiled { schema: Arc::new(schema), validator, pii })
}

fn draft_of(uri: &str) -> Result<jsonschema::Draft, String> {
    let bare = uri.trim_end_matches('#').trim_start_matches("https://").trim_start_matches("http://");
    match bare {
        "json-schema.org/draft/2020-12/schema" => Ok(jsonschema::Draft::Draft202012),
        "json-schema.org/draft-07/schema" => Ok(jsonschema::Draft::Draft7),
        _ => Err(format!("unsupported $schema {uri:?}: the catalog takes JSON Schema 2020-12 and draft-07")),
    }
}

impl EventType {
    pub(crate) fn new(name: &str, metadata: Metadata, version: u32, schema_id: u32, compiled: Compiled) -> EventType {
        EventType {
            name: name.to_string(),
            kind: metadata.kind,
            event: metadata.event,
            stream: metadata.stream,
            version,
            schema_id,
            compatibility: metadata.compatibility,
            schema: compiled.schema,
            validator: compiled.validator,
            pii: compiled.pii,
        }
    }

    /// Checks a whole event (the Segment envelope: `type`, `event`, `properties`, `context`,
    /// ...) against the schema. At most [`VIOLATIONS_MAX`] violations are reported.
    pub fn validate(&self, event: &Value) -> Result<(), Vec<Violation>> {
        // The fast path answers valid events without building error values.
        if self.validator.is_valid(event) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(event)
            .take(VIOLATIONS_MAX)
            .map(|error| {
                let mut message = error.masked().to_string();
                if message.chars().count() > VIOLATION_MESSAGE_CHARS_MAX {
                    message = message.chars().take(VIOLATION_MESSAGE_CHARS_MAX).collect::<String>() + "…";
                }
                Violation {
                    pointer: error.instance_path().as_str().to_string(),
                    keyword: error.kind().keyword().to_string(),
                    message,
                    schema_pointer: error.schema_path().as_str().to_string(),
                }
            })
            .collect();
        if violations.is_empty() {
            // is_valid and iter_errors disagreeing would be a validator bug; report it rather
            // than let the event through as valid.
            return Err(vec![Violation {
                pointer: String::new(),
                keyword: "schema".into(),
                message: "the event does not match the schema".into(),
                schema_pointer: String::new(),
            }]);
        }
        Err(violations)
    }

    pub fn has_pii(&self) -> bool {
        !self.pii.is_empty()
    }

    /// Applies the schema's PII annotations in place (see the `pii` module for what each does).
    pub fn apply_pii(&self, event: &mut Value, secret: &[u8]) {
        self.pii.apply(event, secret);
    }
}
