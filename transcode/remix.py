"""The room mix made again, after the live, from the seats' own audio ("stems").

When a host is removed from a recording, the mix is re-made from the other seats' stored audio
renditions: each stem's segments are demuxed (no decode here: `RoomMix` decodes), every packet
placed at its wall-clock time (the segment's EXT-X-PROGRAM-DATE-TIME plus its offset in the
segment), and mixed exactly as the live mix was, on the same clock, from the same start.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import av

from transcode.errors import TranscodeError
from transcode.mix import RoomMix
from transcode.segmenter import SegmentClosed

# Packets are fed in wall-clock order and the mix emitted this far behind the newest one.
LOOKBEHIND_S = 1.0


@dataclass(frozen=True, kw_only=True)
class StemSegment:
    path: Path
    start_at: datetime  # its EXT-X-PROGRAM-DATE-TIME


@dataclass(frozen=True, kw_only=True)
class Stem:
    """One seat's audio: its stored segments (MPEG-TS with AAC or MP3), in order."""

    seat: int
    segments: Sequence[StemSegment]


def remix(
    stems: Sequence[Stem],
    *,
    directory: Path,
    start: datetime,
    end: datetime,
    target_s: float,
    on_segment: Callable[[SegmentClosed], None],
    first_sequence: int = 0,
    label: str = "remix",
) -> None:
    """Mix `stems` from `start` to `end` into MPEG-TS segments in `directory` (blocking)."""
    mix = RoomMix(
        directory=directory,
        start=start,
        target_s=target_s,
        on_segment=on_segment,
        first_sequence=first_sequence,
        jitter_s=0.0,
        label=label,
    )
    try:
        announced: dict[int, str] = {}
        packets = heapq.merge(*(_packets(stem) for stem in stems), key=lambda p: p[0])
        for wall, seat, codec, payload in packets:
            if announced.get(seat) != codec:
                mix.seat_audio(seat, codec=codec, extradata=None)
                announced[seat] = codec
            mix.push(seat, payload, wall)
            mix.advance(wall - timedelta(seconds=LOOKBEHIND_S))
    finally:
        mix.finish(end)


def _packets(stem: Stem) -> Iterator[tuple[datetime, int, str, bytes]]:
    """(wall time, seat, codec, payload) of every audio packet of a stem, in order."""
    for segment in stem.segments:
        try:
            container = av.open(str(segment.path))
        except av.error.FFmpegError as exc:
            name = segment.path.name
            raise TranscodeError(f"seat {stem.seat}: {name} unreadable: {exc}") from exc
        with container:
            if not container.streams.audio:
                continue
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            first = None
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                t = float(packet.pts * packet.time_base)
                first = t if first is None else first
                at = segment.start_at + timedelta(seconds=t - first)
                yield at, stem.seat, codec, bytes(packet)
