//! CEL expressions: compiled once at load, checked for the variables their place offers, and
//! evaluated against JSON values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program};
use serde_json::Value as Json;

use crate::error::RuleError;

/// The standard library, built once: every evaluation borrows it.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Bytes of an expression's text.
pub const EXPRESSION_BYTES_MAX: usize = 16 * 1024;

/// One compiled CEL expression, with where it was written.
#[derive(Clone)]
pub struct Expr {
    pub text: String,
    /// The field's path in the rule (`pattern.steps[1].match`).
    pub field: String,
    pub line: u64,
    pub column: u64,
    program: Arc<Program>,
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
    pub field: String,
    pub why: String,
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
        Ok(Expr { text: text.to_string(), field: field.to_string(), line, column, program: Arc::new(program) })
    }

    /// Evaluates with the given variables.
    pub fn eval(&self, variables: &[(&str, cel::Value)]) -> Result<cel::Value, EvalError> {
        let mut context = Context::with_env(STDLIB.clone());
        for (name, value) in variables {
            context.add_variable_from_value(*name, value.clone());
        }
        self.program.execute(&context).map_err(|error| EvalError { field: self.field.clone(), why: error.to_string() })
    }

    /// Evaluates a condition: true only for `true`; anything else that is not an error is a
    /// type error (a condition must be a boolean).
    pub fn test(&self, variables: &[(&str, cel::Value)]) -> Result<bool, EvalError> {
        match self.eval(variables)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(EvalError {
                field: self.field.clone(),
                why: format!("a condition must be a boolean, this one gave {}", other.type_of()),
            }),
        }
    }

    /// Evaluates to JSON.
    pub fn json(&self, variables: &[(&str, cel::Value)]) -> Result<Json, EvalError> {
        let value = self.eval(variables)?;
        to_json(&value).map_err(|why| EvalError { field: self.field.clone(), why })
    }

    /// Evaluates to a JSON object (derived-event properties, payloads).
    pub fn object(&self, variables: &[(&str, cel::Value)]) -> Result<serde_json::Map<String, Json>, EvalError> {
        match self.json(variables)? {
            Json::Object(map) => Ok(map),
            other => Err(EvalError {
                field: self.field.clone(),
                why: format!("must give a map, this one gave {}", json_kind(&other)),
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

/// A CEL string.
pub fn cel_string(text: &str) -> cel::Value {
    cel::Value::String(Arc::new(text.to_string()))
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
    fn values_round_trip_between_json_and_cel() {
        let json = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": 18446744073709551615u64}});
        assert_eq!(to_json(&to_cel(&json)).unwrap(), json);
    }
}
