//! devplane's controllers. Each reconciles one kind through `kube::Client` only, so the same
//! code runs inside `devplane up` (over the in-process API router) and in a cluster
//! (`devplane controller`):
//!
//! - DeviceModel: resolves `extends`, reports Ready or why not, counts and users;
//! - Device: model and attribute validation, credentials, the lifecycle phase;
//! - Gateway: the same for gateways, plus the sub-devices they may act for;
//! - OnboardingBatch: bulk device creation with progress and a deletion policy;
//! - DeviceCommand: validation against the model and timeouts;
//! - ProvisioningPolicy: whether a zero-touch policy can provision, and how many it did;
//! - Application: credentials of northbound applications.
//!
//! Each follows the same shape: dereference (caches and reads) → validate and build (pure) →
//! apply (server-side apply with its own field manager) → status, written only when it
//! changed, so settled objects cause no writes.

pub mod application;
pub mod conditions;
pub mod context;
pub mod credentials;
pub mod device;
pub mod device_command;
pub mod device_model;
pub mod echo;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod onboarding_batch;
pub mod provisioning_policy;
pub mod queue;
pub mod retry;
pub mod shared;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devplane_api::v1alpha1::{
    Application, Device, DeviceCommand, DeviceModel, Gateway, OnboardingBatch, ProvisioningPolicy,
};
use devplane_core::model::ModelKey;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

pub use context::{Context, NoMetrics, Observer, Settings};
pub use error::Error;
use shared::Watched;

/// A boxed reconcile run.
type ReconcileFuture = std::pin::Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// The objects of a change feed whose spec changed (a new generation), and deletions: status
/// writes of related objects must not re-reconcile everything that depends on them (a model's
/// device count changes with every device onboarded).
fn spec_changes<K>(
    changes: impl futures::Stream<Item = shared::Change<K>> + Send + 'static,
) -> impl futures::Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    // Remember each object's generation: an update that keeps it (a status write) is no
    // trigger; creations, spec changes and deletions are.
    let mut seen: std::collections::HashMap<(Option<String>, String), Option<i64>> =
        std::collections::HashMap::new();
    changes.filter_map(move |change| {
        let key = (change.object.namespace(), change.object.name_any());
        let out = if change.deleted {
            seen.remove(&key);
            Some(change.object)
        } else {
            let generation = change.object.meta().generation;
            (seen.insert(key, generation) != Some(generation)).then_some(change.object)
        };
        std::future::ready(out)
    })
}

/// Wrap a reconciler so every run is observed (count, duration, errors by category) and a
/// success starts the object's backoff over.
fn observed<K, F, Fut>(
    name: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> ReconcileFuture
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |object, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            ctx.observer.started(name);
            ctx.observer.queued(
                name,
                ctx.queue.left(name, &ObjectRef::from_obj(object.as_ref())),
            );
            let started = Instant::now();
            let key = (object.namespace(), object.name_any());
            let result = reconcile(object, ctx.clone()).await;
            if result.is_ok() && ctx.retries.succeeded(name, key.0, key.1) {
                ctx.observer.waiting(name, ctx.retries.waiting(name));
            }
            ctx.observer.finished(
                name,
                started.elapsed(),
                result.as_ref().err().map(Error::category),
            );
            result
        })
    }
}

/// Drain a controller's result stream until shutdown. An object the scheduler dropped because
/// it is gone leaves the queue.
async fn drive<K, S, E>(name: &'static str, ctx: Arc<Context>, stream: S)
where
    K: Resource<DynamicType = ()>,
    S: futures::Stream<Item = Result<(ObjectRef<K>, Action), ControllerError<E>>>,
    E: std::error::Error + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(result) = stream.next().await {
        if let Err(e) = result {
            if let ControllerError::ObjectNotFound(gone) = &e {
                ctx.observer.queued(name, ctx.queue.left(name, gone));
            }
            tracing::debug!(controller = name, error = %e, "controller event");
        }
    }
}

/// Type of the errors a controller's result stream carries.
type ControllerError<E> = kube::runtime::controller::Error<E, watcher::Error>;

/// A controller's triggers from its own kind, counted into its queue on the way in.
fn queued<K>(
    name: &'static str,
    ctx: &Arc<Context>,
    triggers: impl futures::Stream<Item = Arc<K>> + Send + 'static,
) -> impl futures::Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let ctx = ctx.clone();
    triggers.inspect(move |object| count(name, &ctx, &ObjectRef::from_obj(object.as_ref())))
}

/// `object` is to be reconciled by controller `name`: count it into the controller's queue.
fn count<K: Resource>(name: &'static str, ctx: &Context, object: &ObjectRef<K>) {
    ctx.observer.queued(name, ctx.queue.triggered(name, object));
}

/// The objects a controller is to reconcile again because an event held back during one of
/// its writes was not that write's echo (echo.rs), counted into its queue.
fn retriggered<K>(
    name: &'static str,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let ctx = ctx.clone();
    ctx.echoes
        .retriggers(name)
        .map(move |(namespace, name_of)| {
            let object = ObjectRef::<K>::new(&name_of).within(&namespace);
            count(name, &ctx, &object);
            object
        })
}

/// A mapper from related objects to a controller's objects, counting what it triggers into the
/// controller's queue.
fn counted<Other, K, I>(
    name: &'static str,
    ctx: &Arc<Context>,
    mapper: impl Fn(Arc<Other>) -> I + Send + Sync + 'static,
) -> impl Fn(Arc<Other>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    I: IntoIterator<Item = ObjectRef<K>>,
{
    let ctx = ctx.clone();
    move |other| {
        let refs: Vec<ObjectRef<K>> = mapper(other).into_iter().collect();
        for r in &refs {
            count(name, &ctx, r);
        }
        refs
    }
}

/// The owner of kind `K` of a child object (as kube-runtime's `owns` finds it).
fn owner<K>(child: &impl Resource) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let reference = child
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.kind == K::kind(&()) && r.api_version == K::api_version(&()))?;
    Some(ObjectRef::<K>::new(&reference.name).within(&child.meta().namespace.clone()?))
}

/// Run every controller until `shutdown` is cancelled.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    observer: Arc<dyn Observer>,
    shutdown: CancellationToken,
) {
    // One watch per kind that several controllers need, shared (shared.rs).
    let all = watcher::Config::default;
    let models = Watched::<DeviceModel>::start(Api::all(client.clone()), all(), &shutdown);
    let devices = Watched::<Device>::start(Api::all(client.clone()), all(), &shutdown);
    let gateways = Watched::<Gateway>::start(Api::all(client.clone()), all(), &shutdown);
    // Every Secret the controllers write carries this label: they watch only those, never all
    // the Secrets of the cluster (less memory, and nothing read that is not theirs).
    let managed = format!(
        "{}={}",
        devplane_api::constants::labels::MANAGED_BY,
        devplane_api::constants::labels::MANAGED_BY_VALUE
    );
    let secrets = Watched::<Secret>::start(
        Api::all(client.clone()),
        watcher::Config::default().labels(&managed),
        &shutdown,
    );
    let caches_ready = async {
        let _ = tokio::join!(
            models.store.wait_until_ready(),
            devices.store.wait_until_ready(),
            gateways.store.wait_until_ready(),
            secrets.store.wait_until_ready()
        );
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = caches_ready => {}
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        models.store.clone(),
        devices.store.clone(),
        gateways.store.clone(),
        secrets.store.clone(),
        settings,
        observer,
    ));
    let stop = {
        let shutdown = shutdown.clone();
        move || {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        }
    };
    // Devices and commands: enough reconciles at once to keep a remote store (etcd, one round
    // trip per write) busy; on the embedded store the CPU bounds them anyway.
    let config = ControllerConfig::default().concurrency(64);

    // DeviceModel: its own changes, models it extends, and its users coming and going.
    let model_ctx = ctx.clone();
    let model_controller = Controller::for_shared_stream(
        queued(device_model::NAME, &ctx, models.subscribe()),
        models.store.clone(),
    )
    .with_config(
        ControllerConfig::default()
            .concurrency(4)
            .debounce(Duration::from_millis(500)),
    )
    .watches_shared_stream(
        spec_changes(models.changes()),
        counted(
            device_model::NAME,
            &ctx,
            move |changed: Arc<DeviceModel>| {
                let key =
                    ModelKey::new(changed.namespace().unwrap_or_default(), changed.name_any());
                device_model::models_extending(&model_ctx, &key)
                    .into_iter()
                    .chain(device_model::enos::rivals(&model_ctx, &changed))
                    .map(|k| ObjectRef::<DeviceModel>::new(&k.name).within(&k.namespace))
                    .collect::<Vec<_>>()
            },
        ),
    )
    .watches_shared_stream(
        devices.subscribe(),
        counted(device_model::NAME, &ctx, |d: Arc<Device>| {
            let key = ModelKey::from_ref(&d.spec.model_ref, &d.namespace().unwrap_or_default());
            Some(ObjectRef::<DeviceModel>::new(&key.name).within(&key.namespace))
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(device_model::NAME, device_model::reconcile),
        device_model::error_policy,
        ctx.clone(),
    );

    // Device: its own changes, its Secret, its model (and what that extends), its gateway. Its
    // own writes' echoes are dropped (echo.rs).
    let device_echoes = ctx.clone();
    let own_devices = devices.subscribe().filter(move |d| {
        std::future::ready(!device_echoes.echoes.is_echo(device::NAME, d.as_ref()))
    });
    let secret_echoes = ctx.clone();
    let own_secrets = secrets.subscribe().filter(move |s| {
        std::future::ready(!secret_echoes.echoes.is_echo(device::NAME, s.as_ref()))
    });
    let dependants_ctx = ctx.clone();
    let device_devices = devices.store.clone();
    let device_controller = Controller::for_shared_stream(
        queued(device::NAME, &ctx, own_devices),
        devices.store.clone(),
    )
    .with_config(config.clone())
    .reconcile_on(retriggered::<Device>(device::NAME, &ctx))
    .watches_shared_stream(
        own_secrets,
        counted(device::NAME, &ctx, |s: Arc<Secret>| {
            owner::<Device>(s.as_ref())
        }),
    )
    .watches_shared_stream(
        spec_changes(models.changes()),
        counted(device::NAME, &ctx, move |m: Arc<DeviceModel>| {
            let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
            dependants_ctx.devices_depending_on(&key)
        }),
    )
    .watches_shared_stream(
        spec_changes(gateways.changes()),
        counted(device::NAME, &ctx, move |g: Arc<Gateway>| {
            gateway::devices_naming(&g, &device_devices.state())
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(device::NAME, device::reconcile),
        device::error_policy,
        ctx.clone(),
    );

    // Gateway: its own changes, its Secret, its model, and devices it may act for.
    let gateway_dependants = ctx.clone();
    let gateway_echoes = ctx.clone();
    let gateway_gateways = gateways.store.clone();
    let gateway_devices = devices.store.clone();
    let device_gateways = gateway::DeviceGateways::default();
    let gateway_secrets = secrets.subscribe().filter(move |s| {
        std::future::ready(!gateway_echoes.echoes.is_echo(gateway::NAME, s.as_ref()))
    });
    let gateway_controller = Controller::for_shared_stream(
        queued(gateway::NAME, &ctx, gateways.subscribe()),
        gateways.store.clone(),
    )
    .with_config(
        ControllerConfig::default()
            .concurrency(4)
            .debounce(Duration::from_millis(200)),
    )
    .reconcile_on(retriggered::<Gateway>(gateway::NAME, &ctx))
    .watches_shared_stream(
        gateway_secrets,
        counted(gateway::NAME, &ctx, |s: Arc<Secret>| {
            owner::<Gateway>(s.as_ref())
        }),
    )
    .watches_shared_stream(
        spec_changes(models.changes()),
        counted(gateway::NAME, &ctx, move |m: Arc<DeviceModel>| {
            let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
            gateway_dependants.gateways_depending_on(&key)
        }),
    )
    .watches_shared_stream(
        devices.subscribe(),
        counted(gateway::NAME, &ctx, move |d: Arc<Device>| {
            // The change feed hands a deletion on once the cache has dropped the device.
            let present = gateway_devices
                .get(&ObjectRef::from_obj(d.as_ref()))
                .is_some();
            device_gateways.triggers(&d, present, &gateway_gateways.state())
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(gateway::NAME, gateway::reconcile),
        gateway::error_policy,
        ctx.clone(),
    );

    // The kinds only one controller needs are watched here, the same way (shared.rs).
    let batches = Watched::<OnboardingBatch>::start(Api::all(client.clone()), all(), &shutdown);
    let batch_controller = Controller::for_shared_stream(
        queued(onboarding_batch::NAME, &ctx, batches.subscribe()),
        batches.store.clone(),
    )
    .with_config(ControllerConfig::default().concurrency(4))
    .graceful_shutdown_on(stop())
    .run(
        observed(onboarding_batch::NAME, onboarding_batch::reconcile),
        onboarding_batch::error_policy,
        ctx.clone(),
    );

    let commands = Watched::<DeviceCommand>::start(Api::all(client.clone()), all(), &shutdown);
    let command_store = commands.store.clone();
    let command_controller = Controller::for_shared_stream(
        queued(device_command::NAME, &ctx, commands.subscribe()),
        commands.store.clone(),
    )
    .with_config(config)
    .watches_shared_stream(
        devices.subscribe(),
        counted(device_command::NAME, &ctx, move |d: Arc<Device>| {
            let namespace = d.namespace();
            let name = d.name_any();
            command_store
                .state()
                .iter()
                .filter(|c| c.namespace() == namespace && c.spec.device == name)
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(device_command::NAME, device_command::reconcile),
        device_command::error_policy,
        ctx.clone(),
    );

    let applications = Watched::<Application>::start(Api::all(client.clone()), all(), &shutdown);
    let application_controller = Controller::for_shared_stream(
        queued(application::NAME, &ctx, applications.subscribe()),
        applications.store.clone(),
    )
    .with_config(ControllerConfig::default().concurrency(2))
    .watches_shared_stream(
        secrets.subscribe(),
        counted(application::NAME, &ctx, |s: Arc<Secret>| {
            owner::<Application>(s.as_ref())
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(application::NAME, application::reconcile),
        application::error_policy,
        ctx.clone(),
    );

    // ProvisioningPolicy: its own changes and the devices carrying its label.
    let policies = Watched::<ProvisioningPolicy>::start(Api::all(client.clone()), all(), &shutdown);
    let policy_controller = Controller::for_shared_stream(
        queued(provisioning_policy::NAME, &ctx, policies.subscribe()),
        policies.store.clone(),
    )
    .with_config(
        ControllerConfig::default()
            .concurrency(2)
            .debounce(Duration::from_secs(1)),
    )
    .watches_shared_stream(
        devices.subscribe(),
        counted(provisioning_policy::NAME, &ctx, |d: Arc<Device>| {
            let policy = devplane_core::provisioning::policy_of(&d.metadata)?;
            Some(ObjectRef::<ProvisioningPolicy>::new(policy).within(&d.namespace()?))
        }),
    )
    .graceful_shutdown_on(stop())
    .run(
        observed(provisioning_policy::NAME, provisioning_policy::reconcile),
        provisioning_policy::error_policy,
        ctx.clone(),
    );

    // Each controller on a task of its own (kube-runtime runs each reconcile as a task too):
    // one task polling them all took in at most one budget of tokio's cooperative scheduling
    // (about 128 changes) per turn for all of them, and under load fell a whole change buffer
    // behind. A controller that panics takes the others down, as it did in one task.
    let drives = [
        tokio::spawn(drive(
            provisioning_policy::NAME,
            ctx.clone(),
            policy_controller,
        )),
        tokio::spawn(drive(
            application::NAME,
            ctx.clone(),
            application_controller,
        )),
        tokio::spawn(drive(device_model::NAME, ctx.clone(), model_controller)),
        tokio::spawn(drive(device::NAME, ctx.clone(), device_controller)),
        tokio::spawn(drive(gateway::NAME, ctx.clone(), gateway_controller)),
        tokio::spawn(drive(onboarding_batch::NAME, ctx.clone(), batch_controller)),
        tokio::spawn(drive(device_command::NAME, ctx.clone(), command_controller)),
    ]
    .map(tokio_util::task::AbortOnDropHandle::new);
    if let Err(e) = futures::future::try_join_all(drives).await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}
