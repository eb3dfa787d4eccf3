//! What every controller shares: the client, caches of the objects controllers look up
//! (reflectors), settings, metrics hooks, events, the clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use devplane_api::v1alpha1::{Device, DeviceModel, DeviceModelSpec, Gateway};
use devplane_core::model::{ModelKey, ModelSource, ResolveError, ResolvedModel};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Endpoints written into credentials Secrets, by protocol (`mqtt`, `http`, `coaps`; a
    /// secure variant goes with its protocol, and plain `coap` is for local tests only).
    pub endpoints: Vec<(String, String)>,
    /// How long old credentials keep working after a rotation.
    pub rotation_overlap: Duration,
    /// Concurrent device applies of one OnboardingBatch.
    pub batch_concurrency: usize,
    /// Name reported on Events.
    pub reporter: String,
    /// The northbound application endpoint written into Application credentials Secrets.
    pub app_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            endpoints: vec![
                ("mqtt".into(), "mqtt://127.0.0.1:1883".into()),
                ("http".into(), "http://127.0.0.1:8080".into()),
                ("coaps".into(), "coaps://127.0.0.1:5684".into()),
            ],
            rotation_overlap: Duration::from_secs(600),
            batch_concurrency: 32,
            reporter: "devplane-controller".into(),
            app_endpoint: Some("mqtt://127.0.0.1:1884".into()),
        }
    }
}

/// Hooks the runtime gives the controllers for metrics.
pub trait Observer: Send + Sync {
    /// A reconcile of `controller` started.
    fn started(&self, controller: &'static str);
    /// A reconcile of `controller` finished after `elapsed`, with an error category on failure.
    fn finished(&self, controller: &'static str, elapsed: Duration, error: Option<&'static str>);
    /// `objects` of `controller` are now waiting for a retry after a failure.
    fn waiting(&self, _controller: &'static str, _objects: usize) {}
    /// `objects` of `controller` are now waiting for a reconcile that a watch event asked for.
    fn queued(&self, _controller: &'static str, _objects: usize) {}
}

/// An observer that records nothing.
pub struct NoMetrics;

impl Observer for NoMetrics {
    fn started(&self, _: &'static str) {}
    fn finished(&self, _: &'static str, _: Duration, _: Option<&'static str>) {}
}

/// Resolution results by model.
type ResolvedCache = HashMap<ModelKey, Result<Arc<ResolvedModel>, ResolveError>>;

/// Shared state of the controllers.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// Every DeviceModel.
    pub models: Store<DeviceModel>,
    /// Every Device.
    pub devices: Store<Device>,
    /// Every Gateway.
    pub gateways: Store<Gateway>,
    /// Every Secret devplane manages (labelled `app.kubernetes.io/managed-by=devplane`).
    pub secrets: Store<k8s_openapi::api::core::v1::Secret>,
    /// Settings.
    pub settings: Settings,
    /// Metrics hooks.
    pub observer: Arc<dyn Observer>,
    /// Resolved models, valid while the model cache's fingerprint is unchanged.
    resolved: Mutex<(u64, ResolvedCache)>,
    /// Which devices and gateways depend on which models (their whole extends lineage), so a
    /// model change re-validates exactly its dependants.
    pub dependants: Mutex<HashMap<ModelKey, HashSet<Dependant>>>,
    reporter: Reporter,
    /// The clock (injected so tests can set time).
    pub clock: fn() -> jiff::Timestamp,
    /// Consecutive failures per object, for the backoff.
    pub retries: crate::retry::Retries,
    /// The controllers' own writes, whose watch events need no reconcile.
    pub echoes: crate::echo::Echoes,
    /// Objects waiting for a reconcile, by controller.
    pub queue: crate::queue::Queue,
}

/// An object that depends on a model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dependant {
    /// A Device.
    Device(ObjectRef<Device>),
    /// A Gateway.
    Gateway(ObjectRef<Gateway>),
}

/// A snapshot of the model cache that model resolution reads.
pub struct Models(HashMap<ModelKey, Arc<DeviceModel>>);

impl ModelSource for Models {
    fn model(&self, key: &ModelKey) -> Option<&DeviceModelSpec> {
        self.0.get(key).map(|m| &m.spec)
    }
}

impl Context {
    /// A context over reflector stores (filled by the caller's watches).
    pub fn new(
        client: kube::Client,
        models: Store<DeviceModel>,
        devices: Store<Device>,
        gateways: Store<Gateway>,
        secrets: Store<k8s_openapi::api::core::v1::Secret>,
        settings: Settings,
        observer: Arc<dyn Observer>,
    ) -> Context {
        let reporter = Reporter {
            controller: settings.reporter.clone(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Context {
            reporter,
            client,
            models,
            devices,
            gateways,
            secrets,
            settings,
            observer,
            dependants: Mutex::new(HashMap::new()),
            resolved: Mutex::new((0, HashMap::new())),
            clock: jiff::Timestamp::now,
            retries: crate::retry::Retries::default(),
            echoes: crate::echo::Echoes::default(),
            queue: crate::queue::Queue::default(),
        }
    }

    /// Now, whole seconds (as Kubernetes times are).
    pub fn now(&self) -> Time {
        let now = (self.clock)();
        Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
    }

    /// The model cache as a resolution source.
    pub fn models(&self) -> Models {
        Models(
            self.models
                .state()
                .into_iter()
                .filter_map(|m| Some((ModelKey::new(m.namespace()?, m.name_any()), m)))
                .collect(),
        )
    }

    /// Resolve a model, from a cache that is dropped whenever any model changes (thousands of
    /// devices share a handful of models).
    pub fn resolve(&self, key: &ModelKey) -> Result<Arc<ResolvedModel>, ResolveError> {
        use std::hash::{Hash, Hasher};
        let models = self.models.state();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for m in &models {
            (m.namespace(), m.name_any(), m.resource_version()).hash(&mut hasher);
        }
        let fingerprint = hasher.finish();
        {
            let cache = self.resolved.lock();
            if cache.0 == fingerprint
                && let Some(hit) = cache.1.get(key)
            {
                return hit.clone();
            }
        }
        let source = Models(
            models
                .into_iter()
                .filter_map(|m| Some((ModelKey::new(m.namespace()?, m.name_any()), m)))
                .collect(),
        );
        let result = devplane_core::model::resolve(&source, key).map(Arc::new);
        let mut cache = self.resolved.lock();
        if cache.0 != fingerprint {
            *cache = (fingerprint, HashMap::new());
        }
        cache.1.insert(key.clone(), result.clone());
        result
    }

    /// Record that `dependant` depends on every model in `keys` (replacing what it depended on).
    pub fn record_dependency(
        &self,
        dependant: Dependant,
        keys: impl IntoIterator<Item = ModelKey>,
    ) {
        let mut index = self.dependants.lock();
        for set in index.values_mut() {
            set.remove(&dependant);
        }
        for key in keys {
            index.entry(key).or_default().insert(dependant.clone());
        }
        index.retain(|_, set| !set.is_empty());
    }

    /// The Devices that depend on a model.
    pub fn devices_depending_on(&self, key: &ModelKey) -> Vec<ObjectRef<Device>> {
        self.dependants_of(key)
            .into_iter()
            .filter_map(|d| match d {
                Dependant::Device(r) => Some(r),
                Dependant::Gateway(_) => None,
            })
            .collect()
    }

    /// The Gateways that depend on a model.
    pub fn gateways_depending_on(&self, key: &ModelKey) -> Vec<ObjectRef<Gateway>> {
        self.dependants_of(key)
            .into_iter()
            .filter_map(|d| match d {
                Dependant::Gateway(r) => Some(r),
                Dependant::Device(_) => None,
            })
            .collect()
    }

    /// The objects that depend on a model.
    pub fn dependants_of(&self, key: &ModelKey) -> Vec<Dependant> {
        self.dependants
            .lock()
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Publish a Kubernetes Event about `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        // A recorder per event: kube's Recorder sweeps its whole de-duplication cache on every
        // publish, which is quadratic over thousands of devices; ours are published on
        // transitions only, so there is nothing to de-duplicate.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "cannot publish an event");
        }
    }
}
