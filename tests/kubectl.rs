//! Real kubectl (the dispatcher's 1.33, and 1.32 down to 1.27 called directly) against
//! `devplane up` as a separate process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Devplane, EVERY_EXAMPLE, stderr, stdout, wait_until};

/// Apply the examples the way an operator would: client-side, strict validation (the default).
#[test]
fn kubectl_apply_creates_the_examples_and_a_second_apply_changes_nothing() {
    let devplane = Devplane::start(&[]);
    let version = devplane.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"33\""), "{version}");
    let created = devplane.apply_examples(EVERY_EXAMPLE);
    assert!(
        created.contains("device.iot.devplane.io/living-room-climate created"),
        "{created}"
    );
    let again = devplane.kubectl_ok(&["apply", "-f", "examples/"]);
    assert!(
        again.contains("device.iot.devplane.io/living-room-climate unchanged"),
        "{again}"
    );
    assert!(!again.contains("configured"), "nothing changed: {again}");
    let server_side = devplane.kubectl_ok(&["apply", "--server-side", "-f", "examples/"]);
    assert!(server_side.contains("serverside-applied"), "{server_side}");
}

/// A GitOps tool applies the shipped library and the examples server-side, again and again:
/// values the server already holds (numbers spelled differently, items the controllers left
/// alone) co-own and never conflict, before and after the controllers wrote status. (Not `-R`:
/// `examples/gitops/` is a kustomize tree, applied with `-k`.)
#[test]
fn server_side_apply_of_the_library_and_examples_never_conflicts() {
    let devplane = Devplane::start(&[]);
    let apply = || {
        let output = devplane.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            "manifests/library/",
            "-f",
            "examples/",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    assert!(
        apply().contains("devicemodel.iot.devplane.io/three-phase-measurement serverside-applied")
    );
    apply();
    devplane.wait_ready("solar-farm", &["devicemodel/string-inverter"]);
    devplane.wait_ready("smart-home", &["device/living-room-climate"]);
    apply();
}

#[test]
fn kubectl_get_shows_printer_columns_categories_and_yaml() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let table = devplane.kubectl_ok(&["get", "devices", "-n", "metering"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "MODEL", "PHASE", "CONNECTION", "LAST SEEN", "AGE"] {
        assert!(header.contains(column), "{column} in {header}");
    }
    assert!(
        table.contains("feeder-1-meter") && table.contains("energy-meter"),
        "{table}"
    );
    let wide = devplane.kubectl_ok(&["get", "dev", "-n", "metering", "-o", "wide"]);
    assert!(
        wide.contains("GATEWAY") && wide.contains("substation-logger"),
        "{wide}"
    );
    let all = devplane.kubectl_ok(&["get", "devplane", "-A"]);
    for name in [
        "devicemodel.iot.devplane.io/string-inverter",
        "gateway.iot.devplane.io/substation-logger",
        "onboardingbatch.iot.devplane.io/block-a-inverters",
        "devicecommand.iot.devplane.io/curtail-inverter-07",
    ] {
        assert!(all.contains(name), "{name} in get devplane:\n{all}");
    }
    let yaml = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "yaml",
    ]);
    assert!(
        yaml.contains("kind: Device")
            && yaml.contains("lifecycle: Servicing")
            && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let resources = devplane.kubectl_ok(&["api-resources"]);
    for line in [
        "devices",
        "dev",
        "iot.devplane.io/v1alpha1",
        "devicemodels",
        "leases",
        "customresourcedefinitions",
    ] {
        assert!(
            resources.contains(line),
            "{line} in api-resources:\n{resources}"
        );
    }
}

#[test]
fn kubectl_get_watch_receives_a_change() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let mut watch = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(devplane.kubeconfig())
        .args([
            "get",
            "devices",
            "-n",
            "smart-home",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w starts");
    let out = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the initial table");
    assert!(first.contains("EVENT") || first.contains("NAME"), "{first}");
    // Wait for the initial row, then change the device.
    let mut seen = String::new();
    while !seen.contains("living-room-climate") {
        seen = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the initial row");
    }
    devplane.kubectl_ok(&[
        "label",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "floor=ground",
    ]);
    let changed = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch event after the change");
    assert!(
        changed.contains("MODIFIED") && changed.contains("living-room-climate"),
        "{changed}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn kubectl_describe_shows_events_of_the_object() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let uid = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"lrc.1","namespace":"smart-home"}},
            "involvedObject":{{"apiVersion":"iot.devplane.io/v1alpha1","kind":"Device","name":"living-room-climate","namespace":"smart-home","uid":"{uid}"}},
            "reason":"CredentialsIssued","message":"credentials issued to the device","type":"Normal",
            "firstTimestamp":"2026-11-25T10:00:00Z","lastTimestamp":"2026-11-25T10:00:00Z","count":1,"source":{{"component":"devplane"}}}}"#
    );
    let path = devplane.dir.join("event.json");
    std::fs::write(&path, event).expect("write event");
    devplane.kubectl_ok(&["create", "-f", path.to_str().expect("utf-8")]);
    let described = devplane.kubectl_ok(&[
        "describe",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
    ]);
    assert!(
        described.contains("CredentialsIssued")
            && described.contains("credentials issued to the device"),
        "{described}"
    );
    // The same Event through events.k8s.io/v1.
    let v1 = devplane.kubectl_ok(&[
        "get",
        "events.v1.events.k8s.io",
        "lrc.1",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.note}",
    ]);
    assert_eq!(v1, "credentials issued to the device");
}

#[test]
fn kubectl_explain_prints_field_descriptions() {
    let devplane = Devplane::start(&[]);
    let explained = devplane.kubectl_ok(&["explain", "device.spec"]);
    assert!(
        explained.contains("modelRef")
            && explained.contains("The DeviceModel this device conforms to"),
        "{explained}"
    );
    let lifecycle = devplane.kubectl_ok(&["explain", "device.spec.lifecycle"]);
    assert!(
        lifecycle.contains("Desired lifecycle stage") && lifecycle.contains("ENUM"),
        "{lifecycle}"
    );
}

#[test]
fn kubectl_diff_and_server_dry_run_store_nothing() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let unchanged = devplane.kubectl(&["diff", "-f", "examples/smart-home.yaml"]);
    assert_eq!(
        unchanged.status.code(),
        Some(0),
        "no diff: {}{}",
        stdout(&unchanged),
        stderr(&unchanged)
    );
    let changed_file = devplane.dir.join("changed.yaml");
    let text = std::fs::read_to_string(crate::support::repo().join("examples/smart-home.yaml"))
        .expect("example");
    std::fs::write(
        &changed_file,
        text.replace("reportIntervalSeconds: 600", "reportIntervalSeconds: 900"),
    )
    .expect("write");
    let diff = devplane.kubectl(&["diff", "-f", changed_file.to_str().expect("utf-8")]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "a diff: {}{}",
        stdout(&diff),
        stderr(&diff)
    );
    assert!(
        stdout(&diff).contains("+    reportIntervalSeconds: 900"),
        "{}",
        stdout(&diff)
    );
    let before = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let dry = devplane.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        changed_file.to_str().expect("utf-8"),
    ]);
    assert!(dry.contains("(server dry run)"), "{dry}");
    let after = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.metadata.resourceVersion}/{.spec.desired.reportIntervalSeconds}",
    ]);
    assert_eq!(after, format!("{before}/600"), "the dry run stored nothing");
    let new_file = devplane.dir.join("new.yaml");
    std::fs::write(&new_file, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry, namespace: default}\ndata: {a: b}\n").expect("write");
    devplane.kubectl_ok(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        new_file.to_str().expect("utf-8"),
    ]);
    let missing = devplane.kubectl(&["get", "configmap", "dry"]);
    assert!(!missing.status.success(), "a dry-run create stores nothing");
}

#[test]
fn kubectl_wait_returns_when_the_condition_is_set() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let kubeconfig = devplane.kubeconfig();
    let waiter = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "wait",
            "--for=condition=Ready",
            "device/living-room-climate",
            "-n",
            "smart-home",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait starts");
    // Set the condition only once kubectl waits on a watch, so the wait really waits.
    wait_until(
        "kubectl wait to watch the device",
        Duration::from_secs(20),
        || {
            devplane
                .log_text()
                .lines()
                .any(|l| l.contains("namespaces/smart-home/devices") && l.contains("watch=true"))
        },
    );
    let generation = devplane.kubectl_ok(&[
        "get",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    let patch = format!(
        r#"{{"status":{{"observedGeneration":{generation},"conditions":[{{"type":"Ready","status":"True","reason":"Test","message":"set by the test","lastTransitionTime":"2026-11-25T10:00:00Z","observedGeneration":{generation}}}]}}}}"#
    );
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    let output = waiter.wait_with_output().expect("kubectl wait ends");
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("condition met"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn kubectl_delete_honours_finalizers_and_collects_owned_objects() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let uid = devplane.kubectl_ok(&[
        "get",
        "device",
        "met-mast-01",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: met-mast-01-settings\n  namespace: solar-farm\n  ownerReferences:\n  - apiVersion: iot.devplane.io/v1alpha1\n    kind: Device\n    name: met-mast-01\n    uid: {uid}\ndata: {{interval: \"60\"}}\n"
    );
    let path = devplane.dir.join("owned.yaml");
    std::fs::write(&path, owned).expect("write");
    devplane.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8")]);
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "met-mast-01",
        "-n",
        "solar-farm",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    let deleted = devplane.kubectl(&[
        "delete",
        "device",
        "met-mast-01",
        "-n",
        "solar-farm",
        "--wait=false",
    ]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let held = devplane.kubectl_ok(&[
        "get",
        "device",
        "met-mast-01",
        "-n",
        "solar-farm",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!held.is_empty(), "the finalizer holds the device");
    devplane.kubectl_ok(&[
        "patch",
        "device",
        "met-mast-01",
        "-n",
        "solar-farm",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    wait_until("the device to go", Duration::from_secs(20), || {
        !devplane
            .kubectl(&["get", "device", "met-mast-01", "-n", "solar-farm"])
            .status
            .success()
    });
    wait_until(
        "the owned ConfigMap to be collected",
        Duration::from_secs(20),
        || {
            !devplane
                .kubectl(&[
                    "get",
                    "configmap",
                    "met-mast-01-settings",
                    "-n",
                    "solar-farm",
                ])
                .status
                .success()
        },
    );
    // A plain delete waits for the object to go and returns.
    let gone = devplane.kubectl_ok(&[
        "delete",
        "device",
        "living-room-climate",
        "-n",
        "smart-home",
        "--timeout=30s",
    ]);
    assert!(gone.contains("deleted"), "{gone}");
    let warnings = devplane.reconcile_warnings();
    assert!(
        warnings.is_empty(),
        "deletions log no warning: {warnings:#?}"
    );
}

#[test]
fn invalid_objects_are_refused_with_the_field_named() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let write = |name: &str, text: &str| {
        let path = devplane.dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_string()
    };
    let wrong_type = write(
        "wrong-type.yaml",
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: bad, namespace: smart-home}\nspec: {modelRef: {name: 5}}\n",
    );
    let out = devplane.kubectl(&["apply", "-f", &wrong_type]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.modelRef.name")
            && stderr(&out).contains("must be of type string"),
        "{}",
        stderr(&out)
    );
    let unknown = write(
        "unknown.yaml",
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: bad, namespace: smart-home}\nspec: {modelRef: {name: m}, colour: red}\n",
    );
    let out = devplane.kubectl(&["apply", "-f", &unknown]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown field \"spec.colour\""),
        "{}",
        stderr(&out)
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
        stderr(&back).contains("spec.lifecycle")
            && stderr(&back).contains("Decommissioned is terminal"),
        "{}",
        stderr(&back)
    );
}

/// kubectl 1.27 and 1.28 read `/openapi/v2` (client-go's `OpenAPISchema()`) before `create`,
/// client-side `apply` and `explain`; later versions read `/openapi/v3`, and every version
/// reads v2 for `explain --output=plaintext-openapiv2`.
#[test]
fn older_kubectl_versions_work_too() {
    let binaries = [
        "kubectl.1.32",
        "kubectl.1.31",
        "kubectl.1.30",
        "kubectl.1.29",
        "kubectl.1.28",
        "kubectl.1.27",
    ];
    for binary in binaries {
        let devplane = Devplane::start(&[]);
        let run = |args: &[&str]| {
            let output = devplane.kubectl_binary(binary, args);
            (output.status.code(), stdout(&output), stderr(&output))
        };
        let (code, _, err) = run(&[
            "create",
            "-f",
            "examples/00-namespaces.yaml",
            "-f",
            "examples/smart-home.yaml",
        ]);
        assert_eq!(code, Some(0), "{binary} create: {err}");
        let (code, _, err) = run(&["apply", "-f", "examples/"]);
        assert_eq!(code, Some(0), "{binary} apply: {err}");
        let (_, table, _) = run(&["get", "devices", "-A"]);
        assert!(
            table.contains("MODEL") && table.contains("living-room-climate"),
            "{binary} get: {table}"
        );
        let (_, all, _) = run(&["get", "devplane", "-A"]);
        assert!(
            all.contains("gateway.iot.devplane.io/substation-logger"),
            "{binary} get devplane: {all}"
        );
        let (_, yaml, _) = run(&[
            "get",
            "gateway",
            "substation-logger",
            "-n",
            "metering",
            "-o",
            "yaml",
        ]);
        assert!(yaml.contains("kind: Gateway"), "{binary} -o yaml: {yaml}");
        let (code, _, err) = run(&["apply", "--server-side", "-f", "examples/smart-home.yaml"]);
        assert_eq!(code, Some(0), "{binary} apply --server-side: {err}");
        let (code, out, err) = run(&["diff", "-f", "examples/smart-home.yaml"]);
        assert_eq!(code, Some(0), "{binary} diff: {out}{err}");
        let (code, _, err) = run(&[
            "apply",
            "--dry-run=server",
            "-f",
            "examples/smart-home.yaml",
        ]);
        assert_eq!(code, Some(0), "{binary} dry run: {err}");
        let subdevices = "Which devices the gateway may act for";
        let (_, explained, _) = run(&["explain", "gateway.spec.subDevices"]);
        assert!(
            explained.contains("selector") && explained.contains(subdevices),
            "{binary} explain: {explained}"
        );
        let (_, explained, _) = run(&[
            "explain",
            "gateway.spec.subDevices",
            "--output=plaintext-openapiv2",
        ]);
        assert!(
            explained.contains("selector") && explained.contains(subdevices),
            "{binary} explain from /openapi/v2: {explained}"
        );
        let (_, resources, _) = run(&["api-resources", "--api-group=iot.devplane.io"]);
        assert!(
            resources.contains("onboardingbatches"),
            "{binary} api-resources: {resources}"
        );
        let bad = devplane.dir.join("bad.yaml");
        std::fs::write(&bad, "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: bad, namespace: smart-home}\nspec: {modelRef: {name: m}, colour: red}\n").expect("write");
        let (code, _, err) = run(&["apply", "-f", bad.to_str().expect("utf-8")]);
        assert_ne!(code, Some(0));
        assert!(
            err.contains("unknown field \"spec.colour\""),
            "{binary} strict validation: {err}"
        );
        let (code, out, err) = run(&[
            "delete",
            "device",
            "living-room-climate",
            "-n",
            "smart-home",
            "--timeout=30s",
        ]);
        assert_eq!(code, Some(0), "{binary} delete: {out}{err}");
    }
}

#[test]
fn foreground_and_orphan_deletion_treat_dependents_as_asked() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    let owned_by = |owner: &str, name: &str| {
        let uid = devplane.kubectl_ok(&[
            "get",
            "device",
            owner,
            "-n",
            "metering",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: metering\n  ownerReferences:\n  - {{apiVersion: iot.devplane.io/v1alpha1, kind: Device, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}\n"
        );
        let path = devplane.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write");
        devplane.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8")]);
    };
    owned_by("feeder-1-meter", "feeder-1-config");
    owned_by("feeder-2-meter", "feeder-2-config");
    devplane.kubectl_ok(&[
        "delete",
        "device",
        "feeder-1-meter",
        "-n",
        "metering",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(
        !devplane
            .kubectl(&["get", "configmap", "feeder-1-config", "-n", "metering"])
            .status
            .success(),
        "foreground deleted the dependent first"
    );
    devplane.kubectl_ok(&[
        "delete",
        "device",
        "feeder-2-meter",
        "-n",
        "metering",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    let orphan = devplane.kubectl_ok(&[
        "get",
        "configmap",
        "feeder-2-config",
        "-n",
        "metering",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(
        orphan.trim().is_empty(),
        "the orphan lost its owner reference: {orphan}"
    );
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let devplane = Devplane::start(&[]);
    let (code, body) = devplane.curl("GET", "/api/v1/namespaces", None, None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = devplane.curl("GET", "/api/v1/namespaces", Some("wrong-token"), None);
    assert_eq!(code, 401);
    let (code, _) = devplane.curl("GET", "/api/v1/namespaces", Some(&devplane.token()), None);
    assert_eq!(code, 200);
    let (code, _) = devplane.curl("GET", "/version", None, None);
    assert_eq!(
        code, 200,
        "version is public (the kubectl dispatcher asks it without a token)"
    );
}

#[test]
fn secret_data_never_reaches_the_log() {
    let mut devplane = Devplane::start(&[]);
    devplane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "probe",
        "--from-literal=password=UnmistakableSecretValue42",
    ]);
    let shown = devplane.kubectl_ok(&["get", "secret", "probe", "-o", "jsonpath={.data.password}"]);
    assert_eq!(shown, "VW5taXN0YWthYmxlU2VjcmV0VmFsdWU0Mg==");
    devplane.stop();
    let log = devplane.log_text();
    assert!(!log.is_empty());
    assert!(
        !log.contains("UnmistakableSecretValue42")
            && !log.contains("VW5taXN0YWthYmxlU2VjcmV0VmFsdWU0Mg"),
        "secret in log"
    );
}

#[test]
fn deleting_a_namespace_deletes_everything_in_it() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    devplane.kubectl_ok(&["create", "configmap", "c1", "-n", "metering"]);
    let out = devplane.kubectl_ok(&["delete", "namespace", "metering", "--timeout=60s"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(
        !devplane
            .kubectl(&["get", "namespace", "metering"])
            .status
            .success(),
        "the namespace is gone"
    );
    let left = devplane.kubectl_ok(&[
        "get",
        "devices,gateways,devicemodels,configmaps",
        "-n",
        "metering",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "nothing left: {left}");
    let warnings = devplane.reconcile_warnings();
    assert!(
        warnings.is_empty(),
        "a namespace's deletion logs no warning: {warnings:#?}"
    );
    let refused = devplane.kubectl(&["delete", "namespace", "default"]);
    assert!(
        !refused.status.success() && stderr(&refused).contains("may not be deleted"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn deleting_a_crd_deletes_its_custom_resources_and_its_api() {
    let devplane = Devplane::start(&[]);
    devplane.apply_examples(EVERY_EXAMPLE);
    devplane.kubectl_ok(&[
        "delete",
        "crd",
        "devicecommands.iot.devplane.io",
        "--timeout=60s",
    ]);
    let gone = devplane.kubectl(&["get", "devicecommands", "-A"]);
    assert!(!gone.status.success(), "the kind is no longer served");
    // kubectl either re-discovered (no such type) or used its cached discovery (404 on list).
    let message = stderr(&gone);
    assert!(
        message.contains("doesn't have a resource type")
            || message.contains("could not find the requested resource"),
        "{message}"
    );
    devplane.kubectl_ok(&["apply", "-f", "crds/devicecommands.iot.devplane.io.yaml"]);
    let empty = devplane.kubectl_ok(&["get", "devicecommands", "-A", "-o", "name"]);
    assert!(empty.trim().is_empty(), "its objects went with it: {empty}");
}

#[test]
fn generate_name_and_delete_collection_work() {
    let devplane = Devplane::start(&[]);
    let path = devplane.dir.join("generated.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: gen-, labels: {batch: x}}\n",
    )
    .expect("write");
    for _ in 0..3 {
        let created = devplane.kubectl_ok(&["create", "-f", path.to_str().expect("utf-8")]);
        assert!(created.starts_with("configmap/gen-"), "{created}");
    }
    let names = devplane.kubectl_ok(&["get", "configmaps", "-l", "batch=x", "-o", "name"]);
    assert_eq!(names.lines().count(), 3, "{names}");
    devplane.kubectl_ok(&["delete", "configmaps", "-l", "batch=x"]);
    let left = devplane.kubectl_ok(&["get", "configmaps", "-l", "batch=x", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}
