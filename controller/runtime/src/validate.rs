//! `devplane validate`: offline checks of manifest files, as a GitOps repository's CI runs them.
//!
//! Every document is checked against its CRD schema the way the API server would (unknown
//! fields are errors, as with kubectl's default strict validation), then the objects are
//! checked together by `devplane_core::manifests`: models resolve, references hold, values fit
//! their models.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use devplane_core::manifests::{self, Document, Finding};
use devplane_core::naming;
use devplane_schema::{CompiledSchema, ErrorType, FieldError};
use serde::Deserialize;
use serde_json::Value;

use crate::cli::ValidateArgs;

/// What a validation run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Objects read.
    pub objects: usize,
    /// Problems, in file order.
    pub findings: Vec<Finding>,
    /// Objects of kinds devplane does not check, as `source: Kind name`.
    pub unchecked: Vec<String>,
}

/// Why validation could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A path could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A directory held no manifests.
    #[error("{0}: no .yaml, .yml or .json files")]
    Empty(String),
    /// The compiled-in CRDs or library are broken (a build defect).
    #[error("devplane's own CRDs or library do not load: {0}")]
    Builtin(String),
}

/// Run `devplane validate`.
pub fn run(args: &ValidateArgs) -> ExitCode {
    match validate_paths(&args.files, args.recursive, !args.no_library) {
        Err(e) => {
            eprintln!("devplane validate: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            for finding in &report.findings {
                println!("{finding}");
            }
            for skipped in &report.unchecked {
                eprintln!("not checked: {skipped}");
            }
            let problems = report.findings.len();
            eprintln!(
                "{} object{} in {} file{} checked: {}",
                report.objects,
                plural(report.objects),
                report.files,
                plural(report.files),
                match problems {
                    0 => "no problems".to_string(),
                    1 => "1 problem".to_string(),
                    n => format!("{n} problems"),
                }
            );
            if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Validate the manifests under `paths`.
pub fn validate_paths(
    paths: &[PathBuf],
    recursive: bool,
    with_library: bool,
) -> Result<Report, ValidateError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, recursive, &mut files)?;
    }
    let schemas = crd_schemas()?;
    let library = if with_library {
        devplane_api::library::models().map_err(|e| ValidateError::Builtin(e.to_string()))?
    } else {
        Vec::new()
    };
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    let mut documents = Vec::new();
    for file in &files {
        let text = read(file)?;
        let name = file.display().to_string();
        match parse_documents(&name, &text) {
            Err(finding) => report.findings.push(finding),
            Ok(docs) => {
                for doc in docs {
                    report.objects += 1;
                    if let Some(doc) = check_document(doc, &schemas, &mut report) {
                        documents.push(doc);
                    }
                }
            }
        }
    }
    report
        .findings
        .extend(manifests::check(&documents, &library));
    Ok(report)
}

fn crd_schemas() -> Result<HashMap<String, CompiledSchema>, ValidateError> {
    devplane_api::all_crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let json =
                serde_json::to_value(schema).map_err(|e| ValidateError::Builtin(e.to_string()))?;
            let compiled =
                CompiledSchema::new(&json).map_err(|e| ValidateError::Builtin(format!("{e:?}")))?;
            Ok((crd.spec.names.kind.clone(), compiled))
        })
        .collect()
}

fn read(path: &Path) -> Result<String, ValidateError> {
    let err = |source| ValidateError::Read {
        path: path.display().to_string(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(err)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn collect_files(
    path: &Path,
    recursive: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), ValidateError> {
    if path == Path::new("-") {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let err = |source| ValidateError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort();
    let before = files.len();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                collect_files(&entry, recursive, files)?;
            }
        } else if is_manifest(&entry) {
            files.push(entry);
        }
    }
    if files.len() == before && !recursive {
        return Err(ValidateError::Empty(path.display().to_string()));
    }
    Ok(())
}

/// Split a YAML (or JSON) text into documents; `kind: …List` documents are flattened into
/// their items. A parse error is one finding for the file.
fn parse_documents(name: &str, text: &str) -> Result<Vec<Document>, Finding> {
    let mut documents = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{name}#{}", i + 1);
        let value = Value::deserialize(doc).map_err(|e| Finding {
            source: source.clone(),
            object: "(unparsed)".into(),
            field: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
        match value {
            Value::Null => {}
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                for (j, item) in map["items"].as_array().into_iter().flatten().enumerate() {
                    documents.push(Document {
                        source: format!("{source}.items[{j}]"),
                        object: item.clone(),
                    });
                }
            }
            object => documents.push(Document { source, object }),
        }
    }
    Ok(documents)
}

/// Schema-check one document; returns it (pruned and defaulted) when devplane should check it
/// further with the others.
fn check_document(
    mut doc: Document,
    schemas: &HashMap<String, CompiledSchema>,
    report: &mut Report,
) -> Option<Document> {
    let text = |key: &str| {
        doc.object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let meta = doc.object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let shown_name = if name.is_empty() {
        "(unnamed)"
    } else {
        name.as_str()
    };
    let label = match (&kind, &namespace) {
        (Some(kind), Some(ns)) => format!("{kind} {ns}/{shown_name}"),
        (Some(kind), None) => format!("{kind} {shown_name}"),
        (None, _) => format!("(no kind) {shown_name}"),
    };
    let mut finding = |field: &str, message: String| {
        report.findings.push(Finding {
            source: doc.source.clone(),
            object: label.clone(),
            field: field.into(),
            message,
        });
    };
    let (Some(api_version), Some(kind)) = (api_version.clone(), kind.clone()) else {
        for (field, value) in [("apiVersion", api_version), ("kind", kind)] {
            if value.is_none() {
                finding(field, "Required value".into());
            }
        }
        return None;
    };
    if !doc.object.is_object() {
        finding("", "a manifest must be an object".into());
        return None;
    }
    for error in metadata_problems(&kind, meta) {
        finding(&error.field, error.message());
    }
    let Some(version) = api_version.strip_prefix(&format!("{}/", devplane_api::GROUP)) else {
        report
            .unchecked
            .push(format!("{}: {label} ({api_version})", doc.source));
        return None;
    };
    if version != devplane_api::VERSION {
        finding(
            "apiVersion",
            format!(
                "{api_version} is not served; devplane serves {}",
                devplane_api::API_VERSION
            ),
        );
        return None;
    }
    let Some(schema) = schemas.get(&kind) else {
        let mut known: Vec<&str> = schemas.keys().map(String::as_str).collect();
        known.sort_unstable();
        finding(
            "kind",
            format!(
                "{kind} is not a kind of {api_version} (kinds: {})",
                known.join(", ")
            ),
        );
        return None;
    };
    let admission = schema.admit(&mut doc.object, None);
    for field in &admission.unknown_fields {
        finding(field, "unknown field (not in the schema)".into());
    }
    for error in &admission.errors {
        finding(&error.field, error.message());
    }
    (admission.unknown_fields.is_empty() && admission.errors.is_empty()).then_some(doc)
}

/// What the API server would refuse in an object's name, namespace, labels and annotations,
/// by Kubernetes' name rules (the API server's own checks).
fn metadata_problems(kind: &str, meta: Option<&Value>) -> Vec<FieldError> {
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let mut errors = devplane_apiserver::name_and_label_errors(
        kind == "Namespace",
        meta.and_then(Value::as_object),
    );
    if text("name").is_none_or(str::is_empty) && text("generateName").is_none() {
        errors.push(FieldError::new(
            "metadata.name",
            ErrorType::Required,
            None,
            "name or generateName is required",
        ));
    }
    if let Some(namespace) = text("namespace") {
        errors.extend(
            naming::dns1123_label_problems(namespace)
                .into_iter()
                .map(|p| {
                    FieldError::new(
                        "metadata.namespace",
                        ErrorType::Invalid,
                        Some(&Value::String(namespace.into())),
                        p.to_string(),
                    )
                }),
        );
    }
    errors
}

#[cfg(test)]
mod tests;
