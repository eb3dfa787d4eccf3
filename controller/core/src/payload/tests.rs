use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::*;
use crate::test_support::resolved;
use crate::value::ValueError;

fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("object")
}

fn btree(value: Value) -> BTreeMap<String, Value> {
    map(value).into_iter().collect()
}

#[test]
fn a_valid_telemetry_payload_has_no_errors() {
    let model = resolved("home", "climate-sensor");
    let payload = map(
        json!({"temperature": 21.5, "humidity": 40, "battery": 90, "signal": {"value": -70.0, "quality": 0}}),
    );
    assert_eq!(validate_measurements(&model, &payload), vec![]);
}

#[test]
fn telemetry_errors_name_every_bad_point() {
    let model = resolved("home", "climate-sensor");
    let payload = map(json!({
        "temperature": "hot",
        "humidity": 140,
        "mode": "turbo",
        "pressure": 1013,
        "samples": [1, "x"],
        "signal": {"value": -70.0, "quality": "good"},
    }));
    let errors = validate_measurements(&model, &payload);
    let points: Vec<&str> = errors.iter().map(PayloadError::point).collect();
    assert_eq!(
        points,
        [
            "humidity",
            "mode",
            "pressure",
            "samples",
            "signal",
            "temperature"
        ]
    );
    assert!(matches!(
        &errors[0],
        PayloadError::Invalid {
            source: ValueError::OutOfRange { .. },
            ..
        }
    ));
    assert!(matches!(
        &errors[1],
        PayloadError::Invalid {
            source: ValueError::NotInEnum { .. },
            ..
        }
    ));
    assert_eq!(
        errors[2],
        PayloadError::UnknownPoint {
            kind: PointKind::MeasurePoint,
            point: "pressure".into()
        }
    );
    assert!(matches!(
        &errors[3],
        PayloadError::Invalid {
            source: ValueError::BadElement { .. },
            ..
        }
    ));
    assert_eq!(
        errors[4],
        PayloadError::BadQuality {
            point: "signal".into()
        }
    );
    assert_eq!(
        errors[5].to_string(),
        "measure point \"temperature\": expected double, found string"
    );
}

#[test]
fn a_quality_wrapper_is_only_read_for_points_with_quality() {
    let model = resolved("home", "climate-sensor");
    let errors = validate_measurements(
        &model,
        &map(json!({"temperature": {"value": 20.0, "quality": 0}})),
    );
    assert!(matches!(
        &errors[0],
        PayloadError::Invalid {
            source: ValueError::WrongType {
                found: "object",
                ..
            },
            ..
        }
    ));
    assert_eq!(
        validate_measurements(&model, &map(json!({"signal": -60.0}))),
        vec![]
    );
}

#[test]
fn configured_attributes_need_required_values_unless_defaulted() {
    let model = resolved("home", "climate-sensor");
    let errors = validate_attributes(
        &model,
        &btree(json!({"reportInterval": 60})),
        AttributeCheck::Configured,
    );
    assert_eq!(
        errors,
        vec![PayloadError::MissingRequired {
            kind: PointKind::Attribute,
            point: "manufacturer".into()
        }]
    );
    let ok = validate_attributes(
        &model,
        &btree(json!({"manufacturer": "Acme"})),
        AttributeCheck::Configured,
    );
    assert_eq!(ok, vec![]);
    let reported = validate_attributes(
        &model,
        &btree(json!({"reportInterval": 60})),
        AttributeCheck::Reported,
    );
    assert_eq!(reported, vec![]);
}

#[test]
fn attribute_values_are_typed_and_known() {
    let model = resolved("home", "climate-sensor");
    let errors = validate_attributes(
        &model,
        &btree(json!({"manufacturer": 5, "colour": "red"})),
        AttributeCheck::Reported,
    );
    assert_eq!(
        errors[0],
        PayloadError::UnknownPoint {
            kind: PointKind::Attribute,
            point: "colour".into()
        }
    );
    assert!(matches!(&errors[1], PayloadError::Invalid { point, .. } if point == "manufacturer"));
}

#[test]
fn desired_attributes_must_be_writable() {
    let model = resolved("home", "climate-sensor");
    let errors = validate_attributes(
        &model,
        &btree(json!({"reportInterval": 30, "manufacturer": "Acme"})),
        AttributeCheck::Desired,
    );
    assert_eq!(
        errors,
        vec![PayloadError::NotWritable {
            point: "manufacturer".into()
        }]
    );
    let errors = validate_attributes(
        &model,
        &btree(json!({"reportInterval": 0})),
        AttributeCheck::Desired,
    );
    assert!(matches!(
        &errors[0],
        PayloadError::Invalid {
            source: ValueError::OutOfRange { .. },
            ..
        }
    ));
}

#[test]
fn a_service_call_is_checked_against_the_model() {
    let model = resolved("home", "climate-sensor");
    let service =
        validate_call(&model, "setMode", &btree(json!({"mode": "eco"}))).expect("valid call");
    assert_eq!(service.identifier, "setMode");

    let err = validate_call(&model, "reboot", &BTreeMap::new()).expect_err("unknown service");
    assert_eq!(err.reason(), "UnknownService");
    assert_eq!(
        err.to_string(),
        "model home/climate-sensor has no service \"reboot\""
    );

    let err = validate_call(
        &model,
        "setMode",
        &btree(json!({"durationSeconds": -1, "speed": 2})),
    )
    .expect_err("bad params");
    assert_eq!(err.reason(), "InvalidParameters");
    let CallError::BadParameters { errors, .. } = &err else {
        panic!("expected bad parameters")
    };
    let points: Vec<&str> = errors.iter().map(PayloadError::point).collect();
    assert_eq!(points, ["durationSeconds", "speed", "mode"]);
    assert!(matches!(
        errors[2],
        PayloadError::MissingRequired {
            kind: PointKind::Input,
            ..
        }
    ));
}

#[test]
fn event_outputs_are_checked_like_parameters() {
    let model = resolved("home", "climate-sensor");
    let outputs = &model.events["tamper"].definition.outputs;
    assert_eq!(
        validate_parameters(
            outputs,
            PointKind::Output,
            &btree(json!({"reason": "lid open"}))
        ),
        vec![]
    );
    let errors = validate_parameters(outputs, PointKind::Output, &btree(json!({"reason": 1})));
    assert_eq!(
        errors[0].to_string(),
        "output parameter \"reason\": expected string, found integer"
    );
}
