//! Decoding and validating what devices send (pure): telemetry, events, reported attributes and
//! command responses, each checked against the device's resolved model with `devplane_core`.
//! A rejection names the reason, the field and what is wrong, for the device's errors topic and
//! the v5 PUBACK reason string.

use std::collections::BTreeMap;

use devplane_api::v1alpha1::Service;
use devplane_core::ResolvedModel;
use devplane_core::payload::{self, AttributeCheck, PayloadError, PointKind};
use serde::Serialize;
use serde_json::{Map, Value};

/// Why an uplink message is refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejection {
    /// CamelCase reason (`InvalidJson`, `InvalidShape`, `UnknownPoint`, `InvalidValue`, …).
    pub reason: &'static str,
    /// Path of the offending field in the payload (`points.activePower`), empty for the whole.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Rejection {
    fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The reason string of a v5 PUBACK: reason, field and message in one line.
    pub fn summary(&self) -> String {
        if self.field.is_empty() {
            format!("{}: {}", self.reason, self.message)
        } else {
            format!("{} at {}: {}", self.reason, self.field, self.message)
        }
    }

    /// Every rejection reason, for metrics.
    pub const REASONS: [&'static str; 10] = [
        "InvalidJson",
        "InvalidShape",
        "UnknownPoint",
        "InvalidValue",
        "MissingRequired",
        "NotWritable",
        "UnknownEvent",
        "UnknownCommand",
        "ModelUnavailable",
        "TooManySamples",
    ];
}

/// One telemetry sample: an optional device timestamp and the points.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Device time, epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Measure point values.
    pub points: Map<String, Value>,
}

/// An event the device raised.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Device time, epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// The event's output parameters.
    pub params: Map<String, Value>,
}

/// A device's answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandResponse {
    /// Whether the device carried the command out.
    pub succeeded: bool,
    /// Output parameters.
    pub output: BTreeMap<String, Value>,
    /// The device's message.
    pub message: Option<String>,
    /// The uid of the command answered, if the device echoed the one its downlink carried.
    pub uid: Option<String>,
}

/// Most samples one telemetry message may carry.
pub const MAX_SAMPLES: usize = 1000;

fn parse(bytes: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(bytes)
        .map_err(|e| Rejection::new("InvalidJson", "", format!("payload is not valid JSON: {e}")))
}

fn reason_of(error: &PayloadError) -> &'static str {
    match error {
        PayloadError::UnknownPoint { .. } => "UnknownPoint",
        PayloadError::Invalid { .. } | PayloadError::BadQuality { .. } => "InvalidValue",
        PayloadError::MissingRequired { .. } => "MissingRequired",
        PayloadError::NotWritable { .. } => "NotWritable",
    }
}

fn first_problem(errors: Vec<PayloadError>, prefix: &str) -> Result<(), Rejection> {
    let count = errors.len();
    let Some(first) = errors.into_iter().next() else {
        return Ok(());
    };
    let mut message = first.to_string();
    if count > 1 {
        message.push_str(&format!(" (and {} more problems)", count - 1));
    }
    Err(Rejection::new(
        reason_of(&first),
        format!("{prefix}{}", first.point()),
        message,
    ))
}

fn timestamp(object: &Map<String, Value>, prefix: &str) -> Result<Option<i64>, Rejection> {
    match object.get("ts") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|t| t >= 0) => Ok(n.as_i64()),
        Some(_) => Err(Rejection::new(
            "InvalidShape",
            format!("{prefix}ts"),
            "ts must be epoch milliseconds (a non-negative integer)",
        )),
    }
}

fn object_field<'v>(
    object: &'v Map<String, Value>,
    key: &str,
    prefix: &str,
    required: bool,
) -> Result<Option<&'v Map<String, Value>>, Rejection> {
    match object.get(key) {
        Some(Value::Object(map)) => Ok(Some(map)),
        None if !required => Ok(None),
        None => Err(Rejection::new(
            "InvalidShape",
            format!("{prefix}{key}"),
            format!("{key} is required and must be an object"),
        )),
        Some(_) => Err(Rejection::new(
            "InvalidShape",
            format!("{prefix}{key}"),
            format!("{key} must be an object"),
        )),
    }
}

fn no_other_keys(
    object: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), Rejection> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(Rejection::new(
            "InvalidShape",
            format!("{prefix}{k}"),
            format!("unknown field {k:?}; expected {}", allowed.join(", ")),
        )),
    }
}

/// `{"ts": …, "points": {…}}` or an array of them.
pub fn telemetry(model: &ResolvedModel, bytes: &[u8]) -> Result<Vec<Sample>, Rejection> {
    let value = parse(bytes)?;
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        single => (vec![single], false),
    };
    if items.is_empty() {
        return Err(Rejection::new("InvalidShape", "", "an empty batch"));
    }
    if items.len() > MAX_SAMPLES {
        return Err(Rejection::new(
            "TooManySamples",
            "",
            format!(
                "{} samples in one message; at most {MAX_SAMPLES}",
                items.len()
            ),
        ));
    }
    let mut samples = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = if batch {
            format!("[{i}].")
        } else {
            String::new()
        };
        let Value::Object(object) = item else {
            return Err(Rejection::new(
                "InvalidShape",
                prefix.trim_end_matches('.'),
                "a sample must be an object {\"ts\": …, \"points\": {…}}",
            ));
        };
        no_other_keys(&object, &["ts", "points"], &prefix)?;
        let ts = timestamp(&object, &prefix)?;
        let points = object_field(&object, "points", &prefix, true)?
            .cloned()
            .unwrap_or_default();
        first_problem(
            payload::validate_measurements(model, &points),
            &format!("{prefix}points."),
        )?;
        samples.push(Sample { ts, points });
    }
    Ok(samples)
}

/// `{"ts": …, "params": {…}}` for event `event_id` of the model.
pub fn event(
    model: &ResolvedModel,
    event_id: &str,
    bytes: &[u8],
) -> Result<EventRecord, Rejection> {
    let Some(feature) = model.events.get(event_id) else {
        return Err(Rejection::new(
            "UnknownEvent",
            "",
            format!("model {} has no event {event_id:?}", model.key),
        ));
    };
    let Value::Object(object) = parse(bytes)? else {
        return Err(Rejection::new(
            "InvalidShape",
            "",
            "an event must be an object {\"ts\": …, \"params\": {…}}",
        ));
    };
    no_other_keys(&object, &["ts", "params"], "")?;
    let ts = timestamp(&object, "")?;
    let params = object_field(&object, "params", "", false)?
        .cloned()
        .unwrap_or_default();
    let values: BTreeMap<String, Value> = params.clone().into_iter().collect();
    first_problem(
        payload::validate_parameters(&feature.definition.outputs, PointKind::Output, &values),
        "params.",
    )?;
    Ok(EventRecord { ts, params })
}

/// `{"<attribute>": value, …}`: any subset of the model's attributes.
pub fn reported(model: &ResolvedModel, bytes: &[u8]) -> Result<BTreeMap<String, Value>, Rejection> {
    let Value::Object(object) = parse(bytes)? else {
        return Err(Rejection::new(
            "InvalidShape",
            "",
            "reported attributes must be an object {\"<attribute>\": value, …}",
        ));
    };
    let values: BTreeMap<String, Value> = object.into_iter().collect();
    first_problem(
        payload::validate_attributes(model, &values, AttributeCheck::Reported),
        "",
    )?;
    Ok(values)
}

/// `{"status": "Succeeded"|"Failed", "output": {…}, "message": "…"}` for a call of `service`.
pub fn command_response(service: &Service, bytes: &[u8]) -> Result<CommandResponse, Rejection> {
    let Value::Object(object) = parse(bytes)? else {
        return Err(Rejection::new(
            "InvalidShape",
            "",
            "a command response must be an object {\"status\": …, \"output\": {…}}",
        ));
    };
    no_other_keys(&object, &["status", "output", "message", "uid"], "")?;
    let succeeded = match object.get("status").and_then(Value::as_str) {
        Some("Succeeded") => true,
        Some("Failed") => false,
        _ => {
            return Err(Rejection::new(
                "InvalidShape",
                "status",
                "status must be \"Succeeded\" or \"Failed\"",
            ));
        }
    };
    let output: BTreeMap<String, Value> = object_field(&object, "output", "", false)?
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if succeeded {
        first_problem(
            payload::validate_parameters(&service.outputs, PointKind::Output, &output),
            "output.",
        )?;
    }
    Ok(CommandResponse {
        succeeded,
        output,
        message: optional_string(&object, "message")?,
        uid: optional_string(&object, "uid")?,
    })
}

/// A member of `object` that may be left out (or null), else must be a string.
fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, Rejection> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::new(
            "InvalidShape",
            key,
            format!("{key} must be a string"),
        )),
    }
}

#[cfg(test)]
mod tests;
