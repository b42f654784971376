// Live calls: the calls in progress, updated from the event feed, each with a button that
// hangs it up (DELETE /api/v1/calls/{id}).
import { api, live } from './api.js';
import { el, fmtDuration, liveBadge, say, table } from './ui.js';

export const title = 'Live calls';

export async function mount(root) {
  const { badge, stop: stopBadge } = liveBadge(live);
  const box = el('div', {}, el('p', { class: 'empty' }, 'Waiting for the live feed…'));
  root.append(el('h1', {}, 'Live calls', badge), box);
  let items = [];

  async function hangUp(call, button) {
    button.disabled = true;
    try {
      await api('DELETE', `/calls/${encodeURIComponent(call.id)}`);
      say(`Call ${call.caller} → ${call.callee} hung up.`);
    } catch (e) {
      button.disabled = false;
      say(`Cannot hang up: ${e.message}`, true);
    }
  }

  // Duration cells and when each call's clock started, ticked in place every second.
  let clocks = [];

  function render() {
    const now = Date.now() / 1000;
    clocks = [];
    box.replaceChildren(table({
      id: 'calls-table',
      caption: `${items.length} call${items.length === 1 ? '' : 's'} in progress`,
      columns: [{ label: 'Caller' }, { label: 'Callee' }, { label: 'State' }, { label: 'Duration', num: true }, { label: 'Node' }, { label: 'Action' }],
      rows: items.map((c) => {
        const button = el('button', { type: 'button', class: 'danger hangup', 'aria-label': `Hang up the call from ${c.caller} to ${c.callee}` }, 'Hang up');
        button.addEventListener('click', () => hangUp(c, button));
        const since = c.answered_at ?? c.started_at;
        const duration = el('td', { class: 'num' }, fmtDuration(now - since));
        clocks.push([duration, since]);
        return el('tr', { 'data-call-id': c.id, 'data-caller': c.caller, 'data-callee': c.callee },
          el('th', { scope: 'row', class: 'mono' }, c.caller),
          el('td', { class: 'mono' }, c.callee),
          el('td', {}, el('span', { class: `badge ${c.state}` }, c.state)),
          duration,
          el('td', {}, c.node),
          el('td', {}, button));
      }),
      empty: 'No calls in progress.',
    }));
  }

  const stop = live.subscribe('calls', (calls) => {
    items = calls;
    render();
  });
  // Only the numbers change: the rows (and a focused button) stay.
  const timer = setInterval(() => {
    const now = Date.now() / 1000;
    for (const [cell, since] of clocks) cell.textContent = fmtDuration(now - since);
  }, 1000);
  return () => {
    stop();
    stopBadge();
    clearInterval(timer);
  };
}
