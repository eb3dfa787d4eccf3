//! `devplane bench mqtt`: the device front door under load, next to Debian's Mosquitto in the
//! same run.
//!
//! Both servers run as their own processes (their memory is measured from /proc), with the
//! same devices, passwords and topic shape: Mosquitto authenticates from a password file and
//! authorizes with the ACL pattern `d/%u/#`, the front door with its registry and topic rule.
//! Two scenarios each:
//! - connections: N authenticated idle connections spread over several 127.0.0.x source
//!   addresses; the RSS growth per connection;
//! - throughput: M QoS 1 telemetry messages from P publishers (a window of W in flight each),
//!   with one QoS 1 consumer — the front door's northbound application, Mosquitto's
//!   subscriber on `d/bench/+/telemetry`; msg/s to the last PUBACK and to the last message at
//!   the consumer, latency percentiles of both, and the server's CPU time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use rumqttc::mqttbytes::{QoS, v4};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::cli::BenchMqttArgs;
use crate::mqtt_client::{self, Login};

/// A server under test.
pub(super) struct Server {
    name: &'static str,
    pub(super) child: Child,
    devices: SocketAddr,
    /// The device HTTP listener, where there is one.
    pub(super) http: Option<SocketAddr>,
    /// What the server printed when it started (its listeners).
    pub(super) printed: Vec<String>,
    consumer: SocketAddr,
    consumer_login: (String, String),
    consumer_filter: String,
}

/// A child process that is killed when this goes out of scope (dropping a `Child` does not).
pub(super) struct Stopped(Child);

impl Stopped {
    /// Kill `child` when this goes out of scope.
    pub(super) fn new(child: Child) -> Stopped {
        Stopped(child)
    }

    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one server measured.
#[derive(Default)]
struct Figures {
    connections: usize,
    connect_seconds: f64,
    rss_per_connection: f64,
    publish_rate: f64,
    puback_ms: (f64, f64),
    consumer_rate: f64,
    consumer_ms: (f64, f64),
    consumed: usize,
    cpu_per_100k: f64,
    errors: Vec<String>,
}

/// The resident set size of a process, bytes.
pub(super) fn rss_of(pid: u32) -> Option<u64> {
    rss_bytes(pid)
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Start a child and read its standard output until `last` is printed; returns the lines.
pub(super) fn start_child(
    mut command: Command,
    last: &str,
    log: &Path,
) -> Result<(Child, Vec<String>), String> {
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let last = last.to_string();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with(&last);
            lines.push(line);
            if done {
                let _ = tx.send(lines.clone());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(lines) => Ok((child, lines)),
        Err(_) => {
            let _ = child.kill();
            Err(format!("{command:?} did not start"))
        }
    }
}

pub(super) fn address_after(lines: &[String], prefix: &str) -> Result<SocketAddr, String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("no line {prefix:?} in {lines:?}"))
}

/// `devplane up` (API and controllers) and `devplane frontdoor` as separate processes, with
/// the bench devices onboarded; returns the front door and every device's credentials.
pub(super) async fn start_devplane(
    dir: &Path,
    devices: usize,
) -> Result<(Server, Stopped, Vec<(String, String)>), String> {
    start_devplane_with(dir, devices, &[]).await
}

/// [`start_devplane`] with more arguments for `devplane frontdoor`.
pub(super) async fn start_devplane_with(
    dir: &Path,
    devices: usize,
    frontdoor_args: &[&str],
) -> Result<(Server, Stopped, Vec<(String, String)>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut up = Command::new(&exe);
    up.args([
        "up",
        "--store",
        "memory://",
        "--insecure-http",
        "--no-frontdoor",
    ])
    .args(["--api-addr", "127.0.0.1:0", "--data-dir"])
    .arg(dir)
    .env("RUST_LOG", "warn");
    let (up_child, _) = start_child(up, "kubeconfig:", &dir.join("up.log"))?;
    let up_child = Stopped(up_child);
    let kubeconfig = dir.join("kubeconfig");
    let client = crate::controller::client_from(Some(&kubeconfig)).await?;
    let create = |object: serde_json::Value| {
        let client = client.clone();
        async move {
            let gvk = (
                object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["kind"].as_str().unwrap_or_default().to_string(),
            );
            let (group, version) = gvk.0.split_once('/').unwrap_or(("", &gvk.0));
            let resource = kube::discovery::ApiResource::from_gvk(
                &kube::api::GroupVersionKind::gvk(group, version, &gvk.1),
            );
            let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
            let api: Api<kube::api::DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client, &ns, &resource),
                None => Api::all_with(client, &resource),
            };
            let object: kube::api::DynamicObject =
                serde_json::from_value(object).map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(|e| format!("create {}: {e}", gvk.1))
        }
    };
    create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})).await?;
    create(json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceModel",
        "metadata": {"name": "sensor", "namespace": "bench"},
        "spec": {"version": "1.0.0", "measurePoints": [
            {"identifier": "temperature", "dataType": {"type": "double", "unit": "Cel", "min": -40, "max": 85}},
            {"identifier": "sentUs", "dataType": {"type": "int", "unit": "us"}}
        ]}
    }))
    .await?;
    create(json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "consumer", "namespace": "bench"}, "spec": {}
    }))
    .await?;
    create(json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "OnboardingBatch",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"template": {"spec": {"modelRef": {"name": "sensor"}}},
                 "items": {"generate": {"count": devices, "namePattern": "s-{index:05}", "start": 0}}}
    }))
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    let mut credentials = Vec::new();
    let mut consumer_password = None;
    while started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let list = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=devplane"))
            .await
            .map_err(|e| format!("list secrets: {e}"))?;
        let password = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get("password"))
                .map(|p| String::from_utf8_lossy(&p.0).into_owned())
        };
        credentials = list
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("iot.devplane.io/device"))
            })
            .filter_map(|s| {
                let user = s.data.as_ref()?.get("username")?;
                Some((String::from_utf8_lossy(&user.0).into_owned(), password(s)?))
            })
            .collect();
        consumer_password = list
            .items
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("consumer-app-credentials"))
            .and_then(password);
        eprint!(
            "\r  onboarding: {}/{devices} credentials issued",
            credentials.len()
        );
        if credentials.len() >= devices && consumer_password.is_some() {
            break;
        }
    }
    eprintln!();
    if credentials.len() < devices {
        return Err(format!(
            "only {} of {devices} devices got credentials",
            credentials.len()
        ));
    }
    credentials.sort();
    let mut frontdoor = Command::new(&exe);
    frontdoor
        .arg("frontdoor")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--mqtt-addr",
            "127.0.0.1:0",
            "--app-mqtt-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--status-interval-seconds",
            "30",
        ])
        .args(frontdoor_args)
        .env("RUST_LOG", "warn");
    let (child, lines) = start_child(frontdoor, "application MQTT", &dir.join("frontdoor.log"))?;
    let server = Server {
        name: "devplane front door",
        child,
        devices: address_after(&lines, "device MQTT listening on mqtt://")?,
        http: Some(address_after(&lines, "device HTTP listening on http://")?),
        printed: lines.clone(),
        consumer: address_after(&lines, "application MQTT listening on mqtt://")?,
        consumer_login: (
            "bench/consumer".into(),
            consumer_password.ok_or("the consumer application has no credentials")?,
        ),
        consumer_filter: "north/bench/+/telemetry".into(),
    };
    // The front door accepts once its registry has synced: wait for one login to work.
    let (user, password) = &credentials[0];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let login = Login {
            client_id: "probe",
            username: user,
            password,
            keep_alive: 0,
        };
        match mqtt_client::connect(server.devices, None, &login).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("front door not ready: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Ok((server, up_child, credentials))
}

/// Mosquitto with a password file and an ACL file of the same shape as devplane's rule.
fn start_mosquitto(dir: &Path, credentials: &[(String, String)]) -> Result<Server, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let consumer_password = crate::pki::new_token();
    let mut passwords = String::new();
    for (user, password) in credentials {
        passwords.push_str(&format!("{user}:{password}\n"));
    }
    passwords.push_str(&format!("consumer:{consumer_password}\n"));
    let passwd = dir.join("mosquitto.passwd");
    std::fs::write(&passwd, passwords).map_err(|e| e.to_string())?;
    let hashed = Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&passwd)
        .status()
        .map_err(|e| format!("mosquitto_passwd: {e}"))?;
    if !hashed.success() {
        return Err("mosquitto_passwd -U failed".into());
    }
    let acl = dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        "pattern readwrite d/%u/#\n\nuser consumer\ntopic read d/#\n",
    )
    .map_err(|e| e.to_string())?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nmax_inflight_messages 64\nmax_queued_messages 1000000\nlog_type error\n",
            passwd.display(),
            acl.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("mosquitto.log")).map_err(|e| e.to_string())?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start mosquitto: {e}"))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("mosquitto did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        name: "mosquitto",
        child,
        devices: addr,
        http: None,
        printed: Vec::new(),
        consumer: addr,
        consumer_login: ("consumer".into(), consumer_password),
        consumer_filter: "d/bench/+/telemetry".into(),
    })
}

/// Hold `credentials.len()` idle connections; figures: count, seconds, RSS per connection.
async fn connections(
    server: &mut Server,
    credentials: &[(String, String)],
    sources: usize,
    figures: &mut Figures,
) {
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_bytes(pid).unwrap_or(0);
    let started = Instant::now();
    let addr = server.devices;
    let results: Vec<Result<(mqtt_client::Reader, mqtt_client::Writer), String>> =
        futures::stream::iter(credentials.iter().enumerate())
            .map(|(i, (user, password))| async move {
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % sources) as u8));
                let client_id = format!("c{i}");
                let login = Login {
                    client_id: &client_id,
                    username: user,
                    password,
                    keep_alive: 0,
                };
                mqtt_client::connect(addr, Some(source), &login).await
            })
            .buffer_unordered(128)
            .collect()
            .await;
    figures.connect_seconds = started.elapsed().as_secs_f64();
    let mut held = Vec::new();
    for result in results {
        match result {
            Ok(pair) => held.push(pair),
            Err(e) if figures.errors.len() < 3 => figures.errors.push(e),
            Err(_) => {}
        }
    }
    figures.connections = held.len();
    // The server writes every device's presence after its connect; measure once that work is
    // done and the memory has settled (RSS changes by under 1 % in a second), within 30 s.
    let mut after = rss_bytes(pid).unwrap_or(0);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_bytes(pid).unwrap_or(0);
        let settled = now.abs_diff(after) * 100 < after.max(1);
        after = now;
        if settled {
            break;
        }
    }
    if !held.is_empty() {
        figures.rss_per_connection = after.saturating_sub(before) as f64 / held.len() as f64;
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
}

pub(super) fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// When the publisher sent a message (its `sentUs` point, µs), read from any payload shape.
fn sent_micros(payload: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(payload).ok()?;
    let at = text.find("\"sentUs\":")? + 9;
    let end = text[at..].find([',', '}'])? + at;
    text[at..end].trim().parse().ok()
}

/// M QoS 1 messages from P publishers to one consumer.
async fn throughput(
    server: &Server,
    credentials: &[(String, String)],
    args: &BenchMqttArgs,
    figures: &mut Figures,
) -> Result<(), String> {
    let pid = server.child.id();
    let (user, password) = &server.consumer_login;
    let login = Login {
        client_id: "bench-consumer",
        username: user,
        password,
        keep_alive: 0,
    };
    let (mut reader, mut writer) = mqtt_client::connect(server.consumer, None, &login).await?;
    if mqtt_client::subscribe(
        &mut reader,
        &mut writer,
        &server.consumer_filter,
        QoS::AtLeastOnce,
    )
    .await?
    .is_none()
    {
        return Err(format!(
            "{}: the consumer's subscription was refused",
            server.name
        ));
    }
    let total = args.messages as usize;
    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut last = Instant::now();
        while latencies.len() < total {
            let packet = match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
                Ok(Ok(p)) => p,
                _ => break,
            };
            if let v4::Packet::Publish(p) = packet {
                if let Some(sent) = sent_micros(&p.payload) {
                    latencies.push((now_micros() - sent) as f64 / 1000.0);
                }
                last = Instant::now();
                if p.qos == QoS::AtLeastOnce {
                    let _ = writer.queue(v4::Packet::PubAck(v4::PubAck::new(p.pkid)));
                    let _ = writer.flush().await;
                }
            }
        }
        (latencies, last)
    });
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let publishers = args.publishers.max(1) as usize;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (user, password) = credentials[p % credentials.len()].clone();
        let count = total / publishers + usize::from(p < total % publishers);
        let addr = server.devices;
        let window = args.window.max(1);
        tasks.push(tokio::spawn(async move {
            publish(addr, &user, &password, count, window).await
        }));
    }
    let mut acked = Vec::with_capacity(total);
    let mut last_ack = started;
    for task in tasks {
        match task.await {
            Ok(Ok((latencies, last))) => {
                acked.extend(latencies);
                last_ack = last_ack.max(last);
            }
            Ok(Err(e)) => figures.errors.push(e),
            Err(e) => figures.errors.push(e.to_string()),
        }
    }
    let (consumed, last_consumed) = consumer.await.map_err(|e| e.to_string())?;
    figures.cpu_per_100k =
        (cpu_seconds(pid).unwrap_or(0.0) - cpu_before) * 100_000.0 / total as f64;
    figures.publish_rate = acked.len() as f64 / (last_ack - started).as_secs_f64().max(1e-9);
    figures.puback_ms = percentiles(acked);
    figures.consumed = consumed.len();
    figures.consumer_rate =
        consumed.len() as f64 / (last_consumed - started).as_secs_f64().max(1e-9);
    figures.consumer_ms = percentiles(consumed);
    Ok(())
}

/// One publisher: `count` QoS 1 messages with at most `window` unacknowledged; returns the
/// publish→PUBACK latencies (ms) and when the last PUBACK came.
async fn publish(
    addr: SocketAddr,
    user: &str,
    password: &str,
    count: usize,
    window: u16,
) -> Result<(Vec<f64>, Instant), String> {
    let login = Login {
        client_id: &format!("pub-{user}"),
        username: user,
        password,
        keep_alive: 0,
    };
    let (mut reader, mut writer) = mqtt_client::connect(addr, None, &login).await?;
    let topic = format!("d/{user}/telemetry");
    let slots = Arc::new(Semaphore::new(usize::from(window)));
    let sent_at: Arc<parking_lot::Mutex<Vec<Option<Instant>>>> =
        Arc::new(parking_lot::Mutex::new(vec![None; 65536]));
    let acks = {
        let slots = slots.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            let mut last = Instant::now();
            while latencies.len() < count {
                match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
                    Ok(Ok(v4::Packet::PubAck(ack))) => {
                        if let Some(at) = sent_at.lock()[usize::from(ack.pkid)].take() {
                            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                        }
                        last = Instant::now();
                        slots.add_permits(1);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(format!(
                            "{} of {count} PUBACKs after a 30 s silence",
                            latencies.len()
                        ));
                    }
                }
            }
            Ok((latencies, last))
        })
    };
    let mut seq = 0usize;
    while seq < count {
        let permit = slots.acquire().await.map_err(|e| e.to_string())?;
        permit.forget();
        let mut batch = 1;
        loop {
            let pkid = (seq % 65_535) as u16 + 1;
            let payload = Bytes::from(
                json!({"ts": now_micros() / 1000, "points": {"temperature": 21.5, "sentUs": now_micros()}})
                    .to_string(),
            );
            sent_at.lock()[usize::from(pkid)] = Some(Instant::now());
            writer.publish(&topic, payload, QoS::AtLeastOnce, pkid)?;
            seq += 1;
            if seq >= count || batch >= 16 {
                break;
            }
            match slots.try_acquire() {
                Ok(p) => {
                    p.forget();
                    batch += 1;
                }
                Err(_) => break,
            }
        }
        writer.flush().await?;
    }
    acks.await.map_err(|e| e.to_string())?
}

fn kb(bytes: f64) -> String {
    format!("{:.1} KB", bytes / 1024.0)
}

/// Run `devplane bench mqtt`.
pub async fn run(args: &BenchMqttArgs) -> Result<(), String> {
    super::in_temp_dir(|dir| async move { run_in(&dir, args).await }).await
}

async fn run_in(dir: &Path, args: &BenchMqttArgs) -> Result<(), String> {
    let _progress = super::Progress::start("bench mqtt", None);
    let devices = args.connections.max(args.publishers) as usize;
    eprintln!("devplane bench mqtt: onboarding {devices} devices");
    let (mut devplane, _up, credentials) = start_devplane(dir, devices).await?;
    let mosquitto_available =
        !args.no_mosquitto && Command::new("mosquitto").arg("-h").output().is_ok();
    let mut results: BTreeMap<&'static str, Figures> = BTreeMap::new();
    let sources = args.sources.clamp(1, 200) as usize;

    eprintln!("  {}: {} connections", devplane.name, credentials.len());
    let mut figures = Figures::default();
    connections(&mut devplane, &credentials, sources, &mut figures).await;
    eprintln!("  {}: {} QoS 1 messages", devplane.name, args.messages);
    throughput(&devplane, &credentials, args, &mut figures).await?;
    results.insert(devplane.name, figures);
    drop(devplane);

    if mosquitto_available {
        let mut mosquitto = start_mosquitto(dir, &credentials)?;
        eprintln!("  mosquitto: {} connections", credentials.len());
        let mut figures = Figures::default();
        connections(&mut mosquitto, &credentials, sources, &mut figures).await;
        eprintln!("  mosquitto: {} QoS 1 messages", args.messages);
        throughput(&mosquitto, &credentials, args, &mut figures).await?;
        results.insert("mosquitto", figures);
    } else if !args.no_mosquitto {
        eprintln!("  mosquitto not found (apt-get install mosquitto): no baseline");
    }
    print_table(args, &results);
    Ok(())
}

fn print_table(args: &BenchMqttArgs, results: &BTreeMap<&'static str, Figures>) {
    let ours = results.get("devplane front door");
    let theirs = results.get("mosquitto");
    let build = super::build_kind();
    println!(
        "devplane bench mqtt ({build} build): {} connections over {} source addresses; {} QoS 1 messages from {} publishers, window {}",
        args.connections, args.sources, args.messages, args.publishers, args.window
    );
    println!(
        "{:<42} {:>20} {:>20} {:>12}",
        "", "devplane front door", "mosquitto", "ratio"
    );
    let row = |label: &str, f: &dyn Fn(&Figures) -> String, r: Option<&dyn Fn(&Figures) -> f64>| {
        let a = ours.map(f).unwrap_or_else(|| "-".into());
        let b = theirs.map(f).unwrap_or_else(|| "-".into());
        let q = match (r, ours, theirs) {
            (Some(r), Some(o), Some(t)) => super::ratio(r(o), r(t)),
            _ => String::new(),
        };
        println!("{label:<42} {a:>20} {b:>20} {q:>12}");
    };
    row("connections held", &|f| f.connections.to_string(), None);
    row(
        "time to connect them all",
        &|f| format!("{:.1} s", f.connect_seconds),
        Some(&|f| f.connect_seconds),
    );
    row(
        "RSS per connection",
        &|f| kb(f.rss_per_connection),
        Some(&|f| f.rss_per_connection),
    );
    row(
        "QoS 1 msg/s to PUBACK (devplane: validated)",
        &|f| format!("{:.0}", f.publish_rate),
        Some(&|f| f.publish_rate),
    );
    row(
        "publish→PUBACK p50 / p99",
        &|f| format!("{:.1} / {:.1} ms", f.puback_ms.0, f.puback_ms.1),
        Some(&|f| f.puback_ms.1),
    );
    row(
        "msg/s at the consumer",
        &|f| format!("{:.0}", f.consumer_rate),
        Some(&|f| f.consumer_rate),
    );
    row(
        "messages at the consumer",
        &|f| f.consumed.to_string(),
        None,
    );
    row(
        "publish→consumer p50 / p99",
        &|f| format!("{:.1} / {:.1} ms", f.consumer_ms.0, f.consumer_ms.1),
        Some(&|f| f.consumer_ms.1),
    );
    row(
        "server CPU per 100k messages",
        &|f| format!("{:.2} s", f.cpu_per_100k),
        Some(&|f| f.cpu_per_100k),
    );
    for (name, f) in results {
        for e in &f.errors {
            println!("  {name}: error: {e}");
        }
    }
}
