//! The resource endpoints: get, list, create, update (PUT), patch, delete, deletecollection.
//! The handlers live here; the rules they follow live beside them: the storage codec
//! (`codec`), what a written object must satisfy (`validate`), the write path (`write`), the
//! attempts of a read-modify-write (`attempts`), namespace lifecycle (`lifecycle`), deletion
//! (`delete`), lists (`list`, and `streamed` for their responses) and the labels the store
//! indexes for them (`label_index`), and the JSON of stored objects served as they are
//! (`view_json`).

mod attempts;
mod codec;
mod delete;
pub mod label_index;
mod lifecycle;
mod list;
#[cfg(test)]
mod list_tests;
mod streamed;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) mod validate;
mod view_json;
mod write;

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use devplane_schema::{ErrorType, FieldError};
use serde_json::{Value, json};

use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::Resource;
use crate::request::{self, Query, Representation};
use crate::server::Inner;
use crate::{ssa, strategic, table};

pub use attempts::{Attempts, Outcome};
pub use codec::{convert, decode, partial_metadata};
use codec::{parse_body, parse_object_body};
pub use delete::DeleteOptions;
pub use lifecycle::ActiveNamespaces;
pub use list::{Listed, Selectors, list_each, list_objects};
pub use view_json::{Writers, view_json};
pub use write::{UpdateError, WriteOptions, Written};

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
    /// Who asks (None without authentication).
    pub caller: Option<crate::authz::Caller>,
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

/// Serve one resource request.
pub async fn serve(inner: &Arc<Inner>, req: Request) -> ApiResult<Response> {
    let representation = request::negotiate(&req.headers)?;
    let sub = req.subresource.clone();
    match (req.method.clone(), req.name.is_some(), sub) {
        (Method::GET, false, None) if req.query.flag("watch") => {
            crate::watch::serve(inner, req, representation).await
        }
        (Method::GET, false, None) => list(inner, req, representation).await,
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
    let kv = inner
        .read_stored(&req.resource, req.ns(), name)
        .await?
        .ok_or_else(|| ApiError::not_found(&req.resource.group, &req.resource.plural, name))?;
    Ok(match representation {
        // Served as stored: no value is built.
        Representation::Object => {
            let text = view_json(&req.resource, &kv, Writers::of(&*inner.store))?;
            request::json_bytes(200, text)
        }
        Representation::Metadata => {
            request::json(200, &partial_metadata(&decode(&req.resource, &kv)?), &[])
        }
        Representation::Table => {
            let object = decode(&req.resource, &kv)?;
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

async fn list(
    inner: &Arc<Inner>,
    req: Request,
    representation: Representation,
) -> ApiResult<Response> {
    if req.query.flag("sendInitialEvents") {
        return Err(ApiError::bad_request(
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    let selectors = Selectors::parse(&req.resource, &req.query)?;
    if representation == Representation::Object {
        return streamed::list_streamed(inner, req, selectors).await;
    }
    let (items, rev, token) = list_objects(inner, &req, &selectors).await?;
    let resource = &req.resource;
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
        caller: req.caller.clone(),
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
    let stale = || ApiError::stale(&resource.group, &resource.plural, &name);
    let mut attempts = Attempts::new(MAX_RETRIES);
    while let Some(current) = attempts.next(inner, &resource, req.ns(), &name).await? {
        let outcome = match current {
            None => Outcome::Decided(Err(ApiError::not_found(
                &resource.group,
                &resource.plural,
                &name,
            ))),
            Some((_, rev)) if client_rv.as_ref().is_some_and(|rv| *rv != rev.to_string()) => {
                Outcome::Decided(Err(stale()))
            }
            Some((old, rev)) => {
                match inner.update(&resource, old, rev, new.clone(), &opts).await {
                    // The client named a revision: a lost race is its conflict.
                    Err(UpdateError::Conflict(_)) if client_rv.is_some() => {
                        Outcome::Decided(Err(stale()))
                    }
                    result => result.into(),
                }
            }
        };
        if let Some(done) = attempts.settle(outcome) {
            return done.map(|written| request::json(200, &written.object, &written.warnings));
        }
    }
    Err(stale())
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
    let mut attempts = Attempts::new(MAX_RETRIES);
    while let Some(current) = attempts.next(inner, &resource, req.ns(), &name).await? {
        let outcome = match current {
            None => Outcome::Decided(Err(ApiError::not_found(
                &resource.group,
                &resource.plural,
                &name,
            ))),
            Some((old, rev)) => {
                patch_attempt(inner, &req, &opts, &patch_body, &precondition, old, rev).await
            }
        };
        if let Some(done) = attempts.settle(outcome) {
            return done.map(|written| request::json(200, &written.object, &written.warnings));
        }
    }
    Err(ApiError::stale(&resource.group, &resource.plural, &name))
}

/// One attempt of a (non-apply) patch on the object `old` at revision `rev`.
async fn patch_attempt(
    inner: &Inner,
    req: &Request,
    opts: &WriteOptions,
    patch_body: &Value,
    precondition: &Option<String>,
    old: Value,
    rev: devplane_store::Rev,
) -> Outcome<Written> {
    match patched(req, patch_body, precondition, &old, rev) {
        Ok(new) => inner
            .update(&req.resource, old, rev, new, opts)
            .await
            .into(),
        Err(e) => Outcome::Decided(Err(e)),
    }
}

/// The object a (non-apply) patch makes of `old` at revision `rev`.
fn patched(
    req: &Request,
    patch_body: &Value,
    precondition: &Option<String>,
    old: &Value,
    rev: devplane_store::Rev,
) -> ApiResult<Value> {
    let resource = &req.resource;
    let name = req.name.as_deref().unwrap_or_default();
    if let Some(want) = precondition
        && *want != rev.to_string()
    {
        return Err(ApiError::stale(&resource.group, &resource.plural, name));
    }
    let mut new = match req.content_type().as_str() {
        "application/merge-patch+json" => {
            let mut doc = old.clone();
            json_patch::merge(&mut doc, patch_body);
            doc
        }
        "application/json-patch+json" => json_patch(old, patch_body)?,
        "application/strategic-merge-patch+json" => {
            if resource.builtin.is_none() {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for {})",
                    crate::error::qualified(&resource.group, &resource.plural)
                )));
            }
            strategic::apply_strategic(old, patch_body, &resource.kind)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
            )));
        }
    };
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    Ok(new)
}

/// A `Status` for a completed delete.
fn delete_status(resource: &Resource, object: &Value) -> Value {
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
    let options = DeleteOptions {
        admission: true,
        caller: req.caller.clone(),
        ..DeleteOptions::parse(&req.query, &req.body)?
    };
    let deleted = inner.delete(&resource, req.ns(), &name, &options).await?;
    let body = if deleted.gone && resource.builtin != Some(Builtin::Namespace) {
        delete_status(&resource, &deleted.object)
    } else {
        deleted.object
    };
    Ok(request::json(200, &body, &deleted.warnings))
}

async fn delete_collection(inner: &Inner, req: Request) -> ApiResult<Response> {
    let resource = req.resource.clone();
    // As on a cluster, namespaces are deleted one at a time (and never the system ones).
    if resource.builtin == Some(Builtin::Namespace) {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let options = DeleteOptions {
        admission: true,
        caller: req.caller.clone(),
        ..DeleteOptions::parse(&req.query, &req.body)?
    };
    let selectors = Selectors::parse(&resource, &req.query)?;
    let (items, rev, _) = list_objects(inner, &req, &selectors).await?;
    let mut deleted = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for item in items {
        let name = object::name(&item).unwrap_or_default().to_string();
        match inner
            .delete(&resource, object::namespace(&item), &name, &options)
            .await
        {
            Ok(one) => {
                deleted.push(one.object);
                crate::error::merge_warnings(&mut warnings, one.warnings);
            }
            Err(e) if e.code == 404 => {}
            // The warnings of the objects already deleted go with the refusal.
            Err(e) => return Err(e.after_warnings(&warnings)),
        }
    }
    let body = json!({"kind": resource.list_kind, "apiVersion": resource.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
    Ok(request::json(200, &body, &warnings))
}
