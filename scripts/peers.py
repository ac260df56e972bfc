"""scripts/peers.py — starting a broker for the side-by-side scripts (retained_burst.py,
reconnect_storm.py): ours or Mosquitto, on a free 127.0.0.1 port, its log in a temp dir. The
caller stops what it started, by PID."""
import os
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("broker exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not listen")


def start(kind, binary, tmp, n, mosquitto_conf="max_connections -1\n"):
    """Starts `kind` ("mosquitto" or ours); `mosquitto_conf` is added to Mosquitto's file."""
    port = free_port()
    log = open(os.path.join(tmp, f"{kind}-{n}.log"), "w")
    if kind == "mosquitto":
        conf = os.path.join(tmp, f"mosquitto-{n}.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"{mosquitto_conf}set_tcp_nodelay true\n")
        cmd = [binary, "-c", conf]
    else:
        cmd = [binary, "--listen", f"127.0.0.1:{port}", "--web-listen", "127.0.0.1:0",
               "--db", os.path.join(tmp, f"ours-{n}.db"), "--allow-anonymous",
               "--max-clients", "12000", "--max-pending-connections", "12000",
               "--max-pending-per-address", "12000"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port
