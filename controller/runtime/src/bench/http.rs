//! `devplane bench http`: validated HTTP telemetry through the front door — requests/s and
//! latency over keep-alive connections, each request authenticated and its payload checked
//! against the model — beside a bare axum handler that answers 202 to the same requests (its
//! own process, `devplane bench http-baseline`) in the same run, so the cost of identity and
//! validation is what the ratio shows.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

use super::mqtt::{address_after, cpu_seconds, percentiles, start_child, start_devplane};
use crate::cli::BenchHttpArgs;

/// What one target measured.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    accepted: usize,
    failed: usize,
    cpu_per_100k: f64,
}

/// `requests` POSTs of a telemetry sample over `connections` keep-alive connections.
async fn load(
    addr: SocketAddr,
    pid: u32,
    credentials: &[(String, String)],
    connections: usize,
    requests: usize,
) -> Figures {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (user, password) = credentials[c % credentials.len()].clone();
        let client = client.clone();
        let latencies = latencies.clone();
        let failed = failed.clone();
        let count = requests / connections + usize::from(c < requests % connections);
        tasks.push(tokio::spawn(async move {
            let uri = format!("http://{addr}/v1/devices/{user}/telemetry");
            let auth = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            let mut mine = Vec::with_capacity(count);
            for _ in 0..count {
                let request = hyper::Request::post(&uri)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"points":{"temperature":21.5}}"#,
                    )));
                let Ok(request) = request else {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status() == StatusCode::ACCEPTED;
                        let _ = response.into_body().collect().await;
                        if ok {
                            mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let latencies = std::mem::take(&mut *latencies.lock().await);
    let accepted = latencies.len();
    let (p50, p99) = percentiles(latencies);
    Figures {
        rate: accepted as f64 / elapsed,
        p50,
        p99,
        accepted,
        failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        cpu_per_100k: (cpu_seconds(pid).unwrap_or(0.0) - cpu_before) * 100_000.0
            / requests.max(1) as f64,
    }
}

/// Run `devplane bench http`.
pub async fn run(args: &BenchHttpArgs) -> Result<(), String> {
    super::in_temp_dir(|dir| async move { run_in(&dir, args).await }).await
}

async fn run_in(dir: &std::path::Path, args: &BenchHttpArgs) -> Result<(), String> {
    let _progress = super::Progress::start("bench http", None);
    let connections = args.connections.max(1) as usize;
    eprintln!("devplane bench http: onboarding {connections} devices");
    let (devplane, _up, credentials) = start_devplane(dir, connections).await?;
    let http = devplane.http.ok_or("the front door has no HTTP listener")?;
    let requests = args.requests as usize;
    eprintln!("  devplane front door: {requests} requests");
    let ours = load(
        http,
        devplane.child.id(),
        &credentials,
        connections,
        requests,
    )
    .await;
    drop(devplane);

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut baseline = Command::new(exe);
    baseline.args(["bench", "http-baseline", "--addr", "127.0.0.1:0"]);
    let (mut child, lines) = start_child(baseline, "listening on", &dir.join("baseline.log"))?;
    let addr = address_after(&lines, "listening on http://")?;
    eprintln!("  bare axum handler: {requests} requests");
    let theirs = load(addr, child.id(), &credentials, connections, requests).await;
    let _ = child.kill();
    let _ = child.wait();

    let build = super::build_kind();
    println!(
        "devplane bench http ({build} build): {requests} telemetry POSTs over {connections} keep-alive connections"
    );
    println!(
        "{:<34} {:>22} {:>22} {:>8}",
        "", "devplane front door", "bare axum (202)", "ratio"
    );
    println!(
        "{:<34} {:>22.0} {:>22.0} {:>8}",
        "requests/s (202 accepted)",
        ours.rate,
        theirs.rate,
        super::ratio(ours.rate, theirs.rate)
    );
    println!(
        "{:<34} {:>22} {:>22}",
        "latency p50 / p99",
        super::latency(ours.p50, ours.p99),
        super::latency(theirs.p50, theirs.p99)
    );
    println!(
        "{:<34} {:>22} {:>22}",
        "accepted / failed",
        format!("{} / {}", ours.accepted, ours.failed),
        format!("{} / {}", theirs.accepted, theirs.failed)
    );
    println!(
        "{:<34} {:>22} {:>22} {:>8}",
        "server CPU per 100k requests",
        format!("{:.2} s", ours.cpu_per_100k),
        format!("{:.2} s", theirs.cpu_per_100k),
        super::ratio(ours.cpu_per_100k, theirs.cpu_per_100k)
    );
    Ok(())
}

/// `devplane bench http-baseline`: answer 202 to every request, nothing else.
pub async fn baseline(addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    let app = axum::Router::new().fallback(|| async { StatusCode::ACCEPTED });
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
