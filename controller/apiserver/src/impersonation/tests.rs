use axum::http::{HeaderName, HeaderValue};

use super::*;

/// `support` may impersonate the user `jane` and the group `developers`, and the
/// ServiceAccount `reader` of `plant`; `masters` is in `system:masters`.
fn rbac() -> Rbac {
    let objects: Vec<serde_json::Value> = serde_yaml::from_str(
        r#"
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata: {name: impersonate-jane}
  rules:
    - apiGroups: [""]
      resources: [users]
      resourceNames: [jane]
      verbs: [impersonate]
    - apiGroups: [""]
      resources: [groups]
      resourceNames: [developers]
      verbs: [impersonate]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata: {name: support}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-jane}
  subjects: [{kind: User, name: support}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {name: impersonate-reader, namespace: plant}
  rules:
    - apiGroups: [""]
      resources: [serviceaccounts]
      resourceNames: [reader]
      verbs: [impersonate]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: support, namespace: plant}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonate-reader}
  subjects: [{kind: User, name: support}]
"#,
    )
    .expect("rbac yaml");
    Rbac::from_objects(&objects)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    headers
}

fn support() -> Caller {
    Caller::new("support", &[])
}

#[test]
fn a_request_without_impersonation_headers_is_the_caller_s() {
    let other = headers(&[("authorization", "Bearer x"), ("user-agent", "kubectl")]);
    assert_eq!(
        acting_as(&rbac(), &support(), &other).expect("no error"),
        None
    );
}

#[test]
fn an_allowed_user_and_group_become_the_identity_with_the_impersonator_kept() {
    let asked = headers(&[
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "developers"),
    ]);
    let acting = acting_as(&rbac(), &support(), &asked)
        .expect("allowed")
        .expect("impersonated");
    assert_eq!(acting.user, "jane");
    assert_eq!(acting.groups, ["developers", "system:authenticated"]);
    assert_eq!(acting.impersonator.as_deref(), Some(&support()));
}

#[test]
fn every_part_of_the_identity_needs_its_own_permission() {
    let refused = |pairs: &[(&str, &str)], message: &str| {
        let error = acting_as(&rbac(), &support(), &headers(pairs)).expect_err("refused");
        assert_eq!(error.code, 403, "{pairs:?}");
        assert_eq!(error.message, message, "{pairs:?}");
    };
    refused(
        &[("Impersonate-User", "bob")],
        r#"users "bob" is forbidden: User "support" cannot impersonate resource "users" in API group "" at the cluster scope"#,
    );
    refused(
        &[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "developers"),
            ("Impersonate-Group", "system:masters"),
        ],
        r#"groups "system:masters" is forbidden: User "support" cannot impersonate resource "groups" in API group "" at the cluster scope"#,
    );
    refused(
        &[("Impersonate-User", "jane"), ("Impersonate-Uid", "1234")],
        r#"uids.authentication.k8s.io "1234" is forbidden: User "support" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#,
    );
    refused(
        &[
            ("Impersonate-User", "jane"),
            ("Impersonate-Extra-acme.com%2Fproject", "p1"),
        ],
        r#"userextras.authentication.k8s.io "p1" is forbidden: User "support" cannot impersonate resource "userextras/acme.com/project" in API group "authentication.k8s.io" at the cluster scope"#,
    );
    // A ServiceAccount is checked as one, in its namespace.
    refused(
        &[("Impersonate-User", "system:serviceaccount:other:reader")],
        r#"serviceaccounts "reader" is forbidden: User "support" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "other""#,
    );
    // No permission at all: the first part is named.
    let nobody = Caller::new("nobody", &[]);
    let error = acting_as(&rbac(), &nobody, &headers(&[("Impersonate-User", "jane")]))
        .expect_err("refused");
    assert_eq!(error.code, 403);
}

#[test]
fn a_service_account_asked_for_without_groups_gets_its_own() {
    let asked = headers(&[("Impersonate-User", "system:serviceaccount:plant:reader")]);
    let acting = acting_as(&rbac(), &support(), &asked)
        .expect("allowed")
        .expect("impersonated");
    assert_eq!(acting, {
        let mut account = Caller::service_account("plant", "reader");
        account.impersonator = Some(Box::new(support()));
        account
    });
}

#[test]
fn system_masters_may_impersonate_anyone_and_anonymous_is_unauthenticated() {
    let admin = Caller::new("admin", &["system:masters"]);
    let asked = headers(&[
        ("Impersonate-User", "system:anonymous"),
        ("Impersonate-Uid", "u-1"),
        ("Impersonate-Extra-Scopes", "view"),
        ("Impersonate-Extra-Scopes", "edit"),
    ]);
    let acting = acting_as(&rbac(), &admin, &asked)
        .expect("allowed")
        .expect("impersonated");
    assert_eq!(acting.user, "system:anonymous");
    assert_eq!(acting.groups, ["system:unauthenticated"]);
    assert_eq!(acting.uid.as_deref(), Some("u-1"));
    assert_eq!(
        acting.user_info()["extra"],
        serde_json::json!({"scopes": ["view", "edit"]})
    );
    let asked = headers(&[
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "system:unauthenticated"),
    ]);
    let acting = acting_as(&rbac(), &admin, &asked)
        .expect("allowed")
        .expect("impersonated");
    assert_eq!(acting.groups, ["system:unauthenticated"], "nothing implied");
}

#[test]
fn malformed_impersonation_is_a_bad_request() {
    let bad = |pairs: &[(&str, &str)]| {
        let error = acting_as(&rbac(), &support(), &headers(pairs)).expect_err("refused");
        assert_eq!(error.code, 400, "{pairs:?}: {}", error.message);
    };
    bad(&[("Impersonate-Group", "developers")]);
    bad(&[("Impersonate-User", ""), ("Impersonate-Uid", "1")]);
    assert_eq!(
        acting_as(&rbac(), &support(), &headers(&[("Impersonate-Uid", "")])).expect("no error"),
        None,
        "an empty uid alone is no impersonation"
    );
    bad(&[("Impersonate-Extra-scopes", "view")]);
    bad(&[("Impersonate-User", "jane"), ("Impersonate-User", "bob")]);
    bad(&[
        ("Impersonate-User", "jane"),
        ("Impersonate-Extra-a%zz", "v"),
    ]);
    let mut latin1 = headers(&[]);
    latin1.insert(
        HeaderName::from_static("impersonate-user"),
        HeaderValue::from_bytes(b"j\xe4ne").expect("obs-text value"),
    );
    let error = acting_as(&rbac(), &support(), &latin1).expect_err("refused");
    assert_eq!(error.code, 400);
}

#[test]
fn extra_keys_are_percent_decoded() {
    assert_eq!(
        unescape_extra_key("acme.com%2fproject").as_deref(),
        Some("acme.com/project")
    );
    assert_eq!(unescape_extra_key("plain").as_deref(), Some("plain"));
    assert_eq!(unescape_extra_key("%e2%82%ac").as_deref(), Some("€"));
    assert_eq!(unescape_extra_key("%2"), None);
    assert_eq!(unescape_extra_key("%ff"), None);
}
