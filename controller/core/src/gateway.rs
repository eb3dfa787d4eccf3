//! Which devices a gateway may act for: those whose `spec.connection.gatewayRef` names it, and
//! those of its namespace its `spec.subDevices.selector` picks. One rule for the Gateway
//! controller (which counts them) and the front door (which lets a gateway log them in).
//!
//! A device a gateway registered into another namespace (`dynamicRegistration.targetNamespace`)
//! names the gateway by `gatewayRef` and the gateway's namespace by the
//! `iot.devplane.io/gateway-namespace` label.

use std::collections::BTreeMap;

use devplane_api::constants::labels;
use devplane_api::v1alpha1::{Device, Gateway};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The facts about a device the rule looks at.
#[derive(Clone, Copy, Debug)]
pub struct SubDevice<'a> {
    /// The device's namespace.
    pub namespace: &'a str,
    /// The gateway its `gatewayRef` names, if any.
    pub gateway_ref: Option<&'a str>,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// The facts about a gateway the rule looks at.
#[derive(Clone, Copy, Debug)]
pub struct Acting<'a> {
    /// The gateway's namespace.
    pub namespace: &'a str,
    /// The gateway's name.
    pub name: &'a str,
    /// `spec.subDevices.selector`.
    pub selector: Option<&'a LabelSelector>,
}

/// Whether a label selector picks a set of labels. An empty selector picks nothing here: a
/// gateway acts for every device of its namespace only when told so explicitly.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
    });
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    !empty && by_labels && by_expressions
}

/// Whether `gateway` may act for `device`.
pub fn acts_for(gateway: Acting<'_>, device: SubDevice<'_>) -> bool {
    if device.gateway_ref == Some(gateway.name) {
        let home = device
            .labels
            .get(labels::GATEWAY_NAMESPACE)
            .map_or(device.namespace, String::as_str);
        if home == gateway.namespace {
            return true;
        }
    }
    device.namespace == gateway.namespace
        && gateway
            .selector
            .is_some_and(|s| selector_matches(s, device.labels))
}

/// [`acts_for`] on the API objects.
pub fn may_act_for(gateway: &Gateway, device: &Device) -> bool {
    let empty = BTreeMap::new();
    acts_for(
        Acting {
            namespace: gateway.metadata.namespace.as_deref().unwrap_or_default(),
            name: gateway.metadata.name.as_deref().unwrap_or_default(),
            selector: gateway.spec.sub_devices.selector.as_ref(),
        },
        SubDevice {
            namespace: device.metadata.namespace.as_deref().unwrap_or_default(),
            gateway_ref: device.spec.connection.gateway(),
            labels: device.metadata.labels.as_ref().unwrap_or(&empty),
        },
    )
}

#[cfg(test)]
mod tests;
