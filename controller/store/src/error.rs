//! The error type shared by every backend.

use crate::embedded::DiskError;
use crate::etcd::EtcdError;
use crate::{KeyValue, Rev};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key already present.
    #[error("create failed: key {key:?} already exists")]
    AlreadyExists {
        /// The key that was to be created.
        key: String,
    },
    /// `update` or `delete` found no such key.
    #[error("key {key:?} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// The expected `mod_rev` did not match; `current` is what is stored now.
    #[error(
        "write to key {key:?} conflicts: expected revision is stale (current revision: {})",
        describe_current(.current)
    )]
    Conflict {
        /// The contested key.
        key: String,
        /// The value stored now (`None` if the key vanished).
        current: Option<KeyValue>,
    },
    /// The requested history has been compacted away.
    #[error("revision {requested} is compacted; the oldest readable revision is {compacted}")]
    Compacted {
        /// The revision the caller asked for (for a watch: its `after`, or the last revision
        /// it received before falling behind).
        requested: Rev,
        /// The oldest revision still available to the caller.
        compacted: Rev,
    },
    /// The requested revision has not been written yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision the caller asked for.
        requested: Rev,
        /// The current revision.
        current: Rev,
    },
    /// The caller passed something the store cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An I/O failure outside the data directory (e.g. starting a thread).
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The embedded backend could not read or write its data directory.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The etcd backend failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// An earlier write could not be made durable, so the embedded store refuses further
    /// writes until it is reopened (reads keep working).
    #[error("the store refuses writes after a failed disk write: {0}")]
    WritesDisabled(String),
    /// A bug or an unexpected runtime failure.
    #[error("internal store error: {0}")]
    Internal(String),
}

fn describe_current(current: &Option<KeyValue>) -> String {
    match current {
        Some(kv) => kv.mod_rev.to_string(),
        None => "deleted".to_owned(),
    }
}
