//! CoAP messages as the front door reads and writes them (pure): the fixed header read before a
//! full parse (so even a broken message can be answered or rejected), the resources under
//! `/d/{ns}/{name}/`, the options a request may carry, and the responses.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use serde_json::json;

use crate::topic::Uplink;

/// The only CoAP version (RFC 7252 §3).
pub const VERSION: u8 = 1;
/// Content-Format `application/json`.
pub const JSON: u16 = 50;
/// Observe option value: register.
pub const OBSERVE_REGISTER: u32 = 0;
/// Observe option value: deregister.
pub const OBSERVE_DEREGISTER: u32 = 1;

/// The fixed header of a datagram.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// CON, NON, ACK or RST.
    pub kind: MessageType,
    /// The raw code (class << 5 | detail).
    pub code: u8,
    /// Message ID.
    pub message_id: u16,
    /// The token, when its length is valid and it is all there.
    pub token: Option<Vec<u8>>,
}

impl Head {
    /// Whether the code is of the request class (0.01–0.31).
    pub fn is_request(&self) -> bool {
        self.code >> 5 == 0 && self.code != 0
    }
}

/// What the first bytes of a datagram say.
#[derive(Clone, Debug, PartialEq)]
pub enum Sniff {
    /// Fewer than the 4 header bytes: nothing can be answered (RFC 7252 §4.2: silently ignored).
    TooShort,
    /// Not version 1: silently ignored (RFC 7252 §3).
    BadVersion(u8),
    /// A header.
    Head(Head),
}

/// Read the fixed header and the token of a datagram.
pub fn sniff(datagram: &[u8]) -> Sniff {
    let [first, code, high, low, ..] = *datagram else {
        return Sniff::TooShort;
    };
    let version = first >> 6;
    if version != VERSION {
        return Sniff::BadVersion(version);
    }
    let kind = match (first >> 4) & 0b11 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    };
    let length = usize::from(first & 0x0f);
    let token = (length <= 8)
        .then(|| datagram.get(4..4 + length).map(<[u8]>::to_vec))
        .flatten();
    Sniff::Head(Head {
        kind,
        code,
        message_id: u16::from_be_bytes([high, low]),
        token,
    })
}

/// Whether a datagram (with a token of `token_len` bytes) ends in a payload marker with no
/// payload after it, which RFC 7252 §3 makes a message format error (the decoder takes it as
/// an empty payload). Options are walked by their headers only; a datagram they do not fit is
/// left to the decoder.
pub fn marker_without_payload(datagram: &[u8], token_len: usize) -> bool {
    let mut at = 4 + token_len;
    // The extended part of an option's delta or length nibble: its size and the value added.
    let extended = |nibble: u8, at: usize| -> Option<(usize, usize)> {
        match nibble {
            13 => Some((1, 13 + usize::from(*datagram.get(at)?))),
            14 => {
                let bytes = datagram.get(at..at + 2)?;
                Some((
                    2,
                    269 + usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
                ))
            }
            15 => None,
            n => Some((0, usize::from(n))),
        }
    };
    while let Some(&byte) = datagram.get(at) {
        if byte == 0xff {
            return at + 1 == datagram.len();
        }
        let Some((delta_size, _)) = extended(byte >> 4, at + 1) else {
            return false;
        };
        let Some((length_size, length)) = extended(byte & 0x0f, at + 1 + delta_size) else {
            return false;
        };
        at += 1 + delta_size + length_size + length;
    }
    false
}

/// A resource of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// One of the four uplink POSTs.
    Uplink(Uplink<'a>),
    /// `GET attributes/desired` (observable).
    Desired,
    /// `GET commands` (observable).
    Commands,
}

/// A request's target: the device its path names and the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Namespace in the path.
    pub namespace: &'a str,
    /// Device name in the path.
    pub name: &'a str,
    /// The resource.
    pub resource: Resource<'a>,
}

/// Why a path and method name no resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No such resource (4.04).
    NotFound,
    /// The resource exists, not with this method (4.05).
    MethodNotAllowed(&'static str),
}

/// The path of the bench baseline (only served with the hidden bench flag).
pub const BASELINE_PATH: [&str; 2] = ["bench", "baseline"];

/// Route `segments` (the Uri-Path options) and `method` to a device's resource.
pub fn route<'a>(segments: &'a [String], method: RequestType) -> Result<Target<'a>, RouteError> {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let [root, namespace, name, rest @ ..] = parts.as_slice() else {
        return Err(RouteError::NotFound);
    };
    let ok = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    if *root != devplane_api::constants::topics::DEVICE_ROOT || !ok(namespace) || !ok(name) {
        return Err(RouteError::NotFound);
    }
    let (resource, wanted) = match rest {
        ["telemetry"] => (Resource::Uplink(Uplink::Telemetry), RequestType::Post),
        ["events", id] if ok(id) => (Resource::Uplink(Uplink::Event(id)), RequestType::Post),
        ["attributes", "reported"] => (Resource::Uplink(Uplink::Reported), RequestType::Post),
        ["commands", command, "response"] if ok(command) => (
            Resource::Uplink(Uplink::CommandResponse(command)),
            RequestType::Post,
        ),
        ["attributes", "desired"] => (Resource::Desired, RequestType::Get),
        ["commands"] => (Resource::Commands, RequestType::Get),
        _ => return Err(RouteError::NotFound),
    };
    if method != wanted {
        return Err(RouteError::MethodNotAllowed(match wanted {
            RequestType::Get => "GET",
            _ => "POST",
        }));
    }
    Ok(Target {
        namespace,
        name,
        resource,
    })
}

/// The Uri-Path segments of a request (None when one is not UTF-8).
pub fn path(packet: &Packet) -> Option<Vec<String>> {
    packet
        .get_option(CoapOption::UriPath)
        .map(|list| {
            list.iter()
                .map(|s| String::from_utf8(s.clone()).ok())
                .collect()
        })
        .unwrap_or(Some(Vec::new()))
}

/// An unsigned option value (0 to 4 bytes, big-endian).
pub fn uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

/// The shortest encoding of an unsigned option value.
pub fn uint_bytes(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

fn first_uint(packet: &Packet, option: CoapOption) -> Result<Option<u32>, u16> {
    match packet.get_first_option(option) {
        None => Ok(None),
        Some(value) => uint(value).map(Some).ok_or(u16::from(option)),
    }
}

/// What a request's options ask for, once checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The Observe option's value.
    pub observe: Option<u32>,
    /// The Content-Format option's value.
    pub content_format: Option<u16>,
    /// The Accept option's value.
    pub accept: Option<u16>,
}

/// Why a request's options cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// A critical option this server does not implement (4.02, RFC 7252 §5.4.1).
    UnsupportedCritical(u16),
    /// An option whose value is not well-formed (4.00).
    Malformed(u16),
}

/// Critical options the front door understands (odd numbers are critical): Uri-Host,
/// Uri-Port, Uri-Path, Uri-Query and Accept.
const UNDERSTOOD_CRITICAL: [u16; 5] = [3, 7, 11, 15, 17];

/// Check a request's options.
pub fn options(packet: &Packet) -> Result<Options, OptionError> {
    for (number, _) in packet.options() {
        if number % 2 == 1 && !UNDERSTOOD_CRITICAL.contains(number) {
            return Err(OptionError::UnsupportedCritical(*number));
        }
    }
    let narrow = |v: Option<u32>, option: CoapOption| {
        v.map(|v| u16::try_from(v).map_err(|_| OptionError::Malformed(u16::from(option))))
            .transpose()
    };
    let observe = first_uint(packet, CoapOption::Observe).map_err(OptionError::Malformed)?;
    let content_format =
        first_uint(packet, CoapOption::ContentFormat).map_err(OptionError::Malformed)?;
    let accept = first_uint(packet, CoapOption::Accept).map_err(OptionError::Malformed)?;
    Ok(Options {
        observe,
        content_format: narrow(content_format, CoapOption::ContentFormat)?,
        accept: narrow(accept, CoapOption::Accept)?,
    })
}

/// A response to send: its code, payload and the options the front door sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// Response code.
    pub code: ResponseType,
    /// Payload (JSON when not empty).
    pub payload: Vec<u8>,
    /// Max-Age, seconds.
    pub max_age: Option<u32>,
    /// Observe sequence number.
    pub observe: Option<u32>,
    /// Size1: the largest request accepted (with 4.13).
    pub size1: Option<u32>,
}

impl Reply {
    /// A response without payload.
    pub fn empty(code: ResponseType) -> Reply {
        Reply {
            code,
            payload: Vec::new(),
            max_age: None,
            observe: None,
            size1: None,
        }
    }

    /// A JSON response.
    pub fn json(code: ResponseType, payload: Vec<u8>) -> Reply {
        Reply {
            payload,
            ..Reply::empty(code)
        }
    }

    /// An error response with the diagnostic payload `{"reason","field","message"}` (the same
    /// shape as HTTP's 400 body).
    pub fn problem(
        code: ResponseType,
        reason: &str,
        field: &str,
        message: impl Into<String>,
    ) -> Reply {
        let body = json!({"reason": reason, "field": field, "message": message.into()});
        Reply::json(code, body.to_string().into_bytes())
    }

    /// With Max-Age.
    pub fn max_age(mut self, seconds: u32) -> Reply {
        self.max_age = Some(seconds);
        self
    }

    /// The response code's dotted form (`4.03`), for logs and tests.
    pub fn code_text(&self) -> String {
        MessageClass::Response(self.code).to_string()
    }
}

/// Encode a response: `kind` ACK (piggybacked, the request's message ID), or CON / NON (a
/// separate response or a notification, with a message ID of ours).
pub fn encode(kind: MessageType, message_id: u16, token: &[u8], reply: &Reply) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_version(VERSION);
    packet.header.set_type(kind);
    packet.header.message_id = message_id;
    packet.header.code = MessageClass::Response(reply.code);
    packet.set_token(token.to_vec());
    if let Some(seq) = reply.observe {
        packet.add_option(CoapOption::Observe, uint_bytes(seq & 0x00ff_ffff));
    }
    if !reply.payload.is_empty() {
        packet.add_option(CoapOption::ContentFormat, uint_bytes(u32::from(JSON)));
    }
    if let Some(seconds) = reply.max_age {
        packet.add_option(CoapOption::MaxAge, uint_bytes(seconds));
    }
    if let Some(size) = reply.size1 {
        packet.add_option(CoapOption::Size1, uint_bytes(size));
    }
    packet.payload = reply.payload.clone();
    // Nothing here can exceed what the encoder allows: no option is longer than 8 bytes.
    packet.to_bytes_unlimited().unwrap_or_default()
}

/// An empty message (ACK or RST) for `message_id`.
pub fn empty(kind: MessageType, message_id: u16) -> Vec<u8> {
    let kind_bits = match kind {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let [high, low] = message_id.to_be_bytes();
    vec![(VERSION << 6) | (kind_bits << 4), 0, high, low]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_marker_is_found_behind_options_of_every_length_encoding() {
        let head = [0x42, 0x02, 0, 1, 0xaa, 0xbb]; // CON POST, token of 2
        let with = |options: &[u8], tail: &[u8]| -> Vec<u8> { [&head[..], options, tail].concat() };
        let short = [0xb1, b'x']; // Uri-Path "x"
        let mut one_byte = vec![0xbd, 2]; // Uri-Path of 13 + 2 bytes
        one_byte.extend([0xff; 15]); // option bytes that look like markers
        let mut two_bytes = vec![0xbe, 0, 1]; // Uri-Path of 269 + 1 bytes
        two_bytes.extend([0xff; 270]);
        for options in [&short[..], &one_byte, &two_bytes] {
            assert!(marker_without_payload(&with(options, &[0xff]), 2));
            assert!(!marker_without_payload(&with(options, &[0xff, b'{']), 2));
            assert!(!marker_without_payload(&with(options, &[]), 2));
        }
        assert!(marker_without_payload(&with(&[], &[0xff]), 2));
        // Options running past the end: for the decoder to refuse.
        assert!(!marker_without_payload(&with(&[0xbe, 0], &[]), 2));
    }

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(str::to_string).collect()
    }

    #[test]
    fn the_header_is_read_even_when_the_rest_is_broken() {
        assert_eq!(sniff(&[0x40, 1]), Sniff::TooShort);
        assert_eq!(sniff(&[0x80, 1, 0, 1]), Sniff::BadVersion(2));
        let Sniff::Head(head) = sniff(&[0x48, 2, 0x12, 0x34, 1, 2]) else {
            panic!("a header");
        };
        assert_eq!(head.kind, MessageType::Confirmable);
        assert_eq!(head.message_id, 0x1234);
        assert_eq!(head.token, None, "eight token bytes announced, two there");
        assert!(head.is_request());
        let Sniff::Head(head) = sniff(&[0x52, 0x45, 0, 7, 9, 9]) else {
            panic!("a header");
        };
        assert_eq!(
            (head.kind, head.token.clone()),
            (MessageType::NonConfirmable, Some(vec![9, 9]))
        );
        assert!(!head.is_request(), "2.05 is a response");
    }

    #[test]
    fn paths_name_a_device_and_one_of_its_resources() {
        let get = RequestType::Get;
        let post = RequestType::Post;
        let telemetry = segments("d/plant/a/telemetry");
        assert_eq!(
            route(&telemetry, post),
            Ok(Target {
                namespace: "plant",
                name: "a",
                resource: Resource::Uplink(Uplink::Telemetry)
            })
        );
        let cases = [
            ("d/plant/a/events/overheat", post, true),
            ("d/plant/a/attributes/reported", post, true),
            ("d/plant/a/commands/c1/response", post, true),
            ("d/plant/a/attributes/desired", get, true),
            ("d/plant/a/commands", get, true),
        ];
        for (path, method, ok) in cases {
            assert_eq!(route(&segments(path), method).is_ok(), ok, "{path}");
        }
        assert_eq!(
            route(&segments("d/plant/a/telemetry"), get),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route(&segments("d/plant/a/attributes/desired"), post),
            Err(RouteError::MethodNotAllowed("GET"))
        );
        for path in [
            "d/plant/a",
            "x/plant/a/telemetry",
            "d/plant/a/errors",
            "d//a/telemetry",
            "d/plant/a/events/",
            "d/plant/+/telemetry",
        ] {
            assert_eq!(
                route(&segments(path), post),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_critical_options_are_refused_and_elective_ones_ignored() {
        let mut packet = Packet::new();
        packet.add_option(CoapOption::UriPath, b"d".to_vec());
        packet.add_option(CoapOption::ContentFormat, vec![50]);
        packet.add_option(CoapOption::Unknown(2048), vec![1]);
        assert_eq!(
            options(&packet),
            Ok(Options {
                content_format: Some(50),
                ..Options::default()
            })
        );
        packet.add_option(CoapOption::Block1, vec![0x06]);
        assert_eq!(options(&packet), Err(OptionError::UnsupportedCritical(27)));
        let mut packet = Packet::new();
        packet.add_option(CoapOption::Observe, vec![1, 2, 3, 4, 5]);
        assert_eq!(options(&packet), Err(OptionError::Malformed(6)));
    }

    #[test]
    fn responses_carry_the_token_and_a_json_diagnostic() {
        let reply = Reply::problem(
            ResponseType::BadRequest,
            "InvalidValue",
            "points.t",
            "too hot",
        )
        .max_age(1);
        let bytes = encode(MessageType::Acknowledgement, 7, &[1, 2], &reply);
        let packet = Packet::from_bytes(&bytes).expect("decodes");
        assert_eq!(packet.header.message_id, 7);
        assert_eq!(packet.get_token(), &[1, 2]);
        assert_eq!(
            packet.header.code,
            MessageClass::Response(ResponseType::BadRequest)
        );
        assert_eq!(
            packet.get_first_option(CoapOption::ContentFormat),
            Some(&vec![50])
        );
        assert_eq!(packet.get_first_option(CoapOption::MaxAge), Some(&vec![1]));
        let body: serde_json::Value = serde_json::from_slice(&packet.payload).expect("JSON");
        assert_eq!(body["reason"], "InvalidValue");
        assert_eq!(reply.code_text(), "4.00");
        assert_eq!(empty(MessageType::Reset, 0x0102), vec![0x70, 0, 1, 2]);
        assert_eq!(uint_bytes(0), Vec::<u8>::new());
        assert_eq!(uint_bytes(300), vec![1, 44]);
        assert_eq!(uint(&[1, 44]), Some(300));
    }
}
