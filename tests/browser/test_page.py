"""The control page end to end in headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium), against the real broker binary, with real MQTT clients (paho-mqtt).

It logs in (after a wrong password is refused), stops and starts the MQTT server from the
page, publishes with paho, and finds the topic (Topic History), the message (Last 10
Messages), the client and its subscription (Connected Clients, Subscribed Clients), an
unacknowledged QoS 1 delivery (QoS 1/2 Messages), the retained message (deleted from the
page), a test message published from the page, and a user added from the page. A topic and a
payload carrying ``<script>`` and ``<img onerror>`` are shown as text: the cell's textContent
is the exact string, no element was injected and no script ran.

A screenshot of each tab is saved under target/screenshots/ (the README uses one of them).
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import ADMIN_PASSWORD, REPO

SHOTS = REPO / "target" / "screenshots"
WAIT = 15.0
XSS_TOPIC = "home/<script>window.__xss=1</script>/state"
XSS_PAYLOAD = '<img src=x onerror="window.__xss=2"><script>window.__xss=3</script> 21.5 °C'


def wait_until(what, fn, timeout=WAIT, every=0.1):
    """Polls fn() until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # a stale element while the table re-renders
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Mqtt:
    """A paho-mqtt 2.x client (MQTT 5) on its own network thread."""

    def __init__(self, broker, client_id, manual_ack=False):
        self.received = []
        self.disconnects = []
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=False,
        )
        self.c.on_message = lambda c, u, m: self.received.append(m)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        self.c.connect(broker.host, broker.port, keepalive=60)
        self.c.loop_start()
        wait_until(f"{client_id} connected", self.c.is_connected)

    def subscribe(self, topic, qos=1, **opts):
        result, _ = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **opts))
        assert result == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"publish to {topic}"

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


class Page:
    """The control page in the browser."""

    def __init__(self, driver, broker):
        self.d = driver
        self.b = broker

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def el(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def visible(self, css):
        return self.el(css).is_displayed()

    def accept_confirm(self):
        WebDriverWait(self.d, 5).until(EC.alert_is_present())
        self.d.switch_to.alert.accept()

    def loaded_stamp(self, tab):
        return self.el(f"#tab-{tab}").get_attribute("data-loaded")

    def tab(self, name):
        """Opens a tab and waits until its data has loaded."""
        before = self.loaded_stamp(name)
        self.el(f'.tabs button[data-tab="{name}"]').click()
        wait_until(f"tab {name} loaded", lambda: self.loaded_stamp(name) not in (None, before))

    def refresh(self, name):
        before = self.loaded_stamp(name)
        self.el("#btn-refresh").click()
        wait_until(f"tab {name} refreshed", lambda: self.loaded_stamp(name) != before)

    def rows(self, table_id):
        """Each body row of a table as the textContent of its cells."""
        return self.js(
            "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')]"
            ".map(tr => [...tr.cells].map(td => td.textContent));",
            table_id,
        )

    def find_row(self, tab, table_id, predicate, what):
        """Refreshes the tab until a row satisfies `predicate`."""

        def look():
            self.refresh(tab)
            return next((r for r in self.rows(table_id) if predicate(r)), None)

        return wait_until(what, look)

    def status(self):
        return self.el("#st-state").text

    def shot(self, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.d.save_screenshot(str(SHOTS / f"{name}.png"))

    def assert_no_injection(self):
        """Nothing that came from a client became markup or ran."""
        found = self.js(
            "return {xss: window.__xss === undefined ? null : window.__xss,"
            " imgs: document.querySelectorAll('img').length,"
            " scripts: [...document.scripts].map(s => s.getAttribute('src'))};"
        )
        assert found["xss"] is None, f"a script from a client ran: {found}"
        assert found["imgs"] == 0, f"an <img> was injected: {found}"
        assert found["scripts"] == ["/app.js"], f"a <script> was injected: {found}"


def traffic(broker, stop: threading.Event):
    """A few sensors publishing steadily, so that the chart and the tables have something
    to show in the screenshots."""
    c = Mqtt(broker, "sensors-gateway")
    topics = [
        "home/livingroom/temperature",
        "home/kitchen/humidity",
        "zigbee2mqtt/hallway_motion",
        "tasmota/plug_1/SENSOR",
    ]
    i = 0
    try:
        while not stop.is_set() and i < 5000:
            t = topics[i % len(topics)]
            c.c.publish(t, f'{{"value": {20 + (i % 7) * 0.5}, "seq": {i}}}', qos=0)
            i += 1
            stop.wait(0.05)
    finally:
        c.close()


def test_control_page_end_to_end(broker, browser):
    page = Page(browser, broker)
    clients = []
    stop_traffic = threading.Event()
    try:
        # ---- login: the page shows only the form; a wrong password is refused
        browser.get(broker.url)
        wait_until("login form", lambda: page.visible("#login-form"))
        assert not page.visible("#app-view")
        page.shot("0-login")
        page.el("#login-password").send_keys("not-the-password")
        page.el("#login-submit").click()
        wait_until("wrong password message", lambda: "wrong password" in page.el("#login-error").text)
        assert not page.visible("#app-view")
        page.el("#login-password").clear()
        page.el("#login-password").send_keys(ADMIN_PASSWORD)
        page.el("#login-submit").click()
        wait_until("the app", lambda: page.visible("#app-view"))
        wait_until("status running", lambda: page.status() == "running")
        assert page.el("#st-address").text == f"127.0.0.1:{broker.port}"
        # The session cookie is HttpOnly: the page's scripts cannot read it.
        assert "mqtt5_session" not in page.js("return document.cookie;")

        # ---- stop and start the MQTT server from the page
        before = Mqtt(broker, "before-stop")
        page.el("#btn-stop").click()
        page.accept_confirm()
        wait_until("status stopped", lambda: page.status() == "stopped")
        wait_until("the client disconnected", lambda: before.disconnects)
        assert before.disconnects[0].value == 0x8B, before.disconnects  # Server shutting down
        before.c.loop_stop()
        assert page.el("#btn-start").is_enabled() and not page.el("#btn-stop").is_enabled()
        page.shot("0-stopped")
        page.el("#btn-start").click()
        wait_until("status running again", lambda: page.status() == "running")

        # ---- real MQTT clients
        threading.Thread(target=traffic, args=(broker, stop_traffic), daemon=True).start()
        sub = Mqtt(broker, "kitchen-display")
        clients.append(sub)
        sub.subscribe("home/#", qos=1, noLocal=True)
        slow = Mqtt(broker, "slow-acker", manual_ack=True)
        clients.append(slow)
        slow.subscribe("alarm/#", qos=1)
        pub = Mqtt(broker, "phone-app")
        clients.append(pub)
        pub.publish(XSS_TOPIC, XSS_PAYLOAD.encode(), qos=1, retain=True)
        pub.publish("alarm/front_door", b"OPEN", qos=1)
        wait_until("the subscriber got the message", lambda: any(m.topic == XSS_TOPIC for m in sub.received))
        wait_until("the slow subscriber got the alarm", lambda: slow.received)

        # ---- Topic History: the topic, as text
        page.tab("topics")
        row = page.find_row("topics", "topics-table", lambda r: r[0] == XSS_TOPIC, "the topic in Topic History")
        assert row[1] == "1", row
        page.assert_no_injection()
        page.find_row("topics", "topics-table", lambda r: r[0] == "home/livingroom/temperature", "sensor topics")
        page.shot("1-topic-history")

        # ---- Last 10 Messages: open it from the topic's row
        page.js(
            "const tr = [...document.querySelectorAll('#topics-table tbody tr')]"
            ".find(tr => tr.cells[0].textContent === arguments[0]); tr.querySelector('button').click();",
            XSS_TOPIC,
        )
        wait_until("messages of the topic", lambda: page.rows("messages-table") and page.rows("messages-table")[0][4].startswith("<img"))
        msg = page.rows("messages-table")[0]
        assert msg[1] == "1" and msg[2] == "yes" and msg[3] == "phone-app", msg
        assert msg[4] == XSS_PAYLOAD, msg
        assert page.el("#messages-topic").get_attribute("value") == XSS_TOPIC
        page.assert_no_injection()
        page.shot("2-last-10-messages")

        # ---- Connected Clients: the client and its subscription with options
        page.tab("clients")
        row = page.find_row("clients", "clients-table", lambda r: r[0] == "kitchen-display", "the client")
        assert row[3] == "tcp", row  # the Transport column
        assert row[4] == "5.0", row
        assert row[2].startswith("127.0.0.1:"), row
        assert "home/#" in row[7] and "QoS 1" in row[7] and "no local" in row[7], row
        page.shot("3-connected-clients")

        # ---- Subscribed Clients: the filter with its subscriber
        page.tab("subscriptions")
        row = page.find_row("subscriptions", "subscriptions-table", lambda r: r[0] == "home/#", "the subscription")
        assert "kitchen-display" in row[2], row
        page.shot("4-subscribed-clients")

        # ---- QoS 1/2 Messages: the alarm the slow client has not acknowledged
        page.tab("qos")
        row = page.find_row("qos", "qos-table", lambda r: r[0] == "slow-acker", "the unacknowledged delivery")
        assert row[3] == "alarm/front_door" and row[6] == "awaiting PUBACK", row
        # ... and the message the display acknowledged, as text.
        row = page.find_row(
            "qos", "qos-acked-table",
            lambda r: r[0] == "kitchen-display" and r[2] == XSS_TOPIC, "the acknowledged delivery",
        )
        assert row[3] == "1" and row[5] == "PUBACK received", row
        page.assert_no_injection()
        page.shot("5-qos-messages")

        # ---- Retained: listed as text, then deleted from the page
        page.tab("retained")
        page.find_row("retained", "retained-table", lambda r: r[0] == XSS_TOPIC, "the retained message")
        page.assert_no_injection()
        page.shot("6-retained")
        page.js(
            "const tr = [...document.querySelectorAll('#retained-table tbody tr')]"
            ".find(tr => tr.cells[0].textContent === arguments[0]); tr.querySelector('button').click();",
            XSS_TOPIC,
        )
        page.accept_confirm()
        wait_until("the retained message gone", lambda: not any(r[0] == XSS_TOPIC for r in page.rows("retained-table")))

        # ---- Publish a test message from the page: the subscriber receives it
        page.tab("publish")
        page.el("#publish-topic").send_keys("home/test/from-page")
        page.el("#publish-payload").send_keys("hello from the page")
        Select(page.el("#publish-qos")).select_by_visible_text("1")
        page.el("#publish-submit").click()
        wait_until("the published message", lambda: any(m.topic == "home/test/from-page" for m in sub.received))
        got = next(m for m in sub.received if m.topic == "home/test/from-page")
        assert got.payload == b"hello from the page"
        wait_until("publish result", lambda: "matched" in page.el("#publish-result").text)
        page.shot("7-publish")

        # ---- Users & ACL: add a user, a rule and a ban from the page
        page.tab("admin")
        page.el("#user-name").send_keys("alice")
        page.el("#user-password").send_keys("alice-secret")
        page.el("#user-add").click()
        wait_until("the new user", lambda: any(r[0] == "alice" for r in page.rows("users-table")))
        page.el("#acl-user").send_keys("alice")
        page.el("#acl-pattern").send_keys("home/%u/#")
        page.el("#acl-add").click()
        wait_until("the new rule", lambda: any(r[2] == "home/%u/#" for r in page.rows("acl-table")))
        page.shot("8-users-acl")
        # One rule means "deny unless granted" for everyone else: delete it again.
        page.js(
            "const tr = [...document.querySelectorAll('#acl-table tbody tr')]"
            ".find(tr => tr.cells[2].textContent === 'home/%u/#'); tr.querySelector('button').click();"
        )
        wait_until("the rule deleted", lambda: not any(r[2:3] == ["home/%u/#"] for r in page.rows("acl-table")))
        page.el("#ban-value").send_keys("<b>bad-device</b>")
        page.el("#ban-add").click()
        wait_until("the ban", lambda: any(r[1] == "<b>bad-device</b>" for r in page.rows("bans-table")))
        page.assert_no_injection()

        # ---- auto-refresh: a new topic appears without pressing Refresh
        page.tab("topics")
        Select(page.el("#auto-refresh")).select_by_value("2")
        pub.publish("home/garage/door", b"closed", qos=0)
        wait_until(
            "auto-refreshed topic",
            lambda: any(r[0] == "home/garage/door" for r in page.rows("topics-table")),
            timeout=10,
        )
        # The chart has drawn the traffic.
        assert page.js(
            "const c = document.getElementById('rate-chart');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "for (let i = 0; i < d.length; i += 4) { if (d[i+3] && d[i+2] > 150 && d[i] < 80) return true; }"
            "return false;"
        ), "the chart shows the incoming rate"
        wait_until("the last notice gone", lambda: not page.visible("#notice"), timeout=10)
        page.shot("1-topic-history")

        # ---- disconnect a client from the page
        page.tab("clients")
        page.find_row("clients", "clients-table", lambda r: r[0] == "slow-acker", "slow-acker listed")
        page.js(
            "const tr = [...document.querySelectorAll('#clients-table tbody tr')]"
            ".find(tr => tr.cells[0].textContent === 'slow-acker'); tr.querySelector('button').click();"
        )
        page.accept_confirm()
        wait_until("slow-acker disconnected", lambda: slow.disconnects)
        assert slow.disconnects[0].value == 0x98, slow.disconnects  # Administrative action

        # ---- log out: back to the form, the API refuses the old session
        page.el("#btn-logout").click()
        wait_until("login form again", lambda: page.visible("#login-form"))
        status = page.js(
            "return fetch('/api/topics', {headers: {'X-Requested-With': 'fetch'}}).then(r => r.status);"
        )
        assert status == 401
    finally:
        stop_traffic.set()
        for c in clients:
            c.close()


def log_in(page, broker):
    page.d.get(broker.url)
    wait_until("login form", lambda: page.visible("#login-form"))
    page.el("#login-password").send_keys(ADMIN_PASSWORD)
    page.el("#login-submit").click()
    wait_until("the app", lambda: page.visible("#app-view"))


def test_reload_config_button_shows_what_changed_and_backup_link_downloads(
    broker_with_config, config_file, browser
):
    """Reload config: the page shows the applied change and the setting that needs a restart;
    Download backup: the link's GET, with the page's session, is a SQLite database."""
    broker = broker_with_config
    page = Page(browser, broker)
    log_in(page, broker)
    config_file.write_text("max_clients 50\nws_listen 127.0.0.1:0\n")
    page.el("#btn-reload").click()
    text = wait_until(
        "the reload summary",
        lambda: "max_clients" in page.el("#notice").text and page.el("#notice").text,
    )
    assert "max_clients 20 → 50" in text, text
    assert "Needs a restart (not applied): ws_listen off → 127.0.0.1:0" in text, text
    assert "config reload: max_clients 20 -> 50" in broker.log()

    # A file that does not parse: the page shows why, nothing changes.
    config_file.write_text("max_clients 50\nno_such_setting 1\n")
    page.el("#btn-reload").click()
    wait_until(
        "the reload error",
        lambda: "no_such_setting" in page.el("#notice").text
        and "error" in page.el("#notice").get_attribute("class"),
    )

    link = page.el("#btn-backup")
    assert link.get_attribute("href") == broker.url + "api/backup"
    head = page.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'})"
        ".then(r => r.arrayBuffer().then(b => done({status: r.status,"
        " type: r.headers.get('Content-Type'),"
        " magic: String.fromCharCode(...new Uint8Array(b.slice(0, 15)))})))"
        ".catch(e => done({error: String(e)}));",
        link.get_attribute("href"),
    )
    assert head == {"status": 200, "type": "application/vnd.sqlite3", "magic": "SQLite format 3"}, head
