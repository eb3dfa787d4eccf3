//! The admin routes, exercised through the router without a socket.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

async fn get_text(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), router.clone().oneshot(request))
        .await
        .expect("the handler answers in time")
        .expect("infallible router");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn metrics_lists_every_controller_metric_after_reconciles_are_recorded() {
    let admin = Admin::new();
    let leader = LeaderState::default();
    let metrics = ControllerMetrics::register(&admin, leader.clone());
    metrics.start("device").finish();
    let running = metrics.start("device");
    metrics.error("device", "NotFound");
    devplane_reconcilers::Observer::queued(&metrics, "device", 3);
    leader.set(true);
    let router = router(admin);

    let (status, content_type, text) = get_text(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
    for line in [
        r#"devplane_reconciles_total{controller="device"} 2"#,
        r#"devplane_reconcile_errors_total{controller="device",category="NotFound"} 1"#,
        r#"devplane_reconcile_duration_seconds_count{controller="device"} 1"#,
        r#"devplane_reconciles_in_flight{controller="device"} 1"#,
        r#"devplane_reconcile_queue_depth{controller="device"} 3"#,
        "devplane_leader 1",
        "# TYPE devplane_reconcile_duration_seconds histogram",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    drop(running);
    leader.set(false);
    let (_, _, text) = get_text(&router, "/metrics").await;
    assert!(
        text.contains(r#"devplane_reconciles_in_flight{controller="device"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"devplane_reconcile_duration_seconds_count{controller="device"} 2"#),
        "{text}"
    );
    assert!(text.contains("devplane_leader 0"), "{text}");
}

#[tokio::test]
async fn readyz_answers_503_with_the_reason_until_the_process_is_ready() {
    let admin = Admin::new();
    let router = router(admin.clone());

    let (status, _, body) = get_text(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: starting\n");

    admin.set_ready();
    let (status, _, body) = get_text(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");

    admin.set_not_ready("the API server is unreachable");
    let (status, _, body) = get_text(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("the API server is unreachable"), "{body}");
}

#[tokio::test]
async fn healthz_answers_ok_even_before_the_process_is_ready() {
    let router = router(Admin::new());
    let (status, _, body) = get_text(&router, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn serve_answers_on_its_socket_and_stops_on_shutdown() {
    let admin = Admin::new();
    admin.set_ready();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("bound address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, admin, shutdown.clone()));

    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .expect("send the request");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("read the answer");
        answer
    })
    .await
    .expect("the server answers in time");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops in time")
        .expect("the server task")
        .expect("serve");
}
