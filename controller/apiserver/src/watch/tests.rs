use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use bytes::Bytes;

use super::Chunk;
use crate::rest::WriteOptions;
use crate::{ApiServer, ApiServerConfig, Caller};

async fn config_map(server: &ApiServer, name: &str) -> u64 {
    let resource = server
        .inner
        .registry()
        .get("", "v1", "configmaps")
        .expect("configmaps");
    let written = server
        .inner
        .create(
            &resource,
            Some("default"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
            &WriteOptions::internal("test"),
        )
        .await
        .expect("created");
    written.object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("a resourceVersion")
}

#[tokio::test]
async fn bookmarks_of_a_quiet_resource_carry_the_progress_of_writes_elsewhere() {
    let store = devplane_store::open("memory://").await.expect("store");
    let config = ApiServerConfig {
        bookmark_interval: Duration::from_millis(100),
        ..ApiServerConfig::default()
    };
    let server = ApiServer::new(store, config).await.expect("server");
    let start = config_map(&server, "first").await;
    let router = server.in_process_router(Caller::new("admin", &["system:masters"]));
    let request = Request::get(format!(
        "/api/v1/namespaces/default/secrets?watch=true&allowWatchBookmarks=true&resourceVersion={start}"
    ))
    .body(Body::empty())
    .expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    let mut last = 0;
    for i in 0..600 {
        last = config_map(&server, &format!("c{i}")).await;
    }
    let mut body = response.into_body();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(2), body.frame()).await
        else {
            break;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let event: Value = serde_json::from_slice(line).expect("a JSON line");
            assert_eq!(event["type"], "BOOKMARK", "no secret was written: {event}");
            let rv: u64 = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .expect("a resourceVersion");
            seen.push(rv);
        }
        if seen.last().is_some_and(|rv| *rv + 256 > last) {
            break;
        }
    }
    let newest = seen.last().copied().unwrap_or(0);
    assert!(
        newest + 256 > last && newest > start,
        "bookmarks {seen:?} should follow the writes elsewhere from {start} to {last}"
    );
}

#[test]
fn a_cached_event_is_sent_as_its_json_wrapped_in_the_event_type_and_parses_back() {
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}});
    let decoded = super::Decoded::new(serde_json::to_vec(&object).expect("encodes"));
    for kind in ["ADDED", "MODIFIED", "DELETED"] {
        let line = decoded.line(kind);
        let event: Value = serde_json::from_slice(&line).expect("a JSON line");
        assert_eq!(event, json!({"type": kind, "object": object}));
        assert!(line.ends_with(b"}\n"));
        // Built once, then shared by every watcher.
        assert_eq!(decoded.line(kind).as_ptr(), line.as_ptr());
    }
    assert_eq!(decoded.object(), Some(&object));
}

#[test]
fn a_chunk_of_one_line_shares_it_and_several_lines_are_joined() {
    assert_eq!(Chunk::default().take(), None);
    let line = Bytes::from_static(b"{\"type\":\"ADDED\"}\n");
    let mut one = Chunk::default();
    one.push(line.clone());
    let single = one.take().expect("a line");
    assert_eq!(single.as_ptr(), line.as_ptr(), "one line is sent as it is");
    let mut two = Chunk::default();
    two.push(line.clone());
    two.push(Bytes::from_static(b"{\"type\":\"DELETED\"}\n"));
    assert_eq!(two.len(), line.len() * 2 + 2);
    assert_eq!(
        two.take().expect("lines"),
        Bytes::from_static(b"{\"type\":\"ADDED\"}\n{\"type\":\"DELETED\"}\n")
    );
}

/// The JSON body of a request through the router that must succeed.
async fn read_json(
    router: &axum::Router,
    method: axum::http::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let body = body.map(|body| ("application/json", body));
    let (status, json) = crate::rest::tests::call_router(router, method, path, body).await;
    assert!(status.is_success(), "{status}: {json}");
    json
}

/// The event stream of a watch.
async fn open_watch(router: &axum::Router, path: &str) -> Body {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// The first event of a watch's stream.
async fn first_event(events: &mut Body) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), events.frame())
        .await
        .expect("an event in time")
        .expect("an event")
        .expect("a frame");
    let data = frame.into_data().expect("data");
    let line = data.split(|b| *b == b'\n').next().expect("a line");
    serde_json::from_slice(line).expect("a JSON line")
}

#[tokio::test]
async fn an_object_reads_the_same_through_get_list_and_watch_as_it_was_created() {
    let store = devplane_store::open("memory://").await.expect("store");
    let config = ApiServerConfig {
        run_controllers: false,
        ..ApiServerConfig::default()
    };
    let server = ApiServer::new(store, config).await.expect("server");
    let router = server.in_process_router(Caller::new("admin", &["system:masters"]));
    let path = "/api/v1/namespaces/default/configmaps";
    let get = axum::http::Method::GET;
    let before = read_json(&router, get.clone(), path, None).await;
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list revision")
        .to_string();
    let mut watch = open_watch(&router, &format!("{path}?watch=true&resourceVersion={rv}")).await;

    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "labels": {"app": "x"}, "annotations": {"note": "é \"q\"\n"}},
        "data": {"k": "v", "nested": "{\"json\": [1]}"}
    });
    let created = read_json(&router, axum::http::Method::POST, path, Some(object)).await;
    assert_eq!(created["metadata"]["labels"]["app"], "x");

    let event = first_event(&mut watch).await;
    assert_eq!(event, json!({"type": "ADDED", "object": created}));
    assert_eq!(
        read_json(&router, get.clone(), &format!("{path}/a"), None).await,
        created
    );
    for query in [
        "",
        "?labelSelector=app%3Dx",
        "?fieldSelector=metadata.name%3Da",
    ] {
        let list = read_json(&router, get.clone(), &format!("{path}{query}"), None).await;
        assert_eq!(list["items"], json!([created]), "{query}");
    }
    let mut initial = open_watch(&router, &format!("{path}?watch=true")).await;
    assert_eq!(
        first_event(&mut initial).await,
        json!({"type": "ADDED", "object": created})
    );
}

async fn json_of(response: axum::response::Response) -> Value {
    let body = response.into_body().collect().await.expect("body");
    serde_json::from_slice(&body.to_bytes()).expect("JSON")
}

#[tokio::test]
async fn an_object_leaving_the_selection_is_deleted_with_its_last_matching_state_and_added_on_return()
 {
    let store = devplane_store::open("memory://").await.expect("store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("server");
    let router = server.in_process_router(Caller::new("admin", &["system:masters"]));
    let send = |request: Request<Body>| router.clone().oneshot(request);
    let created = send(
        Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"metadata":{"name":"cm","labels":{"instance":"a"}},"data":{"k":"1"}}"#,
            ))
            .expect("request"),
    )
    .await
    .expect("infallible");
    let created = json_of(created).await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let watch = send(
        Request::get(format!(
            "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=instance%3Da&resourceVersion={rv}"
        ))
        .body(Body::empty())
        .expect("request"),
    )
    .await
    .expect("infallible");
    let patched = send(
        Request::patch("/api/v1/namespaces/default/configmaps/cm")
            .header("content-type", "application/merge-patch+json")
            .body(Body::from(
                r#"{"metadata":{"labels":{"instance":"b"}},"data":{"k":"2"}}"#,
            ))
            .expect("request"),
    )
    .await
    .expect("infallible");
    let patched = json_of(patched).await;
    let mut body = watch.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event in time")
        .expect("a frame")
        .expect("data");
    let line = frame.data_ref().expect("data");
    let event: Value = serde_json::from_slice(line.split(|b| *b == b'\n').next().expect("a line"))
        .expect("a JSON line");
    assert_eq!(event["type"], "DELETED");
    assert_eq!(
        event["object"]["metadata"]["labels"]["instance"], "a",
        "{event}"
    );
    assert_eq!(event["object"]["data"]["k"], "1");
    assert_eq!(
        event["object"]["metadata"]["resourceVersion"], patched["metadata"]["resourceVersion"],
        "at the event's resourceVersion"
    );
    // Out of the selection nothing is heard; coming back is an ADDED, staying a MODIFIED.
    for patch in [
        r#"{"data":{"k":"3"}}"#,
        r#"{"metadata":{"labels":{"instance":"a"}}}"#,
        r#"{"data":{"k":"4"}}"#,
    ] {
        let response = send(
            Request::patch("/api/v1/namespaces/default/configmaps/cm")
                .header("content-type", "application/merge-patch+json")
                .body(Body::from(patch))
                .expect("request"),
        )
        .await
        .expect("infallible");
        assert_eq!(response.status(), 200, "{patch}");
    }
    let mut events = Vec::new();
    while events.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("events in time")
            .expect("a frame")
            .expect("data");
        let data = frame.data_ref().expect("data");
        events.extend(
            data.split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_json::from_slice::<Value>(line).expect("a JSON line")),
        );
    }
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default(),
                e["object"]["data"]["k"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen, [("ADDED", "3"), ("MODIFIED", "4")]);
}

#[tokio::test]
async fn a_watch_with_bookmarks_gets_one_shortly_before_its_timeout() {
    let store = devplane_store::open("memory://").await.expect("store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("server");
    let start = config_map(&server, "first").await;
    let router = server.in_process_router(Caller::new("admin", &["system:masters"]));
    // A quiet resource, a timeout far below the bookmark interval (60 s).
    let request = Request::get(format!(
        "/api/v1/namespaces/default/secrets?watch=true&allowWatchBookmarks=true&timeoutSeconds=3&resourceVersion={start}"
    ))
    .body(Body::empty())
    .expect("request");
    let body = router
        .oneshot(request)
        .await
        .expect("infallible")
        .into_body();
    let all = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the watch ends at its timeout")
        .expect("body")
        .to_bytes();
    let events: Vec<Value> = all
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(
        events[0]["object"]["metadata"]["resourceVersion"],
        start.to_string()
    );
}
