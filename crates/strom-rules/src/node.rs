//! Rule documents (YAML or TOML) as one tree of values that know their line and column, so
//! that validation reports every error at the value it is about, whatever the format.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::RuleError;

/// The formats a rule may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// The format a file's extension names (`.yaml`, `.yml`, `.toml`).
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Toml => "toml",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "yaml" | "yml" => Ok(Format::Yaml),
            "toml" => Ok(Format::Toml),
            other => Err(format!("unknown rule format {other:?} (yaml or toml)")),
        }
    }
}

/// One value of the document and where it starts (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Node>),
    /// Entries in document order, with the key's own position.
    Map(Vec<(String, Node)>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

/// Parses a document into a tree; a syntax error is reported where the parser stopped.
pub(crate) fn parse(source: &str, format: Format, origin: &str) -> Result<Node, RuleError> {
    match format {
        Format::Yaml => {
            // serde-saphyr's default budget bounds depth, nodes and alias expansion.
            match serde_saphyr::from_str::<YamlNode>(source) {
                Ok(node) => Ok(node.0),
                Err(error) => {
                    let location = error.location();
                    let why = first_line(&error.to_string());
                    Err(RuleError {
                        origin: origin.to_string(),
                        line: location.map(|l| l.line()).filter(|&l| l > 0),
                        column: location.map(|l| l.column()).filter(|&c| c > 0),
                        field: "syntax".into(),
                        why,
                    })
                }
            }
        }
        Format::Toml => match toml::from_str::<TomlNode>(source) {
            Ok(node) => Ok(node.into_node(source)),
            Err(error) => {
                let (line, column) = match error.span() {
                    Some(span) => {
                        let (line, column) = line_column(source, span.start);
                        (Some(line), Some(column))
                    }
                    None => (None, None),
                };
                Err(RuleError {
                    origin: origin.to_string(),
                    line,
                    column,
                    field: "syntax".into(),
                    why: error.message().trim().to_string(),
                })
            }
        },
    }
}

/// serde-saphyr's messages may carry a rendered snippet after the first line; the location
/// is reported separately.
fn first_line(message: &str) -> String {
    let mut line = message.lines().next().unwrap_or(message).trim();
    // serde-saphyr repeats the location in the text ("error: line 3 column 7: ..."); it is
    // already in the error's own fields.
    line = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix("line ")
        && let Some((_, why)) = rest.split_once(": ")
    {
        line = why;
    }
    line.to_string()
}

/// 1-based line and column (in characters) of a byte position.
fn line_column(source: &str, byte: usize) -> (u64, u64) {
    // A position inside a character (it should not happen) counts from the whole text.
    let before = source.get(..byte.min(source.len())).unwrap_or(source);
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

/// A YAML node with its location.
struct YamlNode(Node);

impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<RawValue<YamlNode>>::deserialize(deserializer)?;
        Ok(YamlNode(Node {
            value: Value::from(spanned.value),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        }))
    }
}

impl From<YamlNode> for Node {
    fn from(node: YamlNode) -> Node {
        node.0
    }
}

/// A TOML value with its byte span; lines and columns are computed from the source after.
struct TomlNode(toml::Spanned<RawValue<TomlNode>>);

impl<'de> Deserialize<'de> for TomlNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(TomlNode(toml::Spanned::<RawValue<TomlNode>>::deserialize(deserializer)?))
    }
}

impl TomlNode {
    fn into_node(self, source: &str) -> Node {
        let (line, column) = line_column(source, self.0.span().start);
        let value = match self.0.into_inner().0 {
            TreeValue::Null => Value::Null,
            TreeValue::Bool(b) => Value::Bool(b),
            TreeValue::Int(i) => Value::Int(i),
            TreeValue::Float(f) => Value::Float(f),
            TreeValue::String(s) => Value::String(s),
            TreeValue::List(items) => Value::List(items.into_iter().map(|n| n.into_node(source)).collect()),
            TreeValue::Map(entries) => {
                // TOML spells dates as a private one-entry table; rules have no dates, so
                // they are kept as text and refused where a field wants something else.
                Value::Map(entries.into_iter().map(|(k, n)| (k, n.into_node(source))).collect())
            }
        };
        Node { value, line, column }
    }
}

/// A value whose children are `N` (a spanned node of one format).
enum TreeValue<N> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<N>),
    Map(Vec<(String, N)>),
}

struct RawValue<N>(TreeValue<N>);

impl<'de, N: Deserialize<'de>> Deserialize<'de> for RawValue<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor(std::marker::PhantomData))
    }
}

struct RawVisitor<N>(std::marker::PhantomData<N>);

impl<'de, N: Deserialize<'de>> Visitor<'de> for RawVisitor<N> {
    type Value = RawValue<N>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        RawValue::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::Int(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        match i64::try_from(value) {
            Ok(value) => Ok(RawValue(TreeValue::Int(value))),
            Err(_) => Ok(RawValue(TreeValue::Float(value as f64))),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::Float(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::String(value.to_string())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(RawValue(TreeValue::String(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<N>()? {
            items.push(item);
        }
        Ok(RawValue(TreeValue::List(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<N>()?;
            entries.push((key, value));
        }
        Ok(RawValue(TreeValue::Map(entries)))
    }
}

/// Converts YAML's children (which know their own place) into the common tree.
impl<N: Into<Node>> From<RawValue<N>> for Value {
    fn from(raw: RawValue<N>) -> Value {
        match raw.0 {
            TreeValue::Null => Value::Null,
            TreeValue::Bool(b) => Value::Bool(b),
            TreeValue::Int(i) => Value::Int(i),
            TreeValue::Float(f) => Value::Float(f),
            TreeValue::String(s) => Value::String(s),
            TreeValue::List(items) => Value::List(items.into_iter().map(Into::into).collect()),
            TreeValue::Map(entries) => Value::Map(entries.into_iter().map(|(k, n)| (k, n.into())).collect()),
        }
    }
}
