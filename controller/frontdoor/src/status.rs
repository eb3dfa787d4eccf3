//! Writing what the front door observes back to the API, in batches and rate-limited: status
//! is no telemetry store.
//!
//! - Devices: `status.connection` (state, last seen, protocol, address, replica), `status.reported`
//!   and the `Connected` / `TwinSynced` conditions, by server-side apply with the front door's
//!   own field manager. A connect, a disconnect or new reported values are written within a
//!   flush tick; "last seen" alone at most once per interval per device.
//! - DeviceCommands: `Sent` when delivered, `Succeeded` / `Failed` with the output when the
//!   device answers (merge patches, so the controller's fields stay).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devplane_api::constants::conditions::{CONNECTED, TWIN_SYNCED};
use devplane_api::constants::field_managers;
use devplane_api::v1alpha1::{
    CommandPhase, ConnectionState, ConnectionStatus, Device, DeviceCommand, Gateway, Protocol,
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::sessions::CommandRef;
use crate::topic::Identity;
use crate::uplink::CommandResponse;

/// Something to record in a Device's status.
#[derive(Debug)]
pub enum StatusUpdate {
    /// A session started.
    Connected {
        /// The device.
        id: Identity,
        /// Peer address.
        address: String,
        /// Protocol.
        protocol: Protocol,
    },
    /// The session ended.
    Disconnected {
        /// The device.
        id: Identity,
    },
    /// The device was heard from.
    Seen {
        /// The device.
        id: Identity,
    },
    /// Reported attribute values.
    Reported {
        /// The device.
        id: Identity,
        /// Values.
        values: BTreeMap<String, Value>,
    },
    /// The desired attributes changed: TwinSynced is to be recomputed.
    DesiredChanged {
        /// The device.
        id: Identity,
    },
    /// A gateway logged a sub-device in.
    ConnectedVia {
        /// The sub-device.
        id: Identity,
        /// The gateway.
        gateway: Identity,
        /// The gateway's peer address.
        address: String,
    },
    /// A gateway's own session, or how many sub-devices it has logged in.
    Gateway {
        /// The gateway.
        id: Identity,
        /// What changed.
        change: GatewayChange,
    },
}

/// A change to a Gateway's status.
#[derive(Debug)]
pub enum GatewayChange {
    /// Its session started, from this address.
    Connected(String),
    /// Its session ended.
    Disconnected,
    /// It was heard from.
    Seen,
    /// Sub-devices logged in through it now.
    Active(usize),
}

/// Something to record in a DeviceCommand's status.
#[derive(Debug)]
pub enum CommandUpdate {
    /// Delivered to the device.
    Sent {
        /// Namespace.
        namespace: String,
        /// The command.
        command: CommandRef,
    },
    /// The device answered.
    Completed {
        /// Namespace.
        namespace: String,
        /// The command.
        command: CommandRef,
        /// The answer.
        response: CommandResponse,
    },
}

/// A session that started: from where, over what, through which gateway.
#[derive(Debug)]
struct Session {
    address: String,
    protocol: Protocol,
    gateway: Option<String>,
}

#[derive(Default)]
struct Pending {
    online: Option<(bool, Option<Session>)>,
    seen: bool,
    reported: BTreeMap<String, Value>,
    recheck: bool,
}

impl Pending {
    fn urgent(&self) -> bool {
        self.online.is_some() || !self.reported.is_empty() || self.recheck
    }
}

/// What this writer last wrote for a device (its fields; fresher than the watch).
struct Written {
    connection: ConnectionStatus,
    reported: BTreeMap<String, Value>,
    at: Instant,
}

fn now_time() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Whether reported values match every desired value; the keys that differ otherwise.
pub fn twin_differences(
    desired: &BTreeMap<String, Value>,
    reported: &BTreeMap<String, Value>,
) -> Vec<String> {
    desired
        .iter()
        .filter(|(k, v)| reported.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The device status writer: runs until shutdown, then writes what is pending once more.
pub async fn run_device_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<StatusUpdate>,
    shutdown: CancellationToken,
) {
    let mut book = Book::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            update = rx.recv() => match update {
                Some(update) => {
                    book.record(update);
                    while let Ok(more) = rx.try_recv() {
                        book.record(more);
                    }
                    continue;
                }
                None => true,
            },
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        if stopping {
            while let Ok(more) = rx.try_recv() {
                book.record(more);
            }
        }
        flush(&shared, &mut book.pending, &mut book.written, stopping).await;
        flush_gateways(&shared, &mut book, stopping).await;
        if stopping {
            return;
        }
    }
}

/// What the writer has to write and what it wrote.
#[derive(Default)]
struct Book {
    pending: HashMap<Identity, Pending>,
    written: HashMap<Identity, Written>,
    gateways: HashMap<Identity, GatewayPending>,
    gateways_written: HashMap<Identity, GatewayWritten>,
}

/// A gateway's status change waiting to be written.
#[derive(Default)]
struct GatewayPending {
    /// Some(Some(address)): connected; Some(None): disconnected.
    online: Option<Option<String>>,
    seen: bool,
    active: Option<usize>,
}

/// What this writer last wrote for a gateway.
struct GatewayWritten {
    connection: ConnectionStatus,
    active: usize,
    at: Instant,
}

impl Book {
    fn record(&mut self, update: StatusUpdate) {
        let StatusUpdate::Gateway { id, change } = update else {
            record(&mut self.pending, update);
            return;
        };
        let p = self.gateways.entry(id).or_default();
        match change {
            GatewayChange::Connected(address) => {
                p.online = Some(Some(address));
                p.seen = true;
            }
            GatewayChange::Disconnected => {
                p.online = Some(None);
                p.seen = true;
            }
            GatewayChange::Seen => p.seen = true,
            GatewayChange::Active(n) => p.active = Some(n),
        }
    }
}

fn record(pending: &mut HashMap<Identity, Pending>, update: StatusUpdate) {
    match update {
        StatusUpdate::Connected {
            id,
            address,
            protocol,
        } => {
            let p = pending.entry(id).or_default();
            let session = Session {
                address,
                protocol,
                gateway: None,
            };
            p.online = Some((true, Some(session)));
            p.seen = true;
        }
        StatusUpdate::ConnectedVia {
            id,
            gateway,
            address,
        } => {
            let p = pending.entry(id).or_default();
            let session = Session {
                address,
                protocol: Protocol::Mqtt,
                gateway: Some(gateway.to_string()),
            };
            p.online = Some((true, Some(session)));
            p.seen = true;
        }
        StatusUpdate::Gateway { .. } => {}
        StatusUpdate::Disconnected { id } => {
            let p = pending.entry(id).or_default();
            // A session that started and ended within one flush still happened: keep it, so
            // that the device is recorded as having connected (firstConnected, its address).
            let session = match p.online.take() {
                Some((true, session)) => session,
                _ => None,
            };
            p.online = Some((false, session));
            p.seen = true;
        }
        StatusUpdate::Seen { id } => pending.entry(id).or_default().seen = true,
        StatusUpdate::Reported { id, values } => {
            let p = pending.entry(id).or_default();
            p.reported.extend(values);
            p.seen = true;
        }
        StatusUpdate::DesiredChanged { id } => pending.entry(id).or_default().recheck = true,
    }
}

async fn flush(
    shared: &Arc<Shared>,
    pending: &mut HashMap<Identity, Pending>,
    written: &mut HashMap<Identity, Written>,
    everything: bool,
) {
    let interval = shared.settings.status_interval;
    let due: Vec<Identity> = pending
        .iter()
        .filter(|(id, p)| {
            everything
                || p.urgent()
                || (p.seen && written.get(*id).is_none_or(|w| w.at.elapsed() >= interval))
        })
        .map(|(id, _)| id.clone())
        .collect();
    // In chunks: thousands of devices connecting at once must not mean thousands of
    // patches held in memory at once.
    for chunk in due.chunks(64) {
        let mut writes = Vec::with_capacity(chunk.len());
        for id in chunk {
            if let Some(p) = pending.remove(id)
                && let Some(patch) = build(shared, id, p, written)
            {
                writes.push((id.clone(), patch));
            }
        }
        let results: Vec<(Identity, bool)> = futures::stream::iter(writes)
            .map(|(id, patch)| async move {
                let ok = write_device_status(shared, &id, &patch).await;
                (id, ok)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, ok) in results {
            shared
                .metrics
                .status_writes
                .inc(if ok { "ok" } else { "error" });
            if let Some(w) = written.get(&id)
                && w.connection.state == ConnectionState::Offline
            {
                // Offline and written: nothing more will come for it until it reconnects.
                written.remove(&id);
            }
        }
    }
}

/// Write the gateways' pending status: connection, `activeSubDevices` and `Connected`.
async fn flush_gateways(shared: &Arc<Shared>, book: &mut Book, everything: bool) {
    let interval = shared.settings.status_interval;
    let due: Vec<Identity> = book
        .gateways
        .iter()
        .filter(|(id, p)| {
            everything
                || p.online.is_some()
                || p.active.is_some()
                || (p.seen
                    && book
                        .gateways_written
                        .get(*id)
                        .is_none_or(|w| w.at.elapsed() >= interval))
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in due {
        let Some(p) = book.gateways.remove(&id) else {
            continue;
        };
        let Some(patch) = build_gateway(shared, &id, p, &mut book.gateways_written) else {
            continue;
        };
        let ok = write_status::<Gateway>(shared, &id, &patch).await;
        shared
            .metrics
            .status_writes
            .inc(if ok { "ok" } else { "error" });
    }
}

/// The status patch for one gateway, or None when it is not known.
fn build_gateway(
    shared: &Shared,
    id: &Identity,
    p: GatewayPending,
    written: &mut HashMap<Identity, GatewayWritten>,
) -> Option<Value> {
    let registry = shared.registry.read();
    let entry = registry.gateway(id)?;
    let previous = written.get(id);
    let mut connection = previous
        .map(|w| w.connection.clone())
        .or_else(|| entry.connection.clone())
        .unwrap_or_default();
    let active = p.active.or(previous.map(|w| w.active)).unwrap_or_default();
    let now = now_time();
    let replica = shared.settings.replica.clone();
    match p.online {
        Some(Some(address)) => {
            connection.state = ConnectionState::Online;
            connection.protocol = Some(Protocol::Mqtt);
            connection.address = Some(address);
            connection.front_door = Some(replica.clone());
            connection.connected_at = Some(now.clone());
            if connection.first_connected.is_none() {
                connection.first_connected = Some(now.clone());
            }
        }
        Some(None) => connection.state = ConnectionState::Offline,
        None => {}
    }
    if p.seen {
        connection.last_seen = Some(now.clone());
    }
    let mut conditions: Vec<Condition> = entry
        .connected
        .as_ref()
        .map(|s| s.condition(CONNECTED))
        .into_iter()
        .collect();
    let online = connection.state == ConnectionState::Online;
    devplane_api::conditions::set(
        &mut conditions,
        CONNECTED,
        online,
        if online { "Online" } else { "Offline" },
        if online {
            format!("connected with {active} sub-devices logged in, to {replica}")
        } else {
            "no live session".to_string()
        },
        Some(entry.generation),
        &now,
    );
    drop(registry);
    let patch = json!({
        "apiVersion": Gateway::api_version(&()),
        "kind": Gateway::kind(&()),
        "status": {
            "connection": connection,
            "activeSubDevices": active,
            "conditions": conditions,
        },
    });
    written.insert(
        id.clone(),
        GatewayWritten {
            connection,
            active,
            at: Instant::now(),
        },
    );
    Some(patch)
}

/// Apply a device status patch; false when it failed (logged).
async fn write_device_status(shared: &Shared, id: &Identity, patch: &Value) -> bool {
    write_status::<Device>(shared, id, patch).await
}

/// Apply a status patch to a Device or Gateway under the front door's field manager; false
/// when it failed (logged). One that is gone needs no status.
async fn write_status<K>(shared: &Shared, id: &Identity, patch: &Value) -> bool
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(shared.client.clone(), &id.namespace);
    let result = api
        .patch_status(
            &id.name,
            &PatchParams::apply(field_managers::FRONTDOOR).force(),
            &Patch::Apply(patch),
        )
        .await;
    match result {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => true,
        Err(e) => {
            let kind = K::kind(&());
            tracing::warn!(%kind, object = %id, error = %devplane_core::report::chain(&e), "cannot write status");
            false
        }
    }
}

/// The status patch for one device, or None when there is nothing to write.
fn build(
    shared: &Shared,
    id: &Identity,
    p: Pending,
    written: &mut HashMap<Identity, Written>,
) -> Option<Value> {
    let registry = shared.registry.read();
    let entry = registry.device(id)?;
    let replica = shared.settings.replica.clone();
    // Another replica holds the device now (the API says so): its status stands, and ours is
    // out of date.
    let elsewhere = entry.connection.as_ref().is_some_and(|c| {
        c.state == ConnectionState::Online && c.front_door.as_ref().is_some_and(|r| *r != replica)
    });
    if elsewhere && !matches!(p.online, Some((true, _))) {
        written.remove(id);
        return None;
    }
    let previous = written.get(id).filter(|_| !elsewhere);
    let mut connection = previous
        .map(|w| w.connection.clone())
        .or_else(|| entry.connection.clone())
        .unwrap_or_default();
    let mut reported = previous
        .map(|w| w.reported.clone())
        .unwrap_or_else(|| entry.reported.clone());
    let now = now_time();
    if let Some((online, session)) = p.online {
        if let Some(session) = session {
            connection.protocol = Some(session.protocol);
            connection.address = Some(session.address);
            connection.gateway = session.gateway;
            connection.front_door = Some(replica.clone());
            connection.connected_at = Some(now.clone());
            if connection.first_connected.is_none() {
                connection.first_connected = Some(now.clone());
            }
        }
        connection.state = if online {
            ConnectionState::Online
        } else {
            ConnectionState::Offline
        };
    }
    if p.seen {
        connection.last_seen = Some(now.clone());
    }
    reported.extend(p.reported);

    let mut conditions: Vec<Condition> = [
        (CONNECTED, &entry.connected),
        (TWIN_SYNCED, &entry.twin_synced),
    ]
    .into_iter()
    .filter_map(|(type_, since)| since.as_ref().map(|s| s.condition(type_)))
    .collect();
    let online = connection.state == ConnectionState::Online;
    devplane_api::conditions::set(
        &mut conditions,
        CONNECTED,
        online,
        if online { "Online" } else { "Offline" },
        match (&connection.address, online) {
            (Some(address), true) => format!(
                "connected over {} from {address} to {replica}",
                connection.protocol.map(|p| p.as_str()).unwrap_or("mqtt")
            ),
            _ => "no live session".to_string(),
        },
        Some(entry.generation),
        &now,
    );
    let differences = twin_differences(&entry.desired, &reported);
    devplane_api::conditions::set(
        &mut conditions,
        TWIN_SYNCED,
        differences.is_empty(),
        if differences.is_empty() {
            "InSync"
        } else {
            "Differs"
        },
        if differences.is_empty() {
            "reported attributes match every desired value".to_string()
        } else {
            format!(
                "reported differs from desired for: {}",
                differences.join(", ")
            )
        },
        Some(entry.generation),
        &now,
    );
    drop(registry);
    let patch = json!({
        "apiVersion": Device::api_version(&()),
        "kind": Device::kind(&()),
        "status": {
            "connection": connection,
            "reported": reported,
            "conditions": conditions,
        },
    });
    written.insert(
        id.clone(),
        Written {
            connection,
            reported,
            at: Instant::now(),
        },
    );
    Some(patch)
}

/// The DeviceCommand status writer.
pub async fn run_command_writer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<CommandUpdate>,
    shutdown: CancellationToken,
) {
    loop {
        let update = tokio::select! {
            next = rx.recv() => match next {
                Some(u) => u,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        // In order: a fast answer must not be overwritten by its own "Sent".
        write_command(&shared, update).await;
    }
}

async fn write_command(shared: &Shared, update: CommandUpdate) {
    let now = now_time();
    let (namespace, command, status) = match update {
        CommandUpdate::Sent { namespace, command } => (
            namespace,
            command,
            json!({
                "phase": CommandPhase::Sent,
                "sentAt": now,
                "reason": "Delivered",
                "message": format!("delivered to the device by {}", shared.settings.replica),
            }),
        ),
        CommandUpdate::Completed {
            namespace,
            command,
            response,
        } => (
            namespace,
            command,
            json!({
                "phase": if response.succeeded { CommandPhase::Succeeded } else { CommandPhase::Failed },
                "output": response.output,
                "reason": if response.succeeded { "Succeeded" } else { "DeviceReportedFailure" },
                "message": response.message.unwrap_or_else(|| {
                    if response.succeeded { "the device carried the command out".into() } else { "the device reported a failure".into() }
                }),
                "completedAt": now,
            }),
        ),
    };
    let api: Api<DeviceCommand> = Api::namespaced(shared.client.clone(), &namespace);
    // The uid is a precondition: a command deleted and created again under its name while
    // this waited is another command, and this is not its status (409).
    let mut patch = json!({ "status": status });
    if !command.uid.is_empty() {
        patch["metadata"] = json!({ "uid": command.uid });
    }
    let name = command.name;
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("UID") => {
                tracing::debug!(command = %format!("{namespace}/{name}"), "the command was created again; its predecessor's status is dropped");
                return;
            }
            Err(e) => {
                tracing::warn!(command = %format!("{namespace}/{name}"), attempt, error = %devplane_core::report::chain(&e), "cannot write command status; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_that_starts_and_ends_within_one_flush_is_still_recorded() {
        let mut pending = HashMap::new();
        let id = Identity::new("ns", "d");
        record(
            &mut pending,
            StatusUpdate::Connected {
                id: id.clone(),
                address: "127.0.0.1:5000".into(),
                protocol: Protocol::Mqtt,
            },
        );
        record(&mut pending, StatusUpdate::Disconnected { id: id.clone() });
        let (online, session) = pending[&id].online.as_ref().expect("a change");
        assert!(!online, "it ended Offline");
        assert_eq!(
            session.as_ref().map(|s| s.address.as_str()),
            Some("127.0.0.1:5000"),
            "the session is kept, so firstConnected gets written"
        );
    }

    #[test]
    fn the_twin_is_synced_when_every_desired_value_is_reported() {
        let desired = BTreeMap::from([("interval".to_string(), json!(600))]);
        let mut reported = BTreeMap::from([("interval".to_string(), json!(300))]);
        assert_eq!(twin_differences(&desired, &reported), vec!["interval"]);
        reported.insert("interval".into(), json!(600));
        reported.insert("extra".into(), json!(true));
        assert!(twin_differences(&desired, &reported).is_empty());
        assert!(twin_differences(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }
}
