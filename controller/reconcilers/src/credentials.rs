//! Credentials Secrets of devices and gateways: issue, rotate with an overlap window, revoke.
//! The decision is pure ([`plan`]); [`apply`] carries it out.

use std::collections::BTreeMap;

use base64::Engine;
use devplane_api::constants::{APPLICATION_SECRET_TYPE, CREDENTIALS_SECRET_TYPE, labels};
use devplane_core::naming::{owner_annotations, owner_label_value};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

use crate::error::{Error, Result, api};

/// Annotation on a Device or Gateway: changing its value rotates the credentials.
pub const ROTATE_ANNOTATION: &str = "iot.devplane.io/rotate-credentials";
/// Annotation on the Secret: the rotation request it last answered.
pub const ROTATION_ANNOTATION: &str = "iot.devplane.io/rotation";
/// Annotation on the Secret: when the current credentials were issued.
pub const ISSUED_AT_ANNOTATION: &str = "iot.devplane.io/issued-at";
/// Secret key of the previous password during the overlap window.
pub const PREVIOUS_PASSWORD: &str = "previous-password";
/// Secret key: when the previous password stops working (RFC 3339).
pub const PREVIOUS_EXPIRES: &str = "previous-password-expires-at";

/// What the owner asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Want {
    /// Credentials should exist.
    pub issued: bool,
    /// The owner's rotation request (its annotation), if any.
    pub rotation: Option<String>,
}

/// What to do with the Secret.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing.
    Keep,
    /// Create it with fresh credentials.
    Create,
    /// Replace the password; the old one works until the overlap ends.
    Rotate,
    /// The overlap window is over: drop the previous password.
    DropPrevious,
    /// Revoke: delete it.
    Delete,
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Decide what to do, given the wish, the current Secret and now.
pub fn plan(want: &Want, current: Option<&Secret>, now: jiff::Timestamp) -> Action {
    let Some(secret) = current else {
        return if want.issued {
            Action::Create
        } else {
            Action::Keep
        };
    };
    if !want.issued {
        return Action::Delete;
    }
    let answered = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATION_ANNOTATION))
        .cloned();
    if want.rotation.is_some() && want.rotation != answered {
        return Action::Rotate;
    }
    let expired = text(secret, PREVIOUS_EXPIRES)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t <= now);
    if expired {
        Action::DropPrevious
    } else {
        Action::Keep
    }
}

/// Decide what to do from the cached Secret; anything but "keep" is decided again on a fresh
/// read, so a cache that has not seen the latest Secret never makes us issue or rotate twice.
/// Returns the decision and the Secret it was made on. A Secret of the name that is not the
/// `kind` named `owner`'s (someone else's) is never written or deleted: that is refused as
/// invalid input.
pub async fn plan_checked(
    secrets: &Api<Secret>,
    secret_name: &str,
    (kind, owner): (&str, &str),
    want: &Want,
    cached: Option<Secret>,
    now: jiff::Timestamp,
) -> Result<(Action, Option<Secret>)> {
    let action = plan(want, cached.as_ref(), now);
    if action == Action::Keep {
        return Ok((action, cached));
    }
    let current = secrets
        .get_opt(secret_name)
        .await
        .map_err(api(format!("read Secret {secret_name}")))?;
    if let Some(secret) = &current
        && !owned_by(secret, kind, owner)
    {
        return Err(Error::ForeignSecret {
            secret: secret_name.to_string(),
            kind: kind.to_string(),
        });
    }
    Ok((plan(want, current.as_ref(), now), current))
}

/// Where an owner's credentials are and when they were issued, for its status.
pub fn status_of(secret_name: &str, secret: &Secret) -> devplane_api::v1alpha1::CredentialsStatus {
    devplane_api::v1alpha1::CredentialsStatus {
        secret_name: secret_name.to_string(),
        issued_at: secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ISSUED_AT_ANNOTATION))
            .and_then(|t| t.parse().ok())
            .map(Time),
    }
}

/// When the overlap window of a rotation ends, if one is open.
pub fn overlap_ends(secret: &Secret) -> Option<jiff::Timestamp> {
    text(secret, PREVIOUS_EXPIRES).and_then(|t| t.parse().ok())
}

/// A new high-entropy password: 32 random bytes, base64url.
pub fn new_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Who the credentials are for.
pub struct Owner<'a> {
    /// `device`, `gateway` or `application` (the label naming the owner).
    pub kind_label: &'static str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Controller owner reference to put on the Secret.
    pub reference: OwnerReference,
    /// Endpoints the owner may use, by protocol.
    pub endpoints: Vec<(String, String)>,
}

/// The Secret with `password` (and an optional previous one).
pub fn build(
    owner: &Owner<'_>,
    secret_name: &str,
    password: &str,
    previous: Option<(&str, &str)>,
    rotation: Option<&str>,
    issued_at: &Time,
) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put("username", &format!("{}/{}", owner.namespace, owner.name));
    put("password", password);
    for (protocol, url) in &owner.endpoints {
        put(&format!("{protocol}-endpoint"), url);
    }
    if let Some((old, expires)) = previous {
        put(PREVIOUS_PASSWORD, old);
        put(PREVIOUS_EXPIRES, expires);
    }
    let mut annotations = owner_annotations(owner.name);
    annotations.insert(ISSUED_AT_ANNOTATION.to_string(), issued_at.0.to_string());
    if let Some(r) = rotation {
        annotations.insert(ROTATION_ANNOTATION.to_string(), r.to_string());
    }
    let labels = BTreeMap::from([
        (
            match owner.kind_label {
                "gateway" => labels::GATEWAY,
                "application" => labels::APPLICATION,
                _ => labels::DEVICE,
            }
            .to_string(),
            owner_label_value(owner.name),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(owner.namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(
            match owner.kind_label {
                "application" => APPLICATION_SECRET_TYPE,
                _ => CREDENTIALS_SECRET_TYPE,
            }
            .to_string(),
        ),
        data: Some(data),
        ..Secret::default()
    }
}

/// Where and how credentials are written.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// Secrets of the owner's namespace.
    pub secrets: &'a Api<Secret>,
    /// The owner.
    pub owner: &'a Owner<'a>,
    /// The Secret's name.
    pub secret_name: &'a str,
    /// How long a rotated-out password keeps working.
    pub overlap: std::time::Duration,
    /// Field manager of the writes.
    pub manager: &'a str,
}

/// Carry out `action`; returns the Secret as it now is (None when deleted or absent).
pub async fn apply(
    target: &Target<'_>,
    action: &Action,
    current: Option<Secret>,
    want: &Want,
    now: &Time,
) -> Result<Option<Secret>> {
    let Target {
        secrets,
        owner,
        secret_name,
        overlap,
        manager,
    } = *target;
    let write = |secret: Secret| async move {
        let params = PatchParams::apply(manager).force();
        secrets
            .patch(secret_name, &params, &Patch::Apply(&secret))
            .await
            .map_err(api(format!("write Secret {secret_name}")))
    };
    match action {
        Action::Keep => Ok(current),
        Action::Create => {
            let secret = build(
                owner,
                secret_name,
                &new_password(),
                None,
                want.rotation.as_deref(),
                now,
            );
            Ok(Some(write(secret).await?))
        }
        Action::Rotate => {
            let old = current
                .as_ref()
                .and_then(|s| text(s, "password"))
                .unwrap_or_default();
            let expires =
                jiff::Timestamp::from_second(now.0.as_second() + overlap.as_secs() as i64)
                    .unwrap_or(now.0)
                    .to_string();
            let secret = build(
                owner,
                secret_name,
                &new_password(),
                Some((&old, &expires)),
                want.rotation.as_deref(),
                now,
            );
            Ok(Some(write(secret).await?))
        }
        Action::DropPrevious => {
            let Some(current) = current else {
                return Ok(None);
            };
            let password = text(&current, "password").unwrap_or_default();
            let issued = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ISSUED_AT_ANNOTATION))
                .and_then(|t| t.parse().ok())
                .map(Time)
                .unwrap_or_else(|| now.clone());
            let secret = build(
                owner,
                secret_name,
                &password,
                None,
                want.rotation.as_deref(),
                &issued,
            );
            Ok(Some(write(secret).await?))
        }
        Action::Delete => {
            let kind = owner.reference.kind.as_str();
            delete_if_owned(secrets, current.as_ref(), kind, owner.name).await?;
            Ok(None)
        }
    }
}

/// Whether `secret` belongs to the `kind` named `owner` (an owner reference to it, as every
/// credentials Secret devplane writes has; a Secret of the same name made by someone else has
/// none).
pub fn owned_by(secret: &Secret, kind: &str, owner: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == kind && r.name == owner)
}

/// Deletes `secret` (as read just before) if it belongs to the `kind` named `owner`: revoking
/// credentials never deletes a Secret that only shares their name. The delete is conditional
/// on the Secret's uid, so one made again meanwhile is not touched; gone already is fine.
pub async fn delete_if_owned(
    secrets: &Api<Secret>,
    secret: Option<&Secret>,
    kind: &str,
    owner: &str,
) -> Result<()> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let name = secret.metadata.name.clone().unwrap_or_default();
    if !owned_by(secret, kind, owner) {
        tracing::warn!(secret = %name, owner = %format!("{kind} {owner}"), "not revoking credentials: the Secret of their name is not devplane's; left in place");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(api(format!("revoke Secret {name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(rotation: Option<&str>, expires: Option<&str>) -> Secret {
        let mut s = Secret::default();
        if let Some(r) = rotation {
            s.metadata.annotations = Some(BTreeMap::from([(
                ROTATION_ANNOTATION.to_string(),
                r.to_string(),
            )]));
        }
        if let Some(e) = expires {
            s.data = Some(BTreeMap::from([(
                PREVIOUS_EXPIRES.to_string(),
                ByteString(e.as_bytes().to_vec()),
            )]));
        }
        s
    }

    #[test]
    fn only_a_secret_with_an_owner_reference_to_the_owner_is_its_own() {
        let mut s = secret(None, None);
        assert!(!owned_by(&s, "Device", "thermo"), "no owner reference");
        s.metadata.owner_references = Some(vec![OwnerReference {
            kind: "Device".into(),
            name: "thermo".into(),
            ..OwnerReference::default()
        }]);
        assert!(owned_by(&s, "Device", "thermo"));
        assert!(!owned_by(&s, "Gateway", "thermo"));
        assert!(!owned_by(&s, "Device", "other"));
    }

    fn now() -> jiff::Timestamp {
        "2026-11-25T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn credentials_are_created_kept_rotated_and_revoked_as_asked() {
        let issued = Want {
            issued: true,
            rotation: None,
        };
        assert_eq!(plan(&issued, None, now()), Action::Create);
        assert_eq!(
            plan(
                &Want {
                    issued: false,
                    rotation: None
                },
                None,
                now()
            ),
            Action::Keep
        );
        assert_eq!(
            plan(&issued, Some(&secret(None, None)), now()),
            Action::Keep
        );
        assert_eq!(
            plan(
                &Want {
                    issued: false,
                    rotation: None
                },
                Some(&secret(None, None)),
                now()
            ),
            Action::Delete
        );
        let rotate = Want {
            issued: true,
            rotation: Some("1".into()),
        };
        assert_eq!(
            plan(&rotate, Some(&secret(None, None)), now()),
            Action::Rotate
        );
        assert_eq!(
            plan(&rotate, Some(&secret(Some("1"), None)), now()),
            Action::Keep,
            "already answered"
        );
        assert_eq!(
            plan(
                &rotate,
                Some(&secret(Some("1"), Some("2026-11-25T11:59:00Z"))),
                now()
            ),
            Action::DropPrevious
        );
        assert_eq!(
            plan(
                &rotate,
                Some(&secret(Some("1"), Some("2026-11-25T12:30:00Z"))),
                now()
            ),
            Action::Keep,
            "overlap still open"
        );
    }

    #[test]
    fn passwords_are_long_and_random() {
        let (a, b) = (new_password(), new_password());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
