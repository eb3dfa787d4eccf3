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

/// What pruning does with the member `name` (value `value`) of an object described by `s`.
enum Member<'s> {
    /// `apiVersion`, `kind` or `metadata` of a resource: kept, its metadata pruned apart.
    TypeOrMeta,
    /// Not declared (and unknown fields are not kept), or null where the schema forbids it.
    Dropped,
    /// Kept; pruned further by the schema given, if any.
    Kept(Option<&'s Schema>),
}

fn member<'s>(s: &'s Schema, resource: bool, name: &str, value: &Value) -> Member<'s> {
    if resource && matches!(name, "apiVersion" | "kind" | "metadata") {
        return Member::TypeOrMeta;
    }
    match s.properties.get(name) {
        Some(p) if value.is_null() && !p.nullable => Member::Dropped,
        Some(p) => Member::Kept(Some(p)),
        None if s.preserve_unknown_fields || s.additional_properties.is_some() => {
            Member::Kept(s.additional_properties.as_deref())
        }
        None => Member::Dropped,
    }
}

/// Whether a resource's metadata keeps the member `name`.
fn known_meta(name: &str) -> bool {
    OBJECT_META.properties.contains_key(name)
}

/// Whether [`drop_unknown`] would remove anything from `value`.
fn has_unknown(s: &Schema, value: &Value, root: bool) -> bool {
    match value {
        Value::Object(map) => {
            let resource = root || s.embedded_resource;
            map.iter()
                .any(|(name, v)| match member(s, resource, name, v) {
                    Member::TypeOrMeta => {
                        name == "metadata"
                            && v.as_object()
                                .is_some_and(|m| m.keys().any(|k| !known_meta(k)))
                    }
                    Member::Dropped => true,
                    Member::Kept(child) => child.is_some_and(|c| has_unknown(c, v, false)),
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
            map.retain(|name, v| !matches!(member(s, resource, name, v), Member::Dropped));
            for (name, v) in map.iter_mut() {
                match member(s, resource, name, v) {
                    Member::TypeOrMeta => {
                        if let (true, Value::Object(meta)) = (name == "metadata", v) {
                            meta.retain(|k, _| known_meta(k));
                        }
                    }
                    Member::Kept(Some(child)) => drop_unknown(child, v, false),
                    Member::Kept(None) | Member::Dropped => {}
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
