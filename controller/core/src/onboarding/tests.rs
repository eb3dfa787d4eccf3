use devplane_api::constants::labels;
use devplane_api::v1alpha1::{DataKind, OnboardingBatch, OnboardingBatchSpec};
use serde_json::json;

use super::*;

fn batch(yaml: &str) -> OnboardingBatchSpec {
    let batch: OnboardingBatch = serde_yaml::from_str(yaml).expect("batch parses");
    batch.spec
}

const HEADER: &str = "apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {name: b, namespace: n}\n";

fn no_types(_: &str) -> Option<DataKind> {
    None
}

#[test]
fn generated_items_follow_the_name_pattern() {
    let spec = batch(&format!(
        "{HEADER}spec:\n  template: {{spec: {{modelRef: {{name: inverter}}}}}}\n  items: {{generate: {{count: 3, namePattern: 'inv-{{index:03}}', start: 9}}}}\n  site: north-field\n"
    ));
    let expansion = expand("b", &spec, &no_types).expect("expands");
    let names: Vec<&str> = expansion.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["inv-009", "inv-010", "inv-011"]);
    let labels = &expansion.devices[0].labels;
    assert_eq!(labels[labels::SITE], "north-field");
    assert_eq!(labels[labels::BATCH], "b");
    assert_eq!(expansion.total(), 3);
}

#[test]
fn a_batch_named_longer_than_a_label_value_labels_its_devices_with_a_valid_one() {
    let spec = batch(&format!(
        "{HEADER}spec:\n  template: {{spec: {{modelRef: {{name: inverter}}}}}}\n  items: {{generate: {{count: 1, namePattern: 'inv-{{index}}'}}}}\n"
    ));
    let long = format!("{}-batch", "b".repeat(100));
    let expansion = expand(&long, &spec, &no_types).expect("expands");
    let label = &expansion.devices[0].labels[labels::BATCH];
    assert_eq!(crate::naming::label_value_problem(label), None, "{label}");
    assert_eq!(*label, crate::naming::owner_label_value(&long));
}

#[test]
fn a_list_merges_item_values_over_the_template() {
    let spec = batch(&format!(
        r#"{HEADER}spec:
  template:
    metadata: {{labels: {{vendor: acme}}}}
    spec: {{modelRef: {{name: meter}}, attributes: {{ratedCurrent: 63, phases: 3}}}}
  gatewayRef: {{name: logger-1}}
  items:
    list:
      - {{name: meter-a, serialNumber: SN1, labels: {{bay: "1"}}, attributes: {{ratedCurrent: 32}}}}
      - {{name: meter-b}}
"#
    ));
    let expansion = expand("b", &spec, &no_types).expect("expands");
    let a = &expansion.devices[0];
    assert_eq!(a.spec.attributes["ratedCurrent"], json!(32));
    assert_eq!(a.spec.attributes["phases"], json!(3));
    assert_eq!(a.spec.serial_number.as_deref(), Some("SN1"));
    assert_eq!(a.labels["vendor"], "acme");
    assert_eq!(a.labels["bay"], "1");
    assert_eq!(a.spec.connection.gateway(), Some("logger-1"));
    assert_eq!(
        expansion.devices[1].spec.attributes["ratedCurrent"],
        json!(63)
    );
}

#[test]
fn csv_rows_become_typed_items_and_bad_rows_fail_alone() {
    let spec = batch(&format!(
        r#"{HEADER}spec:
  template: {{spec: {{modelRef: {{name: meter}}}}}}
  items:
    csv: |
      name,serialNumber,label:bay,ratedCurrent,note
      meter-1,SN-1,1,63,"first, with comma"
      meter-2,SN-2,2,lots,x

      meter-3,SN-3,3
      Meter-4,SN-4,4,10,y
      meter-1,SN-5,5,10,y
"#
    ));
    let kinds = |id: &str| (id == "ratedCurrent").then_some(DataKind::Int);
    let expansion = expand("b", &spec, &kinds).expect("expands");
    assert_eq!(expansion.devices.len(), 1);
    let first = &expansion.devices[0];
    assert_eq!(first.spec.attributes["ratedCurrent"], json!(63));
    assert_eq!(first.spec.attributes["note"], json!("first, with comma"));
    assert_eq!(first.labels["bay"], "1");
    let reasons: Vec<(&str, &str)> = expansion
        .failures
        .iter()
        .map(|f| (f.item.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "#2",
                "CSV line 3: column ratedCurrent: expected int, found string"
            ),
            ("#3", "CSV line 5: 3 cells, the header has 5"),
            (
                "Meter-4",
                &*format!(
                    "name: Invalid value: \"Meter-4\": {}",
                    NameError::NotDns1123Subdomain
                )
            ),
            ("meter-1", "name is used by an earlier item"),
        ]
    );
    assert_eq!(expansion.total(), 5);
}

#[test]
fn whole_batch_errors_are_reported() {
    let template = "  template: {spec: {modelRef: {name: m}}}\n";
    let cases = [
        (
            "  items: {}\n",
            "spec.items takes exactly one of list, csv and generate; 0 given",
        ),
        (
            "  items: {list: [], csv: 'name'}\n",
            "spec.items takes exactly one of list, csv and generate; 2 given",
        ),
        (
            "  items: {generate: {count: 2, namePattern: fixed}}\n",
            "needs {index}",
        ),
        (
            "  items: {generate: {count: 2, namePattern: 'x-{serial}'}}\n",
            "placeholders are",
        ),
        (
            "  items: {generate: {count: 0, namePattern: 'x-{index}'}}\n",
            "count 0 is out of range",
        ),
        ("  items: {csv: 'serial\\nA'}\n", "has no `name` column"),
        ("  items: {csv: '\"open'}\n", "quoted field is not closed"),
        (
            "  items: {list: []}\n  site: 'bad site'\n",
            "spec.site: Invalid value: \"bad site\": a valid label must be",
        ),
    ];
    for (items, expected) in cases {
        let spec = batch(&format!("{HEADER}spec:\n{template}{items}"));
        let err = expand("b", &spec, &no_types).expect_err(items);
        assert!(err.to_string().contains(expected), "{items}: {err}");
    }
}

#[test]
fn csv_follows_rfc_4180_quoting() {
    let rows = parse_csv("a,\"b \"\"q\"\"\",c\r\n\"multi\nline\",,\n").expect("parses");
    assert_eq!(
        rows,
        vec![vec!["a", "b \"q\"", "c"], vec!["multi\nline", "", ""]]
    );
    assert!(parse_csv("a\"b").is_err());
    assert!(parse_csv("\"a\"b").is_err());
}

#[test]
fn name_patterns_render_padded_indexes() {
    let p = NamePattern::parse("site-{index}-inv-{index:4}").expect("parses");
    assert_eq!(p.render(7), "site-7-inv-0007");
    assert!(NamePattern::parse("a}").is_err());
    assert!(NamePattern::parse("{index:99}").is_err());
}
