//! Where values come from: the spans of the file's keys, the schema of known keys (derived
//! from `Config::default()`), and the `RINGFORT_*` environment overrides.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::{Config, ConfigError};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "RINGFORT_";

/// `RINGFORT_*` variables that are not config keys and are therefore ignored here:
/// `RINGFORT_CONFIG` (path of the config file, read by the CLI) and `RINGFORT_LOG`
/// (a log filter the CLI may apply over `log.level`).
pub const ENV_ALLOWLIST: &[&str] = &["RINGFORT_CONFIG", "RINGFORT_LOG"];

/// The environment variable that overrides `section.key`:
/// `RINGFORT_` + uppercase `SECTION_KEY`, with `.` and `-` turned into `_`.
pub fn env_var_name(section: &str, key: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for c in section.chars().chain(['_']).chain(key.chars()) {
        name.push(match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    name
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The file's keys with their spans, in document order.
pub(crate) struct Doc {
    pub entries: Vec<(String, Entry)>,
}

/// A top-level entry (normally a section) and its span when toml knows it: implicit tables
/// made by dotted keys (`sip.realm = ...`) have none, so `toml::Spanned` cannot be used here.
pub(crate) struct Entry {
    pub span: Option<Range<usize>>,
    pub node: Node,
}

impl Entry {
    /// Where to point for this entry: its own span, else its first value's.
    pub fn offset(&self) -> usize {
        match (&self.span, &self.node) {
            (Some(span), _) => span.start,
            (None, Node::Table(keys)) => keys.first().map_or(0, |(_, v)| v.span().start),
            (None, Node::Other) => 0,
        }
    }
}

// toml's span protocol (serde_spanned 0.6, which toml 0.8 re-exports as `toml::Spanned`).
// If it ever changed, spans would be missing and the line tests would fail.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_FIELDS: &[&str] = &[
    SPANNED_START,
    "$__serde_spanned_private_end",
    "$__serde_spanned_private_value",
];

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
                let Some(first) = map.next_key::<String>()? else {
                    return Ok(Entry {
                        span: None,
                        node: Node::Table(Vec::new()),
                    });
                };
                if first == SPANNED_START {
                    // start, end, value, in this order.
                    let start: usize = map.next_value()?;
                    let _ = map.next_key::<String>()?;
                    let end: usize = map.next_value()?;
                    let _ = map.next_key::<String>()?;
                    let node: Node = map.next_value()?;
                    return Ok(Entry {
                        span: Some(start..end),
                        node,
                    });
                }
                // A table without a span: `first` is its first key.
                let mut entries = vec![(first, map.next_value::<Spanned<Value>>()?)];
                while let Some(k) = map.next_key::<String>()? {
                    entries.push((k, map.next_value::<Spanned<Value>>()?));
                }
                Ok(Entry {
                    span: None,
                    node: Node::Table(entries),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entry, A::Error> {
                Ok(Entry {
                    span: None,
                    node: NodeVisitor.visit_seq(seq)?,
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Entry, E> {
                Ok(Entry {
                    span: None,
                    node: Node::Other,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Entry, E> {
                self.visit_bool(false)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Entry, E> {
                self.visit_bool(false)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Entry, E> {
                self.visit_bool(false)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Entry, E> {
                self.visit_bool(false)
            }
        }
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, V)
    }
}

pub(crate) enum Node {
    Table(Vec<(String, Spanned<Value>)>),
    Other,
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOML document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    entries.push((k, map.next_value::<Entry>()?));
                }
                Ok(Doc { entries })
            }
        }
        d.deserialize_map(V)
    }
}

struct NodeVisitor;

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            entries.push((k, map.next_value::<Spanned<Value>>()?));
        }
        Ok(Node::Table(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Other)
    }
}

impl Doc {
    /// `section.key` whose value span contains `offset`.
    pub fn key_at(&self, offset: usize) -> Option<(String, String)> {
        let within = |r: Range<usize>| r.contains(&offset);
        for (section, node) in &self.entries {
            if let Node::Table(keys) = &node.node {
                for (k, v) in keys {
                    if within(v.span()) {
                        return Some((section.clone(), k.clone()));
                    }
                }
            }
        }
        None
    }

    /// Byte offset of the value of `section.key` if the file sets it. A TOML value starts
    /// on its key's line, so this gives the key's line too (key spans are missing for
    /// dotted keys, value spans are not).
    pub fn key_offset(&self, section: &str, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .filter(|(s, _)| s == section)
            .find_map(|(_, entry)| match &entry.node {
                Node::Table(keys) => keys
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.span().start),
                Node::Other => None,
            })
    }
}

/// What kind of value a key holds, which decides how an env value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    List,
    Other,
}

pub(crate) struct Section {
    pub name: String,
    pub keys: Vec<(String, Kind)>,
}

/// The known sections and keys, in declaration order, derived from the defaults
/// (every key serializes, so this cannot drift from the structs).
pub(crate) struct Schema {
    pub sections: Vec<Section>,
}

impl Schema {
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            // Serializing the defaults cannot fail (plain strings, numbers and lists);
            // if it ever did, the schema would be empty and the tests would say so.
            let text = toml::to_string(&Config::default()).unwrap_or_default();
            let doc: Doc = toml::from_str(&text).unwrap_or(Doc {
                entries: Vec::new(),
            });
            let sections = doc
                .entries
                .into_iter()
                .filter_map(|(name, entry)| match entry.node {
                    Node::Table(keys) => Some(Section {
                        name,
                        keys: keys
                            .into_iter()
                            .map(|(k, v)| {
                                let kind = match v.get_ref() {
                                    Value::String(_) => Kind::String,
                                    Value::Array(_) => Kind::List,
                                    _ => Kind::Other,
                                };
                                (k, kind)
                            })
                            .collect(),
                    }),
                    Node::Other => None,
                })
                .collect();
            Schema { sections }
        })
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn section_names(&self) -> String {
        self.sections
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(section, key, kind)` that `var` overrides.
    pub fn by_env_name(&self, var: &str) -> Option<(&str, &str, Kind)> {
        self.sections.iter().find_map(|s| {
            s.keys
                .iter()
                .find(|(k, _)| env_var_name(&s.name, k) == var)
                .map(|(k, kind)| (s.name.as_str(), k.as_str(), *kind))
        })
    }
}

impl Section {
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    pub fn key_names(&self) -> String {
        self.keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One `RINGFORT_SECTION_KEY=value` resolved to its key, value already read as TOML.
pub(crate) struct Override {
    pub var: String,
    pub section: String,
    pub key: String,
    pub value: Value,
}

/// Reads the `RINGFORT_*` variables of `env`; other variables are ignored.
pub(crate) fn overrides<I>(env: I) -> (Vec<Override>, Vec<ConfigError>)
where
    I: IntoIterator<Item = (String, String)>,
{
    let schema = Schema::get();
    let mut found: Vec<Override> = Vec::new();
    let mut errors = Vec::new();
    for (var, raw) in env {
        if !var.starts_with(ENV_PREFIX) || ENV_ALLOWLIST.contains(&var.as_str()) {
            continue;
        }
        let Some((section, key, kind)) = schema.by_env_name(&var) else {
            errors.push(ConfigError::Env {
                reason: unknown_var_reason(schema, &var),
                var,
            });
            continue;
        };
        let value = read_env_value(&raw, kind);
        let (section, key) = (section.to_owned(), key.to_owned());
        found.retain(|o| o.var != var);
        found.push(Override {
            var,
            section,
            key,
            value,
        });
    }
    found.sort_by(|a, b| a.var.cmp(&b.var));
    (found, errors)
}

fn unknown_var_reason(schema: &Schema, var: &str) -> String {
    let known = schema
        .sections
        .iter()
        .find(|s| var.starts_with(&env_var_name(&s.name, "")))
        .map(|s| {
            let names: Vec<String> = s
                .keys
                .iter()
                .map(|(k, _)| env_var_name(&s.name, k))
                .collect();
            format!("; [{}] takes {}", s.name, names.join(", "))
        })
        .unwrap_or_default();
    format!(
        "not a Ringfort setting (settings are RINGFORT_<SECTION>_<KEY>, e.g. RINGFORT_SIP_REALM{known}; \
         ignored non-settings: {})",
        ENV_ALLOWLIST.join(", ")
    )
}

/// TOML when the text is a TOML value of the right shape, else the raw string; a list key
/// also takes `a, b` (comma-separated) or a single bare item.
fn read_env_value(raw: &str, kind: Kind) -> Value {
    let parsed = parse_toml_value(raw);
    match (kind, parsed) {
        (Kind::String, Some(v @ Value::String(_))) => v,
        (Kind::String, _) => Value::String(raw.to_owned()),
        (Kind::List, Some(v @ Value::Array(_))) => v,
        (Kind::List, _) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        (Kind::Other, Some(v)) => v,
        (Kind::Other, None) => Value::String(raw.to_owned()),
    }
}

fn parse_toml_value(raw: &str) -> Option<Value> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct One {
        v: Value,
    }
    toml::from_str::<One>(&format!("v = {raw}"))
        .ok()
        .map(|o| o.v)
}
