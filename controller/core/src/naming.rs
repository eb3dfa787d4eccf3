//! Names devplane derives and the Kubernetes name rules it checks offline. The rules
//! themselves live in `devplane-naming`, the one implementation the API server and
//! `devplane validate` use too; they are re-exported here for the domain code.

use std::collections::BTreeMap;

use devplane_api::constants::{CREDENTIALS_SECRET_SUFFIX, annotations};
pub use devplane_naming::{
    NameError, annotation_key_problems, dns1123_label_problems, dns1123_subdomain_problems,
    label_value_problem, label_value_problems, namespace_name_problem, object_name_problem,
    qualified_name_problems,
};

/// Longest object name: a DNS-1123 subdomain.
const MAX_OBJECT_NAME: usize = 253;
/// Longest label value.
const MAX_LABEL_VALUE: usize = 63;
/// Hex digits of the hash that keeps shortened names apart.
const HASH_DIGITS: usize = 16;

/// Name of the Secret holding a device's or gateway's credentials.
pub fn credentials_secret_name(owner: &str) -> String {
    derived_name(owner, CREDENTIALS_SECRET_SUFFIX)
}

/// The name of an object derived from `owner`'s by appending `suffix`: `{owner}{suffix}`
/// while that is short enough for an object name, else `owner` shortened with a hash of it,
/// so that every owner keeps its own distinct name.
pub fn derived_name(owner: &str, suffix: &str) -> String {
    if owner.len() + suffix.len() <= MAX_OBJECT_NAME {
        format!("{owner}{suffix}")
    } else {
        format!(
            "{}{suffix}",
            shortened(owner, MAX_OBJECT_NAME.saturating_sub(suffix.len()))
        )
    }
}

/// The value of a label that names an owner (`iot.devplane.io/device` on its credentials,
/// `iot.devplane.io/gateway` on a gateway's sub-devices): the name itself when it fits in a
/// label value (any object name of at most 63 characters does), else a shortened form with a
/// hash of the whole name; the whole name then goes into the
/// [`annotations::OWNER_NAME`] annotation ([`owner_annotations`]).
pub fn owner_label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        name.to_string()
    } else {
        shortened(name, MAX_LABEL_VALUE)
    }
}

/// The annotations that go with [`owner_label_value`]: the whole name when the label holds a
/// shortened one, else none.
pub fn owner_annotations(name: &str) -> BTreeMap<String, String> {
    if name.len() <= MAX_LABEL_VALUE {
        BTreeMap::new()
    } else {
        BTreeMap::from([(annotations::OWNER_NAME.to_string(), name.to_string())])
    }
}

/// The owner an object's owner label (with value `label`) names: the whole name from the
/// [`annotations::OWNER_NAME`] annotation when the label is its shortened form, else the label
/// itself. An annotation the label does not match is ignored.
pub fn owner_from_label<'a>(
    label: &'a str,
    annotations: Option<&'a BTreeMap<String, String>>,
) -> &'a str {
    whole_name(
        label,
        annotations.and_then(|a| a.get(annotations::OWNER_NAME)),
    )
}

/// The name a label of [`owner_label_value`] stands for: `whole` (read from an annotation)
/// when the label is its shortened form, else the label itself.
pub fn whole_name<'a>(label: &'a str, whole: Option<&'a String>) -> &'a str {
    whole
        .filter(|whole| whole.len() > MAX_LABEL_VALUE && owner_label_value(whole) == label)
        .map_or(label, String::as_str)
}

/// `name` cut to leave room for a hash of it, the hash appended: at most `max` characters,
/// beginning and ending with a letter or digit (as object names and label values must) when
/// `name` begins with one.
fn shortened(name: &str, max: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..HASH_DIGITS / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut end = max.saturating_sub(HASH_DIGITS + 1).min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let kept = name[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if kept.is_empty() {
        hash
    } else {
        format!("{kept}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_secret_is_named_after_its_owner() {
        assert_eq!(credentials_secret_name("inv-01"), "inv-01-credentials");
        let longest = format!("{}.{}", "a".repeat(200), "b".repeat(40));
        assert_eq!(longest.len() + CREDENTIALS_SECRET_SUFFIX.len(), 253);
        assert_eq!(
            credentials_secret_name(&longest),
            format!("{longest}-credentials")
        );
    }

    /// Object names up to the limit, some differing only past the point where they are cut.
    fn long_names() -> Vec<String> {
        let stem = |n: usize| {
            (0..n)
                .map(|i| if i % 10 == 5 { '.' } else { 'm' })
                .collect::<String>()
        };
        vec![
            format!("{}-1", stem(240)),
            format!("{}-2", stem(240)),
            format!("{}x", stem(252)),
            format!("{}1", stem(62)),
            format!("{}2", stem(62)),
            format!("{}9", stem(99)),
        ]
    }

    #[test]
    fn names_too_long_for_a_secret_name_or_a_label_value_are_shortened_apart() {
        let names = long_names();
        let secrets: Vec<String> = names.iter().map(|n| credentials_secret_name(n)).collect();
        let labels: Vec<String> = names.iter().map(|n| owner_label_value(n)).collect();
        for (name, (secret, label)) in names.iter().zip(secrets.iter().zip(&labels)) {
            assert!(
                object_name_problem(name).is_none(),
                "{name} is a valid name"
            );
            assert_eq!(object_name_problem(secret), None, "{secret}");
            assert!(secret.ends_with(CREDENTIALS_SECRET_SUFFIX), "{secret}");
            assert_eq!(label_value_problem(label), None, "{label}");
            let annotations = owner_annotations(name);
            assert_eq!(owner_from_label(label, Some(&annotations)), name);
            if name.len() <= MAX_LABEL_VALUE {
                assert_eq!(label, name);
                assert!(annotations.is_empty());
            } else {
                assert_eq!(annotations[annotations::OWNER_NAME], *name);
            }
        }
        let distinct = |v: &[String]| v.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(distinct(&secrets), names.len());
        assert_eq!(distinct(&labels), names.len());
        // Stable: the same name gives the same names in every process and release.
        assert_eq!(
            owner_label_value(&names[5]),
            owner_label_value(&names[5].clone())
        );
    }

    #[test]
    fn an_owner_annotation_that_its_label_does_not_match_is_ignored() {
        let long = format!("{}-a", "n".repeat(80));
        let other = format!("{}-b", "n".repeat(80));
        let label = owner_label_value(&long);
        assert_eq!(
            owner_from_label(&label, Some(&owner_annotations(&long))),
            long
        );
        assert_eq!(
            owner_from_label(&label, Some(&owner_annotations(&other))),
            label
        );
        assert_eq!(
            owner_from_label("short", Some(&owner_annotations(&long))),
            "short"
        );
        assert_eq!(owner_from_label("short", None), "short");
    }
}
