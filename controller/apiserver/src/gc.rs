//! The background controllers a Kubernetes control plane runs next to its API server:
//! owner-reference garbage collection (background, foreground, orphan), namespace deletion,
//! and CRD deletion (custom resources first). They watch the whole store and act through the
//! same write paths as clients, so finalizers and events behave as for any other write. The
//! deletes of the garbage collector and of namespace deletion go through admission webhooks
//! as the identities of kube-controller-manager's controllers, as on a cluster, so a webhook
//! that protects an object from deletion is not bypassed by giving it a missing owner or by
//! deleting its namespace (which then stays Terminating while the webhook refuses).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use devplane_store::{EventKind, KeyValue, ListOptions, StoreError};
use futures::StreamExt;
use serde_json::Value;

use crate::builtin::Builtin;
use crate::object::{self, OwnerRef};
use crate::registry::Resource;
use crate::rest::{
    CRD_CLEANUP_FINALIZER, DeleteOptions, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, WriteOptions,
};
use crate::server::{Inner, sleep_or_shutdown};

const MANAGER: &str = "devplane-garbage-collector";

/// What the collector knows of one object.
#[derive(Clone, Debug)]
struct Node {
    storage: String,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerRef>,
    terminating: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Index {
    nodes: HashMap<String, Node>,
    uid_by_key: HashMap<String, String>,
    dependents: HashMap<String, HashSet<String>>,
}

/// Work for the collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Work {
    /// Check a dependent's owners.
    Dependent(String),
    /// An owner is being deleted in the foreground or orphaning: handle its dependents.
    Owner(String),
    /// A namespace is terminating: empty it.
    Namespace(String),
    /// A CRD is terminating: delete its custom resources.
    Crd(String),
}

/// Split `/registry/<group>/<plural>/[<ns>/]<name>`.
fn parse_key(key: &str) -> Option<(String, Option<String>, String)> {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["registry", group, plural, name] => {
            Some((format!("{group}/{plural}"), None, (*name).to_string()))
        }
        ["registry", group, plural, ns, name] => Some((
            format!("{group}/{plural}"),
            Some((*ns).to_string()),
            (*name).to_string(),
        )),
        _ => None,
    }
}

/// The part of a stored object's metadata the collector reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CollectedMetadata {
    uid: Option<Value>,
    owner_references: Option<Value>,
    deletion_timestamp: Option<Value>,
    finalizers: Option<Value>,
}

/// The object `{"metadata": {…}}` with only the fields the collector reads, parsed from the
/// stored JSON without building the rest (a spec, a status, managed fields), since the
/// collector sees every write of every resource.
fn collected_metadata(stored: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Stored {
        metadata: Option<CollectedMetadata>,
    }
    let metadata = serde_json::from_slice::<Stored>(stored).ok()?.metadata?;
    let fields = [
        ("uid", metadata.uid),
        ("ownerReferences", metadata.owner_references),
        ("deletionTimestamp", metadata.deletion_timestamp),
        ("finalizers", metadata.finalizers),
    ];
    let metadata: serde_json::Map<String, Value> = fields
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .collect();
    Some(serde_json::json!({ "metadata": metadata }))
}

impl Index {
    fn insert(&mut self, kv: &KeyValue, work: &mut VecDeque<Work>) {
        let Some(object) = collected_metadata(&kv.value) else {
            return;
        };
        let Some((storage, namespace, name)) = parse_key(&kv.key) else {
            return;
        };
        let Some(uid) = object::uid(&object).map(str::to_string) else {
            return;
        };
        self.remove_key(&kv.key);
        let node = Node {
            storage: storage.clone(),
            namespace,
            name: name.clone(),
            owners: object::owner_references(&object),
            terminating: object::is_terminating(&object),
            finalizers: object::finalizers(&object),
        };
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        if !node.owners.is_empty() {
            work.push_back(Work::Dependent(uid.clone()));
        }
        if node.terminating
            && node
                .finalizers
                .iter()
                .any(|f| f == FOREGROUND_FINALIZER || f == ORPHAN_FINALIZER)
        {
            work.push_back(Work::Owner(uid.clone()));
        }
        if node.terminating && storage == "core/namespaces" {
            work.push_back(Work::Namespace(name.clone()));
        }
        if node.terminating && storage == "apiextensions.k8s.io/customresourcedefinitions" {
            work.push_back(Work::Crd(name));
        }
        self.uid_by_key.insert(kv.key.clone(), uid.clone());
        self.nodes.insert(uid, node);
    }

    fn remove_key(&mut self, key: &str) -> Option<(String, Node)> {
        let uid = self.uid_by_key.remove(key)?;
        let node = self.nodes.remove(&uid)?;
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(&uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
        Some((uid, node))
    }

    fn delete(&mut self, key: &str, work: &mut VecDeque<Work>) {
        let Some((uid, node)) = self.remove_key(key) else {
            return;
        };
        for dependent in self.dependents.get(&uid).into_iter().flatten() {
            work.push_back(Work::Dependent(dependent.clone()));
        }
        for owner in &node.owners {
            if self.nodes.get(&owner.uid).is_some_and(|o| o.terminating) {
                work.push_back(Work::Owner(owner.uid.clone()));
            }
        }
        if let Some(ns) = &node.namespace
            && self
                .nodes
                .values()
                .any(|n| n.storage == "core/namespaces" && n.name == *ns && n.terminating)
        {
            work.push_back(Work::Namespace(ns.clone()));
        }
        if let Some((group, plural)) = node.storage.split_once('/') {
            let crd = format!("{plural}.{group}");
            if self.nodes.values().any(|n| {
                n.storage == "apiextensions.k8s.io/customresourcedefinitions"
                    && n.name == crd
                    && n.terminating
            }) {
                work.push_back(Work::Crd(crd));
            }
        }
    }

    /// Whether an owner reference points at a live object the dependent may have as owner
    /// (same uid, in the dependent's namespace or cluster-scoped).
    fn owner_alive(&self, dependent: &Node, owner: &OwnerRef) -> bool {
        self.nodes
            .get(&owner.uid)
            .is_some_and(|o| o.namespace.is_none() || o.namespace == dependent.namespace)
    }
}

/// Run the collector until shutdown.
pub async fn run(inner: Arc<Inner>) {
    loop {
        match run_once(&inner).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "garbage collector restarts");
                if sleep_or_shutdown(&inner, Duration::from_millis(200)).await {
                    return;
                }
            }
        }
    }
}

/// Build the index from a full list, then follow the store's events; returns Ok on shutdown
/// and Err when the watch broke (the caller starts over).
async fn run_once(inner: &Arc<Inner>) -> Result<(), StoreError> {
    let mut index = Index::default();
    let mut work = VecDeque::new();
    let mut start_after = None;
    let mut rev = None;
    loop {
        let page = inner
            .store
            .list(ListOptions {
                prefix: "/registry/".into(),
                start_after: start_after.clone(),
                limit: Some(5000),
                rev,
            })
            .await?;
        rev = Some(page.rev);
        for kv in &page.items {
            index.insert(kv, &mut work);
        }
        if !page.more {
            break;
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
    // Without previous values: the collector reads only the new object of a put and the key
    // of a delete, and on etcd a watch with them costs etcd a read per event.
    let mut stream = devplane_store::events_only(
        inner
            .store
            .watch_progress_without_prev("/registry/", rev.unwrap_or(0))
            .await?,
    );
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    resync.tick().await;
    loop {
        process(inner, &index, &mut work).await;
        tokio::select! {
            _ = inner.shutdown.cancelled() => return Ok(()),
            _ = resync.tick() => {
                // Retry what may have failed: every dependent and terminating object again.
                for (uid, node) in &index.nodes {
                    if !node.owners.is_empty() {
                        work.push_back(Work::Dependent(uid.clone()));
                    }
                    if node.terminating {
                        match node.storage.as_str() {
                            "core/namespaces" => work.push_back(Work::Namespace(node.name.clone())),
                            "apiextensions.k8s.io/customresourcedefinitions" => work.push_back(Work::Crd(node.name.clone())),
                            _ => work.push_back(Work::Owner(uid.clone())),
                        }
                    }
                }
            }
            next = stream.next() => match next {
                None => return Err(StoreError::Compacted { requested: 0, compacted: 0 }),
                Some(Err(e)) => return Err(e),
                Some(Ok(event)) => match event.kind {
                    EventKind::Put => index.insert(&event.kv, &mut work),
                    EventKind::Delete => index.delete(&event.kv.key, &mut work),
                },
            },
        }
    }
}

fn resource_for(inner: &Inner, storage: &str) -> Option<Arc<Resource>> {
    let registry = inner.registry();
    registry
        .resources()
        .iter()
        .find(|r| r.storage == storage && r.builtin != Some(Builtin::EventsV1))
        .cloned()
}

async fn process(inner: &Arc<Inner>, index: &Index, work: &mut VecDeque<Work>) {
    let mut done = HashSet::new();
    while let Some(item) = work.pop_front() {
        if !done.insert(item.clone()) {
            continue;
        }
        let result = match &item {
            Work::Dependent(uid) => dependent(inner, index, uid).await,
            Work::Owner(uid) => owner(inner, index, uid).await,
            Work::Namespace(name) => namespace(inner, name).await,
            Work::Crd(name) => crd(inner, name).await,
        };
        if let Err(e) = result {
            tracing::debug!(?item, error = %e, "garbage collection step failed; retried on the next resync");
        }
    }
}

type StepResult = Result<(), crate::error::ApiError>;

/// The options of a delete made by the controller of kube-controller-manager named
/// `controller` (its ServiceAccount in `kube-system`): admitted as an API request would be.
fn admitted_as(controller: &str) -> DeleteOptions {
    DeleteOptions {
        admission: true,
        caller: Some(crate::authz::Caller::service_account(
            "kube-system",
            controller,
        )),
        ..DeleteOptions::default()
    }
}

/// kube-controller-manager's garbage collector.
const GARBAGE_COLLECTOR: &str = "generic-garbage-collector";
/// kube-controller-manager's namespace controller.
const NAMESPACE_CONTROLLER: &str = "namespace-controller";

async fn dependent(inner: &Inner, index: &Index, uid: &str) -> StepResult {
    let Some(node) = index.nodes.get(uid) else {
        return Ok(());
    };
    if node.owners.is_empty() {
        return Ok(());
    }
    let dangling: Vec<&OwnerRef> = node
        .owners
        .iter()
        .filter(|o| !index.owner_alive(node, o))
        .collect();
    if dangling.is_empty() {
        return Ok(());
    }
    let Some(resource) = resource_for(inner, &node.storage) else {
        return Ok(());
    };
    if dangling.len() == node.owners.len() {
        if node.terminating {
            return Ok(());
        }
        return match inner
            .delete(
                &resource,
                node.namespace.as_deref(),
                &node.name,
                &admitted_as(GARBAGE_COLLECTOR),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        };
    }
    let gone: HashSet<String> = dangling.iter().map(|o| o.uid.clone()).collect();
    strip_owners(inner, &resource, node, &gone).await
}

async fn strip_owners(
    inner: &Inner,
    resource: &Resource,
    node: &Node,
    gone: &HashSet<String>,
) -> StepResult {
    let opts = WriteOptions::internal(MANAGER);
    inner
        .modify(
            resource,
            node.namespace.as_deref(),
            &node.name,
            &opts,
            |current| {
                let mut next = current.clone();
                let meta = object::meta_mut(&mut next);
                let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") else {
                    return Ok(None);
                };
                let before = refs.len();
                refs.retain(|r| {
                    r.get("uid")
                        .and_then(Value::as_str)
                        .is_none_or(|u| !gone.contains(u))
                });
                if refs.len() == before {
                    return Ok(None);
                }
                if refs.is_empty() {
                    meta.remove("ownerReferences");
                }
                Ok(Some(next))
            },
        )
        .await
        .map(|_| ())
}

async fn remove_finalizer(
    inner: &Inner,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
    finalizer: &str,
) -> StepResult {
    let opts = WriteOptions::internal(MANAGER);
    inner
        .modify(resource, namespace, name, &opts, |current| {
            let finalizers = object::finalizers(current);
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(None);
            }
            let mut next = current.clone();
            let kept: Vec<String> = finalizers.into_iter().filter(|f| f != finalizer).collect();
            object::set_finalizers(&mut next, &kept);
            Ok(Some(next))
        })
        .await
        .map(|_| ())
}

async fn owner(inner: &Inner, index: &Index, uid: &str) -> StepResult {
    let Some(node) = index.nodes.get(uid) else {
        return Ok(());
    };
    if !node.terminating {
        return Ok(());
    }
    let Some(resource) = resource_for(inner, &node.storage) else {
        return Ok(());
    };
    let dependents: Vec<&Node> = index
        .dependents
        .get(uid)
        .into_iter()
        .flatten()
        .filter_map(|d| index.nodes.get(d))
        .collect();
    if node.finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
        let gone: HashSet<String> = [uid.to_string()].into();
        for d in &dependents {
            if let Some(r) = resource_for(inner, &d.storage) {
                strip_owners(inner, &r, d, &gone).await?;
            }
        }
        return remove_finalizer(
            inner,
            &resource,
            node.namespace.as_deref(),
            &node.name,
            ORPHAN_FINALIZER,
        )
        .await;
    }
    if node.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
        let mut blocking = false;
        for d in &dependents {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == uid && o.block_owner_deletion);
            blocking |= blocks;
            if d.terminating {
                continue;
            }
            if let Some(r) = resource_for(inner, &d.storage) {
                let options = DeleteOptions {
                    propagation: Some("Foreground".into()),
                    ..admitted_as(GARBAGE_COLLECTOR)
                };
                match inner
                    .delete(&r, d.namespace.as_deref(), &d.name, &options)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !blocking {
            return remove_finalizer(
                inner,
                &resource,
                node.namespace.as_deref(),
                &node.name,
                FOREGROUND_FINALIZER,
            )
            .await;
        }
    }
    Ok(())
}

/// Delete everything in a terminating namespace; when it is empty, drop the `kubernetes`
/// finalizer so the namespace goes.
async fn namespace(inner: &Inner, name: &str) -> StepResult {
    let registry = inner.registry();
    let Some(namespaces) = registry.get("", "v1", "namespaces") else {
        return Ok(());
    };
    let Some((ns, _)) = inner.read(&namespaces, None, name).await? else {
        return Ok(());
    };
    if !object::is_terminating(&ns) {
        return Ok(());
    }
    let mut remaining = 0;
    // One object that cannot be deleted (a webhook refuses) does not keep the others: the
    // first failure is reported once every other object has been tried.
    let mut failed = None;
    let options = admitted_as(NAMESPACE_CONTROLLER);
    for resource in registry.namespaced_storages() {
        let resource = resource_for(inner, &resource.storage).unwrap_or(resource);
        let page = inner
            .store
            .list(ListOptions {
                prefix: resource.prefix(Some(name)),
                ..ListOptions::default()
            })
            .await?;
        for kv in &page.items {
            remaining += 1;
            let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if object::is_terminating(&object) {
                continue;
            }
            let Some(object_name) = object::name(&object) else {
                continue;
            };
            match inner
                .delete(&resource, Some(name), object_name, &options)
                .await
            {
                Ok(deleted) if deleted.gone => remaining -= 1,
                Ok(_) => {}
                Err(e) if e.code == 404 => remaining -= 1,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    }
    if let Some(failed) = failed {
        return Err(failed);
    }
    if remaining > 0 {
        return Ok(());
    }
    let opts = WriteOptions {
        subresource: Some("finalize".into()),
        ..WriteOptions::internal(MANAGER)
    };
    inner
        .modify(&namespaces, None, name, &opts, |current| {
            let finalizers: Vec<Value> = current
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !finalizers.iter().any(|f| f == "kubernetes") {
                return Ok(None);
            }
            let mut next = current.clone();
            let kept: Vec<Value> = finalizers
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect();
            next["spec"]["finalizers"] = Value::Array(kept);
            Ok(Some(next))
        })
        .await
        .map(|_| ())
}

/// Delete every custom resource of a terminating CRD; then drop its cleanup finalizer.
async fn crd(inner: &Inner, name: &str) -> StepResult {
    let registry = inner.registry();
    let Some(crds) = registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return Ok(());
    };
    let Some((crd, _)) = inner.read(&crds, None, name).await? else {
        return Ok(());
    };
    if !object::is_terminating(&crd) {
        return Ok(());
    }
    let Some((plural, group)) = name.split_once('.') else {
        return Ok(());
    };
    let storage = format!("{group}/{plural}");
    let mut remaining = 0;
    if let Some(resource) = resource_for(inner, &storage) {
        let page = inner
            .store
            .list(ListOptions {
                prefix: format!("/registry/{storage}/"),
                ..ListOptions::default()
            })
            .await?;
        for kv in &page.items {
            remaining += 1;
            let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if object::is_terminating(&object) {
                continue;
            }
            let Some(object_name) = object::name(&object) else {
                continue;
            };
            match inner
                .delete(
                    &resource,
                    object::namespace(&object),
                    object_name,
                    &DeleteOptions::default(),
                )
                .await
            {
                Ok(deleted) if deleted.gone => remaining -= 1,
                Ok(_) => {}
                Err(e) if e.code == 404 => remaining -= 1,
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    remove_finalizer(inner, &crds, None, name, CRD_CLEANUP_FINALIZER).await?;
    inner.refresh_registry().await
}

/// How long Events live (kube-apiserver's `--event-ttl` default).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// Delete Events older than [`EVENT_TTL`], every few minutes, until shutdown: controllers
/// publish them on every transition, and thousands of devices would otherwise leave them
/// forever.
pub async fn expire_events(inner: Arc<Inner>) {
    loop {
        if sleep_or_shutdown(&inner, Duration::from_secs(300)).await {
            return;
        }
        if let Err(e) = expire_once(&inner, jiff::Timestamp::now()).await {
            tracing::debug!(error = %e, "event expiry failed; retried later");
        }
    }
}

/// One sweep: delete every Event whose last activity is older than the TTL.
pub async fn expire_once(
    inner: &Inner,
    now: jiff::Timestamp,
) -> Result<usize, crate::error::ApiError> {
    let Some(events) = resource_for(inner, "core/events") else {
        return Ok(0);
    };
    let cutoff = now.as_second() - EVENT_TTL.as_secs() as i64;
    let mut deleted = 0;
    let mut start_after = None;
    loop {
        let page = inner
            .store
            .list(ListOptions {
                prefix: events.prefix(None),
                start_after: start_after.clone(),
                limit: Some(1000),
                rev: None,
            })
            .await?;
        for kv in &page.items {
            let Ok(event) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/series/lastObservedTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .filter_map(|p| event.pointer(p).and_then(Value::as_str))
            .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .max();
            if last.is_some_and(|t| t < cutoff) {
                match inner.store.delete(&kv.key, Some(kv.mod_rev)).await {
                    Ok(_) => deleted += 1,
                    // Changed or gone meanwhile: the next sweep looks again.
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !page.more {
            return Ok(deleted);
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_collector_reads_the_same_metadata_from_its_partial_parse_as_from_the_whole_object() {
        let objects = [
            json!({"metadata": {"name": "a", "uid": "u1"}, "spec": {"big": [1, 2, 3]}}),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {
                    "name": "b", "uid": "u2", "deletionTimestamp": "2026-11-29T00:00:00Z",
                    "finalizers": ["foregroundDeletion", "other"],
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "u1",
                         "blockOwnerDeletion": true}
                    ],
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {}}}]
                },
                "data": {"k": "v"}
            }),
            json!({"metadata": {"uid": "u3", "deletionTimestamp": null, "finalizers": null}}),
        ];
        for object in objects {
            let stored = serde_json::to_vec(&object).unwrap();
            let partial = collected_metadata(&stored).expect("metadata");
            assert_eq!(object::uid(&partial), object::uid(&object));
            assert_eq!(
                object::owner_references(&partial),
                object::owner_references(&object)
            );
            assert_eq!(
                object::is_terminating(&partial),
                object::is_terminating(&object)
            );
            assert_eq!(object::finalizers(&partial), object::finalizers(&object));
        }
        assert!(collected_metadata(b"{\"spec\": {}}").is_none());
        assert!(collected_metadata(b"[1]").is_none());
    }

    #[tokio::test]
    async fn events_older_than_the_ttl_are_deleted_and_newer_ones_kept() {
        let store = devplane_store::open("memory://").await.expect("store");
        let server = crate::ApiServer::new(store, crate::ApiServerConfig::default())
            .await
            .expect("server");
        let events = resource_for(&server.inner, "core/events").expect("events");
        // Both are written now; one reports activity 90 minutes later (a repeated event).
        let now = jiff::Timestamp::now();
        let later = jiff::Timestamp::from_second(now.as_second() + 90 * 60).expect("time");
        for (name, last) in [("old", now), ("new", later)] {
            let event = serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"name": "x"}, "reason": "R", "message": "m", "lastTimestamp": last.to_string()});
            let opts = WriteOptions::internal("test");
            server
                .inner
                .create(&events, Some("default"), event, &opts)
                .await
                .expect("create");
        }
        let sweep_at = jiff::Timestamp::from_second(now.as_second() + 2 * 3600).expect("time");
        assert_eq!(
            expire_once(&server.inner, sweep_at).await.expect("sweep"),
            1
        );
        assert!(
            server
                .inner
                .read(&events, Some("default"), "old")
                .await
                .expect("read")
                .is_none()
        );
        assert!(
            server
                .inner
                .read(&events, Some("default"), "new")
                .await
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn store_keys_split_into_storage_namespace_and_name() {
        assert_eq!(
            parse_key("/registry/core/configmaps/ns/cm"),
            Some(("core/configmaps".into(), Some("ns".into()), "cm".into()))
        );
        assert_eq!(
            parse_key("/registry/core/namespaces/ns"),
            Some(("core/namespaces".into(), None, "ns".into()))
        );
        assert_eq!(parse_key("/elsewhere"), None);
    }
}
