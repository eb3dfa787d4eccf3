//! The single writer thread: group commit of write requests.
//!
//! It takes every queued request (up to `max_batch`), decides each against the latest state
//! plus the earlier writes of the same batch, appends the records to the WAL, syncs once,
//! and only then applies the batch to the shared state, feeds watchers and answers callers.
//! So no reader, watcher or caller ever sees a write that is not durable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::Core;
use super::disk::DiskError;
use super::state::Mutation;
use super::wal::{SegmentWriter, encode_record};
use crate::{Event, Guard, KeyValue, Rev, StoreError};

/// A write as requested by a caller.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
        /// Another key that must still be at a revision (see [`Guard`]).
        guard: Option<Guard>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Rev,
    },
    Delete {
        key: String,
        expected: Option<Rev>,
    },
}

/// The successful answer to a write.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Stored(KeyValue),
    Deleted(Event),
}

pub(crate) type WriteReply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Request {
    Write {
        op: WriteOp,
        reply: WriteReply,
    },
    /// Finish what is queued before it, release the WAL, acknowledge, and exit.
    Close {
        done: Option<oneshot::Sender<()>>,
    },
}

/// The WAL side of the writer (absent for in-memory stores).
pub(crate) struct Wal {
    pub dir: PathBuf,
    pub segment: SegmentWriter,
    pub segment_bytes: u64,
}

pub(crate) struct Writer {
    pub core: Arc<Core>,
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub wal: Option<Wal>,
    pub max_batch: usize,
    /// Set after a failed disk write; all later writes are refused with it.
    pub disabled: Option<String>,
}

/// The latest known value of a key during batch planning.
type Latest = Option<KeyValue>;

/// A write that passed its checks and waits for the sync.
struct Planned {
    rev: Rev,
    mutation: Mutation,
    reply: WriteReply,
    is_delete: bool,
}

impl Writer {
    /// Runs until a `Close` request arrives or every sender is gone.
    pub(crate) fn run(mut self) {
        let mut close_acks = Vec::new();
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut closing = false;
        while !closing {
            let Some(first) = self.requests.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            // Drain what has queued up meanwhile: this is what makes one sync cover many writes.
            while let Some(request) = next.take() {
                match request {
                    Request::Write { op, reply } => batch.push((op, reply)),
                    Request::Close { done } => {
                        close_acks.extend(done);
                        closing = true;
                        break;
                    }
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                next = self.requests.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
            }
        }
        // Release the segment file before acknowledging, so a reopen finds it closed.
        drop(self.wal.take());
        self.core.state.write().close_feed();
        for ack in close_acks {
            let _ = ack.send(());
        }
    }

    fn commit(&mut self, batch: Vec<(WriteOp, WriteReply)>) {
        if let Some(reason) = &self.disabled {
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::WritesDisabled(reason.clone())));
            }
            return;
        }

        let (planned, refused) = self.plan(batch);
        if planned.is_empty() {
            for (reply, error) in refused {
                let _ = reply.send(Err(error));
            }
            return;
        }

        if let Err(error) = self.persist(&planned) {
            tracing::error!(%error, "WAL write failed; refusing further writes");
            let reason = error.to_string();
            self.disabled = Some(reason.clone());
            for plan in planned {
                let _ = plan
                    .reply
                    .send(Err(StoreError::WritesDisabled(reason.clone())));
            }
            // The refusals were decided against writes that now failed, so they are stale.
            for (reply, _) in refused {
                let _ = reply.send(Err(StoreError::WritesDisabled(reason.clone())));
            }
            return;
        }

        // Durable: make the batch visible in one step, then answer.
        let committed_at = Instant::now();
        let mut replies = Vec::with_capacity(planned.len());
        {
            let mut state = self.core.state.write();
            for plan in planned {
                let answer = match state.apply(plan.rev, plan.mutation, committed_at) {
                    Ok(event) if plan.is_delete => Ok(WriteOutcome::Deleted((*event).clone())),
                    Ok(event) => Ok(WriteOutcome::Stored(event.kv.clone())),
                    Err(e) => Err(StoreError::Internal(format!(
                        "applying a planned write: {e}"
                    ))),
                };
                replies.push((plan.reply, answer));
            }
        }
        let written = replies.len() as u64;
        self.core
            .stats
            .committed_writes
            .fetch_add(written, Ordering::Relaxed);
        self.core.stats.batches.fetch_add(1, Ordering::Relaxed);
        for (reply, answer) in replies {
            let _ = reply.send(answer);
        }
        for (reply, error) in refused {
            let _ = reply.send(Err(error));
        }
        self.rotate_segment_if_full();
    }

    /// Decides every request of the batch in order, as if the earlier ones were applied.
    fn plan(
        &self,
        batch: Vec<(WriteOp, WriteReply)>,
    ) -> (Vec<Planned>, Vec<(WriteReply, StoreError)>) {
        let state = self.core.state.read();
        let mut overlay: HashMap<String, Latest> = HashMap::new();
        let mut next_rev = state.current() + 1;
        let mut planned = Vec::new();
        let mut refused = Vec::new();
        for (op, reply) in batch {
            let key = match &op {
                WriteOp::Create { key, .. }
                | WriteOp::Update { key, .. }
                | WriteOp::Delete { key, .. } => key.clone(),
            };
            let latest_of = |key: &str| match overlay.get(key) {
                Some(latest) => latest.clone(),
                None => state.latest(key),
            };
            if let WriteOp::Create {
                guard: Some(guard), ..
            } = &op
            {
                let guarded = latest_of(&guard.key);
                if guarded.as_ref().map(|kv| kv.mod_rev) != Some(guard.mod_rev) {
                    let error = StoreError::Conflict {
                        key: guard.key.clone(),
                        current: guarded,
                    };
                    refused.push((reply, error));
                    continue;
                }
            }
            let latest = latest_of(&key);
            let decision = match (op, latest) {
                (WriteOp::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists { key }),
                (WriteOp::Create { key, value, .. }, None) => {
                    Ok((Mutation::Put { key, value }, next_rev, false))
                }
                (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
                    Err(StoreError::NotFound { key })
                }
                (
                    WriteOp::Update {
                        key,
                        value,
                        expected,
                    },
                    Some(current),
                ) => {
                    if current.mod_rev == expected {
                        Ok((Mutation::Put { key, value }, current.create_rev, false))
                    } else {
                        Err(StoreError::Conflict {
                            key,
                            current: Some(current),
                        })
                    }
                }
                (WriteOp::Delete { key, expected }, Some(current)) => {
                    if expected.is_none_or(|expected| current.mod_rev == expected) {
                        Ok((Mutation::Delete { key }, current.create_rev, true))
                    } else {
                        Err(StoreError::Conflict {
                            key,
                            current: Some(current),
                        })
                    }
                }
            };
            match decision {
                Ok((mutation, create_rev, is_delete)) => {
                    let after = match &mutation {
                        Mutation::Put { key, value } => Some(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_rev,
                            mod_rev: next_rev,
                        }),
                        Mutation::Delete { .. } => None,
                    };
                    overlay.insert(mutation.key().to_owned(), after);
                    planned.push(Planned {
                        rev: next_rev,
                        mutation,
                        reply,
                        is_delete,
                    });
                    next_rev += 1;
                }
                Err(error) => refused.push((reply, error)),
            }
        }
        (planned, refused)
    }

    /// Appends the batch to the WAL and syncs it once.
    fn persist(&mut self, planned: &[Planned]) -> Result<(), DiskError> {
        let Some(wal) = &mut self.wal else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for plan in planned {
            encode_record(&mut buf, plan.rev, &plan.mutation);
        }
        wal.segment.append(&buf)?;
        wal.segment.sync()?;
        self.core.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn rotate_segment_if_full(&mut self) {
        let Some(wal) = &mut self.wal else { return };
        if wal.segment.len() < wal.segment_bytes {
            return;
        }
        let next_rev = self.core.state.read().current() + 1;
        match SegmentWriter::create(&wal.dir, next_rev) {
            Ok(segment) => {
                wal.segment = segment;
                self.core
                    .stats
                    .segments_created
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Keep appending to the full segment; the next batch tries again.
            Err(error) => tracing::warn!(%error, "cannot start a new WAL segment"),
        }
    }
}
