//! One MQTT connection, from CONNECT to close: authentication, the authorization rule on every
//! packet, uplink through validation and ingest (PUBACK only once ingest took the message),
//! downlink with a bounded QoS 1 window, keepalive, wills and persistent sessions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use devplane_api::v1alpha1::Protocol;
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::codec::{
    self, AckCode, CloseCode, ConnectCode, DecodeError, Incoming, Outgoing, Version,
};
use crate::Shared;
use crate::gateway::{self, GatewaySession};
use crate::ingest;
use crate::north::Sink;
use crate::sessions::{CommandRef, Deliver, Handle, Kill};
use crate::status::{GatewayChange, StatusUpdate};
use crate::topic::{self, Denial, Downlink, Identity};
use crate::uplink::Rejection;

mod acting;
mod connect;
mod downlink;
mod enos;
mod enos_gateway;
mod finish;

use connect::{authenticate, refuse_malformed_connect};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Devices, plain TCP.
    Device,
    /// Devices, TLS.
    DeviceTls,
    /// Northbound applications.
    Application,
    /// Devices speaking the EnOS device protocol, plain TCP.
    Enos,
    /// Devices speaking the EnOS device protocol, TLS.
    EnosTls,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Device => "mqtt",
            Listener::DeviceTls => "mqtts",
            Listener::Application => "app",
            Listener::Enos => "enos-mqtt",
            Listener::EnosTls => "enos-mqtts",
        }
    }

    fn is_enos(self) -> bool {
        matches!(self, Listener::Enos | Listener::EnosTls)
    }
}

/// Who is on the other end.
#[derive(Clone, Debug)]
enum Role {
    Device(Identity),
    Gateway(Identity),
    Application(Identity),
}

/// How a session ended.
enum End {
    /// The client sent DISCONNECT.
    Clean { with_will: bool },
    /// The socket closed, a timeout, or a protocol error: the will is due.
    Abnormal,
    /// Ended from outside (takeover, decommissioning, shutdown): no will.
    Killed,
}

/// Read buffer sizes: small while idle (an idle session is mostly its buffers), large while
/// busy.
const IDLE_READ: usize = 256;
const BUSY_READ: usize = 32 * 1024;

struct Session<S> {
    stream: S,
    version: Version,
    role: Role,
    peer: SocketAddr,
    shared: Arc<Shared>,
    input: BytesMut,
    output: BytesMut,
    subscriptions: Arc<RwLock<Vec<(String, u8)>>>,
    next_pkid: u16,
    inflight: HashMap<u16, Deliver>,
    window: usize,
    waiting: VecDeque<Deliver>,
    sent_commands: HashSet<CommandRef>,
    /// When `sent_commands` is next pruned (its size then).
    prune_sent_at: usize,
    last_seen_reported: Option<Instant>,
    /// A gateway's sub-device logins (boxed: most sessions are devices).
    gateway: Option<Box<GatewaySession>>,
    /// The EnOS profile's state, on an EnOS listener (boxed: most sessions are native).
    enos: Option<Box<enos::EnosState>>,
}

/// Serve one connection until it ends.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, listener: Listener, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = shared.settings.max_packet_size;
    let mut input = BytesMut::with_capacity(IDLE_READ);
    // Cold paths are boxed: an idle session's task is the size of its biggest await point.
    let connect = Box::pin(tokio::time::timeout(
        shared.settings.connect_timeout,
        async {
            loop {
                match codec::read_connect(&mut input, limit) {
                    Err(DecodeError::Incomplete) => {}
                    other => return Some(other),
                }
                input.reserve(IDLE_READ);
                match stream.read_buf(&mut input).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        },
    ))
    .await;
    let info = match connect {
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time; closing");
            shared.metrics.protocol_errors.inc("ConnectTimeout");
            return;
        }
        Ok(None) => return,
        Ok(Some(Ok(info))) => info,
        Ok(Some(Err(e))) => {
            Box::pin(refuse_malformed_connect(&mut stream, peer, &shared, e)).await;
            return;
        }
    };
    let version = info.version;
    if matches!(listener, Listener::Device | Listener::DeviceTls)
        && let Some(policy) = super::provision::policy_of(info.username.as_deref())
    {
        Box::pin(super::provision::serve(
            stream, peer, info, input, policy, shared,
        ))
        .await;
        return;
    }
    let authenticated = if listener.is_enos() {
        match enos::authenticate(&info, &shared) {
            Ok(enos::Login::Session(role, tag, state)) => Ok((role, tag, Some(state))),
            Ok(enos::Login::Activation(activation)) => {
                Box::pin(crate::enos::activate::serve(
                    stream,
                    peer,
                    info,
                    input,
                    *activation,
                    shared,
                ))
                .await;
                return;
            }
            Err(refused) => Err(refused),
        }
    } else {
        authenticate(&info, listener, &shared).map(|(role, tag)| (role, tag, None))
    };
    let (role, tag, enos_state) = match authenticated {
        Ok(ok) => ok,
        Err((code, reason)) => {
            shared.metrics.connections_refused.inc(match code {
                ConnectCode::BadCredentials => "BadCredentials",
                ConnectCode::NotAuthorized => "NotAuthorized",
                _ => "Other",
            });
            tracing::info!(%peer, user = info.username.as_deref().unwrap_or(""), %reason, "connection refused");
            let mut out = BytesMut::new();
            let _ = codec::write(
                version,
                Outgoing::ConnAck {
                    code,
                    session_present: false,
                    reason: Some(reason),
                    receive_maximum: shared.settings.max_inflight,
                    maximum_packet_size: limit as u32,
                },
                &mut out,
            );
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    // A persistent session resumes what the device's previous session kept: end a previous
    // session that is still open first, so that it stores its state.
    let (session_present, resumed) = match &role {
        Role::Device(id) if info.clean => {
            shared.devices.discard(id);
            (false, None)
        }
        Role::Device(id) => {
            if let Some(previous) = shared.devices.get(id) {
                previous.kill.kill(
                    CloseCode::SessionTakenOver,
                    "another connection logged in with the same identity",
                );
                let wait =
                    tokio::time::timeout(Duration::from_secs(3), previous.finished.cancelled());
                let _ = Box::pin(wait).await;
            }
            let resumed = shared.devices.resume(id);
            (resumed.is_some(), resumed)
        }
        Role::Gateway(_) | Role::Application(_) => (false, None),
    };
    // Applications are few and read much: a wider window and a longer queue.
    let (max_inflight, queue) = match role {
        Role::Device(_) => (shared.settings.max_inflight, shared.settings.session_queue),
        Role::Gateway(_) | Role::Application(_) => {
            (shared.settings.app_inflight, shared.settings.app_queue)
        }
    };
    let window = usize::from(
        info.receive_maximum
            .unwrap_or(u16::MAX)
            .min(max_inflight)
            .max(1),
    );
    let (tx, rx) = mpsc::channel(queue);
    let kill = Kill::default();
    let finished = tokio_util::sync::CancellationToken::new();
    let conn = shared.devices.next_conn();
    let mut session = Session {
        stream,
        version,
        role: role.clone(),
        peer,
        shared: shared.clone(),
        input,
        output: BytesMut::new(),
        subscriptions: Arc::new(RwLock::new(
            resumed
                .as_ref()
                .map(|s| s.subscriptions.clone())
                .unwrap_or_default(),
        )),
        next_pkid: 0,
        inflight: HashMap::new(),
        window,
        waiting: resumed
            .as_ref()
            .map(|s| s.queue.iter().cloned().collect())
            .unwrap_or_default(),
        sent_commands: HashSet::new(),
        prune_sent_at: downlink::PRUNE_SENT_FROM,
        last_seen_reported: None,
        gateway: match &role {
            Role::Gateway(id) => Some(Box::new(GatewaySession::new(
                id.clone(),
                conn,
                tx.clone(),
                peer.to_string(),
            ))),
            _ => None,
        },
        enos: enos_state,
    };
    let handle = Handle {
        conn,
        tx: tx.clone(),
        kill: kill.clone(),
        tag,
        started: jiff::Timestamp::now(),
        finished: finished.clone(),
    };
    if let Role::Device(id) = &role
        && let Some(login) = shared.sub_logins.take(id)
    {
        // One session per device: connecting directly ends its login through a gateway.
        gateway::notify_logged_out(
            &login,
            id,
            "ConnectedDirectly",
            "the device connected to the front door itself".into(),
        );
        shared.status_update(StatusUpdate::Gateway {
            id: login.gateway.clone(),
            change: GatewayChange::Active(shared.sub_logins.of_gateway(&login.gateway).len()),
        });
    }
    match &role {
        Role::Device(id) => shared.devices.register(id, handle),
        Role::Gateway(id) => shared.gateways.register(id, handle),
        Role::Application(id) => {
            shared.apps.register(id, handle);
            shared.north.attach(
                &id.namespace,
                Sink {
                    conn,
                    filters: session.subscriptions.clone(),
                    tx,
                    kill: kill.clone(),
                },
            );
        }
    }
    shared.metrics.connections_accepted.inc(listener.label());
    shared.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);
    session.send(Outgoing::ConnAck {
        code: ConnectCode::Success,
        session_present,
        reason: None,
        receive_maximum: shared.settings.max_inflight,
        maximum_packet_size: limit as u32,
    });
    tracing::debug!(%peer, who = %session.who(), version = ?version, "session started");
    if let Role::Device(id) = &role {
        shared.status_update(StatusUpdate::Connected {
            id: id.clone(),
            address: peer.to_string(),
            protocol: Protocol::Mqtt,
        });
        Box::pin(ingest::presence(&shared, id, true, &peer.to_string())).await;
        // What the previous session had not got acknowledged goes first.
        session.send_waiting();
        // EnOS devices get downlink without subscribing.
        if session_present || session.enos.is_some() {
            Box::pin(session.offer_downlink()).await;
        }
    }
    if let Role::Gateway(id) = &role {
        shared.status_update(StatusUpdate::Gateway {
            id: id.clone(),
            change: GatewayChange::Connected(peer.to_string()),
        });
        Box::pin(ingest::presence(&shared, id, true, &peer.to_string())).await;
    }
    let keep_alive =
        (info.keep_alive > 0).then(|| Duration::from_millis(u64::from(info.keep_alive) * 1500));
    let end = session.run(rx, &kill, keep_alive).await;
    Box::pin(session.finish(end, conn, &kill, &info)).await;
    finished.cancel();
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn who(&self) -> String {
        match &self.role {
            Role::Device(id) => format!("device {id}"),
            Role::Gateway(id) => format!("gateway {id}"),
            Role::Application(id) => format!("application {id}"),
        }
    }

    fn send(&mut self, packet: Outgoing) {
        if let Err(e) = codec::write(self.version, packet, &mut self.output) {
            tracing::warn!(peer = %self.peer, error = %e, "cannot encode a packet");
        }
    }

    /// Writes what is queued; `false` if the connection failed or the session was ended
    /// meanwhile (a client that reads nothing must not keep the session waiting on it).
    async fn flush(&mut self, kill: &Kill) -> bool {
        tokio::select! {
            written = self.write_output() => written,
            _ = kill.killed() => false,
        }
    }

    /// Writes what is queued; `false` if the connection failed.
    async fn write_output(&mut self) -> bool {
        if self.output.is_empty() {
            return true;
        }
        let ok = self.stream.write_all(&self.output).await.is_ok();
        self.output.clear();
        if self.output.capacity() > IDLE_READ * 16 {
            self.output = BytesMut::new();
        }
        ok
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Box<Deliver>>,
        kill: &Kill,
        keep_alive: Option<Duration>,
    ) -> End {
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        // Clients may send more packets right behind CONNECT, in the same read.
        if !self.input.is_empty()
            && let Some(end) = Box::pin(self.process_input(kill)).await
        {
            self.flush(kill).await;
            return end;
        }
        if !self.flush(kill).await {
            return End::Abnormal;
        }
        loop {
            let room = self.inflight.len() < self.window;
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let end = tokio::select! {
                biased;
                _ = kill.killed() => Some(End::Killed),
                read = read_more(&mut self.stream, &mut self.input) => match read {
                    Ok(0) | Err(_) => Some(End::Abnormal),
                    Ok(n) => {
                        deadline = keep_alive.map(|k| Instant::now() + k);
                        let end = Box::pin(self.process_input(kill)).await;
                        if n < IDLE_READ && self.input.is_empty() && self.input.capacity() > IDLE_READ * 4 {
                            // A burst is over: give the large buffer back.
                            self.input = BytesMut::with_capacity(IDLE_READ);
                        }
                        end
                    }
                },
                Some(deliver) = rx.recv(), if room => {
                    self.deliver(*deliver);
                    // Take what else is queued while there is room, then write once.
                    while self.inflight.len() < self.window {
                        match rx.try_recv() {
                            Ok(more) => self.deliver(*more),
                            Err(_) => break,
                        }
                    }
                    None
                }
                _ = sleep => {
                    tracing::info!(peer = %self.peer, who = %self.who(), "keepalive expired; closing");
                    self.send(Outgoing::Disconnect { code: CloseCode::KeepAliveTimeout, reason: "no packet within 1.5 × keepalive".into() });
                    Some(End::Abnormal)
                }
            };
            let flushed = self.flush(kill).await;
            if let Some(end) = end {
                return end;
            }
            if !flushed {
                return End::Abnormal;
            }
        }
    }

    /// Handle every whole packet in the input buffer; Some(end) closes the session.
    async fn process_input(&mut self, kill: &Kill) -> Option<End> {
        let limit = self.shared.settings.max_packet_size;
        loop {
            let packet = match codec::read(self.version, &mut self.input, limit) {
                Ok(packet) => packet,
                Err(DecodeError::Incomplete) => return None,
                Err(e) => return Some(self.protocol_error(e)),
            };
            if let Some(end) = self.handle(packet, kill).await {
                return Some(end);
            }
        }
    }

    fn protocol_error(&mut self, e: DecodeError) -> End {
        let (label, code) = match &e {
            DecodeError::TooLarge { .. } => ("PacketTooLarge", CloseCode::PacketTooLarge),
            _ => ("MalformedPacket", CloseCode::Malformed),
        };
        self.shared.metrics.protocol_errors.inc(label);
        tracing::warn!(peer = %self.peer, who = %self.who(), error = %e, "closing the connection: protocol error");
        self.send(Outgoing::Disconnect {
            code,
            reason: e.to_string(),
        });
        End::Abnormal
    }

    async fn handle(&mut self, packet: Incoming, kill: &Kill) -> Option<End> {
        match packet {
            Incoming::Publish {
                topic,
                pkid,
                qos,
                payload,
            } => self.on_publish(topic, pkid, qos, payload, kill).await,
            Incoming::PubAck { pkid } => {
                self.inflight.remove(&pkid);
                self.send_waiting();
                None
            }
            Incoming::Subscribe { pkid, filters } => {
                self.on_subscribe(pkid, filters).await;
                None
            }
            Incoming::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                self.subscriptions
                    .write()
                    .retain(|(f, _)| !filters.contains(f));
                self.send(Outgoing::UnsubAck { pkid, count });
                None
            }
            Incoming::PingReq => {
                self.send(Outgoing::PingResp);
                None
            }
            Incoming::Disconnect { with_will } => Some(End::Clean { with_will }),
            Incoming::Unexpected(what) => {
                self.shared.metrics.protocol_errors.inc("UnexpectedPacket");
                tracing::warn!(peer = %self.peer, who = %self.who(), "closing the connection: unexpected {what}");
                let code = if what.contains("QoS 2") {
                    CloseCode::QosNotSupported
                } else {
                    CloseCode::ProtocolError
                };
                self.send(Outgoing::Disconnect {
                    code,
                    reason: format!("unexpected {what}"),
                });
                Some(End::Abnormal)
            }
        }
    }

    async fn on_publish(
        &mut self,
        topic: String,
        pkid: u16,
        qos: u8,
        payload: Bytes,
        kill: &Kill,
    ) -> Option<End> {
        if qos == 2 {
            self.shared.metrics.protocol_errors.inc("QosNotSupported");
            tracing::info!(peer = %self.peer, who = %self.who(), "closing the connection: QoS 2 publish");
            self.send(Outgoing::Disconnect {
                code: CloseCode::QosNotSupported,
                reason: "QoS 2 is not supported; publish with QoS 0 or 1".into(),
            });
            return Some(End::Abnormal);
        }
        if self.enos.is_some() {
            return Box::pin(self.enos_publish(topic, pkid, qos, payload, kill)).await;
        }
        let (device, uplink) = match &self.role {
            Role::Device(id) => match topic::classify_publish(id, &topic) {
                Ok(uplink) => (id.clone(), uplink),
                Err(denial) => return self.deny_publish(&topic, pkid, qos, denial),
            },
            Role::Gateway(id) => {
                let id = id.clone();
                match self.classify_for_gateway(&id, &topic) {
                    Ok(Some(pair)) => pair,
                    Ok(None) => {
                        Box::pin(self.gateway_request(&id, &topic, pkid, qos, &payload)).await;
                        return None;
                    }
                    Err(denial) => return self.deny_publish(&topic, pkid, qos, denial),
                }
            }
            Role::Application(_) => {
                return self.deny_publish(&topic, pkid, qos, Denial::ReadOnly);
            }
        };
        let accepted = ingest::judge(&self.shared, &device, &uplink, &payload);
        match accepted {
            Err(rejection) => {
                self.shared.metrics.rejected.inc(rejection.reason);
                self.report_error(&device, &topic, &rejection);
                if qos == 1 {
                    self.send(Outgoing::PubAck {
                        pkid,
                        code: AckCode::PayloadFormatInvalid,
                        reason: Some(rejection.summary()),
                    });
                }
                None
            }
            Ok(accepted) => {
                // Hand to ingest, waiting while it is full (backpressure): the device gets no
                // PUBACK until ingest has the message.
                tokio::select! {
                    biased;
                    _ = kill.killed() => return Some(End::Killed),
                    sent = self.shared.ingest.send(accepted) => if sent.is_err() {
                        return Some(End::Killed);
                    },
                }
                if qos == 1 {
                    self.send(Outgoing::PubAck {
                        pkid,
                        code: AckCode::Success,
                        reason: None,
                    });
                }
                self.seen(&device);
                None
            }
        }
    }

    /// Note that the device was heard from, at most twice per status interval.
    fn seen(&mut self, device: &Identity) {
        let interval = self.shared.settings.status_interval / 2;
        if let Role::Gateway(gateway) = &self.role {
            // Each sub-device has its own "last seen".
            if !self
                .gateway
                .as_mut()
                .is_some_and(|state| state.report_seen(device, interval))
            {
                return;
            }
            let update = if device == gateway {
                StatusUpdate::Gateway {
                    id: device.clone(),
                    change: GatewayChange::Seen,
                }
            } else {
                StatusUpdate::Seen { id: device.clone() }
            };
            self.shared.status_update(update);
            return;
        }
        if self
            .last_seen_reported
            .is_none_or(|at| at.elapsed() >= interval)
        {
            self.last_seen_reported = Some(Instant::now());
            self.shared
                .status_update(StatusUpdate::Seen { id: device.clone() });
        }
    }

    fn deny_publish(&mut self, topic: &str, pkid: u16, qos: u8, denial: Denial) -> Option<End> {
        self.shared.metrics.deny(denial);
        tracing::info!(peer = %self.peer, who = %self.who(), topic, %denial, "publish denied");
        if let Role::Gateway(id) = &self.role {
            self.shared.warn_gateway(
                id,
                "PublishDenied",
                format!("publish to {topic:?} denied: {denial}"),
            );
        }
        if let Role::Device(id) | Role::Gateway(id) = &self.role {
            let id = id.clone();
            self.shared.warn(
                &id,
                "PublishDenied",
                format!("publish to {topic:?} denied: {denial}"),
            );
            self.report_error(
                &id,
                topic,
                &Rejection {
                    reason: denial.as_str(),
                    field: String::new(),
                    message: format!("the device may not publish to {topic:?}"),
                },
            );
        }
        match (self.version, qos) {
            (Version::V5, 1) => {
                self.send(Outgoing::PubAck {
                    pkid,
                    code: AckCode::NotAuthorized,
                    reason: Some(format!("{denial}: {topic}")),
                });
                None
            }
            (Version::V5, _) => None,
            (Version::V4, _) => {
                // MQTT 3.1.1 has no way to refuse a publish but closing the connection.
                Some(End::Killed)
            }
        }
    }

    /// Send a rejection to the device's errors topic, if it subscribed to it.
    fn report_error(&mut self, device: &Identity, topic: &str, rejection: &Rejection) {
        let payload = serde_json::json!({
            "topic": topic,
            "reason": rejection.reason,
            "field": rejection.field,
            "message": rejection.message,
        });
        self.deliver(Deliver {
            topic: device.downlink(&Downlink::Errors).into(),
            payload: Bytes::from(payload.to_string()),
            qos: 0,
            command: None,
        });
    }
}

/// Read more bytes into `buf`, growing it only while the connection is busy.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < IDLE_READ / 2 {
        let busy = buf.len() >= IDLE_READ / 2;
        buf.reserve(if busy { BUSY_READ } else { IDLE_READ });
    }
    let n = stream.read_buf(buf).await?;
    Ok(n)
}

#[cfg(test)]
mod tests;
