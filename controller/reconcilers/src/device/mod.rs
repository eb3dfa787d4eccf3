//! The Device controller: resolves the device's model, validates its attribute values, issues
//! credentials when its lifecycle allows, drives `status.phase` by the lifecycle state machine,
//! and revokes credentials on Decommissioned and on deletion.
//!
//! Pipeline: dereference (model, gateway) → validate (pure) → lifecycle and credentials
//! (`identity`) → status, written only when it changed.

use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::{field_managers, finalizers};
use devplane_api::v1alpha1::{Device, DeviceStatus, Gateway};
use devplane_core::model::{ModelKey, ResolveError, ResolvedModel};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, Dependant};
use crate::credentials::ROTATE_ANNOTATION;
use crate::error::{Error, Result, api};
use crate::identity::{self, Problem, Subject};

/// Controller name in metrics and logs.
pub const NAME: &str = "device";

/// Reconcile one Device.
pub async fn reconcile(device: Arc<Device>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = device
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let devices: Api<Device> = Api::namespaced(ctx.client.clone(), &namespace);
    crate::error::finalized(
        finalizer(&devices, finalizers::DEVICE, device, |event| async {
            match event {
                Finalizer::Apply(device) => apply(&device, &ctx).await,
                Finalizer::Cleanup(device) => cleanup(&device, &ctx).await,
            }
        })
        .await,
    )
}

/// The model of an object, resolved against the model cache; on success also the version
/// requirement of the reference is checked.
pub fn resolve_model(
    ctx: &Context,
    reference: &devplane_api::v1alpha1::ModelReference,
    namespace: &str,
) -> (ModelKey, std::result::Result<Arc<ResolvedModel>, Problem>) {
    let key = ModelKey::from_ref(reference, namespace);
    let resolved = ctx.resolve(&key).map_err(|e| match &e {
        ResolveError::Missing { missing, .. } if *missing == key => {
            Problem::new("ModelNotFound", format!("model {key} does not exist"))
        }
        other => Problem::new(
            other.reason(),
            format!("model {key} does not resolve: {other}"),
        ),
    });
    let resolved =
        resolved.and_then(
            |m| match reference.version.as_deref().map(semver_requirement) {
                Some(Ok(req)) if !req.matches(&m.version) => Err(Problem::new(
                    "VersionMismatch",
                    format!(
                        "model {key} has version {}, which does not satisfy {:?}",
                        m.version,
                        reference.version.as_deref().unwrap_or_default()
                    ),
                )),
                Some(Err(e)) => Err(Problem::new("InvalidVersionRequirement", e)),
                _ => Ok(m),
            },
        );
    (key, resolved)
}

fn semver_requirement(text: &str) -> std::result::Result<semver::VersionReq, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not a version requirement: {e}"))
}

/// Problems with a device's attribute and desired values (pure).
pub fn attribute_problems(device: &Device, model: &ResolvedModel) -> Vec<Problem> {
    devplane_core::admission::attribute_problems(device, model)
        .into_iter()
        .map(|message| Problem::new("InvalidAttributes", message))
        .collect()
}

async fn apply(device: &Device, ctx: &Context) -> Result<Action> {
    let namespace = device
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = device.name_any();
    let (key, resolved) = resolve_model(ctx, &device.spec.model_ref, &namespace);
    let lineage: Vec<ModelKey> = match &resolved {
        Ok(m) => m.lineage.iter().map(|(k, _)| k.clone()).collect(),
        Err(_) => vec![key.clone()],
    };
    ctx.record_dependency(Dependant::Device(ObjectRef::from_obj(device)), lineage);

    let mut problems = Vec::new();
    let home = crate::gateway::gateway_namespace(device);
    if let Some(gateway) = device.spec.connection.gateway()
        && ctx
            .gateways
            .get(&ObjectRef::<Gateway>::new(gateway).within(home))
            .is_none()
    {
        problems.push(Problem::new(
            "GatewayNotFound",
            format!("gateway {home}/{gateway} does not exist"),
        ));
    }
    if let Ok(model) = &resolved {
        problems.extend(attribute_problems(device, model));
    }
    let status = device.status.clone().unwrap_or_default();
    let endpoints = endpoints_for(
        &ctx.settings.endpoints,
        &device.spec.connection.direct_protocols(),
    );
    let subject = Subject {
        kind_label: "device",
        namespace: &namespace,
        name: &name,
        generation: device.metadata.generation,
        lifecycle: device.spec.lifecycle,
        phase: status.phase,
        has_connected: status
            .connection
            .as_ref()
            .is_some_and(|c| c.first_connected.is_some()),
        rotation: device.annotations().get(ROTATE_ANNOTATION).cloned(),
        owner: device
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?,
        conditions: status.conditions.clone(),
        model: resolved
            .as_ref()
            .map(|m| m.version.to_string())
            .map_err(Clone::clone),
        problems,
        endpoints,
    };
    let outcome = identity::reconcile(ctx, subject, field_managers::DEVICE).await?;
    let new_status = DeviceStatus {
        observed_generation: device.metadata.generation,
        phase: Some(outcome.phase),
        conditions: outcome.conditions.clone(),
        model_version: resolved
            .as_ref()
            .ok()
            .map(|m| m.version.to_string())
            .or(status.model_version.clone()),
        credentials: outcome.credentials.clone(),
        ..status.clone()
    };
    if new_status != status {
        let writing = ctx.echoes.writing::<Device>(
            NAME,
            &namespace,
            &name,
            (namespace.clone(), name.clone()),
        );
        let written = write_status(ctx, &namespace, &name, &new_status).await?;
        // Settled: a reconcile of what was just written would change nothing more.
        let settled = devplane_core::lifecycle::next_phase(
            Some(outcome.phase),
            device.spec.lifecycle,
            new_status
                .connection
                .as_ref()
                .is_some_and(|c| c.first_connected.is_some()),
        ) == outcome.phase;
        if settled {
            writing.wrote(&written);
        } else {
            writing.forget();
        }
        identity::announce(ctx, device, status.phase, &outcome, &status.conditions).await;
    }
    Ok(match outcome.requeue_at {
        Some(at) => Action::requeue(until(ctx, at)),
        // Nothing to do until something changes; a resync keeps caches honest.
        None => Action::requeue(Duration::from_secs(600)),
    })
}

/// The endpoints a device may use: the configured ones for its allowed protocols.
pub fn endpoints_for(
    all: &[(String, String)],
    protocols: &[devplane_api::v1alpha1::Protocol],
) -> Vec<(String, String)> {
    let allowed: Vec<&str> = if protocols.is_empty() {
        vec!["mqtt", "http", "coap"]
    } else {
        protocols.iter().map(|p| p.as_str()).collect()
    };
    // A secure variant (mqtts, https, coaps) goes with its protocol.
    fn plain(protocol: &str) -> &str {
        match protocol {
            "mqtts" => "mqtt",
            "https" => "http",
            "coaps" => "coap",
            other => other,
        }
    }
    all.iter()
        .filter(|(p, _)| allowed.contains(&plain(p)))
        .cloned()
        .collect()
}

/// Time from now until `at` (at least a second).
pub fn until(ctx: &Context, at: jiff::Timestamp) -> Duration {
    let seconds = at.as_second() - (ctx.clock)().as_second();
    Duration::from_secs(seconds.max(1) as u64)
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &DeviceStatus,
) -> Result<Device> {
    // Only the fields this controller owns; the front door owns connection and reported.
    let mut status_json =
        serde_json::to_value(status).map_err(|e| Error::Serialize("DeviceStatus", e))?;
    identity::leave_front_door_fields(&mut status_json, &["reported"]);
    let patch = json!({"apiVersion": Device::api_version(&()), "kind": Device::kind(&()), "status": status_json});
    let devices: Api<Device> = Api::namespaced(ctx.client.clone(), namespace);
    devices
        .patch_status(
            name,
            &PatchParams::apply(field_managers::DEVICE).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(api(format!("write status of Device {namespace}/{name}")))
}

/// On deletion: revoke the credentials (the Secret would also go by owner reference, but a
/// deleted device must not be able to connect even briefly).
async fn cleanup(device: &Device, ctx: &Context) -> Result<Action> {
    let namespace = device
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    identity::revoke(ctx, &namespace, &Device::kind(&()), &device.name_any()).await?;
    ctx.record_dependency(Dependant::Device(ObjectRef::from_obj(device)), Vec::new());
    Ok(Action::await_change())
}

/// What to do after a failed reconcile.
pub fn error_policy(device: Arc<Device>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, device, error, ctx)
}

#[cfg(test)]
mod tests;
