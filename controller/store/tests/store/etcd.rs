//! etcd-specific behaviour beyond the conformance suite.

use std::time::Duration;

use devplane_store::testing::EtcdServer;
use devplane_store::{ListOptions, StoreError};

use crate::support::{value, within};

#[tokio::test]
async fn etcd_urls_open_stores_whose_prefixes_do_not_see_each_other() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let address = server.endpoint().trim_start_matches("http://");
    let first = within(
        "open",
        devplane_store::open(&format!("etcd://{address}/one")),
    )
    .await
    .expect("open one");
    let second = within(
        "open",
        devplane_store::open(&format!("etcd://{address}/one-more")),
    )
    .await
    .expect("open two");
    first
        .create("k", value("first"))
        .await
        .expect("create in first");
    second
        .create("k", value("second"))
        .await
        .expect("create in second");
    let listed = first.list(ListOptions::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].value, value("first"));
    assert_eq!(
        second.get("k").await.expect("get").map(|kv| kv.value),
        Some(value("second"))
    );
}

#[tokio::test]
async fn an_unreachable_etcd_is_reported_when_opening() {
    // A port that was free a moment ago has nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        devplane_store::open(&format!("etcd://127.0.0.1:{port}")),
    )
    .await
    .expect("open gives up on its own");
    match result {
        Err(StoreError::Etcd(error)) => println!("unreachable etcd reported as: {error}"),
        Err(other) => panic!("expected an etcd error, got {other}"),
        Ok(_) => panic!("opening an unreachable etcd succeeded"),
    }
}
