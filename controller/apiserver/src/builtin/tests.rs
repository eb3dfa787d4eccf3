use super::*;

#[test]
fn every_builtin_kind_has_a_structural_schema() {
    for r in resources() {
        assert!(r.schema.is_some(), "{} has a schema", r.kind);
        assert!(!r.openapi_name.is_empty());
    }
}

#[test]
fn an_event_round_trips_between_its_two_views() {
    let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {"name": "x"}, "message": "hi", "count": 2, "reason": "R", "reportingComponent": "ctl"});
    let v1 = event_to_v1(core.clone());
    assert_eq!(v1["regarding"]["name"], "x");
    assert_eq!(v1["note"], "hi");
    assert_eq!(v1["deprecatedCount"], 2);
    assert_eq!(v1["reportingController"], "ctl");
    assert_eq!(v1.get("reportingComponent"), None);
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(event_from_v1(v1.clone()), core);
    assert_eq!(event_to_v1(event_from_v1(v1.clone())), v1, "and back");
    // Stored by an earlier build with both names: the events.k8s.io one wins.
    let both = json!({"reportingComponent": "old", "reportingController": "new"});
    assert_eq!(event_to_v1(both)["reportingController"], "new");
}

#[test]
fn secret_string_data_is_folded_into_data() {
    let mut secret = json!({"stringData": {"password": "s3cret"}});
    prepare_secret(&mut secret);
    assert_eq!(
        secret,
        json!({"data": {"password": "czNjcmV0"}, "type": "Opaque"})
    );
}

#[test]
fn a_crd_with_a_bad_name_and_two_storage_versions_is_refused() {
    let mut crd = json!({
        "metadata": {"name": "wrong"},
        "spec": {"group": "g.io", "scope": "Namespaced", "names": {"kind": "W", "plural": "ws"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v2", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ]}
    });
    let errors: Vec<String> = validate_crd(&mut crd)
        .iter()
        .map(|e| e.field.clone())
        .collect();
    assert_eq!(errors, ["metadata.name", "spec.versions"]);
    assert_eq!(crd["spec"]["names"]["listKind"], "WList");
}

#[test]
fn a_crd_may_not_take_a_built_in_resource_or_an_unapproved_kubernetes_group() {
    let refused = |group: &str, plural: &str, annotations: Value| -> Vec<String> {
        let mut crd = json!({
            "metadata": {"name": format!("{plural}.{group}"), "annotations": annotations},
            "spec": {"group": group, "scope": "Namespaced", "names": {"kind": "K", "plural": plural},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        validate_crd(&mut crd)
            .iter()
            .map(|e| e.field.clone())
            .collect()
    };
    let approved = json!({"api-approved.kubernetes.io": "https://example.com/approval"});
    assert_eq!(
        refused(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            approved.clone()
        ),
        ["spec.names.plural"]
    );
    assert_eq!(
        refused("rbac.authorization.k8s.io", "rb2", json!({})),
        ["metadata.annotations[api-approved.kubernetes.io]"]
    );
    assert!(refused("rbac.authorization.k8s.io", "rb2", approved).is_empty());
    assert_eq!(refused("widgets", "things", json!({})), ["spec.group"]);
    assert!(refused("iot.devplane.io", "things", json!({})).is_empty());
}
