use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use devplane_api::constants::labels;
use k8s_openapi::api::core::v1::Secret;

use super::*;

fn device(lifecycle: &str, phase: Option<&str>, protocols: &str) -> Device {
    let status = phase
        .map(|p| format!("status: {{phase: {p}}}"))
        .unwrap_or_default();
    serde_yaml::from_str(&format!(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: thermo, namespace: home, uid: u1, generation: 1}}
spec:
  modelRef: {{name: m}}
  lifecycle: {lifecycle}
  connection: {protocols}
{status}
"#
    ))
    .expect("device yaml")
}

fn secret(labels: (&str, &str), data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some("thermo-credentials".into());
    s.metadata.namespace = Some("home".into());
    s.metadata.labels = Some(BTreeMap::from([(
        labels.0.to_string(),
        labels.1.to_string(),
    )]));
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}

fn now() -> jiff::Timestamp {
    "2026-11-29T12:00:00Z".parse().expect("time")
}

fn registry(device: Device) -> Registry {
    let mut r = Registry::new();
    r.apply_device(&device);
    r.apply_secret(&secret((labels::DEVICE, "thermo"), &[("password", "pw-1")]));
    r
}

#[test]
fn a_device_authenticates_with_its_own_password_only() {
    let r = registry(device("Servicing", Some("Provisioned"), "{}"));
    let (id, _) = r
        .authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now())
        .expect("valid credentials");
    assert_eq!(id, Identity::new("home", "thermo"));
    assert_eq!(
        r.authenticate_device("home/thermo", b"pw-2", Protocol::Mqtt, now()),
        Err(Refusal::BadCredentials)
    );
    assert_eq!(
        r.authenticate_device("home/other", b"pw-1", Protocol::Mqtt, now()),
        Err(Refusal::BadCredentials)
    );
    assert_eq!(
        r.authenticate_device("thermo", b"pw-1", Protocol::Mqtt, now()),
        Err(Refusal::BadCredentials)
    );
}

#[test]
fn planned_and_decommissioned_devices_are_not_authorized() {
    for (lifecycle, phase) in [
        ("Planned", Some("Planned")),
        ("Decommissioned", Some("Decommissioned")),
        ("Servicing", None),
    ] {
        let r = registry(device(lifecycle, phase, "{}"));
        assert!(
            matches!(
                r.authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now()),
                Err(Refusal::NotAuthorized(_))
            ),
            "{lifecycle} {phase:?}"
        );
    }
}

#[test]
fn a_device_limited_to_other_protocols_or_behind_a_gateway_is_not_authorized() {
    for connection in ["{direct: {protocols: [coap]}}", "{gatewayRef: {name: gw}}"] {
        let r = registry(device("Servicing", Some("Servicing"), connection));
        assert!(matches!(
            r.authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now()),
            Err(Refusal::NotAuthorized(_))
        ));
    }
}

#[test]
fn a_rotated_out_password_works_until_the_overlap_ends() {
    let mut r = registry(device("Servicing", Some("Servicing"), "{}"));
    let (_, old_tag) = r
        .authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now())
        .expect("old password");
    r.apply_secret(&secret(
        (labels::DEVICE, "thermo"),
        &[
            ("password", "pw-2"),
            ("previous-password", "pw-1"),
            ("previous-password-expires-at", "2026-11-29T12:10:00Z"),
        ],
    ));
    let id = Identity::new("home", "thermo");
    assert!(
        r.authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now())
            .is_ok()
    );
    assert!(
        r.authenticate_device("home/thermo", b"pw-2", Protocol::Mqtt, now())
            .is_ok()
    );
    assert_eq!(
        r.device_session_problem(&id, &old_tag, Protocol::Mqtt, now()),
        None
    );
    let later: jiff::Timestamp = "2026-11-29T12:10:00Z".parse().expect("time");
    assert_eq!(
        r.authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, later),
        Err(Refusal::BadCredentials)
    );
    assert!(
        r.device_session_problem(&id, &old_tag, Protocol::Mqtt, later)
            .is_some()
    );
}

#[test]
fn revoking_or_decommissioning_ends_a_live_session() {
    let mut r = registry(device("Servicing", Some("Servicing"), "{}"));
    let id = Identity::new("home", "thermo");
    let (_, tag) = r
        .authenticate_device("home/thermo", b"pw-1", Protocol::Mqtt, now())
        .expect("valid");
    assert_eq!(
        r.device_session_problem(&id, &tag, Protocol::Mqtt, now()),
        None
    );
    assert_eq!(
        r.delete_secret("home", "thermo-credentials"),
        Some(id.clone())
    );
    assert!(
        r.device_session_problem(&id, &tag, Protocol::Mqtt, now())
            .is_some()
    );

    let mut r = registry(device("Servicing", Some("Servicing"), "{}"));
    r.apply_device(&device("Decommissioned", Some("Servicing"), "{}"));
    assert!(
        r.device_session_problem(&id, &tag, Protocol::Mqtt, now())
            .is_some()
    );
    r.delete_device(&id);
    assert!(
        r.device_session_problem(&id, &tag, Protocol::Mqtt, now())
            .is_some()
    );
}

#[test]
fn applications_and_devices_have_separate_credentials() {
    let mut r = Registry::new();
    r.apply_secret(&secret(
        (labels::APPLICATION, "dash"),
        &[("password", "app-pw")],
    ));
    assert!(
        r.authenticate_application("home/dash", b"app-pw", now())
            .is_ok()
    );
    assert_eq!(
        r.authenticate_device("home/dash", b"app-pw", Protocol::Mqtt, now()),
        Err(Refusal::BadCredentials)
    );
    assert_eq!(
        r.authenticate_application("home/dash", b"nope", now()),
        Err(Refusal::BadCredentials)
    );
}

#[test]
fn device_keys_are_kept_only_when_asked_and_follow_the_secret() {
    let plain = registry(device("Servicing", Some("Provisioned"), "{}"));
    let id = Identity::new("home", "thermo");
    assert_eq!(plain.device_key(&id), None, "no DTLS listener, no keys");
    let mut r = Registry::new();
    r.keep_device_keys();
    r.apply_device(&device("Servicing", Some("Provisioned"), "{}"));
    r.apply_secret(&secret((labels::DEVICE, "thermo"), &[("password", "pw-1")]));
    assert_eq!(r.device_key(&id), Some(&b"pw-1"[..]));
    r.apply_secret(&secret((labels::DEVICE, "thermo"), &[("password", "pw-2")]));
    assert_eq!(r.device_key(&id), Some(&b"pw-2"[..]), "rotated");
    r.delete_secret("home", "thermo-credentials");
    assert_eq!(r.device_key(&id), None, "revoked");
}

#[test]
fn a_secret_names_an_owner_too_long_for_its_label_by_its_annotation_only_when_they_agree() {
    let long = format!("{}-thermo", "t".repeat(90));
    let yaml = serde_yaml::to_string(&device("Servicing", Some("Provisioned"), "{}"))
        .expect("yaml")
        .replace("name: thermo", &format!("name: {long}"));
    let mut r = Registry::new();
    r.apply_device(&serde_yaml::from_str(&yaml).expect("device"));
    let label = devplane_core::naming::owner_label_value(&long);
    let mut own = secret((labels::DEVICE, &label), &[("password", "pw-long")]);
    own.metadata.annotations = Some(devplane_core::naming::owner_annotations(&long));
    assert_eq!(r.apply_secret(&own), Some(Identity::new("home", &long)));
    let (id, _) = r
        .authenticate_device(&format!("home/{long}"), b"pw-long", Protocol::Mqtt, now())
        .expect("the long name logs in");
    assert_eq!(id.name, long);
    // An annotation its label was not made from names nobody: the label stands.
    let mut other = secret((labels::DEVICE, "thermo"), &[("password", "pw-2")]);
    other.metadata.annotations = Some(devplane_core::naming::owner_annotations(&long));
    assert_eq!(
        r.apply_secret(&other),
        Some(Identity::new("home", "thermo"))
    );
}
