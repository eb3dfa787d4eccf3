//! The view of an object that admission will store: what the schema prunes left out.
//!
//! Apply returns the raw merge so that the API layer still sees (and warns about, or rejects)
//! unknown fields, but tracks ownership on this view: a field that will be pruned must not be
//! owned, nor count as a change, or re-applying such a body would never be a no-op.

use std::borrow::Cow;

use devplane_schema::Schema;
use serde_json::Value;

use super::typed::OBJECT_META;

/// `value` without the fields `schema` does not declare and without nulls of non-nullable
/// fields, as the schema crate's pruning leaves it. Unchanged without a schema.
pub(super) fn known_view<'v>(value: &'v Value, schema: Option<&Schema>) -> Cow<'v, Value> {
    match schema {
        // Stored objects were pruned on their way in, and most bodies declare only what the
        // schema knows: look before copying.
        Some(s) if has_unknown(s, value, true) => {
            let mut out = value.clone();
            drop_unknown(s, &mut out, true);
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(value),
    }
}

/// Whether [`drop_unknown`] would remove anything from `value`.
fn has_unknown(s: &Schema, value: &Value, root: bool) -> bool {
    match value {
        Value::Object(map) => {
            let resource = root || s.embedded_resource;
            let type_or_meta =
                |name: &str| resource && matches!(name, "apiVersion" | "kind" | "metadata");
            if resource
                && let Some(Value::Object(meta)) = map.get("metadata")
                && meta.keys().any(|k| !OBJECT_META.properties.contains_key(k))
            {
                return true;
            }
            let keep_unknown = s.preserve_unknown_fields || s.additional_properties.is_some();
            map.iter().any(|(name, v)| {
                if type_or_meta(name) {
                    return false;
                }
                match s.properties.get(name) {
                    Some(p) => (v.is_null() && !p.nullable) || has_unknown(p, v, false),
                    None => match &s.additional_properties {
                        Some(additional) => has_unknown(additional, v, false),
                        None => !keep_unknown,
                    },
                }
            })
        }
        Value::Array(items) => s
            .items
            .as_ref()
            .is_some_and(|item| items.iter().any(|it| has_unknown(item, it, false))),
        _ => false,
    }
}

fn drop_unknown(s: &Schema, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            let resource = root || s.embedded_resource;
            let type_or_meta =
                |name: &str| resource && matches!(name, "apiVersion" | "kind" | "metadata");
            if resource && let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.retain(|k, _| OBJECT_META.properties.contains_key(k));
            }
            let keep_unknown = s.preserve_unknown_fields || s.additional_properties.is_some();
            map.retain(|name, v| {
                if type_or_meta(name) {
                    return true;
                }
                match s.properties.get(name) {
                    Some(p) => !v.is_null() || p.nullable,
                    None => keep_unknown,
                }
            });
            for (name, v) in map.iter_mut() {
                if type_or_meta(name) {
                    continue;
                }
                if let Some(p) = s.properties.get(name) {
                    drop_unknown(p, v, false);
                } else if let Some(additional) = &s.additional_properties {
                    drop_unknown(additional, v, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &s.items {
                for it in items {
                    drop_unknown(item, it, false);
                }
            }
        }
        _ => {}
    }
}
