"""Copy a live stream into HLS MPEG-TS segments, without re-encoding.

`PacketSegmenter` does the cutting, fed one packet at a time: by `Segmenter`, which demuxes a
byte stream (an HTTP push's MPEG-TS, a file) in the calling thread, never the event loop's
(`run()` blocks until the input ends), or by `transcode.flv.FlvSegmenter` with RTMP's frames.

Renditions:
- `source`: every stream, copied. Video rooms cut at the first keyframe at or after the target
  duration; audio-only rooms cut on time (every audio frame is a sync point). A video room whose
  video stops (the host turned the camera off) cuts on time too, once no video has come for
  `CAMERA_OFF_S`: otherwise one segment would grow until the camera came back.
- `audio`: the audio track alone, for video rooms, cut at the same instants as `source`, so a
  listener can follow a video room as audio and players can switch between the two.

Each closed segment is reported through `on_segment` with its exact media start and duration
(the next segment's start minus its own; the last one ends at its last packet's end).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import av.error

from transcode.codecs import avc1_codec, hevc_codec, mp4a_codec
from transcode.errors import TranscodeError

log = logging.getLogger(__name__)

# Small probe: a live input must not wait seconds of media before its first packet is read.
# 32 KB / 0.5 s was measured to open live-paced FLV in ~0.2 s instead of 1.3-4.7 s by default.
PROBE_OPTIONS = {"probesize": "32768", "analyzeduration": "500000"}
# No video for this long (media time) while audio goes on: the camera is off, cut on audio. Far
# above any live frame interval, well under a segment.
CAMERA_OFF_S = 1.0
# Keep the input's timestamps: segments of one recording form one continuous timeline.
TS_OPTIONS = {"mpegts_copyts": "1"}


@dataclass(kw_only=True)
class StreamInfo:
    """What the input carries, known once the first packets are probed."""

    has_video: bool
    has_audio: bool
    video_codecs: str = ""
    audio_codecs: str = ""
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    renditions: list[str] = field(default_factory=list)
    # The audio's decoder setup, for whoever decodes it (the room mix): FFmpeg's codec name
    # ("aac", "mp3") and its extradata (AAC's AudioSpecificConfig).
    audio_codec: str | None = None
    audio_extradata: bytes | None = None

    def codecs(self, rendition: str) -> str:
        """Of a rendition, by its last path part ("audio" or "hosts/2/audio": audio only)."""
        if rendition.rsplit("/", 1)[-1] == "audio":
            return self.audio_codecs
        return ",".join(c for c in (self.video_codecs, self.audio_codecs) if c)


@dataclass(kw_only=True)
class SegmentClosed:
    rendition: str
    sequence: int
    path: Path
    start_s: float  # on the input's media timeline
    duration_s: float
    size_bytes: int
    discontinuity: bool
    closed_at: float  # time.time() when the file was complete


class _Output:
    """One rendition's open segment file."""

    def __init__(self, name: str, streams: list[av.stream.Stream], directory: Path) -> None:
        self.name = name
        self.inputs = streams
        self.directory = directory
        self.container: av.container.OutputContainer | None = None
        self.streams: dict[int, av.stream.Stream] = {}
        self.path: Path | None = None
        self.start: float | None = None
        self.end: float | None = None  # end of the last packet written
        self.sequence = 0

    def open(self, sequence: int) -> None:
        self.sequence = sequence
        self.path = self.directory / f"{self.name}-{sequence:06d}.ts"
        self.container = av.open(str(self.path), "w", format="mpegts", options=TS_OPTIONS)
        # Opaque: the template's own codec, not an encoder looked up by name (a walk over every
        # codec, and a codec context set up for encoding, per segment); a copy needs neither.
        self.streams = {
            s.index: self.container.add_stream_from_template(s, opaque=True) for s in self.inputs
        }
        self.start = None

    def write(self, packet: av.Packet, index: int, t: float, end: float) -> None:
        assert self.container is not None
        if self.start is None:
            self.start = t
        self.end = max(self.end or end, end)
        packet.stream = self.streams[index]
        self.container.mux(packet)

    def close(self) -> Path:
        assert self.container is not None and self.path is not None
        self.container.close()
        self.container = None
        return self.path


class Segmenter:
    """Segments a byte stream (an HTTP push's MPEG-TS, a file) read by PyAV's demuxer."""

    def __init__(
        self,
        *,
        source: IO[bytes] | str,
        input_format: str,
        directory: Path,
        label: str = "",
        **options: Any,
    ) -> None:
        self.source = source
        self.input_format = input_format
        self.directory = Path(directory)
        self.label = label or str(directory)
        self.options = options  # for PacketSegmenter

    def run(self) -> None:
        """Segment until the input ends; the last segment is closed and reported too."""
        try:
            container = av.open(self.source, format=self.input_format, options=PROBE_OPTIONS)
        except (av.error.FFmpegError, OSError) as exc:
            raise TranscodeError(f"{self.label}: {unreadable(exc, self.input_format)}") from exc
        try:
            video = next((s for s in container.streams.video), None)
            audio = next((s for s in container.streams.audio), None)
            segmenter = PacketSegmenter(
                video=video,
                audio=audio,
                directory=self.directory,
                label=self.label,
                **self.options,
            )
            try:
                for packet in container.demux(*segmenter.inputs):
                    segmenter.push(packet, packet.stream.index)
            except av.error.FFmpegError as exc:
                log.warning("%s: input ended with an error: %s", self.label, exc)
            except OSError as exc:
                # PyAV's demuxer raises EIO when the publisher goes away mid-read.
                log.info("%s: input closed: %s", self.label, exc)
            finally:
                segmenter.finish()
        finally:
            container.close()


_FORMAT_NAMES = {"mpegts": "MPEG-TS", "flv": "FLV"}


def unreadable(exc: BaseException, input_format: str) -> str:
    """Why an input could not be opened, in a publisher's words (not FFmpeg's error codes)."""
    name = _FORMAT_NAMES.get(input_format, input_format)
    if isinstance(exc, EOFError):  # the demuxer read to the end without finding a stream
        return f"no {name} audio or video in the input (it was empty, or not {name})"
    if isinstance(exc, av.error.InvalidDataError):
        return f"the input is not valid {name}"
    return f"cannot read the input as {name}: {getattr(exc, 'strerror', None) or exc}"


class PacketSegmenter:
    """The cutting itself, fed packets one at a time (`push`): by a demuxer (`Segmenter`) or
    straight from RTMP messages (`transcode.flv.FlvSegmenter`). Not thread-safe: one caller
    at a time, in stream order.

    `video` and `audio` are the input streams: templates for the output streams, and the
    `index` each pushed packet names. Opening reports the renditions through `on_start`.
    """

    def __init__(
        self,
        *,
        video: av.stream.Stream | None,
        audio: av.stream.Stream | None,
        directory: Path,
        target_s: float = 2.0,
        first_sequence: int = 0,
        discontinuity: bool = False,
        audio_rendition: bool = True,
        on_start: Callable[[StreamInfo], None] = lambda info: None,
        on_segment: Callable[[SegmentClosed], None] = lambda seg: None,
        on_next_cut: Callable[[float], None] = lambda t: None,
        on_audio: Callable[[av.Packet, float], None] | None = None,
        label: str = "",
    ) -> None:
        self.directory = Path(directory)
        # Told every audio packet and its media time before it is written (the room mix
        # decodes them): called on the pushing thread, it must be quick.
        self.on_audio = on_audio
        self.label = label or str(directory)
        if video is None and audio is None:
            raise TranscodeError(f"{self.label}: the input has neither audio nor video")
        self.target_s = target_s
        self.sequence = first_sequence
        self.first_sequence = first_sequence
        self._new_timeline: set[int] = set()  # sequences that start after a discontinuity
        self.max_jump_s = max(10.0, 5 * target_s)
        self.discontinuity = discontinuity
        self.on_segment = on_segment
        # Told the next media time at which a segment may close (the audio rendition's pending
        # cut, then the source's earliest): a live source can hold the media before that back
        # and hand it over in fewer, bigger batches.
        self.on_next_cut = on_next_cut
        info = _describe(video, audio)
        self.inputs = [s for s in (video, audio) if s is not None]
        self._video_index = video.index if video is not None else None
        outputs = [_Output("source", self.inputs, self.directory)]
        if video is not None and audio is not None and audio_rendition:
            outputs.append(_Output("audio", [audio], self.directory))
        self.outputs = outputs
        info.renditions = [o.name for o in outputs]
        on_start(info)
        self.directory.mkdir(parents=True, exist_ok=True)
        for out in outputs:
            out.open(self.sequence)
        self._cut_at: float | None = None  # where `source` was cut; `audio` follows it
        self._last_dts: dict[int, float] = {}
        self._last_video = -math.inf  # media time of the last video packet
        self._hinted: float | None = None  # the media time last told to `on_next_cut`
        self._early_cut = self.target_s - 0.001  # how long a segment must be before a cut
        # Per input stream, whose packets all share one time base: the time base and a float of
        # it (reading a packet's time base builds a Fraction; Fraction arithmetic per packet
        # was measurable at a few hundred rooms).
        self._time_bases: dict[int, tuple[Fraction, float]] = {}

    def push(self, packet: av.Packet, index: int) -> None:
        """Write one packet of input stream `index`, cutting before it where a segment ends."""
        if packet.size == 0 or packet.pts is None or packet.dts is None:
            return  # the flush packet at end of input, or a packet with no time
        outputs = self.outputs
        source, extra = outputs[0], outputs[1:]
        known = self._time_bases.get(index)
        if known is None:
            tb = packet.time_base
            known = self._time_bases[index] = (tb, float(tb))
        tb, scale = known
        t = packet.pts * scale
        end = t + (packet.duration or 0) * scale
        dts = packet.dts * scale
        previous = self._last_dts.get(index)
        if previous is not None and not 0 <= dts - previous <= self.max_jump_s:
            # The publisher's clock jumped (a bug, a restarted encoder, a 32-bit wrap). The TS
            # muxer refuses time going back, and a leap would make one segment last an hour:
            # start new segments on the new timeline, after a discontinuity, and keep recording.
            log.warning(
                "%s: timestamps jumped %+.3f s on stream %d; segment %d starts a new timeline",
                self.label,
                dts - previous,
                index,
                self.sequence + 1,
            )
            self.new_timeline()
        self._last_dts[index] = dts
        is_video = index == self._video_index
        if is_video:
            self._last_video = t
        early_cut = self._early_cut
        if (
            source.start is not None
            and t - source.start >= early_cut
            and (
                (is_video and packet.is_keyframe)
                or self._video_index is None
                or (not is_video and t - self._last_video >= CAMERA_OFF_S)
            )
        ):
            self._close(source, next_start=t)
            self.sequence += 1
            source.open(self.sequence)
            self._cut_at = t
        pts, dts_tb = packet.pts, packet.dts
        if not is_video and self.on_audio is not None:
            self.on_audio(packet, t)
        source.write(packet, index, t, end)
        if extra and not is_video:
            out = extra[0]
            if self._cut_at is not None and out.start is not None and t >= self._cut_at:
                self._close(out, next_start=t)
                out.open(source.sequence)
                self._cut_at = None
            # Muxing rescaled the packet in place: give it back its input timing.
            packet.pts, packet.dts, packet.time_base = pts, dts_tb, tb
            out.write(packet, index, t, end)
        # The next time a segment can close: the audio rendition's pending cut (the next audio
        # frame), else the source's earliest.
        due = self._cut_at if extra and self._cut_at is not None else source.start + early_cut
        if due != self._hinted:
            self._hinted = due
            self.on_next_cut(due)

    def cuts_at(self, t: float) -> bool:
        """Whether an audio packet at media time `t` would close a segment: the source's, or
        the audio rendition's after a video cut (the feed must not hide such a frame inside a
        bigger packet)."""
        if self._cut_at is not None and len(self.outputs) > 1 and t >= self._cut_at:
            return True
        start = self.outputs[0].start
        return (
            start is not None
            and t - start >= self._early_cut
            and (self._video_index is None or t - self._last_video >= CAMERA_OFF_S)
        )

    def new_timeline(self) -> None:
        """Close the open segments here; the next ones start after a discontinuity (a jump in
        the input's clock, an encoder restarted with new parameters)."""
        source, extra = self.outputs[0], self.outputs[1:]
        if source.start is not None:  # else cut just now, and nothing written since
            self._finish(source)
            self.sequence += 1
            source.open(self.sequence)
        for out in extra:
            if out.start is not None or out.sequence != self.sequence:
                self._finish(out)
                out.open(self.sequence)
        self._new_timeline.add(self.sequence)
        self._last_dts.clear()
        self._cut_at = None

    def finish(self) -> None:
        """Close the open segments at their last packets and report them. Idempotent."""
        for out in self.outputs:
            if out.container is not None:
                self._finish(out)

    def _finish(self, out: _Output) -> None:
        """Close an open segment at its last packet; one opened but never written is deleted."""
        if out.start is None:
            out.close().unlink(missing_ok=True)
        else:
            self._close(out, next_start=None)

    def _close(self, out: _Output, *, next_start: float | None) -> None:
        assert out.start is not None
        path = out.close()
        end = next_start if next_start is not None else (out.end or out.start)
        segment = SegmentClosed(
            rendition=out.name,
            sequence=out.sequence,
            path=path,
            start_s=out.start,
            duration_s=max(end - out.start, 0.001),
            size_bytes=path.stat().st_size,
            discontinuity=(self.discontinuity and out.sequence == self.first_sequence)
            or out.sequence in self._new_timeline,
            closed_at=time.time(),
        )
        out.end = None
        self.on_segment(segment)


# What HLS players take in MPEG-TS (hls.js, Safari, ffmpeg), with the RFC 6381 string for each.
# Anything else is refused rather than recorded into a replay nobody can play.
_VIDEO = {"h264": (avc1_codec, "avc1.64001f"), "hevc": (hevc_codec, "hvc1.1.6.L93.B0")}
_AUDIO = {"aac": (mp4a_codec, "mp4a.40.2"), "mp3": (None, "mp4a.40.34")}


def _describe(video: av.stream.Stream | None, audio: av.stream.Stream | None) -> StreamInfo:
    info = StreamInfo(has_video=video is not None, has_audio=audio is not None)
    if video is not None:
        ctx = video.codec_context
        info.width, info.height = ctx.width or None, ctx.height or None
        # The SPS timing first: FLV's millisecond timestamps make average_rate 30.303 for 30.
        rate = ctx.framerate or video.guessed_rate or video.average_rate
        info.frame_rate = float(rate) if rate else None
        info.video_codecs = _codec_string("video", ctx.codec.canonical_name, ctx.extradata, _VIDEO)
    if audio is not None:
        ctx = audio.codec_context
        info.audio_codecs = _codec_string("audio", ctx.codec.canonical_name, ctx.extradata, _AUDIO)
        info.audio_codec = ctx.codec.canonical_name
        info.audio_extradata = bytes(ctx.extradata) if ctx.extradata else None
    return info


def _codec_string(
    kind: str,
    name: str,
    extradata: bytes | None,
    known: dict[str, tuple[Callable[[bytes], str] | None, str]],
) -> str:
    if name not in known:
        raise TranscodeError(
            f"{kind} codec {name!r} is not supported: publish "
            + " or ".join(c.upper() for c in known)
        )
    parse, fallback = known[name]
    if parse is not None and extradata:
        try:
            return parse(bytes(extradata))
        except TranscodeError:
            pass
    if parse is not None:
        log.warning("no %s configuration for %s; CODECS falls back to %s", kind, name, fallback)
    return fallback
