"""The studio's API: a recording's waveform, drawn by the studio page under its timeline, and
its speaker lanes (who spoke when, one lane per host) under the waveform.

The waveform is made from the recording's `audio` rendition (the `source` one if it has none):
segments are downloaded a few ahead, in order, and decoded one at a time by
`transcode.waveform`, at a fine resolution kept in memory per recording; a request gets it
downsampled to the points it asks for. An ended recording's waveform never changes, so it is made
once; a live one grows, and only its new segments are fetched and decoded.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from api.deps import CurrentCreator, RuntimeDep, catalog_work, own_playable, store_work
from api.edge import edge_router
from api.schemas import PathId
from storage.catalog import SOURCE, Catalog
from storage.models import Segment
from storage.store import ObjectStore
from transcode.waveform import PeakMeter, downsample

log = logging.getLogger(__name__)

router = edge_router(tags=["studio"])

# 20 ms buckets: finer than any canvas shows a whole recording at, 1.4 MB (float32) for 2 hours.
FINE_POINTS_PER_SECOND = 50
MAX_POINTS = 4000
CACHED_RECORDINGS = 16
# Segments in flight at once: a store GET costs tens of ms, a segment's decode a few.
FETCH_AHEAD = 4
AUDIO = "audio"


class TurnSpan(BaseModel):
    start_s: float = Field(description="seconds into the recording's timeline (as clips)")
    end_s: float


class LaneOut(BaseModel):
    seat: int
    host: str = Field(description="the host's name in that seat when they went live")
    turns: list[TurnSpan]


class LanesOut(BaseModel):
    lanes: list[LaneOut] = Field(description="one per recorded host; none for a single host")


class WaveformOut(BaseModel):
    duration_s: float = Field(description="seconds of the recording the points cover")
    points: list[float] = Field(description="peak |sample|, 0..1, in order; at most `points`")
    seconds_per_point: float


@dataclass(kw_only=True)
class _Entry:
    rendition: str
    meter: PeakMeter
    lock: threading.Lock = field(default_factory=threading.Lock)


class Waveforms:
    """Waveforms of recordings, made from the store and kept in memory (least recently used
    first out)."""

    def __init__(
        self, *, store: ObjectStore, catalog: Catalog, work_dir: Path, entries: int = 16
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.work_dir = work_dir
        self.entries = entries
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, recording_id: str) -> tuple[np.ndarray, float]:
        """(fine peaks, duration in seconds) with every segment stored so far."""
        rendition = self.catalog.timeline_rendition(recording_id)
        if rendition == SOURCE and self.catalog.find_segments(recording_id, AUDIO):
            rendition = AUDIO  # a video room's audio alone: less to fetch
        segments = self.catalog.find_segments(recording_id, rendition)
        entry = self._entry(recording_id, rendition, len(segments))
        with entry.lock:
            if entry.meter.segments < len(segments):
                self._feed(recording_id, entry.meter, segments[entry.meter.segments :])
            return entry.meter.array().copy(), entry.meter.duration_s

    def _entry(self, recording_id: str, rendition: str, count: int) -> _Entry:
        with self._lock:
            entry = self._cache.get(recording_id)
            # A rendition that appeared, or segments that went away: start again.
            if entry is None or entry.rendition != rendition or entry.meter.segments > count:
                meter = PeakMeter(points_per_second=FINE_POINTS_PER_SECOND)
                entry = self._cache[recording_id] = _Entry(rendition=rendition, meter=meter)
            self._cache.move_to_end(recording_id)
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
            return entry

    def _feed(self, recording_id: str, meter: PeakMeter, segments: Sequence[Segment]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"waveform-{recording_id}-"
        with tempfile.TemporaryDirectory(prefix=prefix, dir=self.work_dir) as directory:
            for segment, path in self._fetched(segments, Path(directory)):
                meter.feed(path, duration_s=segment.duration_s)
                path.unlink()
        log.info(
            "waveform of recording %s: %d segments decoded, %.1f s",
            recording_id,
            len(segments),
            meter.duration_s,
        )

    def _fetched(self, segments: Sequence[Segment], directory: Path) -> Iterator[tuple]:
        """Each segment downloaded to a file, in order, with at most FETCH_AHEAD in flight."""

        def fetch(segment: Segment) -> Path:
            path = directory / f"{segment.sequence:08d}-{segment.key.rsplit('/', 1)[-1]}"
            self.store.download(segment.key, path)
            return path

        with ThreadPoolExecutor(FETCH_AHEAD, thread_name_prefix="waveform-fetch") as pool:
            pending: deque[tuple[Segment, Future[Path]]] = deque()
            upcoming = iter(segments)
            try:
                for segment in upcoming:
                    pending.append((segment, pool.submit(fetch, segment)))
                    if len(pending) >= FETCH_AHEAD:
                        break
                while pending:
                    segment, future = pending.popleft()
                    path = future.result()
                    if (following := next(upcoming, None)) is not None:
                        pending.append((following, pool.submit(fetch, following)))
                    yield segment, path
            finally:
                for _, future in pending:
                    future.cancel()


_made = threading.Lock()


def waveforms_of(app: FastAPI, runtime) -> Waveforms:
    """The app's waveform cache, made on first use."""
    with _made:
        found = getattr(app.state, "waveforms", None)
        if found is None:
            found = app.state.waveforms = Waveforms(
                store=runtime.store,
                catalog=runtime.catalog,
                work_dir=runtime.settings.data_dir / "work",
                entries=CACHED_RECORDINGS,
            )
        return found


@router.get(
    "/api/recordings/{recording_id}/waveform",
    responses={
        403: {"description": "another creator's recording"},
        404: {"description": "no such recording"},
        410: {"description": "the recording expired or was taken down"},
    },
)
async def recording_waveform(
    recording_id: PathId,
    creator: CurrentCreator,
    runtime: RuntimeDep,
    request: Request,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 1000,
) -> WaveformOut:
    """Peaks of the recording's audio for drawing (its room's creator only): at most `points`
    values over the whole recording so far, each `seconds_per_point` long."""

    def build() -> WaveformOut:
        own_playable(runtime, recording_id, creator)
        fine, duration_s = waveforms_of(request.app, runtime).of(recording_id)
        values, factor = downsample(fine, points=points)
        return WaveformOut(
            duration_s=round(duration_s, 3),
            points=[round(float(v), 4) for v in values],
            seconds_per_point=factor / FINE_POINTS_PER_SECOND,
        )

    return await store_work(runtime, build)


@router.get(
    "/api/recordings/{recording_id}/lanes",
    responses={
        403: {"description": "another creator's recording"},
        404: {"description": "no such recording"},
        410: {"description": "the recording expired or was taken down"},
    },
)
async def recording_lanes(
    recording_id: PathId, creator: CurrentCreator, runtime: RuntimeDep
) -> LanesOut:
    """Who spoke when, for the studio's lanes (its room's creator only): one lane per host
    recorded in it, with their speaker turns on the timeline the waveform and clips use (the
    mix). A recording with one host and no turns has no lanes."""

    def build() -> LanesOut:
        own_playable(runtime, recording_id, creator)
        catalog = runtime.catalog
        lanes = {
            s.seat: LaneOut(seat=s.seat, host=s.name, turns=[])
            for s in catalog.recording_seats(recording_id)
            if s.recorded
        }
        for turn in catalog.timeline_turns(recording_id):
            lane = lanes.setdefault(turn.seat, LaneOut(seat=turn.seat, host=turn.host, turns=[]))
            lane.turns.append(TurnSpan(start_s=round(turn.start_s, 3), end_s=round(turn.end_s, 3)))
        if len(lanes) < 2 and not any(lane.turns for lane in lanes.values()):
            return LanesOut(lanes=[])
        return LanesOut(lanes=[lanes[seat] for seat in sorted(lanes)])

    return await catalog_work(runtime, build)
