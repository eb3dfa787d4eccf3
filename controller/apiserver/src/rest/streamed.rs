//! A list of full objects, written into the response as it is read.
//!
//! The objects are read a page at a time (see [`list_pages`]) on a task of their own. A list
//! whose text fits in its first chunk ([`FIRST_CHUNK`]) is answered whole, with its length. A
//! longer one is sent in chunks as it is written, and a chunk is written only once the client
//! has taken the one before, so a list of 100,000 objects holds a few hundred KiB of its
//! response at a time instead of all 105 MiB, and the transfer runs beside the writing.
//!
//! A chunk goes as soon as it is written, not at the end of a page, and the first one is
//! small: the client reads nothing while the first chunk is written, and the server writes
//! nothing while the client reads the last, so a list takes about one chunk's time more than
//! its writing or its reading alone. With chunks of a page (1,000 objects, about 1.1 MiB), that
//! was a seventh of the time of a list of 6,000 objects, so that sixteen lists of a sixteenth
//! of the objects took longer than one full list even where they read the same objects in the
//! same order (`docs/benchmarks.md`).
//! The envelope's metadata comes last in the text (JSON objects are unordered), once the
//! revision and the continue token are known.
//!
//! The first chunk decides the status: an error before it (an expired continue token, a
//! store that cannot answer) is answered as that error. An error after it breaks the response
//! off, so the client sees an incomplete body, never a short list that looks whole (as with
//! kube-apiserver's streaming list encoder).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Request;
use super::list::{ListSink, Listed, Selectors, list_pages};
use crate::error::{ApiError, ApiResult};
use crate::request;
use crate::server::Inner;

/// Bytes of response written before they are handed to the client.
const CHUNK: usize = 256 * 1024;

/// Bytes of the first chunk: small, so that the client starts reading early.
const FIRST_CHUNK: usize = 32 * 1024;

/// What the writing task hands to the response.
enum Part {
    /// The whole response, when it fits in the first chunk.
    Whole(Vec<u8>),
    /// The next piece of a response sent in chunks.
    Chunk(Bytes),
    /// The last piece has been sent.
    End,
    /// The list failed.
    Failed(ApiError),
}

/// The response to a list of full objects: written on a task of its own and streamed.
pub(super) async fn list_streamed(
    inner: &Arc<Inner>,
    req: Request,
    selectors: Selectors,
) -> ApiResult<Response> {
    // One part waits while the client takes another: at most about three chunks at once.
    let (parts, mut answer) = mpsc::channel(1);
    let inner = Arc::clone(inner);
    tokio::spawn(async move { write_list(&inner, &req, &selectors, parts).await });
    let first = match answer.recv().await {
        Some(Part::Whole(body)) => return Ok(request::json_bytes(200, body)),
        Some(Part::Failed(error)) => return Err(error),
        Some(Part::Chunk(first)) => first,
        Some(Part::End) | None => {
            return Err(ApiError::internal(
                "the list stopped before its first chunk",
            ));
        }
    };
    // The body ends cleanly only on `End`. An error, or a task that stopped without `End`
    // (it panicked), breaks the response off after what was sent.
    let rest = futures::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        let broken = |why: String| Some((Err(std::io::Error::other(why)), None));
        match answer.recv().await {
            Some(Part::Chunk(chunk)) => Some((Ok(chunk), Some(answer))),
            Some(Part::Whole(body)) => Some((Ok(Bytes::from(body)), Some(answer))),
            Some(Part::End) => None,
            Some(Part::Failed(error)) => broken(error.to_string()),
            None => broken("the list stopped before its end".into()),
        }
    });
    let body = futures::stream::once(std::future::ready(Ok(first))).chain(rest);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Writes the list and hands its text to `parts`, then `End`; or hands over why it failed.
async fn write_list(
    inner: &Inner,
    req: &Request,
    selectors: &Selectors,
    parts: mpsc::Sender<Part>,
) {
    let mut sink = match Chunks::start(req, parts.clone()) {
        Ok(sink) => sink,
        Err(error) => {
            let _ = parts.send(Part::Failed(error)).await;
            return;
        }
    };
    let listed = list_pages(inner, req, selectors, &mut sink).await;
    let sent = sink.sent;
    let outcome = match listed {
        Ok((rev, token)) => sink.finish(rev, token).await,
        Err(error) => Err(error),
    };
    let Err(error) = outcome else {
        return;
    };
    if parts.is_closed() {
        tracing::debug!(error = %error, "a streamed list ended: the client went away");
        return;
    }
    // Before the first chunk the error is the response: the client gets its Status. After
    // it, the client only sees the response break off, so the server says why.
    if sent {
        tracing::warn!(resource = %req.resource.plural, error = %error, "a streamed list broke off after its first chunk");
    }
    let _ = parts.send(Part::Failed(error)).await;
}

/// The list's text, handed over a chunk at a time as it is written.
struct Chunks {
    body: Vec<u8>,
    first_item: bool,
    sent: bool,
    parts: mpsc::Sender<Part>,
}

impl Chunks {
    /// Starts the text with the envelope's kind and apiVersion, and opens `items`.
    fn start(req: &Request, parts: mpsc::Sender<Part>) -> ApiResult<Chunks> {
        let resource = &req.resource;
        let mut body = Vec::with_capacity(64 * 1024);
        body.extend_from_slice(b"{\"kind\":");
        serde_json::to_writer(&mut body, &resource.list_kind).map_err(encode_error)?;
        body.extend_from_slice(b",\"apiVersion\":");
        serde_json::to_writer(&mut body, &resource.api_version()).map_err(encode_error)?;
        body.extend_from_slice(b",\"items\":[");
        Ok(Chunks {
            body,
            first_item: true,
            sent: false,
            parts,
        })
    }

    /// Bytes written before they are handed over.
    fn chunk_size(&self) -> usize {
        if self.sent { CHUNK } else { FIRST_CHUNK }
    }

    /// Hands over what is written so far, keeping room for a chunk and an object.
    async fn send(&mut self) -> ApiResult<()> {
        let chunk = std::mem::replace(&mut self.body, Vec::with_capacity(CHUNK + 16 * 1024));
        self.sent = true;
        self.parts
            .send(Part::Chunk(Bytes::from(chunk)))
            .await
            .map_err(|_| ApiError::internal("the client went away"))
    }

    /// Closes `items`, writes the envelope's metadata, and hands over the rest.
    async fn finish(mut self, rev: devplane_store::Rev, token: Option<String>) -> ApiResult<()> {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(token) = token {
            meta["continue"] = Value::String(token);
        }
        self.body.extend_from_slice(b"],\"metadata\":");
        serde_json::to_writer(&mut self.body, &meta).map_err(encode_error)?;
        self.body.push(b'}');
        let gone = |_| ApiError::internal("the client went away");
        let body = std::mem::take(&mut self.body);
        if !self.sent {
            return self.parts.send(Part::Whole(body)).await.map_err(gone);
        }
        let last = Part::Chunk(Bytes::from(body));
        self.parts.send(last).await.map_err(gone)?;
        self.parts.send(Part::End).await.map_err(gone)
    }
}

impl ListSink for Chunks {
    fn item(&mut self, item: Listed<'_>) -> ApiResult<()> {
        if !std::mem::take(&mut self.first_item) {
            self.body.push(b',');
        }
        item.write_json(&mut self.body)
    }

    fn holds_enough(&self) -> bool {
        self.body.len() >= self.chunk_size()
    }

    fn flush(&mut self) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(async move {
            if self.holds_enough() {
                self.send().await?;
            }
            Ok(())
        })
    }
}

fn encode_error(e: serde_json::Error) -> ApiError {
    ApiError::internal(format!("cannot encode a list: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::HttpBody as _;
    use axum::http::{Method, Request as HttpRequest};
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::{ApiServer, ApiServerConfig, Caller};

    /// A router over an in-memory store holding `count` ConfigMaps of about 1 KiB, written
    /// to the store directly; the one named `broken` holds text that is not JSON.
    async fn filled(count: usize, broken: Option<&str>) -> axum::Router {
        let store = devplane_store::open("memory://").await.expect("store");
        for i in 0..count {
            let name = format!("cm-{i:05}");
            let value = if broken == Some(name.as_str()) {
                Bytes::from_static(b"{not json")
            } else {
                let object = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"},
                    "data": {"d": "x".repeat(1000)},
                });
                Bytes::from(serde_json::to_vec(&object).expect("encodes"))
            };
            let key = format!("/registry/core/configmaps/default/{name}");
            store.create(&key, value).await.expect("create");
        }
        let config = ApiServerConfig {
            run_controllers: false,
            ..ApiServerConfig::default()
        };
        let server = ApiServer::new(Arc::clone(&store), config)
            .await
            .expect("server");
        server.in_process_router(Caller::new("admin", &["system:masters"]))
    }

    async fn get(router: &axum::Router, path: &str) -> axum::response::Response {
        let request = HttpRequest::builder()
            .method(Method::GET)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        router.clone().oneshot(request).await.expect("infallible")
    }

    /// The whole body of a response that must end well.
    async fn body_of(response: axum::response::Response) -> Bytes {
        let body = response.into_body().collect().await;
        body.expect("a body that ends well").to_bytes()
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["metadata"]["name"].as_str().expect("name").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_short_list_is_answered_whole_and_a_long_one_in_chunks_with_the_same_objects() {
        let router = filled(400, None).await;
        let short = get(&router, "/api/v1/configmaps?limit=10").await;
        assert_eq!(short.status(), 200);
        assert!(
            short.body().size_hint().exact().is_some(),
            "a list that fits in one chunk has a length"
        );

        let long = get(&router, "/api/v1/configmaps").await;
        assert_eq!(long.status(), 200);
        assert_eq!(
            long.body().size_hint().exact(),
            None,
            "a long list is streamed"
        );
        let body = body_of(long).await;
        let list: Value = serde_json::from_slice(&body).expect("the streamed list is JSON");
        assert_eq!(list["kind"], "ConfigMapList");
        assert!(list["metadata"]["resourceVersion"].is_string());
        let mut paged = Vec::new();
        let mut token = String::new();
        loop {
            let page = get(
                &router,
                &format!("/api/v1/configmaps?limit=150&continue={token}"),
            )
            .await;
            let page = body_of(page).await;
            let page: Value = serde_json::from_slice(&page).expect("page JSON");
            paged.extend(names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => break,
            }
        }
        assert_eq!(names(&list).len(), 400);
        assert_eq!(names(&list), paged);
    }

    #[tokio::test]
    async fn chunks_go_as_they_are_written_the_first_one_small_not_a_page_at_a_time() {
        // 400 objects of about 1.1 KiB: one page of the store, 440 KiB of text.
        let router = filled(400, None).await;
        let mut body = get(&router, "/api/v1/configmaps").await.into_body();
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("a body that ends well");
            if let Ok(data) = frame.into_data() {
                sizes.push(data.len());
            }
        }
        let total: usize = sizes.iter().sum();
        assert!(total > 400 * 1024, "{sizes:?}");
        assert!(
            sizes[0] < super::FIRST_CHUNK + 2 * 1024,
            "the first chunk is small: {sizes:?}"
        );
        assert!(
            sizes.iter().all(|size| *size < super::CHUNK + 2 * 1024),
            "no chunk waits for the page's end: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn an_object_that_cannot_be_written_fails_the_list_whole_before_the_first_chunk() {
        let router = filled(50, Some("cm-00005")).await;
        let response = get(&router, "/api/v1/configmaps").await;
        assert_eq!(response.status(), 500, "an error before anything was sent");
        let body = body_of(response).await;
        let status: Value = serde_json::from_slice(&body).expect("a Status");
        assert_eq!(status["kind"], "Status");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("cm-00005")),
            "{status}"
        );
    }

    #[tokio::test]
    async fn an_object_that_cannot_be_written_after_the_first_chunk_breaks_the_response_off() {
        // The first chunk (about 30 objects) goes out long before the broken object.
        let router = filled(1_100, Some("cm-01050")).await;
        let response = get(&router, "/api/v1/configmaps").await;
        assert_eq!(response.status(), 200, "the first chunk was sent");
        assert!(
            response.into_body().collect().await.is_err(),
            "the body must end in an error, never as a list that looks whole"
        );
    }
}
