//! The etcd v3 backend.
//!
//! Keys live under `<prefix>/` (default prefix `/devplane`, so key `k` is stored as
//! `/devplane/k`). The mapping follows kube-apiserver's use of etcd: writes are
//! compare-and-swap transactions, a list's revision is the response header's, watches carry
//! `prev_kv`. One difference: concurrent creates and updates share transactions ([`batch`]), so a store
//! revision is etcd's revision scaled, plus the write's position in it ([`revs`]); a key's
//! `mod_rev` still identifies its etcd `mod_revision`.
//!
//! Compaction is shifted by one etcd revision so that this backend behaves exactly like the
//! embedded one: `compact(c)` compacts etcd at the etcd revision before `c`'s. etcd keeps the
//! newest version at or below its compaction revision, so the `prev` value of the events at
//! `c` stays readable, and a watch resuming at `after = c - 1` gets those events complete.
//! Revisions start low in a fresh etcd and also move when anything else writes to the same
//! etcd cluster.
//!
//! Every request is a round trip, so the store remembers (boundedly, see [`recent`]) what it
//! last read or wrote of each key: [`Store::recent`] answers from that memory, and an update
//! whose expected revision matches it needs no `prev_kv` to learn the key's `create_rev`.

mod batch;
mod hub;
mod recent;
mod revs;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use self::recent::RecentValues;
use crate::{
    Event, EventKind, Guard, KeyValue, ListOptions, ListPage, ProgressStream, Recent, Result, Rev,
    Store, StoreError, WatchStream, validate_key, validate_list_options,
};

/// A failure talking to etcd, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client could not be set up.
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// etcd did not answer the first request in time.
    #[error("etcd at {endpoints} did not answer within {timeout:?}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// How long the store waited.
        timeout: Duration,
    },
    /// A request failed.
    #[error("etcd {operation} failed: {source}")]
    Request {
        /// What the store was doing.
        operation: &'static str,
        /// The client error.
        source: etcd_client::Error,
    },
    /// etcd answered something the store cannot interpret.
    #[error("etcd {operation} returned an unexpected response: {detail}")]
    UnexpectedResponse {
        /// What the store was doing.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// How long [`EtcdStore::connect`] waits for etcd to answer.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The etcd backend. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The key prefix, ending in `/`.
    root: String,
    endpoints: String,
    /// The highest compacted revision (in this crate's terms) known to this process; etcd
    /// has no call that reports it, so it is learned from our own compactions and probes.
    known_compacted: Arc<AtomicU64>,
    /// What this process last saw of each key.
    recent: Arc<RecentValues>,
    /// Key-value requests sent (reads, transactions, compactions; not watches).
    requests: Arc<AtomicU64>,
    /// The queue of creates and updates committed together; `None` in the clone that
    /// commits them.
    writes: Option<batch::Writes>,
    /// The shared etcd watches.
    hubs: Arc<hub::Hubs>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn request_error(operation: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |source| EtcdError::Request { operation, source }.into()
}

fn unexpected(operation: &'static str, detail: impl Into<String>) -> StoreError {
    EtcdError::UnexpectedResponse {
        operation,
        detail: detail.into(),
    }
    .into()
}

/// etcd's answer to a read at a revision it cannot serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RevisionRefusal {
    Compacted,
    Future,
}

fn revision_refusal(error: &etcd_client::Error) -> Option<RevisionRefusal> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    let message = status.message();
    if message.contains("required revision has been compacted") {
        Some(RevisionRefusal::Compacted)
    } else if message.contains("required revision is a future revision") {
        Some(RevisionRefusal::Future)
    } else {
        None
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): no upper bound; "\0" means "to the end of the keyspace".
    vec![0]
}

fn header_rev(
    header: Option<&etcd_client::ResponseHeader>,
    operation: &'static str,
) -> Result<Rev> {
    header
        .map(|h| revs::through(h.revision()))
        .ok_or_else(|| unexpected(operation, "response has no header"))
}

/// How long a watch waits for etcd before asking how far etcd got, so a watcher of a quiet
/// prefix learns of writes elsewhere (its bookmarks carry them).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Keys per etcd range request when listing.
const ETCD_LIST_CHUNK: usize = 500;

/// Whether an etcd error says a response was larger than the client accepts.
fn is_too_large(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("message length too large")
        || text.contains("larger than max")
        || text.contains("OutOfRange")
}

impl EtcdStore {
    /// Connects to etcd (`endpoints` like `http://host:2379`) and checks that it answers.
    /// Keys are stored under `prefix` followed by `/`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "no etcd endpoints given".into(),
            ));
        }
        let endpoint_list = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|source| EtcdError::Connect {
                endpoints: endpoint_list.clone(),
                source,
            })?;
        let mut store = EtcdStore {
            client,
            root: format!("{}/", prefix.trim_end_matches('/')),
            endpoints: endpoint_list.clone(),
            known_compacted: Arc::new(AtomicU64::new(0)),
            recent: Arc::new(RecentValues::new(recent::MAX_ENTRIES, recent::MAX_BYTES)),
            requests: Arc::new(AtomicU64::new(0)),
            writes: None,
            hubs: Arc::default(),
        };
        store.writes = Some(batch::Writes::start(store.clone()));
        // Connecting is lazy; fail here rather than on the first real request.
        match tokio::time::timeout(CONNECT_CHECK_TIMEOUT, store.current_revision()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(StoreError::Etcd(EtcdError::Request { source, .. }))) => {
                Err(EtcdError::Connect {
                    endpoints: endpoint_list,
                    source,
                }
                .into())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(EtcdError::Unreachable {
                endpoints: endpoint_list,
                timeout: CONNECT_CHECK_TIMEOUT,
            }
            .into()),
        }
    }

    /// The etcd key prefix of this store (ends in `/`).
    pub fn key_prefix(&self) -> &str {
        &self.root
    }

    /// Key-value requests (reads, transactions, compactions; not watches) this store and its
    /// clones have sent: each is a round trip to etcd.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The key-value client, counting the request about to be made.
    fn kv(&self) -> etcd_client::KvClient {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.client.kv_client()
    }

    /// Remembers `current` (the value of `key`, or its absence) as seen at revision `seen_at`.
    fn remember(&self, key: &str, current: Option<&KeyValue>, seen_at: Rev) {
        let recent = match current {
            Some(kv) => Recent::Value(kv.clone()),
            None => Recent::Absent,
        };
        self.recent.remember(key, recent, seen_at);
    }

    /// A create transaction, with an optional guard (see [`Store::create_guarded`]), alone in
    /// its etcd revision.
    async fn create_txn(&self, key: &str, value: Bytes, guard: Option<&Guard>) -> Result<KeyValue> {
        let txn = self.create_request(key, &value, guard, revs::LAST)?;
        let response = self.kv().txn(txn).await.map_err(request_error("create"))?;
        let rev = header_rev(response.header(), "create")?;
        if !response.succeeded() {
            return Err(self.create_refusal(key, guard, response.op_responses(), rev)?);
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_rev: rev,
            mod_rev: rev,
        };
        self.remember(key, Some(&kv), rev);
        Ok(kv)
    }

    /// The transaction of a create at `position` in its etcd revision: put if the key is
    /// absent (and the guard's key unchanged). Otherwise the `else` branch reads the guard's
    /// key and the key, so the error carries what is stored now and no second round trip is
    /// needed to learn it.
    fn create_request(
        &self,
        key: &str,
        value: &[u8],
        guard: Option<&Guard>,
        position: u64,
    ) -> Result<Txn> {
        validate_key(key)?;
        let full = self.full_key(key);
        let mut compares = Vec::new();
        let mut otherwise = Vec::new();
        if let Some(guard) = guard {
            validate_key(&guard.key)?;
            let guard_full = self.full_key(&guard.key);
            compares.extend(same_revision(&guard_full, guard.mod_rev));
            otherwise.push(TxnOp::get(guard_full, None));
        }
        compares.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0));
        otherwise.push(TxnOp::get(full.clone(), None));
        Ok(Txn::new()
            .when(compares)
            .and_then([TxnOp::put(full, revs::seal(value, position), None)])
            .or_else(otherwise))
    }

    /// Why a create transaction failed, from the values its `else` branch read at `rev`.
    fn create_refusal(
        &self,
        key: &str,
        guard: Option<&Guard>,
        responses: Vec<TxnOpResponse>,
        rev: Rev,
    ) -> Result<StoreError> {
        let mut current = responses
            .into_iter()
            .map(|response| current_from_else_branch(&self.root, vec![response], "create"));
        if let Some(guard) = guard {
            let guarded = current
                .next()
                .transpose()?
                .ok_or_else(|| unexpected("create", "the guard's value was not read"))?;
            self.remember(&guard.key, guarded.as_ref(), rev);
            if guarded.as_ref().map(|kv| kv.mod_rev) != Some(guard.mod_rev) {
                return Ok(StoreError::Conflict {
                    key: guard.key.clone(),
                    current: guarded,
                });
            }
        }
        if let Some(existing) = current.next().transpose()? {
            self.remember(key, existing.as_ref(), rev);
        }
        Ok(StoreError::AlreadyExists {
            key: key.to_owned(),
        })
    }

    /// A create, committed with whatever other writes are ready (see [`batch`]).
    async fn create_queued(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<&Guard>,
    ) -> Result<KeyValue> {
        validate_key(key)?;
        match &self.writes {
            Some(writes) => writes.create(key, value, guard).await,
            None => self.create_txn(key, value, guard).await,
        }
    }

    /// An update transaction, alone in its etcd revision.
    async fn update_txn(&self, key: &str, value: Bytes, expected_mod_rev: Rev) -> Result<KeyValue> {
        let (txn, known_create_rev) =
            self.update_request(key, &value, expected_mod_rev, revs::LAST)?;
        let response = self.kv().txn(txn).await.map_err(request_error("update"))?;
        let rev = header_rev(response.header(), "update")?;
        let answer = (response.succeeded(), response.op_responses());
        self.update_outcome(key, value, known_create_rev, answer, rev, rev)
    }

    /// The transaction of an update at `position` in its etcd revision: put if the key is
    /// still at `expected_mod_rev`, else read it, so a conflict carries what is stored now.
    /// Also the key's `create_rev` if this process knows it for that revision; otherwise the
    /// put asks for the previous value, which carries it.
    fn update_request(
        &self,
        key: &str,
        value: &[u8],
        expected_mod_rev: Rev,
        position: u64,
    ) -> Result<(Txn, Option<Rev>)> {
        validate_key(key)?;
        let full = self.full_key(key);
        // A matching mod_rev means the same incarnation, so a remembered create_rev for that
        // revision is the key's; otherwise etcd returns it with the previous value.
        let known_create_rev = self.recent.create_rev_at(key, expected_mod_rev);
        let put_options = known_create_rev
            .is_none()
            .then(|| PutOptions::new().with_prev_key());
        let txn = Txn::new()
            .when(same_revision(&full, expected_mod_rev))
            .and_then([TxnOp::put(
                full.clone(),
                revs::seal(value, position),
                put_options,
            )])
            .or_else([TxnOp::get(full, None)]);
        Ok((txn, known_create_rev))
    }

    /// What an update transaction did, from etcd's answer (whether it succeeded, and its
    /// operations' responses): the key as written at `rev`, or why not. `seen_at` is the
    /// revision the answer was read at.
    fn update_outcome(
        &self,
        key: &str,
        value: Bytes,
        known_create_rev: Option<Rev>,
        (succeeded, responses): (bool, Vec<TxnOpResponse>),
        rev: Rev,
        seen_at: Rev,
    ) -> Result<KeyValue> {
        if !succeeded {
            return Err(self.stale_refusal(key, responses, seen_at, "update")?);
        }
        // No longer the key's latest write, the creation is named by its whole etcd revision
        // (see `to_key_value`).
        let create_rev = match known_create_rev {
            Some(create_rev) => Some(revs::through(revs::etcd(create_rev))),
            None => match responses.into_iter().next() {
                Some(TxnOpResponse::Put(put)) => put
                    .prev_key()
                    .map(|prev| revs::through(prev.create_revision())),
                _ => None,
            },
        }
        .ok_or_else(|| unexpected("update", "the put did not return the previous value"))?;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_rev,
            mod_rev: rev,
        };
        self.remember(key, Some(&kv), seen_at);
        Ok(kv)
    }

    /// Why a write conditional on `key`'s revision failed, from the value its `else` branch
    /// read at `rev`: the key is gone, or it is at another revision (which is remembered).
    fn stale_refusal(
        &self,
        key: &str,
        responses: Vec<TxnOpResponse>,
        rev: Rev,
        operation: &'static str,
    ) -> Result<StoreError> {
        let current = current_from_else_branch(&self.root, responses, operation)?;
        self.remember(key, current.as_ref(), rev);
        let key = key.to_owned();
        Ok(match current {
            None => StoreError::NotFound { key },
            Some(current) => StoreError::Conflict {
                key,
                current: Some(current),
            },
        })
    }

    /// The value `key` had at etcd revision `etcd_rev`, as read by a list at a revision
    /// inside a batch that later updated the key.
    async fn value_at(&self, key: &str, etcd_rev: i64) -> Result<Option<KeyValue>> {
        let options = GetOptions::new().with_revision(etcd_rev);
        let response = self
            .kv()
            .get(self.full_key(key), Some(options))
            .await
            .map_err(request_error("list"))?;
        response
            .kvs()
            .first()
            .map(|kv| self.to_key_value(kv, "list"))
            .transpose()
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn to_key_value(
        &self,
        kv: &etcd_client::KeyValue,
        operation: &'static str,
    ) -> Result<KeyValue> {
        to_key_value(&self.root, kv, operation)
    }

    /// Whether etcd can still read at its revision `etcd_rev` (etcd refuses revisions below
    /// its compaction).
    async fn readable_at(&self, etcd_rev: i64) -> Result<bool> {
        let options = GetOptions::new().with_revision(etcd_rev).with_count_only();
        match self.kv().get(self.root.clone(), Some(options)).await {
            Ok(_) => Ok(true),
            Err(error) => match revision_refusal(&error) {
                Some(RevisionRefusal::Compacted) => Ok(false),
                Some(RevisionRefusal::Future) => Ok(true),
                None => Err(request_error("compaction probe")(error)),
            },
        }
    }

    /// Finds the compacted revision by probing, starting from what is already known.
    async fn probe_compacted(&self) -> Result<Rev> {
        let known = self.known_compacted.load(Ordering::SeqCst);
        let current = self.current_revision().await?;
        let current_etcd = revs::etcd(current);
        // etcd compacted at `c` reports `revs::compacted(c)`; the revision below is the
        // first one that may have become unreadable since.
        let guess = (revs::etcd(known) - 1).max(1);
        if guess >= current_etcd || self.readable_at(guess).await? {
            return Ok(known);
        }
        // `guess` is unreadable and the current revision is readable: binary search for the
        // smallest readable revision, which is etcd's compaction revision.
        let (mut unreadable, mut readable) = (guess, current_etcd);
        while readable - unreadable > 1 {
            let middle = unreadable + (readable - unreadable) / 2;
            if self.readable_at(middle).await? {
                readable = middle;
            } else {
                unreadable = middle;
            }
        }
        // Someone else may have compacted etcd at its current revision; the current revision
        // must stay readable, so the reported value never exceeds it.
        let compacted = revs::compacted(readable).min(current);
        self.known_compacted.fetch_max(compacted, Ordering::SeqCst);
        Ok(self.known_compacted.load(Ordering::SeqCst))
    }

    /// A watch of `prefix` after `after`; with `with_prev`, etcd sends every event's previous
    /// value, which costs it a read per update and watcher.
    async fn open_watch(
        &self,
        prefix: &str,
        after: Rev,
        with_prev: bool,
    ) -> Result<ProgressStream> {
        let current = self.current_revision().await?;
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        let known = self.known_compacted.load(Ordering::SeqCst);
        if after < known.saturating_sub(1) {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: known,
            });
        }
        // etcd only reports a compacted start revision asynchronously, inside the stream;
        // check first so the caller gets the error at once. etcd revision `e` is readable
        // exactly when etcd compacted at or below it.
        let etcd_after = revs::watched_after(after);
        let refused = if etcd_after == 0 {
            self.probe_compacted().await? > revs::compacted(0)
        } else {
            !self.readable_at(etcd_after).await?
        };
        if refused {
            return Err(self.compacted_error(after).await);
        }
        let mut options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(etcd_after + 1);
        if with_prev {
            options = options.with_prev_key();
        }
        let stream = self
            .client
            .watch_client()
            .watch(self.full_key(prefix), Some(options))
            .await
            .map_err(request_error("watch"))?;
        // Without prev_kv, etcd's delete events carry no value: it is read separately.
        let lookup = (!with_prev).then(|| self.clone());
        Ok(watch::EtcdWatch::new(stream, self, after, lookup).into_stream())
    }

    /// The value `key` (as etcd names it) had just before revision `rev`, for a delete event
    /// that came without it; `None` if etcd no longer has it.
    async fn value_before(&self, key: &[u8], rev: Rev) -> Result<Option<KeyValue>> {
        let options = GetOptions::new().with_revision((revs::etcd(rev) - 1).max(1));
        match self.kv().get(key.to_vec(), Some(options)).await {
            Ok(response) => response
                .kvs()
                .first()
                .map(|kv| self.to_key_value(kv, "watch"))
                .transpose(),
            Err(error) if revision_refusal(&error).is_some() => Ok(None),
            Err(error) => Err(request_error("watch")(error)),
        }
    }

    /// The error for a read at `requested` that etcd refused as compacted.
    async fn compacted_error(&self, requested: Rev) -> StoreError {
        match self.probe_compacted().await {
            Ok(compacted) => StoreError::Compacted {
                requested,
                compacted: compacted.max(requested + 1),
            },
            Err(error) => error,
        }
    }

    /// The error for a read at `requested` that etcd refused as being in the future.
    async fn future_error(&self, requested: Rev) -> StoreError {
        match self.current_revision().await {
            Ok(current) => StoreError::FutureRevision { requested, current },
            Err(error) => error,
        }
    }
}

fn to_key_value(
    root: &str,
    kv: &etcd_client::KeyValue,
    operation: &'static str,
) -> Result<KeyValue> {
    let Some(key) = kv.key().strip_prefix(root.as_bytes()) else {
        return Err(unexpected(operation, "a key outside the store prefix"));
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return Err(unexpected(
            operation,
            format!("key {:?} is not UTF-8", String::from_utf8_lossy(kv.key())),
        ));
    };
    let Ok((position, value)) = revs::open(kv.value()) else {
        return Err(unexpected(
            operation,
            format!("the value of {key:?} has a malformed revision envelope"),
        ));
    };
    let mod_rev = revs::at(kv.mod_revision(), position);
    // A key's creating write is known exactly while it is the key's latest write; after an
    // update, the creation is named by its whole etcd revision.
    let create_rev = match kv.create_revision() {
        0 => 0,
        created if created == kv.mod_revision() => mod_rev,
        created => revs::through(created),
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value),
        create_rev,
        mod_rev,
    })
}

/// Compares that hold when `key` exists at `mod_rev`. A missing key's mod_revision is 0, so
/// for any other revision one compare suffices (each compare is a read in etcd); for 0 the
/// existence check keeps a missing key from matching.
fn same_revision(key: &str, mod_rev: Rev) -> Vec<Compare> {
    // A key is written at most once per etcd revision, so its etcd revision identifies the
    // version.
    let same = Compare::mod_revision(key, CompareOp::Equal, revs::etcd(mod_rev));
    if mod_rev == 0 {
        vec![Compare::version(key, CompareOp::Greater, 0), same]
    } else {
        vec![same]
    }
}

/// The key-values of the `else` branch's get, i.e. what is stored now.
fn current_from_else_branch(
    root: &str,
    responses: Vec<TxnOpResponse>,
    operation: &'static str,
) -> Result<Option<KeyValue>> {
    match responses.into_iter().next() {
        Some(TxnOpResponse::Get(get)) => get
            .kvs()
            .first()
            .map(|kv| to_key_value(root, kv, operation))
            .transpose(),
        _ => Err(unexpected(
            operation,
            "the failure branch did not return the current value",
        )),
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let response = self
            .kv()
            .get(self.full_key(key), None)
            .await
            .map_err(request_error("get"))?;
        let current = response
            .kvs()
            .first()
            .map(|kv| self.to_key_value(kv, "get"))
            .transpose()?;
        self.remember(key, current.as_ref(), header_rev(response.header(), "get")?);
        Ok(current)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.create_queued(key, value, None).await
    }

    async fn create_guarded(&self, key: &str, value: Bytes, guard: &Guard) -> Result<KeyValue> {
        self.create_queued(key, value, Some(guard)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_rev: Rev) -> Result<KeyValue> {
        validate_key(key)?;
        match &self.writes {
            Some(writes) => writes.update(key, value, expected_mod_rev).await,
            None => self.update_txn(key, value, expected_mod_rev).await,
        }
    }

    async fn delete(&self, key: &str, expected_mod_rev: Option<Rev>) -> Result<Event> {
        validate_key(key)?;
        let full = self.full_key(key);
        let compares = match expected_mod_rev {
            Some(expected) => same_revision(&full, expected),
            None => vec![Compare::version(full.clone(), CompareOp::Greater, 0)],
        };
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.kv().txn(txn).await.map_err(request_error("delete"))?;
        let rev = header_rev(response.header(), "delete")?;
        if !response.succeeded() {
            return Err(self.stale_refusal(key, response.op_responses(), rev, "delete")?);
        }
        self.remember(key, None, rev);
        let prev = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(deleted)) => deleted
                .prev_kvs()
                .first()
                .map(|kv| self.to_key_value(kv, "delete"))
                .transpose()?,
            _ => None,
        }
        .ok_or_else(|| unexpected("delete", "the delete did not return the previous value"))?;
        Ok(Event {
            kind: EventKind::Delete,
            rev,
            kv: KeyValue {
                mod_rev: rev,
                ..prev.clone()
            },
            prev: Some(prev),
        })
    }

    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        validate_list_options(&opts)?;
        let known = self.known_compacted.load(Ordering::SeqCst);
        match opts.rev {
            Some(rev) if rev < known => {
                return Err(StoreError::Compacted {
                    requested: rev,
                    compacted: known,
                });
            }
            // etcd has no revision 0 (it reads "latest" instead); the state at 0 is empty.
            Some(rev) if revs::etcd(rev) == 0 => {
                let compacted = self.probe_compacted().await?;
                if compacted > 0 {
                    return Err(StoreError::Compacted {
                        requested: 0,
                        compacted,
                    });
                }
                return Ok(ListPage {
                    items: Vec::new(),
                    rev,
                    more: false,
                });
            }
            _ => {}
        }
        let range_start = match &opts.start_after {
            Some(after) if after.as_str() >= opts.prefix.as_str() => {
                // The smallest key after `after`.
                format!("{}{after}\0", self.root)
            }
            _ => self.full_key(&opts.prefix),
        };
        let range_end = prefix_end(self.full_key(&opts.prefix).as_bytes());
        if range_start.as_bytes() >= range_end.as_slice() {
            let rev = match opts.rev {
                Some(rev) => rev,
                None => self.current_revision().await?,
            };
            return Ok(ListPage {
                items: Vec::new(),
                rev,
                more: false,
            });
        }
        // Read in chunks: etcd's gRPC responses are capped (4 MiB by default), so one range
        // over thousands of objects would fail. Every chunk reads at the first chunk's
        // revision, so the result is one consistent list.
        let wanted = opts.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut rev = opts.rev;
        let mut start = range_start;
        let mut more = false;
        let mut chunk = ETCD_LIST_CHUNK;
        while items.len() < wanted {
            let take = chunk.min(wanted - items.len());
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(take as i64);
            if let Some(rev) = rev {
                options = options.with_revision(revs::etcd(rev));
            }
            let response = match self.kv().get(start.clone(), Some(options)).await {
                Ok(response) => response,
                // A chunk of large values can still be too big: read fewer at a time.
                Err(error) if chunk > 1 && is_too_large(&error) => {
                    chunk = (chunk / 4).max(1);
                    continue;
                }
                Err(error) => {
                    return Err(match (revision_refusal(&error), rev) {
                        (Some(RevisionRefusal::Compacted), Some(rev)) => {
                            self.compacted_error(rev).await
                        }
                        (Some(RevisionRefusal::Future), Some(rev)) => self.future_error(rev).await,
                        _ => request_error("list")(error),
                    });
                }
            };
            if rev.is_none() {
                rev = Some(header_rev(response.header(), "list")?);
            }
            for kv in response.kvs() {
                let kv = self.to_key_value(kv, "list")?;
                match rev {
                    // Read at a revision inside a batch, etcd's revision also holds the
                    // batch's later writes. A key a later write created did not exist yet; one
                    // it updated (created in an earlier etcd revision) had the value it had
                    // before the batch.
                    Some(rev) if kv.mod_rev > rev => {
                        if revs::etcd(kv.create_rev) < revs::etcd(rev)
                            && let Some(before) =
                                self.value_at(&kv.key, revs::etcd(rev) - 1).await?
                        {
                            items.push(before);
                        }
                    }
                    _ => items.push(kv),
                }
            }
            more = response.more();
            match response.kvs().last() {
                Some(last) if more => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    start = String::from_utf8(next).map_err(|_| {
                        StoreError::Internal("etcd returned a key that is not UTF-8".into())
                    })?;
                }
                _ => break,
            }
        }
        let rev = match rev {
            Some(rev) => rev,
            None => self.current_revision().await?,
        };
        Ok(ListPage { items, rev, more })
    }

    async fn watch(&self, prefix: &str, after: Rev) -> Result<WatchStream> {
        Ok(crate::events_only(
            self.hubs.watch(self, prefix, after, true).await?,
        ))
    }

    async fn watch_progress(&self, prefix: &str, after: Rev) -> Result<ProgressStream> {
        self.hubs.watch(self, prefix, after, true).await
    }

    async fn watch_progress_without_prev(
        &self,
        prefix: &str,
        after: Rev,
    ) -> Result<ProgressStream> {
        self.hubs.watch(self, prefix, after, false).await
    }

    fn recent(&self, key: &str) -> Option<Recent> {
        self.recent.get(key)
    }

    async fn current_revision(&self) -> Result<Rev> {
        let options = GetOptions::new().with_count_only();
        let response = self
            .kv()
            .get(self.root.clone(), Some(options))
            .await
            .map_err(request_error("revision read"))?;
        header_rev(response.header(), "revision read")
    }

    async fn revision_writes_ago(&self, writes: u64) -> Result<Rev> {
        // Every etcd revision holds at least one write.
        let current = revs::etcd(self.current_revision().await?);
        let writes = i64::try_from(writes).unwrap_or(i64::MAX);
        Ok(revs::through(current.saturating_sub(writes).max(0)))
    }

    async fn compacted_revision(&self) -> Result<Rev> {
        self.probe_compacted().await
    }

    async fn compact(&self, rev: Rev) -> Result<()> {
        let current = self.current_revision().await?;
        if rev > current {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current,
            });
        }
        if rev <= self.known_compacted.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Keep etcd's revision before `rev` readable: it holds the previous values of the
        // events of `rev`'s etcd revision.
        let etcd_rev = revs::etcd(rev) - 1;
        if etcd_rev >= 1 {
            match self.kv().compact(etcd_rev, None).await {
                Ok(_) => {}
                // Already compacted further (by us earlier or by someone else).
                Err(error) if revision_refusal(&error) == Some(RevisionRefusal::Compacted) => {}
                Err(error) => return Err(request_error("compact")(error)),
            }
        }
        self.known_compacted.fetch_max(rev, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/devplane/"), b"/devplane0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
