//! devplane's device front door: devices connect over MQTT 3.1.1 or 5 with the credentials the
//! controllers issued, act only under their own `d/{ns}/{name}/` topics, and have every message
//! validated against their model before it is acknowledged. Accepted data flows to the
//! northbound application listener; connection state, reported attributes and command results
//! flow back to the API.
//!
//! - [`topic`], [`uplink`], [`registry`], [`commands`]: the pure parts (the protocol's topic tree
//!   and authorization rule, payload validation, the in-memory index the watches feed);
//! - [`mqtt`], [`http`], [`coap`]: the wires (MQTT sessions and listeners, HTTP routes, CoAP
//!   over UDP and DTLS);
//! - [`enos`]: the EnOS device-protocol profile, an adapter onto the same sessions;
//! - [`ingest`], [`north`]: the accepted stream and its fan-out to applications;
//! - [`status`], [`watch`]: what goes back to the API and what comes from it.
//!
//! The front door reads lifecycle and credentials; it never decides them (the controllers do).

pub mod coap;
pub mod commands;
pub mod enos;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod north;
pub mod provision;
pub mod registry;
pub mod sessions;
pub mod status;
pub mod topic;
pub mod uplink;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devplane_api::v1alpha1::{Device, Gateway};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::Commands;
use crate::metrics::Metrics;
use crate::mqtt::codec::CloseCode;
use crate::mqtt::session::Listener;
use crate::north::Northbound;
use crate::registry::Registry;
use crate::sessions::{Deliver, Handle, Sessions, SubLogins};
use crate::status::{CommandUpdate, StatusUpdate};
use crate::topic::Identity;

/// Settings of the front door.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's name (in `status.connection.frontDoor`, Events and command messages).
    pub replica: String,
    /// At most one "last seen" status write per device per interval.
    pub status_interval: Duration,
    /// Largest packet accepted, bytes.
    pub max_packet_size: usize,
    /// QoS 1 downlink messages in flight per session (and the v5 receive maximum announced).
    pub max_inflight: u16,
    /// Filters one SUBSCRIBE may carry.
    pub max_filters_per_subscribe: usize,
    /// Filters one session may hold: every SUBSCRIBE adds to them, and each is kept, and
    /// matched against every message for the session, until it is unsubscribed.
    pub max_subscriptions: usize,
    /// Messages kept for a persistent session while its device is away (and waiting behind a
    /// full in-flight window).
    pub offline_queue: usize,
    /// Longest a persistent session is kept.
    pub session_expiry: Duration,
    /// Downlink queue per session.
    pub session_queue: usize,
    /// QoS 1 messages in flight to an application session.
    pub app_inflight: u16,
    /// Queue per application session.
    pub app_queue: usize,
    /// An application session whose full queue takes no message for this long is closed:
    /// device data for every namespace waits while it is full.
    pub app_stall_timeout: Duration,
    /// Accepted messages waiting for ingest before publishers get no more PUBACKs.
    pub ingest_queue: usize,
    /// Time a new connection has to send CONNECT (MQTT) or to finish its TLS or DTLS handshake,
    /// and an HTTP client to send each request head.
    pub connect_timeout: Duration,
    /// An HTTP or CoAP device is Online while it made a request within this window.
    pub http_presence_window: Duration,
    /// Largest CoAP message accepted, bytes (no block-wise transfer).
    pub coap_max_message: usize,
    /// CoAP peers (plain) or DTLS sessions held per listener.
    pub coap_max_peers: usize,
    /// Message IDs remembered per CoAP peer for deduplication.
    pub coap_dedup_per_peer: usize,
    /// Observations one CoAP peer may hold.
    pub coap_observers_per_peer: usize,
    /// A DTLS session observing nothing ends after this long without a record.
    pub coap_idle_timeout: Duration,
    /// Serve `POST /bench/baseline` on the CoAP listeners: 2.04 without identity or validation
    /// (the same-run baseline of `devplane bench coap`; never in production).
    pub coap_baseline: bool,
    /// Refused provisioning requests one source address may make in a burst before it gets
    /// 429 (RateLimited).
    pub provision_failure_burst: u32,
    /// Refused provisioning requests per second a source address earns back.
    pub provision_failure_refill: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            replica: "frontdoor".into(),
            status_interval: Duration::from_secs(30),
            max_packet_size: 256 * 1024,
            max_inflight: 32,
            max_filters_per_subscribe: 16,
            max_subscriptions: 64,
            offline_queue: 100,
            session_expiry: Duration::from_secs(3600),
            session_queue: 16,
            app_inflight: 256,
            app_queue: 1024,
            app_stall_timeout: Duration::from_secs(10),
            ingest_queue: 1024,
            connect_timeout: Duration::from_secs(10),
            http_presence_window: Duration::from_secs(60),
            coap_max_message: 16 * 1024,
            coap_max_peers: 10_000,
            coap_dedup_per_peer: 128,
            coap_observers_per_peer: 8,
            coap_idle_timeout: Duration::from_secs(300),
            coap_baseline: false,
            provision_failure_burst: 20,
            provision_failure_refill: 1.0,
        }
    }
}

/// The listeners, bound by the caller (so it can report the addresses and fail early).
pub struct Listeners {
    /// Devices over plain MQTT.
    pub mqtt: TcpListener,
    /// Devices over MQTT with TLS.
    pub mqtts: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// Northbound applications.
    pub app: TcpListener,
    /// Devices over HTTP.
    pub http: Option<TcpListener>,
    /// Devices over HTTPS.
    pub https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// Devices over plain CoAP (insecure dev mode only: no credentials).
    pub coap: Option<UdpSocket>,
    /// Devices over CoAP with DTLS (pre-shared keys).
    pub coaps: Option<UdpSocket>,
    /// Devices speaking the EnOS device protocol (MQTT 3.1.1), plain TCP.
    pub enos: Option<TcpListener>,
    /// Devices speaking the EnOS device protocol, TLS.
    pub enos_tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
}

/// The kind of object a warning is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WarningOn {
    Device,
    Gateway,
    /// A ProvisioningPolicy (one Event per reason a minute).
    Policy,
}

/// A warning about an object, for a rate-limited Event.
struct Warning {
    device: Identity,
    on: WarningOn,
    reason: &'static str,
    message: String,
}

/// State every task and session shares.
pub struct Shared {
    /// Settings.
    pub settings: Settings,
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The registry index.
    pub registry: RwLock<Registry>,
    /// Device sessions.
    pub devices: Sessions,
    /// Gateway sessions.
    pub gateways: Sessions,
    /// Sub-devices logged in through gateway sessions.
    pub sub_logins: SubLogins,
    /// Application sessions.
    pub apps: Sessions,
    /// DeviceCommands by device.
    pub commands: Mutex<Commands>,
    /// The northbound fan-out.
    pub north: Northbound,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Ingest's queue.
    pub ingest: mpsc::Sender<ingest::Accepted>,
    status: mpsc::UnboundedSender<StatusUpdate>,
    command_updates: mpsc::UnboundedSender<CommandUpdate>,
    warnings: mpsc::Sender<Warning>,
    /// Devices seen over HTTP or CoAP lately.
    presence: http::Presence,
    /// Woken when a command becomes deliverable (HTTP long polls and CoAP observers wait on it).
    pub command_arrived: tokio::sync::Notify,
    /// Devices whose desired attributes changed (CoAP observers are notified).
    pub desired_changed: tokio::sync::broadcast::Sender<Identity>,
    /// Zero-touch provisioning.
    pub provisioning: provision::Provisioning,
}

impl Shared {
    /// Queue a device status change.
    pub fn status_update(&self, update: StatusUpdate) {
        let _ = self.status.send(update);
    }

    /// Queue a DeviceCommand status change.
    pub fn command_update(&self, update: CommandUpdate) {
        let _ = self.command_updates.send(update);
    }

    /// A command went out to its device.
    pub fn command_sent(&self, device: &Identity, command: &sessions::CommandRef) {
        self.commands.lock().mark_sent(device, command);
        self.metrics
            .commands_delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.command_update(CommandUpdate::Sent {
            namespace: device.namespace.clone(),
            command: command.clone(),
        });
    }

    /// A Warning Event on a device (at most one a minute per device; dropped when busy).
    pub fn warn(&self, device: &Identity, reason: &'static str, message: String) {
        let _ = self.warnings.try_send(Warning {
            device: device.clone(),
            on: WarningOn::Device,
            reason,
            message,
        });
    }

    /// A Warning Event on a gateway.
    pub fn warn_gateway(&self, gateway: &Identity, reason: &'static str, message: String) {
        let _ = self.warnings.try_send(Warning {
            device: gateway.clone(),
            on: WarningOn::Gateway,
            reason,
            message,
        });
    }

    /// A Warning Event on a ProvisioningPolicy (a refused request).
    pub fn warn_policy(&self, policy: &Identity, reason: &'static str, message: String) {
        let _ = self.warnings.try_send(Warning {
            device: policy.clone(),
            on: WarningOn::Policy,
            reason,
            message,
        });
    }

    /// Where downlink for a device goes: its own session, or the gateway session it is logged
    /// in through.
    pub fn downlink_queue(&self, device: &Identity) -> Option<mpsc::Sender<Box<Deliver>>> {
        match self.devices.get(device) {
            Some(Handle { tx, .. }) => Some(tx),
            None => self.sub_logins.get(device).map(|l| l.tx),
        }
    }
}

/// The receiving ends of the queues [`Shared`] feeds, for the tasks that drain them.
struct Queues {
    ingest: mpsc::Receiver<ingest::Accepted>,
    status: mpsc::UnboundedReceiver<StatusUpdate>,
    commands: mpsc::UnboundedReceiver<CommandUpdate>,
    warnings: mpsc::Receiver<Warning>,
}

impl Shared {
    fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> (Arc<Shared>, Queues) {
        let (ingest, ingest_rx) = mpsc::channel(settings.ingest_queue);
        let (status, status_rx) = mpsc::unbounded_channel();
        let (command_updates, commands_rx) = mpsc::unbounded_channel();
        let (warnings, warnings_rx) = mpsc::channel(1024);
        let provisioning = provision::Provisioning::new(
            settings.provision_failure_burst,
            settings.provision_failure_refill,
        );
        let shared = Arc::new(Shared {
            settings,
            client,
            registry: RwLock::new(Registry::new()),
            devices: Sessions::default(),
            gateways: Sessions::default(),
            sub_logins: SubLogins::default(),
            apps: Sessions::default(),
            commands: Mutex::new(Commands::default()),
            north: Northbound::default(),
            metrics,
            ingest,
            status,
            command_updates,
            warnings,
            presence: http::Presence::default(),
            command_arrived: tokio::sync::Notify::new(),
            desired_changed: tokio::sync::broadcast::channel(1024).0,
            provisioning,
        });
        let queues = Queues {
            ingest: ingest_rx,
            status: status_rx,
            commands: commands_rx,
            warnings: warnings_rx,
        };
        (shared, queues)
    }
}

/// Why the front door stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    /// A listener failed.
    #[error("front door listener failed: {0}")]
    Listener(#[source] std::io::Error),
}

/// Run the front door until `shutdown`: watch the API, then serve the listeners.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    listeners: Listeners,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), FrontDoorError> {
    let (shared, queues) = Shared::new(client, settings, metrics);
    // Writers stop after the sessions (they write the final Offline), so they get their own
    // token.
    let writers_stop = CancellationToken::new();
    let mut writers = vec![
        tokio::spawn(ingest::run(
            shared.clone(),
            queues.ingest,
            writers_stop.clone(),
        )),
        tokio::spawn(status::run_device_writer(
            shared.clone(),
            queues.status,
            writers_stop.clone(),
        )),
        tokio::spawn(status::run_command_writer(
            shared.clone(),
            queues.commands,
            writers_stop.clone(),
        )),
    ];
    writers.push(tokio::spawn(provision::run_status_writer(
        shared.clone(),
        writers_stop.clone(),
    )));
    writers.push(tokio::spawn(publish_warnings(
        shared.clone(),
        queues.warnings,
        writers_stop.clone(),
    )));

    let enos = listeners.enos.is_some() || listeners.enos_tls.is_some();
    if listeners.coaps.is_some() || enos {
        // Before the first list of Secrets, so every device's key is there: DTLS needs the
        // pre-shared keys, EnOS logins sign with the secret instead of sending it.
        shared.registry.write().keep_device_keys();
    }
    watch::start(shared.clone(), shutdown.clone()).await;
    if shutdown.is_cancelled() {
        writers_stop.cancel();
        return Ok(());
    }
    tracing::info!(
        devices = shared.registry.read().device_count(),
        "front door registry synced; accepting connections"
    );
    let mut accepts = vec![
        tokio::spawn(accept(
            listeners.mqtt,
            None,
            Listener::Device,
            shared.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(accept(
            listeners.app,
            None,
            Listener::Application,
            shared.clone(),
            shutdown.clone(),
        )),
    ];
    let request_based =
        listeners.http.is_some() || listeners.coap.is_some() || listeners.coaps.is_some();
    if request_based {
        accepts.push(tokio::spawn(http::expire_presence(
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(socket) = listeners.coap {
        accepts.push(tokio::spawn(coap::serve_plain(
            socket,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(socket) = listeners.coaps {
        accepts.push(tokio::spawn(coap::serve_dtls(
            socket,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(listener) = listeners.http {
        accepts.push(tokio::spawn(http::serve(
            listener,
            None,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some((listener, tls)) = listeners.https {
        accepts.push(tokio::spawn(http::serve(
            listener,
            Some(tls),
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some((listener, tls)) = listeners.mqtts {
        accepts.push(tokio::spawn(accept(
            listener,
            Some(tls),
            Listener::DeviceTls,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(listener) = listeners.enos {
        accepts.push(tokio::spawn(accept(
            listener,
            None,
            Listener::Enos,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    if let Some((listener, tls)) = listeners.enos_tls {
        accepts.push(tokio::spawn(accept(
            listener,
            Some(tls),
            Listener::EnosTls,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    shutdown.cancelled().await;
    let sessions = shared
        .devices
        .all()
        .into_iter()
        .chain(shared.gateways.all());
    for (_, handle) in sessions.chain(shared.apps.all()) {
        handle
            .kill
            .kill(CloseCode::ShuttingDown, "the front door is shutting down");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let open = |s: &Shared| !s.devices.is_empty() || !s.gateways.is_empty() || !s.apps.is_empty();
    while open(&shared) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writers_stop.cancel();
    for task in accepts.into_iter().chain(writers) {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// Accept connections until shutdown, one task each.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    accept_each(&listener, &shutdown, |stream, peer| {
        let shared = shared.clone();
        match &tls {
            None => {
                tokio::spawn(mqtt::session::serve(stream, peer, kind, shared));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let timeout = shared.settings.connect_timeout;
                    if let Some(stream) = tls_handshake(&acceptor, stream, peer, timeout).await {
                        mqtt::session::serve(stream, peer, kind, shared).await;
                    }
                });
            }
        }
    })
    .await;
}

/// Accept TCP connections until shutdown and hand each to `handle`; a failing accept (out of
/// file descriptors and the like) backs off instead of spinning.
pub(crate) async fn accept_each(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    mut handle: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr),
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        handle(stream, peer);
    }
}

/// A TLS handshake bounded by `timeout`; None (logged) when it fails.
pub(crate) async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn publish_warnings(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Warning>,
    shutdown: CancellationToken,
) {
    let recorder = Recorder::new(
        shared.client.clone(),
        Reporter {
            controller: "devplane-frontdoor".into(),
            instance: Some(shared.settings.replica.clone()),
        },
    );
    let mut last: HashMap<(Identity, WarningOn, &'static str), Instant> = HashMap::new();
    loop {
        let warning = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = rx.recv() => match next {
                Some(w) => w,
                None => return,
            },
        };
        // Devices and gateways: one Event a minute; policies: one a minute per reason.
        let key = (
            warning.device.clone(),
            warning.on,
            if warning.on == WarningOn::Policy {
                warning.reason
            } else {
                ""
            },
        );
        if last
            .get(&key)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            continue;
        }
        last.insert(key, Instant::now());
        if last.len() > 10_000 {
            last.retain(|_, at| at.elapsed() < Duration::from_secs(60));
        }
        let (uid, kind) = {
            let registry = shared.registry.read();
            match warning.on {
                WarningOn::Gateway => {
                    let uid = registry.gateway(&warning.device).map(|g| g.uid.clone());
                    (uid, <Gateway as kube::Resource>::kind(&()))
                }
                WarningOn::Device => {
                    let uid = registry.device(&warning.device).map(|d| d.uid.clone());
                    (uid, <Device as kube::Resource>::kind(&()))
                }
                WarningOn::Policy => (
                    shared.provisioning.policy_uid(&warning.device),
                    <devplane_api::v1alpha1::ProvisioningPolicy as kube::Resource>::kind(&()),
                ),
            }
        };
        let reference = ObjectReference {
            api_version: Some(devplane_api::API_VERSION.into()),
            kind: Some(kind.into()),
            name: Some(warning.device.name.clone()),
            namespace: Some(warning.device.namespace.clone()),
            uid,
            ..Default::default()
        };
        let action = match warning.on {
            WarningOn::Policy => "Provision",
            _ => "Authorize",
        };
        let event = Event {
            type_: EventType::Warning,
            reason: warning.reason.into(),
            note: Some(warning.message),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %devplane_core::report::chain(&e), "cannot publish a warning event");
        }
    }
}

/// A [`Shared`] over a client that answers nothing (for tests of the session machinery).
#[cfg(test)]
pub(crate) fn test_shared() -> (Arc<Shared>, mpsc::Receiver<ingest::Accepted>) {
    let service = tower::service_fn(|_: ::http::Request<kube::client::Body>| async {
        Ok::<_, std::convert::Infallible>(::http::Response::new(kube::client::Body::empty()))
    });
    let client = kube::Client::new(service, "default");
    let (shared, queues) = Shared::new(client, Settings::default(), Arc::new(Metrics::default()));
    (shared, queues.ingest)
}
