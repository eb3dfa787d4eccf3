//! What a written object must satisfy before it is stored: its type meta, its metadata
//! (names, labels, annotations, owner references, finalizers) and its resource's schema.

use devplane_naming::{self as naming, NameError};
use devplane_schema::{ErrorType, FieldError};
use serde_json::Value;

use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta};
use crate::registry::Resource;
use crate::request::FieldValidation;

/// A name rule broken by `value` at `field`.
fn invalid(field: &str, value: &str, problem: NameError) -> FieldError {
    FieldError::new(
        field,
        ErrorType::Invalid,
        Some(&Value::String(value.into())),
        problem.to_string(),
    )
}

/// An object's name and its label and annotation entries checked by Kubernetes' name rules:
/// one field error per broken rule (a Namespace's name must be a DNS-1123 label, any other a
/// subdomain). An empty name is left to the caller (`generateName` may stand in). The API
/// server and `devplane validate` both use this.
pub fn name_and_label_errors(
    namespace_kind: bool,
    meta: Option<&serde_json::Map<String, Value>>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !name.is_empty() {
        let problems = if namespace_kind {
            naming::dns1123_label_problems(name)
        } else {
            naming::dns1123_subdomain_problems(name)
        };
        errors.extend(
            problems
                .into_iter()
                .map(|p| invalid("metadata.name", name, p)),
        );
    }
    for field in ["labels", "annotations"] {
        let Some(entries) = meta.and_then(|m| m.get(field)) else {
            continue;
        };
        let path = format!("metadata.{field}");
        let Some(entries) = entries.as_object() else {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                None,
                "must be a map of strings",
            ));
            continue;
        };
        for (key, value) in entries {
            let key_problems = if field == "labels" {
                naming::qualified_name_problems(key)
            } else {
                naming::annotation_key_problems(key)
            };
            errors.extend(key_problems.into_iter().map(|p| invalid(&path, key, p)));
            match value.as_str() {
                None => errors.push(FieldError::new(
                    format!("{path}.{key}"),
                    ErrorType::Invalid,
                    Some(value),
                    "must be a string",
                )),
                Some(v) if field == "labels" => errors.extend(
                    naming::label_value_problems(v)
                        .into_iter()
                        .map(|p| invalid(&path, v, p)),
                ),
                Some(_) => {}
            }
        }
    }
    errors
}

/// Metadata problems as the Kubernetes API server finds them: one field error per broken rule.
fn validate_metadata(resource: &Resource, object: &Value) -> Vec<FieldError> {
    let meta = meta(object);
    let mut errors = Vec::new();
    if object::name(object).unwrap_or_default().is_empty() {
        errors.push(FieldError::new(
            "metadata.name",
            ErrorType::Invalid,
            Some(&Value::String(String::new())),
            "name or generateName is required",
        ));
    }
    errors.extend(name_and_label_errors(
        resource.builtin == Some(Builtin::Namespace),
        meta,
    ));
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
        let path = format!("metadata.finalizers[{i}]");
        match finalizer.as_str() {
            Some(f) => errors.extend(
                naming::qualified_name_problems(f)
                    .into_iter()
                    .map(|p| invalid(&path, f, p)),
            ),
            None => errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                Some(finalizer),
                "must be a string",
            )),
        }
    }
    errors
}

/// Apply a resource's schema to an object: prune (reporting unknown fields according to the
/// field validation), default, validate, CEL. Returns warnings. `requested` is the object as
/// the request sent it when mutating webhooks changed it since: the unknown fields reported
/// are the request's own, at the paths it sent them (a webhook may have moved a list's items,
/// or taken a field away); those webhooks added are pruned silently. kube-apiserver finds them
/// the same way, decoding the request before any webhook sees it.
pub(super) fn admit(
    resource: &Resource,
    object: &mut Value,
    (old, requested): (Option<&Value>, Option<&Value>),
    field_validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let name = object::name(object).unwrap_or_default().to_string();
    let Some(schema) = &resource.schema else {
        return Ok(Vec::new());
    };
    let mut admission = schema.admit(object, old);
    if let Some(requested) = requested
        && field_validation != FieldValidation::Ignore
    {
        admission.unknown_fields = schema.prune(&mut requested.clone());
    }
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

#[cfg(test)]
mod tests;
