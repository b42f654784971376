// Recordings: recorded calls newest first, filtered by caller and callee, in pages; each
// plays in the page (the browser fetches the WAV with Range requests, so it can seek)
// and can be deleted (the call stays in the history). A recording another node made is
// listed with that node's name: its file is there.
import { api } from './api.js';
import { clear, el, fmtDuration, fmtTime, onFilter, pager, say, table } from './ui.js';

export const title = 'Recordings';

const PAGE = 50;

function kilobytes(n) {
  return `${Math.max(1, Math.round(n / 1024))} KB`;
}

export async function mount(root) {
  let offset = 0;
  const form = el('form', { id: 'rec-filter', class: 'inline-form card', role: 'search' },
    el('label', { for: 'rec-caller' }, 'Caller', el('input', { id: 'rec-caller', name: 'caller', size: 10 })),
    el('label', { for: 'rec-callee' }, 'Callee', el('input', { id: 'rec-callee', name: 'callee', size: 10 })),
    el('button', { type: 'submit' }, 'Filter'),
    el('button', { type: 'reset', class: 'secondary' }, 'Clear'));
  const player = el('div', { id: 'rec-player', class: 'card', hidden: true });
  const listBox = el('div');
  const pagerBox = el('div', { class: 'pager' });

  function play(r) {
    clear(player);
    const audio = el('audio', {
      id: 'rec-audio', controls: true, preload: 'auto',
      src: `/api/v1/recordings/${encodeURIComponent(r.id)}/audio`,
      'aria-label': `Recording of the call from ${r.caller} to ${r.callee}`,
    });
    player.append(el('p', {}, `Call from ${r.caller} to ${r.callee}, ${fmtTime(r.started_at)}`), audio);
    player.hidden = false;
    audio.play().catch((e) => say(`Cannot play the recording: ${e.message}`, true));
  }

  async function remove(r) {
    if (!window.confirm(`Delete the recording of the call from ${r.caller} to ${r.callee}? The call stays in the history.`)) return;
    try {
      await api('DELETE', `/recordings/${encodeURIComponent(r.id)}`);
      say(`Recording of ${r.caller} → ${r.callee} deleted.`);
      if (document.getElementById('rec-audio')?.src.includes(encodeURIComponent(r.id))) {
        clear(player);
        player.hidden = true;
      }
      load();
    } catch (e) {
      say(`Cannot delete the recording: ${e.message}`, true);
    }
  }

  async function load() {
    const q = new URLSearchParams();
    for (const key of ['caller', 'callee']) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    q.set('limit', String(PAGE));
    q.set('offset', String(offset));
    let page;
    try {
      page = await api('GET', '/recordings?' + q.toString());
    } catch (e) {
      say(`Cannot read the recordings: ${e.message}`, true);
      return;
    }
    clear(listBox);
    listBox.append(table({
      id: 'rec-table',
      caption: `${page.total} recording${page.total === 1 ? '' : 's'}`,
      columns: [{ label: 'Started' }, { label: 'Caller' }, { label: 'Callee' }, { label: 'Duration', num: true }, { label: 'File' }, { label: 'Actions' }],
      rows: page.items.map((r) => {
        const here = r.size_bytes !== null;
        return el('tr', { 'data-recording-id': r.id },
          el('th', { scope: 'row' }, fmtTime(r.started_at)),
          el('td', { class: 'mono' }, r.caller),
          el('td', { class: 'mono' }, r.callee),
          el('td', { class: 'num' }, fmtDuration(r.duration)),
          el('td', {}, here ? kilobytes(r.size_bytes) : `on node ${r.node_id}`),
          el('td', {},
            el('button', { type: 'button', class: 'play', disabled: !here, onclick: () => play(r), 'aria-label': `Play the call from ${r.caller} to ${r.callee}` }, 'Play'),
            ' ',
            el('button', { type: 'button', class: 'danger delete', disabled: !here, onclick: () => remove(r), 'aria-label': `Delete the recording of the call from ${r.caller} to ${r.callee}` }, 'Delete')));
      }),
      empty: 'No recorded calls. Calls are recorded when [calls] record is "mixed" or "stereo" in ringfort.toml.',
    }));
    pager(pagerBox, { offset, size: PAGE, total: page.total, go: (o) => { offset = o; load(); } });
  }

  onFilter(form, () => { offset = 0; load(); });

  root.append(el('h1', {}, 'Recordings'), form, player, listBox, pagerBox);
  await load();
  return () => {
    const audio = document.getElementById('rec-audio');
    if (audio) audio.pause();
  };
}
