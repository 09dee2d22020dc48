"""CPU of the room's composite grid per room, vs the ffmpeg CLI's own xstack + amix grid, same run.

    python bench/composite.py [--seconds 30] [--repeat 2] [--live-seconds 10]

Four synthetic hosts, 720p30 H.264 (testsrc2, x264 veryfast 2.5 Mb/s, 2 s GOP) with AAC tones
300/500/700/900 Hz, encoded once before anything is measured and cut into 2 s MPEG-TS
segments (what each seat's copied rendition holds); the room mix is a mono AAC 96 kb/s file of
the same length. Rows, each CPU seconds (user + sys of the ffmpeg children, getrusage) per
media second, best of `repeat`:

- afterlive: `transcode.composite.composite` of the four seats and the mix at 640x360 15 fps
  (what the `after` job runs): decode 4 x 720p (deblocking skipped, one thread each), drop to
  15 fps, scale, tile, x264 veryfast, the mix copied.
- ffmpeg CLI: the textbook grid of the same four inputs (one file per host), fps=15, scale to
  320x180, xstack + amix of the four audio tracks encoded to AAC (-aac_coder fast, 96 kb/s),
  same x264 settings: the same picture, plus a mix of its own; ffmpeg's default decoding.
- live: the afterlive graph reading the four inputs at their own pace (`-re`), as a live
  composite would, for `live-seconds`: what one room would hold for its whole live.
- floor: decoding the four hosts' video alone, with the grid's decoder options, to null: what
  no grid of these inputs can cost less than (without skipping frames).
- LiveKit: its published cost of a room composite, 4 CPUs (pkg/config/service.go), no run.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.utils.media import FFMPEG
from transcode.composite import DECODE_OPTIONS, Seat, VideoSegment, composite

START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
TONES = (300, 500, 700, 900)
LIVEKIT_CPUS = 4.0
FPS = 15  # the grid's rate (transcode.composite's default, AFTERLIVE_ROOM_COMPOSITE_FPS)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_host(directory: Path, n: int, seconds: int) -> list[VideoSegment]:
    directory.mkdir(parents=True)
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30,hue=h={90 * n}",
            "-f", "lavfi", "-i", f"sine=frequency={TONES[n]}:sample_rate=44100",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-f", "hls", "-hls_time", "2",
            "-hls_playlist_type", "vod", "-hls_segment_filename", str(directory / "%04d.ts"),
            str(directory / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    return [
        VideoSegment(path=p, start_at=START + timedelta(seconds=2 * i), duration_s=2.0)
        for i, p in enumerate(sorted(directory.glob("*.ts")))
    ]


def make_mix(directory: Path, seconds: int) -> list[Path]:
    directory.mkdir(parents=True)
    tones = "+".join(f"sin(2*PI*{f}*t)/5" for f in TONES)
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"aevalsrc='{tones}':s=48000:c=mono", "-t", str(seconds),
            "-c:a", "aac", "-b:a", "96k", "-f", "hls", "-hls_time", "2",
            "-hls_playlist_type", "vod", "-hls_segment_filename", str(directory / "%04d.ts"),
            str(directory / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    return sorted(directory.glob("*.ts"))


def ours(seats: list[Seat], mix: list[Path], seconds: int, work: Path) -> float:
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    before = children_cpu()
    composite(seats, mix, start=START, end=START + timedelta(seconds=seconds), directory=out)
    return children_cpu() - before


def ffmpeg_grid(hosts: list[Path], seconds: int, work: Path) -> float:
    """The ffmpeg CLI's grid: xstack of four scaled inputs, amix of their audio, HLS."""
    out = work / "peer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    inputs = [arg for path in hosts for arg in ("-i", str(path))]
    scaled = ";".join(f"[{i}:v]fps={FPS},scale=320:180,setsar=1[v{i}]" for i in range(4))
    graph = (
        f"{scaled};[v0][v1][v2][v3]xstack=inputs=4:layout=0_0|320_0|0_180|320_180[v];"
        "[0:a][1:a][2:a][3:a]amix=inputs=4:normalize=0,aresample=48000,"
        "aformat=channel_layouts=mono[a]"
    )
    before = children_cpu()
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *inputs,
            "-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-maxrate", "1200k",
            "-bufsize", "2400k", "-g", str(2 * FPS), "-keyint_min", str(2 * FPS),
            "-sc_threshold", "0",
            "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k", "-f", "hls", "-hls_time", "2",
            "-hls_list_size", "0", "-hls_segment_filename", str(out / "%04d.ts"),
            str(out / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    return children_cpu() - before


def decode_floor(seats: list[Seat], work: Path) -> float:
    """Only decoding the four hosts' video, with the grid's decoder options: its floor."""
    inputs = []
    for n, seat in enumerate(seats):
        listing = work / f"floor-{n}.txt"
        listing.write_text("".join(f"{s.path}\n" for s in seat.segments))
        inputs += [*DECODE_OPTIONS, "-i", f"concatf:{listing}"]
    maps = [a for n in range(len(seats)) for a in ("-map", f"{n}:v:0")]
    before = children_cpu()
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            *inputs,
            *maps,
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    return children_cpu() - before


def live(seats: list[Seat], mix: list[Path], seconds: int, work: Path) -> tuple[float, float]:
    """Our graph with every input read at its own pace (-re): CPU, and wall seconds taken."""
    out = work / "live"
    shutil.rmtree(out, ignore_errors=True)
    before, t0 = children_cpu(), time.monotonic()
    end = START + timedelta(seconds=seconds)
    composite(seats, mix, start=START, end=end, directory=out, paced=True)
    return children_cpu() - before, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--live-seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-composite-"))
    try:
        t0 = time.monotonic()
        names = ("Ana", "Bea", "Cai", "Dan")
        seats = [
            Seat(seat=n + 1, name=names[n], segments=make_host(work / f"host{n}", n, args.seconds))
            for n in range(4)
        ]
        mix = make_mix(work / "mix", args.seconds)
        hosts = []
        for n, seat in enumerate(seats):  # the peer reads each host as one file
            whole = work / f"host{n}.ts"
            with whole.open("wb") as out:
                for seg in seat.segments:
                    out.write(seg.path.read_bytes())
            hosts.append(whole)
        print(f"inputs encoded in {time.monotonic() - t0:.1f} s (not measured)", file=sys.stderr)

        ours_cpu = min(ours(seats, mix, args.seconds, work) for _ in range(args.repeat))
        peer_cpu = min(ffmpeg_grid(hosts, args.seconds, work) for _ in range(args.repeat))
        floor_cpu = min(decode_floor(seats, work) for _ in range(args.repeat))
        live_cpu, live_wall = live(seats, mix, args.live_seconds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_s = ours_cpu / args.seconds
    peer_s = peer_cpu / args.seconds
    live_s = live_cpu / args.live_seconds
    floor_s = floor_cpu / args.seconds
    rows = [
        (f"afterlive composite, after the live (640x360 {FPS} fps, mix copied)", per_s, "1.00x"),
        ("ffmpeg CLI xstack + amix, same inputs and encoder", peer_s, f"{per_s / peer_s:.2f}x"),
        (
            f"afterlive graph on live-paced inputs ({live_wall:.1f} s wall)",
            live_s,
            f"{per_s / live_s:.2f}x",
        ),
        (
            "floor: decoding the 4 hosts' video alone (same decoder options)",
            floor_s,
            f"{per_s / floor_s:.2f}x",
        ),
        (
            "LiveKit room composite (published: 4 CPUs)",
            LIVEKIT_CPUS,
            f"{per_s / LIVEKIT_CPUS:.3f}x",
        ),
    ]
    print(
        f"\n4 hosts 720p30, {args.seconds} s (live row {args.live_seconds} s), best of "
        f"{args.repeat}; CPU s per media s = cores held by a room while it runs\n"
    )
    print("| composite | CPU s per media s (cores) | afterlive / this |")
    print("|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value:.3f} | {ratio} |")
    goal = "met" if per_s <= 0.25 else "NOT met"
    print(f"\nGoal, at most 0.25 of a core at 640x360: {goal} ({per_s:.3f}).")
    print(f"Realtime factor after the live: {1 / per_s:.1f}x media per CPU second.")


if __name__ == "__main__":
    main()
