//! The embedded backend: all state in memory, made durable by a write-ahead log with group
//! commit, snapshots at the compaction floor, and recovery that restores objects, revisions
//! and the recent event history.
//!
//! * Reads (`get`, `list`, `watch` replay) take a read lock on the MVCC state; lists at an
//!   older revision see exactly the state of that revision.
//! * Writes go to one writer thread (module `writer`) that syncs the WAL once per batch and only
//!   then makes the batch visible.
//! * Compaction (module `compactor`) runs in the background by retention, or on request.
//! * Once asked, a term index (module `term_index`) follows every write, so that a list by
//!   terms reads only the keys that carry one.

mod arena;
mod compactor;
mod disk;
mod recovery;
mod snapshot;
mod span;
mod state;
mod term_index;
mod wal;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use disk::DiskError;

use self::compactor::{Retention, compact_to, run_compactor};
use self::state::{MvccState, WatchStart};
use self::writer::{Request, Wal, WriteOp, WriteOutcome, Writer};
use crate::{
    Event, Guard, KeyValue, ListOptions, ListPage, ProgressStream, Result, Rev, Store, StoreError,
    TermExtractor, WatchItem, WatchStream, validate_key, validate_list_options,
};

/// Tuning of the embedded backend.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Automatic compaction keeps at least this many of the newest revisions (their events
    /// stay available to resuming watchers). Default 10,000.
    pub retain_revisions: u64,
    /// Automatic compaction also keeps every event younger than this. Default: no window.
    pub retain_for: Option<Duration>,
    /// How often automatic compaction runs (and sooner when the event log holds twice
    /// `retain_revisions`); `None` disables it (explicit `compact` still works). Default 5 s.
    pub compaction_interval: Option<Duration>,
    /// A WAL segment is sealed and a new one started once it reaches this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Most writes committed with one fsync. Default 1,024.
    pub max_batch: usize,
    /// Events a watcher may fall behind the writer before its stream fails with
    /// `Compacted`. Default 8,192.
    pub watch_buffer: usize,
    /// Largest accepted value. Default 8 MiB.
    pub max_value_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retain_revisions: 10_000,
            retain_for: None,
            compaction_interval: Some(Duration::from_secs(5)),
            segment_bytes: 64 * 1024 * 1024,
            max_batch: 1024,
            watch_buffer: 8192,
            max_value_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Largest accepted [`EmbeddedOptions::watch_buffer`].
const MAX_WATCH_BUFFER: usize = 1 << 20;

impl EmbeddedOptions {
    fn validate(&self) -> Result<()> {
        let invalid = |what: &str| {
            Err(StoreError::InvalidArgument(format!(
                "EmbeddedOptions: {what}"
            )))
        };
        if self.retain_revisions == 0 {
            return invalid("retain_revisions must be at least 1");
        }
        if self.compaction_interval.is_some_and(|i| i.is_zero()) {
            return invalid("compaction_interval must be positive (use None to disable)");
        }
        if self.segment_bytes == 0 {
            return invalid("segment_bytes must be positive");
        }
        if self.max_batch == 0 {
            return invalid("max_batch must be at least 1");
        }
        // The feed preallocates one slot per buffered event.
        if !(1..=MAX_WATCH_BUFFER).contains(&self.watch_buffer) {
            return invalid(&format!(
                "watch_buffer must be between 1 and {MAX_WATCH_BUFFER}"
            ));
        }
        if self.max_value_bytes > wal::MAX_RECORD_VALUE_BYTES {
            return invalid(&format!(
                "max_value_bytes must be at most {} (what a WAL record can hold)",
                wal::MAX_RECORD_VALUE_BYTES
            ));
        }
        Ok(())
    }
}

/// Counters of the embedded backend, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Writes made durable and visible.
    pub committed_writes: u64,
    /// Batches committed (each with at most one WAL sync).
    pub batches: u64,
    /// `fdatasync` calls on WAL segments.
    pub wal_syncs: u64,
    /// WAL segments started by rotation.
    pub segments_created: u64,
    /// Snapshots written by compaction.
    pub snapshots_written: u64,
    /// Bytes of the chunks the values are packed into (values over 8 KiB, allocated one by
    /// one, are not counted).
    pub value_chunk_bytes: u64,
}

#[derive(Default)]
struct Counters {
    committed_writes: AtomicU64,
    batches: AtomicU64,
    wal_syncs: AtomicU64,
    segments_created: AtomicU64,
    snapshots_written: AtomicU64,
}

/// What the handle, the writer thread and the compactor share.
struct Core {
    state: RwLock<MvccState>,
    stats: Counters,
    /// Serializes compactions (explicit and automatic).
    compaction: Mutex<()>,
    /// The data directory; `None` in memory.
    dir: Option<PathBuf>,
    /// The directory lock; released on close, or when the last user of the store is gone.
    dir_lock: Mutex<Option<File>>,
    /// Set by `close`; refuses operations that would touch the directory afterwards.
    closed: AtomicBool,
}

struct Threads {
    writer: Option<JoinHandle<()>>,
    compactor: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
}

struct Inner {
    core: Arc<Core>,
    requests: mpsc::UnboundedSender<Request>,
    options: EmbeddedOptions,
    threads: Mutex<Threads>,
}

impl Inner {
    /// Stops the compactor and waits for both threads; the writer must have been told to close.
    fn join_threads(&self) {
        let (writer, compactor) = {
            let mut threads = self.threads.lock();
            (threads.writer.take(), threads.compactor.take())
        };
        if let Some((stop, handle)) = compactor {
            drop(stop);
            if handle.join().is_err() {
                tracing::error!("the compaction thread panicked");
            }
        }
        if let Some(handle) = writer
            && handle.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer finishes what is queued (at most one more sync) and releases the WAL, so
        // the directory can be reopened as soon as the last handle is gone.
        let _ = self.requests.send(Request::Close { done: None });
        self.join_threads();
    }
}

/// The embedded store. Cloning gives another handle to the same store; dropping the last one
/// (or calling [`Embedded::close`]) stops the writer after it has synced everything queued.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("dir", &self.inner.core.dir)
            .field("closed", &self.inner.core.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// Opens (or creates) a durable store in `dir`, recovering what is there. The directory is
    /// locked while the store is open.
    pub async fn open(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let feed_capacity = options.watch_buffer;
        let recovered = tokio::task::spawn_blocking(move || {
            let lock = disk::lock_dir(&dir)?;
            let recovered = recovery::recover(&dir, feed_capacity)?;
            Ok::<_, DiskError>((dir, lock, recovered))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("recovery task failed: {e}")))??;
        let (dir, lock, recovered) = recovered;
        let wal = Wal {
            dir: dir.clone(),
            segment: recovered.active_segment,
            segment_bytes: options.segment_bytes,
        };
        Self::start(recovered.state, Some(wal), Some(dir), Some(lock), options)
    }

    /// A store that keeps everything in memory only (for tests).
    pub fn in_memory(options: EmbeddedOptions) -> Result<Self> {
        options.validate()?;
        let state = MvccState::new(options.watch_buffer);
        Self::start(state, None, None, None, options)
    }

    fn start(
        state: MvccState,
        wal: Option<Wal>,
        dir: Option<PathBuf>,
        dir_lock: Option<File>,
        options: EmbeddedOptions,
    ) -> Result<Self> {
        let core = Arc::new(Core {
            state: RwLock::new(state),
            stats: Counters::default(),
            compaction: Mutex::new(()),
            dir,
            dir_lock: Mutex::new(dir_lock),
            closed: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            core: Arc::clone(&core),
            requests: receiver,
            wal,
            max_batch: options.max_batch,
            disabled: None,
        };
        let writer = std::thread::Builder::new()
            .name("devplane-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot start the store writer thread: {e}"),
                ))
            })?;
        let mut threads = Threads {
            writer: Some(writer),
            compactor: None,
        };
        if let Some(interval) = options.compaction_interval {
            let retention = Retention {
                revisions: options.retain_revisions,
                window: options.retain_for,
                interval,
            };
            let (stop, stop_receiver) = std::sync::mpsc::channel();
            let compactor_core = Arc::clone(&core);
            match std::thread::Builder::new()
                .name("devplane-store-compactor".into())
                .spawn(move || run_compactor(compactor_core, retention, stop_receiver))
            {
                Ok(handle) => threads.compactor = Some((stop, handle)),
                Err(e) => {
                    // Shut the writer down again before reporting.
                    let _ = requests.send(Request::Close { done: None });
                    if let Some(writer) = threads.writer.take() {
                        let _ = writer.join();
                    }
                    return Err(StoreError::Io(std::io::Error::new(
                        e.kind(),
                        format!("cannot start the store compaction thread: {e}"),
                    )));
                }
            }
        }
        Ok(Embedded {
            inner: Arc::new(Inner {
                core,
                requests,
                options,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Syncs and stops the writer, stops automatic compaction and ends all watch streams.
    /// Every later operation on any handle fails with [`StoreError::Closed`].
    /// The data directory is unlocked when this returns.
    pub async fn close(&self) -> Result<()> {
        self.inner.core.closed.store(true, Ordering::SeqCst);
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .requests
            .send(Request::Close { done: Some(done) })
            .is_ok()
        {
            // An error only means the writer is already gone.
            let _ = finished.await;
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner.join_threads();
            // Wait out a compaction that is still writing a snapshot, then unlock.
            let _no_compaction = inner.core.compaction.lock();
            inner.core.dir_lock.lock().take();
        })
        .await
        .map_err(|e| StoreError::Internal(format!("stopping the store threads failed: {e}")))
    }

    /// Current counters.
    pub fn stats(&self) -> EmbeddedStats {
        let counters = &self.inner.core.stats;
        EmbeddedStats {
            committed_writes: counters.committed_writes.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
            wal_syncs: counters.wal_syncs.load(Ordering::Relaxed),
            segments_created: counters.segments_created.load(Ordering::Relaxed),
            snapshots_written: counters.snapshots_written.load(Ordering::Relaxed),
            value_chunk_bytes: self.inner.core.state.read().value_chunk_bytes() as u64,
        }
    }

    /// The data directory, or `None` for an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.core.dir.as_deref()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.core.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    fn check_value(&self, value: &Bytes) -> Result<()> {
        let limit = self.inner.options.max_value_bytes;
        if value.len() > limit {
            return Err(StoreError::InvalidArgument(format!(
                "value is {} bytes long; the limit is {limit}",
                value.len()
            )));
        }
        Ok(())
    }

    /// Hands a write to the writer thread and waits for its durable answer. If the caller
    /// stops waiting, the write still happens (as with any database).
    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn unexpected_outcome(operation: &str) -> StoreError {
    StoreError::Internal(format!(
        "the writer answered {operation} with the wrong outcome"
    ))
}

#[async_trait::async_trait]
impl Store for Embedded {
    fn written_only_here(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check_open()?;
        validate_key(key)?;
        Ok(self.inner.core.state.read().latest(key))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        validate_key(key)?;
        self.check_value(&value)?;
        match self
            .submit(WriteOp::Create {
                key: key.to_owned(),
                value,
                guard: None,
            })
            .await?
        {
            WriteOutcome::Stored(kv) => Ok(kv),
            WriteOutcome::Deleted(_) => Err(unexpected_outcome("create")),
        }
    }

    async fn create_guarded(&self, key: &str, value: Bytes, guard: &Guard) -> Result<KeyValue> {
        validate_key(key)?;
        validate_key(&guard.key)?;
        self.check_value(&value)?;
        match self
            .submit(WriteOp::Create {
                key: key.to_owned(),
                value,
                guard: Some(guard.clone()),
            })
            .await?
        {
            WriteOutcome::Stored(kv) => Ok(kv),
            WriteOutcome::Deleted(_) => Err(unexpected_outcome("create")),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_rev: Rev) -> Result<KeyValue> {
        validate_key(key)?;
        self.check_value(&value)?;
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected: expected_mod_rev,
        };
        match self.submit(op).await? {
            WriteOutcome::Stored(kv) => Ok(kv),
            WriteOutcome::Deleted(_) => Err(unexpected_outcome("update")),
        }
    }

    async fn delete(&self, key: &str, expected_mod_rev: Option<Rev>) -> Result<Event> {
        validate_key(key)?;
        match self
            .submit(WriteOp::Delete {
                key: key.to_owned(),
                expected: expected_mod_rev,
            })
            .await?
        {
            WriteOutcome::Deleted(event) => Ok(event),
            WriteOutcome::Stored(_) => Err(unexpected_outcome("delete")),
        }
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        self.check_open()?;
        validate_list_options(&opts)?;
        self.inner.core.state.read().list(&opts)
    }

    async fn index_terms(&self, extract: TermExtractor) -> Result<bool> {
        self.check_open()?;
        // Indexing what is stored reads every value: off the async threads.
        let core = Arc::clone(&self.inner.core);
        tokio::task::spawn_blocking(move || core.state.write().index_terms(extract))
            .await
            .map_err(|e| StoreError::Internal(format!("indexing task failed: {e}")))?;
        Ok(true)
    }

    async fn list_by_terms(&self, opts: ListOptions, terms: &[String]) -> Result<Option<ListPage>> {
        self.check_open()?;
        validate_list_options(&opts)?;
        self.inner.core.state.read().list_by_terms(&opts, terms)
    }

    async fn watch(&self, prefix: &str, after: Rev) -> Result<WatchStream> {
        Ok(crate::events_only(
            self.watch_progress(prefix, after).await?,
        ))
    }

    async fn watch_progress(&self, prefix: &str, after: Rev) -> Result<ProgressStream> {
        self.check_open()?;
        let start = self.inner.core.state.read().watch_from(prefix, after)?;
        Ok(watch_stream(
            start,
            prefix.to_owned(),
            Arc::downgrade(&self.inner.core),
        ))
    }

    async fn current_revision(&self) -> Result<Rev> {
        self.check_open()?;
        Ok(self.inner.core.state.read().current())
    }

    async fn compacted_revision(&self) -> Result<Rev> {
        self.check_open()?;
        Ok(self.inner.core.state.read().compacted())
    }

    async fn compact(&self, rev: Rev) -> Result<()> {
        self.check_open()?;
        let core = Arc::clone(&self.inner.core);
        tokio::task::spawn_blocking(move || compact_to(&core, rev))
            .await
            .map_err(|e| StoreError::Internal(format!("compaction task failed: {e}")))?
    }
}

/// Progress of one embedded watch stream.
struct WatchProgress {
    replay: std::vec::IntoIter<Arc<Event>>,
    feed: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// Every revision up to here has been looked at (replayed, filtered out or delivered).
    seen_through: Rev,
    /// The last revision the stream yielded (an event or progress).
    reported: Rev,
    finished: bool,
    /// The store, to catch up from its event log when the live feed ran ahead of this
    /// watcher; weak so that an open stream does not keep a closed store alive.
    core: std::sync::Weak<Core>,
}

/// Replays the logged events, then follows the live feed. The stream holds no reference to
/// the store: when the store closes, the feed closes and the stream ends.
/// Revisions of writes elsewhere after which a watch stream reports its progress.
const PROGRESS_EVERY: Rev = 256;

fn watch_stream(start: WatchStart, prefix: String, core: std::sync::Weak<Core>) -> ProgressStream {
    let progress = WatchProgress {
        replay: start.replay.into_iter(),
        feed: start.feed,
        prefix,
        seen_through: start.seen_through,
        reported: start.seen_through,
        finished: false,
        core,
    };
    Box::pin(futures::stream::unfold(
        progress,
        |mut progress| async move {
            if progress.finished {
                return None;
            }
            if let Some(event) = progress.replay.next() {
                progress.reported = event.rev;
                return Some((Ok(WatchItem::Event(Event::clone(&event))), progress));
            }
            loop {
                match progress.feed.recv().await {
                    Ok(event) => {
                        if event.rev <= progress.seen_through {
                            continue;
                        }
                        progress.seen_through = event.rev;
                        if event.kv.key.starts_with(&progress.prefix) {
                            progress.reported = event.rev;
                            return Some((Ok(WatchItem::Event(Event::clone(&event))), progress));
                        }
                        if event.rev >= progress.reported + PROGRESS_EVERY {
                            progress.reported = event.rev;
                            return Some((Ok(WatchItem::Progress(event.rev)), progress));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // The live feed dropped events this watcher never saw. While the event
                        // log still holds them, replay from the log and follow a new
                        // subscription; only a watcher behind the retained history must start
                        // over (the API server turns that into 410 Gone).
                        let resumed = progress.core.upgrade().map(|core| {
                            core.state
                                .read()
                                .watch_from(&progress.prefix, progress.seen_through)
                        });
                        let error = match resumed {
                            Some(Ok(start)) => {
                                progress.replay = start.replay.into_iter();
                                progress.feed = start.feed;
                                progress.seen_through = start.seen_through;
                                if let Some(event) = progress.replay.next() {
                                    progress.reported = event.rev;
                                    return Some((
                                        Ok(WatchItem::Event(Event::clone(&event))),
                                        progress,
                                    ));
                                }
                                continue;
                            }
                            // The store was closed meanwhile: the stream ends, as it does
                            // for a watcher that kept up.
                            None | Some(Err(StoreError::Closed)) => return None,
                            Some(Err(error @ StoreError::Compacted { .. })) => error,
                            Some(Err(_)) => StoreError::Compacted {
                                requested: progress.seen_through,
                                compacted: progress.seen_through + missed + 1,
                            },
                        };
                        progress.finished = true;
                        return Some((Err(error), progress));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn next(stream: &mut ProgressStream) -> WatchItem {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an item in time")
            .expect("the stream goes on")
            .expect("no error")
    }

    #[tokio::test]
    async fn a_watch_of_a_quiet_prefix_reports_progress_and_a_plain_watch_does_not() {
        let store = Embedded::in_memory(EmbeddedOptions::default()).expect("store");
        store
            .create("/quiet/a", Bytes::from("1"))
            .await
            .expect("create");
        let mut with_progress = store.watch_progress("/quiet/", 1).await.expect("watch");
        let mut plain = store.watch("/quiet/", 1).await.expect("watch");
        let writes = PROGRESS_EVERY * 2 + 10;
        for i in 0..writes {
            store
                .create(&format!("/busy/{i}"), Bytes::from("x"))
                .await
                .expect("create");
        }
        store
            .create("/quiet/b", Bytes::from("2"))
            .await
            .expect("create");
        assert_eq!(
            next(&mut with_progress).await,
            WatchItem::Progress(1 + PROGRESS_EVERY)
        );
        assert_eq!(
            next(&mut with_progress).await,
            WatchItem::Progress(1 + 2 * PROGRESS_EVERY)
        );
        let WatchItem::Event(event) = next(&mut with_progress).await else {
            panic!("the quiet prefix's write comes next");
        };
        assert_eq!(event.kv.key, "/quiet/b");
        assert_eq!(event.rev, writes + 2);
        let event = tokio::time::timeout(Duration::from_secs(5), plain.next())
            .await
            .expect("in time")
            .expect("an event")
            .expect("no error");
        assert_eq!(event.kv.key, "/quiet/b", "a plain watch has events only");
    }
}
