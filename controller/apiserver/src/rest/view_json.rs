//! An object's JSON in its resource's view, written from the bytes the store keeps.
//!
//! Watches, GETs and lists of full objects serve an object exactly as stored except for
//! `apiVersion`, `kind` and `metadata.resourceVersion`. Parsing the whole object into a
//! `Value` only to write it out again costs several times more than reading its top level
//! and its metadata: everything else is copied as the stored text, which this server wrote
//! from a `Value` in the first place (compact, keys in `Map` order), so the bytes are the same
//! as the long way round. The top level and the metadata's members are read in one pass,
//! each kept as its stored text in place (no map, nothing read twice), and written out with
//! the fields the view sets merged in at their places. One exception, for the better: a float with an extreme exponent is
//! served as stored, where parsing it (serde_json without `float_roundtrip`) and writing it
//! again may change its last digit.
//!
//! Most objects need not even be read ([`copy_view`]). The embedded store holds only text this
//! server wrote from a `Value`: compact, keys in order, no resourceVersion, whole (its log
//! checks every record's CRC). When that text starts with the resource's own `apiVersion` and
//! `kind` and then the metadata (every kind whose other fields sort after `metadata`: `spec`,
//! `status`), the view is that text with the revision written first in the metadata. Reading
//! an object of 1.1 KiB took about 1 µs, about half of a full list's time per object; with
//! copying, a full list of 100,000 such objects takes about a quarter of its time before
//! (`docs/benchmarks.md`). The view then has `resourceVersion` first among the metadata's fields, not at its place in
//! key order: JSON's members have no order, and kube-apiserver writes it among them in its own
//! order too. The copied text is not checked beyond its start and its end, so only a store
//! no one else writes to ([`Writers::ThisServer`]) is copied from: what another client of etcd
//! put under this server's prefix is read, and refused if it is not JSON.

use std::borrow::Cow;
use std::sync::LazyLock;

use devplane_store::{KeyValue, Store};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::codec::decode;
use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;

/// Who may have written a store's values, which decides whether [`view_json`] may copy them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// Only this server ([`Store::written_only_here`]): every value has the form it writes.
    ThisServer,
    /// Others may have too (etcd): every value is read.
    Anyone,
}

impl Writers {
    /// Who may have written the values of `store`.
    pub fn of(store: &dyn Store) -> Writers {
        if store.written_only_here() {
            Writers::ThisServer
        } else {
            Writers::Anyone
        }
    }
}

/// The JSON of a stored object in its resource's view, with its resourceVersion: what
/// `serde_json::to_vec(&decode(resource, kv)?)` writes, in the same bytes unless the stored
/// text is copied (see the module's docs).
pub fn view_json(resource: &Resource, kv: &KeyValue, writers: Writers) -> ApiResult<Vec<u8>> {
    // Room for what the view adds, so the text is written into one allocation.
    let mut out = Vec::with_capacity(kv.value.len() + 128);
    write_view_json(resource, kv, writers, &mut out)?;
    Ok(out)
}

/// Append [`view_json`] to `out`.
pub fn write_view_json(
    resource: &Resource,
    kv: &KeyValue,
    writers: Writers,
    out: &mut Vec<u8>,
) -> ApiResult<()> {
    let encode_error = |e: serde_json::Error| {
        ApiError::internal(format!("cannot encode stored object {}: {e}", kv.key))
    };
    if writers == Writers::ThisServer && copy_view(resource, kv, out) {
        return Ok(());
    }
    // Events through events.k8s.io/v1 are renamed field by field: they take the long way.
    if resource.builtin != Some(Builtin::EventsV1)
        && let Ok(mut stored) = serde_json::from_slice::<StoredObject<'_>>(&kv.value)
    {
        let api_version = resource.api_version();
        let revision = kv.mod_rev.to_string();
        in_map_order(&mut stored.fields);
        in_map_order(&mut stored.metadata);
        // The view sets these; `metadata` is written from its members.
        stored
            .fields
            .retain(|(key, _)| !matches!(&*key.0, "apiVersion" | "kind" | "metadata"));
        stored
            .metadata
            .retain(|(key, _)| key.0 != "resourceVersion");
        let metadata = Added::Object(&stored.metadata, ("resourceVersion", &revision));
        let added = [
            ("apiVersion", Added::Text(&api_version)),
            ("kind", Added::Text(&resource.kind)),
            ("metadata", metadata),
        ];
        return write_object(&stored.fields, &added, out).map_err(encode_error);
    }
    // Not a JSON object (or not JSON at all): `decode` makes of it what it always did, or
    // reports why it cannot.
    serde_json::to_writer(out, &decode(resource, kv)?).map_err(encode_error)
}

/// Finds a `resourceVersion` member in a stored text (built once: a searcher's setup costs
/// about what a search of an object does).
static STORED_REVISION: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(br#""resourceVersion":"#));

/// Writes the view of an object stored as this server writes objects of the resource's own
/// version by copying its text, the revision written first in its metadata; `false`, with
/// nothing written, for any other text (see the module's docs).
fn copy_view(resource: &Resource, kv: &KeyValue, out: &mut Vec<u8>) -> bool {
    let text = &kv.value[..];
    // What the text must start with: the type meta and the metadata, in key order. (The
    // parts of `apiVersion` one by one: this runs for every object of a list.)
    let (group, slash) = match resource.group.as_str() {
        "" => ("", ""),
        group => (group, "/"),
    };
    let mut head = text;
    for part in [
        r#"{"apiVersion":""#,
        group,
        slash,
        &resource.version,
        r#"","kind":""#,
        &resource.kind,
        r#"","metadata":{"#,
    ] {
        match head.strip_prefix(part.as_bytes()) {
            Some(rest) => head = rest,
            None => return false,
        }
    }
    // Events through events.k8s.io/v1 are converted; the metadata goes on at once with a
    // member or its end (compact, as this server writes it); a stored resourceVersion (none
    // is stored, but a text could hold one) would be written twice; and what is not text is
    // not JSON. The pattern is a member's name: inside a string a quote is escaped.
    if resource.builtin == Some(Builtin::EventsV1)
        || !matches!(head.first(), Some(b'"' | b'}'))
        || !text.ends_with(b"}")
        || STORED_REVISION.find(text).is_some()
        || std::str::from_utf8(text).is_err()
    {
        return false;
    }
    let (opening, members) = text.split_at(text.len() - head.len());
    out.extend_from_slice(opening);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(itoa::Buffer::new().format(kv.mod_rev).as_bytes());
    out.push(b'"');
    if !members.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(members);
    true
}

/// An object's members as read: each key with its stored text.
type Members<'a> = SmallVec<[(Key<'a>, &'a RawValue); 8]>;

/// Puts `members` in `serde_json::Map`'s order (this workspace builds serde_json without
/// `preserve_order`, so by key), each key once, the last of repeated keys winning as it does
/// when a map is read. The server writes its objects from a `Map`, so they are almost always
/// in that order already.
fn in_map_order(members: &mut Members<'_>) {
    if members.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return;
    }
    // A stable sort keeps repeated keys in the order they were read; of each run the last
    // one's value is kept.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|later, kept| {
        let repeated = later.0 == kept.0;
        if repeated {
            kept.1 = later.1;
        }
        repeated
    });
}

/// A field the view adds to an object, by name.
enum Added<'v, 's> {
    /// A string.
    Text(&'v str),
    /// An object of stored members (in order) and one string field added among them.
    Object(&'v Members<'s>, (&'v str, &'v str)),
}

/// Writes the object of `stored` members (in map order, none named as an added one) and the
/// `added` fields (in order of their names) as compact JSON, its fields in map order: the
/// text `serde_json` writes for a `Map` of them.
fn write_object(
    stored: &[(Key<'_>, &RawValue)],
    added: &[(&str, Added<'_, '_>)],
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.push(b'{');
    let mut added = added.iter().peekable();
    let mut first = true;
    let mut separate = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (key, raw) in stored {
        while let Some((name, value)) = added.next_if(|(name, _)| *name < &*key.0) {
            separate(out);
            write_added(name, value, out)?;
        }
        separate(out);
        key.write(out)?;
        out.push(b':');
        out.extend_from_slice(raw.get().as_bytes());
    }
    for (name, value) in added {
        separate(out);
        write_added(name, value, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Writes one added field, name and value, as compact JSON.
fn write_added(name: &str, value: &Added<'_, '_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, name)?;
    out.push(b':');
    match value {
        Added::Text(text) => serde_json::to_writer(&mut *out, text),
        Added::Object(members, (name, text)) => {
            write_object(members, &[(name, Added::Text(text))], out)
        }
    }
}

/// A field name: borrowed from the stored text unless it has escapes.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl Key<'_> {
    /// Writes the key as a JSON string. A key borrowed from the stored text had no escapes
    /// there, so it has nothing to escape (JSON text holds no raw quote or control character
    /// inside a string), and its text is written as it is.
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match &self.0 {
            Cow::Borrowed(text) => {
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
                Ok(())
            }
            Cow::Owned(text) => serde_json::to_writer(&mut *out, text),
        }
    }
}

/// A stored object's top level, read in one pass: every field's stored text, and the members
/// of its metadata (which the view changes), so that nothing is read twice.
struct StoredObject<'a> {
    /// Every field, `metadata` included (it is set aside when written).
    fields: Members<'a>,
    /// The members of the last `metadata`, if it is an object (otherwise the view replaces
    /// it by one, as `meta_mut` does).
    metadata: Members<'a>,
}

impl<'de> Deserialize<'de> for StoredObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = StoredObject<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut stored = StoredObject {
                    fields: SmallVec::new(),
                    metadata: SmallVec::new(),
                };
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    if key.0 == "metadata" {
                        stored.metadata = map.next_value::<MetadataMembers<'de>>()?.0;
                        // Its place, so that a later field of the same name is seen as one.
                        stored.fields.push((key, NO_TEXT));
                    } else {
                        stored.fields.push((key, map.next_value()?));
                    }
                }
                Ok(stored)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// Where a field's text is not kept: `metadata`, which is written from its members.
const NO_TEXT: &RawValue = RawValue::NULL;

/// The members of `metadata` when it is an object; any other value is read and set aside
/// (no members).
struct MetadataMembers<'a>(Members<'a>);

impl<'de> Deserialize<'de> for MetadataMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Metadata;
        impl<'de> Visitor<'de> for Metadata {
            type Value = MetadataMembers<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = SmallVec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    members.push((key, map.next_value()?));
                }
                Ok(MetadataMembers(members))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MetadataMembers(SmallVec::new()))
            }
        }
        deserializer.deserialize_any(Metadata)
    }
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

    /// The view says what decoding and encoding says, in the same bytes unless it is copied.
    fn assert_same_as_decoding(resource: &Resource, kv: &KeyValue) {
        let fast = String::from_utf8(view_json(resource, kv, Writers::ThisServer).expect("view"))
            .expect("UTF-8");
        let decoded = decoded_json(resource, kv);
        if copied(resource, kv) {
            let parsed = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
            assert_eq!(parsed(&fast), parsed(&decoded));
        } else {
            assert_eq!(fast, decoded);
        }
    }

    /// Whether the view of `kv` is its stored text copied.
    fn copied(resource: &Resource, kv: &KeyValue) -> bool {
        copy_view(resource, kv, &mut Vec::new())
    }

    /// Whether the view of `kv` is written from its stored bytes (not decoded).
    fn read_from_stored_bytes(kv: &KeyValue) -> bool {
        serde_json::from_slice::<StoredObject<'_>>(&kv.value).is_ok()
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
            assert!(read_from_stored_bytes(&kv), "{object}");
            assert_same_as_decoding(&config_maps, &kv);
            assert_same_as_decoding(&leases, &kv);
        }
    }

    #[test]
    fn an_object_stored_as_this_server_stores_it_is_copied_with_its_revision_first() {
        let leases = resource("leases", "coordination.k8s.io");
        let lease = |metadata: Value| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": {"holderIdentity": "a \"quoted\" holder ☃"}});
        let kv = stored(
            &serde_json::to_vec(&lease(json!({"name": "l", "labels": {"a": "b"}})))
                .expect("encodes"),
            12,
        );
        assert!(copied(&leases, &kv));
        let view = String::from_utf8(view_json(&leases, &kv, Writers::ThisServer).expect("view"))
            .expect("UTF-8");
        assert!(
            view.starts_with(r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"resourceVersion":"12","labels""#),
            "{view}"
        );
        assert_same_as_decoding(&leases, &kv);
        // From a store others write to, the same text is read.
        let read = view_json(&leases, &kv, Writers::Anyone).expect("view");
        assert_eq!(
            String::from_utf8(read).expect("UTF-8"),
            decoded_json(&leases, &kv)
        );
        let empty = stored(&serde_json::to_vec(&lease(json!({}))).expect("encodes"), 13);
        assert!(copied(&leases, &empty));
        assert_same_as_decoding(&leases, &empty);

        // Anything else is read: another version or kind stored, fields before the metadata
        // (a ConfigMap's data), a stored resourceVersion, text that does not end the object.
        let config_maps = resource("configmaps", "");
        let others = [
            (
                &leases,
                json!({"apiVersion": "coordination.k8s.io/v1beta1", "kind": "Lease", "metadata": {"name": "l"}}),
            ),
            (
                &leases,
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Leases", "metadata": {"name": "l"}}),
            ),
            (&leases, lease(json!({"name": "l", "resourceVersion": "3"}))),
            (
                &config_maps,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
            ),
        ];
        for (resource, object) in others {
            let kv = stored(&serde_json::to_vec(&object).expect("encodes"), 14);
            assert!(!copied(resource, &kv), "{object}");
            assert_same_as_decoding(resource, &kv);
        }
        let spaced = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{ }}"#;
        assert!(!copied(&leases, &stored(spaced, 15)));
        assert_same_as_decoding(&leases, &stored(spaced, 15));
        let cut = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l"},"spec":{"hol"#;
        assert!(!copied(&leases, &stored(cut, 15)));
        assert!(view_json(&leases, &stored(cut, 15), Writers::ThisServer).is_err());
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
        assert!(read_from_stored_bytes(&kv));
        assert_same_as_decoding(&config_maps, &kv);
    }

    #[test]
    fn stored_text_out_of_order_or_with_repeated_keys_gives_the_view_a_map_gives() {
        let config_maps = resource("configmaps", "");
        // Keys out of order at both levels, and repeated ones: the last wins, as it does
        // when the text is read into a map.
        for text in [
            &br#"{"kind":"K","data":{"a":1},"metadata":{"uid":"u","name":"n","name":"m","resourceVersion":"5"},"data":{"b":2},"apiVersion":"x/v1"}"#[..],
            br#"{"metadata":{"name":"a"},"metadata":{"name":"b","labels":{"a":"2","z":"1"}},"binaryData":{}}"#,
            br#"{"metadata":{"name":"a"},"metadata":[1,{"x":2}],"zeta":null,"alpha":true}"#,
            br#"{"metadata":{"z":1,"a":2,"m\u0061":3},"data":{}}"#,
        ] {
            let kv = stored(text, 21);
            assert!(read_from_stored_bytes(&kv));
            assert_same_as_decoding(&config_maps, &kv);
        }
    }

    #[test]
    fn a_float_is_served_as_stored_where_decoding_would_round_it() {
        let config_maps = resource("configmaps", "");
        let kv = stored(
            br#"{"metadata":{"name":"f"},"spec":{"f":1.0715660391465826e-75}}"#,
            2,
        );
        let view =
            String::from_utf8(view_json(&config_maps, &kv, Writers::ThisServer).expect("view"))
                .expect("UTF-8");
        assert!(view.contains(r#""f":1.0715660391465826e-75"#), "{view}");
    }

    #[test]
    fn what_is_not_a_json_object_takes_the_decoding_path() {
        let config_maps = resource("configmaps", "");
        for text in [&b"[1,2]"[..], b"\"text\"", b"null", b"3"] {
            let kv = stored(text, 3);
            assert!(!read_from_stored_bytes(&kv));
            assert_same_as_decoding(&config_maps, &kv);
        }
        assert!(view_json(&config_maps, &stored(b"{not json", 3), Writers::ThisServer).is_err());
        assert!(view_json(&config_maps, &stored(b"", 3), Writers::ThisServer).is_err());
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
            serde_json::from_slice(&view_json(&events, &kv, Writers::ThisServer).expect("view"))
                .expect("JSON");
        assert_eq!(view["note"], "started");
        assert_eq!(view["metadata"]["resourceVersion"], "4");
    }
}
