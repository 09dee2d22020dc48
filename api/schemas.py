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
