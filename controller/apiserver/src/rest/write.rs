//! The write path: create, update and read-modify-write, with the rules every write
//! follows (generation, status subresource, finalizers, dry run, managed fields, no-op writes).

use devplane_schema::{ErrorType, FieldError};
use devplane_store::{Guard, KeyValue, Rev, StoreError};
use serde_json::{Map, Value, json};

use super::attempts::{Attempts, Outcome};
use super::codec::encode;
use super::validate::{admit, check_type_meta};
use super::{CRD_CLEANUP_FINALIZER, MAX_RETRIES};
use crate::builtin::{self, Builtin};
use crate::error::{ApiError, ApiResult, merge_warnings};
use crate::object::{self, meta, meta_mut};
use crate::registry::Resource;
use crate::request::FieldValidation;
use crate::server::Inner;
use crate::ssa;

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
    /// Who writes, for the checks that depend on it (RBAC's rule against escalation); None
    /// for the server's own writes and without authentication.
    pub caller: Option<crate::authz::Caller>,
}

impl WriteOptions {
    /// The options as an admission review's `options`: a `meta.k8s.io/v1` CreateOptions or
    /// UpdateOptions (`kind`).
    fn as_json(&self, kind: &str) -> Value {
        let mut options = serde_json::json!({
            "kind": kind,
            "apiVersion": "meta.k8s.io/v1",
            "fieldManager": self.manager,
            "fieldValidation": match self.field_validation {
                FieldValidation::Strict => "Strict",
                FieldValidation::Warn => "Warn",
                FieldValidation::Ignore => "Ignore",
            },
        });
        if self.dry_run {
            options["dryRun"] = serde_json::json!(["All"]);
        }
        options
    }

    /// What a write of `resource` in `namespace` under these options is, for admission.
    fn target<'a>(
        &'a self,
        resource: &'a Resource,
        namespace: Option<&'a str>,
    ) -> crate::webhooks::Target<'a> {
        crate::webhooks::Target {
            resource,
            subresource: self.subresource.as_deref(),
            namespace,
            dry_run: self.dry_run,
            caller: self.caller.as_ref(),
        }
    }

    /// Options of an internal write (garbage collector, namespace controller).
    pub fn internal(manager: &str) -> WriteOptions {
        WriteOptions {
            dry_run: false,
            field_validation: FieldValidation::Ignore,
            manager: manager.into(),
            subresource: None,
            managed_fields_done: false,
            admission: false,
            caller: None,
        }
    }
}

/// A mutating webhook changed an object's name, namespace or uid, which no write may.
fn renamed_by_webhook() -> ApiError {
    ApiError::bad_request(
        "a mutating admission webhook changed the object's metadata.name, metadata.namespace or metadata.uid, which may not change",
    )
}

/// The outcome of a write.
pub struct Written {
    /// The object as stored (with its resourceVersion).
    pub object: Value,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// Whether the object was created.
    pub created: bool,
    /// Whether the store took a write (not for a no-op or a dry run).
    pub persisted: bool,
}

/// Refuses a write whose object has `errors` (422 Invalid, naming the object).
fn refuse_invalid(resource: &Resource, name: Option<&str>, errors: &[FieldError]) -> ApiResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &resource.kind,
        &resource.group,
        name.unwrap_or_default(),
        errors,
    ))
}

impl Inner {
    /// Create an object (POST, or apply to a missing name).
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        object: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let mut warned = Vec::new();
        match self
            .create_warned(resource, namespace, object, opts, &mut warned)
            .await
        {
            Ok(written) => Ok(Written {
                warnings: warned,
                ..written
            }),
            Err(e) => Err(e.after_warnings(&warned)),
        }
    }

    /// [`Inner::create`], adding the warnings for the client to `warned` as they are given
    /// (a refusal after some were given carries them too, as kube-apiserver's does).
    async fn create_warned(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        opts: &WriteOptions,
        warned: &mut Vec<String>,
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
        // The object as the request sent it, if mutating webhooks changed it.
        let mut requested = None;
        if opts.admission && !self.webhooks().none_mutating() {
            // Webhooks see the object in its namespace, and may not move or rename it.
            if let (true, Some(ns)) = (resource.namespaced, namespace) {
                meta_mut(&mut object).insert("namespace".into(), Value::String(ns.into()));
            }
            let target = opts.target(resource, namespace);
            let options = opts.as_json("CreateOptions");
            let before = object.clone();
            let given = self
                .run_mutating_webhooks("CREATE", &target, &mut object, (None, Some(&options)))
                .await?;
            merge_warnings(warned, given);
            check_type_meta(resource, &object)?;
            // A name may be given to an object that asked for a generated one.
            let named = object::name(&before).is_none()
                && object::meta_str(&before, "generateName").is_some();
            if (object::name(&object) != object::name(&before) && !named)
                || object::namespace(&object) != object::namespace(&before)
            {
                return Err(renamed_by_webhook());
            }
            requested = (object != before).then_some(before);
        }
        let tracking = Tracking::of(requested.as_ref(), &object);
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
                refuse_invalid(resource, object::name(&object), &errors)?;
                let status = builtin::crd_status(&object, &object::now_seconds());
                object["status"] = status;
                with_cleanup_finalizer(&mut object);
            }
            Some(b) if b.is_webhook_configuration() => {
                let errors = crate::webhooks::check_match_conditions(&object);
                refuse_invalid(resource, object::name(&object), &errors)?;
            }
            _ => {}
        }
        let generate_name = object::meta_str(&object, "generateName").map(str::to_string);
        if object::name(&object).is_none()
            && let Some(base) = &generate_name
        {
            meta_mut(&mut object).insert("name".into(), Value::String(generated_name(base)));
        }
        let given = admit(
            resource,
            &mut object,
            (None, requested.as_ref()),
            opts.field_validation,
        )?;
        merge_warnings(warned, given);
        if let Some(caller) = &opts.caller {
            crate::escalation::check(&self.rbac(), caller, resource, namespace, &object)?;
        }
        let guard = match (resource.namespaced, namespace) {
            (true, Some(ns)) => self.namespace_guard(ns).await?,
            _ => None,
        };
        if opts.admission && !self.webhooks().is_empty() {
            let target = opts.target(resource, namespace);
            let options = opts.as_json("CreateOptions");
            let given = self
                .run_webhooks("CREATE", &target, (Some(&object), None, Some(&options)))
                .await?;
            merge_warnings(warned, given);
        }
        if !opts.managed_fields_done {
            tracking.update(resource, None, &mut object, opts);
        }
        object::drop_empty_metadata(&mut object);
        if opts.dry_run {
            meta_mut(&mut object).insert("resourceVersion".into(), Value::String(String::new()));
            return Ok(Written {
                object,
                warnings: Vec::new(),
                created: true,
                persisted: false,
            });
        }
        let object = self
            .store_new(resource, namespace, object, generate_name, guard)
            .await?;
        Ok(Written {
            object,
            warnings: Vec::new(),
            created: true,
            persisted: true,
        })
    }

    /// Store a new object, guarded by its namespace's state when given. A `generateName`
    /// collision gets a new name, a changed namespace is checked again; a few times each, as
    /// the API server does.
    async fn store_new(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        mut object: Value,
        generate_name: Option<String>,
        mut guard: Option<Guard>,
    ) -> ApiResult<Value> {
        for attempt in 0..8 {
            let name = object::name(&object).unwrap_or_default().to_string();
            let key = resource.key(namespace, &name);
            let value = encode(resource, &object)?;
            let stored = match &guard {
                Some(guard) => self.store.create_guarded(&key, value, guard).await,
                None => self.store.create(&key, value).await,
            };
            match stored {
                Ok(kv) => {
                    // What was stored is this object; only the revision is new.
                    meta_mut(&mut object).insert(
                        "resourceVersion".into(),
                        Value::String(kv.mod_rev.to_string()),
                    );
                    return Ok(object);
                }
                // The namespace changed since it was checked (only a guard can conflict).
                Err(StoreError::Conflict { current, .. }) if guard.is_some() => {
                    let ns = namespace.unwrap_or_default();
                    guard = Some(self.namespace_changed(ns, current)?);
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
        old: Value,
        old_rev: Rev,
        new: Value,
        opts: &WriteOptions,
    ) -> Result<Written, UpdateError> {
        let mut warned = Vec::new();
        match self
            .update_warned(resource, (old, old_rev), new, opts, &mut warned)
            .await
        {
            Ok(written) => Ok(Written {
                warnings: warned,
                ..written
            }),
            Err(UpdateError::Api(e)) => Err(UpdateError::Api(e.after_warnings(&warned))),
            // A lost race is tried again, with the webhooks asked again.
            Err(conflict) => Err(conflict),
        }
    }

    /// [`Inner::update`], adding the warnings for the client to `warned` as they are given.
    async fn update_warned(
        &self,
        resource: &Resource,
        (mut old, old_rev): (Value, Rev),
        mut new: Value,
        opts: &WriteOptions,
        warned: &mut Vec<String>,
    ) -> Result<Written, UpdateError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object").into());
        }
        check_type_meta(resource, &new)?;
        // `old` is compared and validated against without its resourceVersion (`new` has
        // none); webhooks see it as stored, and a no-op answers with it.
        let old_version = old
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.remove("resourceVersion"));
        let as_stored = |old: &Value| {
            let mut stored = old.clone();
            if let Some(version) = &old_version {
                meta_mut(&mut stored).insert("resourceVersion".into(), version.clone());
            }
            stored
        };
        let old = &old;
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
        // The object as the request sent it, if mutating webhooks changed it.
        let mut requested = None;
        if opts.admission && !self.webhooks().none_mutating() {
            let target = opts.target(resource, object::namespace(old));
            let options = opts.as_json("UpdateOptions");
            // Webhooks see the object in its namespace, as on a create.
            if let Some(ns) = object::namespace(old)
                && object::namespace(&new).is_none()
            {
                meta_mut(&mut new).insert("namespace".into(), Value::String(ns.into()));
            }
            let before = new.clone();
            let stored = as_stored(old);
            let given = self
                .run_mutating_webhooks("UPDATE", &target, &mut new, (Some(&stored), Some(&options)))
                .await?;
            merge_warnings(warned, given);
            check_type_meta(resource, &new)?;
            // What the object is stays as stored (unset is taken from it below).
            let kept = |field: fn(&Value) -> Option<&str>| {
                field(&new).is_none_or(|v| Some(v) == field(old))
            };
            if !kept(object::name) || !kept(object::namespace) || !kept(object::uid) {
                return Err(renamed_by_webhook().into());
            }
            requested = (new != before).then_some(before);
        }
        let tracking = Tracking::of(requested.as_ref(), &new);
        // The subresource decides which part of the request counts.
        match opts.subresource.as_deref() {
            Some("status") => {
                let managed = meta(&new).and_then(|m| m.get("managedFields")).cloned();
                new = with_status_of(old.clone(), &new);
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
                    new = with_status_of(new, old);
                }
            }
        }
        {
            let no_meta = Map::new();
            let old_meta = meta(old).unwrap_or(&no_meta);
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
                refuse_invalid(resource, Some(&name), &builtin::validate_crd(&mut new))?;
                if opts.subresource.is_none() {
                    let status = builtin::crd_status(&new, &object::now_seconds());
                    new["status"] = status;
                }
            }
            Some(b) if b.is_webhook_configuration() => {
                let errors = crate::webhooks::check_match_conditions(&new);
                refuse_invalid(resource, Some(&name), &errors)?;
            }
            _ => {}
        }
        if let Some(b) = resource.builtin {
            refuse_invalid(resource, Some(&name), &builtin::immutability(b, old, &new))?;
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
        let given = admit(
            resource,
            &mut new,
            (Some(old), requested.as_ref()),
            opts.field_validation,
        )?;
        merge_warnings(warned, given);
        if spec_changed(resource, old, &new) {
            let generation = object::generation(old) + 1;
            meta_mut(&mut new).insert("generation".into(), Value::from(generation));
        }
        if !opts.managed_fields_done {
            tracking.update(resource, Some(old), &mut new, opts);
        }
        object::drop_empty_metadata(&mut new);
        // Both sides lack resourceVersion here, so equal values mean equal stored bytes.
        if new == *old {
            // A no-op write: no new revision, no event.
            return Ok(Written {
                object: as_stored(old),
                warnings: Vec::new(),
                created: false,
                persisted: false,
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
        if let Some(caller) = &opts.caller
            && crate::escalation::grants_change(old, &new)
        {
            let namespace = object::namespace(old);
            crate::escalation::check(&self.rbac(), caller, resource, namespace, &new)?;
        }
        if opts.admission && !self.webhooks().is_empty() {
            let target = opts.target(resource, object::namespace(old));
            let options = opts.as_json("UpdateOptions");
            let stored = as_stored(old);
            let given = self
                .run_webhooks(
                    "UPDATE",
                    &target,
                    (Some(&new), Some(&stored), Some(&options)),
                )
                .await?;
            merge_warnings(warned, given);
        }
        let new_bytes = encode(resource, &new)?;
        if opts.dry_run {
            let mut shown = new;
            meta_mut(&mut shown)
                .insert("resourceVersion".into(), Value::String(old_rev.to_string()));
            return Ok(Written {
                object: shown,
                warnings: Vec::new(),
                created: false,
                persisted: false,
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
                warnings: Vec::new(),
                created: false,
                persisted: true,
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
            warnings: Vec::new(),
            created: false,
            persisted: true,
        })
    }

    /// Read-modify-write with retries on lost races: `change` turns the current object into
    /// the new one (or None for nothing to do). `Ok(None)`: there is no such object.
    pub async fn modify(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        mut change: impl FnMut(&Value) -> ApiResult<Option<Value>>,
    ) -> ApiResult<Option<Written>> {
        let mut attempts = Attempts::new(MAX_RETRIES);
        while let Some(current) = attempts.next(self, resource, namespace, name).await? {
            let Some((current, rev)) = current else {
                if let Some(done) = attempts.settle(Outcome::Decided(Ok(None))) {
                    return done;
                }
                continue;
            };
            let outcome = match change(&current) {
                Err(e) => Outcome::Decided(Err(e)),
                Ok(None) => Outcome::Decided(Ok(Some(Written {
                    object: current,
                    warnings: Vec::new(),
                    created: false,
                    persisted: false,
                }))),
                Ok(Some(new)) => {
                    Outcome::from(self.update(resource, current, rev, new, opts).await).map(Some)
                }
            };
            if let Some(done) = attempts.settle(outcome) {
                return done;
            }
        }
        Err(ApiError::stale(&resource.group, &resource.plural, name))
    }
}

/// Why an update failed.
pub enum UpdateError {
    /// The object changed meanwhile (retry for server-driven writes; 409 for PUT). Carries
    /// what the store holds now (`None`: the object is gone), so a retry needs no read.
    Conflict(Option<KeyValue>),
    /// Any other failure.
    Api(ApiError),
}

impl UpdateError {
    fn from_store(e: StoreError) -> UpdateError {
        match e {
            StoreError::Conflict { current, .. } => UpdateError::Conflict(current),
            StoreError::NotFound { .. } => UpdateError::Conflict(None),
            other => UpdateError::Api(other.into()),
        }
    }
}

impl From<ApiError> for UpdateError {
    fn from(e: ApiError) -> Self {
        UpdateError::Api(e)
    }
}

/// How a non-apply write's `metadata.managedFields` are worked out.
///
/// kube-apiserver updates them before the mutating webhooks run: the manager of the request
/// owns what the request changed, and the fields the webhooks set belong to no manager. A
/// webhook that rewrites `managedFields` readably keeps its entries (it may claim what it
/// set); one that leaves them unreadable has them worked out again.
enum Tracking<'r> {
    /// From the object as it is stored: no webhook changed it.
    Stored,
    /// From the object the request sent, before the webhooks changed it, with the
    /// `managedFields` a webhook wrote in their place if it wrote readable ones.
    Requested {
        sent: &'r Value,
        written: Option<Value>,
    },
}

impl<'r> Tracking<'r> {
    /// The tracking for a write whose request sent `requested` (`None`: the webhooks changed
    /// nothing) and the webhooks made `mutated` of it.
    fn of(requested: Option<&'r Value>, mutated: &Value) -> Tracking<'r> {
        let Some(sent) = requested else {
            return Tracking::Stored;
        };
        fn managed(object: &Value) -> Option<&Value> {
            meta(object).and_then(|m| m.get("managedFields"))
        }
        let written = match managed(mutated) {
            Some(rewritten)
                if managed(sent) != Some(rewritten)
                    && ssa::managed_fields_readable(Some(rewritten)) =>
            {
                Some(rewritten.clone())
            }
            _ => None,
        };
        Tracking::Requested { sent, written }
    }

    /// Sets the `managedFields` of `new`, the object about to be stored over `old` (`None`:
    /// created).
    fn update(
        &self,
        resource: &Resource,
        old: Option<&Value>,
        new: &mut Value,
        opts: &WriteOptions,
    ) {
        let track = |object: &mut Value| {
            ssa::update(
                old,
                object,
                &opts.manager,
                resource.type_info.as_deref(),
                opts.subresource.as_deref(),
                &resource.api_version(),
                &object::now_seconds(),
            )
        };
        let Tracking::Requested { sent, written } = self else {
            track(new);
            return;
        };
        let Some(mut sent) = as_written(resource, old, sent, opts.subresource.as_deref()) else {
            track(new);
            return;
        };
        if let Some(written) = written {
            meta_mut(&mut sent).insert("managedFields".into(), written.clone());
        }
        track(&mut sent);
        match meta_mut(&mut sent).remove("managedFields") {
            Some(managed) => {
                meta_mut(new).insert("managedFields".into(), managed);
            }
            None => {
                meta_mut(new).remove("managedFields");
            }
        }
    }
}

/// The object a request sent as the write takes it, for [`Tracking`]: only its
/// subresource's part, with the server's own preparation (a Secret's `stringData`, a new
/// Namespace's name label, a new CRD's finalizer, the deletion fields kept from `old`),
/// pruned and defaulted as admission does. `None` for subresources other than `status`.
fn as_written(
    resource: &Resource,
    old: Option<&Value>,
    sent: &Value,
    subresource: Option<&str>,
) -> Option<Value> {
    let mut object = match (subresource, old) {
        (Some("status"), Some(old)) => with_status_of(old.clone(), sent),
        (None, Some(old)) if resource.status_subresource => with_status_of(sent.clone(), old),
        (None, None) if resource.status_subresource && resource.builtin.is_none() => {
            with_status_of(sent.clone(), &Value::Null)
        }
        (None, _) => sent.clone(),
        (Some(_), _) => return None,
    };
    if subresource.is_none() {
        let no_meta = Map::new();
        let old_meta = old.and_then(meta).unwrap_or(&no_meta);
        let meta = meta_mut(&mut object);
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
    }
    match (resource.builtin, old) {
        (Some(Builtin::Secret), _) => builtin::prepare_secret(&mut object),
        (Some(Builtin::Namespace), None) => builtin::prepare_namespace(&mut object),
        (Some(Builtin::Crd), None) => with_cleanup_finalizer(&mut object),
        _ => {}
    }
    if let Some(schema) = &resource.schema {
        schema.prune(&mut object);
        schema.default(&mut object);
    }
    Some(object)
}

/// Adds the finalizer that cleans up a CRD's objects, once.
fn with_cleanup_finalizer(crd: &mut Value) {
    let mut finalizers = object::finalizers(crd);
    if !finalizers.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
        finalizers.push(CRD_CLEANUP_FINALIZER.into());
        object::set_finalizers(crd, &finalizers);
    }
}

/// `object` with the `status` of `from` (none if it has none).
fn with_status_of(mut object: Value, from: &Value) -> Value {
    match (from.get("status"), object.as_object_mut()) {
        (Some(status), Some(map)) => {
            map.insert("status".into(), status.clone());
        }
        (None, Some(map)) => {
            map.remove("status");
        }
        _ => {}
    }
    object
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Who owns what after a create of `sent` that the webhooks made `mutated` of (`sent`
    /// `None`: they changed nothing): manager and fields of each entry.
    fn owners(sent: Option<&Value>, mutated: &Value) -> Vec<(String, Value)> {
        let config_maps = builtin::resources()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .expect("configmaps");
        let mut stored = mutated.clone();
        Tracking::of(sent, mutated).update(
            &config_maps,
            None,
            &mut stored,
            &WriteOptions::internal("creator"),
        );
        stored["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap_or_default().to_string(),
                    e["fieldsV1"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn the_fields_webhooks_set_are_nobody_s_unless_they_claim_them_readably() {
        let sent = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let labelled = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}});
        let with_fields = |fields: Value| {
            let mut object = labelled.clone();
            meta_mut(&mut object).insert("managedFields".into(), fields);
            object
        };
        let data = json!({"f:data": {".": {}, "f:k": {}}});
        let creator_alone = vec![("creator".to_string(), data.clone())];
        // The webhook's label belongs to no one.
        assert_eq!(owners(Some(&sent), &labelled), creator_alone);
        // Unless it claims it, readably.
        let claim = json!({"f:metadata": {"f:labels": {"f:x": {}}}});
        let claimed = with_fields(json!([{"manager": "hook", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": claim}]));
        assert_eq!(
            owners(Some(&sent), &claimed),
            vec![
                ("hook".to_string(), claim),
                ("creator".to_string(), data.clone())
            ]
        );
        // A claim that cannot be read is worked out again.
        assert_eq!(
            owners(Some(&sent), &with_fields(json!([{"manager": "hook"}]))),
            creator_alone
        );
        // What the request itself sent is the request's.
        let own_label = json!({"f:data": {".": {}, "f:k": {}},
            "f:metadata": {"f:labels": {".": {}, "f:x": {}}}});
        assert_eq!(
            owners(None, &labelled),
            vec![("creator".to_string(), own_label)]
        );
    }
}
