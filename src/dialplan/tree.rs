//! A TOML document as a tree whose every value knows its line, so the loader can point at
//! the offending value of any depth (inline tables, array elements, arrays of tables).
//!
//! toml's span protocol is the one `src/config/source.rs` speaks: a value deserialized as
//! the private "spanned" struct comes with its byte range. Tables made implicitly (by a
//! dotted key or a `[a.b.c]` header) have no span; they take their first value's line.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::line_of;

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_FIELDS: &[&str] = &[
    SPANNED_START,
    "$__serde_spanned_private_end",
    "$__serde_spanned_private_value",
];
/// toml hands dates and times as a one-field struct with this key.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// One value and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A bare TOML date or time (`2026-05-01`), as written.
    Datetime(String),
    Array(Vec<Node>),
    /// Keys in document order.
    Table(Vec<(String, Node)>),
}

impl Value {
    /// What the value is, for messages ("expected a string, found an integer").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a date or time",
            Value::Array(_) => "a list",
            Value::Table(_) => "a table",
        }
    }
}

/// Parses `text` into a tree. The error is `(line, message)`.
pub(crate) fn parse(text: &str) -> Result<Node, (usize, String)> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        (line_of(text, offset), crate::config::one_line(e.message()))
    })?;
    Ok(raw.into_node(text, 1))
}

/// A value as deserialized: its span when toml knows it.
struct Raw {
    span: Option<Range<usize>>,
    value: RawValue,
}

enum RawValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Raw>),
    Table(Vec<(String, Raw)>),
}

impl Raw {
    /// Lines from spans; a value without one takes its first child's line, else `fallback`.
    fn into_node(self, text: &str, fallback: usize) -> Node {
        let own = self.span.map(|s| line_of(text, s.start));
        let line = own.unwrap_or_else(|| self.value.first_line(text).unwrap_or(fallback));
        let value = match self.value {
            RawValue::Str(s) => Value::Str(s),
            RawValue::Int(i) => Value::Int(i),
            RawValue::Float(f) => Value::Float(f),
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Datetime(d) => Value::Datetime(d),
            RawValue::Array(items) => {
                Value::Array(items.into_iter().map(|r| r.into_node(text, line)).collect())
            }
            RawValue::Table(entries) => Value::Table(
                entries
                    .into_iter()
                    .map(|(k, r)| (k, r.into_node(text, line)))
                    .collect(),
            ),
        };
        Node { line, value }
    }
}

impl RawValue {
    fn first_line(&self, text: &str) -> Option<usize> {
        let first = match self {
            RawValue::Array(items) => items.first(),
            RawValue::Table(entries) => entries.first().map(|(_, r)| r),
            _ => None,
        }?;
        match &first.span {
            Some(s) => Some(line_of(text, s.start)),
            None => first.value.first_line(text),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(unspanned(RawValue::Table(Vec::new())));
        };
        if first == SPANNED_START {
            // start, end, value, in this order.
            let start: usize = map.next_value()?;
            let _ = map.next_key::<String>()?;
            let end: usize = map.next_value()?;
            let _ = map.next_key::<String>()?;
            let value: RawValue = map.next_value()?;
            return Ok(Raw {
                span: Some(start..end),
                value,
            });
        }
        table_from(first, map).map(unspanned)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Raw, A::Error> {
        ValueVisitor.visit_seq(seq).map(unspanned)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(unspanned(RawValue::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(unspanned(RawValue::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        ValueVisitor.visit_u64(v).map(unspanned)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(unspanned(RawValue::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(unspanned(RawValue::Str(v.to_owned())))
    }
}

fn unspanned(value: RawValue) -> Raw {
    Raw { span: None, value }
}

/// A table whose first key was already read (or a datetime, which toml sends as a map).
fn table_from<'de, A: MapAccess<'de>>(first: String, mut map: A) -> Result<RawValue, A::Error> {
    if first == DATETIME_FIELD {
        let text: String = map.next_value()?;
        return Ok(RawValue::Datetime(text));
    }
    let mut entries = vec![(first, map.next_value::<Raw>()?)];
    while let Some(k) = map.next_key::<String>()? {
        entries.push((k, map.next_value::<Raw>()?));
    }
    Ok(RawValue::Table(entries))
}

struct ValueVisitor;

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = RawValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        match map.next_key::<String>()? {
            None => Ok(RawValue::Table(Vec::new())),
            Some(first) => table_from(first, map),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        Ok(RawValue::Array(items))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        i64::try_from(v)
            .map(RawValue::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_knows_its_line() {
        let text = "[a]\nx = 1\n\n[[a.r]]\nm = \"1\"\nsteps = [\n  { dial = \"x\" },\n  { play = [\"a\",\n  \"b\"] },\n]\nd = 2026-05-01\n[b.c.d]\ne = true\n";
        let doc = parse(text).unwrap();
        let Value::Table(top) = &doc.value else {
            panic!()
        };
        let a = &top[0].1;
        let Value::Table(a_keys) = &a.value else {
            panic!()
        };
        assert_eq!(a_keys[0].1.line, 2);
        let Value::Array(routes) = &a_keys[1].1.value else {
            panic!()
        };
        let Value::Table(route) = &routes[0].value else {
            panic!()
        };
        assert_eq!(routes[0].line, 4);
        let steps = &route[1].1;
        let Value::Array(steps) = &steps.value else {
            panic!()
        };
        assert_eq!(steps[0].line, 7);
        assert_eq!(steps[1].line, 8);
        let Value::Table(play) = &steps[1].value else {
            panic!()
        };
        let Value::Array(names) = &play[0].1.value else {
            panic!()
        };
        assert_eq!(names[1].line, 9);
        assert_eq!(route[2].1.value, Value::Datetime("2026-05-01".into()));
        assert_eq!(route[2].1.line, 11);
        // An implicit table: the line of the header that made it.
        let b = &top[1].1;
        assert_eq!(b.line, 12);
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (line, msg) = parse("a = 1\nb = [\n").unwrap_err();
        assert!(line >= 2, "{line} {msg}");
    }
}
