"""The retention sweeper: deletes every object of a recording once it expires, or on a takedown.

A deletion is a small state machine in the catalog, so a crash anywhere is finished by the next
sweep and audited exactly once:

1. claim: `status = "deleting"` (viewers get 410 from here on). A claim older than the lease
   (2 min) that is not finished is resumed by the next sweep;
2. purge: the indexed segments in batches of 1,000 keys, several batches in flight, then a
   listing of the recording's prefix for whatever the index does not know (playlists,
   thumbnails, a late upload). Deleting a key twice is harmless: S3 reports it deleted;
3. finish: final status, the segment index dropped and one audit entry, in one transaction.

Counts in the audit are the objects and bytes the recording held: its indexed segments plus what
the final listing found. A sweep resumed after a crash counts the index again (it is dropped
only at step 3), so the audit is the same as if nothing had happened, except for un-indexed
objects a crashed first pass had already deleted (a few playlists).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from storage import keys as K
from storage.catalog import Catalog, RetentionConflict, utcnow
from storage.errors import StorageError
from storage.models import AuditEvent, Recording
from storage.store import DELETE_BATCH, ObjectStore

log = logging.getLogger(__name__)

# Recordings purged side by side, their delete batches sharing the sweeper's workers.
RECORDINGS_AT_ONCE = 2


@dataclass(kw_only=True)
class Planned:
    recording_id: str
    reason: str
    expires_at: datetime | None
    objects: int
    bytes: int


@dataclass(kw_only=True)
class SweepReport:
    expired: list[AuditEvent] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # recording id -> error
    planned: list[Planned] = field(default_factory=list)  # dry run: what would go
    seconds: float = 0.0

    @property
    def objects_deleted(self) -> int:
        return sum(event.objects_deleted for event in self.expired)

    @property
    def bytes_deleted(self) -> int:
        return sum(event.bytes_deleted for event in self.expired)


class Sweeper:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        now: Callable[[], datetime] = utcnow,
        workers: int = 4,
        lease: timedelta = timedelta(minutes=2),
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.now = now
        self.workers = workers
        # A claim younger than this belongs to someone still working on it (a takedown waiting
        # for a live publisher's last uploads, a concurrent sweep): leave it to them.
        self.lease = lease

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """Delete everything due now; resume deletions a crash cut short. Never raises for one
        recording: a store error leaves it claimed ("deleting") for the next sweep."""
        t0 = time.monotonic()
        report = SweepReport()
        due = self.catalog.due_for_deletion(self.now(), lease=self.lease)
        if dry_run:
            report.planned = [
                Planned(
                    recording_id=recording.id,
                    reason=recording.delete_reason or "expire",
                    expires_at=recording.expires_at,
                    objects=recording.object_count,
                    bytes=recording.byte_count,
                )
                for recording in due
            ]
            return report
        # Recordings overlap: a 1-hour recording is only two 1,000-key batches, so one at a
        # time would leave most of the batch workers idle while it lists and finishes.
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="sweep") as batches,
            ThreadPoolExecutor(RECORDINGS_AT_ONCE, thread_name_prefix="sweep-rec") as each,
        ):
            outcomes = [(r, each.submit(self._expire, r, batches)) for r in due]
            for recording, outcome in outcomes:
                try:
                    report.expired.append(outcome.result())
                except RetentionConflict as exc:
                    # Held, extended or pinned since it was found: not due any more.
                    log.info("sweep: %s", exc)
                except StorageError as exc:
                    report.failed[recording.id] = str(exc)
                    log.warning(
                        "sweep: recording %s not deleted yet, will retry: %s", recording.id, exc
                    )
        report.seconds = time.monotonic() - t0
        if report.expired or report.failed:
            log.info(
                "sweep: %d recording(s) deleted (%d objects, %d bytes), %d failed, in %.1f s",
                len(report.expired),
                report.objects_deleted,
                report.bytes_deleted,
                len(report.failed),
                report.seconds,
            )
        return report

    def _expire(self, recording: Recording, batches: ThreadPoolExecutor) -> AuditEvent:
        if recording.status != "deleting":
            self.catalog.begin_deletion(recording.id, reason="expire", actor="sweeper")
        return self.purge(recording.id, pool=batches)

    def purge(
        self,
        recording_id: str,
        *,
        detail: dict | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> AuditEvent:
        """Delete a claimed recording's objects and record it (with `detail` in the audit entry).
        Idempotent; resumable. `pool` runs the delete batches (default: one of its own)."""
        indexed = self.catalog.deletion_keys(recording_id)
        objects = len(indexed)
        size = sum(n for _, n in indexed)
        batches = [
            [key for key, _ in indexed[i : i + DELETE_BATCH]]
            for i in range(0, len(indexed), DELETE_BATCH)
        ]
        if batches and pool is not None:
            list(pool.map(self.store.delete_many, batches))
        elif batches:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="sweep") as own:
                list(own.map(self.store.delete_many, batches))
        # Whatever the index does not name: playlists, init segments, thumbnails, late uploads.
        rest = list(self.store.list(K.recording_prefix(recording_id)))
        if rest:
            self.store.delete_many(info.key for info in rest)
            objects += len(rest)
            size += sum(info.size for info in rest)
        event = self.catalog.finish_deletion(
            recording_id,
            objects_deleted=objects,
            bytes_deleted=size,
            detail={"prefix": K.recording_prefix(recording_id)} | (detail or {}),
        )
        log.info(
            "recording %s %s by %s: %d objects, %d bytes deleted",
            recording_id,
            "expired" if event.action == "expire" else "taken down",
            event.actor,
            objects,
            size,
        )
        return event
