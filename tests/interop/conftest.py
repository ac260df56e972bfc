"""Fixtures for the interop tests (paho-mqtt 2.x and Debian's mosquitto clients
against the real broker binary).

Broker under test, in this order:
  MQTT5_INTEROP_EXTERNAL=HOST:PORT  an already running broker (e.g. Debian's
                                    mosquitto, to validate the tests themselves);
  MQTT5_BROKER_BIN=PATH             the binary to start (scripts/test passes
                                    target/release/mqtt5-broker);
  otherwise                         <repo>/target/release/mqtt5-broker.

A fresh broker is started for every test on 127.0.0.1 with OS-chosen ports and a
temporary database; it is stopped by SIGTERM to its own PID (SIGKILL after 10 s).
On failure the broker's log is attached to the test report.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mqttclients import MosqSub, PahoClient, RawClient, binaries_present, mosq_pub

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
MQTT_RE = re.compile(r"MQTT listening on (\S+):(\d+)")
WEB_RE = re.compile(r"web page on http://([^\s/]+):(\d+)/")


class RunningBroker:
    def __init__(self, host, port, web_port=None, proc=None, log_path=None):
        self.host = host
        self.port = port
        self.web_port = web_port
        self.proc = proc
        self.log_path = log_path

    @property
    def addr(self):
        return (self.host, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log(self) -> str:
        if not self.log_path:
            return "(external broker: no log)"
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read log: {e})"

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None


def _broker_bin() -> Path:
    p = Path(os.environ.get("MQTT5_BROKER_BIN") or REPO / "target" / "release" / "mqtt5-broker")
    if not p.is_absolute():
        p = (Path.cwd() / p).resolve()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"broker binary {p} not found: build it (cargo build --release) or set MQTT5_BROKER_BIN")
    return p


def _start(tmp_path: Path, extra_args=(), listen=True) -> RunningBroker:
    """The broker with `extra_args`, on `--listen 127.0.0.1:0` unless `listen` is false (then
    the plain listeners come from `extra_args`, e.g. a config file's `listener` blocks)."""
    log_path = tmp_path / "broker.log"
    env = dict(os.environ)
    env["RUST_LOG"] = os.environ.get("MQTT5_INTEROP_RUST_LOG", "info")
    env["RUST_LOG_STYLE"] = "never"
    cmd = [
        str(_broker_bin()),
        *(["--listen", "127.0.0.1:0"] if listen else []),
        "--web-listen", "127.0.0.1:0",
        "--db", str(tmp_path / "t.db"),
        "--allow-anonymous",
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    b = RunningBroker("127.0.0.1", None, proc=proc, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = b.log()
        m, w = MQTT_RE.search(text), WEB_RE.search(text)
        if m and w:
            b.port, b.web_port = int(m.group(2)), int(w.group(2))
            return b
        if proc.poll() is not None:
            pytest.fail(f"broker exited with {proc.returncode} before listening; log:\n{text}")
        time.sleep(0.02)
    _stop(b)
    pytest.fail(f"broker did not log both listening lines within {START_TIMEOUT}s; log:\n{b.log()}")


def _stop(b: RunningBroker):
    p = b.proc
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)  # to this PID only
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


@pytest.fixture
def broker_args():
    """Extra command-line arguments for the broker; a test overrides it with
    `@pytest.mark.parametrize("broker_args", [...])`."""
    return []


@pytest.fixture
def broker(tmp_path, broker_args):
    """The broker under test (fresh per test unless MQTT5_INTEROP_EXTERNAL is set)."""
    ext = os.environ.get("MQTT5_INTEROP_EXTERNAL")
    if ext:
        if broker_args:
            pytest.skip(f"needs broker arguments {broker_args} (external broker)")
        host, port = ext.rsplit(":", 1)
        yield RunningBroker(host, int(port))
        return
    b = _start(tmp_path, broker_args)
    try:
        yield b
    finally:
        _stop(b)


@pytest.fixture
def topic():
    """A topic prefix unique to this test, so tests never see each other's messages
    (matters with an external broker, and for retained messages)."""
    return f"it/{uuid.uuid4().hex[:12]}"


class Clients:
    """Factory for clients that are all cleaned up at teardown."""

    def __init__(self, addr):
        self.addr = addr
        self._paho: list[PahoClient] = []
        self._subs: list[MosqSub] = []
        self._raw: list[RawClient] = []

    def paho(self, version, **kw) -> PahoClient:
        c = PahoClient(self.addr, version, **kw)
        self._paho.append(c)
        return c

    def paho_connected(self, version, **kw) -> PahoClient:
        c = self.paho(version, **kw)
        c.connect()
        return c

    def mosq_sub(self, version, topic, qos, count, **kw) -> MosqSub:
        s = MosqSub(self.addr, version, topic, qos, count, **kw)
        self._subs.append(s)
        return s

    def mosq_pub(self, version, topic, messages=None, **kw):
        mosq_pub(self.addr, version, topic, messages, **kw)

    def raw(self) -> RawClient:
        r = RawClient(self.addr)
        self._raw.append(r)
        return r

    def close_all(self):
        for c in self._paho:
            c.close()
        for s in self._subs:
            s.kill()
        for r in self._raw:
            r.close()


@pytest.fixture
def clients(broker):
    if not binaries_present():
        pytest.fail("mosquitto_pub/mosquitto_sub not installed (scripts/test installs mosquitto-clients)")
    c = Clients(broker.addr)
    yield c
    c.close_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the broker's log to failed tests, and flag a broker that died."""
    rep = yield
    b = item.funcargs.get("broker") if hasattr(item, "funcargs") else None
    if isinstance(b, RunningBroker) and rep.when == "call":
        if rep.failed:
            text = b.log()
            rep.sections.append(("broker log (last 20000 chars)", text[-20000:]))
        if not b.alive():
            rep.sections.append(("broker", f"broker process exited with {b.proc.returncode} during the test"))
    return rep
