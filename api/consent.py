"""Consent: one host removed from an ended recording, by its creator or an admin.

A job (it pins the recording against expiry while it runs) makes the room mix again from the
other seats' own audio (`transcode.remix`) under new keys, switches the catalog over in one
transaction (the seat's segments, renditions and speaker turns gone, the new mix in, the audit
entry with what was deleted), and only then deletes the seat's objects and the old mix's.
The composite grid (api/composite.py), which shows the host, is dropped in the same
transaction, its objects deleted with theirs and counted with them, and the master playlist
goes back to the mix; with AFTERLIVE_ROOM_COMPOSITE=after a job then makes it again from the
other seats. Until
the switch, viewers play the recording as it was; after it, nothing of the host is listed or
stored, and clips cut from then on are cut from the new mix. Clips made before are the
creator's own, kept as they are (README, "Live Rooms").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from api.composite import write_master
from api.jobmedia import download_all, store_made
from api.jobs import JobRunner
from storage import keys as K
from storage.catalog import MIX, Catalog
from storage.models import Job
from storage.seats import GRID, seat_rendition
from storage.store import ObjectStore
from transcode.mix import PRIMING_S
from transcode.playlists import DateRange
from transcode.remix import Stem, StemSegment, remix
from transcode.segmenter import SegmentClosed

log = logging.getLogger(__name__)


class HostRemovals:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        work_dir: Path,
        segment_s: float,
        on_removed: Callable[[str], object] | None = None,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.segment_s = segment_s
        # After a removal: the recording's id, to make its composite grid again without them.
        self.on_removed = on_removed
        # Told the recording whose playlists changed (the playback cache drops its copies).
        self.on_changed = on_changed
        self.jobs = JobRunner(
            catalog=catalog, kind="remove_host", work=self._work, work_dir=work_dir
        )

    def start(self, recording_id: str, seat: int, *, actor: str, creator_id: str | None) -> Job:
        job = self.catalog.start_host_removal(
            recording_id, seat, actor=actor, creator_id=creator_id
        )
        self.jobs.submit(job.id)
        log.info(
            "recording %s: removal of seat %d queued by %s (job %s)",
            recording_id,
            seat,
            actor,
            job.id,
        )
        return job

    def resume(self) -> int:
        return self.jobs.resume()

    def close(self) -> None:
        self.jobs.close()

    # -- the job ---------------------------------------------------------------------------------

    def _work(self, job: Job, work: Path, progress: Callable[[float], None]) -> dict[str, Any]:
        recording_id, seat = job.recording_id, job.payload["seat"]
        assert recording_id is not None
        recording = self.catalog.recording(recording_id)
        assert recording is not None
        gone = [
            seg for segs in self.catalog.seat_segments(recording_id, seat).values() for seg in segs
        ]
        old_mix = list(self.catalog.find_segments(recording_id, MIX))
        # The composite grid shows the host: it is dropped with them (and made again after).
        old_grid = list(self.catalog.find_segments(recording_id, GRID))
        gone += old_grid
        mix_rows: list[dict[str, Any]] = []
        if old_mix:
            mix_rows = self._mix_again(recording_id, seat, old_mix, recording.ended_at, work)
        progress(0.8)
        doomed = [(s.key, s.size_bytes) for s in gone + old_mix]
        event = self.catalog.remove_seat_from_recording(
            recording_id,
            seat,
            mix_rows=mix_rows,
            actor=job.payload["actor"],
            objects_deleted=len(gone),
            bytes_deleted=sum(s.size_bytes for s in gone),
        )
        # After the switch: nothing lists these any more.
        self.store.delete_many(key for key, _ in doomed)
        for name in {s.rendition for s in gone}:
            self.store.delete_prefix(f"{K.recording_prefix(recording_id)}{name}/")
        if old_mix:
            # Whatever grid there was is gone, even one a composite job stored meanwhile (its
            # catalog switch is refused: the seat is no longer recorded); the master is the mix.
            self.store.delete_prefix(f"{K.recording_prefix(recording_id)}{GRID}/")
            write_master(self.catalog, self.store, recording_id)
        if self.on_changed is not None:
            self.on_changed(recording_id)
        if self.on_removed is not None and old_mix and recording.kind == "video":
            self.on_removed(recording_id)  # the grid again, from the others
        log.info(
            "recording %s: seat %d removed by %s: %d objects, %d bytes deleted",
            recording_id,
            seat,
            job.payload["actor"],
            event.objects_deleted,
            event.bytes_deleted,
        )
        return {
            "seat": seat,
            "objects_deleted": event.objects_deleted,
            "bytes_deleted": event.bytes_deleted,
        }

    def _mix_again(
        self, recording_id: str, seat: int, old_mix, ended_at, work: Path
    ) -> list[dict[str, Any]]:
        """The mix without `seat`, from the other recorded seats' audio, stored under new keys;
        its segment rows (not yet in the catalog)."""
        stems, downloads = [], []
        for other in self.catalog.recording_seats(recording_id):
            if other.seat == seat or not other.recorded:
                continue
            by_name = self.catalog.seat_segments(recording_id, other.seat)
            name = seat_rendition(other.seat, "audio")
            if name not in by_name:
                name = seat_rendition(other.seat, "source")  # a seat without a camera
            segments = []
            for seg in by_name.get(name, ()):
                path = work / "stems" / name / seg.key.rsplit("/", 1)[1]
                downloads.append((seg.key, path))
                segments.append(StemSegment(path=path, start_at=seg.start_at))
            stems.append(Stem(seat=other.seat, segments=segments))
        download_all(self.store, downloads, "remix")

        # The mix's first segment opens with the encoder's priming, dated before the mix's
        # start (`RoomMix.segment_start`): the new one starts where the old one did.
        first_at = old_mix[0].start_at
        start = first_at + timedelta(seconds=PRIMING_S)
        last = old_mix[-1]
        end = ended_at or last.start_at + timedelta(seconds=last.duration_s)
        made: list[SegmentClosed] = []
        remix(
            stems,
            directory=work / "mix",
            start=start,
            end=min(end, last.start_at + timedelta(seconds=last.duration_s)),
            target_s=self.segment_s,
            on_segment=made.append,
            first_sequence=last.sequence + 1,  # new keys: no cache anywhere holds the old mix
            label=f"recording {recording_id} remix",
        )
        rows, playlist = store_made(
            self.store, recording_id, MIX, made, first_at, playlist_type="EVENT", label="remix"
        )
        names = {s.seat: s.name for s in self.catalog.recording_seats(recording_id)}
        playlist.dateranges = [
            DateRange(
                id=f"turn-{n}",
                class_="com.afterlive.speaker",
                start=t.start_at,
                end=t.end_at,
                attributes={
                    "SEAT": float(t.seat),
                    "HOST": names.get(t.seat, "host").replace('"', "'"),
                },
            )
            for n, t in enumerate(
                (t for t in self.catalog.speaker_turns(recording_id) if t.seat != seat), 1
            )
        ]
        self.store.put_bytes(K.media_playlist(recording_id, MIX), playlist.render().encode())
        return rows
