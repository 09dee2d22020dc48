"""Live ingest: segment visibility, CPU per stream against nginx-rtmp, and concurrent rooms.

    python bench/ingest.py [--quick] [--skip-nginx] [--seconds 30]
        [--audio-levels 100,200,300] [--video-levels 20,40,60] [--refine 2]
        [--phases visibility,cpu,concurrency] [--profile DIR] [--keep]

Everything in one run, on the same synthetic inputs, pre-encoded once with ffmpeg into FLV files
(720p30 H.264 at 2.5 Mb/s with a 2 s GOP and no B-frames + AAC 128 kb/s; AAC 64 kb/s mono
alone) and published with `-c copy`-like cost by bench/rtmp_load.py, a paced asyncio RTMP client:

1. Segment visibility: one video room and one audio room publish at once (and the same two
   streams to nginx-rtmp, the peer). A poller GETs each media playlist from the store every
   20 ms, HEADs every new segment, and notes when it first appeared. Each segment's end on the
   media timeline (from its EXT-X-PROGRAM-DATE-TIME offset and EXTINF; for video snapped to the
   keyframe that starts the next segment) says when the publisher sent the packet that let it
   close: publish t0 + media end. Visibility = first seen - that instant.
2. CPU per live stream: N video streams into afterlive (the `afterlive serve` process and its
   `weed` child, utime+stime from /proc) and, at the same time, N into nginx with the RTMP
   module writing HLS to local disk (master + worker), and N into a second nginx as
   ../shared/FACTS.md runs the peer (HLS and `record all`: each stream also written as FLV),
   each from its own publisher; one window.
3. Concurrent rooms: ramps of audio rooms and of video rooms, each level for `--seconds`; the
   highest level where >= 99% of the segments of a sample of rooms were visible within 1 s, every
   publish ran to the end and every room's final playlist is complete. Alongside: CPU of serve,
   weed, the publisher and this poller; where data waited (RTMP socket backlog, segments waiting
   for upload, time to answer a new RTMP handshake); with --profile, py-spy --gil of serve.

The default run takes about 9 minutes; --quick about 3.

Progress goes to stderr; one Markdown table and notes to stdout at the end.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
# The repo first: this file is named like the `ingest` package, which must win the import.
sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.append(str(REPO / "bench"))

import imageio_ffmpeg  # noqa: E402
import nginx_rtmp  # noqa: E402
from rtmp_load import read_flv, schedule  # noqa: E402

from storage import Catalog, EmbeddedStore  # noqa: E402
from storage.catalog import sqlite_url  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
AFTERLIVE = (
    [shutil.which("afterlive")] if shutil.which("afterlive") else [sys.executable, "-m", "api.cli"]
)
LOAD = [sys.executable, str(REPO / "bench" / "rtmp_load.py")]
TICK = os.sysconf("SC_CLK_TCK")
FILE_SECONDS = 20  # the encoded files loop; a whole number of GOPs
VISIBLE_WITHIN_S = 1.0
PASS_FRACTION = 0.99
T_START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T_START:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Processes: everything started is stopped by PID, whatever happens


class Processes:
    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kwargs)
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        for name, proc in reversed(list(self._procs)):
            if proc.poll() is None:
                say(f"stopping {name} (pid {proc.pid})")
            self.stop(proc)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


class CpuWindow:
    """CPU seconds of named process groups between `begin()` and `end()`, plus this process
    (the poller) and everything else on the machine (`others`: load we did not start)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.wall_s = 0.0
        self.spent: dict[str, float] = {}
        self._t0 = 0.0

    def _read(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        out["bench (poller)"] = own_cpu()
        unique = {p for pids in self.groups.values() for p in pids}
        out["_ours"] = sum(cpu_seconds(p) for p in unique) + out["bench (poller)"]
        out["_machine"] = machine_busy_seconds()
        return out

    def begin(self) -> None:
        self._start = self._read()
        self._t0 = time.monotonic()

    def end(self) -> None:
        now = self._read()
        self.wall_s = time.monotonic() - self._t0
        spent = {k: now[k] - self._start.get(k, 0.0) for k in now}
        spent["others"] = max(0.0, spent.pop("_machine") - spent.pop("_ours"))
        self.spent = spent

    def percent(self, name: str) -> float:
        return 100 * self.spent.get(name, 0.0) / self.wall_s if self.wall_s else 0.0

    def describe(self) -> str:
        return ", ".join(f"{k} {self.percent(k):.0f}%" for k in self.spent)


# ---------------------------------------------------------------------------------------------
# Reading the store: a minimal SigV4 client (boto3 costs ~5 ms of CPU a request; polling dozens
# of playlists every 20-100 ms with it would load the machine under test more than the rooms)


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Reader:
    def __init__(self, port: int, bucket: str, access_key: str, secret_key: str) -> None:
        self.host = f"127.0.0.1:{port}"
        self.port = port
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = "us-east-1"
        self._local = threading.local()
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            key = ("AWS4" + self.secret_key).encode()
            for part in (date, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[date] = key
        return key

    def request(self, method: str, key: str) -> tuple[int, bytes]:
        path = f"/{self.bucket}/{quote(key, safe='/-_.~')}"
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = (
            f"{method}\n{path}\n\nhost:{self.host}\nx-amz-content-sha256:{EMPTY_SHA256}\n"
            f"x-amz-date:{amz_date}\n\n{signed}\n{EMPTY_SHA256}"
        )
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        signature = hmac.new(
            self._signing_key(amz_date[:8]), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers = {
            "Host": self.host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": EMPTY_SHA256,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}",
        }
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=10
                )
            try:
                conn.request(method, path, headers=headers)
                reply = conn.getresponse()
                return reply.status, reply.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Watching playlists


@dataclass
class Seen:
    uri: str
    end_ms: float  # media end of the segment, from the first segment's start
    seen_at: float  # time.time() when a playlist listing it had arrived
    readable: bool  # the segment answered HEAD (or exists on disk)
    final: bool  # first seen in the playlist that has EXT-X-ENDLIST: closed by the unpublish


class PlaylistWatch:
    """Polls one media playlist; records when each segment first appears in it."""

    def __init__(self, name: str, fetch, head, interval_s: float, *, ends: bool = True) -> None:
        self.name = name
        self.ends = ends  # the server marks the end with EXT-X-ENDLIST (nginx-rtmp does not)
        self.fetch = fetch  # () -> playlist text or None
        self.head = head  # (uri) -> bool
        self.interval_s = interval_s
        self.segments: dict[str, Seen] = {}
        self.ended = False
        self.polls = 0
        self.errors = 0
        self._first_pdt: datetime | None = None
        self._cumulative_ms = 0.0

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
        ended = "#EXT-X-ENDLIST" in text
        pdt: datetime | None = None
        duration = 0.0
        for line in text.splitlines():
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
            elif line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",", 1)[0])
            elif line and not line.startswith("#"):
                if line not in self.segments:
                    if pdt is not None:
                        if self._first_pdt is None:
                            self._first_pdt = pdt
                        start_ms = (pdt - self._first_pdt).total_seconds() * 1000
                    else:
                        start_ms = self._cumulative_ms
                    self._cumulative_ms = start_ms + duration * 1000
                    self.segments[line] = Seen(
                        uri=line,
                        end_ms=start_ms + duration * 1000,
                        seen_at=seen_at,
                        readable=self.head(line),
                        final=ended,
                    )
                pdt = None
        self.ended = ended

    def run(self, stop: threading.Event, deadline: float) -> None:
        # Jittered intervals: fixed ones lock in phase with the 2 s segment cadence (and with
        # each other), which turns the polling error into a constant offset per room.
        next_at = time.monotonic() + random.uniform(0, self.interval_s)
        stop.wait(next_at - time.monotonic())
        while not stop.is_set() and not self.ended and time.monotonic() < deadline:
            self.poll()
            next_at += self.interval_s * random.uniform(0.5, 1.5)
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()


class Watchers:
    """One thread per watched playlist; started together, stopped together."""

    def __init__(self) -> None:
        self.watches: list[PlaylistWatch] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def add(self, watch: PlaylistWatch, max_s: float) -> PlaylistWatch:
        self.watches.append(watch)
        thread = threading.Thread(
            target=watch.run, args=(self._stop, time.monotonic() + max_s), daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return watch

    def wait_ended(self, timeout_s: float) -> None:
        """Until every playlist that can end has ended (or the timeout); then stop all."""
        deadline = time.monotonic() + timeout_s
        for watch, thread in zip(self.watches, self._threads, strict=True):
            if watch.ends:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


class Timeline:
    """When each media instant of a published file was sent, and where a video segment ends."""

    def __init__(self, flv: Path, seconds: float, video: bool) -> None:
        tags = schedule(read_flv(flv), seconds)
        media = [t for t in tags if t.type_id in (8, 9) and not t.is_sequence_header]
        self.first_ms = min(t.timestamp for t in media)
        self.last_ms = max(t.timestamp for t in media)
        self.keyframes = sorted({t.timestamp for t in media if t.is_keyframe} if video else set())

    def end_ms(self, seen: Seen) -> float:
        """A segment's media end: for video, the keyframe that opened the next segment."""
        end = self.first_ms + seen.end_ms
        if self.keyframes:
            i = bisect.bisect_left(self.keyframes, end)
            best = min(self.keyframes[max(0, i - 1) : i + 1], key=lambda k: abs(k - end))
            if abs(best - end) < 100:
                return best
        return end


def latencies_ms(watch: PlaylistWatch, t0: float, timeline: Timeline) -> tuple[list[float], int]:
    """Visibility of each live segment (the last one, closed by the unpublish, excluded)."""
    out = []
    unreadable = 0
    for seen in watch.segments.values():
        # The segment the unpublish closed: nginx-rtmp lists it without an ENDLIST.
        if seen.final or timeline.end_ms(seen) > timeline.last_ms - 50:
            continue
        if not seen.readable:
            unreadable += 1
        sent_at = t0 + timeline.end_ms(seen) / 1000
        out.append((seen.seen_at - sent_at) * 1000)
    return out, unreadable


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------------------
# The service under test


class Afterlive:
    def __init__(
        self, root: Path, procs: Processes, settings: dict[str, str] | None = None
    ) -> None:
        self.procs = procs
        self.data = root / "afterlive"
        self.log = root / "afterlive.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AFTERLIVE_"))}
        self.env = (
            env
            | {
                "AFTERLIVE_DATA_DIR": str(self.data),
                "AFTERLIVE_API_PORT": str(free_port()),
                "AFTERLIVE_STORE_PORT": str(free_port()),
                "AFTERLIVE_RTMP_PORT": str(free_port()),
            }
            | (settings or {})
        )
        self.api = f"http://127.0.0.1:{self.env['AFTERLIVE_API_PORT']}"
        self.rtmp = f"rtmp://127.0.0.1:{self.env['AFTERLIVE_RTMP_PORT']}/live"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self._catalog: Catalog | None = None
        self.reader: S3Reader | None = None

    def start(self) -> None:
        self.proc = self.procs.start(
            "afterlive serve",
            [*AFTERLIVE, "serve"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"afterlive serve exited:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.api}/healthz", timeout=2) as reply,
            ):
                if reply.status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"afterlive did not become healthy:\n{self.log_tail()}")
        added = subprocess.run(
            [*AFTERLIVE, "creators", "add", "bench"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.token = added.stdout.strip().splitlines()[-1]
        creds = EmbeddedStore(
            self.data / "store", port=int(self.env["AFTERLIVE_STORE_PORT"])
        ).credentials
        self.reader = S3Reader(
            int(self.env["AFTERLIVE_STORE_PORT"]),
            "afterlive",
            creds.access_key_id,
            creds.secret_access_key,
        )
        self._catalog = Catalog(sqlite_url(self.data / "afterlive.db"))

    def stop(self) -> None:
        if self._catalog is not None:
            self._catalog.dispose()
        weed = self.weed_pid
        if self.proc is not None:
            self.procs.stop(self.proc, timeout_s=90)
        # serve stops its store; should it not have, stop that child of ours by its PID.
        if weed is not None and Path(f"/proc/{weed}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(weed, signal.SIGTERM)

    @property
    def serve_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def weed_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.data / "store" / "weed.pid").read_text())
            if Path(f"/proc/{pid}").exists():
                return pid
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def create_rooms(self, kind: str, count: int, label: str) -> list[dict]:
        rooms = []
        for i in range(count):
            body = json.dumps({"title": f"{label} {i}", "kind": kind}).encode()
            request = urllib.request.Request(
                f"{self.api}/api/rooms",
                data=body,
                method="POST",
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                rooms.append(json.loads(reply.read()))
        return rooms

    def recordings_of(self, room_ids: set[str]) -> dict[str, tuple[str, str]]:
        """room id -> (recording id, status), newest recording of each."""
        assert self._catalog is not None
        out: dict[str, tuple[str, str]] = {}
        for rec in self._catalog.recordings(limit=100_000):
            if rec.room_id in room_ids and rec.room_id not in out:
                out[rec.room_id] = (rec.id, rec.status)
        return out

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self) -> Counter:
        """WARNING/ERROR lines of the service log, with ids and numbers blanked for counting."""
        counts: Counter = Counter()
        if not self.log.exists():
            return counts
        for line in self.log.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                text = re.sub(r"^\S+ \S+ ", "", line)
                text = re.sub(r"[0-9a-f]{12,}|\d+(\.\d+)?", "#", text)
                counts[text[:160]] += 1
        return counts


class Resolver:
    """Recording ids of rooms as they appear in the catalog (one query for all, every 0.2 s)."""

    def __init__(self, service: Afterlive, room_ids: set[str]) -> None:
        self.service = service
        self.room_ids = room_ids
        self.ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._last = 0.0

    def __call__(self, room_id: str) -> str | None:
        with self._lock:
            if room_id not in self.ids and time.monotonic() - self._last > 0.2:
                self._last = time.monotonic()
                with contextlib.suppress(Exception):
                    found = self.service.recordings_of(self.room_ids)
                    self.ids.update({room: rec for room, (rec, _) in found.items()})
            return self.ids.get(room_id)


def store_watch(
    service: Afterlive, resolver: Resolver, room_id: str, rendition: str, interval_s: float
) -> PlaylistWatch:
    reader = service.reader
    assert reader is not None

    def prefix() -> str | None:
        rec = resolver(room_id)
        return f"recordings/{rec}/{rendition}/" if rec else None

    def fetch() -> str | None:
        base = prefix()
        if base is None:
            return None
        status, body = reader.request("GET", base + "index.m3u8")
        return body.decode() if status == 200 else None

    def head(uri: str) -> bool:
        return reader.request("HEAD", f"{prefix()}{uri}")[0] == 200

    return PlaylistWatch(f"afterlive {rendition} {room_id}", fetch, head, interval_s)


def disk_watch(hls: Path, name: str, interval_s: float) -> PlaylistWatch:
    playlist = hls / f"{name}.m3u8"

    def fetch() -> str | None:
        try:
            return playlist.read_text()
        except OSError:
            return None

    def exists(uri: str) -> bool:
        return (hls / uri).exists()

    return PlaylistWatch(f"nginx {name}", fetch, exists, interval_s, ends=False)


# ---------------------------------------------------------------------------------------------
# Publishing


@dataclass
class LoadRun:
    proc: subprocess.Popen
    started: float
    results: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    out: Path | None = None

    def wait(self, timeout_s: float) -> None:
        self.proc.wait(timeout_s)
        assert self.out is not None
        for line in self.out.read_text().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if item.get("summary"):
                    self.summary = item
                else:
                    self.results[item["key"]] = item

    def t0(self, target: str) -> float:
        value = self.results.get(target, {}).get("t0")
        if value is None:
            raise RuntimeError(f"publish to {target} failed: {self.results.get(target)}")
        return value


def start_load(
    procs: Processes, flv: Path, targets: list[str], seconds: float, stagger: float, tmp: Path
) -> LoadRun:
    name = f"load-{time.monotonic_ns()}"
    keys, out = tmp / f"{name}.targets", tmp / f"{name}.out"
    keys.write_text("\n".join(targets))
    with out.open("wb") as stdout, (tmp / f"{name}.err").open("wb") as stderr:
        proc = procs.start(
            "rtmp_load",
            [
                *LOAD,
                "--flv",
                str(flv),
                "--seconds",
                str(seconds),
                "--stagger",
                str(stagger),
                "--keys-file",
                str(keys),
            ],
            stdout=stdout,
            stderr=stderr,
        )
    return LoadRun(proc=proc, started=time.monotonic(), out=out)


def encode_inputs(tmp: Path) -> tuple[Path, Path]:
    video, audio = tmp / "video-720p30.flv", tmp / "audio-64k.flv"
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [
            *quiet,
            *shlex.split("-f lavfi -i testsrc2=size=1280x720:rate=30"),
            *shlex.split("-f lavfi -i sine=frequency=440:sample_rate=48000"),
            *shlex.split(f"-t {FILE_SECONDS}"),
            *shlex.split("-c:v libx264 -preset veryfast -bf 0 -pix_fmt yuv420p"),
            *shlex.split("-g 60 -keyint_min 60 -sc_threshold 0"),
            *shlex.split("-b:v 2500k -maxrate 2500k -bufsize 2500k"),
            *shlex.split("-c:a aac -b:a 128k -ar 48000 -ac 2"),
            str(video),
        ],
        check=True,
    )
    subprocess.run(
        [
            *quiet,
            *shlex.split("-f lavfi -i sine=frequency=440:sample_rate=48000"),
            *shlex.split(f"-t {FILE_SECONDS}"),
            *shlex.split("-c:a aac -b:a 64k -ar 48000 -ac 1"),
            str(audio),
        ],
        check=True,
    )
    return video, audio


# ---------------------------------------------------------------------------------------------
# The three measurements


@dataclass
class Row:
    figure: str
    afterlive: str
    peer: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "-"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def warm_up(service: Afterlive, files: dict[str, Path], procs: Processes, tmp: Path) -> None:
    """A short publish of each input first: the store's first writes allocate its volumes
    (measured: the very first segment of a fresh store takes ~200 ms longer to appear)."""
    say("warm-up: one video and one audio room for 6 s")
    rooms = service.create_rooms("video", 1, "warm") + service.create_rooms("audio", 1, "warm")
    loads = [
        start_load(procs, files[room["kind"]], [f"{service.rtmp}/{room['stream_key']}"], 6, 0, tmp)
        for room in rooms
    ]
    for load in loads:
        load.wait(60)
    ids = {r["id"] for r in rooms}
    wait_recordings_ended(service, Resolver(service, ids), ids, 30)


def visibility(
    args, service: Afterlive, nginx, files: dict[str, Path], procs: Processes, tmp, report
) -> None:
    seconds = args.visibility_seconds
    say(f"visibility: one video and one audio room, {seconds:g} s, polled every 20 ms")
    video_room, audio_room = (
        service.create_rooms("video", 1, "vis video")[0],
        service.create_rooms("audio", 1, "vis audio")[0],
    )
    resolver = Resolver(service, {video_room["id"], audio_room["id"]})
    watchers = Watchers()
    max_s = seconds + 60
    watch = {
        "video": watchers.add(
            store_watch(service, resolver, video_room["id"], "source", 0.02), max_s
        ),
        "video audio": watchers.add(
            store_watch(service, resolver, video_room["id"], "audio", 0.02), max_s
        ),
        "audio": watchers.add(
            store_watch(service, resolver, audio_room["id"], "source", 0.02), max_s
        ),
    }
    targets = {"video": [f"{service.rtmp}/{video_room['stream_key']}"]}
    targets["audio"] = [f"{service.rtmp}/{audio_room['stream_key']}"]
    if nginx is not None:
        targets["video"].append(f"{nginx.url}/vis-video")
        targets["audio"].append(f"{nginx.url}/vis-audio")
        watch["nginx video"] = watchers.add(disk_watch(nginx.hls, "vis-video", 0.02), max_s)
        watch["nginx audio"] = watchers.add(disk_watch(nginx.hls, "vis-audio", 0.02), max_s)
    loads = {
        kind: start_load(procs, files[kind], targets[kind], seconds, 0.0, tmp)
        for kind in ("video", "audio")
    }
    window = CpuWindow(
        {
            "serve": [service.serve_pid],
            "weed": [service.weed_pid] if service.weed_pid else [],
            "nginx": nginx.pids() if nginx is not None else [],
            "publishers": [load.proc.pid for load in loads.values()],
        }
    )
    window.begin()
    time.sleep(max(1.0, seconds - 2))
    window.end()  # before the publishers exit: their CPU is read from /proc
    for load in loads.values():
        load.wait(seconds + 60)
    report.notes.append(f"CPU during the visibility run (% of one core): {window.describe()}.")
    watchers.wait_ended(20)
    timelines = {
        kind: Timeline(files[kind], seconds, video=kind == "video") for kind in ("video", "audio")
    }
    results = {}
    for name, w in watch.items():
        kind = "video" if name.endswith("video") or name == "video audio" else "audio"
        server_targets = targets[kind]
        target = server_targets[1] if name.startswith("nginx") else server_targets[0]
        timeline = timelines[kind]
        if name == "video audio":
            timeline = Timeline(files["video"], seconds, video=False)
        lat, unreadable = latencies_ms(w, loads[kind].t0(target), timeline)
        results[name] = lat
        say(
            f"  {name}: {len(lat)} segments, p50 {pct(lat, 0.5):.0f} ms, "
            f"p95 {pct(lat, 0.95):.0f} ms, max {max(lat, default=float('nan')):.0f} ms"
            + (f", {unreadable} listed before readable" if unreadable else "")
            + f"; in order: {' '.join(f'{v:.0f}' for v in lat)}"
        )
        if unreadable:
            report.notes.append(f"BUG? {name}: {unreadable} segments listed but not readable")
    for kind, label in (("video", "720p30 video room"), ("audio", "64 kb/s audio room")):
        lat = results[kind]
        peer = results.get(f"nginx {kind}")
        p95 = pct(lat, 0.95)
        row = Row(
            figure=f"segment visibility, {label}: p50 / p95 (n={len(lat)})",
            afterlive=f"{pct(lat, 0.5):.0f} / {p95:.0f} ms",
            goal="p95 <= 250 ms",
            met="yes" if p95 <= 250 and len(lat) >= 1 else "no",
        )
        if peer:
            row.peer = (
                f"{pct(peer, 0.5):.0f} / {pct(peer, 0.95):.0f} ms (nginx-rtmp, n={len(peer)})"
            )
            row.ratio = f"{p95 / pct(peer, 0.95):.1f}x (p95)" if pct(peer, 0.95) > 0 else "-"
        report.rows.append(row)
    lat = results["video audio"]
    report.notes.append(
        f"Video room's `audio` rendition: p50 {pct(lat, 0.5):.0f} ms, p95 {pct(lat, 0.95):.0f} ms "
        f"(n={len(lat)})."
    )
    for kind, load in loads.items():
        report.notes.append(
            f"Visibility publisher, {kind} ({len(load.results)} streams): tag lateness p99 "
            f"{load.summary.get('lag_p99_ms')} ms, max {load.summary.get('lag_max_ms')} ms."
        )


def cpu_per_stream(args, service: Afterlive, nginx, video: Path, procs: Processes, tmp, report):
    """Both servers get `n` streams at once and are measured over the same window: the
    machine's state (clock speed, caches, other load) is the same for both, which windows one
    after the other did not give (nginx's figure moved between 0.27% and 0.48% from run to
    run). Each has its own publisher process.

    Two nginx peers: HLS only (the same output as afterlive's: the strict one), and HLS with
    `record all` as ../shared/FACTS.md runs it (it also writes each stream to an FLV file)."""
    flv_peer = None
    if nginx is not None:
        flv_peer = nginx_rtmp.NginxRtmp(tmp / "nginx-flv", free_port(), record=True)
        flv_peer.start()
    peers = {"nginx": nginx, "nginx+flv": flv_peer}
    try:
        _cpu_per_stream(args, service, peers, video, procs, tmp, report)
    finally:
        if flv_peer is not None:
            flv_peer.stop()


def _cpu_per_stream(args, service: Afterlive, peers, video: Path, procs: Processes, tmp, report):
    n, seconds = args.cpu_streams, args.cpu_seconds
    stagger, settle = 1.0, 4.0
    rooms = service.create_rooms("video", n, "cpu")
    targets = {"afterlive": [f"{service.rtmp}/{r['stream_key']}" for r in rooms]}
    servers = {"afterlive": [service.serve_pid] + ([service.weed_pid] if service.weed_pid else [])}
    for side, peer in peers.items():
        if peer is not None:
            targets[side] = [f"{peer.url}/cpu-{i}" for i in range(n)]
            servers[side] = peer.pids()
    idle = CpuWindow(servers)
    idle.begin()
    time.sleep(args.idle_seconds)
    idle.end()
    idle_text = ", ".join(f"{side} {idle.percent(side):.1f}%" for side in servers)
    say(
        f"cpu: {n} video streams into each of {', '.join(servers)} for {seconds:g} s "
        f"({idle_text} idle)"
    )
    duration = seconds + stagger + settle + 2
    loads = {
        side: start_load(procs, video, side_targets, duration, stagger, tmp)
        for side, side_targets in targets.items()
    }
    time.sleep(stagger + settle)
    window = CpuWindow(
        servers
        | {f"{side} publisher": [load.proc.pid] for side, load in loads.items()}
        | {"serve": [service.serve_pid], "weed": servers["afterlive"][1:]}
    )
    window.begin()
    time.sleep(seconds)
    window.end()
    for side, load in loads.items():
        load.wait(120)
        errors = [r for r in load.results.values() if r.get("error")]
        if errors or len(load.results) < n:
            raise RuntimeError(f"{side}: publishes failed: {errors[:3]}")
    say(f"  {window.describe()}")
    resolver = Resolver(service, {r["id"] for r in rooms})
    wait_recordings_ended(service, resolver, {r["id"] for r in rooms}, 60)

    def per_stream(group: str) -> float:
        return window.percent(group) / n

    al, serve = per_stream("afterlive"), per_stream("serve")
    row = Row(
        figure=f"CPU per live 720p30 2.5 Mb/s stream, {n} streams x {seconds:g} s (% of a core): "
        "afterlive and the S3 server it uploads to (weed, embedded)",
        afterlive=f"{al:.2f}%",
        goal="<= 1.5x nginx",
    )
    # In production the store is S3 elsewhere: afterlive's own cost, uploads included.
    own = Row(
        figure="same, afterlive's own process (`afterlive serve`, uploading to S3; the S3 server "
        "not counted)",
        afterlive=f"{serve:.2f}%",
        goal="<= 1.5x nginx",
    )
    publishers = ", ".join(f"{side}'s {window.percent(f'{side} publisher'):.1f}%" for side in loads)
    report.notes.append(
        f"CPU, all servers loaded at once over the same {seconds:g} s window: serve "
        f"{window.percent('serve'):.1f}%, weed {window.percent('weed'):.1f}% of a core in all; "
        f"idle before the load: {idle_text} (afterlive = serve + weed). The publishers used "
        f"{publishers}; other processes on the machine {window.percent('others'):.0f}%."
    )
    rows = [row, own]
    if "nginx+flv" in servers:
        flv = per_stream("nginx+flv")
        rows.append(
            Row(
                figure="same, afterlive's own process, against nginx-rtmp as FACTS.md runs it "
                "(`hls on; record all`: it also writes each stream to an FLV file)",
                afterlive=f"{serve:.2f}%",
                peer=f"{flv:.2f}% (nginx-rtmp, hls + record all)",
                ratio=f"{serve / flv:.2f}x" if flv > 0 else "-",
                goal="<= 1.5x nginx",
                met="yes" if flv > 0 and serve / flv <= 1.5 else "no",
            )
        )
        report.notes.append(
            f"With the embedded store counted, against nginx-rtmp with `record all`: "
            f"{al / flv:.2f}x."
            if flv > 0
            else "nginx+flv used no measurable CPU."
        )
    if "nginx" in servers:
        ng = per_stream("nginx")
        row.peer = own.peer = f"{ng:.2f}% (nginx-rtmp, hls on)"
        row.ratio = f"{al / ng:.2f}x" if ng > 0 else "-"
        own.ratio = f"{serve / ng:.2f}x" if ng > 0 else "-"
        row.met = "yes" if ng > 0 and al / ng <= 1.5 else "no"
        own.met = "yes" if ng > 0 and serve / ng <= 1.5 else "no"
        busy_al = (window.percent("afterlive") - idle.percent("afterlive")) / n
        busy_ng = (window.percent("nginx") - idle.percent("nginx")) / n
        report.notes.append(
            f"CPU with each server's idle cost subtracted: afterlive {busy_al:.2f}%, "
            f"nginx {busy_ng:.2f}% per stream ({busy_al / busy_ng:.2f}x; nginx idle "
            f"{idle.percent('nginx'):.2f}%). nginx-rtmp only writes TS files and a playlist to "
            "local disk; afterlive also demuxes in Python, uploads every segment and playlist to "
            "S3, indexes segments in SQLite, and the S3 server's CPU (weed) is counted on its side."
            if busy_ng > 0
            else "nginx used no measurable CPU when idle-subtracted."
        )
    report.rows += rows


def wait_recordings_ended(
    service: Afterlive, resolver: Resolver, room_ids: set[str], timeout_s: float
) -> tuple[int, float]:
    """(recordings ended, Unix time when the last one was seen ended), polling the catalog
    every 0.25 s until all have ended or the timeout."""
    t0 = time.monotonic()
    ended = 0
    while time.monotonic() - t0 < timeout_s:
        found = service.recordings_of(room_ids)
        ended = sum(1 for _, status in found.values() if status == "ended")
        if ended >= len(room_ids):
            break
        time.sleep(0.25)
    return ended, time.time()


@dataclass
class Level:
    kind: str
    rooms: int
    passed: bool = False
    sampled_rooms: int = 0
    segments: int = 0
    within: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    worst: float = float("nan")
    publish_errors: int = 0
    incomplete: int = 0
    cpu: str = ""
    lag_p99: float | None = None
    ended_after_s: float = 0.0
    not_ended: int = 0
    backlog: str = ""
    profile: str = ""


class Backlog:
    """Where data waits inside afterlive, sampled once a second from outside:
    - `recv_q`: bytes received by the kernel on the RTMP port but not yet read by the event loop;
    - `spool`: segment files in the spool (closed ones not yet stored and indexed, and the ones
      being written);
    - `handshake`: how long a new RTMP connection waits for S0+S1+S2 after sending C0+C1 (the
      event loop's responsiveness, as the next publisher sees it; probed every 2 s).
    A segment late while none of these grows was waiting in a segmenter (its byte channel)."""

    def __init__(self, service: Afterlive) -> None:
        self.port = int(service.env["AFTERLIVE_RTMP_PORT"])
        self.spool = service.data / "spool"
        self.recv_q: list[int] = []
        self.pending: list[int] = []
        self.handshake_s: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def _sample(self) -> None:
        total = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[3] == "01":
                    total += int(fields[4].split(":")[1], 16)
        self.recv_q.append(total)
        self.pending.append(sum(1 for _ in self.spool.glob("*/*.ts")))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _probe(self) -> None:
        import socket

        while not self._stop.wait(2.0):
            t0 = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                    sock.sendall(b"\x03" + bytes(1536))
                    got = 0
                    while got < 1 + 2 * 1536:
                        chunk = sock.recv(8192)
                        if not chunk:
                            break
                        got += len(chunk)
                self.handshake_s.append(time.monotonic() - t0)
            except OSError:
                self.handshake_s.append(30.0)

    def start(self) -> Backlog:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> str:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)
        if not self.recv_q:
            return ""
        text = (
            f"RTMP socket backlog max {max(self.recv_q) / 1e6:.1f} MB (mean "
            f"{statistics.mean(self.recv_q) / 1e6:.2f}); segment files in the spool (open ones "
            f"too) max {max(self.pending)} (mean {statistics.mean(self.pending):.0f})"
        )
        if self.handshake_s:
            text += (
                f"; RTMP handshake answered in median {statistics.median(self.handshake_s):.2f}"
                f" s, max {max(self.handshake_s):.2f} s"
            )
        return text


def load_level(
    args, service: Afterlive, kind: str, n: int, flv: Path, procs: Processes, tmp: Path
) -> Level:
    seconds, stagger = args.seconds, args.stagger
    level = Level(kind=kind, rooms=n)
    say(f"load: {n} {kind} rooms for {seconds:g} s")
    rooms = service.create_rooms(kind, n, f"load {kind} {n}")
    room_ids = {r["id"] for r in rooms}
    resolver = Resolver(service, room_ids)
    sample_n = min(n, args.sample_rooms)
    sampled = [rooms[round(i * (n - 1) / max(1, sample_n - 1))] for i in range(sample_n)]
    sampled = list({r["id"]: r for r in sampled}.values())
    level.sampled_rooms = len(sampled)
    watchers = Watchers()
    watches = {
        r["id"]: watchers.add(
            store_watch(service, resolver, r["id"], "source", args.poll_ms / 1000),
            seconds + stagger + 120,
        )
        for r in sampled
    }
    targets = [f"{service.rtmp}/{r['stream_key']}" for r in rooms]
    load = start_load(procs, flv, targets, seconds, stagger, tmp)
    window = CpuWindow(
        {
            "serve": [service.serve_pid],
            "weed": [service.weed_pid] if service.weed_pid else [],
            "publisher": [load.proc.pid],
        }
    )
    backlog = Backlog(service).start()
    time.sleep(stagger + 3)
    window.begin()
    measure_s = max(1.0, seconds - 5)
    profile = None
    if args.profile is not None:
        profile = start_profile(args, service, f"{kind}-{n}", min(10.0, measure_s), procs)
    time.sleep(measure_s)
    window.end()
    level.cpu = window.describe()
    level.backlog = backlog.stop()
    if profile is not None:
        level.profile = finish_profile(profile, procs)
    load.wait(seconds + stagger + 120)
    ended, ended_at = wait_recordings_ended(service, resolver, room_ids, 90)
    watchers.wait_ended(30)
    # From the moment the last publisher's media ended (its last tag was due).
    media_end = max((r["t0"] + seconds for r in load.results.values() if r.get("t0")), default=0)
    level.ended_after_s = ended_at - media_end if media_end else float("nan")
    level.publish_errors = sum(1 for r in load.results.values() if r.get("error"))
    level.publish_errors += n - len(load.results)
    level.lag_p99 = load.summary.get("lag_p99_ms")
    timeline = Timeline(flv, seconds, video=kind == "video")
    lat: list[float] = []
    for r in sampled:
        target = f"{service.rtmp}/{r['stream_key']}"
        t0 = load.results.get(target, {}).get("t0")
        if t0 is not None:
            lat += latencies_ms(watches[r["id"]], t0, timeline)[0]
    level.segments = len(lat)
    level.within = sum(1 for v in lat if v <= VISIBLE_WITHIN_S * 1000) / len(lat) if lat else 0
    level.p50, level.p99 = pct(lat, 0.5), pct(lat, 0.99)
    level.worst = max(lat, default=float("nan"))
    level.incomplete = count_incomplete(service, resolver, rooms, seconds)
    level.not_ended = n - ended
    level.passed = (
        level.within >= PASS_FRACTION
        and level.publish_errors == 0
        and level.incomplete == 0
        and level.not_ended == 0
        and service.alive()
    )
    say(
        f"  {n} {kind}: {'PASS' if level.passed else 'FAIL'}: {level.within:.1%} of "
        f"{level.segments} sampled segments within 1 s (p50 {level.p50:.0f}, p99 "
        f"{level.p99:.0f}, max {level.worst:.0f} ms); publish errors {level.publish_errors}, "
        f"incomplete rooms {level.incomplete}; CPU {level.cpu}; publisher lag p99 "
        f"{level.lag_p99} ms; recordings ended {level.ended_after_s:.1f} s after the last media; "
        f"{level.backlog}"
    )
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
        raw = {
            r["id"]: {
                "t0": load.results.get(f"{service.rtmp}/{r['stream_key']}", {}).get("t0"),
                "segments": [vars(seen) for seen in watches[r["id"]].segments.values()],
            }
            for r in sampled
        }
        (args.dump / f"{kind}-{n}.json").write_text(json.dumps(raw, indent=1))
    return level


def count_incomplete(
    service: Afterlive, resolver: Resolver, rooms: list[dict], seconds: float
) -> int:
    """Rooms whose final playlist is missing, unterminated, or short of segments."""
    reader = service.reader
    assert reader is not None
    expected = int(seconds // 2) - 1  # 2 s segments; the last one may be short
    bad = 0
    for room in rooms:
        rec = resolver(room["id"])
        if rec is None:
            bad += 1
            continue
        status, body = reader.request("GET", f"recordings/{rec}/source/index.m3u8")
        text = body.decode(errors="replace") if status == 200 else ""
        if "#EXT-X-ENDLIST" not in text or text.count("#EXTINF") < expected:
            bad += 1
    return bad


def start_profile(args, service: Afterlive, name: str, seconds: float, procs: Processes):
    spy = shutil.which("py-spy")
    if spy is None:
        say("  (py-spy not installed: pip install py-spy; no profile)")
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{name}.txt"
    proc = procs.start(
        "py-spy",
        [
            spy,
            "record",
            "--pid",
            str(service.serve_pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "50",
            "--nonblocking",
            "--threads",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, out


def finish_profile(profile, procs: Processes) -> str:
    proc, out = profile
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
    procs.stop(proc)
    if not out.exists():
        return ""
    return summarize_profile(out)


PROFILE_CATEGORIES = {
    "S3 client (botocore/urllib3/http.client)": ("botocore/", "urllib3/", "http/client.py"),
    "segmenter (PyAV demux/mux)": ("transcode/segmenter.py",),
    "RTMP parsing (ingest/rtmp*)": ("ingest/rtmp.py", "ingest/rtmp_chunks.py"),
    "byte channel": ("ingest/channel.py",),
    "catalog (SQLAlchemy/SQLite)": ("sqlalchemy/",),
    "playlists": ("transcode/playlists.py",),
}


def summarize_profile(path: Path, top: int = 6) -> str:
    """Who held the GIL in the serve process (py-spy --gil): by thread, area and leaf."""
    by_thread: Counter = Counter()
    by_area: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = re.sub(r"[-_][0-9a-f]+$", "", frames[0].split("): ", 1)[-1])
        by_thread[thread] += n
        for area, needles in PROFILE_CATEGORIES.items():
            if any(needle in stack for needle in needles):
                by_area[area] += n
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        if leaf.startswith("Runner.run ("):
            leaf = "event loop C code (uvloop)"
        leaves[leaf] += n
    if not total:
        return ""

    def share(counter: Counter, k: int) -> str:
        return ", ".join(f"{name} {100 * c / total:.0f}%" for name, c in counter.most_common(k))

    return (
        f"GIL samples ({total}) by thread: {share(by_thread, 4)}; by area (inclusive): "
        f"{share(by_area, 6)}; top leaves: {share(leaves, top)}"
    )


def concurrency(args, service: Afterlive, files: dict[str, Path], procs, tmp, report) -> None:
    for kind, levels in (("audio", args.audio_levels), ("video", args.video_levels)):
        if not levels:
            continue
        results: list[Level] = []

        def run(n: int, kind: str = kind, results: list[Level] = results) -> bool:
            if not service.alive():
                return False
            level = load_level(args, service, kind, n, files[kind], procs, tmp)
            results.append(level)
            time.sleep(2)
            return level.passed

        for n in levels:
            if not run(n):
                break
        # Then narrow down between the highest pass and the lowest failure (or below the first
        # target when even it failed), a few levels at most.
        for _ in range(args.refine):
            lo = max((lv.rooms for lv in results if lv.passed), default=0)
            hi = min((lv.rooms for lv in results if not lv.passed), default=0)
            if not hi or not service.alive():
                break
            mid = (lo + hi) // 2 if lo else hi // 2
            if mid <= lo or hi - lo <= max(2, hi // 10):
                break
            run(mid)
        best = max((lv.rooms for lv in results if lv.passed), default=0)
        failed = min((lv for lv in results if not lv.passed), key=lambda lv: lv.rooms, default=None)
        shown = f"{best}" if best else f"< {min(lv.rooms for lv in results)}"
        if failed is not None:
            shown += f" ({failed.rooms}: {failed.within:.0%})"
        tried = ", ".join(str(lv.rooms) for lv in results)
        report.rows.append(
            Row(
                figure=f"concurrent {kind} rooms with >= 99% of segments visible within 1 s "
                f"(tried {tried}; {args.seconds:g} s each)",
                afterlive=shown,
                goal=f"{ROOM_GOALS[kind]}",
                met="yes" if best >= ROOM_GOALS[kind] else "no",
            )
        )
        for lv in results:
            report.notes.append(
                f"{lv.rooms} {lv.kind} rooms: {'pass' if lv.passed else 'FAIL'}; "
                f"{lv.within:.1%} of {lv.segments} segments in {lv.sampled_rooms} sampled rooms "
                f"visible within 1 s (p50 {lv.p50:.0f} ms, p99 {lv.p99:.0f} ms, max "
                f"{lv.worst:.0f} ms); publish errors {lv.publish_errors}; rooms with an "
                f"incomplete final playlist {lv.incomplete}, not ended after 90 s "
                f"{lv.not_ended}; CPU (% of one core, 200% = "
                f"machine): {lv.cpu}; publisher tag lateness p99 {lv.lag_p99} ms; all "
                f"recordings ended (catalog) {lv.ended_after_s:.1f} s after the last media "
                "was sent; "
                f"{lv.backlog}." + (f" Profile of serve: {lv.profile}" if lv.profile else "")
            )


# ---------------------------------------------------------------------------------------------


def print_report(report: Report, args) -> None:
    print(
        f"\nafterlive live ingest, {time.strftime('%Y-%m-%d')}, `python bench/ingest.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`, "
        f"{os.cpu_count()} cores, afterlive at {git_version()}\n"
    )
    print("| figure | afterlive | peer | ratio | goal | met? |")
    print("|---|---:|---:|---:|---|---|")
    for r in report.rows:
        print(f"| {r.figure} | {r.afterlive} | {r.peer} | {r.ratio} | {r.goal} | {r.met} |")
    print("\nNotes:")
    print(
        "- Visibility is measured from outside: a poller GETs the media playlist from the store "
        "(SigV4, keep-alive) every 20 ms (load levels: every "
        f"{args.poll_ms:g} ms) and HEADs each new segment; a segment counts as visible when the "
        "first playlist listing it has arrived (an upper bound: up to one poll interval late). "
        "It is measured from the instant the publisher sent the packet that closes the "
        "segment: publish t0 + the segment's media end (the next segment's first keyframe for "
        "video; the next audio frame for audio; the file has no B-frames, so pts = dts = send "
        "time). The segment's own last frame went out one frame (33 ms video, 21 ms audio) "
        "earlier; a segment cannot close before the next keyframe arrives (FACTS.md), so that "
        "wait is not counted. The last segment of each publish (closed by the unpublish) is "
        "left out."
    )
    print(
        "- Inputs: ffmpeg testsrc2 1280x720 30 fps, x264 veryfast 2.5 Mb/s CBR-ish, GOP 60 "
        "(2 s), no B-frames, AAC 128 kb/s stereo 48 kHz; audio rooms: AAC 64 kb/s mono. "
        f"{FILE_SECONDS} s files looped by the publisher (bench/rtmp_load.py), paced per tag."
    )
    print(
        f"- Load levels: connection starts spread over {args.stagger:g} s; visibility polled "
        f"for up to {args.sample_rooms} rooms per level, evenly spread over the start order; "
        "every room's final playlist is checked for EXT-X-ENDLIST and its segment count. A level "
        f"passes when >= {PASS_FRACTION:.0%} of the sampled segments were visible within "
        f"{VISIBLE_WITHIN_S:g} s, every publish ran to its end and every final playlist is "
        "complete. The ramp stops at the first failure; then up to --refine extra levels (halving "
        "below the first target, or bisecting) narrow down the limit."
    )
    for note in report.notes:
        print(f"- {note}")


def git_version() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


# Issue 3's goals for rooms per 2-core machine (the highest level tried is not the goal).
ROOM_GOALS = {"audio": 300, "video": 60}


def parse_levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 minute smoke run")
    parser.add_argument("--skip-nginx", action="store_true", help="no nginx-rtmp peer")
    parser.add_argument("--audio-levels", default=None, help="e.g. 100,200,300 ('' to skip)")
    parser.add_argument("--video-levels", default=None, help="e.g. 20,40,60 ('' to skip)")
    parser.add_argument("--seconds", type=float, default=None, help="per load level (30)")
    parser.add_argument("--visibility-seconds", type=float, default=None, help="(66)")
    parser.add_argument("--cpu-streams", type=int, default=None, help="(4)")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="(40)")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--stagger", type=float, default=2.0, help="spread of publish starts")
    parser.add_argument("--sample-rooms", type=int, default=30, help="rooms polled per level")
    parser.add_argument("--poll-ms", type=float, default=100.0, help="poll interval under load")
    parser.add_argument(
        "--refine", type=int, default=2, help="extra levels to narrow down the limit (2)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the serve process under load")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="AFTERLIVE_NAME=VALUE",
        help="a setting for afterlive serve, e.g. AFTERLIVE_SEGMENTER_THREADS=2 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    parser.add_argument("--dump", type=Path, help="write what the poller saw per level here")
    parser.add_argument(
        "--phases", default="visibility,cpu,concurrency", help="which measurements to run"
    )
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "audio_levels": "20,50" if quick else "100,200,300",
        "video_levels": "5,10" if quick else "20,40,60",
        "seconds": 15.0 if quick else 30.0,
        "visibility_seconds": 24.0 if quick else 66.0,
        "cpu_streams": 2 if quick else 4,
        "cpu_seconds": 12.0 if quick else 40.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.audio_levels = parse_levels(args.audio_levels)
    args.video_levels = parse_levels(args.video_levels)
    if args.profile is not None:
        args.profile = args.profile.resolve()

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="afterlive-bench-ingest-"))
    report = Report()
    service = None
    nginx = None
    try:
        say(f"temp dir {tmp}; encoding inputs ({FILE_SECONDS} s each)")
        video, audio = encode_inputs(tmp)
        files = {"video": video, "audio": audio}
        if not args.skip_nginx:
            if nginx_rtmp.install(log=say):
                nginx = nginx_rtmp.NginxRtmp(tmp / "nginx", free_port())
                nginx.start()
                say(f"nginx-rtmp on {nginx.url} (pids {nginx.pids()})")
            else:
                report.notes.append(f"nginx peer unavailable: {nginx_rtmp.available()}")
        settings = dict(item.split("=", 1) for item in args.set)
        service = Afterlive(tmp, procs, settings)
        service.start()
        say(f"afterlive serve pid {service.serve_pid}, weed pid {service.weed_pid}")
        warm_up(service, files, procs, tmp)
        phases = [
            ("visibility", lambda: visibility(args, service, nginx, files, procs, tmp, report)),
            ("cpu", lambda: cpu_per_stream(args, service, nginx, video, procs, tmp, report)),
            ("concurrency", lambda: concurrency(args, service, files, procs, tmp, report)),
        ]
        for name, run in phases:
            if name not in args.phases.split(","):
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
        if nginx is not None:
            nginx.stop()
        if service is not None:
            service.stop()
        procs.stop_all()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(report, args)


if __name__ == "__main__":
    main()
