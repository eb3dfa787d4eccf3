use super::*;

fn gateway(yaml_spec: &str) -> Gateway {
    serde_yaml::from_str(&format!(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\nspec: {yaml_spec}\n"
    ))
    .expect("gateway")
}

fn device(metadata: &str, connection: &str) -> Device {
    serde_yaml::from_str(&format!(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: Device\nmetadata: {metadata}\nspec: {{modelRef: {{name: m}}, connection: {connection}}}\n"
    ))
    .expect("device")
}

#[test]
fn a_gateway_acts_for_devices_naming_it_and_those_its_selector_picks() {
    let gw = gateway("{modelRef: {name: m}, subDevices: {selector: {matchLabels: {site: s7}}}}");
    let named = device("{name: a, namespace: ns}", "{gatewayRef: {name: gw}}");
    let selected = device("{name: b, namespace: ns, labels: {site: s7}}", "{}");
    let other = device("{name: c, namespace: ns, labels: {site: s8}}", "{}");
    let elsewhere = device("{name: d, namespace: other, labels: {site: s7}}", "{}");
    let names_another = device("{name: e, namespace: ns}", "{gatewayRef: {name: gw2}}");
    assert!(may_act_for(&gw, &named));
    assert!(may_act_for(&gw, &selected));
    assert!(!may_act_for(&gw, &other));
    assert!(
        !may_act_for(&gw, &elsewhere),
        "a selector stays in its namespace"
    );
    assert!(!may_act_for(&gw, &names_another));
}

#[test]
fn a_device_in_another_namespace_needs_the_gateway_namespace_label() {
    let gw = gateway("{modelRef: {name: m}}");
    let registered = device(
        "{name: a, namespace: target, labels: {iot.devplane.io/gateway-namespace: ns}}",
        "{gatewayRef: {name: gw}}",
    );
    let unlabelled = device("{name: b, namespace: target}", "{gatewayRef: {name: gw}}");
    let mislabelled = device(
        "{name: c, namespace: target, labels: {iot.devplane.io/gateway-namespace: x}}",
        "{gatewayRef: {name: gw}}",
    );
    let home_but_labelled_away = device(
        "{name: d, namespace: ns, labels: {iot.devplane.io/gateway-namespace: target}}",
        "{gatewayRef: {name: gw}}",
    );
    assert!(may_act_for(&gw, &registered));
    assert!(!may_act_for(&gw, &unlabelled));
    assert!(!may_act_for(&gw, &mislabelled));
    assert!(!may_act_for(&gw, &home_but_labelled_away));
}

#[test]
fn selectors_follow_the_kubernetes_operators_and_an_empty_one_picks_nothing() {
    let labels = BTreeMap::from([
        ("site".to_string(), "s7".to_string()),
        ("tier".to_string(), "edge".to_string()),
    ]);
    let selector = |yaml: &str| -> LabelSelector { serde_yaml::from_str(yaml).expect("selector") };
    let cases = [
        ("{matchLabels: {site: s7}}", true),
        ("{matchLabels: {site: s8}}", false),
        (
            "{matchExpressions: [{key: site, operator: In, values: [s6, s7]}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: site, operator: NotIn, values: [s7]}]}",
            false,
        ),
        ("{matchExpressions: [{key: tier, operator: Exists}]}", true),
        (
            "{matchExpressions: [{key: zone, operator: DoesNotExist}]}",
            true,
        ),
        ("{matchExpressions: [{key: zone, operator: Exists}]}", false),
        (
            "{matchExpressions: [{key: site, operator: Bogus, values: [s7]}]}",
            false,
        ),
        (
            "{matchLabels: {site: s7}, matchExpressions: [{key: tier, operator: In, values: [core]}]}",
            false,
        ),
        ("{}", false),
    ];
    for (yaml, want) in cases {
        assert_eq!(selector_matches(&selector(yaml), &labels), want, "{yaml}");
    }
}
