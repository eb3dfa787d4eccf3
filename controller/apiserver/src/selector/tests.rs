use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as ApiLabelSelector, LabelSelectorRequirement,
};
use serde_json::{Map, Value, json};

use super::*;

fn labels(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn selects(selector: &str, object_labels: Value) -> bool {
    let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    parsed.matches(Some(&labels(object_labels)))
}

#[test]
fn an_empty_label_selector_selects_everything() {
    let selector = LabelSelector::parse("").unwrap();
    assert!(selector.is_empty());
    assert!(selector.matches(None));
    assert!(LabelSelector::parse("   ").unwrap().is_empty());
}

#[test]
fn every_label_operator_matches_like_apimachinery() {
    let l = json!({"app": "web", "tier": "edge", "replicas": "5"});
    let cases = [
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("app!=web", false),
        ("missing!=x", true),
        ("app in (web,db)", true),
        ("app in (db)", false),
        ("missing in (x)", false),
        ("app notin (db)", true),
        ("app notin (web)", false),
        ("missing notin (x)", true),
        ("replicas>4", true),
        ("replicas>5", false),
        ("replicas<6", true),
        ("app>1", false),
        ("missing<9", false),
        ("app=web,tier=edge", true),
        ("app=web,tier=core", false),
        ("  app = web ,  tier in ( edge , core )  ", true),
        // `k=` requires the label to exist with an empty value.
        ("missing=", false),
        ("app=", false),
        ("app!=", true),
        ("app in (web,,db)", true),
    ];
    for (selector, expected) in cases {
        assert_eq!(selects(selector, l.clone()), expected, "{selector}");
    }
}

#[test]
fn keywords_are_values_where_values_are_expected() {
    assert!(selects("in=notin", json!({"in": "notin"})));
    assert!(selects("k in (in,notin)", json!({"k": "in"})));
}

#[test]
fn objects_without_labels_satisfy_only_negative_requirements() {
    for (selector, expected) in [
        ("a!=b", true),
        ("a notin (b)", true),
        ("!a", true),
        ("a", false),
        ("a=b", false),
    ] {
        assert_eq!(
            LabelSelector::parse(selector).unwrap().matches(None),
            expected,
            "{selector}"
        );
    }
}

#[test]
fn label_selectors_print_in_canonical_form() {
    let selector = LabelSelector::parse("tier in (b, a), !legacy,app==web, x notin (z)").unwrap();
    assert_eq!(
        selector.to_string(),
        "app==web,!legacy,tier in (a,b),x notin (z)"
    );
    assert_eq!(selector.requirements().len(), 4);
    assert_eq!(selector.requirements()[2].operator(), Operator::In);
    assert_eq!(selector.requirements()[2].values(), ["a", "b"]);
}

#[test]
fn malformed_label_selectors_are_rejected_with_apiserver_messages() {
    let cases = [
        (
            "a b",
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
        ),
        ("a,", "found '', expected: identifier after ','"),
        (
            ",a",
            "found ',', expected: !, identifier, or 'end of string'",
        ),
        (
            "a in b",
            "unable to parse requirement: found 'b' expected: '('",
        ),
        (
            "a in (b",
            "unable to parse requirement: found '', expected: ',' or ')'",
        ),
        (
            "a in (b c)",
            "unable to parse requirement: found 'c', expected: ',' or ')'",
        ),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        (
            "!=a",
            "found '!=', expected: !, identifier, or 'end of string'",
        ),
        (
            "a=(",
            "unable to parse requirement: found '(', expected: identifier",
        ),
        (
            "a>x",
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        ("a in ()", ""),
    ];
    for (selector, expected) in cases {
        match LabelSelector::parse(selector) {
            Err(e) => assert_eq!(e.to_string(), expected, "{selector:?}"),
            Ok(parsed) => assert!(expected.is_empty(), "{selector:?} parsed as {parsed}"),
        }
    }
}

#[test]
fn label_keys_and_values_are_validated_like_kubernetes() {
    for valid in [
        "app",
        "app.kubernetes.io/name",
        "a-b_c.d",
        "example.com/X9",
        &"k".repeat(63),
    ] {
        assert!(LabelSelector::parse(valid).is_ok(), "{valid}");
    }
    let invalid_keys = [
        ("-app", "name part must consist of alphanumeric characters"),
        (
            "Example.com/app",
            "prefix part a lowercase RFC 1123 subdomain",
        ),
        ("/app", "prefix part must be non-empty"),
        ("a/b/c", "a qualified name must consist of"),
        ("app/", "name part must be non-empty"),
    ];
    for (key, expected) in invalid_keys {
        let err = LabelSelector::parse(key).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "unable to parse requirement: key: Invalid value: {key:?}: "
            )),
            "{err}"
        );
        assert!(err.contains(expected), "{key}: {err}");
    }
    let long_key = "k".repeat(64);
    assert!(
        LabelSelector::parse(&long_key)
            .unwrap_err()
            .to_string()
            .contains("must be no more than 63 characters")
    );

    let err = LabelSelector::parse(&format!("app={}", "v".repeat(64)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("values[0][app]: Invalid value:"), "{err}");
    assert!(err.contains("must be no more than 63 characters"), "{err}");
    let err = LabelSelector::parse("app=-web").unwrap_err().to_string();
    assert!(
        err.contains("a valid label must be an empty string"),
        "{err}"
    );
    // Both the integer rule and the label value rule fail: an aggregate list.
    let err = LabelSelector::parse("a>x-").unwrap_err().to_string();
    assert!(
        err.starts_with("unable to parse requirement: [values[0]:"),
        "{err}"
    );
}

#[test]
fn api_label_selectors_convert_match_labels_and_expressions() {
    let api = ApiLabelSelector {
        match_labels: Some([("app".to_string(), "web".to_string())].into()),
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["edge".into(), "core".into()]),
            },
            LabelSelectorRequirement {
                key: "legacy".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
            LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Exists".into(),
                values: None,
            },
        ]),
    };
    let selector = LabelSelector::from_label_selector(&api).unwrap();
    assert_eq!(
        selector.to_string(),
        "app=web,!legacy,tier in (core,edge),zone"
    );
    assert!(selector.matches(Some(&labels(
        json!({"app": "web", "tier": "edge", "zone": "a"})
    ))));
    assert!(!selector.matches(Some(&labels(json!({"app": "web", "tier": "edge"})))));
    assert!(
        LabelSelector::from_label_selector(&ApiLabelSelector::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn api_label_selectors_with_bad_operators_or_values_are_rejected() {
    let with = |operator: &str, values: Option<Vec<String>>| ApiLabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "k".into(),
            operator: operator.into(),
            values,
        }]),
        ..Default::default()
    };
    let err = LabelSelector::from_label_selector(&with("Gt", Some(vec!["1".into()]))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"Gt\" is not a valid label selector operator"
    );
    let err = LabelSelector::from_label_selector(&with("In", None)).unwrap_err();
    assert!(
        err.to_string().contains("values set can't be empty"),
        "{err}"
    );
    let err =
        LabelSelector::from_label_selector(&with("Exists", Some(vec!["x".into()]))).unwrap_err();
    assert!(
        err.to_string().contains("values set must be empty"),
        "{err}"
    );
}

#[test]
fn field_selectors_parse_equality_and_inequality_terms() {
    let selector =
        FieldSelector::parse("metadata.name=a,type!=Opaque,status.phase==Active").unwrap();
    assert_eq!(
        selector.fields().collect::<Vec<_>>(),
        ["metadata.name", "status.phase", "type"]
    );
    assert_eq!(selector.required_value("metadata.name"), Some("a"));
    assert_eq!(selector.required_value("status.phase"), Some("Active"));
    assert_eq!(selector.required_value("type"), None);
    let get = |f: &str| match f {
        "metadata.name" => Some("a".to_string()),
        "status.phase" => Some("Active".to_string()),
        "type" => Some("kubernetes.io/tls".to_string()),
        _ => None,
    };
    assert!(selector.matches(get));
    assert!(!selector.matches(|f: &str| if f == "type" {
        Some("Opaque".into())
    } else {
        get(f)
    }));
}

#[test]
fn field_selector_values_unescape_commas_equals_and_backslashes() {
    let selector = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
    assert_eq!(selector.required_value("metadata.name"), Some(r"a,b=c\d"));
    assert_eq!(selector.to_string(), r"metadata.name=a\,b\=c\\d");
}

#[test]
fn missing_fields_compare_as_empty_strings() {
    let selector = FieldSelector::parse("spec.x=").unwrap();
    assert!(selector.matches(|_: &str| None));
    let selector = FieldSelector::parse("spec.x!=y").unwrap();
    assert!(selector.matches(|_: &str| None));
}

#[test]
fn empty_field_selectors_and_empty_terms_select_everything() {
    assert!(FieldSelector::parse("").unwrap().is_empty());
    let selector = FieldSelector::parse("a=b,").unwrap();
    assert_eq!(selector.fields().count(), 1);
}

#[test]
fn malformed_field_selectors_are_rejected_with_apiserver_messages() {
    let cases = [
        (
            "metadata.name",
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
        ),
        (
            "a=b=c",
            "invalid field selector: unescaped character in value: =",
        ),
        (
            r"a=b\c",
            r"invalid field selector: invalid escape sequence: \c",
        ),
        (
            r"a=b\",
            r"invalid field selector: invalid escape sequence: \",
        ),
    ];
    for (selector, expected) in cases {
        assert_eq!(
            FieldSelector::parse(selector).unwrap_err().to_string(),
            expected,
            "{selector}"
        );
    }
}

#[test]
fn field_names_are_not_trimmed_so_unsupported_ones_can_be_reported() {
    let selector = FieldSelector::parse("metadata.name =a").unwrap();
    assert_eq!(selector.fields().collect::<Vec<_>>(), ["metadata.name "]);
}

#[test]
fn field_values_of_any_kind_include_name_and_namespace() {
    let cm = json!({"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}});
    assert_eq!(field_value(&cm, "metadata.name").as_deref(), Some("cm"));
    assert_eq!(
        field_value(&cm, "metadata.namespace").as_deref(),
        Some("ns")
    );
    let ns = json!({"kind": "Namespace", "metadata": {"name": "ns"}, "status": {"phase": "Terminating"}});
    assert_eq!(field_value(&ns, "metadata.namespace"), None);
    assert_eq!(
        field_value(&ns, "status.phase").as_deref(),
        Some("Terminating")
    );
    let secret = json!({"kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque"});
    assert_eq!(field_value(&secret, "type").as_deref(), Some("Opaque"));
}

#[test]
fn field_values_follow_crd_selectable_field_paths() {
    let device = json!({
        "kind": "Device",
        "metadata": {"name": "d"},
        "spec": {"modelRef": {"name": "thermo"}, "replicas": 3, "enabled": false, "note": null, "tags": ["a"]}
    });
    assert_eq!(
        field_value(&device, "spec.modelRef.name").as_deref(),
        Some("thermo")
    );
    assert_eq!(field_value(&device, "spec.replicas").as_deref(), Some("3"));
    assert_eq!(
        field_value(&device, "spec.enabled").as_deref(),
        Some("false")
    );
    assert_eq!(field_value(&device, "spec.note").as_deref(), Some(""));
    assert_eq!(field_value(&device, "spec.tags"), None);
    assert_eq!(field_value(&device, "spec.missing"), None);
    let selector = FieldSelector::parse("spec.modelRef.name=thermo,spec.enabled!=true").unwrap();
    assert!(selector.matches(|f: &str| field_value(&device, f)));
}

#[test]
fn event_field_values_use_core_v1_names() {
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "d.1", "namespace": "ns"},
        "involvedObject": {"kind": "Device", "namespace": "ns", "name": "d", "uid": "u-1", "apiVersion": "iot.devplane.io/v1alpha1", "resourceVersion": "7", "fieldPath": "spec"},
        "reason": "Provisioned",
        "type": "Normal",
        "source": {"component": "kubelet"},
        "reportingComponent": "devplane"
    });
    let expected = [
        ("involvedObject.kind", "Device"),
        ("involvedObject.namespace", "ns"),
        ("involvedObject.name", "d"),
        ("involvedObject.uid", "u-1"),
        ("involvedObject.apiVersion", "iot.devplane.io/v1alpha1"),
        ("involvedObject.resourceVersion", "7"),
        ("involvedObject.fieldPath", "spec"),
        ("reason", "Provisioned"),
        ("type", "Normal"),
        ("source", "kubelet"),
        ("reportingComponent", "devplane"),
    ];
    for (field, value) in expected {
        assert_eq!(
            field_value(&event, field).as_deref(),
            Some(value),
            "{field}"
        );
    }
    // kubectl describe's query.
    let describe = FieldSelector::parse(
        "involvedObject.namespace=ns,involvedObject.kind=Device,involvedObject.uid=u-1,involvedObject.name=d",
    )
    .unwrap();
    assert!(describe.matches(|f: &str| field_value(&event, f)));
}

#[test]
fn event_source_falls_back_to_the_reporting_component() {
    let event =
        json!({"kind": "Event", "metadata": {"name": "e"}, "reportingComponent": "devplane"});
    assert_eq!(field_value(&event, "source").as_deref(), Some("devplane"));
    // An events.k8s.io-shaped object still answers with core names.
    let v1 = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
        "regarding": {"kind": "Device", "name": "d"}, "reportingController": "ctl"
    });
    assert_eq!(
        field_value(&v1, "involvedObject.kind").as_deref(),
        Some("Device")
    );
    assert_eq!(
        field_value(&v1, "reportingComponent").as_deref(),
        Some("ctl")
    );
    assert_eq!(field_value(&v1, "source").as_deref(), Some("ctl"));
}

#[test]
fn supported_field_labels_are_listed_per_kind() {
    assert!(builtin_field_labels("Event").contains(&"involvedObject.uid"));
    assert!(builtin_field_labels("Secret").contains(&"type"));
    assert!(builtin_field_labels("Namespace").contains(&"status.phase"));
    assert_eq!(
        builtin_field_labels("ConfigMap"),
        ["metadata.name", "metadata.namespace"]
    );
    assert_eq!(
        events_v1_field_label("regarding.uid"),
        Some("involvedObject.uid")
    );
    assert_eq!(
        events_v1_field_label("reportingController"),
        Some("reportingComponent")
    );
    assert_eq!(events_v1_field_label("involvedObject.uid"), None);
    assert_eq!(events_v1_field_label("source"), None);
}
