//! Deletion: `DeleteOptions`, preconditions, the propagation policy's finalizers, and the
//! terminating state an object with finalizers enters.

use bytes::Bytes;
use devplane_store::StoreError;
use serde_json::{Value, json};

use super::codec::{decode, encode, parse_body};
use super::{FOREGROUND_FINALIZER, MAX_RETRIES, ORPHAN_FINALIZER};
use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::registry::Resource;
use crate::request::Query;
use crate::server::Inner;

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
    /// The grace period asked for (passed on to admission webhooks; objects here have no
    /// graceful termination, they go at once or wait for their finalizers).
    pub grace_period: Option<i64>,
    /// Whether admission webhooks see the delete: an API request's, not the server's own.
    pub admission: bool,
    /// Who asks.
    pub caller: Option<crate::authz::Caller>,
}

impl DeleteOptions {
    pub(super) fn parse(query: &Query, body: &Bytes) -> ApiResult<DeleteOptions> {
        let mut options = DeleteOptions {
            propagation: query.get("propagationPolicy").map(str::to_string),
            orphan_dependents: query.get("orphanDependents").map(|v| v == "true"),
            grace_period: query
                .get("gracePeriodSeconds")
                .map(|v| {
                    v.parse().map_err(|_| {
                        ApiError::bad_request(format!("gracePeriodSeconds: Invalid value: {v:?}"))
                    })
                })
                .transpose()?,
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
            if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
                options.grace_period = Some(g);
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

    /// The options as a `meta.k8s.io/v1` DeleteOptions object (an admission review's
    /// `options`).
    fn as_json(&self) -> Value {
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
        if let Some(policy) = &self.propagation {
            options["propagationPolicy"] = json!(policy);
        }
        if let Some(orphan) = self.orphan_dependents {
            options["orphanDependents"] = json!(orphan);
        }
        if let Some(grace) = self.grace_period {
            options["gracePeriodSeconds"] = json!(grace);
        }
        let mut preconditions = serde_json::Map::new();
        if let Some(uid) = &self.precondition_uid {
            preconditions.insert("uid".into(), json!(uid));
        }
        if let Some(rv) = &self.precondition_rv {
            preconditions.insert("resourceVersion".into(), json!(rv));
        }
        if !preconditions.is_empty() {
            options["preconditions"] = Value::Object(preconditions);
        }
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        options
    }
}

/// What a delete did.
#[derive(Debug)]
pub struct Deleted {
    /// The object when it stays (terminating), or its last state when it is gone.
    pub object: Value,
    /// Whether it is gone.
    pub gone: bool,
    /// The admission webhooks' warnings, for the client.
    pub warnings: Vec<String>,
}

impl Inner {
    /// Delete an object, honouring finalizers and the propagation policy.
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let mut warnings = Vec::new();
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
            if options.admission && !self.webhooks().is_empty() {
                let target = crate::webhooks::Target {
                    resource,
                    subresource: None,
                    namespace,
                    dry_run: options.dry_run,
                    caller: options.caller.as_ref(),
                };
                let delete_options = options.as_json();
                // A retry asks the webhooks again: their warnings are those of the last ask.
                warnings = self
                    .run_webhooks(
                        "DELETE",
                        &target,
                        (None, Some(&current), Some(&delete_options)),
                    )
                    .await?;
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
                    return Ok(Deleted {
                        object: current,
                        gone: true,
                        warnings,
                    });
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
                        return Ok(Deleted {
                            object: last,
                            gone: true,
                            warnings,
                        });
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(ApiError::not_found(&resource.group, &resource.plural, name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if object::is_terminating(&current) {
                return Ok(Deleted {
                    object: current,
                    gone: false,
                    warnings,
                });
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
                return Ok(Deleted {
                    object: terminating,
                    gone: false,
                    warnings,
                });
            }
            let key = resource.key(namespace, name);
            match self
                .store
                .update(&key, encode(resource, &terminating)?, rev)
                .await
            {
                Ok(kv) => {
                    return Ok(Deleted {
                        object: decode(resource, &kv)?,
                        gone: false,
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(&resource.group, &resource.plural, name))
    }
}
