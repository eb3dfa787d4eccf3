//! A small MQTT 3.1.1 client for `devplane simulate` and `devplane bench mqtt`: connect (from a
//! chosen source address), subscribe, pipelined QoS 1 publishes, and reading packets — split
//! into a reader and a writer so one task can publish while another counts acknowledgements.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{QoS, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The largest packet the client reads.
const MAX_PACKET: usize = 1 << 20;

/// The reading half of a connection.
pub struct Reader {
    stream: OwnedReadHalf,
    buf: BytesMut,
}

/// The writing half of a connection.
pub struct Writer {
    stream: OwnedWriteHalf,
    buf: BytesMut,
}

/// How to log in.
pub struct Login<'a> {
    /// Client id.
    pub client_id: &'a str,
    /// User name.
    pub username: &'a str,
    /// Password.
    pub password: &'a str,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
}

/// Connect to `addr` (from `source`, if given) and log in; errors name the CONNACK code.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    login: &Login<'_>,
) -> Result<(Reader, Writer), String> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = Reader {
        stream: read,
        buf: BytesMut::with_capacity(256),
    };
    let mut writer = Writer {
        stream: write,
        buf: BytesMut::with_capacity(256),
    };
    let mut connect = v4::Connect::new(login.client_id);
    connect.keep_alive = login.keep_alive;
    connect.set_login(login.username, login.password);
    writer.send(v4::Packet::Connect(connect)).await?;
    match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
        Ok(Ok(v4::Packet::ConnAck(ack))) if ack.code == v4::ConnectReturnCode::Success => {
            Ok((reader, writer))
        }
        Ok(Ok(v4::Packet::ConnAck(ack))) => Err(format!("connection refused: {:?}", ack.code)),
        Ok(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no CONNACK within 30 s".into()),
    }
}

impl Reader {
    /// The next packet.
    pub async fn next(&mut self) -> Result<v4::Packet, String> {
        loop {
            match v4::Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(format!("bad packet: {e}")),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
        }
    }
}

impl Writer {
    /// Queue a packet (written by [`Writer::flush`]).
    pub fn queue(&mut self, packet: v4::Packet) -> Result<(), String> {
        packet
            .write(&mut self.buf, MAX_PACKET)
            .map(|_| ())
            .map_err(|e| format!("encode: {e}"))
    }

    /// Write what is queued.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.buf)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        Ok(())
    }

    /// Queue and write one packet.
    pub async fn send(&mut self, packet: v4::Packet) -> Result<(), String> {
        self.queue(packet)?;
        self.flush().await
    }

    /// Queue a PUBLISH.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        pkid: u16,
    ) -> Result<(), String> {
        let mut publish = v4::Publish::from_bytes(topic, qos, payload);
        publish.pkid = pkid;
        self.queue(v4::Packet::Publish(publish))
    }
}

/// Subscribe to `filter` and wait for the SUBACK; returns the granted QoS (None: refused).
pub async fn subscribe(
    reader: &mut Reader,
    writer: &mut Writer,
    filter: &str,
    qos: QoS,
) -> Result<Option<u8>, String> {
    let mut subscribe = v4::Subscribe::new(filter, qos);
    subscribe.pkid = 1;
    writer.send(v4::Packet::Subscribe(subscribe)).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), reader.next()).await {
            Ok(Ok(v4::Packet::SubAck(ack))) => {
                return Ok(match ack.return_codes.first() {
                    Some(v4::SubscribeReasonCode::Success(q)) => Some(*q as u8),
                    _ => None,
                });
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("no SUBACK within 30 s".into()),
        }
    }
}
