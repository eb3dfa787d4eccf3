//! A secondary index of the embedded backend: which keys carry which term (the API server's
//! terms are labels, `key=value`; to the store they are opaque strings a caller-supplied
//! [`TermExtractor`] finds in a value).
//!
//! The index answers for every readable revision without keeping a copy per version:
//! * `current` holds the keys whose latest version carries the term, so a list at the latest
//!   revision reads exactly the matching keys;
//! * `former` holds the keys that stopped carrying it (changed or deleted) at a revision that
//!   reads can still see, with that revision. A list at an older revision reads both: a
//!   superset, since a key may have gained the term only later. The keys written since that
//!   revision are few (the retained history is short), so the list checks those by their value
//!   at it ([`TermIndex::carries_any`]) and stays exact.
//!
//! Compaction drops the former entries no readable revision needs any more.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use crate::{Rev, TermExtractor};

/// The keys of one term.
#[derive(Debug, Default)]
struct Postings {
    /// Keys whose latest version carries the term.
    current: BTreeSet<Arc<str>>,
    /// Keys that stopped carrying the term, with the revision at which they did.
    former: BTreeMap<Arc<str>, Rev>,
}

impl Postings {
    fn is_empty(&self) -> bool {
        self.current.is_empty() && self.former.is_empty()
    }
}

/// The term index: interned terms, each with its keys.
pub(crate) struct TermIndex {
    extract: TermExtractor,
    postings: HashMap<Arc<str>, Postings>,
    /// Every term loss recorded in `former`, in revision order, so that compaction finds
    /// what it may forget without visiting every term.
    losses: VecDeque<(Rev, Arc<str>, Arc<str>)>,
}

impl std::fmt::Debug for TermIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermIndex")
            .field("terms", &self.postings.len())
            .field("losses", &self.losses.len())
            .finish_non_exhaustive()
    }
}

impl TermIndex {
    /// An empty index that finds terms with `extract`.
    pub(crate) fn new(extract: TermExtractor) -> Self {
        TermIndex {
            extract,
            postings: HashMap::new(),
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
        let postings = match self.postings.get_mut(term) {
            Some(postings) => postings,
            None => self.postings.entry(Arc::from(term)).or_default(),
        };
        // While the key carries the term, `current` covers every revision a read may ask for.
        postings.former.remove(key);
        postings.current.insert(Arc::clone(key));
    }

    fn lose(&mut self, key: &Arc<str>, term: &str, rev: Rev) {
        let Some((term, _)) = self.postings.get_key_value(term) else {
            return;
        };
        let term = Arc::clone(term);
        let Some(postings) = self.postings.get_mut(&term) else {
            return;
        };
        if postings.current.remove(key) {
            postings.former.insert(Arc::clone(key), rev);
            self.losses.push_back((rev, term, Arc::clone(key)));
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
            let Some(postings) = self.postings.get_mut(&term) else {
                continue;
            };
            // A later loss of the same key replaced this one; it is forgotten in its turn.
            if postings.former.get(&key) == Some(&lost) {
                postings.former.remove(&key);
            }
            if postings.is_empty() {
                self.postings.remove(&term);
            }
        }
    }

    /// Every key under `prefix` (and after `start_after`) that carried one of `terms` at a
    /// revision `>= rev`, without repeats and in key order: a superset of the keys whose
    /// version at `rev` carries one, exact when `rev` is the latest revision.
    pub(crate) fn candidates<'a>(
        &'a self,
        terms: &[String],
        prefix: &'a str,
        start_after: Option<&'a str>,
        rev: Rev,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut sources: Vec<KeySource<'a>> = Vec::new();
        for postings in terms.iter().filter_map(|t| self.postings.get(t.as_str())) {
            let current = postings
                .current
                .range::<str, _>((start, Bound::Unbounded))
                .map(|key| &**key);
            sources.push(Box::new(current));
            let former = postings
                .former
                .range::<str, _>((start, Bound::Unbounded))
                .filter(move |(_, lost)| **lost > rev)
                .map(|(key, _)| &**key);
            sources.push(Box::new(former));
        }
        MergedKeys::new(sources).take_while(move |key| key.starts_with(prefix))
    }

    /// How many (term, key) entries the index holds: current and former.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.postings
            .values()
            .map(|p| p.current.len() + p.former.len())
            .sum()
    }
}

/// Keys in ascending order from one posting list.
type KeySource<'a> = Box<dyn Iterator<Item = &'a str> + 'a>;

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
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let smallest = self
            .sources
            .iter_mut()
            .filter_map(|source| source.peek().copied())
            .min()?;
        for source in &mut self.sources {
            if source.peek() == Some(&smallest) {
                source.next();
            }
        }
        Some(smallest)
    }
}
