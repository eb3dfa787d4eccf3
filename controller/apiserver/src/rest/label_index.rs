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

/// Only `metadata.labels` of a stored object.
#[derive(serde::Deserialize)]
pub(super) struct LabelsOnly {
    #[serde(default)]
    pub(super) metadata: MetadataLabels,
}

/// The labels of [`LabelsOnly`].
#[derive(Default, serde::Deserialize)]
pub(super) struct MetadataLabels {
    #[serde(default)]
    pub(super) labels: Option<Map<String, Value>>,
}

/// The terms of a stored object: one per label. Anything unreadable has none (and is then
/// never read through the index, as it could not match a label selector either).
fn label_terms(stored: &[u8]) -> Vec<String> {
    let Ok(object) = serde_json::from_slice::<LabelsOnly>(stored) else {
        return Vec::new();
    };
    object
        .metadata
        .labels
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
    let requirements = selector.requirements();
    let equality = requirements
        .iter()
        .find(|r| matches!(r.operator(), Operator::Equals | Operator::DoubleEquals));
    let chosen = equality.or_else(|| requirements.iter().find(|r| r.operator() == Operator::In))?;
    Some(
        chosen
            .values()
            .iter()
            .map(|value| label_term(chosen.key(), value))
            .collect(),
    )
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
