//! MQTT 3.1.1 and 5 for devices and applications: the codec adapter and the session.

pub mod codec;
pub mod provision;
pub mod session;

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use codec::{ConnectCode, DecodeError, Incoming, Outgoing, Version};

/// What a small session (provisioning, EnOS activation) writes next. It opens with the
/// CONNACK that accepts the session, one message in flight at a time; a packet that cannot be
/// encoded is logged and left out.
pub(crate) struct Replies {
    version: Version,
    peer: std::net::SocketAddr,
    /// The encoded packets not written yet.
    pub(crate) bytes: BytesMut,
}

impl Replies {
    /// Replies that start with the accepting CONNACK.
    pub(crate) fn accepting(version: Version, peer: std::net::SocketAddr, limit: usize) -> Replies {
        let mut replies = Replies {
            version,
            peer,
            bytes: BytesMut::new(),
        };
        replies.send(Outgoing::ConnAck {
            code: ConnectCode::Success,
            session_present: false,
            reason: None,
            receive_maximum: 1,
            maximum_packet_size: u32::try_from(limit).unwrap_or(u32::MAX),
        });
        replies
    }

    /// Encode `packet` after what is queued.
    pub(crate) fn send(&mut self, packet: Outgoing) {
        if let Err(e) = codec::write(self.version, packet, &mut self.bytes) {
            tracing::warn!(peer = %self.peer, error = %e, "cannot encode a packet");
        }
    }
}

/// For the small sessions that answer one request at a time (provisioning, EnOS activation):
/// write what `output` holds, then read the next packet. None when a write fails, the peer
/// goes, or it stays silent for `idle`.
pub(crate) async fn next_packet<S>(
    stream: &mut S,
    version: Version,
    (input, output): (&mut BytesMut, &mut BytesMut),
    limit: usize,
    idle: Duration,
) -> Option<Result<Incoming, DecodeError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !output.is_empty() {
        stream.write_all(output).await.ok()?;
        output.clear();
    }
    loop {
        match codec::read(version, input, limit) {
            Err(DecodeError::Incomplete) => {
                input.reserve(4096);
                match tokio::time::timeout(idle, stream.read_buf(input)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                }
            }
            other => return Some(other),
        }
    }
}
