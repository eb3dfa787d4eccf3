//! What a resource request carries: parsed query, content negotiation, the caller.

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Query parameters, tolerant of the `?&` kube-rs sends.
#[derive(Clone, Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parse a raw query string.
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let raw = raw.unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        Ok(Query(
            pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect(),
        ))
    }

    /// The last value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter, read as kube-apiserver reads one: present and neither `0` nor
    /// `false` in any case (the Python client sends `True`; a bare `?watch` counts).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    /// A non-negative integer parameter.
    pub fn number(&self, key: &str) -> ApiResult<Option<u64>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{key}: {v:?} is not a number"))),
        }
    }

    /// `dryRun`: only `All` is accepted.
    pub fn dry_run(&self) -> ApiResult<bool> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, _)| k == "dryRun")
            .map(|(_, v)| v.as_str())
            .collect();
        match values.as_slice() {
            [] => Ok(false),
            all if all.iter().all(|v| *v == "All") => Ok(true),
            _ => Err(ApiError::bad_request(
                "dryRun: Unsupported value: only \"All\" is supported",
            )),
        }
    }

    /// `fieldValidation` (default Warn).
    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("" | "Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// How unknown fields in a request are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Accept it, drop the fields, and warn.
    Warn,
    /// Drop the fields silently.
    Ignore,
}

/// What representation the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The object (or list) itself.
    Object,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata` (or its list).
    Metadata,
}

/// Pick the representation from the `Accept` header: the first acceptable entry wins.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Representation> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Representation::Object);
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<&str> = parts.collect();
        let param = |name: &str| {
            params
                .iter()
                .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        match media {
            "application/json" | "*/*" | "application/*" | "" => {
                match (param("as"), param("g")) {
                    (Some("Table"), Some("meta.k8s.io")) => return Ok(Representation::Table),
                    (
                        Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                        Some("meta.k8s.io"),
                    ) => {
                        return Ok(Representation::Metadata);
                    }
                    (None, _) => return Ok(Representation::Object),
                    // An `as=` we do not serve: try the next entry.
                    _ => continue,
                }
            }
            // Protobuf, YAML and anything else: look at the next entry.
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json (asked for {accept})"
    )))
}

/// A JSON response from bytes already encoded.
pub fn json_bytes(code: u16, body: Vec<u8>) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response with optional `Warning` headers.
pub fn json(code: u16, body: &Value, warnings: &[String]) -> axum::response::Response {
    // Written as bytes: `to_string` would go through `fmt::Write` a few bytes at a time. A
    // value always serializes (its keys are strings), so the default is never used.
    let mut response = json_bytes(code, serde_json::to_vec(body).unwrap_or_default());
    add_warnings(&mut response, warnings);
    response
}

/// Adds `warnings` to a response as `Warning` headers (code 299, no agent), in order.
pub fn add_warnings(response: &mut axum::response::Response, warnings: &[String]) {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
}
