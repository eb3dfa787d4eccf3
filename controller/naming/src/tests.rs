//! The documented Kubernetes name rules, one table: every check, valid and invalid examples,
//! and exactly the problems the API server would list for each.

use super::*;
use NameError::*;

#[derive(Clone, Copy, Debug)]
enum Rule {
    Subdomain,
    Label,
    Qualified,
    AnnotationKey,
    LabelValue,
}

fn check(rule: Rule, value: &str) -> Vec<NameError> {
    match rule {
        Rule::Subdomain => dns1123_subdomain_problems(value),
        Rule::Label => dns1123_label_problems(value),
        Rule::Qualified => qualified_name_problems(value),
        Rule::AnnotationKey => annotation_key_problems(value),
        Rule::LabelValue => label_value_problems(value),
    }
}

fn a(n: usize) -> String {
    "a".repeat(n)
}

#[test]
fn every_rule_accepts_and_refuses_what_kubernetes_documents() {
    use Rule::*;
    let subdomain_253 = format!("{}.{}.{}.{}", a(63), a(63), a(63), a(61));
    let subdomain_254 = format!("{subdomain_253}a");
    let table: Vec<(Rule, String, Vec<NameError>)> = vec![
        // DNS-1123 subdomains: object names.
        (Subdomain, "inverter-01".into(), vec![]),
        (Subdomain, "a.b-c".into(), vec![]),
        (Subdomain, "0".into(), vec![]),
        (Subdomain, "example.com".into(), vec![]),
        (Subdomain, subdomain_253.clone(), vec![]),
        (Subdomain, a(253), vec![]),
        (Subdomain, "".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a..b".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a.-b".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a-.b".into(), vec![NotDns1123Subdomain]),
        (Subdomain, ".a".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a.".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "-a".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a-".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "A".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "a_b".into(), vec![NotDns1123Subdomain]),
        (Subdomain, "é".into(), vec![NotDns1123Subdomain]),
        (Subdomain, subdomain_254, vec![TooLong { max: 253 }]),
        (Subdomain, a(254), vec![TooLong { max: 253 }]),
        (
            Subdomain,
            format!("{}A", a(253)),
            vec![TooLong { max: 253 }, NotDns1123Subdomain],
        ),
        // DNS-1123 labels: Namespace names.
        (Label, "smart-home".into(), vec![]),
        (Label, "9lives".into(), vec![]),
        (Label, a(63), vec![]),
        (Label, "".into(), vec![NotDns1123Label]),
        (Label, "a.b".into(), vec![NotDns1123Label]),
        (Label, "-a".into(), vec![NotDns1123Label]),
        (Label, "a-".into(), vec![NotDns1123Label]),
        (Label, "A".into(), vec![NotDns1123Label]),
        (Label, a(64), vec![TooLong { max: 63 }]),
        // Qualified names: label and annotation keys, finalizers.
        (Qualified, "app".into(), vec![]),
        (Qualified, "My_Key.v2".into(), vec![]),
        (Qualified, "example.com/key".into(), vec![]),
        (Qualified, "iot.devplane.io/site".into(), vec![]),
        (Qualified, format!("{}/{}", a(253), a(63)), vec![]),
        (Qualified, "".into(), vec![EmptyNamePart, BadNamePart]),
        (Qualified, "/key".into(), vec![EmptyPrefix]),
        (Qualified, "key/".into(), vec![EmptyNamePart, BadNamePart]),
        (
            Qualified,
            "/".into(),
            vec![EmptyPrefix, EmptyNamePart, BadNamePart],
        ),
        (Qualified, "a/b/c".into(), vec![NotQualifiedName]),
        (
            Qualified,
            "Example.com/key".into(),
            vec![PrefixNotDns1123Subdomain],
        ),
        (
            Qualified,
            "a..b/key".into(),
            vec![PrefixNotDns1123Subdomain],
        ),
        (
            Qualified,
            "a.-b/key".into(),
            vec![PrefixNotDns1123Subdomain],
        ),
        (Qualified, format!("{}/key", a(254)), vec![PrefixTooLong]),
        (Qualified, "-key".into(), vec![BadNamePart]),
        (Qualified, "key-".into(), vec![BadNamePart]),
        (Qualified, "has space".into(), vec![BadNamePart]),
        (Qualified, a(63), vec![]),
        (Qualified, a(64), vec![NamePartTooLong]),
        (
            Qualified,
            format!("{}_", a(64)),
            vec![NamePartTooLong, BadNamePart],
        ),
        // Annotation keys: qualified names once lower-cased.
        (AnnotationKey, "Example.com/Note".into(), vec![]),
        (AnnotationKey, "example.com/key".into(), vec![]),
        (
            AnnotationKey,
            "a..b/key".into(),
            vec![PrefixNotDns1123Subdomain],
        ),
        (AnnotationKey, "/key".into(), vec![EmptyPrefix]),
        (AnnotationKey, "a/b/c".into(), vec![NotQualifiedName]),
        // Label values.
        (LabelValue, "".into(), vec![]),
        (LabelValue, "north-field_2.a".into(), vec![]),
        (LabelValue, "MyValue".into(), vec![]),
        (LabelValue, a(63), vec![]),
        (LabelValue, a(64), vec![TooLong { max: 63 }]),
        (LabelValue, "_lead".into(), vec![NotLabelValue]),
        (LabelValue, "trail.".into(), vec![NotLabelValue]),
        (LabelValue, "has space".into(), vec![NotLabelValue]),
        (LabelValue, "a/b".into(), vec![NotLabelValue]),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter_map(|(rule, value, want)| {
            let got = check(*rule, value);
            (got != *want).then(|| format!("{rule:?} {value:?}: got {got:?}, want {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn problems_read_as_the_kubernetes_api_server_words_them() {
    assert_eq!(
        object_name_problem("A").map(|p| p.to_string()).as_deref(),
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    );
    assert_eq!(
        TooLong { max: 253 }.to_string(),
        "must be no more than 253 characters"
    );
    assert!(
        namespace_name_problem("a.b")
            .map(|p| p.to_string())
            .is_some_and(|p| p.starts_with("a lowercase RFC 1123 label must consist of"))
    );
    assert_eq!(
        PrefixNotDns1123Subdomain.to_string(),
        format!("prefix part {}", NotDns1123Subdomain)
    );
    assert_eq!(
        NamePartTooLong.to_string(),
        "name part must be no more than 63 characters"
    );
    assert!(BadNamePart.to_string().starts_with(
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
    ));
    assert!(
        NotQualifiedName
            .to_string()
            .ends_with("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")
    );
    assert!(
        label_value_problem("_x")
            .map(|p| p.to_string())
            .is_some_and(|p| p.starts_with("a valid label must be an empty string or consist of"))
    );
}

#[test]
fn the_single_problem_helpers_name_the_first_problem_or_none() {
    assert_eq!(object_name_problem("inverter-01"), None);
    assert_eq!(
        object_name_problem(&format!("{}A", a(253))),
        Some(TooLong { max: 253 })
    );
    assert_eq!(namespace_name_problem("smart-home"), None);
    assert_eq!(namespace_name_problem("smart.home"), Some(NotDns1123Label));
    assert_eq!(label_value_problem(""), None);
    assert_eq!(label_value_problem(&a(64)), Some(TooLong { max: 63 }));
}
