//! API discovery: legacy (`/api`, `/apis`, per group-version resource lists) and aggregated
//! (`apidiscovery.k8s.io/v2`, chosen by the Accept header).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::registry::{Registry, Resource, version_priority};
use crate::request;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version the client accepts, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    for entry in accept.split(',') {
        let entry = entry.replace(' ', "");
        if entry.contains("g=apidiscovery.k8s.io") && entry.contains("as=APIGroupDiscoveryList") {
            if entry.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if entry.contains("v=v2") {
                return Some("v2");
            }
        }
        if entry.starts_with("application/json") && !entry.contains("as=") {
            return None;
        }
    }
    None
}

fn with_content_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn versions_sorted(versions: Vec<String>) -> Vec<String> {
    let mut versions = versions;
    versions.sort_by(|a, b| version_priority(a, b));
    versions
}

/// `GET /api`.
pub fn core(registry: &Registry, headers: &HeaderMap, server_address: &str) -> Response {
    if let Some(version) = aggregated(headers) {
        let groups = registry.groups();
        let items: Vec<Value> = groups
            .get("")
            .map(|versions| vec![group_discovery("", versions)])
            .unwrap_or_default();
        return aggregated_response(version, items);
    }
    request::json(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
        &[],
    )
}

/// `GET /apis`.
pub fn groups(registry: &Registry, headers: &HeaderMap) -> Response {
    let groups = registry.groups();
    if let Some(version) = aggregated(headers) {
        let items: Vec<Value> = groups
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| group_discovery(g, versions))
            .collect();
        return aggregated_response(version, items);
    }
    let items: Vec<Value> = groups
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group(g, versions.keys().cloned().collect()))
        .collect();
    request::json(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items}),
        &[],
    )
}

/// `GET /apis/<group>`.
pub fn group(registry: &Registry, group: &str) -> Option<Response> {
    let groups = registry.groups();
    let versions = groups.get(group)?;
    let mut body = api_group(group, versions.keys().cloned().collect());
    body["apiVersion"] = json!("v1");
    Some(request::json(200, &body, &[]))
}

fn api_group(group: &str, versions: Vec<String>) -> Value {
    let versions = versions_sorted(versions);
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "name": group, "versions": entries, "preferredVersion": entries.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Response> {
    let groups = registry.groups();
    let resources = groups.get(group)?.get(version)?;
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut entries = Vec::new();
    for r in resources {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for (sub, verbs) in subresources(r) {
            entries.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}));
        }
    }
    Some(request::json(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}),
        &[],
    ))
}

fn subresources(r: &Resource) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut subs = Vec::new();
    if r.status_subresource {
        subs.push(("status", vec!["get", "patch", "update"]));
    }
    if r.builtin == Some(crate::builtin::Builtin::Namespace) {
        subs.push(("finalize", vec!["update"]));
    }
    if r.builtin == Some(crate::builtin::Builtin::ServiceAccount) {
        subs.push(("token", vec!["create"]));
    }
    subs
}

fn group_discovery(
    group: &str,
    versions: &std::collections::BTreeMap<String, Vec<Arc<Resource>>>,
) -> Value {
    let ordered = versions_sorted(versions.keys().cloned().collect());
    let version_entries: Vec<Value> = ordered
        .iter()
        .map(|v| {
            let resources: Vec<Value> = versions[v]
                .iter()
                .map(|r| {
                    let mut entry = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        entry["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        entry["categories"] = json!(r.categories);
                    }
                    let subs: Vec<Value> = subresources(r)
                        .into_iter()
                        .map(|(sub, verbs)| json!({"subresource": sub, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind}, "verbs": verbs}))
                        .collect();
                    if !subs.is_empty() {
                        entry["subresources"] = json!(subs);
                    }
                    entry
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": version_entries})
}

fn aggregated_response(version: &str, items: Vec<Value>) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items});
    let response = request::json(200, &body, &[]);
    with_content_type(
        response,
        if version == "v2beta1" {
            AGGREGATED_V2BETA1
        } else {
            AGGREGATED_V2
        },
    )
}
