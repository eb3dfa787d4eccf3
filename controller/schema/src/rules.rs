//! Running `x-kubernetes-validations` rules only where there are any. kube-cel's walk converts
//! the value of every schema node it visits to CEL, the whole subtree each time, so an object
//! with a large metadata (managed fields) and no rules there paid for it on every write. The
//! compiled tree is pruned once to the paths that lead to rules — a node with rules keeps its
//! whole subtree, so the defaults its rules see are unchanged — and rules are run from the
//! nodes that carry them, never converting the objects around them.

use kube_cel::CompiledSchema;
use kube_cel::ValidationError;
use serde_json::Value;

use crate::validate::{Step, descend};

/// Whether a node or anything below it carries rules.
fn has_rules(node: &CompiledSchema) -> bool {
    !node.validations.is_empty()
        || node.properties.values().any(has_rules)
        || node.items.as_deref().is_some_and(has_rules)
        || node.additional_properties.as_deref().is_some_and(has_rules)
        || node.all_of.iter().any(has_rules)
        || node.one_of.iter().any(has_rules)
        || node.any_of.iter().any(has_rules)
}

/// Drop the subtrees that carry no rules, below nodes that carry none themselves.
pub fn prune(node: &mut CompiledSchema) {
    if !node.validations.is_empty() {
        return;
    }
    node.properties.retain(|_, child| has_rules(child));
    for child in node.properties.values_mut() {
        prune(child);
    }
    for slot in [&mut node.items, &mut node.additional_properties] {
        match slot {
            Some(child) if has_rules(child) => prune(child),
            _ => *slot = None,
        }
    }
    for list in [&mut node.all_of, &mut node.one_of, &mut node.any_of] {
        list.retain(has_rules);
        for child in list.iter_mut() {
            prune(child);
        }
    }
}

/// Run the rules of a pruned tree on `object` (and `old` for transition rules). A node
/// without rules of its own and without combinators, items or additional properties is
/// entered field by field, so kube-cel converts only the values of the nodes that carry
/// rules (on a Device, `spec.connection` rather than the whole `spec`).
pub fn validate(
    validator: &kube_cel::Validator,
    root: &CompiledSchema,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    validate_at(
        &mut String::new(),
        validator,
        root,
        object,
        old,
        &mut errors,
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// [`validate`] of the node at `path` (empty at the root), adding what it finds to `errors`
/// with field paths from the root.
fn validate_at(
    path: &mut String,
    validator: &kube_cel::Validator,
    node: &CompiledSchema,
    value: &Value,
    old: Option<&Value>,
    errors: &mut Vec<ValidationError>,
) {
    let enter = node.validations.is_empty()
        && node.items.is_none()
        && node.additional_properties.is_none()
        && node.all_of.is_empty()
        && node.one_of.is_empty()
        && node.any_of.is_empty()
        && value.is_object();
    if enter {
        for (name, child) in &node.properties {
            let Some(field) = value.get(name) else {
                continue;
            };
            let before = old.and_then(|o| o.get(name));
            descend(path, Step::Field(name), |path| {
                validate_at(path, validator, child, field, before, errors)
            });
        }
        return;
    }
    if let Err(found) = validator.validate_compiled(node, value, old) {
        errors.extend(found.as_slice().iter().cloned().map(|mut e| {
            e.field_path = match (path.is_empty(), e.field_path.is_empty()) {
                (true, _) => e.field_path,
                (false, true) => path.clone(),
                (false, false) => format!("{path}.{}", e.field_path),
            };
            e
        }));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::CompiledSchema;

    fn device_schema() -> CompiledSchema {
        let crd = devplane_api::all_crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "Device")
            .expect("the Device CRD");
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema");
        CompiledSchema::new(&serde_json::to_value(schema).expect("JSON")).expect("compiles")
    }

    fn device(lifecycle: &str, phase: &str) -> serde_json::Value {
        json!({
            "apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device",
            "metadata": {"name": "d", "namespace": "n", "labels": {"a": "b"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"modelRef": {"name": "m"}, "lifecycle": lifecycle,
                     "connection": {"direct": {}, "gatewayRef": {"name": "g"}}},
            "status": {"phase": phase}
        })
    }

    #[test]
    fn rules_below_the_top_level_run_with_their_full_paths_and_transitions() {
        let schema = device_schema();
        let messages = |object: &serde_json::Value, old: Option<&serde_json::Value>| {
            let mut all: Vec<String> = schema
                .validate_rules(object, old)
                .iter()
                .map(|e| e.field.clone())
                .collect();
            all.sort();
            all
        };
        // Both of connection's keys: a rule below spec, named by its whole path.
        let new = device("Servicing", "Provisioned");
        assert_eq!(messages(&new, None), ["spec.connection"]);
        // Transition rules see the old object: Decommissioned is terminal, in spec and status.
        let old = device("Decommissioned", "Decommissioned");
        assert_eq!(
            messages(&new, Some(&old)),
            [
                "spec.connection",
                "spec.lifecycle",
                "status.phase",
                "status.phase"
            ]
        );
        // The same as kube-cel's walk of the whole, unpruned tree.
        let full = kube_cel::compile_schema(&schema.source);
        let mut whole: Vec<String> = kube_cel::Validator::new()
            .validate_compiled(&full, &new, Some(&old))
            .expect_err("refused")
            .as_slice()
            .iter()
            .map(|e| e.field_path.clone())
            .collect();
        whole.sort();
        assert_eq!(messages(&new, Some(&old)), whole);
    }
}
