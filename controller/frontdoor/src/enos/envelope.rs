//! EnOS message envelopes (pure): requests `{id, version, method, params}`, replies
//! `{id, code, data, message}`, and their translation to and from the payloads the native
//! protocol's validation and downlink use — so EnOS data is judged by the same code.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::uplink::Rejection;

/// EnOS reply codes the front door uses.
pub mod code {
    /// Success.
    pub const OK: i64 = 200;
    /// The request cannot be served (an unsupported method, a malformed envelope).
    pub const BAD_REQUEST: i64 = 400;
    /// Not allowed: a foreign topic, a bad sub-device signature, a device the gateway may not
    /// act for.
    pub const UNAUTHORIZED: i64 = 401;
    /// No such device.
    pub const DEVICE_NOT_FOUND: i64 = 402;
    /// A limit is reached (a gateway's `maxActive`).
    pub const TOO_MANY: i64 = 429;
    /// A parameter is wrong: the value of a point, an unknown point or event.
    pub const PARAMETER: i64 = 460;
    /// The server could not handle it (the model does not resolve).
    pub const HANDLER_FAILURE: i64 = 500;
    /// The payload is not JSON.
    pub const NOT_JSON: i64 = 6207;
}

/// A request a device sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Its id, as sent (echoed in the reply).
    pub id: Value,
    /// Its `params` (Null when absent).
    pub params: Value,
}

/// A reply a device sent to a request of the front door.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The id of the request it answers, as text.
    pub id: String,
    /// Its code (200: success).
    pub code: i64,
    /// Its data.
    pub data: Value,
    /// Its message.
    pub message: Option<String>,
}

/// Why an envelope cannot be read: the id (if it could be read), a code and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The request's id, Null when unknown.
    pub id: Value,
    /// The reply code.
    pub code: i64,
    /// What is wrong.
    pub message: String,
}

impl Failure {
    /// The reply payload of this failure.
    pub fn reply(&self) -> Bytes {
        reply(&self.id, self.code, Value::Null, &self.message)
    }
}

fn object(payload: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure {
            id: Value::Null,
            code: code::BAD_REQUEST,
            message: "the payload must be a JSON object {id, version, method, params}".into(),
        }),
        Err(e) => Err(Failure {
            id: Value::Null,
            code: code::NOT_JSON,
            message: format!("the payload is not JSON: {e}"),
        }),
    }
}

/// Read a request envelope.
pub fn parse_request(payload: &[u8]) -> Result<Request, Failure> {
    let mut map = object(payload)?;
    let id = map.remove("id").unwrap_or(Value::Null);
    let params = map.remove("params").unwrap_or(Value::Null);
    Ok(Request { id, params })
}

/// The text of an id (a string as it is, a number as written).
pub fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Read a reply envelope.
pub fn parse_reply(payload: &[u8]) -> Result<Reply, Failure> {
    let map = object(payload)?;
    let id = id_text(map.get("id").unwrap_or(&Value::Null));
    let code = match map.get("code") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| Failure {
        id: Value::String(id.clone()),
        code: code::BAD_REQUEST,
        message: "a reply needs an integer code".into(),
    })?;
    Ok(Reply {
        id,
        code,
        data: map.get("data").cloned().unwrap_or(Value::Null),
        message: map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// A reply: the request's id as it was sent, an integer code, data and a message.
pub fn reply(id: &Value, code: i64, data: Value, message: &str) -> Bytes {
    let body = json!({"id": id, "code": code, "data": data, "message": message});
    Bytes::from(body.to_string())
}

/// A success reply.
pub fn ok(id: &Value, data: Value) -> Bytes {
    reply(id, code::OK, data, "success")
}

/// A request the front door sends a device.
pub fn request(id: &str, method: &str, params: Value) -> Bytes {
    let body = json!({"id": id, "version": "1.0", "method": method, "params": params});
    Bytes::from(body.to_string())
}

/// The reply code for a validation failure.
pub fn code_of(rejection: &Rejection) -> i64 {
    match rejection.reason {
        "InvalidJson" => code::NOT_JSON,
        "ModelUnavailable" => code::HANDLER_FAILURE,
        _ => code::PARAMETER,
    }
}

/// A validation failure as an EnOS device reads it: the reason, the field in EnOS terms
/// (`measurepoints.temperature`) and what is wrong.
pub fn message_of(rejection: &Rejection) -> String {
    let field = enos_field(&rejection.field);
    if field.is_empty() {
        format!("{}: {}", rejection.reason, rejection.message)
    } else {
        format!("{} at {field}: {}", rejection.reason, rejection.message)
    }
}

fn enos_field(native: &str) -> String {
    let (index, rest) = match native.strip_prefix('[') {
        Some(tail) => match tail.split_once("].") {
            Some((i, rest)) => (format!("[{i}]."), rest),
            None => (String::new(), native),
        },
        None => (String::new(), native),
    };
    let renamed = [
        ("points.", "measurepoints."),
        ("params.", "events."),
        ("output.", "data."),
    ]
    .iter()
    .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
    .unwrap_or_else(|| match rest {
        "ts" => "time".to_string(),
        other => other.to_string(),
    });
    format!("{index}{renamed}")
}

fn shape(field: &str, message: impl Into<String>) -> Rejection {
    Rejection {
        reason: "InvalidShape",
        field: field.to_string(),
        message: message.into(),
    }
}

/// The device time of `params.time`: epoch milliseconds (a number, possibly fractional, or a
/// string of digits).
fn time(params: &Map<String, Value>) -> Result<Option<i64>, Rejection> {
    let invalid = || shape("time", "time must be epoch milliseconds");
    match params.get("time") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if t >= 0 => Ok(Some(t)),
            Some(_) => Err(invalid()),
            None => n
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(|t| Some(t as i64))
                .ok_or_else(invalid),
        },
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

fn params_object<'p>(params: &'p Value, what: &str) -> Result<&'p Map<String, Value>, Rejection> {
    params
        .as_object()
        .ok_or_else(|| shape("", format!("params of {what} must be an object")))
}

/// One sample `{"ts": …, "points": {…}}` from `{measurepoints: {…}, time}`.
fn sample(params: &Map<String, Value>, prefix: &str) -> Result<Value, Rejection> {
    let points = match params.get("measurepoints") {
        Some(Value::Object(points)) => points.clone(),
        _ => {
            return Err(shape(
                &format!("{prefix}points"),
                "measurepoints is required and must be an object",
            ));
        }
    };
    let ts = time(params).map_err(|mut r| {
        r.field = format!("{prefix}ts");
        r
    })?;
    let mut sample = json!({"points": points});
    if let Some(ts) = ts {
        sample["ts"] = json!(ts);
    }
    Ok(sample)
}

/// The native telemetry payload of a measure-point post's params.
pub fn telemetry(params: &Value) -> Result<Vec<u8>, Rejection> {
    let params = params_object(params, "a measure-point post")?;
    Ok(sample(params, "")?.to_string().into_bytes())
}

/// One device's part of a batch post: the keys it names (None: the topic's device) and its
/// samples.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPart {
    /// Product and device key, when the item names them.
    pub keys: Option<(String, String)>,
    /// The native telemetry payload (an array of samples).
    pub payload: Vec<u8>,
}

/// The parts of a batch post (`params`: a list of `{productKey?, deviceKey?, measurepoints,
/// time}`), one per device in order of first appearance.
pub fn telemetry_batch(params: &Value) -> Result<Vec<BatchPart>, Rejection> {
    let items = params
        .as_array()
        .ok_or_else(|| shape("", "params of a batch post must be a list"))?;
    if items.is_empty() {
        return Err(shape("", "an empty batch"));
    }
    type Keys = Option<(String, String)>;
    let mut parts: Vec<(Keys, Vec<Value>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = item
            .as_object()
            .ok_or_else(|| shape(&format!("[{i}]"), "a batch item must be an object"))?;
        let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
        let keys = match (text("productKey"), text("deviceKey")) {
            (Some(pk), Some(dk)) => Some((pk, dk)),
            (None, None) => None,
            _ => {
                return Err(shape(
                    &format!("[{i}]"),
                    "a batch item names both productKey and deviceKey, or neither",
                ));
            }
        };
        let sample = sample(item, &format!("[{i}]."))?;
        match parts.iter_mut().find(|(k, _)| *k == keys) {
            Some((_, samples)) => samples.push(sample),
            None => parts.push((keys, vec![sample])),
        }
    }
    Ok(parts
        .into_iter()
        .map(|(keys, samples)| BatchPart {
            keys,
            payload: Value::Array(samples).to_string().into_bytes(),
        })
        .collect())
}

/// The native event payload of an event post's params: `{events: {…}, time}` (or the output
/// parameters themselves, beside `time`).
pub fn event(params: &Value) -> Result<Vec<u8>, Rejection> {
    let params = params_object(params, "an event post")?;
    let outputs = match params.get("events") {
        Some(Value::Object(events)) => events.clone(),
        _ => params
            .iter()
            .filter(|(k, _)| k.as_str() != "time")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut event = json!({"params": outputs});
    if let Some(ts) = time(params)? {
        event["ts"] = json!(ts);
    }
    Ok(event.to_string().into_bytes())
}

/// The native reported-attributes payload of an attribute update's params
/// (`{attributes: {…}}`).
pub fn attributes(params: &Value) -> Result<Vec<u8>, Rejection> {
    let params = params_object(params, "an attribute update")?;
    match params.get("attributes") {
        Some(Value::Object(values)) => Ok(Value::Object(values.clone()).to_string().into_bytes()),
        _ => Err(shape(
            "",
            "params.attributes is required and must be an object",
        )),
    }
}

/// The native command response of a service invocation's reply: code 200 succeeded with
/// `data` as the output; anything else failed.
/// The id of a service invocation: the DeviceCommand's name and, when known, its uid
/// (`name:uid`; a name never holds a colon). The device's reply echoes it, so the reply
/// answers exactly that command, not one created again under its name since.
pub fn invocation_id(command: &str, uid: Option<&str>) -> String {
    match uid {
        Some(uid) => format!("{command}:{uid}"),
        None => command.to_string(),
    }
}

/// The command a reply's id names, and its uid if the id carries one ([`invocation_id`]).
pub fn invoked(id: &str) -> (&str, Option<&str>) {
    match id.split_once(':') {
        Some((command, uid)) => (command, Some(uid)),
        None => (id, None),
    }
}

/// A service reply as the native protocol's command response, naming the command it answers
/// by `uid` when the reply's id carried it.
pub fn command_response(reply: &Reply, uid: Option<&str>) -> Vec<u8> {
    let succeeded = reply.code == code::OK;
    let output = match (&reply.data, succeeded) {
        (Value::Object(data), true) => Value::Object(data.clone()),
        _ => json!({}),
    };
    let message = match (&reply.message, succeeded) {
        (Some(m), _) if !m.is_empty() => Some(m.clone()),
        (_, false) => Some(format!("the device answered code {}", reply.code)),
        _ => None,
    };
    let mut body = json!({
        "status": if succeeded { "Succeeded" } else { "Failed" },
        "output": output,
    });
    if let Some(message) = message {
        body["message"] = json!(message);
    }
    if let Some(uid) = uid {
        body["uid"] = json!(uid);
    }
    body.to_string().into_bytes()
}

/// Downlink for a device, read from the native protocol's downlink.
#[derive(Clone, Debug, PartialEq)]
pub enum Downlink {
    /// A DeviceCommand: invoke `service` with `params`; the request's id names the command
    /// ([`invocation_id`]).
    Service {
        /// The DeviceCommand's name.
        command: String,
        /// The service.
        service: String,
        /// Its input.
        params: Value,
    },
    /// Desired attribute values: a measure-point set.
    Set {
        /// The values.
        values: Map<String, Value>,
    },
}

/// What a native downlink message (`rest` of its topic after `d/{ns}/{name}/`) is for an EnOS
/// device; None for what has no EnOS counterpart (the errors topic: EnOS errors go in
/// replies).
pub fn from_native(rest: &str, payload: &[u8]) -> Option<Downlink> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    if rest == "attributes/desired" {
        let values = body.get("values")?.as_object()?.clone();
        return (!values.is_empty()).then_some(Downlink::Set { values });
    }
    let command = rest.strip_prefix("commands/")?;
    if command.is_empty() || command.contains('/') {
        return None;
    }
    Some(Downlink::Service {
        command: command.to_string(),
        service: body.get("service")?.as_str()?.to_string(),
        params: body.get("params").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn a_reply_echoes_the_id_as_it_was_sent_with_an_integer_code() {
        let request = parse_request(br#"{"id":"7","version":"1.0","method":"x","params":{}}"#)
            .expect("a request");
        let reply = json_of(&ok(&request.id, json!({})));
        assert_eq!(reply["id"], json!("7"), "the same JSON string");
        assert_eq!(reply["code"], json!(200));
        let numeric = parse_request(br#"{"id":7,"params":{}}"#).expect("a request");
        assert_eq!(json_of(&ok(&numeric.id, Value::Null))["id"], json!(7));
    }

    #[test]
    fn an_envelope_that_is_no_json_object_gets_its_code() {
        assert_eq!(
            parse_request(b"not json").map_err(|f| f.code),
            Err(code::NOT_JSON)
        );
        assert_eq!(
            parse_request(b"[1]").map_err(|f| f.code),
            Err(code::BAD_REQUEST)
        );
    }

    #[test]
    fn a_measure_point_post_becomes_a_native_sample_with_its_quality_kept() {
        let params = json!({
            "measurepoints": {"temperature": 21.5, "humidity": {"value": 40, "quality": 9}},
            "time": 1700000000000i64
        });
        let native = json_of(&telemetry(&params).expect("a sample"));
        assert_eq!(native["ts"], json!(1700000000000i64));
        assert_eq!(native["points"]["humidity"]["quality"], json!(9));
        let fractional =
            json_of(&telemetry(&json!({"measurepoints": {}, "time": 12.7})).expect("ok"));
        assert_eq!(fractional["ts"], json!(12));
        let missing = telemetry(&json!({"time": 1})).expect_err("no points");
        assert_eq!(missing.field, "points");
    }

    #[test]
    fn a_batch_post_is_split_by_device_in_order() {
        let params = json!([
            {"measurepoints": {"a": 1}, "time": 1},
            {"productKey": "p", "deviceKey": "m1", "measurepoints": {"a": 2}},
            {"measurepoints": {"a": 3}, "time": 3},
        ]);
        let parts = telemetry_batch(&params).expect("parts");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].keys, None);
        assert_eq!(json_of(&parts[0].payload).as_array().map(Vec::len), Some(2));
        assert_eq!(parts[1].keys, Some(("p".into(), "m1".into())));
        let half = telemetry_batch(&json!([{"productKey": "p", "measurepoints": {}}]));
        assert!(half.is_err(), "a product key without a device key");
    }

    #[test]
    fn events_and_attributes_become_native_payloads() {
        let event = json_of(
            &event(&json!({"events": {"hoursAboveThreshold": 30}, "time": 5})).expect("event"),
        );
        assert_eq!(
            event,
            json!({"params": {"hoursAboveThreshold": 30}, "ts": 5})
        );
        let bare = json_of(&super::event(&json!({"peak": 90.5})).expect("event"));
        assert_eq!(bare, json!({"params": {"peak": 90.5}}));
        let attributes =
            json_of(&attributes(&json!({"attributes": {"room": "hall"}})).expect("attributes"));
        assert_eq!(attributes, json!({"room": "hall"}));
    }

    #[test]
    fn a_service_reply_becomes_a_command_response() {
        let reply =
            parse_reply(br#"{"id":"reboot-1","code":200,"data":{"uptime":5}}"#).expect("a reply");
        assert_eq!(reply.id, "reboot-1");
        let native = json_of(&command_response(&reply, None));
        assert_eq!(
            native,
            json!({"status": "Succeeded", "output": {"uptime": 5}})
        );
        let named = json_of(&command_response(&reply, Some("u-1")));
        assert_eq!(named["uid"], json!("u-1"));
        // The invocation's id names the command and its uid; a reply's id is read back so.
        let id = invocation_id("reboot-1", Some("0b9c-77"));
        assert_eq!(id, "reboot-1:0b9c-77");
        assert_eq!(invoked(&id), ("reboot-1", Some("0b9c-77")));
        assert_eq!(invoked("reboot-1"), ("reboot-1", None));
        let failed = parse_reply(br#"{"id":"x","code":2001,"data":"busy","message":"busy"}"#)
            .expect("a reply");
        let native = json_of(&command_response(&failed, None));
        assert_eq!(native["status"], json!("Failed"));
        assert_eq!(native["output"], json!({}));
        assert_eq!(native["message"], json!("busy"));
    }

    #[test]
    fn rejections_name_the_point_in_enos_terms() {
        let rejection = Rejection {
            reason: "InvalidValue",
            field: "points.temperature".into(),
            message: "1500 is above the maximum 1000".into(),
        };
        assert_eq!(code_of(&rejection), code::PARAMETER);
        assert_eq!(
            message_of(&rejection),
            "InvalidValue at measurepoints.temperature: 1500 is above the maximum 1000"
        );
        assert_eq!(enos_field("[2].points.a"), "[2].measurepoints.a");
        assert_eq!(enos_field("params.peak"), "events.peak");
        assert_eq!(enos_field("ts"), "time");
    }

    #[test]
    fn native_downlink_becomes_a_service_invocation_or_a_measure_point_set() {
        let command = from_native(
            "commands/reboot-1",
            br#"{"service":"reboot","params":{"delay":0},"timeoutSeconds":30}"#,
        );
        assert_eq!(
            command,
            Some(Downlink::Service {
                command: "reboot-1".into(),
                service: "reboot".into(),
                params: json!({"delay": 0}),
            })
        );
        let set = from_native(
            "attributes/desired",
            br#"{"generation":2,"values":{"interval":60}}"#,
        );
        let Some(Downlink::Set { values }) = set else {
            panic!("a set: {set:?}");
        };
        assert_eq!(values.get("interval"), Some(&json!(60)));
        assert_eq!(from_native("attributes/desired", br#"{"values":{}}"#), None);
        assert_eq!(from_native("errors", br#"{"reason":"x"}"#), None);
    }
}
