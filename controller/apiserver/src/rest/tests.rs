//! The write path over one etcd shared by two API servers: writes start from what the store
//! remembers, yet never succeed on a stale state, and a namespace changed through one
//! server refuses creates through the other at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use devplane_store::testing::EtcdServer;
use devplane_store::{EtcdStore, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{ApiServer, ApiServerConfig, Caller};

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";

/// One API server and the etcd store under it (whose request count the tests read).
struct Server {
    router: Router,
    store: EtcdStore,
}

impl Server {
    async fn start(etcd: &EtcdServer) -> Server {
        let store = EtcdStore::connect(&[etcd.endpoint().to_owned()], "/shared")
            .await
            .expect("connect to etcd");
        let config = ApiServerConfig {
            run_controllers: false,
            ..ApiServerConfig::default()
        };
        let server = ApiServer::new(Arc::new(store.clone()), config)
            .await
            .expect("server");
        Server {
            router: server.in_process_router(Caller::new("admin", &["system:masters"])),
            store,
        }
    }

    /// A request through the router: status and JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> (StatusCode, Value) {
        call_router(&self.router, method, path, body).await
    }

    async fn create(&self, path: &str, object: Value) -> Value {
        let (status, body) = self
            .call(Method::POST, path, Some(("application/json", object)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn merge_patch(&self, path: &str, patch: Value) -> (StatusCode, Value) {
        self.call(
            Method::PATCH,
            path,
            Some(("application/merge-patch+json", patch)),
        )
        .await
    }

    async fn data(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }
}

/// Two servers on one etcd, or `None` when etcd tests are skipped.
async fn two_servers() -> Option<(EtcdServer, Server, Server)> {
    let etcd = EtcdServer::start_or_skip().await?;
    let a = Server::start(&etcd).await;
    let b = Server::start(&etcd).await;
    Some((etcd, a, b))
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

#[tokio::test]
async fn a_create_in_a_namespace_already_checked_is_one_etcd_request() {
    let Some((_etcd, a, _)) = two_servers().await else {
        return;
    };
    a.create(CONFIG_MAPS, config_map("first", json!({}))).await;
    let before = a.store.requests_sent();
    a.create(CONFIG_MAPS, config_map("second", json!({}))).await;
    assert_eq!(a.store.requests_sent() - before, 1);
}

#[tokio::test]
async fn an_update_of_an_object_this_server_wrote_is_one_etcd_request() {
    let Some((_etcd, a, _)) = two_servers().await else {
        return;
    };
    a.create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    let before = a.store.requests_sent();
    let (status, _) = a
        .merge_patch(&format!("{CONFIG_MAPS}/cm"), json!({"data": {"b": "2"}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"c": "3"}});
    let (status, body) = a
        .call(
            Method::PATCH,
            &format!("{CONFIG_MAPS}/cm?fieldManager=test"),
            Some(("application/apply-patch+yaml", apply)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(a.store.requests_sent() - before, 2);
}

#[tokio::test]
async fn a_patch_from_stale_memory_is_retried_on_the_current_object_without_a_read() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    let path = format!("{CONFIG_MAPS}/cm");
    a.create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    let (status, _) = b.merge_patch(&path, json!({"data": {"b": "2"}})).await;
    assert_eq!(status, StatusCode::OK);
    let before = a.store.requests_sent();
    let (status, body) = a.merge_patch(&path, json!({"data": {"c": "3"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The update from memory failed, and the failure carried the object B wrote.
    assert_eq!(a.store.requests_sent() - before, 2);
    assert_eq!(b.data(&path).await, json!({"a": "1", "b": "2", "c": "3"}));
}

#[tokio::test]
async fn a_no_op_decided_on_stale_memory_is_checked_against_the_store() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    let path = format!("{CONFIG_MAPS}/cm");
    a.create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    let (status, _) = b.merge_patch(&path, json!({"data": {"a": "2"}})).await;
    assert_eq!(status, StatusCode::OK);
    // From A's memory this changes nothing; the store holds "2", so it must be written.
    let (status, body) = a.merge_patch(&path, json!({"data": {"a": "1"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(b.data(&path).await, json!({"a": "1"}));
}

#[tokio::test]
async fn a_put_is_judged_against_the_stored_resource_version_not_a_remembered_one() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    let path = format!("{CONFIG_MAPS}/cm");
    let created = a
        .create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    let (_, patched) = b.merge_patch(&path, json!({"data": {"a": "2"}})).await;
    let put = |object: &Value, data: Value| {
        let mut object = object.clone();
        object["data"] = data;
        Some(("application/json", object))
    };
    let (status, body) = a
        .call(Method::PUT, &path, put(&created, json!({"a": "x"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // A still remembers the first revision; the client sent the current one.
    let (status, body) = a
        .call(Method::PUT, &path, put(&patched, json!({"a": "3"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(b.data(&path).await, json!({"a": "3"}));
}

#[tokio::test]
async fn a_patch_of_an_object_deleted_through_the_other_server_is_not_found() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    let path = format!("{CONFIG_MAPS}/cm");
    a.create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    let (status, _) = b.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = a.merge_patch(&path, json!({"data": {"b": "2"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_namespace_deleted_through_the_other_server_refuses_creates_at_once() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    for name in ["lab", "gone"] {
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        a.create("/api/v1/namespaces", namespace).await;
        let objects = format!("/api/v1/namespaces/{name}/configmaps");
        a.create(&objects, config_map("before", json!({}))).await;
    }
    // "lab" becomes terminating (it keeps its finalizer: no namespace controller runs).
    let (status, body) = b.call(Method::DELETE, "/api/v1/namespaces/lab", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = a
        .call(
            Method::POST,
            "/api/v1/namespaces/lab/configmaps",
            Some(("application/json", config_map("after", json!({})))),
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);
    assert_eq!(
        refused.1["details"]["causes"][0]["reason"],
        "NamespaceTerminating"
    );
    // "gone" disappears from the store altogether.
    b.store
        .delete("/registry/core/namespaces/gone", None)
        .await
        .expect("delete the namespace");
    let refused = a
        .call(
            Method::POST,
            "/api/v1/namespaces/gone/configmaps",
            Some(("application/json", config_map("after", json!({})))),
        )
        .await;
    assert_eq!(refused.0, StatusCode::NOT_FOUND, "{}", refused.1);
}

#[tokio::test]
async fn a_watch_without_selectors_tells_creates_updates_and_deletes_apart() {
    let Some((_etcd, a, b)) = two_servers().await else {
        return;
    };
    let request = Request::get(format!("{CONFIG_MAPS}?watch=true&resourceVersion=1"))
        .body(Body::empty())
        .expect("request");
    let response = a.router.clone().oneshot(request).await.expect("watch");
    let mut body = response.into_body().into_data_stream();
    let path = format!("{CONFIG_MAPS}/cm");
    b.create(CONFIG_MAPS, config_map("cm", json!({"a": "1"})))
        .await;
    b.merge_patch(&path, json!({"data": {"a": "2"}})).await;
    b.call(Method::DELETE, &path, None).await;
    let mut events = Vec::new();
    let mut pending = Vec::new();
    while events.len() < 3 {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut body))
                .await
                .expect("the watch delivers in time")
                .expect("the watch goes on")
                .expect("a chunk");
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).expect("a JSON event");
            events.push((event["type"].clone(), event["object"]["data"]["a"].clone()));
        }
    }
    assert_eq!(
        events,
        [
            (json!("ADDED"), json!("1")),
            (json!("MODIFIED"), json!("2")),
            (json!("DELETED"), json!("2")),
        ]
    );
}

/// A request through `router`, with a JSON body of the given content type: status and JSON
/// body (`null` if the body is not JSON).
pub(crate) async fn call_router(
    router: &axum::Router,
    method: Method,
    path: &str,
    body: Option<(&str, Value)>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    let body = match body {
        Some((content_type, value)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    let request = request.body(body).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
        .await
        .expect("the handler answers in time")
        .expect("infallible router");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
