// The studio: a creator picks one of their recordings, chooses a range on its waveform, cuts it
// into a clip, and assembles clips into podcast episodes. Vanilla ES module, no build step; the
// markup of list items is in studio.html's <template>s. The creator token is kept in this tab's
// sessionStorage only, and sent as a bearer token.

const TOKEN_KEY = 'afterlive.creatorToken';
const POLL_MS = 1000;
const LIVE_WAVE_MS = 10_000; // a live recording's waveform is fetched again this often
const WAVE_POINTS = 2000;
const AXIS_PX = 18;
const HLS_TYPE = 'application/vnd.apple.mpegurl';

const $ = (id) => document.getElementById(id);
const media = $('rec-media');
const canvas = $('wave');
const TOKEN_HINT = $('token').placeholder;
const state = {
  rec: null, wave: null, lanes: [], lanesTotal: 0, start: null, end: null, stopAt: null, drag: null, waveTimer: 0, clipsTimer: 0,
  recordings: new Map(), clips: [], order: [],
};
const players = new Map(); // media element -> its hls.js instance

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

async function api(method, path, body, type = 'application/json') {
  const headers = {
    Accept: 'application/json',
    Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}`,
  };
  if (body !== undefined) headers['Content-Type'] = type;
  const payload = body === undefined || body instanceof Blob ? body : JSON.stringify(body);
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, 'The server cannot be reached.');
  }
  const data = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, detailText(data?.detail, reply.status));
  return data;
}

const enc = encodeURIComponent;

// ---- formatting and markup ----------------------------------------------------------------

/** m:ss.s (h:mm:ss.s past an hour): how times are shown and typed. */
function clock(seconds, digits = 1) {
  const scale = 10 ** digits;
  const t = Math.max(0, Math.round((Number.isFinite(seconds) ? seconds : 0) * scale) / scale);
  const [h, m] = [Math.floor(t / 3600), Math.floor(t / 60) % 60];
  const s = (t % 60).toFixed(digits).padStart(digits ? 3 + digits : 2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** "75.5", "1:15.5" or "0:01:15.5" to seconds; NaN if it is none of these. */
function parseClock(text) {
  const parts = text.trim().split(':');
  if (parts.length > 3 || !parts.every((p) => /^\d+(\.\d*)?$/.test(p))) return NaN;
  if (parts.slice(1).some((p) => Number(p) >= 60)) return NaN;
  return parts.reduce((total, p) => total * 60 + Number(p), 0);
}

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${String(m % 60).padStart(2, '0')} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

const expiresIn = (s) => (s == null ? '' : s < 60 ? 'expires in under a minute' : `expires in ${span(s)}`);
const name = (item) => item.title || 'Untitled';
const tenth = (t) => Math.round(t * 10) / 10;
const working = (job) => job.status === 'queued' || job.status === 'running';

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** A copy of a <template>'s element, and a lookup of its `data-slot` children. */
function stamp(id) {
  const node = $(id).content.firstElementChild.cloneNode(true);
  return [node, (slot) => node.querySelector(`[data-slot="${slot}"]`)];
}

function message(target, text, kind = 'ok', progress = null) {
  target.replaceChildren(text ?? '');
  target.dataset.kind = kind;
  target.hidden = !text;
  if (progress != null) {
    const bar = el('progress');
    Object.assign(bar, { max: 100, value: progress });
    bar.setAttribute('aria-label', 'Progress');
    target.append(bar);
  }
}

// ---- hls.js: from the CDN, or the local copy when the CDN fails (as on the catch-up page) ----

let hlsLoading = null;

function loadHls() {
  hlsLoading ??= new Promise((resolve, reject) => {
    const cdn = $('hls-cdn');
    let fellBack = false;
    const local = () => {
      if (window.Hls) return resolve(window.Hls);
      if (fellBack) return;
      fellBack = true;
      const script = document.createElement('script');
      script.src = cdn.dataset.fallback;
      script.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error('no Hls')));
      script.onerror = () => reject(new Error('hls.js could not be loaded'));
      document.head.append(script);
      document.documentElement.dataset.hlsSource = 'local';
    };
    const settle = () => {
      if (!window.Hls) return local();
      document.documentElement.dataset.hlsSource = 'cdn';
      resolve(window.Hls);
    };
    if (window.Hls || cdn.dataset.state) return settle();
    cdn.addEventListener('load', settle, { once: true });
    cdn.addEventListener('error', settle, { once: true });
    setTimeout(() => { if (!cdn.dataset.state) local(); }, 6000); // a CDN that hangs
  });
  return hlsLoading;
}

/** Play an HLS URL in a <video> or <audio>: hls.js where there is MSE, else native HLS. */
async function attach(target, url, onError) {
  players.get(target)?.destroy();
  players.delete(target);
  const mse = 'MediaSource' in window || 'ManagedMediaSource' in window;
  const Hls = mse ? await loadHls().catch(() => null) : null;
  if (Hls?.isSupported()) {
    const hls = new Hls({ startPosition: 0 });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) return hls.recoverMediaError();
      const code = data.response?.code ? ` (HTTP ${data.response.code})` : '';
      onError(`Playback stopped: ${data.details}${code}.`);
    });
    hls.loadSource(url);
    hls.attachMedia(target);
    players.set(target, hls);
  } else if (target.canPlayType(HLS_TYPE)) {
    target.src = url;
  } else {
    onError('This browser cannot play these streams (no HLS and no Media Source Extensions).');
  }
}

// ---- 1. recordings ------------------------------------------------------------------------

async function loadRecordings() {
  const rooms = await api('GET', '/api/rooms');
  const pages = await Promise.all(
    rooms.map((room) => api('GET', `/api/recordings?room_id=${enc(room.id)}&limit=100`)),
  );
  const groups = rooms.map((room, i) => {
    const list = el('ul', 'rec-list');
    for (const rec of pages[i].items) {
      state.recordings.set(rec.id, rec);
      const live = rec.status === 'live';
      const [li, slot] = stamp('rec-tpl');
      const pick = li.firstElementChild;
      pick.dataset.id = rec.id;
      pick.setAttribute('aria-pressed', String(state.rec?.id === rec.id));
      slot('badge').textContent = live ? 'LIVE' : clock(rec.duration_s, 0);
      slot('badge').classList.toggle('live', live);
      slot('title').textContent = name(rec);
      const when = live ? 'recording now' : [span(rec.duration_s), expiresIn(rec.expires_in_s)].join(' · ');
      slot('meta').textContent = `${new Date(rec.started_at).toLocaleString()} · ${when}`;
      list.append(li);
    }
    const group = el('div', 'room');
    group.append(el('h3', null, `${room.title} · ${room.kind}`), list);
    return list.children.length ? group : null;
  }).filter(Boolean);
  $('rooms').replaceChildren(...groups);
  const count = pages.reduce((total, page) => total + page.items.length, 0);
  $('rec-empty').hidden = count > 0;
  $('rec-count').textContent = count ? `(${count})` : '';
}

function openRecording(rec) {
  clearTimeout(state.waveTimer);
  Object.assign(state, { rec, wave: null, lanes: [], stopAt: null });
  renderLanes();
  for (const b of document.querySelectorAll('.rec-pick')) {
    b.setAttribute('aria-pressed', String(b.dataset.id === rec.id));
  }
  $('editor').hidden = false;
  $('editor').dataset.kind = rec.kind;
  $('ed-title').textContent = name(rec);
  $('clip-result').hidden = true;
  message($('clip-msg'), null);
  renderMeta();
  setRange(null, null);
  attach(media, rec.playback_url, (text) => message($('clip-msg'), text, 'error'));
  loadWave(rec);
  $('editor').scrollIntoView({ behavior: 'smooth', block: 'start' });
  canvas.focus({ preventScroll: true });
}

function renderMeta() {
  const live = state.rec.status === 'live';
  const bits = [live ? 'still recording' : `${clock(duration())} long`, expiresIn(state.rec.expires_in_s)];
  $('ed-meta').replaceChildren(...(live ? [el('span', 'badge live', 'LIVE')] : []),
    el('span', null, bits.filter(Boolean).join(' · ')));
}

async function loadWave(rec) {
  if (!state.wave) $('wave-status').textContent = 'Drawing the waveform…';
  const live = rec.status === 'live';
  try {
    const [wave, fresh] = await Promise.all([
      api('GET', `/api/recordings/${enc(rec.id)}/waveform?points=${WAVE_POINTS}`),
      live ? api('GET', `/api/recordings/${enc(rec.id)}`) : rec, // has it ended since?
    ]);
    if (state.rec?.id !== rec.id) return;
    Object.assign(state, { wave, rec: fresh });
    loadLanes(rec);
    const growing = fresh.status === 'live';
    $('wave-status').textContent = growing ? `Live: the waveform grows every ${LIVE_WAVE_MS / 1000} s.` : '';
    renderMeta();
    tick();
  } catch (err) {
    if (state.rec?.id !== rec.id || refused(err)) return;
    $('wave-status').textContent = `The waveform could not be made: ${err.message}`;
  }
  if (state.rec?.id === rec.id && state.rec.status === 'live') {
    state.waveTimer = setTimeout(() => loadWave(state.rec), LIVE_WAVE_MS);
  }
}

/** Who spoke when: the recording's speaker lanes (none for a single host). */
async function loadLanes(rec) {
  try {
    const { lanes } = await api('GET', `/api/recordings/${enc(rec.id)}/lanes`);
    if (state.rec?.id !== rec.id) return;
    state.lanes = lanes;
    renderLanes();
  } catch (err) {
    if (state.rec?.id !== rec.id || refused(err)) return;
    $('wave-status').textContent = `The speaker lanes could not be loaded: ${err.message}`;
  }
}

function renderLanes() {
  $('lanes').hidden = $('lanes-help').hidden = state.lanes.length === 0;
  $('lanes').replaceChildren(...state.lanes.map((lane) => {
    const [row, slot] = stamp('lane-tpl');
    row.dataset.seat = lane.seat;
    slot('name').textContent = lane.host;
    const track = slot('track');
    track.setAttribute('role', 'group');
    track.setAttribute('aria-label', `${lane.host}: ${lane.turns.length} turns`);
    for (const turn of lane.turns) {
      const bar = el('button', 'turn');
      bar.type = 'button';
      Object.assign(bar.dataset, { start: turn.start_s, end: turn.end_s, host: lane.host });
      const when = `${clock(turn.start_s)}–${clock(turn.end_s)}`;
      bar.title = `${lane.host} ${when}`;
      bar.setAttribute('aria-label', `${lane.host} ${when}: set the range to this turn`);
      track.append(bar);
    }
    return row;
  }));
  placeLanes();
}

/** The clip range that covers a turn: its start and end widened to the tenth of a second (the
 *  range's precision), inside the recording. */
function turnRange(bar) {
  const start = Math.max(0, Math.floor(Number(bar.dataset.start) * 10) / 10);
  return [start, Math.min(Math.ceil(Number(bar.dataset.end) * 10) / 10, tenth(duration()))];
}

/** Bars on the waveform's time axis (as percentages of the track, which is as wide as the
 *  canvas); the turn that is the range is pressed. */
function placeLanes() {
  const total = duration();
  state.lanesTotal = total;
  for (const bar of $('lanes').querySelectorAll('.turn')) {
    if (!total) break;
    const [a, b] = [Number(bar.dataset.start), Math.min(Number(bar.dataset.end), total)];
    bar.style.left = `${(a / total) * 100}%`;
    bar.style.width = `${(Math.max(0, b - a) / total) * 100}%`;
    const [start, end] = turnRange(bar);
    bar.setAttribute('aria-pressed', String(state.start === start && state.end === end));
  }
}

$('lanes').addEventListener('click', (e) => {
  const bar = e.target.closest('button.turn');
  if (!bar || !duration()) return;
  const [start, end] = turnRange(bar);
  setRange(start, end);
  message($('clip-msg'), null);
  seek(start);
});

// ---- the timeline -------------------------------------------------------------------------

function duration() {
  const played = Number.isFinite(media.duration) ? media.duration : 0;
  return Math.max(state.wave?.duration_s ?? 0, state.rec?.duration_s ?? 0, played);
}

const colors = (() => {
  const css = getComputedStyle(document.documentElement);
  const v = (key) => css.getPropertyValue(key).trim();
  return { accent: v('--accent'), muted: v('--muted'), line: v('--line'), live: v('--live') };
})();

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const [w, h] = [canvas.clientWidth, canvas.clientHeight];
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    [canvas.width, canvas.height] = [Math.round(w * dpr), Math.round(h * dpr)];
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const total = duration();
  if (!total || !state.rec) return;
  const x = (t) => (t / total) * w;
  const [mid, floor] = [(h - AXIS_PX) / 2, h - AXIS_PX];
  const ranged = state.start != null && state.end != null;
  if (ranged) {
    ctx.fillStyle = 'rgb(124 156 255 / 0.16)';
    ctx.fillRect(x(state.start), 0, x(state.end) - x(state.start), floor);
  }
  const { points = [], seconds_per_point: spp = 1 } = state.wave ?? {};
  // Scaled to the loudest part, so a quiet recording still shows its shape (at most 5x).
  const top = Math.max(0.2, ...points);
  for (let px = 0; px < w; px += 3) {
    const [t0, t1] = [(px / w) * total, ((px + 3) / w) * total];
    const last = Math.min(points.length, Math.max(Math.floor(t0 / spp) + 1, Math.ceil(t1 / spp)));
    let peak = 0;
    for (let i = Math.floor(t0 / spp); i < last; i += 1) peak = Math.max(peak, points[i]);
    const bar = Math.max(1, Math.min(1, peak / top) ** 0.8 * (mid - 4));
    const inside = ranged && t1 > state.start && t0 < state.end;
    ctx.fillStyle = inside ? colors.accent : colors.muted;
    ctx.globalAlpha = inside || !ranged ? 0.95 : 0.55;
    ctx.fillRect(px, mid - bar, 2, 2 * bar);
  }
  ctx.globalAlpha = 1;
  ctx.fillStyle = colors.line;
  ctx.fillRect(0, floor, w, 1);
  ctx.fillStyle = colors.muted;
  ctx.font = '11px system-ui, sans-serif';
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  const step = steps.find((s) => (s / total) * w >= 70) ?? 7200; // labels 70 px apart or more
  for (let t = 0; t <= total; t += step) {
    ctx.fillRect(x(t), floor, 1, 4);
    ctx.fillText(clock(t, step < 1 ? 1 : 0), x(t) + 3, h - 4);
  }
  ctx.fillStyle = colors.accent;
  if (ranged) for (const t of [state.start, state.end]) ctx.fillRect(x(t) - 1, 0, 2, floor);
  const head = x(Math.min(media.currentTime || 0, total));
  ctx.fillStyle = colors.live;
  ctx.fillRect(head - 1, 0, 2, floor);
  ctx.beginPath();
  ctx.moveTo(head - 6, 0);
  ctx.lineTo(head + 6, 0);
  ctx.lineTo(head, 8);
  ctx.fill();
}

/** Redraw and update the time, the slider's value and the play button; again next frame while
 *  playing (and stop at the end of a preview). */
function tick() {
  if (state.stopAt != null && media.currentTime >= state.stopAt) {
    media.pause();
    state.stopAt = null;
  }
  const [now, total] = [media.currentTime || 0, duration()];
  $('ed-time').textContent = `${clock(now)} / ${clock(total)}`;
  canvas.setAttribute('aria-valuemax', total.toFixed(1));
  canvas.setAttribute('aria-valuenow', now.toFixed(1));
  canvas.setAttribute('aria-valuetext', `${clock(now)} of ${clock(total)}`);
  $('ed-play').textContent = media.paused ? 'Play' : 'Pause';
  if (total !== state.lanesTotal) placeLanes();
  draw();
  if (!media.paused) requestAnimationFrame(tick);
}

function seek(t) {
  media.currentTime = Math.min(Math.max(0, t), duration());
  tick();
}

function play() {
  media.play().catch((err) => message($('clip-msg'), `Cannot play: ${err.message}`, 'error'));
}

function setRange(start, end) {
  Object.assign(state, { start, end });
  $('range-start').value = start == null ? '' : clock(start);
  $('range-end').value = end == null ? '' : clock(end);
  $('range-len').textContent = start != null && end != null ? `${(end - start).toFixed(1)} s` : '—';
  for (const id of ['range-start', 'range-end']) $(id).removeAttribute('aria-invalid');
  placeLanes();
  draw();
}

/** Start (or end) the range at the playhead, keeping the other end if it still fits. */
function markHere(which) {
  const now = tenth(media.currentTime || 0);
  if (which === 'start') setRange(now, state.end != null && state.end > now ? state.end : null);
  else setRange(state.start != null && state.start < now ? state.start : 0, now);
}

/** The range typed in the inputs, checked; null (and a message) if it is not valid. */
function typedRange() {
  const [start, end] = [parseClock($('range-start').value), parseClock($('range-end').value)];
  const problem = Number.isNaN(start) ? ['range-start', 'Start: type a time as m:ss.s, e.g. 0:02.0.']
    : Number.isNaN(end) ? ['range-end', 'End: type a time as m:ss.s, e.g. 0:06.0.']
      : end <= start ? ['range-end', 'The end must come after the start.']
        : end > duration() + 0.05 ? ['range-end', `The recording is ${clock(duration())} long.`] : null;
  if (problem) {
    $(problem[0]).setAttribute('aria-invalid', 'true');
    message($('clip-msg'), problem[1], 'error');
    return null;
  }
  setRange(start, Math.min(end, duration()));
  return { start_s: state.start, end_s: state.end };
}

const timeAt = (e) => {
  const box = canvas.getBoundingClientRect();
  return Math.min(Math.max(0, (e.clientX - box.left) / box.width), 1) * duration();
};

canvas.addEventListener('pointerdown', (e) => {
  if (!duration()) return;
  canvas.setPointerCapture(e.pointerId);
  state.drag = { from: timeAt(e), x: e.clientX, moved: false };
});
canvas.addEventListener('pointermove', (e) => {
  const { drag } = state;
  if (!drag || !(drag.moved ||= Math.abs(e.clientX - drag.x) > 4)) return;
  const t = timeAt(e);
  setRange(tenth(Math.min(drag.from, t)), tenth(Math.max(drag.from, t)));
});
canvas.addEventListener('pointerup', (e) => {
  if (state.drag && !state.drag.moved) seek(timeAt(e));
  state.drag = null;
});
canvas.addEventListener('keydown', (e) => {
  const now = media.currentTime || 0;
  const jump = e.shiftKey ? 10 : 1;
  const actions = {
    ' ': () => (media.paused ? play() : media.pause()),
    ArrowLeft: () => seek(now - jump),
    ArrowRight: () => seek(now + jump),
    Home: () => seek(0),
    End: () => seek(duration()),
    '[': () => markHere('start'),
    ']': () => markHere('end'),
  };
  if (!actions[e.key]) return;
  e.preventDefault();
  actions[e.key]();
});
new ResizeObserver(() => draw()).observe(canvas);
for (const type of ['play', 'pause', 'seeked', 'durationchange']) media.addEventListener(type, tick);
$('ed-play').addEventListener('click', () => (media.paused ? play() : media.pause()));
$('start-here').addEventListener('click', () => markHere('start'));
$('end-here').addEventListener('click', () => markHere('end'));
for (const id of ['range-start', 'range-end']) {
  $(id).addEventListener('change', () => {
    if ($('range-start').value && $('range-end').value && typedRange()) message($('clip-msg'), null);
  });
}
$('preview').addEventListener('click', () => {
  const range = typedRange();
  if (!range) return;
  message($('clip-msg'), null);
  seek(range.start_s);
  state.stopAt = range.end_s;
  play();
});

// ---- making a clip ------------------------------------------------------------------------

/** Poll a clip's or an episode's job until it is done (resolves) or failed (throws). */
async function follow(url, target, what) {
  for (;;) {
    const job = await api('GET', url);
    if (job.status === 'done') return job;
    if (job.status === 'failed') throw new ApiError(0, `${what} failed: ${job.error ?? 'no reason given'}`);
    message(target, `${what}: ${job.status}, ${job.progress}%`, 'ok', job.progress);
    await new Promise((resolve) => { setTimeout(resolve, POLL_MS); });
  }
}

$('clip-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const [range, title, target] = [typedRange(), $('clip-title').value.trim(), $('clip-msg')];
  if (!range || !title) return;
  $('make-clip').disabled = true;
  $('clip-result').hidden = true;
  try {
    const queued = await api('POST', `/api/recordings/${enc(state.rec.id)}/clips`, { title, ...range });
    message(target, `“${title}”: queued`, 'ok', 0);
    loadClips().catch(() => {});
    const clip = await follow(queued.status_url, target, `“${title}”`);
    const kept = 'kept after the recording expires';
    message(target, `“${title}” is done: ${clip.duration_s?.toFixed(1)} s, ${kept}.`);
    $('clip-result-title').textContent = name(clip);
    $('clip-audio').href = clip.audio_url;
    $('clip-result').hidden = false;
    attach($('clip-media'), clip.playback_url, (text) => message(target, text, 'error'));
  } catch (err) {
    if (!refused(err)) message(target, `Could not make the clip: ${err.message}`, 'error');
  } finally {
    $('make-clip').disabled = false;
    loadClips().catch(() => {});
  }
});

// ---- 2. clips -----------------------------------------------------------------------------

async function loadClips() {
  clearTimeout(state.clipsTimer);
  state.clips = await api('GET', '/api/clips');
  const rows = state.clips.map((clip) => {
    const [tr, slot] = stamp('clip-tpl');
    Object.assign(tr.dataset, { id: clip.id, status: clip.status });
    slot('title').textContent = name(clip);
    slot('source').textContent = clip.source.available ? 'recording still kept' : 'recording expired';
    slot('range').textContent = `${clock(clip.start_s)}–${clock(clip.end_s)}`;
    slot('length').textContent = `${(clip.duration_s ?? clip.end_s - clip.start_s).toFixed(1)} s`;
    slot('status').textContent = clip.status;
    slot('status').classList.add(`st-${clip.status}`);
    Object.assign(slot('progress'), { hidden: !working(clip), value: clip.progress });
    slot('progress').setAttribute('aria-label', `Progress of ${name(clip)}`);
    slot('error').textContent = clip.error ?? '';
    slot('actions').hidden = clip.status !== 'done';
    for (const b of tr.querySelectorAll('button[data-act]')) {
      b.setAttribute('aria-label', `${b.textContent}: ${name(clip)}`);
    }
    slot('audio').href = clip.audio_url ?? '';
    return tr;
  });
  $('clips-list').replaceChildren(...rows);
  $('clips-table').hidden = rows.length === 0;
  $('clips-empty').hidden = rows.length > 0;
  $('clips-count').textContent = rows.length ? `(${rows.length})` : '';
  renderClipChoices();
  if (state.clips.some(working)) state.clipsTimer = setTimeout(() => loadClips().catch(() => {}), 2000);
}

$('clips-list').addEventListener('click', (e) => {
  const add = e.target.closest('button[data-act="add"]');
  if (add) addToEpisode(add.closest('tr').dataset.id);
});

// ---- 3. programmes ------------------------------------------------------------------------

async function loadProgrammes() {
  const programmes = await api('GET', '/api/programmes');
  $('prog-list').replaceChildren(...programmes.map((p) => {
    const [card, slot] = stamp('prog-tpl');
    card.dataset.id = p.id;
    if (p.artwork_url) {
      const img = el('img');
      Object.assign(img, { src: `${p.artwork_url}?v=${Date.now()}`, alt: `Artwork of ${p.title}` });
      slot('art').append(img);
    } else slot('art').textContent = (p.title[0] ?? '?').toUpperCase();
    slot('title').textContent = p.title;
    slot('meta').textContent = [p.author, p.language, p.category, p.explicit && 'explicit']
      .filter(Boolean).join(' · ');
    slot('feed').value = p.feed_url;
    slot('feed').setAttribute('aria-label', `Feed URL of ${p.title}`);
    slot('upload').textContent = p.artwork_url ? 'Replace artwork' : 'Upload artwork';
    return card;
  }));
  $('prog-count').textContent = programmes.length ? `(${programmes.length})` : '';
  $('prog-new').open ||= programmes.length === 0;
  const select = $('ep-prog');
  const chosen = select.value;
  select.replaceChildren(...(programmes.length ? programmes.map((p) => new Option(p.title, p.id))
    : [new Option('Create a programme first', '')]));
  if (programmes.some((p) => p.id === chosen)) select.value = chosen;
}

$('prog-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const value = (id) => $(id).value.trim();
  const body = {
    title: value('p-title'), description: value('p-desc'), author: value('p-author'),
    language: value('p-lang'), category: value('p-cat') || 'Society & Culture',
    explicit: $('p-explicit').checked,
  };
  try {
    const programme = await api('POST', '/api/programmes', body);
    $('prog-form').reset();
    $('prog-new').open = false;
    await loadProgrammes();
    $('ep-prog').value = programme.id;
    message($('prog-msg'), `Created “${programme.title}”. Subscribe to its feed: ${programme.feed_url}`);
  } catch (err) {
    if (!refused(err)) message($('prog-msg'), `Could not create the programme: ${err.message}`, 'error');
  }
});

$('prog-list').addEventListener('click', async (e) => {
  if (!e.target.closest('button[data-act="copy"]')) return;
  const input = e.target.closest('.prog').querySelector('.feed-url');
  try {
    await navigator.clipboard.writeText(input.value);
    message($('prog-msg'), 'Feed URL copied.');
  } catch {
    input.select(); // no clipboard access here: selected, for Ctrl+C
    message($('prog-msg'), 'The feed URL is selected: press Ctrl+C (or ⌘C) to copy it.');
  }
});

$('prog-list').addEventListener('change', async (e) => {
  const file = e.target.closest('input[data-act="artwork"]')?.files?.[0];
  if (!file) return;
  const id = e.target.closest('.prog').dataset.id;
  message($('prog-msg'), `Uploading ${file.name}…`);
  try {
    await api('PUT', `/api/programmes/${enc(id)}/artwork`, file, file.type || 'image/jpeg');
    await loadProgrammes();
    message($('prog-msg'), `Artwork uploaded: ${file.name}.`);
  } catch (err) {
    if (!refused(err)) message($('prog-msg'), `Could not upload the artwork: ${err.message}`, 'error');
  }
});

// ---- 4. episodes --------------------------------------------------------------------------

const clipById = (id) => state.clips.find((c) => c.id === id) ?? { id, title: id };

function renderClipChoices() {
  const done = state.clips.filter((c) => c.status === 'done');
  for (const id of ['ep-intro', 'ep-outro']) {
    const chosen = $(id).value;
    $(id).replaceChildren(new Option('None', ''),
      ...done.map((c) => new Option(`${name(c)} (${(c.duration_s ?? 0).toFixed(1)} s)`, c.id)));
    if (done.some((c) => c.id === chosen)) $(id).value = chosen;
  }
  renderOrder();
}

function addToEpisode(id) {
  state.order.push(id);
  renderOrder();
  message($('ep-msg'), `Added “${name(clipById(id))}” to the episode (clip ${state.order.length}).`);
}

function renderOrder(focus) {
  $('ep-order').replaceChildren(...state.order.map((id, i) => {
    const [li, slot] = stamp('order-tpl');
    slot('title').textContent = name(clipById(id));
    for (const b of li.querySelectorAll('button')) {
      const verb = { '-1': 'Move up', 1: 'Move down', 0: 'Remove' }[b.dataset.move];
      b.setAttribute('aria-label', `${verb} “${name(clipById(id))}” (clip ${i + 1})`);
      b.dataset.index = i;
      b.disabled = (b.dataset.move === '-1' && i === 0)
        || (b.dataset.move === '1' && i === state.order.length - 1);
    }
    return li;
  }));
  $('ep-order-empty').hidden = state.order.length > 0;
  if (!focus) return;
  const li = $('ep-order').children[focus.index];
  (li?.querySelector(`[data-move="${focus.move}"]:not(:disabled)`)
    ?? li?.querySelector('button:not(:disabled)') ?? $('ep-title')).focus();
}

$('ep-order').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-move]');
  if (!b) return;
  const [i, move] = [Number(b.dataset.index), Number(b.dataset.move)];
  if (move === 0) state.order.splice(i, 1);
  else [state.order[i], state.order[i + move]] = [state.order[i + move], state.order[i]];
  // Focus stays with the moved clip (its same button if it is still enabled), or the next one.
  renderOrder({ index: move === 0 ? Math.min(i, state.order.length - 1) : i + move, move });
});

$('ep-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const [target, title] = [$('ep-msg'), $('ep-title').value.trim()];
  if (!state.order.length) return message(target, 'Add at least one finished clip to the episode.', 'error');
  if (!$('ep-prog').value) return message(target, 'Create a programme first (above).', 'error');
  const body = {
    title, description: $('ep-desc').value.trim(), clips: state.order,
    intro_clip: $('ep-intro').value || null, outro_clip: $('ep-outro').value || null,
    crossfade_s: Number($('ep-xfade').value || 0), chapters: $('ep-chapters-by').value,
  };
  $('ep-make').disabled = true;
  $('ep-result').hidden = true;
  try {
    const queued = await api('POST', `/api/programmes/${enc($('ep-prog').value)}/episodes`, body);
    message(target, `Episode “${title}”: ${queued.status}`, 'ok', 0);
    const episode = await follow(`/api/episodes/${enc(queued.id)}`, target, `Episode “${title}”`);
    const length = clock(episode.duration_s);
    message(target, `Episode “${title}” is done (${length}) and in the programme's feed.`);
    showEpisode(episode);
  } catch (err) {
    if (!refused(err)) message(target, `Could not make the episode: ${err.message}`, 'error');
  } finally {
    $('ep-make').disabled = false;
  }
});

function showEpisode(episode) {
  $('ep-result-title').textContent = name(episode);
  $('ep-mp3').href = episode.audio_url;
  $('ep-m4a').href = episode.m4a_url;
  $('ep-chapters').replaceChildren(...episode.chapters.map((c) => {
    const li = el('li');
    li.append(el('span', 'time', clock(c.start_s)), ` ${c.title}`);
    return li;
  }));
  $('ep-result').hidden = false;
  attach($('ep-media'), episode.playback_url, (text) => message($('ep-msg'), text, 'error'));
}

// ---- signing in and start -----------------------------------------------------------------

function signedIn(yes) {
  $('console').hidden = !yes;
  $('token').placeholder = yes ? 'Signed in. Paste another token to switch.' : TOKEN_HINT;
  $('token-forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
}

function refused(err) {
  if (err.status !== 401) return false;
  sessionStorage.removeItem(TOKEN_KEY);
  signedIn(false);
  message($('auth-msg'), `This token was not accepted (401: ${err.message}). Use a creator token `
    + 'from `afterlive creators add NAME`.', 'error');
  $('token').focus();
  return true;
}

async function refresh() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return signedIn(false);
  try {
    await Promise.all([loadRecordings(), loadClips(), loadProgrammes()]);
    $('auth-msg').hidden = true;
    signedIn(true);
  } catch (err) {
    if (!refused(err)) message($('auth-msg'), `Could not load the studio: ${err.message}`, 'error');
  }
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  refresh();
});
$('token-forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  players.forEach((hls) => hls.destroy());
  players.clear();
  clearTimeout(state.waveTimer);
  Object.assign(state, { rec: null, wave: null, lanes: [], order: [] });
  $('editor').hidden = true;
  signedIn(false);
  message($('auth-msg'), 'Token forgotten in this tab.', 'ok');
  $('token').focus();
});
$('rooms').addEventListener('click', (e) => {
  const pick = e.target.closest('button.rec-pick');
  if (pick) openRecording(state.recordings.get(pick.dataset.id));
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && sessionStorage.getItem(TOKEN_KEY)) loadRecordings().catch(() => {});
});
refresh();
