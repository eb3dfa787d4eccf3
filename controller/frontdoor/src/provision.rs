//! Zero-touch provisioning: one logic behind HTTP `POST /v1/provision/{ns}/{policy}`, the MQTT
//! session of user `provision/{ns}/{policy}` and CoAP `POST /provision/{ns}/{policy}`.
//!
//! A request is checked against its ProvisioningPolicy ([`devplane_core::provisioning`] decides;
//! this module reads the keys and certificates it needs), then the Device is created through
//! the API (labelled with the policy, owned by nothing) and the answer — exactly what the
//! device's credentials Secret holds — is sent only once the controllers issued those
//! credentials and the front door would accept them. Requests for one device name are handled
//! one at a time, so concurrent retries create one Device; a policy's `maxDevices` counts the
//! devices carrying its label plus the creations under way.

pub mod x509;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devplane_api::constants::{annotations, field_managers};
use devplane_api::v1alpha1::{Device, Phase, ProvisioningPolicy, ProvisioningPolicyStatus};
use devplane_core::naming::credentials_secret_name;
use devplane_core::provisioning::{self as rules, Claim, Presented, Reason, Repeat, Rules};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::topic::Identity;

/// Longest one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request waits for the controllers to issue credentials.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a key or CA read from a Secret is used before it is read again.
const KEY_TTL: Duration = Duration::from_secs(10);
/// Annotation on a Device asking for new credentials (the credentials controller's).
const ROTATE_ANNOTATION: &str = "iot.devplane.io/rotate-credentials";

/// A provisioning request, as every protocol carries it (JSON); only the fields the policy's
/// attestation needs are required.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// The device's id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Its serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Its derived key, base64.
    #[serde(default)]
    pub proof: Option<String>,
    /// Its one-time token.
    #[serde(default)]
    pub token: Option<String>,
}

/// The identity a device gets: what its credentials Secret holds.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// The Device's namespace.
    pub namespace: String,
    /// The Device's name.
    pub name: String,
    /// The user name to connect with (`{namespace}/{name}`).
    pub username: String,
    /// The password.
    pub password: String,
    /// Where to connect, by protocol.
    pub endpoints: BTreeMap<String, String>,
    /// The Device was created by this request (else it existed).
    #[serde(skip)]
    pub created: bool,
}

/// What kind of failure a [`Problem`] is; each protocol maps it to its status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The policy refused (HTTP 403).
    Refused,
    /// No such policy (404).
    NotFound,
    /// The request is malformed (400).
    Invalid,
    /// Too many refusals from this source lately (429).
    RateLimited,
    /// The policy or the API cannot serve it now; retry (503).
    Unavailable,
}

/// Why a request got no identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of failure.
    pub failure: Failure,
    /// The reason, one word.
    pub reason: &'static str,
    /// What exactly.
    pub message: String,
}

impl Problem {
    fn new(failure: Failure, reason: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            failure,
            reason,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Problem {
        Problem::new(Failure::Unavailable, "Unavailable", message)
    }

    /// The request is malformed.
    pub fn invalid(message: impl Into<String>) -> Problem {
        Problem::new(Failure::Invalid, "Invalid", message)
    }

    /// The HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        match self.failure {
            Failure::Refused => 403,
            Failure::NotFound => 404,
            Failure::Invalid => 400,
            Failure::RateLimited => 429,
            Failure::Unavailable => 503,
        }
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> serde_json::Value {
        json!({"reason": self.reason, "message": self.message})
    }
}

/// A policy as the front door keeps it.
struct Policy {
    object: ProvisioningPolicy,
    rules: Result<Rules, String>,
}

/// Refusals and the last provisioning of a policy, waiting to be written to its status.
#[derive(Default)]
struct Stats {
    /// `status.refused` as first seen (a restart continues the counts).
    base: BTreeMap<String, i64>,
    refused: BTreeMap<&'static str, i64>,
    last: Option<(String, jiff::Timestamp)>,
    dirty: bool,
}

/// A token bucket of refusals per source address.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Devices carrying each policy's label, and the creations under way.
#[derive(Default)]
struct Members {
    by_policy: HashMap<Identity, HashSet<String>>,
    policy_of: HashMap<Identity, Identity>,
    creating: HashMap<Identity, HashSet<String>>,
}

impl Members {
    fn count(&self, policy: &Identity) -> usize {
        let members = self.by_policy.get(policy);
        let creating = self.creating.get(policy);
        let pending = creating
            .iter()
            .flat_map(|c| c.iter())
            .filter(|n| !members.is_some_and(|m| m.contains(*n)))
            .count();
        members.map_or(0, HashSet::len) + pending
    }
}

/// A key of a Secret: namespace, name, key.
type SecretKey = (String, String, &'static str);
/// When a Secret's key was read, and its bytes (None: absent).
type Cached = (Instant, Option<Arc<Vec<u8>>>);

/// The provisioning state the front door shares.
pub struct Provisioning {
    policies: RwLock<HashMap<Identity, Arc<Policy>>>,
    keys: Mutex<HashMap<SecretKey, Cached>>,
    members: Mutex<Members>,
    locks: Mutex<HashMap<Identity, Arc<tokio::sync::Mutex<()>>>>,
    waiting: Mutex<HashMap<Identity, usize>>,
    changed: tokio::sync::Notify,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    stats: Mutex<HashMap<Identity, Stats>>,
    /// Refusals one source may have in a burst before it is rate-limited.
    burst: f64,
    /// Refusals per second a source earns back.
    refill: f64,
}

impl Provisioning {
    /// Empty state; a source may be refused `burst` times in a row, then once per
    /// `1 / refill` seconds.
    pub fn new(burst: u32, refill: f64) -> Provisioning {
        Provisioning {
            policies: RwLock::default(),
            keys: Mutex::default(),
            members: Mutex::default(),
            locks: Mutex::default(),
            waiting: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            buckets: Mutex::default(),
            stats: Mutex::default(),
            burst: f64::from(burst.max(1)),
            refill,
        }
    }

    /// A policy was created or changed.
    pub fn apply_policy(&self, policy: &ProvisioningPolicy) {
        let id = Identity::new(policy.namespace().unwrap_or_default(), policy.name_any());
        let rules = Rules::compile(&policy.spec).map_err(|e| e.to_string());
        let status = policy.status.clone().unwrap_or_default();
        self.stats
            .lock()
            .entry(id.clone())
            .or_insert_with(|| Stats {
                base: status.refused,
                ..Stats::default()
            });
        // A changed spec (another Secret) reads its keys anew; the front door's own status
        // writes change nothing.
        let generation = self
            .policies
            .read()
            .get(&id)
            .and_then(|p| p.object.metadata.generation);
        if generation != policy.metadata.generation {
            self.keys.lock().retain(|(ns, _, _), _| ns != &id.namespace);
        }
        self.policies.write().insert(
            id,
            Arc::new(Policy {
                object: policy.clone(),
                rules,
            }),
        );
    }

    /// A policy was deleted (its devices stay).
    pub fn delete_policy(&self, id: &Identity) {
        self.policies.write().remove(id);
        self.stats.lock().remove(id);
    }

    /// Keep only these policies after a re-list.
    pub fn retain_policies(&self, keep: &HashSet<Identity>) {
        self.policies.write().retain(|id, _| keep.contains(id));
        self.stats.lock().retain(|id, _| keep.contains(id));
    }

    /// A Device was created or changed: count it for its policy and wake the requests
    /// waiting for it.
    pub fn device_applied(&self, device: &Device, id: &Identity) {
        let policy = devplane_core::provisioning::policy_of(&device.metadata)
            .map(|p| Identity::new(id.namespace.clone(), p));
        {
            let mut members = self.members.lock();
            let members = &mut *members;
            if let Some(old) = members.policy_of.get(id).cloned()
                && Some(&old) != policy.as_ref()
            {
                if let Some(set) = members.by_policy.get_mut(&old) {
                    set.remove(&id.name);
                }
                members.policy_of.remove(id);
            }
            if let Some(policy) = policy {
                members
                    .by_policy
                    .entry(policy.clone())
                    .or_default()
                    .insert(id.name.clone());
                members.policy_of.insert(id.clone(), policy);
            }
        }
        self.wake(id);
    }

    /// A Device is gone.
    pub fn device_gone(&self, id: &Identity) {
        let mut members = self.members.lock();
        if let Some(policy) = members.policy_of.remove(id)
            && let Some(set) = members.by_policy.get_mut(&policy)
        {
            set.remove(&id.name);
        }
    }

    /// A device's credentials (or its entry) changed: wake the requests waiting for it.
    pub fn wake(&self, id: &Identity) {
        if self.waiting.lock().contains_key(id) {
            self.changed.notify_waiters();
        }
    }

    /// The uid of a policy, for Events.
    pub fn policy_uid(&self, id: &Identity) -> Option<String> {
        self.policy(id).and_then(|p| p.object.uid())
    }

    fn policy(&self, id: &Identity) -> Option<Arc<Policy>> {
        self.policies.read().get(id).cloned()
    }

    /// Whether `source` used up its refusals.
    fn limited(&self, source: IpAddr) -> bool {
        let mut buckets = self.buckets.lock();
        let Some(bucket) = buckets.get_mut(&source) else {
            return false;
        };
        let now = Instant::now();
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.refill)
            .min(self.burst);
        bucket.at = now;
        bucket.tokens < 1.0
    }

    /// `source` was refused once more.
    fn refused_from(&self, source: IpAddr) {
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            let (burst, refill) = (self.burst, self.refill);
            buckets.retain(|_, b| b.tokens + b.at.elapsed().as_secs_f64() * refill < burst);
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: Instant::now(),
        });
        bucket.tokens -= 1.0;
    }

    fn count_refusal(&self, policy: &Identity, reason: &'static str) {
        if let Some(stats) = self.stats.lock().get_mut(policy) {
            *stats.refused.entry(reason).or_default() += 1;
            stats.dirty = true;
        }
    }

    fn count_provisioned(&self, policy: &Identity, device: &str) {
        if let Some(stats) = self.stats.lock().get_mut(policy) {
            stats.last = Some((device.to_string(), jiff::Timestamp::now()));
            stats.dirty = true;
        }
    }

    /// The status patches waiting to be written, and clears them.
    fn take_status(&self) -> Vec<(Identity, ProvisioningPolicyStatus)> {
        let mut stats = self.stats.lock();
        stats
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(id, s)| {
                s.dirty = false;
                let mut refused = s.base.clone();
                for (reason, n) in &s.refused {
                    *refused.entry((*reason).to_string()).or_default() += n;
                }
                // Only the fields the front door owns (the controller writes the others).
                let status = ProvisioningPolicyStatus {
                    refused,
                    last_provisioned: s.last.as_ref().map(|(device, at)| {
                        devplane_api::v1alpha1::LastProvisioned {
                            device: device.clone(),
                            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(*at),
                        }
                    }),
                    ..ProvisioningPolicyStatus::default()
                };
                (id.clone(), status)
            })
            .collect()
    }

    fn lock(&self, device: &Identity) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock();
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(device.clone()).or_default().clone()
    }

    /// Reserve a place under `maxDevices` for a new device.
    fn reserve(&self, policy: &Identity, max: Option<u64>, device: &str) -> Result<(), Problem> {
        let mut members = self.members.lock();
        if let Some(max) = max {
            let count = members.count(policy) as u64;
            if count >= max {
                return Err(Problem::new(
                    Failure::Refused,
                    Reason::LimitReached.as_str(),
                    format!("the policy provisioned {count} devices, its maxDevices"),
                ));
            }
        }
        members
            .creating
            .entry(policy.clone())
            .or_default()
            .insert(device.to_string());
        Ok(())
    }

    fn release(&self, policy: &Identity, device: &str) {
        let mut members = self.members.lock();
        if let Some(set) = members.creating.get_mut(policy) {
            set.remove(device);
            if set.is_empty() {
                members.creating.remove(policy);
            }
        }
    }

    /// Bytes under `key` of a Secret in `namespace`, cached for a few seconds.
    async fn secret_bytes(
        &self,
        client: &kube::Client,
        namespace: &str,
        secret: &str,
        key: &'static str,
    ) -> Result<Arc<Vec<u8>>, Problem> {
        let cache_key = (namespace.to_string(), secret.to_string(), key);
        if let Some((at, value)) = self.keys.lock().get(&cache_key)
            && at.elapsed() < KEY_TTL
        {
            return value
                .clone()
                .ok_or_else(|| missing_key(namespace, secret, key));
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let found = match tokio::time::timeout(API_TIMEOUT, api.get_opt(secret)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                return Err(Problem::unavailable(format!(
                    "cannot read Secret {namespace}/{secret}: {}",
                    devplane_core::report::chain(&e)
                )));
            }
            Err(_) => return Err(Problem::unavailable("the API did not answer in time")),
        };
        let value = found
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(key))
            .map(|v| Arc::new(v.0))
            .filter(|v| !v.is_empty());
        self.keys
            .lock()
            .insert(cache_key, (Instant::now(), value.clone()));
        value.ok_or_else(|| missing_key(namespace, secret, key))
    }
}

/// The key `device_id` derives from `policy`'s group key, for a DTLS handshake (which cannot
/// wait for the API): from the cached group key, read anew in the background once stale (the
/// front door reads it when the policy appears, so the first handshake finds it).
pub fn derived_key(shared: &Arc<Shared>, policy: &Identity, device_id: &str) -> Option<[u8; 32]> {
    let p = &shared.provisioning;
    let secret = p
        .policy(policy)?
        .object
        .spec
        .attestation
        .symmetric_key
        .as_ref()?
        .secret_ref
        .name
        .clone();
    let cache_key = (policy.namespace.clone(), secret, rules::GROUP_KEY);
    let (fresh, group) = match p.keys.lock().get(&cache_key) {
        Some((at, value)) => (at.elapsed() < KEY_TTL, value.clone()),
        None => (false, None),
    };
    if !fresh {
        prefetch(shared, policy);
    }
    Some(rules::derive_key(group?.as_slice(), device_id))
}

/// Read a policy's group key into the cache in the background.
pub fn prefetch(shared: &Arc<Shared>, policy: &Identity) {
    let Some(symmetric) = shared
        .provisioning
        .policy(policy)
        .and_then(|p| p.object.spec.attestation.symmetric_key.clone())
    else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (shared, namespace) = (shared.clone(), policy.namespace.clone());
    runtime.spawn(async move {
        let read = shared
            .provisioning
            .secret_bytes(
                &shared.client,
                &namespace,
                &symmetric.secret_ref.name,
                rules::GROUP_KEY,
            )
            .await;
        if let Err(problem) = read {
            tracing::debug!(%namespace, message = %problem.message, "cannot read a group key");
        }
    });
}

fn missing_key(namespace: &str, secret: &str, key: &str) -> Problem {
    Problem::unavailable(format!(
        "the policy's Secret {namespace}/{secret} has no {key}"
    ))
}

/// Provision a device through the policy `policy` (namespace and name): `source` is where the
/// request came from, `certificates` the client certificate chain of a TLS connection.
pub async fn provision(
    shared: &Arc<Shared>,
    policy: &Identity,
    request: &Request,
    source: IpAddr,
    certificates: Option<&[CertificateDer<'static>]>,
) -> Result<Answer, Problem> {
    let p = &shared.provisioning;
    if p.limited(source) {
        shared.metrics.provisions.inc("RateLimited");
        return Err(Problem::new(
            Failure::RateLimited,
            "RateLimited",
            "too many refused requests from this address; retry later",
        ));
    }
    let result = attempt(shared, policy, request, certificates).await;
    match &result {
        Ok(answer) => {
            shared.metrics.provisions.inc(if answer.created {
                "created"
            } else {
                "existing"
            });
            if answer.created {
                p.count_provisioned(policy, &answer.name);
                tracing::info!(policy = %policy, device = %answer.name, "device provisioned");
            }
        }
        Err(problem) => {
            shared.metrics.provisions.inc(problem.reason);
            if problem.failure == Failure::Refused {
                p.refused_from(source);
                p.count_refusal(policy, problem.reason);
                shared.warn_policy(policy, problem.reason, problem.message.clone());
                tracing::info!(policy = %policy, %source, reason = problem.reason, message = %problem.message, "provisioning refused");
            } else if problem.failure == Failure::NotFound {
                p.refused_from(source);
            }
        }
    }
    result
}

fn refused(refusal: rules::Refusal) -> Problem {
    Problem::new(Failure::Refused, refusal.reason.as_str(), refusal.message)
}

async fn attempt(
    shared: &Arc<Shared>,
    policy_id: &Identity,
    request: &Request,
    certificates: Option<&[CertificateDer<'static>]>,
) -> Result<Answer, Problem> {
    let p = &shared.provisioning;
    let policy = p.policy(policy_id).ok_or_else(|| {
        Problem::new(
            Failure::NotFound,
            "NotFound",
            format!("no ProvisioningPolicy {policy_id}"),
        )
    })?;
    let rules = policy
        .rules
        .as_ref()
        .map_err(|why| Problem::unavailable(format!("the policy cannot provision: {why}")))?;
    let now = jiff::Timestamp::now();
    // `attest` checks the window too; checking it first reads no Secret for an expired policy.
    if let Some(refusal) = rules.expired(now) {
        return Err(refused(refusal));
    }
    let attestation = &policy.object.spec.attestation;
    let namespace = &policy_id.namespace;
    let group_key = match &attestation.symmetric_key {
        Some(symmetric) => Some(
            p.secret_bytes(
                &shared.client,
                namespace,
                &symmetric.secret_ref.name,
                rules::GROUP_KEY,
            )
            .await?,
        ),
        None => None,
    };
    let certificate_id =
        match (&attestation.x509, certificates) {
            (Some(x509), Some(chain)) if !chain.is_empty() => {
                let ca = p
                    .secret_bytes(
                        &shared.client,
                        namespace,
                        &x509.ca_secret_ref.name,
                        rules::CA_CERT,
                    )
                    .await?;
                Some(x509::verify(&ca, chain, now).map_err(|why| {
                    Problem::new(Failure::Refused, Reason::BadProof.as_str(), why)
                })?)
            }
            _ => None,
        };
    let presented = Presented {
        device_id: request.device_id.as_deref(),
        serial_number: request.serial_number.as_deref(),
        proof: request.proof.as_deref(),
        token: request.token.as_deref(),
        certificate_id: certificate_id.as_deref(),
    };
    let claim = rules
        .attest(&presented, group_key.as_deref().map(Vec::as_slice), now)
        .map_err(refused)?;
    let device = Identity::new(namespace.clone(), claim.name.clone());
    let lock = p.lock(&device);
    let _one_at_a_time = lock.lock().await;

    let known = shared.registry.read().device(&device).is_some();
    let (created, rotation) = if known {
        (
            false,
            repeat(shared, &policy, rules, &claim, &device).await?,
        )
    } else {
        p.reserve(policy_id, rules.max_devices, &claim.name)?;
        let outcome = create(shared, &policy, &claim).await;
        match outcome {
            Ok(true) => {
                // Released once the device is counted by its label (below, after the wait).
                (true, None)
            }
            Ok(false) => {
                p.release(policy_id, &claim.name);
                (
                    false,
                    repeat(shared, &policy, rules, &claim, &device).await?,
                )
            }
            Err(problem) => {
                p.release(policy_id, &claim.name);
                return Err(problem);
            }
        }
    };
    let ready = credentials_ready(shared, &device, rotation.as_deref()).await;
    if created {
        p.release(policy_id, &claim.name);
    }
    ready?;
    let mut answer = read_answer(shared, &device).await?;
    answer.created = created;
    Ok(answer)
}

/// Create the Device; false when it exists already.
async fn create(shared: &Shared, policy: &Policy, claim: &Claim) -> Result<bool, Problem> {
    let namespace = policy.object.namespace().unwrap_or_default();
    let template = &policy.object.spec.template;
    let device_labels = template.metadata.labels.clone();
    let mut device_annotations = template.metadata.annotations.clone();
    if let Some(serial) = &claim.serial_number {
        device_annotations.insert(annotations::PROVISIONED_SERIAL.to_string(), serial.clone());
    }
    if claim.one_time_token {
        device_annotations.insert(
            annotations::PROVISIONED_WITH_TOKEN.to_string(),
            "true".to_string(),
        );
    }
    let mut spec = template.spec.clone();
    if claim.serial_number.is_some() {
        spec.serial_number = claim.serial_number.clone();
    }
    let mut metadata = ObjectMeta {
        name: Some(claim.name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(device_labels),
        annotations: Some(device_annotations).filter(|a| !a.is_empty()),
        ..ObjectMeta::default()
    };
    devplane_core::provisioning::mark_policy(&mut metadata, &policy.object.name_any());
    let device = Device {
        metadata,
        spec,
        status: None,
    };
    let api: Api<Device> = Api::namespaced(shared.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(field_managers::PROVISIONING.to_string()),
        ..PostParams::default()
    };
    match tokio::time::timeout(API_TIMEOUT, api.create(&params, &device)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(false),
        Ok(Err(kube::Error::Api(s))) if s.code == 422 || s.code == 400 => Err(Problem::new(
            Failure::Unavailable,
            "InvalidTemplate",
            format!("the policy's Device template is refused: {}", s.message),
        )),
        Ok(Err(e)) => Err(Problem::unavailable(format!(
            "cannot create Device {namespace}/{}: {}",
            claim.name,
            devplane_core::report::chain(&e)
        ))),
        Err(_) => Err(Problem::unavailable("the API did not answer in time")),
    }
}

/// What a claim whose Device exists gets: Ok(None) for the same identity, Ok(Some(request))
/// for fresh credentials (the rotation request put on the Device).
async fn repeat(
    shared: &Shared,
    policy: &Policy,
    rules: &Rules,
    claim: &Claim,
    device: &Identity,
) -> Result<Option<String>, Problem> {
    let api: Api<Device> = Api::namespaced(shared.client.clone(), &device.namespace);
    let existing = match tokio::time::timeout(API_TIMEOUT, api.get_opt(&device.name)).await {
        Ok(Ok(Some(existing))) => existing,
        Ok(Ok(None)) => {
            return Err(Problem::unavailable(
                "the device was deleted while provisioning; retry",
            ));
        }
        Ok(Err(e)) => {
            return Err(Problem::unavailable(devplane_core::report::chain(&e)));
        }
        Err(_) => return Err(Problem::unavailable("the API did not answer in time")),
    };
    let status = existing.status.clone().unwrap_or_default();
    let connected = matches!(status.phase, Some(Phase::Servicing | Phase::Maintenance))
        || status
            .connection
            .as_ref()
            .is_some_and(|c| c.last_seen.is_some());
    let annotations = existing.annotations();
    let facts = rules::Existing {
        policy: devplane_core::provisioning::policy_of(&existing.metadata),
        serial_number: annotations
            .get(annotations::PROVISIONED_SERIAL)
            .map(String::as_str),
        token_spent: annotations.contains_key(annotations::PROVISIONED_WITH_TOKEN),
        connected,
    };
    match rules
        .repeat(&policy.object.name_any(), claim, &facts)
        .map_err(refused)?
    {
        Repeat::Same => Ok(None),
        Repeat::Reissue => {
            let request = format!("provision-{}", jiff::Timestamp::now().as_nanosecond());
            let patch = json!({
                "apiVersion": devplane_api::API_VERSION,
                "kind": "Device",
                "metadata": {"annotations": {ROTATE_ANNOTATION: request}},
            });
            let params = PatchParams::apply(field_managers::PROVISIONING).force();
            match tokio::time::timeout(
                API_TIMEOUT,
                api.patch(&device.name, &params, &Patch::Apply(&patch)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(Some(request)),
                Ok(Err(e)) => Err(Problem::unavailable(devplane_core::report::chain(&e))),
                Err(_) => Err(Problem::unavailable("the API did not answer in time")),
            }
        }
    }
}

/// Wait until the front door holds the device with credentials it would accept (and, for a
/// reissue, the credentials answering `rotation`).
async fn credentials_ready(
    shared: &Shared,
    device: &Identity,
    rotation: Option<&str>,
) -> Result<(), Problem> {
    let p = &shared.provisioning;
    *p.waiting.lock().entry(device.clone()).or_default() += 1;
    let deadline = tokio::time::Instant::now() + CREDENTIALS_TIMEOUT;
    let result = loop {
        let notified = p.changed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if ready(shared, device, rotation) {
            break Ok(());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break Err(Problem::unavailable(format!(
                "the credentials of {device} were not issued within {} s; retry",
                CREDENTIALS_TIMEOUT.as_secs()
            )));
        }
    };
    let mut waiting = p.waiting.lock();
    if let Some(n) = waiting.get_mut(device) {
        *n -= 1;
        if *n == 0 {
            waiting.remove(device);
        }
    }
    result
}

fn ready(shared: &Shared, device: &Identity, rotation: Option<&str>) -> bool {
    let registry = shared.registry.read();
    let phase_ok = registry.device(device).is_some_and(|d| {
        matches!(
            d.phase,
            Some(Phase::Provisioned | Phase::Servicing | Phase::Maintenance)
        ) && d.may_connect()
    });
    phase_ok
        && registry
            .device_rotation(device)
            .is_some_and(|answered| rotation.is_none() || answered == rotation)
}

/// The answer from the device's credentials Secret.
async fn read_answer(shared: &Shared, device: &Identity) -> Result<Answer, Problem> {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), &device.namespace);
    let name = credentials_secret_name(&device.name);
    let secret = match tokio::time::timeout(API_TIMEOUT, api.get_opt(&name)).await {
        Ok(Ok(Some(secret))) => secret,
        Ok(Ok(None)) => {
            return Err(Problem::unavailable(format!(
                "the credentials of {device} were revoked meanwhile; retry"
            )));
        }
        Ok(Err(e)) => return Err(Problem::unavailable(devplane_core::report::chain(&e))),
        Err(_) => return Err(Problem::unavailable("the API did not answer in time")),
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let (Some(username), Some(password)) = (text("username"), text("password")) else {
        return Err(Problem::unavailable(format!(
            "the credentials Secret of {device} is incomplete; retry"
        )));
    };
    let endpoints = data
        .keys()
        .filter_map(|k| k.strip_suffix("-endpoint"))
        .filter_map(|protocol| Some((protocol.to_string(), text(&format!("{protocol}-endpoint"))?)))
        .collect();
    Ok(Answer {
        namespace: device.namespace.clone(),
        name: device.name.clone(),
        username,
        password,
        endpoints,
        created: false,
    })
}

/// Write each policy's refusals and last provisioning to its status, at most once a second.
pub async fn run_status_writer(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        for (id, status) in shared.provisioning.take_status() {
            let api: Api<ProvisioningPolicy> =
                Api::namespaced(shared.client.clone(), &id.namespace);
            let patch = json!({
                "apiVersion": devplane_api::API_VERSION,
                "kind": "ProvisioningPolicy",
                "status": status,
            });
            let params = PatchParams::apply(field_managers::PROVISIONING).force();
            if let Err(e) = api
                .patch_status(&id.name, &params, &Patch::Apply(&patch))
                .await
            {
                tracing::warn!(policy = %id, error = %devplane_core::report::chain(&e), "cannot write the status of a provisioning policy");
            }
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
