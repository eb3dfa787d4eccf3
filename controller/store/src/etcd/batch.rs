//! Group commit of creates and updates: writes that arrive while others are on their way to
//! etcd share one transaction.
//!
//! A create or an update must be a compare-and-put transaction, and etcd 3.4 pays for a
//! transaction far more than for the put inside it. One transaction whose operations are the
//! writes' own transactions (etcd evaluates each nested transaction's compares on its own)
//! costs etcd about as much as one write, so a burst of writes goes through at several times
//! the rate of single ones. At most [`IN_FLIGHT`] transactions are under way at once; a write
//! that finds a free slot is sent alone at once, so a quiet store adds no latency.
//!
//! The writes of one transaction get one etcd revision; their store revisions tell them apart
//! by position (see [`super::revs`]). Deletes are not queued: they are rare, and alone.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{EtcdStore, header_rev, request_error, revs, same_revision, unexpected};
use crate::{Guard, KeyValue, Result, Rev, StoreError};

/// Transactions on their way to etcd at once. etcd's cost is mostly per transaction (a
/// transaction of 4 creates cost it about 45–95 µs per create here, one of 8 about 35–45 µs,
/// a plain put 30–45 µs), so fewer and larger ones leave more of the machine to everything
/// else. With one, API creates over etcd in `devplane bench api` ran at 0.56–0.65 of raw puts
/// against 0.50–0.52 with two, in alternating runs of the same build.
const IN_FLIGHT: usize = 1;
/// Writes per transaction. etcd refuses a transaction with more than `--max-txn-ops` (128 by
/// default) operations in one list, nested transactions counted each on their own; each write
/// is one operation outside and at most two inside.
const MAX_WRITES: usize = 64;
/// Bytes of values per transaction, below etcd's default request limit of 1.5 MiB; a larger
/// value goes alone.
const MAX_BYTES: usize = 1024 * 1024;

/// A write waiting for its transaction.
struct Pending {
    key: String,
    value: Bytes,
    write: Write,
    reply: oneshot::Sender<Result<KeyValue>>,
}

/// What a queued write does.
enum Write {
    /// Creates the key, if the guard (when there is one) still holds.
    Create { guard: Option<Guard> },
    /// Updates the key, if it is still at this revision.
    Update { expected_mod_rev: Rev },
}

impl Pending {
    fn guard(&self) -> Option<&Guard> {
        match &self.write {
            Write::Create { guard } => guard.as_ref(),
            Write::Update { .. } => None,
        }
    }

    /// Whether the two writes must not share a transaction: they write one key, or one
    /// writes the other's guard key.
    fn clashes_with(&self, other: &Pending) -> bool {
        let guards = |write: &Pending, key: &str| write.guard().is_some_and(|g| g.key == key);
        self.key == other.key || guards(self, &other.key) || guards(other, &self.key)
    }
}

/// The queue of writes. Dropping every handle ends the committing task.
#[derive(Clone)]
pub(crate) struct Writes {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Writes {
    /// Starts committing writes through `store` (whose own writes must not be queued).
    pub(crate) fn start(store: EtcdStore) -> Writes {
        let (queue, incoming) = mpsc::unbounded_channel();
        tokio::spawn(commit_queued(store, incoming));
        Writes { queue }
    }

    /// Creates `key` in the next transaction with room for it.
    pub(crate) async fn create(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<&Guard>,
    ) -> Result<KeyValue> {
        let guard = guard.cloned();
        self.queued(key, value, Write::Create { guard }).await
    }

    /// Updates `key` from `expected_mod_rev` in the next transaction with room for it.
    pub(crate) async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_rev: Rev,
    ) -> Result<KeyValue> {
        self.queued(key, value, Write::Update { expected_mod_rev })
            .await
    }

    async fn queued(&self, key: &str, value: Bytes, write: Write) -> Result<KeyValue> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: key.to_owned(),
            value,
            write,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Err(StoreError::Internal(
                "the etcd write queue has stopped".into(),
            ));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Internal("an etcd write was dropped".into())))
    }
}

/// Takes writes off the queue, a transaction's worth at a time, while a slot is free.
async fn commit_queued(store: EtcdStore, mut incoming: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut waiting = VecDeque::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match waiting.pop_front() {
            Some(pending) => pending,
            None => match incoming.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let batch = take_batch(first, &mut waiting, &mut incoming);
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, batch).await;
            drop(slot);
        });
    }
}

/// `first` and whatever else is ready, up to a transaction's limits. Two writes of one key
/// never share a transaction (etcd refuses that), and neither do a guarded create and a write
/// of its guard key (etcd checks every compare of a transaction against the state before
/// it, so the create would pass a guard the write had just changed): the later one waits for
/// the next transaction.
fn take_batch(
    first: Pending,
    waiting: &mut VecDeque<Pending>,
    incoming: &mut mpsc::UnboundedReceiver<Pending>,
) -> Vec<Pending> {
    let mut bytes = first.value.len();
    let mut batch = vec![first];
    let mut later = Vec::new();
    while batch.len() < MAX_WRITES {
        let Some(next) = waiting.pop_front().or_else(|| incoming.try_recv().ok()) else {
            break;
        };
        if bytes + next.value.len() > MAX_BYTES || batch.iter().any(|p| p.clashes_with(&next)) {
            later.push(next);
            continue;
        }
        bytes += next.value.len();
        batch.push(next);
    }
    for pending in later.into_iter().rev() {
        waiting.push_front(pending);
    }
    batch
}

/// Commits `batch` and answers each write.
async fn commit(store: &EtcdStore, mut batch: Vec<Pending>) {
    if batch.len() == 1
        && let Some(single) = batch.pop()
    {
        return commit_alone(store, single).await;
    }
    match commit_together(store, &batch).await {
        Ok(Some(results)) => {
            for (pending, result) in batch.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
            return;
        }
        // The shared guard changed: each write learns how from its own transaction.
        Ok(None) => {}
        // Also when etcd refused the shared transaction as a whole (a limit): each write is
        // tried alone, and reports its own outcome.
        Err(BatchError::NotApplied(error)) => {
            tracing::debug!(error = %error, writes = batch.len(), "etcd refused a batch of writes; trying each alone");
        }
        // The transaction may have been applied: tried again, each write would find its own
        // effect and report a conflict. Each gets the failure, as a write alone would.
        Err(BatchError::Unknown(error)) => {
            let message = format!("the outcome of an etcd write is unknown: {error}");
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(StoreError::Internal(message.clone())));
            }
            return;
        }
    }
    let each = batch
        .into_iter()
        .map(|pending| commit_alone(store, pending));
    futures::future::join_all(each).await;
}

/// Commits one write in a transaction of its own and answers it.
async fn commit_alone(store: &EtcdStore, pending: Pending) {
    let Pending {
        key,
        value,
        write,
        reply,
    } = pending;
    let result = match write {
        Write::Create { guard } => store.create_txn(&key, value, guard.as_ref()).await,
        Write::Update { expected_mod_rev } => store.update_txn(&key, value, expected_mod_rev).await,
    };
    let _ = reply.send(result);
}

/// The guard every guarded create of `batch` names, if they name the same one: it is checked
/// once for the whole transaction instead of once per create (each check is a read in etcd).
fn shared_guard(batch: &[Pending]) -> Option<&Guard> {
    let mut guards = batch.iter().filter_map(Pending::guard);
    let first = guards.next()?;
    guards.all(|guard| guard == first).then_some(first)
}

/// Why a shared transaction brought no outcomes.
enum BatchError {
    /// None of it was applied: it could not be built, or etcd refused it as a whole.
    NotApplied(StoreError),
    /// It may have been applied (the connection failed after sending it, etcd timed out, or
    /// its answer made no sense).
    Unknown(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(error: StoreError) -> Self {
        BatchError::NotApplied(error)
    }
}

/// Whether etcd refused a request as a whole, before applying any of it: too large, too many
/// operations, or otherwise invalid. Any other failure may have come after etcd applied it.
fn refused_whole(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    matches!(error, etcd_client::Error::GRpcStatus(status) if matches!(
        status.code(),
        Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange | Code::FailedPrecondition
    ))
}

/// One transaction of the writes' own transactions; each write's outcome, or `None` if the
/// guard they share has changed.
async fn commit_together(
    store: &EtcdStore,
    batch: &[Pending],
) -> std::result::Result<Option<Vec<Result<KeyValue>>>, BatchError> {
    let shared = shared_guard(batch);
    let mut writes = Vec::with_capacity(batch.len());
    // For each update, the create_rev this process knew when it asked (see `update_request`).
    let mut known_create_revs = Vec::with_capacity(batch.len());
    for (index, pending) in batch.iter().enumerate() {
        let position = revs::position(index, batch.len());
        let (txn, known_create_rev) = match &pending.write {
            Write::Create { guard } => {
                let guard = guard.as_ref().filter(|_| shared.is_none());
                let txn = store.create_request(&pending.key, &pending.value, guard, position)?;
                (txn, None)
            }
            Write::Update { expected_mod_rev } => {
                store.update_request(&pending.key, &pending.value, *expected_mod_rev, position)?
            }
        };
        writes.push(TxnOp::txn(txn));
        known_create_revs.push(known_create_rev);
    }
    let mut txn = Txn::new();
    if let Some(guard) = shared {
        crate::validate_key(&guard.key)?;
        txn = txn.when(same_revision(&store.full_key(&guard.key), guard.mod_rev));
    }
    let response = store
        .kv()
        .txn(txn.and_then(writes))
        .await
        .map_err(|error| {
            let refused = refused_whole(&error);
            let error = request_error("write")(error);
            if refused {
                BatchError::NotApplied(error)
            } else {
                BatchError::Unknown(error)
            }
        })?;
    if !response.succeeded() {
        return Ok(None);
    }
    let etcd_rev = header_rev(response.header(), "write").map_err(BatchError::Unknown)?;
    let etcd_rev = revs::etcd(etcd_rev);
    let responses = response.op_responses();
    if responses.len() != batch.len() {
        return Err(BatchError::Unknown(unexpected(
            "write",
            format!("{} answers to {} writes", responses.len(), batch.len()),
        )));
    }
    Ok(Some(
        batch
            .iter()
            .zip(responses)
            .zip(known_create_revs)
            .enumerate()
            .map(|(index, ((pending, response), known_create_rev))| {
                let rev = revs::at(etcd_rev, revs::position(index, batch.len()));
                let TxnOpResponse::Txn(response) = response else {
                    return Err(unexpected("write", "a nested transaction got no answer"));
                };
                // The header revision of everything in this transaction.
                let seen_at = revs::through(revs::etcd(rev));
                let answer = (response.succeeded(), response.op_responses());
                match &pending.write {
                    Write::Create { guard } => {
                        let guard = guard.as_ref().filter(|_| shared.is_none());
                        created(store, pending, guard, answer, rev, seen_at)
                    }
                    Write::Update { .. } => store.update_outcome(
                        &pending.key,
                        pending.value.clone(),
                        known_create_rev,
                        answer,
                        rev,
                        seen_at,
                    ),
                }
            })
            .collect(),
    ))
}

/// The outcome of one create from its nested transaction's answer; `rev` is its revision,
/// `guard` its guard if its own transaction checked it, `seen_at` the revision the answer was
/// read at.
fn created(
    store: &EtcdStore,
    pending: &Pending,
    guard: Option<&Guard>,
    (succeeded, responses): (bool, Vec<TxnOpResponse>),
    rev: Rev,
    seen_at: Rev,
) -> Result<KeyValue> {
    if !succeeded {
        return Err(store.create_refusal(&pending.key, guard, responses, seen_at)?);
    }
    let kv = KeyValue {
        key: pending.key.clone(),
        value: pending.value.clone(),
        create_rev: rev,
        mod_rev: rev,
    };
    store.remember(&pending.key, Some(&kv), seen_at);
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_etcd_refused_whole_is_tried_again_write_by_write() {
        let status =
            |code, message: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
        assert!(refused_whole(&status(
            tonic::Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )));
        assert!(refused_whole(&status(
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )));
        // These may come after etcd applied the transaction.
        assert!(!refused_whole(&status(
            tonic::Code::Unavailable,
            "etcdserver: leader changed"
        )));
        assert!(!refused_whole(&status(
            tonic::Code::Unavailable,
            "etcdserver: request timed out"
        )));
        assert!(!refused_whole(&status(
            tonic::Code::Unknown,
            "transport error"
        )));
    }
}
