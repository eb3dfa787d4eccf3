use devplane_api::v1alpha1::{Device, DeviceModel, Gateway, Lifecycle, Phase};
use kube::CustomResourceExt;
use kube_cel::Validator;
use serde_json::{Value, json};

use super::*;

#[test]
fn every_lifecycle_change_is_allowed_or_refused_as_the_table_says() {
    use Lifecycle::*;
    let allowed = [
        (Planned, Planned),
        (Planned, Servicing),
        (Planned, Decommissioned),
        (Servicing, Servicing),
        (Servicing, Maintenance),
        (Servicing, Decommissioned),
        (Maintenance, Maintenance),
        (Maintenance, Servicing),
        (Maintenance, Decommissioned),
        (Decommissioned, Decommissioned),
    ];
    for from in Lifecycle::ALL {
        for to in Lifecycle::ALL {
            assert_eq!(
                lifecycle_change_allowed(from, to),
                allowed.contains(&(from, to)),
                "{from} → {to}"
            );
        }
    }
}

#[test]
fn every_phase_change_is_allowed_or_refused_as_the_table_says() {
    use Phase::*;
    let refused = [
        (Planned, Servicing),
        (Planned, Maintenance),
        (Provisioned, Planned),
        (Provisioned, Maintenance),
        (Servicing, Planned),
        (Servicing, Provisioned),
        (Maintenance, Planned),
        (Maintenance, Provisioned),
        (Decommissioned, Planned),
        (Decommissioned, Provisioned),
        (Decommissioned, Servicing),
        (Decommissioned, Maintenance),
    ];
    for from in Phase::ALL {
        for to in Phase::ALL {
            assert_eq!(
                phase_change_allowed(from, to),
                !refused.contains(&(from, to)),
                "{from} → {to}"
            );
        }
    }
}

#[test]
fn next_phase_only_takes_allowed_steps_and_settles() {
    for current in std::iter::once(None).chain(Phase::ALL.map(Some)) {
        for desired in Lifecycle::ALL {
            for has_connected in [false, true] {
                let mut phase = current;
                for _ in 0..4 {
                    let next = next_phase(phase, desired, has_connected);
                    assert!(
                        phase_change_allowed(phase.unwrap_or(Phase::Planned), next),
                        "{phase:?} → {next} for {desired} (connected: {has_connected})"
                    );
                    phase = Some(next);
                }
                let settled = settled_phase(current, desired, has_connected);
                assert_eq!(phase, Some(settled), "settles within three steps");
            }
        }
    }
}

#[test]
fn a_device_settles_where_the_lifecycle_diagram_says() {
    use Lifecycle as L;
    use Phase as P;
    let cases = [
        (None, L::Planned, false, P::Planned),
        (None, L::Servicing, false, P::Provisioned),
        (None, L::Servicing, true, P::Servicing),
        (None, L::Maintenance, false, P::Provisioned),
        (None, L::Maintenance, true, P::Maintenance),
        (
            Some(P::Provisioned),
            L::Decommissioned,
            false,
            P::Decommissioned,
        ),
        (Some(P::Servicing), L::Maintenance, true, P::Maintenance),
        (Some(P::Maintenance), L::Servicing, true, P::Servicing),
        (Some(P::Servicing), L::Planned, true, P::Servicing),
        (
            Some(P::Decommissioned),
            L::Servicing,
            true,
            P::Decommissioned,
        ),
    ];
    for (current, desired, connected, expected) in cases {
        assert_eq!(
            settled_phase(current, desired, connected),
            expected,
            "{current:?} wanting {desired}"
        );
    }
    assert!(has_credentials(P::Provisioned) && has_credentials(P::Maintenance));
    assert!(!has_credentials(P::Planned) && !has_credentials(P::Decommissioned));
    assert!(wants_credentials(L::Servicing) && !wants_credentials(L::Decommissioned));
}

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .and_then(|s| s.open_api_v3_schema)
        .expect("schema");
    serde_json::to_value(schema).expect("schema serializes")
}

fn object(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "iot.devplane.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": "d", "namespace": "n"},
        "spec": spec,
        "status": status,
    })
}

/// Whether the CRD's CEL rules let `old` become `new`.
fn cel_allows(validator: &Validator, schema: &Value, old: &Value, new: &Value) -> bool {
    validator.validate(schema, new, Some(old)).is_ok()
}

/// The CEL transition rules on `spec.lifecycle` of Device and Gateway refuse exactly what the
/// lifecycle table refuses.
#[test]
fn lifecycle_cel_rules_agree_with_the_table() {
    let validator = Validator::new();
    for (kind, schema) in [
        ("Device", schema_of(Device::crd())),
        ("Gateway", schema_of(Gateway::crd())),
    ] {
        for from in Lifecycle::ALL {
            for to in Lifecycle::ALL {
                let spec =
                    |l: Lifecycle| json!({"modelRef": {"name": "m"}, "lifecycle": l.as_str()});
                let old = object(spec(from), json!({}));
                let new = object(spec(to), json!({}));
                assert_eq!(
                    cel_allows(&validator, &schema, &old, &new),
                    lifecycle_change_allowed(from, to),
                    "{kind} spec.lifecycle {from} → {to}"
                );
            }
        }
    }
}

/// The CEL transition rules on Device `status.phase` refuse exactly what the phase table refuses.
#[test]
fn phase_cel_rules_agree_with_the_table() {
    let validator = Validator::new();
    let schema = schema_of(Device::crd());
    let spec = json!({"modelRef": {"name": "m"}});
    for from in Phase::ALL {
        for to in Phase::ALL {
            let old = object(spec.clone(), json!({"phase": from.as_str()}));
            let new = object(spec.clone(), json!({"phase": to.as_str()}));
            assert_eq!(
                cel_allows(&validator, &schema, &old, &new),
                phase_change_allowed(from, to),
                "status.phase {from} → {to}"
            );
        }
    }
}

#[test]
fn a_refused_transition_names_the_field_and_the_rule_message() {
    let validator = Validator::new();
    let schema = schema_of(Device::crd());
    let old = object(
        json!({"modelRef": {"name": "m"}, "lifecycle": "Decommissioned"}),
        json!({}),
    );
    let new = object(
        json!({"modelRef": {"name": "m"}, "lifecycle": "Servicing"}),
        json!({}),
    );
    let errors = validator
        .validate(&schema, &new, Some(&old))
        .expect_err("refused");
    let error = &errors.as_slice()[0];
    assert_eq!(error.field_path, "spec.lifecycle");
    assert!(
        error.message.contains("Decommissioned is terminal"),
        "{}",
        error.message
    );
}

#[test]
fn a_new_object_passes_transition_rules_whatever_its_lifecycle() {
    let validator = Validator::new();
    let schema = schema_of(Device::crd());
    for l in Lifecycle::ALL {
        let new = object(
            json!({"modelRef": {"name": "m"}, "lifecycle": l.as_str()}),
            json!({}),
        );
        assert!(validator.validate(&schema, &new, None).is_ok(), "{l}");
    }
    // DeviceModel has no transition rules; it validates too.
    let model = json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceModel", "metadata": {"name": "m"}, "spec": {"version": "1.0.0"}});
    assert!(
        validator
            .validate(&schema_of(DeviceModel::crd()), &model, None)
            .is_ok()
    );
}
