//! A direct evaluator for the common subset of CEL, over JSON values.
//!
//! Most rule expressions are field reads, literals, comparisons, `in`, `has()`, the boolean
//! operators, `? :` and map or list literals. Converting an event into CEL values and running
//! the interpreter costs several microseconds; evaluating such an expression straight on the
//! event's JSON costs tens of nanoseconds. Expressions outside the subset (arithmetic,
//! functions, macros) run in the `cel` interpreter; `tests::agrees_with_the_interpreter`
//! checks that both give the same answers.

use std::borrow::Cow;

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr, LiteralValue};
use serde_json::Value as Json;

/// An expression of the subset. Variables are indexes into the expression's variable list.
#[derive(Clone, Debug)]
pub(crate) enum Fast {
    Path {
        variable: usize,
        path: Vec<String>,
    },
    /// `has(v.a.b)`: whether the last field is present.
    Has {
        variable: usize,
        path: Vec<String>,
    },
    Literal(Json),
    List(Vec<Fast>),
    Map(Vec<(String, Fast)>),
    Not(Box<Fast>),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Compare(Comparison, Box<Fast>, Box<Fast>),
    In(Box<Fast>, Box<Fast>),
    Conditional(Box<Fast>, Box<Fast>, Box<Fast>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

/// Why an evaluation failed; `missing` marks a read of a field that is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub missing: bool,
    /// Built only for real errors: a missing field (the common case, a condition on an
    /// event of another kind) costs no allocation.
    pub why: Cow<'static, str>,
}

fn failure(why: impl Into<Cow<'static, str>>) -> Failure {
    Failure { missing: false, why: why.into() }
}

/// Compiles `expr` into the subset, or `None` when it uses anything else.
pub(crate) fn compile(expr: &IdedExpr, variables: &[String]) -> Option<Fast> {
    match &expr.expr {
        Ast::Ident(name) => {
            let variable = variables.iter().position(|v| v == name)?;
            Some(Fast::Path { variable, path: Vec::new() })
        }
        Ast::Select(select) => {
            let Fast::Path { variable, mut path } = compile(&select.operand, variables)? else { return None };
            path.push(select.field.clone());
            if select.test { Some(Fast::Has { variable, path }) } else { Some(Fast::Path { variable, path }) }
        }
        Ast::Literal(literal) => Some(Fast::Literal(match literal {
            LiteralValue::Boolean(b) => Json::Bool(*b.inner()),
            LiteralValue::Int(i) => Json::from(*i.inner()),
            LiteralValue::UInt(u) => Json::from(*u.inner()),
            LiteralValue::Double(d) => Json::Number(serde_json::Number::from_f64(*d.inner())?),
            LiteralValue::String(s) => Json::String(s.inner().to_string()),
            LiteralValue::Null => Json::Null,
            LiteralValue::Bytes(_) => return None,
        })),
        Ast::List(list) if list.optional_indices.is_empty() => {
            let items: Vec<Fast> = list.elements.iter().map(|e| compile(e, variables)).collect::<Option<_>>()?;
            // A list of literals is built once, here.
            if items.iter().all(|i| matches!(i, Fast::Literal(_))) {
                let values = items.into_iter().filter_map(|i| if let Fast::Literal(v) = i { Some(v) } else { None });
                return Some(Fast::Literal(Json::Array(values.collect())));
            }
            Some(Fast::List(items))
        }
        Ast::Map(map) => {
            let mut entries = Vec::new();
            for entry in &map.entries {
                let EntryExpr::MapEntry(entry) = &entry.expr else { return None };
                let Ast::Literal(LiteralValue::String(key)) = &entry.key.expr else { return None };
                if entry.optional || entries.iter().any(|(k, _)| k == key.inner()) {
                    return None;
                }
                entries.push((key.inner().to_string(), compile(&entry.value, variables)?));
            }
            Some(Fast::Map(entries))
        }
        Ast::Call(call) if call.target.is_none() => {
            let arg = |i: usize| compile(&call.args[i], variables).map(Box::new);
            let comparison = |c| Some(Fast::Compare(c, arg(0)?, arg(1)?));
            match (call.func_name.as_str(), call.args.len()) {
                ("_==_", 2) => comparison(Comparison::Equal),
                ("_!=_", 2) => comparison(Comparison::NotEqual),
                ("_<_", 2) => comparison(Comparison::Less),
                ("_<=_", 2) => comparison(Comparison::LessEqual),
                ("_>_", 2) => comparison(Comparison::Greater),
                ("_>=_", 2) => comparison(Comparison::GreaterEqual),
                ("_&&_", 2) => Some(Fast::And(arg(0)?, arg(1)?)),
                ("_||_", 2) => Some(Fast::Or(arg(0)?, arg(1)?)),
                ("!_", 1) => Some(Fast::Not(arg(0)?)),
                ("@in", 2) => Some(Fast::In(arg(0)?, arg(1)?)),
                ("_?_:_", 3) => Some(Fast::Conditional(arg(0)?, arg(1)?, arg(2)?)),
                ("_[_]", 2) => {
                    // `v.a["b"]` is the field `b`.
                    let Ast::Literal(LiteralValue::String(field)) = &call.args[1].expr else { return None };
                    let Fast::Path { variable, mut path } = compile(&call.args[0], variables)? else { return None };
                    path.push(field.inner().to_string());
                    Some(Fast::Path { variable, path })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

impl Fast {
    /// Evaluates against the variables' values (`None`: the variable is not bound here).
    pub fn eval<'a>(&'a self, values: &[Option<&'a Json>]) -> Result<Cow<'a, Json>, Failure> {
        match self {
            Fast::Path { variable, path } => {
                let mut value =
                    values.get(*variable).copied().flatten().ok_or_else(|| failure("a variable is not bound here"))?;
                for field in path {
                    value = field_of(value, field)?;
                }
                Ok(Cow::Borrowed(value))
            }
            Fast::Has { variable, path } => {
                let mut value =
                    values.get(*variable).copied().flatten().ok_or_else(|| failure("a variable is not bound here"))?;
                let (last, parents) = path.split_last().ok_or_else(|| failure("has() needs a field"))?;
                for field in parents {
                    value = field_of(value, field)?;
                }
                match value {
                    Json::Object(map) => Ok(Cow::Owned(Json::Bool(map.contains_key(last)))),
                    other => Err(failure(format!("has() of a field of {}", kind(other)))),
                }
            }
            Fast::Literal(value) => Ok(Cow::Borrowed(value)),
            Fast::List(items) => Ok(Cow::Owned(Json::Array(
                items.iter().map(|item| item.eval(values).map(Cow::into_owned)).collect::<Result<_, _>>()?,
            ))),
            Fast::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (key, value) in entries {
                    map.insert(key.clone(), value.eval(values)?.into_owned());
                }
                Ok(Cow::Owned(Json::Object(map)))
            }
            Fast::Not(operand) => match operand.eval(values)?.as_ref() {
                Json::Bool(b) => Ok(Cow::Owned(Json::Bool(!b))),
                other => Err(failure(format!("no such overload: !{}", kind(other)))),
            },
            // CEL's logical operators are commutative over errors: `false && error` and
            // `error && false` are both false.
            Fast::And(left, right) => logical(left, right, values, false),
            Fast::Or(left, right) => logical(left, right, values, true),
            Fast::Compare(comparison, left, right) => {
                let (left, right) = (left.eval(values)?, right.eval(values)?);
                let result = match comparison {
                    Comparison::Equal => equal(&left, &right),
                    Comparison::NotEqual => !equal(&left, &right),
                    _ => {
                        let ordering = order(&left, &right).ok_or_else(|| {
                            failure(format!("no such overload: {} compared to {}", kind(&left), kind(&right)))
                        })?;
                        match comparison {
                            Comparison::Less => ordering.is_lt(),
                            Comparison::LessEqual => ordering.is_le(),
                            Comparison::Greater => ordering.is_gt(),
                            _ => ordering.is_ge(),
                        }
                    }
                };
                Ok(Cow::Owned(Json::Bool(result)))
            }
            Fast::In(needle, haystack) => {
                let (needle, haystack) = (needle.eval(values)?, haystack.eval(values)?);
                match (needle.as_ref(), haystack.as_ref()) {
                    (needle, Json::Array(items)) => Ok(Cow::Owned(Json::Bool(items.iter().any(|i| equal(needle, i))))),
                    (Json::String(key), Json::Object(map)) => Ok(Cow::Owned(Json::Bool(map.contains_key(key)))),
                    (needle, other) => Err(failure(format!("no such overload: {} in {}", kind(needle), kind(other)))),
                }
            }
            Fast::Conditional(condition, then, otherwise) => match condition.eval(values)?.as_ref() {
                Json::Bool(true) => then.eval(values),
                Json::Bool(false) => otherwise.eval(values),
                other => Err(failure(format!("no such overload: {} ? _ : _", kind(other)))),
            },
        }
    }
}

fn logical<'a>(
    left: &'a Fast,
    right: &'a Fast,
    values: &[Option<&'a Json>],
    absorbing: bool,
) -> Result<Cow<'a, Json>, Failure> {
    let as_bool = |result: Result<Cow<'a, Json>, Failure>| match result {
        Ok(value) => match value.as_ref() {
            Json::Bool(b) => Ok(*b),
            other => Err(failure(format!("no such overload: a logical operator on {}", kind(other)))),
        },
        Err(error) => Err(error),
    };
    let left = as_bool(left.eval(values));
    if left == Ok(absorbing) {
        return Ok(Cow::Owned(Json::Bool(absorbing)));
    }
    let right = as_bool(right.eval(values));
    match (left, right) {
        (_, Ok(b)) if b == absorbing => Ok(Cow::Owned(Json::Bool(absorbing))),
        (Err(error), _) | (_, Err(error)) => Err(error),
        (Ok(_), Ok(b)) => Ok(Cow::Owned(Json::Bool(b))),
    }
}

fn field_of<'a>(value: &'a Json, field: &str) -> Result<&'a Json, Failure> {
    match value {
        Json::Object(map) => {
            map.get(field).ok_or(Failure { missing: true, why: Cow::Borrowed("a field it reads is missing") })
        }
        other => Err(failure(format!("no field {field:?} in {}", kind(other)))),
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_f64() => "double",
        Json::Number(_) => "int",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

/// CEL equality: numbers by value across int, uint and double; lists and maps deeply;
/// values of different types are not equal.
pub(crate) fn equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => compare_numbers(x, y) == Some(std::cmp::Ordering::Equal),
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn order(a: &Json, b: &Json) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => compare_numbers(x, y),
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        (Json::Bool(x), Json::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}
