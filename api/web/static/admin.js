// The admin page: what expires when, holds, extensions, takedowns, sweeps and the audit log,
// all through /api/admin. Vanilla ES module, no build step. The admin token is kept in this
// tab's sessionStorage only, and sent as a bearer token.

const TOKEN_KEY = 'afterlive.adminToken';
const REFRESH_MS = 30_000;
const LIST_LIMIT = 200;
const AUDIT_LIMIT = 100;
const RELEASE_GRACE_S = 3600; // a release leaves at least an hour (api/retention.py)

const $ = (id) => document.getElementById(id);
const known = new Map(); // recording id -> last seen item: titles for the audit log
const TOKEN_HINT = $('token').placeholder;
let clockSkewMs = 0; // server time minus ours, from the Date header of API replies

// ---- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function detailText(detail, status) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg ?? JSON.stringify(d)).join('; ');
  return `HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = {
    Accept: 'application/json',
    Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}`,
  };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'The server cannot be reached.');
  }
  const date = Date.parse(reply.headers.get('Date') ?? '');
  if (!Number.isNaN(date)) clockSkewMs = date - Date.now();
  const data = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, detailText(data?.detail, reply.status));
  return data;
}

const recUrl = (id, action = '') =>
  `/api/admin/recordings/${encodeURIComponent(id)}${action && `/${action}`}`;

// ---- formatting ---------------------------------------------------------------------------

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function ago(iso) {
  const s = (Date.now() + clockSkewMs - Date.parse(iso)) / 1000;
  return s < 60 ? 'just now' : `${span(s)} ago`;
}

function size(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i && n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const expiresIn = (s) => (s < 60 ? 'expires in under a minute' : `expires in ${span(s)}`);
const name = (rec) => rec.title || 'Untitled';

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function timeEl(iso, text) {
  const node = el('time', null, text);
  node.dateTime = iso;
  node.title = new Date(iso).toLocaleString();
  return node;
}

function row(id, ...cells) {
  const tr = el('tr');
  if (id) tr.dataset.id = id;
  for (const cell of cells) {
    const td = cell instanceof HTMLTableCellElement ? cell : el('td');
    if (td !== cell) td.append(...[cell].flat().filter((c) => c != null));
    tr.append(td);
  }
  return tr;
}

function recordingCell(rec) {
  const box = el('div', 'rec');
  const head = el('div', 'rec-head');
  head.append(el('strong', 'rec-title', name(rec)));
  if (rec.held) head.append(el('span', 'badge held', 'HELD'));
  box.append(head, el('span', 'rec-host', rec.host), el('code', 'rec-id', rec.id));
  return box;
}

function actionButton(act, rec, label, danger = false) {
  const button = el('button', `pill small${danger ? ' danger' : ''}`, label);
  button.type = 'button';
  Object.assign(button.dataset, { act, id: rec.id });
  button.setAttribute('aria-label', `${label}: ${name(rec)}`);
  return button;
}

function buttons(...list) {
  const box = el('div', 'row-actions');
  box.append(...list);
  return box;
}

function detailItems(detail) {
  return Object.entries(detail ?? {}).map(([key, value]) => {
    const text = typeof value === 'string' && /^\d{4}-\d\d-\d\dT/.test(value)
      ? new Date(value).toLocaleString()
      : typeof value === 'object' ? JSON.stringify(value) : String(value);
    return `${key.replaceAll('_', ' ')}: ${text}`;
  }).join(' · ');
}

// ---- rendering ----------------------------------------------------------------------------

function fill(list, rows, { empty, count, total = rows.length }) {
  $(list).replaceChildren(...rows);
  $(list).closest('table').hidden = rows.length === 0;
  $(empty).hidden = rows.length > 0;
  $(count).textContent = total > rows.length ? `(${rows.length} of ${total})` : rows.length ? `(${rows.length})` : '';
}

function expiryCell(rec) {
  if (rec.expires_at == null) return '—';
  if (rec.held) {
    const after = Math.max(rec.expires_in_s ?? 0, RELEASE_GRACE_S);
    return [el('span', 'paused', 'paused: held'), el('span', 'sub', `if released, ${expiresIn(after)}`)];
  }
  return timeEl(rec.expires_at, expiresIn(rec.expires_in_s ?? 0));
}

function renderExpiries(page) {
  const rows = page.items.map((rec) => row(
    rec.id,
    recordingCell(rec),
    rec.ended_at ? timeEl(rec.ended_at, ago(rec.ended_at)) : '—',
    expiryCell(rec),
    [el('span', null, size(rec.bytes)), el('span', 'sub', plural(rec.objects, 'segment'))],
    buttons(
      rec.held ? actionButton('release', rec, 'Release') : actionButton('hold', rec, 'Hold'),
      actionButton('extend', rec, 'Extend'),
      actionButton('takedown', rec, 'Take down', true),
    ),
  ));
  fill('exp-list', rows, { empty: 'exp-empty', count: 'exp-count', total: page.total });
}

function renderLive(page) {
  const rows = page.items.map((rec) => row(
    rec.id,
    recordingCell(rec),
    timeEl(rec.started_at, ago(rec.started_at)),
    [el('span', null, size(rec.bytes)), el('span', 'sub', plural(rec.objects, 'segment'))],
    buttons(actionButton('takedown', rec, 'Take down', true)),
  ));
  fill('live-list', rows, { empty: 'live-empty', count: 'live-count', total: page.total });
}

function renderHolds(items, audit) {
  const reasons = new Map();
  for (const event of audit) {
    if (event.action === 'hold' && !reasons.has(event.recording_id)) {
      reasons.set(event.recording_id, event.detail?.reason || '');
    }
  }
  const rows = items.filter((rec) => rec.held).map((rec) => row(
    rec.id,
    recordingCell(rec),
    rec.status,
    reasons.get(rec.id) || el('span', 'muted', 'none given'),
    rec.expires_at == null
      ? el('span', 'muted', 'starts when the live ends')
      : expiresIn(Math.max(rec.expires_in_s ?? 0, RELEASE_GRACE_S)),
    buttons(actionButton('release', rec, 'Release')),
  ));
  fill('hold-list', rows, { empty: 'hold-empty', count: 'hold-count' });
}

function renderAudit(events) {
  const rows = events.map((event) => {
    const rec = known.get(event.recording_id);
    const what = event.recording_id == null ? '—'
      : rec ? [el('span', null, name(rec)), el('code', 'rec-id', event.recording_id)]
        : el('code', 'rec-id', event.recording_id);
    const tr = row(
      null,
      timeEl(event.at, ago(event.at)),
      event.actor,
      el('span', `badge act act-${event.action}`, event.action),
      what,
      event.objects_deleted ? String(event.objects_deleted) : '—',
      event.bytes_deleted ? size(event.bytes_deleted) : '—',
      el('span', 'detail', detailItems(event.detail)),
    );
    tr.dataset.action = event.action;
    if (event.recording_id) tr.dataset.recording = event.recording_id;
    tr.children[4].className = tr.children[5].className = 'num';
    return tr;
  });
  fill('audit-list', rows, { empty: 'audit-empty', count: 'audit-count' });
}

// ---- signing in and refreshing ------------------------------------------------------------

function message(target, text, kind = 'ok') {
  target.textContent = text ?? '';
  target.dataset.kind = kind;
  target.hidden = !text;
}

function signedIn(yes) {
  $('console').hidden = !yes;
  $('token').placeholder = yes ? 'Signed in. Paste another token to switch.' : TOKEN_HINT;
  $('token-forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
}

function refused(err) {
  if (err.status !== 401 && err.status !== 403) return false;
  sessionStorage.removeItem(TOKEN_KEY);
  signedIn(false);
  message($('auth-msg'), err.status === 401
    ? `This token was not accepted (401: ${err.message}). Use the admin token: `
      + 'AFTERLIVE_ADMIN_TOKEN, or the file admin_token in the data directory.'
    : `This is a creator's token, not the admin token (403: ${err.message}).`, 'error');
  $('token').focus();
  return true;
}

async function refresh() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return signedIn(false);
  const focused = document.activeElement?.dataset ?? {};
  try {
    const [ended, live, audit] = await Promise.all([
      api('GET', `/api/admin/recordings?status=ended&limit=${LIST_LIMIT}`),
      api('GET', `/api/admin/recordings?status=live&limit=${LIST_LIMIT}`),
      api('GET', `/api/admin/audit?limit=${AUDIT_LIMIT}`),
    ]);
    for (const rec of [...ended.items, ...live.items]) known.set(rec.id, rec);
    renderExpiries(ended);
    renderLive(live);
    renderHolds([...ended.items, ...live.items], audit);
    renderAudit(audit);
    $('auth-msg').hidden = true;
    signedIn(true);
  } catch (err) {
    if (!refused(err)) message($('auth-msg'), `Could not refresh: ${err.message}`, 'error');
    return;
  }
  if (focused.act && !document.activeElement?.isConnected) {
    const same = `button[data-id="${CSS.escape(focused.id)}"]`;
    ($('console').querySelector(`${same}[data-act="${focused.act}"]`)
      ?? $('console').querySelector(same))?.focus();
  }
}

// ---- actions ------------------------------------------------------------------------------

const ask = (() => {
  const dialog = $('ask');
  $('ask-cancel').addEventListener('click', () => dialog.close(''));
  return ({ title, text, ok, reason = false, hours = false, derived = false, danger = false }) => {
    $('ask-title').textContent = title;
    $('ask-text').textContent = text;
    $('ask-ok').textContent = ok;
    $('ask-ok').classList.toggle('danger', danger);
    $('ask-reason-field').hidden = !reason;
    $('ask-hours-field').hidden = !hours;
    $('ask-derived-field').hidden = !derived;
    $('ask-reason').value = '';
    $('ask-hours').value = '24';
    $('ask-derived').checked = false;
    dialog.returnValue = '';
    dialog.showModal();
    (reason ? $('ask-reason') : hours ? $('ask-hours') : $('ask-cancel')).focus();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? {
        reason: $('ask-reason').value.trim(),
        hours: Number($('ask-hours').value),
        derived: $('ask-derived').checked,
      } : null), { once: true });
    });
  };
})();

const ACTIONS = {
  async hold(rec) {
    const answer = await ask({
      title: `Hold “${name(rec)}”`,
      text: 'A held recording does not expire until it is released.',
      ok: 'Hold',
      reason: true,
    });
    if (!answer) return null;
    await api('POST', recUrl(rec.id, 'hold'), { reason: answer.reason });
    return `Held “${name(rec)}”.`;
  },
  async release(rec) {
    const item = await api('POST', recUrl(rec.id, 'release'));
    const left = item.expires_in_s == null ? 'its expiry starts when the live ends'
      : `it ${expiresIn(item.expires_in_s)}`;
    return `Released “${name(rec)}”: ${left}.`;
  },
  async extend(rec) {
    const answer = await ask({
      title: `Extend “${name(rec)}”`,
      text: `It ${expiresIn(rec.expires_in_s ?? 0)}. The hours are added to its expiry.`,
      ok: 'Extend',
      hours: true,
    });
    if (!answer) return null;
    const item = await api('POST', recUrl(rec.id, 'extend'), { hours: answer.hours });
    return `Extended “${name(rec)}” by ${answer.hours} h: it ${expiresIn(item.expires_in_s)}.`;
  },
  async takedown(rec) {
    const live = rec.status === 'live';
    const answer = await ask({
      title: `Take down “${name(rec)}”?`,
      text: `This deletes its ${plural(rec.objects, 'segment')} (${size(rec.bytes)}) now`
        + `${live ? ', disconnects the publisher and revokes the room’s stream key' : ''}.`
        + ' It cannot be undone.',
      ok: 'Take down',
      derived: true,
      danger: true,
    });
    if (!answer) return null;
    const event = await api('DELETE', `${recUrl(rec.id)}?include_derived=${answer.derived}`);
    const clips = event.detail?.derived_clips_deleted;
    return `Took down “${name(rec)}”: ${plural(event.objects_deleted, 'object')}, `
      + `${size(event.bytes_deleted)} deleted${clips == null ? '' : ` (and ${clips} clips cut from it)`}.`;
  },
};

async function run(button) {
  const rec = known.get(button.dataset.id);
  const target = button.closest('section').querySelector('.msg');
  if (!rec) return;
  message(target, null);
  button.disabled = true;
  try {
    const done = await ACTIONS[button.dataset.act](rec);
    if (done) message(target, done);
  } catch (err) {
    const verb = button.dataset.act === 'takedown' ? 'take down' : button.dataset.act;
    if (!refused(err)) message(target, `Could not ${verb} “${name(rec)}”: ${err.message}`, 'error');
  } finally {
    button.disabled = false;
  }
  await refresh();
}

async function sweep(dryRun) {
  const target = $('sweep-msg');
  const controls = [$('sweep-preview'), $('sweep-now')];
  controls.forEach((b) => { b.disabled = true; });
  message(target, dryRun ? 'Looking for what is due…' : 'Sweeping…');
  try {
    const report = await api('POST', `/api/admin/sweep?dry_run=${dryRun}`);
    const items = dryRun ? report.planned : report.deleted;
    const sum = (key) => items.reduce((total, item) => total + (item[key] ?? 0), 0);
    const [objects, bytes] = dryRun ? [sum('objects'), sum('bytes')]
      : [sum('objects_deleted'), sum('bytes_deleted')];
    const head = items.length === 0
      ? (dryRun ? 'Nothing is due: a sweep now would delete nothing.' : 'Nothing was due.')
      : `${dryRun ? 'Would delete' : 'Deleted'} ${items.length} recording(s): `
        + `${plural(objects, dryRun ? 'segment' : 'object')}, ${size(bytes)}.`;
    message(target, `${head} (${report.seconds} s)`);
    const list = el('ul', 'sweep-list');
    for (const item of items) {
      const rec = known.get(item.recording_id);
      const why = dryRun ? item.reason : item.action;
      list.append(el('li', null, `${rec ? name(rec) : item.recording_id} — ${why}`
        + `${item.expires_at ? `, was due ${ago(item.expires_at)}` : ''}`));
    }
    for (const [id, why] of Object.entries(report.failed ?? {})) {
      list.append(el('li', 'failed', `${known.get(id) ? name(known.get(id)) : id} failed: ${why}`));
    }
    if (list.children.length) target.append(list);
  } catch (err) {
    if (!refused(err)) message(target, err.message, 'error');
  } finally {
    controls.forEach((b) => { b.disabled = false; });
  }
  if (!dryRun) await refresh();
}

// ---- start --------------------------------------------------------------------------------

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  $('auth-msg').hidden = true;
  refresh();
});
$('token-forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  known.clear();
  signedIn(false);
  message($('auth-msg'), 'Token forgotten in this tab.', 'ok');
  $('token').focus();
});
$('console').addEventListener('click', (e) => {
  const button = e.target.closest('button[data-act]');
  if (button) run(button);
});
$('sweep-preview').addEventListener('click', () => sweep(true));
$('sweep-now').addEventListener('click', () => sweep(false));
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
setInterval(() => { if (!document.hidden && !$('ask').open) refresh(); }, REFRESH_MS);
refresh();
