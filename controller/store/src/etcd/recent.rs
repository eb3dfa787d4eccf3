//! The etcd backend's bounded memory of what this process last saw of each key.
//!
//! A read-modify-write needs the object's value and revision before it writes. Over etcd that
//! read is a round trip, and on etcd 3.4 one of the costlier requests (each read copies
//! etcd's buffer of recent writes). Most objects this process writes it wrote or read a
//! moment ago, so their value is usually here already. It is stale when another process
//! wrote meanwhile; the update's revision compare catches that, and the failed transaction
//! reports the current value, which replaces the stale one here.
//!
//! Observations are ordered by the revision they were made at, so a slow reply never
//! replaces a newer one. The oldest entries go first once either bound is reached.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::{Recent, Rev};

/// Entries kept at most.
pub(crate) const MAX_ENTRIES: usize = 16 * 1024;
/// Bytes of keys and values kept at most (about 16,000 objects of 1 KiB).
pub(crate) const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Values larger than this are not kept: a few of them would push out everything else.
const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Bookkeeping bytes counted per entry besides its key and value.
const ENTRY_OVERHEAD: usize = 96;

/// What this process last saw of each key, bounded by entries and bytes.
pub(crate) struct RecentValues {
    state: Mutex<State>,
    max_entries: usize,
    max_bytes: usize,
}

struct Slot {
    recent: Recent,
    /// The revision the observation was made at (a read's header revision, a write's own).
    seen_at: Rev,
    /// Insertion order, to find the slot's place in `State::order`.
    seq: u64,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// Keys oldest first, with the `seq` they were inserted with; entries whose slot was
    /// replaced since are skipped (and dropped when the queue is rebuilt).
    order: VecDeque<(String, u64)>,
    next_seq: u64,
    bytes: usize,
}

fn size(key: &str, recent: &Recent) -> usize {
    let value = match recent {
        Recent::Value(kv) => kv.value.len(),
        Recent::Absent => 0,
    };
    key.len() + value + ENTRY_OVERHEAD
}

impl RecentValues {
    /// An empty memory with the given bounds.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        RecentValues {
            state: Mutex::new(State::default()),
            max_entries,
            max_bytes,
        }
    }

    /// What was last seen of `key`, if it is remembered.
    pub(crate) fn get(&self, key: &str) -> Option<Recent> {
        self.state
            .lock()
            .slots
            .get(key)
            .map(|slot| slot.recent.clone())
    }

    /// The `create_rev` of `key` if the remembered value is the one at `mod_rev`.
    pub(crate) fn create_rev_at(&self, key: &str, mod_rev: Rev) -> Option<Rev> {
        match self.state.lock().slots.get(key).map(|slot| &slot.recent) {
            Some(Recent::Value(kv)) if kv.mod_rev == mod_rev => Some(kv.create_rev),
            _ => None,
        }
    }

    /// Remembers that `key` was `recent` at revision `seen_at`, unless a later observation is
    /// remembered already.
    pub(crate) fn remember(&self, key: &str, recent: Recent, seen_at: Rev) {
        let mut state = self.state.lock();
        if state
            .slots
            .get(key)
            .is_some_and(|slot| slot.seen_at > seen_at)
        {
            return;
        }
        state.remove(key);
        if matches!(&recent, Recent::Value(kv) if kv.value.len() > MAX_VALUE_BYTES) {
            return;
        }
        state.insert(key, recent, seen_at);
        state.evict(self.max_entries, self.max_bytes);
    }

    /// Entries and bytes held (for tests).
    #[cfg(test)]
    fn usage(&self) -> (usize, usize, usize) {
        let state = self.state.lock();
        (state.slots.len(), state.bytes, state.order.len())
    }
}

impl State {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.slots.remove(key) {
            self.bytes -= size(key, &slot.recent);
        }
    }

    fn insert(&mut self, key: &str, recent: Recent, seen_at: Rev) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += size(key, &recent);
        self.slots.insert(
            key.to_owned(),
            Slot {
                recent,
                seen_at,
                seq,
            },
        );
        self.order.push_back((key.to_owned(), seq));
        // Keys written again and again leave dead queue entries behind; rebuild the queue
        // before they outnumber the live ones.
        if self.order.len() > 2 * self.slots.len() + 1024 {
            let mut live: Vec<(String, u64)> = self
                .slots
                .iter()
                .map(|(key, slot)| (key.clone(), slot.seq))
                .collect();
            live.sort_unstable_by_key(|(_, seq)| *seq);
            self.order = live.into();
        }
    }

    fn evict(&mut self, max_entries: usize, max_bytes: usize) {
        while self.slots.len() > max_entries || self.bytes > max_bytes {
            let Some((key, seq)) = self.order.pop_front() else {
                return;
            };
            if self.slots.get(&key).is_some_and(|slot| slot.seq == seq) {
                self.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::KeyValue;

    fn value(key: &str, text: &str, mod_rev: Rev) -> Recent {
        Recent::Value(KeyValue {
            key: key.to_owned(),
            value: Bytes::from(text.to_owned()),
            create_rev: 1,
            mod_rev,
        })
    }

    #[test]
    fn a_later_observation_replaces_an_earlier_one_and_never_the_reverse() {
        let recent = RecentValues::new(10, 1 << 20);
        recent.remember("k", value("k", "new", 7), 9);
        recent.remember("k", value("k", "old", 5), 8);
        assert_eq!(recent.get("k"), Some(value("k", "new", 7)));
        recent.remember("k", Recent::Absent, 10);
        assert_eq!(recent.get("k"), Some(Recent::Absent));
        assert_eq!(recent.create_rev_at("k", 7), None);
    }

    #[test]
    fn the_create_revision_is_known_only_for_the_remembered_revision() {
        let recent = RecentValues::new(10, 1 << 20);
        recent.remember("k", value("k", "v", 7), 7);
        assert_eq!(recent.create_rev_at("k", 7), Some(1));
        assert_eq!(recent.create_rev_at("k", 6), None);
        assert_eq!(recent.create_rev_at("other", 7), None);
    }

    #[test]
    fn the_oldest_entries_go_first_when_the_entry_bound_is_reached() {
        let recent = RecentValues::new(3, 1 << 20);
        for (rev, key) in ["a", "b", "c"].into_iter().enumerate() {
            recent.remember(key, value(key, "v", rev as Rev + 1), rev as Rev + 1);
        }
        // Writing `a` again makes it the newest.
        recent.remember("a", value("a", "v2", 4), 4);
        recent.remember("d", value("d", "v", 5), 5);
        assert_eq!(recent.get("b"), None);
        for key in ["a", "c", "d"] {
            assert!(recent.get(key).is_some(), "{key} was evicted");
        }
    }

    #[test]
    fn the_byte_bound_holds_and_oversized_values_are_not_kept() {
        let budget = 4 * (1024 + ENTRY_OVERHEAD + 8);
        let recent = RecentValues::new(1000, budget);
        for i in 0..100 {
            let key = format!("key/{i:03}");
            recent.remember(&key, value(&key, &"x".repeat(1024), i + 1), i + 1);
        }
        let (entries, bytes, _) = recent.usage();
        assert!(bytes <= budget, "{bytes} bytes held");
        assert_eq!(entries, 4);
        assert!(recent.get("key/099").is_some());
        recent.remember(
            "key/099",
            value("key/099", &"x".repeat(MAX_VALUE_BYTES + 1), 200),
            200,
        );
        assert_eq!(recent.get("key/099"), None, "a stale smaller value stayed");
    }

    #[test]
    fn rewriting_the_same_keys_does_not_grow_the_queue_without_bound() {
        let recent = RecentValues::new(100, 1 << 20);
        for rev in 1..50_000 {
            let key = format!("k{}", rev % 10);
            recent.remember(&key, value(&key, "v", rev), rev);
        }
        let (entries, _, queued) = recent.usage();
        assert_eq!(entries, 10);
        assert!(queued <= 2 * entries + 1025, "{queued} queue entries");
    }
}
