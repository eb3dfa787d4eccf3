//! Live sessions by identity: how downlink finds a device's connection, how a second
//! connection takes over the first, how a decommissioned device is closed, and the stored
//! state of persistent sessions while their device is away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mqtt::codec::CloseCode;
use crate::registry::PasswordTag;
use crate::topic::Identity;

/// Something to send to a session's client. Queues carry it boxed: a queue allocates slots
/// for 32 entries up front, and a box keeps that small for each of thousands of sessions.
#[derive(Clone, Debug)]
pub struct Deliver {
    /// Topic.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// The QoS it was published with (the session sends min(this, subscription)).
    pub qos: u8,
    /// The DeviceCommand this delivers, if any (marked Sent once written).
    pub command: Option<CommandRef>,
}

/// The DeviceCommand a downlink delivers. Its name is the correlation id on the wire; its uid
/// tells it from a command deleted and created again under the same name, or one of the same
/// name in another namespace (a gateway's session carries the commands of all its devices).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommandRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// A way to end a session from outside, with the reason it is told.
#[derive(Clone, Default)]
pub struct Kill {
    token: CancellationToken,
    reason: Arc<Mutex<Option<(CloseCode, String)>>>,
}

impl Kill {
    /// End the session (the first reason given wins).
    pub fn kill(&self, code: CloseCode, reason: impl Into<String>) {
        let mut slot = self.reason.lock();
        if slot.is_none() {
            *slot = Some((code, reason.into()));
        }
        self.token.cancel();
    }

    /// Resolves when the session is to end.
    pub async fn killed(&self) {
        self.token.cancelled().await
    }

    /// Why the session is to end, once it is.
    pub fn reason(&self) -> Option<(CloseCode, String)> {
        self.reason.lock().clone()
    }
}

/// What the table keeps of a live session.
#[derive(Clone)]
pub struct Handle {
    /// Connection number (unique in this process).
    pub conn: u64,
    /// Its downlink queue.
    pub tx: mpsc::Sender<Box<Deliver>>,
    /// Its kill switch.
    pub kill: Kill,
    /// The password it logged in with, as an HMAC (so a rotation or revocation can end it).
    pub tag: PasswordTag,
    /// When it started.
    pub started: jiff::Timestamp,
    /// Cancelled once the session has ended and stored what it keeps.
    pub finished: CancellationToken,
}

/// A persistent session's state while its client is away.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Subscriptions.
    pub subscriptions: Vec<(String, u8)>,
    /// QoS 1 messages not yet acknowledged or not yet sent, oldest first (bounded).
    pub queue: Vec<Deliver>,
    /// When the state is dropped.
    pub expires: Instant,
}

/// Live sessions of one kind of principal (devices, or applications).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<Identity, Handle>>,
    stored: Mutex<HashMap<Identity, Stored>>,
    next: AtomicU64,
}

impl Sessions {
    /// A new connection number.
    pub fn next_conn(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Register a session; a session of the same identity is taken over (told and ended).
    pub fn register(&self, id: &Identity, handle: Handle) {
        if let Some(old) = self.live.lock().insert(id.clone(), handle) {
            old.kill.kill(
                CloseCode::SessionTakenOver,
                "another connection logged in with the same identity",
            );
        }
    }

    /// Remove a session, if it is still the one registered under `conn`.
    pub fn remove(&self, id: &Identity, conn: u64) -> bool {
        let mut live = self.live.lock();
        if live.get(id).is_some_and(|h| h.conn == conn) {
            live.remove(id);
            true
        } else {
            false
        }
    }

    /// The live session of an identity.
    pub fn get(&self, id: &Identity) -> Option<Handle> {
        self.live.lock().get(id).cloned()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<(Identity, Handle)> {
        self.live
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.live.lock().is_empty()
    }

    /// Keep a persistent session's state until `expiry` passes.
    pub fn store(&self, id: &Identity, mut state: Stored, expiry: Duration, limit: usize) {
        state.expires = Instant::now() + expiry;
        let excess = state.queue.len().saturating_sub(limit);
        state.queue.drain(..excess);
        let mut stored = self.stored.lock();
        let now = Instant::now();
        stored.retain(|_, s| s.expires > now);
        stored.insert(id.clone(), state);
    }

    /// Take a stored session back (none when expired or never stored).
    pub fn resume(&self, id: &Identity) -> Option<Stored> {
        let state = self.stored.lock().remove(id)?;
        (state.expires > Instant::now()).then_some(state)
    }

    /// Forget a stored session (a clean start, or a device that is gone).
    pub fn discard(&self, id: &Identity) {
        self.stored.lock().remove(id);
    }
}

/// A sub-device logged in through a gateway's session: its downlink goes to that session.
#[derive(Clone)]
pub struct SubLogin {
    /// The gateway.
    pub gateway: Identity,
    /// The gateway session's connection number.
    pub conn: u64,
    /// The gateway session's downlink queue.
    pub tx: mpsc::Sender<Box<Deliver>>,
}

/// Sub-devices logged in through gateways, by device. A device is logged in through one
/// gateway session at a time; the latest login wins.
#[derive(Default)]
pub struct SubLogins(Mutex<HashMap<Identity, SubLogin>>);

impl SubLogins {
    /// Log `device` in through a gateway session; returns the login it replaces, if that was
    /// another session's.
    pub fn login(&self, device: &Identity, login: SubLogin) -> Option<SubLogin> {
        let conn = login.conn;
        self.0
            .lock()
            .insert(device.clone(), login)
            .filter(|old| old.conn != conn)
    }

    /// Log `device` out, if it is logged in through session `conn`.
    pub fn logout(&self, device: &Identity, conn: u64) -> bool {
        let mut logins = self.0.lock();
        if logins.get(device).is_some_and(|l| l.conn == conn) {
            logins.remove(device);
            true
        } else {
            false
        }
    }

    /// Log `device` out of whichever gateway session holds it.
    pub fn take(&self, device: &Identity) -> Option<SubLogin> {
        self.0.lock().remove(device)
    }

    /// The login of `device`, if it is logged in.
    pub fn get(&self, device: &Identity) -> Option<SubLogin> {
        self.0.lock().get(device).cloned()
    }

    /// Whether `device` is logged in through session `conn`.
    pub fn is_via(&self, device: &Identity, conn: u64) -> bool {
        self.0.lock().get(device).is_some_and(|l| l.conn == conn)
    }

    /// The devices logged in through a gateway (any of its sessions).
    pub fn of_gateway(&self, gateway: &Identity) -> Vec<Identity> {
        self.0
            .lock()
            .iter()
            .filter(|(_, l)| l.gateway == *gateway)
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(sessions: &Sessions) -> (Handle, mpsc::Receiver<Box<Deliver>>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Handle {
                conn: sessions.next_conn(),
                tx,
                kill: Kill::default(),
                tag: [0; 32],
                started: jiff::Timestamp::now(),
                finished: CancellationToken::new(),
            },
            rx,
        )
    }

    #[test]
    fn a_second_session_takes_over_the_first() {
        let sessions = Sessions::default();
        let id = Identity::new("ns", "d");
        let (first, _rx1) = handle(&sessions);
        let (second, _rx2) = handle(&sessions);
        sessions.register(&id, first.clone());
        sessions.register(&id, second.clone());
        assert_eq!(
            first.kill.reason().map(|r| r.0),
            Some(CloseCode::SessionTakenOver)
        );
        assert!(second.kill.reason().is_none());
        assert!(
            !sessions.remove(&id, first.conn),
            "the old one no longer owns the slot"
        );
        assert!(sessions.remove(&id, second.conn));
        assert!(sessions.is_empty());
    }

    #[test]
    fn stored_sessions_are_bounded_and_expire() {
        let sessions = Sessions::default();
        let id = Identity::new("ns", "d");
        let deliver = |n: u8| Deliver {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos: 1,
            command: None,
        };
        let state = Stored {
            subscriptions: vec![("d/ns/d/#".into(), 1)],
            queue: (0..3).map(deliver).collect(),
            expires: Instant::now(),
        };
        sessions.store(&id, state, Duration::from_secs(60), 2);
        let resumed = sessions.resume(&id).expect("stored");
        let kept: Vec<u8> = resumed.queue.iter().map(|d| d.payload[0]).collect();
        assert_eq!(kept, vec![1, 2], "the oldest is dropped at the bound");
        assert_eq!(resumed.subscriptions.len(), 1);
        assert!(sessions.resume(&id).is_none(), "taken");
        sessions.store(&id, resumed, Duration::ZERO, 2);
        assert!(sessions.resume(&id).is_none(), "expired");
    }

    #[test]
    fn a_sub_device_is_logged_in_through_one_gateway_session_at_a_time() {
        let logins = SubLogins::default();
        let meter = Identity::new("ns", "meter");
        let (tx, _rx) = mpsc::channel(1);
        let via = |gateway: &str, conn| SubLogin {
            gateway: Identity::new("ns", gateway),
            conn,
            tx: tx.clone(),
        };
        assert!(logins.login(&meter, via("gw1", 1)).is_none());
        assert!(
            logins.login(&meter, via("gw1", 1)).is_none(),
            "logging in again through the same session replaces nothing"
        );
        let replaced = logins.login(&meter, via("gw2", 2)).expect("taken over");
        assert_eq!(replaced.gateway.name, "gw1");
        assert!(!logins.is_via(&meter, 1));
        assert!(
            !logins.logout(&meter, 1),
            "the old session no longer holds it"
        );
        assert_eq!(
            logins.of_gateway(&Identity::new("ns", "gw2")),
            vec![meter.clone()]
        );
        assert!(logins.logout(&meter, 2));
        assert!(logins.get(&meter).is_none());
    }
}
