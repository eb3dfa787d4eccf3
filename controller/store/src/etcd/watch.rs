//! One etcd watch stream in this crate's terms: events converted (a delete's last value read
//! when etcd sent none), those a start inside a batch already covers skipped, compaction
//! reported, and progress asked for when the prefix is quiet.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use etcd_client::EventType;

use super::{EtcdError, EtcdStore, PROGRESS_EVERY, revs, to_key_value, unexpected};
use crate::{Event, EventKind, KeyValue, ProgressStream, Result, Rev, StoreError, WatchItem};

/// State of one etcd watch stream.
pub(super) struct EtcdWatch {
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    root: String,
    delivered_through: Rev,
    /// The revision the watch started after: etcd may deliver earlier events of the same etcd
    /// revision, which are skipped.
    skip_through: Rev,
    known_compacted: Arc<AtomicU64>,
    finished: bool,
    /// Set when etcd sends no previous values: the store that reads a deleted key's last
    /// value.
    lookup: Option<EtcdStore>,
}

impl EtcdWatch {
    /// A watch of `stream`, which etcd started after `after`, for `store`; `lookup` reads the
    /// last values of deletes when etcd sends no previous values.
    pub(super) fn new(
        stream: etcd_client::WatchStream,
        store: &EtcdStore,
        after: Rev,
        lookup: Option<EtcdStore>,
    ) -> Self {
        EtcdWatch {
            stream,
            pending: VecDeque::new(),
            root: store.root.clone(),
            delivered_through: after,
            skip_through: after,
            known_compacted: Arc::clone(&store.known_compacted),
            finished: false,
            lookup,
        }
    }

    /// The items of this watch as a stream.
    pub(super) fn into_stream(self) -> ProgressStream {
        Box::pin(futures::stream::unfold(self, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        }))
    }

    /// The next item, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.delivered_through = event.rev;
                return Some(Ok(WatchItem::Event(event)));
            }
            if self.finished {
                return None;
            }
            let response = match tokio::time::timeout(PROGRESS_EVERY, self.stream.message()).await {
                Ok(Ok(Some(response))) => response,
                // Quiet: ask etcd how far it got (it answers once this watch has caught up).
                Err(_) => match self.stream.request_progress().await {
                    Ok(()) => continue,
                    Err(source) => {
                        self.finished = true;
                        return Some(Err(EtcdError::Request {
                            operation: "watch progress",
                            source,
                        }
                        .into()));
                    }
                },
                Ok(Ok(None)) => {
                    self.finished = true;
                    return Some(Err(unexpected("watch", "etcd closed the watch stream")));
                }
                Ok(Err(source)) => {
                    self.finished = true;
                    return Some(Err(EtcdError::Request {
                        operation: "watch",
                        source,
                    }
                    .into()));
                }
            };
            if response.canceled() {
                self.finished = true;
                if response.compact_revision() > 0 {
                    let compacted = revs::compacted(response.compact_revision());
                    self.known_compacted.fetch_max(compacted, Ordering::SeqCst);
                    return Some(Err(StoreError::Compacted {
                        requested: self.delivered_through,
                        compacted,
                    }));
                }
                let reason = response.cancel_reason().to_owned();
                return Some(Err(unexpected(
                    "watch",
                    format!("etcd canceled the watch: {reason}"),
                )));
            }
            if response.events().is_empty() && !response.created() {
                // A progress notification: every event up to its revision has been sent.
                let Some(header) = response.header() else {
                    continue;
                };
                let rev = revs::through(header.revision());
                if rev > self.delivered_through {
                    self.delivered_through = rev;
                    return Some(Ok(WatchItem::Progress(rev)));
                }
                continue;
            }
            for event in response.events() {
                match self.convert(event).await {
                    Ok(event) if event.rev <= self.skip_through => {}
                    Ok(event) => self.pending.push_back(event),
                    Err(error) => {
                        self.finished = true;
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// One etcd event in this crate's terms, its previous value read if a delete lacks it.
    async fn convert(&self, event: &etcd_client::Event) -> Result<Event> {
        let prev = match (event.prev_kv(), &self.lookup, event.kv()) {
            (Some(prev), _, _) => Some(to_key_value(&self.root, prev, "watch")?),
            (None, Some(store), Some(kv)) if event.event_type() == EventType::Delete => {
                store
                    .value_before(kv.key(), revs::through(kv.mod_revision()))
                    .await?
            }
            (None, _, _) => None,
        };
        convert_event(&self.root, event, prev)
    }
}

fn convert_event(root: &str, event: &etcd_client::Event, prev: Option<KeyValue>) -> Result<Event> {
    let Some(kv) = event.kv() else {
        return Err(unexpected("watch", "an event without a key"));
    };
    let current = to_key_value(root, kv, "watch")?;
    let rev = current.mod_rev;
    match event.event_type() {
        EventType::Put => Ok(Event {
            kind: EventKind::Put,
            rev,
            kv: current,
            prev,
        }),
        EventType::Delete => {
            // etcd's delete event carries only the key and the delete revision; the last value
            // comes from prev_kv (or a read at the revision before, for a watch without
            // previous values), which this backend's compaction rule keeps available.
            let kv = match &prev {
                Some(prev) => KeyValue {
                    mod_rev: rev,
                    ..prev.clone()
                },
                None => {
                    tracing::warn!(key = %current.key, rev, "etcd delete event without the previous value");
                    KeyValue {
                        key: current.key,
                        value: Bytes::new(),
                        create_rev: 0,
                        mod_rev: rev,
                    }
                }
            };
            Ok(Event {
                kind: EventKind::Delete,
                rev,
                kv,
                prev,
            })
        }
    }
}
