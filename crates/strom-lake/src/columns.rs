//! Typed columns from the catalog: an event type's JSON Schema says which fields of its
//! `properties` (track, page, screen) or `traits` (identify, group) get a column and of which
//! type; a raw type's schema does the same for the record's top level (`value_<field>`).
//!
//! Mapping: `string` → Utf8 (with `format: date-time` → TIMESTAMP µs UTC), `integer` → Int64,
//! `number` → Float64, `boolean` → Boolean, enums and consts by their values' type, objects
//! with declared properties → flattened (`properties_address_city`) down to
//! `NESTING_DEPTH_MAX` levels, anything else (arrays, free objects, combinators, `$ref`) →
//! JSON text. A value that does not fit its column is null there; the whole event is always
//! in `event_json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, GenericByteBuilder, Int32Builder, Int64Builder,
    PrimitiveBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, ByteArrayType, DataType, Field as ArrowField, Schema, TimeUnit};
use serde_json::Value;
use strom_catalog::{EventKind, EventType};

use crate::event::{self, Envelope, Field, TEXT_FIELDS, TIME_FIELDS, object_members};
use crate::limits::{NESTING_DEPTH_MAX, PROPERTY_COLUMNS_MAX};

/// What a typed column holds and how a JSON value becomes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColumnKind {
    /// Strings only.
    String,
    /// Strings as they are, other values as their JSON text (where types disagree).
    Text,
    Integer,
    Number,
    Boolean,
    /// RFC 3339 strings, as microseconds since the epoch (UTC).
    Timestamp,
    /// The value's JSON text (arrays, free objects, unanalysed schemas).
    Json,
}

impl ColumnKind {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::String | ColumnKind::Text | ColumnKind::Json => DataType::Utf8,
            ColumnKind::Integer => DataType::Int64,
            ColumnKind::Number => DataType::Float64,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Timestamp => timestamp_type(),
        }
    }

    /// The kind of a column that two event types declare differently.
    fn widen(self, other: ColumnKind) -> ColumnKind {
        match (self, other) {
            (a, b) if a == b => a,
            (ColumnKind::Integer, ColumnKind::Number) | (ColumnKind::Number, ColumnKind::Integer) => ColumnKind::Number,
            _ => ColumnKind::Text,
        }
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Which object of the event a property column reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Root {
    Properties,
    Traits,
    /// The record's top level (raw types).
    Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyColumn {
    pub name: String,
    pub root: Root,
    /// Keys from the root object down to the value.
    pub path: Vec<String>,
    pub kind: ColumnKind,
}

/// The property columns an event type declares.
pub fn columns_of(event_type: &EventType) -> Vec<PropertyColumn> {
    let mut columns = Vec::new();
    let schema = &*event_type.schema;
    if event_type.kind == EventKind::Raw {
        walk(schema, Root::Value, "value", &[], 0, &mut columns);
    } else {
        for (key, root) in [("properties", Root::Properties), ("traits", Root::Traits)] {
            if let Some(object) = schema.get("properties").and_then(|p| p.get(key)) {
                walk(object, root, key, &[], 0, &mut columns);
            }
        }
    }
    columns
}

fn walk(schema: &Value, root: Root, prefix: &str, path: &[String], depth: usize, out: &mut Vec<PropertyColumn>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
    for (field, sub) in properties {
        let name = format!("{prefix}_{field}");
        let mut path = path.to_vec();
        path.push(field.clone());
        match shape(sub) {
            Shape::Object if depth + 1 < NESTING_DEPTH_MAX => walk(sub, root, &name, &path, depth + 1, out),
            Shape::Object => out.push(PropertyColumn { name, root, path, kind: ColumnKind::Json }),
            Shape::Value(kind) => out.push(PropertyColumn { name, root, path, kind }),
        }
    }
}

enum Shape {
    /// An object with declared properties: flattened.
    Object,
    Value(ColumnKind),
}

fn shape(schema: &Value) -> Shape {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let types: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    let declares_properties = schema.get("properties").is_some_and(Value::is_object);
    match types.as_slice() {
        [] => {
            if declares_properties {
                return Shape::Object;
            }
            let values: Vec<&Value> = match (schema.get("enum"), schema.get("const")) {
                (Some(Value::Array(values)), _) => values.iter().filter(|v| !v.is_null()).collect(),
                (None, Some(value)) => vec![value],
                _ => return Shape::Value(ColumnKind::Json),
            };
            let all = |test: fn(&Value) -> bool| !values.is_empty() && values.iter().all(|v| test(v));
            Shape::Value(if all(Value::is_string) {
                ColumnKind::String
            } else if all(|v| v.is_i64() || v.is_u64()) {
                ColumnKind::Integer
            } else if all(Value::is_number) {
                ColumnKind::Number
            } else if all(Value::is_boolean) {
                ColumnKind::Boolean
            } else {
                ColumnKind::Json
            })
        }
        ["string"] if schema.get("format").and_then(Value::as_str) == Some("date-time") => {
            Shape::Value(ColumnKind::Timestamp)
        }
        ["string"] => Shape::Value(ColumnKind::String),
        ["integer"] => Shape::Value(ColumnKind::Integer),
        ["number"] => Shape::Value(ColumnKind::Number),
        ["boolean"] => Shape::Value(ColumnKind::Boolean),
        ["object"] if declares_properties => Shape::Object,
        ["object"] | ["array"] => Shape::Value(ColumnKind::Json),
        many if many.iter().all(|t| *t == "integer" || *t == "number") => Shape::Value(ColumnKind::Number),
        _ => Shape::Value(ColumnKind::Text),
    }
}

/// The columns of a file holding events of several types: the union by name. Where two
/// types disagree on a column's type it is widened (integer and number → number, anything
/// else → text); where two paths flatten to one name, the first type's (in catalog order)
/// keeps the column and the other's values stay in `event_json` only.
pub fn merge<'a>(sets: impl IntoIterator<Item = &'a [PropertyColumn]>) -> Vec<PropertyColumn> {
    let mut merged: BTreeMap<&str, PropertyColumn> = BTreeMap::new();
    for column in sets.into_iter().flatten() {
        let full = merged.len() >= PROPERTY_COLUMNS_MAX;
        match merged.get_mut(column.name.as_str()) {
            Some(existing) if existing.root == column.root && existing.path == column.path => {
                existing.kind = existing.kind.widen(column.kind);
            }
            Some(_) => {}
            None if !full => {
                merged.insert(&column.name, column.clone());
            }
            None => {}
        }
    }
    merged.into_values().collect()
}

/// Columns every file has, before the property columns.
pub const LOG_COLUMNS: [&str; 4] = ["log_partition", "log_offset", "log_time", "log_key"];
/// Columns every file has, after the property columns.
pub const TAIL_COLUMNS: [&str; 3] = ["headers", "event_json", "event_bytes"];
/// Columns of the dead-letter table, after the tail.
pub const DEAD_LETTER_COLUMNS: [&str; 2] = ["dead_letter_code", "dead_letter"];
/// The header a dead letter's reason is in (strom-ingest writes it).
pub const DEAD_LETTER_HEADER: &str = "strom-dead-letter";

/// The Arrow schema of a file with these property columns.
pub fn file_schema(properties: &[PropertyColumn], dead_letters: bool) -> Schema {
    let mut fields = vec![
        ArrowField::new("log_partition", DataType::Int32, false),
        ArrowField::new("log_offset", DataType::Int64, false),
        ArrowField::new("log_time", timestamp_type(), false),
        ArrowField::new("log_key", DataType::Utf8, true),
    ];
    fields.extend(TEXT_FIELDS.iter().map(|f| ArrowField::new(event::column_name(*f), DataType::Utf8, true)));
    fields.extend(TIME_FIELDS.iter().map(|f| ArrowField::new(event::column_name(*f), timestamp_type(), true)));
    fields.extend(properties.iter().map(|c| ArrowField::new(&c.name, c.kind.data_type(), true)));
    fields.push(ArrowField::new("headers", DataType::Utf8, true));
    fields.push(ArrowField::new("event_json", DataType::Utf8, true));
    fields.push(ArrowField::new("event_bytes", DataType::Binary, true));
    if dead_letters {
        fields.extend(DEAD_LETTER_COLUMNS.iter().map(|name| ArrowField::new(*name, DataType::Utf8, true)));
    }
    Schema::new(fields)
}

/// One column being filled.
enum Builder {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: ColumnKind) -> Builder {
        match kind {
            ColumnKind::String | ColumnKind::Text | ColumnKind::Json => Builder::Utf8(StringBuilder::new()),
            ColumnKind::Integer => Builder::Int64(Int64Builder::new()),
            ColumnKind::Number => Builder::Float64(Float64Builder::new()),
            ColumnKind::Boolean => Builder::Boolean(BooleanBuilder::new()),
            ColumnKind::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn append(&mut self, kind: ColumnKind, raw: Option<&str>) {
        match self {
            Builder::Utf8(builder) => builder.append_option(raw.and_then(|raw| match kind {
                ColumnKind::String => event::string(raw),
                ColumnKind::Json => (raw != "null").then(|| raw.into()),
                _ => event::text(raw),
            })),
            Builder::Int64(builder) => builder.append_option(raw.and_then(event::integer)),
            Builder::Float64(builder) => builder.append_option(raw.and_then(event::number)),
            Builder::Boolean(builder) => builder.append_option(raw.and_then(event::boolean)),
            Builder::Timestamp(builder) => builder.append_option(raw.and_then(event::timestamp_us)),
        }
    }

    fn finish(&mut self, rows: usize) -> ArrayRef {
        match self {
            Builder::Utf8(builder) => finish_bytes(builder, rows),
            Builder::Int64(builder) => finish_primitive(builder, rows),
            Builder::Float64(builder) => finish_primitive(builder, rows),
            Builder::Boolean(builder) => {
                let array = Arc::new(builder.finish());
                *builder = BooleanBuilder::with_capacity(rows);
                array
            }
            Builder::Timestamp(builder) => finish_primitive(builder, rows),
        }
    }
}

/// The column so far; the builder starts again with room for a batch like this one (growing
/// a batch's buffers by doubling cost about 2 % of the sink's time).
fn finish_bytes<T: ByteArrayType>(builder: &mut GenericByteBuilder<T>, rows: usize) -> ArrayRef {
    let bytes = builder.values_slice().len();
    let array = Arc::new(builder.finish());
    *builder = GenericByteBuilder::with_capacity(rows, bytes + bytes / 8);
    array
}

fn finish_primitive<T: ArrowPrimitiveType>(builder: &mut PrimitiveBuilder<T>, rows: usize) -> ArrayRef {
    let array = builder.finish();
    // The type carries the time zone of timestamp columns.
    *builder = PrimitiveBuilder::with_capacity(rows).with_data_type(array.data_type().clone());
    Arc::new(array)
}

/// An object's members as raw values.
type Members<'a> = Vec<(std::borrow::Cow<'a, str>, &'a str)>;

/// One record as the row builder takes it.
pub struct RowInput<'a> {
    pub partition: i32,
    pub offset: i64,
    pub log_time_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<bytes::Bytes>)],
}

/// Rows of one file, column by column, until they are taken as a record batch.
pub struct Rows {
    schema: Arc<Schema>,
    partition: Int32Builder,
    offset: Int64Builder,
    log_time: TimestampMicrosecondBuilder,
    key: StringBuilder,
    text: Vec<StringBuilder>,
    times: Vec<TimestampMicrosecondBuilder>,
    properties: Vec<(PropertyColumn, Builder)>,
    headers: StringBuilder,
    event_json: StringBuilder,
    event_bytes: BinaryBuilder,
    dead_letter: Option<(StringBuilder, StringBuilder)>,
    len: usize,
}

impl Rows {
    pub fn new(properties: Vec<PropertyColumn>, dead_letters: bool) -> Rows {
        let schema = Arc::new(file_schema(&properties, dead_letters));
        Rows {
            schema,
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            log_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            key: StringBuilder::new(),
            text: TEXT_FIELDS.iter().map(|_| StringBuilder::new()).collect(),
            times: TIME_FIELDS.iter().map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC")).collect(),
            properties: properties.into_iter().map(|c| (c.clone(), Builder::new(c.kind))).collect(),
            headers: StringBuilder::new(),
            event_json: StringBuilder::new(),
            event_bytes: BinaryBuilder::new(),
            dead_letter: dead_letters.then(|| (StringBuilder::new(), StringBuilder::new())),
            len: 0,
        }
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one record, whose value (when UTF-8) was parsed into `envelope`.
    pub fn append(&mut self, row: &RowInput<'_>, text: Option<&str>, envelope: Option<&Envelope<'_>>) {
        self.partition.append_value(row.partition);
        self.offset.append_value(row.offset);
        self.log_time.append_value(row.log_time_ms.saturating_mul(1000));
        self.key.append_option(row.key.map(String::from_utf8_lossy));
        for (builder, field) in self.text.iter_mut().zip(TEXT_FIELDS) {
            builder.append_option(envelope.and_then(|e| e.text(field)));
        }
        for (builder, field) in self.times.iter_mut().zip(TIME_FIELDS) {
            builder.append_option(envelope.and_then(|e| e.time_us(field)));
        }
        if !self.properties.is_empty() {
            let mut roots: [Option<Members<'_>>; 3] = [None, None, None];
            let mut parsed = [false; 3];
            for (column, builder) in &mut self.properties {
                let index = column.root as usize;
                if !parsed[index] {
                    parsed[index] = true;
                    roots[index] = match column.root {
                        Root::Properties => envelope.and_then(|e| e.raw(Field::Properties)).and_then(object_members),
                        Root::Traits => envelope.and_then(|e| e.raw(Field::Traits)).and_then(object_members),
                        Root::Value => text.and_then(object_members),
                    };
                }
                let value = roots[index].as_deref().and_then(|members| lookup(members, &column.path));
                builder.append(column.kind, value);
            }
        }
        if row.headers.is_empty() {
            self.headers.append_null();
        } else {
            let object: serde_json::Map<String, Value> = row
                .headers
                .iter()
                .map(|(k, v)| {
                    let value = v.as_ref().map_or(Value::Null, |v| Value::String(String::from_utf8_lossy(v).into()));
                    (k.clone(), value)
                })
                .collect();
            self.headers.append_value(Value::Object(object).to_string());
        }
        self.event_json.append_option(text);
        match (text, row.value) {
            (None, Some(bytes)) => self.event_bytes.append_value(bytes),
            _ => self.event_bytes.append_null(),
        }
        if let Some((code, reason)) = &mut self.dead_letter {
            let header = row
                .headers
                .iter()
                .find(|(k, _)| k == DEAD_LETTER_HEADER)
                .and_then(|(_, v)| v.as_deref())
                .map(String::from_utf8_lossy);
            let parsed = header.as_deref().and_then(|h| serde_json::from_str::<Value>(h).ok());
            code.append_option(parsed.as_ref().and_then(|p| p.get("code")).and_then(Value::as_str));
            reason.append_option(header);
        }
        self.len += 1;
    }

    /// The rows so far as one batch; the builders start empty again.
    pub fn take(&mut self) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
        let rows = self.len;
        let mut columns: Vec<ArrayRef> = vec![
            finish_primitive(&mut self.partition, rows),
            finish_primitive(&mut self.offset, rows),
            finish_primitive(&mut self.log_time, rows),
            finish_bytes(&mut self.key, rows),
        ];
        columns.extend(self.text.iter_mut().map(|b| finish_bytes(b, rows)));
        columns.extend(self.times.iter_mut().map(|b| finish_primitive(b, rows)));
        columns.extend(self.properties.iter_mut().map(|(_, b)| b.finish(rows)));
        columns.push(finish_bytes(&mut self.headers, rows));
        columns.push(finish_bytes(&mut self.event_json, rows));
        columns.push(finish_bytes(&mut self.event_bytes, rows));
        if let Some((code, reason)) = &mut self.dead_letter {
            columns.push(finish_bytes(code, rows));
            columns.push(finish_bytes(reason, rows));
        }
        self.len = 0;
        arrow::record_batch::RecordBatch::try_new(self.schema.clone(), columns)
    }
}

fn lookup<'a>(members: &[(std::borrow::Cow<'_, str>, &'a str)], path: &[String]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    // The last member of a name wins, as in serde_json's own maps.
    let value = members.iter().rev().find(|(key, _)| key == first).map(|(_, value)| *value)?;
    if rest.is_empty() {
        return Some(value);
    }
    let nested = object_members(value)?;
    lookup(&nested, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(schema: serde_json::Value) -> Vec<(String, ColumnKind)> {
        let mut out = Vec::new();
        walk(&schema, Root::Properties, "properties", &[], 0, &mut out);
        out.into_iter().map(|c| (c.name, c.kind)).collect()
    }

    #[test]
    fn json_schema_types_become_column_kinds() {
        let schema = serde_json::json!({"properties": {
            "s": {"type": "string"}, "t": {"type": "string", "format": "date-time"}, "i": {"type": ["integer", "null"]},
            "n": {"type": "number"}, "b": {"type": "boolean"}, "e": {"enum": ["a", "b", null]}, "k": {"const": 3},
            "a": {"type": "array"}, "o": {"type": "object"}, "m": {"type": ["string", "integer"]},
            "in": {"type": ["integer", "number"]}, "any": {"anyOf": [{"type": "string"}]},
            "nest": {"type": "object", "properties": {"city": {"type": "string"}, "deep": {"properties": {"x": {"properties": {"y": {"properties": {"z": {"type": "integer"}}}}}}}}}
        }});
        let kinds = kinds(schema);
        let expected = [
            ("properties_a", ColumnKind::Json),
            ("properties_any", ColumnKind::Json),
            ("properties_b", ColumnKind::Boolean),
            ("properties_e", ColumnKind::String),
            ("properties_i", ColumnKind::Integer),
            ("properties_in", ColumnKind::Number),
            ("properties_k", ColumnKind::Integer),
            ("properties_m", ColumnKind::Text),
            ("properties_n", ColumnKind::Number),
            ("properties_nest_city", ColumnKind::String),
            ("properties_nest_deep_x_y", ColumnKind::Json),
            ("properties_o", ColumnKind::Json),
            ("properties_s", ColumnKind::String),
            ("properties_t", ColumnKind::Timestamp),
        ];
        let mut sorted = kinds.clone();
        sorted.sort();
        assert_eq!(sorted, expected.map(|(n, k)| (n.to_string(), k)));
    }

    #[test]
    fn merging_widens_disagreements() {
        let column = |name: &str, kind| PropertyColumn {
            name: name.into(),
            root: Root::Properties,
            path: vec![name.trim_start_matches("properties_").into()],
            kind,
        };
        let a = [column("properties_x", ColumnKind::Integer), column("properties_y", ColumnKind::String)];
        let b = [column("properties_x", ColumnKind::Number), column("properties_y", ColumnKind::Boolean)];
        let merged = merge([&a[..], &b[..]]);
        assert_eq!(merged.iter().map(|c| c.kind).collect::<Vec<_>>(), [ColumnKind::Number, ColumnKind::Text]);
    }
}
