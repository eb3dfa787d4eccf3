//! etcd-specific behaviour beyond the conformance suite.

use std::time::Duration;

use bytes::Bytes;
use devplane_store::testing::EtcdServer;
use devplane_store::{EtcdStore, Guard, KeyValue, ListOptions, Recent, Store, StoreError};

use crate::support::{next_event, value, within};

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

/// Creates that arrive together share etcd transactions, each keeping its own outcome: the
/// new keys are written, an existing key is refused, and two creates of one key never share a
/// transaction (one wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_arrive_together_share_transactions() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    store
        .create("burst/taken", value("first"))
        .await
        .expect("create taken");
    let before = store.requests_sent();
    let keys: Vec<String> = (0..300)
        .map(|i| format!("burst/{:03}", i % 250))
        .chain(std::iter::once("burst/taken".to_owned()))
        .collect();
    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { (key.clone(), store.create(&key, value(&key)).await) })
        })
        .collect();
    let mut created = std::collections::BTreeMap::new();
    let mut refused = Vec::new();
    for task in tasks {
        match within("create", task).await.expect("create task") {
            (key, Ok(kv)) => {
                assert_eq!(kv.value, value(&key));
                assert!(created.insert(key, kv).is_none(), "a key created twice");
            }
            (key, Err(StoreError::AlreadyExists { key: refused_key })) => {
                assert_eq!(key, refused_key);
                refused.push(key);
            }
            (key, Err(other)) => panic!("create {key}: {other}"),
        }
    }
    let requests = store.requests_sent() - before;
    assert_eq!(created.len(), 250, "each distinct new key is created once");
    assert_eq!(refused.len(), 51, "repeated and existing keys are refused");
    assert!(requests < 150, "301 creates took {requests} round trips");
    let page = store
        .list(ListOptions {
            prefix: "burst/".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 251);
    for kv in &page.items {
        let expected = created
            .get(&kv.key)
            .map_or_else(|| value("first"), |made| made.value.clone());
        assert_eq!(kv.value, expected, "{}", kv.key);
        if let Some(made) = created.get(&kv.key) {
            assert_eq!(kv.mod_rev, made.mod_rev, "{}", kv.key);
        }
    }
}

/// Updates that arrive together share etcd transactions, each keeping its own outcome: a
/// stale one conflicts with the current value, one of a missing key is not found. Each gets a
/// revision of its own; a list at any of them sees every key, those updated later in the same
/// transaction with the values they had before; a watch from one of them gets exactly the
/// updates after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_arrive_together_share_transactions_and_reads_inside_them_see_before() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let mut originals = Vec::new();
    for i in 0..100 {
        let key = format!("upd/{i:03}");
        originals.push(store.create(&key, value("old")).await.expect("create"));
    }
    // The burst's update of upd/000 names the revision this update replaces: it conflicts.
    store
        .update("upd/000", value("moved"), originals[0].mod_rev)
        .await
        .expect("update upd/000");
    let new_value = |key: &str| value(&format!("new {key}"));
    let before = store.requests_sent();
    let mut tasks: Vec<_> = originals
        .iter()
        .map(|kv| {
            let (store, kv) = (store.clone(), kv.clone());
            tokio::spawn(async move {
                let result = store.update(&kv.key, new_value(&kv.key), kv.mod_rev).await;
                (kv.key, result)
            })
        })
        .collect();
    let missing = store.clone();
    tasks.push(tokio::spawn(async move {
        let result = missing.update("upd/missing", value("x"), 12_345).await;
        ("upd/missing".to_owned(), result)
    }));
    let mut updated = std::collections::BTreeMap::new();
    for task in tasks {
        match within("update", task).await.expect("update task") {
            (key, Ok(kv)) => {
                assert_eq!(kv.value, new_value(&key));
                updated.insert(key, kv);
            }
            (
                key,
                Err(StoreError::Conflict {
                    key: refused,
                    current,
                }),
            ) => {
                assert_eq!((key.as_str(), refused.as_str()), ("upd/000", "upd/000"));
                assert_eq!(current.map(|kv| kv.value), Some(value("moved")));
            }
            (key, Err(StoreError::NotFound { key: missing })) => {
                assert_eq!(
                    (key.as_str(), missing.as_str()),
                    ("upd/missing", "upd/missing")
                );
            }
            (key, Err(other)) => panic!("update {key}: {other}"),
        }
    }
    let requests = store.requests_sent() - before;
    assert_eq!(updated.len(), 99);
    assert!(requests < 60, "101 updates took {requests} round trips");
    let revisions: std::collections::BTreeSet<_> = updated.values().map(|kv| kv.mod_rev).collect();
    assert_eq!(
        revisions.len(),
        99,
        "every update has a revision of its own"
    );
    let as_of = |key: &str, rev: devplane_store::Rev| match updated.get(key) {
        Some(kv) if kv.mod_rev <= rev => kv.value.clone(),
        _ if key == "upd/000" => value("moved"),
        _ => value("old"),
    };
    for kv in updated.values().step_by(7) {
        let page = store
            .list(ListOptions {
                prefix: "upd/".into(),
                rev: Some(kv.mod_rev),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(page.items.len(), 100, "a list at {}", kv.mod_rev);
        for item in &page.items {
            assert_eq!(
                item.value,
                as_of(&item.key, kv.mod_rev),
                "{} at {}",
                item.key,
                kv.mod_rev
            );
            assert!(item.mod_rev <= kv.mod_rev, "{item:?} at {}", kv.mod_rev);
        }
    }
    // A watch from the middle of the burst: the updates after it, in revision order, then
    // the next write.
    let mut by_revision: Vec<&KeyValue> = updated.values().collect();
    by_revision.sort_by_key(|kv| kv.mod_rev);
    let after = by_revision[by_revision.len() / 2].mod_rev;
    let mut watch = within("watch", store.watch("upd/", after))
        .await
        .expect("watch");
    for kv in by_revision.iter().filter(|kv| kv.mod_rev > after) {
        assert_eq!(&next_event(&mut watch).await.kv, *kv);
    }
    let last = store
        .update("upd/050", value("last"), updated["upd/050"].mod_rev)
        .await
        .expect("a later update");
    assert_eq!(next_event(&mut watch).await.kv, last);
}

/// Values that start with a zero byte, which the backend's revision envelope also does, are
/// stored and read back unchanged, alone or created together with others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_starting_with_a_zero_byte_round_trip() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let odd = |i: usize| Bytes::from(format!("\0s\0\0{i}"));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create(&format!("zero/{i:02}"), odd(i)).await })
        })
        .collect();
    for task in tasks {
        within("create", task)
            .await
            .expect("create task")
            .expect("create");
    }
    let first = store.get("zero/00").await.expect("get").expect("present");
    assert_eq!(first.value, odd(0));
    let updated = store
        .update("zero/00", odd(99), first.mod_rev)
        .await
        .expect("update");
    assert_eq!(store.get("zero/00").await.expect("get"), Some(updated));
    let page = store
        .list(ListOptions {
            prefix: "zero/".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    for (i, kv) in page.items.iter().enumerate().skip(1) {
        assert_eq!(kv.value, odd(i));
    }
}

/// Watches open on `server` (etcd's own count), once it equals `want`.
async fn wait_for_etcd_watches(server: &EtcdServer, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = server
            .metric("etcd_debugging_mvcc_watcher_total")
            .expect("etcd metrics");
        if open == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd has {open} watches open, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watchers of one prefix share one etcd watch: each gets every event once, a watcher that
/// joins later replays the recent events after its start, one that starts before what the
/// shared watch holds gets an etcd watch of its own, and the etcd watches close when the
/// watchers go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_one_prefix_share_one_etcd_watch() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let early = store
        .create("shared/0", value("0"))
        .await
        .expect("create 0");
    let start = store.current_revision().await.expect("current");
    let mut watchers = Vec::new();
    for _ in 0..10 {
        watchers.push(
            within("watch", store.watch("shared/", start))
                .await
                .expect("watch"),
        );
    }
    wait_for_etcd_watches(&server, 1.0).await;
    let mut written = Vec::new();
    for i in 1..=5 {
        written.push(
            store
                .create(&format!("shared/{i}"), value(&i.to_string()))
                .await
                .expect("create"),
        );
    }
    for watcher in &mut watchers {
        for kv in &written {
            assert_eq!(&next_event(watcher).await.kv, kv);
        }
    }
    // Joins the hub: the events after the second write, then live ones.
    let mut late = within("watch", store.watch("shared/", written[1].mod_rev))
        .await
        .expect("late watch");
    for kv in &written[2..] {
        assert_eq!(&next_event(&mut late).await.kv, kv);
    }
    // Before the hub's start: an etcd watch of its own.
    let mut older = within("watch", store.watch("shared/", early.mod_rev - 1))
        .await
        .expect("older watch");
    assert_eq!(next_event(&mut older).await.kv, early);
    for kv in &written {
        assert_eq!(&next_event(&mut older).await.kv, kv);
    }
    wait_for_etcd_watches(&server, 2.0).await;
    drop((watchers, late, older));
    wait_for_etcd_watches(&server, 0.0).await;
}

/// The next event's key and value on a watch with progress.
async fn next_kv(stream: &mut devplane_store::ProgressStream) -> KeyValue {
    use devplane_store::WatchItem;
    use futures::StreamExt;
    loop {
        match within("event", stream.next()).await {
            Some(Ok(WatchItem::Event(event))) => return event.kv,
            Some(Ok(WatchItem::Progress(_))) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// A watcher of a narrower prefix joins the watch of a broader one (as the watchers of one
/// resource join the garbage collector's watch of everything) and gets only its own keys, and
/// the progress of the others while its own are quiet; it does not join a watch without
/// previous values when it needs them, nor one whose recent events do not reach back to its
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_a_narrower_prefix_joins_the_watch_of_a_broader_one() {
    use devplane_store::WatchItem;
    use futures::StreamExt;
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let early = store.create("all/a/0", value("0")).await.expect("early");
    let start = store.current_revision().await.expect("current");
    let mut broad = within("watch", store.watch_progress_without_prev("all/", start))
        .await
        .expect("broad watch");
    wait_for_etcd_watches(&server, 1.0).await;
    let mut narrow = within("watch", store.watch_progress_without_prev("all/a/", start))
        .await
        .expect("narrow watch");
    let mut quiet = within("watch", store.watch_progress_without_prev("all/q/", start))
        .await
        .expect("quiet watch");
    wait_for_etcd_watches(&server, 1.0).await;
    let a1 = store.create("all/a/1", value("1")).await.expect("a1");
    let b1 = store.create("all/b/1", value("1")).await.expect("b1");
    let a2 = store.create("all/a/2", value("2")).await.expect("a2");
    for kv in [&a1, &b1, &a2] {
        assert_eq!(&next_kv(&mut broad).await, kv);
    }
    for kv in [&a1, &a2] {
        assert_eq!(&next_kv(&mut narrow).await, kv);
    }
    // Writes elsewhere move the quiet watcher's progress on (at most once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut written = b1.clone();
    let progress = loop {
        written = store
            .update("all/b/1", value("again"), written.mod_rev)
            .await
            .expect("update");
        match tokio::time::timeout(Duration::from_millis(200), quiet.next()).await {
            Ok(Some(Ok(WatchItem::Progress(rev)))) => break rev,
            Ok(other) => panic!("expected progress on a quiet prefix, got {other:?}"),
            Err(_) => assert!(
                std::time::Instant::now() < deadline,
                "no progress on a quiet prefix"
            ),
        }
    };
    assert!(progress > a2.mod_rev && progress <= written.mod_rev);
    // Needs previous values, which the broad watch does not carry: a watch of its own.
    let mut with_prev = within("watch", store.watch("all/a/", start))
        .await
        .expect("watch with previous values");
    assert_eq!(next_event(&mut with_prev).await.kv, a1);
    wait_for_etcd_watches(&server, 2.0).await;
    // Starts before the broad watch: a watch of its own prefix, not of everything.
    let mut older = within(
        "watch",
        store.watch_progress_without_prev("all/a/", early.mod_rev - 1),
    )
    .await
    .expect("older watch");
    for kv in [&early, &a1, &a2] {
        assert_eq!(&next_kv(&mut older).await, kv);
    }
    wait_for_etcd_watches(&server, 3.0).await;
    drop((broad, narrow, quiet, with_prev, older));
    wait_for_etcd_watches(&server, 0.0).await;
}

/// A watch of a quiet prefix learns from etcd how far it got with writes elsewhere, so a
/// watcher's bookmarks move on and it resumes without a re-list after a compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_quiet_prefix_reports_the_progress_of_writes_elsewhere() {
    use devplane_store::WatchItem;
    use futures::StreamExt;
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let start = store.current_revision().await.expect("current");
    let mut quiet = within("watch", store.watch_progress("quiet/", start))
        .await
        .expect("watch");
    let mut last = start;
    for i in 0..3 {
        last = store
            .create(&format!("busy/{i}"), value("x"))
            .await
            .expect("create")
            .mod_rev;
    }
    loop {
        match within("progress", quiet.next()).await {
            Some(Ok(WatchItem::Progress(rev))) if rev >= last => break,
            Some(Ok(WatchItem::Progress(rev))) => assert!(rev > start, "progress {rev}"),
            other => panic!("expected progress on a quiet prefix, got {other:?}"),
        }
    }
}

/// Guarded creates that arrive together check their shared guard once; when it has changed,
/// each still gets its own refusal naming the guard, and creates under the current guard
/// succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_creates_that_arrive_together_share_the_guard_check() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let namespace = store.create("ns", value("active")).await.expect("ns");
    let stale = Guard {
        key: "ns".into(),
        mod_rev: namespace.mod_rev,
    };
    let changed = store
        .update("ns", value("terminating"), namespace.mod_rev)
        .await
        .expect("update ns");
    let current = Guard {
        key: "ns".into(),
        mod_rev: changed.mod_rev,
    };
    let creates = |guard: Guard, prefix: &'static str| {
        (0..60)
            .map(|i| {
                let (store, guard) = (store.clone(), guard.clone());
                tokio::spawn(async move {
                    store
                        .create_guarded(&format!("ns/{prefix}{i:02}"), value("x"), &guard)
                        .await
                })
            })
            .collect::<Vec<_>>()
    };
    let before = store.requests_sent();
    for task in creates(stale, "refused-") {
        match within("create", task).await.expect("task") {
            Err(StoreError::Conflict { key, current }) => {
                assert_eq!(key, "ns");
                assert_eq!(current, Some(changed.clone()));
            }
            other => panic!("expected a conflict on the guard, got {other:?}"),
        }
    }
    for task in creates(current, "made-") {
        within("create", task)
            .await
            .expect("task")
            .expect("a create under the current guard");
    }
    assert!(
        store.requests_sent() - before < 150,
        "the creates were not committed together"
    );
    let page = store
        .list(ListOptions {
            prefix: "ns/".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 60);
    assert!(page.items.iter().all(|kv| kv.key.starts_with("ns/made-")));
}

/// A guarded create never shares a transaction with a write of its guard key: etcd checks
/// every compare of a transaction against the state before it, so the create would pass its
/// guard and land after the write that changed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_create_is_never_committed_together_with_a_write_of_its_guard() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let (store, _) = two_processes(&server).await;
    let namespace = store.create("ns", value("active")).await.expect("ns");
    let guard = Guard {
        key: "ns".into(),
        mod_rev: namespace.mod_rev,
    };
    // Writes that keep the transaction slot busy, so the rest queue up and go together.
    let fillers: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create(&format!("other/{i:02}"), value("x")).await })
        })
        .collect();
    let update = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update("ns", value("terminating"), namespace.mod_rev)
                .await
        })
    };
    let creates: Vec<_> = (0..40)
        .map(|i| {
            let (store, guard) = (store.clone(), guard.clone());
            tokio::spawn(async move {
                store
                    .create_guarded(&format!("ns/obj-{i:02}"), value("x"), &guard)
                    .await
            })
        })
        .collect();
    for filler in fillers {
        within("filler", filler)
            .await
            .expect("task")
            .expect("filler");
    }
    let changed = within("update", update)
        .await
        .expect("task")
        .expect("update ns");
    let (mut made, mut refused) = (0, 0);
    for task in creates {
        match within("create", task).await.expect("task") {
            Ok(kv) => {
                made += 1;
                assert!(
                    kv.mod_rev < changed.mod_rev,
                    "{} was created at {} after its guard changed at {}",
                    kv.key,
                    kv.mod_rev,
                    changed.mod_rev
                );
            }
            Err(StoreError::Conflict { key, .. }) => {
                assert_eq!(key, "ns");
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(made + refused, 40);
}
