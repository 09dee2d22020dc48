"""A live room's mix and speaker turns, on a thread of their own.

Seats hand their compressed audio frames over (`frame`) from whatever thread segments them; an
inbox (a deque: appending takes no lock and wakes nobody) carries them to the mix thread, which
every TICK_S takes what came, decodes, mixes, encodes and cuts segments
(`transcode.mix.RoomMix`) and finds who is speaking (`transcode.speech.RoomSpeech`). Nothing
here ever blocks a seat: a mix that falls behind drops frames (counted, logged once) rather than
hold the room's recording back, and a mix that fails stops alone, the seats' own renditions go
on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from transcode.errors import TranscodeError
from transcode.mix import RoomMix
from transcode.segmenter import SegmentClosed
from transcode.speech import RoomSpeech, SpeakerTurn

log = logging.getLogger(__name__)

# How often the mix thread takes the frames that came and emits the mix. Waking it per frame
# (a queue's notify, a thread switch and the GIL handed over ~50 times a second per seat) cost
# more than the mixing; what waits here for at most a tick is well inside the jitter buffer.
TICK_S = 0.1
# Frames waiting for the mix thread, over all seats: about 10 s of a 10-seat room.
MAX_QUEUED = 4096
# The mix is emitted this far behind the wall clock: a seat's audio must reach it within that
# (the recorder reads a mixed seat's socket in batches shorter than this, `READ_WITHIN_S`).
JITTER_S = 0.5
READ_WITHIN_S = JITTER_S - 0.05


class MixLane:
    """The mix of one recording. `frame`, `audio`, `left` from any thread; `close` once."""

    def __init__(
        self,
        *,
        directory: Path,
        start: datetime,
        target_s: float,
        on_segment: Callable[[SegmentClosed], None],
        on_turn: Callable[[SpeakerTurn], None],
        now: Callable[[], datetime],
        label: str,
    ) -> None:
        self.start = start
        self.label = label
        self._now = now
        self.speech = RoomSpeech(sample_rate=48_000, on_turn=on_turn)
        self.mix = RoomMix(
            directory=directory,
            start=start,
            target_s=target_s,
            on_segment=on_segment,
            on_audio=self.speech.feed,
            label=label,
            jitter_s=JITTER_S,
        )
        # `_put` bounds the frames in it.
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._closing = threading.Event()
        self.dropped = 0
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"mix-{label}", daemon=True)
        self._thread.start()

    def segment_start(self, segment: SegmentClosed) -> datetime:
        """A mix segment's EXT-X-PROGRAM-DATE-TIME (`RoomMix.segment_start`)."""
        return self.mix.segment_start(segment)

    # -- from the seats -----------------------------------------------------------------------

    def audio(self, seat: int, *, codec: str, extradata: bytes | None) -> None:
        """A seat's audio format: at its first probe, and again after each change."""
        self._put(("audio", seat, codec, extradata), control=True)

    def frame(self, seat: int, payload: bytes, wall: datetime) -> None:
        """One compressed audio frame of a seat, and the wall-clock time of its first sample."""
        self._put(("frame", seat, payload, wall))

    def left(self, seat: int) -> None:
        self._put(("left", seat), control=True)

    def close(self, end: datetime | None = None) -> None:
        """Mix what came, close the last segment and the open turns; blocks until done (call
        it off the event loop)."""
        self._put(("close", end), control=True)
        self._closing.set()
        self._thread.join()

    def current(self) -> list[SpeakerTurn]:
        """Turns in progress (who is speaking now)."""
        return self.speech.current()

    def dropped_s(self) -> dict[str, float]:
        """Seconds of seat audio the mix could not take so far, by why (read from any thread:
        counters, a moment stale at worst)."""
        stats = list(self.mix.stats.values())
        rate = self.mix.rate
        return {
            "late": sum(s.late_samples for s in stats) / rate,
            "early": sum(s.ahead_samples for s in stats) / rate,
            # A frame is AAC's 1024 samples (MP3's 1152: near enough for a counter).
            "behind": self.dropped * 1024 / rate,
        }

    def _put(self, item: tuple[Any, ...], *, control: bool = False) -> None:
        """Never waits: callers are the event loop and the segmenting threads. Frames beyond
        MAX_QUEUED are dropped; a seat's format and its leaving always go in (few and small)."""
        if self.failed is not None or not self._thread.is_alive():
            return
        if not control and len(self._inbox) >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("%s: the mix fell behind; dropping audio frames", self.label)
            return
        self._inbox.append(item)

    # -- the mix thread -----------------------------------------------------------------------

    def _take(self, item: tuple[Any, ...]) -> None:
        kind, seat = item[0], item[1]
        try:
            if kind == "frame":
                self.mix.push(seat, item[2], item[3])
            elif kind == "audio":
                self.mix.seat_audio(seat, codec=item[2], extradata=item[3])
            elif kind == "left":
                self.mix.seat_left(seat)
                self.speech.seat_left(seat)
        except TranscodeError as exc:  # one seat's audio the mix cannot take: the rest goes on
            log.warning("%s: seat %d: %s", self.label, seat, exc)

    def _run(self) -> None:
        mix, speech, inbox = self.mix, self.speech, self._inbox
        try:
            while True:
                self._closing.wait(TICK_S)
                while inbox:
                    item = inbox.popleft()
                    if item[0] == "close":
                        mix.finish(item[1])
                        speech.finish(item[1])
                        return
                    self._take(item)
                now = self._now()
                mix.advance(now)
                speech.idle(now)
        except Exception as exc:
            self.failed = exc
            log.error(
                "%s: the room mix stopped; the seats' own renditions go on",
                self.label,
                exc_info=exc,
            )
            try:
                mix.finish()
            except Exception:
                log.debug("%s: the mix could not close its last segment", self.label, exc_info=True)
