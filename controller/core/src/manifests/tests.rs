use devplane_api::v1alpha1::DeviceModel;
use serde::Deserialize;

use super::*;

fn documents(yaml: &str) -> Vec<Document> {
    serde_yaml::Deserializer::from_str(yaml)
        .enumerate()
        .map(|(i, doc)| Document {
            source: format!("test.yaml#{}", i + 1),
            object: Value::deserialize(doc).expect("yaml"),
        })
        .collect()
}

fn library() -> Vec<DeviceModel> {
    devplane_api::library::models().expect("library parses")
}

fn found(yaml: &str) -> Vec<String> {
    check(&documents(yaml), &library())
        .iter()
        .map(ToString::to_string)
        .collect()
}

const MODEL: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: sensor, namespace: site}
spec:
  version: 1.2.0
  extends: [{name: temperature, namespace: devplane-library}]
  attributes:
    - {identifier: room, dataType: {type: string}, required: true}
    - {identifier: interval, dataType: {type: int, min: 1}, writable: true}
  services:
    - identifier: blink
      inputs: [{identifier: times, dataType: {type: int, min: 1, max: 5}, required: true}]
"#;

#[test]
fn consistent_manifests_have_no_findings() {
    let yaml = format!(
        r#"{MODEL}---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: s1, namespace: site}}
spec: {{modelRef: {{name: sensor, version: "^1.2"}}, attributes: {{room: hall}}, desired: {{interval: 5}}}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: c1, namespace: site}}
spec: {{device: s1, service: blink, params: {{times: 3}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: site}}
"#
    );
    assert_eq!(found(&yaml), Vec::<String>::new());
}

#[test]
fn device_problems_name_file_object_and_field() {
    let yaml = format!(
        r#"{MODEL}---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: s1, namespace: site}}
spec:
  modelRef: {{name: sensor, version: "^2"}}
  attributes: {{room: 7, colour: red}}
  desired: {{room: hall}}
  connection: {{gatewayRef: {{name: nowhere}}}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: s2, namespace: site}}
spec: {{modelRef: {{name: unknown-model}}}}
"#
    );
    assert_eq!(
        found(&yaml),
        [
            "test.yaml#2: Device site/s1: spec.connection.gatewayRef.name: gateway site/nowhere is not defined in these manifests",
            "test.yaml#2: Device site/s1: spec.modelRef.version: model site/sensor has version 1.2.0, which does not satisfy \"^2\"",
            "test.yaml#2: Device site/s1: spec.attributes.colour: unknown attribute \"colour\"",
            "test.yaml#2: Device site/s1: spec.attributes.room: attribute \"room\": expected string, found integer",
            "test.yaml#2: Device site/s1: spec.desired.room: attribute \"room\" is not writable",
            "test.yaml#3: Device site/s2: spec.modelRef: model site/unknown-model is not defined in these manifests or the standard library",
        ]
    );
}

#[test]
fn model_problems_point_at_the_extends_entry_or_definition() {
    let yaml = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: a, namespace: m}
spec: {version: 1.0.0, extends: [{name: temperature, namespace: devplane-library}, {name: b}]}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: b, namespace: m}
spec: {version: 1.0.0, extends: [{name: a}]}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: c, namespace: m}
spec:
  version: 1.0.0
  extends: [{name: humidity, namespace: devplane-library}]
  measurePoints: [{identifier: humidity, dataType: {type: enum}}]
"#;
    assert_eq!(
        found(yaml),
        [
            "test.yaml#1: DeviceModel m/a: spec.extends[1]: extends cycle: m/a → m/b → m/a",
            "test.yaml#2: DeviceModel m/b: spec.extends[0]: extends cycle: m/b → m/a → m/b",
            "test.yaml#3: DeviceModel m/c: spec.measurePoints[0].dataType.enumValues: enum needs at least one value in enumValues",
        ]
    );
}

#[test]
fn a_conflicting_identifier_is_reported_on_the_model_that_defines_it() {
    let yaml = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: c, namespace: m}
spec:
  version: 1.0.0
  extends: [{name: humidity, namespace: devplane-library}]
  measurePoints: [{identifier: humidity, dataType: {type: double}}]
"#;
    let findings = found(yaml);
    assert_eq!(findings.len(), 1);
    assert!(findings[0].starts_with("test.yaml#1: DeviceModel m/c: spec.measurePoints[0]: identifier \"humidity\" is defined twice"), "{findings:?}");
}

#[test]
fn batches_commands_and_duplicates_are_checked() {
    let yaml = format!(
        r#"{MODEL}---
apiVersion: iot.devplane.io/v1alpha1
kind: OnboardingBatch
metadata: {{name: b, namespace: site}}
spec:
  template: {{spec: {{modelRef: {{name: sensor}}, attributes: {{room: lab}}}}}}
  items:
    list:
      - {{name: s-1}}
      - {{name: s-2, attributes: {{interval: 0}}}}
      - {{name: S3}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: c1, namespace: site}}
spec: {{device: s-1, service: blink, params: {{times: 9}}}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: c2, namespace: site}}
spec: {{device: s-1, service: explode}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: c3, namespace: site}}
spec: {{device: ghost, service: blink}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: c3, namespace: site}}
spec: {{device: s-1, service: blink, params: {{times: 1}}}}
"#
    );
    assert_eq!(
        found(&yaml),
        [
            "test.yaml#6: DeviceCommand site/c3: metadata.name: defined again (first in test.yaml#5)",
            &*format!(
                "test.yaml#2: OnboardingBatch site/b: spec.items: item S3: name: Invalid value: \"S3\": {}",
                crate::naming::NameError::NotDns1123Subdomain
            ),
            "test.yaml#2: OnboardingBatch site/b: spec.items: item s-2: attribute \"interval\": 0 is out of range: allowed at least 1",
            "test.yaml#3: DeviceCommand site/c1: spec.params.times: input parameter \"times\": 9 is out of range: allowed [1, 5]",
            "test.yaml#4: DeviceCommand site/c2: spec.service: model site/sensor has no service \"explode\"",
            "test.yaml#5: DeviceCommand site/c3: spec.device: device site/ghost is not defined in these manifests (nor created by a batch in them)",
        ]
    );
}

#[test]
fn a_document_may_redefine_a_library_model() {
    let yaml = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: temperature, namespace: devplane-library}
spec: {version: 9.0.0, measurePoints: [{identifier: t, dataType: {type: double}}]}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: x, namespace: y}
spec: {version: 1.0.0, extends: [{name: temperature, namespace: devplane-library, version: ">=9"}]}
"#;
    assert_eq!(found(yaml), Vec::<String>::new());
}

#[test]
fn a_product_key_claimed_twice_is_reported_on_the_second_model() {
    let yaml = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: first, namespace: site}
spec: {version: 1.0.0, enos: {productKey: pk01}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: second, namespace: other}
spec: {version: 1.0.0, enos: {productKey: pk01}}
---
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: third, namespace: other}
spec: {version: 1.0.0, enos: {productKey: pk02}}
"#;
    assert_eq!(
        found(yaml),
        vec![
            "test.yaml#2: DeviceModel other/second: spec.enos.productKey: product key pk01 is \
             claimed by DeviceModel site/first first"
        ]
    );
}
