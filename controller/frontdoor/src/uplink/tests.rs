use std::collections::BTreeMap;

use devplane_api::v1alpha1::DeviceModelSpec;
use devplane_core::model::{ModelKey, resolve};

use super::*;

const MODEL: &str = r#"
version: 1.0.0
attributes:
  - identifier: room
    dataType: {type: string, maxLength: 8}
  - identifier: interval
    dataType: {type: int, min: 10, max: 600}
    writable: true
measurePoints:
  - identifier: temperature
    dataType: {type: double, min: -40, max: 85}
  - identifier: mode
    dataType:
      type: enum
      enumValues: [{value: eco}, {value: boost}]
services:
  - identifier: reboot
    inputs:
      - identifier: delay
        dataType: {type: int, min: 0}
    outputs:
      - identifier: uptime
        dataType: {type: int, min: 0}
        required: true
events:
  - identifier: overheat
    outputs:
      - identifier: peak
        dataType: {type: double}
        required: true
"#;

fn model() -> ResolvedModel {
    let spec: DeviceModelSpec = serde_yaml::from_str(MODEL).expect("model yaml");
    let key = ModelKey::new("ns", "thermo");
    let source = BTreeMap::from([(key.clone(), spec)]);
    resolve(&source, &key).expect("model resolves")
}

#[test]
fn valid_telemetry_is_accepted_single_and_batched() {
    let m = model();
    let one = telemetry(
        &m,
        br#"{"ts": 1700000000000, "points": {"temperature": 21.5}}"#,
    )
    .expect("valid");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].ts, Some(1_700_000_000_000));
    let batch = telemetry(
        &m,
        br#"[{"points": {"temperature": 20}}, {"points": {"mode": "eco"}}]"#,
    )
    .expect("valid batch");
    assert_eq!(batch.len(), 2);
}

#[test]
fn an_out_of_range_value_is_rejected_naming_the_point() {
    let r = telemetry(&model(), br#"{"points": {"temperature": 120}}"#).expect_err("range");
    assert_eq!(r.reason, "InvalidValue");
    assert_eq!(r.field, "points.temperature");
    assert!(r.message.contains("temperature"), "{}", r.message);
}

#[test]
fn an_unknown_point_is_rejected_naming_it() {
    let r = telemetry(&model(), br#"{"points": {"pressure": 1}}"#).expect_err("unknown");
    assert_eq!(r.reason, "UnknownPoint");
    assert_eq!(r.field, "points.pressure");
}

#[test]
fn a_bad_sample_in_a_batch_is_named_by_its_index() {
    let r = telemetry(
        &model(),
        br#"[{"points": {"temperature": 1}}, {"points": {"mode": "turbo"}}]"#,
    )
    .expect_err("enum");
    assert_eq!(r.field, "[1].points.mode");
}

#[test]
fn malformed_telemetry_is_rejected_with_its_shape() {
    let m = model();
    assert_eq!(
        telemetry(&m, b"{not json").expect_err("json").reason,
        "InvalidJson"
    );
    assert_eq!(
        telemetry(&m, b"[]").expect_err("empty").reason,
        "InvalidShape"
    );
    assert_eq!(
        telemetry(&m, br#"{"temperature": 1}"#)
            .expect_err("flat")
            .field,
        "temperature"
    );
    assert_eq!(
        telemetry(&m, br#"{"points": 3}"#)
            .expect_err("points")
            .field,
        "points"
    );
    assert_eq!(
        telemetry(&m, br#"{"ts": "now", "points": {}}"#)
            .expect_err("ts")
            .field,
        "ts"
    );
}

#[test]
fn events_are_checked_against_their_output_params() {
    let m = model();
    assert!(event(&m, "overheat", br#"{"params": {"peak": 90.5}}"#).is_ok());
    assert_eq!(
        event(&m, "overheat", br#"{"params": {}}"#)
            .expect_err("required")
            .reason,
        "MissingRequired"
    );
    assert_eq!(
        event(&m, "flood", br#"{"params": {}}"#)
            .expect_err("unknown")
            .reason,
        "UnknownEvent"
    );
    assert_eq!(
        event(&m, "overheat", br#"{"params": {"peak": "hot"}}"#)
            .expect_err("type")
            .field,
        "params.peak"
    );
}

#[test]
fn reported_attributes_are_any_valid_subset() {
    let m = model();
    let values = reported(&m, br#"{"interval": 60}"#).expect("valid");
    assert_eq!(values["interval"], 60);
    assert_eq!(
        reported(&m, br#"{"interval": 5}"#)
            .expect_err("range")
            .field,
        "interval"
    );
    assert_eq!(
        reported(&m, br#"{"colour": "red"}"#)
            .expect_err("unknown")
            .reason,
        "UnknownPoint"
    );
}

#[test]
fn command_responses_are_checked_against_the_service_outputs() {
    let m = model();
    let service = &m.services["reboot"].definition;
    let ok = command_response(
        service,
        br#"{"status": "Succeeded", "output": {"uptime": 5}}"#,
    )
    .expect("valid");
    assert!(ok.succeeded);
    assert_eq!(ok.output["uptime"], 5);
    let failed = command_response(service, br#"{"status": "Failed", "message": "busy"}"#)
        .expect("a failure needs no output");
    assert!(!failed.succeeded);
    assert_eq!(failed.message.as_deref(), Some("busy"));
    assert_eq!(
        command_response(service, br#"{"status": "Succeeded", "output": {}}"#)
            .expect_err("missing output")
            .field,
        "output.uptime"
    );
    assert_eq!(
        command_response(service, br#"{"status": "Done"}"#)
            .expect_err("status")
            .field,
        "status"
    );
    let named = command_response(service, br#"{"status": "Failed", "uid": "7f3c"}"#)
        .expect("an answer may name the command's uid");
    assert_eq!(named.uid.as_deref(), Some("7f3c"));
    assert_eq!(ok.uid, None);
    assert_eq!(
        command_response(service, br#"{"status": "Failed", "uid": 7}"#)
            .expect_err("uid")
            .field,
        "uid"
    );
}
