//! Two `devplane up` processes sharing one etcd (Debian's etcd-server, started here).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Devplane, SMART_HOME, free_port, stderr, stdout};

/// An etcd server on free ports, stopped by its process id on drop.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    /// Client URL.
    pub url: String,
}

impl Etcd {
    /// Start etcd; fails the test with a clear message when it is not installed.
    pub fn start() -> Etcd {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let binary = binary.expect("etcd is not installed: tests/run installs Debian's etcd-server (apt-get install etcd-server)");
        // etcd preallocates its WAL: keep it in memory where possible.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        for _ in 0..5 {
            let dir = tempfile::tempdir_in(&base).expect("etcd data dir");
            let (client, peer) = (free_port(), free_port());
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut child = Command::new(&binary)
                .args(["--name", "t", "--data-dir"])
                .arg(dir.path().join("data"))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("t={peer_url}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("etcd starts");
            let stderr = child.stderr.take().expect("stderr");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ready to serve client requests") {
                        let _ = tx.send(true);
                    }
                    if line.contains("address already in use") {
                        let _ = tx.send(false);
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(20)) == Ok(true) {
                return Etcd {
                    child,
                    _dir: dir,
                    url,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("etcd did not start");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two `devplane up` processes sharing one etcd prefix.
fn two_processes_on(etcd: &Etcd) -> (Devplane, Devplane) {
    let store = format!(
        "etcd://{}/devplane-test",
        etcd.url.trim_start_matches("http://")
    );
    (
        Devplane::start(&["--store", &store]),
        Devplane::start(&["--store", &store]),
    )
}

#[test]
fn two_devplane_processes_on_one_etcd_see_the_same_objects() {
    let etcd = Etcd::start();
    let (a, b) = two_processes_on(&etcd);
    a.apply_examples(SMART_HOME);
    let seen = b.kubectl_ok(&["get", "devices", "-n", "smart-home", "-o", "name"]);
    assert!(
        seen.contains("device.iot.devplane.io/living-room-climate"),
        "{seen}"
    );
    // A watch through B sees a write through A. The marker's line shows B listed; the watch
    // then starts from that list's revision, so A's later write cannot be missed.
    a.kubectl_ok(&["create", "configmap", "marker", "-n", "smart-home"]);
    let mut watch = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .args(["get", "configmaps", "-n", "smart-home", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let out = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("B lists the marker");
    assert_eq!(first.trim(), "configmap/marker");
    a.kubectl_ok(&[
        "create",
        "configmap",
        "from-a",
        "-n",
        "smart-home",
        "--from-literal=k=v",
    ]);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("B's watch reports A's write");
    assert_eq!(line.trim(), "configmap/from-a");
    let _ = watch.kill();
    let _ = watch.wait();
    let through_b = b.kubectl(&[
        "get",
        "configmap",
        "from-a",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(stdout(&through_b), "v");
}

#[test]
fn each_process_writes_on_top_of_the_others_changes_and_honours_its_namespace_deletions() {
    let etcd = Etcd::start();
    let (a, b) = two_processes_on(&etcd);
    a.kubectl_ok(&["create", "namespace", "scratch"]);
    a.kubectl_ok(&[
        "create",
        "configmap",
        "shared",
        "-n",
        "scratch",
        "--from-literal=a=1",
    ]);
    // A remembers the object as it wrote it; B changes it; A's patch must keep B's change.
    b.kubectl_ok(&["label", "configmap", "shared", "-n", "scratch", "from=b"]);
    a.kubectl_ok(&[
        "patch",
        "configmap",
        "shared",
        "-n",
        "scratch",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    let seen = b.kubectl_ok(&[
        "get",
        "configmap",
        "shared",
        "-n",
        "scratch",
        "-o",
        "jsonpath={.metadata.labels.from} {.data.a} {.data.b}",
    ]);
    assert_eq!(seen.trim(), "b 1 2");
    // A checked the namespace for its creates; once B deletes it, A refuses new objects.
    b.kubectl_ok(&["delete", "namespace", "scratch", "--wait=false"]);
    let refused = a.kubectl(&["create", "configmap", "late", "-n", "scratch"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("being terminated") || message.contains("not found"),
        "{message}"
    );
}
