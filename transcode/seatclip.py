"""A clip of one host's video with the room mix as its sound: both put on one clock, one rendition.

The host's video and the room mix are separate renditions, each on its own media clock (the
host's publisher's timestamps, the mix encoder's); only their EXT-X-PROGRAM-DATE-TIME relates
them. Players synchronise an alternate audio rendition with the video by the media timestamps,
not by the dates, so the clip cannot simply list the two: `mux_seat_clip` writes new MPEG-TS
segments holding the host's video packets (already cut to the frame by `transcode.clipper`,
their own audio left out) and the mix's AAC frames, both copied, with timestamps rewritten onto
one clock from where each sits on the wall clock. Every player then plays them as any muxed
stream; nothing is re-encoded here.

Where the host's video has a gap (they dropped and came back), the segment before it is
extended to the next one: the mix plays on under the last picture, as the room did.

Blocking media work; callers run it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from transcode.errors import TranscodeError
from transcode.playlists import MediaPlaylist, MediaSegment
from transcode.segmenter import TS_OPTIONS

log = logging.getLogger(__name__)

CLOCK = 90_000  # MPEG-TS timestamps
_TIME_BASE = Fraction(1, CLOCK)
# The clip's first frame plays at this time: room below for dts (which run ahead of pts) and
# for the mix frame that starts a little before the first picture.
START_S = 10.0


@dataclass(kw_only=True)
class DatedSegment:
    """A segment file and where it sits on the wall clock, in seconds from the clip's start."""

    path: Path
    at_s: float  # where its anchor packet is (see `anchor_earliest`)
    # The anchor: False, its first video frame (or first audio frame, for the mix); True, its
    # earliest packet of any stream (a copied segment that opens its timeline is dated so).
    anchor_earliest: bool = False
    discontinuity: bool = False


@dataclass(kw_only=True)
class SeatClipSegment:
    path: Path
    at_s: float  # where it starts in the clip
    duration_s: float
    discontinuity: bool = False


def mux_seat_clip(
    video: list[DatedSegment],
    audio: list[DatedSegment],
    *,
    duration_s: float,
    directory: Path,
    name: str = "seg",
    label: str = "",
) -> tuple[list[SeatClipSegment], str]:
    """Write `{name}-NNNNN.ts` (video of `video`'s segments, audio of `audio`'s over the same
    wall-clock span) and return the segments and their VOD playlist.

    `video`: the host's clip segments in order, the first at 0 s; `audio`: the mix segments
    covering [0, `duration_s`) (earlier and later frames are left out).
    """
    if not video:
        raise TranscodeError(f"{label}: a seat clip needs video")
    directory.mkdir(parents=True, exist_ok=True)
    bounds = [seg.at_s for seg in video[1:]] + [duration_s]
    opened = [av.open(str(seg.path), options=TS_OPTIONS) for seg in audio]
    try:
        frames = _mix_frames(audio, opened, duration_s, label)
        out: list[SeatClipSegment] = []
        for index, (seg, end) in enumerate(zip(video, bounds, strict=True)):
            path = directory / f"{name}-{index:05d}.ts"
            start = 0.0 if index == 0 else seg.at_s
            # The first segment also takes the frame that starts just before the clip.
            low = -1.0 if index == 0 else start - 1e-6
            ours = [f for f in frames if low <= f[0] < end - 1e-6]
            _write(seg, ours, path, label)
            out.append(
                SeatClipSegment(
                    path=path,
                    at_s=start,
                    duration_s=max(end - start, 0.001),
                    discontinuity=seg.discontinuity and index > 0,
                )
            )
    finally:
        for container in opened:
            container.close()
    playlist = MediaPlaylist(
        segments=[
            MediaSegment(uri=s.path.name, duration_s=s.duration_s, discontinuity=s.discontinuity)
            for s in out
        ],
        playlist_type="VOD",
        ended=True,
    )
    log.info(
        "%s: seat clip of %d segments, %.3f s, %d mix frames",
        label,
        len(out),
        duration_s,
        len(frames),
    )
    return out, playlist.render()


def _mix_frames(
    audio: list[DatedSegment], opened: list, duration_s: float, label: str
) -> list[tuple[float, av.Packet, av.stream.Stream]]:
    """Every mix frame that sounds inside [0, duration_s): (its start in the clip, packet, its
    stream). A frame that starts before 0 but ends after it is kept (the decoder needs no more
    than that to start on time); ones that start at or after the end are not."""
    frames = []
    for seg, container in zip(audio, opened, strict=True):
        if not container.streams.audio:
            raise TranscodeError(f"{label}: mix segment {seg.path.name} has no audio")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        size = stream.codec_context.frame_size or 1024
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
        if not packets:
            continue
        first = packets[0].pts
        for packet in packets:
            at = seg.at_s + float((packet.pts - first) * packet.time_base)
            if at + size / rate > 1e-6 and at < duration_s - 1e-6:
                frames.append((at, packet, stream))
    frames.sort(key=lambda f: f[0])
    # Two segments' frames meet without overlapping; a frame dated twice (float noise at a
    # boundary) would be heard twice.
    kept: list[tuple[float, av.Packet, av.stream.Stream]] = []
    for frame in frames:
        if kept and frame[0] - kept[-1][0] < 1e-4:
            continue
        kept.append(frame)
    return kept


def _write(
    seg: DatedSegment,
    frames: list[tuple[float, av.Packet, av.stream.Stream]],
    path: Path,
    label: str,
) -> None:
    with av.open(str(seg.path), options=TS_OPTIONS) as source:
        if not source.streams.video:
            raise TranscodeError(f"{label}: {seg.path.name} has no video")
        video = source.streams.video[0]
        packets = [p for p in source.demux() if p.size and p.pts is not None]
        anchor_pool = packets if seg.anchor_earliest else [p for p in packets if p.stream is video]
        if not anchor_pool:
            raise TranscodeError(f"{label}: {seg.path.name} has no video frame")
        anchor = min(float(p.pts * p.time_base) for p in anchor_pool)
        output = av.open(str(path), "w", format="mpegts", options=TS_OPTIONS)
        try:
            out_video = output.add_stream_from_template(video)
            out_audio = output.add_stream_from_template(frames[0][2]) if frames else None
            shift = START_S + seg.at_s - anchor  # seconds, source clock -> clip clock
            queue = []
            for packet in packets:
                if packet.stream is not video:
                    continue  # the host's own sound: the clip's sound is the room's
                packet.pts = _ticks(packet.pts, packet.time_base, shift)
                packet.dts = _ticks(packet.dts, packet.time_base, shift)
                packet.time_base = _TIME_BASE
                packet.stream = out_video
                queue.append(packet)
            for at, packet, _ in frames:
                packet.dts = packet.pts = round((START_S + at) * CLOCK)
                packet.time_base = _TIME_BASE
                packet.stream = out_audio
                queue.append(packet)
            queue.sort(key=lambda p: p.dts if p.dts is not None else p.pts)
            for packet in queue:
                output.mux(packet)
            output.close()
        except BaseException as exc:
            output.close()
            path.unlink(missing_ok=True)
            if isinstance(exc, av.error.FFmpegError):
                raise TranscodeError(f"{label}: muxing {seg.path.name} failed: {exc}") from exc
            raise


def _ticks(value: int | None, time_base, shift_s: float) -> int | None:
    if value is None:
        return None
    return round(float(value * time_base) * CLOCK + shift_s * CLOCK)


__all__ = ["DatedSegment", "SeatClipSegment", "mux_seat_clip"]
