//! `devplane onboard --csv rows.csv --template …` as a user runs it against `devplane up`:
//! every bad row of the spreadsheet is named by its line and nothing is applied; the fixed file
//! onboards every device.

use std::process::{Command, Output};

use crate::support::{Devplane, stderr, stdout};

const BATCH_TEMPLATE: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata: {name: hallway, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
"#;

const POLICY_TEMPLATE: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {name: sockets, namespace: smart-home}
spec:
  template:
    spec:
      modelRef: {name: thermo-hygrometer}
      attributes: {room: unassigned}
  naming: {prefix: "sock-"}
  attestation: {}
"#;

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

/// `devplane onboard --csv CSV --template TEMPLATE ARGS`, both written into the data directory.
fn onboard(devplane: &Devplane, template: &str, csv: &str, args: &[&str]) -> Output {
    let template_file = devplane.dir.join("template.yaml");
    let csv_file = devplane.dir.join("rows.csv");
    std::fs::write(&template_file, template).expect("write the template");
    std::fs::write(&csv_file, csv).expect("write the CSV");
    Command::new(env!("CARGO_BIN_EXE_devplane"))
        .arg("onboard")
        .arg("--csv")
        .arg(&csv_file)
        .arg("--template")
        .arg(&template_file)
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .args(args)
        .output()
        .expect("devplane onboard runs")
}

#[test]
fn a_spreadsheet_with_bad_rows_names_each_line_and_applies_nothing_until_fixed() {
    let devplane = start();
    let bad = "\
name,serialNumber,label:floor,room,reportIntervalSeconds
hall-1,TH-2001,ground,hall,300
Hall-2,TH-2002,ground,hall,300
hall-3,TH-2003,first,landing,600
hall-4,TH-2004,first,landing,often
";
    let output = onboard(&devplane, BATCH_TEMPLATE, bad, &["--wait"]);
    let err = stderr(&output);
    assert!(
        !output.status.success(),
        "bad rows must fail: {}",
        stdout(&output)
    );
    assert!(err.contains("2 problems, nothing was applied"), "{err}");
    assert!(
        err.contains("line 3: name: Invalid value: \"Hall-2\""),
        "{err}"
    );
    assert!(
        err.contains("line 5: column reportIntervalSeconds: expected int"),
        "{err}"
    );
    let batches =
        devplane.kubectl_ok(&["get", "onboardingbatches", "-n", "smart-home", "-o", "name"]);
    assert_eq!(batches.trim(), "", "nothing applied");

    let fixed = bad.replace("Hall-2", "hall-2").replace("often", "900");
    let output = onboard(
        &devplane,
        BATCH_TEMPLATE,
        &fixed,
        &["--wait", "--timeout-seconds", "60"],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("total 4, created 4, failed 0"), "{out}");
    let labels = devplane.kubectl_ok(&[
        "get",
        "devices",
        "-n",
        "smart-home",
        "-l",
        "iot.devplane.io/batch=hallway",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.floor}/{.spec.attributes.reportIntervalSeconds} {end}",
    ]);
    assert_eq!(
        labels.trim(),
        "hall-1=ground/300 hall-2=ground/300 hall-3=first/600 hall-4=first/900"
    );
}

#[test]
fn a_spreadsheet_fills_a_provisioning_policys_pre_registered_devices() {
    let devplane = start();
    let bad = "serialNumber,deviceId,token\nSN-1,a1,t-1\nSN-2,B2,\nSN-1,a3,\n";
    let output = onboard(&devplane, POLICY_TEMPLATE, bad, &[]);
    let err = stderr(&output);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(
        err.contains("line 4: serial number SN-1 is listed on line 2 already"),
        "{err}"
    );
    let policies = devplane.kubectl_ok(&[
        "get",
        "provisioningpolicies",
        "-n",
        "smart-home",
        "-o",
        "name",
    ]);
    assert_eq!(policies.trim(), "", "nothing applied");

    let output = onboard(
        &devplane,
        POLICY_TEMPLATE,
        "serialNumber,deviceId,token\nSN-1,a1,t-1\nSN-2,b2,\n",
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("2 pre-registered devices"),
        "{}",
        stdout(&output)
    );
    let items = devplane.kubectl_ok(&[
        "get",
        "provisioningpolicy",
        "sockets",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={range .spec.attestation.preRegistered.items[*]}{.serialNumber}:{.deviceId}:{.token} {end}",
    ]);
    assert_eq!(items.trim(), "SN-1:a1:t-1 SN-2:b2:");
}
