//! Building the object to apply from a template and CSV rows, without a cluster.

use super::*;

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("YAML")
}

const BATCH: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata: {name: meters, namespace: metering}
spec:
  site: hall-7
  template:
    spec:
      modelRef: {name: meter}
"#;

const POLICY: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: ProvisioningPolicy
metadata: {name: thermo, namespace: smart-home}
spec:
  template: {spec: {modelRef: {name: thermo-hygrometer}}}
  naming: {prefix: "th-"}
  attestation:
    symmetricKey: {secretRef: {name: group}}
"#;

fn meter_kinds(identifier: &str) -> Option<DataKind> {
    (identifier == "ratedCurrent").then_some(DataKind::Int)
}

fn build(template: &str, csv: &str) -> Result<Built, OnboardError> {
    build_from_csv(
        Path::new("batch.yaml"),
        yaml(template),
        Path::new("rows.csv"),
        csv,
        Some(&meter_kinds),
    )
}

#[test]
fn a_batch_template_gets_the_csv_text_as_its_items() {
    let csv = "name,serialNumber,ratedCurrent\nmeter-1,SN-1,63\nmeter-2,SN-2,32\n";
    let Built::Batch(document) = build(BATCH, csv).expect("built") else {
        panic!("a batch");
    };
    assert_eq!(document.name, "meters");
    assert_eq!(document.namespace.as_deref(), Some("metering"));
    assert_eq!(document.object["spec"]["items"], json!({ "csv": csv }));
    assert_eq!(
        document.object["spec"]["site"], "hall-7",
        "the rest is kept"
    );
}

#[test]
fn every_bad_row_is_reported_with_its_line_and_nothing_is_built() {
    let csv = "name,serialNumber,ratedCurrent\nmeter-1,SN-1,63\nMeter-2,SN-2,32\nmeter-3,SN-3\nmeter-1,SN-4,lots\n";
    let error = build(BATCH, csv).expect_err("bad rows");
    assert_eq!(
        error.to_string(),
        "rows.csv: 4 problems, nothing was applied:\n  \
         line 3: name: Invalid value: \"Meter-2\": a lowercase RFC 1123 subdomain must consist of \
         lower case alphanumeric characters, '-' or '.', and must start and end with an \
         alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')\n  \
         line 4: 2 cells, the header has 3\n  \
         line 5: column ratedCurrent: expected int, found string\n  \
         line 5: name meter-1 is used on line 2 already"
    );
}

#[test]
fn a_batch_template_that_sets_items_or_a_bad_site_is_refused() {
    let with_items =
        format!("{BATCH}  items:\n    generate: {{count: 2, namePattern: \"m-{{index}}\"}}\n");
    let error = build(&with_items, "name\nm-1\n").expect_err("items set");
    assert!(
        error.to_string().contains("spec.items is set (generate)"),
        "{error}"
    );
    let empty_items = format!("{BATCH}  items: {{}}\n");
    assert!(
        build(&empty_items, "name\nm-1\n").is_ok(),
        "an empty items is no items"
    );

    let bad_site = BATCH.replace("hall-7", "hall 7");
    let error = build(&bad_site, "name\nm-1\n").expect_err("bad site");
    assert!(error.to_string().contains("spec.site"), "{error}");
}

#[test]
fn a_policy_template_gets_the_rows_as_its_pre_registered_devices() {
    let csv = "serialNumber,deviceId,token\nSN-1,0001,t-1\nsn-2,,\n";
    let Built::Policy(policy) = build(POLICY, csv).expect("built") else {
        panic!("a policy");
    };
    assert_eq!((policy.name.as_str(), policy.entries), ("thermo", 2));
    assert_eq!(
        policy.object["spec"]["attestation"]["preRegistered"],
        json!({"items": [
            {"serialNumber": "SN-1", "deviceId": "0001", "token": "t-1"},
            {"serialNumber": "sn-2"},
        ]})
    );
    assert!(policy.object["spec"]["attestation"]["symmetricKey"].is_object());

    let error = build(POLICY, "serialNumber,deviceId\nSN-1,ok\nSN-2,Not_OK\n").expect_err("bad id");
    assert_eq!(
        error.to_string(),
        "rows.csv: 1 problem, nothing was applied:\n  \
         line 3: device name: Invalid value: \"th-Not_OK\": a lowercase RFC 1123 subdomain must \
         consist of lower case alphanumeric characters, '-' or '.', and must start and end with \
         an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let listed = POLICY.replace(
        "    symmetricKey:",
        "    preRegistered: {csv: \"serialNumber\\nA\\n\"}\n    symmetricKey:",
    );
    let error = build(&listed, "serialNumber\nb\n").expect_err("list set");
    assert!(
        error.to_string().contains("preRegistered is set (csv)"),
        "{error}"
    );
}

#[test]
fn a_template_of_another_kind_is_refused() {
    let error = build(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "name\nm\n",
    )
    .expect_err("a ConfigMap");
    assert_eq!(
        error.to_string(),
        "batch.yaml: the template is a v1 ConfigMap; --template takes an \
         iot.devplane.io/v1alpha1 OnboardingBatch or ProvisioningPolicy"
    );
    let error = parse_template(Path::new("t.yaml"), &format!("{BATCH}---\n{POLICY}"))
        .expect_err("two documents");
    assert!(error.to_string().contains("2 documents"), "{error}");
}
