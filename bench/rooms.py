"""Live Rooms: CPU per 4-host room against four single-host rooms, rooms held, glass-to-mix.

    python bench/rooms.py [--quick] [--cpu-rooms 2] [--cpu-seconds 30] [--rounds 2]
        [--video-levels 5,10,20] [--audio-levels 10,20,30] [--seconds 30]
        [--phases cpu,video,audio,peer] [--profile DIR] [--keep]

Everything in one run of one `afterlive serve` (this tree: `python -m api.cli serve` with
PYTHONPATH set to it), on inputs encoded once before anything is measured:
- video seats: one 20 s testsrc2 1280x720 30 fps H.264 stream (x264 ultrafast, 2.5 Mb/s, 2 s
  GOP, no B-frames), muxed by copy with each seat's own speech-like AAC (tests.utils.media,
  a seed per seat) into one FLV per seat number;
- audio seats: the same speech-like AAC alone, one FLV per seat number (up to 10);
- the probe seat: silence with a 1 kHz burst of 100 ms every 2.5 s (out of phase with the 2 s
  segments), and silent seats beside it.
Each FLV is replayed paced with `-c copy`-like cost by bench/rtmp_load.py: one publisher process
per seat number, publishing to that seat of every room, so the publishers' encoding never
competes with the server.

1. CPU per room (`cpu`): windows, alternating, of K four-host video rooms (seat 1 + 3 invited
   hosts: four copied tracks, the live mix, speech detection) and of 4K single-host video rooms
   (copy only): the same 4K streams into the server. `--rounds` of each; utime+stime of the
   serve process from /proc; the embedded store (weed) apart.
2. N four-host video rooms at once (`video`) and N ten-speaker audio rooms at once (`audio`):
   levels of `--seconds`; segment visibility of the copied renditions (seat 1's `source` and the
   last seat's) and of the `mix`, polled from the store in a sample of rooms; a level holds when
   >= 99% of each kind were visible within 1 s, every publish ran to its end and every room's
   final seat-1 playlist is complete. Copied segments are measured from the instant the
   publisher sent the packet that closed them (as bench/ingest.py); mix segments from their
   EXT-X-PROGRAM-DATE-TIME + EXTINF (the wall time of their last sample) to their listing.
3. Glass-to-mix (in every audio level and once unloaded): one of the rooms is the probe room;
   its mix playlist is polled every 20 ms, each new mix segment downloaded and decoded, and each
   burst's onset found in it: delay = when the segment listing it was seen - when the publisher
   sent the frame carrying the onset. Its placement (the onset's wall time from the segment's
   PROGRAM-DATE-TIME, less the send time) says whether the mix dated it right.
4. The mix's peer (`peer`): bench/mix.py's offline measurement of afterlive's RoomMix +
   RoomSpeech against the ffmpeg CLI's `amix` of the same 4 and 10 inputs to 2 s AAC HLS.

Default run about 8 minutes; --quick about 3. Progress on stderr; a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.append(str(REPO / "bench"))

# bench/ingest.py is named like the `ingest` package: load it under another name.
_spec = importlib.util.spec_from_file_location("bench_ingest", REPO / "bench" / "ingest.py")
assert _spec is not None and _spec.loader is not None
B = importlib.util.module_from_spec(_spec)
sys.modules["bench_ingest"] = B
_spec.loader.exec_module(B)

import av  # noqa: E402
import numpy as np  # noqa: E402
from rtmp_load import loop_duration_ms, read_flv  # noqa: E402

from tests.utils.media import speechlike_clip  # noqa: E402

# This tree's service, whatever the `afterlive` console script points at.
B.AFTERLIVE = [sys.executable, "-m", "api.cli"]
B.PROFILE_CATEGORIES |= {
    "room mix (transcode/mix.py)": ("transcode/mix.py",),
    "speech (transcode/speech.py)": ("transcode/speech.py",),
    "mix lane (ingest/mixing.py)": ("ingest/mixing.py",),
}
say, pct, Row = B.say, B.pct, B.Row
FFMPEG = B.FFMPEG
FILE_SECONDS = B.FILE_SECONDS
VIDEO_SEATS, AUDIO_SEATS = 4, 10
BURST_PERIOD_S, BURST_S, BURST_HZ = 2.5, 0.1, 1000
WITHIN_MS = 1000.0
GOALS = {"cpu": 10.0, "video": 20, "audio": 30}


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Inputs:
    video: list[Path]  # one FLV per seat number (1-based: video[0] is seat 1)
    audio: list[Path]
    burst: Path
    silence: Path
    onsets_s: list[float]  # burst onsets in the burst file's media time (one loop)
    period_s: float  # the file's loop period as the publisher loops it


def encode_inputs(tmp: Path) -> Inputs:
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    h264 = tmp / "video.mkv"
    subprocess.run(
        [
            *quiet,
            *shlex.split("-f lavfi -i testsrc2=size=1280x720:rate=30"),
            *shlex.split(f"-t {FILE_SECONDS} -c:v libx264 -preset ultrafast -bf 0"),
            *shlex.split("-pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0"),
            *shlex.split("-b:v 2500k -maxrate 2500k -bufsize 2500k"),
            str(h264),
        ],
        check=True,
    )
    video, audio = [], []
    for seat in range(1, AUDIO_SEATS + 1):
        clip = speechlike_clip(tmp / f"seat{seat}.m4a", seconds=FILE_SECONDS, lufs=-20, seed=seat)
        flv = tmp / f"seat{seat}-audio.flv"
        subprocess.run([*quiet, "-i", str(clip), "-c", "copy", str(flv)], check=True)
        audio.append(flv)
        if seat <= VIDEO_SEATS:
            flv = tmp / f"seat{seat}-video.flv"
            subprocess.run(
                [
                    *quiet,
                    "-i",
                    str(h264),
                    "-i",
                    str(clip),
                    *shlex.split("-map 0:v -map 1:a -c copy"),
                    "-t",
                    str(FILE_SECONDS),
                    str(flv),
                ],
                check=True,
            )
            video.append(flv)
    aac = shlex.split(f"-t {FILE_SECONDS} -c:a aac -b:a 64k -ar 48000 -ac 1")
    burst, silence = tmp / "burst.flv", tmp / "silence.flv"
    tone = f"aevalsrc=0.5*sin(2*PI*{BURST_HZ}*t)*lt(mod(t\\,{BURST_PERIOD_S})\\,{BURST_S}):s=48000"
    subprocess.run([*quiet, "-f", "lavfi", "-i", tone, *aac, str(burst)], check=True)
    subprocess.run(
        [*quiet, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", *aac, str(silence)], check=True
    )
    rate, samples, first = decode_audio(burst.read_bytes(), "flv")
    onsets = [first + i / rate for i in find_onsets(samples, rate)]
    period = loop_duration_ms(read_flv(burst)) / 1000
    return Inputs(video, audio, burst, silence, onsets, period)


def decode_audio(data: bytes, fmt: str) -> tuple[int, np.ndarray, float]:
    """(rate, mono float samples, media time of the first one) of a file's audio."""
    with av.open(io.BytesIO(data), format=fmt) as container:
        stream = container.streams.audio[0]
        chunks, first, rate = [], None, stream.codec_context.sample_rate or 48000
        for frame in container.decode(stream):
            if first is None and frame.pts is not None:
                first = float(frame.pts * frame.time_base)
            chunks.append(frame.to_ndarray().astype(np.float32).mean(axis=0))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return rate, samples, first or 0.0


def find_onsets(samples: np.ndarray, rate: int, quiet_s: float = 0.5) -> list[int]:
    """Sample indices where the burst begins: loud after at least `quiet_s` of quiet."""
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    if loud.size == 0:
        return []
    gaps = np.diff(loud) > quiet_s * rate
    starts = [int(loud[0])] + [int(i) for i in loud[1:][gaps]]
    return starts


# ---------------------------------------------------------------------------------------------
# Rooms with hosts


def invite_hosts(service, room: dict, count: int) -> list[str]:
    """Seat 1's stream key, then one invited host's per seat 2..count+1."""
    keys = [room["stream_key"]]
    for n in range(count):
        request = urllib.request.Request(
            f"{service.api}/api/rooms/{room['id']}/hosts",
            data=json.dumps({"name": f"host {n + 2}"}).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {service.token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            keys.append(json.loads(reply.read())["stream_key"])
    return keys


@dataclass
class Level:
    """One group of rooms live at once: its rooms, publishers and what was seen."""

    kind: str  # "video" | "audio"
    rooms: list[dict]
    keys: list[list[str]]  # per room, per seat
    loads: list = field(default_factory=list)  # per seat number
    window: object = None
    cpu_s: float = 0.0
    mix_dropped: int = 0


def start_rooms(
    service,
    kind: str,
    count: int,
    seats: int,
    files: list[Path],
    seconds: float,
    stagger: float,
    procs,
    tmp: Path,
    probe: Inputs | None = None,
) -> Level:
    """`count` rooms of `seats` seats each (1: no hosts invited), published one process per
    seat number; with `probe`, one more room whose seat 1 sends bursts and the rest silence."""
    rooms = service.create_rooms(kind, count + (1 if probe else 0), f"{kind} x{seats}")
    keys = [invite_hosts(service, room, seats - 1) for room in rooms]
    level = Level(kind=kind, rooms=rooms, keys=keys)
    rtmp = service.rtmp
    for seat in range(seats):
        targets = [f"{rtmp}/{k[seat]}" for k in keys[:count]]
        level.loads.append(B.start_load(procs, files[seat], targets, seconds, stagger, tmp))
    if probe is not None:
        burst, *silent = (f"{rtmp}/{key}" for key in keys[count])
        level.loads.append(B.start_load(procs, probe.burst, [burst], seconds, 0, tmp))
        if silent:
            level.loads.append(B.start_load(procs, probe.silence, silent, seconds, 0, tmp))
    return level


def finish_rooms(service, level: Level, seconds: float) -> tuple[int, int, int]:
    """Wait for the publishers and the recordings: (publish errors, not ended, incomplete)."""
    errors = 0
    for load in level.loads:
        load.wait(seconds + 180)
        errors += sum(1 for r in load.results.values() if r.get("error"))
    expected = sum(len(k) for k in level.keys)
    errors += expected - sum(len(load.results) for load in level.loads)
    ids = {r["id"] for r in level.rooms}
    resolver = B.Resolver(service, ids)
    ended, _ = B.wait_recordings_ended(service, resolver, ids, 120)
    incomplete = B.count_incomplete(service, resolver, level.rooms, seconds)
    return errors, len(ids) - ended, incomplete


def mix_dropped(service) -> dict[str, float]:
    """Seconds of seat audio the node's room mixes dropped so far, by reason (late, early,
    behind: the mix thread fell behind), from `/metrics`."""
    with urllib.request.urlopen(f"{service.api}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    metric = r'^afterlive_mix_dropped_seconds_total\{reason="(\w+)"\} (\S+)$'
    found = re.findall(metric, text, re.M)
    return {why: float(value) for why, value in found}


# ---------------------------------------------------------------------------------------------
# 1. CPU per room


def cpu_phase(args, service, inputs: Inputs, procs, tmp, report) -> None:
    k, seconds, stagger, settle = args.cpu_rooms, args.cpu_seconds, 1.0, 4.0
    idle = B.CpuWindow({"serve": [service.serve_pid]})
    idle.begin()
    time.sleep(args.idle_seconds)
    idle.end()
    per_room: dict[str, list[float]] = {"hosts": [], "single": []}
    weed: dict[str, list[float]] = {"hosts": [], "single": []}
    for r in range(args.rounds):
        for side in ("hosts", "single") if r % 2 == 0 else ("single", "hosts"):
            rooms, seats = (k, VIDEO_SEATS) if side == "hosts" else (VIDEO_SEATS * k, 1)
            say(f"cpu round {r + 1}: {rooms} video rooms of {seats} seat(s), {seconds:g} s")
            duration = seconds + stagger + settle + 2
            level = start_rooms(
                service, "video", rooms, seats, inputs.video, duration, stagger, procs, tmp
            )
            time.sleep(stagger + settle)
            window = B.CpuWindow(
                {
                    "serve": [service.serve_pid],
                    "weed": [service.weed_pid] if service.weed_pid else [],
                    "publishers": [load.proc.pid for load in level.loads],
                }
            )
            window.begin()
            time.sleep(seconds)
            window.end()
            errors, not_ended, incomplete = finish_rooms(service, level, duration)
            # Per 4-host room, or per four single-host rooms: the same four streams.
            groups = k
            per_room[side].append(window.percent("serve") / groups)
            weed[side].append(window.percent("weed") / groups)
            say(
                f"  {window.describe()}; serve {per_room[side][-1]:.2f}% per group of four "
                f"streams; publish errors {errors}, not ended {not_ended}, incomplete {incomplete}"
            )
            if errors or not_ended or incomplete:
                report.notes.append(
                    f"cpu round {r + 1}, {side}: publish errors {errors}, recordings not ended "
                    f"{not_ended}, incomplete playlists {incomplete}"
                )
            report.notes.append(
                f"cpu round {r + 1}, {rooms} x {seats}-seat rooms: {window.describe()} "
                "(% of one core)."
            )
    hosts, single = min(per_room["hosts"]), min(per_room["single"])
    report.rows.append(
        Row(
            figure=f"CPU of `serve` per 4-host 720p30 video room (4 copied tracks + mix + speech),"
            f" {k} rooms x {seconds:g} s, best of {args.rounds} (% of one core)",
            afterlive=f"{hosts:.2f}%",
            peer=f"{single:.2f}% (four single-host rooms, copy only)",
            ratio=f"{hosts / single:.2f}x" if single > 0 else "-",
            goal=f"<= {GOALS['cpu']:g}% a room",
            met="yes" if hosts <= GOALS["cpu"] else "no",
        )
    )
    extra = hosts - single
    report.rows.append(
        Row(
            figure="same, what the mix + speech add per room (4-host room less four single rooms)",
            afterlive=f"{extra:.2f}%",
        )
    )
    report.notes.append(
        "CPU rounds, serve % of a core per 4-host room / per four single rooms: "
        + ", ".join(
            f"{a:.2f} / {b:.2f}" for a, b in zip(per_room["hosts"], per_room["single"], strict=True)
        )
        + f"; the embedded store (weed) adds {min(weed['hosts']):.2f}% / "
        f"{min(weed['single']):.2f}% (not counted); serve idle {idle.percent('serve'):.2f}% "
        "(not subtracted). Rounds alternate which side goes first."
    )
    args.cpu_result = (hosts, single)


# ---------------------------------------------------------------------------------------------
# 2 and 3. Rooms at once: visibility, and the probe room's glass-to-mix


@dataclass
class MixSeg:
    uri: str
    start: float  # Unix time of its first sample (EXT-X-PROGRAM-DATE-TIME)
    duration: float
    seen_at: float
    data: bytes = b""


class MixWatch(B.PlaylistWatch):
    """A mix playlist: each segment's absolute PROGRAM-DATE-TIME; with `download`, its bytes."""

    def __init__(self, name: str, fetch, get, interval_s: float, download: bool) -> None:
        super().__init__(name, fetch, lambda uri: True, interval_s)
        self.get = get
        self.download = download
        self.mix: dict[str, MixSeg] = {}

    def poll(self) -> None:
        self.polls += 1
        try:
            text = self.fetch()
        except Exception:
            self.errors += 1
            return
        seen_at = time.time()
        if not text:
            return
        pdt: float | None = None
        duration = 0.0
        for line in text.splitlines():
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                value = line.split(":", 1)[1].replace("Z", "+00:00")
                pdt = datetime.fromisoformat(value).timestamp()
            elif line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",", 1)[0])
            elif line and not line.startswith("#"):
                if line not in self.mix and pdt is not None:
                    seg = MixSeg(line, pdt, duration, seen_at)
                    if self.download:
                        with contextlib.suppress(Exception):
                            seg.data = self.get(line)
                    self.mix[line] = seg
                pdt = None
        self.ended = "#EXT-X-ENDLIST" in text


def mix_watch(service, resolver, room_id: str, interval_s: float, download: bool) -> MixWatch:
    reader = service.reader

    def prefix() -> str | None:
        rec = resolver(room_id)
        return f"recordings/{rec}/mix/" if rec else None

    def fetch() -> str | None:
        base = prefix()
        if base is None:
            return None
        status, body = reader.request("GET", base + "index.m3u8")
        return body.decode() if status == 200 else None

    def get(uri: str) -> bytes:
        status, body = reader.request("GET", f"{prefix()}{uri}")
        return body if status == 200 else b""

    return MixWatch(f"mix {room_id}", fetch, get, interval_s, download)


def mix_lags_ms(watch: MixWatch) -> list[float]:
    """Seen - (PROGRAM-DATE-TIME + EXTINF) of each live mix segment (not the final one)."""
    segs = sorted(watch.mix.values(), key=lambda s: s.start)[:-1]
    return [(s.seen_at - (s.start + s.duration)) * 1000 for s in segs]


def glass_to_mix(watch: MixWatch, t0: float, inputs: Inputs, seconds: float) -> dict:
    """Each burst found in the stored mix: (seen - sent, placed - sent) in ms."""
    sent = [
        t0 + loop * inputs.period_s + onset
        for loop in range(int(seconds // inputs.period_s) + 2)
        for onset in inputs.onsets_s
        if loop * inputs.period_s + onset < seconds
    ]
    segs = sorted((s for s in watch.mix.values() if s.data), key=lambda s: s.start)
    if not segs or not sent:
        return {"delay": [], "placed": [], "missing": len(sent)}
    rate = 48000
    origin = segs[0].start
    span = segs[-1].start + segs[-1].duration - origin
    timeline = np.zeros(int((span + 1) * rate), np.float32)
    owner = np.full(timeline.size, -1, np.int32)
    for i, seg in enumerate(segs):
        with contextlib.suppress(Exception):
            rate, samples, _ = decode_audio(seg.data, "mpegts")
            at = round((seg.start - origin) * rate)
            n = min(samples.size, timeline.size - at)
            timeline[at : at + n] = samples[:n]
            owner[at : at + n] = i
    delay, placed, matched = [], [], set()
    for index in find_onsets(timeline, rate):
        wall = origin + index / rate
        nearest = min(sent, key=lambda s: abs(s - wall))
        if abs(nearest - wall) > BURST_PERIOD_S / 2 or owner[index] < 0:
            continue
        matched.add(nearest)
        delay.append((segs[owner[index]].seen_at - nearest) * 1000)
        placed.append((wall - nearest) * 1000)
    # Bursts sent well inside the stored mix's span that were not found in it.
    live = [s for s in sent if origin + 1 < s < segs[-1].start - 1]
    return {"delay": delay, "placed": placed, "missing": sum(1 for s in live if s not in matched)}


def copy_watches(service, resolver, room: dict, seats: int, watchers, max_s, poll_s):
    renditions = ["source"] + ([f"hosts/{seats}/source"] if seats > 1 else [])
    return [
        (r, watchers.add(B.store_watch(service, resolver, room["id"], r, poll_s), max_s))
        for r in renditions
    ]


@dataclass
class LevelResult:
    kind: str
    rooms: int
    seats: int
    passed: bool = False
    copy: list[float] = field(default_factory=list)
    mix: list[float] = field(default_factory=list)
    delay: dict = field(default_factory=dict)
    cpu: str = ""
    serve_pct: float = 0.0
    errors: int = 0
    not_ended: int = 0
    incomplete: int = 0
    dropped: float = 0.0  # of the seats' audio, dropped because the mix thread fell behind
    late_share: float = float("nan")  # of the seats' audio, dropped by the mix as late
    lag_p99: float | None = None
    profile: str = ""

    def within(self, values: list[float]) -> float:
        return sum(1 for v in values if v <= WITHIN_MS) / len(values) if values else 0.0


def run_level(args, service, kind: str, n: int, inputs: Inputs, procs, tmp) -> LevelResult:
    seats = VIDEO_SEATS if kind == "video" else AUDIO_SEATS
    files = inputs.video if kind == "video" else inputs.audio
    seconds, stagger = args.seconds, args.stagger
    probe = kind == "audio"
    rooms_n = n - 1 if probe else n  # the probe room is one of the n
    say(f"{kind}: {n} rooms of {seats} seats at once, {seconds:g} s")
    result = LevelResult(kind=kind, rooms=n, seats=seats)
    drops0 = mix_dropped(service)
    level = start_rooms(
        service,
        kind,
        rooms_n,
        seats,
        files,
        seconds,
        stagger,
        procs,
        tmp,
        probe=inputs if probe else None,
    )
    ids = {r["id"] for r in level.rooms}
    resolver = B.Resolver(service, ids)
    sample_n = min(rooms_n, args.sample_rooms)
    spread = max(1, sample_n - 1)
    sampled = [level.rooms[round(i * (rooms_n - 1) / spread)] for i in range(sample_n)]
    sampled = list({r["id"]: r for r in sampled}.values())
    watchers = B.Watchers()
    max_s = seconds + stagger + 120
    poll_s = args.poll_ms / 1000
    copies = [
        (room, copy_watches(service, resolver, room, seats, watchers, max_s, poll_s))
        for room in sampled
    ]
    mixes = [
        watchers.add(mix_watch(service, resolver, room["id"], poll_s, False), max_s)
        for room in sampled
    ]
    probe_watch = None
    if probe:
        watch = mix_watch(service, resolver, level.rooms[-1]["id"], 0.02, True)
        probe_watch = watchers.add(watch, max_s)
    window = B.CpuWindow(
        {
            "serve": [service.serve_pid],
            "weed": [service.weed_pid] if service.weed_pid else [],
            "publishers": [load.proc.pid for load in level.loads],
        }
    )
    time.sleep(stagger + 3)
    window.begin()
    measure_s = max(1.0, seconds - 6)
    profile = None
    if args.profile is not None:
        profile = B.start_profile(args, service, f"{kind}-{n}", min(10.0, measure_s), procs)
    time.sleep(measure_s)
    window.end()
    if profile is not None:
        result.profile = B.finish_profile(profile, procs)
    result.cpu = window.describe()
    result.serve_pct = window.percent("serve")
    result.errors, result.not_ended, result.incomplete = finish_rooms(service, level, seconds)
    watchers.wait_ended(30)
    result.lag_p99 = max((load.summary.get("lag_p99_ms") or 0) for load in level.loads)
    timelines = {
        seat: B.Timeline(files[seat - 1], seconds, video=kind == "video") for seat in (1, seats)
    }
    for room, watches in copies:
        for rendition, watch in watches:
            seat = 1 if rendition == "source" else seats
            load = level.loads[seat - 1]
            t0 = load.results.get(f"{service.rtmp}/{level.keys[level.rooms.index(room)][seat - 1]}")
            if t0 and t0.get("t0"):
                result.copy += B.latencies_ms(watch, t0["t0"], timelines[seat])[0]
    for watch in mixes:
        result.mix += mix_lags_ms(watch)
    if probe_watch is not None:
        t0 = level.loads[seats].results.get(f"{service.rtmp}/{level.keys[-1][0]}", {}).get("t0")
        if t0:
            result.delay = glass_to_mix(probe_watch, t0, inputs, seconds)
            result.mix += mix_lags_ms(probe_watch)
    drops = mix_dropped(service)
    audio_s = rooms_n * seats * seconds
    result.dropped = (drops.get("behind", 0.0) - drops0.get("behind", 0.0)) / audio_s
    result.late_share = (drops.get("late", 0.0) - drops0.get("late", 0.0)) / audio_s
    result.passed = (
        result.within(result.copy) >= B.PASS_FRACTION
        and result.within(result.mix) >= B.PASS_FRACTION
        and not (result.errors or result.not_ended or result.incomplete)
        and service.alive()
    )
    say(f"  {'PASS' if result.passed else 'FAIL'}: {describe(result)}")
    return result


def describe(r: LevelResult) -> str:
    d = r.delay.get("delay", [])
    text = (
        f"copied segments {r.within(r.copy):.1%} of {len(r.copy)} within 1 s (p50 "
        f"{pct(r.copy, 0.5):.0f}, p99 {pct(r.copy, 0.99):.0f} ms); mix segments "
        f"{r.within(r.mix):.1%} of {len(r.mix)} (p50 {pct(r.mix, 0.5):.0f}, p99 "
        f"{pct(r.mix, 0.99):.0f} ms); serve {r.serve_pct / r.rooms:.2f}% per room; CPU {r.cpu}; "
        f"publish errors {r.errors}, not ended {r.not_ended}, incomplete {r.incomplete}; "
        f"seat audio dropped by the mix as it fell behind {r.dropped:.1%}, as late "
        ""
        f"{r.late_share:.1%}; publisher lag p99 {r.lag_p99} ms"
    )
    if r.delay:
        text += (
            f"; glass-to-mix p50 {pct(d, 0.5):.0f} ms, max {max(d, default=float('nan')):.0f} ms"
            f" (n={len(d)}, missing {r.delay['missing']}), placed "
            f"{pct(r.delay['placed'], 0.5):+.0f} ms"
        )
    return text


def levels_phase(args, service, kind: str, inputs: Inputs, procs, tmp, report) -> None:
    levels = getattr(args, f"{kind}_levels")
    if not levels:
        return
    results: list[LevelResult] = []
    for n in levels:
        if not service.alive():
            break
        results.append(run_level(args, service, kind, n, inputs, procs, tmp))
        time.sleep(2)
        if not results[-1].passed and not args.keep_going:
            break
    best = max((r.rooms for r in results if r.passed), default=0)
    tried = ", ".join(str(r.rooms) for r in results)
    label = "four-host 720p30 video" if kind == "video" else "ten-speaker audio"
    top = max(results, key=lambda r: r.rooms)
    report.rows.append(
        Row(
            figure=f"concurrent {label} rooms, >= 99% of copied and of mix segments visible "
            f"within 1 s (tried {tried}; {args.seconds:g} s each)",
            afterlive=str(best) if best else f"< {min(r.rooms for r in results)}",
            goal=f">= {GOALS[kind]}",
            met="yes" if best >= GOALS[kind] else "no",
        )
    )
    report.rows.append(
        Row(
            figure=f"same, at {top.rooms} rooms: segment visibility p50 / p99, copied | mix "
            "(mix from PROGRAM-DATE-TIME + EXTINF)",
            afterlive=f"{pct(top.copy, 0.5):.0f} / {pct(top.copy, 0.99):.0f} ms | "
            f"{pct(top.mix, 0.5):.0f} / {pct(top.mix, 0.99):.0f} ms",
            goal="<= 1 s",
        )
    )
    report.rows.append(
        Row(
            figure=f"same, share of the seats' audio the mix dropped as 'late' at {top.rooms} "
            "rooms (serve's log)",
            afterlive=f"{top.late_share:.1%}",
            goal="0%",
            met="yes" if top.late_share == 0 else "no",
        )
    )
    report.rows.append(
        Row(
            figure=f"same, CPU of `serve` per room at {top.rooms} rooms (% of one core)",
            afterlive=f"{top.serve_pct / top.rooms:.2f}%",
        )
    )
    for r in results:
        if r.delay:
            d = r.delay["delay"]
            report.rows.append(
                Row(
                    figure=f"glass-to-mix: a host's burst sent -> in a stored mix segment, "
                    f"{r.rooms} audio rooms live: p50 / max (n={len(d)})",
                    afterlive=f"{pct(d, 0.5):.0f} / {max(d, default=float('nan')):.0f} ms",
                )
            )
        report.notes.append(
            f"{r.rooms} {kind} rooms of {r.seats} seats: {'pass' if r.passed else 'FAIL'}; "
            + describe(r)
            + "."
            + (f" Profile of serve (py-spy --gil): {r.profile}" if r.profile else "")
        )


def probe_alone(args, service, inputs: Inputs, procs, tmp, report) -> None:
    """Glass-to-mix with nothing else live: one 4-seat audio room, the burst and 3 silences."""
    seconds = args.seconds
    say(f"glass-to-mix alone: one 4-seat probe room, {seconds:g} s")
    rooms = service.create_rooms("audio", 1, "probe")
    keys = invite_hosts(service, rooms[0], 3)
    loads = [
        B.start_load(procs, inputs.burst if i == 0 else inputs.silence, [f"{service.rtmp}/{k}"],
                     seconds, 0, tmp)
        for i, k in enumerate(keys)
    ]  # fmt: skip
    resolver = B.Resolver(service, {rooms[0]["id"]})
    watchers = B.Watchers()
    watch = watchers.add(mix_watch(service, resolver, rooms[0]["id"], 0.02, True), seconds + 120)
    for load in loads:
        load.wait(seconds + 120)
    B.wait_recordings_ended(service, resolver, {rooms[0]["id"]}, 60)
    watchers.wait_ended(20)
    t0 = loads[0].results.get(f"{service.rtmp}/{keys[0]}", {}).get("t0")
    found = glass_to_mix(watch, t0, inputs, seconds) if t0 else {"delay": [], "placed": []}
    d, lags = found["delay"], mix_lags_ms(watch)
    say(f"  glass-to-mix {d}; placed {found['placed']}; mix lags {lags}")
    report.rows.append(
        Row(
            figure=f"glass-to-mix, one probe room alone: p50 / max (n={len(d)})",
            afterlive=f"{pct(d, 0.5):.0f} / {max(d, default=float('nan')):.0f} ms",
        )
    )
    report.notes.append(
        f"Probe room alone: burst placed in the mix at {pct(found['placed'], 0.5):+.0f} ms "
        f"(median; range {min(found['placed'], default=0):+.0f} to "
        f"{max(found['placed'], default=0):+.0f}) from its send time; mix segments visible "
        f"p50 {pct(lags, 0.5):.0f} ms, max {max(lags, default=float('nan')):.0f} ms after their "
        "PROGRAM-DATE-TIME + EXTINF."
    )


# ---------------------------------------------------------------------------------------------
# 4. The mix's peer: ffmpeg amix, offline (bench/mix.py)


def peer_phase(args, report) -> None:
    import mix as bench_mix

    work = Path(tempfile.mkdtemp(prefix="bench-rooms-mix-"))
    try:
        s = args.peer_seconds
        clips = [
            speechlike_clip(work / f"seat{n}.m4a", seconds=s, lufs=-20, seed=n)
            for n in range(1, AUDIO_SEATS + 1)
        ]
        decoded = [bench_mix.frames_of(p) for p in clips]
        for n in (VIDEO_SEATS, AUDIO_SEATS):
            say(f"peer: {n} seats, {s:g} s, afterlive RoomMix + RoomSpeech vs ffmpeg amix")
            ours = min(bench_mix.ours(decoded[:n], work, speech=True) for _ in range(2))
            peer = min(bench_mix.ffmpeg_amix(clips[:n], work) for _ in range(2))
            report.rows.append(
                Row(
                    figure=f"mix + speech of {n} seats, offline (bench/mix.py), % of one core",
                    afterlive=f"{100 * ours / s:.2f}%",
                    peer=f"{100 * peer / s:.2f}% (ffmpeg amix, AAC fast, HLS)",
                    ratio=f"{ours / peer:.2f}x" if peer > 0 else "-",
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------


def print_report(report, args) -> None:
    argv = " ".join(sys.argv[1:])
    print(
        f"\nafterlive live rooms, {time.strftime('%Y-%m-%d %H:%M')}, `python bench/rooms.py"
        f"{' ' + argv if argv else ''}`, {os.cpu_count()} cores, afterlive at "
        f"{B.git_version()}; load average {args.load_before} before, {load_average()} after\n"
    )
    print("| figure | afterlive | peer | ratio | goal | met? |")
    print("|---|---:|---:|---:|---|---|")
    for r in report.rows:
        print(f"| {r.figure} | {r.afterlive} | {r.peer} | {r.ratio} | {r.goal} | {r.met} |")
    print("\nNotes:")
    for note in report.notes:
        print(f"- {note}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~3 minute run")
    parser.add_argument("--cpu-rooms", type=int, default=None, help="4-host rooms a window (2)")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="(30)")
    parser.add_argument("--rounds", type=int, default=None, help="windows of each side (2)")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--video-levels", default=None, help="four-host rooms (5,10,20)")
    parser.add_argument("--audio-levels", default=None, help="ten-speaker rooms (10,20,30)")
    parser.add_argument("--keep-going", action="store_true", help="run levels past a failure")
    parser.add_argument("--seconds", type=float, default=None, help="per level (30)")
    parser.add_argument("--peer-seconds", type=float, default=30.0, help="offline mix media")
    parser.add_argument("--stagger", type=float, default=2.0, help="spread of publish starts")
    parser.add_argument("--sample-rooms", type=int, default=10, help="rooms polled per level")
    parser.add_argument("--poll-ms", type=float, default=100.0, help="poll interval under load")
    parser.add_argument("--profile", type=Path, help="py-spy the serve process at each level")
    parser.add_argument("--phases", default="cpu,probe,video,audio,peer")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "cpu_rooms": 1 if quick else 2,
        "cpu_seconds": 15.0 if quick else 30.0,
        "rounds": 1 if quick else 2,
        "video_levels": "3" if quick else "5,10,20",
        "audio_levels": "5" if quick else "10,20,30",
        "seconds": 16.0 if quick else 30.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.video_levels = B.parse_levels(args.video_levels)
    args.audio_levels = B.parse_levels(args.audio_levels)
    if args.profile is not None:
        args.profile = args.profile.resolve()
    args.load_before = load_average()
    phases = args.phases.split(",")

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    procs = B.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="afterlive-bench-rooms-"))
    report = B.Report()
    service = None
    try:
        say(f"temp dir {tmp}; encoding inputs")
        inputs = encode_inputs(tmp)
        say(f"burst onsets in the probe file: {[round(t, 3) for t in inputs.onsets_s]}")
        service = B.Afterlive(tmp, procs, {"PYTHONPATH": str(REPO)})
        service.start()
        say(f"afterlive serve pid {service.serve_pid}, weed pid {service.weed_pid}")
        B.warm_up(service, {"video": inputs.video[0], "audio": inputs.audio[0]}, procs, tmp)
        runs = [
            ("cpu", lambda: cpu_phase(args, service, inputs, procs, tmp, report)),
            ("probe", lambda: probe_alone(args, service, inputs, procs, tmp, report)),
            ("video", lambda: levels_phase(args, service, "video", inputs, procs, tmp, report)),
            ("audio", lambda: levels_phase(args, service, "audio", inputs, procs, tmp, report)),
        ]
        for name, run in runs:
            if name not in phases:
                continue
            if not service.alive():
                report.notes.append(f"{name}: not run, afterlive serve died:\n{service.log_tail()}")
                continue
            try:
                run()
            except Exception as exc:
                say(f"{name} failed: {type(exc).__name__}: {exc}")
                report.notes.append(f"{name} phase failed: {type(exc).__name__}: {exc}")
        problems = service.log_problems()
        if problems:
            report.notes.append(
                "Warnings and errors in the afterlive log (ids and numbers blanked): "
                + "; ".join(f"{n} x `{text}`" for text, n in problems.most_common(6))
            )
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        report.notes.append("interrupted before the end")
    finally:
        if service is not None:
            service.stop()
        procs.stop_all()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if "peer" in phases:
        with contextlib.suppress(KeyboardInterrupt):
            peer_phase(args, report)
    print_report(report, args)


if __name__ == "__main__":
    main()
