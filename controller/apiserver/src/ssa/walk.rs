//! Type-directed walks over JSON values: field sets, comparison, merge, prune and the
//! checks an apply body must pass.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::fieldset::{FieldSet, PathElement, canonical_json, same_value};
use super::typed::{NEVER_TRACKED, Shape, Ty, list_item_element, list_item_key, set_item_element};

/// Every field present below `value`, before never-tracked fields are removed, and whether
/// `value` itself is a leaf.
///
/// Leaves are members; so are map entries, list items, set values, and struct fields that are
/// null or empty objects. A non-empty struct field is only a path to its children. The set is
/// built from the leaves up, so each path element is copied once, not once per field below it.
pub(super) fn collect(value: &Value, ty: Ty<'_>) -> (FieldSet, bool) {
    let mut out = FieldSet::new();
    match ty.shape(value) {
        Shape::Fields => {
            let Value::Object(obj) = value else {
                return (out, false);
            };
            for (key, child) in obj {
                let c = ty.child(key);
                let (below, leaf) = collect(child, c.ty);
                let member = leaf || !c.named || child.as_object().is_some_and(|o| o.is_empty());
                out.put(PathElement::Field(key.clone()), below, member);
            }
        }
        Shape::MapList { keys, item } => {
            let Value::Array(items) = value else {
                return (out, false);
            };
            for (i, it) in items.iter().enumerate() {
                let (below, _) = collect(it, item);
                out.put(list_item_element(it, keys, item, i), below, true);
            }
        }
        Shape::Set => {
            let Value::Array(items) = value else {
                return (out, false);
            };
            for it in items {
                out.put(set_item_element(it), FieldSet::new(), true);
            }
        }
        Shape::Leaf => return (out, true),
    }
    (out, false)
}

/// The fields of a whole object, without the never-tracked ones.
pub(super) fn fields_of(object: &Value, ty: Ty<'_>) -> FieldSet {
    let (mut set, _) = collect(object, ty);
    set.subtract(&NEVER_TRACKED);
    set
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub(super) struct Comparison {
    /// Present only in the new version (containers included, as members).
    pub added: FieldSet,
    /// Leaves present in both with different values.
    pub modified: FieldSet,
    /// Present only in the old version (containers included, as members).
    pub removed: FieldSet,
}

impl Comparison {
    /// Compare two whole objects; never-tracked fields are left out.
    pub fn of(old: &Value, new: &Value, ty: Ty<'_>) -> Comparison {
        let mut c = Comparison::default();
        compare(Some(old), Some(new), ty, &mut Vec::new(), &mut c);
        c.added = c.added.difference(&NEVER_TRACKED);
        c.modified = c.modified.difference(&NEVER_TRACKED);
        c.removed = c.removed.difference(&NEVER_TRACKED);
        c
    }

    /// The fields a new object adds, never-tracked ones left out: the `added` of comparing it
    /// with an empty object (nothing is modified or removed), without the comparison.
    pub fn added_by_create(new: &Value, ty: Ty<'_>) -> FieldSet {
        let mut added = appeared(new, ty);
        added.subtract(&NEVER_TRACKED);
        added
    }

    /// Whether nothing tracked changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_))
    )
}

fn compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    ty: Ty<'_>,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let shape = match (lhs, rhs) {
        // Nothing below two equal values differs (most of an object, in most writes).
        (Some(l), Some(r)) if l == r => return,
        (Some(l), Some(r)) if same_kind(l, r) => ty.shape(l),
        (Some(_), Some(_)) => Shape::Leaf,
        (Some(v), None) | (None, Some(v)) => ty.shape(v),
        (None, None) => return,
    };
    match shape {
        Shape::Leaf => match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(l), Some(r)) if !same_value(l, r) => out.modified.insert(path),
            _ => {}
        },
        Shape::Fields => {
            let empty = serde_json::Map::new();
            let l = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let r = rhs.and_then(Value::as_object).unwrap_or(&empty);
            let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            for key in keys {
                path.push(PathElement::Field(key.clone()));
                compare(l.get(key), r.get(key), ty.child(key).ty, path, out);
                path.pop();
            }
        }
        Shape::MapList { keys, item } => {
            let l = index_map_list(lhs, keys, item);
            let r = index_map_list(rhs, keys, item);
            let elements: BTreeSet<&PathElement> = l.keys().chain(r.keys()).collect();
            for pe in elements {
                path.push(pe.clone());
                compare(l.get(pe).copied(), r.get(pe).copied(), item, path, out);
                path.pop();
            }
        }
        Shape::Set => {
            let l = index_set(lhs);
            let r = index_set(rhs);
            for pe in l.union(&r) {
                path.push(pe.clone());
                match (l.contains(pe), r.contains(pe)) {
                    (true, false) => out.removed.insert(path),
                    (false, true) => out.added.insert(path),
                    _ => {}
                }
                path.pop();
            }
        }
    }
    // A granular node that appears or disappears is itself added or removed.
    if !matches!(shape, Shape::Leaf) {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            _ => {}
        }
    }
}

/// The paths below a value that appears where there was none, as [`compare`] adds them:
/// every node is a member (containers included), associative-list items by key (the first of
/// duplicate keys), set items by value.
fn appeared(value: &Value, ty: Ty<'_>) -> FieldSet {
    let mut set = FieldSet::new();
    match ty.shape(value) {
        Shape::Leaf => {}
        Shape::Fields => {
            let Value::Object(obj) = value else {
                return set;
            };
            for (key, child) in obj {
                let below = appeared(child, ty.child(key).ty);
                set.insert_with(PathElement::Field(key.clone()), below);
            }
        }
        Shape::MapList { keys, item } => {
            let Value::Array(items) = value else {
                return set;
            };
            for (i, it) in items.iter().enumerate() {
                let pe = list_item_element(it, keys, item, i);
                if !set.has_member(&pe) {
                    set.insert_with(pe, appeared(it, item));
                }
            }
        }
        Shape::Set => {
            let Value::Array(items) = value else {
                return set;
            };
            for it in items {
                set.insert_with(set_item_element(it), FieldSet::new());
            }
        }
    }
    set
}

/// Items of an associative list by element; the first of duplicate keys wins.
fn index_map_list<'v>(
    list: Option<&'v Value>,
    keys: &[String],
    item: Ty<'_>,
) -> BTreeMap<PathElement, &'v Value> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(items)) = list {
        for (i, it) in items.iter().enumerate() {
            out.entry(list_item_element(it, keys, item, i))
                .or_insert(it);
        }
    }
    out
}

fn index_set(list: Option<&Value>) -> BTreeSet<PathElement> {
    match list {
        Some(Value::Array(items)) => items.iter().map(set_item_element).collect(),
        _ => BTreeSet::new(),
    }
}

/// Merge `config` into `target` in place: structs and granular maps per key, associative
/// lists by key (live order kept, new items appended), sets by union, everything else
/// replaced.
pub(super) fn merge_into(target: &mut Value, config: &Value, ty: Ty<'_>) {
    let shape = if same_kind(target, config) {
        ty.shape(config)
    } else {
        Shape::Leaf
    };
    match (shape, target, config) {
        (Shape::Fields, Value::Object(t), Value::Object(c)) => {
            for (key, cv) in c {
                match t.get_mut(key) {
                    Some(tv) => merge_into(tv, cv, ty.child(key).ty),
                    None => {
                        t.insert(key.clone(), cv.clone());
                    }
                }
            }
        }
        (Shape::MapList { keys, item }, Value::Array(t), Value::Array(c)) => {
            let mut index: BTreeMap<PathElement, usize> = BTreeMap::new();
            for (i, it) in t.iter().enumerate() {
                index
                    .entry(list_item_element(it, keys, item, i))
                    .or_insert(i);
            }
            for (i, ci) in c.iter().enumerate() {
                let pe = list_item_element(ci, keys, item, i);
                match index.get(&pe).and_then(|&j| t.get_mut(j)) {
                    Some(ti) => merge_into(ti, ci, item),
                    None => {
                        index.insert(pe, t.len());
                        t.push(ci.clone());
                    }
                }
            }
        }
        (Shape::Set, Value::Array(t), Value::Array(c)) => {
            let mut seen: BTreeSet<String> = t.iter().map(canonical_json).collect();
            for ci in c {
                if seen.insert(canonical_json(ci)) {
                    t.push(ci.clone());
                }
            }
        }
        (_, target, config) => *target = config.clone(),
    }
}

/// Remove from `value` what `last` holds and `keep` does not touch (neither the path nor
/// anything below it). Containers emptied by the removal go too, unless kept. Fields named in
/// `protected` (the key fields of an associative-list item that stays) are never removed.
/// Returns whether anything was removed.
pub(super) fn prune(
    value: &mut Value,
    ty: Ty<'_>,
    last: &FieldSet,
    keep: Option<&FieldSet>,
    protected: &[String],
) -> bool {
    let kept = |pe: &PathElement| keep.is_some_and(|k| k.touches(pe));
    let mut changed = false;
    match ty.shape(value) {
        Shape::Fields => {
            let Value::Object(obj) = value else {
                return false;
            };
            for pe in last.elements() {
                let PathElement::Field(key) = pe else {
                    continue;
                };
                if protected.contains(key) {
                    continue;
                }
                let Some(child) = obj.get_mut(key) else {
                    continue;
                };
                if last.has_member(pe) && !kept(pe) {
                    obj.remove(key);
                    changed = true;
                    continue;
                }
                let Some(last_child) = last.child(pe) else {
                    continue;
                };
                let child_keep = keep.and_then(|k| k.child(pe));
                if prune(child, ty.child(key).ty, last_child, child_keep, &[]) {
                    changed = true;
                    if is_empty_container(child) && !kept(pe) {
                        obj.remove(key);
                    }
                }
            }
        }
        Shape::MapList { keys, item } => {
            let Value::Array(items) = value else {
                return false;
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, mut it) in std::mem::take(items).into_iter().enumerate() {
                let pe = list_item_element(&it, keys, item, i);
                if last.touches(&pe) {
                    if last.has_member(&pe) && !kept(&pe) {
                        changed = true;
                        continue;
                    }
                    if let Some(last_child) = last.child(&pe) {
                        let child_keep = keep.and_then(|k| k.child(&pe));
                        changed |= prune(&mut it, item, last_child, child_keep, keys);
                    }
                }
                out.push(it);
            }
            *items = out;
        }
        Shape::Set => {
            let Value::Array(items) = value else {
                return false;
            };
            let before = items.len();
            items.retain(|it| {
                let pe = set_item_element(it);
                !last.has_member(&pe) || kept(&pe)
            });
            changed = items.len() != before;
        }
        Shape::Leaf => {}
    }
    changed
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Check what merging cannot cope with in an apply body: associative-list items without
/// their key fields, and duplicate keys or set values. Returns the first problem.
pub(super) fn check_lists(value: &Value, ty: Ty<'_>) -> Result<(), String> {
    check_lists_at(value, ty, &mut String::new())
}

/// [`check_lists`] below `path` (`.spec.items[name="a"]`), which it extends in place and
/// leaves as it found it: most bodies pass, so the path is only formatted into a message.
fn check_lists_at(value: &Value, ty: Ty<'_>, path: &mut String) -> Result<(), String> {
    use std::fmt::Write as _;
    let depth = path.len();
    match ty.shape(value) {
        Shape::Fields => {
            if let Value::Object(obj) = value {
                for (key, child) in obj {
                    path.push('.');
                    path.push_str(key);
                    check_lists_at(child, ty.child(key).ty, path)?;
                    path.truncate(depth);
                }
            }
        }
        Shape::MapList { keys, item } => {
            if let Value::Array(items) = value {
                let mut seen = BTreeSet::new();
                for (i, it) in items.iter().enumerate() {
                    let pe = list_item_key(it, keys, item).map_err(|missing| {
                        format!(
                            "{path}: element {i}: associative list with keys has an element \
                             that omits key field {missing:?} (and doesn't have default value)"
                        )
                    })?;
                    if seen.contains(&pe) {
                        return Err(format!("{path}: duplicate entries for key {pe}"));
                    }
                    let _ = write!(path, "{pe}");
                    check_lists_at(it, item, path)?;
                    path.truncate(depth);
                    seen.insert(pe);
                }
            }
        }
        Shape::Set => {
            if let Value::Array(items) = value {
                let mut seen = BTreeSet::new();
                for it in items {
                    let pe = set_item_element(it);
                    if !seen.insert(pe.clone()) {
                        return Err(format!("{path}: duplicate entries for key {pe}"));
                    }
                }
            }
        }
        Shape::Leaf => {}
    }
    Ok(())
}
