//! `devplane webhook` against `devplane up`: AdmissionReviews as kube-apiserver sends them, over
//! TLS, answered from what the webhook's watches see; and the embedded server calling it for
//! a ValidatingWebhookConfiguration, honouring failurePolicy and dry run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Background, DATALOGGER_GATEWAY, Devplane, stdout, wait_until};

struct Webhook {
    child: Child,
    addr: String,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the webhook with devplane up's own serving certificate (valid for 127.0.0.1).
fn start(devplane: &Devplane) -> Webhook {
    start_with(devplane, &devplane.dir.join("pki"), "127.0.0.1:0")
}

/// Start the webhook on `addr` with the certificate in `pki` (apiserver.crt and .key).
fn start_with(devplane: &Devplane, pki: &std::path::Path, addr: &str) -> Webhook {
    let log = devplane
        .dir
        .join(format!("webhook-{}.out", addr.replace(':', "-")));
    let child = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(["webhook", "--addr", addr, "--admin-addr", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .arg("--tls-cert-file")
        .arg(pki.join("apiserver.crt"))
        .arg("--tls-key-file")
        .arg(pki.join("apiserver.key"))
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("devplane webhook runs");
    let mut addr = String::new();
    wait_until("the webhook's address", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text
            .lines()
            .find_map(|l| l.strip_prefix("admission webhook listening on https://"))
        {
            Some(a) => {
                addr = a.trim_end_matches("/validate").to_string();
                true
            }
            None => false,
        }
    });
    Webhook { child, addr }
}

fn review(
    devplane: &Devplane,
    webhook: &Webhook,
    kind: &str,
    operation: &str,
    object: Value,
) -> Value {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "8a2f-1",
            "kind": {"group": "iot.devplane.io", "version": "v1alpha1", "kind": kind},
            "operation": operation,
            "object": object,
            "dryRun": false,
        }
    });
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(devplane.dir.join("pki/ca.crt"))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(format!("https://{}/validate", webhook.addr))
        .output()
        .expect("curl runs");
    serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| panic!("{}: {e}", stdout(&output)))
}

#[test]
fn the_webhook_refuses_what_cel_cannot_check_and_admits_the_rest() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(DATALOGGER_GATEWAY);
    let webhook = start(&devplane);
    let device = |spec: Value| {
        json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device",
               "metadata": {"name": "new-meter", "namespace": "metering"}, "spec": spec})
    };
    let answer = |kind: &str, object: Value| {
        let mut last = Value::Null;
        // The webhook's watches list first; until then a model may look missing.
        wait_until("the webhook's answer", Duration::from_secs(20), || {
            last = review(&devplane, &webhook, kind, "CREATE", object.clone());
            last["response"]["uid"] == "8a2f-1"
        });
        last["response"].clone()
    };
    wait_until(
        "the webhook to know the example's models",
        Duration::from_secs(20),
        || {
            answer(
                "Device",
                device(
                    json!({"modelRef": {"name": "energy-meter"}, "attributes": {"modbusAddress": 7}}),
                ),
            )["allowed"]
                == true
        },
    );
    let cases = [
        (
            "Device",
            device(json!({"modelRef": {"name": "no-such-model"}})),
            "model metering/no-such-model does not resolve",
        ),
        (
            "Device",
            device(
                json!({"modelRef": {"name": "energy-meter"}, "attributes": {"modbusAddress": 900}}),
            ),
            "spec.attributes",
        ),
        (
            "Device",
            device(
                json!({"modelRef": {"name": "energy-meter"}, "attributes": {"modbusAddress": 7},
                          "connection": {"gatewayRef": {"name": "no-such-gateway"}}}),
            ),
            "gateway metering/no-such-gateway does not exist",
        ),
        (
            "DeviceCommand",
            json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceCommand",
                   "metadata": {"name": "c", "namespace": "metering"},
                   "spec": {"device": "feeder-1-meter", "service": "selfDestruct"}}),
            "selfDestruct",
        ),
        (
            "Gateway",
            json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Gateway",
                   "metadata": {"name": "g", "namespace": "metering"},
                   "spec": {"modelRef": {"name": "no-such-model"}}}),
            "does not resolve",
        ),
    ];
    for (kind, object, reason) in cases {
        let response = answer(kind, object);
        assert_eq!(response["allowed"], false, "{kind}: {response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{kind}: {message}");
    }
    let command = answer(
        "DeviceCommand",
        json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceCommand",
               "metadata": {"name": "c", "namespace": "metering"},
               "spec": {"device": "feeder-1-meter", "service": "resetCumulativeEnergy"}}),
    );
    assert_eq!(command["allowed"], true, "{command}");
    let delete = review(
        &devplane,
        &webhook,
        "Device",
        "DELETE",
        device(json!({"modelRef": {"name": "no-such-model"}})),
    );
    assert_eq!(delete["response"]["allowed"], true, "deletes always pass");
}

/// The webhook registration of the deployment manifests (`manifests/deploy`, rendered by
/// kubectl kustomize), with the test CA as its caBundle and the given failure policy.
fn registration(ca_pem: &str, failure_policy: &str) -> String {
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut configuration = crate::deploy::documents(&crate::deploy::kustomize("manifests/deploy"))
        .into_iter()
        .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .expect("the install registers the webhook");
    for hook in configuration["webhooks"].as_array_mut().expect("webhooks") {
        hook["clientConfig"]["caBundle"] = bundle.clone().into();
        hook["failurePolicy"] = failure_policy.into();
    }
    serde_yaml::to_string(&configuration).expect("YAML")
}

const BAD_MODEL: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: stray-meter, namespace: metering}
spec:
  modelRef: {name: no-such-model}
"#;

const OUT_OF_RANGE: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: wild-meter, namespace: metering}
spec:
  modelRef: {name: energy-meter}
  attributes: {modbusAddress: 900}
"#;

const GOOD: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: fine-meter, namespace: metering}
spec:
  modelRef: {name: energy-meter}
  attributes: {modbusAddress: 8}
"#;

/// kubectl apply of a manifest from standard input: (success, stdout + stderr).
fn apply(devplane: &Devplane, yaml: &str, extra: &[&str]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("manifest written");
    let output = child.wait_with_output().expect("kubectl output");
    (
        output.status.success(),
        format!("{}{}", stdout(&output), crate::support::stderr(&output)),
    )
}

#[test]
fn the_embedded_server_calls_the_registered_webhook_and_honours_its_failure_policy() {
    let certificates = tempfile::tempdir().expect("temp dir");
    let pki = devplane_runtime::pki::ensure(
        certificates.path(),
        &["devplane-webhook.devplane-system.svc".to_string()],
    )
    .expect("a certificate for the webhook's Service name");
    let port = crate::support::free_port();
    let address = format!("127.0.0.1:{port}");
    let devplane = Devplane::start(&[
        "--webhook-service",
        &format!("devplane-system/devplane-webhook={address}"),
    ]);
    devplane.apply_examples(DATALOGGER_GATEWAY);
    let webhook = start_with(&devplane, certificates.path(), &address);
    devplane.apply_yaml(&registration(&pki.ca_cert_pem, "Fail"));

    // Once the webhook's watches have listed the models, a good device passes.
    wait_until(
        "a good device to be admitted",
        Duration::from_secs(20),
        || apply(&devplane, GOOD, &[]).0,
    );
    let (ok, out) = apply(&devplane, BAD_MODEL, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"admission webhook "validate.iot.devplane.io" denied the request: spec.modelRef: model metering/no-such-model does not resolve"#),
        "{out}"
    );
    let (ok, out) = apply(&devplane, OUT_OF_RANGE, &[]);
    assert!(!ok && out.contains("spec.attributes"), "{out}");
    let (ok, out) = apply(&devplane, OUT_OF_RANGE, &["--dry-run=server"]);
    assert!(
        !ok && out.contains("denied the request"),
        "a dry run is checked too: {out}"
    );
    assert!(
        !devplane
            .kubectl(&["get", "device", "stray-meter", "-n", "metering"])
            .status
            .success(),
        "nothing refused was stored"
    );

    // The webhook stops: Fail refuses, Ignore admits.
    drop(webhook);
    let (ok, out) = apply(&devplane, OUT_OF_RANGE, &[]);
    assert!(!ok && out.contains("failed calling webhook"), "{out}");
    devplane.apply_yaml(&registration(&pki.ca_cert_pem, "Ignore"));
    let (ok, out) = apply(&devplane, OUT_OF_RANGE, &[]);
    assert!(
        ok,
        "failurePolicy Ignore admits while the webhook is down: {out}"
    );
}

/// `devplane up` reaching the Service webhooks/guard at the Python webhooks
/// (`tests/python/admission_webhook.py`), which serve a certificate for that Service's name.
struct Guarded {
    devplane: Devplane,
    /// The Python webhooks: what they print.
    guard: Background,
    /// Their CA, as a caBundle.
    bundle: String,
    _certificates: tempfile::TempDir,
}

fn guarded() -> Guarded {
    let certificates = tempfile::tempdir().expect("temp dir");
    let pki =
        devplane_runtime::pki::ensure(certificates.path(), &["guard.webhooks.svc".to_string()])
            .expect("a certificate for the webhook's Service name");
    let port = crate::support::free_port();
    let devplane = Devplane::start(&[
        "--webhook-service",
        &format!("webhooks/guard=127.0.0.1:{port}"),
    ]);
    let mut webhook = Command::new("python3");
    webhook
        .arg(crate::support::repo().join("tests/python/admission_webhook.py"))
        .arg(port.to_string())
        .arg(certificates.path().join("apiserver.crt"))
        .arg(certificates.path().join("apiserver.key"));
    let guard = Background::spawn(webhook);
    guard.wait_for_line("the webhook to listen", Duration::from_secs(20), |l| {
        l == "listening"
    });
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&pki.ca_cert_pem);
    Guarded {
        devplane,
        guard,
        bundle,
        _certificates: certificates,
    }
}

#[test]
fn deletes_reach_validating_webhooks_with_the_object_the_options_and_the_user() {
    // Also: writes carry their options, and a Namespace is judged by its own labels under
    // a namespaceSelector. The webhook refuses deleting protected ConfigMaps and prints what
    // it was asked.
    let Guarded {
        devplane,
        guard,
        bundle,
        ..
    } = guarded();
    devplane.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: plant}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: keep, namespace: plant, labels: {{protected: "true"}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: scratch, namespace: plant}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: guard}}
webhooks:
  - name: guard.example.com
    clientConfig:
      service: {{namespace: webhooks, name: guard, path: /validate}}
      caBundle: {bundle}
    rules:
      - operations: [DELETE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [configmaps]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
  - name: guarded.example.com
    clientConfig:
      service: {{namespace: webhooks, name: guard, path: /validate}}
      caBundle: {bundle}
    rules:
      - operations: [CREATE, UPDATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [namespaces, configmaps]
    namespaceSelector:
      matchLabels: {{guarded: "true"}}
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
  - name: tokens.example.com
    clientConfig:
      service: {{namespace: webhooks, name: guard, path: /validate}}
      caBundle: {bundle}
    rules:
      - operations: [CREATE]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [serviceaccounts/token]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
"#
    ));
    // TokenRequests are admitted like writes: a webhook can refuse one.
    devplane.kubectl_ok(&["create", "serviceaccount", "locked", "-n", "plant"]);
    devplane.kubectl_ok(&["create", "serviceaccount", "free", "-n", "plant"]);
    assert!(
        !devplane
            .kubectl_ok(&["create", "token", "free", "-n", "plant"])
            .is_empty()
    );
    let output = devplane.kubectl(&["create", "token", "locked", "-n", "plant"]);
    assert!(!output.status.success(), "a token was issued for locked");
    let err = crate::support::stderr(&output);
    assert!(
        err.contains(r#"admission webhook "tokens.example.com" denied the request: tokens for locked are not issued"#),
        "{err}"
    );
    // Writes in a namespace the selector picks are reviewed with their options; a Namespace
    // is picked by its own labels, so only `guarded` is reviewed of the two.
    devplane.apply_yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: guarded, labels: {guarded: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: open}
"#,
    );
    devplane.kubectl_ok(&["create", "configmap", "probe", "-n", "guarded"]);
    devplane.kubectl_ok(&["label", "configmap", "probe", "-n", "guarded", "seen=yes"]);
    devplane.kubectl_ok(&["create", "configmap", "probe", "-n", "open"]);
    // The webhook answers one review at a time, printing it first: once the last write's
    // review is read, every earlier one is.
    devplane.kubectl_ok(&["create", "configmap", "last", "-n", "guarded"]);
    guard.wait_for_line("the last write's review", Duration::from_secs(20), |l| {
        l == "review CREATE admin last True False CreateOptions -"
    });
    let reviewed = guard.lines();
    for line in [
        "review CREATE admin guarded True False CreateOptions -",
        "review CREATE admin probe True False CreateOptions -",
        "review UPDATE admin probe True True UpdateOptions -",
    ] {
        assert!(reviewed.contains(&line.to_string()), "{line}: {reviewed:?}");
    }
    for name in ["open", "probe"] {
        let count = reviewed
            .iter()
            .filter(|l| l.starts_with("review CREATE") && l.contains(&format!(" {name} ")))
            .count();
        let expected = usize::from(name == "probe");
        assert_eq!(count, expected, "CREATE reviews of {name}: {reviewed:?}");
    }
    let refused = |args: &[&str], user: &str| {
        let output = devplane.kubectl(args);
        let err = crate::support::stderr(&output);
        assert!(!output.status.success(), "{args:?} was admitted");
        assert!(
            err.contains(&format!(
                r#"admission webhook "guard.example.com" denied the request: deleting protected objects is not allowed (asked by {user})"#
            )),
            "{args:?}: {err}"
        );
    };
    // Deleting `keep`, with `extra` arguments.
    let keep = |extra: &[&'static str]| {
        let mut args = vec!["delete", "configmap", "keep", "-n", "plant"];
        args.extend_from_slice(extra);
        args
    };
    refused(&keep(&[]), "admin");
    refused(&keep(&["--dry-run=server"]), "admin");
    refused(&keep(&["--grace-period=7"]), "admin");
    // The review names the identity the request acts as.
    refused(
        &keep(&["--as", "jane", "--as-group", "system:masters"]),
        "jane",
    );
    devplane.kubectl_ok(&["delete", "configmap", "scratch", "-n", "plant"]);
    refused(&["delete", "configmaps", "--all", "-n", "plant"], "admin");
    assert!(
        devplane
            .kubectl(&["get", "configmap", "keep", "-n", "plant"])
            .status
            .success(),
        "the protected ConfigMap is still there"
    );
    // A delete's review: the object being deleted as oldObject, no object, DeleteOptions.
    let lines = guard.lines();
    assert!(
        lines.contains(&"review DELETE admin keep False True DeleteOptions 7".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"review DELETE admin scratch False True DeleteOptions -".to_string()),
        "{lines:?}"
    );

    // The server's own deletes are admitted as kube-controller-manager's would be: a missing
    // owner does not get a protected object deleted, nor does deleting its namespace.
    devplane.apply_yaml(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: orphan
  namespace: plant
  labels: {protected: "true"}
  ownerReferences:
    - {apiVersion: v1, kind: ConfigMap, name: gone, uid: 5b0e3a5c-1f7d-4c2a-9a43-000000000001}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: loose, namespace: plant}
"#,
    );
    let log = &guard;
    let asked_by = |controller: &str, name: &str| {
        let line = format!(
            "review DELETE system:serviceaccount:kube-system:{controller} {name} False True DeleteOptions -"
        );
        move || log.lines().contains(&line)
    };
    wait_until(
        "the garbage collector to ask the webhook",
        Duration::from_secs(30),
        asked_by("generic-garbage-collector", "orphan"),
    );
    devplane.kubectl_ok(&["delete", "namespace", "plant", "--wait=false"]);
    wait_until(
        "the namespace controller to ask the webhook",
        Duration::from_secs(30),
        asked_by("namespace-controller", "keep"),
    );
    wait_until(
        "the namespace's other objects to go",
        Duration::from_secs(30),
        || {
            !devplane
                .kubectl(&["get", "configmap", "loose", "-n", "plant"])
                .status
                .success()
        },
    );
    let left = devplane.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "plant",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(left, "keep orphan", "the protected objects stay");
    assert_eq!(
        devplane.kubectl_ok(&[
            "get",
            "namespace",
            "plant",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Terminating"
    );
}

#[test]
fn mutating_webhooks_change_objects_in_order_and_are_called_again_if_needed() {
    let Guarded {
        devplane,
        guard,
        bundle,
        ..
    } = guarded();
    // `stamp` adds stamped=true and asks to be called again if a later webhook changes the
    // object; `note` and `tag`, in configurations named after it, add noted=true and
    // tagged=true and do not ask. `tag` is not called for objects labelled `untagged`, and
    // `note`'s condition cannot be evaluated for the object called cond-error (it has no data).
    let configuration =
        |name: &str, path: &str, reinvoke: &str, operations: &str, conditions: &str| {
            format!(
                r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
  - name: {path}.example.com
    clientConfig:
      service: {{namespace: webhooks, name: guard, path: /mutate-{path}}}
      caBundle: {bundle}
    rules:
      - operations: [{operations}]
        apiGroups: [""]
        apiVersions: [v1]
        resources: [configmaps]
    namespaceSelector:
      matchLabels: {{mutate: "yes"}}
    reinvocationPolicy: {reinvoke}
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
    matchConditions: {conditions}
"#
            )
        };
    devplane.apply_yaml(&format!(
        "{}---{}---{}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: mut, labels: {{mutate: \"yes\"}}}}\n",
        configuration(
            "c-tag",
            "tag",
            "Never",
            "CREATE, UPDATE",
            r#"[{name: not-untagged, expression: "!has(object.metadata.labels) || !('untagged' in object.metadata.labels)"}]"#
        ),
        configuration(
            "b-note",
            "note",
            "Never",
            "CREATE, UPDATE",
            r#"[{name: needs-data, expression: "object.metadata.name != 'cond-error' || object.data.mode == 'x'"}]"#
        ),
        configuration("a-stamp", "stamp", "IfNeeded", "CREATE, UPDATE, DELETE", "[]"),
    ));
    let labels = |name: &str| {
        devplane.kubectl_ok(&[
            "get",
            "configmap",
            name,
            "-n",
            "mut",
            "-o",
            "jsonpath={.metadata.labels.stamped} {.metadata.labels.noted} {.metadata.labels.tagged}",
        ])
    };
    devplane.kubectl_ok(&["create", "configmap", "m1", "-n", "mut"]);
    assert_eq!(
        labels("m1"),
        "true true true",
        "every webhook's patch is stored"
    );
    // The next write's calls come after all of m1's.
    devplane.kubectl_ok(&["create", "configmap", "s0", "-n", "mut"]);
    guard.wait_for_line("the next write's calls", Duration::from_secs(20), |l| {
        l.starts_with("mutate tag s0 ")
    });
    let calls: Vec<String> = guard
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("mutate") && l.contains(" m1 "))
        .collect();
    // In order of the configurations' names; `stamp` again, as webhooks after it changed the
    // object, and it sees their changes; `note` not again, though `tag` changed the object
    // after it.
    assert_eq!(
        calls,
        [
            "mutate stamp m1 -",
            "mutate note m1 true",
            "mutate tag m1 true",
            "mutate stamp m1 true"
        ],
        "the webhooks' calls"
    );
    // A field a webhook adds that the schema does not know is dropped, even under kubectl's
    // strict field validation: only what the request sent is judged by it.
    devplane.kubectl_ok(&["create", "configmap", "with-extra", "-n", "mut"]);
    assert_eq!(labels("with-extra"), "true true true");
    let stored =
        devplane.kubectl_ok(&["get", "configmap", "with-extra", "-n", "mut", "-o", "json"]);
    assert!(!stored.contains("\"extra\""), "{stored}");
    // As on a cluster, the managers own what their requests wrote and no manager owns what
    // the webhooks set: the creator owns the data, the labeller its label (in the labels the
    // webhooks made).
    devplane.kubectl_ok(&[
        "create",
        "configmap",
        "owned",
        "-n",
        "mut",
        "--from-literal=k=v",
    ]);
    devplane.kubectl_ok(&["label", "configmap", "owned", "-n", "mut", "mine=yes"]);
    assert_eq!(labels("owned"), "true true true");
    let stored: serde_json::Value = serde_json::from_str(&devplane.kubectl_ok(&[
        "get",
        "configmap",
        "owned",
        "-n",
        "mut",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .expect("JSON");
    let owners: Vec<(String, String)> = stored["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|entry| {
            (
                entry["manager"].as_str().unwrap_or_default().to_string(),
                entry["fieldsV1"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            (
                "kubectl-create".to_string(),
                r#"{"f:data":{".":{},"f:k":{}}}"#.to_string()
            ),
            (
                "kubectl-label".to_string(),
                r#"{"f:metadata":{"f:labels":{"f:mine":{}}}}"#.to_string()
            ),
        ],
        "{stored}"
    );
    // What the request itself sends is still judged: an unknown field of its own is refused.
    let manifest = devplane.dir.join("bogus.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bogus, namespace: mut}\nbogus: 1\n",
    )
    .expect("manifest");
    let output = devplane.kubectl(&["create", "-f", &manifest.to_string_lossy()]);
    assert!(!output.status.success(), "bogus was created");
    let err = crate::support::stderr(&output);
    assert!(err.contains(r#"unknown field "bogus""#), "{err}");
    // An update is mutated too: the label taken away is added back.
    devplane.kubectl_ok(&["label", "configmap", "m1", "-n", "mut", "stamped-"]);
    assert_eq!(labels("m1"), "true true true");
    // A dry run shows the mutated object and stores nothing.
    let shown = devplane.kubectl_ok(&[
        "create",
        "configmap",
        "dry",
        "-n",
        "mut",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.labels.stamped}",
    ]);
    assert_eq!(shown, "true");
    assert!(
        !devplane
            .kubectl(&["get", "configmap", "dry", "-n", "mut"])
            .status
            .success()
    );
    // Outside the namespaces the selector picks, nothing is changed.
    devplane.kubectl_ok(&["create", "namespace", "plain"]);
    devplane.kubectl_ok(&["create", "configmap", "m2", "-n", "plain"]);
    let plain = devplane.kubectl_ok(&[
        "get",
        "configmap",
        "m2",
        "-n",
        "plain",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert_eq!(plain, "");
    // A mutating webhook's denial refuses the write; so does a patch that cannot apply.
    for (name, message) in [
        (
            "refuse-me",
            r#"admission webhook "stamp.example.com" denied the request: stamping refuse-me is not allowed"#,
        ),
        (
            "bad-patch",
            r#"admission webhook "stamp.example.com" returned an invalid patch"#,
        ),
        (
            "rename-me",
            "a mutating admission webhook changed the object's metadata.name",
        ),
        (
            "garbage",
            r#"failed calling webhook "stamp.example.com": its answer is not an AdmissionReview with a response"#,
        ),
        (
            "wrong-uid",
            r#"failed calling webhook "stamp.example.com": expected response.uid="#,
        ),
    ] {
        let output = devplane.kubectl(&["create", "configmap", name, "-n", "mut"]);
        assert!(!output.status.success(), "{name} was created");
        let err = crate::support::stderr(&output);
        assert!(err.contains(message), "{name}: {err}");
    }
    // A configuration whose condition does not compile is refused.
    let broken = devplane.dir.join("broken-condition.yaml");
    std::fs::write(
        &broken,
        configuration(
            "d-broken",
            "tag",
            "Never",
            "CREATE",
            r#"[{name: broken, expression: "object.metadata.name =="}]"#,
        ),
    )
    .expect("manifest");
    let output = devplane.kubectl(&["create", "-f", &broken.to_string_lossy()]);
    assert!(!output.status.success(), "a broken condition was stored");
    let err = crate::support::stderr(&output);
    assert!(
        err.contains("webhooks[0].matchConditions[0].expression: Invalid value")
            && err.contains("compilation failed"),
        "{err}"
    );
    // A webhook whose matchConditions do not all hold is not called; one whose condition
    // cannot be evaluated refuses the write under failurePolicy Fail.
    devplane.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain-one, namespace: mut, labels: {untagged: \"yes\"}}\n",
    );
    assert_eq!(labels("plain-one"), "true true ");
    assert!(
        !guard
            .lines()
            .iter()
            .any(|l| l.starts_with("mutate tag plain-one ")),
        "tag was called: {:?}",
        guard.lines()
    );
    let output = devplane.kubectl(&["create", "configmap", "cond-error", "-n", "mut"]);
    assert!(!output.status.success(), "cond-error was created");
    let err = crate::support::stderr(&output);
    assert!(
        err.contains(r#"failed calling webhook "note.example.com": matchCondition "needs-data" cannot be evaluated"#),
        "{err}"
    );
    // A refusal carries the warnings given before it and with it, whatever refuses.
    for (name, warnings) in [
        (
            "refuse-me",
            &["refuse-me is refused by the test webhook"][..],
        ),
        ("rename-me", &["stamped by the test webhook"][..]),
        (
            "warned-then-refused",
            &[
                "stamped by the test webhook",
                "warned-then-refused is refused by the test webhook",
            ][..],
        ),
    ] {
        let output = devplane.kubectl(&["create", "configmap", name, "-n", "mut"]);
        assert!(!output.status.success(), "{name} was created");
        let err = crate::support::stderr(&output);
        for warning in warnings {
            assert!(
                err.contains(&format!("Warning: {warning}")),
                "{name}: {err}"
            );
        }
    }
    // Server-side apply goes through them as well.
    let manifest = devplane.dir.join("applied.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied, namespace: mut}\ndata: {k: v}\n",
    )
    .expect("manifest");
    devplane.kubectl_ok(&["apply", "--server-side", "-f", &manifest.to_string_lossy()]);
    assert_eq!(labels("applied"), "true true true");
    // A webhook's warnings reach the client.
    let output = devplane.kubectl(&["create", "configmap", "warned", "-n", "mut"]);
    assert!(output.status.success());
    let err = crate::support::stderr(&output);
    assert!(
        err.contains("Warning: stamped by the test webhook"),
        "{err}"
    );
    // A mutating webhook may refuse a delete too.
    devplane.kubectl_ok(&["create", "configmap", "kept", "-n", "mut"]);
    devplane.kubectl_ok(&["label", "configmap", "kept", "-n", "mut", "keep=true"]);
    let output = devplane.kubectl(&["delete", "configmap", "kept", "-n", "mut"]);
    assert!(!output.status.success(), "kept was deleted");
    let err = crate::support::stderr(&output);
    assert!(
        err.contains(r#"admission webhook "stamp.example.com" denied the request: deleting kept objects is not allowed"#),
        "{err}"
    );
    devplane.kubectl_ok(&["delete", "configmap", "m1", "-n", "mut"]);
    // A delete's warnings reach the client, of one object ("warned" was created above) or of
    // a collection.
    for args in [
        &["delete", "configmap", "warned", "-n", "mut"][..],
        &[
            "delete",
            "--raw",
            "/api/v1/namespaces/mut/configmaps?fieldSelector=metadata.name%3Dwarned",
        ][..],
    ] {
        let output = devplane.kubectl(args);
        assert!(output.status.success(), "{args:?}");
        let err = crate::support::stderr(&output);
        assert!(
            err.contains("Warning: deleting warned is noted by the test webhook"),
            "{args:?}: {err}"
        );
        devplane.kubectl_ok(&["create", "configmap", "warned", "-n", "mut"]);
    }
    // Under matchPolicy Equivalent (the default) a webhook whose rules name one version of a
    // kind is called for writes through another, with the object in its version; under Exact
    // it is not.
    let widgets = |name: &str, path: &str, policy: &str| {
        format!(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
  - name: {name}.example.com
    clientConfig:
      service: {{namespace: webhooks, name: guard, path: /mutate-{path}}}
      caBundle: {bundle}
    rules:
      - {{operations: [CREATE], apiGroups: [example.com], apiVersions: [v1], resources: [widgets]}}
    matchPolicy: {policy}
    sideEffects: None
    admissionReviewVersions: [v1]
"#
        )
    };
    devplane.apply_yaml(&format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.example.com}}
spec:
  group: example.com
  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}
  scope: Namespaced
  versions:
    - {{name: v1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}
    - {{name: v2, served: true, storage: false, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}
---{}---{}"#,
        widgets("w-equivalent", "stamp", "Equivalent"),
        widgets("w-exact", "tag", "Exact"),
    ));
    let widget = devplane.dir.join("widget.yaml");
    std::fs::write(
        &widget,
        "apiVersion: example.com/v2\nkind: Widget\nmetadata: {name: w, namespace: mut}\nspec: {size: 3}\n",
    )
    .expect("manifest");
    devplane.kubectl_ok(&["create", "-f", &widget.to_string_lossy()]);
    let seen = devplane.kubectl_ok(&[
        "get",
        "widgets.v2.example.com",
        "w",
        "-n",
        "mut",
        "-o",
        "jsonpath={.apiVersion} {.spec.size} {.metadata.labels.stamped} {.metadata.labels.tagged}",
    ]);
    assert_eq!(
        seen, "example.com/v2 3 true ",
        "only the Equivalent webhook changed it"
    );
}
