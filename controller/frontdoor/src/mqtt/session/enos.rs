//! The EnOS profile inside a session: the login, and the translation of what a device
//! publishes into the native uplink (judged and ingested by the same code) and of the native
//! downlink into EnOS requests. Every request gets a reply on its topic + `_reply`; downlink
//! goes out whether the device subscribed or not.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{End, Role, Session};
use crate::Shared;
use crate::enos::envelope::{self, Downlink, code};
use crate::enos::sign::{self, SecureMode};
use crate::enos::topic::{self as enos_topic, Request};
use crate::ingest::{self, Accepted};
use crate::mqtt::codec::{AckCode, ConnectCode, ConnectInfo, Outgoing};
use crate::registry::{Activation, EnosPrincipal, PasswordTag, Refusal};
use crate::sessions::{Deliver, Kill};
use crate::topic::{Denial, Identity, Uplink};
use crate::uplink::Rejection;

/// Measure-point sets awaiting their reply, per session.
const PENDING_SETS: usize = 64;

/// What an EnOS session keeps.
pub(crate) struct EnosState {
    /// The client's own product key.
    product_key: String,
    /// The client's own device key.
    device_key: String,
    /// Ids of the requests the front door sends.
    next_id: u64,
    /// Measure-point sets sent and not yet answered: id, device, values.
    pending_sets: VecDeque<(String, Identity, Map<String, Value>)>,
}

/// What an EnOS CONNECT logs in as.
pub(super) enum Login {
    /// A device or gateway session (secure mode 2).
    Session(Role, PasswordTag, Box<EnosState>),
    /// A dynamic activation (secure mode 3): a connection of its own.
    Activation(Box<(Activation, String, String)>),
}

/// Who an EnOS CONNECT is: its client id, user name and signature.
pub(super) fn authenticate(
    info: &ConnectInfo,
    shared: &Shared,
) -> Result<Login, (ConnectCode, String)> {
    let bad = |why: String| (ConnectCode::BadCredentials, why);
    let client = sign::parse_client_id(&info.client_id).map_err(|e| bad(e.to_string()))?;
    let username = info.username.as_deref().unwrap_or("");
    let (product_key, device_key) =
        sign::parse_username(username).map_err(|e| bad(e.to_string()))?;
    let content = sign::content(&client.inner, device_key, product_key, &client.timestamp);
    let password = info.password.as_deref().unwrap_or("");
    let verify = |secret: &[u8]| sign::verify(client.method, &content, secret, password);
    let refused = |r: Refusal| match r {
        Refusal::BadCredentials => bad("bad signature, or unknown product or device key".into()),
        Refusal::NotAuthorized(why) => (ConnectCode::NotAuthorized, why),
    };
    let registry = shared.registry.read();
    match client.mode {
        SecureMode::DeviceSecret => {
            let now = jiff::Timestamp::now();
            let (principal, tag) = registry
                .authenticate_enos(product_key, device_key, verify, now)
                .map_err(refused)?;
            let role = match principal {
                EnosPrincipal::Device(id) => Role::Device(id),
                EnosPrincipal::Gateway(id) => Role::Gateway(id),
            };
            let state = EnosState {
                product_key: product_key.to_string(),
                device_key: device_key.to_string(),
                next_id: 0,
                pending_sets: VecDeque::new(),
            };
            Ok(Login::Session(role, tag, Box::new(state)))
        }
        SecureMode::ProductSecret => {
            let activation = registry
                .enos_activation(product_key, device_key, verify)
                .map_err(refused)?;
            Ok(Login::Activation(Box::new((
                activation,
                product_key.to_string(),
                device_key.to_string(),
            ))))
        }
    }
}

/// A validation failure as a reply code and message.
fn failed(rejection: &Rejection) -> (i64, String) {
    (
        envelope::code_of(rejection),
        envelope::message_of(rejection),
    )
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The client's own identity (a device's or a gateway's).
    pub(super) fn own_id(&self) -> Option<&Identity> {
        match &self.role {
            Role::Device(id) | Role::Gateway(id) => Some(id),
            Role::Application(_) => None,
        }
    }

    /// The device `product_key`/`device_key` name, if the client may act as it: itself, or
    /// (a gateway) a sub-device logged in through it.
    pub(super) fn enos_acting(&self, product_key: &str, device_key: &str) -> Option<Identity> {
        let state = self.enos.as_deref()?;
        let own = self.own_id()?;
        if state.product_key == product_key && state.device_key == device_key {
            return Some(own.clone());
        }
        let target = self
            .shared
            .registry
            .read()
            .enos_principal(product_key, device_key)?;
        let acting = self
            .gateway
            .as_ref()
            .is_some_and(|g| g.acts_for(&self.shared, target.id()));
        acting.then(|| target.id().clone())
    }

    /// Whether the client may subscribe to `filter`.
    pub(super) fn enos_filter(&self, filter: &str) -> Result<(), Denial> {
        enos_topic::authorize_filter(filter, |pk, dk| self.enos_acting(pk, dk).is_some())
    }

    fn next_id(&mut self) -> String {
        let Some(state) = self.enos.as_mut() else {
            return String::new();
        };
        state.next_id += 1;
        state.next_id.to_string()
    }

    /// A native downlink message in EnOS terms (None: it has none, or the device has no
    /// EnOS keys). EnOS messages (replies) pass as they are.
    pub(super) fn enos_downlink(&mut self, deliver: Deliver) -> Option<Deliver> {
        if deliver.topic.starts_with('/') {
            return Some(deliver);
        }
        let owner = crate::topic::downlink_owner(&deliver.topic)?;
        let rest = deliver.topic.strip_prefix(&owner.device_prefix())?;
        let downlink = envelope::from_native(rest, &deliver.payload)?;
        let Some((product_key, device_key)) = self.shared.registry.read().enos_keys(&owner) else {
            tracing::debug!(device = %owner, "no EnOS product key: downlink not sent over EnOS");
            return None;
        };
        match downlink {
            Downlink::Service {
                command,
                service,
                params,
            } => {
                // The request's id names the command and its uid, which the reply echoes.
                let id =
                    envelope::invocation_id(&command, deliver.command.as_ref().map(|c| &*c.uid));
                Some(Deliver {
                    topic: enos_topic::service(&product_key, &device_key, &service).into(),
                    payload: envelope::request(&id, &format!("thing.service.{service}"), params),
                    qos: 1,
                    command: deliver.command,
                })
            }
            Downlink::Set { values } => {
                let id = self.next_id();
                let payload = envelope::request(
                    &id,
                    "thing.service.measurepoint.set",
                    Value::Object(values.clone()),
                );
                let state = self.enos.as_mut()?;
                if state.pending_sets.len() >= PENDING_SETS {
                    state.pending_sets.pop_front();
                }
                state.pending_sets.push_back((id, owner, values));
                Some(Deliver {
                    topic: enos_topic::measurepoint_set(&product_key, &device_key).into(),
                    payload,
                    qos: 1,
                    command: None,
                })
            }
        }
    }

    /// Reply to a request on its topic + `_reply`.
    pub(super) fn enos_reply(&mut self, topic: &str, payload: Bytes) {
        self.deliver(Deliver {
            topic: enos_topic::reply(topic).into(),
            payload,
            qos: 1,
            command: None,
        });
    }

    fn puback(&mut self, pkid: u16, qos: u8) {
        if qos == 1 {
            self.send(Outgoing::PubAck {
                pkid,
                code: AckCode::Success,
                reason: None,
            });
        }
    }

    /// Hand accepted records to ingest, waiting while it is full (the PUBACK waits too).
    async fn enos_ingest(&mut self, accepted: Vec<Accepted>, kill: &Kill) -> Result<(), End> {
        for record in accepted {
            tokio::select! {
                biased;
                _ = kill.killed() => return Err(End::Killed),
                sent = self.shared.ingest.send(record) => if sent.is_err() {
                    return Err(End::Killed);
                },
            }
        }
        Ok(())
    }

    fn judge(
        &self,
        device: &Identity,
        uplink: &Uplink<'_>,
        payload: &[u8],
    ) -> Result<Accepted, (i64, String)> {
        ingest::judge(&self.shared, device, uplink, payload).map_err(|rejection| {
            self.shared.metrics.rejected.inc(rejection.reason);
            failed(&rejection)
        })
    }

    /// A publish on the EnOS listener.
    pub(super) async fn enos_publish(
        &mut self,
        topic: String,
        pkid: u16,
        qos: u8,
        payload: Bytes,
        kill: &Kill,
    ) -> Option<End> {
        let publish = match enos_topic::classify(&topic) {
            Ok(publish) => publish,
            Err(denial) => return self.enos_deny(&topic, pkid, qos, denial, None),
        };
        let request = publish.request;
        let own = publish.product_key == self.enos.as_ref()?.product_key
            && publish.device_key == self.enos.as_ref()?.device_key;
        let device = match self.enos_acting(publish.product_key, publish.device_key) {
            // A gateway asks about its sub-devices on its own topics only.
            Some(_) if request.is_gateway_request() && !own => None,
            other => other,
        };
        let Some(device) = device else {
            let id = (!request.is_reply()).then(|| {
                envelope::parse_request(&payload)
                    .map(|r| r.id)
                    .unwrap_or(Value::Null)
            });
            return self.enos_deny(&topic, pkid, qos, Denial::ForeignTopic, id);
        };
        if request.is_reply() {
            let end = self.enos_answer(&device, request, &payload, kill).await;
            self.puback(pkid, qos);
            self.seen(&device);
            return end;
        }
        let envelope = match envelope::parse_request(&payload) {
            Ok(envelope) => envelope,
            Err(failure) => {
                self.puback(pkid, qos);
                self.enos_reply(&topic, failure.reply());
                return None;
            }
        };
        if request.is_gateway_request() {
            let answer = Box::pin(self.enos_gateway_request(request, &envelope)).await;
            self.puback(pkid, qos);
            self.enos_reply(&topic, answer);
            self.seen(&device);
            return None;
        }
        let judged = self.enos_data(&device, request, &envelope.params);
        let (accepted, verdict) = match judged {
            Ok(accepted) => (accepted, Ok(())),
            Err((accepted, code, message)) => (accepted, Err((code, message))),
        };
        if let Err(end) = self.enos_ingest(accepted, kill).await {
            return Some(end);
        }
        self.puback(pkid, qos);
        let reply = match verdict {
            Ok(()) => envelope::ok(&envelope.id, json!({})),
            Err((code, message)) => envelope::reply(&envelope.id, code, Value::Null, &message),
        };
        self.enos_reply(&topic, reply);
        self.seen(&device);
        None
    }

    /// Data a device (or a gateway for its sub-device) sends: what is accepted, or what is and
    /// the first failure.
    #[allow(clippy::type_complexity)]
    fn enos_data(
        &self,
        device: &Identity,
        request: Request<'_>,
        params: &Value,
    ) -> Result<Vec<Accepted>, (Vec<Accepted>, i64, String)> {
        let single = |uplink: Uplink<'_>, native: Result<Vec<u8>, Rejection>| {
            let native = native.map_err(|r| {
                self.shared.metrics.rejected.inc(r.reason);
                let (code, message) = failed(&r);
                (Vec::new(), code, message)
            })?;
            self.judge(device, &uplink, &native)
                .map(|a| vec![a])
                .map_err(|(code, message)| (Vec::new(), code, message))
        };
        match request {
            Request::MeasurepointPost | Request::MeasurepointResume => {
                single(Uplink::Telemetry, envelope::telemetry(params))
            }
            Request::EventPost(event) => single(Uplink::Event(event), envelope::event(params)),
            Request::AttributeUpdate => single(Uplink::Reported, envelope::attributes(params)),
            Request::MeasurepointPostBatch | Request::MeasurepointResumeBatch => {
                self.enos_batch(device, params)
            }
            Request::Unsupported(what) => Err((
                Vec::new(),
                code::BAD_REQUEST,
                format!("{what} is not supported by devplane (see docs/enos.md)"),
            )),
            _ => Err((
                Vec::new(),
                code::BAD_REQUEST,
                "not a request of this topic".into(),
            )),
        }
    }

    /// A batch post: each device's part judged on its own; the accepted parts go in, the
    /// first failure is the reply.
    #[allow(clippy::type_complexity)]
    fn enos_batch(
        &self,
        device: &Identity,
        params: &Value,
    ) -> Result<Vec<Accepted>, (Vec<Accepted>, i64, String)> {
        let parts = envelope::telemetry_batch(params).map_err(|r| {
            let (code, message) = failed(&r);
            (Vec::new(), code, message)
        })?;
        let mut accepted = Vec::new();
        let mut first_failure = None;
        for part in parts {
            let target = match &part.keys {
                None => Some(device.clone()),
                Some((pk, dk)) => self.enos_acting(pk, dk),
            };
            let label = part
                .keys
                .as_ref()
                .map(|(pk, dk)| format!("{pk}/{dk}"))
                .unwrap_or_default();
            let outcome = match target {
                None => Err((
                    code::UNAUTHORIZED,
                    format!("{label}: the client may not post for this device"),
                )),
                Some(target) => self.judge(&target, &Uplink::Telemetry, &part.payload),
            };
            match outcome {
                Ok(record) => accepted.push(record),
                Err((code, message)) if first_failure.is_none() => {
                    let message = if label.is_empty() {
                        message
                    } else {
                        format!("{label}: {message}")
                    };
                    first_failure = Some((code, message));
                }
                Err(_) => {}
            }
        }
        match first_failure {
            None => Ok(accepted),
            Some((code, message)) => Err((accepted, code, message)),
        }
    }

    /// A device's reply to what the front door sent: a service invocation's result or a
    /// measure-point set's outcome.
    async fn enos_answer(
        &mut self,
        device: &Identity,
        request: Request<'_>,
        payload: &[u8],
        kill: &Kill,
    ) -> Option<End> {
        let reply = match envelope::parse_reply(payload) {
            Ok(reply) => reply,
            Err(failure) => {
                tracing::info!(device = %device, message = %failure.message, "unreadable EnOS reply");
                return None;
            }
        };
        let (uplink, native) = match request {
            Request::ServiceReply(_) => {
                let (command, uid) = envelope::invoked(&reply.id);
                (
                    Uplink::CommandResponse(command),
                    envelope::command_response(&reply, uid),
                )
            }
            Request::MeasurepointSetReply => {
                let state = self.enos.as_mut()?;
                let at = state
                    .pending_sets
                    .iter()
                    .position(|(id, d, _)| *id == reply.id && d == device)?;
                let (_, _, values) = state.pending_sets.remove(at)?;
                if reply.code != code::OK {
                    tracing::info!(device = %device, code = reply.code, "the device refused a measure-point set");
                    self.shared.warn(
                        device,
                        "SetRefused",
                        format!(
                            "the device answered the measure-point set with code {}: {}",
                            reply.code,
                            reply.message.as_deref().unwrap_or("")
                        ),
                    );
                    return None;
                }
                // The device confirmed the values: they are what it reports now.
                (
                    Uplink::Reported,
                    Value::Object(values).to_string().into_bytes(),
                )
            }
            _ => return None,
        };
        match self.judge(device, &uplink, &native) {
            Ok(accepted) => self.enos_ingest(vec![accepted], kill).await.err(),
            Err((_, message)) => {
                tracing::info!(device = %device, %message, "EnOS reply rejected");
                None
            }
        }
    }

    /// A publish the client may not make: counted and warned like a native one, answered with
    /// an error reply (to a request with id `reply`) instead of a closed connection.
    fn enos_deny(
        &mut self,
        topic: &str,
        pkid: u16,
        qos: u8,
        denial: Denial,
        reply: Option<Value>,
    ) -> Option<End> {
        self.shared.metrics.deny(denial);
        tracing::info!(peer = %self.peer, who = %self.who(), topic, %denial, "publish denied");
        let message = format!("publish to {topic:?} denied: {denial}");
        match &self.role {
            Role::Gateway(id) => self.shared.warn_gateway(id, "PublishDenied", message),
            Role::Device(id) => self.shared.warn(id, "PublishDenied", message),
            Role::Application(_) => {}
        }
        self.puback(pkid, qos);
        if let Some(id) = reply {
            let body = envelope::reply(
                &id,
                code::UNAUTHORIZED,
                Value::Null,
                &format!("{denial}: the client may not publish on {topic}"),
            );
            self.enos_reply(topic, body);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use devplane_api::constants::labels;
    use devplane_api::v1alpha1::{Device, DeviceModel};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::mqtt::codec::Version;

    fn secret(label: &str, owner: &str, key: &str, value: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("{owner}-secret"));
        s.metadata.namespace = Some("home".into());
        s.metadata.labels = Some(BTreeMap::from([(label.to_string(), owner.to_string())]));
        s.data = Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )]));
        s
    }

    fn shared() -> std::sync::Arc<Shared> {
        let (shared, _ingest) = crate::test_shared();
        {
            let mut registry = shared.registry.write();
            registry.keep_device_keys();
            let model: DeviceModel = serde_yaml::from_str(
                "metadata: {name: thermo, namespace: home}\n\
                 spec: {version: 1.0.0, enos: {productKey: thhy01, dynamicActivation: true}}",
            )
            .expect("model");
            registry.apply_model(&model);
            for (name, phase) in [("sensor", "Provisioned"), ("planned", "Planned")] {
                let device: Device = serde_yaml::from_str(&format!(
                    "metadata: {{name: {name}, namespace: home}}\n\
                     spec: {{modelRef: {{name: thermo}}}}\n\
                     status: {{phase: {phase}}}"
                ))
                .expect("device");
                registry.apply_device(&device);
                registry.apply_secret(&secret(labels::DEVICE, name, "password", "pw"));
            }
            registry.apply_secret(&secret(
                labels::ENOS_PRODUCT,
                "thermo",
                "productSecret",
                "ps",
            ));
        }
        shared
    }

    fn connect(device_key: &str, mode: u8, secret: &str) -> ConnectInfo {
        let content = sign::content(device_key, device_key, "thhy01", "1700000000000");
        ConnectInfo {
            version: Version::V4,
            client_id: format!(
                "{device_key}|securemode={mode},signmethod=hmacsha256,timestamp=1700000000000|"
            ),
            keep_alive: 60,
            clean: true,
            username: Some(format!("{device_key}&thhy01")),
            password: Some(sign::sign(
                sign::SignMethod::Sha256,
                &content,
                secret.as_bytes(),
            )),
            will: None,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
        }
    }

    fn code(result: Result<Login, (ConnectCode, String)>) -> Option<ConnectCode> {
        result.err().map(|(code, _)| code)
    }

    #[tokio::test]
    async fn a_signed_mode_2_login_is_a_device_session_and_a_bad_one_gets_connack_4() {
        let shared = shared();
        match authenticate(&connect("sensor", 2, "pw"), &shared) {
            Ok(Login::Session(Role::Device(id), _, state)) => {
                assert_eq!(id, Identity::new("home", "sensor"));
                assert_eq!(
                    (state.product_key.as_str(), state.device_key.as_str()),
                    ("thhy01", "sensor")
                );
            }
            _ => panic!("a device session"),
        }
        assert_eq!(
            code(authenticate(&connect("sensor", 2, "wrong"), &shared)),
            Some(ConnectCode::BadCredentials)
        );
        let mut plain = connect("sensor", 2, "pw");
        plain.client_id = "sensor".into();
        assert_eq!(
            code(authenticate(&plain, &shared)),
            Some(ConnectCode::BadCredentials),
            "no securemode section"
        );
    }

    #[tokio::test]
    async fn a_device_that_may_not_connect_gets_connack_5() {
        let shared = shared();
        assert_eq!(
            code(authenticate(&connect("planned", 2, "pw"), &shared)),
            Some(ConnectCode::NotAuthorized)
        );
    }

    #[tokio::test]
    async fn a_mode_3_login_signed_with_the_product_secret_is_an_activation() {
        let shared = shared();
        match authenticate(&connect("sensor", 3, "ps"), &shared) {
            Ok(Login::Activation(activation)) => {
                assert_eq!(activation.0.device_secret, b"pw");
            }
            _ => panic!("an activation"),
        }
        assert_eq!(
            code(authenticate(&connect("sensor", 3, "pw"), &shared)),
            Some(ConnectCode::BadCredentials),
            "the device secret is no product secret"
        );
    }
}
