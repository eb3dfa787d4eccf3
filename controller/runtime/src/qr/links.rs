//! Which links `devplane qr` draws: provisioning links from a policy (one id, or every
//! pre-registered entry), connect links from credentials Secrets; and the file each goes to.

use std::collections::{BTreeMap, HashSet};

use devplane_api::v1alpha1::{PreRegisteredItem, ProvisioningPolicySpec};
use devplane_core::naming::object_name_problem;
use devplane_core::provisioning::{self, ConnectLink, Link, ProvisionLink, Rules};

/// One code to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// The device id or name the code is for (its file name before cleaning).
    pub id: String,
    /// Lines printed below it on the sheet.
    pub caption: Vec<String>,
    /// What it carries.
    pub link: Link,
}

/// Which devices of a policy get a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select<'a> {
    /// The device with this id (a pre-registered entry's deviceId or serial number).
    Id(&'a str),
    /// Every pre-registered entry.
    All,
}

/// Why no code can be made from a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The spec does not compile.
    #[error("ProvisioningPolicy {policy} is not usable: {reason}")]
    Policy {
        /// The policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// The policy attests by client certificate only, which a code cannot carry.
    #[error(
        "ProvisioningPolicy {policy} attests with client certificates (x509) only: a QR code \
         cannot carry a certificate"
    )]
    CertificatesOnly {
        /// The policy.
        policy: String,
    },
    /// `--all` of a policy without an allow-list.
    #[error(
        "ProvisioningPolicy {policy} has no pre-registered devices to list: --all needs \
         spec.attestation.preRegistered (use --id for one device of a symmetricKey policy)"
    )]
    NothingToList {
        /// The policy.
        policy: String,
    },
    /// The id is not pre-registered.
    #[error(
        "{id} is neither a deviceId nor a serial number pre-registered in ProvisioningPolicy \
         {policy}"
    )]
    NotListed {
        /// The policy.
        policy: String,
        /// The id asked for.
        id: String,
    },
    /// The policy would refuse the id.
    #[error("ProvisioningPolicy {policy} would refuse device id {id}: {reason}")]
    Refused {
        /// The policy.
        policy: String,
        /// The id asked for.
        id: String,
        /// Why.
        reason: String,
    },
    /// The policy needs the group key and none was read.
    #[error("ProvisioningPolicy {policy} needs its group key to derive proofs")]
    NoGroupKey {
        /// The policy.
        policy: String,
    },
}

/// Where a policy is and how devices reach the front door.
#[derive(Clone, Copy, Debug)]
pub struct PolicyAt<'a> {
    /// Base URL of the front door's HTTP(S) listener.
    pub endpoint: &'a str,
    /// The policy's namespace.
    pub namespace: &'a str,
    /// The policy's name.
    pub name: &'a str,
}

/// The provisioning codes of `select` under the policy `spec`: with an allow-list, each
/// entry's serial number and token (and its id); with a group key, the proof derived for the id.
pub fn provision_codes(
    at: PolicyAt<'_>,
    spec: &ProvisioningPolicySpec,
    group_key: Option<&[u8]>,
    select: Select<'_>,
) -> Result<Vec<Code>, LinkError> {
    let policy = || at.name.to_string();
    let rules = Rules::compile(spec).map_err(|e| LinkError::Policy {
        policy: policy(),
        reason: e.to_string(),
    })?;
    if !rules.symmetric_key && rules.allow.is_none() {
        return Err(LinkError::CertificatesOnly { policy: policy() });
    }
    let key = match (rules.symmetric_key, group_key) {
        (true, None) => return Err(LinkError::NoGroupKey { policy: policy() }),
        (true, Some(key)) => Some(key),
        (false, _) => None,
    };
    // (device id, its entry)
    let chosen: Vec<(String, Option<&PreRegisteredItem>)> = match (&rules.allow, select) {
        (Some(allow), Select::All) => allow
            .entries()
            .into_iter()
            .map(|e| (entry_id(e).to_string(), Some(e)))
            .collect(),
        (None, Select::All) => return Err(LinkError::NothingToList { policy: policy() }),
        (Some(allow), Select::Id(id)) => {
            let entry = allow
                .entries()
                .into_iter()
                .find(|e| e.device_id.as_deref() == Some(id))
                .or_else(|| allow.get(id))
                .ok_or_else(|| LinkError::NotListed {
                    policy: policy(),
                    id: id.to_string(),
                })?;
            vec![(entry_id(entry).to_string(), Some(entry))]
        }
        (None, Select::Id(id)) => vec![(id.to_string(), None)],
    };
    let mut codes = Vec::with_capacity(chosen.len());
    for (id, entry) in chosen {
        if let Some(reason) = id_refusal(&rules, &id) {
            return Err(LinkError::Refused {
                policy: policy(),
                id,
                reason,
            });
        }
        let serial_number = entry.map(|e| e.serial_number.clone());
        let mut caption = vec![id.clone()];
        if let Some(serial) = serial_number.as_ref().filter(|s| **s != id) {
            caption.push(format!("serial {serial}"));
        }
        codes.push(Code {
            link: Link::Provision(ProvisionLink {
                endpoint: at.endpoint.to_string(),
                namespace: at.namespace.to_string(),
                policy: at.name.to_string(),
                device_id: Some(id.clone()),
                serial_number,
                proof: key.map(|key| provisioning::proof(key, &id)),
                token: entry.and_then(|e| e.token.clone()),
            }),
            id,
            caption,
        });
    }
    Ok(codes)
}

/// The id an entry provisions as: its deviceId, else its serial number.
fn entry_id(entry: &PreRegisteredItem) -> &str {
    entry.device_id.as_deref().unwrap_or(&entry.serial_number)
}

/// Why the policy would refuse `id` whatever the device proves (its pattern, its name).
fn id_refusal(rules: &Rules, id: &str) -> Option<String> {
    if let Some(pattern) = rules.id_pattern.as_ref().filter(|p| !p.is_match(id)) {
        return Some(format!("it does not match idPattern {}", pattern.as_str()));
    }
    let name = format!("{}{id}", rules.prefix);
    object_name_problem(&name).map(|problem| format!("the device name {name} {problem}"))
}

/// Protocols in the order a connect link lists their endpoints; others follow by name.
const PROTOCOL_ORDER: [&str; 6] = ["mqtt", "mqtts", "http", "https", "coap", "coaps"];

/// The connect code of device `name` from its credentials Secret's data (`username`,
/// `password`, `<protocol>-endpoint`), or None when the Secret holds no password yet.
pub fn connect_code(
    name: &str,
    serial_number: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> Option<Code> {
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !v.is_empty())
    };
    let password = text("password")?;
    let username = text("username")?;
    let mut endpoints: Vec<(String, String)> = data
        .keys()
        .filter_map(|key| key.strip_suffix("-endpoint"))
        .filter_map(|protocol| Some((protocol.to_string(), text(&format!("{protocol}-endpoint"))?)))
        .collect();
    let rank = |protocol: &str| {
        PROTOCOL_ORDER
            .iter()
            .position(|p| *p == protocol)
            .unwrap_or(PROTOCOL_ORDER.len())
    };
    endpoints.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    let mut caption = vec![name.to_string()];
    if let Some(serial) = serial_number {
        caption.push(format!("serial {serial}"));
    }
    Some(Code {
        id: name.to_string(),
        caption,
        link: Link::Connect(ConnectLink {
            username,
            password,
            endpoints,
        }),
    })
}

/// A file stem for each code, in order: the id with every character but ASCII letters, digits,
/// `-`, `_` and `.` replaced by `_` (no path separators, no hidden files), made unique with
/// `-2`, `-3`, … where two ids clean to the same stem.
pub fn file_stems(codes: &[Code]) -> Vec<String> {
    let mut used = HashSet::new();
    codes
        .iter()
        .map(|code| {
            let mut clean: String = code
                .id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if clean.is_empty() || clean.starts_with('.') {
                clean.insert(0, '_');
            }
            let mut stem = clean.clone();
            let mut n = 2;
            while !used.insert(stem.to_ascii_lowercase()) {
                stem = format!("{clean}-{n}");
                n += 1;
            }
            stem
        })
        .collect()
}
