//! Labels as the store's index terms: the store indexes every stored object by its labels,
//! so that a list with an equality (or `in`) label selector reads only the objects that carry
//! one of the selected labels instead of every object of the resource.
//!
//! A term is `key=value`: neither label keys nor label values may contain `=`, so the text
//! names one label unambiguously.

use std::sync::Arc;

use devplane_store::TermExtractor;
use serde_json::{Map, Value};

use crate::selector::{LabelSelector, Operator};

/// The index term of the label `key` with `value`.
fn label_term(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

/// `metadata.labels` of a stored object (`None` when it has none), or `Err` when the JSON
/// cannot be read this way.
///
/// Reading stops as soon as the labels are found. This server writes objects with their keys
/// in order, so the labels come before `managedFields`, `spec` and `status`, which are most
/// of an object's bytes and would otherwise all be scanned: this runs on every write (the
/// label index) and for every object a label-selected list looks at. JSON that has no labels
/// is read to its end.
pub(super) fn stored_labels(stored: &[u8]) -> Result<Option<Map<String, Value>>, ()> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(stored);
    let path = Path {
        keys: &["metadata", "labels"],
        found: &mut found,
    };
    match serde::de::DeserializeSeed::deserialize(path, &mut deserializer) {
        Ok(()) => Ok(found),
        // Having found them, it stopped with [`FOUND`].
        Err(_) if found.is_some() => Ok(found),
        Err(_) => Err(()),
    }
}

/// The error [`stored_labels`] stops reading with once it has the labels.
const FOUND: &str = "labels found";

/// The object at `keys` below a JSON object, for [`stored_labels`]: each key's value is read
/// only when the key matches, everything else is skipped.
struct Path<'a> {
    keys: &'static [&'static str],
    found: &'a mut Option<Map<String, Value>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Path<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Path<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with {}", self.keys.join("."))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.keys.split_first() else {
            return Ok(());
        };
        while let Some(is_first) = map.next_key_seed(KeyIs(first))? {
            if !is_first {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if rest.is_empty() {
                *self.found = map.next_value::<Option<Map<String, Value>>>()?;
            } else {
                map.next_value_seed(Path {
                    keys: rest,
                    found: &mut *self.found,
                })?;
            }
            if self.found.is_some() {
                return Err(serde::de::Error::custom(FOUND));
            }
        }
        Ok(())
    }
}

/// Whether a map key is this one, for [`stored_labels`] (without allocating the key, escaped
/// or not).
struct KeyIs(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// The terms of a stored object: one per label. Anything unreadable has none (and is then
/// never read through the index, as it could not match a label selector either).
fn label_terms(stored: &[u8]) -> Vec<String> {
    let Ok(labels) = stored_labels(stored) else {
        return Vec::new();
    };
    labels
        .iter()
        .flatten()
        .filter_map(|(key, value)| Some(label_term(key, value.as_str()?)))
        .collect()
}

/// The extractor the API server installs in its store.
pub fn extractor() -> TermExtractor {
    Arc::new(label_terms)
}

/// Terms of which every object the selector selects carries at least one: those of its first
/// equality requirement, else those of its first `in` requirement. `None` when no requirement
/// can be answered from the index (`!=`, `notin`, existence, `<`, `>`), or the selector is
/// empty.
pub(super) fn selector_terms(selector: &LabelSelector) -> Option<Vec<String>> {
    selector_terms_and_rest(selector).map(|(terms, _)| terms)
}

/// Whether the index alone decides `selector`: it has one requirement, and that is the one
/// [`selector_terms`] reads from the index. A list, at any revision, then needs no check of
/// what the index returned.
pub(super) fn index_decides(selector: &LabelSelector) -> bool {
    selector_terms_and_rest(selector).is_some_and(|(_, rest)| rest == 0)
}

/// [`selector_terms`], with the number of the selector's other requirements.
fn selector_terms_and_rest(selector: &LabelSelector) -> Option<(Vec<String>, usize)> {
    let requirements = selector.requirements();
    let equality = requirements
        .iter()
        .find(|r| matches!(r.operator(), Operator::Equals | Operator::DoubleEquals));
    let chosen = equality.or_else(|| requirements.iter().find(|r| r.operator() == Operator::In))?;
    let terms = chosen
        .values()
        .iter()
        .map(|value| label_term(chosen.key(), value))
        .collect();
    Some((terms, requirements.len() - 1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn terms_of(selector: &str) -> Option<Vec<String>> {
        selector_terms(&LabelSelector::parse(selector).expect("selector"))
    }

    #[test]
    fn a_stored_object_has_one_term_per_label() {
        let stored = json!({
            "metadata": {"name": "d", "labels": {"bench/shard": "3", "site": "", "n": 1}},
            "spec": {"labels": {"not": "these"}}
        });
        let mut terms = label_terms(stored.to_string().as_bytes());
        terms.sort();
        assert_eq!(terms, vec!["bench/shard=3", "site="]);
        assert!(label_terms(br#"{"metadata":{"name":"d"}}"#).is_empty());
        assert!(label_terms(b"not json").is_empty());
    }

    #[test]
    fn the_labels_of_a_stored_object_are_read_wherever_they_are() {
        let labels = |text: &str| stored_labels(text.as_bytes());
        let expected = json!({"a": "1", "b": "2"}).as_object().cloned();
        // Written by this server: the labels come before the rest, which is not read.
        assert_eq!(
            labels(
                r#"{"apiVersion":"v1","metadata":{"labels":{"a":"1","b":"2"},"managedFields":[]},"spec":{"x":1}}"#
            ),
            Ok(expected.clone())
        );
        // Anywhere else, and with escaped keys before them.
        assert_eq!(
            labels(
                r#"{"sp\u0065c":{"labels":{"no":"pe"}},"metadata":{"n\"ame":"x","labels":{"b":"2","a":"1"}}}"#
            ),
            Ok(expected)
        );
        assert_eq!(
            labels(r#"{"metadata":{"name":"x","labels":null},"spec":{}}"#),
            Ok(None)
        );
        assert_eq!(labels(r#"{"metadata":{"name":"x"}}"#), Ok(None));
        assert_eq!(labels(r#"{"spec":{}}"#), Ok(None));
        assert_eq!(labels(r#"{"metadata":{"labels":"no"}}"#), Err(()));
        assert_eq!(labels(r#"[1,2]"#), Err(()));
        assert_eq!(labels("not json"), Err(()));
    }

    #[test]
    fn only_a_selector_of_one_indexed_requirement_is_decided_by_the_index() {
        let decides = |selector: &str| index_decides(&LabelSelector::parse(selector).unwrap());
        assert!(decides("a=1"));
        assert!(decides("a==1"));
        assert!(decides("a in (1,2)"));
        for selector in ["", "a", "a!=1", "a=1,b=2", "a in (1,2),b", "a notin (1)"] {
            assert!(!decides(selector), "{selector}");
        }
    }

    #[test]
    fn equality_selectors_are_read_from_the_index_before_in_selectors() {
        assert_eq!(terms_of("a=1"), Some(vec!["a=1".to_string()]));
        assert_eq!(terms_of("a==1"), Some(vec!["a=1".to_string()]));
        assert_eq!(
            terms_of("x in (p,q),a=1"),
            Some(vec!["a=1".to_string()]),
            "one equality is more selective than a set"
        );
        assert_eq!(
            terms_of("x in (p,q),b!=2"),
            Some(vec!["x=p".to_string(), "x=q".to_string()])
        );
    }

    #[test]
    fn selectors_without_a_required_value_need_the_scan() {
        for selector in ["", "a", "!a", "a!=1", "a notin (1,2)", "a>1", "a<1"] {
            assert_eq!(terms_of(selector), None, "{selector:?}");
        }
    }
}
