//! The CoAP endpoint without a socket: datagrams in, datagrams out, over a registry fed from
//! YAML fixtures.

use std::collections::BTreeMap;

use coap_lite::{CoapOption, MessageClass, RequestType};
use devplane_api::v1alpha1::{Device, DeviceModel};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::exchange::Observed;
use super::*;

const MODEL: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: probe, namespace: plant}
spec:
  version: 1.0.0
  attributes:
    - identifier: interval
      dataType: {type: int, min: 10, max: 600}
      writable: true
  measurePoints:
    - identifier: temperature
      dataType: {type: double, min: -40, max: 85}
"#;

fn device(name: &str, lifecycle: &str) -> Device {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {{name: {name}, namespace: plant, uid: u-{name}, generation: 1}}
spec:
  modelRef: {{name: probe}}
  lifecycle: {lifecycle}
  desired: {{interval: 60}}
status: {{phase: Servicing}}
"#
    ))
    .expect("device yaml")
}

fn secret(name: &str, password: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(format!("{name}-credentials"));
    s.metadata.namespace = Some("plant".into());
    s.metadata.labels = Some(BTreeMap::from([(
        devplane_api::constants::labels::DEVICE.to_string(),
        name.to_string(),
    )]));
    s.data = Some(BTreeMap::from([(
        "password".to_string(),
        ByteString(password.as_bytes().to_vec()),
    )]));
    s
}

struct Fixture {
    shared: Arc<Shared>,
    ingest: tokio::sync::mpsc::Receiver<ingest::Accepted>,
    endpoint: Arc<Endpoint>,
    peer: SocketAddr,
    device: std::net::UdpSocket,
}

/// A front door with devices `a` (Servicing) and `b` (Decommissioned), and one peer: a DTLS
/// session of `a` (or a plain peer, with `secure = false`).
fn fixture(secure: bool) -> Fixture {
    let (shared, ingest) = crate::test_shared();
    {
        let mut registry = shared.registry.write();
        registry.keep_device_keys();
        let model: DeviceModel = serde_yaml::from_str(MODEL).expect("model yaml");
        registry.apply_model(&model);
        registry.apply_device(&device("a", "Servicing"));
        registry.apply_device(&device("b", "Decommissioned"));
        registry.apply_secret(&secret("a", "key-a"));
    }
    let endpoint = Endpoint::new();
    // The peer is a socket of the test's, which receives what the endpoint sends on its own
    // (separate responses, notifications).
    let device = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    device
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let peer = device.local_addr().expect("addr");
    let principal = if secure {
        let tag = shared.registry.read().tag(b"key-a");
        Principal::Device {
            id: Identity::new("plant", "a"),
            tag,
        }
    } else {
        Principal::Insecure
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    let link = Link::Plain(Arc::new(UdpSocket::from_std(socket).expect("tokio socket")));
    endpoint.peers.lock().insert(
        peer,
        // A DTLS session can be ended; a plain peer cannot.
        Endpoint::new_peer(
            &shared,
            link,
            principal,
            secure.then(CancellationToken::new),
            1,
        ),
    );
    Fixture {
        shared,
        ingest,
        endpoint,
        peer,
        device,
    }
}

fn request(kind: MessageType, method: RequestType, id: u16, path: &str, payload: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(kind);
    packet.header.message_id = id;
    packet.header.code = MessageClass::Request(method);
    packet.set_token(vec![0xab, (id & 0xff) as u8]);
    for segment in path.split('/') {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.payload = payload.to_vec();
    packet
}

fn post(id: u16, path: &str, payload: &[u8]) -> Vec<u8> {
    request(
        MessageType::Confirmable,
        RequestType::Post,
        id,
        path,
        payload,
    )
    .to_bytes_unlimited()
    .expect("encodes")
}

impl Fixture {
    async fn send(&self, datagram: &[u8]) -> Vec<Packet> {
        self.endpoint
            .datagram(&self.shared, self.peer, datagram)
            .await
            .iter()
            .map(|b| Packet::from_bytes(b).expect("the answer decodes"))
            .collect()
    }

    async fn one(&self, datagram: &[u8]) -> Packet {
        let mut answers = self.send(datagram).await;
        assert_eq!(answers.len(), 1, "one answer");
        answers.remove(0)
    }
}

fn code(packet: &Packet) -> String {
    packet.header.code.to_string()
}

fn reason(packet: &Packet) -> String {
    let body: serde_json::Value = serde_json::from_slice(&packet.payload).expect("JSON");
    body["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn valid_telemetry_is_acknowledged_piggybacked_once_ingest_took_it() {
    let mut f = fixture(true);
    let answer = f
        .one(&post(
            1,
            "d/plant/a/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(answer.header.message_id, 1);
    assert_eq!(answer.get_token(), &[0xab, 1]);
    assert_eq!(code(&answer), "2.04");
    let accepted = f.ingest.try_recv().expect("ingest has it");
    assert_eq!(accepted.kind, "telemetry");
}

#[tokio::test]
async fn an_invalid_value_gets_4_00_with_the_reason_and_nothing_reaches_ingest() {
    let mut f = fixture(true);
    let answer = f
        .one(&post(
            2,
            "d/plant/a/telemetry",
            br#"{"points":{"temperature":900}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "4.00");
    assert_eq!(reason(&answer), "InvalidValue");
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).expect("JSON");
    assert_eq!(body["field"], "points.temperature");
    assert!(f.ingest.try_recv().is_err());
    assert_eq!(f.shared.metrics.rejected.get("InvalidValue"), 1);
}

#[tokio::test]
async fn a_device_acting_for_another_gets_4_03_and_the_denial_is_counted() {
    let mut f = fixture(true);
    let answer = f
        .one(&post(
            3,
            "d/plant/b/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "4.03");
    assert_eq!(reason(&answer), "ForeignTopic");
    assert_eq!(f.shared.metrics.denied.get("ForeignTopic"), 1);
    assert!(f.ingest.try_recv().is_err());
}

#[tokio::test]
async fn a_session_whose_key_was_revoked_gets_4_01_and_ends() {
    let f = fixture(true);
    f.shared
        .registry
        .write()
        .delete_secret("plant", "a-credentials");
    let answer = f
        .one(&post(
            4,
            "d/plant/a/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "4.01");
    assert_eq!(reason(&answer), "BadCredentials");
    let kill = f.endpoint.peers.lock()[&f.peer].kill.clone().expect("kill");
    assert!(kill.is_cancelled(), "the DTLS session is ended");
}

#[tokio::test]
async fn a_duplicate_confirmable_request_is_answered_again_and_ingested_once() {
    let mut f = fixture(true);
    let datagram = post(
        5,
        "d/plant/a/telemetry",
        br#"{"points":{"temperature":20}}"#,
    );
    let first = f.one(&datagram).await;
    let again = f.one(&datagram).await;
    assert_eq!(first, again);
    assert!(f.ingest.try_recv().is_ok());
    assert!(f.ingest.try_recv().is_err(), "ingested once");
}

#[tokio::test]
async fn a_non_confirmable_request_gets_a_non_confirmable_answer_and_duplicates_are_dropped() {
    let mut f = fixture(true);
    let datagram = request(
        MessageType::NonConfirmable,
        RequestType::Post,
        6,
        "d/plant/a/telemetry",
        br#"{"points":{"temperature":20}}"#,
    )
    .to_bytes()
    .expect("encodes");
    let answer = f.one(&datagram).await;
    assert_eq!(answer.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code(&answer), "2.04");
    assert!(
        f.send(&datagram).await.is_empty(),
        "the duplicate is dropped"
    );
    assert!(f.ingest.try_recv().is_ok());
    assert!(f.ingest.try_recv().is_err());
}

#[tokio::test]
async fn a_full_ingest_acknowledges_at_once_and_answers_5_03_with_max_age_later() {
    let f = fixture(true);
    // Fill ingest (nobody drains it in this test).
    while f
        .shared
        .ingest
        .try_send(ingest::Accepted {
            namespace: "plant".into(),
            kind: "telemetry",
            messages: Vec::new(),
            effect: None,
        })
        .is_ok()
    {}
    let answer = f
        .one(&post(
            7,
            "d/plant/a/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(
        code(&answer),
        "0.00",
        "an empty ACK: the answer comes separately"
    );
    let device = f.device.try_clone().expect("socket");
    let separate = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 2048];
        let n = device.recv(&mut buf).expect("a separate response");
        Packet::from_bytes(&buf[..n]).expect("decodes")
    })
    .await
    .expect("received");
    assert_eq!(separate.header.get_type(), MessageType::Confirmable);
    assert_eq!(separate.get_token(), &[0xab, 7]);
    assert_eq!(code(&separate), "5.03");
    assert_eq!(reason(&separate), "Busy");
    assert_eq!(
        separate.get_first_option(CoapOption::MaxAge),
        Some(&vec![1])
    );
    assert_eq!(
        f.endpoint.peers.lock()[&f.peer].exchange.in_flight(),
        1,
        "the separate response waits for its ACK"
    );
}

#[tokio::test]
async fn malformed_datagrams_are_rejected_or_ignored_as_the_rfc_says() {
    let f = fixture(false);
    assert!(f.send(&[0x40, 1]).await.is_empty(), "too short: ignored");
    assert!(
        f.send(&[0x80, 1, 0, 1]).await.is_empty(),
        "version 2: ignored"
    );
    // A confirmable request whose token is cut short: a reset.
    let reset = f.one(&[0x48, 2, 0, 9, 1, 2]).await;
    assert_eq!(reset.header.get_type(), MessageType::Reset);
    assert_eq!(reset.header.message_id, 9);
    // An option running past the end.
    let reset = f.one(&[0x40, 2, 0, 10, 0xbd, 5]).await;
    assert_eq!(reset.header.get_type(), MessageType::Reset);
    // A payload marker with no payload after it (here after Uri-Path "x"): a format error.
    let reset = f.one(&[0x40, 2, 0, 16, 0xb1, b'x', 0xff]).await;
    assert_eq!(reset.header.get_type(), MessageType::Reset);
    // A ping (empty CON) gets a reset too.
    let pong = f.one(&[0x40, 0, 0, 11]).await;
    assert_eq!(pong.header.get_type(), MessageType::Reset);
    // Oversize: 4.13 with Size1.
    let big = vec![b' '; 20 * 1024];
    let answer = f.one(&post(12, "d/plant/a/telemetry", &big)).await;
    assert_eq!(code(&answer), "4.13");
    assert!(answer.get_first_option(CoapOption::Size1).is_some());
    // A content format other than JSON.
    let mut packet = request(
        MessageType::Confirmable,
        RequestType::Post,
        13,
        "d/plant/a/telemetry",
        b"21.5",
    );
    packet.add_option(CoapOption::ContentFormat, vec![]);
    let answer = f.one(&packet.to_bytes().expect("encodes")).await;
    assert_eq!(code(&answer), "4.15");
    // An unknown critical option.
    let mut packet = request(
        MessageType::Confirmable,
        RequestType::Post,
        14,
        "d/plant/a/telemetry",
        b"{}",
    );
    packet.add_option(CoapOption::Unknown(2049), vec![1]);
    assert_eq!(
        code(&f.one(&packet.to_bytes().expect("encodes")).await),
        "4.02"
    );
    // Still serving.
    let answer = f
        .one(&post(
            15,
            "d/plant/a/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "2.04");
}

#[tokio::test]
async fn plain_coap_trusts_the_path_but_not_a_device_that_may_not_connect() {
    let f = fixture(false);
    let answer = f
        .one(&post(
            1,
            "d/plant/b/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "4.03");
    assert_eq!(reason(&answer), "NotAuthorized");
    let answer = f
        .one(&post(
            2,
            "d/plant/nobody/telemetry",
            br#"{"points":{"temperature":20}}"#,
        ))
        .await;
    assert_eq!(code(&answer), "4.04");
    let answer = f.one(&post(3, "d/plant/a/nothing", b"{}")).await;
    assert_eq!(code(&answer), "4.04");
}

#[tokio::test]
async fn desired_attributes_are_observed_and_a_change_is_notified() {
    let f = fixture(true);
    let mut get = request(
        MessageType::Confirmable,
        RequestType::Get,
        20,
        "d/plant/a/attributes/desired",
        b"",
    );
    get.add_option(CoapOption::Observe, vec![]);
    let answer = f.one(&get.to_bytes().expect("encodes")).await;
    assert_eq!(code(&answer), "2.05");
    assert!(answer.get_first_option(CoapOption::Observe).is_some());
    assert_eq!(
        answer.payload,
        br#"{"generation":1,"values":{"interval":60}}"#
    );
    // Nothing changed: nothing to notify.
    f.endpoint.notify_desired(&f.shared, None).await;
    assert_eq!(f.endpoint.peers.lock()[&f.peer].exchange.in_flight(), 0);
    let mut changed = device("a", "Servicing");
    changed.spec.desired.insert("interval".into(), json!(120));
    changed.metadata.generation = Some(2);
    f.shared.registry.write().apply_device(&changed);
    f.endpoint
        .notify_desired(&f.shared, Some(&Identity::new("plant", "a")))
        .await;
    let observers = f.endpoint.peers.lock()[&f.peer]
        .exchange
        .observers(Observed::Desired, None);
    assert_eq!(
        observers[0].last.as_ref(),
        br#"{"generation":2,"values":{"interval":120}}"#
    );
    assert_eq!(
        f.endpoint.peers.lock()[&f.peer].exchange.in_flight(),
        1,
        "the notification waits for its ACK"
    );
}

#[tokio::test]
async fn a_command_waits_while_its_observer_has_too_much_in_flight() {
    let f = fixture(true);
    let mut get = request(
        MessageType::Confirmable,
        RequestType::Get,
        40,
        "d/plant/a/commands",
        b"",
    );
    get.add_option(CoapOption::Observe, vec![]);
    assert_eq!(
        code(&f.one(&get.to_bytes().expect("encodes")).await),
        "2.05"
    );
    // The peer acknowledges nothing: its confirmable messages fill the window.
    let ids: Vec<u16> = {
        let mut peers = f.endpoint.peers.lock();
        let exchange = &mut peers.get_mut(&f.peer).expect("peer").exchange;
        (0..exchange::MAX_OUTSTANDING)
            .map(|_| {
                let id = exchange.next_message_id();
                assert!(exchange.expect_ack(id, Bytes::new(), None, false, Instant::now()));
                id
            })
            .collect()
    };
    let command = crate::commands::waiting_command("plant", "a", "c1", "u-c1");
    f.shared.commands.lock().apply(&command);
    let a = Identity::new("plant", "a");
    let waiting = || {
        f.shared
            .commands
            .lock()
            .deliverable(&a, jiff::Timestamp::now())
            .len()
    };
    f.endpoint.notify_commands(&f.shared).await;
    assert_eq!(
        waiting(),
        1,
        "not taken (nor marked Sent) while nothing can be sent"
    );
    // Room again: the next round sends it.
    f.endpoint
        .peers
        .lock()
        .get_mut(&f.peer)
        .expect("peer")
        .exchange
        .acknowledged(ids[0]);
    f.endpoint.notify_commands(&f.shared).await;
    assert_eq!(waiting(), 0, "sent");
    assert_eq!(
        f.endpoint.peers.lock()[&f.peer].exchange.in_flight(),
        exchange::MAX_OUTSTANDING
    );
}

#[tokio::test]
async fn the_bench_baseline_route_is_off_by_default() {
    let f = fixture(true);
    let answer = f.one(&post(30, "bench/baseline", b"x")).await;
    assert_eq!(code(&answer), "4.04");
}

#[tokio::test]
async fn the_sweep_ends_the_dtls_session_of_a_decommissioned_device() {
    let f = fixture(true);
    f.endpoint.tick(&f.shared, true).await;
    let kill = f.endpoint.peers.lock()[&f.peer].kill.clone().expect("kill");
    assert!(
        !kill.is_cancelled(),
        "a device in service keeps its session"
    );
    f.shared
        .registry
        .write()
        .apply_device(&device("a", "Decommissioned"));
    f.endpoint.tick(&f.shared, true).await;
    assert!(kill.is_cancelled(), "the session is ended");
}

#[tokio::test]
async fn an_idle_dtls_provisioning_session_is_kept_while_it_lasts() {
    let f = fixture(true);
    let Some(long_ago) = Instant::now().checked_sub(exchange::EXCHANGE_LIFETIME) else {
        return; // the clock starts at boot: too early to tell
    };
    {
        let mut peers = f.endpoint.peers.lock();
        let peer = peers.get_mut(&f.peer).expect("peer");
        peer.principal = Principal::Provisioning {
            policy: Identity::new("plant", "policy"),
            device_id: "new-device".into(),
            proof: String::new(),
        };
        peer.heard = long_ago;
    }
    f.endpoint.tick(&f.shared, true).await;
    assert_eq!(
        f.endpoint.peer_count(),
        1,
        "its requests are still answered until the session ends"
    );
}

#[tokio::test]
async fn idle_plain_peers_are_forgotten() {
    let f = fixture(false);
    f.endpoint.tick(&f.shared, true).await;
    assert_eq!(f.endpoint.peer_count(), 1, "heard just now");
    let Some(long_ago) = Instant::now().checked_sub(exchange::EXCHANGE_LIFETIME) else {
        return; // the clock starts at boot: too early to tell
    };
    f.endpoint
        .peers
        .lock()
        .get_mut(&f.peer)
        .expect("peer")
        .heard = long_ago;
    f.endpoint.tick(&f.shared, true).await;
    assert_eq!(f.endpoint.peer_count(), 0);
}

/// A webrtc-dtls client session of device `a` (key `key-a`) over `socket`.
async fn dtls_client(
    socket: Arc<dyn webrtc_util::conn::Conn + Send + Sync>,
) -> webrtc_dtls::conn::DTLSConn {
    let config = webrtc_dtls::config::Config {
        psk: Some(Arc::new(|_hint: &[u8]| Ok(b"key-a".to_vec()))),
        psk_identity_hint: Some(b"plant/a".to_vec()),
        cipher_suites: vec![webrtc_dtls::cipher_suite::CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
        ..Default::default()
    };
    webrtc_dtls::conn::DTLSConn::new(socket, config, true, None)
        .await
        .expect("handshake")
}

/// The fixture's front door serving DTLS on a socket of its own, and a device socket connected
/// to it; the token stops the server.
async fn dtls_server(f: &Fixture) -> (Arc<UdpSocket>, CancellationToken) {
    let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(dtls::serve(server, f.shared.clone(), shutdown.clone()));
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    socket.connect(addr).await.expect("connect");
    (socket, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_client_hello_does_not_end_an_established_dtls_session() {
    let f = fixture(true);
    let (socket, shutdown) = dtls_server(&f).await;
    let conn = dtls_client(socket.clone()).await;
    assert_eq!(ask_over(&conn, 1).await, "4.04");
    // A ClientHello from the session's address and port (an off-path host can forge one; here
    // the client's own socket sends it).
    socket.send(&dtls::client_hello()).await.expect("send");
    assert_eq!(
        ask_over(&conn, 2).await,
        "4.04",
        "the session still answers"
    );
    shutdown.cancel();
}

/// A DTLS 1.2 record of `content` type, `epoch` and sequence number `sequence`.
fn dtls_record(content: u8, epoch: u16, sequence: u64, body: &[u8]) -> Vec<u8> {
    let mut record = vec![content, 0xfe, 0xfd];
    record.extend(epoch.to_be_bytes());
    record.extend(&sequence.to_be_bytes()[2..]);
    record.extend(u16::try_from(body.len()).expect("short").to_be_bytes());
    record.extend(body);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_are_dropped_and_do_not_end_an_established_dtls_session() {
    let f = fixture(true);
    let (socket, shutdown) = dtls_server(&f).await;
    let conn = dtls_client(socket.clone()).await;
    assert_eq!(ask_over(&conn, 1).await, "4.04");
    // Records an off-path host can send from the session's address and port without its key,
    // with sequence numbers far ahead of the client's own.
    let far = 1u64 << 40;
    let forged = [
        (
            "application data that does not decrypt",
            dtls_record(23, 1, far, &[0x42; 40]),
        ),
        (
            "an alert that does not decrypt",
            dtls_record(21, 1, far + 1, &[0x13; 26]),
        ),
        ("a plain fatal alert", dtls_record(21, 0, far, &[2, 40])),
        ("a plain close_notify", dtls_record(21, 0, far + 1, &[1, 0])),
        (
            "plain application data",
            dtls_record(23, 0, far + 2, b"hello"),
        ),
        (
            "a record of a later epoch",
            dtls_record(23, 2, far, &[0x42; 40]),
        ),
        (
            "a cut record",
            dtls_record(23, 1, far + 2, &[0x42; 40])[..20].to_vec(),
        ),
        (
            "a ChangeCipherSpec that cannot be read",
            dtls_record(20, 0, far + 3, &[2]),
        ),
        (
            "a record too short to decrypt",
            dtls_record(23, 1, far + 3, &[0x42; 11]),
        ),
        (
            "part of a handshake message",
            dtls_record(
                22,
                0,
                far + 4,
                &[16, 0, 0, 40, 0, 2, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4],
            ),
        ),
        (
            "a well-formed ChangeCipherSpec numbered far ahead (it would move the replay window)",
            dtls_record(20, 0, far + 5, &[1]),
        ),
    ];
    let dropped = || f.shared.metrics.rejected.get("ForgedDtlsRecord");
    for (id, (what, datagram)) in (2..).zip(forged) {
        socket.send(&datagram).await.expect("send");
        assert_eq!(ask_over(&conn, id).await, "4.04", "after {what}");
        assert_eq!(dropped(), u64::from(id - 1), "{what} is counted");
    }
    shutdown.cancel();
}

/// A device's link over a shared socket that can be cut, as when the device loses power: from
/// then on it reads and sends nothing (and says goodbye to nobody).
struct Cuttable {
    socket: Arc<UdpSocket>,
    cut: CancellationToken,
}

#[async_trait::async_trait]
impl webrtc_util::conn::Conn for Cuttable {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        tokio::select! {
            _ = self.cut.cancelled() => std::future::pending().await,
            n = self.socket.recv(buf) => Ok(n?),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.socket.peer_addr()?))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        if self.cut.is_cancelled() {
            return Ok(buf.len());
        }
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.socket.peer_addr().ok()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// One CoAP request over `conn`, and the answer's code.
async fn ask_over(conn: &webrtc_dtls::conn::DTLSConn, id: u16) -> String {
    use webrtc_util::conn::Conn;
    conn.send(&post(id, "bench/baseline", b"x"))
        .await
        .expect("send");
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    code(&Packet::from_bytes(&buf[..n]).expect("CoAP"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_restarts_behind_the_same_address_gets_a_new_session_that_lasts() {
    let f = fixture(true);
    let (socket, shutdown) = dtls_server(&f).await;
    let before = CancellationToken::new();
    let first = dtls_client(Arc::new(Cuttable {
        socket: socket.clone(),
        cut: before.clone(),
    }))
    .await;
    assert_eq!(ask_over(&first, 1).await, "4.04");
    // It loses power, and starts over from the same address and port.
    before.cancel();
    let second = dtls_client(Arc::new(Cuttable {
        socket,
        cut: CancellationToken::new(),
    }))
    .await;
    // The old session is gone by now or soon; whatever it sends must not end the new one.
    for id in 2..6 {
        assert_eq!(ask_over(&second, id).await, "4.04", "request {id}");
    }
    shutdown.cancel();
}
