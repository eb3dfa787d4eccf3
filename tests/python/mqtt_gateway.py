"""A gateway written with paho-mqtt 2.x (MQTT 5), driven by the integration tests.

Usage: mqtt_gateway.py HOST PORT USER PASSWORD SCRIPT_JSON

USER is the gateway's `{ns}/{name}`. SCRIPT_JSON is a list of steps run in order:
  {"op": "subscribe", "filters": [...]}          print "suback <codes>"
  {"op": "request", "kind": K, "body": {...}}     publish to d/{ns}/{gw}/subdevices/K, print
                                                  "response K <json>" once its answer arrives
  {"op": "publish", "topic": T, "payload": P}     publish at QoS 1 (P: JSON value or string),
                                                  print "puback <code> <reason string>"
  {"op": "serve", "seconds": S, "output": {...}}  for S seconds answer every command for a
                                                  sub-device with status Succeeded and the
                                                  output, and report desired values back
Every message that arrives is printed as "message <topic> <payload>". After the script the
gateway prints "done" and disconnects cleanly.
"""

import json
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main():
    host, port, user, password, script = sys.argv[1:6]
    steps = json.loads(script)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=user.replace("/", "-") + "-gateway",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(user, password)
    lock = threading.Lock()

    def emit(line):
        with lock:
            print(line, flush=True)

    connected = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["connack"] = reason_code.value
        connected.set()

    responses = queue.Queue()
    acks = {}
    acked = threading.Condition()
    serving = {"output": None}
    own = "d/" + user + "/"

    def on_message(c, userdata, msg):
        payload = msg.payload.decode()
        emit(f"message {msg.topic} {payload}")
        if msg.topic.startswith(own + "subdevices/") and msg.topic.endswith("/response"):
            responses.put((msg.topic, payload))
            return
        output = serving["output"]
        levels = msg.topic.split("/")
        if output is None or len(levels) < 5 or levels[0] != "d":
            return
        prefix = "/".join(levels[:3]) + "/"
        rest = "/".join(levels[3:])
        if rest.startswith("commands/") and rest.count("/") == 1:
            answer = {"status": "Succeeded", "output": output}
            c.publish(msg.topic + "/response", json.dumps(answer), qos=1)
        elif rest == "attributes/desired":
            values = json.loads(payload)["values"]
            c.publish(prefix + "attributes/reported", json.dumps(values), qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        emit("suback " + " ".join(str(rc.value) for rc in reason_codes))
        with acked:
            acks[("sub", mid)] = True
            acked.notify_all()

    def on_publish(c, userdata, mid, reason_code, properties):
        reason = getattr(properties, "ReasonString", "") if properties else ""
        with acked:
            acks[("pub", mid)] = (reason_code.value, reason)
            acked.notify_all()

    def wait_ack(key, seconds=10):
        with acked:
            acked.wait_for(lambda: key in acks, seconds)
            return acks.get(key)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    if not connected.wait(10) or result.get("connack") != 0:
        emit(f"connack {result.get('connack', 'none')}")
        sys.exit(1)
    emit("connected")

    for step in steps:
        op = step["op"]
        if op == "subscribe":
            mid = client.subscribe([(f, 1) for f in step["filters"]])[1]
            wait_ack(("sub", mid))
        elif op == "request":
            kind = step["kind"]
            topic = own + "subdevices/" + kind
            client.publish(topic, json.dumps(step.get("body", {})), qos=1)
            try:
                got, payload = responses.get(timeout=15)
                emit(f"response {kind} {payload}")
            except queue.Empty:
                emit(f"response {kind} none")
        elif op == "publish":
            payload = step["payload"]
            if not isinstance(payload, str):
                payload = json.dumps(payload)
            mid = client.publish(step["topic"], payload, qos=1).mid
            code, reason = wait_ack(("pub", mid)) or ("none", "")
            emit(f"puback {code} {reason}")
        elif op == "serve":
            serving["output"] = step.get("output", {})
            time.sleep(float(step["seconds"]))
            serving["output"] = None
        else:
            emit(f"unknown step {op}")
    emit("done")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
