#!/usr/bin/env python3
"""Soak test for mqtt5-broker (issue 7); run it through scripts/soak.

Starts its own broker (the given binary) on 127.0.0.1 with OS-chosen ports and a database in a
fresh temporary directory, runs a bounded mixed load against it for --minutes, and reports the
broker's resident memory (VmRSS), thread count (Threads) and open file descriptors
(/proc/PID/fd) at the start, every minute and at the end.

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

Pass/fail. After the load stops, every client disconnects and the script waits (at least 7 s,
at most 60 s) for the broker to settle: clients_connected 0 and the load's offline sessions
(Session Expiry 5 s) expired. The end figures
must then be within these bounds of the start figures (taken after start-up, before any load):
  threads   end <= start + 2
  fds       end <= start + 2
  VmRSS     end <= start + RSS bound (default 32 MiB: retained messages, the store's page
            cache and what the allocator keeps after the peak; a 20-minute run grew about
            11 MiB, flat from the thirteenth minute; a leak grows past the bound on a long run)
and a fresh 5.0 and 3.1.1 client must still connect, publish and receive. Exit status 0 when
all holds, 1 when not (or the broker died), 2 for usage errors. Only the broker process this
script started is ever signalled, by its PID.
"""

import argparse
import json
import os
import random
import re
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


def connect_bytes(v5, cid, keep_alive=30, clean=True, will=None, props=b""):
    """will: (topic, payload, qos, retain, will_props) or None."""
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    body = s16("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack(">H", keep_alive)
    if v5:
        body += varint(len(props)) + props
    body += s16(cid)
    if will:
        if v5:
            body += varint(len(will[4])) + will[4]
        body += s16(will[0]) + s16(will[1])
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


def raw_connect(port, v5, cid, **kw):
    s = socket.create_connection((HOST, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_bytes(v5, cid, **kw))
    ack = read_packet(s, 5)
    if not ack or ack[0] != 0x20:
        s.close()
        raise RuntimeError(f"no CONNACK for {cid}: {ack!r}")
    return s, ack


# --------------------------------------------------------------------------- broker process

class BrokerProc:
    def __init__(self, binary, workdir, extra):
        self.log_path = os.path.join(workdir, "broker.log")
        self.log = open(self.log_path, "wb")
        args = [binary, "--listen", f"{HOST}:0", "--web-listen", f"{HOST}:0",
                "--db", os.path.join(workdir, "soak.db"), "--allow-anonymous"] + extra
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
    def __init__(self, broker, rng_seed):
        self.b = broker
        self.port = broker.mqtt_port
        self.stop = threading.Event()
        self.stats = Stats()
        self.seed = rng_seed
        self.threads = []
        self.stable = []

    def worker(self, name, fn, pause):
        rng = random.Random(f"{self.seed}-{name}")

        def run():
            n = 0
            while not self.stop.is_set():
                try:
                    fn(rng, n)
                    self.stats.add(name)
                except Exception as e:  # counted, reported; the load goes on
                    self.stats.add(f"{name}_errors")
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
        self.pub = paho_connect(paho_client("soak-publisher", True), self.port)
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

    def start(self):
        self.publisher_setup()
        plan = [("churn", self.churn, 0.05), ("churn2", self.churn, 0.05),
                ("pubsub", self.pubsub, 0.05), ("retained", self.retained, 0.05),
                ("wills", self.wills, 0.1), ("takeover", self.takeover, 0.2),
                ("sessions", self.sessions, 0.2), ("slow", self.slow, 1.0),
                ("bad", self.bad, 0.02)]
        for name, fn, pause in plan:
            self.worker(name, fn, pause)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for c in self.stable:
            paho_close(c)


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
                 f" dropped {status.get('messages_dropped')}")
    return (f"{label:>8}  VmRSS {f['rss_kb'] / 1024:8.1f} MiB  threads {f['threads']:5d}"
            f"  fds {f['fds']:5d}{extra}")


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

    workdir = tempfile.mkdtemp(prefix="mqtt5-soak-")
    broker = None
    ok = True
    try:
        broker = BrokerProc(args.broker, workdir,
                            ["--max-clients", "1000", "--connect-rate-limit", "0"])
        print(f"soak: broker PID {broker.pid} on {HOST}:{broker.mqtt_port} "
              f"(web {broker.web_port}); {args.minutes:g} min; seed {seed}; log {broker.log_path}")
        time.sleep(1)
        start = broker.figures()
        print(fmt("start", start, broker.status()), flush=True)

        load = Load(broker, seed)
        load.start()
        t0 = time.monotonic()
        end_at = t0 + args.minutes * 60
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
        ]
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
        if ok and not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"soak: files kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
