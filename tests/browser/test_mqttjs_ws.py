"""A browser client over MQTT over WebSockets (issue 14): MQTT.js's browser bundle (from npm,
pinned by tests/interop/node/package-lock.json) loaded by a local test page in headless
Chromium connects over ws:// to the broker, subscribes, and receives what a paho client
publishes over TLS."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, START_TIMEOUT, _broker_bin, _stop, RunningBroker

sys.path.insert(0, str(REPO / "tests" / "interop"))
from mqttclients import V5, PahoClient  # noqa: E402

MQTTJS = REPO / "tests" / "interop" / "node" / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"


def _port(text: str, kind: str) -> int | None:
    m = re.search(rf"MQTT listening on \S+:(\d+) \({kind}\)", text)
    return int(m.group(1)) if m else None


@pytest.fixture
def ws_tls_broker(tmp_path):
    cf, kf = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(kf), "-out", str(cf),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    log_path = tmp_path / "broker.log"
    cmd = [
        str(_broker_bin()),
        "--listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0", "--db", str(tmp_path / "b.db"),
        "--allow-anonymous", "--ws-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
        "--certfile", str(cf), "--keyfile", str(kf),
    ]  # fmt: skip
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    b = RunningBroker(proc, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            text = b.log()
            b.ws_port, b.tls_port = _port(text, "ws"), _port(text, "tls")
            if b.ws_port and b.tls_port:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"broker did not start; log:\n{text}")
            time.sleep(0.02)
        b.cafile = str(cf)
        yield b
    finally:
        _stop(b)


def _wait_js(browser, expr: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = browser.execute_script(f"return {expr};")
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{expr} not true within {timeout}s; page log: {browser.execute_script('return window.log;')}")


def test_mqttjs_in_chromium_over_ws_receives_what_paho_publishes_over_tls(ws_tls_broker, browser, tmp_path):
    if not MQTTJS.is_file():
        pytest.fail(f"{MQTTJS} missing: scripts/test installs MQTT.js (npm ci in tests/interop/node)")
    b = ws_tls_broker
    page = tmp_path / "mqttjs.html"
    page.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8">
<script src="{MQTTJS.as_uri()}"></script></head><body><script>
window.log = []; window.got = []; window.subscribed = false;
const c = mqtt.connect("ws://127.0.0.1:{b.ws_port}/mqtt",
    {{protocolVersion: 5, clientId: "chromium", reconnectPeriod: 0}});
c.on("connect", () => c.subscribe("browser/t", {{qos: 1}}, (err) => {{
    if (err) window.log.push("suback " + err); else window.subscribed = true; }}));
c.on("message", (topic, payload) => window.got.push(topic + "=" + payload.toString()));
c.on("error", (e) => window.log.push("error " + e));
</script></body></html>"""
    )
    browser.get(page.as_uri())
    _wait_js(browser, "window.subscribed")
    pub = PahoClient(("127.0.0.1", b.tls_port), V5, ca_certs=b.cafile)
    try:
        pub.connect()
        pub.publish("browser/t", b"hello browser", qos=1)
        got = _wait_js(browser, "window.got.length > 0 && window.got")
        assert got == ["browser/t=hello browser"]
    finally:
        pub.close()
    assert "(ws)" in b.log()
