//! CoAP for devices (RFC 7252 over UDP; DTLS 1.2 with pre-shared keys): the same identity,
//! authorization and validation as MQTT and HTTP, on the resources `/d/{ns}/{name}/…`.
//!
//! - Over DTLS (`--coaps-addr`) the PSK identity is `{ns}/{name}` and the key the device
//!   Secret's password; a device acts only on its own path (another device's path: 4.03).
//! - Plain CoAP (`--coap-addr`, only with `--coap-insecure-dev`) carries no credentials: the
//!   path's device is trusted. It exists for local tests and is off otherwise.
//!
//! Uplink answers 2.04 once ingest took the message, 4.00 with `{"reason","field","message"}`
//! for an invalid payload, 4.01 when the session's key was revoked or rotated out, 4.03 for a
//! foreign path or a device that may not connect, 4.13 for an oversize message and 5.03 with
//! Max-Age while ingest is full. Confirmable requests are answered piggybacked; while ingest is
//! full the request is acknowledged at once and answered separately when ingest took it (or
//! 5.03 after a moment). Message IDs are deduplicated per peer within the exchange lifetime.
//! `GET attributes/desired` and `GET commands` are observable (RFC 7641): desired changes and
//! new commands are pushed as confirmable notifications. Presence follows the requests, as for
//! HTTP devices.
//!
//! - [`message`]: the wire (header sniffing, routes, options, responses), pure;
//! - [`exchange`]: one peer's dedup, observations and retransmissions, pure;
//! - this module: peers and datagrams (dedup, piggybacked and separate answers), plain CoAP;
//! - `request`: answering a request (routes, authorization, resources);
//! - `downlink`: notifications, retransmissions and sweeps;
//! - `dtls`: the DTLS listener (sessions by peer address over one UDP socket).

pub mod exchange;
pub mod message;

mod downlink;
mod dtls;
mod request;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageType, Packet, ResponseType};
use devplane_api::v1alpha1::Protocol;
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::ingest;
use crate::registry::PasswordTag;
use crate::topic::Identity;

pub use dtls::serve as serve_dtls;
use exchange::{Dedup, Exchange};
use message::{Head, Reply, Sniff};

/// Longest a request waits for room in ingest before it is answered 5.03.
const INGEST_WAIT: Duration = Duration::from_millis(200);
/// Requests that may wait for ingest at once (beyond that: 5.03 at once).
const MAX_WAITING: usize = 256;
/// Max-Age of a 5.03: when to try again, seconds.
const RETRY_SECONDS: u32 = 1;
/// DTLS sessions one device may hold at once.
const SESSIONS_PER_DEVICE: usize = 4;
/// Largest datagram read (the UDP maximum).
const DATAGRAM: usize = 65_536;

/// Who a peer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Authenticated by DTLS PSK: the device and the tag of the key it used.
    Device {
        /// The device.
        id: Identity,
        /// The HMAC of its key (a rotation or revocation ends the session).
        tag: PasswordTag,
    },
    /// Plain CoAP in insecure dev mode: no credentials, the path's device is trusted.
    Insecure,
    /// A device provisioning itself over DTLS: its PSK identity
    /// `provision/{ns}/{policy}/{deviceId}` and its derived key proved who it is.
    Provisioning {
        /// The policy.
        policy: Identity,
        /// The device id.
        device_id: String,
        /// Its derived key, base64 (what it proved in the handshake).
        proof: String,
    },
}

impl Principal {
    /// The authenticated device, if any.
    fn device(&self) -> Option<&Identity> {
        match self {
            Principal::Device { id, .. } => Some(id),
            Principal::Insecure | Principal::Provisioning { .. } => None,
        }
    }
}

/// How messages reach a peer outside a request's answer (separate responses, notifications,
/// retransmissions).
#[derive(Clone)]
pub enum Link {
    /// Datagrams on the listener's socket.
    Plain(Arc<UdpSocket>),
    /// The peer's DTLS session.
    Dtls(Arc<webrtc_dtls::conn::DTLSConn>),
}

impl Link {
    async fn send(&self, peer: SocketAddr, bytes: &[u8]) {
        let result = match self {
            Link::Plain(socket) => socket.send_to(bytes, peer).await.map(|_| ()),
            Link::Dtls(conn) => conn
                .write(bytes, Some(Duration::from_secs(5)))
                .await
                .map(|_| ())
                .map_err(std::io::Error::other),
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %devplane_core::report::chain(&e), "cannot send a CoAP message");
        }
    }
}

/// One peer: how to reach it, who it is and its exchange state.
struct Peer {
    link: Link,
    principal: Principal,
    exchange: Exchange,
    heard: Instant,
    /// Ends a DTLS session (None for plain peers).
    kill: Option<CancellationToken>,
    /// The DTLS session's number (a newer session of the same address replaces it).
    session: u64,
}

/// The peers of one CoAP listener.
pub struct Endpoint {
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    waiting: Arc<Semaphore>,
}

/// What answering a request produced.
enum Outcome {
    /// A response now (piggybacked on the ACK of a confirmable request).
    Reply(Reply),
    /// Ingest is full: acknowledge now, answer when it took the record (a separate response).
    Busy(Box<ingest::Accepted>, Identity),
    /// Acknowledge now, answer when the work is done (a separate response).
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>),
}

impl Endpoint {
    /// An endpoint without peers.
    pub fn new() -> Arc<Endpoint> {
        Arc::new(Endpoint {
            peers: Mutex::new(HashMap::new()),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
        })
    }

    /// How many peers it holds.
    pub fn peer_count(&self) -> usize {
        self.peers.lock().len()
    }

    fn new_peer(
        shared: &Shared,
        link: Link,
        principal: Principal,
        kill: Option<CancellationToken>,
        session: u64,
    ) -> Peer {
        let settings = &shared.settings;
        Peer {
            link,
            principal,
            exchange: Exchange::new(
                settings.coap_dedup_per_peer,
                settings.coap_observers_per_peer,
                rand::random(),
            ),
            heard: Instant::now(),
            kill,
            session,
        }
    }

    /// Admit a plain peer (known already, or new while there is room).
    fn admit_plain(&self, shared: &Shared, peer: SocketAddr, socket: &Arc<UdpSocket>) -> bool {
        let mut peers = self.peers.lock();
        if peers.contains_key(&peer) {
            return true;
        }
        if peers.len() >= shared.settings.coap_max_peers {
            let now = Instant::now();
            peers.retain(|_, p| {
                p.exchange.is_busy() || now.duration_since(p.heard) < exchange::EXCHANGE_LIFETIME
            });
            if peers.len() >= shared.settings.coap_max_peers {
                return false;
            }
        }
        peers.insert(
            peer,
            Self::new_peer(
                shared,
                Link::Plain(socket.clone()),
                Principal::Insecure,
                None,
                0,
            ),
        );
        shared.metrics.connections_accepted.inc("coap");
        true
    }

    /// Register a DTLS session's peer.
    fn admit_session(
        &self,
        shared: &Shared,
        peer: SocketAddr,
        conn: Arc<webrtc_dtls::conn::DTLSConn>,
        principal: Principal,
        kill: CancellationToken,
        session: u64,
    ) {
        let mut peers = self.peers.lock();
        // A device may hold a few sessions at once (an observer beside short exchanges, as
        // libcoap's tools make); beyond that its least recently heard session ends.
        let device = principal.device().cloned();
        let mine: Vec<(SocketAddr, Instant)> = peers
            .iter()
            .filter(|(_, p)| {
                p.principal.device().is_some() && p.principal.device() == device.as_ref()
            })
            .map(|(addr, p)| (*addr, p.heard))
            .collect();
        if mine.len() >= SESSIONS_PER_DEVICE
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, heard)| *heard)
            && let Some(old) = peers.remove(oldest)
            && let Some(kill) = old.kill
        {
            kill.cancel();
        }
        let old = peers.insert(
            peer,
            Self::new_peer(shared, Link::Dtls(conn), principal, Some(kill), session),
        );
        if let Some(kill) = old.and_then(|p| p.kill) {
            kill.cancel();
        }
    }

    /// Forget a DTLS session's peer (unless a newer session of the address replaced it).
    fn remove_session(&self, peer: SocketAddr, session: u64) {
        let mut peers = self.peers.lock();
        if peers.get(&peer).is_some_and(|p| p.session == session) {
            peers.remove(&peer);
        }
    }

    /// Whether a peer holds nothing worth a session (no observation, nothing in flight).
    fn is_idle(&self, peer: SocketAddr) -> bool {
        self.peers
            .lock()
            .get(&peer)
            .is_none_or(|p| !p.exchange.is_busy())
    }

    /// Handle one datagram of a known peer; returns the messages to send back to it at once.
    pub async fn datagram(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        data: &[u8],
    ) -> Vec<Vec<u8>> {
        let head = match message::sniff(data) {
            Sniff::TooShort => {
                shared.metrics.protocol_errors.inc("CoapTruncated");
                tracing::debug!(%peer, "ignored a datagram shorter than a CoAP header");
                return Vec::new();
            }
            Sniff::BadVersion(version) => {
                shared.metrics.protocol_errors.inc("CoapBadVersion");
                tracing::debug!(%peer, version, "ignored a CoAP message of an unknown version");
                return Vec::new();
            }
            Sniff::Head(head) => head,
        };
        let principal = {
            let mut peers = self.peers.lock();
            let Some(state) = peers.get_mut(&peer) else {
                return Vec::new();
            };
            state.heard = Instant::now();
            match head.kind {
                MessageType::Acknowledgement => {
                    state.exchange.acknowledged(head.message_id);
                    return Vec::new();
                }
                MessageType::Reset => {
                    if let Some(o) = state.exchange.reset(head.message_id) {
                        tracing::debug!(%peer, device = %o.device, "the peer cancelled an observation with a reset");
                    }
                    return Vec::new();
                }
                _ => {}
            }
            state.principal.clone()
        };
        let confirmable = head.kind == MessageType::Confirmable;
        let reject = || {
            if confirmable {
                vec![message::empty(MessageType::Reset, head.message_id)]
            } else {
                Vec::new()
            }
        };
        if head.code == 0 {
            // An empty confirmable message is a ping: a reset answers it (RFC 7252 §4.3).
            return reject();
        }
        if !head.is_request() {
            shared.metrics.protocol_errors.inc("CoapNotARequest");
            return reject();
        }
        let Some(token) = head.token.clone() else {
            shared.metrics.protocol_errors.inc("CoapMalformed");
            tracing::debug!(%peer, "rejected a CoAP message with a bad token length");
            return reject();
        };
        let max = shared.settings.coap_max_message;
        if data.len() > max {
            shared.metrics.protocol_errors.inc("CoapTooLarge");
            let mut reply = Reply::problem(
                ResponseType::RequestEntityTooLarge,
                "PayloadTooLarge",
                "",
                format!(
                    "the message has {} bytes; at most {max} are accepted (no block-wise transfer)",
                    data.len()
                ),
            );
            reply.size1 = u32::try_from(max).ok();
            return self.answer(&head, &token, peer, reply, false);
        }
        let packet = match Packet::from_bytes(data) {
            Ok(_) if message::marker_without_payload(data, token.len()) => {
                shared.metrics.protocol_errors.inc("CoapMalformed");
                tracing::debug!(%peer, "rejected a CoAP message with a payload marker and no payload");
                return reject();
            }
            Ok(packet) => packet,
            Err(e) => {
                shared.metrics.protocol_errors.inc("CoapMalformed");
                tracing::debug!(%peer, error = %e, "rejected a malformed CoAP message");
                return reject();
            }
        };
        let dedup = match self.peers.lock().get_mut(&peer) {
            Some(state) => state
                .exchange
                .check(head.message_id, confirmable, Instant::now()),
            None => return Vec::new(),
        };
        if let Dedup::Again(answer) = dedup {
            return answer.into_iter().map(|b| b.to_vec()).collect();
        }
        match self.request(shared, peer, &principal, &token, &packet) {
            Outcome::Reply(reply) => self.answer(&head, &token, peer, reply, true),
            Outcome::Busy(accepted, id) => {
                let ingested = shared.clone();
                let work = Box::pin(async move {
                    match tokio::time::timeout(INGEST_WAIT, ingested.ingest.send(*accepted)).await {
                        Ok(Ok(())) => {
                            ingested.seen(Protocol::Coap, &id, peer);
                            Reply::empty(ResponseType::Changed)
                        }
                        _ => busy(),
                    }
                });
                self.defer(&head, token, peer, work)
            }
            Outcome::Later(work) => self.defer(&head, token, peer, work),
        }
    }

    /// Encode `reply` to a request (ACK for CON, NON for NON) and, with `remember`, keep it
    /// for duplicates.
    fn answer(
        &self,
        head: &Head,
        token: &[u8],
        peer: SocketAddr,
        reply: Reply,
        remember: bool,
    ) -> Vec<Vec<u8>> {
        let mut peers = self.peers.lock();
        let Some(state) = peers.get_mut(&peer) else {
            return Vec::new();
        };
        let confirmable = head.kind == MessageType::Confirmable;
        let bytes = if confirmable {
            message::encode(MessageType::Acknowledgement, head.message_id, token, &reply)
        } else {
            let id = state.exchange.next_message_id();
            message::encode(MessageType::NonConfirmable, id, token, &reply)
        };
        if remember {
            let kept = confirmable.then(|| Bytes::from(bytes.clone()));
            state.exchange.answered(head.message_id, kept);
        }
        vec![bytes]
    }

    /// Acknowledge a confirmable request now and answer it separately once `work` is done
    /// (ingest took the record, or 5.03 after [`INGEST_WAIT`]; a device provisioned).
    fn defer(
        self: &Arc<Self>,
        head: &Head,
        token: Vec<u8>,
        peer: SocketAddr,
        work: std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>,
    ) -> Vec<Vec<u8>> {
        let Ok(permit) = self.waiting.clone().try_acquire_owned() else {
            return self.answer(head, &token, peer, busy(), true);
        };
        let confirmable = head.kind == MessageType::Confirmable;
        let (now, link) = {
            let mut peers = self.peers.lock();
            let Some(state) = peers.get_mut(&peer) else {
                return Vec::new();
            };
            let now = if confirmable {
                let ack = message::empty(MessageType::Acknowledgement, head.message_id);
                state
                    .exchange
                    .answered(head.message_id, Some(Bytes::from(ack.clone())));
                vec![ack]
            } else {
                state.exchange.answered(head.message_id, None);
                Vec::new()
            };
            (now, state.link.clone())
        };
        let endpoint = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = work.await;
            let bytes = {
                let mut peers = endpoint.peers.lock();
                let Some(state) = peers.get_mut(&peer) else {
                    return;
                };
                let message_id = state.exchange.next_message_id();
                let kind = if confirmable {
                    MessageType::Confirmable
                } else {
                    MessageType::NonConfirmable
                };
                let bytes = message::encode(kind, message_id, &token, &reply);
                if confirmable {
                    let copy = Bytes::from(bytes.clone());
                    state
                        .exchange
                        .expect_ack(message_id, copy, None, false, Instant::now());
                }
                bytes
            };
            link.send(peer, &bytes).await;
        });
        now
    }
}

fn busy() -> Reply {
    Reply::problem(
        ResponseType::ServiceUnavailable,
        "Busy",
        "",
        "ingest is full; retry",
    )
    .max_age(RETRY_SECONDS)
}

/// Serve plain CoAP (insecure dev mode) on `socket` until shutdown.
pub async fn serve_plain(socket: UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let endpoint = Endpoint::new();
    tokio::spawn(endpoint.clone().downlink(shared.clone(), shutdown.clone()));
    // Several readers on one socket: each datagram goes to one of them.
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (socket, shared, endpoint, shutdown) = (
            socket.clone(),
            shared.clone(),
            endpoint.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; DATAGRAM];
            loop {
                let (n, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = socket.recv_from(&mut buf) => match received {
                        Ok(pair) => pair,
                        Err(e) => {
                            // ICMP errors of earlier sends surface here; they end nothing.
                            tracing::debug!(error = %devplane_core::report::chain(&e), "CoAP receive failed");
                            continue;
                        }
                    },
                };
                let data = &buf[..n];
                if !matches!(message::sniff(data), Sniff::Head(_)) {
                    // Not worth a peer entry; count and ignore it on the common path.
                    let _ = endpoint.datagram(&shared, peer, data).await;
                    continue;
                }
                if !endpoint.admit_plain(&shared, peer, &socket) {
                    shared.metrics.connections_refused.inc("TooManyPeers");
                    continue;
                }
                for reply in endpoint.datagram(&shared, peer, data).await {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(%peer, error = %devplane_core::report::chain(&e), "cannot answer a CoAP request");
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
