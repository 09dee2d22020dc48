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
