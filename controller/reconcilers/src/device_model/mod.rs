//! The DeviceModel controller: resolves `extends` (library models in other namespaces
//! included) and reports Ready or the reason it does not resolve, the resolved feature counts,
//! the lineage and how many devices and gateways use the model; a model that is an EnOS
//! product also reports whether it holds its product key, and gets its product Secret while
//! dynamic activation is on ([`enos`]).

pub mod enos;

use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::conditions::{ENOS_PRODUCT_KEY, READY};
use devplane_api::constants::field_managers;
use devplane_api::v1alpha1::{DeviceModel, DeviceModelStatus, ResolvedCounts};
use devplane_core::model::{self, ModelKey};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result, api};

/// Controller name in metrics and logs.
pub const NAME: &str = "devicemodel";

/// Reconcile one DeviceModel.
pub async fn reconcile(dm: Arc<DeviceModel>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = dm.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = dm.name_any();
    let key = ModelKey::new(&namespace, &name);
    let old = dm.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = dm.metadata.generation;
    let now = ctx.now();
    let generation = dm.metadata.generation;
    match model::resolve(&ctx.models(), &key) {
        Ok(resolved) => {
            status.resolved = Some(ResolvedCounts {
                attributes: resolved.attributes.len() as i64,
                measure_points: resolved.measure_points.len() as i64,
                services: resolved.services.len() as i64,
                events: resolved.events.len() as i64,
            });
            status.lineage = resolved.ancestors();
            conditions::set(
                &mut status.conditions,
                READY,
                true,
                "Resolved",
                format!("version {} resolved", resolved.version),
                generation,
                &now,
            );
        }
        Err(e) => {
            status.resolved = None;
            status.lineage = Vec::new();
            conditions::set(
                &mut status.conditions,
                READY,
                false,
                e.reason(),
                e.to_string(),
                generation,
                &now,
            );
        }
    }
    let users = ctx
        .devices
        .state()
        .iter()
        .filter(|d| {
            ModelKey::from_ref(&d.spec.model_ref, &d.namespace().unwrap_or_default()) == key
        })
        .count()
        + ctx
            .gateways
            .state()
            .iter()
            .filter(|g| {
                ModelKey::from_ref(&g.spec.model_ref, &g.namespace().unwrap_or_default()) == key
            })
            .count();
    status.devices = Some(users as i64);
    let standing = enos::standing(&enos::products(&ctx), &key, &dm);
    enos::set_condition(&mut status.conditions, &standing, generation, &now);
    enos::reconcile_secret(&ctx, &dm, &namespace, &standing).await?;
    if status != old {
        write_status(&ctx, &namespace, &name, &status).await?;
        let was_ready = conditions::is_true(&old.conditions, READY);
        let is_ready = conditions::is_true(&status.conditions, READY);
        if was_ready != is_ready || old.conditions.is_empty() {
            let condition = status.conditions.iter().find(|c| c.type_ == READY);
            let (type_, reason, note) = match condition {
                Some(c) if c.status == "True" => (EventType::Normal, "Resolved", c.message.clone()),
                Some(c) => (EventType::Warning, c.reason.as_str(), c.message.clone()),
                None => (EventType::Normal, "Resolved", String::new()),
            };
            let reason = reason.to_string();
            ctx.event(dm.as_ref(), type_, &reason, "Resolve", note)
                .await;
        }
        let was_taken = conditions_false(&old.conditions, ENOS_PRODUCT_KEY);
        if let enos::Standing::Taken { .. } = standing
            && !was_taken
            && let Some(c) = status
                .conditions
                .iter()
                .find(|c| c.type_ == ENOS_PRODUCT_KEY)
        {
            let note = c.message.clone();
            ctx.event(
                dm.as_ref(),
                EventType::Warning,
                "ProductKeyTaken",
                "Claim",
                note,
            )
            .await;
        }
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

fn conditions_false(
    list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> bool {
    list.iter().any(|c| c.type_ == type_ && c.status == "False")
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &DeviceModelStatus,
) -> Result<()> {
    let patch = json!({"apiVersion": DeviceModel::api_version(&()), "kind": DeviceModel::kind(&()), "status": status});
    let models: Api<DeviceModel> = Api::namespaced(ctx.client.clone(), namespace);
    models
        .patch_status(
            name,
            &PatchParams::apply(field_managers::DEVICE_MODEL).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(api(format!(
            "write status of DeviceModel {namespace}/{name}"
        )))?;
    Ok(())
}

/// What to do after a failed reconcile.
pub fn error_policy(dm: Arc<DeviceModel>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, dm, error, ctx)
}

/// Models whose resolution a change of `changed` may affect: those whose lineage includes it
/// (computed from the model cache).
pub fn models_extending(ctx: &Context, changed: &ModelKey) -> Vec<ModelKey> {
    let source = ctx.models();
    ctx.models
        .state()
        .iter()
        .filter_map(|m| {
            let key = ModelKey::new(m.namespace()?, m.name_any());
            if key == *changed {
                return None;
            }
            let extends_it = match model::resolve(&source, &key) {
                Ok(r) => r.lineage.iter().any(|(k, _)| k == changed),
                // A broken model may be broken because of `changed`: look at it again.
                Err(_) => m
                    .spec
                    .extends
                    .iter()
                    .any(|r| ModelKey::from_ref(r, &key.namespace) == *changed),
            };
            extends_it.then_some(key)
        })
        .collect()
}
