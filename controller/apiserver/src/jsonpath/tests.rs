use serde_json::{Value, json};

use super::{JsonPath, to_text};

fn object() -> Value {
    json!({
        "apiVersion": "iot.devplane.io/v1alpha1",
        "kind": "Device",
        "metadata": {
            "name": "sensor-1",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {"app.kubernetes.io/name": "sensor", "tier": "edge"}
        },
        "spec": {
            "replicas": 3,
            "ratio": 0.5,
            "enabled": true,
            "items": [
                {"name": "a", "size": 1},
                {"name": "b", "size": 2},
                {"name": "c", "size": 3}
            ],
            "modelRef": {"name": "thermo"}
        },
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "observedGeneration": 2},
                {"type": "Synced", "status": "False"}
            ]
        }
    })
}

fn eval(path: &str) -> Vec<Value> {
    let parsed = JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parsed.evaluate(&object()).into_iter().cloned().collect()
}

#[test]
fn a_dotted_path_selects_a_nested_field() {
    assert_eq!(eval(".spec.replicas"), vec![json!(3)]);
    assert_eq!(
        eval(".metadata.creationTimestamp"),
        vec![json!("2024-05-01T10:00:00Z")]
    );
}

#[test]
fn braces_and_root_markers_are_optional() {
    assert_eq!(eval("{.spec.replicas}"), vec![json!(3)]);
    assert_eq!(eval("$.spec.replicas"), vec![json!(3)]);
    assert_eq!(eval("@.spec.replicas"), vec![json!(3)]);
}

#[test]
fn a_missing_field_selects_nothing() {
    assert!(eval(".spec.missing").is_empty());
    assert!(eval(".spec.replicas.deeper").is_empty());
}

#[test]
fn a_filter_selects_list_items_by_field_value() {
    assert_eq!(
        eval(r#".status.conditions[?(@.type=="Ready")].status"#),
        vec![json!("True")]
    );
    assert_eq!(
        eval(r#".status.conditions[?(@.type != 'Ready')].type"#),
        vec![json!("Synced")]
    );
}

#[test]
fn a_filter_compares_numbers_and_booleans() {
    assert_eq!(
        eval(".spec.items[?(@.size > 1)].name"),
        vec![json!("b"), json!("c")]
    );
    assert_eq!(eval(".spec.items[?(@.size==2)].name"), vec![json!("b")]);
    assert_eq!(eval(".spec.items[?(@.size<=1.5)].name"), vec![json!("a")]);
    assert_eq!(
        eval(".status.conditions[?(@.observedGeneration)].type"),
        vec![json!("Ready")]
    );
}

#[test]
fn a_filter_never_matches_values_of_another_kind() {
    assert!(eval(r#".spec.items[?(@.size=="1")].name"#).is_empty());
}

#[test]
fn a_filter_compares_two_paths() {
    let v = json!({"list": [{"a": 1, "b": 1}, {"a": 1, "b": 2}]});
    let path = JsonPath::parse(".list[?(@.a == @.b)].b").unwrap();
    assert_eq!(path.evaluate(&v), vec![&json!(1)]);
}

#[test]
fn indexes_slices_and_wildcards_select_list_elements() {
    assert_eq!(eval(".spec.items[0].name"), vec![json!("a")]);
    assert_eq!(eval(".spec.items[-1].name"), vec![json!("c")]);
    assert_eq!(eval(".spec.items[-2].name"), vec![json!("b")]);
    assert_eq!(eval(".spec.items[1:].name"), vec![json!("b"), json!("c")]);
    assert_eq!(
        eval(".spec.items[0:3:2].name"),
        vec![json!("a"), json!("c")]
    );
    assert_eq!(
        eval(".spec.items[*].name"),
        vec![json!("a"), json!("b"), json!("c")]
    );
    assert_eq!(eval(".spec.items[0,2].name"), vec![json!("a"), json!("c")]);
}

#[test]
fn an_index_out_of_range_selects_nothing() {
    assert!(eval(".spec.items[5].name").is_empty());
    assert!(eval(".spec.items[0:10]").is_empty());
}

#[test]
fn keys_with_dots_can_be_escaped_or_quoted() {
    assert_eq!(
        eval(r".metadata.labels.app\.kubernetes\.io/name"),
        vec![json!("sensor")]
    );
    assert_eq!(
        eval(".metadata.labels['app.kubernetes.io/name']"),
        vec![json!("sensor")]
    );
    assert_eq!(
        eval(r#".metadata.labels["app.kubernetes.io/name"]"#),
        vec![json!("sensor")]
    );
    assert_eq!(
        eval(".metadata.labels['tier','app.kubernetes.io/name']"),
        vec![json!("edge"), json!("sensor")]
    );
}

#[test]
fn recursive_descent_finds_fields_at_any_depth() {
    let mut names = eval("..name");
    names.sort_by_key(|v| v.to_string());
    assert_eq!(
        names,
        vec![
            json!("a"),
            json!("b"),
            json!("c"),
            json!("sensor-1"),
            json!("thermo")
        ]
    );
}

#[test]
fn a_map_wildcard_selects_every_value() {
    let mut values = eval(".metadata.labels.*");
    values.sort_by_key(|v| v.to_string());
    assert_eq!(values, vec![json!("edge"), json!("sensor")]);
}

#[test]
fn a_bare_dot_selects_the_whole_object() {
    assert_eq!(eval("."), vec![object()]);
}

#[test]
fn simple_field_paths_are_recognised_for_selectable_fields() {
    let path = JsonPath::parse(".spec.modelRef.name").unwrap();
    assert!(path.is_simple_field_path());
    assert_eq!(path.field_names(), Some(vec!["spec", "modelRef", "name"]));
    assert!(
        !JsonPath::parse(".spec.items[0]")
            .unwrap()
            .is_simple_field_path()
    );
}

#[test]
fn malformed_paths_are_rejected_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("{.spec", "unclosed action"),
        (".spec.items[0", "unterminated array"),
        (".spec.items[abc]", "invalid array index abc"),
        (".spec.items[]", "empty brackets"),
        (".spec.items[1:2:3:4]", "invalid array index"),
        (r#".a[?(@.b=="x"]"#, "unterminated filter"),
        (r#".a[?(@.b="x")]"#, "unrecognized filter operator"),
        (r#".a[?(@.b==x)]"#, "neither a quoted string"),
        (r#".a[?(=="x")]"#, "no left operand"),
        (".a['b]", "unterminated"),
        ("spec.replicas", "fields start with '.'"),
        (".a ^b", "unrecognized character"),
        ("....a", "multiple recursive descent"),
    ];
    for (path, expected) in cases {
        let err = JsonPath::parse(path).expect_err(path);
        assert!(
            err.to_string().contains(expected),
            "{path:?}: {err} does not mention {expected:?}"
        );
        assert_eq!(err.path, path);
    }
}

#[test]
fn values_print_like_kubectl_jsonpath_output() {
    let cases = [
        (json!("text"), "text"),
        (json!(3), "3"),
        (json!(-7), "-7"),
        (json!(0.5), "0.5"),
        (json!(123456.5), "123456.5"),
        (json!(1234567.5), "1.2345675e+06"),
        (json!(0.00001), "1e-05"),
        (json!(true), "true"),
        (json!(["a", 1]), "[a 1]"),
        (json!({"b": 1, "a": ["x", null]}), "map[a:[x <nil>] b:1]"),
        (Value::Null, "<no value>"),
    ];
    for (value, expected) in cases {
        assert_eq!(to_text(&value), expected, "{value}");
    }
}

#[test]
fn the_source_text_is_kept_for_display() {
    let path = JsonPath::parse(" .spec.replicas ").unwrap();
    assert_eq!(path.as_str(), " .spec.replicas ");
    assert_eq!(path.to_string(), " .spec.replicas ");
}
