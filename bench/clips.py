"""Clips: a 10-minute accurate clip out of a 2 h recording vs a full re-encode by the ffmpeg CLI.

    python bench/clips.py [--quick] [--part clip|episode|all] [--rounds 3]
                          [--hours 2] [--clip-minutes 10] [--source-minutes 12]

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

`--part episode` (the issue's second benchmark, an episode render) is a placeholder until
transcode/episode.py exists.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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
from tests.utils.player import WHITELIST, presigned_copy
from transcode.clipper import ENCODERS
from transcode.playlists import MasterPlaylist, MediaPlaylist, MediaSegment, Variant
from transcode.segmenter import SegmentClosed, Segmenter, StreamInfo

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
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
    parser.add_argument("--seed-threads", type=int, default=8)
    parser.add_argument("--store-dir", type=Path, help="parent of the store's directory")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.hours = args.hours or (0.25 if args.quick else 2.0)
    args.clip_minutes = args.clip_minutes or (2.0 if args.quick else 10.0)
    args.source_minutes = args.source_minutes or (3.0 if args.quick else 12.0)
    if args.clip_minutes * 60 + 2 * CLIP_START_IN_SEGMENT_S + 4 * GOP_S > args.source_minutes * 60:
        parser.error("the clip must fit inside the continuous source with a segment to spare")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.part in ("clip", "all"):
        bench_clip(args)
    ran = bench_episode(args) if args.part in ("episode", "all") else True
    if not ran and args.part == "episode":
        sys.exit(2)


# --- the episode benchmark: PLACEHOLDER ----------------------------------------------------------


def bench_episode(args: argparse.Namespace) -> bool:
    """PLACEHOLDER for the issue's second benchmark, the episode render (to be written once
    transcode/episode.py exists). Returns whether it ran."""
    log("episode benchmark: not written yet (waits for transcode/episode.py); skipped")
    return False


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
            t0 = time.perf_counter()
            timed.run(job.id)
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
