//! The CRDs, generated from the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::v1alpha1::{Device, DeviceCommand, DeviceModel, Gateway, OnboardingBatch};

/// Every devplane CRD, in a stable order (models first, as everything refers to them).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        DeviceModel::crd(),
        Device::crd(),
        Gateway::crd(),
        OnboardingBatch::crd(),
        DeviceCommand::crd(),
    ]
}

/// File name of a CRD under `crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// Render a CRD as the YAML stored under `crds/` (and printed by `devplane crds`).
pub fn render_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}
