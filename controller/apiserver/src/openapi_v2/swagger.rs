//! One Swagger 2.0 document from the OpenAPI v3 documents of every group-version: request
//! bodies become `body` parameters, parameter schemas are flattened into the parameters, and
//! schemas keep only what Swagger 2.0 has (no `nullable`, `oneOf`, `anyOf` or `not`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Where OpenAPI v3 documents keep their named schemas.
const V3_REFS: &str = "#/components/schemas/";
/// Where Swagger 2.0 documents keep them.
const V2_REFS: &str = "#/definitions/";
/// The extension that names the kinds of a definition (a list) or of an operation (one).
const GVK: &str = "x-kubernetes-group-version-kind";

/// Schema keywords Swagger 2.0 has; other keywords are dropped, `x-*` extensions kept.
const SCHEMA_KEYWORDS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "allOf",
    "properties",
    "readOnly",
    "example",
];

/// The type names kubectl's schema reader accepts (`null` is not among them).
const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

/// The Swagger 2.0 document of the given group-version documents (`openapi::group_versions`).
pub fn document(group_versions: &BTreeMap<String, Value>, server_version: &str) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for doc in group_versions.values() {
        for (path, item) in doc
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            paths.insert(path.clone(), path_item(item));
        }
        let components = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object);
        for (name, def) in components.into_iter().flatten() {
            add_definition(&mut definitions, name, schema(def));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": server_version},
        "paths": paths,
        "definitions": definitions,
    })
}

/// Add a definition; one already there (a type several group-versions refer to) gains the
/// kinds of the new one.
fn add_definition(definitions: &mut Map<String, Value>, name: &str, def: Value) {
    let Some(existing) = definitions.get_mut(name) else {
        definitions.insert(name.to_string(), def);
        return;
    };
    let Some(kinds) = def.get(GVK).and_then(Value::as_array) else {
        return;
    };
    let Some(existing) = existing.as_object_mut() else {
        return;
    };
    if let Some(list) = existing
        .entry(GVK)
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        for kind in kinds {
            if !list.contains(kind) {
                list.push(kind.clone());
            }
        }
    }
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        let converted = match key.as_str() {
            "parameters" => Value::Array(parameters(value)),
            "get" | "put" | "post" | "delete" | "patch" => operation(value),
            k if k.starts_with("x-") => value.clone(),
            _ => continue,
        };
        out.insert(key.clone(), converted);
    }
    Value::Object(out)
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    let mut params = Vec::new();
    for (key, value) in op.as_object().into_iter().flatten() {
        match key.as_str() {
            "parameters" => params.extend(parameters(value)),
            "requestBody" => {
                out.insert("consumes".into(), media_types(value));
                params.insert(0, body_parameter(value));
            }
            "responses" => {
                out.insert("produces".into(), produced(value));
                out.insert("responses".into(), responses(value));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(out)
}

/// Non-body parameters: the v3 `schema` of a parameter is spread into the parameter.
fn parameters(params: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for param in params.as_array().into_iter().flatten() {
        let Some(fields) = param.as_object() else {
            continue;
        };
        let mut converted: Map<String, Value> = fields
            .iter()
            .filter(|(key, _)| *key != "schema")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if let Some(Value::Object(schema)) = fields.get("schema") {
            for (key, value) in schema {
                converted.insert(key.clone(), value.clone());
            }
        }
        out.push(Value::Object(converted));
    }
    out
}

/// The request body as the `body` parameter, with the schema of its first media type.
fn body_parameter(request_body: &Value) -> Value {
    let body_schema = first_schema(request_body).unwrap_or_else(|| json!({"type": "object"}));
    json!({
        "name": "body",
        "in": "body",
        "required": request_body.get("required").and_then(Value::as_bool).unwrap_or(false),
        "schema": body_schema,
    })
}

fn first_schema(with_content: &Value) -> Option<Value> {
    with_content
        .get("content")?
        .as_object()?
        .values()
        .find_map(|media| media.get("schema"))
        .map(schema)
}

fn media_types(with_content: &Value) -> Value {
    let types = with_content.get("content").and_then(Value::as_object);
    Value::Array(types.into_iter().flatten().map(|(t, _)| json!(t)).collect())
}

/// Every media type any response is sent as.
fn produced(responses: &Value) -> Value {
    let mut types: Vec<Value> = Vec::new();
    for response in responses.as_object().into_iter().flatten().map(|(_, r)| r) {
        for t in media_types(response).as_array().into_iter().flatten() {
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
    }
    Value::Array(types)
}

fn responses(responses: &Value) -> Value {
    let mut out = Map::new();
    for (code, response) in responses.as_object().into_iter().flatten() {
        let mut converted = json!({
            "description": response.get("description").cloned().unwrap_or_else(|| json!("")),
        });
        if let Some(body) = first_schema(response) {
            converted["schema"] = body;
        }
        out.insert(code.clone(), converted);
    }
    Value::Object(out)
}

/// A v3 schema as a Swagger 2.0 schema.
pub fn schema(v3: &Value) -> Value {
    let Some(fields) = v3.as_object() else {
        return v3.clone();
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let converted = match key.as_str() {
            "$ref" => reference(value),
            "type" => match type_name(value) {
                Some(name) => name,
                None => continue,
            },
            "items" | "additionalProperties" => schema(value),
            "allOf" => Value::Array(value.as_array().into_iter().flatten().map(schema).collect()),
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, property)| (name.clone(), schema(property)))
                    .collect(),
            ),
            k if k.starts_with("x-") || SCHEMA_KEYWORDS.contains(&k) => value.clone(),
            _ => continue,
        };
        out.insert(key.clone(), converted);
    }
    lift_single_reference(&mut out);
    if out.get("type") == Some(&json!("array")) && !out.contains_key("items") {
        // kubectl rejects an array schema without items; any item will do.
        out.insert("items".into(), json!({}));
    }
    Value::Object(out)
}

fn reference(value: &Value) -> Value {
    match value.as_str() {
        Some(r) => json!(r.replace(V3_REFS, V2_REFS)),
        None => value.clone(),
    }
}

/// One type name kubectl understands: `["string", "null"]` is `string`, `null` alone or
/// several types are no type at all.
fn type_name(value: &Value) -> Option<Value> {
    let names: Vec<&str> = match value {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let names: Vec<&str> = names.into_iter().filter(|n| *n != "null").collect();
    match names.as_slice() {
        [one] if TYPES.contains(one) => Some(json!(one)),
        _ => None,
    }
}

/// `allOf: [{$ref}]` (how OpenAPI v3 gives a reference a description) as a plain `$ref` with
/// the description beside it, as kube-apiserver writes it in v2: kubectl follows a `$ref`
/// but not an `allOf`.
fn lift_single_reference(schema: &mut Map<String, Value>) {
    let single = match schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([only]) => only.clone(),
        _ => return,
    };
    let Some(reference) = single.get("$ref") else {
        return;
    };
    if single.as_object().is_some_and(|o| o.len() == 1) && !schema.contains_key("$ref") {
        schema.insert("$ref".into(), reference.clone());
        schema.remove("allOf");
    }
}
