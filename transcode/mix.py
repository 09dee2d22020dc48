"""The live room mix: every seat's audio on the room's wall clock, summed, as one AAC rendition.

A room's hosts ("seats") each publish their own audio; `RoomMix` decodes each seat's compressed
frames (AAC or MP3, as RTMP brings them), resamples them to the mix format, and adds them into one
buffer at the sample index of their capture time: index round((wall - start) * sample_rate). The
mix is emitted `jitter_s` behind the caller's clock (`advance(now)`): a frame that comes later
than that loses the part already emitted, and never holds the mix back. Emitted audio goes through
the limiter, the AAC encoder (one for the whole mix: no priming per segment, timestamps run on),
and into MPEG-TS segments of about `target_s`, cut on AAC frame boundaries and announced with
`SegmentClosed` (rendition "mix").

Choices:
- Mono. A room mix is voices; nobody is panned. Mono halves the encoder's work, the most
  expensive step (AAC encoding costs more than decoding all the seats of a 4-seat room).
- Headroom: seats are summed at unit gain, then soft-limited (`soft_limit`). A gain of
  1/sqrt(n) would change every host's loudness whenever someone joins or leaves, and hosts
  mostly take turns; the limiter only acts when the sum is hot (above -4.4 dBFS), and bends it
  smoothly under -0.9 dBFS, leaving room for the AAC encoder's overshoot.
- Clock: each seat keeps a running sample position, advanced by the samples it decoded. Frame
  wall times jitter by a few ms (network, the publisher's clock rounding to ms): following them
  frame by frame would leave gaps and overlaps, heard as clicks. The position is re-anchored to
  the wall time only when they drift apart by more than `REANCHOR_S` (a gap, a mute, a
  reconnect, a publisher whose clock runs off).
- Timestamps: the encoder's priming (1024 samples) comes first, so the TS timeline starts at 0
  with the priming and a sample captured at `wall` plays at (wall - start) + `latency_s`.

Threading: blocking work (decode, encode, file writes); the caller runs it on a worker thread.
Every method takes one lock, so calls from several threads are safe, one at a time; the
callbacks (`on_segment`, `on_audio`) run under it on the calling thread, and must not call back
into the mix.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from transcode.errors import TranscodeError
from transcode.segmenter import TS_OPTIONS, SegmentClosed

log = logging.getLogger(__name__)

RENDITION = "mix"
# A seat's running position follows its wall times until they differ by more than this: far
# above wall-time jitter (a few ms), far below anything a listener would hear as out of sync.
REANCHOR_S = 0.040
# How far ahead of the emitted point a seat's audio is kept (a publisher whose clock runs
# ahead, a burst after a stall); beyond it, dropped. Bounds the buffer: 2 x this of floats.
MAX_AHEAD_S = 5.0
# Samples in an AAC frame: the encoder's priming, what the mix's timeline opens with.
AAC_FRAME = 1024
SAMPLE_RATE = 48000
# How long the priming plays at the default rate: a mix segment's sample at `start_s` was
# captured this much earlier.
PRIMING_S = AAC_FRAME / SAMPLE_RATE
# Decoded audio is resampled in batches of this much: PyAV's resampler costs ~60 us a call
# whatever its size, 4 times the work of resampling one AAC frame (measured: 0.26% of a core
# per seat frame by frame, 0.10% in batches of 4 frames). Held at most this long: well within
# the jitter buffer, and a batch due for emission goes at once (`advance`).
BATCH_S = 0.1
# The soft limiter: untouched below KNEE, bent smoothly under CEILING above it.
KNEE = 0.6
CEILING = 0.9
CODECS = ("aac", "mp3")

# Samples of one seat, mono float32 at the mix rate, and the wall time of the first one.
AudioHook = Callable[[int, np.ndarray, datetime], None]


def soft_limit(x: np.ndarray) -> np.ndarray:
    """|x| <= KNEE unchanged; above, KNEE + (CEILING - KNEE) * tanh(excess / (CEILING - KNEE)):
    continuous with slope 1 at the knee, at most CEILING. In place; returns x."""
    if x.size == 0 or float(np.abs(x).max()) <= KNEE:
        return x  # the usual case: nobody shouting over anybody
    span = CEILING - KNEE
    hot = np.abs(x) > KNEE
    over = x[hot]
    x[hot] = np.sign(over) * (KNEE + span * np.tanh((np.abs(over) - KNEE) / span))
    return x


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """A planar float frame's samples, downmixed by a mean of the channels: straight from its
    planes (`to_ndarray` stacks them, which was a sixth of a seat's cost)."""
    n = frame.samples
    planes = [np.frombuffer(p, dtype=np.float32, count=n) for p in frame.planes]
    if len(planes) == 1:
        return planes[0]
    return np.mean(planes, axis=0, dtype=np.float32)


@dataclass(kw_only=True)
class SeatStats:
    """What happened to a seat's audio, for logs and tests."""

    frames: int = 0
    late_samples: int = 0  # came after their place was emitted
    ahead_samples: int = 0  # more than MAX_AHEAD_S ahead of the emitted point
    reanchors: int = 0  # running position moved to the wall time (not counting the first)
    undecodable: int = 0


class _Seat:
    """A seat's decoder, and its decoded audio not yet resampled and placed."""

    def __init__(self, *, codec: str, extradata: bytes | None, label: str) -> None:
        if codec not in CODECS:
            raise TranscodeError(f"{label}: cannot mix {codec!r} audio (only {', '.join(CODECS)})")
        self.decoder = av.CodecContext.create(codec, "r")
        if extradata:
            self.decoder.extradata = bytes(extradata)
        self.position: int | None = None  # mix sample index where the pending audio goes
        self.pending: list[np.ndarray] = []  # decoded audio, downmixed
        self.pending_samples = 0
        self.source: tuple[int, int] | None = None  # (rate, channels) of the pending audio
        self.resampler: av.AudioResampler | None = None  # for `source`, to the mix format
        self.converter: av.AudioResampler | None = None  # to fltp, for a decoder that is not
        self.warned: set[str] = set()

    def pending_mix_samples(self, rate: int) -> float:
        return self.pending_samples * rate / self.source[0] if self.source else 0.0


class _Segments:
    """The mix's MPEG-TS segment files: encoded packets in, files cut about every `target`."""

    def __init__(
        self,
        *,
        directory: Path,
        rate: int,
        target_s: float,
        first_sequence: int,
        on_segment: Callable[[SegmentClosed], None],
    ) -> None:
        self.directory = directory
        self.rate = rate
        self.time_base = Fraction(1, rate)
        # Cut before the packet that would make the segment longer than the target by more
        # than half a frame: 2 s at 48 kHz is 94 frames, 2.005 s.
        self.cut_at = round(target_s * rate) - 512
        self.sequence = first_sequence
        self.on_segment = on_segment
        self.offset: int | None = None  # added to the encoder's pts: the priming starts at 0
        self.container: av.container.OutputContainer | None = None
        self.stream: av.stream.Stream | None = None
        self.path: Path | None = None
        self.start = 0  # pts of the open segment's first packet (mix rate)
        self.end = 0  # end of its last packet

    def write(self, packet: av.Packet) -> None:
        if packet.size == 0 or packet.pts is None:
            return
        if self.offset is None:
            self.offset = max(0, -packet.pts)
        pts = packet.pts + self.offset
        duration = packet.duration or 1024
        if self.container is not None and pts - self.start >= self.cut_at:
            self.close()
        if self.container is None:
            self._open(pts)
        assert self.container is not None and self.stream is not None
        out = av.Packet(bytes(packet))
        out.pts = out.dts = pts
        out.duration = duration
        out.time_base = self.time_base
        out.stream = self.stream
        self.container.mux(out)
        self.end = pts + duration

    def _open(self, pts: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{RENDITION}-{self.sequence:06d}.ts"
        self.container = av.open(str(self.path), "w", format="mpegts", options=TS_OPTIONS)
        # Its own encoder context is opened and never used (~1 ms a segment): the mixer's
        # encoder runs on across segments, and the muxer takes its packets as they are.
        self.stream = self.container.add_stream("aac", rate=self.rate, layout="mono")
        self.stream.time_base = self.time_base
        self.start = self.end = pts

    def close(self) -> None:
        if self.container is None or self.path is None:
            return
        self.container.close()
        self.container = None
        segment = SegmentClosed(
            rendition=RENDITION,
            sequence=self.sequence,
            path=self.path,
            start_s=self.start / self.rate,
            duration_s=(self.end - self.start) / self.rate,
            size_bytes=self.path.stat().st_size,
            discontinuity=False,
            closed_at=time.time(),
        )
        self.sequence += 1
        self.on_segment(segment)


class RoomMix:
    """One room's live mix. Feed it `seat_audio` (a seat's format, again on every new sequence
    header or reconnect), `push` (each compressed frame with its capture wall time), and
    `advance(now)` (after pushes and on a timer: the mix is emitted up to now - jitter_s, with
    silence where nobody spoke); `finish` at the end."""

    def __init__(
        self,
        *,
        directory: Path,
        start: datetime,
        on_segment: Callable[[SegmentClosed], None],
        label: str,
        target_s: float = 2.0,
        sample_rate: int = SAMPLE_RATE,
        bitrate: int = 96_000,
        jitter_s: float = 0.5,
        first_sequence: int = 0,
        on_audio: AudioHook | None = None,
        aac_coder: str = "fast",
    ) -> None:
        if start.tzinfo is None:
            raise TranscodeError(f"{label}: the mix start must be timezone-aware")
        if not target_s > 0 or not jitter_s >= 0:
            raise TranscodeError(f"{label}: bad target_s {target_s} or jitter_s {jitter_s}")
        self.start = start
        self.label = label
        self.rate = sample_rate
        self.jitter_s = jitter_s
        self.on_audio = on_audio
        self.stats: dict[int, SeatStats] = {}
        self._seats: dict[int, _Seat] = {}
        self._lock = threading.Lock()
        self._finished = False
        self._tolerance = round(REANCHOR_S * sample_rate)
        # The sum: buffer index i holds mix sample `_base + i`; everything before `_emitted`
        # is gone to the encoder. Twice the look-ahead, shifted once half is emitted.
        self._ahead = round(MAX_AHEAD_S * sample_rate)
        self._buffer = np.zeros(2 * self._ahead, dtype=np.float32)
        self._base = 0
        self._emitted = 0
        self._furthest = 0  # end of the furthest audio placed
        # The encoder. "fast" (ffmpeg's -aac_coder fast) was measured 2.6x cheaper than the
        # default two-loop search, for speech at 96 kb/s a difference few can hear.
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = sample_rate
        encoder.layout = "mono"
        encoder.format = "fltp"
        encoder.bit_rate = bitrate
        encoder.time_base = Fraction(1, sample_rate)
        encoder.options = {"aac_coder": aac_coder}
        encoder.open()
        self._encoder = encoder
        self._frame = encoder.frame_size or AAC_FRAME
        self.latency_s = self._frame / sample_rate  # the priming the TS timeline starts with
        self._segments = _Segments(
            directory=Path(directory),
            rate=sample_rate,
            target_s=target_s,
            first_sequence=first_sequence,
            on_segment=on_segment,
        )

    def segment_start(self, segment: SegmentClosed) -> datetime:
        """The wall-clock time of a segment's first sample as it plays, for its
        EXT-X-PROGRAM-DATE-TIME: the TS timeline opens with the priming, so a sample at
        `start_s` was captured `latency_s` earlier (dated at `start + start_s`, every mix
        segment was one AAC frame, 21 ms, late against the hosts' own renditions)."""
        return self.start + timedelta(seconds=segment.start_s - self.latency_s)

    # -- seats

    def seat_audio(
        self,
        seat: int,
        *,
        codec: str,
        extradata: bytes | None,
        sample_rate: int | None = None,
        channels: int | None = None,
    ) -> None:
        """A seat's audio format, announced or announced again (an AAC sequence header, a
        reconnect): a new decoder, and the next frame re-anchors the seat on its wall time.
        `sample_rate` and `channels` are hints: AAC's AudioSpecificConfig and MP3's frame
        headers say it themselves."""
        with self._lock:
            state = _Seat(codec=codec, extradata=extradata, label=self.label)
            old = self._seats.get(seat)
            if old is not None:
                self._flush(seat, old, drain=True)
            if sample_rate:
                state.decoder.sample_rate = sample_rate
            if channels:
                state.decoder.layout = "mono" if channels == 1 else "stereo"
            self._seats[seat] = state
            self.stats.setdefault(seat, SeatStats())
            log.info("%s: seat %d audio is %s", self.label, seat, codec)

    def seat_left(self, seat: int) -> None:
        """The seat went away: what it sent stays in the mix, nothing more comes."""
        with self._lock:
            state = self._seats.pop(seat, None)
            if state is not None:
                self._flush(seat, state, drain=True)
                self._report(seat)

    # -- media

    def push(self, seat: int, payload: bytes, wall: datetime) -> None:
        """One compressed frame of a seat (a raw AAC frame without its FLV header, or an MP3
        frame) and the wall time its first sample was captured."""
        with self._lock:
            state = self._seats.get(seat)
            if state is None or self._finished:
                if state is None:
                    log.debug("%s: seat %d sent audio before its format; dropped", self.label, seat)
                return
            stats = self.stats[seat]
            stats.frames += 1
            anchor = round((wall - self.start).total_seconds() * self.rate)
            if state.position is None:
                state.position = anchor
            else:
                drift = anchor - (state.position + state.pending_mix_samples(self.rate))
                if abs(drift) > self._tolerance:
                    self._flush(seat, state, drain=True)  # what came before, where it was
                    stats.reanchors += 1
                    log.debug(
                        "%s: seat %d re-anchored by %+.3f s", self.label, seat, drift / self.rate
                    )
                    state.position = anchor
            try:
                frames = state.decoder.decode(av.Packet(payload))
            except av.error.FFmpegError as exc:
                stats.undecodable += 1
                self._warn_once(state, seat, "decode", f"a frame could not be decoded ({exc})")
                return
            for frame in frames:
                self._hold(seat, state, frame)
            if state.source and state.pending_samples >= BATCH_S * state.source[0]:
                self._flush(seat, state)

    def advance(self, now: datetime) -> None:
        """Emit the mix up to `now - jitter_s`, in whole AAC frames."""
        with self._lock:
            if self._finished:
                return
            due = math.floor(((now - self.start).total_seconds() - self.jitter_s) * self.rate)
            self._emit_until(due)

    def finish(self, end: datetime | None = None) -> None:
        """No more frames: emit everything up to `end` (else the end of the furthest audio
        placed), flush the encoder and close the last segment. Idempotent."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            for seat, state in self._seats.items():
                self._flush(seat, state, drain=True)
            if end is not None:
                until = math.ceil((end - self.start).total_seconds() * self.rate)
            else:
                until = self._furthest
            frame = self._frame
            self._emit_until(self._emitted + math.ceil((until - self._emitted) / frame) * frame)
            for packet in self._encoder.encode(None):
                self._segments.write(packet)
            self._segments.close()
            for seat in list(self._seats):
                self._report(seat)
            self._seats.clear()

    # -- inside

    def _hold(self, seat: int, state: _Seat, frame: av.AudioFrame) -> None:
        """Keep a decoded frame for the next batch (a change of format flushes the batch)."""
        if frame.format.name != "fltp":  # AAC and MP3 decode to fltp; anything else converted
            state.converter = state.converter or av.AudioResampler(format="fltp")
            for converted in state.converter.resample(frame):
                self._hold(seat, state, converted)
            return
        source = (frame.sample_rate, len(frame.layout.channels))
        if source != state.source:
            self._flush(seat, state, drain=True)
            state.source = source
        mono = _mono(frame)
        state.pending.append(mono)
        state.pending_samples += mono.size

    def _flush(self, seat: int, state: _Seat, *, drain: bool = False) -> None:
        """Resample the seat's pending audio to the mix format and add it in at its position;
        `drain` also empties the resampler (before a gap, a format change, the end)."""
        parts: list[np.ndarray] = []
        if state.pending and state.source is not None:
            pending = state.pending
            mono = np.concatenate(pending) if len(pending) > 1 else pending[0]
            rate = state.source[0]
            if rate == self.rate:
                parts.append(mono)
            else:
                if state.resampler is None:
                    state.resampler = av.AudioResampler(
                        format="fltp", layout="mono", rate=self.rate
                    )
                frame = av.AudioFrame.from_ndarray(mono[None, :], format="fltp", layout="mono")
                frame.sample_rate = rate
                parts.extend(_mono(f) for f in state.resampler.resample(frame))
        state.pending, state.pending_samples = [], 0
        if drain and state.resampler is not None:
            tail = [_mono(f) for f in state.resampler.resample(None)]
            state.resampler = None
            # The filter's last ~0.3 ms, alone after its batch went out (a seat that stopped
            # before a gap): not worth a "late" warning.
            if parts or (state.position or 0) >= self._emitted:
                parts.extend(tail)
        if not parts or state.position is None:
            return
        samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
        position = state.position
        state.position += samples.size
        if self.on_audio is not None and samples.size:
            self.on_audio(seat, samples, self.start + timedelta(seconds=position / self.rate))
        self._place(seat, state, samples, position)

    def _place(self, seat: int, state: _Seat, samples: np.ndarray, position: int) -> None:
        stats = self.stats[seat]
        begin, end = max(position, 0), position + samples.size  # nothing before the start
        if begin < self._emitted:
            late = min(end, self._emitted) - begin
            stats.late_samples += late
            self._warn_once(state, seat, "late", f"audio came over {self.jitter_s} s late")
            begin = self._emitted
        limit = self._emitted + self._ahead
        if end > limit:
            stats.ahead_samples += end - max(begin, limit)
            self._warn_once(state, seat, "ahead", f"audio came over {MAX_AHEAD_S} s early")
            end = limit
        if begin >= end:
            return
        offset = begin - position
        at = begin - self._base
        self._buffer[at : at + end - begin] += samples[offset : offset + end - begin]
        self._furthest = max(self._furthest, end)

    def _emit_until(self, due: int) -> None:
        frame = self._frame
        count = (due - self._emitted) // frame
        if count <= 0:
            return
        end = self._emitted + count * frame
        for seat, state in self._seats.items():  # batches that are due go in first
            if state.pending and state.position is not None and state.position < end:
                self._flush(seat, state)
        while count > 0:
            # At most the buffered half at a time (a timer late by minutes emits silence).
            n = min(count, self._ahead // frame)
            self._emit(n * frame)
            count -= n

    def _emit(self, n: int) -> None:
        at = self._emitted - self._base  # < _ahead, and n <= _ahead: inside the buffer
        block = soft_limit(self._buffer[at : at + n].copy())
        frame, encoder, write = self._frame, self._encoder, self._segments.write
        for i in range(0, n, frame):
            audio = av.AudioFrame.from_ndarray(
                block[None, i : i + frame], format="fltp", layout="mono"
            )
            audio.sample_rate = self.rate
            audio.pts = self._emitted + i
            for packet in encoder.encode(audio):
                write(packet)
        self._emitted += n
        if self._emitted - self._base >= self._ahead:
            self._shift()

    def _shift(self) -> None:
        """Drop the emitted part of the buffer: what is left moves to its front."""
        at = min(self._emitted - self._base, self._buffer.size)
        rest = self._buffer.size - at
        self._buffer[:rest] = self._buffer[at:]
        self._buffer[rest:] = 0.0
        self._base += at

    def _warn_once(self, state: _Seat, seat: int, kind: str, what: str) -> None:
        if kind not in state.warned:
            state.warned.add(kind)
            log.warning("%s: seat %d: %s; such audio is dropped (counted)", self.label, seat, what)

    def _report(self, seat: int) -> None:
        s = self.stats[seat]
        if s.late_samples or s.ahead_samples or s.undecodable:
            log.info(
                "%s: seat %d: %d frames; dropped %.2f s late, %.2f s early, %d undecodable",
                self.label,
                seat,
                s.frames,
                s.late_samples / self.rate,
                s.ahead_samples / self.rate,
                s.undecodable,
            )
