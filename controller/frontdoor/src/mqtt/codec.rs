//! MQTT 3.1.1 and 5 on the wire, through `rumqttc`'s codecs, behind one version-neutral pair of
//! types: the session logic reads [`Incoming`] and writes [`Outgoing`] whatever the version.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

/// A will message.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its QoS (0–2).
    pub qos: u8,
}

/// What a CONNECT asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectInfo {
    /// Protocol version.
    pub version: Version,
    /// Client identifier (any; devices are known by user name).
    pub client_id: String,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
    /// Clean session (v3.1.1) / clean start (v5).
    pub clean: bool,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Will message.
    pub will: Option<Will>,
    /// v5 session expiry interval, seconds.
    pub session_expiry: Option<u32>,
    /// v5 receive maximum: QoS 1 messages the client takes in flight.
    pub receive_maximum: Option<u16>,
    /// v5 maximum packet size the client accepts.
    pub maximum_packet_size: Option<u32>,
}

/// A packet from a client, after CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// PUBLISH.
    Publish {
        /// Topic (valid UTF-8).
        topic: String,
        /// Packet identifier (0 for QoS 0).
        pkid: u16,
        /// QoS 0–2.
        qos: u8,
        /// Payload.
        payload: Bytes,
    },
    /// PUBACK of a downlink.
    PubAck {
        /// Packet identifier.
        pkid: u16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters and requested QoS.
        filters: Vec<(String, u8)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet identifier.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT; v5 may ask for the will to be sent.
    Disconnect {
        /// The client asked for its will (v5 reason 0x04).
        with_will: bool,
    },
    /// A packet a server never expects here (a second CONNECT, QoS 2 flow, AUTH, …).
    Unexpected(&'static str),
}

/// CONNACK outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectCode {
    /// Accepted.
    Success,
    /// Unknown user or wrong password (v3.1.1: 4, v5: 0x86).
    BadCredentials,
    /// Not allowed to connect (v3.1.1: 5, v5: 0x87).
    NotAuthorized,
    /// Malformed CONNECT (v3.1.1: closes; v5: 0x81).
    Malformed,
    /// Protocol version not supported (v3.1.1: 1, v5: 0x84).
    UnsupportedVersion,
    /// The server is shutting down or overloaded (v3.1.1: 3, v5: 0x88).
    Unavailable,
}

/// SUBACK results per filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubCode {
    /// Granted at this QoS.
    Granted(u8),
    /// Not authorized (v3.1.1: 0x80, v5: 0x87).
    NotAuthorized,
    /// Malformed filter (v3.1.1: 0x80, v5: 0x8F).
    InvalidFilter,
    /// Too many filters (v3.1.1: 0x80, v5: 0x97).
    QuotaExceeded,
}

/// PUBACK results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted.
    Success,
    /// Topic not allowed (0x87).
    NotAuthorized,
    /// Payload invalid (0x99).
    PayloadFormatInvalid,
    /// Topic malformed (0x90).
    TopicNameInvalid,
}

/// DISCONNECT reasons the server sends (v5 only; v3.1.1 just closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 0x81.
    Malformed,
    /// 0x82.
    ProtocolError,
    /// 0x87.
    NotAuthorized,
    /// 0x8B.
    ShuttingDown,
    /// 0x8D.
    KeepAliveTimeout,
    /// 0x8E.
    SessionTakenOver,
    /// 0x95.
    PacketTooLarge,
    /// 0x97.
    QuotaExceeded,
    /// 0x98.
    AdministrativeAction,
    /// 0x9B.
    QosNotSupported,
}

/// A packet to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Outgoing {
    /// CONNACK (v5 properties announce what the server supports).
    ConnAck {
        /// Result.
        code: ConnectCode,
        /// A stored session was resumed.
        session_present: bool,
        /// v5 reason string.
        reason: Option<String>,
        /// v5: the server's receive maximum.
        receive_maximum: u16,
        /// v5: the largest packet the server accepts.
        maximum_packet_size: u32,
    },
    /// PUBLISH of a downlink.
    Publish {
        /// Topic.
        topic: String,
        /// Packet identifier (QoS 1).
        pkid: u16,
        /// QoS 0 or 1.
        qos: u8,
        /// Payload.
        payload: Bytes,
    },
    /// PUBACK with a result (v3.1.1 carries no code).
    PubAck {
        /// Packet identifier.
        pkid: u16,
        /// Result.
        code: AckCode,
        /// v5 reason string.
        reason: Option<String>,
    },
    /// SUBACK.
    SubAck {
        /// Packet identifier.
        pkid: u16,
        /// One result per filter.
        codes: Vec<SubCode>,
    },
    /// UNSUBACK for `count` filters.
    UnsubAck {
        /// Packet identifier.
        pkid: u16,
        /// Filters in the UNSUBSCRIBE.
        count: usize,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (v5 only; nothing is written for v3.1.1).
    Disconnect {
        /// Reason.
        code: CloseCode,
        /// Reason string.
        reason: String,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed.
    #[error("incomplete packet")]
    Incomplete,
    /// The packet is larger than the limit.
    #[error("packet of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The first packet is not a CONNECT.
    #[error("the first packet is not CONNECT")]
    NotConnect,
    /// The CONNECT names a protocol other than MQTT 3.1.1 or 5.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedVersion {
        /// Protocol name.
        name: String,
        /// Protocol level.
        level: u8,
    },
    /// The bytes are not a valid packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// The remaining length and the size of the fixed header, if the buffer holds them.
fn fixed_header(buf: &[u8]) -> Result<(usize, usize), DecodeError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(byte) = buf.get(1 + i) else {
            return Err(DecodeError::Incomplete);
        };
        len |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((len, 2 + i));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length over 4 bytes".into(),
    ))
}

/// Whether the buffer holds a whole frame within `limit` (checks the size before decoding).
fn check_frame(buf: &[u8], limit: usize) -> Result<(), DecodeError> {
    let (remaining, header) = fixed_header(buf)?;
    if remaining > limit {
        return Err(DecodeError::TooLarge {
            size: remaining,
            limit,
        });
    }
    if buf.len() < header + remaining {
        return Err(DecodeError::Incomplete);
    }
    Ok(())
}

/// Read the first packet, which must be CONNECT, picking the version from its protocol level.
pub fn read_connect(buf: &mut BytesMut, limit: usize) -> Result<ConnectInfo, DecodeError> {
    if buf.first().is_some_and(|b| b >> 4 != 1) {
        return Err(DecodeError::NotConnect);
    }
    check_frame(buf, limit)?;
    let (_, header) = fixed_header(buf)?;
    let body = &buf[header..];
    let name_len = body
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| malformed("CONNECT too short"))?;
    let name = body
        .get(2..2 + name_len)
        .ok_or_else(|| malformed("CONNECT too short"))?;
    let level = *body
        .get(2 + name_len)
        .ok_or_else(|| malformed("CONNECT too short"))?;
    match (name, level) {
        (b"MQTT", 4) => match v4::Packet::read(buf, limit).map_err(malformed)? {
            v4::Packet::Connect(c) => Ok(ConnectInfo {
                version: Version::V4,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                clean: c.clean_session,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos as u8,
                }),
                session_expiry: None,
                receive_maximum: None,
                maximum_packet_size: None,
            }),
            _ => Err(DecodeError::NotConnect),
        },
        (b"MQTT", 5) => match v5::Packet::read(buf, Some(limit as u32)).map_err(malformed)? {
            v5::Packet::Connect(c, will, login) => {
                let will = match will {
                    Some(w) => Some(Will {
                        topic: String::from_utf8(w.topic.to_vec())
                            .map_err(|_| malformed("will topic is not UTF-8"))?,
                        payload: w.message,
                        qos: w.qos as u8,
                    }),
                    None => None,
                };
                let properties = c.properties.unwrap_or_else(v5::ConnectProperties::new);
                Ok(ConnectInfo {
                    version: Version::V5,
                    client_id: c.client_id,
                    keep_alive: c.keep_alive,
                    clean: c.clean_start,
                    username: login.as_ref().map(|l| l.username.clone()),
                    password: login.map(|l| l.password),
                    will,
                    session_expiry: properties.session_expiry_interval,
                    receive_maximum: properties.receive_maximum,
                    maximum_packet_size: properties.max_packet_size,
                })
            }
            _ => Err(DecodeError::NotConnect),
        },
        _ => Err(DecodeError::UnsupportedVersion {
            name: shown_protocol_name(name),
            level,
        }),
    }
}

/// A protocol name as the error shows it: at most the six bytes of the longest name MQTT
/// has used (`MQIsdp`). A wrong name length would otherwise run on into the client id, the
/// user name and the password, and the error is logged.
fn shown_protocol_name(name: &[u8]) -> String {
    const LONGEST: usize = 6;
    let shown = String::from_utf8_lossy(&name[..name.len().min(LONGEST)]).into_owned();
    if name.len() > LONGEST {
        format!("{shown}…")
    } else {
        shown
    }
}

/// Read the next packet after CONNECT.
pub fn read(version: Version, buf: &mut BytesMut, limit: usize) -> Result<Incoming, DecodeError> {
    check_frame(buf, limit)?;
    // An MQTT 5 DISCONNECT may leave out its reason code (remaining length 0: normal
    // disconnection, what clients send to end a session cleanly) or its properties
    // (remaining length 1); the decoder takes neither.
    if version == Version::V5 {
        let short = match buf.get(..2) {
            Some([0xe0, 0x00]) => Some(0x00),
            Some([0xe0, 0x01]) => buf.get(2).copied(),
            _ => None,
        };
        if let Some(reason) = short {
            let _ = buf.split_to(2 + usize::from(buf[1]));
            return Ok(Incoming::Disconnect {
                with_will: reason == v5::DisconnectReasonCode::DisconnectWithWillMessage as u8,
            });
        }
    }
    match version {
        Version::V4 => Ok(match v4::Packet::read(buf, limit).map_err(malformed)? {
            v4::Packet::Publish(p) => Incoming::Publish {
                topic: p.topic,
                pkid: p.pkid,
                qos: p.qos as u8,
                payload: p.payload,
            },
            v4::Packet::PubAck(a) => Incoming::PubAck { pkid: a.pkid },
            v4::Packet::Subscribe(s) => Incoming::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, f.qos as u8))
                    .collect(),
            },
            v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            v4::Packet::PingReq => Incoming::PingReq,
            v4::Packet::Disconnect => Incoming::Disconnect { with_will: false },
            v4::Packet::Connect(_) => Incoming::Unexpected("a second CONNECT"),
            v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => {
                Incoming::Unexpected("a QoS 2 flow")
            }
            _ => Incoming::Unexpected("a packet only servers send"),
        }),
        Version::V5 => Ok(
            match v5::Packet::read(buf, Some(limit as u32)).map_err(malformed)? {
                v5::Packet::Publish(p) => Incoming::Publish {
                    topic: String::from_utf8(p.topic.to_vec())
                        .map_err(|_| malformed("topic is not UTF-8"))?,
                    pkid: p.pkid,
                    qos: p.qos as u8,
                    payload: p.payload,
                },
                v5::Packet::PubAck(a) => Incoming::PubAck { pkid: a.pkid },
                v5::Packet::Subscribe(s) => Incoming::Subscribe {
                    pkid: s.pkid,
                    filters: s
                        .filters
                        .into_iter()
                        .map(|f| (f.path, f.qos as u8))
                        .collect(),
                },
                v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                    pkid: u.pkid,
                    filters: u.filters,
                },
                v5::Packet::PingReq(_) => Incoming::PingReq,
                v5::Packet::Disconnect(d) => Incoming::Disconnect {
                    with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
                },
                v5::Packet::Connect(..) => Incoming::Unexpected("a second CONNECT"),
                v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => {
                    Incoming::Unexpected("a QoS 2 flow")
                }
                v5::Packet::Auth(_) => Incoming::Unexpected("AUTH (no enhanced authentication)"),
                _ => Incoming::Unexpected("a packet only servers send"),
            },
        ),
    }
}

fn v4_qos(qos: u8) -> rumqttc::mqttbytes::QoS {
    match qos {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        _ => rumqttc::mqttbytes::QoS::AtLeastOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        _ => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Append `packet` to `buf` in `version`'s encoding. v3.1.1 has no DISCONNECT from a server: the
/// caller closes the socket.
pub fn write(version: Version, packet: Outgoing, buf: &mut BytesMut) -> Result<(), String> {
    let e = |e: rumqttc::mqttbytes::Error| e.to_string();
    let e5 = |e: rumqttc::v5::mqttbytes::Error| e.to_string();
    match version {
        Version::V4 => {
            let packet = match packet {
                Outgoing::ConnAck {
                    code,
                    session_present,
                    ..
                } => v4::Packet::ConnAck(v4::ConnAck::new(
                    match code {
                        ConnectCode::Success => v4::ConnectReturnCode::Success,
                        ConnectCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                        ConnectCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                        ConnectCode::UnsupportedVersion => {
                            v4::ConnectReturnCode::RefusedProtocolVersion
                        }
                        ConnectCode::Malformed | ConnectCode::Unavailable => {
                            v4::ConnectReturnCode::ServiceUnavailable
                        }
                    },
                    session_present,
                )),
                Outgoing::Publish {
                    topic,
                    pkid,
                    qos,
                    payload,
                } => {
                    let mut p = v4::Publish::from_bytes(topic, v4_qos(qos), payload);
                    p.pkid = pkid;
                    v4::Packet::Publish(p)
                }
                Outgoing::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
                Outgoing::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
                    pkid,
                    codes
                        .into_iter()
                        .map(|c| match c {
                            SubCode::Granted(q) => v4::SubscribeReasonCode::Success(v4_qos(q)),
                            _ => v4::SubscribeReasonCode::Failure,
                        })
                        .collect(),
                )),
                Outgoing::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
                Outgoing::PingResp => v4::Packet::PingResp,
                Outgoing::Disconnect { .. } => return Ok(()),
            };
            packet.write(buf, usize::MAX).map(|_| ()).map_err(e)
        }
        Version::V5 => {
            let packet = match packet {
                Outgoing::ConnAck {
                    code,
                    session_present,
                    reason,
                    receive_maximum,
                    maximum_packet_size,
                } => v5::Packet::ConnAck(v5::ConnAck {
                    session_present,
                    code: match code {
                        ConnectCode::Success => v5::ConnectReturnCode::Success,
                        ConnectCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                        ConnectCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                        ConnectCode::UnsupportedVersion => {
                            v5::ConnectReturnCode::UnsupportedProtocolVersion
                        }
                        ConnectCode::Malformed => v5::ConnectReturnCode::MalformedPacket,
                        ConnectCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
                    },
                    properties: Some(v5::ConnAckProperties {
                        session_expiry_interval: None,
                        receive_max: Some(receive_maximum),
                        max_qos: Some(1),
                        retain_available: Some(0),
                        max_packet_size: Some(maximum_packet_size),
                        assigned_client_identifier: None,
                        topic_alias_max: None,
                        reason_string: reason,
                        user_properties: Vec::new(),
                        wildcard_subscription_available: Some(1),
                        subscription_identifiers_available: Some(0),
                        shared_subscription_available: Some(0),
                        server_keep_alive: None,
                        response_information: None,
                        server_reference: None,
                        authentication_method: None,
                        authentication_data: None,
                    }),
                }),
                Outgoing::Publish {
                    topic,
                    pkid,
                    qos,
                    payload,
                } => {
                    let mut p = v5::Publish::new(topic, v5_qos(qos), payload, None);
                    p.pkid = pkid;
                    v5::Packet::Publish(p)
                }
                Outgoing::PubAck { pkid, code, reason } => {
                    let mut ack = v5::PubAck::new(
                        pkid,
                        reason.map(|r| v5::PubAckProperties {
                            reason_string: Some(r),
                            user_properties: Vec::new(),
                        }),
                    );
                    ack.reason = match code {
                        AckCode::Success => v5::PubAckReason::Success,
                        AckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
                        AckCode::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
                        AckCode::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
                    };
                    v5::Packet::PubAck(ack)
                }
                Outgoing::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes
                        .into_iter()
                        .map(|c| match c {
                            SubCode::Granted(q) => v5::SubscribeReasonCode::Success(v5_qos(q)),
                            SubCode::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                            SubCode::InvalidFilter => v5::SubscribeReasonCode::TopicFilterInvalid,
                            SubCode::QuotaExceeded => v5::SubscribeReasonCode::QuotaExceeded,
                        })
                        .collect(),
                    properties: None,
                }),
                Outgoing::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                }),
                Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
                Outgoing::Disconnect { code, reason } => v5::Packet::Disconnect(v5::Disconnect {
                    reason_code: match code {
                        CloseCode::Malformed => v5::DisconnectReasonCode::MalformedPacket,
                        CloseCode::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
                        CloseCode::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
                        CloseCode::ShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
                        CloseCode::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
                        CloseCode::SessionTakenOver => v5::DisconnectReasonCode::SessionTakenOver,
                        CloseCode::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
                        CloseCode::QuotaExceeded => v5::DisconnectReasonCode::QuotaExceeded,
                        CloseCode::AdministrativeAction => {
                            v5::DisconnectReasonCode::AdministrativeAction
                        }
                        CloseCode::QosNotSupported => v5::DisconnectReasonCode::QoSNotSupported,
                    },
                    properties: Some(v5::DisconnectProperties {
                        session_expiry_interval: None,
                        reason_string: Some(reason),
                        user_properties: Vec::new(),
                        server_reference: None,
                    }),
                }),
            };
            packet.write(buf, None).map(|_| ()).map_err(e5)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_v4(packet: v4::Packet) -> BytesMut {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, usize::MAX).expect("encode");
        buf
    }

    #[test]
    fn a_v311_connect_is_read_with_its_login_and_will() {
        let mut connect = v4::Connect::new("client-1");
        connect.set_login("home/thermo", "pw");
        connect.keep_alive = 30;
        connect.last_will = Some(v4::LastWill::new(
            "d/home/thermo/telemetry",
            "bye",
            rumqttc::mqttbytes::QoS::AtLeastOnce,
            false,
        ));
        let mut buf = encode_v4(v4::Packet::Connect(connect));
        let info = read_connect(&mut buf, 1024).expect("connect");
        assert_eq!(info.version, Version::V4);
        assert_eq!(info.username.as_deref(), Some("home/thermo"));
        assert_eq!(info.password.as_deref(), Some("pw"));
        assert_eq!(info.keep_alive, 30);
        assert_eq!(info.will.expect("will").topic, "d/home/thermo/telemetry");
        assert!(buf.is_empty(), "the frame is consumed");
    }

    #[test]
    fn a_partial_frame_asks_for_more_and_an_oversize_one_is_refused_before_reading() {
        let whole = encode_v4(v4::Packet::Publish(v4::Publish::new(
            "d/a/b/telemetry",
            rumqttc::mqttbytes::QoS::AtMostOnce,
            vec![b'x'; 100],
        )));
        let mut part = BytesMut::from(&whole[..10]);
        assert!(matches!(
            read(Version::V4, &mut part, 1024),
            Err(DecodeError::Incomplete)
        ));
        let mut full = whole.clone();
        assert!(matches!(
            read(Version::V4, &mut full, 50),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn mqtt_3_1_and_garbage_are_refused_as_such() {
        // MQTT 3.1: protocol name "MQIsdp", level 3.
        let mut v3 = BytesMut::from(
            &[
                0x10, 0x12, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0x00, 0x3c,
                0x00, 0x04, b'a', b'b', b'c', b'd',
            ][..],
        );
        assert!(matches!(
            read_connect(&mut v3, 1024),
            Err(DecodeError::UnsupportedVersion { level: 3, .. })
        ));
        let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            read_connect(&mut garbage, 1024),
            Err(DecodeError::NotConnect)
        ));
    }

    #[test]
    fn a_wrong_protocol_name_length_does_not_show_the_password() {
        let mut connect = v4::Connect::new("client-1");
        connect.set_login("home/thermo", "s3cret-pass");
        let mut buf = encode_v4(v4::Packet::Connect(connect));
        // The name's length (bytes 2 and 3 of the body) now covers the rest of the packet.
        let body_len = buf.len() - 2;
        buf[2..4].copy_from_slice(&((body_len - 3) as u16).to_be_bytes());
        let error = read_connect(&mut buf, 1024).expect_err("refused");
        assert!(
            matches!(error, DecodeError::UnsupportedVersion { .. }),
            "{error}"
        );
        let shown = error.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("thermo"), "{shown}");
        assert!(shown.starts_with("unsupported protocol \"MQTT"), "{shown}");
    }

    #[test]
    fn an_empty_v5_disconnect_is_a_normal_disconnection() {
        let mut buf = BytesMut::from(&[0xe0, 0x00, 0xc0, 0x00][..]);
        assert!(matches!(
            read(Version::V5, &mut buf, 1024),
            Ok(Incoming::Disconnect { with_will: false })
        ));
        assert!(
            matches!(read(Version::V5, &mut buf, 1024), Ok(Incoming::PingReq)),
            "only the DISCONNECT was consumed"
        );
        let mut with_will = BytesMut::from(&[0xe0, 0x01, 0x04][..]);
        assert!(matches!(
            read(Version::V5, &mut with_will, 1024),
            Ok(Incoming::Disconnect { with_will: true })
        ));
    }

    #[test]
    fn a_v5_puback_carries_its_reason_code_and_string() {
        let mut buf = BytesMut::new();
        write(
            Version::V5,
            Outgoing::PubAck {
                pkid: 7,
                code: AckCode::PayloadFormatInvalid,
                reason: Some("InvalidValue at points.t".into()),
            },
            &mut buf,
        )
        .expect("encode");
        match v5::Packet::read(&mut buf, None).expect("decode") {
            v5::Packet::PubAck(ack) => {
                assert_eq!(ack.pkid, 7);
                assert_eq!(ack.reason, v5::PubAckReason::PayloadFormatInvalid);
                assert_eq!(
                    ack.properties.and_then(|p| p.reason_string).as_deref(),
                    Some("InvalidValue at points.t")
                );
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}
