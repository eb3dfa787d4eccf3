//! DeviceModel: the thing model a device or gateway conforms to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, ModelReference};

/// Pattern every feature, parameter and struct-field identifier must match.
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// Pattern of `spec.version`: a semantic version, MAJOR.MINOR.PATCH with optional pre-release
/// and build parts.
pub const SEMVER_PATTERN: &str =
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

/// A thing model: the attributes, measure points, services and events a kind of device has.
/// Models may extend other models (for example features of the standard library), and devices
/// and gateways refer to a model by name.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "DeviceModel",
    namespaced,
    status = "DeviceModelStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "dm",
    category = "devplane",
    doc = "A thing model: attributes, measure points, services and events, optionally extending other models.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "Semantic version of the model"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the model resolved"
    ),
    printcolumn(
        name = "Points",
        type_ = "integer",
        json_path = ".status.resolved.measurePoints",
        description = "Measure points after resolving extends"
    ),
    printcolumn(
        name = "Devices",
        type_ = "integer",
        json_path = ".status.devices",
        description = "Devices and gateways using this model"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelSpec {
    /// Semantic version of this model (MAJOR.MINOR.PATCH), for example `1.2.0`.
    #[schemars(regex(pattern = SEMVER_PATTERN))]
    pub version: String,
    /// Human-readable name of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the model describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Models whose features this model includes. Their attributes, measure points, services
    /// and events become part of this model; an identifier may come from only one model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extends: Vec<ModelReference>,
    /// Static or slowly changing properties (serial number, rated power, location).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Attribute>")]
    pub attributes: Vec<Attribute>,
    /// Time-series values the device reports (temperature, current, state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<MeasurePoint>")]
    pub measure_points: Vec<MeasurePoint>,
    /// Operations the device offers, invoked with DeviceCommands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Service>")]
    pub services: Vec<Service>,
    /// Notifications the device raises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Event>")]
    pub events: Vec<Event>,
    /// The model as an EnOS product: devices built for the EnOS device protocol connect with
    /// this product key (see `docs/enos.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enos: Option<EnosProduct>,
}

/// Pattern of an EnOS product or device key: what fits between the `/` of a topic and the
/// `&` of a user name.
pub const ENOS_KEY_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// A DeviceModel as an EnOS product.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnosProduct {
    /// The product key devices present (`{deviceKey}&{productKey}`); unique across the
    /// cluster: a second model claiming a key is refused (condition `EnosProductKey`).
    #[schemars(regex(pattern = ENOS_KEY_PATTERN))]
    pub product_key: String,
    /// Devices of this model may fetch their secret with the product secret (EnOS secure
    /// mode 3) while they have never connected. The controller keeps the product secret in
    /// the Secret `<model>-enos-product` (key `productSecret`) while this is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_activation: bool,
}

/// An attribute: a static or slowly changing property of a device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    /// Identifier used in payloads and in Device `spec.attributes`; unique within the resolved model.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the attribute means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Type and constraints of the value.
    pub data_type: DataType,
    /// Every device of this model must give the attribute a value (or the model a default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The cloud may set the attribute on the device (desired state in Device `spec.desired`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
    /// Value used when a device gives none. Must satisfy `dataType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "common::any_value")]
    pub default: Option<serde_json::Value>,
}

/// A measure point: a time-series value the device reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurePoint {
    /// Identifier used in telemetry payloads; unique within the resolved model.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the point measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Type and constraints of the value.
    pub data_type: DataType,
    /// Signal class of the point, as field engineers name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_type: Option<PointType>,
    /// The cloud may set the point on the device (a set-point).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable: bool,
    /// Values may carry a quality code: `{"value": 21.5, "quality": 0}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_quality: bool,
}

/// Signal class of a measure point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PointType {
    /// Analog input: a continuous reading such as a temperature.
    AI,
    /// Digital input: a status or state.
    DI,
    /// Pulse input: an accumulating counter such as energy.
    PI,
    /// Analog output: a continuous set-point.
    AO,
    /// Digital output: a switched output.
    DO,
}

/// A service: an operation the device offers, with input and output parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Identifier named by DeviceCommands; unique within the resolved model.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the service does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the device answers within the request (Sync) or reports completion later (Async).
    #[serde(default)]
    pub call_type: CallType,
    /// Parameters the caller passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Parameter>")]
    pub inputs: Vec<Parameter>,
    /// Parameters the device returns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Parameter>")]
    pub outputs: Vec<Parameter>,
}

/// How a service answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CallType {
    /// The device replies to the invocation itself.
    #[default]
    Sync,
    /// The device acknowledges and reports the result later.
    Async,
}

/// An event: a notification the device raises, with output parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Identifier used in event payloads; unique within the resolved model.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the event reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How serious the event is.
    #[serde(default)]
    pub severity: Severity,
    /// Parameters the event carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<Parameter>")]
    pub outputs: Vec<Parameter>,
}

/// Severity of an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    /// Informational.
    #[default]
    Info,
    /// Needs attention soon.
    Warning,
    /// A fault.
    Error,
    /// A fault that needs immediate action.
    Critical,
}

/// An input or output parameter of a service or event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// Identifier of the parameter in payloads; unique within its service or event.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the parameter means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Type and constraints of the value.
    pub data_type: DataType,
    /// The parameter must be present.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// Kind of a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// `true` or `false`.
    Bool,
    /// A whole number (64-bit signed).
    Int,
    /// A single-precision floating-point number.
    Float,
    /// A double-precision floating-point number.
    #[default]
    Double,
    /// UTF-8 text.
    String,
    /// One of `enumValues`, sent as its string value.
    Enum,
    /// A point in time: milliseconds since the Unix epoch, or an RFC 3339 string.
    Timestamp,
    /// An object with the named `fields`.
    Struct,
    /// A list of `items`.
    Array,
}

impl DataKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Bool => "bool",
            DataKind::Int => "int",
            DataKind::Float => "float",
            DataKind::Double => "double",
            DataKind::String => "string",
            DataKind::Enum => "enum",
            DataKind::Timestamp => "timestamp",
            DataKind::Struct => "struct",
            DataKind::Array => "array",
        }
    }

    /// Whether min, max and unit apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataKind::Int | DataKind::Float | DataKind::Double)
    }
}

impl std::fmt::Display for DataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Type and constraints of a value. Structs hold scalar fields; arrays hold scalars or structs.
/// Deeper nesting is not supported (it keeps payloads flat enough to validate at line rate).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataType {
    /// bool, int, float, double, string, enum, timestamp, struct or array.
    #[serde(rename = "type")]
    pub kind: DataKind,
    /// Unit symbol of a numeric value, for example `Cel`, `W`, `kWh`, `m/s` (UCUM style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Longest allowed string, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Allowed values of an enum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<EnumValue>,
    /// Fields of a struct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<StructField>")]
    pub fields: Vec<StructField>,
    /// Element type of an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ElementType>,
    /// Most elements an array may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
}

/// One allowed value of an enum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnumValue {
    /// The value as sent in payloads.
    #[schemars(length(min = 1))]
    pub value: String,
    /// What the value means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A field of a struct: a scalar value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StructField {
    /// Key of the field in payloads.
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub identifier: String,
    /// What the field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Type and constraints of the field (scalar kinds only).
    pub data_type: ScalarType,
    /// The field must be present.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// Element type of an array: a scalar, or a struct of scalar fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElementType {
    /// Any kind except array.
    #[serde(rename = "type")]
    pub kind: DataKind,
    /// Unit symbol of a numeric element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest allowed numeric element (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed numeric element (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Longest allowed string element, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Allowed values of an enum element.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<EnumValue>,
    /// Fields of a struct element.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::keyed_by_identifier::<StructField>")]
    pub fields: Vec<StructField>,
}

/// Type and constraints of a scalar value (any kind except struct and array).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalarType {
    /// bool, int, float, double, string, enum or timestamp.
    #[serde(rename = "type")]
    pub kind: DataKind,
    /// Unit symbol of a numeric value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed numeric value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Longest allowed string, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Allowed values of an enum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<EnumValue>,
}

/// Observed state of a DeviceModel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceModelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the model and everything it extends resolved) or its failure reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// Feature counts after resolving `extends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedCounts>,
    /// Models this one includes, nearest first, as `namespace/name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
    /// How many devices and gateways refer to this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<i64>,
}

/// Feature counts of a resolved model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCounts {
    /// Attributes, own and inherited.
    pub attributes: i64,
    /// Measure points, own and inherited.
    pub measure_points: i64,
    /// Services, own and inherited.
    pub services: i64,
    /// Events, own and inherited.
    pub events: i64,
}
