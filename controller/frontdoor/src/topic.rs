//! The device protocol's topic tree and the authorization rule (pure).
//!
//! A device `{ns}/{name}` owns `d/{ns}/{name}/…` and nothing else: it publishes its uplink there
//! and subscribes to its downlink there. An application of namespace `ns` reads
//! `north/{ns}/…` and nothing else. Every other topic or filter is denied with a reason.

use std::fmt;

use devplane_api::constants::topics::{DEVICE_ROOT, NORTH_ROOT};

/// A device (or gateway, or application) identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Identity {
    /// An identity.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Identity {
        Identity {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The identity an MQTT user name `{ns}/{name}` stands for.
    pub fn from_username(username: &str) -> Option<Identity> {
        let (namespace, name) = username.split_once('/')?;
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
        (ok(namespace) && ok(name)).then(|| Identity::new(namespace, name))
    }

    /// The device's topic prefix, `d/{ns}/{name}/`.
    pub fn device_prefix(&self) -> String {
        format!("{DEVICE_ROOT}/{}/{}/", self.namespace, self.name)
    }

    /// A downlink topic of the device.
    pub fn downlink(&self, downlink: &Downlink<'_>) -> String {
        let prefix = self.device_prefix();
        match downlink {
            Downlink::Desired => format!("{prefix}attributes/desired"),
            Downlink::Command(name) => format!("{prefix}commands/{name}"),
            Downlink::Errors => format!("{prefix}errors"),
        }
    }

    /// The northbound topic of one of the device's streams.
    pub fn north(&self, stream: &North<'_>) -> String {
        let base = format!("{NORTH_ROOT}/{}/{}", self.namespace, self.name);
        match stream {
            North::Telemetry => format!("{base}/telemetry"),
            North::Event(id) => format!("{base}/events/{id}"),
            North::Attributes => format!("{base}/attributes"),
            North::Presence => format!("{base}/presence"),
            North::Lifecycle => format!("{base}/lifecycle"),
            North::CommandResponse(name) => format!("{base}/commands/{name}"),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a device publishes, by topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uplink<'a> {
    /// `telemetry`.
    Telemetry,
    /// `events/{eventId}`.
    Event(&'a str),
    /// `attributes/reported`.
    Reported,
    /// `commands/{command}/response`.
    CommandResponse(&'a str),
}

/// What the front door sends a device, by topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Downlink<'a> {
    /// `attributes/desired`.
    Desired,
    /// `commands/{command}`.
    Command(&'a str),
    /// `errors`.
    Errors,
}

/// The northbound streams of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum North<'a> {
    /// Accepted telemetry.
    Telemetry,
    /// Accepted events.
    Event(&'a str),
    /// Reported attributes.
    Attributes,
    /// Online / Offline.
    Presence,
    /// Lifecycle changes.
    Lifecycle,
    /// Command results.
    CommandResponse(&'a str),
}

/// Why a topic or filter is refused. The name is the metric label and the `reason` a device
/// reads on its errors topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Denial {
    /// Under another device's (or namespace's) tree, or outside the protocol's trees.
    ForeignTopic,
    /// A wildcard that reaches beyond the caller's own tree (`#`, `+/…`, `d/+/…`).
    Wildcard,
    /// A `$SYS/…` or other `$` topic.
    SystemTopic,
    /// Inside the caller's tree, but not a topic it may publish (or read) there.
    UnknownTopic,
    /// Not a well-formed MQTT topic or filter.
    InvalidTopic,
    /// Applications only read.
    ReadOnly,
}

impl Denial {
    /// Every denial, for metrics.
    pub const ALL: [Denial; 6] = [
        Denial::ForeignTopic,
        Denial::Wildcard,
        Denial::SystemTopic,
        Denial::UnknownTopic,
        Denial::InvalidTopic,
        Denial::ReadOnly,
    ];

    /// The CamelCase reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::ForeignTopic => "ForeignTopic",
            Denial::Wildcard => "Wildcard",
            Denial::SystemTopic => "SystemTopic",
            Denial::UnknownTopic => "UnknownTopic",
            Denial::InvalidTopic => "InvalidTopic",
            Denial::ReadOnly => "ReadOnly",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Check that the first levels of `topic` are exactly `owner` (for example `["d", ns, name]`)
/// and return the rest (without the separating `/`).
fn own_rest<'t>(topic: &'t str, owner: &[&str]) -> Result<&'t str, Denial> {
    if topic.starts_with('$') {
        return Err(Denial::SystemTopic);
    }
    let mut rest = topic;
    for (i, expected) in owner.iter().enumerate() {
        let (level, tail) = match rest.split_once('/') {
            Some(pair) => pair,
            None => (rest, ""),
        };
        if level == "#" || level == "+" {
            return Err(Denial::Wildcard);
        }
        if level != *expected {
            return Err(Denial::ForeignTopic);
        }
        if i + 1 < owner.len() && !rest.contains('/') {
            return Err(Denial::ForeignTopic);
        }
        rest = tail;
    }
    if rest.is_empty() {
        // `d/ns/name` itself is no topic of the protocol.
        return Err(Denial::UnknownTopic);
    }
    Ok(rest)
}

/// What a device may publish on `topic`: its own uplink topics only.
pub fn classify_publish<'t>(device: &Identity, topic: &'t str) -> Result<Uplink<'t>, Denial> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err(
            if topic.starts_with('#') || topic.starts_with('+') || topic.contains("/+") {
                Denial::Wildcard
            } else {
                Denial::InvalidTopic
            },
        );
    }
    let rest = own_rest(topic, &[DEVICE_ROOT, &device.namespace, &device.name])?;
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        ["telemetry"] => Ok(Uplink::Telemetry),
        ["events", id] if !id.is_empty() => Ok(Uplink::Event(id)),
        ["attributes", "reported"] => Ok(Uplink::Reported),
        ["commands", name, "response"] if !name.is_empty() => Ok(Uplink::CommandResponse(name)),
        _ => Err(Denial::UnknownTopic),
    }
}

/// Whether `filter` is a well-formed MQTT topic filter.
fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i + 1 == levels.len(),
        "+" => true,
        other => !other.contains(['#', '+']),
    })
}

/// Whether a device may subscribe to `filter`: only filters inside its own tree.
pub fn authorize_device_filter(device: &Identity, filter: &str) -> Result<(), Denial> {
    if !valid_filter(filter) {
        return Err(Denial::InvalidTopic);
    }
    own_rest(filter, &[DEVICE_ROOT, &device.namespace, &device.name]).map(|_| ())
}

/// A gateway's request about its sub-devices, published to `d/{ns}/{gw}/subdevices/{request}`
/// and answered on the same topic + `/response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayRequest {
    /// Log sub-devices in.
    Login,
    /// Log sub-devices out.
    Logout,
    /// The sub-devices the gateway may act for, and which are logged in.
    Get,
    /// Create Devices for sub-devices the gateway discovered.
    Register,
}

impl GatewayRequest {
    /// The topic level naming the request.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayRequest::Login => "login",
            GatewayRequest::Logout => "logout",
            GatewayRequest::Get => "get",
            GatewayRequest::Register => "register",
        }
    }
}

/// What a gateway's publish is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPublish<'t> {
    /// The gateway's own data.
    Own(Uplink<'t>),
    /// Data of a sub-device, under its own topics (allowed only while it is logged in).
    Sub(Identity, Uplink<'t>),
    /// A request about sub-devices.
    Request(GatewayRequest),
}

/// The device whose tree `topic` (or a filter) names: `d/{ns}/{name}/…` with literal levels.
fn tree_owner(topic: &str) -> Option<Identity> {
    let mut levels = topic.splitn(4, '/');
    let (root, namespace, name) = (levels.next()?, levels.next()?, levels.next()?);
    levels.next()?;
    let literal = |s: &str| !s.is_empty() && !s.contains(['+', '#']);
    (root == DEVICE_ROOT && literal(namespace) && literal(name))
        .then(|| Identity::new(namespace, name))
}

/// The device a downlink topic goes to.
pub fn downlink_owner(topic: &str) -> Option<Identity> {
    tree_owner(topic)
}

/// Classify a gateway's publish: its own uplink, a request about sub-devices, or uplink under
/// another device's tree (which the session allows only for a sub-device logged in through
/// it).
pub fn classify_gateway_publish<'t>(
    gateway: &Identity,
    topic: &'t str,
) -> Result<GatewayPublish<'t>, Denial> {
    let own = gateway.device_prefix();
    if let Some(rest) = topic.strip_prefix(&own)
        && let Some(request) = rest.strip_prefix("subdevices/")
    {
        return match request {
            "login" => Ok(GatewayPublish::Request(GatewayRequest::Login)),
            "logout" => Ok(GatewayPublish::Request(GatewayRequest::Logout)),
            "get" => Ok(GatewayPublish::Request(GatewayRequest::Get)),
            "register" => Ok(GatewayPublish::Request(GatewayRequest::Register)),
            _ => Err(Denial::UnknownTopic),
        };
    }
    match classify_publish(gateway, topic) {
        Ok(uplink) => Ok(GatewayPublish::Own(uplink)),
        Err(Denial::ForeignTopic) => {
            let sub = tree_owner(topic).ok_or(Denial::ForeignTopic)?;
            let uplink = classify_publish(&sub, topic)?;
            Ok(GatewayPublish::Sub(sub, uplink))
        }
        Err(denial) => Err(denial),
    }
}

/// Whether a gateway may subscribe to `filter`: inside its own tree, inside the tree of a
/// sub-device logged in through it, or `d/{ns}/+/…` (which only ever matches what is routed to
/// the gateway: its own downlink and that of its logged-in sub-devices).
pub fn authorize_gateway_filter(
    gateway: &Identity,
    filter: &str,
    logged_in: impl Fn(&Identity) -> bool,
) -> Result<(), Denial> {
    let levels: Vec<&str> = filter.splitn(4, '/').collect();
    if let [DEVICE_ROOT, namespace, "+", rest] = levels.as_slice()
        && !namespace.contains(['+', '#'])
        && !rest.is_empty()
        && valid_filter(filter)
    {
        return Ok(());
    }
    match authorize_device_filter(gateway, filter) {
        Err(Denial::ForeignTopic) => {}
        other => return other,
    }
    match levels.as_slice() {
        [DEVICE_ROOT, namespace, name, _] if namespace.contains(['+', '#']) || *name == "#" => {
            Err(Denial::Wildcard)
        }
        [DEVICE_ROOT, _, "#" | "+"] | [DEVICE_ROOT, "#" | "+", ..] => Err(Denial::Wildcard),
        _ => {
            let sub = tree_owner(filter).ok_or(Denial::ForeignTopic)?;
            if !logged_in(&sub) {
                return Err(Denial::ForeignTopic);
            }
            authorize_device_filter(&sub, filter)
        }
    }
}

/// Whether an application of `namespace` may subscribe to `filter`: only under
/// `north/{namespace}/`.
pub fn authorize_application_filter(namespace: &str, filter: &str) -> Result<(), Denial> {
    if !valid_filter(filter) {
        return Err(Denial::InvalidTopic);
    }
    own_rest(filter, &[NORTH_ROOT, namespace]).map(|_| ())
}

/// Whether `topic` matches `filter` (MQTT wildcard rules; `$` topics never match wildcards).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Identity {
        Identity::new("smart-home", "thermo")
    }

    #[test]
    fn user_names_name_a_namespace_and_a_device() {
        assert_eq!(Identity::from_username("smart-home/thermo"), Some(device()));
        for bad in ["thermo", "/thermo", "smart-home/", "a/b/c", "a/+", "#/x"] {
            assert_eq!(Identity::from_username(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_device_publishes_its_own_uplink_topics() {
        let d = device();
        assert_eq!(
            classify_publish(&d, "d/smart-home/thermo/telemetry"),
            Ok(Uplink::Telemetry)
        );
        assert_eq!(
            classify_publish(&d, "d/smart-home/thermo/events/mouldRisk"),
            Ok(Uplink::Event("mouldRisk"))
        );
        assert_eq!(
            classify_publish(&d, "d/smart-home/thermo/attributes/reported"),
            Ok(Uplink::Reported)
        );
        assert_eq!(
            classify_publish(&d, "d/smart-home/thermo/commands/reboot-1/response"),
            Ok(Uplink::CommandResponse("reboot-1"))
        );
    }

    #[test]
    fn a_device_cannot_publish_as_another_or_outside_its_tree() {
        let d = device();
        let cases = [
            ("d/smart-home/other/telemetry", Denial::ForeignTopic),
            ("d/other-ns/thermo/telemetry", Denial::ForeignTopic),
            ("d/smart-home/thermo-2/telemetry", Denial::ForeignTopic),
            ("x/smart-home/thermo/telemetry", Denial::ForeignTopic),
            ("d/smart-home", Denial::ForeignTopic),
            ("$SYS/broker/load", Denial::SystemTopic),
            (
                "d/smart-home/thermo/attributes/desired",
                Denial::UnknownTopic,
            ),
            ("d/smart-home/thermo/commands/x", Denial::UnknownTopic),
            ("d/smart-home/thermo/errors", Denial::UnknownTopic),
            ("d/smart-home/thermo", Denial::UnknownTopic),
            ("d/smart-home/thermo/events/", Denial::UnknownTopic),
            ("d/+/thermo/telemetry", Denial::Wildcard),
            ("#", Denial::Wildcard),
            ("", Denial::InvalidTopic),
        ];
        for (topic, denial) in cases {
            assert_eq!(classify_publish(&d, topic), Err(denial), "{topic}");
        }
    }

    #[test]
    fn a_device_subscribes_only_inside_its_own_tree() {
        let d = device();
        for ok in [
            "d/smart-home/thermo/#",
            "d/smart-home/thermo/commands/+",
            "d/smart-home/thermo/attributes/desired",
            "d/smart-home/thermo/+/desired",
        ] {
            assert_eq!(authorize_device_filter(&d, ok), Ok(()), "{ok}");
        }
        let cases = [
            ("#", Denial::Wildcard),
            ("+/smart-home/thermo/#", Denial::Wildcard),
            ("d/+/thermo/#", Denial::Wildcard),
            ("d/smart-home/+/#", Denial::Wildcard),
            ("d/smart-home/#", Denial::Wildcard),
            ("d/smart-home/other/#", Denial::ForeignTopic),
            ("$SYS/#", Denial::SystemTopic),
            ("d/smart-home/thermo/#/x", Denial::InvalidTopic),
            ("d/smart-home/thermo/a+", Denial::InvalidTopic),
            ("d/smart-home/thermo", Denial::UnknownTopic),
        ];
        for (filter, denial) in cases {
            assert_eq!(authorize_device_filter(&d, filter), Err(denial), "{filter}");
        }
    }

    #[test]
    fn an_application_reads_only_its_namespace() {
        assert_eq!(authorize_application_filter("a", "north/a/#"), Ok(()));
        assert_eq!(
            authorize_application_filter("a", "north/a/+/telemetry"),
            Ok(())
        );
        assert_eq!(
            authorize_application_filter("a", "north/b/#"),
            Err(Denial::ForeignTopic)
        );
        assert_eq!(
            authorize_application_filter("a", "north/+/#"),
            Err(Denial::Wildcard)
        );
        assert_eq!(
            authorize_application_filter("a", "#"),
            Err(Denial::Wildcard)
        );
        assert_eq!(
            authorize_application_filter("a", "d/a/x/#"),
            Err(Denial::ForeignTopic)
        );
    }

    #[test]
    fn filters_match_topics_by_mqtt_rules() {
        assert!(matches("d/a/b/commands/c1", "d/a/b/#"));
        assert!(matches("d/a/b/commands/c1", "d/a/b/commands/+"));
        assert!(matches("d/a/b", "d/a/b/#"));
        assert!(!matches("d/a/b/commands/c1/x", "d/a/b/commands/+"));
        assert!(!matches("d/a/c/errors", "d/a/b/#"));
        assert!(!matches("$SYS/x", "#"));
        assert!(matches("north/a/t/telemetry", "north/a/+/telemetry"));
    }

    #[test]
    fn downlink_and_north_topics_follow_the_protocol() {
        let d = device();
        assert_eq!(
            d.downlink(&Downlink::Desired),
            "d/smart-home/thermo/attributes/desired"
        );
        assert_eq!(
            d.downlink(&Downlink::Command("c1")),
            "d/smart-home/thermo/commands/c1"
        );
        assert_eq!(d.downlink(&Downlink::Errors), "d/smart-home/thermo/errors");
        assert_eq!(
            d.north(&North::Event("e")),
            "north/smart-home/thermo/events/e"
        );
    }

    #[test]
    fn a_gateway_publishes_its_own_data_requests_and_sub_device_data() {
        let gw = Identity::new("plant", "gw1");
        let cases = [
            (
                "d/plant/gw1/telemetry",
                Ok(GatewayPublish::Own(Uplink::Telemetry)),
            ),
            (
                "d/plant/gw1/subdevices/login",
                Ok(GatewayPublish::Request(GatewayRequest::Login)),
            ),
            (
                "d/plant/gw1/subdevices/register",
                Ok(GatewayPublish::Request(GatewayRequest::Register)),
            ),
            ("d/plant/gw1/subdevices/reboot", Err(Denial::UnknownTopic)),
            (
                "d/plant/meter-1/telemetry",
                Ok(GatewayPublish::Sub(
                    Identity::new("plant", "meter-1"),
                    Uplink::Telemetry,
                )),
            ),
            (
                "d/other/meter-1/commands/c1/response",
                Ok(GatewayPublish::Sub(
                    Identity::new("other", "meter-1"),
                    Uplink::CommandResponse("c1"),
                )),
            ),
            (
                "d/plant/meter-1/attributes/desired",
                Err(Denial::UnknownTopic),
            ),
            ("d/plant/+/telemetry", Err(Denial::Wildcard)),
            ("north/plant/meter-1/telemetry", Err(Denial::ForeignTopic)),
            ("$SYS/x", Err(Denial::SystemTopic)),
        ];
        for (topic, want) in cases {
            assert_eq!(classify_gateway_publish(&gw, topic), want, "{topic}");
        }
    }

    #[test]
    fn a_gateway_subscribes_to_its_own_tree_and_its_logged_in_sub_devices_only() {
        let gw = Identity::new("plant", "gw1");
        let logged_in = |id: &Identity| id.name == "meter-1";
        let cases = [
            ("d/plant/gw1/#", Ok(())),
            ("d/plant/gw1/subdevices/+/response", Ok(())),
            ("d/plant/meter-1/commands/+", Ok(())),
            ("d/plant/+/commands/+", Ok(())),
            ("d/plant/+/#", Ok(())),
            ("d/plant/meter-2/commands/+", Err(Denial::ForeignTopic)),
            ("d/plant/meter-2/#", Err(Denial::ForeignTopic)),
            ("d/+/meter-1/commands/+", Err(Denial::Wildcard)),
            ("d/plant/#", Err(Denial::Wildcard)),
            ("d/plant/+", Err(Denial::Wildcard)),
            ("#", Err(Denial::Wildcard)),
            ("north/plant/#", Err(Denial::ForeignTopic)),
            ("d/plant/meter-1/a#", Err(Denial::InvalidTopic)),
        ];
        for (filter, want) in cases {
            assert_eq!(
                authorize_gateway_filter(&gw, filter, logged_in),
                want,
                "{filter}"
            );
        }
    }

    #[test]
    fn the_owner_of_a_downlink_topic_is_its_tree() {
        assert_eq!(
            downlink_owner("d/plant/meter-1/commands/c1"),
            Some(Identity::new("plant", "meter-1"))
        );
        assert_eq!(downlink_owner("d/plant/meter-1"), None);
        assert_eq!(downlink_owner("north/plant/meter-1/x"), None);
    }
}
