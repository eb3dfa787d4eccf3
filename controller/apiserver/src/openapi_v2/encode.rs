//! A Swagger 2.0 document in JSON as gnostic's protobuf messages, field by field the way
//! gnostic reads JSON: `x-*` fields become vendor extensions and free-form values (defaults,
//! enums, extensions) are kept as text, which client-go parses as YAML (JSON is YAML).

use serde_json::{Map, Value};

use super::proto;

/// The protobuf message of a Swagger 2.0 document.
pub fn document(doc: &Value) -> proto::Document {
    proto::Document {
        swagger: string(doc, "swagger"),
        info: doc.get("info").map(|info| proto::Info {
            title: string(info, "title"),
            version: string(info, "version"),
            description: string(info, "description"),
            vendor_extension: extensions(info),
        }),
        consumes: strings(doc, "consumes"),
        produces: strings(doc, "produces"),
        paths: doc.get("paths").map(|paths| proto::Paths {
            vendor_extension: extensions(paths),
            path: fields(paths)
                .map(|(name, item)| proto::NamedPathItem {
                    name: name.clone(),
                    value: Some(path_item(item)),
                })
                .collect(),
        }),
        definitions: doc.get("definitions").map(|defs| proto::Definitions {
            additional_properties: named_schemas(defs),
        }),
        vendor_extension: extensions(doc),
    }
}

fn path_item(item: &Value) -> proto::PathItem {
    let op = |method: &str| item.get(method).map(operation);
    proto::PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        patch: op("patch"),
        parameters: parameters(item),
        vendor_extension: extensions(item),
    }
}

fn operation(op: &Value) -> proto::Operation {
    proto::Operation {
        tags: strings(op, "tags"),
        description: string(op, "description"),
        operation_id: string(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses: op.get("responses").map(|responses| proto::Responses {
            response_code: fields(responses)
                .map(|(code, response)| proto::NamedResponseValue {
                    name: code.clone(),
                    value: Some(response_value(response)),
                })
                .collect(),
        }),
        vendor_extension: extensions(op),
    }
}

fn response_value(response: &Value) -> proto::ResponseValue {
    use proto::response_value::Oneof;
    let oneof = match response.get("$ref") {
        Some(reference) => Oneof::JsonReference(json_reference(reference, response)),
        None => Oneof::Response(proto::Response {
            description: string(response, "description"),
            schema: response.get("schema").map(|s| proto::SchemaItem {
                oneof: Some(proto::schema_item::Oneof::Schema(Box::new(schema(s)))),
            }),
        }),
    };
    proto::ResponseValue { oneof: Some(oneof) }
}

fn json_reference(reference: &Value, owner: &Value) -> proto::JsonReference {
    proto::JsonReference {
        reference: reference.as_str().unwrap_or_default().to_string(),
        description: string(owner, "description"),
    }
}

/// The `parameters` of a path or an operation; kinds devplane does not write (header and form
/// parameters) are left out.
fn parameters(owner: &Value) -> Vec<proto::ParametersItem> {
    let params = owner.get("parameters").and_then(Value::as_array);
    params
        .into_iter()
        .flatten()
        .filter_map(parameter)
        .map(|oneof| proto::ParametersItem { oneof: Some(oneof) })
        .collect()
}

fn parameter(param: &Value) -> Option<proto::parameters_item::Oneof> {
    use proto::non_body_parameter::Oneof as NonBody;
    use proto::parameter::Oneof as Kind;
    use proto::parameters_item::Oneof as Item;
    if let Some(reference) = param.get("$ref") {
        return Some(Item::JsonReference(json_reference(reference, param)));
    }
    let kind = match param.get("in").and_then(Value::as_str)? {
        "body" => Kind::BodyParameter(proto::BodyParameter {
            description: string(param, "description"),
            name: string(param, "name"),
            r#in: "body".into(),
            required: boolean(param, "required"),
            schema: param.get("schema").map(|s| Box::new(schema(s))),
        }),
        "query" => Kind::NonBodyParameter(proto::NonBodyParameter {
            oneof: Some(NonBody::QueryParameterSubSchema(proto::QueryParameter {
                required: boolean(param, "required"),
                r#in: "query".into(),
                description: string(param, "description"),
                name: string(param, "name"),
                r#type: string(param, "type"),
                format: string(param, "format"),
                unique_items: boolean(param, "uniqueItems"),
            })),
        }),
        "path" => Kind::NonBodyParameter(proto::NonBodyParameter {
            oneof: Some(NonBody::PathParameterSubSchema(proto::PathParameter {
                required: boolean(param, "required"),
                r#in: "path".into(),
                description: string(param, "description"),
                name: string(param, "name"),
                r#type: string(param, "type"),
                format: string(param, "format"),
                unique_items: boolean(param, "uniqueItems"),
            })),
        }),
        _ => return None,
    };
    Some(Item::Parameter(proto::Parameter { oneof: Some(kind) }))
}

/// A schema; a boolean schema (`true`) is an empty one.
pub fn schema(s: &Value) -> proto::Schema {
    proto::Schema {
        reference: string(s, "$ref"),
        format: string(s, "format"),
        title: string(s, "title"),
        description: string(s, "description"),
        default: s.get("default").map(any),
        multiple_of: number(s, "multipleOf"),
        maximum: number(s, "maximum"),
        exclusive_maximum: boolean(s, "exclusiveMaximum"),
        minimum: number(s, "minimum"),
        exclusive_minimum: boolean(s, "exclusiveMinimum"),
        max_length: integer(s, "maxLength"),
        min_length: integer(s, "minLength"),
        pattern: string(s, "pattern"),
        max_items: integer(s, "maxItems"),
        min_items: integer(s, "minItems"),
        unique_items: boolean(s, "uniqueItems"),
        max_properties: integer(s, "maxProperties"),
        min_properties: integer(s, "minProperties"),
        required: strings(s, "required"),
        r#enum: s
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(any)
            .collect(),
        additional_properties: s.get("additionalProperties").map(additional_properties),
        r#type: s.get("type").map(|t| proto::TypeItem {
            value: match t {
                Value::Array(_) => strings(s, "type"),
                other => vec![other.as_str().unwrap_or_default().to_string()],
            },
        }),
        items: s.get("items").map(|items| proto::ItemsItem {
            schema: match items {
                Value::Array(list) => list.iter().map(schema).collect(),
                one => vec![schema(one)],
            },
        }),
        all_of: s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(schema)
            .collect(),
        properties: s.get("properties").map(|props| proto::Properties {
            additional_properties: named_schemas(props),
        }),
        discriminator: string(s, "discriminator"),
        read_only: boolean(s, "readOnly"),
        example: s.get("example").map(any),
        vendor_extension: extensions(s),
    }
}

fn additional_properties(value: &Value) -> Box<proto::AdditionalPropertiesItem> {
    use proto::additional_properties_item::Oneof;
    let oneof = match value {
        Value::Bool(allowed) => Oneof::Boolean(*allowed),
        s => Oneof::Schema(Box::new(schema(s))),
    };
    Box::new(proto::AdditionalPropertiesItem { oneof: Some(oneof) })
}

/// Definitions or properties: every entry (a property may well be called `x-…`).
fn named_schemas(map: &Value) -> Vec<proto::NamedSchema> {
    map.as_object()
        .into_iter()
        .flat_map(Map::iter)
        .map(|(name, s)| proto::NamedSchema {
            name: name.clone(),
            value: Some(schema(s)),
        })
        .collect()
}

/// The `x-*` fields of an object as vendor extensions.
fn extensions(owner: &Value) -> Vec<proto::NamedAny> {
    owner
        .as_object()
        .into_iter()
        .flat_map(Map::iter)
        .filter(|(name, _)| name.starts_with("x-"))
        .map(|(name, value)| proto::NamedAny {
            name: name.clone(),
            value: Some(any(value)),
        })
        .collect()
}

/// The entries of paths or responses that are not extensions.
fn fields(map: &Value) -> impl Iterator<Item = (&String, &Value)> {
    map.as_object()
        .into_iter()
        .flat_map(Map::iter)
        .filter(|(name, _)| !name.starts_with("x-"))
}

fn any(value: &Value) -> proto::Any {
    proto::Any {
        yaml: value.to_string(),
    }
}

fn string(owner: &Value, key: &str) -> String {
    owner
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(owner: &Value, key: &str) -> Vec<String> {
    let list = owner.get(key).and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn boolean(owner: &Value, key: &str) -> bool {
    owner.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn number(owner: &Value, key: &str) -> f64 {
    owner.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn integer(owner: &Value, key: &str) -> i64 {
    owner.get(key).and_then(Value::as_i64).unwrap_or(0)
}
