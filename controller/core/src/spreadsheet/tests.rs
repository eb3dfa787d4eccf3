use devplane_api::v1alpha1::{DataKind, ProvisioningPolicySpec};

use super::*;

fn meter_kinds(identifier: &str) -> Option<DataKind> {
    match identifier {
        "ratedCurrent" => Some(DataKind::Int),
        "note" => Some(DataKind::String),
        _ => None,
    }
}

fn lines(problems: &[RowProblem]) -> Vec<Option<usize>> {
    problems.iter().map(|p| p.line).collect()
}

#[test]
fn a_clean_batch_csv_gives_every_row_as_an_item() {
    let csv = "name,serialNumber,label:bay,ratedCurrent\nmeter-1,SN-1,1,63\n\nmeter-2,,2,\n";
    let items = check_batch_csv(csv, Some(&meter_kinds)).expect("clean");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].attributes["ratedCurrent"], serde_json::json!(63));
    assert_eq!(items[1].serial_number, None);
    assert_eq!(items[1].labels["bay"], "2");
}

#[test]
fn every_bad_batch_row_is_named_by_its_line() {
    let csv = "\
name,serialNumber,label:bay,ratedCurrent
meter-1,SN-1,1,63
Meter-2,SN-2,2,10
meter-1,SN-3,3,10
meter-4,SN-4,4
meter-5,SN-5,no good,lots
meter-6,\"SN
6\",6,1
meter-7,SN-7,7,8.5
";
    let problems = check_batch_csv(csv, Some(&meter_kinds)).expect_err("bad rows");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "line 3: name: Invalid value: \"Meter-2\": a lowercase RFC 1123 subdomain must consist of \
             lower case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            "line 4: name meter-1 is used on line 2 already",
            "line 5: 3 cells, the header has 4",
            "line 6: column ratedCurrent: expected int, found string",
            "line 6: label bay: Invalid value: \"no good\": a valid label must be an empty string or \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            "line 9: column ratedCurrent: expected int, found string",
        ]
    );
}

#[test]
fn a_row_with_several_problems_reports_each() {
    let csv = "name,label:bay,ratedCurrent,note\nmeter-1,a b,x,fine\n";
    let problems = check_batch_csv(csv, Some(&meter_kinds)).expect_err("bad row");
    assert_eq!(lines(&problems), [Some(2), Some(2)], "{problems:?}");
    let csv = "name,label:bay,label:room\nMeter-1,a b,-x\n";
    let problems = check_batch_csv(csv, None).expect_err("bad row");
    assert_eq!(
        lines(&problems),
        [Some(2), Some(2), Some(2)],
        "{problems:?}"
    );
}

#[test]
fn header_problems_are_on_the_header_line() {
    let problems = check_batch_csv("serialNumber\nSN-1\n", None).expect_err("no name");
    assert_eq!(lines(&problems), [Some(1)]);
    assert!(problems[0].message.contains("no `name` column"));

    let csv = "name,colour,name,label:\nm-1,red,m-1,x\n";
    let problems = check_batch_csv(csv, Some(&meter_kinds)).expect_err("bad header");
    let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        text,
        [
            "column \"colour\" is not an attribute of the template's model",
            "column \"name\" is both column 1 and column 3",
            "column 4: label: needs a key",
        ]
    );
    // Without a model, any column is an attribute (its cells stay strings).
    let items = check_batch_csv("name,colour\nm-1,red\n", None).expect("unchecked");
    assert_eq!(items[0].attributes["colour"], "red");
}

#[test]
fn an_empty_file_or_one_without_rows_is_a_problem() {
    assert!(check_batch_csv("", None).is_err());
    let problems = check_batch_csv("name\n", None).expect_err("no rows");
    assert_eq!(problems[0].to_string(), "line 1: no rows below the header");
    let problems = check_batch_csv("name\n\"m-1\n", None).expect_err("unclosed quote");
    assert_eq!(problems[0].line, None);
}

fn policy(yaml: &str) -> ProvisioningPolicySpec {
    serde_yaml::from_str(yaml).expect("a policy spec")
}

#[test]
fn allow_list_rows_are_checked_against_the_policys_naming() {
    let spec = policy(
        r#"
template: {spec: {modelRef: {name: thermo}}}
naming: {prefix: "th-", idPattern: "[0-9a-f]{8}"}
attestation: {symmetricKey: {secretRef: {name: group}}}
"#,
    );
    let csv = "serialNumber,deviceId,token\nSN-1,0000beef,t1\nSN-2,0000cafe,\n";
    let items = check_allow_csv(csv, &spec).expect("clean");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].token.as_deref(), Some("t1"));
    assert_eq!(items[1].token, None);

    let csv = "serialNumber,deviceId\nSN-1,0000beef\nSN-2,nothex\nSN-3,0000beef\nSN-1,0000feed\n";
    let problems = check_allow_csv(csv, &spec).expect_err("bad rows");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        ["line 5: serial number SN-1 is listed on line 2 already"],
        "parse problems come first, alone"
    );
    let csv = "serialNumber,deviceId\nSN-1,0000beef\nSN-2,nothex\nSN-3,0000beef\n";
    let problems = check_allow_csv(csv, &spec).expect_err("bad rows");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "line 3: device id nothex does not match the policy's idPattern ^(?:[0-9a-f]{8})$",
            "line 4: device id 0000beef is used on line 2 already",
        ]
    );
}

#[test]
fn allow_list_ids_default_to_the_serial_number_and_must_make_a_device_name() {
    let spec = policy(
        r#"
template: {spec: {modelRef: {name: thermo}}}
attestation: {preRegistered: {items: [{serialNumber: placeholder}]}}
"#,
    );
    let problems = check_allow_csv("serialNumber\nSN-1\nsn-2\n", &spec).expect_err("upper case");
    assert_eq!(lines(&problems), [Some(2)]);
    assert!(
        problems[0]
            .message
            .starts_with("device name: Invalid value: \"SN-1\": a lowercase RFC 1123 subdomain")
    );
    let problems = check_allow_csv("serialNumber\n", &spec).expect_err("no rows");
    assert_eq!(problems[0].to_string(), "line 1: no rows below the header");
}
