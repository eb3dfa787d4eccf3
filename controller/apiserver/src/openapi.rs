//! OpenAPI v3 documents per group-version (`/openapi/v3`), which kubectl needs for strict field
//! validation (a PATCH operation with `fieldValidation` per kind), `explain` and apply.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::builtin;
use crate::registry::{Registry, Resource};

/// One rendered group-version document.
#[derive(Clone, Debug)]
pub struct Document {
    /// Content hash (the `hash` query parameter and ETag).
    pub hash: String,
    /// The JSON text.
    pub body: String,
}

/// Every group-version document of a registry, keyed by `api/v1` or `apis/<group>/<version>`.
pub fn documents(registry: &Registry, server_version: &str) -> BTreeMap<String, Document> {
    group_versions(registry, server_version)
        .into_iter()
        .map(|(key, doc)| {
            let body = doc.to_string();
            let hash = content_hash(body.as_bytes());
            (key, Document { hash, body })
        })
        .collect()
}

/// The document of every group-version as JSON, keyed like [`documents`]; `/openapi/v2` is
/// derived from them.
pub fn group_versions(registry: &Registry, server_version: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (group, versions) in registry.groups() {
        for (version, resources) in versions {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            out.insert(key, document(&resources, server_version));
        }
    }
    out
}

/// A short content hash, as hex: the `hash` query parameter and the ETag of a document.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// The `/openapi/v3` index.
pub fn index(documents: &BTreeMap<String, Document>) -> Value {
    let paths: Map<String, Value> = documents
        .iter()
        .map(|(key, doc)| {
            (
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

fn param(name: &str, description: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
            "string",
        ),
        param(
            "fieldManager",
            "The name of the actor making these changes.",
            "string",
        ),
        param(
            "fieldValidation",
            "How to handle unknown or duplicate fields in the request: Ignore, Warn or Strict.",
            "string",
        ),
    ]
}

fn document(resources: &[std::sync::Arc<Resource>], server_version: &str) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let schema_ref = json!({"$ref": format!("#/components/schemas/{}", r.openapi_name)});
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let item = format!("{collection}/{{name}}");
        let op = |action: &str, id: &str| {
            json!({
                "operationId": format!("{id}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
            })
        };
        let mut path_params = vec![
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        ];
        if r.namespaced {
            path_params.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        let mut patch = op("patch", "patch");
        let mut patch_params = write_params();
        patch_params.push(param(
            "force",
            "Force apply: take ownership of conflicting fields.",
            "boolean",
        ));
        patch["parameters"] = Value::Array(patch_params);
        let body_schema = json!({"schema": {"type": "object"}});
        // No strategic merge patch for custom resources: kubectl then uses merge patch.
        let mut content = json!({
            "application/json-patch+json": body_schema,
            "application/merge-patch+json": body_schema,
            "application/apply-patch+yaml": body_schema,
        });
        if r.builtin.is_some() {
            content["application/strategic-merge-patch+json"] = body_schema.clone();
        }
        patch["requestBody"] = json!({"content": content, "required": true});
        let mut put = op("put", "replace");
        put["parameters"] = Value::Array(write_params());
        put["requestBody"] =
            json!({"content": {"application/json": {"schema": schema_ref}}, "required": true});
        let mut item_ops = json!({"get": op("get", "read"), "put": put, "patch": patch, "delete": op("delete", "delete")});
        item_ops["parameters"] = Value::Array(path_params.clone());
        paths.insert(item, item_ops);
        let mut post = op("post", "create");
        post["parameters"] = Value::Array(write_params());
        post["requestBody"] =
            json!({"content": {"application/json": {"schema": schema_ref}}, "required": true});
        let mut collection_ops = json!({"get": op("list", "list"), "post": post});
        if r.namespaced {
            collection_ops["parameters"] = json!([{"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        paths.insert(collection, collection_ops);
        if r.status_subresource {
            let status_path = format!(
                "{}/{{name}}/status",
                if r.namespaced {
                    format!("{base}/namespaces/{{namespace}}/{}", r.plural)
                } else {
                    format!("{base}/{}", r.plural)
                }
            );
            let mut status_patch = op("patch", "patchStatus");
            status_patch["parameters"] = patch_params_json();
            status_patch["requestBody"] = json!({"content": {"application/json-patch+json": {"schema": {"type": "object"}}, "application/merge-patch+json": {"schema": {"type": "object"}}, "application/apply-patch+yaml": {"schema": {"type": "object"}}}});
            let mut status_ops = json!({"get": op("get", "readStatus"), "patch": status_patch});
            status_ops["parameters"] = Value::Array(path_params);
            paths.insert(status_path, status_ops);
        }
        let mut schema = match r.builtin {
            Some(_) => builtin::definitions()
                .get(&r.openapi_name)
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
            None => crd_component(r),
        };
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        components.insert(r.openapi_name.clone(), schema);
    }
    // Everything the components refer to, from the built-in definitions.
    let mut pending: Vec<String> = components.values().flat_map(refs).collect();
    let mut seen: BTreeSet<String> = components.keys().cloned().collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = builtin::definitions().get(&name) {
            pending.extend(refs(def));
            components.insert(name, def.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": server_version},
        "paths": paths,
        "components": {"schemas": components},
    })
}

fn patch_params_json() -> Value {
    let mut params = write_params();
    params.push(param(
        "force",
        "Force apply: take ownership of conflicting fields.",
        "boolean",
    ));
    Value::Array(params)
}

/// A CRD version's schema as an OpenAPI component: apiVersion, kind and metadata added.
fn crd_component(r: &Resource) -> Value {
    let mut schema = r
        .schema
        .as_ref()
        .map(|s| s.source.clone())
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Some(props) = schema
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert(
            "metadata".into(),
            json!({"description": "Standard object's metadata.", "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}),
        );
    }
    schema
}

/// Names of the components a schema refers to.
fn refs(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    out.push(r.rsplit('/').next().unwrap_or(r).to_string());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}
