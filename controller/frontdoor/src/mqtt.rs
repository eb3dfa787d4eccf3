//! MQTT 3.1.1 and 5 for devices and applications: the codec adapter and the session.

pub mod codec;
pub mod provision;
pub mod session;

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use codec::{DecodeError, Incoming, Version};

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
