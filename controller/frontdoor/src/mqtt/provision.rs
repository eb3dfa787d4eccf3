//! Zero-touch provisioning over MQTT. A device without credentials connects to the device
//! listener as user `provision/{ns}/{policy}` (client id: its device id; password: its proof,
//! when the policy takes one), subscribes to `provision/{ns}/{policy}/response`, publishes its
//! request — the JSON of the HTTP form; `deviceId` and `proof` default to the client id and the
//! password — on `provision/{ns}/{policy}/request`, and receives the answer on the response
//! topic: the HTTP answer's JSON with its `status` (201, 200, 400, 403, 404, 429 or 503).
//! Nothing else is allowed on such a connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::Shared;
use crate::mqtt::codec::{
    self, AckCode, CloseCode, ConnectInfo, Incoming, Outgoing, SubCode, Version,
};
use crate::provision::{self, Request};
use crate::topic::Identity;

/// Longest a provisioning connection stays idle.
const IDLE: Duration = Duration::from_secs(60);

/// The policy a user name `provision/{ns}/{policy}` names.
pub fn policy_of(username: Option<&str>) -> Option<Identity> {
    let rest = username?.strip_prefix("provision/")?;
    Identity::from_username(rest)
}

fn topics(policy: &Identity) -> (String, String) {
    let base = format!("provision/{}/{}", policy.namespace, policy.name);
    (format!("{base}/request"), format!("{base}/response"))
}

/// Serve one provisioning connection after its CONNECT.
pub async fn serve<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    info: ConnectInfo,
    mut input: BytesMut,
    policy: Identity,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let version = info.version;
    let limit = shared.settings.max_packet_size;
    let (request_topic, response_topic) = topics(&policy);
    let mut output = crate::mqtt::Replies::accepting(version, peer, limit);
    shared.metrics.connections_accepted.inc("provision");
    loop {
        let next = super::next_packet(
            &mut stream,
            version,
            (&mut input, &mut output.bytes),
            limit,
            IDLE,
        );
        let packet = match next.await {
            None => return,
            Some(Ok(packet)) => packet,
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "malformed packet on a provisioning connection");
                shared.metrics.protocol_errors.inc("Malformed");
                close(&mut stream, version, CloseCode::Malformed, e.to_string()).await;
                return;
            }
        };
        match packet {
            Incoming::Subscribe { pkid, filters } => {
                let codes = filters
                    .iter()
                    .map(|(filter, qos)| {
                        if *filter == response_topic {
                            SubCode::Granted((*qos).min(1))
                        } else {
                            SubCode::NotAuthorized
                        }
                    })
                    .collect();
                output.send(Outgoing::SubAck { pkid, codes });
            }
            Incoming::Unsubscribe { pkid, filters } => output.send(Outgoing::UnsubAck {
                pkid,
                count: filters.len(),
            }),
            Incoming::PingReq => output.send(Outgoing::PingResp),
            Incoming::PubAck { .. } => {}
            Incoming::Disconnect { .. } => return,
            Incoming::Publish {
                topic,
                pkid,
                qos,
                payload,
            } => {
                if topic != request_topic {
                    let reason =
                        format!("a provisioning connection publishes only on {request_topic}");
                    if version == Version::V5 && qos > 0 {
                        output.send(Outgoing::PubAck {
                            pkid,
                            code: AckCode::NotAuthorized,
                            reason: Some(reason),
                        });
                        continue;
                    }
                    let _ = stream.write_all(&output.bytes).await;
                    close(&mut stream, version, CloseCode::NotAuthorized, reason).await;
                    return;
                }
                if qos > 0 {
                    output.send(Outgoing::PubAck {
                        pkid,
                        code: AckCode::Success,
                        reason: None,
                    });
                }
                let answer = answer(&shared, &policy, &info, &payload, peer).await;
                output.send(Outgoing::Publish {
                    topic: response_topic.clone(),
                    pkid: 0,
                    qos: 0,
                    payload: Bytes::from(answer.to_string()),
                });
            }
            Incoming::Unexpected(what) => {
                shared.metrics.protocol_errors.inc("ProtocolError");
                close(
                    &mut stream,
                    version,
                    CloseCode::ProtocolError,
                    format!("unexpected {what}"),
                )
                .await;
                return;
            }
        }
    }
}

/// The answer to one request, with its status.
async fn answer(
    shared: &Arc<Shared>,
    policy: &Identity,
    info: &ConnectInfo,
    payload: &[u8],
    peer: std::net::SocketAddr,
) -> Value {
    let parsed: Result<Request, _> = if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(Request::default())
    } else {
        serde_json::from_slice(payload)
    };
    let mut request = match parsed {
        Ok(request) => request,
        Err(e) => {
            let problem = provision::Problem::invalid(format!("the request: {e}"));
            return with_status(400, problem.body());
        }
    };
    if request.device_id.is_none() && !info.client_id.is_empty() {
        request.device_id = Some(info.client_id.clone());
    }
    if request.proof.is_none() {
        request.proof = info.password.clone().filter(|p| !p.is_empty());
    }
    match provision::provision(shared, policy, &request, peer.ip(), None).await {
        Ok(answer) => {
            let status = if answer.created { 201 } else { 200 };
            with_status(status, serde_json::to_value(&answer).unwrap_or_default())
        }
        Err(problem) => with_status(problem.http_status(), problem.body()),
    }
}

fn with_status(status: u16, mut body: Value) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("status".into(), Value::from(status));
    }
    body
}

async fn close<S>(stream: &mut S, version: Version, code: CloseCode, reason: String)
where
    S: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    if codec::write(version, Outgoing::Disconnect { code, reason }, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioning_user_name_names_its_policy() {
        assert_eq!(
            policy_of(Some("provision/plant-a/thermo")),
            Some(Identity::new("plant-a", "thermo"))
        );
        assert_eq!(policy_of(Some("plant-a/thermo")), None);
        assert_eq!(policy_of(Some("provision/plant-a")), None);
        assert_eq!(policy_of(Some("provision/a/b/c")), None);
        assert_eq!(policy_of(None), None);
    }
}
