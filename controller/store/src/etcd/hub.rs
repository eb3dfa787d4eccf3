//! One etcd watch per watched prefix, shared by every watcher of it in this process.
//!
//! etcd sends every event once per watch, and each copy costs etcd and this process a
//! decode. Ten API clients watching Devices would otherwise be ten etcd watches. A hub holds
//! one watch of a prefix, keeps its most recent events, and hands each event to every
//! subscriber. A new watcher whose start revision the hub still covers joins it (replaying
//! the recent events after its start); an older start gets an etcd watch of its own.
//!
//! A hub also serves watchers of narrower prefixes, filtered, when it has no hub of their own
//! prefix and covers their start: the API server's garbage collector watches all of
//! `/registry/`, so every watch of one resource would otherwise have etcd send each of its
//! events twice. A start older than the broad hub's recent events gets a hub of its own
//! prefix, as before.
//!
//! A subscriber that falls [`LAG`] events behind is dropped with an error; its client
//! resumes from the last event it saw, from the hub's recent events if they still reach back
//! that far. A hub ends when its last subscriber leaves or its etcd watch fails (every
//! subscriber gets the error).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::EtcdStore;
use crate::{Event, ProgressStream, Result, Rev, StoreError, WatchItem};

/// Recent events a hub keeps for watchers that join late or resume.
const RECENT: usize = 4096;
/// Events a subscriber may have waiting before it is dropped.
const LAG: usize = 16_384;
/// How often a subscriber of a narrower prefix than its hub's is told the hub's progress, as
/// events of other keys go by: etcd reports progress only on a quiet watch, and the broad
/// watch is rarely quiet, so this is how a quiet resource's watchers keep up (their
/// bookmarks).
const FILTERED_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The hubs of one store, by prefix and whether events carry previous values.
#[derive(Default)]
pub(crate) struct Hubs {
    hubs: tokio::sync::Mutex<HashMap<(String, bool), Weak<Hub>>>,
}

impl Hubs {
    /// A watch of `prefix` after `after`, from the prefix's hub where it can serve it.
    pub(crate) async fn watch(
        &self,
        store: &EtcdStore,
        prefix: &str,
        after: Rev,
        with_prev: bool,
    ) -> Result<ProgressStream> {
        let key = (prefix.to_owned(), with_prev);
        let mut hubs = self.hubs.lock().await;
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            match hub.join(after, None) {
                Joined::Stream(stream) => return Ok(stream),
                Joined::TooOld => {
                    drop(hubs);
                    return store.open_watch(prefix, after, with_prev).await;
                }
                Joined::Closed => {}
            }
        }
        if let Some(stream) = join_broader(&hubs, prefix, after, with_prev) {
            return Ok(stream);
        }
        let source = store.open_watch(prefix, after, with_prev).await?;
        let hub = Hub::new(after);
        // Joined before the hub runs, so even an immediate failure of the etcd watch reaches
        // this watcher.
        let Joined::Stream(stream) = hub.join(after, None) else {
            return Err(StoreError::Internal(
                "a new etcd watch hub refused its first watcher".into(),
            ));
        };
        tokio::spawn(Arc::clone(&hub).run(source));
        hubs.retain(|_, hub| hub.strong_count() > 0);
        hubs.insert(key, Arc::downgrade(&hub));
        Ok(stream)
    }
}

/// A subscription to the narrowest running hub of a prefix that contains `prefix` (and sends
/// previous values if the watcher needs them) whose recent events reach back to `after`.
fn join_broader(
    hubs: &HashMap<(String, bool), Weak<Hub>>,
    prefix: &str,
    after: Rev,
    with_prev: bool,
) -> Option<ProgressStream> {
    let mut broader: Vec<(&str, Arc<Hub>)> = hubs
        .iter()
        .filter(|((hub_prefix, hub_prev), _)| {
            hub_prefix.len() < prefix.len()
                && prefix.starts_with(hub_prefix.as_str())
                && (*hub_prev || !with_prev)
        })
        .filter_map(|((hub_prefix, _), hub)| Some((hub_prefix.as_str(), hub.upgrade()?)))
        .collect();
    broader.sort_by_key(|(hub_prefix, _)| std::cmp::Reverse(hub_prefix.len()));
    broader
        .into_iter()
        .find_map(|(_, hub)| match hub.join(after, Some(prefix)) {
            Joined::Stream(stream) => Some(stream),
            Joined::TooOld | Joined::Closed => None,
        })
}

/// One shared etcd watch.
struct Hub {
    state: Mutex<State>,
    /// Signalled when the last subscriber leaves.
    idle: Notify,
}

struct State {
    /// The most recent events, oldest first.
    recent: VecDeque<Event>,
    /// Every event after this revision is in `recent` or still to come.
    floor: Rev,
    subscribers: Vec<Subscriber>,
    next_id: u64,
    /// The etcd watch has ended; nobody can join any more.
    closed: bool,
}

struct Subscriber {
    id: u64,
    /// Events at or before this revision are not for this subscriber.
    after: Rev,
    /// Only events of keys under this prefix are, for a subscriber of a narrower prefix than
    /// the hub's.
    only: Option<String>,
    /// When this subscriber of a narrower prefix was last told the hub's progress.
    progress_at: Instant,
    events: mpsc::Sender<Result<WatchItem>>,
}

/// The outcome of joining a hub.
enum Joined {
    Stream(ProgressStream),
    /// The hub's recent events do not reach back to the start revision.
    TooOld,
    Closed,
}

impl Hub {
    /// A hub for a watch after `floor`; [`Hub::run`] feeds it.
    fn new(floor: Rev) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(State {
                recent: VecDeque::new(),
                floor,
                subscribers: Vec::new(),
                next_id: 0,
                closed: false,
            }),
            idle: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A subscription after `after`: the recent events after it now, then live ones; with
    /// `only`, just those of keys under that prefix.
    fn join(self: &Arc<Self>, after: Rev, only: Option<&str>) -> Joined {
        let mut state = self.lock();
        if state.closed {
            return Joined::Closed;
        }
        if after < state.floor {
            return Joined::TooOld;
        }
        let (events, receiver) = mpsc::channel(RECENT + LAG);
        let wanted = |event: &&Event| event.rev > after && covers(only, event);
        for event in state.recent.iter().filter(wanted) {
            // The channel has room for every recent event.
            let _ = events.try_send(Ok(WatchItem::Event(event.clone())));
        }
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber {
            id,
            after,
            only: only.map(str::to_owned),
            progress_at: Instant::now(),
            events,
        });
        Joined::Stream(Box::pin(Subscription {
            hub: Arc::clone(self),
            id,
            receiver,
            ended: false,
        }))
    }

    /// Hands the source's events to the subscribers until it ends or nobody listens.
    async fn run(self: Arc<Self>, mut source: ProgressStream) {
        loop {
            tokio::select! {
                item = source.next() => match item {
                    Some(Ok(WatchItem::Event(event))) => self.publish(event),
                    Some(Ok(WatchItem::Progress(rev))) => self.progress(rev),
                    Some(Err(error)) => return self.close(Some(error)),
                    None => return self.close(None),
                },
                () = self.idle.notified() => {
                    let mut state = self.lock();
                    if state.subscribers.is_empty() {
                        state.closed = true;
                        return;
                    }
                }
            }
        }
    }

    fn publish(&self, event: Event) {
        let mut state = self.lock();
        state.subscribers.retain_mut(|subscriber| {
            if event.rev <= subscriber.after {
                return true;
            }
            if !covers(subscriber.only.as_deref(), &event) {
                // Every event of its prefix up to here has been sent to it.
                if subscriber.progress_at.elapsed() >= FILTERED_PROGRESS_EVERY {
                    subscriber.progress_at = Instant::now();
                    let _ = subscriber
                        .events
                        .try_send(Ok(WatchItem::Progress(event.rev)));
                }
                return true;
            }
            match subscriber
                .events
                .try_send(Ok(WatchItem::Event(event.clone())))
            {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(
                        rev = event.rev,
                        "an etcd watcher fell {LAG} events behind; it is dropped"
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if state.recent.len() == RECENT
            && let Some(oldest) = state.recent.pop_front()
        {
            state.floor = oldest.rev;
        }
        state.recent.push_back(event);
    }

    /// Tells every subscriber that the watch got to `rev`; one whose queue is full learns it
    /// from its next event instead.
    fn progress(&self, rev: Rev) {
        let state = self.lock();
        for subscriber in state.subscribers.iter().filter(|s| rev > s.after) {
            let _ = subscriber.events.try_send(Ok(WatchItem::Progress(rev)));
        }
    }

    /// Ends the hub; each subscriber gets `error` (in its own copy) after its events.
    fn close(&self, error: Option<StoreError>) {
        let mut state = self.lock();
        state.closed = true;
        for subscriber in state.subscribers.drain(..) {
            if let Some(error) = &error {
                let _ = subscriber.events.try_send(Err(copy_of(error)));
            }
        }
    }

    fn leave(&self, id: u64) {
        let mut state = self.lock();
        state.subscribers.retain(|subscriber| subscriber.id != id);
        if state.subscribers.is_empty() {
            self.idle.notify_one();
        }
    }
}

/// Whether `event` is for a subscriber that wants only keys under `only`.
fn covers(only: Option<&str>, event: &Event) -> bool {
    only.is_none_or(|prefix| event.kv.key.starts_with(prefix))
}

/// `error` again, for one more subscriber: a compaction keeps its revisions, so the client
/// re-lists; anything else keeps its message.
fn copy_of(error: &StoreError) -> StoreError {
    match error {
        StoreError::Compacted {
            requested,
            compacted,
        } => StoreError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        other => StoreError::Internal(format!("the shared etcd watch failed: {other}")),
    }
}

/// One watcher's share of a hub.
struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    receiver: mpsc::Receiver<Result<WatchItem>>,
    /// The stream has ended (after an error, if any).
    ended: bool,
}

impl Stream for Subscription {
    type Item = Result<WatchItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                if self.hub.lock().closed {
                    return Poll::Ready(None);
                }
                // Dropped by the hub for falling behind: the caller resumes from its last event.
                Poll::Ready(Some(Err(StoreError::Internal(
                    "the watcher fell behind the shared etcd watch".into(),
                ))))
            }
            Poll::Ready(Some(Err(error))) => {
                self.ended = true;
                Poll::Ready(Some(Err(error)))
            }
            other => other,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.id);
    }
}
