//! Structural compatibility of two JSON Schemas, with the Confluent Schema Registry's meaning.
//!
//! The checker walks both schemas side by side and lists every change from the old version
//! to the new one, each marked with the directions it breaks: *backward* (some instance
//! valid under the old schema is invalid under the new one) and *forward* (the reverse). A
//! mode then keeps the changes that break the directions it checks. Change names follow
//! Confluent's `Difference.Type` in lower case where one exists.
//!
//! The walk proves inclusion with sufficient conditions only: when it cannot show that a
//! change keeps a direction, the change is reported as breaking it. False alarms are
//! possible (a user can pick NONE); silently accepted breaks are not.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value, json};

use crate::limits::{COMPAT_STEPS_MAX, DIFFERENCES_MAX, SCHEMA_DEPTH_MAX};
use crate::pii::escape;
use crate::{Compatibility, Difference};

/// One change from the old schema to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pointer: String,
    pub kind: String,
    pub message: String,
    /// Some instance valid under the old schema is (or may be) invalid under the new one.
    pub breaks_backward: bool,
    /// Some instance valid under the new schema is (or may be) invalid under the old one.
    pub breaks_forward: bool,
}

impl Change {
    fn breaks(&self, backward: bool, forward: bool) -> bool {
        (backward && self.breaks_backward) || (forward && self.breaks_forward)
    }

    fn difference(&self) -> Difference {
        Difference { pointer: self.pointer.clone(), kind: self.kind.clone(), message: self.message.clone() }
    }
}

/// Every change from `old` to `new` that breaks a direction (the checker does not list
/// changes that break nothing, such as a new description).
pub fn changes(old: &Value, new: &Value) -> Vec<Change> {
    let mut checker = Checker::new(old, new);
    let mut out = checker.diff(old, new, "", 0);
    out.truncate(DIFFERENCES_MAX * 4);
    out
}

/// The differences that make `new` incompatible with `previous` (oldest first) under `mode`:
/// empty when compatible. Non-transitive modes look at the last previous version only.
pub fn check_compatibility(mode: Compatibility, previous: &[&Value], new: &Value) -> Vec<Difference> {
    let (backward, forward) = (mode.checks_backward(), mode.checks_forward());
    if !backward && !forward {
        return Vec::new();
    }
    let against: &[&Value] =
        if mode.is_transitive() { previous } else { previous.last().map_or(&[], std::slice::from_ref) };
    let mut differences = Vec::new();
    for (i, old) in against.iter().enumerate().rev() {
        for change in changes(old, new) {
            if change.breaks(backward, forward) {
                let mut difference = change.difference();
                if against.len() > 1 {
                    difference.message =
                        format!("{} (against the {} earlier version)", difference.message, ordinal(against.len() - i));
                }
                if !differences.contains(&difference) {
                    differences.push(difference);
                }
            }
        }
        if differences.len() >= DIFFERENCES_MAX {
            differences.truncate(DIFFERENCES_MAX);
            break;
        }
    }
    differences
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "latest".into(),
        n => format!("{n}th-latest"),
    }
}

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const OBJECT: u8 = 4;
const ARRAY: u8 = 8;
const STRING: u8 = 16;
const INTEGER: u8 = 32;
const FRACTION: u8 = 64;
const NUMBER: u8 = INTEGER | FRACTION;
const ANY: u8 = 127;

/// Keywords that never change which instances are valid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// Validation keywords whose changes are not analysed: equal values are fine, any change
/// is reported as breaking both directions. Keywords neither analysed nor listed here are
/// annotations to the validator and cannot change what is valid.
const OPAQUE: &[&str] = &[
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "contains",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
    "$recursiveAnchor",
    "contentSchema",
];

enum Side {
    Old,
    New,
}

struct Checker<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    old_draft7: bool,
    new_draft7: bool,
    /// Pairs of `$ref`s being compared: meeting one again is a cycle, assumed to hold
    /// (the rest of the walk checks everything else).
    refs_in_progress: HashSet<(String, String)>,
    steps: usize,
    budget_reported: bool,
}

fn is_draft7(root: &Value) -> bool {
    root.get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("draft-07") || s.contains("draft-06") || s.contains("draft-04"))
}

fn change(pointer: &str, kind: impl Into<String>, message: impl Into<String>, backward: bool, forward: bool) -> Change {
    Change {
        pointer: pointer.to_string(),
        kind: kind.into(),
        message: message.into(),
        breaks_backward: backward,
        breaks_forward: forward,
    }
}

fn breaks_backward(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.breaks_backward)
}

fn breaks_forward(changes: &[Change]) -> bool {
    changes.iter().any(|c| c.breaks_forward)
}

fn kinds(changes: &[Change]) -> String {
    let names: BTreeSet<&str> = changes.iter().map(|c| c.kind.as_str()).collect();
    names.into_iter().take(5).collect::<Vec<_>>().join(", ")
}

fn has_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| k == "$ref" || has_ref(v)),
        Value::Array(items) => items.iter().any(has_ref),
        _ => false,
    }
}

fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

fn type_bits(name: &str) -> u8 {
    match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "object" => OBJECT,
        "array" => ARRAY,
        "string" => STRING,
        "integer" => INTEGER,
        "number" => NUMBER,
        _ => ANY,
    }
}

fn value_bits(value: &Value) -> u8 {
    match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                INTEGER
            } else {
                FRACTION
            }
        }
    }
}

fn type_names(bits: u8) -> String {
    if bits == ANY {
        return "any".into();
    }
    let mut names = Vec::new();
    for (bit, name) in [(NULL, "null"), (BOOLEAN, "boolean"), (OBJECT, "object"), (ARRAY, "array"), (STRING, "string")]
    {
        if bits & bit != 0 {
            names.push(name);
        }
    }
    match bits & NUMBER {
        NUMBER => names.push("number"),
        INTEGER => names.push("integer"),
        FRACTION => names.push("number (non-integer)"),
        _ => {}
    }
    if names.is_empty() { "nothing".into() } else { names.join("|") }
}

/// The values an `enum`/`const` allows, if either is present.
fn allowed_values(schema: &Map<String, Value>) -> Option<Vec<&Value>> {
    let from_enum: Option<Vec<&Value>> = schema.get("enum").and_then(Value::as_array).map(|v| v.iter().collect());
    match (from_enum, schema.get("const")) {
        (None, None) => None,
        (Some(values), None) => Some(values),
        (None, Some(constant)) => Some(vec![constant]),
        (Some(values), Some(constant)) => Some(values.into_iter().filter(|v| *v == constant).collect()),
    }
}

/// The types a schema allows: its `type`, narrowed by the types of its `enum`/`const` values.
fn types_of(schema: &Map<String, Value>) -> u8 {
    let declared = match schema.get("type") {
        None => ANY,
        Some(Value::String(name)) => type_bits(name),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).fold(0, |bits, n| bits | type_bits(n)),
        Some(_) => ANY,
    };
    match allowed_values(schema) {
        Some(values) => declared & values.iter().fold(0, |bits, v| bits | value_bits(v)),
        None => declared,
    }
}

/// The schema without its combinators: the conjunct the plain keywords make.
fn base_of(schema: &Map<String, Value>) -> Value {
    let mut base = schema.clone();
    for keyword in ["allOf", "anyOf", "oneOf", "not"] {
        base.remove(keyword);
    }
    Value::Object(base)
}

fn matches_pattern(pattern: &str, name: &str) -> bool {
    // The validator's own regex engine decides, so the checker and validation agree.
    jsonschema::is_valid(&json!({"type": "string", "pattern": pattern}), &json!(name))
}

impl<'a> Checker<'a> {
    fn new(old_root: &'a Value, new_root: &'a Value) -> Checker<'a> {
        Checker {
            old_root,
            new_root,
            old_draft7: is_draft7(old_root),
            new_draft7: is_draft7(new_root),
            refs_in_progress: HashSet::new(),
            steps: 0,
            budget_reported: false,
        }
    }

    /// Resolves a local `$ref`. In 2020-12 a `$ref` with other validation keywords beside it
    /// is their conjunction; in draft-07 the siblings are ignored.
    fn resolve<'v>(&self, side: &Side, schema: &'v Value) -> Result<(Cow<'v, Value>, Option<String>), String>
    where
        'a: 'v,
    {
        let Some(Value::String(reference)) = schema.get("$ref") else { return Ok((Cow::Borrowed(schema), None)) };
        let (root, draft7) = match side {
            Side::Old => (self.old_root, self.old_draft7),
            Side::New => (self.new_root, self.new_draft7),
        };
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .ok_or_else(|| format!("$ref {reference:?} is not a local JSON pointer the checker can follow"))?;
        let Some(object) = schema.as_object() else { return Ok((Cow::Borrowed(target), Some(reference.clone()))) };
        let siblings: Map<String, Value> = object
            .iter()
            .filter(|(k, _)| k.as_str() != "$ref" && !ANNOTATIONS.contains(&k.as_str()) && !k.starts_with("x-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if draft7 || siblings.is_empty() {
            return Ok((Cow::Borrowed(target), Some(reference.clone())));
        }
        Ok((Cow::Owned(json!({"allOf": [target, Value::Object(siblings)]})), Some(reference.clone())))
    }

    fn diff(&mut self, old: &Value, new: &Value, pointer: &str, depth: usize) -> Vec<Change> {
        self.steps += 1;
        if self.steps > COMPAT_STEPS_MAX {
            if self.budget_reported {
                return Vec::new();
            }
            self.budget_reported = true;
            return vec![change(
                pointer,
                "check_budget_exceeded",
                format!("the schemas need more than {COMPAT_STEPS_MAX} comparisons; compatibility cannot be proven"),
                true,
                true,
            )];
        }
        if depth > SCHEMA_DEPTH_MAX {
            return vec![change(
                pointer,
                "schema_too_deep",
                format!("nesting deeper than {SCHEMA_DEPTH_MAX}; compatibility cannot be proven"),
                true,
                true,
            )];
        }
        if old == new && !has_ref(old) {
            return Vec::new();
        }
        let (old, old_ref) = match self.resolve(&Side::Old, old) {
            Ok(resolved) => resolved,
            Err(reason) => return vec![change(pointer, "reference_unsupported", reason, true, true)],
        };
        let (new, new_ref) = match self.resolve(&Side::New, new) {
            Ok(resolved) => resolved,
            Err(reason) => return vec![change(pointer, "reference_unsupported", reason, true, true)],
        };
        if let (Some(o), Some(n)) = (&old_ref, &new_ref) {
            let key = (o.clone(), n.clone());
            if !self.refs_in_progress.insert(key.clone()) {
                return Vec::new();
            }
            let out = self.diff_resolved(&old, &new, pointer, depth);
            self.refs_in_progress.remove(&key);
            return out;
        }
        if old_ref.is_some() || new_ref.is_some() {
            return self.diff(&old, &new, pointer, depth + 1);
        }
        self.diff_resolved(&old, &new, pointer, depth)
    }

    fn diff_resolved(&mut self, old: &Value, new: &Value, pointer: &str, depth: usize) -> Vec<Change> {
        let empty = Map::new();
        let old_map = match old {
            Value::Bool(false) => {
                return if new == &Value::Bool(false) {
                    Vec::new()
                } else {
                    vec![change(
                        pointer,
                        "schema_extended_from_false",
                        "the old schema allowed nothing here; the new one allows values",
                        false,
                        true,
                    )]
                };
            }
            Value::Object(map) => map,
            _ => &empty,
        };
        let new_map = match new {
            Value::Bool(false) => {
                return vec![change(
                    pointer,
                    "schema_narrowed_to_false",
                    "the new schema allows nothing here",
                    true,
                    false,
                )];
            }
            Value::Object(map) => map,
            _ => &empty,
        };
        let has_combinator =
            |m: &Map<String, Value>| ["allOf", "anyOf", "oneOf", "not"].iter().any(|k| m.contains_key(*k));
        if !has_combinator(old_map) && !has_combinator(new_map) {
            return self.diff_plain(old_map, new_map, pointer, depth);
        }
        self.diff_combined(old_map, new_map, pointer, depth)
    }

    /// Schemas with combinators: the plain keywords (the base) and each combinator are
    /// conjuncts, checked one by one.
    fn diff_combined(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Vec<Change> {
        let old_base = base_of(old);
        let new_base = base_of(new);
        let mut base = {
            let (o, n) = (old_base.as_object().unwrap_or(old), new_base.as_object().unwrap_or(new));
            self.diff_plain(o, n, pointer, depth)
        };
        // A base change may be covered by the other side's branches: old ⊆ new_base holds
        // when every branch of the old anyOf/oneOf is inside it, or one allOf member is.
        if breaks_backward(&base) && self.old_branches_within(old, &new_base, pointer, depth) {
            base.retain(|c| c.breaks_forward);
            base.iter_mut().for_each(|c| c.breaks_backward = false);
        }
        if breaks_forward(&base) && self.new_branches_within(new, &old_base, pointer, depth) {
            base.retain(|c| c.breaks_backward);
            base.iter_mut().for_each(|c| c.breaks_forward = false);
        }
        let mut out = base;
        for keyword in ["anyOf", "oneOf"] {
            out.extend(self.diff_sum(keyword, old, new, &old_base, &new_base, pointer, depth));
        }
        out.extend(self.diff_product(old, new, &old_base, &new_base, pointer, depth));
        match (old.get("not"), new.get("not")) {
            (None, None) => {}
            (Some(_), None) => out.push(change(
                &format!("{pointer}/not"),
                "not_type_removed",
                "`not` was removed: the new schema allows values the old one excluded",
                false,
                true,
            )),
            (None, Some(_)) => out.push(change(
                &format!("{pointer}/not"),
                "not_type_added",
                "`not` was added: the new schema excludes values the old one allowed",
                true,
                false,
            )),
            (Some(o), Some(n)) => {
                // not(O) ⊆ not(N) exactly when N ⊆ O: compare with the roles swapped.
                let inner = self.diff(n, o, &format!("{pointer}/not"), depth + 1);
                let (b, f) = (breaks_backward(&inner), breaks_forward(&inner));
                if b || f {
                    let kind = match (b, f) {
                        (true, false) => "not_type_extended",
                        (false, true) => "not_type_narrowed",
                        _ => "not_type_changed",
                    };
                    out.push(change(
                        &format!("{pointer}/not"),
                        kind,
                        format!("the excluded schema changed ({})", kinds(&inner)),
                        b,
                        f,
                    ));
                }
            }
        }
        out
    }

    fn branches<'m>(map: &'m Map<String, Value>, keyword: &str) -> Option<&'m Vec<Value>> {
        map.get(keyword).and_then(Value::as_array)
    }

    fn old_branches_within(&mut self, old: &Map<String, Value>, new_base: &Value, pointer: &str, depth: usize) -> bool {
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = Self::branches(old, keyword)
                && branches.iter().all(|b| !breaks_backward(&self.diff(b, new_base, pointer, depth + 1)))
            {
                return true;
            }
        }
        Self::branches(old, "allOf").is_some_and(|members| {
            members.iter().any(|m| !breaks_backward(&self.diff(m, new_base, pointer, depth + 1)))
        })
    }

    fn new_branches_within(&mut self, new: &Map<String, Value>, old_base: &Value, pointer: &str, depth: usize) -> bool {
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = Self::branches(new, keyword)
                && branches.iter().all(|b| !breaks_forward(&self.diff(old_base, b, pointer, depth + 1)))
            {
                return true;
            }
        }
        Self::branches(new, "allOf")
            .is_some_and(|members| members.iter().any(|m| !breaks_forward(&self.diff(old_base, m, pointer, depth + 1))))
    }

    /// anyOf / oneOf. Backward (old ⊆ new's union): every old branch (or the old base, when
    /// the old schema has no such union) fits in some new branch. Forward: every new branch fits
    /// in some old branch.
    #[allow(clippy::too_many_arguments)]
    fn diff_sum(
        &mut self,
        keyword: &str,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        old_base: &Value,
        new_base: &Value,
        pointer: &str,
        depth: usize,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        let (old_branches, new_branches) = (Self::branches(old, keyword), Self::branches(new, keyword));
        if let Some(new_branches) = new_branches {
            // Without a union of its own, the old base is split by type, so that
            // `type: [string, null]` fits `anyOf: [{type: string}, {type: null}]`.
            let split;
            let olds: Vec<&Value> = match old_branches {
                Some(b) => b.iter().collect(),
                None => {
                    split = split_by_type(old_base);
                    split.iter().collect()
                }
            };
            for (i, o) in olds.iter().enumerate() {
                let fits = new_branches
                    .iter()
                    .enumerate()
                    .any(|(j, n)| !breaks_backward(&self.diff(o, n, &format!("{pointer}/{keyword}/{j}"), depth + 1)));
                if !fits {
                    let at =
                        if old_branches.is_some() { format!("{pointer}/{keyword}/{i}") } else { pointer.to_string() };
                    out.push(change(
                        &at,
                        "sum_type_narrowed",
                        format!("values the old schema allowed (branch {i}) fit no branch of the new {keyword}"),
                        true,
                        false,
                    ));
                }
            }
        }
        if let Some(old_branches) = old_branches {
            let split;
            let news: Vec<&Value> = match new_branches {
                Some(b) => b.iter().collect(),
                None => {
                    split = split_by_type(new_base);
                    split.iter().collect()
                }
            };
            for (j, n) in news.iter().enumerate() {
                let fits = old_branches
                    .iter()
                    .enumerate()
                    .any(|(i, o)| !breaks_forward(&self.diff(o, n, &format!("{pointer}/{keyword}/{i}"), depth + 1)));
                if !fits {
                    let at =
                        if new_branches.is_some() { format!("{pointer}/{keyword}/{j}") } else { pointer.to_string() };
                    out.push(change(
                        &at,
                        "sum_type_extended",
                        format!("values the new schema allows (branch {j}) fit no branch of the old {keyword}"),
                        false,
                        true,
                    ));
                }
            }
        }
        if keyword == "oneOf" && old_branches != new_branches {
            // oneOf also demands that exactly one branch matches; after any change to its
            // branches, that cannot be proven structurally.
            out.push(change(&format!("{pointer}/oneOf"), "one_of_changed", "the oneOf branches changed: that exactly one branch matches cannot be proven (anyOf has no such condition)", new_branches.is_some(), old_branches.is_some()));
        }
        out
    }

    /// allOf. Backward (old ⊆ every new member): each new member contains an old member or
    /// the old base. Forward: each old member contains a new member or the new base.
    #[allow(clippy::too_many_arguments)]
    fn diff_product(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        old_base: &Value,
        new_base: &Value,
        pointer: &str,
        depth: usize,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        let (old_members, new_members) = (Self::branches(old, "allOf"), Self::branches(new, "allOf"));
        if let Some(new_members) = new_members {
            let mut olds: Vec<&Value> = old_members.map_or_else(Vec::new, |m| m.iter().collect());
            olds.push(old_base);
            for (j, n) in new_members.iter().enumerate() {
                let at = format!("{pointer}/allOf/{j}");
                let mut best: Option<Vec<Change>> = None;
                for o in &olds {
                    let inner = self.diff(o, n, &at, depth + 1);
                    if !breaks_backward(&inner) {
                        best = None;
                        break;
                    }
                    if best.is_none() {
                        best = Some(inner);
                    }
                }
                if let Some(inner) = best {
                    out.push(change(
                        &at,
                        "product_type_extended",
                        format!("allOf member {j} constrains values the old schema allowed ({})", kinds(&inner)),
                        true,
                        false,
                    ));
                }
            }
        }
        if let Some(old_members) = old_members {
            let mut news: Vec<&Value> = new_members.map_or_else(Vec::new, |m| m.iter().collect());
            news.push(new_base);
            for (i, o) in old_members.iter().enumerate() {
                let at = format!("{pointer}/allOf/{i}");
                let fits = news.iter().any(|n| !breaks_forward(&self.diff(o, n, &at, depth + 1)));
                if !fits {
                    out.push(change(
                        &at,
                        "product_type_narrowed",
                        format!("old allOf member {i} is no longer enforced by the new schema"),
                        false,
                        true,
                    ));
                }
            }
        }
        out
    }

    /// Schemas without combinators: keyword by keyword.
    fn diff_plain(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        let (old_types, new_types) = (types_of(old), types_of(new));
        if old_types != new_types {
            let (kind, b, f) = if old_types & new_types == old_types {
                ("type_extended", false, true)
            } else if old_types & new_types == new_types {
                ("type_narrowed", true, false)
            } else {
                ("type_changed", true, true)
            };
            out.push(change(
                &format!("{pointer}/type"),
                kind,
                format!("type {} became {}", type_names(old_types), type_names(new_types)),
                b,
                f,
            ));
        }
        let common = old_types & new_types;

        match (allowed_values(old), allowed_values(new)) {
            (None, None) => {}
            (None, Some(_)) => out.push(change(
                &format!("{pointer}/enum"),
                "enum_array_added",
                "enum/const was added: only the listed values stay valid",
                true,
                false,
            )),
            (Some(_), None) => out.push(change(
                &format!("{pointer}/enum"),
                "enum_array_removed",
                "enum/const was removed: values outside the old list become valid",
                false,
                true,
            )),
            (Some(o), Some(n)) => {
                let removed = o.iter().any(|v| !n.contains(v));
                let added = n.iter().any(|v| !o.contains(v));
                let kind = match (removed, added) {
                    (false, false) => None,
                    (true, false) => Some("enum_array_narrowed"),
                    (false, true) => Some("enum_array_extended"),
                    (true, true) => Some("enum_array_changed"),
                };
                if let Some(kind) = kind {
                    out.push(change(&format!("{pointer}/enum"), kind, "the allowed values changed", removed, added));
                }
            }
        }

        if common & STRING != 0 {
            self.lower_bound(&mut out, old, new, pointer, "minLength", "min_length");
            self.upper_bound(&mut out, old, new, pointer, "maxLength", "max_length");
            self.opaque_string(&mut out, old, new, pointer, "pattern");
        }
        if common & (STRING | NUMBER) != 0 {
            self.opaque_string(&mut out, old, new, pointer, "format");
        }
        if common & NUMBER != 0 {
            self.lower_bound(&mut out, old, new, pointer, "minimum", "minimum");
            self.lower_bound(&mut out, old, new, pointer, "exclusiveMinimum", "exclusive_minimum");
            self.upper_bound(&mut out, old, new, pointer, "maximum", "maximum");
            self.upper_bound(&mut out, old, new, pointer, "exclusiveMaximum", "exclusive_maximum");
            self.multiple_of(&mut out, old, new, pointer);
        }
        if common & OBJECT != 0 {
            self.diff_object(&mut out, old, new, pointer, depth);
        }
        if common & ARRAY != 0 {
            self.diff_array(&mut out, old, new, pointer, depth);
        }
        for keyword in OPAQUE {
            if old.get(*keyword) != new.get(*keyword) {
                out.push(change(
                    &format!("{pointer}/{keyword}"),
                    format!("{}_changed", snake(keyword)),
                    format!("a change to `{keyword}` is not analysed, so it cannot be proven compatible"),
                    true,
                    true,
                ));
            }
        }
        out
    }

    fn lower_bound(
        &self,
        out: &mut Vec<Change>,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        keyword: &str,
        name: &str,
    ) {
        let at = format!("{pointer}/{keyword}");
        match (number(old.get(keyword)), number(new.get(keyword))) {
            (None, Some(n)) => {
                out.push(change(&at, format!("{name}_added"), format!("{keyword} {n} was added"), true, false))
            }
            (Some(o), None) => {
                out.push(change(&at, format!("{name}_removed"), format!("{keyword} {o} was removed"), false, true))
            }
            (Some(o), Some(n)) if n > o => out.push(change(
                &at,
                format!("{name}_increased"),
                format!("{keyword} rose from {o} to {n}"),
                true,
                false,
            )),
            (Some(o), Some(n)) if n < o => out.push(change(
                &at,
                format!("{name}_decreased"),
                format!("{keyword} fell from {o} to {n}"),
                false,
                true,
            )),
            _ => {}
        }
    }

    fn upper_bound(
        &self,
        out: &mut Vec<Change>,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        keyword: &str,
        name: &str,
    ) {
        let at = format!("{pointer}/{keyword}");
        match (number(old.get(keyword)), number(new.get(keyword))) {
            (None, Some(n)) => {
                out.push(change(&at, format!("{name}_added"), format!("{keyword} {n} was added"), true, false))
            }
            (Some(o), None) => {
                out.push(change(&at, format!("{name}_removed"), format!("{keyword} {o} was removed"), false, true))
            }
            (Some(o), Some(n)) if n < o => out.push(change(
                &at,
                format!("{name}_decreased"),
                format!("{keyword} fell from {o} to {n}"),
                true,
                false,
            )),
            (Some(o), Some(n)) if n > o => out.push(change(
                &at,
                format!("{name}_increased"),
                format!("{keyword} rose from {o} to {n}"),
                false,
                true,
            )),
            _ => {}
        }
    }

    /// `pattern` and `format`: added narrows, removed relaxes, changed does both (two regular
    /// expressions are not compared for inclusion).
    fn opaque_string(
        &self,
        out: &mut Vec<Change>,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        keyword: &str,
    ) {
        let at = format!("{pointer}/{keyword}");
        match (old.get(keyword), new.get(keyword)) {
            (None, Some(n)) => {
                out.push(change(&at, format!("{keyword}_added"), format!("{keyword} {n} was added"), true, false))
            }
            (Some(o), None) => {
                out.push(change(&at, format!("{keyword}_removed"), format!("{keyword} {o} was removed"), false, true))
            }
            (Some(o), Some(n)) if o != n => out.push(change(
                &at,
                format!("{keyword}_changed"),
                format!("{keyword} changed from {o} to {n}"),
                true,
                true,
            )),
            _ => {}
        }
    }

    fn multiple_of(&self, out: &mut Vec<Change>, old: &Map<String, Value>, new: &Map<String, Value>, pointer: &str) {
        let at = format!("{pointer}/multipleOf");
        let divides = |a: f64, b: f64| b != 0.0 && ((a / b) - (a / b).round()).abs() < 1e-9;
        match (number(old.get("multipleOf")), number(new.get("multipleOf"))) {
            (None, Some(n)) => {
                out.push(change(&at, "multiple_of_added", format!("multipleOf {n} was added"), true, false))
            }
            (Some(o), None) => {
                out.push(change(&at, "multiple_of_removed", format!("multipleOf {o} was removed"), false, true))
            }
            (Some(o), Some(n)) if o != n => {
                if divides(o, n) {
                    out.push(change(
                        &at,
                        "multiple_of_reduced",
                        format!("multipleOf {o} became {n}, a divisor"),
                        false,
                        true,
                    ));
                } else if divides(n, o) {
                    out.push(change(
                        &at,
                        "multiple_of_expanded",
                        format!("multipleOf {o} became {n}, a multiple"),
                        true,
                        false,
                    ));
                } else {
                    out.push(change(&at, "multiple_of_changed", format!("multipleOf {o} became {n}"), true, true));
                }
            }
            _ => {}
        }
    }

    /// The schema a property name not listed in `properties` meets: the matching
    /// `patternProperties`, else `additionalProperties`, else `unevaluatedProperties` (when no
    /// combinator could evaluate it), else anything. `Err` when that cannot be told.
    fn fallback(schema: &Map<String, Value>, name: &str) -> Result<Value, String> {
        if let Some(Value::Object(patterns)) = schema.get("patternProperties") {
            let matching: Vec<Value> =
                patterns.iter().filter(|(p, _)| matches_pattern(p, name)).map(|(_, s)| s.clone()).collect();
            match matching.len() {
                0 => {}
                1 => return Ok(matching.into_iter().next().unwrap_or(Value::Bool(true))),
                _ => return Ok(json!({"allOf": matching})),
            }
        }
        if let Some(additional) = schema.get("additionalProperties") {
            return Ok(additional.clone());
        }
        if let Some(unevaluated) = schema.get("unevaluatedProperties") {
            if ["allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas"].iter().any(|k| schema.contains_key(*k)) {
                return Err("unevaluatedProperties with combinators at the same level".into());
            }
            return Ok(unevaluated.clone());
        }
        Ok(Value::Bool(true))
    }

    fn content_model(schema: &Value) -> &'static str {
        match schema {
            Value::Bool(true) => "open",
            Value::Object(map) if map.keys().all(|k| ANNOTATIONS.contains(&k.as_str()) || k.starts_with("x-")) => {
                "open"
            }
            Value::Bool(false) => "closed",
            _ => "partially_open",
        }
    }

    fn diff_object(
        &mut self,
        out: &mut Vec<Change>,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) {
        let names = |m: &Map<String, Value>, key: &str| -> BTreeSet<String> {
            m.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (old_required, new_required) = (names(old, "required"), names(new, "required"));
        for name in new_required.difference(&old_required) {
            out.push(change(
                &format!("{pointer}/required/{}", escape(name)),
                "required_attribute_added",
                format!("property {name:?} became required"),
                true,
                false,
            ));
        }
        for name in old_required.difference(&new_required) {
            out.push(change(
                &format!("{pointer}/required/{}", escape(name)),
                "required_attribute_removed",
                format!("property {name:?} is no longer required"),
                false,
                true,
            ));
        }

        let empty = Map::new();
        let old_properties = old.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let new_properties = new.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let all: BTreeSet<&String> = old_properties.keys().chain(new_properties.keys()).collect();
        for name in all {
            let at = format!("{pointer}/properties/{}", escape(name));
            match (old_properties.get(name), new_properties.get(name)) {
                (Some(o), Some(n)) => out.extend(self.diff(o, n, &at, depth + 1)),
                (Some(o), None) => match Self::fallback(new, name) {
                    Ok(fallback) => {
                        let inner = self.diff(o, &fallback, &at, depth + 1);
                        if !inner.is_empty() {
                            let model = Self::content_model(&fallback);
                            out.push(change(&at, format!("property_removed_from_{model}_content_model"), format!("property {name:?} was removed; the new schema's {model} content model covers it ({})", kinds(&inner)), breaks_backward(&inner), breaks_forward(&inner)));
                        }
                    }
                    Err(reason) => out.push(change(
                        &at,
                        "property_removed_unproven",
                        format!("property {name:?} was removed and {reason} cannot be checked"),
                        true,
                        true,
                    )),
                },
                (None, Some(n)) => match Self::fallback(old, name) {
                    Ok(fallback) => {
                        let inner = self.diff(&fallback, n, &at, depth + 1);
                        if !inner.is_empty() {
                            let model = Self::content_model(&fallback);
                            out.push(change(&at, format!("property_added_to_{model}_content_model"), format!("property {name:?} was added; the old schema's {model} content model covered it ({})", kinds(&inner)), breaks_backward(&inner), breaks_forward(&inner)));
                        }
                    }
                    Err(reason) => out.push(change(
                        &at,
                        "property_added_unproven",
                        format!("property {name:?} was added and {reason} cannot be checked"),
                        true,
                        true,
                    )),
                },
                (None, None) => {}
            }
        }

        let empty_patterns = Map::new();
        let old_patterns = old.get("patternProperties").and_then(Value::as_object).unwrap_or(&empty_patterns);
        let new_patterns = new.get("patternProperties").and_then(Value::as_object).unwrap_or(&empty_patterns);
        let patterns: BTreeSet<&String> = old_patterns.keys().chain(new_patterns.keys()).collect();
        let old_rest = old.get("additionalProperties").cloned().unwrap_or(Value::Bool(true));
        let new_rest = new.get("additionalProperties").cloned().unwrap_or(Value::Bool(true));
        for pattern in patterns {
            let at = format!("{pointer}/patternProperties/{}", escape(pattern));
            let o = old_patterns.get(pattern).unwrap_or(&old_rest);
            let n = new_patterns.get(pattern).unwrap_or(&new_rest);
            out.extend(self.diff(o, n, &at, depth + 1));
        }

        for (keyword, name) in
            [("additionalProperties", "additional_properties"), ("unevaluatedProperties", "unevaluated_properties")]
        {
            let at = format!("{pointer}/{keyword}");
            let o = old.get(keyword).unwrap_or(&Value::Bool(true));
            let n = new.get(keyword).unwrap_or(&Value::Bool(true));
            match (o, n) {
                (o, n) if o == n && !has_ref(o) => {}
                (Value::Bool(false), _) => out.push(change(
                    &at,
                    format!("{name}_added"),
                    format!("{keyword} was false; the new schema allows other properties"),
                    false,
                    true,
                )),
                (_, Value::Bool(false)) => out.push(change(
                    &at,
                    format!("{name}_removed"),
                    format!("{keyword} became false; properties the old schema allowed are refused"),
                    true,
                    false,
                )),
                (o, n) => {
                    let inner = self.diff(o, n, &at, depth + 1);
                    let (b, f) = (breaks_backward(&inner), breaks_forward(&inner));
                    let kind = match (b, f) {
                        (false, false) => continue,
                        (true, false) => format!("{name}_narrowed"),
                        (false, true) => format!("{name}_extended"),
                        (true, true) => format!("{name}_changed"),
                    };
                    out.push(change(
                        &at,
                        kind,
                        format!("the schema of other properties changed ({})", kinds(&inner)),
                        b,
                        f,
                    ));
                }
            }
        }
        self.lower_bound(out, old, new, pointer, "minProperties", "min_properties");
        self.upper_bound(out, old, new, pointer, "maxProperties", "max_properties");
    }

    /// Items by position: `prefixItems` (2020-12) or an `items` array (draft-07) for the
    /// first positions, then `items` (2020-12) or `additionalItems` (draft-07) for the rest.
    fn item_schemas(schema: &Map<String, Value>, draft7: bool) -> (Vec<Value>, Value) {
        let any = Value::Bool(true);
        if draft7 {
            match schema.get("items") {
                Some(Value::Array(tuple)) => (tuple.clone(), schema.get("additionalItems").cloned().unwrap_or(any)),
                Some(items) => (Vec::new(), items.clone()),
                None => (Vec::new(), any),
            }
        } else {
            let prefix = schema.get("prefixItems").and_then(Value::as_array).cloned().unwrap_or_default();
            (prefix, schema.get("items").cloned().unwrap_or(any))
        }
    }

    fn diff_array(
        &mut self,
        out: &mut Vec<Change>,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) {
        let (old_prefix, old_rest) = Self::item_schemas(old, self.old_draft7);
        let (new_prefix, new_rest) = Self::item_schemas(new, self.new_draft7);
        let prefix_keyword = if self.new_draft7 { "items" } else { "prefixItems" };
        for i in 0..old_prefix.len().max(new_prefix.len()) {
            let o = old_prefix.get(i).unwrap_or(&old_rest);
            let n = new_prefix.get(i).unwrap_or(&new_rest);
            out.extend(self.diff(o, n, &format!("{pointer}/{prefix_keyword}/{i}"), depth + 1));
        }
        let rest_keyword = if self.new_draft7 && !new_prefix.is_empty() { "additionalItems" } else { "items" };
        out.extend(self.diff(&old_rest, &new_rest, &format!("{pointer}/{rest_keyword}"), depth + 1));
        self.lower_bound(out, old, new, pointer, "minItems", "min_items");
        self.upper_bound(out, old, new, pointer, "maxItems", "max_items");
        self.lower_bound(out, old, new, pointer, "minContains", "min_contains");
        self.upper_bound(out, old, new, pointer, "maxContains", "max_contains");
        let unique = |m: &Map<String, Value>| m.get("uniqueItems") == Some(&Value::Bool(true));
        match (unique(old), unique(new)) {
            (false, true) => out.push(change(
                &format!("{pointer}/uniqueItems"),
                "unique_items_added",
                "items must now be unique",
                true,
                false,
            )),
            (true, false) => out.push(change(
                &format!("{pointer}/uniqueItems"),
                "unique_items_removed",
                "items no longer need to be unique",
                false,
                true,
            )),
            _ => {}
        }
    }
}

/// A schema whose `type` lists several types, as one schema per type (a union of them).
fn split_by_type(schema: &Value) -> Vec<Value> {
    let Some(Value::Array(names)) = schema.get("type") else { return vec![schema.clone()] };
    if names.len() < 2 {
        return vec![schema.clone()];
    }
    names
        .iter()
        .map(|name| {
            let mut single = schema.clone();
            if let Some(map) = single.as_object_mut() {
                map.insert("type".into(), name.clone());
            }
            single
        })
        .collect()
}

fn snake(keyword: &str) -> String {
    let mut out = String::new();
    for c in keyword.trim_start_matches('$').chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
