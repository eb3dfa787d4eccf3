//! What only the embedded backend promises: durability across restarts and crashes, torn-tail
//! repair, snapshots with segment rotation, group commit, and slow-watcher handling.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use devplane_store::{
    DiskError, Embedded, EmbeddedOptions, EventKind, ListOptions, Rev, Store, StoreError,
};
use futures::StreamExt;

use crate::support::{manual_options, next_event, temp_dir, value, within};

fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read data dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_prefix(dir, "wal-")
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    files_with_prefix(dir, "snapshot-")
}

async fn open(dir: &Path, options: EmbeddedOptions) -> Embedded {
    within("open", Embedded::open(dir, options))
        .await
        .expect("open embedded store")
}

async fn everything(store: &Embedded) -> Vec<devplane_store::KeyValue> {
    within("list", store.list(ListOptions::default()))
        .await
        .expect("list")
        .items
}

#[tokio::test]
async fn objects_revisions_and_watch_history_survive_a_reopen() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    let a = store.create("a", value("1")).await.expect("create a");
    let resume_from = a.mod_rev;
    store.create("b", value("1")).await.expect("create b");
    store
        .update("a", value("2"), a.mod_rev)
        .await
        .expect("update a");
    store.delete("b", None).await.expect("delete b");
    store.create("c", value("1")).await.expect("create c");
    let before = everything(&store).await;
    let current = store.current_revision().await.expect("current");
    let mut history = Vec::new();
    let mut stream = within("watch", store.watch("", resume_from))
        .await
        .expect("watch");
    for _ in resume_from..current {
        history.push(next_event(&mut stream).await);
    }
    drop(stream);
    drop(store);

    let store = open(dir.path(), manual_options()).await;
    assert_eq!(store.current_revision().await.expect("current"), current);
    assert_eq!(everything(&store).await, before);
    // Resuming a watch from before the restart replays the same events, without Compacted.
    let mut stream = within("watch", store.watch("", resume_from))
        .await
        .expect("watch after reopen");
    for expected in &history {
        assert_eq!(&next_event(&mut stream).await, expected);
    }
    // Revisions continue where they stopped.
    let d = store.create("d", value("1")).await.expect("create d");
    assert_eq!(d.mod_rev, current + 1);
    assert_eq!(next_event(&mut stream).await.kv, d);
}

#[tokio::test]
async fn an_empty_segment_left_by_a_failed_rotation_does_not_seal_the_one_written_to() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    for i in 0..20 {
        store
            .create(&format!("obj/{i:02}"), value("v"))
            .await
            .expect("create");
    }
    // A rotation at revision 10 created its file and then failed (its directory sync), so the
    // writer kept appending to the first segment.
    let leftover = dir.path().join(format!("wal-{:020}.log", 10));
    fs::File::create(&leftover).expect("empty segment");
    for i in 20..40 {
        store
            .create(&format!("obj/{i:02}"), value("v"))
            .await
            .expect("create");
    }
    let current = store.current_revision().await.expect("current");
    within("compact", store.compact(current - 5))
        .await
        .expect("compact");
    store
        .create("obj/after", value("v"))
        .await
        .expect("create after compaction");
    drop(store);

    let store = open(dir.path(), manual_options()).await;
    assert_eq!(
        store.current_revision().await.expect("current"),
        current + 1
    );
    assert_eq!(
        everything(&store).await.len(),
        41,
        "every acknowledged write"
    );
    assert!(!leftover.exists(), "the empty segment is removed on reopen");
}

#[tokio::test]
async fn a_torn_wal_tail_is_truncated_on_reopen() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    for i in 0..5 {
        store
            .create(&format!("k{i}"), value("v"))
            .await
            .expect("create");
    }
    drop(store);
    let segment = segments(dir.path()).pop().expect("a WAL segment");
    let intact_len = fs::metadata(&segment).expect("stat").len();
    // Half a record: a header announcing 100 payload bytes, followed by only 10.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open segment");
    file.write_all(&100u32.to_le_bytes()).expect("write");
    file.write_all(&[0xab; 14]).expect("write");
    drop(file);

    let store = open(dir.path(), manual_options()).await;
    assert_eq!(fs::metadata(&segment).expect("stat").len(), intact_len);
    assert_eq!(store.current_revision().await.expect("current"), 5);
    assert_eq!(everything(&store).await.len(), 5);
    // Writing after the repair lands at the right place and survives another reopen.
    store
        .create("k5", value("v"))
        .await
        .expect("create after repair");
    drop(store);
    let store = open(dir.path(), manual_options()).await;
    assert_eq!(store.current_revision().await.expect("current"), 6);
    assert!(store.get("k5").await.expect("get").is_some());
}

#[tokio::test]
async fn a_corrupt_last_record_is_dropped_on_reopen() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    for i in 0..3 {
        store
            .create(&format!("k{i}"), value("some value"))
            .await
            .expect("create");
    }
    drop(store);
    let segment = segments(dir.path()).pop().expect("a WAL segment");
    let mut bytes = fs::read(&segment).expect("read segment");
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    fs::write(&segment, &bytes).expect("write segment");

    let store = open(dir.path(), manual_options()).await;
    assert_eq!(store.current_revision().await.expect("current"), 2);
    assert!(store.get("k2").await.expect("get").is_none());
    assert!(store.get("k1").await.expect("get").is_some());
}

#[tokio::test]
async fn damage_inside_a_sealed_segment_refuses_to_open() {
    let dir = temp_dir();
    let options = EmbeddedOptions {
        segment_bytes: 200,
        ..manual_options()
    };
    let store = open(dir.path(), options.clone()).await;
    for i in 0..20 {
        store
            .create(&format!("key-{i}"), value("a value of some length"))
            .await
            .expect("create");
    }
    drop(store);
    let sealed = segments(dir.path())
        .into_iter()
        .next()
        .expect("a sealed segment");
    let mut bytes = fs::read(&sealed).expect("read");
    bytes[10] ^= 0xff;
    fs::write(&sealed, &bytes).expect("write");

    match within("open", Embedded::open(dir.path(), options)).await {
        Err(StoreError::Disk(DiskError::Corrupt { path, .. })) => assert_eq!(path, sealed),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshots_replace_old_segments_and_recovery_uses_snapshot_plus_wal() {
    let dir = temp_dir();
    let options = EmbeddedOptions {
        segment_bytes: 512,
        ..manual_options()
    };
    let store = open(dir.path(), options.clone()).await;
    let mut latest = BTreeMap::new();
    for round in 0..10 {
        for key in 0..10 {
            let key = format!("obj/{key}");
            let text = format!("value {round} of {key}");
            let kv = match latest.get(&key) {
                None => store.create(&key, value(&text)).await.expect("create"),
                Some(kv) => {
                    let previous: &devplane_store::KeyValue = kv;
                    store
                        .update(&key, value(&text), previous.mod_rev)
                        .await
                        .expect("update")
                }
            };
            latest.insert(key, kv);
        }
    }
    store.delete("obj/9", None).await.expect("delete");
    latest.remove("obj/9");
    let current = store.current_revision().await.expect("current");
    let segments_before = segments(dir.path()).len();
    assert!(
        segments_before > 5,
        "small segments rotate ({segments_before} segments)"
    );
    assert!(store.stats().segments_created > 0);

    let compact_at = current - 15;
    within("compact", store.compact(compact_at))
        .await
        .expect("compact");
    assert_eq!(store.stats().snapshots_written, 1);
    let snapshot_files = snapshots(dir.path());
    assert_eq!(snapshot_files.len(), 1);
    assert!(
        snapshot_files[0].ends_with(format!("snapshot-{:020}.snap", compact_at - 1)),
        "snapshot at the floor: {snapshot_files:?}"
    );
    assert!(
        segments(dir.path()).len() < segments_before,
        "obsolete segments are deleted"
    );
    let events_after_floor: Vec<_> = {
        let mut stream = within("watch", store.watch("", compact_at - 1))
            .await
            .expect("watch");
        let mut events = Vec::new();
        for _ in compact_at..=current {
            events.push(next_event(&mut stream).await);
        }
        events
    };
    drop(store);

    let store = open(dir.path(), options).await;
    assert_eq!(store.current_revision().await.expect("current"), current);
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        compact_at
    );
    let recovered: BTreeMap<_, _> = everything(&store)
        .await
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    assert_eq!(recovered, latest);
    // The history from the compacted revision on came back from the WAL, prev values included.
    let mut stream = within("watch", store.watch("", compact_at - 1))
        .await
        .expect("watch");
    for expected in &events_after_floor {
        assert_eq!(&next_event(&mut stream).await, expected);
    }
    assert!(matches!(
        within("watch", store.watch("", compact_at - 2)).await,
        Err(StoreError::Compacted { .. })
    ));
    // Reads at the compacted revision still work after the restart.
    within(
        "list",
        store.list(ListOptions {
            rev: Some(compact_at),
            ..Default::default()
        }),
    )
    .await
    .expect("list at the compacted revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_syncs_far_less_often_than_it_writes() {
    const WRITERS: usize = 64;
    const WRITES_EACH: usize = 20;
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES_EACH {
                store
                    .create(&format!("w{writer}/{i}"), value("payload"))
                    .await
                    .expect("create");
            }
        }));
    }
    for task in tasks {
        within("writer task", task)
            .await
            .expect("writer task panicked");
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    let writes = (WRITERS * WRITES_EACH) as u64;
    assert_eq!(stats.committed_writes, writes);
    let per_write = stats.wal_syncs as f64 / writes as f64;
    println!(
        "group commit: {writes} writes from {WRITERS} tasks, {} fsyncs ({per_write:.3} per write, \
         {:.1} writes per batch), {elapsed:?}",
        stats.wal_syncs,
        writes as f64 / stats.batches as f64,
    );
    assert!(
        stats.wal_syncs * 4 <= writes,
        "expected at most one fsync per 4 writes, got {} fsyncs for {writes} writes",
        stats.wal_syncs
    );
}

/// An in-memory store whose live feed holds 16 events, a watcher from its start that reads
/// nothing, and 100 creates after it (the writer never waits for the watcher): the store, the
/// watch's start and the watch.
async fn behind_a_slow_watcher() -> (Embedded, Rev, devplane_store::WatchStream) {
    let options = EmbeddedOptions {
        watch_buffer: 16,
        ..manual_options()
    };
    let store = Embedded::in_memory(options).expect("memory store");
    let start = store.current_revision().await.expect("current");
    let slow = within("watch", store.watch("", start))
        .await
        .expect("slow watch");
    for i in 0..100u64 {
        within("create", store.create(&format!("k{i}"), value("v")))
            .await
            .expect("create");
    }
    (store, start, slow)
}

#[tokio::test]
async fn a_watcher_behind_the_live_feed_catches_up_from_the_event_log() {
    let (_store, start, mut slow) = behind_a_slow_watcher().await;
    for i in 0..100u64 {
        assert_eq!(
            next_event(&mut slow).await.rev,
            start + i + 1,
            "no event lost or repeated"
        );
    }
}

#[tokio::test]
async fn a_watcher_behind_the_live_feed_of_a_closed_store_sees_its_stream_end() {
    let (store, _, mut slow) = behind_a_slow_watcher().await;
    within("close", store.close()).await.expect("close");
    // What the feed still held comes first; then the end, never a made-up compaction.
    while let Some(item) = within("slow watcher", slow.next()).await {
        assert!(item.is_ok(), "{item:?}");
    }
}

#[tokio::test]
async fn a_watcher_behind_the_retained_history_gets_compacted_and_its_stream_ends() {
    let (store, start, mut slow) = behind_a_slow_watcher().await;
    within("compact", store.compact(start + 50))
        .await
        .expect("compact");
    match within("slow watcher", slow.next()).await {
        Some(Err(StoreError::Compacted {
            requested,
            compacted,
        })) => {
            assert_eq!(requested, start);
            assert!(compacted > start + 1, "events were lost: {compacted}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(within("end of stream", slow.next()).await.is_none());
}

#[tokio::test]
async fn automatic_compaction_keeps_the_configured_number_of_revisions() {
    let options = EmbeddedOptions {
        retain_revisions: 10,
        compaction_interval: Some(Duration::from_millis(20)),
        ..EmbeddedOptions::default()
    };
    let store = Embedded::in_memory(options).expect("memory store");
    for i in 0..50 {
        store
            .create(&format!("k{i}"), value("v"))
            .await
            .expect("create");
    }
    within("automatic compaction", async {
        while store.compacted_revision().await.expect("compacted") != 41 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The newest 10 revisions (41..=50) remain watchable.
    let mut stream = within("watch", store.watch("", 40)).await.expect("watch");
    assert_eq!(next_event(&mut stream).await.rev, 41);
    assert!(matches!(
        within("watch", store.watch("", 39)).await,
        Err(StoreError::Compacted {
            requested: 39,
            compacted: 41
        })
    ));
}

#[tokio::test]
async fn a_data_directory_cannot_be_opened_twice() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    match within("second open", Embedded::open(dir.path(), manual_options())).await {
        Err(StoreError::Disk(DiskError::Locked { .. })) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    // Dropping the last handle releases the directory at once.
    drop(store);
    open(dir.path(), manual_options()).await;
}

#[tokio::test]
async fn close_syncs_and_refuses_further_operations() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    let other_handle = store.clone();
    let mut stream = within("watch", store.watch("", 0)).await.expect("watch");
    let kv = store.create("k", value("v")).await.expect("create");
    assert_eq!(next_event(&mut stream).await.kv, kv);
    within("close", store.close()).await.expect("close");
    assert!(
        within("end of stream", stream.next()).await.is_none(),
        "watch streams end"
    );
    assert!(matches!(
        other_handle.create("x", value("v")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        other_handle.get("k").await,
        Err(StoreError::Closed)
    ));
    // The directory is free again even though handles still exist.
    let reopened = open(dir.path(), manual_options()).await;
    assert_eq!(reopened.get("k").await.expect("get"), Some(kv));
}

#[tokio::test]
async fn oversized_values_and_bad_options_are_refused() {
    let options = EmbeddedOptions {
        max_value_bytes: 8,
        ..manual_options()
    };
    let store = Embedded::in_memory(options).expect("memory store");
    assert!(matches!(
        store.create("k", value("more than eight bytes")).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.current_revision().await.expect("current"), 0);
    let bad = EmbeddedOptions {
        max_batch: 0,
        ..EmbeddedOptions::default()
    };
    assert!(matches!(
        Embedded::in_memory(bad),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn delete_events_survive_a_reopen_with_their_last_value() {
    let dir = temp_dir();
    let store = open(dir.path(), manual_options()).await;
    let kv = store
        .create("k", value("last words"))
        .await
        .expect("create");
    let deleted = store.delete("k", Some(kv.mod_rev)).await.expect("delete");
    drop(store);
    let store = open(dir.path(), manual_options()).await;
    let mut stream = within("watch", store.watch("", kv.mod_rev))
        .await
        .expect("watch");
    let event = next_event(&mut stream).await;
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event, deleted);
}

/// Set in the child process of the kill -9 test: the data directory it writes to.
const KILL9_DIR_ENV: &str = "DEVPLANE_STORE_KILL9_DIR";
const KILL9_CHILD_TEST: &str = "embedded::kill9_child_writes_until_killed";

/// Child side of `acknowledged_writes_survive_kill_9`: writes from several tasks and prints
/// one `ACK <key> <rev>` line per acknowledged write, until it is killed.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
fn kill9_child_writes_until_killed() {
    let Some(dir) = std::env::var_os(KILL9_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Embedded::open(PathBuf::from(dir), manual_options())
            .await
            .expect("open");
        let out = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let store = store.clone();
            let out = Arc::clone(&out);
            tasks.push(tokio::spawn(async move {
                // Bounded so a forgotten child cannot run forever.
                for i in 0..200_000 {
                    let key = format!("kill9/{writer}/{i}");
                    let kv = store
                        .create(&key, value("acknowledged"))
                        .await
                        .expect("create");
                    let mut out = out.lock();
                    writeln!(out, "ACK {key} {}", kv.mod_rev).expect("stdout");
                    out.flush().expect("flush stdout");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer task");
        }
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    const ACKS_BEFORE_KILL: usize = 1000;
    let dir = temp_dir();
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            KILL9_CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_DIR_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer child");
    let stdout = child.stdout.take().expect("child stdout");

    // Read acknowledgements on a thread; the test waits on a channel with timeouts.
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked: Vec<(String, Rev)> = Vec::new();
    let parse = |line: &str| -> Option<(String, Rev)> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let key = parts.next()?.to_owned();
        let rev = parts.next()?.parse().ok()?;
        Some((key, rev))
    };
    while acked.len() < ACKS_BEFORE_KILL {
        match within("acknowledgements from the child", lines_rx.recv()).await {
            Some(line) => acked.extend(parse(&line)),
            None => panic!("the child exited after {} acknowledgements", acked.len()),
        }
    }
    // SIGKILL, mid-stream: no chance to flush or clean up.
    child.kill().expect("kill -9 the child");
    // Lines printed before the kill were acknowledged too.
    while let Some(line) = within("rest of the child's output", lines_rx.recv()).await {
        acked.extend(parse(&line));
    }
    let status = within(
        "child exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("join")
    .expect("wait for the child");
    assert!(!status.success(), "the child was killed");
    reader.join().expect("reader thread");

    let store = open(dir.path(), manual_options()).await;
    let current = store.current_revision().await.expect("current");
    let max_acked = acked.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
    assert!(
        current >= max_acked,
        "current {current} < acknowledged {max_acked}"
    );
    for (key, rev) in &acked {
        let kv = store
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} was acknowledged but is lost"));
        assert_eq!(kv.mod_rev, *rev, "{key}");
    }
    println!(
        "kill -9: {} acknowledged writes all present (current revision {current})",
        acked.len()
    );
}

/// Filling a store while its history is trimmed, as automatic compaction does, keeps every
/// object at the revision it was written and forgets only the compacted history. (What the
/// objects cost in memory is measured by `devplane bench api`, not asserted here.)
#[tokio::test]
async fn a_store_filled_while_its_history_is_trimmed_keeps_every_object() {
    const OBJECTS: usize = 3_000;
    const RETAIN: Rev = 500;
    let store = Embedded::in_memory(manual_options()).expect("memory store");
    let mut written = Vec::new();
    for i in 0..OBJECTS {
        let key = format!("/registry/devices/default/device-{i:06}");
        let kv = store
            .create(&key, bytes::Bytes::from(vec![b'x'; 1024]))
            .await
            .expect("create");
        if i % 1000 == 999 {
            store
                .compact(kv.mod_rev - RETAIN + 1)
                .await
                .expect("compact");
        }
        written.push((key, kv.mod_rev));
    }
    for (key, rev) in &written {
        let kv = store
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} is lost"));
        assert_eq!((kv.mod_rev, kv.value.len()), (*rev, 1024), "{key}");
    }
    let all = ListOptions {
        prefix: "/registry/devices/".into(),
        ..ListOptions::default()
    };
    let page = store.list(all.clone()).await.expect("list");
    assert_eq!(page.items.len(), OBJECTS);
    let first = written[0].1;
    assert!(
        matches!(
            store
                .list(ListOptions {
                    rev: Some(first),
                    ..all
                })
                .await,
            Err(StoreError::Compacted { .. })
        ),
        "revision {first} was compacted"
    );
}
