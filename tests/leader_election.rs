//! `devplane controller` replicas against one API (`devplane up --no-controllers`): only the
//! Lease holder reconciles, and killing it hands over within the lease duration. Also
//! `devplane onboard --wait` against a running system.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Devplane, SMART_HOME, free_port, stdout, wait_until};

struct Replica {
    child: Child,
    admin: String,
    identity: String,
}

impl Replica {
    fn start(devplane: &Devplane, identity: &str) -> Replica {
        let admin = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(devplane.dir.join(format!("{identity}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_devplane"))
            .args(["controller", "--kubeconfig"])
            .arg(devplane.kubeconfig())
            .args([
                "--admin-addr",
                &admin,
                "--identity",
                identity,
                "--lease-seconds",
                "4",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("devplane controller starts");
        let replica = Replica {
            child,
            admin,
            identity: identity.to_string(),
        };
        wait_until("the admin endpoint", Duration::from_secs(30), || {
            replica.get("/healthz").is_some()
        });
        replica
    }

    fn get(&self, path: &str) -> Option<String> {
        let output = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                &format!("http://{}{path}", self.admin),
            ])
            .output()
            .ok()?;
        output.status.success().then(|| stdout(&output))
    }

    /// Device reconciles this replica has run, from its /metrics.
    fn device_reconciles(&self) -> u64 {
        let metrics = self.get("/metrics").unwrap_or_default();
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("devplane_reconciles_total") && l.contains("controller=\"device\"")
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn holder(devplane: &Devplane) -> String {
    let out = devplane.kubectl(&[
        "get",
        "lease",
        "devplane-controller",
        "-n",
        "devplane-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    stdout(&out)
}

#[test]
fn only_the_lease_holder_reconciles_and_a_killed_leader_is_replaced() {
    let devplane = Devplane::start(&["--no-controllers"]);
    let mut a = Replica::start(&devplane, "replica-a");
    wait_until("replica-a to lead", Duration::from_secs(30), || {
        holder(&devplane) == "replica-a"
    });
    let mut b = Replica::start(&devplane, "replica-b");
    devplane.apply_examples_and_wait(SMART_HOME, "smart-home", &["device/living-room-climate"]);
    assert!(a.device_reconciles() > 0, "the leader reconciles");
    assert_eq!(b.device_reconciles(), 0, "the follower does not");
    assert_eq!(
        b.get("/metrics")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("devplane_leader"))
            .map(str::to_string),
        Some("devplane_leader 0".to_string())
    );

    a.kill();
    let killed = Instant::now();
    wait_until(
        "replica-b to take the lease",
        Duration::from_secs(30),
        || holder(&devplane) == b.identity,
    );
    let handover = killed.elapsed();
    assert!(
        handover < Duration::from_secs(4 + 6),
        "handed over in {handover:?} (lease 4 s, plus polling)"
    );
    let device = devplane.dir.join("device.yaml");
    std::fs::write(&device, "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: after-handover, namespace: smart-home}\nspec: {modelRef: {name: thermo-hygrometer}, attributes: {room: attic}}\n").expect("write");
    devplane.kubectl_ok(&["apply", "-f", device.to_str().expect("utf-8")]);
    devplane.wait_ready("smart-home", &["device/after-handover"]);
    assert!(b.device_reconciles() > 0, "the new leader reconciles");
    b.kill();
}

#[test]
fn devplane_onboard_waits_for_a_batch_and_summarizes_it() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(SMART_HOME);
    let batch = devplane.dir.join("batch.yaml");
    std::fs::write(
        &batch,
        "apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {name: sensors, namespace: smart-home}\nspec:\n  template:\n    spec:\n      modelRef: {name: thermo-hygrometer}\n      attributes: {room: lab}\n  items:\n    list:\n      - {name: sensor-1}\n      - {name: sensor-2}\n      - {name: Sensor-3}\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(["onboard", "-f"])
        .arg(&batch)
        .args(["--wait", "--timeout-seconds", "60", "--kubeconfig"])
        .arg(devplane.kubeconfig())
        .output()
        .expect("devplane onboard runs");
    let out = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one item failed: {out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("Sensor-3") && out.contains("RFC 1123 subdomain"),
        "the failure is listed: {out}"
    );
    assert!(
        out.contains('2') && out.contains('3'),
        "counts in the summary: {out}"
    );
    assert!(
        devplane
            .kubectl(&["get", "device", "sensor-2", "-n", "smart-home"])
            .status
            .success()
    );
}
