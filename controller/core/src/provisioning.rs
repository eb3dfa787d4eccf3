//! Zero-touch provisioning, the pure parts: derived keys and proofs, a policy compiled for
//! requests (id pattern, name rule, allow-list, validity window), the attestation decision, what
//! a repeated provisioning gets, and the link a QR code carries.
//!
//! The front door feeds it what the device presented and the keys it read; it never decides
//! anything on its own.

use std::collections::HashMap;

use base64::Engine;
use devplane_api::constants::{annotations, labels};
use devplane_api::v1alpha1::{
    PreRegistered, PreRegisteredItem, ProvisioningPolicySpec, Reprovisioning,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::naming::object_name_problem;
use crate::onboarding::parse_csv_lines;

/// Key of the group key in a symmetric-key policy's Secret.
pub const GROUP_KEY: &str = "groupKey";
/// Key of the PEM CA certificate(s) in an x509 policy's Secret.
pub const CA_CERT: &str = "ca.crt";

/// The key a factory flashes into a device: `HMAC-SHA256(groupKey, deviceId)`.
pub fn derive_key(group_key: &[u8], device_id: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, group_key);
    let tag = ring::hmac::sign(&key, device_id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The proof a device presents: its derived key in standard base64.
pub fn proof(group_key: &[u8], device_id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(derive_key(group_key, device_id))
}

/// Whether `presented` (base64, standard or URL-safe, padded or not) is the derived key of
/// `device_id`; compared in constant time.
pub fn proof_matches(group_key: &[u8], device_id: &str, presented: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let presented = presented.trim();
    let Some(raw) = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(presented).ok())
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, group_key);
    ring::hmac::verify(&key, device_id.as_bytes(), &raw).is_ok()
}

/// Equal strings, compared in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a provisioning request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The proof, token or certificate does not prove the claimed identity.
    BadProof,
    /// The id, serial number or name is not one this policy provisions.
    NotAllowed,
    /// The policy provisioned `maxDevices` already.
    LimitReached,
    /// Outside the policy's validity window.
    Expired,
    /// The device provisioned before and the policy does not provision it again.
    AlreadyProvisioned,
}

impl Reason {
    /// The reason as the API and the answers spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadProof => "BadProof",
            Reason::NotAllowed => "NotAllowed",
            Reason::LimitReached => "LimitReached",
            Reason::Expired => "Expired",
            Reason::AlreadyProvisioned => "AlreadyProvisioned",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the reason and a message for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// What exactly.
    pub message: String,
}

fn refuse(reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// A problem with one entry of an allow-list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct EntryProblem {
    /// Where: `items[3]` or `csv line 7`.
    pub at: String,
    /// What.
    pub message: String,
}

/// Parse an allow-list CSV (header with `serialNumber`, optional `deviceId` and `token`):
/// every entry, or every problem with its line.
pub fn parse_allow_csv(text: &str) -> Result<Vec<PreRegisteredItem>, Vec<EntryProblem>> {
    let problem = |line: usize, message: String| EntryProblem {
        at: format!("csv line {line}"),
        message,
    };
    let rows = parse_csv_lines(text).map_err(|e| {
        vec![EntryProblem {
            at: "csv".into(),
            message: e,
        }]
    })?;
    let mut rows = rows.into_iter();
    let Some((header_line, header)) = rows.next() else {
        return Err(vec![problem(1, "no header row".into())]);
    };
    let header: Vec<&str> = header.iter().map(|h| h.trim()).collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let Some(serial_at) = column("serialNumber") else {
        return Err(vec![problem(
            header_line,
            format!("header {header:?} has no serialNumber column"),
        )]);
    };
    if let Some(unknown) = header
        .iter()
        .find(|h| !["serialNumber", "deviceId", "token"].contains(h))
    {
        return Err(vec![problem(
            header_line,
            format!("unknown column {unknown:?} (serialNumber, deviceId and token are known)"),
        )]);
    }
    let (id_at, token_at) = (column("deviceId"), column("token"));
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (line, row) in rows {
        if row.len() != header.len() {
            let message = format!("{} cells, the header has {}", row.len(), header.len());
            problems.push(problem(line, message));
            continue;
        }
        let cell = |at: Option<usize>| {
            at.map(|i| row[i].trim().to_string())
                .filter(|c| !c.is_empty())
        };
        let Some(serial_number) = cell(Some(serial_at)) else {
            problems.push(problem(line, "serialNumber is empty".into()));
            continue;
        };
        items.push((
            line,
            PreRegisteredItem {
                serial_number,
                device_id: cell(id_at),
                token: cell(token_at),
            },
        ));
    }
    let mut seen = HashMap::new();
    for (line, item) in &items {
        if let Some(first) = seen.insert(item.serial_number.clone(), *line) {
            let message = format!(
                "serial number {} is listed on line {first} already",
                item.serial_number
            );
            problems.push(problem(*line, message));
        }
    }
    problems.sort_by_key(|p| p.at.clone());
    if problems.is_empty() {
        Ok(items.into_iter().map(|(_, item)| item).collect())
    } else {
        Err(problems)
    }
}

/// A pre-registered allow-list, by serial number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowList(HashMap<String, PreRegisteredItem>);

impl AllowList {
    /// The entries of `items` and `csv` together; a serial number listed twice is a problem.
    pub fn of(pre: &PreRegistered) -> Result<AllowList, Vec<EntryProblem>> {
        let mut problems = Vec::new();
        let mut entries: Vec<(String, PreRegisteredItem)> = pre
            .items
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, item)| (format!("items[{i}]"), item.clone()))
            .collect();
        if let Some(csv) = &pre.csv {
            match parse_allow_csv(csv) {
                Ok(items) => entries.extend(items.into_iter().map(|i| ("csv".to_string(), i))),
                Err(p) => problems.extend(p),
            }
        }
        let mut by_serial = HashMap::new();
        for (at, item) in entries {
            if by_serial.contains_key(&item.serial_number) {
                problems.push(EntryProblem {
                    at,
                    message: format!("serial number {} is listed twice", item.serial_number),
                });
                continue;
            }
            by_serial.insert(item.serial_number.clone(), item);
        }
        if problems.is_empty() {
            Ok(AllowList(by_serial))
        } else {
            Err(problems)
        }
    }

    /// The entry of a serial number.
    pub fn get(&self, serial_number: &str) -> Option<&PreRegisteredItem> {
        self.0.get(serial_number)
    }

    /// Every entry, sorted by serial number.
    pub fn entries(&self) -> Vec<&PreRegisteredItem> {
        let mut all: Vec<_> = self.0.values().collect();
        all.sort_by(|a, b| a.serial_number.cmp(&b.serial_number));
        all
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ProvisioningPolicy a Device was created through: its
/// `iot.devplane.io/provisioning-policy` label, or the annotation of that name when the label
/// holds the shortened form of a name too long for it.
pub fn policy_of(meta: &ObjectMeta) -> Option<&str> {
    let label = meta.labels.as_ref()?.get(labels::PROVISIONING_POLICY)?;
    let whole = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::PROVISIONING_POLICY));
    Some(crate::naming::whole_name(label, whole))
}

/// Marks `meta` as created through the ProvisioningPolicy `policy` (see [`policy_of`]).
pub fn mark_policy(meta: &mut ObjectMeta, policy: &str) {
    let label = crate::naming::owner_label_value(policy);
    if label != policy {
        meta.annotations.get_or_insert_default().insert(
            annotations::PROVISIONING_POLICY.to_string(),
            policy.to_string(),
        );
    }
    meta.labels
        .get_or_insert_default()
        .insert(labels::PROVISIONING_POLICY.to_string(), label);
}

/// A policy's spec compiled for requests.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Prefix of Device names.
    pub prefix: String,
    /// The id pattern, anchored at both ends.
    pub id_pattern: Option<regex::Regex>,
    /// A derived-key proof is required.
    pub symmetric_key: bool,
    /// A client certificate chained to the policy's CA is required.
    pub x509: bool,
    /// A pre-registered serial number is required.
    pub allow: Option<AllowList>,
    /// `limits.maxDevices`.
    pub max_devices: Option<u64>,
    /// `limits.notBefore`.
    pub not_before: Option<Timestamp>,
    /// `limits.notAfter`.
    pub not_after: Option<Timestamp>,
    /// What a repeated provisioning gets.
    pub reprovisioning: Reprovisioning,
}

/// What a device presented.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The id it claims.
    pub device_id: Option<&'a str>,
    /// Its serial number.
    pub serial_number: Option<&'a str>,
    /// Its derived key, base64.
    pub proof: Option<&'a str>,
    /// Its one-time token.
    pub token: Option<&'a str>,
    /// The common name of its client certificate, when the caller verified that the certificate
    /// chains to the policy's CA.
    pub certificate_id: Option<&'a str>,
}

/// Who an attested request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The device id.
    pub device_id: String,
    /// The Device name (prefix and id).
    pub name: String,
    /// The serial number it presented.
    pub serial_number: Option<String>,
    /// It presented a one-time token (spent once it provisions).
    pub one_time_token: bool,
}

/// A Device that exists under the claimed name.
#[derive(Clone, Copy, Debug, Default)]
pub struct Existing<'a> {
    /// The policy it provisioned through (its label), if any.
    pub policy: Option<&'a str>,
    /// The serial number it presented then (its annotation).
    pub serial_number: Option<&'a str>,
    /// It spent a one-time token then.
    pub token_spent: bool,
    /// It has connected since (phase Servicing or later, or a last-seen time).
    pub connected: bool,
}

/// What a repeated provisioning gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// The identity it has.
    Same,
    /// Fresh credentials.
    Reissue,
}

/// Why a spec cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The id pattern is not a regular expression.
    #[error("spec.naming.idPattern: {0}")]
    Pattern(String),
    /// The allow-list has problems.
    #[error("spec.attestation.preRegistered: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllowList(Vec<EntryProblem>),
    /// No attestation at all.
    #[error("spec.attestation needs at least one of symmetricKey, x509 and preRegistered")]
    NoAttestation,
    /// A negative limit.
    #[error("spec.limits.maxDevices must not be negative")]
    NegativeLimit,
}

impl Rules {
    /// Compile a spec.
    pub fn compile(spec: &ProvisioningPolicySpec) -> Result<Rules, RulesError> {
        let attestation = &spec.attestation;
        if attestation.symmetric_key.is_none()
            && attestation.x509.is_none()
            && attestation.pre_registered.is_none()
        {
            return Err(RulesError::NoAttestation);
        }
        let id_pattern = spec
            .naming
            .id_pattern
            .as_deref()
            .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
            .transpose()
            .map_err(|e| RulesError::Pattern(e.to_string()))?;
        let allow = attestation
            .pre_registered
            .as_ref()
            .map(AllowList::of)
            .transpose()
            .map_err(RulesError::AllowList)?;
        let max_devices = spec
            .limits
            .max_devices
            .map(|m| u64::try_from(m).map_err(|_| RulesError::NegativeLimit))
            .transpose()?;
        Ok(Rules {
            prefix: spec.naming.prefix.clone().unwrap_or_default(),
            id_pattern,
            symmetric_key: attestation.symmetric_key.is_some(),
            x509: attestation.x509.is_some(),
            allow,
            max_devices,
            not_before: spec.limits.not_before.as_ref().map(|t| t.0),
            not_after: spec.limits.not_after.as_ref().map(|t| t.0),
            reprovisioning: spec.reprovisioning,
        })
    }

    /// Whether `now` is outside the validity window.
    pub fn expired(&self, now: Timestamp) -> Option<Refusal> {
        if let Some(from) = self.not_before.filter(|from| now < *from) {
            return Some(refuse(
                Reason::Expired,
                format!("the policy provisions from {from} on"),
            ));
        }
        if let Some(until) = self.not_after.filter(|until| now > *until) {
            return Some(refuse(
                Reason::Expired,
                format!("the policy stopped provisioning at {until}"),
            ));
        }
        None
    }

    /// The id a request claims: the pre-registered entry's, the presented one, the serial
    /// number of an allow-list entry, or the certificate's common name.
    fn device_id<'a>(
        &'a self,
        presented: &Presented<'a>,
        entry: Option<&'a PreRegisteredItem>,
    ) -> Result<&'a str, Refusal> {
        let listed = entry.map(|e| e.device_id.as_deref().unwrap_or(&e.serial_number));
        match (presented.device_id, listed) {
            (Some(given), Some(listed)) if given != listed => Err(refuse(
                Reason::NotAllowed,
                format!("serial number is registered for device id {listed}, not {given}"),
            )),
            (Some(id), _) | (None, Some(id)) => Ok(id),
            (None, None) => presented
                .certificate_id
                .ok_or_else(|| refuse(Reason::NotAllowed, "deviceId is required".to_string())),
        }
    }

    /// Check a request against the policy: its window, id, name and every attestation
    /// mechanism. `group_key` is the symmetric-key policy's key.
    pub fn attest(
        &self,
        presented: &Presented<'_>,
        group_key: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Claim, Refusal> {
        if let Some(refusal) = self.expired(now) {
            return Err(refusal);
        }
        let entry = match (&self.allow, presented.serial_number) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(refuse(
                    Reason::NotAllowed,
                    "serialNumber is required: the policy provisions pre-registered devices",
                ));
            }
            (Some(allow), Some(serial)) => Some(allow.get(serial).ok_or_else(|| {
                refuse(
                    Reason::NotAllowed,
                    format!("serial number {serial} is not pre-registered"),
                )
            })?),
        };
        let device_id = self.device_id(presented, entry)?;
        if let Some(pattern) = self.id_pattern.as_ref().filter(|p| !p.is_match(device_id)) {
            return Err(refuse(
                Reason::NotAllowed,
                format!("device id {device_id} does not match {}", pattern.as_str()),
            ));
        }
        let name = format!("{}{device_id}", self.prefix);
        if let Some(problem) = object_name_problem(&name) {
            return Err(refuse(
                Reason::NotAllowed,
                format!("device name: Invalid value: {name:?}: {problem}"),
            ));
        }
        if self.symmetric_key {
            let key = group_key.ok_or_else(|| {
                refuse(Reason::BadProof, "the policy's group key is not available")
            })?;
            match presented.proof {
                None => return Err(refuse(Reason::BadProof, "proof is required")),
                Some(proof) if !proof_matches(key, device_id, proof) => {
                    return Err(refuse(
                        Reason::BadProof,
                        format!("proof is not the derived key of {device_id}"),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.x509 {
            match presented.certificate_id {
                None => {
                    return Err(refuse(
                        Reason::BadProof,
                        "a client certificate signed by the policy's CA is required (over TLS)",
                    ));
                }
                Some(cn) if cn != device_id => {
                    return Err(refuse(
                        Reason::BadProof,
                        format!("the client certificate is for {cn}, not {device_id}"),
                    ));
                }
                Some(_) => {}
            }
        }
        let one_time_token = match entry.and_then(|e| e.token.as_deref()) {
            None => false,
            Some(expected) => match presented.token {
                Some(token) if same_secret(token, expected) => true,
                Some(_) => return Err(refuse(Reason::BadProof, "the token does not match")),
                None => return Err(refuse(Reason::BadProof, "token is required")),
            },
        };
        Ok(Claim {
            device_id: device_id.to_string(),
            name,
            serial_number: presented.serial_number.map(str::to_string),
            one_time_token,
        })
    }

    /// What an attested claim gets when its Device exists already.
    pub fn repeat(
        &self,
        policy: &str,
        claim: &Claim,
        existing: &Existing<'_>,
    ) -> Result<Repeat, Refusal> {
        if existing.policy != Some(policy) {
            return Err(refuse(
                Reason::NotAllowed,
                format!(
                    "device {} exists and was not provisioned through this policy",
                    claim.name
                ),
            ));
        }
        if claim.one_time_token && existing.token_spent {
            return Err(refuse(
                Reason::AlreadyProvisioned,
                "the one-time token was spent",
            ));
        }
        match self.reprovisioning {
            Reprovisioning::Reissue => Ok(Repeat::Reissue),
            Reprovisioning::Refuse if existing.connected => Err(refuse(
                Reason::AlreadyProvisioned,
                format!("device {} provisioned and connected already", claim.name),
            )),
            Reprovisioning::Refuse => Ok(Repeat::Same),
            Reprovisioning::SameSerialOnly
                if existing.serial_number != claim.serial_number.as_deref() =>
            {
                Err(refuse(
                    Reason::AlreadyProvisioned,
                    format!(
                        "device {} provisioned with another serial number",
                        claim.name
                    ),
                ))
            }
            Reprovisioning::SameSerialOnly => Ok(Repeat::Same),
        }
    }
}

/// What a QR code carries: `devplane:provision?…` (a device provisions through a policy) or
/// `devplane:connect?…` (a device created by a batch gets its credentials), each a URI whose
/// query parameters are percent-encoded; version `v=1`. Unknown parameters are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Provision through a policy.
    Provision(ProvisionLink),
    /// Connect with issued credentials.
    Connect(ConnectLink),
}

/// A provisioning link; its fields are the request's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionLink {
    /// Base URL of the front door's HTTP listener, e.g. `https://devices.example.com:8443`.
    pub endpoint: String,
    /// The policy's namespace.
    pub namespace: String,
    /// The policy.
    pub policy: String,
    /// The device id.
    pub device_id: Option<String>,
    /// The serial number.
    pub serial_number: Option<String>,
    /// The derived key, base64.
    pub proof: Option<String>,
    /// The one-time token.
    pub token: Option<String>,
}

/// A connect link: what a device's credentials Secret holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectLink {
    /// `{namespace}/{name}`.
    pub username: String,
    /// The password.
    pub password: String,
    /// Endpoints by protocol (`mqtt`, `mqtts`, `http`, `https`, `coaps`).
    pub endpoints: Vec<(String, String)>,
}

/// Why a link does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a devplane link: {0}")]
pub struct LinkError(String);

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            v.map(|v| format!("{k}={}", percent_encoding::utf8_percent_encode(v, QUERY)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Link {
    /// The URI.
    pub fn to_uri(&self) -> String {
        match self {
            Link::Provision(p) => format!(
                "devplane:provision?{}",
                query(&[
                    ("v", Some("1")),
                    ("endpoint", Some(&p.endpoint)),
                    ("namespace", Some(&p.namespace)),
                    ("policy", Some(&p.policy)),
                    ("deviceId", p.device_id.as_deref()),
                    ("serialNumber", p.serial_number.as_deref()),
                    ("proof", p.proof.as_deref()),
                    ("token", p.token.as_deref()),
                ])
            ),
            Link::Connect(c) => {
                let mut pairs = vec![
                    ("v", Some("1")),
                    ("username", Some(c.username.as_str())),
                    ("password", Some(c.password.as_str())),
                ];
                pairs.extend(
                    c.endpoints
                        .iter()
                        .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
                );
                format!("devplane:connect?{}", query(&pairs))
            }
        }
    }

    /// Parse a URI.
    pub fn parse(uri: &str) -> Result<Link, LinkError> {
        let (kind, rest) = uri
            .trim()
            .strip_prefix("devplane:")
            .and_then(|r| r.split_once('?'))
            .ok_or_else(|| {
                LinkError("expected devplane:provision?… or devplane:connect?…".into())
            })?;
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in rest.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| LinkError(format!("parameter {k} is not UTF-8")))
            };
            params.push((decode(k)?, decode(v)?));
        }
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if get("v").as_deref() != Some("1") {
            return Err(LinkError("version v=1 expected".into()));
        }
        let required =
            |key: &str| get(key).ok_or_else(|| LinkError(format!("parameter {key} is missing")));
        match kind {
            "provision" => Ok(Link::Provision(ProvisionLink {
                endpoint: required("endpoint")?,
                namespace: required("namespace")?,
                policy: required("policy")?,
                device_id: get("deviceId"),
                serial_number: get("serialNumber"),
                proof: get("proof"),
                token: get("token"),
            })),
            "connect" => Ok(Link::Connect(ConnectLink {
                username: required("username")?,
                password: required("password")?,
                endpoints: params
                    .iter()
                    .filter(|(k, _)| !["v", "username", "password"].contains(&k.as_str()))
                    .cloned()
                    .collect(),
            })),
            other => Err(LinkError(format!("unknown link kind {other}"))),
        }
    }
}

#[cfg(test)]
mod tests;
