//! The keys a list reads: those under a prefix, after the key the previous page ended at.
//! The store's key map and the term index's key sets read the same span.

use std::ops::Bound;

/// The keys under a prefix from a start on, as bounds a B-tree's `range` takes. The span ends
/// where the keys under the prefix end, so no key's text is read to check the prefix (for the
/// scattered keys of a label-selected list, that was a cache miss per key).
pub(crate) struct KeySpan<'a> {
    /// The first key of the span, or the key just before it.
    pub start: Bound<&'a str>,
    /// The smallest key after every key under the prefix; `None` when there is none (an empty
    /// prefix, or one only of the last character there is): every key from the start on is
    /// then under the prefix.
    pub end: Option<String>,
}

impl<'a> KeySpan<'a> {
    /// The keys under `prefix` after `start_after` (all of them without it).
    pub(crate) fn new(prefix: &'a str, start_after: Option<&'a str>) -> Self {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        KeySpan {
            start,
            end: prefix_end(prefix),
        }
    }

    /// The span's bounds for `range`; `None` when no key lies in it (where `range` would
    /// panic: a start at or after the end).
    pub(crate) fn bounds(&self) -> Option<(Bound<&str>, Bound<&str>)> {
        match (self.start, self.end.as_deref()) {
            (Bound::Included(from) | Bound::Excluded(from), Some(end)) if from >= end => None,
            (start, end) => Some((start, end.map_or(Bound::Unbounded, Bound::Excluded))),
        }
    }
}

/// The smallest key after every key that starts with `prefix`, if there is one. Keys are
/// text here, so the prefix's last character is raised to the next one there is (the etcd
/// backend's byte keys raise the last byte instead).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut end = prefix.to_owned();
    while let Some(last) = end.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            end.push(next);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_after_a_prefix_is_the_next_character_in_its_last_place() {
        assert_eq!(prefix_end("/d/").as_deref(), Some("/d0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}
