// Registrations: the phones registered now, updated live from the event feed.
import { live } from './api.js';
import { el, fmtTime, liveBadge, table } from './ui.js';

export const title = 'Registrations';

export async function mount(root) {
  const { badge, stop: stopBadge } = liveBadge(live);
  const box = el('div', {}, el('p', { class: 'empty' }, 'Waiting for the live feed…'));
  root.append(el('h1', {}, 'Registrations', badge), box);
  const stop = live.subscribe('registrations', (items) => {
    box.replaceChildren(table({
      id: 'reg-table',
      caption: `${items.length} registration${items.length === 1 ? '' : 's'}`,
      columns: [{ label: 'Extension' }, { label: 'Contact' }, { label: 'Transport' }, { label: 'From address' }, { label: 'User agent' }, { label: 'Expires' }, { label: 'Node' }],
      rows: items.map((r) => el('tr', { 'data-extension': r.extension },
        el('th', { scope: 'row', class: 'mono' }, r.extension),
        el('td', { class: 'mono' }, r.contact),
        el('td', {}, r.transport),
        el('td', { class: 'mono' }, r.received),
        el('td', {}, r.user_agent),
        el('td', {}, fmtTime(r.expires_at)),
        el('td', {}, r.node))),
      empty: 'No phone is registered.',
    }));
  });
  return () => {
    stop();
    stopBadge();
  };
}
