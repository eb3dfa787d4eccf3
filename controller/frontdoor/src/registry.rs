//! The registry index (pure): devices, models and credentials as the API's watches last showed
//! them, so that authenticating a connection or validating a message is an in-memory lookup.
//!
//! Passwords are not kept: the index holds an HMAC-SHA256 of each under a key drawn at start
//! (the passwords are 256-bit random strings, so a fast keyed hash is enough), and compares in
//! constant time. The one exception is DTLS with pre-shared keys, where the server must hold
//! the key itself: with a CoAP-over-DTLS listener on, devices' current passwords are kept in
//! memory too ([`Registry::keep_device_keys`]); so are they, and gateways' too, with the EnOS
//! listener on, whose logins sign with the secret instead of sending it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use devplane_api::constants::conditions::{CONNECTED, TWIN_SYNCED};
use devplane_api::v1alpha1::{
    ConnectionStatus, Device, DeviceModel, DeviceModelSpec, DynamicRegistration, Gateway,
    Lifecycle, Phase, Protocol,
};
use devplane_core::ResolvedModel;
use devplane_core::enos::Products;
use devplane_core::gateway::{Acting, SubDevice, acts_for};
use devplane_core::model::{ModelKey, ModelSource, resolve};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::ResourceExt;
use ring::hmac;
use serde_json::Value;

use crate::topic::Identity;

/// The secret keys the credentials controller writes.
const PASSWORD: &str = "password";
const PREVIOUS_PASSWORD: &str = "previous-password";
const PREVIOUS_EXPIRES: &str = "previous-password-expires-at";
/// The Secret's annotation naming the rotation request it answered.
const ROTATION_ANNOTATION: &str = "iot.devplane.io/rotation";

/// An HMAC of a password, as the index and a session keep it.
pub type PasswordTag = [u8; 32];

/// What the front door knows of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceEntry {
    /// `metadata.uid`: a re-created device is a new device.
    pub uid: String,
    /// `spec.lifecycle`.
    pub lifecycle: Lifecycle,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// The model it conforms to.
    pub model: ModelKey,
    /// `spec.desired`.
    pub desired: BTreeMap<String, Value>,
    /// `metadata.generation`.
    pub generation: i64,
    /// Protocols it may use directly (none: it goes through a gateway).
    pub protocols: Vec<Protocol>,
    /// `status.connection` as last written.
    pub connection: Option<ConnectionStatus>,
    /// `status.reported` as last written.
    pub reported: BTreeMap<String, Value>,
    /// The `Connected` condition as last written.
    pub connected: Option<Since>,
    /// The `TwinSynced` condition as last written.
    pub twin_synced: Option<Since>,
    /// `spec.enos.deviceKey`, when set.
    pub enos_key: Option<String>,
    /// `metadata.labels` (a gateway's selector reads them).
    pub labels: BTreeMap<String, String>,
    /// The gateway `spec.connection.gatewayRef` names.
    pub gateway_ref: Option<String>,
}

/// A condition of the front door as the registry keeps it: its status and since when (its
/// reason and message are written anew each time; thousands of devices keep no copies).
#[derive(Clone, Debug, PartialEq)]
pub struct Since {
    /// True or False.
    pub status: bool,
    /// `lastTransitionTime`.
    pub since: Time,
}

impl Since {
    fn of(conditions: &[Condition], type_: &str) -> Option<Since> {
        conditions.iter().find(|c| c.type_ == type_).map(|c| Since {
            status: c.status == "True",
            since: c.last_transition_time.clone(),
        })
    }

    /// A condition of `type_` with this status and transition time (no reason or message).
    pub fn condition(&self, type_: &str) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: if self.status { "True" } else { "False" }.to_string(),
            last_transition_time: self.since.clone(),
            message: String::new(),
            reason: String::new(),
            observed_generation: None,
        }
    }
}

impl DeviceEntry {
    /// The entry of a Device object.
    pub fn from_device(device: &Device) -> DeviceEntry {
        let namespace = device.namespace().unwrap_or_default();
        let status = device.status.clone().unwrap_or_default();
        DeviceEntry {
            uid: device.uid().unwrap_or_default(),
            lifecycle: device.spec.lifecycle,
            phase: status.phase,
            model: ModelKey::from_ref(&device.spec.model_ref, &namespace),
            desired: device.spec.desired.clone(),
            generation: device.metadata.generation.unwrap_or_default(),
            protocols: device.spec.connection.direct_protocols(),
            connection: status.connection,
            reported: status.reported,
            connected: Since::of(&status.conditions, CONNECTED),
            twin_synced: Since::of(&status.conditions, TWIN_SYNCED),
            enos_key: device.spec.enos.as_ref().and_then(|e| e.device_key.clone()),
            labels: device.labels().clone(),
            gateway_ref: device.spec.connection.gateway().map(str::to_string),
        }
    }

    fn as_sub_device<'a>(&'a self, id: &'a Identity) -> SubDevice<'a> {
        SubDevice {
            namespace: &id.namespace,
            gateway_ref: self.gateway_ref.as_deref(),
            labels: &self.labels,
        }
    }

    fn decommissioned(&self) -> bool {
        self.lifecycle == Lifecycle::Decommissioned || self.phase == Some(Phase::Decommissioned)
    }

    /// Whether the device is in Maintenance (its data is flagged northbound).
    pub fn in_maintenance(&self) -> bool {
        self.lifecycle == Lifecycle::Maintenance || self.phase == Some(Phase::Maintenance)
    }

    /// Why the device may not hold a session over `protocol`, if it may not.
    pub fn refusal(&self, protocol: Protocol) -> Option<Ended> {
        refusal(self.lifecycle, self.phase, &self.protocols, protocol)
    }

    /// Whether its lifecycle lets it hold a session at all (over some protocol, or through a
    /// gateway).
    pub fn may_connect(&self) -> bool {
        !self.decommissioned()
            && self.lifecycle != Lifecycle::Planned
            && !matches!(self.phase, None | Some(Phase::Planned))
    }
}

/// Why a device or gateway in this lifecycle may not hold a session over `protocol`.
fn refusal(
    lifecycle: Lifecycle,
    phase: Option<Phase>,
    protocols: &[Protocol],
    protocol: Protocol,
) -> Option<Ended> {
    if lifecycle == Lifecycle::Decommissioned || phase == Some(Phase::Decommissioned) {
        return Some(Ended::Decommissioned);
    }
    if lifecycle == Lifecycle::Planned || matches!(phase, None | Some(Phase::Planned)) {
        return Some(Ended::Planned);
    }
    if !protocols.contains(&protocol) {
        return Some(Ended::ProtocolNotAllowed(protocol));
    }
    None
}

/// What the front door knows of one gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayEntry {
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.lifecycle`.
    pub lifecycle: Lifecycle,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// The gateway's own model.
    pub model: ModelKey,
    /// Protocols it may use.
    pub protocols: Vec<Protocol>,
    /// `spec.subDevices.selector`.
    pub selector: Option<LabelSelector>,
    /// `spec.subDevices.maxActive`.
    pub max_active: Option<usize>,
    /// `spec.dynamicRegistration`.
    pub registration: DynamicRegistration,
    /// `status.connection` as last written.
    pub connection: Option<ConnectionStatus>,
    /// The `Connected` condition as last written.
    pub connected: Option<Since>,
    /// `metadata.generation`.
    pub generation: i64,
}

impl GatewayEntry {
    /// The entry of a Gateway object.
    pub fn from_gateway(gateway: &Gateway) -> GatewayEntry {
        let namespace = gateway.namespace().unwrap_or_default();
        let status = gateway.status.clone().unwrap_or_default();
        let protocols = if gateway.spec.protocols.is_empty() {
            vec![Protocol::Mqtt, Protocol::Http, Protocol::Coap]
        } else {
            gateway.spec.protocols.clone()
        };
        GatewayEntry {
            uid: gateway.uid().unwrap_or_default(),
            lifecycle: gateway.spec.lifecycle,
            phase: status.phase,
            model: ModelKey::from_ref(&gateway.spec.model_ref, &namespace),
            protocols,
            selector: gateway.spec.sub_devices.selector.clone(),
            max_active: gateway
                .spec
                .sub_devices
                .max_active
                .map(|n| usize::try_from(n).unwrap_or_default()),
            registration: gateway.spec.dynamic_registration.clone(),
            connection: status.connection,
            connected: Since::of(&status.conditions, CONNECTED),
            generation: gateway.metadata.generation.unwrap_or_default(),
        }
    }

    fn acting<'a>(&'a self, id: &'a Identity) -> Acting<'a> {
        Acting {
            namespace: &id.namespace,
            name: &id.name,
            selector: self.selector.as_ref(),
        }
    }
}

/// Why a gateway may not log a device in (the reason it is told).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginRefusal {
    /// No such device.
    NotFound,
    /// The device neither names the gateway nor matches its selector, or is planned.
    NotAllowed,
    /// The device is decommissioned.
    Decommissioned,
    /// The gateway has `maxActive` sub-devices logged in already.
    LimitReached,
}

impl LoginRefusal {
    /// The reason as the gateway reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginRefusal::NotFound => "NotFound",
            LoginRefusal::NotAllowed => "NotAllowed",
            LoginRefusal::Decommissioned => "Decommissioned",
            LoginRefusal::LimitReached => "LimitReached",
        }
    }
}

/// Keep only the entries in `keep`; returns the identities forgotten.
fn retain_identities<V>(map: &mut HashMap<Identity, V>, keep: &HashSet<Identity>) -> Vec<Identity> {
    let gone: Vec<Identity> = map
        .keys()
        .filter(|id| !keep.contains(id))
        .cloned()
        .collect();
    for id in &gone {
        map.remove(id);
    }
    gone
}

/// Why a principal may not (or no longer) hold a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The device was deleted.
    Deleted,
    /// The device is decommissioned.
    Decommissioned,
    /// The device is planned: it has no credentials yet.
    Planned,
    /// The device may not connect directly over this protocol.
    ProtocolNotAllowed(Protocol),
    /// Its credentials were revoked.
    Revoked,
    /// The password it logged in with was rotated out.
    RotatedOut,
}

impl Ended {
    /// Whether an operator's decision about the device ended it (rather than its credentials).
    pub fn administrative(self) -> bool {
        matches!(self, Ended::Deleted | Ended::Decommissioned)
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Deleted => f.write_str("it was deleted"),
            Ended::Decommissioned => f.write_str("it is decommissioned"),
            Ended::Planned => f.write_str("it is planned: it has no credentials yet"),
            Ended::ProtocolNotAllowed(p) => {
                write!(f, "it may not connect directly over {}", p.as_str())
            }
            Ended::Revoked => f.write_str("the credentials were revoked"),
            Ended::RotatedOut => f.write_str("the password was rotated out"),
        }
    }
}

/// Passwords kept in memory (only with `keep_keys`): the current one and, during a
/// rotation's overlap, the previous one.
#[derive(Clone, Debug, PartialEq)]
struct PlainKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

/// A principal's credentials: the current password and, during a rotation's overlap, the
/// previous one with its end.
#[derive(Clone, Debug, PartialEq)]
struct Credential {
    current: PasswordTag,
    previous: Option<(PasswordTag, jiff::Timestamp)>,
    /// The rotation request the Secret last answered (its annotation).
    rotation: Option<String>,
}

/// Why a connection is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user name or wrong password (the two are not told apart).
    BadCredentials,
    /// The identity exists but may not connect now, with why.
    NotAuthorized(String),
}

/// Which kind of principal a Secret's credentials belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PrincipalKind {
    Device,
    Gateway,
    Application,
    /// An EnOS product (a DeviceModel's product Secret; the identity names the model).
    Product,
}

/// The index.
pub struct Registry {
    key: hmac::Key,
    devices: HashMap<Identity, DeviceEntry>,
    gateways: HashMap<Identity, GatewayEntry>,
    credentials: HashMap<(PrincipalKind, Identity), Credential>,
    /// Secret (namespace, name) → whose credentials it holds.
    secret_owners: HashMap<(String, String), (PrincipalKind, Identity)>,
    models: BTreeMap<ModelKey, DeviceModelSpec>,
    resolved: HashMap<ModelKey, Result<Arc<ResolvedModel>, String>>,
    /// Devices' and gateways' passwords: DTLS pre-shared keys and EnOS signing secrets (only
    /// with `keep_keys`).
    keys: HashMap<(PrincipalKind, Identity), PlainKeys>,
    keep_keys: bool,
    /// Which model holds each EnOS product key.
    products: Products,
    /// EnOS product secrets by model (dynamic activation).
    product_secrets: HashMap<ModelKey, Vec<u8>>,
    /// Devices by (namespace, EnOS device key).
    enos_devices: HashMap<(String, String), BTreeSet<Identity>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

struct Models<'a>(&'a BTreeMap<ModelKey, DeviceModelSpec>);

impl ModelSource for Models<'_> {
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec> {
        self.0.get(key)
    }
}

impl Registry {
    /// An empty index with a fresh random HMAC key.
    pub fn new() -> Registry {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        Registry {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            devices: HashMap::new(),
            gateways: HashMap::new(),
            credentials: HashMap::new(),
            secret_owners: HashMap::new(),
            models: BTreeMap::new(),
            resolved: HashMap::new(),
            keys: HashMap::new(),
            keep_keys: false,
            products: Products::default(),
            product_secrets: HashMap::new(),
            enos_devices: HashMap::new(),
        }
    }

    /// Keep devices' and gateways' passwords from now on: they are the keys of CoAP over DTLS
    /// and what EnOS logins sign with.
    pub fn keep_device_keys(&mut self) {
        self.keep_keys = true;
    }

    /// A device's DTLS pre-shared key (its current password), if it has credentials.
    pub fn device_key(&self, id: &Identity) -> Option<&[u8]> {
        self.keys
            .get(&(PrincipalKind::Device, id.clone()))
            .map(|k| k.current.as_slice())
    }

    /// The HMAC of a password under this index's key.
    pub fn tag(&self, password: &[u8]) -> PasswordTag {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key, password).as_ref());
        out
    }

    fn verify(&self, password: &[u8], tag: &PasswordTag) -> bool {
        hmac::verify(&self.key, password, tag).is_ok()
    }

    // --- devices -------------------------------------------------------------------------

    /// Record a Device; returns the entry it replaces.
    pub fn apply_device(&mut self, device: &Device) -> Option<DeviceEntry> {
        let id = Identity::new(device.namespace().unwrap_or_default(), device.name_any());
        let entry = DeviceEntry::from_device(device);
        self.index_enos_key(&id, Some(&entry));
        self.devices.insert(id, entry)
    }

    /// Forget a Device; returns its entry.
    pub fn delete_device(&mut self, id: &Identity) -> Option<DeviceEntry> {
        self.index_enos_key(id, None);
        self.devices.remove(id)
    }

    /// Keep only the devices in `keep` (after a re-list); returns the forgotten ones.
    pub fn retain_devices(&mut self, keep: &HashSet<Identity>) -> Vec<Identity> {
        let gone = retain_identities(&mut self.devices, keep);
        for id in &gone {
            self.index_enos_key(id, None);
        }
        gone
    }

    /// A device's entry.
    pub fn device(&self, id: &Identity) -> Option<&DeviceEntry> {
        self.devices.get(id)
    }

    /// How many devices the index holds.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    // --- gateways ------------------------------------------------------------------------

    /// Record a Gateway; returns the entry it replaces.
    pub fn apply_gateway(&mut self, gateway: &Gateway) -> Option<GatewayEntry> {
        let id = Identity::new(gateway.namespace().unwrap_or_default(), gateway.name_any());
        self.gateways
            .insert(id, GatewayEntry::from_gateway(gateway))
    }

    /// Forget a Gateway; returns its entry.
    pub fn delete_gateway(&mut self, id: &Identity) -> Option<GatewayEntry> {
        self.gateways.remove(id)
    }

    /// Keep only the gateways in `keep` (after a re-list); returns the forgotten ones.
    pub fn retain_gateways(&mut self, keep: &HashSet<Identity>) -> Vec<Identity> {
        retain_identities(&mut self.gateways, keep)
    }

    /// A gateway's entry.
    pub fn gateway(&self, id: &Identity) -> Option<&GatewayEntry> {
        self.gateways.get(id)
    }

    /// Whether gateway `gateway` may log `device` in now (`active` sub-devices are logged in
    /// through it already, not counting `device`).
    pub fn may_log_in(
        &self,
        gateway: &Identity,
        device: &Identity,
        active: usize,
    ) -> Result<(), LoginRefusal> {
        let entry = self.devices.get(device).ok_or(LoginRefusal::NotFound)?;
        let gw = self.gateways.get(gateway).ok_or(LoginRefusal::NotAllowed)?;
        if !acts_for(gw.acting(gateway), entry.as_sub_device(device)) {
            return Err(LoginRefusal::NotAllowed);
        }
        if entry.decommissioned() {
            return Err(LoginRefusal::Decommissioned);
        }
        if entry.lifecycle == Lifecycle::Planned || entry.phase == Some(Phase::Planned) {
            return Err(LoginRefusal::NotAllowed);
        }
        if gw.max_active.is_some_and(|max| active >= max) {
            return Err(LoginRefusal::LimitReached);
        }
        Ok(())
    }

    /// The devices a gateway may act for, by name.
    pub fn sub_devices_of(&self, gateway: &Identity) -> Vec<Identity> {
        let Some(gw) = self.gateways.get(gateway) else {
            return Vec::new();
        };
        let mut subs: Vec<Identity> = self
            .devices
            .iter()
            .filter(|(id, d)| acts_for(gw.acting(gateway), d.as_sub_device(id)))
            .map(|(id, _)| id.clone())
            .collect();
        subs.sort();
        subs
    }

    // --- models --------------------------------------------------------------------------

    /// Record a DeviceModel (every resolution is redone lazily).
    pub fn apply_model(&mut self, model: &DeviceModel) {
        let key = ModelKey::new(model.namespace().unwrap_or_default(), model.name_any());
        let created = model
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second());
        let product_key = model.spec.enos.as_ref().map(|e| e.product_key.as_str());
        self.products.claim(&key, product_key, created);
        if self.models.get(&key) != Some(&model.spec) {
            self.models.insert(key, model.spec.clone());
            self.resolved.clear();
        }
    }

    /// Forget a DeviceModel.
    pub fn delete_model(&mut self, key: &ModelKey) {
        self.products.forget(key);
        if self.models.remove(key).is_some() {
            self.resolved.clear();
        }
    }

    /// Keep only the models in `keep` (after a re-list).
    pub fn retain_models(&mut self, keep: &HashSet<ModelKey>) {
        let before = self.models.len();
        self.models.retain(|k, _| keep.contains(k));
        self.products.retain(|k| keep.contains(k));
        if self.models.len() != before {
            self.resolved.clear();
        }
    }

    /// The resolved model of a device if it is resolved already (a read-only lookup).
    pub fn cached_model(&self, id: &Identity) -> Option<Result<Arc<ResolvedModel>, String>> {
        self.resolved.get(self.model_key(id)?).cloned()
    }

    /// The model of a device, or of a gateway (which publishes data of its own).
    fn model_key(&self, id: &Identity) -> Option<&ModelKey> {
        match self.devices.get(id) {
            Some(d) => Some(&d.model),
            None => self.gateways.get(id).map(|g| &g.model),
        }
    }

    /// The resolved model of a device, or why there is none.
    pub fn model_of(&mut self, id: &Identity) -> Result<Arc<ResolvedModel>, String> {
        let key = match self.model_key(id) {
            Some(key) => key.clone(),
            None => return Err(format!("device {id} is not known")),
        };
        self.resolve(&key)
    }

    /// A model resolved, or why it does not resolve.
    pub fn resolve(&mut self, key: &ModelKey) -> Result<Arc<ResolvedModel>, String> {
        if let Some(hit) = self.resolved.get(key) {
            return hit.clone();
        }
        let result = resolve(&Models(&self.models), key)
            .map(Arc::new)
            .map_err(|e| format!("model {key} does not resolve: {e}"));
        self.resolved.insert(key.clone(), result.clone());
        result
    }

    // --- sessions ----------------------------------------------------------------------

    /// Whether a principal may hold a session over `protocol`: None when it does not exist,
    /// Some(Err(why)) when its lifecycle or settings forbid it. Applications always may.
    fn standing(
        &self,
        kind: PrincipalKind,
        id: &Identity,
        protocol: Protocol,
    ) -> Option<Result<(), Ended>> {
        let why = match kind {
            PrincipalKind::Device => self.devices.get(id)?.refusal(protocol),
            PrincipalKind::Gateway => {
                let gateway = self.gateways.get(id)?;
                refusal(
                    gateway.lifecycle,
                    gateway.phase,
                    &gateway.protocols,
                    protocol,
                )
            }
            PrincipalKind::Application => None,
            PrincipalKind::Product => return None,
        };
        Some(why.map_or(Ok(()), Err))
    }

    fn authenticate(
        &self,
        kind: PrincipalKind,
        (username, password): (&str, &[u8]),
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Result<(Identity, PasswordTag), Refusal> {
        let id = Identity::from_username(username).ok_or(Refusal::BadCredentials)?;
        match self.standing(kind, &id, protocol) {
            None => return Err(Refusal::BadCredentials),
            Some(Err(why)) => return Err(Refusal::NotAuthorized(why.to_string())),
            Some(Ok(())) => {}
        }
        let tag = self.check_password(kind, &id, password, now)?;
        Ok((id, tag))
    }

    fn session_problem(
        &self,
        kind: PrincipalKind,
        id: &Identity,
        tag: &PasswordTag,
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Option<Ended> {
        match self.standing(kind, id, protocol) {
            None => Some(Ended::Deleted),
            Some(Err(why)) => Some(why),
            Some(Ok(())) => self.credential_problem(kind, id, tag, now),
        }
    }

    /// Whether a device has credentials: Some with the rotation request they answer.
    pub fn device_rotation(&self, id: &Identity) -> Option<Option<&str>> {
        self.credentials
            .get(&(PrincipalKind::Device, id.clone()))
            .map(|c| c.rotation.as_deref())
    }

    /// Authenticate a device over `protocol`: `{ns}/{name}` and its password. A device whose
    /// lifecycle or connection settings forbid it is refused as not authorized.
    pub fn authenticate_device(
        &self,
        username: &str,
        password: &[u8],
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Result<(Identity, PasswordTag), Refusal> {
        self.authenticate(PrincipalKind::Device, (username, password), protocol, now)
    }

    /// Authenticate a gateway over `protocol`: `{ns}/{name}` of a Gateway and its password.
    pub fn authenticate_gateway(
        &self,
        username: &str,
        password: &[u8],
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Result<(Identity, PasswordTag), Refusal> {
        self.authenticate(PrincipalKind::Gateway, (username, password), protocol, now)
    }

    /// Authenticate an application: `{ns}/{name}` of an Application and its password.
    pub fn authenticate_application(
        &self,
        username: &str,
        password: &[u8],
        now: jiff::Timestamp,
    ) -> Result<(Identity, PasswordTag), Refusal> {
        // Applications use the northbound listener only; the protocol is not theirs to choose.
        self.authenticate(
            PrincipalKind::Application,
            (username, password),
            Protocol::Mqtt,
            now,
        )
    }

    /// Why a live device session (logged in with `tag`) must end now, if it must: the device is
    /// gone or may no longer connect, or its password was revoked or rotated out.
    pub fn device_session_problem(
        &self,
        id: &Identity,
        tag: &PasswordTag,
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Option<Ended> {
        self.session_problem(PrincipalKind::Device, id, tag, protocol, now)
    }

    /// Why a live gateway session must end now, if it must.
    pub fn gateway_session_problem(
        &self,
        id: &Identity,
        tag: &PasswordTag,
        protocol: Protocol,
        now: jiff::Timestamp,
    ) -> Option<Ended> {
        self.session_problem(PrincipalKind::Gateway, id, tag, protocol, now)
    }

    /// Why a live application session must end now, if it must.
    pub fn application_session_problem(
        &self,
        id: &Identity,
        tag: &PasswordTag,
        now: jiff::Timestamp,
    ) -> Option<Ended> {
        self.session_problem(PrincipalKind::Application, id, tag, Protocol::Mqtt, now)
    }

    fn credential_problem(
        &self,
        kind: PrincipalKind,
        id: &Identity,
        tag: &PasswordTag,
        now: jiff::Timestamp,
    ) -> Option<Ended> {
        let Some(credential) = self.credentials.get(&(kind, id.clone())) else {
            return Some(Ended::Revoked);
        };
        if credential.current == *tag {
            return None;
        }
        match &credential.previous {
            Some((old, until)) if old == tag && now < *until => None,
            _ => Some(Ended::RotatedOut),
        }
    }
}

mod credentials;
mod enos;

pub use enos::{Activation, EnosPrincipal};

#[cfg(test)]
mod tests;
