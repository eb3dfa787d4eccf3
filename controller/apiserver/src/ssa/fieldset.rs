//! Sets of field paths as a trie, with the `fieldsV1` wire encoding.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path.
///
/// The variant order (field, key, value, index) is the sort order used for paths.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum PathElement {
    /// A struct field or a map key: `f:<name>`.
    Field(String),
    /// An associative-list item, as the canonical JSON object of its key fields: `k:<json>`.
    Key(String),
    /// A set item, as its canonical JSON: `v:<json>`.
    Value(String),
    /// A list item by position: `i:<n>` (only for items that have no usable key).
    Index(usize),
}

impl PathElement {
    /// The `fieldsV1` key for this element.
    fn encode(&self) -> String {
        let (prefix, text) = match self {
            PathElement::Field(name) => ("f:", name.as_str()),
            PathElement::Key(json) => ("k:", json.as_str()),
            PathElement::Value(json) => ("v:", json.as_str()),
            PathElement::Index(i) => return format!("i:{i}"),
        };
        let mut out = String::with_capacity(prefix.len() + text.len());
        out.push_str(prefix);
        out.push_str(text);
        out
    }

    fn decode(key: &str, at: &str) -> Result<PathElement, FieldsError> {
        let bad = |problem: String| FieldsError {
            path: format!("{at}{key}"),
            problem,
        };
        let Some((prefix, rest)) = key.split_once(':') else {
            return Err(bad("expected a prefix f:, k:, v: or i:".into()));
        };
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(v @ Value::Object(_)) => Ok(PathElement::Key(canonical_json(&v))),
                Ok(_) => Err(bad("key fields must be a JSON object".into())),
                Err(e) => Err(bad(format!("invalid JSON: {e}"))),
            },
            "v" => match serde_json::from_str::<Value>(rest) {
                Ok(v) => Ok(PathElement::Value(canonical_json(&v))),
                Err(e) => Err(bad(format!("invalid JSON: {e}"))),
            },
            "i" => rest
                .parse::<usize>()
                .map(PathElement::Index)
                .map_err(|e| bad(format!("invalid index: {e}"))),
            other => Err(bad(format!("unknown prefix {other:?}"))),
        }
    }
}

/// Renders the element the way conflict messages show paths: `.name`, `[type="Ready"]`,
/// `[="value"]`, `[3]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(fields)) => fields
                        .iter()
                        .map(|(k, v)| format!("{k}={}", display_value(v)))
                        .collect(),
                    _ => vec![json.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => match serde_json::from_str::<Value>(json) {
                Ok(v) => write!(f, "[={}]", display_value(&v)),
                Err(_) => write!(f, "[={json}]"),
            },
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A value inside a path: strings quoted Go-style, everything else as JSON.
fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        other => canonical_json(other),
    }
}

/// Quote a string the way Go's `%q` does for the characters that occur in practice.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Compact JSON with object keys sorted, so that equal values always encode equally
/// (whatever serde_json's map ordering feature says).
pub(super) fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => out.push_str(&canonical_number(n)),
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A number as its value, not its spelling: an integral float is written as the integer
/// (`-1e+09` and `-1000000000.0` are both `-1000000000`), as upstream compares numbers by value.
fn canonical_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

/// Whether two values are the same value: numbers compare by value whatever their spelling
/// (an integer equals the float of the same value), everything else structurally.
pub(super) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64() && canonical_number(x) == canonical_number(y),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(l, r)| same_value(l, r))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, l)| y.get(k).is_some_and(|r| same_value(l, r)))
        }
        _ => a == b,
    }
}

/// Why a `fieldsV1` value (or a `managedFields` list) could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FieldsError {
    /// Where in the encoded value the problem is (`fieldsV1` keys joined by `/`).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// A set of field paths, as a trie, with Kubernetes' fieldsV1 encoding.
///
/// A path is in the set when its last element is a *member* of the node reached by the
/// elements before it. A node can both be a member and have children: that is the `"."`
/// marker of fieldsV1 (the field itself is owned as well as fields below it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    /// Never holds an empty set, so `is_empty` and equality stay structural.
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// An empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Decode a `fieldsV1` value.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldsError> {
        let (set, _) = decode_node(v, "")?;
        Ok(set)
    }

    /// Encode as `fieldsV1`: `f:<name>`, `k:<json of key fields>`, `v:<json value>`, `i:<n>`,
    /// with `".":{}` where a node is owned as well as its children. Keys are in a fixed order,
    /// so equal sets always encode to identical JSON.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode())
    }

    fn encode(&self) -> Map<String, Value> {
        // The map orders its keys itself.
        let mut out = Map::new();
        for pe in self
            .members
            .iter()
            .filter(|pe| !self.children.contains_key(pe))
        {
            out.insert(pe.encode(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            let mut node = child.encode();
            if self.members.contains(pe) {
                node.insert(".".into(), Value::Object(Map::new()));
            }
            out.insert(pe.encode(), Value::Object(node));
        }
        out
    }

    /// Every path in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Add every path of `other` to this set.
    pub(super) fn union_with(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            self.children
                .entry(pe.clone())
                .or_default()
                .union_with(child);
        }
    }

    /// The paths of this set that are not in `other` (path by path: removing `.spec` does not
    /// remove `.spec.replicas`).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !rest.is_empty() {
                children.insert(pe.clone(), rest);
            }
        }
        FieldSet { members, children }
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = child.intersection(o);
                if !both.is_empty() {
                    children.insert(pe.clone(), both);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Every path of the set, human-readable, in a stable order: `.spec.replicas`,
    /// `.metadata.labels.app`, `.status.conditions[type="Ready"]`, `.metadata.finalizers[="x"]`.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths("", &mut out);
        out
    }

    fn collect_paths(&self, prefix: &str, out: &mut Vec<String>) {
        for pe in self.elements() {
            let path = format!("{prefix}{pe}");
            if self.members.contains(pe) {
                out.push(path.clone());
            }
            if let Some(child) = self.children.get(pe) {
                child.collect_paths(&path, out);
            }
        }
    }

    /// Members and children's elements, merged and sorted.
    pub(super) fn elements(&self) -> BTreeSet<&PathElement> {
        self.members.iter().chain(self.children.keys()).collect()
    }

    /// Add a path (a no-op for the empty path: the root is never a member).
    pub(super) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Add `pe` as a member, with the paths of `below` under it.
    pub(super) fn insert_with(&mut self, pe: PathElement, below: FieldSet) {
        self.put(pe, below, true);
    }

    /// Add the paths of `below` under `pe`, and `pe` itself when `member`.
    pub(super) fn put(&mut self, pe: PathElement, below: FieldSet, member: bool) {
        if !below.is_empty() {
            match self.children.entry(pe.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(below);
                }
                Entry::Occupied(mut slot) => slot.get_mut().union_with(&below),
            }
        }
        if member {
            self.members.insert(pe);
        }
    }

    /// Remove the paths of `other` in place: [`FieldSet::difference`] without copying what
    /// stays.
    pub(super) fn subtract(&mut self, other: &FieldSet) {
        for pe in &other.members {
            self.members.remove(pe);
        }
        for (pe, theirs) in &other.children {
            if let Some(mine) = self.children.get_mut(pe) {
                mine.subtract(theirs);
                if mine.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    /// Whether `pe` itself is in the set.
    pub(super) fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// The paths below `pe`, if any.
    pub(super) fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Whether `pe` or anything below it is in the set.
    pub(super) fn touches(&self, pe: &PathElement) -> bool {
        self.members.contains(pe) || self.children.contains_key(pe)
    }

    /// Keep only `pe` and what is below it.
    pub(super) fn only(&self, pe: &PathElement) -> FieldSet {
        let mut out = FieldSet::default();
        if self.members.contains(pe) {
            out.members.insert(pe.clone());
        }
        if let Some(child) = self.children.get(pe) {
            out.children.insert(pe.clone(), child.clone());
        }
        out
    }

    /// Drop `pe` and everything below it.
    pub(super) fn without(&self, pe: &PathElement) -> FieldSet {
        let mut out = self.clone();
        out.members.remove(pe);
        out.children.remove(pe);
        out
    }
}

/// Decode one trie node; the flag says whether it carried a `"."` marker.
fn decode_node(v: &Value, at: &str) -> Result<(FieldSet, bool), FieldsError> {
    decode_node_at(v, &mut at.to_string())
}

/// [`decode_node`] at `at` (`f:spec/f:ports/`), which it extends in place and leaves as it
/// found it: the path is only formatted into errors.
fn decode_node_at(v: &Value, at: &mut String) -> Result<(FieldSet, bool), FieldsError> {
    let Value::Object(obj) = v else {
        return Err(FieldsError {
            path: at.trim_end_matches('/').to_string(),
            problem: "expected a JSON object".into(),
        });
    };
    let mut set = FieldSet::default();
    let mut dot = false;
    let depth = at.len();
    for (key, child) in obj {
        if key == "." {
            dot = true;
            continue;
        }
        let pe = PathElement::decode(key, at)?;
        at.push_str(key);
        at.push('/');
        let (below, owned) = decode_node_at(child, at)?;
        at.truncate(depth);
        if owned || below.is_empty() {
            set.members.insert(pe.clone());
        }
        if !below.is_empty() {
            set.children.insert(pe, below);
        }
    }
    Ok((set, dot))
}
