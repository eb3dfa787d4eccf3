//! The front door's counters, read by the runtime's `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::topic::Denial;

/// A counter family: one value per label value.
#[derive(Default)]
pub struct Family(Mutex<BTreeMap<&'static str, u64>>);

impl Family {
    /// Add one for `label`.
    pub fn inc(&self, label: &'static str) {
        *self.0.lock().entry(label).or_default() += 1;
    }

    /// The value for `label`.
    pub fn get(&self, label: &str) -> u64 {
        self.0.lock().get(label).copied().unwrap_or_default()
    }

    /// Every label and its value.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        self.0.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Every counter of the front door.
#[derive(Default)]
pub struct Metrics {
    /// Sessions opened, by protocol listener (`mqtt`, `mqtts`, `app`, `enos-mqtt`,
    /// `enos-mqtts`; `provision` and `enos-activation` for those connections of their own).
    pub connections_accepted: Family,
    /// Connections refused at CONNECT, by reason.
    pub connections_refused: Family,
    /// Sessions now open.
    pub sessions_open: AtomicU64,
    /// Topics or filters denied, by reason.
    pub denied: Family,
    /// Uplink messages accepted by ingest, by kind.
    pub accepted: Family,
    /// Uplink messages rejected, by reason.
    pub rejected: Family,
    /// Messages handed to northbound application subscribers.
    pub north_delivered: AtomicU64,
    /// Messages dropped for QoS 0 application subscribers whose queue was full.
    pub north_dropped: AtomicU64,
    /// Commands delivered to devices.
    pub commands_delivered: AtomicU64,
    /// Connections closed for a protocol violation, by reason.
    pub protocol_errors: Family,
    /// Status writes to the API, by outcome (`ok`, `error`).
    pub status_writes: Family,
    /// Sub-device logins by gateways, by result (`ok` or the refusal).
    pub sub_logins: Family,
    /// Sub-device registrations by gateways, by result.
    pub sub_registrations: Family,
    /// Zero-touch provisioning requests, by result (`created`, `existing` or the refusal).
    pub provisions: Family,
}

/// One metric family for exposition.
pub struct Exposed {
    /// Name (without `_total`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Label name, if the family has one.
    pub label: Option<&'static str>,
    /// Whether it is a counter (else a gauge).
    pub counter: bool,
    /// Values by label value (empty label for unlabelled).
    pub values: Vec<(&'static str, u64)>,
}

impl Metrics {
    /// Count a denial.
    pub fn deny(&self, denial: Denial) {
        self.denied.inc(denial.as_str());
    }

    /// Every family with its current values.
    pub fn expose(&self) -> Vec<Exposed> {
        let family = |name, help, label, f: &Family| Exposed {
            name,
            help,
            label: Some(label),
            counter: true,
            values: f.values(),
        };
        let single = |name, help, counter, v: &AtomicU64| Exposed {
            name,
            help,
            label: None,
            counter,
            values: vec![("", v.load(Ordering::Relaxed))],
        };
        let mut denied = self.denied.values();
        for d in Denial::ALL {
            if !denied.iter().any(|(k, _)| *k == d.as_str()) {
                denied.push((d.as_str(), 0));
            }
        }
        vec![
            family(
                "devplane_frontdoor_connections_accepted",
                "Sessions opened, by listener.",
                "listener",
                &self.connections_accepted,
            ),
            family(
                "devplane_frontdoor_connections_refused",
                "Connections refused at CONNECT, by reason.",
                "reason",
                &self.connections_refused,
            ),
            single(
                "devplane_frontdoor_sessions_open",
                "Sessions open now.",
                false,
                &self.sessions_open,
            ),
            Exposed {
                name: "devplane_frontdoor_denied",
                help: "Publishes and subscriptions denied by the authorization rule, by reason.",
                label: Some("reason"),
                counter: true,
                values: denied,
            },
            family(
                "devplane_frontdoor_uplink_accepted",
                "Uplink messages accepted by ingest, by kind.",
                "kind",
                &self.accepted,
            ),
            family(
                "devplane_frontdoor_uplink_rejected",
                "Uplink messages rejected (by validation, or DTLS records that do not come from the session), by reason.",
                "reason",
                &self.rejected,
            ),
            single(
                "devplane_frontdoor_northbound_delivered",
                "Messages handed to northbound application sessions.",
                true,
                &self.north_delivered,
            ),
            single(
                "devplane_frontdoor_northbound_dropped",
                "Messages dropped for QoS 0 application subscribers with a full queue.",
                true,
                &self.north_dropped,
            ),
            single(
                "devplane_frontdoor_commands_delivered",
                "DeviceCommands delivered to devices.",
                true,
                &self.commands_delivered,
            ),
            family(
                "devplane_frontdoor_protocol_errors",
                "Connections closed for a protocol violation, by reason.",
                "reason",
                &self.protocol_errors,
            ),
            family(
                "devplane_frontdoor_status_writes",
                "Device status writes, by outcome.",
                "outcome",
                &self.status_writes,
            ),
            family(
                "devplane_frontdoor_subdevice_logins",
                "Sub-device logins by gateways, by result.",
                "result",
                &self.sub_logins,
            ),
            family(
                "devplane_frontdoor_subdevice_registrations",
                "Sub-device registrations by gateways, by result.",
                "result",
                &self.sub_registrations,
            ),
            family(
                "devplane_frontdoor_provisions",
                "Zero-touch provisioning requests, by result (created, existing or the refusal).",
                "result",
                &self.provisions,
            ),
        ]
    }
}
