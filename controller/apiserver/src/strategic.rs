//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in kinds
//! (ConfigMap, Secret, Namespace, Event, Lease), as apimachinery's `strategicpatch` applies
//! it on the server.
//!
//! A strategic merge patch is a JSON merge patch (maps merge key by key, `null` deletes)
//! whose lists merge according to the Go type's patch strategy, plus directives:
//!
//! | Directive | Where | Effect |
//! |---|---|---|
//! | `"$patch": "replace"` | map | the map becomes the patch map |
//! | `"$patch": "delete"` | map | the map becomes empty |
//! | `"$patch": "merge"` | map, list item | the default merge (accepted for symmetry) |
//! | `{"$patch": "replace"}` | list item | the list becomes the other patch items |
//! | `{"$patch": "delete", "<key>": v}` | list item (merge-key lists) | removes the item with that key |
//! | `"$retainKeys": [..]` | map | drops map keys not listed |
//! | `"$setElementOrder/<list>": [..]` | map | orders the merged list (items or `{<key>: v}`) |
//! | `"$deleteFromPrimitiveList/<list>": [..]` | map | removes those values from a list of scalars |
//!
//! Any other `$`-key is an error: none of the served kinds has a field starting with `$`.

use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the list (Go: no `patchStrategy`, e.g. `managedFields`).
    Replace,
    /// A set of scalars (Go: `patchStrategy:"merge"` on `[]string`): union, duplicates dropped.
    Set,
    /// Objects identified by a key field (Go: `patchStrategy:"merge" patchMergeKey:"<key>"`);
    /// matching items merge, others are appended.
    MergeByKey(&'static str),
}

/// The lists that do not simply get replaced: `(kind, field path, strategy)`, `"*"` for
/// every kind. Adding a kind with merging lists is one line here. Taken from the Go types'
/// `patchStrategy`/`patchMergeKey` tags: Namespace `spec.finalizers` has none (it is
/// `listType=atomic`), so a patch replaces it.
const LIST_STRATEGIES: &[(&str, &str, ListStrategy)] = &[
    ("*", "metadata.finalizers", ListStrategy::Set),
    (
        "*",
        "metadata.ownerReferences",
        ListStrategy::MergeByKey("uid"),
    ),
    (
        "Namespace",
        "status.conditions",
        ListStrategy::MergeByKey("type"),
    ),
];

/// The merge strategy of the list at `path` (dotted, list items not counted) in `kind`.
pub fn list_strategy(kind: &str, path: &str) -> ListStrategy {
    LIST_STRATEGIES
        .iter()
        .find(|(k, p, _)| (*k == "*" || *k == kind) && *p == path)
        .map_or(ListStrategy::Replace, |(_, _, strategy)| *strategy)
}

/// A strategic merge patch that cannot be applied (400 upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicError {
    /// The patch document is not a JSON object.
    #[error("strategic merge patch must be a JSON object")]
    PatchNotAnObject,
    /// `$patch` with a value other than `replace`, `delete` or `merge`.
    #[error("{path}: unknown patch type: {value}")]
    UnknownPatchType {
        /// Where in the object.
        path: String,
        /// The `$patch` value.
        value: String,
    },
    /// A `$`-key that is not a directive.
    #[error("{path}: unknown directive {key:?}")]
    UnknownDirective {
        /// Where in the object.
        path: String,
        /// The key.
        key: String,
    },
    /// A directive whose value has the wrong shape.
    #[error("{path}: invalid {directive}: {reason}")]
    InvalidDirective {
        /// Where in the object.
        path: String,
        /// The directive, e.g. `$retainKeys`.
        directive: String,
        /// What is wrong.
        reason: String,
    },
    /// A list item without the list's merge key.
    #[error("{path}: map: {item} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The list.
        path: String,
        /// The item, as JSON.
        item: String,
        /// The merge key.
        key: String,
    },
}

/// Applies a strategic merge `patch` to `original`, an object of the built-in `kind`.
/// Directives never reach the result; `null` deletes; lists merge per [`list_strategy`].
/// Lists emptied by the patch stay as `[]` (the caller's canonical form drops them).
pub fn apply_strategic(
    original: &Value,
    patch: &Value,
    kind: &str,
) -> Result<Value, StrategicError> {
    let Value::Object(patch) = patch else {
        return Err(StrategicError::PatchNotAnObject);
    };
    let original = original.as_object().cloned().unwrap_or_default();
    let merger = Merger { kind };
    merger.merge_map(original, patch, "").map(Value::Object)
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

struct Merger<'a> {
    kind: &'a str,
}

impl Merger<'_> {
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
        path: &str,
    ) -> Result<Map<String, Value>, StrategicError> {
        if let Some(directive) = patch.get(PATCH) {
            match directive.as_str() {
                Some("replace") => {
                    let mut rest = patch.clone();
                    rest.remove(PATCH);
                    // The patch map replaces the original; nested directives still apply.
                    return self.merge_map(Map::new(), &rest, path);
                }
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {
                    let mut rest = patch.clone();
                    rest.remove(PATCH);
                    return self.merge_map(original, &rest, path);
                }
                _ => {
                    return Err(StrategicError::UnknownPatchType {
                        path: shown(path).to_string(),
                        value: directive.to_string(),
                    });
                }
            }
        }
        for key in patch.keys().filter(|k| k.starts_with('$')) {
            let known = key == RETAIN_KEYS
                || key
                    .strip_prefix(SET_ELEMENT_ORDER)
                    .is_some_and(|k| !k.is_empty())
                || key
                    .strip_prefix(DELETE_FROM_PRIMITIVE_LIST)
                    .is_some_and(|k| !k.is_empty());
            if !known {
                return Err(StrategicError::UnknownDirective {
                    path: shown(path).to_string(),
                    key: key.clone(),
                });
            }
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            self.retain_keys(&mut original, patch, retain, path)?;
        }

        // Lists with an order directive are merged and ordered together.
        let mut ordered: Vec<&str> = Vec::new();
        for (key, order) in patch {
            let Some(list_key) = key.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            ordered.push(list_key);
            let list_path = child(path, list_key);
            let Value::Array(order) = order else {
                return Err(invalid_directive(&list_path, key, "must be a list"));
            };
            let patch_list = match patch.get(list_key) {
                None => None,
                Some(Value::Array(items)) => Some(items.as_slice()),
                Some(_) => {
                    return Err(invalid_directive(
                        &list_path,
                        key,
                        "applies to a field that is not a list",
                    ));
                }
            };
            let original_list = match original.remove(list_key) {
                Some(Value::Array(items)) => Some(items),
                Some(_) | None => None,
            };
            if let Some(merged) =
                self.merge_ordered_list(original_list, patch_list, order, &list_path, key)?
            {
                original.insert(list_key.to_string(), Value::Array(merged));
            }
        }

        for (key, value) in patch {
            if key.starts_with('$') || ordered.contains(&key.as_str()) {
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            let merged = self.merge_value(original.remove(key), value, &child(path, key))?;
            original.insert(key.clone(), merged);
        }

        for (key, values) in patch {
            let Some(list_key) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
                continue;
            };
            let Value::Array(values) = values else {
                return Err(invalid_directive(
                    &child(path, list_key),
                    key,
                    "must be a list",
                ));
            };
            if let Some(Value::Array(items)) = original.get_mut(list_key) {
                items.retain(|item| !values.contains(item));
            }
        }
        Ok(original)
    }

    /// `$retainKeys`: the patch may only set listed keys; unlisted original keys go.
    fn retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
        path: &str,
    ) -> Result<(), StrategicError> {
        let keys: Vec<&str> = match retain {
            Value::Array(items) => items.iter().map(Value::as_str).collect::<Option<_>>(),
            _ => None,
        }
        .ok_or_else(|| invalid_directive(shown(path), RETAIN_KEYS, "must be a list of strings"))?;
        for (key, value) in patch {
            if key.starts_with('$') || value.is_null() {
                continue;
            }
            if !keys.contains(&key.as_str()) {
                return Err(invalid_directive(
                    shown(path),
                    RETAIN_KEYS,
                    &format!("the patch sets {key:?}, which is not in the list"),
                ));
            }
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
        Ok(())
    }

    fn merge_value(
        &self,
        original: Option<Value>,
        patch: &Value,
        path: &str,
    ) -> Result<Value, StrategicError> {
        Ok(match (original, patch) {
            (Some(Value::Object(original)), Value::Object(patch)) => {
                Value::Object(self.merge_map(original, patch, path)?)
            }
            // New (or differently typed) maps and lists are merged into nothing, so their
            // directives and nulls are processed rather than stored.
            (_, Value::Object(patch)) => Value::Object(self.merge_map(Map::new(), patch, path)?),
            (Some(Value::Array(original)), Value::Array(patch)) => {
                Value::Array(self.merge_list(original, patch, path)?)
            }
            (_, Value::Array(patch)) => Value::Array(self.merge_list(Vec::new(), patch, path)?),
            (_, scalar) => scalar.clone(),
        })
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        path: &str,
    ) -> Result<Vec<Value>, StrategicError> {
        match list_strategy(self.kind, path) {
            ListStrategy::Replace => Ok(patch.to_vec()),
            ListStrategy::Set => self.merge_set(original, patch, path),
            ListStrategy::MergeByKey(key) => self.merge_by_key(original, patch, key, path),
        }
    }

    fn merge_set(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        path: &str,
    ) -> Result<Vec<Value>, StrategicError> {
        let mut items: Vec<Value> = Vec::new();
        let mut replace = false;
        for item in patch {
            match patch_directive(item) {
                None => items.push(item.clone()),
                Some("replace") => replace = true,
                Some("merge") => {}
                Some(other) => {
                    return Err(StrategicError::UnknownPatchType {
                        path: path.to_string(),
                        value: format!("{other:?} (lists of scalars only take \"replace\")"),
                    });
                }
            }
        }
        if replace {
            return Ok(dedup(items));
        }
        let merged = dedup(
            original
                .iter()
                .cloned()
                .chain(items.iter().cloned())
                .collect(),
        );
        Ok(order_by_patch(merged, &items, &original, &Value::clone))
    }

    fn merge_by_key(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &'static str,
        path: &str,
    ) -> Result<Vec<Value>, StrategicError> {
        let key_of = |item: &Value| item.get(key).cloned().unwrap_or(Value::Null);
        let mut items: Vec<Map<String, Value>> = Vec::new();
        let mut replace = false;
        for item in patch {
            let Value::Object(map) = item else {
                return Err(missing_key(path, item, key));
            };
            match patch_directive(item) {
                None => items.push(map.clone()),
                Some("merge") => {
                    let mut map = map.clone();
                    map.remove(PATCH);
                    items.push(map);
                }
                Some("replace") => replace = true,
                Some("delete") => {
                    let target = map.get(key).ok_or_else(|| missing_key(path, item, key))?;
                    original.retain(|o| o.get(key) != Some(target));
                }
                Some(other) => {
                    return Err(StrategicError::UnknownPatchType {
                        path: path.to_string(),
                        value: other.to_string(),
                    });
                }
            }
        }
        if replace {
            original.clear();
        }
        let mut merged = original.clone();
        for item in &items {
            let target = item
                .get(key)
                .ok_or_else(|| missing_key(path, &Value::Object(item.clone()), key))?;
            match merged.iter().position(|o| o.get(key) == Some(target)) {
                Some(i) => {
                    let existing = match merged[i].take() {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    merged[i] = Value::Object(self.merge_map(existing, item, path)?);
                }
                None => merged.push(Value::Object(self.merge_map(Map::new(), item, path)?)),
            }
        }
        let patch_items: Vec<Value> = items.into_iter().map(Value::Object).collect();
        Ok(order_by_patch(merged, &patch_items, &original, &key_of))
    }

    /// A list with `$setElementOrder`: merge as usual, then put the items named in the
    /// order list in that order, keeping the other (server-only) items near their
    /// original neighbours. `None` when neither side has the list.
    fn merge_ordered_list(
        &self,
        original: Option<Vec<Value>>,
        patch: Option<&[Value]>,
        order: &[Value],
        path: &str,
        directive: &str,
    ) -> Result<Option<Vec<Value>>, StrategicError> {
        let strategy = list_strategy(self.kind, path);
        let key_of = |item: &Value| -> Value {
            match strategy {
                ListStrategy::MergeByKey(key) => item.get(key).cloned().unwrap_or(Value::Null),
                _ => item.clone(),
            }
        };
        if let Some(patch) = patch {
            // Every (non-directive) patch item must appear in the order list, in the same order.
            let mut next = 0;
            for item in patch.iter().filter(|i| patch_directive(i).is_none()) {
                let wanted = key_of(item);
                match order[next..].iter().position(|o| key_of(o) == wanted) {
                    Some(offset) => next += offset + 1,
                    None => {
                        return Err(invalid_directive(
                            path,
                            directive,
                            &format!(
                                "the patch list item {item} is missing from it or out of its order"
                            ),
                        ));
                    }
                }
            }
        }
        let original_items = original.clone().unwrap_or_default();
        let merged = match (original, patch) {
            (None, None) => return Ok(None),
            (Some(original), None) => original,
            (original, Some(patch)) => {
                self.merge_list(original.unwrap_or_default(), patch, path)?
            }
        };
        let order_keys: Vec<Value> = order.iter().map(key_of).collect();
        let (mut listed, mut server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|item| order_keys.contains(&key_of(item)));
        let position = |keys: &[Value], item: &Value| keys.iter().position(|k| *k == key_of(item));
        listed.sort_by_key(|item| position(&order_keys, item));
        let original_keys: Vec<Value> = original_items.iter().map(key_of).collect();
        server_only.sort_by_key(|item| position(&original_keys, item));
        Ok(Some(interleave(
            server_only,
            listed,
            &original_keys,
            &key_of,
        )))
    }
}

/// The `$patch` value of a list item, if it is a directive item.
fn patch_directive(item: &Value) -> Option<&str> {
    item.get(PATCH)
        .map(|v| v.as_str().unwrap_or("<not a string>"))
}

fn invalid_directive(path: &str, directive: &str, reason: &str) -> StrategicError {
    StrategicError::InvalidDirective {
        path: path.to_string(),
        directive: directive.to_string(),
        reason: reason.to_string(),
    }
}

fn missing_key(path: &str, item: &Value, key: &str) -> StrategicError {
    StrategicError::MissingMergeKey {
        path: path.to_string(),
        item: item.to_string(),
        key: key.to_string(),
    }
}

/// Removes repeated values, keeping the first of each.
fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Orders a merged list as apimachinery does without `$setElementOrder`: items named in
/// the patch in patch order, server-only items in their original order, interleaved by
/// their original positions.
fn order_by_patch(
    merged: Vec<Value>,
    patch_items: &[Value],
    original: &[Value],
    key_of: &dyn Fn(&Value) -> Value,
) -> Vec<Value> {
    let patch_keys: Vec<Value> = patch_items.iter().map(key_of).collect();
    let (mut from_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| patch_keys.contains(&key_of(item)));
    from_patch.sort_by_key(|item| patch_keys.iter().position(|k| *k == key_of(item)));
    let original_keys: Vec<Value> = original.iter().map(key_of).collect();
    interleave(server_only, from_patch, &original_keys, key_of)
}

/// Merges two ordered lists: a server-only item goes first only when both it and the next
/// patch item exist in the original list and it came earlier there; otherwise the patch
/// item goes first (so new patch items precede the remaining server-only items).
fn interleave(
    server_only: Vec<Value>,
    patch_items: Vec<Value>,
    original_keys: &[Value],
    key_of: &dyn Fn(&Value) -> Value,
) -> Vec<Value> {
    let position = |item: &Value| original_keys.iter().position(|k| *k == key_of(item));
    let mut out = Vec::with_capacity(server_only.len() + patch_items.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((position(l), position(r)), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}
