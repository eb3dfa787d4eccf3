//! The API server: state, routes, authentication, and the tasks that keep it consistent
//! (CRD registry, garbage collection, namespace and CRD cleanup).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use devplane_store::{ListOptions, Store, StoreError};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Audit};
use crate::authz::{Attributes, Rbac};
use crate::builtin::{Builtin, crd_resources};
use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, RegistryCache, Resource};
use crate::request::{self, Query};
use crate::rest::{self, WriteOptions};
use crate::sa_token::Signer;
use crate::webhooks::Webhooks;
use crate::{discovery, openapi, openapi_v2, path};

mod follow;

use self::follow::{Follow, follow};

/// Settings of an API server.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Bearer tokens and who each stands for. Empty: no authentication and no authorization
    /// (tests only). ServiceAccount tokens minted by TokenRequest are accepted besides.
    pub tokens: BTreeMap<String, Caller>,
    /// How often a watch with `allowWatchBookmarks` gets a bookmark.
    pub bookmark_interval: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Kubernetes version reported by `/version` (the kubectl dispatcher picks its binary by it).
    pub kube_minor: u32,
    /// Address clients reach the server at (for `/api`'s serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// Whether this process runs the garbage collector and the namespace and CRD cleanup.
    pub run_controllers: bool,
    /// Where to append the audit log (JSON lines), if anywhere.
    pub audit_log: Option<std::path::PathBuf>,
    /// Addresses of the Services admission webhooks name ("namespace/name" → "host:port"):
    /// there is no cluster network here.
    pub webhook_services: crate::webhooks::ServiceAddresses,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            tokens: BTreeMap::new(),
            bookmark_interval: Duration::from_secs(60),
            max_body_bytes: 3 * 1024 * 1024,
            kube_minor: 33,
            advertise_address: "127.0.0.1:6443".into(),
            run_controllers: true,
            audit_log: None,
            webhook_services: Default::default(),
        }
    }
}

pub use crate::authz::Caller;

/// Where the key that signs ServiceAccount tokens lives.
const SIGNING_KEY: &str = "/registry/devplane.io/serviceaccount-signing-key";
/// Prefix of every RBAC object.
const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
/// Prefix of the admission webhook configurations, validating and mutating.
const WEBHOOKS_PREFIX: &str = "/registry/admissionregistration.k8s.io/";
/// How long a verified ServiceAccount token is trusted before its account is looked up again.
const TOKEN_CACHE: Duration = Duration::from_secs(10);

/// Shared state of the server.
pub struct Inner {
    /// The store.
    pub store: Arc<dyn Store>,
    registry: RwLock<Arc<Registry>>,
    /// Settings.
    pub config: ApiServerConfig,
    /// Cancelled on shutdown: ends watches and background tasks.
    pub shutdown: CancellationToken,
    /// Rendered OpenAPI v3 documents by group-version path.
    openapi_cache: RegistryCache<BTreeMap<String, openapi::Document>>,
    /// The rendered `/openapi/v2` document.
    openapi_v2_cache: RegistryCache<openapi_v2::Document>,
    /// Watch events decoded once for all watchers.
    pub events: Arc<crate::watch::EventCache>,
    /// Watches open now, by resource and label selector.
    pub watches: Arc<crate::watch::OpenWatches>,
    rbac: RwLock<Arc<Rbac>>,
    webhooks: RwLock<Arc<Webhooks>>,
    audit: Option<Audit>,
    signer: tokio::sync::OnceCell<Arc<Signer>>,
    verified_tokens: Mutex<HashMap<String, (Caller, std::time::Instant)>>,
    /// Namespaces known to accept new objects (creates are guarded by their revision).
    pub(crate) active_namespaces: rest::ActiveNamespaces,
}

impl Inner {
    /// The current registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    /// Rebuild the registry from the CRDs in the store.
    pub async fn refresh_registry(&self) -> ApiResult<()> {
        let crds = self
            .store
            .list(ListOptions {
                prefix: "/registry/apiextensions.k8s.io/customresourcedefinitions/".into(),
                ..ListOptions::default()
            })
            .await?;
        let mut custom = Vec::new();
        for kv in &crds.items {
            let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let established = crd
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.get("type") == Some(&json!("Established"))
                            && c.get("status") == Some(&json!("True"))
                    })
                });
            if !established {
                continue;
            }
            match crd_resources(&crd) {
                Ok(resources) => custom.extend(resources),
                Err(e) => {
                    tracing::warn!(crd = crate::object::name(&crd).unwrap_or_default(), error = %e, "CRD not served")
                }
            }
        }
        let mut guard = self.registry.write();
        let generation = guard.generation + 1;
        *guard = Arc::new(Registry::new(custom, generation));
        Ok(())
    }

    fn openapi_documents(&self) -> Arc<BTreeMap<String, openapi::Document>> {
        self.openapi_cache.get(&self.registry(), |registry| {
            openapi::documents(registry, &self.git_version())
        })
    }

    fn openapi_v2_document(&self) -> Arc<openapi_v2::Document> {
        self.openapi_v2_cache.get(&self.registry(), |registry| {
            openapi_v2::Document::build(registry, &self.git_version())
        })
    }

    /// The RBAC objects as last loaded.
    pub fn rbac(&self) -> Arc<Rbac> {
        self.rbac.read().clone()
    }

    /// Reload the RBAC objects from the store.
    pub async fn refresh_rbac(&self) -> ApiResult<()> {
        // The four kinds only: a custom resource may be stored under the same group.
        let mut objects = Vec::new();
        for plural in [
            "roles",
            "clusterroles",
            "rolebindings",
            "clusterrolebindings",
        ] {
            objects.extend(
                self.stored_objects(&format!("{RBAC_PREFIX}{plural}/"))
                    .await?,
            );
        }
        *self.rbac.write() = Arc::new(Rbac::from_objects(&objects));
        Ok(())
    }

    /// Every object stored under `prefix` (few: RBAC objects, webhook configurations).
    async fn stored_objects(&self, prefix: &str) -> ApiResult<Vec<Value>> {
        let page = self
            .store
            .list(ListOptions {
                prefix: prefix.into(),
                ..ListOptions::default()
            })
            .await?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// The admission webhooks as last loaded.
    pub fn webhooks(&self) -> Arc<Webhooks> {
        self.webhooks.read().clone()
    }

    /// Reload the Validating- and MutatingWebhookConfigurations from the store.
    pub async fn refresh_webhooks(&self) -> ApiResult<()> {
        let validating = self
            .stored_objects(&format!(
                "{WEBHOOKS_PREFIX}validatingwebhookconfigurations/"
            ))
            .await?;
        let mutating = self
            .stored_objects(&format!("{WEBHOOKS_PREFIX}mutatingwebhookconfigurations/"))
            .await?;
        *self.webhooks.write() = Arc::new(Webhooks::from_configurations(&validating, &mutating));
        Ok(())
    }

    /// The ServiceAccount token signer (its key created in the store on first use).
    pub async fn signer(&self) -> ApiResult<Arc<Signer>> {
        self.signer
            .get_or_try_init(|| async {
                let fresh: [u8; 32] = rand::random();
                let encoded =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, fresh);
                match self.store.create(SIGNING_KEY, Bytes::from(encoded)).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(ApiError::from(e)),
                }
                let stored = self
                    .store
                    .get(SIGNING_KEY)
                    .await?
                    .ok_or_else(|| ApiError::internal("the token signing key vanished"))?;
                let key = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    &stored.value,
                )
                .map_err(|e| {
                    ApiError::internal(format!("the token signing key is corrupt: {e}"))
                })?;
                Ok(Arc::new(Signer::new(&key)))
            })
            .await
            .cloned()
    }

    /// Who a ServiceAccount token stands for, if it is valid and its account still exists.
    async fn service_account_caller(&self, token: &str) -> Option<Caller> {
        if let Some((caller, at)) = self.verified_tokens.lock().get(token)
            && at.elapsed() < TOKEN_CACHE
        {
            return Some(caller.clone());
        }
        let signer = self.signer().await.ok()?;
        let claims = signer.verify(token, jiff::Timestamp::now().as_second())?;
        // A token minted for someone else (`kubectl create token --audience`) is theirs.
        if !claims.for_the_api_server() {
            return None;
        }
        let key = format!(
            "/registry/core/serviceaccounts/{}/{}",
            claims.namespace, claims.name
        );
        let account = self.store.get(&key).await.ok()??;
        let account: Value = serde_json::from_slice(&account.value).ok()?;
        if account.pointer("/metadata/uid").and_then(Value::as_str) != Some(claims.uid.as_str()) {
            return None;
        }
        // A deleted account that waits on finalizers is gone as far as its tokens go.
        if account.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        let caller = Caller::service_account(&claims.namespace, &claims.name);
        let mut cache = self.verified_tokens.lock();
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE);
        }
        cache.insert(
            token.to_string(),
            (caller.clone(), std::time::Instant::now()),
        );
        Some(caller)
    }

    fn git_version(&self) -> String {
        format!("v1.{}.0-devplane", self.config.kube_minor)
    }
}

/// A Kubernetes-compatible API server over a store.
#[derive(Clone)]
pub struct ApiServer {
    /// Shared state.
    pub inner: Arc<Inner>,
}

impl ApiServer {
    /// The watches open now: (group, resource, label selector) and how many.
    pub fn open_watches(&self) -> Vec<(crate::watch::WatchKey, usize)> {
        self.inner.watches.snapshot()
    }

    /// A server over `store`: loads the CRDs it holds and creates the system namespaces.
    pub async fn new(store: Arc<dyn Store>, config: ApiServerConfig) -> ApiResult<ApiServer> {
        let audit = match &config.audit_log {
            Some(path) => Some(Audit::open(path).map_err(|e| {
                ApiError::internal(format!("cannot open the audit log {}: {e}", path.display()))
            })?),
            None => None,
        };
        let events = crate::watch::EventCache::new(rest::Writers::of(&*store));
        let inner = Arc::new(Inner {
            store,
            registry: RwLock::new(Arc::new(Registry::new(Vec::new(), 0))),
            config,
            shutdown: CancellationToken::new(),
            openapi_cache: RegistryCache::default(),
            openapi_v2_cache: RegistryCache::default(),
            events: Arc::new(events),
            watches: Arc::default(),
            rbac: RwLock::new(Arc::default()),
            webhooks: RwLock::new(Arc::default()),
            audit,
            signer: tokio::sync::OnceCell::new(),
            verified_tokens: Mutex::new(HashMap::new()),
            active_namespaces: Default::default(),
        });
        // Label-selected lists read the store's label index where the backend keeps one.
        inner
            .store
            .index_terms(crate::rest::label_index::extractor())
            .await?;
        inner.refresh_registry().await?;
        let server = ApiServer { inner };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            server
                .ensure(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .await?;
        }
        // As on a cluster: cluster-admin may do everything, and system:masters has it.
        server
            .ensure(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]}
                ]
            }))
            .await?;
        server
            .ensure(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": crate::authz::MASTERS}]
            }))
            .await?;
        server.inner.refresh_rbac().await?;
        server.inner.refresh_webhooks().await?;
        Ok(server)
    }

    /// Create an object if it does not exist (used at boot).
    pub async fn ensure(&self, object: Value) -> ApiResult<Value> {
        let resource = self.resource_of(&object)?;
        let name = crate::object::name(&object).unwrap_or_default().to_string();
        let namespace = crate::object::namespace(&object).map(str::to_string);
        if let Some((existing, _)) = self
            .inner
            .read(&resource, namespace.as_deref(), &name)
            .await?
        {
            return Ok(existing);
        }
        match self
            .inner
            .create(
                &resource,
                namespace.as_deref(),
                object,
                &WriteOptions::internal("devplane"),
            )
            .await
        {
            Ok(w) => {
                self.after_write(&resource).await;
                Ok(w.object)
            }
            Err(e) if e.reason == "AlreadyExists" => Ok(self
                .inner
                .read(&resource, namespace.as_deref(), &name)
                .await?
                .map(|(o, _)| o)
                .unwrap_or_default()),
            Err(e) => Err(e),
        }
    }

    /// Create or update (by server-side apply, with force) an object, e.g. CRDs at boot.
    pub async fn apply(&self, object: Value, manager: &str) -> ApiResult<Value> {
        let resource = self.resource_of(&object)?;
        let name = crate::object::name(&object).unwrap_or_default().to_string();
        let namespace = crate::object::namespace(&object).map(str::to_string);
        let req = rest::Request {
            method: Method::PATCH,
            resource: resource.clone(),
            namespace,
            name: Some(name.clone()),
            subresource: None,
            query: Query::parse(Some(&format!("fieldManager={manager}&force=true")))?,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            caller: None,
        };
        let response = crate::apply::serve(&self.inner, &req, &name, None, object).await?;
        self.after_write(&resource).await;
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))
    }

    fn resource_of(&self, object: &Value) -> ApiResult<Arc<Resource>> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.inner
            .registry()
            .resources()
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!("no resource serves {api_version} {kind}"))
            })
    }

    async fn after_write(&self, resource: &Resource) {
        if resource.builtin == Some(crate::builtin::Builtin::Crd)
            && let Err(e) = self.inner.refresh_registry().await
        {
            tracing::warn!(error = %e, "cannot refresh the registry");
        }
        // A deleted (or re-created) ServiceAccount's tokens stop at once on this server.
        if resource.builtin == Some(crate::builtin::Builtin::ServiceAccount) {
            self.inner.verified_tokens.lock().clear();
        }
        if resource
            .builtin
            .is_some_and(Builtin::is_webhook_configuration)
            && let Err(e) = self.inner.refresh_webhooks().await
        {
            tracing::warn!(error = %e, "cannot reload the admission webhooks");
        }
        // A new grant or revocation holds for the very next request.
        if resource
            .builtin
            .is_some_and(crate::builtin::Builtin::is_rbac)
            && let Err(e) = self.inner.refresh_rbac().await
        {
            tracing::warn!(error = %e, "cannot reload RBAC");
        }
    }

    /// Start the background tasks: CRD watch (keeps the registry current across processes
    /// sharing a store) and, if configured, the garbage collector and cleanups.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<tokio::task::JoinHandle<()>> =
            [Follow::Crds, Follow::Rbac, Follow::Webhooks]
                .into_iter()
                .map(|what| tokio::spawn(follow(self.inner.clone(), what)))
                .collect();
        if self.inner.audit.is_some() {
            let inner = self.inner.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let stopping = sleep_or_shutdown(&inner, Duration::from_secs(1)).await;
                    if let Some(audit) = &inner.audit {
                        audit.flush();
                    }
                    if stopping {
                        return;
                    }
                }
            }));
        }
        if self.inner.config.run_controllers {
            tasks.push(tokio::spawn(crate::gc::run(self.inner.clone())));
            tasks.push(tokio::spawn(crate::gc::expire_events(self.inner.clone())));
        }
        tasks
    }

    /// Stop watches and background tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// The router for network clients: authenticated by bearer token.
    pub fn router(&self) -> Router {
        self.routes()
            .layer(middleware::from_fn_with_state(self.clone(), authenticate))
    }

    /// A router for in-process clients: every request is made as `caller` (no token; an
    /// extension cannot be forged over a socket), authorized like any other. Handler panics
    /// become 500s.
    pub fn in_process_router(&self, caller: Caller) -> Router {
        self.routes()
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(axum::Extension(caller))
    }

    fn routes(&self) -> Router {
        Router::new()
            .route("/version", get(version))
            .route("/healthz", get(health))
            .route("/livez", get(health))
            .route("/readyz", get(health))
            .route("/api", get(api_core))
            .route("/apis", get(api_groups))
            .route("/openapi/v2", get(openapi_v2_document))
            .route("/swagger-2.0.0.pb-v1", get(swagger_protobuf))
            .route("/openapi/v3", get(openapi_index))
            .route("/openapi/v3/{*path}", get(openapi_document))
            .route("/api/{*rest}", any(resources_core))
            .route("/apis/{*rest}", any(resources_groups))
            .fallback(|| async { ApiError::no_route() })
            .layer(DefaultBodyLimit::max(
                self.inner.config.max_body_bytes + 1024,
            ))
            .layer(middleware::from_fn(log_requests))
            .with_state(self.clone())
    }
}

async fn log_requests(request: AxumRequest, next: Next) -> Response {
    let method = request.method().clone();
    // Path only: query strings and bodies may carry data that must not reach logs.
    let path = request.uri().path().to_string();
    let watch = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, watch, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

async fn authenticate(
    State(server): State<ApiServer>,
    mut request: AxumRequest,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let public = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    let tokens = &server.inner.config.tokens;
    if !public && !tokens.is_empty() {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let mut caller = token.and_then(|t| find_token(tokens, t));
        if caller.is_none()
            && let Some(token) = token.filter(|t| Signer::looks_like(t))
        {
            caller = server.inner.service_account_caller(token).await;
        }
        let caller = match caller {
            Some(caller) => {
                let rbac = server.inner.rbac();
                match crate::impersonation::acting_as(&rbac, &caller, request.headers()) {
                    Ok(acting) => Ok(acting.unwrap_or(caller)),
                    Err(error) => Err((error, Some(caller))),
                }
            }
            None => Err((ApiError::unauthorized(), None)),
        };
        match caller {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err((error, caller)) => {
                if let Some(audit) = &server.inner.audit {
                    audit.record(&audit::Record {
                        caller: caller.as_ref(),
                        attributes: None,
                        version: None,
                        uri: &request.uri().to_string(),
                        method: request.method().as_str(),
                        code: error.code,
                        failure: Some((error.reason, &error.message)),
                        source: peer_of(&request),
                        user_agent: user_agent(request.headers()),
                        received: jiff::Timestamp::now(),
                    });
                }
                return error.into_response();
            }
        }
    }
    next.run(request).await
}

/// Look a token up in constant time per entry, so timing does not reveal near-misses.
fn find_token(tokens: &BTreeMap<String, Caller>, presented: &str) -> Option<Caller> {
    let mut found = None;
    for (token, user) in tokens {
        let equal = token.len() == presented.len()
            && token
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if equal {
            found = Some(user.clone());
        }
    }
    found
}

async fn version(State(server): State<ApiServer>) -> Response {
    let minor = server.inner.config.kube_minor;
    request::json(
        200,
        &json!({
            "major": "1",
            "minor": minor.to_string(),
            "gitVersion": server.inner.git_version(),
            "gitCommit": env!("CARGO_PKG_VERSION"),
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "devplane (Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
        &[],
    )
}

async fn health() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

async fn api_core(State(server): State<ApiServer>, headers: HeaderMap) -> Response {
    discovery::core(
        &server.inner.registry(),
        &headers,
        &server.inner.config.advertise_address,
    )
}

async fn api_groups(State(server): State<ApiServer>, headers: HeaderMap) -> Response {
    discovery::groups(&server.inner.registry(), &headers)
}

async fn openapi_v2_document(State(server): State<ApiServer>, headers: HeaderMap) -> Response {
    match openapi_v2::negotiate(&headers) {
        Some(format) => server
            .inner
            .openapi_v2_document()
            .respond(format, &headers),
        None => ApiError::not_acceptable(
            "only application/json and application/com.github.proto-openapi.spec.v2@v1.0+protobuf are served",
        )
        .into_response(),
    }
}

/// The protobuf document at the path older servers had it; client-go falls back to it.
async fn swagger_protobuf(State(server): State<ApiServer>, headers: HeaderMap) -> Response {
    let format = openapi_v2::Format::Protobuf;
    server.inner.openapi_v2_document().respond(format, &headers)
}

async fn openapi_index(State(server): State<ApiServer>) -> Response {
    let docs = server.inner.openapi_documents();
    request::json(200, &openapi::index(&docs), &[])
}

async fn openapi_document(State(server): State<ApiServer>, uri: Uri) -> Response {
    let key = uri
        .path()
        .trim_start_matches("/openapi/v3/")
        .trim_matches('/')
        .to_string();
    let docs = server.inner.openapi_documents();
    let Some(doc) = docs.get(&key) else {
        return ApiError::no_route().into_response();
    };
    let asked = Query::parse(uri.query())
        .ok()
        .and_then(|q| q.get("hash").map(str::to_string));
    match asked {
        Some(hash) if hash != doc.hash => {
            let location = format!("/openapi/v3/{key}?hash={}", doc.hash);
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        asked => {
            let mut response = Response::new(axum::body::Body::from(doc.body.clone()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.hash)) {
                headers.insert(header::ETAG, v);
            }
            let cache = if asked.is_some() {
                "public, immutable"
            } else {
                "no-cache, private"
            };
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            response
        }
    }
}

/// The caller an authenticated request carries (none when authentication is off).
type MaybeCaller = Option<axum::Extension<Caller>>;
/// The client's address, when the listener recorded it.
type MaybePeer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn peer_of(request: &AxumRequest) -> Option<String> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

async fn resources_core(
    State(server): State<ApiServer>,
    caller: MaybeCaller,
    peer: MaybePeer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = (caller.map(|c| c.0), peer.map(|p| p.0.0.ip().to_string()));
    resources(server, who, true, method, uri, headers, body).await
}

async fn resources_groups(
    State(server): State<ApiServer>,
    caller: MaybeCaller,
    peer: MaybePeer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = (caller.map(|c| c.0), peer.map(|p| p.0.0.ip().to_string()));
    resources(server, who, false, method, uri, headers, body).await
}

async fn resources(
    server: ApiServer,
    (caller, peer): (Option<Caller>, Option<String>),
    core: bool,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = jiff::Timestamp::now();
    let agent = user_agent(&headers).map(str::to_string);
    let method_name = method.as_str().to_string();
    let mut asked = None;
    let result = route(
        &server,
        caller.as_ref(),
        &mut asked,
        core,
        method,
        &uri,
        headers,
        body,
    )
    .await;
    let (response, failure) = match result {
        Ok(response) => (response, None),
        Err(e) => {
            let failure = (e.reason, e.message.clone());
            (e.into_response(), Some(failure))
        }
    };
    if let Some(audit) = &server.inner.audit {
        audit.record(&audit::Record {
            caller: caller.as_ref(),
            attributes: asked.as_ref().map(|(a, _)| a),
            version: asked
                .as_ref()
                .map(|(_, v): &(Attributes, String)| v.as_str()),
            uri: &uri.to_string(),
            method: &method_name,
            code: response.status().as_u16(),
            failure: failure.as_ref().map(|(r, m)| (*r, m.as_str())),
            source: peer,
            user_agent: agent.as_deref(),
            received,
        });
    }
    response
}

/// The RBAC verb of a request.
fn verb_of(method: &Method, named: bool, query: &Query) -> &'static str {
    // The same reading as the request's own (`Query::flag`), or a watch could pass as a list.
    let watch = query.flag("watch");
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

#[allow(clippy::too_many_arguments)]
async fn route(
    server: &ApiServer,
    caller: Option<&Caller>,
    asked: &mut Option<(Attributes, String)>,
    core: bool,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let registry = server.inner.registry();
    let rest_of_path = uri
        .path()
        .strip_prefix(if core { "/api/" } else { "/apis/" })
        .unwrap_or_default();
    // `/apis/<group>` is the group's discovery document.
    if !core && !rest_of_path.trim_matches('/').contains('/') {
        return discovery::group(&registry, rest_of_path.trim_matches('/'))
            .ok_or_else(ApiError::no_route);
    }
    let path = path::parse(core, rest_of_path, |g, v, r| {
        registry.is_namespaced(g, v, r)
    })
    .ok_or_else(ApiError::no_route)?;
    let Some(plural) = &path.resource else {
        return discovery::resource_list(&registry, &path.group, &path.version)
            .ok_or_else(ApiError::no_route);
    };
    let resource = registry
        .get(&path.group, &path.version, plural)
        .ok_or_else(ApiError::no_route)?;
    if path.namespace.is_some() && !resource.namespaced {
        return Err(ApiError::no_route());
    }
    if body.len() > server.inner.config.max_body_bytes {
        return Err(ApiError::too_large("the request body is too large"));
    }
    let is_write = method != Method::GET;
    let query = Query::parse(uri.query())?;
    let review = resource.builtin.is_some_and(Builtin::is_review);
    let attrs = Attributes {
        verb: verb_of(&method, path.name.is_some(), &query).to_string(),
        group: resource.group.clone(),
        resource: resource.plural.clone(),
        subresource: path.subresource.clone(),
        namespace: path.namespace.clone(),
        name: path.name.clone(),
    };
    *asked = Some((attrs.clone(), resource.version.clone()));
    // Access reviews are open to every authenticated user (system:basic-user on a cluster).
    if let Some(caller) = caller
        && !review
        && !server.inner.rbac().allows(caller, &attrs)
    {
        tracing::info!(user = %caller.user, verb = %attrs.verb, resource = %attrs.resource_path(), namespace = attrs.namespace.as_deref().unwrap_or(""), "forbidden");
        let mut error = ApiError::forbidden(attrs.forbidden_message(caller));
        error.details =
            Some(json!({"name": attrs.name, "group": attrs.group, "kind": attrs.resource}));
        return Err(error);
    }
    match (resource.builtin, &method, path.subresource.as_deref()) {
        (Some(Builtin::SelfSubjectAccessReview), &Method::POST, None) => {
            return crate::review::access_review(&server.inner, caller, &headers, &body);
        }
        (Some(Builtin::SelfSubjectRulesReview), &Method::POST, None) => {
            return crate::review::rules_review(&server.inner, caller, &headers, &body);
        }
        (Some(Builtin::SelfSubjectReview), &Method::POST, None) => {
            return Ok(crate::review::self_subject_review(caller));
        }
        (Some(b), _, _) if b.is_review() => {
            return Err(ApiError::method_not_allowed(format!(
                "{} only supports create",
                resource.plural
            )));
        }
        (Some(Builtin::ServiceAccount), &Method::POST, Some("token")) => {
            let (Some(namespace), Some(name)) = (&path.namespace, &path.name) else {
                return Err(ApiError::no_route());
            };
            return crate::review::token_request(
                &server.inner,
                &resource,
                (namespace, name),
                caller,
                &headers,
                &body,
            )
            .await;
        }
        _ => {}
    }
    let req = rest::Request {
        method,
        resource: resource.clone(),
        namespace: path.namespace,
        name: path.name,
        subresource: path.subresource,
        query,
        headers,
        body,
        caller: caller.cloned(),
    };
    let response = rest::serve(&server.inner, req).await?;
    let changes_schema_or_grants = resource.builtin.is_some_and(|b| {
        matches!(b, Builtin::Crd | Builtin::ServiceAccount)
            || b.is_rbac()
            || b.is_webhook_configuration()
    });
    if is_write && changes_schema_or_grants && response.status().is_success() {
        server.after_write(&resource).await;
    }
    Ok(response)
}

/// Sleep unless shutting down; true when shutting down.
pub async fn sleep_or_shutdown(inner: &Inner, duration: Duration) -> bool {
    tokio::select! {
        _ = inner.shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

#[cfg(test)]
mod tests;
