//! Dynamic activation: a device of a product with dynamic activation on connects in secure
//! mode 3, signed with the product secret. The front door answers on
//! `/ext/session/{pk}/{dk}/thing/activate/info` with its product key, device key and device
//! secret, keeps the connection open until the device's `info_reply`, then closes it; the
//! device reconnects in mode 2. Nothing else is served on such a connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::envelope;
use super::topic;
use crate::Shared;
use crate::mqtt::codec::{AckCode, ConnectInfo, Incoming, Outgoing, SubCode};
use crate::registry::Activation;

/// Longest the front door waits for the device's reply.
const WAIT: Duration = Duration::from_secs(60);

/// Serve one activation after its CONNECT: `activation` with the keys the device presented.
pub async fn serve<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    info: ConnectInfo,
    mut input: BytesMut,
    (activation, product_key, device_key): (Activation, String, String),
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let version = info.version;
    let limit = shared.settings.max_packet_size;
    let info_topic = topic::activate_info(&product_key, &device_key);
    let reply_topic = topic::reply(&info_topic);
    let mut output = crate::mqtt::Replies::accepting(version, peer, limit);
    let secret = String::from_utf8_lossy(&activation.device_secret).into_owned();
    let params = json!({
        "productKey": product_key,
        "deviceKey": device_key,
        "deviceSecret": secret,
    });
    output.send(Outgoing::Publish {
        topic: info_topic,
        pkid: 1,
        qos: 1,
        payload: envelope::request("1", "thing.activate.info", params),
    });
    shared.metrics.connections_accepted.inc("enos-activation");
    tracing::info!(%peer, device = %activation.id, "EnOS dynamic activation: device secret sent");
    loop {
        let next = crate::mqtt::next_packet(
            &mut stream,
            version,
            (&mut input, &mut output.bytes),
            limit,
            WAIT,
        );
        let packet = match next.await {
            None => return,
            Some(Ok(packet)) => packet,
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "malformed packet on an activation connection");
                shared.metrics.protocol_errors.inc("Malformed");
                return;
            }
        };
        match packet {
            Incoming::Publish {
                topic, pkid, qos, ..
            } => {
                if qos > 0 {
                    output.send(Outgoing::PubAck {
                        pkid,
                        code: AckCode::Success,
                        reason: None,
                    });
                }
                if topic == reply_topic {
                    tracing::info!(%peer, device = %activation.id, "EnOS dynamic activation answered");
                    let _ = stream.write_all(&output.bytes).await;
                    let _ = stream.shutdown().await;
                    return;
                }
            }
            Incoming::Subscribe { pkid, filters } => {
                let codes = filters
                    .iter()
                    .map(|(_, qos)| SubCode::Granted((*qos).min(1)))
                    .collect();
                output.send(Outgoing::SubAck { pkid, codes });
            }
            Incoming::Unsubscribe { pkid, filters } => output.send(Outgoing::UnsubAck {
                pkid,
                count: filters.len(),
            }),
            Incoming::PingReq => output.send(Outgoing::PingResp),
            Incoming::PubAck { .. } => {}
            Incoming::Disconnect { .. } | Incoming::Unexpected(_) => return,
        }
    }
}
