//! Requests that are answered rather than stored: SelfSubjectAccessReview (`kubectl auth
//! can-i`), SelfSubjectRulesReview (`kubectl auth can-i --list`), SelfSubjectReview (`kubectl
//! auth whoami`) and the ServiceAccount TokenRequest (`kubectl create token`).

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use crate::authz::{Attributes, Caller};
use crate::error::{ApiError, ApiResult};
use crate::request;
use crate::sa_token::Claims;
use crate::server::Inner;

/// Paths every authenticated user may read (discovery, OpenAPI, version and health).
pub const PUBLIC_PATHS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
];

/// The request body as JSON (kubectl sends these kinds as protobuf).
fn body_json(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let protobuf = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/vnd.kubernetes.protobuf"));
    if protobuf {
        return crate::protobuf::decode(body)
            .map_err(|e| ApiError::unsupported_media_type(e.to_string()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn public_path(path: &str) -> bool {
    PUBLIC_PATHS.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == *p,
    })
}

/// A review with its status, as created (201).
fn answered(mut review: Value, kind: &str) -> Response {
    if let Some(object) = review.as_object_mut() {
        object.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
        object.insert("kind".into(), json!(kind));
    }
    request::json(201, &review, &[])
}

/// Answer a SelfSubjectReview: who the request is made as (the impersonated identity under
/// `kubectl --as`). Its body asks nothing. Without authentication nobody is known.
pub fn self_subject_review(caller: Option<&Caller>) -> Response {
    let user = caller.map_or_else(|| json!({}), Caller::user_info);
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": {"creationTimestamp": crate::object::now_seconds()},
        "status": {"userInfo": user},
    });
    request::json(201, &review, &[])
}

/// Answer a SelfSubjectAccessReview for `caller` (None: authentication is off; all allowed).
pub fn access_review(
    inner: &Inner,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let mut review = body_json(headers, body)?;
    let allowed = match (caller, review.pointer("/spec/resourceAttributes")) {
        (None, _) => true,
        (Some(caller), Some(attrs)) => {
            let text = |k: &str| {
                attrs
                    .get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let attrs = Attributes {
                verb: text("verb").unwrap_or_default(),
                group: text("group").unwrap_or_default(),
                resource: text("resource").unwrap_or_default(),
                subresource: text("subresource"),
                namespace: text("namespace"),
                name: text("name"),
            };
            inner.rbac().allows(caller, &attrs)
        }
        (Some(caller), None) => {
            let path = review
                .pointer("/spec/nonResourceAttributes/path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            caller.groups.iter().any(|g| g == crate::authz::MASTERS) || public_path(path)
        }
    };
    review["status"] = json!({ "allowed": allowed });
    Ok(answered(review, "SelfSubjectAccessReview"))
}

/// Answer a SelfSubjectRulesReview: the caller's rules in `spec.namespace`.
pub fn rules_review(
    inner: &Inner,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let mut review = body_json(headers, body)?;
    let namespace = review
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let everything = Caller::new("", &[crate::authz::MASTERS]);
    let rules = inner
        .rbac()
        .rules_for(caller.unwrap_or(&everything), &namespace);
    let resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| r.resources.is_some())
        .map(|r| {
            json!({
                "verbs": r.verbs,
                "apiGroups": r.api_groups.clone().unwrap_or_default(),
                "resources": r.resources.clone().unwrap_or_default(),
                "resourceNames": r.resource_names.clone().unwrap_or_default(),
            })
        })
        .collect();
    review["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": PUBLIC_PATHS}],
        "incomplete": false,
    });
    Ok(answered(review, "SelfSubjectRulesReview"))
}

/// Shortest and longest token lifetimes, and the default.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 48 * 3600;
const DEFAULT_SECONDS: i64 = 3600;

/// Mint a token for the ServiceAccount `namespace/name` (a TokenRequest), once the admission
/// webhooks for `serviceaccounts/token` admit it (mutating ones may change its spec).
pub async fn token_request(
    inner: &Inner,
    resource: &crate::registry::Resource,
    (namespace, name): (&str, &str),
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let mut request_body = if body.is_empty() {
        json!({})
    } else {
        body_json(headers, body)?
    };
    let Some((account, _)) = inner.read(resource, Some(namespace), name).await? else {
        return Err(ApiError::not_found("", "serviceaccounts", name));
    };
    let mut warnings = Vec::new();
    if !inner.webhooks().is_empty() {
        let target = crate::webhooks::Target {
            resource,
            subresource: Some("token"),
            namespace: Some(namespace),
            dry_run: false,
            caller,
        };
        let mut requested = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": request_body.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        let options = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
        warnings = inner
            .run_mutating_webhooks("CREATE", &target, &mut requested, (None, Some(&options)))
            .await?;
        let given = inner
            .run_webhooks("CREATE", &target, (Some(&requested), None, Some(&options)))
            .await
            .map_err(|e| e.after_warnings(&warnings))?;
        warnings.extend(given);
        request_body = requested;
    }
    let uid = account
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let seconds = request_body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(ApiError::bad_request(format!(
            "spec.expirationSeconds: may not specify a duration less than {MIN_SECONDS} seconds"
        )));
    }
    let seconds = seconds.min(MAX_SECONDS);
    let now = jiff::Timestamp::now().as_second();
    let mut audiences: Vec<String> = request_body
        .pointer("/spec/audiences")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("spec.audiences: {e}")))?
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(crate::sa_token::API_AUDIENCE.to_string());
    }
    let claims = Claims {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid,
        exp: now + seconds,
        aud: audiences.clone(),
    };
    let token = inner.signer().await?.mint(&claims);
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": crate::object::now_seconds()},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
        },
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(request::json(201, &answer, &warnings))
}
