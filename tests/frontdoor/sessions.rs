//! Session behaviour: persistent sessions, wills, takeover, QoS 2, limits, keepalive, revoked
//! and deleted devices, password rotation, TLS, and `devplane simulate`.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::support::{stderr, stdout};

fn desired_topic(packet: &(u8, Vec<u8>)) -> bool {
    packet.0 >> 4 == 3
        && String::from_utf8_lossy(&packet.1).contains("d/plant/sensor-a/attributes/desired")
}

/// sensor-a's CONNECT for a persistent session.
fn persistent(password: &str) -> RawConnect<'_> {
    let mut keep = RawConnect::new("plant/sensor-a", password);
    keep.clean = false;
    keep
}

/// A new session of `connect` (none was present) subscribed to `filter` at QoS 1.
fn subscribed(addr: &str, connect: &RawConnect<'_>, filter: &str) -> TcpStream {
    let (mut stream, connack) = raw_session(addr, &connect.packet());
    assert_eq!(connack, vec![0, 0], "a new session is not present");
    stream
        .write_all(&subscribe_packet(&[(filter, 1)]))
        .expect("subscribe");
    assert_eq!(read_packet(&mut stream).map(|p| p.0), Some(0x90), "SUBACK");
    stream
}

#[test]
fn a_persistent_session_resumes_its_subscriptions_and_a_clean_one_does_not() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let keep = persistent(&a);
    let mut first = subscribed(&addr, &keep, "d/plant/sensor-a/#");
    let desired = read_packet(&mut first).expect("desired after subscribing");
    assert!(desired_topic(&desired), "{desired:?}");
    first.write_all(&[0xe0, 0x00]).expect("DISCONNECT");
    drop(first);

    // Back without subscribing: the session is present and its subscription delivers.
    let (mut second, connack) = raw_session(&addr, &keep.packet());
    assert_eq!(connack, vec![1, 0], "session present");
    let desired = read_packet(&mut second).expect("desired without a new SUBSCRIBE");
    assert!(desired_topic(&desired), "{desired:?}");
    second.write_all(&[0xe0, 0x00]).expect("DISCONNECT");
    drop(second);

    let (mut clean, connack) = raw_session(&addr, &RawConnect::new("plant/sensor-a", &a).packet());
    assert_eq!(connack, vec![0, 0], "a clean start discards the session");
    clean
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        read_packet(&mut clean).is_none(),
        "no subscription, no downlink"
    );
}

#[test]
fn a_resumed_session_sends_again_the_command_its_device_did_not_acknowledge() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let keep = persistent(&a);
    let command_topic = |packet: &(u8, Vec<u8>)| {
        packet.0 >> 4 == 3
            && String::from_utf8_lossy(&packet.1).contains("d/plant/sensor-a/commands/resend")
    };
    let mut first = subscribed(&addr, &keep, "d/plant/sensor-a/commands/+");
    create_command(&plant, "resend", "sensor-a", 120);
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let sent = read_packet(&mut first).expect("the command");
    assert!(command_topic(&sent), "{sent:?}");
    assert_eq!(sent.0 & 0x06, 0x02, "QoS 1");
    drop(first); // gone without acknowledging it

    let (mut second, connack) = raw_session(&addr, &keep.packet());
    assert_eq!(connack, vec![1, 0], "session present");
    let again = read_packet(&mut second).expect("the command again");
    assert!(command_topic(&again), "{again:?}");
}

/// A QoS 0 PUBLISH.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    body.extend(payload);
    let mut packet = vec![0x30];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    packet
}

#[test]
fn the_first_of_two_answers_to_a_command_in_one_write_stands() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let (mut device, _) = raw_session(&addr, &connect_packet(4, "plant/sensor-a", &a));
    device
        .write_all(&subscribe_packet(&[("d/plant/sensor-a/commands/+", 0)]))
        .expect("subscribe");
    assert_eq!(read_packet(&mut device).map(|p| p.0), Some(0x90), "SUBACK");
    device
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let receive = |device: &mut TcpStream, name: &str| {
        let command = read_packet(device).expect("a command");
        assert!(
            String::from_utf8_lossy(&command.1).contains(&format!("commands/{name}")),
            "{command:?}"
        );
    };
    create_command(&plant, "twice", "sensor-a", 120);
    receive(&mut device, "twice");
    // Both answers arrive together, before the first has been written anywhere.
    let topic = "d/plant/sensor-a/commands/twice/response";
    let mut both = publish_packet(topic, br#"{"status":"Succeeded","output":{"uptime":1}}"#);
    both.extend(publish_packet(
        topic,
        br#"{"status":"Failed","message":"late"}"#,
    ));
    device.write_all(&both).expect("answers");
    // Answers are written in order: once the next command's shows, so would a second one.
    create_command(&plant, "after", "sensor-a", 120);
    receive(&mut device, "after");
    device
        .write_all(&publish_packet(
            "d/plant/sensor-a/commands/after/response",
            br#"{"status":"Succeeded","output":{"uptime":2}}"#,
        ))
        .expect("answer");
    wait_until(
        "the later command answered",
        Duration::from_secs(30),
        || plant.jsonpath("devicecommand", "plant", "after", "{.status.phase}") == "Succeeded",
    );
    assert_eq!(
        plant.jsonpath("devicecommand", "plant", "twice", "{.status.phase}"),
        "Succeeded"
    );
}

#[test]
fn a_will_on_the_devices_own_topic_goes_northbound_and_a_foreign_will_is_refused() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/+/telemetry", "20");

    let mut foreign = RawConnect::new("plant/sensor-a", &a);
    foreign.will = Some((
        "d/plant/sensor-b/telemetry",
        br#"{"points":{"temperature":1}}"#,
    ));
    let (_, connack) = raw_session(&addr, &foreign.packet());
    assert_eq!(connack, vec![0, 5], "not authorized");

    let mut own = RawConnect::new("plant/sensor-a", &a);
    own.will = Some((
        "d/plant/sensor-a/telemetry",
        br#"{"points":{"temperature":-7.5}}"#,
    ));
    let (stream, connack) = raw_session(&addr, &own.packet());
    assert_eq!(connack, vec![0, 0]);
    drop(stream); // gone without DISCONNECT: the will is due
    let will = reader.wait_for_line("the will northbound", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
    });
    assert!(will.contains(r#""temperature":-7.5"#), "{will}");
}

#[test]
fn a_v5_session_ended_by_an_empty_disconnect_leaves_no_will() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/+/telemetry", "20");
    let with_will = |temperature: &'static [u8]| {
        let mut connect = RawConnect::new("plant/sensor-a", &a).level(5);
        connect.will = Some(("d/plant/sensor-a/telemetry", temperature));
        connect.packet()
    };
    // Ended cleanly with the shortest DISCONNECT (no reason code: normal disconnection), as
    // paho and mosquitto send it: the will is discarded.
    let (mut clean, connack) = raw_session(&addr, &with_will(br#"{"points":{"temperature":1}}"#));
    assert_eq!(connack[..2], [0, 0], "v5 CONNACK: accepted");
    clean.write_all(&[0xe0, 0x00]).expect("DISCONNECT");
    clean
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(
        read_packet(&mut clean).is_none(),
        "the server closes the connection without a DISCONNECT of its own"
    );
    // Gone without DISCONNECT: this will is due, and it is the first one northbound.
    let (gone, _) = raw_session(&addr, &with_will(br#"{"points":{"temperature":2}}"#));
    drop(gone);
    let will = reader.wait_for_line("a will northbound", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
    });
    assert!(will.contains(r#""temperature":2"#), "{will}");
}

#[test]
fn a_second_connection_of_the_same_device_takes_over_the_first() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let first = Background::spawn(plant.paho("plant/sensor-a", &a, "5", &["respond", "30", "{}"]));
    first.wait_for_line("subscribed", Duration::from_secs(20), |l| l == "subscribed");
    let output = run_with_timeout(
        plant.paho(
            "plant/sensor-a",
            &a,
            "3",
            &[
                "publish",
                "d/plant/sensor-a/telemetry",
                r#"{"points":{"temperature":2}}"#,
            ],
        ),
        Duration::from_secs(20),
    );
    assert!(
        stdout(&output).contains("puback 0 0"),
        "{}",
        stdout(&output)
    );
    let line = first.wait_for_line("the takeover", Duration::from_secs(10), |l| {
        l.starts_with("disconnected")
    });
    assert_eq!(
        line, "disconnected 142",
        "v5 DISCONNECT 0x8E session taken over"
    );
}

#[test]
fn qos_2_is_refused_and_limits_answer_with_reasons() {
    let plant = Plant::start();
    let addr = plant.devplane.mqtt_addr();
    let a = plant.password("plant", "sensor-a");
    // A QoS 2 subscription is granted as QoS 1; 17 filters get 16 grants and one refusal.
    let (mut stream, _) = raw_session(&addr, &connect_packet(4, "plant/sensor-a", &a));
    stream
        .write_all(&subscribe_packet(&[("d/plant/sensor-a/commands/+", 2)]))
        .expect("subscribe");
    assert_eq!(read_packet(&mut stream), Some((0x90, vec![0, 1, 1])));
    let filters: Vec<String> = (0..17).map(|i| format!("d/plant/sensor-a/x{i}")).collect();
    let filters: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
    stream
        .write_all(&subscribe_packet(&filters))
        .expect("subscribe");
    let (kind, body) = read_packet(&mut stream).expect("SUBACK");
    assert_eq!(kind, 0x90);
    assert_eq!(&body[2..18], &[0u8; 16], "16 granted");
    assert_eq!(body[18], 0x80, "the 17th refused");
    // A session holds at most 64 filters (17 so far): three more SUBSCRIBEs of 16 new ones
    // get 47 grants, then the quota refuses; a filter it holds can still be subscribed to
    // again (its QoS changes).
    let mut granted = 0;
    let mut refused = 0;
    for round in 0..3 {
        let filters: Vec<String> = (0..16)
            .map(|i| format!("d/plant/sensor-a/y{round}/{i}"))
            .collect();
        let filters: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
        stream
            .write_all(&subscribe_packet(&filters))
            .expect("subscribe");
        let (kind, body) = read_packet(&mut stream).expect("SUBACK");
        assert_eq!(kind, 0x90);
        granted += body[2..].iter().filter(|c| **c == 0).count();
        refused += body[2..].iter().filter(|c| **c == 0x80).count();
    }
    assert_eq!(
        (granted, refused),
        (47, 1),
        "64 filters held, the 65th refused"
    );
    stream
        .write_all(&subscribe_packet(&[("d/plant/sensor-a/x0", 1)]))
        .expect("subscribe");
    assert_eq!(
        read_packet(&mut stream),
        Some((0x90, vec![0, 1, 1])),
        "a held filter is granted again"
    );
    // A QoS 2 PUBLISH closes the connection.
    let topic = b"d/plant/sensor-a/telemetry";
    let mut publish = vec![0x34, (2 + topic.len() + 2 + 2) as u8, 0, topic.len() as u8];
    publish.extend(topic);
    publish.extend([0, 9, b'{', b'}']);
    stream.write_all(&publish).expect("publish");
    assert!(read_packet(&mut stream).is_none(), "closed without PUBREC");
    // A silent client with keepalive 1 s is closed after 1.5 s.
    let mut quick = RawConnect::new("plant/sensor-a", &a);
    quick.keep_alive = 1;
    let (mut silent, connack) = raw_session(&addr, &quick.packet());
    assert_eq!(connack, vec![0, 0]);
    let started = Instant::now();
    assert!(read_packet(&mut silent).is_none());
    assert!(
        started.elapsed() < Duration::from_millis(4900),
        "closed by keepalive, not by the 5 s read timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn revoking_the_secret_or_deleting_the_device_ends_the_session() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let b = plant.password("plant", "sensor-b");
    let on_a = Background::spawn(plant.paho("plant/sensor-a", &a, "5", &["respond", "60", "{}"]));
    let on_b = Background::spawn(plant.paho("plant/sensor-b", &b, "5", &["respond", "60", "{}"]));
    on_a.wait_for_line("a subscribed", Duration::from_secs(20), |l| {
        l == "subscribed"
    });
    on_b.wait_for_line("b subscribed", Duration::from_secs(20), |l| {
        l == "subscribed"
    });
    plant
        .devplane
        .kubectl_ok(&["delete", "secret", "sensor-a-credentials", "-n", "plant"]);
    let line = on_a.wait_for_line("a closed", Duration::from_secs(10), |l| {
        l.starts_with("disconnected")
    });
    assert_eq!(
        line, "disconnected 135",
        "not authorized: credentials revoked"
    );
    plant.devplane.kubectl_ok(&[
        "delete",
        "device",
        "sensor-b",
        "-n",
        "plant",
        "--wait=false",
    ]);
    let line = on_b.wait_for_line("b closed", Duration::from_secs(10), |l| {
        l.starts_with("disconnected")
    });
    assert!(
        line == "disconnected 152" || line == "disconnected 135",
        "closed on deletion: {line}"
    );
    // The controller issues sensor-a a new password; the old one stays refused.
    wait_until("a new Secret", Duration::from_secs(30), || {
        !plant.password_or_empty("plant", "sensor-a").is_empty()
    });
    let fresh = plant.password("plant", "sensor-a");
    assert_ne!(fresh, a);
    assert_eq!(connack(&plant, "plant/sensor-a", &a, "5"), "connack 134");
    assert_eq!(connack(&plant, "plant/sensor-a", &fresh, "5"), "connack 0");
}

#[test]
fn a_rotated_password_keeps_working_through_the_overlap() {
    let plant = Plant::start();
    let old = plant.password("plant", "sensor-a");
    plant.devplane.kubectl_ok(&[
        "annotate",
        "device",
        "sensor-a",
        "-n",
        "plant",
        "iot.devplane.io/rotate-credentials=1",
    ]);
    wait_until("the rotated Secret", Duration::from_secs(30), || {
        plant.password("plant", "sensor-a") != old
    });
    let new = plant.password("plant", "sensor-a");
    wait_until(
        "the front door sees the rotation",
        Duration::from_secs(10),
        || connack(&plant, "plant/sensor-a", &new, "5") == "connack 0",
    );
    assert_eq!(
        connack(&plant, "plant/sensor-a", &old, "5"),
        "connack 0",
        "overlap"
    );
}

#[test]
fn devices_connect_over_mqtts_and_https_with_devplanes_ca() {
    let plant = Plant::start_with(&["--mqtts-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"]);
    let tls = plant
        .devplane
        .printed_address("device MQTT over TLS listening on mqtts://");
    let endpoint = plant
        .devplane
        .secret_value("plant", "sensor-a-credentials", "mqtts-endpoint");
    assert_eq!(endpoint, format!("mqtts://{tls}"));
    let (host, port) = Plant::host_port(&tls);
    let a = plant.password("plant", "sensor-a");
    let ca = plant.devplane.dir.join("pki/ca.crt");
    let publish = |cafile: &std::path::Path| {
        let mut command = Command::new("mosquitto_pub");
        command
            .args(["-h", &host, "-p", &port, "-u", "plant/sensor-a", "-P", &a])
            .arg("--cafile")
            .arg(cafile)
            .args(["-q", "1", "-t", "d/plant/sensor-a/telemetry"])
            .args(["-m", r#"{"points":{"temperature":4}}"#]);
        run_with_timeout(command, Duration::from_secs(20))
    };
    let output = publish(&ca);
    assert!(output.status.success(), "TLS publish: {}", stderr(&output));
    // A client that trusts only the system's CAs, not devplane's, does not get through.
    let output = publish(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"));
    assert!(!output.status.success(), "an unknown CA is refused");

    // HTTPS: the same routes as HTTP, with the same certificate.
    let https = plant
        .devplane
        .printed_address("device HTTP over TLS listening on https://");
    let endpoint = plant
        .devplane
        .secret_value("plant", "sensor-a-credentials", "https-endpoint");
    assert_eq!(endpoint, format!("https://{https}"));
    let post = |cafile: &std::path::Path, password: &str| {
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--max-time",
                "20",
                "--cacert",
            ])
            .arg(cafile)
            .args(["-u", &format!("plant/sensor-a:{password}")])
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", r#"{"points":{"temperature":5}}"#])
            .arg(format!(
                "https://{https}/v1/devices/plant/sensor-a/telemetry"
            ));
        run_with_timeout(command, Duration::from_secs(25))
    };
    let output = post(&ca, &a);
    assert!(
        stdout(&output).ends_with("202"),
        "HTTPS telemetry: {} {}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&post(&ca, "wrong")).ends_with("401"));
    let output = post(
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"),
        &a,
    );
    assert!(
        !output.status.success(),
        "curl refuses a certificate it cannot verify"
    );
}

#[test]
fn simulated_devices_publish_report_desired_values_and_get_rejections_counted() {
    let plant = Plant::start();
    for protocol in ["mqtt", "http"] {
        let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
            .args([
                "simulate", "-n", "plant", "--model", "probe", "--count", "3",
            ])
            .args(["--protocol", protocol])
            .args(["--rate", "30", "--invalid-share", "0.3", "--duration", "4"])
            .arg("--kubeconfig")
            .arg(plant.devplane.kubeconfig())
            .output()
            .expect("devplane simulate runs");
        let summary = stdout(&output);
        assert!(output.status.success(), "{summary}\n{}", stderr(&output));
        assert!(
            summary.contains("connected 3/3 (failed 0)"),
            "{protocol}: {summary}"
        );
        assert!(
            summary.contains("desired reported 3"),
            "{protocol}: {summary}"
        );
        assert!(
            number_after(&summary, "· accepted ") > 0,
            "{protocol}: {summary}"
        );
        assert!(
            number_after(&summary, "· rejected ") > 0,
            "{protocol}: {summary}"
        );
        assert!(summary.contains("InvalidValue"), "{protocol}: {summary}");
    }
    plant.wait_device("probe-sim-0001", "--for=jsonpath={.status.phase}=Servicing");
}

/// The number after `label` in a `devplane simulate` summary.
pub(super) fn number_after(summary: &str, label: &str) -> u64 {
    summary
        .split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn data_of_a_device_in_maintenance_is_marked_northbound() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/sensor-a/#", "30");
    let publish = |value: &str| {
        let output = run_with_timeout(
            plant.paho(
                "plant/sensor-a",
                &a,
                "5",
                &[
                    "publish",
                    "d/plant/sensor-a/telemetry",
                    &format!(r#"{{"points":{{"temperature":{value}}}}}"#),
                ],
            ),
            Duration::from_secs(20),
        );
        assert!(
            stdout(&output).contains("puback 0 0"),
            "{}",
            stdout(&output)
        );
    };
    publish("11");
    plant.wait_device("sensor-a", "--for=jsonpath={.status.phase}=Servicing");
    plant.patch_device("sensor-a", r#"{"spec":{"lifecycle":"Maintenance"}}"#);
    reader.wait_for_line(
        "the lifecycle change northbound",
        Duration::from_secs(20),
        |l| {
            l.starts_with("message north/plant/sensor-a/lifecycle ")
                && l.contains(r#""lifecycle":"Maintenance""#)
        },
    );
    publish("12");
    let marked = reader.wait_for_line("the marked sample", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
            && l.contains(r#""temperature":12"#)
    });
    assert!(marked.contains(r#""maintenance":true"#), "{marked}");
    let before = reader
        .lines()
        .into_iter()
        .find(|l| {
            l.starts_with("message north/plant/sensor-a/telemetry ")
                && l.contains(r#""temperature":11"#)
        })
        .expect("the first sample");
    assert!(!before.contains("maintenance"), "{before}");
}
