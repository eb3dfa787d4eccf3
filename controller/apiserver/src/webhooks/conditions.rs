//! A webhook's `matchConditions` (admissionregistration.k8s.io/v1): CEL expressions on the
//! request, with the variables `object`, `oldObject` and `request`, that decide whether the
//! webhook is called. Every condition true: it is called. One false: it is skipped, whatever
//! the others give. Otherwise (a condition that does not compile, fails to evaluate or is not
//! a boolean) its `failurePolicy` decides, as for a call that fails. The `authorizer` variable
//! is not offered: a condition that uses it fails to evaluate. A configuration's conditions
//! are checked when it is written ([`check`]); each is compiled again when it is evaluated.

use devplane_schema::{ErrorType, FieldError};
use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use kube_cel::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, VapEvaluator, VapExpression,
};
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
                    if let Err(e) = kube_cel::cel::Program::compile(expression) {
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

/// The message kube-cel is given for a condition that evaluates to false, to tell that apart
/// from one that fails (kube-cel reports both as not passed, with a message).
const FALSE: &str = "\u{1}false";

/// Whether `conditions` hold for the request of the AdmissionReview `review`; Err says which
/// condition could not be evaluated, and why.
pub(super) fn hold(conditions: &[MatchCondition], review: &Value) -> Result<bool, String> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let request = &review["request"];
    let text = |pointer: &str| {
        request
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let asking = AdmissionRequest {
        operation: text("/operation"),
        username: text("/userInfo/username"),
        uid: text("/userInfo/uid"),
        groups: request
            .pointer("/userInfo/groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        name: text("/name"),
        namespace: text("/namespace"),
        dry_run: request["dryRun"].as_bool().unwrap_or(false),
        kind: GroupVersionKind {
            group: text("/kind/group"),
            version: text("/kind/version"),
            kind: text("/kind/kind"),
        },
        resource: GroupVersionResource {
            group: text("/resource/group"),
            version: text("/resource/version"),
            resource: text("/resource/resource"),
        },
    };
    let mut evaluator = VapEvaluator::builder()
        .object(request["object"].clone())
        .request(asking);
    if !request["oldObject"].is_null() {
        evaluator = evaluator.old_object(request["oldObject"].clone());
    }
    let expressions: Vec<VapExpression> = conditions
        .iter()
        .map(|condition| VapExpression {
            expression: condition.expression.clone(),
            message: Some(FALSE.into()),
            message_expression: None,
        })
        .collect();
    let mut failure = None;
    for (condition, result) in conditions
        .iter()
        .zip(evaluator.build().evaluate(&expressions))
    {
        match (result.passed, result.message.as_deref()) {
            (true, _) => {}
            (false, Some(FALSE)) => return Ok(false),
            (false, why) => {
                failure.get_or_insert_with(|| {
                    format!(
                        "matchCondition {:?} cannot be evaluated: {}",
                        condition.name,
                        why.unwrap_or("no reason given")
                    )
                });
            }
        }
    }
    failure.map_or(Ok(true), Err)
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
            "operation": operation,
            "name": "m1",
            "namespace": "mut",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]},
            "object": object,
            "oldObject": old,
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
            json!({"metadata": {"name": "m1", "labels": {"tier": "web"}}, "data": {"k": "v"}}),
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
