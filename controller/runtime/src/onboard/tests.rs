//! `devplane onboard` against the real API server in process, with a simulated controller, and
//! its pure parts (file checks, rendering, the done test) on their own.

use std::sync::Arc;

use devplane_apiserver::{ApiServer, ApiServerConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::json;

use super::*;

const BATCH: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata:
  name: inverters
spec:
  site: sunfield-1
  template:
    spec:
      modelRef: {name: string-inverter}
  items:
    generate: {count: 10, namePattern: "inv-{index:02}"}
"#;

async fn in_process() -> (ApiServer, kube::Client) {
    let store = devplane_store::open("memory://")
        .await
        .expect("memory store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("API server");
    crate::up::install(&server).await.expect("CRDs installed");
    server.spawn_background();
    let client = kube::Client::new(
        server.in_process_router(crate::up::admin_identity()),
        "default",
    );
    (server, client)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A writer the test can read back after the command is done with it.
#[derive(Clone, Default)]
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run the command on `yaml` with the in-process client; returns the outcome, stdout, stderr.
async fn onboard_text(
    client: kube::Client,
    yaml: &str,
    wait: bool,
    timeout: Duration,
    style: ProgressStyle,
) -> (Result<OnboardOutcome, OnboardError>, String, String) {
    let file = PathBuf::from("batch.yaml");
    let args = OnboardArgs {
        wait,
        timeout,
        ..OnboardArgs::new(&file)
    };
    let documents = parse_batches(&file, yaml).expect("a valid file");
    let (mut out, mut err) = (Captured::default(), Captured::default());
    let (out_text, err_text) = (out.clone(), err.clone());
    let mut console = Console {
        out: &mut out,
        err: &mut err,
        style,
    };
    let outcome = onboard(client, &args, documents, &mut console).await;
    (outcome, out_text.text(), err_text.text())
}

fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    serde_json::from_value(json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }))
    .expect("a condition")
}

/// Stand-in for the OnboardingBatch controller: waits for the batch, then reports `steps` as its
/// status one after another (server-side apply on `/status`).
fn simulate_controller(
    client: kube::Client,
    name: &'static str,
    steps: Vec<serde_json::Value>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<OnboardingBatch> = Api::default_namespaced(client);
        let batch = loop {
            if let Some(batch) = api.get_opt(name).await.expect("read the batch") {
                break batch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let generation = batch.metadata.generation.expect("a generation");
        for mut status in steps {
            if status["observedGeneration"] == json!("current") {
                status["observedGeneration"] = json!(generation);
            }
            api.patch_status(
                name,
                &PatchParams::apply("test-controller").force(),
                &Patch::Apply(json!({
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "status": status,
                })),
            )
            .await
            .expect("report the status");
            // Pace the steps so the watcher sees them one by one.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test]
async fn onboard_wait_follows_the_controller_to_completion_and_reports_the_failures() {
    let (_server, client) = in_process().await;
    let progressing = condition("Progressing", "True", "Creating");
    let complete = condition("Complete", "True", "AllProcessed");
    let controller = simulate_controller(
        client.clone(),
        "inverters",
        vec![
            // Complete for an older generation: not done yet.
            json!({"observedGeneration": 0, "total": 10, "created": 10, "conditions": [complete]}),
            json!({"observedGeneration": "current", "total": 10, "created": 4, "failed": 0,
                   "conditions": [progressing]}),
            json!({"observedGeneration": "current", "total": 10, "created": 7, "failed": 1,
                   "failures": [{"item": "inv-03", "reason": "serial number already in use"}],
                   "conditions": [progressing]}),
            json!({"observedGeneration": "current", "total": 10, "created": 9, "failed": 1,
                   "failures": [{"item": "inv-03", "reason": "serial number already in use"}],
                   "conditions": [condition("Progressing", "False", "Done"), complete]}),
        ],
    );

    let (outcome, out, err) = within(
        "onboard --wait",
        onboard_text(
            client.clone(),
            BATCH,
            true,
            Duration::from_secs(15),
            ProgressStyle::Bar,
        ),
    )
    .await;
    let outcome = outcome.expect("onboard");
    within("the controller's last step", controller)
        .await
        .expect("the simulated controller");

    assert_eq!(outcome.exit_code(), 1, "some items failed");
    let [batch] = outcome.batches.as_slice() else {
        panic!("one batch: {outcome:?}");
    };
    assert_eq!(batch.completion, Completion::SomeFailed);
    assert_eq!(
        batch.counts,
        Counts {
            total: 10,
            created: 9,
            failed: 1
        }
    );
    assert_eq!(batch.failures.len(), 1);
    assert!(
        out.contains("onboardingbatch.iot.devplane.io/inverters applied"),
        "{out}"
    );
    assert!(out.contains("complete with failures"), "{out}");
    assert!(out.contains("total 10, created 9, failed 1"), "{out}");
    assert!(out.contains("devices/s"), "{out}");
    assert!(
        out.contains("inv-03: serial number already in use"),
        "{out}"
    );
    assert!(err.contains('\r'), "the bar is redrawn in place: {err:?}");
    assert!(err.ends_with("9/10 created, 1 failed\n"), "{err:?}");

    let applied = Api::<OnboardingBatch>::default_namespaced(client)
        .get("inverters")
        .await
        .expect("the batch");
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert!(managers.iter().any(|m| m == FIELD_MANAGER), "{managers:?}");
}

#[tokio::test]
async fn onboard_wait_exits_0_when_every_item_was_created() {
    let (_server, client) = in_process().await;
    let controller = simulate_controller(
        client.clone(),
        "inverters",
        vec![
            json!({"observedGeneration": "current", "total": 10, "created": 10,
                    "conditions": [condition("Complete", "True", "AllProcessed")]}),
        ],
    );
    let (outcome, out, _) = within(
        "onboard --wait",
        onboard_text(
            client,
            BATCH,
            true,
            Duration::from_secs(15),
            ProgressStyle::Lines {
                every: Duration::from_millis(10),
            },
        ),
    )
    .await;
    within("the controller", controller)
        .await
        .expect("the simulated controller");
    let outcome = outcome.expect("onboard");
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.batches[0].completion, Completion::Succeeded);
    assert!(out.contains(": complete\n"), "{out}");
    assert!(!out.contains("failures"), "{out}");
}

#[tokio::test]
async fn onboard_wait_times_out_with_exit_2_and_progress_lines_when_no_controller_answers() {
    let (_server, client) = in_process().await;
    let (outcome, out, err) = within(
        "onboard --wait",
        onboard_text(
            client,
            BATCH,
            true,
            Duration::from_millis(400),
            ProgressStyle::Lines {
                every: Duration::from_millis(100),
            },
        ),
    )
    .await;
    let outcome = outcome.expect("onboard");
    assert_eq!(outcome.exit_code(), 2);
    assert_eq!(outcome.batches[0].completion, Completion::TimedOut);
    assert!(out.contains("timed out before completion"), "{out}");
    assert!(
        err.lines()
            .any(|line| line.starts_with("inverters: waiting for the controller")),
        "a progress line per period: {err:?}"
    );
    assert!(!err.contains('\r'), "no bar outside a terminal: {err:?}");
}

#[tokio::test]
async fn onboard_without_wait_applies_every_batch_and_exits_0() {
    let (_server, client) = in_process().await;
    let two = format!(
        "{BATCH}---\n{}",
        BATCH.replace("name: inverters", "name: meters")
    );
    let (outcome, out, err) = within(
        "onboard",
        onboard_text(
            client.clone(),
            &two,
            false,
            DEFAULT_TIMEOUT,
            ProgressStyle::Bar,
        ),
    )
    .await;
    let outcome = outcome.expect("onboard");
    assert_eq!(outcome.exit_code(), 0);
    let names: Vec<_> = outcome.batches.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["inverters", "meters"]);
    assert!(
        outcome
            .batches
            .iter()
            .all(|b| b.completion == Completion::Applied)
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.is_empty(), "no progress without --wait: {err:?}");
    let api: Api<OnboardingBatch> = Api::default_namespaced(client);
    for name in names {
        api.get(name).await.expect("the batch exists");
    }
}

#[tokio::test]
async fn onboard_reports_a_batch_the_api_rejects_with_its_name() {
    let (_server, client) = in_process().await;
    let invalid = BATCH.replace("count: 10", "count: 0");
    let (outcome, _, _) = within(
        "onboard",
        onboard_text(client, &invalid, false, DEFAULT_TIMEOUT, ProgressStyle::Bar),
    )
    .await;
    let error = outcome.expect_err("count 0 is below the schema's minimum");
    assert_eq!(error.exit_code(), 2);
    let message = error.to_string();
    assert!(
        message.starts_with("cannot apply OnboardingBatch default/inverters"),
        "{message}"
    );
}

#[test]
fn a_document_of_another_kind_is_refused_naming_the_file_and_the_document() {
    let yaml = format!("{BATCH}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
    let error = parse_batches(Path::new("site/batch.yaml"), &yaml).expect_err("a ConfigMap");
    assert!(
        matches!(error, OnboardError::NotABatch { document: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("site/batch.yaml: document 2 is a v1 ConfigMap, not an iot.devplane.io/v1alpha1 OnboardingBatch"),
        "{message}"
    );

    let older = BATCH.replace("v1alpha1", "v1alpha0");
    let message = parse_batches(Path::new("b.yaml"), &older)
        .expect_err("another version")
        .to_string();
    assert!(
        message.contains("is a iot.devplane.io/v1alpha0 OnboardingBatch"),
        "{message}"
    );
}

#[test]
fn a_yaml_syntax_error_names_the_file_the_document_and_the_line() {
    let yaml = format!("{BATCH}---\nkind: OnboardingBatch\nspec: [unclosed\n");
    let error = parse_batches(Path::new("batch.yaml"), &yaml).expect_err("bad YAML");
    let message = error.to_string();
    assert!(
        message.starts_with("batch.yaml: document 2 is not valid YAML"),
        "{message}"
    );
    assert!(message.contains("line"), "{message}");
}

#[test]
fn a_batch_without_a_name_or_spec_is_refused_before_applying() {
    let nameless = BATCH.replace("name: inverters", "generateName: inv-");
    let message = parse_batches(Path::new("b.yaml"), &nameless)
        .expect_err("no name")
        .to_string();
    assert!(message.contains("metadata.name is required"), "{message}");

    let specless =
        "apiVersion: iot.devplane.io/v1alpha1\nkind: OnboardingBatch\nmetadata: {name: x}\n";
    let message = parse_batches(Path::new("b.yaml"), specless)
        .expect_err("no spec")
        .to_string();
    assert!(
        message.starts_with("b.yaml: document 1 (OnboardingBatch x) is invalid"),
        "{message}"
    );
}

#[test]
fn an_empty_or_missing_file_is_an_error() {
    let message = parse_batches(Path::new("b.yaml"), "---\n# nothing\n")
        .expect_err("empty")
        .to_string();
    assert_eq!(message, "b.yaml contains no OnboardingBatch");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.yaml");
    let error = read_batches(&missing).expect_err("missing");
    assert!(matches!(error, OnboardError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.yaml"), "{error}");
}

#[test]
fn read_batches_keeps_every_batch_with_its_position_and_namespace() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("batch.yaml");
    let text = format!(
        "---\n{BATCH}---\n{}",
        BATCH.replace("name: inverters", "name: meters\n  namespace: plant-2")
    );
    std::fs::write(&file, text).expect("write the file");
    let batches = read_batches(&file).expect("two batches");
    let summary: Vec<_> = batches
        .iter()
        .map(|b| (b.document, b.name.as_str(), b.namespace.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [(1, "inverters", None), (2, "meters", Some("plant-2"))]
    );
}

#[tokio::test]
async fn a_document_namespace_that_contradicts_the_namespace_flag_is_refused() {
    let (_server, client) = in_process().await;
    let document = BatchDocument {
        document: 1,
        name: "inverters".into(),
        namespace: Some("plant-2".into()),
        object: json!({}),
    };
    let args = OnboardArgs {
        namespace: Some("plant-1".into()),
        ..OnboardArgs::new("b.yaml")
    };
    let message = namespace_of(&document, &args, &client)
        .expect_err("contradiction")
        .to_string();
    assert!(
        message.contains("differs from --namespace plant-1"),
        "{message}"
    );
    let args = OnboardArgs::new("b.yaml");
    assert_eq!(
        namespace_of(&document, &args, &client).expect("its own"),
        "plant-2"
    );
    let document = BatchDocument {
        namespace: None,
        ..document
    };
    assert_eq!(
        namespace_of(&document, &args, &client).expect("the client's"),
        "default"
    );
}

#[test]
fn the_bar_fills_with_processed_items_and_shows_the_counts() {
    let counts = |total, created, failed| Counts {
        total,
        created,
        failed,
    };
    assert_eq!(
        render_bar(&counts(1000, 512, 3), 10),
        "[#####     ] 512/1000 created, 3 failed"
    );
    assert_eq!(
        render_bar(&counts(10, 9, 1), 10),
        "[##########] 9/10 created, 1 failed"
    );
    assert_eq!(
        render_bar(&counts(0, 0, 0), 4),
        "[    ] waiting for the controller"
    );
    // A status that over-counts must not overflow the bar.
    assert_eq!(
        render_bar(&counts(2, 5, 0), 4),
        "[####] 5/2 created, 0 failed"
    );
    assert_eq!(
        render_line("inverters", &counts(1000, 512, 3), Duration::from_secs(12)),
        "inverters: 512/1000 created, 3 failed (12 s)"
    );
}

#[test]
fn the_summary_gives_the_rate_and_says_when_failures_were_cut() {
    let outcome = BatchOutcome {
        namespace: "solar".into(),
        name: "block-a".into(),
        completion: Completion::SomeFailed,
        counts: Counts {
            total: 1000,
            created: 800,
            failed: 200,
        },
        failures: vec![ItemFailure {
            item: "inv-001".into(),
            reason: "invalid serial".into(),
        }],
        elapsed: Duration::from_secs(40),
    };
    assert_eq!(
        render_summary(&outcome),
        "OnboardingBatch solar/block-a: complete with failures\n  \
         total 1000, created 800, failed 200, elapsed 40.0 s, 20.0 devices/s\n  \
         failures (first 1 of 200):\n    inv-001: invalid serial\n"
    );
}

#[test]
fn a_batch_is_done_only_when_complete_for_its_current_generation() {
    let mut batch: OnboardingBatch = serde_yaml::from_str(BATCH).expect("a batch");
    batch.metadata.generation = Some(2);
    assert!(!is_done(&batch), "no status yet");
    let status = batch.status.get_or_insert_with(Default::default);
    status.conditions = vec![condition("Complete", "True", "AllProcessed")];
    status.observed_generation = Some(1);
    assert!(!is_done(&batch), "complete for the previous spec");
    let status = batch.status.get_or_insert_with(Default::default);
    status.observed_generation = Some(2);
    assert!(is_done(&batch));
    let status = batch.status.get_or_insert_with(Default::default);
    status.conditions = vec![condition("Complete", "False", "Creating")];
    assert!(!is_done(&batch));
}

#[test]
fn exit_codes_take_the_worst_batch() {
    let batch = |completion| BatchOutcome {
        namespace: "default".into(),
        name: "b".into(),
        completion,
        counts: Counts::default(),
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let outcome = |completions: &[Completion]| OnboardOutcome {
        batches: completions.iter().copied().map(batch).collect(),
    };
    assert_eq!(
        outcome(&[Completion::Succeeded, Completion::Applied]).exit_code(),
        0
    );
    assert_eq!(
        outcome(&[Completion::Succeeded, Completion::SomeFailed]).exit_code(),
        1
    );
    assert_eq!(
        outcome(&[Completion::TimedOut, Completion::SomeFailed]).exit_code(),
        2
    );
}
