//! The DTLS 1.2 listener: one UDP socket, one session per peer address, handshakes with
//! pre-shared keys (webrtc-dtls, pure Rust; TLS_PSK_WITH_AES_128_CCM_8 — CoAP's mandatory
//! suite — plus AES_128_CCM and AES_128_GCM_SHA256).
//!
//! webrtc-dtls's own UDP listener keeps every peer forever and handshakes one at a time, so
//! the front door demultiplexes itself: datagrams go to their session's bounded queue; only a
//! ClientHello opens a session; sessions are capped, a handshake has `connect_timeout`, and a
//! session with nothing observed ends after `coap_idle_timeout` without a record. The key is
//! looked up in the registry during the handshake, by the PSK identity `{ns}/{name}`.
//!
//! A ClientHello from the address of an established session starts a second handshake beside
//! it (a client that restarted, RFC 6347 §4.2.8). The established session goes on until that
//! handshake completes, which needs the client to answer the HelloVerifyRequest's cookie and to
//! hold the key, so a forged ClientHello cannot end it. Meanwhile the handshake's records
//! (plain ones, and the encrypted Finished) go to the new handshake, application data to the
//! established session until the server sends the new handshake's Finished, which replaces it;
//! the replaced session then sends nothing more.
//!
//! Once its handshake is done, a session reads only the records its [`guard`] admits: those
//! that decrypt under its keys and the plain records of a retransmitted handshake flight. The
//! library would answer a forged record with a fatal alert and end the session. The guard is
//! made from the keys the library exports once the handshake returns; a record that arrives
//! after the server's Finished went out waits for it (at most [`GUARD_WAIT`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::conn::Conn;

mod demux;
mod guard;

#[cfg(test)]
pub(super) use demux::client_hello;
use demux::{Demux, Route, Slot};
use guard::RecordGuard;

use super::{DATAGRAM, Endpoint, Principal};
use crate::Shared;
use crate::topic::Identity;

/// Longest a record that arrives between the server's Finished and its session's guard waits
/// for the guard. The guard follows the handshake's return within milliseconds; the bound only
/// keeps a session reading should that ever not come.
const GUARD_WAIT: Duration = Duration::from_secs(1);

/// Records queued for one session before more are dropped (UDP may lose them anyway).
const SESSION_QUEUE: usize = 64;

/// One peer's datagrams, as webrtc-dtls reads and writes them.
struct PeerConn {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    demux: Arc<Demux>,
    generation: u64,
    /// Set once the handshake is done: from then on only records that pass it are read.
    guard: OnceLock<RecordGuard>,
    /// Whether the server's Finished has gone out: the handshake is done, and what arrives
    /// from then on waits for the guard.
    finished: AtomicBool,
    /// Told when the guard is set.
    guarded: tokio::sync::Notify,
}

impl PeerConn {
    /// The guard, once set; after the server's Finished, waits for it up to [`GUARD_WAIT`].
    async fn guard(&self) -> Option<&RecordGuard> {
        if !self.finished.load(Ordering::Acquire) {
            return self.guard.get();
        }
        let _ = tokio::time::timeout(GUARD_WAIT, async {
            loop {
                let told = self.guarded.notified();
                if self.guard.get().is_some() {
                    return;
                }
                told.await;
            }
        })
        .await;
        self.guard.get()
    }

    /// Sets the guard and wakes a record waiting for it.
    fn set_guard(&self, guard: RecordGuard) {
        let _ = self.guard.set(guard);
        self.guarded.notify_waiters();
    }
}

#[async_trait]
impl Conn for PeerConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "a session's peer is fixed".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let mut rx = self.rx.lock().await;
        loop {
            let Some(datagram) = rx.recv().await else {
                return Err(webrtc_util::Error::ErrUseClosedNetworkConn);
            };
            let admitted = match self.guard().await {
                Some(guard) => guard.admit(&datagram),
                None => Some(datagram.as_slice().into()),
            };
            if admitted.as_ref().is_none_or(|a| a.len() < datagram.len()) {
                self.shared.metrics.rejected.inc("ForgedDtlsRecord");
            }
            let Some(admitted) = admitted else { continue };
            let n = admitted.len().min(buf.len());
            buf[..n].copy_from_slice(&admitted[..n]);
            return Ok(n);
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.peer))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        // A session that a newer one of its address replaced says nothing more: its records
        // (a close_notify, an alert) would reach the new session's client, which cannot
        // decrypt them, and webrtc-dtls clients end their session on that. One that was only
        // removed still speaks: a failed handshake's alert may come after its close.
        if self.demux.replaced(self.peer, self.generation) {
            return Ok(buf.len());
        }
        // The handshake is done once the server's Finished is out; from then on the client's
        // application data is this session's (a handshake beside a session replaces it here).
        if demux::carries_finished(buf) {
            self.finished.store(true, Ordering::Release);
            self.demux.established(self.peer, self.generation);
        }
        Ok(self.socket.send_to(buf, self.peer).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.demux.remove(self.peer, self.generation);
        self.rx.lock().await.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The key and principal of a PSK identity: a device `{ns}/{name}` (its password, from the
/// registry) or a device provisioning itself, `provision/{ns}/{policy}/{deviceId}` (its proof:
/// the base64 text of the key derived from the policy's group key).
fn psk(shared: &Arc<Shared>, identity: &[u8]) -> Option<(Principal, Vec<u8>)> {
    let identity = std::str::from_utf8(identity).ok()?;
    if let Some(rest) = identity.strip_prefix("provision/") {
        let (policy, device_id) = rest.rsplit_once('/')?;
        let policy = Identity::from_username(policy)?;
        // The pre-shared key is the proof as text (base64 of the derived key), which every
        // client can pass as a string.
        let key = crate::provision::derived_key(shared, &policy, device_id)?;
        let proof = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        let principal = Principal::Provisioning {
            policy,
            device_id: device_id.to_string(),
            proof: proof.clone(),
        };
        return Some((principal, proof.into_bytes()));
    }
    let id = Identity::from_username(identity)?;
    let registry = shared.registry.read();
    let key = registry.device_key(&id)?.to_vec();
    let tag = registry.tag(&key);
    Some((Principal::Device { id, tag }, key))
}

/// The server configuration of one handshake: the key of the identity the client names
/// ([`psk`]); its principal is left in `chosen`.
fn config(shared: &Arc<Shared>, chosen: Arc<Mutex<Option<Principal>>>) -> Config {
    let shared = shared.clone();
    Config {
        psk: Some(Arc::new(move |identity: &[u8]| {
            match psk(&shared, identity) {
                Some((principal, key)) => {
                    *chosen.lock() = Some(principal);
                    Ok(key)
                }
                None => Err(webrtc_dtls::Error::Other(
                    "unknown PSK identity".to_string(),
                )),
            }
        })),
        psk_identity_hint: Some(b"devplane".to_vec()),
        cipher_suites: vec![
            CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
            CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
            CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
        ],
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Config::default()
    }
}

/// Serve CoAP over DTLS on `socket` until shutdown.
pub async fn serve(socket: UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let endpoint = Endpoint::new();
    tokio::spawn(endpoint.clone().downlink(shared.clone(), shutdown.clone()));
    let demux = Arc::new(Demux::default());
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %devplane_core::report::chain(&e), "DTLS receive failed");
                    continue;
                }
            },
        };
        let data = &buf[..n];
        {
            let mut table = demux.table.lock();
            let beside = match table.route(peer, data) {
                Route::To(tx) => {
                    // Full: dropped, as the network might have.
                    let _ = tx.try_send(data.to_vec());
                    continue;
                }
                Route::Drop => continue,
                Route::NewSession => false,
                Route::NewHandshake => true,
            };
            if !beside && table.len() >= shared.settings.coap_max_peers {
                shared.metrics.connections_refused.inc("TooManySessions");
                continue;
            }
            let (tx, rx) = mpsc::channel(SESSION_QUEUE);
            let _ = tx.try_send(data.to_vec());
            let generation = demux.next.fetch_add(1, Ordering::Relaxed) + 1;
            let slot = Slot {
                generation,
                tx,
                established: false,
            };
            let opened = if beside {
                table.open_beside(peer, slot)
            } else {
                table.open(peer, slot)
            };
            if !opened {
                shared.metrics.connections_refused.inc("TooManyHandshakes");
                continue;
            }
            let conn = Arc::new(PeerConn {
                shared: shared.clone(),
                socket: socket.clone(),
                peer,
                rx: tokio::sync::Mutex::new(rx),
                demux: demux.clone(),
                generation,
                guard: OnceLock::new(),
                finished: AtomicBool::new(false),
                guarded: tokio::sync::Notify::new(),
            });
            tokio::spawn(session(
                shared.clone(),
                endpoint.clone(),
                conn,
                shutdown.clone(),
            ));
        }
    }
}

/// One DTLS session: the handshake, then each record as a CoAP datagram.
async fn session(
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    raw: Arc<PeerConn>,
    shutdown: CancellationToken,
) {
    let peer = raw.peer;
    let (demux, generation) = (raw.demux.clone(), raw.generation);
    let chosen = Arc::new(Mutex::new(None));
    let handshake = tokio::time::timeout(
        shared.settings.connect_timeout,
        DTLSConn::new(raw.clone(), config(&shared, chosen.clone()), false, None),
    )
    .await;
    let conn = match handshake {
        Ok(Ok(conn)) => Arc::new(conn),
        Ok(Err(e)) => {
            shared.metrics.connections_refused.inc("HandshakeFailed");
            tracing::debug!(%peer, error = %devplane_core::report::chain(&e), "DTLS handshake failed");
            demux.remove(peer, generation);
            return;
        }
        Err(_) => {
            shared.metrics.connections_refused.inc("HandshakeFailed");
            tracing::debug!(%peer, "DTLS handshake timed out");
            demux.remove(peer, generation);
            return;
        }
    };
    let Some(principal) = chosen.lock().take() else {
        let _ = conn.close().await;
        demux.remove(peer, generation);
        return;
    };
    match RecordGuard::of(&conn).await {
        Ok(guard) => raw.set_guard(guard),
        Err(e) => {
            // Without the guard one forged record could end the session: none is kept.
            shared.metrics.connections_refused.inc("HandshakeFailed");
            tracing::warn!(%peer, error = %e, "DTLS session ended: its records cannot be checked");
            let _ = conn.close().await;
            demux.remove(peer, generation);
            return;
        }
    }
    demux.established(peer, generation);
    shared.metrics.connections_accepted.inc("coaps");
    tracing::debug!(%peer, who = ?principal.device(), "DTLS session established");
    let kill = CancellationToken::new();
    endpoint.admit_session(
        &shared,
        peer,
        conn.clone(),
        principal,
        kill.clone(),
        generation,
    );
    let idle = shared.settings.coap_idle_timeout;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = kill.cancelled() => break,
            read = conn.read(&mut buf, Some(idle)) => read,
        };
        match read {
            Ok(n) => {
                for reply in endpoint.datagram(&shared, peer, &buf[..n]).await {
                    if let Err(e) = conn.write(&reply, None).await {
                        tracing::debug!(%peer, error = %devplane_core::report::chain(&e), "cannot answer over DTLS");
                    }
                }
            }
            Err(webrtc_dtls::Error::ErrDeadlineExceeded) => {
                if endpoint.is_idle(peer) {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %devplane_core::report::chain(&e), "DTLS session ended");
                break;
            }
        }
    }
    endpoint.remove_session(peer, generation);
    let _ = conn.close().await;
    demux.remove(peer, generation);
}

#[cfg(test)]
mod tests {
    use super::demux::HANDSHAKES_PER_ADDRESS;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_holds_only_so_many_handshakes_and_others_still_get_theirs() {
        let (shared, _ingest) = crate::test_shared();
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(socket, shared.clone(), shutdown.clone()));
        // ClientHellos from many ports of one address, never followed up.
        let extra = 6;
        let clients: Vec<std::net::UdpSocket> = (0..HANDSHAKES_PER_ADDRESS + extra)
            .map(|_| {
                let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                client.send_to(&client_hello(), addr).expect("send");
                client
            })
            .collect();
        let refused = || shared.metrics.connections_refused.get("TooManyHandshakes");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while refused() < extra as u64 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(refused(), extra as u64);
        // Another address is answered: a HelloVerifyRequest (handshake type 3).
        let other = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind");
        other
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        other.send_to(&client_hello(), addr).expect("send");
        let mut answer = [0u8; 512];
        let n = tokio::task::block_in_place(|| other.recv(&mut answer)).expect("an answer");
        assert!(
            n > 13 && answer[0] == 22 && answer[13] == 3,
            "{:?}",
            &answer[..n]
        );
        assert_eq!(refused(), extra as u64);
        drop(clients);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_record_that_arrives_after_the_finished_waits_for_the_guard() {
        let (shared, _ingest) = crate::test_shared();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let (tx, rx) = mpsc::channel(4);
        let conn = Arc::new(PeerConn {
            shared: shared.clone(),
            socket,
            peer: "127.0.0.1:9".parse().expect("address"),
            rx: tokio::sync::Mutex::new(rx),
            demux: Arc::new(Demux::default()),
            generation: 0,
            guard: OnceLock::new(),
            finished: AtomicBool::new(false),
            guarded: tokio::sync::Notify::new(),
        });
        let record = |content: u8, epoch: u8, body: &[u8]| {
            let mut record = vec![content, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, 5];
            record.extend(u16::try_from(body.len()).expect("short").to_be_bytes());
            record.extend(body);
            record
        };
        let read = |conn: Arc<PeerConn>| {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let n = conn.recv(&mut buf).await.expect("a record");
                buf[..n].to_vec()
            })
        };
        // During the handshake every record is the library's to judge.
        let forged = record(23, 1, &[0x42; 40]);
        tx.send(forged.clone()).await.expect("queued");
        assert_eq!(read(conn.clone()).await.expect("read"), forged);
        // After the server's Finished, a record waits for the guard, which then judges it.
        conn.finished.store(true, Ordering::Release);
        tx.send(forged).await.expect("queued");
        let reading = read(conn.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!reading.is_finished(), "read before the guard was set");
        conn.set_guard(
            RecordGuard::new(
                CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
                &[5; 48],
                &[1; 32],
                &[2; 32],
            )
            .expect("guard"),
        );
        let change_cipher_spec = record(20, 0, &[1]);
        tx.send(change_cipher_spec.clone()).await.expect("queued");
        assert_eq!(reading.await.expect("read"), change_cipher_spec);
        assert_eq!(shared.metrics.rejected.get("ForgedDtlsRecord"), 1);
    }
}
