//! The conformance suite every backend must pass (feature `testing`).
//!
//! Each case is an async function that takes a fresh, empty store. Instantiate all of them
//! as `#[tokio::test]`s for one backend with [`conformance_suite!`](crate::conformance_suite):
//!
//! ```text
//! mod memory {
//!     devplane_store::conformance_suite!(|| async {
//!         let store = devplane_store::open("memory://").await.expect("memory store");
//!         Some(devplane_store::conformance::Fixture::new(store, ()))
//!     });
//! }
//! ```
//!
//! A factory returns `None` to skip (e.g. etcd tests with `DEVPLANE_SKIP_ETCD=1`). The cases
//! assume nothing else writes to the store while they run; they use relative revisions only,
//! so a backend may start at any revision.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    Event, EventKind, Guard, KeyValue, ListOptions, Rev, Store, StoreError, TermExtractor,
    WatchItem, WatchStream,
};

/// A store under test plus whatever must live as long as it (temp dirs, an etcd process).
pub struct Fixture {
    store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send>,
}

impl Fixture {
    /// Wraps a store and the guard that keeps its resources alive.
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send) -> Self {
        Fixture {
            store,
            _guard: Box::new(guard),
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

/// Longest a single step of a case may wait.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a whole case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one case with an overall timeout.
pub async fn run_case(name: &str, case: impl Future<Output = ()>) {
    if tokio::time::timeout(CASE_TIMEOUT, case).await.is_err() {
        panic!("conformance case {name} did not finish within {CASE_TIMEOUT:?}");
    }
}

/// Instantiates every conformance case as a `#[tokio::test]` in the calling module.
/// `$factory` is a closure returning a future of `Option<Fixture>`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            revisions_are_global_and_monotonic,
            create_refuses_an_existing_key,
            a_guarded_create_needs_its_guard_key_unchanged,
            update_with_a_stale_revision_conflicts_and_carries_the_current_value,
            delete_checks_the_expected_revision_and_returns_the_last_value,
            list_returns_live_keys_under_a_prefix_in_key_order,
            a_list_larger_than_one_backend_response_is_complete,
            paginated_lists_at_a_fixed_revision_stay_consistent_while_writes_happen,
            list_at_an_old_revision_returns_the_old_state,
            a_list_by_terms_reads_exactly_the_keys_that_carry_a_term,
            list_at_a_compacted_revision_is_refused,
            list_at_a_future_revision_is_refused,
            watch_replays_later_events_then_live_ones_in_order,
            a_watch_without_prev_differs_only_in_the_previous_values_of_puts,
            watch_from_the_current_revision_delivers_only_future_events,
            watch_from_a_compacted_revision_is_refused,
            watch_from_a_future_revision_is_refused,
            concurrent_writers_never_lose_or_duplicate_a_revision,
            creates_made_at_once_are_told_apart_by_watches_and_lists,
            invalid_arguments_are_refused,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = ($factory)().await else { return };
                $crate::conformance::run_case(
                    stringify!($case),
                    $crate::conformance::$case(fixture.store()),
                )
                .await;
            }
        )*
    };
}

async fn step<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?}: {what}"),
    }
}

fn value(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

async fn current(store: &Arc<dyn Store>) -> Rev {
    step("current_revision", store.current_revision())
        .await
        .expect("current_revision")
}

async fn create(store: &Arc<dyn Store>, key: &str, text: &str) -> KeyValue {
    step("create", store.create(key, value(text)))
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"))
}

async fn update(store: &Arc<dyn Store>, key: &str, text: &str, expected: Rev) -> KeyValue {
    step("update", store.update(key, value(text), expected))
        .await
        .unwrap_or_else(|e| panic!("update {key}: {e}"))
}

async fn list(store: &Arc<dyn Store>, opts: ListOptions) -> crate::ListPage {
    step("list", store.list(opts.clone()))
        .await
        .unwrap_or_else(|e| panic!("list {opts:?}: {e}"))
}

async fn watch(store: &Arc<dyn Store>, prefix: &str, after: Rev) -> WatchStream {
    step("watch", store.watch(prefix, after))
        .await
        .unwrap_or_else(|e| panic!("watch {prefix:?} after {after}: {e}"))
}

async fn next_event(stream: &mut WatchStream) -> Event {
    match step("next watch event", stream.next()).await {
        Some(Ok(event)) => event,
        Some(Err(e)) => panic!("watch stream failed: {e}"),
        None => panic!("watch stream ended early"),
    }
}

fn keys_and_values(items: &[KeyValue]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn prefixed(prefix: &str, rev: Option<Rev>) -> ListOptions {
    ListOptions {
        prefix: prefix.to_owned(),
        rev,
        ..Default::default()
    }
}

/// Each write takes a new revision above every earlier one, across keys, and the current
/// revision covers every write made so far. Revisions need not be consecutive: etcd's also
/// move when anything else writes, and the etcd backend leaves room in each etcd revision for
/// writes committed together.
pub async fn revisions_are_global_and_monotonic(store: Arc<dyn Store>) {
    let r0 = current(&store).await;
    let a = create(&store, "a", "1").await;
    assert!(a.mod_rev > r0, "{a:?} after {r0}");
    assert_eq!(a.create_rev, a.mod_rev);
    assert!(current(&store).await >= a.mod_rev);
    let b = create(&store, "b", "1").await;
    assert!(b.mod_rev > a.mod_rev, "{b:?} after {a:?}");
    assert_eq!(b.create_rev, b.mod_rev);
    let a2 = update(&store, "a", "2", a.mod_rev).await;
    assert_eq!(a2.create_rev, a.create_rev);
    assert!(a2.mod_rev > b.mod_rev, "{a2:?} after {b:?}");
    let deleted = step("delete", store.delete("b", None))
        .await
        .expect("delete b");
    assert!(deleted.rev > a2.mod_rev);
    let r1 = current(&store).await;
    assert!(r1 >= deleted.rev);
    assert_eq!(step("get", store.get("a")).await.expect("get a"), Some(a2));
    assert_eq!(step("get", store.get("b")).await.expect("get b"), None);
    let c = create(&store, "c", "1").await;
    assert!(
        c.mod_rev > r1,
        "a write after the current revision {r1} got {c:?}"
    );
}

/// A second create of a key fails and consumes no revision.
pub async fn create_refuses_an_existing_key(store: Arc<dyn Store>) {
    let first = create(&store, "k", "original").await;
    let r = current(&store).await;
    match step("create again", store.create("k", value("other"))).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "k"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(current(&store).await, r);
    assert_eq!(step("get", store.get("k")).await.expect("get"), Some(first));
}

/// A guarded create happens only while the guard's key is at the revision the caller saw.
/// A failed guard is reported before existence, names the guard's key, carries its current
/// value, and uses no revision.
pub async fn a_guarded_create_needs_its_guard_key_unchanged(store: Arc<dyn Store>) {
    let namespace = create(&store, "ns", "active").await;
    let guard = Guard {
        key: "ns".into(),
        mod_rev: namespace.mod_rev,
    };
    let made = step(
        "guarded create",
        store.create_guarded("ns/a", value("a"), &guard),
    )
    .await
    .expect("guarded create");
    assert_eq!(made.mod_rev, current(&store).await);
    assert_eq!(made.create_rev, made.mod_rev);
    match step(
        "guarded create again",
        store.create_guarded("ns/a", value("b"), &guard),
    )
    .await
    {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "ns/a"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let changed = update(&store, "ns", "terminating", namespace.mod_rev).await;
    for key in ["ns/b", "ns/a"] {
        match step(
            "create under a changed guard",
            store.create_guarded(key, value("x"), &guard),
        )
        .await
        {
            Err(StoreError::Conflict { key, current }) => {
                assert_eq!(key, "ns");
                assert_eq!(current, Some(changed.clone()));
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
    let deleted = step("delete the guard key", store.delete("ns", None))
        .await
        .expect("delete ns");
    let gone = Guard {
        key: "ns".into(),
        mod_rev: changed.mod_rev,
    };
    match step(
        "create under a deleted guard",
        store.create_guarded("ns/c", value("x"), &gone),
    )
    .await
    {
        Err(StoreError::Conflict { key, current }) => {
            assert_eq!(key, "ns");
            assert_eq!(current, None);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        current(&store).await,
        deleted.rev,
        "failed creates must not consume revisions"
    );
    for key in ["ns/b", "ns/c"] {
        assert_eq!(step("get", store.get(key)).await.expect("get"), None);
    }
}

/// Updates compare the expected revision; a stale one reports what is stored now.
pub async fn update_with_a_stale_revision_conflicts_and_carries_the_current_value(
    store: Arc<dyn Store>,
) {
    let v1 = create(&store, "k", "v1").await;
    let v2 = update(&store, "k", "v2", v1.mod_rev).await;
    let r = current(&store).await;
    match step("stale update", store.update("k", value("v3"), v1.mod_rev)).await {
        Err(StoreError::Conflict { key, current }) => {
            assert_eq!(key, "k");
            assert_eq!(current, Some(v2.clone()));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match step(
        "update of a missing key",
        store.update("missing", value("x"), v1.mod_rev),
    )
    .await
    {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match step("update with revision 0", store.update("k", value("x"), 0)).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected Conflict for expected revision 0, got {other:?}"),
    }
    assert_eq!(
        current(&store).await,
        r,
        "failed updates must not consume revisions"
    );
    assert_eq!(step("get", store.get("k")).await.expect("get"), Some(v2));
}

/// Deletes honour the expected revision, return the last value, and free the key.
pub async fn delete_checks_the_expected_revision_and_returns_the_last_value(store: Arc<dyn Store>) {
    let v1 = create(&store, "k", "v1").await;
    let v2 = update(&store, "k", "v2", v1.mod_rev).await;
    match step("stale delete", store.delete("k", Some(v1.mod_rev))).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, Some(v2.clone())),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let r = current(&store).await;
    let deleted = step("delete", store.delete("k", Some(v2.mod_rev)))
        .await
        .expect("delete");
    assert_eq!(deleted.kind, EventKind::Delete);
    assert!(deleted.rev > r, "{deleted:?} after {r}");
    assert_eq!(
        deleted.kv,
        KeyValue {
            key: "k".into(),
            value: value("v2"),
            create_rev: v1.create_rev,
            mod_rev: deleted.rev
        }
    );
    assert_eq!(deleted.prev, Some(v2));
    assert_eq!(step("get", store.get("k")).await.expect("get"), None);
    match step("delete again", store.delete("k", None)).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "k"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Unconditional delete, then a re-create starts a new incarnation.
    create(&store, "other", "x").await;
    step("unconditional delete", store.delete("other", None))
        .await
        .expect("delete other");
    let again = create(&store, "k", "v3").await;
    assert_eq!(again.create_rev, again.mod_rev);
    assert!(again.create_rev > deleted.rev);
}

/// Lists show live keys under the prefix in key order, with limits and `start_after`.
/// A list of thousands of 4 KiB values (far beyond etcd's 4 MiB response cap) comes back
/// complete and in order, with and without a limit.
pub async fn a_list_larger_than_one_backend_response_is_complete(store: Arc<dyn Store>) {
    let value = "v".repeat(4096);
    let writes: Vec<_> = (0..1500)
        .map(|i| {
            let store = store.clone();
            let value = value.clone();
            async move {
                step(
                    "create",
                    store.create(&format!("big/{i:05}"), Bytes::from(value)),
                )
                .await
                .expect("create")
            }
        })
        .collect();
    futures::future::join_all(writes).await;
    let all = list(&store, prefixed("big/", None)).await;
    assert_eq!(all.items.len(), 1500);
    assert!(!all.more);
    assert!(
        all.items.windows(2).all(|w| w[0].key < w[1].key),
        "key order"
    );
    let some = list(
        &store,
        ListOptions {
            limit: Some(1200),
            ..prefixed("big/", None)
        },
    )
    .await;
    assert_eq!(some.items.len(), 1200);
    assert!(some.more);
    assert_eq!(
        some.items.last().map(|kv| kv.key.as_str()),
        Some("big/01199")
    );
}

pub async fn list_returns_live_keys_under_a_prefix_in_key_order(store: Arc<dyn Store>) {
    for key in ["p/b", "p/a", "p/c", "q/a", "p"] {
        create(&store, key, key).await;
    }
    step("delete", store.delete("p/c", None))
        .await
        .expect("delete p/c");
    let r = current(&store).await;

    let page = list(&store, prefixed("p/", None)).await;
    assert_eq!(
        keys_and_values(&page.items),
        pairs(&[("p/a", "p/a"), ("p/b", "p/b")])
    );
    assert_eq!(page.rev, r);
    assert!(!page.more);

    let everything = list(&store, prefixed("", None)).await;
    let keys: Vec<_> = everything.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["p", "p/a", "p/b", "q/a"]);

    let first = list(
        &store,
        ListOptions {
            limit: Some(1),
            ..prefixed("p/", None)
        },
    )
    .await;
    assert_eq!(keys_and_values(&first.items), pairs(&[("p/a", "p/a")]));
    assert!(first.more);

    let after_a = ListOptions {
        start_after: Some("p/a".into()),
        ..prefixed("p/", None)
    };
    let rest = list(
        &store,
        ListOptions {
            limit: Some(1),
            ..after_a
        },
    )
    .await;
    assert_eq!(keys_and_values(&rest.items), pairs(&[("p/b", "p/b")]));
    // Only the deleted p/c follows, so nothing more is live.
    assert!(!rest.more);

    let before_prefix = ListOptions {
        start_after: Some("a".into()),
        ..prefixed("p/", None)
    };
    assert_eq!(list(&store, before_prefix).await.items.len(), 2);
    let past_prefix = ListOptions {
        start_after: Some("z".into()),
        ..prefixed("p/", None)
    };
    let empty = list(&store, past_prefix).await;
    assert!(empty.items.is_empty() && !empty.more);
}

/// Pages read at the first page's revision show one consistent state even if the data
/// changes between pages.
pub async fn paginated_lists_at_a_fixed_revision_stay_consistent_while_writes_happen(
    store: Arc<dyn Store>,
) {
    let mut original = Vec::new();
    for i in 0..10 {
        let key = format!("page/{i:02}");
        original.push((key.clone(), "v0".to_owned()));
        create(&store, &key, "v0").await;
    }
    let first = list(
        &store,
        ListOptions {
            limit: Some(4),
            ..prefixed("page/", None)
        },
    )
    .await;
    assert!(first.more);
    let pinned = first.rev;
    let mut seen = keys_and_values(&first.items);

    // Changes that a consistent reader must not see.
    let five = step("get", store.get("page/05"))
        .await
        .expect("get")
        .expect("page/05 exists");
    update(&store, "page/05", "changed", five.mod_rev).await;
    step("delete", store.delete("page/08", None))
        .await
        .expect("delete page/08");
    create(&store, "page/04a", "new").await;
    create(&store, "page/99", "new").await;

    let mut last_key = first.items.last().map(|kv| kv.key.clone());
    loop {
        let page = list(
            &store,
            ListOptions {
                start_after: last_key.clone(),
                limit: Some(4),
                ..prefixed("page/", Some(pinned))
            },
        )
        .await;
        assert_eq!(page.rev, pinned);
        seen.extend(keys_and_values(&page.items));
        last_key = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, original);

    let latest = list(&store, prefixed("page/", None)).await;
    assert_eq!(latest.items.len(), 11);
}

/// A list at an older revision returns the state as of that revision.
pub async fn list_at_an_old_revision_returns_the_old_state(store: Arc<dyn Store>) {
    let a1 = create(&store, "a", "1").await;
    update(&store, "a", "2", a1.mod_rev).await;
    let b = create(&store, "b", "1").await;
    step("delete", store.delete("b", None))
        .await
        .expect("delete b");

    let at_first = list(&store, prefixed("", Some(a1.mod_rev))).await;
    assert_eq!(keys_and_values(&at_first.items), pairs(&[("a", "1")]));
    assert_eq!(at_first.rev, a1.mod_rev);
    let at_b = list(&store, prefixed("", Some(b.mod_rev))).await;
    assert_eq!(
        keys_and_values(&at_b.items),
        pairs(&[("a", "2"), ("b", "1")])
    );
    let latest = list(&store, prefixed("", None)).await;
    assert_eq!(keys_and_values(&latest.items), pairs(&[("a", "2")]));
}

/// Terms of a test value: its comma-separated parts (`"shard=1,site=x"`).
pub fn comma_terms() -> TermExtractor {
    Arc::new(|value: &[u8]| {
        String::from_utf8_lossy(value)
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

async fn list_by_terms(
    store: &Arc<dyn Store>,
    opts: ListOptions,
    terms: &[&str],
) -> crate::ListPage {
    let terms: Vec<String> = terms.iter().map(|t| (*t).to_owned()).collect();
    step("list_by_terms", store.list_by_terms(opts.clone(), &terms))
        .await
        .unwrap_or_else(|e| panic!("list_by_terms {opts:?} {terms:?}: {e}"))
        .expect("an indexing backend answers")
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// A backend that indexes terms lists exactly the keys whose value carries one, at the
/// latest and at an older revision, page by page; one that does not says so.
pub async fn a_list_by_terms_reads_exactly_the_keys_that_carry_a_term(store: Arc<dyn Store>) {
    create(&store, "t/a", "shard=1,site=x").await;
    let indexed = step("index_terms", store.index_terms(comma_terms()))
        .await
        .expect("index_terms");
    if !indexed {
        let answer = step(
            "list_by_terms",
            store.list_by_terms(prefixed("", None), &["shard=1".into()]),
        )
        .await
        .expect("list_by_terms");
        assert!(answer.is_none(), "a backend without an index has no answer");
        return;
    }
    let b = create(&store, "t/b", "shard=2").await;
    let c = create(&store, "t/c", "shard=1").await;
    create(&store, "u/d", "shard=1").await;
    let before = current(&store).await;
    let a = store.get("t/a").await.expect("get").expect("t/a exists");
    update(&store, "t/a", "shard=2", a.mod_rev).await;
    step("delete", store.delete("t/c", Some(c.mod_rev)))
        .await
        .expect("delete t/c");
    create(&store, "t/e", "shard=1").await;
    update(&store, "t/b", "shard=2,site=y", b.mod_rev).await;

    let latest = list_by_terms(&store, prefixed("t/", None), &["shard=1"]).await;
    assert_eq!(keys_and_values(&latest.items), pairs(&[("t/e", "shard=1")]));
    assert_eq!(latest.rev, current(&store).await);
    let either = list_by_terms(&store, prefixed("t/", None), &["shard=2", "shard=1"]).await;
    assert_eq!(keys(&either.items), vec!["t/a", "t/b", "t/e"]);
    let old = list_by_terms(&store, prefixed("", Some(before)), &["shard=1"]).await;
    assert_eq!(
        keys_and_values(&old.items),
        pairs(&[
            ("t/a", "shard=1,site=x"),
            ("t/c", "shard=1"),
            ("u/d", "shard=1")
        ])
    );
    let old_site = list_by_terms(&store, prefixed("", Some(before)), &["site=y"]).await;
    assert!(old_site.items.is_empty(), "t/b carries site=y only later");

    let mut paged = Vec::new();
    let mut start_after = None;
    loop {
        let opts = ListOptions {
            start_after: start_after.clone(),
            limit: Some(1),
            ..prefixed("", Some(before))
        };
        let page = list_by_terms(&store, opts, &["shard=1"]).await;
        assert_eq!(page.rev, before);
        paged.extend(page.items.iter().map(|kv| kv.key.clone()));
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(paged, vec!["t/a", "t/c", "u/d"]);
}

/// After `compact(c)`, reads at `c` work and reads below it are refused.
pub async fn list_at_a_compacted_revision_is_refused(store: Arc<dyn Store>) {
    let mut versions = vec![create(&store, "k", "0").await];
    for i in 1..=4 {
        let last = versions[versions.len() - 1].mod_rev;
        versions.push(update(&store, "k", &i.to_string(), last).await);
    }
    let kv = versions[4].clone();
    create(&store, "gone", "x").await;
    step("delete", store.delete("gone", None))
        .await
        .expect("delete gone");
    let compact_at = versions[3].mod_rev; // the revision that wrote "3"
    step("compact", store.compact(compact_at))
        .await
        .expect("compact");
    assert_eq!(
        step("compacted", store.compacted_revision())
            .await
            .expect("compacted"),
        compact_at
    );

    match step("list below", store.list(prefixed("", Some(compact_at - 1)))).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (compact_at - 1, compact_at));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let at_floor = list(&store, prefixed("", Some(compact_at))).await;
    assert_eq!(keys_and_values(&at_floor.items), pairs(&[("k", "3")]));
    let latest = list(&store, prefixed("", None)).await;
    assert_eq!(keys_and_values(&latest.items), pairs(&[("k", "4")]));
    assert_eq!(step("get", store.get("k")).await.expect("get"), Some(kv));

    // Compacting again lower is a no-op; compacting into the future is refused.
    step("compact lower", store.compact(compact_at - 1))
        .await
        .expect("compact lower");
    assert_eq!(
        step("compacted", store.compacted_revision())
            .await
            .expect("compacted"),
        compact_at
    );
    let r = current(&store).await;
    match step("compact future", store.compact(r + 1)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r + 1, r));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// A list above the current revision is refused.
pub async fn list_at_a_future_revision_is_refused(store: Arc<dyn Store>) {
    create(&store, "k", "v").await;
    let r = current(&store).await;
    match step("future list", store.list(prefixed("", Some(r + 1)))).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r + 1, r));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// A watch replays exactly the matching events after its revision, then follows live ones.
pub async fn watch_replays_later_events_then_live_ones_in_order(store: Arc<dyn Store>) {
    let before = create(&store, "w/a", "1").await;
    create(&store, "other/x", "1").await;
    let a2 = update(&store, "w/a", "2", before.mod_rev).await;
    let b = create(&store, "w/b", "1").await;
    let deleted = step("delete", store.delete("w/a", None))
        .await
        .expect("delete w/a");

    let mut stream = watch(&store, "w/", before.mod_rev).await;
    let update_event = next_event(&mut stream).await;
    assert_eq!(update_event.kind, EventKind::Put);
    assert_eq!(update_event.rev, a2.mod_rev);
    assert_eq!(update_event.kv, a2);
    assert_eq!(update_event.prev, Some(before.clone()));

    let create_event = next_event(&mut stream).await;
    assert_eq!(
        (create_event.kind, create_event.rev),
        (EventKind::Put, b.mod_rev)
    );
    assert_eq!(create_event.kv, b);
    assert_eq!(create_event.prev, None);

    let delete_event = next_event(&mut stream).await;
    assert_eq!(delete_event, deleted);
    assert_eq!(delete_event.kv.value, value("2"));
    assert_eq!(delete_event.kv.create_rev, before.create_rev);
    assert_eq!(delete_event.prev, Some(a2));

    // Live events, with the non-matching one filtered out.
    let c = create(&store, "w/c", "1").await;
    let x = step("get", store.get("other/x"))
        .await
        .expect("get")
        .expect("other/x exists");
    update(&store, "other/x", "2", x.mod_rev).await;
    let d = create(&store, "w/d", "1").await;
    assert_eq!(next_event(&mut stream).await.kv, c);
    assert_eq!(next_event(&mut stream).await.kv, d);
}

/// A watch without previous values delivers the same events, in the same order, as a plain
/// one; only a `Put` may lack `prev`, and then its revisions tell create from update.
pub async fn a_watch_without_prev_differs_only_in_the_previous_values_of_puts(
    store: Arc<dyn Store>,
) {
    let r0 = current(&store).await;
    let a = create(&store, "w/a", "1").await;
    let a2 = update(&store, "w/a", "2", a.mod_rev).await;
    create(&store, "w/b", "1").await;
    step("delete", store.delete("w/a", Some(a2.mod_rev)))
        .await
        .expect("delete");
    let mut full = watch(&store, "w/", r0).await;
    let mut lean = step(
        "watch_progress_without_prev",
        store.watch_progress_without_prev("w/", r0),
    )
    .await
    .expect("watch_progress_without_prev");
    for _ in 0..4 {
        let expected = next_event(&mut full).await;
        let event = loop {
            match step("next watch item", lean.next()).await {
                Some(Ok(WatchItem::Event(event))) => break event,
                Some(Ok(WatchItem::Progress(_))) => continue,
                Some(Err(e)) => panic!("watch stream failed: {e}"),
                None => panic!("watch stream ended early"),
            }
        };
        assert_eq!(
            (event.kind, event.rev, &event.kv),
            (expected.kind, expected.rev, &expected.kv)
        );
        match (event.kind, &event.prev) {
            (EventKind::Delete, prev) => assert_eq!(prev, &expected.prev),
            (EventKind::Put, Some(prev)) => assert_eq!(Some(prev), expected.prev.as_ref()),
            (EventKind::Put, None) => assert_eq!(
                event.kv.create_rev < event.kv.mod_rev,
                expected.prev.is_some(),
                "an update must be told by its revisions"
            ),
        }
    }
}

/// Watching from the current revision delivers only what is written afterwards.
pub async fn watch_from_the_current_revision_delivers_only_future_events(store: Arc<dyn Store>) {
    create(&store, "old/1", "x").await;
    create(&store, "old/2", "x").await;
    let r = current(&store).await;
    let mut stream = watch(&store, "", r).await;
    let fresh = create(&store, "new", "x").await;
    let event = next_event(&mut stream).await;
    assert!(event.rev > r, "{event:?} after {r}");
    assert_eq!(event.kv, fresh);
}

/// A watch that needs compacted events is refused at once; one starting at the compacted
/// revision gets the first remaining event complete with its previous value.
pub async fn watch_from_a_compacted_revision_is_refused(store: Arc<dyn Store>) {
    let mut versions = vec![create(&store, "k", "0").await];
    for i in 1..=4 {
        let last = versions.last().map_or(0, |kv| kv.mod_rev);
        versions.push(update(&store, "k", &i.to_string(), last).await);
    }
    let compact_at = versions[3].mod_rev;
    step("compact", store.compact(compact_at))
        .await
        .expect("compact");

    match step("watch too old", store.watch("", compact_at - 2)).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (compact_at - 2, compact_at));
        }
        Err(other) => panic!("expected Compacted, got {other:?}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut stream = watch(&store, "", compact_at - 1).await;
    let first = next_event(&mut stream).await;
    assert_eq!(first.rev, compact_at);
    assert_eq!(first.kv, versions[3]);
    assert_eq!(
        first.prev,
        Some(versions[2].clone()),
        "prev of the first retained event"
    );
    assert_eq!(next_event(&mut stream).await.kv, versions[4]);
}

/// Watching from a revision that does not exist yet is refused.
pub async fn watch_from_a_future_revision_is_refused(store: Arc<dyn Store>) {
    create(&store, "k", "v").await;
    let r = current(&store).await;
    match step("future watch", store.watch("", r + 1)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r + 1, r));
        }
        Err(other) => panic!("expected FutureRevision, got {other:?}"),
        Ok(_) => panic!("expected FutureRevision, got a stream"),
    }
}

/// Many concurrent writers get distinct, gap-free revisions, and a watcher sees each once.
pub async fn concurrent_writers_never_lose_or_duplicate_a_revision(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 25;
    let r0 = current(&store).await;
    let mut stream = watch(&store, "conc/", r0).await;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let key = format!("conc/{writer}");
            let mut revs = Vec::new();
            let mut kv = store.create(&key, value("0")).await.expect("create");
            revs.push(kv.mod_rev);
            for i in 1..WRITES_EACH {
                kv = store
                    .update(&key, value(&i.to_string()), kv.mod_rev)
                    .await
                    .expect("update");
                revs.push(kv.mod_rev);
            }
            revs
        }));
    }
    let mut revs = Vec::new();
    for task in tasks {
        revs.extend(
            step("writer task", task)
                .await
                .expect("writer task panicked"),
        );
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(
        revs.len(),
        WRITERS * WRITES_EACH,
        "revisions must be unique"
    );
    assert!(revs[0] > r0);
    assert!(current(&store).await >= revs[revs.len() - 1]);
    for expected_rev in revs {
        assert_eq!(next_event(&mut stream).await.rev, expected_rev);
    }
}

/// Creates made at once get distinct revisions (a backend may commit them together), and a
/// watch or a list at the revision of any one of them sees exactly the creates up to it: a
/// client resuming from the last object it saw misses none.
pub async fn creates_made_at_once_are_told_apart_by_watches_and_lists(store: Arc<dyn Store>) {
    const CREATES: usize = 200;
    let tasks: Vec<_> = (0..CREATES)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create(&format!("burst/{i:03}"), value("x")).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        created.push(
            step("create task", task)
                .await
                .expect("create task panicked")
                .expect("create"),
        );
    }
    created.sort_unstable_by_key(|kv| kv.mod_rev);
    let mut revs: Vec<Rev> = created.iter().map(|kv| kv.mod_rev).collect();
    revs.dedup();
    assert_eq!(revs.len(), CREATES, "every create has its own revision");
    for index in [0, 1, CREATES / 3, CREATES / 2, CREATES - 2] {
        let seen = created[index].mod_rev;
        let mut stream = watch(&store, "burst/", seen).await;
        for later in &created[index + 1..] {
            let event = next_event(&mut stream).await;
            assert_eq!(
                (event.kv.key.as_str(), event.rev),
                (later.key.as_str(), later.mod_rev),
                "the watch after {seen}"
            );
        }
        let page = list(&store, prefixed("burst/", Some(seen))).await;
        let mut listed: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
        let mut expected: Vec<&str> = created[..=index].iter().map(|kv| kv.key.as_str()).collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected, "the list at {seen}");
    }
}

/// Empty keys and zero limits are refused with a clear error.
pub async fn invalid_arguments_are_refused(store: Arc<dyn Store>) {
    let refused = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::InvalidArgument(_)) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    };
    refused(
        step("create", store.create("", value("x"))).await.map(drop),
        "empty key create",
    );
    refused(step("get", store.get("")).await.map(drop), "empty key get");
    refused(
        step(
            "list",
            store.list(ListOptions {
                limit: Some(0),
                ..Default::default()
            }),
        )
        .await
        .map(drop),
        "zero limit",
    );
}
