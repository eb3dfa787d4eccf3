use devplane_api::v1alpha1::{Device, Protocol};
use devplane_core::model::{ModelKey, resolve};

use super::*;

fn model() -> ResolvedModel {
    let models: std::collections::BTreeMap<ModelKey, devplane_api::v1alpha1::DeviceModelSpec> = [(
        ModelKey::new("ns", "m"),
        serde_yaml::from_str(
            "version: 1.0.0\nattributes:\n  - {identifier: room, dataType: {type: string}, required: true}\n  - {identifier: interval, dataType: {type: int, min: 1}, writable: true}\n",
        )
        .expect("model spec"),
    )]
    .into();
    resolve(&models, &ModelKey::new("ns", "m")).expect("resolves")
}

fn device(yaml: &str) -> Device {
    serde_yaml::from_str(yaml).expect("device")
}

#[test]
fn attribute_problems_name_the_field_and_point() {
    let d = device(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: d, namespace: ns}\nspec: {modelRef: {name: m}, attributes: {interval: 5}, desired: {room: hall}}\n",
    );
    let problems: Vec<String> = attribute_problems(&d, &model())
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(
        problems,
        [
            "spec.attributes: required attribute \"room\" is missing",
            "spec.desired: attribute \"room\" is not writable"
        ]
    );
    let ok = device(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {name: d, namespace: ns}\nspec: {modelRef: {name: m}, attributes: {room: hall}, desired: {interval: 5}}\n",
    );
    assert!(attribute_problems(&ok, &model()).is_empty());
}

#[test]
fn endpoints_follow_the_allowed_protocols() {
    let all = vec![
        ("mqtt".to_string(), "mqtt://h:1883".to_string()),
        ("http".to_string(), "http://h".to_string()),
        ("coap".to_string(), "coap://h".to_string()),
        ("coaps".to_string(), "coaps://h".to_string()),
    ];
    assert_eq!(endpoints_for(&all, &[Protocol::Mqtt]).len(), 1);
    assert_eq!(endpoints_for(&all, &[]).len(), 4);
    assert_eq!(
        endpoints_for(&all, &[Protocol::Coap]).len(),
        2,
        "CoAP over DTLS goes with coap"
    );
}
