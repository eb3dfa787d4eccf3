use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::proto::{self, additional_properties_item, non_body_parameter, parameter};
use super::{Document, Format, encode, negotiate, swagger};
use crate::builtin::crd_resources;
use crate::registry::{Registry, RegistryCache};
use crate::{ApiServer, ApiServerConfig, Caller};

/// A CRD with what Swagger 2.0 lacks (`nullable`) and a property named like an extension.
fn thing_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.demo.example.io"},
        "spec": {
            "group": "demo.example.io",
            "scope": "Namespaced",
            "names": {"kind": "Thing", "plural": "things"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A thing.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "description": "What the thing should be.",
                            "properties": {
                                "colour": {"type": "string", "nullable": true, "enum": ["red", "blue"]},
                                "port": {"x-kubernetes-int-or-string": true},
                                "x-custom": {"type": "string", "description": "Named like an extension."},
                                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                                "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
                            },
                        },
                    },
                }},
            }],
        },
    })
}

fn registry() -> Registry {
    Registry::new(crd_resources(&thing_crd()).expect("a valid CRD"), 1)
}

fn decoded(doc: &Document) -> proto::Document {
    proto::Document::decode(doc.protobuf.body.clone()).expect("the protobuf decodes")
}

fn definition<'a>(doc: &'a proto::Document, name: &str) -> &'a proto::Schema {
    let defs = doc.definitions.as_ref().expect("definitions");
    let found = defs.additional_properties.iter().find(|d| d.name == name);
    found.and_then(|d| d.value.as_ref()).expect(name)
}

fn property<'a>(schema: &'a proto::Schema, name: &str) -> &'a proto::Schema {
    let props = schema.properties.as_ref().expect("properties");
    let found = props.additional_properties.iter().find(|p| p.name == name);
    found.and_then(|p| p.value.as_ref()).expect(name)
}

fn extension(extensions: &[proto::NamedAny], name: &str) -> Option<serde_yaml::Value> {
    let found = extensions.iter().find(|e| e.name == name)?;
    serde_yaml::from_str(&found.value.as_ref()?.yaml).ok()
}

#[test]
fn the_protobuf_is_the_json_document_field_for_field() {
    let doc = Document::build(&registry(), "v1.33.0");
    let json: Value = serde_json::from_slice(&doc.json.body).expect("JSON");
    assert_eq!(json["swagger"], "2.0");
    assert_eq!(decoded(&doc), encode::document(&json));
}

#[test]
fn definitions_carry_their_kind_and_descriptions() {
    let doc = decoded(&Document::build(&registry(), "v1.33.0"));
    let thing = definition(&doc, "io.example.demo.v1.Thing");
    let kinds = extension(&thing.vendor_extension, "x-kubernetes-group-version-kind");
    let expected: serde_yaml::Value =
        serde_yaml::from_str("[{group: demo.example.io, version: v1, kind: Thing}]").expect("YAML");
    assert_eq!(kinds, Some(expected));
    let spec = property(thing, "spec");
    assert_eq!(spec.description, "What the thing should be.");
    assert_eq!(
        property(thing, "metadata").reference,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(
        property(spec, "x-custom").description,
        "Named like an extension."
    );
    let colour = property(spec, "colour");
    let colours: Vec<&str> = colour.r#enum.iter().map(|e| e.yaml.as_str()).collect();
    assert_eq!(colours, ["\"red\"", "\"blue\""]);
    let tags = property(spec, "tags");
    assert_eq!(tags.items.as_ref().map(|i| i.schema.len()), Some(1));
    assert!(extension(&tags.vendor_extension, "x-kubernetes-list-type").is_some());
    let extra = property(spec, "extra").additional_properties.as_deref();
    assert!(matches!(
        extra.and_then(|a| a.oneof.as_ref()),
        Some(additional_properties_item::Oneof::Schema(s)) if s.r#type.as_ref().map(|t| t.value.clone()) == Some(vec!["integer".to_string()])
    ));
}

/// What kubectl does to learn that the server validates fields: the first PATCH of a kind
/// must list `fieldValidation` as a query parameter.
fn patch_query_parameters(doc: &proto::Document, kind: &str) -> Vec<String> {
    let paths = doc
        .paths
        .as_ref()
        .map(|p| p.path.as_slice())
        .unwrap_or_default();
    let patch = paths
        .iter()
        .filter_map(|p| p.value.as_ref()?.patch.as_ref())
        .find(|op| {
            let gvk = extension(&op.vendor_extension, "x-kubernetes-group-version-kind");
            gvk.and_then(|g| g.get("kind").and_then(|k| k.as_str()).map(str::to_string))
                == Some(kind.to_string())
        })
        .expect("a PATCH of the kind");
    patch
        .parameters
        .iter()
        .filter_map(|p| match p.oneof.as_ref()? {
            proto::parameters_item::Oneof::Parameter(proto::Parameter {
                oneof: Some(parameter::Oneof::NonBodyParameter(p)),
            }) => match p.oneof.as_ref()? {
                non_body_parameter::Oneof::QueryParameterSubSchema(q) => Some(q.name.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn every_patch_lists_field_validation_dry_run_and_field_manager() {
    let registry = registry();
    let doc = decoded(&Document::build(&registry, "v1.33.0"));
    for resource in registry.resources() {
        let params = patch_query_parameters(&doc, &resource.kind);
        for name in ["fieldValidation", "dryRun", "fieldManager"] {
            assert!(params.iter().any(|p| p == name), "{} {name}", resource.kind);
        }
    }
}

/// The checks kubectl's schema reader (kube-openapi's `proto.NewOpenAPIData`) makes: one bad
/// schema and kubectl reads none.
fn assert_readable(schema: &proto::Schema, names: &BTreeMap<&str, ()>, at: &str) {
    if !schema.reference.is_empty() {
        let target = schema.reference.trim_start_matches("#/definitions/");
        assert!(names.contains_key(target), "{at}: unknown {target}");
        return;
    }
    let types = schema
        .r#type
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    assert!(types.len() <= 1, "{at}: {types:?}");
    if let Some(t) = types.first() {
        let known = ["object", "array", "string", "integer", "number", "boolean"];
        assert!(known.contains(&t.as_str()), "{at}: type {t}");
        if t == "array" {
            assert_eq!(
                schema.items.as_ref().map(|i| i.schema.len()),
                Some(1),
                "{at}"
            );
        }
    }
    let props = schema
        .properties
        .iter()
        .flat_map(|p| &p.additional_properties);
    for prop in props {
        let inner = prop.value.as_ref().expect("property schema");
        assert_readable(inner, names, &format!("{at}.{}", prop.name));
    }
    for item in schema.items.iter().flat_map(|i| &i.schema) {
        assert_readable(item, names, &format!("{at}[]"));
    }
    let additional = schema
        .additional_properties
        .as_deref()
        .and_then(|a| a.oneof.as_ref());
    if let Some(additional_properties_item::Oneof::Schema(inner)) = additional {
        assert_readable(inner, names, &format!("{at}{{}}"));
    }
    for inner in &schema.all_of {
        assert_readable(inner, names, at);
    }
}

#[test]
fn every_schema_is_one_kubectl_can_read() {
    let doc = decoded(&Document::build(&registry(), "v1.33.0"));
    let defs = &doc
        .definitions
        .as_ref()
        .expect("definitions")
        .additional_properties;
    let names: BTreeMap<&str, ()> = defs.iter().map(|d| (d.name.as_str(), ())).collect();
    assert!(names.contains_key("io.k8s.api.core.v1.ConfigMap"));
    for def in defs {
        assert_readable(def.value.as_ref().expect("schema"), &names, &def.name);
    }
}

#[test]
fn schemas_lose_what_swagger_2_lacks() {
    let v3 = json!({
        "properties": {
            "a": {"type": "string", "nullable": true, "writeOnly": true},
            "b": {"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "Either."},
            "c": {"allOf": [{"$ref": "#/components/schemas/io.k8s.X"}], "description": "An X."},
            "d": {"type": ["integer", "null"]},
            "e": {"type": "array"},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    let expected = json!({
        "properties": {
            "a": {"type": "string"},
            "b": {"description": "Either."},
            "c": {"$ref": "#/definitions/io.k8s.X", "description": "An X."},
            "d": {"type": "integer"},
            "e": {"type": "array", "items": {}},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    assert_eq!(swagger::schema(&v3), expected);
}

fn accept(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_str(value).expect("header"),
    );
    headers
}

#[test]
fn negotiation_serves_protobuf_to_client_go_and_json_by_default() {
    let client_go = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    assert_eq!(negotiate(&accept(client_go)), Some(Format::Protobuf));
    let dotted = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    assert_eq!(negotiate(&accept(dotted)), Some(Format::Protobuf));
    assert_eq!(negotiate(&HeaderMap::new()), Some(Format::Json));
    assert_eq!(
        negotiate(&accept("application/json, */*")),
        Some(Format::Json)
    );
    let preferred = format!("application/json;q=0.5, {client_go}");
    assert_eq!(negotiate(&accept(&preferred)), Some(Format::Protobuf));
    assert_eq!(negotiate(&accept("application/json;q=0")), None);
    assert_eq!(negotiate(&accept("text/html")), None);
}

#[test]
fn a_known_etag_gets_not_modified() {
    let doc = Document::build(&registry(), "v1.33.0");
    let first = doc.respond(Format::Protobuf, &HeaderMap::new());
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()[header::ETAG].clone();
    let mut headers = HeaderMap::new();
    headers.insert(header::IF_NONE_MATCH, etag.clone());
    let again = doc.respond(Format::Protobuf, &headers);
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag);
    assert_eq!(
        doc.respond(Format::Json, &headers).status(),
        StatusCode::OK,
        "each representation has its own ETag"
    );
}

#[test]
fn the_cached_document_is_rebuilt_when_the_registry_changes() {
    let cache = RegistryCache::default();
    let build = |r: &Registry| Document::build(r, "v1.33.0");
    let first = cache.get(&registry(), build);
    assert!(std::sync::Arc::ptr_eq(
        &first,
        &cache.get(&registry(), build)
    ));
    let without_crds = Registry::new(Vec::new(), 2);
    let rebuilt = cache.get(&without_crds, build);
    assert!(!std::sync::Arc::ptr_eq(&first, &rebuilt));
    assert_ne!(first.protobuf.etag, rebuilt.protobuf.etag);
}

/// A GET through the router: status, `Content-Type` and body.
async fn get(router: &Router, path: &str, accept: &str) -> (StatusCode, String, Bytes) {
    let request = Request::get(path)
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
        .await
        .expect("the handler answers in time")
        .expect("infallible router");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.into_body().collect().await.expect("body");
    (status, content_type, body.to_bytes())
}

#[tokio::test]
async fn the_router_serves_client_go_protobuf_also_at_the_legacy_path() {
    let store = devplane_store::open("memory://").await.expect("store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("server");
    let router = server.in_process_router(Caller::new("admin", &["system:masters"]));
    let client_go = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (status, content_type, body) = get(&router, "/openapi/v2", client_go).await;
    assert_eq!(status, StatusCode::OK);
    // client-go parses the Content-Type, which may not contain an `@`.
    assert_eq!(
        content_type,
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let doc = proto::Document::decode(body.clone()).expect("the protobuf decodes");
    let config_map = definition(&doc, "io.k8s.api.core.v1.ConfigMap");
    let kinds = extension(
        &config_map.vendor_extension,
        "x-kubernetes-group-version-kind",
    );
    let expected: serde_yaml::Value =
        serde_yaml::from_str("[{group: '', version: v1, kind: ConfigMap}]").expect("YAML");
    assert_eq!(kinds, Some(expected));
    let (status, _, legacy) = get(&router, "/swagger-2.0.0.pb-v1", "application/json, */*").await;
    assert_eq!((status, legacy), (StatusCode::OK, body));
    let (status, content_type, json) = get(&router, "/openapi/v2", "application/json").await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/json")
    );
    let json: Value = serde_json::from_slice(&json).expect("JSON");
    assert!(json["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"].is_object());
    let (status, _, _) = get(&router, "/openapi/v2", "text/html").await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}
