// Dashboard: counters (registrations and calls up from the live feed, calls today from
// the CDRs) and calls per hour over the last 24 hours, drawn as an SVG bar chart.
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

export async function mount(root) {
  const { badge, stop: stopBadge } = liveBadge(live);
  const chartBox = el('div', { class: 'chart' }, el('p', { class: 'empty' }, 'Loading…'));
  root.append(
    el('h1', {}, 'Dashboard', badge),
    el('div', { class: 'stats' },
      stat('stat-registrations', 'Registrations'),
      stat('stat-calls', 'Calls up now'),
      stat('stat-today', 'Calls today')),
    el('section', { class: 'card', 'aria-labelledby': 'chart-heading' },
      el('h2', { id: 'chart-heading' }, 'Calls per hour (last 24 hours)'),
      chartBox),
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
    }),
    live.subscribe('calls', (items) => {
      document.getElementById('stat-calls').textContent = String(items.length);
      // A call that ended is a new CDR: redraw.
      if (lastCalls !== null && items.length < lastCalls) refreshHistory();
      lastCalls = items.length;
    }),
  ];
  await refreshHistory();
  return () => stops.forEach((s) => s());
}
