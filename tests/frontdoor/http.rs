//! Devices over HTTP, with curl: Basic authentication with the device's Secret, validated
//! uplink (202 / 400 / 401 / 403 / 413), desired attributes and commands by long poll.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::support::{stdout, wait_until};

impl Plant {
    /// curl against the device HTTP listener; returns the status code and the body.
    pub(super) fn http(
        &self,
        method: &str,
        path: &str,
        login: Option<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        self.http_command(method, path, login, body)
            .output()
            .map(|output| split_status(&stdout(&output)))
            .expect("curl runs")
    }

    fn http_command(
        &self,
        method: &str,
        path: &str,
        login: Option<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> Command {
        let addr = self
            .devplane
            .printed_address("device HTTP listening on http://");
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
                "--max-time",
                "60",
            ])
            .args(["-H", "Content-Type: application/json"]);
        if let Some((user, password)) = login {
            command.args(["-u", &format!("{user}:{password}")]);
        }
        if let Some(body) = body {
            let file = self.devplane.dir.join(format!("body-{}.json", body.len()));
            std::fs::write(&file, body).expect("body file");
            command
                .arg("--data-binary")
                .arg(format!("@{}", file.display()));
        }
        command.arg(format!("http://{addr}{path}"));
        command
    }
}

fn split_status(text: &str) -> (u16, String) {
    let (body, code) = text.rsplit_once('\n').unwrap_or((text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn http_devices_post_validated_data_with_their_own_credentials_only() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let reader = plant.north_reader("north/plant/+/telemetry", "30");
    let login = Some(("plant/sensor-a", a.as_str()));
    let path = "/v1/devices/plant/sensor-a/telemetry";

    let (code, body) = plant.http(
        "POST",
        path,
        login,
        Some(br#"{"points":{"temperature":19.5}}"#),
    );
    assert_eq!(code, 202, "{body}");
    let seen = reader.wait_for_line("the HTTP sample northbound", Duration::from_secs(20), |l| {
        l.starts_with("message north/plant/sensor-a/telemetry ")
    });
    assert!(seen.contains(r#""temperature":19.5"#), "{seen}");

    let (code, body) = plant.http(
        "POST",
        path,
        login,
        Some(br#"{"points":{"temperature":5000}}"#),
    );
    assert_eq!(code, 400, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).expect("a JSON problem");
    assert_eq!(problem["reason"], "InvalidValue");
    assert_eq!(problem["field"], "points.temperature");
    let (code, body) = plant.http("POST", path, login, Some(b"{not json"));
    assert_eq!((code, body.contains("InvalidJson")), (400, true), "{body}");

    let (code, _) = plant.http("POST", path, Some(("plant/sensor-a", "wrong")), Some(b"{}"));
    assert_eq!(code, 401, "wrong password");
    let (code, _) = plant.http("POST", path, None, Some(b"{}"));
    assert_eq!(code, 401, "no credentials");
    let (code, body) = plant.http(
        "POST",
        "/v1/devices/plant/sensor-b/telemetry",
        login,
        Some(br#"{"points":{"temperature":1}}"#),
    );
    assert_eq!(code, 403, "another device's path: {body}");
    assert!(body.contains("ForeignTopic"), "{body}");
    let big = format!(
        r#"{{"points":{{"temperature":1}},"pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let (code, _) = plant.http("POST", path, login, Some(big.as_bytes()));
    assert_eq!(code, 413, "oversize");

    // Malformed requests get clear answers, and the server keeps serving.
    let addr = plant
        .devplane
        .printed_address("device HTTP listening on http://");
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("plant/sensor-a:{a}"))
    };
    let text = raw_http(
        &addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        )
        .as_bytes(),
        false,
    );
    assert!(
        text.starts_with("HTTP/1.1 415") && text.contains("UnsupportedContentType"),
        "{text}"
    );
    let truncated = raw_http(
        &addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"points\""
        )
        .as_bytes(),
        true,
    );
    assert!(
        !truncated.starts_with("HTTP/1.1 202"),
        "a body cut short is not accepted: {truncated}"
    );
    let garbage = raw_http(&addr, b"\x16\x03\x01\x00\xff garbage\r\n\r\n", true);
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let (code, body) = plant.http(
        "POST",
        path,
        login,
        Some(br#"{"points":{"temperature":20}}"#),
    );
    assert_eq!(code, 202, "still serving: {body}");

    // Presence follows the requests, with the protocol.
    plant.wait_device("sensor-a", "--for=condition=Connected");
    assert_eq!(
        plant.jsonpath(
            "device",
            "plant",
            "sensor-a",
            "{.status.connection.protocol}"
        ),
        "http"
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
fn http_devices_read_desired_values_and_long_poll_for_commands() {
    let plant = Plant::start();
    let a = plant.password("plant", "sensor-a");
    let login = Some(("plant/sensor-a", a.as_str()));
    let (code, body) = plant.http(
        "GET",
        "/v1/devices/plant/sensor-a/attributes/desired",
        login,
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, r#"{"generation":1,"values":{"interval":60}}"#);

    let poll = plant
        .http_command(
            "GET",
            "/v1/devices/plant/sensor-a/commands?waitSeconds=30",
            login,
            None,
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    // Whether the command comes before or during the poll, the poll returns it.
    plant.devplane.apply_yaml(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {name: over-http, namespace: plant}
spec: {device: sensor-a, service: reboot, params: {delay: 1}, timeoutSeconds: 60}
"#,
    );
    let output = poll.wait_with_output().expect("the long poll ends");
    let (code, body) = split_status(&stdout(&output));
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["commands"][0]["name"], "over-http", "{body}");
    assert_eq!(answer["commands"][0]["params"]["delay"], 1, "{body}");
    wait_until("the command Sent", Duration::from_secs(20), || {
        plant.jsonpath("devicecommand", "plant", "over-http", "{.status.phase}") == "Sent"
    });
    let (code, body) = plant.http(
        "POST",
        "/v1/devices/plant/sensor-a/commands/over-http/response",
        login,
        Some(br#"{"status":"Succeeded","output":{"uptime":99}}"#),
    );
    assert_eq!(code, 202, "{body}");
    plant.devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "devicecommand/over-http",
        "-n",
        "plant",
        "--timeout=30s",
    ]);
    assert_eq!(
        plant.jsonpath(
            "devicecommand",
            "plant",
            "over-http",
            "{.status.output.uptime}"
        ),
        "99"
    );
    // An empty long poll ends after its wait with no commands.
    let (code, body) = plant.http(
        "GET",
        "/v1/devices/plant/sensor-a/commands?waitSeconds=1",
        login,
        None,
    );
    assert_eq!((code, body.as_str()), (200, r#"{"commands":[]}"#));
}

#[test]
fn an_http_client_that_never_finishes_its_request_head_is_closed() {
    use std::io::{Read, Write};
    let plant = Plant::start();
    let addr = plant
        .devplane
        .printed_address("device HTTP listening on http://");
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(b"POST /v1/devices/plant/sensor-a/telemetry HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    // The head never ends: the server closes the connection after its connect timeout (10 s).
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "still open after {waited:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// Write `request` on a new connection, close the writing side if `eof`, and read the answer.
fn raw_http(addr: &str, request: &[u8], eof: bool) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    if eof {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
