"""Hostile RTMP peers against afterlive and nginx-rtmp in the same run.

    python bench/hostile.py [--connections 100] [--levels 250,1000,4000] [--hold 12]

Both servers record one real live (ffmpeg, 320x240 H.264 + AAC) the whole time. Then, for each
attack of tests/utils/rtmp_attacks.py, `--connections` attacking connections at once against
each server, one server after the other: the server's RSS at its peak during the attack less
before (all its processes: afterlive's `serve`, nginx's master and worker), and its log growth
(afterlive's log, nginx's error log), per attacking connection.

Then levels of a mixed flood (partial messages, trickled bytes, idle connections, in equal
parts; `--levels` connections at once, held `--hold` s): a server survives a level when its
process is alive, the live's publisher is still connected, and the live's segments kept coming
(at least one per 2 s of the level, less one). The table gives the largest level survived.

nginx-rtmp (Debian's `libnginx-mod-rtmp`) is installed with apt-get when missing, as
bench/ingest.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))

import nginx_rtmp  # noqa: E402

from tests.utils.media import publish_rtmp  # noqa: E402
from tests.utils.net import free_port, wait_until  # noqa: E402
from tests.utils.proc import rss_bytes  # noqa: E402
from tests.utils.rtmp_attacks import Outcome, attack  # noqa: E402
from tests.utils.service import Service, service_env  # noqa: E402

MEMORY_ATTACKS = [
    "partial-streams",
    "partial-streams-1mb",
    "trickle",
    "idle",
    "nested-aggregate",
    "amf0-bomb",
]
FLOOD_MIX = ["partial-streams", "trickle", "idle"]


@dataclass(kw_only=True)
class Server:
    name: str
    port: int
    pids: Callable[[], list[int]]
    log: Path
    segments: Callable[[], int]  # the live's segments so far
    publisher: subprocess.Popen

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError):  # a worker that just exited
                total += rss_bytes(pid)
        return total

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def alive(self) -> bool:
        return bool(self.pids()) and self.publisher.poll() is None


class Peak:
    """The largest `read()` while running, sampled every 50 ms on a thread."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.peak = read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.read())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_attacks(names: list[str], port: int, count: int, hold_s: float) -> list[Outcome]:
    async def main() -> list[Outcome]:
        per = max(1, count // len(names))
        jobs = [
            attack(names[i % len(names)], "127.0.0.1", port, hold_s=hold_s)
            for i in range(per * len(names))
        ]
        return list(await asyncio.gather(*jobs))

    return asyncio.run(main())


def memory_per_connection(server: Server, name: str, count: int, hold_s: float) -> dict:
    time.sleep(1)
    before, log_before = server.rss(), server.log_size()
    peak = Peak(server.rss)
    outcomes = run_attacks([name], server.port, count, hold_s)
    top = peak.stop()
    time.sleep(1)  # log lines written as connections close
    closed = sum(o.closed_by_server for o in outcomes)
    return {
        "rss_per_conn": max(0, top - before) / count,
        "log_per_conn": max(0, server.log_size() - log_before) / count,
        "closed": closed,
        "count": len(outcomes),
        "held_s": max(o.seconds for o in outcomes),
    }


def survives(server: Server, level: int, hold_s: float) -> tuple[bool, str]:
    if not server.alive():
        return False, "down before the level"
    t0, seen = time.monotonic(), server.segments()
    outcomes = run_attacks(FLOOD_MIX, server.port, level, hold_s)
    took = time.monotonic() - t0
    time.sleep(2.5)  # a segment in progress when the flood ended
    grew = server.segments() - seen
    errors = sum(1 for o in outcomes if o.error.startswith("connect"))
    want = int(took / 2) - 1
    if not server.alive():
        return False, f"server or publisher gone after {level} ({errors} connects failed)"
    if grew < want:
        return False, f"{grew} segments in {took:.0f} s (want {want})"
    return True, f"{grew} segments in {took:.0f} s; {errors} connects failed"


def start_afterlive(root: Path) -> tuple[Service, Server]:
    service = Service(service_env(root / "data"), root / "afterlive.log")
    service.wait_healthy()
    room = service.new_room(service.new_creator("bench"), "video", "under attack")
    publisher = publish_rtmp(room["rtmp_url"], seconds=3600)
    recording = wait_until(lambda: service.recordings_of(room["id"]), timeout=30, what="the live")[
        0
    ]
    catalog = service.catalog()

    def segments() -> int:
        return len(list(catalog.find_segments(recording.id, "source")))

    server = Server(
        name="afterlive",
        port=int(service.env["AFTERLIVE_RTMP_PORT"]),
        pids=lambda: [service.proc.pid] if service.proc.poll() is None else [],
        log=service.log,
        segments=segments,
        publisher=publisher,
    )
    return service, server


def start_nginx(root: Path) -> tuple[nginx_rtmp.NginxRtmp, Server]:
    nginx = nginx_rtmp.NginxRtmp(root / "nginx", free_port())
    nginx.start()
    publisher = publish_rtmp(f"{nginx.url}/bench", seconds=3600)
    server = Server(
        name="nginx-rtmp",
        port=nginx.port,
        pids=nginx.pids,
        log=nginx.directory / "error.log",
        segments=lambda: len(list(nginx.hls.glob("*.ts"))),
        publisher=publisher,
    )
    return nginx, server


def fmt_bytes(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / 2**20:.1f} MB"
    if n >= 1 << 10:
        return f"{n / 2**10:.1f} KB"
    return f"{n:.0f} B"


def ratio(ours: float, theirs: float) -> str:
    if theirs == 0:
        return "-" if ours == 0 else "inf"
    return f"{ours / theirs:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--levels", default="250,1000,4000")
    parser.add_argument("--hold", type=float, default=20.0)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if not nginx_rtmp.install(lambda m: print(m, file=sys.stderr)):
        sys.exit(f"nginx-rtmp is needed as the peer: {nginx_rtmp.available()}")

    with tempfile.TemporaryDirectory(prefix="afterlive-hostile-") as tmp:
        root = Path(tmp)
        service, ours = start_afterlive(root)
        nginx, theirs = start_nginx(root)
        try:
            time.sleep(5)  # both lives in their stride
            memory: dict[str, dict[str, dict]] = {}
            for name in MEMORY_ATTACKS:
                for server in (ours, theirs):
                    print(f"{server.name}: {args.connections} x {name}", file=sys.stderr)
                    memory.setdefault(name, {})[server.name] = memory_per_connection(
                        server, name, args.connections, args.hold
                    )
            survived: dict[str, tuple[int, str]] = {}
            for server in (ours, theirs):
                best, note = 0, ""
                for level in levels:
                    print(f"{server.name}: flood of {level}", file=sys.stderr)
                    ok, note = survives(server, level, args.hold)
                    if not ok:
                        note = f"failed at {level}: {note}"
                        break
                    best = level
                survived[server.name] = (best, note)
        finally:
            service.kill()
            nginx.stop()
            for server in (ours, theirs):
                server.publisher.kill()

    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"\n## Hostile RTMP peers (`bench/hostile.py`), {stamp}\n")
    print(
        f"{args.connections} attacking connections at once per attack, held up to {args.hold:g} s;"
    )
    print("each server records one live meanwhile. Per attacking connection:\n")
    print("| attack | afterlive RSS | nginx-rtmp RSS | ratio | afterlive log | nginx-rtmp log |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sides in memory.items():
        a, n = sides["afterlive"], sides["nginx-rtmp"]
        print(
            f"| {name} | {fmt_bytes(a['rss_per_conn'])} | {fmt_bytes(n['rss_per_conn'])} | "
            f"{ratio(a['rss_per_conn'], n['rss_per_conn'])} | {fmt_bytes(a['log_per_conn'])} | "
            f"{fmt_bytes(n['log_per_conn'])} |"
        )
    print("\nHow long the attacking connections were held open (closed by the server / of all):\n")
    print("| attack | afterlive | nginx-rtmp |")
    print("|---|---:|---:|")
    for name, sides in memory.items():
        cells = [
            f"{s['held_s']:.1f} s ({s['closed']}/{s['count']})"
            for s in (sides["afterlive"], sides["nginx-rtmp"])
        ]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\nMixed flood ({', '.join(FLOOD_MIX)}), levels {args.levels}: the largest survived\n")
    print("| server | connections survived | last level |")
    print("|---|---:|---|")
    for name, (best, note) in survived.items():
        print(f"| {name} | {best} | {note} |")
    a, n = survived["afterlive"][0], survived["nginx-rtmp"][0]
    print(f"\nafterlive / nginx-rtmp connections survived: {ratio(a, n)}")


if __name__ == "__main__":
    main()
