//! `devplane simulate`: simulated devices over MQTT, HTTP, CoAP (DTLS with the password as
//! pre-shared key) or the EnOS device protocol with the credentials from their Secrets, or
//! behind one gateway that logs them in. They send telemetry generated from their model (a share of it invalid on
//! request), report desired attributes back and answer commands, while a live summary counts
//! what the front door accepted and rejected.

mod enos;
mod gateway;
mod http;
mod provision;

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
    /// One telemetry message sent (invalid on purpose or not).
    fn count_sent(&self, invalid: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if invalid {
            self.sent_invalid.fetch_add(1, Ordering::Relaxed);
        }
    }

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
    /// Where it connects (for a sub-device: unused, its gateway connects).
    endpoint: SocketAddr,
    model: Arc<ResolvedModel>,
    /// Its EnOS product and device key (with `--protocol enos`).
    enos: Option<(String, String)>,
}

/// The address in an endpoint URL (`mqtt://host:port`, `coaps://host:port`).
fn endpoint_of(url: &str) -> Option<SocketAddr> {
    url.split_once("://")?.1.trim_end_matches('/').parse().ok()
}

/// How the devices connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Mqtt,
    Http,
    /// CoAP over DTLS.
    Coap,
    Gateway,
    /// The EnOS device protocol.
    Enos,
}

/// Run `devplane simulate` until the duration ends or SIGINT/SIGTERM.
pub async fn run(args: &SimulateArgs) -> Result<(), String> {
    let mode = match args.protocol.as_str() {
        "mqtt" => Mode::Mqtt,
        "http" => Mode::Http,
        "coap" => Mode::Coap,
        "gateway" => Mode::Gateway,
        "enos" => Mode::Enos,
        other => {
            return Err(format!(
                "protocol {other:?} is not supported; use mqtt, http, coap, enos or gateway"
            ));
        }
    };
    if mode == Mode::Enos && args.enos_addr.is_none() {
        return Err("--protocol enos needs --enos-addr (the front door's --enos-mqtt-addr)".into());
    }
    if mode == Mode::Gateway && args.gateway.is_none() {
        return Err("--protocol gateway needs --gateway NAME".into());
    }
    let client = crate::controller::client_from(args.kubeconfig.as_deref()).await?;
    if let Some(policy) = &args.provision {
        if mode == Mode::Gateway {
            return Err(
                "--provision makes each device connect itself; not with --protocol gateway".into(),
            );
        }
        let count = args.count.ok_or("--provision needs --count")?;
        let credentials = provision::all(&client, args, policy, count).await?;
        let mut names: Vec<String> = credentials.keys().cloned().collect();
        names.sort();
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let simulated = simulated(&client, args, &names, &credentials, mode).await?;
        return drive(
            args,
            simulated,
            &stats,
            &stop,
            |devices, interval, stats, stop| {
                per_device(devices, interval, args.invalid_share, mode, stats, stop)
            },
        )
        .await;
    }
    let names = match (args.register, &args.model, args.count) {
        (true, Some(model), Some(count)) => gateway::names(args, model, count),
        (true, _, _) => return Err("--register needs --model and --count".into()),
        (false, _, _) => devices(&client, args).await?,
    };
    if names.is_empty() {
        return Err("no devices to simulate".into());
    }
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    if let Some(name) = &args.gateway
        && mode == Mode::Gateway
    {
        let attributes = match (&args.model, args.register) {
            (Some(model), true) => {
                let key = ModelKey::new(args.namespace.clone(), model.clone());
                let model = resolve(&model_specs(&client).await?, &key)
                    .map_err(|e| format!("model {key}: {e}"))?;
                required_attributes(&model)
            }
            _ => serde_json::Map::new(),
        };
        let login = gateway::connect(&client, args, name).await?;
        let (session, registered) =
            gateway::start(login, args, &names, &attributes, &stats).await?;
        let simulated = prepare(&client, args, &registered, mode).await?;
        return drive(
            args,
            simulated,
            &stats,
            &stop,
            |devices, interval, stats, stop| {
                vec![tokio::spawn(gateway::simulate(
                    session,
                    devices,
                    interval,
                    args.invalid_share,
                    stats,
                    stop,
                ))]
            },
        )
        .await;
    }
    let simulated = prepare(&client, args, &names, mode).await?;
    drive(
        args,
        simulated,
        &stats,
        &stop,
        |devices, interval, stats, stop| {
            per_device(devices, interval, args.invalid_share, mode, stats, stop)
        },
    )
    .await
}

/// One task per device, their starts spread over one interval.
fn per_device(
    devices: Vec<Simulated>,
    interval: Duration,
    invalid_share: f64,
    mode: Mode,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let count = devices.len();
    let http = http::client();
    devices
        .into_iter()
        .enumerate()
        .map(|(i, device)| {
            let (stats, stop, http) = (stats.clone(), stop.clone(), http.clone());
            let offset = interval.mul_f64(i as f64 / count as f64);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let result = match mode {
                    Mode::Http => {
                        http::simulate(&http, &device, interval, invalid_share, &stats, &stop)
                            .await
                    }
                    Mode::Coap => {
                        simulate_coap(&device, interval, invalid_share, &stats, &stop).await
                    }
                    Mode::Enos => {
                        enos::simulate(&device, interval, invalid_share, &stats, &stop).await
                    }
                    _ => simulate(&device, interval, invalid_share, &stats, &stop).await,
                };
                if let Err(e) = result {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %format!("{}/{}", device.namespace, device.name), error = %e, "simulated device stopped");
                }
            })
        })
        .collect()
}

/// Run the device tasks `spawn` starts until the duration ends or a signal, with a live
/// summary.
async fn drive(
    args: &SimulateArgs,
    simulated: Vec<Simulated>,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
    spawn: impl FnOnce(
        Vec<Simulated>,
        Duration,
        Arc<Stats>,
        CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), String> {
    if simulated.is_empty() {
        return Err("no devices to simulate".into());
    }
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
    let tasks = spawn(simulated, interval, stats.clone(), stop.clone());
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
            // Behind a gateway the devices name it, so that it may log them in.
            let (batch, pattern, template) = match (&args.gateway, args.protocol.as_str()) {
                (Some(gw), "gateway") => (
                    format!("simulate-{gw}-{model}"),
                    format!("{gw}-{model}-{{index:04}}"),
                    json!({"modelRef": {"name": model}, "connection": {"gatewayRef": {"name": gw}}}),
                ),
                _ => (
                    format!("simulate-{model}"),
                    format!("{model}-sim-{{index:04}}"),
                    json!({"modelRef": {"name": model}}),
                ),
            };
            let manifest = json!({
                "apiVersion": "iot.devplane.io/v1alpha1", "kind": "OnboardingBatch",
                "metadata": {"name": batch, "namespace": args.namespace},
                "spec": {"template": {"spec": template},
                         "items": {"generate": {"count": count, "namePattern": pattern}},
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
            format!(
                "{}={}",
                devplane_api::constants::labels::BATCH,
                devplane_core::naming::owner_label_value(&batch)
            )
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

/// What a device's credentials Secret (or its provisioning answer) holds: `password` and
/// `<protocol>-endpoint`, by device name.
type Credentials = HashMap<String, BTreeMap<String, String>>;

/// Credentials, endpoints and resolved models of the devices (waits for their Secrets; a
/// gateway's sub-devices need none).
async fn prepare(
    client: &kube::Client,
    args: &SimulateArgs,
    names: &[String],
    mode: Mode,
) -> Result<Vec<Simulated>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let deadline = Instant::now() + Duration::from_secs(300);
    let by_secret = loop {
        if mode == Mode::Gateway {
            break HashMap::new();
        }
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
    let credentials: Credentials = names
        .iter()
        .filter_map(|name| {
            let secret = by_secret.get(&devplane_core::naming::credentials_secret_name(name))?;
            let data = secret.data.as_ref()?;
            let text = data
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            Some((name.clone(), text))
        })
        .collect();
    simulated(client, args, names, &credentials, mode).await
}

/// The devices to simulate, from their credentials.
async fn simulated(
    client: &kube::Client,
    args: &SimulateArgs,
    names: &[String],
    credentials: &Credentials,
    mode: Mode,
) -> Result<Vec<Simulated>, String> {
    let devices: Api<Device> = Api::namespaced(client.clone(), &args.namespace);
    let specs = model_specs(client).await?;
    let mut resolved: HashMap<ModelKey, Arc<ResolvedModel>> = HashMap::new();
    let mut out = Vec::new();
    let text = |s: &BTreeMap<String, String>, key: &str| s.get(key).cloned();
    for name in names {
        let secret = credentials.get(name);
        if secret.is_none() && mode != Mode::Gateway {
            eprintln!("\nsimulate: {name} has no credentials; skipped");
            continue;
        }
        let device = devices
            .get(name)
            .await
            .map_err(|e| format!("get device {name}: {e}"))?;
        let model_key = ModelKey::from_ref(&device.spec.model_ref, &args.namespace);
        let model = match resolved.get(&model_key) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(
                    resolve(&specs, &model_key).map_err(|e| format!("model {model_key}: {e}"))?,
                );
                resolved.insert(model_key.clone(), m.clone());
                m
            }
        };
        let (flag, key, given) = match mode {
            Mode::Http => ("--http-addr", "http-endpoint", args.http_addr),
            Mode::Coap => ("--coaps-addr", "coaps-endpoint", args.coaps_addr),
            Mode::Enos => ("--enos-addr", "enos-endpoint", args.enos_addr),
            _ => ("--mqtt-addr", "mqtt-endpoint", args.mqtt_addr),
        };
        let endpoint = match (given, secret) {
            (Some(addr), _) => addr,
            (None, Some(secret)) => text(secret, key)
                .as_deref()
                .and_then(endpoint_of)
                .ok_or_else(|| format!("{name}: no {key} in its Secret (use {flag})"))?,
            // A sub-device: its gateway connects.
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let enos = match mode {
            Mode::Enos => {
                let spec = specs.get(&model_key);
                let keys = spec.and_then(|spec| enos::keys(&device, spec));
                if keys.is_none() {
                    eprintln!(
                        "\nsimulate: model {model_key} of {name} has no EnOS product key; skipped"
                    );
                    continue;
                }
                keys
            }
            _ => None,
        };
        out.push(Simulated {
            namespace: args.namespace.clone(),
            name: name.clone(),
            password: secret.and_then(|s| text(s, "password")).unwrap_or_default(),
            endpoint,
            model,
            enos,
        });
    }
    Ok(out)
}

/// Every DeviceModel of the cluster.
async fn model_specs(client: &kube::Client) -> Result<BTreeMap<ModelKey, DeviceModelSpec>, String> {
    let models: Api<DeviceModel> = Api::all(client.clone());
    Ok(models
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
        .collect())
}

/// A value for every required attribute without a default (what a new device must be
/// configured with).
fn required_attributes(model: &ResolvedModel) -> serde_json::Map<String, Value> {
    let now = jiff::Timestamp::now().as_millisecond();
    model
        .attributes
        .iter()
        .filter(|(_, f)| f.definition.required && f.definition.default.is_none())
        .map(|(id, f)| {
            (
                id.clone(),
                value::sample((&f.definition.data_type).into(), 0.5, now),
            )
        })
        .collect()
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
        let prefix = prefix.clone();
        let model = device.model.clone();
        let answer_stats = stats.clone();
        answer_publishes(
            reader,
            writer.clone(),
            stats.clone(),
            move |topic, payload| answer(&model, &prefix, topic, payload, &answer_stats),
        )
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
                stats.count_sent(invalid);
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
                stats.count_sent(invalid);
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
/// Serve a simulated connection's incoming packets until it closes: count PUBACKs,
/// acknowledge QoS 1 publishes, and publish what `answer` makes of each (topic and payload).
fn answer_publishes(
    mut reader: mqtt_client::Reader,
    writer: Arc<tokio::sync::Mutex<mqtt_client::Writer>>,
    stats: Arc<Stats>,
    answer: impl Fn(&str, &[u8]) -> Option<(String, Bytes)> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
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
                    if let Some((topic, payload)) = answer(&p.topic, &p.payload) {
                        let _ = w.publish(&topic, payload, QoS::AtLeastOnce, next_pkid());
                    }
                    let _ = w.flush().await;
                }
                _ => {}
            }
        }
    })
}

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
