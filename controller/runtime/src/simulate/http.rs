//! Simulated devices over HTTP: telemetry by POST, the desired attributes read once and
//! reported back, commands by long poll and answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Simulated, Stats, answer, telemetry};

/// The HTTP client every simulated device shares (keep-alive connections).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new shared client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One device's requests, with its Basic credentials.
struct Device<'a> {
    http: &'a HttpClient,
    base: String,
    authorization: String,
}

impl Device<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Value), String> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", &self.authorization);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("request: {e}"))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Run one HTTP device until `stop`.
pub async fn simulate(
    http: &HttpClient,
    device: &Simulated,
    interval: Duration,
    invalid_share: f64,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let user = format!("{}/{}", device.namespace, device.name);
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", device.password));
    let me = Device {
        http,
        base: format!(
            "http://{}/v1/devices/{}/{}/",
            device.endpoint, device.namespace, device.name
        ),
        authorization: format!("Basic {credentials}"),
    };
    // As the MQTT devices do: downlink topics name what arrived, answers go to the uplink path.
    let prefix = format!("d/{user}/");
    let (status, desired) = me.send("GET", "attributes/desired", None).await?;
    if status != 200 {
        return Err(format!(
            "GET attributes/desired answered {status}: {desired}"
        ));
    }
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let downlink = format!("{prefix}attributes/desired");
    if let Some((_, reported)) = answer(
        &device.model,
        &prefix,
        &downlink,
        desired.to_string().as_bytes(),
        stats,
    ) {
        uplink(&me, "attributes/reported", reported, stats).await?;
    }
    let commands = async {
        while !stop.is_cancelled() {
            let (status, body) = match me.send("GET", "commands?waitSeconds=20", None).await {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if status != 200 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            for command in body["commands"].as_array().into_iter().flatten() {
                let name = command["name"].as_str().unwrap_or_default();
                let topic = format!("{prefix}commands/{name}");
                let payload = command.to_string();
                if let Some((_, response)) =
                    answer(&device.model, &prefix, &topic, payload.as_bytes(), stats)
                {
                    let _ =
                        uplink(&me, &format!("commands/{name}/response"), response, stats).await;
                }
            }
        }
    };
    let publishing = publish(&me, device, interval, invalid_share, stats);
    tokio::select! {
        _ = stop.cancelled() => Ok(()),
        _ = commands => Ok(()),
        result = publishing => result,
    }
}

/// Publish telemetry at `interval` until an error.
async fn publish(
    me: &Device<'_>,
    device: &Simulated,
    interval: Duration,
    invalid_share: f64,
    stats: &Stats,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let invalid = rand::rng().random::<f64>() < invalid_share;
        let payload = Bytes::from(telemetry(&device.model, invalid).to_string());
        stats.count_sent(invalid);
        uplink(me, "telemetry", payload, stats).await?;
    }
}

/// POST an uplink message and count the answer: 202 accepted, 400 rejected with its reason.
async fn uplink(me: &Device<'_>, path: &str, body: Bytes, stats: &Stats) -> Result<(), String> {
    let (status, answer) = me.send("POST", path, Some(body)).await?;
    match status {
        202 => {
            stats.acked.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        400 => {
            stats.acked.fetch_add(1, Ordering::Relaxed);
            let reason = answer["reason"].as_str().unwrap_or("Unknown").to_string();
            *stats.rejected.lock().entry(reason).or_default() += 1;
            Ok(())
        }
        // Backpressure: the message is lost, the device goes on.
        429 => Ok(()),
        other => Err(format!("POST {path} answered {other}: {answer}")),
    }
}
