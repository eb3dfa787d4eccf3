use devplane_api::v1alpha1::{DataKind, DataType};
use serde_json::{Value, json};

use super::*;
use crate::test_support::resolved;

/// The data type of a measure point of the climate-sensor fixture.
fn point_type(identifier: &str) -> DataType {
    resolved("home", "climate-sensor").measure_points[identifier]
        .definition
        .data_type
        .clone()
}

fn check(identifier: &str, value: Value) -> Result<(), ValueError> {
    validate((&point_type(identifier)).into(), &value)
}

#[test]
fn values_of_every_kind_pass_when_they_fit() {
    for (point, value) in [
        ("door", json!(true)),
        ("battery", json!(42)),
        ("battery", json!(42.0)),
        ("temperature", json!(21.5)),
        ("gain", json!(0.5)),
        ("label", json!("kitchen")),
        ("mode", json!("eco")),
        ("sampledAt", json!(1_700_000_000_000_i64)),
        ("sampledAt", json!("2026-11-25T13:00:00Z")),
        ("location", json!({"lat": 48.1, "lon": 11.5})),
        ("samples", json!([20.0, 21.0])),
        (
            "readings",
            json!([{"channel": 0, "value": 1.5}, {"channel": 7}]),
        ),
    ] {
        assert_eq!(check(point, value.clone()), Ok(()), "{point} = {value}");
    }
}

#[test]
fn a_wrong_type_names_expected_and_found() {
    assert_eq!(
        check("door", json!("yes")),
        Err(ValueError::WrongType {
            expected: DataKind::Bool,
            found: "string"
        })
    );
    assert_eq!(
        check("battery", json!(4.5)),
        Err(ValueError::WrongType {
            expected: DataKind::Int,
            found: "number"
        })
    );
    assert_eq!(
        check("temperature", json!(null)),
        Err(ValueError::WrongType {
            expected: DataKind::Double,
            found: "null"
        })
    );
    assert_eq!(
        check("label", json!(7)),
        Err(ValueError::WrongType {
            expected: DataKind::String,
            found: "integer"
        })
    );
    assert_eq!(
        check("mode", json!(1)),
        Err(ValueError::WrongType {
            expected: DataKind::Enum,
            found: "integer"
        })
    );
    assert_eq!(
        check("location", json!([1])),
        Err(ValueError::WrongType {
            expected: DataKind::Struct,
            found: "array"
        })
    );
    assert_eq!(
        check("samples", json!({})),
        Err(ValueError::WrongType {
            expected: DataKind::Array,
            found: "object"
        })
    );
    assert_eq!(
        check("sampledAt", json!(true)),
        Err(ValueError::WrongType {
            expected: DataKind::Timestamp,
            found: "bool"
        })
    );
}

#[test]
fn out_of_range_numbers_name_the_bounds() {
    let err = check("temperature", json!(130.0)).expect_err("too hot");
    assert_eq!(
        err,
        ValueError::OutOfRange {
            value: 130.0,
            bounds: Bounds {
                min: Some(-40.0),
                max: Some(125.0)
            }
        }
    );
    assert_eq!(err.to_string(), "130 is out of range: allowed [-40, 125]");
    assert!(matches!(
        check("battery", json!(-1)),
        Err(ValueError::OutOfRange { .. })
    ));
    // A float must fit in single precision even without declared bounds.
    assert!(matches!(
        check("gain", json!(1e300)),
        Err(ValueError::OutOfRange { .. })
    ));
}

#[test]
fn an_enum_value_outside_the_list_names_the_allowed_values() {
    let err = check("mode", json!("turbo")).expect_err("not in enum");
    assert_eq!(
        err.to_string(),
        r#""turbo" is not one of ["eco", "comfort", "off"]"#
    );
}

#[test]
fn strings_and_arrays_respect_their_length_limits() {
    assert_eq!(
        check("label", json!("living-room")),
        Err(ValueError::TooLong { length: 11, max: 8 })
    );
    assert_eq!(
        check("samples", json!([1, 2, 3, 4, 5])),
        Err(ValueError::TooManyItems { length: 5, max: 4 })
    );
}

#[test]
fn timestamps_are_epoch_milliseconds_or_rfc3339() {
    assert!(matches!(
        check("sampledAt", json!("yesterday")),
        Err(ValueError::BadTimestamp { .. })
    ));
    assert!(matches!(
        check("sampledAt", json!(-5)),
        Err(ValueError::BadTimestamp { .. })
    ));
    assert!(matches!(
        check("sampledAt", json!(1.5)),
        Err(ValueError::BadTimestamp { .. })
    ));
}

#[test]
fn bad_struct_fields_are_named() {
    assert_eq!(
        check("location", json!({"lat": 1, "lon": 2, "alt": 3})),
        Err(ValueError::UnknownField {
            field: "alt".into()
        })
    );
    assert_eq!(
        check("location", json!({"lat": 1})),
        Err(ValueError::MissingField {
            field: "lon".into()
        })
    );
    let err = check("location", json!({"lat": 91, "lon": 0})).expect_err("bad lat");
    assert_eq!(
        err.to_string(),
        ".lat: 91 is out of range: allowed [-90, 90]"
    );
    assert!(matches!(err.innermost(), ValueError::OutOfRange { .. }));
}

#[test]
fn bad_array_elements_are_named_by_index() {
    let err = check("samples", json!([20.0, "warm"])).expect_err("bad element");
    assert_eq!(err.to_string(), "[1]: expected double, found string");
    let err =
        check("readings", json!([{"channel": 1}, {"channel": 9}])).expect_err("bad nested element");
    assert_eq!(
        err.to_string(),
        "[1]: .channel: 9 is out of range: allowed [0, 7]"
    );
    let err = check("readings", json!([{"value": 1.0}])).expect_err("missing field");
    assert_eq!(
        err.innermost(),
        &ValueError::MissingField {
            field: "channel".into()
        }
    );
}

#[test]
fn csv_cells_parse_by_kind() {
    assert_eq!(parse_text(DataKind::Bool, "TRUE"), Ok(json!(true)));
    assert_eq!(parse_text(DataKind::Int, " 42 "), Ok(json!(42)));
    assert_eq!(parse_text(DataKind::Double, "2.5"), Ok(json!(2.5)));
    assert_eq!(parse_text(DataKind::String, "a b"), Ok(json!("a b")));
    assert_eq!(
        parse_text(DataKind::Timestamp, "1700000000000"),
        Ok(json!(1_700_000_000_000_i64))
    );
    assert_eq!(
        parse_text(DataKind::Struct, r#"{"lat":1}"#),
        Ok(json!({"lat": 1}))
    );
    assert!(parse_text(DataKind::Int, "4.5").is_err());
    assert!(parse_text(DataKind::Bool, "maybe").is_err());
    assert!(parse_text(DataKind::Double, "NaN").is_err());
}

#[test]
fn sampled_values_of_every_point_validate_across_their_range() {
    let model = resolved("home", "climate-sensor");
    for (identifier, feature) in &model.measure_points {
        for position in [0.0, 0.3, 0.5, 1.0] {
            let ty = (&feature.definition.data_type).into();
            let value = sample(ty, position, 1_700_000_000_000);
            assert_eq!(
                validate(ty, &value),
                Ok(()),
                "{identifier} at {position}: {value}"
            );
        }
    }
}
