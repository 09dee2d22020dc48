"""Who spoke when: speaker turns per seat, from each seat's decoded audio.

An energy detector, small enough to run on every seat of every room: the audio is cut into
windows of `window_s` (20 ms); a window whose RMS is at or above `threshold_dbfs` is voiced. A
turn starts at the first voiced window and lasts while voiced windows follow one another with
pauses no longer than `hangover_s` (breaths, pauses between words and short sentences); it ends
at the end of its last voiced window. Turns shorter than `min_turn_s` (a cough, a knock on the
desk, a click) are not reported.

Defaults, relative to full scale: talk into a microphone sits around -30 to -10 dBFS RMS, a
quiet room and a microphone's own noise under -50 dBFS, so -40 dBFS splits them without any
learning (an adaptive noise floor would slowly take a steady voice, or the test tones, for
noise). A loud room (a fan at -35 dBFS) reads as speaking: raise the threshold for such a seat.

`SpeechDetector` follows one seat; `RoomSpeech` holds one per seat and has the signature of
`transcode.mix.RoomMix`'s `on_audio` hook, so the mix's decoded, resampled samples feed it
directly. Times are the samples' wall times, so turns are on the room's clock. Audio that stops
coming (a mute, a seat gone) ends a turn once `idle(now)` is called past the hangover, or at the
next block's arrival after a gap. Pure computation on numpy blocks, not thread-safe: one caller
at a time (the mix calls the hook under its own lock).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from transcode.errors import TranscodeError

WINDOW_S = 0.020
THRESHOLD_DBFS = -40.0
HANGOVER_S = 0.5
MIN_TURN_S = 0.3
# Consecutive blocks whose wall times differ from the running sample clock by more than this
# are not contiguous: the time between is a gap (no audio), not speech.
CONTIGUOUS_S = 0.040


@dataclass(frozen=True, kw_only=True)
class SpeakerTurn:
    seat: int
    start: datetime
    end: datetime

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


class SpeechDetector:
    """Turns of one seat, fed blocks of mono float samples (any length) with the wall time of
    their first sample."""

    def __init__(
        self,
        seat: int,
        sample_rate: int,
        *,
        on_turn: Callable[[SpeakerTurn], None],
        threshold_dbfs: float = THRESHOLD_DBFS,
        window_s: float = WINDOW_S,
        hangover_s: float = HANGOVER_S,
        min_turn_s: float = MIN_TURN_S,
    ) -> None:
        if sample_rate <= 0 or not window_s > 0 or hangover_s < 0 or min_turn_s < 0:
            raise TranscodeError(f"seat {seat}: bad speech detector settings")
        self.seat = seat
        self.rate = sample_rate
        self.on_turn = on_turn
        self.window = max(1, round(window_s * sample_rate))
        self.window_s = self.window / sample_rate
        # Compared with the mean square, not the RMS in dB: no log per window.
        self.threshold_ms = 10 ** (threshold_dbfs / 10)
        self.hangover_s = hangover_s
        self.min_turn_s = min_turn_s
        self._pending = np.zeros(0, dtype=np.float32)  # under one window, not yet judged
        self._pending_t = 0.0  # wall time (POSIX s) of its first sample
        self._next_t: float | None = None  # where the next block should start if contiguous
        self._start: float | None = None  # of the open turn
        self._voiced_end = 0.0  # end of the open turn's last voiced window

    def feed(self, samples: np.ndarray, wall: datetime) -> None:
        t = wall.timestamp()
        if self._next_t is None or abs(t - self._next_t) > CONTIGUOUS_S:
            self._pending = self._pending[:0]  # the partial window belongs to before a gap
            self.idle_until(t)
        if not self._pending.size:
            self._pending_t = t
        self._next_t = t + len(samples) / self.rate
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        w = self.window
        n = len(data) // w
        if n:
            blocks = np.asarray(data[: n * w], dtype=np.float32).reshape(n, w)
            voiced = np.einsum("ij,ij->i", blocks, blocks) / w >= self.threshold_ms
            self._judge(voiced, self._pending_t)
        self._pending = np.array(data[n * w :], dtype=np.float32)
        self._pending_t += n * self.window_s

    def _judge(self, voiced: np.ndarray, t0: float) -> None:
        # Only the voiced windows matter: a turn is voiced windows no further apart than the
        # hangover.
        ws = self.window_s
        for i in np.flatnonzero(voiced):
            at = t0 + int(i) * ws
            if self._start is not None and at - self._voiced_end > self.hangover_s:
                self._close()
            if self._start is None:
                self._start = at
            self._voiced_end = at + ws
        # A silent tail past the hangover closes the turn now rather than at the next voice.
        self.idle_until(t0 + len(voiced) * ws)

    def idle_until(self, now: float) -> None:
        """Nothing voiced until `now` (POSIX seconds): a turn whose hangover ran out ends."""
        if self._start is not None and now - self._voiced_end > self.hangover_s:
            self._close()

    def idle(self, now: datetime) -> None:
        """The caller's clock: a seat whose audio stopped coming (muted, gone) stops speaking
        once the hangover has passed."""
        self.idle_until(now.timestamp())

    def current(self) -> SpeakerTurn | None:
        """The open turn so far, once it is long enough to count, for a live view."""
        if self._start is None or self._voiced_end - self._start < self.min_turn_s:
            return None
        return self._turn(self._start, self._voiced_end)

    def finish(self, end: datetime | None = None) -> None:
        """The seat's audio ended: an open turn ends at its last voiced window (or `end`)."""
        if self._start is not None:
            if end is not None:
                self._voiced_end = min(self._voiced_end, end.timestamp())
            self._close()
        self._pending = self._pending[:0]
        self._next_t = None

    def _close(self) -> None:
        start, end = self._start, self._voiced_end
        self._start = None
        if start is not None and end - start >= self.min_turn_s - 1e-9:
            self.on_turn(self._turn(start, end))

    def _turn(self, start: float, end: float) -> SpeakerTurn:
        return SpeakerTurn(
            seat=self.seat,
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(end, UTC),
        )


class RoomSpeech:
    """One `SpeechDetector` per seat, made on the seat's first audio. `feed` is a
    `RoomMix(on_audio=...)` hook."""

    def __init__(
        self, *, sample_rate: int, on_turn: Callable[[SpeakerTurn], None], **settings: float
    ) -> None:
        self.rate = sample_rate
        self.on_turn = on_turn
        self.settings = settings
        self._seats: dict[int, SpeechDetector] = {}

    def feed(self, seat: int, samples: np.ndarray, wall: datetime) -> None:
        detector = self._seats.get(seat)
        if detector is None:
            detector = self._seats[seat] = SpeechDetector(
                seat, self.rate, on_turn=self.on_turn, **self.settings
            )
        detector.feed(samples, wall)

    def idle(self, now: datetime) -> None:
        for detector in self._seats.values():
            detector.idle(now)

    def seat_left(self, seat: int, end: datetime | None = None) -> None:
        detector = self._seats.pop(seat, None)
        if detector is not None:
            detector.finish(end)

    def current(self) -> list[SpeakerTurn]:
        """Who is speaking now, by seat."""
        turns = (d.current() for _, d in sorted(self._seats.items()))
        return [t for t in turns if t is not None]

    def finish(self, end: datetime | None = None) -> None:
        for seat in list(self._seats):
            self.seat_left(seat, end)


def dbfs(samples: np.ndarray) -> float:
    """RMS level of a block in dB relative to full scale (-inf for digital zero)."""
    if not samples.size:
        return -math.inf
    ms = float(np.mean(np.square(samples, dtype=np.float64)))
    return 10 * math.log10(ms) if ms > 0 else -math.inf
