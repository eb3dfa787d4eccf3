//! `devplane simulate --provision POLICY`: each simulated device first provisions itself over
//! HTTP with the key derived for its id (what a factory would have flashed; the simulator reads
//! the policy's group key, as the factory holds it), then connects with what it got.

use std::collections::BTreeMap;

use bytes::Bytes;
use devplane_api::v1alpha1::ProvisioningPolicy;
use devplane_core::onboarding::NamePattern;
use devplane_core::provisioning::{GROUP_KEY, proof};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};

use super::Credentials;
use crate::cli::SimulateArgs;

/// A provisioned device's name and what its answer holds.
type Provisioned = (String, BTreeMap<String, String>);

/// Provisions in flight at once.
const CONCURRENCY: usize = 32;

/// Provision `count` devices through `policy`; their answers by device name.
pub async fn all(
    client: &kube::Client,
    args: &SimulateArgs,
    policy: &str,
    count: u64,
) -> Result<Credentials, String> {
    let namespace = &args.namespace;
    let policies: Api<ProvisioningPolicy> = Api::namespaced(client.clone(), namespace);
    let found = policies
        .get(policy)
        .await
        .map_err(|e| format!("read ProvisioningPolicy {namespace}/{policy}: {e}"))?;
    let secret = found
        .spec
        .attestation
        .symmetric_key
        .as_ref()
        .ok_or_else(|| {
            format!("ProvisioningPolicy {namespace}/{policy} has no symmetricKey attestation")
        })?
        .secret_ref
        .name
        .clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let group_key = secrets
        .get(&secret)
        .await
        .map_err(|e| format!("read Secret {namespace}/{secret}: {e}"))?
        .data
        .and_then(|mut d| d.remove(GROUP_KEY))
        .map(|v| v.0)
        .ok_or_else(|| format!("Secret {namespace}/{secret} has no {GROUP_KEY}"))?;
    let pattern = NamePattern::parse(&args.id_pattern).map_err(|e| e.to_string())?;
    if count > 1 && !pattern.has_index() {
        return Err("--id-pattern needs {index} (or {index:N}) so the ids differ".into());
    }
    let addr = args
        .http_addr
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    let uri = format!("http://{addr}/v1/provision/{namespace}/{policy}");
    let http = super::http::client();
    eprintln!(
        "simulate: {count} devices provision themselves through {namespace}/{policy} at {addr}"
    );
    let answers: Vec<Result<Provisioned, String>> = futures::stream::iter(1..=count)
        .map(|index| {
            let id = pattern.render(index as i64);
            let body = json!({"deviceId": id, "proof": proof(&group_key, &id)});
            let (http, uri) = (http.clone(), uri.clone());
            async move { one(&http, &uri, &id, body).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut credentials = Credentials::new();
    let mut failures = Vec::new();
    for answer in answers {
        match answer {
            Ok((name, held)) => {
                credentials.insert(name, held);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        eprintln!(
            "simulate: {} of {count} devices could not provision; the first: {first}",
            failures.len()
        );
    }
    if credentials.is_empty() {
        return Err("no device provisioned".into());
    }
    Ok(credentials)
}

/// One provisioning request; the device name and what its answer holds, as its Secret would
/// (`password`, `<protocol>-endpoint`).
async fn one(
    http: &super::http::HttpClient,
    uri: &str,
    id: &str,
    body: Value,
) -> Result<Provisioned, String> {
    let request = hyper::Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("{id}: {e}"))?;
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{id}: {e}"))?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !matches!(status, 200 | 201) {
        return Err(format!(
            "{id}: {status} {} {}",
            answer["reason"].as_str().unwrap_or(""),
            answer["message"].as_str().unwrap_or("")
        ));
    }
    let name = answer["name"]
        .as_str()
        .ok_or_else(|| format!("{id}: the answer has no name"))?
        .to_string();
    let mut held = BTreeMap::new();
    if let Some(password) = answer["password"].as_str() {
        held.insert("password".to_string(), password.to_string());
    }
    if let Some(endpoints) = answer["endpoints"].as_object() {
        for (protocol, url) in endpoints {
            if let Some(url) = url.as_str() {
                held.insert(format!("{protocol}-endpoint"), url.to_string());
            }
        }
    }
    Ok((name, held))
}
