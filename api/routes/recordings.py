"""Recordings, for viewers: what is live, what can be replayed, and the playlists to play them.

Public: anyone may list and play recordings that are live or ended and not yet expired. An
expired or removed recording answers 410 Gone with when and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import HTTPException, Query, Request, Response
from fastapi import Path as FastPath

from api.deps import CurrentCreator, RuntimeDep, api_link, catalog_work, store_work
from api.edge import edge_router
from api.playback import PLAYLIST_TYPE, Playlist
from api.schemas import (
    ID_PATTERN,
    HostRemovalOut,
    Offset,
    PathId,
    RecordingDetail,
    RecordingOut,
    RecordingPage,
    RecordingSeatOut,
    RenditionName,
    RenditionOut,
    SpeakerTurnOut,
)
from storage.catalog import RecordingView, RetentionConflict
from storage.models import Rendition
from storage.seats import CREATOR_SEAT, ROOM, rendition_seat, seat_rendition

router = edge_router(prefix="/api/recordings", tags=["recordings"])

# Smaller playlists are not worth compressing (a master, a short live).
GZIP_MIN_BYTES = 4096

_PLAYLIST_RESPONSES = {
    200: {
        "content": {PLAYLIST_TYPE: {"schema": {"type": "string"}}},
        "description": "an HLS playlist",
    },
    404: {"description": "no such recording, or no media yet"},
    410: {"description": "the recording expired or was removed"},
}
_GONE = {404: {"description": "no such recording"}, 410: {"description": "expired or removed"}}


def recording_out(
    view: RecordingView, request: Request, now: datetime, base: str | None = None
) -> RecordingOut:
    """`base`: this API's recordings URL, to build playback URLs without a route lookup each
    (absolute URLs come from the settings, never from the request's Host: `api_link`)."""
    rec = view.recording
    expires_in = None
    if rec.expires_at is not None:
        expires_in = max(0, int((rec.expires_at - now).total_seconds()))
    return RecordingOut(
        id=rec.id,
        room_id=rec.room_id,
        title=rec.title,
        kind=rec.kind,
        host=view.host,
        status=rec.status,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        duration_s=round(rec.media_s, 3),
        expires_at=rec.expires_at,
        expires_in_s=expires_in,
        playback_url=(
            f"{base}/{rec.id}/master.m3u8"
            if base
            else api_link(request, "master_playlist", recording_id=rec.id)
        ),
    )


@router.get("")
async def list_recordings(
    runtime: RuntimeDep,
    request: Request,
    status: Literal["live", "ended"] | None = None,
    room_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Offset = 0,
) -> RecordingPage:
    """Live and replayable recordings, newest first; `status` narrows to one of them."""
    query = {"status": status, "room_id": room_id, "limit": limit, "offset": offset}
    page = runtime.playback.page(**query)
    if page is None:
        page = await catalog_work(runtime, runtime.playback.read_page, **query)
    views, total = page
    now = runtime.catalog.now()
    base = api_link(request, "master_playlist", recording_id="-").removesuffix("/-/master.m3u8")
    return RecordingPage(
        items=[recording_out(view, request, now, base) for view in views],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{recording_id}", responses=_GONE)
async def get_recording(
    recording_id: PathId, runtime: RuntimeDep, request: Request
) -> RecordingDetail:
    view = await catalog_work(runtime, runtime.playback.recording, recording_id)
    renditions = await catalog_work(runtime, runtime.catalog.renditions, recording_id)
    seats = await catalog_work(runtime, runtime.catalog.recording_seats, recording_id)
    out = recording_out(view, request, runtime.catalog.now())
    return RecordingDetail(
        **out.model_dump(),
        renditions=[_rendition_out(request, recording_id, r) for r in renditions],
        hosts=[
            RecordingSeatOut(seat=s.seat, name=s.name, recorded=s.recorded, joined_at=s.joined_at)
            for s in seats
        ],
    )


@router.get("/{recording_id}/speakers", responses=_GONE)
async def speakers(recording_id: PathId, runtime: RuntimeDep) -> list[SpeakerTurnOut]:
    """Who spoke when: each host's speaker turns, in time order (several hosts may speak at
    once). A live recording lists the turns finished so far."""
    view = await catalog_work(runtime, runtime.playback.recording, recording_id)
    seats = await catalog_work(runtime, runtime.catalog.recording_seats, recording_id)
    turns = await catalog_work(runtime, runtime.catalog.speaker_turns, recording_id)
    names = {s.seat: s.name for s in seats}
    start = view.recording.started_at
    return [
        SpeakerTurnOut(
            seat=t.seat,
            host=names.get(t.seat, f"seat {t.seat}"),
            start_at=t.start_at,
            end_at=t.end_at,
            start_s=round((t.start_at - start).total_seconds(), 3),
            end_s=round((t.end_at - start).total_seconds(), 3),
        )
        for t in turns
    ]


_REMOVE = {
    202: {"description": "the removal job is queued"},
    403: {"description": "another creator's recording"},
    404: {"description": "no such recording, or nobody recorded in that seat"},
    409: {"description": "the recording is not ended, or the seat is the only one recorded"},
    410: {"description": "expired or removed"},
}


@router.delete(
    "/{recording_id}/hosts/{seat}",
    status_code=202,
    responses=_REMOVE,
)
async def remove_host(
    recording_id: PathId,
    seat: Annotated[int, FastPath(ge=1, le=32)],
    creator: CurrentCreator,
    runtime: RuntimeDep,
) -> HostRemovalOut:
    """Remove one host from an ended recording (consent): their stored media is deleted, the
    mix is made again from the other seats' own audio, their speaker turns go, and the audit
    log says so with the objects and bytes deleted. A job: `202` at once."""
    view = await catalog_work(runtime, runtime.playback.recording, recording_id)
    room = await catalog_work(runtime, runtime.catalog.room, view.recording.room_id)
    if room is None or room.creator_id != creator.id:
        raise HTTPException(403, "this recording belongs to another creator")
    return await start_host_removal(
        runtime, recording_id, seat, actor=f"creator:{creator.id}", creator_id=creator.id
    )


async def start_host_removal(
    runtime, recording_id: str, seat: int, *, actor: str, creator_id: str | None
) -> HostRemovalOut:
    try:
        job = await catalog_work(
            runtime,
            runtime.host_removals.start,
            recording_id,
            seat,
            actor=actor,
            creator_id=creator_id,
        )
    except KeyError:
        raise HTTPException(
            404, f"nobody was recorded in seat {seat} of recording {recording_id}"
        ) from None
    except RetentionConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return HostRemovalOut(job_id=job.id, recording_id=recording_id, seat=seat, status=job.status)


def _rendition_out(request: Request, recording_id: str, rendition: Rendition) -> RenditionOut:
    seat, name = rendition_seat(rendition.name)
    if seat in (ROOM, CREATOR_SEAT):
        url = api_link(request, "media_playlist", recording_id=recording_id, rendition=name)
    else:
        url = api_link(
            request, "host_media_playlist", recording_id=recording_id, seat=seat, rendition=name
        )
    return RenditionOut(
        name=rendition.name,
        codecs=rendition.codecs,
        bandwidth=rendition.bandwidth,
        width=rendition.width,
        height=rendition.height,
        playlist_url=url,
        seat=seat,
    )


@router.get("/{recording_id}/master.m3u8", response_class=Response, responses=_PLAYLIST_RESPONSES)
async def master_playlist(recording_id: PathId, runtime: RuntimeDep) -> Response:
    """The master playlist: open this URL in any HLS player."""
    playlist = runtime.playback.cached_master(recording_id)
    if playlist is None:
        playlist = await store_work(runtime, runtime.playback.master, recording_id)
    return _playlist(playlist)


@router.get(
    "/{recording_id}/{rendition}/index.m3u8",
    response_class=Response,
    responses=_PLAYLIST_RESPONSES,
)
async def media_playlist(
    recording_id: PathId, rendition: RenditionName, runtime: RuntimeDep, request: Request
) -> Response:
    """A media playlist whose segment URIs point straight into the store."""
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")
    playlist = runtime.playback.cached_media(recording_id, rendition)
    if playlist is None or (gzip_ok and not playlist.has_gzipped):
        playlist = await store_work(
            runtime, _media_and_gzip, runtime, recording_id, rendition, gzip_ok
        )
    return _playlist(playlist, gzip_ok)


@router.get(
    "/{recording_id}/hosts/{seat}/{rendition}/index.m3u8",
    response_class=Response,
    responses=_PLAYLIST_RESPONSES,
)
async def host_media_playlist(
    recording_id: PathId,
    seat: Annotated[int, FastPath(ge=2, le=32)],
    rendition: RenditionName,
    runtime: RuntimeDep,
    request: Request,
) -> Response:
    """A media playlist of a host's seat (2 and up): their own media, copied as they sent it."""
    return await media_playlist(recording_id, seat_rendition(seat, rendition), runtime, request)


def _media_and_gzip(runtime, recording_id: str, rendition: str, gzip_ok: bool) -> Playlist:
    playlist = runtime.playback.media(recording_id, rendition)
    if gzip_ok and len(playlist.body) >= GZIP_MIN_BYTES:
        playlist.gzipped()
    return playlist


def _playlist(playlist: Playlist, gzip_ok: bool = False) -> Response:
    # A live playlist grows every segment; a replay's URIs carry signatures that run out.
    headers = {
        "Cache-Control": "no-cache" if playlist.live else "private, max-age=10",
        "Vary": "Accept-Encoding",
    }
    if gzip_ok and len(playlist.body) >= GZIP_MIN_BYTES:
        headers["Content-Encoding"] = "gzip"
        return Response(playlist.gzipped(), media_type=PLAYLIST_TYPE, headers=headers)
    return Response(playlist.body, media_type=PLAYLIST_TYPE, headers=headers)
