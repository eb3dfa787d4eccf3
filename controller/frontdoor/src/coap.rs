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
//! - `dtls`: the DTLS listener (sessions by peer address over one UDP socket).

pub mod exchange;
pub mod message;

mod dtls;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use devplane_api::v1alpha1::Protocol;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::ingest;
use crate::registry::{Ended, PasswordTag};
use crate::status::StatusUpdate;
use crate::topic::{Denial, Identity, Uplink};
use crate::uplink::Rejection;

pub use dtls::serve as serve_dtls;
use exchange::{Dedup, Exchange, Observed};
use message::{Head, OptionError, Reply, Resource, RouteError, Sniff};

/// Longest a request waits for room in ingest before it is answered 5.03.
const INGEST_WAIT: Duration = Duration::from_millis(200);
/// Requests that may wait for ingest at once (beyond that: 5.03 at once).
const MAX_WAITING: usize = 256;
/// Max-Age of a 5.03: when to try again, seconds.
const RETRY_SECONDS: u32 = 1;
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
}

impl Principal {
    /// The authenticated device, if any.
    fn device(&self) -> Option<&Identity> {
        match self {
            Principal::Device { id, .. } => Some(id),
            Principal::Insecure => None,
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
        // As with MQTT, a new session of a device takes over the older ones: a device that
        // handshakes again has lost its old session (and its observations with it).
        let device = principal.device().cloned();
        let same =
            |p: &Peer| p.principal.device().is_some() && p.principal.device() == device.as_ref();
        for old in peers.values().filter(|p| same(p)) {
            if let Some(kill) = &old.kill {
                kill.cancel();
            }
        }
        peers.retain(|_, p| !same(p));
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
            Outcome::Busy(accepted, id) => self.defer(shared, &head, token, peer, accepted, id),
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

    /// Ingest is full: acknowledge a confirmable request now and answer it separately once
    /// ingest took the record, or with 5.03 after [`INGEST_WAIT`].
    fn defer(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        head: &Head,
        token: Vec<u8>,
        peer: SocketAddr,
        accepted: Box<ingest::Accepted>,
        id: Identity,
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
        let shared = shared.clone();
        let endpoint = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match tokio::time::timeout(INGEST_WAIT, shared.ingest.send(*accepted)).await
            {
                Ok(Ok(())) => {
                    shared.seen(Protocol::Coap, &id, peer);
                    Reply::empty(ResponseType::Changed)
                }
                _ => busy(),
            };
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

    /// Answer a well-formed request.
    fn request(
        &self,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        principal: &Principal,
        token: &[u8],
        packet: &Packet,
    ) -> Outcome {
        let reply = |r: Reply| Outcome::Reply(r);
        let method = match packet.header.code {
            coap_lite::MessageClass::Request(method) => method,
            _ => RequestType::UnKnown,
        };
        let options = match message::options(packet) {
            Ok(options) => options,
            Err(OptionError::UnsupportedCritical(number)) => {
                return reply(Reply::problem(
                    ResponseType::BadOption,
                    "UnsupportedOption",
                    "",
                    format!(
                        "critical option {number} is not supported (nor is block-wise transfer)"
                    ),
                ));
            }
            Err(OptionError::Malformed(number)) => {
                return reply(Reply::problem(
                    ResponseType::BadRequest,
                    "InvalidOption",
                    "",
                    format!("option {number} has a malformed value"),
                ));
            }
        };
        let Some(segments) = message::path(packet) else {
            return reply(Reply::problem(
                ResponseType::BadRequest,
                "InvalidPath",
                "",
                "a Uri-Path segment is not UTF-8",
            ));
        };
        if shared.settings.coap_baseline
            && segments
                .iter()
                .map(String::as_str)
                .eq(message::BASELINE_PATH)
        {
            // The bench baseline: the transport alone, no identity or validation.
            return reply(Reply::empty(ResponseType::Changed));
        }
        let target = match message::route(&segments, method) {
            Ok(target) => target,
            Err(RouteError::NotFound) => {
                return reply(Reply::problem(
                    ResponseType::NotFound,
                    "NotFound",
                    "",
                    format!("no resource /{}", segments.join("/")),
                ));
            }
            Err(RouteError::MethodNotAllowed(allowed)) => {
                return reply(Reply::problem(
                    ResponseType::MethodNotAllowed,
                    "MethodNotAllowed",
                    "",
                    format!("use {allowed} on this resource"),
                ));
            }
        };
        if let Some(accept) = options.accept
            && accept != message::JSON
        {
            return reply(Reply::problem(
                ResponseType::NotAcceptable,
                "NotAcceptable",
                "",
                format!("only application/json ({}) is served", message::JSON),
            ));
        }
        let id = match self.authorize(shared, principal, target.namespace, target.name) {
            Ok(id) => id,
            Err(r) => return reply(r),
        };
        match target.resource {
            Resource::Uplink(uplink) => {
                if let Some(format) = options.content_format
                    && format != message::JSON
                {
                    shared.metrics.rejected.inc("InvalidJson");
                    return reply(Reply::problem(
                        ResponseType::UnsupportedContentFormat,
                        "UnsupportedContentFormat",
                        "",
                        format!(
                            "Content-Format {format} is not supported; send application/json ({})",
                            message::JSON
                        ),
                    ));
                }
                self.uplink(shared, peer, &id, &uplink, &packet.payload)
            }
            Resource::Desired => reply(self.desired(shared, peer, &id, token, options.observe)),
            Resource::Commands => reply(self.commands(shared, peer, &id, token, options.observe)),
        }
    }

    /// The device a request may act for: the session's own (DTLS) or the path's (insecure).
    fn authorize(
        &self,
        shared: &Shared,
        principal: &Principal,
        namespace: &str,
        name: &str,
    ) -> Result<Identity, Reply> {
        let now = jiff::Timestamp::now();
        match principal {
            Principal::Device { id, tag } => {
                let problem =
                    shared
                        .registry
                        .read()
                        .device_session_problem(id, tag, Protocol::Coap, now);
                if let Some(why) = problem {
                    self.end_session(id);
                    let (code, reason) = match why {
                        Ended::Revoked | Ended::RotatedOut => {
                            (ResponseType::Unauthorized, "BadCredentials")
                        }
                        _ => (ResponseType::Forbidden, "NotAuthorized"),
                    };
                    shared.metrics.connections_refused.inc(reason);
                    return Err(Reply::problem(code, reason, "", why.to_string()));
                }
                if id.namespace != namespace || id.name != name {
                    shared.metrics.deny(Denial::ForeignTopic);
                    shared.warn(
                        id,
                        "PublishDenied",
                        format!("CoAP request for device {namespace}/{name} denied"),
                    );
                    return Err(Reply::problem(
                        ResponseType::Forbidden,
                        Denial::ForeignTopic.as_str(),
                        "",
                        format!("device {id} may not act for {namespace}/{name}"),
                    ));
                }
                Ok(id.clone())
            }
            Principal::Insecure => {
                let id = Identity::new(namespace, name);
                let refusal = match shared.registry.read().device(&id) {
                    None => Some(None),
                    Some(entry) => entry.refusal(Protocol::Coap).map(Some),
                };
                match refusal {
                    None => Ok(id),
                    Some(None) => Err(Reply::problem(
                        ResponseType::NotFound,
                        "UnknownDevice",
                        "",
                        format!("there is no device {id}"),
                    )),
                    Some(Some(why)) => {
                        shared.metrics.connections_refused.inc("NotAuthorized");
                        Err(Reply::problem(
                            ResponseType::Forbidden,
                            "NotAuthorized",
                            "",
                            why.to_string(),
                        ))
                    }
                }
            }
        }
    }

    /// End every DTLS session of a device (its key or its right to connect is gone).
    fn end_session(&self, id: &Identity) {
        for peer in self.peers.lock().values() {
            if let (Principal::Device { id: of, .. }, Some(kill)) = (&peer.principal, &peer.kill)
                && of == id
            {
                kill.cancel();
            }
        }
    }

    fn uplink(
        &self,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        id: &Identity,
        uplink: &Uplink<'_>,
        payload: &[u8],
    ) -> Outcome {
        let accepted = match ingest::judge(shared, id, uplink, payload) {
            Ok(accepted) => accepted,
            Err(Rejection {
                reason,
                field,
                message,
            }) => {
                shared.metrics.rejected.inc(reason);
                return Outcome::Reply(Reply::problem(
                    ResponseType::BadRequest,
                    reason,
                    &field,
                    message,
                ));
            }
        };
        match shared.ingest.try_send(accepted) {
            Ok(()) => {
                shared.seen(Protocol::Coap, id, peer);
                Outcome::Reply(Reply::empty(ResponseType::Changed))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(accepted)) => {
                Outcome::Busy(Box::new(accepted), id.clone())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Outcome::Reply(busy()),
        }
    }

    /// Register, renew or end an observation per the Observe option; returns the sequence
    /// number to send when the request observes.
    fn observation(
        &self,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        resource: Observed,
        observe: Option<u32>,
        payload: &Bytes,
    ) -> Option<u32> {
        let mut peers = self.peers.lock();
        let state = peers.get_mut(&peer)?;
        match observe {
            Some(message::OBSERVE_REGISTER) => {
                let seq = state.exchange.observe(token, resource, id)?;
                state.exchange.sent_to_observer(token, payload.clone());
                Some(seq)
            }
            Some(message::OBSERVE_DEREGISTER) => {
                state.exchange.forget(token);
                None
            }
            _ => None,
        }
    }

    fn desired(
        &self,
        shared: &Shared,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        observe: Option<u32>,
    ) -> Reply {
        let payload = shared
            .registry
            .read()
            .device(id)
            .map(ingest::desired_payload);
        let Some(payload) = payload else {
            return Reply::problem(ResponseType::NotFound, "NotFound", "", "the device is gone");
        };
        shared.seen(Protocol::Coap, id, peer);
        let seq = self.observation(peer, id, token, Observed::Desired, observe, &payload);
        Reply {
            observe: seq,
            ..Reply::json(ResponseType::Content, payload.to_vec())
        }
    }

    fn commands(
        &self,
        shared: &Shared,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        observe: Option<u32>,
    ) -> Reply {
        shared.seen(Protocol::Coap, id, peer);
        let payload = take_commands(shared, id).unwrap_or_else(|| commands_payload(Vec::new()));
        let seq = self.observation(peer, id, token, Observed::Commands, observe, &payload);
        Reply {
            observe: seq,
            ..Reply::json(ResponseType::Content, payload.to_vec())
        }
    }

    /// Notify the desired-attribute observers of `device` (of every device with `None`) whose
    /// last notification differs from the device's desired attributes now.
    async fn notify_desired(&self, shared: &Shared, device: Option<&Identity>) {
        let mut sends = Vec::new();
        let mut changed = HashSet::new();
        {
            // Peers before the registry, everywhere (a consistent order cannot deadlock).
            let mut peers = self.peers.lock();
            let registry = shared.registry.read();
            for (addr, peer) in peers.iter_mut() {
                for observer in peer.exchange.observers(Observed::Desired, device) {
                    let Some(entry) = registry.device(&observer.device) else {
                        continue;
                    };
                    let payload = ingest::desired_payload(entry);
                    if payload == observer.last {
                        continue;
                    }
                    if let Some(bytes) =
                        notification(&mut peer.exchange, &observer.token, &payload, true)
                    {
                        sends.push((peer.link.clone(), *addr, bytes));
                        changed.insert(observer.device.clone());
                    }
                }
            }
        }
        for id in changed {
            shared.status_update(StatusUpdate::DesiredChanged { id });
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Push waiting commands to the command observers of their devices (marking them Sent);
    /// every observer of a device gets them.
    async fn notify_commands(&self, shared: &Shared) {
        let mut sends = Vec::new();
        {
            let mut peers = self.peers.lock();
            let devices: HashSet<Identity> = peers
                .values()
                .flat_map(|p| p.exchange.observers(Observed::Commands, None))
                .map(|o| o.device)
                .collect();
            for device in devices {
                let Some(payload) = take_commands(shared, &device) else {
                    continue;
                };
                for (addr, peer) in peers.iter_mut() {
                    for observer in peer.exchange.observers(Observed::Commands, Some(&device)) {
                        let exchange = &mut peer.exchange;
                        if let Some(bytes) =
                            notification(exchange, &observer.token, &payload, false)
                        {
                            sends.push((peer.link.clone(), *addr, bytes));
                        }
                    }
                }
            }
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Retransmit what is due; every few ticks also forget idle plain peers and end DTLS
    /// sessions whose device may no longer connect.
    async fn tick(&self, shared: &Shared, sweep: bool) {
        let mut sends = Vec::new();
        let now = Instant::now();
        {
            let mut peers = self.peers.lock();
            for (addr, peer) in peers.iter_mut() {
                let due = peer.exchange.due(now);
                for observer in due.dropped {
                    tracing::debug!(peer = %addr, device = %observer.device, "a notification went unacknowledged; observation ended");
                }
                sends.extend(
                    due.resend
                        .into_iter()
                        .map(|b| (peer.link.clone(), *addr, b)),
                );
            }
            if sweep {
                let registry = shared.registry.read();
                let jiff_now = jiff::Timestamp::now();
                peers.retain(|_, peer| match (&peer.principal, &peer.kill) {
                    (Principal::Device { id, tag }, Some(kill)) => {
                        if registry
                            .device_session_problem(id, tag, Protocol::Coap, jiff_now)
                            .is_some()
                        {
                            kill.cancel();
                        }
                        true
                    }
                    _ => {
                        peer.exchange.is_busy()
                            || now.duration_since(peer.heard) < exchange::EXCHANGE_LIFETIME
                    }
                });
            }
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Deliver downlink until shutdown: desired changes, new commands, retransmissions.
    pub async fn downlink(self: Arc<Self>, shared: Arc<Shared>, shutdown: CancellationToken) {
        let mut desired = shared.desired_changed.subscribe();
        let mut arrived = std::pin::pin!(shared.command_arrived.notified());
        arrived.as_mut().enable();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = desired.recv() => match changed {
                    Ok(id) => self.notify_desired(&shared, Some(&id)).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.notify_desired(&shared, None).await
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut arrived => {
                    // Listen again before looking, so a command arriving meanwhile is seen.
                    arrived.set(shared.command_arrived.notified());
                    arrived.as_mut().enable();
                    self.notify_commands(&shared).await;
                }
                _ = tick.tick() => {
                    ticks += 1;
                    self.tick(&shared, ticks.is_multiple_of(4)).await;
                }
            }
        }
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

/// `{"commands": [...]}`, as HTTP's long poll answers.
fn commands_payload(list: Vec<Value>) -> Bytes {
    Bytes::from(json!({ "commands": list }).to_string())
}

/// The commands waiting for `id`, marked Sent; None when there are none.
fn take_commands(shared: &Shared, id: &Identity) -> Option<Bytes> {
    let now = jiff::Timestamp::now();
    let waiting = shared.commands.lock().deliverable(id, now);
    if waiting.is_empty() {
        return None;
    }
    let list = waiting
        .iter()
        .map(|c| {
            let mut body = c.payload(now);
            body["name"] = json!(c.name);
            body
        })
        .collect();
    for command in &waiting {
        shared.command_sent(id, &command.name);
    }
    Some(commands_payload(list))
}

/// A confirmable notification of an observation, registered for retransmission; None when
/// the peer has too much in flight.
fn notification(
    exchange: &mut Exchange,
    token: &[u8],
    payload: &Bytes,
    replaceable: bool,
) -> Option<Vec<u8>> {
    let seq = exchange.next_seq(token)?;
    let message_id = exchange.next_message_id();
    let reply = Reply {
        observe: Some(seq),
        ..Reply::json(ResponseType::Content, payload.to_vec())
    };
    let bytes = message::encode(MessageType::Confirmable, message_id, token, &reply);
    let copy = Bytes::from(bytes.clone());
    if !exchange.expect_ack(message_id, copy, Some(token), replaceable, Instant::now()) {
        return None;
    }
    exchange.sent_to_observer(token, payload.clone());
    Some(bytes)
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
