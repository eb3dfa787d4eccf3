//! `devplane webhook`: the validating admission webhook (`admission.k8s.io/v1`, over TLS) for
//! what the CRDs' CEL rules cannot check on a real cluster because it needs other objects —
//! models resolve, attribute and desired values fit them, a command's parameters fit the
//! service, a gateway reference exists. It reads DeviceModels, Gateways and Devices through
//! one watch per kind; the checks themselves are `devplane_core::admission`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use devplane_api::v1alpha1::{Device, DeviceCommand, DeviceModel, Gateway};
use devplane_core::admission::{self, KnownObjects};
use devplane_core::model::ModelKey;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::cli::WebhookArgs;

type Known = Arc<RwLock<KnownObjects>>;

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
    let known: Known = Arc::default();
    let synced = start_watches(&client, &known, &stop);
    let ready = {
        let admin = admin.clone();
        tokio::spawn(async move {
            synced.await;
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

/// Keep `known` current from one watch per kind; resolves once each has listed everything.
fn start_watches(
    client: &kube::Client,
    known: &Known,
    stop: &CancellationToken,
) -> impl std::future::Future<Output = ()> + use<> {
    let (models_ready, models) = tokio::sync::oneshot::channel();
    let (gateways_ready, gateways) = tokio::sync::oneshot::channel();
    let (devices_ready, devices) = tokio::sync::oneshot::channel();
    let k = known.clone();
    tokio::spawn(follow(
        Api::<DeviceModel>::all(client.clone()),
        stop.clone(),
        models_ready,
        move |event| {
            let mut known = k.write();
            match event {
                Seen::Apply(m) => {
                    let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
                    known.models.insert(key, m.spec.clone());
                }
                Seen::Delete(m) => {
                    let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
                    known.models.remove(&key);
                }
                Seen::Relisted(keep) => known
                    .models
                    .retain(|k, _| keep.contains(&(k.namespace.clone(), k.name.clone()))),
            }
        },
    ));
    let k = known.clone();
    tokio::spawn(follow(
        Api::<Gateway>::all(client.clone()),
        stop.clone(),
        gateways_ready,
        move |event| {
            let mut known = k.write();
            match event {
                Seen::Apply(g) => {
                    known
                        .gateways
                        .insert((g.namespace().unwrap_or_default(), g.name_any()));
                }
                Seen::Delete(g) => {
                    known
                        .gateways
                        .remove(&(g.namespace().unwrap_or_default(), g.name_any()));
                }
                Seen::Relisted(keep) => known.gateways.retain(|k| keep.contains(k)),
            }
        },
    ));
    let k = known.clone();
    tokio::spawn(follow(
        Api::<Device>::all(client.clone()),
        stop.clone(),
        devices_ready,
        move |event| {
            let mut known = k.write();
            match event {
                Seen::Apply(d) => {
                    let namespace = d.namespace().unwrap_or_default();
                    let model = ModelKey::from_ref(&d.spec.model_ref, &namespace);
                    known.devices.insert((namespace, d.name_any()), model);
                }
                Seen::Delete(d) => {
                    known
                        .devices
                        .remove(&(d.namespace().unwrap_or_default(), d.name_any()));
                }
                Seen::Relisted(keep) => known.devices.retain(|k, _| keep.contains(k)),
            }
        },
    ));
    async move {
        let _ = models.await;
        let _ = gateways.await;
        let _ = devices.await;
    }
}

/// What a watch saw.
enum Seen<'a, K> {
    Apply(&'a K),
    Delete(&'a K),
    /// A re-list finished: keep only these (namespace, name).
    Relisted(&'a HashSet<(String, String)>),
}

/// Follow a kind until `stop`, with backoff; `ready` fires after the first complete list.
async fn follow<K>(
    api: Api<K>,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
    mut handle: impl FnMut(Seen<'_, K>) + Send,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let mut ready = Some(ready);
    let mut listed = HashSet::new();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                listed.insert((o.namespace().unwrap_or_default(), o.name_any()));
                handle(Seen::Apply(&o));
            }
            Ok(watcher::Event::Apply(o)) => handle(Seen::Apply(&o)),
            Ok(watcher::Event::Delete(o)) => handle(Seen::Delete(&o)),
            Ok(watcher::Event::InitDone) => {
                handle(Seen::Relisted(&listed));
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Err(e) => tracing::warn!(
                kind = %K::kind(&()),
                error = %devplane_core::report::chain(&e),
                "watch failed; retrying with backoff"
            ),
        }
    }
}

/// Answer one AdmissionReview.
async fn validate(State(known): State<Known>, Json(review): Json<Value>) -> Json<Value> {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let problems = judge(&known.read(), request);
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
pub fn judge(known: &KnownObjects, request: &Value) -> Vec<String> {
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
