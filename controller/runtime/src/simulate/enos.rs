//! `devplane simulate --protocol enos`: each device speaks the EnOS device protocol to the
//! front door's EnOS listener — a signed login with its model's product key and its device
//! key, measure points posted as EnOS requests (counted by their replies), service invocations
//! and measure-point sets answered without subscribing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use devplane_api::v1alpha1::{Device, DeviceModelSpec};
use devplane_frontdoor::enos::{envelope, sign, topic};
use rand::Rng;
use rumqttc::mqttbytes::{QoS, v4};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Simulated, Stats, command_output, next_pkid, telemetry};
use crate::mqtt_client::{self, Login};

/// The EnOS product and device key of a device of `model`, if the model is an EnOS product.
pub fn keys(device: &Device, model: &DeviceModelSpec) -> Option<(String, String)> {
    let product_key = model.enos.as_ref()?.product_key.clone();
    let name = device.metadata.name.clone().unwrap_or_default();
    Some((product_key, device.spec.enos_device_key(&name).to_string()))
}

/// The reason of a refused post, from its reply's message (`InvalidValue at …: …`).
fn reason_of(message: &str) -> String {
    message
        .split([' ', ':'])
        .next()
        .filter(|r| !r.is_empty())
        .unwrap_or("Unknown")
        .to_string()
}

/// An answer to a downlink request: the reply topic and payload (None: nothing to answer).
fn answer(
    device: &Simulated,
    topic_name: &str,
    payload: &[u8],
    stats: &Stats,
) -> Option<(String, Bytes)> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    if topic_name.ends_with(topic::REPLY) {
        if topic_name.ends_with("/thing/measurepoint/post_reply") {
            let code = body["code"].as_i64().unwrap_or_default();
            if code != envelope::code::OK {
                let reason = reason_of(body["message"].as_str().unwrap_or_default());
                *stats.rejected.lock().entry(reason).or_default() += 1;
            }
        }
        return None;
    }
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let service = topic_name.rsplit_once("/thing/service/")?.1;
    let data = if service == "measurepoint/set" {
        stats.reported.fetch_add(1, Ordering::Relaxed);
        json!({})
    } else {
        stats.commands.fetch_add(1, Ordering::Relaxed);
        Value::Object(command_output(&device.model, service))
    };
    Some((topic::reply(topic_name), envelope::ok(&id, data)))
}

/// One device over the EnOS profile until `stop`.
pub async fn simulate(
    device: &Simulated,
    interval: Duration,
    invalid_share: f64,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (product_key, device_key) = device
        .enos
        .clone()
        .ok_or("its model has no EnOS product key (spec.enos.productKey)")?;
    let timestamp = jiff::Timestamp::now().as_millisecond().to_string();
    let client_id = format!("{device_key}|securemode=2,signmethod=sha256,timestamp={timestamp}|");
    let username = format!("{device_key}&{product_key}");
    let content = sign::content(&device_key, &device_key, &product_key, &timestamp);
    let password = sign::sign(
        sign::SignMethod::Sha256,
        &content,
        device.password.as_bytes(),
    );
    let login = Login {
        client_id: &client_id,
        username: &username,
        password: &password,
        keep_alive: 60,
    };
    let (reader, writer) = mqtt_client::connect(device.endpoint, None, &login).await?;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let answers = {
        let device = Simulated {
            namespace: device.namespace.clone(),
            name: device.name.clone(),
            password: String::new(),
            endpoint: device.endpoint,
            model: device.model.clone(),
            enos: None,
        };
        let answer_stats = stats.clone();
        super::answer_publishes(
            reader,
            writer.clone(),
            stats.clone(),
            move |topic, payload| answer(&device, topic, payload, &answer_stats),
        )
    };
    let post = format!("/sys/{product_key}/{device_key}/thing/measurepoint/post");
    let mut tick = tokio::time::interval(interval);
    let mut id = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let invalid = rand::rng().random::<f64>() < invalid_share;
                let sample = telemetry(&device.model, invalid);
                id += 1;
                let params = json!({"measurepoints": sample["points"], "time": sample["ts"]});
                let payload = envelope::request(&id.to_string(), "thing.measurepoint.post", params);
                let mut w = writer.lock().await;
                w.publish(&post, payload, QoS::AtLeastOnce, next_pkid())?;
                w.flush().await?;
                stats.count_sent(invalid);
            }
        }
    }
    let _ = writer.lock().await.send(v4::Packet::Disconnect).await;
    answers.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_posts_reason_is_the_first_word_of_its_message() {
        assert_eq!(
            reason_of("InvalidValue at measurepoints.t: out of range"),
            "InvalidValue"
        );
        assert_eq!(reason_of("UnknownPoint: x"), "UnknownPoint");
        assert_eq!(reason_of(""), "Unknown");
    }

    #[test]
    fn the_keys_are_the_models_product_key_and_the_devices_key() {
        let model: DeviceModelSpec =
            serde_yaml::from_str("{version: 1.0.0, enos: {productKey: thhy01}}").expect("spec");
        let device: Device = serde_yaml::from_str(
            "metadata: {name: hall, namespace: home}\nspec: {modelRef: {name: thermo}}",
        )
        .expect("device");
        assert_eq!(
            keys(&device, &model),
            Some(("thhy01".to_string(), "hall".to_string()))
        );
        let plain: DeviceModelSpec = serde_yaml::from_str("{version: 1.0.0}").expect("spec");
        assert_eq!(keys(&device, &plain), None);
    }
}
