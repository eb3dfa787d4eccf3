//! A narrow, revisioned key-value store for devplane's embedded API server.
//!
//! The API server uses this crate the way kube-apiserver uses etcd: objects are opaque bytes
//! under string keys, and one global revision counter orders every write. The store knows
//! nothing of Kubernetes.
//!
//! # Revisions
//!
//! * One global, monotonic [`Rev`] covers all keys. Every successful create, update or delete
//!   increments it by exactly one, and that value is the written key's `mod_rev`. Failed
//!   writes do not consume a revision. Revisions are never reused, also across restarts.
//! * **Compacted revision.** `compacted_revision()` returns `c`, the oldest revision that can
//!   still be read. `c` is `0` until the first compaction; after `compact(c)`:
//!   * `list` at any revision `>= c` works; `list` at a revision `< c` fails with
//!     [`StoreError::Compacted`];
//!   * `watch(prefix, after)` works when `after >= c - 1`, i.e. every event with a revision
//!     `>= c` is still available (with its `prev` value); an older `after` fails with
//!     [`StoreError::Compacted`].
//!
//!   This is etcd's rule (after etcd's `compact(c)`, a watch starting at revision `c` works),
//!   and both backends implement exactly it.
//!
//! # Term index
//!
//! A caller may ask a backend to index values by terms it extracts from them
//! ([`Store::index_terms`]; the API server's terms are labels) and then list only the keys
//! carrying a term ([`Store::list_by_terms`]). The embedded backend keeps such an index; etcd
//! does not, and its callers scan.
//!
//! # Backends
//!
//! [`open`] picks a backend from a URL:
//! * `memory://`: [`Embedded::in_memory`], not durable (tests);
//! * `file:///abs/dir` or a plain path: [`Embedded::open`], durable, data in that directory;
//! * `etcd://host:port[,host:port...][/prefix]`: [`EtcdStore`], keys under the prefix
//!   (default `/devplane`).
//!
//! The [`conformance`] module (feature `testing`) holds one suite that every backend passes.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
mod error;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use embedded::{DiskError, Embedded, EmbeddedOptions, EmbeddedStats};
pub use error::StoreError;
pub use etcd::{EtcdError, EtcdStore};

/// A store revision: the global write counter. Exposed to API clients as `resourceVersion`.
pub type Rev = u64;

/// One stored value and the revisions that describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, exactly as written.
    pub key: String,
    /// The stored bytes (opaque to the store).
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_rev: Rev,
    /// Revision of the most recent write to the key.
    pub mod_rev: Rev,
}

/// What a write did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One committed write, as delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Whether the key was written or deleted.
    pub kind: EventKind,
    /// Revision of this write.
    pub rev: Rev,
    /// For `Put`: the new value (`mod_rev == rev`). For `Delete`: the key with its last value,
    /// `mod_rev` set to the delete's revision and `create_rev` of the deleted object.
    pub kv: KeyValue,
    /// The value before this write; `None` for a create.
    pub prev: Option<KeyValue>,
}

/// A condition a write holds to: `key` is still at revision `mod_rev`. The API server guards
/// a create with the namespace it checked, so a namespace deleted meanwhile (also by another
/// process sharing the store) cannot gain new objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// The key that must be unchanged.
    pub key: String,
    /// Its `mod_rev` when the caller looked.
    pub mod_rev: Rev,
}

/// What a backend remembers of a key from this process's own reads and writes, without
/// asking its server (see [`Store::recent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recent {
    /// The key held this value when this process last read or wrote it.
    Value(KeyValue),
    /// The key did not exist when this process last read or deleted it.
    Absent,
}

/// Parameters of [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with this string are listed (`""` lists everything).
    pub prefix: String,
    /// Exclusive lower bound: list keys strictly after this one (pagination).
    pub start_after: Option<String>,
    /// At most this many items (must be at least 1); `None` lists all.
    pub limit: Option<usize>,
    /// Read the state as of this revision; `None` reads the latest.
    pub rev: Option<Rev>,
}

/// One page of [`Store::list`].
#[derive(Clone, Debug)]
pub struct ListPage {
    /// Live keys in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at. Pass it back as [`ListOptions::rev`] for the next
    /// page so that all pages show one consistent state.
    pub rev: Rev,
    /// `true` when more keys in the range remain after the last item.
    pub more: bool,
}

/// Finds the index terms of a stored value (see [`Store::index_terms`]): opaque strings to
/// the store; the API server's are labels. Runs on every write, so it must be quick, and it
/// must not fail: a value it cannot read simply has no terms.
pub type TermExtractor = Arc<dyn Fn(&[u8]) -> Vec<String> + Send + Sync>;

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of committed events in revision order. It ends when the store closes; after an
/// `Err` item it ends as well.
pub type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<Event>> + Send>>;

/// One item of [`Store::watch_progress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// A committed write of the watched prefix.
    Event(Event),
    /// Every event of the watched prefix up to this revision has been delivered: the store got
    /// this far with writes elsewhere.
    Progress(Rev),
}

/// A [`WatchStream`] that also reports progress.
pub type ProgressStream = Pin<Box<dyn futures::Stream<Item = Result<WatchItem>> + Send>>;

/// The events of `items`, without its progress reports.
pub fn events_only(items: ProgressStream) -> WatchStream {
    use futures::StreamExt;
    Box::pin(items.filter_map(|item| {
        std::future::ready(match item {
            Ok(WatchItem::Event(event)) => Some(Ok(event)),
            Ok(WatchItem::Progress(_)) => None,
            Err(error) => Some(Err(error)),
        })
    }))
}

/// The storage contract the API server relies on (modelled on etcd v3 and kine).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`, or `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Like [`Store::create`], but only while `guard.key` is at `guard.mod_rev`. The guard is
    /// checked first: if it fails, the error is [`StoreError::Conflict`] naming the guard's
    /// key and carrying its current value (`None` if it is gone), and no revision is used.
    async fn create_guarded(&self, key: &str, value: Bytes, guard: &Guard) -> Result<KeyValue>;

    /// Replaces the value of `key` if its `mod_rev` is `expected_mod_rev`.
    /// Fails with [`StoreError::NotFound`] or [`StoreError::Conflict`].
    async fn update(&self, key: &str, value: Bytes, expected_mod_rev: Rev) -> Result<KeyValue>;

    /// Deletes `key` (if `expected_mod_rev` is given, only at that revision) and returns the
    /// `Delete` event. Fails with [`StoreError::NotFound`] or [`StoreError::Conflict`].
    async fn delete(&self, key: &str, expected_mod_rev: Option<Rev>) -> Result<Event>;

    /// Lists live keys in key order at a revision. Fails with [`StoreError::Compacted`] if
    /// `opts.rev` is below the compacted revision, [`StoreError::FutureRevision`] if it is
    /// above the current one.
    async fn list(&self, opts: ListOptions) -> Result<ListPage>;

    /// Every event with `rev > after` whose key starts with `prefix`, in revision order, then
    /// live events. Fails at once with [`StoreError::Compacted`] if `after` is below the
    /// compacted revision minus one, and with [`StoreError::FutureRevision`] if it is above
    /// the current revision. A watcher that falls too far behind gets an in-stream
    /// `Err(Compacted)`, after which the stream ends.
    async fn watch(&self, prefix: &str, after: Rev) -> Result<WatchStream>;

    /// What this process last saw of `key` through this store (a read, a write, or the
    /// current value a failed write reported), if the backend keeps such a memory; `None`
    /// when it does not know. The etcd backend keeps a bounded one, to spare a round trip
    /// before a write; the embedded backend keeps none (its reads are in memory anyway).
    ///
    /// The answer may be stale: another process may have written since. Base on it only
    /// writes whose revision check catches that (`update` and `delete` with the revision
    /// seen, `create`), and confirm with [`Store::get`] any decision such a check does not
    /// protect (a refusal, a no-op).
    fn recent(&self, _key: &str) -> Option<Recent> {
        None
    }

    /// Whether this process is the store's only writer, so that every value in it is one this
    /// process put there: the embedded backend (whose log checks every record's CRC on
    /// reading). A reader may then rely on the form in which it writes values; a store that
    /// others can write to (etcd) answers `false`.
    fn written_only_here(&self) -> bool {
        false
    }

    /// [`Store::watch`], with now and then a [`WatchItem::Progress`] while the writes go to
    /// other prefixes, so a watcher of a quiet prefix knows how far the store got (the API
    /// server's bookmarks). A store that cannot tell yields events only.
    async fn watch_progress(&self, prefix: &str, after: Rev) -> Result<ProgressStream> {
        use futures::StreamExt;
        let events = self.watch(prefix, after).await?;
        Ok(Box::pin(events.map(|event| event.map(WatchItem::Event))))
    }

    /// Like [`Store::watch_progress`], for callers that do not look at previous values: a
    /// `Put` event may lack `prev` also when it updates a key (`kv.create_rev < kv.mod_rev`
    /// tells an update from a create). `Delete` events still carry the last value. The etcd
    /// backend spares etcd a read per update and watcher this way; the embedded one has the
    /// values at hand and sends them anyway.
    async fn watch_progress_without_prev(
        &self,
        prefix: &str,
        after: Rev,
    ) -> Result<ProgressStream> {
        self.watch_progress(prefix, after).await
    }

    /// Asks the backend to index every value by the terms `extract` finds in it (what it
    /// holds now and every later write), so that [`Store::list_by_terms`] reads only the
    /// keys that carry a term. Returns whether the backend does; one that keeps no index
    /// returns `false` (the default). Asking again replaces the extractor and the index.
    async fn index_terms(&self, _extract: TermExtractor) -> Result<bool> {
        Ok(false)
    }

    /// [`Store::list`] of only the keys whose value at the list revision carries at least one
    /// of `terms` (as the extractor given to [`Store::index_terms`] finds them), read from the
    /// index instead of every value. Pages, limits and revisions work as for `list`, with
    /// `more` telling whether more matching keys may follow. The page holds exactly the keys
    /// whose value at the list revision carries a term, at the latest revision and at older
    /// ones alike (a key that gains a term later is left out, one that loses it later is in),
    /// so a caller whose selector is that one requirement need not check what it reads.
    /// `None` when the backend keeps no index: the caller then lists and filters itself.
    async fn list_by_terms(
        &self,
        _opts: ListOptions,
        _terms: &[String],
    ) -> Result<Option<ListPage>> {
        Ok(None)
    }

    /// The revision of the latest committed write (or one that covers it: revisions need not
    /// be consecutive).
    async fn current_revision(&self) -> Result<Rev>;

    /// A revision at least `writes` writes before the current one: compacting there keeps the
    /// newest `writes` writes. Backends whose revisions are not consecutive override this.
    async fn revision_writes_ago(&self, writes: u64) -> Result<Rev> {
        Ok(self.current_revision().await?.saturating_sub(writes))
    }

    /// The oldest revision that can still be read (see the crate docs); `0` before any
    /// compaction.
    async fn compacted_revision(&self) -> Result<Rev>;

    /// Drops history before `rev`: afterwards reads at `rev` still work and reads or watches
    /// that need anything older fail with [`StoreError::Compacted`]. Compacting at or below
    /// the compacted revision does nothing; above the current revision it fails with
    /// [`StoreError::FutureRevision`].
    async fn compact(&self, rev: Rev) -> Result<()>;
}

/// Opens a store from a URL; see the crate docs for the forms.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, EmbeddedOptions::default()).await
}

/// Like [`open`], with options for the embedded backend (ignored for etcd).
pub async fn open_with(url: &str, embedded: EmbeddedOptions) -> Result<Arc<dyn Store>> {
    match StoreUrl::parse(url)? {
        StoreUrl::Memory => Ok(Arc::new(Embedded::in_memory(embedded)?)),
        StoreUrl::Directory(dir) => Ok(Arc::new(Embedded::open(dir, embedded).await?)),
        StoreUrl::Etcd { endpoints, prefix } => {
            Ok(Arc::new(EtcdStore::connect(&endpoints, &prefix).await?))
        }
    }
}

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StoreUrl {
    Memory,
    Directory(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

const DEFAULT_ETCD_PREFIX: &str = "/devplane";
const DEFAULT_ETCD_PORT: u16 = 2379;

impl StoreUrl {
    fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| StoreError::InvalidArgument(format!("store URL {url:?}: {why}"));
        if url.trim().is_empty() {
            return Err(invalid("is empty"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StoreUrl::Directory(PathBuf::from(url)));
        };
        match scheme {
            "memory" if rest.is_empty() => Ok(StoreUrl::Memory),
            "memory" => Err(invalid("memory:// takes no path")),
            "file" => {
                // Only the empty host form (`file:///abs/dir`) is accepted: a host part would be
                // silently ignored otherwise.
                if !rest.starts_with('/') || rest.len() < 2 {
                    return Err(invalid("expected file:///absolute/path"));
                }
                Ok(StoreUrl::Directory(PathBuf::from(rest)))
            }
            "etcd" => {
                let (hosts, prefix) = match rest.find('/') {
                    Some(slash) => (&rest[..slash], &rest[slash..]),
                    None => (rest, ""),
                };
                let mut endpoints = Vec::new();
                for host in hosts.split(',') {
                    let host = host.trim();
                    if host.is_empty() {
                        return Err(invalid("expected etcd://host:port[,host:port...][/prefix]"));
                    }
                    if host.contains(['@', '?', '#']) {
                        return Err(invalid(
                            "credentials and query parameters are not supported",
                        ));
                    }
                    let has_port = host.rsplit_once(':').is_some_and(|(_, port)| {
                        !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())
                    }) && !host.ends_with(']');
                    if has_port {
                        endpoints.push(format!("http://{host}"));
                    } else {
                        endpoints.push(format!("http://{host}:{DEFAULT_ETCD_PORT}"));
                    }
                }
                let prefix = prefix.trim_end_matches('/');
                let prefix = if prefix.is_empty() {
                    if rest.contains('/') {
                        "/".to_owned()
                    } else {
                        DEFAULT_ETCD_PREFIX.to_owned()
                    }
                } else {
                    prefix.to_owned()
                };
                Ok(StoreUrl::Etcd { endpoints, prefix })
            }
            other => Err(invalid(&format!(
                "unsupported scheme {other:?} (expected memory://, file:// or etcd://)"
            ))),
        }
    }
}

/// Checks a key before it is written or read.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks the parts of [`ListOptions`] that do not depend on the backend.
pub(crate) fn validate_list_options(opts: &ListOptions) -> Result<()> {
    if opts.limit == Some(0) {
        return Err(StoreError::InvalidArgument(
            "list limit must be at least 1 (use None for no limit)".into(),
        ));
    }
    Ok(())
}

/// Longest accepted key; Kubernetes keys are far shorter, so a longer one is a bug upstream.
pub(crate) const MAX_KEY_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_select_the_backend() {
        assert_eq!(StoreUrl::parse("memory://").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("file:///var/lib/devplane").unwrap(),
            StoreUrl::Directory(PathBuf::from("/var/lib/devplane"))
        );
        assert_eq!(
            StoreUrl::parse("data/store").unwrap(),
            StoreUrl::Directory(PathBuf::from("data/store"))
        );
        assert_eq!(
            StoreUrl::parse("etcd://10.0.0.1:2379,10.0.0.2:2380/registry/").unwrap(),
            StoreUrl::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2380".into()],
                prefix: "/registry".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("etcd://etcd").unwrap(),
            StoreUrl::Etcd {
                endpoints: vec!["http://etcd:2379".into()],
                prefix: DEFAULT_ETCD_PREFIX.into()
            }
        );
    }

    #[test]
    fn malformed_store_urls_are_refused() {
        for url in [
            "",
            "  ",
            "memory://x",
            "file://relative",
            "file://",
            "etcd://",
            "etcd://a,,b",
            "redis://x",
        ] {
            assert!(
                matches!(StoreUrl::parse(url), Err(StoreError::InvalidArgument(_))),
                "{url:?} was accepted"
            );
        }
    }
}
