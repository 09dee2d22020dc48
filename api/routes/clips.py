"""Clips: a creator cuts part of a recording (live or replay) into a clip that is kept."""

from __future__ import annotations

from fastapi import HTTPException, Request, Response, status

from api.clips import SeatUnavailable
from api.deps import CurrentCreator, RuntimeDep, api_link, catalog_work, own_playable, store_work
from api.edge import edge_router
from api.jobs import JOBS_FULL
from api.routes.recordings import _PLAYLIST_RESPONSES, _playlist
from api.schemas import ClipCreate, ClipOut, ClipSource, PathId, RenditionName
from storage import keys as K
from storage.catalog import RecordingGone, RetentionConflict
from storage.models import Clip, Job
from transcode.clipper import ClipRangeError

router = edge_router(tags=["clips"])

_CLIP_PLAYLIST_RESPONSES = _PLAYLIST_RESPONSES | {
    404: {"description": "no such clip"},
    409: {"description": "the clip is not done yet"},
    410: {"description": "the clip was taken down"},
}


def clip_out(clip: Clip, job: Job | None, request: Request, runtime) -> ClipOut:
    recording = runtime.catalog.recording(clip.recording_id)
    available = recording is not None and recording.status in ("live", "ended")
    done = clip.status == "done"
    host = None
    if clip.seat is not None:
        sat = [s for s in runtime.catalog.recording_seats(clip.recording_id) if s.seat == clip.seat]
        host = sat[0].name if sat else None
    return ClipOut(
        id=clip.id,
        title=clip.title,
        status=clip.status,
        progress=100 if done else (job.progress if job else 0),
        error=job.error if job else None,
        start_s=clip.start_s,
        end_s=clip.end_s,
        duration_s=clip.duration_s,
        seat=clip.seat,
        host=host,
        created_at=clip.created_at,
        status_url=api_link(request, "get_clip", clip_id=clip.id),
        playback_url=api_link(request, "clip_master", clip_id=clip.id) if done else None,
        audio_url=runtime.playback.media_url(K.clip_audio(clip.id)) if done else None,
        source=ClipSource(
            recording_id=clip.recording_id,
            available=available,
            playback_url=api_link(request, "master_playlist", recording_id=clip.recording_id)
            if available
            else None,
        ),
    )


@router.post(
    "/api/recordings/{recording_id}/clips",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"description": "another creator's recording"},
        404: {"description": "no such recording, or nobody sat in that seat"},
        409: {"description": "the recording is being deleted, or that seat's host removed now"},
        410: {
            "description": "the recording expired or was taken down, or that seat's host was "
            "removed from it"
        },
        422: {
            "description": "a malformed request, a range outside the recording, or a seat not "
            "recorded, without video, or without video in the range"
        },
        429: JOBS_FULL,
    },
)
async def create_clip(
    recording_id: PathId,
    body: ClipCreate,
    creator: CurrentCreator,
    runtime: RuntimeDep,
    request: Request,
) -> ClipOut:
    """Cut `[start_s, end_s)` (or `[start_at, end_at)`) of a recording into a clip, live or
    replay; with `seat`, that host's video with the room mix as its sound. Answers at once with
    the job; `status_url` gives its progress."""

    def create() -> ClipOut:
        recording = own_playable(runtime, recording_id, creator)
        clip, job = runtime.clips.create(
            recording,
            creator_id=creator.id,
            title=body.title,
            start_s=body.start_s,
            end_s=body.end_s,
            start_at=body.start_at,
            end_at=body.end_at,
            seat=body.seat,
        )
        return clip_out(clip, job, request, runtime)

    try:
        return await catalog_work(runtime, create)
    except ClipRangeError as exc:
        raise HTTPException(422, str(exc)) from None
    except SeatUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except RecordingGone as exc:
        raise HTTPException(status.HTTP_410_GONE, str(exc)) from None
    except RetentionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/api/clips")
async def list_clips(
    creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> list[ClipOut]:
    """The creator's clips, newest first."""

    def listing() -> list[ClipOut]:
        out = []
        for clip in runtime.catalog.clips_of(creator.id):
            _, job = runtime.catalog.clip_and_job(clip.id)
            out.append(clip_out(clip, job, request, runtime))
        return out

    return await catalog_work(runtime, listing)


@router.get(
    "/api/clips/{clip_id}",
    responses={
        403: {"description": "another creator's clip"},
        404: {"description": "no such clip"},
    },
)
async def get_clip(
    clip_id: PathId, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> ClipOut:
    found = await catalog_work(runtime, runtime.catalog.clip_and_job, clip_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no clip {clip_id}")
    clip, job = found
    if clip.creator_id != creator.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this clip belongs to another creator")
    return await catalog_work(runtime, clip_out, clip, job, request, runtime)


@router.get(
    "/api/clips/{clip_id}/master.m3u8",
    response_class=Response,
    responses=_CLIP_PLAYLIST_RESPONSES,
)
async def clip_master(clip_id: PathId, runtime: RuntimeDep) -> Response:
    """A finished clip's master playlist (public, like recordings)."""
    return _playlist(await store_work(runtime, runtime.playback.clip_master, clip_id))


@router.get(
    "/api/clips/{clip_id}/{rendition}/index.m3u8",
    response_class=Response,
    responses=_CLIP_PLAYLIST_RESPONSES,
)
async def clip_media(clip_id: PathId, rendition: RenditionName, runtime: RuntimeDep) -> Response:
    return _playlist(await store_work(runtime, runtime.playback.clip_media, clip_id, rendition))
