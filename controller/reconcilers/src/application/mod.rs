//! The Application controller: issues a northbound application's credentials into the Secret
//! `<name>-app-credentials` (rotation by the same annotation as devices) and reports where they
//! are and which topic prefix they open.

use std::sync::Arc;
use std::time::Duration;

use devplane_api::constants::conditions::{CREDENTIALS_ISSUED, READY};
use devplane_api::constants::{APPLICATION_SECRET_SUFFIX, field_managers, topics};
use devplane_api::v1alpha1::{Application, ApplicationStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions;
use crate::context::Context;
use crate::credentials::{self, Owner, ROTATE_ANNOTATION, Want};
use crate::device::until;
use crate::error::{Error, Result, api};

/// Controller name in metrics and logs.
pub const NAME: &str = "application";

/// Name of an application's credentials Secret.
pub fn secret_name(application: &str) -> String {
    devplane_core::naming::derived_name(application, APPLICATION_SECRET_SUFFIX)
}

/// Reconcile one Application: its Secret goes with it by owner reference.
pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = app.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = app.name_any();
    let now = ctx.now();
    let secret_name = secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let want = Want {
        issued: true,
        rotation: app.annotations().get(ROTATE_ANNOTATION).cloned(),
    };
    let cached = ctx
        .secrets
        .get(&ObjectRef::<Secret>::new(&secret_name).within(&namespace))
        .map(|s| Secret::clone(&s));
    let (action, current) = credentials::plan_checked(
        &secrets,
        &secret_name,
        (&Application::kind(&()), &name),
        &want,
        cached,
        now.0,
    )
    .await?;
    let owner = Owner {
        kind_label: "application",
        namespace: &namespace,
        name: &name,
        reference: app
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?,
        endpoints: ctx
            .settings
            .app_endpoint
            .iter()
            .map(|url| ("mqtt".to_string(), url.clone()))
            .collect(),
    };
    let target = credentials::Target {
        secrets: &secrets,
        owner: &owner,
        secret_name: &secret_name,
        overlap: ctx.settings.rotation_overlap,
        manager: field_managers::APPLICATION,
    };
    let secret = credentials::apply(&target, &action, current, &want, &now).await?;

    let old = app.status.clone().unwrap_or_default();
    let mut status = ApplicationStatus {
        observed_generation: app.metadata.generation,
        topic_prefix: Some(format!("{}/{namespace}/", topics::NORTH_ROOT)),
        credentials: secret
            .as_ref()
            .map(|s| credentials::status_of(&secret_name, s)),
        ..old.clone()
    };
    let issued = secret.is_some();
    for type_ in [CREDENTIALS_ISSUED, READY] {
        conditions::set(
            &mut status.conditions,
            type_,
            issued,
            if issued { "Issued" } else { "NotIssued" },
            if issued {
                format!("credentials are in Secret {secret_name}")
            } else {
                "credentials are not issued yet".to_string()
            },
            app.metadata.generation,
            &now,
        );
    }
    if status != old {
        let patch = json!({
            "apiVersion": Application::api_version(&()),
            "kind": Application::kind(&()),
            "status": status,
        });
        Api::<Application>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(field_managers::APPLICATION).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(api(format!(
                "write status of Application {namespace}/{name}"
            )))?;
    }
    Ok(match secret.as_ref().and_then(credentials::overlap_ends) {
        Some(at) => Action::requeue(until(&ctx, at)),
        None => Action::requeue(Duration::from_secs(600)),
    })
}

/// What to do after a failed reconcile.
pub fn error_policy(app: Arc<Application>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::retry::error_policy(NAME, app, error, ctx)
}
