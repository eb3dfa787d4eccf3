//! Rebuilding the state from a data directory: newest valid snapshot plus the WAL records
//! after it, which restores both the objects and the recent event history.

use std::path::Path;
use std::time::Instant;

use super::disk::{self, DiskError};
use super::snapshot::read_snapshot;
use super::state::MvccState;
use super::wal::{SegmentWriter, scan_segment, truncate_segment};

/// What recovery hands to the writer.
pub(crate) struct Recovered {
    pub state: MvccState,
    pub active_segment: SegmentWriter,
}

/// Recovers the store in `dir` (which must already be locked).
pub(crate) fn recover(dir: &Path, feed_capacity: usize) -> Result<Recovered, DiskError> {
    let listing = disk::list_dir(dir)?;
    for temp in &listing.temp_files {
        tracing::info!(path = %temp.display(), "removing the leftover of an interrupted snapshot");
        disk::remove_file(temp)?;
    }
    // Empty segments hold no record; the writer appends to the last segment with records (or
    // starts a new one named after the next revision).
    for empty in &listing.empty_segments {
        tracing::info!(path = %empty.display(), "removing an empty WAL segment");
        disk::remove_file(empty)?;
    }

    let mut state = None;
    for (rev, path) in listing.snapshots.iter().rev() {
        match read_snapshot(path) {
            Ok((snapshot_rev, entries)) if snapshot_rev == *rev => {
                tracing::info!(path = %path.display(), rev, keys = entries.len(), "loaded snapshot");
                state = Some(MvccState::from_snapshot(
                    snapshot_rev,
                    entries,
                    feed_capacity,
                ));
                break;
            }
            Ok((snapshot_rev, _)) => tracing::warn!(
                path = %path.display(), snapshot_rev,
                "snapshot revision does not match its file name; trying an older one"
            ),
            // An older snapshot may still be usable if the WAL after it survives; the
            // continuity check below refuses to open otherwise.
            Err(DiskError::Corrupt { reason, offset, .. }) => tracing::warn!(
                path = %path.display(), offset, reason,
                "snapshot is corrupt; trying an older one"
            ),
            Err(other) => return Err(other),
        }
    }
    let snapshot_rev = state.as_ref().map(MvccState::current);
    let mut state = state.unwrap_or_else(|| MvccState::new(feed_capacity));

    let segment_count = listing.segments.len();
    let mut active_segment = None;
    let replay_started = Instant::now();
    let mut replayed = 0u64;
    for (index, (first_rev, path)) in listing.segments.iter().enumerate() {
        let scan = scan_segment(path)?;
        let is_last = index + 1 == segment_count;
        for record in scan.records {
            let rev = record.rev;
            if rev <= state.current() {
                // Segments older than the snapshot may linger if a crash hit between writing
                // the snapshot and deleting them; their records are already in the snapshot.
                if snapshot_rev.is_some_and(|s| rev <= s) {
                    continue;
                }
                return Err(corrupt(
                    path,
                    0,
                    format!("revision {rev} appears twice in the WAL"),
                ));
            }
            if rev != state.current() + 1 {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "the WAL skips from revision {} to {rev} (segment starts at {first_rev})",
                        state.current()
                    ),
                ));
            }
            state
                .apply(rev, record.mutation, replay_started)
                .map_err(|e| corrupt(path, 0, format!("record {rev}: {e}")))?;
            replayed += 1;
        }
        if let Some(reason) = scan.invalid_tail {
            if !is_last {
                // Segments are sealed only after their last batch was synced, so damage here
                // would lose acknowledged writes; refuse to guess.
                return Err(corrupt(path, scan.valid_len, reason));
            }
            tracing::warn!(
                path = %path.display(),
                valid_bytes = scan.valid_len,
                dropped_bytes = scan.file_len - scan.valid_len,
                reason,
                "truncating the torn tail of the WAL"
            );
            truncate_segment(path, scan.valid_len)?;
        }
        if is_last {
            active_segment = Some(SegmentWriter::open_append(path, scan.valid_len)?);
        }
    }

    if let Some(snapshot_rev) = snapshot_rev
        && state.current() == snapshot_rev
    {
        // A snapshot is only ever taken below a revision that is already in the WAL, so the
        // record after it must exist.
        return Err(corrupt(
            dir,
            0,
            format!("no WAL record follows snapshot revision {snapshot_rev}"),
        ));
    }

    let active_segment = match active_segment {
        Some(segment) => segment,
        None => SegmentWriter::create(dir, state.current() + 1)?,
    };
    tracing::info!(
        dir = %dir.display(),
        current = state.current(),
        compacted = state.compacted(),
        keys = state.key_count(),
        replayed,
        "recovered the embedded store"
    );
    Ok(Recovered {
        state,
        active_segment,
    })
}

fn corrupt(path: &Path, offset: u64, reason: String) -> DiskError {
    DiskError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}
