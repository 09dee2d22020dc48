"""Request and response bodies of the API, the one error shape, and the types that check what a
peer sends (ids, names, text, times, numbers) before anything else sees it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

# What an id, a stream key and a rendition name look like (storage.models.new_id, the
# catalog's stream keys, the recorder's renditions): anything else is refused at the edge with a
# 422, so no NUL or "/" reaches a store key or a catalog query.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
STREAM_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
RENDITION_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
# Text a person wrote (titles, descriptions): anything but control characters (tab and line
# breaks are fine). A pattern also refuses unpaired surrogates, which no database can store.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# The words a 422 uses for each pattern (api/edge.py).
PATTERN_WORDS = {
    ID_PATTERN: "an id: 1-64 letters, digits, '-' or '_'",
    STREAM_KEY_PATTERN: "a stream key: 1-128 letters, digits, '-' or '_'",
    RENDITION_PATTERN: "a rendition name such as source, audio or 720p",
    TEXT_PATTERN: "text without control characters",
}
# Far past any listing, far below the 2^63 where a database's integer ends.
MAX_OFFSET = 1_000_000_000

PathId = Annotated[str, Path(pattern=ID_PATTERN)]
RenditionName = Annotated[str, Path(pattern=RENDITION_PATTERN)]
StreamKey = Annotated[str, Path(pattern=STREAM_KEY_PATTERN)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once read as UTC") from None


# A moment in time from a peer: with a time zone (a naive time means nothing across machines),
# read as UTC, and within the years a datetime can hold.
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]


def _text(max_length: int, *, min_length: int = 0) -> Any:
    return Field(min_length=min_length, max_length=max_length, pattern=TEXT_PATTERN)


class Peer(BaseModel):
    """A body a peer sends: numbers are finite (NaN and Infinity are valid JSON to Python)."""

    model_config = ConfigDict(allow_inf_nan=False)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='where, e.g. ["body", "start_at"]')
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error the API answers (4xx, 5xx) has this shape."""

    detail: str = Field(description="what was wrong, in words, and what to do about it")
    errors: list[FieldError] | None = Field(
        None, description="each invalid part of the request (422 for a malformed request only)"
    )


class RoomCreate(Peer):
    title: str = _text(300, min_length=1)
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


class HostCreate(Peer):
    name: str = _text(100, min_length=1)
    recorded: bool = Field(
        True,
        description="false: the host is live in the room, but nothing of them is stored "
        "or mixed (a 'not recorded' tile on the page)",
    )


class HostUpdate(Peer):
    name: str | None = Field(None, min_length=1, max_length=100, pattern=TEXT_PATTERN)
    recorded: bool | None = None


class HostOut(BaseModel):
    seat: int = Field(description="1 is the room's creator (the room's own key); hosts 2 and up")
    name: str
    recorded: bool
    live: bool = Field(description="publishing into the room now")
    creator: bool = Field(description="the room's creator: its key is the room's stream key")
    stream_key: str | None = Field(None, description="the host's own publish key")
    rtmp_url: str | None = None
    http_push_url: str | None = None


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
    seat: int = Field(
        1, description="whose: 1 is the room's creator, 2 and up its hosts, 0 the room's mix"
    )


class RecordingSeatOut(BaseModel):
    seat: int
    name: str = Field(description="the host's name when they went live")
    recorded: bool = Field(description="false: live in the room, nothing of them stored")
    joined_at: datetime


class SpeakerTurnOut(BaseModel):
    seat: int
    host: str = Field(description="the host's name in that seat when they went live")
    start_at: datetime
    end_at: datetime
    start_s: float = Field(description="seconds from the recording's start")
    end_s: float


class HostRemovalOut(BaseModel):
    job_id: str
    recording_id: str
    seat: int
    status: str = Field(description="of the job: queued, running, done, failed")


class RecordingDetail(RecordingOut):
    renditions: list[RenditionOut]
    hosts: list[RecordingSeatOut] = Field(
        default_factory=list, description="who sat in the room's seats, by seat"
    )


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


class HoldIn(Peer):
    reason: str = Field("", max_length=500, pattern=TEXT_PATTERN)


class ExtendIn(Peer):
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


class ClipCreate(Peer):
    title: str = _text(300, min_length=1)
    start_s: float | None = Field(None, description="seconds into the recording")
    end_s: float | None = None
    start_at: Moment | None = Field(None, description="or wall-clock times, with a time zone")
    end_at: Moment | None = None
    seat: int | None = Field(
        None,
        ge=1,
        le=64,
        description="one host's video (their seat), with the room mix as its sound; "
        "none: the recording as it plays",
    )


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
    seat: int | None = Field(description="the seat whose video this clip shows, if one")
    host: str | None = Field(description="that seat's host, as named when they went live")
    created_at: datetime
    status_url: str
    playback_url: str | None = Field(description="master playlist, once done")
    audio_url: str | None = Field(description="the clip's audio (AAC, .m4a), once done")
    source: ClipSource


class ProgrammeIn(Peer):
    title: str = _text(300, min_length=1)
    description: str = Field("", max_length=4000, pattern=TEXT_PATTERN)
    author: str = Field("", max_length=200, pattern=TEXT_PATTERN)
    language: str = Field("en", pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
    explicit: bool = False
    category: str = Field(
        "Society & Culture", max_length=100, pattern=TEXT_PATTERN, description='e.g. "Technology"'
    )


class ProgrammePatch(Peer):
    title: str | None = Field(None, min_length=1, max_length=300, pattern=TEXT_PATTERN)
    description: str | None = Field(None, max_length=4000, pattern=TEXT_PATTERN)
    author: str | None = Field(None, max_length=200, pattern=TEXT_PATTERN)
    language: str | None = Field(None, pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
    explicit: bool | None = None
    category: str | None = Field(None, max_length=100, pattern=TEXT_PATTERN)


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


ClipId = Annotated[str, Field(pattern=ID_PATTERN)]


class EpisodeIn(Peer):
    title: str = _text(300, min_length=1)
    description: str = Field("", max_length=4000, pattern=TEXT_PATTERN)
    clips: list[ClipId] = Field(min_length=1, max_length=500, description="clip ids, in order")
    intro_clip: ClipId | None = None
    outro_clip: ClipId | None = None
    crossfade_s: float = Field(1.0, ge=0, le=10)
    chapters: Literal["clips", "speakers"] = Field(
        "clips",
        description="one chapter per clip, or one per speaker turn (titled with the host's "
        "name) in clips of recordings whose speaker turns are still kept",
    )


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
