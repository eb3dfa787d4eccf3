//! The resource endpoints: get, list, create, update (PUT), patch, delete, deletecollection,
//! and the rules that come with them (generation, status subresource, finalizers,
//! dry run, field validation, managed fields, no-op writes).

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use devplane_schema::{ErrorType, FieldError};
use devplane_store::{KeyValue, ListOptions, Rev, StoreError};
use serde_json::{Map, Value, json};

use crate::builtin::{self, Builtin};
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta, meta_mut};
use crate::registry::Resource;
use crate::request::{self, FieldValidation, Query, Representation};
use crate::selector::{FieldSelector, LabelSelector, events_v1_field_label, field_value};
use crate::server::Inner;
use crate::{ssa, strategic, table};

/// One request against a resource.
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// The resource.
    pub resource: Arc<Resource>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource from the path.
    pub subresource: Option<String>,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

/// Most attempts of a server-side read-modify-write before giving up with 409.
const MAX_RETRIES: usize = 16;

/// Store key segment of finalizers the garbage collector honours.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer that orphans dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Finalizer on CRDs: their custom resources are deleted before the CRD goes.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

impl Request {
    fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn required_name(&self) -> ApiResult<&str> {
        self.name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("this method needs an object name"))
    }

    fn manager(&self) -> ApiResult<String> {
        match self.query.get("fieldManager") {
            Some(m) if m.len() > 128 => Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            )),
            Some(m) if !m.is_empty() => Ok(m.to_string()),
            _ => Ok(ssa::manager_from_user_agent(
                self.headers
                    .get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            )),
        }
    }

    fn content_type(&self) -> String {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default()
    }
}

/// Everything a write needs to know beyond the object.
pub struct WriteOptions {
    /// Persist nothing.
    pub dry_run: bool,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// Field manager.
    pub manager: String,
    /// Subresource written (`status`, `finalize`), if any.
    pub subresource: Option<String>,
    /// Managed fields are already computed (server-side apply).
    pub managed_fields_done: bool,
    /// Run the admission webhooks (client requests; not the server's own writes).
    pub admission: bool,
}

impl WriteOptions {
    /// Options of an internal write (garbage collector, namespace controller).
    pub fn internal(manager: &str) -> WriteOptions {
        WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Ignore,
            manager: manager.into(),
            subresource: None,
            managed_fields_done: false,
            admission: false,
        }
    }
}

/// The outcome of a write.
pub struct Written {
    /// The object as stored (with its resourceVersion).
    pub object: Value,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// Whether the object was created.
    pub created: bool,
}

/// The object in the representation a resource serves (Events through events.k8s.io/v1 are
/// renamed; everything gets apiVersion and kind).
pub fn to_view(resource: &Resource, mut stored: Value) -> Value {
    if resource.builtin == Some(Builtin::EventsV1) {
        return builtin::event_to_v1(stored);
    }
    if let Some(map) = stored.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(resource.api_version()));
        map.insert("kind".into(), Value::String(resource.kind.clone()));
    }
    stored
}

fn to_storage(resource: &Resource, view: Value) -> Value {
    if resource.builtin == Some(Builtin::EventsV1) {
        builtin::event_from_v1(view)
    } else {
        view
    }
}

/// Stored bytes of an object: JSON without its resourceVersion (that comes from the store).
fn encode(resource: &Resource, view: &Value) -> ApiResult<Bytes> {
    let mut stored = to_storage(resource, view.clone());
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// An object read from the store, in the resource's view, with its resourceVersion.
pub fn decode(resource: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    let stored: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    let mut view = to_view(resource, stored);
    meta_mut(&mut view).insert(
        "resourceVersion".into(),
        Value::String(kv.mod_rev.to_string()),
    );
    Ok(view)
}

/// Parse an object body by content type: protobuf (as kubectl sends some built-in kinds),
/// else JSON or YAML.
fn parse_object_body(req: &Request) -> ApiResult<Value> {
    if req.content_type() == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(&req.body)
            .map_err(|e| ApiError::unsupported_media_type(e.to_string()));
    }
    parse_body(&req.body)
}

/// Parse a request body: JSON, or YAML for apply patches and lenient clients.
fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_error) => serde_yaml::from_slice::<Value>(body).map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON or YAML: {json_error}"
            ))
        }),
    }
}

/// Validate names like the API server: DNS-1123 subdomain (Namespaces: label).
fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    if name.is_empty() {
        return Some("name or generateName is required".into());
    }
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    let ok_chars = name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!label && b == b'.')
    });
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_chars || !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        let rule = if label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        return Some(rule.into());
    }
    None
}

fn validate_metadata(resource: &Resource, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = meta(object);
    let name = object::name(object).unwrap_or_default();
    if let Some(problem) = name_problem(name, resource.builtin == Some(Builtin::Namespace)) {
        errors.push(FieldError::new(
            "metadata.name",
            ErrorType::Invalid,
            Some(&Value::String(name.into())),
            problem,
        ));
    }
    for (field, max_value) in [("labels", Some(63)), ("annotations", None)] {
        let Some(entries) = meta.and_then(|m| m.get(field)) else {
            continue;
        };
        let Some(entries) = entries.as_object() else {
            errors.push(FieldError::new(
                format!("metadata.{field}"),
                ErrorType::Invalid,
                None,
                "must be a map of strings",
            ));
            continue;
        };
        for (key, value) in entries {
            if let Some(problem) = qualified_name_problem(key) {
                errors.push(FieldError::new(
                    format!("metadata.{field}"),
                    ErrorType::Invalid,
                    Some(&Value::String(key.clone())),
                    problem,
                ));
            }
            match (value.as_str(), max_value) {
                (None, _) => errors.push(FieldError::new(format!("metadata.{field}.{key}"), ErrorType::Invalid, Some(value), "must be a string")),
                (Some(v), Some(max)) if v.len() > max || !label_value_ok(v) => errors.push(FieldError::new(
                    format!("metadata.{field}"),
                    ErrorType::Invalid,
                    Some(value),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                )),
                _ => {}
            }
        }
    }
    for (i, owner) in meta
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::new(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    ErrorType::Required,
                    None,
                    "",
                ));
            }
        }
    }
    let controllers = object::meta(object)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .count()
        })
        .unwrap_or(0);
    if controllers > 1 {
        errors.push(FieldError::new(
            "metadata.ownerReferences",
            ErrorType::Invalid,
            None,
            "Only one reference can have Controller set to true",
        ));
    }
    for (i, finalizer) in meta
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match finalizer.as_str() {
            Some(f)
                if qualified_name_problem(f).is_none()
                    || f.contains('/')
                    || matches!(f, FOREGROUND_FINALIZER | ORPHAN_FINALIZER | "kubernetes") => {}
            _ => errors.push(FieldError::new(
                format!("metadata.finalizers[{i}]"),
                ErrorType::Invalid,
                Some(finalizer),
                "must be a qualified name",
            )),
        }
    }
    errors
}

fn label_value_ok(v: &str) -> bool {
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    v.is_empty()
        || (v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && alnum(v.bytes().next())
            && alnum(v.bytes().last()))
}

/// Problems with a qualified name (`prefix/name`), like label keys.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || name_problem(prefix, false).is_some())
    {
        return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || !alnum(name.bytes().next())
        || !alnum(name.bytes().last())
    {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)".into(),
        );
    }
    None
}

/// Apply a resource's schema to an object: prune (reporting unknown fields according to the
/// field validation), default, validate, CEL. Returns warnings.
fn admit(
    resource: &Resource,
    object: &mut Value,
    old: Option<&Value>,
    field_validation: FieldValidation,
) -> ApiResult<Vec<String>> {
    let name = object::name(object).unwrap_or_default().to_string();
    let Some(schema) = &resource.schema else {
        return Ok(Vec::new());
    };
    let admission = schema.admit(object, old);
    let mut warnings = Vec::new();
    if !admission.unknown_fields.is_empty() {
        match field_validation {
            FieldValidation::Strict => {
                let list: Vec<String> = admission
                    .unknown_fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(
                    admission
                        .unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{f}\"")),
                );
            }
            FieldValidation::Ignore => {}
        }
    }
    let mut errors = admission.errors;
    errors.extend(validate_metadata(resource, object));
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            &resource.kind,
            &resource.group,
            &name,
            &errors,
        ));
    }
    Ok(warnings)
}

impl Inner {
    /// Read one object.
    pub async fn read(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<(Value, Rev)>> {
        match self.store.get(&resource.key(namespace, name)).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode(resource, &kv)?, kv.mod_rev))),
        }
    }

    /// Check that a namespace exists and accepts new objects.
    async fn check_namespace(&self, namespace: &str) -> ApiResult<()> {
        let registry = self.registry();
        let Some(namespaces) = registry.get("", "v1", "namespaces") else {
            return Ok(());
        };
        match self.read(&namespaces, None, namespace).await? {
            None => Err(ApiError::not_found("", "namespaces", namespace)),
            Some((ns, _)) if object::is_terminating(&ns) => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Create an object (POST, or apply to a missing name).
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        check_type_meta(resource, &object)?;
        let body_ns = object::namespace(&object).map(str::to_string);
        match (resource.namespaced, namespace, body_ns.as_deref()) {
            (true, Some(path_ns), Some(body_ns)) if path_ns != body_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (true, None, _) => {
                return Err(ApiError::method_not_allowed(
                    "create needs a namespace in the path",
                ));
            }
            _ => {}
        }
        {
            let meta = meta_mut(&mut object);
            if let (true, Some(ns)) = (resource.namespaced, namespace) {
                meta.insert("namespace".into(), Value::String(ns.into()));
            } else {
                meta.remove("namespace");
            }
            for field in [
                "resourceVersion",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(field);
            }
            meta.insert("uid".into(), Value::String(object::new_uid()));
            meta.insert(
                "creationTimestamp".into(),
                Value::String(object::now_seconds()),
            );
            meta.insert("generation".into(), Value::from(1));
        }
        if resource.status_subresource
            && resource.builtin.is_none()
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        match resource.builtin {
            Some(Builtin::Namespace) => builtin::prepare_namespace(&mut object),
            Some(Builtin::Secret) => builtin::prepare_secret(&mut object),
            Some(Builtin::Crd) => {
                let errors = builtin::validate_crd(&mut object);
                if !errors.is_empty() {
                    return Err(ApiError::invalid(
                        &resource.kind,
                        &resource.group,
                        object::name(&object).unwrap_or_default(),
                        &errors,
                    ));
                }
                let status = builtin::crd_status(&object, &object::now_seconds());
                object["status"] = status;
                let mut finalizers = object::finalizers(&object);
                if !finalizers.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                    finalizers.push(CRD_CLEANUP_FINALIZER.into());
                    object::set_finalizers(&mut object, &finalizers);
                }
            }
            _ => {}
        }
        let generate_name = object::meta_str(&object, "generateName").map(str::to_string);
        if object::name(&object).is_none()
            && let Some(base) = &generate_name
        {
            meta_mut(&mut object).insert("name".into(), Value::String(generated_name(base)));
        }
        let mut warnings = admit(resource, &mut object, None, opts.field_validation)?;
        if resource.namespaced
            && let Some(ns) = namespace
        {
            self.check_namespace(ns).await?;
        }
        if opts.admission {
            let target = crate::webhooks::Target {
                resource,
                subresource: opts.subresource.as_deref(),
                namespace,
                dry_run: opts.dry_run,
            };
            self.run_webhooks("CREATE", &target, &object, None).await?;
        }
        if !opts.managed_fields_done {
            ssa::update(
                None,
                &mut object,
                &opts.manager,
                resource.type_info.as_deref(),
                None,
                &resource.api_version(),
                &object::now_seconds(),
            );
        }
        object::drop_empty_metadata(&mut object);
        if opts.dry_run {
            meta_mut(&mut object).insert("resourceVersion".into(), Value::String(String::new()));
            return Ok(Written {
                object,
                warnings,
                created: true,
            });
        }
        // generateName: retry a few times on a collision, as the API server does.
        for attempt in 0..8 {
            let name = object::name(&object).unwrap_or_default().to_string();
            let key = resource.key(namespace, &name);
            match self.store.create(&key, encode(resource, &object)?).await {
                Ok(kv) => {
                    // What was stored is this object; only the revision is new.
                    meta_mut(&mut object).insert(
                        "resourceVersion".into(),
                        Value::String(kv.mod_rev.to_string()),
                    );
                    return Ok(Written {
                        object,
                        warnings: std::mem::take(&mut warnings),
                        created: true,
                    });
                }
                Err(StoreError::AlreadyExists { .. }) => match &generate_name {
                    Some(base)
                        if attempt < 7
                            && object::meta_str(&object, "generateName").is_some()
                            && name.starts_with(base.as_str()) =>
                    {
                        meta_mut(&mut object)
                            .insert("name".into(), Value::String(generated_name(base)));
                    }
                    _ => {
                        return Err(ApiError::already_exists(
                            &resource.group,
                            &resource.plural,
                            &name,
                        ));
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::already_exists(
            &resource.group,
            &resource.plural,
            object::name(&object).unwrap_or_default(),
        ))
    }

    /// Replace an object with `new` (the outcome of a PUT or patch), given the current state
    /// `old` at revision `old_rev`. Applies the status-subresource, generation, finalizer and
    /// no-op rules. Returns Err(StoreError::Conflict) through ApiError 409 on a lost race.
    pub async fn update(
        &self,
        resource: &Resource,
        old: &Value,
        old_rev: Rev,
        mut new: Value,
        opts: &WriteOptions,
    ) -> Result<Written, UpdateError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object").into());
        }
        check_type_meta(resource, &new)?;
        let name = object::name(old).unwrap_or_default().to_string();
        if object::name(&new).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&new).unwrap_or_default()
            ))
            .into());
        }
        if let (Some(new_ns), Some(old_ns)) = (object::namespace(&new), object::namespace(old))
            && new_ns != old_ns
        {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request").into());
        }
        if let Some(uid) = object::uid(&new)
            && Some(uid) != object::uid(old)
        {
            return Err(ApiError::conflict(
                &resource.group,
                &resource.plural,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::uid(old).unwrap_or_default()
                ),
            )
            .into());
        }
        // The subresource decides which part of the request counts.
        match opts.subresource.as_deref() {
            Some("status") => {
                let status = new.get("status").cloned();
                let managed = meta(&new).and_then(|m| m.get("managedFields")).cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                match managed {
                    Some(m) => {
                        meta_mut(&mut new).insert("managedFields".into(), m);
                    }
                    None => {
                        meta_mut(&mut new).remove("managedFields");
                    }
                }
            }
            Some("finalize") if resource.builtin == Some(Builtin::Namespace) => {
                let finalizers = new.pointer("/spec/finalizers").cloned();
                new = old.clone();
                new["spec"] = json!({});
                if let Some(f) = finalizers {
                    new["spec"]["finalizers"] = f;
                }
            }
            Some(other) => {
                return Err(ApiError::no_route()
                    .with_message(format!("subresource {other} is not served"))
                    .into());
            }
            None => {
                if resource.status_subresource {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(map) = new.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
            }
        }
        {
            let old_meta = meta(old).cloned().unwrap_or_default();
            let meta = meta_mut(&mut new);
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.remove("resourceVersion");
            meta.remove("selfLink");
            if let Some(g) = old_meta.get("generation") {
                meta.insert("generation".into(), g.clone());
            }
        }
        match resource.builtin {
            Some(Builtin::Secret) => builtin::prepare_secret(&mut new),
            Some(Builtin::Crd) => {
                let errors = builtin::validate_crd(&mut new);
                if !errors.is_empty() {
                    return Err(
                        ApiError::invalid(&resource.kind, &resource.group, &name, &errors).into(),
                    );
                }
                if opts.subresource.is_none() {
                    let status = builtin::crd_status(&new, &object::now_seconds());
                    new["status"] = status;
                }
            }
            _ => {}
        }
        if let Some(b) = resource.builtin {
            let errors = builtin::immutability(b, old, &new);
            if !errors.is_empty() {
                return Err(
                    ApiError::invalid(&resource.kind, &resource.group, &name, &errors).into(),
                );
            }
        }
        if object::is_terminating(old) {
            let before = object::finalizers(old);
            if let Some(added) = object::finalizers(&new)
                .into_iter()
                .find(|f| !before.contains(f))
            {
                let errors = [FieldError::new(
                    "metadata.finalizers",
                    ErrorType::Forbidden,
                    Some(&Value::String(added)),
                    "no new finalizers can be added if the object is being deleted",
                )];
                return Err(
                    ApiError::invalid(&resource.kind, &resource.group, &name, &errors).into(),
                );
            }
        }
        let mut old_view = old.clone();
        if let Some(m) = old_view.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let warnings = admit(resource, &mut new, Some(&old_view), opts.field_validation)?;
        if spec_changed(resource, &old_view, &new) {
            let generation = object::generation(old) + 1;
            meta_mut(&mut new).insert("generation".into(), Value::from(generation));
        }
        if !opts.managed_fields_done {
            ssa::update(
                Some(&old_view),
                &mut new,
                &opts.manager,
                resource.type_info.as_deref(),
                opts.subresource.as_deref(),
                &resource.api_version(),
                &object::now_seconds(),
            );
        }
        object::drop_empty_metadata(&mut new);
        // Both sides lack resourceVersion here, so equal values mean equal stored bytes.
        if new == old_view {
            // A no-op write: no new revision, no event.
            return Ok(Written {
                object: old.clone(),
                warnings,
                created: false,
            });
        }
        let key = resource.key(object::namespace(old), &name);
        let spec_finalizers_left = resource.builtin == Some(Builtin::Namespace)
            && new
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        let finished = object::is_terminating(&new)
            && object::finalizers(&new).is_empty()
            && !spec_finalizers_left;
        if opts.admission {
            let target = crate::webhooks::Target {
                resource,
                subresource: opts.subresource.as_deref(),
                namespace: object::namespace(old),
                dry_run: opts.dry_run,
            };
            self.run_webhooks("UPDATE", &target, &new, Some(old))
                .await?;
        }
        let new_bytes = encode(resource, &new)?;
        if opts.dry_run {
            let mut shown = new;
            meta_mut(&mut shown)
                .insert("resourceVersion".into(), Value::String(old_rev.to_string()));
            return Ok(Written {
                object: shown,
                warnings,
                created: false,
            });
        }
        if finished {
            // The last finalizer is gone from a terminating object: it goes away now.
            let event = self
                .store
                .delete(&key, Some(old_rev))
                .await
                .map_err(UpdateError::from_store)?;
            let mut last = new;
            meta_mut(&mut last).insert(
                "resourceVersion".into(),
                Value::String(event.rev.to_string()),
            );
            return Ok(Written {
                object: last,
                warnings,
                created: false,
            });
        }
        let kv = self
            .store
            .update(&key, new_bytes, old_rev)
            .await
            .map_err(UpdateError::from_store)?;
        let mut stored = new;
        meta_mut(&mut stored).insert(
            "resourceVersion".into(),
            Value::String(kv.mod_rev.to_string()),
        );
        Ok(Written {
            object: stored,
            warnings,
            created: false,
        })
    }

    /// Read-modify-write with retries on lost races: `change` turns the current object into
    /// the new one (or None for nothing to do).
    pub async fn modify(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        mut change: impl FnMut(&Value) -> ApiResult<Option<Value>>,
    ) -> ApiResult<Option<Written>> {
        for _ in 0..MAX_RETRIES {
            let Some((current, rev)) = self.read(resource, namespace, name).await? else {
                return Ok(None);
            };
            let Some(new) = change(&current)? else {
                return Ok(Some(Written {
                    object: current,
                    warnings: Vec::new(),
                    created: false,
                }));
            };
            match self.update(resource, &current, rev, new, opts).await {
                Ok(written) => return Ok(Some(written)),
                Err(UpdateError::Conflict) => continue,
                Err(UpdateError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(&resource.group, &resource.plural, name))
    }

    /// Delete an object, honouring finalizers and the propagation policy. Returns the object
    /// when it stays (terminating), or the last state when it is gone.
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        for _ in 0..MAX_RETRIES {
            let Some((current, rev)) = self.read(resource, namespace, name).await? else {
                return Err(ApiError::not_found(&resource.group, &resource.plural, name));
            };
            if let Some(uid) = &options.precondition_uid
                && Some(uid.as_str()) != object::uid(&current)
            {
                return Err(ApiError::conflict(
                    &resource.group,
                    &resource.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::uid(&current).unwrap_or_default()
                    ),
                ));
            }
            if let Some(want) = &options.precondition_rv
                && *want != rev.to_string()
            {
                return Err(ApiError::conflict(
                    &resource.group,
                    &resource.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
                    ),
                ));
            }
            let mut finalizers = object::finalizers(&current);
            let policy_finalizer = match options.propagation.as_deref() {
                Some("Foreground") => Some(FOREGROUND_FINALIZER),
                Some("Orphan") => Some(ORPHAN_FINALIZER),
                _ if options.orphan_dependents == Some(true) => Some(ORPHAN_FINALIZER),
                _ => None,
            };
            let is_namespace = resource.builtin == Some(Builtin::Namespace);
            if let Some(f) = policy_finalizer
                && !object::is_terminating(&current)
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
            let spec_finalizers = is_namespace
                && current
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
            if finalizers.is_empty() && !spec_finalizers {
                if options.dry_run {
                    return Ok((current, true));
                }
                match self
                    .store
                    .delete(&resource.key(namespace, name), Some(rev))
                    .await
                {
                    Ok(event) => {
                        let mut last = current;
                        meta_mut(&mut last).insert(
                            "resourceVersion".into(),
                            Value::String(event.rev.to_string()),
                        );
                        return Ok((last, true));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(ApiError::not_found(&resource.group, &resource.plural, name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if object::is_terminating(&current) {
                return Ok((current, false));
            }
            let mut terminating = current.clone();
            object::set_finalizers(&mut terminating, &finalizers);
            {
                let meta = meta_mut(&mut terminating);
                meta.insert(
                    "deletionTimestamp".into(),
                    Value::String(object::now_seconds()),
                );
                meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
                meta.insert("generation".into(), Value::from(generation));
                meta.remove("resourceVersion");
            }
            if is_namespace {
                terminating["status"] = json!({"phase": "Terminating"});
            }
            if options.dry_run {
                return Ok((terminating, false));
            }
            let key = resource.key(namespace, name);
            match self
                .store
                .update(&key, encode(resource, &terminating)?, rev)
                .await
            {
                Ok(kv) => return Ok((decode(resource, &kv)?, false)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(&resource.group, &resource.plural, name))
    }
}

/// Why an update failed.
pub enum UpdateError {
    /// The object changed meanwhile (retry for server-driven writes; 409 for PUT).
    Conflict,
    /// Any other failure.
    Api(ApiError),
}

impl UpdateError {
    fn from_store(e: StoreError) -> UpdateError {
        match e {
            StoreError::Conflict { .. } | StoreError::NotFound { .. } => UpdateError::Conflict,
            other => UpdateError::Api(other.into()),
        }
    }
}

impl From<ApiError> for UpdateError {
    fn from(e: ApiError) -> Self {
        UpdateError::Api(e)
    }
}

/// `DeleteOptions` from the body and query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Background, Foreground or Orphan.
    pub propagation: Option<String>,
    /// Legacy orphan flag.
    pub orphan_dependents: Option<bool>,
    /// Precondition on uid.
    pub precondition_uid: Option<String>,
    /// Precondition on resourceVersion.
    pub precondition_rv: Option<String>,
    /// Persist nothing.
    pub dry_run: bool,
}

impl DeleteOptions {
    fn parse(query: &Query, body: &Bytes) -> ApiResult<DeleteOptions> {
        let mut options = DeleteOptions {
            propagation: query.get("propagationPolicy").map(str::to_string),
            orphan_dependents: query.get("orphanDependents").map(|v| v == "true"),
            dry_run: query.dry_run()?,
            ..DeleteOptions::default()
        };
        if !body.is_empty() {
            let body = parse_body(body)?;
            if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
                options.propagation = Some(p.to_string());
            }
            if let Some(o) = body.get("orphanDependents").and_then(Value::as_bool) {
                options.orphan_dependents = Some(o);
            }
            options.precondition_uid = body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            options.precondition_rv = body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            match body
                .get("dryRun")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            {
                None => {}
                Some(values) if values.is_empty() => {}
                Some(values) if values.iter().all(|v| *v == "All") => options.dry_run = true,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "dryRun: Unsupported value: only \"All\" is supported",
                    ));
                }
            }
        }
        match options.propagation.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => Ok(options),
            Some(other) => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
            ))),
        }
    }
}

fn check_type_meta(resource: &Resource, object: &Value) -> ApiResult<()> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if let Some(v) = api_version
        && !v.is_empty()
        && v != resource.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if let Some(k) = kind
        && !k.is_empty()
        && k != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}

/// Whether an update changes more than metadata (and, with the status subresource, status):
/// then `generation` goes up.
fn spec_changed(resource: &Resource, old: &Value, new: &Value) -> bool {
    let ignored = |key: &str| {
        matches!(key, "metadata" | "apiVersion" | "kind")
            || (resource.status_subresource && key == "status")
    };
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    let differs = |a: &Map<String, Value>, b: &Map<String, Value>| {
        a.iter().any(|(k, v)| !ignored(k) && b.get(k) != Some(v))
    };
    differs(old, new) || differs(new, old)
}

/// A name from `generateName`: the base (cut to 58 characters) and five random characters.
fn generated_name(base: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let cut: String = base.chars().take(58).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{cut}{suffix}")
}

/// Serve one resource request.
pub async fn serve(inner: &Inner, req: Request) -> ApiResult<Response> {
    let representation = request::negotiate(&req.headers)?;
    let sub = req.subresource.clone();
    match (req.method.clone(), req.name.is_some(), sub) {
        (Method::GET, false, None) if req.query.flag("watch") => {
            crate::watch::serve(inner, req, representation).await
        }
        (Method::GET, false, None) => list(inner, &req, representation).await,
        (Method::GET, true, sub) => get(inner, &req, sub.as_deref(), representation).await,
        (Method::POST, false, None) => post(inner, req).await,
        (Method::PUT, true, sub) => put(inner, req, sub).await,
        (Method::PATCH, true, sub) => patch(inner, req, sub).await,
        (Method::DELETE, true, None) => delete(inner, req).await,
        (Method::DELETE, false, None) => delete_collection(inner, req).await,
        (method, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

fn check_subresource(resource: &Resource, sub: Option<&str>) -> ApiResult<()> {
    match sub {
        None => Ok(()),
        Some("status") if resource.status_subresource => Ok(()),
        Some("finalize") if resource.builtin == Some(Builtin::Namespace) => Ok(()),
        Some(_) => Err(ApiError::no_route()),
    }
}

async fn get(
    inner: &Inner,
    req: &Request,
    sub: Option<&str>,
    representation: Representation,
) -> ApiResult<Response> {
    check_subresource(&req.resource, sub)?;
    let name = req.required_name()?;
    let (object, _) = inner
        .read(&req.resource, req.ns(), name)
        .await?
        .ok_or_else(|| ApiError::not_found(&req.resource.group, &req.resource.plural, name))?;
    Ok(match representation {
        Representation::Object => request::json(200, &object, &[]),
        Representation::Metadata => request::json(200, &partial_metadata(&object), &[]),
        Representation::Table => {
            let include = table::IncludeObject::parse(req.query.get("includeObject"));
            let rv = object::resource_version(&object)
                .unwrap_or_default()
                .to_string();
            request::json(
                200,
                &table::table(
                    &req.resource.columns,
                    &[object],
                    include,
                    &rv,
                    None,
                    true,
                    jiff::Timestamp::now(),
                ),
                &[],
            )
        }
    })
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// Selectors of a list or watch, checked against what the resource supports.
pub struct Selectors {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parse and check the selectors of a request.
    pub fn parse(resource: &Resource, query: &Query) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for field in fields.fields() {
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || resource.selectable_fields.iter().any(|f| f == field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether there is nothing to select by.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether an object (in the resource's view) matches.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        if !self.labels.matches(object::labels(object)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        // Event selectors use the stored (core/v1) names.
        let stored;
        let target = if resource.builtin == Some(Builtin::EventsV1) {
            stored = builtin::event_from_v1(object.clone());
            &stored
        } else {
            object
        };
        self.fields.matches(|field| {
            let field = match resource.builtin {
                Some(Builtin::EventsV1) => events_v1_field_label(field).unwrap_or(field),
                _ => field,
            };
            field_value(target, field)
        })
    }
}

/// The continue token of a list page.
fn continue_token(rev: Rev, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": last_key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn parse_continue(token: &str) -> ApiResult<(Rev, String)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rev = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = value
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    Ok((rev, start))
}

/// The revision a list reads at, per `resourceVersion` and `resourceVersionMatch`.
async fn list_revision(inner: &Inner, query: &Query, limit: Option<u64>) -> ApiResult<Option<Rev>> {
    let rv = query.get("resourceVersion").filter(|v| !v.is_empty());
    let matching = query.get("resourceVersionMatch").filter(|v| !v.is_empty());
    if matching.is_some() && rv.is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if matching.is_some() && query.get("continue").is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
        ));
    }
    let Some(rv) = rv else { return Ok(None) };
    let requested: Rev = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}")))?;
    match matching {
        Some("Exact") if requested == 0 => Err(ApiError::bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )),
        Some("Exact") => Ok(Some(requested)),
        None if requested != 0 && limit.is_some() => Ok(Some(requested)),
        None | Some("NotOlderThan") => {
            let current = inner.store.current_revision().await?;
            if requested > current {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {requested}, current: {current}"
                )));
            }
            Ok(None)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}"
        ))),
    }
}

/// Objects of a list request: (items in view form, list revision, continue token).
pub async fn list_objects(
    inner: &Inner,
    req: &Request,
    selectors: &Selectors,
) -> ApiResult<(Vec<Value>, Rev, Option<String>)> {
    let resource = &req.resource;
    let limit = req.query.number("limit")?.filter(|l| *l > 0);
    let continuation = req
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(parse_continue)
        .transpose()?;
    let (mut rev, mut start_after) = match &continuation {
        Some((rev, start)) => (Some(*rev), Some(start.clone())),
        None => (list_revision(inner, &req.query, limit).await?, None),
    };
    // metadata.name=x in one namespace is one key: read it directly.
    if let (Some(name), None, true) = (
        selectors.fields.required_value("metadata.name"),
        &continuation,
        rev.is_none(),
    ) {
        let namespace = selectors
            .fields
            .required_value("metadata.namespace")
            .or(req.ns());
        if !resource.namespaced || namespace.is_some() {
            let current = inner.store.current_revision().await?;
            let items = match inner.read(resource, namespace, name).await? {
                Some((object, _))
                    if selectors.matches(resource, &object)
                        && (req.ns().is_none() || object::namespace(&object) == req.ns()) =>
                {
                    vec![object]
                }
                _ => Vec::new(),
            };
            return Ok((items, current, None));
        }
    }
    let prefix = resource.prefix(req.ns());
    let mut items = Vec::new();
    let page_size = limit.map(|l| (l as usize).max(100)).unwrap_or(10_000);
    loop {
        let page = match inner
            .store
            .list(ListOptions {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: Some(page_size),
                rev,
            })
            .await
        {
            Ok(page) => page,
            Err(StoreError::Compacted { .. }) if continuation.is_some() => {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        rev = Some(page.rev);
        let count = page.items.len();
        for (i, kv) in page.items.iter().enumerate() {
            let object = decode(resource, kv)?;
            if selectors.matches(resource, &object) {
                items.push(object);
            }
            if let Some(limit) = limit
                && items.len() as u64 >= limit
                && (i + 1 < count || page.more)
            {
                return Ok((items, page.rev, Some(continue_token(page.rev, &kv.key))));
            }
        }
        if !page.more {
            return Ok((items, page.rev, None));
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

async fn list(inner: &Inner, req: &Request, representation: Representation) -> ApiResult<Response> {
    let resource = &req.resource;
    if req.query.flag("sendInitialEvents") {
        return Err(ApiError::bad_request(
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    let selectors = Selectors::parse(resource, &req.query)?;
    let (items, rev, token) = list_objects(inner, req, &selectors).await?;
    let rv = rev.to_string();
    let body = match representation {
        Representation::Table => {
            let include = table::IncludeObject::parse(req.query.get("includeObject"));
            table::table(
                &resource.columns,
                &items,
                include,
                &rv,
                token.as_deref(),
                true,
                jiff::Timestamp::now(),
            )
        }
        Representation::Metadata => {
            let items: Vec<Value> = items.iter().map(partial_metadata).collect();
            let mut meta = json!({"resourceVersion": rv});
            if let Some(t) = &token {
                meta["continue"] = Value::String(t.clone());
            }
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items})
        }
        Representation::Object => {
            let mut meta = json!({"resourceVersion": rv});
            if let Some(t) = &token {
                meta["continue"] = Value::String(t.clone());
            }
            json!({"kind": resource.list_kind, "apiVersion": resource.api_version(), "metadata": meta, "items": items})
        }
    };
    Ok(request::json(200, &body, &[]))
}

fn write_options(req: &Request, subresource: Option<String>) -> ApiResult<WriteOptions> {
    Ok(WriteOptions {
        dry_run: req.query.dry_run()?,
        field_validation: req.query.field_validation()?,
        manager: req.manager()?,
        subresource,
        managed_fields_done: false,
        admission: true,
    })
}

async fn post(inner: &Inner, req: Request) -> ApiResult<Response> {
    let opts = write_options(&req, None)?;
    let object = parse_object_body(&req)?;
    let written = inner.create(&req.resource, req.ns(), object, &opts).await?;
    Ok(request::json(201, &written.object, &written.warnings))
}

async fn put(inner: &Inner, req: Request, sub: Option<String>) -> ApiResult<Response> {
    check_subresource(&req.resource, sub.as_deref())?;
    let resource = req.resource.clone();
    let name = req.required_name()?.to_string();
    let opts = write_options(&req, sub)?;
    let new = parse_object_body(&req)?;
    let client_rv = object::resource_version(&new).map(str::to_string);
    if client_rv.is_none() && !resource.unconditional_update {
        let errors = [FieldError::new(
            "metadata.resourceVersion",
            ErrorType::Invalid,
            Some(&Value::String(String::new())),
            "must be specified for an update",
        )];
        return Err(ApiError::invalid(
            &resource.kind,
            &resource.group,
            &name,
            &errors,
        ));
    }
    for _ in 0..MAX_RETRIES {
        let (old, rev) = inner
            .read(&resource, req.ns(), &name)
            .await?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, &name))?;
        if let Some(rv) = &client_rv
            && *rv != rev.to_string()
        {
            return Err(ApiError::stale(&resource.group, &resource.plural, &name));
        }
        match inner.update(&resource, &old, rev, new.clone(), &opts).await {
            Ok(written) => return Ok(request::json(200, &written.object, &written.warnings)),
            Err(UpdateError::Conflict) if client_rv.is_none() => continue,
            Err(UpdateError::Conflict) => {
                return Err(ApiError::stale(&resource.group, &resource.plural, &name));
            }
            Err(UpdateError::Api(e)) => return Err(e),
        }
    }
    Err(ApiError::stale(&resource.group, &resource.plural, &name))
}

/// JSON Patch (RFC 6902) with the API server's leniency: `test` for null passes on a missing path.
fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be a list of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        if op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null)
            && let Some(path) = op.get("path").and_then(Value::as_str)
            && doc.pointer(path).is_none()
        {
            continue;
        }
        let one: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch operation: {e}")))?;
        json_patch::patch(&mut doc, &one).map_err(|e| ApiError::invalid_patch(&e.to_string()))?;
    }
    Ok(doc)
}

async fn patch(inner: &Inner, req: Request, sub: Option<String>) -> ApiResult<Response> {
    check_subresource(&req.resource, sub.as_deref())?;
    let resource = req.resource.clone();
    let name = req.required_name()?.to_string();
    let content_type = req.content_type();
    let force = req.query.get("force");
    if force.is_some() && content_type != "application/apply-patch+yaml" {
        return Err(ApiError::bad_request(
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let patch_body = parse_body(&req.body)?;
    if content_type == "application/apply-patch+yaml" {
        return crate::apply::serve(inner, &req, &name, sub, patch_body).await;
    }
    let opts = write_options(&req, sub)?;
    let precondition = object::resource_version(&patch_body).map(str::to_string);
    for _ in 0..MAX_RETRIES {
        let (old, rev) = inner
            .read(&resource, req.ns(), &name)
            .await?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, &name))?;
        if let Some(want) = &precondition
            && *want != rev.to_string()
        {
            return Err(ApiError::stale(&resource.group, &resource.plural, &name));
        }
        let new = match content_type.as_str() {
            "application/merge-patch+json" => {
                let mut doc = old.clone();
                json_patch::merge(&mut doc, &patch_body);
                doc
            }
            "application/json-patch+json" => json_patch(&old, &patch_body)?,
            "application/strategic-merge-patch+json" => {
                if resource.builtin.is_none() {
                    return Err(ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for {})",
                        crate::error::qualified(&resource.group, &resource.plural)
                    )));
                }
                strategic::apply_strategic(&old, &patch_body, &resource.kind)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
                )));
            }
        };
        let mut new = new;
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        match inner.update(&resource, &old, rev, new, &opts).await {
            Ok(written) => return Ok(request::json(200, &written.object, &written.warnings)),
            Err(UpdateError::Conflict) => continue,
            Err(UpdateError::Api(e)) => return Err(e),
        }
    }
    Err(ApiError::stale(&resource.group, &resource.plural, &name))
}

/// A `Status` for a completed delete.
pub fn delete_status(resource: &Resource, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object::name(object).unwrap_or_default(),
            "group": resource.group,
            "kind": resource.plural,
            "uid": object::uid(object).unwrap_or_default(),
        },
    })
}

async fn delete(inner: &Inner, req: Request) -> ApiResult<Response> {
    let resource = req.resource.clone();
    let name = req.required_name()?.to_string();
    if resource.builtin == Some(Builtin::Namespace)
        && matches!(name.as_str(), "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let options = DeleteOptions::parse(&req.query, &req.body)?;
    let (object, gone) = inner.delete(&resource, req.ns(), &name, &options).await?;
    if gone && resource.builtin != Some(Builtin::Namespace) {
        Ok(request::json(200, &delete_status(&resource, &object), &[]))
    } else {
        Ok(request::json(200, &object, &[]))
    }
}

async fn delete_collection(inner: &Inner, req: Request) -> ApiResult<Response> {
    let resource = req.resource.clone();
    let options = DeleteOptions::parse(&req.query, &req.body)?;
    let selectors = Selectors::parse(&resource, &req.query)?;
    let (items, rev, _) = list_objects(inner, &req, &selectors).await?;
    let mut deleted = Vec::new();
    for item in items {
        let name = object::name(&item).unwrap_or_default().to_string();
        match inner
            .delete(&resource, object::namespace(&item), &name, &options)
            .await
        {
            Ok((object, _)) => deleted.push(object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": resource.list_kind, "apiVersion": resource.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
    Ok(request::json(200, &body, &[]))
}
