//! The storage codec: objects between the view a resource serves and the bytes the store
//! keeps, and request bodies parsed into objects.

use bytes::Bytes;
use devplane_store::{KeyValue, Rev};
use serde_json::{Value, json};

use super::Request;
use crate::builtin::{self, Builtin};
use crate::error::{ApiError, ApiResult};
use crate::object::meta_mut;
use crate::registry::Resource;
use crate::server::Inner;

/// The object in the representation a resource serves (Events through events.k8s.io/v1 are
/// renamed; everything gets apiVersion and kind).
fn to_view(resource: &Resource, mut stored: Value) -> Value {
    if resource.builtin == Some(Builtin::EventsV1) {
        return builtin::event_to_v1(stored);
    }
    if let Some(map) = stored.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(resource.api_version()));
        map.insert("kind".into(), Value::String(resource.kind.clone()));
    }
    stored
}

/// An object in the view of `from` as `to` shows it, for resources of one storage (another
/// served version of a kind, or Events through the other group): what admission webhooks
/// matched through an equivalent resource see.
pub fn convert(from: &Resource, to: &Resource, view: Value) -> Value {
    to_view(to, to_storage(from, view))
}

fn to_storage(resource: &Resource, view: Value) -> Value {
    if resource.builtin == Some(Builtin::EventsV1) {
        builtin::event_from_v1(view)
    } else {
        view
    }
}

/// Stored bytes of an object: JSON without its resourceVersion (that comes from the store).
pub(super) fn encode(resource: &Resource, view: &Value) -> ApiResult<Bytes> {
    let encoded = if resource.builtin == Some(Builtin::EventsV1) {
        serde_json::to_vec(&Stored(&to_storage(resource, view.clone())))
    } else {
        serde_json::to_vec(&Stored(view))
    };
    encoded
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// An object as stored: its metadata without `resourceVersion` and `selfLink`, serialized
/// without copying the object.
struct Stored<'a>(&'a Value);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(object) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(object.len()))?;
        for (key, value) in object {
            match value {
                Value::Object(meta) if key == "metadata" => {
                    map.serialize_entry(key, &StoredMetadata(meta))?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

/// Metadata as stored.
struct StoredMetadata<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for StoredMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0 {
            if key != "resourceVersion" && key != "selfLink" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// An object read from the store, in the resource's view, with its resourceVersion.
pub fn decode(resource: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    let stored: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    let mut view = to_view(resource, stored);
    meta_mut(&mut view).insert(
        "resourceVersion".into(),
        Value::String(kv.mod_rev.to_string()),
    );
    Ok(view)
}

/// Parse an object body by content type: protobuf (as kubectl sends some built-in kinds),
/// else JSON or YAML.
pub(super) fn parse_object_body(req: &Request) -> ApiResult<Value> {
    if req.content_type() == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(&req.body)
            .map_err(|e| ApiError::unsupported_media_type(e.to_string()));
    }
    parse_body(&req.body)
}

/// Parse a request body: JSON, or YAML for apply patches and lenient clients.
pub(super) fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_error) => serde_yaml::from_slice::<Value>(body).map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON or YAML: {json_error}"
            ))
        }),
    }
}

impl Inner {
    /// Read one object.
    pub async fn read(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<(Value, Rev)>> {
        match self.read_stored(resource, namespace, name).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode(resource, &kv)?, kv.mod_rev))),
        }
    }

    /// Read one object as the store holds it.
    pub async fn read_stored(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<KeyValue>> {
        Ok(self.store.get(&resource.key(namespace, name)).await?)
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}
