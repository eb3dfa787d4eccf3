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
//! A subscriber that falls behind the buffer misses events; it is then handed every object of
//! the store, which is enough for level-triggered reconcilers (what lagged is reconciled
//! again), except that a deletion in the missed stretch triggers nothing.

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
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                // Nobody subscribed yet is fine: subscribers start from the store.
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        // The reflector has just stored it (initial objects only at the end of
                        // the list): share the cache's copy when it is this version.
                        let object = cache
                            .get(&ObjectRef::from_obj(&object))
                            .filter(|cached| {
                                cached.meta().resource_version == object.meta().resource_version
                            })
                            .unwrap_or_else(|| Arc::new(object));
                        let _ = feed.send(Change {
                            object,
                            deleted: false,
                        });
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        let _ = feed.send(Change {
                            object: Arc::new(object),
                            deleted: true,
                        });
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
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
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changes().map(|change| change.object)
    }

    /// [`Watched::subscribe`], telling deletions apart.
    pub fn changes(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
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
                    tracing::warn!(kind = %K::kind(&()), missed, "a controller fell behind its watch; resynchronizing from the cache");
                    let all = present(&store);
                    Some((all, (receiver, store)))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .flat_map(futures::stream::iter);
        initial.chain(live)
    }
}
