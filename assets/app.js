// mqtt5-broker control page: login, status line and chart, the tabs, and the admin forms.
//
// Everything shown comes from the JSON API (see the README, "Control page and API"). Every
// string that came from a client (topic, payload, client id, username, address) is written as
// text: elements are built with createElement and filled with textContent / text nodes; this
// file never hands a string to the HTML parser (tests/web_api.rs checks for the usual ways).
// State-changing calls are POSTs carrying the session's CSRF token in X-CSRF-Token.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ DOM helpers

  /** An element with properties and children; strings become text nodes, never markup. */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '–';
    return new Date(ms).toLocaleString();
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return '–';
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m ${sec}s`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }
  const fmtNum = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString());
  const yesNo = (b) => (b ? 'yes' : 'no');

  /** A payload cell: text as text; hex marked as such. */
  function payloadNode(item) {
    const node = el('span', {
      class: item.payload_format === 'hex' ? 'payload hex' : 'payload',
      title: item.payload_format === 'hex' ? 'binary payload, shown as hex' : null,
    }, item.payload);
    const extras = [];
    if (item.payload_format === 'hex') extras.push(el('span', { class: 'tag' }, 'hex'));
    if (item.truncated) extras.push(el('span', { class: 'tag' }, 'truncated'));
    return [node, ...extras];
  }

  /** Fills a table body with rows built by `row(item)`, or a single "empty" row. */
  function fillTable(table, items, row, emptyText) {
    const tbody = table.tBodies[0];
    const cols = table.tHead.rows[0].cells.length;
    if (!items.length) {
      tbody.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: cols }, emptyText)));
      return;
    }
    tbody.replaceChildren(...items.map(row));
  }

  // ------------------------------------------------------------------ API

  let csrf = null;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options) {
    const { method = 'GET', body } = options || {};
    const headers = { 'X-Requested-With': 'fetch' };
    if (method !== 'GET') headers['X-CSRF-Token'] = csrf || '';
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'cannot reach the broker');
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && path !== '/api/login') {
      showLogin('Your session has ended: log in again.');
    }
    if (!r.ok) throw new ApiError(r.status, (data && data.error) || `HTTP ${r.status}`);
    return data;
  }

  let noticeTimer = null;
  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text;
    n.className = isError ? 'notice error' : 'notice';
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; }, isError ? 8000 : 4000);
  }
  const fail = (e) => { if (!(e instanceof ApiError && e.status === 401)) notice(e.message, true); };

  /** Runs a POST, shows its outcome, refreshes the current tab. */
  async function act(path, body, okText) {
    try {
      const r = await api(path, { method: 'POST', body });
      if (okText) notice(typeof okText === 'function' ? okText(r) : okText);
      await refreshAll();
      return r;
    } catch (e) {
      fail(e);
      return null;
    }
  }

  /** The answer of POST /api/config/reload as one line: what changed, what needs a restart. */
  function reloadSummary(r) {
    const list = (cs) => cs.map((c) => `${c.setting} ${c.from} → ${c.to}`).join(', ');
    const parts = [];
    if (r.changed.length) parts.push(`Config reloaded: ${list(r.changed)}.`);
    if (r.restart.length) parts.push(`Needs a restart (not applied): ${list(r.restart)}.`);
    if (!parts.length) parts.push('Config reloaded: no setting changed.');
    return parts.join(' ');
  }

  // ------------------------------------------------------------------ login

  let started = false;

  function showLogin(message) {
    csrf = null;
    stopTimers();
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    $('login-password').focus();
  }

  async function showApp() {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    if (!started) { started = true; wire(); }
    const tab = (location.hash || '').slice(1);
    selectTab(TABS[tab] ? tab : 'topics');
    startTimers();
    await refreshStatus();
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const pw = $('login-password').value;
    $('login-submit').disabled = true;
    try {
      const r = await api('/api/login', { method: 'POST', body: { password: pw } });
      csrf = r.csrf_token;
      $('login-password').value = '';
      $('login-error').textContent = '';
      await showApp();
    } catch (e) {
      $('login-error').textContent = e.message;
    } finally {
      $('login-submit').disabled = false;
    }
  });

  // ------------------------------------------------------------------ status and chart

  async function refreshStatus() {
    let s;
    try {
      s = await api('/api/status');
    } catch (e) {
      $('st-state').textContent = 'unreachable';
      $('st-state').className = 'pill stopped';
      return;
    }
    $('st-state').textContent = s.running ? 'running' : 'stopped';
    $('st-state').className = s.running ? 'pill running' : 'pill stopped';
    // Every listener, as the log names them: the plain one bare, the others with their transport.
    const addrs = (s.listeners || []).map((l) => (l.transport === 'tcp' ? l.address : `${l.address} (${l.transport})`));
    $('st-address').textContent = addrs.length ? addrs.join(', ') : s.mqtt_address || '–';
    $('st-uptime').textContent = fmtDuration(s.uptime_seconds);
    $('st-clients').textContent = fmtNum(s.clients_connected);
    $('st-in').textContent = `${s.messages_in_per_second.toFixed(1)}/s`;
    $('st-out').textContent = `${s.messages_out_per_second.toFixed(1)}/s`;
    $('st-dropped').textContent = fmtNum(s.messages_dropped);
    if (s.store_failing_since) {
      $('st-db').textContent = `${fmtBytes(s.db_bytes)} — FAILING since ${new Date(s.store_failing_since).toLocaleTimeString()}: ${s.store_error || 'cannot write'}; ${fmtNum(s.store_pending_writes)} writes waiting, ${fmtNum(s.messages_not_stored)} messages not acknowledged`;
      $('st-db').className = 'failing';
    } else {
      $('st-db').textContent = fmtBytes(s.db_bytes);
      $('st-db').className = '';
    }
    $('st-updated').textContent = new Date().toLocaleTimeString();
    $('btn-start').disabled = s.running;
    $('btn-stop').disabled = !s.running;
    try {
      drawChart((await api('/api/rates?seconds=120')).points);
    } catch (e) { /* the status line is enough */ }
  }

  function drawChart(points) {
    const canvas = $('rate-chart');
    const ctx = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 22;
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
    const step = Math.pow(10, Math.floor(Math.log10(max)));
    const top = Math.ceil(max / step) * step;
    ctx.strokeStyle = '#d9dee7';
    ctx.fillStyle = '#5d6778';
    ctx.font = '10px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = h - pad / 2 - f * (h - pad);
      ctx.beginPath(); ctx.moveTo(pad + 10, y); ctx.lineTo(w - 4, y); ctx.stroke();
      ctx.fillText(String(Math.round(top * f * 10) / 10), 2, y + 3);
    }
    const n = 120;
    const x = (i) => pad + 10 + (w - pad - 14) * (i / (n - 1));
    const y = (v) => h - pad / 2 - (v / top) * (h - pad);
    for (const [key, colour] of [['in', '#2457c5'], ['out', '#1f8a4c']]) {
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      const offset = n - points.length;
      points.forEach((p, i) => {
        const px = x(offset + i), py = y(p[key]);
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.stroke();
    }
  }

  // ------------------------------------------------------------------ paging

  /** Per-list paging state and its toolbar (filter box, page size, previous/next). */
  const pagers = {};
  function pager(name, reload) {
    const bar = document.querySelector(`[data-pager="${name}"]`);
    const st = { offset: 0, limit: 100, q: '' };
    const range = el('span', { class: 'range' });
    const prev = el('button', { type: 'button', class: 'small', onclick: () => { st.offset = Math.max(0, st.offset - st.limit); reload(); } }, '‹ Previous');
    const next = el('button', { type: 'button', class: 'small', onclick: () => { st.offset += st.limit; reload(); } }, 'Next ›');
    const size = el('select', {
      onchange: () => { st.limit = Number(size.value); st.offset = 0; reload(); },
    }, [50, 100, 500, 1000].map((n) => el('option', { value: n, selected: n === 100 ? 'selected' : null }, String(n))));
    const parts = [];
    if (bar.dataset.filter) {
      let t = null;
      const input = el('input', {
        type: 'search', placeholder: `filter: ${bar.dataset.filter}`, size: 28,
        oninput: () => { clearTimeout(t); t = setTimeout(() => { st.q = input.value; st.offset = 0; reload(); }, 250); },
      });
      parts.push(input);
    }
    parts.push(prev, next, el('label', {}, 'rows per page ', size), range);
    bar.replaceChildren(...parts);
    st.params = () => {
      const p = new URLSearchParams({ offset: st.offset, limit: st.limit });
      if (st.q) p.set('q', st.q);
      return p.toString();
    };
    st.show = (r) => {
      const shown = r.items.length;
      const from = shown ? r.offset + 1 : 0;
      const more = r.total === null || r.total === undefined ? r.more : r.offset + shown < r.total;
      const of = r.total === null || r.total === undefined ? '' : ` of ${fmtNum(r.total)}`;
      range.textContent = `${fmtNum(from)}–${fmtNum(r.offset + shown)}${of}`;
      prev.disabled = r.offset === 0;
      next.disabled = !more;
    };
    pagers[name] = st;
    return st;
  }

  // ------------------------------------------------------------------ tabs

  async function loadTopics() {
    const p = pagers.topics;
    const r = await api(`/api/topics?${p.params()}`);
    p.show(r);
    $('topics-bound').textContent = `Keeping ${fmtNum(r.topics_kept)} topics (at most `
      + `${fmtNum(r.max_topics)}); ${fmtNum(r.topics_forgotten)} forgotten since start, `
      + 'least recently seen first.';
    fillTable($('topics-table'), r.items, (t) => el('tr', {},
      el('td', { class: 'mono' }, t.topic),
      el('td', { class: 'num' }, fmtNum(t.message_count)),
      el('td', {}, fmtTime(t.first_seen)),
      el('td', {}, fmtTime(t.last_seen)),
      el('td', {}, el('button', {
        type: 'button', class: 'small', onclick: () => showMessages(t.topic),
      }, 'Messages'))), 'No topics yet: nothing has been published.');
    $('topic-list').replaceChildren(...r.items.slice(0, 200).map((t) => el('option', { value: t.topic })));
  }

  function showMessages(topic) {
    $('messages-topic').value = topic;
    selectTab('messages');
  }

  async function loadMessages() {
    const topic = $('messages-topic').value;
    const table = $('messages-table');
    if (!topic) {
      fillTable(table, [], null, 'Choose a topic (or pick one in Topic History).');
      return;
    }
    const q = new URLSearchParams({ topic, limit: $('messages-limit').value });
    const r = await api(`/api/messages?${q}`);
    fillTable(table, r.items, (m) => el('tr', {},
      el('td', {}, fmtTime(m.time)),
      el('td', {}, String(m.qos)),
      el('td', {}, yesNo(m.retain)),
      el('td', { class: 'mono' }, m.publisher === null ? el('span', { class: 'tag' }, 'broker') : m.publisher),
      el('td', {}, payloadNode(m)),
      el('td', { class: 'num' }, fmtBytes(m.payload_len))), 'No messages recorded for this topic.');
  }

  function subOptions(s) {
    const parts = [`QoS ${s.qos}`];
    if (s.no_local) parts.push('no local');
    if (s.retain_as_published) parts.push('retain as published');
    if (s.retain_handling) parts.push(`retain handling ${s.retain_handling}`);
    if (s.subscription_id !== null && s.subscription_id !== undefined) parts.push(`id ${s.subscription_id}`);
    return parts.join(', ');
  }

  async function loadClients() {
    const p = pagers.clients;
    const r = await api(`/api/clients?${p.params()}`);
    p.show(r);
    fillTable($('clients-table'), r.items, (c) => el('tr', {},
      el('td', { class: 'mono' }, c.client_id || el('span', { class: 'tag' }, c.state)),
      el('td', {}, c.username === null ? '–' : c.username),
      el('td', { class: 'mono' }, c.address),
      el('td', { class: 'transport' }, c.transport,
        c.certificate_cn !== null && ' ', c.certificate_cn !== null && el('span', { class: 'tag', title: 'client certificate subject' }, `CN=${c.certificate_cn}`)),
      el('td', {}, c.protocol || '–', c.bridge && ' ', c.bridge && el('span', { class: 'tag' }, 'bridge')),
      el('td', { class: 'num' }, c.keep_alive === null ? '–' : `${c.keep_alive} s`),
      el('td', {}, fmtTime(c.connected_since)),
      el('td', {}, c.subscriptions.length
        ? el('ul', { class: 'subs' }, c.subscriptions.map((s) => el('li', {},
          el('span', { class: 'mono' }, s.filter), ' ', el('span', { class: 'tag' }, subOptions(s)))))
        : '–'),
      el('td', { class: 'num' }, `${fmtNum(c.queued)} / ${fmtNum(c.inflight)} / ${fmtNum(c.dropped)}`),
      el('td', {}, el('button', {
        type: 'button', class: 'small danger',
        onclick: () => {
          if (confirm(`Disconnect ${c.client_id || c.address}?`)) {
            act('/api/clients/disconnect', { conn_id: c.conn_id }, 'Client disconnected.');
          }
        },
      }, 'Disconnect'))), 'No client is connected.');
  }

  async function loadBridges() {
    const r = await api('/api/bridges');
    fillTable($('bridges-table'), r.items, (b) => el('tr', {},
      el('td', { class: 'mono' }, b.name),
      el('td', {}, el('span', { class: 'tag' }, b.state),
        b.address !== null && ` ${b.address}`, b.why !== null && ` — ${b.why}`),
      el('td', {}, b.since === null ? '–' : fmtTime(b.since)),
      el('td', { class: 'mono' }, b.local_client_id),
      el('td', { class: 'num' }, `${fmtNum(b.queued)} / ${fmtNum(b.queue_dropped)}`),
      el('td', { class: 'num' }, `${fmtNum(b.forwarded_in)} / ${fmtNum(b.forwarded_out)}`),
      el('td', { class: 'num' }, fmtNum(b.dropped)),
      el('td', {}, b.running
        ? el('button', {
          type: 'button', class: 'small danger',
          onclick: () => act('/api/bridges/stop', { name: b.name }, `Bridge ${b.name} stopping.`),
        }, 'Stop')
        : el('button', {
          type: 'button', class: 'small',
          onclick: () => act('/api/bridges/start', { name: b.name }, `Bridge ${b.name} started.`),
        }, 'Start'))), 'No bridge is configured (connection blocks in the config file).');
  }

  async function loadSubscriptions() {
    const p = pagers.subscriptions;
    const r = await api(`/api/subscriptions?${p.params()}`);
    p.show(r);
    fillTable($('subscriptions-table'), r.items, (f) => el('tr', {},
      el('td', { class: 'mono' }, f.filter),
      el('td', { class: 'num' }, fmtNum(f.count)),
      el('td', {}, el('ul', { class: 'subs' }, f.subscribers.map((s) => el('li', {},
        el('span', { class: 'mono' }, s.client_id), ' ', el('span', { class: 'tag' }, subOptions(s))))))),
    'No subscriptions.');
  }

  async function loadQos() {
    const p = pagers.qos;
    const r = await api(`/api/qos-messages?${p.params()}`);
    p.show(r);
    fillTable($('qos-table'), r.items, (m) => el('tr', {},
      el('td', { class: 'mono' }, m.client_id),
      el('td', {}, yesNo(m.online)),
      el('td', { class: 'num' }, m.packet_id === null ? '–' : String(m.packet_id)),
      el('td', { class: 'mono' }, m.topic === null ? '–' : m.topic),
      el('td', {}, String(m.qos)),
      el('td', {}, yesNo(m.retain)),
      el('td', {}, m.state),
      el('td', { class: 'num' }, m.age_seconds === null ? '–' : fmtDuration(m.age_seconds))),
    'No QoS 1/2 message is waiting for a subscriber.');
    fillTable($('qos-acked-table'), r.acknowledged, (m) => el('tr', {},
      el('td', { class: 'mono' }, m.client_id),
      el('td', { class: 'num' }, String(m.packet_id)),
      el('td', { class: 'mono' }, m.topic),
      el('td', {}, String(m.qos)),
      el('td', {}, yesNo(m.retain)),
      el('td', {}, m.state),
      el('td', { class: 'num' }, fmtBytes(m.payload_len)),
      el('td', {}, fmtTime(m.acknowledged_at))),
    'No QoS 1/2 message has been acknowledged yet.');
    fillTable($('qos-stored-table'), r.stored, (m) => el('tr', {},
      el('td', { class: 'mono' }, m.client_id),
      el('td', { class: 'num' }, String(m.seq)),
      el('td', { class: 'mono' }, m.topic),
      el('td', {}, String(m.qos)),
      el('td', {}, m.state),
      el('td', { class: 'num' }, m.packet_id === null ? '–' : String(m.packet_id)),
      el('td', { class: 'num' }, fmtBytes(m.payload_len)),
      el('td', {}, fmtTime(m.stored_at))),
    'No message is kept for a persistent session.');
  }

  async function loadRetained() {
    const p = pagers.retained;
    const r = await api(`/api/retained?${p.params()}`);
    p.show(r);
    fillTable($('retained-table'), r.items, (m) => el('tr', {},
      el('td', { class: 'mono' }, m.topic),
      el('td', {}, payloadNode(m)),
      el('td', {}, String(m.qos)),
      el('td', { class: 'mono' }, m.publisher === null ? el('span', { class: 'tag' }, 'broker') : m.publisher),
      el('td', {}, fmtTime(m.received)),
      el('td', {}, el('button', {
        type: 'button', class: 'small danger',
        onclick: () => {
          if (confirm(`Delete the retained message of ${m.topic}?`)) {
            act('/api/retained/delete', { topic: m.topic }, 'Retained message deleted.');
          }
        },
      }, 'Delete'))), 'No retained messages.');
  }

  async function loadAdmin() {
    const [users, acl, bans, session] = await Promise.all([
      api('/api/users'), api('/api/acl'), api('/api/bans'), api('/api/session'),
    ]);
    fillTable($('users-table'), users.items, (u) => el('tr', {},
      el('td', { class: 'mono' }, u.name),
      el('td', {}, fmtTime(u.created)),
      el('td', {}, el('button', {
        type: 'button', class: 'small danger',
        onclick: () => {
          if (confirm(`Delete the user ${u.name}? Its clients are disconnected.`)) {
            act('/api/users/delete', { name: u.name }, 'User deleted.');
          }
        },
      }, 'Delete'))), 'No accounts: see --allow-anonymous in the README.');
    fillTable($('acl-table'), acl.items, (a) => el('tr', {},
      el('td', { class: 'num' }, String(a.id)),
      el('td', { class: 'mono' }, a.username === null ? '(every client)' : a.username),
      el('td', { class: 'mono' }, a.pattern),
      el('td', {}, a.access),
      el('td', {}, a.allow ? 'allow' : 'deny'),
      el('td', {}, el('button', {
        type: 'button', class: 'small danger',
        onclick: () => act('/api/acl/delete', { id: a.id }, 'Rule deleted.'),
      }, 'Delete'))), 'No rules: every client may publish and subscribe to everything.');
    fillTable($('bans-table'), bans.items, (b) => el('tr', {},
      el('td', {}, b.kind === 'client_id' ? 'client id' : 'username'),
      el('td', { class: 'mono' }, b.value),
      el('td', {}, fmtTime(b.created)),
      el('td', {}, el('button', {
        type: 'button', class: 'small',
        onclick: () => act('/api/bans/delete', { kind: b.kind, value: b.value }, 'Ban lifted.'),
      }, 'Unban'))), 'Nobody is banned.');
    const fromConfig = session.password_source === 'config';
    $('admin-note').textContent = fromConfig
      ? 'The admin password is set by --admin-password (or MQTT5_BROKER_ADMIN_PASSWORD) and cannot be changed here.'
      : 'Other sessions are logged out when the password changes.';
    $('admin-change').disabled = fromConfig;
  }

  const TABS = {
    topics: loadTopics,
    messages: loadMessages,
    clients: loadClients,
    subscriptions: loadSubscriptions,
    qos: loadQos,
    retained: loadRetained,
    bridges: loadBridges,
    publish: async () => {},
    admin: loadAdmin,
  };
  let current = 'topics';
  let loads = 0;

  function selectTab(name) {
    current = name;
    for (const b of document.querySelectorAll('.tabs button')) {
      b.setAttribute('aria-selected', String(b.dataset.tab === name));
    }
    for (const t of Object.keys(TABS)) $(`tab-${t}`).hidden = t !== name;
    if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    refreshTab();
  }

  async function refreshTab() {
    const name = current;
    const section = $(`tab-${name}`);
    section.setAttribute('aria-busy', 'true');
    try {
      await TABS[name]();
      loads += 1;
      section.dataset.loaded = String(loads);
    } catch (e) {
      fail(e);
    } finally {
      section.removeAttribute('aria-busy');
    }
  }

  async function refreshAll() {
    await Promise.all([refreshStatus(), refreshTab()]);
  }

  // ------------------------------------------------------------------ timers

  let statusTimer = null, tabTimer = null;
  function startTimers() {
    stopTimers();
    statusTimer = setInterval(refreshStatus, 2000);
    const secs = Number($('auto-refresh').value);
    if (secs > 0) tabTimer = setInterval(refreshTab, secs * 1000);
  }
  function stopTimers() {
    clearInterval(statusTimer);
    clearInterval(tabTimer);
    statusTimer = tabTimer = null;
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    for (const b of document.querySelectorAll('.tabs button')) {
      b.addEventListener('click', () => selectTab(b.dataset.tab));
    }
    pager('topics', refreshTab);
    pager('clients', refreshTab);
    pager('subscriptions', refreshTab);
    pager('qos', refreshTab);
    pager('retained', refreshTab);

    const saved = localStorage.getItem('mqtt5-auto-refresh');
    if (saved !== null && [...$('auto-refresh').options].some((o) => o.value === saved)) {
      $('auto-refresh').value = saved;
    }
    $('auto-refresh').addEventListener('change', () => {
      localStorage.setItem('mqtt5-auto-refresh', $('auto-refresh').value);
      startTimers();
    });
    $('btn-refresh').addEventListener('click', refreshAll);
    $('btn-start').addEventListener('click', () => act('/api/server/start', undefined, 'MQTT server started.'));
    $('btn-stop').addEventListener('click', () => {
      if (confirm('Stop the MQTT server? Every client is disconnected.')) {
        act('/api/server/stop', undefined, 'MQTT server stopped.');
      }
    });
    $('btn-reload').addEventListener('click', async () => {
      try {
        const r = await api('/api/config/reload', { method: 'POST' });
        notice(reloadSummary(r));
        await refreshAll();
      } catch (e) {
        fail(e);
      }
    });
    $('btn-logout').addEventListener('click', async () => {
      try { await api('/api/logout', { method: 'POST' }); } catch (e) { /* logged out anyway */ }
      showLogin('Logged out.');
    });

    $('messages-form').addEventListener('submit', (ev) => { ev.preventDefault(); refreshTab(); });
    $('messages-limit').addEventListener('change', refreshTab);

    $('publish-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = {
        topic: $('publish-topic').value,
        payload: $('publish-payload').value,
        payload_hex: $('publish-hex').checked,
        qos: Number($('publish-qos').value),
        retain: $('publish-retain').checked,
      };
      const r = await act('/api/publish', body, (x) => `Published; it matched ${x.matched} subscription(s).`);
      $('publish-result').textContent = r ? `Published to ${body.topic}: matched ${r.matched} subscription(s).` : '';
    });

    $('user-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await act('/api/users', { name: $('user-name').value, password: $('user-password').value }, 'User added.');
      if (r) { $('user-name').value = ''; $('user-password').value = ''; }
    });
    $('user-passwd').addEventListener('click', async () => {
      if (!$('user-form').reportValidity()) return;
      const r = await act('/api/users/password', { name: $('user-name').value, password: $('user-password').value }, 'Password changed.');
      if (r) $('user-password').value = '';
    });
    $('acl-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await act('/api/acl', {
        username: $('acl-user').value || null,
        pattern: $('acl-pattern').value,
        access: $('acl-access').value,
        allow: $('acl-allow').value === 'true',
      }, 'Rule added.');
      if (r) $('acl-pattern').value = '';
    });
    $('ban-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await act('/api/bans', { kind: $('ban-kind').value, value: $('ban-value').value },
        (x) => `Banned; ${x.disconnected} connection(s) closed.`);
      if (r) $('ban-value').value = '';
    });
    $('admin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await act('/api/admin/password', { current: $('admin-current').value, new: $('admin-new').value }, 'Admin password changed.');
      if (r) { $('admin-current').value = ''; $('admin-new').value = ''; }
    });
    window.addEventListener('hashchange', () => {
      const tab = location.hash.slice(1);
      if (TABS[tab] && tab !== current) selectTab(tab);
    });
  }

  // ------------------------------------------------------------------ start

  (async () => {
    try {
      const s = await api('/api/session');
      csrf = s.csrf_token;
      await showApp();
    } catch (e) {
      showLogin('');
    }
  })();
})();
