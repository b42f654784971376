// Voicemail: pick a mailbox, list its messages (new first, in bold), play one in the page
// (starting to play marks it heard, as the phone menu does), mark it new again or
// delete it. The list follows the live feed's `voicemail` events. `messageList` is the
// component the self-service page shows for the user's own mailbox.
import { api, live } from './api.js';
import { el, fmtDuration, fmtTime, liveBadge, say, table } from './ui.js';

export const title = 'Voicemail';

const path = (mailbox) => `/voicemail/${encodeURIComponent(mailbox)}/messages`;

// One mailbox's messages with a player. Returns { node, stop }.
export function messageList(mailbox) {
  const listBox = el('div', { id: 'vm-messages' }, el('p', { class: 'empty' }, 'Loading…'));
  const nowPlaying = el('p', { id: 'vm-now-playing', class: 'plan-caret' }, 'Choose a message to play.');
  const audio = el('audio', { id: 'vm-audio', controls: true, preload: 'none', 'aria-describedby': 'vm-now-playing' });
  const player = el('div', { class: 'card vm-player' },
    el('h2', { class: 'visually-hidden' }, 'Player'), nowPlaying, audio);
  let messages = [];
  let playing = null;
  let stopped = false;

  async function setFolder(m, folder) {
    try {
      await api('PUT', `${path(mailbox)}/${encodeURIComponent(m.id)}`, { folder });
      m.folder = folder;
      render();
      return true;
    } catch (e) {
      say(`Message from ${m.caller || 'unknown'}: ${e.message}`, true);
      return false;
    }
  }

  function play(m) {
    playing = m;
    audio.src = `/api/v1${path(mailbox)}/${encodeURIComponent(m.id)}/audio`;
    audio.dataset.messageId = m.id;
    nowPlaying.textContent = `Playing the message from ${m.caller || 'unknown'} of ${fmtTime(m.received_at)} (${fmtDuration(m.duration_ms / 1000)}).`;
    audio.play().catch((e) => say(`Cannot play: ${e.message}`, true));
  }

  // Heard once it really plays, not when the browser merely fetches it.
  audio.addEventListener('play', () => {
    if (playing && playing.folder === 'new') setFolder(playing, 'old');
  });

  async function remove(m) {
    const who = m.caller || 'an unknown caller';
    if (!window.confirm(`Delete the message from ${who} of ${fmtTime(m.received_at)}? It cannot be undone.`)) return;
    try {
      await api('DELETE', `${path(mailbox)}/${encodeURIComponent(m.id)}`);
      if (playing && playing.id === m.id) {
        audio.pause();
        audio.removeAttribute('src');
        delete audio.dataset.messageId;
        playing = null;
        nowPlaying.textContent = 'Choose a message to play.';
      }
      say(`Message from ${who} deleted.`);
      await load();
    } catch (e) {
      say(`Cannot delete: ${e.message}`, true);
    }
  }

  function row(m) {
    const who = m.caller_name ? `${m.caller_name} (${m.caller})` : (m.caller || 'unknown');
    const isNew = m.folder === 'new';
    return el('tr', { 'data-message-id': m.id, 'data-folder': m.folder, class: isNew ? 'vm-new' : null },
      el('th', { scope: 'row' }, who, isNew ? el('span', { class: 'badge ringing vm-badge' }, 'new') : null),
      el('td', {}, fmtTime(m.received_at)),
      el('td', { class: 'num' }, fmtDuration(m.duration_ms / 1000)),
      el('td', {},
        el('button', { type: 'button', class: 'vm-play', 'aria-label': `Play the message from ${who}`, onclick: () => play(m) }, 'Play'),
        ' ',
        el('button', {
          type: 'button', class: 'secondary vm-mark',
          'aria-label': isNew ? `Mark the message from ${who} heard` : `Mark the message from ${who} new`,
          onclick: () => setFolder(m, isNew ? 'old' : 'new'),
        }, isNew ? 'Mark heard' : 'Mark new'),
        ' ',
        el('button', { type: 'button', class: 'danger vm-delete', 'aria-label': `Delete the message from ${who}`, onclick: () => remove(m) }, 'Delete')));
  }

  function render() {
    // New first (as the API sends them); a message marked here moves at once.
    const sorted = [...messages.filter((m) => m.folder === 'new'), ...messages.filter((m) => m.folder !== 'new')];
    const fresh = messages.filter((m) => m.folder === 'new').length;
    listBox.replaceChildren(table({
      id: 'vm-table',
      caption: `Mailbox ${mailbox}: ${fresh} new, ${messages.length - fresh} heard`,
      columns: [{ label: 'From' }, { label: 'Received' }, { label: 'Length', num: true }, { label: 'Actions' }],
      rows: sorted.map(row),
      empty: 'No messages.',
    }));
  }

  async function load() {
    try {
      messages = await api('GET', path(mailbox));
      if (!stopped) render();
    } catch (e) {
      say(`Cannot read mailbox ${mailbox}: ${e.message}`, true);
    }
  }

  const unsubscribe = live.subscribe('voicemail', (ev) => {
    if (ev.mailbox === null || ev.mailbox === mailbox) load();
  });
  load();
  return {
    node: el('div', {}, player, listBox),
    stop() {
      stopped = true;
      unsubscribe();
      audio.pause();
    },
  };
}

export async function mount(root) {
  const { badge, stop: stopBadge } = liveBadge(live);
  const picker = el('select', { id: 'vm-mailbox' });
  const form = el('form', { class: 'inline-form card' },
    el('label', { for: 'vm-mailbox' }, 'Mailbox', picker));
  form.addEventListener('submit', (ev) => ev.preventDefault());
  const box = el('div');
  root.append(el('h1', {}, 'Voicemail', badge), form, box);
  let current = null;
  let list = null;

  function show(mailbox) {
    if (list) list.stop();
    list = null;
    current = mailbox;
    box.replaceChildren();
    if (!mailbox) {
      box.append(el('p', { class: 'empty' }, 'No mailboxes: add an extension first.'));
      return;
    }
    list = messageList(mailbox);
    box.append(list.node);
  }

  async function loadBoxes() {
    const boxes = await api('GET', '/voicemail');
    const chosen = current ?? (boxes.find((b) => b.new > 0) || boxes[0] || {}).mailbox ?? null;
    picker.replaceChildren(...boxes.map((b) => el('option', { value: b.mailbox, selected: b.mailbox === chosen },
      `${b.mailbox}${b.name ? ' ' + b.name : ''}: ${b.new} new, ${b.old} heard`)));
    if (chosen !== current) show(chosen);
  }

  picker.addEventListener('change', () => show(picker.value));
  // The counts in the picker follow the feed too.
  const unsubscribe = live.subscribe('voicemail', () => loadBoxes().catch(() => {}));
  await loadBoxes();
  return () => {
    unsubscribe();
    stopBadge();
    if (list) list.stop();
  };
}
