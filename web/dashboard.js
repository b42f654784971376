// Dashboard: counters (registrations and calls up from the live feed, calls today from
// the CDRs), calls per hour over the last 24 hours (an SVG bar chart from the CDRs), and
// concurrent calls and registrations over the last 24 hours (SVG line charts from the
// nodes' per-minute samples, /stats/history).
import { api, live } from './api.js';
import { el, liveBadge, say } from './ui.js';

export const title = 'Dashboard';

const SVG = 'http://www.w3.org/2000/svg';
const HOUR = 3600;
// The chart reads at most this many CDRs (pages of 500).
const MAX_CDRS = 5000;

function stat(id, label) {
  return el('div', { class: 'stat' },
    el('div', { class: 'value', id }, '–'),
    el('div', { class: 'label' }, label));
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

async function cdrsSince(from) {
  const items = [];
  for (let offset = 0; offset < MAX_CDRS; offset += 500) {
    const page = await api('GET', `/cdrs?from=${from}&limit=500&offset=${offset}`);
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) break;
  }
  return items;
}

// Bars for 24 hourly buckets ending with the current hour.
function drawChart(container, cdrs, now) {
  const end = Math.floor(now / HOUR) * HOUR + HOUR;
  const start = end - 24 * HOUR;
  const counts = new Array(24).fill(0);
  for (const c of cdrs) {
    const i = Math.floor((c.started_at - start) / HOUR);
    if (i >= 0 && i < 24) counts[i] += 1;
  }
  const max = Math.max(1, ...counts);
  const W = 1100, H = 220, left = 32, bottom = 24, top = 10;
  const barW = (W - left) / 24;
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title chart-desc', id: 'calls-chart' });
  chart.append(svg('title', { id: 'chart-title' }, 'Calls per hour, last 24 hours'));
  const total = counts.reduce((a, b) => a + b, 0);
  chart.append(svg('desc', { id: 'chart-desc' }, `${total} calls; busiest hour had ${Math.max(...counts)}.`));
  chart.append(svg('line', { class: 'axis', x1: left, y1: H - bottom, x2: W, y2: H - bottom }));
  chart.append(svg('text', { x: 2, y: top + 8 }, String(max)));
  chart.append(svg('text', { x: 2, y: H - bottom }, '0'));
  counts.forEach((n, i) => {
    const h = ((H - bottom - top) * n) / max;
    const x = left + i * barW + 2;
    const hourStart = new Date((start + i * HOUR) * 1000);
    const bar = svg('rect', { class: 'bar', x, y: H - bottom - h, width: barW - 4, height: h });
    bar.append(svg('title', {}, `${hourStart.getHours()}:00 – ${n} call${n === 1 ? '' : 's'}`));
    chart.append(bar);
    if (i % 3 === 0) {
      chart.append(svg('text', { x, y: H - 6 }, `${String(hourStart.getHours()).padStart(2, '0')}h`));
    }
  });
  container.replaceChildren(chart);
}

// A line chart of `key` over the samples' 24 hours; the newest live value ends it.
function drawLine(container, { id, title, points, key, from, to, live }) {
  const W = 1100, H = 160, left = 32, bottom = 24, top = 10;
  const values = points.map((p) => [p.at, p[key]]);
  if (live !== null && live !== undefined) values.push([to, live]);
  const max = Math.max(1, ...values.map(([, v]) => v));
  const x = (t) => left + ((W - left) * (t - from)) / (to - from);
  const y = (v) => H - bottom - ((H - bottom - top) * v) / max;
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`, id });
  chart.append(svg('title', { id: `${id}-title` }, title));
  const peak = Math.max(0, ...values.map(([, v]) => v));
  const now = values.length ? values[values.length - 1][1] : 0;
  chart.append(svg('desc', { id: `${id}-desc` },
    values.length ? `Highest ${peak}; now ${now}.` : 'No samples yet.'));
  chart.append(svg('line', { class: 'axis', x1: left, y1: H - bottom, x2: W, y2: H - bottom }));
  chart.append(svg('text', { x: 2, y: top + 8 }, String(max)));
  chart.append(svg('text', { x: 2, y: H - bottom }, '0'));
  for (let h = 0; h <= 24; h += 3) {
    const t = from + h * HOUR;
    const d = new Date(t * 1000);
    chart.append(svg('text', { x: Math.min(x(t), W - 24), y: H - 6 }, `${String(d.getHours()).padStart(2, '0')}h`));
  }
  if (values.length) {
    // A step line: a count holds until the next sample.
    let path = `M ${x(values[0][0])} ${y(values[0][1])}`;
    for (let i = 1; i < values.length; i++) {
      path += ` H ${x(values[i][0])} V ${y(values[i][1])}`;
    }
    chart.append(svg('path', { class: 'line', d: path }));
  }
  container.replaceChildren(chart);
}

export async function mount(root) {
  const { badge, stop: stopBadge } = liveBadge(live);
  const chartBox = el('div', { class: 'chart' }, el('p', { class: 'empty' }, 'Loading…'));
  const concurrentBox = el('div', { class: 'chart' }, el('p', { class: 'empty' }, 'Loading…'));
  const registrationsBox = el('div', { class: 'chart' }, el('p', { class: 'empty' }, 'Loading…'));
  // The live counts end the sample lines.
  let liveRegistrations = null;
  let liveCalls = null;
  let samples = null;
  function drawSamples() {
    if (!samples) return;
    const common = { points: samples.points, from: samples.to - 24 * HOUR, to: samples.to };
    drawLine(concurrentBox, { ...common, id: 'concurrent-chart', title: 'Concurrent calls, last 24 hours', key: 'calls', live: liveCalls });
    drawLine(registrationsBox, { ...common, id: 'registrations-chart', title: 'Registrations, last 24 hours', key: 'registrations', live: liveRegistrations });
  }
  root.append(
    el('h1', {}, 'Dashboard', badge),
    el('div', { class: 'stats' },
      stat('stat-registrations', 'Registrations'),
      stat('stat-calls', 'Calls up now'),
      stat('stat-today', 'Calls today')),
    el('section', { class: 'card', 'aria-labelledby': 'chart-heading' },
      el('h2', { id: 'chart-heading' }, 'Calls per hour (last 24 hours)'),
      chartBox),
    el('section', { class: 'card', 'aria-labelledby': 'concurrent-heading' },
      el('h2', { id: 'concurrent-heading' }, 'Concurrent calls (last 24 hours)'),
      concurrentBox),
    el('section', { class: 'card', 'aria-labelledby': 'registrations-heading' },
      el('h2', { id: 'registrations-heading' }, 'Registrations (last 24 hours)'),
      registrationsBox),
  );

  let refreshing = false;
  async function refreshHistory() {
    if (refreshing) return;
    refreshing = true;
    try {
      const now = Math.floor(Date.now() / 1000);
      const midnight = new Date();
      midnight.setHours(0, 0, 0, 0);
      const today = await api('GET', `/cdrs?from=${Math.floor(midnight.getTime() / 1000)}&limit=1`);
      const todayBox = document.getElementById('stat-today');
      if (todayBox) todayBox.textContent = String(today.total);
      drawChart(chartBox, await cdrsSince(now - 24 * HOUR), now);
      samples = await api('GET', '/stats/history?hours=24&step=300');
      drawSamples();
    } catch (e) {
      say(`Cannot read the call history: ${e.message}`, true);
    } finally {
      refreshing = false;
    }
  }

  let lastCalls = null;
  const stops = [
    stopBadge,
    live.subscribe('registrations', (items) => {
      document.getElementById('stat-registrations').textContent = String(items.length);
      liveRegistrations = items.length;
      drawSamples();
    }),
    live.subscribe('calls', (items) => {
      document.getElementById('stat-calls').textContent = String(items.length);
      liveCalls = items.length;
      drawSamples();
      // A call that ended is a new CDR: redraw.
      if (lastCalls !== null && items.length < lastCalls) refreshHistory();
      lastCalls = items.length;
    }),
  ];
  await refreshHistory();
  return () => stops.forEach((s) => s());
}
