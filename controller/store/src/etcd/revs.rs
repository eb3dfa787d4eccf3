//! This backend's revisions: an etcd revision and a write's position in it.
//!
//! Concurrent creates and updates are committed together, many in one etcd transaction (see
//! [`super::batch`]), and etcd gives every write of a transaction the same revision. A
//! Kubernetes client resumes a watch from the last resourceVersion it saw, so two objects must
//! never share one, or the second would be skipped. A store revision is therefore
//! `etcd revision × SUBS + position`:
//! - a write that is alone in its etcd revision, and the last write of a batch, take position
//!   [`LAST`], so single writes map to `etcd × SUBS + LAST`;
//! - the revision of a response header (everything written up to that etcd revision) is
//!   `etcd × SUBS + LAST` too, so it is at least every write it includes;
//! - the other writes of a batch take their position in the transaction, `0, 1, …`, which is
//!   also the order of their watch events.
//!
//! The position lives in the stored value: a value written at a position other than
//! [`LAST`] starts with an envelope, the bytes `0x00 's'` and the position as a big-endian
//! `u16`. So does any value that itself starts with a zero byte (at position [`LAST`]), so the
//! envelope is never ambiguous. Values of objects written by the API server are JSON and never
//! start with a zero byte.

use crate::Rev;

/// Positions per etcd revision.
pub(crate) const SUBS: u64 = 1024;
/// The position of a write alone in its etcd revision, and of a header revision.
pub(crate) const LAST: u64 = SUBS - 1;
/// The first bytes of an envelope.
const MAGIC: [u8; 2] = [0, b's'];
/// Envelope length: magic and a `u16` position.
const ENVELOPE: usize = MAGIC.len() + 2;

/// The store revision of the write at `position` in etcd revision `etcd`.
pub(crate) fn at(etcd: i64, position: u64) -> Rev {
    Rev::try_from(etcd).unwrap_or(0) * SUBS + position.min(LAST)
}

/// The store revision that includes everything up to etcd revision `etcd`.
pub(crate) fn through(etcd: i64) -> Rev {
    at(etcd, LAST)
}

/// The etcd revision a store revision belongs to.
pub(crate) fn etcd(rev: Rev) -> i64 {
    i64::try_from(rev / SUBS).unwrap_or(i64::MAX)
}

/// The position of the `index`th of `count` writes in one etcd revision.
pub(crate) fn position(index: usize, count: usize) -> u64 {
    if index + 1 >= count {
        LAST
    } else {
        index as u64
    }
}

/// The etcd revision after which a watch from `after` must start: etcd delivers that
/// revision's successor onwards, and events at or before `after` are skipped.
pub(crate) fn watched_after(after: Rev) -> i64 {
    i64::try_from((after + 1) / SUBS)
        .unwrap_or(i64::MAX)
        .saturating_sub(1)
        .max(0)
}

/// The etcd compaction revision `compacted` in store terms: the smallest store revision a
/// watch may still start after, plus one.
pub(crate) fn compacted(compacted: i64) -> Rev {
    at(compacted.saturating_add(1), 0)
}

/// `value` as stored at `position`.
pub(crate) fn seal(value: &[u8], position: u64) -> Vec<u8> {
    if position >= LAST && value.first() != Some(&0) {
        return value.to_vec();
    }
    let position = u16::try_from(position.min(LAST)).unwrap_or(u16::MAX);
    let mut sealed = Vec::with_capacity(ENVELOPE + value.len());
    sealed.extend_from_slice(&MAGIC);
    sealed.extend_from_slice(&position.to_be_bytes());
    sealed.extend_from_slice(value);
    sealed
}

/// A malformed envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadEnvelope;

/// A stored value's position and the value itself.
pub(crate) fn open(stored: &[u8]) -> Result<(u64, &[u8]), BadEnvelope> {
    if stored.first() != Some(&0) {
        return Ok((LAST, stored));
    }
    if stored.len() < ENVELOPE || stored[..MAGIC.len()] != MAGIC {
        return Err(BadEnvelope);
    }
    let position = u64::from(u16::from_be_bytes([stored[2], stored[3]]));
    if position > LAST {
        return Err(BadEnvelope);
    }
    Ok((position, &stored[ENVELOPE..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_order_by_etcd_revision_then_position() {
        assert!(at(7, 0) < at(7, 1));
        assert!(at(7, 1) < through(7));
        assert!(through(7) < at(8, 0));
        assert_eq!(etcd(at(7, 3)), 7);
        assert_eq!(etcd(through(7)), 7);
        assert_eq!(
            (0..3).map(|i| position(i, 3)).collect::<Vec<_>>(),
            [0, 1, LAST]
        );
    }

    #[test]
    fn a_watch_after_a_whole_revision_starts_at_the_next_one() {
        assert_eq!(watched_after(through(7)), 7);
        // Inside revision 7: etcd must deliver 7 again, and the store skips what was seen.
        assert_eq!(watched_after(at(7, 3)), 6);
        assert_eq!(watched_after(0), 0);
        assert_eq!(watched_after(LAST), 0);
        assert_eq!(watched_after(SUBS), 0);
    }

    #[test]
    fn compaction_keeps_watches_after_the_compacted_etcd_revision() {
        // etcd compacted at 9 keeps revision 9 readable: a watch after `through(9)` works,
        // and the reported compacted revision is one more than that.
        assert_eq!(compacted(9), through(9) + 1);
        assert_eq!(watched_after(compacted(9) - 1), 9);
    }

    #[test]
    fn values_round_trip_through_the_envelope() {
        for (value, position) in [
            (&b"{\"a\":1}"[..], LAST),
            (&b"{\"a\":1}"[..], 0),
            (&b"{\"a\":1}"[..], 63),
            (&b"\0raw"[..], LAST),
            (&b""[..], LAST),
            (&b""[..], 5),
        ] {
            let sealed = seal(value, position);
            assert_eq!(
                open(&sealed),
                Ok((position, value)),
                "{value:?} at {position}"
            );
        }
        assert_eq!(
            seal(b"{}", LAST),
            b"{}".to_vec(),
            "single writes store the value as is"
        );
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        assert_eq!(open(b"\0"), Err(BadEnvelope));
        assert_eq!(open(b"\0x\0\0{}"), Err(BadEnvelope));
        assert_eq!(open(b"\0s\xff\xff{}"), Err(BadEnvelope));
    }
}
