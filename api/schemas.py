"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class RoomCreate(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    kind: Literal["audio", "video"]


class RoomOut(BaseModel):
    id: str
    title: str
    kind: str
    created_at: datetime
    live: bool
    stream_key: str
    rtmp_url: str
    http_push_url: str


class PushResult(BaseModel):
    recording_id: str
    room_id: str
    bytes_received: int
    ended: str


class RecordingOut(BaseModel):
    id: str
    room_id: str
    title: str
    kind: Literal["audio", "video"]
    host: str = Field(description="the display name of the creator whose room it is")
    status: Literal["live", "ended"]
    started_at: datetime
    ended_at: datetime | None
    duration_s: float = Field(description="seconds of media recorded so far")
    expires_at: datetime | None = Field(description="when the replay is deleted; null while live")
    expires_in_s: int | None = Field(description="seconds until expiry, by the server's clock")
    playback_url: str = Field(description="master playlist for any HLS player")


class RenditionOut(BaseModel):
    name: str
    codecs: str
    bandwidth: int
    width: int | None
    height: int | None
    playlist_url: str


class RecordingDetail(RecordingOut):
    renditions: list[RenditionOut]


class RecordingPage(BaseModel):
    items: list[RecordingOut]
    total: int
    limit: int
    offset: int


class AdminRecording(BaseModel):
    id: str
    room_id: str
    title: str
    host: str
    status: str = Field(description="live, ended, deleting, expired or taken_down")
    held: bool
    started_at: datetime
    ended_at: datetime | None
    expires_at: datetime | None
    expires_in_s: int | None
    objects: int = Field(description="media segments stored (playlists not counted)")
    bytes: int
    delete_reason: str | None


class AdminRecordingPage(BaseModel):
    items: list[AdminRecording]
    total: int
    limit: int
    offset: int


class HoldIn(BaseModel):
    reason: str = Field("", max_length=500)


class ExtendIn(BaseModel):
    hours: float = Field(gt=0, le=24 * 366, description="added to the current expiry")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    recording_id: str | None
    objects_deleted: int
    bytes_deleted: int
    detail: dict


class SweepOut(BaseModel):
    dry_run: bool
    deleted: list[AuditOut]
    planned: list[dict]
    failed: dict[str, str]
    seconds: float


class ClipCreate(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    start_s: float | None = Field(None, description="seconds into the recording")
    end_s: float | None = None
    start_at: datetime | None = Field(None, description="or wall-clock times, with a time zone")
    end_at: datetime | None = None


class ClipSource(BaseModel):
    recording_id: str
    available: bool = Field(description="the recording still exists (it expires, the clip not)")
    playback_url: str | None


class ClipOut(BaseModel):
    id: str
    title: str
    status: Literal["queued", "running", "done", "failed", "taken_down"]
    progress: int = Field(description="0-100")
    error: str | None
    start_s: float
    end_s: float
    duration_s: float | None
    created_at: datetime
    status_url: str
    playback_url: str | None = Field(description="master playlist, once done")
    audio_url: str | None = Field(description="the clip's audio (AAC, .m4a), once done")
    source: ClipSource


class ProgrammeIn(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    description: str = Field("", max_length=4000)
    author: str = Field("", max_length=200)
    language: str = Field("en", pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
    explicit: bool = False
    category: str = Field("Society & Culture", max_length=100, description='e.g. "Technology"')


class ProgrammePatch(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=300)
    description: str | None = Field(None, max_length=4000)
    author: str | None = Field(None, max_length=200)
    language: str | None = Field(None, pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
    explicit: bool | None = None
    category: str | None = Field(None, max_length=100)


class ProgrammeOut(BaseModel):
    id: str
    title: str
    description: str
    author: str
    language: str
    explicit: bool
    category: str
    created_at: datetime
    artwork_url: str | None
    feed_url: str


class EpisodeIn(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    description: str = Field("", max_length=4000)
    clips: list[str] = Field(min_length=1, description="clip ids, in order")
    intro_clip: str | None = None
    outro_clip: str | None = None
    crossfade_s: float = Field(1.0, ge=0, le=10)


class EpisodeOut(BaseModel):
    id: str
    programme_id: str
    number: int | None
    title: str
    description: str
    status: str
    progress: int
    error: str | None
    duration_s: float | None
    published_at: datetime | None
    created_at: datetime
    audio_url: str | None = Field(description="the MP3 (the feed's enclosure)")
    m4a_url: str | None
    playback_url: str | None = Field(description="HLS audio for the web player")
    chapters: list[dict]
    recipe: dict | None


class StoreHealth(BaseModel):
    endpoint: str | None
    bucket: str
    embedded: bool
    ok: bool
    latency_ms: float = Field(description="how long the probe took (or was waited for)")
    error: str | None = None
    pid: int | None = Field(None, description="the embedded store's process, if it runs one")
    restarts: int | None = None


class CatalogHealth(BaseModel):
    backend: str
    ok: bool
    latency_ms: float
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    store: StoreHealth
    catalog: CatalogHealth
    detail: str | None = Field(None, description="what is down, when degraded (503)")
