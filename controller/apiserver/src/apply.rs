//! Server-side apply (`application/apply-patch+yaml`) on top of the field manager in `ssa`.

use axum::response::Response;
use devplane_schema::{ErrorType, FieldError};
use devplane_store::Rev;
use serde_json::{Value, json};

use crate::authz::Attributes;
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::request;
use crate::rest::{Attempts, Outcome, Request, WriteOptions, Written};
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
        caller: req.caller.clone(),
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
    let apply = Apply {
        req,
        name,
        subresource: subresource.as_deref(),
        config: &config,
        manager: &manager,
        force,
        precondition: precondition.as_deref(),
        opts: &opts,
        now: object::now_seconds(),
    };
    let mut attempts = Attempts::new(MAX_RETRIES);
    while let Some(current) = attempts
        .next(inner, &resource, req.namespace.as_deref(), name)
        .await?
    {
        let outcome = match current {
            None => apply.create(inner).await,
            Some((old, rev)) => apply.update(inner, old, rev).await,
        };
        if let Some(done) = attempts.settle(outcome) {
            return done.map(|(status, w)| request::json(status, &w.object, &w.warnings));
        }
    }
    Err(ApiError::stale(&resource.group, &resource.plural, name))
}

/// One apply request, ready for its attempts.
struct Apply<'a> {
    req: &'a Request,
    name: &'a str,
    subresource: Option<&'a str>,
    config: &'a Value,
    manager: &'a str,
    force: bool,
    precondition: Option<&'a str>,
    opts: &'a WriteOptions,
    now: String,
}

impl Apply<'_> {
    /// The attempt when the object does not exist: create it from the configuration.
    async fn create(&self, inner: &Inner) -> Outcome<(u16, Written)> {
        let resource = &self.req.resource;
        if self.subresource.is_some() || self.precondition.is_some() {
            let missing = ApiError::not_found(&resource.group, &resource.plural, self.name);
            return Outcome::Decided(Err(missing));
        }
        // A patch that creates needs the create verb too, as on a cluster (the request was
        // authorized as a patch).
        if let Some(caller) = &self.req.caller {
            let attrs = Attributes {
                verb: "create".into(),
                group: resource.group.clone(),
                resource: resource.plural.clone(),
                subresource: None,
                namespace: self.req.namespace.clone(),
                name: Some(self.name.to_string()),
            };
            if !inner.rbac().allows(caller, &attrs) {
                return Outcome::Decided(Err(ApiError::forbidden(attrs.forbidden_message(caller))));
            }
        }
        let merged = ssa::apply(
            None,
            self.config,
            self.manager,
            self.force,
            resource.type_info.as_deref(),
            None,
            &resource.api_version(),
            &self.now,
        );
        let mut merged = match merged {
            Ok(merged) => merged,
            Err(e) => return Outcome::Decided(Err(apply_error(resource, self.name, e))),
        };
        meta_mut(&mut merged).insert("name".into(), Value::String(self.name.to_string()));
        let written = inner
            .create(resource, self.req.namespace.as_deref(), merged, self.opts)
            .await;
        match written {
            Ok(w) if w.persisted => Outcome::Committed((201, w)),
            Ok(w) => Outcome::Decided(Ok((201, w))),
            // Created by someone else meanwhile: apply onto it.
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => Outcome::Raced,
            Err(e) => Outcome::Decided(Err(e)),
        }
    }

    /// The attempt on the object `old` at revision `rev`.
    async fn update(&self, inner: &Inner, old: Value, rev: Rev) -> Outcome<(u16, Written)> {
        let resource = &self.req.resource;
        if self
            .precondition
            .is_some_and(|want| want != rev.to_string())
        {
            let stale = ApiError::stale(&resource.group, &resource.plural, self.name);
            return Outcome::Decided(Err(stale));
        }
        let merged = ssa::apply(
            Some(&old),
            self.config,
            self.manager,
            self.force,
            resource.type_info.as_deref(),
            self.subresource,
            &resource.api_version(),
            &self.now,
        );
        match merged {
            Ok(merged) => Outcome::from(inner.update(resource, old, rev, merged, self.opts).await)
                .map(|w| (200, w)),
            Err(e) => Outcome::Decided(Err(apply_error(resource, self.name, e))),
        }
    }
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
