// Settings: this node (status), the cluster (nodes and floating IPs) and the effective
// configuration, read-only: the configuration lives in ringfort.toml (or RINGFORT_*
// variables) and takes effect at the next start; the dialplan is edited on its own page.
import { api } from './api.js';
import { el, fmtDuration, fmtTime, say, table } from './ui.js';

export const title = 'Settings';

function value(v) {
  if (Array.isArray(v)) return v.length ? v.map(value).join(', ') : '(none)';
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  if (v === '') return '(empty)';
  return String(v);
}

function nodeCard(status) {
  const row = (label, text) => [el('dt', {}, label), el('dd', {}, text)];
  return el('section', { class: 'card', 'aria-labelledby': 'node-heading' },
    el('h2', { id: 'node-heading' }, 'This node'),
    el('dl', { class: 'facts', id: 'node-facts' },
      row('Node', status.node_id),
      row('Version', status.version),
      row('Up for', fmtDuration(status.uptime_secs)),
      row('Started', fmtTime(status.started_at)),
      row('Database', status.database),
      row('Extensions', String(status.extensions)),
      row('Registrations', String(status.registrations)),
      row('Calls up (cluster)', String(status.active_calls))));
}

function clusterCard(cluster) {
  const nodes = table({
    id: 'cluster-nodes',
    caption: cluster.enabled ? 'Nodes' : 'Nodes (this node runs alone: [cluster] enabled = false)',
    columns: [{ label: 'Node' }, { label: 'Health' }, { label: 'Heartbeat' }, { label: 'SIP address' }, { label: 'Media address' }, { label: 'Version' }, { label: 'Calls', num: true }],
    rows: cluster.nodes.map((n) => el('tr', {},
      el('th', { scope: 'row' }, n.node_id),
      el('td', { class: n.healthy ? 'ok' : 'bad' }, n.healthy ? 'healthy' : 'down'),
      el('td', {}, `${(n.heartbeat_age_ms / 1000).toFixed(1)} s ago`),
      el('td', { class: 'mono' }, n.sip_address || '–'),
      el('td', { class: 'mono' }, n.media_address || '–'),
      el('td', {}, n.version),
      el('td', { class: 'num' }, String(n.calls_active)))),
    empty: 'No node has sent a heartbeat.',
  });
  const vips = table({
    id: 'cluster-vips',
    caption: 'Floating IPs',
    columns: [{ label: 'Address' }, { label: 'Holder' }, { label: 'Term', num: true }, { label: 'Lease' }],
    rows: cluster.vips.map((v) => el('tr', {},
      el('th', { scope: 'row', class: 'mono' }, v.vip),
      el('td', {}, v.state === 'held' ? v.holder : `– (last ${v.holder})`),
      el('td', { class: 'num' }, String(v.term)),
      el('td', {}, v.state === 'held' ? `held, ${(v.remaining_ms / 1000).toFixed(1)} s left` : v.state))),
    empty: 'No floating IP has been taken.',
  });
  return el('section', { class: 'card', 'aria-labelledby': 'cluster-heading' },
    el('h2', { id: 'cluster-heading' }, 'Cluster'), nodes, vips);
}

function configCard(config) {
  const sections = Object.entries(config).map(([name, keys]) => table({
    id: `config-${name}`,
    caption: `[${name}]`,
    columns: [{ label: 'Key' }, { label: 'Value' }],
    rows: Object.entries(keys).map(([k, v]) => el('tr', {},
      el('th', { scope: 'row', class: 'mono' }, k),
      el('td', { class: 'mono' }, value(v)))),
    empty: 'No keys.',
  }));
  return el('section', { class: 'card', 'aria-labelledby': 'config-heading' },
    el('h2', { id: 'config-heading' }, 'Configuration'),
    el('p', {}, 'The values this node runs with (ringfort.toml, defaults and RINGFORT_* variables). Change them in the file and restart the node; the dialplan is edited on its own page and applies at once.'),
    ...sections);
}

export async function mount(root) {
  root.append(el('h1', {}, 'Settings'));
  try {
    const [status, cluster, settings] = await Promise.all([
      api('GET', '/status'), api('GET', '/cluster'), api('GET', '/settings')]);
    root.append(nodeCard(status), clusterCard(cluster), configCard(settings.config));
  } catch (e) {
    say(`Cannot read the settings: ${e.message}`, true);
  }
  return () => {};
}
