use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

fn ago(seconds: i64) -> String {
    (now() - SignedDuration::from_secs(seconds)).to_string()
}

fn printer_column(name: &str, type_: &str, path: &str) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        ..Default::default()
    }
}

#[test]
fn human_duration_matches_apimachinery_at_every_boundary() {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;
    let cases = [
        (0, "0s"),
        (1, "1s"),
        (119, "119s"),
        (2 * MIN, "2m"),
        (2 * MIN + 1, "2m1s"),
        (5 * MIN + 30, "5m30s"),
        (10 * MIN - 1, "9m59s"),
        (10 * MIN, "10m"),
        (10 * MIN + 59, "10m"),
        (3 * HOUR - 1, "179m"),
        (3 * HOUR, "3h"),
        (3 * HOUR + MIN, "3h1m"),
        (8 * HOUR - 1, "7h59m"),
        (8 * HOUR, "8h"),
        (48 * HOUR - 1, "47h"),
        (48 * HOUR, "2d"),
        (49 * HOUR, "2d1h"),
        (8 * DAY - 1, "7d23h"),
        (8 * DAY, "8d"),
        (2 * YEAR - 1, "729d"),
        (2 * YEAR, "2y"),
        (2 * YEAR + DAY, "2y1d"),
        (8 * YEAR - 1, "7y364d"),
        (8 * YEAR, "8y"),
        (20 * YEAR + 100 * DAY, "20y"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(
            human_duration(Duration::from_secs(seconds)),
            expected,
            "{seconds}s"
        );
    }
    // Sub-second parts are truncated.
    assert_eq!(human_duration(Duration::from_millis(119_999)), "119s");
}

#[test]
fn ages_slightly_in_the_future_read_zero_and_further_ones_invalid() {
    assert_eq!(
        human_signed_duration(SignedDuration::from_millis(-999)),
        "0s"
    );
    assert_eq!(
        human_signed_duration(SignedDuration::from_millis(-1_900)),
        "0s"
    );
    assert_eq!(
        human_signed_duration(SignedDuration::from_secs(-2)),
        "<invalid>"
    );
    assert_eq!(age_since(None, now()), "<unknown>");
}

#[test]
fn crd_without_printer_columns_prints_name_and_age() {
    let columns = crd_columns(&[]).unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.def.name.as_str()).collect();
    assert_eq!(names, ["Name", "Age"]);
    assert_eq!(columns[0].def.format, "name");
    assert_eq!(columns[1].def.type_, "date");
    assert_eq!(
        columns[1].path().map(|p| p.as_str()),
        Some(".metadata.creationTimestamp")
    );
    let object = json!({"metadata": {"name": "d1", "creationTimestamp": ago(330)}});
    assert_eq!(
        cells(&columns, &object, now()),
        vec![json!("d1"), json!("5m30s")]
    );
}

#[test]
fn crd_printer_columns_replace_the_implicit_age() {
    let mut ready = printer_column(
        "Ready",
        "string",
        r#".status.conditions[?(@.type=="Ready")].status"#,
    );
    ready.priority = Some(1);
    ready.description = Some("Whether the device is ready".into());
    let columns = crd_columns(&[
        printer_column("Replicas", "integer", ".spec.replicas"),
        ready,
    ])
    .unwrap();
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| serde_json::to_value(&c.def).unwrap())
        .collect();
    assert_eq!(definitions[0]["name"], "Name");
    assert_eq!(
        definitions[2],
        json!({"name": "Ready", "type": "string", "format": "", "description": "Whether the device is ready", "priority": 1})
    );
    assert!(
        definitions[1]["description"]
            .as_str()
            .unwrap()
            .contains(".spec.replicas")
    );
    assert_eq!(columns.len(), 3);
}

#[test]
fn a_printer_column_with_a_bad_path_is_an_error() {
    let err = crd_columns(&[printer_column("Bad", "string", ".spec.items[x]")]).unwrap_err();
    assert!(err.to_string().contains("invalid array index"), "{err}");
}

#[test]
fn printer_column_cells_are_converted_by_type() {
    let columns = crd_columns(&[
        printer_column("Replicas", "integer", ".spec.replicas"),
        printer_column("Truncated", "integer", ".spec.ratio"),
        printer_column("Ratio", "number", ".spec.ratio"),
        printer_column("WholeRatio", "number", ".spec.replicas"),
        printer_column("Enabled", "boolean", ".spec.enabled"),
        printer_column("Mode", "string", ".spec.mode"),
        printer_column("Count", "string", ".spec.replicas"),
        printer_column("Items", "string", ".spec.items[*].name"),
        printer_column("Map", "string", ".spec.selector"),
        printer_column("Nothing", "string", ".spec.missing"),
        printer_column("Null", "string", ".spec.nothing"),
        printer_column("NullInt", "integer", ".spec.nothing"),
        printer_column("WrongType", "boolean", ".spec.mode"),
        printer_column("Created", "date", ".metadata.creationTimestamp"),
        printer_column("BadDate", "date", ".spec.mode"),
        printer_column("EmptyDate", "date", ".spec.empty"),
        printer_column("Unknown", "widget", ".spec.mode"),
    ])
    .unwrap();
    let object = json!({
        "metadata": {"name": "d1", "creationTimestamp": ago(3 * 3600 + 60)},
        "spec": {
            "replicas": 3, "ratio": 2.75, "enabled": true, "mode": "auto", "empty": "",
            "items": [{"name": "a"}, {"name": "b"}], "selector": {"b": "2", "a": "1"}, "nothing": null
        }
    });
    assert_eq!(
        cells(&columns, &object, now()),
        vec![
            json!("d1"),
            json!(3),
            json!(2),
            json!(2.75),
            json!(3.0),
            json!(true),
            json!("auto"),
            json!("3"),
            // Like apiextensions, only the first match of a multi-match path is shown.
            json!("a"),
            json!("map[a:1 b:2]"),
            Value::Null,
            json!("<no value>"),
            Value::Null,
            Value::Null,
            json!("3h1m"),
            json!("<invalid>"),
            json!("<unknown>"),
            Value::Null,
        ]
    );
}

#[test]
fn configmaps_print_the_number_of_data_and_binary_data_keys() {
    let object = json!({
        "metadata": {"name": "cm", "creationTimestamp": ago(90)},
        "data": {"a": "1", "b": "2"},
        "binaryData": {"c": "AA=="}
    });
    let names: Vec<String> = builtin_columns("ConfigMap")
        .into_iter()
        .map(|c| c.def.name)
        .collect();
    assert_eq!(names, ["Name", "Data", "Age"]);
    assert_eq!(
        builtin_cells("ConfigMap", &object, now()),
        vec![json!("cm"), json!(3), json!("90s")]
    );
}

#[test]
fn secrets_print_type_and_number_of_keys() {
    let object = json!({
        "metadata": {"name": "s", "creationTimestamp": ago(2 * 86400)},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""}
    });
    let names: Vec<String> = builtin_columns("Secret")
        .into_iter()
        .map(|c| c.def.name)
        .collect();
    assert_eq!(names, ["Name", "Type", "Data", "Age"]);
    assert_eq!(
        builtin_cells("Secret", &object, now()),
        vec![
            json!("s"),
            json!("kubernetes.io/tls"),
            json!(2),
            json!("2d")
        ]
    );
}

#[test]
fn namespaces_print_their_phase_and_leases_their_holder() {
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(40 * 86400)}, "status": {"phase": "Active"}});
    assert_eq!(
        builtin_cells("Namespace", &ns, now()),
        vec![json!("default"), json!("Active"), json!("40d")]
    );
    let lease = json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "pod-a"}});
    assert_eq!(
        builtin_cells("Lease", &lease, now()),
        vec![json!("leader"), json!("pod-a"), json!("<unknown>")]
    );
    let free = json!({"metadata": {"name": "leader", "creationTimestamp": ago(5)}, "spec": {}});
    assert_eq!(
        builtin_cells("Lease", &free, now()),
        vec![json!("leader"), json!(""), json!("5s")]
    );
}

#[test]
fn events_print_every_upstream_column_including_the_wide_ones() {
    let columns = builtin_columns("Event");
    let headers: Vec<(&str, i32)> = columns
        .iter()
        .map(|c| (c.def.name.as_str(), c.def.priority))
        .collect();
    assert_eq!(
        headers,
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ]
    );
    let event = json!({
        "metadata": {"name": "d1.17a", "namespace": "default"},
        "involvedObject": {"kind": "Device", "name": "d1", "fieldPath": "spec.sensors{t}"},
        "reason": "Provisioned",
        "message": "  provisioned  \n",
        "type": "Normal",
        "source": {"component": "devplane", "host": "node-1"},
        "firstTimestamp": ago(3 * 86400),
        "lastTimestamp": ago(2 * 86400),
        "count": 6
    });
    assert_eq!(
        cells(&columns, &event, now()),
        vec![
            json!("2d"),
            json!("Normal"),
            json!("Provisioned"),
            json!("device/d1"),
            json!("spec.sensors{t}"),
            json!("devplane, node-1"),
            json!("provisioned"),
            json!("3d"),
            json!(6),
            json!("d1.17a"),
        ]
    );
}

#[test]
fn events_from_events_k8s_io_fall_back_to_event_time_series_and_reporting_controller() {
    let event = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Namespace"},
        "reason": "Ready",
        "eventTime": ago(600),
        "reportingComponent": "devplane-controller",
        "reportingInstance": "",
        "type": "Warning",
        "message": "m"
    });
    let row = builtin_cells("Event", &event, now());
    assert_eq!(
        row[0],
        json!("10m"),
        "last seen falls back to first seen, i.e. eventTime"
    );
    assert_eq!(row[3], json!("namespace"), "no name: the kind alone");
    assert_eq!(row[5], json!("devplane-controller"));
    assert_eq!(row[7], json!("10m"));
    assert_eq!(row[8], json!(1), "singletons count once");

    let series = json!({
        "metadata": {"name": "e"},
        "eventTime": ago(600),
        "series": {"count": 4, "lastObservedTime": ago(30)}
    });
    let row = builtin_cells("Event", &series, now());
    assert_eq!(row[0], json!("30s"));
    assert_eq!(row[5], json!("<unknown>"));
    assert_eq!(row[8], json!(4));
}

#[test]
fn other_kinds_print_name_and_creation_time() {
    let crd = json!({"metadata": {"name": "devices.iot.devplane.io", "creationTimestamp": "2024-04-30T08:15:00.5+02:00"}});
    let names: Vec<String> = builtin_columns("CustomResourceDefinition")
        .into_iter()
        .map(|c| c.def.name)
        .collect();
    assert_eq!(names, ["Name", "Created At"]);
    assert_eq!(
        builtin_cells("CustomResourceDefinition", &crd, now()),
        vec![
            json!("devices.iot.devplane.io"),
            json!("2024-04-30T06:15:00Z")
        ]
    );
    let no_time = json!({"metadata": {"name": "x"}});
    assert_eq!(
        builtin_cells("Whatever", &no_time, now())[1],
        json!("0001-01-01T00:00:00Z")
    );
}

#[test]
fn a_table_carries_list_metadata_columns_and_partial_metadata_rows() {
    let columns = builtin_columns("ConfigMap");
    let objects = [json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns", "labels": {"a": "b"}, "creationTimestamp": ago(5)},
        "data": {"k": "v"}
    })];
    let table = table(
        &columns,
        &objects,
        IncludeObject::Metadata,
        "42",
        Some("tok"),
        true,
        now(),
    );
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        table["metadata"],
        json!({"resourceVersion": "42", "continue": "tok"})
    );
    assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 3);
    assert_eq!(table["columnDefinitions"][0]["type"], "string");
    assert_eq!(table["rows"][0]["cells"], json!(["cm", 1, "5s"]));
    assert_eq!(
        table["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": objects[0]["metadata"]})
    );
}

#[test]
fn a_table_can_carry_whole_objects_or_none() {
    let columns = builtin_columns("Namespace");
    let objects = [json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}})];
    let full = table(
        &columns,
        &objects,
        IncludeObject::Object,
        "",
        None,
        true,
        now(),
    );
    assert_eq!(full["rows"][0]["object"], objects[0]);
    assert_eq!(
        full["metadata"],
        json!({}),
        "empty resourceVersion and continue are omitted"
    );
    let bare = table(
        &columns,
        &objects,
        IncludeObject::None,
        "7",
        Some(""),
        false,
        now(),
    );
    assert!(bare["rows"][0].get("object").is_none());
    assert_eq!(
        bare["columnDefinitions"],
        json!([]),
        "watch events after the first omit columns"
    );
    assert_eq!(bare["metadata"], json!({"resourceVersion": "7"}));
}

#[test]
fn include_object_is_parsed_from_the_query() {
    assert_eq!(IncludeObject::parse(None), IncludeObject::Metadata);
    assert_eq!(IncludeObject::parse(Some("")), IncludeObject::Metadata);
    assert_eq!(IncludeObject::parse(Some("None")), IncludeObject::None);
    assert_eq!(IncludeObject::parse(Some("Object")), IncludeObject::Object);
    assert_eq!(IncludeObject::parse(Some("bogus")), IncludeObject::Metadata);
    let err = IncludeObject::try_parse(Some("bogus")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"includeObject: Invalid value: "bogus": must be 'Metadata', 'Object', 'None', or empty"#
    );
}
