#[test]
fn a_rule_names_subresources_only_explicitly() {
    use super::resource_matches as m;
    assert!(m("*", "devices", None));
    assert!(!m("*", "devices", Some("status")), "* is no subresource");
    assert!(m("*/*", "devices", Some("status")));
    assert!(m("*/*", "devices", None));
    assert!(m("devices", "devices", None));
    assert!(!m("devices", "devices", Some("status")));
    assert!(m("devices/*", "devices", Some("status")));
    assert!(m("devices/*", "devices", None));
    assert!(m("*/status", "gateways", Some("status")));
    assert!(!m("*/status", "gateways", Some("scale")));
    assert!(!m("gateways", "devices", None));
}

use super::*;

fn hooks() -> Webhooks {
    let config: Value = serde_yaml::from_str(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: devplane}
webhooks:
  - name: devices.iot.devplane.io
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {url: "https://127.0.0.1:1/validate"}
    namespaceSelector:
      matchExpressions: [{key: devplane.io/skip-admission, operator: DoesNotExist}]
    rules:
      - apiGroups: [iot.devplane.io]
        apiVersions: [v1alpha1]
        operations: [CREATE, UPDATE]
        resources: [devices, devicecommands]
"#,
    )
    .expect("config");
    Webhooks::from_configurations([&config], [])
}

/// An admission request by no one in the namespace `plant`, without options.
fn asked<'a>(
    operation: &'static str,
    resource: &'a Resource,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
) -> Admission<'a> {
    Admission {
        operation,
        resource,
        equivalents: &[],
        subresource: None,
        namespace: Some("plant"),
        namespace_labels: None,
        object,
        old,
        options: None,
        user: None,
        dry_run: false,
    }
}

fn resource(plural: &str) -> Resource {
    crate::builtin::resources()
        .into_iter()
        .next()
        .map(|mut r| {
            r.group = "iot.devplane.io".into();
            r.version = "v1alpha1".into();
            r.plural = plural.into();
            r.namespaced = true;
            r.builtin = None;
            r
        })
        .expect("a resource")
}

#[test]
fn rules_and_namespace_selectors_pick_the_webhooks_of_a_write() {
    let hooks = hooks();
    let object = json!({"metadata": {"name": "x"}});
    let plain = serde_json::Map::new();
    let skipped: serde_json::Map<String, Value> =
        serde_json::from_value(json!({"devplane.io/skip-admission": "yes"})).expect("labels");
    let devices = resource("devices");
    let gateways = resource("gateways");
    let count = |operation, resource: &Resource, sub, labels| {
        let request = Admission {
            subresource: sub,
            namespace_labels: Some(labels),
            ..asked(operation, resource, Some(&object), None)
        };
        matching(&hooks.hooks, &request).count()
    };
    assert_eq!(count("CREATE", &devices, None, &plain), 1);
    assert_eq!(count("UPDATE", &devices, None, &plain), 1);
    assert_eq!(count("DELETE", &devices, None, &plain), 0);
    assert_eq!(count("CREATE", &gateways, None, &plain), 0);
    assert_eq!(
        count("UPDATE", &devices, Some("status"), &plain),
        0,
        "status is its own resource"
    );
    assert_eq!(
        count("CREATE", &devices, None, &skipped),
        0,
        "namespaceSelector"
    );
}

#[test]
fn mutating_webhooks_are_read_apart_with_their_reinvocation_and_object_selector() {
    let config: Value = serde_yaml::from_str(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: stamp}
webhooks:
  - name: stamp.example.com
    admissionReviewVersions: [v1]
    sideEffects: None
    reinvocationPolicy: IfNeeded
    clientConfig: {url: "https://127.0.0.1:1/mutate"}
    objectSelector: {matchLabels: {stamp: "yes"}}
    rules:
      - apiGroups: [iot.devplane.io]
        apiVersions: [v1alpha1]
        operations: [CREATE, UPDATE]
        resources: [devices]
"#,
    )
    .expect("config");
    let hooks = Webhooks::from_configurations([], [&config]);
    assert!(!hooks.is_empty() && !hooks.none_mutating());
    assert_eq!(hooks.mutating.len(), 1);
    assert!(hooks.mutating[0].reinvoke);
    assert!(hooks.hooks.is_empty(), "not a validating webhook");
    let devices = resource("devices");
    let labelled = json!({"metadata": {"name": "x", "labels": {"stamp": "yes"}}});
    let plain = json!({"metadata": {"name": "x"}});
    let count = |object: &Value, old: Option<&Value>| {
        let request = asked("UPDATE", &devices, Some(object), old);
        matching(&hooks.mutating, &request).count()
    };
    assert_eq!(count(&labelled, None), 1);
    assert_eq!(count(&plain, None), 0);
    assert_eq!(
        count(&plain, Some(&labelled)),
        1,
        "the old object's labels count"
    );
}

#[test]
fn under_match_policy_equivalent_a_webhook_sees_a_write_through_another_version_in_its_own() {
    let config = |policy: &str| -> Value {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: widgets}}
webhooks:
  - name: widgets.example.com
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {{url: "https://127.0.0.1:1/validate"}}
    {policy}
    rules:
      - apiGroups: [iot.devplane.io]
        apiVersions: [v1alpha1]
        operations: [CREATE]
        resources: [widgets]
"#
        ))
        .expect("config")
    };
    let known = Arc::new(resource("widgets"));
    let newer = Resource {
        version: "v1beta1".into(),
        ..resource("widgets")
    };
    let equivalents = [Arc::clone(&known)];
    let object = json!({"apiVersion": "iot.devplane.io/v1beta1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"size": 1}});
    let request = Admission {
        equivalents: &equivalents,
        ..asked("CREATE", &newer, Some(&object), None)
    };
    for (policy, called) in [
        ("", true),
        ("matchPolicy: Equivalent", true),
        ("matchPolicy: Exact", false),
    ] {
        let hooks = Webhooks::from_configurations([&config(policy)], []);
        let matched: Vec<&Resource> = matching(&hooks.hooks, &request).map(|m| m.1).collect();
        assert_eq!(matched.len(), usize::from(called), "{policy:?}");
        if let Some(seen_as) = matched.first() {
            assert!(
                std::ptr::eq(*seen_as, &*known),
                "called with the version it names"
            );
            let review = review(&request, seen_as);
            let asked = &review["request"];
            assert_eq!(asked["kind"]["version"], "v1alpha1");
            assert_eq!(asked["resource"]["version"], "v1alpha1");
            assert_eq!(asked["requestKind"]["version"], "v1beta1");
            assert_eq!(asked["requestResource"]["version"], "v1beta1");
            assert_eq!(asked["object"]["apiVersion"], "iot.devplane.io/v1alpha1");
            assert_eq!(asked["object"]["spec"], object["spec"]);
        }
    }
    // Through its own version it is called as before, with nothing converted.
    let own = json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Widget",
            "metadata": {"name": "w"}});
    let hooks = Webhooks::from_configurations([&config("")], []);
    let direct = asked("CREATE", &known, Some(&own), None);
    let seen_as = matching(&hooks.hooks, &direct).next().expect("matched").1;
    let review = review(&direct, seen_as);
    assert_eq!(review["request"]["requestKind"]["version"], "v1alpha1");
    assert_eq!(review["request"]["object"], own);
}

#[test]
fn a_namespace_is_judged_by_its_labels_as_the_webhooks_before_left_them() {
    let config: Value = serde_yaml::from_str(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: teams}
webhooks:
  - name: teams.example.com
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {url: "https://127.0.0.1:1/mutate"}
    namespaceSelector: {matchLabels: {team: a}}
    rules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [namespaces]}
"#,
    )
    .expect("config");
    let hooks = Webhooks::from_configurations([], [&config]);
    let namespaces = crate::builtin::resources()
        .into_iter()
        .find(|r| r.builtin == Some(crate::builtin::Builtin::Namespace))
        .expect("namespaces");
    // As the request sent it: no team.
    let sent: serde_json::Map<String, Value> = serde_json::Map::new();
    let count = |object: &Value| {
        let request = Admission {
            namespace: Some("n"),
            namespace_labels: Some(&sent),
            ..asked("CREATE", &namespaces, Some(object), None)
        };
        matching(&hooks.mutating, &request).count()
    };
    assert_eq!(
        count(&json!({"metadata": {"name": "n", "labels": {"team": "a"}}})),
        1
    );
    assert_eq!(count(&json!({"metadata": {"name": "n"}})), 0);
}

#[test]
fn writes_of_webhook_configurations_reach_no_webhook() {
    let config: Value = serde_yaml::from_str(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: everything}
webhooks:
  - name: all.example.com
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {url: "https://127.0.0.1:1/validate"}
    rules:
      - {apiGroups: ["*"], apiVersions: ["*"], operations: ["*"], resources: ["*"]}
"#,
    )
    .expect("config");
    let hooks = Webhooks::from_configurations([&config], []);
    let object = json!({"metadata": {"name": "x"}});
    let count = |builtin| {
        let resource = crate::builtin::resources()
            .into_iter()
            .find(|r| r.builtin == Some(builtin))
            .expect("a built-in resource");
        let request = Admission {
            namespace: None,
            ..asked("DELETE", &resource, None, Some(&object))
        };
        matching(&hooks.hooks, &request).count()
    };
    use crate::builtin::Builtin;
    assert_eq!(count(Builtin::Namespace), 1);
    assert_eq!(count(Builtin::ValidatingWebhookConfiguration), 0);
    assert_eq!(count(Builtin::MutatingWebhookConfiguration), 0);
}
