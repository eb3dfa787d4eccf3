//! `devplane bench api`: throughput and latency of the API server as a client sees it —
//! creates/s and latency percentiles of 1 KiB custom resources with watchers attached, list
//! latency at a large object count, memory per stored object (of the server and store, and of
//! the embedded store alone) — on the embedded store, and on etcd next to the raw etcd put
//! and create-transaction rates measured in the same run.
//!
//! The server runs in this process and is reached over loopback HTTP/1.1 (no TLS, so the
//! figures are the server's, not the cipher's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use devplane_apiserver::{ApiServer, ApiServerConfig};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::BenchApiArgs;

mod coap;
mod http;
mod mqtt;
mod onboard;
mod provision;
mod store;
pub use coap::run as coap;
pub use http::{baseline as http_baseline, run as http};
pub use mqtt::run as mqtt;
pub use onboard::run as onboard;
pub use provision::run as provision;
pub use store::run as store_memory;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const DEVICES: &str = "/apis/iot.devplane.io/v1alpha1/namespaces/bench/devices";

/// A running API server for the benchmark.
struct Target {
    base: String,
    client: HttpClient,
    stop: CancellationToken,
    server: ApiServer,
}

impl Target {
    async fn start(store: Arc<dyn devplane_store::Store>) -> Result<Target, String> {
        let config = ApiServerConfig {
            run_controllers: false,
            ..ApiServerConfig::default()
        };
        let server = ApiServer::new(store, config)
            .await
            .map_err(|e| e.to_string())?;
        crate::up::install(&server)
            .await
            .map_err(|e| e.to_string())?;
        server
            .ensure(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
            .await
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        tokio::spawn(crate::up::serve(
            listener,
            server.router(),
            None,
            stop.clone(),
        ));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build_http();
        Ok(Target {
            base: format!("http://{addr}"),
            client,
            stop,
            server,
        })
    }

    /// A GET whose body is read and dropped a frame at a time, as a client that processes a
    /// list as it arrives does: the bytes it received.
    async fn get_discarding(&self, path: &str) -> Result<u64, String> {
        let request = hyper::Request::builder()
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let mut body = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?
            .into_body();
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            received += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
        Ok(received)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), String> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A watch of the bench namespace's Devices from `resource_version`.
    async fn watch_devices(
        &self,
        resource_version: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let request = hyper::Request::builder()
            .uri(format!(
                "{}{DEVICES}?watch=true&resourceVersion={resource_version}&timeoutSeconds=86400",
                self.base
            ))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.client
            .request(request)
            .await
            .map_err(|e| e.to_string())
    }

    fn shutdown(&self) {
        self.server.shutdown();
        self.stop.cancel();
    }
}

/// A ~1 KiB Device.
fn device(i: u64) -> Value {
    json!({
        "apiVersion": "iot.devplane.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": format!("bench-{i:07}"), "labels": {"iot.devplane.io/site": "bench", "bench/shard": (i % 16).to_string()}},
        "spec": {
            "modelRef": {"name": "string-inverter", "namespace": "solar-farm"},
            "connection": {"direct": {"protocols": ["mqtt"]}},
            "serialNumber": format!("SN-{i:010}"),
            "attributes": {"manufacturer": "Helios Power", "ratedPower": 50000, "notes": "x".repeat(40)},
        }
    })
}

/// Writes of a benchmark phase: how many succeeded, how fast, and their latencies.
struct Run {
    created: u64,
    elapsed: Duration,
    creates_per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
}

impl Run {
    /// The run whose successful writes took `latencies`, in `elapsed` in all, with `errors`
    /// failed ones.
    fn of(mut latencies: Vec<Duration>, elapsed: Duration, errors: u64) -> Run {
        latencies.sort_unstable();
        Run {
            created: latencies.len() as u64,
            elapsed,
            creates_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            errors,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A progress line on stderr every few seconds until dropped — `  … what: 12 s, 3400 done`
/// — so a long run shows it is alive and how far it got.
pub(crate) struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    /// Report `what`, with the count in `done` (if any).
    pub(crate) fn start(what: impl Into<String>, done: Option<Arc<AtomicU64>>) -> Progress {
        let what = what.into();
        let started = Instant::now();
        Progress(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let count = done
                    .as_ref()
                    .map(|d| format!(", {} done", d.load(Ordering::Relaxed)))
                    .unwrap_or_default();
                eprintln!(
                    "  … {what}: {:.0} s{count}",
                    started.elapsed().as_secs_f64()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Create objects `from..to` with `concurrency` clients.
async fn creates(target: &Arc<Target>, from: u64, to: u64, concurrency: usize) -> Run {
    let next = Arc::new(AtomicU64::new(from));
    let _progress = Progress::start(format!("creating objects {from}..{to}"), Some(next.clone()));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, next, errors) = (target.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return latencies;
                }
                let body = device(i);
                let t = Instant::now();
                match target.request("POST", DEVICES, Some(&body)).await {
                    Ok((201, _)) => latencies.push(t.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    Run::of(latencies, started.elapsed(), errors.load(Ordering::Relaxed))
}

/// Start `n` watchers of every Device; each counts the events it receives.
async fn watchers(target: &Arc<Target>, n: usize) -> Result<Vec<Arc<AtomicU64>>, String> {
    let (_, list) = target.request("GET", DEVICES, None).await?;
    let rv = serde_json::from_slice::<Value>(&list)
        .ok()
        .and_then(|l| {
            l["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut counters = Vec::new();
    for _ in 0..n {
        let counter = Arc::new(AtomicU64::new(0));
        counters.push(counter.clone());
        let response = target.watch_devices(&rv).await?;
        tokio::spawn(async move {
            let mut body = response.into_body().into_data_stream();
            while let Some(Ok(chunk)) = body.next().await {
                let lines = memchr::memchr_iter(b'\n', &chunk).count() as u64;
                counter.fetch_add(lines, Ordering::Relaxed);
            }
        });
    }
    Ok(counters)
}

/// The process's resident set once the work that follows a burst of writes is done: the
/// lowest of samples over two seconds. Right after the last create the store may still be
/// writing a snapshot of every key, and the allocator still holds what requests freed.
async fn settled_rss() -> Option<u64> {
    let mut lowest = rss_bytes()?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lowest = lowest.min(rss_bytes()?);
    }
    Some(lowest)
}

/// The process's resident set now (`VmRSS`).
fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// The process's peak resident set (`VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resets the process's peak resident set to its current one (Linux's `clear_refs`).
fn reset_peak_rss() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

/// A size field of `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn wait_for(counters: &[Arc<AtomicU64>], want: u64, timeout: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if counters.iter().all(|c| c.load(Ordering::Relaxed) >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Times each list is measured.
const LIST_REPEATS: usize = 9;

/// The median of `times` (which it sorts).
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Run `devplane bench api`.
pub async fn run(args: &BenchApiArgs) -> Result<(), String> {
    println!(
        "devplane bench api: {} creates with {} watchers, {} concurrent clients; list at {} objects",
        args.creates, args.watchers, args.concurrency, args.list_objects
    );
    // First, in a process of its own: the store alone.
    let store_alone = store::in_own_process(args.creates).await;
    let dir = tempfile_dir()?;
    let store = devplane_store::open(&format!("file://{}", dir.display()))
        .await
        .map_err(|e| e.to_string())?;
    let target = Arc::new(Target::start(store).await?);
    let rss_before = rss_bytes();
    let counters = watchers(&target, args.watchers).await?;
    let run = creates(&target, 0, args.creates, args.concurrency).await;
    let delivered = wait_for(&counters, args.creates, Duration::from_secs(120)).await;
    let rss_after = rss_bytes();
    println!("\nembedded store (WAL on {})", dir.display());
    println!(
        "  creates: {:.0}/s   p50 {}   p99 {}   max {}   errors {}",
        run.creates_per_second,
        ms(run.p50),
        ms(run.p99),
        ms(run.max),
        run.errors
    );
    let received: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "  watchers: {} each received {:?} events; all delivered {} after the last create",
        args.watchers,
        received.iter().min().copied().unwrap_or(0),
        ms(delivered)
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per_object = after.saturating_sub(before) as f64 / args.creates as f64;
        println!(
            "  memory: {:.0} bytes RSS per stored object (server and store in this process, history included)",
            per_object
        );
    }
    match store_alone {
        Ok(per_object) => println!(
            "  memory: {per_object} bytes RSS per stored object in the store alone ({} objects of 1 KiB in memory, history trimmed to the default retention, own process)",
            args.creates
        ),
        Err(e) => println!("  memory of the store alone: not measured ({e})"),
    }
    if args.list_objects > args.creates {
        let fill = creates(&target, args.creates, args.list_objects, args.concurrency).await;
        wait_for(&counters, args.list_objects, Duration::from_secs(300)).await;
        println!(
            "  filled to {} objects at {:.0} creates/s (p99 {})",
            args.list_objects,
            fill.creates_per_second,
            ms(fill.p99)
        );
        if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
            let per_object =
                |rss: u64| rss.saturating_sub(before) as f64 / args.list_objects as f64;
            let settled = settled_rss().await.unwrap_or(after);
            println!(
                "  memory: {:.0} bytes RSS per stored object at {} objects once settled ({:.0} right after the last create)",
                per_object(settled),
                args.list_objects,
                per_object(after)
            );
        }
    }
    // The memory a full list costs the server, before any other full list: the client drops
    // each frame as it arrives, so what the peak resident set gains is the server's.
    if let (Some(before), Ok(())) = (rss_bytes(), reset_peak_rss()) {
        let received = target.get_discarding(DEVICES).await?;
        if let Some(peak) = peak_rss_bytes() {
            println!(
                "  memory: a full list ({} MiB, the client dropping it as it arrives) raised the peak RSS by {} MiB",
                received / (1024 * 1024),
                peak.saturating_sub(before) / (1024 * 1024)
            );
        }
    }
    // Each list is timed several times and the median shown: a single request can meet the
    // compactor writing its snapshot of the store on the other core, and the first requests
    // of a kind after another kind run slow while the allocator and the caches adjust (the
    // first full list of a process costs about three times the later ones; the first few
    // label-selected lists after the paginated ones up to twice the later ones). One untimed
    // request of each kind goes first.
    target.request("GET", DEVICES, None).await?;
    let mut full_times = Vec::new();
    for _ in 0..LIST_REPEATS {
        let started = Instant::now();
        target.request("GET", DEVICES, None).await?;
        full_times.push(started.elapsed());
    }
    let full = median(&mut full_times);
    let (status, body) = target.request("GET", DEVICES, None).await?;
    let items = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|l| l["items"].as_array().map(Vec::len))
        .unwrap_or(0);
    println!(
        "  list: {items} objects in one response ({} MiB, {} bytes per object, HTTP {status}) in {} (median of {LIST_REPEATS})",
        body.len() / (1024 * 1024),
        body.len() / items.max(1),
        ms(full)
    );
    let started = Instant::now();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let path = if token.is_empty() {
            format!("{DEVICES}?limit=500")
        } else {
            format!("{DEVICES}?limit=500&continue={token}")
        };
        let (_, body) = target.request("GET", &path, None).await?;
        pages += 1;
        let page: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            break;
        }
    }
    println!(
        "  list: paginated by 500 in {} pages in {}",
        pages,
        ms(started.elapsed())
    );
    selected_lists(&target).await?;
    target.shutdown();

    if let Some(etcd) = &args.etcd {
        etcd_comparison(etcd, args).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Times lists of a sixteenth of the objects, selected by label, against full lists in the
/// same rounds: each round lists everything once and the sixteenth sixteen times, so both
/// meet the machine in the same state (on a shared machine, the speed of either can drift by
/// half between one minute and the next). Every other round lists the sixteenths first, so
/// neither kind is always the one that follows the other.
async fn selected_lists(target: &Target) -> Result<(), String> {
    const SHARDS: u32 = 16;
    let selected = format!("{DEVICES}?labelSelector=bench/shard%3D3");
    target.request("GET", &selected, None).await?;
    let mut selected_times = Vec::new();
    let mut full_times = Vec::new();
    let mut round_ratios = Vec::new();
    for round in 0..LIST_REPEATS {
        let mut full = Duration::ZERO;
        let mut sixteenths = Duration::ZERO;
        for full_now in [round % 2 == 0, round % 2 == 1] {
            if full_now {
                let started = Instant::now();
                target.request("GET", DEVICES, None).await?;
                full = started.elapsed();
                full_times.push(full / SHARDS);
                continue;
            }
            for _ in 0..SHARDS {
                let started = Instant::now();
                target.request("GET", &selected, None).await?;
                let took = started.elapsed();
                selected_times.push(took);
                sixteenths += took;
            }
        }
        round_ratios.push(sixteenths.as_secs_f64() / full.as_secs_f64().max(f64::EPSILON));
    }
    round_ratios.sort_unstable_by(f64::total_cmp);
    println!(
        "  list: label-selected sixteenth in {} (median of {}), beside the full list ÷ 16 in the same rounds: {} (median of {LIST_REPEATS}); {SHARDS} selected lists take {:.2} of one full list (median of the rounds)",
        ms(median(&mut selected_times)),
        selected_times.len(),
        ms(median(&mut full_times)),
        round_ratios[round_ratios.len() / 2]
    );
    Ok(())
}

/// Run a benchmark in a fresh temporary directory, removed afterwards; a debug build is noted.
async fn in_temp_dir<F, Fut>(run: F) -> Result<(), String>
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; measure with `cargo build --release` for real figures");
    }
    let dir = tempfile_dir()?;
    let result = run(dir.clone()).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `debug` or `release`, for the tables' titles.
fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// `ours / theirs` with two decimals, `-` without a baseline.
fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}", ours / theirs)
    } else {
        "-".into()
    }
}

/// A latency cell: `p50 / p99 ms`.
fn latency(p50: f64, p99: f64) -> String {
    format!("{p50:.2} / {p99:.2} ms")
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("devplane-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Rounds of the etcd comparison. etcd's speed moves between moments of one run (its store
/// grows, its garbage collector runs), so a single phase of each is a poor baseline: raw puts
/// and API creates alternate, each round on fresh keys, and the rates are taken over all
/// rounds.
const ETCD_ROUNDS: u64 = 3;

/// Raw etcd put rate and API creates over etcd, same size, concurrency and count, in
/// [`ETCD_ROUNDS`] alternating rounds. The rate of raw create transactions (compare-and-put,
/// which every create through the API needs) is shown besides: on etcd 3.4 a transaction
/// costs etcd several times a plain put.
async fn etcd_comparison(endpoint: &str, args: &BenchApiArgs) -> Result<(), String> {
    let endpoint = endpoint.trim_start_matches("etcd://").to_string();
    let client = etcd_client::Client::connect([format!("http://{endpoint}")], None)
        .await
        .map_err(|e| format!("etcd: {e}"))?;
    let run_id = std::process::id();
    println!("\netcd at {endpoint}");
    let txn = raw_etcd_writes(&client, args, RawWrite::CreateTxn, 0).await;
    println!(
        "  raw etcd create transactions (1 KiB, compare-and-put): {:.0}/s   p50 {}   p99 {}",
        txn.creates_per_second,
        ms(txn.p50),
        ms(txn.p99)
    );
    let store = devplane_store::open(&format!("etcd://{endpoint}/bench-api-{run_id}"))
        .await
        .map_err(|e| e.to_string())?;
    let target = Arc::new(Target::start(store).await?);
    let counters = watchers(&target, args.watchers).await?;
    let (mut raw_total, mut api_total) = (Totals::default(), Totals::default());
    let mut api_errors = 0;
    for round in 0..ETCD_ROUNDS {
        let from = round * args.creates;
        let raw = raw_etcd_writes(&client, args, RawWrite::Put, from).await;
        let api = creates(&target, from, from + args.creates, args.concurrency).await;
        println!(
            "  round {}: raw etcd puts {:.0}/s (p99 {}), API creates {:.0}/s (p99 {}): {}",
            round + 1,
            raw.creates_per_second,
            ms(raw.p99),
            api.creates_per_second,
            ms(api.p99),
            ratio(api.creates_per_second, raw.creates_per_second)
        );
        raw_total.add(raw.created, raw.elapsed);
        api_total.add(api.created, api.elapsed);
        api_errors += api.errors;
    }
    let delivered = wait_for(
        &counters,
        ETCD_ROUNDS * args.creates,
        Duration::from_secs(120),
    )
    .await;
    let (raw_rate, api_rate) = (raw_total.rate(), api_total.rate());
    println!("  raw etcd puts (1 KiB), all rounds: {raw_rate:.0}/s");
    println!(
        "  API creates over etcd, all rounds: {api_rate:.0}/s   errors {api_errors}   (watch delivery {} after the last create)",
        ms(delivered)
    );
    println!(
        "  overhead: API creates/s ÷ raw etcd puts/s = {}",
        ratio(api_rate, raw_rate)
    );
    println!(
        "  overhead: API creates/s ÷ raw etcd create transactions/s = {}",
        ratio(api_rate, txn.creates_per_second)
    );
    target.shutdown();
    Ok(())
}

/// Writes and time summed over rounds.
#[derive(Default)]
struct Totals {
    count: u64,
    elapsed: Duration,
}

impl Totals {
    fn add(&mut self, count: u64, elapsed: Duration) {
        self.count += count;
        self.elapsed += elapsed;
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A kind of raw etcd write.
#[derive(Clone, Copy)]
enum RawWrite {
    /// A plain put.
    Put,
    /// A transaction that puts only if the key does not exist, as a create must.
    CreateTxn,
}

/// `args.creates` raw writes of 1 KiB to keys `from..from + args.creates`, `args.concurrency`
/// at a time.
async fn raw_etcd_writes(
    client: &etcd_client::Client,
    args: &BenchApiArgs,
    kind: RawWrite,
    from: u64,
) -> Run {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let what = match kind {
        RawWrite::Put => "raw etcd puts (1 KiB)",
        RawWrite::CreateTxn => "raw etcd create transactions (1 KiB, compare-and-put)",
    };
    let value = vec![b'x'; 1024];
    let next = Arc::new(AtomicU64::new(from));
    let progress = Progress::start(what, Some(next.clone()));
    let (limit, run_id) = (from + args.creates, std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (mut client, next, value) = (client.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    return latencies;
                }
                let t = Instant::now();
                let written = match kind {
                    RawWrite::Put => {
                        let key = format!("/bench-raw-{run_id}/{i:07}");
                        client.put(key, value.clone(), None).await.is_ok()
                    }
                    RawWrite::CreateTxn => {
                        let key = format!("/bench-raw-txn-{run_id}/{i:07}");
                        let txn = Txn::new()
                            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                            .and_then([TxnOp::put(key, value.clone(), None)]);
                        client.txn(txn).await.is_ok_and(|r| r.succeeded())
                    }
                };
                if written {
                    latencies.push(t.elapsed());
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    drop(progress);
    let written = latencies.len() as u64;
    Run::of(latencies, started.elapsed(), args.creates - written)
}
