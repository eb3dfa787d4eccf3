//! Offline checks of a set of manifests, as a GitOps repository holds them: model resolution,
//! references between objects (models, gateways, devices), attribute values, batch expansion
//! and commands. Schema checks come before this (see `devplane-schema`); this works on
//! objects that passed them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use devplane_api::v1alpha1::{
    Device, DeviceCommand, DeviceModel, DeviceModelSpec, DeviceSpec, Gateway, ModelReference,
    OnboardingBatch,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{self, ModelKey, ResolveError, ResolvedModel};
use crate::onboarding;
use crate::payload::{self, AttributeCheck, CallError, PayloadError};

/// One parsed manifest document and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where the document is, e.g. `examples/solar-site.yaml` (document 3).
    pub source: String,
    /// The object.
    pub object: Value,
}

/// One problem found, pinned to a file, an object and a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Where the object is.
    pub source: String,
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path inside the object, empty when the object as a whole is meant.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.source, self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// The namespace an object without one lands in.
pub const DEFAULT_NAMESPACE: &str = "default";

struct Located<T> {
    source: String,
    namespace: String,
    name: String,
    object: T,
}

impl<T> Located<T> {
    fn label(&self, kind: &str) -> String {
        format!("{kind} {}/{}", self.namespace, self.name)
    }
}

/// A document with its identity, ready to parse into a typed object.
struct Place<'a> {
    doc: &'a Document,
    namespace: &'a str,
    name: &'a str,
    label: &'a str,
}

impl Place<'_> {
    fn parse<T: DeserializeOwned>(&self, findings: &mut Vec<Finding>) -> Option<Located<T>> {
        match serde_json::from_value(self.doc.object.clone()) {
            Ok(object) => Some(Located {
                source: self.doc.source.clone(),
                namespace: self.namespace.to_string(),
                name: self.name.to_string(),
                object,
            }),
            Err(e) => {
                findings.push(Finding {
                    source: self.doc.source.clone(),
                    object: self.label.to_string(),
                    field: String::new(),
                    message: e.to_string(),
                });
                None
            }
        }
    }
}

/// Check `documents` against each other and the `library` models. Findings are reported for
/// `documents` only; a document may redefine a library model.
pub fn check(documents: &[Document], library: &[DeviceModel]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut models: Vec<Located<DeviceModel>> = Vec::new();
    let mut devices: Vec<Located<Device>> = Vec::new();
    let mut gateways: Vec<Located<Gateway>> = Vec::new();
    let mut batches: Vec<Located<OnboardingBatch>> = Vec::new();
    let mut commands: Vec<Located<DeviceCommand>> = Vec::new();
    let mut seen: HashMap<(String, String, String), String> = HashMap::new();

    for doc in documents {
        let kind = doc
            .object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = doc
            .object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if api_version != devplane_api::API_VERSION {
            continue;
        }
        let meta = doc.object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        let object_label = format!("{kind} {namespace}/{name}");
        if let Some(first) = seen.insert(
            (kind.clone(), namespace.clone(), name.clone()),
            doc.source.clone(),
        ) {
            findings.push(Finding {
                source: doc.source.clone(),
                object: object_label,
                field: "metadata.name".into(),
                message: format!("defined again (first in {first})"),
            });
            continue;
        }
        let at = Place {
            doc,
            namespace: &namespace,
            name: &name,
            label: &object_label,
        };
        match kind.as_str() {
            "DeviceModel" => models.extend(at.parse(&mut findings)),
            "Device" => devices.extend(at.parse(&mut findings)),
            "Gateway" => gateways.extend(at.parse(&mut findings)),
            "OnboardingBatch" => batches.extend(at.parse(&mut findings)),
            "DeviceCommand" => commands.extend(at.parse(&mut findings)),
            _ => {}
        }
    }

    let mut source: BTreeMap<ModelKey, DeviceModelSpec> = library
        .iter()
        .filter_map(|m| {
            let key = ModelKey::new(m.metadata.namespace.clone()?, m.metadata.name.clone()?);
            Some((key, m.spec.clone()))
        })
        .collect();
    for m in &models {
        source.insert(ModelKey::new(&m.namespace, &m.name), m.object.spec.clone());
    }
    let mut checker = Checker {
        source,
        resolved: HashMap::new(),
        gateways: gateways
            .iter()
            .map(|g| (g.namespace.clone(), g.name.clone()))
            .collect(),
        device_models: HashMap::new(),
        findings,
    };
    for m in &models {
        checker.model(m);
    }
    checker.product_keys(&models);
    for d in &devices {
        let at = At {
            source: &d.source,
            object: &d.label("Device"),
        };
        checker.device(at, &d.namespace, &d.object.spec, "spec.");
        checker.device_models.insert(
            (d.namespace.clone(), d.name.clone()),
            d.object.spec.model_ref.clone(),
        );
    }
    for b in &batches {
        checker.batch(b);
    }
    for g in &gateways {
        checker.gateway(g);
    }
    for c in &commands {
        checker.command(c);
    }
    checker.findings
}

/// Where a finding belongs.
#[derive(Clone, Copy)]
struct At<'a> {
    source: &'a str,
    object: &'a str,
}

impl At<'_> {
    fn finding(self, field: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            source: self.source.to_string(),
            object: self.object.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

struct Checker {
    source: BTreeMap<ModelKey, DeviceModelSpec>,
    resolved: HashMap<ModelKey, Result<ResolvedModel, ResolveError>>,
    gateways: HashSet<(String, String)>,
    /// Devices of the manifests and those batches create: (namespace, name) → model.
    device_models: HashMap<(String, String), ModelReference>,
    findings: Vec<Finding>,
}

impl Checker {
    fn resolve(&mut self, key: &ModelKey) -> Result<ResolvedModel, ResolveError> {
        if let Some(done) = self.resolved.get(key) {
            return done.clone();
        }
        let result = model::resolve(&self.source, key);
        self.resolved.insert(key.clone(), result.clone());
        result
    }

    /// A product key names one model: the manifests' first claim (in file order) holds it, as
    /// the oldest model does in a cluster (see `crate::enos`).
    fn product_keys(&mut self, models: &[Located<DeviceModel>]) {
        let mut products = crate::enos::Products::default();
        for (order, m) in models.iter().enumerate() {
            let key = m.object.spec.enos.as_ref().map(|e| e.product_key.as_str());
            products.claim(
                &ModelKey::new(&m.namespace, &m.name),
                key,
                Some(order as i64),
            );
        }
        for m in models {
            let key = ModelKey::new(&m.namespace, &m.name);
            if let Some(Err(holder)) = products.key_of(&key) {
                let label = m.label("DeviceModel");
                let at = At {
                    source: &m.source,
                    object: &label,
                };
                let product_key = m
                    .object
                    .spec
                    .enos
                    .as_ref()
                    .map(|e| e.product_key.clone())
                    .unwrap_or_default();
                self.findings.push(at.finding(
                    "spec.enos.productKey",
                    format!("product key {product_key} is claimed by DeviceModel {holder} first"),
                ));
            }
        }
    }

    fn model(&mut self, m: &Located<DeviceModel>) {
        let key = ModelKey::new(&m.namespace, &m.name);
        let label = m.label("DeviceModel");
        let at = At {
            source: &m.source,
            object: &label,
        };
        for problem in model::check_definition(&m.object.spec) {
            self.findings
                .push(at.finding(problem.path, problem.problem.to_string()));
        }
        match self.resolve(&key) {
            Ok(_) => {}
            // Its own definition problems are reported above.
            Err(ResolveError::Definition { model, .. }) if model == key => {}
            Err(e) => {
                let field = resolve_error_field(&e, &key, &m.object.spec);
                self.findings.push(at.finding(field, e.to_string()));
            }
        }
    }

    fn gateway_defined(&mut self, at: At<'_>, field: &str, namespace: &str, gateway: &str) {
        if !self
            .gateways
            .contains(&(namespace.to_string(), gateway.to_string()))
        {
            self.findings.push(at.finding(
                field,
                format!("gateway {namespace}/{gateway} is not defined in these manifests"),
            ));
        }
    }

    /// Check a device spec (of a Device, or a batch's template) at `prefix`.
    fn device(&mut self, at: At<'_>, namespace: &str, spec: &DeviceSpec, prefix: &str) {
        if let Some(gateway) = spec.connection.gateway() {
            self.gateway_defined(
                at,
                &format!("{prefix}connection.gatewayRef.name"),
                namespace,
                gateway,
            );
        }
        let key = ModelKey::from_ref(&spec.model_ref, namespace);
        let model = match self.resolve(&key) {
            Ok(model) => model,
            Err(e) => {
                self.findings
                    .push(at.finding(format!("{prefix}modelRef"), reference_message(&e, &key)));
                return;
            }
        };
        if let Some(problem) = version_mismatch(&spec.model_ref, &model) {
            self.findings
                .push(at.finding(format!("{prefix}modelRef.version"), problem));
        }
        for (field, values, check) in [
            ("attributes", &spec.attributes, AttributeCheck::Configured),
            ("desired", &spec.desired, AttributeCheck::Desired),
        ] {
            for e in payload::validate_attributes(&model, values, check) {
                self.findings.push(at.finding(
                    payload_field(&format!("{prefix}{field}"), &e),
                    e.to_string(),
                ));
            }
        }
    }

    fn batch(&mut self, b: &Located<OnboardingBatch>) {
        let label = b.label("OnboardingBatch");
        let at = At {
            source: &b.source,
            object: &label,
        };
        let spec = &b.object.spec;
        self.device(at, &b.namespace, &spec.template.spec, "spec.template.spec.");
        if let Some(gateway) = &spec.gateway_ref {
            self.gateway_defined(at, "spec.gatewayRef.name", &b.namespace, &gateway.name);
        }
        let template_model = self
            .resolve(&ModelKey::from_ref(
                &spec.template.spec.model_ref,
                &b.namespace,
            ))
            .ok();
        let kind_of = |identifier: &str| {
            template_model
                .as_ref()
                .and_then(|m| m.attributes.get(identifier))
                .map(|a| a.definition.data_type.kind)
        };
        let expansion = match onboarding::expand(&b.name, spec, &kind_of) {
            Ok(expansion) => expansion,
            Err(e) => {
                self.findings.push(at.finding("", e.to_string()));
                return;
            }
        };
        for failure in &expansion.failures {
            self.findings.push(at.finding(
                "spec.items",
                format!("item {}: {}", failure.item, failure.reason),
            ));
        }
        for planned in expansion.devices {
            // The template was checked above; only what items add can differ.
            if let Some(model) = &template_model
                && planned.spec.attributes != spec.template.spec.attributes
            {
                for e in payload::validate_attributes(
                    model,
                    &planned.spec.attributes,
                    AttributeCheck::Configured,
                ) {
                    self.findings
                        .push(at.finding("spec.items", format!("item {}: {e}", planned.name)));
                }
            }
            let key = (b.namespace.clone(), planned.name.clone());
            if self
                .device_models
                .insert(key, planned.spec.model_ref)
                .is_some()
            {
                self.findings.push(at.finding(
                    "spec.items",
                    format!(
                        "item {}: a Device of that name is defined elsewhere too",
                        planned.name
                    ),
                ));
            }
        }
    }

    fn gateway(&mut self, g: &Located<Gateway>) {
        let label = g.label("Gateway");
        let at = At {
            source: &g.source,
            object: &label,
        };
        let key = ModelKey::from_ref(&g.object.spec.model_ref, &g.namespace);
        if let Err(e) = self.resolve(&key) {
            self.findings
                .push(at.finding("spec.modelRef", reference_message(&e, &key)));
        }
        let registration = &g.object.spec.dynamic_registration;
        let target = registration
            .target_namespace
            .clone()
            .unwrap_or_else(|| g.namespace.clone());
        for (i, allowed) in registration.allowed_models.iter().enumerate() {
            let key = ModelKey::from_ref(allowed, &target);
            if let Err(e) = self.resolve(&key) {
                self.findings.push(at.finding(
                    format!("spec.dynamicRegistration.allowedModels[{i}]"),
                    reference_message(&e, &key),
                ));
            }
        }
    }

    fn command(&mut self, c: &Located<DeviceCommand>) {
        let label = c.label("DeviceCommand");
        let at = At {
            source: &c.source,
            object: &label,
        };
        let spec = &c.object.spec;
        let Some(model_ref) = self
            .device_models
            .get(&(c.namespace.clone(), spec.device.clone()))
            .cloned()
        else {
            self.findings.push(at.finding(
                "spec.device",
                format!("device {}/{} is not defined in these manifests (nor created by a batch in them)", c.namespace, spec.device),
            ));
            return;
        };
        let Ok(model) = self.resolve(&ModelKey::from_ref(&model_ref, &c.namespace)) else {
            return; // Reported on the device.
        };
        match payload::validate_call(&model, &spec.service, &spec.params) {
            Ok(_) => {}
            Err(e @ CallError::UnknownService { .. }) => self
                .findings
                .push(at.finding("spec.service", e.to_string())),
            Err(CallError::BadParameters { errors, .. }) => {
                for p in errors {
                    self.findings
                        .push(at.finding(payload_field("spec.params", &p), p.to_string()));
                }
            }
        }
    }
}

fn payload_field(prefix: &str, error: &PayloadError) -> String {
    match error {
        PayloadError::MissingRequired { .. } => prefix.to_string(),
        other => format!("{prefix}.{}", other.point()),
    }
}

/// Message for a reference to a model that does not resolve.
fn reference_message(error: &ResolveError, key: &ModelKey) -> String {
    match error {
        ResolveError::Missing { missing, .. } if missing == key => {
            format!("model {key} is not defined in these manifests or the standard library")
        }
        other => format!("model {key} does not resolve: {other}"),
    }
}

/// A problem with a reference's version requirement, if any.
fn version_mismatch(reference: &ModelReference, model: &ResolvedModel) -> Option<String> {
    let requirement = reference.version.as_deref()?;
    match semver::VersionReq::parse(requirement) {
        Err(e) => Some(format!("{requirement:?} is not a version requirement: {e}")),
        Ok(req) if !req.matches(&model.version) => Some(format!(
            "model {} has version {}, which does not satisfy {requirement:?}",
            model.key, model.version
        )),
        Ok(_) => None,
    }
}

/// The field of a model a resolution error points at.
fn resolve_error_field(error: &ResolveError, key: &ModelKey, spec: &DeviceModelSpec) -> String {
    let next_in_chain = match error {
        ResolveError::Missing { chain, .. }
        | ResolveError::Cycle { chain }
        | ResolveError::TooDeep { chain, .. }
        | ResolveError::VersionMismatch { chain, .. }
        | ResolveError::Definition { chain, .. } => chain.0.iter().skip_while(|k| *k != key).nth(1),
        ResolveError::Conflict { first, second, .. } => {
            let own = [first, second].into_iter().find(|o| o.model == *key);
            return own
                .map(|o| o.path.clone())
                .unwrap_or_else(|| "spec.extends".into());
        }
    };
    next_in_chain
        .and_then(|next| {
            spec.extends
                .iter()
                .position(|r| ModelKey::from_ref(r, &key.namespace) == *next)
        })
        .map(|i| format!("spec.extends[{i}]"))
        .unwrap_or_else(|| "spec.extends".into())
}

#[cfg(test)]
mod tests;
