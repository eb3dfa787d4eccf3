//! A webhook's `matchConditions` (admissionregistration.k8s.io/v1): CEL expressions on the
//! request, with the variables `object`, `oldObject` and `request`, that decide whether the
//! webhook is called. Every condition true: it is called. One false: it is skipped, whatever
//! the others give. Otherwise (a condition that does not compile, fails to evaluate or is not
//! a boolean) its `failurePolicy` decides, as for a call that fails.
//!
//! `request` is the AdmissionReview's request the webhook would get, without the objects;
//! objects are read as their JSON, with the Kubernetes CEL libraries, and field names are not
//! escaped (kube-apiserver escapes declared field names such as `x-y` as `x__dash__y`). The
//! `authorizer` variable is not offered: a condition that uses it fails to evaluate. A
//! configuration's conditions are parsed when it is written ([`check`]), not type-checked (an
//! unknown variable shows when the condition is evaluated), and parsed again each time.

use std::collections::HashMap;
use std::sync::Arc;

use devplane_schema::{ErrorType, FieldError};
use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use kube_cel::KubeCelExt;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::Value;

/// Most conditions one webhook may have (as kube-apiserver allows).
const MOST_CONDITIONS: usize = 64;

/// What is wrong with the `matchConditions` of a Validating- or MutatingWebhookConfiguration:
/// too many of them, a name missing or given twice, an expression missing or one that does
/// not compile. kube-apiserver refuses such a configuration, and so does this server.
pub(crate) fn check(configuration: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let webhooks = configuration["webhooks"].as_array().into_iter().flatten();
    for (at, webhook) in webhooks.enumerate() {
        let Some(conditions) = webhook["matchConditions"].as_array() else {
            continue;
        };
        let path = format!("webhooks[{at}].matchConditions");
        if conditions.len() > MOST_CONDITIONS {
            errors.push(FieldError::new(
                &path,
                ErrorType::TooMany,
                None,
                format!("must have at most {MOST_CONDITIONS} items"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (index, condition) in conditions.iter().enumerate() {
            let field = |name: &str| format!("{path}[{index}].{name}");
            match condition["name"].as_str().filter(|n| !n.is_empty()) {
                None => errors.push(FieldError::new(
                    field("name"),
                    ErrorType::Required,
                    None,
                    "",
                )),
                Some(name) if !names.insert(name) => errors.push(FieldError::new(
                    field("name"),
                    ErrorType::Duplicate,
                    Some(&condition["name"]),
                    "",
                )),
                Some(_) => {}
            }
            match condition["expression"].as_str().filter(|e| !e.is_empty()) {
                None => errors.push(FieldError::new(
                    field("expression"),
                    ErrorType::Required,
                    None,
                    "",
                )),
                Some(expression) => {
                    if let Err(e) = Program::compile(expression) {
                        errors.push(FieldError::new(
                            field("expression"),
                            ErrorType::Invalid,
                            Some(&condition["expression"]),
                            format!("compilation failed: {e}"),
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// Whether `conditions` hold for the request of the AdmissionReview `review`; Err says which
/// condition could not be evaluated, and why. `request` is the review's request as the webhook
/// would get it, without the objects (which are `object` and `oldObject`).
pub(super) fn hold(conditions: &[MatchCondition], review: &Value) -> Result<bool, String> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let request = &review["request"];
    let mut context = Context::default();
    context.register_all();
    context.add_variable_from_value("object", to_cel(&request["object"]));
    context.add_variable_from_value("oldObject", to_cel(&request["oldObject"]));
    let mut asking = request.clone();
    if let Some(fields) = asking.as_object_mut() {
        fields.remove("object");
        fields.remove("oldObject");
    }
    context.add_variable_from_value("request", to_cel(&asking));
    let mut failure = None;
    for condition in conditions {
        let outcome = Program::compile(&condition.expression)
            .map_err(|e| e.to_string())
            .and_then(|program| program.execute(&context).map_err(|e| e.to_string()));
        let why = match outcome {
            Ok(Cel::Bool(true)) => continue,
            Ok(Cel::Bool(false)) => return Ok(false),
            Ok(other) => format!("not a boolean but {other:?}"),
            Err(e) => e,
        };
        failure.get_or_insert_with(|| {
            format!(
                "matchCondition {:?} cannot be evaluated: {why}",
                condition.name
            )
        });
    }
    failure.map_or(Ok(true), Err)
}

/// A JSON value as CEL sees it: integers are `int` (`uint` only beyond its range), and an
/// object's keys are used as they are (label keys and other map keys are read by index).
fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, Cel> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conditions(expressions: &[&str]) -> Vec<MatchCondition> {
        expressions
            .iter()
            .enumerate()
            .map(|(at, expression)| MatchCondition {
                name: format!("c{at}"),
                expression: (*expression).to_string(),
            })
            .collect()
    }

    fn review(operation: &str, object: Value, old: Value) -> Value {
        json!({"request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "operation": operation,
            "name": "m1",
            "namespace": "mut",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "subResource": "status",
            "userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "options": {"kind": "CreateOptions", "fieldManager": "kubectl"},
            "dryRun": false,
        }})
    }

    #[test]
    fn a_configuration_s_conditions_must_be_named_once_and_compile() {
        let configuration = |conditions: Value| json!({"webhooks": [{"name": "a.example.com"}, {"name": "b.example.com", "matchConditions": conditions}]});
        assert!(
            check(&configuration(
                json!([{"name": "ok", "expression": "true"}])
            ))
            .is_empty()
        );
        let errors: Vec<String> = check(&configuration(json!([
            {"name": "twice", "expression": "true"},
            {"name": "twice", "expression": "object.metadata.name =="},
            {"expression": "true"},
            {"name": "empty"},
        ])))
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("webhooks[1].matchConditions[1].name: Duplicate value"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("webhooks[1].matchConditions[1].expression: Invalid value"),
            "{errors:?}"
        );
        assert!(errors[1].contains("compilation failed"), "{errors:?}");
        assert!(
            errors[2].starts_with("webhooks[1].matchConditions[2].name: Required value"),
            "{errors:?}"
        );
        assert!(
            errors[3].starts_with("webhooks[1].matchConditions[3].expression: Required value"),
            "{errors:?}"
        );
        let many: Vec<Value> = (0..65)
            .map(|n| json!({"name": format!("c{n}"), "expression": "true"}))
            .collect();
        let errors = check(&configuration(Value::Array(many)));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("webhooks[1].matchConditions: Too many"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn every_condition_true_calls_one_false_skips_and_a_failure_is_reported() {
        let created = review(
            "CREATE",
            json!({"metadata": {"name": "m1", "labels": {"tier": "web", "app.kubernetes.io/name": "meter"}}, "data": {"k": "v"}, "replicas": 3}),
            Value::Null,
        );
        let judge = |expressions: &[&str]| hold(&conditions(expressions), &created);
        assert_eq!(judge(&[]), Ok(true));
        assert_eq!(
            judge(&[
                "object.metadata.labels.tier == 'web'",
                "request.operation == 'CREATE' && request.userInfo.username == 'alice'",
                "'devs' in request.userInfo.groups && oldObject == null",
                "request.kind.kind == 'ConfigMap' && request.resource.resource == 'configmaps'",
                "request.namespace == 'mut' && request.name == 'm1' && !request.dryRun",
                "object.metadata.labels['app.kubernetes.io/name'] == 'meter' && object.replicas > 2",
                "request.subResource == 'status' && request.options.fieldManager == 'kubectl'",
                "request.uid.startsWith('705ab4f5') && object.metadata.name.matches('^m[0-9]$')",
            ]),
            Ok(true)
        );
        assert_eq!(
            judge(&["true", "object.metadata.labels.tier == 'db'"]),
            Ok(false)
        );
        // A false one skips the webhook even when another cannot be evaluated.
        assert_eq!(judge(&["object.spec.replicas > 1", "false"]), Ok(false));
        for (broken, why) in [
            ("object.spec.replicas > 1", "a field that is not there"),
            ("'web'", "not a boolean"),
            ("object.metadata.name ==", "does not compile"),
        ] {
            let failure = judge(&["true", broken]).expect_err(why);
            assert!(
                failure.starts_with(r#"matchCondition "c1" cannot be evaluated: "#),
                "{why}: {failure}"
            );
        }
        let deleted = review("DELETE", Value::Null, json!({"metadata": {"name": "m1"}}));
        assert_eq!(
            hold(
                &conditions(&["object == null && oldObject.metadata.name == 'm1'"]),
                &deleted
            ),
            Ok(true)
        );
    }
}
