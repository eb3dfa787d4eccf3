//! `devplane webhook` against `devplane up`: AdmissionReviews as kube-apiserver sends them, over
//! TLS, answered from what the webhook's watches see.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Devplane, stdout, wait_until};

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
    let log = devplane.dir.join("webhook.out");
    let child = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args([
            "webhook",
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .arg("--tls-cert-file")
        .arg(devplane.dir.join("pki/apiserver.crt"))
        .arg("--tls-key-file")
        .arg(devplane.dir.join("pki/apiserver.key"))
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
    devplane.kubectl_ok(&["apply", "-f", "examples/00-namespaces.yaml"]);
    devplane.kubectl_ok(&["apply", "-f", "examples/datalogger-gateway.yaml"]);
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
