// The catch-up page: live rooms and recent replays from the public API, played with hls.js.
// Vanilla ES module, no build step. Deep link: /#/r/{recording_id}.

import { isRoom, Room } from './room.js';

const REFRESH_MS = 10_000;
const MAX_SOURCE_RELOADS = 3; // in a row, on refused segments (presigned URLs past their TTL)
const MAX_MEDIA_RECOVERIES = 2;
const EDGE_SLACK_S = 8; // this close to the live edge counts as "live"
const HLS_TYPE = 'application/vnd.apple.mpegurl';

const $ = (id) => document.getElementById(id);
const media = $('media');
const stage = $('stage');
const ui = {
  play: $('play'), restart: $('restart'), seek: $('seek'), time: $('time'), golive: $('golive'),
  mute: $('mute'), volume: $('volume'), fullscreen: $('fullscreen'), close: $('close'),
  overlay: $('overlay'), overlayText: $('overlay-text'), overlayAction: $('overlay-action'),
  title: $('now-title'), meta: $('now-meta'), meter: $('meter'), banner: $('banner'),
};
const player = {
  rec: null, hls: null, room: null, session: 0, live: false, reloads: 0, recoveries: 0,
};
let clockSkewMs = 0; // server time minus ours, from the Date header of API replies

// ---- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function getJSON(path) {
  let reply;
  try {
    reply = await fetch(path, { headers: { Accept: 'application/json' } });
  } catch {
    throw new ApiError(0, 'The server cannot be reached.');
  }
  const date = Date.parse(reply.headers.get('Date') ?? '');
  if (!Number.isNaN(date)) clockSkewMs = date - Date.now();
  const body = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, body?.detail ?? `HTTP ${reply.status}`);
  return body;
}

function explain(err) {
  if (err.status === 410) return `This replay has expired. ${err.message}`;
  if (err.status === 404) return 'This recording does not exist (or it was deleted).';
  return err.message || 'Something went wrong.';
}

// ---- formatting ---------------------------------------------------------------------------

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(Number.isFinite(seconds) ? seconds : 0));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const ss = String(r).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function ago(iso) {
  const s = (Date.now() + clockSkewMs - Date.parse(iso)) / 1000;
  return s < 60 ? 'just now' : `${span(s)} ago`;
}

const expiresText = (rec) =>
  rec.expires_in_s == null ? '' : rec.expires_in_s < 60
    ? 'expires in under a minute' : `expires in ${span(rec.expires_in_s)}`;

function hue(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function initials(name) {
  return (name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('');
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

// ---- lists --------------------------------------------------------------------------------

function fillCard(li, rec) {
  const live = rec.status === 'live';
  const button = el('button', 'card');
  button.type = 'button';
  button.dataset.id = rec.id;
  if (player.rec?.id === rec.id) button.setAttribute('aria-current', 'true');
  const art = el('span', `art ${rec.kind}`);
  art.style.setProperty('--hue', hue(rec.room_id ?? rec.id));
  art.append(icon(rec.kind === 'audio' ? 'mic' : 'video'));
  art.append(live ? el('span', 'badge live', 'LIVE') : el('span', 'badge', span(rec.duration_s)));
  const body = el('span', 'card-body');
  body.append(el('span', 'card-title', rec.title || 'Untitled'), el('span', 'card-host', rec.host));
  const meta = live
    ? `started ${ago(rec.started_at)}`
    : [`ended ${ago(rec.ended_at ?? rec.started_at)}`, expiresText(rec)].filter(Boolean).join(' · ');
  body.append(el('span', 'card-meta', `${meta}${rec.kind === 'audio' ? ' · audio' : ''}`));
  button.append(art, body);
  button.addEventListener('click', () => { location.hash = `#/r/${encodeURIComponent(rec.id)}`; });
  li.replaceChildren(button);
}

function renderList(ul, items, empty, count) {
  const focused = document.activeElement?.dataset?.id;
  const old = new Map([...ul.children].map((li) => [li.dataset.id, li]));
  items.forEach((rec, i) => {
    const li = old.get(rec.id) ?? el('li');
    li.dataset.id = rec.id;
    fillCard(li, rec);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] ?? null);
  });
  while (ul.children.length > items.length) ul.lastElementChild.remove();
  if (focused) ul.querySelector(`button[data-id="${CSS.escape(focused)}"]`)?.focus();
  empty.hidden = items.length > 0;
  count.textContent = items.length ? `(${items.length})` : '';
}

async function refreshLists() {
  try {
    const [live, ended] = await Promise.all([
      getJSON('/api/recordings?status=live&limit=20&offset=0'),
      getJSON('/api/recordings?status=ended&limit=20&offset=0'),
    ]);
    renderList($('live-list'), live.items, $('live-empty'), $('live-count'));
    renderList($('replay-list'), ended.items, $('replay-empty'), $('replay-count'));
    ui.banner.hidden = true;
    const current = [...live.items, ...ended.items].find((r) => r.id === player.rec?.id);
    if (current) {
      player.rec = { ...player.rec, ...current };
      renderNow();
    }
  } catch (err) {
    ui.banner.textContent = `The lists could not be refreshed: ${err.message} Trying again shortly.`;
    ui.banner.hidden = false;
  }
}

// ---- hls.js: from the CDN, or the local copy when the CDN fails ---------------------------

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
      if (window.Hls) {
        document.documentElement.dataset.hlsSource = 'cdn';
        resolve(window.Hls);
      } else local();
    };
    if (window.Hls || cdn.dataset.state) return settle();
    cdn.addEventListener('load', settle, { once: true });
    cdn.addEventListener('error', settle, { once: true });
    setTimeout(() => { if (!cdn.dataset.state) local(); }, 6000); // a CDN that hangs
  });
  return hlsLoading;
}

// ---- the player ---------------------------------------------------------------------------

function overlay(text, { busy = false, action = null } = {}) {
  ui.overlay.hidden = !text;
  ui.overlay.classList.toggle('busy', busy);
  ui.overlayText.textContent = text ?? '';
  ui.overlayAction.hidden = !action;
  if (action) {
    ui.overlayAction.textContent = action.label;
    ui.overlayAction.onclick = action.run;
  }
}

function stopPlayback() {
  player.session += 1;
  player.room?.close();
  player.room = null;
  delete stage.dataset.room;
  player.hls?.destroy();
  player.hls = null;
  media.removeAttribute('src');
  media.load();
  meterOff();
}

function markCurrent(id) {
  document.querySelectorAll('.card').forEach((c) => {
    if (c.dataset.id === id) c.setAttribute('aria-current', 'true');
    else c.removeAttribute('aria-current');
  });
}

function renderNow() {
  const rec = player.rec;
  if (!rec) return;
  const live = rec.status === 'live';
  stage.dataset.kind = rec.kind;
  stage.classList.toggle('is-live', live);
  ui.title.textContent = rec.title || 'Untitled';
  const bits = [rec.host, live ? `started ${ago(rec.started_at)}` : `replay · ${span(rec.duration_s)}`];
  if (!live) bits.push(expiresText(rec));
  ui.meta.replaceChildren(...(live ? [el('span', 'badge live', 'LIVE')] : []),
    el('span', '', bits.filter(Boolean).join(' · ')));
  $('audio-title').textContent = rec.title || 'Untitled';
  $('audio-host').textContent = rec.host;
  $('audio-avatar').textContent = initials(rec.host);
  $('audio-card').style.setProperty('--hue', hue(rec.room_id ?? rec.id));
  document.title = `${live ? '● LIVE · ' : ''}${rec.title || 'Untitled'} · afterlive`;
  markCurrent(rec.id);
}

async function openRecording(id) {
  stopPlayback();
  const session = player.session;
  stage.hidden = false;
  overlay('Loading…', { busy: true });
  let rec;
  try {
    rec = await getJSON(`/api/recordings/${encodeURIComponent(id)}`);
  } catch (err) {
    if (session !== player.session) return;
    player.rec = null;
    delete stage.dataset.kind;
    markCurrent(null);
    ui.title.textContent = err.status === 410 ? 'Expired' : 'Not available';
    ui.meta.replaceChildren();
    return overlay(explain(err));
  }
  if (session !== player.session) return;
  Object.assign(player, { rec, live: rec.status === 'live', reloads: 0, recoveries: 0 });
  renderNow();
  if (isRoom(rec)) openRoom(rec);
  stage.scrollIntoView({ behavior: 'smooth', block: 'start' });
  ui.play.focus({ preventScroll: true }); // Space now plays and pauses
  await attach(rec, session);
}

// A room with several hosts: the mix plays here as for one host; room.js adds the hosts' tiles.
function openRoom(rec) {
  stage.dataset.room = rec.kind;
  player.room = new Room({
    rec, media, mix: () => player.hls, loadHls, getJSON,
    ui: {
      grid: $('room-grid'), bar: $('room-bar'), speaking: $('speaking'),
      prev: $('prev-speaker'), next: $('next-speaker'),
    },
  });
}

async function attach(rec, session) {
  const hasMse = 'MediaSource' in window || 'ManagedMediaSource' in window;
  const native = media.canPlayType(HLS_TYPE) !== '';
  let Hls = null;
  if (hasMse) Hls = await loadHls().catch(() => null);
  if (session !== player.session) return;
  if (Hls?.isSupported()) {
    const hls = new Hls({
      startPosition: rec.status === 'live' ? -1 : 0,
      backBufferLength: 90,
      xhrSetup: (xhr, url) => {
        // After a reload, playlists must not come from the HTTP cache: a cached copy still
        // holds the segment URLs that just expired.
        if (player.reloads && new URL(url, location.href).origin === location.origin) {
          if (xhr.readyState === 0) xhr.open('GET', url, true);
          xhr.setRequestHeader('Cache-Control', 'no-cache');
        }
      },
    });
    player.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, () => play());
    hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => { player.live = data.details.live; updateControls(); });
    hls.on(Hls.Events.FRAG_BUFFERED, () => Object.assign(player, { reloads: 0, recoveries: 0 }));
    hls.on(Hls.Events.ERROR, (_e, data) => onHlsError(Hls, data, session));
    hls.loadSource(rec.playback_url);
    hls.attachMedia(media);
  } else if (native) {
    media.src = rec.playback_url;
    play();
  } else {
    overlay('This browser cannot play these streams (no HLS and no Media Source Extensions).');
  }
}

function play() {
  media.play().catch((err) => {
    if (err.name === 'NotAllowedError') {
      overlay('Ready.', { action: { label: 'Play', run: () => play() } });
    }
  });
}

function onHlsError(Hls, data, session) {
  if (session !== player.session) return;
  const { hls, rec } = player;
  // Segment URLs are presigned and run out (the store answers 403): fresh playlists carry
  // fresh ones. hls.js counts a 403 on a lone rendition as non-fatal and stalls, so act on it.
  const refused = data.details === Hls.ErrorDetails.FRAG_LOAD_ERROR
    && [401, 403].includes(data.response?.code);
  const fragFailed = data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR && data.frag;
  if ((refused || fragFailed) && player.reloads < MAX_SOURCE_RELOADS) {
    player.reloads += 1;
    const [at, resume] = [media.currentTime, !media.paused];
    console.info(`afterlive: reloading the source at ${at.toFixed(1)} s (${data.details})`);
    hls.config.startPosition = at;
    hls.loadSource(rec.playback_url);
    if (resume) hls.once(Hls.Events.FRAG_BUFFERED, () => play());
    return;
  }
  if (!data.fatal && !refused) return;
  if (data.type === Hls.ErrorTypes.MEDIA_ERROR && player.recoveries < MAX_MEDIA_RECOVERIES) {
    player.recoveries += 1;
    hls.recoverMediaError();
    return;
  }
  hls.destroy();
  player.hls = null;
  // The API says why, if it knows (e.g. 410: the replay expired meanwhile).
  getJSON(`/api/recordings/${encodeURIComponent(rec.id)}`).then(
    () => overlay(`Playback failed (${data.details}).`, {
      action: { label: 'Try again', run: () => openRecording(rec.id) },
    }),
    (err) => overlay(explain(err)),
  );
}

// ---- controls -----------------------------------------------------------------------------

function timeline() {
  const s = media.seekable;
  if (s.length) return { start: s.start(0), end: s.end(s.length - 1) };
  return { start: 0, end: Number.isFinite(media.duration) ? media.duration : 0 };
}

function liveEdge() {
  const sync = player.hls?.liveSyncPosition;
  return Number.isFinite(sync) ? sync : Math.max(0, timeline().end - 6);
}

const atLiveEdge = () => timeline().end - media.currentTime < EDGE_SLACK_S;
let scrubbing = false;

function updateControls() {
  const { start, end } = timeline();
  const live = player.live && player.rec?.status === 'live';
  const playing = !media.paused;
  ui.play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
  ui.play.querySelector('use').setAttribute('href', playing ? '#i-pause' : '#i-play');
  stage.dataset.playing = String(playing);
  ui.seek.disabled = end <= start;
  ui.seek.min = start;
  ui.seek.max = end;
  const at = scrubbing ? Number(ui.seek.value) : media.currentTime;
  if (!scrubbing) ui.seek.value = at;
  const buffered = media.buffered.length ? media.buffered.end(media.buffered.length - 1) : start;
  const pct = (t) => `${end > start ? ((Math.min(t, end) - start) / (end - start)) * 100 : 0}%`;
  ui.seek.style.setProperty('--played', pct(at));
  ui.seek.style.setProperty('--buffered', pct(buffered));
  ui.seek.setAttribute('aria-valuetext', `${clock(at - start)} of ${clock(end - start)}`);
  ui.time.textContent = `${clock(at - start)} / ${clock(end - start)}`;
  ui.golive.hidden = !live;
  ui.restart.hidden = !live;
  const edge = live && atLiveEdge();
  ui.golive.classList.toggle('at-edge', edge);
  ui.golive.textContent = edge ? 'Live' : 'Go live';
  ui.golive.setAttribute('aria-label', edge ? 'Playing live' : 'Go to the live edge');
  if (edge && media.playbackRate > 1) setRate(1); // nothing to skip ahead to
  const muted = media.muted || media.volume === 0;
  ui.mute.setAttribute('aria-label', muted ? 'Unmute' : 'Mute');
  ui.mute.querySelector('use').setAttribute('href', muted ? '#i-muted' : '#i-volume');
  ui.volume.value = media.muted ? 0 : media.volume;
  ui.volume.style.setProperty('--level', `${ui.volume.value * 100}%`);
}

function togglePlay() {
  if (!player.rec) return;
  if (media.paused) play();
  else media.pause();
}

function seekBy(delta) {
  const { start, end } = timeline();
  media.currentTime = Math.min(Math.max(media.currentTime + delta, start), end);
}

function setRate(rate) {
  // The default rate survives a new source (another recording, or a reload after expiry).
  media.defaultPlaybackRate = media.playbackRate = rate;
  document.querySelectorAll('.speed button').forEach((b) => {
    b.setAttribute('aria-pressed', String(Number(b.dataset.rate) === rate));
  });
}

function setVolume(volume) {
  media.volume = Math.min(Math.max(volume, 0), 1);
  media.muted = media.volume === 0;
  localStorage.setItem('afterlive.volume', String(media.volume));
}

ui.play.addEventListener('click', togglePlay);
ui.golive.addEventListener('click', () => { media.currentTime = liveEdge(); play(); });
ui.restart.addEventListener('click', () => { media.currentTime = timeline().start; play(); });
ui.seek.addEventListener('input', () => { scrubbing = true; updateControls(); });
ui.seek.addEventListener('change', () => {
  scrubbing = false;
  media.currentTime = Number(ui.seek.value);
});
document.querySelectorAll('.speed button').forEach((b) => {
  b.addEventListener('click', () => setRate(Number(b.dataset.rate)));
});
ui.mute.addEventListener('click', () => {
  if (media.volume === 0) setVolume(1);
  else media.muted = !media.muted;
});
ui.volume.addEventListener('input', () => setVolume(Number(ui.volume.value)));
ui.fullscreen.addEventListener('click', () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else $('screen').requestFullscreen?.().catch(() => {});
});
ui.close.addEventListener('click', () => { location.hash = '#/'; });
$('screen').addEventListener('click', (e) => { if (e.target === media) togglePlay(); });

for (const type of ['play', 'pause', 'timeupdate', 'durationchange', 'progress', 'volumechange',
  'seeked', 'loadedmetadata']) media.addEventListener(type, updateControls);
media.addEventListener('playing', () => { overlay(null); meterOn(); });
media.addEventListener('waiting', () => overlay('Buffering…', { busy: true }));
media.addEventListener('pause', () => { if (ui.overlay.classList.contains('busy')) overlay(null); });

document.addEventListener('keydown', (e) => {
  if (stage.hidden || !player.rec || e.ctrlKey || e.metaKey || e.altKey) return;
  // The player's keys work in the player or with nothing focused; the lists keep theirs.
  if (e.target !== document.body && !stage.contains(e.target)) return;
  const tag = e.target.tagName;
  const onRange = tag === 'INPUT' && e.target.type === 'range';
  if (tag === 'TEXTAREA' || tag === 'SELECT' || (tag === 'INPUT' && !onRange)) return;
  const actions = {
    ' ': () => togglePlay(), k: () => togglePlay(), m: () => ui.mute.click(),
    f: () => ui.fullscreen.click(),
    ArrowLeft: () => seekBy(-10), ArrowRight: () => seekBy(10), j: () => seekBy(-10),
    l: () => seekBy(10),
    ArrowUp: () => setVolume(media.volume + 0.1), ArrowDown: () => setVolume(media.volume - 0.1),
  };
  // Buttons keep Space/Enter for themselves, sliders keep their arrows.
  if ((e.key === ' ' && (tag === 'BUTTON' || tag === 'A')) || (onRange && e.key.startsWith('Arrow'))) return;
  const action = actions[e.key];
  if (!action) return;
  e.preventDefault();
  action();
});

// ---- audio rooms: a level meter from Web Audio, or a CSS animation where that is not possible

const BARS = 28;
const meter = { ctx: null, analyser: null, raf: 0, bins: null };
ui.meter.append(...Array.from({ length: BARS }, () => el('span')));

async function meterOn() {
  if (player.rec?.kind !== 'audio') return;
  stage.classList.remove('css-meter');
  try {
    meter.ctx ??= new AudioContext();
    if (meter.ctx.state !== 'running') await meter.ctx.resume();
    if (meter.ctx.state !== 'running') throw new Error('audio context not running');
    if (!meter.analyser) {
      // Once the element is routed through Web Audio it stays so, for video rooms too.
      const source = meter.ctx.createMediaElementSource(media);
      meter.analyser = Object.assign(meter.ctx.createAnalyser(), { fftSize: 256, smoothingTimeConstant: 0.7 });
      source.connect(meter.analyser);
      meter.analyser.connect(meter.ctx.destination);
      meter.bins = new Uint8Array(meter.analyser.frequencyBinCount);
    }
  } catch {
    stage.classList.add('css-meter');
    return;
  }
  cancelAnimationFrame(meter.raf);
  // Mirrored around the centre, low frequencies in the middle, bins spaced logarithmically
  // (voices live in the lowest few kHz).
  const bars = [...ui.meter.children];
  const half = BARS / 2;
  const top = meter.bins.length / 2;
  const binOf = bars.map((_b, i) => {
    const k = Math.abs(i - (half - 0.5)) - 0.5;
    return Math.round(top ** (k / (half - 1)));
  });
  const draw = () => {
    meter.analyser.getByteFrequencyData(meter.bins);
    bars.forEach((bar, i) => {
      const v = media.paused ? 0 : meter.bins[binOf[i]] / 255;
      bar.style.transform = `scaleY(${Math.max(0.08, v)})`;
    });
    meter.raf = requestAnimationFrame(draw);
  };
  draw();
}

function meterOff() {
  cancelAnimationFrame(meter.raf);
  [...ui.meter.children].forEach((bar) => { bar.style.transform = ''; });
}

// ---- routing and start --------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/r\/([^/?#]+)$/);
  if (match) return openRecording(decodeURIComponent(match[1]));
  stopPlayback();
  player.rec = null;
  stage.hidden = true;
  document.title = 'afterlive · catch up';
  markCurrent(null);
}

const savedVolume = Number(localStorage.getItem('afterlive.volume') ?? '1');
media.volume = Number.isFinite(savedVolume) ? Math.min(Math.max(savedVolume, 0), 1) : 1;
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshLists(); });
setInterval(() => { if (!document.hidden) refreshLists(); }, REFRESH_MS);
setInterval(() => { if (player.rec) updateControls(); }, 1000); // the live edge moves
refreshLists();
route();
