//! The Swagger 2.0 document of everything the server serves, at `/openapi/v2` (JSON or
//! gnostic's protobuf, by `Accept`) and `/swagger-2.0.0.pb-v1` (protobuf). kubectl 1.27 and
//! 1.28 read it (client-go's `OpenAPISchema()`) for `create`, client-side `apply` and
//! `explain`, and look in it for each kind's PATCH `fieldValidation` parameter to learn that
//! the server validates fields. It is derived from the `/openapi/v3` documents, so the two
//! always describe the same schemas.

mod encode;
mod proto;
mod swagger;
#[cfg(test)]
mod tests;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;

use crate::openapi;
use crate::registry::Registry;

/// The protobuf media type client-go asks for.
const PROTOBUF_REQUESTED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The same without the `@`: what protobuf is sent as (client-go parses the response's
/// `Content-Type`, and `@` is not allowed in a media type).
const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// What `/openapi/v2` offers, in kube-apiserver's order (`*/*` gets JSON).
const OFFERS: [(&str, Format); 3] = [
    ("application/json", Format::Json),
    (PROTOBUF_REQUESTED, Format::Protobuf),
    (PROTOBUF, Format::Protobuf),
];

/// A representation of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// gnostic's `openapi.v2.Document` protobuf.
    Protobuf,
}

/// The rendered document in both representations.
#[derive(Debug)]
pub struct Document {
    json: Rendered,
    protobuf: Rendered,
}

/// One representation and its ETag.
#[derive(Debug)]
struct Rendered {
    body: Bytes,
    etag: String,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Rendered {
        let etag = format!("\"{}\"", openapi::content_hash(&body));
        Rendered {
            body: body.into(),
            etag,
        }
    }
}

impl Document {
    /// The document of every kind a registry serves.
    pub fn build(registry: &Registry, server_version: &str) -> Document {
        let group_versions = openapi::group_versions(registry, server_version);
        let doc = swagger::document(&group_versions, server_version);
        Document {
            json: Rendered::new(doc.to_string().into_bytes()),
            protobuf: Rendered::new(encode::document(&doc).encode_to_vec()),
        }
    }

    /// The response in `format`, or `304 Not Modified` when `If-None-Match` names its ETag.
    pub fn respond(&self, format: Format, headers: &HeaderMap) -> Response {
        let (rendered, content_type) = match format {
            Format::Json => (&self.json, "application/json"),
            Format::Protobuf => (&self.protobuf, PROTOBUF),
        };
        let mut response = if not_modified(headers, &rendered.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Response::new(Body::from(rendered.body.clone()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        };
        let out = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&rendered.etag) {
            out.insert(header::ETAG, etag);
        }
        out.insert(header::VARY, HeaderValue::from_static("Accept"));
        response
    }
}

/// The representation `Accept` asks for: the offer that matches the most preferred media
/// type (by `q`, then order). `None` when nothing offered is acceptable (a 406).
pub fn negotiate(headers: &HeaderMap) -> Option<Format> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or("*/*");
    let mut clauses: Vec<(f32, &str)> = accept.split(',').filter_map(clause).collect();
    // A stable sort: equally preferred types keep the client's order.
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0));
    clauses.iter().find_map(|(_, media_type)| offer(media_type))
}

/// One `Accept` entry as its quality and media type; `None` for `q=0` (not acceptable).
fn clause(entry: &str) -> Option<(f32, &str)> {
    let mut parts = entry.split(';');
    let media_type = parts.next()?.trim();
    let quality = parts
        .filter_map(|p| p.trim().strip_prefix("q="))
        .find_map(|q| q.parse::<f32>().ok())
        .unwrap_or(1.0);
    (quality > 0.0 && !media_type.is_empty()).then_some((quality, media_type))
}

fn offer(media_type: &str) -> Option<Format> {
    let (kind, subtype) = media_type.split_once('/')?;
    OFFERS.iter().find_map(|(offered, format)| {
        let (offered_kind, offered_subtype) = offered.split_once('/')?;
        let matches = (kind == "*" || kind.eq_ignore_ascii_case(offered_kind))
            && (subtype == "*" || subtype.eq_ignore_ascii_case(offered_subtype));
        matches.then_some(*format)
    })
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}
