use super::*;

const OBJECTS: &str = r#"
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata: {name: device-reader}
  rules:
    - apiGroups: [iot.devplane.io]
      resources: [devices, devicemodels]
      verbs: [get, list, watch]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata: {name: status-writer, labels: {devplane.io/aggregate: "true"}}
  rules:
    - apiGroups: [iot.devplane.io]
      resources: [devices/status]
      verbs: [patch]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata: {name: aggregate}
  aggregationRule:
    clusterRoleSelectors: [{matchLabels: {devplane.io/aggregate: "true"}}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {name: one-secret, namespace: plant}
  rules:
    - apiGroups: [""]
      resources: [secrets]
      resourceNames: [sensor-a-credentials]
      verbs: [get]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata: {name: readers}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: device-reader}
  subjects:
    - {kind: ServiceAccount, name: frontdoor, namespace: devplane-system}
    - {kind: Group, name: auditors}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: secret, namespace: plant}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-secret}
  subjects: [{kind: User, name: alice}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: status-in-plant, namespace: plant}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aggregate}
  subjects: [{kind: ServiceAccount, name: writer}]
"#;

fn rbac() -> Rbac {
    let objects: Vec<Value> = serde_yaml::from_str(OBJECTS).expect("objects");
    Rbac::from_objects(&objects)
}

fn ask(
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Attributes {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (resource.to_string(), None),
    };
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource,
        subresource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    }
}

#[test]
fn bindings_grant_their_roles_rules_in_their_scope_only() {
    let rbac = rbac();
    let frontdoor = Caller::service_account("devplane-system", "frontdoor");
    let writer = Caller::service_account("plant", "writer");
    let alice = Caller::new("alice", &[]);
    let auditor = Caller::new("bob", &["auditors"]);
    let nobody = Caller::new("mallory", &[]);
    let admin = Caller::new("admin", &[MASTERS]);
    let iot = "iot.devplane.io";
    let cases = [
        (&frontdoor, ask("list", iot, "devices", None, None), true),
        (
            &frontdoor,
            ask("watch", iot, "devices", Some("plant"), None),
            true,
        ),
        (
            &frontdoor,
            ask("get", iot, "devicemodels", Some("x"), Some("m")),
            true,
        ),
        (
            &frontdoor,
            ask("delete", iot, "devices", Some("plant"), Some("d")),
            false,
        ),
        (
            &frontdoor,
            ask("patch", iot, "devices/status", Some("plant"), Some("d")),
            false,
        ),
        (&frontdoor, ask("list", "", "devices", None, None), false),
        (&auditor, ask("list", iot, "devices", None, None), true),
        (
            &writer,
            ask("patch", iot, "devices/status", Some("plant"), Some("d")),
            true,
        ),
        (
            &writer,
            ask("patch", iot, "devices/status", Some("other"), Some("d")),
            false,
        ),
        (
            &writer,
            ask("patch", iot, "devices", Some("plant"), Some("d")),
            false,
        ),
        (
            &alice,
            ask(
                "get",
                "",
                "secrets",
                Some("plant"),
                Some("sensor-a-credentials"),
            ),
            true,
        ),
        (
            &alice,
            ask(
                "get",
                "",
                "secrets",
                Some("plant"),
                Some("sensor-b-credentials"),
            ),
            false,
        ),
        (
            &alice,
            ask("list", "", "secrets", Some("plant"), None),
            false,
        ),
        (
            &alice,
            ask(
                "get",
                "",
                "secrets",
                Some("other"),
                Some("sensor-a-credentials"),
            ),
            false,
        ),
        (
            &nobody,
            ask("get", iot, "devices", Some("plant"), Some("d")),
            false,
        ),
        (
            &admin,
            ask("deletecollection", "", "secrets", Some("plant"), None),
            true,
        ),
    ];
    for (caller, attrs, want) in cases {
        assert_eq!(
            rbac.allows(caller, &attrs),
            want,
            "{} {attrs:?}",
            caller.user
        );
    }
}

#[test]
fn denials_read_like_kube_apiservers() {
    let caller = Caller::service_account("ns", "sa");
    assert_eq!(
        ask("list", "iot.devplane.io", "devices", Some("plant"), None).forbidden_message(&caller),
        "devices.iot.devplane.io is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"devices\" in API group \"iot.devplane.io\" in the namespace \"plant\""
    );
    assert_eq!(
        ask("patch", "", "namespaces/status", None, Some("x")).forbidden_message(&caller),
        "namespaces \"x\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"namespaces/status\" in API group \"\" at the cluster scope"
    );
}

#[test]
fn a_rules_review_lists_what_applies_in_the_namespace() {
    let rbac = rbac();
    let writer = Caller::service_account("plant", "writer");
    let rules = rbac.rules_for(&writer, "plant");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].resources, Some(vec!["devices/status".to_string()]));
    assert!(rbac.rules_for(&writer, "other").is_empty());
}

#[test]
fn a_rule_is_held_only_when_every_request_it_allows_is_allowed() {
    let rbac = rbac();
    let frontdoor = Caller::service_account("devplane-system", "frontdoor");
    let writer = Caller::service_account("plant", "writer");
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: (!names.is_empty()).then(|| names.iter().map(|n| n.to_string()).collect()),
        ..Default::default()
    };
    let iot = "iot.devplane.io";
    let held = |caller: &Caller, rule: PolicyRule, namespace: Option<&str>| {
        rbac.not_held(caller, std::slice::from_ref(&rule), namespace)
            .is_empty()
    };
    // Everything device-reader grants, cluster-wide or in one namespace.
    assert!(held(
        &frontdoor,
        rule(&[iot], &["devices"], &["get", "list"], &[]),
        None
    ));
    assert!(held(
        &frontdoor,
        rule(&[iot], &["devices"], &["watch"], &["d"]),
        Some("plant")
    ));
    // A verb, a resource or a wildcard more is not held.
    assert!(!held(
        &frontdoor,
        rule(&[iot], &["devices"], &["get", "delete"], &[]),
        None
    ));
    assert!(!held(
        &frontdoor,
        rule(&[iot], &["devices", "secrets"], &["get"], &[]),
        None
    ));
    assert!(!held(&frontdoor, rule(&[iot], &["*"], &["get"], &[]), None));
    assert!(!held(
        &frontdoor,
        rule(&["*"], &["devices"], &["get"], &[]),
        None
    ));
    assert!(!held(
        &frontdoor,
        rule(&[iot], &["devices"], &["*"], &[]),
        None
    ));
    // A grant in one namespace is not held cluster-wide, nor in another namespace.
    assert!(held(
        &writer,
        rule(&[iot], &["devices/status"], &["patch"], &[]),
        Some("plant")
    ));
    assert!(!held(
        &writer,
        rule(&[iot], &["devices/status"], &["patch"], &[]),
        None
    ));
    assert!(!held(
        &writer,
        rule(&[iot], &["devices/status"], &["patch"], &[]),
        Some("other")
    ));
    // A grant for one name holds a rule for that name, not one for every name.
    let alice = Caller::new("alice", &[]);
    let secret = |names: &[&str]| rule(&[""], &["secrets"], &["get"], names);
    assert!(held(
        &alice,
        secret(&["sensor-a-credentials"]),
        Some("plant")
    ));
    assert!(!held(&alice, secret(&[]), Some("plant")));
    assert!(!held(
        &alice,
        secret(&["sensor-a-credentials", "other"]),
        Some("plant")
    ));
}
