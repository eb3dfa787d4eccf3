//! Compaction and checkpoints.
//!
//! Compacting to `c` first prunes the in-memory history (instant for readers), then, on a
//! durable store, writes a snapshot of the state at `c - 1` once that lets WAL segments go:
//! a segment can be deleted when every record in it is at or below `c - 1`. Recovery then
//! starts from the snapshot and replays the WAL from `c` on, which also rebuilds the events
//! that watchers may still resume from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::Core;
use super::disk::{self, DiskError};
use super::snapshot::write_snapshot;
use crate::{Rev, StoreError};

/// Compacts so that `rev` becomes the compacted revision, then checkpoints if that frees WAL
/// segments. Serialized with other compactions; readers and the writer only wait for the
/// in-memory pruning.
pub(crate) fn compact_to(core: &Core, rev: Rev) -> Result<(), StoreError> {
    let _one_at_a_time = core.compaction.lock();
    if core.closed.load(Ordering::SeqCst) {
        return Err(StoreError::Closed);
    }
    let pruned = core.state.write().compact(rev)?;
    if pruned {
        tracing::debug!(compacted = rev, "compacted the embedded store");
    }
    if let Some(dir) = &core.dir {
        checkpoint(core, dir)?;
    }
    Ok(())
}

/// Writes a snapshot at the compaction floor if WAL segments can then be deleted, and
/// deletes them and older snapshots once it is durable. The caller holds the compaction lock.
fn checkpoint(core: &Core, dir: &Path) -> Result<(), DiskError> {
    let floor = core.state.read().floor();
    if floor == 0 {
        return Ok(());
    }
    let listing = disk::list_dir(dir)?;
    // Segment i holds revisions [first_i, first_{i+1}); the active (last) one is never deleted.
    // Empty segments are left out (see `DirListing::empty_segments`).
    let obsolete_segments: Vec<PathBuf> = listing
        .segments
        .windows(2)
        .filter(|pair| pair[1].0 <= floor + 1)
        .map(|pair| pair[0].1.clone())
        .collect();
    if obsolete_segments.is_empty() {
        return Ok(());
    }
    let newest_snapshot = listing.snapshots.last().map(|(rev, _)| *rev);
    if newest_snapshot != Some(floor) {
        let entries = core.state.read().snapshot_at(floor);
        let started = Instant::now();
        write_snapshot(dir, floor, &entries)?;
        core.stats.snapshots_written.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            rev = floor,
            keys = entries.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wrote snapshot"
        );
    }
    for path in &obsolete_segments {
        disk::remove_file(path)?;
    }
    for (rev, path) in &listing.snapshots {
        if *rev < floor {
            disk::remove_file(path)?;
        }
    }
    disk::sync_dir(dir)
}

/// Retention settings for automatic compaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    pub revisions: u64,
    pub window: Option<Duration>,
    pub interval: Duration,
}

/// How often the compaction loop checks whether the event log has outgrown its retention.
const GROWTH_CHECK: Duration = Duration::from_millis(200);

/// The automatic compaction loop; returns when `stop` fires or its sender is dropped.
///
/// It compacts every `retention.interval`, and sooner once the event log holds twice the
/// retained revisions: at tens of thousands of writes a second, one interval's events alone
/// would otherwise outnumber the retained ones several times over, all held in memory.
pub(crate) fn run_compactor(core: Arc<Core>, retention: Retention, stop: Receiver<()>) {
    let mut last = Instant::now();
    loop {
        match stop.recv_timeout(retention.interval.min(GROWTH_CHECK)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let outgrown =
            core.state.read().logged_events() as u64 >= retention.revisions.saturating_mul(2);
        if !outgrown && last.elapsed() < retention.interval {
            continue;
        }
        last = Instant::now();
        compact_by_retention(&core, &retention);
    }
}

/// One automatic compaction: to the target the retention allows, if that is news.
fn compact_by_retention(core: &Core, retention: &Retention) {
    let keep_since = retention
        .window
        .and_then(|window| Instant::now().checked_sub(window));
    let (target, compacted) = {
        let state = core.state.read();
        (
            state.retention_target(retention.revisions, keep_since),
            state.compacted(),
        )
    };
    if target <= compacted {
        return;
    }
    if let Err(error) = compact_to(core, target) {
        tracing::warn!(%error, target, "automatic compaction failed");
    }
}
