use super::*;
use crate::conformance::comma_terms;

fn put(state: &mut MvccState, key: &str, value: &str) -> Arc<Event> {
    let rev = state.current() + 1;
    state
        .apply(
            rev,
            Mutation::Put {
                key: key.into(),
                value: Bytes::from(value.to_owned()),
            },
            Instant::now(),
        )
        .unwrap()
}

fn delete(state: &mut MvccState, key: &str) -> Arc<Event> {
    let rev = state.current() + 1;
    state
        .apply(rev, Mutation::Delete { key: key.into() }, Instant::now())
        .unwrap()
}

fn keys_at(state: &MvccState, rev: Rev) -> Vec<(String, String)> {
    let page = state
        .list(&ListOptions {
            rev: Some(rev),
            ..Default::default()
        })
        .unwrap();
    page.items
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value.to_vec()).unwrap()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn reads_at_a_revision_see_the_state_of_that_revision() {
    let mut state = MvccState::new(16);
    put(&mut state, "a", "1"); // 1
    put(&mut state, "b", "1"); // 2
    put(&mut state, "a", "2"); // 3
    delete(&mut state, "b"); // 4
    assert_eq!(keys_at(&state, 2), pairs(&[("a", "1"), ("b", "1")]));
    assert_eq!(keys_at(&state, 3), pairs(&[("a", "2"), ("b", "1")]));
    assert_eq!(keys_at(&state, 4), pairs(&[("a", "2")]));
    assert_eq!(keys_at(&state, 0), pairs(&[]));
}

#[test]
fn delete_events_carry_the_last_value_and_the_delete_revision() {
    let mut state = MvccState::new(16);
    put(&mut state, "a", "1");
    put(&mut state, "a", "2");
    let event = delete(&mut state, "a");
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.rev, 3);
    assert_eq!(event.kv.mod_rev, 3);
    assert_eq!(event.kv.create_rev, 1);
    assert_eq!(event.kv.value, Bytes::from_static(b"2"));
    assert_eq!(event.prev.as_ref().map(|p| p.mod_rev), Some(2));
}

#[test]
fn compaction_keeps_reads_at_the_compacted_revision_and_drops_dead_keys() {
    let mut state = MvccState::new(16);
    put(&mut state, "a", "1"); // 1
    put(&mut state, "b", "1"); // 2
    put(&mut state, "a", "2"); // 3
    delete(&mut state, "b"); // 4
    put(&mut state, "a", "3"); // 5
    assert!(state.compact(5).unwrap());
    assert_eq!(state.compacted(), 5);
    assert_eq!(keys_at(&state, 5), pairs(&[("a", "3")]));
    assert!(matches!(
        state.list(&ListOptions {
            rev: Some(4),
            ..Default::default()
        }),
        Err(StoreError::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    // "b" was deleted below the floor, so it is gone entirely; "a" keeps the floor version
    // (rev 3, needed by reads at the floor) and rev 5.
    assert_eq!(state.key_count(), 1);
    assert_eq!(state.keys["a"].versions.len(), 2);
    // The event at the compacted revision is still there for watch(after = c - 1).
    let start = state.watch_from("", 4).unwrap();
    assert_eq!(
        start.replay.iter().map(|e| e.rev).collect::<Vec<_>>(),
        vec![5]
    );
    assert!(matches!(
        state.watch_from("", 3),
        Err(StoreError::Compacted { .. })
    ));
    assert!(!state.compact(3).unwrap());
    assert!(matches!(
        state.compact(6),
        Err(StoreError::FutureRevision { .. })
    ));
}

#[test]
fn compaction_moves_the_values_of_chunks_that_updates_left_sparse() {
    let mut state = MvccState::new(16);
    let value = |key: usize, round: usize| format!("{key:05}-{round}-{}", "x".repeat(1000));
    let keys = 4_000;
    for key in 0..keys {
        put(&mut state, &format!("k{key:05}"), &value(key, 0));
    }
    let filled = state.value_chunk_bytes();
    // Every other key is written again: the chunks of the first round become half dead.
    for key in (0..keys).step_by(2) {
        put(&mut state, &format!("k{key:05}"), &value(key, 1));
    }
    assert!(state.value_chunk_bytes() > filled);
    assert!(state.compact(state.current()).unwrap());
    // The survivors of the first round moved: the store holds about one round's chunks.
    let live = keys * value(0, 0).len();
    assert!(
        state.value_chunk_bytes() < live + live / 4,
        "{} bytes of chunks for {live} live bytes",
        state.value_chunk_bytes()
    );
    let listed = keys_at(&state, state.current());
    assert_eq!(listed.len(), keys);
    for (key, (listed_key, listed_value)) in listed.iter().enumerate() {
        assert_eq!(listed_key, &format!("k{key:05}"));
        assert_eq!(listed_value, &value(key, if key % 2 == 0 { 1 } else { 0 }));
    }
}

#[test]
fn snapshots_hold_the_live_keys_at_a_revision() {
    let mut state = MvccState::new(16);
    put(&mut state, "a", "1");
    put(&mut state, "b", "1");
    delete(&mut state, "a");
    let entries = state.snapshot_at(2);
    assert_eq!(
        entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let restored = MvccState::from_snapshot(2, entries, 16);
    assert_eq!(restored.compacted(), 3);
    assert_eq!(restored.current(), 2);
    assert_eq!(restored.latest("a").map(|kv| kv.mod_rev), Some(1));
}

#[test]
fn retention_keeps_the_newest_revisions() {
    let mut state = MvccState::new(16);
    for i in 0..10 {
        put(&mut state, &format!("k{i}"), "v");
    }
    assert_eq!(state.retention_target(3, None), 8);
    assert_eq!(state.retention_target(100, None), 1);
    // A window that covers everything keeps everything.
    let long_ago = Instant::now() - std::time::Duration::from_secs(60);
    assert_eq!(state.retention_target(3, Some(long_ago)), 1);
}

fn indexed() -> MvccState {
    let mut state = MvccState::new(16);
    state.index_terms(comma_terms());
    state
}

fn by_terms(state: &MvccState, terms: &[&str], opts: ListOptions) -> Vec<String> {
    let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
    state
        .list_by_terms(&opts, &terms)
        .unwrap()
        .expect("an index")
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

fn at(rev: Rev) -> ListOptions {
    ListOptions {
        rev: Some(rev),
        ..Default::default()
    }
}

#[test]
fn a_list_by_terms_reads_the_keys_whose_latest_value_carries_a_term() {
    let mut state = indexed();
    put(&mut state, "/d/a", "shard=1,site=x");
    put(&mut state, "/d/b", "shard=2,site=x");
    put(&mut state, "/d/c", "shard=1");
    put(&mut state, "/other/d", "shard=1");
    assert_eq!(
        by_terms(&state, &["shard=1"], ListOptions::default()),
        vec!["/d/a", "/d/c", "/other/d"]
    );
    let under_d = ListOptions {
        prefix: "/d/".into(),
        ..Default::default()
    };
    assert_eq!(
        by_terms(&state, &["shard=1"], under_d.clone()),
        vec!["/d/a", "/d/c"]
    );
    assert_eq!(
        by_terms(&state, &["shard=2", "shard=1"], under_d),
        vec!["/d/a", "/d/b", "/d/c"],
        "several terms read their union, in key order and each key once"
    );
    assert!(by_terms(&state, &["shard=9"], ListOptions::default()).is_empty());
    assert!(
        MvccState::new(16)
            .list_by_terms(&ListOptions::default(), &["shard=1".into()])
            .unwrap()
            .is_none(),
        "without an index there is no answer"
    );
}

#[test]
fn updates_and_deletes_move_keys_between_terms_and_old_revisions_still_see_them() {
    let mut state = indexed();
    put(&mut state, "a", "shard=1"); // 1
    put(&mut state, "b", "shard=1"); // 2
    put(&mut state, "a", "shard=2"); // 3
    delete(&mut state, "b"); // 4
    put(&mut state, "b", "shard=2"); // 5
    put(&mut state, "a", "shard=1"); // 6
    assert_eq!(by_terms(&state, &["shard=1"], at(6)), vec!["a"]);
    assert_eq!(by_terms(&state, &["shard=2"], at(6)), vec!["b"]);
    assert_eq!(by_terms(&state, &["shard=1"], at(2)), vec!["a", "b"]);
    assert!(
        by_terms(&state, &["shard=1"], at(4)).is_empty(),
        "a carries shard=1 again only later, b is deleted"
    );
    assert_eq!(
        by_terms(&state, &["shard=2"], at(3)),
        vec!["a"],
        "b carries shard=2 only later"
    );
    assert_eq!(by_terms(&state, &["shard=2"], at(4)), vec!["a"]);
    assert!(by_terms(&state, &["shard=2"], at(2)).is_empty());
}

#[test]
fn pages_by_terms_continue_after_the_last_key_at_the_same_revision() {
    let mut state = indexed();
    for i in 0..10 {
        put(
            &mut state,
            &format!("k{i}"),
            if i % 2 == 0 { "even" } else { "odd" },
        );
    }
    let rev = state.current();
    put(&mut state, "k2", "odd");
    let mut seen = Vec::new();
    let mut start_after = None;
    loop {
        let page = state
            .list_by_terms(
                &ListOptions {
                    start_after: start_after.clone(),
                    limit: Some(2),
                    rev: Some(rev),
                    ..Default::default()
                },
                &["even".into()],
            )
            .unwrap()
            .expect("an index");
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, vec!["k0", "k2", "k4", "k6", "k8"]);
}

#[test]
fn compaction_forgets_what_no_readable_revision_needs() {
    let mut state = indexed();
    put(&mut state, "a", "shard=1"); // 1
    put(&mut state, "b", "shard=1"); // 2
    put(&mut state, "a", "shard=2"); // 3
    delete(&mut state, "b"); // 4
    let index = |s: &MvccState| s.index.as_ref().map(TermIndex::entries);
    assert_eq!(
        index(&state),
        Some(3),
        "a and b as former shard=1, a as current shard=2"
    );
    assert!(state.compact(3).unwrap());
    assert_eq!(by_terms(&state, &["shard=1"], at(3)), vec!["b"]);
    assert_eq!(
        index(&state),
        Some(2),
        "a's loss at 3 is not readable any more"
    );
    assert!(state.compact(4).unwrap());
    assert_eq!(index(&state), Some(1));
    assert!(by_terms(&state, &["shard=1"], at(4)).is_empty());
}

#[test]
fn an_index_asked_for_later_covers_the_retained_history() {
    let mut state = MvccState::new(16);
    put(&mut state, "a", "shard=1"); // 1
    put(&mut state, "a", "shard=2"); // 2
    put(&mut state, "b", "shard=1"); // 3
    state.index_terms(comma_terms());
    assert_eq!(by_terms(&state, &["shard=1"], at(3)), vec!["b"]);
    assert_eq!(by_terms(&state, &["shard=1"], at(1)), vec!["a"]);
    assert_eq!(by_terms(&state, &["shard=2"], at(3)), vec!["a"]);
}

#[test]
fn repacking_the_maps_keeps_what_every_read_answers() {
    let mut state = indexed();
    let count = REPACK_MIN_KEYS + 100;
    for i in 0..count {
        put(
            &mut state,
            &format!("/d/{i:06}"),
            &format!("shard={}", i % 4),
        );
    }
    let reads = |state: &MvccState| {
        let all: Vec<String> = state
            .list(&ListOptions::default())
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let page = ListOptions {
            start_after: Some("/d/000100".into()),
            limit: Some(7),
            ..Default::default()
        };
        (
            all,
            by_terms(state, &["shard=1"], ListOptions::default()),
            by_terms(state, &["shard=3"], page),
        )
    };
    let before = reads(&state);
    assert_eq!(state.packed_keys, 0);
    state.compact(state.current()).unwrap();
    assert_eq!(state.packed_keys, count, "compaction repacked the maps");
    assert_eq!(reads(&state), before);
    assert_eq!(before.0.len(), count);
    assert_eq!(before.1.len(), count / 4);
    assert_eq!(before.2.len(), 7);
    // Writes go on as before: a key moves to another shard.
    put(&mut state, "/d/000001", "shard=3");
    assert!(
        !by_terms(&state, &["shard=1"], ListOptions::default()).contains(&"/d/000001".to_string())
    );
    assert!(
        by_terms(&state, &["shard=3"], ListOptions::default()).contains(&"/d/000001".to_string())
    );
}

#[test]
fn a_key_of_one_version_keeps_it_inline_again_once_pruned() {
    assert!(std::mem::size_of::<KeyHistory>() <= 56);
    let mut state = MvccState::new(16);
    put(&mut state, "a", "1");
    assert!(!state.keys["a"].versions.spilled());
    put(&mut state, "a", "2");
    put(&mut state, "a", "3");
    assert!(state.keys["a"].versions.spilled());
    put(&mut state, "b", "1");
    state.compact(state.current()).unwrap();
    let history = &state.keys["a"];
    assert_eq!(history.versions.len(), 1);
    assert!(!history.versions.spilled(), "back in the node");
    assert_eq!(
        history.latest_live().and_then(|v| v.value.as_deref()),
        Some(&b"3"[..])
    );
}

#[test]
fn the_key_walk_finds_what_lookups_find() {
    let mut map = BTreeMap::new();
    let keys: Vec<Arc<str>> = (0..500).map(|i| Arc::from(format!("k{i:04}"))).collect();
    for key in &keys {
        map.insert(Arc::clone(key), KeyHistory::default());
    }
    // The map's own keys (near and far apart), an equal key in another allocation, and
    // keys the map does not hold, in ascending order.
    let asked: Vec<Arc<str>> = vec![
        Arc::clone(&keys[0]),
        Arc::clone(&keys[3]),
        Arc::from("k0003x"),
        Arc::from("k0010"),
        Arc::clone(&keys[11]),
        Arc::clone(&keys[200]),
        Arc::from("k0201a"),
        Arc::clone(&keys[202]),
        Arc::clone(&keys[499]),
        Arc::from("k9999"),
    ];
    let mut walk = KeyWalk::new(&map);
    let walked: Vec<Option<&str>> = asked
        .iter()
        .map(|key| walk.find(key).map(|(found, _)| &**found))
        .collect();
    let looked_up: Vec<Option<&str>> = asked
        .iter()
        .map(|key| map.get_key_value(key).map(|(found, _)| &**found))
        .collect();
    assert_eq!(walked, looked_up);
    assert_eq!(walked.iter().flatten().count(), 7);
}

#[test]
fn replay_of_an_inconsistent_log_is_refused() {
    let mut state = MvccState::new(16);
    assert!(matches!(
        state.apply(1, Mutation::Delete { key: "a".into() }, Instant::now()),
        Err(ApplyError::DeleteOfMissingKey { .. })
    ));
    assert!(matches!(
        state.apply(5, Mutation::Delete { key: "a".into() }, Instant::now()),
        Err(ApplyError::OutOfOrder { .. })
    ));
}

#[test]
fn lists_end_where_the_keys_under_the_prefix_end() {
    let mut state = indexed();
    // More keys than a term keeps in its small vector for `shard=1`, few for `shard=2`, so
    // both forms of a term's keys are read.
    let mut under: Vec<String> = (0..12).map(|i| format!("/d/{i:02}")).collect();
    under.push("/d/\u{10FFFF}".into());
    for key in &under {
        put(&mut state, key, "shard=1");
    }
    for outside in ["/d", "/d0", "/d\u{10FFFF}", "/e/1"] {
        put(&mut state, outside, "shard=1");
    }
    let before_loss = state.current();
    put(&mut state, "/d0", "shard=2");
    put(&mut state, "/d/00", "shard=2");
    let under_d = |rev: Option<Rev>, start_after: Option<&str>| ListOptions {
        prefix: "/d/".into(),
        start_after: start_after.map(str::to_owned),
        rev,
        ..Default::default()
    };
    let listed = |opts: ListOptions| -> Vec<String> {
        state
            .list(&opts)
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    };
    assert_eq!(listed(under_d(None, None)), under);
    assert_eq!(
        by_terms(&state, &["shard=1"], under_d(None, None)),
        under[1..]
    );
    assert_eq!(
        by_terms(&state, &["shard=2"], under_d(None, None)),
        under[..1]
    );
    assert_eq!(
        by_terms(&state, &["shard=1"], under_d(Some(before_loss), None)),
        under,
        "keys that lost the term since are read up to the prefix's end as well"
    );
    assert_eq!(
        by_terms(&state, &["shard=1"], under_d(None, Some("/d/10"))),
        under[11..]
    );
    for beyond in ["/d0", "/z"] {
        assert!(listed(under_d(None, Some(beyond))).is_empty());
        for term in ["shard=1", "shard=2"] {
            assert!(by_terms(&state, &[term], under_d(None, Some(beyond))).is_empty());
        }
        assert!(
            by_terms(
                &state,
                &["shard=1"],
                under_d(Some(before_loss), Some(beyond))
            )
            .is_empty()
        );
    }
}
