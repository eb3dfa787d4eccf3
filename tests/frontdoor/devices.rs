//! What devices do through the front door: log in, stay inside their own topics, have their
//! data validated and passed northbound, show presence, get commands and desired values, and
//! lose their session when decommissioned; applications, backpressure, replicas, bad packets.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::support::{repo, stderr, stdout, wait_until};

#[test]
fn devices_connect_with_their_secret_and_bad_or_unauthorized_logins_are_refused() {
    let plant = Plant::start();
    let password = plant.password("plant", "sensor-a");
    let telemetry = r#"{"points": {"temperature": 21.5}}"#;
    for v5 in [false, true] {
        let output = plant.mosquitto(
            "mosquitto_pub",
            v5,
            "plant/sensor-a",
            &password,
            &[
                "-q",
                "1",
                "-t",
                "d/plant/sensor-a/telemetry",
                "-m",
                telemetry,
            ],
        );
        assert!(
            output.status.success(),
            "mosquitto_pub (v5: {v5}) publishes: {}",
            stderr(&output)
        );
    }
    let refused = |user: &str, password: &str, v5: bool| {
        let output = plant.mosquitto(
            "mosquitto_pub",
            v5,
            user,
            password,
            &["-t", "d/x/y/telemetry", "-m", "{}"],
        );
        assert!(!output.status.success(), "{user} must be refused");
        stderr(&output)
    };
    assert!(refused("plant/sensor-a", "wrong", false).contains("bad user name or password"));
    assert!(refused("plant/nobody", &password, false).contains("bad user name or password"));
    assert!(refused("plant/sensor-a", "wrong", true).contains("Bad User Name or Password"));
    let planned = plant.password_or_empty("plant", "sensor-planned");
    assert!(refused("plant/sensor-planned", &planned, false).contains("not authorised"));
    assert!(refused("plant/sensor-planned", &planned, true).contains("Not authorized"));

    // paho-mqtt sees the exact codes: 0x86 / 0x87 on v5, 4 / 5 on v3.1.1.
    assert_eq!(
        connack(&plant, "plant/sensor-a", &password, "5"),
        "connack 0"
    );
    assert_eq!(
        connack(&plant, "plant/sensor-a", &password, "3"),
        "connack 0"
    );
    assert_eq!(
        connack(&plant, "plant/sensor-a", "wrong", "5"),
        "connack 134"
    );
    assert_eq!(connack(&plant, "plant/nobody", "x", "5"), "connack 134");
    assert_eq!(
        connack(&plant, "plant/sensor-planned", "x", "5"),
        "connack 135"
    );
    // The exact v3.1.1 bytes (paho reports v3.1.1 codes as their v5 equivalents): return code
    // 4 for bad credentials, 5 for not authorized.
    let addr = plant.devplane.mqtt_addr();
    let raw_code = |user: &str, password: &str| {
        let (got, closed) = send_raw(&addr, &connect_packet(4, user, password), false);
        assert!(closed, "a refused connection is closed");
        got
    };
    assert_eq!(raw_code("plant/sensor-a", "wrong"), vec![0x20, 2, 0, 4]);
    assert_eq!(raw_code("plant/nobody", "x"), vec![0x20, 2, 0, 4]);
    assert_eq!(raw_code("plant/sensor-planned", "x"), vec![0x20, 2, 0, 5]);

    // A decommissioned device is refused, with its old password.
    let b_password = plant.password("plant", "sensor-b");
    assert_eq!(
        connack(&plant, "plant/sensor-b", &b_password, "5"),
        "connack 0"
    );
    plant.patch_device("sensor-b", r#"{"spec":{"lifecycle":"Decommissioned"}}"#);
    plant.wait_device("sensor-b", "--for=jsonpath={.status.phase}=Decommissioned");
    assert_eq!(
        connack(&plant, "plant/sensor-b", &b_password, "5"),
        "connack 135"
    );
    assert_eq!(raw_code("plant/sensor-b", &b_password), vec![0x20, 2, 0, 5]);
    let metrics = plant.devplane.metrics();
    assert!(
        metrics.contains("devplane_frontdoor_connections_refused_total{reason=\"NotAuthorized\"}"),
        "{metrics}"
    );
}

#[test]
fn devices_with_names_too_long_for_a_label_value_or_a_secret_suffix_connect_as_themselves() {
    let plant = Plant::start();
    // 100 characters: longer than a label value may be; 250: with `-credentials` longer than
    // an object name may be. Their first 60 characters are the same.
    let stem = |length: usize| {
        let mut name: String = (0..length - 2)
            .map(|i| if i % 20 == 19 { '.' } else { 'l' })
            .collect();
        name.push_str("-z");
        name
    };
    let names = [stem(100), stem(250)];
    for name in &names {
        plant.devplane.apply_yaml(&format!(
            "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {{name: {name}, namespace: plant}}\nspec:\n  modelRef: {{name: probe}}\n"
        ));
    }
    let mut passwords = Vec::new();
    for name in &names {
        plant.wait_device(name, "--for=condition=Ready");
        let secret = plant.jsonpath("device", "plant", name, "{.status.credentials.secretName}");
        assert!(secret.len() <= 253, "{secret}");
        let user = format!("plant/{name}");
        let password = plant.devplane.secret_value("plant", &secret, "password");
        assert_eq!(
            plant.devplane.secret_value("plant", &secret, "username"),
            user
        );
        let topic = format!("d/{user}/telemetry");
        let output = plant.mosquitto(
            "mosquitto_pub",
            true,
            &user,
            &password,
            &[
                "-q",
                "1",
                "-t",
                &topic,
                "-m",
                r#"{"points": {"temperature": 20}}"#,
            ],
        );
        assert!(
            output.status.success(),
            "{name} publishes: {}",
            stderr(&output)
        );
        passwords.push(password);
    }
    // Each logs in as itself only: not with the other's password, not on the other's topic.
    assert_eq!(
        connack(&plant, &format!("plant/{}", names[0]), &passwords[1], "5"),
        "connack 134"
    );
    assert_v5_publish_refused(
        &plant,
        &format!("plant/{}", names[0]),
        &passwords[0],
        &format!("d/plant/{}/telemetry", names[1]),
    );
}

#[test]
fn a_device_cannot_subscribe_to_or_publish_on_topics_that_are_not_its_own() {
    let plant = Plant::start();
    let password = plant.password("plant", "sensor-a");
    // Subscriptions: another device's tree, everything, a wildcard over devices, $SYS.
    for filter in [
        "d/plant/sensor-b/#",
        "#",
        "+/plant/sensor-a/#",
        "d/+/sensor-a/#",
        "$SYS/#",
    ] {
        for (v5, code) in [(false, "128"), (true, "135")] {
            let output = plant.mosquitto(
                "mosquitto_sub",
                v5,
                "plant/sensor-a",
                &password,
                &["-t", filter, "-d", "-W", "1"],
            );
            let text = stdout(&output);
            assert!(
                text.contains(&format!("Subscribed (mid: 1): {code}")),
                "{filter} (v5: {v5}) must get SUBACK {code}:\n{text}"
            );
        }
    }
    // Its own tree is granted.
    let output = plant.mosquitto(
        "mosquitto_sub",
        true,
        "plant/sensor-a",
        &password,
        &["-t", "d/plant/sensor-a/#", "-d", "-W", "1", "-q", "1"],
    );
    assert!(
        stdout(&output).contains("Subscribed (mid: 1): 1"),
        "{}",
        stdout(&output)
    );

    // Publishing as another device: v5 gets PUBACK 0x87, v3.1.1 loses the connection.
    assert_v5_publish_refused(
        &plant,
        "plant/sensor-a",
        &password,
        "d/plant/sensor-b/telemetry",
    );
    let output = plant.mosquitto(
        "mosquitto_pub",
        false,
        "plant/sensor-a",
        &password,
        &["-q", "1", "-t", "d/plant/sensor-b/telemetry", "-m", "{}"],
    );
    assert!(
        !output.status.success() || stderr(&output).contains("lost"),
        "a v3.1.1 publish as another device ends the connection: {}",
        stderr(&output)
    );
    let metrics = plant.devplane.metrics();
    assert!(denied_count(&metrics, "ForeignTopic") >= 3, "{metrics}");
    assert!(denied_count(&metrics, "Wildcard") >= 6, "{metrics}");
    assert!(denied_count(&metrics, "SystemTopic") >= 2, "{metrics}");
    // A (rate-limited) Warning Event names the device.
    let events = plant.devplane.kubectl_ok(&[
        "get",
        "events",
        "-n",
        "plant",
        "--field-selector=involvedObject.name=sensor-a,type=Warning",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    assert!(
        events
            .lines()
            .any(|r| r == "SubscribeDenied" || r == "PublishDenied"),
        "{events}"
    );
}

#[test]
fn invalid_values_are_rejected_with_reasons_and_only_valid_data_goes_northbound() {
    let plant = Plant::start();
    let password = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/+/telemetry", "20");
    let output = run_with_timeout(
        plant.paho(
            "plant/sensor-a",
            &password,
            "5",
            &[
                "publish",
                "d/plant/sensor-a/telemetry",
                r#"{"points":{"temperature":5000}}"#,
                "d/plant/sensor-a/telemetry",
                r#"{"points":{"pressure":1}}"#,
                "d/plant/sensor-a/telemetry",
                r#"{"ts": 1700000000000, "points":{"temperature":21.5,"mode":"eco"}}"#,
                "d/plant/sensor-a/events/overheat",
                r#"{"params":{"peak":"hot"}}"#,
            ],
        ),
        Duration::from_secs(20),
    );
    let lines = output_lines(&output);
    let ack = |i: usize| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("puback {i} ")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        ack(0).starts_with("puback 0 153 InvalidValue at points.temperature"),
        "{lines:?}"
    );
    assert!(
        ack(1).starts_with("puback 1 153 UnknownPoint at points.pressure"),
        "{lines:?}"
    );
    assert_eq!(ack(2).trim(), "puback 2 0", "{lines:?}");
    assert!(
        ack(3).starts_with("puback 3 153 InvalidValue at params.peak"),
        "{lines:?}"
    );
    // The same reasons on the errors topic.
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("message d/plant/sensor-a/errors "))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains(r#""field":"points.temperature""#)
                && l.contains(r#""reason":"InvalidValue""#)),
        "{lines:?}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains(r#""field":"points.pressure""#)
                && l.contains(r#""reason":"UnknownPoint""#)),
        "{lines:?}"
    );
    // The northbound reader gets the valid sample, normalized, and nothing else.
    let valid = reader.wait_for_line(
        "the valid sample northbound",
        Duration::from_secs(20),
        |l| l.starts_with("message north/plant/sensor-a/telemetry "),
    );
    assert!(valid.contains(r#""temperature":21.5"#), "{valid}");
    assert!(valid.contains(r#""model":"plant/probe""#), "{valid}");
    assert!(valid.contains(r#""receivedAt""#), "{valid}");
    std::thread::sleep(Duration::from_millis(500));
    let north: Vec<String> = reader
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("message "))
        .collect();
    assert_eq!(
        north.len(),
        1,
        "only the valid message goes northbound: {north:?}"
    );
    assert!(!north[0].contains("5000") && !north[0].contains("pressure"));
}

#[test]
fn presence_shows_online_while_connected_and_offline_after() {
    let plant = Plant::start();
    let password = plant.password("plant", "sensor-a");
    let mut device =
        Background::spawn(plant.paho("plant/sensor-a", &password, "3", &["respond", "10", "{}"]));
    device.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");
    plant.wait_device("sensor-a", "--for=condition=Connected");
    // The first connect moves the phase on.
    plant.wait_device("sensor-a", "--for=jsonpath={.status.phase}=Servicing");
    let listing = plant
        .devplane
        .kubectl_ok(&["get", "devices", "-n", "plant"]);
    let row = listing
        .lines()
        .find(|l| l.starts_with("sensor-a "))
        .unwrap_or_default()
        .to_string();
    assert!(
        row.contains("Online") && row.contains("Servicing"),
        "{listing}"
    );
    let last_seen = plant.jsonpath(
        "device",
        "plant",
        "sensor-a",
        "{.status.connection.lastSeen}",
    );
    let seen: jiff::Timestamp = last_seen.parse().expect("lastSeen is a time");
    assert!(
        (jiff::Timestamp::now().as_second() - seen.as_second()).abs() < 60,
        "recent last seen: {last_seen}"
    );
    device.wait_exit(Duration::from_secs(20));
    plant.wait_device("sensor-a", "--for=condition=Connected=False");
    assert_eq!(
        plant.jsonpath("device", "plant", "sensor-a", "{.status.connection.state}"),
        "Offline"
    );
}

#[test]
fn commands_reach_connected_devices_time_out_for_absent_ones_and_wait_for_late_ones() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let b = plant.password("plant", "sensor-b");
    let responder = Background::spawn(plant.paho(
        "plant/sensor-a",
        &a,
        "5",
        &["respond", "30", r#"{"uptime": 42}"#],
    ));
    responder.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");
    create_command(&plant, "reboot-a", "sensor-a", 30);
    create_command(&plant, "reboot-absent", "sensor-b", 3);
    wait_phase(&plant, "reboot-a", "Succeeded");
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "reboot-a",
            "{.status.output.uptime}"
        ),
        "42"
    );
    assert!(
        !plant
            .jsonpath("devicecommand", "plant", "reboot-a", "{.status.sentAt}")
            .is_empty()
    );
    let delivered = responder.wait_for_line("the command downlink", Duration::from_secs(5), |l| {
        l.starts_with("message d/plant/sensor-a/commands/reboot-a ")
    });
    assert!(delivered.contains(r#""service":"reboot""#), "{delivered}");
    // Deleted and created again under its name, it is another command: the live session
    // delivers it too, and the device's answer completes the new one.
    let first_uid = plant.jsonpath("devicecommand", "plant", "reboot-a", "{.metadata.uid}");
    plant
        .devplane
        .kubectl_ok(&["delete", "devicecommand", "reboot-a", "-n", "plant"]);
    create_command(&plant, "reboot-a", "sensor-a", 30);
    wait_phase(&plant, "reboot-a", "Succeeded");
    wait_until(
        "the second reboot-a delivered",
        Duration::from_secs(5),
        || {
            responder
                .lines()
                .iter()
                .filter(|l| l.starts_with("message d/plant/sensor-a/commands/reboot-a "))
                .count()
                == 2
        },
    );
    // A status write for the first one (the front door's carry its uid) cannot land on the
    // second.
    let late = plant.devplane.kubectl(&[
        "patch",
        "devicecommand",
        "reboot-a",
        "-n",
        "plant",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(r#"{{"metadata":{{"uid":"{first_uid}"}},"status":{{"phase":"Failed"}}}}"#),
    ]);
    assert!(!late.status.success());
    assert!(
        stderr(&late).contains("Precondition failed: UID in precondition"),
        "{}",
        stderr(&late)
    );
    assert_eq!(
        plant.jsonpath("devicecommand", "plant", "reboot-a", "{.status.phase}"),
        "Succeeded"
    );
    wait_phase(&plant, "reboot-absent", "TimedOut");

    // A command for a device that is away is delivered when it connects: here to
    // mosquitto_sub (MQTT 5, then 3.1.1), answered with mosquitto_pub.
    for (v5, name, uptime) in [(true, "reboot-late", "7"), (false, "reboot-late-v311", "8")] {
        create_command(&plant, name, "sensor-b", 60);
        wait_until("the command validated", Duration::from_secs(20), || {
            plant.jsonpath("devicecommand", "plant", name, "{.status.reason}")
                == "WaitingForDelivery"
        });
        let output = plant.mosquitto(
            "mosquitto_sub",
            v5,
            "plant/sensor-b",
            &b,
            &[
                "-t",
                "d/plant/sensor-b/#",
                "-q",
                "1",
                "-v",
                "-C",
                "2",
                "-W",
                "15",
            ],
        );
        let text = stdout(&output);
        let command = text
            .lines()
            .find(|l| l.starts_with(&format!("d/plant/sensor-b/commands/{name} ")))
            .unwrap_or_default();
        assert!(
            command.contains(r#""service":"reboot""#) && command.contains(r#""delay":0"#),
            "{text}"
        );
        assert!(
            text.contains("d/plant/sensor-b/attributes/desired "),
            "{text}"
        );
        wait_phase(&plant, name, "Sent");
        // The downlink names the command's uid; an answer naming another (a command of the
        // name deleted since) is refused and completes nothing.
        let uid = plant.jsonpath("devicecommand", "plant", name, "{.metadata.uid}");
        assert!(command.contains(&format!(r#""uid":"{uid}""#)), "{command}");
        let answer = |body: String| {
            plant.mosquitto(
                "mosquitto_pub",
                !v5,
                "plant/sensor-b",
                &b,
                &[
                    "-q",
                    "1",
                    "-t",
                    &format!("d/plant/sensor-b/commands/{name}/response"),
                    "-m",
                    &body,
                ],
            )
        };
        // Refused: under MQTT 5 with PUBACK 0x99, which mosquitto_pub may report as failing.
        answer(format!(
            r#"{{"status": "Succeeded", "uid": "not-{uid}", "output": {{"uptime": 999}}}}"#
        ));
        let uid_field = if v5 {
            String::new()
        } else {
            format!(r#", "uid": "{uid}""#)
        };
        let output = answer(format!(
            r#"{{"status": "Succeeded"{uid_field}, "output": {{"uptime": {uptime}}}}}"#
        ));
        assert!(output.status.success(), "{}", stderr(&output));
        wait_phase(&plant, name, "Succeeded");
        assert_eq!(
            plant.jsonpath("devicecommand", "plant", name, "{.status.output.uptime}"),
            uptime
        );
    }
}

#[test]
fn a_desired_change_reaches_the_device_and_the_twin_syncs_once_reported() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let responder =
        Background::spawn(plant.paho("plant/sensor-a", &a, "3", &["respond", "30", "{}"]));
    responder.wait_for_line(
        "the desired values at subscribe",
        Duration::from_secs(20),
        |l| {
            l.starts_with("message d/plant/sensor-a/attributes/desired ")
                && l.contains(r#""interval":60"#)
        },
    );
    plant.wait_device("sensor-a", "--for=condition=TwinSynced");
    plant.patch_device("sensor-a", r#"{"spec":{"desired":{"interval":120}}}"#);
    let line = responder.wait_for_line("the new desired value", Duration::from_secs(20), |l| {
        l.starts_with("message d/plant/sensor-a/attributes/desired ")
            && l.contains(r#""interval":120"#)
    });
    assert!(line.contains(r#""generation":2"#), "{line}");
    plant.wait_device("sensor-a", "--for=jsonpath={.status.reported.interval}=120");
    plant.wait_device("sensor-a", "--for=condition=TwinSynced");
}

#[test]
fn decommissioning_closes_the_session_within_a_second_and_refuses_the_reconnect() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let device = Background::spawn(plant.paho("plant/sensor-a", &a, "5", &["respond", "60", "{}"]));
    device.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");
    plant.wait_device("sensor-a", "--for=condition=Connected");
    plant.patch_device("sensor-a", r#"{"spec":{"lifecycle":"Decommissioned"}}"#);
    let disconnected = device.wait_for_line("the disconnect", Duration::from_secs(10), |l| {
        l.starts_with("disconnected")
    });
    // Timed by the server's own log, so a busy test machine's client scheduling does not
    // count: from the PATCH that decommissioned the device to the session's close.
    let log = plant.devplane.log_text();
    let at = |line: &str| {
        line.split_whitespace()
            .next()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let patched = log
        .lines()
        .rev()
        .filter(|l| {
            l.contains("method=PATCH")
                && l.contains(
                    "path=/apis/iot.devplane.io/v1alpha1/namespaces/plant/devices/sensor-a ",
                )
                && l.contains("status=200")
        })
        .find_map(at)
        .expect("the PATCH in the log");
    let closed = log
        .lines()
        .rev()
        .filter(|l| l.contains("closing the session") && l.contains("device plant/sensor-a"))
        .find_map(at)
        .expect("the close in the log");
    let elapsed = closed.duration_since(patched);
    assert!(
        elapsed <= jiff::SignedDuration::from_secs(1),
        "closed {elapsed:?} after the decommissioning PATCH ({disconnected})"
    );
    assert!(
        disconnected.contains("152"),
        "v5 DISCONNECT 0x98 administrative action: {disconnected}"
    );
    drop(device);
    assert_eq!(connack(&plant, "plant/sensor-a", &a, "5"), "connack 135");
}

#[test]
fn an_application_reads_its_own_namespace_and_is_refused_another() {
    let plant = Plant::start();
    let dash = plant.app_password("plant", "dash");
    let spy = plant.app_password("other", "spy");
    let prefix = plant.jsonpath("application", "plant", "dash", "{.status.topicPrefix}");
    assert_eq!(prefix, "north/plant/");
    let endpoint = plant
        .devplane
        .secret_value("plant", "dash-app-credentials", "mqtt-endpoint");
    assert_eq!(endpoint, format!("mqtt://{}", plant.devplane.app_addr()));

    let dash_reader = Background::spawn(plant.paho_app(
        "plant/dash",
        &dash,
        &[
            "read",
            "15",
            "north/plant/#",
            "north/other/#",
            "north/+/sensor-x/#",
            "#",
        ],
    ));
    let suback = dash_reader.wait_for_line("dash SUBACK", Duration::from_secs(20), |l| {
        l.starts_with("suback")
    });
    assert_eq!(
        suback, "suback 1 135 135 135",
        "own namespace granted, others refused"
    );
    let spy_reader =
        Background::spawn(plant.paho_app("other/spy", &spy, &["read", "15", "north/other/#"]));
    spy_reader.wait_for_line("spy SUBACK", Duration::from_secs(20), |l| l == "suback 1");
    // dash's password is not spy's, and an application cannot log in as a device or publish.
    assert_eq!(
        stdout(&run_with_timeout(
            plant.paho_at(
                &plant.devplane.app_addr(),
                "other/spy",
                &dash,
                "5",
                &["connect"]
            ),
            Duration::from_secs(20)
        ))
        .trim(),
        "connack 134"
    );
    assert_eq!(connack(&plant, "plant/dash", &dash, "5"), "connack 134");

    let x = plant.password("other", "sensor-x");
    let a = plant.password("plant", "sensor-a");
    for (user, password, namespace, device) in [
        ("other/sensor-x", &x, "other", "sensor-x"),
        ("plant/sensor-a", &a, "plant", "sensor-a"),
    ] {
        let output = run_with_timeout(
            plant.paho(
                user,
                password,
                "5",
                &[
                    "publish",
                    &format!("d/{namespace}/{device}/telemetry"),
                    r#"{"points":{"temperature":3}}"#,
                ],
            ),
            Duration::from_secs(20),
        );
        assert!(
            stdout(&output).contains("puback 0 0"),
            "{}",
            stdout(&output)
        );
    }
    spy_reader.wait_for_line("other's data for spy", Duration::from_secs(20), |l| {
        l.starts_with("message north/other/sensor-x/telemetry ")
    });
    dash_reader.wait_for_line("plant's data for dash", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !dash_reader
            .lines()
            .iter()
            .any(|l| l.contains("north/other/")),
        "dash never sees namespace other: {:?}",
        dash_reader.lines()
    );
    assert!(
        !spy_reader
            .lines()
            .iter()
            .any(|l| l.contains("north/plant/")),
        "spy never sees namespace plant: {:?}",
        spy_reader.lines()
    );
}

/// Device sensor-a publishes `count` QoS 1 telemetry messages as fast as its window allows;
/// every one must be acknowledged within 150 s.
fn flood_telemetry(plant: &Plant, password: &str, count: &str) {
    let mut publisher = Background::spawn(plant.paho(
        "plant/sensor-a",
        password,
        "3",
        &[
            "flood",
            count,
            "d/plant/sensor-a/telemetry",
            r#"{"points":{"temperature":20}}"#,
        ],
    ));
    let published = publisher.wait_exit(Duration::from_secs(150));
    assert!(
        published.contains(&format!("acked {count}")),
        "{published:?}"
    );
}

#[test]
fn under_a_slow_consumer_every_message_acked_to_the_device_reaches_the_northbound_stream() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let dash = plant.app_password("plant", "dash");
    const COUNT: &str = "1500";
    let mut reader = Background::spawn(plant.paho_app(
        "plant/dash",
        &dash,
        &["slowread", COUNT, "0.002", "north/plant/sensor-a/telemetry"],
    ));
    reader.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");
    flood_telemetry(&plant, &a, COUNT);
    let read = reader.wait_exit(Duration::from_secs(150));
    assert!(read.contains(&format!("received {COUNT}")), "{read:?}");
    let metrics = plant.devplane.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "devplane_frontdoor_uplink_accepted_total{kind=\"telemetry\"} "
        ),
        COUNT.parse::<u64>().expect("count"),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "devplane_frontdoor_northbound_dropped_total "),
        0
    );
}

#[test]
fn an_application_that_acknowledges_nothing_is_closed_and_holds_up_no_device() {
    use std::io::Write;
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let dash = plant.app_password("plant", "dash");
    // MQTT 5, no keepalive, receive maximum 1: one unacknowledged message fills its window,
    // and it never acknowledges.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xc2, 0, 0, 3, 0x21, 0, 1];
    for field in [&b"stuck"[..], b"plant/dash", dash.as_bytes()] {
        body.extend((field.len() as u16).to_be_bytes());
        body.extend(field);
    }
    let mut connect = vec![0x10];
    connect.extend(remaining_length(body.len()));
    connect.extend(body);
    let (mut stuck, connack) = raw_session(&plant.devplane.app_addr(), &connect);
    assert_eq!(connack[..2], [0, 0], "accepted");
    let mut subscribe = subscribe_packet(&[("north/plant/#", 1)]);
    subscribe.insert(4, 0); // v5: no properties after the packet id
    subscribe[1] += 1;
    stuck.write_all(&subscribe).expect("subscribe");
    assert_eq!(read_packet(&mut stuck).map(|p| p.0), Some(0x90), "SUBACK");
    // More than its queue and ingest's hold: the device is acknowledged only once the stuck
    // application is closed.
    const COUNT: &str = "2500";
    flood_telemetry(&plant, &a, COUNT);
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut last = None;
    while let Some(packet) = read_packet(&mut stuck) {
        last = Some(packet);
    }
    let (kind, body) = last.expect("packets before the close");
    assert_eq!(kind, 0xe0, "closed with a DISCONNECT");
    assert_eq!(body[0], 0x97, "quota exceeded");
}

#[test]
fn with_two_front_door_replicas_a_command_reaches_a_device_on_either() {
    let plant = Plant::start();
    let free = || format!("127.0.0.1:{}", crate::support::free_port());
    let (mqtt, app, admin) = (free(), free(), free());
    let log = std::fs::File::create(plant.devplane.dir.join("frontdoor-2.log")).expect("log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(["frontdoor", "--kubeconfig"])
        .arg(plant.devplane.kubeconfig())
        .args([
            "--mqtt-addr",
            &mqtt,
            "--app-mqtt-addr",
            &app,
            "--admin-addr",
            &admin,
            "--http-addr",
            "127.0.0.1:0",
            "--identity",
            "replica-2",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("devplane frontdoor starts");
    wait_until(
        "the second replica listens",
        Duration::from_secs(30),
        || TcpStream::connect(&mqtt).is_ok(),
    );
    let a = plant.password("plant", "sensor-a");
    let b = plant.password("plant", "sensor-b");
    let on_first = Background::spawn(plant.paho(
        "plant/sensor-a",
        &a,
        "5",
        &["respond", "40", r#"{"uptime": 1}"#],
    ));
    let (host, port) = Plant::host_port(&mqtt);
    let mut on_second_cmd = Command::new("python3");
    on_second_cmd
        .arg(repo().join("tests/python/mqtt_device.py"))
        .args([
            host.as_str(),
            port.as_str(),
            "plant/sensor-b",
            b.as_str(),
            "5",
            "respond",
            "40",
            r#"{"uptime": 2}"#,
        ]);
    let on_second = Background::spawn(on_second_cmd);
    on_first.wait_for_line("a subscribed", Duration::from_secs(20), |l| {
        l == "subscribed"
    });
    on_second.wait_for_line("b subscribed", Duration::from_secs(30), |l| {
        l == "subscribed"
    });
    plant.wait_device(
        "sensor-b",
        "--for=jsonpath={.status.connection.frontDoor}=replica-2",
    );
    create_command(&plant, "to-first", "sensor-a", 30);
    create_command(&plant, "to-second", "sensor-b", 30);
    wait_phase(&plant, "to-first", "Succeeded");
    wait_phase(&plant, "to-second", "Succeeded");
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "to-second",
            "{.status.output.uptime}"
        ),
        "2"
    );
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "to-first",
            "{.status.output.uptime}"
        ),
        "1"
    );
    // Each command went to its device once, from the replica that holds it.
    assert_eq!(
        on_second
            .lines()
            .iter()
            .filter(|l| l.contains("commands/to-second "))
            .count(),
        1
    );
    assert!(!on_second.lines().iter().any(|l| l.contains("to-first")));
    // A desired change reaches the device on the second replica.
    plant.patch_device("sensor-b", r#"{"spec":{"desired":{"interval":300}}}"#);
    on_second.wait_for_line("b's desired value", Duration::from_secs(20), |l| {
        l.starts_with("message d/plant/sensor-b/attributes/desired ")
            && l.contains(r#""interval":300"#)
    });
    // sensor-a moves to the second replica: the first closes its session (taken over, as
    // the API shows), and commands follow the device.
    std::thread::sleep(Duration::from_millis(1100)); // a later second than the first session
    let mut moved_cmd = Command::new("python3");
    moved_cmd
        .arg(repo().join("tests/python/mqtt_device.py"))
        .args([
            host.as_str(),
            port.as_str(),
            "plant/sensor-a",
            a.as_str(),
            "5",
            "respond",
            "40",
            r#"{"uptime": 3}"#,
        ]);
    let moved = Background::spawn(moved_cmd);
    moved.wait_for_line(
        "a subscribed on the second replica",
        Duration::from_secs(20),
        |l| l == "subscribed",
    );
    let closed = on_first.wait_for_line(
        "the first replica lets a go",
        Duration::from_secs(20),
        |l| l.starts_with("disconnected"),
    );
    assert_eq!(closed, "disconnected 142", "session taken over");
    create_command(&plant, "after-move", "sensor-a", 30);
    wait_phase(&plant, "after-move", "Succeeded");
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "after-move",
            "{.status.output.uptime}"
        ),
        "3"
    );
    assert_eq!(
        plant.jsonpath(
            "device",
            "plant",
            "sensor-a",
            "{.status.connection.frontDoor}"
        ),
        "replica-2"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status();
    let _ = finish_child(&mut second);
}

#[test]
fn malformed_packets_close_only_their_own_connection() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let b = plant.password("plant", "sensor-b");
    let bystander = Background::spawn(plant.paho(
        "plant/sensor-b",
        &b,
        "5",
        &["respond", "90", r#"{"uptime": 5}"#],
    ));
    bystander.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");

    let connect = connect_packet(4, "plant/sensor-a", &a);
    // Wrong protocol level: MQTT 3.1 gets CONNACK 1 and a close; level 6 just a close.
    let (got, closed) = send_raw(&addr, &connect_packet(3, "plant/sensor-a", &a), false);
    assert!(closed);
    assert_eq!(
        got,
        vec![0x20, 0x02, 0x00, 0x01],
        "CONNACK refused protocol version"
    );
    let (_, closed) = send_raw(&addr, &connect_packet(6, "plant/sensor-a", &a), false);
    assert!(closed, "level 6 is closed");
    // A truncated packet, then the client ends its side: the server closes too.
    let (got, closed) = send_raw(&addr, &connect[..connect.len() / 2], true);
    assert!(
        closed && got.is_empty(),
        "a truncated CONNECT gets no answer and a close"
    );
    // Oversize: a PUBLISH announcing 1 MiB after a good CONNECT.
    let mut oversize = connect.clone();
    oversize.extend([0x30]);
    oversize.extend(remaining_length(1 << 20));
    oversize.extend([0, 1, b'x']);
    let (got, closed) = send_raw(&addr, &oversize, false);
    assert!(closed, "oversize closes");
    assert_eq!(
        &got[..4],
        &[0x20, 0x02, 0x00, 0x00],
        "the CONNECT itself was accepted"
    );
    // A PUBLISH whose topic is not UTF-8.
    let mut bad_topic = connect.clone();
    bad_topic.extend([0x30, 0x05, 0x00, 0x03, 0xff, 0xfe, 0xfd]);
    let (_, closed) = send_raw(&addr, &bad_topic, false);
    assert!(closed, "a non-UTF-8 topic closes");
    // Garbage instead of CONNECT.
    let (_, closed) = send_raw(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    assert!(closed, "garbage closes");

    // The other session still works, and the server still accepts new ones.
    create_command(&plant, "still-alive", "sensor-b", 30);
    wait_phase(&plant, "still-alive", "Succeeded");
    assert_eq!(connack(&plant, "plant/sensor-a", &a, "3"), "connack 0");
    let log = plant.devplane.log_text();
    assert!(
        log.contains("protocol error") || log.contains("bad CONNECT"),
        "clear log lines"
    );
    assert!(log.contains("not UTF-8"), "the log says what was wrong");
}
