"""Waveform peaks of a recording: the loudest |sample| per slice of time, for drawing.

Segments are decoded one at a time (a 2-hour recording never sits in memory), audio streams only
(video packets are demuxed, as MPEG-TS interleaves them, but never decoded), downmixed to one
channel by averaging the channels, and the peak of each bucket of `1 / points_per_second` s is
kept. A `PeakMeter` carries its state from one segment to the next, so a live recording's
waveform grows by decoding only its new segments.

Positions: given a segment's duration (the playlist's EXTINF), the meter lays the segment's audio
from the end of the previous one and moves on by exactly that duration, so the waveform stays on
the playlist's timeline (the player's and the clip cutter's) however the audio and the segment
boundaries differ; the error is bounded by one segment's audio offset and never accumulates.
A segment that cannot be decoded counts as silence of its duration (logged), not as a failure:
one damaged segment should not hide the rest of the picture.

Blocking media work: callers run it in a worker thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import av
import av.error
import numpy as np

from transcode.errors import TranscodeError

log = logging.getLogger(__name__)


class PeakMeter:
    """Peaks per bucket, fed segment by segment in order."""

    def __init__(self, *, points_per_second: float) -> None:
        if not points_per_second > 0:
            raise TranscodeError(f"points_per_second must be positive, not {points_per_second}")
        self.points_per_second = float(points_per_second)
        self._peaks = np.zeros(1024, dtype=np.float32)
        self._position_s = 0.0  # where the next segment starts on the timeline
        self.segments = 0

    @property
    def duration_s(self) -> float:
        return self._position_s

    def feed(self, path: Path, *, duration_s: float | None = None) -> None:
        """Add one segment: `duration_s` (its EXTINF) fixes how much of the timeline it takes;
        without it, its decoded audio does."""
        start = self._position_s
        try:
            decoded = _decode_mono(path)
        except (av.error.FFmpegError, TranscodeError) as exc:
            if duration_s is None:
                raise TranscodeError(f"cannot decode the audio of {path.name}: {exc}") from exc
            log.warning("segment %s: no audio decoded (%s); drawn as silence", path.name, exc)
            decoded = []
        position = start
        end = None if duration_s is None else start + duration_s
        for samples, rate in decoded:
            if end is not None:
                room = math.floor((end - position) * rate + 1e-6)
                if room <= 0:
                    break
                samples = samples[:room]
            self._add(samples, rate, position)
            position += len(samples) / rate
        self._position_s = end if end is not None else position
        self._ensure(self._count())
        self.segments += 1

    def peaks(self) -> list[float]:
        """One value (0..1) per bucket, from t = 0 to the end of the last segment fed."""
        return [round(float(p), 4) for p in self._peaks[: self._count()]]

    def array(self) -> np.ndarray:
        """The same, as a read-only view."""
        view = self._peaks[: self._count()]
        view.flags.writeable = False
        return view

    def _count(self) -> int:
        # A bucket that the timeline only grazes (float noise) does not count.
        return math.ceil(self._position_s * self.points_per_second - 1e-6)

    def _ensure(self, size: int) -> None:
        if size > len(self._peaks):
            grown = np.zeros(max(size, 2 * len(self._peaks)), dtype=np.float32)
            grown[: len(self._peaks)] = self._peaks
            self._peaks = grown

    def _add(self, samples: np.ndarray, rate: int, at_s: float) -> None:
        if not len(samples):
            return
        times = at_s + np.arange(len(samples)) / rate
        index = np.floor(times * self.points_per_second).astype(np.int64)
        # Sample times only grow, so each bucket is one run: the peak of each run at once.
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        runs = np.maximum.reduceat(np.abs(samples), starts)
        buckets = index[starts]
        self._ensure(int(buckets[-1]) + 1)
        current = self._peaks[buckets]
        self._peaks[buckets] = np.minimum(np.maximum(current, runs), 1.0)


def _decode_mono(path: Path) -> list[tuple[np.ndarray, int]]:
    """The first audio stream of one segment, as runs of mono float samples with their rate.

    A segment (a few seconds) is decoded whole and downmixed at once: numpy work per frame
    (1024 samples) would cost more than the decoding."""
    runs: list[tuple[np.ndarray, int]] = []
    pending: list[np.ndarray] = []  # planar float frames of one rate and channel count
    shape: tuple[int, int] | None = None
    resampler = None

    def close_run() -> None:
        if pending:
            runs.append((np.concatenate(pending, axis=1).mean(axis=0, dtype=np.float32), shape[0]))
            pending.clear()

    def take(frame: av.AudioFrame) -> None:
        nonlocal shape
        planes = frame.to_ndarray()
        if (frame.sample_rate, planes.shape[0]) != shape:
            close_run()
            shape = (frame.sample_rate, planes.shape[0])
        pending.append(planes)

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise TranscodeError("no audio stream")
        for packet in container.demux(container.streams.audio[0]):
            for frame in packet.decode():
                if frame.format.name == "fltp":  # AAC and MP3 decode to it: no conversion
                    take(frame)
                    continue
                resampler = resampler or av.AudioResampler(format="fltp")
                for converted in resampler.resample(frame):
                    take(converted)
        for converted in resampler.resample(None) if resampler else []:
            take(converted)
    close_run()
    return runs


def peaks(paths: Iterable[Path], *, points_per_second: float) -> list[float]:
    """The peak |sample| (0..1) of the downmixed audio per bucket of `1 / points_per_second` s,
    over the segments in order, decoded one at a time."""
    meter = PeakMeter(points_per_second=points_per_second)
    for path in paths:
        meter.feed(Path(path))
    return meter.peaks()


def downsample(values: np.ndarray, *, points: int) -> tuple[np.ndarray, int]:
    """At most `points` values, each the peak of `factor` neighbours; returns (values, factor)."""
    if points < 1:
        raise TranscodeError(f"points must be at least 1, not {points}")
    if len(values) <= points:
        return values, 1
    factor = math.ceil(len(values) / points)
    padded = np.zeros(math.ceil(len(values) / factor) * factor, dtype=values.dtype)
    padded[: len(values)] = values
    return padded.reshape(-1, factor).max(axis=1), factor
