//! How a value is shaped for field management: which nodes are granular, which lists are
//! sets or associative lists, and what is a leaf. Comes from the structural schema where
//! there is one and is deduced from the value where there is not.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use devplane_schema::{ListType, Schema, Type};
use serde_json::{Map, Value};

use super::fieldset::{FieldSet, PathElement, canonical_json};

/// The type information for one node.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ty<'a> {
    /// The root object: `metadata` is always ObjectMeta, the rest comes from the schema
    /// (deduced when there is none).
    Root(Option<&'a Schema>),
    /// A node the schema describes.
    Node(&'a Schema),
    /// No schema information: maps are granular, lists atomic.
    Deduced,
}

/// How a node is merged, compared and turned into paths.
pub(super) enum Shape<'a> {
    /// A granular struct or map: children by name.
    Fields,
    /// An associative list: items by their key fields.
    MapList { keys: &'a [String], item: Ty<'a> },
    /// A list of unique scalars: items by value.
    Set,
    /// Owned and replaced as a whole: scalars, atomic lists and maps, and values whose JSON
    /// type is not what the schema expects.
    Leaf,
}

/// A child's type and whether it is a declared (named) struct field rather than a map entry.
pub(super) struct Child<'a> {
    pub ty: Ty<'a>,
    pub named: bool,
}

impl<'a> Ty<'a> {
    /// The shape of `value` at this node.
    pub fn shape(self, value: &Value) -> Shape<'a> {
        match value {
            Value::Object(_) => match self {
                Ty::Node(s) if s.map_atomic => Shape::Leaf,
                _ => Shape::Fields,
            },
            Value::Array(_) => match self {
                Ty::Node(s) => match s.list_type {
                    ListType::Atomic => Shape::Leaf,
                    ListType::Set => Shape::Set,
                    ListType::Map if s.list_map_keys.is_empty() => Shape::Leaf,
                    ListType::Map => Shape::MapList {
                        keys: &s.list_map_keys,
                        item: s.items.as_deref().map_or(Ty::Deduced, Ty::Node),
                    },
                },
                _ => Shape::Leaf,
            },
            _ => Shape::Leaf,
        }
    }

    /// The type of the child `key` of an object at this node.
    pub fn child(self, key: &str) -> Child<'a> {
        match self {
            Ty::Root(schema) => match key {
                "metadata" => Child {
                    ty: Ty::Node(&OBJECT_META),
                    named: true,
                },
                "apiVersion" | "kind" => Child {
                    ty: Ty::Deduced,
                    named: true,
                },
                _ => match schema {
                    Some(s) => Ty::Node(s).child(key),
                    // An object's top level is a struct (`spec`, `data`, ...) even when nothing
                    // describes it; what is below is deduced.
                    None => Child {
                        ty: Ty::Deduced,
                        named: true,
                    },
                },
            },
            Ty::Node(s) => {
                if let Some(p) = s.properties.get(key) {
                    Child {
                        ty: Ty::Node(p),
                        named: true,
                    }
                } else if let Some(ap) = &s.additional_properties {
                    Child {
                        ty: Ty::Node(ap),
                        named: false,
                    }
                } else {
                    // Unknown fields (under preserve-unknown-fields, or not yet pruned) are
                    // deduced map entries.
                    Child {
                        ty: Ty::Deduced,
                        named: false,
                    }
                }
            }
            Ty::Deduced => Child {
                ty: Ty::Deduced,
                named: false,
            },
        }
    }

    /// The schema default of field `key` of objects at this node, used for missing key fields.
    fn default_of(self, key: &str) -> Option<&'a Value> {
        match self {
            Ty::Node(s) => s.properties.get(key).and_then(|p| p.default.as_ref()),
            _ => None,
        }
    }
}

/// The path element of item `index` of an associative list: its key fields (schema defaults
/// fill missing ones), or its position when the item has no usable key.
pub(super) fn list_item_element(
    item: &Value,
    keys: &[String],
    item_ty: Ty<'_>,
    index: usize,
) -> PathElement {
    match list_item_key(item, keys, item_ty) {
        Ok(pe) => pe,
        Err(_) => PathElement::Index(index),
    }
}

/// The key element of an associative-list item, or the name of the first missing key field.
pub(super) fn list_item_key(
    item: &Value,
    keys: &[String],
    item_ty: Ty<'_>,
) -> Result<PathElement, String> {
    let Value::Object(obj) = item else {
        return Err(keys.first().cloned().unwrap_or_default());
    };
    let mut key = Map::new();
    for k in keys {
        match obj.get(k).or_else(|| item_ty.default_of(k)) {
            Some(v) => {
                key.insert(k.clone(), v.clone());
            }
            None => return Err(k.clone()),
        }
    }
    Ok(PathElement::Key(canonical_json(&Value::Object(key))))
}

/// The path element of a set item.
pub(super) fn set_item_element(item: &Value) -> PathElement {
    PathElement::Value(canonical_json(item))
}

/// The built-in description of ObjectMeta: labels and annotations are granular string maps,
/// finalizers a set, ownerReferences a list keyed by `uid`, everything else scalar or atomic.
pub(super) static OBJECT_META: LazyLock<Schema> = LazyLock::new(|| {
    let typed = |ty| Schema {
        ty: Some(ty),
        ..Schema::default()
    };
    let string_map = || Schema {
        ty: Some(Type::Object),
        additional_properties: Some(Box::new(typed(Type::String))),
        ..Schema::default()
    };
    let mut owner_reference = BTreeMap::new();
    for name in ["apiVersion", "kind", "name", "uid"] {
        owner_reference.insert(name.to_string(), typed(Type::String));
    }
    for name in ["controller", "blockOwnerDeletion"] {
        owner_reference.insert(name.to_string(), typed(Type::Boolean));
    }
    let mut properties = BTreeMap::new();
    for name in [
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        properties.insert(name.to_string(), typed(Type::String));
    }
    for name in ["generation", "deletionGracePeriodSeconds"] {
        properties.insert(name.to_string(), typed(Type::Integer));
    }
    properties.insert("labels".into(), string_map());
    properties.insert("annotations".into(), string_map());
    properties.insert(
        "finalizers".into(),
        Schema {
            ty: Some(Type::Array),
            list_type: ListType::Set,
            items: Some(Box::new(typed(Type::String))),
            ..Schema::default()
        },
    );
    properties.insert(
        "ownerReferences".into(),
        Schema {
            ty: Some(Type::Array),
            list_type: ListType::Map,
            list_map_keys: vec!["uid".into()],
            items: Some(Box::new(Schema {
                ty: Some(Type::Object),
                properties: owner_reference,
                ..Schema::default()
            })),
            ..Schema::default()
        },
    );
    properties.insert(
        "managedFields".into(),
        Schema {
            ty: Some(Type::Array),
            items: Some(Box::new(Schema {
                ty: Some(Type::Object),
                preserve_unknown_fields: true,
                ..Schema::default()
            })),
            ..Schema::default()
        },
    );
    Schema {
        ty: Some(Type::Object),
        properties,
        ..Schema::default()
    }
});

/// Paths the field manager never tracks: the type, `metadata` itself and the metadata the
/// server owns.
pub(super) static NEVER_TRACKED: LazyLock<FieldSet> = LazyLock::new(|| {
    let field = |name: &str| PathElement::Field(name.to_string());
    let mut set = FieldSet::new();
    for name in ["apiVersion", "kind", "metadata"] {
        set.insert(&[field(name)]);
    }
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[field("metadata"), field(name)]);
    }
    set
});
