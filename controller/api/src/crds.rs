//! The CRDs, generated from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::v1alpha1::{
    Application, Device, DeviceCommand, DeviceModel, Gateway, OnboardingBatch, ProvisioningPolicy,
};

/// Every devplane CRD, in a stable order (models first, as everything refers to them).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        DeviceModel::crd(),
        Device::crd(),
        Gateway::crd(),
        OnboardingBatch::crd(),
        ProvisioningPolicy::crd(),
        DeviceCommand::crd(),
        Application::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                tidy(schema, false);
            }
        }
    }
    crds
}

/// Two touches on the generated schemas:
/// - descriptions: doc comments wrap lines at ~100 columns; join those lines (keeping blank-line
///   paragraph breaks) so `kubectl explain` can rewrap them;
/// - no `default` inside list items: the server would add defaulted fields to items of a list
///   the client sent, and client-side `kubectl apply` (which replaces lists whole in a merge
///   patch) would then report every re-apply as "configured". The Rust types default those
///   fields when they read an object, so nothing is lost.
fn tidy(schema: &mut JSONSchemaProps, in_list: bool) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| {
                paragraph
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    if in_list {
        schema.default = None;
    }
    if let Some(properties) = schema.properties.as_mut() {
        for child in properties.values_mut() {
            tidy(child, in_list);
        }
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = schema.additional_properties.as_mut() {
        tidy(child, in_list);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        tidy(items, true);
    }
}

/// File name of a CRD under `crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// Render a CRD as the YAML stored under `crds/` (and printed by `devplane crds`).
pub fn render_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}
