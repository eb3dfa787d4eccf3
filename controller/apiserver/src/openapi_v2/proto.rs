//! The messages of gnostic's `openapi.v2` protobuf package (`OpenAPIv2.proto`) that devplane
//! writes, with gnostic's field numbers. client-go decodes `/openapi/v2` into
//! `openapi_v2.Document`; fields devplane never sets are left out (a decoder skips what it
//! does not know, and omitted proto3 fields read as their defaults either way).

/// The whole Swagger 2.0 document.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    /// Always `2.0`.
    #[prost(string, tag = "1")]
    pub swagger: String,
    /// Title and version.
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    /// Default request media types.
    #[prost(string, repeated, tag = "6")]
    pub consumes: Vec<String>,
    /// Default response media types.
    #[prost(string, repeated, tag = "7")]
    pub produces: Vec<String>,
    /// The operations by path.
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    /// The named schemas `$ref`s point to.
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    /// `x-*` fields.
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

/// The document's title and version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    /// Title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// Version (the server's git version).
    #[prost(string, tag = "2")]
    pub version: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// `x-*` fields.
    #[prost(message, repeated, tag = "7")]
    pub vendor_extension: Vec<NamedAny>,
}

/// Any value, as YAML text (JSON text is YAML too).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The value's text.
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// A named [`Any`]: vendor extensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    /// Name (`x-kubernetes-…`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// The paths object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    /// `x-*` fields.
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    /// The operations of each path.
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// A path and its operations.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    /// The path template (`/apis/g/v/namespaces/{namespace}/kinds/{name}`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its operations.
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// The operations of one path, by method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    /// GET.
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    /// PUT.
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    /// POST.
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    /// DELETE.
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    /// PATCH.
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    /// Parameters shared by the operations (path parameters).
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    /// `x-*` fields.
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

/// One operation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    /// Tags.
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// `operationId`.
    #[prost(string, tag = "5")]
    pub operation_id: String,
    /// Response media types.
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    /// Request media types.
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    /// Parameters (query and body).
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    /// Responses by status code.
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    /// `x-kubernetes-action` and `x-kubernetes-group-version-kind`.
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// A parameter or a reference to one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    /// Which of the two.
    #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
    pub oneof: Option<parameters_item::Oneof>,
}

/// The choice of a [`ParametersItem`].
pub mod parameters_item {
    /// A parameter or a reference.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// A parameter.
        #[prost(message, tag = "1")]
        Parameter(super::Parameter),
        /// A `$ref`.
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

/// A `$ref`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JsonReference {
    /// The reference (`#/parameters/…`).
    #[prost(string, tag = "1")]
    pub reference: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// A body or non-body parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    /// Which of the two.
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

/// The choice of a [`Parameter`].
pub mod parameter {
    /// A body or a non-body parameter.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// The request body.
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        /// A query, path, header or form parameter.
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

/// The request body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Name (`body`).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Always `body`.
    #[prost(string, tag = "3")]
    pub r#in: String,
    /// Whether a body must be sent.
    #[prost(bool, tag = "4")]
    pub required: bool,
    /// Its schema (boxed, as schemas are large).
    #[prost(message, optional, boxed, tag = "5")]
    pub schema: Option<Box<Schema>>,
}

/// A parameter outside the body; devplane has query and path parameters only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    /// Which kind.
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

/// The choice of a [`NonBodyParameter`].
pub mod non_body_parameter {
    /// A query or a path parameter.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// A query parameter (what kubectl looks for to detect `fieldValidation`).
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameter),
        /// A path parameter.
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameter),
    }
}

/// A query parameter (`QueryParameterSubSchema`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameter {
    /// Whether it must be given.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// Always `query`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Primitive type.
    #[prost(string, tag = "6")]
    pub r#type: String,
    /// Format.
    #[prost(string, tag = "7")]
    pub format: String,
    /// Whether repeated values must differ.
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

/// A path parameter (`PathParameterSubSchema`; its field numbers differ from a query
/// parameter's, which has `allowEmptyValue`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameter {
    /// Always true.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// Always `path`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Primitive type.
    #[prost(string, tag = "5")]
    pub r#type: String,
    /// Format.
    #[prost(string, tag = "6")]
    pub format: String,
    /// Whether repeated values must differ.
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

/// Responses by status code.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    /// One per status code.
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

/// A status code and its response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    /// The status code (`200`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The response.
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// A response or a reference to one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    /// Which of the two.
    #[prost(oneof = "response_value::Oneof", tags = "1, 2")]
    pub oneof: Option<response_value::Oneof>,
}

/// The choice of a [`ResponseValue`].
pub mod response_value {
    /// A response or a reference.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// A response.
        #[prost(message, tag = "1")]
        Response(super::Response),
        /// A `$ref`.
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

/// A response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Its body's schema.
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// A response body's schema (`SchemaItem`; devplane never answers with a file).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    /// The schema.
    #[prost(oneof = "schema_item::Oneof", tags = "1")]
    pub oneof: Option<schema_item::Oneof>,
}

/// The choice of a [`SchemaItem`].
pub mod schema_item {
    /// A schema.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// A schema (boxed, as schemas are large).
        #[prost(message, tag = "1")]
        Schema(Box<super::Schema>),
    }
}

/// The named schemas of the document.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    /// One per definition.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// A named schema: a definition or a property.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Schema.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// A Swagger 2.0 schema.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    /// `$ref` (`#/definitions/…`).
    #[prost(string, tag = "1")]
    pub reference: String,
    /// Format.
    #[prost(string, tag = "2")]
    pub format: String,
    /// Title.
    #[prost(string, tag = "3")]
    pub title: String,
    /// Description (what `kubectl explain` prints).
    #[prost(string, tag = "4")]
    pub description: String,
    /// Default.
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    /// `multipleOf`.
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    /// `maximum`.
    #[prost(double, tag = "7")]
    pub maximum: f64,
    /// `exclusiveMaximum`.
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    /// `minimum`.
    #[prost(double, tag = "9")]
    pub minimum: f64,
    /// `exclusiveMinimum`.
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    /// `maxLength`.
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    /// `minLength`.
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    /// `pattern`.
    #[prost(string, tag = "13")]
    pub pattern: String,
    /// `maxItems`.
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    /// `minItems`.
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    /// `uniqueItems`.
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    /// `maxProperties`.
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    /// `minProperties`.
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    /// Required properties.
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    /// Allowed values.
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    /// `additionalProperties`: a schema or a boolean.
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    /// `type`.
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    /// `items`.
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    /// `allOf`.
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    /// `properties`.
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    /// `discriminator`.
    #[prost(string, tag = "26")]
    pub discriminator: String,
    /// `readOnly`.
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    /// `example`.
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    /// `x-*` fields (`x-kubernetes-group-version-kind`, `x-kubernetes-list-type`, …).
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `additionalProperties`: a schema or a boolean.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    /// Which of the two.
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

/// The choice of an [`AdditionalPropertiesItem`].
pub mod additional_properties_item {
    /// A schema or a boolean.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// The schema of every additional property.
        #[prost(message, tag = "1")]
        Schema(Box<super::Schema>),
        /// Whether additional properties are allowed.
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

/// `type`: a list of type names (one, in practice).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    /// Type names.
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `items`: the schema of every item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    /// The item schemas (one, in practice).
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    /// One per property.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}
