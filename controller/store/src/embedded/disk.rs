//! Data-directory layout and filesystem helpers of the embedded backend.
//!
//! Layout: `LOCK` (held with an exclusive advisory lock while a store is open),
//! `wal-<first revision, 20 digits>.log` segments, `snapshot-<revision, 20 digits>.snap`
//! snapshots, and `*.tmp` files that only exist while a snapshot is being written.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::Rev;

/// A failure reading or writing the data directory, naming the operation and the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Another store (in this or another process) has the directory open.
    #[error("data directory {path} is in use by another store")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The directory lock could not be taken.
    #[error("cannot lock data directory {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// The directory could not be listed.
    #[error("cannot list data directory {path}: {source}")]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// A file could not be created or opened for writing.
    #[error("cannot open {path} for writing: {source}")]
    OpenForWrite {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Appending to a WAL segment failed.
    #[error("cannot append to WAL segment {path}: {source}")]
    Append {
        /// The segment.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// An fsync failed.
    #[error("cannot fsync {path}: {source}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Cutting a torn tail off a WAL segment failed.
    #[error("cannot truncate the torn tail of {path} at byte {offset}: {source}")]
    Truncate {
        /// The segment.
        path: PathBuf,
        /// Where the valid records end.
        offset: u64,
        /// The underlying failure.
        source: io::Error,
    },
    /// Writing a snapshot failed.
    #[error("cannot write snapshot {path}: {source}")]
    WriteSnapshot {
        /// The temporary snapshot file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Renaming a finished snapshot into place failed.
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The final name.
        to: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// Removing an obsolete file failed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// A file holds data that cannot be trusted, somewhere other than the WAL's tail.
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the problem starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) const LOCK_FILE: &str = "LOCK";
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn segment_name(first_rev: Rev) -> String {
    format!("{SEGMENT_PREFIX}{first_rev:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn snapshot_name(rev: Rev) -> String {
    format!("{SNAPSHOT_PREFIX}{rev:020}{SNAPSHOT_SUFFIX}")
}

fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<Rev> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The store files found in a data directory, each list sorted by revision.
#[derive(Debug, Default)]
pub(crate) struct DirListing {
    /// `(first revision, path)` of every WAL segment that holds any bytes.
    pub segments: Vec<(Rev, PathBuf)>,
    /// Empty WAL segments. A rotation that failed after creating its file (the directory
    /// sync failed) leaves one behind while the writer goes on appending to the segment before
    /// it, so its name says nothing about where revisions are: it must not count as the start
    /// of a segment, or the one before would look sealed (and deletable) while it is still
    /// written to. A segment just started is empty too, and the same reading holds for it.
    pub empty_segments: Vec<PathBuf>,
    /// `(revision, path)` of every snapshot.
    pub snapshots: Vec<(Rev, PathBuf)>,
    /// Leftovers of interrupted snapshot writes.
    pub temp_files: Vec<PathBuf>,
}

pub(crate) fn list_dir(dir: &Path) -> Result<DirListing, DiskError> {
    let list_err = |source| DiskError::ListDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut listing = DirListing::default();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        if name.ends_with(TEMP_SUFFIX) {
            listing.temp_files.push(path);
        } else if let Some(rev) = parse_numbered(&name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            let len = entry.metadata().map_err(list_err)?.len();
            if len == 0 {
                listing.empty_segments.push(path);
            } else {
                listing.segments.push((rev, path));
            }
        } else if let Some(rev) = parse_numbered(&name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((rev, path));
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// Makes renames, creations and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    let sync_err = |source| DiskError::Sync {
        path: dir.to_path_buf(),
        source,
    };
    File::open(dir)
        .map_err(sync_err)?
        .sync_all()
        .map_err(sync_err)
}

pub(crate) fn remove_file(path: &Path) -> Result<(), DiskError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DiskError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates the data directory if needed and takes its exclusive lock; the lock lasts as long
/// as the returned file is open (the kernel drops it if the process dies).
pub(crate) fn lock_dir(dir: &Path) -> Result<File, DiskError> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|source| DiskError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        // A new directory's own entry must be durable too, or a crash could lose the store.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DiskError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(DiskError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(DiskError::Lock { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_by_revision() {
        assert_eq!(segment_name(42), "wal-00000000000000000042.log");
        assert_eq!(
            parse_numbered(&segment_name(42), SEGMENT_PREFIX, SEGMENT_SUFFIX),
            Some(42)
        );
        assert_eq!(
            parse_numbered(&snapshot_name(7), SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX),
            Some(7)
        );
        assert_eq!(
            parse_numbered("wal-42.log", SEGMENT_PREFIX, SEGMENT_SUFFIX),
            None
        );
        assert!(segment_name(9) < segment_name(10));
    }
}
