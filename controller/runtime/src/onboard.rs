//! `devplane onboard -f batch.yaml [--wait]`: apply OnboardingBatches and follow them to the end.
//!
//! Each `OnboardingBatch` in the file is applied with server-side apply (field manager
//! `devplane-onboard`, forced). With `--wait`, each batch is then watched until the controller
//! reports it done for the applied spec (`status.observedGeneration == metadata.generation` and
//! condition `Complete` is `True`), showing progress on stderr, and a summary goes to stdout.
//!
//! Exit codes (see [`OnboardOutcome::exit_code`]): 0 when every item was created (or nothing was
//! waited for), 1 when some items failed, 2 on timeout or error.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use devplane_api::v1alpha1::{ItemFailure, OnboardingBatch};
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use tokio::time::Instant;

mod from_csv;
#[cfg(test)]
mod tests;

pub use from_csv::{Built, Spreadsheet, build_from_csv};

/// Field manager of the applied batches.
pub const FIELD_MANAGER: &str = "devplane-onboard";

/// The only apiVersion and kind this command applies.
const API_VERSION: &str = "iot.devplane.io/v1alpha1";
const KIND: &str = "OnboardingBatch";

/// Default for [`OnboardArgs::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How often a progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Width of the progress bar, between the brackets.
const BAR_WIDTH: usize = 30;

/// What `devplane onboard` was asked to do.
#[derive(Clone, Debug)]
pub struct OnboardArgs {
    /// The YAML file with one or more OnboardingBatch documents (`-f`).
    pub file: PathBuf,
    /// Wait until every batch is complete, showing progress (`--wait`).
    pub wait: bool,
    /// Kubeconfig to use instead of the default resolution (`KUBECONFIG`, `~/.kube/config`,
    /// in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of batches that name none (else the kubeconfig context's namespace).
    pub namespace: Option<String>,
    /// How long `--wait` waits for all batches together (10 minutes by default).
    pub timeout: Duration,
    /// Build the one object to apply from a CSV and a template instead (`--csv`,
    /// `--template`); `file` is then the template.
    pub spreadsheet: Option<Spreadsheet>,
}

impl OnboardArgs {
    /// Apply `file` without waiting, with the default kubeconfig, namespace and timeout.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            wait: false,
            kubeconfig: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
            spreadsheet: None,
        }
    }

    /// Apply the object built from the rows of `csv` and `template`, without waiting.
    pub fn from_csv(csv: impl Into<PathBuf>, template: impl Into<PathBuf>) -> Self {
        let template = template.into();
        Self {
            spreadsheet: Some(Spreadsheet {
                csv: csv.into(),
                template: template.clone(),
            }),
            ..Self::new(template)
        }
    }
}

/// What happened to each batch of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct OnboardOutcome {
    /// One entry per batch, in file order.
    pub batches: Vec<BatchOutcome>,
}

impl OnboardOutcome {
    /// The process exit code: 2 if any batch timed out, else 1 if any item failed, else 0.
    pub fn exit_code(&self) -> u8 {
        self.batches
            .iter()
            .map(|batch| batch.completion.exit_code())
            .max()
            .unwrap_or(0)
    }
}

/// What happened to one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutcome {
    /// Namespace of the batch.
    pub namespace: String,
    /// Name of the batch.
    pub name: String,
    /// How it ended.
    pub completion: Completion,
    /// The last counts the controller reported (zero when not waited for).
    pub counts: Counts,
    /// Why items failed, as reported (at most the first 100).
    pub failures: Vec<ItemFailure>,
    /// From the end of applying to the end of waiting.
    pub elapsed: Duration,
}

/// How waiting for a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Applied; not waited for.
    Applied,
    /// Complete, every item created.
    Succeeded,
    /// Complete, some items failed.
    SomeFailed,
    /// Not complete when the timeout expired.
    TimedOut,
}

impl Completion {
    /// 0 for applied or succeeded, 1 for failed items, 2 for a timeout.
    pub fn exit_code(self) -> u8 {
        match self {
            Completion::Applied | Completion::Succeeded => 0,
            Completion::SomeFailed => 1,
            Completion::TimedOut => 2,
        }
    }
}

/// Item counts from a batch's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items in the batch (0 until the controller has looked at it).
    pub total: i64,
    /// Devices created.
    pub created: i64,
    /// Items that could not be created.
    pub failed: i64,
}

impl Counts {
    fn of(batch: &OnboardingBatch) -> Self {
        batch
            .status
            .as_ref()
            .map(|status| Counts {
                total: status.total,
                created: status.created,
                failed: status.failed,
            })
            .unwrap_or_default()
    }
}

/// Why `devplane onboard` failed (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}", file = file.display())]
    Read {
        /// The file named with `-f`.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{file}: document {document} is not valid YAML: {source}", file = file.display())]
    Yaml {
        /// The file named with `-f`.
        file: PathBuf,
        /// 1-based position of the document in the file.
        document: usize,
        /// The parser's complaint, with its line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// A document is something other than an OnboardingBatch.
    #[error(
        "{file}: document {document} is {found}, not an {API_VERSION} {KIND}; \
         devplane onboard applies OnboardingBatches only (use kubectl apply for other objects)",
        file = file.display()
    )]
    NotABatch {
        /// The file named with `-f`.
        file: PathBuf,
        /// 1-based position of the document in the file.
        document: usize,
        /// What the document is, e.g. "a v1 ConfigMap".
        found: String,
    },
    /// A document is an OnboardingBatch that cannot be applied as written.
    #[error("{file}: document {document} ({KIND} {name}) is invalid: {reason}", file = file.display())]
    InvalidBatch {
        /// The file named with `-f`.
        file: PathBuf,
        /// 1-based position of the document in the file.
        document: usize,
        /// The batch's name, or "without a name".
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no OnboardingBatch at all.
    #[error("{file} contains no {KIND}", file = file.display())]
    NoBatches {
        /// The file named with `-f`.
        file: PathBuf,
    },
    /// The kubeconfig given with `--kubeconfig` could not be loaded.
    #[error("cannot load the kubeconfig {path}: {source}", path = path.display())]
    Kubeconfig {
        /// The file given.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was found by the default resolution.
    #[error("cannot find a kubeconfig (pass --kubeconfig or set KUBECONFIG): {source}")]
    InferConfig {
        /// Why.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The client could not be built from the kubeconfig.
    #[error("cannot build a client from the kubeconfig: {source}")]
    Client {
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The template is neither an OnboardingBatch nor a ProvisioningPolicy that rows can fill.
    #[error("{file}: {reason}", file = file.display())]
    Template {
        /// The template named with `--template`.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Rows of the CSV are bad: none was applied.
    #[error(
        "{csv}: {count} problem{s}, nothing was applied:{list}",
        csv = csv.display(),
        count = problems.len(),
        s = if problems.len() == 1 { "" } else { "s" },
        list = problems.iter().map(|p| format!("\n  {p}")).collect::<String>()
    )]
    BadRows {
        /// The CSV named with `--csv`.
        csv: PathBuf,
        /// Every problem, by line.
        problems: Vec<devplane_core::spreadsheet::RowProblem>,
    },
    /// The API refused to apply the policy built from a CSV.
    #[error("cannot apply ProvisioningPolicy {namespace}/{name}: {source}")]
    ApplyPolicy {
        /// Namespace of the policy.
        namespace: String,
        /// Name of the policy.
        name: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The API refused to apply a batch.
    #[error("cannot apply {KIND} {namespace}/{name}: {source}")]
    Apply {
        /// Namespace of the batch.
        namespace: String,
        /// Name of the batch.
        name: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// A batch disappeared while being waited for.
    #[error("{KIND} {namespace}/{name} was deleted while waiting for it")]
    Deleted {
        /// Namespace of the batch.
        namespace: String,
        /// Name of the batch.
        name: String,
    },
    /// The summary could not be written to stdout.
    #[error("cannot write the summary: {source}")]
    Output {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl OnboardError {
    /// Every error maps to exit code 2.
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// One batch read from the file, checked and ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchDocument {
    /// 1-based position of the document in the file.
    pub document: usize,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if the document sets one.
    pub namespace: Option<String>,
    /// The document as written, which is what gets applied (so the field manager owns exactly
    /// the fields the file sets).
    pub object: serde_json::Value,
}

/// Apply the batches of `args.file` and, with `args.wait`, follow them to the end, printing
/// progress to stderr and a summary to stdout.
pub async fn run(args: &OnboardArgs) -> Result<OnboardOutcome, OnboardError> {
    let (client, documents) = match &args.spreadsheet {
        // Rows are checked against the model in the cluster: the client comes first.
        Some(spreadsheet) => {
            let client = client(args.kubeconfig.as_deref()).await?;
            match from_csv::read(&client, args, spreadsheet).await? {
                Built::Batch(document) => (client, vec![document]),
                Built::Policy(policy) => {
                    from_csv::apply_policy(&client, args, &policy).await?;
                    return Ok(OnboardOutcome {
                        batches: Vec::new(),
                    });
                }
            }
        }
        None => {
            // A bad file fails before any connection is attempted.
            let documents = read_batches(&args.file)?;
            (client(args.kubeconfig.as_deref()).await?, documents)
        }
    };
    let style = if std::io::stderr().is_terminal() {
        ProgressStyle::Bar
    } else {
        ProgressStyle::Lines { every: LINE_EVERY }
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut console = Console {
        out: &mut stdout,
        err: &mut stderr,
        style,
    };
    onboard(client, args, documents, &mut console).await
}

/// Read and check every document of `file`.
pub fn read_batches(file: &Path) -> Result<Vec<BatchDocument>, OnboardError> {
    let text = std::fs::read_to_string(file).map_err(|source| OnboardError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse_batches(file, &text)
}

/// Check every document of `text` (read from `file`, which names it in errors): each must be an
/// `iot.devplane.io/v1alpha1` OnboardingBatch with a name. Empty documents are skipped.
pub fn parse_batches(file: &Path, text: &str) -> Result<Vec<BatchDocument>, OnboardError> {
    let mut batches = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let yaml_error = |source| OnboardError::Yaml {
            file: file.to_path_buf(),
            document: number,
            source,
        };
        let yaml = serde_yaml::Value::deserialize(document).map_err(yaml_error)?;
        if yaml.is_null() {
            continue;
        }
        let object = serde_json::to_value(&yaml).map_err(|e| OnboardError::InvalidBatch {
            file: file.to_path_buf(),
            document: number,
            name: "without a name".to_string(),
            reason: format!("not a JSON-compatible object: {e}"),
        })?;
        batches.push(batch_document(file, number, object)?);
    }
    if batches.is_empty() {
        return Err(OnboardError::NoBatches {
            file: file.to_path_buf(),
        });
    }
    Ok(batches)
}

/// Check one document (the `number`th of `file`) as an OnboardingBatch with a name.
fn batch_document(
    file: &Path,
    number: usize,
    object: serde_json::Value,
) -> Result<BatchDocument, OnboardError> {
    let invalid = |name: &str, reason: String| OnboardError::InvalidBatch {
        file: file.to_path_buf(),
        document: number,
        name: name.to_string(),
        reason,
    };
    let api_version = object.get("apiVersion").and_then(|v| v.as_str());
    let kind = object.get("kind").and_then(|v| v.as_str());
    if api_version != Some(API_VERSION) || kind != Some(KIND) {
        return Err(OnboardError::NotABatch {
            file: file.to_path_buf(),
            document: number,
            found: describe(api_version, kind),
        });
    }
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(invalid(
            "without a name",
            "metadata.name is required (generateName cannot be applied)".to_string(),
        ));
    }
    // Decoding into the Rust type catches a missing or mistyped spec before the round trip.
    if let Err(e) = serde_json::from_value::<OnboardingBatch>(object.clone()) {
        return Err(invalid(&name, e.to_string()));
    }
    Ok(BatchDocument {
        document: number,
        namespace: metadata["namespace"].as_str().map(str::to_string),
        name,
        object,
    })
}

fn describe(api_version: Option<&str>, kind: Option<&str>) -> String {
    match (api_version, kind) {
        (Some(api_version), Some(kind)) => format!("a {api_version} {kind}"),
        (None, Some(kind)) => format!("a {kind} without an apiVersion"),
        (Some(api_version), None) => format!("an {api_version} object without a kind"),
        (None, None) => "not a Kubernetes object (no apiVersion or kind)".to_string(),
    }
}

/// A client from `--kubeconfig`, else from the default resolution.
pub(crate) async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, OnboardError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                OnboardError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| OnboardError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|source| OnboardError::InferConfig { source })?,
    };
    kube::Client::try_from(config).map_err(|source| OnboardError::Client { source })
}

/// How progress is shown while waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressStyle {
    /// A bar redrawn in place with `\r` (stderr is a terminal).
    Bar,
    /// A line every `every` (stderr is a pipe or a file, e.g. CI logs).
    Lines { every: Duration },
}

/// Where the command writes: the summary to `out`, progress to `err`.
struct Console<'a> {
    out: &'a mut (dyn Write + Send),
    err: &'a mut (dyn Write + Send),
    style: ProgressStyle,
}

impl Console<'_> {
    fn say(&mut self, text: &str) -> Result<(), OnboardError> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|source| OnboardError::Output { source })
    }

    /// Progress is best effort: a closed stderr must not fail the command.
    fn progress(&mut self, text: &str) {
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
    }
}

/// Apply every batch, then wait for each in turn (the controller works on all of them at once,
/// so the order of waiting does not matter) under one overall deadline.
async fn onboard(
    client: kube::Client,
    args: &OnboardArgs,
    documents: Vec<BatchDocument>,
    console: &mut Console<'_>,
) -> Result<OnboardOutcome, OnboardError> {
    let mut applied = Vec::with_capacity(documents.len());
    for document in documents {
        let namespace = namespace_of(&document, args, &client)?;
        let api: Api<OnboardingBatch> = Api::namespaced(client.clone(), &namespace);
        let batch = api
            .patch(
                &document.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&document.object),
            )
            .await
            .map_err(|source| OnboardError::Apply {
                namespace: namespace.clone(),
                name: document.name.clone(),
                source,
            })?;
        console.say(&format!(
            "onboardingbatch.iot.devplane.io/{} applied (namespace {namespace})\n",
            document.name
        ))?;
        applied.push((api, namespace, batch));
    }

    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(applied.len());
    if !args.wait {
        for (_, namespace, batch) in applied {
            outcomes.push(BatchOutcome {
                namespace,
                name: batch.metadata.name.unwrap_or_default(),
                completion: Completion::Applied,
                counts: Counts::default(),
                failures: Vec::new(),
                elapsed: started.elapsed(),
            });
        }
        return Ok(OnboardOutcome { batches: outcomes });
    }
    let deadline = started + args.timeout;
    for (api, namespace, batch) in applied {
        let name = batch.metadata.name.clone().unwrap_or_default();
        let outcome = wait_for(api, namespace, name, started, deadline, console).await?;
        console.say(&render_summary(&outcome))?;
        outcomes.push(outcome);
    }
    Ok(OnboardOutcome { batches: outcomes })
}

/// The document's namespace, else `--namespace`, else the client's default; a document whose
/// namespace contradicts `--namespace` is refused, as kubectl does.
fn namespace_of(
    document: &BatchDocument,
    args: &OnboardArgs,
    client: &kube::Client,
) -> Result<String, OnboardError> {
    namespace_for(document.namespace.as_ref(), args, client).map_err(|reason| {
        OnboardError::InvalidBatch {
            file: args.file.clone(),
            document: document.document,
            name: document.name.clone(),
            reason,
        }
    })
}

/// An object's own namespace, else `--namespace`, else the client's default; or why not.
fn namespace_for(
    own: Option<&String>,
    args: &OnboardArgs,
    client: &kube::Client,
) -> Result<String, String> {
    match (own, &args.namespace) {
        (Some(own), Some(requested)) if own != requested => Err(format!(
            "its namespace {own} differs from --namespace {requested}"
        )),
        (Some(own), _) => Ok(own.clone()),
        (None, Some(requested)) => Ok(requested.clone()),
        (None, None) => Ok(client.default_namespace().to_string()),
    }
}

/// Watch one batch until it is done for its current spec or `deadline` passes.
async fn wait_for(
    api: Api<OnboardingBatch>,
    namespace: String,
    name: String,
    started: Instant,
    deadline: Instant,
    console: &mut Console<'_>,
) -> Result<BatchOutcome, OnboardError> {
    // The watcher re-lists and re-watches by itself; the backoff keeps a failing API from being
    // hammered while it does.
    let mut updates = watcher::watch_object(api, &name).default_backoff().boxed();
    let mut latest: Option<OnboardingBatch> = None;
    let mut lines = tokio::time::interval_at(
        started + line_every(console.style),
        line_every(console.style),
    );
    lines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drawn = 0;
    let completion = loop {
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(Some(batch))) => {
                    let done = is_done(&batch);
                    if console.style == ProgressStyle::Bar {
                        drawn = redraw(console, &name, &Counts::of(&batch), drawn);
                    }
                    latest = Some(batch);
                    if done {
                        break None;
                    }
                    if Instant::now() >= deadline {
                        break Some(Completion::TimedOut);
                    }
                }
                Some(Ok(None)) => {
                    finish_bar(console, drawn);
                    return Err(OnboardError::Deleted { namespace, name });
                }
                Some(Err(e)) => tracing::debug!(batch = %name, error = %e, "watch interrupted; resuming"),
                // The watcher never ends on its own; treat it like a timeout if it does.
                None => break Some(Completion::TimedOut),
            },
            () = tokio::time::sleep_until(deadline) => break Some(Completion::TimedOut),
            _ = lines.tick(), if matches!(console.style, ProgressStyle::Lines { .. }) => {
                let counts = latest.as_ref().map(Counts::of).unwrap_or_default();
                console.progress(&format!("{}\n", render_line(&name, &counts, started.elapsed())));
            }
        }
    };
    finish_bar(console, drawn);
    let counts = latest.as_ref().map(Counts::of).unwrap_or_default();
    let completion = completion.unwrap_or(if counts.failed > 0 {
        Completion::SomeFailed
    } else {
        Completion::Succeeded
    });
    Ok(BatchOutcome {
        namespace,
        name,
        completion,
        counts,
        failures: latest
            .and_then(|batch| batch.status)
            .map(|status| status.failures)
            .unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

fn line_every(style: ProgressStyle) -> Duration {
    match style {
        ProgressStyle::Lines { every } => every,
        // Unused for the bar (it is drawn on updates), but the interval needs a period.
        ProgressStyle::Bar => LINE_EVERY,
    }
}

/// Redraw the bar in place; pads with spaces over a longer previous line. Returns the length
/// drawn.
fn redraw(console: &mut Console<'_>, name: &str, counts: &Counts, previous: usize) -> usize {
    let line = format!("{name} {}", render_bar(counts, BAR_WIDTH));
    let length = line.chars().count();
    let padding = " ".repeat(previous.saturating_sub(length));
    console.progress(&format!("\r{line}{padding}"));
    length
}

fn finish_bar(console: &mut Console<'_>, drawn: usize) {
    if drawn > 0 {
        console.progress("\n");
    }
}

/// Done for the spec that was applied: the controller has seen this generation and says
/// `Complete=True`. A `Complete` left over from an older generation does not count.
pub fn is_done(batch: &OnboardingBatch) -> bool {
    let Some(status) = &batch.status else {
        return false;
    };
    status.observed_generation.is_some()
        && status.observed_generation == batch.metadata.generation
        && status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Complete" && condition.status == "True")
}

/// The progress bar: `[#####     ] 512/1000 created, 3 failed`, filled by the share of items
/// processed (created or failed), `width` characters between the brackets.
pub fn render_bar(counts: &Counts, width: usize) -> String {
    if counts.total <= 0 {
        return format!("[{}] waiting for the controller", " ".repeat(width));
    }
    let processed = (counts.created + counts.failed).clamp(0, counts.total);
    let filled = usize::try_from(processed)
        .unwrap_or(0)
        .saturating_mul(width)
        / usize::try_from(counts.total).unwrap_or(1);
    format!(
        "[{}{}] {}/{} created, {} failed",
        "#".repeat(filled),
        " ".repeat(width - filled),
        counts.created,
        counts.total,
        counts.failed
    )
}

/// A progress line for logs: `inverters: 512/1000 created, 3 failed (12 s)`.
fn render_line(name: &str, counts: &Counts, elapsed: Duration) -> String {
    if counts.total <= 0 {
        return format!(
            "{name}: waiting for the controller ({} s)",
            elapsed.as_secs()
        );
    }
    format!(
        "{name}: {}/{} created, {} failed ({} s)",
        counts.created,
        counts.total,
        counts.failed,
        elapsed.as_secs()
    )
}

/// The end-of-wait summary of one batch, with its failures.
fn render_summary(outcome: &BatchOutcome) -> String {
    let Counts {
        total,
        created,
        failed,
    } = outcome.counts;
    let seconds = outcome.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        created as f64 / seconds
    } else {
        0.0
    };
    let verdict = match outcome.completion {
        Completion::Applied => "applied",
        Completion::Succeeded => "complete",
        Completion::SomeFailed => "complete with failures",
        Completion::TimedOut => "timed out before completion",
    };
    let mut text = format!(
        "{KIND} {}/{}: {verdict}\n  total {total}, created {created}, failed {failed}, \
         elapsed {seconds:.1} s, {rate:.1} devices/s\n",
        outcome.namespace, outcome.name
    );
    if !outcome.failures.is_empty() {
        let shown = outcome.failures.len();
        if i64::try_from(shown).unwrap_or(i64::MAX) < failed {
            let _ = writeln!(text, "  failures (first {shown} of {failed}):");
        } else {
            text.push_str("  failures:\n");
        }
        for failure in &outcome.failures {
            let _ = writeln!(text, "    {}: {}", failure.item, failure.reason);
        }
    }
    text
}
