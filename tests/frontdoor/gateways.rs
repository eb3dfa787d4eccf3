//! Gateways over MQTT with a Python paho-mqtt gateway (`tests/python/mqtt_gateway.py`): the
//! example's data logger logs its meters in, publishes and answers commands for them, and
//! registers new ones; everything it may not do is refused and counted.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::support::{DATALOGGER_GATEWAY, Devplane, repo, wait_until};

/// Beside the example (`examples/datalogger-gateway.yaml`): a meter model with a command, a
/// meter of another site, a retired meter, a second gateway with tight limits, and an
/// application reading the namespace northbound.
const EXTRA: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: relay-meter, namespace: metering}
spec:
  version: 1.0.0
  extends:
    - {name: energy-meter}
  services:
    - identifier: trip
      outputs:
        - identifier: openedAt
          dataType: {type: int, min: 0}
          required: true
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: feeder-3-meter, namespace: metering}
spec:
  modelRef: {name: relay-meter}
  connection: {gatewayRef: {name: substation-logger}}
  attributes: {modbusAddress: 4}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata:
  name: other-site-meter
  namespace: metering
  labels: {iot.devplane.io/site: substation-9}
spec:
  modelRef: {name: energy-meter}
  attributes: {modbusAddress: 5}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: retired-meter, namespace: metering}
spec:
  modelRef: {name: energy-meter}
  connection: {gatewayRef: {name: substation-logger}}
  attributes: {modbusAddress: 6}
  lifecycle: Decommissioned
---
apiVersion: iot.devplane.io/v1alpha1
kind: Gateway
metadata: {name: tiny-logger, namespace: metering}
spec:
  modelRef: {name: modbus-datalogger}
  subDevices:
    selector: {matchLabels: {iot.devplane.io/site: substation-7}}
    maxActive: 1
  dynamicRegistration:
    enabled: true
    allowedModels: [{name: energy-meter}]
    maxDevices: 1
---
apiVersion: iot.devplane.io/v1alpha1
kind: Gateway
metadata: {name: remote-logger, namespace: metering}
spec:
  modelRef: {name: modbus-datalogger}
  dynamicRegistration:
    enabled: true
    allowedModels: [{name: energy-meter}]
    targetNamespace: metering-annex
---
apiVersion: v1
kind: Namespace
metadata: {name: metering-annex}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Application
metadata: {name: ops, namespace: metering}
spec: {}
"#;

const LOGGER: &str = "metering/substation-logger";
const TINY: &str = "metering/tiny-logger";

/// `devplane up` with the example and the extras, every gateway, device and application Ready
/// (but the retired meter).
fn substation() -> Devplane {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(DATALOGGER_GATEWAY);
    devplane.apply_yaml(EXTRA);
    devplane.wait_ready(
        "metering",
        &[
            "gateway/substation-logger",
            "gateway/tiny-logger",
            "device/feeder-1-meter",
            "device/feeder-2-meter",
            "device/auxiliary-meter",
            "device/feeder-3-meter",
            "device/other-site-meter",
            "application/ops",
        ],
    );
    devplane
}

fn gateway_password(devplane: &Devplane, gateway: &str) -> String {
    devplane.secret_value("metering", &format!("{gateway}-credentials"), "password")
}

/// The gateway helper running `script` as `user`.
fn gateway(devplane: &Devplane, user: &str, script: Value) -> Background {
    let name = user.split('/').nth(1).expect("ns/name");
    let password = gateway_password(devplane, name);
    let (host, port) = Plant::host_port(&devplane.mqtt_addr());
    let mut command = Command::new("python3");
    command
        .arg(repo().join("tests/python/mqtt_gateway.py"))
        .args([&host, &port, user, &password, &script.to_string()]);
    Background::spawn(command)
}

/// The JSON answer of the `kind` request, once it arrived.
fn response(gw: &Background, kind: &str) -> Value {
    let prefix = format!("response {kind} ");
    let line = gw.wait_for_line(
        &format!("the answer to {kind}"),
        Duration::from_secs(30),
        |l| l.starts_with(&prefix),
    );
    serde_json::from_str(&line[prefix.len()..]).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The result per device of an answer, as (name, result).
fn results(answer: &Value) -> Vec<(String, String)> {
    answer["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("a result per device: {answer}"))
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_string(),
                d["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(name: &str, result: &str) -> (String, String) {
    (name.to_string(), result.to_string())
}

fn connection_state(devplane: &Devplane, device: &str) -> String {
    devplane.kubectl_ok(&[
        "get",
        "device",
        device,
        "-n",
        "metering",
        "-o",
        "jsonpath={.status.connection.state}",
    ])
}

fn active_sub_devices(devplane: &Devplane) -> String {
    devplane.kubectl_ok(&[
        "get",
        "gateway",
        "substation-logger",
        "-n",
        "metering",
        "-o",
        "jsonpath={.status.activeSubDevices}",
    ])
}

const METERS: [&str; 3] = ["feeder-1-meter", "feeder-2-meter", "auxiliary-meter"];

#[test]
fn a_gateway_logs_in_the_example_meters_publishes_for_them_and_they_go_offline_with_it() {
    let devplane = substation();
    let ops = devplane.secret_value("metering", "ops-app-credentials", "password");
    let (host, port) = Plant::host_port(&devplane.app_addr());
    let reader = Background::spawn({
        let mut command = Command::new("python3");
        command
            .arg(repo().join("tests/python/mqtt_device.py"))
            .args([&host, &port, "metering/ops", &ops, "5"])
            .args([
                "read",
                "60",
                "north/metering/+/telemetry",
                "north/metering/+/presence",
            ]);
        command
    });
    reader.wait_for_line("the application's SUBACK", Duration::from_secs(20), |l| {
        l == "suback 1 1"
    });
    let gw = gateway(
        &devplane,
        LOGGER,
        json!([
            {"op": "subscribe", "filters": ["d/metering/substation-logger/#", "d/metering/+/commands/+"]},
            {"op": "request", "kind": "login", "body": {"id": "1", "devices": METERS}},
            {"op": "publish", "topic": "d/metering/feeder-1-meter/telemetry",
             "payload": {"points": {"totW": 1234.5, "hz": 50.0}}},
            {"op": "publish", "topic": "d/metering/feeder-2-meter/telemetry",
             "payload": {"points": {"hz": -3}}},
            {"op": "publish", "topic": "d/metering/substation-logger/telemetry",
             "payload": {"points": {"connectedFieldDevices": 3}}},
            {"op": "request", "kind": "get", "body": {}},
            {"op": "serve", "seconds": 6},
        ]),
    );
    let login = response(&gw, "login");
    assert_eq!(login["id"], "1", "the request id comes back: {login}");
    assert_eq!(
        results(&login),
        METERS.iter().map(|m| pair(m, "ok")).collect::<Vec<_>>()
    );
    let pubacks: Vec<String> = {
        gw.wait_for_line("three PUBACKs", Duration::from_secs(20), |_| {
            gw.lines()
                .iter()
                .filter(|l| l.starts_with("puback"))
                .count()
                >= 3
        });
        gw.lines()
            .into_iter()
            .filter(|l| l.starts_with("puback"))
            .collect()
    };
    assert_eq!(pubacks[0], "puback 0 ", "{pubacks:?}");
    assert!(
        pubacks[1].starts_with("puback 153 ") && pubacks[1].contains("hz"),
        "the sub-device's model judges its data: {pubacks:?}"
    );
    assert_eq!(
        pubacks[2], "puback 0 ",
        "the gateway's own data: {pubacks:?}"
    );
    reader.wait_for_line(
        "feeder-1-meter's telemetry northbound",
        Duration::from_secs(20),
        |l| l.contains("north/metering/feeder-1-meter/telemetry") && l.contains("1234.5"),
    );
    reader.wait_for_line(
        "feeder-1-meter Online northbound",
        Duration::from_secs(20),
        |l| l.contains("north/metering/feeder-1-meter/presence") && l.contains("Online"),
    );
    let topology = response(&gw, "get");
    let listed: Vec<(String, bool)> = topology["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_string(),
                d["loggedIn"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    for meter in METERS {
        assert!(
            listed.contains(&(meter.to_string(), true)),
            "{meter} logged in: {topology}"
        );
    }
    assert!(
        listed.contains(&("feeder-3-meter".to_string(), false)),
        "a sub-device not logged in is listed too: {topology}"
    );
    assert!(
        !listed.iter().any(|(n, _)| n == "other-site-meter"),
        "{topology}"
    );
    assert_eq!(topology["maxActive"], 32, "{topology}");

    wait_until(
        "kubectl to show the meters Online",
        Duration::from_secs(20),
        || {
            let table = devplane.kubectl_ok(&["get", "devices", "-n", "metering"]);
            METERS.iter().all(|m| {
                table
                    .lines()
                    .any(|l| l.starts_with(m) && l.contains("Online"))
            })
        },
    );
    assert_eq!(active_sub_devices(&devplane), "3");
    let via = devplane.kubectl_ok(&[
        "get",
        "device",
        "feeder-1-meter",
        "-n",
        "metering",
        "-o",
        "jsonpath={.status.connection.gateway}",
    ]);
    assert_eq!(via, LOGGER);

    // The script ends and the gateway disconnects: its meters go Offline with it.
    gw.wait_for_line("the gateway to finish", Duration::from_secs(30), |l| {
        l == "done"
    });
    wait_until("the meters to go Offline", Duration::from_secs(15), || {
        METERS
            .iter()
            .all(|m| connection_state(&devplane, m) == "Offline")
    });
    wait_until(
        "activeSubDevices to drop to 0",
        Duration::from_secs(10),
        || active_sub_devices(&devplane) == "0",
    );
}

#[test]
fn a_command_to_a_sub_device_reaches_it_through_its_gateway() {
    let devplane = substation();
    let gw = gateway(
        &devplane,
        LOGGER,
        json!([
            {"op": "subscribe", "filters": ["d/metering/substation-logger/#", "d/metering/+/commands/+"]},
            {"op": "request", "kind": "login", "body": {"devices": ["feeder-3-meter"]}},
            {"op": "serve", "seconds": 40, "output": {"openedAt": 1700000000}},
        ]),
    );
    assert_eq!(
        results(&response(&gw, "login")),
        vec![pair("feeder-3-meter", "ok")]
    );
    devplane.apply_yaml(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {name: trip-1, namespace: metering}
spec:
  device: feeder-3-meter
  service: trip
  timeoutSeconds: 60
"#,
    );
    gw.wait_for_line("the command at the gateway", Duration::from_secs(20), |l| {
        l.starts_with("message d/metering/feeder-3-meter/commands/trip-1 ")
    });
    devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "devicecommand/trip-1",
        "-n",
        "metering",
        "--timeout=30s",
    ]);
    let output = devplane.kubectl_ok(&[
        "get",
        "devicecommand",
        "trip-1",
        "-n",
        "metering",
        "-o",
        "jsonpath={.status.output.openedAt}",
    ]);
    assert_eq!(output, "1700000000");
}

#[test]
fn a_gateway_registers_sub_devices_within_its_policy_and_idempotently() {
    let devplane = substation();
    let gw = gateway(
        &devplane,
        LOGGER,
        json!([
            {"op": "subscribe", "filters": ["d/metering/substation-logger/#"]},
            {"op": "request", "kind": "register", "body": {"devices": [
                {"name": "feeder-9-meter", "model": "energy-meter", "attributes": {"modbusAddress": 9}},
                {"name": "logger-2", "model": "modbus-datalogger"},
                {"name": "feeder-10-meter", "model": "energy-meter", "attributes": {"modbusAddress": 900}},
                {"name": "Bad_Name", "model": "energy-meter"},
            ]}},
            {"op": "request", "kind": "register", "body": {"devices": [
                {"name": "feeder-9-meter", "model": "energy-meter", "attributes": {"modbusAddress": 9}},
                {"name": "other-site-meter", "model": "energy-meter", "attributes": {"modbusAddress": 5}},
            ]}},
            {"op": "request", "kind": "login", "body": {"devices": ["feeder-9-meter"]}},
            {"op": "publish", "topic": "d/metering/feeder-9-meter/telemetry", "payload": {"points": {"hz": 50}}},
        ]),
    );
    assert_eq!(
        results(&response(&gw, "register")),
        vec![
            pair("feeder-9-meter", "created"),
            pair("logger-2", "ModelNotAllowed"),
            pair("feeder-10-meter", "InvalidAttributes"),
            pair("Bad_Name", "Invalid"),
        ]
    );
    gw.wait_for_line("the retry's answer", Duration::from_secs(20), |l| {
        l.starts_with("response register ") && l.contains("exists")
    });
    let retry: Vec<Value> = gw
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("response register "))
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        results(&retry[1]),
        vec![
            pair("feeder-9-meter", "exists"),
            pair("other-site-meter", "NotAllowed"),
        ],
        "a retry is answered `exists`; a device the gateway did not register is not its own"
    );
    assert_eq!(
        results(&response(&gw, "login")),
        vec![pair("feeder-9-meter", "ok")]
    );
    gw.wait_for_line("the PUBACK", Duration::from_secs(20), |l| l == "puback 0 ");

    let device: Value = serde_json::from_str(&devplane.kubectl_ok(&[
        "get",
        "device",
        "feeder-9-meter",
        "-n",
        "metering",
        "-o",
        "json",
    ]))
    .expect("device json");
    assert_eq!(
        device["spec"]["connection"]["gatewayRef"]["name"],
        "substation-logger"
    );
    assert!(
        device["metadata"]["ownerReferences"].is_null(),
        "owned by nothing: {device}"
    );
    assert_eq!(
        device["metadata"]["labels"]["iot.devplane.io/gateway"],
        "substation-logger"
    );
    assert!(device["metadata"]["labels"]["iot.devplane.io/batch"].is_null());
    devplane.wait_condition(
        "Ready",
        Some("metering"),
        &["device/feeder-9-meter"],
        Duration::from_secs(30),
    );
    assert!(
        devplane
            .metrics()
            .contains("devplane_frontdoor_subdevice_registrations_total{result=\"created\"} 1"),
        "registrations are counted"
    );
}

#[test]
fn a_gateway_cannot_act_for_devices_that_are_not_its_own_nor_exceed_its_limits() {
    let devplane = substation();
    let before = devplane.metrics();
    let gw = gateway(
        &devplane,
        TINY,
        json!([
            {"op": "subscribe", "filters": [
                "d/metering/tiny-logger/#",
                "d/metering/other-site-meter/commands/+",
                "d/metering/feeder-1-meter/commands/+",
            ]},
            {"op": "request", "kind": "login", "body": {"devices": [
                "feeder-1-meter", "feeder-2-meter", "other-site-meter", "ghost-meter",
            ]}},
            {"op": "subscribe", "filters": ["d/metering/feeder-1-meter/commands/+"]},
            {"op": "publish", "topic": "d/metering/other-site-meter/telemetry", "payload": {"points": {"hz": 50}}},
            {"op": "publish", "topic": "d/metering/feeder-2-meter/telemetry", "payload": {"points": {"hz": 50}}},
            {"op": "publish", "topic": "d/metering/feeder-1-meter/telemetry", "payload": {"points": {"hz": 50}}},
            {"op": "request", "kind": "logout", "body": {"devices": ["feeder-1-meter", "other-site-meter"]}},
            {"op": "publish", "topic": "d/metering/feeder-1-meter/telemetry", "payload": {"points": {"hz": 50}}},
            {"op": "request", "kind": "register", "body": {"devices": [
                {"name": "spare-1", "model": "energy-meter", "attributes": {"modbusAddress": 11}},
                {"name": "spare-2", "model": "energy-meter", "attributes": {"modbusAddress": 12}},
            ]}},
        ]),
    );
    gw.wait_for_line("the gateway to finish", Duration::from_secs(60), |l| {
        l == "done"
    });
    let lines = gw.lines();
    let subacks: Vec<&String> = lines.iter().filter(|l| l.starts_with("suback")).collect();
    assert_eq!(
        subacks[0], "suback 1 135 135",
        "no subscription for devices not logged in: {lines:?}"
    );
    assert_eq!(subacks[1], "suback 1", "once logged in: {lines:?}");
    let login: Value = serde_json::from_str(
        lines
            .iter()
            .find_map(|l| l.strip_prefix("response login "))
            .expect("login answer"),
    )
    .expect("json");
    assert_eq!(
        results(&login),
        vec![
            pair("feeder-1-meter", "ok"),
            pair("feeder-2-meter", "LimitReached"),
            pair("other-site-meter", "NotAllowed"),
            pair("ghost-meter", "NotFound"),
        ],
        "{login}"
    );
    let pubacks: Vec<&String> = lines.iter().filter(|l| l.starts_with("puback")).collect();
    assert!(
        pubacks[0].starts_with("puback 135 ForeignTopic"),
        "{pubacks:?}"
    );
    assert!(
        pubacks[1].starts_with("puback 135 ForeignTopic"),
        "refused a login, so not its own: {pubacks:?}"
    );
    assert_eq!(pubacks[2], "puback 0 ", "{pubacks:?}");
    assert!(
        pubacks[3].starts_with("puback 135 ForeignTopic"),
        "logged out, so no longer its own: {pubacks:?}"
    );
    let logout: Value = serde_json::from_str(
        lines
            .iter()
            .find_map(|l| l.strip_prefix("response logout "))
            .expect("logout answer"),
    )
    .expect("json");
    assert_eq!(
        results(&logout),
        vec![
            pair("feeder-1-meter", "ok"),
            pair("other-site-meter", "NotAllowed")
        ]
    );
    let register: Value = serde_json::from_str(
        lines
            .iter()
            .find_map(|l| l.strip_prefix("response register "))
            .expect("register answer"),
    )
    .expect("json");
    assert_eq!(
        results(&register),
        vec![pair("spare-1", "created"), pair("spare-2", "LimitReached")],
        "maxDevices 1: {register}"
    );

    // A decommissioned sub-device is refused with its reason, by the gateway that it names.
    let logger = gateway(
        &devplane,
        LOGGER,
        json!([
            {"op": "subscribe", "filters": ["d/metering/substation-logger/#"]},
            {"op": "request", "kind": "login", "body": {"devices": ["retired-meter"]}},
        ]),
    );
    assert_eq!(
        results(&response(&logger, "login")),
        vec![pair("retired-meter", "Decommissioned")]
    );
    let after = devplane.metrics();
    assert!(
        denied_count(&after, "ForeignTopic") >= denied_count(&before, "ForeignTopic") + 5,
        "two subscriptions and three publishes denied and counted:\n{after}"
    );
}

#[test]
fn a_simulated_gateway_registers_logs_in_and_publishes_for_its_sub_devices() {
    let devplane = substation();
    let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(["simulate", "-n", "metering", "--protocol", "gateway"])
        .args(["--gateway", "substation-logger", "--register"])
        .args(["--model", "energy-meter", "--count", "3"])
        .args(["--rate", "30", "--invalid-share", "0.3", "--duration", "4"])
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .output()
        .expect("devplane simulate runs");
    let summary = crate::support::stdout(&output);
    let log = crate::support::stderr(&output);
    assert!(output.status.success(), "{summary}\n{log}");
    assert!(
        log.contains("the gateway registered 3 sub-devices"),
        "{log}"
    );
    assert!(summary.contains("connected 3/3 (failed 0)"), "{summary}");
    assert!(
        super::sessions::number_after(&summary, "· accepted ") > 0,
        "{summary}"
    );
    assert!(
        super::sessions::number_after(&summary, "· rejected ") > 0,
        "{summary}"
    );
    let gateway = devplane.kubectl_ok(&[
        "get",
        "device",
        "substation-logger-energy-meter-0001",
        "-n",
        "metering",
        "-o",
        "jsonpath={.spec.connection.gatewayRef.name}",
    ]);
    assert_eq!(gateway, "substation-logger");
}

#[test]
fn registration_into_another_namespace_needs_that_namespaces_consent() {
    let devplane = substation();
    devplane.wait_ready("metering", &["gateway/remote-logger"]);
    let register = json!({"op": "request", "kind": "register", "body": {"devices": [
        {"name": "annex-meter", "model": "metering/energy-meter", "attributes": {"modbusAddress": 3}},
    ]}});
    let refused = gateway(
        &devplane,
        "metering/remote-logger",
        json!([
            {"op": "subscribe", "filters": ["d/metering/remote-logger/#"]},
            register.clone(),
        ]),
    );
    let answer = response(&refused, "register");
    assert_eq!(
        results(&answer),
        vec![pair("annex-meter", "NotAllowed")],
        "without the annotation: {answer}"
    );
    assert!(
        !devplane
            .kubectl(&["get", "device", "annex-meter", "-n", "metering-annex"])
            .status
            .success(),
        "nothing was created"
    );
    drop(refused);

    devplane.kubectl_ok(&[
        "annotate",
        "namespace",
        "metering-annex",
        "iot.devplane.io/gateway-registrations-from=plant,metering",
    ]);
    let accepted = gateway(
        &devplane,
        "metering/remote-logger",
        json!([
            {"op": "subscribe", "filters": ["d/metering/remote-logger/#"]},
            register,
            {"op": "request", "kind": "login", "body": {"devices": ["metering-annex/annex-meter"]}},
            {"op": "publish", "topic": "d/metering-annex/annex-meter/telemetry",
             "payload": {"points": {"hz": 50}}},
        ]),
    );
    assert_eq!(
        results(&response(&accepted, "register")),
        vec![pair("annex-meter", "created")]
    );
    assert_eq!(
        results(&response(&accepted, "login")),
        vec![pair("metering-annex/annex-meter", "ok")]
    );
    accepted.wait_for_line("the PUBACK", Duration::from_secs(20), |l| l == "puback 0 ");
}
