"""Catalog tables: what afterlive knows about creators, rooms, recordings and what was made of them.

Portable SQL only (SQLite by default, PostgreSQL through the database URL): string ids made in
Python, timestamps stored as naive UTC and handed back timezone-aware, JSON through SQLAlchemy's
generic type.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    """A short random id: unguessable enough for URLs, readable in logs."""
    return secrets.token_hex(8)


def new_stream_key(owner_id: str) -> str:
    """A room's or a host's publish key. The owner's id in front lets a lookup by primary key
    find the row, then the secret part is compared in constant time: no timing leak through an
    index search on the secret."""
    return f"{owner_id}-{secrets.token_urlsafe(24)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (SQLite drops offsets)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Creator(Base):
    __tablename__ = "creators"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Only a hash of the bearer token is kept; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]

    rooms: Mapped[list[Room]] = relationship(back_populates="creator")


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    creator_id: Mapped[str] = mapped_column(ForeignKey("creators.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(10))  # "audio" | "video"
    stream_key: Mapped[str] = mapped_column(String(100), unique=True)
    key_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    creator: Mapped[Creator] = relationship(back_populates="rooms")
    recordings: Mapped[list[Recording]] = relationship(back_populates="room")


class Host(Base):
    """A host invited into a room: seat 2 and up (the room's creator holds seat 1 with the
    room's own key). A removed host keeps its row, so its key is refused in words, and frees
    its seat for the next invitation."""

    __tablename__ = "hosts"
    __table_args__ = (Index("ix_hosts_room_seat", "room_id", "seat"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id"))
    seat: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    # Like a room's key: "{host id}-{secret}", found by primary key, compared in constant time.
    stream_key: Mapped[str] = mapped_column(String(100), unique=True)
    # "Not recorded": the seat is live for the room, but nothing of it is stored or mixed.
    recorded: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    key_rotated_at: Mapped[datetime | None]
    removed_at: Mapped[datetime | None]


class RecordingSeat(Base):
    """Who sat in a recording's seats: the names as they were when each went live, so a
    recording keeps its hosts after they are renamed or removed from the room."""

    __tablename__ = "recording_seats"
    __table_args__ = (UniqueConstraint("recording_id", "seat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    seat: Mapped[int] = mapped_column(Integer)
    host_id: Mapped[str | None] = mapped_column(String(32))  # None: the room's creator
    name: Mapped[str] = mapped_column(String(200))
    recorded: Mapped[bool] = mapped_column(Boolean, default=True)
    joined_at: Mapped[datetime]


class SpeakerTurn(Base):
    """Who spoke when: a span of a recording in which one seat's host was speaking, detected
    from their own audio (several seats may speak at once)."""

    __tablename__ = "speaker_turns"
    __table_args__ = (Index("ix_speaker_turns_time", "recording_id", "start_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"))
    seat: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (
        Index("ix_recordings_status_started", "status", "started_at"),
        Index("ix_recordings_expires", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(10))
    # "live" -> "ended" -> "deleting" -> "expired" or "taken_down". "deleting" is the sweeper's
    # claim: the objects are going, viewers get 410, and a crash resumes from there.
    status: Mapped[str] = mapped_column(String(12), default="live")
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why and by whom a deletion was started ("expire" by "sweeper", "takedown" by an admin).
    delete_reason: Mapped[str | None] = mapped_column(String(20))
    delete_actor: Mapped[str | None] = mapped_column(String(200))
    # When the claim was made: a sweeper resumes only claims older than its lease, so it never
    # races a takedown still waiting for a live publisher's last uploads.
    delete_started_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    object_count: Mapped[int] = mapped_column(Integer, default=0)
    byte_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Seconds of media in the source rendition: what a viewer can play.
    media_s: Mapped[float] = mapped_column(Float, default=0.0)

    room: Mapped[Room] = relationship(back_populates="recordings")
    renditions: Mapped[list[Rendition]] = relationship(
        back_populates="recording", cascade="all, delete-orphan"
    )


class Rendition(Base):
    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("recording_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))  # "source", "audio", "720p", ...
    codecs: Mapped[str] = mapped_column(String(100), default="")
    bandwidth: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[int | None]
    height: Mapped[int | None]
    playlist_key: Mapped[str] = mapped_column(String(500))

    recording: Mapped[Recording] = relationship(back_populates="renditions")


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("recording_id", "rendition", "sequence"),
        Index("ix_segments_time", "recording_id", "rendition", "start_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"))
    rendition: Mapped[str] = mapped_column(String(40))
    sequence: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    discontinuity: Mapped[bool] = mapped_column(Boolean, default=False)
    key: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)


class Clip(Base):
    __tablename__ = "clips"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    creator_id: Mapped[str] = mapped_column(ForeignKey("creators.id"), index=True)
    # The source stays named after it expires: the clip remembers where it came from.
    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    # One host's video (with the room mix as its sound); None: the recording as it plays.
    seat: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    prefix: Mapped[str] = mapped_column(String(500))
    duration_s: Mapped[float | None] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(32))  # the job that cuts it
    created_at: Mapped[datetime]


class Programme(Base):
    __tablename__ = "programmes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    creator_id: Mapped[str] = mapped_column(ForeignKey("creators.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str] = mapped_column(String(20), default="en")
    explicit: Mapped[bool] = mapped_column(Boolean, default=False)
    # An Apple Podcasts category, e.g. "Society & Culture" or "Technology".
    category: Mapped[str] = mapped_column(String(100), default="Society & Culture")
    artwork_key: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]

    episodes: Mapped[list[Episode]] = relationship(back_populates="programme")


class Episode(Base):
    __tablename__ = "episodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(12), default="queued")
    audio_key: Mapped[str | None] = mapped_column(String(500))  # the MP3, the feed's enclosure
    audio_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    number: Mapped[int | None] = mapped_column(Integer)  # 1, 2, ... within the programme
    job_id: Mapped[str | None] = mapped_column(String(32))
    # What it is made of: {"clips": [...], "intro_clip": ..., "outro_clip": ..., "crossfade_s"}
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # After rendering: m4a/hls keys and sizes, chapters, loudness measured
    rendered: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    programme: Mapped[Programme] = relationship(back_populates="episodes")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(20))  # "clip" | "episode"
    status: Mapped[str] = mapped_column(String(12), default="queued")  # running, done, failed
    progress: Mapped[int] = mapped_column(Integer, default=0)  # 0-100
    # A running job that reads a recording pins it against expiry (a queued one, for at most
    # the catalog's `job_pin_max`).
    recording_id: Mapped[str | None] = mapped_column(ForeignKey("recordings.id"), index=True)
    # Whose job: the queue is fair across creators and limits what each has waiting.
    creator_id: Mapped[str | None] = mapped_column(String(32), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200))  # "sweeper", "admin", "creator:<id>"
    action: Mapped[str] = mapped_column(String(40))  # expire, hold, release, extend, takedown...
    recording_id: Mapped[str | None] = mapped_column(String(32), index=True)
    objects_deleted: Mapped[int] = mapped_column(Integer, default=0)
    bytes_deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
