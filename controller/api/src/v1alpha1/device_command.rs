//! DeviceCommand: invoke a model service on a device.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common;

/// Invoke one of a device's model services with parameters. The front door delivers it; the
/// status carries the phase, the device's output and timestamps. The spec is immutable.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "DeviceCommand",
    namespaced,
    status = "DeviceCommandStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "dcmd",
    category = "devplane",
    doc = "Invoke a model service on a device: parameters and timeout; status carries phase, output and timestamps.",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.device",
        description = "Target device"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.service",
        description = "Model service invoked"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Sent, Succeeded, Failed, TimedOut or Rejected"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self == oldSelf", "message": "DeviceCommand spec is immutable: create a new command instead" }
]))]
pub struct DeviceCommandSpec {
    /// Name of the Device (same namespace) the command is for.
    #[schemars(length(min = 1, max = 253))]
    pub device: String,
    /// Identifier of the service in the device's model.
    #[schemars(length(min = 1, max = 128))]
    pub service: String,
    /// Input parameters by identifier; each must satisfy the service's input definition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Seconds to wait for the device's answer before the command is TimedOut.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

fn default_timeout_seconds() -> i32 {
    30
}

/// Phase of a DeviceCommand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CommandPhase {
    /// Valid and waiting for delivery.
    #[default]
    Pending,
    /// Delivered to the device; waiting for its answer.
    Sent,
    /// The device answered with success.
    Succeeded,
    /// The device answered with an error.
    Failed,
    /// No answer within `timeoutSeconds`.
    TimedOut,
    /// Not valid for the device's model (unknown service or bad parameters) or the device's
    /// lifecycle; never sent.
    Rejected,
}

impl CommandPhase {
    /// Whether the command is finished.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CommandPhase::Succeeded
                | CommandPhase::Failed
                | CommandPhase::TimedOut
                | CommandPhase::Rejected
        )
    }
}

/// Observed state of a DeviceCommand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCommandStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Sent, Succeeded, Failed, TimedOut or Rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CommandPhase>,
    /// Machine-readable reason of a Failed, TimedOut or Rejected command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Output parameters the device returned, by identifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub output: BTreeMap<String, serde_json::Value>,
    /// When the command was delivered to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Time>,
    /// When the command reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Ready (the command is valid for its device) and Complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
}
