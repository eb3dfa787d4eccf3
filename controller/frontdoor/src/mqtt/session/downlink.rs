//! The downlink side of a session: subscriptions and the authorization of their filters, what
//! is offered when a device (re)subscribes or connects, and delivery through the QoS 1 window.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Role, Session};
use crate::gateway;
use crate::ingest;
use crate::mqtt::codec::{Outgoing, SubCode};
use crate::sessions::Deliver;
use crate::topic::{self, Denial, Downlink};

/// Sent commands a session remembers before it first forgets the finished ones.
pub(super) const PRUNE_SENT_FROM: usize = 64;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) async fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) {
        let limit = self.shared.settings.max_filters_per_subscribe;
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted: Vec<(String, u8)> = Vec::new();
        // Filters the session holds once this SUBSCRIBE is granted.
        let mut held = self.subscriptions.read().len();
        for (i, (filter, qos)) in filters.into_iter().enumerate() {
            if i >= limit {
                self.shared.metrics.protocol_errors.inc("TooManyFilters");
                codes.push(SubCode::QuotaExceeded);
                continue;
            }
            let new = !granted.iter().any(|(f, _)| *f == filter)
                && !self.subscriptions.read().iter().any(|(f, _)| *f == filter);
            if new && held >= self.shared.settings.max_subscriptions {
                self.shared
                    .metrics
                    .protocol_errors
                    .inc("TooManySubscriptions");
                codes.push(SubCode::QuotaExceeded);
                continue;
            }
            let verdict = match &self.role {
                _ if self.enos.is_some() => self.enos_filter(&filter),
                Role::Device(id) => topic::authorize_device_filter(id, &filter),
                Role::Gateway(id) => {
                    let state = self.gateway.as_deref();
                    topic::authorize_gateway_filter(id, &filter, |sub| {
                        state.is_some_and(|g| g.acts_for(&self.shared, sub))
                    })
                }
                Role::Application(id) => {
                    topic::authorize_application_filter(&id.namespace, &filter)
                }
            };
            match verdict {
                Ok(()) => {
                    // QoS 2 is granted as QoS 1 (documented); everything else as asked.
                    let qos = qos.min(1);
                    codes.push(SubCode::Granted(qos));
                    if new {
                        held += 1;
                    }
                    granted.push((filter, qos));
                }
                Err(denial) => {
                    self.shared.metrics.deny(denial);
                    tracing::info!(peer = %self.peer, who = %self.who(), filter, %denial, "subscription denied");
                    let message = format!("subscription to {filter:?} denied: {denial}");
                    match &self.role {
                        Role::Device(id) => self.shared.warn(id, "SubscribeDenied", message),
                        Role::Gateway(id) => {
                            self.shared.warn_gateway(id, "SubscribeDenied", message)
                        }
                        Role::Application(_) => {}
                    }
                    codes.push(if denial == Denial::InvalidTopic {
                        SubCode::InvalidFilter
                    } else {
                        SubCode::NotAuthorized
                    });
                }
            }
        }
        {
            let mut subscriptions = self.subscriptions.write();
            for (filter, qos) in &granted {
                match subscriptions.iter_mut().find(|(f, _)| f == filter) {
                    Some(existing) => existing.1 = *qos,
                    None => subscriptions.push((filter.clone(), *qos)),
                }
            }
        }
        self.send(Outgoing::SubAck { pkid, codes });
        // An EnOS device had its downlink at connect, subscribed or not.
        if !granted.is_empty()
            && self.enos.is_none()
            && matches!(self.role, Role::Device(_) | Role::Gateway(_))
        {
            self.offer_downlink().await;
        }
    }

    /// After a (re)subscription: the desired attributes, and every command waiting for the
    /// device (each goes only where a subscription matches).
    pub(super) async fn offer_downlink(&mut self) {
        if let Some(state) = self.gateway.as_mut() {
            let mut downlink = Vec::new();
            for device in state.active(&self.shared) {
                downlink.extend(gateway::sub_device_downlink(&self.shared, &device));
            }
            for deliver in downlink {
                self.deliver(deliver);
            }
            return;
        }
        let Role::Device(id) = &self.role else {
            return;
        };
        let id = id.clone();
        let desired = self
            .shared
            .registry
            .read()
            .device(&id)
            .map(ingest::desired_payload);
        if let Some(payload) = desired {
            self.deliver(Deliver {
                topic: id.downlink(&Downlink::Desired).into(),
                payload,
                qos: 1,
                command: None,
            });
        }
        let now = jiff::Timestamp::now();
        let waiting = self.shared.commands.lock().deliverable(&id, now);
        for command in waiting {
            self.deliver(Deliver {
                topic: id.downlink(&Downlink::Command(&command.name)).into(),
                payload: Bytes::from(command.payload(now).to_string()),
                qos: 1,
                command: Some(command.reference()),
            });
        }
    }

    /// Send a downlink message if a subscription matches it (an EnOS device gets it in EnOS
    /// terms, subscribed or not).
    pub(super) fn deliver(&mut self, deliver: Deliver) {
        if let Some(command) = &deliver.command
            && self.sent_commands.contains(command)
        {
            return;
        }
        if !self.still_current(&deliver) {
            return;
        }
        let owner = topic::downlink_owner(&deliver.topic);
        let (deliver, granted) = if self.enos.is_some() {
            match self.enos_downlink(deliver) {
                Some(translated) => (translated, 1),
                None => return,
            }
        } else {
            let granted = self
                .subscriptions
                .read()
                .iter()
                .filter(|(f, _)| topic::matches(&deliver.topic, f))
                .map(|(_, q)| *q)
                .max();
            match granted {
                Some(granted) => (deliver, granted),
                None => return,
            }
        };
        let deliver = Deliver {
            qos: deliver.qos.min(granted),
            ..deliver
        };
        // Behind what already waits, in order.
        let waits =
            deliver.qos == 1 && (self.inflight.len() >= self.window || !self.waiting.is_empty());
        if waits && self.waiting.len() >= self.shared.settings.offline_queue {
            // Room is made by dropping the oldest message that is not a command: a command is
            // marked Sent once it is taken, and one dropped after that would never be offered
            // again. When only commands wait, this message is not taken (a command stays
            // Pending, and is offered again when the device subscribes or reconnects).
            match self.waiting.iter().position(|d| d.command.is_none()) {
                Some(oldest) => {
                    self.waiting.remove(oldest);
                }
                None => return,
            }
        }
        if let Some(command) = &deliver.command {
            self.forget_finished_commands();
            self.sent_commands.insert(command.clone());
            if let Some(device) = owner {
                self.shared.command_sent(&device, command);
            }
        }
        if waits {
            self.waiting.push_back(deliver);
            return;
        }
        self.write_publish(deliver);
    }

    /// Sends waiting messages while the window has room.
    pub(super) fn send_waiting(&mut self) {
        while self.inflight.len() < self.window {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            if self.still_current(&next) {
                self.write_publish(next);
            }
        }
    }

    /// Keeps of the sent commands only those still waiting for an answer (the others are
    /// not offered again), so that a long-lived session does not remember every command it
    /// ever sent: each time the set has doubled since the last time.
    fn forget_finished_commands(&mut self) {
        if self.sent_commands.len() < self.prune_sent_at {
            return;
        }
        let commands = self.shared.commands.lock();
        let waiting = commands.answerable_uids();
        self.sent_commands
            .retain(|sent| waiting.contains(sent.uid.as_str()));
        drop(commands);
        self.prune_sent_at = (2 * self.sent_commands.len()).max(PRUNE_SENT_FROM);
    }

    /// Whether a message still carries what it was made for: a command's message goes no
    /// further once the command was deleted, or created again under its name (the new one
    /// gets a message of its own).
    fn still_current(&self, deliver: &Deliver) -> bool {
        let (Some(command), Some(device)) = (
            deliver.command.as_ref(),
            topic::downlink_owner(&deliver.topic),
        ) else {
            return true;
        };
        self.shared.commands.lock().is_current(&device, command)
    }

    pub(super) fn write_publish(&mut self, deliver: Deliver) {
        let pkid = if deliver.qos == 1 {
            let pkid = self.free_pkid();
            self.inflight.insert(pkid, deliver.clone());
            pkid
        } else {
            0
        };
        self.send(Outgoing::Publish {
            topic: deliver.topic.to_string(),
            pkid,
            qos: deliver.qos,
            payload: deliver.payload,
        });
    }

    fn free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}
