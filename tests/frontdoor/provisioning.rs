//! Zero-touch provisioning with real clients: curl against `POST /v1/provision/{ns}/{policy}`
//! (derived keys, pre-registered serials with one-time tokens, client certificates over
//! HTTPS), mosquitto_rr over MQTT 5, and what the devices do with what they got.

use std::process::Command;
use std::time::Duration;

use devplane_core::provisioning::proof;
use serde_json::Value;

use super::*;
use crate::support::{stdout, wait_until};

/// The group key of the fixture's symmetric-key policies.
const GROUP_KEY: &[u8] = b"the plant's group key, 32 bytes!";

/// Policies over the fixture's model `probe` in namespace plant.
fn policies() -> String {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(GROUP_KEY);
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: probe-group-key, namespace: plant}}
data: {{groupKey: {key}}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {{name: probes, namespace: plant}}
spec:
  template:
    metadata: {{labels: {{site: north}}}}
    spec: {{modelRef: {{name: probe}}, attributes: {{interval: 30}}}}
  naming: {{prefix: "probe-", idPattern: "[0-9a-f]{{8}}"}}
  attestation: {{symmetricKey: {{secretRef: {{name: probe-group-key}}}}}}
  limits: {{maxDevices: 3}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {{name: expired, namespace: plant}}
spec:
  template: {{spec: {{modelRef: {{name: probe}}}}}}
  attestation: {{symmetricKey: {{secretRef: {{name: probe-group-key}}}}}}
  limits: {{notAfter: "2020-01-01T00:00:00Z"}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {{name: listed, namespace: plant}}
spec:
  template: {{spec: {{modelRef: {{name: probe}}}}}}
  naming: {{prefix: "meter-"}}
  attestation:
    preRegistered:
      csv: |
        serialNumber,deviceId,token
        SN-0001,0001,
        SN-0002,0002,one-time-2
"#
    )
}

impl Plant {
    /// A Plant with the provisioning policies applied and Ready.
    fn with_policies(extra: &[&str]) -> Plant {
        let plant = Plant::start_with(extra);
        plant.devplane.apply_yaml(&policies());
        plant.devplane.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            "provisioningpolicy",
            "--all",
            "-n",
            "plant",
            "--timeout=60s",
        ]);
        plant
    }

    /// POST a provisioning request; the status and the parsed body.
    fn provision(&self, policy: &str, body: &Value) -> (u16, Value) {
        let (code, text) = self.http(
            "POST",
            &format!("/v1/provision/plant/{policy}"),
            None,
            Some(body.to_string().as_bytes()),
        );
        let parsed = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a JSON answer ({e}), got {code} {text:?}"));
        (code, parsed)
    }
}

fn derived(id: &str) -> Value {
    serde_json::json!({"deviceId": id, "proof": proof(GROUP_KEY, id)})
}

#[test]
fn a_device_with_its_derived_key_provisions_over_http_connects_and_outlives_its_policy() {
    let plant = Plant::with_policies(&[]);
    let (code, answer) = plant.provision("probes", &derived("0000beef"));
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["namespace"], "plant");
    assert_eq!(answer["name"], "probe-0000beef");
    assert_eq!(answer["username"], "plant/probe-0000beef");
    let password = answer["password"].as_str().expect("a password").to_string();
    assert!(
        answer["endpoints"]["mqtt"]
            .as_str()
            .is_some_and(|e| e.starts_with("mqtt://")),
        "{answer}"
    );
    // The Device, labelled with its policy and the template's labels, and its Secret.
    let listed = plant.devplane.kubectl_ok(&[
        "get",
        "devices",
        "-n",
        "plant",
        "-l",
        "iot.devplane.io/provisioning-policy=probes,site=north",
        "-o",
        "name",
    ]);
    assert_eq!(listed.trim(), "device.iot.devplane.io/probe-0000beef");
    assert_eq!(plant.password("plant", "probe-0000beef"), password);

    // The same identity again: 200, the same password.
    let (code, again) = plant.provision("probes", &derived("0000beef"));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["password"], password.as_str());

    // What it got connects and publishes accepted telemetry.
    let reader = plant.north_reader("north/plant/+/telemetry", "20");
    let output = plant.mosquitto(
        "mosquitto_pub",
        true,
        "plant/probe-0000beef",
        &password,
        &[
            "-q",
            "1",
            "-t",
            "d/plant/probe-0000beef/telemetry",
            "-m",
            r#"{"points":{"temperature":21.5}}"#,
        ],
    );
    assert!(output.status.success(), "{output:?}");
    reader.wait_for_line(
        "the provisioned device's telemetry",
        Duration::from_secs(20),
        |l| l.contains("probe-0000beef") && l.contains("21.5"),
    );

    // The policy counts it and names it the last one provisioned.
    wait_until("status.provisioned 1", Duration::from_secs(20), || {
        plant.jsonpath(
            "provisioningpolicy",
            "plant",
            "probes",
            "{.status.provisioned}",
        ) == "1"
    });
    wait_until("status.lastProvisioned", Duration::from_secs(20), || {
        plant.jsonpath(
            "provisioningpolicy",
            "plant",
            "probes",
            "{.status.lastProvisioned.device}",
        ) == "probe-0000beef"
    });

    // Deleting the policy leaves the fleet.
    plant.devplane.kubectl_ok(&[
        "delete",
        "provisioningpolicy",
        "probes",
        "-n",
        "plant",
        "--wait=true",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let left = plant.devplane.kubectl_ok(&[
        "get",
        "device",
        "probe-0000beef",
        "-n",
        "plant",
        "-o",
        "jsonpath={.metadata.name}",
    ]);
    assert_eq!(left, "probe-0000beef");
    let (code, gone) = plant.provision("probes", &derived("0000beef"));
    assert_eq!(code, 404, "{gone}");
}

#[test]
fn a_policy_named_longer_than_a_label_value_provisions_and_counts_its_devices() {
    let plant = Plant::with_policies(&[]);
    let policy = format!("{}-probes", "long".repeat(20));
    plant.devplane.apply_yaml(&format!(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {{name: {policy}, namespace: plant}}
spec:
  template: {{spec: {{modelRef: {{name: probe}}, attributes: {{interval: 30}}}}}}
  naming: {{prefix: "long-", idPattern: "[0-9a-f]{{8}}"}}
  attestation: {{symmetricKey: {{secretRef: {{name: probe-group-key}}}}}}
"#
    ));
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("provisioningpolicy/{policy}"),
        "-n",
        "plant",
        "--timeout=60s",
    ]);
    let (code, answer) = plant.provision(&policy, &derived("0000cafe"));
    assert_eq!(code, 201, "{answer}");
    // Provisioning again is recognised as this policy's device (through the annotation that
    // holds the policy's whole name): 200, the same password.
    let (code, again) = plant.provision(&policy, &derived("0000cafe"));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["password"], answer["password"]);
    wait_until(
        "the policy counts its device",
        Duration::from_secs(30),
        || {
            plant.jsonpath(
                "provisioningpolicy",
                "plant",
                &policy,
                "{.status.provisioned}",
            ) == "1"
        },
    );
}

#[test]
fn every_refusal_has_its_reason() {
    let plant = Plant::with_policies(&[]);
    let refused = |policy: &str, body: Value, reason: &str| {
        let (code, answer) = plant.provision(policy, &body);
        assert_eq!(
            (code, answer["reason"].as_str()),
            (403, Some(reason)),
            "{answer}"
        );
    };
    // A wrong HMAC, the HMAC of another id, an id outside the pattern.
    refused(
        "probes",
        serde_json::json!({"deviceId": "0000beef", "proof": proof(b"another key", "0000beef")}),
        "BadProof",
    );
    refused(
        "probes",
        serde_json::json!({"deviceId": "0000beef", "proof": proof(GROUP_KEY, "0000beee")}),
        "BadProof",
    );
    refused("probes", derived("NOT-HEX!"), "NotAllowed");
    // An expired policy.
    refused("expired", derived("0000beef"), "Expired");
    // maxDevices 3: the fourth is refused.
    for id in ["00000001", "00000002", "00000003"] {
        let (code, answer) = plant.provision("probes", &derived(id));
        assert_eq!(code, 201, "{answer}");
    }
    refused("probes", derived("00000004"), "LimitReached");
    // A pre-registered serial provisions, an unlisted one does not, and a one-time token
    // works once.
    let (code, answer) = plant.provision("listed", &serde_json::json!({"serialNumber": "SN-0001"}));
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["name"], "meter-0001");
    refused(
        "listed",
        serde_json::json!({"serialNumber": "SN-9999"}),
        "NotAllowed",
    );
    let with_token = serde_json::json!({"serialNumber": "SN-0002", "token": "one-time-2"});
    let (code, answer) = plant.provision("listed", &with_token);
    assert_eq!(code, 201, "{answer}");
    refused("listed", with_token, "AlreadyProvisioned");
    refused(
        "listed",
        serde_json::json!({"serialNumber": "SN-0002", "token": "guessed"}),
        "BadProof",
    );

    // Each refusal is counted in the policy's status and reported as a Warning Event.
    wait_until("status.refused", Duration::from_secs(20), || {
        plant.jsonpath(
            "provisioningpolicy",
            "plant",
            "probes",
            "{.status.refused.BadProof},{.status.refused.NotAllowed},{.status.refused.LimitReached}",
        ) == "2,1,1"
    });
    wait_until(
        "a Warning Event per reason",
        Duration::from_secs(20),
        || {
            let events = plant.devplane.kubectl_ok(&[
                "get",
                "events",
                "-n",
                "plant",
                "--field-selector",
                "type=Warning",
                "-o",
                "jsonpath={range .items[*]}{.reason}/{.involvedObject.name}{\"\\n\"}{end}",
            ]);
            [
                "BadProof/probes",
                "LimitReached/probes",
                "Expired/expired",
                "AlreadyProvisioned/listed",
            ]
            .iter()
            .all(|e| events.lines().any(|l| l == *e))
        },
    );
    // Nothing refused was created.
    let devices = plant.devplane.kubectl_ok(&[
        "get",
        "devices",
        "-n",
        "plant",
        "-l",
        "iot.devplane.io/provisioning-policy",
        "-o",
        "name",
    ]);
    assert_eq!(devices.lines().count(), 5, "{devices}");
}

#[test]
fn a_burst_of_bad_proofs_from_one_address_is_rate_limited() {
    let plant = Plant::with_policies(&[]);
    let bad = serde_json::json!({"deviceId": "0000beef", "proof": "AAAA"});
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(plant.provision("probes", &bad).0);
    }
    assert_eq!(codes[0], 403);
    assert!(codes.contains(&429), "{codes:?}");
    // Even the right proof waits while the address is limited.
    let (code, answer) = plant.provision("probes", &derived("0000beef"));
    assert_eq!(code, 429, "{answer}");
    assert_eq!(answer["reason"], "RateLimited");
}

#[test]
fn a_hundred_concurrent_retries_of_one_id_create_one_device() {
    let plant = Plant::with_policies(&[]);
    let addr = plant
        .devplane
        .printed_address("device HTTP listening on http://");
    let body = plant.devplane.dir.join("retry.json");
    std::fs::write(&body, derived("0000cafe").to_string()).expect("body");
    let children: Vec<_> = (0..100)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "-w", "\n%{http_code}", "--max-time", "60"])
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", body.display()))
                .arg(format!("http://{addr}/v1/provision/plant/probes"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    let mut created = 0;
    let mut passwords = std::collections::HashSet::new();
    for child in children {
        let output = child.wait_with_output().expect("curl output");
        let text = stdout(&output);
        let (answer, code) = text.rsplit_once('\n').expect("status line");
        match code.trim() {
            "201" => created += 1,
            "200" => {}
            other => panic!("status {other}: {answer}"),
        }
        let answer: Value = serde_json::from_str(answer).expect("JSON");
        passwords.insert(answer["password"].as_str().expect("password").to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(passwords.len(), 1, "every retry got the same identity");
    let devices = plant.devplane.kubectl_ok(&[
        "get",
        "devices",
        "-n",
        "plant",
        "-l",
        "iot.devplane.io/provisioning-policy=probes",
        "-o",
        "name",
    ]);
    assert_eq!(devices.trim(), "device.iot.devplane.io/probe-0000cafe");
}

#[test]
fn a_device_provisions_over_mqtt_with_its_proof_as_password() {
    let plant = Plant::with_policies(&[]);
    let (host, port) = Plant::host_port(&plant.devplane.mqtt_addr());
    let rr = |id: &str, password: &str| {
        let mut command = Command::new("mosquitto_rr");
        command.args(["-h", &host, "-p", &port, "-V", "mqttv5", "-i", id]);
        command.args(["-u", "provision/plant/probes", "-P", password]);
        command.args(["-t", "provision/plant/probes/request"]);
        command.args([
            "-e",
            "provision/plant/probes/response",
            "-m",
            "{}",
            "-W",
            "30",
        ]);
        let output = run_with_timeout(command, Duration::from_secs(40));
        let text = stdout(&output);
        serde_json::from_str::<Value>(text.trim())
            .unwrap_or_else(|e| panic!("a JSON answer ({e}): {output:?}"))
    };
    let answer = rr("0000d00d", &proof(GROUP_KEY, "0000d00d"));
    assert_eq!(answer["status"], 201, "{answer}");
    assert_eq!(answer["username"], "plant/probe-0000d00d");
    let refused = rr("0000d00e", &proof(GROUP_KEY, "0000d00d"));
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["reason"], "BadProof");
}

#[test]
fn an_x509_device_provisions_with_a_certificate_from_the_policy_ca_only() {
    let https = format!("127.0.0.1:{}", crate::support::free_port());
    let plant = Plant::start_with(&["--https-addr", &https]);
    let dir = &plant.devplane.dir;
    let (ca_pem, good) = certificates::issue("plant CA", "0000f00d");
    let (_, foreign) = certificates::issue("another CA", "0000f00d");
    std::fs::write(dir.join("good.crt"), &good.0).expect("cert");
    std::fs::write(dir.join("good.key"), &good.1).expect("key");
    std::fs::write(dir.join("foreign.crt"), &foreign.0).expect("cert");
    std::fs::write(dir.join("foreign.key"), &foreign.1).expect("key");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    plant.devplane.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: probe-ca, namespace: plant}}
data: {{ca.crt: {ca}}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {{name: certified, namespace: plant}}
spec:
  template: {{spec: {{modelRef: {{name: probe}}}}}}
  attestation: {{x509: {{caSecretRef: {{name: probe-ca}}}}}}
"#
    ));
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "provisioningpolicy/certified",
        "-n",
        "plant",
        "--timeout=60s",
    ]);
    let server_ca = dir.join("pki/ca.crt");
    let with_cert = |name: &str| {
        let output = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "--max-time", "60"])
            .arg("--cacert")
            .arg(&server_ca)
            .arg("--cert")
            .arg(dir.join(format!("{name}.crt")))
            .arg("--key")
            .arg(dir.join(format!("{name}.key")))
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "{}",
            ])
            .arg(format!("https://{https}/v1/provision/plant/certified"))
            .output()
            .expect("curl runs");
        let text = stdout(&output);
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
        (code.trim().to_string(), body.to_string())
    };
    let (code, body) = with_cert("good");
    assert_eq!(code, "201", "{body}");
    assert!(body.contains("\"name\":\"0000f00d\""), "{body}");
    let (code, body) = with_cert("foreign");
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("BadProof"), "{body}");
}

/// Certificates for the x509 test, made with rcgen.
mod certificates {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    /// A CA named `ca_name` and a client certificate for `device` it signed: the CA's PEM and
    /// the client's (certificate, key) PEMs.
    pub fn issue(ca_name: &str, device: &str) -> (String, (String, String)) {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("device key");
        let mut params = CertificateParams::new(Vec::new()).expect("device params");
        params.distinguished_name.push(DnType::CommonName, device);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).expect("device certificate");
        (ca_cert.pem(), (cert.pem(), key.serialize_pem()))
    }
}

#[test]
fn a_device_provisions_over_coap_plain_and_over_dtls_with_its_proof_as_pre_shared_key() {
    let plant = Plant::with_policies(&["--coap-insecure-dev"]);
    let coap = plant
        .devplane
        .printed_address("device CoAP (insecure, dev only) listening on coap://");
    let body = derived("0000c0a9").to_string();
    let mut command = Command::new(super::coap::OPENSSL);
    command
        .args(["-v", "6", "-B", "30", "-m", "post", "-e", &body])
        .arg(format!("coap://{coap}/provision/plant/probes"));
    let output = run_with_timeout(command, Duration::from_secs(40));
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("c:2.01"), "{text}");
    assert!(
        text.contains("\"username\":\"plant/probe-0000c0a9\""),
        "{text}"
    );

    // Over DTLS, the PSK identity names the policy and the id, the key is the proof; the body
    // may be empty.
    let id = "0000c0aa";
    let identity = format!("provision/plant/probes/{id}");
    let out = plant.coap_client(
        super::coap::OPENSSL,
        (&identity, &proof(GROUP_KEY, id)),
        "post",
        "provision/plant/probes",
        None,
    );
    assert!(out.contains("c:2.01"), "{out}");
    assert!(
        out.contains("\"username\":\"plant/probe-0000c0aa\""),
        "{out}"
    );
    // A wrong key fails the handshake: nothing is created.
    let out = plant.coap_client(
        super::coap::OPENSSL,
        (&identity.replace(id, "0000c0ab"), &proof(GROUP_KEY, id)),
        "post",
        "provision/plant/probes",
        None,
    );
    assert!(!out.contains("c:2.0"), "{out}");
    let missing = plant
        .devplane
        .kubectl(&["get", "device", "probe-0000c0ab", "-n", "plant"]);
    assert!(!missing.status.success());
}

#[test]
fn simulated_devices_provision_themselves_then_connect_with_what_they_got() {
    let plant = Plant::with_policies(&[]);
    let http = plant
        .devplane
        .printed_address("device HTTP listening on http://");
    let mqtt = plant.devplane.mqtt_addr();
    let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(["simulate", "-n", "plant", "--provision", "probes"])
        .args(["--count", "2", "--id-pattern", "0000ab{index:02}"])
        .args(["--http-addr", &http, "--mqtt-addr", &mqtt])
        .args(["--rate", "10", "--duration", "3"])
        .arg("--kubeconfig")
        .arg(plant.devplane.kubeconfig())
        .output()
        .expect("devplane simulate runs");
    let summary = stdout(&output);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{summary}\n{errors}");
    assert!(
        summary.contains("connected 2/2 (failed 0)"),
        "{summary}\n{errors}"
    );
    assert!(!summary.contains("· accepted 0 "), "{summary}");
    for device in ["probe-0000ab01", "probe-0000ab02"] {
        plant.wait_device(device, "--for=jsonpath={.status.phase}=Servicing");
    }
}
