//! `devplane up`: the standalone control plane in one process — the embedded Kubernetes API
//! server over the embedded store (or etcd), with devplane's CRDs installed, TLS from its own
//! CA, bearer tokens, and a kubeconfig for kubectl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use devplane_apiserver::authz::MASTERS;
use devplane_apiserver::{ApiServer, ApiServerConfig, Caller};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;
use crate::pki;

/// Why `devplane up` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The data directory is not usable.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Keys, certificates or tokens.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The store did not open.
    #[error("cannot open the store {url}: {source}")]
    Store {
        /// The store URL.
        url: String,
        /// The cause.
        source: devplane_store::StoreError,
    },
    /// The API server did not start.
    #[error("cannot start the API server: {0}")]
    ApiServer(devplane_apiserver::ApiError),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The front door's listeners could not be bound.
    #[error("front door: {0}")]
    FrontDoor(String),
}

/// The kubeconfig `devplane up` writes for its admin user.
pub fn kubeconfig(server_url: &str, ca_pem: Option<&str>, token: &str) -> String {
    let cluster = match ca_pem {
        Some(ca) => format!(
            "    server: {server_url}\n    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca)
        ),
        None => format!("    server: {server_url}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: devplane\n  cluster:\n{cluster}users:\n- name: devplane-admin\n  user:\n    token: {token}\ncontexts:\n- name: devplane\n  context:\n    cluster: devplane\n    user: devplane-admin\n    namespace: default\ncurrent-context: devplane\npreferences: {{}}\n"
    )
}

/// Run `devplane up` until SIGINT or SIGTERM.
pub async fn run(args: &UpArgs) -> Result<(), UpError> {
    let started = std::time::Instant::now();
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| UpError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store_url = match &args.store {
        Some(url) => url.clone(),
        None => format!("file://{}", absolute(&data_dir.join("store")).display()),
    };
    let options = devplane_store::EmbeddedOptions {
        retain_revisions: args.history_revisions,
        ..Default::default()
    };
    let store = devplane_store::open_with(&store_url, options)
        .await
        .map_err(|source| UpError::Store {
            url: store_url.clone(),
            source,
        })?;
    if store_url.starts_with("etcd://") {
        // The embedded store compacts itself; etcd is compacted here, as kube-apiserver does.
        tokio::spawn(compact_periodically(store.clone(), args.history_revisions));
    }
    let tokens = pki::tokens(&data_dir.join("tokens.json"))?;
    // kubectl (client-go) sends no bearer token over plain HTTP, so the local-test mode is
    // also unauthenticated, like Kubernetes' old insecure port.
    let token_table = if args.insecure_http {
        tracing::warn!("--insecure-http: plain HTTP without authentication; for local tests only");
        Default::default()
    } else {
        [
            (tokens.admin.clone(), admin_identity()),
            (tokens.controller.clone(), controller_identity()),
        ]
        .into()
    };
    let config = ApiServerConfig {
        tokens: token_table,
        advertise_address: args.api_addr.to_string(),
        audit_log: args.audit_log.clone(),
        webhook_services: args.webhook_services.iter().cloned().collect(),
        ..ApiServerConfig::default()
    };
    let server = ApiServer::new(store, config)
        .await
        .map_err(UpError::ApiServer)?;
    install(&server).await.map_err(UpError::ApiServer)?;
    let background = server.spawn_background();

    let listener = TcpListener::bind(args.api_addr)
        .await
        .map_err(|source| UpError::Bind {
            addr: args.api_addr,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| UpError::Bind {
        addr: args.api_addr,
        source,
    })?;
    let pki = if args.insecure_http && !args.frontdoor.needs_tls() {
        None
    } else {
        let mut hosts = vec![local.ip().to_string()];
        for addr in [args.frontdoor.mqtts_addr, args.frontdoor.https_addr]
            .into_iter()
            .flatten()
        {
            hosts.push(addr.ip().to_string());
        }
        Some(pki::ensure(&data_dir.join("pki"), &hosts)?)
    };
    let server_tls = |pki: &pki::Pki| {
        pki::server_config(&pki.server_cert_pem, &pki.server_key_pem).map_err(UpError::Tls)
    };
    let (scheme, ca_pem, tls) = match (&pki, args.insecure_http) {
        (Some(pki), false) => (
            "https",
            Some(pki.ca_cert_pem.clone()),
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(pki)?))),
        ),
        _ => ("http", None, None),
    };
    let frontdoor = if args.no_frontdoor {
        None
    } else {
        let device_tls = match &pki {
            Some(pki) if args.frontdoor.needs_tls() => {
                Some((pki.server_cert_pem.as_str(), pki.server_key_pem.as_str()))
            }
            _ => None,
        };
        let bound = crate::frontdoor::bind(&args.frontdoor, device_tls)
            .await
            .map_err(UpError::FrontDoor)?;
        crate::frontdoor::print_addresses(&bound);
        Some(bound)
    };
    let url = format!("{scheme}://{local}");
    let kubeconfig_path = data_dir.join("kubeconfig");
    pki::write_private(
        &kubeconfig_path,
        &kubeconfig(&url, ca_pem.as_deref(), &tokens.admin),
    )?;
    tracing::info!(%url, kubeconfig = %kubeconfig_path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "devplane is up");
    println!("devplane API server listening on {url}");
    println!("kubeconfig: {}", absolute(&kubeconfig_path).display());
    println!(
        "  export KUBECONFIG={}",
        absolute(&kubeconfig_path).display()
    );

    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let admin = crate::admin::Admin::new();
    admin.with_registry(|registry| {
        registry.register_collector(Box::new(crate::admin::WatchersGauge(server.clone())));
    });
    let admin_task = match args.admin_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| UpError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| UpError::Bind { addr, source })?;
            println!("admin endpoint listening on http://{bound}");
            admin.set_ready();
            Some(tokio::spawn(crate::admin::serve_on(
                listener,
                admin.clone(),
                stop.clone(),
            )))
        }
        None => None,
    };
    let (endpoints, app_endpoint) = match &frontdoor {
        Some(bound) => (
            frontdoor_endpoints(bound),
            Some(format!("mqtt://{}", bound.app)),
        ),
        None => (default_endpoints(&local.ip().to_string()), None),
    };
    let frontdoor_task = frontdoor.map(|bound| {
        // The front door reads the registry in-process too, under its own identity.
        let client = kube::Client::new(server.in_process_router(frontdoor_identity()), "default");
        let metrics = Arc::new(devplane_frontdoor::metrics::Metrics::default());
        crate::frontdoor::register(&admin, metrics.clone());
        let settings = crate::frontdoor::settings(
            &args.frontdoor,
            crate::controller::default_identity(),
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) =
                devplane_frontdoor::run(client, settings, bound.listeners, metrics, stop).await
            {
                tracing::error!(error = %devplane_core::report::chain(&e), "the front door stopped");
            }
        })
    });
    let controllers = if args.no_controllers {
        None
    } else {
        // The controllers talk to this server in-process: no socket, no TLS, same API.
        let client = kube::Client::new(server.in_process_router(controller_identity()), "default");
        let settings = devplane_reconcilers::Settings {
            endpoints,
            app_endpoint,
            ..Default::default()
        };
        let lease = crate::leader::LeaseConfig::new(
            SYSTEM_NAMESPACE,
            crate::controller::LEASE_NAME,
            crate::controller::default_identity(),
        );
        // The controllers' counters on the admin endpoint, as `devplane controller` serves them.
        let observer: Arc<dyn devplane_reconcilers::Observer> = Arc::new(
            crate::admin::ControllerMetrics::register(&admin, lease.state.clone()),
        );
        if store_url.starts_with("etcd://") {
            // Several `devplane up` may share an etcd: only the Lease holder reconciles.
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                let result = crate::leader::run_as_leader(client.clone(), lease, stop, |token| {
                    devplane_reconcilers::run(
                        client.clone(),
                        settings.clone(),
                        observer.clone(),
                        token,
                    )
                })
                .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "leader election failed; controllers stopped");
                }
            }))
        } else {
            // The embedded store's directory lock already makes this the only process.
            lease.state.set(true);
            Some(tokio::spawn(devplane_reconcilers::run(
                client,
                settings,
                observer,
                stop.clone(),
            )))
        }
    };
    serve(listener, server.router(), tls, stop.clone()).await;
    tracing::info!("shutting down");
    for task in [controllers, frontdoor_task].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Some(task) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    server.shutdown();
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// The namespace of devplane's own identities and Lease, as the install creates it.
pub const SYSTEM_NAMESPACE: &str = "devplane-system";

/// Who the controllers are to the API server (in-process, or with the controller token):
/// the install's ServiceAccount, with exactly the install's roles.
pub fn controller_identity() -> Caller {
    Caller::service_account(SYSTEM_NAMESPACE, "devplane-controller")
}

/// Who the in-process front door is to the API server: the install's ServiceAccount.
pub fn frontdoor_identity() -> Caller {
    Caller::service_account(SYSTEM_NAMESPACE, "devplane-frontdoor")
}

/// A caller that may do everything (the admin; in-process tools and tests).
pub fn admin_identity() -> Caller {
    Caller::new("admin", &[MASTERS])
}

/// The install's namespace, identities and roles (`manifests/deploy/base`), which `devplane
/// up` applies so that its in-process controllers and front door run as they would in a
/// cluster.
const INSTALL_IDENTITIES: [(&str, &str); 4] = [
    (
        "namespace.yaml",
        include_str!("../../../manifests/deploy/base/namespace.yaml"),
    ),
    (
        "rbac/controller.yaml",
        include_str!("../../../manifests/deploy/base/rbac/controller.yaml"),
    ),
    (
        "rbac/frontdoor.yaml",
        include_str!("../../../manifests/deploy/base/rbac/frontdoor.yaml"),
    ),
    (
        "rbac/webhook.yaml",
        include_str!("../../../manifests/deploy/base/rbac/webhook.yaml"),
    ),
];

/// Front-door endpoints written into credentials Secrets: where this process's front door
/// listens. CoAP appears as `coaps-endpoint` when the DTLS listener is on, and as
/// `coap-endpoint` only when plain CoAP is (insecure dev mode).
fn frontdoor_endpoints(bound: &crate::frontdoor::Bound) -> Vec<(String, String)> {
    let mut endpoints = vec![
        ("mqtt".into(), format!("mqtt://{}", bound.mqtt)),
        ("http".into(), format!("http://{}", bound.http)),
    ];
    let optional = [
        ("mqtts", bound.mqtts),
        ("https", bound.https),
        ("coaps", bound.coaps),
        ("coap", bound.coap),
    ];
    for (protocol, addr) in optional {
        if let Some(addr) = addr {
            endpoints.push((protocol.into(), format!("{protocol}://{addr}")));
        }
    }
    endpoints
}

/// Front-door endpoints written into credentials Secrets (the front door's default ports on
/// the API host; CoAP over DTLS on its IANA port, plain CoAP being for local tests only).
pub fn default_endpoints(host: &str) -> Vec<(String, String)> {
    vec![
        ("mqtt".into(), format!("mqtt://{host}:1883")),
        ("http".into(), format!("http://{host}:8080")),
        ("coaps".into(), format!("coaps://{host}:5684")),
    ]
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Install devplane's CRDs and the standard library (server-side apply: re-running updates
/// what devplane owns and leaves other managers' fields alone).
pub async fn install(server: &ApiServer) -> Result<(), devplane_apiserver::ApiError> {
    for crd in devplane_api::all_crds() {
        let object = serde_json::to_value(&crd)
            .map_err(|e| devplane_apiserver::ApiError::internal(e.to_string()))?;
        server.apply(object, "devplane").await?;
    }
    for (file, text) in devplane_api::library::FILES {
        let object: Value = serde_yaml::from_str(text).map_err(|e| {
            devplane_apiserver::ApiError::internal(format!("library file {file}: {e}"))
        })?;
        server.apply(object, "devplane").await?;
    }
    for (file, text) in INSTALL_IDENTITIES {
        for document in serde_yaml::Deserializer::from_str(text) {
            let object = Value::deserialize(document).map_err(|e| {
                devplane_apiserver::ApiError::internal(format!("manifests/deploy/base/{file}: {e}"))
            })?;
            if !object.is_null() {
                server.apply(object, "devplane").await?;
            }
        }
    }
    Ok(())
}

/// Compact a store every minute down to the newest `retain` revisions.
async fn compact_periodically(store: Arc<dyn devplane_store::Store>, retain: u64) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        let Ok(target) = store.revision_writes_ago(retain).await else {
            continue;
        };
        let compacted = store.compacted_revision().await.unwrap_or(0);
        if target > compacted
            && let Err(e) = store.compact(target).await
        {
            tracing::debug!(error = %e, "compaction skipped");
        }
    }
}

pub async fn stop_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.cancel();
}

/// Accept connections until `stop`, serving HTTP/1.1 and HTTP/2, over TLS when given.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the audit log.
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .into_owned(),
                            )
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Open watches end when the server's shutdown token fires; give requests a moment.
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; closing");
    }
}
