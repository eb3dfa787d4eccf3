//! What an established session lets through to webrtc-dtls: records that decrypt under the
//! session's keys, and the plain records of a retransmitted handshake flight.
//!
//! webrtc-dtls ends a PSK session with a fatal alert when a record of its epoch fails to
//! decrypt, and ends any session on a plain (epoch 0) alert or a plain application-data
//! record. RFC 6347 §4.1.2.7 asks for invalid records to be dropped silently: anyone who can
//! send from the device's address and port could otherwise end its session with one datagram.
//! So once the handshake is done, each record is checked here with a second copy of the
//! session's cipher, made from the keys the library exports, before the library reads it.

use std::borrow::Cow;

use serde::Deserialize;
use webrtc_dtls::cipher_suite::{CipherSuite, CipherSuiteId, cipher_suite_for_id};
use webrtc_dtls::conn::DTLSConn;

use super::demux::{ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, RECORD_HEADER};

/// The epoch of an established session's records: webrtc-dtls does not renegotiate (a new
/// handshake is a new session).
const SESSION_EPOCH: u16 = 1;

/// The leading fields of webrtc-dtls's serialized connection state (`State::marshal_binary`,
/// bincode), in its order; the fields after the master secret are not needed.
#[derive(Deserialize)]
struct ExportedState {
    _local_epoch: u16,
    _remote_epoch: u16,
    local_random: [u8; 32],
    remote_random: [u8; 32],
    cipher_suite_id: u16,
    master_secret: Vec<u8>,
}

/// Bytes of the explicit nonce before an AEAD record's ciphertext.
const EXPLICIT_NONCE: usize = 8;

/// Client handshake messages a retransmitted last flight carries in plain records: Certificate,
/// CertificateVerify and ClientKeyExchange (a ClientHello opens a handshake of its own).
const FLIGHT_MESSAGES: [u8; 3] = [11, 15, 16];

/// Handshake message sequence numbers a client's last flight stays below.
const FLIGHT_SEQUENCE: u16 = 8;

/// Record sequence numbers a client's plain (epoch 0) records stay below: its ClientHellos,
/// key exchange and ChangeCipherSpec, with their retransmissions, number a few dozen at most.
/// The library moves its epoch-0 replay window (64 records) to the highest number it reads, so
/// a forged plain record numbered far ahead would make it drop the client's genuine
/// retransmissions as replays.
const PLAIN_SEQUENCES: u64 = 64;

/// A handshake message header: type, length (3 bytes), message sequence (2), fragment offset
/// (3), fragment length (3).
const HANDSHAKE_HEADER: usize = 12;

/// Checks the records of an established server session.
pub(super) struct RecordGuard {
    cipher: Box<dyn CipherSuite + Send + Sync>,
    /// Bytes of the shortest record of the session's epoch: header, explicit nonce and tag.
    /// The library's decryption assumes this much.
    shortest: usize,
}

impl RecordGuard {
    /// The guard of a server session whose handshake is done.
    pub(super) async fn of(conn: &DTLSConn) -> Result<RecordGuard, String> {
        let exported = conn
            .connection_state()
            .await
            .marshal_binary()
            .await
            .map_err(|e| format!("cannot export the session's state: {e}"))?;
        let state: ExportedState = bincode::deserialize(&exported)
            .map_err(|e| format!("cannot read the session's exported state: {e}"))?;
        // The server's randoms are the local ones.
        RecordGuard::new(
            CipherSuiteId::from(state.cipher_suite_id),
            &state.master_secret,
            &state.remote_random,
            &state.local_random,
        )
    }

    pub(super) fn new(
        suite: CipherSuiteId,
        master_secret: &[u8],
        client_random: &[u8],
        server_random: &[u8],
    ) -> Result<RecordGuard, String> {
        let mut cipher = cipher_suite_for_id(suite)
            .map_err(|e| format!("the session's cipher suite {suite}: {e}"))?;
        cipher
            .init(master_secret, client_random, server_random, false)
            .map_err(|e| format!("cannot derive the session's keys: {e}"))?;
        let tag = match suite {
            CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8
            | CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm_8 => 8,
            _ => 16,
        };
        Ok(RecordGuard {
            cipher,
            shortest: RECORD_HEADER + EXPLICIT_NONCE + tag,
        })
    }

    /// The records of `datagram` the session may read, or `None` when there are none. A
    /// record of the session's epoch must decrypt. Of epoch 0 only the plain records of a
    /// client's retransmitted last flight pass (its Finished is of the session's epoch, and
    /// checked): a ChangeCipherSpec, and whole handshake messages of the kinds that flight
    /// holds. Anything else is dropped, as is a cut record and whatever follows it.
    pub(super) fn admit<'d>(&self, datagram: &'d [u8]) -> Option<Cow<'d, [u8]>> {
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut all = true;
        let mut rest = datagram;
        while !rest.is_empty() {
            let Some(record) = next_record(rest) else {
                all = false;
                break;
            };
            rest = &rest[record.len()..];
            if self.passes(record) {
                kept.push(record);
            } else {
                all = false;
            }
        }
        match kept.as_slice() {
            [] => None,
            _ if all => Some(Cow::Borrowed(datagram)),
            [one] => Some(Cow::Borrowed(one)),
            many => Some(Cow::Owned(many.concat())),
        }
    }

    fn passes(&self, record: &[u8]) -> bool {
        let body = &record[RECORD_HEADER..];
        let plain_in_range = || sequence_number(record) < PLAIN_SEQUENCES;
        match (record[0], u16::from_be_bytes([record[3], record[4]])) {
            // The library ends the session on a ChangeCipherSpec it cannot read.
            (CHANGE_CIPHER_SPEC, 0) => body == [1] && plain_in_range(),
            (HANDSHAKE, 0) => is_flight_message(body) && plain_in_range(),
            (APPLICATION_DATA | ALERT | HANDSHAKE, SESSION_EPOCH) => {
                record.len() >= self.shortest && self.cipher.decrypt(record).is_ok()
            }
            _ => false,
        }
    }
}

/// Whether a plain handshake record holds one whole message of a client's last flight. Parts
/// of messages would wait in the library's fragment buffer, and a ClientHello or a later
/// message has no place in an established session.
fn is_flight_message(body: &[u8]) -> bool {
    let Some(header) = body.get(..HANDSHAKE_HEADER) else {
        return false;
    };
    let length = |at: usize| {
        usize::from(header[at]) << 16
            | usize::from(header[at + 1]) << 8
            | usize::from(header[at + 2])
    };
    let whole = body.len() - HANDSHAKE_HEADER;
    FLIGHT_MESSAGES.contains(&header[0])
        && u16::from_be_bytes([header[4], header[5]]) < FLIGHT_SEQUENCE
        && length(6) == 0
        && length(1) == whole
        && length(9) == whole
}

/// A record's sequence number (48 bits, after its type, version and epoch).
fn sequence_number(record: &[u8]) -> u64 {
    record[5..11]
        .iter()
        .fold(0, |number, byte| number << 8 | u64::from(*byte))
}

/// The whole record `data` starts with, if it holds one.
fn next_record(data: &[u8]) -> Option<&[u8]> {
    let header = data.get(..RECORD_HEADER)?;
    let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
    data.get(..RECORD_HEADER + length)
}

#[cfg(test)]
mod tests {
    use webrtc_dtls::content::ContentType;
    use webrtc_dtls::record_layer::record_layer_header::{PROTOCOL_VERSION1_2, RecordLayerHeader};

    use super::*;

    const SUITE: CipherSuiteId = CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8;

    fn header(
        content: ContentType,
        epoch: u16,
        sequence_number: u64,
        len: usize,
    ) -> RecordLayerHeader {
        RecordLayerHeader {
            content_type: content,
            protocol_version: PROTOCOL_VERSION1_2,
            epoch,
            sequence_number,
            content_len: u16::try_from(len).expect("short"),
        }
    }

    /// A record the client sends: the header, then `body` encrypted under `client`.
    fn sealed(
        client: &dyn CipherSuite,
        content: ContentType,
        sequence: u64,
        body: &[u8],
    ) -> Vec<u8> {
        let header = header(content, SESSION_EPOCH, sequence, body.len());
        let mut plain = Vec::new();
        {
            let mut writer = std::io::BufWriter::new(&mut plain);
            header.marshal(&mut writer).expect("header");
        }
        plain.extend(body);
        client.encrypt(&header, &plain).expect("encrypt")
    }

    /// A handshake message of `kind` and `sequence`, `length` bytes long, of which the record
    /// holds `part` bytes from `offset`.
    fn handshake(kind: u8, sequence: u16, length: u32, offset: u32, part: u32) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend(&length.to_be_bytes()[1..]);
        message.extend(sequence.to_be_bytes());
        message.extend(&offset.to_be_bytes()[1..]);
        message.extend(&part.to_be_bytes()[1..]);
        message.extend(vec![7u8; part as usize]);
        message
    }

    fn plain(content: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        numbered(content, epoch, 9, body)
    }

    fn numbered(content: u8, epoch: u16, sequence: u64, body: &[u8]) -> Vec<u8> {
        let mut record = vec![content, 0xfe, 0xfd];
        record.extend(epoch.to_be_bytes());
        record.extend(&sequence.to_be_bytes()[2..]);
        record.extend(u16::try_from(body.len()).expect("short").to_be_bytes());
        record.extend(body);
        record
    }

    #[test]
    fn only_records_sealed_with_the_session_s_keys_and_plain_handshake_records_pass() {
        let (master, client_random, server_random) = ([5u8; 48], [1u8; 32], [2u8; 32]);
        let guard =
            RecordGuard::new(SUITE, &master, &client_random, &server_random).expect("guard");
        let mut client = cipher_suite_for_id(SUITE).expect("suite");
        client
            .init(&master, &client_random, &server_random, true)
            .expect("client keys");
        let mut stranger = cipher_suite_for_id(SUITE).expect("suite");
        stranger
            .init(&[6u8; 48], &client_random, &server_random, true)
            .expect("other keys");

        let data = sealed(client.as_ref(), ContentType::ApplicationData, 7, b"coap");
        let alert = sealed(client.as_ref(), ContentType::Alert, 8, &[1, 0]);
        assert_eq!(guard.admit(&data).as_deref(), Some(&data[..]));
        assert_eq!(guard.admit(&alert).as_deref(), Some(&alert[..]));

        let forged = sealed(stranger.as_ref(), ContentType::ApplicationData, 9, b"coap");
        let mut flipped = data.clone();
        *flipped.last_mut().expect("a tag") ^= 1;
        for (what, record) in [
            ("another key's record", forged.clone()),
            ("a changed tag", flipped),
            ("a plain alert", plain(21, 0, &[2, 40])),
            ("plain application data", plain(23, 0, b"coap")),
            ("a later epoch", plain(23, 2, &[0; 24])),
            ("a cut record", data[..data.len() - 1].to_vec()),
            ("a cut header", data[..5].to_vec()),
            (
                "a record too short for a nonce and a tag",
                plain(23, 1, &[0; 11]),
            ),
            (
                "a ChangeCipherSpec the library cannot read",
                plain(20, 0, &[2]),
            ),
            ("a ClientHello", plain(22, 0, &handshake(1, 0, 4, 0, 4))),
            (
                "a Finished in plain",
                plain(22, 0, &handshake(20, 3, 12, 0, 12)),
            ),
            (
                "part of a key exchange",
                plain(22, 0, &handshake(16, 2, 40, 0, 4)),
            ),
            (
                "a later part of one",
                plain(22, 0, &handshake(16, 2, 8, 4, 4)),
            ),
            (
                "a message far ahead",
                plain(22, 0, &handshake(16, 900, 4, 0, 4)),
            ),
            (
                "a ChangeCipherSpec numbered far ahead",
                numbered(20, 0, 1 << 40, &[1]),
            ),
            (
                "a key exchange numbered far ahead",
                numbered(22, 0, 64, &handshake(16, 2, 4, 0, 4)),
            ),
        ] {
            assert_eq!(guard.admit(&record), None, "{what}");
        }

        // A retransmitted last flight keeps its plain records.
        let change_cipher_spec = numbered(20, 0, 63, &[1]);
        let key_exchange = plain(22, 0, &handshake(16, 2, 4, 0, 4));
        let flight = [key_exchange, change_cipher_spec].concat();
        assert_eq!(guard.admit(&flight).as_deref(), Some(&flight[..]));

        // Of a datagram that mixes them, the forged records go and the rest stay in order.
        let mixed = [
            data.clone(),
            forged.clone(),
            alert.clone(),
            plain(21, 0, &[2, 40]),
        ]
        .concat();
        assert_eq!(
            guard.admit(&mixed).as_deref(),
            Some(&[data.clone(), alert][..].concat()[..])
        );
        let one = [forged, data.clone()].concat();
        assert_eq!(guard.admit(&one).as_deref(), Some(&data[..]));
    }
}
