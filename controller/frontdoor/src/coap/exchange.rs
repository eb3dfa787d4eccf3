//! What the front door remembers of one CoAP peer (pure; time is passed in): recent message
//! IDs and their answers (deduplication, RFC 7252 §4.5), the peer's observations (RFC 7641),
//! and our confirmable messages waiting for an ACK (retransmission, RFC 7252 §4.2). Every
//! collection is capped, so a peer costs bounded memory whatever it sends.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::topic::Identity;

/// EXCHANGE_LIFETIME (RFC 7252 §4.8.2): how long a confirmable message ID is remembered.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// NON_LIFETIME: how long a non-confirmable message ID is remembered.
pub const NON_LIFETIME: Duration = Duration::from_secs(145);
/// ACK_TIMEOUT: the first retransmission comes after 2–3 s (ACK_RANDOM_FACTOR 1.5).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// MAX_RETRANSMIT.
pub const MAX_RETRANSMIT: u32 = 4;
/// Our confirmable messages in flight to one peer at most.
pub const MAX_OUTSTANDING: usize = 16;

/// What the front door knows of a message ID it has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// Being handled (a duplicate now is dropped: the answer is on its way).
    InProgress,
    /// Answered with these bytes (resent to a duplicate); `None` for a NON, whose
    /// duplicates are dropped.
    Answered(Option<Bytes>),
}

/// What to do with a message ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dedup {
    /// First seen: handle it (now marked in progress).
    New,
    /// A duplicate: resend this answer (or nothing).
    Again(Option<Bytes>),
}

/// What a peer observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Observed {
    /// The device's desired attributes.
    Desired,
    /// The device's commands.
    Commands,
}

/// One observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    /// The registration's token (every notification carries it).
    pub token: Vec<u8>,
    /// What it observes.
    pub resource: Observed,
    /// Whose.
    pub device: Identity,
    /// The last Observe sequence number sent.
    pub seq: u32,
    /// The last payload sent (no notification repeats it).
    pub last: Bytes,
}

/// A confirmable message of ours waiting for its ACK.
#[derive(Clone, Debug)]
struct Outstanding {
    message_id: u16,
    bytes: Bytes,
    /// The observation it notifies, if it is a notification.
    token: Option<Vec<u8>>,
    /// A newer notification of the same desired-attributes observation replaces it.
    replaceable: bool,
    sent: u32,
    timeout: Duration,
    next: Instant,
}

/// What retransmission decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Messages to send again.
    pub resend: Vec<Bytes>,
    /// Observations ended because their notification was never acknowledged.
    pub dropped: Vec<Observer>,
}

/// One peer's state.
#[derive(Debug)]
pub struct Exchange {
    seen: HashMap<u16, Seen>,
    /// Message IDs in the order they were first seen, with when and whether confirmable.
    order: VecDeque<(u16, Instant, bool)>,
    dedup_cap: usize,
    observers: Vec<Observer>,
    observer_cap: usize,
    outstanding: Vec<Outstanding>,
    next_message_id: u16,
}

impl Exchange {
    /// A peer remembering at most `dedup_cap` message IDs and `observer_cap` observations;
    /// our message IDs start at `first_message_id` (random, RFC 7252 §4.4).
    pub fn new(dedup_cap: usize, observer_cap: usize, first_message_id: u16) -> Exchange {
        Exchange {
            seen: HashMap::new(),
            order: VecDeque::new(),
            dedup_cap: dedup_cap.max(1),
            observers: Vec::new(),
            observer_cap,
            outstanding: Vec::new(),
            next_message_id: first_message_id,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((id, at, confirmable)) = self.order.front().copied() {
            let lifetime = if confirmable {
                EXCHANGE_LIFETIME
            } else {
                NON_LIFETIME
            };
            if now.duration_since(at) < lifetime && self.order.len() <= self.dedup_cap {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }

    /// A request with `message_id` arrived: handle it, or answer it as before.
    pub fn check(&mut self, message_id: u16, confirmable: bool, now: Instant) -> Dedup {
        self.expire(now);
        match self.seen.get(&message_id) {
            Some(Seen::InProgress) => Dedup::Again(None),
            Some(Seen::Answered(bytes)) => Dedup::Again(bytes.clone()),
            None => {
                self.seen.insert(message_id, Seen::InProgress);
                self.order.push_back((message_id, now, confirmable));
                // At the cap the oldest ID is forgotten: a duplicate of it would be handled
                // again, which only a peer far beyond any sane rate can cause.
                self.expire(now);
                Dedup::New
            }
        }
    }

    /// The answer to `message_id` (to resend to duplicates).
    pub fn answered(&mut self, message_id: u16, answer: Option<Bytes>) {
        if let Some(slot) = self.seen.get_mut(&message_id) {
            *slot = Seen::Answered(answer);
        }
    }

    /// A fresh message ID for a message of ours.
    pub fn next_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }

    /// Register (or renew) an observation; `None` when the peer has as many as it may have.
    pub fn observe(&mut self, token: &[u8], resource: Observed, device: &Identity) -> Option<u32> {
        if let Some(existing) = self.observers.iter_mut().find(|o| o.token == token) {
            existing.resource = resource;
            existing.device = device.clone();
            existing.seq = existing.seq.wrapping_add(1) & 0x00ff_ffff;
            return Some(existing.seq);
        }
        if self.observers.len() >= self.observer_cap {
            return None;
        }
        self.observers.push(Observer {
            token: token.to_vec(),
            resource,
            device: device.clone(),
            seq: 2,
            last: Bytes::new(),
        });
        Some(2)
    }

    /// Record what an observation was last sent.
    pub fn sent_to_observer(&mut self, token: &[u8], payload: Bytes) {
        if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
            o.last = payload;
        }
    }

    /// End an observation; returns it.
    pub fn forget(&mut self, token: &[u8]) -> Option<Observer> {
        let at = self.observers.iter().position(|o| o.token == token)?;
        self.outstanding
            .retain(|m| m.token.as_deref() != Some(token));
        Some(self.observers.swap_remove(at))
    }

    /// The observations of `resource` of `device` (or of any device, with `None`).
    pub fn observers(&self, resource: Observed, device: Option<&Identity>) -> Vec<Observer> {
        self.observers
            .iter()
            .filter(|o| o.resource == resource && device.is_none_or(|d| *d == o.device))
            .cloned()
            .collect()
    }

    /// How many observations the peer holds.
    pub fn observer_count(&self) -> usize {
        self.observers.len()
    }

    /// Our confirmable messages waiting for their ACK.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether the peer still holds something worth keeping: observations or messages in flight.
    pub fn is_busy(&self) -> bool {
        !self.observers.is_empty() || !self.outstanding.is_empty()
    }

    /// The next notification number of an observation (24 bits, RFC 7641 §4.4).
    pub fn next_seq(&mut self, token: &[u8]) -> Option<u32> {
        let o = self.observers.iter_mut().find(|o| o.token == token)?;
        o.seq = o.seq.wrapping_add(1) & 0x00ff_ffff;
        Some(o.seq)
    }

    /// A confirmable message of ours went out; `false` when too many are in flight (the
    /// caller gives up on it).
    pub fn expect_ack(
        &mut self,
        message_id: u16,
        bytes: Bytes,
        token: Option<&[u8]>,
        replaceable: bool,
        now: Instant,
    ) -> bool {
        if replaceable && let Some(token) = token {
            // RFC 7641 §4.5.2: a newer notification replaces the one still in flight.
            self.outstanding
                .retain(|m| !(m.replaceable && m.token.as_deref() == Some(token)));
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return false;
        }
        // ACK_TIMEOUT × a random factor between 1 and 1.5.
        let jitter = u64::from(message_id % 500);
        let timeout = ACK_TIMEOUT + Duration::from_millis(jitter * 2);
        self.outstanding.push(Outstanding {
            message_id,
            bytes,
            token: token.map(<[u8]>::to_vec),
            replaceable,
            sent: 0,
            timeout,
            next: now + timeout,
        });
        true
    }

    /// An ACK arrived for `message_id`.
    pub fn acknowledged(&mut self, message_id: u16) {
        self.outstanding.retain(|m| m.message_id != message_id);
    }

    /// A RST arrived for `message_id`: the peer rejects it, and with it the observation it
    /// notified (RFC 7641 §3.6); returns that observation.
    pub fn reset(&mut self, message_id: u16) -> Option<Observer> {
        let at = self
            .outstanding
            .iter()
            .position(|m| m.message_id == message_id)?;
        let message = self.outstanding.swap_remove(at);
        self.forget(message.token.as_deref()?)
    }

    /// Messages to retransmit now, and observations given up on.
    pub fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        let mut gave_up = Vec::new();
        for m in &mut self.outstanding {
            if m.next > now {
                continue;
            }
            if m.sent >= MAX_RETRANSMIT {
                gave_up.push(m.message_id);
                continue;
            }
            m.sent += 1;
            m.timeout *= 2;
            m.next = now + m.timeout;
            due.resend.push(m.bytes.clone());
        }
        for id in gave_up {
            if let Some(observer) = self.reset(id) {
                due.dropped.push(observer);
            }
            self.outstanding.retain(|m| m.message_id != id);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_gets_the_first_answer_again() {
        let now = Instant::now();
        let mut peer = Exchange::new(8, 2, 0);
        assert_eq!(peer.check(7, true, now), Dedup::New);
        assert_eq!(
            peer.check(7, true, now),
            Dedup::Again(None),
            "still in progress"
        );
        peer.answered(7, Some(Bytes::from_static(b"ack")));
        assert_eq!(
            peer.check(7, true, now + Duration::from_secs(10)),
            Dedup::Again(Some(Bytes::from_static(b"ack")))
        );
        assert_eq!(
            peer.check(7, true, now + EXCHANGE_LIFETIME),
            Dedup::New,
            "forgotten after the exchange lifetime"
        );
        assert_eq!(peer.check(8, false, now), Dedup::New);
        peer.answered(8, None);
        assert_eq!(peer.check(8, false, now), Dedup::Again(None));
    }

    #[test]
    fn message_ids_are_remembered_up_to_the_cap() {
        let now = Instant::now();
        let mut peer = Exchange::new(4, 2, 0);
        for id in 0..10 {
            assert_eq!(peer.check(id, true, now), Dedup::New);
            peer.answered(id, None);
        }
        assert!(peer.seen.len() <= 4 && peer.order.len() <= 4);
        assert_eq!(peer.check(9, true, now), Dedup::Again(None));
        assert_eq!(peer.check(0, true, now), Dedup::New, "the oldest went");
    }

    #[test]
    fn observations_are_capped_and_renewed_by_token() {
        let device = Identity::new("plant", "a");
        let mut peer = Exchange::new(4, 2, 0);
        assert_eq!(peer.observe(b"t1", Observed::Desired, &device), Some(2));
        assert_eq!(peer.observe(b"t2", Observed::Commands, &device), Some(2));
        assert_eq!(
            peer.observe(b"t3", Observed::Desired, &device),
            None,
            "the cap"
        );
        assert_eq!(
            peer.observe(b"t1", Observed::Desired, &device),
            Some(3),
            "a renewal"
        );
        assert_eq!(peer.observers(Observed::Desired, Some(&device)).len(), 1);
        assert!(peer.forget(b"t1").is_some());
        assert_eq!(peer.observer_count(), 1);
    }

    #[test]
    fn an_unacknowledged_notification_is_resent_then_its_observation_dropped() {
        let device = Identity::new("plant", "a");
        let start = Instant::now();
        let mut peer = Exchange::new(4, 2, 100);
        peer.observe(b"t", Observed::Desired, &device);
        let id = peer.next_message_id();
        assert!(peer.expect_ack(id, Bytes::from_static(b"n1"), Some(b"t"), true, start));
        assert!(peer.due(start).resend.is_empty());
        let mut at = start;
        for _ in 0..MAX_RETRANSMIT {
            at += Duration::from_secs(60);
            assert_eq!(peer.due(at).resend, vec![Bytes::from_static(b"n1")]);
        }
        at += Duration::from_secs(60);
        let due = peer.due(at);
        assert!(due.resend.is_empty());
        assert_eq!(due.dropped.len(), 1);
        assert!(!peer.is_busy());
    }

    #[test]
    fn a_newer_desired_notification_replaces_the_one_in_flight_and_a_reset_cancels() {
        let device = Identity::new("plant", "a");
        let now = Instant::now();
        let mut peer = Exchange::new(4, 2, 0);
        peer.observe(b"t", Observed::Desired, &device);
        peer.expect_ack(1, Bytes::from_static(b"old"), Some(b"t"), true, now);
        peer.expect_ack(2, Bytes::from_static(b"new"), Some(b"t"), true, now);
        assert_eq!(peer.outstanding.len(), 1);
        peer.acknowledged(1);
        assert_eq!(peer.outstanding.len(), 1, "the old ACK changes nothing");
        assert_eq!(peer.reset(2).map(|o| o.token), Some(b"t".to_vec()));
        assert_eq!(peer.observer_count(), 0);
        for id in 0..(MAX_OUTSTANDING as u16) {
            assert!(peer.expect_ack(10 + id, Bytes::new(), None, false, now));
        }
        assert!(!peer.expect_ack(99, Bytes::new(), None, false, now));
    }
}
