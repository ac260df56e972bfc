#!/usr/bin/env python3
"""Soak test for mqtt5-broker (issues 7 and 12); run it through scripts/soak.

Starts its own broker (the given binary) on 127.0.0.1 with OS-chosen ports and a database in a
fresh temporary directory, runs a bounded mixed load against it for --minutes, and reports the
broker's resident memory (VmRSS), thread count (Threads) and open file descriptors
(/proc/PID/fd) at the start, every minute and at the end. Before the broker starts, the
broker's own CLI adds one user (`user add soak-user`, password on stdin); anonymous access
stays on, so only the guesser and the right-password client log in.

The load, all at once, from worker threads (paho-mqtt 2.x plus raw sockets):
  churn      clients (5.0 and 3.1.1) connect, subscribe, publish QoS 0/1/2 and disconnect,
             some cleanly, some by dropping the socket
  pubsub     a steady publisher at QoS 0/1/2 and two steady subscribers (5.0, 3.1.1, QoS 2)
  retained   retained messages set and cleared on 100 topics; subscribers fetch them
  wills      clients with a will (some with a Will Delay) that vanish without DISCONNECT
  takeover   a second connection with the same client id takes over the first
  sessions   persistent sessions (Session Expiry 5 s) that disconnect, get messages queued
             while offline, and resume
  slow       a subscriber that stops reading for 20 s at a time
  bad        raw garbage, mutated CONNECTs, huge Remaining Length claims, invalid packets after
             CONNECT
  probe      a well-behaved non-persistent client every 2 s (5.0 and 3.1.1 in turn): CONNACK 0,
             SUBACK, PINGRESP, its own QoS 0 and QoS 1 message back, PUBACK 0; it must be
             served every time, also while the database fails

The hostile part (issue 12):
  never_reads  a raw 5.0 client with SO_RCVBUF 4096 (set before connect) that writes QoS 1
             PUBLISH as fast as the socket takes them and never reads its PUBACKs. The broker
             reads until it owes the client more than 64 KiB past the kernel's send queue
             (about 2.8 MB of PUBACKs on loopback, within a second), then reads nothing, and
             after 10 s disconnects it ("not reading (N bytes unsent for 10s)", counted in
             /api/status clients_not_reading_disconnected); it then reads and discards for up
             to 1 s (its linger), so the client's last writes still go through. The worker
             reconnects after each cut; writes use send() with a 1 s timeout (never a hang) and
             a connection that lives NEVER_READS_CONN_LIMIT (60 s) was not cut off: a failure.
  idle       about 150 sockets to the MQTT port that never send CONNECT, from 127.0.0.2 to
             127.0.0.41 (not 127.0.0.1: that is where the well-behaved clients come from, and
             a hostile LAN device has its own address); 15 of them from 127.0.0.41 alone, past
             max_pending_per_address (10). They outnumber max_pending_connections (100), so the
             broker keeps closing the oldest idle ones (and each after connect_timeout, 10 s);
             the worker counts the closes and reopens at most 5 per 0.2 s round.
  guesser    CONNECTs as soak-user with a wrong password and a new client id each time, from
             127.0.0.50, every 0.2 s. The broker checks 3 for free, then makes the address wait
             1 s, 2, 4, ... up to 60 s: CONNACK 0x9F while it waits, 0x86 when it checked.
             Passes when no guess was accepted, some were throttled, and no more were checked
             than that schedule allows in the run (max_checked_guesses).
  right_password  soak-user with the right password from 127.0.0.51 every 5 s (5.0 and 3.1.1
             in turn): CONNACK 0 and a PINGRESP every time; any failure fails the soak.
  disk       the failing-disk phase, when running as root and `mount` works (else skipped with
             "failing-disk phase skipped: <why>"; --db-max-bytes is no substitute, as it is set
             at start-up and could make the database fail but not recover within the run). The
             database directory is a 32 MiB tmpfs. A third of the way into the run a filler
             file takes every free byte (until ENOSPC), stays min(60 s, a third of the run) and
             is deleted. /api/status must show store_failing_since and store_error meanwhile,
             and store_failing_since must be null again within 60 s of the deletion. Workers'
             errors from the fill until 5 s after recovery are counted apart
             (<worker>_errors_in_disk_phase) and tolerated: a QoS 1 message that must be
             stored gets PUBACK 0x80 in 5.0, a 3.1.1 publisher of one may be disconnected.
             Errors outside that window fail the soak. The tmpfs is always unmounted at the
             end (also on Ctrl-C or SIGTERM), after the broker has stopped.

Pass/fail. After the load stops, every client disconnects and the script waits (at least 7 s,
at most 60 s) for the broker to settle: clients_connected 0 and the load's offline sessions
(Session Expiry 5 s) expired. The end figures
must then be within these bounds of the start figures (taken after start-up, before any load):
  threads   end <= start + 2
  fds       end <= start + 2
  VmRSS     end <= start + RSS bound (default 32 MiB: retained messages, the store's page
            cache and what the allocator keeps after the peak; a 20-minute run grew about
            11 MiB, flat from the thirteenth minute; a leak grows past the bound on a long run)
and a fresh 5.0 and 3.1.1 client must still connect, publish and receive. Besides: the
never-reads client was cut off at least once (clients_not_reading_disconnected > 0) and never
outlived its limit, the broker closed idle sockets, the guesser and right-password checks
above, every probe served, no worker error outside the disk phase, and (when it ran) the
database failed and recovered as described. Exit status 0 when all holds, 1 when not (or the
broker died), 2 for usage errors. Only the broker process this script started is ever
signalled, by its PID; every address used is in 127.0.0.0/8, every port chosen by the OS.
"""

import argparse
import errno
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:  # pragma: no cover
    print("soak: paho-mqtt 2.x is needed (scripts/test deps installs it)", file=sys.stderr)
    sys.exit(2)

HOST = "127.0.0.1"
THREAD_SLACK = 2
FD_SLACK = 2

# never-reads: the broker stops reading a client it owes more than 64 KiB and cuts it off after
# 10 s of taking nothing; a small receive window makes the debt pile up in the broker, not in our
# kernel buffers. A connection that outlives NEVER_READS_CONN_LIMIT was not cut off.
NEVER_READS_RCVBUF = 4096
NEVER_READS_PAYLOAD = 100
NEVER_READS_WRITE_TIMEOUT = 1.0
NEVER_READS_CONN_LIMIT = 60.0
# idle sockets: more than max_pending_connections (100) that never send CONNECT, from other
# loopback addresses than the well-behaved clients (127.0.0.1), as a hostile LAN device would;
# the first IDLE_GREEDY of them come from one address, past max_pending_per_address (10).
IDLE_SOCKETS = 150
IDLE_SOURCES = [f"127.0.0.{i}" for i in range(2, 41)]
IDLE_GREEDY = 15
IDLE_GREEDY_SOURCE = "127.0.0.41"
IDLE_RENEW_PER_ROUND = 5  # at most 25 new sockets a second: a stream, not a SYN flood
# guesser: wrong passwords for a real user from one address; the right one from another.
GUESS_USER = "soak-user"
GUESS_SOURCE = "127.0.0.50"
RIGHT_SOURCE = "127.0.0.51"
FREE_FAILURES = 3  # the broker's backoff: 3 free, then 1 s doubling up to 60 s
MAX_LOCKOUT = 60
# failing disk: the database on a small tmpfs that the soak fills during the middle third.
TMPFS_SIZE_MB = 32
DISK_HOLD_MAX = 60.0
DISK_RECOVERY_DEADLINE = 60.0
DISK_WINDOW_GRACE = 5.0  # errors this soon after recovery still belong to the phase
FILL_CHUNK = 1 << 20


# --------------------------------------------------------------------------- raw MQTT bytes

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def s16(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def fixed(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_bytes(v5, cid, keep_alive=30, clean=True, will=None, props=b"", user=None,
                  password=None):
    """will: (topic, payload, qos, retain, will_props) or None."""
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    if user is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = s16("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack(">H", keep_alive)
    if v5:
        body += varint(len(props)) + props
    body += s16(cid)
    if will:
        if v5:
            body += varint(len(will[4])) + will[4]
        body += s16(will[0]) + s16(will[1])
    if user is not None:
        body += s16(user)
    if password is not None:
        body += s16(password)
    return fixed(0x10, body)


def publish_bytes(v5, topic, payload, qos=0, pid=1, retain=False):
    body = s16(topic)
    if qos:
        body += struct.pack(">H", pid)
    if v5:
        body += b"\x00"
    return fixed(0x30 | (qos << 1) | (1 if retain else 0), body + payload)


def subscribe_bytes(v5, pid, topic, qos):
    body = struct.pack(">H", pid) + (b"\x00" if v5 else b"") + s16(topic) + bytes([qos])
    return fixed(0x82, body)


def read_packet(sock, timeout):
    """One whole packet, or None on timeout / close."""
    deadline = time.monotonic() + timeout

    def read_n(n):
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(n - len(buf))
            except (socket.timeout, OSError):
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    first = read_n(1)
    if first is None:
        return None
    length, shift = 0, 0
    for _ in range(4):
        b = read_n(1)
        if b is None:
            return None
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = read_n(length)
    if body is None:
        return None
    return first + body


def split_packet(pkt):
    """(first byte, body) of a packet from read_packet (which drops the Remaining Length)."""
    return pkt[0], pkt[1:]


def parse_publish(v5, pkt):
    """(topic, qos, packet id, payload) of a PUBLISH."""
    first, body = split_packet(pkt)
    qos = (first >> 1) & 3
    n = struct.unpack(">H", body[:2])[0]
    topic, i = body[2:2 + n].decode(), 2 + n
    pid = None
    if qos:
        pid, i = struct.unpack(">H", body[i:i + 2])[0], i + 2
    if v5:
        plen, shift = 0, 0
        while True:
            b = body[i]
            i += 1
            plen |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        i += plen
    return topic, qos, pid, body[i:]


def max_checked_guesses(seconds):
    """The most wrong passwords one address can have checked in `seconds` under the broker's
    backoff (FREE_FAILURES free, then 1 s doubling up to MAX_LOCKOUT)."""
    checked, t, wait = FREE_FAILURES, 0.0, 1
    while t + wait <= seconds:
        t += wait
        checked += 1
        wait = min(wait * 2, MAX_LOCKOUT)
    return checked


def raw_connect(port, v5, cid, source=None, **kw):
    """A raw client after its CONNACK (any reason code: the caller checks ack[2])."""
    s = socket.create_connection((HOST, port), timeout=5,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_bytes(v5, cid, **kw))
    ack = read_packet(s, 5)
    if not ack or ack[0] != 0x20:
        s.close()
        raise RuntimeError(f"no CONNACK for {cid}: {ack!r}")
    return s, ack


# --------------------------------------------------------------------------- broker process

class BrokerProc:
    def __init__(self, binary, workdir, db_path, extra):
        self.log_path = os.path.join(workdir, "broker.log")
        self.log = open(self.log_path, "wb")
        args = [binary, "--listen", f"{HOST}:0", "--web-listen", f"{HOST}:0",
                "--db", db_path, "--allow-anonymous"] + extra
        env = dict(os.environ, RUST_LOG=os.environ.get("SOAK_RUST_LOG", "warn,mqtt5_broker=info"),
                   RUST_LOG_STYLE="never")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        self.mqtt_port = self.web_port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = open(self.log_path, errors="replace").read()
            m = re.search(r"MQTT listening on [\d.]+:(\d+)", text)
            w = re.search(r"web page on http://[\d.]+:(\d+)/", text)
            if m and w:
                self.mqtt_port, self.web_port = int(m.group(1)), int(w.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("broker did not start:\n" + self.tail())

    def alive(self):
        return self.proc.poll() is None

    def tail(self, n=40):
        try:
            lines = open(self.log_path, errors="replace").read().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def status(self):
        with urllib.request.urlopen(f"http://{HOST}:{self.web_port}/api/status", timeout=5) as r:
            return json.loads(r.read())

    def figures(self):
        st = open(f"/proc/{self.pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
        threads = int(re.search(r"Threads:\s+(\d+)", st).group(1))
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        return {"rss_kb": rss, "threads": threads, "fds": fds}

    def stop(self):
        """SIGTERM our own child by PID, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


# --------------------------------------------------------------------------- load

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


def paho_client(cid, v5, clean=True, expiry=None):
    if v5:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                        protocol=mqtt.MQTTv311, clean_session=clean)
    c.connected = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props=None: cl.connected.set()
    c.connect_args = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        c.connect_args = {"clean_start": clean, "properties": props}
    return c


def paho_connect(c, port, keepalive=30):
    c.connect(HOST, port, keepalive, **c.connect_args)
    c.loop_start()
    if not c.connected.wait(5):
        c.loop_stop()
        raise RuntimeError("no CONNACK")
    return c


def paho_close(c, clean=True):
    try:
        if clean:
            c.disconnect()
        else:
            c.socket().close()
    except Exception:
        pass
    c.loop_stop()


class Load:
    def __init__(self, broker, rng_seed, user_password=None, disk=None):
        self.b = broker
        self.port = broker.mqtt_port
        self.stop = threading.Event()
        self.stats = Stats()
        self.seed = rng_seed
        self.threads = []
        self.stable = []
        self.user_password = user_password
        # Set while the database is made to fail (and DISK_WINDOW_GRACE after it recovers):
        # errors then are counted apart, as `<worker>_errors_in_disk_phase`.
        self.disk_window = threading.Event()
        self.disk = disk  # DiskPhase or None
        self.first_errors = {}  # worker -> its first few error messages, for the report
        self.idle = [None] * IDLE_SOCKETS
        self.idle_next = 0  # the slot renewed first in the next round
        self.never_reads_stuck = []  # seconds each cut-off client went without progress

    def worker(self, name, fn, pause):
        rng = random.Random(f"{self.seed}-{name}")

        def run():
            n = 0
            while not self.stop.is_set():
                in_window = self.disk_window.is_set()
                try:
                    fn(rng, n)
                    self.stats.add(name)
                except Exception as e:  # counted, reported; the load goes on
                    in_window = in_window or self.disk_window.is_set()
                    key = f"{name}_errors" + ("_in_disk_phase" if in_window else "")
                    self.stats.add(key)
                    with self.stats.lock:
                        kept = self.first_errors.setdefault(key, [])
                        if len(kept) < 3:
                            kept.append(f"{type(e).__name__}: {e}")
                    if os.environ.get("SOAK_DEBUG"):
                        print(f"[{name}] {type(e).__name__}: {e}", file=sys.stderr)
                n += 1
                self.stop.wait(pause * rng.uniform(0.5, 1.5))

        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    # ---- the parts of the load

    def churn(self, rng, n):
        v5 = rng.random() < 0.6
        c = paho_client(f"churn-{n}-{rng.randrange(1 << 30)}", v5)
        paho_connect(c, self.port, keepalive=rng.choice([5, 30, 60]))
        c.subscribe(f"soak/churn/{n % 10}", rng.randrange(3))
        infos = [c.publish(f"soak/data/churn/{n % 7}", os.urandom(rng.randrange(1, 500)),
                           qos=rng.randrange(3)) for _ in range(rng.randrange(1, 6))]
        for info in infos:
            info.wait_for_publish(5)
        paho_close(c, clean=rng.random() < 0.7)

    def publisher_setup(self):
        self.pub = paho_client("soak-publisher", True)

        def on_publish(cl, ud, mid, rc, props=None):
            # 0x80 while the database fails, for what must be stored: correct in 5.0.
            code = getattr(rc, "value", 0)
            if code >= 0x80:  # 0x10 (no matching subscribers) is a success
                self.stats.add(f"pub_puback_0x{code:02x}")
        self.pub.on_publish = on_publish
        paho_connect(self.pub, self.port)
        self.stable.append(self.pub)
        self.received = {"v5": 0, "v311": 0}

        def counter(key):
            def on_message(cl, ud, msg):
                self.received[key] += 1
            return on_message

        for key, v5 in (("v5", True), ("v311", False)):
            c = paho_client(f"soak-sub-{key}", v5)
            c.on_message = counter(key)
            paho_connect(c, self.port)
            c.subscribe("soak/data/#", 2)
            self.stable.append(c)

    def pubsub(self, rng, n):
        infos = [self.pub.publish(f"soak/data/p/{rng.randrange(20)}",
                                  os.urandom(rng.randrange(10, 2000)), qos=rng.randrange(3))
                 for _ in range(20)]
        for info in infos:
            info.wait_for_publish(5)
        self.stats.add("published", len(infos))

    def retained(self, rng, n):
        k = rng.randrange(100)
        payload = b"" if rng.random() < 0.05 else os.urandom(rng.randrange(1, 300))
        self.pub.publish(f"soak/retained/{k}", payload, qos=1, retain=True).wait_for_publish(5)
        if n % 20 == 0:
            got = []
            c = paho_client(f"retained-reader-{n}", rng.random() < 0.5)
            c.on_message = lambda cl, ud, msg: got.append(msg.topic)
            paho_connect(c, self.port)
            c.subscribe("soak/retained/#", 1)
            time.sleep(0.5)
            paho_close(c)
            self.stats.add("retained_fetched", len(got))

    def wills(self, rng, n):
        v5 = rng.random() < 0.6
        will_props = b""
        if v5 and rng.random() < 0.3:
            will_props = b"\x18" + struct.pack(">I", 1)  # Will Delay Interval 1 s
        props = b"\x11" + struct.pack(">I", 2) if v5 and will_props else b""
        s, _ = raw_connect(self.port, v5, f"will-{n}", keep_alive=30,
                           will=(f"soak/will/{n % 50}", b"gone", rng.randrange(3),
                                 rng.random() < 0.2, will_props), props=props)
        if rng.random() < 0.5:
            s.sendall(publish_bytes(v5, "soak/data/will", b"x"))
        s.close()  # no DISCONNECT: the will goes out

    def takeover(self, rng, n):
        cid = f"takeover-{n % 5}"
        v5a, v5b = rng.random() < 0.5, rng.random() < 0.5
        a, _ = raw_connect(self.port, v5a, cid, clean=rng.random() < 0.5)
        b, _ = raw_connect(self.port, v5b, cid, clean=rng.random() < 0.5)
        kicked = read_packet(a, 3)  # 5.0: DISCONNECT 0x8E; 3.1.1: close (None)
        if v5a and kicked is not None and kicked[:1] != b"\xe0":
            self.stats.add("takeover_unexpected")
        b.sendall(b"\xe0\x00")
        a.close()
        b.close()

    def sessions(self, rng, n):
        cid = f"session-{n % 20}"
        v5 = True
        c = paho_client(cid, v5, clean=False, expiry=5)
        paho_connect(c, self.port)
        c.subscribe(f"soak/session/{n % 20}", 1)
        time.sleep(0.1)
        paho_close(c)
        for _ in range(3):
            self.pub.publish(f"soak/session/{n % 20}", b"queued", qos=1)

    def slow(self, rng, n):
        v5 = rng.random() < 0.5
        s, _ = raw_connect(self.port, v5, f"slow-{n}", keep_alive=0)
        s.sendall(subscribe_bytes(v5, 1, "soak/data/#", 1))
        self.stop.wait(20)  # never reads
        s.close()

    def bad(self, rng, n):
        s = socket.create_connection((HOST, self.port), timeout=5)
        kind = rng.randrange(6)
        v5 = rng.random() < 0.6
        if kind == 0:
            data = os.urandom(rng.randrange(1, 200))
        elif kind == 1:
            c = bytearray(connect_bytes(v5, f"bad-{n}"))
            for _ in range(rng.randrange(1, 4)):
                c[rng.randrange(len(c))] = rng.randrange(256)
            data = bytes(c)
        elif kind == 2:
            data = bytes([rng.choice([0x10, 0x30, 0x82])]) + b"\xff\xff\xff\x7f" + os.urandom(64)
        elif kind == 3:
            data = connect_bytes(v5, f"bad-{n}") + os.urandom(rng.randrange(1, 100))
        elif kind == 4:
            data = connect_bytes(v5, f"bad-{n}") + rng.choice([
                b"\x36\x02\x00\x00", b"\x30\xff\xff\xff\xff\x01", b"\x20\x02\x00\x00",
                b"\x82\x03\x00\x01\x00", publish_bytes(v5, "a/+", b"x"), b"\x62\x00"])
        else:
            data = connect_bytes(v5, f"bad-{n}") * 2
        try:
            s.sendall(data)
            read_packet(s, 0.5)
        except OSError:
            pass
        s.close()

    def never_reads(self, rng, n):
        """One connection: QoS 1 PUBLISH as fast as the socket takes them, never reading the
        PUBACKs, until the broker cuts it off (counted) or NEVER_READS_CONN_LIMIT passes."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Before connect, so the window we advertise stays small.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NEVER_READS_RCVBUF)
            s.settimeout(5)
            s.connect((HOST, self.port))
            s.sendall(connect_bytes(True, f"never-reads-{n}", keep_alive=0))
            ack = read_packet(s, 5)  # the only read: the CONNACK
            if not ack or ack[0] != 0x20 or ack[2] != 0:
                raise RuntimeError(f"never-reads: no CONNACK 0: {ack!r}")
            payload = b"n" * NEVER_READS_PAYLOAD
            chunk = memoryview(b"".join(publish_bytes(True, "soak/never-reads", payload, qos=1,
                                                      pid=pid) for pid in range(1, 501)))
            # send(), not sendall(): a timeout then loses no byte, and the stream stays whole.
            # The longest our writes made no progress: the broker not reading us. (After its
            # cut the broker reads and discards for a second, so the last gap is not it.)
            s.settimeout(NEVER_READS_WRITE_TIMEOUT)
            start = last_progress = time.monotonic()
            off = stall = 0
            while not self.stop.is_set():
                now = time.monotonic()
                stall = max(stall, now - last_progress)
                if now - start > NEVER_READS_CONN_LIMIT:
                    self.stats.add("never_reads_not_cut")
                    return
                try:
                    k = s.send(chunk[off:])
                except socket.timeout:
                    continue
                except OSError:  # ECONNRESET / EPIPE: the broker let us go
                    self.stats.add("never_reads_cut")
                    with self.stats.lock:
                        self.never_reads_stuck.append(stall)
                    return
                self.stats.add("never_reads_bytes", k)
                off = (off + k) % len(chunk)
                last_progress = time.monotonic()
        finally:
            s.close()

    def idle_sockets(self, rng, n):
        """One round: sockets the broker closed are counted and reopened (a few per round)."""
        by_fd = {s.fileno(): i for i, s in enumerate(self.idle) if s is not None}
        if by_fd:
            poll = select.poll()
            for fd in by_fd:
                poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            # An idle socket has sent nothing, so anything readable is the broker's close.
            for fd, _ in poll.poll(0):
                i = by_fd[fd]
                self.idle[i].close()
                self.idle[i] = None
                self.stats.add("idle_closed_by_broker")
        # Renewed in turn from a rotating start, so no slot (the greedy address's) hogs them.
        empty = sorted((i for i, s in enumerate(self.idle) if s is None),
                       key=lambda i: (i - self.idle_next) % IDLE_SOCKETS)[:IDLE_RENEW_PER_ROUND]
        if empty:
            self.idle_next = (empty[-1] + 1) % IDLE_SOCKETS
        for i in empty:
            src = IDLE_GREEDY_SOURCE if i < IDLE_GREEDY else IDLE_SOURCES[i % len(IDLE_SOURCES)]
            try:
                self.idle[i] = socket.create_connection((HOST, self.port), timeout=2,
                                                        source_address=(src, 0))
                self.stats.add("idle_opened")
            except OSError:
                self.stats.add("idle_connect_failed")

    def close_idle(self):
        for i, s in enumerate(self.idle):
            if s is not None:
                s.close()
                self.idle[i] = None

    def guesser(self, rng, n):
        """One wrong password for GUESS_USER from GUESS_SOURCE, with a new client id."""
        s, ack = raw_connect(self.port, True, f"guess-{n}-{rng.randrange(1 << 30)}",
                             source=GUESS_SOURCE, user=GUESS_USER, password=f"wrong-{n}")
        s.close()
        code = ack[2]
        self.stats.add({0x9F: "guess_throttled", 0x86: "guess_checked_wrong",
                        0x00: "guess_ACCEPTED"}.get(code, f"guess_other_0x{code:02x}"))

    def right_password(self, rng, n):
        """GUESS_USER with the right password from RIGHT_SOURCE: CONNACK 0 and a PINGRESP, every
        time, whatever the guesser does (5.0 and 3.1.1 in turn)."""
        v5 = n % 2 == 0
        ok = False
        try:
            s, ack = raw_connect(self.port, v5, f"right-{n}", source=RIGHT_SOURCE,
                                 user=GUESS_USER, password=self.user_password)
            try:
                if ack[2] == 0:
                    s.sendall(b"\xc0\x00")
                    ok = read_packet(s, 5) == b"\xd0"
                    s.sendall(b"\xe0\x00")
                else:
                    raise RuntimeError(f"CONNACK 0x{ack[2]:02x}")
            finally:
                s.close()
        finally:
            self.stats.add("right_password_ok" if ok else "right_password_failures")
        if not ok:
            raise RuntimeError("right password not served (no PINGRESP)")

    def probe(self, rng, n):
        """A well-behaved non-persistent client (5.0 and 3.1.1 in turn): CONNACK 0, SUBACK, a
        PINGRESP, its own QoS 0 and QoS 1 message back and PUBACK 0. It must be served all the
        time, also while the database fails (nothing of it needs storing)."""
        v5 = n % 2 == 0
        topic = f"soak/probe/{n % 10}"
        s, ack = raw_connect(self.port, v5, f"probe-{n % 10}")
        try:
            if ack[2] != 0:
                raise RuntimeError(f"CONNACK 0x{ack[2]:02x}")
            s.sendall(subscribe_bytes(v5, 1, topic, 1))
            suback = read_packet(s, 5)
            if not suback or suback[0] != 0x90 or suback[-1] != 1:
                raise RuntimeError(f"SUBACK {suback!r}")
            s.sendall(b"\xc0\x00")
            if read_packet(s, 5) != b"\xd0":
                raise RuntimeError("no PINGRESP")
            s.sendall(publish_bytes(v5, topic, b"q0", qos=0)
                      + publish_bytes(v5, topic, b"q1", qos=1, pid=2))
            got, puback = set(), None
            deadline = time.monotonic() + 5
            while (len(got) < 2 or puback is None) and time.monotonic() < deadline:
                pkt = read_packet(s, max(0.01, deadline - time.monotonic()))
                if pkt is None:
                    break
                if pkt[0] & 0xF0 == 0x30:
                    _, qos, pid, payload = parse_publish(v5, pkt)
                    got.add(payload)
                    if qos == 1:
                        s.sendall(b"\x40\x02" + struct.pack(">H", pid))
                elif pkt[0] == 0x40:
                    _, body = split_packet(pkt)
                    puback = body[2] if len(body) > 2 else 0
            if got != {b"q0", b"q1"} or puback != 0:
                raise RuntimeError(f"got {sorted(got)}, PUBACK reason {puback}")
            s.sendall(b"\xe0\x00")
        finally:
            s.close()

    def start(self):
        self.publisher_setup()
        plan = [("churn", self.churn, 0.05), ("churn2", self.churn, 0.05),
                ("pubsub", self.pubsub, 0.05), ("retained", self.retained, 0.05),
                ("wills", self.wills, 0.1), ("takeover", self.takeover, 0.2),
                ("sessions", self.sessions, 0.2), ("slow", self.slow, 1.0),
                ("bad", self.bad, 0.02), ("never_reads", self.never_reads, 1.0),
                ("idle", self.idle_sockets, 0.2), ("probe", self.probe, 2.0)]
        if self.user_password is not None:
            plan += [("guesser", self.guesser, 0.2), ("right_password", self.right_password, 5.0)]
        for name, fn, pause in plan:
            self.worker(name, fn, pause)
        if self.disk is not None:
            t = threading.Thread(target=self.disk.run, args=(self,), name="disk", daemon=True)
            self.threads.append(t)
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            # The disk phase finishes its recovery wait even when the load stops.
            t.join(DISK_RECOVERY_DEADLINE + 30 if t.name == "disk" else 30)
        for c in self.stable:
            paho_close(c)
        self.close_idle()


class DiskPhase:
    """The failing-disk phase: the database directory is a TMPFS_SIZE_MB tmpfs (mounted by
    main()); from `begin` (monotonic) a filler file takes every free byte, stays for `hold`
    seconds and is deleted. Meanwhile the broker must report the failure in /api/status
    (store_failing_since, store_error) and keep serving; afterwards store_failing_since must be
    null again within DISK_RECOVERY_DEADLINE. Its figures land in self.r."""

    def __init__(self, dbdir, begin, hold):
        self.filler = os.path.join(dbdir, "filler")
        self.begin, self.hold = begin, hold
        self.r = {"ran": False}

    def fill(self):
        """Writes FILL_CHUNK at a time until ENOSPC (bounded: the tmpfs holds only so many)."""
        chunk = b"\xa5" * FILL_CHUNK
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(2 * TMPFS_SIZE_MB + 2):
                try:
                    written += os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    return written, True
        finally:
            os.close(fd)
        return written, False

    def run(self, load):
        r, b = self.r, load.b
        if load.stop.wait(max(0.0, self.begin - time.monotonic())):
            return
        r["ran"] = True
        before = b.status()
        load.disk_window.set()
        t_fill = time.monotonic()
        try:
            r["filled_bytes"], r["enospc"] = self.fill()
            print(f"soak: disk: filled the database's tmpfs ({r['filled_bytes'] >> 20} MiB, "
                  f"ENOSPC {r['enospc']}); holding {self.hold:.0f} s", flush=True)
            end_hold = t_fill + self.hold
            while time.monotonic() < end_hold:
                try:
                    st = b.status()
                except OSError:
                    st = {}
                if st.get("store_failing_since") is not None and "failing_after_s" not in r:
                    r["failing_after_s"] = time.monotonic() - t_fill
                    r["store_error"] = st.get("store_error")
                    print(f"soak: disk: store failing after {r['failing_after_s']:.1f} s: "
                          f"{r['store_error']}", flush=True)
                # Not load.stop: the filler must go, whatever happens.
                time.sleep(min(1.0, max(0.0, end_hold - time.monotonic())))
        finally:
            if os.path.exists(self.filler):
                os.unlink(self.filler)
        t_free = time.monotonic()
        deadline = t_free + DISK_RECOVERY_DEADLINE
        while time.monotonic() < deadline:
            try:
                st = b.status()
            except OSError:
                st = {}
            if st.get("store_failing_since", 0) is None:
                r["recovered_after_s"] = time.monotonic() - t_free
                break
            time.sleep(0.5)
        print("soak: disk: filler removed; " + (
            f"store recovered after {r['recovered_after_s']:.1f} s" if "recovered_after_s" in r
            else f"store NOT recovered within {DISK_RECOVERY_DEADLINE:.0f} s"), flush=True)
        time.sleep(DISK_WINDOW_GRACE)
        load.disk_window.clear()
        after = b.status()
        for key in ("store_refused_writes", "messages_not_stored", "history_shed"):
            r[key] = (after.get(key) or 0) - (before.get(key) or 0)
        r["window_s"] = time.monotonic() - t_fill


def health(port):
    """A fresh 5.0 and a fresh 3.1.1 subscriber both receive a QoS 1 message."""
    got = {}
    subs = []
    for key, v5 in (("v5", True), ("v311", False)):
        c = paho_client(f"health-{key}", v5)
        c.on_message = lambda cl, ud, msg, key=key: got.setdefault(key, msg.payload)
        paho_connect(c, port)
        c.subscribe("soak/health", 1)
        subs.append(c)
    time.sleep(0.3)
    p = paho_connect(paho_client("health-pub", False), port)
    p.publish("soak/health", b"alive", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    for c in subs + [p]:
        paho_close(c)
    return got == {"v5": b"alive", "v311": b"alive"}


def fmt(label, f, status=None):
    extra = ""
    if status:
        extra = (f"  clients {status.get('clients_connected')}"
                 f"  sessions {status.get('sessions')}"
                 f"  msgs in {status.get('messages_received')} out {status.get('messages_sent')}"
                 f" dropped {status.get('messages_dropped')}"
                 f"  pending {status.get('pending_connections')}"
                 f" closed {status.get('pending_closed')}"
                 f"  not-reading cut {status.get('clients_not_reading_disconnected')}"
                 + ("  STORE FAILING" if status.get("store_failing_since") is not None else ""))
    return (f"{label:>8}  VmRSS {f['rss_kb'] / 1024:8.1f} MiB  threads {f['threads']:5d}"
            f"  fds {f['fds']:5d}{extra}")


def mount_tmpfs(dbdir):
    """(mounted, why not): a TMPFS_SIZE_MB tmpfs on the database directory, for the
    failing-disk phase. Without root or mount there is no phase: --db-max-bytes is fixed at
    start-up, so it could make the database fail but never recover within the run."""
    if os.geteuid() != 0:
        return False, "not running as root (the phase mounts a small tmpfs for the database)"
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE_MB}m", "tmpfs",
                            dbdir], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"mount failed: {e}"
    if r.returncode != 0:
        return False, f"mount failed: {r.stderr.strip() or r.returncode}"
    return True, None


def unmount(dbdir):
    """Unmounts the tmpfs (the broker is stopped by then), lazily if it is still busy."""
    for attempt in range(5):
        if subprocess.run(["umount", dbdir], capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(1)
    r = subprocess.run(["umount", "-l", dbdir], capture_output=True, text=True, timeout=30)
    print(f"soak: umount {dbdir} was busy; lazy unmount: rc {r.returncode} {r.stderr.strip()}",
          file=sys.stderr)


def hostile_checks(load, stats, status, seconds):
    """The checks of the hostile workers and the failing-disk phase: (name, passed, detail)."""
    checks = []
    cut = status.get("clients_not_reading_disconnected") or 0
    stuck = load.never_reads_stuck
    checks.append(("never-reads cut off", cut > 0 and not stats.get("never_reads_not_cut"),
                   f"clients_not_reading_disconnected {cut} > 0; the worker saw "
                   f"{stats.get('never_reads_cut', 0)} cut-offs, "
                   f"{stats.get('never_reads_not_cut', 0)} connections not cut off in "
                   f"{NEVER_READS_CONN_LIMIT:.0f} s"
                   + (f"; longest write stall per connection {min(stuck):.1f}..{max(stuck):.1f} s"
                      if stuck else "")))
    checks.append(("idle sockets", stats.get("idle_closed_by_broker", 0) > 0,
                   f"{stats.get('idle_opened', 0)} opened, {stats.get('idle_closed_by_broker', 0)}"
                   f" closed by the broker (pending_closed {status.get('pending_closed')}), "
                   f"{stats.get('idle_connect_failed', 0)} connects failed"))
    if load.user_password is not None:
        checked = stats.get("guess_checked_wrong", 0)
        bound = max_checked_guesses(seconds) + 1
        checks.append(("guesser", checked <= bound and not stats.get("guess_ACCEPTED")
                       and stats.get("guess_throttled", 0) > 0,
                       f"{checked} wrong passwords checked (<= {bound} by the backoff), "
                       f"{stats.get('guess_throttled', 0)} throttled (0x9F), "
                       f"{stats.get('guess_ACCEPTED', 0)} accepted; other: " + (", ".join(
                           f"{k} {v}" for k, v in stats.items() if k.startswith("guess_other"))
                           or "none")))
        fails = stats.get("right_password_failures", 0)
        checks.append(("right password", fails == 0 and stats.get("right_password_ok", 0) > 0,
                       f"{stats.get('right_password_ok', 0)} served, {fails} failures"))
    outside = {k: v for k, v in stats.items() if k.endswith("_errors")}
    inside = {k: v for k, v in stats.items() if k.endswith("_errors_in_disk_phase")}
    checks.append(("load errors", not outside,
                   "outside the disk phase: " + (", ".join(f"{k} {v}" for k, v in
                                                           sorted(outside.items())) or "none")
                   + "; in it (tolerated): " + (", ".join(f"{k} {v}" for k, v in
                                                          sorted(inside.items())) or "none")))
    probe_errors = stats.get("probe_errors", 0) + stats.get("probe_errors_in_disk_phase", 0)
    checks.append(("well-behaved probe", probe_errors == 0 and stats.get("probe", 0) > 0,
                   f"{stats.get('probe', 0)} served, {stats.get('probe_errors', 0)} failures, "
                   f"{stats.get('probe_errors_in_disk_phase', 0)} in the disk phase"))
    if load.disk is not None:
        r = load.disk.r
        if not r["ran"]:
            checks.append(("failing disk", False, "the phase did not run"))
        else:
            checks.append(("failing disk", "failing_after_s" in r and "recovered_after_s" in r,
                           f"filled {r.get('filled_bytes', 0) >> 20} MiB; store failing after "
                           f"{r.get('failing_after_s', float('nan')):.1f} s "
                           f"({r.get('store_error')}); recovered "
                           f"{r.get('recovered_after_s', float('nan')):.1f} s after the filler "
                           f"went; window {r.get('window_s', 0):.0f} s; store_refused_writes "
                           f"+{r.get('store_refused_writes')}, messages_not_stored "
                           f"+{r.get('messages_not_stored')}, history_shed "
                           f"+{r.get('history_shed')}"))
    return checks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", required=True, help="path to the mqtt5-broker binary")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rss-bound-mb", type=float, default=32.0,
                    help="allowed VmRSS growth, end over start (MiB)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)

    # SIGTERM as Ctrl-C: the finally below stops the broker and unmounts the tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="mqtt5-soak-")
    dbdir = os.path.join(workdir, "db")
    os.mkdir(dbdir)
    db_path = os.path.join(dbdir, "soak.db")
    broker = None
    mounted = False
    ok = True
    try:
        mounted, disk_skip = mount_tmpfs(dbdir)
        # The guesser's target: a real account (anonymous access stays on for the rest).
        password = secrets.token_urlsafe(16)
        subprocess.run([args.broker, "--db", db_path, "user", "add", GUESS_USER],
                       input=password + "\n", text=True, check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        broker = BrokerProc(args.broker, workdir, db_path,
                            ["--max-clients", "1000", "--connect-rate-limit", "0"])
        print(f"soak: broker PID {broker.pid} on {HOST}:{broker.mqtt_port} "
              f"(web {broker.web_port}); {args.minutes:g} min; seed {seed}; log {broker.log_path}")
        time.sleep(1)
        start = broker.figures()
        print(fmt("start", start, broker.status()), flush=True)

        t0 = time.monotonic()
        end_at = t0 + args.minutes * 60
        disk = None
        if mounted:
            third = args.minutes * 60 / 3
            disk = DiskPhase(dbdir, t0 + third, min(DISK_HOLD_MAX, third))
        else:
            print(f"soak: failing-disk phase skipped: {disk_skip}", flush=True)
        load = Load(broker, seed, password, disk)
        load.start()
        next_sample = t0 + 60
        minute = 0
        samples = []
        while time.monotonic() < end_at:
            if not broker.alive():
                print("soak: FAIL: the broker died\n" + broker.tail(), file=sys.stderr)
                return 1
            if time.monotonic() >= next_sample:
                minute += 1
                f = broker.figures()
                samples.append(f)
                print(fmt(f"min {minute}", f, broker.status()), flush=True)
                next_sample += 60
            time.sleep(min(1.0, max(0.05, end_at - time.monotonic())))
        load.finish()
        stats = load.stats.snapshot()
        stats["received_v5"] = load.received["v5"]
        stats["received_v311"] = load.received["v311"]
        print("soak: load done: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
        for key, msgs in sorted(load.first_errors.items()):
            print(f"soak: first {key}: " + " | ".join(msgs))

        # Let the broker settle: every client gone, the offline sessions of the load (Session
        # Expiry 5 s) expired. 3.1.1 sessions without Clean Session never expire; they stay.
        settle_start = time.monotonic()
        deadline = settle_start + 60
        while time.monotonic() < deadline:
            st = broker.status()
            f = broker.figures()
            if (time.monotonic() - settle_start >= 7 and st.get("clients_connected") == 0
                    and f["threads"] <= start["threads"] + THREAD_SLACK
                    and f["fds"] <= start["fds"] + FD_SLACK):
                break
            time.sleep(1)
        print(f"soak: settled in {time.monotonic() - settle_start:.0f} s")
        end = broker.figures()
        st = broker.status()
        print(fmt("end", end, st), flush=True)

        rss_bound = start["rss_kb"] + args.rss_bound_mb * 1024
        checks = [
            ("threads", end["threads"] <= start["threads"] + THREAD_SLACK,
             f"{end['threads']} <= {start['threads']} + {THREAD_SLACK}"),
            ("fds", end["fds"] <= start["fds"] + FD_SLACK,
             f"{end['fds']} <= {start['fds']} + {FD_SLACK}"),
            ("VmRSS", end["rss_kb"] <= rss_bound,
             f"{end['rss_kb']} kB <= {start['rss_kb']} kB + {args.rss_bound_mb:g} MiB"),
            ("clients_connected", st.get("clients_connected") == 0,
             f"{st.get('clients_connected')} == 0"),
            ("health", health(broker.mqtt_port), "fresh 5.0 and 3.1.1 clients publish/receive"),
        ] + hostile_checks(load, stats, st, args.minutes * 60)
        peak = max([s["rss_kb"] for s in samples] + [end["rss_kb"]])
        print(f"soak: peak VmRSS during the run {peak / 1024:.1f} MiB")
        if len(samples) >= 3:
            # Information only: growth under load after the warm-up (a leak shows as a trend).
            print(f"soak: VmRSS from minute 2 to the last minute: "
                  f"{samples[1]['rss_kb'] / 1024:.1f} -> {samples[-1]['rss_kb'] / 1024:.1f} MiB")
        for name, passed, detail in checks:
            print(f"soak: {'ok  ' if passed else 'FAIL'} {name}: {detail}")
            ok = ok and passed
        if not broker.alive():
            print("soak: FAIL: the broker died at the end\n" + broker.tail(), file=sys.stderr)
            ok = False
        return 0 if ok else 1
    finally:
        if broker is not None:
            broker.stop()
            if not ok:
                print("--- broker log (tail) ---\n" + broker.tail(), file=sys.stderr)
        if mounted:
            unmount(dbdir)  # the database goes with it
        if ok and not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"soak: files kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
