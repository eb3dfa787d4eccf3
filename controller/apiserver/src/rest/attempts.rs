//! The attempts of a read-modify-write: which state each starts from, and which outcomes
//! are final.
//!
//! The first attempt starts from what the store remembers of the object
//! ([`Store::recent`](devplane_store::Store::recent)), sparing a read when this process
//! wrote or read it lately (over etcd, a round trip). That state may be stale, so:
//! * a write decided on it is safe: the store's revision compare refuses a stale one, and
//!   the refusal carries the current state, which the next attempt starts from, unread;
//! * any other outcome (a refusal, a no-op, a failed precondition, "not found") counts only
//!   when decided on a state read from the store; otherwise the attempt is made again after
//!   a read. kube-apiserver's GuaranteedUpdate treats a state from its watch cache alike.

use devplane_store::{KeyValue, Recent, Rev};
use serde_json::Value;

use super::codec::decode;
use super::write::{UpdateError, Written};
use crate::error::ApiResult;
use crate::registry::Resource;
use crate::server::Inner;

/// The object as an attempt sees it (`None`: it does not exist) and its revision.
pub type Current = Option<(Value, Rev)>;

/// How one attempt ended.
pub enum Outcome<T> {
    /// The store took the write: final, whatever state the attempt started from.
    Committed(T),
    /// Decided without a write: final when the state it was decided on was read from the
    /// store.
    Decided(ApiResult<T>),
    /// Lost a race; the store reported its current state (`None`: the object is gone).
    Conflict(Option<KeyValue>),
    /// Lost a race without learning the current state (a create found the object there).
    Raced,
}

impl<T> Outcome<T> {
    /// The same outcome with its value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Committed(value) => Outcome::Committed(f(value)),
            Outcome::Decided(result) => Outcome::Decided(result.map(f)),
            Outcome::Conflict(current) => Outcome::Conflict(current),
            Outcome::Raced => Outcome::Raced,
        }
    }
}

impl From<Result<Written, UpdateError>> for Outcome<Written> {
    fn from(result: Result<Written, UpdateError>) -> Self {
        match result {
            Ok(written) if written.persisted => Outcome::Committed(written),
            Ok(written) => Outcome::Decided(Ok(written)),
            Err(UpdateError::Conflict(current)) => Outcome::Conflict(current),
            Err(UpdateError::Api(e)) => Outcome::Decided(Err(e)),
        }
    }
}

/// Where the next attempt takes the object's state from.
enum Basis {
    /// The store's memory, else the store.
    Recent,
    /// The store.
    Store,
    /// What a lost race reported.
    Reported(Option<KeyValue>),
}

/// The attempts of one read-modify-write.
pub struct Attempts {
    basis: Basis,
    left: usize,
    /// Whether the current attempt's state was read from the store (or reported by it).
    confirmed: bool,
}

impl Attempts {
    /// At most `max` attempts, the first from the store's memory.
    pub fn new(max: usize) -> Attempts {
        Attempts {
            basis: Basis::Recent,
            left: max,
            confirmed: false,
        }
    }

    /// The state the next attempt starts from; `None` once the attempts are used up.
    pub async fn next(
        &mut self,
        inner: &Inner,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<Current>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.confirmed = true;
        let current = match std::mem::replace(&mut self.basis, Basis::Store) {
            Basis::Reported(Some(kv)) => Some((decode(resource, &kv)?, kv.mod_rev)),
            Basis::Reported(None) => None,
            Basis::Recent => match inner.store.recent(&resource.key(namespace, name)) {
                Some(Recent::Value(kv)) => {
                    self.confirmed = false;
                    Some((decode(resource, &kv)?, kv.mod_rev))
                }
                Some(Recent::Absent) => {
                    self.confirmed = false;
                    None
                }
                None => inner.read(resource, namespace, name).await?,
            },
            Basis::Store => inner.read(resource, namespace, name).await?,
        };
        Ok(Some(current))
    }

    /// The answer if `outcome` ends the read-modify-write, or `None` to attempt again.
    pub fn settle<T>(&mut self, outcome: Outcome<T>) -> Option<ApiResult<T>> {
        match outcome {
            Outcome::Committed(value) => Some(Ok(value)),
            Outcome::Conflict(current) => {
                self.basis = Basis::Reported(current);
                None
            }
            Outcome::Raced => {
                self.basis = Basis::Recent;
                None
            }
            Outcome::Decided(result) if self.confirmed => Some(result),
            Outcome::Decided(_) => {
                self.basis = Basis::Store;
                None
            }
        }
    }
}
