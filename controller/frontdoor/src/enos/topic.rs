//! EnOS topics (pure): what a device or gateway publishes, by topic, and the topics the front
//! door publishes to it. A topic names its device by product and device key:
//! `/sys/{pk}/{dk}/…` and `/ext/session/{pk}/{dk}/…`; each request is answered on the same
//! topic + `_reply`.

use crate::topic::Denial;

/// Suffix of a reply topic.
pub const REPLY: &str = "_reply";

/// What a publish is, by its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'t> {
    /// `thing/measurepoint/post`.
    MeasurepointPost,
    /// `thing/measurepoint/post/batch`.
    MeasurepointPostBatch,
    /// `thing/measurepoint/resume` (offline backfill; treated as a post).
    MeasurepointResume,
    /// `thing/measurepoint/resume/batch`.
    MeasurepointResumeBatch,
    /// `thing/event/{eventId}/post`.
    EventPost(&'t str),
    /// `thing/attribute/update`.
    AttributeUpdate,
    /// `thing/topo/add` (gateways).
    TopoAdd,
    /// `thing/topo/get` (gateways).
    TopoGet,
    /// `thing/topo/delete` (gateways).
    TopoDelete,
    /// `/ext/session/…/combine/login` (gateways).
    SubLogin,
    /// `/ext/session/…/combine/login/batch` (gateways).
    SubLoginBatch,
    /// `/ext/session/…/combine/logout` (gateways).
    SubLogout,
    /// `thing/service/{serviceId}_reply`: the answer to a service invocation.
    ServiceReply(&'t str),
    /// `thing/service/measurepoint/set_reply`: the answer to a measure-point set.
    MeasurepointSetReply,
    /// `/ext/session/…/thing/activate/info_reply`: the answer to an activation.
    ActivateReply,
    /// Another reply (`…_reply`): nothing to answer.
    OtherReply,
    /// A request of the protocol devplane does not serve (tags, OTA, logs, RRPC, …).
    Unsupported(&'t str),
}

impl Request<'_> {
    /// Whether the publish answers something the front door sent (and so gets no reply).
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            Request::ServiceReply(_)
                | Request::MeasurepointSetReply
                | Request::ActivateReply
                | Request::OtherReply
        )
    }

    /// Whether it is a gateway's request about its sub-devices (on the gateway's own topic).
    pub fn is_gateway_request(self) -> bool {
        matches!(
            self,
            Request::TopoAdd
                | Request::TopoGet
                | Request::TopoDelete
                | Request::SubLogin
                | Request::SubLoginBatch
                | Request::SubLogout
        )
    }
}

/// A publish: the keys its topic names and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'t> {
    /// Product key.
    pub product_key: &'t str,
    /// Device key.
    pub device_key: &'t str,
    /// What it is.
    pub request: Request<'t>,
}

fn key_ok(key: &str) -> bool {
    !key.is_empty() && !key.contains(['+', '#', '\0'])
}

/// The keys and the rest of an EnOS topic: `/sys/{pk}/{dk}/{rest}` (`sys`) or
/// `/ext/session/{pk}/{dk}/{rest}` (`session`).
fn split(topic: &str) -> Result<(bool, &str, &str, &str), Denial> {
    if topic.starts_with('$') {
        return Err(Denial::SystemTopic);
    }
    if topic.is_empty() || topic.contains('\0') {
        return Err(Denial::InvalidTopic);
    }
    if topic.contains(['+', '#']) {
        return Err(Denial::Wildcard);
    }
    let (sys, rest) = if let Some(rest) = topic.strip_prefix("/sys/") {
        (true, rest)
    } else if let Some(rest) = topic.strip_prefix("/ext/session/") {
        (false, rest)
    } else {
        return Err(Denial::ForeignTopic);
    };
    let mut levels = rest.splitn(3, '/');
    let (pk, dk, rest) = match (levels.next(), levels.next(), levels.next()) {
        (Some(pk), Some(dk), Some(rest)) if key_ok(pk) && key_ok(dk) && !rest.is_empty() => {
            (pk, dk, rest)
        }
        _ => return Err(Denial::UnknownTopic),
    };
    Ok((sys, pk, dk, rest))
}

/// What a publish on `topic` is.
pub fn classify(topic: &str) -> Result<Publish<'_>, Denial> {
    let (sys, product_key, device_key, rest) = split(topic)?;
    let request = if sys {
        classify_sys(rest)
    } else {
        classify_session(rest)
    };
    Ok(Publish {
        product_key,
        device_key,
        request,
    })
}

fn classify_sys(rest: &str) -> Request<'_> {
    if let Some(request) = rest.strip_suffix(REPLY) {
        return match request {
            "thing/service/measurepoint/set" => Request::MeasurepointSetReply,
            _ => match request.strip_prefix("thing/service/") {
                Some(service) if !service.is_empty() && !service.contains('/') => {
                    Request::ServiceReply(service)
                }
                _ => Request::OtherReply,
            },
        };
    }
    match rest {
        "thing/measurepoint/post" => Request::MeasurepointPost,
        "thing/measurepoint/post/batch" => Request::MeasurepointPostBatch,
        "thing/measurepoint/resume" => Request::MeasurepointResume,
        "thing/measurepoint/resume/batch" => Request::MeasurepointResumeBatch,
        "thing/attribute/update" => Request::AttributeUpdate,
        "thing/topo/add" => Request::TopoAdd,
        "thing/topo/get" => Request::TopoGet,
        "thing/topo/delete" => Request::TopoDelete,
        _ => match rest
            .strip_prefix("thing/event/")
            .and_then(|r| r.strip_suffix("/post"))
        {
            Some(event) if !event.is_empty() && !event.contains('/') => Request::EventPost(event),
            _ => Request::Unsupported(rest),
        },
    }
}

fn classify_session(rest: &str) -> Request<'_> {
    match rest {
        "combine/login" => Request::SubLogin,
        "combine/login/batch" => Request::SubLoginBatch,
        "combine/logout" => Request::SubLogout,
        "thing/activate/info_reply" => Request::ActivateReply,
        other if other.ends_with(REPLY) => Request::OtherReply,
        other => Request::Unsupported(other),
    }
}

/// The topic a service invocation goes down on.
pub fn service(product_key: &str, device_key: &str, service: &str) -> String {
    format!("/sys/{product_key}/{device_key}/thing/service/{service}")
}

/// The topic a measure-point set goes down on.
pub fn measurepoint_set(product_key: &str, device_key: &str) -> String {
    format!("/sys/{product_key}/{device_key}/thing/service/measurepoint/set")
}

/// The topic an activation's secret goes down on.
pub fn activate_info(product_key: &str, device_key: &str) -> String {
    format!("/ext/session/{product_key}/{device_key}/thing/activate/info")
}

/// The reply topic of a request topic.
pub fn reply(topic: &str) -> String {
    format!("{topic}{REPLY}")
}

/// Whether a subscription to `filter` is allowed to a client that may act as the keys
/// `allowed` accepts: under `/sys/{pk}/{dk}/` or `/ext/session/{pk}/{dk}/` with its own keys
/// or `+` (nothing reaches a session but what is addressed to it, so a `+` reads nothing of
/// another device's).
pub fn authorize_filter(filter: &str, allowed: impl Fn(&str, &str) -> bool) -> Result<(), Denial> {
    if filter.starts_with('$') {
        return Err(Denial::SystemTopic);
    }
    let rest = if let Some(rest) = filter.strip_prefix("/sys/") {
        rest
    } else if let Some(rest) = filter.strip_prefix("/ext/session/") {
        rest
    } else if filter.starts_with('#') || filter.starts_with('+') || filter.starts_with("/+") {
        return Err(Denial::Wildcard);
    } else {
        return Err(Denial::ForeignTopic);
    };
    let levels: Vec<&str> = rest.split('/').collect();
    let valid = levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i + 1 == levels.len(),
        other => other == "+" || !other.contains(['#', '+', '\0']),
    });
    if !valid {
        return Err(Denial::InvalidTopic);
    }
    match levels.as_slice() {
        [pk, dk, _, ..] if *pk != "#" && *dk != "#" => {
            let wild = *pk == "+" || *dk == "+";
            if wild || allowed(pk, dk) {
                Ok(())
            } else {
                Err(Denial::ForeignTopic)
            }
        }
        _ => Err(Denial::Wildcard),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(topic: &str) -> Request<'_> {
        classify(topic).expect("an EnOS topic").request
    }

    #[test]
    fn uplink_topics_name_their_keys_and_request() {
        let publish = classify("/sys/thhy01/sensor-1/thing/measurepoint/post").expect("topic");
        assert_eq!(publish.product_key, "thhy01");
        assert_eq!(publish.device_key, "sensor-1");
        assert_eq!(publish.request, Request::MeasurepointPost);
        let cases = [
            (
                "/sys/p/d/thing/measurepoint/post/batch",
                Request::MeasurepointPostBatch,
            ),
            (
                "/sys/p/d/thing/measurepoint/resume",
                Request::MeasurepointResume,
            ),
            (
                "/sys/p/d/thing/event/mouldRisk/post",
                Request::EventPost("mouldRisk"),
            ),
            ("/sys/p/d/thing/attribute/update", Request::AttributeUpdate),
            ("/sys/p/d/thing/topo/add", Request::TopoAdd),
            ("/sys/p/d/thing/topo/get", Request::TopoGet),
            ("/sys/p/d/thing/topo/delete", Request::TopoDelete),
            ("/ext/session/p/d/combine/login", Request::SubLogin),
            (
                "/ext/session/p/d/combine/login/batch",
                Request::SubLoginBatch,
            ),
            ("/ext/session/p/d/combine/logout", Request::SubLogout),
            (
                "/sys/p/d/thing/tag/update",
                Request::Unsupported("thing/tag/update"),
            ),
            (
                "/sys/p/d/thing/event//post",
                Request::Unsupported("thing/event//post"),
            ),
        ];
        for (topic, want) in cases {
            assert_eq!(request(topic), want, "{topic}");
        }
    }

    #[test]
    fn replies_are_told_apart_from_requests() {
        let cases = [
            (
                "/sys/p/d/thing/service/reboot_reply",
                Request::ServiceReply("reboot"),
            ),
            (
                "/sys/p/d/thing/service/measurepoint/set_reply",
                Request::MeasurepointSetReply,
            ),
            (
                "/ext/session/p/d/thing/activate/info_reply",
                Request::ActivateReply,
            ),
            (
                "/sys/p/d/thing/service/measurepoint/get_reply",
                Request::OtherReply,
            ),
            (
                "/ext/session/p/d/combine/disable_reply",
                Request::OtherReply,
            ),
        ];
        for (topic, want) in cases {
            assert_eq!(request(topic), want, "{topic}");
            assert!(want.is_reply(), "{topic}");
        }
        assert!(!Request::MeasurepointPost.is_reply());
    }

    #[test]
    fn topics_outside_the_enos_trees_are_denied() {
        let cases = [
            ("d/plant/x/telemetry", Denial::ForeignTopic),
            ("/sys/p/d", Denial::UnknownTopic),
            ("/sys/p", Denial::UnknownTopic),
            ("/sys//d/thing/measurepoint/post", Denial::UnknownTopic),
            ("/sys/+/d/thing/measurepoint/post", Denial::Wildcard),
            ("$SYS/x", Denial::SystemTopic),
            ("", Denial::InvalidTopic),
        ];
        for (topic, denial) in cases {
            assert_eq!(classify(topic), Err(denial), "{topic}");
        }
    }

    #[test]
    fn downlink_topics_follow_the_protocol() {
        assert_eq!(service("p", "d", "reboot"), "/sys/p/d/thing/service/reboot");
        assert_eq!(
            reply(&measurepoint_set("p", "d")),
            "/sys/p/d/thing/service/measurepoint/set_reply"
        );
        assert_eq!(
            activate_info("p", "d"),
            "/ext/session/p/d/thing/activate/info"
        );
    }

    #[test]
    fn a_client_subscribes_under_its_own_keys_or_wildcard_keys_only() {
        let own = |pk: &str, dk: &str| pk == "p" && dk == "d";
        for ok in [
            "/sys/p/d/#",
            "/sys/p/d/thing/service/+",
            "/sys/+/+/thing/service/#",
            "/ext/session/p/d/#",
        ] {
            assert_eq!(authorize_filter(ok, own), Ok(()), "{ok}");
        }
        let cases = [
            ("/sys/p/other/#", Denial::ForeignTopic),
            ("/sys/#", Denial::Wildcard),
            ("/sys/p/#", Denial::Wildcard),
            ("#", Denial::Wildcard),
            ("d/ns/x/#", Denial::ForeignTopic),
            ("$SYS/#", Denial::SystemTopic),
            ("/sys/p/d/a#", Denial::InvalidTopic),
        ];
        for (filter, denial) in cases {
            assert_eq!(authorize_filter(filter, own), Err(denial), "{filter}");
        }
    }
}
