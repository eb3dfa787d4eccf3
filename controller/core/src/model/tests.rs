use std::collections::BTreeMap;

use devplane_api::v1alpha1::{DataKind, DeviceModelSpec, ModelReference};

use super::*;
use crate::test_support::{fixture_models, models, resolved};

fn key(ns: &str, name: &str) -> ModelKey {
    ModelKey::new(ns, name)
}

fn resolve_fixture(ns: &str, name: &str) -> Result<ResolvedModel, ResolveError> {
    resolve(&fixture_models(), &key(ns, name))
}

fn definition_problems(yaml: &str) -> Vec<DefinitionError> {
    let models = models(yaml);
    let spec = models.values().next().expect("one model");
    check_definition(spec)
}

#[test]
fn extends_chain_is_flattened_into_one_feature_set() {
    let model = resolved("home", "climate-sensor");
    assert_eq!(model.version, semver::Version::new(1, 0, 0));
    assert!(model.measure_points.contains_key("temperature"));
    assert!(model.measure_points.contains_key("humidity"));
    assert!(model.measure_points.contains_key("battery"));
    assert_eq!(model.attributes.len(), 3);
    assert_eq!(model.services.len(), 1);
    assert_eq!(model.events.len(), 1);
    assert_eq!(
        model.ancestors(),
        vec![
            "lib/temperature@1.1.0",
            "lib/humidity@1.0.0",
            "lib/device-info@2.0.0"
        ]
    );
    let temperature = &model.measure_points["temperature"].origin;
    assert_eq!(temperature.model, key("lib", "temperature"));
    assert_eq!(temperature.path, "spec.measurePoints[0]");
    assert_eq!(
        temperature.chain.to_string(),
        "home/climate-sensor → lib/temperature"
    );
}

#[test]
fn a_diamond_includes_the_shared_model_once_without_conflict() {
    let model = resolve_fixture("diamond", "bottom").expect("diamond resolves");
    assert_eq!(model.measure_points.len(), 1);
    assert_eq!(model.attributes.len(), 2);
    let lineage: Vec<String> = model.lineage.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        lineage,
        [
            "diamond/bottom",
            "diamond/left",
            "lib/temperature",
            "diamond/right"
        ]
    );
}

#[test]
fn a_cycle_is_reported_with_the_chain_that_closes_it() {
    let err = resolve_fixture("cycle", "a").expect_err("cycle");
    assert_eq!(
        err,
        ResolveError::Cycle {
            chain: Chain(vec![
                key("cycle", "a"),
                key("cycle", "b"),
                key("cycle", "c"),
                key("cycle", "a")
            ])
        }
    );
    assert_eq!(
        err.to_string(),
        "extends cycle: cycle/a → cycle/b → cycle/c → cycle/a"
    );
    assert_eq!(err.reason(), "ExtendsCycle");
}

#[test]
fn a_cycle_entered_from_outside_names_only_the_loop() {
    let mut source = fixture_models();
    source.insert(
        key("cycle", "entry"),
        DeviceModelSpec {
            version: "1.0.0".into(),
            extends: vec![ModelReference {
                name: "b".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let err = resolve(&source, &key("cycle", "entry")).expect_err("cycle");
    assert_eq!(
        err.to_string(),
        "extends cycle: cycle/b → cycle/c → cycle/a → cycle/b"
    );
}

#[test]
fn a_conflicting_identifier_names_both_definitions_and_their_chains() {
    let err = resolve_fixture("bad", "clash").expect_err("conflict");
    let ResolveError::Conflict {
        identifier,
        first_kind,
        first,
        second_kind,
        second,
    } = &err
    else {
        panic!("expected a conflict, got {err}");
    };
    assert_eq!(identifier, "temperature");
    assert_eq!(*first_kind, FeatureKind::Attribute);
    assert_eq!(first.model, key("bad", "clash"));
    assert_eq!(*second_kind, FeatureKind::MeasurePoint);
    assert_eq!(second.model, key("lib", "temperature"));
    assert_eq!(
        second.chain.to_string(),
        "bad/clash → bad/thermo → lib/temperature"
    );
    assert_eq!(
        err.to_string(),
        "identifier \"temperature\" is defined twice: as attribute at bad/clash spec.attributes[0] and as measure point at \
         lib/temperature spec.measurePoints[0] (via bad/clash → bad/thermo → lib/temperature)"
    );
}

#[test]
fn an_identifier_listed_twice_in_one_model_conflicts() {
    let err = resolve_fixture("bad", "twice").expect_err("conflict");
    let ResolveError::Conflict { first, second, .. } = err else {
        panic!("expected a conflict")
    };
    assert_eq!(first.path, "spec.measurePoints[0]");
    assert_eq!(second.path, "spec.measurePoints[1]");
}

#[test]
fn a_missing_model_is_reported_with_the_chain_that_needs_it() {
    let err = resolve_fixture("bad", "orphan").expect_err("missing");
    assert_eq!(
        err,
        ResolveError::Missing {
            missing: key("lib", "nowhere"),
            chain: Chain(vec![key("bad", "orphan"), key("lib", "nowhere")])
        }
    );
    assert_eq!(err.reason(), "ModelNotFound");
    let err = resolve_fixture("bad", "does-not-exist").expect_err("missing root");
    assert!(matches!(err, ResolveError::Missing { .. }));
}

#[test]
fn an_unsatisfied_version_requirement_is_reported() {
    let err = resolve_fixture("bad", "too-new").expect_err("version");
    assert_eq!(
        err.to_string(),
        "lib/temperature has version 1.1.0, which does not satisfy \">=2\" (extends chain: bad/too-new → lib/temperature)"
    );
    assert_eq!(err.reason(), "VersionMismatch");
}

#[test]
fn a_bad_definition_in_an_extended_model_names_model_path_and_chain() {
    let err = resolve_fixture("bad", "broken-child").expect_err("definition");
    let ResolveError::Definition {
        model,
        source,
        chain,
    } = &err
    else {
        panic!("expected a definition error: {err}")
    };
    assert_eq!(*model, key("bad", "broken-parent"));
    assert_eq!(source.path, "spec.measurePoints[0].dataType.enumValues");
    assert_eq!(source.problem, DefinitionProblem::EmptyEnum);
    assert_eq!(chain.to_string(), "bad/broken-child → bad/broken-parent");
}

#[test]
fn a_chain_deeper_than_the_limit_is_refused() {
    let mut source = BTreeMap::new();
    for i in 0..=MAX_EXTENDS_DEPTH {
        source.insert(
            key("deep", &format!("m{i}")),
            DeviceModelSpec {
                version: "1.0.0".into(),
                extends: vec![ModelReference {
                    name: format!("m{}", i + 1),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }
    let err = resolve(&source, &key("deep", "m0")).expect_err("too deep");
    let ResolveError::TooDeep { max, chain } = err else {
        panic!("expected TooDeep")
    };
    assert_eq!(max, MAX_EXTENDS_DEPTH);
    assert_eq!(chain.0.len(), MAX_EXTENDS_DEPTH + 1);
}

#[test]
fn bad_version_and_requirement_syntax_are_definition_errors() {
    let problems = definition_problems(
        "apiVersion: iot.devplane.io/v1alpha1\nkind: DeviceModel\nmetadata: {name: m, namespace: n}\n\
         spec: {version: '1.0', extends: [{name: x, version: 'not a req'}]}\n",
    );
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].path, "spec.version");
    assert!(matches!(
        problems[0].problem,
        DefinitionProblem::BadVersion(_)
    ));
    assert_eq!(problems[1].path, "spec.extends[0].version");
    assert!(matches!(
        problems[1].problem,
        DefinitionProblem::BadRequirement { .. }
    ));
}

#[test]
fn every_data_type_problem_is_found_with_its_path() {
    let problems = definition_problems(
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: m, namespace: n}
spec:
  version: 1.0.0
  attributes:
    - {identifier: a0, dataType: {type: int, min: 10, max: 1}}
    - {identifier: a1, dataType: {type: string, unit: W, min: 1}}
    - {identifier: a2, dataType: {type: enum, enumValues: [{value: x}, {value: x}]}}
    - {identifier: a3, dataType: {type: struct}}
    - {identifier: a4, dataType: {type: array}}
    - identifier: a5
      dataType: {type: array, items: {type: array}}
    - identifier: a6
      dataType: {type: struct, fields: [{identifier: f, dataType: {type: struct}}, {identifier: f, dataType: {type: int}}]}
    - {identifier: a7, dataType: {type: int, maxLength: 3, enumValues: [{value: y}], maxItems: 2}}
    - {identifier: a8, dataType: {type: int, max: 5}, default: 9}
  services:
    - identifier: s
      inputs: [{identifier: p, dataType: {type: bool}}, {identifier: p, dataType: {type: bool}}]
"#,
    );
    let found: Vec<(String, String)> = problems
        .iter()
        .map(|e| {
            (
                e.path.clone(),
                format!("{:?}", e.problem)
                    .split(['(', ' '])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let expected = [
        ("spec.attributes[0].dataType", "MinAboveMax"),
        ("spec.attributes[1].dataType.min", "ConstraintNotApplicable"),
        (
            "spec.attributes[1].dataType.unit",
            "ConstraintNotApplicable",
        ),
        (
            "spec.attributes[2].dataType.enumValues[1]",
            "DuplicateEnumValue",
        ),
        ("spec.attributes[3].dataType.fields", "EmptyStruct"),
        ("spec.attributes[4].dataType.items", "ArrayWithoutItems"),
        ("spec.attributes[5].dataType.items", "NestingNotAllowed"),
        (
            "spec.attributes[6].dataType.fields[0].dataType",
            "NestingNotAllowed",
        ),
        (
            "spec.attributes[6].dataType.fields[1].identifier",
            "DuplicateIdentifier",
        ),
        (
            "spec.attributes[7].dataType.maxLength",
            "ConstraintNotApplicable",
        ),
        (
            "spec.attributes[7].dataType.enumValues",
            "ConstraintNotApplicable",
        ),
        (
            "spec.attributes[7].dataType.maxItems",
            "ConstraintNotApplicable",
        ),
        ("spec.attributes[8].default", "BadDefault"),
        (
            "spec.services[0].inputs[1].identifier",
            "DuplicateIdentifier",
        ),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn definition_errors_read_as_path_and_problem() {
    let err = DefinitionError {
        path: "spec.measurePoints[3].dataType".into(),
        problem: DefinitionProblem::ConstraintNotApplicable {
            constraint: "min",
            kind: DataKind::Bool,
        },
    };
    assert_eq!(
        err.to_string(),
        "spec.measurePoints[3].dataType: min does not apply to type bool"
    );
}
