"""A live room's mix and speaker turns, on a thread of their own.

Seats hand their compressed audio frames over (`frame`) from whatever thread segments them; a
bounded queue carries them to the mix thread, which decodes, mixes, encodes and cuts segments
(`transcode.mix.RoomMix`) and finds who is speaking (`transcode.speech.RoomSpeech`). Nothing
here ever blocks a seat: a mix that falls behind drops frames (counted, logged once) rather than
hold the room's recording back, and a mix that fails stops alone, the seats' own renditions go
on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from transcode.errors import TranscodeError
from transcode.mix import RoomMix
from transcode.segmenter import SegmentClosed
from transcode.speech import RoomSpeech, SpeakerTurn

log = logging.getLogger(__name__)

# How often the mix is emitted when no frame comes (every seat silent or gone).
TICK_S = 0.1
# Frames waiting for the mix thread, over all seats: about 10 s of a 10-seat room.
MAX_QUEUED = 4096


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
        )
        # Unbounded as a queue; `_put` bounds the frames in it.
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
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
        self._thread.join()

    def current(self) -> list[SpeakerTurn]:
        """Turns in progress (who is speaking now)."""
        return self.speech.current()

    def _put(self, item: tuple[Any, ...], *, control: bool = False) -> None:
        """Never waits: callers are the event loop and the segmenting threads. Frames beyond
        MAX_QUEUED are dropped; a seat's format and its leaving always go in (few and small)."""
        if self.failed is not None or not self._thread.is_alive():
            return
        if not control and self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("%s: the mix fell behind; dropping audio frames", self.label)
            return
        self._queue.put_nowait(item)

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
        mix, speech = self.mix, self.speech
        try:
            while True:
                try:
                    item = self._queue.get(timeout=TICK_S)
                except queue.Empty:
                    item = None
                if item is not None:
                    if item[0] == "close":
                        mix.finish(item[1])
                        speech.finish(item[1])
                        return
                    self._take(item)
                    if not self._queue.empty():
                        continue  # catch up first: advance once the queue is drained
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
