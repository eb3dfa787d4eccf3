//! Server-side apply field management: who owns which field of an object, recorded in
//! `metadata.managedFields`, and the apply merge with its pruning and conflicts.
//!
//! Pure (no IO). Type information comes from the structural schema of a CRD version; object
//! metadata always uses a built-in ObjectMeta description. Where there is no schema, maps are
//! granular and lists atomic.
//!
//! The results are deterministic, so that applying the same configuration twice yields a
//! byte-identical object and the API server can skip the write.

mod fieldset;
mod known;
mod managers;
mod typed;
mod walk;

use std::borrow::Cow;
use std::fmt;

use devplane_schema::Schema;
use serde_json::{Map, Value};

pub use fieldset::{FieldSet, FieldsError};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use fieldset::{PathElement, go_quote};
use managers::{
    BEFORE_FIRST_APPLY, Entry, MAX_UPDATE_MANAGERS, Managed, ManagerKey, Operation, is_reset,
    normalize_time,
};
use typed::Ty;
use walk::Comparison;

/// The longest field manager name the API server accepts.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

impl FieldSet {
    /// Every field present in `object` (leaves, associative-list items by key, set values by
    /// value), excluding the fields that are never tracked (`apiVersion`, `kind`, `metadata`
    /// itself and the server-owned metadata such as `name` or `resourceVersion`).
    pub fn from_object(object: &Value, schema: Option<&Schema>) -> FieldSet {
        walk::fields_of(object, Ty::Root(schema))
    }
}

/// One field an apply would take from another manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The field, e.g. `.spec.size` or `.status.conditions[type="Ready"]`.
    pub field: String,
    /// How that manager got it: `Apply` or `Update`.
    pub operation: String,
    /// The API version of an `Update` manager.
    pub api_version: Option<String>,
    /// The subresource the manager wrote through, if any.
    pub subresource: Option<String>,
}

impl Conflict {
    /// The manager as upstream names it in messages: `"kubectl"`,
    /// `"kubectl-client-side-apply" using v1`, `"ctrl" with subresource "status"`.
    pub fn manager_description(&self) -> String {
        let mut out = go_quote(&self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            out.push_str(&format!(" with subresource {}", go_quote(sub)));
        }
        if self.operation == Operation::Update.as_str() {
            out.push_str(&format!(
                " using {}",
                self.api_version.as_deref().unwrap_or_default()
            ));
        }
        out
    }

    /// The `causes[].message` of the 409: `conflict with "kubectl"`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// `conflict with "kubectl": .spec.size`
impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause_message(), self.field)
    }
}

/// The 409 message upstream gives for apply conflicts.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: {only}");
    }
    let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for c in conflicts {
        by_manager
            .entry(c.manager_description())
            .or_default()
            .push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.into_iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Why an apply was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields the apply would change are owned by other managers and `force` was not set
    /// (409, each conflict a `FieldManagerConflict` cause).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The apply body is not acceptable (400): not an object, no `apiVersion` or `kind`,
    /// `metadata.managedFields` set, a renamed object, or lists that cannot be merged.
    #[error("{0}")]
    Invalid(String),
}

/// Server-side apply of `config` by `manager` onto `live` (None = create). Returns the merged
/// object with an updated `metadata.managedFields`. `subresource` is None for the main
/// resource or Some("status"); for `status` only `.status` of `config` is used.
///
/// Fields the schema would prune stay in the returned object (for the caller's field
/// validation to report) but are neither owned nor counted as changes, so applying the same
/// configuration again returns a byte-identical object (same entries, same times).
#[allow(clippy::too_many_arguments)] // the shape the API layer calls
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    schema: Option<&Schema>,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    check_apply_body(live, config)?;
    let ty = Ty::Root(schema);
    let config = effective_config(config, subresource);
    let known_config = known::known_view(&config, schema);
    walk::check_lists(&known_config, ty).map_err(ApplyError::Invalid)?;
    let now = normalize_time(now);
    let sub = subresource.unwrap_or_default();
    let empty = Value::Object(Map::new());
    let live_value = live.unwrap_or(&empty);

    // A live object whose managedFields do not decode is treated as untracked.
    let mut managed =
        Managed::decode(live_value.pointer("/metadata/managedFields")).unwrap_or_default();
    if managed.is_empty() && live.is_some() {
        // Nothing tracked the existing fields: someone owns them before this apply runs.
        let existing = Comparison::added_by_create(live_value, ty);
        let existing = scope_to_subresource(&existing, subresource);
        if !existing.is_empty() {
            managed.entries.insert(
                ManagerKey::update(BEFORE_FIRST_APPLY, api_version, sub),
                Entry {
                    api_version: api_version.to_string(),
                    time: Some(now.clone()),
                    set: existing,
                },
            );
        }
    }

    let mut merged = merge(live_value, &config, schema);
    let new_set = FieldSet::from_object(&known_config, schema);
    let key = ManagerKey::apply(manager, sub);
    let previous = managed.entries.remove(&key);

    if let Some(previous) = previous.as_ref().filter(|p| !p.set.is_empty()) {
        let mut keep = new_set.clone();
        for entry in managed.entries.values() {
            keep.union_with(&entry.set);
        }
        walk::prune(&mut merged, ty, &previous.set, Some(&keep), &[]);
    }

    let diff = match live {
        Some(live) => Comparison::of(
            &known::known_view(live, schema),
            &known::known_view(&merged, schema),
            ty,
        ),
        // A create has no other managers: nothing to conflict with, nothing for them to lose,
        // and no previous apply to be unchanged from.
        None => Comparison::default(),
    };
    let changed = diff.added.union(&diff.modified);
    let mut conflicts = Vec::new();
    for (k, entry) in &managed.entries {
        for field in entry.set.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: k.manager.clone(),
                field,
                operation: k.operation.as_str().to_string(),
                api_version: Some(entry.api_version.clone())
                    .filter(|v| k.operation == Operation::Update && !v.is_empty()),
                subresource: Some(k.subresource.clone()).filter(|s| !s.is_empty()),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    // With force the changed fields move to this manager; removed fields belong to nobody.
    let lost = changed.union(&diff.removed);
    for entry in managed.entries.values_mut() {
        entry.set = entry.set.difference(&lost);
    }

    let unchanged = previous
        .as_ref()
        .is_some_and(|p| p.set == new_set && p.api_version == api_version && diff.is_empty());
    let time = match previous {
        Some(p) if unchanged => p.time,
        _ => Some(now),
    };
    managed.entries.insert(
        key,
        Entry {
            api_version: api_version.to_string(),
            time,
            set: new_set,
        },
    );
    finish(&mut merged, managed);
    Ok(merged)
}

/// Track a non-apply write (create, PUT, merge/JSON/strategic patch) by `manager`: `new` gets
/// its `managedFields` updated. The manager gains every field it added or changed; other
/// managers lose the fields it changed or removed.
///
/// Client-written `managedFields` in `new` are honoured when they decode (main resource only);
/// `[]` or `[{}]` resets tracking; absent or undecodable keeps the value of `old`. `old` is
/// None for a create. As upstream, an existing object without `managedFields` stays untracked
/// until its first apply.
pub fn update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: Option<&Schema>,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
) {
    if !new.is_object() {
        return;
    }
    let ty = Ty::Root(schema);
    let from_old = || {
        Managed::decode(old.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default()
    };
    let supplied = new.pointer("/metadata/managedFields");
    let mut managed = if subresource.is_some() {
        // managedFields cannot be written through a subresource.
        from_old()
    } else if is_reset(supplied) {
        Managed::default()
    } else {
        match Managed::decode(supplied) {
            Ok(m) if !m.is_empty() => m,
            _ => from_old(),
        }
    };
    if managed.is_empty() && old.is_some() {
        managers::write(new, None);
        return;
    }

    // What the manager changed, and what other managers lose (`None`: the same).
    let (changed, lost) = match old {
        // A create adds every field and changes or removes none: no comparison is needed.
        None => (Comparison::added_by_create(new, ty), None),
        Some(old) => {
            let diff = Comparison::of(old, new, ty);
            let changed = diff.added.union(&diff.modified);
            let lost = changed.union(&diff.removed);
            (changed, Some(lost))
        }
    };
    let lost = lost.as_ref().unwrap_or(&changed);
    for entry in managed.entries.values_mut() {
        entry.set = entry.set.difference(lost);
    }
    if !changed.is_empty() {
        let key = ManagerKey::update(manager, api_version, subresource.unwrap_or_default());
        let entry = managed.entries.entry(key).or_insert_with(|| Entry {
            api_version: api_version.to_string(),
            time: None,
            set: FieldSet::new(),
        });
        if entry.set.is_empty() {
            entry.set = changed;
        } else {
            entry.set.union_with(&changed);
        }
        entry.time = Some(normalize_time(now));
    }
    finish(new, managed);
}

/// Whether `managed_fields` (the value of `metadata.managedFields`, `None` when absent) is a
/// list the field manager can read.
pub fn managed_fields_readable(managed_fields: Option<&Value>) -> bool {
    Managed::decode(managed_fields).is_ok()
}

/// Structural merge used by apply: structs and granular maps per key; associative (map) lists
/// by key keeping live order and appending new items; sets by union; atomic lists/maps and
/// scalars replaced by config.
pub fn merge(live: &Value, config: &Value, schema: Option<&Schema>) -> Value {
    let mut out = live.clone();
    walk::merge_into(&mut out, config, Ty::Root(schema));
    out
}

/// The default field manager name for a request without `fieldManager`, derived from a
/// User-Agent as kube-apiserver does: the text before the first '/', without unprintable
/// characters, at most 128 bytes; "unknown" when that leaves nothing.
pub fn manager_from_user_agent(ua: Option<&str>) -> String {
    let prefix = ua.unwrap_or_default().split('/').next().unwrap_or_default();
    let mut out = String::new();
    for c in prefix
        .chars()
        .filter(|c| !c.is_control() && (*c == ' ' || !c.is_whitespace()))
    {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "unknown".to_string()
    } else {
        out
    }
}

/// Drop empty managers, cap the `Update` entries and write the list into `object`.
fn finish(object: &mut Value, mut managed: Managed) {
    managed.drop_empty();
    managed.cap_updates(MAX_UPDATE_MANAGERS);
    managers::write(object, managed.encode());
}

fn check_apply_body(live: Option<&Value>, config: &Value) -> Result<(), ApplyError> {
    let Value::Object(obj) = config else {
        return Err(ApplyError::Invalid(
            "the apply body must be a JSON object".into(),
        ));
    };
    let present = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !present("apiVersion") {
        return Err(ApplyError::Invalid(
            "Object 'apiVersion' is missing in the apply body".into(),
        ));
    }
    if !present("kind") {
        return Err(ApplyError::Invalid(
            "Object 'Kind' is missing in the apply body".into(),
        ));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let (Some(live_name), Some(config_name)) = (live.and_then(name), name(config))
        && live_name != config_name
    {
        return Err(ApplyError::Invalid(format!(
            "the name of the object ({config_name}) does not match the name on the URL ({live_name})"
        )));
    }
    Ok(())
}

/// For the status subresource only `.status` of the body counts (plus the identifying
/// metadata, which is never tracked).
fn effective_config<'v>(config: &'v Value, subresource: Option<&str>) -> Cow<'v, Value> {
    if subresource != Some("status") {
        return Cow::Borrowed(config);
    }
    let mut out = Map::new();
    for key in ["apiVersion", "kind", "status"] {
        if let Some(v) = config.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    let mut metadata = Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = config.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.to_string(), v.clone());
        }
    }
    if !metadata.is_empty() {
        out.insert("metadata".into(), Value::Object(metadata));
    }
    Cow::Owned(Value::Object(out))
}

/// The part of an untracked object's fields that an apply through `subresource` claims for
/// `before-first-apply`: `.status` for the status subresource, everything else otherwise.
fn scope_to_subresource(set: &FieldSet, subresource: Option<&str>) -> FieldSet {
    let status = PathElement::Field("status".into());
    if subresource == Some("status") {
        set.only(&status)
    } else {
        set.without(&status)
    }
}

#[cfg(test)]
mod tests;
