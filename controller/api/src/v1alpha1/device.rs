//! Device: one physical or logical device.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    self, ConnectionStatus, Lifecycle, LocalReference, ModelReference, Phase, Protocol,
};

/// One physical or logical device: which model it conforms to, how it connects, its attribute
/// values and the lifecycle stage the operator wants for it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "Device",
    namespaced,
    status = "DeviceStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "dev",
    category = "devplane",
    doc = "One device: its model, how it connects, its attribute values and its desired lifecycle stage.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.modelRef.name",
        description = "DeviceModel the device conforms to"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Observed lifecycle phase"
    ),
    printcolumn(
        name = "Connection",
        type_ = "string",
        json_path = ".status.connection.state",
        description = "Online, Offline or Never"
    ),
    printcolumn(
        name = "Last Seen",
        type_ = "date",
        json_path = ".status.connection.lastSeen",
        description = "When the device was last heard from"
    ),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".spec.connection.gatewayRef.name",
        description = "Gateway the device connects through",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// The DeviceModel this device conforms to.
    pub model_ref: ModelReference,
    /// How the device reaches the front door: directly, or through a gateway.
    #[serde(default)]
    pub connection: Connection,
    /// Values of the model's attributes, by identifier. Each must satisfy the attribute's type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Desired values of writable attributes, pushed to the device when it connects and when
    /// they change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub desired: BTreeMap<String, serde_json::Value>,
    /// Desired lifecycle stage. Planned → Servicing or Decommissioned; Servicing ⇄ Maintenance;
    /// Servicing or Maintenance → Decommissioned. Decommissioned is terminal.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "oldSelf != 'Decommissioned' || self == 'Decommissioned'",
            "message": "lifecycle Decommissioned is terminal: delete and re-create the object to use it again"
        },
        {
            "rule": "self != 'Planned' || oldSelf == 'Planned'",
            "message": "lifecycle cannot return to Planned once it has left it"
        },
        {
            "rule": "self != 'Maintenance' || oldSelf != 'Planned'",
            "message": "lifecycle cannot go from Planned to Maintenance: put it into Servicing first"
        }
    ]))]
    pub lifecycle: Lifecycle,
    /// Manufacturer serial number, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How the device identifies itself over the EnOS device protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enos: Option<EnosDevice>,
}

/// A Device over the EnOS device protocol: its product is its model's `spec.enos.productKey`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnosDevice {
    /// The device key it presents; the Device's name when not set. Unique among the devices
    /// of its model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::device_model::ENOS_KEY_PATTERN))]
    pub device_key: Option<String>,
}

impl DeviceSpec {
    /// The EnOS device key of a Device named `name`.
    pub fn enos_device_key<'a>(&'a self, name: &'a str) -> &'a str {
        self.enos
            .as_ref()
            .and_then(|e| e.device_key.as_deref())
            .unwrap_or(name)
    }
}

/// How a device connects. Exactly one of `direct` and `gatewayRef` is set; an empty connection
/// means direct over every protocol.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.direct) && has(self.gatewayRef))",
        "message": "connection takes either direct or gatewayRef, not both"
    }
]))]
pub struct Connection {
    /// The device connects to the front door itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectConnection>,
    /// The device is reached through this Gateway (same namespace), which acts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ref: Option<LocalReference>,
}

impl Connection {
    /// The gateway the device connects through, if any.
    pub fn gateway(&self) -> Option<&str> {
        self.gateway_ref.as_ref().map(|g| g.name.as_str())
    }

    /// Protocols the device may use directly (none when it goes through a gateway).
    pub fn direct_protocols(&self) -> Vec<Protocol> {
        match (&self.direct, &self.gateway_ref) {
            (_, Some(_)) => Vec::new(),
            (Some(d), None) if !d.protocols.is_empty() => d.protocols.clone(),
            _ => vec![Protocol::Mqtt, Protocol::Http, Protocol::Coap],
        }
    }
}

/// Direct connection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectConnection {
    /// Protocols the device may use; empty means all of mqtt, http and coap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub protocols: Vec<Protocol>,
}

/// Observed state of a Device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Observed lifecycle phase: Planned, Provisioned, Servicing, Maintenance or Decommissioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "oldSelf != 'Decommissioned' || self == 'Decommissioned'",
            "message": "phase Decommissioned is terminal"
        },
        {
            "rule": "self != 'Planned' || oldSelf == 'Planned'",
            "message": "phase cannot return to Planned"
        },
        {
            "rule": "self != 'Provisioned' || oldSelf == 'Planned' || oldSelf == 'Provisioned'",
            "message": "phase Provisioned follows only Planned"
        },
        {
            "rule": "self != 'Servicing' || oldSelf != 'Planned'",
            "message": "phase cannot go from Planned to Servicing: credentials are issued first (Provisioned)"
        },
        {
            "rule": "self != 'Maintenance' || oldSelf == 'Servicing' || oldSelf == 'Maintenance'",
            "message": "phase Maintenance follows only Servicing"
        }
    ]))]
    pub phase: Option<Phase>,
    /// Ready, ModelResolved, CredentialsIssued, Connected and TwinSynced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// Connection state and last seen, as the front door observed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,
    /// Attribute values the device reported, by identifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub reported: BTreeMap<String, serde_json::Value>,
    /// Version of the model the device was last validated against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The credentials issued to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
}

/// Where a device's or gateway's credentials are and when they were issued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// Name of the Secret holding the credentials (same namespace).
    pub secret_name: String,
    /// When the current credentials were issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
}
