//! The Gateway controller: credentials and lifecycle like a Device, and the count of
//! sub-devices it may act for (devices naming it in `gatewayRef`, plus those its selector
//! picks), kept current as devices come and go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::{field_managers, finalizers, labels};
use devplane_api::v1alpha1::{Device, Gateway, GatewayStatus};
use devplane_core::gateway::may_act_for;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, Dependant};
use crate::credentials::ROTATE_ANNOTATION;
use crate::device::{endpoints_for, resolve_model, until};
use crate::error::{Error, Result, api};
use crate::identity::{self, Subject};

/// Controller name in metrics and logs.
pub const NAME: &str = "gateway";

/// Reconcile one Gateway.
pub async fn reconcile(gateway: Arc<Gateway>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = gateway
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let gateways: Api<Gateway> = Api::namespaced(ctx.client.clone(), &namespace);
    crate::error::finalized(
        finalizer(&gateways, finalizers::GATEWAY, gateway, |event| async {
            match event {
                Finalizer::Apply(g) => apply(&g, &ctx).await,
                Finalizer::Cleanup(g) => cleanup(&g, &ctx).await,
            }
        })
        .await,
    )
}

async fn apply(gateway: &Gateway, ctx: &Context) -> Result<Action> {
    let namespace = gateway
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = gateway.name_any();
    let (key, resolved) = resolve_model(ctx, &gateway.spec.model_ref, &namespace);
    let lineage = match &resolved {
        Ok(m) => m.lineage.iter().map(|(k, _)| k.clone()).collect(),
        Err(_) => vec![key],
    };
    ctx.record_dependency(Dependant::Gateway(ObjectRef::from_obj(gateway)), lineage);
    let status = gateway.status.clone().unwrap_or_default();
    let subject = Subject {
        kind_label: "gateway",
        namespace: &namespace,
        name: &name,
        generation: gateway.metadata.generation,
        lifecycle: gateway.spec.lifecycle,
        phase: status.phase,
        has_connected: status
            .connection
            .as_ref()
            .is_some_and(|c| c.first_connected.is_some()),
        rotation: gateway.annotations().get(ROTATE_ANNOTATION).cloned(),
        owner: gateway
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?,
        conditions: status.conditions.clone(),
        model: resolved
            .as_ref()
            .map(|m| m.version.to_string())
            .map_err(Clone::clone),
        problems: Vec::new(),
        endpoints: endpoints_for(&ctx.settings.endpoints, &gateway.spec.protocols),
    };
    let outcome = identity::reconcile(ctx, subject, field_managers::GATEWAY).await?;
    let sub_devices = ctx
        .devices
        .state()
        .iter()
        .filter(|d| may_act_for(gateway, d))
        .count() as i64;
    let new_status = GatewayStatus {
        observed_generation: gateway.metadata.generation,
        phase: Some(outcome.phase),
        conditions: outcome.conditions.clone(),
        sub_devices: Some(sub_devices),
        credentials: outcome.credentials.clone(),
        ..status.clone()
    };
    if new_status != status {
        let mut status_json =
            serde_json::to_value(&new_status).map_err(|e| Error::Serialize("GatewayStatus", e))?;
        identity::leave_front_door_fields(&mut status_json, &["activeSubDevices"]);
        let patch = json!({"apiVersion": Gateway::api_version(&()), "kind": Gateway::kind(&()), "status": status_json});
        let gateways: Api<Gateway> = Api::namespaced(ctx.client.clone(), &namespace);
        gateways
            .patch_status(
                &name,
                &PatchParams::apply(field_managers::GATEWAY).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(api(format!("write status of Gateway {namespace}/{name}")))?;
        identity::announce(ctx, gateway, status.phase, &outcome, &status.conditions).await;
    }
    Ok(match outcome.requeue_at {
        Some(at) => Action::requeue(until(ctx, at)),
        None => Action::requeue(Duration::from_secs(600)),
    })
}

async fn cleanup(gateway: &Gateway, ctx: &Context) -> Result<Action> {
    let namespace = gateway
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    identity::revoke(ctx, &namespace, &Gateway::kind(&()), &gateway.name_any()).await?;
    ctx.record_dependency(Dependant::Gateway(ObjectRef::from_obj(gateway)), Vec::new());
    Ok(Action::await_change())
}

/// What to do after a failed reconcile.
pub fn error_policy(gateway: Arc<Gateway>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, gateway, error, ctx)
}

/// The gateways a device change concerns: the one it names and those whose selector may
/// pick it (all gateways of its namespace with a selector).
pub fn gateways_for(device: &Device, gateways: &[Arc<Gateway>]) -> Vec<ObjectRef<Gateway>> {
    let home = gateway_namespace(device);
    gateways
        .iter()
        .filter(|g| {
            let named = device.spec.connection.gateway() == Some(g.name_any().as_str())
                && g.namespace().as_deref() == Some(home);
            named || (g.namespace() == device.namespace() && g.spec.sub_devices.selector.is_some())
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// The devices whose `gatewayRef` names `gateway`, in its namespace or registered by it into
/// another one.
pub fn devices_naming(gateway: &Gateway, devices: &[Arc<Device>]) -> Vec<ObjectRef<Device>> {
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    devices
        .iter()
        .filter(|d| {
            d.spec.connection.gateway() == Some(name.as_str()) && gateway_namespace(d) == namespace
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The gateway each device named when it last changed, so that a device's change triggers
/// the gateway it leaves as well as those it joins: one that moves to another gateway, or
/// stops naming one, would otherwise leave the old gateway's count stale until the next
/// resync. (The gateways whose selector may pick it are in its namespace, and triggered on
/// every change anyway.) Only devices that name a gateway have an entry.
#[derive(Default)]
pub struct DeviceGateways {
    last: parking_lot::Mutex<HashMap<ObjectRef<Device>, ObjectRef<Gateway>>>,
}

impl DeviceGateways {
    /// The gateways to reconcile for a change of `device` (`present`: it is still stored, not
    /// deleted): those it concerns now and the one it named before.
    pub fn triggers(
        &self,
        device: &Device,
        present: bool,
        gateways: &[Arc<Gateway>],
    ) -> Vec<ObjectRef<Gateway>> {
        let mut now = gateways_for(device, gateways);
        let key = ObjectRef::from_obj(device);
        let named = device
            .spec
            .connection
            .gateway()
            .map(|name| ObjectRef::<Gateway>::new(name).within(gateway_namespace(device)));
        let mut last = self.last.lock();
        let before = match named {
            Some(named) if present => last.insert(key, named),
            _ => last.remove(&key),
        };
        if let Some(gateway) = before
            && !now.contains(&gateway)
        {
            now.push(gateway);
        }
        now
    }
}

/// The namespace of the gateway a device's `gatewayRef` names: its own, or the one a gateway
/// that registered it into another namespace labelled it with.
pub fn gateway_namespace(device: &Device) -> &str {
    device
        .labels()
        .get(labels::GATEWAY_NAMESPACE)
        .map(String::as_str)
        .or(device.metadata.namespace.as_deref())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(namespace: &str, name: &str, selector: bool) -> Arc<Gateway> {
        let selector = if selector {
            "subDevices: {selector: {matchLabels: {site: s7}}}"
        } else {
            ""
        };
        Arc::new(
            serde_yaml::from_str(&format!(
                r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{modelRef: {{name: logger}}, {selector}}}
"#
            ))
            .expect("gateway yaml"),
        )
    }

    fn device(namespace: &str, name: &str, gateway: Option<&str>, labels: &str) -> Device {
        let connection = gateway
            .map(|g| format!("connection: {{gatewayRef: {{name: {g}}}}}"))
            .unwrap_or_default();
        serde_yaml::from_str(&format!(
            r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}
spec: {{modelRef: {{name: meter}}, {connection}}}
"#
        ))
        .expect("device yaml")
    }

    fn names<K: Resource<DynamicType = ()>>(refs: &[ObjectRef<K>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    #[test]
    fn a_gateway_s_devices_include_those_it_registered_into_other_namespaces() {
        let logger = gateway("metering", "logger", false);
        let devices = [
            device("metering", "home", Some("logger"), ""),
            device(
                "tenant",
                "registered",
                Some("logger"),
                "iot.devplane.io/gateway-namespace: metering",
            ),
            device("tenant", "namesake", Some("logger"), ""),
            device("metering", "direct", None, ""),
        ]
        .map(Arc::new);
        assert_eq!(
            names(&devices_naming(&logger, &devices)),
            ["metering/home", "tenant/registered"]
        );
    }

    #[test]
    fn a_device_that_moves_or_goes_triggers_the_gateway_it_leaves() {
        let gateways = [
            gateway("metering", "a", false),
            gateway("metering", "b", false),
        ];
        let memory = DeviceGateways::default();
        let triggers =
            |device: &Device, present: bool| names(&memory.triggers(device, present, &gateways));
        assert_eq!(
            triggers(&device("metering", "m", Some("a"), ""), true),
            ["metering/a"]
        );
        assert_eq!(
            triggers(&device("metering", "m", Some("b"), ""), true),
            ["metering/b", "metering/a"],
            "the move triggers both"
        );
        assert_eq!(
            triggers(&device("metering", "m", Some("b"), ""), true),
            ["metering/b"]
        );
        assert_eq!(
            triggers(&device("metering", "m", None, ""), true),
            ["metering/b"],
            "going direct leaves b"
        );
        assert!(
            memory.last.lock().is_empty(),
            "a direct device has no entry"
        );
        assert_eq!(
            triggers(&device("metering", "m", Some("a"), ""), true),
            ["metering/a"]
        );
        assert_eq!(
            triggers(&device("metering", "m", Some("a"), ""), false),
            ["metering/a"],
            "a deleted device triggers its last gateway"
        );
        assert!(memory.last.lock().is_empty(), "and is forgotten");

        // A device that named a gateway before the gateway existed (whose creation counted
        // it): leaving it triggers it all the same.
        let memory = DeviceGateways::default();
        let early = memory.triggers(
            &device("metering", "n", Some("a"), ""),
            true,
            &gateways[1..],
        );
        assert!(early.is_empty(), "no gateway a yet");
        assert_eq!(
            names(&memory.triggers(&device("metering", "n", Some("b"), ""), true, &gateways)),
            ["metering/b", "metering/a"]
        );
    }

    #[test]
    fn a_device_that_drops_the_selected_label_triggers_the_selecting_gateway() {
        let gateways = [gateway("metering", "selecting", true)];
        let memory = DeviceGateways::default();
        for labels in ["site: s7", ""] {
            assert_eq!(
                names(&memory.triggers(&device("metering", "m", None, labels), true, &gateways)),
                ["metering/selecting"],
                "labels {labels:?}"
            );
        }
    }
}
