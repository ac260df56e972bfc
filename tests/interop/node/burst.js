// A burst of QoS 1 or 2 messages from MQTT.js to a subscriber that is also MQTT.js, for
// tests/interop/test_mqttjs.py. MQTT.js sends every PUBLISH at once, whatever the server's
// Receive Maximum (it ignores it, as most clients do). Reconnection is off, so a
// disconnect shows as one instead of being retried.
//
// Usage: node burst.js HOST PORT PROTOCOL_VERSION(4|5) QOS COUNT TOPIC
// Prints one JSON line: {acked, publishErrors, received, closes, errors}.
"use strict";

const mqtt = require("mqtt");

const [host, port, version, qos, count, topic] = process.argv.slice(2);
const n = Number(count);
const WAIT_MS = 20000; // bound for the whole run
const QUIET_MS = 1000; // how long extra (duplicate) deliveries are watched for

const result = { acked: 0, publishErrors: [], received: [], closes: [], errors: [] };
const options = (id) => ({
  host,
  port: Number(port),
  protocolVersion: Number(version),
  clientId: id,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
});

function connect(id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(options(id));
    c.once("connect", () => resolve(c));
    c.once("error", reject);
    c.on("close", () => result.closes.push(id));
    c.on("error", (e) => result.errors.push(`${id}: ${e.message}`));
    c.on("disconnect", (p) => result.errors.push(`${id}: DISCONNECT 0x${(p.reasonCode || 0).toString(16)}`));
  });
}

function finish(code) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

async function main() {
  setTimeout(() => finish(0), WAIT_MS);
  const suffix = Math.random().toString(16).slice(2, 10);
  const sub = await connect(`js-sub-${suffix}`);
  sub.on("message", (_t, payload) => result.received.push(payload.toString()));
  await sub.subscribeAsync(topic, { qos: Number(qos) });
  const pub = await connect(`js-pub-${suffix}`);
  const sends = [];
  for (let i = 0; i < n; i++) {
    sends.push(
      pub.publishAsync(topic, `m${i}`, { qos: Number(qos) }).then(
        () => { result.acked += 1; },
        (e) => { result.publishErrors.push(`m${i}: ${e.message}`); },
      ),
    );
  }
  await Promise.all(sends);
  const deadline = Date.now() + WAIT_MS;
  while (result.received.length < n && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, QUIET_MS));
  await Promise.all([pub.endAsync(), sub.endAsync()]);
  finish(0);
}

main().catch((e) => {
  result.errors.push(`fatal: ${e.message}`);
  finish(1);
});
