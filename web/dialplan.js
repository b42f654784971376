// Dialplan: the files of the node's dialplan folder in a plain text editor with line
// numbers. Validate checks every edited file against the rest of the folder (nothing is
// written); Save writes the file shown, only if the whole folder still loads, and the
// node then routes new calls by it. Mistakes are listed as "file:line: reason"; each
// one moves the caret to its line.
import { api } from './api.js';
import { el, say } from './ui.js';

export const title = 'Dialplan';

const NAME_RULE = /^[A-Za-z0-9_-]+\.toml$/;

export async function mount(root) {
  const { files } = await api('GET', '/dialplans');
  // name -> { saved, text }: edits survive switching files until saved.
  const state = new Map(files.map((f) => [f.name, { saved: f.text, text: f.text }]));
  let current = files.length ? files[0].name : null;

  const list = el('ul', { class: 'plan-files', id: 'plan-files' });
  const gutter = el('pre', { class: 'plan-gutter', 'aria-hidden': 'true' });
  const text = el('textarea', {
    id: 'plan-text', class: 'plan-text', spellcheck: 'false', wrap: 'off',
    autocomplete: 'off', autocapitalize: 'off', 'aria-describedby': 'plan-caret',
  });
  const label = el('label', { for: 'plan-text', id: 'plan-label' });
  const caret = el('p', { id: 'plan-caret', class: 'plan-caret' });
  const validateButton = el('button', { type: 'button', id: 'plan-validate', class: 'secondary' }, 'Validate');
  const saveButton = el('button', { type: 'button', id: 'plan-save' }, 'Save');
  const result = el('div', { id: 'plan-result', role: 'status', 'aria-live': 'polite' });
  const newName = el('input', { id: 'plan-new-name', placeholder: 'sales.toml', pattern: '[A-Za-z0-9_-]+\\.toml' });
  const newForm = el('form', { id: 'plan-new', class: 'inline-form' },
    el('label', { for: 'plan-new-name' }, 'New file', newName),
    el('button', { type: 'submit', class: 'secondary' }, 'Add'));
  const editor = el('div', { class: 'plan-editor' }, gutter, text);

  root.append(
    el('h1', {}, 'Dialplan'),
    el('p', {}, 'Every file of the dialplan folder is loaded and merged. Saving checks the whole folder first; the node then routes new calls by it (calls in progress keep their plan).'),
    el('div', { class: 'plan-layout' },
      el('nav', { 'aria-label': 'Dialplan files', class: 'card' }, el('h2', {}, 'Files'), list, newForm),
      el('div', { class: 'plan-main' },
        // The buttons and the verdict above the editor: in view while editing, never
        // under the status line fixed at the bottom of the window.
        el('p', { class: 'inline-form' }, validateButton, saveButton),
        result,
        label, editor, caret)));

  function lineCount(value) {
    return value.split('\n').length;
  }

  function drawGutter() {
    const lines = lineCount(text.value);
    gutter.textContent = Array.from({ length: lines }, (_, i) => String(i + 1)).join('\n');
    gutter.scrollTop = text.scrollTop;
  }

  function drawCaret() {
    const before = text.value.slice(0, text.selectionStart);
    const line = lineCount(before);
    const column = before.length - before.lastIndexOf('\n');
    caret.textContent = `Line ${line} of ${lineCount(text.value)}, column ${column}`;
  }

  function drawList() {
    list.replaceChildren(...[...state.keys()].sort().map((name) => {
      const edited = state.get(name).text !== state.get(name).saved;
      return el('li', {},
        el('button', {
          type: 'button', class: 'link', 'data-file': name,
          'aria-current': name === current ? 'true' : null,
          onclick: () => open(name),
        }, name, edited ? el('span', { class: 'edited', title: 'unsaved changes' }, ' (edited)') : null));
    }));
  }

  function open(name) {
    current = name;
    const file = state.get(name);
    text.value = file ? file.text : '';
    text.disabled = !file;
    saveButton.disabled = validateButton.disabled = !file;
    label.textContent = file ? `Text of ${name}` : 'No dialplan file yet: add one';
    text.scrollTop = 0;
    drawList();
    drawGutter();
    drawCaret();
  }

  // Selects `line` (1-based) of `name` and scrolls it into view.
  function goTo(name, line) {
    if (name !== current && state.has(name)) open(name);
    const lines = text.value.split('\n');
    const index = Math.min(Math.max(line, 1), lines.length) - 1;
    const start = lines.slice(0, index).reduce((sum, l) => sum + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + lines[index].length);
    const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 18;
    text.scrollTop = Math.max(0, (index - 3) * lineHeight);
    drawGutter();
    drawCaret();
  }

  function showErrors(heading, errors) {
    const items = errors.map((e) => {
      const where = e.line > 0 ? `${e.file}:${e.line}` : e.file;
      return el('li', {},
        el('button', {
          type: 'button', class: 'link plan-error', 'data-file': e.file, 'data-line': e.line,
          onclick: () => goTo(e.file, e.line),
        }, `${where}: ${e.reason}`));
    });
    result.replaceChildren(
      el('p', { class: 'error' }, heading),
      el('ul', { id: 'plan-errors' }, items));
  }

  function showOk(message) {
    result.replaceChildren(el('p', { class: 'ok', id: 'plan-ok' }, message));
  }

  function edited() {
    return [...state.entries()]
      .filter(([, f]) => f.text !== f.saved)
      .map(([name, f]) => ({ name, text: f.text }));
  }

  async function busy(fn) {
    saveButton.disabled = validateButton.disabled = true;
    result.replaceChildren();
    try {
      await fn();
    } catch (e) {
      result.replaceChildren(el('p', { class: 'error' }, e.message));
    } finally {
      saveButton.disabled = validateButton.disabled = current === null;
    }
  }

  text.addEventListener('input', () => {
    const file = state.get(current);
    const wasEdited = file.text !== file.saved;
    file.text = text.value;
    if (wasEdited !== (file.text !== file.saved)) drawList();
    drawGutter();
    drawCaret();
  });
  text.addEventListener('scroll', () => {
    gutter.scrollTop = text.scrollTop;
  });
  for (const ev of ['keyup', 'click', 'select']) text.addEventListener(ev, drawCaret);

  validateButton.addEventListener('click', () => busy(async () => {
    // The file shown counts even when unchanged: "is this one right?"
    const candidates = edited();
    if (!candidates.some((f) => f.name === current)) {
      candidates.push({ name: current, text: state.get(current).text });
    }
    const verdict = await api('POST', '/dialplans/validate', { files: candidates });
    if (verdict.ok) showOk(`Valid: the plan would have ${verdict.routes} route${verdict.routes === 1 ? '' : 's'}. Nothing was saved.`);
    else showErrors('Not valid:', verdict.errors);
  }));

  saveButton.addEventListener('click', () => busy(async () => {
    const name = current;
    const file = state.get(name);
    const sent = file.text;
    try {
      const saved = await api('PUT', `/dialplans/${encodeURIComponent(name)}`, { text: sent });
      file.saved = sent;
      drawList();
      showOk(`Saved ${name}. New calls are routed by the new plan (${saved.routes} route${saved.routes === 1 ? '' : 's'}).`);
      say(`Saved ${name}`);
    } catch (e) {
      if (e.code === 'invalid_dialplan' || e.code === 'reload_failed') {
        showErrors(e.code === 'invalid_dialplan' ? `Not saved: ${name} would break the dialplan.` : e.message, e.errors || []);
      } else {
        throw e;
      }
    }
  }));

  newForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = newName.value.trim();
    if (!NAME_RULE.test(name)) {
      say('A file name is letters, digits, _ and -, then .toml', true);
      newName.focus();
      return;
    }
    if (!state.has(name)) state.set(name, { saved: null, text: '' });
    newName.value = '';
    open(name);
    text.focus();
  });

  // Closing the tab with unsaved edits asks first (moving to another page of the panel
  // cannot be held back: the router has already left).
  const guard = (ev) => {
    if (edited().length > 0) ev.preventDefault();
  };
  window.addEventListener('beforeunload', guard);

  open(current);
  return () => window.removeEventListener('beforeunload', guard);
}
