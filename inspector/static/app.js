// The inspector's page: the migration list, or one migration's statechart, timeline, pre-copy rounds,
// connections and conditions. Data from /api (the CLI's --json), live updates from /api/.../events (SSE).
// No framework and nothing fetched from elsewhere: the page works with no internet.

const app = document.getElementById('app');
const SVG = 'http://www.w3.org/2000/svg';

const TERMINAL = new Set(['Complete', 'Validated', 'RolledBack', 'Cancelled', 'Failed']);
const MAIN_PATH = ['Pending', 'SocketInventory', 'Validating', 'DestinationPrewarm', 'PreCopyMemory', 'ZeroWindowArm', 'FinalFreeze',
  'OverlayHandoff', 'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying', 'Cutover', 'Complete'];
// Where each state is drawn: [column, row].
const LAYOUT = {
  Pending: [0, 0], SocketInventory: [1, 0], Validating: [2, 0], DestinationPrewarm: [3, 0],
  PreCopyMemory: [3, 1], ZeroWindowArm: [2, 1], FinalFreeze: [1, 1], OverlayHandoff: [0, 1],
  Restore: [0, 2], DisengageHold: [1, 2], TCPVerifying: [2, 2], ServiceVerifying: [3, 2],
  Cutover: [3, 3], Complete: [2, 3], Validated: [1, 3],
  RollingBack: [0, 4], RolledBack: [1, 4], Cancelled: [2, 4], Failed: [3, 4],
};
const BOX = { w: 190, h: 44, dx: 230, dy: 78, x0: 16, y0: 14 };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) e.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const ms = (v) => (v === undefined || v === null ? '–' : `${Math.round(v * 10) / 10} ms`);
const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
const age = (startMs) => {
  const s = Math.max(0, Math.round((Date.now() - startMs) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${s % 60}s` : `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
};
async function getJson(url) {
  const r = await fetch(url, { headers: { accept: 'application/json' } });
  const body = await r.json();
  if (!r.ok) throw new Error(body?.error?.message ?? `HTTP ${r.status}`);
  return body;
}

// ---------------------------------------------------------------- list

function listView() {
  const rows = new Map();
  const tbody = el('tbody');
  const empty = el('p', { class: 'muted', id: 'empty' }, 'No migrations yet. Start one with: podmotion migrate POD --to-node NODE');
  const live = el('p', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  const table = el('table', { class: 'list', id: 'migrations' },
    el('caption', { class: 'sr-only' }, 'Migrations, newest first'),
    el('thead', {}, el('tr', {}, ['Migration', 'Pod', 'From → To', 'Strategy', 'Phase', 'Age', 'Freeze window'].map((h) => el('th', { scope: 'col' }, h)))),
    tbody);
  app.replaceChildren(live, table, empty);

  const render = (m) => {
    const tr = el('tr', { 'data-id': m.id, 'data-phase': m.phase, class: TERMINAL.has(m.phase) ? 'ended' : 'running' },
      el('td', {}, el('a', { href: `/migrations/${encodeURIComponent(m.id)}` }, m.id)),
      el('td', {}, m.pod),
      el('td', {}, `${m.sourceNode} → ${m.destinationNode}`),
      el('td', {}, m.strategy),
      el('td', { class: `phase phase-${m.phase}` }, m.phase),
      el('td', { 'data-started': m.startedAtMs }, age(m.startedAtMs)),
      el('td', { class: 'freeze' }, ms(m.freezeMs)));
    const old = rows.get(m.id);
    if (old) old.replaceWith(tr);
    else tbody.prepend(tr);
    rows.set(m.id, tr);
    empty.hidden = rows.size > 0;
  };
  getJson('/api/migrations').then((r) => {
    for (const m of r.migrations) render(m);
    empty.hidden = rows.size > 0;
  }).catch((e) => live.textContent = `could not load the list: ${e.message}`);
  const es = new EventSource('/api/events');
  es.onopen = () => (live.textContent = 'live');
  es.onerror = () => (live.textContent = 'reconnecting…');
  es.addEventListener('phase', (ev) => render(JSON.parse(ev.data)));
  setInterval(() => {
    for (const td of tbody.querySelectorAll('td[data-started]')) td.textContent = age(Number(td.dataset.started));
  }, 1000);
}

// ---------------------------------------------------------------- one migration

function statechart(s) {
  const conds = new Map(s.conditions.map((c) => [c.type, c]));
  // The path taken: Pending, then every phase in the order it ran, then where it ended.
  const path = ['Pending', ...s.conditions.map((c) => c.type).filter((t) => t !== 'Pending')];
  if (TERMINAL.has(s.phase) && path.at(-1) !== s.phase) path.push(s.phase);
  const status = (state) => {
    if (state === s.phase) return TERMINAL.has(state) ? (state === 'Complete' || state === 'Validated' ? 'done' : 'ended') : 'current';
    const c = conds.get(state);
    if (!c) return 'idle';
    return c.status === 'True' ? 'visited' : c.status === 'False' ? 'failed' : 'current';
  };
  const center = (state) => {
    const [col, row] = LAYOUT[state];
    return [BOX.x0 + col * BOX.dx + BOX.w / 2, BOX.y0 + row * BOX.dy + BOX.h / 2];
  };
  const width = BOX.x0 * 2 + 3 * BOX.dx + BOX.w;
  const height = BOX.y0 * 2 + 4 * BOX.dy + BOX.h;
  const edges = svg('g', { class: 'edges' });
  const line = (a, b, cls) => {
    const [x1, y1] = center(a);
    const [x2, y2] = center(b);
    edges.append(svg('line', { x1, y1, x2, y2, class: cls, 'marker-end': 'url(#arrow)' }));
  };
  for (let i = 0; i + 1 < MAIN_PATH.length; i++) line(MAIN_PATH[i], MAIN_PATH[i + 1], 'edge');
  for (let i = 0; i + 1 < path.length; i++) if (LAYOUT[path[i]] && LAYOUT[path[i + 1]]) line(path[i], path[i + 1], 'edge taken');
  const states = svg('g', { class: 'states' });
  for (const state of Object.keys(LAYOUT)) {
    const [col, row] = LAYOUT[state];
    const x = BOX.x0 + col * BOX.dx;
    const y = BOX.y0 + row * BOX.dy;
    const st = status(state);
    const c = conds.get(state);
    const label = c?.durationMs !== undefined ? `${state} · ${ms(c.durationMs)}` : state;
    states.append(svg('g', { class: `state ${st}`, 'data-state': state, 'data-status': st, ...(st === 'current' || st === 'done' || st === 'ended' ? { 'aria-current': 'step' } : {}) },
      svg('title', {}, `${state}: ${st}${c ? ` — ${c.message}` : ''}`),
      svg('rect', { x, y, width: BOX.w, height: BOX.h, rx: 10 }),
      svg('text', { x: x + BOX.w / 2, y: y + BOX.h / 2 + 5, 'text-anchor': 'middle' }, label)));
  }
  const where = TERMINAL.has(s.phase) ? `ended in ${s.phase}` : `now in ${s.phase}`;
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Statechart of migration ${s.spec.id}: ${where}; path ${path.join(' → ')}`, class: 'chart', id: 'statechart' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' }))),
    edges, states);
}

function timeline(s) {
  const conds = s.conditions.filter((c) => c.startedAtMs);
  if (!conds.length) return el('p', { class: 'muted' }, 'No phase has started yet.');
  const t0 = Math.min(...conds.map((c) => c.startedAtMs));
  const end = (c) => (c.durationMs !== undefined ? c.startedAtMs + c.durationMs : c.status === 'Unknown' ? Date.now() : c.lastTransitionTimeMs);
  const t1 = Math.max(...conds.map(end), t0 + 1);
  const W = 900;
  const rowH = 22;
  const g = svg('svg', { viewBox: `0 0 ${W + 260} ${conds.length * rowH + 10}`, class: 'chart', role: 'img', 'aria-label': 'Phase timeline', id: 'timeline' });
  conds.forEach((c, i) => {
    const x = 170 + ((c.startedAtMs - t0) / (t1 - t0)) * W;
    const w = Math.max(2, ((end(c) - c.startedAtMs) / (t1 - t0)) * W);
    const y = 5 + i * rowH;
    g.append(svg('text', { x: 160, y: y + 14, 'text-anchor': 'end' }, c.type),
      svg('rect', { x, y: y + 3, width: w, height: rowH - 8, class: `bar ${c.status === 'True' ? 'ok' : c.status === 'False' ? 'bad' : 'run'}` }),
      svg('text', { x: x + w + 6, y: y + 14, class: 'small' }, c.durationMs !== undefined ? ms(c.durationMs) : c.status === 'Unknown' ? 'running' : ''));
  });
  return g;
}

function roundsChart(rounds) {
  if (!rounds.length) return el('p', { class: 'muted', id: 'rounds-empty' }, 'No pre-copy rounds (this strategy copies no memory ahead, or none has run yet).');
  const max = Math.max(...rounds.map((r) => r.bytes), 1);
  const W = 60;
  const H = 160;
  // At least as wide as ten rounds, so a short pre-copy is not drawn giant.
  const g = svg('svg', { viewBox: `0 0 ${Math.max(10, rounds.length) * (W + 16) + 80} ${H + 60}`, class: 'chart rounds', role: 'img', id: 'rounds',
    'aria-label': `Pre-copy: ${rounds.length} rounds; ${rounds.map((r) => `round ${r.round} ${mib(r.bytes)}`).join(', ')}` });
  rounds.forEach((r, i) => {
    const h = Math.max(2, (r.bytes / max) * H);
    const x = 40 + i * (W + 16);
    g.append(svg('rect', { x, y: 10 + H - h, width: W, height: h, class: 'bar ok' }, svg('title', {}, `round ${r.round}: ${mib(r.bytes)}, dirty ${mib(r.dirty)}/s`)),
      svg('text', { x: x + W / 2, y: H + 28, 'text-anchor': 'middle', class: 'small' }, `#${r.round} ${mib(r.bytes)}`),
      svg('text', { x: x + W / 2, y: H + 46, 'text-anchor': 'middle', class: 'small muted' }, `dirty ${mib(r.dirty)}/s`));
  });
  return g;
}

function table(caption, head, rows, id) {
  return el('table', { class: 'list', id },
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, c ?? '–'))))));
}

function migrationView(id, cancelOn) {
  let status;
  let cancelNote = '';
  const progress = new Map();
  const live = el('p', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  const render = () => {
    const s = status;
    const o = s.outcome ?? {};
    const pre = s.results?.PreCopyMemory;
    const rounds = pre?.rounds
      ? pre.rounds.map((r) => ({ round: r.round, bytes: r.bytes, dirty: r.dirtyBytesPerSec ?? 0 }))
      : [...progress.values()].map((p) => ({ round: p.round, bytes: p.dataRemainingBytes, dirty: p.dirtyMemoryRateBytes }));
    const tcp = s.results?.TCPVerifying;
    const summary = el('dl', { class: 'summary' },
      el('dt', {}, 'Phase'), el('dd', { id: 'phase', class: `big phase-${s.phase}`, 'data-phase': s.phase }, s.phase),
      el('dt', {}, 'Freeze window'), el('dd', { id: 'freeze', class: 'big' }, ms(o.freezeMs)),
      el('dt', {}, 'Pod'), el('dd', {}, s.spec.pod),
      el('dt', {}, 'Nodes'), el('dd', {}, `${s.spec.sourceNode} → ${s.spec.destinationNode}`),
      el('dt', {}, 'Strategy'), el('dd', {}, s.spec.strategy),
      el('dt', {}, 'Started'), el('dd', {}, new Date(s.startedAtMs).toISOString()),
      ...(s.error ? [el('dt', {}, 'Error'), el('dd', { class: 'bad' }, `${s.error.phase}: ${s.error.message}`)] : []));
    const conns = tcp
      ? [table('Connections', ['Connections', 'Preserved', 'seq_delta max', 'RST'], [[tcp.connections, tcp.preserved, tcp.seqDeltaMax, tcp.rst]], 'connections'),
        ...(tcp.perConnection?.length ? [table('Per connection (sample)', ['Local', 'Remote', 'seq_delta', 'Kept'],
          tcp.perConnection.map((c) => [c.local, c.remote, c.seqDelta, c.preserved ? 'yes' : 'no']), 'per-connection')] : [])]
      : [el('p', { class: 'muted', id: 'connections' }, `${s.results?.SocketInventory?.connections ?? '?'} connections at the start; verified after the restore.`)];
    const cancel = cancelOn && !TERMINAL.has(s.phase)
      ? el('form', { id: 'cancel', class: 'cancel' }, el('label', { for: 'token' }, 'Token'), el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true }),
        el('button', { type: 'submit' }, 'Cancel migration'))
      : undefined;
    // What the last cancel said stays on the page as the phases change.
    const note = cancelOn ? el('p', { id: 'cancel-result', role: 'status' }, cancelNote) : undefined;
    app.replaceChildren(...[
      el('h1', {}, 'Migration ', el('code', {}, s.spec.id)), live, summary, cancel, note,
      el('section', { 'aria-labelledby': 'h-chart' }, el('h2', { id: 'h-chart' }, 'Statechart'), statechart(s)),
      el('section', { 'aria-labelledby': 'h-time' }, el('h2', { id: 'h-time' }, 'Timeline'), timeline(s)),
      el('section', { 'aria-labelledby': 'h-pre' }, el('h2', { id: 'h-pre' }, 'Pre-copy rounds'), roundsChart(rounds)),
      el('section', { 'aria-labelledby': 'h-conn' }, el('h2', { id: 'h-conn' }, 'Connections'), ...conns),
      el('section', { 'aria-labelledby': 'h-cond' }, el('h2', { id: 'h-cond' }, 'Conditions'),
        table('Conditions, in the order the phases ran', ['Type', 'Status', 'Reason', 'Duration', 'Since', 'Message'],
          s.conditions.map((c) => [c.type, c.status, c.reason, c.durationMs !== undefined ? ms(c.durationMs) : '', new Date(c.lastTransitionTimeMs).toISOString(), c.message]), 'conditions')),
      el('p', {}, el('a', { href: '/' }, '← All migrations'))].filter(Boolean));
    cancel?.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await fetch(`/api/migrations/${encodeURIComponent(id)}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${cancel.querySelector('#token').value}` } });
      const body = await r.json();
      cancelNote = r.ok ? body.message : body.error.message;
      const out = document.getElementById('cancel-result');
      if (out) out.textContent = cancelNote;
    });
  };
  getJson(`/api/migrations/${encodeURIComponent(id)}`).then((s) => {
    status = s;
    render();
    const es = new EventSource(`/api/migrations/${encodeURIComponent(id)}/events`);
    es.onopen = () => (live.textContent = 'live');
    es.onerror = () => (live.textContent = 'reconnecting…');
    es.addEventListener('phase', (ev) => {
      const next = JSON.parse(ev.data);
      if (next.updatedAtMs >= status.updatedAtMs) {
        status = next;
        render();
      }
    });
    es.addEventListener('progress', (ev) => {
      const p = JSON.parse(ev.data);
      progress.set(p.round, p);
      if (!status.results?.PreCopyMemory) render();
    });
  }).catch((e) => app.replaceChildren(el('p', { class: 'bad' }, `could not load migration ${id}: ${e.message}`)));
}

if (app?.dataset.view === 'list') listView();
else if (app?.dataset.view === 'migration') migrationView(app.dataset.id, app.dataset.cancel === 'on');
