"""Fixtures for the control-page test in a real browser.

* ``broker``: the real binary (``MQTT5_BROKER_BIN``, else target/release/mqtt5-broker, else
  target/debug/mqtt5-broker) on 127.0.0.1 with OS-chosen ports, a fresh database and
  ``--admin-password``; stopped by SIGTERM to its own PID (SIGKILL after 10 s).
  ``broker_with_config``: the same with ``--config`` naming ``config_file``.
* ``browser``: headless Chromium from Debian's ``chromium`` package, driven through Debian's
  ``chromium-driver`` by Selenium (pip). Both paths are given explicitly and Selenium Manager
  is kept offline, so nothing downloads a browser. Override with ``CHROMIUM_BIN`` /
  ``CHROMEDRIVER_BIN``.

On failure the broker's log is printed by the test report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
ADMIN_PASSWORD = "browser-admin-pw"
MQTT_RE = re.compile(r"MQTT listening on (\S+):(\d+)")
WEB_RE = re.compile(r"web page on http://([^\s/]+):(\d+)/")


class RunningBroker:
    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = None
        self.web_port = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.web_port}/"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read log: {e})"


def _broker_bin() -> Path:
    env = os.environ.get("MQTT5_BROKER_BIN")
    candidates = [Path(env)] if env else [
        REPO / "target" / "release" / "mqtt5-broker",
        REPO / "target" / "debug" / "mqtt5-broker",
    ]
    for p in candidates:
        p = p if p.is_absolute() else (Path.cwd() / p).resolve()
        if p.is_file() and os.access(p, os.X_OK):
            return p
    pytest.fail(f"no broker binary among {candidates}: cargo build --release, or set MQTT5_BROKER_BIN")


def _stop(b: RunningBroker):
    p = b.proc
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)  # this PID only
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


@pytest.fixture
def broker(tmp_path, request):
    yield from _run_broker(tmp_path, request, [])


@pytest.fixture
def config_file(tmp_path):
    """A config file (``max_clients 20``) the ``broker_with_config`` broker is started with."""
    path = tmp_path / "mqtt5-broker.conf"
    path.write_text("max_clients 20\n")
    return path


@pytest.fixture
def broker_with_config(tmp_path, request, config_file):
    """``broker``, started with ``--config`` naming ``config_file``."""
    yield from _run_broker(tmp_path, request, ["--config", str(config_file)])


def _run_broker(tmp_path, request, extra):
    log_path = tmp_path / "broker.log"
    env = dict(os.environ, RUST_LOG="info", RUST_LOG_STYLE="never")
    env.pop("MQTT5_BROKER_BIN", None)  # ours, not a broker setting
    cmd = [
        str(_broker_bin()),
        "--listen", "127.0.0.1:0",
        "--web-listen", "127.0.0.1:0",
        "--db", str(tmp_path / "b.db"),
        "--admin-password", ADMIN_PASSWORD,
        "--allow-anonymous",
        *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    b = RunningBroker(proc, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            text = b.log()
            m, w = MQTT_RE.search(text), WEB_RE.search(text)
            if m and w:
                b.port, b.web_port = int(m.group(2)), int(w.group(2))
                break
            if proc.poll() is not None:
                pytest.fail(f"broker exited with {proc.returncode}; log:\n{text}")
            if time.monotonic() > deadline:
                pytest.fail(f"broker did not start within {START_TIMEOUT}s; log:\n{text}")
            time.sleep(0.02)
        yield b
    finally:
        _stop(b)
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print("--- broker log ---\n" + b.log())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _which(env_name: str, *names: str) -> str | None:
    if os.environ.get(env_name):
        return os.environ[env_name]
    for n in names:
        p = shutil.which(n) or (f"/usr/bin/{n}" if Path(f"/usr/bin/{n}").exists() else None)
        if p:
            return p
    return None


@pytest.fixture
def browser():
    # Selenium Manager must not fetch anything: both binaries are given below.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = _which("CHROMIUM_BIN", "chromium", "chromium-browser")
    driver_bin = _which("CHROMEDRIVER_BIN", "chromedriver")
    if not chromium or not driver_bin:
        pytest.fail("Debian's chromium and chromium-driver are needed (scripts/test browser installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
