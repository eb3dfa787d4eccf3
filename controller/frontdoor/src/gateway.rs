//! Gateways: a gateway connects like a device, with its own Secret, and acts for its
//! sub-devices — the devices whose `gatewayRef` names it or that its selector picks. It logs
//! them in and out, asks which it may act for, registers new ones when its Gateway allows it,
//! and publishes and subscribes under their own topics while they are logged in.
//!
//! Requests are JSON on `d/{ns}/{gw}/subdevices/{login|logout|get|register}`, answered on the
//! same topic + `/response` with a result per device. A sub-device is Online while it is
//! logged in through a connected gateway; when the gateway's session ends, every sub-device
//! it had logged in goes Offline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use devplane_api::constants::{annotations, field_managers, labels};
use devplane_api::v1alpha1::{Connection, Device, DeviceSpec, LocalReference, ModelReference};
use devplane_core::model::ModelKey;
use devplane_core::naming::object_name_problem;
use devplane_core::naming::owner_label_value;
use devplane_core::payload::{AttributeCheck, validate_attributes};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;
use crate::ingest;
use crate::registry::LoginRefusal;
use crate::sessions::{Deliver, SubLogin};
use crate::status::{GatewayChange, StatusUpdate};
use crate::topic::{Downlink, GatewayRequest, Identity};

/// Most devices one request may name.
pub const MAX_PER_REQUEST: usize = 100;

/// How long a registration waits for the API.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway's live session: who it is and the sub-devices it logged in.
pub struct GatewaySession {
    /// The gateway.
    pub id: Identity,
    /// Its session's connection number.
    pub conn: u64,
    /// Its session's downlink queue (sub-device downlink goes there).
    pub tx: mpsc::Sender<Box<Deliver>>,
    /// Its peer address.
    pub address: String,
    /// Sub-devices it logged in (some may have been taken over by another gateway since).
    subs: HashSet<Identity>,
    /// When the session last reported each of its devices (itself included) seen.
    seen_reported: HashMap<Identity, Instant>,
}

/// What a request answers, and downlink that is due because of it.
pub struct Answer {
    /// The response payload.
    pub response: Value,
    /// Desired attributes and waiting commands of sub-devices that just logged in.
    pub downlink: Vec<Deliver>,
}

#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    id: Option<Value>,
    devices: Vec<String>,
}

#[derive(Deserialize)]
struct Registrations {
    #[serde(default)]
    id: Option<Value>,
    devices: Vec<Registration>,
}

#[derive(Deserialize)]
struct Registration {
    name: String,
    model: String,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Plain {
    #[serde(default)]
    id: Option<Value>,
}

fn answer(id: Option<Value>, mut body: Value) -> Value {
    if let Some(id) = id {
        body["id"] = id;
    }
    body
}

fn refused(reason: &str, message: impl Into<String>) -> Value {
    json!({"error": {"reason": reason, "message": message.into()}})
}

fn result(name: &str, result: &str, message: Option<String>) -> Value {
    match message {
        Some(message) => json!({"name": name, "result": result, "message": message}),
        None => json!({"name": name, "result": result}),
    }
}

impl GatewaySession {
    /// A new gateway session.
    pub fn new(
        id: Identity,
        conn: u64,
        tx: mpsc::Sender<Box<Deliver>>,
        address: String,
    ) -> GatewaySession {
        GatewaySession {
            id,
            conn,
            tx,
            address,
            subs: HashSet::new(),
            seen_reported: HashMap::new(),
        }
    }

    /// Whether to report `device` seen now: at most once per `interval` each (a gateway may
    /// publish for many devices, fast). Devices it no longer acts for are forgotten.
    pub fn report_seen(&mut self, device: &Identity, interval: Duration) -> bool {
        let now = Instant::now();
        if self
            .seen_reported
            .get(device)
            .is_some_and(|at| now.duration_since(*at) < interval)
        {
            return false;
        }
        if self.seen_reported.len() > self.subs.len() + 1 {
            let (gateway, subs) = (&self.id, &self.subs);
            self.seen_reported
                .retain(|id, _| id == gateway || subs.contains(id));
        }
        self.seen_reported.insert(device.clone(), now);
        true
    }

    /// Whether `device` is logged in through this session.
    pub fn acts_for(&self, shared: &Shared, device: &Identity) -> bool {
        shared.sub_logins.is_via(device, self.conn)
    }

    /// The sub-devices logged in through this session now.
    pub fn active(&mut self, shared: &Shared) -> Vec<Identity> {
        self.subs.retain(|d| shared.sub_logins.is_via(d, self.conn));
        let mut subs: Vec<Identity> = self.subs.iter().cloned().collect();
        subs.sort();
        subs
    }

    /// The device a request names: `name` in the gateway's namespace, or `namespace/name`.
    fn target(&self, name: &str) -> Option<Identity> {
        if name.contains('/') {
            Identity::from_username(name)
        } else if object_name_problem(name).is_none() {
            Some(Identity::new(self.id.namespace.clone(), name))
        } else {
            None
        }
    }

    /// The response topic of a request.
    pub fn response_topic(&self, request: GatewayRequest) -> String {
        format!(
            "{}subdevices/{}/response",
            self.id.device_prefix(),
            request.as_str()
        )
    }

    /// Handle one request.
    pub async fn request(
        &mut self,
        shared: &Arc<Shared>,
        request: GatewayRequest,
        payload: &[u8],
    ) -> Answer {
        let mut downlink = Vec::new();
        let response = match request {
            GatewayRequest::Login => match parse::<Names>(payload) {
                Ok(names) => {
                    let body = self.login(shared, &names.devices, &mut downlink).await;
                    answer(names.id, body)
                }
                Err(e) => e,
            },
            GatewayRequest::Logout => match parse::<Names>(payload) {
                Ok(names) => {
                    let body = self.logout(shared, &names.devices).await;
                    answer(names.id, body)
                }
                Err(e) => e,
            },
            GatewayRequest::Get => {
                let id = serde_json::from_slice::<Plain>(payload)
                    .ok()
                    .and_then(|p| p.id);
                answer(id, self.get(shared))
            }
            GatewayRequest::Register => match parse::<Registrations>(payload) {
                Ok(registrations) => {
                    let body = self.register(shared, &registrations.devices).await;
                    answer(registrations.id, body)
                }
                Err(e) => e,
            },
        };
        Answer { response, downlink }
    }

    async fn login(
        &mut self,
        shared: &Arc<Shared>,
        names: &[String],
        downlink: &mut Vec<Deliver>,
    ) -> Value {
        if names.len() > MAX_PER_REQUEST {
            return too_many(names.len());
        }
        let mut results = Vec::with_capacity(names.len());
        let mut changed = false;
        for name in names {
            let Some(device) = self.target(name) else {
                results.push(result(name, "NotFound", Some("not a device name".into())));
                continue;
            };
            match self.log_in_device(shared, &device, downlink).await {
                Ok(newly) => {
                    changed |= newly;
                    results.push(result(name, "ok", None));
                }
                Err(refusal) => {
                    results.push(result(name, refusal.as_str(), Some(login_message(refusal))))
                }
            }
        }
        if changed {
            self.report_active(shared);
        }
        json!({ "devices": results })
    }

    /// Log one device in through this session, if the gateway may act for it now; Ok(true)
    /// when it was not logged in here before. Its desired attributes and waiting commands go
    /// to `downlink`. The caller reports the active count ([`Self::report_active`]).
    pub async fn log_in_device(
        &mut self,
        shared: &Arc<Shared>,
        device: &Identity,
        downlink: &mut Vec<Deliver>,
    ) -> Result<bool, LoginRefusal> {
        if self.acts_for(shared, device) {
            return Ok(false);
        }
        let active = self.active(shared).len();
        let verdict = shared.registry.read().may_log_in(&self.id, device, active);
        if let Err(refusal) = verdict {
            shared.metrics.sub_logins.inc(refusal.as_str());
            return Err(refusal);
        }
        shared.metrics.sub_logins.inc("ok");
        self.log_in(shared, device, downlink).await;
        Ok(true)
    }

    /// Log one device out of this session; whether it was logged in here. The caller reports
    /// the active count.
    pub async fn log_out_device(&mut self, shared: &Arc<Shared>, device: &Identity) -> bool {
        if !shared.sub_logins.logout(device, self.conn) {
            return false;
        }
        self.subs.remove(device);
        went_offline(shared, device, &self.address).await;
        true
    }

    async fn log_in(
        &mut self,
        shared: &Arc<Shared>,
        device: &Identity,
        downlink: &mut Vec<Deliver>,
    ) {
        // One session per device: a direct session of it ends, and another gateway that had it
        // logged in is told.
        if let Some(direct) = shared.devices.get(device) {
            direct.kill.kill(
                crate::mqtt::codec::CloseCode::SessionTakenOver,
                format!("the device was logged in through gateway {}", self.id),
            );
        }
        let login = SubLogin {
            gateway: self.id.clone(),
            conn: self.conn,
            tx: self.tx.clone(),
        };
        if let Some(previous) = shared.sub_logins.login(device, login) {
            notify_logged_out(
                &previous,
                device,
                "LoggedInElsewhere",
                format!("logged in through gateway {}", self.id),
            );
        }
        self.subs.insert(device.clone());
        shared.status_update(StatusUpdate::ConnectedVia {
            id: device.clone(),
            gateway: self.id.clone(),
            address: self.address.clone(),
        });
        ingest::presence(shared, device, true, &self.address).await;
        downlink.extend(sub_device_downlink(shared, device));
    }

    async fn logout(&mut self, shared: &Arc<Shared>, names: &[String]) -> Value {
        if names.len() > MAX_PER_REQUEST {
            return too_many(names.len());
        }
        let mut results = Vec::with_capacity(names.len());
        let mut changed = false;
        for name in names {
            let Some(device) = self.target(name) else {
                results.push(result(name, "NotFound", Some("not a device name".into())));
                continue;
            };
            if self.log_out_device(shared, &device).await {
                changed = true;
                results.push(result(name, "ok", None));
                continue;
            }
            // Not logged in here: fine if it is one of ours, refused if not.
            let verdict = shared.registry.read().may_log_in(&self.id, &device, 0);
            match verdict {
                Err(r @ (LoginRefusal::NotFound | LoginRefusal::NotAllowed)) => {
                    results.push(result(name, r.as_str(), Some(login_message(r))))
                }
                _ => results.push(result(name, "ok", None)),
            }
        }
        if changed {
            self.report_active(shared);
        }
        json!({ "devices": results })
    }

    fn get(&mut self, shared: &Shared) -> Value {
        let active: HashSet<Identity> = self.active(shared).into_iter().collect();
        let (subs, max_active) = {
            let registry = shared.registry.read();
            let max = registry.gateway(&self.id).and_then(|g| g.max_active);
            (registry.sub_devices_of(&self.id), max)
        };
        let devices: Vec<Value> = subs
            .iter()
            .map(|d| {
                json!({
                    "namespace": d.namespace,
                    "name": d.name,
                    "loggedIn": active.contains(d),
                })
            })
            .collect();
        json!({"devices": devices, "active": active.len(), "maxActive": max_active})
    }

    async fn register(&mut self, shared: &Arc<Shared>, wanted: &[Registration]) -> Value {
        if wanted.len() > MAX_PER_REQUEST {
            return too_many(wanted.len());
        }
        let Some(policy) = shared
            .registry
            .read()
            .gateway(&self.id)
            .map(|g| g.registration.clone())
        else {
            return refused("NotAllowed", "the gateway is not known");
        };
        if !policy.enabled {
            let results: Vec<Value> = wanted
                .iter()
                .map(|r| {
                    result(
                        &r.name,
                        "NotAllowed",
                        Some("dynamic registration is off for this gateway".into()),
                    )
                })
                .collect();
            return json!({ "devices": results });
        }
        let namespace = policy
            .target_namespace
            .clone()
            .unwrap_or_else(|| self.id.namespace.clone());
        if namespace != self.id.namespace
            && let Err(refusal) = self.accepted_by(shared, &namespace).await
        {
            let (reason, message) = refusal;
            let results: Vec<Value> = wanted
                .iter()
                .map(|r| result(&r.name, reason, Some(message.clone())))
                .collect();
            return json!({ "devices": results });
        }
        let api: Api<Device> = Api::namespaced(shared.client.clone(), &namespace);
        let mine = format!(
            "{}={},{}={}",
            labels::GATEWAY,
            owner_label_value(&self.id.name),
            labels::GATEWAY_NAMESPACE,
            self.id.namespace
        );
        // Count what exists through the API, not the index: a retry right after a create
        // must see it.
        let listed = tokio::time::timeout(
            API_TIMEOUT,
            api.list_metadata(&ListParams::default().labels(&mine)),
        )
        .await;
        let mut registered = match listed {
            Ok(Ok(list)) => list.items.len(),
            Ok(Err(e)) => {
                tracing::warn!(gateway = %self.id, error = %devplane_core::report::chain(&e), "cannot count registered sub-devices");
                return refused("Unavailable", "the API is unavailable; retry");
            }
            Err(_) => return refused("Unavailable", "the API did not answer in time; retry"),
        };
        let mut results = Vec::with_capacity(wanted.len());
        for registration in wanted {
            let outcome = self
                .register_one(
                    shared,
                    &api,
                    &namespace,
                    &policy,
                    registration,
                    &mut registered,
                )
                .await;
            let (verdict, message) = match outcome {
                Ok(verdict) => (verdict, None),
                Err((reason, message)) => (reason, Some(message)),
            };
            shared.metrics.sub_registrations.inc(verdict);
            results.push(result(&registration.name, verdict, message));
        }
        json!({ "devices": results })
    }

    async fn register_one(
        &self,
        shared: &Shared,
        api: &Api<Device>,
        namespace: &str,
        policy: &devplane_api::v1alpha1::DynamicRegistration,
        wanted: &Registration,
        registered: &mut usize,
    ) -> Result<&'static str, (&'static str, String)> {
        if let Some(problem) = object_name_problem(&wanted.name) {
            return Err((
                "Invalid",
                format!("name: Invalid value: {:?}: {problem}", wanted.name),
            ));
        }
        let model_ref = match wanted.model.split_once('/') {
            Some((ns, name)) => ModelReference {
                name: name.to_string(),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            None => ModelReference {
                name: wanted.model.clone(),
                ..Default::default()
            },
        };
        let key = ModelKey::from_ref(&model_ref, namespace);
        let allowed = policy.allowed_models.is_empty()
            || policy
                .allowed_models
                .iter()
                .any(|m| ModelKey::from_ref(m, &self.id.namespace) == key);
        if !allowed {
            return Err((
                "ModelNotAllowed",
                format!("model {key} is not among the gateway's allowedModels"),
            ));
        }
        let existing = tokio::time::timeout(API_TIMEOUT, api.get_opt(&wanted.name)).await;
        match existing {
            Ok(Ok(Some(device))) => return self.existing(&device),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(("Unavailable", devplane_core::report::chain(&e))),
            Err(_) => return Err(("Unavailable", "the API did not answer in time".into())),
        }
        if policy
            .max_devices
            .is_some_and(|max| *registered >= usize::try_from(max).unwrap_or_default())
        {
            return Err((
                "LimitReached",
                format!("the gateway registered {registered} devices, its maxDevices",),
            ));
        }
        let model = shared.registry.write().resolve(&key);
        let model = model.map_err(|why| ("ModelUnavailable", why))?;
        let problems = validate_attributes(&model, &wanted.attributes, AttributeCheck::Configured);
        if let Some(first) = problems.first() {
            return Err(("InvalidAttributes", first.to_string()));
        }
        let device = Device {
            metadata: ObjectMeta {
                name: Some(wanted.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([
                    // The gateway's whole name is in the spec's gatewayRef.
                    (
                        labels::GATEWAY.to_string(),
                        owner_label_value(&self.id.name),
                    ),
                    (
                        labels::GATEWAY_NAMESPACE.to_string(),
                        self.id.namespace.clone(),
                    ),
                ])),
                ..Default::default()
            },
            spec: DeviceSpec {
                model_ref,
                connection: Connection {
                    direct: None,
                    gateway_ref: Some(LocalReference {
                        name: self.id.name.clone(),
                    }),
                },
                attributes: wanted.attributes.clone(),
                ..Default::default()
            },
            status: None,
        };
        let params = PostParams {
            field_manager: Some(field_managers::FRONTDOOR.to_string()),
            ..Default::default()
        };
        match tokio::time::timeout(API_TIMEOUT, api.create(&params, &device)).await {
            Ok(Ok(_)) => {
                *registered += 1;
                tracing::info!(gateway = %self.id, device = %format!("{namespace}/{}", wanted.name), "sub-device registered");
                Ok("created")
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                // Created by a retry racing this one.
                match api.get_opt(&wanted.name).await {
                    Ok(Some(device)) => self.existing(&device),
                    _ => Err((
                        "Unavailable",
                        "the device was created concurrently; retry".into(),
                    )),
                }
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 422 || s.code == 400 => {
                Err(("Invalid", s.message))
            }
            Ok(Err(e)) => Err(("Unavailable", devplane_core::report::chain(&e))),
            Err(_) => Err(("Unavailable", "the API did not answer in time".into())),
        }
    }

    /// Whether `namespace` takes registrations from this gateway's namespace: whoever may write
    /// a Gateway must not be able to have the front door create Devices anywhere, so the target
    /// namespace opts in by annotation.
    async fn accepted_by(
        &self,
        shared: &Shared,
        namespace: &str,
    ) -> Result<(), (&'static str, String)> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(shared.client.clone());
        let target = match tokio::time::timeout(API_TIMEOUT, api.get_opt(namespace)).await {
            Ok(Ok(target)) => target,
            Ok(Err(e)) => return Err(("Unavailable", devplane_core::report::chain(&e))),
            Err(_) => return Err(("Unavailable", "the API did not answer in time".into())),
        };
        let accepts = target
            .as_ref()
            .and_then(|n| n.metadata.annotations.as_ref())
            .and_then(|a| a.get(annotations::GATEWAY_REGISTRATIONS_FROM))
            .is_some_and(|from| from.split(',').any(|ns| ns.trim() == self.id.namespace));
        if accepts {
            Ok(())
        } else {
            Err((
                "NotAllowed",
                format!(
                    "namespace {namespace} does not accept registrations from gateways of {} (annotation {} on the namespace)",
                    self.id.namespace,
                    annotations::GATEWAY_REGISTRATIONS_FROM
                ),
            ))
        }
    }

    /// The answer for a device that exists already: ours (a retry) or someone else's.
    fn existing(&self, device: &Device) -> Result<&'static str, (&'static str, String)> {
        let labels = device.metadata.labels.clone().unwrap_or_default();
        let ours = labels.get(labels::GATEWAY) == Some(&owner_label_value(&self.id.name))
            && labels.get(labels::GATEWAY_NAMESPACE) == Some(&self.id.namespace)
            && device.spec.connection.gateway() == Some(self.id.name.as_str());
        if ours {
            Ok("exists")
        } else {
            Err((
                "NotAllowed",
                "a device of that name exists and was not registered by this gateway".into(),
            ))
        }
    }

    /// Tell the Gateway's status how many sub-devices are logged in through it.
    pub fn report_active(&mut self, shared: &Shared) {
        let active = self.active(shared).len();
        shared.status_update(StatusUpdate::Gateway {
            id: self.id.clone(),
            change: GatewayChange::Active(active),
        });
    }

    /// The session ended: every sub-device it had logged in goes Offline.
    pub async fn end(&mut self, shared: &Arc<Shared>) {
        for device in std::mem::take(&mut self.subs) {
            if shared.sub_logins.logout(&device, self.conn) {
                went_offline(shared, &device, &self.address).await;
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Value> {
    serde_json::from_slice(payload).map_err(|e| {
        refused(
            "InvalidPayload",
            format!("the request is not valid JSON of the expected shape: {e}"),
        )
    })
}

fn too_many(n: usize) -> Value {
    refused(
        "TooManyDevices",
        format!("{n} devices in one request; at most {MAX_PER_REQUEST}"),
    )
}

/// Why a login was refused, for the gateway.
pub fn login_message(refusal: LoginRefusal) -> String {
    match refusal {
        LoginRefusal::NotFound => "no such device".into(),
        LoginRefusal::NotAllowed => {
            "the device neither names this gateway nor matches its selector, or is planned".into()
        }
        LoginRefusal::Decommissioned => "the device is decommissioned".into(),
        LoginRefusal::LimitReached => "the gateway has maxActive sub-devices logged in".into(),
    }
}

/// A sub-device's session through its gateway ended.
async fn went_offline(shared: &Shared, device: &Identity, address: &str) {
    shared.status_update(StatusUpdate::Disconnected { id: device.clone() });
    ingest::presence(shared, device, false, address).await;
}

/// Tell a gateway session that one of its sub-devices was logged out from outside.
pub fn notify_logged_out(login: &SubLogin, device: &Identity, reason: &str, message: String) {
    let payload = json!({
        "loggedOut": [device.to_string()],
        "reason": reason,
        "message": message,
    });
    let deliver = Deliver {
        topic: format!("{}subdevices/notify", login.gateway.device_prefix()).into(),
        payload: Bytes::from(payload.to_string()),
        qos: 1,
        command: None,
    };
    if login.tx.try_send(Box::new(deliver)).is_err() {
        tracing::debug!(gateway = %login.gateway, device = %device, "gateway queue full: logout notice dropped");
    }
}

/// A sub-device's desired attributes and waiting commands, for its gateway.
pub fn sub_device_downlink(shared: &Shared, device: &Identity) -> Vec<Deliver> {
    let mut out = Vec::new();
    if let Some(payload) = shared
        .registry
        .read()
        .device(device)
        .map(ingest::desired_payload)
    {
        out.push(Deliver {
            topic: device.downlink(&Downlink::Desired).into(),
            payload,
            qos: 1,
            command: None,
        });
    }
    let now = jiff::Timestamp::now();
    for command in shared.commands.lock().deliverable(device, now) {
        out.push(Deliver {
            topic: device.downlink(&Downlink::Command(&command.name)).into(),
            payload: Bytes::from(command.payload(now).to_string()),
            qos: 1,
            command: Some(command.reference()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_of_a_gateway_is_reported_seen_once_per_interval() {
        let (tx, _rx) = mpsc::channel(1);
        let gateway = Identity::new("plant", "gw");
        let mut session = GatewaySession::new(gateway.clone(), 1, tx, "127.0.0.1:1".into());
        let sub = Identity::new("plant", "sub");
        session.subs.insert(sub.clone());
        let interval = Duration::from_secs(60);
        assert!(session.report_seen(&gateway, interval));
        assert!(session.report_seen(&sub, interval));
        for _ in 0..1000 {
            assert!(!session.report_seen(&sub, interval), "within the interval");
            assert!(!session.report_seen(&gateway, interval));
        }
        assert!(session.report_seen(&sub, Duration::ZERO), "after it");
        // Devices it no longer acts for are forgotten.
        session.subs.clear();
        for i in 0..10 {
            session.report_seen(&Identity::new("plant", format!("gone-{i}")), interval);
        }
        assert!(
            session.seen_reported.len() <= 2,
            "{}",
            session.seen_reported.len()
        );
    }
}
