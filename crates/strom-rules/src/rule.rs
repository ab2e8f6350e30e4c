//! Rule definitions: the model, and its validation from a YAML or TOML document with an
//! error at the line, column and field it is about. docs/RULES.md is the reference.

use std::collections::BTreeSet;

use crate::duration::parse_duration_ms;
use crate::error::RuleError;
use crate::expr::{Expr, Paths};
use crate::node::{self, Format, Node, Value};

/// Bytes of a rule's source.
pub const RULE_BYTES_MAX: usize = 256 * 1024;
/// Stack of the thread a rule is parsed on (see `Rule::parse`).
pub const PARSE_STACK_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of a rule name (it is also a file name).
pub const RULE_NAME_BYTES_MAX: usize = 128;
/// Input streams of one rule.
pub const RULE_STREAMS_MAX: usize = 16;
/// Steps of one pattern.
pub const PATTERN_STEPS_MAX: usize = 16;
/// Aggregates and group-by expressions of one window.
pub const AGGREGATES_MAX: usize = 64;
/// Actions of one rule.
pub const ACTIONS_MAX: usize = 16;
/// The longest window, pattern, lateness or out-of-orderness a rule may ask for (30 days):
/// state lives at least this long.
pub const DURATION_MS_MAX: i64 = 30 * 24 * 3600 * 1000;
/// Windows of one key a hopping window may overlap (size / slide).
pub const HOPS_MAX: i64 = 100;

/// Names a pattern step cannot take: they are the variables of other expressions.
const RESERVED: &[&str] = &["event", "key", "window", "group", "alert", "null", "true", "false", "in"];

/// One rule, validated, with its expressions compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// Bumped by the author when the rule's meaning changes; part of every derived event's
    /// `context.rule` and of their ids.
    pub version: u32,
    pub description: Option<String>,
    pub streams: Vec<String>,
    pub key: KeySpec,
    /// `where`: events that do not pass it are not seen by the rule at all.
    pub condition: Option<Expr>,
    pub allowed_lateness_ms: i64,
    /// Overrides the runtime's bounded out-of-orderness for this rule.
    pub out_of_orderness_ms: Option<i64>,
    /// Where late events are copied, if anywhere (they are counted either way).
    pub late_events_stream: Option<String>,
    /// Every event of a key is in the same partition (by number) of each input stream, so
    /// that on a shared log the rule can run as one task per partition, divided among
    /// processes. Always true for filters (they keep no state per key).
    pub partitioned: bool,
    pub kind: Kind,
    pub emit: Emit,
    pub actions: Vec<Action>,
    pub limits: RuleLimits,
    pub source: String,
    pub format: Format,
    pub origin: String,
}

/// What a rule's state is keyed by.
#[derive(Clone, Debug)]
pub enum KeySpec {
    /// `userId`, else `anonymousId` (the log's record key). Events with neither are skipped.
    User,
    /// One key for every event (a global window or alert).
    Global,
    /// A CEL expression over `event`, giving a string or a number.
    Expr(Expr),
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// Every event that passes the expression is emitted (transformed by `emit.properties`).
    Filter {
        condition: Expr,
    },
    Window(WindowSpec),
    Pattern(PatternSpec),
    Anomaly(AnomalySpec),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Filter { .. } => "filter",
            Kind::Window(_) => "window",
            Kind::Pattern(_) => "pattern",
            Kind::Anomaly(_) => "anomaly",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowType {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64, slide_ms: i64 },
    Session { gap_ms: i64 },
}

#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub window: WindowType,
    pub group_by: Vec<(String, Expr)>,
    pub aggregates: Vec<Aggregate>,
    /// Results that do not pass it are not emitted.
    pub having: Option<Expr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateFunction {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

impl AggregateFunction {
    fn parse(name: &str) -> Option<AggregateFunction> {
        Some(match name {
            "count" => AggregateFunction::Count,
            "count_distinct" => AggregateFunction::CountDistinct,
            "sum" => AggregateFunction::Sum,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            "avg" => AggregateFunction::Avg,
            "first" => AggregateFunction::First,
            "last" => AggregateFunction::Last,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Aggregate {
    pub name: String,
    pub function: AggregateFunction,
    /// The value aggregated; `None` only for `count()`.
    pub argument: Option<Expr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternStart {
    /// Every event matching the first step starts its own partial match.
    Each,
    /// A new first-step event replaces the key's open partial matches (its timer restarts):
    /// "the last add-to-cart was not followed by a checkout".
    Latest,
}

#[derive(Clone, Debug)]
pub struct PatternSpec {
    pub steps: Vec<Step>,
    pub within_ms: i64,
    pub start: PatternStart,
    /// For each step, the parts of its event that later expressions read (kept in state).
    pub captured: Vec<Paths>,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub condition: Expr,
    /// "not followed by": the pattern fires when no such event came within the time.
    pub absent: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Detector {
    /// Fires when the metric is above `above` or below `below`.
    Threshold { above: Option<f64>, below: Option<f64> },
    /// Exponentially weighted moving mean and variance; fires when the metric is more than
    /// `threshold` standard deviations away from the mean.
    Ewma { alpha: f64, threshold: f64 },
    /// Mean and standard deviation of the last `windows` windows; fires beyond `threshold`.
    ZScore { windows: usize, threshold: f64 },
}

#[derive(Clone, Debug)]
pub struct AnomalySpec {
    pub size_ms: i64,
    pub metric: Aggregate,
    pub detector: Detector,
    /// Windows of baseline needed before a moving detector may fire.
    pub min_windows: usize,
}

/// The derived event a firing produces.
#[derive(Clone, Debug, Default)]
pub struct Emit {
    /// Where derived events are appended; `None`: only the actions see them.
    pub stream: Option<String>,
    /// The derived event's name; a filter keeps the input's name when it is not given.
    pub event: Option<String>,
    pub properties: Option<Expr>,
}

#[derive(Clone, Debug)]
pub struct Action {
    pub webhook: String,
    pub payload: Option<Expr>,
    /// Where the destination was named, for the runtime's "unknown destination" error.
    pub field: String,
    pub line: u64,
    pub column: u64,
}

/// Per-rule overrides of the runtime's state limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleLimits {
    pub keys_max: Option<usize>,
    pub matches_per_key_max: Option<usize>,
}

impl Rule {
    /// Parses and validates a rule. `origin` names it in errors (a path, or `api:<name>`).
    ///
    /// The YAML, TOML and CEL parsers recurse once per level of nesting (up to their own
    /// limits of about 250 levels); on a 2 MiB tokio worker stack that can overflow, which
    /// aborts the process. So parsing runs on a thread of its own with `PARSE_STACK_BYTES`
    /// of stack (reserved, not committed), and a panic in a parser becomes an error.
    pub fn parse(source: &str, format: Format, origin: &str) -> Result<Rule, RuleError> {
        let failed = |why: String| RuleError {
            origin: origin.into(),
            line: None,
            column: None,
            field: "(document)".into(),
            why,
        };
        std::thread::scope(|scope| {
            let parser = std::thread::Builder::new()
                .name("strom-rule-parse".into())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(scope, || Rule::parse_here(source, format, origin));
            match parser {
                Ok(parser) => parser.join().unwrap_or_else(|_| Err(failed("the rule's parser failed".into()))),
                Err(error) => Err(failed(format!("no thread to parse the rule on: {error}"))),
            }
        })
    }

    fn parse_here(source: &str, format: Format, origin: &str) -> Result<Rule, RuleError> {
        if source.len() > RULE_BYTES_MAX {
            return Err(RuleError {
                origin: origin.into(),
                line: None,
                column: None,
                field: "(document)".into(),
                why: format!("a rule is at most {RULE_BYTES_MAX} bytes, this one has {}", source.len()),
            });
        }
        let root = node::parse(source, format, origin)?;
        let mut rule = Builder { origin }.rule(&root)?;
        rule.source = source.to_string();
        rule.format = format;
        Ok(rule)
    }

    /// Checks that every action names a known webhook destination.
    pub fn check_destinations(&self, destinations: &BTreeSet<String>) -> Result<(), RuleError> {
        for action in &self.actions {
            if !destinations.contains(&action.webhook) {
                let known = if destinations.is_empty() {
                    "none are configured".to_string()
                } else {
                    format!("known: {}", destinations.iter().cloned().collect::<Vec<_>>().join(", "))
                };
                return Err(RuleError {
                    origin: self.origin.clone(),
                    line: Some(action.line).filter(|&l| l > 0),
                    column: Some(action.column).filter(|&c| c > 0),
                    field: action.field.clone(),
                    why: format!("unknown webhook destination {:?} ({known})", action.webhook),
                });
            }
        }
        Ok(())
    }

    /// Streams the rule writes to.
    pub fn output_streams(&self) -> Vec<String> {
        let mut streams: Vec<String> = self.emit.stream.iter().chain(&self.late_events_stream).cloned().collect();
        if !self.actions.is_empty() {
            streams.push(crate::DELIVERIES_STREAM.to_string());
        }
        streams.sort();
        streams.dedup();
        streams
    }
}

/// Checks a rule name: it names the rule's file, a metric label and part of every id.
pub fn validate_rule_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > RULE_NAME_BYTES_MAX {
        Err("it is longer than 128 bytes")
    } else if name.starts_with('.') {
        Err("it starts with '.'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        Err("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        Ok(())
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Builder<'a> {
    origin: &'a str,
}

/// The entries of one map node, with the fields read so far, so that unknown ones are
/// reported.
struct Fields<'n> {
    node: &'n Node,
    path: String,
    entries: &'n [(String, Node)],
    read: Vec<bool>,
}

impl<'n> Fields<'n> {
    fn get(&mut self, name: &str) -> Option<&'n Node> {
        let index = self.entries.iter().position(|(k, _)| k == name)?;
        self.read[index] = true;
        Some(&self.entries[index].1)
    }

    fn child(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }
}

impl Builder<'_> {
    fn error(&self, node: &Node, field: &str, why: impl Into<String>) -> RuleError {
        RuleError {
            origin: self.origin.to_string(),
            line: Some(node.line).filter(|&l| l > 0),
            column: Some(node.column).filter(|&c| c > 0),
            field: if field.is_empty() { "(document)".into() } else { field.to_string() },
            why: why.into(),
        }
    }

    fn fields<'n>(&self, node: &'n Node, path: &str) -> Result<Fields<'n>, RuleError> {
        match &node.value {
            Value::Map(entries) => {
                for (index, (name, value)) in entries.iter().enumerate() {
                    if entries[..index].iter().any(|(k, _)| k == name) {
                        let field = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                        return Err(self.error(value, &field, "given twice"));
                    }
                }
                Ok(Fields { node, path: path.to_string(), entries, read: vec![false; entries.len()] })
            }
            other => Err(self.error(node, path, format!("must be a map, not {}", other.kind()))),
        }
    }

    /// Refuses the fields nobody read, naming the ones that are allowed.
    fn finish(&self, fields: Fields<'_>, allowed: &[&str]) -> Result<(), RuleError> {
        if let Some(index) = fields.read.iter().position(|read| !read) {
            let (name, value) = &fields.entries[index];
            return Err(self.error(
                value,
                &fields.child(name),
                format!("unknown field (allowed here: {})", allowed.join(", ")),
            ));
        }
        Ok(())
    }

    fn string(&self, node: &Node, field: &str) -> Result<String, RuleError> {
        match &node.value {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.error(node, field, format!("must be a string, not {}", other.kind()))),
        }
    }

    fn required<'n>(&self, fields: &mut Fields<'n>, name: &str) -> Result<&'n Node, RuleError> {
        let path = fields.child(name);
        fields.get(name).ok_or_else(|| self.error(fields.node, &path, "is required"))
    }

    fn duration(&self, node: &Node, field: &str) -> Result<i64, RuleError> {
        let text = match &node.value {
            Value::String(s) => s.clone(),
            Value::Int(0) => "0s".to_string(),
            other => {
                return Err(self.error(
                    node,
                    field,
                    format!("must be a duration like \"30s\", \"5m\", \"1h\", not {}", other.kind()),
                ));
            }
        };
        let ms = parse_duration_ms(&text).map_err(|why| self.error(node, field, why))?;
        if ms > DURATION_MS_MAX {
            return Err(self.error(node, field, "must be at most 30 days"));
        }
        Ok(ms)
    }

    fn positive_duration(&self, node: &Node, field: &str) -> Result<i64, RuleError> {
        let ms = self.duration(node, field)?;
        if ms == 0 {
            return Err(self.error(node, field, "must be longer than zero"));
        }
        Ok(ms)
    }

    fn number(&self, node: &Node, field: &str) -> Result<f64, RuleError> {
        match node.value {
            Value::Int(i) => Ok(i as f64),
            Value::Float(f) if f.is_finite() => Ok(f),
            ref other => Err(self.error(node, field, format!("must be a number, not {}", other.kind()))),
        }
    }

    fn count(&self, node: &Node, field: &str, min: i64, max: i64) -> Result<usize, RuleError> {
        match node.value {
            Value::Int(i) if (min..=max).contains(&i) => Ok(i as usize),
            Value::Int(i) => Err(self.error(node, field, format!("must be {min} to {max}, not {i}"))),
            ref other => Err(self.error(node, field, format!("must be an integer, not {}", other.kind()))),
        }
    }

    fn stream_name(&self, node: &Node, field: &str) -> Result<String, RuleError> {
        let name = self.string(node, field)?;
        strom_log::validate_stream_name(&name).map_err(|error| self.error(node, field, error.to_string()))?;
        Ok(name)
    }

    fn expr(&self, node: &Node, field: &str, variables: &[&str]) -> Result<Expr, RuleError> {
        let text = self.string(node, field)?;
        Expr::compile(&text, field, node.line, node.column, variables, self.origin)
    }

    fn rule(&self, root: &Node) -> Result<Rule, RuleError> {
        const ALLOWED: &[&str] = &[
            "name",
            "version",
            "description",
            "streams",
            "key",
            "where",
            "allowed_lateness",
            "out_of_orderness",
            "late_events_stream",
            "partitioned",
            "filter",
            "window",
            "pattern",
            "anomaly",
            "emit",
            "actions",
            "limits",
        ];
        let mut fields = self.fields(root, "")?;
        let name_node = self.required(&mut fields, "name")?;
        let name = self.string(name_node, "name")?;
        validate_rule_name(&name).map_err(|why| self.error(name_node, "name", why))?;
        let version = match fields.get("version") {
            Some(node) => self.count(node, "version", 1, i64::from(u32::MAX))? as u32,
            None => 1,
        };
        let description = fields.get("description").map(|n| self.string(n, "description")).transpose()?;
        let streams_node = self.required(&mut fields, "streams")?;
        let streams = match &streams_node.value {
            Value::List(items) if !items.is_empty() && items.len() <= RULE_STREAMS_MAX => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.stream_name(item, &format!("streams[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Value::List(_) => {
                return Err(self.error(streams_node, "streams", format!("lists 1 to {RULE_STREAMS_MAX} streams")));
            }
            Value::String(_) => vec![self.stream_name(streams_node, "streams")?],
            other => {
                return Err(self.error(
                    streams_node,
                    "streams",
                    format!("must be a list of streams, not {}", other.kind()),
                ));
            }
        };
        if let Some(duplicate) = streams.iter().enumerate().find(|(i, s)| streams[..*i].contains(s)) {
            return Err(self.error(streams_node, "streams", format!("lists {:?} twice", duplicate.1)));
        }
        let key = match fields.get("key") {
            None => KeySpec::User,
            Some(node) => match self.string(node, "key")?.as_str() {
                "user" => KeySpec::User,
                "none" => KeySpec::Global,
                _ => KeySpec::Expr(self.expr(node, "key", &["event"])?),
            },
        };
        let condition = fields.get("where").map(|n| self.expr(n, "where", &["event"])).transpose()?;
        let allowed_lateness_ms =
            fields.get("allowed_lateness").map(|n| self.duration(n, "allowed_lateness")).transpose()?.unwrap_or(0);
        let out_of_orderness_ms =
            fields.get("out_of_orderness").map(|n| self.duration(n, "out_of_orderness")).transpose()?;
        let late_events_stream =
            fields.get("late_events_stream").map(|n| self.stream_name(n, "late_events_stream")).transpose()?;

        let kinds: Vec<(&str, &Node)> = ["filter", "window", "pattern", "anomaly"]
            .into_iter()
            .filter_map(|k| fields.get(k).map(|n| (k, n)))
            .collect();
        let (kind_name, kind_node) = match kinds.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.error(root, "(rule)", "needs one of filter, window, pattern, anomaly"));
            }
            [_, (second, node), ..] => {
                return Err(self.error(node, second, "a rule does one thing: filter, window, pattern or anomaly"));
            }
        };
        let kind = match kind_name {
            "filter" => Kind::Filter { condition: self.expr(kind_node, "filter", &["event"])? },
            "window" => Kind::Window(self.window(kind_node)?),
            "pattern" => Kind::Pattern(self.pattern(kind_node)?),
            _ => Kind::Anomaly(self.anomaly(kind_node)?),
        };
        let partitioned = match fields.get("partitioned") {
            None => matches!(kind, Kind::Filter { .. }),
            Some(node @ Node { value: Value::Bool(asked), .. }) => {
                if *asked && matches!(key, KeySpec::Global) && !matches!(kind, Kind::Filter { .. }) {
                    return Err(self.error(node, "partitioned", "a rule with key: none has one key, in no partition"));
                }
                *asked || matches!(kind, Kind::Filter { .. })
            }
            Some(node) => {
                return Err(self.error(
                    node,
                    "partitioned",
                    format!("must be true or false, not {}", node.value.kind()),
                ));
            }
        };
        let emit_variables = emit_variables(&kind);
        let emit_variables: Vec<&str> = emit_variables.iter().map(String::as_str).collect();
        let emit = match fields.get("emit") {
            None => Emit::default(),
            Some(node) => self.emit(node, &kind, &emit_variables)?,
        };
        let actions = match fields.get("actions") {
            None => Vec::new(),
            Some(node) => self.actions(node)?,
        };
        if emit.stream.is_none() && actions.is_empty() {
            return Err(self.error(root, "emit", "a rule needs emit.stream, actions, or both"));
        }
        let limits = match fields.get("limits") {
            None => RuleLimits::default(),
            Some(node) => {
                let mut limit_fields = self.fields(node, "limits")?;
                let keys_max = limit_fields
                    .get("keys_max")
                    .map(|n| self.count(n, "limits.keys_max", 1, 100_000_000))
                    .transpose()?;
                let matches_per_key_max = limit_fields
                    .get("matches_per_key_max")
                    .map(|n| self.count(n, "limits.matches_per_key_max", 1, 1_000_000))
                    .transpose()?;
                self.finish(limit_fields, &["keys_max", "matches_per_key_max"])?;
                RuleLimits { keys_max, matches_per_key_max }
            }
        };
        self.finish(fields, ALLOWED)?;
        let mut kind = kind;
        if let Kind::Pattern(pattern) = &mut kind {
            pattern.captured = captured_paths(pattern, &emit);
        }
        Ok(Rule {
            name,
            version,
            description,
            streams,
            key,
            condition,
            allowed_lateness_ms,
            out_of_orderness_ms,
            late_events_stream,
            partitioned,
            kind,
            emit,
            actions,
            limits,
            source: String::new(),
            format: Format::Yaml,
            origin: self.origin.to_string(),
        })
    }

    fn window(&self, node: &Node) -> Result<WindowSpec, RuleError> {
        let mut fields = self.fields(node, "window")?;
        let type_node = self.required(&mut fields, "type")?;
        let window = match self.string(type_node, "window.type")?.as_str() {
            "tumbling" => {
                let size_ms = self.positive_duration(self.required(&mut fields, "size")?, "window.size")?;
                WindowType::Tumbling { size_ms }
            }
            "hopping" => {
                let size_ms = self.positive_duration(self.required(&mut fields, "size")?, "window.size")?;
                let slide_node = self.required(&mut fields, "slide")?;
                let slide_ms = self.positive_duration(slide_node, "window.slide")?;
                if slide_ms > size_ms {
                    return Err(self.error(slide_node, "window.slide", "must not be longer than window.size"));
                }
                if size_ms / slide_ms > HOPS_MAX {
                    return Err(self.error(
                        slide_node,
                        "window.slide",
                        format!("an event would fall into more than {HOPS_MAX} windows (size / slide)"),
                    ));
                }
                WindowType::Hopping { size_ms, slide_ms }
            }
            "session" => {
                let gap_ms = self.positive_duration(self.required(&mut fields, "gap")?, "window.gap")?;
                WindowType::Session { gap_ms }
            }
            other => {
                return Err(self.error(
                    type_node,
                    "window.type",
                    format!("unknown window type {other:?} (tumbling, hopping or session)"),
                ));
            }
        };
        let mut group_by = Vec::new();
        if let Some(node) = fields.get("group_by") {
            let mut group_fields = self.fields(node, "window.group_by")?;
            for (name, value) in group_fields.entries {
                let field = format!("window.group_by.{name}");
                if !is_identifier(name) {
                    return Err(self.error(value, &field, "a group name is an identifier (letters, digits, _)"));
                }
                group_by.push((name.clone(), self.expr(value, &field, &["event", "key"])?));
            }
            group_fields.read.iter_mut().for_each(|r| *r = true);
            if group_by.len() > AGGREGATES_MAX {
                return Err(self.error(node, "window.group_by", format!("at most {AGGREGATES_MAX} entries")));
            }
        }
        let aggregates_node = self.required(&mut fields, "aggregates")?;
        let aggregates = self.aggregates(aggregates_node, &group_by)?;
        let spec_vars = window_result_variables(&aggregates);
        let spec_vars: Vec<&str> = spec_vars.iter().map(String::as_str).collect();
        let having = fields.get("having").map(|n| self.expr(n, "window.having", &spec_vars)).transpose()?;
        let allowed: &[&str] = match window {
            WindowType::Tumbling { .. } => &["type", "size", "group_by", "aggregates", "having"],
            WindowType::Hopping { .. } => &["type", "size", "slide", "group_by", "aggregates", "having"],
            WindowType::Session { .. } => &["type", "gap", "group_by", "aggregates", "having"],
        };
        self.finish(fields, allowed)?;
        Ok(WindowSpec { window, group_by, aggregates, having })
    }

    fn aggregates(&self, node: &Node, group_by: &[(String, Expr)]) -> Result<Vec<Aggregate>, RuleError> {
        let mut fields = self.fields(node, "window.aggregates")?;
        if fields.entries.is_empty() || fields.entries.len() > AGGREGATES_MAX {
            return Err(self.error(node, "window.aggregates", format!("lists 1 to {AGGREGATES_MAX} aggregates")));
        }
        let mut aggregates = Vec::new();
        for (name, value) in fields.entries {
            let field = format!("window.aggregates.{name}");
            if !is_identifier(name) || RESERVED.contains(&name.as_str()) {
                return Err(self.error(
                    value,
                    &field,
                    "an aggregate's name is an identifier other than event, key, window, group",
                ));
            }
            if group_by.iter().any(|(g, _)| g == name) {
                return Err(self.error(value, &field, "is also a group_by name"));
            }
            aggregates.push(self.aggregate(name, value, &field)?);
        }
        fields.read.iter_mut().for_each(|r| *r = true);
        Ok(aggregates)
    }

    /// `count()`, `sum(event.properties.total)`, ...: the function is ours, the argument CEL.
    fn aggregate(&self, name: &str, node: &Node, field: &str) -> Result<Aggregate, RuleError> {
        let text = self.string(node, field)?;
        let text = text.trim();
        let usage = "is an aggregate: count(), count_distinct(x), sum(x), min(x), max(x), avg(x), first(x), last(x)";
        let (function_name, argument) = match (text.find('('), text.ends_with(')')) {
            (Some(open), true) => (text[..open].trim(), text[open + 1..text.len() - 1].trim()),
            _ => return Err(self.error(node, field, usage)),
        };
        let function = AggregateFunction::parse(function_name).ok_or_else(|| self.error(node, field, usage))?;
        let argument = match (function, argument.is_empty()) {
            (AggregateFunction::Count, true) => None,
            (AggregateFunction::Count, false) => {
                return Err(self.error(node, field, "count() takes no argument (filter events with `where`)"));
            }
            (_, true) => return Err(self.error(node, field, format!("{function_name}() needs an argument"))),
            (_, false) => Some(Expr::compile(argument, field, node.line, node.column, &["event", "key"], self.origin)?),
        };
        Ok(Aggregate { name: name.to_string(), function, argument })
    }

    fn pattern(&self, node: &Node) -> Result<PatternSpec, RuleError> {
        let mut fields = self.fields(node, "pattern")?;
        let within_ms = self.positive_duration(self.required(&mut fields, "within")?, "pattern.within")?;
        let start = match fields.get("start") {
            None => PatternStart::Each,
            Some(n) => match self.string(n, "pattern.start")?.as_str() {
                "each" => PatternStart::Each,
                "latest" => PatternStart::Latest,
                other => return Err(self.error(n, "pattern.start", format!("{other:?} is not each or latest"))),
            },
        };
        let steps_node = self.required(&mut fields, "steps")?;
        let Value::List(items) = &steps_node.value else {
            return Err(self.error(
                steps_node,
                "pattern.steps",
                format!("must be a list, not {}", steps_node.value.kind()),
            ));
        };
        if items.len() < 2 || items.len() > PATTERN_STEPS_MAX {
            return Err(self.error(
                steps_node,
                "pattern.steps",
                format!("a pattern has 2 to {PATTERN_STEPS_MAX} steps"),
            ));
        }
        let mut steps: Vec<Step> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("pattern.steps[{index}]");
            let mut step_fields = self.fields(item, &path)?;
            let name_node = self.required(&mut step_fields, "name")?;
            let name = self.string(name_node, &format!("{path}.name"))?;
            if !is_identifier(&name) || RESERVED.contains(&name.as_str()) {
                return Err(self.error(
                    name_node,
                    &format!("{path}.name"),
                    "a step's name is an identifier (letters, digits, _) other than event, key, window, group, alert",
                ));
            }
            if steps.iter().any(|s| s.name == name) {
                return Err(self.error(name_node, &format!("{path}.name"), format!("step {name:?} is named twice")));
            }
            let absent = match step_fields.get("absent") {
                None => false,
                Some(Node { value: Value::Bool(b), .. }) => *b,
                Some(n) => return Err(self.error(n, &format!("{path}.absent"), "must be true or false")),
            };
            if absent && index == 0 {
                return Err(self.error(item, &format!("{path}.absent"), "the first step cannot be absent"));
            }
            if absent && index + 1 != items.len() {
                return Err(self.error(item, &format!("{path}.absent"), "only the last step can be absent"));
            }
            // A step sees the event at hand and the events of the steps before it.
            let mut variables: Vec<&str> = vec!["event", "key"];
            variables.extend(steps.iter().map(|s| s.name.as_str()));
            let match_node = self.required(&mut step_fields, "match")?;
            let condition = self.expr(match_node, &format!("{path}.match"), &variables)?;
            self.finish(step_fields, &["name", "match", "absent"])?;
            steps.push(Step { name, condition, absent });
        }
        self.finish(fields, &["within", "start", "steps"])?;
        Ok(PatternSpec { steps, within_ms, start, captured: Vec::new() })
    }

    fn anomaly(&self, node: &Node) -> Result<AnomalySpec, RuleError> {
        let mut fields = self.fields(node, "anomaly")?;
        let size_ms = self.positive_duration(self.required(&mut fields, "size")?, "anomaly.size")?;
        let metric = self.aggregate("value", self.required(&mut fields, "metric")?, "anomaly.metric")?;
        let detector_node = self.required(&mut fields, "detector")?;
        let threshold = |fields: &mut Fields<'_>| -> Result<f64, RuleError> {
            let n = self.required(fields, "threshold")?;
            let threshold = self.number(n, "anomaly.threshold")?;
            if threshold <= 0.0 {
                return Err(self.error(n, "anomaly.threshold", "must be positive"));
            }
            Ok(threshold)
        };
        let (detector, allowed): (Detector, &[&str]) = match self.string(detector_node, "anomaly.detector")?.as_str() {
            "threshold" => {
                let above = fields.get("above").map(|n| self.number(n, "anomaly.above")).transpose()?;
                let below = fields.get("below").map(|n| self.number(n, "anomaly.below")).transpose()?;
                if above.is_none() && below.is_none() {
                    return Err(self.error(
                        detector_node,
                        "anomaly.above",
                        "a threshold detector needs above, below or both",
                    ));
                }
                (Detector::Threshold { above, below }, &["size", "metric", "detector", "above", "below"])
            }
            "ewma" => {
                let alpha = match fields.get("alpha") {
                    None => 0.3,
                    Some(n) => {
                        let alpha = self.number(n, "anomaly.alpha")?;
                        if !(alpha > 0.0 && alpha <= 1.0) {
                            return Err(self.error(n, "anomaly.alpha", "must be in (0, 1]"));
                        }
                        alpha
                    }
                };
                let threshold = threshold(&mut fields)?;
                (
                    Detector::Ewma { alpha, threshold },
                    &["size", "metric", "detector", "alpha", "threshold", "min_windows"],
                )
            }
            "zscore" => {
                let windows = match fields.get("windows") {
                    None => 20,
                    Some(n) => self.count(n, "anomaly.windows", 2, 10_000)?,
                };
                let threshold = threshold(&mut fields)?;
                (
                    Detector::ZScore { windows, threshold },
                    &["size", "metric", "detector", "windows", "threshold", "min_windows"],
                )
            }
            other => {
                return Err(self.error(
                    detector_node,
                    "anomaly.detector",
                    format!("unknown detector {other:?} (threshold, ewma or zscore)"),
                ));
            }
        };
        let min_windows = match fields.get("min_windows") {
            None => match detector {
                Detector::ZScore { windows, .. } => windows.min(5),
                _ => 5,
            },
            Some(n) => self.count(n, "anomaly.min_windows", 1, 10_000)?,
        };
        self.finish(fields, allowed)?;
        Ok(AnomalySpec { size_ms, metric, detector, min_windows })
    }

    fn emit(&self, node: &Node, kind: &Kind, variables: &[&str]) -> Result<Emit, RuleError> {
        let mut fields = self.fields(node, "emit")?;
        let stream = fields.get("stream").map(|n| self.stream_name(n, "emit.stream")).transpose()?;
        let event = match fields.get("event") {
            Some(n) => {
                let name = self.string(n, "emit.event")?;
                if name.is_empty() || name.len() > 256 {
                    return Err(self.error(n, "emit.event", "an event name has 1 to 256 bytes"));
                }
                Some(name)
            }
            None if matches!(kind, Kind::Filter { .. }) => None,
            None => return Err(self.error(node, "emit.event", "is required (the derived event's name)")),
        };
        let properties = fields.get("properties").map(|n| self.expr(n, "emit.properties", variables)).transpose()?;
        self.finish(fields, &["stream", "event", "properties"])?;
        Ok(Emit { stream, event, properties })
    }

    fn actions(&self, node: &Node) -> Result<Vec<Action>, RuleError> {
        let Value::List(items) = &node.value else {
            return Err(self.error(node, "actions", format!("must be a list, not {}", node.value.kind())));
        };
        if items.len() > ACTIONS_MAX {
            return Err(self.error(node, "actions", format!("at most {ACTIONS_MAX} actions")));
        }
        let mut actions = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("actions[{index}]");
            let mut fields = self.fields(item, &path)?;
            let webhook_node = self.required(&mut fields, "webhook")?;
            let webhook = self.string(webhook_node, &format!("{path}.webhook"))?;
            let payload = fields
                .get("payload")
                .map(|n| self.expr(n, &format!("{path}.payload"), &["event", "key"]))
                .transpose()?;
            self.finish(fields, &["webhook", "payload"])?;
            actions.push(Action {
                webhook,
                payload,
                field: format!("{path}.webhook"),
                line: webhook_node.line,
                column: webhook_node.column,
            });
        }
        Ok(actions)
    }
}

/// The variables of `emit.properties`, by kind.
fn emit_variables(kind: &Kind) -> Vec<String> {
    match kind {
        Kind::Filter { .. } => vec!["event".into(), "key".into()],
        Kind::Window(spec) => window_result_variables(&spec.aggregates),
        Kind::Pattern(spec) => {
            let mut variables = vec!["key".to_string()];
            variables.extend(spec.steps.iter().filter(|s| !s.absent).map(|s| s.name.clone()));
            variables
        }
        Kind::Anomaly(_) => vec!["key".into(), "alert".into()],
    }
}

fn window_result_variables(aggregates: &[Aggregate]) -> Vec<String> {
    let mut variables = vec!["key".to_string(), "window".to_string(), "group".to_string()];
    variables.extend(aggregates.iter().map(|a| a.name.clone()));
    variables
}

/// For each step, what later steps and `emit.properties` read of its event (the default
/// properties read each matched step's `properties`).
fn captured_paths(pattern: &PatternSpec, emit: &Emit) -> Vec<Paths> {
    pattern
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let mut paths = Paths::default();
            if step.absent {
                return paths;
            }
            for later in &pattern.steps[index + 1..] {
                later.condition.paths_of(&step.name, &mut paths);
            }
            match &emit.properties {
                Some(properties) => properties.paths_of(&step.name, &mut paths),
                None => {
                    paths.children.insert("properties".into(), Paths::whole());
                }
            }
            paths
        })
        .collect()
}
