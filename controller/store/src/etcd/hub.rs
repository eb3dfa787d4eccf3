//! One etcd watch per watched prefix, shared by every watcher of it in this process.
//!
//! etcd sends every event once per watch, and each copy costs etcd and this process a
//! decode. Ten API clients watching Devices would otherwise be ten etcd watches. A hub holds
//! one watch of a prefix, keeps its most recent events, and hands each event to every
//! subscriber. A new watcher whose start revision the hub still covers joins it (replaying
//! the recent events after its start); an older start gets an etcd watch of its own.
//!
//! A subscriber that falls [`LAG`] events behind is dropped with an error; its client
//! resumes from the last event it saw, from the hub's recent events if they still reach back
//! that far. A hub ends when its last subscriber leaves or its etcd watch fails (every
//! subscriber gets the error).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::EtcdStore;
use crate::{Event, ProgressStream, Result, Rev, StoreError, WatchItem};

/// Recent events a hub keeps for watchers that join late or resume.
const RECENT: usize = 4096;
/// Events a subscriber may have waiting before it is dropped.
const LAG: usize = 16_384;

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
            match hub.join(after) {
                Joined::Stream(stream) => return Ok(stream),
                Joined::TooOld => {
                    drop(hubs);
                    return store.open_watch(prefix, after, with_prev).await;
                }
                Joined::Closed => {}
            }
        }
        let source = store.open_watch(prefix, after, with_prev).await?;
        let hub = Hub::new(after);
        // Joined before the hub runs, so even an immediate failure of the etcd watch reaches
        // this watcher.
        let Joined::Stream(stream) = hub.join(after) else {
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

    /// A subscription after `after`: the recent events after it now, then live ones.
    fn join(self: &Arc<Self>, after: Rev) -> Joined {
        let mut state = self.lock();
        if state.closed {
            return Joined::Closed;
        }
        if after < state.floor {
            return Joined::TooOld;
        }
        let (events, receiver) = mpsc::channel(RECENT + LAG);
        for event in state.recent.iter().filter(|event| event.rev > after) {
            // The channel has room for every recent event.
            let _ = events.try_send(Ok(WatchItem::Event(event.clone())));
        }
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.push(Subscriber { id, after, events });
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
        state.subscribers.retain(|subscriber| {
            event.rev <= subscriber.after
                || match subscriber
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
