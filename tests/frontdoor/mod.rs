//! The device front door against `devplane up`, with real clients: Debian's mosquitto_pub and
//! mosquitto_sub (MQTT 3.1.1 and 5), Python paho-mqtt 2.x, curl, Debian's coap-client and
//! Python aiocoap, and raw sockets for malformed packets. Each test starts its own
//! `devplane up` with the fixture below; this module holds the fixture and the client helpers.

mod coap;
mod devices;
mod enos;
mod gateways;
mod http;
mod protocols;
mod provisioning;
mod sessions;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Background, Devplane, READY_TIMEOUT, repo, stdout, wait_until};

/// Two namespaces, a model with every kind of feature, devices in each lifecycle, and an
/// application per namespace.
const FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: plant}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: probe, namespace: plant}
spec:
  version: 1.0.0
  attributes:
    - identifier: interval
      dataType: {type: int, unit: s, min: 10, max: 600}
      writable: true
  measurePoints:
    - identifier: temperature
      dataType: {type: double, unit: Cel, min: -40, max: 85}
    - identifier: mode
      dataType:
        type: enum
        enumValues: [{value: eco}, {value: boost}]
  services:
    - identifier: reboot
      inputs:
        - identifier: delay
          dataType: {type: int, min: 0}
      outputs:
        - identifier: uptime
          dataType: {type: int, min: 0}
          required: true
  events:
    - identifier: overheat
      outputs:
        - identifier: peak
          dataType: {type: double}
          required: true
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: sensor-a, namespace: plant}
spec:
  modelRef: {name: probe}
  desired: {interval: 60}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: sensor-b, namespace: plant}
spec:
  modelRef: {name: probe}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: sensor-planned, namespace: plant}
spec:
  modelRef: {name: probe}
  lifecycle: Planned
---
apiVersion: iot.devplane.io/v1alpha1
kind: Application
metadata: {name: dash, namespace: plant}
spec:
  description: the plant dashboard
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: probe, namespace: other}
spec:
  version: 1.0.0
  measurePoints:
    - identifier: temperature
      dataType: {type: double, min: -40, max: 85}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: sensor-x, namespace: other}
spec:
  modelRef: {name: probe}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Application
metadata: {name: spy, namespace: other}
spec: {}
"#;

/// `devplane up` with the fixture applied and every device and application Ready.
struct Plant {
    devplane: Devplane,
}

impl Plant {
    fn start() -> Plant {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Plant {
        let devplane = Devplane::start(extra);
        devplane.apply_yaml(FIXTURE);
        for namespace in ["plant", "other"] {
            devplane.wait_condition(
                "Ready",
                Some(namespace),
                &["device", "--all"],
                READY_TIMEOUT,
            );
        }
        devplane.wait_condition("Ready", None, &["application", "--all"], READY_TIMEOUT);
        Plant { devplane }
    }

    fn password(&self, namespace: &str, device: &str) -> String {
        self.devplane
            .secret_value(namespace, &format!("{device}-credentials"), "password")
    }

    fn app_password(&self, namespace: &str, app: &str) -> String {
        self.devplane
            .secret_value(namespace, &format!("{app}-app-credentials"), "password")
    }

    fn host_port(addr: &str) -> (String, String) {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        (host.to_string(), port.to_string())
    }

    /// mosquitto_pub or mosquitto_sub as `user`, with `args` after the connection options.
    fn mosquitto(&self, tool: &str, v5: bool, user: &str, password: &str, args: &[&str]) -> Output {
        let (host, port) = Self::host_port(&self.devplane.mqtt_addr());
        let mut command = Command::new(tool);
        command.args(["-h", &host, "-p", &port, "-u", user, "-P", password]);
        if v5 {
            command.args(["-V", "mqttv5"]);
        }
        command.args(args);
        run_with_timeout(command, Duration::from_secs(20))
    }

    /// The paho-mqtt helper (`tests/python/mqtt_device.py`) against the device listener.
    fn paho(&self, user: &str, password: &str, version: &str, args: &[&str]) -> Command {
        self.paho_at(&self.devplane.mqtt_addr(), user, password, version, args)
    }

    /// The paho-mqtt helper against the application listener.
    fn paho_app(&self, user: &str, password: &str, args: &[&str]) -> Command {
        self.paho_at(&self.devplane.app_addr(), user, password, "5", args)
    }

    fn paho_at(
        &self,
        addr: &str,
        user: &str,
        password: &str,
        version: &str,
        args: &[&str],
    ) -> Command {
        let (host, port) = Self::host_port(addr);
        let mut command = Command::new("python3");
        command
            .arg(repo().join("tests/python/mqtt_device.py"))
            .args([&host, &port, user, password, version])
            .args(args);
        command
    }

    /// Application dash (namespace plant) reading `filter` northbound for `seconds`, once its
    /// subscription is granted.
    fn north_reader(&self, filter: &str, seconds: &str) -> Background {
        let password = self.app_password("plant", "dash");
        let reader =
            Background::spawn(self.paho_app("plant/dash", &password, &["read", seconds, filter]));
        reader.wait_for_line("the application's SUBACK", Duration::from_secs(20), |l| {
            l == "suback 1"
        });
        reader
    }

    /// A merge patch to a device of namespace plant.
    fn patch_device(&self, device: &str, patch: &str) {
        self.devplane.kubectl_ok(&[
            "patch",
            "device",
            device,
            "-n",
            "plant",
            "--type=merge",
            "-p",
            patch,
        ]);
    }

    /// `kubectl wait --for=…` on a device of namespace plant.
    fn wait_device(&self, device: &str, condition: &str) {
        self.devplane.kubectl_ok(&[
            "wait",
            condition,
            &format!("device/{device}"),
            "-n",
            "plant",
            "--timeout=30s",
        ]);
    }

    fn jsonpath(&self, kind: &str, namespace: &str, name: &str, path: &str) -> String {
        self.devplane.kubectl_ok(&[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }
}

/// Run a command to its end, killing it after `timeout`.
fn run_with_timeout(mut command: Command, timeout: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client runs");
    finish(child, timeout)
}

fn finish(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("client output")
}

fn output_lines(output: &Output) -> Vec<String> {
    stdout(output).lines().map(str::to_string).collect()
}

fn connack(plant: &Plant, user: &str, password: &str, version: &str) -> String {
    let output = run_with_timeout(
        plant.paho(user, password, version, &["connect"]),
        Duration::from_secs(20),
    );
    stdout(&output).trim().to_string()
}

impl Plant {
    /// A device's password, or an empty string when it has none (a Planned device).
    fn password_or_empty(&self, namespace: &str, device: &str) -> String {
        let output = self.devplane.kubectl(&[
            "get",
            "secret",
            &format!("{device}-credentials"),
            "-n",
            namespace,
        ]);
        if output.status.success() {
            self.password(namespace, device)
        } else {
            String::new()
        }
    }
}

/// An MQTT 5 publish (paho) by `user` on `topic` is answered PUBACK 0x87, not authorized.
fn assert_v5_publish_refused(plant: &Plant, user: &str, password: &str, topic: &str) {
    let output = run_with_timeout(
        plant.paho(
            user,
            password,
            "5",
            &["publish", topic, r#"{"points":{"temperature":1}}"#],
        ),
        Duration::from_secs(20),
    );
    assert!(
        output_lines(&output)
            .iter()
            .any(|l| l.starts_with("puback 0 135")),
        "a publish by {user} on {topic} is refused: {}",
        stdout(&output)
    );
}

fn denied_count(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("devplane_frontdoor_denied_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn create_command(plant: &Plant, name: &str, device: &str, timeout: u32) {
    plant.devplane.apply_yaml(&format!(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: {name}, namespace: plant}}
spec:
  device: {device}
  service: reboot
  params: {{delay: 0}}
  timeoutSeconds: {timeout}
"#
    ));
}

fn wait_phase(plant: &Plant, command: &str, phase: &str) {
    plant.devplane.kubectl_ok(&[
        "wait",
        &format!("--for=jsonpath={{.status.phase}}={phase}"),
        &format!("devicecommand/{command}"),
        "-n",
        "plant",
        "--timeout=60s",
    ]);
}

fn metric_value(metrics: &str, line_prefix: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn finish_child(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A CONNECT at protocol `level` with a user name and password (clean session, keepalive 30).
fn connect_packet(level: u8, user: &str, password: &str) -> Vec<u8> {
    RawConnect::new(user, password).level(level).packet()
}

/// A hand-made MQTT 3.1.1 (or, at level 5, MQTT 5) CONNECT.
struct RawConnect<'a> {
    level: u8,
    client_id: &'a str,
    user: &'a str,
    password: &'a str,
    clean: bool,
    keep_alive: u16,
    will: Option<(&'a str, &'a [u8])>,
}

impl<'a> RawConnect<'a> {
    fn new(user: &'a str, password: &'a str) -> Self {
        RawConnect {
            level: 4,
            client_id: "raw-client",
            user,
            password,
            clean: true,
            keep_alive: 30,
            will: None,
        }
    }

    fn level(mut self, level: u8) -> Self {
        self.level = level;
        self
    }

    fn packet(&self) -> Vec<u8> {
        let mut flags = 0b1100_0000u8;
        if self.clean {
            flags |= 0b10;
        }
        if self.will.is_some() {
            flags |= 0b0000_1100; // will, QoS 1
        }
        let v5 = self.level == 5;
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', self.level, flags];
        body.extend(self.keep_alive.to_be_bytes());
        if v5 {
            body.push(0); // no properties
        }
        let field = |body: &mut Vec<u8>, bytes: &[u8]| {
            body.extend((bytes.len() as u16).to_be_bytes());
            body.extend(bytes);
        };
        field(&mut body, self.client_id.as_bytes());
        if let Some((topic, message)) = self.will {
            if v5 {
                body.push(0); // no will properties
            }
            field(&mut body, topic.as_bytes());
            field(&mut body, message);
        }
        field(&mut body, self.user.as_bytes());
        field(&mut body, self.password.as_bytes());
        let mut packet = vec![0x10];
        packet.extend(remaining_length(body.len()));
        packet.extend(body);
        packet
    }
}

/// A SUBSCRIBE (packet id 1) for `filters` with their QoS.
fn subscribe_packet(filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for (filter, qos) in filters {
        body.extend((filter.len() as u16).to_be_bytes());
        body.extend(filter.as_bytes());
        body.push(*qos);
    }
    let mut packet = vec![0x82];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    packet
}

/// Read one whole packet: its first byte and its body (None when the connection closed or
/// nothing came within the stream's read timeout).
fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).ok()?;
    let mut len = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        len |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// A connected raw client (read timeout 5 s) that sent `connect` and read the CONNACK.
fn raw_session(addr: &str, connect: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(connect).expect("write CONNECT");
    let (kind, body) = read_packet(&mut stream).expect("CONNACK");
    assert_eq!(kind, 0x20, "CONNACK");
    (stream, body)
}

fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

/// Send bytes on a new connection (then end our side, if `half_close`) and read until the
/// server closes it (or 5 s pass); returns what came back and whether the server closed.
fn send_raw(addr: &str, bytes: &[u8], half_close: bool) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    if half_close {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half close");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend(&buf[..n]),
            Err(_) => break false,
        }
    };
    (got, closed)
}
