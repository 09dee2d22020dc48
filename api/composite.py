"""The room picture for stock players: a job that makes a multi-host video recording's grid.

With `AFTERLIVE_ROOM_COMPOSITE=after`, once a video room's recording with a mix has ended (the
recorder's `on_ended`), a job (it pins the recording against expiry while it runs) downloads each
recorded seat's copied video segments and the mix, makes the `grid` rendition with
`transcode.composite` (one ffmpeg), stores its segments and playlist under the recording's
prefix (expiry deletes them with it), indexes them and its rendition in one transaction, and
writes the master playlist again: the grid (H.264 + the mix's AAC) first, the mix after it.
Stock players (ffmpeg, VLC, Safari) pick the grid and get a picture with the room's sound;
audio-only clients keep the mix.

Why after the live, not live: bench/composite.py measured the grid at 0.43-0.48 of a core per
4-host room (decoding four 720p30 hosts is most of it), which, held for a whole live, would cut
the rooms a node takes by several times; a job runs it one at a time, faster than real time.

A host removed from the recording (api/consent.py) takes the grid with them in the removal's
transaction; the removal then queues this job again, which makes the grid from the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import av

from api.jobmedia import download_all, store_made
from api.jobs import JobRunner
from storage import keys as K
from storage.catalog import MIX, Catalog
from storage.models import Job
from storage.seats import GRID, seat_rendition
from storage.store import ObjectStore
from transcode import composite as grid
from transcode.codecs import avc1_codec
from transcode.playlists import MasterPlaylist, Variant

log = logging.getLogger(__name__)

MODES = ("off", "after")


class RoomComposites:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        work_dir: Path,
        segment_s: float,
        size: tuple[int, int] = (640, 360),
        fps: int = 15,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.segment_s = segment_s
        self.size = size
        self.fps = fps
        # Told the recording whose playlists changed (the playback cache drops its copies).
        self.on_changed = on_changed
        self.jobs = JobRunner(catalog=catalog, kind="composite", work=self._work, work_dir=work_dir)

    def start(self, recording_id: str) -> Job:
        job = self.catalog.start_room_composite(recording_id)
        self.jobs.submit(job.id)
        log.info("recording %s: composite grid queued (job %s)", recording_id, job.id)
        return job

    def resume(self) -> int:
        return self.jobs.resume()

    def close(self) -> None:
        self.jobs.close()

    # -- the job ---------------------------------------------------------------------------------

    def _work(self, job: Job, work: Path, progress: Callable[[float], None]) -> dict[str, Any]:
        recording_id = job.recording_id
        assert recording_id is not None
        label = f"recording {recording_id} grid"
        mix = list(self.catalog.find_segments(recording_id, MIX))
        if not mix:
            return {"grid": False, "why": "the recording has no mix (a single-host room)"}
        with_video = {r.name for r in self.catalog.renditions(recording_id) if r.width and r.height}
        seats = [s for s in self.catalog.recording_seats(recording_id) if s.recorded]
        if len(seats) > grid.MAX_TILES:
            log.warning("%s: %d seats, the grid shows the first 4", label, len(seats))
            seats = seats[: grid.MAX_TILES]
        if not any(seat_rendition(s.seat, "source") in with_video for s in seats):
            return {"grid": False, "why": "no host sent video"}

        downloads: list[tuple[str, Path]] = []
        tiles = []
        for s in seats:
            name = seat_rendition(s.seat, "source")
            segments = []
            if name in with_video:
                for seg in self.catalog.find_segments(recording_id, name):
                    path = work / "seats" / str(s.seat) / seg.key.rsplit("/", 1)[1]
                    downloads.append((seg.key, path))
                    segments.append(
                        grid.VideoSegment(
                            path=path,
                            start_at=seg.start_at,
                            duration_s=seg.duration_s,
                            discontinuity=seg.discontinuity,
                        )
                    )
            tiles.append(grid.Seat(seat=s.seat, name=s.name, segments=segments))
        mix_paths = []
        for seg in mix:
            path = work / "mix" / seg.key.rsplit("/", 1)[1]
            downloads.append((seg.key, path))
            mix_paths.append(path)
        download_all(self.store, downloads, "grid")
        progress(0.2)

        start = mix[0].start_at
        end = mix[-1].start_at + timedelta(seconds=mix[-1].duration_s)
        # Numbered from the mix's first segment, which a removal makes again under new numbers:
        # a grid made again never reuses a key a cache may hold (with the removed host in it).
        old = self.catalog.find_segments(recording_id, GRID)
        first_sequence = max(mix[0].sequence, old[-1].sequence + 1 if old else 0)
        width, height = self.size
        made = grid.composite(
            tiles,
            mix_paths,
            start=start,
            end=end,
            directory=work / "grid",
            width=width,
            height=height,
            fps=self.fps,
            target_s=self.segment_s,
            first_sequence=first_sequence,
            label=label,
        )
        progress(0.9)

        rows, playlist = store_made(
            self.store, recording_id, GRID, made, start, playlist_type="VOD", label="grid"
        )
        self.store.put_bytes(K.media_playlist(recording_id, GRID), playlist.render().encode())
        peak = max(s.size_bytes * 8 / max(s.duration_s, self.segment_s / 2) for s in made)
        rendition = {
            "recording_id": recording_id,
            "name": GRID,
            "playlist_key": K.media_playlist(recording_id, GRID),
            "codecs": _codecs(made[0].path),
            "bandwidth": int(peak * 1.1),
            "width": width,
            "height": height,
        }
        try:
            replaced = self.catalog.set_room_composite(
                recording_id, seats=[t.seat for t in tiles], rows=rows, rendition=rendition
            )
        except Exception:
            self.store.delete_many(r["key"] for r in rows)  # nothing lists them
            raise
        write_master(self.catalog, self.store, recording_id)
        self.store.delete_many(key for key in replaced if key not in {r["key"] for r in rows})
        if self.on_changed is not None:
            self.on_changed(recording_id)
        log.info("%s: %d segments stored for seats %s", label, len(rows), [t.seat for t in tiles])
        return {
            "grid": True,
            "seats": [t.seat for t in tiles],
            "segments": len(rows),
            "bytes": sum(r["size_bytes"] for r in rows),
        }


def write_master(catalog: Catalog, store: ObjectStore, recording_id: str) -> None:
    """A mixed recording's master playlist from its catalog renditions: the grid first (when
    there is one: stock players take the first, or the highest, variant with video), then the
    mix. Called after the grid is made or dropped."""
    by_name = {r.name: r for r in catalog.renditions(recording_id)}
    variants = [
        Variant(
            uri=f"{r.name}/index.m3u8",
            bandwidth=max(1, r.bandwidth),
            codecs=r.codecs,
            resolution=(r.width, r.height) if r.width and r.height else None,
            frame_rate=None,
            name=r.name,
        )
        for name in (GRID, MIX)
        if (r := by_name.get(name)) is not None
    ]
    if variants:
        store.put_bytes(
            K.master_playlist(recording_id), MasterPlaylist(variants=variants).render().encode()
        )


def _codecs(path: Path) -> str:
    """RFC 6381 codecs of a grid segment, for its variant: H.264 from the SPS in its first video
    packet (MPEG-TS carries it in-band), and the mix's AAC-LC (ADTS has no AudioSpecificConfig
    to read; the mix is always AAC-LC, `transcode.mix`)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packet = next(p for p in container.demux(stream) if p.size)
        return f"{avc1_codec(bytes(packet))},mp4a.40.2"
