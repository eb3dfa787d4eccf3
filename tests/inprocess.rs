//! kube-rs (what devplane's controllers are written with) against the API server: in-process
//! over the router with no socket, and over TLS with the kubeconfig `devplane up` writes.

use std::time::Duration;

use devplane_api::v1alpha1::{Device, DeviceSpec, ModelReference};
use devplane_apiserver::{ApiServer, ApiServerConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::support::Devplane;

async fn in_process() -> (ApiServer, kube::Client) {
    let store = devplane_store::open("memory://")
        .await
        .expect("memory store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("API server");
    devplane_runtime::up::install(&server)
        .await
        .expect("CRDs installed");
    server.spawn_background();
    let client = kube::Client::new(
        server.in_process_router(devplane_runtime::up::admin_identity()),
        "default",
    );
    (server, client)
}

fn device(name: &str) -> Device {
    Device::new(
        name,
        DeviceSpec {
            model_ref: ModelReference {
                name: "m".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn kube_rs_creates_patches_applies_and_watches_in_process() {
    let (_server, client) = in_process().await;
    let devices: Api<Device> = Api::default_namespaced(client.clone());
    let created = within(
        "create",
        devices.create(&PostParams::default(), &device("d1")),
    )
    .await
    .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.spec.lifecycle,
        devplane_api::v1alpha1::Lifecycle::Servicing,
        "the CRD default applied"
    );

    let mut events = watcher(devices.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = within("watch init", events.try_next())
        .await
        .expect("watch")
        .expect("an object");
    assert_eq!(first.metadata.name.as_deref(), Some("d1"));

    let patched = within(
        "merge patch",
        devices.patch(
            "d1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        ),
    )
    .await
    .expect("merge patch");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "labels do not bump generation"
    );
    let seen = within("watch change", events.try_next())
        .await
        .expect("watch")
        .expect("an object");
    assert_eq!(
        seen.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("a"))
            .map(String::as_str),
        Some("b")
    );

    let apply = PatchParams::apply("test-controller").force();
    let applied = within("apply", devices.patch("d1", &apply, &Patch::Apply(json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device", "spec": {"modelRef": {"name": "m"}, "serialNumber": "SN1"}}))))
        .await
        .expect("apply");
    assert_eq!(
        applied.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
    let status = json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device", "status": {"phase": "Planned"}});
    let with_status = within(
        "status apply",
        devices.patch_status("d1", &apply, &Patch::Apply(status.clone())),
    )
    .await
    .expect("status");
    assert_eq!(
        with_status.status.as_ref().and_then(|s| s.phase),
        Some(devplane_api::v1alpha1::Phase::Planned)
    );
    assert_eq!(
        with_status.metadata.generation,
        Some(2),
        "status does not bump generation"
    );
    let again = within(
        "status again",
        devices.patch_status("d1", &apply, &Patch::Apply(status)),
    )
    .await
    .expect("status");
    assert_eq!(
        again.metadata.resource_version, with_status.metadata.resource_version,
        "a no-op write keeps the revision"
    );

    let list = within("list", devices.list(&ListParams::default().labels("a=b")))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn kube_rs_finalizer_helper_adds_and_removes_its_finalizer() {
    let (_server, client) = in_process().await;
    let devices: Api<Device> = Api::default_namespaced(client);
    within(
        "create",
        devices.create(&PostParams::default(), &device("d2")),
    )
    .await
    .expect("create");
    let reconcile = |object: std::sync::Arc<Device>| {
        let devices = devices.clone();
        async move {
            finalizer::finalizer(
                &devices,
                "test.devplane.io/cleanup",
                object,
                |event| async move {
                    match event {
                        FinalizerEvent::Apply(_) | FinalizerEvent::Cleanup(_) => {
                            Ok::<_, std::convert::Infallible>(
                                kube::runtime::controller::Action::await_change(),
                            )
                        }
                    }
                },
            )
            .await
        }
    };
    let current = devices.get("d2").await.expect("get");
    within("add finalizer", reconcile(std::sync::Arc::new(current)))
        .await
        .expect("finalizer added (JSON patch test on a missing path)");
    let current = devices.get("d2").await.expect("get");
    assert_eq!(
        current.metadata.finalizers.as_deref(),
        Some(&["test.devplane.io/cleanup".to_string()][..])
    );
    within("delete", devices.delete("d2", &DeleteParams::default()))
        .await
        .expect("delete");
    let terminating = devices.get("d2").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    within("cleanup", reconcile(std::sync::Arc::new(terminating)))
        .await
        .expect("finalizer removed");
    assert!(
        devices.get_opt("d2").await.expect("get").is_none(),
        "gone once the finalizer is removed"
    );
}

#[tokio::test]
async fn leases_refuse_an_update_without_or_with_a_stale_resource_version() {
    let (_server, client) = in_process().await;
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).expect("lease");
    let created = within("create", leases.create(&PostParams::default(), &lease))
        .await
        .expect("create");
    let mut stale = created.clone();
    stale.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    within(
        "replace",
        leases.replace("leader", &PostParams::default(), &stale),
    )
    .await
    .expect("replace with the current version");
    let err = within(
        "stale replace",
        leases.replace("leader", &PostParams::default(), &stale),
    )
    .await
    .expect_err("stale");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
    let mut unversioned = stale;
    unversioned.metadata.resource_version = None;
    let err = within(
        "unversioned replace",
        leases.replace("leader", &PostParams::default(), &unversioned),
    )
    .await
    .expect_err("no RV");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err}"
    );
}

#[tokio::test]
async fn kube_rs_connects_with_the_kubeconfig_devplane_up_writes() {
    let devplane = Devplane::start(&[]);
    let kubeconfig =
        kube::config::Kubeconfig::read_from(devplane.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let version = within("version", client.apiserver_version())
        .await
        .expect("version");
    assert_eq!(version.minor, "33");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let list = within("list", namespaces.list(&ListParams::default()))
        .await
        .expect("namespaces over TLS with the token");
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("devplane-library"))
    );
}

/// The race the credentials fresh read closes: a device decommissioned right after its Secret
/// was created, before the Secret's watch event reached the controllers' cache. Here the cache
/// never hears of it (a store no watch feeds); the Secret must be revoked all the same.
#[tokio::test]
async fn a_device_leaving_service_before_its_secret_reaches_the_cache_has_it_revoked() {
    use devplane_api::v1alpha1::{Lifecycle, Phase};
    use devplane_reconcilers::identity::{self, Subject};
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector;

    let (_server, client) = in_process().await;
    // The Device exists, so that the garbage collector leaves the Secret it owns.
    let devices_api: Api<Device> = Api::default_namespaced(client.clone());
    let meter = within(
        "create",
        devices_api.create(&PostParams::default(), &device("meter")),
    )
    .await
    .expect("device created");
    let uid = meter.metadata.uid.clone().expect("uid");
    let (models, _) = reflector::store();
    let (devices, _) = reflector::store();
    let (gateways, _) = reflector::store();
    let (secrets, _) = reflector::store();
    let ctx = devplane_reconcilers::Context::new(
        client.clone(),
        models,
        devices,
        gateways,
        secrets,
        devplane_reconcilers::Settings::default(),
        std::sync::Arc::new(devplane_reconcilers::NoMetrics),
    );
    let subject = |phase: Option<Phase>, lifecycle: Lifecycle| Subject {
        kind_label: "device",
        namespace: "default",
        name: "meter",
        generation: Some(1),
        lifecycle,
        phase,
        has_connected: false,
        rotation: None,
        owner: OwnerReference {
            api_version: "iot.devplane.io/v1alpha1".into(),
            kind: "Device".into(),
            name: "meter".into(),
            uid: uid.clone(),
            ..Default::default()
        },
        conditions: Vec::new(),
        model: Ok("1.0.0".into()),
        problems: Vec::new(),
        endpoints: Vec::new(),
    };
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let secret_name = devplane_core::naming::credentials_secret_name("meter");
    let issued = within(
        "credentials issued",
        identity::reconcile(&ctx, subject(None, Lifecycle::Servicing), "test"),
    )
    .await
    .expect("reconcile");
    assert_eq!(issued.phase, Phase::Provisioned);
    assert!(secrets.get_opt(&secret_name).await.expect("read").is_some());
    let revoked = within(
        "credentials revoked",
        identity::reconcile(
            &ctx,
            subject(Some(Phase::Provisioned), Lifecycle::Decommissioned),
            "test",
        ),
    )
    .await
    .expect("reconcile");
    assert_eq!(revoked.phase, Phase::Decommissioned);
    assert!(
        secrets.get_opt(&secret_name).await.expect("read").is_none(),
        "the Secret, and the password in it, are gone"
    );
}
