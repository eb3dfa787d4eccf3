//! Where the embedded store keeps its values: packed one after another into chunks of
//! [`CHUNK`] bytes, instead of one allocation each.
//!
//! An allocator rounds every allocation up to its size class — under mimalloc a 1,106-byte
//! object takes 1,280 bytes — and a value allocated among the short-lived buffers of request
//! handling keeps their pages resident once those are freed. In a chunk a value costs its
//! length. Each value is a [`Bytes`] slice of its chunk, so readers share it without copying,
//! and a chunk's memory is freed when no slice of it is left: not the store's, not an event's
//! in the log, not a reader's.
//!
//! One value the store keeps therefore keeps its whole chunk. The arena counts, per chunk, the
//! bytes of the values the store still holds ([`ValueArena::release`] is told of every value
//! the store drops); when more than [`MAX_DEAD_PERCENT`] of the sealed chunks is dead, the
//! store moves the values of the sparse chunks into the current one
//! ([`ValueArena::sparse_chunks`]), and the sparse chunks go once the events that still show
//! their values leave the log.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

/// Bytes of one chunk: about 58 objects of 1.1 KiB.
const CHUNK: usize = 64 * 1024;

/// Values longer than this get an allocation of their own: packing saves them little, and a
/// large value would leave much of a chunk unused.
const OWN_ALLOCATION: usize = CHUNK / 8;

/// Share of the sealed chunks' bytes that may be dead before sparse chunks are evacuated.
const MAX_DEAD_PERCENT: usize = 30;

/// A sealed chunk is sparse, and evacuated, when less than this share of it is live. Below
/// [`MAX_DEAD_PERCENT`]'s complement, so that an evacuation leaves the arena under the limit
/// and the next one waits for new dead bytes.
const SPARSE_BELOW_LIVE_PERCENT: usize = 75;

/// Dead bytes below this never trigger an evacuation (a small store is not worth the walk).
const MIN_DEAD_FOR_EVACUATION: usize = 16 * CHUNK;

/// A chunk that holds values the store keeps.
#[derive(Debug)]
struct Chunk {
    capacity: usize,
    /// Bytes of the values in it the store still holds.
    live: usize,
}

/// The chunks of the embedded store's values, and how much of each is still live.
#[derive(Debug, Default)]
pub(crate) struct ValueArena {
    /// The rest of the chunk values are appended to.
    current: BytesMut,
    /// The address the current chunk starts at; `None` before the first value.
    current_start: Option<usize>,
    /// Chunks holding at least one value the store keeps (and the current one), by start.
    chunks: BTreeMap<usize, Chunk>,
    /// Capacity and live bytes of the sealed chunks in `chunks`.
    sealed_capacity: usize,
    sealed_live: usize,
}

impl ValueArena {
    /// A copy of `value` the store keeps: a slice of the current chunk, or an allocation of its
    /// own if the value is large.
    pub(crate) fn keep(&mut self, value: &[u8]) -> Bytes {
        if value.is_empty() {
            return Bytes::new();
        }
        if value.len() > OWN_ALLOCATION {
            return Bytes::copy_from_slice(value);
        }
        if self.current_start.is_none() || self.current.capacity() < value.len() {
            self.start_chunk();
        }
        self.current.extend_from_slice(value);
        let kept = self.current.split().freeze();
        if let Some(chunk) = self.current_start.and_then(|s| self.chunks.get_mut(&s)) {
            chunk.live += kept.len();
        }
        kept
    }

    /// Notes that the store dropped `value`, one it kept through [`ValueArena::keep`].
    pub(crate) fn release(&mut self, value: &Bytes) {
        let Some(start) = self.chunk_of(value) else {
            return;
        };
        let sealed = Some(start) != self.current_start;
        let Some(chunk) = self.chunks.get_mut(&start) else {
            return;
        };
        chunk.live = chunk.live.saturating_sub(value.len());
        if sealed {
            self.sealed_live = self.sealed_live.saturating_sub(value.len());
            if chunk.live == 0 {
                self.sealed_capacity -= chunk.capacity;
                self.chunks.remove(&start);
            }
        }
    }

    /// The sealed chunks whose values the store should move, if enough of the arena is dead
    /// to make that worth a walk over every key; empty otherwise.
    pub(crate) fn sparse_chunks(&self) -> SparseChunks {
        let dead = self.sealed_capacity - self.sealed_live;
        if dead < MIN_DEAD_FOR_EVACUATION || dead * 100 <= self.sealed_capacity * MAX_DEAD_PERCENT {
            return SparseChunks::default();
        }
        let starts = self
            .chunks
            .iter()
            .filter(|(start, chunk)| {
                Some(**start) != self.current_start
                    && chunk.live * 100 < chunk.capacity * SPARSE_BELOW_LIVE_PERCENT
            })
            .map(|(start, _)| *start)
            .collect();
        SparseChunks { starts }
    }

    /// `value` moved out of a sparse chunk into the current one, if it lies in one of
    /// `sparse`; the caller replaces its copy with the returned one.
    pub(crate) fn evacuate(&mut self, sparse: &SparseChunks, value: &Bytes) -> Option<Bytes> {
        let start = self.chunk_of(value)?;
        if !sparse.starts.contains(&start) {
            return None;
        }
        let moved = self.keep(value);
        self.release(value);
        Some(moved)
    }

    /// Bytes of the chunks the arena tracks (those with values the store keeps).
    pub(crate) fn tracked_bytes(&self) -> usize {
        self.chunks.values().map(|c| c.capacity).sum()
    }

    /// The start of the tracked chunk `value` lies in.
    fn chunk_of(&self, value: &Bytes) -> Option<usize> {
        if value.is_empty() || value.len() > OWN_ALLOCATION {
            return None;
        }
        let address = value.as_ptr() as usize;
        let (start, chunk) = self.chunks.range(..=address).next_back()?;
        (address < start + chunk.capacity).then_some(*start)
    }

    /// Seals the current chunk and starts a new one.
    fn start_chunk(&mut self) {
        if let Some(start) = self.current_start.take()
            && let Some(chunk) = self.chunks.get(&start)
        {
            if chunk.live == 0 {
                self.chunks.remove(&start);
            } else {
                self.sealed_capacity += chunk.capacity;
                self.sealed_live += chunk.live;
            }
        }
        self.current = BytesMut::with_capacity(CHUNK);
        let start = self.current.as_ptr() as usize;
        self.chunks.insert(
            start,
            Chunk {
                capacity: self.current.capacity(),
                live: 0,
            },
        );
        self.current_start = Some(start);
    }
}

/// Chunks picked for evacuation by [`ValueArena::sparse_chunks`].
#[derive(Debug, Default)]
pub(crate) struct SparseChunks {
    starts: BTreeSet<usize>,
}

impl SparseChunks {
    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn kept_values_read_back_and_share_their_chunk() {
        let mut arena = ValueArena::default();
        let kept: Vec<Bytes> = (0..10).map(|i| arena.keep(&value(i, 1000))).collect();
        for (i, bytes) in kept.iter().enumerate() {
            assert_eq!(bytes[..], value(i, 1000)[..]);
        }
        // Packed back to back: each value starts where the one before it ends.
        for pair in kept.windows(2) {
            assert_eq!(pair[0].as_ptr() as usize + 1000, pair[1].as_ptr() as usize);
        }
        assert_eq!(arena.tracked_bytes(), CHUNK);
    }

    #[test]
    fn empty_and_large_values_are_not_packed() {
        let mut arena = ValueArena::default();
        assert!(arena.keep(b"").is_empty());
        let large = arena.keep(&value(1, OWN_ALLOCATION + 1));
        assert_eq!(large[..], value(1, OWN_ALLOCATION + 1)[..]);
        assert_eq!(arena.tracked_bytes(), 0);
        arena.release(&large);
        assert_eq!(arena.tracked_bytes(), 0);
    }

    #[test]
    fn a_sealed_chunk_is_forgotten_when_its_last_value_is_released() {
        let mut arena = ValueArena::default();
        let per_chunk = CHUNK / 1000;
        let first: Vec<Bytes> = (0..per_chunk)
            .map(|i| arena.keep(&value(i, 1000)))
            .collect();
        let second = arena.keep(&value(99, 1000));
        assert_eq!(arena.tracked_bytes(), 2 * CHUNK);
        for bytes in &first {
            arena.release(bytes);
        }
        assert_eq!(arena.tracked_bytes(), CHUNK);
        // The current chunk stays tracked while empty: values still go into it.
        arena.release(&second);
        assert_eq!(arena.tracked_bytes(), CHUNK);
    }

    #[test]
    fn sparse_chunks_are_picked_only_when_enough_of_the_arena_is_dead() {
        let mut arena = ValueArena::default();
        let chunks = 4 * MIN_DEAD_FOR_EVACUATION / CHUNK;
        let per_chunk = CHUNK / 1024;
        let kept: Vec<Bytes> = (0..chunks * per_chunk)
            .map(|i| arena.keep(&value(i, 1024)))
            .collect();
        assert!(arena.sparse_chunks().is_empty(), "nothing is dead yet");
        // Every fourth value dies: chunks stay 75 % live, which is not sparse.
        for bytes in kept.iter().step_by(4) {
            arena.release(bytes);
        }
        assert!(arena.sparse_chunks().is_empty());
        // Half of each chunk dies: half of the arena is dead, and every sealed chunk is sparse.
        for bytes in kept.iter().skip(2).step_by(4) {
            arena.release(bytes);
        }
        let sparse = arena.sparse_chunks();
        assert_eq!(sparse.starts.len(), chunks - 1, "all but the current chunk");
        let survivors: Vec<&Bytes> = kept.iter().skip(1).step_by(2).collect();
        let mut moved = Vec::new();
        for bytes in &survivors {
            let evacuated = arena.evacuate(&sparse, bytes);
            moved.push(evacuated.unwrap_or_else(|| (*bytes).clone()));
        }
        for (old, new) in survivors.iter().zip(&moved) {
            assert_eq!(old[..], new[..]);
        }
        // The sparse chunks are forgotten; the survivors fill about half as many.
        assert!(arena.tracked_bytes() <= (chunks / 2 + 2) * CHUNK);
        assert!(arena.sparse_chunks().is_empty());
    }
}
