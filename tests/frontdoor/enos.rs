//! The EnOS device-protocol profile against `devplane up`, with a Python device written from
//! the protocol (`tests/python/enos_device.py`): signed logins with the example product keys,
//! measure points, events and attributes with EnOS replies, a gateway's topology and
//! sub-device logins, service invocations and measure-point sets pushed without subscriptions,
//! dynamic activation, and the native and EnOS profiles side by side in one `devplane up`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::support::repo;

/// Beside the examples: an application reading the smart-home namespace northbound, and the
/// fixture's `probe` model (a service with an output) as EnOS product `prb001`.
const EXTRA: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Application
metadata: {name: home-app, namespace: smart-home}
spec: {}
"#;

/// `devplane up` with the EnOS listener, the fixture, the smart-home and data-logger examples
/// and the extras, everything Ready.
fn enos_plant() -> Plant {
    let plant = Plant::start_with(&["--enos-mqtt-addr", "127.0.0.1:0"]);
    let devplane = &plant.devplane;
    for file in [
        "examples/00-namespaces.yaml",
        "examples/smart-home.yaml",
        "examples/datalogger-gateway.yaml",
    ] {
        devplane.kubectl_ok(&["apply", "-f", file]);
    }
    devplane.apply_yaml(EXTRA);
    devplane.kubectl_ok(&[
        "patch",
        "devicemodel",
        "probe",
        "-n",
        "plant",
        "--type=merge",
        "-p",
        r#"{"spec":{"enos":{"productKey":"prb001"}}}"#,
    ]);
    for (what, namespace) in [
        ("device/living-room-climate", "smart-home"),
        ("application/home-app", "smart-home"),
        ("gateway/substation-logger", "metering"),
        ("device/feeder-1-meter", "metering"),
    ] {
        devplane.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            what,
            "-n",
            namespace,
            "--timeout=60s",
        ]);
    }
    for (model, namespace) in [("thermo-hygrometer", "smart-home"), ("probe", "plant")] {
        devplane.kubectl_ok(&[
            "wait",
            "--for=condition=EnosProductKey",
            &format!("devicemodel/{model}"),
            "-n",
            namespace,
            "--timeout=60s",
        ]);
    }
    plant
}

impl Plant {
    fn enos_addr(&self) -> String {
        self.devplane
            .printed_address("device EnOS MQTT listening on mqtt://")
    }

    fn secret_of(&self, namespace: &str, owner: &str) -> String {
        self.devplane
            .secret_value(namespace, &format!("{owner}-credentials"), "password")
    }

    /// The EnOS device helper logging in with `login`, running `script`.
    fn enos_device(&self, login: Value, script: Value) -> Command {
        let (host, port) = Self::host_port(&self.enos_addr());
        let mut command = Command::new("python3");
        command
            .arg(repo().join("tests/python/enos_device.py"))
            .args([&host, &port, &login.to_string(), &script.to_string()]);
        command
    }

    /// Run the helper to its end; its output lines.
    fn enos_run(&self, login: Value, script: Value) -> Vec<String> {
        let output = run_with_timeout(self.enos_device(login, script), Duration::from_secs(60));
        output_lines(&output)
    }
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {lines:#?}"))
}

fn climate_login(plant: &Plant, method: &str) -> Value {
    json!({
        "productKey": "thhy01",
        "deviceKey": "living-room-climate",
        "secret": plant.secret_of("smart-home", "living-room-climate"),
        "signMethod": method,
    })
}

/// The smart-home application reading `filter` for `seconds`, once subscribed.
fn home_reader(plant: &Plant, filter: &str, seconds: &str) -> Background {
    let password = plant.app_password("smart-home", "home-app");
    let reader = Background::spawn(plant.paho_app(
        "smart-home/home-app",
        &password,
        &["read", seconds, filter],
    ));
    reader.wait_for_line("the application's SUBACK", Duration::from_secs(20), |l| {
        l == "suback 1"
    });
    reader
}

#[test]
fn an_enos_device_signs_in_with_each_method_and_its_measure_points_are_judged_and_streamed() {
    let plant = enos_plant();
    let reader = home_reader(
        &plant,
        "north/smart-home/living-room-climate/telemetry",
        "90",
    );
    for (i, method) in ["sha256", "hmacsha256", "hmacsha1", "sha1", "md5", "hmacmd5"]
        .into_iter()
        .enumerate()
    {
        let temperature = 20.0 + i as f64;
        let lines = plant.enos_run(
            climate_login(&plant, method),
            json!([{"op": "post", "measurepoints": {"temperature": temperature, "humidity": 41.5}}]),
        );
        assert_eq!(
            line_with(&lines, "reply post "),
            "reply post 200 success",
            "{method}: {lines:#?}"
        );
        reader.wait_for_line(
            &format!("the {method} sample northbound"),
            Duration::from_secs(20),
            |l| l.contains(&format!("\"temperature\":{temperature:?}")),
        );
    }
    // An out-of-range value is refused with a parameter error naming the point; nothing of it
    // goes northbound.
    let lines = plant.enos_run(
        climate_login(&plant, "sha256"),
        json!([
            {"op": "post", "measurepoints": {"temperature": 1500.0}},
            {"op": "event", "event": "mouldRisk", "events": {"hoursAboveThreshold": 30}},
            {"op": "event", "event": "mouldRisk", "events": {"hoursAboveThreshold": -1}},
            {"op": "attributes", "attributes": {"room": "living room"}},
        ]),
    );
    let refused = line_with(&lines, "reply post ");
    assert!(
        refused.starts_with("reply post 460 ") && refused.contains("measurepoints.temperature"),
        "{refused}"
    );
    let events: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("reply event "))
        .collect();
    assert_eq!(events[0], "reply event 200 success", "{lines:#?}");
    assert!(
        events[1].starts_with("reply event 460 ") && events[1].contains("hoursAboveThreshold"),
        "{lines:#?}"
    );
    assert_eq!(
        line_with(&lines, "reply attributes "),
        "reply attributes 200 success"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !reader.lines().iter().any(|l| l.contains("1500")),
        "a refused value is not streamed"
    );
    // A wrong signature, an unknown device key and an unknown product key are refused with
    // CONNACK 4.
    let mut wrong = climate_login(&plant, "sha256");
    wrong["secret"] = json!("not-the-secret");
    let mut unknown_device = climate_login(&plant, "sha256");
    unknown_device["deviceKey"] = json!("nobody");
    let mut unknown_product = climate_login(&plant, "sha256");
    unknown_product["productKey"] = json!("nope01");
    for login in [wrong, unknown_device, unknown_product] {
        let lines = plant.enos_run(login.clone(), json!([]));
        assert_eq!(lines, vec!["connack 4"], "{login}");
    }
}

#[test]
fn an_enos_gateway_adds_topology_logs_in_a_meter_posts_for_it_and_is_refused_other_devices() {
    let plant = enos_plant();
    let meter = json!({
        "productKey": "emtr01",
        "deviceKey": "feeder-1-meter",
        "secret": plant.secret_of("metering", "feeder-1-meter"),
    });
    let stranger = json!({
        "productKey": "thhy01",
        "deviceKey": "living-room-climate",
        "secret": plant.secret_of("smart-home", "living-room-climate"),
    });
    let second = json!({
        "productKey": "emtr01",
        "deviceKey": "feeder-2-meter",
        "secret": plant.secret_of("metering", "feeder-2-meter"),
    });
    let third_forged = json!({
        "productKey": "emtr01",
        "deviceKey": "auxiliary-meter",
        "secret": "forged",
    });
    let mut forged = meter.clone();
    forged["secret"] = json!("forged");
    let login = json!({
        "productKey": "dlgr01",
        "deviceKey": "substation-logger",
        "secret": plant.secret_of("metering", "substation-logger"),
        "signMethod": "hmacsha1",
    });
    let lines = plant.enos_run(
        login,
        json!([
            {"op": "topo_add", "devices": [forged]},
            {"op": "topo_add", "devices": [meter]},
            {"op": "topo_get"},
            {"op": "sub_post", "device": meter, "measurepoints": {"cumulativeActiveEnergy": 12.5}},
            {"op": "login", "device": meter},
            {"op": "sub_post", "device": meter, "measurepoints": {"cumulativeActiveEnergy": 12.5}},
            {"op": "login", "device": stranger},
            {"op": "sub_post", "device": stranger, "measurepoints": {"temperature": 21.0}},
            {"op": "post", "measurepoints": {"connectedFieldDevices": 1}},
            {"op": "login_batch", "devices": [second, third_forged]},
            {"op": "logout", "device": meter},
            {"op": "sub_post", "device": meter, "measurepoints": {"cumulativeActiveEnergy": 13.0}},
        ]),
    );
    let topo_adds: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("reply topo_add "))
        .collect();
    assert!(
        topo_adds[0].starts_with("reply topo_add 401 "),
        "a forged sub-device signature: {lines:#?}"
    );
    assert_eq!(topo_adds[1], "reply topo_add 200 success");
    let topology = line_with(&lines, "reply topo_get 200 ");
    assert!(topology.contains("\"feeder-1-meter\""), "{topology}");
    assert!(!topology.contains("living-room-climate"), "{topology}");
    let sub_posts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("reply sub_post "))
        .collect();
    assert!(
        sub_posts[0].starts_with("reply sub_post 401 "),
        "not logged in yet: {lines:#?}"
    );
    assert_eq!(sub_posts[1], "reply sub_post 200 success", "{lines:#?}");
    let logins: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("reply login "))
        .collect();
    assert_eq!(logins[0], "reply login 200 success", "{lines:#?}");
    assert!(
        logins[1].starts_with("reply login 401 ") && logins[1].contains("neither names"),
        "a device the gateway may not act for: {lines:#?}"
    );
    assert!(
        sub_posts[2].starts_with("reply sub_post 401 "),
        "{lines:#?}"
    );
    assert_eq!(line_with(&lines, "reply post "), "reply post 200 success");
    let batch: Value = serde_json::from_str(
        line_with(&lines, "reply login_batch 200 ").trim_start_matches("reply login_batch 200 "),
    )
    .expect("batch data");
    assert_eq!(batch["loginedSubDevices"][0]["deviceKey"], "feeder-2-meter");
    assert_eq!(batch["failedSubDevices"][0]["deviceKey"], "auxiliary-meter");
    assert_eq!(batch["failedSubDevices"][0]["code"], 401);
    assert_eq!(
        line_with(&lines, "reply logout "),
        "reply logout 200 success"
    );
    assert!(
        sub_posts[3].starts_with("reply sub_post 401 "),
        "logged out: {lines:#?}"
    );
    // The meter was Online through the gateway, which its status remembers.
    assert_eq!(
        plant.jsonpath(
            "device",
            "metering",
            "feeder-1-meter",
            "{.status.connection.gateway}"
        ),
        "metering/substation-logger"
    );
    let metrics = plant.devplane.metrics();
    assert!(denied_count(&metrics, "ForeignTopic") >= 2, "{metrics}");
}

#[test]
fn commands_and_desired_values_reach_an_enos_device_unsubscribed_and_its_twin_matches_the_native_one()
 {
    let plant = enos_plant();
    let login = json!({
        "productKey": "prb001",
        "deviceKey": "sensor-a",
        "secret": plant.password("plant", "sensor-a"),
    });
    let mut device = Background::spawn(plant.enos_device(
        login,
        json!([{"op": "serve", "seconds": 25, "output": {"uptime": 42}}]),
    ));
    // The desired values at connect come as a measure-point set; the device's 200 reports
    // them.
    device.wait_for_line(
        "the first measure-point set",
        Duration::from_secs(20),
        |l| l == r#"set {"interval": 60}"#,
    );
    plant.wait_device("sensor-a", "--for=condition=TwinSynced");
    assert_eq!(
        plant.jsonpath("device", "plant", "sensor-a", "{.status.connection.state}"),
        "Online"
    );
    create_command(&plant, "reboot-over-enos", "sensor-a", 30);
    device.wait_for_line("the service invocation", Duration::from_secs(20), |l| {
        l == r#"invoke reboot {"delay": 0}"#
    });
    wait_phase(&plant, "reboot-over-enos", "Succeeded");
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "reboot-over-enos",
            "{.status.output.uptime}"
        ),
        "42"
    );
    plant.patch_device("sensor-a", r#"{"spec":{"desired":{"interval":120}}}"#);
    device.wait_for_line(
        "the changed measure-point set",
        Duration::from_secs(20),
        |l| l == r#"set {"interval": 120}"#,
    );
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.reported.interval}=120",
        "device/sensor-a",
        "-n",
        "plant",
        "--timeout=30s",
    ]);
    plant.wait_device("sensor-a", "--for=condition=TwinSynced");
    // The device's own replies never come back to it.
    assert!(
        !device.lines().iter().any(|l| l.contains("_reply")),
        "{:#?}",
        device.lines()
    );
    let lines = device.wait_exit(Duration::from_secs(40));
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    plant.wait_device(
        "sensor-a",
        "--for=jsonpath={.status.connection.state}=Offline",
    );

    // The same device over the native protocol: the same presence and twin.
    let password = plant.password("plant", "sensor-a");
    let native =
        Background::spawn(plant.paho("plant/sensor-a", &password, "5", &["respond", "25", "{}"]));
    native.wait_for_line("the native subscription", Duration::from_secs(20), |l| {
        l == "subscribed"
    });
    plant.wait_device(
        "sensor-a",
        "--for=jsonpath={.status.connection.state}=Online",
    );
    plant.patch_device("sensor-a", r#"{"spec":{"desired":{"interval":300}}}"#);
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.reported.interval}=300",
        "device/sensor-a",
        "-n",
        "plant",
        "--timeout=30s",
    ]);
    plant.wait_device("sensor-a", "--for=condition=TwinSynced");
    assert_eq!(
        plant.jsonpath(
            "device",
            "plant",
            "sensor-a",
            "{.status.connection.protocol}"
        ),
        "mqtt"
    );
}

#[test]
fn an_enos_reply_answers_the_invocation_it_was_sent_for_not_a_command_created_again_under_its_name()
{
    let plant = enos_plant();
    let login = json!({
        "productKey": "prb001",
        "deviceKey": "sensor-a",
        "secret": plant.password("plant", "sensor-a"),
    });
    // The device answers each invocation 8 s after it came, the n-th with uptime n.
    let device = Background::spawn(plant.enos_device(
        login,
        json!([{"op": "serve", "seconds": 45, "answer_after": 8, "numbered": true}]),
    ));
    device.wait_for_line("the service", Duration::from_secs(20), |l| l == "serving");
    plant.wait_device(
        "sensor-a",
        "--for=jsonpath={.status.connection.state}=Online",
    );
    create_command(&plant, "late", "sensor-a", 60);
    device.wait_for_line("the first invocation", Duration::from_secs(20), |l| {
        l.starts_with("invoke reboot ")
    });
    // Deleted and created again before the device answers: the same name, another command.
    plant
        .devplane
        .kubectl_ok(&["delete", "devicecommand", "late", "-n", "plant"]);
    create_command(&plant, "late", "sensor-a", 60);
    wait_until("the second invocation", Duration::from_secs(20), || {
        device
            .lines()
            .iter()
            .filter(|l| l.starts_with("invoke reboot "))
            .count()
            == 2
    });
    // The first answer is for the deleted command and is refused; the second answers the
    // command waiting now. (Had the command been created again only after the first answer,
    // nothing could have taken that answer for it.)
    wait_phase(&plant, "late", "Succeeded");
    let lines = device.lines();
    let at = |line: &str| lines.iter().position(|l| l == line);
    let second_invocation = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("invoke reboot "))
        .nth(1)
        .map(|(i, _)| i);
    assert!(
        second_invocation < at("answered 1") && at("answered 1").is_some(),
        "the command was created again before the first answer: {lines:#?}"
    );
    assert_eq!(
        plant.jsonpath("devicecommand", "plant", "late", "{.status.output.uptime}"),
        "2"
    );
    assert_eq!(
        metric_value(
            &plant.devplane.metrics(),
            "devplane_frontdoor_uplink_rejected_total{reason=\"UnknownCommand\"} "
        ),
        1
    );
}

#[test]
fn dynamic_activation_hands_a_never_connected_device_its_secret_and_it_then_signs_in() {
    let plant = enos_plant();
    plant.devplane.apply_yaml(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: hall-climate, namespace: smart-home}
spec:
  modelRef: {name: thermo-hygrometer}
  attributes: {room: hall}
"#,
    );
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "device/hall-climate",
        "-n",
        "smart-home",
        "--timeout=60s",
    ]);
    let product_secret = plant.devplane.secret_value(
        "smart-home",
        "thermo-hygrometer-enos-product",
        "productSecret",
    );
    let activation = json!({
        "productKey": "thhy01",
        "deviceKey": "hall-climate",
        "secret": product_secret,
        "mode": 3,
    });
    let lines = plant.enos_run(activation.clone(), json!([{"op": "activate"}]));
    let secret = line_with(&lines, "activated ")
        .strip_prefix("activated ")
        .unwrap_or_default()
        .to_string();
    assert_eq!(secret, plant.secret_of("smart-home", "hall-climate"));
    assert!(lines.iter().any(|l| l == "closed"), "{lines:#?}");
    let lines = plant.enos_run(
        json!({"productKey": "thhy01", "deviceKey": "hall-climate", "secret": secret}),
        json!([{"op": "post", "measurepoints": {"temperature": 19.5}}]),
    );
    assert_eq!(line_with(&lines, "reply post "), "reply post 200 success");
    // Once it has connected, the product secret no longer activates it.
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.connection.state}=Offline",
        "device/hall-climate",
        "-n",
        "smart-home",
        "--timeout=30s",
    ]);
    let lines = plant.enos_run(activation, json!([{"op": "activate"}]));
    assert_eq!(lines, vec!["connack 5"]);
    // A second model claiming the product key is refused, naming the holder; the key stays
    // with the first, and so does dynamic activation.
    plant.devplane.apply_yaml(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: thermo-copy, namespace: plant}
spec: {version: 1.0.0, enos: {productKey: thhy01, dynamicActivation: true}}
"#,
    );
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=condition=EnosProductKey=False",
        "devicemodel/thermo-copy",
        "-n",
        "plant",
        "--timeout=60s",
    ]);
    let message = plant.jsonpath(
        "devicemodel",
        "plant",
        "thermo-copy",
        r#"{.status.conditions[?(@.type=="EnosProductKey")].reason} {.status.conditions[?(@.type=="EnosProductKey")].message}"#,
    );
    assert!(
        message.starts_with("ProductKeyTaken ") && message.contains("smart-home/thermo-hygrometer"),
        "{message}"
    );
    let copies = plant
        .devplane
        .kubectl_ok(&["get", "secret", "-n", "plant", "-o", "name"]);
    assert!(!copies.contains("thermo-copy-enos-product"), "{copies}");
    // The product secret signs nothing else: not as a device secret.
    let lines = plant.enos_run(
        json!({"productKey": "thhy01", "deviceKey": "hall-climate", "secret": product_secret}),
        json!([]),
    );
    assert_eq!(lines, vec!["connack 4"]);
}

#[test]
fn simulated_enos_devices_post_and_get_their_rejections_counted() {
    let plant = Plant::start_with(&["--enos-mqtt-addr", "127.0.0.1:0"]);
    plant.devplane.kubectl_ok(&[
        "patch",
        "devicemodel",
        "probe",
        "-n",
        "plant",
        "--type=merge",
        "-p",
        r#"{"spec":{"enos":{"productKey":"prb001"}}}"#,
    ]);
    let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args([
            "simulate", "-n", "plant", "--model", "probe", "--count", "3",
        ])
        .args(["--protocol", "enos", "--enos-addr", &plant.enos_addr()])
        .args(["--rate", "30", "--invalid-share", "0.3", "--duration", "4"])
        .arg("--kubeconfig")
        .arg(plant.devplane.kubeconfig())
        .output()
        .expect("devplane simulate runs");
    let summary = crate::support::stdout(&output);
    assert!(
        output.status.success(),
        "{summary}\n{}",
        crate::support::stderr(&output)
    );
    assert!(summary.contains("connected 3/3 (failed 0)"), "{summary}");
    let number_after = super::sessions::number_after;
    assert!(number_after(&summary, "· accepted ") > 0, "{summary}");
    assert!(number_after(&summary, "· rejected ") > 0, "{summary}");
    assert!(summary.contains("InvalidValue"), "{summary}");
    plant.wait_device("probe-sim-0001", "--for=jsonpath={.status.phase}=Servicing");
}
