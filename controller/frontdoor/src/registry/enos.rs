//! EnOS identities in the index: a product key names the DeviceModel that holds it, a device
//! key a Device of that model in the model's namespace (its name, or `spec.enos.deviceKey`) or
//! a Gateway of that model (its name). Logins prove the secret by a signature, so these
//! lookups need the kept keys ([`Registry::keep_device_keys`]).

use devplane_api::v1alpha1::{ConnectionState, Protocol};
use devplane_core::model::ModelKey;

use super::{DeviceEntry, PasswordTag, PrincipalKind, Refusal, Registry};
use crate::topic::Identity;

/// Who an EnOS product and device key name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnosPrincipal {
    /// A Device.
    Device(Identity),
    /// A Gateway.
    Gateway(Identity),
}

impl EnosPrincipal {
    /// Its identity.
    pub fn id(&self) -> &Identity {
        match self {
            EnosPrincipal::Device(id) | EnosPrincipal::Gateway(id) => id,
        }
    }

    fn kind(&self) -> PrincipalKind {
        match self {
            EnosPrincipal::Device(_) => PrincipalKind::Device,
            EnosPrincipal::Gateway(_) => PrincipalKind::Gateway,
        }
    }
}

/// What a dynamic activation hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    /// The device.
    pub id: Identity,
    /// Its secret (its current password).
    pub device_secret: Vec<u8>,
}

fn device_key<'a>(id: &'a Identity, entry: &'a DeviceEntry) -> &'a str {
    entry.enos_key.as_deref().unwrap_or(&id.name)
}

impl Registry {
    /// Move a device in the index of EnOS device keys: out of its old key, into the key of
    /// `entry` (None: it is gone).
    pub(super) fn index_enos_key(&mut self, id: &Identity, entry: Option<&DeviceEntry>) {
        if let Some(old) = self.devices.get(id) {
            let key = (id.namespace.clone(), device_key(id, old).to_string());
            if let Some(ids) = self.enos_devices.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.enos_devices.remove(&key);
                }
            }
        }
        if let Some(entry) = entry {
            let key = (id.namespace.clone(), device_key(id, entry).to_string());
            self.enos_devices.entry(key).or_default().insert(id.clone());
        }
    }

    /// The model holding `product_key`.
    fn product(&self, product_key: &str) -> Option<&ModelKey> {
        self.products.holder(product_key)
    }

    /// The device or gateway an EnOS product and device key name.
    pub fn enos_principal(&self, product_key: &str, device_key: &str) -> Option<EnosPrincipal> {
        let model = self.product(product_key)?;
        let key = (model.namespace.clone(), device_key.to_string());
        let mut devices = self
            .enos_devices
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|id| self.devices.get(*id).is_some_and(|d| d.model == *model));
        if let Some(id) = devices.next() {
            // Two devices of one model with the same key: neither may use it.
            return devices
                .next()
                .is_none()
                .then(|| EnosPrincipal::Device(id.clone()));
        }
        let gateway = Identity::new(&model.namespace, device_key);
        self.gateways
            .get(&gateway)
            .filter(|g| g.model == *model)
            .map(|_| EnosPrincipal::Gateway(gateway))
    }

    /// The EnOS product and device key of a device or gateway, if its model is a product that
    /// holds its key.
    pub fn enos_keys(&self, id: &Identity) -> Option<(String, String)> {
        let (model, dk) = match self.devices.get(id) {
            Some(entry) => (&entry.model, device_key(id, entry)),
            None => (&self.gateways.get(id)?.model, id.name.as_str()),
        };
        let product_key = self.products.key_of(model)?.ok()?;
        Some((product_key.to_string(), dk.to_string()))
    }

    /// Authenticate an EnOS login: the principal the keys name, its standing over MQTT, and
    /// its secret by `verify` (a signature check). Returns it and the tag of the password it
    /// proved, so rotation and revocation end the session as they end a native one.
    pub fn authenticate_enos(
        &self,
        product_key: &str,
        device_key: &str,
        verify: impl Fn(&[u8]) -> bool,
        now: jiff::Timestamp,
    ) -> Result<(EnosPrincipal, PasswordTag), Refusal> {
        let principal = self
            .enos_principal(product_key, device_key)
            .ok_or(Refusal::BadCredentials)?;
        let kind = principal.kind();
        match self.standing(kind, principal.id(), Protocol::Mqtt) {
            None => return Err(Refusal::BadCredentials),
            Some(Err(why)) => return Err(Refusal::NotAuthorized(why.to_string())),
            Some(Ok(())) => {}
        }
        let tag = self.check_secret(kind, principal.id(), verify, now)?;
        Ok((principal, tag))
    }

    /// A sub-device a gateway names by its keys and proves by its signature (whether the
    /// gateway may act for it is the gateway rule's to say).
    pub fn enos_sub_device(
        &self,
        product_key: &str,
        device_key: &str,
        verify: impl Fn(&[u8]) -> bool,
        now: jiff::Timestamp,
    ) -> Result<Identity, Refusal> {
        let Some(EnosPrincipal::Device(id)) = self.enos_principal(product_key, device_key) else {
            return Err(Refusal::NotAuthorized("no such device".into()));
        };
        self.check_secret(PrincipalKind::Device, &id, verify, now)?;
        Ok(id)
    }

    /// A dynamic activation: a device of a product with dynamic activation on, signed with the
    /// product secret, that has never connected, gets its secret.
    pub fn enos_activation(
        &self,
        product_key: &str,
        device_key: &str,
        verify: impl Fn(&[u8]) -> bool,
    ) -> Result<Activation, Refusal> {
        let Some(EnosPrincipal::Device(id)) = self.enos_principal(product_key, device_key) else {
            return Err(Refusal::BadCredentials);
        };
        let model = self.product(product_key).ok_or(Refusal::BadCredentials)?;
        let product_secret = self
            .product_secrets
            .get(model)
            .ok_or(Refusal::BadCredentials)?;
        if !verify(product_secret) {
            return Err(Refusal::BadCredentials);
        }
        let dynamic = self
            .models
            .get(model)
            .and_then(|m| m.enos.as_ref())
            .is_some_and(|e| e.dynamic_activation);
        if !dynamic {
            return Err(Refusal::NotAuthorized(format!(
                "dynamic activation is off for model {model}"
            )));
        }
        let entry = self.devices.get(&id).ok_or(Refusal::BadCredentials)?;
        if let Some(why) = entry.refusal(Protocol::Mqtt) {
            return Err(Refusal::NotAuthorized(why.to_string()));
        }
        let connected_before = entry
            .connection
            .as_ref()
            .is_some_and(|c| c.state != ConnectionState::Never || c.first_connected.is_some());
        if connected_before {
            return Err(Refusal::NotAuthorized(
                "the device has connected before: it activates only once".into(),
            ));
        }
        let device_secret = self
            .keys
            .get(&(PrincipalKind::Device, id.clone()))
            .map(|k| k.current.clone())
            .ok_or_else(|| Refusal::NotAuthorized("the device has no credentials yet".into()))?;
        Ok(Activation { id, device_secret })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use devplane_api::constants::labels;
    use devplane_api::v1alpha1::{Device, DeviceModel, Gateway};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::*;

    fn model(name: &str, namespace: &str, enos: &str, created: &str) -> DeviceModel {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: \"{created}\"}}\n\
             spec: {{version: 1.0.0, enos: {enos}}}"
        ))
        .expect("model yaml")
    }

    fn device(name: &str, extra: &str) -> Device {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: home, uid: u-{name}}}\n\
             spec: {{modelRef: {{name: thermo}}{extra}}}\n\
             status: {{phase: Provisioned}}"
        ))
        .expect("device yaml")
    }

    fn secret(label: &str, owner: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("{owner}-secret"));
        s.metadata.namespace = Some("home".into());
        s.metadata.labels = Some(BTreeMap::from([(label.to_string(), owner.to_string())]));
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    fn now() -> jiff::Timestamp {
        "2026-11-29T12:00:00Z".parse().expect("time")
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.keep_device_keys();
        r.apply_model(&model(
            "thermo",
            "home",
            "{productKey: thhy01, dynamicActivation: true}",
            "2026-01-01T00:00:00Z",
        ));
        r.apply_device(&device("sensor-1", ""));
        r.apply_device(&device("sensor-2", ", enos: {deviceKey: SN-2}"));
        r.apply_secret(&secret(labels::DEVICE, "sensor-1", &[("password", "pw-1")]));
        r.apply_secret(&secret(labels::DEVICE, "sensor-2", &[("password", "pw-2")]));
        r.apply_secret(&secret(
            labels::ENOS_PRODUCT,
            "thermo",
            &[("productSecret", "ps")],
        ));
        r
    }

    #[test]
    fn keys_name_a_device_by_its_name_or_its_declared_device_key() {
        let r = registry();
        let sensor = |n: &str| Some(EnosPrincipal::Device(Identity::new("home", n)));
        assert_eq!(r.enos_principal("thhy01", "sensor-1"), sensor("sensor-1"));
        assert_eq!(r.enos_principal("thhy01", "SN-2"), sensor("sensor-2"));
        assert_eq!(
            r.enos_principal("thhy01", "sensor-2"),
            None,
            "its key is SN-2"
        );
        assert_eq!(r.enos_principal("other", "sensor-1"), None);
        assert_eq!(
            r.enos_keys(&Identity::new("home", "sensor-2")),
            Some(("thhy01".into(), "SN-2".into()))
        );
    }

    #[test]
    fn a_login_proves_the_current_password_by_signature() {
        let r = registry();
        let (principal, tag) = r
            .authenticate_enos("thhy01", "sensor-1", |s| s == b"pw-1", now())
            .expect("signed with the device secret");
        assert_eq!(principal.id(), &Identity::new("home", "sensor-1"));
        assert_eq!(tag, r.tag(b"pw-1"), "the session holds the password's tag");
        assert_eq!(
            r.authenticate_enos("thhy01", "sensor-1", |_| false, now()),
            Err(Refusal::BadCredentials)
        );
    }

    #[test]
    fn a_younger_model_claiming_the_key_does_not_take_its_devices() {
        let mut r = registry();
        r.apply_model(&model(
            "copy",
            "lab",
            "{productKey: thhy01}",
            "2026-06-01T00:00:00Z",
        ));
        assert!(r.enos_principal("thhy01", "sensor-1").is_some());
        r.delete_model(&ModelKey::new("home", "thermo"));
        assert_eq!(
            r.enos_principal("thhy01", "sensor-1"),
            None,
            "the key now names model lab/copy, which has no such device"
        );
    }

    #[test]
    fn a_gateway_is_named_by_its_name_under_its_models_product_key() {
        let mut r = registry();
        let gateway: Gateway = serde_yaml::from_str(
            "metadata: {name: logger, namespace: home}\nspec: {modelRef: {name: thermo}}",
        )
        .expect("gateway yaml");
        r.apply_gateway(&gateway);
        assert_eq!(
            r.enos_principal("thhy01", "logger"),
            Some(EnosPrincipal::Gateway(Identity::new("home", "logger")))
        );
    }

    #[test]
    fn activation_hands_a_never_connected_device_its_secret_once() {
        let mut r = registry();
        let activation = r
            .enos_activation("thhy01", "sensor-1", |s| s == b"ps")
            .expect("activated");
        assert_eq!(activation.device_secret, b"pw-1");
        assert_eq!(
            r.enos_activation("thhy01", "sensor-1", |s| s == b"pw-1"),
            Err(Refusal::BadCredentials),
            "the device secret is no product secret"
        );
        let connected: Device = serde_yaml::from_str(
            "metadata: {name: sensor-1, namespace: home}\n\
             spec: {modelRef: {name: thermo}}\n\
             status: {phase: Servicing, connection: {state: Offline}}",
        )
        .expect("device yaml");
        r.apply_device(&connected);
        assert!(matches!(
            r.enos_activation("thhy01", "sensor-1", |s| s == b"ps"),
            Err(Refusal::NotAuthorized(_))
        ));
    }
}
