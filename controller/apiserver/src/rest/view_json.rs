//! An object's JSON in its resource's view, written from the bytes the store keeps.
//!
//! Watches, GETs and lists of full objects serve an object exactly as stored except for
//! `apiVersion`, `kind` and `metadata.resourceVersion`. Parsing the whole object into a
//! `Value` only to write it out again costs several times more than reading its top level
//! and its metadata: everything else is copied as the stored text, which this server wrote
//! from a `Value` in the first place (compact, keys in `Map` order), so the bytes are the same
//! as the long way round. One exception, for the better: a float with an extreme exponent is
//! served as stored, where parsing it (serde_json without `float_roundtrip`) and writing it
//! again may change its last digit.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;

use devplane_store::KeyValue;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codec::decode;
use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;

/// The JSON of a stored object in its resource's view, with its resourceVersion: the text of
/// `serde_json::to_vec(&decode(resource, kv)?)`.
pub fn view_json(resource: &Resource, kv: &KeyValue) -> ApiResult<Vec<u8>> {
    // Room for what the view adds, so the text is written into one allocation.
    let mut out = Vec::with_capacity(kv.value.len() + 128);
    write_view_json(resource, kv, &mut out)?;
    Ok(out)
}

/// Append [`view_json`] to `out`.
pub fn write_view_json(resource: &Resource, kv: &KeyValue, out: &mut Vec<u8>) -> ApiResult<()> {
    let encode_error = |e: serde_json::Error| {
        ApiError::internal(format!("cannot encode stored object {}: {e}", kv.key))
    };
    // Events through events.k8s.io/v1 are renamed field by field: they take the long way.
    if resource.builtin != Some(Builtin::EventsV1) {
        let api_version = resource.api_version();
        let revision = kv.mod_rev.to_string();
        let view = TypeMeta {
            api_version: &api_version,
            kind: &resource.kind,
        };
        if let Some(object) = view.of_stored(&kv.value, &revision) {
            return serde_json::to_writer(out, &object).map_err(encode_error);
        }
    }
    // Not a JSON object (or not JSON at all): `decode` makes of it what it always did, or
    // reports why it cannot.
    serde_json::to_writer(out, &decode(resource, kv)?).map_err(encode_error)
}

/// What the view sets on every object.
struct TypeMeta<'a> {
    api_version: &'a str,
    kind: &'a str,
}

/// An object's fields by name: in `serde_json::Map`'s order (a `BTreeMap` of strings, as this
/// workspace builds serde_json without `preserve_order`).
type Fields<'a> = BTreeMap<Key<'a>, Field<'a>>;

impl<'a> TypeMeta<'a> {
    /// The view of the stored object `stored` at revision `revision`, or `None` when `stored`
    /// is not a JSON object.
    fn of_stored(&self, stored: &'a [u8], revision: &'a str) -> Option<Fields<'a>> {
        let top: BTreeMap<Key<'a>, &'a RawValue> = serde_json::from_slice(stored).ok()?;
        let mut object: Fields<'a> = top
            .into_iter()
            .map(|(key, value)| (key, Field::Stored(value)))
            .collect();
        object.insert(Key::from("apiVersion"), Field::Text(self.api_version));
        object.insert(Key::from("kind"), Field::Text(self.kind));
        // As `meta_mut` does: metadata that is not an object is replaced by one.
        let mut metadata = match object.remove("metadata") {
            Some(Field::Stored(raw)) if raw.get().starts_with('{') => {
                let fields: BTreeMap<Key<'a>, &'a RawValue> =
                    serde_json::from_str(raw.get()).ok()?;
                fields
                    .into_iter()
                    .map(|(key, value)| (key, Field::Stored(value)))
                    .collect()
            }
            _ => Fields::new(),
        };
        metadata.insert(Key::from("resourceVersion"), Field::Text(revision));
        object.insert(Key::from("metadata"), Field::Object(metadata));
        Some(object)
    }
}

/// A field name: borrowed from the stored text unless it has escapes.
#[derive(Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> From<&'a str> for Key<'a> {
    fn from(name: &'a str) -> Self {
        Key(Cow::Borrowed(name))
    }
}

/// Keys are ordered as their text, so a map of them can be searched by text.
impl Borrow<str> for Key<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A field's value in the view.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    /// Copied as stored.
    Stored(&'a RawValue),
    /// A string the view sets.
    Text(&'a str),
    /// An object the view changes (metadata).
    Object(Fields<'a>),
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::builtin;

    fn resource(plural: &str, group: &str) -> Resource {
        builtin::resources()
            .into_iter()
            .find(|r| r.plural == plural && r.group == group)
            .expect("a built-in resource")
    }

    fn stored(value: &[u8], mod_rev: u64) -> KeyValue {
        KeyValue {
            key: "/registry/x/default/y".into(),
            value: value.to_vec().into(),
            create_rev: 1,
            mod_rev,
        }
    }

    /// The JSON of the long way round: the whole object decoded, then written.
    fn decoded_json(resource: &Resource, kv: &KeyValue) -> String {
        serde_json::to_string(&decode(resource, kv).expect("decodes")).expect("encodes")
    }

    fn assert_same_as_decoding(resource: &Resource, kv: &KeyValue) {
        let fast = String::from_utf8(view_json(resource, kv).expect("view")).expect("UTF-8");
        assert_eq!(fast, decoded_json(resource, kv));
    }

    /// Whether the view of `kv` is written from its stored bytes (not decoded).
    fn read_from_stored_bytes(resource: &Resource, kv: &KeyValue) -> bool {
        let api_version = resource.api_version();
        let view = TypeMeta {
            api_version: &api_version,
            kind: &resource.kind,
        };
        view.of_stored(&kv.value, "1").is_some()
    }

    #[test]
    fn the_view_written_from_stored_bytes_is_byte_identical_to_decoding_and_encoding() {
        let config_maps = resource("configmaps", "");
        let leases = resource("leases", "coordination.k8s.io");
        let objects = [
            // As the server stores them: written from a value, without resourceVersion.
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default", "labels": {"app": "x"}}, "data": {"k": "v"}}),
            // No type meta, or other type meta, stored: the view sets its own.
            json!({"metadata": {"name": "b"}, "data": {}}),
            json!({"apiVersion": "other/v9", "kind": "Other", "metadata": {"name": "c"}}),
            // No metadata at all, or metadata that is not an object.
            json!({"data": {"k": "v"}}),
            json!({}),
            json!({"metadata": null, "data": [1, 2]}),
            json!({"metadata": "text"}),
            json!({"metadata": {}}),
            // Nested objects and lists, numbers, escapes, non-ASCII text.
            json!({
                "metadata": {"name": "d", "annotations": {"note": "line\none \"quoted\" \\ tab\t \u{1} é ☃ 😀", "z": "/"}},
                "spec": {"b": [1, -2, 3.5, 1e300, 18446744073709551615u64, true, null, {"y": {"x": []}}], "a": {"deep": {"deeper": "\u{7f}"}}},
                "zz": "last",
                "aa\"key\\": "escaped key",
            }),
            // A resourceVersion cannot be stored, but if it were, the revision replaces it.
            json!({"metadata": {"name": "e", "resourceVersion": "1"}}),
            // Keys that sort around the ones the view adds.
            json!({"a": 1, "apiVersio": 2, "apiVersionz": 3, "kin": 4, "kinds": 5, "metadat": 6, "metadataa": 7, "metadata": {"resourceVersio": "x", "resourceVersionz": "y", "a": 0}}),
        ];
        for (i, object) in objects.iter().enumerate() {
            let kv = stored(&serde_json::to_vec(object).expect("encodes"), 10 + i as u64);
            assert!(read_from_stored_bytes(&config_maps, &kv), "{object}");
            assert_same_as_decoding(&config_maps, &kv);
            assert_same_as_decoding(&leases, &kv);
        }
    }

    #[test]
    fn stored_text_with_escaped_keys_and_spacing_gives_the_same_view_where_it_is_read() {
        let config_maps = resource("configmaps", "");
        // The top level and metadata are read, so their keys are written as a value writes
        // them wherever the stored text differs.
        let kv = stored(
            br#" { "d\u0061ta" : {"k":"v"} , "metadata" : { "n\u0061me" : "x" } } "#,
            7,
        );
        assert!(read_from_stored_bytes(&config_maps, &kv));
        assert_same_as_decoding(&config_maps, &kv);
    }

    #[test]
    fn a_float_is_served_as_stored_where_decoding_would_round_it() {
        let config_maps = resource("configmaps", "");
        let kv = stored(
            br#"{"metadata":{"name":"f"},"spec":{"f":1.0715660391465826e-75}}"#,
            2,
        );
        let view = String::from_utf8(view_json(&config_maps, &kv).expect("view")).expect("UTF-8");
        assert!(view.contains(r#""f":1.0715660391465826e-75"#), "{view}");
    }

    #[test]
    fn what_is_not_a_json_object_takes_the_decoding_path() {
        let config_maps = resource("configmaps", "");
        for text in [&b"[1,2]"[..], b"\"text\"", b"null", b"3"] {
            let kv = stored(text, 3);
            assert!(!read_from_stored_bytes(&config_maps, &kv));
            assert_same_as_decoding(&config_maps, &kv);
        }
        assert!(view_json(&config_maps, &stored(b"{not json", 3)).is_err());
        assert!(view_json(&config_maps, &stored(b"", 3)).is_err());
    }

    #[test]
    fn events_through_events_k8s_io_are_converted_as_decoding_converts_them() {
        let events = resource("events", "events.k8s.io");
        let event = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Started",
            "message": "started",
            "source": {"component": "kubelet", "host": "node-1"},
            "count": 2,
        });
        let kv = stored(&serde_json::to_vec(&event).expect("encodes"), 4);
        assert_same_as_decoding(&events, &kv);
        let view: Value =
            serde_json::from_slice(&view_json(&events, &kv).expect("view")).expect("JSON");
        assert_eq!(view["note"], "started");
        assert_eq!(view["metadata"]["resourceVersion"], "4");
    }
}
