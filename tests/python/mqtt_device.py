"""A device (or application) written with paho-mqtt 2.x, driven by the integration tests.

Usage: mqtt_device.py HOST PORT USER PASSWORD VERSION MODE [ARGS...]

VERSION is 3 (MQTT 3.1.1) or 5. Modes:
  connect                      print "connack <code>" and exit
  publish TOPIC PAYLOAD ...    subscribe to the device's errors topic, publish each at QoS 1,
                               print "puback <n> <code> <reason string>" and the errors
                               ("message <topic> <payload>")
  respond SECONDS OUTPUT_JSON  subscribe to the device's tree; print "message <topic> <payload>"
                               for each downlink; answer every command with status Succeeded and
                               OUTPUT_JSON, report desired values back; exit after SECONDS or
                               when the server closes the session ("disconnected <code>")
  read SECONDS FILTER...       subscribe (QoS 1) to the filters; print "suback <codes>" and
                               "message <topic> <payload>"; exit after SECONDS
  flood COUNT TOPIC PAYLOAD    publish COUNT QoS 1 messages as fast as the window allows and
                               print "acked <n>" with the number of successful PUBACKs
  slowread COUNT DELAY FILTER  subscribe (QoS 1), read COUNT messages sleeping DELAY seconds in
                               each callback, print "received <n>"
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main():
    host, port, user, password, version, mode = sys.argv[1:7]
    args = sys.argv[7:]
    protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=user.replace("/", "-") + "-" + mode,
        protocol=protocol,
    )
    client.username_pw_set(user, password)
    if mode == "flood":
        client.max_inflight_messages_set(50)
    connected = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, reason_code, properties):
        result["connack"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        connected.set()

    client.on_connect = on_connect
    lock = threading.Lock()

    def emit(line):
        with lock:
            print(line, flush=True)

    if mode == "connect":
        try:
            client.connect(host, int(port), keepalive=30)
        except Exception as e:  # a refused v3.1.1 connect may surface as an error
            emit(f"error {e}")
            return
        client.loop_start()
        connected.wait(10)
        emit(f"connack {result.get('connack', 'none')}")
        client.loop_stop()
        return

    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    if not connected.wait(10) or result.get("connack") != 0:
        emit(f"connack {result.get('connack', 'none')}")
        sys.exit(1)

    prefix = "d/" + user + "/"

    gone = threading.Event()

    def on_disconnect(c, userdata, flags, reason_code, properties):
        code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        emit(f"disconnected {code}")
        gone.set()

    client.on_disconnect = on_disconnect

    if mode == "publish":
        acks = {}
        done = threading.Event()
        pairs = list(zip(args[0::2], args[1::2]))

        def on_publish(c, userdata, mid, reason_code, properties):
            reason = getattr(properties, "ReasonString", "") if properties else ""
            code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            acks[mid] = (code, reason)
            if len(acks) == len(pairs):
                done.set()

        client.on_publish = on_publish
        subscribed = threading.Event()
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_message = lambda c, u, msg: emit(f"message {msg.topic} {msg.payload.decode()}")
        client.subscribe(prefix + "errors", qos=0)
        subscribed.wait(10)
        mids = []
        for topic, payload in pairs:
            mids.append(client.publish(topic, payload, qos=1).mid)
        done.wait(15)
        time.sleep(0.5)  # the errors topic messages follow their PUBACKs
        for i, mid in enumerate(mids):
            code, reason = acks.get(mid, ("none", ""))
            emit(f"puback {i} {code} {reason}")
    elif mode == "respond":
        seconds, output = float(args[0]), json.loads(args[1])

        def on_message(c, userdata, msg):
            payload = msg.payload.decode()
            emit(f"message {msg.topic} {payload}")
            rest = msg.topic[len(prefix):]
            if rest.startswith("commands/") and rest.count("/") == 1:
                answer = {"status": "Succeeded", "output": output}
                c.publish(msg.topic + "/response", json.dumps(answer), qos=1)
            elif rest == "attributes/desired":
                values = json.loads(payload)["values"]
                c.publish(prefix + "attributes/reported", json.dumps(values), qos=1)

        client.on_message = on_message
        client.subscribe(prefix + "#", qos=1)
        emit("subscribed")
        # Until the time is up or the server closes the session (no reconnecting).
        gone.wait(seconds)
        client.loop_stop()
    elif mode == "read":
        seconds, filters = float(args[0]), args[1:]

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            codes = [rc.value if hasattr(rc, "value") else int(rc) for rc in reason_codes]
            emit("suback " + " ".join(str(code) for code in codes))

        def on_message(c, userdata, msg):
            emit(f"message {msg.topic} {msg.payload.decode()}")

        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.subscribe([(f, 1) for f in filters])
        time.sleep(seconds)
    elif mode == "flood":
        count, topic, payload = int(args[0]), args[1], args[2]
        acked = [0]
        done = threading.Event()

        def on_publish(c, userdata, mid, reason_code, properties):
            code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            if code == 0:
                acked[0] += 1
            if acked[0] >= count:
                done.set()

        client.on_publish = on_publish
        for _ in range(count):
            client.publish(topic, payload, qos=1)
        done.wait(120)
        emit(f"acked {acked[0]}")
    elif mode == "slowread":
        count, delay, topic_filter = int(args[0]), float(args[1]), args[2]
        received = [0]
        done = threading.Event()

        def on_message(c, userdata, msg):
            time.sleep(delay)
            received[0] += 1
            if received[0] >= count:
                done.set()

        client.on_message = on_message
        client.subscribe(topic_filter, qos=1)
        emit("subscribed")
        done.wait(180)
        emit(f"received {received[0]}")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
