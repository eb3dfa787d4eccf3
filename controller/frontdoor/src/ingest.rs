//! Ingest: an uplink message judged against the device's model becomes an [`Accepted`] record,
//! which goes through one bounded channel to the ingest task. The task counts it, hands it to
//! the northbound stream, and passes on what changes resource status (reported attributes,
//! command results). Sessions PUBACK only after the channel took the record.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use devplane_core::ResolvedModel;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::registry::DeviceEntry;
use crate::sessions::CommandRef;
use crate::status::{CommandUpdate, StatusUpdate};
use crate::topic::{Identity, North, Uplink};
use crate::uplink::{self, CommandResponse, Rejection};

/// What accepted data changes besides the northbound stream.
#[derive(Debug)]
pub enum Effect {
    /// Reported attribute values for `status.reported`.
    Reported(Identity, BTreeMap<String, Value>),
    /// A command's result.
    Command(Identity, CommandRef, CommandResponse),
}

/// A message ingest accepted, ready for the northbound stream.
#[derive(Debug)]
pub struct Accepted {
    /// The device's namespace (the northbound tenant).
    pub namespace: String,
    /// `telemetry`, `event`, `attributes`, `command`, `presence` or `lifecycle`.
    pub kind: &'static str,
    /// Northbound topic and normalized payload, one per record (a telemetry batch has several).
    pub messages: Vec<(Arc<str>, Bytes)>,
    /// Status changes to make.
    pub effect: Option<Effect>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The identity part of every northbound record.
fn envelope(
    device: &Identity,
    model: Option<&ResolvedModel>,
    maintenance: bool,
) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("namespace".into(), json!(device.namespace));
    map.insert("device".into(), json!(device.name));
    if let Some(model) = model {
        map.insert("model".into(), json!(model.key.to_string()));
        map.insert("modelVersion".into(), json!(model.version.to_string()));
    }
    map.insert("receivedAt".into(), json!(now_ms()));
    if maintenance {
        map.insert("maintenance".into(), json!(true));
    }
    map
}

fn record(mut envelope: serde_json::Map<String, Value>, fields: Value) -> Bytes {
    if let Value::Object(fields) = fields {
        envelope.extend(fields);
    }
    Bytes::from(Value::Object(envelope).to_string())
}

/// Judge an uplink message of `device` on its model: Ok(record for ingest) or why not.
pub fn judge(
    shared: &Shared,
    device: &Identity,
    uplink: &Uplink<'_>,
    payload: &[u8],
) -> Result<Accepted, Rejection> {
    let (cached, maintenance) = {
        let registry = shared.registry.read();
        (
            registry.cached_model(device),
            registry
                .device(device)
                .is_some_and(DeviceEntry::in_maintenance),
        )
    };
    let model = match cached {
        Some(result) => result,
        None => shared.registry.write().model_of(device),
    }
    .map_err(|why| Rejection {
        reason: "ModelUnavailable",
        field: String::new(),
        message: why,
    })?;
    let base = envelope(device, Some(&model), maintenance);
    let namespace = device.namespace.clone();
    match uplink {
        Uplink::Telemetry => {
            let samples = uplink::telemetry(&model, payload)?;
            let topic: Arc<str> = device.north(&North::Telemetry).into();
            Ok(Accepted {
                namespace,
                kind: "telemetry",
                messages: samples
                    .into_iter()
                    .map(|s| (topic.clone(), record(base.clone(), json!(s))))
                    .collect(),
                effect: None,
            })
        }
        Uplink::Event(id) => {
            let event = uplink::event(&model, id, payload)?;
            let mut fields = json!(event);
            fields["event"] = json!(id);
            Ok(Accepted {
                namespace,
                kind: "event",
                messages: vec![(device.north(&North::Event(id)).into(), record(base, fields))],
                effect: None,
            })
        }
        Uplink::Reported => {
            let values = uplink::reported(&model, payload)?;
            Ok(Accepted {
                namespace,
                kind: "attributes",
                messages: vec![(
                    device.north(&North::Attributes).into(),
                    record(base, json!({ "attributes": values })),
                )],
                effect: Some(Effect::Reported(device.clone(), values)),
            })
        }
        Uplink::CommandResponse(name) => {
            let command = shared
                .commands
                .lock()
                .get(device, name)
                .filter(|c| c.answerable())
                .cloned()
                .ok_or_else(|| Rejection {
                    reason: "UnknownCommand",
                    field: String::new(),
                    message: format!(
                        "no command {name:?} is waiting for an answer from this device"
                    ),
                })?;
            let service = model
                .services
                .get(&command.service)
                .ok_or_else(|| Rejection {
                    reason: "UnknownCommand",
                    field: String::new(),
                    message: format!("model {} has no service {:?}", model.key, command.service),
                })?;
            let response = uplink::command_response(&service.definition, payload)?;
            // An answer that names the command it answers by uid answers only that one: not
            // a command created again under its name since.
            if let Some(uid) = response.uid.as_deref()
                && uid != command.uid
            {
                return Err(Rejection {
                    reason: "UnknownCommand",
                    field: "uid".into(),
                    message: format!(
                        "command {name:?} with uid {uid} is gone; the command of that name waiting now has uid {}",
                        command.uid
                    ),
                });
            }
            let fields = json!({
                "command": name,
                "service": command.service,
                "status": if response.succeeded { "Succeeded" } else { "Failed" },
                "output": response.output,
                "message": response.message,
            });
            Ok(Accepted {
                namespace,
                kind: "command",
                messages: vec![(
                    device.north(&North::CommandResponse(name)).into(),
                    record(base, fields),
                )],
                effect: Some(Effect::Command(
                    device.clone(),
                    command.reference(),
                    response,
                )),
            })
        }
    }
}

/// Announce a device going online or offline on the northbound stream.
pub async fn presence(shared: &Shared, device: &Identity, online: bool, address: &str) {
    let _ = shared
        .ingest
        .send(presence_record(device, online, address))
        .await;
}

/// The northbound presence record of a device.
pub fn presence_record(device: &Identity, online: bool, address: &str) -> Accepted {
    let fields = json!({
        "state": if online { "Online" } else { "Offline" },
        "protocol": "mqtt",
        "address": address,
    });
    Accepted {
        namespace: device.namespace.clone(),
        kind: "presence",
        messages: vec![(
            device.north(&North::Presence).into(),
            record(envelope(device, None, false), fields),
        )],
        effect: None,
    }
}

/// Announce a lifecycle change on the northbound stream (never blocks the watch).
pub fn lifecycle(shared: &Shared, device: &Identity, entry: &DeviceEntry) {
    let fields = json!({
        "lifecycle": entry.lifecycle.as_str(),
        "phase": entry.phase.map(|p| p.as_str()),
    });
    let accepted = Accepted {
        namespace: device.namespace.clone(),
        kind: "lifecycle",
        messages: vec![(
            device.north(&North::Lifecycle).into(),
            record(envelope(device, None, entry.in_maintenance()), fields),
        )],
        effect: None,
    };
    if shared.ingest.try_send(accepted).is_err() {
        tracing::debug!(device = %device, "ingest full: lifecycle change not announced northbound");
    }
}

/// The desired-attributes downlink of a device.
pub fn desired_payload(entry: &DeviceEntry) -> Bytes {
    Bytes::from(json!({ "generation": entry.generation, "values": entry.desired }).to_string())
}

/// Kinds that count as uplink messages accepted from devices.
fn is_uplink(kind: &str) -> bool {
    matches!(kind, "telemetry" | "event" | "attributes" | "command")
}

/// The ingest task: count, fan out northbound, pass on status effects.
pub async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Accepted>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            biased;
            received = rx.recv_many(&mut batch, 256) => if received == 0 {
                return;
            },
            _ = shutdown.cancelled() => return,
        };
        for accepted in batch.drain(..) {
            handle(&shared, accepted).await;
        }
    }
}

/// Count one accepted record, fan it out northbound, pass on its status effects.
async fn handle(shared: &Shared, accepted: Accepted) {
    // Responses are judged against the commands as the watch last showed them, so a device
    // that answers twice quickly gets both accepted; the first answer stands, and the others
    // go nowhere.
    if let Some(Effect::Command(id, command, response)) = &accepted.effect
        && !shared
            .commands
            .lock()
            .mark_answered(id, &command.name, response.succeeded)
    {
        tracing::debug!(device = %id, command = %command.name, "a later answer to a command is dropped");
        return;
    }
    if is_uplink(accepted.kind) {
        shared.metrics.accepted.inc(accepted.kind);
    }
    for (topic, payload) in accepted.messages {
        shared
            .north
            .publish(
                &accepted.namespace,
                topic,
                payload,
                &shared.metrics,
                shared.settings.app_stall_timeout,
            )
            .await;
    }
    match accepted.effect {
        Some(Effect::Reported(id, values)) => {
            shared.status_update(StatusUpdate::Reported { id, values })
        }
        Some(Effect::Command(id, command, response)) => {
            shared.command_update(CommandUpdate::Completed {
                namespace: id.namespace,
                command,
                response,
            })
        }
        None => {}
    }
}
