//! Server-side apply (`application/apply-patch+yaml`) on top of the field manager in `ssa`.

use axum::response::Response;
use devplane_schema::{ErrorType, FieldError};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::request;
use crate::rest::{Request, UpdateError, WriteOptions};
use crate::server::Inner;
use crate::ssa;

/// Most attempts before a lost race becomes a 409.
const MAX_RETRIES: usize = 16;

/// Serve an apply patch on `name` (main resource or `status`).
pub async fn serve(
    inner: &Inner,
    req: &Request,
    name: &str,
    subresource: Option<String>,
    config: Value,
) -> ApiResult<Response> {
    let resource = req.resource.clone();
    let manager = match req.query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
        Some(m) => m.to_string(),
        None => {
            let errors = [FieldError::new(
                "fieldManager",
                ErrorType::Required,
                None,
                "is required for apply patch",
            )];
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                &errors,
            ));
        }
    };
    let force = req.query.flag("force");
    if !config.is_object() {
        return Err(ApiError::bad_request("an apply patch must be an object"));
    }
    if object::meta(&config).is_some_and(|m| m.contains_key("managedFields")) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    if object::name(&config).is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object::name(&config).unwrap_or_default()
        )));
    }
    let precondition = object::resource_version(&config).map(str::to_string);
    let opts = WriteOptions {
        dry_run: req.query.dry_run()?,
        field_validation: req.query.field_validation()?,
        manager: manager.clone(),
        subresource: subresource.clone(),
        managed_fields_done: true,
        admission: true,
    };
    // What this apply speaks for: only status on /status; no status on the main resource
    // when status is a subresource.
    let mut config = config;
    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    match subresource.as_deref() {
        Some("status") => {
            let status = config.get("status").cloned();
            let mut only_status = json!({
                "apiVersion": config.get("apiVersion").cloned().unwrap_or(Value::Null),
                "kind": config.get("kind").cloned().unwrap_or(Value::Null),
                "metadata": {"name": name},
            });
            if let Some(s) = status {
                only_status["status"] = s;
            }
            config = only_status;
        }
        None if resource.status_subresource && resource.builtin.is_none() => {
            if let Some(map) = config.as_object_mut() {
                map.remove("status");
            }
        }
        _ => {}
    }
    let now = object::now_seconds();
    let api_version = resource.api_version();
    for _ in 0..MAX_RETRIES {
        let current = inner
            .read(&resource, req.namespace.as_deref(), name)
            .await?;
        let Some((old, rev)) = current else {
            if subresource.is_some() {
                return Err(ApiError::not_found(&resource.group, &resource.plural, name));
            }
            if precondition.is_some() {
                return Err(ApiError::not_found(&resource.group, &resource.plural, name));
            }
            let mut merged = ssa::apply(
                None,
                &config,
                &manager,
                force,
                resource.type_info.as_deref(),
                None,
                &api_version,
                &now,
            )
            .map_err(|e| apply_error(&resource, name, e))?;
            meta_mut(&mut merged).insert("name".into(), Value::String(name.to_string()));
            let written = inner
                .create(&resource, req.namespace.as_deref(), merged, &opts)
                .await;
            match written {
                Ok(w) => return Ok(request::json(201, &w.object, &w.warnings)),
                // Created by someone else meanwhile: apply onto it.
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(want) = &precondition
            && *want != rev.to_string()
        {
            return Err(ApiError::stale(&resource.group, &resource.plural, name));
        }
        let merged = ssa::apply(
            Some(&old),
            &config,
            &manager,
            force,
            resource.type_info.as_deref(),
            subresource.as_deref(),
            &api_version,
            &now,
        )
        .map_err(|e| apply_error(&resource, name, e))?;
        match inner.update(&resource, &old, rev, merged, &opts).await {
            Ok(w) => return Ok(request::json(200, &w.object, &w.warnings)),
            Err(UpdateError::Conflict) => continue,
            Err(UpdateError::Api(e)) => return Err(e),
        }
    }
    Err(ApiError::stale(&resource.group, &resource.plural, name))
}

fn apply_error(
    resource: &crate::registry::Resource,
    name: &str,
    error: ssa::ApplyError,
) -> ApiError {
    match &error {
        ssa::ApplyError::Conflicts(conflicts) => {
            let causes = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": c.cause_message(), "field": c.field}))
                .collect();
            ApiError::apply_conflicts(
                &resource.group,
                &resource.plural,
                name,
                error.to_string(),
                causes,
            )
        }
        other => ApiError::bad_request(other.to_string()),
    }
}
