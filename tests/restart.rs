//! `devplane up` restarted on the same data directory: objects, revisions and watch history
//! survive a graceful stop and a kill -9.

use crate::support::{Devplane, SMART_HOME};

fn jsonpath(devplane: &Devplane, args: &[&str]) -> String {
    devplane.kubectl_ok(args)
}

#[test]
fn objects_and_watch_history_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Devplane::start_in(dir.path(), &[]);
    first.apply_examples(SMART_HOME);
    first.kubectl_ok(&[
        "create",
        "configmap",
        "before",
        "-n",
        "smart-home",
        "--from-literal=k=1",
    ]);
    let device_rv = jsonpath(
        &first,
        &[
            "get",
            "device",
            "living-room-climate",
            "-n",
            "smart-home",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    // The list's own resourceVersion (kubectl -o jsonpath would show a client-side List).
    let (code, list) = first.curl(
        "GET",
        "/api/v1/namespaces/smart-home/configmaps",
        Some(&first.token()),
        None,
    );
    assert_eq!(code, 200, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).expect("list JSON");
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string();
    assert!(first.stop(), "devplane up exits on SIGTERM");

    let second = Devplane::start_in(dir.path(), &[]);
    let after = jsonpath(
        &second,
        &[
            "get",
            "device",
            "living-room-climate",
            "-n",
            "smart-home",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    assert_eq!(after, device_rv, "same object, same resourceVersion");
    second.kubectl_ok(&[
        "create",
        "configmap",
        "after",
        "-n",
        "smart-home",
        "--from-literal=k=2",
    ]);
    // A watch from the revision seen before the restart resumes: it gets the later change and
    // no 410 (which would force a re-list).
    let (code, body) = second.curl(
        "GET",
        &format!("/api/v1/namespaces/smart-home/configmaps?watch=true&resourceVersion={list_rv}&timeoutSeconds=2"),
        Some(&second.token()),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect();
    assert!(events.iter().all(|e| e["type"] != "ERROR"), "{body}");
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "after");
}

#[test]
fn an_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Devplane::start_in(dir.path(), &[]);
    first.kubectl_ok(&["create", "configmap", "durable", "--from-literal=k=v"]);
    first.kill();
    let second = Devplane::start_in(dir.path(), &[]);
    assert_eq!(
        second.kubectl_ok(&["get", "configmap", "durable", "-o", "jsonpath={.data.k}"]),
        "v"
    );
}
