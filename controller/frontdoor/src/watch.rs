//! The front door's view of the API: one watch per kind (Devices, DeviceModels, Gateways,
//! devplane's own Secrets by label, ProvisioningPolicies, DeviceCommands) feeding the registry index and the command index, and
//! acting on what a change means for live sessions — a decommissioned, deleted or revoked
//! device is closed at once, a new desired value or a new command goes down to its session.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use devplane_api::constants::labels;
use devplane_api::v1alpha1::{
    ConnectionState, Device, DeviceCommand, DeviceModel, Gateway, Protocol, ProvisioningPolicy,
};
use devplane_core::model::ModelKey;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::gateway;
use crate::ingest;
use crate::mqtt::codec::CloseCode;
use crate::registry::{Ended, LoginRefusal, Registry};
use crate::sessions::{Deliver, Handle, SubLogin};
use crate::status::{GatewayChange, StatusUpdate};
use crate::topic::{Downlink, Identity};

/// A change the watch reports.
enum Change<'a, K> {
    /// Created or updated (also each object of a re-list).
    Apply(&'a K),
    /// Deleted.
    Delete(&'a K),
    /// A (re-)list starts.
    ListStart,
    /// A (re-)list is complete.
    ListDone,
}

/// Watch a kind until shutdown, calling `handle` with every change; `ready` fires after the
/// first complete list.
async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    shutdown: CancellationToken,
    ready: oneshot::Sender<()>,
    mut handle: impl FnMut(Change<'_, K>) + Send,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let mut ready = Some(ready);
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            Ok(watcher::Event::Init) => handle(Change::ListStart),
            Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                handle(Change::Apply(&o))
            }
            Ok(watcher::Event::Delete(o)) => handle(Change::Delete(&o)),
            Ok(watcher::Event::InitDone) => {
                handle(Change::ListDone);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Err(e) => tracing::warn!(
                kind = %K::kind(&()),
                error = %devplane_core::report::chain(&e),
                "watch failed; retrying with backoff"
            ),
        }
    }
}

fn identity_of<K: kube::Resource>(object: &K) -> Identity {
    Identity::new(object.namespace().unwrap_or_default(), object.name_any())
}

/// What a change to a kind kept by identity (Devices, Gateways) means.
struct Handlers<K> {
    /// Created or updated.
    apply: fn(&Shared, &K),
    /// Deleted (or gone at a re-list).
    gone: fn(&Shared, &Identity),
    /// After a re-list: keep only these in the registry; returns the forgotten.
    retain: fn(&mut Registry, &HashSet<Identity>) -> Vec<Identity>,
}

/// Watch a kind kept in the registry by identity; the receiver fires after the first list.
fn watch_by_identity<K>(
    api: Api<K>,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    handlers: Handlers<K>,
) -> oneshot::Receiver<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (tx, rx) = oneshot::channel();
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        api,
        watcher::Config::default(),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(object) => {
                seen.insert(identity_of(object));
                (handlers.apply)(&s, object);
            }
            Change::Delete(object) => (handlers.gone)(&s, &identity_of(object)),
            Change::ListDone => {
                let gone = (handlers.retain)(&mut s.registry.write(), &seen);
                for id in gone {
                    (handlers.gone)(&s, &id);
                }
            }
        },
    ));
    rx
}

/// Start every watch; resolves once each has listed everything once (or on shutdown).
pub async fn start(shared: Arc<Shared>, shutdown: CancellationToken) {
    let client = shared.client.clone();
    let mut waits = Vec::new();

    waits.push(watch_by_identity(
        Api::<Device>::all(client.clone()),
        &shared,
        &shutdown,
        Handlers {
            apply: on_device,
            gone: on_device_gone,
            retain: Registry::retain_devices,
        },
    ));

    let (tx, rx) = oneshot::channel();
    waits.push(rx);
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        Api::<DeviceModel>::all(client.clone()),
        watcher::Config::default(),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(m) => {
                seen.insert(ModelKey::new(
                    m.namespace().unwrap_or_default(),
                    m.name_any(),
                ));
                s.registry.write().apply_model(m);
            }
            Change::Delete(m) => s.registry.write().delete_model(&ModelKey::new(
                m.namespace().unwrap_or_default(),
                m.name_any(),
            )),
            Change::ListDone => s.registry.write().retain_models(&seen),
        },
    ));

    waits.push(watch_by_identity(
        Api::<Gateway>::all(client.clone()),
        &shared,
        &shutdown,
        Handlers {
            apply: on_gateway,
            gone: on_gateway_gone,
            retain: Registry::retain_gateways,
        },
    ));

    // Only devplane's own Secrets, never all Secrets of the cluster.
    let managed = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let (tx, rx) = oneshot::channel();
    waits.push(rx);
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&managed),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(secret) => {
                seen.insert((secret.namespace().unwrap_or_default(), secret.name_any()));
                let changed = s.registry.write().apply_secret(secret);
                if let Some(id) = changed {
                    check_sessions(&s, &id);
                    s.provisioning.wake(&id);
                }
            }
            Change::Delete(secret) => {
                let changed = s
                    .registry
                    .write()
                    .delete_secret(&secret.namespace().unwrap_or_default(), &secret.name_any());
                if let Some(id) = changed {
                    check_sessions(&s, &id);
                }
            }
            Change::ListDone => {
                let gone = s.registry.write().retain_secrets(&seen);
                for id in gone {
                    check_sessions(&s, &id);
                }
            }
        },
    ));

    let (tx, rx) = oneshot::channel();
    waits.push(rx);
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        Api::<ProvisioningPolicy>::all(client.clone()),
        watcher::Config::default(),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(p) => {
                let id = identity_of(p);
                s.provisioning.apply_policy(p);
                crate::provision::prefetch(&s, &id);
                seen.insert(id);
            }
            Change::Delete(p) => s.provisioning.delete_policy(&identity_of(p)),
            Change::ListDone => s.provisioning.retain_policies(&seen),
        },
    ));

    let (tx, rx) = oneshot::channel();
    waits.push(rx);
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        Api::<DeviceCommand>::all(client),
        watcher::Config::default(),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(c) => {
                seen.insert((c.namespace().unwrap_or_default(), c.name_any()));
                on_command(&s, c);
            }
            Change::Delete(c) => s
                .commands
                .lock()
                .delete(&c.namespace().unwrap_or_default(), &c.name_any()),
            Change::ListDone => s.commands.lock().retain(&seen),
        },
    ));

    for wait in waits {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wait => {}
        }
    }
}

/// Hand a message to a session's queue without blocking the watch.
fn offer(tx: &mpsc::Sender<Box<Deliver>>, deliver: Deliver) {
    if let Err(mpsc::error::TrySendError::Full(deliver)) = tx.try_send(Box::new(deliver)) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(deliver).await;
        });
    }
}

fn on_device(shared: &Shared, device: &Device) {
    let id = identity_of(device);
    let (old, new) = {
        let mut registry = shared.registry.write();
        let old = registry.apply_device(device);
        (old, registry.device(&id).cloned())
    };
    shared.provisioning.device_applied(device, &id);
    let Some(new) = new else {
        return;
    };
    if let Some(old) = &old {
        if old.uid != new.uid {
            shared.devices.discard(&id);
        }
        if (old.lifecycle, old.phase) != (new.lifecycle, new.phase) {
            ingest::lifecycle(shared, &id, &new);
        }
        if old.desired != new.desired {
            // CoAP observers (no MQTT session needed); nobody listening is fine.
            let _ = shared.desired_changed.send(id.clone());
        }
    }
    if !check_sessions(shared, &id) {
        return;
    }
    if let Some(handle) = shared.devices.get(&id)
        && let Some(replica) = connected_elsewhere(shared, &new, handle.started)
    {
        // No replica-to-replica channel: the other replica's presence write is the signal.
        handle.kill.kill(
            CloseCode::SessionTakenOver,
            format!("the device connected again, to front door {replica}"),
        );
        return;
    }
    let desired_changed = old.as_ref().is_some_and(|o| o.desired != new.desired);
    if desired_changed && let Some(tx) = shared.downlink_queue(&id) {
        offer(
            &tx,
            Deliver {
                topic: id.downlink(&Downlink::Desired).into(),
                payload: ingest::desired_payload(&new),
                qos: 1,
                command: None,
            },
        );
        shared.status_update(StatusUpdate::DesiredChanged { id });
    }
}

/// The replica that took the device over after our session started, if another did.
fn connected_elsewhere(
    shared: &Shared,
    entry: &crate::registry::DeviceEntry,
    started: jiff::Timestamp,
) -> Option<String> {
    let connection = entry.connection.as_ref()?;
    let replica = connection.front_door.as_ref()?;
    let newer = connection
        .connected_at
        .as_ref()
        .is_some_and(|at| at.0.as_second() > started.as_second());
    (connection.state == ConnectionState::Online && *replica != shared.settings.replica && newer)
        .then(|| replica.clone())
}

fn on_device_gone(shared: &Shared, id: &Identity) {
    shared.registry.write().delete_device(id);
    shared.provisioning.device_gone(id);
    shared.devices.discard(id);
    check_sessions(shared, id);
}

/// End a session that may no longer stay, saying why (an administrative end for a deleted or
/// decommissioned principal).
fn close(handle: &Handle, why: Ended) {
    let code = if why.administrative() {
        CloseCode::AdministrativeAction
    } else {
        CloseCode::NotAuthorized
    };
    handle.kill.kill(code, why.to_string());
}

/// Close the sessions of `id` that may no longer stay; returns whether a device session of it,
/// or its login through a gateway, is (still) live.
fn check_sessions(shared: &Shared, id: &Identity) -> bool {
    let now = jiff::Timestamp::now();
    if let Some(handle) = shared.gateways.get(id) {
        let problem =
            shared
                .registry
                .read()
                .gateway_session_problem(id, &handle.tag, Protocol::Mqtt, now);
        if let Some(why) = problem {
            close(&handle, why);
        }
    }
    if let Some(login) = shared.sub_logins.get(id) {
        return check_sub_device(shared, id, &login);
    }
    if let Some(handle) = shared.devices.get(id) {
        let problem =
            shared
                .registry
                .read()
                .device_session_problem(id, &handle.tag, Protocol::Mqtt, now);
        if let Some(why) = problem {
            close(&handle, why);
            shared.devices.discard(id);
            return false;
        }
        return true;
    }
    if let Some(handle) = shared.apps.get(id) {
        let problem = shared
            .registry
            .read()
            .application_session_problem(id, &handle.tag, now);
        if let Some(why) = problem {
            handle.kill.kill(CloseCode::NotAuthorized, why.to_string());
        }
    }
    false
}

/// Log a sub-device out of its gateway when it may no longer be logged in (deleted,
/// decommissioned, no longer the gateway's); returns whether it stays logged in.
fn check_sub_device(shared: &Shared, id: &Identity, login: &SubLogin) -> bool {
    let verdict = shared.registry.read().may_log_in(&login.gateway, id, 0);
    let reason = match verdict {
        Ok(()) | Err(LoginRefusal::LimitReached) => return true,
        Err(refusal) => refusal,
    };
    if !shared.sub_logins.logout(id, login.conn) {
        return false;
    }
    tracing::info!(device = %id, gateway = %login.gateway, reason = reason.as_str(), "sub-device logged out");
    gateway::notify_logged_out(
        login,
        id,
        reason.as_str(),
        format!("logged out: {}", reason.as_str()),
    );
    shared.status_update(StatusUpdate::Disconnected { id: id.clone() });
    if shared
        .ingest
        .try_send(ingest::presence_record(id, false, ""))
        .is_err()
    {
        tracing::debug!(device = %id, "ingest full: logout not announced northbound");
    }
    shared.status_update(StatusUpdate::Gateway {
        id: login.gateway.clone(),
        change: GatewayChange::Active(shared.sub_logins.of_gateway(&login.gateway).len()),
    });
    false
}

/// A Gateway changed: its own session may have to end, and its sub-devices may have changed.
fn on_gateway(shared: &Shared, gateway: &Gateway) {
    let id = identity_of(gateway);
    shared.registry.write().apply_gateway(gateway);
    check_sessions(shared, &id);
    for device in shared.sub_logins.of_gateway(&id) {
        check_sessions(shared, &device);
    }
}

fn on_gateway_gone(shared: &Shared, id: &Identity) {
    shared.registry.write().delete_gateway(id);
    check_sessions(shared, id);
    for device in shared.sub_logins.of_gateway(id) {
        check_sessions(shared, &device);
    }
}

fn on_command(shared: &Shared, command: &DeviceCommand) {
    let now = jiff::Timestamp::now();
    let (device, entry) = shared.commands.lock().apply(command);
    if !entry.deliverable(now) {
        return;
    }
    shared.command_arrived.notify_waiters();
    if let Some(tx) = shared.downlink_queue(&device) {
        offer(
            &tx,
            Deliver {
                topic: device.downlink(&Downlink::Command(&entry.name)).into(),
                payload: Bytes::from(entry.payload(now).to_string()),
                qos: 1,
                command: Some(entry.reference()),
            },
        );
    }
}
