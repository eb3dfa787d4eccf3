//! Admission webhooks, called as kube-apiserver calls them: every webhook of a
//! `MutatingWebhookConfiguration` or `ValidatingWebhookConfiguration` whose rules match a
//! create, update or delete (operation, group, version, resource or `resource/subresource`,
//! scope; under `matchPolicy: Equivalent`, the default, also through another served version
//! of the kind, the webhook then seeing the object in the version it names), whose `namespaceSelector` picks the object's namespace and whose `objectSelector`
//! picks the object (or the object before), and whose `matchConditions` (CEL, see
//! [`conditions`]) all hold, gets an `admission.k8s.io/v1` AdmissionReview over
//! HTTPS, verified with its `caBundle`, within `timeoutSeconds`. The review names the
//! requesting user (`userInfo`); a delete's review has the object being deleted as
//! `oldObject`, no `object`, and the DeleteOptions as `options`. A denial refuses the request
//! with the webhook's message; a webhook that cannot be reached refuses it under
//! `failurePolicy: Fail` (the default) and is skipped under `Ignore`. A dry run reaches only
//! webhooks whose `sideEffects` are `None` or `NoneOnDryRun`.
//!
//! Mutating webhooks come first, one after another in the order of their configurations'
//! names and their order in them, before the object is defaulted and validated: each sees the
//! object as the ones before it left it, and may answer with a JSON Patch (`patchType:
//! JSONPatch`), applied at once. A webhook with `reinvocationPolicy: IfNeeded` is called once
//! more if a webhook after it changed the object. Validating webhooks see the final object.
//! On a delete, mutating webhooks may refuse; there is no object to patch.
//!
//! There is no cluster network here: a webhook named by `clientConfig.service` is reached at
//! the address the server is configured with for that Service (`--webhook-service
//! ns/name=host:port`), and its certificate is verified for `name.namespace.svc`, as on a
//! cluster. `clientConfig.url` works as given.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use serde_json::{Value, json};

use crate::authz::Caller;
use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;
use crate::selector::LabelSelector;

mod conditions;

pub(crate) use conditions::check as check_match_conditions;

/// One webhook of a configuration. A mutating webhook's fields are a validating one's and
/// its `reinvocationPolicy`.
#[derive(Clone, Debug)]
struct Hook {
    name: String,
    spec: ValidatingWebhook,
    /// `reinvocationPolicy: IfNeeded` (mutating webhooks only).
    reinvoke: bool,
}

/// The webhooks of every admission webhook configuration, as last loaded.
#[derive(Clone, Debug, Default)]
pub struct Webhooks {
    /// Validating webhooks, in the order they are called.
    hooks: Vec<Hook>,
    /// Mutating webhooks, in the order they are called.
    mutating: Vec<Hook>,
}

/// A write about to be admitted.
pub struct Admission<'a> {
    /// CREATE, UPDATE or DELETE.
    pub operation: &'static str,
    /// The resource written.
    pub resource: &'a Resource,
    /// The other resources that serve its objects ([`Registry::equivalents`]): a webhook
    /// whose rules name one of them is called under `matchPolicy: Equivalent`.
    ///
    /// [`Registry::equivalents`]: crate::registry::Registry::equivalents
    pub equivalents: &'a [Arc<Resource>],
    /// The subresource written, if any.
    pub subresource: Option<&'a str>,
    /// The object's namespace.
    pub namespace: Option<&'a str>,
    /// The object's namespace's labels (for namespaceSelector).
    pub namespace_labels: Option<&'a serde_json::Map<String, Value>>,
    /// The object as it would be stored (none for a delete).
    pub object: Option<&'a Value>,
    /// The object before, for an update or a delete.
    pub old: Option<&'a Value>,
    /// The operation's options (a delete's DeleteOptions).
    pub options: Option<&'a Value>,
    /// Who asks.
    pub user: Option<&'a Caller>,
    /// Whether nothing is persisted.
    pub dry_run: bool,
}

fn listed(list: &Option<Vec<String>>, wanted: &str) -> bool {
    list.as_ref()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
}

impl Webhooks {
    /// Index stored Validating- and MutatingWebhookConfigurations, each in the order given
    /// (the store's: by name).
    pub fn from_configurations<'a>(
        validating: impl IntoIterator<Item = &'a Value>,
        mutating: impl IntoIterator<Item = &'a Value>,
    ) -> Webhooks {
        let mut hooks = Vec::new();
        for object in validating {
            let Ok(config) =
                serde_json::from_value::<ValidatingWebhookConfiguration>(object.clone())
            else {
                continue;
            };
            for spec in config.webhooks.unwrap_or_default() {
                hooks.push(Hook {
                    name: spec.name.clone(),
                    spec,
                    reinvoke: false,
                });
            }
        }
        let mut mutating_hooks = Vec::new();
        for object in mutating {
            let Ok(config) = serde_json::from_value::<MutatingWebhookConfiguration>(object.clone())
            else {
                continue;
            };
            for webhook in config.webhooks.unwrap_or_default() {
                let reinvoke = webhook.reinvocation_policy.as_deref() == Some("IfNeeded");
                // The same fields but `reinvocationPolicy`, which the validating form has not.
                let Ok(spec) = serde_json::to_value(&webhook)
                    .and_then(serde_json::from_value::<ValidatingWebhook>)
                else {
                    continue;
                };
                mutating_hooks.push(Hook {
                    name: spec.name.clone(),
                    spec,
                    reinvoke,
                });
            }
        }
        Webhooks {
            hooks,
            mutating: mutating_hooks,
        }
    }

    /// Whether no webhook is configured (the common case: nothing to do).
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.mutating.is_empty()
    }

    /// Whether no mutating webhook is configured.
    pub fn none_mutating(&self) -> bool {
        self.mutating.is_empty()
    }
}

/// The webhooks of `hooks` whose rules and selectors pick the request, each with the
/// resource it is called with (see [`matches`]).
fn matching<'s>(
    hooks: &'s [Hook],
    request: &'s Admission<'_>,
) -> impl Iterator<Item = (&'s Hook, &'s Resource)> + 's {
    hooks
        .iter()
        .filter_map(move |hook| Some((hook, matches(hook, request)?)))
}

/// Whether a webhook's rules, namespaceSelector and objectSelector pick the request: the
/// resource the webhook is called with if so. That is the one written when a rule names it;
/// else, under `matchPolicy: Equivalent` (the default), an equivalent one a rule names (the
/// kind's version the webhook knows), as kube-apiserver does. Writes of the webhook
/// configurations themselves never reach webhooks, as in kube-apiserver: no webhook can lock
/// its own configuration, or change another's.
fn matches<'r>(hook: &Hook, request: &Admission<'r>) -> Option<&'r Resource> {
    if request
        .resource
        .builtin
        .is_some_and(crate::builtin::Builtin::is_webhook_configuration)
    {
        return None;
    }
    let rules = hook.spec.rules.as_deref().unwrap_or_default();
    let named = |resource: &Resource| {
        rules.iter().any(|rule| {
            let scope_ok = match rule.scope.as_deref() {
                Some("Namespaced") => resource.namespaced,
                Some("Cluster") => !resource.namespaced,
                _ => true,
            };
            scope_ok
                && listed(&rule.operations, request.operation)
                && listed(&rule.api_groups, &resource.group)
                && listed(&rule.api_versions, &resource.version)
                && rule.resources.as_ref().is_some_and(|list| {
                    list.iter()
                        .any(|r| resource_matches(r, &resource.plural, request.subresource))
                })
        })
    };
    let exact = hook.spec.match_policy.as_deref() == Some("Exact");
    let by_rule = if named(request.resource) {
        Some(request.resource)
    } else if exact {
        None
    } else {
        request.equivalents.iter().map(|r| &**r).find(|r| named(r))
    }?;
    // A Namespace is judged by its own labels as they are now: a mutating webhook before
    // may have changed them.
    let namespace_labels = match request.resource.builtin {
        Some(crate::builtin::Builtin::Namespace) => request
            .object
            .or(request.old)
            .and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object),
        _ => request.namespace_labels,
    };
    let by_namespace = match (&hook.spec.namespace_selector, request.namespace) {
        (Some(selector), Some(_)) => LabelSelector::from_label_selector(selector)
            .map(|s| s.matches(namespace_labels))
            .unwrap_or(false),
        _ => true,
    };
    // objectSelector: the object's labels, or the old object's (kube-apiserver calls the
    // webhook if either matches).
    let by_object = hook.spec.object_selector.as_ref().is_none_or(|selector| {
        LabelSelector::from_label_selector(selector).is_ok_and(|s| {
            [request.object, request.old]
                .into_iter()
                .flatten()
                .any(|o| s.matches(o.pointer("/metadata/labels").and_then(Value::as_object)))
        })
    });
    (by_namespace && by_object).then_some(by_rule)
}

/// Whether a rule's resource matches, as upstream reads it: `*` is every resource but no
/// subresource, `devices/*` devices and all its subresources, `*/status` every status
/// subresource, `*/*` everything.
fn resource_matches(pattern: &str, plural: &str, subresource: Option<&str>) -> bool {
    let (resource, sub) = match pattern.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub)),
        None => (pattern, None),
    };
    (resource == "*" || resource == plural)
        && match sub {
            Some("*") => true,
            wanted => wanted == subresource,
        }
}

/// Where the server reaches webhooks named by Service: "namespace/name" → "host:port".
pub type ServiceAddresses = BTreeMap<String, String>;

/// Run the matching validating webhooks (and, for a delete, the mutating ones first); Err
/// refuses the write.
pub async fn admit(
    webhooks: &Webhooks,
    services: &ServiceAddresses,
    request: &Admission<'_>,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    admit_into(webhooks, services, request, &mut warnings)
        .await
        .map_err(|e| e.after_warnings(&warnings))?;
    Ok(warnings)
}

/// [`admit`], adding the webhooks' warnings to `warnings` as they come.
async fn admit_into(
    webhooks: &Webhooks,
    services: &ServiceAddresses,
    request: &Admission<'_>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if request.object.is_none() {
        for (hook, seen_as) in matching(&webhooks.mutating, request) {
            let response = ask(hook, services, request, seen_as).await?;
            warned(response.as_ref(), warnings);
            // There is no object to patch: a patch of no operations is none, any other
            // refuses the delete.
            let patch = match response.as_ref().map(|r| patch_of(hook, r)).transpose()? {
                Some(Ok(patch)) => patch,
                Some(Err(failure)) => {
                    failed(hook, failure)?;
                    None
                }
                None => None,
            };
            if patch.is_some_and(|p| !p.0.is_empty()) {
                return Err(ApiError::internal(format!(
                    "Internal error occurred: admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                    hook.name
                )));
            }
        }
    }
    for (hook, seen_as) in matching(&webhooks.hooks, request) {
        let response = ask(hook, services, request, seen_as).await?;
        warned(response.as_ref(), warnings);
    }
    Ok(())
}

/// Adds the warnings of a webhook's response (for the client, as Warning headers).
fn warned(response: Option<&Value>, warnings: &mut Vec<String>) {
    let given = response
        .and_then(|r| r.get("warnings"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|w| !w.is_empty());
    crate::error::merge_warnings(warnings, given);
}

/// Run the matching mutating webhooks on `object` (`request.object` is ignored: each webhook
/// sees the object as the ones before it left it), applying their patches; Err refuses the
/// write.
pub async fn mutate(
    webhooks: &Webhooks,
    services: &ServiceAddresses,
    request: &Admission<'_>,
    object: &mut Value,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    mutate_into(webhooks, services, request, object, &mut warnings)
        .await
        .map_err(|e| e.after_warnings(&warnings))?;
    Ok(warnings)
}

/// [`mutate`], adding the webhooks' warnings to `warnings` as they come.
async fn mutate_into(
    webhooks: &Webhooks,
    services: &ServiceAddresses,
    request: &Admission<'_>,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    // Each webhook is matched against the object as it is when its turn comes (an
    // objectSelector may pick a label an earlier webhook added).
    let mut called = Vec::new();
    // The last webhook that changed the object: the ones called before it that asked to be
    // called again if needed are, once.
    let mut changed_by = None;
    for (at, hook) in webhooks.mutating.iter().enumerate() {
        if let Some(changed) = mutate_once(hook, services, request, object, warnings).await? {
            called.push(at);
            if changed {
                changed_by = Some(at);
            }
        }
    }
    if let Some(last) = changed_by {
        for at in called.into_iter().filter(|at| *at < last) {
            let hook = &webhooks.mutating[at];
            if hook.reinvoke {
                mutate_once(hook, services, request, object, warnings).await?;
            }
        }
    }
    Ok(())
}

/// Call one mutating webhook on `object`, if it matches the object as it is now, and apply
/// its patch: `None` if it was not called, else whether the object changed.
async fn mutate_once(
    hook: &Hook,
    services: &ServiceAddresses,
    request: &Admission<'_>,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> ApiResult<Option<bool>> {
    let current = Admission {
        object: Some(object),
        ..*request
    };
    let Some(seen_as) = matches(hook, &current) else {
        return Ok(None);
    };
    let Some(response) = ask(hook, services, &current, seen_as).await? else {
        return Ok(Some(false));
    };
    warned(Some(&response), warnings);
    let patch = match patch_of(hook, &response)? {
        Ok(Some(patch)) => patch,
        Ok(None) => return Ok(Some(false)),
        Err(failure) => {
            failed(hook, failure)?;
            return Ok(Some(false));
        }
    };
    // The patch is of the object as the webhook saw it, in the version it was called with.
    let shown = seen(request.resource, seen_as, Some(object))
        .map(Cow::into_owned)
        .unwrap_or_default();
    let mut patched = shown.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| invalid_patch(hook, e))?;
    if !patched.is_object() {
        return Err(invalid_patch(hook, "the patched object is not an object"));
    }
    if std::ptr::eq(seen_as, request.resource) {
        let changed = patched != *object;
        *object = patched;
        return Ok(Some(changed));
    }
    // Only what the patch changed counts: the conversion there and back may add what the
    // object left to defaults (its apiVersion and kind).
    let changed = patched != shown;
    if changed {
        *object = crate::rest::convert(seen_as, request.resource, patched);
    }
    Ok(Some(changed))
}

/// The JSON Patch of a webhook's response: Ok(None) without one; Ok(Err) when the webhook
/// failed to give one this server can apply (a `patchType` other than JSONPatch), which its
/// failure policy judges; Err refuses the write (a patch that is not a JSON Patch).
fn patch_of(hook: &Hook, response: &Value) -> ApiResult<Result<Option<json_patch::Patch>, String>> {
    let Some(patch) = response
        .get("patch")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return Ok(Ok(None));
    };
    match response.get("patchType").and_then(Value::as_str) {
        Some("JSONPatch") => {}
        other => return Ok(Err(format!("unsupported patchType {other:?}"))),
    }
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| invalid_patch(hook, format!("not base64: {e}")))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&patch).map_err(|e| invalid_patch(hook, e))?;
    Ok(Ok(Some(patch)))
}

/// A webhook's patch that cannot be applied: the write is refused.
fn invalid_patch(hook: &Hook, why: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!(
        "Internal error occurred: admission webhook {:?} returned an invalid patch: {why}",
        hook.name
    ))
}

/// Send one webhook its review: its response if it admits the request, `None` if it failed
/// and its failure policy ignores that; Err refuses the request.
async fn ask(
    hook: &Hook,
    services: &ServiceAddresses,
    request: &Admission<'_>,
    seen_as: &Resource,
) -> ApiResult<Option<Value>> {
    let review = review(request, seen_as);
    let conditions = hook.spec.match_conditions.as_deref().unwrap_or_default();
    match conditions::hold(conditions, &review) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return failed(hook, e).map(|()| None),
    }
    let side_effects = hook.spec.side_effects.as_str();
    if request.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook {:?} has sideEffects {side_effects} and does not support dry run",
            hook.name
        )));
    }
    let timeout = Duration::from_secs(
        hook.spec
            .timeout_seconds
            .map(|s| s.clamp(1, 30) as u64)
            .unwrap_or(10),
    );
    let answer = tokio::time::timeout(timeout, call(hook, services, &review))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {}s", timeout.as_secs())));
    // An answer without a response object, or for another request, is the webhook failing.
    let asked = review.pointer("/request/uid").cloned().unwrap_or_default();
    let answer = answer.and_then(|mut answer| {
        let response = answer
            .as_object_mut()
            .and_then(|answer| answer.remove("response"))
            .filter(Value::is_object)
            .ok_or_else(|| "its answer is not an AdmissionReview with a response".to_string())?;
        match response.get("uid") {
            Some(uid) if *uid == asked => Ok(response),
            other => Err(format!(
                "expected response.uid={asked}, got {}",
                other.unwrap_or(&Value::Null)
            )),
        }
    });
    match answer {
        Ok(response) => {
            if response["allowed"].as_bool() == Some(true) {
                return Ok(Some(response));
            }
            let message = response
                .pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let code = response
                .pointer("/status/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(400);
            let mut own = Vec::new();
            warned(Some(&response), &mut own);
            Err(ApiError::denied_by_webhook(
                code,
                format!(
                    "admission webhook {:?} denied the request: {message}",
                    hook.name
                ),
            )
            .after_warnings(&own))
        }
        Err(e) => failed(hook, e).map(|()| None),
    }
}

/// A webhook that failed: Err refuses the request under `failurePolicy: Fail` (the default),
/// Ok goes on without it under `Ignore`.
fn failed(hook: &Hook, error: String) -> ApiResult<()> {
    if hook.spec.failure_policy.as_deref() == Some("Ignore") {
        tracing::info!(webhook = %hook.name, %error, "admission webhook failed; ignored (failurePolicy Ignore)");
        return Ok(());
    }
    tracing::warn!(webhook = %hook.name, %error, "admission webhook failed; refusing (failurePolicy Fail)");
    Err(ApiError::internal(format!(
        "Internal error occurred: failed calling webhook {:?}: {error}",
        hook.name
    )))
}

/// `object` of the request's resource as a webhook called with `seen_as` sees it.
fn seen<'v>(
    written: &Resource,
    seen_as: &Resource,
    object: Option<&'v Value>,
) -> Option<Cow<'v, Value>> {
    let object = object?;
    Some(if std::ptr::eq(written, seen_as) {
        Cow::Borrowed(object)
    } else {
        Cow::Owned(crate::rest::convert(written, seen_as, object.clone()))
    })
}

/// The AdmissionReview of a request for a webhook called with the resource `seen_as`: its
/// `kind`, `resource`, `object` and `oldObject` are in that version, `requestKind` and
/// `requestResource` name what was written.
fn review(request: &Admission<'_>, seen_as: &Resource) -> Value {
    let kind_of = |resource: &Resource| {
        // A ServiceAccount's token subresource takes a TokenRequest.
        match (resource.builtin, request.subresource) {
            (Some(crate::builtin::Builtin::ServiceAccount), Some("token")) => {
                json!({"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"})
            }
            _ => {
                json!({"group": resource.group, "version": resource.version, "kind": resource.kind})
            }
        }
    };
    let resource_of = |resource: &Resource| json!({"group": resource.group, "version": resource.version, "resource": resource.plural});
    let mut body = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind_of(seen_as),
        "resource": resource_of(seen_as),
        "requestKind": kind_of(request.resource),
        "requestResource": resource_of(request.resource),
        "name": request.object.or(request.old).and_then(crate::object::name),
        "operation": request.operation,
        "userInfo": request.user.map_or_else(|| json!({}), Caller::user_info),
        "object": seen(request.resource, seen_as, request.object),
        "oldObject": seen(request.resource, seen_as, request.old),
        "options": request.options,
        "dryRun": request.dry_run,
    });
    if let Some(sub) = request.subresource {
        body["subResource"] = json!(sub);
    }
    if let Some(ns) = request.namespace {
        body["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body})
}

/// What a write is about, for admission.
pub(crate) struct Target<'a> {
    pub(crate) resource: &'a Resource,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) dry_run: bool,
    /// Who asks (none for the server's own writes).
    pub(crate) caller: Option<&'a Caller>,
}

impl crate::server::Inner {
    /// Run the validating admission webhooks that match a write (and, for a delete, the
    /// mutating ones): the warnings they give; Err refuses the write.
    pub(crate) async fn run_webhooks(
        &self,
        operation: &'static str,
        target: &Target<'_>,
        (object, old, options): (Option<&Value>, Option<&Value>, Option<&Value>),
    ) -> ApiResult<Vec<String>> {
        let hooks = self.webhooks();
        if hooks.is_empty() {
            return Ok(Vec::new());
        }
        let labels = self.namespace_labels(target, object.or(old)).await?;
        let equivalents = self.registry().equivalents(target.resource);
        let request = labels.admission(operation, target, &equivalents, (object, old, options));
        admit(&hooks, &self.config.webhook_services, &request).await
    }

    /// Run the mutating admission webhooks that match a create or update of `object`,
    /// which they may change: the warnings they give; Err refuses the write.
    pub(crate) async fn run_mutating_webhooks(
        &self,
        operation: &'static str,
        target: &Target<'_>,
        object: &mut Value,
        (old, options): (Option<&Value>, Option<&Value>),
    ) -> ApiResult<Vec<String>> {
        let hooks = self.webhooks();
        if hooks.none_mutating() {
            return Ok(Vec::new());
        }
        let labels = self.namespace_labels(target, Some(&*object)).await?;
        let before = object.clone();
        let equivalents = self.registry().equivalents(target.resource);
        let request = labels.admission(
            operation,
            target,
            &equivalents,
            (Some(&before), old, options),
        );
        mutate(&hooks, &self.config.webhook_services, &request, object).await
    }

    /// The namespace a write is judged under, with its labels, for namespaceSelector.
    async fn namespace_labels(
        &self,
        target: &Target<'_>,
        object: Option<&Value>,
    ) -> ApiResult<JudgedUnder> {
        // A Namespace is its own namespace: judged under its name, by its own labels (as it
        // is written, or as it was for a delete), as kube-apiserver does.
        let own = match target.resource.builtin {
            Some(crate::builtin::Builtin::Namespace) => object,
            _ => None,
        };
        let namespace = own.and_then(crate::object::name).or(target.namespace);
        let read = match (own, namespace, self.registry().get("", "v1", "namespaces")) {
            (None, Some(ns), Some(namespaces)) => {
                self.read(&namespaces, None, ns).await?.map(|(o, _)| o)
            }
            _ => None,
        };
        let labels = own
            .or(read.as_ref())
            .and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned();
        Ok(JudgedUnder {
            namespace: namespace.map(str::to_string),
            labels,
        })
    }
}

/// The namespace a write is judged under and its labels.
struct JudgedUnder {
    namespace: Option<String>,
    labels: Option<serde_json::Map<String, Value>>,
}

impl JudgedUnder {
    fn admission<'a>(
        &'a self,
        operation: &'static str,
        target: &Target<'a>,
        equivalents: &'a [Arc<Resource>],
        (object, old, options): (Option<&'a Value>, Option<&'a Value>, Option<&'a Value>),
    ) -> Admission<'a> {
        Admission {
            operation,
            resource: target.resource,
            equivalents,
            subresource: target.subresource,
            namespace: self.namespace.as_deref(),
            namespace_labels: self.labels.as_ref(),
            object,
            old,
            options,
            user: target.caller,
            dry_run: target.dry_run,
        }
    }
}

/// POST the review to the webhook over TLS; its answer, or why there is none.
async fn call(hook: &Hook, services: &ServiceAddresses, review: &Value) -> Result<Value, String> {
    let config = &hook.spec.client_config;
    let (address, server_name, path) = match (&config.url, &config.service) {
        (Some(url), _) => {
            let rest = url
                .strip_prefix("https://")
                .ok_or_else(|| format!("webhook URL {url:?} is not https"))?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let address = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:443")
            };
            (address, host.to_string(), path.to_string())
        }
        (None, Some(service)) => {
            let key = format!("{}/{}", service.namespace, service.name);
            let address = services.get(&key).cloned().ok_or_else(|| {
                format!("service {key} has no address here (configure --webhook-service {key}=host:port)")
            })?;
            let server_name = format!("{}.{}.svc", service.name, service.namespace);
            let path = service.path.clone().unwrap_or_else(|| "/".into());
            (address, server_name, path)
        }
        (None, None) => return Err("clientConfig names neither a url nor a service".into()),
    };
    let tls = tls_config(config.ca_bundle.as_ref().map(|b| b.0.as_slice()))?;
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {address}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP with {address}: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, server_name)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(review.to_string())))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("POST to {address}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("the webhook answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not an AdmissionReview: {e}"))
}

/// A client configuration trusting the webhook's caBundle (PEM).
fn tls_config(ca_bundle: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bundle = ca_bundle.ok_or("the webhook has no caBundle")?;
    // A caBundle is PEM; some write it base64-encoded once more.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .ok();
    let pem = decoded
        .as_deref()
        .filter(|d| d.starts_with(b"-----"))
        .unwrap_or(bundle);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests;
