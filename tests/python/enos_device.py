"""A device (or gateway) speaking the EnOS device protocol, written from the protocol's
description with paho-mqtt 2.x (MQTT 3.1.1), driven by the integration tests.

Usage: enos_device.py HOST PORT LOGIN_JSON SCRIPT_JSON

LOGIN_JSON: {"productKey": PK, "deviceKey": DK, "secret": S, "signMethod": "sha256"|"sha1"|
"md5"|"hmacsha256"|…, "mode": 2|3, "clientId": inner client id (default DK),
"timestamp": as written (default now in ms)}. Mode 2 signs with the device secret, mode 3 with
the product secret (dynamic activation).

The device never subscribes: EnOS pushes replies and downlink to the connection. Each message
that arrives is printed as "message <topic> <payload>". SCRIPT_JSON is a list of steps:
  {"op": "post", "measurepoints": {...}, "time": T}      "reply post <code> <message>"
  {"op": "batch", "items": [...]}                         "reply batch <code> <message>"
  {"op": "event", "event": E, "events": {...}}            "reply event <code> <message>"
  {"op": "attributes", "attributes": {...}}               "reply attributes <code> <message>"
  {"op": "topo_add", "devices": [DEVICE...]}              "reply topo_add <code> <message>"
  {"op": "topo_get"}                                      "reply topo_get <code> <data>"
  {"op": "login", "device": DEVICE}                       "reply login <code> <message>"
  {"op": "login_batch", "devices": [DEVICE...]}           "reply login_batch <code> <data>"
  {"op": "logout", "device": DEVICE}                      "reply logout <code> <message>"
  {"op": "sub_post", "device": DEVICE, "measurepoints": {...}}
                                                          "reply sub_post <code> <message>"
  {"op": "serve", "seconds": S, "output": {...}}          for S seconds (and, like an SDK's
                                                          handlers, from the connection on)
                                                          answer each service invocation
                                                          ("invoke <service> <params>") with
                                                          code 200 and the output, and each
                                                          measure-point set ("set <params>")
                                                          with code 200; with "answer_after":
                                                          A, invocations are answered A
                                                          seconds after they came, in order;
                                                          with "numbered": true, the output is
                                                          {"uptime": n} for the n-th invocation,
                                                          and "answered <n>" is printed as its
                                                          answer goes
  {"op": "activate"}                                      (mode 3) wait for the secret, print
                                                          "activated <deviceSecret>", answer
                                                          info_reply; the server then closes
DEVICE is {"productKey", "deviceKey", "secret"} (a sub-device signs with its own secret).
After the script: "done", and a clean disconnect.
"""

import hashlib
import json
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt

DIGESTS = {
    "sha256": hashlib.sha256,
    "hmacsha256": hashlib.sha256,
    "sha1": hashlib.sha1,
    "hmacsha1": hashlib.sha1,
    "md5": hashlib.md5,
    "hmacmd5": hashlib.md5,
}

V5_TO_V3 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def signature(method, client_id, device_key, product_key, timestamp, secret):
    """The hex digest of the four pairs in key order followed by the secret (no HMAC)."""
    text = (
        f"clientId{client_id}deviceKey{device_key}productKey{product_key}"
        f"timestamp{timestamp}{secret}"
    )
    return DIGESTS[method.lower()](text.encode()).hexdigest()


def main():
    host, port, login, script = sys.argv[1:5]
    login = json.loads(login)
    steps = json.loads(script)
    pk, dk, secret = login["productKey"], login["deviceKey"], login["secret"]
    method = login.get("signMethod", "sha256")
    mode = login.get("mode", 2)
    inner = login.get("clientId", dk)
    timestamp = str(login.get("timestamp", int(time.time() * 1000)))
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{inner}|securemode={mode},signmethod={method},timestamp={timestamp}|",
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(
        f"{dk}&{pk}", signature(method, inner, dk, pk, timestamp, secret)
    )
    lock = threading.Lock()

    def emit(line):
        with lock:
            print(line, flush=True)

    connected = threading.Event()
    gone = threading.Event()
    result = {}
    replies = queue.Queue()
    activations = queue.Queue()
    serving = {"output": None}
    next_id = [0]

    def on_connect(c, userdata, flags, reason_code, properties):
        code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        # paho reports MQTT 3.1.1 return codes as their MQTT 5 equivalents: print the 3.1.1 one.
        result["connack"] = V5_TO_V3.get(code, code)
        connected.set()

    def on_disconnect(c, userdata, flags, reason_code, properties):
        gone.set()

    def on_message(c, userdata, msg):
        payload = msg.payload.decode()
        emit(f"message {msg.topic} {payload}")
        topic = msg.topic
        if topic.endswith("_reply"):
            replies.put((topic, json.loads(payload)))
            return
        if topic.endswith("/thing/activate/info"):
            activations.put((topic, json.loads(payload)))
            return
        body = json.loads(payload)
        if "/thing/service/" not in topic or serving["output"] is None:
            return
        if topic.endswith("/thing/service/measurepoint/set"):
            emit(f"set {json.dumps(body.get('params'), sort_keys=True)}")
            data = {}
        else:
            service = topic.rsplit("/", 1)[1]
            emit(f"invoke {service} {json.dumps(body.get('params'), sort_keys=True)}")
            data = serving["output"]
            if serving.get("numbered"):
                serving["invoked"] = serving.get("invoked", 0) + 1
                data = {"uptime": serving["invoked"]}
        answer = {"id": body["id"], "code": 200, "data": data}
        delay = serving.get("answer_after") if "/thing/service/measurepoint/set" not in topic else None
        numbered = data.get("uptime") if serving.get("numbered") and "/thing/service/measurepoint/set" not in topic else None

        def send():
            if numbered is not None:
                emit(f"answered {numbered}")
            c.publish(topic + "_reply", json.dumps(answer), qos=1)

        if delay:
            threading.Timer(float(delay), send).start()
        else:
            send()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    # Like an SDK's handlers, the answers are ready before the connection: downlink may come
    # right behind the CONNACK.
    serving["output"] = next((s.get("output", {}) for s in steps if s["op"] == "serve"), None)
    serving["answer_after"] = next((s.get("answer_after") for s in steps if s["op"] == "serve"), None)
    serving["numbered"] = next((s.get("numbered") for s in steps if s["op"] == "serve"), None)
    try:
        client.connect(host, int(port), keepalive=60)
    except Exception as e:  # a refused v3.1.1 connect may surface as an error
        emit(f"error {e}")
        sys.exit(1)
    client.loop_start()
    if not connected.wait(10) or result.get("connack") != 0:
        emit(f"connack {result.get('connack', 'none')}")
        client.loop_stop()
        sys.exit(1)
    emit("connected")

    def request(topic, method_name, params):
        """Publish a request and wait for the reply with its id (each connection counts)."""
        next_id[0] += 1
        rid = str(next_id[0])
        body = {"id": rid, "version": "1.0", "method": method_name, "params": params}
        client.publish(topic, json.dumps(body), qos=1)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                got_topic, reply = replies.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            if got_topic == topic + "_reply" and reply.get("id") == rid:
                return reply
        return {"code": "none", "message": "no reply", "data": None}

    def signed(device, ts):
        cid = device.get("clientId", device["deviceKey"])
        return {
            "productKey": device["productKey"],
            "deviceKey": device["deviceKey"],
            "clientId": cid,
            "timestamp": ts,
            "signMethod": "sha256",
            "sign": signature(
                "sha256", cid, device["deviceKey"], device["productKey"], ts, device["secret"]
            ),
        }

    sys_topic = f"/sys/{pk}/{dk}/"
    session_topic = f"/ext/session/{pk}/{dk}/"
    for step in steps:
        op = step["op"]
        ts = str(int(time.time() * 1000))
        if op == "post":
            params = {"measurepoints": step["measurepoints"], "time": step.get("time", int(ts))}
            r = request(sys_topic + "thing/measurepoint/post", "thing.measurepoint.post", params)
            emit(f"reply post {r.get('code')} {r.get('message')}")
        elif op == "batch":
            r = request(
                sys_topic + "thing/measurepoint/post/batch",
                "thing.measurepoint.post.batch",
                step["items"],
            )
            emit(f"reply batch {r.get('code')} {r.get('message')}")
        elif op == "event":
            event = step["event"]
            params = {"events": step["events"], "time": int(ts)}
            # The method field is not reliable: the topic names the event.
            r = request(sys_topic + f"thing/event/{event}/post", "thing.event.post", params)
            emit(f"reply event {r.get('code')} {r.get('message')}")
        elif op == "attributes":
            r = request(
                sys_topic + "thing/attribute/update",
                "thing.attribute.update",
                {"attributes": step["attributes"]},
            )
            emit(f"reply attributes {r.get('code')} {r.get('message')}")
        elif op == "topo_add":
            params = [signed(d, ts) for d in step["devices"]]
            r = request(sys_topic + "thing/topo/add", "thing.topo.add", params)
            emit(f"reply topo_add {r.get('code')} {r.get('message')}")
        elif op == "topo_get":
            r = request(sys_topic + "thing/topo/get", "thing.topo.get", {})
            emit(f"reply topo_get {r.get('code')} {json.dumps(r.get('data'), sort_keys=True)}")
        elif op == "login":
            params = signed(step["device"], ts)
            r = request(session_topic + "combine/login", "combine.login", params)
            emit(f"reply login {r.get('code')} {r.get('message')}")
        elif op == "login_batch":
            params = {
                "clientId": "batch",
                "timestamp": ts,
                "signMethod": "sha256",
                "subDevices": [
                    {
                        "productKey": d["productKey"],
                        "deviceKey": d["deviceKey"],
                        "sign": signature(
                            "sha256", "batch", d["deviceKey"], d["productKey"], ts, d["secret"]
                        ),
                    }
                    for d in step["devices"]
                ],
            }
            r = request(session_topic + "combine/login/batch", "combine.login.batch", params)
            emit(f"reply login_batch {r.get('code')} {json.dumps(r.get('data'), sort_keys=True)}")
        elif op == "logout":
            d = step["device"]
            params = {"productKey": d["productKey"], "deviceKey": d["deviceKey"]}
            r = request(session_topic + "combine/logout", "combine.logout", params)
            emit(f"reply logout {r.get('code')} {r.get('message')}")
        elif op == "sub_post":
            d = step["device"]
            topic = f"/sys/{d['productKey']}/{d['deviceKey']}/thing/measurepoint/post"
            params = {"measurepoints": step["measurepoints"], "time": int(ts)}
            r = request(topic, "thing.measurepoint.post", params)
            emit(f"reply sub_post {r.get('code')} {r.get('message')}")
        elif op == "serve":
            serving["output"] = step.get("output", {})
            emit("serving")
            gone.wait(float(step["seconds"]))
            serving["output"] = None
        elif op == "activate":
            try:
                topic, body = activations.get(timeout=15)
            except queue.Empty:
                emit("activated none")
                continue
            params = body.get("params", {})
            emit(f"activated {params.get('deviceSecret')}")
            client.publish(topic + "_reply", json.dumps({"id": body["id"], "code": 200, "data": ""}), qos=1)
            gone.wait(10)
            emit("closed" if gone.is_set() else "still open")
        else:
            emit(f"unknown step {op}")
    emit("done")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
