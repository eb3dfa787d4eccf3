//! One validation path whatever carries the message: the same invalid payloads get the same
//! reason and field over MQTT 5 (PUBACK reason string and the errors topic), HTTP (400 body)
//! and CoAP over DTLS (4.00 with the problem as payload).

use std::time::Duration;

use serde_json::Value;

use super::*;

/// (where under the device's tree, payload, reason, field)
const CASES: [(&str, &str, &str, &str); 7] = [
    (
        "telemetry",
        r#"{"points":{"temperature":5000}}"#,
        "InvalidValue",
        "points.temperature",
    ),
    (
        "telemetry",
        r#"{"points":{"pressure":1}}"#,
        "UnknownPoint",
        "points.pressure",
    ),
    (
        "telemetry",
        r#"{"points":{"mode":"turbo"}}"#,
        "InvalidValue",
        "points.mode",
    ),
    (
        "telemetry",
        r#"{"ts":"yesterday","points":{}}"#,
        "InvalidShape",
        "ts",
    ),
    ("telemetry", "{not json", "InvalidJson", ""),
    (
        "events/overheat",
        r#"{"params":{}}"#,
        "MissingRequired",
        "params.peak",
    ),
    (
        "attributes/reported",
        r#"{"interval":5}"#,
        "InvalidValue",
        "interval",
    ),
];

fn reason_and_field(problem: &Value) -> (String, String) {
    (
        problem["reason"].as_str().unwrap_or_default().to_string(),
        problem["field"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn the_same_invalid_payload_gets_the_same_reason_over_every_protocol() {
    let plant = Plant::start();
    let password = plant.password("plant", "sensor-a");
    let expected: Vec<(String, String)> = CASES
        .iter()
        .map(|(_, _, reason, field)| (reason.to_string(), field.to_string()))
        .collect();

    // MQTT 5: every message on the errors topic, in order, and the PUBACK reason strings.
    let mut args = Vec::new();
    for (path, payload, _, _) in CASES {
        args.push(format!("d/plant/sensor-a/{path}"));
        args.push(payload.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut publish = vec!["publish"];
    publish.extend(args);
    let output = run_with_timeout(
        plant.paho("plant/sensor-a", &password, "5", &publish),
        Duration::from_secs(40),
    );
    let lines = output_lines(&output);
    let errors: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("message d/plant/sensor-a/errors "))
        .map(|json| reason_and_field(&serde_json::from_str(json).expect("error JSON")))
        .collect();
    assert_eq!(errors, expected, "MQTT errors topic: {lines:?}");
    for (i, (_, _, reason, _)) in CASES.iter().enumerate() {
        let ack = lines
            .iter()
            .find(|l| l.starts_with(&format!("puback {i} ")))
            .unwrap_or_else(|| panic!("PUBACK {i}: {lines:?}"));
        assert!(
            ack.starts_with(&format!("puback {i} 153 {reason}")),
            "MQTT PUBACK {i}: {ack}"
        );
    }

    // HTTP: 400 with the same problem.
    let login = Some(("plant/sensor-a", password.as_str()));
    let over_http: Vec<(String, String)> = CASES
        .iter()
        .map(|(path, payload, _, _)| {
            let (code, body) = plant.http(
                "POST",
                &format!("/v1/devices/plant/sensor-a/{path}"),
                login,
                Some(payload.as_bytes()),
            );
            assert_eq!(code, 400, "HTTP {path} {payload}: {body}");
            reason_and_field(&serde_json::from_str(&body).expect("problem JSON"))
        })
        .collect();
    assert_eq!(over_http, expected, "HTTP");

    // CoAP over DTLS (libcoap's coap-client): 4.00 with the same problem as its payload.
    let over_coap: Vec<(String, String)> = CASES
        .iter()
        .map(|(path, payload, _, _)| {
            let out = plant.coap_client(
                super::coap::OPENSSL,
                ("plant/sensor-a", password.as_str()),
                "post",
                &format!("d/plant/sensor-a/{path}"),
                Some(payload),
            );
            assert!(out.contains("c:4.00"), "CoAP {path} {payload}: {out}");
            reason_and_field(&problem_in(&out))
        })
        .collect();
    assert_eq!(over_coap, expected, "CoAP");
}

/// The JSON problem a client printed among its other output.
fn problem_in(out: &str) -> Value {
    let at = out
        .find(r#""reason""#)
        .and_then(|reason| out[..reason].rfind('{'))
        .unwrap_or_else(|| panic!("no problem in: {out}"));
    serde_json::Deserializer::from_str(&out[at..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON problem in: {out}"))
}
