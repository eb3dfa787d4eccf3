//! Helpers shared by the integration tests: the devplane binary, a `devplane up` process on a
//! free port, kubectl against it, the examples applied and waited for.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the devplane binary built for this test run.
pub fn devplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("devplane runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A free TCP port on 127.0.0.1 (bound and released; callers check their own bind worked).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Poll `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The example namespaces and the smart-home example (one device, its model).
pub const SMART_HOME: &[&str] = &["examples/00-namespaces.yaml", "examples/smart-home.yaml"];
/// The example namespaces and the solar-site example (inverter models, a batch).
pub const SOLAR_SITE: &[&str] = &["examples/00-namespaces.yaml", "examples/solar-site.yaml"];
/// The example namespaces and the datalogger-gateway example (a gateway and its meters).
pub const DATALOGGER_GATEWAY: &[&str] = &[
    "examples/00-namespaces.yaml",
    "examples/datalogger-gateway.yaml",
];
/// Every example: kubectl reads the directory's files (not examples/gitops/, a repository of
/// its own).
pub const EVERY_EXAMPLE: &[&str] = &["examples/"];

/// How long a test waits for the controllers to make objects Ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A `devplane up` process for one test.
pub struct Devplane {
    child: Option<Child>,
    /// Its data directory (kept across restarts of the same test).
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    /// Its API address.
    pub addr: String,
    /// Its log file (stderr).
    pub log: PathBuf,
    extra: Vec<String>,
    /// What it printed on standard output.
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Devplane {
    /// Start `devplane up` with TLS on a free port in a new data directory.
    pub fn start(extra: &[&str]) -> Devplane {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut devplane = Devplane {
            child: None,
            dir,
            _temp: Some(temp),
            addr: String::new(),
            log: PathBuf::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            lines: Default::default(),
        };
        devplane.launch();
        devplane
    }

    /// Start `devplane up` on an existing data directory (owned by the caller).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Devplane {
        let mut devplane = Devplane {
            child: None,
            dir: dir.to_path_buf(),
            _temp: None,
            addr: String::new(),
            log: PathBuf::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            lines: Default::default(),
        };
        devplane.launch();
        devplane
    }

    fn launch(&mut self) {
        for attempt in 0..5 {
            let port = free_port();
            self.addr = format!("127.0.0.1:{port}");
            self.log = self.dir.join(format!("devplane-{port}.log"));
            let log = std::fs::File::create(&self.log).expect("log file");
            let mut command = Command::new(env!("CARGO_BIN_EXE_devplane"));
            command
                .args(["up", "--data-dir"])
                .arg(&self.dir)
                .args(["--api-addr", &self.addr]);
            // The front door's listeners on ports the kernel picks (tests run in parallel);
            // their addresses are read from standard output.
            for (flag, value) in [
                ("--mqtt-addr", "127.0.0.1:0"),
                ("--app-mqtt-addr", "127.0.0.1:0"),
                ("--http-addr", "127.0.0.1:0"),
                ("--coaps-addr", "127.0.0.1:0"),
                ("--coap-addr", "127.0.0.1:0"),
                ("--admin-addr", "127.0.0.1:0"),
            ] {
                if !self.extra.iter().any(|e| e == flag) {
                    command.args([flag, value]);
                }
            }
            command
                .args(&self.extra)
                .env("RUST_LOG", "info,devplane_apiserver=debug")
                .stdout(Stdio::piped())
                .stderr(log);
            let mut child = command.spawn().expect("devplane up starts");
            let stdout = child.stdout.take().expect("stdout");
            // The process prints the kubeconfig path once it listens; a failed bind exits.
            let (tx, rx) = std::sync::mpsc::channel();
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            self.lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let ready = line.starts_with("kubeconfig:");
                    lines.lock().expect("lines").push(line);
                    if ready {
                        let _ = tx.send(());
                    }
                }
            });
            let ready = rx.recv_timeout(Duration::from_secs(30)).is_ok();
            if ready && TcpStream::connect(&self.addr).is_ok() {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "devplane up attempt {attempt} on {} failed:\n{}",
                self.addr,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        panic!("devplane up did not start");
    }

    /// The address after `prefix` in a line it printed (waits a moment for late lines).
    pub fn printed_address(&self, prefix: &str) -> String {
        let mut found = None;
        wait_until(prefix, Duration::from_secs(10), || {
            found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string));
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// The device MQTT listener, `host:port`.
    pub fn mqtt_addr(&self) -> String {
        self.printed_address("device MQTT listening on mqtt://")
    }

    /// The northbound application MQTT listener, `host:port`.
    pub fn app_addr(&self) -> String {
        self.printed_address("application MQTT listening on mqtt://")
    }

    /// The admin endpoint, `host:port`.
    pub fn admin_addr(&self) -> String {
        self.printed_address("admin endpoint listening on http://")
    }

    /// `GET /metrics` of the admin endpoint.
    pub fn metrics(&self) -> String {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{}/metrics", self.admin_addr()))
            .output()
            .expect("curl runs");
        stdout(&output)
    }

    /// `kubectl apply` of example manifests (`SMART_HOME`, `EVERY_EXAMPLE`, …), in order;
    /// kubectl's output.
    pub fn apply_examples(&self, manifests: &[&str]) -> String {
        let mut args = vec!["apply"];
        for manifest in manifests {
            args.extend(["-f", manifest]);
        }
        self.kubectl_ok(&args)
    }

    /// `kubectl wait --for=condition=<condition>` on `targets` (`kind/name`, or a kind and
    /// `--all`) in `namespace`, or in every namespace for `None`, for at most `timeout`.
    pub fn wait_condition(
        &self,
        condition: &str,
        namespace: Option<&str>,
        targets: &[&str],
        timeout: Duration,
    ) {
        let condition = format!("--for=condition={condition}");
        let timeout = format!("--timeout={}s", timeout.as_secs());
        let mut args = vec!["wait", condition.as_str()];
        args.extend(targets);
        match namespace {
            Some(namespace) => args.extend(["-n", namespace]),
            None => args.push("-A"),
        }
        args.push(&timeout);
        self.kubectl_ok(&args);
    }

    /// Every one of `targets` (`kind/name`) in `namespace` Ready within [`READY_TIMEOUT`].
    pub fn wait_ready(&self, namespace: &str, targets: &[&str]) {
        self.wait_condition("Ready", Some(namespace), targets, READY_TIMEOUT);
    }

    /// Apply example manifests, then wait until `ready` (`kind/name` in `namespace`) are
    /// Ready: where most tests of the controllers start.
    pub fn apply_examples_and_wait(&self, manifests: &[&str], namespace: &str, ready: &[&str]) {
        self.apply_examples(manifests);
        self.wait_ready(namespace, ready);
    }

    /// `kubectl apply` of a YAML text.
    pub fn apply_yaml(&self, yaml: &str) {
        let file = tempfile::NamedTempFile::new_in(&self.dir).expect("temp file");
        std::fs::write(file.path(), yaml).expect("write manifest");
        self.kubectl_ok(&["apply", "-f", &file.path().to_string_lossy()]);
    }

    /// One key of a Secret, decoded.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> String {
        let encoded = self.kubectl_ok(&[
            "get",
            "secret",
            name,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={{.data.{}}}", key.replace('.', "\\.")),
        ]);
        let output = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(encoded.trim().as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 runs");
        stdout(&output)
    }

    /// The kubeconfig it wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The admin token.
    pub fn token(&self) -> String {
        let tokens: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("tokens.json")).expect("tokens"),
        )
        .expect("tokens json");
        tokens["admin"].as_str().expect("admin token").to_string()
    }

    /// Run the kubectl dispatcher (which picks kubectl 1.33 from `/version`).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_binary("kubectl", args)
    }

    /// Run a specific kubectl binary (`kubectl.1.32`, …) next to the dispatcher.
    pub fn kubectl_binary(&self, binary: &str, args: &[&str]) -> Output {
        let path = if binary == "kubectl" {
            PathBuf::from("/usr/bin/kubectl")
        } else {
            PathBuf::from("/usr/lib/google-cloud-sdk/bin").join(binary)
        };
        let cache = self.dir.join(format!("kube-cache-{binary}"));
        Command::new(path)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .current_dir(repo())
            .output()
            .expect("kubectl runs")
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// A raw HTTPS request with curl (the server's own CA, a bearer token).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-X", method, "--cacert"])
            .arg(self.dir.join("pki/ca.crt"))
            .args(["-w", "\n%{http_code}", "--max-time", "20"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        command.arg(format!("https://{}{path}", self.addr));
        let output = command.output().expect("curl runs");
        let text = stdout(&output);
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The controllers' warnings so far: log lines at WARN or ERROR about a reconcile.
    pub fn reconcile_warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|line| {
                (line.contains(" WARN ") || line.contains(" ERROR ")) && line.contains("reconcil")
            })
            .map(str::to_string)
            .collect()
    }

    /// Stop with SIGTERM (graceful), waiting for the exit; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kill with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Devplane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A background process (a client, a test server) whose output lines are collected as they
/// come; killed when dropped.
pub struct Background {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Background {
    pub fn spawn(mut command: Command) -> Background {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the client runs");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("lines").push(line);
            }
        });
        Background { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let mut found = String::new();
        wait_until(what, timeout, || {
            match self.lines().into_iter().find(|l| matches(l)) {
                Some(l) => {
                    found = l;
                    true
                }
                None => false,
            }
        });
        found
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return self.lines();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("client did not finish in {timeout:?}: {:?}", self.lines());
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
