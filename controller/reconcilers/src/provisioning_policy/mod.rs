//! The ProvisioningPolicy controller: checks that a policy can provision (its rules compile,
//! its model resolves and the template's attributes satisfy it, the template's lifecycle lets
//! devices connect, its group key or CA Secret is there and usable) and counts the devices
//! carrying its label. The front door does the provisioning; it writes the refusals and the
//! last provisioning into the same status under its own field manager.

use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::conditions::READY;
use devplane_api::constants::field_managers;
use devplane_api::v1alpha1::{Lifecycle, ProvisioningPolicy};
use devplane_core::ModelKey;
use devplane_core::payload::{AttributeCheck, validate_attributes};
use devplane_core::provisioning::{CA_CERT, GROUP_KEY, Rules};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result, api};

/// Controller name in metrics and logs.
pub const NAME: &str = "provisioningpolicy";

/// Why a policy cannot provision, as a condition reason and message.
type NotReady = (&'static str, String);

/// Reconcile one ProvisioningPolicy: Ready (or why not) and the count of its devices.
pub async fn reconcile(policy: Arc<ProvisioningPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = policy.name_any();
    let verdict = match check_spec(&policy, &ctx, &namespace) {
        Err(not_ready) => Err(not_ready),
        Ok(()) => check_secrets(&policy, &ctx, &namespace).await?,
    };
    let provisioned = ctx
        .devices
        .state()
        .iter()
        .filter(|d| {
            d.namespace().as_deref() == Some(namespace.as_str())
                && devplane_core::provisioning::policy_of(&d.metadata) == Some(name.as_str())
        })
        .count();
    let old = policy.status.clone().unwrap_or_default();
    let mut conditions_now = old.conditions.clone();
    let (ready, reason, message) = match &verdict {
        Ok(()) => (true, "Ready", "the policy provisions devices".to_string()),
        Err((reason, message)) => (false, *reason, message.clone()),
    };
    let now = ctx.now();
    conditions::set(
        &mut conditions_now,
        READY,
        ready,
        reason,
        message,
        policy.metadata.generation,
        &now,
    );
    let provisioned = i64::try_from(provisioned).unwrap_or(i64::MAX);
    let changed = old.observed_generation != policy.metadata.generation
        || old.provisioned != Some(provisioned)
        || old.conditions != conditions_now;
    if changed {
        // Only the fields this controller owns: the front door writes `refused` and
        // `lastProvisioned` under its own field manager.
        let patch = json!({
            "apiVersion": ProvisioningPolicy::api_version(&()),
            "kind": ProvisioningPolicy::kind(&()),
            "status": {
                "observedGeneration": policy.metadata.generation,
                "conditions": conditions_now,
                "provisioned": provisioned,
            },
        });
        Api::<ProvisioningPolicy>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(field_managers::PROVISIONING_POLICY).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(api(format!(
                "write status of ProvisioningPolicy {namespace}/{name}"
            )))?;
    }
    // Secrets are read, not watched (they carry no label of devplane's): look again now
    // and then, sooner while the policy is not ready.
    Ok(Action::requeue(if verdict.is_ok() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    }))
}

/// What the spec alone (and the model cache) says.
fn check_spec(
    policy: &ProvisioningPolicy,
    ctx: &Context,
    namespace: &str,
) -> std::result::Result<(), NotReady> {
    Rules::compile(&policy.spec).map_err(|e| ("InvalidSpec", e.to_string()))?;
    let template = &policy.spec.template.spec;
    if matches!(
        template.lifecycle,
        Lifecycle::Planned | Lifecycle::Decommissioned
    ) {
        return Err((
            "InvalidSpec",
            format!(
                "spec.template.spec.lifecycle {:?} issues no credentials; use Servicing or Maintenance",
                template.lifecycle
            ),
        ));
    }
    let key = ModelKey::from_ref(&template.model_ref, namespace);
    let model = ctx
        .resolve(&key)
        .map_err(|e| ("ModelNotResolved", format!("model {key}: {e}")))?;
    let problems = validate_attributes(&model, &template.attributes, AttributeCheck::Configured);
    if let Some(first) = problems.first() {
        return Err((
            "InvalidTemplate",
            format!("spec.template.spec.attributes: {first}"),
        ));
    }
    Ok(())
}

/// Whether the Secrets the attestation names are there and usable.
async fn check_secrets(
    policy: &ProvisioningPolicy,
    ctx: &Context,
    namespace: &str,
) -> Result<std::result::Result<(), NotReady>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let attestation = &policy.spec.attestation;
    let mut wanted = Vec::new();
    if let Some(symmetric) = &attestation.symmetric_key {
        wanted.push((symmetric.secret_ref.name.as_str(), GROUP_KEY));
    }
    if let Some(x509) = &attestation.x509 {
        wanted.push((x509.ca_secret_ref.name.as_str(), CA_CERT));
    }
    for (secret, key) in wanted {
        let found = secrets
            .get_opt(secret)
            .await
            .map_err(api(format!("read Secret {namespace}/{secret}")))?;
        let value = found
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(key))
            .map(|v| v.0)
            .filter(|v| !v.is_empty());
        let Some(value) = value else {
            return Ok(Err((
                "SecretMissing",
                format!("Secret {namespace}/{secret} has no {key}"),
            )));
        };
        if key == CA_CERT && !looks_like_pem_certificate(&value) {
            return Ok(Err((
                "InvalidSecret",
                format!("{key} of Secret {namespace}/{secret} holds no PEM certificate"),
            )));
        }
    }
    Ok(Ok(()))
}

fn looks_like_pem_certificate(value: &[u8]) -> bool {
    String::from_utf8_lossy(value).contains("-----BEGIN CERTIFICATE-----")
}

/// What to do after a failed reconcile.
pub fn error_policy(policy: Arc<ProvisioningPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, policy, error, ctx)
}

#[cfg(test)]
mod tests {
    use super::looks_like_pem_certificate;

    #[test]
    fn a_ca_secret_must_hold_a_pem_certificate() {
        assert!(looks_like_pem_certificate(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!looks_like_pem_certificate(b"not a certificate"));
    }
}
