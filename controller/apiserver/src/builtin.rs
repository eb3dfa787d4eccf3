//! Built-in kinds (Namespaces, ConfigMaps, Secrets, Events in two views, Leases, CRDs, RBAC's
//! Roles and bindings, ServiceAccounts, and the access reviews), their
//! schemas (derived from the upstream types in k8s-openapi) and their special rules; and the
//! resources a CRD defines.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use devplane_schema::{CompiledSchema, ErrorType, FieldError, Schema};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Secret, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

use crate::jsonpath::JsonPath;
use crate::registry::{Resource, openapi_name};
use crate::table;

/// Built-in kinds with behaviour of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Secret.
    Secret,
    /// core/v1 Event (the stored form).
    Event,
    /// events.k8s.io/v1 Event (a view of the same objects).
    EventsV1,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition.
    Crd,
    /// rbac.authorization.k8s.io/v1 Role.
    Role,
    /// rbac.authorization.k8s.io/v1 ClusterRole.
    ClusterRole,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
    /// rbac.authorization.k8s.io/v1 ClusterRoleBinding.
    ClusterRoleBinding,
    /// core/v1 ServiceAccount (with the `token` subresource).
    ServiceAccount,
    /// authorization.k8s.io/v1 SelfSubjectAccessReview (create only, never stored).
    SelfSubjectAccessReview,
    /// authorization.k8s.io/v1 SelfSubjectRulesReview (create only, never stored).
    SelfSubjectRulesReview,
    /// authentication.k8s.io/v1 SelfSubjectReview (`kubectl auth whoami`; create only).
    SelfSubjectReview,
    /// admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration.
    ValidatingWebhookConfiguration,
    /// admissionregistration.k8s.io/v1 MutatingWebhookConfiguration.
    MutatingWebhookConfiguration,
}

impl Builtin {
    /// Whether objects of this kind are answered, not stored.
    pub fn is_review(self) -> bool {
        matches!(
            self,
            Builtin::SelfSubjectAccessReview
                | Builtin::SelfSubjectRulesReview
                | Builtin::SelfSubjectReview
        )
    }

    /// Whether this kind configures admission webhooks.
    pub fn is_webhook_configuration(self) -> bool {
        matches!(
            self,
            Builtin::ValidatingWebhookConfiguration | Builtin::MutatingWebhookConfiguration
        )
    }

    /// Whether a write to this kind changes who may do what.
    pub fn is_rbac(self) -> bool {
        matches!(
            self,
            Builtin::Role
                | Builtin::ClusterRole
                | Builtin::RoleBinding
                | Builtin::ClusterRoleBinding
        )
    }
}

const JSON_SCHEMA_PROPS: &str =
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";

/// OpenAPI component schemas of every built-in kind and what they refer to, by name.
pub fn definitions() -> &'static BTreeMap<String, Value> {
    static DEFS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<Namespace>();
        generator.subschema_for::<ConfigMap>();
        generator.subschema_for::<Secret>();
        generator.subschema_for::<CoreEvent>();
        generator.subschema_for::<EventsV1Event>();
        generator.subschema_for::<Lease>();
        generator.subschema_for::<CustomResourceDefinition>();
        generator.subschema_for::<Role>();
        generator.subschema_for::<ClusterRole>();
        generator.subschema_for::<RoleBinding>();
        generator.subschema_for::<ClusterRoleBinding>();
        generator.subschema_for::<ServiceAccount>();
        generator.subschema_for::<SelfSubjectAccessReview>();
        generator.subschema_for::<SelfSubjectRulesReview>();
        generator.subschema_for::<SelfSubjectReview>();
        generator.subschema_for::<ValidatingWebhookConfiguration>();
        generator.subschema_for::<MutatingWebhookConfiguration>();
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        generator.take_definitions(true).into_iter().collect()
    })
}

fn component_name<T: JsonSchema>() -> String {
    T::schema_name().into_owned()
}

/// A definition with every `$ref` inlined, as a structural schema: nodes without a type and
/// recursive or free-form parts become `x-kubernetes-preserve-unknown-fields`.
fn inlined(name: &str, stack: &mut Vec<String>) -> Value {
    let preserve = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    if name == JSON_SCHEMA_PROPS || stack.iter().any(|n| n == name) || stack.len() > 12 {
        return preserve;
    }
    let Some(def) = definitions().get(name) else {
        return preserve;
    };
    stack.push(name.to_string());
    let out = inline_node(def, stack);
    stack.pop();
    out
}

fn inline_node(node: &Value, stack: &mut Vec<String>) -> Value {
    let Some(obj) = node.as_object() else {
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    };
    if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return inlined(name, stack);
    }
    if ["anyOf", "oneOf", "allOf", "not"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    }
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "properties" => {
                let props: Map<String, Value> = value
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), inline_node(v, stack)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if value.is_object() => {
                out.insert(key.clone(), inline_node(value, stack));
            }
            "description"
            | "default"
            | "example"
            | "x-kubernetes-patch-merge-key"
            | "x-kubernetes-patch-strategy" => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if !out.contains_key("type") {
        out.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    Value::Object(out)
}

/// The structural schema of a built-in kind.
fn structural<T: JsonSchema>() -> Option<(Arc<CompiledSchema>, Arc<Schema>)> {
    let inlined = inlined(&component_name::<T>(), &mut Vec::new());
    match CompiledSchema::new(&inlined) {
        Ok(compiled) => {
            let type_info = Arc::new(compiled.schema.clone());
            Some((Arc::new(compiled), type_info))
        }
        Err(errors) => {
            tracing::error!(kind = %component_name::<T>(), ?errors, "built-in schema is not structural");
            None
        }
    }
}

struct BuiltinSpec {
    builtin: Builtin,
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    storage: &'static str,
    unconditional_update: bool,
    selectable_fields: &'static [&'static str],
}

const SPECS: &[BuiltinSpec] = &[
    BuiltinSpec {
        builtin: Builtin::Namespace,
        group: "",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
        storage: "core/namespaces",
        unconditional_update: true,
        selectable_fields: &["status.phase"],
    },
    BuiltinSpec {
        builtin: Builtin::ConfigMap,
        group: "",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
        storage: "core/configmaps",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::Secret,
        group: "",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "core/secrets",
        unconditional_update: true,
        selectable_fields: &["type"],
    },
    BuiltinSpec {
        builtin: Builtin::Event,
        group: "",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        storage: "core/events",
        unconditional_update: true,
        selectable_fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    BuiltinSpec {
        builtin: Builtin::EventsV1,
        group: "events.k8s.io",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        storage: "core/events",
        unconditional_update: true,
        selectable_fields: &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        ],
    },
    BuiltinSpec {
        builtin: Builtin::Lease,
        group: "coordination.k8s.io",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "coordination.k8s.io/leases",
        unconditional_update: false,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::Crd,
        group: "apiextensions.k8s.io",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
        storage: "apiextensions.k8s.io/customresourcedefinitions",
        unconditional_update: false,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::Role,
        group: "rbac.authorization.k8s.io",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "rbac.authorization.k8s.io/roles",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::ClusterRole,
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "rbac.authorization.k8s.io/clusterroles",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::RoleBinding,
        group: "rbac.authorization.k8s.io",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "rbac.authorization.k8s.io/rolebindings",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::ClusterRoleBinding,
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "rbac.authorization.k8s.io/clusterrolebindings",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::ServiceAccount,
        group: "",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status: false,
        storage: "core/serviceaccounts",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::SelfSubjectAccessReview,
        group: "authorization.k8s.io",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "authorization.k8s.io/selfsubjectaccessreviews",
        unconditional_update: false,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::SelfSubjectRulesReview,
        group: "authorization.k8s.io",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "authorization.k8s.io/selfsubjectrulesreviews",
        unconditional_update: false,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::SelfSubjectReview,
        group: "authentication.k8s.io",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        storage: "authentication.k8s.io/selfsubjectreviews",
        unconditional_update: false,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::ValidatingWebhookConfiguration,
        group: "admissionregistration.k8s.io",
        kind: "ValidatingWebhookConfiguration",
        plural: "validatingwebhookconfigurations",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        status: false,
        storage: "admissionregistration.k8s.io/validatingwebhookconfigurations",
        unconditional_update: true,
        selectable_fields: &[],
    },
    BuiltinSpec {
        builtin: Builtin::MutatingWebhookConfiguration,
        group: "admissionregistration.k8s.io",
        kind: "MutatingWebhookConfiguration",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        status: false,
        storage: "admissionregistration.k8s.io/mutatingwebhookconfigurations",
        unconditional_update: true,
        selectable_fields: &[],
    },
];

/// A built-in kind's schema, its type information, and its OpenAPI name.
type BuiltinSchema = (Arc<CompiledSchema>, Arc<Schema>, String);

/// The resources of the built-in kinds.
pub fn resources() -> Vec<Resource> {
    static SCHEMAS: OnceLock<Vec<Option<BuiltinSchema>>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        SPECS
            .iter()
            .map(|spec| {
                let (schema, name) = match spec.builtin {
                    Builtin::Namespace => {
                        (structural::<Namespace>(), component_name::<Namespace>())
                    }
                    Builtin::ConfigMap => {
                        (structural::<ConfigMap>(), component_name::<ConfigMap>())
                    }
                    Builtin::Secret => (structural::<Secret>(), component_name::<Secret>()),
                    Builtin::Event => (structural::<CoreEvent>(), component_name::<CoreEvent>()),
                    Builtin::EventsV1 => (
                        structural::<EventsV1Event>(),
                        component_name::<EventsV1Event>(),
                    ),
                    Builtin::Lease => (structural::<Lease>(), component_name::<Lease>()),
                    Builtin::Crd => (
                        structural::<CustomResourceDefinition>(),
                        component_name::<CustomResourceDefinition>(),
                    ),
                    Builtin::Role => (structural::<Role>(), component_name::<Role>()),
                    Builtin::ClusterRole => {
                        (structural::<ClusterRole>(), component_name::<ClusterRole>())
                    }
                    Builtin::RoleBinding => {
                        (structural::<RoleBinding>(), component_name::<RoleBinding>())
                    }
                    Builtin::ClusterRoleBinding => (
                        structural::<ClusterRoleBinding>(),
                        component_name::<ClusterRoleBinding>(),
                    ),
                    Builtin::ServiceAccount => (
                        structural::<ServiceAccount>(),
                        component_name::<ServiceAccount>(),
                    ),
                    Builtin::SelfSubjectAccessReview => (
                        structural::<SelfSubjectAccessReview>(),
                        component_name::<SelfSubjectAccessReview>(),
                    ),
                    Builtin::SelfSubjectRulesReview => (
                        structural::<SelfSubjectRulesReview>(),
                        component_name::<SelfSubjectRulesReview>(),
                    ),
                    Builtin::SelfSubjectReview => (
                        structural::<SelfSubjectReview>(),
                        component_name::<SelfSubjectReview>(),
                    ),
                    Builtin::ValidatingWebhookConfiguration => (
                        structural::<ValidatingWebhookConfiguration>(),
                        component_name::<ValidatingWebhookConfiguration>(),
                    ),
                    Builtin::MutatingWebhookConfiguration => (
                        structural::<MutatingWebhookConfiguration>(),
                        component_name::<MutatingWebhookConfiguration>(),
                    ),
                };
                schema.map(|(c, t)| (c, t, name))
            })
            .collect()
    });
    SPECS
        .iter()
        .zip(schemas)
        .map(|(spec, schema)| Resource {
            group: spec.group.into(),
            version: "v1".into(),
            kind: spec.kind.into(),
            list_kind: format!("{}List", spec.kind),
            plural: spec.plural.into(),
            singular: spec.kind.to_lowercase(),
            namespaced: spec.namespaced,
            short_names: spec.short_names.iter().map(|s| s.to_string()).collect(),
            categories: spec.categories.iter().map(|s| s.to_string()).collect(),
            status_subresource: spec.status,
            builtin: Some(spec.builtin),
            schema: schema.as_ref().map(|(c, _, _)| c.clone()),
            type_info: schema.as_ref().map(|(_, t, _)| t.clone()),
            columns: table::builtin_columns(spec.kind),
            selectable_fields: spec
                .selectable_fields
                .iter()
                .map(|s| s.to_string())
                .collect(),
            storage: spec.storage.into(),
            openapi_name: schema
                .as_ref()
                .map(|(_, _, n)| n.clone())
                .unwrap_or_default(),
            unconditional_update: spec.unconditional_update,
            crd: None,
        })
        .collect()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
}

/// Check a CRD and fill in defaults (listKind, singular). Errors are 422 causes.
pub fn validate_crd(crd: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |field: &str, kind: ErrorType, detail: String| {
        errors.push(FieldError::new(field, kind, None, detail))
    };
    let group = text(crd, &["spec", "group"])
        .unwrap_or_default()
        .to_string();
    let plural = text(crd, &["spec", "names", "plural"])
        .unwrap_or_default()
        .to_string();
    let kind = text(crd, &["spec", "names", "kind"])
        .unwrap_or_default()
        .to_string();
    if group.is_empty() {
        err("spec.group", ErrorType::Required, String::new());
    }
    if plural.is_empty() {
        err("spec.names.plural", ErrorType::Required, String::new());
    }
    if kind.is_empty() {
        err("spec.names.kind", ErrorType::Required, String::new());
    }
    if !group.is_empty() && !group.contains('.') {
        err(
            "spec.group",
            ErrorType::Invalid,
            "should be a domain with at least one dot".into(),
        );
    }
    // As upstream: Kubernetes' own groups take an approval annotation.
    let protected = ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|d| group == *d || group.ends_with(&format!(".{d}")));
    let approved = crd
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key("api-approved.kubernetes.io"));
    if protected && !approved {
        err(
            "metadata.annotations[api-approved.kubernetes.io]",
            ErrorType::Required,
            "protected groups must have approval annotation \"api-approved.kubernetes.io\"".into(),
        );
    }
    // A built-in resource cannot be taken over (RBAC objects, Namespaces, Leases…).
    if !group.is_empty()
        && !plural.is_empty()
        && SPECS.iter().any(|b| b.group == group && b.plural == plural)
    {
        err(
            "spec.names.plural",
            ErrorType::Invalid,
            format!("{plural}.{group} is a built-in resource"),
        );
    }
    let name = crate::object::name(crd).unwrap_or_default().to_string();
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        err(
            "metadata.name",
            ErrorType::Invalid,
            format!("must be spec.names.plural+\".\"+spec.group: {plural}.{group}"),
        );
    }
    match text(crd, &["spec", "scope"]) {
        Some("Namespaced" | "Cluster") => {}
        _ => err(
            "spec.scope",
            ErrorType::NotSupported,
            "supported values: \"Namespaced\", \"Cluster\"".into(),
        ),
    }
    if let Some(strategy) = text(crd, &["spec", "conversion", "strategy"])
        && strategy != "None"
    {
        err(
            "spec.conversion.strategy",
            ErrorType::NotSupported,
            "only \"None\" is supported".into(),
        );
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        err(
            "spec.versions",
            ErrorType::Required,
            "must have exactly one version marked as storage version".into(),
        );
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        err(
            "spec.versions",
            ErrorType::Invalid,
            "must have exactly one version marked as storage version".into(),
        );
    }
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        match version.pointer("/schema/openAPIV3Schema") {
            None => err(
                &format!("{path}.schema.openAPIV3Schema"),
                ErrorType::Required,
                "schemas are required".into(),
            ),
            Some(schema) => {
                if let Err(problems) = CompiledSchema::new(schema) {
                    for p in problems {
                        err(
                            &format!("{path}.schema.{}", p.path),
                            ErrorType::Invalid,
                            p.problem,
                        );
                    }
                }
            }
        }
        for (j, column) in version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let json_path = column
                .get("jsonPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Err(e) = JsonPath::parse(json_path) {
                err(
                    &format!("{path}.additionalPrinterColumns[{j}].jsonPath"),
                    ErrorType::Invalid,
                    e.to_string(),
                );
            }
        }
    }
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if !names.contains_key("listKind") && !kind.is_empty() {
            names.insert("listKind".into(), Value::String(format!("{kind}List")));
        }
        if !names.contains_key("singular") && !kind.is_empty() {
            names.insert("singular".into(), Value::String(kind.to_lowercase()));
        }
    }
    errors
}

/// The status a CRD gets when it is accepted: names accepted, established, stored versions.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for version in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("storage").and_then(Value::as_bool) == Some(true)
            && let Some(name) = version.get("name")
            && !stored.contains(name)
        {
            stored.push(name.clone());
        }
    }
    let old_conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |type_: &str, reason: &str, message: &str| {
        let since = old_conditions
            .iter()
            .find(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.to_string()));
        json!({"type": type_, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
    };
    json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found for the names"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    })
}

/// The resources a CRD defines, one per served version.
pub fn crd_resources(crd: &Value) -> Result<Vec<Resource>, String> {
    let spec = crd.get("spec").ok_or("CRD has no spec")?;
    let group = text(spec, &["group"]).ok_or("spec.group is missing")?;
    let names = spec.get("names").ok_or("spec.names is missing")?;
    let kind = text(names, &["kind"]).ok_or("spec.names.kind is missing")?;
    let plural = text(names, &["plural"]).ok_or("spec.names.plural is missing")?;
    let strings = |key: &str| -> Vec<String> {
        names
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = text(spec, &["scope"]) != Some("Cluster");
    let mut out = Vec::new();
    for version in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = text(version, &["name"]).ok_or("a version has no name")?;
        let schema_json = version
            .pointer("/schema/openAPIV3Schema")
            .ok_or("a version has no schema")?;
        let compiled = CompiledSchema::new(schema_json).map_err(|e| format!("{e:?}"))?;
        let type_info = Arc::new(compiled.schema.clone());
        let printer_columns: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition> =
            serde_json::from_value(version.get("additionalPrinterColumns").cloned().unwrap_or_else(|| json!([])))
                .map_err(|e| format!("additionalPrinterColumns: {e}"))?;
        let columns = table::crd_columns(&printer_columns)
            .map_err(|e| format!("additionalPrinterColumns: {e}"))?;
        let selectable_fields = version
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|f| {
                f.iter()
                    .filter_map(|s| s.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Resource {
            group: group.into(),
            version: name.into(),
            kind: kind.into(),
            list_kind: text(names, &["listKind"])
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}List")),
            plural: plural.into(),
            singular: text(names, &["singular"])
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            namespaced,
            short_names: strings("shortNames"),
            categories: strings("categories"),
            status_subresource: version.pointer("/subresources/status").is_some(),
            builtin: None,
            schema: Some(Arc::new(compiled)),
            type_info: Some(type_info),
            columns,
            selectable_fields,
            storage: format!("{group}/{plural}"),
            openapi_name: openapi_name(group, name, kind),
            unconditional_update: false,
            crd: crate::object::name(crd).map(str::to_string),
        });
    }
    Ok(out)
}

/// Prepare a new Namespace: the `kubernetes` finalizer, phase Active, the name label.
pub fn prepare_namespace(object: &mut Value) {
    let name = crate::object::name(object).unwrap_or_default().to_string();
    let meta = crate::object::meta_mut(object);
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    object["spec"] = json!({"finalizers": ["kubernetes"]});
    object["status"] = json!({"phase": "Active"});
}

/// Fold a Secret's `stringData` into `data` (base64) and default its type.
pub fn prepare_secret(object: &mut Value) {
    use base64::Engine;
    if let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !object.get("data").is_some_and(Value::is_object) {
            object["data"] = json!({});
        }
        if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
            for (key, value) in string_data {
                let text = value.as_str().unwrap_or_default();
                data.insert(
                    key,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    if object.get("type").is_none_or(Value::is_null) {
        object["type"] = Value::String("Opaque".into());
    }
}

/// The problems with changing `old` into `new` for kinds with immutable parts.
pub fn immutability(builtin: Builtin, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match builtin {
        Builtin::ConfigMap | Builtin::Secret => {
            if old.get("immutable") == Some(&Value::Bool(true)) {
                for field in ["data", "binaryData", "immutable"] {
                    if old.get(field) != new.get(field) {
                        errors.push(FieldError::new(
                            field,
                            ErrorType::Forbidden,
                            None,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
            }
            if builtin == Builtin::Secret && old.get("type") != new.get("type") {
                errors.push(FieldError::new(
                    "type",
                    ErrorType::Invalid,
                    new.get("type"),
                    "field is immutable",
                ));
            }
        }
        Builtin::Crd => {
            for (field, pointer) in [
                ("spec.group", "/spec/group"),
                ("spec.names.plural", "/spec/names/plural"),
                ("spec.scope", "/spec/scope"),
            ] {
                if old.pointer(pointer) != new.pointer(pointer) {
                    errors.push(FieldError::new(
                        field,
                        ErrorType::Invalid,
                        new.pointer(pointer),
                        "field is immutable",
                    ));
                }
            }
        }
        _ => {}
    }
    errors
}

/// Renames between the stored core/v1 Event and the events.k8s.io/v1 view.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// A stored (core/v1) Event seen through events.k8s.io/v1.
pub fn event_to_v1(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        for (core, v1) in EVENT_RENAMES {
            // Events stored by earlier builds may hold both names of the reporter: the
            // events.k8s.io one is the later.
            if let Some(value) = map.remove(*core) {
                map.entry((*v1).to_string()).or_insert(value);
            }
        }
        map.insert(
            "apiVersion".into(),
            Value::String("events.k8s.io/v1".into()),
        );
        map.insert("kind".into(), Value::String("Event".into()));
    }
    object
}

/// An events.k8s.io/v1 Event in its stored (core/v1) form.
pub fn event_from_v1(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        for (core, v1) in EVENT_RENAMES {
            if let Some(value) = map.remove(*v1) {
                map.insert((*core).to_string(), value);
            }
        }
        map.insert("apiVersion".into(), Value::String("v1".into()));
        map.insert("kind".into(), Value::String("Event".into()));
    }
    object
}

#[cfg(test)]
mod tests;
