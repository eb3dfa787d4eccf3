//! `devplane bench onboard`: one OnboardingBatch of N devices through the controllers, from
//! the batch's creation to every device Ready (credentials issued, phase Provisioned).
//!
//! Progress is read from one watch of the batch's devices, each event parsed only for its name
//! and Ready condition, so the bench itself costs the process little next to what it
//! measures (listing every device each second would not).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Target, peak_rss_bytes, rss_bytes, tempfile_dir};

/// How often a progress line is printed (to stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Run `devplane bench onboard`.
pub async fn run(args: &crate::cli::BenchOnboardArgs) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let result = measure(args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &crate::cli::BenchOnboardArgs, dir: &std::path::Path) -> Result<(), String> {
    let url = match &args.etcd {
        Some(endpoint) => format!(
            "etcd://{}/bench-onboard-{}",
            endpoint.trim_start_matches("etcd://"),
            std::process::id()
        ),
        None => format!("file://{}", dir.display()),
    };
    let store = devplane_store::open(&url)
        .await
        .map_err(|e| e.to_string())?;
    let target = Arc::new(Target::start(store).await?);
    let stop = CancellationToken::new();
    let client = kube::Client::new(
        target.server.in_process_router(crate::up::admin_identity()),
        "default",
    );
    let counts = Arc::new(Counts::default());
    tokio::spawn(devplane_reconcilers::run(
        client,
        devplane_reconcilers::Settings::default(),
        counts.clone(),
        stop.clone(),
    ));
    let progress = Progress::default();
    let ready = progress.ready.clone();
    let created = progress.created.clone();
    watch_devices(&target, progress, stop.clone()).await?;
    create_model(&target).await?;

    let started = Instant::now();
    create_batch(&target, args.devices).await?;
    let mut complete = None;
    let mut all_ready = None;
    let mut last_line = Instant::now();
    while started.elapsed() < Duration::from_secs(args.timeout_seconds) && all_ready.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if complete.is_none() && batch_complete(&target).await? {
            complete = Some(started.elapsed());
        }
        if ready.load(Ordering::Relaxed) >= args.devices {
            all_ready = Some(started.elapsed());
        }
        if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            eprintln!(
                "  … {:.0} s: {} created, {} Ready, RSS {:.0} MB",
                started.elapsed().as_secs_f64(),
                created.load(Ordering::Relaxed),
                ready.load(Ordering::Relaxed),
                rss_bytes().unwrap_or(0) as f64 / 1e6
            );
        }
    }
    report(
        args,
        complete,
        all_ready,
        ready.load(Ordering::Relaxed),
        &counts,
    );
    stop.cancel();
    target.shutdown();
    Ok(())
}

async fn create_model(target: &Target) -> Result<(), String> {
    let model = json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceModel",
        "metadata": {"name": "meter", "namespace": "bench"},
        "spec": {"version": "1.0.0", "extends": [{"name": "three-phase-measurement", "namespace": "devplane-library"}, {"name": "energy", "namespace": "devplane-library"}]}
    });
    target
        .request(
            "POST",
            "/apis/iot.devplane.io/v1alpha1/namespaces/bench/devicemodels",
            Some(&model),
        )
        .await?;
    Ok(())
}

async fn create_batch(target: &Target, devices: u64) -> Result<(), String> {
    let batch = json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "OnboardingBatch",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"site": "bench", "template": {"spec": {"modelRef": {"name": "meter"}}}, "items": {"generate": {"count": devices, "namePattern": "meter-{index:06}"}}}
    });
    let (status, body) = target
        .request(
            "POST",
            "/apis/iot.devplane.io/v1alpha1/namespaces/bench/onboardingbatches",
            Some(&batch),
        )
        .await?;
    if status != 201 {
        return Err(format!(
            "batch not created: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

async fn batch_complete(target: &Target) -> Result<bool, String> {
    let (_, body) = target
        .request(
            "GET",
            "/apis/iot.devplane.io/v1alpha1/namespaces/bench/onboardingbatches/bench",
            None,
        )
        .await?;
    let batch: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(batch["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Complete" && c["status"] == "True"))
}

/// Devices seen and devices Ready, counted from the watch.
#[derive(Default)]
struct Progress {
    created: Arc<AtomicU64>,
    ready: Arc<AtomicU64>,
}

/// The part of a watch event the bench reads.
#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Object,
}

#[derive(Deserialize)]
struct Object {
    metadata: Metadata,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

impl Object {
    fn ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True")
        })
    }
}

/// Watch the bench namespace's devices from now on, counting those seen and those Ready.
async fn watch_devices(
    target: &Target,
    progress: Progress,
    stop: CancellationToken,
) -> Result<(), String> {
    let response = target.watch_devices("0").await?;
    tokio::spawn(async move {
        let mut body = std::pin::pin!(response.into_body().into_data_stream());
        let mut pending: Vec<u8> = Vec::new();
        let mut seen = HashSet::new();
        let mut ready = HashSet::new();
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return,
                chunk = body.next() => chunk,
            };
            let Some(Ok(chunk)) = chunk else { return };
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + end];
                start += end + 1;
                let Ok(event) = serde_json::from_slice::<WatchEvent>(line) else {
                    continue;
                };
                let name = event.object.metadata.name.clone();
                if event.kind == "DELETED" {
                    continue;
                }
                if seen.insert(name.clone()) {
                    progress.created.fetch_add(1, Ordering::Relaxed);
                }
                if event.object.ready() && ready.insert(name) {
                    progress.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            pending.drain(..start);
        }
    });
    Ok(())
}

fn report(
    args: &crate::cli::BenchOnboardArgs,
    complete: Option<Duration>,
    ready: Option<Duration>,
    ready_count: u64,
    counts: &Counts,
) {
    let per_second = |d: Option<Duration>| {
        d.map(|d| {
            format!(
                "{:.1} s ({:.0} devices/s)",
                d.as_secs_f64(),
                args.devices as f64 / d.as_secs_f64()
            )
        })
        .unwrap_or_else(|| "not reached".into())
    };
    println!(
        "devplane bench onboard: {} devices through the controllers on {} ({} build)",
        args.devices,
        if args.etcd.is_some() {
            "etcd"
        } else {
            "the embedded store"
        },
        super::build_kind()
    );
    println!(
        "  batch Complete (every device created): {}",
        per_second(complete)
    );
    println!(
        "  every device Ready (credentials issued, phase Provisioned): {}",
        per_second(ready)
    );
    if ready.is_none() {
        println!(
            "  ({ready_count} of {} devices were Ready when the bench gave up)",
            args.devices
        );
    }
    for (controller, (runs, busy)) in counts.0.lock().iter() {
        println!(
            "  {controller}: {runs} reconciles ({:.2} per device), {:.1} s in reconciles",
            *runs as f64 / args.devices.max(1) as f64,
            busy.as_secs_f64()
        );
    }
    if let (Some(rss), Some(peak)) = (rss_bytes(), peak_rss_bytes()) {
        println!(
            "  RSS at the end {:.0} MB, peak {:.0} MB (API server, store and history, controllers and their caches, in one process)",
            rss as f64 / 1e6,
            peak as f64 / 1e6
        );
    }
}

/// Reconciles and time spent, by controller.
#[derive(Default)]
struct Counts(parking_lot::Mutex<BTreeMap<&'static str, (u64, Duration)>>);

impl devplane_reconcilers::Observer for Counts {
    fn started(&self, _: &'static str) {}
    fn finished(&self, controller: &'static str, elapsed: Duration, _: Option<&'static str>) {
        let mut counts = self.0.lock();
        let entry = counts.entry(controller).or_default();
        entry.0 += 1;
        entry.1 += elapsed;
    }
}
