// Call history: CDRs newest first, filtered by caller, callee, outcome and day, in pages,
// with a CSV export of the same filter.
import { api } from './api.js';
import { clear, el, fmtDuration, fmtTime, onFilter, pager, say, table } from './ui.js';

export const title = 'Call history';

const PAGE = 50;
const DISPOSITIONS = ['answered', 'busy', 'no-answer', 'cancelled', 'failed'];

export async function mount(root) {
  let offset = 0;
  const form = el('form', { id: 'cdr-filter', class: 'inline-form card', role: 'search' },
    el('label', { for: 'cdr-caller' }, 'Caller', el('input', { id: 'cdr-caller', name: 'caller', size: 10 })),
    el('label', { for: 'cdr-callee' }, 'Callee', el('input', { id: 'cdr-callee', name: 'callee', size: 10 })),
    el('label', { for: 'cdr-disposition' }, 'Outcome',
      el('select', { id: 'cdr-disposition', name: 'disposition' },
        el('option', { value: '' }, 'any'),
        DISPOSITIONS.map((d) => el('option', { value: d }, d)))),
    el('label', { for: 'cdr-from' }, 'From day', el('input', { id: 'cdr-from', name: 'from', type: 'date' })),
    el('label', { for: 'cdr-to' }, 'To day (inclusive)', el('input', { id: 'cdr-to', name: 'to', type: 'date' })),
    el('button', { type: 'submit' }, 'Filter'),
    el('button', { type: 'reset', class: 'secondary' }, 'Clear'));
  const csv = el('a', { id: 'cdr-csv', href: '#', download: 'cdrs.csv' }, 'Download as CSV');
  const listBox = el('div');
  const pagerBox = el('div', { class: 'pager' });

  function query() {
    const q = new URLSearchParams();
    const f = form.elements;
    for (const key of ['caller', 'callee', 'disposition']) {
      if (f[key].value.trim()) q.set(key, f[key].value.trim());
    }
    // Days in the browser's time zone, as unix seconds on the start time.
    if (f.from.value) q.set('from', String(Math.floor(new Date(f.from.value + 'T00:00').getTime() / 1000)));
    if (f.to.value) {
      const end = new Date(f.to.value + 'T00:00');
      end.setDate(end.getDate() + 1);
      q.set('to', String(Math.floor(end.getTime() / 1000)));
    }
    return q;
  }

  async function load() {
    const q = query();
    const csvQuery = new URLSearchParams(q);
    csvQuery.set('format', 'csv');
    csv.href = '/api/v1/cdrs?' + csvQuery.toString();
    q.set('limit', String(PAGE));
    q.set('offset', String(offset));
    let page;
    try {
      page = await api('GET', '/cdrs?' + q.toString());
    } catch (e) {
      say(`Cannot read the call history: ${e.message}`, true);
      return;
    }
    clear(listBox);
    listBox.append(table({
      id: 'cdr-table',
      caption: `${page.total} call${page.total === 1 ? '' : 's'}`,
      columns: [{ label: 'Started' }, { label: 'Caller' }, { label: 'Callee' }, { label: 'Outcome' }, { label: 'Duration', num: true }, { label: 'Hung up by' }, { label: 'Node' }],
      rows: page.items.map((c) => el('tr', { 'data-cdr-id': c.id },
        el('th', { scope: 'row' }, fmtTime(c.started_at)),
        el('td', { class: 'mono' }, c.caller),
        el('td', { class: 'mono' }, c.callee),
        el('td', {}, c.disposition),
        el('td', { class: 'num' }, fmtDuration(c.duration)),
        el('td', {}, c.hangup_leg),
        el('td', {}, c.node))),
      empty: 'No calls match.',
    }));
    pager(pagerBox, { offset, size: PAGE, total: page.total, go: (o) => { offset = o; load(); } });
  }

  onFilter(form, () => { offset = 0; load(); });

  root.append(el('h1', {}, 'Call history'), form, el('p', {}, csv), listBox, pagerBox);
  await load();
  return null;
}
