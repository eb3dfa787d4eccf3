//! Gateway: an edge device that connects on behalf of sub-devices.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, ConnectionStatus, Lifecycle, ModelReference, Phase, Protocol};
use super::device::CredentialsStatus;

/// An edge gateway: it has its own model and credentials and acts for the sub-devices it may
/// act for (devices whose `gatewayRef` names it, plus those its selector picks).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "Gateway",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "gw",
    category = "devplane",
    doc = "An edge gateway: its model, its credentials, and which sub-devices it may act for.",
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.modelRef.name",
        description = "DeviceModel of the gateway itself"
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
        name = "Sub-Devices",
        type_ = "integer",
        json_path = ".status.subDevices",
        description = "Devices the gateway may act for"
    ),
    printcolumn(
        name = "Last Seen",
        type_ = "date",
        json_path = ".status.connection.lastSeen",
        description = "When the gateway was last heard from"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The DeviceModel of the gateway itself.
    pub model_ref: ModelReference,
    /// Protocols the gateway may use; empty means all of mqtt, http and coap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub protocols: Vec<Protocol>,
    /// Which devices the gateway may act for, beyond those whose `gatewayRef` names it.
    #[serde(default)]
    pub sub_devices: SubDevicePolicy,
    /// Whether the gateway may register new sub-devices itself.
    #[serde(default)]
    pub dynamic_registration: DynamicRegistration,
    /// Desired lifecycle stage, with the same rules as a Device's.
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
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Which devices a gateway may act for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubDevicePolicy {
    /// Devices in the gateway's namespace matching this selector, in addition to those whose
    /// `spec.connection.gatewayRef` names the gateway. Unset means only the latter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Most sub-devices the gateway may have logged in at once; unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_active: Option<i32>,
}

/// Dynamic sub-device registration: the gateway creates Devices for sub-devices it discovers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DynamicRegistration {
    /// Whether the gateway may register sub-devices.
    #[serde(default)]
    pub enabled: bool,
    /// Models a registered sub-device may have; empty means any model the gateway names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<ModelReference>,
    /// Namespace the Devices are created in; defaults to the gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Most sub-devices the gateway may register; unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_devices: Option<i32>,
}

/// Observed state of a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Observed lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, ModelResolved, CredentialsIssued and Connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// Connection state and last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,
    /// How many devices the gateway may act for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_devices: Option<i64>,
    /// How many of them are logged in through the gateway now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sub_devices: Option<i64>,
    /// The credentials issued to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
}
