//! `metadata.managedFields`: decoding, the manager bookkeeping, and encoding in a stable order.

use std::collections::BTreeMap;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::fieldset::{FieldSet, FieldsError};

/// At most this many `Update` entries are kept (apimachinery's `DefaultMaxUpdateManagers`).
pub(super) const MAX_UPDATE_MANAGERS: usize = 10;
/// Where the oldest `Update` entries are merged when there are too many.
pub(super) const ANCIENT_CHANGES: &str = "ancient-changes";
/// Owner of the fields an object had before its first apply, when nothing tracked them.
pub(super) const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// `Apply` or `Update`; `Apply` sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// What identifies a manager: `Apply` entries by manager and subresource, `Update` entries
/// also by API version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ManagerKey {
    pub manager: String,
    pub operation: Operation,
    /// Empty for `Apply`.
    pub api_version: String,
    /// Empty for the main resource.
    pub subresource: String,
}

impl ManagerKey {
    pub fn apply(manager: &str, subresource: &str) -> ManagerKey {
        ManagerKey {
            manager: manager.to_string(),
            operation: Operation::Apply,
            api_version: String::new(),
            subresource: subresource.to_string(),
        }
    }

    pub fn update(manager: &str, api_version: &str, subresource: &str) -> ManagerKey {
        ManagerKey {
            manager: manager.to_string(),
            operation: Operation::Update,
            api_version: api_version.to_string(),
            subresource: subresource.to_string(),
        }
    }
}

/// One manager's entry.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry {
    /// Empty when the stored entry had none.
    pub api_version: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`, or what the client sent when it could not be parsed.
    pub time: Option<String>,
    pub set: FieldSet,
}

/// Every manager of an object.
#[derive(Clone, Debug, Default)]
pub(super) struct Managed {
    pub entries: BTreeMap<ManagerKey, Entry>,
}

impl Managed {
    /// Decode `metadata.managedFields`; absent or null is empty. Any entry that does not
    /// decode makes the whole list undecodable, as upstream.
    pub fn decode(value: Option<&Value>) -> Result<Managed, FieldsError> {
        let mut managed = Managed::default();
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(managed);
        };
        let entries = Vec::<ManagedFieldsEntry>::deserialize(value).map_err(|e| FieldsError {
            path: "metadata.managedFields".into(),
            problem: e.to_string(),
        })?;
        for (i, e) in entries.into_iter().enumerate() {
            let bad = |problem: String| FieldsError {
                path: format!("metadata.managedFields[{i}]"),
                problem,
            };
            let operation = match e.operation.as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                other => return Err(bad(format!("unexpected operation {other:?}"))),
            };
            if e.fields_type.as_deref() != Some("FieldsV1") {
                return Err(bad(format!(
                    "fieldsType {:?} is not supported",
                    e.fields_type.unwrap_or_default()
                )));
            }
            let set = match &e.fields_v1 {
                Some(f) if !f.0.is_null() => {
                    FieldSet::from_fields_v1(&f.0).map_err(|err| bad(format!("fieldsV1: {err}")))?
                }
                _ => FieldSet::new(),
            };
            let api_version = e.api_version.unwrap_or_default();
            let key = ManagerKey {
                manager: e.manager.unwrap_or_default(),
                operation,
                api_version: match operation {
                    Operation::Apply => String::new(),
                    Operation::Update => api_version.clone(),
                },
                subresource: e.subresource.unwrap_or_default(),
            };
            let time = e.time.map(|t| format_time(t.0));
            match managed.entries.get_mut(&key) {
                // Duplicate identifiers: keep one entry owning both sets.
                Some(existing) => {
                    existing.set.union_with(&set);
                    if time_order(&time) > time_order(&existing.time) {
                        existing.time = time;
                    }
                }
                None => {
                    managed.entries.insert(
                        key,
                        Entry {
                            api_version,
                            time,
                            set,
                        },
                    );
                }
            }
        }
        Ok(managed)
    }

    /// Whether there are no managers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop managers that own nothing.
    pub fn drop_empty(&mut self) {
        self.entries.retain(|_, e| !e.set.is_empty());
    }

    /// Merge the oldest `Update` entries into `ancient-changes` (one per API version) until at
    /// most `max` remain.
    pub fn cap_updates(&mut self, max: usize) {
        loop {
            let updates: Vec<(&ManagerKey, &Entry)> = self
                .entries
                .iter()
                .filter(|(k, _)| k.operation == Operation::Update)
                .collect();
            if updates.len() <= max {
                return;
            }
            let oldest = updates
                .into_iter()
                .filter(|(k, _)| k.manager != ANCIENT_CHANGES)
                .min_by(|(ka, ea), (kb, eb)| {
                    time_order(&ea.time)
                        .cmp(&time_order(&eb.time))
                        .then_with(|| ka.cmp(kb))
                })
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { return };
            let Some(entry) = self.entries.remove(&oldest) else {
                return;
            };
            let bucket = ManagerKey::update(ANCIENT_CHANGES, &entry.api_version, "");
            let merged = match self.entries.remove(&bucket) {
                Some(mut b) => {
                    b.set.union_with(&entry.set);
                    if time_order(&entry.time) > time_order(&b.time) {
                        b.time = entry.time;
                    }
                    b
                }
                None => entry,
            };
            self.entries.insert(bucket, merged);
        }
    }

    /// Encode as a `managedFields` list, sorted as upstream sorts it: by operation, time,
    /// manager, API version and subresource. `None` when there are no managers.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut entries: Vec<(&ManagerKey, &Entry)> = self.entries.iter().collect();
        entries.sort_by(|(ka, ea), (kb, eb)| {
            ka.operation
                .cmp(&kb.operation)
                .then_with(|| time_order(&ea.time).cmp(&time_order(&eb.time)))
                .then_with(|| ka.manager.cmp(&kb.manager))
                .then_with(|| ea.api_version.cmp(&eb.api_version))
                .then_with(|| ka.subresource.cmp(&kb.subresource))
        });
        let list = entries
            .into_iter()
            .map(|(k, e)| {
                let mut obj = Map::new();
                obj.insert("manager".into(), Value::String(k.manager.clone()));
                obj.insert(
                    "operation".into(),
                    Value::String(k.operation.as_str().into()),
                );
                if !e.api_version.is_empty() {
                    obj.insert("apiVersion".into(), Value::String(e.api_version.clone()));
                }
                if let Some(time) = &e.time {
                    obj.insert("time".into(), Value::String(time.clone()));
                }
                obj.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                obj.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !k.subresource.is_empty() {
                    obj.insert("subresource".into(), Value::String(k.subresource.clone()));
                }
                Value::Object(obj)
            })
            .collect();
        Some(Value::Array(list))
    }
}

/// Whether a client-written `managedFields` asks to reset tracking: `[]` or `[{}]`
/// (apimachinery's `isResetManagedFields`).
pub(super) fn is_reset(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Array(items)) => match items.as_slice() {
            [] => true,
            [Value::Object(entry)] => entry
                .values()
                .all(|v| v.is_null() || v.as_str() == Some("")),
            _ => false,
        },
        _ => false,
    }
}

/// Write `managedFields` into `object`'s metadata, or remove it when there is none.
pub(super) fn write(object: &mut Value, encoded: Option<Value>) {
    let Value::Object(obj) = object else { return };
    match encoded {
        Some(list) => {
            let metadata = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = metadata {
                m.insert("managedFields".into(), list);
            }
        }
        None => {
            if let Some(Value::Object(m)) = obj.get_mut("metadata") {
                m.remove("managedFields");
            }
        }
    }
}

fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Normalise an RFC 3339 time to whole seconds in UTC; kept as given if it does not parse.
pub(super) fn normalize_time(now: &str) -> String {
    match jiff::Timestamp::from_str(now) {
        Ok(t) => format_time(t),
        Err(_) => now.to_string(),
    }
}

/// Seconds since the epoch, for ordering; a missing or unparsable time counts as the epoch.
fn time_order(time: &Option<String>) -> i64 {
    time.as_deref()
        .and_then(|t| jiff::Timestamp::from_str(t).ok())
        .map_or(0, |t| t.as_second())
}
