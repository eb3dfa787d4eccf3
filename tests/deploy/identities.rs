//! The roles of manifests/deploy are enough, and each rule is needed: `devplane controller` and
//! `devplane frontdoor` run against `devplane up` (which enforces RBAC as a cluster does) with
//! ServiceAccount tokens bound only by the install's roles, applied from the rendered install.
//! The examples become Ready and a device connects; with a rule taken out, the component that
//! needs it logs the API's 403 and its work stops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{documents, kustomize};
use crate::support::{Devplane, SMART_HOME, wait_until};

/// The install's identities, roles and bindings (and their namespace), as kubectl applies them.
fn rbac_documents() -> Vec<Value> {
    documents(&kustomize("manifests/deploy"))
        .into_iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect()
}

fn apply(devplane: &Devplane, objects: &[Value]) {
    let yaml: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    devplane.apply_yaml(&yaml.join("---\n"));
}

/// A kubeconfig for `devplane up` that authenticates with a token of the ServiceAccount.
fn kubeconfig_of(devplane: &Devplane, account: &str) -> PathBuf {
    let token = devplane.kubectl_ok(&[
        "create",
        "token",
        account,
        "-n",
        "devplane-system",
        "--duration",
        "1h",
    ]);
    let text = std::fs::read_to_string(devplane.kubeconfig()).expect("kubeconfig");
    let mut config: Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for user in config["users"].as_array_mut().expect("users") {
        user["user"] = serde_json::json!({"token": token.trim()});
    }
    let path = devplane.dir.join(format!("{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write");
    path
}

/// A `devplane` component as a process; its log is kept, its standard output read for the
/// addresses it prints. Killed when dropped.
struct Component {
    child: Child,
    log: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Component {
    fn start(devplane: &Devplane, name: &str, args: &[&str]) -> Component {
        let log = devplane.dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_devplane"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("devplane starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Component { child, log, lines }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn printed(&self, prefix: &str) -> String {
        let mut found = None;
        wait_until(prefix, Duration::from_secs(20), || {
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
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `devplane up` without its own controllers and front door, the install's roles applied (with
/// `edit` changing them first), and the controller and front door running under them.
fn start(edit: impl FnOnce(&mut Vec<Value>)) -> (Devplane, Component, Component) {
    let devplane = Devplane::start(&["--no-controllers", "--no-frontdoor"]);
    let mut objects = rbac_documents();
    edit(&mut objects);
    apply(&devplane, &objects);
    let controller_config = kubeconfig_of(&devplane, "devplane-controller");
    let frontdoor_config = kubeconfig_of(&devplane, "devplane-frontdoor");
    let controller = Component::start(
        &devplane,
        "controller",
        &[
            "controller",
            "--kubeconfig",
            &controller_config.to_string_lossy(),
            "--admin-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "devplane-system",
            "--identity",
            "controller-under-test",
        ],
    );
    let frontdoor = Component::start(
        &devplane,
        "frontdoor",
        &[
            "frontdoor",
            "--kubeconfig",
            &frontdoor_config.to_string_lossy(),
            "--mqtt-addr",
            "127.0.0.1:0",
            "--app-mqtt-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--identity",
            "frontdoor-under-test",
        ],
    );
    devplane.apply_examples(SMART_HOME);
    (devplane, controller, frontdoor)
}

/// A process killed when dropped.
struct Session(Child);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The device of examples/smart-home.yaml connects over MQTT with its credentials and stays
/// connected (subscribed to its downlink, for at most a minute) while the session is held.
fn connect_device(devplane: &Devplane, frontdoor: &Component) -> Session {
    let (namespace, name) = ("smart-home", "living-room-climate");
    let secret = format!("{name}-credentials");
    let username = devplane.secret_value(namespace, &secret, "username");
    let password = devplane.secret_value(namespace, &secret, "password");
    let address = frontdoor.printed("device MQTT listening on mqtt://");
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let child = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", port, "-u"])
        .args([username.as_str(), "-P", password.as_str(), "-W", "60", "-t"])
        .arg(format!("d/{namespace}/{name}/#"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs");
    Session(child)
}

fn phase(devplane: &Devplane) -> String {
    devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.status.phase}",
    ])
}

#[test]
fn the_controller_and_the_front_door_work_with_only_the_roles_of_the_install() {
    let (devplane, controller, frontdoor) = start(|_| {});
    devplane.wait_ready(
        "smart-home",
        &[
            "device/living-room-climate",
            "devicemodel/thermo-hygrometer",
        ],
    );
    // The Lease in devplane-system names the controller.
    let holder = devplane.kubectl_ok(&[
        "get",
        "lease",
        "devplane-controller",
        "-n",
        "devplane-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "controller-under-test");
    let _session = connect_device(&devplane, &frontdoor);
    // The front door records the first connection, the controller moves the device on.
    wait_until("the device in Servicing", Duration::from_secs(60), || {
        phase(&devplane) == "Servicing"
    });
    for component in [&controller, &frontdoor] {
        let log = component.log_text();
        assert!(
            !log.contains("forbidden") && !log.contains(" 403"),
            "{}: a request was refused:\n{log}",
            component.log.display()
        );
    }
}

#[test]
fn without_its_status_rule_the_front_door_logs_the_403_and_presence_stops() {
    let (devplane, _controller, frontdoor) = start(|objects| {
        let role = objects
            .iter_mut()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "devplane-frontdoor")
            .expect("the front door's role");
        for rule in role["rules"].as_array_mut().expect("rules") {
            if let Some(resources) = rule["resources"].as_array_mut() {
                resources.retain(|r| r != "devices/status");
            }
        }
    });
    devplane.wait_ready("smart-home", &["device/living-room-climate"]);
    let _session = connect_device(&devplane, &frontdoor);
    wait_until(
        "the front door's 403 in its log",
        Duration::from_secs(60),
        || {
            frontdoor
                .log_text()
                .contains("cannot patch resource \\\"devices/status\\\"")
                || frontdoor
                    .log_text()
                    .contains("cannot patch resource \"devices/status\"")
        },
    );
    let log = frontdoor.log_text();
    assert!(
        log.contains("cannot write status") && log.contains("devplane-frontdoor"),
        "the log says what failed and who was refused:\n{log}"
    );
    assert_eq!(
        phase(&devplane),
        "Provisioned",
        "no presence was recorded, so the device never reached Servicing"
    );
}
