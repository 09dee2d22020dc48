"""Cut a clip `[start_s, end_s)` out of one rendition's HLS segments, local files in and out.

Segments wholly inside the range are reused byte for byte (hard link, or copy across file
systems; `copy_inner=False` leaves them to the caller, e.g. a server-side copy in the store).
Only the segments the range starts or ends inside are rewritten:

- video: the partial segment's frames are decoded from its opening keyframe and those whose
  presentation time falls inside the range are re-encoded (libx264 for H.264, libx265 for HEVC),
  so the first frame shown is the first one at or after `start_s` and the last one the last
  before `end_s`. The audio in that segment is not re-encoded: its AAC frames are copied from
  the one containing `start_s` to the one containing `end_s`.
- audio only: no re-encoding at all; AAC frames are copied from the one containing `start_s` to
  the one containing `end_s` ("cut on audio frames": at most one frame, 23 ms at 44.1 kHz, of
  extra audio at each end).

Why audio is copied rather than re-encoded at the ends: MPEG-TS cannot say "skip the encoder's
priming samples", so a re-encoded AAC stream always decodes one frame of priming before its first
real sample; re-encoding therefore gains nothing in accuracy over frame-copying, and costs a
generation loss, an overlap at the junction with the copied segments (the encoder's flush frame)
and a cold decoder at every junction. Copied frames keep the decoder's state running across the
junction, so the audio plays without a seam.

Timestamps: rewritten segments keep the source's timestamps (the input's pts, with dts shifted
by the source's own pts-dts delay so dts never runs backwards into a copied segment), so the
clip is one continuous timeline a player can play head -> copied inner -> tail. Where a
re-encoded segment meets a copied one, the playlist still carries EXT-X-DISCONTINUITY, because
the encoding parameters (SPS/PPS) change there and RFC 8216 4.3.2.3 says the tag SHOULD mark
that; players that ignore the tag (FFmpeg's) still see continuous timestamps.

The separate audio file (`audio_path`, AAC in .m4a) is also a copy, not an encode: the AAC
frames from one frame before the one containing `start_s` (the decoder's warm-up, so the first
kept sample decodes exactly) to the one containing `end_s`, with an MP4 edit list that trims to
the sample. Re-encoding would cost about a minute per 10 clip minutes (AAC encodes at ~9x
realtime here); copying only demuxes (0.1 s for 100 s of the `audio` rendition, measured).

PyAV, not the ffmpeg CLI (nor `ffmpeg-python`, which only builds CLI command lines): the cut
needs per-frame and per-packet control of timestamps (keep these frames, this packet's dts,
that edit list) that CLI flags (`-ss` seeking, `-copyts`, `trim`) only approximate.

Positions: a segment's `start_s` is where its first sample sits on the recording's timeline
(the sum of the EXTINF durations before it). Inside a segment, a packet with presentation time
`t` sits at `start_s + (t - t0)`, where `t0` is the segment's first sample as the segmenter
counts it: its opening video keyframe (video renditions), its first audio frame (audio only),
or, for the first segment of a timeline, the earliest packet of either.

Sources need closed GOPs (an IDR at each segment's start), as the recording's playlists already
promise with EXT-X-INDEPENDENT-SEGMENTS: with an open GOP (x265's default) a segment opens with
pictures that refer to the previous one, so junctions with re-encoded segments cannot decode
cleanly. That is logged as a warning, not refused.

All of this is blocking media work; callers run `cut_clip` in a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.video.frame import PictureType

from transcode.errors import TranscodeError
from transcode.playlists import MediaPlaylist, MediaSegment
from transcode.segmenter import TS_OPTIONS

log = logging.getLogger(__name__)

# EXTINF durations are written to the millisecond: a range end this close to a segment boundary
# is on the boundary. Far below a frame (8 ms at 120 fps), so it never changes which frame.
BOUNDARY_TOLERANCE_S = 0.0005
# Float noise when comparing a frame's position with a cut point.
_EPSILON_S = 1e-6

# Partial segments are a few seconds of video: spend bits on quality, not on encoder speed.
# No B-frames: decode order equals presentation order, so dts can be set to follow the source's.
ENCODERS = {
    "h264": ("libx264", {"preset": "veryfast", "crf": "18"}),
    "hevc": (
        "libx265",
        {"preset": "veryfast", "crf": "20", "x265-params": "bframes=0:log-level=1"},
    ),
}
AUDIO_FILE_OPTIONS = {"movflags": "+faststart"}


class ClipRangeError(TranscodeError):
    """The requested range does not fit the recording (the API answers 422)."""


@dataclass(kw_only=True)
class SourceSegment:
    """One segment of the rendition being clipped, and where it sits on the recording."""

    path: Path
    start_s: float  # position of its first sample: the sum of the EXTINF durations before it
    duration_s: float
    discontinuity: bool = False  # starts a new timeline (EXT-X-DISCONTINUITY before it)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(kw_only=True)
class ClipSegment:
    """One segment of the clip's playlist."""

    path: Path
    start_s: float  # recording position of its first frame (video) or first audio frame
    duration_s: float
    source: SourceSegment
    # The source file when this segment is a byte-identical copy of it (store: server-side copy).
    copied_from: Path | None = None
    reencoded: bool = False  # video re-encoded; False for copies and audio cut on frames
    discontinuity: bool = False


@dataclass(kw_only=True)
class ClipResult:
    segments: list[ClipSegment]
    playlist: str  # the VOD media playlist, URIs relative to it (the segment file names)
    playlist_path: Path
    start_s: float  # recording position of the clip's first video frame (or first audio frame)
    duration_s: float  # the playlist's total: the exact media duration of the clip
    audio_path: Path | None = None
    audio_duration_s: float | None = None  # end_s - start_s to the sample, when audio_path is set


@dataclass(kw_only=True)
class ClipPlan:
    """Which source segments a range touches, and how each is treated."""

    start_s: float
    end_s: float
    selected: list[SourceSegment]  # every segment overlapping the range, in order
    # Cut inside (re-encoded or cut on audio frames); None when the range starts or ends on a
    # segment boundary, so that end segment is copied whole. May be one segment for both ends.
    head: SourceSegment | None
    tail: SourceSegment | None
    # The segment before the first selected one, on the same timeline: it may hold the audio
    # frame that contains `start_s` (the segmenter puts a frame spanning a cut before the cut).
    previous: SourceSegment | None = None

    def is_partial(self, segment: SourceSegment) -> bool:
        return segment is self.head or segment is self.tail

    def local_files_needed(self, *, audio_file: bool, copy_inner: bool) -> list[SourceSegment]:
        """The source segments `cut_clip` opens: fetch these (and only these) before calling it."""
        if audio_file or copy_inner:
            needed = list(self.selected)
        else:
            needed = [s for s in self.selected if self.is_partial(s)]
        if self.previous is not None and (audio_file or self.head is not None):
            needed.insert(0, self.previous)
        return needed


def plan_clip(segments: list[SourceSegment], start_s: float, end_s: float) -> ClipPlan:
    """Check the range against the segments and classify the ones it touches.

    Raises ClipRangeError for a range that is empty, negative, or runs past the recording.
    """
    if not segments:
        raise ClipRangeError("the recording has no segments to clip")
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise ClipRangeError(f"clip range [{start_s}, {end_s}) is not a pair of numbers")
    if start_s < 0:
        raise ClipRangeError(f"clip start {start_s:.3f} s is before the recording's start (0 s)")
    if end_s <= start_s:
        raise ClipRangeError(f"clip end {end_s:.3f} s is not after its start {start_s:.3f} s")
    last_end = segments[-1].end_s
    if end_s > last_end + BOUNDARY_TOLERANCE_S:
        raise ClipRangeError(
            f"clip end {end_s:.3f} s is beyond the recording's end ({last_end:.3f} s)"
        )
    tol = BOUNDARY_TOLERANCE_S
    indices = [
        i
        for i, s in enumerate(segments)
        if s.start_s < end_s - tol and s.end_s > start_s + tol and s.duration_s > 0
    ]
    if not indices:
        raise ClipRangeError(
            f"clip [{start_s:.3f}, {end_s:.3f}) s holds no media: it falls in a gap or is "
            f"shorter than {tol * 1000:.1f} ms"
        )
    selected = [segments[i] for i in indices]
    first, last = selected[0], selected[-1]
    head = first if start_s > first.start_s + tol else None
    tail = last if end_s < last.end_s - tol else None
    previous = None
    if indices[0] > 0 and not first.discontinuity:
        previous = segments[indices[0] - 1]
    return ClipPlan(
        start_s=start_s, end_s=end_s, selected=selected, head=head, tail=tail, previous=previous
    )


def cut_clip(
    segments: list[SourceSegment],
    *,
    start_s: float,
    end_s: float,
    directory: Path,
    has_video: bool,
    name: str = "clip",
    audio_path: Path | None = None,
    copy_inner: bool = True,
    boundary_discontinuities: bool | None = None,
    progress: Callable[[float], None] | None = None,
    label: str = "",
) -> ClipResult:
    """Cut `[start_s, end_s)` of a rendition into `directory` as `{name}-NNNNN.ts` + `{name}.m3u8`.

    `segments`: the rendition's segments in order, from the first of its first timeline (so the
    first-of-timeline rule for positions applies to the right one). Only the files that
    `plan_clip(...).local_files_needed(...)` names are opened.
    `has_video`: the rendition carries video (cut to the frame) or is audio only.
    `audio_path`: also write the clip's audio there, AAC in MP4 (.m4a), trimmed to the sample.
    `copy_inner`: link or copy the whole segments into `directory`; when False they are not
    touched and each ClipSegment's `copied_from` names the source to copy (its `path` names
    the file the playlist expects).
    `boundary_discontinuities`: mark EXT-X-DISCONTINUITY where a rewritten (partial) segment
    meets another one. Default: for video, whose rewritten segments come from another encoder.
    Pass True for the audio rendition of a video room, so that its discontinuity sequence
    lines up with the video rendition's (RFC 8216, "Providing Variant Streams").
    Files written before an error are left in `directory`, for the caller to remove.
    `progress`: called with the fraction done, 0 to 1.
    """
    plan = plan_clip(segments, start_s, end_s)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    label = label or str(directory)
    if boundary_discontinuities is None:
        boundary_discontinuities = has_video
    report = _Progress(plan, has_video=has_video, audio_file=audio_path is not None, cb=progress)
    out: list[ClipSegment] = []
    for source in plan.selected:
        path = directory / f"{name}-{len(out):05d}.ts"
        if plan.is_partial(source):
            cut = _cut_partial(plan, source, path, has_video=has_video, label=label)
            # None: the range starts after this segment's last frame; the next one opens it.
            if cut is not None:
                out.append(cut)
        else:
            if copy_inner:
                _link_or_copy(source.path, path)
            out.append(
                ClipSegment(
                    path=path,
                    start_s=source.start_s,
                    duration_s=source.duration_s,
                    source=source,
                    copied_from=source.path,
                )
            )
        report.done(source)
    if not out:
        raise ClipRangeError(
            f"clip [{start_s:.3f}, {end_s:.3f}) s holds no "
            f"{'video' if has_video else 'audio'} frame; make it longer"
        )
    for before, seg in itertools.pairwise(out):
        rewritten = seg.copied_from is None or before.copied_from is None
        seg.discontinuity = seg.source.discontinuity or (boundary_discontinuities and rewritten)
    playlist = MediaPlaylist(
        segments=[
            MediaSegment(uri=s.path.name, duration_s=s.duration_s, discontinuity=s.discontinuity)
            for s in out
        ],
        playlist_type="VOD",
        ended=True,
    )
    text = playlist.render()
    playlist_path = directory / f"{name}.m3u8"
    playlist_path.write_text(text)
    result = ClipResult(
        segments=out,
        playlist=text,
        playlist_path=playlist_path,
        start_s=out[0].start_s,
        duration_s=math.fsum(s.duration_s for s in out),
    )
    if audio_path is not None:
        result.audio_path = audio_path
        result.audio_duration_s = write_audio_file(
            plan, audio_path, has_video=has_video, label=label
        )
    report.finish()
    log.info(
        "%s: clip [%.3f, %.3f) s: %d segments (%d copied, %d re-encoded), %.3f s",
        label,
        start_s,
        end_s,
        len(out),
        sum(1 for s in out if s.copied_from is not None),
        sum(1 for s in out if s.reencoded),
        result.duration_s,
    )
    return result


# --- positions -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Opened:
    """A source segment's packets, in file order, and the mapping from its clock to positions."""

    source: SourceSegment
    container: av.container.InputContainer
    video: av.stream.Stream | None
    audio: av.stream.Stream | None
    packets: list[av.Packet] = field(default_factory=list)
    t0: float = 0.0  # the input's clock, in seconds, at the segment's first sample

    def position(self, item: av.Packet | av.AudioFrame | av.VideoFrame) -> float:
        """Where a packet or frame of this segment (or of one on its timeline) sits."""
        assert item.pts is not None and item.time_base is not None
        return self.source.start_s + float(item.pts * item.time_base) - self.t0

    def audio_end_position(self, packet: av.Packet) -> float:
        """Where an audio frame of this segment (or of one on its timeline) ends."""
        return self.position(packet) + _audio_frame_samples(self.audio, packet) / _rate(self.audio)

    def audio_packets(self) -> list[av.Packet]:
        if self.audio is None:
            return []
        index = self.audio.index
        return [p for p in self.packets if p.stream.index == index]

    def close(self) -> None:
        self.container.close()


def _open(source: SourceSegment, *, has_video: bool, first_of_timeline: bool) -> _Opened:
    """Demux a whole segment (a few seconds) and find its first sample on the input's clock."""
    try:
        container = av.open(str(source.path))
    except (av.error.FFmpegError, OSError) as exc:
        raise TranscodeError(f"cannot read segment {source.path}: {exc}") from exc
    try:
        video = next(iter(container.streams.video), None) if has_video else None
        audio = next(iter(container.streams.audio), None)
        if has_video and video is None:
            raise TranscodeError(f"segment {source.path} has no video stream")
        if video is None and audio is None:
            raise TranscodeError(f"segment {source.path} has no audio stream")
        streams = [s for s in (video, audio) if s is not None]
        try:
            packets = [
                p
                for p in container.demux(*streams)
                if p.size and p.pts is not None and p.dts is not None
            ]
        except av.error.FFmpegError as exc:
            raise TranscodeError(f"cannot read segment {source.path}: {exc}") from exc
        firsts: dict[int, float] = {}
        for packet in packets:
            firsts.setdefault(packet.stream.index, float(packet.pts * packet.time_base))
            if len(firsts) == len(streams):
                break
        leading = video if video is not None else audio
        assert leading is not None
        if leading.index not in firsts:
            raise TranscodeError(f"segment {source.path} holds no {leading.type} packets")
    except BaseException:
        container.close()
        raise
    # The segmenter starts a segment at its first packet: after a cut, the keyframe it cut at
    # (or the first audio frame, audio only); at a timeline's start, whichever packet came
    # first, which the earliest one stands for.
    t0 = min(firsts.values()) if first_of_timeline else firsts[leading.index]
    return _Opened(
        source=source, container=container, video=video, audio=audio, packets=packets, t0=t0
    )


def _open_for(plan: ClipPlan, source: SourceSegment, *, has_video: bool) -> _Opened:
    first_of_timeline = source.discontinuity or (
        source is plan.selected[0] and plan.previous is None
    )
    return _open(source, has_video=has_video, first_of_timeline=first_of_timeline)


# --- partial segments ----------------------------------------------------------------------------


def _cut_partial(
    plan: ClipPlan, source: SourceSegment, path: Path, *, has_video: bool, label: str
) -> ClipSegment | None:
    """Rewrite the part of `source` inside the range into `path`; None if no frame is inside."""
    lo = plan.start_s if source is plan.head else -math.inf
    hi = plan.end_s if source is plan.tail else math.inf
    opened = _open_for(plan, source, has_video=has_video)
    try:
        # Every audio frame the segment holds belongs to it, even one timed a little before
        # its keyframe: the copied segment before it does not have that frame.
        audio = _audio_in_range(plan, opened, lo, hi)
        if has_video:
            # But pictures shown before the opening keyframe (open GOP) belong to the previous
            # segment's time, and cannot be decoded without it anyway.
            video_lo = max(lo, source.start_s - _EPSILON_S)
            return _reencode_video(opened, audio, video_lo, hi, path, label=label)
        return _cut_audio(opened, audio, hi, path)
    finally:
        opened.close()


def _audio_in_range(plan: ClipPlan, opened: _Opened, lo: float, hi: float) -> list[av.Packet]:
    """The audio frames of `opened` from the one containing `lo` to the one containing `hi`.

    When `lo` falls before the segment's first audio frame (the segment opens just after a cut,
    and the frame spanning the cut went into the previous segment), that frame is taken from
    the previous segment.
    """
    frames = opened.audio_packets()
    kept = [
        p
        for p in frames
        if opened.audio_end_position(p) > lo + _EPSILON_S and opened.position(p) < hi
    ]
    if (
        opened.source is plan.head
        and plan.previous is not None
        and frames
        and opened.position(frames[0]) > lo + _EPSILON_S
    ):
        before = _open(plan.previous, has_video=False, first_of_timeline=False)
        try:
            # Same timeline, same clock: `opened` places the previous segment's frames too.
            earlier = [
                p
                for p in before.audio_packets()
                if opened.audio_end_position(p) > lo + _EPSILON_S and opened.position(p) < lo
            ]
        finally:
            before.close()
        kept = earlier + kept
    return kept


def _reencode_video(
    opened: _Opened, audio: list[av.Packet], lo: float, hi: float, path: Path, *, label: str
) -> ClipSegment | None:
    source = opened.source
    video = opened.video
    assert video is not None and video.time_base is not None
    ctx = video.codec_context
    codec = ctx.codec.canonical_name
    if codec not in ENCODERS:
        raise TranscodeError(f"cannot re-encode {codec} video; clips support {sorted(ENCODERS)}")
    encoder_name, options = ENCODERS[codec]
    video_packets = [p for p in opened.packets if p.stream.index == video.index]
    # The source's pts - dts at its opening keyframe. Our dts keep that delay, so a rewritten
    # head's last dts stays below the first dts of the copied segment after it, and a rewritten
    # tail's first dts above the last dts of the copied segment before it.
    delay = max(video_packets[0].pts - video_packets[0].dts, 0)
    if any(p.pts < video_packets[0].pts for p in video_packets):
        # Pictures shown before the opening keyframe: an open GOP (x265's default). They refer
        # to the previous segment, so the junctions of this clip will not decode cleanly.
        log.warning(
            "%s: %s opens with an open GOP; publish with closed GOPs (IDR keyframes)",
            label,
            source.path.name,
        )
    seen: list[float] = []  # positions of every decoded frame, to find where the clip ends
    frames = _frames_in_range(opened, video_packets, lo, hi, seen)
    frame = next(frames, None)
    if frame is None:
        return None
    first_position = opened.position(frame)
    output = av.open(str(path), "w", format="mpegts", options=TS_OPTIONS)
    count = 0
    try:
        rate = video.guessed_rate or video.average_rate or Fraction(30)
        out_video = output.add_stream(encoder_name, rate=rate, options=dict(options))
        enc = out_video.codec_context
        enc.width, enc.height = frame.width, frame.height
        enc.pix_fmt = frame.format.name
        enc.time_base = video.time_base
        out_video.time_base = video.time_base
        enc.max_b_frames = 0
        for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
            value = getattr(ctx, attr, None)
            if value:
                setattr(enc, attr, value)
        if ctx.sample_aspect_ratio:
            enc.sample_aspect_ratio = ctx.sample_aspect_ratio
        # The same stream order as the source (video, then audio): the same PIDs in the TS.
        out_audio = output.add_stream_from_template(opened.audio) if audio else None
        for packet in audio:
            packet.stream = out_audio
            output.mux(packet)  # the interleaver holds these until the video catches up

        while frame is not None:
            # Source timestamps are kept (frame.pts is the input's). The decoder's picture type
            # would force the encoder's frame types: let it choose (a fresh encoder opens on IDR).
            frame.pict_type = PictureType.NONE
            _mux_encoded(output, out_video.encode(frame), delay)
            count += 1
            frame = next(frames, None)
        _mux_encoded(output, out_video.encode(None), delay)
        output.close()
    except BaseException as exc:
        output.close()
        path.unlink(missing_ok=True)
        if isinstance(exc, av.error.FFmpegError):
            raise TranscodeError(f"{label}: re-encoding {source.path} failed: {exc}") from exc
        raise
    end_position = source.end_s
    if hi < math.inf:
        # The clip ends where the first frame at or after `hi` starts (or at the segment's end).
        later = [p for p in seen if p >= hi - _EPSILON_S]
        end_position = min(later, default=source.end_s)
    log.debug(
        "%s: re-encoded %d frames of %s from %.3f s", label, count, source.path.name, first_position
    )
    return ClipSegment(
        path=path,
        start_s=first_position,
        duration_s=max(end_position - first_position, 0.001),
        source=source,
        reencoded=True,
    )


def _mux_encoded(
    output: av.container.OutputContainer, packets: list[av.Packet], delay: int
) -> None:
    for packet in packets:
        if packet.pts is not None:
            packet.dts = packet.pts - delay
        output.mux(packet)


def _frames_in_range(
    opened: _Opened, packets: list[av.Packet], lo: float, hi: float, seen: list[float]
) -> Iterator[av.VideoFrame]:
    """Decoded frames whose position is in [lo, hi), in presentation order.

    Decoding stops at the first frame at or after `hi`: decoders output in presentation order,
    so every later frame is later still.
    """
    video = opened.video
    assert video is not None
    video.codec_context.thread_type = "AUTO"
    for packet in [*packets, None]:
        for frame in video.decode(packet):
            if frame.pts is None:
                continue
            # Frames from a demuxed stream's decoder may carry no time base: it is the stream's.
            frame.time_base = video.time_base
            where = opened.position(frame)
            seen.append(where)
            if where >= hi - _EPSILON_S:
                return
            if where >= lo - _EPSILON_S:
                yield frame


def _cut_audio(
    opened: _Opened, audio: list[av.Packet], hi: float, path: Path
) -> ClipSegment | None:
    if not audio or opened.audio is None:
        return None
    source = opened.source
    first = opened.position(audio[0])
    end = opened.audio_end_position(audio[-1]) if hi < math.inf else source.end_s
    output = av.open(str(path), "w", format="mpegts", options=TS_OPTIONS)
    try:
        stream = output.add_stream_from_template(opened.audio)
        for packet in audio:
            packet.stream = stream
            output.mux(packet)
    finally:
        output.close()
    return ClipSegment(path=path, start_s=first, duration_s=max(end - first, 0.001), source=source)


def _rate(audio: av.stream.Stream | None) -> int:
    rate = audio.codec_context.sample_rate if audio is not None else 0
    if not rate:
        raise TranscodeError("the audio stream has no sample rate")
    return rate


def _audio_frame_samples(audio: av.stream.Stream | None, packet: av.Packet) -> int:
    """Samples in one coded audio frame: the codec's frame size (1024 for AAC-LC).

    Not the packet's duration: FLV rounds timestamps to the millisecond, so a 1024-sample frame
    at 44.1 kHz arrives as 23 ms (1014 samples), which would drift 1% per frame.
    """
    size = audio.codec_context.frame_size if audio is not None else 0
    if size:
        return size
    assert packet.time_base is not None
    return max(1, round((packet.duration or 0) * packet.time_base * _rate(audio)))


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)  # another file system, or one without hard links


# --- the audio file ------------------------------------------------------------------------------


def write_audio_file(plan: ClipPlan, path: Path, *, has_video: bool, label: str = "") -> float:
    """Write the clip's audio to `path` (AAC in MP4) by copying frames; returns its duration.

    The frame before the one containing `start_s` goes in too, so the decoder is warmed up when
    the first kept sample comes; the MP4 edit list hides it and trims the last frame, so the
    file plays exactly `[start_s, end_s)`.
    """
    output = av.open(str(path), "w", format="ipod", options=AUDIO_FILE_OPTIONS)
    stream: av.stream.Stream | None = None
    rate = 0
    length = 0  # the clip's length in samples
    clock = 0  # samples from start_s, running
    try:
        for source_stream, packet, offset_s in _audio_file_packets(
            plan, has_video=has_video, label=label
        ):
            ctx = source_stream.codec_context
            if stream is None:
                if ctx.codec.canonical_name != "aac":
                    raise TranscodeError(
                        f"{label}: the audio file takes AAC; the recording has "
                        f"{ctx.codec.canonical_name}"
                    )
                rate = ctx.sample_rate
                length = round((plan.end_s - plan.start_s) * rate)
                stream = output.add_stream_from_template(source_stream)
                stream.time_base = Fraction(1, rate)
                clock = round(offset_s * rate)
            elif ctx.sample_rate != rate or ctx.channels != stream.codec_context.channels:
                raise TranscodeError(
                    f"{label}: the audio changes inside the clip ({rate} Hz "
                    f"{stream.codec_context.channels} ch -> {ctx.sample_rate} Hz {ctx.channels} ch)"
                )
            if clock >= length:
                break
            samples = _audio_frame_samples(source_stream, packet)
            # The last frame plays only up to end_s: a shorter sample duration in the MP4 makes
            # the edit list end there.
            samples = min(samples, length - clock)
            packet.stream = stream
            packet.time_base = Fraction(1, rate)
            packet.pts = packet.dts = clock
            packet.duration = samples
            output.mux(packet)
            clock += samples
    except av.error.FFmpegError as exc:
        output.close()
        path.unlink(missing_ok=True)
        raise TranscodeError(f"{label}: writing the audio file failed: {exc}") from exc
    except BaseException:
        output.close()
        path.unlink(missing_ok=True)
        raise
    output.close()
    if stream is None:
        path.unlink(missing_ok=True)
        raise TranscodeError(f"{label}: the clip holds no audio")
    # `clock` ends where the last frame written ends: short of `length` only when the
    # recording's audio stops before the clip's end.
    return min(clock, length) / rate


def _audio_file_packets(
    plan: ClipPlan, *, has_video: bool, label: str
) -> Iterator[tuple[av.stream.Stream, av.Packet, float]]:
    """(stream, packet, its position minus start_s) for the audio file, in order, to the end of
    the last selected segment: the caller stops where its sample count reaches the clip's end.

    Starts with the last frame ending at or before start_s (the decoder's warm-up), which,
    like the frame containing start_s, may sit in the segment before the first selected one.
    The stream yielded with a packet belongs to a container still open (PyAV's streams point
    into their container). Positions matter only where the clip starts; after that, frames
    simply follow each other (across a discontinuity too: the audio file closes the gap, as the
    playlist does), and the count of their samples decides where the file ends, not their
    timestamps (millisecond-rounded from FLV, and reset by a new timeline).
    """
    started = False
    warmup: tuple[av.Packet, float] | None = None
    first = _open_for(plan, plan.selected[0], has_video=has_video)
    sources = ([plan.previous] if plan.previous is not None else []) + plan.selected
    try:
        for source in sources:
            if source is plan.selected[0]:
                opened = clock = first
            elif source is plan.previous:
                # Same timeline as the first selected segment: its clock places these frames.
                opened, clock = _open(source, has_video=False, first_of_timeline=False), first
            else:
                opened = clock = _open_for(plan, source, has_video=has_video)
            try:
                stream = first.audio if source is plan.previous else opened.audio
                if stream is None:
                    raise TranscodeError(f"{label}: segment {source.path} has no audio")
                if source.discontinuity:
                    warmup = None  # another timeline: no use to the decoder
                for packet in opened.audio_packets():
                    offset = clock.position(packet) - plan.start_s
                    if not started:
                        if clock.audio_end_position(packet) - plan.start_s <= _EPSILON_S:
                            warmup = (packet, offset)
                            continue
                        started = True
                        if warmup is not None:
                            yield stream, *warmup
                    yield stream, packet, offset
            finally:
                if opened is not first:
                    opened.close()
    finally:
        first.close()
    if not started:
        raise TranscodeError(f"{label}: no audio frame in [{plan.start_s:.3f}, {plan.end_s:.3f})")


# --- progress ------------------------------------------------------------------------------------


class _Progress:
    """Fractions for `progress`, weighted by what each step costs per media second."""

    REENCODE, AUDIO_CUT, COPY, AUDIO_FILE = 1.0, 0.02, 0.002, 0.005

    def __init__(
        self,
        plan: ClipPlan,
        *,
        has_video: bool,
        audio_file: bool,
        cb: Callable[[float], None] | None,
    ) -> None:
        self.plan = plan
        self.has_video = has_video
        self.cb = cb
        self.done_weight = 0.0
        self.total = math.fsum(self._weight(s) for s in plan.selected)
        if audio_file:
            self.total += self.AUDIO_FILE * (plan.end_s - plan.start_s)
        self.total = max(self.total, 1e-9)

    def _weight(self, source: SourceSegment) -> float:
        if not self.plan.is_partial(source):
            return self.COPY * source.duration_s
        return (self.REENCODE if self.has_video else self.AUDIO_CUT) * source.duration_s

    def done(self, source: SourceSegment) -> None:
        self.done_weight += self._weight(source)
        if self.cb is not None:
            self.cb(min(self.done_weight / self.total, 0.999))

    def finish(self) -> None:
        if self.cb is not None:
            self.cb(1.0)
