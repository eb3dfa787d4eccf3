//! `devplane bench provision`: zero-touch provisions end to end — request → Device created →
//! credentials issued by the controllers → answer — per second and their latency, over HTTP
//! with concurrent clients, against `devplane up` (embedded store in memory, controllers and
//! front door in one process). The same-run baseline is the part no provisioning can skip:
//! creating the same number of Devices through the API with the same concurrency (their
//! credentials are issued in the background, unwaited).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use devplane_api::v1alpha1::{Device, ProvisioningPolicy};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::mqtt::{address_after, cpu_seconds, percentiles, start_child};
use crate::cli::BenchProvisionArgs;

/// The group key of the bench policy.
const GROUP_KEY: &[u8] = b"devplane bench group key";

/// What one run measured.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    done: usize,
    failed: usize,
    first_failure: Option<String>,
    cpu_per_1k: f64,
}

/// Run `devplane bench provision`.
pub async fn run(args: &BenchProvisionArgs) -> Result<(), String> {
    super::in_temp_dir(|dir| async move { run_in(&dir, args).await }).await
}

async fn run_in(dir: &std::path::Path, args: &BenchProvisionArgs) -> Result<(), String> {
    let _progress = super::Progress::start("bench provision", None);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut up = Command::new(&exe);
    up.args(["up", "--store", "memory://", "--insecure-http"])
        .args(["--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir);
    for flag in [
        "--mqtt-addr",
        "--app-mqtt-addr",
        "--http-addr",
        "--admin-addr",
    ] {
        up.args([flag, "127.0.0.1:0"]);
    }
    up.env("RUST_LOG", "warn");
    let (child, lines) = start_child(up, "kubeconfig:", &dir.join("up.log"))?;
    let child = super::mqtt::Stopped::new(child);
    let http = address_after(&lines, "device HTTP listening on http://")?;
    let client = crate::controller::client_from(Some(&dir.join("kubeconfig"))).await?;
    setup(&client).await?;

    let devices = args.devices as usize;
    let concurrency = args.concurrency.max(1) as usize;
    eprintln!("devplane bench provision: {devices} devices, {concurrency} concurrent clients");
    let ours = provisions(http, child.pid(), devices, concurrency).await;
    eprintln!("  API creates of {devices} Devices (baseline)");
    let theirs = creates(&client, child.pid(), devices, concurrency).await;
    let rss = super::mqtt::rss_of(child.pid()).unwrap_or(0);

    let build = super::build_kind();
    println!(
        "devplane bench provision ({build} build): {devices} devices, {concurrency} concurrent HTTP clients, embedded store"
    );
    println!(
        "{:<36} {:>24} {:>24} {:>8}",
        "", "provision (end to end)", "API create (baseline)", "ratio"
    );
    println!(
        "{:<36} {:>24.0} {:>24.0} {:>8}",
        "per second",
        ours.rate,
        theirs.rate,
        super::ratio(ours.rate, theirs.rate)
    );
    println!(
        "{:<36} {:>24} {:>24}",
        "latency p50 / p99",
        super::latency(ours.p50, ours.p99),
        super::latency(theirs.p50, theirs.p99)
    );
    println!(
        "{:<36} {:>24} {:>24}",
        "done / failed",
        format!("{} / {}", ours.done, ours.failed),
        format!("{} / {}", theirs.done, theirs.failed)
    );
    println!(
        "{:<36} {:>24} {:>24}",
        "server CPU per 1,000",
        format!("{:.2} s", ours.cpu_per_1k),
        format!("{:.2} s", theirs.cpu_per_1k)
    );
    println!(
        "{:<36} {:>24}",
        "RSS after both runs",
        format!("{:.0} MB", rss as f64 / 1e6)
    );
    for (what, figures) in [("provision", &ours), ("API create", &theirs)] {
        if let Some(failure) = &figures.first_failure {
            println!("first {what} failure: {failure}");
        }
    }
    Ok(())
}

/// A namespace, a model, a group key and a symmetric-key policy; waits for the policy to be
/// Ready.
async fn setup(client: &kube::Client) -> Result<(), String> {
    use base64::Engine;
    let apply = |manifest: serde_json::Value| {
        let client = client.clone();
        async move {
            let (api_version, kind) = (
                manifest["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                manifest["kind"].as_str().unwrap_or_default().to_string(),
            );
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let resource = kube::discovery::ApiResource::from_gvk(
                &kube::api::GroupVersionKind::gvk(group, version, &kind),
            );
            let api: Api<kube::api::DynamicObject> =
                match manifest["metadata"]["namespace"].as_str() {
                    Some(ns) => Api::namespaced_with(client, ns, &resource),
                    None => Api::all_with(client, &resource),
                };
            let object: kube::api::DynamicObject =
                serde_json::from_value(manifest).map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(|e| format!("create {kind}: {e}"))
        }
    };
    apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})).await?;
    apply(json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "DeviceModel",
        "metadata": {"name": "sensor", "namespace": "bench"},
        "spec": {"version": "1.0.0", "measurePoints": [
            {"identifier": "temperature", "dataType": {"type": "double", "unit": "Cel"}}
        ]}
    }))
    .await?;
    apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "group-key", "namespace": "bench"},
        "data": {"groupKey": base64::engine::general_purpose::STANDARD.encode(GROUP_KEY)}
    }))
    .await?;
    apply(json!({
        "apiVersion": "iot.devplane.io/v1alpha1", "kind": "ProvisioningPolicy",
        "metadata": {"name": "sensors", "namespace": "bench"},
        "spec": {
            "template": {"spec": {"modelRef": {"name": "sensor"}}},
            "naming": {"prefix": "p-"},
            "attestation": {"symmetricKey": {"secretRef": {"name": "group-key"}}}
        }
    }))
    .await?;
    let policies: Api<ProvisioningPolicy> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    loop {
        let policy = policies
            .get("sensors")
            .await
            .map_err(|e| format!("read the policy: {e}"))?;
        let ready = policy.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the bench policy is not Ready: {:?}",
                policy.status
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latencies (ms) of successful runs and the failures, of `count` calls of `call` with
/// `concurrency` in flight.
async fn measure<F, Fut>(count: usize, concurrency: usize, pid: u32, call: F) -> Figures
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let results: Vec<(Duration, Result<(), String>)> = futures::stream::iter(0..count)
        .map(|i| {
            let call = call(i);
            async move {
                let sent = Instant::now();
                let result = call.await;
                (sent.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let mut latencies = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_failure = None;
    for (took, result) in results {
        match result {
            Ok(()) => latencies.push(took.as_secs_f64() * 1000.0),
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    let done = latencies.len();
    let (p50, p99) = percentiles(latencies);
    Figures {
        rate: done as f64 / elapsed,
        p50,
        p99,
        done,
        failed,
        first_failure,
        cpu_per_1k: (cpu_seconds(pid).unwrap_or(0.0) - cpu_before) * 1000.0 / count.max(1) as f64,
    }
}

/// `count` provisions of new devices over HTTP.
async fn provisions(http: SocketAddr, pid: u32, count: usize, concurrency: usize) -> Figures {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let client = Arc::new(client);
    let uri = format!("http://{http}/v1/provision/bench/sensors");
    measure(count, concurrency, pid, |i| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let id = format!("{i:08}");
            let body = json!({
                "deviceId": id,
                "proof": devplane_core::provisioning::proof(GROUP_KEY, &id),
            });
            let request = hyper::Request::post(&uri)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status.as_u16() == 201 {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
        }
    })
    .await
}

/// `count` Device creates through the API.
async fn creates(client: &kube::Client, pid: u32, count: usize, concurrency: usize) -> Figures {
    let api: Api<Device> = Api::namespaced(client.clone(), "bench");
    measure(count, concurrency, pid, |i| {
        let api = api.clone();
        async move {
            let device: Device = serde_json::from_value(json!({
                "apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device",
                "metadata": {"name": format!("c-{i:08}"), "namespace": "bench"},
                "spec": {"modelRef": {"name": "sensor"}}
            }))
            .map_err(|e| e.to_string())?;
            api.create(&PostParams::default(), &device)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}
