"""Replay API: requests/s and p99 of the list and playlist routes, against nginx serving the same
bytes as static files in the same run.

    python bench/api.py [--quick] [--seconds 10] [--connections 16] [--threads 1] [--rounds 1]
        [--skip-public] [--skip-bucket-wait] [--profile DIR] [--keep]

Everything on loopback, in one run:

1. `afterlive serve` as shipped (one uvicorn worker, the embedded SeaweedFS) on a fresh data dir,
   seeded through that data dir while it runs with what the recorder leaves behind: a 2-hour
   video recording (3,600 two-second segments in each of two renditions: catalog rows, media
   playlists with a date-time per segment, a master playlist) and 50 short ones, so that
   `GET /api/recordings` answers a full page of 20. No segment bytes are stored: nothing here
   fetches a segment, and the routes measured never read one.
2. Cold costs, one request each on a new connection: the first list, master and media playlist
   after start (the media one reads the store and signs 3,600 URLs), the media playlist again
   (cached), and (unless --skip-bucket-wait or --quick) the first media playlist of a new
   signing bucket (source text cached, every URL signed again; waits up to 60 s for it). The
   measured runs of that playlist are kept inside one signing bucket; one more run (unless
   --skip-bucket-wait or --quick) straddles a bucket boundary, where every connection asks for
   a playlist that is not yet signed.
3. nginx (one worker, own prefix and config, `daemon off`) serves the bodies the API answered,
   byte for byte: the list as a JSON file, the master playlist, the rewritten media playlist.
4. wrk (`--latency`; the same connections, threads and duration for both sides) on each target,
   afterlive then nginx, each after a 1 s warm-up, `--rounds` times (the median round by req/s
   is kept); CPU from /proc over each run: the server's, wrk's and the rest of the machine's
   (load this benchmark did not start makes a run worthless; the table shows it).
5. Unless --skip-public: serve restarted on the same data dir with
   AFTERLIVE_PUBLIC_MEDIA_BASE_URL set (segment URIs are base + key, nothing signed), and the
   media playlist measured again against nginx serving that body.

--profile DIR: after the measured runs, py-spy records `afterlive serve` under the same load for
each afterlive target (not during the measured runs: sampling costs the server CPU) and the
report adds where the time went.

Needs `wrk` and nginx (Debian packages `wrk`, `nginx-light`; installed with apt-get when missing
and root). The default run takes about 4 minutes, plus about 1.5 min per extra round; --quick
about 1.

Progress goes to stderr; a Markdown table and notes go to stdout at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The repo first: this file is named like the `api` package, which must win the import.
sys.path.insert(0, str(REPO))

from storage import Catalog, EmbeddedStore, ObjectStore, StoreConfig  # noqa: E402
from storage import keys as K  # noqa: E402
from storage.catalog import sqlite_url  # noqa: E402
from transcode.playlists import MasterPlaylist, MediaPlaylist, MediaSegment, Variant  # noqa: E402

AFTERLIVE = (
    [shutil.which("afterlive")] if shutil.which("afterlive") else [sys.executable, "-m", "api.cli"]
)
TICK = os.sysconf("SC_CLK_TCK")
SEGMENT_S = 2.0
LONG_SEGMENTS = 3_600  # 2 hours of 2 s segments
SHORT_RECORDINGS = 50
SHORT_SEGMENTS = 3
# (name, bytes per segment, peak bits/s, codecs, resolution): what a 720p30 room records.
RENDITIONS = (
    ("source", 625_000, 2_750_000, "avc1.64001f,mp4a.40.2", (1280, 720)),
    ("audio", 32_000, 141_000, "mp4a.40.2", None),
)
PUBLIC_BASE_URL = "http://cdn.example.test/media"
# The shipped default TTL (1 h) signs in buckets of min(60 s, TTL / 10): see api/playback.py.
SIGNING_BUCKET_S = 60
T_START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T_START:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def stop_process(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def apt_install(binary: str, package: str) -> str | None:
    """The binary's path, after `apt-get install package` if it is missing (needs root)."""
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )
    if found or shutil.which("apt-get") is None:
        return found
    say(f"installing {package} with apt-get")
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(command, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(command, **quiet)
    return shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )


# ---------------------------------------------------------------------------------------------
# The two servers


class Afterlive:
    """`afterlive serve` on a data dir; stopped by PID (its embedded store too, if left over)."""

    def __init__(self, data: Path, log: Path, **extra_env: str) -> None:
        self.data = data
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AFTERLIVE_"))}
        self.env = env | {
            "AFTERLIVE_DATA_DIR": str(data),
            "AFTERLIVE_API_PORT": str(free_port()),
            "AFTERLIVE_STORE_PORT": str(free_port()),
            "AFTERLIVE_RTMP_PORT": str(free_port()),
            **extra_env,
        }
        self.port = int(self.env["AFTERLIVE_API_PORT"])
        self.store_port = int(self.env["AFTERLIVE_STORE_PORT"])
        self.proc: subprocess.Popen | None = None
        self._weed: int | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*AFTERLIVE, "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"afterlive serve exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(self.port, "/healthz", timeout=2).status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"afterlive did not become healthy:\n{self.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            self._weed = int((self.data / "store" / "weed.pid").read_text())

    def store(self) -> ObjectStore:
        """A client of the service's own store, with the credentials it keeps in its data dir."""
        creds = EmbeddedStore(self.data / "store", port=self.store_port).credentials
        return ObjectStore(
            StoreConfig(
                endpoint_url=f"http://127.0.0.1:{self.store_port}",
                access_key_id=creds.access_key_id,
                secret_access_key=creds.secret_access_key,
                bucket="afterlive",
            )
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=90)
        # serve stops its store; should it not have, stop that child of ours by its PID.
        if self._weed is not None and Path(f"/proc/{self._weed}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._weed, signal.SIGTERM)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self) -> Counter:
        """WARNING/ERROR lines of the service log, with ids and numbers blanked for counting."""
        counts: Counter = Counter()
        if self.log.exists():
            for line in self.log.read_text(errors="replace").splitlines():
                if " WARNING " in line or " ERROR " in line:
                    text = line.split(" ", 2)[-1]
                    counts[re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", text)] += 1
        return counts


NGINX_CONFIG = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{
        application/vnd.apple.mpegurl m3u8;
        application/json json;
    }}
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class Nginx:
    """nginx serving `directory/www` as static files: one worker, own prefix, no daemon."""

    def __init__(self, directory: Path, binary: str) -> None:
        self.directory = directory
        self.binary = binary
        self.www = directory / "www"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self.www.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(
            NGINX_CONFIG.format(
                # As root, workers would switch to `nobody` and could not read our temp dir.
                user="user root;" if os.geteuid() == 0 else "",
                prefix=self.directory,
                port=self.port,
                root=self.www,
            )
        )
        self.proc = subprocess.Popen(
            # -e: the error log before the config is read (else it tries /var/log/nginx).
            [
                self.binary,
                "-p",
                str(self.directory),
                "-c",
                str(conf),
                "-e",
                str(self.directory / "e"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port}")

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        workers = children(proc.pid) if proc.poll() is None else []
        stop_process(proc, timeout_s=10)  # SIGTERM: fast shutdown, the master stops its workers
        for pid in workers:
            if Path(f"/proc/{pid}").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Seeding: what the recorder leaves in the catalog and the store


class Clock:
    """The catalog's `now`, set by the seeder so rows carry the times of a past recording."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


def seed_recording(
    catalog: Catalog,
    store: ObjectStore,
    clock: Clock,
    creator_id: str,
    *,
    title: str,
    start: datetime,
    segments: int,
) -> str:
    clock.at = start
    room = catalog.add_room(creator_id=creator_id, title=title, kind="video")
    recording = catalog.start_recording(room.id)
    variants = []
    for name, size, bandwidth, codecs, resolution in RENDITIONS:
        playlist = MediaPlaylist(segments=[], playlist_type="EVENT", ended=True)
        for seq in range(segments):
            at = start + timedelta(seconds=SEGMENT_S * seq)
            key = K.media_segment(recording.id, name, at, seq, "ts")
            catalog.add_segment(
                recording_id=recording.id,
                rendition=name,
                sequence=seq,
                start_at=at,
                duration_s=SEGMENT_S,
                key=key,
                size_bytes=size,
            )
            playlist.segments.append(
                MediaSegment(uri=key.rsplit("/", 1)[1], duration_s=SEGMENT_S, program_date_time=at)
            )
        store.put_bytes(K.media_playlist(recording.id, name), playlist.render().encode())
        variant = Variant(
            uri=f"{name}/index.m3u8", bandwidth=bandwidth, codecs=codecs, resolution=resolution
        )
        catalog.set_rendition(
            recording_id=recording.id,
            name=name,
            playlist_key=K.media_playlist(recording.id, name),
            codecs=codecs,
            bandwidth=bandwidth,
            width=resolution[0] if resolution else None,
            height=resolution[1] if resolution else None,
        )
        variants.append(variant)
    store.put_bytes(
        K.master_playlist(recording.id), MasterPlaylist(variants=variants).render().encode()
    )
    clock.at = start + timedelta(seconds=SEGMENT_S * segments)
    catalog.end_recording(recording.id, retention=timedelta(hours=24))
    return recording.id


def seed(service: Afterlive) -> str:
    """50 short recordings and one of 2 hours; returns the long one's id."""
    clock = Clock()
    now = clock.at.replace(microsecond=0)
    catalog = Catalog(sqlite_url(service.data / "afterlive.db"), now=clock)
    store = service.store()
    try:
        creator, _token = catalog.add_creator("bench host")
        long_id = seed_recording(
            catalog,
            store,
            clock,
            creator.id,
            title="Two hours of talk",
            start=now - timedelta(seconds=SEGMENT_S * LONG_SEGMENTS + 600),
            segments=LONG_SEGMENTS,
        )
        for i in range(SHORT_RECORDINGS):
            seed_recording(
                catalog,
                store,
                clock,
                creator.id,
                title=f"Short room {i}",
                start=now - timedelta(minutes=SHORT_RECORDINGS + 5 - i),
                segments=SHORT_SEGMENTS,
            )
    finally:
        catalog.dispose()
    return long_id


# ---------------------------------------------------------------------------------------------
# Requests and load


@dataclass
class Reply:
    status: int
    body: bytes
    ms: float


def get(port: int, path: str, timeout: float = 30) -> Reply:
    """One GET on a new connection, timed from connect to the last byte."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    return Reply(reply.status, body, (time.perf_counter() - t0) * 1000)


@dataclass
class Load:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    errors: int = 0  # non-2xx/3xx answers and socket errors
    server_cpu: float = 0.0  # % of one core, the server's processes
    wrk_cpu: float = 0.0  # % of one core, the load generator
    others_cpu: float = 0.0  # % of one core, everything else on the machine

    @property
    def cpu_per_request_us(self) -> float:
        """Server CPU per answered request: what a request costs, whatever else ran."""
        return 1e4 * self.server_cpu / self.rps if self.rps else 0.0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(text: str) -> Load:
    load = Load()
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        load.rps = float(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        load.requests = int(m.group(1))
    if m := re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", text):
        load.max_ms = _ms(m.group(1))
    for pct, value in re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.MULTILINE):
        setattr(load, "p50_ms" if pct == "50" else "p99_ms", _ms(value))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        load.errors += int(m.group(1))
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if m := re.search(socket_errors, text):
        load.errors += sum(int(x) for x in m.groups())
    return load


@dataclass
class LoadGenerator:
    wrk: str
    seconds: float
    connections: int
    threads: int

    def run(self, url: str, server_pids: Callable[[], list[int]], seconds: float | None = None):
        seconds = seconds or self.seconds
        pids = server_pids()
        before = sum(cpu_seconds(p) for p in pids)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = machine_busy_seconds()
        t0 = time.monotonic()
        done = subprocess.run(
            [
                self.wrk,
                f"-t{self.threads}",
                f"-c{self.connections}",
                f"-d{seconds:g}s",
                "--latency",
                "--timeout",
                "10s",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        wall = time.monotonic() - t0
        busy = machine_busy_seconds() - busy
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
        load = parse_wrk(done.stdout)
        load.server_cpu = 100 * (sum(cpu_seconds(p) for p in pids) - before) / wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
        load.wrk_cpu = 100 * spent / wall
        load.others_cpu = max(0.0, 100 * busy / wall - load.server_cpu - load.wrk_cpu)
        return load


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Target:
    name: str
    path: str  # on the API
    file: str  # nginx's twin, under its root
    body: bytes = b""
    afterlive: Load = field(default_factory=Load)
    nginx: Load = field(default_factory=Load)


@dataclass
class Report:
    targets: list[Target] = field(default_factory=list)
    cold: list[tuple[str, float, int]] = field(default_factory=list)  # (what, ms, bytes)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)  # target -> summary


def fetch_twin(service: Afterlive, nginx: Nginx, target: Target) -> None:
    """The API's answer, written where nginx serves it; checked to come back identical."""
    reply = get(service.port, target.path)
    if reply.status != 200:
        raise RuntimeError(f"GET {target.path}: {reply.status} {reply.body[:200]!r}")
    target.body = reply.body
    path = nginx.www / target.file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(reply.body)
    twin = get(nginx.port, f"/{target.file}")
    if twin.status != 200 or twin.body != reply.body:
        raise RuntimeError(f"nginx does not serve the same bytes for {target.file}")


def measure(
    gen: LoadGenerator,
    service: Afterlive,
    nginx: Nginx,
    target: Target,
    before: Callable[[], None] | None = None,
    rounds: int = 1,
) -> None:
    """Rounds of: afterlive, then nginx, each a 1 s warm-up then the measured run. Each side
    keeps its median round by req/s. `before` runs before each afterlive run."""
    sides = (
        ("afterlive", f"http://127.0.0.1:{service.port}{target.path}", lambda: [service.pid]),
        ("nginx", f"http://127.0.0.1:{nginx.port}/{target.file}", nginx.pids),
    )
    runs: dict[str, list[Load]] = {"afterlive": [], "nginx": []}
    for i in range(rounds):
        for side, url, pids in sides:
            if before is not None and side == "afterlive":
                before()
            gen.run(url, pids, seconds=1)  # warm-up: connections, caches, the CPU's clock
            load = gen.run(url, pids)
            runs[side].append(load)
            log_load(f"{target.name} / {side}, round {i + 1}", load)
    for side, loads in runs.items():
        setattr(target, side, sorted(loads, key=lambda x: x.rps)[(len(loads) - 1) // 2])


def log_load(what: str, load: Load) -> None:
    say(
        f"{what}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"max {load.max_ms:.0f} ms, server CPU {load.server_cpu:.0f}%, "
        f"wrk CPU {load.wrk_cpu:.0f}%, rest of the machine {load.others_cpu:.0f}%, "
        f"errors {load.errors}"
    )


def cold(report: Report, service: Afterlive, what: str, path: str) -> Reply:
    reply = get(service.port, path)
    if reply.status != 200:
        raise RuntimeError(f"GET {path}: {reply.status} {reply.body[:200]!r}")
    report.cold.append((what, reply.ms, len(reply.body)))
    say(f"{what}: {reply.ms:.1f} ms, {len(reply.body):,} bytes")
    return reply


def next_boundary() -> float:
    """The Unix time the next signing bucket starts (buckets are whole multiples of Unix time)."""
    return (int(time.time()) // SIGNING_BUCKET_S + 1) * SIGNING_BUCKET_S


def wait_until(moment: float, why: str) -> None:
    delay = moment - time.time()
    if delay > 0:
        say(f"waiting {delay:.0f} s {why}")
        time.sleep(delay)


def clear_of_boundary(service: Afterlive, path: str, need_s: float) -> None:
    """Make the next `need_s` seconds fall inside one signing bucket: if a boundary is nearer,
    wait for it and sign the new bucket's playlist with one request, so that no run measures
    the herd of concurrent re-signings at the boundary (a row of its own measures that)."""
    if next_boundary() - time.time() < need_s:
        wait_until(next_boundary() + 0.2, "to keep the run inside one signing bucket")
        get(service.port, path)


def profile(
    args, gen: LoadGenerator, service: Afterlive, targets: list[Target], report: Report
) -> None:
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        report.notes.append("--profile: py-spy not found, no profile taken")
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    for target in targets:
        out = args.profile / f"{re.sub(r'[^a-z0-9]+', '-', target.name.lower()).strip('-')}.txt"
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "-p",
                str(service.pid),
                "-d",
                f"{gen.seconds:g}",
                "-r",
                "200",
                "--gil",
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        gen.run(f"http://127.0.0.1:{service.port}{target.path}", lambda: [service.pid])
        try:
            spy.wait(gen.seconds + 30)
        except subprocess.TimeoutExpired:
            stop_process(spy)
        if out.exists():
            report.profiles[target.name] = summarize_profile(out)
            say(f"profile of {target.name} in {out}")


OUR_PACKAGES = {"api", "storage", "transcode", "ingest"}


def _source(frame: str) -> str:
    """A frame `func (path:line)` -> path; py-spy shortens paths to their import name."""
    m = re.search(r"\((.*):\d+\)$", frame)
    return m.group(1) if m else ""


def _package(frame: str) -> str:
    """The package whose code a frame runs: `sqlalchemy`, `afterlive api`, `threading`..."""
    path = _source(frame)
    for marker in ("site-packages/", "dist-packages/"):
        path = path.split(marker, 1)[-1]
    head = path.lstrip("/").split("/", 1)[0].removesuffix(".py") if path else "?"
    return f"afterlive {head}" if head in OUR_PACKAGES else head


def _ours(frame: str) -> bool:
    """Afterlive code below the CLI (which only wraps the event loop)."""
    return _package(frame).startswith("afterlive ") and not _source(frame).startswith("api/cli")


def summarize_profile(path: Path, top: int = 8) -> str:
    """Self time by package, and the afterlive functions with the most inclusive time."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    where: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if _source(f)]
        if not frames:
            continue
        total += n
        own[_package(frames[-1])] += n
        pool = "threadpool" if any("WorkerThread.run" in f for f in frames) else "event loop"
        where[pool] += n
        for name in {f.split(" (", 1)[0] for f in frames if _ours(f)}:
            inclusive[name] += n
    if not total:
        return "no samples"
    packages = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in own.most_common(top))
    ours = ", ".join(f"`{name}` {100 * n / total:.0f}%" for name, n in inclusive.most_common(5))
    threads = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in where.most_common())
    return (
        f"GIL time: {threads}; by package (self) {packages}; afterlive functions (inclusive) "
        f"{ours} ({total:,} samples)"
    )


def run(args, report: Report, tmp: Path, started: list) -> None:
    wrk = apt_install("wrk", "wrk")
    nginx_binary = apt_install("nginx", "nginx-light")
    if wrk is None or nginx_binary is None:
        raise RuntimeError("needs wrk and nginx (Debian packages wrk, nginx-light)")
    gen = LoadGenerator(wrk, args.seconds, args.connections, args.threads)

    data = tmp / "afterlive"
    service = Afterlive(data, tmp / "afterlive.log")
    started.append(service)
    service.start()
    say(f"afterlive serve pid {service.pid} on :{service.port}; seeding")
    t0 = time.monotonic()
    long_id = seed(service)
    say(f"seeded {SHORT_RECORDINGS + 1} recordings in {time.monotonic() - t0:.1f} s")

    base = f"/api/recordings/{long_id}"
    recordings = Target("`GET /api/recordings` (JSON, 20 items)", "/api/recordings", "list.json")
    master = Target("master playlist, 2 h recording", f"{base}/master.m3u8", "master.m3u8")
    media = Target(
        "media playlist, 2 h (3,600 segments), presigned URIs",
        f"{base}/source/index.m3u8",
        "presigned/index.m3u8",
    )
    cold(report, service, "first `GET /api/recordings` after start", recordings.path)
    cold(report, service, "first master playlist after start (store read)", master.path)
    cold(
        report,
        service,
        "first media playlist after start (store read + 3,600 URLs signed)",
        media.path,
    )
    cold(report, service, "the same media playlist again (cached for this bucket)", media.path)

    nginx = Nginx(tmp / "nginx", nginx_binary)
    started.append(nginx)
    nginx.start()
    say(f"nginx on :{nginx.port} (pids {nginx.pids()})")
    run_s = 1 + args.seconds + 2  # warm-up, measured run, margin

    def new_bucket_first() -> None:
        if args.quick or args.skip_bucket_wait or any("new signing" in c[0] for c in report.cold):
            clear_of_boundary(service, media.path, run_s)
            return
        wait_until(next_boundary() + 0.2, "for a new signing bucket")
        cold(
            report,
            service,
            "first media playlist in a new signing bucket (3,600 URLs signed again)",
            media.path,
        )

    for target in (recordings, master, media):
        fetch_twin(service, nginx, target)
        report.targets.append(target)
        hook = new_bucket_first if target is media else None
        measure(gen, service, nginx, target, hook, rounds=args.rounds)

    if not (args.quick or args.skip_bucket_wait):
        # 16 connections ask at once when the bucket turns: how much does that herd cost?
        herd = Target(
            "same, the run straddling a signing-bucket boundary (nginx: the row above)",
            media.path,
            media.file,
            body=media.body,
        )
        wait_until(next_boundary() - args.seconds / 2, "to straddle the next signing bucket")
        url = f"http://127.0.0.1:{service.port}{media.path}"
        herd.afterlive = gen.run(url, lambda: [service.pid])
        herd.nginx = media.nginx
        log_load("across a bucket boundary / afterlive", herd.afterlive)
        report.targets.append(herd)
    if args.profile is not None:
        for target in (recordings, master, media):
            if target is media:
                clear_of_boundary(service, media.path, args.seconds + 2)
            profile(args, gen, service, [target], report)

    problems = service.log_problems()
    service.stop()
    started.remove(service)
    if problems:
        report.notes.append(
            "Warnings and errors in the afterlive log (numbers blanked): "
            + "; ".join(f"{n} x `{text}`" for text, n in problems.most_common(4))
        )
    if args.skip_public:
        return

    say("restarting serve with AFTERLIVE_PUBLIC_MEDIA_BASE_URL")
    service = Afterlive(
        data, tmp / "afterlive-public.log", AFTERLIVE_PUBLIC_MEDIA_BASE_URL=PUBLIC_BASE_URL
    )
    started.append(service)
    service.start()
    public = Target(
        "media playlist, 2 h (3,600 segments), public base URL",
        f"{base}/source/index.m3u8",
        "public/index.m3u8",
    )
    get(service.port, recordings.path)  # the catalog's first connection, not the playlist's cost
    cold(
        report,
        service,
        "first media playlist after start, public base URL (store read + rewrite)",
        public.path,
    )
    fetch_twin(service, nginx, public)
    report.targets.append(public)
    measure(gen, service, nginx, public, rounds=args.rounds)
    if args.profile is not None:
        profile(args, gen, service, [public], report)


def print_report(report: Report, args, elapsed_s: float) -> None:
    command = "python bench/api.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    print(
        f"\nafterlive replay API, {time.strftime('%Y-%m-%d')}, `{command}`, {os.cpu_count()} "
        f"cores, afterlive at {git_version()}, wrk -t{args.threads} -c{args.connections} "
        f"-d{args.seconds:g}s --latency, {args.rounds} round(s) per side, "
        f"run time {elapsed_s / 60:.1f} min\n"
    )
    print(
        "| target | body | afterlive req/s | afterlive p50 / p99 | nginx req/s | "
        "nginx p50 / p99 | ratio (req/s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in report.targets:
        a, n = t.afterlive, t.nginx
        ratio = f"{a.rps / n.rps:.3f}x" if n.rps else "-"
        print(
            f"| {t.name} | {_size(len(t.body))} | {a.rps:,.0f} | {_lat(a)} | {n.rps:,.0f} | "
            f"{_lat(n)} | {ratio} |"
        )
    print(
        "\nCPU during each measured run (% of one core; server = serve, or nginx master + "
        "worker), the slowest request, and the server's CPU per request (less sensitive to "
        "other load on the machine than req/s):\n"
    )
    print(
        "| target | afterlive: server / wrk / rest of machine / max | "
        "nginx: server / wrk / rest of machine / max | server CPU per request: afterlive / "
        "nginx | ratio (nginx/afterlive) |"
    )
    print("|---|---:|---:|---:|---:|")
    for t in report.targets:
        a, n = t.afterlive, t.nginx
        per = f"{_us(a.cpu_per_request_us)} / {_us(n.cpu_per_request_us)}"
        ratio = (
            f"{n.cpu_per_request_us / a.cpu_per_request_us:.3f}x" if a.cpu_per_request_us else "-"
        )
        print(f"| {t.name} | {_cpu(a)} | {_cpu(n)} | {per} | {ratio} |")
    if report.cold:
        print("\nOne request on a new connection, from connect to last byte:\n")
        print("| request | ms | body |")
        print("|---|---:|---:|")
        for what, ms, size in report.cold:
            print(f"| {what} | {ms:.1f} | {_size(size)} |")
    print("\nNotes:")
    errors = [f"{t.name}: {t.afterlive.errors} / {t.nginx.errors}" for t in report.targets]
    if any(t.afterlive.errors or t.nginx.errors for t in report.targets):
        print(f"- Errors (afterlive / nginx): {'; '.join(errors)}")
    print(
        f"- {os.cpu_count()} cores: wrk runs on the same machine and competes with the server "
        "for them; the generator and its settings are the same for both sides. nginx has one "
        "worker, as `afterlive serve` has one uvicorn process. Both write an access log."
    )
    print(
        "- nginx serves the exact bytes the API answered (checked), from files: sendfile, no "
        "gzip (wrk sends no Accept-Encoding, and the API does not compress either)."
    )
    for note in report.notes:
        print(f"- {note}")
    for name, summary in report.profiles.items():
        print(f"- py-spy, {name}: {summary}")


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def _cpu(load: Load) -> str:
    return (
        f"{load.server_cpu:.0f}% / {load.wrk_cpu:.0f}% / {load.others_cpu:.0f}% / "
        f"{load.max_ms:.0f} ms"
    )


def _lat(load: Load) -> str:
    return f"{load.p50_ms:.2f} / {load.p99_ms:.2f} ms"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per target, no bucket wait")
    parser.add_argument("--seconds", type=float, default=None, help="per target and side (10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the sides this often; median kept (1)"
    )
    parser.add_argument("--skip-public", action="store_true", help="no public-base-URL run")
    parser.add_argument(
        "--skip-bucket-wait", action="store_true", help="do not wait for a new signing bucket"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the API under load, files here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.profile is not None:
        args.profile = args.profile.resolve()

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="afterlive-bench-api-"))
    report = Report()
    started: list = []
    try:
        say(f"temp dir {tmp}")
        run(args, report, tmp, started)
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        report.notes.append("interrupted before the end")
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        report.notes.append(f"failed: {type(exc).__name__}: {exc}")
    finally:
        for peer in reversed(started):
            peer.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(report, args, time.monotonic() - T_START)


if __name__ == "__main__":
    main()
