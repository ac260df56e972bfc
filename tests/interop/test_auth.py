"""Authentication and ACLs with real clients (issue 4): paho-mqtt 2.x in MQTT 5.0
and 3.1.1, and Debian's mosquitto_pub / mosquitto_sub with -u / -P, against a
broker started WITHOUT --allow-anonymous on a database whose accounts and ACL
rules were made with the broker's own admin command line beforehand.

CONNACK codes (5.0 §3.2.2.2 / 3.1.1 §3.2.2.3): bad user name or password 0x86 / 4,
not authorized 0x87 / 5. paho 2.x reports a 3.1.1 return code converted to the
5.0 reason code (4 → 134, 5 → 135), so the 3.1.1 bytes are also checked raw.
ACL: a denied PUBLISH gets PUBACK 0x87 (5.0) or is dropped (3.1.1); a denied
subscription gets 0x87 (5.0) / 0x80 (3.1.1) in SUBACK; nothing is delivered on a
topic the client may not read, even through a wider allowed subscription.

This module overrides the `broker` fixture of conftest.py (so `clients` and the
log attached to failures use this broker). It needs the broker's own database,
so it is skipped with MQTT5_INTEROP_EXTERNAL.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import MQTT_RE, START_TIMEOUT, WEB_RE, RunningBroker, _broker_bin, _stop

from mqttclients import (
    QUIET,
    V5,
    V311,
    WAIT,
    RawClient,
    binary,
    fixed,
    new_client_id,
    utf8,
)

VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]

USERS = {"alice": "alice-pw", "watcher": "watcher-pw"}
RULES = [
    ["--user", "alice", "readwrite", "alice/#"],
    ["--user", "alice", "--deny", "read", "alice/secret"],
    ["--user", "watcher", "readwrite", "#"],
]

# paho 2.x reason codes (3.1.1 return codes are converted to these)
RC_BAD_CREDENTIALS = 134  # 0x86; 3.1.1 return code 4
RC_NOT_AUTHORIZED = 135  # 0x87; 3.1.1 return code 5


# ----------------------------------------------------------------- fixture


def _admin(db: Path, *args: str, stdin: str | None = None) -> str:
    """Run `mqtt5-broker --db DB ARGS...` (the password, if any, on stdin)."""
    cmd = [str(_broker_bin()), "--db", str(db), *args]
    try:
        r = subprocess.run(
            cmd, input=stdin.encode() if stdin is not None else None, capture_output=True, timeout=30
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"admin command timed out: {cmd}") from e
    assert r.returncode == 0, f"admin command failed ({r.returncode}): {cmd}\n{r.stdout!r}\n{r.stderr!r}"
    return r.stdout.decode()


def _start_without_anonymous(tmp_path: Path, db: Path) -> RunningBroker:
    log_path = tmp_path / "broker.log"
    env = dict(os.environ)
    env["RUST_LOG"] = os.environ.get("MQTT5_INTEROP_RUST_LOG", "info")
    env["RUST_LOG_STYLE"] = "never"
    cmd = [
        str(_broker_bin()),
        "--listen", "127.0.0.1:0",
        "--web-listen", "127.0.0.1:0",
        "--db", str(db),
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


@pytest.fixture
def broker(tmp_path):
    """A fresh broker with anonymous access off (the default) and the accounts and
    rules above, made with the admin command line before the start."""
    if os.environ.get("MQTT5_INTEROP_EXTERNAL"):
        pytest.skip("needs accounts and ACL rules in the broker's own database")
    db = tmp_path / "auth.db"
    for user, pw in USERS.items():
        _admin(db, "user", "add", user, stdin=pw + "\n")
    for rule in RULES:
        _admin(db, "acl", "add", *rule)
    b = _start_without_anonymous(tmp_path, db)
    try:
        yield b
    finally:
        _stop(b)


# ----------------------------------------------------------------- helpers


def paho(clients, version, user=None, password=None, **kw):
    c = clients.paho(version, **kw)
    if user is not None:
        c.c.username_pw_set(user, password)
    return c


def paho_refused(clients, version, user, password) -> int:
    """Connect and return the (paho 5.0-style) reason code of a refusing CONNACK."""
    c = paho(clients, version, user, password)
    _flags, rc, _props = c.connect(expect_success=False)
    assert rc.is_failure, f"{user!r}/{password!r}: CONNACK accepted"
    c.stop()
    return rc.value


def raw_connack(addr, version, client_id, user=None, password=None, source=None) -> bytes:
    """Send a CONNECT with optional credentials (flag bits 7 and 6, §3.1.2.8/9)
    and return the CONNACK body; a refusal must be followed by a close."""
    flags = 0x02
    payload = utf8(client_id)
    if user is not None:
        flags |= 0x80
        payload += utf8(user)
    if password is not None:
        flags |= 0x40
        payload += binary(password.encode())
    vh = utf8("MQTT") + bytes([version, flags, 0, 30])
    if version == V5:
        vh += b"\x00"  # no properties
    r = RawClient(addr, source=source)
    try:
        r.send(fixed(0x10, vh + payload))
        first, body = r.read_packet()
        assert first == 0x20, f"expected CONNACK, got {first:#04x} {body.hex()}"
        if body[1] != 0:
            assert body[0] == 0, "Session Present must be 0 on a refusal"
            r.expect_closed(timeout=5)
        return body
    finally:
        r.close()


def run_mosquitto(tool: str, version: int, addr, args, timeout: float = WAIT):
    host, port = addr
    vflag = "mqttv5" if version == V5 else "mqttv311"
    cmd = [tool, "-h", host, "-p", str(port), "-V", vflag, "-i", new_client_id("m"), *args]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{tool} timed out after {timeout}s: {cmd}") from e


def watcher(clients, version, topic="#"):
    """A paho client allowed to read everything, subscribed to `topic` at QoS 1."""
    w = paho(clients, version, "watcher", USERS["watcher"])
    w.connect()
    assert w.subscribe(topic, 1) == [1]
    return w


# ------------------------------------------------------------ credentials


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_good_credentials_accepted_3_1_3_5(clients, version):
    """paho with the right user name and password: CONNACK success, and it can
    publish and subscribe where its rules allow (alice/#)."""
    c = paho(clients, version, "alice", USERS["alice"])
    _flags, rc, _props = c.connect()
    assert rc.value == 0
    assert c.subscribe("alice/inbox", 1) == [1]
    c.publish("alice/inbox", b"to myself", qos=1)
    m = c.get()
    assert (m.topic, m.payload) == ("alice/inbox", b"to myself")
    c.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_bad_credentials_refused_3_2_2_2(clients, version):
    """Wrong password and unknown user: Bad User Name or Password (0x86 in 5.0,
    return code 4 in 3.1.1 — paho shows it as 134)."""
    assert paho_refused(clients, version, "alice", "wrong") == RC_BAD_CREDENTIALS
    assert paho_refused(clients, version, "nobody", "alice-pw") == RC_BAD_CREDENTIALS
    # the exact bytes: 5.0 reason 0x86, 3.1.1 return code 4 (3.1.1 §3.2.2.3); from another
    # address, since after three wrong passwords in a row an address waits before it is checked
    want = 0x86 if version == V5 else 4
    other = "127.0.0.2"
    assert raw_connack(clients.addr, version, new_client_id("r"), "alice", "wrong", other)[1] == want
    assert raw_connack(clients.addr, version, new_client_id("r"), "nobody", "x", other)[1] == want
    assert raw_connack(clients.addr, version, new_client_id("r"), "alice", USERS["alice"], other)[1] == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_anonymous_refused_by_default_3_2_2_2(clients, version):
    """No credentials while anonymous access is off (the default): Not Authorized
    (0x87 / return code 5), from paho, raw bytes and mosquitto_pub alike."""
    assert paho_refused(clients, version, None, None) == RC_NOT_AUTHORIZED
    want = 0x87 if version == V5 else 5
    assert raw_connack(clients.addr, version, new_client_id("r"))[1] == want
    r = run_mosquitto("mosquitto_pub", version, clients.addr, ["-t", "alice/x", "-m", "anon", "-q", "1"])
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode != 0, f"mosquitto_pub without credentials succeeded: {out}"
    assert "not authori" in out.lower(), f"mosquitto_pub output: {out}"


@pytest.mark.parametrize("version", VERSIONS)
def test_mosquitto_pub_with_credentials_3_1_3_5(clients, version):
    """mosquitto_pub -u/-P with the right password delivers (to a paho watcher);
    with a wrong one it fails with 'bad user name or password' and delivers nothing."""
    w = watcher(clients, version, "alice/#")
    r = run_mosquitto(
        "mosquitto_pub", version, clients.addr, ["-u", "alice", "-P", "wrong", "-t", "alice/bad", "-m", "x", "-q", "1"]
    )
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode != 0, f"mosquitto_pub with a wrong password succeeded: {out}"
    assert "bad user name or password" in out.lower(), f"mosquitto_pub output: {out}"
    r = run_mosquitto(
        "mosquitto_pub",
        version,
        clients.addr,
        ["-u", "alice", "-P", USERS["alice"], "-t", "alice/good", "-m", "hello", "-q", "1"],
    )
    assert r.returncode == 0, f"mosquitto_pub failed: {r.stdout!r} {r.stderr!r}"
    m = w.get()
    assert (m.topic, m.payload) == ("alice/good", b"hello")
    assert w.drain() == [], "the refused publish must not be delivered"


# --------------------------------------------------------------------- ACL


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_acl_denied_publish_3_3_4(clients, version):
    """alice may write only under alice/#: a QoS 1 publish elsewhere gets PUBACK
    0x87 Not authorized in 5.0 (a plain PUBACK in 3.1.1) and is not delivered."""
    w = watcher(clients, version)
    c = paho(clients, version, "alice", USERS["alice"])
    acks: dict[int, int] = {}
    done = threading.Event()

    def on_publish(_c, _u, mid, reason_code, _props):
        acks[mid] = reason_code.value
        done.set()

    c.c.on_publish = on_publish
    c.connect()
    info = c.c.publish("elsewhere/x", b"denied", qos=1)
    deadline = time.monotonic() + WAIT
    while info.mid not in acks and time.monotonic() < deadline:
        done.wait(0.05)
        done.clear()
    assert info.mid in acks, "no PUBACK for the denied publish"
    assert acks[info.mid] == (0x87 if version == V5 else 0), f"PUBACK reason {acks[info.mid]}"
    c.publish("alice/allowed", b"ok", qos=1)
    m = w.get()
    assert (m.topic, m.payload) == ("alice/allowed", b"ok"), f"got {m}"
    assert w.drain() == []


@pytest.mark.parametrize("version", VERSIONS)
def test_acl_denied_subscription_3_9_3(clients, version):
    """A filter alice may not read: SUBACK 0x87 (5.0) / 0x80 (3.1.1), from paho
    and mosquitto_sub; an allowed filter in the same session is granted."""
    c = paho(clients, version, "alice", USERS["alice"])
    c.connect()
    denied = 0x87 if version == V5 else 0x80
    assert c.subscribe("other/#", 1) == [denied]
    assert c.subscribe("alice/secret", 1) == [denied]
    assert c.subscribe("alice/#", 1) == [1]
    s = clients.mosq_sub(version, "other/#", 1, 1, timeout=3, extra=("-u", "alice", "-P", USERS["alice"]))
    granted = s.wait_subscribed()
    assert granted == [denied], f"mosquitto_sub: {s.output()}"
    s.kill()


@pytest.mark.parametrize("version", VERSIONS)
def test_acl_deny_inside_wider_subscription_with_mosquitto_clients(clients, version):
    """alice's rules: readwrite alice/#, deny read alice/secret. mosquitto_sub -u
    alice on alice/# is granted, but of alice/secret, alice/public, alice/end
    (published by mosquitto_pub -u watcher) only the last two arrive."""
    s = clients.mosq_sub(version, "alice/#", 1, 2, extra=("-u", "alice", "-P", USERS["alice"]))
    assert s.wait_subscribed() == [1]
    for topic in ("alice/secret", "alice/public", "alice/end"):
        r = run_mosquitto(
            "mosquitto_pub",
            version,
            clients.addr,
            ["-u", "watcher", "-P", USERS["watcher"], "-t", topic, "-m", topic, "-q", "1"],
        )
        assert r.returncode == 0, f"mosquitto_pub {topic}: {r.stdout!r} {r.stderr!r}"
    got = s.wait_done()
    assert [m.topic for m in got] == ["alice/public", "alice/end"], s.output()
    # and paho as a second check, with a quiet period after
    c = paho(clients, version, "alice", USERS["alice"])
    c.connect()
    assert c.subscribe("alice/#", 1) == [1]
    p = paho(clients, version, "watcher", USERS["watcher"])
    p.connect()
    p.publish("alice/secret", b"s", qos=1)
    p.publish("alice/public", b"p", qos=1)
    assert [m.topic for m in c.collect(1) + c.drain(QUIET)] == ["alice/public"]
