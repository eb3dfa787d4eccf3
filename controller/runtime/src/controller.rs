//! `devplane controller`: the controllers against any Kubernetes API, one active replica at a
//! time (Lease-based leader election), with /metrics, /healthz and /readyz.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin, ControllerMetrics};
use crate::cli::ControllerArgs;
use crate::leader::{self, LeaseConfig};

/// Name of the Lease the controller replicas compete for.
pub const LEASE_NAME: &str = "devplane-controller";

/// A default identity: host name and process id.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "devplane".into());
    format!("{host}-{}", std::process::id())
}

/// A client from a kubeconfig file, or the in-cluster / default configuration.
pub async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// Run the controllers while leading, until SIGTERM or SIGINT.
pub async fn run(args: &ControllerArgs) -> Result<(), String> {
    let client = client_from(args.kubeconfig.as_deref()).await?;
    let stop = CancellationToken::new();
    tokio::spawn(crate::up::stop_on_signal(stop.clone()));
    let admin = Admin::new();
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut lease = LeaseConfig::new(&args.lease_namespace, LEASE_NAME, &identity);
    lease.lease_duration = Duration::from_secs(args.lease_seconds.max(2));
    lease.renew_interval = lease.lease_duration / 3;
    let metrics = ControllerMetrics::register(&admin, lease.state.clone());
    let admin_task = tokio::spawn(admin::serve(args.admin_addr, admin.clone(), stop.clone()));
    admin.set_ready();
    let settings = devplane_reconcilers::Settings {
        endpoints: crate::up::default_endpoints(&args.frontdoor_host),
        reporter: format!("devplane-controller/{identity}"),
        ..Default::default()
    };
    tracing::info!(%identity, lease = %format!("{}/{LEASE_NAME}", args.lease_namespace), "campaigning for the controller lease");
    let result = leader::run_as_leader(client.clone(), lease, stop.clone(), |token| {
        let client = client.clone();
        let settings = settings.clone();
        let metrics = metrics.clone();
        async move {
            tracing::info!("leading: controllers start");
            devplane_reconcilers::run(client, settings, Arc::new(metrics), token).await;
            tracing::info!("controllers stopped");
        }
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    result.map_err(|e| e.to_string())
}
