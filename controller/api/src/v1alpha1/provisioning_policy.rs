//! ProvisioningPolicy: who may provision themselves, zero-touch.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, LocalReference};
use super::onboarding_batch::DeviceTemplate;

/// Zero-touch provisioning: devices that prove they belong (a key derived from a group key, a
/// client certificate signed by a CA, or a pre-registered serial number) get a Device and
/// credentials on first contact with the front door, with no per-device step.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "ProvisioningPolicy",
    namespaced,
    status = "ProvisioningPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "pp",
    category = "devplane",
    doc = "Zero-touch provisioning: devices that prove they belong get a Device and credentials on first contact.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.template.spec.modelRef.name",
        description = "DeviceModel of the devices it creates"
    ),
    printcolumn(
        name = "Provisioned",
        type_ = "integer",
        json_path = ".status.provisioned",
        description = "Devices provisioned through the policy"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.limits.maxDevices",
        description = "Most devices the policy provisions"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy can provision"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastProvisioned.time",
        description = "When a device last provisioned",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningPolicySpec {
    /// The Device every provisioned device starts from (its lifecycle defaults to Servicing so
    /// it may connect at once). The policy adds the label `iot.devplane.io/provisioning-policy`.
    pub template: DeviceTemplate,
    /// How a device's name follows from the id it presents.
    #[serde(default)]
    pub naming: Naming,
    /// What a device must prove. Every mechanism set here must hold.
    pub attestation: Attestation,
    /// How many, when, and from which ids.
    #[serde(default)]
    pub limits: Limits,
    /// What a second provisioning of an existing device gets.
    #[serde(default)]
    pub reprovisioning: Reprovisioning,
}

/// How a provisioned device is named.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Naming {
    /// Prefix of the Device name; the name is the prefix followed by the device id, and must
    /// be a DNS-1123 subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub prefix: Option<String>,
    /// Regular expression every presented device id must match in full, for example
    /// `th-[0-9a-f]{8}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub id_pattern: Option<String>,
}

/// What a device must prove: one or more mechanisms, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.symmetricKey) || has(self.x509) || has(self.preRegistered)",
        "message": "attestation needs at least one of symmetricKey, x509 and preRegistered"
    }
]))]
pub struct Attestation {
    /// A group key: the device presents `base64(HMAC-SHA256(groupKey, deviceId))`, the key the
    /// factory derived and flashed for it, so the group key never leaves the plant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyAttestation>,
    /// A CA: the device presents, over TLS, a client certificate the CA signed whose common
    /// name is its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
    /// An allow-list of serial numbers, optionally with a one-time token each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_registered: Option<PreRegistered>,
}

/// Group-key attestation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyAttestation {
    /// Secret (same namespace) whose key `groupKey` holds the raw group key bytes.
    pub secret_ref: LocalReference,
}

/// Certificate attestation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    /// Secret (same namespace) whose key `ca.crt` holds the PEM CA certificate(s) device
    /// certificates must chain to.
    pub ca_secret_ref: LocalReference,
}

/// The serial numbers allowed to provision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.items) || has(self.csv)",
        "message": "preRegistered needs items or csv"
    }
]))]
pub struct PreRegistered {
    /// The allowed devices one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<PreRegisteredItem>>,
    /// The allowed devices as CSV text with a header row: `serialNumber` is required,
    /// `deviceId` (the id the device is named after; the serial number when absent) and
    /// `token` (a one-time token) are optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
}

/// One pre-registered device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreRegisteredItem {
    /// The device's serial number, as it presents it.
    #[schemars(length(min = 1, max = 253))]
    pub serial_number: String,
    /// The id the device is named after (the serial number when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// A one-time token the device must present; once it provisioned, the token is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Limits of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most devices the policy provisions (counting those it provisioned before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_devices: Option<i64>,
    /// The policy provisions nothing before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// The policy provisions nothing after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

/// What a second provisioning of an existing device gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Reprovisioning {
    /// The same identity again, when it presents the serial number it first presented (or
    /// none, when it presented none).
    #[default]
    SameSerialOnly,
    /// Fresh credentials (the previous password keeps working through the rotation overlap).
    Reissue,
    /// Refused once the device has connected; before that a retry (whose answer may have been
    /// lost) gets the same identity.
    Refuse,
}

/// Observed state of a ProvisioningPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready when its model, Secrets and allow-list are usable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// Devices that carry the policy's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<i64>,
    /// The device provisioned last (written by the front door).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_provisioned: Option<LastProvisioned>,
    /// Refused requests by reason, as the front door counted them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, i64>,
}

/// The device provisioned last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastProvisioned {
    /// Its Device name.
    pub device: String,
    /// When.
    pub time: Time,
}
