//! `devplane onboard --csv rows.csv --template batch.yaml`: the object to apply, built from a
//! spreadsheet export and a template.
//!
//! An OnboardingBatch template gets the CSV as its `spec.items.csv` (so the controller reads
//! the same rows, and names the same lines); a ProvisioningPolicy template gets the rows
//! (`serialNumber`, `deviceId`, `token`) as `spec.attestation.preRegistered.items`. Every row
//! is checked first, attribute cells against the types of the template's model when the
//! cluster lets us read it; one bad row and nothing is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use devplane_api::v1alpha1::{
    DataKind, DeviceModel, DeviceModelSpec, OnboardingBatch, ProvisioningPolicy,
};
use devplane_core::model::{ModelKey, resolve};
use devplane_core::onboarding;
use devplane_core::provisioning::Rules;
use devplane_core::spreadsheet::{AttributeKinds, RowProblem, check_allow_csv, check_batch_csv};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    API_VERSION, BatchDocument, FIELD_MANAGER, KIND, OnboardArgs, OnboardError, batch_document,
    namespace_for,
};

/// The kind of a template that rows fill besides OnboardingBatch.
const POLICY_KIND: &str = "ProvisioningPolicy";

/// Most models one `extends` tree is read from the cluster for the type check; resolution
/// reports anything deeper.
const MAX_MODELS: usize = 64;

/// `--csv` and `--template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spreadsheet {
    /// The CSV export, one row per device.
    pub csv: PathBuf,
    /// The OnboardingBatch or ProvisioningPolicy YAML the rows fill.
    pub template: PathBuf,
}

/// What the rows and the template make.
#[derive(Clone, Debug, PartialEq)]
pub enum Built {
    /// A batch whose items are the CSV.
    Batch(BatchDocument),
    /// A policy whose allow-list is the rows.
    Policy(PolicyDocument),
}

/// A policy built from rows, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDocument {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if the template sets one.
    pub namespace: Option<String>,
    /// What gets applied.
    pub object: Value,
    /// How many devices the allow-list holds.
    pub entries: usize,
}

/// Read both files, the template's model when it is a batch, and build (checking every row).
pub(super) async fn read(
    client: &kube::Client,
    args: &OnboardArgs,
    spreadsheet: &Spreadsheet,
) -> Result<Built, OnboardError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| OnboardError::Read {
            file: path.to_path_buf(),
            source,
        })
    };
    let template_text = read(&spreadsheet.template)?;
    let csv_text = read(&spreadsheet.csv)?;
    let template = parse_template(&spreadsheet.template, &template_text)?;
    let model = if template["kind"] == KIND {
        let namespace = template["metadata"]["namespace"]
            .as_str()
            .map(str::to_string);
        let namespace = namespace_for(namespace.as_ref(), args, client).map_err(|reason| {
            OnboardError::Template {
                file: spreadsheet.template.clone(),
                reason,
            }
        })?;
        let reference = &template["spec"]["template"]["spec"]["modelRef"];
        match reference["name"].as_str() {
            Some(name) => {
                let model_namespace = reference["namespace"].as_str().unwrap_or(&namespace);
                let key = ModelKey::new(model_namespace, name);
                match read_model(client, &key).await {
                    Ok(model) => Some(model),
                    Err(why) => {
                        eprintln!(
                            "note: DeviceModel {key} cannot be read ({why}): attribute cells are \
                             not checked against its types here (the controller will)"
                        );
                        None
                    }
                }
            }
            None => None,
        }
    } else {
        None
    };
    let kinds = model.as_ref().map(|model| {
        move |identifier: &str| {
            model
                .attributes
                .get(identifier)
                .map(|a| a.definition.data_type.kind)
        }
    });
    build_from_csv(
        &spreadsheet.template,
        template,
        &spreadsheet.csv,
        &csv_text,
        kinds
            .as_ref()
            .map(|k| k as &dyn Fn(&str) -> Option<DataKind>),
    )
}

/// The one document of a template.
fn parse_template(file: &Path, text: &str) -> Result<Value, OnboardError> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml =
            serde_yaml::Value::deserialize(document).map_err(|source| OnboardError::Yaml {
                file: file.to_path_buf(),
                document: index + 1,
                source,
            })?;
        if !yaml.is_null() {
            documents.push(yaml);
        }
    }
    let template = |reason: String| OnboardError::Template {
        file: file.to_path_buf(),
        reason,
    };
    let [yaml] = <[serde_yaml::Value; 1]>::try_from(documents).map_err(|documents| {
        template(format!(
            "a template is one OnboardingBatch or ProvisioningPolicy; this file has {} documents",
            documents.len()
        ))
    })?;
    serde_json::to_value(&yaml).map_err(|e| template(format!("not a JSON-compatible object: {e}")))
}

/// The model and everything it extends, read from the cluster and resolved.
async fn read_model(
    client: &kube::Client,
    root: &ModelKey,
) -> Result<devplane_core::ResolvedModel, String> {
    let mut specs: BTreeMap<ModelKey, DeviceModelSpec> = BTreeMap::new();
    let mut queue = vec![root.clone()];
    while let Some(key) = queue.pop() {
        if specs.contains_key(&key) || specs.len() >= MAX_MODELS {
            continue;
        }
        let models: Api<DeviceModel> = Api::namespaced(client.clone(), &key.namespace);
        let Some(model) = models.get_opt(&key.name).await.map_err(|e| e.to_string())? else {
            // Resolution names the missing model and the chain that needs it.
            continue;
        };
        queue.extend(
            model
                .spec
                .extends
                .iter()
                .map(|r| ModelKey::from_ref(r, &key.namespace)),
        );
        specs.insert(key, model.spec);
    }
    resolve(&specs, root).map_err(|e| e.to_string())
}

/// Build the object from a parsed `template` and the CSV text, checking every row;
/// `attribute_kind` gives the types of the batch template's model when it is known.
pub fn build_from_csv(
    template_file: &Path,
    mut template: Value,
    csv_file: &Path,
    csv: &str,
    attribute_kind: Option<AttributeKinds<'_>>,
) -> Result<Built, OnboardError> {
    let problem = |reason: String| OnboardError::Template {
        file: template_file.to_path_buf(),
        reason,
    };
    let bad_rows = |problems: Vec<RowProblem>| OnboardError::BadRows {
        csv: csv_file.to_path_buf(),
        problems,
    };
    let api_version = template["apiVersion"].as_str().unwrap_or_default();
    let kind = template["kind"].as_str().unwrap_or_default().to_string();
    if api_version != API_VERSION || (kind != KIND && kind != POLICY_KIND) {
        return Err(problem(format!(
            "the template is {}; --template takes an {API_VERSION} {KIND} or {POLICY_KIND}",
            if kind.is_empty() {
                "not a Kubernetes object".to_string()
            } else {
                format!("a {api_version} {kind}")
            }
        )));
    }
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(problem("the template has no spec".into()));
    };
    if kind == KIND {
        if let Some(items) = spec.get("items").filter(|i| !is_empty(i)) {
            return Err(problem(format!(
                "spec.items is set ({}); the rows of --csv are the items: leave it out",
                keys(items)
            )));
        }
        spec.insert("items".into(), json!({ "csv": csv }));
        let document = batch_document(template_file, 1, template)?;
        check_batch_csv(csv, attribute_kind).map_err(bad_rows)?;
        // What applies to the whole batch (its site and asset labels, say).
        let batch: OnboardingBatch =
            serde_json::from_value(document.object.clone()).map_err(|e| problem(e.to_string()))?;
        let untyped = |_: &str| None;
        let kinds = attribute_kind.unwrap_or(&untyped);
        let expansion = onboarding::expand(&document.name, &batch.spec, kinds)
            .map_err(|e| problem(e.to_string()))?;
        if !expansion.failures.is_empty() {
            return Err(bad_rows(
                expansion
                    .failures
                    .into_iter()
                    .map(|f| RowProblem {
                        line: None,
                        message: format!("{}: {}", f.item, f.reason),
                    })
                    .collect(),
            ));
        }
        return Ok(Built::Batch(document));
    }

    let attestation = spec
        .entry("attestation")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| problem("spec.attestation is not an object".into()))?;
    if let Some(listed) = attestation.get("preRegistered").filter(|p| !is_empty(p)) {
        return Err(problem(format!(
            "spec.attestation.preRegistered is set ({}); the rows of --csv are the allow-list: \
             leave it out",
            keys(listed)
        )));
    }
    attestation.insert("preRegistered".into(), json!({ "items": [] }));
    let mut policy: ProvisioningPolicy =
        serde_json::from_value(template.clone()).map_err(|e| problem(e.to_string()))?;
    let name = policy.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(problem(
            "metadata.name is required (generateName cannot be applied)".into(),
        ));
    }
    let items = check_allow_csv(csv, &policy.spec).map_err(bad_rows)?;
    let entries = items.len();
    template["spec"]["attestation"]["preRegistered"]["items"] =
        serde_json::to_value(&items).map_err(|e| problem(e.to_string()))?;
    if let Some(pre_registered) = policy.spec.attestation.pre_registered.as_mut() {
        pre_registered.items = Some(items);
    }
    Rules::compile(&policy.spec).map_err(|e| problem(e.to_string()))?;
    Ok(Built::Policy(PolicyDocument {
        name,
        namespace: policy.metadata.namespace,
        object: template,
        entries,
    }))
}

/// Null, or an object without keys.
fn is_empty(value: &Value) -> bool {
    value.is_null() || value.as_object().is_some_and(|o| o.is_empty())
}

fn keys(value: &Value) -> String {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| value.to_string())
}

/// Apply the policy with server-side apply; there is nothing to wait for (its devices
/// provision themselves).
pub(super) async fn apply_policy(
    client: &kube::Client,
    args: &OnboardArgs,
    policy: &PolicyDocument,
) -> Result<(), OnboardError> {
    let namespace = namespace_for(policy.namespace.as_ref(), args, client).map_err(|reason| {
        OnboardError::Template {
            file: args.file.clone(),
            reason,
        }
    })?;
    let api: Api<ProvisioningPolicy> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &policy.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&policy.object),
    )
    .await
    .map_err(|source| OnboardError::ApplyPolicy {
        namespace: namespace.clone(),
        name: policy.name.clone(),
        source,
    })?;
    println!(
        "provisioningpolicy.iot.devplane.io/{} applied (namespace {namespace}): {} pre-registered \
         devices",
        policy.name, policy.entries
    );
    if args.wait {
        println!("nothing to wait for: the devices provision themselves when they first connect");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
