//! One watch per kind, shared by every controller that needs it: a reflector store (the
//! caches the reconcilers read) and any number of subscriber streams of the objects that
//! changed — created, updated or deleted — to trigger controllers with. kube-runtime's own
//! shared streams pass on no deletions, which the controllers need (a deleted model
//! re-validates its devices), hence this small fan-out.
//!
//! The cache and the feed hold the same `Arc`s, without `managedFields` (no controller reads
//! them, and they are often the larger half of an object), and subscribers get those `Arc`s:
//! a change costs one copy of the object, not one per controller.
//!
//! A subscriber that falls behind the buffer misses events; it is then handed the deletions the
//! buffer still holds and every object of the store, which is enough for level-triggered
//! reconcilers (what lagged is reconciled again), except that a deletion no longer in the
//! buffer triggers nothing. It goes on from the newest change.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes a subscriber may fall behind by before it is resynchronized from the store. The
/// buffer keeps these versions alive, so it is a memory bound too (a few KB per change).
const BUFFER: usize = 65_536;

/// One change of an object.
#[derive(Clone, Debug)]
pub struct Change<K> {
    /// The object as it now is (as it last was, when deleted).
    pub object: Arc<K>,
    /// It was deleted.
    pub deleted: bool,
}

/// A kind watched once: its cache and its change feed.
pub struct Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Every object, as last seen.
    pub store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Start watching `api` with `config` until `shutdown`.
    pub fn start(api: Api<K>, config: watcher::Config, shutdown: &CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(BUFFER);
        let feed = changes.clone();
        let events = watcher(api, config)
            .modify(|object: &mut K| object.meta_mut().managed_fields = None)
            .default_backoff();
        let events = reflector::reflector(writer, events);
        let cache = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut relist = Relist::default();
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                match event {
                    // Nobody subscribed yet is fine: subscribers start from the store.
                    Ok(event) => {
                        for change in relist.changes(event, &cache) {
                            let _ = feed.send(change);
                        }
                    }
                    Err(e) => tracing::warn!(
                        kind = %K::kind(&()),
                        error = %devplane_core::report::chain(&e),
                        "watch failed; retrying with backoff"
                    ),
                }
            }
        });
        Watched { store, changes }
    }

    /// A stream of the objects that change from now on (deleted ones included), for a
    /// controller's triggers. It first yields every object already in the store, so a
    /// subscriber that starts late misses nothing that exists.
    #[track_caller]
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changes().map(|change| change.object)
    }

    /// [`Watched::subscribe`], telling deletions apart.
    #[track_caller]
    pub fn changes(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        // Where the subscriber subscribed, to tell in the logs which one fell behind.
        let subscriber = std::panic::Location::caller();
        let receiver = self.changes.subscribe();
        let store = self.store.clone();
        let present = |store: &Store<K>| -> Vec<Change<K>> {
            store
                .state()
                .into_iter()
                .map(|object| Change {
                    object,
                    deleted: false,
                })
                .collect()
        };
        let initial = futures::stream::iter(present(&store));
        let live = futures::stream::unfold((receiver, store), move |(mut receiver, store)| async move {
            match receiver.recv().await {
                Ok(change) => Some((vec![change], (receiver, store))),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(kind = %K::kind(&()), missed, %subscriber, "a controller fell behind its watch; resynchronizing from the cache");
                    // Go on from the newest change, and take the store after that: it holds
                    // every change sent before (the reflector stores a change before it is
                    // sent). Going on from the oldest change the buffer still holds would
                    // lag again at the next change sent while the store is handed on, and
                    // resynchronize again, for as long as changes keep coming.
                    let fresh = receiver.resubscribe();
                    let all = present(&store);
                    // The store cannot tell deletions: hand on those the buffer still holds
                    // (some may come again through the new receiver; a deletion twice is
                    // harmless), before the objects present.
                    let mut changes = missed_deletions(&mut receiver);
                    changes.extend(all);
                    Some((changes, (fresh, store)))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .flat_map(futures::stream::iter);
        initial.chain(live)
    }
}

/// The deletions `receiver` still has to receive. Bounded, should changes come faster than
/// they are read.
fn missed_deletions<K: Clone>(receiver: &mut broadcast::Receiver<Change<K>>) -> Vec<Change<K>> {
    let mut deletions = Vec::new();
    for _ in 0..2 * BUFFER {
        match receiver.try_recv() {
            Ok(change) if change.deleted => deletions.push(change),
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    deletions
}

/// What a change feed passes on for each watch event, once the reflector has applied it to
/// the cache.
///
/// A (re)list arrives as `Init`, one `InitApply` per object, then `InitDone`, and the
/// reflector swaps the listed objects into its cache only at `InitDone`. Triggering a
/// controller before then would have it read the cache from before the list: an object
/// created meanwhile would not be found (and its trigger dropped), one changed meanwhile read
/// in its old version. So the listed objects are passed on at `InitDone`, from the new cache,
/// together with the deletion of every object the list no longer has.
struct Relist<K: Resource<DynamicType = ()>> {
    /// The objects of the list so far.
    listed: Vec<ObjectRef<K>>,
    /// The cache as it was when the list began.
    before: Vec<Arc<K>>,
}

impl<K: Resource<DynamicType = ()>> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            listed: Vec::new(),
            before: Vec::new(),
        }
    }
}

impl<K> Relist<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn changes(&mut self, event: watcher::Event<K>, cache: &Store<K>) -> Vec<Change<K>> {
        match event {
            watcher::Event::Apply(object) => vec![Change {
                object: shared_copy(cache, object),
                deleted: false,
            }],
            watcher::Event::Delete(object) => vec![Change {
                object: Arc::new(object),
                deleted: true,
            }],
            watcher::Event::Init => {
                self.listed.clear();
                self.before = cache.state();
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                self.listed.push(ObjectRef::from_obj(&object));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let mut changes: Vec<Change<K>> = self
                    .listed
                    .drain(..)
                    .filter_map(|reference| cache.get(&reference))
                    .map(|object| Change {
                        object,
                        deleted: false,
                    })
                    .collect();
                changes.extend(
                    std::mem::take(&mut self.before)
                        .into_iter()
                        .filter(|old| cache.get(&ObjectRef::from_obj(old.as_ref())).is_none())
                        .map(|object| Change {
                            object,
                            deleted: true,
                        }),
                );
                changes
            }
        }
    }
}

/// The cache's copy of `object` when it holds this version (the reflector has just stored
/// it), so that the feed and the cache share one `Arc`.
fn shared_copy<K>(cache: &Store<K>, object: K) -> Arc<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cache
        .get(&ObjectRef::from_obj(&object))
        .filter(|cached| cached.meta().resource_version == object.meta().resource_version)
        .unwrap_or_else(|| Arc::new(object))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_gets_the_store_once_and_goes_on_from_the_newest_change()
    {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        for (name, version) in [("a", "1"), ("b", "2")] {
            writer.apply_watcher_event(&watcher::Event::Apply(config_map(name, version)));
        }
        let (changes, _) = broadcast::channel(4);
        let watched = Watched {
            store,
            changes: changes.clone(),
        };
        let send = |name: &str, deleted: bool| {
            let _ = changes.send(Change {
                object: Arc::new(config_map(name, "9")),
                deleted,
            });
        };
        let mut names = Box::pin(watched.changes().map(|change| {
            let name = change.object.metadata.name.clone().unwrap_or_default();
            match change.deleted {
                true => format!("{name} (deleted)"),
                false => name,
            }
        }));
        let mut next = async || names.next().await.expect("the feed goes on");
        // The store hands its objects out in no particular order.
        let mut initial = [next().await, next().await];
        initial.sort();
        assert_eq!(initial, ["a", "b"], "the store first");
        // Ten changes into a buffer of four, one of the last four a deletion: the subscriber
        // lags, and gets that deletion, then the store.
        for i in 0..10 {
            send(&format!("c{i}"), i == 8);
        }
        assert_eq!(next().await, "c8 (deleted)");
        let mut resync = [next().await, next().await];
        resync.sort();
        assert_eq!(resync, ["a", "b"]);
        // A change sent while the store was handed on comes next, not another resynchronization.
        send("d", false);
        assert_eq!(next().await, "d");
        send("e", false);
        assert_eq!(next().await, "e");
    }

    #[test]
    fn a_relist_is_passed_on_once_the_cache_holds_it_with_what_it_no_longer_has() {
        let (cache, mut writer) = reflector::store::<ConfigMap>();
        let mut relist = Relist::default();
        let mut step = |event: watcher::Event<ConfigMap>| {
            writer.apply_watcher_event(&event);
            relist
                .changes(event, &cache)
                .into_iter()
                .map(|c| {
                    let name = c.object.metadata.name.clone().unwrap_or_default();
                    let version = c
                        .object
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default();
                    (name, version, c.deleted)
                })
                .collect::<Vec<_>>()
        };
        // The first list, then a change.
        assert!(step(watcher::Event::Init).is_empty());
        assert!(step(watcher::Event::InitApply(config_map("a", "1"))).is_empty());
        assert!(step(watcher::Event::InitApply(config_map("b", "2"))).is_empty());
        assert_eq!(
            step(watcher::Event::InitDone),
            [
                ("a".into(), "1".into(), false),
                ("b".into(), "2".into(), false)
            ]
        );
        assert_eq!(
            step(watcher::Event::Apply(config_map("a", "3"))),
            [("a".into(), "3".into(), false)]
        );
        // After the watch broke: a changed, b deleted and c created meanwhile.
        assert!(step(watcher::Event::Init).is_empty());
        assert!(step(watcher::Event::InitApply(config_map("a", "5"))).is_empty());
        assert!(step(watcher::Event::InitApply(config_map("c", "6"))).is_empty());
        assert_eq!(
            step(watcher::Event::InitDone),
            [
                ("a".into(), "5".into(), false),
                ("c".into(), "6".into(), false),
                ("b".into(), "2".into(), true),
            ]
        );
    }
}
