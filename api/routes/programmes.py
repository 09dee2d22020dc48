"""Programmes and episodes: a creator's podcast, made of clips, with its public RSS feed."""

from __future__ import annotations

from typing import Literal

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse

from api.deps import CurrentCreator, RuntimeDep, catalog_work, store_work
from api.edge import BodyLimit, body_limit, edge_router
from api.jobs import JOBS_FULL
from api.programmes import ARTWORK_TYPES, EpisodeRefused
from api.routes.recordings import _PLAYLIST_RESPONSES, _playlist
from api.schemas import (
    EpisodeIn,
    EpisodeOut,
    PathId,
    ProgrammeIn,
    ProgrammeOut,
    ProgrammePatch,
)
from storage.models import Episode, Programme

router = edge_router(tags=["programmes"])

FEED_TYPE = "application/rss+xml; charset=utf-8"
_OWN = {
    403: {"description": "another creator's programme"},
    404: {"description": "no such programme"},
}
_REDIRECT = {302: {"description": "to the file in the store (or under the public media URL)"}}


def programme_out(programme: Programme, runtime) -> ProgrammeOut:
    urls = runtime.programmes.feed_urls(programme)
    return ProgrammeOut(
        id=programme.id,
        title=programme.title,
        description=programme.description,
        author=programme.author,
        language=programme.language,
        explicit=programme.explicit,
        category=programme.category,
        created_at=programme.created_at,
        artwork_url=urls.artwork,
        feed_url=urls.feed,
    )


def episode_out(episode: Episode, runtime) -> EpisodeOut:
    job = runtime.catalog.job(episode.job_id) if episode.job_id else None
    rendered = episode.rendered or {}
    done = episode.status == "done"
    base = f"{runtime.settings.api_url}/api/episodes/{episode.id}"
    return EpisodeOut(
        id=episode.id,
        programme_id=episode.programme_id,
        number=episode.number,
        title=episode.title,
        description=episode.description,
        status=episode.status,
        progress=100 if done else (job.progress if job else 0),
        error=job.error if job else None,
        duration_s=episode.duration_s,
        published_at=episode.published_at,
        created_at=episode.created_at,
        audio_url=f"{base}/audio.mp3" if done else None,
        m4a_url=f"{base}/audio.m4a" if done else None,
        playback_url=f"{base}/hls/index.m3u8" if done else None,
        chapters=rendered.get("chapters", []),
        recipe=episode.recipe,
    )


def _own(runtime, programme_id: str, creator) -> Programme:
    programme = runtime.catalog.programme(programme_id)
    if programme is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no programme {programme_id}")
    if programme.creator_id != creator.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this programme belongs to another creator")
    return programme


@router.post("/api/programmes", status_code=status.HTTP_201_CREATED)
async def create_programme(
    body: ProgrammeIn, creator: CurrentCreator, runtime: RuntimeDep
) -> ProgrammeOut:
    def create() -> ProgrammeOut:
        programme = runtime.catalog.add_programme(creator_id=creator.id, **body.model_dump())
        runtime.programmes.write_feed(programme.id)
        return programme_out(programme, runtime)

    return await store_work(runtime, create)


@router.get("/api/programmes")
async def list_programmes(creator: CurrentCreator, runtime: RuntimeDep) -> list[ProgrammeOut]:
    def listing() -> list[ProgrammeOut]:
        return [programme_out(p, runtime) for p in runtime.catalog.programmes_of(creator.id)]

    return await catalog_work(runtime, listing)


@router.get("/api/programmes/{programme_id}", responses=_OWN)
async def get_programme(
    programme_id: PathId, creator: CurrentCreator, runtime: RuntimeDep
) -> ProgrammeOut:
    return await catalog_work(
        runtime, lambda: programme_out(_own(runtime, programme_id, creator), runtime)
    )


@router.patch("/api/programmes/{programme_id}", responses=_OWN)
async def update_programme(
    programme_id: PathId, body: ProgrammePatch, creator: CurrentCreator, runtime: RuntimeDep
) -> ProgrammeOut:
    def update() -> ProgrammeOut:
        _own(runtime, programme_id, creator)
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        programme = runtime.catalog.update_programme(programme_id, **changes)
        runtime.programmes.write_feed(programme_id)
        return programme_out(programme, runtime)

    return await store_work(runtime, update)


@router.delete(
    "/api/programmes/{programme_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_OWN,
)
async def delete_programme(
    programme_id: PathId, creator: CurrentCreator, runtime: RuntimeDep
) -> None:
    """The programme, its episodes and its feed, from the catalog and the store."""

    def delete() -> None:
        runtime.programmes.delete(_own(runtime, programme_id, creator))

    await store_work(runtime, delete)


_IMAGE = {"schema": {"type": "string", "format": "binary"}}


@router.put(
    "/api/programmes/{programme_id}/artwork",
    responses=_OWN | {422: {"description": "not a JPEG or PNG image"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: _IMAGE for _, media in ARTWORK_TYPES.values()},
        }
    },
)
@body_limit(BodyLimit.ARTWORK)
async def put_artwork(
    programme_id: PathId, request: Request, creator: CurrentCreator, runtime: RuntimeDep
) -> ProgrammeOut:
    """The programme's artwork: the request body is the JPEG or PNG image (square, 1400-3000
    px for Apple Podcasts; at most AFTERLIVE_MAX_ARTWORK_MB)."""
    # Whose programme it is, before the image is read: another creator's upload is refused
    # before its first byte, like one without a token.
    await catalog_work(runtime, _own, runtime, programme_id, creator)
    data = await request.body()

    def store() -> ProgrammeOut:
        programme = _own(runtime, programme_id, creator)
        try:
            programme = runtime.programmes.set_artwork(programme, data)
        except EpisodeRefused as exc:
            raise HTTPException(422, str(exc)) from None
        return programme_out(programme, runtime)

    return await store_work(runtime, store)


@router.get(
    "/api/programmes/{programme_id}/artwork",
    response_class=RedirectResponse,
    status_code=302,
    responses=_REDIRECT | {404: {"description": "no such programme, or no artwork"}},
)
async def get_artwork(programme_id: PathId, runtime: RuntimeDep) -> RedirectResponse:
    programme = await catalog_work(runtime, runtime.catalog.programme, programme_id)
    if programme is None or not programme.artwork_key:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no artwork for programme {programme_id}")
    return RedirectResponse(runtime.playback.media_url(programme.artwork_key), status_code=302)


_FEED = {
    "response_class": Response,
    "responses": {
        200: {"content": {FEED_TYPE: {"schema": {"type": "string"}}}, "description": "RSS"},
        404: {"description": "no such programme"},
    },
}


# One route per method: OpenAPI wants an operation id of each.
@router.get("/api/programmes/{programme_id}/feed.xml", **_FEED)
@router.head("/api/programmes/{programme_id}/feed.xml", **_FEED)
async def feed(programme_id: PathId, runtime: RuntimeDep) -> Response:
    """The podcast feed (RSS 2.0 + iTunes): public; subscribe to this URL."""

    def render() -> bytes:
        programme = runtime.catalog.programme(programme_id)
        if programme is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no programme {programme_id}")
        return runtime.programmes.feed(programme)

    body = await catalog_work(runtime, render)
    return Response(body, media_type=FEED_TYPE, headers={"Cache-Control": "public, max-age=60"})


@router.post(
    "/api/programmes/{programme_id}/episodes",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"description": "another creator's programme or clip"},
        404: {"description": "no such programme"},
        422: {"description": "a malformed request, or clips that cannot make an episode"},
        429: JOBS_FULL,
    },
)
async def create_episode(
    programme_id: PathId, body: EpisodeIn, creator: CurrentCreator, runtime: RuntimeDep
) -> EpisodeOut:
    """Render clips (in order, with an optional intro and outro) into an episode: a job."""

    def create() -> EpisodeOut:
        programme = _own(runtime, programme_id, creator)
        try:
            episode, _ = runtime.programmes.create_episode(
                programme, creator_id=creator.id, **body.model_dump()
            )
        except EpisodeRefused as exc:
            raise HTTPException(422, str(exc)) from None
        except PermissionError as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
        return episode_out(episode, runtime)

    return await catalog_work(runtime, create)


@router.get("/api/programmes/{programme_id}/episodes", responses=_OWN)
async def list_episodes(
    programme_id: PathId, creator: CurrentCreator, runtime: RuntimeDep
) -> list[EpisodeOut]:
    def listing() -> list[EpisodeOut]:
        _own(runtime, programme_id, creator)
        return [episode_out(e, runtime) for e in runtime.catalog.episodes_of(programme_id)]

    return await catalog_work(runtime, listing)


@router.get(
    "/api/episodes/{episode_id}",
    responses={
        403: {"description": "another creator's episode"},
        404: {"description": "no such episode"},
    },
)
async def get_episode(
    episode_id: PathId, creator: CurrentCreator, runtime: RuntimeDep
) -> EpisodeOut:
    def get() -> EpisodeOut:
        episode = runtime.catalog.episode(episode_id)
        if episode is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no episode {episode_id}")
        _own(runtime, episode.programme_id, creator)
        return episode_out(episode, runtime)

    return await catalog_work(runtime, get)


def _published(runtime, episode_id: str) -> Episode:
    episode = runtime.catalog.episode(episode_id)
    if episode is None or episode.status != "done":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no published episode {episode_id}")
    return episode


_AUDIO = {
    "response_class": RedirectResponse,
    "status_code": 302,
    "responses": _REDIRECT | {404: {"description": "no such published episode, or no such file"}},
}


@router.get("/api/episodes/{episode_id}/audio.{ext}", **_AUDIO)
@router.head("/api/episodes/{episode_id}/audio.{ext}", **_AUDIO)
async def episode_audio(
    episode_id: PathId, ext: Literal["mp3", "m4a"], runtime: RuntimeDep
) -> RedirectResponse:
    """A stable URL for the feed's enclosure: redirects to the file in the store."""

    def locate() -> str:
        episode = _published(runtime, episode_id)
        keys = {"mp3": episode.audio_key, "m4a": (episode.rendered or {}).get("m4a_key")}
        if not keys.get(ext):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {ext} for episode {episode_id}")
        return runtime.playback.media_url(keys[ext])

    return RedirectResponse(await catalog_work(runtime, locate), status_code=302)


@router.get(
    "/api/episodes/{episode_id}/hls/index.m3u8",
    response_class=Response,
    responses=_PLAYLIST_RESPONSES | {404: {"description": "no such published episode"}},
)
async def episode_playlist(episode_id: PathId, runtime: RuntimeDep) -> Response:
    def playlist():
        episode = _published(runtime, episode_id)
        return runtime.playback.kept_media((episode.rendered or {})["hls_key"])

    return _playlist(await store_work(runtime, playlist))
