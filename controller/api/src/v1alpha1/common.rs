//! Types and schema helpers shared by several kinds.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Reference to a DeviceModel, optionally in another namespace (for example the standard
/// library in `devplane-library`).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ModelReference {
    /// Name of the DeviceModel.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the DeviceModel; defaults to the namespace of the object that refers to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Semantic-version requirement the referenced model's `spec.version` must satisfy, for
    /// example `^1.2` or `>=1.0.0, <2.0.0`. Empty means any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ModelReference {
    /// The namespace this reference points into, given the namespace of the referring object.
    pub fn namespace_or<'a>(&'a self, referrer_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(referrer_namespace)
    }
}

/// Reference to an object of a known kind in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalReference {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the operator wants for a device or gateway: the desired lifecycle stage.
///
/// Allowed changes: Planned → Servicing or Decommissioned; Servicing ⇄ Maintenance;
/// Servicing or Maintenance → Decommissioned. Decommissioned is terminal.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Lifecycle {
    /// Registered but not yet in service: no credentials are issued.
    Planned,
    /// In service: credentials are issued and the device may connect.
    #[default]
    Servicing,
    /// In service but under maintenance: it still connects, its data is flagged.
    Maintenance,
    /// Retired for good: credentials are revoked and sessions closed. Terminal.
    Decommissioned,
}

impl Lifecycle {
    /// Every value, in declaration order.
    pub const ALL: [Lifecycle; 4] = [
        Lifecycle::Planned,
        Lifecycle::Servicing,
        Lifecycle::Maintenance,
        Lifecycle::Decommissioned,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Planned => "Planned",
            Lifecycle::Servicing => "Servicing",
            Lifecycle::Maintenance => "Maintenance",
            Lifecycle::Decommissioned => "Decommissioned",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is true of a device or gateway: the observed lifecycle phase.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Phase {
    /// Registered, no credentials.
    #[default]
    Planned,
    /// Credentials issued, never connected.
    Provisioned,
    /// Has connected; normal operation.
    Servicing,
    /// Under maintenance: still connects, data is flagged, commands are allowed.
    Maintenance,
    /// Credentials revoked, sessions closed, reconnects refused. Terminal.
    Decommissioned,
}

impl Phase {
    /// Every value, in declaration order.
    pub const ALL: [Phase; 5] = [
        Phase::Planned,
        Phase::Provisioned,
        Phase::Servicing,
        Phase::Maintenance,
        Phase::Decommissioned,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "Planned",
            Phase::Provisioned => "Provisioned",
            Phase::Servicing => "Servicing",
            Phase::Maintenance => "Maintenance",
            Phase::Decommissioned => "Decommissioned",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device-facing protocol of the front door.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 3.1.1 or 5.
    Mqtt,
    /// HTTP/1.1 ingest.
    Http,
    /// CoAP (RFC 7252) over UDP.
    Coap,
}

impl Protocol {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Http => "http",
            Protocol::Coap => "coap",
        }
    }
}

/// Whether a device or gateway has a live session at the front door.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionState {
    /// Has never connected.
    #[default]
    Never,
    /// Has a live session.
    Online,
    /// Has connected before; no live session now.
    Offline,
}

/// Connection state as the front door observed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Online, Offline, or Never (has not connected yet).
    #[serde(default)]
    pub state: ConnectionState,
    /// Protocol of the current or last session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// When the device was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the device first connected; once set, the device has left Provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_connected: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The peer address of the current or last session (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The front-door replica that holds or last held the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<String>,
    /// When the current or last session started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The gateway (`namespace/name`) the current or last session goes through, for a
    /// sub-device; unset for a direct connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// Schema of a value whose shape the model defines, not the CRD: any JSON value.
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a map from identifier to a value whose shape the model defines.
pub fn value_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Schema of a list of named items (a model's attributes, measure points, services, events,
/// parameters and struct fields): a list keyed by `identifier`, so server-side apply merges
/// and owns the items one by one, and the API server refuses a repeated identifier.
pub fn keyed_by_identifier<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<T>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["identifier"]),
    );
    schema
}

/// Schema of `conditions`: a list of `metav1.Condition` keyed by `type`, so server-side apply
/// merges conditions per type.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}
