//! What a written object must satisfy before it is stored: its type meta, its metadata
//! (names, labels, annotations, owner references, finalizers) and its resource's schema.

use devplane_schema::{ErrorType, FieldError};
use serde_json::Value;

use super::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta};
use crate::registry::Resource;
use crate::request::FieldValidation;

/// Validate names like the API server: DNS-1123 subdomain (Namespaces: label).
fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    if name.is_empty() {
        return Some("name or generateName is required".into());
    }
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    let ok_chars = name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!label && b == b'.')
    });
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_chars || !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        let rule = if label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        return Some(rule.into());
    }
    None
}

fn validate_metadata(resource: &Resource, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = meta(object);
    let name = object::name(object).unwrap_or_default();
    if let Some(problem) = name_problem(name, resource.builtin == Some(Builtin::Namespace)) {
        errors.push(FieldError::new(
            "metadata.name",
            ErrorType::Invalid,
            Some(&Value::String(name.into())),
            problem,
        ));
    }
    for (field, max_value) in [("labels", Some(63)), ("annotations", None)] {
        let Some(entries) = meta.and_then(|m| m.get(field)) else {
            continue;
        };
        let Some(entries) = entries.as_object() else {
            errors.push(FieldError::new(
                format!("metadata.{field}"),
                ErrorType::Invalid,
                None,
                "must be a map of strings",
            ));
            continue;
        };
        for (key, value) in entries {
            if let Some(problem) = qualified_name_problem(key) {
                errors.push(FieldError::new(
                    format!("metadata.{field}"),
                    ErrorType::Invalid,
                    Some(&Value::String(key.clone())),
                    problem,
                ));
            }
            match (value.as_str(), max_value) {
                (None, _) => errors.push(FieldError::new(format!("metadata.{field}.{key}"), ErrorType::Invalid, Some(value), "must be a string")),
                (Some(v), Some(max)) if v.len() > max || !label_value_ok(v) => errors.push(FieldError::new(
                    format!("metadata.{field}"),
                    ErrorType::Invalid,
                    Some(value),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                )),
                _ => {}
            }
        }
    }
    for (i, owner) in meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::new(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    ErrorType::Required,
                    None,
                    "",
                ));
            }
        }
    }
    let controllers = object::meta(object)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .count()
        })
        .unwrap_or(0);
    if controllers > 1 {
        errors.push(FieldError::new(
            "metadata.ownerReferences",
            ErrorType::Invalid,
            None,
            "Only one reference can have Controller set to true",
        ));
    }
    for (i, finalizer) in meta
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match finalizer.as_str() {
            Some(f)
                if qualified_name_problem(f).is_none()
                    || f.contains('/')
                    || matches!(f, FOREGROUND_FINALIZER | ORPHAN_FINALIZER | "kubernetes") => {}
            _ => errors.push(FieldError::new(
                format!("metadata.finalizers[{i}]"),
                ErrorType::Invalid,
                Some(finalizer),
                "must be a qualified name",
            )),
        }
    }
    errors
}

fn label_value_ok(v: &str) -> bool {
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    v.is_empty()
        || (v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && alnum(v.bytes().next())
            && alnum(v.bytes().last()))
}

/// Problems with a qualified name (`prefix/name`), like label keys.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || name_problem(prefix, false).is_some())
    {
        return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || !alnum(name.bytes().next())
        || !alnum(name.bytes().last())
    {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)".into(),
        );
    }
    None
}

/// Apply a resource's schema to an object: prune (reporting unknown fields according to the
/// field validation), default, validate, CEL. Returns warnings.
pub(super) fn admit(
    resource: &Resource,
    object: &mut Value,
    old: Option<&Value>,
    field_validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let name = object::name(object).unwrap_or_default().to_string();
    let Some(schema) = &resource.schema else {
        return Ok(Vec::new());
    };
    let admission = schema.admit(object, old);
    let mut warnings = Vec::new();
    if !admission.unknown_fields.is_empty() {
        match field_validation {
            FieldValidation::Strict => {
                let list: Vec<String> = admission
                    .unknown_fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(
                    admission
                        .unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{f}\"")),
                );
            }
            FieldValidation::Ignore => {}
        }
    }
    let mut errors = admission.errors;
    errors.extend(validate_metadata(resource, object));
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            &resource.kind,
            &resource.group,
            &name,
            &errors,
        ));
    }
    Ok(warnings)
}

pub(super) fn check_type_meta(resource: &Resource, object: &Value) -> ApiResult<()> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if let Some(v) = api_version
        && !v.is_empty()
        && v != resource.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if let Some(k) = kind
        && !k.is_empty()
        && k != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}
