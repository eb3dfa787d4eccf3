//! DeviceCommands as the watch shows them, by device (pure): which are waiting to be delivered,
//! and which a response may answer.

use std::collections::{BTreeMap, HashMap, HashSet};

use devplane_api::v1alpha1::{CommandPhase, DeviceCommand};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::sessions::CommandRef;
use crate::topic::Identity;

/// The reason the DeviceCommand controller gives a valid command waiting for its device.
pub const WAITING_FOR_DELIVERY: &str = "WaitingForDelivery";

/// What the front door knows of one command.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandEntry {
    /// The command's name (its correlation id on the wire).
    pub name: String,
    /// Its uid: a command created again under the same name is another command.
    pub uid: String,
    /// The service called.
    pub service: String,
    /// Its parameters.
    pub params: BTreeMap<String, Value>,
    /// Its timeout.
    pub timeout_seconds: i32,
    /// When it was created.
    pub created: jiff::Timestamp,
    /// Its phase.
    pub phase: Option<CommandPhase>,
    /// Its reason.
    pub reason: Option<String>,
}

impl CommandEntry {
    /// The entry of a DeviceCommand object.
    pub fn from_command(command: &DeviceCommand) -> CommandEntry {
        let status = command.status.clone().unwrap_or_default();
        CommandEntry {
            name: command.name_any(),
            uid: command.metadata.uid.clone().unwrap_or_default(),
            service: command.spec.service.clone(),
            params: command.spec.params.clone(),
            timeout_seconds: command.spec.timeout_seconds,
            created: command
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(jiff::Timestamp::now),
            phase: status.phase,
            reason: status.reason,
        }
    }

    /// The reference a downlink carries to it.
    pub fn reference(&self) -> CommandRef {
        CommandRef {
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// When it times out.
    pub fn deadline(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.created.as_second() + i64::from(self.timeout_seconds))
            .unwrap_or(self.created)
    }

    /// Whether it should go to its device now: validated by the controller, not yet sent, not
    /// timed out.
    pub fn deliverable(&self, now: jiff::Timestamp) -> bool {
        self.phase == Some(CommandPhase::Pending)
            && self.reason.as_deref() == Some(WAITING_FOR_DELIVERY)
            && now < self.deadline()
    }

    /// Whether a response may still answer it.
    pub fn answerable(&self) -> bool {
        matches!(
            self.phase,
            Some(CommandPhase::Pending) | Some(CommandPhase::Sent)
        )
    }

    /// The downlink payload.
    pub fn payload(&self, now: jiff::Timestamp) -> Value {
        let left = (self.deadline().as_second() - now.as_second()).max(1);
        json!({
            "service": self.service,
            "params": self.params,
            "timeoutSeconds": left,
            "uid": self.uid,
        })
    }
}

/// Commands by target device.
#[derive(Default)]
pub struct Commands {
    by_device: HashMap<Identity, BTreeMap<String, CommandEntry>>,
    /// Which device each command (namespace, name) targets, for deletes.
    targets: HashMap<(String, String), Identity>,
}

impl Commands {
    /// Record a command; returns its device and entry.
    pub fn apply(&mut self, command: &DeviceCommand) -> (Identity, CommandEntry) {
        let namespace = command.namespace().unwrap_or_default();
        let device = Identity::new(namespace.clone(), command.spec.device.clone());
        let entry = CommandEntry::from_command(command);
        // A command deleted and created again for another device while the watch was away
        // comes back as one change: the old device must lose it, or it could still fetch and
        // answer what is now another device's command.
        if let Some(before) = self
            .targets
            .insert((namespace.clone(), entry.name.clone()), device.clone())
            && before != device
            && let Some(commands) = self.by_device.get_mut(&before)
        {
            commands.remove(&entry.name);
            if commands.is_empty() {
                self.by_device.remove(&before);
            }
        }
        self.by_device
            .entry(device.clone())
            .or_default()
            .insert(entry.name.clone(), entry.clone());
        (device, entry)
    }

    /// Forget a command.
    pub fn delete(&mut self, namespace: &str, name: &str) {
        if let Some(device) = self
            .targets
            .remove(&(namespace.to_string(), name.to_string()))
            && let Some(commands) = self.by_device.get_mut(&device)
        {
            commands.remove(name);
            if commands.is_empty() {
                self.by_device.remove(&device);
            }
        }
    }

    /// Keep only the commands in `keep` (namespace, name) after a re-list.
    pub fn retain(&mut self, keep: &HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = self
            .targets
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.delete(&namespace, &name);
        }
    }

    /// The commands waiting for `device`, oldest first.
    pub fn deliverable(&self, device: &Identity, now: jiff::Timestamp) -> Vec<CommandEntry> {
        let mut out: Vec<CommandEntry> = self
            .by_device
            .get(device)
            .map(|c| c.values().filter(|c| c.deliverable(now)).cloned().collect())
            .unwrap_or_default();
        out.sort_by_key(|c| c.created);
        out
    }

    /// A command of `device` by name.
    pub fn get(&self, device: &Identity, name: &str) -> Option<&CommandEntry> {
        self.by_device.get(device)?.get(name)
    }

    /// The uids of the commands a response may still answer.
    pub fn answerable_uids(&self) -> HashSet<&str> {
        self.by_device
            .values()
            .flat_map(BTreeMap::values)
            .filter(|c| c.answerable())
            .map(|c| c.uid.as_str())
            .collect()
    }

    /// Whether `command` is still the command of its name for `device`: not deleted, nor
    /// created again under the name since.
    pub fn is_current(&self, device: &Identity, command: &CommandRef) -> bool {
        self.get(device, &command.name)
            .is_some_and(|c| c.uid == command.uid)
    }

    /// Record locally that a command was answered (before the API confirms it): whether this
    /// answer is the first. A device that answers again before the watch shows the first
    /// answer must not have the later one written over it.
    pub fn mark_answered(&mut self, device: &Identity, name: &str, succeeded: bool) -> bool {
        match self.by_device.get_mut(device).and_then(|c| c.get_mut(name)) {
            Some(c) if c.answerable() => {
                c.phase = Some(if succeeded {
                    CommandPhase::Succeeded
                } else {
                    CommandPhase::Failed
                });
                true
            }
            _ => false,
        }
    }

    /// Record locally that a command was sent (before the API confirms it), so it is not sent
    /// twice. A message of a command since deleted and created again under its name marks
    /// nothing.
    pub fn mark_sent(&mut self, device: &Identity, command: &CommandRef) {
        if let Some(c) = self
            .by_device
            .get_mut(device)
            .and_then(|c| c.get_mut(&command.name))
            && c.uid == command.uid
            && c.phase == Some(CommandPhase::Pending)
        {
            c.phase = Some(CommandPhase::Sent);
        }
    }
}

/// A DeviceCommand `namespace/name` (with `uid`) for `device`, validated and waiting for
/// delivery, as the watch shows one (tests).
#[cfg(test)]
pub(crate) fn waiting_command(
    namespace: &str,
    device: &str,
    name: &str,
    uid: &str,
) -> DeviceCommand {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: {name}, namespace: {namespace}, uid: {uid}, creationTimestamp: "{}"}}
spec: {{device: {device}, service: reboot, timeoutSeconds: 600}}
status: {{phase: Pending, reason: {WAITING_FOR_DELIVERY}}}
"#,
        jiff::Timestamp::now(),
    ))
    .expect("command yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str, phase: &str, reason: &str, created: &str) -> DeviceCommand {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceCommand
metadata: {{name: {name}, namespace: ns, creationTimestamp: "{created}"}}
spec: {{device: d, service: reboot, timeoutSeconds: 60}}
status: {{phase: {phase}, reason: {reason}}}
"#
        ))
        .expect("command yaml")
    }

    fn at(t: &str) -> jiff::Timestamp {
        t.parse().expect("time")
    }

    #[test]
    fn only_validated_pending_commands_within_their_timeout_are_delivered() {
        let mut commands = Commands::default();
        commands.apply(&command(
            "c2",
            "Pending",
            WAITING_FOR_DELIVERY,
            "2026-01-01T00:00:10Z",
        ));
        commands.apply(&command(
            "c1",
            "Pending",
            WAITING_FOR_DELIVERY,
            "2026-01-01T00:00:00Z",
        ));
        commands.apply(&command(
            "c3",
            "Pending",
            "ModelNotResolved",
            "2026-01-01T00:00:00Z",
        ));
        commands.apply(&command(
            "c4",
            "Sent",
            WAITING_FOR_DELIVERY,
            "2026-01-01T00:00:00Z",
        ));
        let device = Identity::new("ns", "d");
        let names = |commands: &Commands, now: &str| -> Vec<String> {
            commands
                .deliverable(&device, at(now))
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names(&commands, "2026-01-01T00:00:30Z"), vec!["c1", "c2"]);
        assert_eq!(
            names(&commands, "2026-01-01T00:01:05Z"),
            vec!["c2"],
            "c1 timed out"
        );
        let stale = CommandRef {
            name: "c2".into(),
            uid: "an-older-c2".into(),
        };
        assert!(!commands.is_current(&device, &stale));
        commands.mark_sent(&device, &stale);
        assert_eq!(
            names(&commands, "2026-01-01T00:00:30Z"),
            vec!["c1", "c2"],
            "a message of another c2 marks nothing"
        );
        let c2 = commands.get(&device, "c2").expect("c2").reference();
        assert!(commands.is_current(&device, &c2));
        commands.mark_sent(&device, &c2);
        assert_eq!(names(&commands, "2026-01-01T00:00:30Z"), vec!["c1"]);
        assert!(
            commands
                .get(&device, "c4")
                .is_some_and(CommandEntry::answerable)
        );
        commands.delete("ns", "c4");
        assert!(commands.get(&device, "c4").is_none());
    }

    #[test]
    fn the_first_answer_to_a_command_stands() {
        let mut commands = Commands::default();
        commands.apply(&command(
            "c1",
            "Sent",
            WAITING_FOR_DELIVERY,
            "2026-01-01T00:00:00Z",
        ));
        let device = Identity::new("ns", "d");
        assert!(commands.mark_answered(&device, "c1", true));
        assert!(
            !commands.mark_answered(&device, "c1", false),
            "answered already"
        );
        let entry = commands.get(&device, "c1").expect("entry");
        assert_eq!(entry.phase, Some(CommandPhase::Succeeded));
        assert!(!entry.answerable());
        assert!(!commands.mark_answered(&device, "unknown", true));
    }

    #[test]
    fn a_command_that_comes_back_for_another_device_leaves_the_first_one() {
        let mut commands = Commands::default();
        let created = "2026-01-01T00:00:00Z";
        commands.apply(&command("c1", "Pending", WAITING_FOR_DELIVERY, created));
        // Deleted and created again for device e while the watch was away: one change.
        let mut again = command("c1", "Pending", WAITING_FOR_DELIVERY, created);
        again.spec.device = "e".into();
        commands.apply(&again);
        let (d, e) = (Identity::new("ns", "d"), Identity::new("ns", "e"));
        let now = at("2026-01-01T00:00:30Z");
        assert!(
            commands.get(&d, "c1").is_none(),
            "d can no longer answer it"
        );
        assert!(commands.deliverable(&d, now).is_empty(), "nor fetch it");
        assert_eq!(commands.deliverable(&e, now).len(), 1);
        commands.delete("ns", "c1");
        assert!(commands.get(&e, "c1").is_none());
        assert!(commands.by_device.is_empty());
    }
}
