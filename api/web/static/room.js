// Live rooms on the catch-up page. app.js plays the room's mix (its master playlist) in the
// page's <video>; this module adds a tile per host, who is speaking, and previous/next speaker.
// Every rendition's segments carry EXT-X-PROGRAM-DATE-TIME on one wall clock, so each tile is
// kept at the mix's wall time. The layout and the timing are pure functions; `Room` applies them.

const TICK_MS = 250;
const POLL_MS = 3000; // speaker turns and new hosts, while live
const DRIFT_S = 0.3;
const RESEEK_MS = 1000; // a tile still buffering after a seek is left to catch up
const NEXT_SLACK_MS = 250; // "next" from just after a turn start goes to the turn after it
const PREVIOUS_SLACK_MS = 1500; // "previous" within a turn's first moments goes to the one before
const MAX_TILE_RELOADS = 3;
const VIDEO_CODECS = /\b(avc1|avc3|hvc1|hev1)\b/;

// ---- pure: who is shown where, and when -------------------------------------------------------

export const isRoom = (rec) =>
  Boolean(rec.renditions?.some((r) => r.seat === 0) || (rec.hosts?.length ?? 0) > 1);

/** The grid for the seats present: one full, two side by side, three or four in 2x2, and so on;
 * a focused seat alone, full size. */
export function roomLayout(seats, focus = null) {
  const shown = seats.includes(focus) ? [focus] : [...seats];
  const cols = Math.max(1, Math.ceil(Math.sqrt(shown.length)));
  return { shown, cols, rows: Math.max(1, Math.ceil(shown.length / cols)) };
}

/** What a host's tile shows: their video, or a name card (audio only, not recorded). */
export function tileKind(rec, host) {
  if (!host.recorded) return 'not-recorded';
  const source = sourceOf(rec, host.seat);
  const video = rec.kind === 'video' && source?.width && source?.height
    && VIDEO_CODECS.test(source.codecs ?? '');
  return video ? 'video' : 'voice';
}

export const sourceOf = (rec, seat) =>
  rec.renditions?.find((r) => r.name === (seat === 1 ? 'source' : `hosts/${seat}/source`));

// hls.js fragments: { start (s, media time), duration (s), programDateTime (ms, wall clock) }.

const ends = (f) => f.programDateTime + f.duration * 1000;

/** Media time of wall time `wall` (ms), or null where no fragment covers it. */
export function timeAt(frags, wall) {
  const f = frags?.find((x) => x.programDateTime != null && x.programDateTime <= wall
    && wall < ends(x));
  return f ? f.start + (wall - f.programDateTime) / 1000 : null;
}

/** Wall time (ms) of media time `t`, or null. */
export function wallAt(frags, t) {
  if (!frags?.length) return null;
  const last = frags[frags.length - 1];
  const f = frags.find((x) => t < x.start + x.duration) ?? (t <= last.start + last.duration + 0.5
    ? last : null);
  return f?.programDateTime == null ? null : f.programDateTime + (t - f.start) * 1000;
}

/** Is a host's media there at `wall`: 'in', 'before' (not started), 'away' (a gap or ended). */
export function presence(frags, wall) {
  if (!frags?.length || wall == null) return null;
  if (wall < frags[0].programDateTime) return 'before';
  return timeAt(frags, wall) == null ? 'away' : 'in';
}

const ms = (iso) => Date.parse(iso.replace(/(\.\d{3})\d+/, '$1')); // microseconds: not portable

export const parseTurns = (turns) => turns
  .map((t) => ({ seat: t.seat, host: t.host, start: ms(t.start_at), end: ms(t.end_at) }))
  .sort((a, b) => a.start - b.start);

export const speakingAt = (turns, wall) =>
  new Set(turns.filter((t) => t.start <= wall && wall < t.end).map((t) => t.seat));

export const nextTurn = (turns, wall) => turns.find((t) => t.start > wall + NEXT_SLACK_MS);

export const previousTurn = (turns, wall) =>
  turns.findLast((t) => t.start < wall - PREVIOUS_SLACK_MS);

// ---- the room view -------------------------------------------------------------------------

const fragsOf = (hls) => hls?.levels?.find((level) => level.details)?.details.fragments;

const CAPTIONS = {
  voice: 'audio only', 'not-recorded': 'not recorded', before: 'not here yet', away: 'away',
};

function initials(name) {
  return (name || '?').split(/\s+/).filter(Boolean).slice(0, 2)
    .map((w) => w[0].toUpperCase()).join('');
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

export class Room {
  /** `mix()`: the hls.js instance playing the mix in `media` (app.js reloads it at will). */
  constructor({ rec, media, mix, loadHls, getJSON, ui }) {
    Object.assign(this, { rec, media, mix, loadHls, getJSON, ui });
    this.tiles = new Map(); // seat -> { host, kind, node, video, hls, reloads, seekedAt }
    this.turns = [];
    this.focus = null;
    this.closed = false;
    ui.grid.hidden = false;
    ui.bar.hidden = false;
    ui.prev.onclick = () => this.seekTurn(previousTurn(this.turns, this.wall()));
    ui.next.onclick = () => this.seekTurn(nextTurn(this.turns, this.wall()));
    // After any seek of the mix (the seek bar, a speaker button), tiles follow at once.
    this.onSeeking = () => {
      for (const tile of this.tiles.values()) tile.seekedAt = 0;
      this.tick();
    };
    media.addEventListener('seeking', this.onSeeking);
    this.setHosts(rec);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.poll(true);
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.polling);
    this.media.removeEventListener('seeking', this.onSeeking);
    for (const tile of this.tiles.values()) tile.hls?.destroy();
    this.ui.grid.replaceChildren();
    this.ui.grid.hidden = true;
    this.ui.bar.hidden = true;
    this.ui.speaking.textContent = '';
  }

  /** The mix's wall clock at the play position (ms), once its playlist is in. */
  wall() {
    return wallAt(fragsOf(this.mix()), this.media.currentTime);
  }

  seekTurn(turn) {
    const t = turn && timeAt(fragsOf(this.mix()), turn.start);
    if (t == null) return;
    this.media.currentTime = t;
    this.tick(); // the new position, now (the 'seeking' event comes later)
  }

  async poll(first = false) {
    const id = encodeURIComponent(this.rec.id);
    const wasLive = this.rec.status === 'live';
    try {
      const [turns, rec] = await Promise.all([
        this.getJSON(`/api/recordings/${id}/speakers`),
        first ? null : this.getJSON(`/api/recordings/${id}`),
      ]);
      if (this.closed) return;
      this.turns = parseTurns(turns);
      if (rec) this.setHosts((this.rec = rec));
    } catch {
      // The next poll tries again; the mix's player reports what stops playback.
    }
    // While live the turns grow; once ended, one more reading gets the last turns.
    if (!this.closed && wasLive) this.polling = setTimeout(() => this.poll(), POLL_MS);
  }

  setHosts(rec) {
    for (const host of rec.hosts) {
      const kind = tileKind(rec, host);
      const tile = this.tiles.get(host.seat);
      if (tile?.kind === kind) continue; // a host's video arrives after their first poll
      tile?.hls?.destroy();
      const fresh = this.makeTile(host, kind, sourceOf(rec, host.seat));
      if (tile) tile.node.replaceWith(fresh.node);
      else this.ui.grid.append(fresh.node);
      this.tiles.set(host.seat, fresh);
    }
    this.layout();
  }

  makeTile(host, kind, source) {
    const node = el('button', 'tile');
    node.type = 'button';
    node.dataset.seat = host.seat;
    node.dataset.kind = kind;
    node.style.setProperty('--hue', (host.seat * 67 + 200) % 360);
    node.setAttribute('aria-label', `${host.name}: show large`);
    const card = el('span', 'tile-card');
    // In an audio room every tile is a voice: no caption needed.
    const caption = kind === 'voice' && this.rec.kind === 'audio' ? '' : CAPTIONS[kind];
    card.append(el('span', 'avatar', initials(host.name)), el('span', 'tile-caption', caption));
    const tile = { host, kind, node, card, video: null, hls: null, reloads: 0, seekedAt: 0 };
    if (kind === 'video') {
      tile.video = Object.assign(el('video'), { muted: true, playsInline: true });
      tile.video.setAttribute('aria-hidden', 'true');
      node.append(tile.video);
      this.startVideo(tile, source.playlist_url);
    }
    node.append(card, el('span', 'tile-name', host.name));
    node.addEventListener('click', () => {
      this.focus = this.focus === host.seat ? null : host.seat;
      this.layout();
    });
    return tile;
  }

  layout() {
    const seats = [...this.tiles.keys()].sort((a, b) => a - b);
    const { shown, cols, rows } = roomLayout(seats, this.focus);
    this.ui.grid.style.setProperty('--cols', cols);
    this.ui.grid.style.setProperty('--rows', rows);
    for (const [seat, tile] of this.tiles) {
      tile.node.hidden = !shown.includes(seat);
      tile.node.setAttribute('aria-pressed', String(this.focus === seat));
      tile.node.style.order = seat;
    }
  }

  async startVideo(tile, url) {
    const Hls = await this.loadHls().catch(() => null);
    if (this.closed || !Hls?.isSupported()) return;
    // Loading waits for the playlist: the tile starts where the mix is, not at its own 0.
    const hls = new Hls({ autoStartLoad: false, maxBufferLength: 12, backBufferLength: 30 });
    tile.hls = hls;
    let started = false;
    hls.on(Hls.Events.LEVEL_LOADED, () => {
      if (started) return;
      started = true;
      hls.startLoad(timeAt(fragsOf(hls), this.wall()) ?? -1);
    });
    hls.on(Hls.Events.FRAG_BUFFERED, () => { tile.reloads = 0; });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      // Presigned segment URLs run out, as for the mix: a fresh playlist has fresh ones.
      const refused = data.details === Hls.ErrorDetails.FRAG_LOAD_ERROR
        && [401, 403].includes(data.response?.code);
      if ((refused || (data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR))
        && tile.reloads < MAX_TILE_RELOADS) {
        tile.reloads += 1;
        started = false;
        hls.loadSource(url);
      } else if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR && tile.reloads < 1) {
        tile.reloads += 1;
        hls.recoverMediaError();
      } else if (data.fatal) {
        hls.destroy();
        tile.hls = null;
        tile.node.dataset.presence = 'failed';
      }
    });
    hls.loadSource(url);
    hls.attachMedia(tile.video);
  }

  tick() {
    const wall = this.wall();
    this.ui.grid.dataset.clock = wall == null ? '' : String(Math.round(wall));
    for (const tile of this.tiles.values()) if (tile.hls) this.sync(tile, wall);
    const speaking = wall == null ? new Set() : speakingAt(this.turns, wall);
    const names = [];
    for (const [seat, tile] of this.tiles) {
      const on = speaking.has(seat);
      tile.node.dataset.speaking = String(on);
      if (on) names.push(tile.host.name);
    }
    const text = names.length ? `Speaking: ${names.join(', ')}` : '';
    if (this.ui.speaking.textContent !== text) this.ui.speaking.textContent = text;
    this.ui.prev.disabled = wall == null || !previousTurn(this.turns, wall);
    this.ui.next.disabled = wall == null || !nextTurn(this.turns, wall);
  }

  /** Keep a host's video at the mix's wall time; a name card where their media is not. */
  sync(tile, wall) {
    const { video, node, card } = tile;
    const frags = fragsOf(tile.hls);
    const where = presence(frags, wall);
    node.dataset.presence = where ?? 'loading';
    card.lastChild.textContent = CAPTIONS[where] ?? '';
    if (where !== 'in') {
      if (!video.paused) video.pause();
      return;
    }
    const target = timeAt(frags, wall);
    const drift = video.currentTime - target;
    node.dataset.drift = String(Math.round(drift * 1000));
    const rate = this.media.playbackRate;
    if (video.playbackRate !== rate) video.playbackRate = rate;
    const now = performance.now();
    if (Math.abs(drift) > DRIFT_S && !video.seeking && now - tile.seekedAt > RESEEK_MS) {
      tile.seekedAt = now;
      video.currentTime = target;
    }
    if (this.media.paused && !video.paused) video.pause();
    else if (!this.media.paused && video.paused) video.play().catch(() => {});
  }
}
