//! etcd-specific behaviour beyond the conformance suite.

use std::time::Duration;

use devplane_store::testing::EtcdServer;
use devplane_store::{EtcdStore, Guard, KeyValue, ListOptions, Recent, Store, StoreError};

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

/// Two stores on one prefix, as two processes sharing an etcd would have.
async fn two_processes(server: &EtcdServer) -> (EtcdStore, EtcdStore) {
    let endpoints = [server.endpoint().to_owned()];
    let connect = || EtcdStore::connect(&endpoints, "/shared");
    let first = within("connect", connect()).await.expect("connect first");
    let second = within("connect", connect()).await.expect("connect second");
    (first, second)
}

fn remembered(store: &EtcdStore, key: &str) -> Option<KeyValue> {
    match store.recent(key) {
        Some(Recent::Value(kv)) => Some(kv),
        other => panic!("expected a remembered value of {key}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_store_remembers_what_this_process_last_read_or_wrote() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    assert_eq!(store.recent("k"), None);
    let created = store.create("k", value("v1")).await.expect("create");
    assert_eq!(remembered(&store, "k"), Some(created.clone()));
    let updated = store
        .update("k", value("v2"), created.mod_rev)
        .await
        .expect("update");
    assert_eq!(updated.create_rev, created.create_rev);
    assert_eq!(remembered(&store, "k"), Some(updated.clone()));
    store.delete("k", None).await.expect("delete");
    assert_eq!(store.recent("k"), Some(Recent::Absent));
    assert_eq!(store.get("never").await.expect("get"), None);
    assert_eq!(store.recent("never"), Some(Recent::Absent));
}

#[tokio::test]
async fn an_update_from_a_stale_memory_conflicts_and_learns_the_current_value() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (ours, theirs) = two_processes(&server).await;
    let created = ours.create("k", value("v1")).await.expect("create");
    // The other process writes; our memory still holds v1.
    let current = theirs.get("k").await.expect("get").expect("present");
    let newer = theirs
        .update("k", value("theirs"), current.mod_rev)
        .await
        .expect("their update");
    let stale = remembered(&ours, "k").expect("remembered");
    assert_eq!(stale, created);
    let before = ours.requests_sent();
    match ours.update("k", value("ours"), stale.mod_rev).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, Some(newer.clone())),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The failed transaction reported the current value: the retry needs no read.
    assert_eq!(remembered(&ours, "k"), Some(newer.clone()));
    let retried = ours
        .update("k", value("ours"), newer.mod_rev)
        .await
        .expect("retry");
    assert_eq!(ours.requests_sent() - before, 2);
    assert_eq!(retried.create_rev, created.create_rev);
    assert_eq!(
        theirs.get("k").await.expect("get").map(|kv| kv.value),
        Some(value("ours"))
    );
}

#[tokio::test]
async fn a_key_deleted_and_recreated_elsewhere_is_never_updated_from_memory() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (ours, theirs) = two_processes(&server).await;
    let created = ours.create("k", value("v1")).await.expect("create");
    theirs.delete("k", None).await.expect("their delete");
    let again = theirs.create("k", value("v2")).await.expect("their create");
    match ours.update("k", value("ours"), created.mod_rev).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, Some(again.clone())),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The new incarnation's create_rev comes back, not the remembered one.
    let updated = ours
        .update("k", value("ours"), again.mod_rev)
        .await
        .expect("update");
    assert_eq!(updated.create_rev, again.create_rev);
    // A create of a key that exists reports it as the current value.
    match ours.create("k", value("x")).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(remembered(&ours, "k"), Some(updated));
}

#[tokio::test]
async fn a_write_is_one_round_trip() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let namespace = store
        .create("ns", value("active"))
        .await
        .expect("create ns");
    let guard = Guard {
        key: "ns".into(),
        mod_rev: namespace.mod_rev,
    };
    let before = store.requests_sent();
    let created = store
        .create_guarded("ns/a", value("a"), &guard)
        .await
        .expect("guarded create");
    let updated = store
        .update("ns/a", value("b"), created.mod_rev)
        .await
        .expect("update");
    store
        .delete("ns/a", Some(updated.mod_rev))
        .await
        .expect("delete");
    assert_eq!(store.requests_sent() - before, 3);
}
