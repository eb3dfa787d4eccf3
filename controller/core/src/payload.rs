//! Validating named values (telemetry, attribute values, desired attributes, service and event
//! parameters) against a resolved model.

use std::collections::BTreeMap;
use std::fmt;

use devplane_api::v1alpha1::{Parameter, Service};
use serde_json::{Map, Value};

use crate::model::ResolvedModel;
use crate::value::{self, ValueError};

/// What a named value is, in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// An attribute.
    Attribute,
    /// A measure point.
    MeasurePoint,
    /// An input parameter of a service.
    Input,
    /// An output parameter of a service or event.
    Output,
}

impl fmt::Display for PointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointKind::Attribute => "attribute",
            PointKind::MeasurePoint => "measure point",
            PointKind::Input => "input parameter",
            PointKind::Output => "output parameter",
        })
    }
}

/// A problem with one named value of a payload.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// The model has no point of this name.
    #[error("unknown {kind} {point:?}")]
    UnknownPoint {
        /// What the name was taken for.
        kind: PointKind,
        /// The name.
        point: String,
    },
    /// The value does not satisfy the point's data type.
    #[error("{kind} {point:?}: {source}")]
    Invalid {
        /// What the point is.
        kind: PointKind,
        /// The point.
        point: String,
        /// What is wrong with the value.
        source: ValueError,
    },
    /// A required point is absent.
    #[error("required {kind} {point:?} is missing")]
    MissingRequired {
        /// What the point is.
        kind: PointKind,
        /// The point.
        point: String,
    },
    /// A desired value for an attribute the cloud may not set.
    #[error("attribute {point:?} is not writable")]
    NotWritable {
        /// The attribute.
        point: String,
    },
    /// A measure point with quality that is not `{"value": …, "quality": <int>}` or a bare value.
    #[error(
        "measure point {point:?}: expected a value or {{\"value\": …, \"quality\": <integer>}}"
    )]
    BadQuality {
        /// The point.
        point: String,
    },
}

impl PayloadError {
    /// The point the error is about.
    pub fn point(&self) -> &str {
        match self {
            PayloadError::UnknownPoint { point, .. }
            | PayloadError::Invalid { point, .. }
            | PayloadError::MissingRequired { point, .. }
            | PayloadError::NotWritable { point }
            | PayloadError::BadQuality { point } => point,
        }
    }
}

/// Validate a telemetry payload: every key must be a measure point of the model and every value
/// must satisfy its type. Points declared `hasQuality` may be sent as
/// `{"value": …, "quality": <integer>}`. Returns every problem, in key order.
pub fn validate_measurements(
    model: &ResolvedModel,
    payload: &Map<String, Value>,
) -> Vec<PayloadError> {
    let mut errors = Vec::new();
    for (point, raw) in payload {
        let Some(feature) = model.measure_points.get(point) else {
            errors.push(PayloadError::UnknownPoint {
                kind: PointKind::MeasurePoint,
                point: point.clone(),
            });
            continue;
        };
        let definition = &feature.definition;
        let value = match raw {
            Value::Object(wrapper) if definition.has_quality && wrapper.contains_key("value") => {
                let quality_ok = wrapper
                    .get("quality")
                    .is_none_or(|q| q.is_i64() || q.is_u64());
                if !quality_ok || wrapper.keys().any(|k| k != "value" && k != "quality") {
                    errors.push(PayloadError::BadQuality {
                        point: point.clone(),
                    });
                    continue;
                }
                &wrapper["value"]
            }
            other => other,
        };
        if let Err(source) = value::validate((&definition.data_type).into(), value) {
            errors.push(PayloadError::Invalid {
                kind: PointKind::MeasurePoint,
                point: point.clone(),
                source,
            });
        }
    }
    errors
}

/// How attribute values are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeCheck {
    /// A device's configured values (`spec.attributes`): required attributes without a default
    /// must be present.
    Configured,
    /// Values the device reports: any subset.
    Reported,
    /// Desired values (`spec.desired`): only writable attributes.
    Desired,
}

/// Validate attribute values by identifier. Returns every problem, in key order, then missing
/// required attributes.
pub fn validate_attributes(
    model: &ResolvedModel,
    values: &BTreeMap<String, Value>,
    check: AttributeCheck,
) -> Vec<PayloadError> {
    let mut errors = Vec::new();
    for (point, value) in values {
        let Some(feature) = model.attributes.get(point) else {
            errors.push(PayloadError::UnknownPoint {
                kind: PointKind::Attribute,
                point: point.clone(),
            });
            continue;
        };
        if check == AttributeCheck::Desired && !feature.definition.writable {
            errors.push(PayloadError::NotWritable {
                point: point.clone(),
            });
            continue;
        }
        if let Err(source) = value::validate((&feature.definition.data_type).into(), value) {
            errors.push(PayloadError::Invalid {
                kind: PointKind::Attribute,
                point: point.clone(),
                source,
            });
        }
    }
    if check == AttributeCheck::Configured {
        for (identifier, feature) in &model.attributes {
            let a = &feature.definition;
            if a.required && a.default.is_none() && !values.contains_key(identifier) {
                errors.push(PayloadError::MissingRequired {
                    kind: PointKind::Attribute,
                    point: identifier.clone(),
                });
            }
        }
    }
    errors
}

/// Validate named parameters against a parameter list: unknown names, bad values, missing
/// required parameters.
pub fn validate_parameters(
    params: &[Parameter],
    kind: PointKind,
    values: &BTreeMap<String, Value>,
) -> Vec<PayloadError> {
    let mut errors = Vec::new();
    for (name, value) in values {
        match params.iter().find(|p| &p.identifier == name) {
            None => errors.push(PayloadError::UnknownPoint {
                kind,
                point: name.clone(),
            }),
            Some(p) => {
                if let Err(source) = value::validate((&p.data_type).into(), value) {
                    errors.push(PayloadError::Invalid {
                        kind,
                        point: name.clone(),
                        source,
                    });
                }
            }
        }
    }
    for p in params
        .iter()
        .filter(|p| p.required && !values.contains_key(&p.identifier))
    {
        errors.push(PayloadError::MissingRequired {
            kind,
            point: p.identifier.clone(),
        });
    }
    errors
}

/// Why a service call is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The model has no such service.
    #[error("model {model} has no service {service:?}")]
    UnknownService {
        /// The model.
        model: String,
        /// The service asked for.
        service: String,
    },
    /// The parameters do not fit the service's inputs.
    #[error("service {service:?}: {}", join(.errors))]
    BadParameters {
        /// The service.
        service: String,
        /// Every problem.
        errors: Vec<PayloadError>,
    },
}

impl CallError {
    /// A stable CamelCase reason, for a DeviceCommand's status.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::UnknownService { .. } => "UnknownService",
            CallError::BadParameters { .. } => "InvalidParameters",
        }
    }
}

fn join(errors: &[PayloadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Check a service call (a DeviceCommand) against the model; returns the service on success.
pub fn validate_call<'m>(
    model: &'m ResolvedModel,
    service: &str,
    params: &BTreeMap<String, Value>,
) -> Result<&'m Service, CallError> {
    let feature = model
        .services
        .get(service)
        .ok_or_else(|| CallError::UnknownService {
            model: model.key.to_string(),
            service: service.to_string(),
        })?;
    let errors = validate_parameters(&feature.definition.inputs, PointKind::Input, params);
    if errors.is_empty() {
        Ok(&feature.definition)
    } else {
        Err(CallError::BadParameters {
            service: service.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests;
