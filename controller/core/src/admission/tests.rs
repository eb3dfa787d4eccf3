use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// What exists, in maps.
#[derive(Default)]
struct KnownObjects {
    /// Models by key.
    models: BTreeMap<ModelKey, devplane_api::v1alpha1::DeviceModelSpec>,
    /// Gateways (namespace, name).
    gateways: BTreeSet<(String, String)>,
    /// Devices (namespace, name) and their model.
    devices: BTreeMap<(String, String), ModelKey>,
}

impl ModelSource for KnownObjects {
    fn model(&self, key: &ModelKey) -> Option<&devplane_api::v1alpha1::DeviceModelSpec> {
        self.models.get(key)
    }
}

impl Known for KnownObjects {
    fn gateway_exists(&self, namespace: &str, name: &str) -> bool {
        self.gateways
            .contains(&(namespace.to_string(), name.to_string()))
    }

    fn device_model(&self, namespace: &str, name: &str) -> Option<ModelKey> {
        self.devices
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

fn known() -> KnownObjects {
    let model: devplane_api::v1alpha1::DeviceModel = serde_yaml::from_str(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: probe, namespace: plant}
spec:
  version: 1.2.0
  attributes:
    - identifier: interval
      dataType: {type: int, min: 10, max: 600}
      writable: true
  services:
    - identifier: reboot
      inputs:
        - identifier: delay
          dataType: {type: int, min: 0}
"#,
    )
    .expect("model");
    let mut known = KnownObjects::default();
    known
        .models
        .insert(ModelKey::new("plant", "probe"), model.spec);
    known.gateways.insert(("plant".into(), "gw".into()));
    known.devices.insert(
        ("plant".into(), "sensor".into()),
        ModelKey::new("plant", "probe"),
    );
    known
}

fn device(spec: &str) -> Device {
    serde_yaml::from_str(&format!(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {{name: d, namespace: plant}}\nspec: {spec}\n"
    ))
    .expect("device")
}

fn command(spec: &str) -> DeviceCommand {
    serde_yaml::from_str(&format!(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: DeviceCommand\nmetadata: {{name: c, namespace: plant}}\nspec: {spec}\n"
    ))
    .expect("command")
}

#[test]
fn a_device_is_admitted_only_with_a_resolving_model_fitting_values_and_an_existing_gateway() {
    let known = known();
    let cases = [
        (
            "{modelRef: {name: probe}, attributes: {interval: 60}}",
            None,
        ),
        (
            "{modelRef: {name: ghost}}",
            Some("model plant/ghost does not resolve"),
        ),
        (
            "{modelRef: {name: probe, version: '^2'}}",
            Some("does not satisfy"),
        ),
        (
            "{modelRef: {name: probe}, attributes: {interval: 5}}",
            Some("spec.attributes"),
        ),
        (
            "{modelRef: {name: probe}, desired: {interval: 6000}}",
            Some("spec.desired"),
        ),
        (
            "{modelRef: {name: probe}, connection: {gatewayRef: {name: gw}}}",
            None,
        ),
        (
            "{modelRef: {name: probe}, connection: {gatewayRef: {name: nope}}}",
            Some("gateway plant/nope does not exist"),
        ),
    ];
    for (spec, want) in cases {
        let problems = review_device(&device(spec), &known);
        match want {
            None => assert!(problems.is_empty(), "{spec}: {problems:?}"),
            Some(text) => assert!(
                problems.iter().any(|p| p.contains(text)),
                "{spec}: {problems:?}"
            ),
        }
    }
}

#[test]
fn a_command_is_admitted_only_for_an_existing_device_and_a_fitting_call() {
    let known = known();
    assert!(
        review_command(
            &command("{device: sensor, service: reboot, params: {delay: 1}}"),
            &known
        )
        .is_empty()
    );
    for (spec, want) in [
        (
            "{device: ghost, service: reboot}",
            "device plant/ghost does not exist",
        ),
        ("{device: sensor, service: explode}", "explode"),
        (
            "{device: sensor, service: reboot, params: {delay: -1}}",
            "delay",
        ),
    ] {
        let problems = review_command(&command(spec), &known);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{spec}: {problems:?}"
        );
    }
}

#[test]
fn a_gateway_needs_a_resolving_model() {
    let known = known();
    let gateway = |model: &str| -> Gateway {
        serde_yaml::from_str(&format!(
            "apiVersion: iot.devplane.io/v1alpha1\nkind: Gateway\nmetadata: {{name: g, namespace: plant}}\nspec: {{modelRef: {{name: {model}}}}}\n"
        ))
        .expect("gateway")
    };
    assert!(review_gateway(&gateway("probe"), &known).is_empty());
    assert_eq!(review_gateway(&gateway("ghost"), &known).len(), 1);
}
