//! Wiring of the device front door: binding its listeners, its metrics on the admin endpoint,
//! and `devplane frontdoor` (the front door alone, against any Kubernetes API).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use devplane_frontdoor::metrics::Metrics;
use devplane_frontdoor::{Listeners, Settings};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::cli::{FrontdoorArgs, FrontdoorListenArgs};

/// Bound front-door listeners and their addresses.
pub struct Bound {
    /// The listeners.
    pub listeners: Listeners,
    /// Device MQTT address.
    pub mqtt: SocketAddr,
    /// Device MQTTS address, if on.
    pub mqtts: Option<SocketAddr>,
    /// Application MQTT address.
    pub app: SocketAddr,
    /// Device HTTP address.
    pub http: SocketAddr,
    /// Device HTTPS address, if on.
    pub https: Option<SocketAddr>,
    /// Device plain CoAP address, if on (insecure dev mode).
    pub coap: Option<SocketAddr>,
    /// Device CoAP over DTLS address, if on.
    pub coaps: Option<SocketAddr>,
    /// EnOS device-protocol address, if on.
    pub enos: Option<SocketAddr>,
    /// EnOS device-protocol over TLS address, if on.
    pub enos_tls: Option<SocketAddr>,
}

async fn bind_one(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok((listener, local))
}

type TlsListener = (TcpListener, tokio_rustls::TlsAcceptor);

/// Bind a TLS listener if its address is given; it needs the certificate.
async fn bind_tls(
    flag: &str,
    addr: Option<SocketAddr>,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<(Option<TlsListener>, Option<SocketAddr>), String> {
    match (addr, tls) {
        (Some(addr), Some(config)) => {
            let (listener, local) = bind_one(addr).await?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            Ok((Some((listener, acceptor)), Some(local)))
        }
        (Some(addr), None) => Err(format!(
            "{flag} {addr} needs a certificate (--tls-cert-file and --tls-key-file)"
        )),
        (None, _) => Ok((None, None)),
    }
}

async fn bind_udp(addr: SocketAddr) -> Result<(UdpSocket, SocketAddr), String> {
    let socket = udp_socket(addr).map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
    Ok((socket, local))
}

/// Kernel buffer asked for each CoAP socket: bursts from many devices must not overflow the
/// default (about 200 datagrams), which UDP would drop silently.
const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with large kernel buffers (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`).
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer still works, it only drops sooner under bursts.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Bind the listeners (MQTTS and HTTPS only with a certificate and key, PEM; plain CoAP only in
/// insecure dev mode).
pub async fn bind(args: &FrontdoorListenArgs, tls: Option<(&str, &str)>) -> Result<Bound, String> {
    let (mqtts_tls, https_tls) = match tls {
        Some((cert, key)) => (
            Some(Arc::new(crate::pki::server_config(cert, key)?)),
            // HTTPS asks for (and does not require) a client certificate: certificate
            // attestation of zero-touch provisioning reads it.
            Some(Arc::new(crate::pki::server_config_with(cert, key, true)?)),
        ),
        None => (None, None),
    };
    let (mqtt, mqtt_addr) = bind_one(args.mqtt_addr).await?;
    let (app, app_addr) = bind_one(args.app_mqtt_addr).await?;
    let (http, http_addr) = bind_one(args.http_addr).await?;
    let (mqtts, mqtts_addr) = bind_tls("--mqtts-addr", args.mqtts_addr, mqtts_tls.as_ref()).await?;
    let (https, https_addr) = bind_tls("--https-addr", args.https_addr, https_tls.as_ref()).await?;
    let (enos, enos_addr) = match args.enos_mqtt_addr {
        Some(addr) => {
            let (listener, local) = bind_one(addr).await?;
            (Some(listener), Some(local))
        }
        None => (None, None),
    };
    let (enos_tls, enos_tls_addr) = bind_tls(
        "--enos-mqtts-addr",
        args.enos_mqtts_addr,
        mqtts_tls.as_ref(),
    )
    .await?;
    let (coap, coap_addr) = if args.coap_insecure_dev {
        let (socket, local) = bind_udp(args.coap_addr).await?;
        (Some(socket), Some(local))
    } else {
        (None, None)
    };
    let (coaps, coaps_addr) = match args.coaps_addr {
        Some(addr) => {
            let (socket, local) = bind_udp(addr).await?;
            (Some(socket), Some(local))
        }
        None => (None, None),
    };
    Ok(Bound {
        listeners: Listeners {
            mqtt,
            mqtts,
            app,
            http: Some(http),
            https,
            coap,
            coaps,
            enos,
            enos_tls,
        },
        mqtt: mqtt_addr,
        mqtts: mqtts_addr,
        app: app_addr,
        http: http_addr,
        https: https_addr,
        coap: coap_addr,
        coaps: coaps_addr,
        enos: enos_addr,
        enos_tls: enos_tls_addr,
    })
}

impl FrontdoorListenArgs {
    /// Whether a listener needs devplane's server certificate.
    pub fn needs_tls(&self) -> bool {
        self.mqtts_addr.is_some() || self.https_addr.is_some() || self.enos_mqtts_addr.is_some()
    }
}

/// Front-door settings from the command line.
pub fn settings(args: &FrontdoorListenArgs, replica: String) -> Settings {
    Settings {
        replica,
        status_interval: Duration::from_secs(args.status_interval_seconds.max(1)),
        coap_baseline: args.coap_bench_baseline,
        ..Settings::default()
    }
}

/// The front door's counters, read at each scrape.
struct FrontDoorCollector(Arc<Metrics>);

impl std::fmt::Debug for FrontDoorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrontDoorCollector")
    }
}

impl Collector for FrontDoorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.expose() {
            if family.counter {
                let kind = ConstCounter::new(0u64).metric_type();
                let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
                for (label, value) in family.values {
                    let counter = ConstCounter::new(value);
                    match family.label {
                        Some(name) => counter.encode(metric.encode_family(&[(name, label)])?)?,
                        None => {
                            counter.encode(metric.encode_family(&Vec::<(&str, &str)>::new())?)?
                        }
                    }
                }
            } else {
                let kind = ConstGauge::new(0i64).metric_type();
                let metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
                let value = family.values.first().map(|(_, v)| *v).unwrap_or_default();
                ConstGauge::new(value as i64).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// Register the front door's counters into `admin`.
pub fn register(admin: &Admin, metrics: Arc<Metrics>) {
    admin.with_registry(|registry| {
        registry.register_collector(Box::new(FrontDoorCollector(metrics)));
    });
}

/// Run `devplane frontdoor` until SIGTERM or SIGINT.
pub async fn run(args: &FrontdoorArgs) -> Result<(), String> {
    let client = crate::controller::client_from(args.kubeconfig.as_deref()).await?;
    let pems = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            Some((read(cert)?, read(key)?))
        }
        _ => None,
    };
    let tls = pems.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
    let bound = bind(&args.listen, tls).await?;
    print_addresses(&bound);
    let stop = CancellationToken::new();
    tokio::spawn(crate::up::stop_on_signal(stop.clone()));
    let admin = Admin::new();
    let metrics = Arc::new(Metrics::default());
    register(&admin, metrics.clone());
    let admin_task = tokio::spawn(admin::serve(args.admin_addr, admin.clone(), stop.clone()));
    let replica = args
        .identity
        .clone()
        .unwrap_or_else(crate::controller::default_identity);
    admin.set_ready();
    let result = devplane_frontdoor::run(
        client,
        settings(&args.listen, replica),
        bound.listeners,
        metrics,
        stop.clone(),
    )
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    result.map_err(|e| devplane_core::report::chain(&e))
}

/// Print where the listeners are (tests and scripts read these lines).
pub fn print_addresses(bound: &Bound) {
    println!("device MQTT listening on mqtt://{}", bound.mqtt);
    if let Some(addr) = bound.mqtts {
        println!("device MQTT over TLS listening on mqtts://{addr}");
    }
    println!("device HTTP listening on http://{}", bound.http);
    if let Some(addr) = bound.https {
        println!("device HTTP over TLS listening on https://{addr}");
    }
    if let Some(addr) = bound.coaps {
        println!("device CoAP over DTLS listening on coaps://{addr}");
    }
    if let Some(addr) = bound.coap {
        tracing::warn!("--coap-insecure-dev: plain CoAP without credentials; for local tests only");
        println!("device CoAP (insecure, dev only) listening on coap://{addr}");
    }
    if let Some(addr) = bound.enos {
        println!("device EnOS MQTT listening on mqtt://{addr}");
    }
    if let Some(addr) = bound.enos_tls {
        println!("device EnOS MQTT over TLS listening on mqtts://{addr}");
    }
    println!("application MQTT listening on mqtt://{}", bound.app);
}
