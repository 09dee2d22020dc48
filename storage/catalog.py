"""The catalog: the database side of storage, and the queries the rest of afterlive uses.

Time is injected (`now`) so expiry and audit can be tested with a fake clock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import RetentionConflict, StorageError
from storage.models import (
    AuditEvent,
    Base,
    Clip,
    Creator,
    Episode,
    Job,
    Programme,
    Recording,
    RecordingSeat,
    Rendition,
    Room,
    Segment,
    SpeakerTurn,
    new_id,
    new_stream_key,
)
from storage.seats import SeatQueries

log = logging.getLogger(__name__)

ROOM_KINDS = ("audio", "video")
# What viewers may list and play: a recording with media, live or ended, not yet expired.
PUBLIC_STATUSES = ("live", "ended")
# Gone for good: the objects are deleted, the row stays for 410 answers and the audit.
GONE = ("expired", "taken_down")
# A job in one of these states reads its recording: the recording must not be deleted under it.
ACTIVE_JOBS = ("queued", "running")
# The rendition every recording has; its segments measure a single host's recording.
SOURCE = "source"
# A room with hosts: every host's audio mixed; it measures the recording instead.
MIX = "mix"


@dataclass(frozen=True, kw_only=True)
class RecordingView:
    """A recording as viewers see it: with its host's name."""

    recording: Recording
    host: str


class RecordingGone(StorageError):
    """The recording expired or was taken down (the API answers 410)."""


class JobLimitReached(Exception):
    """A creator has as many jobs queued or running as the queue takes from one creator (the
    API answers 429). Not a StorageError: the catalog is fine, the creator has to wait."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(
            f"you have {active} clip and episode jobs queued or running, the most the queue "
            f"takes from one creator ({limit}); retry when one has finished"
        )
        self.active = active
        self.limit = limit


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Catalog(SeatQueries):
    def __init__(
        self,
        url: str,
        *,
        now: Callable[[], datetime] = utcnow,
        job_pin_max: timedelta | None = None,
    ) -> None:
        self.url = url
        self.now = now
        # A queued job pins its recording against expiry for at most this long (None: as long
        # as it waits); a running one pins it until it ends.
        self.job_pin_max = job_pin_max
        self.engine = _engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables, and add columns that a newer afterlive brought to an older
        catalog (additive changes only; a rename or a type change needs a real migration)."""
        try:
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"catalog at {_safe_url(self.url)}: cannot create schema: {exc}"
            ) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def _get(self, model: type[Base], key: str) -> Any:
        with self.session() as s:
            return s.get(model, key)

    def _update(self, model: type[Base], key: str, fields: dict[str, Any]) -> Any:
        """Set fields of one row; KeyError if there is none."""
        with self.session() as s:
            row = s.get(model, key)
            if row is None:
                raise KeyError(key)
            for name, value in fields.items():
                setattr(row, name, value)
        return row

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageError(f"catalog at {_safe_url(self.url)} did not answer: {exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # -- creators -------------------------------------------------------------------------------

    def add_creator(self, name: str) -> tuple[Creator, str]:
        """Register a creator; returns it and its bearer token (shown once, stored hashed)."""
        name = name.strip()
        if not name:
            raise ValueError("creator name must not be empty")
        token = secrets.token_urlsafe(32)
        creator = Creator(
            id=new_id(), name=name, token_hash=hash_token(token), created_at=self.now()
        )
        try:
            with self.session() as s:
                s.add(creator)
        except IntegrityError as exc:
            raise ValueError(f"a creator named {name!r} already exists") from exc
        return creator, token

    def creator_by_token(self, token: str) -> Creator | None:
        with self.session() as s:
            return s.scalar(select(Creator).where(Creator.token_hash == hash_token(token)))

    def creators(self) -> Sequence[Creator]:
        with self.session() as s:
            return s.scalars(select(Creator).order_by(Creator.created_at)).all()

    # -- rooms ----------------------------------------------------------------------------------

    def add_room(self, *, creator_id: str, title: str, kind: str) -> Room:
        if kind not in ROOM_KINDS:
            raise ValueError(f"room kind must be one of {ROOM_KINDS}, not {kind!r}")
        room_id = new_id()
        room = Room(
            id=room_id,
            creator_id=creator_id,
            title=title,
            kind=kind,
            stream_key=new_stream_key(room_id),
            created_at=self.now(),
        )
        with self.session() as s:
            s.add(room)
        return room

    def room(self, room_id: str) -> Room | None:
        return self._get(Room, room_id)

    def room_by_stream_key(self, stream_key: str) -> Room | None:
        room_id, sep, _ = stream_key.partition("-")
        if not sep:
            return None
        with self.session() as s:
            room = s.get(Room, room_id)
        if room is None or not hmac.compare_digest(room.stream_key.encode(), stream_key.encode()):
            return None
        return room

    def rooms_of(self, creator_id: str) -> Sequence[Room]:
        with self.session() as s:
            return s.scalars(
                select(Room).where(Room.creator_id == creator_id).order_by(Room.created_at)
            ).all()

    def rotate_stream_key(self, room_id: str) -> Room:
        """Give the room a new key; the old one stops working at once."""
        with self.session() as s:
            room = s.get(Room, room_id)
            if room is None:
                raise KeyError(room_id)
            room.stream_key = new_stream_key(room_id)
            room.key_rotated_at = self.now()
        return room

    # -- recordings -----------------------------------------------------------------------------

    def start_recording(self, room_id: str) -> Recording:
        with self.session() as s:
            room = s.get(Room, room_id)
            if room is None:
                raise KeyError(room_id)
            recording = Recording(
                id=new_id(),
                room_id=room.id,
                title=room.title,
                kind=room.kind,
                status="live",
                started_at=self.now(),
            )
            s.add(recording)
        return recording

    def end_recording(
        self, recording_id: str, *, retention: timedelta, ended_at: datetime | None = None
    ) -> Recording:
        """Close a live recording; its expiry clock starts when it ended (default: now).

        Ending twice changes nothing.
        """
        with self.session() as s:
            recording = s.get(Recording, recording_id)
            if recording is None:
                raise KeyError(recording_id)
            if recording.status == "live":
                recording.status = "ended"
                recording.ended_at = ended_at or self.now()
                recording.expires_at = recording.ended_at + retention
        return recording

    def discard_recording(self, recording_id: str) -> bool:
        """Remove a recording that never got a segment (its media was refused or never came).

        Viewers must not find empty replays. Returns False, changing nothing, if it has segments.
        """
        with self.session() as s:
            if s.scalar(select(Segment.id).where(Segment.recording_id == recording_id).limit(1)):
                return False
            recording = s.get(Recording, recording_id)
            if recording is None:
                return False
            s.execute(sa_delete(RecordingSeat).where(RecordingSeat.recording_id == recording_id))
            s.delete(recording)
        return True

    def recording(self, recording_id: str) -> Recording | None:
        return self._get(Recording, recording_id)

    def recordings(
        self,
        *,
        status: str | None = None,
        room_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[Recording]:
        """Newest first."""
        query = select(Recording).order_by(Recording.started_at.desc(), Recording.id)
        if status:
            query = query.where(Recording.status == status)
        if room_id:
            query = query.where(Recording.room_id == room_id)
        with self.session() as s:
            return s.scalars(query.limit(limit).offset(offset)).all()

    def public_recordings(
        self,
        *,
        status: str | None = None,
        room_id: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[RecordingView], int]:
        """A page of what viewers can watch, newest first, and how many there are in all.

        A recording appears once it has a segment: a live that has not yet sent a keyframe has
        nothing to play.
        """
        statuses = (status,) if status else PUBLIC_STATUSES
        where = [Recording.status.in_(statuses), Recording.object_count > 0]
        if room_id:
            where.append(Recording.room_id == room_id)
        query = (
            select(Recording, Creator.name)
            .join(Room, Room.id == Recording.room_id)
            .join(Creator, Creator.id == Room.creator_id)
            .where(*where)
            .order_by(Recording.started_at.desc(), Recording.id)
            .limit(limit)
            .offset(offset)
        )
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(Recording).where(*where)) or 0
            rows = s.execute(query).all()
        return [RecordingView(recording=rec, host=host) for rec, host in rows], total

    def recording_view(self, recording_id: str) -> RecordingView | None:
        query = (
            select(Recording, Creator.name)
            .join(Room, Room.id == Recording.room_id)
            .join(Creator, Creator.id == Room.creator_id)
            .where(Recording.id == recording_id)
        )
        with self.session() as s:
            row = s.execute(query).first()
            if row is None:
                return None
        return RecordingView(recording=row[0], host=row[1])

    def recordings_expiring_before(self, moment: datetime) -> Sequence[Recording]:
        """Ended, not held, not yet deleted, with `expires_at` at or before `moment`."""
        query = (
            select(Recording)
            .where(
                Recording.status == "ended",
                Recording.held.is_(False),
                Recording.expires_at.is_not(None),
                Recording.expires_at <= moment,
            )
            .order_by(Recording.expires_at)
        )
        with self.session() as s:
            return s.scalars(query).all()

    # -- retention ------------------------------------------------------------------------------

    def due_for_deletion(
        self, moment: datetime, *, lease: timedelta = timedelta(0)
    ) -> list[Recording]:
        """What the sweeper must delete at `moment`: deletions claimed at least `lease` ago and
        not finished (a crash, a store outage) first, then ended recordings past `expires_at`
        that are not held and not pinned by a clip job reading them."""
        pinned = select(Job.recording_id).where(self._pins(moment))
        resume = (
            select(Recording)
            .where(
                Recording.status == "deleting",
                Recording.delete_started_at <= moment - lease,
            )
            .order_by(Recording.delete_started_at)
        )
        due = (
            select(Recording)
            .where(
                Recording.status == "ended",
                Recording.held.is_(False),
                Recording.expires_at.is_not(None),
                Recording.expires_at <= moment,
                Recording.id.not_in(pinned),
            )
            .order_by(Recording.expires_at)
        )
        with self.session() as s:
            return [*s.scalars(resume).all(), *s.scalars(due).all()]

    def begin_deletion(self, recording_id: str, *, reason: str, actor: str) -> Recording:
        """Claim a recording for deletion: viewers get 410 from now on, and a crash resumes it.

        An expiry claims only what is still due (ended, not held, not pinned, past expiry: it may
        have been held or extended since it was found); a takedown claims anything not yet gone.
        Raises RetentionConflict when the recording is not (or no longer) to be deleted.
        """
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None:
                raise KeyError(recording_id)
            if recording.status == "deleting":
                return recording
            if recording.status in GONE:
                raise RetentionConflict(f"recording {recording_id} is already {recording.status}")
            if reason == "expire":
                now = self.now()
                due = (
                    recording.status == "ended"
                    and not recording.held
                    and recording.expires_at is not None
                    and recording.expires_at <= now
                    and not self._pinned(s, recording_id, now)
                )
                if not due:
                    raise RetentionConflict(f"recording {recording_id} is not due for expiry")
            recording.status = "deleting"
            recording.delete_reason = reason
            recording.delete_actor = actor
            recording.delete_started_at = self.now()
        return recording

    def deletion_keys(self, recording_id: str) -> list[tuple[str, int]]:
        """The indexed objects of a recording (its segments) with their sizes."""
        query = select(Segment.key, Segment.size_bytes).where(Segment.recording_id == recording_id)
        with self.session() as s:
            return [(key, size) for key, size in s.execute(query)]

    def finish_deletion(
        self, recording_id: str, *, objects_deleted: int, bytes_deleted: int, detail: dict
    ) -> AuditEvent:
        """The recording is gone: its final status and its audit entry, in one transaction, so
        a resumed sweep never writes a second entry. The segment index goes with it."""
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None or recording.status != "deleting":
                raise RetentionConflict(f"recording {recording_id} is not being deleted")
            now = self.now()
            final = "expired" if recording.delete_reason == "expire" else "taken_down"
            recording.status = final
            recording.deleted_at = now
            s.execute(sa_delete(Segment).where(Segment.recording_id == recording_id))
            # Who sat in it goes with its media: names are personal data, not audit.
            s.execute(sa_delete(RecordingSeat).where(RecordingSeat.recording_id == recording_id))
            s.execute(sa_delete(SpeakerTurn).where(SpeakerTurn.recording_id == recording_id))
            event_ = AuditEvent(
                at=now,
                actor=recording.delete_actor or "sweeper",
                action=recording.delete_reason or "expire",
                recording_id=recording_id,
                objects_deleted=objects_deleted,
                bytes_deleted=bytes_deleted,
                detail=detail,
            )
            s.add(event_)
        return event_

    def hold(self, recording_id: str, *, actor: str, reason: str = "") -> Recording:
        """A legal or moderation hold: no expiry until released."""

        def apply(recording: Recording) -> dict[str, Any]:
            recording.held = True
            return {"reason": reason} if reason else {}

        return self._retention_change(recording_id, "hold", actor, apply)

    def release(self, recording_id: str, *, actor: str, grace: timedelta) -> Recording:
        """End a hold. The recording expires at the later of its `expires_at` and now + grace,
        so a release never makes it vanish under a viewer at once."""

        def apply(recording: Recording) -> dict[str, Any]:
            if not recording.held:
                raise RetentionConflict(f"recording {recording_id} is not held")
            recording.held = False
            if recording.expires_at is not None:
                recording.expires_at = max(recording.expires_at, self.now() + grace)
            return {"expires_at": _iso(recording.expires_at)}

        return self._retention_change(recording_id, "release", actor, apply)

    def extend(self, recording_id: str, *, actor: str, by: timedelta) -> Recording:
        def apply(recording: Recording) -> dict[str, Any]:
            if recording.expires_at is None:
                raise RetentionConflict(
                    f"recording {recording_id} is still live: its expiry starts when it ends"
                )
            before = recording.expires_at
            recording.expires_at = before + by
            return {
                "hours": by.total_seconds() / 3600,
                "from": _iso(before),
                "to": _iso(recording.expires_at),
            }

        return self._retention_change(recording_id, "extend", actor, apply)

    def _retention_change(
        self,
        recording_id: str,
        action: str,
        actor: str,
        apply: Callable[[Recording], dict[str, Any]],
    ) -> Recording:
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None:
                raise KeyError(recording_id)
            if recording.status in (*GONE, "deleting"):
                raise RetentionConflict(
                    f"recording {recording_id} is {recording.status}: too late to {action}"
                )
            detail = apply(recording)
            s.add(
                AuditEvent(
                    at=self.now(),
                    actor=actor,
                    action=action,
                    recording_id=recording_id,
                    detail=detail,
                )
            )
        return recording

    def _pins(self, moment: datetime) -> Any:
        """Jobs that pin their recording at `moment`: running ones, and queued ones that have
        not waited longer than `job_pin_max` (a flood of queued jobs must not keep recordings
        from expiring for ever)."""
        queued_pins = Job.status == "queued"
        if self.job_pin_max is not None:
            queued_pins = and_(queued_pins, Job.created_at > moment - self.job_pin_max)
        return and_(Job.recording_id.is_not(None), or_(Job.status == "running", queued_pins))

    def _pinned(self, s: Session, recording_id: str, moment: datetime) -> bool:
        query = select(Job.id).where(Job.recording_id == recording_id, self._pins(moment))
        return s.scalar(query.limit(1)) is not None

    def retention_listing(
        self,
        *,
        expiring_before: datetime | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[RecordingView], int]:
        """Recordings as admins see them: any status, soonest expiry first."""
        where = []
        if expiring_before is not None:
            where += [Recording.expires_at.is_not(None), Recording.expires_at <= expiring_before]
        if status:
            where.append(Recording.status == status)
        query = (
            select(Recording, Creator.name)
            .join(Room, Room.id == Recording.room_id)
            .join(Creator, Creator.id == Room.creator_id)
            .where(*where)
            .order_by(Recording.expires_at.is_(None), Recording.expires_at, Recording.id)
            .limit(limit)
            .offset(offset)
        )
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(Recording).where(*where)) or 0
            rows = s.execute(query).all()
        return [RecordingView(recording=rec, host=host) for rec, host in rows], total

    def set_rendition(
        self,
        *,
        recording_id: str,
        name: str,
        playlist_key: str,
        codecs: str = "",
        bandwidth: int = 0,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        """Create or replace a recording's rendition (the recorder saves them with a segment's
        index row instead: `add_segments`)."""
        fields = {
            "recording_id": recording_id,
            "name": name,
            "playlist_key": playlist_key,
            "codecs": codecs,
            "bandwidth": bandwidth,
            "width": width,
            "height": height,
        }
        with self.engine.begin() as conn:
            _upsert_rendition(conn, fields)

    def renditions(self, recording_id: str) -> Sequence[Rendition]:
        with self.session() as s:
            return s.scalars(
                select(Rendition)
                .where(Rendition.recording_id == recording_id)
                .order_by(Rendition.id)
            ).all()

    def timeline_rendition(self, recording_id: str) -> str:
        """The rendition whose segments are the recording's timeline, what clips cut and the
        studio shows: the mix of a room with hosts, else the source."""
        with self.session() as s:
            mixed = s.scalar(
                select(Rendition.id).where(
                    Rendition.recording_id == recording_id, Rendition.name == MIX
                )
            )
        return MIX if mixed is not None else SOURCE

    # -- clips and jobs -------------------------------------------------------------------------

    def start_clip(
        self,
        *,
        creator_id: str,
        recording_id: str,
        title: str,
        start_s: float,
        end_s: float,
        seat: int | None = None,
        job_limit: int | None = None,
    ) -> tuple[Clip, Job]:
        """A clip and the job that cuts it, in one transaction with the check that the
        recording can still be read: the job pins it against expiry from the same commit.
        JobLimitReached when the creator already has `job_limit` jobs queued or running."""
        with self.session() as s:
            _check_job_limit(s, creator_id, job_limit)
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None:
                raise KeyError(recording_id)
            if recording.status not in ("live", "ended"):
                raise RecordingGone(
                    f"recording {recording_id} is {recording.status}: nothing left to clip"
                )
            now = self.now()
            if (
                recording.status == "ended"
                and not recording.held
                and (recording.expires_at is not None and recording.expires_at <= now)
            ):
                raise RetentionConflict(
                    f"recording {recording_id} expired at {recording.expires_at:%H:%M:%S} UTC "
                    "and is being deleted"
                )
            clip_id, job_id = new_id(), new_id()
            clip = Clip(
                id=clip_id,
                creator_id=creator_id,
                recording_id=recording_id,
                title=title,
                start_s=start_s,
                end_s=end_s,
                seat=seat,
                status="queued",
                prefix=f"clips/{clip_id}/",
                job_id=job_id,
                created_at=now,
            )
            job = Job(
                id=job_id,
                kind="clip",
                status="queued",
                progress=0,
                recording_id=recording_id,
                creator_id=creator_id,
                payload={"clip_id": clip_id},
                created_at=now,
            )
            s.add_all([clip, job])
        return clip, job

    def clip(self, clip_id: str) -> Clip | None:
        return self._get(Clip, clip_id)

    def clips_of(self, creator_id: str, *, limit: int = 100) -> Sequence[Clip]:
        query = (
            select(Clip)
            .where(Clip.creator_id == creator_id)
            .order_by(Clip.created_at.desc(), Clip.id)
            .limit(limit)
        )
        with self.session() as s:
            return s.scalars(query).all()

    def job(self, job_id: str) -> Job | None:
        return self._get(Job, job_id)

    def clip_and_job(self, clip_id: str) -> tuple[Clip, Job | None] | None:
        with self.session() as s:
            clip = s.get(Clip, clip_id)
            if clip is None:
                return None
            return clip, (s.get(Job, clip.job_id) if clip.job_id else None)

    def unfinished_jobs(self, kind: str) -> Sequence[Job]:
        query = (
            select(Job)
            .where(Job.kind == kind, Job.status.in_(ACTIVE_JOBS))
            .order_by(Job.created_at)
        )
        with self.session() as s:
            return s.scalars(query).all()

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Set job fields (status, progress, result, error...); the clip follows its status."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            for name, value in fields.items():
                setattr(job, name, value)
            if "status" in fields:
                _follow_status(s, job)
        return job

    def claim_job(self, kind: str) -> Job | None:
        """The next queued job of `kind` to run, marked running; None when none waits.

        Fair across creators: the creator with the fewest jobs of this kind running goes first,
        then the one served least recently (its latest start), then the oldest job; each
        creator's own jobs run in the order they came. So one creator's twenty jobs take
        turns with another's one instead of going before it. (On PostgreSQL this becomes a
        `FOR UPDATE SKIP LOCKED` claim; here the catalog's one writer serialises claims.)"""
        now = self.now()
        with self.session() as s:
            active = s.scalars(
                select(Job)
                .where(Job.kind == kind, Job.status.in_(ACTIVE_JOBS))
                .order_by(Job.created_at, Job.id)
            ).all()
            first: dict[str | None, Job] = {}
            running: dict[str | None, int] = {}
            for job in active:
                if job.status == "running":
                    running[job.creator_id] = running.get(job.creator_id, 0) + 1
                else:
                    first.setdefault(job.creator_id, job)
            if not first:
                return None
            served = dict(
                s.execute(
                    select(Job.creator_id, func.max(Job.started_at))
                    .where(
                        Job.kind == kind,
                        Job.creator_id.in_([c for c in first if c is not None]),
                        Job.started_at.is_not(None),
                    )
                    .group_by(Job.creator_id)
                ).all()
            )
            never = datetime.min.replace(tzinfo=UTC)
            job = min(
                first.values(),
                key=lambda j: (
                    running.get(j.creator_id, 0),
                    served.get(j.creator_id) or never,
                    j.created_at,
                ),
            )
            job.status, job.progress, job.started_at = "running", 0, now
            _follow_status(s, job)
        return job

    def requeue_running_jobs(self, kind: str) -> int:
        """Jobs a stopped process left running go back to the queue (they run again from the
        start); how many there are queued now."""
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.kind == kind, Job.status == "running")
                .values(status="queued", progress=0)
            )
            for job in s.scalars(select(Job).where(Job.kind == kind, Job.status == "queued")):
                _follow_status(s, job)
            return (
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.kind == kind, Job.status == "queued")
                )
                or 0
            )

    # -- programmes and episodes -----------------------------------------------------------------

    def add_programme(self, *, creator_id: str, **fields: Any) -> Programme:
        programme = Programme(id=new_id(), creator_id=creator_id, created_at=self.now(), **fields)
        with self.session() as s:
            s.add(programme)
        return programme

    def programme(self, programme_id: str) -> Programme | None:
        return self._get(Programme, programme_id)

    def programmes_of(self, creator_id: str) -> Sequence[Programme]:
        query = (
            select(Programme)
            .where(Programme.creator_id == creator_id)
            .order_by(Programme.created_at, Programme.id)
        )
        with self.session() as s:
            return s.scalars(query).all()

    def update_programme(self, programme_id: str, **fields: Any) -> Programme:
        return self._update(Programme, programme_id, fields)

    def delete_programme(self, programme_id: str) -> None:
        """The programme, its episodes and their jobs' rows (the caller deletes the objects)."""
        with self.session() as s:
            episodes = s.scalars(select(Episode).where(Episode.programme_id == programme_id))
            for episode in episodes.all():
                s.delete(episode)
            programme = s.get(Programme, programme_id)
            if programme is not None:
                s.delete(programme)

    def start_episode(
        self,
        *,
        programme_id: str,
        title: str,
        description: str,
        recipe: dict[str, Any],
        creator_id: str | None = None,
        job_limit: int | None = None,
    ) -> tuple[Episode, Job]:
        """An episode and the job that renders it; JobLimitReached as for `start_clip`."""
        with self.session() as s:
            _check_job_limit(s, creator_id, job_limit)
            numbers = s.scalars(
                select(Episode.number).where(Episode.programme_id == programme_id)
            ).all()
            episode_id, job_id = new_id(), new_id()
            now = self.now()
            episode = Episode(
                id=episode_id,
                programme_id=programme_id,
                title=title,
                description=description,
                status="queued",
                number=max((n or 0 for n in numbers), default=0) + 1,
                job_id=job_id,
                recipe=recipe,
                created_at=now,
            )
            job = Job(
                id=job_id,
                kind="episode",
                status="queued",
                progress=0,
                creator_id=creator_id,
                payload={"episode_id": episode_id},
                created_at=now,
            )
            s.add_all([episode, job])
        return episode, job

    def episode(self, episode_id: str) -> Episode | None:
        return self._get(Episode, episode_id)

    def episodes_of(self, programme_id: str) -> Sequence[Episode]:
        query = (
            select(Episode)
            .where(Episode.programme_id == programme_id)
            .order_by(Episode.created_at, Episode.id)
        )
        with self.session() as s:
            return s.scalars(query).all()

    def update_episode(self, episode_id: str, **fields: Any) -> Episode:
        return self._update(Episode, episode_id, fields)

    # -- segments -------------------------------------------------------------------------------

    def add_segment(
        self,
        *,
        recording_id: str,
        rendition: str,
        sequence: int,
        start_at: datetime,
        duration_s: float,
        key: str,
        size_bytes: int,
        discontinuity: bool = False,
    ) -> None:
        """Index an uploaded segment and count it into its recording's size. KeyError if the
        recording is gone, IntegrityError if the segment is indexed already."""
        row = {
            "recording_id": recording_id,
            "rendition": rendition,
            "sequence": sequence,
            "start_at": start_at,
            "duration_s": duration_s,
            "key": key,
            "size_bytes": size_bytes,
            "discontinuity": discontinuity,
        }
        error = self.add_segments([row])[0]
        if error is not None:
            raise error

    def add_segments(self, rows: Sequence[dict[str, Any]]) -> list[BaseException | None]:
        """Index many uploaded segments in one transaction (the recorder's group commit).

        Rows take `add_segment`'s arguments, and optionally `renditions`: `set_rendition`'s
        arguments for the renditions the segment's master playlist announces, saved in the same
        transaction (a live's first segments bring them: one commit per room was a queue of 300
        under a ramp of 300 publishes). Core statements, not the ORM: the unit of work cost
        more than the insert itself. If the batch fails (a row indexed before a crash, or whose
        recording is gone), each row is tried on its own so one bad row never loses the others.
        Returns one outcome per row: None, or the row's error (IntegrityError, KeyError).
        """
        if not rows:
            return []
        try:
            self._insert_segments(rows)
            return [None] * len(rows)
        except IntegrityError:
            if len(rows) == 1:
                return [_missing_or(self, rows[0])]
        outcomes: list[BaseException | None] = []
        for row in rows:
            try:
                self._insert_segments([row])
                outcomes.append(None)
            except IntegrityError:
                outcomes.append(_missing_or(self, row))
        return outcomes

    def _insert_segments(self, rows: Sequence[dict[str, Any]]) -> None:
        totals: dict[str, dict[str, Any]] = {}
        renditions: list[dict[str, Any]] = []
        rows = [dict(row) for row in rows]  # the caller's rows keep their extra keys
        for row in rows:
            renditions += row.pop("renditions", ())
        for row in rows:
            total = totals.get(row["recording_id"])
            if total is None:
                total = totals[row["recording_id"]] = {
                    "rid": row["recording_id"],
                    "n": 0,
                    "size": 0,
                    "media_s": 0.0,
                }
            total["n"] += 1
            total["size"] += row["size_bytes"]
            # The recorder says which rendition measures the recording (the mix of a room with
            # hosts); rows from before it said so measure by the source.
            if row.pop("timeline", row["rendition"] == SOURCE):
                total["media_s"] += row["duration_s"]
        with self.engine.begin() as conn:
            for rendition in renditions:
                _upsert_rendition(conn, rendition)
            conn.execute(_INSERT_SEGMENT, [{"discontinuity": False} | row for row in rows])
            done = conn.execute(_COUNT_SEGMENTS, list(totals.values()))
            # SQLite checks foreign keys only when they are on: a gone recording updates nothing.
            if done.rowcount != len(totals):
                raise IntegrityError("segments", list(totals), KeyError("recording"))

    def find_segments(
        self,
        recording_id: str,
        rendition: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Sequence[Segment]:
        """Segments that overlap [start, end), in order. Serves playback and clipping alike."""
        query = select(Segment).where(
            Segment.recording_id == recording_id, Segment.rendition == rendition
        )
        if end is not None:
            query = query.where(Segment.start_at < end)
        with self.session() as s:
            segments = s.scalars(query.order_by(Segment.sequence)).all()
        if start is not None:
            # Overlap needs start_at + duration > start: computed here, as date arithmetic is
            # not portable SQL. The end bound above already keeps the set small.
            segments = [
                seg for seg in segments if seg.start_at + timedelta(seconds=seg.duration_s) > start
            ]
        return segments

    # -- audit ----------------------------------------------------------------------------------

    def audit(
        self,
        *,
        actor: str,
        action: str,
        recording_id: str | None = None,
        objects_deleted: int = 0,
        bytes_deleted: int = 0,
        detail: dict[str, Any] | None = None,
    ) -> AuditEvent:
        event_ = AuditEvent(
            at=self.now(),
            actor=actor,
            action=action,
            recording_id=recording_id,
            objects_deleted=objects_deleted,
            bytes_deleted=bytes_deleted,
            detail=detail or {},
        )
        with self.session() as s:
            s.add(event_)
        return event_

    def audit_log(
        self, *, recording_id: str | None = None, limit: int = 100
    ) -> Sequence[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if recording_id:
            query = query.where(AuditEvent.recording_id == recording_id)
        with self.session() as s:
            return s.scalars(query).all()


def _check_job_limit(s: Session, creator_id: str | None, limit: int | None) -> None:
    if limit is None or creator_id is None:
        return
    # Lock the creator's row first (a write that changes nothing): the count and the insert
    # after it are then one step for that creator, here (the process's one SQLite writer) and
    # on PostgreSQL (a row lock) alike. Counted first, twenty requests at once all got in.
    s.execute(update(Creator).where(Creator.id == creator_id).values(id=Creator.id))
    active = s.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.creator_id == creator_id, Job.status.in_(ACTIVE_JOBS))
    )
    if active is not None and active >= limit:
        raise JobLimitReached(active, limit)


def _follow_status(s: Session, job: Job) -> None:
    """A clip's or an episode's status follows its job's."""
    if job.kind == "clip":
        clip = s.get(Clip, job.payload.get("clip_id"))
        if clip is not None:
            clip.status = job.status
            if "duration_s" in job.result:
                clip.duration_s = job.result["duration_s"]
    elif job.kind == "episode":
        episode = s.get(Episode, job.payload.get("episode_id"))
        if episode is not None:
            episode.status = job.status


def _add_missing_columns(engine: Engine) -> None:
    existing = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {column["name"] for column in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                default = column.default.arg if column.default is not None else None
                if not column.nullable:
                    if default is None or callable(default):
                        raise StorageError(
                            f"catalog: column {table.name}.{column.name} is new and has no "
                            "default; this upgrade needs a migration"
                        )
                    literal = int(default) if isinstance(default, bool) else default
                    ddl += f" NOT NULL DEFAULT {literal!r}"
                conn.execute(text(ddl))
                log.warning("catalog: added column %s.%s", table.name, column.name)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# Built once: building and hashing the statement cost more than running it, per segment.
_INSERT_SEGMENT = insert(Segment)
_COUNT_SEGMENTS = (
    update(Recording)
    .where(Recording.id == bindparam("rid"))
    .values(
        object_count=Recording.object_count + bindparam("n"),
        byte_count=Recording.byte_count + bindparam("size"),
        media_s=Recording.media_s + bindparam("media_s"),
    )
)


def _upsert_rendition(conn: Connection, fields: dict[str, Any]) -> None:
    """Create or replace a rendition (`set_rendition`'s arguments) in the caller's transaction."""
    fields = {"codecs": "", "bandwidth": 0, "width": None, "height": None} | fields
    where = (Rendition.recording_id == fields["recording_id"]) & (Rendition.name == fields["name"])
    changed = conn.execute(update(Rendition).where(where).values(**fields))
    if changed.rowcount == 0:
        conn.execute(insert(Rendition).values(**fields))


def _missing_or(catalog: Catalog, row: dict[str, Any]) -> BaseException:
    """The error of a segment row that would not insert: its recording is gone, or it is
    indexed already (a spool replayed after a crash)."""
    if catalog._get(Recording, row["recording_id"]) is None:
        return KeyError(row["recording_id"])
    return IntegrityError("segments", row["key"], ValueError("indexed already"))


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the recorder writes; FKs are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        _serialize_writes(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


# Statements that read: a connection takes the write lock at its first statement of any other
# kind (INSERT, UPDATE, DELETE, DDL).
_READS = ("SELECT", "PRAGMA", "WITH")


def _serialize_writes(engine: Engine) -> None:
    """One writer at a time in this process, queued on a lock rather than in SQLite.

    SQLite lets one connection write at a time; the others wait in its busy handler, which
    *sleeps* (1, 2, 5 ... 100 ms at a time) instead of being woken when the writer is done.
    Under the ramp of 300 publishes, index and rendition inserts on upload threads spent up to
    550 ms each asleep there (124 statements over 20 ms, 10.5 s in all, in 3 s), and the
    segments they index became visible seconds late. A connection takes this lock at its first
    writing statement and gives it back when it returns to the pool (after its commit or
    rollback); WAL readers never take it. Another process writing the same file (the CLI) still
    meets the busy handler.
    """
    lock = threading.RLock()

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        info = conn.info
        if not info.get("writing") and not statement.lstrip()[:6].upper().startswith(_READS):
            lock.acquire()
            info["writing"] = True

    @event.listens_for(engine.pool, "checkin")
    def _give_back(_dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.info.pop("writing", False):
            lock.release()


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"
