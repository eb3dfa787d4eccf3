//! The in-memory MVCC state of the embedded backend: per-key version histories, the event
//! log, and the compaction rules. Pure data; the writer thread and readers lock it.

use std::collections::{BTreeMap, HashSet, VecDeque, btree_map};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use smallvec::{SmallVec, smallvec};
use tokio::sync::broadcast;

use super::arena::ValueArena;
use super::span::KeySpan;
use super::term_index::TermIndex;
use crate::{Event, EventKind, KeyValue, ListOptions, ListPage, Rev, StoreError, TermExtractor};

/// One version of a key. `value == None` is a tombstone (the key was deleted at `mod_rev`).
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub mod_rev: Rev,
    pub create_rev: Rev,
    pub value: Option<Bytes>,
}

/// The versions of one key, oldest first; never empty while stored. Most keys have one
/// version, which is kept in the key map's node itself: a list reads it without following a
/// pointer, and it needs no allocation of its own.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyHistory {
    versions: SmallVec<[Version; 1]>,
}

impl KeyHistory {
    /// The newest version at or below `rev`.
    fn at(&self, rev: Rev) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.mod_rev <= rev)
    }

    /// The newest version at or below `rev`, if it is a live value.
    fn live_at(&self, rev: Rev) -> Option<&Version> {
        self.at(rev).filter(|v| v.value.is_some())
    }

    /// Appends a version, growing the allocation by exactly one: most keys have one or two
    /// versions, and the default growth (to four) would triple their memory.
    fn push(&mut self, version: Version) {
        self.versions.reserve_exact(1);
        self.versions.push(version);
    }

    /// Whether the key has a version newer than `rev`.
    fn written_after(&self, rev: Rev) -> bool {
        self.versions.last().is_some_and(|v| v.mod_rev > rev)
    }

    fn latest_live(&self) -> Option<&Version> {
        self.versions.last().filter(|v| v.value.is_some())
    }

    /// Drops versions no read at or above `floor` can see, telling `arena` of their values.
    /// Returns `true` when nothing is left, i.e. the key is gone as of `floor` and has not
    /// been written since.
    fn prune(&mut self, floor: Rev, arena: &mut ValueArena) -> bool {
        // Index of the newest version at or below the floor: everything before it is unseen.
        if let Some(keep_from) = self.versions.iter().rposition(|v| v.mod_rev <= floor) {
            let drop_floor_version = self.versions[keep_from].value.is_none();
            let first_kept = if drop_floor_version {
                keep_from + 1
            } else {
                keep_from
            };
            for dropped in self.versions.drain(..first_kept) {
                if let Some(value) = &dropped.value {
                    arena.release(value);
                }
            }
            // Most keys settle at one version, kept inline again; do not keep room for the
            // burst that is gone.
            if self.versions.spilled()
                && (self.versions.len() <= 1 || self.versions.capacity() > 2 * self.versions.len())
            {
                self.versions.shrink_to_fit();
            }
        }
        self.versions.is_empty()
    }
}

fn key_value(key: &str, version: &Version) -> Option<KeyValue> {
    version.value.as_ref().map(|value| KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        create_rev: version.create_rev,
        mod_rev: version.mod_rev,
    })
}

/// The history of `key`, created empty if the key is new, with the shared key.
fn history_entry<'a>(
    keys: &'a mut BTreeMap<Arc<str>, KeyHistory>,
    key: &str,
) -> (Arc<str>, &'a mut KeyHistory) {
    let shared = match keys.get_key_value(key) {
        Some((shared, _)) => Arc::clone(shared),
        None => Arc::from(key),
    };
    let history = keys.entry(Arc::clone(&shared)).or_default();
    (shared, history)
}

/// The history of `key` if there is one, with the shared key.
fn existing_history<'a>(
    keys: &'a mut BTreeMap<Arc<str>, KeyHistory>,
    key: &str,
) -> Option<(Arc<str>, &'a mut KeyHistory)> {
    let shared = Arc::clone(keys.get_key_value(key)?.0);
    let history = keys.get_mut(key)?;
    Some((shared, history))
}

/// One page of keys in key order: the live versions at `rev`, at most `limit` of them.
///
/// The versions are found first and the keys' texts read at once before they are copied:
/// the texts of keys found through the term index lie scattered, and loads that depend on
/// nothing but the keys' addresses keep many cache misses under way at once.
fn page_of<'a>(
    keys: impl Iterator<Item = (&'a str, &'a KeyHistory)>,
    rev: Rev,
    limit: Option<usize>,
) -> ListPage {
    let limit = limit.unwrap_or(usize::MAX);
    let mut found = Vec::new();
    let mut more = false;
    for (key, history) in keys {
        let Some(version) = history.live_at(rev) else {
            continue;
        };
        if found.len() == limit {
            more = true;
            break;
        }
        found.push((key, version));
    }
    let mut items = Vec::with_capacity(found.len());
    // In batches, so that a large page's first keys are still in the cache when copied.
    for batch in found.chunks(KEYS_READ_AT_ONCE) {
        let ends = batch.iter().fold(0u8, |seen, (key, _)| {
            let text = key.as_bytes();
            seen ^ text.first().copied().unwrap_or(0) ^ text.last().copied().unwrap_or(0)
        });
        std::hint::black_box(ends);
        items.extend(
            batch
                .iter()
                .filter_map(|(key, version)| key_value(key, version)),
        );
    }
    ListPage { items, rev, more }
}

/// Keys of a page whose texts [`page_of`] reads at once: a few KiB of them.
const KEYS_READ_AT_ONCE: usize = 64;

/// Finds ascending keys in the store's map by walking it forward from the last one found,
/// which costs a few steps per key where looking each up costs a descent of the tree (with a
/// cache miss per level and a string comparison per step). The term index holds the map's own
/// `Arc`s, so a key is recognised by pointer; a key not found within [`KeyWalk::STEPS`] steps
/// (far ahead, or not the map's `Arc`) is looked up, and the walk goes on from there.
struct KeyWalk<'a> {
    map: &'a BTreeMap<Arc<str>, KeyHistory>,
    walk: Option<Peekable<btree_map::Range<'a, Arc<str>, KeyHistory>>>,
}

impl<'a> KeyWalk<'a> {
    /// Steps walked before looking a key up: a lookup in a map of 100,000 keys costs about
    /// as much as a few dozen steps.
    const STEPS: usize = 48;

    fn new(map: &'a BTreeMap<Arc<str>, KeyHistory>) -> Self {
        KeyWalk { map, walk: None }
    }

    /// The map's entry for `key`; keys must be asked for in ascending order.
    fn find(&mut self, key: &Arc<str>) -> Option<(&'a Arc<str>, &'a KeyHistory)> {
        if let Some(walk) = &mut self.walk {
            for _ in 0..Self::STEPS {
                match walk.peek() {
                    Some((found, _)) if Arc::ptr_eq(found, key) => return walk.next(),
                    Some(_) => {
                        walk.next();
                    }
                    None => return None,
                }
            }
        }
        let walk = self.walk.insert(
            self.map
                .range::<str, _>((Bound::Included(&**key), Bound::Unbounded))
                .peekable(),
        );
        walk.next_if(|(found, _)| **found == *key)
    }
}

/// A committed write to apply at the next revision.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

impl Mutation {
    pub(crate) fn key(&self) -> &str {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// Why a mutation could not be applied. Only WAL replay can hit these (the writer checks
/// first), and then they mean the log is inconsistent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error("revision {found} does not follow the current revision {current}")]
    OutOfOrder { current: Rev, found: Rev },
    #[error("delete of key {key:?}, which does not exist")]
    DeleteOfMissingKey { key: String },
}

/// An event in the log with the time it was committed (for time-based retention).
#[derive(Clone, Debug)]
struct LoggedEvent {
    event: Arc<Event>,
    committed_at: Instant,
}

/// Where a new watch starts: the logged events it must replay, and the live feed, which
/// delivers everything after `seen_through`.
pub(crate) struct WatchStart {
    pub replay: Vec<Arc<Event>>,
    pub feed: broadcast::Receiver<Arc<Event>>,
    pub seen_through: Rev,
}

/// A key's value in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    pub key: String,
    pub create_rev: Rev,
    pub mod_rev: Rev,
    pub value: Bytes,
}

/// All data of the embedded store.
///
/// Invariants: the event log holds exactly the revisions `floor()+1 ..= current`, one event
/// per revision; every key keeps all versions above the floor plus, if live, the newest one
/// at or below it.
pub(crate) struct MvccState {
    /// Keys are shared with the term index, which holds them without copying.
    keys: BTreeMap<Arc<str>, KeyHistory>,
    current: Rev,
    compacted: Rev,
    events: VecDeque<LoggedEvent>,
    /// Live event feed for watchers; `None` once the store is closed (which ends streams).
    feed: Option<broadcast::Sender<Arc<Event>>>,
    /// Which keys carry which term, once a caller asked for it (see [`MvccState::index_terms`]).
    index: Option<TermIndex>,
    /// The memory of the values in `keys`.
    arena: ValueArena,
    /// Keys in `keys` when its nodes were last packed full ([`MvccState::repack_maps`]).
    packed_keys: usize,
}

/// Keys a store grows by before its maps are first repacked: small stores are not worth it.
const REPACK_MIN_KEYS: usize = 4096;

impl MvccState {
    /// An empty store at revision 0.
    pub(crate) fn new(feed_capacity: usize) -> Self {
        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        MvccState {
            keys: BTreeMap::new(),
            current: 0,
            compacted: 0,
            events: VecDeque::new(),
            feed: Some(feed),
            index: None,
            arena: ValueArena::default(),
            packed_keys: 0,
        }
    }

    /// A store restored from a snapshot taken at revision `rev`: history before `rev + 1` is
    /// gone, so the compacted revision is `rev + 1`.
    pub(crate) fn from_snapshot(
        rev: Rev,
        entries: Vec<SnapshotEntry>,
        feed_capacity: usize,
    ) -> Self {
        let mut state = MvccState::new(feed_capacity);
        let arena = &mut state.arena;
        // Built at once, so that its nodes are full (see `repack_maps`).
        state.keys = entries
            .into_iter()
            .map(|entry| {
                let value = arena.keep(&entry.value);
                let history = KeyHistory {
                    versions: smallvec![Version {
                        mod_rev: entry.mod_rev,
                        create_rev: entry.create_rev,
                        value: Some(value),
                    }],
                };
                (Arc::from(entry.key), history)
            })
            .collect();
        state.packed_keys = state.keys.len();
        state.current = rev;
        state.compacted = rev + 1;
        state
    }

    pub(crate) fn current(&self) -> Rev {
        self.current
    }

    pub(crate) fn compacted(&self) -> Rev {
        self.compacted
    }

    /// The newest revision whose state is kept only for reads at the compacted revision;
    /// events above it are in the log.
    pub(crate) fn floor(&self) -> Rev {
        self.compacted.saturating_sub(1)
    }

    /// Events in the log (those above the floor).
    pub(crate) fn logged_events(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn latest(&self, key: &str) -> Option<KeyValue> {
        let history = self.keys.get(key)?;
        key_value(key, history.latest_live()?)
    }

    /// Applies `mutation` as revision `rev` (which must be `current + 1`) and returns its event.
    pub(crate) fn apply(
        &mut self,
        rev: Rev,
        mutation: Mutation,
        committed_at: Instant,
    ) -> Result<Arc<Event>, ApplyError> {
        if rev != self.current + 1 {
            return Err(ApplyError::OutOfOrder {
                current: self.current,
                found: rev,
            });
        }
        let event = match mutation {
            Mutation::Put { key, value } => {
                let value = self.arena.keep(&value);
                let (shared, history) = history_entry(&mut self.keys, &key);
                let prev = history.latest_live().and_then(|v| key_value(&key, v));
                let create_rev = prev.as_ref().map_or(rev, |p| p.create_rev);
                history.push(Version {
                    mod_rev: rev,
                    create_rev,
                    value: Some(value.clone()),
                });
                let before = prev.as_ref().map(|p| &p.value[..]);
                self.index_change(&shared, before, Some(&value), rev);
                Event {
                    kind: EventKind::Put,
                    rev,
                    kv: KeyValue {
                        key,
                        value,
                        create_rev,
                        mod_rev: rev,
                    },
                    prev,
                }
            }
            Mutation::Delete { key } => {
                let Some((shared, history)) = existing_history(&mut self.keys, &key) else {
                    return Err(ApplyError::DeleteOfMissingKey { key });
                };
                let Some(prev) = history.latest_live().and_then(|v| key_value(&key, v)) else {
                    return Err(ApplyError::DeleteOfMissingKey { key });
                };
                history.push(Version {
                    mod_rev: rev,
                    create_rev: prev.create_rev,
                    value: None,
                });
                self.index_change(&shared, Some(&prev.value), None, rev);
                Event {
                    kind: EventKind::Delete,
                    rev,
                    kv: KeyValue {
                        mod_rev: rev,
                        ..prev.clone()
                    },
                    prev: Some(prev),
                }
            }
        };
        let event = Arc::new(event);
        self.current = rev;
        self.events.push_back(LoggedEvent {
            event: Arc::clone(&event),
            committed_at,
        });
        if let Some(feed) = &self.feed {
            // No receivers is fine; a lagging receiver notices on its own.
            let _ = feed.send(Arc::clone(&event));
        }
        Ok(event)
    }

    /// Tells the term index (if any) that `key` changed at `rev` from the value `before` to
    /// `after` (`None`: absent).
    fn index_change(
        &mut self,
        key: &Arc<str>,
        before: Option<&[u8]>,
        after: Option<&[u8]>,
        rev: Rev,
    ) {
        if let Some(index) = &mut self.index {
            let before = index.terms(before);
            let after = index.terms(after);
            index.record(key, &before, &after, rev);
        }
    }

    /// Starts indexing values by the terms `extract` finds in them, replacing an index
    /// there was: every retained version is indexed now, every later write as it is applied.
    pub(crate) fn index_terms(&mut self, extract: TermExtractor) {
        let mut index = TermIndex::new(extract);
        for (key, history) in &self.keys {
            let mut before = Vec::new();
            for version in &history.versions {
                let after = index.terms(version.value.as_deref());
                index.record(key, &before, &after, version.mod_rev);
                before = after;
            }
        }
        index.forget_before(self.compacted);
        index.repack();
        self.index = Some(index);
    }

    /// Lists at `opts.rev` (or the latest revision).
    pub(crate) fn list(&self, opts: &ListOptions) -> Result<ListPage, StoreError> {
        let rev = opts.rev.unwrap_or(self.current);
        self.check_readable(rev)?;
        let span = KeySpan::new(&opts.prefix, opts.start_after.as_deref());
        let range = span
            .bounds()
            .into_iter()
            .flat_map(|bounds| self.keys.range::<str, _>(bounds))
            .map(|(key, history)| (&**key, history));
        Ok(page_of(range, rev, opts.limit))
    }

    /// Lists like [`MvccState::list`], only the keys whose value at the list revision carries
    /// one of `terms`; `None` when no index is kept. The index is exact for keys not written
    /// since that revision; the few that were are checked by their value at it.
    pub(crate) fn list_by_terms(
        &self,
        opts: &ListOptions,
        terms: &[String],
    ) -> Result<Option<ListPage>, StoreError> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let rev = opts.rev.unwrap_or(self.current);
        self.check_readable(rev)?;
        let mut keys = KeyWalk::new(&self.keys);
        let candidates = index
            .candidates(terms, &opts.prefix, opts.start_after.as_deref(), rev)
            .filter_map(|key| keys.find(key))
            .filter(|(_, history)| {
                !history.written_after(rev)
                    || history
                        .live_at(rev)
                        .is_some_and(|v| index.carries_any(v.value.as_deref(), terms))
            })
            .map(|(key, history)| (&**key, history));
        Ok(Some(page_of(candidates, rev, opts.limit)))
    }

    fn check_readable(&self, rev: Rev) -> Result<(), StoreError> {
        if rev < self.compacted {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        if rev > self.current {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        Ok(())
    }

    /// The logged events after `after` under `prefix`, and a feed subscription that continues
    /// exactly where they end. Runs under the lock that writers take to apply and publish, so
    /// nothing falls between the two and nothing is delivered twice.
    pub(crate) fn watch_from(&self, prefix: &str, after: Rev) -> Result<WatchStart, StoreError> {
        let Some(feed) = &self.feed else {
            return Err(StoreError::Closed);
        };
        if after < self.floor() {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.compacted,
            });
        }
        if after > self.current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current: self.current,
            });
        }
        // The log is contiguous from floor+1, so the first wanted event sits at a known index.
        let skip = usize::try_from(after - self.floor()).unwrap_or(usize::MAX);
        let replay = self
            .events
            .iter()
            .skip(skip)
            .filter(|logged| logged.event.kv.key.starts_with(prefix))
            .map(|logged| Arc::clone(&logged.event))
            .collect();
        Ok(WatchStart {
            replay,
            feed: feed.subscribe(),
            seen_through: self.current,
        })
    }

    /// Ends every watch stream and refuses new watches.
    pub(crate) fn close_feed(&mut self) {
        self.feed = None;
    }

    /// Compacts so that `rev` becomes the compacted revision. Returns `false` if `rev` is not
    /// above the current compacted revision (nothing to do).
    pub(crate) fn compact(&mut self, rev: Rev) -> Result<bool, StoreError> {
        if rev > self.current {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        if rev <= self.compacted {
            return Ok(false);
        }
        let new_floor = rev - 1;
        // Only keys written above the old floor can hold prunable versions, and those are
        // exactly the keys of the events that now leave the log.
        let mut touched = HashSet::new();
        while let Some(front) = self.events.front() {
            if front.event.rev > new_floor {
                break;
            }
            if let Some(logged) = self.events.pop_front() {
                touched.insert(logged.event.kv.key.clone());
            }
        }
        for key in touched {
            if let Some(history) = self.keys.get_mut(key.as_str())
                && history.prune(new_floor, &mut self.arena)
            {
                self.keys.remove(key.as_str());
            }
        }
        if let Some(index) = &mut self.index {
            index.forget_before(rev);
        }
        self.compacted = rev;
        self.evacuate_sparse_chunks();
        self.repack_maps();
        Ok(true)
    }

    /// Rebuilds the key map (and the term index's key sets) with full nodes once it holds a
    /// quarter more or less keys than when it was last built. A B-tree filled in key order, as
    /// a fleet is created, leaves its nodes about half full (a node splits and the new keys go
    /// to the right); built from its sorted entries at once, each node is full. The rebuild
    /// moves entries without copying keys or values, in time linear in the keys.
    fn repack_maps(&mut self) {
        let keys = self.keys.len();
        let grown = keys > self.packed_keys + self.packed_keys / 4 + REPACK_MIN_KEYS;
        let shrunk = keys + keys / 4 < self.packed_keys;
        if !grown && !shrunk {
            return;
        }
        self.keys = std::mem::take(&mut self.keys).into_iter().collect();
        if let Some(index) = &mut self.index {
            index.repack();
        }
        self.packed_keys = keys;
    }

    /// Moves the values out of the arena's sparse chunks, if it has enough of them, so that
    /// those chunks are freed once the log's events that show their values are compacted.
    fn evacuate_sparse_chunks(&mut self) {
        let sparse = self.arena.sparse_chunks();
        if sparse.is_empty() {
            return;
        }
        for history in self.keys.values_mut() {
            for version in &mut history.versions {
                if let Some(value) = &mut version.value
                    && let Some(moved) = self.arena.evacuate(&sparse, value)
                {
                    *value = moved;
                }
            }
        }
    }

    /// Bytes of the arena chunks that hold the store's values.
    pub(crate) fn value_chunk_bytes(&self) -> usize {
        self.arena.tracked_bytes()
    }

    /// The compaction target that keeps the newest `retain_revisions` revisions and, if a
    /// window is given, every event committed at or after `keep_since`.
    pub(crate) fn retention_target(
        &self,
        retain_revisions: u64,
        keep_since: Option<Instant>,
    ) -> Rev {
        let by_count = self.current.saturating_sub(retain_revisions.max(1)) + 1;
        let by_time = match keep_since {
            None => by_count,
            Some(since) => {
                let old = self
                    .events
                    .partition_point(|logged| logged.committed_at < since);
                match self.events.get(old) {
                    Some(first_young) => first_young.event.rev,
                    None => self.current + 1,
                }
            }
        };
        by_count.min(by_time).min(self.current)
    }

    /// Every live key as of `rev`, for a snapshot. `rev` must be at or above the floor.
    pub(crate) fn snapshot_at(&self, rev: Rev) -> Vec<SnapshotEntry> {
        self.keys
            .iter()
            .filter_map(|(key, history)| {
                let version = history.live_at(rev)?;
                Some(SnapshotEntry {
                    key: key.to_string(),
                    create_rev: version.create_rev,
                    mod_rev: version.mod_rev,
                    value: version.value.clone()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
