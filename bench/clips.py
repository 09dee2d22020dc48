"""Clips: a 10-minute accurate clip out of a 2 h recording vs a full re-encode by the ffmpeg CLI.

    python bench/clips.py [--quick] [--part clip|episode|all] [--rounds 3]
                          [--hours 2] [--clip-minutes 10] [--source-minutes 12]
                          [--episode-minutes 60]

The afterlive side is the production job: `api.clips.Clips.run` on a clip recorded with
`Catalog.start_clip`, against a recording seeded into a real catalog (SQLite) and an embedded
SeaweedFS. For each rendition (`source`: 720p30 H.264 + AAC, `audio`: AAC alone) it downloads
only the files the cut opens, re-encodes the two partial video ends (PyAV, libx264 veryfast
CRF 18), copies the whole segments inside the store (CopyObject), uploads the ends and the
playlists, and writes the clip's .m4a. Its wall time includes all of that; the table splits it
into downloads, cut, store copies, uploads and catalog work, measured through thin timing
wrappers around the store and catalog it is given and around `cut_clip`.

The peer is the ffmpeg CLI re-encoding the same range, accurately (input `-ss`/`-to`), with the
x264 preset and CRF the clipper uses for its ends and AAC at the source's bitrate, into one MP4 on
local disk, reading the local source file: it does not pay for the store at all.

The recording: one continuous 720p30 2.5 Mb/s H.264 + 128 kb/s AAC source with 2 s GOPs
(`--source-minutes`, 12 by default) is made with the ffmpeg binary (x264 ultrafast, testsrc2 and
a tone) and segmented by the production segmenter (`transcode.segmenter`) into 2 s TS segments
for `source` and `audio`. The recording is that source `hours * 60 / source-minutes` times in a
row, every object uploaded under its own key (the full 2 h: 7,200 objects, 2.6 GB), each
repetition after an EXT-X-DISCONTINUITY (its timestamps restart, as after a publisher's
reconnect). The clip sits inside the middle repetition, so its range is one continuous timeline
and starts and ends inside a segment (both ends re-encoded).

Rounds alternate who goes first; the table shows medians. The first round's clip is then played
through presigned URLs with PyAV (every frame decoded) and checked: duration within one frame of
the requested length, no decoder errors, an .m4a of the right length. The default run takes
~10 min on 2 cores, most of it the peer's re-encodes; `--quick` (a 3-minute source, 15-minute
recording, 2-minute clip, one round) ~1 min.

`--part episode` is the issue's second benchmark: a 60-minute episode (`--episode-minutes`) from
three 20-minute stereo 44.1 kHz AAC .m4a clips of speech-like sound at -28, -20 and -14 LUFS
(`tests.utils.media.speechlike_clip`, each rendered whole from its own seed). The afterlive side is
`transcode.episode.render_episode`: MP3 + M4A at -16 LUFS / -1 dBTP, 1 s crossfades, fades, tags,
chapters, both files metered again, HLS. The peer is the common recipe: pydub loads each clip into
memory (ffmpeg decodes it to 16-bit PCM), joins them with `append(crossfade=1000)`, fades the ends,
exports a WAV, then ffmpeg's `loudnorm` runs twice on it (measure; then the measured values with
`linear=true`) into MP3 128k. Each side runs in its own interpreter (`python -c`), timed from
outside from start to exit, while a thread reads VmRSS and VmHWM of its whole process tree (the
interpreter and its ffmpeg children) from /proc every 50 ms. getrusage's `ru_maxrss` is not used:
across vfork + exec a child starts from its parent's high-water mark. Afterwards ffmpeg's ebur128
meters round 1's outputs. Rounds alternate who goes first; the default run takes ~20 min, `--quick`
(a 6-minute episode, one round) ~40 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import av.logging
import imageio_ffmpeg
from sqlalchemy import insert, update

import api.clips
from api.clips import Clips
from storage import Catalog, EmbeddedStore, ObjectStore, StoreConfig
from storage import keys as K
from storage.catalog import sqlite_url
from storage.models import Recording, Segment
from tests.utils.clock import FakeClock
from tests.utils.media import loudness, speechlike_clip
from tests.utils.player import WHITELIST, presigned_copy
from transcode.clipper import ENCODERS
from transcode.playlists import MasterPlaylist, MediaPlaylist, MediaSegment, Variant
from transcode.segmenter import SegmentClosed, Segmenter, StreamInfo

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench"
RATE = 30
FRAME_S = 1 / RATE
VIDEO_KBPS = 2400  # + 128 kb/s of audio: a 2.5 Mb/s stream
AUDIO_KBPS = 128
GOP_S = 2
RETENTION = timedelta(days=30)
# Inside a 2 s segment, so both ends of the clip are partial and re-encoded.
CLIP_START_IN_SEGMENT_S = 1.25
PEER_PRESET = ENCODERS["h264"][1]  # the clipper's own x264 settings for its re-encoded ends


@dataclass(kw_only=True)
class Seeded:
    recording_id: str
    creator_id: str
    start_s: float  # the clip's range, seconds into the recording
    end_s: float
    source_start_s: float  # the same range in the local source file (the peer's input)
    source_end_s: float
    objects: int
    bytes: int
    seconds: float


@dataclass(kw_only=True)
class Parts:
    """Wall time of each part of one afterlive job, as the timing wrappers saw it."""

    seconds: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    cutting: bool = False
    catalog_in_cut_s: float = 0.0  # job progress updates made from inside cut_clip
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, part: str, seconds: float, size: int = 0) -> None:
        with self.lock:
            self.seconds[part] += seconds
            self.calls[part] += 1
            self.bytes[part] += size
            if self.cutting and part == "catalog":
                self.catalog_in_cut_s += seconds

    @contextmanager
    def timing(self, part: str, size: Callable[[], int] = lambda: 0) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - t0, size())


class TimedStore:
    """The job's store: every call passed on, the ones the job makes timed by kind."""

    def __init__(self, store: ObjectStore, parts: Parts) -> None:
        self._store = store
        self.parts = parts

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        with self.parts.timing("downloads", lambda: os.path.getsize(path)):
            self._store.download(key, path)

    def copy(self, src_key: str, dst_key: str):
        with self.parts.timing("copies"):
            info = self._store.copy(src_key, dst_key)
        self.parts.bytes["copies"] += info.size
        return info

    def put_file(self, key: str, path: str | os.PathLike[str], **kwargs: Any):
        with self.parts.timing("uploads", lambda: os.path.getsize(path)):
            return self._store.put_file(key, path, **kwargs)

    def put_bytes(self, key: str, data: bytes, **kwargs: Any):
        with self.parts.timing("uploads", lambda: len(data)):
            return self._store.put_bytes(key, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class TimedCatalog:
    """The job's catalog: every method call timed as `catalog` work."""

    def __init__(self, catalog: Catalog, parts: Parts) -> None:
        self._catalog = catalog
        self.parts = parts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._catalog, name)
        if not callable(attr) or name == "now":
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.parts.timing("catalog"):
                return attr(*args, **kwargs)

        return timed


@dataclass(kw_only=True)
class JobRun:
    seconds: float
    parts: Parts
    clip_id: str
    result: dict
    load: float


@dataclass(kw_only=True)
class PeerRun:
    seconds: float
    load: float


@dataclass(kw_only=True)
class Verified:
    playlist_s: float  # the job's answer: the clip's source playlist total
    decoded_s: float  # first frame's pts to last frame's end, as decoded
    frames: int
    audio_s: float  # decoded audio of the source rendition
    audio_playlist_s: float  # the `audio` rendition's playlist total
    m4a_s: float
    errors: list[str]
    segments: int
    copied: int
    peer_frames: int
    peer_s: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 min source, 15 min, 2 min clip")
    parser.add_argument("--part", choices=("clip", "episode", "all"), default="all")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--hours", type=float, help="recording length (default 2)")
    parser.add_argument("--clip-minutes", type=float, help="clip length (default 10)")
    parser.add_argument("--source-minutes", type=float, help="continuous source (default 12)")
    parser.add_argument("--episode-minutes", type=float, help="episode length (default 60)")
    parser.add_argument("--seed-threads", type=int, default=8)
    parser.add_argument("--store-dir", type=Path, help="parent of the store's directory")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.hours = args.hours or (0.25 if args.quick else 2.0)
    args.clip_minutes = args.clip_minutes or (2.0 if args.quick else 10.0)
    args.source_minutes = args.source_minutes or (3.0 if args.quick else 12.0)
    args.episode_minutes = args.episode_minutes or (6.0 if args.quick else 60.0)
    if args.clip_minutes * 60 + 2 * CLIP_START_IN_SEGMENT_S + 4 * GOP_S > args.source_minutes * 60:
        parser.error("the clip must fit inside the continuous source with a segment to spare")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.part in ("clip", "all"):
        bench_clip(args)
    if args.part in ("episode", "all"):
        bench_episode(args)


# --- the episode benchmark ----------------------------------------------------------------------

EPISODE_LUFS = (-28.0, -20.0, -14.0)  # the three clips: a quiet room, a normal one, a hot one
EPISODE_TARGET_LUFS = -16.0
EPISODE_CEILING_DB = -1.0
EPISODE_TOLERANCE_LU = 1.0
SAMPLE_S = 0.05  # how often the process tree's memory is read

# Each side runs in its own interpreter, so its memory is its own: the parent only samples /proc.
AFTERLIVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from transcode.episode import EpisodeMeta, EpisodePart, render_episode

    out, *clips = sys.argv[1:]
    result = render_episode(
        [EpisodePart(path=Path(p), title=Path(p).stem) for p in clips],
        meta=EpisodeMeta(title="Bench episode", programme="afterlive bench"),
        directory=Path(out),
        crossfade_s=1.0,
        target_lufs=-16.0,
        true_peak_db=-1.0,
        mp3_bitrate="128k",
    )
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print(json.dumps({
        "programme_s": result.duration_s,
        "elapsed_s": result.elapsed_s,
        "steps": result.pass_s,
        "python_hwm_kb": int(status["VmHWM"].split()[0]),
        "mp3": str(result.mp3_path),
        "m4a": str(result.m4a_path),
        "reported": [result.mp3_loudness.integrated_lufs, result.mp3_loudness.true_peak_db],
    }))
    """
)

# The common recipe: pydub in memory, then ffmpeg's loudnorm in two passes on the exported WAV.
NAIVE_SCRIPT = textwrap.dedent(
    """
    import json, subprocess, sys, time, warnings
    from pathlib import Path

    # pydub looks for ffmpeg on PATH at import; it is given the binary below.
    warnings.filterwarnings("ignore", "Couldn't find ffmpeg", RuntimeWarning)
    from pydub import AudioSegment

    ffmpeg, out, *clips = sys.argv[1:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    AudioSegment.converter = ffmpeg
    started = time.monotonic()
    steps = {}

    def step(name):
        steps[name] = time.monotonic() - started - sum(steps.values())

    def mix(wav):
        # codec="aac" only spares pydub its ffprobe call (no ffprobe here); it then decodes to
        # the 16-bit PCM it picks for AAC anyway.
        segments = [AudioSegment.from_file(p, codec="aac") for p in clips]
        step("decode")
        programme = segments[0]
        for segment in segments[1:]:
            programme = programme.append(segment, crossfade=1000)
        programme = programme.fade_in(500).fade_out(1000)
        step("mix")
        programme.export(wav, format="wav")
        step("export")
        return programme.frame_count() / programme.frame_rate

    def loudnorm(args):
        run = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-y", *args]
        err = subprocess.run(run, capture_output=True, text=True, check=True).stderr
        return json.loads(err[err.rindex("{") : err.rindex("}") + 1])

    wav, mp3 = out / "programme.wav", out / "episode.mp3"
    programme_s = mix(wav)  # the PCM is freed when mix returns
    target = "I=-16:TP=-1:LRA=11"
    m = loudnorm(["-i", str(wav), "-af", f"loudnorm={target}:print_format=json", "-f", "null", "-"])
    step("loudnorm_1")
    measured = (
        f"measured_I={m['input_i']}:measured_TP={m['input_tp']}:measured_LRA={m['input_lra']}:"
        f"measured_thresh={m['input_thresh']}:offset={m['target_offset']}"
    )
    second = loudnorm([
        "-i", str(wav), "-af", f"loudnorm={target}:{measured}:linear=true:print_format=json",
        "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", str(mp3),
    ])
    step("loudnorm_2")
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print(json.dumps({
        "programme_s": programme_s,
        "elapsed_s": time.monotonic() - started,
        "steps": steps,
        "python_hwm_kb": int(status["VmHWM"].split()[0]),
        "mp3": str(mp3),
        "wav_bytes": wav.stat().st_size,
        "measured": [float(m["input_i"]), float(m["input_tp"])],
        "normalization_type": second.get("normalization_type", "?"),
    }))
    """
)


@dataclass(kw_only=True)
class SideRun:
    """One side's render, run as its own process tree and sampled from outside."""

    side: str
    seconds: float  # wall time of the whole subprocess, interpreter start to exit
    load: float
    report: dict  # what the side printed: programme length, steps, its own VmHWM, outputs
    tree_rss_kb: int  # the largest sum of VmRSS over the tree at one sample
    tree_hwm_kb: int  # the largest sum of VmHWM over the processes alive at one sample
    python_kb: int  # the side's interpreter, its own VmHWM at exit
    ffmpeg_kb: int  # the largest ffmpeg process's VmHWM
    processes: int  # processes of the tree seen by the sampler

    @property
    def rtf(self) -> float:
        return self.report["programme_s"] / self.seconds


@dataclass(kw_only=True)
class EpisodeInput:
    path: Path
    seconds: float
    lufs: float  # measured, with the true peak
    peak_db: float


class TreeSampler(threading.Thread):
    """Reads VmRSS and VmHWM of a process and its descendants from /proc every `SAMPLE_S`.

    Children not yet past exec still carry the parent's name and share its memory (vfork), so
    they are skipped: counting them would add the parent twice.
    """

    def __init__(self, root: int) -> None:
        super().__init__(name="episode-rss-sampler", daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.tree_rss_kb = 0
        self.tree_hwm_kb = 0
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, VmHWM kB)

    def run(self) -> None:
        while not self.stop.is_set():
            tree = _process_tree(self.root)
            self.tree_rss_kb = max(self.tree_rss_kb, sum(rss for _, _, rss, _ in tree))
            self.tree_hwm_kb = max(self.tree_hwm_kb, sum(hwm for *_, hwm in tree))
            for pid, name, _, hwm in tree:
                self.peaks[pid] = (name, max(hwm, self.peaks.get(pid, (name, 0))[1]))
            self.stop.wait(SAMPLE_S)


def _process_tree(root: int) -> list[tuple[int, str, int, int]]:
    """(pid, name, VmRSS kB, VmHWM kB) of `root` and its exec'd descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found: list[tuple[int, str, int, int]] = []
    root_name = ""
    stack = [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines())
            name = fields["Name"].strip()
            rss, hwm = (int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM"))
        except (OSError, KeyError, ValueError):
            continue  # exited, or a zombie without memory
        if pid == root:
            root_name = name
        elif name == root_name:
            continue
        found.append((pid, name, rss, hwm))
    return found


def bench_episode(args: argparse.Namespace) -> None:
    """An episode from three clips of a third of its length each (by default 60 minutes from
    three of 20): afterlive's renderer vs pydub + two-pass loudnorm, each in its own process."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="afterlive-episode-", dir=args.store_dir) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        inputs = make_episode_inputs(tmp, args.episode_minutes * 60 / len(EPISODE_LUFS))
        make_s = time.perf_counter() - t0
        log(
            f"episode inputs made in {make_s:.0f} s: "
            + ", ".join(f"{i.path.name} {i.lufs:.1f} LUFS / {i.peak_db:.1f} dBTP" for i in inputs)
        )
        runs: dict[str, list[SideRun]] = {"afterlive": [], "naive": []}
        for r in range(args.rounds):
            order = ("afterlive", "naive") if r % 2 == 0 else ("naive", "afterlive")
            for side in order:
                out = tmp / f"{side}-{r}"
                run = run_episode_side(side, out, [i.path for i in inputs])
                runs[side].append(run)
                log(
                    f"round {r + 1}: {side} {run.seconds:.1f} s ({run.rtf:.1f}x realtime, load "
                    f"{run.load:.2f}), tree peak {run.tree_rss_kb / 1024:.0f} MB "
                    f"(bound {run.tree_hwm_kb / 1024:.0f} MB), steps "
                    + ", ".join(f"{k} {v:.1f}" for k, v in run.report["steps"].items())
                )
                if r > 0:  # round 1's files are kept for the loudness check
                    shutil.rmtree(out)
        t0 = time.perf_counter()
        checked = {
            "afterlive MP3": loudness(runs["afterlive"][0].report["mp3"]),
            "afterlive M4A": loudness(runs["afterlive"][0].report["m4a"]),
            "naive MP3": loudness(runs["naive"][0].report["mp3"]),
        }
        log(f"outputs metered in {time.perf_counter() - t0:.0f} s: {checked}")
        print_episode_table(
            args, inputs, runs, checked, make_s=make_s, total_s=time.monotonic() - started
        )


def make_episode_inputs(tmp: Path, seconds: float) -> list[EpisodeInput]:
    """Three stereo 44.1 kHz AAC .m4a clips of speech-like sound, as the clips API makes them,
    each rendered whole (no looping) from its own seed, at the loudnesses of `EPISODE_LUFS`."""
    inputs = []
    for n, lufs in enumerate(EPISODE_LUFS):
        path = tmp / f"clip-{n + 1}.m4a"
        speechlike_clip(path, seconds=seconds, lufs=lufs, stereo=True, seed=n + 1)
        measured, peak = loudness(path)
        with av.open(str(path)) as container:
            duration = container.duration / av.time_base
        inputs.append(EpisodeInput(path=path, seconds=duration, lufs=measured, peak_db=peak))
    return inputs


def run_episode_side(side: str, out: Path, clips: list[Path]) -> SideRun:
    if side == "afterlive":
        command = [sys.executable, "-c", AFTERLIVE_SCRIPT, str(out), *map(str, clips)]
    else:
        command = [sys.executable, "-c", NAIVE_SCRIPT, FFMPEG, str(out), *map(str, clips)]
    load = os.getloadavg()[0]
    log(f"{side}: starting at load {load:.2f}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        stdout, _ = proc.communicate()
        seconds = time.perf_counter() - t0
    finally:
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"episode side {side} exited with {proc.returncode}")
    report = json.loads(stdout.strip().splitlines()[-1])
    ffmpegs = [hwm for name, hwm in sampler.peaks.values() if name.startswith("ffmpeg")]
    return SideRun(
        side=side,
        seconds=seconds,
        load=load,
        report=report,
        tree_rss_kb=sampler.tree_rss_kb,
        tree_hwm_kb=sampler.tree_hwm_kb,
        python_kb=report["python_hwm_kb"],
        ffmpeg_kb=max(ffmpegs, default=0),
        processes=len(sampler.peaks),
    )


def print_episode_table(
    args: argparse.Namespace,
    inputs: list[EpisodeInput],
    runs: dict[str, list[SideRun]],
    checked: dict[str, tuple[float, float]],
    *,
    make_s: float,
    total_s: float,
) -> None:
    ours, peer = runs["afterlive"], runs["naive"]

    def median(side: list[SideRun], value: Callable[[SideRun], float]) -> float:
        return statistics.median(value(run) for run in side)

    programme_min = ours[0].report["programme_s"] / 60
    loads = [run.load for run in ours + peer]
    print(
        f"\n{programme_min:.1f}-minute episode from {len(inputs)} clips of "
        f"{inputs[0].seconds / 60:.1f} min (stereo 44.1 kHz AAC .m4a at "
        + ", ".join(f"{i.lufs:.1f}" for i in inputs)
        + " LUFS) to MP3 128k at -16 LUFS / -1 dBTP: afterlive `render_episode` vs pydub + "
        f"two-pass loudnorm; median of {args.rounds} alternating rounds; load average (1 min) "
        f"{min(loads):.2f}-{max(loads):.2f} at the start of the timed runs; inputs made in "
        f"{make_s:.0f} s, run {total_s:.0f} s\n"
    )

    def row(name: str, value: Callable[[SideRun], float], fmt: str, goal: str = "") -> None:
        """Time rows show naive / afterlive as "Nx"; memory rows as afterlive's share, "1/N"."""
        a, p = median(ours, value), median(peer, value)
        shown = f"{p / a:.1f}x" if "MB" not in name else f"1/{p / a:.1f}"
        met = "" if not goal else ("yes" if p / a >= 5 else "no")
        print(f"| {name} | {fmt.format(a)} | {fmt.format(p)} | {shown} | {goal} | {met} |")

    print("| figure (medians) | afterlive | pydub + loudnorm | ratio | goal | met? |")
    print("|---|---:|---:|---:|---|---|")
    row("wall time (s), whole process tree", lambda r: r.seconds, "{:.1f}")
    speed = median(ours, lambda r: r.rtf) / median(peer, lambda r: r.rtf)
    print(
        f"| realtime factor (programme / wall time) | {median(ours, lambda r: r.rtf):.1f}x "
        f"| {median(peer, lambda r: r.rtf):.1f}x | {speed:.1f}x faster | >= 5x "
        f"| {'yes' if speed >= 5 else 'no'} |"
    )
    row(
        "peak RSS of the tree (MB): largest sum of VmRSS at one 50 ms sample",
        lambda r: r.tree_rss_kb / 1024,
        "{:.0f}",
        "<= 1/5",
    )
    row(
        "upper bound (MB): largest sum of VmHWM of the processes alive at one sample",
        lambda r: r.tree_hwm_kb / 1024,
        "{:.0f}",
        "<= 1/5",
    )
    row("the side's Python process, its VmHWM (MB)", lambda r: r.python_kb / 1024, "{:.0f}")
    row("largest ffmpeg process, its VmHWM (MB)", lambda r: r.ffmpeg_kb / 1024, "{:.0f}")
    a_mp3, a_m4a, p_mp3 = checked["afterlive MP3"], checked["afterlive M4A"], checked["naive MP3"]

    def meets(lufs: float, peak: float) -> str:
        ok = abs(lufs - EPISODE_TARGET_LUFS) <= EPISODE_TOLERANCE_LU and peak <= EPISODE_CEILING_DB
        return "yes" if ok else "no"

    print(
        f"| MP3 loudness, ffmpeg ebur128 on round 1's file (LUFS / dBTP) "
        f"| {a_mp3[0]:.1f} / {a_mp3[1]:.1f} | {p_mp3[0]:.1f} / {p_mp3[1]:.1f} | "
        f"| -16 ±1 / <= -1 | {meets(*a_mp3)} / {meets(*p_mp3)} |"
    )
    print(
        f"| M4A loudness (afterlive only; LUFS / dBTP) | {a_m4a[0]:.1f} / {a_m4a[1]:.1f} | - | "
        f"| -16 ±1 / <= -1 | {meets(*a_m4a)} |"
    )
    for r, (a, p) in enumerate(zip(ours, peer, strict=True)):
        first = "afterlive first" if r % 2 == 0 else "pydub first"
        print(
            f"| round {r + 1} ({first}): wall s (load at start), tree peak MB "
            f"| {a.seconds:.1f} (load {a.load:.2f}), {a.tree_rss_kb / 1024:.0f} "
            f"| {p.seconds:.1f} (load {p.load:.2f}), {p.tree_rss_kb / 1024:.0f} "
            f"| {a.rtf / p.rtf:.1f}x, 1/{p.tree_rss_kb / a.tree_rss_kb:.1f} | | |"
        )

    print("\n| step (round 1) | seconds |")
    print("|---|---:|")
    for side, names in (
        ("afterlive", {"measure": "measure (decode, assemble, ebur128)", "limit":
                       "limiter checks", "encode": "encode + verify (MP3 + M4A, both metered by "
                       "loopback decoders)", "hls": "HLS (stream copy)"}),
        ("naive", {"decode": "pydub decode of the 3 clips into memory", "mix":
                   "crossfades + fades (pydub)", "export": "export WAV", "loudnorm_1":
                   "loudnorm pass 1 (measure)", "loudnorm_2": "loudnorm pass 2 + MP3 encode"}),
    ):  # fmt: skip
        run = runs[side][0]
        for key, seconds in run.report["steps"].items():
            print(f"| {side}: {names.get(key, key)} | {seconds:.1f} |")
        print(f"| {side}: process start, imports, the rest | "
              f"{run.seconds - math.fsum(run.report['steps'].values()):.1f} |")  # fmt: skip
    naive = peer[0].report
    print(
        f"\npydub + loudnorm, round 1: WAV {naive['wav_bytes'] / 1e6:.0f} MB; pass 1 measured "
        f"{naive['measured'][0]:.1f} LUFS / {naive['measured'][1]:.1f} dBTP; pass 2 ran "
        f"loudnorm in {naive['normalization_type']} mode. afterlive reported its MP3 at "
        f"{ours[0].report['reported'][0]:.1f} LUFS / {ours[0].report['reported'][1]:.1f} dBTP. "
        f"Processes seen per tree: afterlive {ours[0].processes}, pydub {peer[0].processes}."
    )


# --- the clip benchmark --------------------------------------------------------------------------


def bench_clip(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="afterlive-bench-", dir=args.store_dir) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        source = make_source(tmp / "source.flv", args.source_minutes * 60)
        make_s = time.perf_counter() - t0
        log(f"source made in {make_s:.0f} s ({source.stat().st_size / 1e6:.0f} MB)")
        t0 = time.perf_counter()
        info, segments = segment_source(source, tmp / "segments")
        log(
            f"segmented in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(f"{name} {len(segs)}" for name, segs in segments.items())
        )

        embedded = EmbeddedStore(tmp / "store", port=_free_port())
        embedded.start()
        try:
            creds = embedded.credentials
            config = StoreConfig(
                endpoint_url=embedded.endpoint_url,
                access_key_id=creds.access_key_id,
                secret_access_key=creds.secret_access_key,
                bucket=BUCKET,
            )
            store = ObjectStore(config)
            store.ensure_bucket()
            clock = FakeClock(datetime.now(UTC) - timedelta(hours=args.hours + 1))
            catalog = Catalog(sqlite_url(tmp / "catalog.db"), now=clock)
            catalog.create_schema()
            try:
                seeded = seed(args, catalog, store, clock, info, segments)
                jobs, peers, verified = run_rounds(args, tmp, store, catalog, source, seeded)
            finally:
                catalog.dispose()
        finally:
            embedded.stop()
    print_table(args, seeded, jobs, peers, verified, make_s, time.monotonic() - started)


def make_source(path: Path, seconds: float) -> Path:
    """A continuous 720p30 2.5 Mb/s H.264 + AAC source, 2 s closed GOPs, as a live encoder
    sends it (FLV); x264 ultrafast makes it quickly, its bitrate is held by the rate control."""
    gop = str(GOP_S * RATE)
    command = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={RATE}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k", "-bufsize", f"{VIDEO_KBPS}k",
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ar", "44100", "-ac", "2",
        "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return path


def segment_source(source: Path, directory: Path) -> tuple[StreamInfo, dict[str, list]]:
    """The production segmenter over the source, as the recorder runs it on an RTMP input."""
    closed: list[SegmentClosed] = []
    started: list[StreamInfo] = []
    with source.open("rb") as stream:
        Segmenter(
            source=stream,
            input_format="flv",
            directory=directory,
            on_start=started.append,
            on_segment=closed.append,
            label="bench source",
        ).run()
    renditions: dict[str, list[SegmentClosed]] = {}
    for seg in closed:
        renditions.setdefault(seg.rendition, []).append(seg)
    for segs in renditions.values():
        segs.sort(key=lambda s: s.sequence)
    return started[0], renditions


def seed(
    args: argparse.Namespace,
    catalog: Catalog,
    store: ObjectStore,
    clock: FakeClock,
    info: StreamInfo,
    segments: dict[str, list[SegmentClosed]],
) -> Seeded:
    """The recording: the source's segments `copies` times in a row, every object uploaded under
    its own key, catalog rows in bulk (one `add_segment` per row would take minutes)."""
    copies = max(1, round(args.hours * 60 / args.source_minutes))
    middle = copies // 2
    creator, _ = catalog.add_creator(f"bench-{os.getpid()}-{time.time_ns()}")
    room = catalog.add_room(creator_id=creator.id, title="bench: 2 h show", kind="video")
    started_at = clock()
    rec_id = catalog.start_recording(room.id).id

    uploads: list[tuple[str, Path]] = []
    rows: list[dict] = []
    playlists: dict[str, MediaPlaylist] = {}
    peaks: dict[str, float] = {}
    copy_start: dict[str, float] = {}
    position = {name: 0.0 for name in segments}
    for name, segs in segments.items():
        playlist = playlists[name] = MediaPlaylist(segments=[], playlist_type="VOD", ended=True)
        peaks[name] = max(s.size_bytes * 8 / s.duration_s for s in segs)
        for c in range(copies):
            if c == middle:
                copy_start[name] = position[name]
            for i, seg in enumerate(segs):
                sequence = c * len(segs) + i
                at = started_at + timedelta(seconds=position[name])
                key = K.media_segment(rec_id, name, at, sequence, "ts")
                discontinuity = c > 0 and i == 0
                rows.append(
                    {
                        "recording_id": rec_id,
                        "rendition": name,
                        "sequence": sequence,
                        "start_at": at,
                        "duration_s": seg.duration_s,
                        "discontinuity": discontinuity,
                        "key": key,
                        "size_bytes": seg.size_bytes,
                    }
                )
                playlist.segments.append(
                    MediaSegment(
                        uri=key.rsplit("/", 1)[1],
                        duration_s=seg.duration_s,
                        program_date_time=at,
                        discontinuity=discontinuity,
                    )
                )
                uploads.append((key, seg.path))
                position[name] += seg.duration_s

    total_bytes = sum(path.stat().st_size for _, path in uploads)
    log(
        f"seeding {len(uploads):,} objects ({total_bytes / 1e9:.2f} GB, {copies} x the source) "
        f"with {args.seed_threads} threads"
    )
    t0 = time.perf_counter()
    done = [0]
    lock = threading.Lock()

    def put(item: tuple[str, Path]) -> None:
        store.put_file(*item)
        with lock:
            done[0] += 1
            n = done[0]
        if n % 1000 == 0:
            rate = n / (time.perf_counter() - t0)
            log(f"  {n:,}/{len(uploads):,} ({rate:,.0f}/s, {(len(uploads) - n) / rate:.0f} s left)")

    with ThreadPoolExecutor(args.seed_threads, thread_name_prefix="seed") as pool:
        list(pool.map(put, uploads))
    seed_s = time.perf_counter() - t0
    log(f"seeded in {seed_s:.0f} s ({total_bytes / 1e6 / seed_s:.0f} MB/s)")

    variants = []
    for name in segments:
        store.put_bytes(K.media_playlist(rec_id, name), playlists[name].render().encode())
        video = name != "audio"
        variants.append(
            Variant(
                uri=f"{name}/index.m3u8",
                bandwidth=int(peaks[name] * 1.1),
                codecs=info.codecs(name),
                resolution=(info.width, info.height) if video else None,
                frame_rate=info.frame_rate if video else None,
                name=name,
            )
        )
        catalog.set_rendition(
            recording_id=rec_id,
            name=name,
            playlist_key=K.media_playlist(rec_id, name),
            codecs=info.codecs(name),
            bandwidth=int(peaks[name] * 1.1),
            width=info.width if video else None,
            height=info.height if video else None,
        )
    store.put_bytes(K.master_playlist(rec_id), MasterPlaylist(variants=variants).render().encode())
    with catalog.session() as s:
        s.execute(insert(Segment), rows)
        s.execute(
            update(Recording)
            .where(Recording.id == rec_id)
            .values(
                object_count=len(rows) + len(segments) + 1,
                byte_count=total_bytes,
                media_s=position["source"],
            )
        )
    ended_at = started_at + timedelta(seconds=position["source"])
    catalog.end_recording(rec_id, retention=RETENTION, ended_at=ended_at)
    clock.current = ended_at + timedelta(minutes=10)

    # The clip: inside the middle copy, starting and ending inside a segment. The first packet
    # of a timeline is its position 0 (the clipper's rule), the source file's start for ffmpeg.
    offset = (args.source_minutes - args.clip_minutes) * 30
    offset = math.floor(offset / GOP_S) * GOP_S + CLIP_START_IN_SEGMENT_S
    clip_s = args.clip_minutes * 60
    start_s = copy_start["source"] + offset
    return Seeded(
        recording_id=rec_id,
        creator_id=creator.id,
        start_s=start_s,
        end_s=start_s + clip_s,
        source_start_s=offset,
        source_end_s=offset + clip_s,
        objects=len(uploads),
        bytes=total_bytes,
        seconds=seed_s,
    )


def run_rounds(
    args: argparse.Namespace,
    tmp: Path,
    store: ObjectStore,
    catalog: Catalog,
    source: Path,
    seeded: Seeded,
) -> tuple[list[JobRun], list[PeerRun], Verified]:
    jobs: list[JobRun] = []
    peers: list[PeerRun] = []
    for r in range(args.rounds):
        order = ("afterlive", "ffmpeg") if r % 2 == 0 else ("ffmpeg", "afterlive")
        for side in order:
            if side == "afterlive":
                jobs.append(run_job(catalog, store, tmp / "clip-work", seeded, r))
                log(f"round {r + 1}: afterlive {jobs[-1].seconds:.1f} s ({parts_line(jobs[-1])})")
            else:
                peers.append(run_peer(source, seeded, tmp / f"peer-{r}.mp4"))
                log(f"round {r + 1}: ffmpeg {peers[-1].seconds:.1f} s")
    verified = verify(store, jobs[0], seeded, tmp / "verify", tmp / "peer-0.mp4")
    return jobs, peers, verified


def run_job(catalog: Catalog, store: ObjectStore, work_dir: Path, seeded: Seeded, r: int) -> JobRun:
    """One clip job, run in this thread, through timing wrappers around its store, its catalog
    and `cut_clip` (the seam `api.clips` calls it through)."""
    parts = Parts()
    clip, job = catalog.start_clip(
        creator_id=seeded.creator_id,
        recording_id=seeded.recording_id,
        title=f"bench clip {r}",
        start_s=seeded.start_s,
        end_s=seeded.end_s,
    )
    real_cut = api.clips.cut_clip

    def timed_cut(*args: Any, **kwargs: Any):
        parts.cutting = True
        try:
            with parts.timing("cut"):
                return real_cut(*args, **kwargs)
        finally:
            parts.cutting = False

    timed = Clips(
        catalog=TimedCatalog(catalog, parts),  # type: ignore[arg-type]
        store=TimedStore(store, parts),  # type: ignore[arg-type]
        work_dir=work_dir,
    )
    load = os.getloadavg()[0]
    try:
        with mock.patch.object(api.clips, "cut_clip", timed_cut):
            claimed = catalog.claim_job("clip")  # the queue's one job: this one
            assert claimed is not None and claimed.id == job.id
            t0 = time.perf_counter()
            timed.jobs.run(claimed)
            seconds = time.perf_counter() - t0
    finally:
        timed.close()
    done = catalog.job(job.id)
    if done is None or done.status != "done":
        raise RuntimeError(f"clip job {job.id}: {done and done.status}: {done and done.error}")
    return JobRun(seconds=seconds, parts=parts, clip_id=clip.id, result=done.result, load=load)


def run_peer(source: Path, seeded: Seeded, out: Path) -> PeerRun:
    command = peer_command(source, seeded, out)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    return PeerRun(seconds=time.perf_counter() - t0, load=load)


def peer_command(source: Path | str, seeded: Seeded, out: Path | str) -> list[str]:
    return [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-ss", f"{seeded.source_start_s:.3f}", "-to", f"{seeded.source_end_s:.3f}",
        "-i", str(source),
        "-c:v", "libx264", "-preset", PEER_PRESET["preset"], "-crf", PEER_PRESET["crf"],
        "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k",
        "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def verify(store: ObjectStore, job: JobRun, seeded: Seeded, work: Path, peer: Path) -> Verified:
    """Play the clip as a viewer would (presigned URLs, every frame decoded) and check it."""
    work.mkdir(parents=True, exist_ok=True)
    prefix = K.clip_prefix(job.clip_id)
    decoded = play(presigned_copy(store, K.clip_media_playlist(job.clip_id, "source"), work))
    audio_text = store.get(K.clip_media_playlist(job.clip_id, "audio")).decode()
    m4a = work / "clip.m4a"
    m4a.write_bytes(store.get(K.clip_audio(job.clip_id)))
    with av.open(str(m4a)) as container:
        stream = container.streams.audio[0]
        m4a_s = float(stream.duration * stream.time_base)
    source_segments = [info for info in store.list(f"{prefix}source/") if info.key.endswith(".ts")]
    with av.open(str(peer)) as container:
        peer_frames = sum(1 for p in container.demux(video=0) if p.size)
        peer_s = float(container.duration / av.time_base)
    copied = job.parts.calls["copies"]
    verified = Verified(
        playlist_s=job.result["duration_s"],
        decoded_s=decoded["seconds"],
        frames=decoded["frames"],
        audio_s=decoded["audio_s"],
        audio_playlist_s=_playlist_total(audio_text),
        m4a_s=m4a_s,
        errors=decoded["errors"],
        segments=len(source_segments),
        copied=copied,
        peer_frames=peer_frames,
        peer_s=peer_s,
    )
    want = seeded.end_s - seeded.start_s
    problems = []
    if abs(verified.decoded_s - want) > FRAME_S + 1e-6:
        problems.append(f"decoded {verified.decoded_s:.4f} s, not {want:.3f} s within a frame")
    if abs(verified.playlist_s - want) > FRAME_S + 1e-6:
        problems.append(f"playlist {verified.playlist_s:.4f} s, not {want:.3f} s within a frame")
    if abs(verified.m4a_s - want) > 0.001:
        problems.append(f".m4a {verified.m4a_s:.4f} s, not {want:.3f} s")
    if verified.errors:
        problems.append(f"decoder errors: {verified.errors[:3]}")
    if problems:
        raise RuntimeError("clip check failed: " + "; ".join(problems))
    log(
        f"clip checked: {verified.frames} frames, {verified.decoded_s:.4f} s decoded, "
        f"audio {verified.audio_s:.3f} s, .m4a {verified.m4a_s:.4f} s, no decoder errors"
    )
    return verified


def play(playlist: Path) -> dict:
    """Decode every frame of a playlist through FFmpeg's HLS demuxer, with its complaints."""
    frames: list[float] = []
    audio_first = audio_end = None
    saved = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # PyAV passes FFmpeg's messages on only when set
    try:
        with (
            av.logging.Capture(local=True) as logs,
            av.open(str(playlist), options=WHITELIST) as container,
        ):
            container.streams.video[0].thread_type = "AUTO"
            for frame in container.decode(*container.streams):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base)
                if isinstance(frame, av.VideoFrame):
                    frames.append(t)
                else:
                    audio_first = t if audio_first is None else audio_first
                    audio_end = t + frame.samples / frame.sample_rate
    finally:
        av.logging.set_level(saved)
    frames.sort()
    return {
        "frames": len(frames),
        # First frame shown to the end of the last one (its duration: one frame at 30 fps).
        "seconds": frames[-1] - frames[0] + FRAME_S,
        "audio_s": (audio_end or 0) - (audio_first or 0),
        "errors": [f"{name}: {msg}" for level, name, msg in logs if level <= av.logging.ERROR],
    }


def _playlist_total(text: str) -> float:
    return math.fsum(
        float(line.split(":", 1)[1].rstrip(",").split(",")[0])
        for line in text.splitlines()
        if line.startswith("#EXTINF:")
    )


# --- the table -----------------------------------------------------------------------------------


def parts_line(job: JobRun) -> str:
    s = job.parts.seconds
    return ", ".join(f"{name} {s[name]:.2f}" for name in ("downloads", "cut", "copies", "uploads"))


def print_table(
    args: argparse.Namespace,
    seeded: Seeded,
    jobs: list[JobRun],
    peers: list[PeerRun],
    verified: Verified,
    make_s: float,
    total_s: float,
) -> None:
    clip_min = (seeded.end_s - seeded.start_s) / 60
    job_s = statistics.median(j.seconds for j in jobs)
    peer_s = statistics.median(p.seconds for p in peers)
    ratio = peer_s / job_s
    loads = [j.load for j in jobs] + [p.load for p in peers]
    print(
        f"{clip_min:g}-minute accurate clip of a {args.hours:g} h recording "
        f"({seeded.objects:,} objects, {seeded.bytes / 1e9:.2f} GB in an embedded SeaweedFS) vs "
        f"a full re-encode by the ffmpeg CLI; median of {args.rounds} alternating rounds; "
        f"load average (1 min) {min(loads):.2f}-{max(loads):.2f} at the start of the timed runs; "
        f"source made in {make_s:.0f} s, seeding {seeded.seconds:.0f} s, run {total_s:.0f} s\n"
    )
    print("| figure | afterlive | ffmpeg CLI | ratio (ffmpeg / afterlive) | goal | met? |")
    print("|---|---:|---:|---:|---|---|")
    print(
        f"| {clip_min:g}-min accurate clip of a {args.hours:g} h recording, wall time (s) "
        f"| {job_s:.1f} | {peer_s:.1f} | {ratio:.1f}x | >= 10x | {'yes' if ratio >= 10 else 'no'} |"
    )
    for r, (j, p) in enumerate(zip(jobs, peers, strict=True)):
        first = "afterlive first" if r % 2 == 0 else "ffmpeg first"
        print(
            f"| round {r + 1} ({first}), load average at its start | {j.seconds:.1f} "
            f"(load {j.load:.2f}) | {p.seconds:.1f} (load {p.load:.2f}) "
            f"| {p.seconds / j.seconds:.1f}x | | |"
        )

    job = min(jobs, key=lambda j: abs(j.seconds - job_s))  # the median run's parts
    s, n, b = job.parts.seconds, job.parts.calls, job.parts.bytes
    cut_s = s["cut"] - job.parts.catalog_in_cut_s
    parts = [
        (
            f"downloads ({n['downloads']} objects, {b['downloads'] / 1e6:.1f} MB: the partial "
            "segments and their neighbours, every audio segment for the .m4a)",
            s["downloads"],
        ),
        (
            "cut (PyAV: 2 partial video segments decoded and re-encoded, audio cut on frames, "
            ".m4a written)",
            cut_s,
        ),
        (
            f"store copies ({n['copies']} whole segments, {b['copies'] / 1e6:.0f} MB: "
            "CopyObject + HEAD each, one at a time)",
            s["copies"],
        ),
        (f"uploads ({n['uploads']} objects: ends, playlists, .m4a)", s["uploads"]),
        (f"catalog ({n['catalog']} calls: segment lists, job progress)", s["catalog"]),
    ]
    other = job.seconds - math.fsum(seconds for _, seconds in parts)
    parts.append(("other (planning, files, temp dirs)", other))
    print(f"\n| part of the afterlive job (round of {job.seconds:.1f} s) | seconds | share |")
    print("|---|---:|---:|")
    for name, seconds in parts:
        print(f"| {name} | {seconds:.2f} | {seconds / job.seconds:.0%} |")

    print(
        f"\nPeer: `ffmpeg -ss {seeded.source_start_s:.3f} -to {seeded.source_end_s:.3f} "
        f"-i source.flv -c:v libx264 -preset {PEER_PRESET['preset']} -crf {PEER_PRESET['crf']} "
        f"-c:a aac -b:a {AUDIO_KBPS}k out.mp4` on the local source file (no store)."
    )
    print(
        f"Check (round 1's clip, played through presigned URLs): source playlist "
        f"{verified.playlist_s:.3f} s, decoded {verified.frames:,} frames = "
        f"{verified.decoded_s:.4f} s (want {clip_min * 60:.3f} s within {FRAME_S * 1000:.1f} ms), "
        f"audio {verified.audio_s:.3f} s, audio rendition {verified.audio_playlist_s:.3f} s, "
        f".m4a {verified.m4a_s:.4f} s, no decoder errors; {verified.segments} segments per "
        f"rendition, {verified.copied} of {2 * verified.segments} copied in the store. "
        f"ffmpeg's MP4: {verified.peer_frames:,} frames, {verified.peer_s:.3f} s."
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
