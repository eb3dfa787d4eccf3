//! `devplane webhook`: the validating admission webhook (`admission.k8s.io/v1`, over TLS) for
//! what the CRDs' CEL rules cannot check on a real cluster because it needs other objects —
//! models resolve, attribute and desired values fit them, a command's parameters fit the
//! service, a gateway reference exists. It reads DeviceModels, Gateways and Devices through
//! one reflector per kind; the checks themselves are `devplane_core::admission`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use devplane_api::v1alpha1::{Device, DeviceCommand, DeviceModel, DeviceModelSpec, Gateway};
use devplane_core::admission;
use devplane_core::model::{ModelKey, ModelSource};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::cli::WebhookArgs;

/// Run `devplane webhook` until SIGTERM or SIGINT.
pub async fn run(args: &WebhookArgs) -> Result<(), String> {
    let client = crate::controller::client_from(args.kubeconfig.as_deref()).await?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let tls = crate::pki::server_config(&read(&args.tls_cert_file)?, &read(&args.tls_key_file)?)?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!("admission webhook listening on https://{local}/validate");
    let stop = CancellationToken::new();
    tokio::spawn(crate::up::stop_on_signal(stop.clone()));
    let admin = Admin::new();
    let admin_task = tokio::spawn(admin::serve(args.admin_addr, admin.clone(), stop.clone()));
    let known = Known::start(&client, &stop);
    let ready = {
        let (admin, known) = (admin.clone(), known.clone());
        tokio::spawn(async move {
            known.ready().await;
            admin.set_ready();
        })
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    crate::up::serve(listener, router(known), Some(acceptor), stop.clone()).await;
    ready.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    Ok(())
}

/// The webhook's routes.
pub fn router(known: Known) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .with_state(known)
}

/// What the webhook reads: one reflector per kind.
#[derive(Clone)]
pub struct Known {
    models: reflector::Store<DeviceModel>,
    gateways: reflector::Store<Gateway>,
    devices: reflector::Store<Device>,
}

impl Known {
    /// Start a reflector per kind; they run until `stop`.
    pub fn start(client: &kube::Client, stop: &CancellationToken) -> Known {
        Known {
            models: reflect(Api::all(client.clone()), stop),
            gateways: reflect(Api::all(client.clone()), stop),
            devices: reflect(Api::all(client.clone()), stop),
        }
    }

    /// Resolves once every reflector has listed everything.
    pub async fn ready(&self) {
        let _ = self.models.wait_until_ready().await;
        let _ = self.gateways.wait_until_ready().await;
        let _ = self.devices.wait_until_ready().await;
    }

    /// What exists now, as the checks read it (the models copied; devices and gateways are
    /// looked up as needed).
    fn snapshot(&self) -> Snapshot<'_> {
        let models = self
            .models
            .state()
            .iter()
            .map(|m| {
                let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
                (key, m.spec.clone())
            })
            .collect();
        Snapshot {
            known: self,
            models,
        }
    }
}

/// A reflector of one kind, restarted with backoff on errors.
fn reflect<K>(api: Api<K>, stop: &CancellationToken) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(
                        kind = %K::kind(&()),
                        error = %devplane_core::report::chain(&e),
                        "watch failed; retrying with backoff"
                    ),
                    None => return,
                },
            }
        }
    });
    store
}

/// The objects an admission request is checked against.
struct Snapshot<'a> {
    known: &'a Known,
    models: BTreeMap<ModelKey, DeviceModelSpec>,
}

impl ModelSource for Snapshot<'_> {
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec> {
        self.models.get(key)
    }
}

impl admission::Known for Snapshot<'_> {
    fn gateway_exists(&self, namespace: &str, name: &str) -> bool {
        self.known
            .gateways
            .get(&ObjectRef::new(name).within(namespace))
            .is_some()
    }

    fn device_model(&self, namespace: &str, name: &str) -> Option<ModelKey> {
        self.known
            .devices
            .get(&ObjectRef::new(name).within(namespace))
            .map(|d| ModelKey::from_ref(&d.spec.model_ref, namespace))
    }
}

/// Answer one AdmissionReview.
async fn validate(State(known): State<Known>, Json(review): Json<Value>) -> Json<Value> {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let problems = judge(&known.snapshot(), request);
    let response = if problems.is_empty() {
        json!({"uid": uid, "allowed": true})
    } else {
        json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 422, "reason": "Invalid", "message": problems.join("; ")},
        })
    };
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The problems with the object of an admission request (none: admit).
fn judge(known: &dyn admission::Known, request: &Value) -> Vec<String> {
    if request["operation"] == "DELETE" {
        return Vec::new();
    }
    let object = request["object"].clone();
    let unreadable = |e: serde_json::Error| vec![format!("the object cannot be read: {e}")];
    match request["kind"]["kind"].as_str().unwrap_or_default() {
        "Device" => match serde_json::from_value::<Device>(object) {
            Ok(device) => admission::review_device(&device, known),
            Err(e) => unreadable(e),
        },
        "Gateway" => match serde_json::from_value::<Gateway>(object) {
            Ok(gateway) => admission::review_gateway(&gateway, known),
            Err(e) => unreadable(e),
        },
        "DeviceCommand" => match serde_json::from_value::<DeviceCommand>(object) {
            Ok(command) => admission::review_command(&command, known),
            Err(e) => unreadable(e),
        },
        _ => Vec::new(),
    }
}
