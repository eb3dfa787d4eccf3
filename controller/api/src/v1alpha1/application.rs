//! Application: a northbound consumer of the device data of one namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common;
use super::device::CredentialsStatus;

/// An application that reads the accepted device data of its own namespace from the front
/// door's northbound MQTT listener. devplane issues its credentials into the Secret
/// `<name>-app-credentials` (keys `username`, `password`, `mqtt-endpoint`); with them the
/// application may subscribe under `north/<namespace>/` and nowhere else.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "iot.devplane.io",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "app",
    category = "devplane",
    doc = "A northbound application: reads the accepted device data of its namespace with credentials devplane issues.",
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.credentials.secretName",
        description = "Secret with the application's credentials"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Free-text description: who runs the application and what it does with the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Observed state of an Application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and CredentialsIssued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions")]
    pub conditions: Vec<Condition>,
    /// The credentials issued to the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsStatus>,
    /// The topic prefix the application may subscribe under (`north/<namespace>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
}
