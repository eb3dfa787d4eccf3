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
//! A subscriber that falls behind the buffer misses events; it is then handed the deletions
//! sent since the last change it received, from a journal of deletions, and every object of
//! the store, which is enough for level-triggered reconcilers (what lagged is reconciled
//! again). It goes on from the newest change. The store cannot tell what was deleted, so the
//! journal keeps each deletion until every subscriber has received it, up to as many as the
//! buffer holds changes: it loses a deletion only to a subscriber that fell further behind
//! than that in deletions alone, and the warning counts those.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// Deletions the journal keeps at most for subscribers that fell behind (a few KB each).
const JOURNAL: usize = BUFFER;

/// One change of an object.
#[derive(Clone, Debug)]
pub struct Change<K> {
    /// The object as it now is (as it last was, when deleted).
    pub object: Arc<K>,
    /// It was deleted.
    pub deleted: bool,
    /// How many deletions were journaled when it was sent (itself included).
    journaled: u64,
}

impl<K> Change<K> {
    fn new(object: Arc<K>, deleted: bool) -> Self {
        Change {
            object,
            deleted,
            journaled: 0,
        }
    }
}

/// The deletions some subscriber has yet to receive, numbered in the order they were sent.
struct Journal<K> {
    deleted: VecDeque<Arc<K>>,
    /// The number of the oldest deletion kept: those before it were dropped.
    first: u64,
    /// How far each subscriber has received: the `journaled` of the last change it received.
    /// A subscriber that is gone leaves a dead reference, dropped at the next deletion.
    readers: Vec<Weak<AtomicU64>>,
}

impl<K> Default for Journal<K> {
    fn default() -> Self {
        Journal {
            deleted: VecDeque::new(),
            first: 0,
            readers: Vec::new(),
        }
    }
}

impl<K> Journal<K> {
    /// How many deletions were journaled in all.
    fn end(&self) -> u64 {
        self.first + self.deleted.len() as u64
    }

    /// A new subscriber, which has received everything journaled so far.
    fn reader(&mut self) -> Arc<AtomicU64> {
        let seen = Arc::new(AtomicU64::new(self.end()));
        self.readers.push(Arc::downgrade(&seen));
        seen
    }

    /// Journals a deletion, and drops those every subscriber has received (and the oldest
    /// beyond [`JOURNAL`]).
    fn push(&mut self, object: Arc<K>) {
        self.deleted.push_back(object);
        let mut needed = self.end();
        self.readers.retain(|reader| match reader.upgrade() {
            Some(seen) => {
                needed = needed.min(seen.load(Ordering::Relaxed));
                true
            }
            None => false,
        });
        while self.first < needed || self.deleted.len() > JOURNAL {
            if self.deleted.pop_front().is_none() {
                break;
            }
            self.first += 1;
        }
    }

    /// The deletions from number `from` on, and how many of those were dropped already.
    fn since(&self, from: u64) -> (Vec<Arc<K>>, u64) {
        let lost = self.first.saturating_sub(from);
        let skip = usize::try_from(from.saturating_sub(self.first)).unwrap_or(usize::MAX);
        (self.deleted.iter().skip(skip).cloned().collect(), lost)
    }
}

/// Where a watched kind's changes go: the journal, for deletions, then the subscribers.
#[derive(Clone)]
struct Feed<K> {
    sender: broadcast::Sender<Change<K>>,
    journal: Arc<Mutex<Journal<K>>>,
}

impl<K: Clone> Feed<K> {
    fn new(capacity: usize) -> Self {
        Feed {
            sender: broadcast::channel(capacity).0,
            journal: Arc::new(Mutex::new(Journal::default())),
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal<K>> {
        // The journal's state is whole after every step, so a panic elsewhere leaves it usable.
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, mut change: Change<K>) {
        let mut journal = self.journal();
        if change.deleted {
            journal.push(Arc::clone(&change.object));
        }
        change.journaled = journal.end();
        // Nobody subscribed yet is fine: subscribers start from the store.
        let _ = self.sender.send(change);
    }
}

/// A kind watched once: its cache and its change feed.
pub struct Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Every object, as last seen.
    pub store: Store<K>,
    feed: Feed<K>,
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
        let feed = Feed::new(BUFFER);
        let publisher = feed.clone();
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
                    Ok(event) => {
                        for change in relist.changes(event, &cache) {
                            publisher.send(change);
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
        Watched { store, feed }
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
        // Deletions from `seen` on are those sent since the subscriber's last change. One
        // sent before it subscribes is of an object the store no longer hands on; should the
        // subscriber fall behind before its first change, it is handed on (harmlessly).
        let seen = self.feed.journal().reader();
        let receiver = self.feed.sender.subscribe();
        let feed = self.feed.clone();
        let store = self.store.clone();
        let present = |store: &Store<K>| -> Vec<Change<K>> {
            store
                .state()
                .into_iter()
                .map(|object| Change::new(object, false))
                .collect()
        };
        let initial = futures::stream::iter(present(&store));
        let live = futures::stream::unfold(
            (receiver, seen, feed, store),
            move |(mut receiver, seen, feed, store)| async move {
                    match receiver.recv().await {
                        Ok(change) => {
                            seen.store(change.journaled, Ordering::Relaxed);
                            Some((vec![change], (receiver, seen, feed, store)))
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            // Go on from the newest change, and take the store after that: it
                            // holds every change sent before (the reflector stores a change
                            // before it is sent). Going on from the oldest change the buffer
                            // still holds would lag again at the next change sent while the
                            // store is handed on, and resynchronize again, for as long as
                            // changes keep coming.
                            let fresh = receiver.resubscribe();
                            // The store cannot tell deletions: hand on those sent since the
                            // last change received (some may come again through the new
                            // receiver; a deletion twice is harmless), before the objects
                            // present.
                            let (deleted, lost) = {
                                let journal = feed.journal();
                                let missed = journal.since(seen.load(Ordering::Relaxed));
                                seen.store(journal.end(), Ordering::Relaxed);
                                missed
                            };
                            if lost > 0 {
                                tracing::warn!(kind = %K::kind(&()), missed, lost, %subscriber, "a controller fell behind its watch and the journal of deletions; resynchronizing from the cache without the deletions it lost");
                            } else {
                                tracing::warn!(kind = %K::kind(&()), missed, %subscriber, "a controller fell behind its watch; resynchronizing from the cache");
                            }
                            let mut changes: Vec<Change<K>> = deleted
                                .into_iter()
                                .map(|object| Change::new(object, true))
                                .collect();
                            changes.extend(present(&store));
                            Some((changes, (fresh, seen, feed, store)))
                        }
                        Err(broadcast::error::RecvError::Closed) => None,
                    }
            },
        )
        .flat_map(futures::stream::iter);
        initial.chain(live)
    }
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
            watcher::Event::Apply(object) => vec![Change::new(shared_copy(cache, object), false)],
            watcher::Event::Delete(object) => vec![Change::new(Arc::new(object), true)],
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
                    .map(|object| Change::new(object, false))
                    .collect();
                changes.extend(
                    std::mem::take(&mut self.before)
                        .into_iter()
                        .filter(|old| cache.get(&ObjectRef::from_obj(old.as_ref())).is_none())
                        .map(|object| Change::new(object, true)),
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
    async fn a_subscriber_that_fell_behind_gets_the_deletions_it_missed_then_the_store_once() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        for (name, version) in [("a", "1"), ("b", "2")] {
            writer.apply_watcher_event(&watcher::Event::Apply(config_map(name, version)));
        }
        let feed = Feed::new(4);
        let watched = Watched {
            store,
            feed: feed.clone(),
        };
        let send = |name: &str, deleted: bool| {
            feed.send(Change::new(Arc::new(config_map(name, "9")), deleted));
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
        // Ten changes into a buffer of four, two of them deletions, one already out of the
        // buffer: the subscriber lags, and gets both deletions, then the store.
        for i in 0..10 {
            send(&format!("c{i}"), i == 2 || i == 8);
        }
        assert_eq!(next().await, "c2 (deleted)");
        assert_eq!(next().await, "c8 (deleted)");
        let mut resync = [next().await, next().await];
        resync.sort();
        assert_eq!(resync, ["a", "b"]);
        // A change sent while the store was handed on comes next, not another resynchronization.
        send("d", false);
        assert_eq!(next().await, "d");
        send("e", true);
        assert_eq!(next().await, "e (deleted)");
        // Falling behind again hands on only the deletions since the last change received.
        for i in 0..10 {
            send(&format!("f{i}"), i == 1);
        }
        assert_eq!(next().await, "f1 (deleted)");
        let mut resync = [next().await, next().await];
        resync.sort();
        assert_eq!(resync, ["a", "b"]);
    }

    #[test]
    fn the_journal_keeps_what_a_subscriber_has_yet_to_receive_and_counts_what_it_dropped() {
        let mut journal = Journal::default();
        // Nobody to receive them: nothing is kept.
        journal.push(Arc::new(0));
        assert!(journal.deleted.is_empty());
        assert_eq!(journal.end(), 1);
        let reader = journal.reader();
        let behind = journal.reader();
        for i in 1..4 {
            journal.push(Arc::new(i));
        }
        assert_eq!(journal.deleted.len(), 3);
        // Once both have received deletion 2, deletions 1 and 2 go.
        reader.store(3, Ordering::Relaxed);
        behind.store(3, Ordering::Relaxed);
        journal.push(Arc::new(4));
        let (deleted, lost) = journal.since(3);
        assert_eq!(
            (deleted.iter().map(|d| **d).collect::<Vec<_>>(), lost),
            (vec![3, 4], 0)
        );
        assert_eq!(journal.since(1).1, 2, "deletions 1 and 2 were dropped");
        // A subscriber far behind keeps at most JOURNAL deletions.
        behind.store(0, Ordering::Relaxed);
        for i in 5..JOURNAL as u64 + 8 {
            journal.push(Arc::new(i));
        }
        assert_eq!(journal.deleted.len(), JOURNAL);
        assert_eq!(journal.since(3).1, 5);
        // A subscriber that is gone holds nothing back.
        drop(behind);
        reader.store(journal.end(), Ordering::Relaxed);
        journal.push(Arc::new(JOURNAL as u64 + 8));
        assert_eq!(journal.deleted.len(), 1);
        assert_eq!(journal.readers.len(), 1);
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
