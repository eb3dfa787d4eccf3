//! Devices over CoAP, with real clients: Debian's coap-client (libcoap 4.3.1, OpenSSL and
//! GnuTLS builds) over DTLS 1.2 with the device's password as pre-shared key, Python aiocoap
//! over plain CoAP (insecure dev mode) for Observe, and raw UDP datagrams for malformed input.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::support::{stdout, wait_until};

/// The libcoap client builds Debian ships (`coap-client` itself is not installed by name).
pub(super) const OPENSSL: &str = "coap-client-openssl";
const GNUTLS: &str = "coap-client-gnutls";

impl Plant {
    fn coaps_addr(&self) -> String {
        self.devplane
            .printed_address("device CoAP over DTLS listening on coaps://")
    }

    fn coap_addr(&self) -> String {
        self.devplane
            .printed_address("device CoAP (insecure, dev only) listening on coap://")
    }

    /// coap-client over DTLS as `identity` with `key`; returns stdout and stderr together
    /// (`-v 6` prints the answer's header, e.g. `t:ACK c:2.04`, and its payload).
    pub(super) fn coap_client(
        &self,
        binary: &str,
        (identity, key): (&str, &str),
        method: &str,
        path: &str,
        payload: Option<&str>,
    ) -> String {
        let mut command = self.coap_client_command(binary, (identity, key), method, path);
        if let Some(payload) = payload {
            command.args(["-e", payload]);
        }
        let output = run_with_timeout(command, Duration::from_secs(30));
        format!(
            "{}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn coap_client_command(
        &self,
        binary: &str,
        (identity, key): (&str, &str),
        method: &str,
        path: &str,
    ) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["-v", "6", "-B", "20", "-m", method])
            .args(["-k", key, "-u", identity])
            .arg(format!("coaps://{}/{path}", self.coaps_addr()));
        command
    }
}

#[test]
fn coap_client_with_the_device_psk_posts_validated_telemetry_and_only_for_itself() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/+/telemetry", "40");
    let me = ("plant/sensor-a", a.as_str());
    let path = "d/plant/sensor-a/telemetry";

    let out = plant.coap_client(
        OPENSSL,
        me,
        "post",
        path,
        Some(r#"{"points":{"temperature":19.5}}"#),
    );
    assert!(out.contains("c:2.04"), "{out}");
    let seen = reader.wait_for_line("the CoAP sample northbound", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
    });
    assert!(seen.contains(r#""temperature":19.5"#), "{seen}");
    // The GnuTLS build too.
    let out = plant.coap_client(
        GNUTLS,
        me,
        "post",
        path,
        Some(r#"{"points":{"temperature":20.5}}"#),
    );
    assert!(out.contains("c:2.04"), "{out}");

    let out = plant.coap_client(
        OPENSSL,
        me,
        "post",
        path,
        Some(r#"{"points":{"temperature":5000}}"#),
    );
    assert!(out.contains("c:4.00"), "{out}");
    assert!(
        out.contains(r#""reason":"InvalidValue""#) && out.contains("points.temperature"),
        "{out}"
    );

    // Another device's path with a valid key: 4.03, counted as a denial.
    let before = denied_count(&plant.devplane.metrics(), "ForeignTopic");
    let out = plant.coap_client(
        OPENSSL,
        me,
        "post",
        "d/plant/sensor-b/telemetry",
        Some(r#"{"points":{"temperature":1}}"#),
    );
    assert!(out.contains("c:4.03"), "{out}");
    assert!(out.contains("ForeignTopic"), "{out}");
    assert_eq!(
        denied_count(&plant.devplane.metrics(), "ForeignTopic"),
        before + 1
    );

    // A wrong key fails the handshake: no answer at all.
    let out = plant.coap_client(
        OPENSSL,
        ("plant/sensor-a", "not-the-password"),
        "post",
        path,
        Some(r#"{"points":{"temperature":1}}"#),
    );
    assert!(!out.contains("c:2.04") && !out.contains("t:ACK"), "{out}");
    assert!(out.to_lowercase().contains("alert"), "{out}");

    // Presence follows the requests, with the protocol.
    plant.wait_device("sensor-a", "--for=condition=Connected");
    assert_eq!(
        plant.jsonpath(
            "device",
            "plant",
            "sensor-a",
            "{.status.connection.protocol}"
        ),
        "coap"
    );
    // The Secret tells the device where CoAP over DTLS is.
    assert_eq!(
        plant
            .devplane
            .secret_value("plant", "sensor-a-credentials", "coaps-endpoint"),
        format!("coaps://{}", plant.coaps_addr())
    );
    std::thread::sleep(Duration::from_millis(300));
    let north: Vec<String> = reader
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("message "))
        .collect();
    assert_eq!(
        north.len(),
        2,
        "only the valid samples went northbound: {north:?}"
    );
}

#[test]
fn commands_reach_a_coap_observer_over_dtls_and_its_answer_completes_them() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let me = ("plant/sensor-a", a.as_str());
    // coap-client observes the commands resource for 40 s (`-s`).
    let mut command = plant.coap_client_command(OPENSSL, me, "get", "d/plant/sensor-a/commands");
    command.args(["-s", "40"]);
    let observer = Background::spawn(command);
    observer.wait_for_line(
        "the observation's first answer",
        Duration::from_secs(20),
        |l| l.contains(r#"{"commands":[]}"#),
    );
    create_command(&plant, "over-coap", "sensor-a", 60);
    let pushed = observer.wait_for_line("the command notification", Duration::from_secs(30), |l| {
        l.contains(r#""name":"over-coap""#)
    });
    assert!(pushed.contains(r#""service":"reboot""#), "{pushed}");
    wait_phase(&plant, "over-coap", "Sent");
    let out = plant.coap_client(
        OPENSSL,
        me,
        "post",
        "d/plant/sensor-a/commands/over-coap/response",
        Some(r#"{"status":"Succeeded","output":{"uptime":7}}"#),
    );
    assert!(out.contains("c:2.04"), "{out}");
    wait_phase(&plant, "over-coap", "Succeeded");
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "over-coap",
            "{.status.output.uptime}"
        ),
        "7"
    );
    // The answer came over a second DTLS session of the device; the observing one stays.
    create_command(&plant, "again-over-coap", "sensor-a", 60);
    observer.wait_for_line(
        "the next command notification",
        Duration::from_secs(30),
        |l| l.contains(r#""name":"again-over-coap""#),
    );
}

#[test]
fn an_aiocoap_observer_receives_a_desired_change_made_with_kubectl() {
    let plant = Plant::start_with(&["--coap-insecure-dev"]);
    let uri = format!(
        "coap://{}/d/plant/sensor-a/attributes/desired",
        plant.coap_addr()
    );
    let mut command = Command::new("python3");
    command
        .arg(repo().join("tests/python/coap_observe.py"))
        .args([&uri, "40"]);
    let observer = Background::spawn(command);
    let first = observer.wait_for_line("the first answer", Duration::from_secs(20), |l| {
        l.starts_with("response ")
    });
    assert_eq!(
        first,
        r#"response 2.05 {"generation":1,"values":{"interval":60}}"#
    );
    plant.patch_device("sensor-a", r#"{"spec":{"desired":{"interval":120}}}"#);
    let pushed = observer.wait_for_line("the desired notification", Duration::from_secs(30), |l| {
        l.starts_with("notification ")
    });
    assert_eq!(
        pushed,
        r#"notification {"generation":2,"values":{"interval":120}}"#
    );
}

/// A raw CoAP client over UDP (read timeout 5 s).
struct Raw {
    socket: UdpSocket,
}

impl Raw {
    fn new(addr: &str) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Raw { socket }
    }

    fn send(&self, datagram: &[u8]) {
        self.socket.send(datagram).expect("send");
    }

    /// The next datagram (None after the read timeout).
    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        let n = self.socket.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

/// A confirmable POST with token `[id]` and the given extra options (number, value), which
/// must come after Uri-Path (11) and in ascending order.
fn raw_post(id: u16, path: &str, options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    let [high, low] = id.to_be_bytes();
    let mut out = vec![0x41, 0x02, high, low, id as u8];
    let mut last = 0u16;
    let mut option = |out: &mut Vec<u8>, number: u16, value: &[u8]| {
        let delta = number - last;
        last = number;
        assert!(delta < 13 && value.len() < 269, "short options only");
        if value.len() < 13 {
            out.push(((delta as u8) << 4) | value.len() as u8);
        } else {
            out.push(((delta as u8) << 4) | 13);
            out.push((value.len() - 13) as u8);
        }
        out.extend(value);
    };
    for segment in path.split('/') {
        option(&mut out, 11, segment.as_bytes());
    }
    for (number, value) in options {
        option(&mut out, *number, value);
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend(payload);
    }
    out
}

/// The type, code (`c.dd`) and message ID of an answer, and its payload.
fn parse(datagram: &[u8]) -> (u8, String, u16, String) {
    let kind = (datagram[0] >> 4) & 0b11;
    let code = format!("{}.{:02}", datagram[1] >> 5, datagram[1] & 0x1f);
    let id = u16::from_be_bytes([datagram[2], datagram[3]]);
    let payload = datagram
        .iter()
        .position(|b| *b == 0xff)
        .map(|at| String::from_utf8_lossy(&datagram[at + 1..]).into_owned())
        .unwrap_or_default();
    (kind, code, id, payload)
}

const ACK: u8 = 2;
const RST: u8 = 3;

#[test]
fn malformed_coap_datagrams_get_clear_errors_and_the_server_keeps_serving() {
    let plant = Plant::start_with(&["--coap-insecure-dev"]);
    let raw = Raw::new(&plant.coap_addr());
    let telemetry = "d/plant/sensor-a/telemetry";
    let valid = br#"{"points":{"temperature":20}}"#;

    // Truncated: the token is announced as 8 bytes, 2 are there. A format error: reset.
    raw.send(&[0x48, 0x02, 0x00, 0x01, 0xaa, 0xbb]);
    let (kind, code, id, _) = parse(&raw.recv().expect("a reset"));
    assert_eq!((kind, code.as_str(), id), (RST, "0.00", 1));

    // Another CoAP version is silently ignored (RFC 7252 §3): the next answer is the valid
    // request's.
    let mut bad_version = raw_post(2, telemetry, &[], valid);
    bad_version[0] = (bad_version[0] & 0x3f) | 0x80;
    raw.send(&bad_version);
    raw.send(&raw_post(3, telemetry, &[], valid));
    let (kind, code, id, _) = parse(&raw.recv().expect("an answer"));
    assert_eq!((kind, code.as_str(), id), (ACK, "2.04", 3));

    // Content-Format text/plain (0) on a JSON resource: 4.15 with the reason.
    raw.send(&raw_post(4, telemetry, &[(12, &[])], b"21.5"));
    let (_, code, id, payload) = parse(&raw.recv().expect("an answer"));
    assert_eq!((code.as_str(), id), ("4.15", 4), "{payload}");
    assert!(payload.contains("UnsupportedContentFormat"), "{payload}");

    // Oversize: 4.13 with the reason.
    let big = vec![b' '; 20 * 1024];
    raw.send(&raw_post(5, telemetry, &[], &big));
    let (_, code, id, payload) = parse(&raw.recv().expect("an answer"));
    assert_eq!((code.as_str(), id), ("4.13", 5), "{payload}");
    assert!(payload.contains("PayloadTooLarge"), "{payload}");

    // Not JSON at all: 4.00, as HTTP's 400.
    raw.send(&raw_post(6, telemetry, &[(12, &[50])], b"{not json"));
    let (_, code, _, payload) = parse(&raw.recv().expect("an answer"));
    assert_eq!(code, "4.00", "{payload}");
    assert!(payload.contains("InvalidJson"), "{payload}");

    // A planned device may not send, even when the path is trusted.
    raw.send(&raw_post(7, "d/plant/sensor-planned/telemetry", &[], valid));
    let (_, code, _, payload) = parse(&raw.recv().expect("an answer"));
    assert_eq!(code, "4.03", "{payload}");
    assert!(payload.contains("NotAuthorized"), "{payload}");

    // A duplicate gets the same answer, and the server still serves.
    raw.send(&raw_post(3, telemetry, &[], valid));
    let (kind, code, id, _) = parse(&raw.recv().expect("the answer again"));
    assert_eq!((kind, code.as_str(), id), (ACK, "2.04", 3));
    raw.send(&raw_post(8, telemetry, &[], valid));
    let (_, code, id, _) = parse(&raw.recv().expect("an answer"));
    assert_eq!((code.as_str(), id), ("2.04", 8));
    wait_until(
        "the protocol errors counted",
        Duration::from_secs(10),
        || {
            let metrics = plant.devplane.metrics();
            metric_value(
                &metrics,
                "devplane_frontdoor_protocol_errors_total{reason=\"CoapBadVersion\"} ",
            ) == 1
                && metric_value(
                    &metrics,
                    "devplane_frontdoor_protocol_errors_total{reason=\"CoapMalformed\"} ",
                ) == 1
        },
    );
}

#[test]
fn simulated_coap_devices_send_over_dtls_report_desired_values_and_get_rejections_counted() {
    let plant = Plant::start();
    let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args([
            "simulate", "-n", "plant", "--model", "probe", "--count", "3",
        ])
        .args(["--protocol", "coap"])
        .args(["--rate", "30", "--invalid-share", "0.3", "--duration", "4"])
        .arg("--kubeconfig")
        .arg(plant.devplane.kubeconfig())
        .output()
        .expect("devplane simulate runs");
    let summary = stdout(&output);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{summary}\n{errors}");
    assert!(summary.contains("connected 3/3 (failed 0)"), "{summary}");
    assert!(summary.contains("desired reported 3"), "{summary}");
    let number_after = |label: &str| -> u64 {
        summary
            .split(label)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(number_after("· accepted ") > 0, "{summary}");
    assert!(number_after("· rejected ") > 0, "{summary}");
    assert!(summary.contains("InvalidValue"), "{summary}");
    plant.wait_device("probe-sim-0001", "--for=jsonpath={.status.phase}=Servicing");
    assert_eq!(
        plant.jsonpath(
            "device",
            "plant",
            "probe-sim-0001",
            "{.status.connection.protocol}"
        ),
        "coap"
    );
}
