"""Hosts and seats: who may publish into a room, and who sat in a recording.

A room has seats. Seat 1 is the room's creator, publishing with the room's key; seats 2 and up
are hosts the creator invited, each with a key of its own that publishes into that seat of that
room only. How many seats a room has is the caller's setting (`max_seats`), by room kind.

`SeatQueries` is the catalog's part for these rows (mixed into `storage.catalog.Catalog`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete as sa_delete
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from storage.errors import RetentionConflict, StorageError
from storage.models import (
    AuditEvent,
    Creator,
    Host,
    Job,
    Recording,
    RecordingSeat,
    Rendition,
    Room,
    Segment,
    SpeakerTurn,
    new_id,
    new_stream_key,
)
from storage.timeline import timeline_end, timeline_position

CREATOR_SEAT = 1
MAX_HOST_NAME = 100


class SeatsFull(StorageError):
    """Every seat of the room has a host (the API answers 409)."""


@dataclass(frozen=True, kw_only=True)
class Seat:
    """What a stream key publishes into: one seat of one room."""

    room: Room
    number: int
    name: str
    host_id: str | None  # None: the room's creator
    recorded: bool = True
    removed: bool = False  # the key of a host the creator removed from the room


@dataclass(frozen=True, kw_only=True)
class TimelineTurn:
    """A speaker turn in seconds into its recording's timeline."""

    seat: int
    host: str
    start_s: float
    end_s: float


def seat_rendition(seat: int, name: str) -> str:
    """A seat's rendition name: seat 1 records as a single-host room always has ("source",
    "audio", ladder rungs); seat n>1 under "hosts/n/"."""
    return name if seat == CREATOR_SEAT else f"hosts/{seat}/{name}"


# Renditions of the whole room, not of one seat: the live mix of every host's audio, and the
# composite grid video made after the live (AFTERLIVE_ROOM_COMPOSITE).
ROOM_RENDITIONS = ("mix", "grid")
GRID = "grid"
ROOM = 0  # their "seat"


def rendition_seat(rendition: str) -> tuple[int, str]:
    """The seat and the base name of a rendition ("hosts/2/audio" -> (2, "audio"); the room's
    own, "mix", -> (0, "mix"))."""
    parts = rendition.split("/")
    if len(parts) == 3 and parts[0] == "hosts" and parts[1].isdigit():
        return int(parts[1]), parts[2]
    if rendition in ROOM_RENDITIONS:
        return ROOM, rendition
    return CREATOR_SEAT, rendition


class SeatQueries:
    session: Callable[[], AbstractContextManager[Session]]
    now: Callable[[], datetime]

    def seat_by_stream_key(self, stream_key: str) -> Seat | None:
        """The seat a key publishes into, or None for a key that is no one's (or was rotated).

        Both kinds of key are "{id}-{secret}": the id finds the room or the host by primary key,
        the secret is compared in constant time."""
        owner_id, sep, _ = stream_key.partition("-")
        if not sep:
            return None
        with self.session() as s:
            room = s.get(Room, owner_id)
            if room is not None:
                if not _same(room.stream_key, stream_key):
                    return None
                creator = s.get(Creator, room.creator_id)
                name = creator.name if creator is not None else "host"
                return Seat(room=room, number=CREATOR_SEAT, name=name, host_id=None)
            host = s.get(Host, owner_id)
            if host is None or not _same(host.stream_key, stream_key):
                return None
            room = s.get(Room, host.room_id)
            if room is None:
                return None
            return Seat(
                room=room,
                number=host.seat,
                name=host.name,
                host_id=host.id,
                recorded=host.recorded,
                removed=host.removed_at is not None,
            )

    def add_host(self, room_id: str, *, name: str, max_seats: int, recorded: bool = True) -> Host:
        """Invite a host into the lowest free seat; SeatsFull when every seat has one."""
        name = _host_name(name)
        with self.session() as s:
            # The room's row lock serialises invitations: two at once cannot take one seat.
            room = s.get(Room, room_id, with_for_update=True)
            if room is None:
                raise KeyError(room_id)
            taken = {CREATOR_SEAT} | {h.seat for h in _present(s, room_id)}
            free = [n for n in range(CREATOR_SEAT + 1, max_seats + 1) if n not in taken]
            if not free:
                raise SeatsFull(
                    f"every seat of this {room.kind} room is taken ({max_seats} seats, the "
                    "creator's included); remove a host to invite another"
                )
            host_id = new_id()
            host = Host(
                id=host_id,
                room_id=room_id,
                seat=free[0],
                name=name,
                stream_key=new_stream_key(host_id),
                recorded=recorded,
                created_at=self.now(),
            )
            s.add(host)
        return host

    def hosts_of(self, room_id: str) -> Sequence[Host]:
        """The room's invited hosts (not removed), by seat."""
        with self.session() as s:
            return _present(s, room_id)

    def host(self, room_id: str, seat: int) -> Host | None:
        with self.session() as s:
            return next((h for h in _present(s, room_id) if h.seat == seat), None)

    def update_host(
        self, room_id: str, seat: int, *, name: str | None = None, recorded: bool | None = None
    ) -> Host:
        with self._host_row(room_id, seat) as host:
            if name is not None:
                host.name = _host_name(name)
            if recorded is not None:
                host.recorded = recorded
        return host

    def rotate_host_key(self, room_id: str, seat: int) -> Host:
        """A new key for the host; the old one stops working at once."""
        with self._host_row(room_id, seat) as host:
            host.stream_key = new_stream_key(host.id)
            host.key_rotated_at = self.now()
        return host

    def remove_host(self, room_id: str, seat: int) -> Host:
        """The host leaves the room: its key is refused from now on, its seat is free."""
        with self._host_row(room_id, seat) as host:
            host.removed_at = self.now()
        return host

    @contextmanager
    def _host_row(self, room_id: str, seat: int) -> Iterator[Host]:
        """The present host of a seat, changed and committed in one unit of work."""
        with self.session() as s:
            host = next((h for h in _present(s, room_id) if h.seat == seat), None)
            if host is None:
                raise KeyError(f"{room_id}/{seat}")
            yield host

    # -- who sat in a recording -----------------------------------------------------------------

    def seat_joined(self, recording_id: str, seat: Seat) -> None:
        """Remember a seat's host the first time it goes live in a recording."""
        with self.session() as s:
            if s.scalar(
                select(RecordingSeat.id).where(
                    RecordingSeat.recording_id == recording_id, RecordingSeat.seat == seat.number
                )
            ):
                return
            s.add(
                RecordingSeat(
                    recording_id=recording_id,
                    seat=seat.number,
                    host_id=seat.host_id,
                    name=seat.name,
                    recorded=seat.recorded,
                    joined_at=self.now(),
                )
            )

    def recording_seats(self, recording_id: str) -> Sequence[RecordingSeat]:
        with self.session() as s:
            return s.scalars(
                select(RecordingSeat)
                .where(RecordingSeat.recording_id == recording_id)
                .order_by(RecordingSeat.seat)
            ).all()

    # -- who spoke when -------------------------------------------------------------------------

    def add_speaker_turns(
        self, recording_id: str, turns: Sequence[tuple[int, datetime, datetime]]
    ) -> None:
        """Keep finished turns: (seat, start, end)."""
        with self.session() as s:
            s.add_all(
                SpeakerTurn(recording_id=recording_id, seat=seat, start_at=start, end_at=end)
                for seat, start, end in turns
            )

    def speaker_turns(self, recording_id: str, *, seat: int | None = None) -> Sequence[SpeakerTurn]:
        """A recording's turns in time order."""
        query = select(SpeakerTurn).where(SpeakerTurn.recording_id == recording_id)
        if seat is not None:
            query = query.where(SpeakerTurn.seat == seat)
        with self.session() as s:
            return s.scalars(query.order_by(SpeakerTurn.start_at, SpeakerTurn.seat)).all()

    def timeline_turns(self, recording_id: str) -> list[TimelineTurn]:
        """A recording's turns placed on its timeline (the rendition clips are cut from and
        the studio shows), with the host's name; turns past its stored end are left out (a
        live recording's newest), an end past it is cut there."""
        segments = self.find_segments(recording_id, self.timeline_rendition(recording_id))
        names = {s.seat: s.name for s in self.recording_seats(recording_id)}
        end_s = timeline_end(segments)
        placed = []
        for turn in self.speaker_turns(recording_id):
            start = timeline_position(segments, turn.start_at)
            if start is None:
                continue
            end = timeline_position(segments, turn.end_at)
            placed.append(
                TimelineTurn(
                    seat=turn.seat,
                    host=names.get(turn.seat, f"seat {turn.seat}"),
                    start_s=start,
                    end_s=end_s if end is None else end,
                )
            )
        return placed

    # -- a host removed from a recording (consent) ----------------------------------------------

    def seat_segments(self, recording_id: str, seat: int) -> dict[str, Sequence[Segment]]:
        """A seat's segments in a recording, by rendition (seat 0: the room's mix)."""
        with self.session() as s:
            names = s.scalars(
                select(Segment.rendition).where(Segment.recording_id == recording_id).distinct()
            ).all()
            return {
                name: s.scalars(
                    select(Segment)
                    .where(Segment.recording_id == recording_id, Segment.rendition == name)
                    .order_by(Segment.sequence)
                ).all()
                for name in names
                if rendition_seat(name)[0] == seat
            }

    def seat_removal(self, recording_id: str, seat: int) -> str | None:
        """ "removed" when the seat's host was removed from the recording (consent), "being
        removed" while that job waits or runs, else None."""
        with self.session() as s:
            events = s.scalars(
                select(AuditEvent).where(
                    AuditEvent.recording_id == recording_id, AuditEvent.action == "remove_host"
                )
            ).all()
            if any(e.detail.get("seat") == seat for e in events):
                return "removed"
            jobs = s.scalars(
                select(Job).where(
                    Job.recording_id == recording_id,
                    Job.kind == "remove_host",
                    Job.status.in_(("queued", "running")),
                )
            ).all()
        return "being removed" if any(j.payload.get("seat") == seat for j in jobs) else None

    def start_host_removal(
        self, recording_id: str, seat: int, *, actor: str, creator_id: str | None
    ) -> Job:
        """The job that removes a host from an ended recording, checked and recorded in one
        transaction (it pins the recording against expiry while it runs). KeyError: no such
        recording or nobody in that seat; RetentionConflict: not ended, or the seat is the
        only one recorded (take the recording down instead)."""
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None:
                raise KeyError(recording_id)
            if recording.status != "ended":
                raise RetentionConflict(
                    f"recording {recording_id} is {recording.status}: a host can be removed "
                    "from an ended recording (remove them from the room to cut a live off)"
                )
            seats = s.scalars(
                select(RecordingSeat).where(RecordingSeat.recording_id == recording_id)
            ).all()
            sat = next((r for r in seats if r.seat == seat), None)
            if sat is None or not sat.recorded:
                raise KeyError(f"{recording_id}/{seat}")
            if not any(r.recorded and r.seat != seat for r in seats):
                raise RetentionConflict(
                    f"seat {seat} is the only one recorded in {recording_id}: take the "
                    "recording down instead"
                )
            job = Job(
                id=new_id(),
                kind="remove_host",
                status="queued",
                progress=0,
                recording_id=recording_id,
                creator_id=creator_id,
                payload={"seat": seat, "actor": actor},
                created_at=self.now(),
            )
            s.add(job)
        return job

    # -- the composite grid (after the live) -------------------------------------------------

    def start_room_composite(self, recording_id: str) -> Job:
        """Queue the job that makes a recording's grid (it pins the recording while it runs)."""
        with self.session() as s:
            recording = s.get(Recording, recording_id)
            if recording is None:
                raise KeyError(recording_id)
            room = s.get(Room, recording.room_id)
            job = Job(
                id=new_id(),
                kind="composite",
                status="queued",
                progress=0,
                recording_id=recording_id,
                creator_id=room.creator_id if room is not None else None,
                payload={},
                created_at=self.now(),
            )
            s.add(job)
        return job

    def set_room_composite(
        self,
        recording_id: str,
        *,
        seats: Sequence[int],
        rows: Sequence[dict[str, Any]],
        rendition: dict[str, Any],
    ) -> list[str]:
        """In one transaction: the grid's segments become `rows` and its rendition `rendition`
        (`set_rendition`'s arguments), if the recording is still ended and every seat the grid
        was made from is still recorded (a host removed meanwhile must not come back in it:
        RetentionConflict). Returns the keys of the grid it replaced, to delete."""
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None or recording.status != "ended":
                raise RetentionConflict(f"recording {recording_id} is not an ended recording")
            recorded = set(
                s.scalars(
                    select(RecordingSeat.seat).where(
                        RecordingSeat.recording_id == recording_id,
                        RecordingSeat.recorded.is_(True),
                    )
                )
            )
            if not set(seats) <= recorded:
                raise RetentionConflict(
                    f"seat(s) {sorted(set(seats) - recorded)} of recording {recording_id} are no "
                    "longer recorded (removed while the grid was made): not kept"
                )
            where = (Segment.recording_id == recording_id) & (Segment.rendition == GRID)
            old = list(s.scalars(select(Segment.key).where(where)))
            s.execute(sa_delete(Segment).where(where))
            s.execute(
                sa_delete(Rendition).where(
                    Rendition.recording_id == recording_id, Rendition.name == GRID
                )
            )
            s.add(Rendition(**({"codecs": "", "bandwidth": 0} | rendition)))
            if rows:
                s.execute(insert(Segment), [{"discontinuity": False} | r for r in rows])
            count, size = s.execute(
                select(
                    func.count(Segment.id), func.coalesce(func.sum(Segment.size_bytes), 0)
                ).where(Segment.recording_id == recording_id)
            ).one()
            recording.object_count, recording.byte_count = count, size
        return old

    def remove_seat_from_recording(
        self,
        recording_id: str,
        seat: int,
        *,
        mix_rows: Sequence[dict[str, Any]],
        actor: str,
        objects_deleted: int,
        bytes_deleted: int,
    ) -> AuditEvent:
        """In one transaction: the seat's segments, renditions and speaker turns go, the mix's
        segments become `mix_rows` (the mix made again without the seat), who sat there is
        forgotten but for the seat number, the recording's totals are counted again, and the
        audit log says who did it and what was deleted."""
        with self.session() as s:
            recording = s.get(Recording, recording_id, with_for_update=True)
            if recording is None or recording.status != "ended":
                raise RetentionConflict(f"recording {recording_id} is not an ended recording")
            names = {
                name
                for name in s.scalars(
                    select(Rendition.name).where(Rendition.recording_id == recording_id)
                )
                if rendition_seat(name)[0] == seat
            } | {
                name
                for name in s.scalars(
                    select(Segment.rendition).where(Segment.recording_id == recording_id).distinct()
                )
                if rendition_seat(name)[0] == seat
            }
            gone = [*names, ROOM_RENDITIONS[0]] if mix_rows else [*names]
            # The grid shows the host: it goes too (the caller may make it again without them).
            if s.scalar(
                select(Rendition.id).where(
                    Rendition.recording_id == recording_id, Rendition.name == GRID
                )
            ):
                gone.append(GRID)
                names.add(GRID)
            s.execute(
                sa_delete(Segment).where(
                    Segment.recording_id == recording_id, Segment.rendition.in_(gone)
                )
            )
            s.execute(
                sa_delete(Rendition).where(
                    Rendition.recording_id == recording_id, Rendition.name.in_(names)
                )
            )
            s.execute(
                sa_delete(SpeakerTurn).where(
                    SpeakerTurn.recording_id == recording_id, SpeakerTurn.seat == seat
                )
            )
            if mix_rows:
                s.execute(insert(Segment), [{"discontinuity": False} | r for r in mix_rows])
            sat = s.scalar(
                select(RecordingSeat).where(
                    RecordingSeat.recording_id == recording_id, RecordingSeat.seat == seat
                )
            )
            if sat is not None:
                sat.name, sat.host_id, sat.recorded = "removed", None, False
            count, size = s.execute(
                select(
                    func.count(Segment.id), func.coalesce(func.sum(Segment.size_bytes), 0)
                ).where(Segment.recording_id == recording_id)
            ).one()
            timeline = ROOM_RENDITIONS[0] if mix_rows else "source"
            media = s.scalar(
                select(func.coalesce(func.sum(Segment.duration_s), 0.0)).where(
                    Segment.recording_id == recording_id, Segment.rendition == timeline
                )
            )
            recording.object_count, recording.byte_count = count, size
            recording.media_s = float(media)
            event = AuditEvent(
                at=self.now(),
                actor=actor,
                action="remove_host",
                recording_id=recording_id,
                objects_deleted=objects_deleted,
                bytes_deleted=bytes_deleted,
                detail={
                    "seat": seat,
                    "renditions": sorted(names),
                    "mix_made_again": bool(mix_rows),
                },
            )
            s.add(event)
        return event


def _present(s: Session, room_id: str) -> Sequence[Host]:
    return s.scalars(
        select(Host).where(Host.room_id == room_id, Host.removed_at.is_(None)).order_by(Host.seat)
    ).all()


def _same(stored: str, given: str) -> bool:
    return hmac.compare_digest(stored.encode(), given.encode())


def _host_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise ValueError("a host's name must not be empty")
    if len(name) > MAX_HOST_NAME:
        raise ValueError(f"a host's name has at most {MAX_HOST_NAME} characters")
    return name


__all__ = [
    "CREATOR_SEAT",
    "GRID",
    "Seat",
    "SeatQueries",
    "SeatsFull",
    "rendition_seat",
    "seat_rendition",
]
