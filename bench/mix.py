"""CPU of a live room mix per room, vs the ffmpeg CLI's `amix` of the same inputs, same run.

    python bench/mix.py [--seats 4 10] [--seconds 60] [--repeat 2]

Each seat is `seconds` of speech-like sound (tests.utils.media.speechlike_clip, a different seed
per seat) as AAC at 44.1 kHz mono, 128 kb/s: what a publisher sends. afterlive's `RoomMix`
gets every seat's raw AAC frames with their wall times, in time order, `advance` after each,
as fast as it goes (process_time of this process; the clips are made and demuxed before). Rows:
the mix alone, and the mix feeding `RoomSpeech` (speaker turns) through its `on_audio` hook. The
peer is the ffmpeg binary decoding the same files, `amix` (normalize=0: a plain sum, as ours),
resampling to 48 kHz mono and encoding AAC 96 kb/s with the same `-aac_coder fast` into 2 s HLS
segments (its children's CPU by getrusage). "% of a core" is CPU seconds per media second; best
of `repeat`.
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

import av

from tests.utils.media import FFMPEG, speechlike_clip
from transcode.mix import RoomMix
from transcode.speech import RoomSpeech

START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def frames_of(path: Path) -> tuple[bytes, list[tuple[float, bytes]]]:
    """The AudioSpecificConfig and the raw AAC frames (media time, payload) of a clip."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        tb = float(stream.time_base)
        frames = [
            (p.pts * tb, bytes(p)) for p in container.demux(stream) if p.size and p.pts is not None
        ]
    return extradata, frames


def ours(seats: list[tuple[bytes, list[tuple[float, bytes]]]], work: Path, speech: bool) -> float:
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    events = sorted(
        (t, seat, payload) for seat, (_, frames) in enumerate(seats, 1) for t, payload in frames
    )
    walls = {t: START + timedelta(seconds=t) for t, _, _ in events}
    turns = []
    hook = RoomSpeech(sample_rate=48000, on_turn=turns.append).feed if speech else None
    t0 = time.process_time()
    mix = RoomMix(
        directory=out, start=START, label="bench", on_segment=lambda s: None, on_audio=hook
    )
    for seat, (extradata, _) in enumerate(seats, 1):
        mix.seat_audio(seat, codec="aac", extradata=extradata, sample_rate=44100, channels=1)
    push, advance = mix.push, mix.advance
    for t, seat, payload in events:
        at = walls[t]
        push(seat, payload, at)
        advance(at)
    mix.finish()
    return time.process_time() - t0


def ffmpeg_amix(paths: list[Path], work: Path) -> float:
    out = work / "peer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    inputs = [a for p in paths for a in ("-i", str(p))]
    graph = f"amix=inputs={len(paths)}:normalize=0:duration=longest"
    command = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *inputs,
        "-filter_complex", graph, "-ac", "1", "-ar", "48000",
        "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k",
        "-f", "hls", "-hls_time", "2", "-hls_list_size", "0",
        "-hls_segment_filename", str(out / "mix-%06d.ts"), str(out / "mix.m3u8"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seats", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mix-"))
    try:
        clips = [
            speechlike_clip(work / f"seat{n}.m4a", seconds=args.seconds, lufs=-20, seed=n)
            for n in range(1, max(args.seats) + 1)
        ]
        decoded = [frames_of(p) for p in clips]
        rows = []
        for n in args.seats:
            seats, paths = decoded[:n], clips[:n]
            mix = min(ours(seats, work, speech=False) for _ in range(args.repeat))
            both = min(ours(seats, work, speech=True) for _ in range(args.repeat))
            peer = min(ffmpeg_amix(paths, work) for _ in range(args.repeat))
            rows.append((n, mix, both, peer))
        s = args.seconds
        print(f"live room mix, {s:g} s of 44.1 kHz AAC per seat, best of {args.repeat}\n")
        print(
            "| seats | afterlive mix (% of a core) | + speaker turns | ffmpeg amix (% of a core)"
            " | ratio (afterlive mix / ffmpeg) |"
        )
        print("|---:|---:|---:|---:|---:|")
        for n, mix, both, peer in rows:
            print(
                f"| {n} | {100 * mix / s:.2f} | {100 * both / s:.2f} | {100 * peer / s:.2f}"
                f" | {mix / peer:.2f}x |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
