//! What Devices and Gateways share: the lifecycle state machine, credentials, and the
//! ModelResolved / CredentialsIssued / Ready conditions.

use devplane_api::constants::conditions::{
    CONNECTED, CREDENTIALS_ISSUED, MODEL_RESOLVED, READY, TWIN_SYNCED,
};
use devplane_api::v1alpha1::{CredentialsStatus, Lifecycle, Phase};
use devplane_core::lifecycle;
use devplane_core::naming::credentials_secret_name;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use crate::conditions;
use crate::context::Context;
use crate::credentials::{self, Owner, Want};
use crate::error::{Result, api};

/// A reason and a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Problem {
    /// A problem.
    pub fn new(reason: &str, message: impl Into<String>) -> Problem {
        Problem {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The facts about a Device or Gateway the controller acts on.
pub struct Subject<'a> {
    /// `device` or `gateway`.
    pub kind_label: &'static str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.lifecycle`.
    pub lifecycle: Lifecycle,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// Whether it has ever connected (`status.connection.firstConnected`).
    pub has_connected: bool,
    /// The rotation request annotation.
    pub rotation: Option<String>,
    /// Owner reference for its Secret.
    pub owner: OwnerReference,
    /// Current conditions.
    pub conditions: Vec<Condition>,
    /// The model: Ok(version) or the problem resolving it.
    pub model: std::result::Result<String, Problem>,
    /// Other problems that keep it from Ready (attribute values, a missing gateway).
    pub problems: Vec<Problem>,
    /// Endpoints it may use.
    pub endpoints: Vec<(String, String)>,
}

/// What the reconcile decided and did.
pub struct Outcome {
    /// The phase to record.
    pub phase: Phase,
    /// The conditions to record.
    pub conditions: Vec<Condition>,
    /// The credentials to record.
    pub credentials: Option<CredentialsStatus>,
    /// When to look again (an open rotation overlap), if ever.
    pub requeue_at: Option<jiff::Timestamp>,
    /// What was done with the credentials.
    pub action: credentials::Action,
}

/// Run the lifecycle and credentials part of a Device or Gateway reconcile.
pub async fn reconcile(ctx: &Context, subject: Subject<'_>, manager: &str) -> Result<Outcome> {
    let now = ctx.now();
    let secret_name = credentials_secret_name(subject.name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), subject.namespace);
    let cached = ctx
        .secrets
        .get(&ObjectRef::<Secret>::new(&secret_name).within(subject.namespace))
        .map(|s| Secret::clone(&s));

    // A new device waits in Planned (no credentials) until its model resolves; one already in
    // service keeps its credentials while its model is broken.
    let held = subject.model.is_err() && matches!(subject.phase, None | Some(Phase::Planned));
    let next = if held {
        Phase::Planned
    } else {
        lifecycle::next_phase(subject.phase, subject.lifecycle, subject.has_connected)
    };
    let want = Want {
        issued: lifecycle::has_credentials(next),
        rotation: subject.rotation.clone(),
    };
    // Leaving a phase with credentials while the cache shows no Secret: the Secret may just
    // not have reached the cache yet (created by the reconcile before), and "nothing to
    // revoke" must not be decided on that.
    let cached = match cached {
        None if !want.issued && subject.phase.is_some_and(lifecycle::has_credentials) => secrets
            .get_opt(&secret_name)
            .await
            .map_err(api(format!("read Secret {secret_name}")))?,
        cached => cached,
    };
    let (action, current) = credentials::plan_checked(
        &secrets,
        &secret_name,
        (&subject.owner.kind, subject.name),
        &want,
        cached,
        now.0,
    )
    .await?;
    let owner = Owner {
        kind_label: subject.kind_label,
        namespace: subject.namespace,
        name: subject.name,
        reference: subject.owner.clone(),
        endpoints: subject.endpoints.clone(),
    };
    let target = credentials::Target {
        secrets: &secrets,
        owner: &owner,
        secret_name: &secret_name,
        overlap: ctx.settings.rotation_overlap,
        manager,
    };
    // The status written next in this same reconcile covers what the Secret's event says.
    let writing = (action != credentials::Action::Keep).then(|| {
        let owner = (subject.namespace.to_string(), subject.name.to_string());
        ctx.echoes
            .writing::<Secret>(subject.kind_label, subject.namespace, &secret_name, owner)
    });
    let secret = credentials::apply(&target, &action, current, &want, &now).await?;
    if let (Some(writing), Some(written)) = (writing, &secret) {
        writing.wrote(written);
    }

    let mut conditions = subject.conditions.clone();
    let generation = subject.generation;
    match &subject.model {
        Ok(version) => conditions::set(
            &mut conditions,
            MODEL_RESOLVED,
            true,
            "Resolved",
            format!("model version {version}"),
            generation,
            &now,
        ),
        Err(p) => conditions::set(
            &mut conditions,
            MODEL_RESOLVED,
            false,
            &p.reason,
            p.message.clone(),
            generation,
            &now,
        ),
    }
    let issued = secret.is_some();
    let (reason, message) = match (issued, next) {
        (true, _) => ("Issued", format!("credentials are in Secret {secret_name}")),
        (false, Phase::Decommissioned) => {
            ("Revoked", "decommissioned: credentials revoked".to_string())
        }
        (false, _) if held => (
            "WaitingForModel",
            "credentials are issued once the model resolves".to_string(),
        ),
        (false, _) => (
            "NotRequested",
            format!("lifecycle {} issues no credentials", subject.lifecycle),
        ),
    };
    conditions::set(
        &mut conditions,
        CREDENTIALS_ISSUED,
        issued,
        reason,
        message,
        generation,
        &now,
    );
    let blocker = match &subject.model {
        Err(p) => Some(p.clone()),
        Ok(_) => subject.problems.first().cloned(),
    };
    match &blocker {
        Some(p) => {
            let mut message = p.message.clone();
            if subject.problems.len() > 1 {
                message.push_str(&format!(
                    " (and {} more problems)",
                    subject.problems.len() - 1
                ));
            }
            conditions::set(
                &mut conditions,
                READY,
                false,
                &p.reason,
                message,
                generation,
                &now,
            );
        }
        None => conditions::set(
            &mut conditions,
            READY,
            true,
            "Reconciled",
            format!("phase {next}"),
            generation,
            &now,
        ),
    }

    let credentials = secret
        .as_ref()
        .map(|s| credentials::status_of(&secret_name, s));
    let requeue_at = secret.as_ref().and_then(credentials::overlap_ends);
    Ok(Outcome {
        phase: next,
        conditions,
        credentials,
        requeue_at,
        action,
    })
}

/// The Event reason and note of what happened to the credentials, if anything.
fn credentials_note(action: &credentials::Action) -> Option<(&'static str, &'static str)> {
    match action {
        credentials::Action::Create => Some(("CredentialsIssued", "credentials issued")),
        credentials::Action::Rotate => Some((
            "CredentialsRotated",
            "credentials rotated; the previous password works until the overlap ends",
        )),
        credentials::Action::Delete => Some(("CredentialsRevoked", "credentials revoked")),
        _ => None,
    }
}

/// Events for what changed between the old and new phase and conditions.
pub async fn announce<K>(
    ctx: &Context,
    object: &K,
    old_phase: Option<Phase>,
    outcome: &Outcome,
    old_conditions: &[Condition],
) where
    K: kube::Resource<DynamicType = ()>,
{
    // One event per transition (a new device's first reconcile is one event, not two): events
    // are writes, and thousands of devices onboard at once.
    let phase_note = (old_phase != Some(outcome.phase)).then(|| {
        format!(
            "phase {} → {}",
            old_phase
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            outcome.phase
        )
    });
    // A device a batch or a policy onboarded gets no Event for its routine first steps
    // (credentials issued, Provisioned): the batch's and the policy's own milestones say it
    // once for thousands. Rotations, revocations, other phase changes and warnings still do.
    let fleet_member = {
        let labels = object.meta().labels.as_ref();
        labels.is_some_and(|l| {
            l.contains_key(devplane_api::constants::labels::BATCH)
                || l.contains_key(devplane_api::constants::labels::PROVISIONING_POLICY)
        })
    };
    let routine = matches!(outcome.action, credentials::Action::Create)
        && matches!(old_phase, None | Some(Phase::Planned))
        && outcome.phase == Phase::Provisioned;
    let (credentials_note, phase_note) = if fleet_member && routine {
        (None, None)
    } else {
        (credentials_note(&outcome.action), phase_note)
    };
    match (credentials_note, phase_note) {
        (Some((reason, note)), Some(phase)) => {
            ctx.event(
                object,
                EventType::Normal,
                reason,
                "Reconcile",
                format!("{note}; {phase}"),
            )
            .await
        }
        (Some((reason, note)), None) => {
            ctx.event(
                object,
                EventType::Normal,
                reason,
                "Reconcile",
                note.to_string(),
            )
            .await
        }
        (None, Some(phase)) => {
            ctx.event(
                object,
                EventType::Normal,
                "PhaseChanged",
                "Reconcile",
                phase,
            )
            .await
        }
        (None, None) => {}
    }
    for (type_, reason_prefix) in [(MODEL_RESOLVED, "Model"), (READY, "NotReady")] {
        let was = old_conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()));
        let now = outcome.conditions.iter().find(|c| c.type_ == type_);
        if let Some(now) = now
            && now.status == "False"
            && was
                .as_ref()
                .is_none_or(|(s, r)| s != "False" || *r != now.reason)
        {
            ctx.event(
                object,
                EventType::Warning,
                &now.reason,
                reason_prefix,
                now.message.clone(),
            )
            .await;
        }
    }
}

/// Drop from a status about to be applied what the front door writes: `connection`, the
/// `Connected` and `TwinSynced` conditions, and `more` fields. Applying a stale copy of them
/// would take them over and overwrite what the front door wrote since.
pub fn leave_front_door_fields(status: &mut serde_json::Value, more: &[&str]) {
    let Some(map) = status.as_object_mut() else {
        return;
    };
    map.remove("connection");
    for field in more {
        map.remove(*field);
    }
    if let Some(serde_json::Value::Array(conditions)) = map.get_mut("conditions") {
        conditions.retain(|c| {
            !matches!(
                c.get("type").and_then(serde_json::Value::as_str),
                Some(CONNECTED | TWIN_SYNCED)
            )
        });
    }
}

/// Revoke the credentials of the device or gateway (`kind`) `owner`: delete its Secret if it is
/// its own (gone already is fine; a Secret that only shares the name is left alone).
pub async fn revoke(ctx: &Context, namespace: &str, kind: &str, owner: &str) -> Result<()> {
    let secret_name = credentials_secret_name(owner);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let current = secrets
        .get_opt(&secret_name)
        .await
        .map_err(api(format!("read Secret {secret_name}")))?;
    credentials::delete_if_owned(&secrets, current.as_ref(), kind, owner).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_controller_status_leaves_out_what_the_front_door_writes() {
        let mut status = json!({
            "phase": "Servicing",
            "connection": {"state": "Online"},
            "reported": {"interval": 60},
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Connected", "status": "True"},
                {"type": "TwinSynced", "status": "False"},
            ],
        });
        leave_front_door_fields(&mut status, &["reported"]);
        assert_eq!(
            status,
            json!({"phase": "Servicing", "conditions": [{"type": "Ready", "status": "True"}]})
        );
    }
}
