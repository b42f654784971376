// Extensions: the list, adding one (a generated SIP password is shown once), deleting,
// do-not-disturb, call forwarding, and a self-service login for the extension's user (a
// `user` account owning it; its generated password is shown once).
import { api } from './api.js';
import { clear, el, say, table } from './ui.js';

export const title = 'Extensions';

const PAGE = 50;

export async function mount(root) {
  let offset = 0;
  const secretBox = el('div', { id: 'ext-created', 'aria-live': 'polite' });
  const listBox = el('div');
  const pager = el('div', { class: 'pager' });

  const form = el('form', { id: 'ext-form', class: 'inline-form card' },
    el('label', { for: 'ext-number' }, 'Number',
      el('input', { id: 'ext-number', name: 'number', required: true, maxlength: 32, size: 8, autocomplete: 'off' })),
    el('label', { for: 'ext-name' }, 'Name',
      el('input', { id: 'ext-name', name: 'name', size: 24 })),
    el('button', { type: 'submit' }, 'Add extension'));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const number = form.elements.number.value.trim();
    const name = form.elements.name.value.trim();
    try {
      const created = await api('POST', '/extensions', { number, name });
      form.reset();
      showSecret(created.extension.number, created.password);
      say(`Extension ${number} added.`);
      await load();
    } catch (e) {
      say(`Cannot add extension ${number}: ${e.message}`, true);
    }
  });

  // A generated secret, shown once: `what` says whose, `id` names the output.
  function showOnce(what, value, id, number) {
    clear(secretBox);
    if (!value) return;
    secretBox.append(el('div', { class: 'secret' },
      el('p', {}, `${what} (shown only this once):`),
      el('p', {}, el('output', { id, 'data-number': number }, value)),
      el('button', { type: 'button', class: 'secondary', onclick: () => clear(secretBox) }, 'Done, hide it')));
  }

  function showSecret(number, password) {
    showOnce(`SIP password of extension ${number}; set it in the phone now`, password, 'ext-password', number);
  }

  async function change(number, body, what) {
    try {
      await api('PUT', `/extensions/${encodeURIComponent(number)}`, body);
      say(`Extension ${number}: ${what}.`);
      return true;
    } catch (e) {
      say(`Extension ${number}: ${e.message}`, true);
      return false;
    }
  }

  function row(ext) {
    const dnd = el('input', { type: 'checkbox', id: `dnd-${ext.number}`, checked: ext.dnd });
    dnd.addEventListener('change', async () => {
      const ok = await change(ext.number, { dnd: dnd.checked }, dnd.checked ? 'do not disturb on' : 'do not disturb off');
      if (!ok) dnd.checked = !dnd.checked;
    });
    const fwd = el('input', { id: `fwd-${ext.number}`, size: 8, value: ext.forward_always || '', placeholder: 'none' });
    const fwdForm = el('form', { class: 'inline-form' },
      el('label', { for: `fwd-${ext.number}`, class: 'visually-hidden' }, `Forward all calls of ${ext.number} to`),
      fwd,
      el('button', { type: 'submit', class: 'secondary' }, 'Set'));
    fwdForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const target = fwd.value.trim();
      await change(ext.number, { forward_always: target === '' ? null : target },
        target === '' ? 'forwarding off' : `forwarding to ${target}`);
    });
    const login = el('input', { id: `login-${ext.number}`, size: 10, autocomplete: 'off', required: true, placeholder: 'login name' });
    const loginForm = el('form', { class: 'inline-form' },
      el('label', { for: `login-${ext.number}`, class: 'visually-hidden' }, `Login name for the user of ${ext.number}`),
      login,
      el('button', { type: 'submit', class: 'secondary' }, 'Add login'));
    loginForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = login.value.trim();
      try {
        const made = await api('POST', `/extensions/${encodeURIComponent(ext.number)}/account`, { name });
        loginForm.reset();
        showOnce(`Password of ${made.name}, the self-service login of extension ${ext.number}`, made.password, 'ext-login-password', ext.number);
        say(`Login ${made.name} added for extension ${ext.number}.`);
      } catch (e) {
        say(`Cannot add login ${name}: ${e.message}`, true);
      }
    });
    const del = el('button', { type: 'button', class: 'danger', 'aria-label': `Delete extension ${ext.number}` }, 'Delete');
    del.addEventListener('click', async () => {
      if (!window.confirm(`Delete extension ${ext.number}? Its phones stop working.`)) return;
      try {
        await api('DELETE', `/extensions/${encodeURIComponent(ext.number)}`);
        say(`Extension ${ext.number} deleted.`);
        await load();
      } catch (e) {
        say(`Cannot delete ${ext.number}: ${e.message}`, true);
      }
    });
    return el('tr', { 'data-number': ext.number },
      el('th', { scope: 'row', class: 'mono' }, ext.number),
      el('td', {}, ext.name),
      el('td', {}, el('label', { for: `dnd-${ext.number}`, class: 'visually-hidden' }, `Do not disturb for ${ext.number}`), dnd),
      el('td', {}, fwdForm),
      el('td', {}, loginForm),
      el('td', {}, del));
  }

  async function load() {
    const page = await api('GET', `/extensions?limit=${PAGE}&offset=${offset}`);
    clear(listBox);
    listBox.append(table({
      id: 'ext-table',
      caption: `${page.total} extension${page.total === 1 ? '' : 's'}`,
      columns: [{ label: 'Number' }, { label: 'Name' }, { label: 'Do not disturb' }, { label: 'Forward all calls to' }, { label: 'User login' }, { label: 'Actions' }],
      rows: page.items.map(row),
      empty: 'No extensions yet: add the first above.',
    }));
    clear(pager);
    if (page.total > PAGE) {
      pager.append(
        el('button', { type: 'button', class: 'secondary', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, 'Previous'),
        el('span', {}, `${offset + 1}–${Math.min(offset + PAGE, page.total)} of ${page.total}`),
        el('button', { type: 'button', class: 'secondary', disabled: offset + PAGE >= page.total, onclick: () => { offset += PAGE; load(); } }, 'Next'));
    }
  }

  root.append(
    el('h1', {}, 'Extensions'),
    el('h2', {}, 'Add an extension'),
    form,
    secretBox,
    listBox,
    pager);
  await load();
  return null;
}
