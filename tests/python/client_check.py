"""Drive devplane's API with the official Python `kubernetes` client.

Prints one `ok <step>` line per passed step; exits non-zero on the first failure.
Usage: client_check.py KUBECONFIG
"""

import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL, NS = "iot.devplane.io", "v1alpha1", "devices", "smart-home"


def device(name):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"modelRef": {"name": "thermo-hygrometer"}, "attributes": {"room": "hall"}},
    }


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api = client.CustomObjectsApi()
    core = client.CoreV1Api()

    listed = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    names = [item["metadata"]["name"] for item in listed["items"]]
    assert "living-room-climate" in names, names
    print("ok listed", names, flush=True)

    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, device("hall-climate"))
    assert created["metadata"]["uid"] and created["spec"]["lifecycle"] == "Servicing", created
    print("ok created", created["metadata"]["resourceVersion"], flush=True)

    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "hall-climate", {"metadata": {"labels": {"floor": "1"}}}
    )
    assert patched["metadata"]["labels"] == {"floor": "1"}, patched
    print("ok patched", patched["metadata"]["resourceVersion"], flush=True)

    start = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["metadata"]["resourceVersion"]
    threading.Timer(0.5, lambda: api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, device("porch-climate"))).start()
    seen = None
    w = watch.Watch()
    for event in w.stream(
        api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version=start, timeout_seconds=20
    ):
        if event["object"]["metadata"]["name"] == "porch-climate":
            seen = event["type"]
            w.stop()
    assert seen == "ADDED", seen
    print("ok watched", seen, flush=True)

    # Make more writes than the server keeps history for, wait for its compaction, then
    # resume a watch from the old revision: the client must get 410 Gone.
    old = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["metadata"]["resourceVersion"]
    deadline = time.time() + 30
    i = 0
    while True:
        for _ in range(25):
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"churn-{i}"}, "data": {"i": str(i)}})
            i += 1
        try:
            for _event in watch.Watch().stream(
                api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version=old, timeout_seconds=1
            ):
                pass
        except ApiException as e:
            assert e.status == 410, e
            print("ok expired", e.status, e.reason, flush=True)
            return
        if time.time() > deadline:
            raise AssertionError("no 410 for a watch from a compacted resourceVersion")


if __name__ == "__main__":
    main(sys.argv[1])
