//! Model resolution: a DeviceModel and everything it `extends`, flattened into one set of
//! features, with cycles, missing models, version mismatches, bad definitions and conflicting
//! identifiers reported with the extends chain that causes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use devplane_api::v1alpha1::{
    Attribute, DataKind, DeviceModelSpec, Event, MeasurePoint, ModelReference, Parameter, Service,
};

use crate::value::{self, TypeView};

/// Most models one extends chain may hold (the root included).
pub const MAX_EXTENDS_DEPTH: usize = 8;

/// A model's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    /// Namespace of the model.
    pub namespace: String,
    /// Name of the model.
    pub name: String,
}

impl ModelKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ModelKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key a reference points at, given the namespace of the referring object.
    pub fn from_ref(reference: &ModelReference, referrer_namespace: &str) -> Self {
        ModelKey::new(
            reference.namespace_or(referrer_namespace),
            reference.name.clone(),
        )
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where models come from during resolution.
pub trait ModelSource {
    /// The spec of the model with this key, if it exists.
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec>;
}

impl ModelSource for BTreeMap<ModelKey, DeviceModelSpec> {
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec> {
        self.get(key)
    }
}

impl ModelSource for HashMap<ModelKey, DeviceModelSpec> {
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec> {
        self.get(key)
    }
}

/// An extends chain, from the model being resolved to the model in question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain(pub Vec<ModelKey>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" → ")?;
            }
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

/// The four kinds of model features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureKind {
    /// An attribute.
    Attribute,
    /// A measure point.
    MeasurePoint,
    /// A service.
    Service,
    /// An event.
    Event,
}

impl FeatureKind {
    /// The field of `DeviceModelSpec` that lists features of this kind.
    pub fn spec_field(self) -> &'static str {
        match self {
            FeatureKind::Attribute => "attributes",
            FeatureKind::MeasurePoint => "measurePoints",
            FeatureKind::Service => "services",
            FeatureKind::Event => "events",
        }
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureKind::Attribute => "attribute",
            FeatureKind::MeasurePoint => "measure point",
            FeatureKind::Service => "service",
            FeatureKind::Event => "event",
        })
    }
}

/// Where a feature is defined: the model, the field path inside it, and the extends chain
/// from the resolved model to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The model that defines the feature.
    pub model: ModelKey,
    /// Path inside that model, for example `spec.measurePoints[2]`.
    pub path: String,
    /// Chain from the resolved model to `model`.
    pub chain: Chain,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.model, self.path)?;
        if self.chain.0.len() > 1 {
            write!(f, " (via {})", self.chain)?;
        }
        Ok(())
    }
}

/// A feature of a resolved model with its origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature<T> {
    /// The definition.
    pub definition: T,
    /// Where it is defined.
    pub origin: Origin,
}

/// A model with every feature of every model it extends, keyed by identifier.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedModel {
    /// The resolved model.
    pub key: ModelKey,
    /// Its version.
    pub version: semver::Version,
    /// Every model included, the resolved one first, depth-first in `extends` order.
    pub lineage: Vec<(ModelKey, semver::Version)>,
    /// Attributes by identifier.
    pub attributes: BTreeMap<String, Feature<Attribute>>,
    /// Measure points by identifier.
    pub measure_points: BTreeMap<String, Feature<MeasurePoint>>,
    /// Services by identifier.
    pub services: BTreeMap<String, Feature<Service>>,
    /// Events by identifier.
    pub events: BTreeMap<String, Feature<Event>>,
}

impl ResolvedModel {
    /// The lineage as `namespace/name@version`, without the resolved model itself.
    pub fn ancestors(&self) -> Vec<String> {
        self.lineage
            .iter()
            .skip(1)
            .map(|(key, version)| format!("{key}@{version}"))
            .collect()
    }
}

/// What is wrong with one model's own definition.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DefinitionError {
    /// Field path inside the model, for example `spec.measurePoints[0].dataType`.
    pub path: String,
    /// The problem.
    pub problem: DefinitionProblem,
}

/// The kinds of definition problems.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DefinitionProblem {
    /// `spec.version` is not a semantic version.
    #[error("{0:?} is not a semantic version (MAJOR.MINOR.PATCH)")]
    BadVersion(String),
    /// An enum without values, or with a value twice.
    #[error("enum needs at least one value in enumValues")]
    EmptyEnum,
    /// An enum value listed twice.
    #[error("enum value {0:?} is listed twice")]
    DuplicateEnumValue(String),
    /// `min` greater than `max`.
    #[error("min {min} is greater than max {max}")]
    MinAboveMax {
        /// The minimum.
        min: f64,
        /// The maximum.
        max: f64,
    },
    /// A constraint that does not apply to the kind (e.g. `min` on a string).
    #[error("{constraint} does not apply to type {kind}")]
    ConstraintNotApplicable {
        /// The constraint's field name.
        constraint: &'static str,
        /// The kind it was put on.
        kind: DataKind,
    },
    /// A struct without fields.
    #[error("struct needs at least one field")]
    EmptyStruct,
    /// An array without an element type.
    #[error("array needs items (the element type)")]
    ArrayWithoutItems,
    /// A kind not allowed at this depth (struct in struct, array in array).
    #[error("type {kind} is not allowed here: {why}")]
    NestingNotAllowed {
        /// The kind found.
        kind: DataKind,
        /// The rule broken.
        why: &'static str,
    },
    /// An identifier listed twice among parameters or struct fields.
    #[error("identifier {0:?} is listed twice")]
    DuplicateIdentifier(String),
    /// An attribute default that does not satisfy its type.
    #[error("default does not satisfy the data type: {0}")]
    BadDefault(value::ValueError),
    /// A version requirement in `extends` that does not parse.
    #[error("version requirement {requirement:?} is not valid: {reason}")]
    BadRequirement {
        /// The requirement.
        requirement: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// Why a model could not be resolved.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// A model in the chain does not exist.
    #[error("model {missing} does not exist (extends chain: {chain})")]
    Missing {
        /// The missing model.
        missing: ModelKey,
        /// The chain that refers to it, ending with it.
        chain: Chain,
    },
    /// The chain comes back to a model already in it.
    #[error("extends cycle: {chain}")]
    Cycle {
        /// The chain, starting and ending with the repeated model.
        chain: Chain,
    },
    /// The chain is longer than [`MAX_EXTENDS_DEPTH`].
    #[error("extends chain holds more than {max} models: {chain}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// The chain.
        chain: Chain,
    },
    /// An extended model's version does not satisfy the requirement on it.
    #[error(
        "{model} has version {version}, which does not satisfy {requirement:?} (extends chain: {chain})"
    )]
    VersionMismatch {
        /// The extended model.
        model: ModelKey,
        /// Its version.
        version: String,
        /// The requirement.
        requirement: String,
        /// The chain ending with the model.
        chain: Chain,
    },
    /// A model in the chain has a bad definition.
    #[error("{model} {source}")]
    Definition {
        /// The model.
        model: ModelKey,
        /// The first problem found.
        source: Box<DefinitionError>,
        /// The chain ending with the model.
        chain: Chain,
    },
    /// Two definitions of one identifier.
    #[error(
        "identifier {identifier:?} is defined twice: as {first_kind} at {first} and as {second_kind} at {second}"
    )]
    Conflict {
        /// The identifier.
        identifier: String,
        /// Kind of the first definition.
        first_kind: FeatureKind,
        /// The first definition.
        first: Box<Origin>,
        /// Kind of the second definition.
        second_kind: FeatureKind,
        /// The second definition.
        second: Box<Origin>,
    },
}

impl ResolveError {
    /// A stable CamelCase reason, for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Missing { .. } => "ModelNotFound",
            ResolveError::Cycle { .. } => "ExtendsCycle",
            ResolveError::TooDeep { .. } => "ExtendsTooDeep",
            ResolveError::VersionMismatch { .. } => "VersionMismatch",
            ResolveError::Definition { .. } => "InvalidDefinition",
            ResolveError::Conflict { .. } => "IdentifierConflict",
        }
    }
}

/// Resolve the model `root` against `source`.
pub fn resolve(source: &impl ModelSource, root: &ModelKey) -> Result<ResolvedModel, ResolveError> {
    let mut resolver = Resolver {
        source,
        visited: HashSet::new(),
        lineage: Vec::new(),
        identifiers: HashMap::new(),
        attributes: BTreeMap::new(),
        measure_points: BTreeMap::new(),
        services: BTreeMap::new(),
        events: BTreeMap::new(),
    };
    let mut chain = vec![root.clone()];
    resolver.visit(&mut chain, None)?;
    let version = resolver.lineage[0].1.clone();
    Ok(ResolvedModel {
        key: root.clone(),
        version,
        lineage: resolver.lineage,
        attributes: resolver.attributes,
        measure_points: resolver.measure_points,
        services: resolver.services,
        events: resolver.events,
    })
}

struct Resolver<'s, S> {
    source: &'s S,
    visited: HashSet<ModelKey>,
    lineage: Vec<(ModelKey, semver::Version)>,
    identifiers: HashMap<String, (FeatureKind, Origin)>,
    attributes: BTreeMap<String, Feature<Attribute>>,
    measure_points: BTreeMap<String, Feature<MeasurePoint>>,
    services: BTreeMap<String, Feature<Service>>,
    events: BTreeMap<String, Feature<Event>>,
}

impl<S: ModelSource> Resolver<'_, S> {
    /// Visit the last model of `chain`, which `requirement` (from the referring `extends`
    /// entry) constrains.
    fn visit(
        &mut self,
        chain: &mut Vec<ModelKey>,
        requirement: Option<&semver::VersionReq>,
    ) -> Result<(), ResolveError> {
        let key = chain.last().cloned().expect("chain is never empty");
        if chain[..chain.len() - 1].contains(&key) {
            let start = chain.iter().position(|k| *k == key).unwrap_or(0);
            return Err(ResolveError::Cycle {
                chain: Chain(chain[start..].to_vec()),
            });
        }
        if chain.len() > MAX_EXTENDS_DEPTH {
            return Err(ResolveError::TooDeep {
                max: MAX_EXTENDS_DEPTH,
                chain: Chain(chain.clone()),
            });
        }
        let spec = self
            .source
            .model(&key)
            .ok_or_else(|| ResolveError::Missing {
                missing: key.clone(),
                chain: Chain(chain.clone()),
            })?;
        let definition_error = |source: DefinitionError| ResolveError::Definition {
            model: key.clone(),
            source: Box::new(source),
            chain: Chain(chain.clone()),
        };
        if let Some(first) = check_definition(spec).into_iter().next() {
            return Err(definition_error(first));
        }
        let version = semver::Version::parse(&spec.version).map_err(|_| {
            definition_error(DefinitionError {
                path: "spec.version".into(),
                problem: DefinitionProblem::BadVersion(spec.version.clone()),
            })
        })?;
        if let Some(requirement) = requirement.filter(|r| !r.matches(&version)) {
            return Err(ResolveError::VersionMismatch {
                model: key.clone(),
                version: spec.version.clone(),
                requirement: requirement.to_string(),
                chain: Chain(chain.clone()),
            });
        }
        if !self.visited.insert(key.clone()) {
            // Reached again through another path (a diamond): its features are in already.
            return Ok(());
        }
        self.lineage.push((key.clone(), version));

        let origin = |field: &str, i: usize| Origin {
            model: key.clone(),
            path: format!("spec.{field}[{i}]"),
            chain: Chain(chain.clone()),
        };
        for (i, a) in spec.attributes.iter().enumerate() {
            self.claim(
                &a.identifier,
                FeatureKind::Attribute,
                origin("attributes", i),
            )?;
            self.attributes.insert(
                a.identifier.clone(),
                Feature {
                    definition: a.clone(),
                    origin: origin("attributes", i),
                },
            );
        }
        for (i, m) in spec.measure_points.iter().enumerate() {
            self.claim(
                &m.identifier,
                FeatureKind::MeasurePoint,
                origin("measurePoints", i),
            )?;
            self.measure_points.insert(
                m.identifier.clone(),
                Feature {
                    definition: m.clone(),
                    origin: origin("measurePoints", i),
                },
            );
        }
        for (i, s) in spec.services.iter().enumerate() {
            self.claim(&s.identifier, FeatureKind::Service, origin("services", i))?;
            self.services.insert(
                s.identifier.clone(),
                Feature {
                    definition: s.clone(),
                    origin: origin("services", i),
                },
            );
        }
        for (i, e) in spec.events.iter().enumerate() {
            self.claim(&e.identifier, FeatureKind::Event, origin("events", i))?;
            self.events.insert(
                e.identifier.clone(),
                Feature {
                    definition: e.clone(),
                    origin: origin("events", i),
                },
            );
        }

        for reference in &spec.extends {
            // check_definition has already parsed every requirement.
            let requirement = reference
                .version
                .as_deref()
                .and_then(|r| semver::VersionReq::parse(r).ok());
            chain.push(ModelKey::from_ref(reference, &key.namespace));
            let result = self.visit(chain, requirement.as_ref());
            chain.pop();
            result?;
        }
        Ok(())
    }

    fn claim(
        &mut self,
        identifier: &str,
        kind: FeatureKind,
        origin: Origin,
    ) -> Result<(), ResolveError> {
        if let Some((first_kind, first)) = self.identifiers.get(identifier) {
            return Err(ResolveError::Conflict {
                identifier: identifier.to_string(),
                first_kind: *first_kind,
                first: Box::new(first.clone()),
                second_kind: kind,
                second: Box::new(origin),
            });
        }
        self.identifiers
            .insert(identifier.to_string(), (kind, origin));
        Ok(())
    }
}

/// Every problem with one model's own definition (not its extends chain): data types,
/// defaults, duplicate parameters and fields, version and requirement syntax.
pub fn check_definition(spec: &DeviceModelSpec) -> Vec<DefinitionError> {
    let mut errors = Vec::new();
    let mut push =
        |path: String, problem: DefinitionProblem| errors.push(DefinitionError { path, problem });
    if semver::Version::parse(&spec.version).is_err() {
        push(
            "spec.version".into(),
            DefinitionProblem::BadVersion(spec.version.clone()),
        );
    }
    for (i, reference) in spec.extends.iter().enumerate() {
        if let Some(requirement) = &reference.version
            && let Err(e) = semver::VersionReq::parse(requirement)
        {
            push(
                format!("spec.extends[{i}].version"),
                DefinitionProblem::BadRequirement {
                    requirement: requirement.clone(),
                    reason: e.to_string(),
                },
            );
        }
    }
    for (i, a) in spec.attributes.iter().enumerate() {
        let path = format!("spec.attributes[{i}]");
        check_type(
            (&a.data_type).into(),
            &format!("{path}.dataType"),
            Depth::Top,
            &mut push,
        );
        if let Some(default) = &a.default
            && let Err(e) = value::validate((&a.data_type).into(), default)
        {
            push(format!("{path}.default"), DefinitionProblem::BadDefault(e));
        }
    }
    for (i, m) in spec.measure_points.iter().enumerate() {
        check_type(
            (&m.data_type).into(),
            &format!("spec.measurePoints[{i}].dataType"),
            Depth::Top,
            &mut push,
        );
    }
    for (i, s) in spec.services.iter().enumerate() {
        check_parameters(&s.inputs, &format!("spec.services[{i}].inputs"), &mut push);
        check_parameters(
            &s.outputs,
            &format!("spec.services[{i}].outputs"),
            &mut push,
        );
    }
    for (i, e) in spec.events.iter().enumerate() {
        check_parameters(&e.outputs, &format!("spec.events[{i}].outputs"), &mut push);
    }
    errors
}

fn check_parameters(
    params: &[Parameter],
    path: &str,
    push: &mut impl FnMut(String, DefinitionProblem),
) {
    let mut seen = HashSet::new();
    for (i, p) in params.iter().enumerate() {
        if !seen.insert(p.identifier.as_str()) {
            push(
                format!("{path}[{i}].identifier"),
                DefinitionProblem::DuplicateIdentifier(p.identifier.clone()),
            );
        }
        check_type(
            (&p.data_type).into(),
            &format!("{path}[{i}].dataType"),
            Depth::Top,
            push,
        );
    }
}

/// How deep a type sits: structs hold scalars, arrays hold scalars or structs.
#[derive(Clone, Copy, PartialEq)]
enum Depth {
    Top,
    ArrayElement,
    StructField,
}

fn check_type(
    ty: TypeView<'_>,
    path: &str,
    depth: Depth,
    push: &mut impl FnMut(String, DefinitionProblem),
) {
    use DefinitionProblem as P;
    let not_applicable = |constraint| P::ConstraintNotApplicable {
        constraint,
        kind: ty.kind,
    };
    match (ty.kind, depth) {
        (DataKind::Array, Depth::ArrayElement) => {
            push(
                path.into(),
                P::NestingNotAllowed {
                    kind: ty.kind,
                    why: "arrays hold scalars or structs",
                },
            );
            return;
        }
        (DataKind::Struct | DataKind::Array, Depth::StructField) => {
            push(
                path.into(),
                P::NestingNotAllowed {
                    kind: ty.kind,
                    why: "struct fields are scalars",
                },
            );
            return;
        }
        _ => {}
    }
    if !ty.kind.is_numeric() {
        if ty.min.is_some() {
            push(format!("{path}.min"), not_applicable("min"));
        }
        if ty.max.is_some() {
            push(format!("{path}.max"), not_applicable("max"));
        }
        if ty.unit.is_some() {
            push(format!("{path}.unit"), not_applicable("unit"));
        }
    }
    if let (Some(min), Some(max)) = (ty.min, ty.max)
        && min > max
    {
        push(path.into(), P::MinAboveMax { min, max });
    }
    if ty.max_length.is_some() && ty.kind != DataKind::String {
        push(format!("{path}.maxLength"), not_applicable("maxLength"));
    }
    if ty.kind == DataKind::Enum {
        if ty.enum_values.is_empty() {
            push(format!("{path}.enumValues"), P::EmptyEnum);
        }
        let mut seen = HashSet::new();
        for (i, v) in ty.enum_values.iter().enumerate() {
            if !seen.insert(v.value.as_str()) {
                push(
                    format!("{path}.enumValues[{i}]"),
                    P::DuplicateEnumValue(v.value.clone()),
                );
            }
        }
    } else if !ty.enum_values.is_empty() {
        push(format!("{path}.enumValues"), not_applicable("enumValues"));
    }
    if ty.kind == DataKind::Struct {
        if ty.fields.is_empty() {
            push(format!("{path}.fields"), P::EmptyStruct);
        }
        let mut seen = HashSet::new();
        for (i, f) in ty.fields.iter().enumerate() {
            if !seen.insert(f.identifier.as_str()) {
                push(
                    format!("{path}.fields[{i}].identifier"),
                    P::DuplicateIdentifier(f.identifier.clone()),
                );
            }
            check_type(
                (&f.data_type).into(),
                &format!("{path}.fields[{i}].dataType"),
                Depth::StructField,
                push,
            );
        }
    } else if !ty.fields.is_empty() {
        push(format!("{path}.fields"), not_applicable("fields"));
    }
    if ty.kind == DataKind::Array {
        match ty.items {
            Some(items) => check_type(
                items.into(),
                &format!("{path}.items"),
                Depth::ArrayElement,
                push,
            ),
            None => push(format!("{path}.items"), P::ArrayWithoutItems),
        }
    } else {
        if ty.items.is_some() {
            push(format!("{path}.items"), not_applicable("items"));
        }
        if ty.max_items.is_some() {
            push(format!("{path}.maxItems"), not_applicable("maxItems"));
        }
    }
}

#[cfg(test)]
mod tests;
