//! Answering a well-formed request: routing, options, the authorization rule, and the
//! resources (uplink through ingest, desired attributes, commands, observation registration).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use coap_lite::{Packet, RequestType, ResponseType};
use devplane_api::v1alpha1::Protocol;

use super::downlink::{commands_payload, take_commands};
use super::exchange::Observed;
use super::message::{self, OptionError, Reply, Resource, RouteError};
use super::{Endpoint, Outcome, Principal, busy};
use crate::Shared;
use crate::ingest;
use crate::registry::Ended;
use crate::topic::{Denial, Identity, Uplink};
use crate::uplink::Rejection;

impl Endpoint {
    /// Answer a well-formed request.
    pub(super) fn request(
        &self,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        principal: &Principal,
        token: &[u8],
        packet: &Packet,
    ) -> Outcome {
        let reply = |r: Reply| Outcome::Reply(r);
        let method = match packet.header.code {
            coap_lite::MessageClass::Request(method) => method,
            _ => RequestType::UnKnown,
        };
        let options = match message::options(packet) {
            Ok(options) => options,
            Err(OptionError::UnsupportedCritical(number)) => {
                return reply(Reply::problem(
                    ResponseType::BadOption,
                    "UnsupportedOption",
                    "",
                    format!(
                        "critical option {number} is not supported (nor is block-wise transfer)"
                    ),
                ));
            }
            Err(OptionError::Malformed(number)) => {
                return reply(Reply::problem(
                    ResponseType::BadRequest,
                    "InvalidOption",
                    "",
                    format!("option {number} has a malformed value"),
                ));
            }
        };
        let Some(segments) = message::path(packet) else {
            return reply(Reply::problem(
                ResponseType::BadRequest,
                "InvalidPath",
                "",
                "a Uri-Path segment is not UTF-8",
            ));
        };
        if shared.settings.coap_baseline
            && segments
                .iter()
                .map(String::as_str)
                .eq(message::BASELINE_PATH)
        {
            // The bench baseline: the transport alone, no identity or validation.
            return reply(Reply::empty(ResponseType::Changed));
        }
        if let [root, namespace, policy] = segments.as_slice()
            && root == "provision"
        {
            if method != RequestType::Post {
                return reply(Reply::problem(
                    ResponseType::MethodNotAllowed,
                    "MethodNotAllowed",
                    "",
                    "use POST on this resource",
                ));
            }
            let policy = Identity::new(namespace.clone(), policy.clone());
            return provision(shared, peer, principal, policy, &packet.payload);
        }
        let target = match message::route(&segments, method) {
            Ok(target) => target,
            Err(RouteError::NotFound) => {
                return reply(Reply::problem(
                    ResponseType::NotFound,
                    "NotFound",
                    "",
                    format!("no resource /{}", segments.join("/")),
                ));
            }
            Err(RouteError::MethodNotAllowed(allowed)) => {
                return reply(Reply::problem(
                    ResponseType::MethodNotAllowed,
                    "MethodNotAllowed",
                    "",
                    format!("use {allowed} on this resource"),
                ));
            }
        };
        if let Some(accept) = options.accept
            && accept != message::JSON
        {
            return reply(Reply::problem(
                ResponseType::NotAcceptable,
                "NotAcceptable",
                "",
                format!("only application/json ({}) is served", message::JSON),
            ));
        }
        let id = match self.authorize(shared, principal, target.namespace, target.name) {
            Ok(id) => id,
            Err(r) => return reply(r),
        };
        match target.resource {
            Resource::Uplink(uplink) => {
                if let Some(format) = options.content_format
                    && format != message::JSON
                {
                    return reply(Reply::problem(
                        ResponseType::UnsupportedContentFormat,
                        "UnsupportedContentFormat",
                        "",
                        format!(
                            "Content-Format {format} is not supported; send application/json ({})",
                            message::JSON
                        ),
                    ));
                }
                self.uplink(shared, peer, &id, &uplink, &packet.payload)
            }
            Resource::Desired => reply(self.desired(shared, peer, &id, token, options.observe)),
            Resource::Commands => reply(self.commands(shared, peer, &id, token, options.observe)),
        }
    }

    /// The device a request may act for: the session's own (DTLS) or the path's (insecure).
    fn authorize(
        &self,
        shared: &Shared,
        principal: &Principal,
        namespace: &str,
        name: &str,
    ) -> Result<Identity, Reply> {
        let now = jiff::Timestamp::now();
        match principal {
            Principal::Device { id, tag } => {
                let problem =
                    shared
                        .registry
                        .read()
                        .device_session_problem(id, tag, Protocol::Coap, now);
                if let Some(why) = problem {
                    self.end_session(id);
                    let (code, reason) = match why {
                        Ended::Revoked | Ended::RotatedOut => {
                            (ResponseType::Unauthorized, "BadCredentials")
                        }
                        _ => (ResponseType::Forbidden, "NotAuthorized"),
                    };
                    shared.metrics.connections_refused.inc(reason);
                    return Err(Reply::problem(code, reason, "", why.to_string()));
                }
                if id.namespace != namespace || id.name != name {
                    shared.metrics.deny(Denial::ForeignTopic);
                    shared.warn(
                        id,
                        "PublishDenied",
                        format!("CoAP request for device {namespace}/{name} denied"),
                    );
                    return Err(Reply::problem(
                        ResponseType::Forbidden,
                        Denial::ForeignTopic.as_str(),
                        "",
                        format!("device {id} may not act for {namespace}/{name}"),
                    ));
                }
                Ok(id.clone())
            }
            Principal::Provisioning { .. } => Err(Reply::problem(
                ResponseType::Forbidden,
                "NotAuthorized",
                "",
                "a provisioning session may only POST /provision/{ns}/{policy}",
            )),
            Principal::Insecure => {
                let id = Identity::new(namespace, name);
                let refusal = match shared.registry.read().device(&id) {
                    None => Some(None),
                    Some(entry) => entry.refusal(Protocol::Coap).map(Some),
                };
                match refusal {
                    None => Ok(id),
                    Some(None) => Err(Reply::problem(
                        ResponseType::NotFound,
                        "UnknownDevice",
                        "",
                        format!("there is no device {id}"),
                    )),
                    Some(Some(why)) => {
                        shared.metrics.connections_refused.inc("NotAuthorized");
                        Err(Reply::problem(
                            ResponseType::Forbidden,
                            "NotAuthorized",
                            "",
                            why.to_string(),
                        ))
                    }
                }
            }
        }
    }

    /// End every DTLS session of a device (its key or its right to connect is gone).
    fn end_session(&self, id: &Identity) {
        for peer in self.peers.lock().values() {
            if let (Principal::Device { id: of, .. }, Some(kill)) = (&peer.principal, &peer.kill)
                && of == id
            {
                kill.cancel();
            }
        }
    }

    fn uplink(
        &self,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        id: &Identity,
        uplink: &Uplink<'_>,
        payload: &[u8],
    ) -> Outcome {
        let accepted = match ingest::judge(shared, id, uplink, payload) {
            Ok(accepted) => accepted,
            Err(Rejection {
                reason,
                field,
                message,
            }) => {
                shared.metrics.rejected.inc(reason);
                return Outcome::Reply(Reply::problem(
                    ResponseType::BadRequest,
                    reason,
                    &field,
                    message,
                ));
            }
        };
        match shared.ingest.try_send(accepted) {
            Ok(()) => {
                shared.seen(Protocol::Coap, id, peer);
                Outcome::Reply(Reply::empty(ResponseType::Changed))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(accepted)) => {
                Outcome::Busy(Box::new(accepted), id.clone())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Outcome::Reply(busy()),
        }
    }

    /// Register, renew or end an observation per the Observe option; returns the sequence
    /// number to send when the request observes.
    fn observation(
        &self,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        resource: Observed,
        observe: Option<u32>,
        payload: &Bytes,
    ) -> Option<u32> {
        let mut peers = self.peers.lock();
        let state = peers.get_mut(&peer)?;
        match observe {
            Some(message::OBSERVE_REGISTER) => {
                let seq = state.exchange.observe(token, resource, id)?;
                state.exchange.sent_to_observer(token, payload.clone());
                Some(seq)
            }
            Some(message::OBSERVE_DEREGISTER) => {
                state.exchange.forget(token);
                None
            }
            _ => None,
        }
    }

    fn desired(
        &self,
        shared: &Shared,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        observe: Option<u32>,
    ) -> Reply {
        let payload = shared
            .registry
            .read()
            .device(id)
            .map(ingest::desired_payload);
        let Some(payload) = payload else {
            return Reply::problem(ResponseType::NotFound, "NotFound", "", "the device is gone");
        };
        shared.seen(Protocol::Coap, id, peer);
        let seq = self.observation(peer, id, token, Observed::Desired, observe, &payload);
        Reply {
            observe: seq,
            ..Reply::json(ResponseType::Content, payload.to_vec())
        }
    }

    fn commands(
        &self,
        shared: &Shared,
        peer: SocketAddr,
        id: &Identity,
        token: &[u8],
        observe: Option<u32>,
    ) -> Reply {
        shared.seen(Protocol::Coap, id, peer);
        let payload = take_commands(shared, id).unwrap_or_else(|| commands_payload(Vec::new()));
        let seq = self.observation(peer, id, token, Observed::Commands, observe, &payload);
        Reply {
            observe: seq,
            ..Reply::json(ResponseType::Content, payload.to_vec())
        }
    }
}

/// `POST /provision/{ns}/{policy}`: the HTTP form's body; answered separately once the device
/// has its identity (2.01 new, 2.05 existing) or with the refusal (4.00, 4.03, 4.04, 4.29,
/// 5.03) and `{"reason","message"}`. Over DTLS the PSK identity
/// `provision/{ns}/{policy}/{deviceId}` with the derived key proved the id, so the body may be
/// empty; a device session may not provision.
fn provision(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    principal: &Principal,
    policy: Identity,
    payload: &[u8],
) -> Outcome {
    let problem = |code, p: crate::provision::Problem| {
        Outcome::Reply(Reply::problem(code, p.reason, "", p.message))
    };
    let parsed = if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(crate::provision::Request::default())
    } else {
        serde_json::from_slice::<crate::provision::Request>(payload)
    };
    let mut request = match parsed {
        Ok(request) => request,
        Err(e) => {
            let invalid = crate::provision::Problem::invalid(format!("the request: {e}"));
            return problem(ResponseType::BadRequest, invalid);
        }
    };
    match principal {
        Principal::Device { id, .. } => {
            return Outcome::Reply(Reply::problem(
                ResponseType::Forbidden,
                "NotAllowed",
                "",
                format!("device {id} has credentials already"),
            ));
        }
        Principal::Provisioning {
            policy: proved,
            device_id,
            proof,
        } => {
            if *proved != policy || request.device_id.as_ref().is_some_and(|d| d != device_id) {
                return Outcome::Reply(Reply::problem(
                    ResponseType::Forbidden,
                    "BadProof",
                    "",
                    format!("the DTLS session proved device {device_id} of policy {proved}"),
                ));
            }
            request.device_id = Some(device_id.clone());
            request.proof = Some(proof.clone());
        }
        Principal::Insecure => {}
    }
    let shared = shared.clone();
    Outcome::Later(Box::pin(async move {
        match crate::provision::provision(&shared, &policy, &request, peer.ip(), None).await {
            Ok(answer) => {
                let code = if answer.created {
                    ResponseType::Created
                } else {
                    ResponseType::Content
                };
                Reply::json(code, serde_json::to_vec(&answer).unwrap_or_default())
            }
            Err(p) => {
                let code = match p.failure {
                    crate::provision::Failure::Refused => ResponseType::Forbidden,
                    crate::provision::Failure::NotFound => ResponseType::NotFound,
                    crate::provision::Failure::Invalid => ResponseType::BadRequest,
                    crate::provision::Failure::RateLimited => ResponseType::TooManyRequests,
                    crate::provision::Failure::Unavailable => ResponseType::ServiceUnavailable,
                };
                Reply::problem(code, p.reason, "", p.message)
            }
        }
    }))
}
