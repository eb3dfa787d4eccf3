//! Downlink to CoAP observers and our side of the exchange: desired-attribute and command
//! notifications (confirmable, RFC 7641), retransmissions, and the periodic sweep of idle peers
//! and of DTLS sessions whose device may no longer connect.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{MessageType, ResponseType};
use devplane_api::v1alpha1::Protocol;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::exchange::{self, Exchange, Observed};
use super::message::{self, Reply};
use super::{Endpoint, Principal};
use crate::Shared;
use crate::ingest;
use crate::status::StatusUpdate;
use crate::topic::Identity;

impl Endpoint {
    /// Notify the desired-attribute observers of `device` (of every device with `None`) whose
    /// last notification differs from the device's desired attributes now.
    pub(super) async fn notify_desired(&self, shared: &Shared, device: Option<&Identity>) {
        let mut sends = Vec::new();
        let mut changed = HashSet::new();
        {
            // Peers before the registry, everywhere (a consistent order cannot deadlock).
            let mut peers = self.peers.lock();
            let registry = shared.registry.read();
            for (addr, peer) in peers.iter_mut() {
                for observer in peer.exchange.observers(Observed::Desired, device) {
                    let Some(entry) = registry.device(&observer.device) else {
                        continue;
                    };
                    let payload = ingest::desired_payload(entry);
                    if payload == observer.last {
                        continue;
                    }
                    if let Some(bytes) =
                        notification(&mut peer.exchange, &observer.token, &payload, true)
                    {
                        sends.push((peer.link.clone(), *addr, bytes));
                        changed.insert(observer.device.clone());
                    }
                }
            }
        }
        for id in changed {
            shared.status_update(StatusUpdate::DesiredChanged { id });
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Push waiting commands to the command observers of their devices (marking them Sent);
    /// every observer of a device gets them.
    pub(super) async fn notify_commands(&self, shared: &Shared) {
        let mut sends = Vec::new();
        {
            let mut peers = self.peers.lock();
            // Only devices with an observer that can take a notification now: taking the
            // commands marks them Sent, and a notification not sent would never be repeated.
            let devices: HashSet<Identity> = peers
                .values()
                .filter(|p| p.exchange.in_flight() < exchange::MAX_OUTSTANDING)
                .flat_map(|p| p.exchange.observers(Observed::Commands, None))
                .map(|o| o.device)
                .collect();
            for device in devices {
                let Some(payload) = take_commands(shared, &device) else {
                    continue;
                };
                for (addr, peer) in peers.iter_mut() {
                    for observer in peer.exchange.observers(Observed::Commands, Some(&device)) {
                        let exchange = &mut peer.exchange;
                        if let Some(bytes) =
                            notification(exchange, &observer.token, &payload, false)
                        {
                            sends.push((peer.link.clone(), *addr, bytes));
                        }
                    }
                }
            }
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Retransmit what is due; every few ticks also forget idle plain peers and end DTLS
    /// sessions whose device may no longer connect.
    pub(super) async fn tick(&self, shared: &Shared, sweep: bool) {
        let mut sends = Vec::new();
        let now = Instant::now();
        {
            let mut peers = self.peers.lock();
            for (addr, peer) in peers.iter_mut() {
                let due = peer.exchange.due(now);
                for observer in due.dropped {
                    tracing::debug!(peer = %addr, device = %observer.device, "a notification went unacknowledged; observation ended");
                }
                sends.extend(
                    due.resend
                        .into_iter()
                        .map(|b| (peer.link.clone(), *addr, b)),
                );
            }
            if sweep {
                let registry = shared.registry.read();
                let jiff_now = jiff::Timestamp::now();
                peers.retain(|_, peer| match (&peer.principal, &peer.kill) {
                    (Principal::Device { id, tag }, Some(kill)) => {
                        if registry
                            .device_session_problem(id, tag, Protocol::Coap, jiff_now)
                            .is_some()
                        {
                            kill.cancel();
                        }
                        true
                    }
                    // Another DTLS session (provisioning) stays while it lasts: its own idle
                    // timeout ends it, and it leaves then.
                    (_, Some(_)) => true,
                    (_, None) => {
                        peer.exchange.is_busy()
                            || now.duration_since(peer.heard) < exchange::EXCHANGE_LIFETIME
                    }
                });
            }
        }
        for (link, addr, bytes) in sends {
            link.send(addr, &bytes).await;
        }
    }

    /// Deliver downlink until shutdown: desired changes, new commands, retransmissions.
    pub async fn downlink(self: Arc<Self>, shared: Arc<Shared>, shutdown: CancellationToken) {
        let mut desired = shared.desired_changed.subscribe();
        let mut arrived = std::pin::pin!(shared.command_arrived.notified());
        arrived.as_mut().enable();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = desired.recv() => match changed {
                    Ok(id) => self.notify_desired(&shared, Some(&id)).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.notify_desired(&shared, None).await
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut arrived => {
                    // Listen again before looking, so a command arriving meanwhile is seen.
                    arrived.set(shared.command_arrived.notified());
                    arrived.as_mut().enable();
                    self.notify_commands(&shared).await;
                }
                _ = tick.tick() => {
                    ticks += 1;
                    let sweep = ticks.is_multiple_of(4);
                    self.tick(&shared, sweep).await;
                    if sweep {
                        // Commands held back while their observers had too much in flight.
                        self.notify_commands(&shared).await;
                    }
                }
            }
        }
    }
}

/// `{"commands": [...]}`, as HTTP's long poll answers.
pub(super) fn commands_payload(list: Vec<Value>) -> Bytes {
    Bytes::from(json!({ "commands": list }).to_string())
}

/// The commands waiting for `id`, marked Sent; None when there are none.
pub(super) fn take_commands(shared: &Shared, id: &Identity) -> Option<Bytes> {
    let now = jiff::Timestamp::now();
    let waiting = shared.commands.lock().deliverable(id, now);
    if waiting.is_empty() {
        return None;
    }
    let list = waiting
        .iter()
        .map(|c| {
            let mut body = c.payload(now);
            body["name"] = json!(c.name);
            body
        })
        .collect();
    for command in &waiting {
        shared.command_sent(id, &command.reference());
    }
    Some(commands_payload(list))
}

/// A confirmable notification of an observation, registered for retransmission; None when
/// the peer has too much in flight.
fn notification(
    exchange: &mut Exchange,
    token: &[u8],
    payload: &Bytes,
    replaceable: bool,
) -> Option<Vec<u8>> {
    let seq = exchange.next_seq(token)?;
    let message_id = exchange.next_message_id();
    let reply = Reply {
        observe: Some(seq),
        ..Reply::json(ResponseType::Content, payload.to_vec())
    };
    let bytes = message::encode(MessageType::Confirmable, message_id, token, &reply);
    let copy = Bytes::from(bytes.clone());
    if !exchange.expect_ack(message_id, copy, Some(token), replaceable, Instant::now()) {
        return None;
    }
    exchange.sent_to_observer(token, payload.clone());
    Some(bytes)
}
