//! OnboardingBatch: bulk creation of devices from a template.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, LocalReference};
use super::device::DeviceSpec;

/// Bulk onboarding: a Device template expanded over a list of items (inline, CSV, or a count
/// with a name pattern) into Devices the batch owns.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "OnboardingBatch",
    namespaced,
    status = "OnboardingBatchStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ob",
    category = "devplane",
    doc = "Bulk onboarding: a Device template expanded over inline items, CSV rows, or a count and name pattern.",
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.total",
        description = "Items in the batch"
    ),
    printcolumn(
        name = "Created",
        type_ = "integer",
        json_path = ".status.created",
        description = "Devices created so far"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Items that could not be created"
    ),
    printcolumn(
        name = "Complete",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Complete\")].status",
        description = "Whether every item was processed"
    ),
    printcolumn(
        name = "Site",
        type_ = "string",
        json_path = ".spec.site",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OnboardingBatchSpec {
    /// The Device every item starts from; items override the name, serial number, labels
    /// and attribute values.
    pub template: DeviceTemplate,
    /// The devices to create.
    pub items: BatchItems,
    /// Site the devices belong to; set as label `iot.devplane.io/site` on each device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub site: Option<String>,
    /// Asset the devices belong to; set as label `iot.devplane.io/asset` on each device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub asset: Option<String>,
    /// Gateway every device connects through (overrides the template's connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ref: Option<LocalReference>,
    /// What happens to the devices when the batch is deleted: Retain keeps them, Delete
    /// removes them with their credentials.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Template of the devices a batch creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTemplate {
    /// Labels and annotations every device gets.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// Spec every device starts from.
    pub spec: DeviceSpec,
}

/// Labels and annotations of templated devices.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels every device gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations every device gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The items of a batch: exactly one of `list`, `csv` and `generate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.list), has(self.csv), has(self.generate)].filter(x, x).size() == 1",
        "message": "items takes exactly one of list, csv and generate"
    }
]))]
pub struct BatchItems {
    /// Items given one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<BatchItem>>,
    /// Items as CSV text with a header row. Column `name` is required; `serialNumber` sets the
    /// serial number; a column `label:<key>` sets a label; every other column is an attribute
    /// identifier whose cell is parsed by the attribute's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
    /// Items generated from a count and a name pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateItems>,
}

/// One item of a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItem {
    /// Name of the Device.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Serial number of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Labels added to the template's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Attribute values merged over the template's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "common::value_map")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Items generated from a count and a name pattern.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateItems {
    /// How many devices to create.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub count: i64,
    /// Name of each device: `{index}` is replaced by the item number, `{index:N}` by the
    /// number zero-padded to N digits, for example `inverter-{index:03}`.
    #[schemars(length(min = 1, max = 200))]
    pub name_pattern: String,
    /// First item number.
    #[serde(default = "default_start")]
    #[schemars(range(min = 0))]
    pub start: i64,
}

fn default_start() -> i64 {
    1
}

/// What happens to a batch's devices when the batch is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the devices (they are orphaned).
    #[default]
    Retain,
    /// Delete the devices and their credentials with the batch.
    Delete,
}

/// Observed state of an OnboardingBatch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnboardingBatchStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Progressing while devices are being created, Complete when every item was processed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// Items in the batch.
    #[serde(default)]
    pub total: i64,
    /// Devices created (or found already present and owned by the batch).
    #[serde(default)]
    pub created: i64,
    /// Items that could not be created.
    #[serde(default)]
    pub failed: i64,
    /// Why items failed, up to the first 100 failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ItemFailure>,
}

/// Why one item of a batch failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    /// The item's device name, or its position when it has none.
    pub item: String,
    /// Why it failed.
    pub reason: String,
}
