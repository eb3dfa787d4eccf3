//! `devplane simulate`: simulated devices over MQTT or CoAP (DTLS with the password as
//! pre-shared key), with the credentials from their Secrets. They send telemetry generated
//! from their model (a share of it invalid on request), report desired attributes back and
//! answer commands, while a live summary counts what the front door accepted and rejected.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use devplane_api::v1alpha1::{Device, DeviceModel, DeviceModelSpec};
use devplane_core::ResolvedModel;
use devplane_core::model::{ModelKey, resolve};
use devplane_core::value;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use parking_lot::Mutex;
use rand::Rng;
use rumqttc::mqttbytes::{QoS, v4};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::SimulateArgs;
use crate::coap_client::{self, Request};
use crate::mqtt_client::{self, Login};

/// What the simulated devices did and what came back.
#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    sent_invalid: AtomicU64,
    acked: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    commands: AtomicU64,
    reported: AtomicU64,
}

impl Stats {
    fn line(&self, devices: usize) -> String {
        let rejected = self.rejected.lock();
        let total_rejected: u64 = rejected.values().sum();
        let reasons = rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Answers to commands and desired values are acknowledged too.
        let answers = self.commands.load(Ordering::Relaxed) + self.reported.load(Ordering::Relaxed);
        let acked = self.acked.load(Ordering::Relaxed).saturating_sub(answers);
        format!(
            "connected {}/{devices} (failed {}) · sent {} ({} invalid) · accepted {} · rejected {}{} · commands answered {} · desired reported {}",
            self.connected.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
            self.sent_invalid.load(Ordering::Relaxed),
            acked.saturating_sub(total_rejected),
            total_rejected,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({reasons})")
            },
            self.commands.load(Ordering::Relaxed),
            self.reported.load(Ordering::Relaxed),
        )
    }
}

/// One simulated device.
struct Simulated {
    namespace: String,
    name: String,
    password: String,
    endpoint: SocketAddr,
    model: Arc<ResolvedModel>,
}

fn endpoint_of(url: &str, scheme: &str) -> Option<SocketAddr> {
    url.strip_prefix(scheme)?
        .strip_prefix("://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// The protocols `devplane simulate` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Mqtt,
    /// CoAP over DTLS.
    Coap,
}

/// Run `devplane simulate` until the duration ends or SIGINT/SIGTERM.
pub async fn run(args: &SimulateArgs) -> Result<(), String> {
    let wire = match args.protocol.as_str() {
        "mqtt" => Wire::Mqtt,
        "coap" => Wire::Coap,
        other => {
            return Err(format!(
                "protocol {other:?} is not supported; use --protocol mqtt or coap"
            ));
        }
    };
    let client = crate::controller::client_from(args.kubeconfig.as_deref()).await?;
    let names = devices(&client, args).await?;
    if names.is_empty() {
        return Err("no devices to simulate".into());
    }
    let simulated = prepare(&client, args, &names, wire).await?;
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    tokio::spawn(crate::up::stop_on_signal(stop.clone()));
    if let Some(seconds) = args.duration_seconds {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.cancel();
        });
    }
    // Each device publishes at rate / devices; spread their starts over one interval.
    let per_device = (args.rate / simulated.len() as f64).max(1e-3);
    let interval = Duration::from_secs_f64(1.0 / per_device);
    let count = simulated.len();
    let mut tasks = Vec::new();
    for (i, device) in simulated.into_iter().enumerate() {
        let stats = stats.clone();
        let stop = stop.clone();
        let offset = interval.mul_f64(i as f64 / count as f64);
        let invalid_share = args.invalid_share;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let result = match wire {
                Wire::Mqtt => simulate(&device, interval, invalid_share, &stats, &stop).await,
                Wire::Coap => simulate_coap(&device, interval, invalid_share, &stats, &stop).await,
            };
            if let Err(e) = result {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %format!("{}/{}", device.namespace, device.name), error = %e, "simulated device stopped");
            }
        }));
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => eprint!("\r{:>5.0}s {}", started.elapsed().as_secs_f64(), stats.line(count)),
        }
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    eprintln!();
    println!("{}", stats.line(count));
    Ok(())
}

/// The names of the devices to simulate: created (by an OnboardingBatch) or selected.
async fn devices(client: &kube::Client, args: &SimulateArgs) -> Result<Vec<String>, String> {
    let api: Api<Device> = Api::namespaced(client.clone(), &args.namespace);
    let selector = match (&args.model, args.count, &args.selector) {
        (Some(model), Some(count), None) => {
            let batch = format!("simulate-{model}");
            let manifest = json!({
                "apiVersion": "iot.devplane.io/v1alpha1", "kind": "OnboardingBatch",
                "metadata": {"name": batch, "namespace": args.namespace},
                "spec": {"template": {"spec": {"modelRef": {"name": model}}},
                         "items": {"generate": {"count": count, "namePattern": format!("{model}-sim-{{index:04}}")}},
                         "deletionPolicy": "Delete"}
            });
            let batches: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client.clone(),
                &args.namespace,
                &kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                    "iot.devplane.io",
                    "v1alpha1",
                    "OnboardingBatch",
                )),
            );
            batches
                .patch(
                    &batch,
                    &PatchParams::apply("devplane-simulate").force(),
                    &Patch::Apply(&manifest),
                )
                .await
                .map_err(|e| format!("create OnboardingBatch {batch}: {e}"))?;
            eprintln!(
                "simulate: OnboardingBatch {}/{batch} for {count} devices of model {model}",
                args.namespace
            );
            format!("{}={batch}", devplane_api::constants::labels::BATCH)
        }
        (None, None, Some(selector)) => selector.clone(),
        _ => return Err("give either --model and --count, or --selector".into()),
    };
    let want = args.count.map(|c| c as usize);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("list devices: {e}"))?;
        let names: Vec<String> = list.items.iter().map(|d| d.name_any()).collect();
        if want.is_none_or(|w| names.len() >= w) || Instant::now() > deadline {
            return Ok(names);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Credentials, endpoints and resolved models of the devices (waits for their Secrets).
async fn prepare(
    client: &kube::Client,
    args: &SimulateArgs,
    names: &[String],
    wire: Wire,
) -> Result<Vec<Simulated>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let devices: Api<Device> = Api::namespaced(client.clone(), &args.namespace);
    let deadline = Instant::now() + Duration::from_secs(300);
    let by_name = loop {
        let list = secrets
            .list(&ListParams::default().labels(devplane_api::constants::labels::DEVICE))
            .await
            .map_err(|e| format!("list secrets: {e}"))?;
        let by_name: HashMap<String, Secret> =
            list.items.into_iter().map(|s| (s.name_any(), s)).collect();
        let missing = names
            .iter()
            .filter(|n| !by_name.contains_key(&devplane_core::naming::credentials_secret_name(n)))
            .count();
        if missing == 0 || Instant::now() > deadline {
            break by_name;
        }
        eprint!("\rsimulate: waiting for {missing} credentials Secrets");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let models: Api<DeviceModel> = Api::all(client.clone());
    let specs: BTreeMap<ModelKey, DeviceModelSpec> = models
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list models: {e}"))?
        .items
        .into_iter()
        .map(|m| {
            (
                ModelKey::new(m.namespace().unwrap_or_default(), m.name_any()),
                m.spec,
            )
        })
        .collect();
    let mut resolved: HashMap<ModelKey, Arc<ResolvedModel>> = HashMap::new();
    let mut out = Vec::new();
    let text = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    for name in names {
        let Some(secret) = by_name.get(&devplane_core::naming::credentials_secret_name(name))
        else {
            eprintln!("\nsimulate: {name} has no credentials; skipped");
            continue;
        };
        let device = devices
            .get(name)
            .await
            .map_err(|e| format!("get device {name}: {e}"))?;
        let key = ModelKey::from_ref(&device.spec.model_ref, &args.namespace);
        let model = match resolved.get(&key) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(resolve(&specs, &key).map_err(|e| format!("model {key}: {e}"))?);
                resolved.insert(key, m.clone());
                m
            }
        };
        let (given, scheme, flag) = match wire {
            Wire::Mqtt => (args.mqtt_addr, "mqtt", "--mqtt-addr"),
            Wire::Coap => (args.coaps_addr, "coaps", "--coaps-addr"),
        };
        let endpoint = match given {
            Some(addr) => addr,
            None => text(secret, &format!("{scheme}-endpoint"))
                .as_deref()
                .and_then(|url| endpoint_of(url, scheme))
                .ok_or_else(|| {
                    format!("{name}: no {scheme}-endpoint in its Secret (use {flag})")
                })?,
        };
        out.push(Simulated {
            namespace: args.namespace.clone(),
            name: name.clone(),
            password: text(secret, "password").unwrap_or_default(),
            endpoint,
            model,
        });
    }
    Ok(out)
}

/// Telemetry of every measure point; an invalid message puts one point out of range (or names
/// a point the model does not have).
fn telemetry(model: &ResolvedModel, invalid: bool) -> Value {
    let mut rng = rand::rng();
    let now = jiff::Timestamp::now().as_millisecond();
    let mut points = serde_json::Map::new();
    for (identifier, feature) in &model.measure_points {
        let position: f64 = rng.random();
        points.insert(
            identifier.clone(),
            value::sample((&feature.definition.data_type).into(), position, now),
        );
    }
    if invalid {
        let bounded = model
            .measure_points
            .iter()
            .find_map(|(id, f)| f.definition.data_type.max.map(|max| (id.clone(), max)));
        match bounded {
            Some((id, max)) => {
                points.insert(id, json!(max + 1000.0));
            }
            None => {
                points.insert("notAPointOfTheModel".into(), json!(1));
            }
        }
    }
    json!({"ts": now, "points": points})
}

async fn simulate(
    device: &Simulated,
    interval: Duration,
    invalid_share: f64,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let user = format!("{}/{}", device.namespace, device.name);
    let login = Login {
        client_id: &device.name,
        username: &user,
        password: &device.password,
        keep_alive: 60,
    };
    let (mut reader, mut writer) = mqtt_client::connect(device.endpoint, None, &login).await?;
    let prefix = format!("d/{user}/");
    mqtt_client::subscribe(
        &mut reader,
        &mut writer,
        &format!("{prefix}#"),
        QoS::AtLeastOnce,
    )
    .await?;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let answers = {
        let writer = writer.clone();
        let stats = stats.clone();
        let prefix = prefix.clone();
        let model = device.model.clone();
        tokio::spawn(async move {
            while let Ok(packet) = reader.next().await {
                match packet {
                    v4::Packet::PubAck(_) => {
                        stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    v4::Packet::Publish(p) => {
                        let mut w = writer.lock().await;
                        if p.qos == QoS::AtLeastOnce {
                            let _ = w.queue(v4::Packet::PubAck(v4::PubAck::new(p.pkid)));
                        }
                        if let Some((topic, payload)) =
                            answer(&model, &prefix, &p.topic, &p.payload, &stats)
                        {
                            let _ = w.publish(&topic, payload, QoS::AtLeastOnce, next_pkid());
                        }
                        let _ = w.flush().await;
                    }
                    _ => {}
                }
            }
        })
    };
    let mut tick = tokio::time::interval(interval);
    let topic = format!("{prefix}telemetry");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let invalid = rand::rng().random::<f64>() < invalid_share;
                let payload = Bytes::from(telemetry(&device.model, invalid).to_string());
                let mut w = writer.lock().await;
                w.publish(&topic, payload, QoS::AtLeastOnce, next_pkid())?;
                w.flush().await?;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if invalid {
                    stats.sent_invalid.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let _ = writer.lock().await.send(v4::Packet::Disconnect).await;
    answers.abort();
    Ok(())
}

/// One device over CoAP with DTLS: telemetry as confirmable POSTs, desired attributes and
/// commands observed (RFC 7641) and answered.
async fn simulate_coap(
    device: &Simulated,
    interval: Duration,
    invalid_share: f64,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let user = format!("{}/{}", device.namespace, device.name);
    let client = Arc::new(
        coap_client::Client::dtls(device.endpoint, &user, device.password.as_bytes()).await?,
    );
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("d/{user}/");
    let (first, mut desired) = client
        .observe(&format!("{prefix}attributes/desired"))
        .await?;
    let (first_commands, mut commands) = client.observe(&format!("{prefix}commands")).await?;
    let answers = {
        let (client, prefix, model, stats) = (
            client.clone(),
            prefix.clone(),
            device.model.clone(),
            stats.clone(),
        );
        async move {
            let handle = |packet: coap_lite::Packet, desired_values: bool| {
                let body: Value = serde_json::from_slice(&packet.payload).unwrap_or_default();
                let mut out = Vec::new();
                if desired_values {
                    stats.reported.fetch_add(1, Ordering::Relaxed);
                    out.push((
                        format!("{prefix}attributes/reported"),
                        body["values"].clone(),
                    ));
                } else {
                    for command in body["commands"].as_array().into_iter().flatten() {
                        let name = command["name"].as_str().unwrap_or_default();
                        let service = command["service"].as_str().unwrap_or_default();
                        stats.commands.fetch_add(1, Ordering::Relaxed);
                        out.push((
                            format!("{prefix}commands/{name}/response"),
                            json!({"status": "Succeeded", "output": command_output(&model, service)}),
                        ));
                    }
                }
                out
            };
            let mut pending = handle(first, true);
            pending.extend(handle(first_commands, false));
            loop {
                for (path, body) in pending.drain(..) {
                    let _ = coap_post(&client, &stats, &path, &body).await;
                }
                tokio::select! {
                    Some(p) = desired.recv() => pending = handle(p, true),
                    Some(p) = commands.recv() => pending = handle(p, false),
                    else => return,
                }
            }
        }
    };
    let answers = tokio::spawn(answers);
    let mut tick = tokio::time::interval(interval);
    let path = format!("{prefix}telemetry");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let invalid = rand::rng().random::<f64>() < invalid_share;
                let body = telemetry(&device.model, invalid);
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if invalid {
                    stats.sent_invalid.fetch_add(1, Ordering::Relaxed);
                }
                let answer = coap_post(&client, stats, &path, &body).await?;
                if answer.header.code != coap_lite::MessageClass::Response(coap_lite::ResponseType::Changed) {
                    let body: Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
                    let reason = body["reason"].as_str().unwrap_or("Unknown").to_string();
                    *stats.rejected.lock().entry(reason).or_default() += 1;
                }
            }
        }
    }
    answers.abort();
    Ok(())
}

/// A confirmable POST of a JSON body; counts the answer.
async fn coap_post(
    client: &coap_client::Client,
    stats: &Stats,
    path: &str,
    body: &Value,
) -> Result<coap_lite::Packet, String> {
    let payload = body.to_string();
    let request = Request {
        method: coap_lite::RequestType::Post,
        path,
        payload: payload.as_bytes(),
        confirmable: true,
        observe: None,
    };
    let answer = client.request(&request).await?;
    stats.acked.fetch_add(1, Ordering::Relaxed);
    Ok(answer)
}

/// Output values of a service, generated from the model.
fn command_output(model: &ResolvedModel, service: &str) -> serde_json::Map<String, Value> {
    let now = jiff::Timestamp::now().as_millisecond();
    model
        .services
        .get(service)
        .map(|s| {
            s.definition
                .outputs
                .iter()
                .map(|o| {
                    (
                        o.identifier.clone(),
                        value::sample((&o.data_type).into(), 0.5, now),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Packet ids for the simulator's QoS 1 publishes (unique enough: a device has few in flight).
fn next_pkid() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) % 65_535) as u16 + 1
}

/// React to a downlink message: report desired values, answer commands, count errors.
fn answer(
    model: &ResolvedModel,
    prefix: &str,
    topic: &str,
    payload: &[u8],
    stats: &Stats,
) -> Option<(String, Bytes)> {
    let rest = topic.strip_prefix(prefix)?;
    let body: Value = serde_json::from_slice(payload).ok()?;
    if rest == "errors" {
        let reason = body["reason"].as_str().unwrap_or("Unknown").to_string();
        *stats.rejected.lock().entry(reason).or_default() += 1;
        return None;
    }
    if rest == "attributes/desired" {
        stats.reported.fetch_add(1, Ordering::Relaxed);
        return Some((
            format!("{prefix}attributes/reported"),
            Bytes::from(body["values"].to_string()),
        ));
    }
    let command = rest
        .strip_prefix("commands/")
        .filter(|c| !c.contains('/'))?;
    let service = body["service"].as_str().unwrap_or_default();
    let output = command_output(model, service);
    stats.commands.fetch_add(1, Ordering::Relaxed);
    Some((
        format!("{prefix}commands/{command}/response"),
        Bytes::from(json!({"status": "Succeeded", "output": output}).to_string()),
    ))
}
