//! Test support (feature `testing`): a throwaway etcd server for backend tests.
//!
//! [`EtcdServer::start_or_skip`] starts Debian's `etcd` on free loopback ports with a data
//! directory on `/dev/shm` when available (etcd preallocates tens of MB of WAL), and kills
//! it by process id when dropped. Without an `etcd` binary it fails the test with a clear
//! message, unless `DEVPLANE_SKIP_ETCD=1` asks to skip etcd tests.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{EtcdStore, Store};

/// Set to `1` to skip etcd tests (with a note) instead of requiring an `etcd` binary.
pub const SKIP_ETCD_ENV: &str = "DEVPLANE_SKIP_ETCD";
/// Path of the `etcd` binary to use instead of searching `PATH`.
pub const ETCD_BIN_ENV: &str = "DEVPLANE_ETCD_BIN";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// A running etcd that is killed when this value is dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    // Dropped after the process is killed (fields drop after `Drop::drop`).
    _data_dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd, or returns `None` after printing a note if `DEVPLANE_SKIP_ETCD=1`.
    /// Panics with an explanation if etcd cannot be found or started.
    pub async fn start_or_skip() -> Option<EtcdServer> {
        if std::env::var(SKIP_ETCD_ENV).is_ok_and(|v| v == "1") {
            eprintln!("note: skipping an etcd test because {SKIP_ETCD_ENV}=1");
            return None;
        }
        match EtcdServer::start().await {
            Ok(server) => Some(server),
            Err(message) => panic!("{message}"),
        }
    }

    /// Starts etcd on free ports and waits until it answers.
    pub async fn start() -> Result<EtcdServer, String> {
        let binary = find_etcd()?;
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match start_once(&binary).await? {
                Ok(server) => return Ok(server),
                // Another process took a port between probing and etcd binding it.
                Err(port_clash) => last_failure = port_clash,
            }
        }
        Err(format!(
            "etcd could not bind free ports after {START_ATTEMPTS} attempts: {last_failure}"
        ))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A store on this server under `prefix`.
    pub async fn store(&self, prefix: &str) -> Arc<dyn Store> {
        match EtcdStore::connect(std::slice::from_ref(&self.endpoint), prefix).await {
            Ok(store) => Arc::new(store),
            Err(e) => panic!("cannot connect to the test etcd at {}: {e}", self.endpoint),
        }
    }

    /// The value of one of etcd's own metrics (a line `name value` of its `/metrics`), e.g.
    /// `etcd_debugging_mvcc_watcher_total`, the watches open on it.
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut connection =
            std::net::TcpStream::connect(address).map_err(|e| format!("{address}: {e}"))?;
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            connection,
            "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n"
        )
        .map_err(|e| format!("{address}: {e}"))?;
        let mut text = String::new();
        connection
            .read_to_string(&mut text)
            .map_err(|e| format!("{address}: {e}"))?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .ok_or_else(|| format!("etcd reports no metric {name}"))?
            .trim()
            .parse()
            .map_err(|e| format!("metric {name}: {e}"))
    }

    /// The last lines etcd logged (for failure messages).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this process id; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_etcd() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(ETCD_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{ETCD_BIN_ENV}={} does not name a file",
                path.display()
            ))
        };
    }
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search_path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "the etcd tests need an `etcd` binary, and none is on PATH. Install it \
                 (Debian: `apt-get install -y etcd-server`), point {ETCD_BIN_ENV} at one, \
                 or set {SKIP_ETCD_ENV}=1 to skip these tests"
            )
        })
}

fn free_port_pair() -> Result<(u16, u16), String> {
    // Both listeners are held at once so the two ports differ.
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| format!("cannot find a free port: {e}"))
    };
    let (client, _client_listener) = bind()?;
    let (peer, _peer_listener) = bind()?;
    Ok((client, peer))
}

fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// One start attempt. The outer error is fatal; the inner one means "ports clashed, retry".
async fn start_once(binary: &Path) -> Result<Result<EtcdServer, String>, String> {
    let data_dir = tempfile::Builder::new()
        .prefix("devplane-etcd-")
        .tempdir_in(scratch_parent())
        .map_err(|e| format!("cannot create a data directory for etcd: {e}"))?;
    let log_path = data_dir.path().join("etcd.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create the etcd log: {e}"))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot share the etcd log: {e}"))?;
    let (client_port, peer_port) = free_port_pair()?;
    let name = format!(
        "devplane-test-{}-{}",
        std::process::id(),
        INSTANCE.fetch_add(1, Ordering::SeqCst)
    );
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(binary)
        .arg("--name")
        .arg(&name)
        .arg("--data-dir")
        .arg(data_dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .arg("--initial-cluster")
        .arg(format!("{name}={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut server = EtcdServer {
        child,
        endpoint: client_url,
        log_path,
        _data_dir: data_dir,
    };

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let tail = server.log_tail();
            if tail.contains("address already in use") {
                return Ok(Err(format!("etcd exited ({status}): {tail}")));
            }
            return Err(format!(
                "etcd exited during startup ({status}); its log ends with:\n{tail}"
            ));
        }
        match tokio::time::timeout(
            Duration::from_millis(500),
            serves_member(&server.endpoint, &name),
        )
        .await
        {
            Ok(Some(true)) => return Ok(Ok(server)),
            // Some other etcd answers on this port: ours did not get it.
            Ok(Some(false)) => {
                return Ok(Err(format!("another etcd answered on {}", server.endpoint)));
            }
            Ok(None) | Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "etcd did not answer on {} within {READY_TIMEOUT:?}; its log ends with:\n{}",
                server.endpoint,
                server.log_tail()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `Some(true)` if the etcd at `endpoint` is the member called `name`, `Some(false)` if it is
/// another one, `None` if it does not answer (yet).
async fn serves_member(endpoint: &str, name: &str) -> Option<bool> {
    let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
    let members = client.member_list().await.ok()?;
    Some(members.members().iter().any(|member| member.name() == name))
}
