//! The controllers inside `devplane up`, driven with real kubectl: examples become Ready with
//! credentials, lifecycle rules hold, a missing model heals, batches of 10,000 complete (also
//! across a kill -9), deletion policies apply, and a settled system stops writing.

use std::time::Duration;

use crate::support::{
    DATALOGGER_GATEWAY, Devplane, EVERY_EXAMPLE, READY_TIMEOUT, SMART_HOME, SOLAR_SITE, stderr,
    stdout, wait_until,
};

/// Every example applied and settled: the example batch Complete, every device Ready.
fn apply_examples_and_settle(devplane: &Devplane) {
    let settled = Duration::from_secs(120);
    devplane.apply_examples(EVERY_EXAMPLE);
    devplane.wait_condition(
        "Complete",
        Some("solar-farm"),
        &["onboardingbatch/block-a-inverters"],
        settled,
    );
    devplane.wait_condition("Ready", None, &["device", "--all"], settled);
}

fn names(devplane: &Devplane, args: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = devplane
        .kubectl_ok(args)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn examples_become_ready_with_credentials_and_phase_provisioned() {
    let devplane = Devplane::start(&[]);
    apply_examples_and_settle(&devplane);
    let devices = names(
        &devplane,
        &[
            "get",
            "devices",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ],
    );
    assert_eq!(
        devices.len(),
        25,
        "20 inverters, 3 meters, a weather station, a thermometer: {devices:?}"
    );
    let secrets = names(
        &devplane,
        &[
            "get",
            "secrets",
            "-A",
            "--field-selector=type=iot.devplane.io/device-credentials",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ],
    );
    for device in &devices {
        assert!(
            secrets.contains(&format!("{device}-credentials")),
            "{device} has a credentials Secret: {secrets:?}"
        );
    }
    let phases = devplane.kubectl_ok(&[
        "get",
        "devices",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
    ]);
    assert!(phases.lines().all(|p| p == "Provisioned"), "{phases}");
    let table = devplane.kubectl_ok(&["get", "devices", "-n", "smart-home"]);
    assert!(table.contains("Provisioned"), "{table}");
    // A person can connect a device from the Secret alone.
    let username = devplane.kubectl_ok(&[
        "get",
        "secret",
        "living-room-climate-credentials",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.data.username}",
    ]);
    assert_eq!(
        username, "c21hcnQtaG9tZS9saXZpbmctcm9vbS1jbGltYXRl",
        "base64 of smart-home/living-room-climate"
    );
    let keys = devplane.kubectl_ok(&[
        "get",
        "secret",
        "living-room-climate-credentials",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.data}",
    ]);
    assert!(
        keys.contains("password")
            && keys.contains("mqtt-endpoint")
            && keys.contains("coaps-endpoint")
            && !keys.contains("http-endpoint"),
        "{keys}"
    );
    // Models report what they resolved and who uses them; the gateway counts its sub-devices.
    let model = devplane.kubectl_ok(&[
        "get",
        "dm",
        "string-inverter",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.status.conditions[0].status}/{.status.devices}/{.status.resolved.services}",
    ]);
    assert_eq!(
        model, "True/20/4",
        "Ready, 20 users, setActivePowerLimit + 3 library services"
    );
    wait_until(
        "the gateway to count its sub-devices",
        Duration::from_secs(30),
        || {
            devplane.kubectl_ok(&[
                "get",
                "gw",
                "substation-logger",
                "-n",
                "metering",
                "-o",
                "jsonpath={.status.subDevices}",
            ]) == "3"
        },
    );
    let command = devplane.kubectl_ok(&[
        "get",
        "dcmd",
        "curtail-inverter-07",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.status.phase}/{.status.reason}",
    ]);
    assert_eq!(command, "Pending/WaitingForDelivery");
    let described = devplane.kubectl_ok(&["describe", "device", "met-mast-01", "-n", "solar-farm"]);
    assert!(
        described.contains("CredentialsIssued"),
        "events show the credentials: {described}"
    );
}

#[test]
fn a_settled_system_stops_writing() {
    let devplane = Devplane::start(&[]);
    apply_examples_and_settle(&devplane);
    let token = devplane.token();
    let revision = || {
        let (_, body) = devplane.curl("GET", "/api/v1/namespaces", Some(&token), None);
        let list: serde_json::Value = serde_json::from_str(&body).expect("list");
        list["metadata"]["resourceVersion"]
            .as_str()
            .expect("revision")
            .parse::<u64>()
            .expect("number")
    };
    // Settled: no write for a second (polled), then the revision must not move for 10 s.
    let mut last = revision();
    wait_until("writes to stop", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = revision();
        let settled = now == last;
        last = now;
        settled
    });
    let before = revision();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        revision(),
        before,
        "the store's revision moved while nothing changed"
    );
}

#[test]
fn decommissioning_revokes_credentials_and_cannot_be_undone() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples_and_wait(SMART_HOME, "smart-home", &["device/living-room-climate"]);
    assert!(
        devplane
            .kubectl(&[
                "get",
                "secret",
                "living-room-climate-credentials",
                "-n",
                "smart-home"
            ])
            .status
            .success()
    );
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "--type=merge",
        "-p",
        r#"{"spec":{"lifecycle":"Decommissioned"}}"#,
    ]);
    devplane.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Decommissioned",
        "device/living-room-climate",
        "-n",
        "smart-home",
        "--timeout=60s",
    ]);
    assert!(
        !devplane
            .kubectl(&[
                "get",
                "secret",
                "living-room-climate-credentials",
                "-n",
                "smart-home"
            ])
            .status
            .success(),
        "the Secret is revoked"
    );
    let issued = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"CredentialsIssued\")].reason}",
    ]);
    assert_eq!(issued, "Revoked");
    let back = devplane.kubectl(&[
        "patch",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "--type=merge",
        "-p",
        r#"{"spec":{"lifecycle":"Servicing"}}"#,
    ]);
    assert!(!back.status.success());
    assert!(
        stderr(&back).contains("Decommissioned is terminal"),
        "{}",
        stderr(&back)
    );
}

#[test]
fn a_device_waits_for_its_model_and_becomes_ready_when_it_appears() {
    let devplane = Devplane::start(&[]);
    devplane.kubectl_ok(&["create", "namespace", "lab"]);
    let device = devplane.dir.join("device.yaml");
    std::fs::write(&device, "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: probe, namespace: lab}\nspec: {modelRef: {name: probe-model}}\n").expect("write");
    devplane.kubectl_ok(&["apply", "-f", device.to_str().expect("utf-8")]);
    devplane.wait_condition(
        "ModelResolved=False",
        Some("lab"),
        &["device/probe"],
        READY_TIMEOUT,
    );
    let reason = devplane.kubectl_ok(&[
        "get",
        "device",
        "probe",
        "-n",
        "lab",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"ModelResolved\")].reason}/{.status.phase}",
    ]);
    assert_eq!(
        reason, "ModelNotFound/Planned",
        "no credentials while the model is missing"
    );
    let events = devplane.kubectl_ok(&[
        "get",
        "events",
        "-n",
        "lab",
        "-o",
        "jsonpath={range .items[*]}{.type}:{.reason}{\"\\n\"}{end}",
    ]);
    assert!(events.contains("Warning:ModelNotFound"), "{events}");
    let model = devplane.dir.join("model.yaml");
    std::fs::write(&model, "apiVersion: iot.devplane.io/v1alpha1\nkind: DeviceModel\nmetadata: {name: probe-model, namespace: lab}\nspec:\n  version: 1.0.0\n  extends: [{name: temperature, namespace: devplane-library}]\n").expect("write");
    devplane.kubectl_ok(&["apply", "-f", model.to_str().expect("utf-8")]);
    devplane.wait_ready("lab", &["device/probe"]);
    let phase = devplane.kubectl_ok(&[
        "get",
        "device",
        "probe",
        "-n",
        "lab",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(phase, "Provisioned");
}

#[test]
fn invalid_commands_are_rejected_and_valid_ones_time_out_without_a_device_answer() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(SMART_HOME);
    let write = |name: &str, service: &str, params: &str, timeout: u32| {
        let path = devplane.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, format!("apiVersion: iot.devplane.io/v1alpha1\nkind: DeviceCommand\nmetadata: {{name: {name}, namespace: smart-home}}\nspec: {{device: living-room-climate, service: {service}, params: {params}, timeoutSeconds: {timeout}}}\n")).expect("write");
        devplane.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8")]);
    };
    write("unknown", "selfDestruct", "{}", 60);
    write("bad-params", "resetTemperatureMinMax", "{force: true}", 60);
    write("valid", "reboot", "{}", 2);
    for (name, want) in [
        ("unknown", "Rejected/UnknownService"),
        ("bad-params", "Rejected/InvalidParameters"),
        ("valid", "TimedOut/Timeout"),
    ] {
        devplane.kubectl_ok(&[
            "wait",
            &format!(
                "--for=jsonpath={{.status.phase}}={}",
                want.split('/').next().unwrap_or_default()
            ),
            &format!("dcmd/{name}"),
            "-n",
            "smart-home",
            "--timeout=60s",
        ]);
        let got = devplane.kubectl_ok(&[
            "get",
            "dcmd",
            name,
            "-n",
            "smart-home",
            "-o",
            "jsonpath={.status.phase}/{.status.reason}",
        ]);
        assert_eq!(got, want, "{name}");
    }
    let immutable = devplane.kubectl(&[
        "patch",
        "dcmd",
        "valid",
        "-n",
        "smart-home",
        "--type=merge",
        "-p",
        r#"{"spec":{"service":"factoryReset"}}"#,
    ]);
    assert!(
        !immutable.status.success() && stderr(&immutable).contains("immutable"),
        "{}",
        stderr(&immutable)
    );
}

#[test]
fn credentials_rotate_with_an_overlap_window() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples_and_wait(SMART_HOME, "smart-home", &["device/living-room-climate"]);
    let password = || {
        devplane.kubectl_ok(&[
            "get",
            "secret",
            "living-room-climate-credentials",
            "-n",
            "smart-home",
            "-o",
            "jsonpath={.data.password}",
        ])
    };
    let before = password();
    devplane.kubectl_ok(&[
        "annotate",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "iot.devplane.io/rotate-credentials=1",
    ]);
    wait_until("the password to change", Duration::from_secs(30), || {
        password() != before
    });
    let previous = devplane.kubectl_ok(&[
        "get",
        "secret",
        "living-room-climate-credentials",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.data.previous-password}",
    ]);
    assert_eq!(
        previous, before,
        "the old password keeps working during the overlap"
    );
}

/// One batch of 10,000: a kill -9 of `devplane up` mid-batch, a restart, completion with
/// exactly 10,000 devices and Secrets; then deletion with policy Delete removes them all.
#[test]
fn a_ten_thousand_item_batch_survives_a_kill_and_is_deleted_with_its_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Devplane::start_in(dir.path(), &[]);
    first.apply_examples(SOLAR_SITE);
    let batch = dir.path().join("batch.yaml");
    std::fs::write(
        &batch,
        "apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {name: big, namespace: solar-farm}\nspec:\n  deletionPolicy: Delete\n  site: sunfield-2\n  template:\n    spec:\n      modelRef: {name: string-inverter}\n      attributes: {ratedPower: 10000}\n  items:\n    generate: {count: 10000, namePattern: 'big-{index:05}'}\n",
    )
    .expect("write");
    first.kubectl_ok(&["apply", "-f", batch.to_str().expect("utf-8")]);
    wait_until(
        "the batch to be under way",
        Duration::from_secs(120),
        || {
            first
                .kubectl_ok(&[
                    "get",
                    "ob",
                    "big",
                    "-n",
                    "solar-farm",
                    "-o",
                    "jsonpath={.status.created}",
                ])
                .parse::<u64>()
                .unwrap_or(0)
                >= 1000
        },
    );
    first.kill();
    let second = Devplane::start_in(dir.path(), &[]);
    second.wait_condition(
        "Complete",
        Some("solar-farm"),
        &["ob/big"],
        Duration::from_secs(600),
    );
    let summary = second.kubectl_ok(&[
        "get",
        "ob",
        "big",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.status.total}/{.status.created}/{.status.failed}",
    ]);
    assert_eq!(summary, "10000/10000/0");
    let count = |what: &str, selector: &str| {
        let out = second.kubectl(&[
            "get",
            what,
            "-n",
            "solar-farm",
            "-l",
            selector,
            "-o",
            "name",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().count()
    };
    assert_eq!(
        count("devices", "iot.devplane.io/batch=big"),
        10_000,
        "exactly 10,000 devices: none duplicated, none missing"
    );
    wait_until(
        "every device to get credentials",
        Duration::from_secs(600),
        || count("secrets", "iot.devplane.io/device") >= 10_000,
    );
    second.kubectl_ok(&["delete", "ob", "big", "-n", "solar-farm", "--wait=false"]);
    wait_until(
        "the batch's devices to be deleted",
        Duration::from_secs(600),
        || count("devices", "iot.devplane.io/batch=big") == 0,
    );
    wait_until(
        "their Secrets to be deleted",
        Duration::from_secs(600),
        || {
            second
                .kubectl_ok(&["get", "secrets", "-n", "solar-farm", "-o", "name"])
                .lines()
                .filter(|l| l.contains("big-"))
                .count()
                == 0
        },
    );
}

#[test]
fn a_batch_with_policy_retain_leaves_its_devices() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(SOLAR_SITE);
    let batch = devplane.dir.join("batch.yaml");
    std::fs::write(
        &batch,
        "apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {name: keep, namespace: solar-farm}\nspec:\n  deletionPolicy: Retain\n  template:\n    spec:\n      modelRef: {name: string-inverter}\n      attributes: {ratedPower: 10000}\n  items:\n    csv: |\n      name,serialNumber,ratedPower\n      keep-a,SN-A,20000\n      keep-b,SN-B,lots\n      keep-c,SN-C,30000\n",
    )
    .expect("write");
    devplane.kubectl_ok(&["apply", "-f", batch.to_str().expect("utf-8")]);
    devplane.wait_condition("Complete", Some("solar-farm"), &["ob/keep"], READY_TIMEOUT);
    let summary = devplane.kubectl_ok(&[
        "get",
        "ob",
        "keep",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.status.total}/{.status.created}/{.status.failed}/{.status.failures[0].item}",
    ]);
    assert_eq!(summary, "3/2/1/#2", "the row with a bad number fails alone");
    let rated = devplane.kubectl_ok(&[
        "get",
        "device",
        "keep-c",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.spec.attributes.ratedPower}",
    ]);
    assert_eq!(rated, "30000", "CSV cells are typed by the model");
    devplane.kubectl_ok(&["delete", "ob", "keep", "-n", "solar-farm", "--timeout=60s"]);
    let left = devplane.kubectl_ok(&[
        "get",
        "devices",
        "-n",
        "solar-farm",
        "-l",
        "iot.devplane.io/batch=keep",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}:{.metadata.ownerReferences}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        left.trim(),
        "keep-a:\nkeep-c:",
        "the devices stay, no longer owned"
    );
}

#[test]
fn a_batch_leaves_a_device_an_operator_moved_on_and_still_takes_new_items() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(SOLAR_SITE);
    let batch = devplane.dir.join("batch.yaml");
    let write = |rows: &str| {
        std::fs::write(
            &batch,
            format!("apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {{name: moved, namespace: solar-farm}}\nspec:\n  template:\n    spec:\n      modelRef: {{name: string-inverter}}\n      attributes: {{ratedPower: 10000}}\n  items:\n    csv: |\n      name,serialNumber\n{rows}"),
        )
        .expect("write");
        devplane.kubectl_ok(&["apply", "-f", batch.to_str().expect("utf-8")]);
    };
    let counts = || {
        devplane.kubectl_ok(&[
            "get",
            "ob",
            "moved",
            "-n",
            "solar-farm",
            "-o",
            "jsonpath={.status.total}/{.status.created}/{.status.failed}",
        ])
    };
    write("      moved-a,SN-A\n      moved-b,SN-B\n");
    wait_until("the batch to create both", READY_TIMEOUT, || {
        counts() == "2/2/0"
    });
    // The documented way to retire a device: the field the batch set now has another owner.
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "moved-a",
        "-n",
        "solar-farm",
        "--type=merge",
        "-p",
        r#"{"spec":{"lifecycle":"Decommissioned"}}"#,
    ]);
    write("      moved-a,SN-A\n      moved-b,SN-B\n      moved-c,SN-C\n");
    wait_until("the batch to take the new item", READY_TIMEOUT, || {
        counts() == "3/3/0"
    });
    let lifecycle = devplane.kubectl_ok(&[
        "get",
        "device",
        "moved-a",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.spec.lifecycle}",
    ]);
    assert_eq!(
        lifecycle, "Decommissioned",
        "the batch did not take it back"
    );
}

#[test]
fn devplane_up_serves_the_controllers_metrics_on_its_admin_endpoint() {
    let devplane = Devplane::start(&[]);
    devplane.kubectl_ok(&["apply", "-f", "examples/00-namespaces.yaml"]);
    devplane.kubectl_ok(&["apply", "-f", "examples/smart-home.yaml"]);
    devplane.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "device",
        "--all",
        "-n",
        "smart-home",
        "--timeout=60s",
    ]);
    let metrics = devplane.metrics();
    let reconciles = metrics
        .lines()
        .find(|l| l.starts_with("devplane_reconciles_total{controller=\"device\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reconciles >= 1.0, "{metrics}");
    assert!(metrics.contains("devplane_leader 1"), "{metrics}");
    // Settled: nothing waits for a reconcile (the gauge counts what watch events queued).
    wait_until("an empty device queue", Duration::from_secs(30), || {
        devplane
            .metrics()
            .contains("devplane_reconcile_queue_depth{controller=\"device\"} 0")
    });
    // The front door's counters are on the same endpoint.
    assert!(metrics.contains("devplane_frontdoor_"), "{metrics}");
}

/// The controllers open one watch per kind they need (shared by every controller that needs
/// it), and they watch only devplane's own Secrets, never all the Secrets of the cluster.
#[test]
fn the_controllers_watch_each_kind_once_and_only_devplanes_secrets() {
    let devplane = Devplane::start(&["--no-frontdoor"]);
    let kinds = [
        ("", "secrets", "app.kubernetes.io/managed-by=devplane"),
        ("iot.devplane.io", "applications", ""),
        ("iot.devplane.io", "devicecommands", ""),
        ("iot.devplane.io", "devicemodels", ""),
        ("iot.devplane.io", "devices", ""),
        ("iot.devplane.io", "gateways", ""),
        ("iot.devplane.io", "onboardingbatches", ""),
        ("iot.devplane.io", "provisioningpolicies", ""),
    ];
    let watches = || -> Vec<String> {
        devplane
            .metrics()
            .lines()
            .filter(|l| l.starts_with("apiserver_registered_watchers{"))
            .map(str::to_string)
            .collect()
    };
    wait_until("every controller watch", Duration::from_secs(30), || {
        watches().len() >= kinds.len()
    });
    let expected: Vec<String> = kinds
        .iter()
        .map(|(group, resource, selector)| {
            format!(
                "apiserver_registered_watchers{{group=\"{group}\",resource=\"{resource}\",selector=\"{selector}\"}} 1"
            )
        })
        .collect();
    assert_eq!(watches(), expected);
}

/// Invalid input is refused once, logged with its cause, and not retried hot: the next attempt
/// waits minutes. A device whose credentials the API refuses (an operator made its Secret
/// immutable, then asked for a rotation) is logged with the server's own message. A device
/// whose credentials' name a Secret of someone else's already has is refused without
/// touching that Secret, and deleting the device leaves it in place.
#[test]
fn invalid_input_is_logged_with_the_servers_message_and_not_retried_hot() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples_and_wait(SMART_HOME, "smart-home", &["devicemodel/thermo-hygrometer"]);
    let in_smart_home = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["-n", "smart-home"]);
        devplane.kubectl_ok(&args)
    };
    in_smart_home(&[
        "create",
        "secret",
        "generic",
        "squatted-credentials",
        "--from-literal=password=not-devplanes",
    ]);
    for name in ["sealed", "squatted"] {
        devplane.apply_yaml(&format!(
            "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {{name: {name}, namespace: smart-home}}\nspec: {{modelRef: {{name: thermo-hygrometer}}}}\n"
        ));
    }
    devplane.wait_condition(
        "CredentialsIssued",
        Some("smart-home"),
        &["device/sealed"],
        READY_TIMEOUT,
    );
    in_smart_home(&[
        "patch",
        "secret",
        "sealed-credentials",
        "-p",
        r#"{"immutable":true}"#,
    ]);
    in_smart_home(&[
        "annotate",
        "device",
        "sealed",
        "iot.devplane.io/rotate-credentials=1",
    ]);
    let refusals = |name: &str| -> Vec<String> {
        devplane
            .log_text()
            .lines()
            .filter(|l| {
                l.contains("reconcile refused as invalid")
                    && l.contains(&format!("object=smart-home/{name} "))
            })
            .map(str::to_string)
            .collect()
    };
    wait_until("both refusals", Duration::from_secs(30), || {
        !refusals("sealed").is_empty() && !refusals("squatted").is_empty()
    });
    let sealed = refusals("sealed").remove(0);
    assert!(
        sealed.contains(
            "sealed-credentials\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
        ) && sealed.contains("code: 422"),
        "the server's message is in the log: {sealed}"
    );
    let squatted = refusals("squatted").remove(0);
    assert!(
        squatted.contains(
            "Secret squatted-credentials exists and is not the credentials devplane issued to this Device"
        ),
        "{squatted}"
    );
    // A window in which a hot retry (every few seconds) would show.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(refusals("sealed").len(), 1, "{:#?}", refusals("sealed"));
    assert_eq!(refusals("squatted").len(), 1, "{:#?}", refusals("squatted"));
    // Deleting the device revokes only credentials of its own: the Secret that merely has
    // their name stays, as it was.
    in_smart_home(&["delete", "device", "squatted", "--timeout=60s"]);
    let kept = in_smart_home(&[
        "get",
        "secret",
        "squatted-credentials",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(
        kept, "bm90LWRldnBsYW5lcw==",
        "the squatting Secret is untouched"
    );
}

#[test]
fn a_device_that_moves_to_another_gateway_leaves_the_old_count_at_once() {
    // Without the front door, whose status writes on gateways would trigger them too.
    let devplane = Devplane::start(&["--no-frontdoor"]);
    devplane.apply_examples(DATALOGGER_GATEWAY);
    devplane.apply_yaml(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Gateway
metadata: {name: spare-logger, namespace: metering}
spec:
  modelRef: {name: modbus-datalogger}
  protocols: [mqtt]
"#,
    );
    let count = |gateway: &str| {
        devplane.kubectl_ok(&[
            "get",
            "gw",
            gateway,
            "-n",
            "metering",
            "-o",
            "jsonpath={.status.subDevices}",
        ])
    };
    let move_to = |gateway: &str| {
        devplane.kubectl_ok(&[
            "patch",
            "device",
            "auxiliary-meter",
            "-n",
            "metering",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"connection":{{"gatewayRef":{{"name":"{gateway}"}}}}}}}}"#),
        ]);
    };
    wait_until("the spare gateway to count none", READY_TIMEOUT, || {
        count("spare-logger") == "0"
    });
    move_to("spare-logger");
    wait_until(
        "the spare gateway to count the meter",
        Duration::from_secs(30),
        || count("spare-logger") == "1",
    );
    // Its status write triggers it once more; once that is done, only the device's move
    // can trigger it.
    wait_until(
        "the gateway controller to be idle",
        Duration::from_secs(30),
        || {
            let metrics = devplane.metrics();
            metrics.contains("devplane_reconcile_queue_depth{controller=\"gateway\"} 0")
                && metrics.contains("devplane_reconciles_in_flight{controller=\"gateway\"} 0")
        },
    );
    // Back: the spare gateway is reconciled for the device that left it (not at the next
    // resync, ten minutes on).
    move_to("substation-logger");
    wait_until(
        "the spare gateway to count none again",
        Duration::from_secs(30),
        || count("spare-logger") == "0",
    );
}
