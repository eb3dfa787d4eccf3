//! Command-line arguments.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// devplane: a Kubernetes-style declarative control plane for IoT devices.
#[derive(Debug, Parser)]
#[command(name = "devplane", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every devplane CustomResourceDefinition as YAML (what `crds/` holds).
    Crds,
    /// Run the standalone control plane: a Kubernetes-compatible API server with devplane's
    /// CRDs, over the embedded store (or etcd); writes a kubeconfig for kubectl.
    Up(UpArgs),
    /// Measure the API server: creates/s and latency with watchers attached, list latency,
    /// memory per object; optionally on etcd next to etcd's raw put rate.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the controllers against any Kubernetes API (in-cluster, a kubeconfig, or
    /// `devplane up --no-controllers`), with leader election through a Lease.
    Controller(ControllerArgs),
    /// Apply OnboardingBatch manifests (or build one from a spreadsheet's CSV and a template)
    /// and, with --wait, follow them to the end.
    Onboard(OnboardCliArgs),
    /// Draw QR codes for devices: provisioning links of a ProvisioningPolicy (one id, or every
    /// pre-registered device) or connect links of the devices an OnboardingBatch created, as
    /// PNG and SVG files and a printable HTML sheet.
    Qr(QrArgs),
    /// Run the device front door alone against any Kubernetes API (scale-out replicas): MQTT,
    /// HTTP and CoAP for devices and the northbound application listener.
    Frontdoor(FrontdoorArgs),
    /// Run the validating admission webhook (admission.k8s.io/v1 over TLS): model references
    /// resolve, attribute and desired values fit them, command parameters fit the service, a
    /// gateway reference exists.
    Webhook(WebhookArgs),
    /// Simulate devices of a model over MQTT, HTTP or CoAP (DTLS) with their own credentials,
    /// or behind one gateway: telemetry from the model (optionally a share invalid), desired
    /// values reported back, commands answered.
    Simulate(SimulateArgs),
    /// Check manifests offline: schemas, model resolution, references between files, attribute
    /// values, batches and commands. Exits 1 when it finds a problem.
    Validate(ValidateArgs),
}

/// Arguments of `devplane validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories of YAML or JSON manifests (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR"
    )]
    pub files: Vec<PathBuf>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Do not add the built-in standard feature library (namespace devplane-library) to the
    /// models references may resolve to.
    #[arg(long)]
    pub no_library: bool,
}

/// Arguments of `devplane up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the store, keys, tokens and kubeconfig live.
    #[arg(long, env = "DEVPLANE_DATA_DIR", default_value = "devplane-data")]
    pub data_dir: PathBuf,
    /// Address of the Kubernetes API.
    #[arg(long, env = "DEVPLANE_API_ADDR", default_value = "127.0.0.1:6443")]
    pub api_addr: std::net::SocketAddr,
    /// Store URL: `etcd://host:port[,host:port][/prefix]`, `file:///dir` or `memory://`;
    /// default: the embedded store in <data-dir>/store.
    #[arg(long, env = "DEVPLANE_STORE")]
    pub store: Option<String>,
    /// Serve plain HTTP without TLS and without authentication (local tests only: kubectl
    /// sends no bearer token over plain HTTP).
    #[arg(long)]
    pub insecure_http: bool,
    /// Append an audit log here: one JSON line per API request (`audit.k8s.io/v1` Events at
    /// the Metadata level: who, what, when, the response code; never a body).
    #[arg(long, env = "DEVPLANE_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Where a Service that admission webhooks name is reached, `namespace/name=host:port`
    /// (repeatable): there is no cluster network here. The webhook's certificate is verified
    /// for `name.namespace.svc`, as on a cluster.
    #[arg(long = "webhook-service", value_name = "NS/NAME=HOST:PORT", value_parser = parse_service_address)]
    pub webhook_services: Vec<(String, String)>,
    /// Revisions of history kept for watches to resume from; older resourceVersions get
    /// "410 Gone" and clients re-list.
    #[arg(long, env = "DEVPLANE_HISTORY_REVISIONS", default_value_t = 10_000)]
    pub history_revisions: u64,
    /// Serve the API only; run the controllers elsewhere (`devplane controller`).
    #[arg(long)]
    pub no_controllers: bool,
    /// Do not run the device front door (run `devplane frontdoor` elsewhere).
    #[arg(long)]
    pub no_frontdoor: bool,
    /// The front door's listeners.
    #[command(flatten)]
    pub frontdoor: FrontdoorListenArgs,
    /// Address of /metrics, /healthz and /readyz (front-door counters); off unless given.
    #[arg(long, env = "DEVPLANE_ADMIN_ADDR")]
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// Where the front door listens (shared by `devplane up` and `devplane frontdoor`).
#[derive(Debug, Args, Clone)]
pub struct FrontdoorListenArgs {
    /// Device MQTT (3.1.1 and 5) listener.
    #[arg(long, env = "DEVPLANE_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_addr: std::net::SocketAddr,
    /// Device MQTT over TLS listener, with a certificate from devplane's CA; off unless given.
    #[arg(long, env = "DEVPLANE_MQTTS_ADDR")]
    pub mqtts_addr: Option<std::net::SocketAddr>,
    /// Northbound application MQTT listener.
    #[arg(long, env = "DEVPLANE_APP_MQTT_ADDR", default_value = "127.0.0.1:1884")]
    pub app_mqtt_addr: std::net::SocketAddr,
    /// Device HTTP listener (`/v1/devices/{ns}/{name}/…`).
    #[arg(long, env = "DEVPLANE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Device HTTP over TLS listener, with a certificate from devplane's CA; off unless given.
    #[arg(long, env = "DEVPLANE_HTTPS_ADDR")]
    pub https_addr: Option<std::net::SocketAddr>,
    /// Device CoAP over DTLS 1.2 listener (UDP; PSK identity `{ns}/{name}`, key the device's
    /// password); off unless given.
    #[arg(long, env = "DEVPLANE_COAPS_ADDR")]
    pub coaps_addr: Option<std::net::SocketAddr>,
    /// Device plain CoAP listener (UDP), served only with --coap-insecure-dev.
    #[arg(long, env = "DEVPLANE_COAP_ADDR", default_value = "127.0.0.1:5683")]
    pub coap_addr: std::net::SocketAddr,
    /// Serve plain CoAP on --coap-addr: no credentials, the path's device is trusted (local
    /// tests only).
    #[arg(long)]
    pub coap_insecure_dev: bool,
    /// Answer `POST /bench/baseline` on the CoAP listeners without identity or validation
    /// (the same-run baseline of `devplane bench coap`).
    #[arg(long, hide = true)]
    pub coap_bench_baseline: bool,
    /// Seconds between two "last seen" status writes of one device.
    #[arg(long, default_value_t = 30)]
    pub status_interval_seconds: u64,
    /// Listener for devices speaking the EnOS device protocol (MQTT 3.1.1; see
    /// docs/enos.md); off unless given.
    #[arg(long, env = "DEVPLANE_ENOS_MQTT_ADDR")]
    pub enos_mqtt_addr: Option<std::net::SocketAddr>,
    /// The EnOS listener over TLS, with a certificate from devplane's CA; off unless given.
    #[arg(long, env = "DEVPLANE_ENOS_MQTTS_ADDR")]
    pub enos_mqtts_addr: Option<std::net::SocketAddr>,
}

/// Arguments of `devplane simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Namespace of the devices.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// Create (or reuse) devices of this model through an OnboardingBatch `simulate-<model>`.
    #[arg(long, requires = "count", conflicts_with_all = ["selector", "provision"])]
    pub model: Option<String>,
    /// How many devices of --model (or to provision with --provision).
    #[arg(long)]
    pub count: Option<u64>,
    /// The devices provision themselves first through this ProvisioningPolicy (in
    /// --namespace, with a symmetric key: each presents the key derived for its id, as a
    /// factory would have flashed it) over HTTP at --http-addr, then connect with what they got.
    #[arg(long, requires = "count", conflicts_with = "selector")]
    pub provision: Option<String>,
    /// With --provision: the device ids, `{index}` or `{index:N}` replaced by 1…--count.
    #[arg(long, default_value = "{index:08}")]
    pub id_pattern: String,
    /// Simulate the existing devices matching this label selector instead.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Protocol: `mqtt`, `http`, `coap` (CoAP over DTLS with the device's password as PSK) or
    /// `enos` (the EnOS device protocol at --enos-addr, with the model's product key): each
    /// device connects itself; or `gateway` (one gateway, --gateway, logs the devices in as its
    /// sub-devices and publishes for them).
    #[arg(long, default_value = "mqtt")]
    pub protocol: String,
    /// The Gateway (in --namespace) that `--protocol gateway` connects as.
    #[arg(long)]
    pub gateway: Option<String>,
    /// With `--protocol gateway`: the gateway registers --count sub-devices of --model itself
    /// (dynamic registration) instead of an OnboardingBatch creating them.
    #[arg(long, requires = "gateway")]
    pub register: bool,
    /// Telemetry messages per second, over all devices.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Share of telemetry messages made invalid on purpose (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub invalid_share: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long = "duration")]
    pub duration_seconds: Option<u64>,
    /// Connect here instead of the endpoint in each device's Secret.
    #[arg(long)]
    pub mqtt_addr: Option<std::net::SocketAddr>,
    /// HTTP devices post here instead of the endpoint in each device's Secret.
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
    /// With --protocol coap: send here (CoAP over DTLS) instead of each Secret's
    /// `coaps-endpoint`.
    #[arg(long)]
    pub coaps_addr: Option<std::net::SocketAddr>,
    /// With --protocol enos: the front door's EnOS listener (its --enos-mqtt-addr).
    #[arg(long)]
    pub enos_addr: Option<std::net::SocketAddr>,
    /// Kubeconfig to use; default: $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

fn parse_service_address(text: &str) -> Result<(String, String), String> {
    let (service, address) = text
        .split_once('=')
        .ok_or("expected namespace/name=host:port")?;
    if service.split('/').count() != 2 || service.starts_with('/') || service.ends_with('/') {
        return Err(format!("{service:?} is not namespace/name"));
    }
    if !address.contains(':') {
        return Err(format!("{address:?} is not host:port"));
    }
    Ok((service.to_string(), address.to_string()))
}

/// Arguments of `devplane webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Kubeconfig to use; default: in-cluster configuration, then $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the webhook listens (HTTPS, path /validate).
    #[arg(long, env = "DEVPLANE_WEBHOOK_ADDR", default_value = "127.0.0.1:9443")]
    pub addr: std::net::SocketAddr,
    /// PEM certificate chain of the webhook's serving certificate.
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long)]
    pub tls_key_file: PathBuf,
    /// Address of /metrics, /healthz and /readyz (ready once the watches listed everything).
    #[arg(long, env = "DEVPLANE_ADMIN_ADDR", default_value = "127.0.0.1:8083")]
    pub admin_addr: std::net::SocketAddr,
}

/// Arguments of `devplane frontdoor`.
#[derive(Debug, Args)]
pub struct FrontdoorArgs {
    /// Kubeconfig to use; default: in-cluster configuration, then $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The listeners.
    #[command(flatten)]
    pub listen: FrontdoorListenArgs,
    /// PEM certificate chain for the MQTTS listener.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the MQTTS listener.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "DEVPLANE_ADMIN_ADDR", default_value = "127.0.0.1:8082")]
    pub admin_addr: std::net::SocketAddr,
    /// This replica's name in device status; default: host name and process id.
    #[arg(long, env = "DEVPLANE_IDENTITY")]
    pub identity: Option<String>,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The Kubernetes API server over the embedded store (and etcd, with --etcd).
    Api(BenchApiArgs),
    /// Onboarding throughput: one OnboardingBatch through the controllers.
    Onboard(BenchOnboardArgs),
    /// The device front door: connections held and RSS per connection, validated QoS 1
    /// telemetry msg/s and latency, next to Debian's Mosquitto in the same run.
    Mqtt(BenchMqttArgs),
    /// Validated HTTP telemetry requests/s and latency through the front door, beside a bare
    /// axum handler answering 202 in the same run.
    Http(BenchHttpArgs),
    /// The bare HTTP baseline of `devplane bench http` (answers 202 to everything).
    #[command(hide = true)]
    HttpBaseline(BenchBaselineArgs),
    /// The embedded store alone, RSS per stored object (run by `devplane bench api` in a
    /// process of its own).
    #[command(hide = true)]
    StoreMemory(BenchStoreMemoryArgs),
    /// Validated CoAP telemetry (confirmable POSTs) msg/s and latency through the front door,
    /// over plain CoAP and over DTLS, each beside the same listener answering 2.04 without
    /// identity or validation in the same run.
    Coap(BenchCoapArgs),
    /// Zero-touch provisions per second end to end (request, Device, credentials, answer)
    /// over HTTP, beside creating the same Devices through the API in the same run.
    Provision(BenchProvisionArgs),
}

/// Arguments of `devplane bench provision`.
#[derive(Debug, Args)]
pub struct BenchProvisionArgs {
    /// Devices to provision.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
}

/// Arguments of `devplane bench coap`.
#[derive(Debug, Args)]
pub struct BenchCoapArgs {
    /// Confirmable telemetry POSTs per run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Devices sending (one UDP socket or DTLS session each).
    #[arg(long, default_value_t = 16)]
    pub devices: u64,
    /// Requests each device keeps in flight.
    #[arg(long, default_value_t = 16)]
    pub window: u16,
    /// Skip the DTLS runs.
    #[arg(long)]
    pub no_dtls: bool,
}

/// Arguments of `devplane bench http`.
#[derive(Debug, Args)]
pub struct BenchHttpArgs {
    /// Telemetry POSTs to send.
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Keep-alive connections (one device each).
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
}

/// Arguments of `devplane bench http-baseline`.
#[derive(Debug, Args)]
pub struct BenchBaselineArgs {
    /// Where to listen.
    #[arg(long)]
    pub addr: std::net::SocketAddr,
}

/// Arguments of `devplane bench store-memory`.
#[derive(Debug, Args)]
pub struct BenchStoreMemoryArgs {
    /// Objects of 1 KiB to store.
    #[arg(long, default_value_t = 20_000)]
    pub objects: u64,
}

/// Arguments of `devplane bench mqtt`.
#[derive(Debug, Args)]
pub struct BenchMqttArgs {
    /// Idle authenticated connections to hold (at most about 19,000 within a 20,000-file limit).
    #[arg(long, default_value_t = 19_000)]
    pub connections: u64,
    /// Source addresses 127.0.0.2… the connections are spread over.
    #[arg(long, default_value_t = 8)]
    pub sources: u64,
    /// QoS 1 telemetry messages in the throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Publishing devices in the throughput run.
    #[arg(long, default_value_t = 8)]
    pub publishers: u64,
    /// Unacknowledged messages each publisher keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub window: u16,
    /// Skip the Mosquitto baseline.
    #[arg(long)]
    pub no_mosquitto: bool,
}

/// Arguments of `devplane bench onboard`.
#[derive(Debug, Args)]
pub struct BenchOnboardArgs {
    /// Devices in the batch.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Run on etcd at `host:port` instead of the embedded store.
    #[arg(long)]
    pub etcd: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}

/// Arguments of `devplane bench api`.
#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Objects to create while the watchers watch.
    #[arg(long, default_value_t = 20_000)]
    pub creates: u64,
    /// Watchers attached during the creates.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Objects in the store when list latency is measured.
    #[arg(long, default_value_t = 100_000)]
    pub list_objects: u64,
    /// An etcd endpoint (`host:port`) to compare against: raw puts, then the API over etcd.
    #[arg(long)]
    pub etcd: Option<String>,
}

/// Arguments of `devplane controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig to use; default: in-cluster configuration, then $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "DEVPLANE_ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_addr: std::net::SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "devplane-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease; default: host name and process id.
    #[arg(long, env = "DEVPLANE_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// Host of the device front door, written into credentials Secrets.
    #[arg(long, env = "DEVPLANE_FRONTDOOR_HOST", default_value = "127.0.0.1")]
    pub frontdoor_host: String,
}

/// Arguments of `devplane qr`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("devices").required(true).args(["id", "all", "batch"])))]
pub struct QrArgs {
    /// Kubeconfig to use; default: $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the policy or the batch.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// ProvisioningPolicy whose devices get provisioning links (with --id or --all).
    #[arg(long, conflicts_with = "batch")]
    pub policy: Option<String>,
    /// The one device to draw: a device id, or the deviceId or serial number of a
    /// pre-registered entry.
    #[arg(long, requires = "policy")]
    pub id: Option<String>,
    /// Every pre-registered device of the policy.
    #[arg(long, requires = "policy")]
    pub all: bool,
    /// OnboardingBatch whose devices get connect links (from their credentials Secrets).
    #[arg(long)]
    pub batch: Option<String>,
    /// Base URL of the front door's HTTP(S) listener that devices reach, put into provisioning
    /// links, e.g. https://devices.example.com:8443 (required with --policy).
    #[arg(long, conflicts_with = "batch")]
    pub endpoint: Option<String>,
    /// Where the codes go: FILE.png or FILE.svg for one code, or a directory that receives
    /// <id>.png and <id>.svg for each.
    #[arg(
        long,
        value_name = "FILE.png|FILE.svg|DIR",
        required_unless_present = "sheet"
    )]
    pub out: Option<PathBuf>,
    /// Also write one printable HTML page with every code and its id and serial number below.
    #[arg(long, value_name = "FILE.html")]
    pub sheet: Option<PathBuf>,
}

/// Arguments of `devplane onboard`.
#[derive(Debug, Args)]
pub struct OnboardCliArgs {
    /// YAML file with one or more OnboardingBatch documents.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "csv",
        conflicts_with_all = ["csv", "template"]
    )]
    pub file: Option<PathBuf>,
    /// A spreadsheet's CSV export, one row per device, that fills --template: an
    /// OnboardingBatch's items (columns name, serialNumber, label:<key> and attributes) or a
    /// ProvisioningPolicy's pre-registered devices (columns serialNumber, deviceId, token).
    /// Every row is checked first; with one bad row nothing is applied.
    #[arg(long, requires = "template", value_name = "ROWS.csv")]
    pub csv: Option<PathBuf>,
    /// The OnboardingBatch (its spec.items left out) or ProvisioningPolicy (its
    /// spec.attestation.preRegistered left out) YAML that the rows of --csv fill.
    #[arg(long, requires = "csv", value_name = "FILE.yaml")]
    pub template: Option<PathBuf>,
    /// Follow the batches until they are done, with a progress bar, then summarize.
    #[arg(long)]
    pub wait: bool,
    /// Kubeconfig to use; default: $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace for batches that name none.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}
