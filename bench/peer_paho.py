"""The script users write today for this job, as a benchmark peer.

A paho-mqtt subscriber that keeps each device's state and POSTs a webhook
on every offline transition. For the retained burst it exits once it knows
`count` devices and prints its peak RSS (KiB).

    python3 bench/peer_paho.py PORT COUNT [WEBHOOK_URL]
"""

import json
import resource
import sys
import urllib.request

import paho.mqtt.client as mqtt

port, count = int(sys.argv[1]), int(sys.argv[2])
webhook = sys.argv[3] if len(sys.argv) > 3 else None
states = {}


def on_connect(client, userdata, flags, *_reason):
    client.subscribe("bench/+/status", qos=1)


def on_message(client, userdata, msg):
    device = msg.topic.split("/")[1]
    state = msg.payload.decode(errors="replace")
    previous = states.get(device)
    states[device] = state
    if webhook and state == "offline" and previous != "offline":
        body = json.dumps({"event": "offline", "device": device, "topic": msg.topic}).encode()
        request = urllib.request.Request(webhook, body, {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
    if len(states) >= count and not webhook:
        client.disconnect()


# paho-mqtt 2 wants the callback API named; 1.x (which mqttwarn pins) has none.
if hasattr(mqtt, "CallbackAPIVersion"):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{port}")
else:
    client = mqtt.Client(client_id=f"bench-paho-{port}")
client.on_connect = on_connect
client.on_message = on_message
client.connect("127.0.0.1", port)
client.loop_forever()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
