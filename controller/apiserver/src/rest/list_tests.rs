//! Label-selected lists through the router: read through the embedded store's label index
//! and by scanning a store that keeps none, they return the same objects, page by page, at
//! the latest and at an older revision.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::http::Method;
use bytes::Bytes;
use devplane_store::{
    Event, Guard, KeyValue, ListOptions, ListPage, ProgressStream, Result, Rev, Store, WatchStream,
};
use serde_json::{Value, json};

use crate::{ApiServer, ApiServerConfig, Caller};

/// A store that keeps no label index: every call but the index's goes to the inner store.
struct Unindexed(Arc<dyn Store>);

#[async_trait]
impl Store for Unindexed {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.0.get(key).await
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.0.create(key, value).await
    }
    async fn create_guarded(&self, key: &str, value: Bytes, guard: &Guard) -> Result<KeyValue> {
        self.0.create_guarded(key, value, guard).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: Rev) -> Result<KeyValue> {
        self.0.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Rev>) -> Result<Event> {
        self.0.delete(key, expected).await
    }
    async fn list(&self, opts: ListOptions) -> Result<ListPage> {
        self.0.list(opts).await
    }
    async fn watch(&self, prefix: &str, after: Rev) -> Result<WatchStream> {
        self.0.watch(prefix, after).await
    }
    async fn watch_progress(&self, prefix: &str, after: Rev) -> Result<ProgressStream> {
        self.0.watch_progress(prefix, after).await
    }
    async fn current_revision(&self) -> Result<Rev> {
        self.0.current_revision().await
    }
    async fn compacted_revision(&self) -> Result<Rev> {
        self.0.compacted_revision().await
    }
    async fn compact(&self, rev: Rev) -> Result<()> {
        self.0.compact(rev).await
    }
}

/// An API server over an in-memory store, indexed or not.
async fn router(indexed: bool) -> Router {
    let store = devplane_store::open("memory://").await.expect("store");
    let store: Arc<dyn Store> = if indexed {
        store
    } else {
        Arc::new(Unindexed(store))
    };
    let config = ApiServerConfig {
        run_controllers: false,
        ..ApiServerConfig::default()
    };
    let server = ApiServer::new(store, config).await.expect("server");
    server.in_process_router(Caller::new("admin", &["system:masters"]))
}

/// A request through the router that must succeed: its JSON body.
async fn call(router: &Router, method: Method, path: &str, body: Option<(&str, Value)>) -> Value {
    let (status, body) = super::tests::call_router(router, method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Creates `object` at `path`, which must succeed.
async fn create(router: &Router, path: &str, object: Value) {
    call(
        router,
        Method::POST,
        path,
        Some(("application/json", object)),
    )
    .await;
}

fn config_maps(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps")
}

/// Namespaces `a` and `b` with ten ConfigMaps each, labelled `shard=<i % 3>`; then some are
/// relabelled and some deleted. Returns the revision before those changes.
async fn fill(router: &Router) -> String {
    for namespace in ["a", "b"] {
        let object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        create(router, "/api/v1/namespaces", object).await;
        for i in 0..10 {
            let object = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "labels": {"shard": (i % 3).to_string()}},
            });
            let path = config_maps(namespace);
            create(router, &path, object).await;
        }
    }
    let before = call(router, Method::GET, "/api/v1/configmaps", None).await;
    let before = before["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    for (namespace, name, labels) in [
        ("a", "cm-1", json!({"shard": "2"})),
        ("a", "cm-2", json!({"shard": "1", "site": "x"})),
        ("b", "cm-4", json!({"shard": null})),
    ] {
        let path = format!("{}/{name}", config_maps(namespace));
        let patch = json!({"metadata": {"labels": labels}});
        call(
            router,
            Method::PATCH,
            &path,
            Some(("application/merge-patch+json", patch)),
        )
        .await;
    }
    for (namespace, name) in [("a", "cm-7"), ("b", "cm-1")] {
        let path = format!("{}/{name}", config_maps(namespace));
        call(router, Method::DELETE, &path, None).await;
    }
    before
}

/// `namespace/name` of every item of a list, following continue tokens.
async fn names(router: &Router, path: &str, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{path}?{query}");
        if let Some(token) = &token {
            url.push_str(&format!("&continue={token}"));
        }
        let list = call(router, Method::GET, &url, None).await;
        for item in list["items"].as_array().expect("items") {
            let meta = &item["metadata"];
            names.push(format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or("")
            ));
        }
        match list["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return names,
        }
    }
}

#[tokio::test]
async fn label_selected_lists_read_through_the_index_equal_those_that_scan() {
    let indexed = router(true).await;
    let scanning = router(false).await;
    let before = fill(&indexed).await;
    let scanning_before = fill(&scanning).await;
    let selectors = [
        "shard%3D1",
        "shard%3D%3D1",
        "shard%20in%20(0,2)",
        "shard%3D1,site!%3Dx",
        "shard!%3D1",
        "shard",
        "shard%3D9",
    ];
    for selector in selectors {
        for path in ["/api/v1/configmaps".to_string(), config_maps("a")] {
            for page in ["", "&limit=2"] {
                let query = format!("labelSelector={selector}{page}");
                let read = names(&indexed, &path, &query).await;
                assert_eq!(
                    read,
                    names(&scanning, &path, &query).await,
                    "{path}?{query}"
                );
                let mut sorted = read.clone();
                sorted.sort();
                assert_eq!(read, sorted, "{path}?{query}: in key order");
            }
        }
    }
    assert_eq!(
        names(&indexed, "/api/v1/configmaps", "labelSelector=shard%3D1").await,
        vec!["a/cm-2", "a/cm-4", "b/cm-7"],
    );
    assert_eq!(before, scanning_before, "both stores saw the same writes");
    let old =
        format!("labelSelector=shard%3D1&resourceVersion={before}&resourceVersionMatch=Exact");
    let expected = vec!["a/cm-1", "a/cm-4", "a/cm-7", "b/cm-1", "b/cm-4", "b/cm-7"];
    assert_eq!(names(&indexed, "/api/v1/configmaps", &old).await, expected);
    assert_eq!(names(&scanning, "/api/v1/configmaps", &old).await, expected);
}

#[tokio::test]
async fn a_continued_label_selected_list_keeps_its_revision_across_relabels() {
    let router = router(true).await;
    let path = config_maps("default");
    for i in 0..6 {
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "labels": {"shard": "1"}},
        });
        create(&router, &path, object).await;
    }
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-7", "labels": {"shard": "2"}}});
    create(&router, &path, other).await;
    let first = call(
        &router,
        Method::GET,
        &format!("{path}?labelSelector=shard%3D1&limit=2"),
        None,
    )
    .await;
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    // Relabel one not yet listed out of the selection and another into it, and add a
    // matching one: the rest of the list sees none of it.
    for (name, shard) in [("cm-4", "2"), ("cm-7", "1")] {
        let patch = json!({"metadata": {"labels": {"shard": shard}}});
        call(
            &router,
            Method::PATCH,
            &format!("{path}/{name}"),
            Some(("application/merge-patch+json", patch)),
        )
        .await;
    }
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-9", "labels": {"shard": "1"}}});
    create(&router, &path, object).await;
    let rest = call(
        &router,
        Method::GET,
        &format!("{path}?labelSelector=shard%3D1&continue={token}"),
        None,
    )
    .await;
    let rest: Vec<&str> = rest["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(rest, vec!["cm-2", "cm-3", "cm-4", "cm-5"]);
    let now = names(&router, &path, "labelSelector=shard%3D1").await;
    assert_eq!(
        now,
        vec![
            "default/cm-0",
            "default/cm-1",
            "default/cm-2",
            "default/cm-3",
            "default/cm-5",
            "default/cm-7",
            "default/cm-9"
        ]
    );
}

#[tokio::test]
async fn a_continued_list_takes_no_other_resource_version() {
    let router = router(true).await;
    fill(&router).await;
    let first = call(
        &router,
        Method::GET,
        &format!("{}?limit=3", config_maps("a")),
        None,
    )
    .await;
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let rv = first["metadata"]["resourceVersion"].as_str().expect("rv");
    let continued = |extra: &str| format!("{}?limit=3&continue={token}{extra}", config_maps("a"));
    for (extra, message) in [
        (
            format!("&resourceVersion={rv}"),
            "specifying resource version is not allowed when using continue",
        ),
        (
            format!("&resourceVersion={rv}&resourceVersionMatch=Exact"),
            "resourceVersionMatch is forbidden when continue is provided",
        ),
    ] {
        let (status, body) =
            super::tests::call_router(&router, Method::GET, &continued(&extra), None).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{body}"
        );
    }
    // resourceVersion=0 (what pagers that keep the first request's options send) is allowed.
    call(&router, Method::GET, &continued("&resourceVersion=0"), None).await;
    call(&router, Method::GET, &continued(""), None).await;
}
