// The admin API as the panel uses it: JSON over fetch with the session cookie, the CSRF
// header on every state-changing request, errors as ApiError with the API's code.
// Also the live feed (Server-Sent Events, GET /api/v1/events), shared by all pages.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, code, message, errors) {
    super(message);
    this.status = status;
    this.code = code;
    // Itemised mistakes (an invalid dialplan's [{file, line, reason}]), when given.
    this.errors = errors || [];
  }
}

export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrfToken) {
    opts.headers['X-CSRF-Token'] = csrfToken;
  }
  const resp = await fetch('/api/v1' + path, opts);
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    if (resp.status === 401) window.dispatchEvent(new CustomEvent('ringfort:logged-out'));
    throw new ApiError(resp.status, err.code || 'http_' + resp.status, err.message || resp.statusText, err.errors);
  }
  return data;
}

// One EventSource for the whole page; pages subscribe to `registrations`, `calls` and
// `voicemail` (a mailbox's new counts) and get the latest at once when one has arrived.
const latest = new Map();
const listeners = new Map();
const stateListeners = new Set();
let source = null;

export const live = {
  start() {
    if (source) return;
    source = new EventSource('/api/v1/events');
    for (const kind of ['registrations', 'calls', 'voicemail']) {
      source.addEventListener(kind, (ev) => {
        let items;
        try {
          items = JSON.parse(ev.data);
        } catch {
          return;
        }
        latest.set(kind, items);
        for (const fn of listeners.get(kind) || []) fn(items);
      });
    }
    source.addEventListener('open', () => this.notifyState(true));
    source.addEventListener('error', () => {
      this.notifyState(false);
      // A closed source (e.g. the session ended) is not retried by the browser: check
      // whether we are still logged in, and retry later if so.
      if (source && source.readyState === EventSource.CLOSED) {
        this.stop();
        api('GET', '/me').then(() => setTimeout(() => this.start(), 2000), () => {});
      }
    });
  },
  stop() {
    if (source) source.close();
    source = null;
    latest.clear();
    this.notifyState(false);
  },
  connected() {
    return source !== null && source.readyState === EventSource.OPEN;
  },
  notifyState(up) {
    for (const fn of stateListeners) fn(up);
  },
  onState(fn) {
    stateListeners.add(fn);
    fn(this.connected());
    return () => stateListeners.delete(fn);
  },
  subscribe(kind, fn) {
    if (!listeners.has(kind)) listeners.set(kind, new Set());
    listeners.get(kind).add(fn);
    if (latest.has(kind)) fn(latest.get(kind));
    return () => listeners.get(kind).delete(fn);
  },
};
