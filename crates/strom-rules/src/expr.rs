//! CEL expressions: compiled once at load, checked for the variables their place offers, and
//! evaluated against JSON values.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::RuleError;
use crate::fast::{self, Fast};

/// The standard library, built once: every evaluation borrows it.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Bytes of an expression's text.
pub const EXPRESSION_BYTES_MAX: usize = 16 * 1024;
/// Nesting of an expression (brackets, and operators chained in a row).
pub const EXPRESSION_DEPTH_MAX: usize = 64;

/// How deeply an expression nests: the deepest bracket level, or the longest run of binary
/// operators (`a && b && c ...` parses into a chain as deep as it is long).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut previous = ' ';
    for c in text.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '&' | '|' | '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '?' if c != previous => operators += 1,
            _ => {}
        }
        previous = c;
    }
    deepest.max(operators / 2)
}

/// One compiled CEL expression, with where it was written.
#[derive(Clone)]
pub struct Expr {
    pub text: String,
    /// The field's path in the rule (`pattern.steps[1].match`); shared with its errors.
    pub field: Arc<str>,
    pub line: u64,
    pub column: u64,
    program: Arc<Program>,
    /// The variables it reads, with the parts of each it reads.
    variables: Vec<(String, Paths)>,
    /// The direct evaluator, when the expression is in its subset.
    fast: Option<Arc<Fast>>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?} at {})", self.text, self.field)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.text == other.text && self.field == other.field
    }
}

/// Why an evaluation failed (a missing field, a type mismatch): counted and logged by the
/// caller, never a panic.
#[derive(Debug, Clone)]
pub struct EvalError {
    pub field: Arc<str>,
    pub why: Cow<'static, str>,
    /// The expression read a field the value does not have: for a condition, simply not
    /// true.
    pub missing: bool,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

impl Expr {
    /// Compiles `text` and checks that it only names `variables` (and the variables its own
    /// macros bind). The error points at the field's value.
    pub(crate) fn compile(
        text: &str,
        field: &str,
        line: u64,
        column: u64,
        variables: &[&str],
        origin: &str,
    ) -> Result<Expr, RuleError> {
        let fail = |why: String| RuleError {
            origin: origin.to_string(),
            line: Some(line).filter(|&l| l > 0),
            column: Some(column).filter(|&c| c > 0),
            field: field.to_string(),
            why,
        };
        if text.len() > EXPRESSION_BYTES_MAX {
            return Err(fail(format!("the expression is longer than {EXPRESSION_BYTES_MAX} bytes")));
        }
        if text.trim().is_empty() {
            return Err(fail("the expression is empty".into()));
        }
        // The CEL parser and interpreter recurse per level of nesting: a deep expression would
        // overflow the stack, which aborts the process. Brackets are counted outside quotes,
        // and operators chained without brackets count as levels too.
        if nesting(text) > EXPRESSION_DEPTH_MAX {
            return Err(fail(format!("the expression nests deeper than {EXPRESSION_DEPTH_MAX} levels")));
        }
        let program = STDLIB.compile(text).map_err(|errors| {
            let message = errors.to_string();
            let message = message.lines().next().unwrap_or("syntax error").trim();
            // "ERROR: <input>:1:30: Syntax error: ..." names a place in the expression, not
            // in the file: said so.
            let message = message.strip_prefix("ERROR: <input>:").and_then(|rest| {
                let mut parts = rest.splitn(3, ':');
                let (line, column, why) = (parts.next()?, parts.next()?, parts.next()?);
                Some(format!("CEL, at line {line} column {column} of the expression:{why}"))
            });
            fail(
                message
                    .unwrap_or_else(|| format!("CEL: {}", errors.to_string().lines().next().unwrap_or("syntax error"))),
            )
        })?;
        let mut free = BTreeSet::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        if let Some(unknown) = free.iter().find(|name| !variables.contains(&name.as_str())) {
            let known = if variables.is_empty() { "none".to_string() } else { variables.join(", ") };
            return Err(fail(format!("unknown variable `{unknown}` (here: {known})")));
        }
        let names: Vec<String> = free.into_iter().collect();
        let fast = fast::compile(program.expression(), &names).map(Arc::new);
        let variables = names
            .into_iter()
            .map(|name| {
                let mut paths = Paths::default();
                collect_paths(program.expression(), &name, &mut Vec::new(), &mut paths);
                (name, paths)
            })
            .collect();
        Ok(Expr {
            text: text.to_string(),
            field: Arc::from(field),
            line,
            column,
            program: Arc::new(program),
            variables,
            fast,
        })
    }

    /// Whether it reads no variable but `event` (a filter's condition may read `key`).
    pub fn paths_reads_only_event(&self) -> bool {
        self.variables.iter().all(|(name, _)| name == "event")
    }

    /// The direct evaluator's form, when it has one.
    pub(crate) fn fast(&self) -> Option<&Fast> {
        self.fast.as_deref()
    }

    /// Whether the direct evaluator runs it (else the CEL interpreter does).
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Evaluates with the given variables (names the expression does not read are ignored).
    pub fn eval<'a>(&'a self, variables: &[(&str, &'a Json)]) -> Result<Cow<'a, Json>, EvalError> {
        let bound = |name: &str| variables.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        if let Some(fast) = &self.fast {
            let to_error = |failure: fast::Failure| EvalError {
                field: self.field.clone(),
                why: failure.why,
                missing: failure.missing,
            };
            // Most expressions read one to three variables: no allocation for them.
            if self.variables.len() <= 4 {
                let mut values: [Option<&'a Json>; 4] = [None; 4];
                for (slot, (name, _)) in values.iter_mut().zip(&self.variables) {
                    *slot = bound(name);
                }
                return fast.eval(&values[..self.variables.len()]).map_err(to_error);
            }
            let values: Vec<Option<&'a Json>> = self.variables.iter().map(|(name, _)| bound(name)).collect();
            return fast.eval(&values).map_err(to_error);
        }
        self.interpret(variables).map(Cow::Owned)
    }

    /// Evaluates in the CEL interpreter, with each variable converted as far as it is read.
    fn interpret(&self, variables: &[(&str, &Json)]) -> Result<Json, EvalError> {
        let mut context = Context::with_env(STDLIB.clone());
        for (name, paths) in &self.variables {
            if let Some((_, value)) = variables.iter().find(|(n, _)| n == name) {
                context.add_variable_from_value(name.as_str(), to_cel_pruned(value, paths));
            }
        }
        let value = self.program.execute(&context).map_err(|error| EvalError {
            field: self.field.clone(),
            missing: matches!(error, cel::ExecutionError::NoSuchKey(_)),
            why: Cow::Owned(error.to_string()),
        })?;
        to_json(&value).map_err(|why| EvalError { field: self.field.clone(), why: Cow::Owned(why), missing: false })
    }

    /// Evaluates a condition: true only for `true`; anything else that is not an error is a
    /// type error (a condition must be a boolean).
    pub fn test(&self, variables: &[(&str, &Json)]) -> Result<bool, EvalError> {
        match self.eval(variables)?.as_ref() {
            Json::Bool(b) => Ok(*b),
            other => Err(EvalError {
                field: self.field.clone(),
                why: Cow::Owned(format!("a condition must be a boolean, this one gave {}", json_kind(other))),
                missing: false,
            }),
        }
    }

    /// Evaluates to JSON.
    pub fn json(&self, variables: &[(&str, &Json)]) -> Result<Json, EvalError> {
        self.eval(variables).map(Cow::into_owned)
    }

    /// Evaluates to a JSON object (derived-event properties, payloads).
    pub fn object(&self, variables: &[(&str, &Json)]) -> Result<serde_json::Map<String, Json>, EvalError> {
        match self.json(variables)? {
            Json::Object(map) => Ok(map),
            other => Err(EvalError {
                field: self.field.clone(),
                why: Cow::Owned(format!("must give a map, this one gave {}", json_kind(&other))),
                missing: false,
            }),
        }
    }

    /// The fields of `variable` this expression reads (see `Paths`).
    pub fn paths_of(&self, variable: &str, paths: &mut Paths) {
        collect_paths(self.program.expression(), variable, &mut Vec::new(), paths);
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
    }
}

/// Identifiers an expression reads that it does not bind itself.
fn free_variables(expr: &IdedExpr, bound: &mut Vec<String>, free: &mut BTreeSet<String>) {
    match &expr.expr {
        Ast::Ident(name) => {
            if !bound.iter().any(|b| b == name) {
                free.insert(name.clone());
            }
        }
        Ast::Select(select) => free_variables(&select.operand, bound, free),
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, free);
            }
            for arg in &call.args {
                free_variables(arg, bound, free);
            }
        }
        Ast::List(list) => list.elements.iter().for_each(|e| free_variables(e, bound, free)),
        Ast::Map(map) => map.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                free_variables(&entry.key, bound, free);
                free_variables(&entry.value, bound, free);
            }
            EntryExpr::StructField(field) => free_variables(&field.value, bound, free),
        }),
        Ast::Struct(s) => s.entries.iter().for_each(|entry| {
            if let EntryExpr::StructField(field) = &entry.expr {
                free_variables(&field.value, bound, free);
            }
        }),
        Ast::Comprehension(c) => {
            free_variables(&c.iter_range, bound, free);
            free_variables(&c.accu_init, bound, free);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(var) = &c.iter_var2 {
                bound.push(var.clone());
            }
            bound.push(c.accu_var.clone());
            free_variables(&c.loop_cond, bound, free);
            free_variables(&c.loop_step, bound, free);
            free_variables(&c.result, bound, free);
            bound.truncate(depth);
        }
        Ast::Literal(_) | Ast::Unspecified => {}
    }
}

/// The parts of a variable that expressions read: `cart.properties.cart_id` is the path
/// `["properties", "cart_id"]`; a bare `cart` (passed whole to a function, say) reads
/// everything. Partial matches keep only these parts of their events, which is what makes an
/// open cart cost tens of bytes rather than the whole event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paths {
    /// Reads the whole value.
    pub whole: bool,
    pub children: BTreeMap<String, Paths>,
}

impl Paths {
    pub fn whole() -> Paths {
        Paths { whole: true, children: BTreeMap::new() }
    }

    fn add(&mut self, path: &[String]) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some((first, rest)) => self.children.entry(first.clone()).or_default().add(rest),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.whole && self.children.is_empty()
    }

    /// Adds everything `other` reads.
    pub fn merge(&mut self, other: &Paths) {
        if self.whole {
            return;
        }
        if other.whole {
            *self = Paths::whole();
            return;
        }
        for (name, paths) in &other.children {
            self.children.entry(name.clone()).or_default().merge(paths);
        }
    }

    /// The parts of `value` these paths read.
    pub fn prune(&self, value: &Json) -> Json {
        if self.whole {
            return value.clone();
        }
        match value {
            Json::Object(map) => {
                let mut out = serde_json::Map::new();
                for (name, paths) in &self.children {
                    if let Some(child) = map.get(name) {
                        out.insert(name.clone(), paths.prune(child));
                    }
                }
                Json::Object(out)
            }
            // A field of a non-object: kept as it is, so that the expression fails as it would
            // on the whole event.
            other => other.clone(),
        }
    }
}

/// Walks `expr` for selections rooted at `variable`.
fn collect_paths(expr: &IdedExpr, variable: &str, bound: &mut Vec<String>, paths: &mut Paths) {
    // A chain of field selections rooted at the variable: record its path and stop.
    if let Some(path) = select_chain(expr, variable, bound) {
        paths.add(&path);
        return;
    }
    match &expr.expr {
        Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => {}
        Ast::Select(select) => collect_paths(&select.operand, variable, bound, paths),
        Ast::Call(call) => {
            // `event.properties["cart_id"]`: an index with a literal string is a field too.
            if call.func_name == "_[_]"
                && call.args.len() == 2
                && let Ast::Literal(cel::common::ast::LiteralValue::String(field)) = &call.args[1].expr
                && let Some(mut path) = select_chain(&call.args[0], variable, bound)
            {
                path.push(field.to_string());
                paths.add(&path);
                return;
            }
            if let Some(target) = &call.target {
                collect_paths(target, variable, bound, paths);
            }
            for arg in &call.args {
                collect_paths(arg, variable, bound, paths);
            }
        }
        Ast::List(list) => list.elements.iter().for_each(|e| collect_paths(e, variable, bound, paths)),
        Ast::Map(map) => map.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                collect_paths(&entry.key, variable, bound, paths);
                collect_paths(&entry.value, variable, bound, paths);
            }
            EntryExpr::StructField(field) => collect_paths(&field.value, variable, bound, paths),
        }),
        Ast::Struct(s) => s.entries.iter().for_each(|entry| {
            if let EntryExpr::StructField(field) = &entry.expr {
                collect_paths(&field.value, variable, bound, paths);
            }
        }),
        Ast::Comprehension(c) => {
            collect_paths(&c.iter_range, variable, bound, paths);
            collect_paths(&c.accu_init, variable, bound, paths);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(var) = &c.iter_var2 {
                bound.push(var.clone());
            }
            bound.push(c.accu_var.clone());
            collect_paths(&c.loop_cond, variable, bound, paths);
            collect_paths(&c.loop_step, variable, bound, paths);
            collect_paths(&c.result, variable, bound, paths);
            bound.truncate(depth);
        }
    }
}

/// `variable.a.b` (also under `has()`) as `["a", "b"]`; `None` when `expr` is something else.
fn select_chain(expr: &IdedExpr, variable: &str, bound: &[String]) -> Option<Vec<String>> {
    match &expr.expr {
        Ast::Ident(name) if name == variable && !bound.iter().any(|b| b == name) => Some(Vec::new()),
        Ast::Select(select) => {
            let mut path = select_chain(&select.operand, variable, bound)?;
            path.push(select.field.clone());
            Some(path)
        }
        _ => None,
    }
}

/// JSON to CEL. Integers stay integers (unsigned ones beyond i64 become uint), other numbers
/// are doubles.
pub fn to_cel(value: &Json) -> cel::Value {
    match value {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(map) => {
            let map: std::collections::HashMap<Key, cel::Value> =
                map.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v))).collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// Parses JSON text keeping only what `paths` reads: the other fields are skipped without
/// being built (no allocation), which is most of an event's parsing cost.
pub fn parse_pruned(bytes: &[u8], paths: &Paths) -> serde_json::Result<Json> {
    use serde::de::DeserializeSeed;
    // From bytes: only the strings kept are checked for UTF-8, skipped ones are only
    // scanned (checking the whole text first measured slower).
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Pruned(paths).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Pruned<'p>(&'p Paths);

impl<'de> serde::de::DeserializeSeed<'de> for Pruned<'_> {
    type Value = Json;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        if self.0.whole {
            return Json::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Pruned<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.0.children.get(key.as_ref()) {
                Some(paths) => {
                    let value = map.next_value_seed(Pruned(paths))?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Json::Object(out))
    }

    // A value that is not an object is kept whole: an expression reading a field of it fails
    // as it would on the whole event.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Json, A::Error> {
        serde::de::Visitor::visit_seq(JsonVisitor, seq)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
}

/// serde_json's own visitor for a whole value, reached through `Json::deserialize`.
struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
}

/// JSON to CEL, only the parts `paths` reads (see `Paths`): the cost of an evaluation is then
/// that of the fields it uses, not of the whole event.
pub fn to_cel_pruned(value: &Json, paths: &Paths) -> cel::Value {
    if paths.whole {
        return to_cel(value);
    }
    match value {
        Json::Object(map) => cel_map(
            paths
                .children
                .iter()
                .filter_map(|(name, paths)| map.get(name).map(|child| (name.clone(), to_cel_pruned(child, paths)))),
        ),
        other => to_cel(other),
    }
}

/// A CEL map from named values.
pub fn cel_map(entries: impl IntoIterator<Item = (String, cel::Value)>) -> cel::Value {
    let map: std::collections::HashMap<Key, cel::Value> =
        entries.into_iter().map(|(k, v)| (Key::String(Arc::new(k)), v)).collect();
    cel::Value::Map(Map { map: Arc::new(map) })
}

/// CEL to JSON. Map keys become strings; bytes, functions and opaque values cannot be
/// represented and are an evaluation error.
pub fn to_json(value: &cel::Value) -> Result<Json, String> {
    Ok(match value {
        cel::Value::Null => Json::Null,
        cel::Value::Bool(b) => Json::Bool(*b),
        cel::Value::Int(i) => Json::from(*i),
        cel::Value::UInt(u) => Json::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        cel::Value::String(s) => Json::String(s.as_str().to_string()),
        cel::Value::List(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        cel::Value::Map(map) => {
            // Sorted, so that derived events are byte-for-byte deterministic.
            let mut entries: Vec<(String, Json)> = map
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::String(s) => s.as_str().to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                    };
                    to_json(v).map(|v| (key, v))
                })
                .collect::<Result<_, _>>()?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().collect())
        }
        other => return Err(format!("a {} cannot be written as JSON", other.type_of())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str, variables: &[&str]) -> Result<Expr, RuleError> {
        Expr::compile(text, "f", 1, 1, variables, "test")
    }

    #[test]
    fn unknown_variables_are_refused_but_macro_variables_are_not() {
        assert!(compile("event.properties.items.all(i, i.price > 0)", &["event"]).is_ok());
        let error = compile("evnt.event == 'x'", &["event", "key"]).unwrap_err();
        assert_eq!(error.why, "unknown variable `evnt` (here: event, key)");
        assert!(compile("event.event ==", &["event"]).unwrap_err().why.starts_with("CEL, at line 1 column "));
    }

    #[test]
    fn deep_expressions_are_refused_before_the_parser_sees_them() {
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(compile(&deep, &[]).unwrap_err().why.contains("nests deeper"));
        let long_chain = vec!["event.a == 1"; 1000].join(" && ");
        assert!(compile(&long_chain, &["event"]).unwrap_err().why.contains("nests deeper"));
        assert!(compile("event.event in ['(((', ')))'] && (event.n > (1 + 2))", &["event"]).is_ok());
    }

    #[test]
    fn paths_keep_only_what_is_read() {
        let expr = compile(
            "event.properties.cart_id == cart.properties.cart_id && has(cart.context.page) && cart['userId'] != ''",
            &["event", "cart"],
        )
        .unwrap();
        let mut paths = Paths::default();
        expr.paths_of("cart", &mut paths);
        let event = serde_json::json!({
            "userId": "u1", "event": "AddToCart",
            "properties": {"cart_id": "c1", "sku": "s"},
            "context": {"page": {"path": "/"}, "ip": "1.2.3.4"}
        });
        assert_eq!(
            paths.prune(&event),
            serde_json::json!({"userId": "u1", "properties": {"cart_id": "c1"}, "context": {"page": {"path": "/"}}})
        );
        let mut whole = Paths::default();
        compile("size(cart) > 0", &["cart"]).unwrap().paths_of("cart", &mut whole);
        assert!(whole.whole);
    }

    #[test]
    fn the_direct_evaluator_agrees_with_the_interpreter() {
        let event = serde_json::json!({
            "event": "AddToCart", "userId": "u1", "n": 3, "big": 18446744073709551615u64, "f": 2.5,
            "properties": {"cart_id": "c1", "price": 80, "tags": ["a", "b"], "flag": true, "none": null},
        });
        let cart = serde_json::json!({"properties": {"cart_id": "c1"}});
        let cases = [
            "event.event == 'AddToCart'",
            "event.event != 'AddToCart'",
            "event.event in ['AddToCart', 'Checkout']",
            "'b' in event.properties.tags",
            "'price' in event.properties",
            "event.properties.price > 50.0",
            "event.properties.price >= 80",
            "event.n < event.f",
            "event.f <= 2.5",
            "event.n == 3.0",
            "event.big > 1",
            "event.properties.cart_id == cart.properties.cart_id",
            "has(event.properties.cart_id) && !has(event.properties.sku)",
            "event.properties.flag ? 'yes' : 'no'",
            "event.properties.none == null",
            "event.properties['cart_id'] == 'c1'",
            "{'a': event.properties.cart_id, 'b': [event.n, true, null]}",
            "event.missing == 'x'",
            "false && event.missing == 'x'",
            "event.missing == 'x' && false",
            "event.missing == 'x' || true",
            "event.missing == 'x' || false",
            "event.event < 3",
            "!event.event",
            "event.properties.tags == ['a', 'b']",
            "event.properties == {'cart_id': 'c1'}",
            "has(event.missing.deeper)",
            "event.userId > 'u0' && event.userId < 'u2'",
        ];
        for text in cases {
            let expr = compile(text, &["event", "cart"]).unwrap();
            assert!(expr.is_fast(), "{text} is in the subset");
            let variables = [("event", &event), ("cart", &cart)];
            let fast = expr.eval(&variables).map(Cow::into_owned).map_err(|e| e.missing);
            let interpreted = expr.interpret(&variables).map_err(|e| e.missing);
            assert_eq!(fast, interpreted, "{text}");
        }
        for slow in ["event.n * 2 > 5", "size(event.properties.tags) == 2", "event.event.startsWith('Add')"] {
            assert!(!compile(slow, &["event"]).unwrap().is_fast(), "{slow}");
        }
    }

    #[test]
    fn pruned_parsing_keeps_what_is_read_and_nothing_else() {
        let mut paths = Paths::default();
        compile("event.properties.cart_id == 'x' && has(event.context.page)", &["event"])
            .unwrap()
            .paths_of("event", &mut paths);
        paths.children.insert("tags".into(), Paths::whole());
        let text = r#"{"properties":{"cart_id":"c\u0031","sku":"s"},"context":{"page":{"path":"/"},"ip":"x"},"tags":[1,{"a":2}],"big":[1,2,3],"n":1}"#;
        let value = parse_pruned(text.as_bytes(), &paths).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"properties": {"cart_id": "c1"}, "context": {"page": {"path": "/"}}, "tags": [1, {"a": 2}]})
        );
        assert!(parse_pruned(b"{\"a\": 1} trailing", &paths).is_err());
        assert_eq!(parse_pruned(b"[1, 2]", &paths).unwrap(), serde_json::json!([1, 2]));
    }

    #[test]
    fn values_round_trip_between_json_and_cel() {
        let json = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": 18446744073709551615u64}});
        assert_eq!(to_json(&to_cel(&json)).unwrap(), json);
    }
}
