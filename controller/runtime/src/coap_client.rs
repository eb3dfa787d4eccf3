//! A small CoAP client for `devplane simulate` and `devplane bench coap`: plain UDP or DTLS
//! 1.2 with a pre-shared key (webrtc-dtls's client), requests matched to their answers by
//! token (piggybacked or separate), observations delivered on a channel, our side of the
//! exchange acknowledged. Confirmable requests are retransmitted per RFC 7252 §4.2.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;

/// How long a confirmable request waits for its first answer before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Retransmissions of a confirmable request.
const MAX_RETRANSMIT: u32 = 4;
/// How long an acknowledged request waits for its separate response.
const SEPARATE_WAIT: Duration = Duration::from_secs(10);

enum Transport {
    Plain(Arc<UdpSocket>),
    Dtls(Arc<DTLSConn>),
}

impl Transport {
    async fn send(&self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Transport::Plain(socket) => socket
                .send(bytes)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Transport::Dtls(conn) => conn
                .write(bytes, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, String> {
        match self {
            Transport::Plain(socket) => socket.recv(buf).await.map_err(|e| e.to_string()),
            Transport::Dtls(conn) => conn.read(buf, None).await.map_err(|e| e.to_string()),
        }
    }
}

/// What a request is waiting for.
struct Waiting {
    /// Told when the empty ACK of a separate response came.
    acknowledged: Option<oneshot::Sender<()>>,
    answer: oneshot::Sender<Packet>,
}

/// Requests waiting, by token (answers) and by message ID (empty ACKs).
#[derive(Default)]
struct Pending {
    by_token: HashMap<Vec<u8>, Waiting>,
    by_id: HashMap<u16, Vec<u8>>,
}

/// A CoAP client of one server.
pub struct Client {
    transport: Arc<Transport>,
    next_id: AtomicU16,
    next_token: AtomicU64,
    waiting: Arc<Mutex<Pending>>,
    observing: Arc<Mutex<HashMap<Vec<u8>, mpsc::Sender<Packet>>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A request's method, path, payload and kind.
pub struct Request<'a> {
    /// GET or POST.
    pub method: RequestType,
    /// `d/ns/name/telemetry`.
    pub path: &'a str,
    /// Payload (sent as application/json when not empty).
    pub payload: &'a [u8],
    /// Confirmable (else non-confirmable, answered or not, never retransmitted).
    pub confirmable: bool,
    /// The Observe option.
    pub observe: Option<u32>,
}

impl Client {
    /// A client over plain UDP.
    pub async fn plain(server: SocketAddr) -> Result<Client, String> {
        let socket = local_socket(server)?;
        socket
            .connect(server)
            .await
            .map_err(|e| format!("connect {server}: {e}"))?;
        Ok(Self::start(Transport::Plain(Arc::new(socket))))
    }

    /// A client over DTLS 1.2 with a pre-shared key.
    pub async fn dtls(server: SocketAddr, identity: &str, key: &[u8]) -> Result<Client, String> {
        let socket = local_socket(server)?;
        socket
            .connect(server)
            .await
            .map_err(|e| format!("connect {server}: {e}"))?;
        let key = key.to_vec();
        let config = Config {
            psk: Some(Arc::new(move |_hint: &[u8]| Ok(key.clone()))),
            psk_identity_hint: Some(identity.as_bytes().to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            server_name: "devplane".into(),
            ..Config::default()
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(15),
            DTLSConn::new(Arc::new(socket), config, true, None),
        )
        .await
        .map_err(|_| format!("DTLS handshake with {server} timed out"))?
        .map_err(|e| format!("DTLS handshake with {server}: {e}"))?;
        Ok(Self::start(Transport::Dtls(Arc::new(conn))))
    }

    fn start(transport: Transport) -> Client {
        let transport = Arc::new(transport);
        let waiting: Arc<Mutex<Pending>> = Arc::default();
        let observing: Arc<Mutex<HashMap<Vec<u8>, mpsc::Sender<Packet>>>> = Arc::default();
        let reader = tokio::spawn(read(transport.clone(), waiting.clone(), observing.clone()));
        Client {
            transport,
            next_id: AtomicU16::new(rand::random()),
            next_token: AtomicU64::new(rand::random()),
            waiting,
            observing,
            reader,
        }
    }

    /// Send a request and wait for its answer.
    pub async fn request(&self, request: &Request<'_>) -> Result<Packet, String> {
        let token = self
            .next_token
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes()
            .to_vec();
        self.exchange(request, token).await
    }

    /// Observe a resource: the first answer, then every notification on the channel.
    pub async fn observe(&self, path: &str) -> Result<(Packet, mpsc::Receiver<Packet>), String> {
        let token = self
            .next_token
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes()
            .to_vec();
        let (tx, rx) = mpsc::channel(16);
        self.observing.lock().insert(token.clone(), tx);
        let request = Request {
            method: RequestType::Get,
            path,
            payload: b"",
            confirmable: true,
            observe: Some(0),
        };
        let first = self.exchange(&request, token).await?;
        Ok((first, rx))
    }

    async fn exchange(&self, request: &Request<'_>, token: Vec<u8>) -> Result<Packet, String> {
        let message_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode(request, message_id, &token)?;
        let (answer_tx, mut answer_rx) = oneshot::channel();
        let (ack_tx, mut ack_rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            waiting.by_token.insert(
                token.clone(),
                Waiting {
                    acknowledged: Some(ack_tx),
                    answer: answer_tx,
                },
            );
            waiting.by_id.insert(message_id, token.clone());
        }
        let result = async {
            let mut timeout = ACK_TIMEOUT;
            let attempts = if request.confirmable { MAX_RETRANSMIT + 1 } else { 1 };
            for _ in 0..attempts {
                self.transport.send(&bytes).await?;
                tokio::select! {
                    answer = &mut answer_rx => return answer.map_err(|_| "the client stopped".to_string()),
                    Ok(()) = &mut ack_rx => {
                        // A separate response follows.
                        return match tokio::time::timeout(SEPARATE_WAIT, answer_rx).await {
                            Ok(Ok(answer)) => Ok(answer),
                            _ => Err("no separate response".to_string()),
                        };
                    }
                    _ = tokio::time::sleep(timeout) => timeout *= 2,
                }
            }
            Err(format!("no answer to {}", request.path))
        }
        .await;
        {
            let mut waiting = self.waiting.lock();
            waiting.by_token.remove(&token);
            waiting.by_id.remove(&message_id);
        }
        result
    }
}

/// A socket on an ephemeral port of the server's address family.
fn local_socket(server: SocketAddr) -> Result<UdpSocket, String> {
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    crate::frontdoor::udp_socket(any).map_err(|e| format!("bind: {e}"))
}

fn encode(request: &Request<'_>, message_id: u16, token: &[u8]) -> Result<Vec<u8>, String> {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(if request.confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    });
    packet.header.message_id = message_id;
    packet.header.code = MessageClass::Request(request.method);
    packet.set_token(token.to_vec());
    if let Some(observe) = request.observe {
        packet.add_option(CoapOption::Observe, uint(observe));
    }
    for segment in request.path.split('/').filter(|s| !s.is_empty()) {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    if !request.payload.is_empty() {
        packet.add_option(CoapOption::ContentFormat, vec![50]);
        packet.payload = request.payload.to_vec();
    }
    packet.to_bytes_unlimited().map_err(|e| e.to_string())
}

fn uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Read answers and notifications until the transport ends.
async fn read(
    transport: Arc<Transport>,
    waiting: Arc<Mutex<Pending>>,
    observing: Arc<Mutex<HashMap<Vec<u8>, mpsc::Sender<Packet>>>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(n) = transport.recv(&mut buf).await else {
            return;
        };
        let Ok(packet) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        let kind = packet.header.get_type();
        if matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable)
            && packet.header.code == MessageClass::Empty
        {
            continue;
        }
        if kind == MessageType::Confirmable {
            let mut ack = Packet::new();
            ack.header.set_version(1);
            ack.header.set_type(MessageType::Acknowledgement);
            ack.header.message_id = packet.header.message_id;
            if let Ok(bytes) = ack.to_bytes() {
                let _ = transport.send(&bytes).await;
            }
        }
        if packet.header.code == MessageClass::Empty {
            // The empty ACK of a separate response: matched by message ID.
            if kind == MessageType::Acknowledgement {
                let mut waiting = waiting.lock();
                let token = waiting.by_id.get(&packet.header.message_id).cloned();
                if let Some(w) = token.and_then(|t| waiting.by_token.get_mut(&t))
                    && let Some(ack) = w.acknowledged.take()
                {
                    let _ = ack.send(());
                }
            }
            continue;
        }
        let token = packet.get_token().to_vec();
        let answered = waiting.lock().by_token.remove(&token);
        if let Some(w) = answered {
            let _ = w.answer.send(packet);
            continue;
        }
        let observer = observing.lock().get(&token).cloned();
        if let Some(tx) = observer {
            let _ = tx.try_send(packet);
        }
    }
}
