//! One simulated gateway: it logs the devices in as its sub-devices (registering them first
//! with `--register`), publishes telemetry for them round-robin at the overall rate, and
//! answers their commands and desired values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use devplane_core::ResolvedModel;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rand::Rng;
use rumqttc::mqttbytes::{QoS, v4};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Simulated, Stats, answer, endpoint_of, next_pkid, telemetry};
use crate::cli::SimulateArgs;
use crate::mqtt_client::{self, Login, Reader, Writer};

/// Most devices one login or register request names (the front door's limit).
const PER_REQUEST: usize = 100;

/// A connected gateway.
pub struct Session {
    reader: Reader,
    writer: Writer,
    /// `d/{ns}/{gw}/`.
    prefix: String,
    namespace: String,
}

/// The names `--register` gives the sub-devices.
pub fn names(args: &SimulateArgs, model: &str, count: u64) -> Vec<String> {
    let gateway = args.gateway.as_deref().unwrap_or("gateway");
    (1..=count)
        .map(|i| format!("{gateway}-{model}-{i:04}"))
        .collect()
}

/// Connect as the gateway with the credentials from its Secret.
pub async fn connect(
    client: &kube::Client,
    args: &SimulateArgs,
    gateway: &str,
) -> Result<Session, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let name = devplane_core::naming::credentials_secret_name(gateway);
    let secret = secrets
        .get(&name)
        .await
        .map_err(|e| format!("the gateway's Secret {}/{name}: {e}", args.namespace))?;
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let endpoint: SocketAddr = match args.mqtt_addr {
        Some(addr) => addr,
        None => text("mqtt-endpoint")
            .as_deref()
            .and_then(endpoint_of)
            .ok_or_else(|| format!("no mqtt-endpoint in {name} (use --mqtt-addr)"))?,
    };
    let user = format!("{}/{gateway}", args.namespace);
    let password = text("password").unwrap_or_default();
    let login = Login {
        client_id: gateway,
        username: &user,
        password: &password,
        keep_alive: 60,
    };
    let (mut reader, mut writer) = mqtt_client::connect(endpoint, None, &login).await?;
    let prefix = format!("d/{user}/");
    let granted = mqtt_client::subscribe(
        &mut reader,
        &mut writer,
        &format!("{prefix}subdevices/+/response"),
        QoS::AtLeastOnce,
    )
    .await?;
    if granted.is_none() {
        return Err("the gateway may not subscribe to its responses".into());
    }
    Ok(Session {
        reader,
        writer,
        prefix,
        namespace: args.namespace.clone(),
    })
}

impl Session {
    /// Send a request and wait for its answer.
    async fn request(&mut self, kind: &str, body: Value) -> Result<Value, String> {
        let topic = format!("{}subdevices/{kind}", self.prefix);
        self.writer.publish(
            &topic,
            Bytes::from(body.to_string()),
            QoS::AtLeastOnce,
            next_pkid(),
        )?;
        self.writer.flush().await?;
        let response = format!("{topic}/response");
        loop {
            let packet = tokio::time::timeout(Duration::from_secs(30), self.reader.next())
                .await
                .map_err(|_| format!("no answer to {kind} within 30 s"))??;
            if let v4::Packet::Publish(p) = packet {
                if p.qos == QoS::AtLeastOnce {
                    self.writer
                        .send(v4::Packet::PubAck(v4::PubAck::new(p.pkid)))
                        .await?;
                }
                if p.topic == response {
                    return serde_json::from_slice(&p.payload)
                        .map_err(|e| format!("the answer to {kind} is not JSON: {e}"));
                }
            }
        }
    }

    /// Send `names` in requests of at most [`PER_REQUEST`]; returns the names whose result
    /// is one of `ok`, and counts the others by result.
    async fn each(
        &mut self,
        kind: &str,
        names: &[String],
        item: impl Fn(&str) -> Value,
        ok: &[&str],
    ) -> Result<(Vec<String>, HashMap<String, usize>), String> {
        let mut done = Vec::new();
        let mut refused: HashMap<String, usize> = HashMap::new();
        for chunk in names.chunks(PER_REQUEST) {
            let devices: Vec<Value> = chunk.iter().map(|n| item(n)).collect();
            let answer = self.request(kind, json!({ "devices": devices })).await?;
            if let Some(error) = answer.get("error") {
                return Err(format!("{kind} refused: {error}"));
            }
            for result in answer["devices"].as_array().into_iter().flatten() {
                let name = result["name"].as_str().unwrap_or_default().to_string();
                let verdict = result["result"].as_str().unwrap_or_default();
                if ok.contains(&verdict) {
                    done.push(name);
                } else {
                    *refused.entry(verdict.to_string()).or_default() += 1;
                }
            }
        }
        Ok((done, refused))
    }
}

/// Register (with `--register`) and log in the sub-devices; returns the session and the names
/// logged in.
pub async fn start(
    mut session: Session,
    args: &SimulateArgs,
    names: &[String],
    attributes: &serde_json::Map<String, Value>,
    stats: &Stats,
) -> Result<(Session, Vec<String>), String> {
    let mut names = names.to_vec();
    if args.register {
        let model = args.model.clone().unwrap_or_default();
        let (registered, refused) = session
            .each(
                "register",
                &names,
                |n| json!({"name": n, "model": model, "attributes": attributes}),
                &["created", "exists"],
            )
            .await?;
        eprintln!(
            "simulate: the gateway registered {} sub-devices{}",
            registered.len(),
            summary(&refused)
        );
        names = registered;
    }
    let (logged_in, refused) = session.each("login", &names, |n| json!(n), &["ok"]).await?;
    eprintln!(
        "simulate: the gateway logged in {} sub-devices{}",
        logged_in.len(),
        summary(&refused)
    );
    stats
        .connected
        .fetch_add(logged_in.len() as u64, Ordering::Relaxed);
    stats
        .failed
        .fetch_add(refused.values().sum::<usize>() as u64, Ordering::Relaxed);
    // Downlink of all logged-in sub-devices; desired values come right after the SUBACK.
    let namespace = session.namespace.clone();
    for filter in ["commands/+", "errors", "attributes/desired"] {
        mqtt_client::subscribe(
            &mut session.reader,
            &mut session.writer,
            &format!("d/{namespace}/+/{filter}"),
            QoS::AtLeastOnce,
        )
        .await?;
    }
    Ok((session, logged_in))
}

fn summary(refused: &HashMap<String, usize>) -> String {
    if refused.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
    parts.sort();
    format!(" (refused: {})", parts.join(", "))
}

/// Publish for the sub-devices round-robin (each at `interval`) and answer their downlink.
pub async fn simulate(
    session: Session,
    devices: Vec<Simulated>,
    interval: Duration,
    invalid_share: f64,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let Session { reader, writer, .. } = session;
    if devices.is_empty() {
        return;
    }
    let models: HashMap<String, Arc<ResolvedModel>> = devices
        .iter()
        .map(|d| (format!("d/{}/{}/", d.namespace, d.name), d.model.clone()))
        .collect();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let answers = {
        let answer_stats = stats.clone();
        super::answer_publishes(
            reader,
            writer.clone(),
            stats.clone(),
            move |topic, payload| {
                let sub = topic.splitn(4, '/').take(3).collect::<Vec<_>>().join("/") + "/";
                let model = models.get(&sub)?;
                answer(model, &sub, topic, payload, &answer_stats)
            },
        )
    };
    let mut tick = tokio::time::interval(interval.div_f64(devices.len() as f64));
    let mut next = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let device = &devices[next % devices.len()];
                next += 1;
                let invalid = rand::rng().random::<f64>() < invalid_share;
                let payload = Bytes::from(telemetry(&device.model, invalid).to_string());
                let topic = format!("d/{}/{}/telemetry", device.namespace, device.name);
                let mut w = writer.lock().await;
                if w.publish(&topic, payload, QoS::AtLeastOnce, next_pkid()).is_err()
                    || w.flush().await.is_err()
                {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                stats.count_sent(invalid);
            }
        }
    }
    let _ = writer.lock().await.send(v4::Packet::Disconnect).await;
    answers.abort();
}
