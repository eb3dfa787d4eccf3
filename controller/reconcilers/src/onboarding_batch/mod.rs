//! The OnboardingBatch controller: expands the batch into Devices (server-side apply, owner
//! references, site/asset/batch labels), reports progress while it works, and applies the
//! deletion policy when the batch goes. Idempotent: device names are deterministic, devices
//! already there are skipped, and a re-run (or a restarted controller) only creates what is
//! missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devplane_api::constants::conditions::{COMPLETE, PROGRESSING};
use devplane_api::constants::{field_managers, finalizers, labels};
use devplane_api::v1alpha1::{
    DeletionPolicy, Device, ItemFailure, OnboardingBatch, OnboardingBatchStatus,
};
use devplane_core::naming::owner_label_value;
use devplane_core::onboarding::{self, Expansion, PlannedDevice};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::context::Context;
use crate::device::resolve_model;
use crate::error::{Error, Result, api};

/// Controller name in metrics and logs.
pub const NAME: &str = "onboardingbatch";

/// Failures kept in the status.
const MAX_FAILURES: usize = 100;
/// How often progress is written while devices are created.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Reconcile one OnboardingBatch.
pub async fn reconcile(batch: Arc<OnboardingBatch>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = batch
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let batches: Api<OnboardingBatch> = Api::namespaced(ctx.client.clone(), &namespace);
    crate::error::finalized(
        finalizer(
            &batches,
            finalizers::ONBOARDING_BATCH,
            batch,
            |event| async {
                match event {
                    Finalizer::Apply(b) => apply(&b, &ctx).await,
                    Finalizer::Cleanup(b) => cleanup(&b, &ctx).await,
                }
            },
        )
        .await,
    )
}

/// The Device a planned item becomes (pure).
pub fn device_object(batch: &OnboardingBatch, planned: &PlannedDevice) -> Result<Value> {
    let owner = batch
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let spec =
        serde_json::to_value(&planned.spec).map_err(|e| Error::Serialize("DeviceSpec", e))?;
    // The device controller's finalizer comes with the device, which saves it a write and a
    // round of reconciling per device when thousands arrive at once.
    let mut metadata = json!({
        "name": planned.name,
        "namespace": batch.namespace(),
        "labels": planned.labels,
        "ownerReferences": [owner],
        "finalizers": [devplane_api::constants::finalizers::DEVICE],
    });
    if !planned.annotations.is_empty() {
        metadata["annotations"] = json!(planned.annotations);
    }
    Ok(
        json!({"apiVersion": Device::api_version(&()), "kind": Device::kind(&()), "metadata": metadata, "spec": spec}),
    )
}

/// Whether an existing device already is what the batch plans (so nothing needs applying).
fn up_to_date(existing: &Device, planned: &PlannedDevice) -> bool {
    existing.spec == planned.spec
        && planned
            .labels
            .iter()
            .all(|(k, v)| existing.labels().get(k) == Some(v))
}

fn created_by(device: &Device, batch: &OnboardingBatch) -> bool {
    let uid = batch.uid();
    device.labels().get(labels::BATCH) == Some(&owner_label_value(&batch.name_any()))
        && device
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == uid.as_ref())
}

async fn write_status(
    ctx: &Context,
    batch: &OnboardingBatch,
    status: &OnboardingBatchStatus,
) -> Result<()> {
    let namespace = batch.namespace().unwrap_or_default();
    let name = batch.name_any();
    let patch = json!({"apiVersion": OnboardingBatch::api_version(&()), "kind": OnboardingBatch::kind(&()), "status": status});
    let batches: Api<OnboardingBatch> = Api::namespaced(ctx.client.clone(), &namespace);
    batches
        .patch_status(
            &name,
            &PatchParams::apply(field_managers::ONBOARDING_BATCH).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(api(format!(
            "write status of OnboardingBatch {namespace}/{name}"
        )))?;
    Ok(())
}

fn status_of(
    batch: &OnboardingBatch,
    now: &Time,
    total: usize,
    created: usize,
    failures: &[ItemFailure],
    done: bool,
) -> OnboardingBatchStatus {
    let old = batch.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    let generation = batch.metadata.generation;
    let failed = failures.len();
    // In item order: failures are collected as the writes finish, and a status that only
    // lists them in another order must not count as a change.
    let mut listed: Vec<&ItemFailure> = failures.iter().collect();
    listed.sort_by(|a, b| a.item.cmp(&b.item));
    if done {
        conditions::set(
            &mut conditions,
            PROGRESSING,
            false,
            "Done",
            format!("{created} of {total} devices created"),
            generation,
            now,
        );
        let (reason, message) = if failed == 0 {
            ("Completed", format!("all {total} devices created"))
        } else {
            (
                "CompletedWithFailures",
                format!("{created} of {total} devices created, {failed} failed"),
            )
        };
        conditions::set(
            &mut conditions,
            COMPLETE,
            true,
            reason,
            message,
            generation,
            now,
        );
    } else {
        conditions::set(
            &mut conditions,
            PROGRESSING,
            true,
            "Creating",
            format!("{created} of {total} devices created"),
            generation,
            now,
        );
        conditions::set(
            &mut conditions,
            COMPLETE,
            false,
            "Creating",
            format!("{created} of {total} devices created"),
            generation,
            now,
        );
    }
    OnboardingBatchStatus {
        observed_generation: generation,
        conditions,
        total: total as i64,
        created: created as i64,
        failed: failed as i64,
        failures: listed.into_iter().take(MAX_FAILURES).cloned().collect(),
    }
}

async fn apply(batch: &OnboardingBatch, ctx: &Context) -> Result<Action> {
    let namespace = batch
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = batch.name_any();
    let old = batch.status.clone().unwrap_or_default();
    let (_, template_model) = resolve_model(ctx, &batch.spec.template.spec.model_ref, &namespace);
    let kind_of = |identifier: &str| {
        template_model
            .as_ref()
            .ok()
            .and_then(|m| m.attributes.get(identifier))
            .map(|a| a.definition.data_type.kind)
    };
    let expansion = match onboarding::expand(&name, &batch.spec, &kind_of) {
        Ok(expansion) => expansion,
        Err(e) => {
            let mut status = status_of(batch, &ctx.now(), 0, 0, &[], true);
            conditions::set(
                &mut status.conditions,
                COMPLETE,
                false,
                "InvalidBatch",
                e.to_string(),
                batch.metadata.generation,
                &ctx.now(),
            );
            if status != old {
                write_status(ctx, batch, &status).await?;
                ctx.event(
                    batch,
                    EventType::Warning,
                    "InvalidBatch",
                    "Expand",
                    e.to_string(),
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };
    let Expansion {
        devices: planned,
        failures: mut item_failures,
    } = expansion;
    let total = planned.len() + item_failures.len();

    // What exists already (from the cache; anything the cache has not seen yet is applied
    // again, which the server turns into a no-op).
    let existing: HashMap<String, Arc<Device>> = ctx
        .devices
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(namespace.as_str()))
        .map(|d| (d.name_any(), d))
        .collect();
    let mut created = 0usize;
    let mut to_apply = Vec::new();
    for item in planned {
        match existing.get(&item.name) {
            Some(d) if created_by(d, batch) && up_to_date(d, &item) => created += 1,
            Some(d) if !created_by(d, batch) => item_failures.push(ItemFailure {
                item: item.name.clone(),
                reason: "a Device of that name exists and was not created by this batch".into(),
            }),
            _ => to_apply.push(item),
        }
    }
    if to_apply.is_empty() {
        let status = status_of(batch, &ctx.now(), total, created, &item_failures, true);
        if status != old {
            write_status(ctx, batch, &status).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(600)));
    }

    let devices: Api<Device> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams::apply(field_managers::ONBOARDING_BATCH);
    let mut results = futures::stream::iter(to_apply.into_iter().map(|item| {
        let devices = devices.clone();
        let params = params.clone();
        async move {
            let body = device_object(batch, &item)?;
            let result = devices
                .patch(&item.name, &params, &Patch::Apply(&body))
                .await;
            Ok::<_, Error>((item.name, result))
        }
    }))
    .buffer_unordered(ctx.settings.batch_concurrency.max(1));
    let mut last_progress = Instant::now();
    let mut reported = created;
    let mut wrote_progress = false;
    while let Some(result) = results.next().await {
        let (item, outcome) = result?;
        match outcome {
            Ok(_) => created += 1,
            // Another manager changed a field the batch set (an operator moved the device
            // along its lifecycle): the device exists, and the batch does not fight over it.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(batch = %name, device = %item, message = %status.message, "a device of the batch was changed by another manager; left as it is");
                created += 1;
            }
            Err(kube::Error::Api(status)) if status.code < 500 => {
                item_failures.push(ItemFailure {
                    item,
                    reason: status.message,
                });
            }
            Err(e) => return Err(api(format!("create Device {namespace}/{item}"))(e)),
        }
        // Progress is written while devices are being created, not while the same items
        // keep failing (that would change the status, and so trigger the batch, every run).
        if last_progress.elapsed() >= PROGRESS_INTERVAL && created > reported {
            last_progress = Instant::now();
            reported = created;
            wrote_progress = true;
            write_status(
                ctx,
                batch,
                &status_of(batch, &ctx.now(), total, created, &item_failures, false),
            )
            .await?;
        }
    }
    let status = status_of(batch, &ctx.now(), total, created, &item_failures, true);
    if status == old && !wrote_progress {
        // Nothing new (the same items failed as before): no write, no Event, and no
        // trigger of this batch by its own status.
        return Ok(Action::requeue(Duration::from_secs(600)));
    }
    write_status(ctx, batch, &status).await?;
    let note = format!(
        "{created} of {total} devices created, {} failed",
        item_failures.len()
    );
    ctx.event(batch, EventType::Normal, "Onboarded", "CreateDevices", note)
        .await;
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Apply the deletion policy: Delete leaves the devices to the garbage collector (they are
/// owned by the batch); Retain removes the batch's owner reference from each first.
async fn cleanup(batch: &OnboardingBatch, ctx: &Context) -> Result<Action> {
    if batch.spec.deletion_policy == DeletionPolicy::Delete {
        return Ok(Action::await_change());
    }
    let namespace = batch
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let uid = batch.uid().unwrap_or_default();
    let devices: Api<Device> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{}={}", labels::BATCH, owner_label_value(&batch.name_any()));
    let owned = devices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api("list the batch's devices"))?;
    for device in owned.items {
        let refs: Vec<_> = device
            .owner_references()
            .iter()
            .filter(|o| o.uid != uid)
            .cloned()
            .collect();
        if refs.len() == device.owner_references().len() {
            continue;
        }
        let patch = json!({"metadata": {"ownerReferences": refs}});
        match devices
            .patch(
                &device.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api(format!("orphan Device {}", device.name_any()))(e)),
        }
    }
    Ok(Action::await_change())
}

/// What to do after a failed reconcile.
pub fn error_policy(batch: Arc<OnboardingBatch>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, batch, error, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failures_in_another_order_make_the_same_status() {
        let batch: OnboardingBatch = serde_json::from_value(json!({
            "apiVersion": "iot.devplane.io/v1alpha1", "kind": "OnboardingBatch",
            "metadata": {"name": "b", "namespace": "ns", "generation": 1},
            "spec": {"template": {"spec": {"modelRef": {"name": "m"}}}, "items": {"csv": "name\nx\n"}},
        }))
        .expect("batch");
        let now = Time(jiff::Timestamp::from_second(1_000).expect("time"));
        let failure = |item: &str| ItemFailure {
            item: item.into(),
            reason: "refused".into(),
        };
        let one = status_of(&batch, &now, 3, 1, &[failure("c"), failure("a")], true);
        let other = status_of(&batch, &now, 3, 1, &[failure("a"), failure("c")], true);
        assert_eq!(one, other);
        let items: Vec<&str> = one.failures.iter().map(|f| f.item.as_str()).collect();
        assert_eq!(items, ["a", "c"]);
    }
}
