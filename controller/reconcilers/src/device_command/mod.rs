//! The DeviceCommand controller: checks the command against its device's model (an unknown
//! service or bad parameters → Rejected with the reason), leaves valid commands Pending for the
//! front door to deliver, and enforces the timeout.

use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::conditions::READY;
use devplane_api::constants::field_managers;
use devplane_api::v1alpha1::{CommandPhase, Device, DeviceCommand, Lifecycle, Phase};
use devplane_core::payload;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::conditions;
use crate::context::Context;
use crate::device::{resolve_model, until};
use crate::error::{Error, Result, api};

/// Controller name in metrics and logs.
pub const NAME: &str = "devicecommand";

/// The decision for a command that is not finished (pure).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Valid; waiting for delivery (or delivered and waiting for the answer).
    Wait { reason: String, message: String },
    /// Refused.
    Reject { reason: String, message: String },
    /// Out of time.
    TimeOut,
}

/// Decide what a command's status should be, given its device (if it exists) and now.
pub fn judge(
    ctx: &Context,
    command: &DeviceCommand,
    device: Option<&Device>,
    now: jiff::Timestamp,
) -> Verdict {
    let created = command
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let deadline = created.as_second() + i64::from(command.spec.timeout_seconds);
    if now.as_second() >= deadline {
        return Verdict::TimeOut;
    }
    let Some(device) = device else {
        return Verdict::Wait {
            reason: "DeviceNotFound".into(),
            message: format!("device {} does not exist (yet)", command.spec.device),
        };
    };
    let decommissioned = device.spec.lifecycle == Lifecycle::Decommissioned
        || device.status.as_ref().and_then(|s| s.phase) == Some(Phase::Decommissioned);
    if decommissioned {
        return Verdict::Reject {
            reason: "DeviceDecommissioned".into(),
            message: format!("device {} is decommissioned", command.spec.device),
        };
    }
    let namespace = command.namespace().unwrap_or_default();
    match resolve_model(ctx, &device.spec.model_ref, &namespace).1 {
        Err(p) => Verdict::Wait {
            reason: "ModelNotResolved".into(),
            message: p.message,
        },
        Ok(model) => {
            match payload::validate_call(&model, &command.spec.service, &command.spec.params) {
                Ok(_) => Verdict::Wait {
                    reason: "WaitingForDelivery".into(),
                    message: format!("valid for model {}; waiting for the device", model.key),
                },
                Err(e) => Verdict::Reject {
                    reason: e.reason().into(),
                    message: e.to_string(),
                },
            }
        }
    }
}

/// Reconcile one DeviceCommand.
pub async fn reconcile(command: Arc<DeviceCommand>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = command
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = command.name_any();
    let old = command.status.clone().unwrap_or_default();
    if old.phase.is_some_and(CommandPhase::is_terminal) {
        return Ok(Action::await_change());
    }
    let device = ctx
        .devices
        .get(&ObjectRef::<Device>::new(&command.spec.device).within(&namespace));
    let now = ctx.now();
    let verdict = judge(&ctx, &command, device.as_deref(), now.0);
    let mut status = old.clone();
    status.observed_generation = command.metadata.generation;
    let generation = command.metadata.generation;
    match &verdict {
        Verdict::TimeOut => {
            status.phase = Some(CommandPhase::TimedOut);
            status.reason = Some("Timeout".into());
            status.message = Some(format!(
                "no answer within {} s",
                command.spec.timeout_seconds
            ));
            status.completed_at = Some(now.clone());
            conditions::set(
                &mut status.conditions,
                READY,
                false,
                "Timeout",
                "the command timed out",
                generation,
                &now,
            );
        }
        Verdict::Reject { reason, message } => {
            status.phase = Some(CommandPhase::Rejected);
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
            status.completed_at = Some(now.clone());
            conditions::set(
                &mut status.conditions,
                READY,
                false,
                reason,
                message.clone(),
                generation,
                &now,
            );
        }
        Verdict::Wait { reason, message } => {
            // Sent is the front door's; keep it.
            if status.phase != Some(CommandPhase::Sent) {
                status.phase = Some(CommandPhase::Pending);
            }
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
            let valid = reason == "WaitingForDelivery";
            conditions::set(
                &mut status.conditions,
                READY,
                valid,
                reason,
                message.clone(),
                generation,
                &now,
            );
        }
    }
    // Once Sent, the front door owns the command until it answers or the controller times it
    // out: waiting changes nothing.
    let sent_and_waiting =
        old.phase == Some(CommandPhase::Sent) && matches!(verdict, Verdict::Wait { .. });
    if status != old && !sent_and_waiting {
        // Conditional on the version this decision read: the front door writes Sent and the
        // device's answer concurrently, and a decision from a stale cache must not undo them.
        let patch = json!({
            "metadata": {"resourceVersion": command.resource_version()},
            "status": {
                "observedGeneration": status.observed_generation,
                "phase": status.phase,
                "reason": status.reason,
                "message": status.message,
                "completedAt": status.completed_at,
                "conditions": status.conditions,
            },
        });
        let commands: Api<DeviceCommand> = Api::namespaced(ctx.client.clone(), &namespace);
        match commands
            .patch_status(
                &name,
                &PatchParams::apply(field_managers::DEVICE_COMMAND),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            // Changed since: the watch brings the new version and another reconcile.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => {
                return Err(api(format!(
                    "write status of DeviceCommand {namespace}/{name}"
                ))(e));
            }
        }
        match &verdict {
            Verdict::Reject { reason, message } => {
                ctx.event(
                    command.as_ref(),
                    EventType::Warning,
                    reason,
                    "Validate",
                    message.clone(),
                )
                .await
            }
            Verdict::TimeOut => {
                ctx.event(
                    command.as_ref(),
                    EventType::Warning,
                    "Timeout",
                    "Deliver",
                    "no answer in time".into(),
                )
                .await
            }
            Verdict::Wait { .. } => {}
        }
    }
    let created = command
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t: &Time| t.0)
        .unwrap_or(now.0);
    let deadline =
        jiff::Timestamp::from_second(created.as_second() + i64::from(command.spec.timeout_seconds))
            .unwrap_or(now.0);
    Ok(match verdict {
        Verdict::Wait { .. } => Action::requeue(until(&ctx, deadline)),
        _ => Action::await_change(),
    })
}

/// What to do after a failed reconcile.
pub fn error_policy(command: Arc<DeviceCommand>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, command, error, ctx)
}
