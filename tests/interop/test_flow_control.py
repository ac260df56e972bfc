"""Inbound flow control with the clients people run, which ignore the server's Receive
Maximum (§3.3.4, §4.9): MQTT.js (inside Node-RED and Zigbee2MQTT) sends a whole burst at
once, and a 3.1.1 client cannot even know the limit. The broker's default Receive Maximum is
65535 (absent from CONNACK), so such a burst is taken whole: every message reaches the
subscriber exactly once, in order, and no client is disconnected. `--max-inflight-messages`
is the outbound window only and must not throttle what a client sends.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mqttclients import V5, V311

NODE_DIR = Path(__file__).resolve().parent / "node"
VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]
BROKER_ARGS = [
    pytest.param([], id="defaults"),
    pytest.param(["--max-inflight-messages", "10"], id="max_inflight_10"),
]


def mqttjs_burst(broker, version: int, qos: int, count: int, topic: str) -> dict:
    """Runs tests/interop/node/burst.js (MQTT.js publisher and subscriber) and returns its
    JSON report."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "mqtt").is_dir():
        pytest.fail("node or MQTT.js missing: scripts/test installs them (npm ci in tests/interop/node)")
    cmd = [node, str(NODE_DIR / "burst.js"), broker.host, str(broker.port), str(version), str(qos), str(count), topic]
    r = subprocess.run(cmd, capture_output=True, timeout=60, cwd=NODE_DIR)
    out = r.stdout.decode(errors="replace").strip().splitlines()
    assert out, f"burst.js printed nothing (exit {r.returncode}); stderr:\n{r.stderr.decode(errors='replace')}"
    return json.loads(out[-1])


@pytest.mark.parametrize("broker_args", BROKER_ARGS)
@pytest.mark.parametrize("qos,count", [(2, 200), (1, 50)], ids=["qos2x200", "qos1x50"])
@pytest.mark.parametrize("version", VERSIONS)
def test_mqttjs_burst_ignoring_receive_maximum_each_message_once_in_order_3_3_4_9(
    broker, topic, version, qos, count, broker_args
):
    """MQTT.js publishes `count` messages at once (all in flight, Receive Maximum ignored):
    every PUBLISH is acknowledged, the subscriber gets each message exactly once, in order,
    and neither client is disconnected."""
    report = mqttjs_burst(broker, version, qos, count, f"{topic}/burst")
    assert report["publishErrors"] == [], report["publishErrors"][:5]
    assert report["errors"] == [], report["errors"]
    assert report["acked"] == count, report
    assert report["received"] == [f"m{i}" for i in range(count)], report["received"][:30]


@pytest.mark.parametrize("broker_args", BROKER_ARGS)
def test_paho_311_with_200_in_flight_each_message_once_in_order(clients, topic, broker_args):
    """A paho 3.1.1 publisher allowed 200 messages in flight (`max_inflight_messages_set`)
    sends 200 QoS 2 messages: all complete, and the subscriber gets each exactly once, in
    order (before, the broker disconnected it at `max_inflight_messages` and paho's resend on
    reconnect livelocked)."""
    n = 200
    t = f"{topic}/inflight"
    sub = clients.paho_connected(V311)
    assert sub.subscribe(t, 2) == [2]
    pub = clients.paho(V311)
    pub.c.max_inflight_messages_set(n)
    pub.connect()
    infos = [pub.c.publish(t, f"m{i}".encode(), qos=2) for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=20)
        assert info.is_published(), f"message {info.mid} not completed"
    assert not pub.disconnected.is_set(), f"publisher disconnected: {pub.disconnect_rc}"
    got = sub.collect(n, timeout=20) + sub.drain(1.0)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(n)]
