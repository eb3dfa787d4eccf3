//! A secondary index of the embedded backend: which keys carry which term (the API server's
//! terms are labels, `key=value`; to the store they are opaque strings a caller-supplied
//! [`TermExtractor`] finds in a value).
//!
//! The index answers for every readable revision without keeping a copy per version:
//! * `current` holds, per term, the keys whose latest version carries it, so a list at the
//!   latest revision reads exactly the matching keys;
//! * `former` holds the (term, key) pairs where the key stopped carrying the term (changed or
//!   deleted) at a revision that reads can still see, with that revision. A list at an older
//!   revision reads both: a superset, since a key may have gained the term only later. The
//!   keys written since that revision are few (the retained history is short), so the list
//!   checks those by their value at it ([`TermIndex::carries_any`]) and stays exact.
//!
//! Compaction drops the former entries no readable revision needs any more.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use super::span::KeySpan;
use crate::{Rev, TermExtractor};

/// Most keys a term keeps in a sorted vector before it moves them to a B-tree: many terms
/// name one object or a few (a label with a unique value), and a B-tree node costs ~200 bytes.
const FEW_KEYS: usize = 8;

/// The keys whose latest version carries one term, in key order.
#[derive(Debug)]
enum KeySet {
    /// Up to [`FEW_KEYS`] keys, sorted.
    Few(Vec<Arc<str>>),
    /// More.
    Many(BTreeSet<Arc<str>>),
}

impl KeySet {
    fn insert(&mut self, key: &Arc<str>) {
        match self {
            KeySet::Few(keys) => match keys.binary_search(key) {
                Ok(_) => {}
                Err(_) if keys.len() == FEW_KEYS => {
                    let mut many: BTreeSet<Arc<str>> = keys.drain(..).collect();
                    many.insert(Arc::clone(key));
                    *self = KeySet::Many(many);
                }
                Err(at) => {
                    keys.reserve_exact(1);
                    keys.insert(at, Arc::clone(key));
                }
            },
            KeySet::Many(keys) => {
                keys.insert(Arc::clone(key));
            }
        }
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &Arc<str>) -> bool {
        match self {
            KeySet::Few(keys) => match keys.binary_search(key) {
                Ok(at) => {
                    keys.remove(at);
                    true
                }
                Err(_) => false,
            },
            KeySet::Many(keys) => keys.remove(key),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            KeySet::Few(keys) => keys.is_empty(),
            KeySet::Many(keys) => keys.is_empty(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            KeySet::Few(keys) => keys.len(),
            KeySet::Many(keys) => keys.len(),
        }
    }

    /// The keys of `span`, in order.
    fn range<'a>(&'a self, span: &KeySpan<'_>) -> KeySource<'a> {
        match self {
            KeySet::Few(keys) => {
                let first = keys.partition_point(|key| match span.start {
                    Bound::Included(bound) => &**key < bound,
                    Bound::Excluded(bound) => &**key <= bound,
                    Bound::Unbounded => false,
                });
                let last = span.end.as_deref().map_or(keys.len(), |end| {
                    keys.partition_point(|key| &**key < end).max(first)
                });
                Box::new(keys[first..last].iter())
            }
            KeySet::Many(keys) => match span.bounds() {
                Some(bounds) => Box::new(keys.range::<str, _>(bounds)),
                None => Box::new(std::iter::empty()),
            },
        }
    }
}

/// The term index: interned terms, each with its keys.
pub(crate) struct TermIndex {
    extract: TermExtractor,
    /// Per term, the keys whose latest version carries it.
    current: HashMap<Arc<str>, KeySet>,
    /// (term, key) pairs that stopped carrying the term at a revision still readable, with
    /// that revision. Few: only changes within the retained history.
    former: BTreeMap<(Arc<str>, Arc<str>), Rev>,
    /// Every entry of `former` as it was made, in revision order, so that compaction finds
    /// what it may forget without visiting the rest.
    losses: VecDeque<(Rev, Arc<str>, Arc<str>)>,
}

impl std::fmt::Debug for TermIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermIndex")
            .field("terms", &self.current.len())
            .field("former", &self.former.len())
            .finish_non_exhaustive()
    }
}

impl TermIndex {
    /// An empty index that finds terms with `extract`.
    pub(crate) fn new(extract: TermExtractor) -> Self {
        TermIndex {
            extract,
            current: HashMap::new(),
            former: BTreeMap::new(),
            losses: VecDeque::new(),
        }
    }

    /// The terms of a value, sorted and without repeats; none for a tombstone.
    pub(crate) fn terms(&self, value: Option<&[u8]>) -> Vec<String> {
        let Some(value) = value else {
            return Vec::new();
        };
        let mut terms = (self.extract)(value);
        terms.sort_unstable();
        terms.dedup();
        terms
    }

    /// Whether a value (`None`: a tombstone) carries one of `terms`.
    pub(crate) fn carries_any(&self, value: Option<&[u8]>, terms: &[String]) -> bool {
        let carried = self.terms(value);
        terms.iter().any(|t| carried.binary_search(t).is_ok())
    }

    /// Records that `key` changed at `rev` from a version with the terms `before` to one
    /// with the terms `after` (both as [`TermIndex::terms`] returns them).
    pub(crate) fn record(&mut self, key: &Arc<str>, before: &[String], after: &[String], rev: Rev) {
        for lost in before.iter().filter(|t| after.binary_search(t).is_err()) {
            self.lose(key, lost, rev);
        }
        for gained in after {
            self.gain(key, gained);
        }
    }

    fn gain(&mut self, key: &Arc<str>, term: &str) {
        let term = match self.current.get_key_value(term) {
            Some((term, _)) => Arc::clone(term),
            None => Arc::from(term),
        };
        // While the key carries the term, `current` covers every revision a read may ask for.
        if !self.former.is_empty() {
            self.former.remove(&(Arc::clone(&term), Arc::clone(key)));
        }
        self.current
            .entry(term)
            .or_insert_with(|| KeySet::Few(Vec::new()))
            .insert(key);
    }

    fn lose(&mut self, key: &Arc<str>, term: &str, rev: Rev) {
        let Some(term) = self.current.get_key_value(term).map(|(t, _)| Arc::clone(t)) else {
            return;
        };
        let Some(keys) = self.current.get_mut(&term) else {
            return;
        };
        if !keys.remove(key) {
            return;
        }
        if keys.is_empty() {
            self.current.remove(&term);
        }
        self.former
            .insert((Arc::clone(&term), Arc::clone(key)), rev);
        self.losses.push_back((rev, term, Arc::clone(key)));
    }

    /// Rebuilds every large key set with full nodes (see `MvccState::repack_maps`).
    pub(crate) fn repack(&mut self) {
        for keys in self.current.values_mut() {
            if let KeySet::Many(set) = keys {
                *set = std::mem::take(set).into_iter().collect();
            }
        }
    }

    /// Forgets the losses that no read at or above `compacted` can see (a read at `r` needs
    /// a key that lost the term at `lost` only while `r < lost`).
    pub(crate) fn forget_before(&mut self, compacted: Rev) {
        while self
            .losses
            .front()
            .is_some_and(|(lost, _, _)| *lost <= compacted)
        {
            let Some((lost, term, key)) = self.losses.pop_front() else {
                break;
            };
            let pair = (term, key);
            // A later loss of the same pair replaced this one; it is forgotten in its turn.
            if self.former.get(&pair) == Some(&lost) {
                self.former.remove(&pair);
            }
        }
    }

    /// Every key under `prefix` (and after `start_after`) that carried one of `terms` at a
    /// revision `>= rev`, without repeats and in key order: a superset of the keys whose
    /// version at `rev` carries one, exact when `rev` is the latest revision. The keys are
    /// those [`TermIndex::record`] was given, so a caller that records the keys of its map
    /// can recognise them there by pointer.
    pub(crate) fn candidates<'a>(
        &'a self,
        terms: &[String],
        prefix: &'a str,
        start_after: Option<&'a str>,
        rev: Rev,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let span = KeySpan::new(prefix, start_after);
        let mut sources: Vec<KeySource<'a>> = Vec::new();
        for term in terms {
            if let Some(keys) = self.current.get(term.as_str()) {
                sources.push(keys.range(&span));
            }
            if !self.former.is_empty() {
                sources.push(self.former_range(term, &span, rev));
            }
        }
        MergedKeys::new(sources)
    }

    /// The keys of `span` that lost `term` after `rev`, in order.
    fn former_range<'a>(&'a self, term: &str, span: &KeySpan<'_>, rev: Rev) -> KeySource<'a> {
        let term: Arc<str> = Arc::from(term);
        let lower = match span.start {
            Bound::Included(key) => Bound::Included((Arc::clone(&term), Arc::from(key))),
            Bound::Excluded(key) => Bound::Excluded((Arc::clone(&term), Arc::from(key))),
            Bound::Unbounded => Bound::Included((Arc::clone(&term), Arc::from(""))),
        };
        let end: Option<Arc<str>> = span.end.as_deref().map(Arc::from);
        Box::new(
            self.former
                .range((lower, Bound::Unbounded))
                .take_while(move |((t, key), _)| {
                    *t == term && end.as_ref().is_none_or(|end| key < end)
                })
                .filter(move |(_, lost)| **lost > rev)
                .map(|((_, key), _)| key),
        )
    }

    /// How many (term, key) entries the index holds: current and former.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.current.values().map(KeySet::len).sum::<usize>() + self.former.len()
    }
}

/// Keys in ascending order from one posting list.
type KeySource<'a> = Box<dyn Iterator<Item = &'a Arc<str>> + 'a>;

/// The ordered union of ascending key sources, each key once.
struct MergedKeys<'a> {
    sources: Vec<Peekable<KeySource<'a>>>,
}

impl<'a> MergedKeys<'a> {
    fn new(sources: Vec<KeySource<'a>>) -> Self {
        MergedKeys {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<'a> Iterator for MergedKeys<'a> {
    type Item = &'a Arc<str>;

    fn next(&mut self) -> Option<&'a Arc<str>> {
        // One source (a selector of one term, while the index keeps no losses) needs no
        // comparison, and none reads a key's text.
        if let [only] = self.sources.as_mut_slice() {
            return only.next();
        }
        let smallest = self
            .sources
            .iter_mut()
            .filter_map(|source| source.peek().copied())
            .min()?;
        for source in &mut self.sources {
            if source
                .peek()
                .is_some_and(|key| Arc::ptr_eq(key, smallest) || key == &smallest)
            {
                source.next();
            }
        }
        Some(smallest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> TermIndex {
        TermIndex::new(Arc::new(|value: &[u8]| {
            vec![String::from_utf8_lossy(value).into_owned()]
        }))
    }

    fn gain(index: &mut TermIndex, key: &str, term: &str, rev: Rev) {
        index.record(&Arc::from(key), &[], &[term.to_owned()], rev);
    }

    fn read<'a>(index: &'a TermIndex, term: &str, start_after: Option<&'a str>) -> Vec<&'a str> {
        index
            .candidates(&[term.to_owned()], "k", start_after, Rev::MAX)
            .map(|key| &**key)
            .collect()
    }

    #[test]
    fn a_term_with_many_keys_reads_the_same_as_one_with_few() {
        let mut index = index();
        // Inserted out of order, past the point where the keys move to a B-tree.
        let keys: Vec<String> = (0..2 * FEW_KEYS)
            .rev()
            .map(|i| format!("k{i:02}"))
            .collect();
        for (rev, key) in keys.iter().enumerate() {
            gain(&mut index, key, "many", rev as Rev + 1);
            if rev < 3 {
                gain(&mut index, key, "few", rev as Rev + 1);
            }
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(read(&index, "many", None), sorted);
        assert_eq!(read(&index, "many", Some("k13")), vec!["k14", "k15"]);
        assert_eq!(read(&index, "few", None), vec!["k13", "k14", "k15"]);
        assert_eq!(read(&index, "few", Some("k13")), vec!["k14", "k15"]);
        assert_eq!(read(&index, "few", Some("k139")), vec!["k14", "k15"]);
        assert!(read(&index, "none", None).is_empty());
    }

    #[test]
    fn a_term_whose_last_key_leaves_is_dropped_once_compaction_passes_the_loss() {
        let mut index = index();
        let key: Arc<str> = Arc::from("k1");
        index.record(&key, &[], &["t".to_owned()], 1);
        index.record(&key, &["t".to_owned()], &[], 2);
        assert!(index.current.is_empty());
        assert_eq!(index.entries(), 1, "reads before revision 2 still see k1");
        let at_one: Vec<&str> = index
            .candidates(&["t".to_owned()], "", None, 1)
            .map(|key| &**key)
            .collect();
        assert_eq!(at_one, vec!["k1"]);
        let at_two: Vec<&str> = index
            .candidates(&["t".to_owned()], "", None, 2)
            .map(|key| &**key)
            .collect();
        assert!(at_two.is_empty());
        index.forget_before(2);
        assert_eq!(index.entries(), 0);
    }
}
