"""Recordings, for viewers: what is live, what can be replayed, and the playlists to play them.

Public: anyone may list and play recordings that are live or ended and not yet expired. An
expired or removed recording answers 410 Gone with when and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import RuntimeDep
from api.playback import PLAYLIST_TYPE, Playlist
from api.schemas import RecordingDetail, RecordingOut, RecordingPage, RenditionOut
from storage.catalog import RecordingView

router = APIRouter(prefix="/api/recordings", tags=["recordings"])

_PLAYLIST_RESPONSES = {
    200: {"content": {PLAYLIST_TYPE: {}}, "description": "an HLS playlist"},
    404: {"description": "no such recording, or no media yet"},
    410: {"description": "the recording expired or was removed"},
}


def recording_out(view: RecordingView, request: Request, now: datetime) -> RecordingOut:
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
        playback_url=str(request.url_for("master_playlist", recording_id=rec.id)),
    )


@router.get("")
async def list_recordings(
    runtime: RuntimeDep,
    request: Request,
    status: Literal["live", "ended"] | None = None,
    room_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RecordingPage:
    """Live and replayable recordings, newest first; `status` narrows to one of them."""
    views, total = await run_in_threadpool(
        runtime.catalog.public_recordings,
        status=status,
        room_id=room_id,
        limit=limit,
        offset=offset,
    )
    now = runtime.catalog.now()
    return RecordingPage(
        items=[recording_out(view, request, now) for view in views],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{recording_id}", responses={404: {}, 410: {}})
async def get_recording(
    recording_id: str, runtime: RuntimeDep, request: Request
) -> RecordingDetail:
    view = await run_in_threadpool(runtime.playback.recording, recording_id)
    renditions = await run_in_threadpool(runtime.catalog.renditions, recording_id)
    out = recording_out(view, request, runtime.catalog.now())
    return RecordingDetail(
        **out.model_dump(),
        renditions=[
            RenditionOut(
                name=r.name,
                codecs=r.codecs,
                bandwidth=r.bandwidth,
                width=r.width,
                height=r.height,
                playlist_url=str(
                    request.url_for("media_playlist", recording_id=recording_id, rendition=r.name)
                ),
            )
            for r in renditions
        ],
    )


@router.get("/{recording_id}/master.m3u8", response_class=Response, responses=_PLAYLIST_RESPONSES)
async def master_playlist(recording_id: str, runtime: RuntimeDep) -> Response:
    """The master playlist: open this URL in any HLS player."""
    return _playlist(await run_in_threadpool(runtime.playback.master, recording_id))


@router.get(
    "/{recording_id}/{rendition}/index.m3u8",
    response_class=Response,
    responses=_PLAYLIST_RESPONSES,
)
async def media_playlist(recording_id: str, rendition: str, runtime: RuntimeDep) -> Response:
    """A media playlist whose segment URIs point straight into the store."""
    return _playlist(await run_in_threadpool(runtime.playback.media, recording_id, rendition))


def _playlist(playlist: Playlist) -> Response:
    # A live playlist grows every segment; a replay's URIs carry signatures that run out.
    cache = "no-cache" if playlist.live else "private, max-age=10"
    return Response(playlist.body, media_type=PLAYLIST_TYPE, headers={"Cache-Control": cache})
