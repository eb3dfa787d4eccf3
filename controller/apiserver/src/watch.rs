//! Watches: newline-delimited JSON events over a long-lived response, with initial events,
//! selector transitions, bookmarks, timeouts, and "too old resource version" as an in-stream
//! 410 ERROR event (never an HTTP 410: clients only re-list on the in-stream form).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use devplane_store::{EventKind, KeyValue, Rev, StoreError, WatchItem};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::Resource;
use crate::request::Representation;
use crate::rest::{self, Listed, Request, Selectors, partial_metadata};
use crate::server::Inner;
use crate::table;

/// Watch-stream buffer between the producing task and the response body.
const CHANNEL: usize = 256;

struct Encoder {
    resource: Arc<Resource>,
    representation: Representation,
    include: table::IncludeObject,
    sent_columns: bool,
}

impl Encoder {
    /// The line of a cached event: for the full object, the one line every such watcher
    /// shares.
    fn cached_line(&mut self, kind: &'static str, decoded: &Decoded) -> Option<Bytes> {
        if self.representation != Representation::Object {
            return Some(self.line(kind, decoded.object()?.clone()));
        }
        Some(decoded.line(kind))
    }

    /// The ADDED line of an object of the initial state: for the full object, written from
    /// its stored bytes.
    fn initial_line(&mut self, item: Listed<'_>) -> ApiResult<Bytes> {
        if self.representation != Representation::Object {
            return Ok(self.line("ADDED", item.into_object()?));
        }
        let mut json = Vec::new();
        item.write_json(&mut json)?;
        Ok(event_line("ADDED", &json))
    }

    fn line(&mut self, kind: &str, object: Value) -> Bytes {
        let object = match self.representation {
            Representation::Object => object,
            Representation::Metadata => partial_metadata(&object),
            Representation::Table => {
                let rv = object::resource_version(&object)
                    .unwrap_or_default()
                    .to_string();
                let first = !self.sent_columns;
                self.sent_columns = true;
                table::table(
                    &self.resource.columns,
                    &[object],
                    self.include,
                    &rv,
                    None,
                    first,
                    jiff::Timestamp::now(),
                )
            }
        };
        let mut text = json!({"type": kind, "object": object}).to_string();
        text.push('\n');
        Bytes::from(text)
    }

    fn bookmark(&self, rev: Rev, initial_end: bool) -> Bytes {
        let (api_version, kind) = match self.representation {
            Representation::Object => (self.resource.api_version(), self.resource.kind.clone()),
            Representation::Metadata => (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            ),
            Representation::Table => ("meta.k8s.io/v1".to_string(), "Table".to_string()),
        };
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut text = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}}).to_string();
        text.push('\n');
        Bytes::from(text)
    }
}

fn expired_line(message: &str) -> Bytes {
    let status = ApiError::expired(message.to_string()).status();
    let mut text = json!({"type": "ERROR", "object": status}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// What an open watch is counted by: API group, resource (plural) and label selector.
pub type WatchKey = (String, String, String);

/// The watches open now, by [`WatchKey`] (`apiserver_registered_watchers`, with the selector).
#[derive(Default)]
pub struct OpenWatches(parking_lot::Mutex<HashMap<WatchKey, usize>>);

impl OpenWatches {
    /// Count a watch as open until the returned guard is dropped.
    fn open(self: &Arc<Self>, key: WatchKey) -> OpenWatch {
        *self.0.lock().entry(key.clone()).or_default() += 1;
        OpenWatch {
            watches: self.clone(),
            key,
        }
    }

    /// Every key with at least one open watch, sorted.
    pub fn snapshot(&self) -> Vec<(WatchKey, usize)> {
        let mut open: Vec<_> = self
            .0
            .lock()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        open.sort();
        open
    }
}

/// One open watch; dropping it closes it.
struct OpenWatch {
    watches: Arc<OpenWatches>,
    key: WatchKey,
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let mut open = self.watches.0.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serve a watch request.
pub async fn serve(
    inner: &Inner,
    req: Request,
    representation: Representation,
) -> ApiResult<Response> {
    let resource = req.resource.clone();
    let selectors = Selectors::parse(&resource, &req.query)?;
    let req_selector = req
        .query
        .get("labelSelector")
        .unwrap_or_default()
        .to_string();
    let send_initial = req.query.flag("sendInitialEvents");
    let matching = req
        .query
        .get("resourceVersionMatch")
        .filter(|m| !m.is_empty());
    match (send_initial, matching) {
        (true, Some("NotOlderThan")) | (false, None) => {}
        (true, _) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
    }
    let bookmarks = req.query.flag("allowWatchBookmarks");
    let timeout = Duration::from_secs(
        req.query
            .number("timeoutSeconds")?
            .filter(|t| *t > 0)
            .unwrap_or(1800),
    );
    let rv = req.query.get("resourceVersion").filter(|v| !v.is_empty());
    let requested: Option<Rev> = match rv {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {v:?}"))
        })?),
    };
    let mut encoder = Encoder {
        resource: resource.clone(),
        representation,
        include: table::IncludeObject::parse(req.query.get("includeObject")),
        sent_columns: false,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
    let prefix = resource.prefix(req.namespace.as_deref());

    // Initial state: for no RV or "0", and for sendInitialEvents.
    let mut start = requested.unwrap_or(0);
    let mut initial = Vec::new();
    if requested.unwrap_or(0) == 0 || send_initial {
        let mut list_req = req;
        list_req.query = crate::request::Query::parse(None)?;
        let (rev, _) = rest::list_each(inner, &list_req, &selectors, &mut |item| {
            initial.push(encoder.initial_line(item)?);
            Ok(())
        })
        .await?;
        start = rev;
    } else if let Some(r) = requested {
        let current = inner.store.current_revision().await?;
        if r > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {r}, current: {current}"
            )));
        }
    }
    // With progress: bookmarks then carry how far the whole store got, so a watcher of a quiet
    // resource resumes after writes elsewhere without a 410 and a re-list. Without selectors,
    // no event's old version is looked at (see `transition`).
    let stream = if selectors.is_empty() {
        inner
            .store
            .watch_progress_without_prev(&prefix, start)
            .await
    } else {
        inner.store.watch_progress(&prefix, start).await
    };
    let bookmark_interval = inner.config.bookmark_interval;
    let shutdown = inner.shutdown.clone();
    let cache = inner.events.clone();
    let open = inner.watches.open((
        resource.group.clone(),
        resource.plural.clone(),
        req_selector,
    ));
    tokio::spawn(async move {
        let _open = open;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_rev = start;
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(encoder.bookmark(start, true)).await.is_err() {
            return;
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                let _ = tx
                    .send(expired_line(&format!(
                        "too old resource version: {requested} ({compacted})"
                    )))
                    .await;
                return;
            }
            Err(e) => {
                let status = ApiError::from(e).status();
                let _ = tx
                    .send(Bytes::from(format!(
                        "{}\n",
                        json!({"type": "ERROR", "object": status})
                    )))
                    .await;
                return;
            }
        };
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        // As kube-apiserver does, one more bookmark shortly before the timeout, so that a
        // client with a short timeout resumes from the latest revision, not from an old one.
        let last_bookmark = tokio::time::sleep(timeout.saturating_sub(LAST_BOOKMARK_BEFORE_END));
        tokio::pin!(last_bookmark);
        let mut last_bookmark_due = bookmarks && timeout > LAST_BOOKMARK_BEFORE_END;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(encoder.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut last_bookmark, if last_bookmark_due => {
                    last_bookmark_due = false;
                    if tx.send(encoder.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => {
                    // Everything the store has ready goes out as one chunk: a burst of events
                    // costs each watcher one write, not one per event.
                    let mut chunk = Chunk::default();
                    let mut item = Some(next);
                    let mut taken = 0;
                    let mut end = None;
                    while let Some(next) = item.take() {
                        match step(next, &mut last_rev) {
                            Step::Event(event) => {
                                if let Some(line) = transition(&cache, &resource, &selectors, &event, &mut encoder) {
                                    chunk.push(line);
                                }
                            }
                            Step::Progress => {}
                            Step::End(last) => {
                                end = Some(last);
                                break;
                            }
                        }
                        taken += 1;
                        if taken < COALESCE_EVENTS && chunk.len() < COALESCE_BYTES {
                            item = stream.next().now_or_never();
                        }
                    }
                    if let Some(chunk) = chunk.take()
                        && tx.send(chunk).await.is_err()
                    {
                        return;
                    }
                    if let Some(last) = end {
                        if let Some(line) = last {
                            let _ = tx.send(line).await;
                        }
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// Events sent to a watcher in one chunk at most.
const COALESCE_EVENTS: usize = 64;
/// Bytes of events after which a chunk goes out.
const COALESCE_BYTES: usize = 64 * 1024;

/// Lines for one write to a watcher: a single line as it is (shared with the other
/// watchers), several copied together.
#[derive(Default)]
struct Chunk {
    single: Option<Bytes>,
    joined: BytesMut,
}

impl Chunk {
    fn push(&mut self, line: Bytes) {
        if self.single.is_none() && self.joined.is_empty() {
            self.single = Some(line);
            return;
        }
        if let Some(first) = self.single.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&line);
    }

    fn len(&self) -> usize {
        self.single.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    /// The lines, if any.
    fn take(self) -> Option<Bytes> {
        match self.single {
            Some(line) => Some(line),
            None if self.joined.is_empty() => None,
            None => Some(self.joined.freeze()),
        }
    }
}

/// What an item of the store's watch stream is for a client's watch.
enum Step {
    Event(devplane_store::Event),
    /// The store got this far (already recorded).
    Progress,
    /// The watch ends, with this last line for the client, if any.
    End(Option<Bytes>),
}

/// The step `next` is; progress and events move `last_rev`.
fn step(next: Option<devplane_store::Result<WatchItem>>, last_rev: &mut Rev) -> Step {
    match next {
        None => Step::End(None),
        Some(Ok(WatchItem::Event(event))) => {
            *last_rev = event.rev;
            Step::Event(event)
        }
        Some(Ok(WatchItem::Progress(rev))) => {
            *last_rev = rev;
            Step::Progress
        }
        Some(Err(StoreError::Compacted {
            requested,
            compacted,
        })) => Step::End(Some(expired_line(&format!(
            "too old resource version: {requested} ({compacted})"
        )))),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "watch stream failed");
            Step::End(None)
        }
    }
}

/// How long before its timeout a watch with bookmarks gets its last one.
const LAST_BOOKMARK_BEFORE_END: Duration = Duration::from_secs(2);

/// The watch event a store event becomes for this watcher: selectors turn updates into ADDED
/// (starts matching) or DELETED (stops matching).
fn transition(
    cache: &EventCache,
    resource: &Resource,
    selectors: &Selectors,
    event: &devplane_store::Event,
    encoder: &mut Encoder,
) -> Option<Bytes> {
    let current = cache.decoded(resource, &event.kv)?;
    // Without selectors every object matches, and the parsed object is not needed; label
    // selectors alone read only the stored labels.
    let by_labels = |stored: &KeyValue| selectors.matches_by_labels(resource, stored);
    let matches = |decoded: &Decoded| {
        selectors.is_empty()
            || by_labels(&event.kv).unwrap_or_else(|| {
                decoded
                    .object()
                    .is_some_and(|o| selectors.matches(resource, o))
            })
    };
    let kind = match event.kind {
        EventKind::Delete => matches(&current).then_some("DELETED")?,
        EventKind::Put => {
            let now = matches(&current);
            let before = if selectors.is_empty() {
                // Every version matches: what counts is whether there was one before.
                (event.kv.create_rev < event.kv.mod_rev).then_some(true)
            } else {
                event.prev.as_ref().and_then(|prev| {
                    by_labels(prev).or_else(|| {
                        let p = rest::decode(resource, prev).ok()?;
                        Some(selectors.matches(resource, &p))
                    })
                })
            };
            match (before, now) {
                (None | Some(false), true) => "ADDED",
                (Some(true), true) => "MODIFIED",
                (Some(true), false) => {
                    // It left the selection: as kube-apiserver does, the DELETED event carries
                    // its last state that matched, at this event's resourceVersion, so that
                    // a client filtering or mapping by the selector sees what it knew.
                    let prev = event.prev.as_ref()?;
                    let last = KeyValue {
                        mod_rev: event.kv.mod_rev,
                        ..prev.clone()
                    };
                    let object = rest::decode(resource, &last).ok()?;
                    return Some(encoder.line("DELETED", object));
                }
                (_, false) => return None,
            }
        }
    };
    encoder.cached_line(kind, &current)
}

/// A store event's object in a resource's view, its JSON written once from the stored bytes
/// (see [`rest::view_json`]) and shared by every watcher of that resource.
///
/// The cache keeps only the JSON: a parsed object costs several times its JSON in memory,
/// and watchers of full objects without selectors — most of them — never look at it.
pub struct Decoded {
    /// The object's JSON.
    json: Vec<u8>,
    /// The object, parsed from `json` when a watcher first needs it (selectors, other views).
    object: OnceLock<Option<Value>>,
    /// The event line of each type (see [`EVENT_TYPES`]), built when first sent and shared.
    lines: [OnceLock<Bytes>; 3],
}

/// The event types a cached object is sent as, in the order of [`Decoded::lines`].
const EVENT_TYPES: [&str; 3] = ["ADDED", "MODIFIED", "DELETED"];

impl Decoded {
    /// The object whose JSON in the resource's view is `json`.
    fn new(json: Vec<u8>) -> Decoded {
        Decoded {
            json,
            object: OnceLock::new(),
            lines: Default::default(),
        }
    }

    /// The object, parsed once on first use; `None` if it does not parse (never expected:
    /// the JSON is that of a stored object).
    pub fn object(&self) -> Option<&Value> {
        self.object
            .get_or_init(|| serde_json::from_slice(&self.json).ok())
            .as_ref()
    }

    /// The watch event line `{"type":kind,"object":…}` for a full-object watcher.
    fn line(&self, kind: &'static str) -> Bytes {
        let Some(slot) = EVENT_TYPES.iter().position(|t| *t == kind) else {
            return event_line(kind, &self.json);
        };
        self.lines[slot]
            .get_or_init(|| event_line(kind, &self.json))
            .clone()
    }
}

/// `{"type":kind,"object":json}` and a newline, in one allocation of its exact size.
fn event_line(kind: &str, json: &[u8]) -> Bytes {
    let parts = [
        b"{\"type\":\"".as_slice(),
        kind.as_bytes(),
        b"\",\"object\":",
        json,
        b"}\n",
    ];
    let mut text = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        text.extend_from_slice(part);
    }
    Bytes::from(text)
}

/// Decoded events by (resource view, revision), and their insertion order for eviction.
type CacheEntries = (
    HashMap<(String, Rev), Arc<Decoded>>,
    VecDeque<(String, Rev)>,
);

/// Recently decoded watch events, by resource view and revision.
pub struct EventCache {
    entries: parking_lot::Mutex<CacheEntries>,
    /// Who writes the store the events come from.
    writers: rest::Writers,
}

/// Entries the cache keeps (a little more than the burst a fast writer produces between two
/// polls of a watcher).
const EVENT_CACHE_CAPACITY: usize = 1024;

impl EventCache {
    /// An empty cache of the events of a store with these writers.
    pub fn new(writers: rest::Writers) -> Self {
        EventCache {
            entries: parking_lot::Mutex::default(),
            writers,
        }
    }

    fn decoded(&self, resource: &Resource, kv: &devplane_store::KeyValue) -> Option<Arc<Decoded>> {
        let key = (
            format!("{}/{}", resource.api_version(), resource.kind),
            kv.mod_rev,
        );
        if let Some(hit) = self.entries.lock().0.get(&key) {
            return Some(hit.clone());
        }
        let decoded = Arc::new(Decoded::new(
            rest::view_json(resource, kv, self.writers).ok()?,
        ));
        let mut guard = self.entries.lock();
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), decoded.clone()).is_none() {
            order.push_back(key);
            while order.len() > EVENT_CACHE_CAPACITY {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Some(decoded)
    }
}

#[cfg(test)]
mod tests;
