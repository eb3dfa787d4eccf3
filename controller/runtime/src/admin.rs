//! The controller's admin HTTP endpoint: Prometheus metrics, liveness and readiness.
//!
//! `GET /metrics` answers in the OpenMetrics text format
//! (`application/openmetrics-text; version=1.0.0; charset=utf-8`), which Prometheus scrapes
//! natively; `GET /healthz` answers 200 while the process serves at all; `GET /readyz` answers 200
//! once the process has declared itself ready and 503 with the reason before that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderState;

#[cfg(test)]
mod tests;

/// Content type of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// State behind the admin endpoint: the metrics registry and the readiness flag. Clones share
/// both.
#[derive(Clone, Debug)]
pub struct Admin {
    registry: Arc<Mutex<Registry>>,
    /// `None` when ready, otherwise why not.
    not_ready: Arc<RwLock<Option<String>>>,
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

impl Admin {
    /// An empty registry, not ready yet (reason "starting").
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            not_ready: Arc::new(RwLock::new(Some("starting".to_string()))),
        }
    }

    /// Register metrics: `f` gets the registry while it is locked.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock())
    }

    /// Declare the process ready: `/readyz` answers 200.
    pub fn set_ready(&self) {
        *self.not_ready.write() = None;
    }

    /// Declare the process not ready: `/readyz` answers 503 with `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.write() = Some(reason.into());
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.not_ready.read().is_none()
    }

    /// The registry in the OpenMetrics text format, ending in `# EOF`.
    pub fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry.lock())?;
        Ok(text)
    }
}

/// The admin routes, with `admin` as their state.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

/// Bind `addr` and serve the admin routes until `shutdown` is cancelled. The bound address
/// (useful with port 0) is logged; use [`serve_on`] to learn it programmatically.
pub async fn serve(
    addr: SocketAddr,
    admin: Admin,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, admin, shutdown).await
}

/// Serve the admin routes on a bound listener until `shutdown` is cancelled.
pub async fn serve_on(
    listener: TcpListener,
    admin: Admin,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "admin endpoint listening");
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(admin): State<Admin>) -> Response {
    match admin.encode_metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let not_ready = admin.not_ready.read().clone();
    match not_ready {
        None => "ok\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

type HistogramFamily = Family<ControllerLabel, Histogram, fn() -> Histogram>;

/// The reconcilers' metrics. Cheap to clone; clones record into the same series.
///
/// Labels are static strings (controller names and error categories), so the series count stays
/// bounded whatever the errors say.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
    in_flight: Family<ControllerLabel, Gauge>,
    waiting: Family<ControllerLabel, Gauge>,
    queued: Family<ControllerLabel, Gauge>,
}

impl ControllerMetrics {
    /// Register the metrics into `admin`'s registry; `devplane_leader` reads `leader` at each
    /// scrape, so it needs no updating.
    pub fn register(admin: &Admin, leader: LeaderState) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            // 1 ms to about 16 s: a reconcile is a few API round trips, rarely more.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            in_flight: Family::default(),
            waiting: Family::default(),
            queued: Family::default(),
        };
        admin.with_registry(|registry| {
            registry.register(
                "devplane_reconciles",
                "Reconciles started, by controller",
                metrics.reconciles.clone(),
            );
            registry.register(
                "devplane_reconcile_errors",
                "Reconciles that failed, by controller and error category",
                metrics.errors.clone(),
            );
            registry.register_with_unit(
                "devplane_reconcile_duration",
                "How long reconciles took, by controller",
                Unit::Seconds,
                metrics.duration.clone(),
            );
            registry.register(
                "devplane_reconciles_in_flight",
                "Reconciles running now, by controller",
                metrics.in_flight.clone(),
            );
            registry.register(
                "devplane_reconcile_queue_depth",
                "Objects a watch event asked to reconcile that no reconcile has picked up yet, by controller",
                metrics.queued.clone(),
            );
            registry.register(
                "devplane_reconcile_retries_waiting",
                "Objects waiting for a retry after a failed reconcile, by controller",
                metrics.waiting.clone(),
            );
            registry.register_collector(Box::new(LeaderGauge(leader)));
        });
        metrics
    }

    /// A reconcile of `controller` starts: counts it and marks it in flight until the returned
    /// timer is finished or dropped, which also records its duration.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        let label = ControllerLabel { controller };
        self.reconciles.get_or_create(&label).inc();
        self.in_flight.get_or_create(&label).inc();
        ReconcileTimer {
            metrics: self.clone(),
            controller,
            started: Instant::now(),
        }
    }

    /// A reconcile of `controller` failed with an error of `category` (the error's stable
    /// `category()`, never its message).
    pub fn error(&self, controller: &'static str, category: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }
}

/// A running reconcile; finishing or dropping it records the duration and ends "in flight".
#[derive(Debug)]
#[must_use = "dropping the timer at once records a zero-length reconcile"]
pub struct ReconcileTimer {
    metrics: ControllerMetrics,
    controller: &'static str,
    started: Instant,
}

impl ReconcileTimer {
    /// The reconcile is over (same as dropping the timer, but reads better at the call site).
    pub fn finish(self) {}
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let label = ControllerLabel {
            controller: self.controller,
        };
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.get_or_create(&label).dec();
    }
}

/// `devplane_leader`: 1 while this process holds the controller lease, read at scrape time.
#[derive(Debug)]
struct LeaderGauge(LeaderState);

impl Collector for LeaderGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::from(self.0.is_leader()));
        let metric = encoder.encode_descriptor(
            "devplane_leader",
            "1 while this process holds the controller lease",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

impl devplane_reconcilers::Observer for ControllerMetrics {
    fn started(&self, controller: &'static str) {
        let label = ControllerLabel { controller };
        self.reconciles.get_or_create(&label).inc();
        self.in_flight.get_or_create(&label).inc();
    }

    fn finished(
        &self,
        controller: &'static str,
        elapsed: std::time::Duration,
        error: Option<&'static str>,
    ) {
        let label = ControllerLabel { controller };
        self.duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        self.in_flight.get_or_create(&label).dec();
        if let Some(category) = error {
            self.error(controller, category);
        }
    }

    fn waiting(&self, controller: &'static str, objects: usize) {
        self.waiting
            .get_or_create(&ControllerLabel { controller })
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    fn queued(&self, controller: &'static str, objects: usize) {
        self.queued
            .get_or_create(&ControllerLabel { controller })
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }
}

/// `apiserver_registered_watchers{group, resource, selector}`: the embedded API server's open
/// watches, read at each scrape (the selector label shows which watches are narrowed).
pub struct WatchersGauge(pub devplane_apiserver::ApiServer);

impl std::fmt::Debug for WatchersGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchersGauge")
    }
}

impl Collector for WatchersGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "apiserver_registered_watchers",
            "Watches open on the API server, by group, resource and label selector",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for ((group, resource, selector), open) in self.0.open_watches() {
            let labels = [
                ("group", group.as_str()),
                ("resource", resource.as_str()),
                ("selector", selector.as_str()),
            ];
            ConstGauge::new(i64::try_from(open).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
