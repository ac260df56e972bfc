"""Client drivers for the interop tests: paho-mqtt 2.x, Debian's mosquitto_pub /
mosquitto_sub, and a tiny raw-socket MQTT encoder for byte-level flows that
real clients cannot be made to produce (abrupt close, duplicate QoS 2 PUBLISH).

Every wait here is bounded (WAIT seconds at most) so that a broker that does not
answer makes a test fail instead of hanging.
"""

from __future__ import annotations

import queue
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0  # upper bound of every positive wait, in seconds
QUIET = 1.0  # how long a negative check ("nothing more arrives") listens

V5 = 5
V311 = 4


def new_client_id(prefix: str = "c") -> str:
    """A client id that every broker must accept: 1..23 chars of [0-9a-zA-Z] (MQTT-3.1.3-5)."""
    return (prefix + uuid.uuid4().hex)[:23]


@dataclass
class Msg:
    """One received application message, whichever client received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list = field(default_factory=list)
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    payload_format: int | None = None


def publish_props(
    user_properties=None, content_type=None, response_topic=None, correlation_data=None, payload_format=None
) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    if user_properties:
        p.UserProperty = list(user_properties)
    if content_type is not None:
        p.ContentType = content_type
    if response_topic is not None:
        p.ResponseTopic = response_topic
    if correlation_data is not None:
        p.CorrelationData = correlation_data
    if payload_format is not None:
        p.PayloadFormatIndicator = payload_format
    return p


# --------------------------------------------------------------------------- paho


class PahoClient:
    """A paho-mqtt 2.x client running its network loop in a thread.

    Messages land in a queue; every method waits at most `timeout` seconds.
    """

    def __init__(
        self,
        addr,
        version: int,
        client_id: str | None = None,
        *,
        clean: bool = True,
        keepalive: int = 30,
        will: tuple | None = None,
        session_expiry: int | None = None,
        transport: str = "tcp",
        ws_path: str = "/mqtt",
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ):
        """`transport="websockets"` speaks MQTT over WebSockets on `ws_path`; `ca_certs`
        turns on TLS trusting that CA file (wss with websockets), presenting the client
        certificate `certfile` (key `keyfile`) when given."""
        self.host, self.port = addr
        self.version = version
        self.client_id = new_client_id("p") if client_id is None else client_id
        self.clean = clean
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        protocol = mqtt.MQTTv5 if version == V5 else mqtt.MQTTv311
        kwargs = {} if version == V5 else {"clean_session": clean}
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            transport=transport,
            **kwargs,
        )
        if transport == "websockets":
            self.c.ws_set_options(path=ws_path)
        if ca_certs is not None:
            self.c.tls_set(ca_certs=ca_certs, certfile=certfile, keyfile=keyfile)
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos=qos, retain=retain)
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.log_lines: list[str] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None  # (flags, reason_code, properties)
        self.disconnect_rc = None
        self._subacks: dict[int, list] = {}
        self._suback_ev = threading.Event()
        self._lock = threading.Lock()
        self._loop_running = False
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_log = lambda _c, _u, _lvl, s: self.log_lines.append(s)

    # callbacks (paho network thread)
    def _on_connect(self, _c, _u, flags, reason_code, properties):
        self.connack = (flags, reason_code, properties)
        self.connected.set()

    def _on_disconnect(self, _c, _u, _flags, reason_code, _properties):
        self.disconnect_rc = reason_code
        self.disconnected.set()

    def _on_message(self, _c, _u, m):
        p = m.properties
        self.messages.put(
            Msg(
                topic=m.topic,
                payload=bytes(m.payload),
                qos=m.qos,
                retain=bool(m.retain),
                user_properties=list(getattr(p, "UserProperty", []) or []) if p else [],
                content_type=getattr(p, "ContentType", None) if p else None,
                response_topic=getattr(p, "ResponseTopic", None) if p else None,
                correlation_data=getattr(p, "CorrelationData", None) if p else None,
                payload_format=getattr(p, "PayloadFormatIndicator", None) if p else None,
            )
        )

    def _on_subscribe(self, _c, _u, mid, reason_codes, _properties):
        with self._lock:
            self._subacks[mid] = [rc.value for rc in reason_codes]
        self._suback_ev.set()

    # actions
    def _connect_kwargs(self):
        kw = {"keepalive": self.keepalive}
        if self.version == V5:
            kw["clean_start"] = self.clean
            if self.session_expiry is not None:
                p = Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = self.session_expiry
                kw["properties"] = p
        return kw

    def connect(self, timeout: float = WAIT, expect_success: bool = True):
        """CONNECT and wait for CONNACK; start the network thread."""
        self.c.connect(self.host, self.port, **self._connect_kwargs())
        self.c.loop_start()
        self._loop_running = True
        assert self.connected.wait(timeout), f"{self.client_id}: no CONNACK within {timeout}s; log={self.log_lines[-10:]}"
        flags, rc, _props = self.connack
        if expect_success:
            assert not rc.is_failure, f"{self.client_id}: CONNACK refused: {rc}"
        return self.connack

    def connect_no_loop(self, timeout: float = WAIT):
        """CONNECT and pump the loop by hand (no thread) until CONNACK.

        Lets a test then close the raw socket with no paho thread racing it."""
        self.c.connect(self.host, self.port, **self._connect_kwargs())
        deadline = time.monotonic() + timeout
        while not self.connected.is_set() and time.monotonic() < deadline:
            self.c.loop(timeout=0.05)
        assert self.connected.is_set(), f"{self.client_id}: no CONNACK within {timeout}s"
        assert not self.connack[1].is_failure, f"CONNACK refused: {self.connack[1]}"

    def subscribe(self, topic: str, qos: int, timeout: float = WAIT) -> list:
        """SUBSCRIBE and wait for SUBACK; returns the granted QoS / reason codes."""
        self._suback_ev.clear()
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe send failed: {rc}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self._subacks:
                    return self._subacks.pop(mid)
            self._suback_ev.wait(0.05)
            self._suback_ev.clear()
        raise AssertionError(f"{self.client_id}: no SUBACK for {topic!r} within {timeout}s")

    def publish(self, topic, payload, qos=0, retain=False, properties=None, timeout: float = WAIT):
        """PUBLISH and wait until the flow completes (sent for QoS 0, PUBACK / PUBCOMP otherwise)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=timeout)
        assert info.is_published(), f"{self.client_id}: publish to {topic!r} qos {qos} not completed within {timeout}s"
        return info

    def get(self, timeout: float = WAIT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def collect(self, n: int, timeout: float = WAIT) -> list[Msg]:
        """Exactly n messages (fails if fewer arrive within timeout)."""
        out: list[Msg] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.client_id}: got {len(out)} of {n} messages within {timeout}s: {out}")
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return out

    def drain(self, quiet: float = QUIET) -> list[Msg]:
        """Whatever else arrives within `quiet` seconds (for 'nothing more' checks)."""
        out: list[Msg] = []
        deadline = time.monotonic() + quiet
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                return out

    def disconnect(self, timeout: float = WAIT, reasoncode=None):
        """Normal DISCONNECT (or v5 with the given reason code), then stop the thread."""
        self.c.disconnect(reasoncode=reasoncode)
        if self._loop_running:
            assert self.disconnected.wait(timeout), f"{self.client_id}: disconnect not completed within {timeout}s"
        self.stop()

    def stop(self):
        if self._loop_running:
            self._loop_running = False
            self.c.loop_stop()

    def kill_socket(self):
        """Close the TCP socket without sending DISCONNECT (an abnormal disconnect)."""
        s = self.c.socket()
        assert s is not None, "not connected"
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
        self.stop()

    def close(self):
        """Best-effort cleanup (fixture teardown)."""
        try:
            if self._loop_running and self.c.is_connected():
                self.c.disconnect()  # wakes the network thread, so loop_stop is quick
                self.disconnected.wait(2)
            self.stop()
        except Exception:
            pass
        try:
            s = self.c.socket()
            if s is not None:
                s.close()
        except Exception:
            pass


# ------------------------------------------------------------------ mosquitto CLI

STDBUF = shutil.which("stdbuf")
SUB_FORMAT = "MSG|%q|%r|%t|%x|%C|%P|%R|%D"


def _vflag(version: int, long: bool) -> str:
    if version == V5:
        return "mqttv5" if long else "5"
    return "mqttv311" if long else "311"


def _parse_msg_line(line: str) -> Msg:
    parts = line.rstrip("\n").split("|")
    _tag, q, r, topic, hexpayload, ctype, uprops, rtopic, corr = parts[:9]
    return Msg(
        topic=topic,
        payload=bytes.fromhex(hexpayload),
        qos=int(q),
        retain=r == "1",
        user_properties=[tuple(kv.split(":", 1)) for kv in uprops.split(" ") if kv],
        content_type=ctype or None,
        response_topic=rtopic or None,
        correlation_data=corr.encode() if corr else None,
    )


class MosqSub:
    """`mosquitto_sub -C count` in the background, with its debug output parsed.

    `wait_subscribed()` returns once the SUBACK arrived, so a publish after it
    cannot be missed; `wait_done()` returns the received messages."""

    def __init__(self, addr, version: int, topic: str, qos: int, count: int, *, timeout: int = int(WAIT), extra=()):
        host, port = addr
        self.client_id = new_client_id("s")
        cmd = [
            "mosquitto_sub", "-h", host, "-p", str(port), "-V", _vflag(version, long=True),
            "-i", self.client_id, "-t", topic, "-q", str(qos), "-C", str(count), "-W", str(timeout),
            "-d", "-F", SUB_FORMAT, *extra,
        ]  # fmt: skip
        if STDBUF:
            cmd = [STDBUF, "-oL", *cmd]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._subscribed = threading.Event()
        self.granted: list[int] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if line.startswith("Subscribed (mid:"):
                self.granted = [int(x) for x in line.split(":")[-1].split(",") if x.strip()]
                self._subscribed.set()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_subscribed(self, timeout: float = WAIT) -> list[int]:
        if not self._subscribed.wait(timeout):
            self.kill()
            raise AssertionError(f"mosquitto_sub got no SUBACK within {timeout}s:\n{self.output()}")
        return self.granted

    def wait_done(self, timeout: float = WAIT + 2) -> list[Msg]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"mosquitto_sub did not finish within {timeout}s:\n{self.output()}") from None
        self._t.join(timeout=2)
        assert rc == 0, f"mosquitto_sub exited {rc}:\n{self.output()}"
        return [_parse_msg_line(line) for line in self.lines if line.startswith("MSG|")]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to this PID only
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def mosq_pub(
    addr,
    version: int,
    topic: str,
    messages=None,
    *,
    qos: int = 0,
    retain: bool = False,
    null: bool = False,
    props=(),
    timeout: float = WAIT,
    extra=(),
):
    """Run mosquitto_pub once. `messages`: one str (-m) or a list of lines (-l, one
    connection, published in order). `null`: zero-length payload (-n).
    `props`: [("user-property", "k", "v"), ("content-type", "x")] → -D publish ...
    `extra`: more arguments (e.g. `--cafile CA` for a TLS listener)."""
    host, port = addr
    cmd = ["mosquitto_pub", "-h", host, "-p", str(port), "-V", _vflag(version, long=False),
           "-i", new_client_id("m"), "-t", topic, "-q", str(qos)]  # fmt: skip
    if retain:
        cmd.append("-r")
    for p in props:
        cmd += ["-D", "publish", *p]
    cmd += list(extra)
    stdin = None
    if null:
        cmd.append("-n")
    elif isinstance(messages, str):
        cmd += ["-m", messages]
    else:
        cmd.append("-l")
        stdin = "".join(m + "\n" for m in messages).encode()
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"mosquitto_pub timed out after {timeout}s: {cmd}") from e
    assert r.returncode == 0, f"mosquitto_pub exited {r.returncode}: {cmd}\n{r.stdout!r}\n{r.stderr!r}"


# ------------------------------------------------------------------- raw packets


def varint(n: int) -> bytes:
    """Variable Byte Integer (§1.5.5)."""
    assert 0 <= n <= 268_435_455
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    """UTF-8 Encoded String (§1.5.4): 2-byte length + bytes."""
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def binary(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def fixed(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_packet(version: int, client_id: str, *, keepalive=30, clean=True, will=None) -> bytes:
    """CONNECT (§3.1). will = (topic, payload, qos, retain); no properties."""
    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will is not None:
        topic, wpayload, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if version == V5:
            payload += varint(0)  # will properties
        payload += utf8(topic) + binary(wpayload)
    vh = utf8("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == V5:
        vh += varint(0)  # properties
    return fixed(0x10, vh + payload)


def publish_packet(version: int, topic: str, payload: bytes, *, qos=0, pid=None, retain=False, dup=False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == V5:
        body += varint(0)
    return fixed(first, body + payload)


def pubrel_packet(pid: int) -> bytes:
    return bytes([0x62, 0x02]) + struct.pack("!H", pid)


PINGREQ = bytes([0xC0, 0x00])
PINGRESP = bytes([0xD0, 0x00])


def disconnect_packet(version: int, reason: int = 0) -> bytes:
    if version == V5 and reason:
        return bytes([0xE0, 0x01, reason])
    return bytes([0xE0, 0x00])


class RawClient:
    """A plain TCP socket speaking hand-built MQTT packets."""

    def __init__(self, addr, timeout: float = WAIT, source: str | None = None):
        # `source`: another loopback address (127.0.0.x) to connect from, for per-address limits.
        src = (source, 0) if source else None
        self.s = socket.create_connection(tuple(addr), timeout=timeout, source_address=src)
        self.s.settimeout(timeout)

    def send(self, data: bytes):
        self.s.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise AssertionError(f"connection closed after {len(buf)} of {n} bytes: {buf.hex()}")
            buf += chunk
        return buf

    def read_packet(self) -> tuple[int, bytes]:
        """(first byte, body) of the next packet; fails after the socket timeout."""
        first = self._read_exact(1)[0]
        mult, length = 1, 0
        for _ in range(4):
            b = self._read_exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, self._read_exact(length)

    def connect(self, version: int, client_id: str, **kw) -> bytes:
        """CONNECT, then assert a successful CONNACK (§3.2); returns its body."""
        self.send(connect_packet(version, client_id, **kw))
        first, body = self.read_packet()
        assert first == 0x20, f"expected CONNACK, got {first:#04x} {body.hex()}"
        assert body[1] == 0, f"CONNACK refused, code {body[1]:#04x}"
        return body

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Wait until the peer closes (EOF or reset); returns bytes read before."""
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(4096)
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                return got
            except (TimeoutError, socket.timeout):
                break
            if not chunk:
                return got
            got += chunk
        raise AssertionError(f"connection still open after {timeout}s (received {got.hex()})")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def binaries_present() -> bool:
    return all(shutil.which(b) for b in ("mosquitto_pub", "mosquitto_sub"))

