//! Structural OpenAPI v3 schemas as the Kubernetes API server applies them to custom
//! resources: parsing (with the structural rules checked), validation of values, pruning of
//! unknown fields, defaulting, and `x-kubernetes-validations` CEL rules (through kube-cel),
//! transition rules included.
//!
//! Pure: no IO. Used by the embedded API server and by `devplane validate`.

mod apply;
mod error;
mod validate;

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

pub use error::{ErrorType, FieldError};

/// A JSON type a schema node may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// `object`
    Object,
    /// `array`
    Array,
    /// `string`
    String,
    /// `integer`
    Integer,
    /// `number`
    Number,
    /// `boolean`
    Boolean,
}

impl Type {
    fn parse(s: &str) -> Option<Type> {
        Some(match s {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            _ => return None,
        })
    }

    /// The name used in schemas.
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }
}

/// `x-kubernetes-list-type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole (the default).
    #[default]
    Atomic,
    /// Unique scalar items.
    Set,
    /// Items unique by `x-kubernetes-list-map-keys`.
    Map,
}

/// One node of a structural schema, parsed once for fast repeated use.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    /// Declared type.
    pub ty: Option<Type>,
    /// `format`.
    pub format: Option<String>,
    /// `nullable`.
    pub nullable: bool,
    /// `enum`.
    pub enum_values: Option<Vec<Value>>,
    /// `minimum`.
    pub minimum: Option<f64>,
    /// `maximum`.
    pub maximum: Option<f64>,
    /// `exclusiveMinimum`.
    pub exclusive_minimum: bool,
    /// `exclusiveMaximum`.
    pub exclusive_maximum: bool,
    /// `multipleOf`.
    pub multiple_of: Option<f64>,
    /// `minLength`.
    pub min_length: Option<usize>,
    /// `maxLength`.
    pub max_length: Option<usize>,
    /// `pattern`, compiled.
    pub pattern: Option<(String, Regex)>,
    /// `minItems`.
    pub min_items: Option<usize>,
    /// `maxItems`.
    pub max_items: Option<usize>,
    /// `uniqueItems`.
    pub unique_items: bool,
    /// `minProperties`.
    pub min_properties: Option<usize>,
    /// `maxProperties`.
    pub max_properties: Option<usize>,
    /// `required`.
    pub required: Vec<String>,
    /// `properties`.
    pub properties: BTreeMap<String, Schema>,
    /// `additionalProperties` when it is a schema.
    pub additional_properties: Option<Box<Schema>>,
    /// `items`.
    pub items: Option<Box<Schema>>,
    /// `x-kubernetes-preserve-unknown-fields`.
    pub preserve_unknown_fields: bool,
    /// `x-kubernetes-int-or-string`.
    pub int_or_string: bool,
    /// `x-kubernetes-embedded-resource`.
    pub embedded_resource: bool,
    /// `x-kubernetes-list-type`.
    pub list_type: ListType,
    /// `x-kubernetes-list-map-keys`.
    pub list_map_keys: Vec<String>,
    /// `x-kubernetes-map-type: atomic`.
    pub map_atomic: bool,
    /// `default`.
    pub default: Option<Value>,
    /// Whether this node or a node below it has `x-kubernetes-validations`.
    pub has_rules: bool,
}

/// Why a schema is not a structural schema devplane can apply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct StructuralError {
    /// Path of the schema node, e.g. `openAPIV3Schema.properties[spec].type`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl Schema {
    /// Parse a JSONSchemaProps value, checking the structural-schema rules that matter for
    /// applying it: every node typed (or preserving unknown fields, or int-or-string), no
    /// `$ref`, no `additionalProperties` beside `properties`, valid patterns and list types.
    pub fn parse(value: &Value) -> Result<Schema, Vec<StructuralError>> {
        let mut errors = Vec::new();
        let schema = parse_node(value, "openAPIV3Schema", true, &mut errors);
        if errors.is_empty() {
            Ok(schema)
        } else {
            Err(errors)
        }
    }
}

fn problem(errors: &mut Vec<StructuralError>, path: &str, problem: String) {
    errors.push(StructuralError {
        path: path.to_string(),
        problem,
    });
}

fn parse_node(value: &Value, path: &str, root: bool, errors: &mut Vec<StructuralError>) -> Schema {
    let Some(obj) = value.as_object() else {
        problem(errors, path, "schema must be an object".into());
        return Schema::default();
    };
    let mut s = Schema::default();
    let flag = |key: &str| obj.get(key).and_then(Value::as_bool).unwrap_or(false);
    let number = |key: &str| obj.get(key).and_then(Value::as_f64);
    let count = |key: &str| obj.get(key).and_then(Value::as_u64).map(|n| n as usize);
    if let Some(t) = obj.get("type").and_then(Value::as_str) {
        match Type::parse(t) {
            Some(t) => s.ty = Some(t),
            None => problem(
                errors,
                &format!("{path}.type"),
                format!("unsupported type {t:?}"),
            ),
        }
    }
    s.preserve_unknown_fields = flag("x-kubernetes-preserve-unknown-fields");
    s.int_or_string = flag("x-kubernetes-int-or-string");
    s.embedded_resource = flag("x-kubernetes-embedded-resource");
    if s.ty.is_none() && !s.preserve_unknown_fields && !s.int_or_string {
        problem(
            errors,
            &format!("{path}.type"),
            "must not be empty for specified fields".into(),
        );
    }
    if root && s.ty != Some(Type::Object) {
        problem(
            errors,
            &format!("{path}.type"),
            "must be object at the root".into(),
        );
    }
    for forbidden in ["$ref", "allOf", "anyOf", "oneOf", "not"] {
        if obj.contains_key(forbidden) {
            problem(
                errors,
                &format!("{path}.{forbidden}"),
                "not supported in devplane's structural schemas".into(),
            );
        }
    }
    s.format = obj
        .get("format")
        .and_then(Value::as_str)
        .map(str::to_string);
    s.nullable = flag("nullable");
    s.enum_values = obj.get("enum").and_then(Value::as_array).cloned();
    s.minimum = number("minimum");
    s.maximum = number("maximum");
    s.exclusive_minimum = flag("exclusiveMinimum");
    s.exclusive_maximum = flag("exclusiveMaximum");
    s.multiple_of = number("multipleOf").filter(|m| *m > 0.0);
    s.min_length = count("minLength");
    s.max_length = count("maxLength");
    s.min_items = count("minItems");
    s.max_items = count("maxItems");
    s.unique_items = flag("uniqueItems");
    s.min_properties = count("minProperties");
    s.max_properties = count("maxProperties");
    s.default = obj.get("default").cloned();
    s.has_rules = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if let Some(pattern) = obj.get("pattern").and_then(Value::as_str) {
        match Regex::new(pattern) {
            Ok(re) => s.pattern = Some((pattern.to_string(), re)),
            Err(e) => problem(
                errors,
                &format!("{path}.pattern"),
                format!("invalid regular expression: {e}"),
            ),
        }
    }
    s.required = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child = parse_node(child, &format!("{path}.properties[{name}]"), false, errors);
            s.has_rules |= child.has_rules;
            s.properties.insert(name.clone(), child);
        }
    }
    match obj.get("additionalProperties") {
        Some(Value::Object(_)) if obj.contains_key("properties") => {
            problem(
                errors,
                &format!("{path}.additionalProperties"),
                "must not be used together with properties".into(),
            );
        }
        Some(child @ Value::Object(_)) => {
            let child = parse_node(
                child,
                &format!("{path}.additionalProperties"),
                false,
                errors,
            );
            s.has_rules |= child.has_rules;
            s.additional_properties = Some(Box::new(child));
        }
        _ => {}
    }
    match obj.get("items") {
        Some(child) => {
            let child = parse_node(child, &format!("{path}.items"), false, errors);
            s.has_rules |= child.has_rules;
            s.items = Some(Box::new(child));
        }
        None if s.ty == Some(Type::Array) => problem(
            errors,
            &format!("{path}.items"),
            "must be specified for arrays".into(),
        ),
        None => {}
    }
    s.list_type = match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
        None | Some("atomic") => ListType::Atomic,
        Some("set") => ListType::Set,
        Some("map") => ListType::Map,
        Some(other) => {
            problem(
                errors,
                &format!("{path}.x-kubernetes-list-type"),
                format!("unsupported list type {other:?}"),
            );
            ListType::Atomic
        }
    };
    s.list_map_keys = obj
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| {
            k.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if s.list_type == ListType::Map && s.list_map_keys.is_empty() {
        problem(
            errors,
            &format!("{path}.x-kubernetes-list-map-keys"),
            "must be set for list type map".into(),
        );
    }
    s.map_atomic = obj.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
    s
}

/// A CRD version's schema, ready to validate, prune and default objects, with its CEL rules
/// compiled once.
pub struct CompiledSchema {
    /// The parsed schema.
    pub schema: Schema,
    /// The schema as given (for OpenAPI documents).
    pub source: Value,
    cel: Option<kube_cel::CompiledSchema>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Parse and compile an `openAPIV3Schema`. CEL rules that do not compile are structural
    /// errors too.
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, Vec<StructuralError>> {
        let schema = Schema::parse(open_api_v3_schema)?;
        let cel = if schema.has_rules {
            let compiled = kube_cel::compile_schema(open_api_v3_schema);
            let errors: Vec<StructuralError> = compiled
                .compilation_errors()
                .into_iter()
                .map(|e| StructuralError {
                    path: "x-kubernetes-validations".into(),
                    problem: e.to_string(),
                })
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            let mut compiled = compiled;
            rules::prune(&mut compiled);
            Some(compiled)
        } else {
            None
        };
        Ok(CompiledSchema {
            schema,
            source: open_api_v3_schema.clone(),
            cel,
        })
    }

    /// Everything the API server does to an incoming object before storing it, in its order:
    /// drop nulls of non-nullable fields, prune unknown fields (returned as paths), apply
    /// defaults, validate against the schema, then — if that passed — run the CEL rules,
    /// transition rules against `old` when given.
    pub fn admit(&self, object: &mut Value, old: Option<&Value>) -> Admission {
        let unknown_fields = self.prune(object);
        self.default(object);
        let mut errors = self.validate(object);
        if errors.is_empty() {
            errors = self.validate_rules(object, old);
        }
        Admission {
            unknown_fields,
            errors,
        }
    }

    /// Drop nulls of non-nullable fields and unknown fields; returns the unknown fields'
    /// paths. `apiVersion`, `kind` and `metadata` at the root are kept.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        apply::prune(&self.schema, object, &mut String::new(), true, &mut unknown);
        unknown
    }

    /// Fill absent fields that have defaults, where their parent exists.
    pub fn default(&self, object: &mut Value) {
        apply::default(&self.schema, object);
    }

    /// Check an object against the schema (not the CEL rules).
    pub fn validate(&self, object: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        validate::node(&self.schema, object, &mut String::new(), true, &mut errors);
        errors
    }

    /// Run the `x-kubernetes-validations` rules; transition rules run when `old` is given.
    pub fn validate_rules(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let Some(cel) = &self.cel else {
            return Vec::new();
        };
        let validator = validator();
        match rules::validate(&validator, cel, object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| {
                    let kind = match e.reason.as_deref() {
                        Some("FieldValueForbidden") => ErrorType::Forbidden,
                        Some("FieldValueRequired") => ErrorType::Required,
                        Some("FieldValueDuplicate") => ErrorType::Duplicate,
                        _ => ErrorType::Invalid,
                    };
                    let value = lookup(object, &e.field_path);
                    FieldError::new(
                        e.field_path.clone(),
                        kind,
                        value.filter(|v| !v.is_object() && !v.is_array()),
                        e.message.clone(),
                    )
                })
                .collect(),
        }
    }
}

/// What [`CompiledSchema::admit`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Admission {
    /// Paths of fields the schema does not know (already pruned from the object).
    pub unknown_fields: Vec<String>,
    /// Schema and CEL errors.
    pub errors: Vec<FieldError>,
}

mod rules;

thread_local! {
    static VALIDATOR: std::rc::Rc<kube_cel::Validator> = std::rc::Rc::new(kube_cel::Validator::new());
}

/// A CEL validator for this thread (building one registers every Kubernetes CEL function).
fn validator() -> std::rc::Rc<kube_cel::Validator> {
    VALIDATOR.with(std::rc::Rc::clone)
}

/// The value at a dotted field path like `spec.items[2].name`, if present.
fn lookup<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = object;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            current = match index.parse::<usize>() {
                Ok(i) => current.get(i)?,
                Err(_) => current.get(index)?,
            };
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests;
