//! Fixture loading shared by the unit tests.

use std::collections::BTreeMap;

use devplane_api::v1alpha1::{DeviceModel, DeviceModelSpec};
use serde::Deserialize;

use crate::model::{self, ModelKey, ResolvedModel};

/// Every DeviceModel in a multi-document YAML text, by key.
pub fn models(yaml: &str) -> BTreeMap<ModelKey, DeviceModelSpec> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let model = DeviceModel::deserialize(doc).expect("fixture model parses");
            let key = ModelKey::new(
                model
                    .metadata
                    .namespace
                    .clone()
                    .expect("fixture model has a namespace"),
                model
                    .metadata
                    .name
                    .clone()
                    .expect("fixture model has a name"),
            );
            (key, model.spec)
        })
        .collect()
}

/// The shared model fixtures.
pub fn fixture_models() -> BTreeMap<ModelKey, DeviceModelSpec> {
    models(include_str!("../fixtures/models.yaml"))
}

/// Resolve one fixture model, which must resolve.
pub fn resolved(namespace: &str, name: &str) -> ResolvedModel {
    model::resolve(&fixture_models(), &ModelKey::new(namespace, name))
        .expect("fixture model resolves")
}
