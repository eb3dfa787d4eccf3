//! HTTP for devices: the same identity, authorization and validation as MQTT, over
//! `/v1/devices/{ns}/{name}/…` with HTTP Basic authentication (the Secret's user name and
//! password).
//!
//! Uplink answers 202 once ingest took the message, 400 with `{"reason","field","message"}`
//! for an invalid payload, 401 for bad credentials, 403 for another device's path or a device
//! that may not connect, 413 for an oversize body, 415 for a body that is not JSON and 429
//! (with Retry-After) while ingest is full. Downlink for devices that only speak HTTP: the desired attributes, and waiting
//! commands by long poll. Presence follows the requests: Online while the device posted within
//! the presence window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use devplane_api::v1alpha1::Protocol;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::ingest;
use crate::registry::Refusal;
use crate::status::StatusUpdate;
use crate::topic::{Denial, Identity, Uplink};
use crate::uplink::Rejection;

/// Longest a command long poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The device HTTP routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.settings.max_packet_size;
    Router::new()
        .route("/v1/devices/{ns}/{name}/telemetry", post(telemetry))
        .route("/v1/devices/{ns}/{name}/events/{event}", post(event))
        .route(
            "/v1/devices/{ns}/{name}/attributes/reported",
            post(reported),
        )
        .route("/v1/devices/{ns}/{name}/attributes/desired", get(desired))
        .route("/v1/devices/{ns}/{name}/commands", get(commands))
        .route(
            "/v1/devices/{ns}/{name}/commands/{command}/response",
            post(response),
        )
        .route("/v1/provision/{ns}/{policy}", post(provision))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

fn problem(status: StatusCode, reason: &str, field: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"reason": reason, "field": field, "message": message.into()})),
    )
        .into_response()
}

/// The device a request authenticates as, if its path is its own.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    namespace: &str,
    name: &str,
) -> Result<Identity, Box<Response>> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let unauthorized = |message: &str| {
        let mut response = problem(StatusCode::UNAUTHORIZED, "BadCredentials", "", message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"devplane\""),
        );
        response
    };
    let Some((username, password)) = credentials.as_deref().and_then(|c| c.rsplit_once(':')) else {
        shared.metrics.connections_refused.inc("BadCredentials");
        return Err(Box::new(unauthorized(
            "HTTP Basic authentication with the device's credentials is required",
        )));
    };
    let now = jiff::Timestamp::now();
    let result = shared.registry.read().authenticate_device(
        username,
        password.as_bytes(),
        Protocol::Http,
        now,
    );
    let id = match result {
        Ok((id, _)) => id,
        Err(Refusal::BadCredentials) => {
            shared.metrics.connections_refused.inc("BadCredentials");
            return Err(Box::new(unauthorized("bad user name or password")));
        }
        Err(Refusal::NotAuthorized(why)) => {
            shared.metrics.connections_refused.inc("NotAuthorized");
            return Err(Box::new(problem(
                StatusCode::FORBIDDEN,
                "NotAuthorized",
                "",
                why,
            )));
        }
    };
    if id.namespace != namespace || id.name != name {
        shared.metrics.deny(Denial::ForeignTopic);
        shared.warn(
            &id,
            "PublishDenied",
            format!("HTTP request for device {namespace}/{name} denied"),
        );
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            Denial::ForeignTopic.as_str(),
            "",
            format!("device {id} may not act for {namespace}/{name}"),
        )));
    }
    Ok(id)
}

fn body_or_problem(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Box<Response>> {
    body.map_err(|e| {
        let status = e.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "PayloadTooLarge"
        } else {
            "InvalidBody"
        };
        Box::new(problem(status, reason, "", e.body_text()))
    })
}

/// 415 for a body declared as anything but JSON (no Content-Type is taken as JSON).
fn content_type_problem(headers: &HeaderMap) -> Option<Response> {
    let declared = headers.get(header::CONTENT_TYPE)?;
    let media = declared
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        return None;
    }
    Some(problem(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedContentType",
        "",
        format!("the body must be application/json, not {media:?}"),
    ))
}

/// An uplink request: authenticate, judge, hand to ingest; 202, 400, 401, 403, 413 or 429.
async fn post_uplink(
    shared: &Shared,
    headers: &HeaderMap,
    (namespace, name): (&str, &str),
    address: std::net::SocketAddr,
    uplink: Uplink<'_>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = match authorize(shared, headers, namespace, name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if let Some(problem) = content_type_problem(headers) {
        return problem;
    }
    let body = match body_or_problem(body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    let id = &id;
    let accepted = match ingest::judge(shared, id, &uplink, &body) {
        Ok(accepted) => accepted,
        Err(Rejection {
            reason,
            field,
            message,
        }) => {
            shared.metrics.rejected.inc(reason);
            return problem(StatusCode::BAD_REQUEST, reason, &field, message);
        }
    };
    // Wait a moment for room, then push back on the device rather than queue without bound.
    match tokio::time::timeout(Duration::from_millis(200), shared.ingest.send(accepted)).await {
        Ok(Ok(())) => {}
        _ => {
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Busy",
                "",
                "ingest is full; retry",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
    }
    shared.seen(Protocol::Http, id, address);
    (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response()
}

type DevicePath = Path<(String, String)>;
type Peer = ConnectInfo<std::net::SocketAddr>;

async fn telemetry(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): DevicePath,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    post_uplink(
        &shared,
        &headers,
        (&ns, &name),
        peer,
        Uplink::Telemetry,
        body,
    )
    .await
}

async fn event(
    State(shared): State<Arc<Shared>>,
    Path((ns, name, event)): Path<(String, String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    post_uplink(
        &shared,
        &headers,
        (&ns, &name),
        peer,
        Uplink::Event(&event),
        body,
    )
    .await
}

async fn reported(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): DevicePath,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    post_uplink(
        &shared,
        &headers,
        (&ns, &name),
        peer,
        Uplink::Reported,
        body,
    )
    .await
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path((ns, name, command)): Path<(String, String, String)>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let uplink = Uplink::CommandResponse(&command);
    post_uplink(&shared, &headers, (&ns, &name), peer, uplink, body).await
}

async fn desired(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): DevicePath,
    headers: HeaderMap,
) -> Response {
    let id = match authorize(&shared, &headers, &ns, &name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let payload = shared
        .registry
        .read()
        .device(&id)
        .map(ingest::desired_payload);
    match payload {
        Some(payload) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            payload,
        )
            .into_response(),
        None => problem(StatusCode::NOT_FOUND, "NotFound", "", "the device is gone"),
    }
}

/// Query of the command long poll.
#[derive(Deserialize)]
struct Wait {
    #[serde(rename = "waitSeconds", default)]
    wait_seconds: u64,
}

async fn commands(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): DevicePath,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(wait): Query<Wait>,
) -> Response {
    let id = match authorize(&shared, &headers, &ns, &name) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    shared.seen(Protocol::Http, &id, peer);
    let deadline = Instant::now() + Duration::from_secs(wait.wait_seconds).min(MAX_WAIT);
    loop {
        // Register for a wake-up before looking, so a command that arrives in between is seen.
        let arrived = shared.command_arrived.notified();
        let now = jiff::Timestamp::now();
        let waiting = shared.commands.lock().deliverable(&id, now);
        if !waiting.is_empty() || Instant::now() >= deadline {
            let list: Vec<Value> = waiting
                .iter()
                .map(|c| {
                    let mut body = c.payload(now);
                    body["name"] = json!(c.name);
                    body
                })
                .collect();
            for command in &waiting {
                shared.command_sent(&id, &command.reference());
            }
            return (StatusCode::OK, axum::Json(json!({ "commands": list }))).into_response();
        }
        let _ = tokio::time::timeout_at(deadline.into(), arrived).await;
    }
}

/// Serve the device routes until shutdown, over TLS when `tls` is given: one task per
/// connection. The TLS handshake and each request head (the first, and the next on a kept-alive
/// connection) must arrive within the connect timeout, or the connection is closed: a client
/// that opens connections and sends nothing holds no task and no file for long.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let app = router(shared.clone());
    let timeout = shared.settings.connect_timeout;
    crate::accept_each(&listener, &shutdown, |stream, peer| {
        let (tls, app, stop) = (tls.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                serve_connection(stream, peer, None, app, timeout, stop).await;
                return;
            };
            let Some(stream) = crate::tls_handshake(&tls, stream, peer, timeout).await else {
                return;
            };
            let certificates = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|chain| !chain.is_empty())
                .map(|chain| PeerCertificates(Arc::new(chain.to_vec())));
            serve_connection(stream, peer, certificates, app, timeout, stop).await;
        });
    })
    .await;
}

/// Serve the requests of one connection until it ends or shutdown.
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    certificates: Option<PeerCertificates>,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The routes read the peer address the way axum::serve provides it.
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certificates) = &certificates {
                request.extensions_mut().insert(certificates.clone());
            }
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // Without a timer hyper applies no header timeout at all.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        result = connection => if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        },
        _ = stop.cancelled() => {}
    }
}

/// The client certificate chain of an HTTPS connection (for certificate attestation).
#[derive(Clone)]
pub struct PeerCertificates(pub Arc<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>);

/// `POST /v1/provision/{ns}/{policy}`: 201 with the new identity, 200 with an existing one,
/// 403 with the refusal's reason, 400, 404, 415, 429 or 503 (both with Retry-After).
async fn provision(
    State(shared): State<Arc<Shared>>,
    Path((namespace, policy)): Path<(String, String)>,
    ConnectInfo(address): ConnectInfo<std::net::SocketAddr>,
    certificates: Option<axum::Extension<PeerCertificates>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(problem) = content_type_problem(&headers) {
        return problem;
    }
    let body = match body_or_problem(body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    let request: crate::provision::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let problem = crate::provision::Problem::invalid(format!("the request body: {e}"));
            return (StatusCode::BAD_REQUEST, axum::Json(problem.body())).into_response();
        }
    };
    let chain = certificates.as_ref().map(|c| c.0.0.as_slice());
    let policy = Identity::new(namespace, policy);
    match crate::provision::provision(&shared, &policy, &request, address.ip(), chain).await {
        Ok(answer) => {
            let status = if answer.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(answer)).into_response()
        }
        Err(problem) => {
            let status = StatusCode::from_u16(problem.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, axum::Json(problem.body())).into_response();
            if matches!(status.as_u16(), 429 | 503) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// Presence of the devices that speak a request-based protocol (HTTP, CoAP): Online while the
/// device made a request within the window, with the protocol it last used.
#[derive(Default)]
pub struct Presence(parking_lot::Mutex<HashMap<Identity, (Protocol, Instant)>>);

impl Shared {
    /// A request of `id` over `protocol`: Online on the first (or on a change of protocol),
    /// "last seen" after.
    pub(crate) fn seen(&self, protocol: Protocol, id: &Identity, address: std::net::SocketAddr) {
        let first = self
            .presence
            .0
            .lock()
            .insert(id.clone(), (protocol, Instant::now()))
            .is_none_or(|(before, _)| before != protocol);
        if first {
            self.status_update(StatusUpdate::Connected {
                id: id.clone(),
                address: address.to_string(),
                protocol,
            });
        } else {
            self.status_update(StatusUpdate::Seen { id: id.clone() });
        }
    }
}

/// Mark HTTP and CoAP devices Offline once they have been quiet for the presence window.
pub async fn expire_presence(shared: Arc<Shared>, shutdown: CancellationToken) {
    let window = shared.settings.http_presence_window;
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(window));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let quiet: Vec<Identity> = {
            let mut seen = shared.presence.0.lock();
            let quiet: Vec<Identity> = seen
                .iter()
                .filter(|(_, (_, at))| at.elapsed() >= window)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &quiet {
                seen.remove(id);
            }
            quiet
        };
        for id in quiet {
            shared.status_update(StatusUpdate::Disconnected { id });
        }
    }
}
