//! An EnOS gateway's requests about its sub-devices: topology (`thing/topo/add|get|delete`) and
//! sub-device logins (`combine/login`, `combine/login/batch`, `combine/logout`). A sub-device
//! proves itself by its own signature; whether the gateway may act for it, and the login
//! itself, are the native gateway's (`gateway::GatewaySession`). Topology lives in the API
//! (a Device's `gatewayRef`, a Gateway's selector): `topo/add` checks it, `topo/delete`
//! only logs devices out.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Role, Session};
use crate::enos::envelope::{self, code};
use crate::enos::sign::{self, SignMethod};
use crate::enos::topic::Request;
use crate::gateway::{self, GatewaySession};
use crate::registry::{EnosPrincipal, LoginRefusal, Refusal};
use crate::sessions::Deliver;
use crate::topic::Identity;

/// A sub-device request's outcome: code, data, message.
type Outcome = (i64, Value, String);

fn text(item: &Map<String, Value>, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn keys_of(item: &Map<String, Value>) -> Result<(String, String), Outcome> {
    match (text(item, "productKey"), text(item, "deviceKey")) {
        (Some(pk), Some(dk)) => Ok((pk, dk)),
        _ => Err((
            code::PARAMETER,
            Value::Null,
            "productKey and deviceKey are required".into(),
        )),
    }
}

fn refusal_code(refusal: LoginRefusal) -> i64 {
    match refusal {
        LoginRefusal::NotFound => code::DEVICE_NOT_FOUND,
        LoginRefusal::LimitReached => code::TOO_MANY,
        LoginRefusal::NotAllowed | LoginRefusal::Decommissioned => code::UNAUTHORIZED,
    }
}

fn items(params: &Value) -> Result<Vec<Map<String, Value>>, Outcome> {
    let list = match params {
        Value::Array(list) => list.clone(),
        Value::Object(_) => vec![params.clone()],
        _ => Vec::new(),
    };
    let objects: Vec<Map<String, Value>> = list
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .collect();
    if objects.is_empty() || objects.len() > gateway::MAX_PER_REQUEST {
        return Err((
            code::PARAMETER,
            Value::Null,
            format!(
                "params must list 1 to {} sub-devices",
                gateway::MAX_PER_REQUEST
            ),
        ));
    }
    Ok(objects)
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Answer a gateway's request; the reply payload.
    pub(super) async fn enos_gateway_request(
        &mut self,
        request: Request<'_>,
        envelope: &envelope::Request,
    ) -> Bytes {
        let reply =
            |(code, data, message): Outcome| envelope::reply(&envelope.id, code, data, &message);
        let Role::Gateway(gateway) = self.role.clone() else {
            return reply((
                code::BAD_REQUEST,
                Value::Null,
                "only a gateway has sub-devices".into(),
            ));
        };
        let Some(mut state) = self.gateway.take() else {
            return reply((
                code::HANDLER_FAILURE,
                Value::Null,
                "no gateway state".into(),
            ));
        };
        let mut downlink = Vec::new();
        let params = &envelope.params;
        let outcome = match request {
            Request::TopoAdd => self.topo_add(&gateway, params),
            Request::TopoGet => self.topo_get(&gateway),
            Request::TopoDelete => self.topo_delete(&mut state, params).await,
            Request::SubLogin => match params {
                Value::Object(item) => self.sub_login(&mut state, item, &mut downlink).await,
                _ => Err((
                    code::PARAMETER,
                    Value::Null,
                    "params must be an object".into(),
                )),
            },
            Request::SubLoginBatch => {
                self.sub_login_batch(&mut state, params, &mut downlink)
                    .await
            }
            Request::SubLogout => self.sub_logout(&mut state, params).await,
            _ => Err((
                code::BAD_REQUEST,
                Value::Null,
                "not a gateway request".into(),
            )),
        };
        self.gateway = Some(state);
        for deliver in downlink {
            self.deliver(deliver);
        }
        reply(outcome.unwrap_or_else(|failure| failure))
    }

    /// A sub-device named and signed by `item` (fields missing there come from `shared`: a
    /// batch login signs every device with one client id, timestamp and method).
    fn signed_sub_device(
        &self,
        item: &Map<String, Value>,
        shared: &Map<String, Value>,
    ) -> Result<Identity, Outcome> {
        let (pk, dk) = keys_of(item)?;
        let field = |key: &str| text(item, key).or_else(|| text(shared, key));
        let client_id = field("clientId").unwrap_or_else(|| dk.clone());
        let timestamp = field("timestamp").unwrap_or_default();
        let method = field("signMethod")
            .as_deref()
            .and_then(SignMethod::parse)
            .ok_or_else(|| {
                (
                    code::PARAMETER,
                    Value::Null,
                    format!("{pk}/{dk}: signMethod must be sha256, sha1 or md5"),
                )
            })?;
        let presented = field("sign").unwrap_or_default();
        let content = sign::content(&client_id, &dk, &pk, &timestamp);
        let verify = |secret: &[u8]| sign::verify(method, &content, secret, &presented);
        let now = jiff::Timestamp::now();
        let found = self
            .shared
            .registry
            .read()
            .enos_sub_device(&pk, &dk, verify, now);
        found.map_err(|refusal| match refusal {
            Refusal::BadCredentials => (
                code::UNAUTHORIZED,
                Value::Null,
                format!("{pk}/{dk}: bad signature"),
            ),
            Refusal::NotAuthorized(why) => (
                code::DEVICE_NOT_FOUND,
                Value::Null,
                format!("{pk}/{dk}: {why}"),
            ),
        })
    }

    /// Whether the gateway may act for `device` (its `maxActive` aside).
    fn may_act_for(&self, gateway: &Identity, device: &Identity) -> Result<(), LoginRefusal> {
        match self.shared.registry.read().may_log_in(gateway, device, 0) {
            Ok(()) | Err(LoginRefusal::LimitReached) => Ok(()),
            Err(refusal) => Err(refusal),
        }
    }

    fn topo_add(&self, gateway: &Identity, params: &Value) -> Result<Outcome, Outcome> {
        for item in items(params)? {
            let device = self.signed_sub_device(&item, &Map::new())?;
            self.may_act_for(gateway, &device).map_err(|refusal| {
                (
                    refusal_code(refusal),
                    Value::Null,
                    format!("{device}: {}", gateway::login_message(refusal)),
                )
            })?;
        }
        Ok((code::OK, Value::Null, "success".into()))
    }

    fn topo_get(&self, gateway: &Identity) -> Result<Outcome, Outcome> {
        let registry = self.shared.registry.read();
        let devices: Vec<Value> = registry
            .sub_devices_of(gateway)
            .iter()
            .filter_map(|id| {
                let (pk, dk) = registry.enos_keys(id)?;
                Some(json!({"productKey": pk, "deviceKey": dk, "name": id.name}))
            })
            .collect();
        Ok((code::OK, Value::Array(devices), "success".into()))
    }

    async fn topo_delete(
        &mut self,
        state: &mut GatewaySession,
        params: &Value,
    ) -> Result<Outcome, Outcome> {
        for item in items(params)? {
            let (pk, dk) = keys_of(&item)?;
            let found = self.shared.registry.read().enos_principal(&pk, &dk);
            if let Some(EnosPrincipal::Device(device)) = found {
                state.log_out_device(&self.shared, &device).await;
            }
        }
        state.report_active(&self.shared);
        Ok((
            code::OK,
            Value::Null,
            "logged out; the topology itself is declared by the Devices and the Gateway".into(),
        ))
    }

    async fn log_in_one(
        &mut self,
        state: &mut GatewaySession,
        device: &Identity,
        downlink: &mut Vec<Deliver>,
    ) -> Result<Value, Outcome> {
        state
            .log_in_device(&self.shared, device, downlink)
            .await
            .map_err(|refusal| {
                (
                    refusal_code(refusal),
                    Value::Null,
                    format!("{device}: {}", gateway::login_message(refusal)),
                )
            })?;
        let registry = self.shared.registry.read();
        let (pk, dk) = registry.enos_keys(device).unwrap_or_default();
        let asset = registry
            .device(device)
            .map(|d| d.uid.clone())
            .unwrap_or_default();
        Ok(json!({"productKey": pk, "deviceKey": dk, "assetId": asset}))
    }

    async fn sub_login(
        &mut self,
        state: &mut GatewaySession,
        item: &Map<String, Value>,
        downlink: &mut Vec<Deliver>,
    ) -> Result<Outcome, Outcome> {
        let device = self.signed_sub_device(item, &Map::new())?;
        let data = self.log_in_one(state, &device, downlink).await;
        state.report_active(&self.shared);
        Ok((code::OK, data?, "success".into()))
    }

    async fn sub_login_batch(
        &mut self,
        state: &mut GatewaySession,
        params: &Value,
        downlink: &mut Vec<Deliver>,
    ) -> Result<Outcome, Outcome> {
        let shared_fields = params.as_object().cloned().unwrap_or_default();
        let list = shared_fields
            .get("subDevices")
            .cloned()
            .unwrap_or(Value::Null);
        let mut logged_in = Vec::new();
        let mut failed = Vec::new();
        for item in items(&list)? {
            let outcome = match self.signed_sub_device(&item, &shared_fields) {
                Ok(device) => self.log_in_one(state, &device, downlink).await,
                Err(failure) => Err(failure),
            };
            match outcome {
                Ok(data) => logged_in.push(data),
                Err((code, _, message)) => failed.push(json!({
                    "productKey": text(&item, "productKey"),
                    "deviceKey": text(&item, "deviceKey"),
                    "code": code,
                    "message": message,
                })),
            }
        }
        state.report_active(&self.shared);
        let data = json!({"loginedSubDevices": logged_in, "failedSubDevices": failed});
        Ok((code::OK, data, "success".into()))
    }

    async fn sub_logout(
        &mut self,
        state: &mut GatewaySession,
        params: &Value,
    ) -> Result<Outcome, Outcome> {
        let item = params.as_object().cloned().unwrap_or_default();
        let (pk, dk) = keys_of(&item)?;
        let found = self.shared.registry.read().enos_principal(&pk, &dk);
        let Some(EnosPrincipal::Device(device)) = found else {
            return Err((
                code::DEVICE_NOT_FOUND,
                Value::Null,
                format!("{pk}/{dk}: no such device"),
            ));
        };
        if state.log_out_device(&self.shared, &device).await {
            state.report_active(&self.shared);
        }
        let data = json!({"productKey": pk, "deviceKey": dk});
        Ok((code::OK, data, "success".into()))
    }
}
