//! Credentials Secrets in the index: whose they are, the tags of their passwords and, when
//! keys are kept (DTLS pre-shared keys, EnOS signatures), the passwords themselves.

use std::collections::HashSet;

use devplane_api::constants::{enos, labels};
use devplane_core::model::ModelKey;
use devplane_core::naming::owner_from_label;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{
    Credential, PASSWORD, PREVIOUS_EXPIRES, PREVIOUS_PASSWORD, PasswordTag, PlainKeys,
    PrincipalKind, ROTATION_ANNOTATION, Refusal, Registry,
};
use crate::topic::Identity;

impl Registry {
    fn owner_of(secret: &Secret) -> Option<(PrincipalKind, Identity)> {
        let namespace = secret.namespace()?;
        let labels = secret.labels();
        if let Some(model) = labels.get(labels::ENOS_PRODUCT) {
            return Some((PrincipalKind::Product, Identity::new(namespace, model)));
        }
        let (kind, label) = [
            (PrincipalKind::Device, labels::DEVICE),
            (PrincipalKind::Gateway, labels::GATEWAY),
            (PrincipalKind::Application, labels::APPLICATION),
        ]
        .into_iter()
        .find_map(|(kind, key)| Some((kind, labels.get(key)?)))?;
        // An owner whose name is too long for a label value is named by an annotation.
        let name = owner_from_label(label, secret.metadata.annotations.as_ref());
        Some((kind, Identity::new(namespace, name)))
    }

    /// Record a credentials Secret (one labelled with its device, gateway or application) or an
    /// EnOS product Secret; returns the identity whose credentials changed (none for a
    /// product).
    pub fn apply_secret(&mut self, secret: &Secret) -> Option<Identity> {
        let (kind, id) = Self::owner_of(secret)?;
        let text = |key: &str| secret.data.as_ref()?.get(key).map(|v| v.0.clone());
        let secret_key = (secret.namespace().unwrap_or_default(), secret.name_any());
        if kind == PrincipalKind::Product {
            // The product secret of a model's dynamic activation (kept in memory: it signs).
            let model = ModelKey::new(id.namespace, id.name);
            match text(enos::PRODUCT_SECRET_KEY) {
                Some(product_secret) => {
                    self.secret_owners.insert(
                        secret_key,
                        (kind, Identity::new(&model.namespace, &model.name)),
                    );
                    self.product_secrets.insert(model, product_secret);
                }
                None => {
                    self.forget_secret(&secret_key);
                }
            }
            return None;
        }
        let Some(password) = text(PASSWORD) else {
            self.forget_secret(&secret_key);
            return Some(id);
        };
        let previous_password = text(PREVIOUS_PASSWORD);
        let previous = previous_password.as_ref().and_then(|old| {
            let expires = String::from_utf8(text(PREVIOUS_EXPIRES)?).ok()?;
            Some((self.tag(old), expires.parse().ok()?))
        });
        let rotation = secret.annotations().get(ROTATION_ANNOTATION).cloned();
        let credential = Credential {
            current: self.tag(&password),
            previous,
            rotation,
        };
        if self.keep_keys && kind != PrincipalKind::Application {
            let keys = PlainKeys {
                current: password,
                previous: previous_password.filter(|_| credential.previous.is_some()),
            };
            self.keys.insert((kind, id.clone()), keys);
        }
        self.secret_owners.insert(secret_key, (kind, id.clone()));
        self.credentials.insert((kind, id.clone()), credential);
        Some(id)
    }

    fn forget_secret(&mut self, secret_key: &(String, String)) -> Option<Identity> {
        let owner = self.secret_owners.remove(secret_key)?;
        if owner.0 == PrincipalKind::Product {
            let model = ModelKey::new(&owner.1.namespace, &owner.1.name);
            self.product_secrets.remove(&model);
            return None;
        }
        self.keys.remove(&owner);
        self.credentials.remove(&owner);
        Some(owner.1)
    }

    /// Forget a Secret; returns the identity that lost its credentials.
    pub fn delete_secret(&mut self, namespace: &str, name: &str) -> Option<Identity> {
        self.forget_secret(&(namespace.to_string(), name.to_string()))
    }

    /// Keep only the Secrets in `keep` (namespace, name) after a re-list; returns who lost
    /// credentials.
    pub fn retain_secrets(&mut self, keep: &HashSet<(String, String)>) -> Vec<Identity> {
        let gone: Vec<(String, String)> = self
            .secret_owners
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        gone.iter().filter_map(|k| self.forget_secret(k)).collect()
    }

    pub(super) fn check_password(
        &self,
        kind: PrincipalKind,
        id: &Identity,
        password: &[u8],
        now: jiff::Timestamp,
    ) -> Result<PasswordTag, Refusal> {
        let credential = self
            .credentials
            .get(&(kind, id.clone()))
            .ok_or(Refusal::BadCredentials)?;
        if self.verify(password, &credential.current) {
            return Ok(credential.current);
        }
        match &credential.previous {
            Some((tag, until)) if now < *until && self.verify(password, tag) => Ok(*tag),
            _ => Err(Refusal::BadCredentials),
        }
    }

    /// Check a principal's secret with `verify` (for logins that prove the secret without
    /// sending it, as EnOS signatures do): the current password, or the previous one while a
    /// rotation's overlap lasts. Returns the tag of the password that matched. Needs kept keys.
    pub(super) fn check_secret(
        &self,
        kind: PrincipalKind,
        id: &Identity,
        verify: impl Fn(&[u8]) -> bool,
        now: jiff::Timestamp,
    ) -> Result<PasswordTag, Refusal> {
        let principal = (kind, id.clone());
        let credential = self
            .credentials
            .get(&principal)
            .ok_or(Refusal::BadCredentials)?;
        let keys = self.keys.get(&principal).ok_or(Refusal::BadCredentials)?;
        if verify(&keys.current) {
            return Ok(credential.current);
        }
        match (&credential.previous, &keys.previous) {
            (Some((tag, until)), Some(old)) if now < *until && verify(old) => Ok(*tag),
            _ => Err(Refusal::BadCredentials),
        }
    }
}
