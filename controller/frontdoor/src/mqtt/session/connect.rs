//! The start of a session: a CONNECT that cannot be read, and who a CONNECT logs in as.

use std::net::SocketAddr;

use bytes::BytesMut;
use devplane_api::v1alpha1::Protocol;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Listener, Role};
use crate::Shared;
use crate::mqtt::codec::{self, ConnectCode, ConnectInfo, DecodeError, Outgoing, Version};
use crate::registry::{PasswordTag, Refusal};
use crate::topic;

pub(super) async fn refuse_malformed_connect<S>(
    stream: &mut S,
    peer: SocketAddr,
    shared: &Shared,
    e: DecodeError,
) where
    S: AsyncWrite + Unpin,
{
    let reason = match &e {
        DecodeError::UnsupportedVersion { .. } => "UnsupportedVersion",
        DecodeError::TooLarge { .. } => "PacketTooLarge",
        DecodeError::NotConnect => "NotConnect",
        _ => "MalformedConnect",
    };
    shared.metrics.protocol_errors.inc(reason);
    tracing::warn!(%peer, error = %e, "closing a connection: bad CONNECT");
    if let DecodeError::UnsupportedVersion { .. } = e {
        // MQTT 3.1 and other levels read a v3.1.1 CONNACK with code 1.
        let mut out = BytesMut::new();
        let _ = codec::write(
            Version::V4,
            Outgoing::ConnAck {
                code: ConnectCode::UnsupportedVersion,
                session_present: false,
                reason: None,
                receive_maximum: 0,
                maximum_packet_size: 0,
            },
            &mut out,
        );
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

pub(super) fn authenticate(
    info: &ConnectInfo,
    listener: Listener,
    shared: &Shared,
) -> Result<(Role, PasswordTag), (ConnectCode, String)> {
    let username = info.username.as_deref().unwrap_or("");
    let password = info.password.as_deref().unwrap_or("").as_bytes();
    let now = jiff::Timestamp::now();
    let refused = |r: Refusal| match r {
        Refusal::BadCredentials => (
            ConnectCode::BadCredentials,
            "bad user name or password".to_string(),
        ),
        Refusal::NotAuthorized(why) => (ConnectCode::NotAuthorized, why),
    };
    match listener {
        Listener::Device | Listener::DeviceTls | Listener::Enos | Listener::EnosTls => {
            let (role, tag) = {
                let registry = shared.registry.read();
                // Devices and gateways share the `d/{ns}/{name}/` tree and so the user names.
                match registry.authenticate_device(username, password, Protocol::Mqtt, now) {
                    Ok((id, tag)) => (Role::Device(id), tag),
                    Err(Refusal::BadCredentials) => {
                        let (id, tag) = registry
                            .authenticate_gateway(username, password, Protocol::Mqtt, now)
                            .map_err(refused)?;
                        (Role::Gateway(id), tag)
                    }
                    Err(other) => return Err(refused(other)),
                }
            };
            let (Role::Device(id) | Role::Gateway(id)) = &role else {
                unreachable!("a device listener authenticates devices and gateways");
            };
            if let Some(will) = &info.will
                && let Err(denial) = topic::classify_publish(id, &will.topic)
            {
                shared.metrics.deny(denial);
                return Err((
                    ConnectCode::NotAuthorized,
                    format!(
                        "will topic {:?} is not one of the device's uplink topics ({denial})",
                        will.topic
                    ),
                ));
            }
            Ok((role, tag))
        }
        Listener::Application => {
            let (id, tag) = shared
                .registry
                .read()
                .authenticate_application(username, password, now)
                .map_err(refused)?;
            if info.will.is_some() {
                return Err((
                    ConnectCode::NotAuthorized,
                    "applications only read: no will".to_string(),
                ));
            }
            Ok((Role::Application(id), tag))
        }
    }
}
