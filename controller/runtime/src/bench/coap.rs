//! `devplane bench coap`: validated CoAP telemetry through the front door — confirmable POSTs
//! per second and their latency, each message authorized and checked against the model — over
//! plain CoAP and over DTLS, each beside a baseline in the same run: the same front door and
//! listener answering `POST /bench/baseline` with 2.04 before any identity or validation (the
//! hidden `--coap-bench-baseline` flag). The ratio is the cost of identity, validation and
//! ingest on top of the CoAP transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::{MessageClass, RequestType, ResponseType};
use tokio::sync::Mutex;

use super::mqtt::{address_after, cpu_seconds, percentiles, start_devplane_with};
use crate::cli::BenchCoapArgs;
use crate::coap_client::{Client, Request};

/// What one run measured.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    changed: usize,
    /// Answers other than 2.04 (by code) and requests without an answer.
    failed: BTreeMap<String, usize>,
    cpu_per_100k: f64,
}

impl Figures {
    fn failed_text(&self) -> String {
        let total: usize = self.failed.values().sum();
        if total == 0 {
            return "0".into();
        }
        let by: Vec<String> = self
            .failed
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        format!("{total} ({})", by.join(", "))
    }
}

/// `messages` confirmable POSTs from every client (a device each) with `window` in flight.
async fn load(
    clients: &[(Arc<Client>, String)],
    baseline: bool,
    messages: usize,
    window: usize,
    pid: u32,
) -> Figures {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let failed = Arc::new(parking_lot::Mutex::new(BTreeMap::<String, usize>::new()));
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let lanes = clients.len() * window;
    for lane in 0..lanes {
        let (client, device) = clients[lane % clients.len()].clone();
        let count = messages / lanes + usize::from(lane < messages % lanes);
        let (latencies, failed) = (latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let path = if baseline {
                "bench/baseline".to_string()
            } else {
                format!("d/{device}/telemetry")
            };
            let mut mine = Vec::with_capacity(count);
            for _ in 0..count {
                let request = Request {
                    method: RequestType::Post,
                    path: &path,
                    payload: br#"{"points":{"temperature":21.5}}"#,
                    confirmable: true,
                    observe: None,
                };
                let sent = Instant::now();
                let outcome = match client.request(&request).await {
                    Ok(answer)
                        if answer.header.code == MessageClass::Response(ResponseType::Changed) =>
                    {
                        mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                        continue;
                    }
                    Ok(answer) => answer.header.code.to_string(),
                    Err(_) => "no answer".to_string(),
                };
                *failed.lock().entry(outcome).or_default() += 1;
            }
            latencies.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let latencies = std::mem::take(&mut *latencies.lock().await);
    let changed = latencies.len();
    let (p50, p99) = percentiles(latencies);
    Figures {
        rate: changed as f64 / elapsed,
        p50,
        p99,
        changed,
        failed: std::mem::take(&mut *failed.lock()),
        cpu_per_100k: (cpu_seconds(pid).unwrap_or(0.0) - cpu_before) * 100_000.0
            / messages.max(1) as f64,
    }
}

/// Run `devplane bench coap`.
pub async fn run(args: &BenchCoapArgs) -> Result<(), String> {
    super::in_temp_dir(|dir| async move { run_in(&dir, args).await }).await
}

async fn run_in(dir: &std::path::Path, args: &BenchCoapArgs) -> Result<(), String> {
    let _progress = super::Progress::start("bench coap", None);
    let devices = args.devices.max(1) as usize;
    let window = usize::from(args.window.max(1));
    let messages = args.messages as usize;
    eprintln!("devplane bench coap: onboarding {devices} devices");
    let flags = [
        "--coap-insecure-dev",
        "--coap-addr",
        "127.0.0.1:0",
        "--coaps-addr",
        "127.0.0.1:0",
        "--coap-bench-baseline",
    ];
    let (devplane, _up, credentials) = start_devplane_with(dir, devices, &flags).await?;
    let pid = devplane.child.id();
    let plain: SocketAddr = address_after(
        &devplane.printed,
        "device CoAP (insecure, dev only) listening on coap://",
    )?;
    let secure: SocketAddr = address_after(
        &devplane.printed,
        "device CoAP over DTLS listening on coaps://",
    )?;

    let mut rows = Vec::new();
    let mut clients = Vec::new();
    for (user, _) in credentials.iter().take(devices) {
        clients.push((Arc::new(Client::plain(plain).await?), user.clone()));
    }
    eprintln!("  plain CoAP: {messages} validated messages, then {messages} baseline");
    let ours = load(&clients, false, messages, window, pid).await;
    let theirs = load(&clients, true, messages, window, pid).await;
    rows.push(("plain CoAP", ours, theirs));

    if !args.no_dtls {
        let mut clients = Vec::new();
        for (user, password) in credentials.iter().take(devices) {
            let client = Client::dtls(secure, user, password.as_bytes()).await?;
            clients.push((Arc::new(client), user.clone()));
        }
        eprintln!("  CoAP over DTLS: {messages} validated messages, then {messages} baseline");
        let ours = load(&clients, false, messages, window, pid).await;
        let theirs = load(&clients, true, messages, window, pid).await;
        rows.push(("CoAP over DTLS (PSK, AES-128-CCM-8)", ours, theirs));
    }
    drop(devplane);

    let build = super::build_kind();
    println!(
        "devplane bench coap ({build} build): {messages} confirmable telemetry POSTs per run, {devices} devices × {window} in flight"
    );
    for (name, ours, theirs) in rows {
        println!();
        println!(
            "{:<34} {:>22} {:>22} {:>8}",
            name, "validated (2.04)", "baseline (2.04)", "ratio"
        );
        println!(
            "{:<34} {:>22.0} {:>22.0} {:>8}",
            "messages/s",
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
            "2.04 / failed",
            format!("{} / {}", ours.changed, ours.failed_text()),
            format!("{} / {}", theirs.changed, theirs.failed_text())
        );
        println!(
            "{:<34} {:>22} {:>22} {:>8}",
            "server CPU per 100k messages",
            format!("{:.2} s", ours.cpu_per_100k),
            format!("{:.2} s", theirs.cpu_per_100k),
            super::ratio(ours.cpu_per_100k, theirs.cpu_per_100k)
        );
    }
    Ok(())
}
