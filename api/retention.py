"""Retention as admins drive it: hold, release, extend, take down, sweep now.

Each action is a catalog change with its audit entry; a takedown also stops a live publisher and
revokes its key before the sweeper's purge deletes the objects.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.recorder import Recorder
from storage import keys as K
from storage import lifecycle
from storage.catalog import Catalog
from storage.models import AuditEvent, Clip, Recording
from storage.store import ObjectStore
from storage.sweeper import Sweeper, SweepReport

log = logging.getLogger(__name__)

# A released hold never makes a recording vanish at once: at least this long is left.
RELEASE_GRACE = timedelta(hours=1)


class Retention:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        sweeper: Sweeper,
        recorder: Recorder,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.sweeper = sweeper
        self.recorder = recorder

    def hold(self, recording_id: str, *, actor: str, reason: str = "") -> Recording:
        # Objects first: if the store fails, the hold is not recorded and the admin retries,
        # rather than a hold the lifecycle safety net does not know about.
        self._retag(recording_id, lifecycle.HELD)
        return self.catalog.hold(recording_id, actor=actor, reason=reason)

    def release(self, recording_id: str, *, actor: str) -> Recording:
        recording = self.catalog.release(recording_id, actor=actor, grace=RELEASE_GRACE)
        self._retag(recording_id, lifecycle.EPHEMERAL)
        return recording

    def _retag(self, recording_id: str, value: str) -> None:
        if self.store.config.retention_tags:
            if self.catalog.recording(recording_id) is None:
                raise KeyError(recording_id)
            count = self.store.set_retention_tag(K.recording_prefix(recording_id), value)
            log.info("recording %s: %d objects tagged %s", recording_id, count, value)

    def extend(self, recording_id: str, *, actor: str, hours: float) -> Recording:
        return self.catalog.extend(recording_id, actor=actor, by=timedelta(hours=hours))

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        return self.sweeper.sweep(dry_run=dry_run)

    async def take_down(
        self, recording_id: str, *, actor: str, include_derived: bool = False
    ) -> AuditEvent:
        """Delete a recording now, live or not. A live one's publisher is disconnected and its
        key revoked first, so nothing is uploaded after the purge."""
        recording = await asyncio.to_thread(
            self.catalog.begin_deletion, recording_id, reason="takedown", actor=actor
        )
        if recording.status == "deleting" and recording.ended_at is None:
            await asyncio.to_thread(self.catalog.rotate_stream_key, recording.room_id)
            if await self.recorder.take_down(recording_id):
                log.warning("recording %s taken down while live by %s", recording_id, actor)
        derived = (
            await asyncio.to_thread(self._delete_clips, recording_id) if include_derived else 0
        )
        if await asyncio.to_thread(self.catalog.recording, recording_id) is None:
            # Discarded by the recorder as it ended: it never had a segment to delete.
            return await asyncio.to_thread(
                self.catalog.audit,
                actor=actor,
                action="takedown",
                recording_id=recording_id,
                detail={"discarded": "no media had been recorded"},
            )
        detail = {"derived_clips_deleted": derived} if include_derived else None
        return await asyncio.to_thread(self.sweeper.purge, recording_id, detail=detail)

    def _delete_clips(self, recording_id: str) -> int:
        """The clips cut from a recording, deleted with it when an admin says so."""
        with self.catalog.session() as s:
            clips = s.query(Clip).filter(Clip.recording_id == recording_id).all()
            for clip in clips:
                self.store.delete_prefix(clip.prefix or K.clip_prefix(clip.id))
                clip.status = "taken_down"
            return len(clips)


def start_scheduler(sweeper: Sweeper, *, interval_s: float) -> BackgroundScheduler:
    """The sweeper in the background: at start, then every `interval_s`. One run at a time; runs
    missed while one was slow are merged into one."""
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        sweeper.sweep,
        "interval",
        seconds=interval_s,
        id="sweep",
        name="retention sweep",
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    scheduler.start()
    return scheduler
