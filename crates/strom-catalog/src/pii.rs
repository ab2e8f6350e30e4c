//! PII annotations: `"x-strom-pii": "hash" | "redact" | "drop"` on a subschema marks the
//! values it describes. The plan is computed once per schema version; applying it walks only
//! the marked paths of an event.
//!
//! - `hash` replaces the value with the lowercase hex HMAC-SHA256 (keyed with the configured
//!   secret) of its bytes: a string's UTF-8 bytes, any other value's canonical JSON text
//!   ([`crate::canonical_text`]). Keyed, so a dictionary of e-mail addresses cannot reverse it;
//!   the same input gives the same hash, so hashed values still join.
//! - `redact` replaces the value with the string `"[redacted]"` (not null: a redacted value
//!   stays distinguishable from a value the sender left null).
//! - `drop` removes the member from its object; an array item is replaced with null instead,
//!   so the positions of the other items keep their meaning.

use std::collections::BTreeSet;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::canonical::{hex, write_canonical};
use crate::limits::SCHEMA_DEPTH_MAX;

pub const PII_KEYWORD: &str = "x-strom-pii";
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PiiAction {
    Hash,
    Redact,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
    EveryItem,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PiiRule {
    pub path: Vec<Step>,
    pub action: PiiAction,
}

/// The PII rules of one schema: deepest paths first, so a hash of an object covers its
/// already-treated members, and one action per path (the strongest: drop over redact over
/// hash, when combinator branches disagree).
#[derive(Debug, Clone, Default)]
pub(crate) struct PiiPlan {
    pub rules: Vec<PiiRule>,
}

impl PiiPlan {
    /// Collects the annotated paths. Refuses annotations it could not apply faithfully
    /// (under `additionalProperties`, `patternProperties`, `not`, `if`, ... or in a recursive
    /// definition): a marked value that would be written in clear is worse than a refused schema.
    pub fn from_schema(schema: &Value) -> Result<PiiPlan, String> {
        let mut planner = Planner { root: schema, rules: Vec::new(), visited: BTreeSet::new(), ref_stack: Vec::new() };
        planner.walk(schema, "", &mut Vec::new(), 0)?;
        let mut everywhere = Vec::new();
        find_annotations(schema, String::new(), &mut everywhere, 0);
        if let Some(pointer) = everywhere.iter().find(|p| !planner.visited.contains(*p)) {
            return Err(format!(
                "{PII_KEYWORD} at {pointer} is in a place the PII plan does not follow (only under properties, items, prefixItems, allOf/anyOf/oneOf and local $ref)"
            ));
        }
        let mut rules = planner.rules;
        // Strongest action per path wins: sort so that the strongest comes last, keep it.
        rules.sort_by(|a, b| a.path.cmp(&b.path).then(a.action.cmp(&b.action)));
        let mut deduped: Vec<PiiRule> = Vec::new();
        for rule in rules {
            if let Some(last) = deduped.last_mut()
                && last.path == rule.path
            {
                *last = rule;
                continue;
            }
            deduped.push(rule);
        }
        deduped.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
        Ok(PiiPlan { rules: deduped })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn apply(&self, event: &mut Value, secret: &[u8]) {
        for rule in &self.rules {
            apply_at(event, &rule.path, rule.action, secret);
        }
    }
}

struct Planner<'a> {
    root: &'a Value,
    rules: Vec<PiiRule>,
    /// Schema pointers of the annotations the plan covers.
    visited: BTreeSet<String>,
    /// `$ref`s being followed, to refuse recursion through an annotated definition.
    ref_stack: Vec<String>,
}

impl<'a> Planner<'a> {
    fn walk(&mut self, schema: &'a Value, pointer: &str, path: &mut Vec<Step>, depth: usize) -> Result<(), String> {
        if depth > SCHEMA_DEPTH_MAX {
            return Err(format!("schema nesting at {pointer} is deeper than {SCHEMA_DEPTH_MAX}"));
        }
        let Some(object) = schema.as_object() else { return Ok(()) };
        if let Some(annotation) = object.get(PII_KEYWORD) {
            let action = match annotation.as_str() {
                Some("hash") => PiiAction::Hash,
                Some("redact") => PiiAction::Redact,
                Some("drop") => PiiAction::Drop,
                _ => {
                    return Err(format!(
                        "{PII_KEYWORD} at {pointer} must be \"hash\", \"redact\" or \"drop\", not {annotation}"
                    ));
                }
            };
            self.visited.insert(pointer.to_string());
            self.rules.push(PiiRule { path: path.clone(), action });
        }
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, subschema) in properties {
                path.push(Step::Key(name.clone()));
                self.walk(subschema, &format!("{pointer}/properties/{}", escape(name)), path, depth + 1)?;
                path.pop();
            }
        }
        match object.get("items") {
            Some(Value::Array(tuple)) => self.walk_tuple(tuple, &format!("{pointer}/items"), path, depth)?,
            Some(items) => {
                path.push(Step::EveryItem);
                self.walk(items, &format!("{pointer}/items"), path, depth + 1)?;
                path.pop();
            }
            None => {}
        }
        if let Some(Value::Array(tuple)) = object.get("prefixItems") {
            self.walk_tuple(tuple, &format!("{pointer}/prefixItems"), path, depth)?;
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = object.get(combinator) {
                for (i, branch) in branches.iter().enumerate() {
                    self.walk(branch, &format!("{pointer}/{combinator}/{i}"), path, depth + 1)?;
                }
            }
        }
        if let Some(Value::String(reference)) = object.get("$ref") {
            let Some(target_pointer) = reference.strip_prefix('#') else { return Ok(()) };
            if self.ref_stack.iter().any(|r| r == reference) {
                let mut inside = Vec::new();
                if let Some(target) = self.root.pointer(target_pointer) {
                    find_annotations(target, String::new(), &mut inside, 0);
                }
                if inside.is_empty() {
                    return Ok(());
                }
                return Err(format!("{PII_KEYWORD} inside the recursive definition {reference} cannot be planned"));
            }
            if let Some(target) = self.root.pointer(target_pointer) {
                self.ref_stack.push(reference.clone());
                let result = self.walk(target, target_pointer, path, depth + 1);
                self.ref_stack.pop();
                result?;
            }
        }
        Ok(())
    }

    fn walk_tuple(
        &mut self,
        tuple: &'a [Value],
        pointer: &str,
        path: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), String> {
        for (i, subschema) in tuple.iter().enumerate() {
            path.push(Step::Index(i));
            self.walk(subschema, &format!("{pointer}/{i}"), path, depth + 1)?;
            path.pop();
        }
        Ok(())
    }
}

/// Schema pointers of every object holding the annotation, wherever it is.
fn find_annotations(value: &Value, pointer: String, out: &mut Vec<String>, depth: usize) {
    if depth > SCHEMA_DEPTH_MAX * 4 {
        return;
    }
    match value {
        Value::Object(map) => {
            if map.contains_key(PII_KEYWORD) {
                out.push(pointer.clone());
            }
            for (key, item) in map {
                find_annotations(item, format!("{pointer}/{}", escape(key)), out, depth + 1);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_annotations(item, format!("{pointer}/{i}"), out, depth + 1);
            }
        }
        _ => {}
    }
}

pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn apply_at(value: &mut Value, path: &[Step], action: PiiAction, secret: &[u8]) {
    match path {
        [] => treat(value, action, secret),
        [last] if action == PiiAction::Drop => match (last, value) {
            (Step::Key(key), Value::Object(map)) => {
                map.remove(key);
            }
            (Step::Index(i), Value::Array(items)) => {
                if let Some(item) = items.get_mut(*i) {
                    *item = Value::Null;
                }
            }
            (Step::EveryItem, Value::Array(items)) => items.iter_mut().for_each(|item| *item = Value::Null),
            _ => {}
        },
        [step, rest @ ..] => match (step, value) {
            (Step::Key(key), Value::Object(map)) => {
                if let Some(member) = map.get_mut(key) {
                    apply_at(member, rest, action, secret);
                }
            }
            (Step::Index(i), Value::Array(items)) => {
                if let Some(item) = items.get_mut(*i) {
                    apply_at(item, rest, action, secret);
                }
            }
            (Step::EveryItem, Value::Array(items)) => {
                for item in items {
                    apply_at(item, rest, action, secret);
                }
            }
            _ => {}
        },
    }
}

fn treat(value: &mut Value, action: PiiAction, secret: &[u8]) {
    match action {
        PiiAction::Hash => *value = Value::String(keyed_hash(value, secret)),
        PiiAction::Redact => *value = Value::String(REDACTED.to_string()),
        // A drop at the root (the whole event marked) empties it rather than removing it.
        PiiAction::Drop => *value = Value::Object(Map::new()),
    }
}

/// Lowercase hex HMAC-SHA256 of a string's bytes or of another value's canonical JSON text.
pub fn keyed_hash(value: &Value, secret: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { unreachable!("HMAC accepts any key length") };
    match value {
        Value::String(text) => mac.update(text.as_bytes()),
        other => {
            let mut text = String::new();
            write_canonical(other, &mut text);
            mac.update(text.as_bytes());
        }
    }
    hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_paths_and_arrays() {
        let schema = json!({
            "properties": {
                "traits": {"properties": {
                    "email": {"type": "string", "x-strom-pii": "hash"},
                    "phone": {"x-strom-pii": "drop"},
                    "name": {"x-strom-pii": "redact"}
                }},
                "items": {"type": "array", "items": {"properties": {"card": {"x-strom-pii": "drop"}}}},
                "pair": {"prefixItems": [{"x-strom-pii": "redact"}, {}]},
                "owner": {"$ref": "#/$defs/person"}
            },
            "$defs": {"person": {"properties": {"email": {"x-strom-pii": "hash"}}}}
        });
        let plan = PiiPlan::from_schema(&schema).unwrap();
        let mut event = json!({
            "traits": {"email": "a@example.com", "phone": "123", "name": "Ann", "plan": "pro"},
            "items": [{"card": "4111", "sku": "x"}, {"sku": "y"}, 5],
            "pair": ["secret", "open"],
            "owner": {"email": "b@example.com"}
        });
        plan.apply(&mut event, b"key");
        let expected_hash = keyed_hash(&json!("a@example.com"), b"key");
        assert_eq!(expected_hash.len(), 64);
        assert_eq!(
            event,
            json!({
                "traits": {"email": expected_hash, "name": "[redacted]", "plan": "pro"},
                "items": [{"sku": "x"}, {"sku": "y"}, 5],
                "pair": ["[redacted]", "open"],
                "owner": {"email": keyed_hash(&json!("b@example.com"), b"key")}
            })
        );
    }

    #[test]
    fn hash_is_keyed_and_known() {
        // RFC 4231 test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?").
        assert_eq!(
            keyed_hash(&json!("what do ya want for nothing?"), b"Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(keyed_hash(&json!("x"), b"k1"), keyed_hash(&json!("x"), b"k2"));
        // Non-strings hash their canonical text: key order does not matter.
        assert_eq!(keyed_hash(&json!({"a": 1, "b": 2}), b"k"), keyed_hash(&json!({"b": 2, "a": 1}), b"k"));
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        for schema in [
            json!({"additionalProperties": {"x-strom-pii": "hash"}}),
            json!({"properties": {"a": {"not": {"x-strom-pii": "drop"}}}}),
            json!({"properties": {"a": {"x-strom-pii": "encrypt"}}}),
            json!({"$defs": {"n": {"properties": {"e": {"x-strom-pii": "hash"}, "next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}),
        ] {
            assert!(PiiPlan::from_schema(&schema).is_err(), "{schema}");
        }
    }

    #[test]
    fn strongest_action_wins_across_branches() {
        let schema = json!({"anyOf": [
            {"properties": {"e": {"x-strom-pii": "hash"}}},
            {"properties": {"e": {"x-strom-pii": "drop"}}}
        ]});
        let plan = PiiPlan::from_schema(&schema).unwrap();
        let mut event = json!({"e": "x", "f": 1});
        plan.apply(&mut event, b"k");
        assert_eq!(event, json!({"f": 1}));
    }
}
