// The panel's entry: login, the navigation (hash routes, so the server serves one page),
// and mounting the page for the current route.
import { api, live, setCsrfToken } from './api.js';
import { clear, say } from './ui.js';
import * as dashboard from './dashboard.js';
import * as extensions from './extensions.js';
import * as registrations from './registrations.js';
import * as calls from './calls.js';
import * as history from './history.js';
import * as dialplan from './dialplan.js';
import * as settings from './settings.js';

const pages = { dashboard, extensions, registrations, calls, history, dialplan, settings };

const loginSection = document.getElementById('login');
const top = document.getElementById('top');
const view = document.getElementById('view');
let unmount = null;
let loggedIn = false;

function showLogin() {
  loggedIn = false;
  live.stop();
  if (unmount) unmount();
  unmount = null;
  clear(view);
  top.hidden = true;
  loginSection.hidden = false;
  document.title = 'Log in - Ringfort';
  document.getElementById('login-name').focus();
}

function showApp(session) {
  setCsrfToken(session.csrf_token || null);
  if (session.role !== 'admin') {
    // Every page reads endpoints that need the admin role: say so instead of failing.
    showLogin();
    document.getElementById('login-error').textContent =
      `${session.name} has the ${session.role} role; the panel needs an admin account.`;
    api('POST', '/logout').catch(() => {});
    return;
  }
  loggedIn = true;
  document.getElementById('who-name').textContent = session.name;
  loginSection.hidden = true;
  top.hidden = false;
  live.start();
  route();
}

async function route() {
  if (!loggedIn) return;
  const name = (location.hash.replace(/^#\/?/, '') || 'dashboard').split('?')[0];
  const page = pages[name] || dashboard;
  if (unmount) unmount();
  unmount = null;
  clear(view);
  for (const a of top.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = page.title + ' - Ringfort';
  try {
    unmount = await page.mount(view);
  } catch (e) {
    say(`Cannot show ${page.title}: ${e.message}`, true);
  }
  // Focus moves to the new page (screen readers announce it); the view stays put.
  document.getElementById('page').focus({ preventScroll: true });
}

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const error = document.getElementById('login-error');
  error.textContent = '';
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const session = await api('POST', '/login', {
      name: form.elements.name.value,
      password: form.elements.password.value,
    });
    form.reset();
    showApp(session);
  } catch (e) {
    error.textContent = e.code === 'rate_limited'
      ? 'Too many failed logins. Wait a minute and try again.'
      : e.code === 'bad_credentials' ? 'Wrong name or password.' : e.message;
  } finally {
    button.disabled = false;
  }
});

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/logout');
  } catch {
    // Logged out either way.
  }
  showLogin();
});

window.addEventListener('hashchange', route);
window.addEventListener('ringfort:logged-out', () => {
  if (loggedIn) {
    showLogin();
    say('Your session ended. Log in again.', true);
  }
});

api('GET', '/me').then(showApp, showLogin);
