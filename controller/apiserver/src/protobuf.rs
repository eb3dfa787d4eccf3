//! Decoding the Kubernetes protobuf encoding for the built-in kinds kubectl sends that way
//! (`kubectl create configmap|secret|namespace|serviceaccount|role|rolebinding|token` and
//! `kubectl auth can-i` POST `application/vnd.kubernetes.protobuf`). Responses are always
//! JSON, which those clients also accept.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// Not the `k8s\0` envelope.
    #[error("not a Kubernetes protobuf message (missing the k8s\\0 prefix)")]
    NoEnvelope,
    /// Truncated or malformed wire data.
    #[error("malformed protobuf data: {0}")]
    Malformed(&'static str),
    /// A kind devplane does not decode from protobuf.
    #[error(
        "protobuf bodies are accepted for ConfigMap, Secret, Namespace, ServiceAccount, RBAC kinds, TokenRequest and access reviews only, not {0}; send JSON"
    )]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, ProtobufError>;

/// One decoded field: its number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .data
                .split_first()
                .ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint too long"))
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| ProtobufError::Malformed("length too large"))?;
                if len > self.data.len() {
                    return Err(ProtobufError::Malformed("truncated field"));
                }
                let (bytes, rest) = self.data.split_at(len);
                self.data = rest;
                Field::Bytes(bytes)
            }
            5 => self.skip(4)?,
            _ => return Err(ProtobufError::Malformed("unsupported wire type")),
        };
        Ok(Some((tag >> 3, field)))
    }

    fn skip(&mut self, n: usize) -> Result<Field<'a>> {
        if n > self.data.len() {
            return Err(ProtobufError::Malformed("truncated fixed field"));
        }
        self.data = &self.data[n..];
        Ok(Field::Fixed)
    }
}

fn fields(data: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut reader = Reader { data };
    let mut out = Vec::new();
    while let Some(field) = reader.next()? {
        out.push(field);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed("string is not UTF-8"))
}

/// A `map<string, string>` (or bytes, base64-encoded) entry.
fn map_entry(bytes: &[u8], base64_value: bool) -> Result<(String, Value)> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) if base64_value => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Field::Bytes(b)) => value = Value::String(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    map: &mut Map<String, Value>,
    field: &str,
    bytes: &[u8],
    base64_value: bool,
) -> Result<()> {
    let (key, value) = map_entry(bytes, base64_value)?;
    let entries = map.entry(field).or_insert_with(|| json!({}));
    if let Some(entries) = entries.as_object_mut() {
        entries.insert(key, value);
    }
    Ok(())
}

fn time(bytes: &[u8]) -> Result<Option<Value>> {
    let mut seconds = None;
    for (number, field) in fields(bytes)? {
        if let (1, Field::Varint(v)) = (number, field) {
            seconds = Some(v as i64);
        }
    }
    Ok(seconds
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| Value::String(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())))
}

fn owner_reference(bytes: &[u8]) -> Result<Value> {
    let mut out = Map::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                out.insert("kind".into(), Value::String(text(b)?));
            }
            (3, Field::Bytes(b)) => {
                out.insert("name".into(), Value::String(text(b)?));
            }
            (4, Field::Bytes(b)) => {
                out.insert("uid".into(), Value::String(text(b)?));
            }
            (5, Field::Bytes(b)) => {
                out.insert("apiVersion".into(), Value::String(text(b)?));
            }
            (6, Field::Varint(v)) => {
                out.insert("controller".into(), Value::Bool(v != 0));
            }
            (7, Field::Varint(v)) => {
                out.insert("blockOwnerDeletion".into(), Value::Bool(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn object_meta(bytes: &[u8]) -> Result<Value> {
    let mut meta = Map::new();
    for (number, field) in fields(bytes)? {
        let string_field = match number {
            1 => Some("name"),
            2 => Some("generateName"),
            3 => Some("namespace"),
            5 => Some("uid"),
            6 => Some("resourceVersion"),
            _ => None,
        };
        match (number, field) {
            (_, Field::Bytes(b)) if string_field.is_some() => {
                let value = text(b)?;
                if !value.is_empty()
                    && let Some(name) = string_field
                {
                    meta.insert(name.into(), Value::String(value));
                }
            }
            (7, Field::Varint(v)) if v != 0 => {
                meta.insert("generation".into(), Value::from(v as i64));
            }
            (8, Field::Bytes(b)) => {
                if let Some(t) = time(b)? {
                    meta.insert("creationTimestamp".into(), t);
                }
            }
            (11, Field::Bytes(b)) => insert_entry(&mut meta, "labels", b, false)?,
            (12, Field::Bytes(b)) => insert_entry(&mut meta, "annotations", b, false)?,
            (13, Field::Bytes(b)) => {
                let reference = owner_reference(b)?;
                if let Some(list) = meta
                    .entry("ownerReferences")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    list.push(reference);
                }
            }
            (14, Field::Bytes(b)) => {
                let finalizer = Value::String(text(b)?);
                if let Some(list) = meta
                    .entry("finalizers")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    list.push(finalizer);
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// A message of string fields (and repeated strings), by field number → (name, repeated).
fn strings(bytes: &[u8], names: &[(u64, &str, bool)]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (number, field) in fields(bytes)? {
        let Field::Bytes(b) = field else {
            continue;
        };
        let Some((_, name, repeated)) = names.iter().find(|(n, _, _)| *n == number) else {
            continue;
        };
        let value = Value::String(text(b)?);
        if *repeated {
            if let Some(list) = out.entry(*name).or_insert_with(|| json!([])).as_array_mut() {
                list.push(value);
            }
        } else if value != Value::String(String::new()) {
            out.insert((*name).into(), value);
        }
    }
    Ok(out)
}

fn role_ref(bytes: &[u8]) -> Result<Value> {
    Ok(Value::Object(strings(
        bytes,
        &[
            (1, "apiGroup", false),
            (2, "kind", false),
            (3, "name", false),
        ],
    )?))
}

fn subject(bytes: &[u8]) -> Result<Value> {
    Ok(Value::Object(strings(
        bytes,
        &[
            (1, "kind", false),
            (2, "apiGroup", false),
            (3, "name", false),
            (4, "namespace", false),
        ],
    )?))
}

fn policy_rule(bytes: &[u8]) -> Result<Value> {
    Ok(Value::Object(strings(
        bytes,
        &[
            (1, "verbs", true),
            (2, "apiGroups", true),
            (3, "resources", true),
            (4, "resourceNames", true),
            (5, "nonResourceURLs", true),
        ],
    )?))
}

fn push(object: &mut Map<String, Value>, field: &str, value: Value) {
    if let Some(list) = object
        .entry(field)
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        list.push(value);
    }
}

/// The spec of a SelfSubjectAccessReview.
fn access_review_spec(bytes: &[u8]) -> Result<Value> {
    let mut spec = Map::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                let attrs = strings(
                    b,
                    &[
                        (1, "namespace", false),
                        (2, "verb", false),
                        (3, "group", false),
                        (4, "version", false),
                        (5, "resource", false),
                        (6, "subresource", false),
                        (7, "name", false),
                    ],
                )?;
                spec.insert("resourceAttributes".into(), Value::Object(attrs));
            }
            (2, Field::Bytes(b)) => {
                let attrs = strings(b, &[(1, "path", false), (2, "verb", false)])?;
                spec.insert("nonResourceAttributes".into(), Value::Object(attrs));
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

/// The spec of a TokenRequest.
fn token_request_spec(bytes: &[u8]) -> Result<Value> {
    let mut spec = Map::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => push(&mut spec, "audiences", Value::String(text(b)?)),
            (4, Field::Varint(v)) => {
                spec.insert("expirationSeconds".into(), Value::from(v as i64));
            }
            _ => {}
        }
    }
    Ok(Value::Object(spec))
}

/// Decode a protobuf request body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value> {
    let payload = body
        .strip_prefix(b"k8s\0")
        .ok_or(ProtobufError::NoEnvelope)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, field) in fields(payload)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version.clone()));
    object.insert("kind".into(), Value::String(kind.clone()));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) => insert_entry(&mut object, "data", b, false)?,
                    (3, Field::Bytes(b)) => insert_entry(&mut object, "binaryData", b, true)?,
                    (4, Field::Varint(v)) => {
                        object.insert("immutable".into(), Value::Bool(v != 0));
                    }
                    _ => {}
                }
            }
        }
        ("v1", "Secret") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) => insert_entry(&mut object, "data", b, true)?,
                    (3, Field::Bytes(b)) => {
                        object.insert("type".into(), Value::String(text(b)?));
                    }
                    (4, Field::Bytes(b)) => insert_entry(&mut object, "stringData", b, false)?,
                    (5, Field::Varint(v)) => {
                        object.insert("immutable".into(), Value::Bool(v != 0));
                    }
                    _ => {}
                }
            }
        }
        ("v1", "Namespace") => {
            for (number, field) in fields(raw)? {
                if let (1, Field::Bytes(b)) = (number, field) {
                    object.insert("metadata".into(), object_meta(b)?);
                }
            }
        }
        ("v1", "ServiceAccount") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (4, Field::Varint(v)) => {
                        object.insert("automountServiceAccountToken".into(), Value::Bool(v != 0));
                    }
                    _ => {}
                }
            }
        }
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) => push(&mut object, "rules", policy_rule(b)?),
                    _ => {}
                }
            }
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) => push(&mut object, "subjects", subject(b)?),
                    (3, Field::Bytes(b)) => {
                        object.insert("roleRef".into(), role_ref(b)?);
                    }
                    _ => {}
                }
            }
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview" | "SelfSubjectRulesReview") => {
            let rules = kind == "SelfSubjectRulesReview";
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) if rules => {
                        let spec = strings(b, &[(1, "namespace", false)])?;
                        object.insert("spec".into(), Value::Object(spec));
                    }
                    (2, Field::Bytes(b)) => {
                        object.insert("spec".into(), access_review_spec(b)?);
                    }
                    _ => {}
                }
            }
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            for (number, field) in fields(raw)? {
                match (number, field) {
                    (1, Field::Bytes(b)) => {
                        object.insert("metadata".into(), object_meta(b)?);
                    }
                    (2, Field::Bytes(b)) => {
                        object.insert("spec".into(), token_request_spec(b)?);
                    }
                    _ => {}
                }
            }
        }
        _ => return Err(ProtobufError::Unsupported(format!("{api_version} {kind}"))),
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configmap_as_kubectl_create_sends_it_decodes() {
        // Captured from `kubectl create configmap x --from-literal=a=b` (kubectl 1.33).
        let body = b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01x\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00\"\x00";
        let object = decode(body).expect("decodes");
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn a_secret_decodes_with_base64_data() {
        let body = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1d\n\x11\n\x01s\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00\x1a\x00\"\x00";
        let object = decode(body).expect("decodes");
        assert_eq!(object["data"], json!({"a": "Yg=="}));
        assert_eq!(object["metadata"]["name"], "s");
    }

    #[test]
    fn truncated_or_foreign_bodies_are_refused() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::NoEnvelope)));
        assert!(matches!(
            decode(b"k8s\x00\n\x30"),
            Err(ProtobufError::Malformed(_))
        ));
        let pod = b"k8s\x00\n\x09\n\x02v1\x12\x03Pod\x12\x00";
        assert!(matches!(decode(pod), Err(ProtobufError::Unsupported(_))));
    }
}
