//! `devplane qr` as a user runs it against `devplane up`, with the codes read back by a real
//! QR reader (Debian's zbarimg, installed by tests/run) and, for provisioning links, handed to
//! a small Python client that provisions from nothing but the link's text.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use devplane_core::provisioning::{ConnectLink, Link, ProvisionLink, proof};

use crate::support::{Devplane, repo, stderr, stdout, wait_until};

/// The group key of the symmetric-key policy, as the factory knows it.
const GROUP_KEY: &str = "factory group key 2026";

const SYMMETRIC_POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: thermo-group, namespace: smart-home}
stringData: {groupKey: "factory group key 2026"}
---
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {name: thermo, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
      attributes: {room: unassigned}
  naming: {prefix: "th-", idPattern: "[0-9a-f]{8}"}
  attestation:
    symmetricKey: {secretRef: {name: thermo-group}}
"#;

const LISTED_POLICY: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {name: sockets, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
      attributes: {room: unassigned}
  attestation:
    preRegistered:
      items:
        - {serialNumber: SP-0001, deviceId: socket-a, token: "t/1+a b"}
        - {serialNumber: sp-0002}
"#;

/// `devplane up` with the smart-home example (its thermo-hygrometer model) applied.
fn start() -> Devplane {
    let devplane = Devplane::start(&[]);
    devplane.kubectl_ok(&[
        "apply",
        "-f",
        "examples/00-namespaces.yaml",
        "-f",
        "examples/smart-home.yaml",
    ]);
    devplane
}

/// `devplane qr --kubeconfig … -n smart-home ARGS`.
fn qr(devplane: &Devplane, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devplane"))
        .arg("qr")
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .args(["-n", "smart-home"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("devplane qr runs")
}

fn qr_ok(devplane: &Devplane, args: &[&str]) -> String {
    let output = qr(devplane, args);
    assert!(
        output.status.success(),
        "devplane qr {args:?} failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// What zbarimg reads in a picture: the text of its one code.
fn decode(picture: &Path) -> String {
    let output = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(picture)
        .output()
        .expect("zbarimg runs (tests/run installs zbar-tools)");
    assert!(
        output.status.success(),
        "zbarimg found no code in {}: {}",
        picture.display(),
        stderr(&output)
    );
    let text = stdout(&output);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    assert!(!text.contains('\n'), "one code per picture: {text:?}");
    text.to_string()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_symmetric_key_policy_code_decodes_to_the_documented_link_with_the_derived_proof() {
    let devplane = start();
    devplane.apply_yaml(SYMMETRIC_POLICY);
    let endpoint = "https://devices.example.com:8443";
    let png = devplane.dir.join("th.png");
    let out = qr_ok(
        &devplane,
        &[
            "--policy",
            "thermo",
            "--id",
            "0000beef",
            "--endpoint",
            endpoint,
            "--out",
            path(&png),
        ],
    );
    assert!(out.contains("0000beef"), "{out}");

    let expected = Link::Provision(ProvisionLink {
        endpoint: endpoint.into(),
        namespace: "smart-home".into(),
        policy: "thermo".into(),
        device_id: Some("0000beef".into()),
        serial_number: None,
        proof: Some(proof(GROUP_KEY.as_bytes(), "0000beef")),
        token: None,
    });
    let text = decode(&png);
    assert_eq!(text, expected.to_uri());
    assert_eq!(Link::parse(&text).expect("a devplane link"), expected);

    let svg = devplane.dir.join("th.svg");
    qr_ok(
        &devplane,
        &[
            "--policy",
            "thermo",
            "--id",
            "0000beef",
            "--endpoint",
            endpoint,
            "--out",
            path(&svg),
        ],
    );
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );

    // Clear refusals, and nothing written.
    let refused = devplane.dir.join("refused.png");
    for (args, says) in [
        (
            vec![
                "--policy",
                "thermo",
                "--id",
                "0000beef",
                "--out",
                path(&refused),
            ],
            "--endpoint is required",
        ),
        (
            vec![
                "--policy",
                "thermo",
                "--id",
                "NOT-HEX",
                "--endpoint",
                endpoint,
                "--out",
                path(&refused),
            ],
            "would refuse device id NOT-HEX",
        ),
        (
            vec![
                "--policy",
                "thermo",
                "--all",
                "--endpoint",
                endpoint,
                "--out",
                path(&refused),
            ],
            "--all needs spec.attestation.preRegistered",
        ),
        (
            vec![
                "--policy",
                "nowhere",
                "--id",
                "0000beef",
                "--endpoint",
                endpoint,
                "--out",
                path(&refused),
            ],
            "ProvisioningPolicy smart-home/nowhere not found",
        ),
    ] {
        let output = qr(&devplane, &args);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!refused.exists());
}

#[test]
fn a_pre_registered_policy_gives_a_code_per_device_in_a_directory_and_on_one_sheet() {
    let devplane = start();
    devplane.apply_yaml(LISTED_POLICY);
    let endpoint = "http://127.0.0.1:8080";
    let dir = devplane.dir.join("codes");
    let sheet = devplane.dir.join("sheet.html");
    qr_ok(
        &devplane,
        &[
            "--policy",
            "sockets",
            "--all",
            "--endpoint",
            endpoint,
            "--out",
            path(&dir),
            "--sheet",
            path(&sheet),
        ],
    );
    let link = |id: &str, serial: &str, token: Option<&str>| {
        Link::Provision(ProvisionLink {
            endpoint: endpoint.into(),
            namespace: "smart-home".into(),
            policy: "sockets".into(),
            device_id: Some(id.into()),
            serial_number: Some(serial.into()),
            proof: None,
            token: token.map(str::to_string),
        })
    };
    let expected = [
        ("socket-a", link("socket-a", "SP-0001", Some("t/1+a b"))),
        ("sp-0002", link("sp-0002", "sp-0002", None)),
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["socket-a.png", "socket-a.svg", "sp-0002.png", "sp-0002.svg"]
    );
    for (id, link) in &expected {
        assert_eq!(
            decode(&dir.join(format!("{id}.png"))),
            link.to_uri(),
            "{id}"
        );
    }

    let html = std::fs::read_to_string(&sheet).expect("the sheet");
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(
        html.contains(r#"<div class="id">socket-a</div><div>serial SP-0001</div>"#),
        "{html}"
    );
    assert!(html.contains(r#"<div class="id">sp-0002</div>"#), "{html}");

    // One device by its serial number.
    let one = devplane.dir.join("one.png");
    qr_ok(
        &devplane,
        &[
            "--policy",
            "sockets",
            "--id",
            "SP-0001",
            "--endpoint",
            endpoint,
            "--out",
            path(&one),
        ],
    );
    assert_eq!(decode(&one), expected[0].1.to_uri());
    // Several codes do not fit one file.
    let output = qr(
        &devplane,
        &[
            "--policy",
            "sockets",
            "--all",
            "--endpoint",
            endpoint,
            "--out",
            path(&one),
        ],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("name a directory instead"),
        "{}",
        stderr(&output)
    );
}

const BATCHES: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata: {name: kitchen, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
      attributes: {room: kitchen}
  items:
    list:
      - {name: kitchen-1, serialNumber: TH-1001}
      - {name: kitchen-2}
      - {name: kitchen-3}
---
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata: {name: cellar, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
      attributes: {room: cellar}
      lifecycle: Planned
  items:
    list:
      - {name: cellar-1}
"#;

/// The data of a Secret, decoded.
fn secret_data(devplane: &Devplane, name: &str) -> BTreeMap<String, String> {
    use base64::Engine;
    let json = devplane.kubectl_ok(&["get", "secret", name, "-n", "smart-home", "-o", "json"]);
    let secret: serde_json::Value = serde_json::from_str(&json).expect("a Secret");
    secret["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 text"))
                .expect("base64");
            (k.clone(), String::from_utf8(raw).expect("UTF-8"))
        })
        .collect()
}

fn secret_exists(devplane: &Devplane, name: &str) -> bool {
    devplane
        .kubectl(&["get", "secret", name, "-n", "smart-home"])
        .status
        .success()
}

#[test]
fn a_batch_gives_connect_codes_from_its_devices_credentials_and_names_those_without() {
    let devplane = start();
    devplane.apply_yaml(BATCHES);
    for device in ["kitchen-1", "kitchen-2", "kitchen-3"] {
        wait_until(
            &format!("credentials of {device}"),
            Duration::from_secs(60),
            || secret_exists(&devplane, &format!("{device}-credentials")),
        );
    }
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "kitchen-3",
        "-n",
        "smart-home",
        "--type=merge",
        "-p",
        r#"{"spec":{"lifecycle":"Decommissioned"}}"#,
    ]);
    wait_until(
        "kitchen-3's credentials revoked",
        Duration::from_secs(60),
        || !secret_exists(&devplane, "kitchen-3-credentials"),
    );

    let dir = devplane.dir.join("kitchen");
    let sheet = devplane.dir.join("kitchen.html");
    let output = qr(
        &devplane,
        &[
            "--batch",
            "kitchen",
            "--out",
            path(&dir),
            "--sheet",
            path(&sheet),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("smart-home/kitchen-3 has no credentials yet"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.join("kitchen-3.png").exists());
    for device in ["kitchen-1", "kitchen-2"] {
        let text = decode(&dir.join(format!("{device}.png")));
        let Link::Connect(link) = Link::parse(&text).expect("a devplane link") else {
            panic!("a connect link: {text}");
        };
        assert_eq!(Link::Connect(link.clone()).to_uri(), text, "canonical form");
        let data = secret_data(&devplane, &format!("{device}-credentials"));
        let mut endpoints = link.endpoints.clone();
        endpoints.sort();
        let expected: Vec<(String, String)> = data
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix("-endpoint")?.to_string(), v.clone())))
            .collect();
        assert!(!expected.is_empty(), "the Secret has endpoints: {data:?}");
        assert_eq!(
            ConnectLink { endpoints, ..link },
            ConnectLink {
                username: format!("smart-home/{device}"),
                password: data["password"].clone(),
                endpoints: expected,
            }
        );
    }
    let html = std::fs::read_to_string(&sheet).expect("the sheet");
    assert!(
        html.contains(r#"<div class="id">kitchen-1</div><div>serial TH-1001</div>"#),
        "{html}"
    );

    // A batch whose devices are all Planned has no credentials to draw.
    wait_until("cellar-1 exists", Duration::from_secs(60), || {
        devplane
            .kubectl(&["get", "device", "cellar-1", "-n", "smart-home"])
            .status
            .success()
    });
    let output = qr(&devplane, &["--batch", "cellar", "--out", path(&dir)]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("has credentials yet: cellar-1"),
        "{}",
        stderr(&output)
    );
    let output = qr(&devplane, &["--batch", "attic", "--out", path(&dir)]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no such batch exists"),
        "{}",
        stderr(&output)
    );
}

/// Needs the front door's provisioning endpoint (`POST /v1/provision/{ns}/{policy}`).
#[test]
fn a_python_client_provisions_a_device_from_nothing_but_the_decoded_link() {
    let devplane = start();
    devplane.apply_yaml(SYMMETRIC_POLICY);
    let http = devplane.printed_address("device HTTP listening on http://");
    let png = devplane.dir.join("th.png");
    qr_ok(
        &devplane,
        &[
            "--policy",
            "thermo",
            "--id",
            "0000f00d",
            "--endpoint",
            &format!("http://{http}"),
            "--out",
            path(&png),
        ],
    );
    let link = decode(&png);
    let output = Command::new("python3")
        .arg(repo().join("tests/python/provision_from_link.py"))
        .arg(&link)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: serde_json::Value =
        serde_json::from_str(stdout(&output).trim()).expect("one JSON line");
    assert_eq!(answer["status"], 201, "{answer}");
    assert_eq!(
        answer["answer"]["username"], "smart-home/th-0000f00d",
        "{answer}"
    );
    assert_eq!(answer["answer"]["namespace"], "smart-home", "{answer}");
    assert_eq!(answer["answer"]["name"], "th-0000f00d", "{answer}");
}
