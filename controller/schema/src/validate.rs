//! Checking a value against a schema node.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::{ErrorType, FieldError};
use crate::{ListType, Schema, Type};

/// Path of a child field.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Path of a list element.
pub(crate) fn element(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// One step down from a node: how [`descend`] extends its path.
#[derive(Clone, Copy)]
pub(crate) enum Step<'a> {
    /// A declared field: `path.name` ([`child`]).
    Field(&'a str),
    /// A list element: `path[i]` ([`element`]).
    Element(usize),
    /// An entry of a map with additional properties: `path[key]` (`key` at the root).
    Entry(&'a str),
}

/// Runs `visit` with `path` extended by `step`, then takes the step back off: a walk keeps
/// one path buffer instead of formatting a path for every node it visits.
pub(crate) fn descend<R>(
    path: &mut String,
    step: Step<'_>,
    visit: impl FnOnce(&mut String) -> R,
) -> R {
    use std::fmt::Write;
    let len = path.len();
    match step {
        Step::Field(name) if len == 0 => path.push_str(name),
        Step::Field(name) => {
            path.push('.');
            path.push_str(name);
        }
        Step::Element(index) => {
            let _ = write!(path, "[{index}]");
        }
        Step::Entry(key) if len == 0 => path.push_str(key),
        Step::Entry(key) => {
            path.push('[');
            path.push_str(key);
            path.push(']');
        }
    }
    let result = visit(path);
    path.truncate(len);
    result
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fits(ty: Type, value: &Value) -> bool {
    match ty {
        Type::Object => value.is_object(),
        Type::Array => value.is_array(),
        Type::String => value.is_string(),
        Type::Integer => value.is_i64() || value.is_u64(),
        Type::Number => value.is_number(),
        Type::Boolean => value.is_boolean(),
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

/// Validate `value` at `path` against `s`, pushing every problem.
pub(crate) fn node(
    s: &Schema,
    value: &Value,
    path: &mut String,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    if value.is_null() {
        if !s.nullable && !s.preserve_unknown_fields {
            let expected = s.ty.map(Type::as_str).unwrap_or("a value");
            errors.push(FieldError::new(
                path.as_str(),
                ErrorType::Invalid,
                Some(value),
                format!(
                    "{} in body must be of type {expected}: \"null\"",
                    shown(path)
                ),
            ));
        }
        return;
    }
    if s.int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(FieldError::new(
                path.as_str(),
                ErrorType::Invalid,
                Some(value),
                format!(
                    "{} in body must be of type integer or string: \"{}\"",
                    shown(path),
                    type_name(value)
                ),
            ));
            return;
        }
    } else if let Some(ty) = s.ty
        && !fits(ty, value)
    {
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::Invalid,
            Some(value),
            format!(
                "{} in body must be of type {}: \"{}\"",
                shown(path),
                ty.as_str(),
                type_name(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = &s.enum_values
        && !allowed.contains(value)
    {
        let list = allowed
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::NotSupported,
            Some(value),
            format!("supported values: {list}"),
        ));
    }
    match value {
        Value::Number(n) => number(s, n.as_f64().unwrap_or_default(), value, path, errors),
        Value::String(text) => string(s, text, value, path, errors),
        Value::Array(items) => array(s, items, path, errors),
        Value::Object(map) => object(s, map, path, root, errors),
        _ => {}
    }
}

fn number(s: &Schema, n: f64, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut invalid = |detail: String| {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            Some(value),
            detail,
        ))
    };
    if let Some(min) = s.minimum {
        if s.exclusive_minimum && n <= min {
            invalid(format!("{path} in body should be greater than {min}"));
        } else if n < min {
            invalid(format!(
                "{path} in body should be greater than or equal to {min}"
            ));
        }
    }
    if let Some(max) = s.maximum {
        if s.exclusive_maximum && n >= max {
            invalid(format!("{path} in body should be less than {max}"));
        } else if n > max {
            invalid(format!(
                "{path} in body should be less than or equal to {max}"
            ));
        }
    }
    if let Some(m) = s.multiple_of
        && (n / m).fract().abs() > 1e-9
    {
        invalid(format!("{path} in body should be a multiple of {m}"));
    }
    match s.format.as_deref() {
        Some("int32") if n < i32::MIN as f64 || n > i32::MAX as f64 => {
            invalid(format!("{path} in body must be of format int32"));
        }
        Some("float") if n.is_finite() && n.abs() > f32::MAX as f64 => {
            invalid(format!("{path} in body must be of format float"));
        }
        _ => {}
    }
}

fn string(s: &Schema, text: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let length = text.chars().count();
    if let Some(max) = s.max_length.filter(|max| length > *max) {
        errors.push(FieldError::new(
            path,
            ErrorType::TooLong,
            None,
            format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = s.min_length.filter(|min| length < *min) {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            Some(value),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some((source, re)) = &s.pattern
        && !re.is_match(text)
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            Some(value),
            format!("{path} in body should match '{source}'"),
        ));
    }
    if s.int_or_string {
        return;
    }
    let bad_format = match s.format.as_deref() {
        Some("date-time") => text.parse::<jiff::Timestamp>().is_err(),
        Some("date") => text.parse::<jiff::civil::Date>().is_err(),
        Some("byte") => !is_base64(text),
        Some("uuid") => !is_uuid(text),
        _ => false,
    };
    if bad_format {
        let format = s.format.as_deref().unwrap_or_default();
        // Bytes are what Secrets hold: their value is never repeated in an answer, which
        // the audit log keeps.
        let shown = (format != "byte").then_some(value);
        let detail = match shown {
            Some(value) => format!("{path} in body must be of type {format}: {value}"),
            None => format!("{path} in body must be of type {format}"),
        };
        errors.push(FieldError::new(path, ErrorType::Invalid, shown, detail));
    }
}

fn is_base64(text: &str) -> bool {
    let bytes = text.trim_end_matches('=').as_bytes();
    text.len().is_multiple_of(4)
        && text.len() - bytes.len() <= 2
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn array(s: &Schema, items: &[Value], path: &mut String, errors: &mut Vec<FieldError>) {
    if let Some(max) = s.max_items.filter(|max| items.len() > *max) {
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::TooMany,
            Some(&Value::from(items.len())),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = s.min_items.filter(|min| items.len() < *min) {
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::Invalid,
            None,
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(item_schema) = &s.items {
        for (i, item) in items.iter().enumerate() {
            descend(path, Step::Element(i), |path| {
                node(item_schema, item, path, false, errors)
            });
        }
    }
    match s.list_type {
        ListType::Set => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError::new(
                        element(path, i),
                        ErrorType::Duplicate,
                        Some(item),
                        "",
                    ));
                }
            }
        }
        ListType::Map => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<Value> = s
                    .list_map_keys
                    .iter()
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect();
                if !seen.insert(Value::Array(key.clone()).to_string()) {
                    let shown = if key.len() == 1 {
                        key[0].clone()
                    } else {
                        Value::Array(key)
                    };
                    errors.push(FieldError::new(
                        element(path, i),
                        ErrorType::Duplicate,
                        Some(&shown),
                        "",
                    ));
                }
            }
        }
        ListType::Atomic if s.unique_items => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError::new(
                        element(path, i),
                        ErrorType::Duplicate,
                        Some(item),
                        "",
                    ));
                }
            }
        }
        ListType::Atomic => {}
    }
}

fn object(
    s: &Schema,
    map: &serde_json::Map<String, Value>,
    path: &mut String,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    for name in &s.required {
        if !map.contains_key(name) {
            errors.push(FieldError::new(
                child(path, name),
                ErrorType::Required,
                None,
                "",
            ));
        }
    }
    if let Some(max) = s.max_properties.filter(|max| map.len() > *max) {
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::TooMany,
            Some(&Value::from(map.len())),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = s.min_properties.filter(|min| map.len() < *min) {
        errors.push(FieldError::new(
            path.as_str(),
            ErrorType::Invalid,
            None,
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    for (name, value) in map {
        if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(prop) = s.properties.get(name) {
            descend(path, Step::Field(name), |path| {
                node(prop, value, path, false, errors)
            });
        } else if let Some(additional) = &s.additional_properties {
            descend(path, Step::Entry(name), |path| {
                node(additional, value, path, false, errors)
            });
        }
    }
}
