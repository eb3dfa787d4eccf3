//! The front door's view of the API: one watch per kind (Devices, DeviceModels, devplane's own
//! Secrets by label, DeviceCommands) feeding the registry index and the command index, and
//! acting on what a change means for live sessions — a decommissioned, deleted or revoked
//! device is closed at once, a new desired value or a new command goes down to its session.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use devplane_api::constants::labels;
use devplane_api::v1alpha1::{ConnectionState, Device, DeviceCommand, DeviceModel, Protocol};
use devplane_core::model::ModelKey;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::ingest;
use crate::mqtt::codec::CloseCode;
use crate::sessions::Deliver;
use crate::status::StatusUpdate;
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

/// Start every watch; resolves once each has listed everything once (or on shutdown).
pub async fn start(shared: Arc<Shared>, shutdown: CancellationToken) {
    let client = shared.client.clone();
    let mut waits = Vec::new();

    let (tx, rx) = oneshot::channel();
    waits.push(rx);
    let s = shared.clone();
    let mut seen = HashSet::new();
    tokio::spawn(watch(
        Api::<Device>::all(client.clone()),
        watcher::Config::default(),
        shutdown.clone(),
        tx,
        move |change| match change {
            Change::ListStart => seen.clear(),
            Change::Apply(d) => {
                seen.insert(identity_of(d));
                on_device(&s, d);
            }
            Change::Delete(d) => on_device_gone(&s, &identity_of(d)),
            Change::ListDone => {
                let gone = s.registry.write().retain_devices(&seen);
                for id in gone {
                    on_device_gone(&s, &id);
                }
            }
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
fn offer(handle: &crate::sessions::Handle, deliver: Deliver) {
    if let Err(tokio::sync::mpsc::error::TrySendError::Full(deliver)) =
        handle.tx.try_send(Box::new(deliver))
    {
        let tx = handle.tx.clone();
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
    if desired_changed && let Some(handle) = shared.devices.get(&id) {
        offer(
            &handle,
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
    shared.devices.discard(id);
    check_sessions(shared, id);
}

/// Close the sessions of `id` that may no longer stay; returns whether a device session of it
/// is (still) live.
fn check_sessions(shared: &Shared, id: &Identity) -> bool {
    let now = jiff::Timestamp::now();
    if let Some(handle) = shared.devices.get(id) {
        let problem =
            shared
                .registry
                .read()
                .device_session_problem(id, &handle.tag, Protocol::Mqtt, now);
        if let Some(why) = problem {
            let code = if why.administrative() {
                CloseCode::AdministrativeAction
            } else {
                CloseCode::NotAuthorized
            };
            handle.kill.kill(code, why.to_string());
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

fn on_command(shared: &Shared, command: &DeviceCommand) {
    let now = jiff::Timestamp::now();
    let (device, entry) = shared.commands.lock().apply(command);
    if !entry.deliverable(now) {
        return;
    }
    shared.command_arrived.notify_waiters();
    if let Some(handle) = shared.devices.get(&device) {
        offer(
            &handle,
            Deliver {
                topic: device.downlink(&Downlink::Command(&entry.name)).into(),
                payload: Bytes::from(entry.payload(now).to_string()),
                qos: 1,
                command: Some(entry.name.clone()),
            },
        );
    }
}
