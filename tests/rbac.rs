//! RBAC in the embedded API server, with real kubectl: ServiceAccounts and their tokens
//! (`kubectl create token`), Roles and bindings enforced on every request with
//! kube-apiserver's 403, and `kubectl auth can-i` answering from the same rules.

use std::time::Duration;

use crate::support::{Devplane, stderr, stdout, wait_until};

const GRANTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: plant}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: plant}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: plant}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: device-reader, namespace: plant}
rules:
  - apiGroups: [iot.devplane.io]
    resources: [devices]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [allowed]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: plant}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: device-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: plant}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: allowed, namespace: plant}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: hidden, namespace: plant}
"#;

fn token(devplane: &Devplane, account: &str) -> String {
    devplane
        .kubectl_ok(&[
            "create",
            "token",
            account,
            "-n",
            "plant",
            "--duration",
            "15m",
        ])
        .trim()
        .to_string()
}

/// kubectl as the bearer of `token`: (success, stdout, stderr).
fn as_token(devplane: &Devplane, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    let output = devplane.kubectl(&all);
    (output.status.success(), stdout(&output), stderr(&output))
}

#[test]
fn roles_and_bindings_decide_what_a_service_account_token_may_do() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    let reader = token(&devplane, "reader");
    assert!(reader.starts_with("dpsa."), "{reader}");

    let (ok, out, err) = as_token(&devplane, &reader, &["get", "devices", "-n", "plant"]);
    assert!(ok, "a granted list: {out}{err}");
    let (ok, _, err) = as_token(
        &devplane,
        &reader,
        &["get", "configmap", "allowed", "-n", "plant"],
    );
    assert!(ok, "a granted name: {err}");

    for (args, message) in [
        (
            vec!["get", "devices", "-n", "other"],
            r#"devices.iot.devplane.io is forbidden: User "system:serviceaccount:plant:reader" cannot list resource "devices" in API group "iot.devplane.io" in the namespace "other""#,
        ),
        (
            vec!["get", "secrets", "-n", "plant"],
            r#"secrets is forbidden: User "system:serviceaccount:plant:reader" cannot list resource "secrets" in API group "" in the namespace "plant""#,
        ),
        (
            vec!["get", "configmap", "hidden", "-n", "plant"],
            r#"configmaps "hidden" is forbidden: User "system:serviceaccount:plant:reader" cannot get resource "configmaps" in API group "" in the namespace "plant""#,
        ),
        (
            vec!["delete", "device", "x", "-n", "plant"],
            r#"cannot delete resource "devices" in API group "iot.devplane.io" in the namespace "plant""#,
        ),
        (
            vec!["get", "namespaces"],
            r#"cannot list resource "namespaces" in API group "" at the cluster scope"#,
        ),
    ] {
        let (ok, _, err) = as_token(&devplane, &reader, &args);
        assert!(!ok, "{args:?} must be refused");
        assert!(err.contains(message), "{args:?}: {err}");
    }

    // The raw answer is kube-apiserver's Status.
    let (code, body) = devplane.curl(
        "GET",
        "/api/v1/namespaces/plant/secrets",
        Some(&reader),
        None,
    );
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);

    // A token without bindings: discovery and /version only.
    let nobody = token(&devplane, "nobody");
    let (ok, _, err) = as_token(&devplane, &nobody, &["api-resources"]);
    assert!(ok, "discovery stays open: {err}");
    assert_eq!(devplane.curl("GET", "/version", Some(&nobody), None).0, 200);
    for path in [
        "/api/v1/namespaces",
        "/api/v1/namespaces/plant/configmaps",
        "/apis/iot.devplane.io/v1alpha1/devices",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    ] {
        assert_eq!(
            devplane.curl("GET", path, Some(&nobody), None).0,
            403,
            "{path}"
        );
    }
    assert_eq!(
        devplane
            .curl("GET", "/api/v1/namespaces", Some("dpsa.forged.token"), None)
            .0,
        401
    );

    // A grant holds for the very next request; so does its removal (roles made the
    // README's way, with kubectl create).
    devplane.kubectl_ok(&[
        "create",
        "role",
        "model-reader",
        "-n",
        "plant",
        "--verb=get,list",
        "--resource=devicemodels",
    ]);
    devplane.kubectl_ok(&[
        "create",
        "rolebinding",
        "nobody-models",
        "-n",
        "plant",
        "--role=model-reader",
        "--serviceaccount=plant:nobody",
    ]);
    assert!(as_token(&devplane, &nobody, &["get", "devicemodels", "-n", "plant"]).0);
    devplane.kubectl_ok(&[
        "create",
        "rolebinding",
        "nobody-reads",
        "-n",
        "plant",
        "--role=device-reader",
        "--serviceaccount=plant:nobody",
    ]);
    assert!(as_token(&devplane, &nobody, &["get", "devices", "-n", "plant"]).0);
    devplane.kubectl_ok(&["delete", "rolebinding", "nobody-reads", "-n", "plant"]);
    assert!(!as_token(&devplane, &nobody, &["get", "devices", "-n", "plant"]).0);

    // Deleting the ServiceAccount ends its tokens.
    devplane.kubectl_ok(&["delete", "serviceaccount", "reader", "-n", "plant"]);
    wait_until(
        "the deleted account's token to stop working",
        Duration::from_secs(15),
        || {
            devplane
                .curl(
                    "GET",
                    "/apis/iot.devplane.io/v1alpha1/namespaces/plant/devices",
                    Some(&reader),
                    None,
                )
                .0
                == 401
        },
    );
}

/// A ServiceAccount that may write Roles and RoleBindings in plant, and read devices there.
const DELEGATE: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: delegate, namespace: plant}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-writer, namespace: plant}
rules:
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [roles, rolebindings]
    verbs: [create, get, list, update, patch, delete]
  - apiGroups: [iot.devplane.io]
    resources: [devices]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: delegate, namespace: plant}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-writer}
subjects: [{kind: ServiceAccount, name: delegate, namespace: plant}]
"#;

#[test]
fn writing_roles_and_bindings_grants_nothing_the_writer_does_not_hold() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    devplane.apply_yaml(DELEGATE);
    let delegate = token(&devplane, "delegate");
    let kubectl = |args: &[&str]| as_token(&devplane, &delegate, args);
    let not_held = "is attempting to grant RBAC permissions not currently held";

    // kubectl as the delegate, with a command line of words.
    let run = |line: &str| kubectl(&line.split_whitespace().collect::<Vec<_>>());
    let refused = |line: &str, wanted: &str| {
        let (ok, _, err) = run(line);
        assert!(!ok && err.contains(wanted), "{line}: {err}");
    };
    let allowed = |line: &str| {
        let (ok, _, err) = run(line);
        assert!(ok, "{line}: {err}");
    };
    // Binding cluster-admin to itself, or writing a role with more than it holds: refused.
    let grab = "create rolebinding grab -n plant --clusterrole=cluster-admin --serviceaccount=plant:delegate";
    refused(grab, not_held);
    refused(
        "create role everything -n plant --verb=* --resource=*.*",
        not_held,
    );
    refused(
        "create role deleter -n plant --verb=get,delete --resource=devices.iot.devplane.io",
        r#"Verbs:["get", "delete"]"#,
    );
    // What it holds it may pass on, and bind.
    allowed("create role devices -n plant --verb=get,list --resource=devices.iot.devplane.io");
    allowed("create rolebinding devices -n plant --role=devices --serviceaccount=plant:reader");
    // A role it may not widen; it may still relabel it.
    let (ok, _, err) = kubectl(&[
        "patch",
        "role",
        "devices",
        "-n",
        "plant",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/rules/0/verbs/-","value":"delete"}]"#,
    ]);
    assert!(!ok && err.contains(not_held), "{err}");
    allowed("label role rbac-writer -n plant team=iot");

    // A server-side apply that would create needs create, not only patch.
    let manifest = devplane.dir.join("new-configmap.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new, namespace: plant}\n",
    )
    .expect("manifest");
    let manifest = manifest.to_string_lossy().into_owned();
    let apply = format!("apply --server-side -f {manifest}");
    refused(&apply, r#"cannot create resource "configmaps""#);
    refused(
        &format!("{apply} --dry-run=server"),
        r#"cannot create resource "configmaps""#,
    );

    // Allowed to bind cluster-admin (the bind verb on it), it may.
    devplane.apply_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: binder, namespace: plant}
rules:
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [clusterroles]
    resourceNames: [cluster-admin]
    verbs: [bind]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: binder, namespace: plant}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: binder}
subjects: [{kind: ServiceAccount, name: delegate, namespace: plant}]
"#,
    );
    wait_until("the bind verb is in force", Duration::from_secs(10), || {
        run(grab).0
    });
}

#[test]
fn the_tokens_of_a_deleted_account_stop_working_while_it_waits_on_finalizers() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    devplane.apply_yaml(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: leaving, namespace: plant, finalizers: [example.com/hold]}
"#,
    );
    let leaving = token(&devplane, "leaving");
    let path = "/api/v1/namespaces/plant/configmaps";
    assert_eq!(
        devplane.curl("GET", path, Some(&leaving), None).0,
        403,
        "authenticated, not authorized"
    );
    devplane.kubectl_ok(&[
        "delete",
        "serviceaccount",
        "leaving",
        "-n",
        "plant",
        "--wait=false",
    ]);
    wait_until("the token to be refused", Duration::from_secs(15), || {
        devplane.curl("GET", path, Some(&leaving), None).0 == 401
    });
}

#[test]
fn a_token_minted_for_another_audience_does_not_authenticate() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    let elsewhere = devplane
        .kubectl_ok(&[
            "create",
            "token",
            "reader",
            "-n",
            "plant",
            "--audience",
            "https://vault.example",
        ])
        .trim()
        .to_string();
    let path = "/apis/iot.devplane.io/v1alpha1/namespaces/plant/devices";
    assert_eq!(devplane.curl("GET", path, Some(&elsewhere), None).0, 401);
    let here = token(&devplane, "reader");
    assert_eq!(devplane.curl("GET", path, Some(&here), None).0, 200);
}

#[test]
fn namespaces_are_not_deleted_as_a_collection() {
    let devplane = Devplane::start(&[]);
    let (code, body) = devplane.curl(
        "DELETE",
        "/api/v1/namespaces",
        Some(&devplane.token()),
        None,
    );
    assert_eq!(code, 405, "{body}");
    devplane.kubectl_ok(&["get", "namespace", "default", "kube-system"]);
    let phase = devplane.kubectl_ok(&[
        "get",
        "namespace",
        "default",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(phase.trim(), "Active");
}

#[test]
fn kubectl_auth_can_i_answers_from_the_same_rules() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    let reader = token(&devplane, "reader");
    let cases = [
        (vec!["list", "devices", "-n", "plant"], "yes"),
        (
            vec!["watch", "devices.iot.devplane.io", "-n", "plant"],
            "yes",
        ),
        (vec!["create", "devices", "-n", "plant"], "no"),
        (vec!["list", "devices", "-n", "other"], "no"),
        (vec!["get", "configmaps/allowed", "-n", "plant"], "yes"),
        (vec!["get", "configmaps/hidden", "-n", "plant"], "no"),
        (vec!["list", "secrets", "-n", "plant"], "no"),
        (vec!["list", "namespaces"], "no"),
    ];
    for (args, want) in cases {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(&args);
        let (_, out, err) = as_token(&devplane, &reader, &all);
        assert_eq!(out.trim(), want, "can-i {args:?}: {err}");
    }
    let (_, out, _) = devplane
        .kubectl(&["auth", "can-i", "delete", "secrets", "-A"])
        .pipe(|o| (o.status.success(), stdout(&o), stderr(&o)));
    assert_eq!(out.trim(), "yes", "the admin may do everything");
    let (ok, out, err) = as_token(
        &devplane,
        &reader,
        &["auth", "can-i", "--list", "-n", "plant"],
    );
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("devices.iot.devplane.io") && l.contains("[get list watch]")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("configmaps") && l.contains("[allowed]")),
        "{out}"
    );
}

#[test]
fn impersonation_acts_as_the_identity_asked_for_only_with_permission_to_impersonate_it() {
    let devplane = Devplane::start(&[]);
    devplane.apply_yaml(GRANTS);
    // The admin (system:masters) may impersonate anyone; the answers are the impersonated
    // identity's own.
    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        stdout(&devplane.kubectl(&all)).trim().to_string()
    };
    let reader = "system:serviceaccount:plant:reader";
    let nobody = "system:serviceaccount:plant:nobody";
    assert_eq!(
        can_i(&["list", "devices", "-n", "plant", "--as", reader]),
        "yes"
    );
    assert_eq!(
        can_i(&["list", "devices", "-n", "plant", "--as", nobody]),
        "no"
    );
    assert_eq!(
        can_i(&[
            "list",
            "devices",
            "-n",
            "plant",
            "--as",
            "jane",
            "--as-group",
            "auditors"
        ]),
        "no"
    );
    assert!(
        devplane
            .kubectl(&["get", "devices", "-n", "plant", "--as", reader])
            .status
            .success()
    );
    let denied = devplane.kubectl(&["get", "devices", "-n", "plant", "--as", nobody]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains(&format!(
            r#"User "{nobody}" cannot list resource "devices""#
        )),
        "{}",
        stderr(&denied)
    );
    // `kubectl auth whoami` names the identity a request is made as.
    let whoami = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["auth", "whoami", "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&devplane.kubectl_ok(&all)).expect("SelfSubjectReview JSON")
    };
    assert_eq!(whoami(&[])["status"]["userInfo"]["username"], "admin");
    let jane = whoami(&["--as", "jane", "--as-group", "auditors", "--as-uid", "42"]);
    assert_eq!(
        jane["status"]["userInfo"],
        serde_json::json!({"username": "jane", "uid": "42", "groups": ["auditors", "system:authenticated"]})
    );
    // A caller without `impersonate` cannot become the admin, nor add a group to itself.
    let token = token(&devplane, "reader");
    let (ok, _, err) = as_token(
        &devplane,
        &token,
        &["get", "secrets", "-n", "plant", "--as", "admin"],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"users "admin" is forbidden: User "{reader}" cannot impersonate resource "users" in API group "" at the cluster scope"#
        )),
        "{err}"
    );
    let (ok, _, err) = as_token(
        &devplane,
        &token,
        &[
            "get",
            "secrets",
            "-n",
            "plant",
            "--as",
            reader,
            "--as-group",
            "system:masters",
        ],
    );
    assert!(!ok);
    assert!(err.contains("cannot impersonate resource"), "{err}");
    // Granted `impersonate` on one ServiceAccount, it may act as that one only.
    devplane.apply_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: impersonate-nobody, namespace: plant}
rules:
  - apiGroups: [""]
    resources: [serviceaccounts]
    resourceNames: [nobody]
    verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-impersonates-nobody, namespace: plant}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonate-nobody}
subjects: [{kind: ServiceAccount, name: reader, namespace: plant}]
"#,
    );
    let (_, out, err) = as_token(
        &devplane,
        &token,
        &[
            "auth", "can-i", "list", "devices", "-n", "plant", "--as", nobody,
        ],
    );
    assert_eq!(out.trim(), "no", "{err}");
    let (ok, _, err) = as_token(
        &devplane,
        &token,
        &["get", "configmaps", "-n", "plant", "--as", nobody],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"User "{nobody}" cannot list resource "configmaps""#
        )),
        "{err}"
    );
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}

impl<T> Pipe for T {}

#[test]
fn the_audit_log_records_who_did_what_and_no_secret_data() {
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let audit = audit_dir.path().join("audit.log");
    let devplane = Devplane::start(&["--audit-log", audit.to_str().expect("utf-8 path")]);
    devplane.apply_yaml(GRANTS);
    devplane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        "-n",
        "plant",
        "--from-literal=password=hunter2-very-secret",
    ]);
    // Plain text where base64 belongs: refused, and the answer (which the audit log keeps)
    // does not repeat it.
    let (code, body) = devplane.curl(
        "POST",
        "/api/v1/namespaces/plant/secrets",
        Some(&devplane.token()),
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"plain"},"data":{"password":"hunter2 in plain text"}}"#),
    );
    assert_eq!(code, 422, "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    let reader = token(&devplane, "reader");
    assert!(
        !as_token(
            &devplane,
            &reader,
            &["get", "secret", "vault", "-n", "plant"]
        )
        .0
    );
    assert!(as_token(&devplane, &reader, &["get", "devices", "-n", "plant"]).0);

    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let find = |events: &[serde_json::Value], verb: &str, resource: &str, code: u64| {
        events.iter().any(|e| {
            e["user"]["username"] == "system:serviceaccount:plant:reader"
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["namespace"] == "plant"
                && e["responseStatus"]["code"] == code
        })
    };
    wait_until(
        "the audit log to show both requests",
        Duration::from_secs(10),
        || {
            let events = events();
            find(&events, "get", "secrets", 403) && find(&events, "list", "devices", 200)
        },
    );
    let events = events();
    assert!(
        events
            .iter()
            .all(|e| e["apiVersion"] == "audit.k8s.io/v1" && e["level"] == "Metadata"),
        "every line is an audit Event"
    );
    assert!(
        events.iter().any(|e| e["user"]["username"] == "admin"
            && e["verb"] == "create"
            && e["objectRef"]["resource"] == "secrets"
            && e["objectRef"]["name"].is_null()
            && e["responseStatus"]["code"] == 201),
        "the admin's create is there too"
    );
    let text = std::fs::read_to_string(&audit).expect("audit log");
    assert!(!text.contains("hunter2"), "no Secret data in the audit log");
    assert!(!text.contains(&base64_of("hunter2-very-secret")));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn kubectl_auth_can_i_answers_for_the_install_identities() {
    // `devplane up` applies the install's identities and roles (manifests/deploy/base/rbac).
    let devplane = Devplane::start(&[]);
    let token_of = |account: &str| {
        devplane
            .kubectl_ok(&["create", "token", account, "-n", "devplane-system"])
            .trim()
            .to_string()
    };
    let controller = token_of("devplane-controller");
    let frontdoor = token_of("devplane-frontdoor");
    let cases: [(&str, &[&str], &str); 17] = [
        (
            &controller,
            &["list", "devices.iot.devplane.io", "-A"],
            "yes",
        ),
        (
            &controller,
            &[
                "patch",
                "devices.iot.devplane.io",
                "--subresource=status",
                "-n",
                "plant",
            ],
            "yes",
        ),
        (&controller, &["create", "secrets", "-n", "plant"], "yes"),
        (&controller, &["update", "secrets", "-n", "plant"], "no"),
        (
            &controller,
            &["deletecollection", "secrets", "-n", "plant"],
            "no",
        ),
        (
            &controller,
            &["delete", "devices.iot.devplane.io", "-n", "plant"],
            "no",
        ),
        (
            &controller,
            &["create", "leases", "-n", "devplane-system"],
            "yes",
        ),
        (
            &controller,
            &["create", "leases", "-n", "kube-system"],
            "no",
        ),
        (&controller, &["list", "namespaces"], "no"),
        (&frontdoor, &["list", "secrets", "-A"], "yes"),
        (&frontdoor, &["create", "secrets", "-n", "plant"], "no"),
        (
            &frontdoor,
            &[
                "patch",
                "devices.iot.devplane.io",
                "--subresource=status",
                "-n",
                "plant",
            ],
            "yes",
        ),
        (
            &frontdoor,
            &["update", "devices.iot.devplane.io", "-n", "plant"],
            "no",
        ),
        (&frontdoor, &["create", "secrets", "-n", "plant"], "no"),
        (
            &frontdoor,
            &["create", "devices.iot.devplane.io", "-n", "plant"],
            "yes",
        ),
        (
            &frontdoor,
            &["delete", "devices.iot.devplane.io", "-n", "plant"],
            "no",
        ),
        (
            &frontdoor,
            &["list", "onboardingbatches.iot.devplane.io", "-A"],
            "no",
        ),
    ];
    for (token, args, want) in cases {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let (_, out, err) = as_token(&devplane, token, &all);
        let who = if token == controller {
            "controller"
        } else {
            "front door"
        };
        assert_eq!(out.trim(), want, "{who} can-i {args:?}: {err}");
    }
}
