//! A controller's own writes come back to it through its watches. When such an event carries
//! exactly what the controller wrote (the same resourceVersion) and the controller had nothing
//! more to do, it is an echo: reconciling it again would only confirm that nothing changed.
//! Dropping echoes halves the reconciles of an onboarding (a device's Secret and status each
//! used to trigger one more pass).
//!
//! An echo that arrives before its write is recorded is simply reconciled (harmless); any other
//! change to the object has another resourceVersion and always gets through.

use std::collections::HashMap;

use kube::{Resource, ResourceExt};
use parking_lot::Mutex;

/// Which controller wrote, the object's namespace and name.
type Key = (&'static str, String, String);

/// The resourceVersions of writes whose watch events need no reconcile, by controller and object.
#[derive(Default)]
pub struct Echoes(Mutex<HashMap<Key, String>>);

impl Echoes {
    /// `controller` wrote `object` (the API's answer) and needs no reconcile for it.
    pub fn wrote<K: Resource>(&self, controller: &'static str, object: &K) {
        let (Some(namespace), Some(version)) = (object.namespace(), object.resource_version())
        else {
            return;
        };
        self.0
            .lock()
            .insert((controller, namespace, object.name_any()), version);
    }

    /// `controller` will reconcile `object` again whatever comes back (forget its last write).
    pub fn forget<K: Resource>(&self, controller: &'static str, object: &K) {
        if let Some(namespace) = object.namespace() {
            self.0
                .lock()
                .remove(&(controller, namespace, object.name_any()));
        }
    }

    /// Whether a watch event of `object` is an echo of `controller`'s own write (each echo is
    /// recognised once).
    pub fn is_echo<K: Resource>(&self, controller: &'static str, object: &K) -> bool {
        let (Some(namespace), Some(version)) = (object.namespace(), object.resource_version())
        else {
            return false;
        };
        let key = (controller, namespace, object.name_any());
        let mut echoes = self.0.lock();
        match echoes.get(&key) {
            Some(written) if *written == version => {
                echoes.remove(&key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("d-credentials".into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn only_the_written_version_is_an_echo_and_only_once() {
        let echoes = Echoes::default();
        echoes.wrote("device", &secret("7"));
        assert!(
            !echoes.is_echo("gateway", &secret("7")),
            "another controller's"
        );
        assert!(!echoes.is_echo("device", &secret("8")), "a later change");
        assert!(echoes.is_echo("device", &secret("7")));
        assert!(!echoes.is_echo("device", &secret("7")), "recognised once");
        echoes.wrote("device", &secret("9"));
        echoes.forget("device", &secret("9"));
        assert!(!echoes.is_echo("device", &secret("9")), "forgotten");
    }
}
