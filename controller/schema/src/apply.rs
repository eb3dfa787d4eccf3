//! Changing an object to fit its schema: pruning and defaulting.

use serde_json::Value;

use crate::Schema;
use crate::validate::{Step, child, descend};

/// ObjectMeta's fields; others are dropped from `metadata` like the API server does.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Drop nulls of non-nullable fields and fields the schema does not declare, recording the
/// latter's paths.
pub(crate) fn prune(
    s: &Schema,
    value: &mut Value,
    path: &mut String,
    root: bool,
    unknown: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            if (root || s.embedded_resource)
                && let Some(Value::Object(meta)) = map.get_mut("metadata")
            {
                {
                    let meta_path = child(path, "metadata");
                    meta.retain(|k, _| {
                        let known = OBJECT_META_FIELDS.contains(&k.as_str());
                        if !known {
                            unknown.push(child(&meta_path, k));
                        }
                        known
                    });
                }
            }
            let keep_unknown = s.preserve_unknown_fields || s.additional_properties.is_some();
            map.retain(|name, v| {
                if (root || s.embedded_resource)
                    && matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    return true;
                }
                if let Some(prop) = s.properties.get(name) {
                    // A null for a non-nullable field is dropped (and defaulted later).
                    return !v.is_null() || prop.nullable;
                }
                if keep_unknown {
                    return true;
                }
                unknown.push(child(path, name));
                false
            });
            for (name, v) in map.iter_mut() {
                if (root || s.embedded_resource)
                    && matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(prop) = s.properties.get(name) {
                    descend(path, Step::Field(name), |path| {
                        prune(prop, v, path, false, unknown)
                    });
                } else if let Some(additional) = &s.additional_properties {
                    descend(path, Step::Entry(name), |path| {
                        prune(additional, v, path, false, unknown)
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for (i, item) in items.iter_mut().enumerate() {
                    descend(path, Step::Element(i), |path| {
                        prune(item_schema, item, path, false, unknown)
                    });
                }
            }
        }
        _ => {}
    }
}

/// Fill absent fields with their defaults where the parent exists, recursively (defaults
/// themselves are defaulted further, as the API server does).
pub(crate) fn default(s: &Schema, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, prop) in &s.properties {
                if !map.contains_key(name)
                    && let Some(d) = &prop.default
                {
                    map.insert(name.clone(), d.clone());
                }
            }
            for (name, v) in map.iter_mut() {
                if let Some(prop) = s.properties.get(name) {
                    default(prop, v);
                } else if let Some(additional) = &s.additional_properties {
                    default(additional, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for item in items {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}
