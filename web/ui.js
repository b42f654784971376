// Small DOM helpers shared by the pages. Text always goes in as text nodes, never as
// HTML, so nothing the API returns can inject markup.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (value === true) {
      node.setAttribute(key, '');
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

// A semantic table: caption, header cells with scope, one row per item (or one row
// saying the list is empty).
export function table({ id, caption, columns, rows, empty }) {
  const head = el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = el('tbody');
  if (rows.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, empty)));
  } else {
    body.append(...rows);
  }
  return el('table', { id }, el('caption', {}, caption), el('thead', {}, head), body);
}

export function fmtTime(unix) {
  if (unix === null || unix === undefined) return '';
  return new Date(unix * 1000).toLocaleString();
}

export function fmtDuration(secs) {
  secs = Math.max(0, Math.floor(secs));
  const h = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}

let statusTimer = null;

// A message in the status line (a live region: screen readers announce it).
export function say(message, isError = false) {
  const status = document.getElementById('status');
  status.textContent = message;
  status.classList.toggle('error', isError);
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => {
    status.textContent = '';
  }, isError ? 8000 : 4000);
}

export function liveBadge(live) {
  const badge = el('span', { class: 'live' });
  const stop = live.onState((up) => {
    badge.textContent = up ? '● live' : '○ reconnecting';
    badge.classList.toggle('off', !up);
  });
  return { badge, stop };
}

// "Newer, 1–50 of N, Older" under a paged list; `go(offset)` loads another page.
export function pager(box, { offset, size, total, go }) {
  clear(box);
  if (total === 0) return;
  box.append(
    el('button', { type: 'button', class: 'secondary', disabled: offset === 0, onclick: () => go(Math.max(0, offset - size)) }, 'Newer'),
    el('span', {}, `${offset + 1}–${Math.min(offset + size, total)} of ${total}`),
    el('button', { type: 'button', class: 'secondary', disabled: offset + size >= total, onclick: () => go(offset + size) }, 'Older'));
}

// A filter form: Filter (submit) and Clear (reset, once the fields are emptied) both
// call `restart`, which shows the first page of what the fields now select.
export function onFilter(form, restart) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    restart();
  });
  form.addEventListener('reset', () => setTimeout(restart, 0));
}
