//! What the admission webhook checks beyond the CRDs' schemas and CEL rules, because it needs
//! other objects: the model a Device or Gateway names resolves (and fits the version
//! requirement), a Device's attribute and desired values fit that model, the gateway a Device
//! names exists, and a DeviceCommand's service and parameters fit its device's model. Pure: the
//! caller supplies what exists.

use devplane_api::v1alpha1::{Device, DeviceCommand, Gateway};

use crate::ResolvedModel;
use crate::model::{ModelKey, ModelSource, resolve};
use crate::payload::{AttributeCheck, validate_attributes, validate_call};

/// What exists, as the webhook's caches see it.
pub trait Known: ModelSource {
    /// Whether the Gateway `namespace/name` exists.
    fn gateway_exists(&self, namespace: &str, name: &str) -> bool;
    /// The model of the Device `namespace/name`, if it exists.
    fn device_model(&self, namespace: &str, name: &str) -> Option<ModelKey>;
}

/// The problems that refuse a Device (empty: admit).
pub fn review_device(device: &Device, known: &dyn Known) -> Vec<String> {
    let namespace = device.metadata.namespace.as_deref().unwrap_or_default();
    let key = ModelKey::from_ref(&device.spec.model_ref, namespace);
    let mut problems = Vec::new();
    match resolve(&Models(known), &key) {
        Err(e) => problems.push(format!("spec.modelRef: model {key} does not resolve: {e}")),
        Ok(model) => {
            if let Some(wanted) = &device.spec.model_ref.version
                && let Ok(requirement) = semver::VersionReq::parse(wanted)
                && !requirement.matches(&model.version)
            {
                problems.push(format!(
                    "spec.modelRef.version: model {key} is {}, which does not satisfy {wanted:?}",
                    model.version
                ));
            }
            problems.extend(attribute_problems(device, &model));
        }
    }
    if let Some(gateway) = device.spec.connection.gateway() {
        let home = device
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(devplane_api::constants::labels::GATEWAY_NAMESPACE))
            .map_or(namespace, String::as_str);
        if !known.gateway_exists(home, gateway) {
            problems.push(format!(
                "spec.connection.gatewayRef: gateway {home}/{gateway} does not exist"
            ));
        }
    }
    problems
}

/// What is wrong with a Device's attribute and desired values for its model, each naming the
/// field (`spec.attributes: …`, `spec.desired: …`).
pub fn attribute_problems(device: &Device, model: &ResolvedModel) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, values, check) in [
        (
            "spec.attributes",
            &device.spec.attributes,
            AttributeCheck::Configured,
        ),
        (
            "spec.desired",
            &device.spec.desired,
            AttributeCheck::Desired,
        ),
    ] {
        for e in validate_attributes(model, values, check) {
            problems.push(format!("{field}: {e}"));
        }
    }
    problems
}

/// The problems that refuse a Gateway.
pub fn review_gateway(gateway: &Gateway, known: &dyn Known) -> Vec<String> {
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or_default();
    let key = ModelKey::from_ref(&gateway.spec.model_ref, namespace);
    match resolve(&Models(known), &key) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("spec.modelRef: model {key} does not resolve: {e}")],
    }
}

/// The problems that refuse a DeviceCommand.
pub fn review_command(command: &DeviceCommand, known: &dyn Known) -> Vec<String> {
    let namespace = command.metadata.namespace.as_deref().unwrap_or_default();
    let Some(key) = known.device_model(namespace, &command.spec.device) else {
        return vec![format!(
            "spec.device: device {namespace}/{} does not exist",
            command.spec.device
        )];
    };
    let model = match resolve(&Models(known), &key) {
        Ok(model) => model,
        Err(e) => return vec![format!("the device's model {key} does not resolve: {e}")],
    };
    match validate_call(&model, &command.spec.service, &command.spec.params) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("spec: {e}")],
    }
}

/// A [`Known`] seen as a [`ModelSource`] (trait objects do not upcast here).
struct Models<'a>(&'a dyn Known);

impl ModelSource for Models<'_> {
    fn model(&self, key: &ModelKey) -> Option<&devplane_api::v1alpha1::DeviceModelSpec> {
        self.0.model(key)
    }
}

#[cfg(test)]
mod tests;
