"""Programmes and episodes: clips assembled into podcast episodes, with a feed apps subscribe to.

Everything here is kept: it lives under `programmes/{id}/` in the store, which expiry never
touches. An episode is rendered by a job (`transcode.episode`: loudness-normalised MP3 and M4A,
fades, crossfades, tags and chapters, an HLS audio rendition); when it is done the programme's
feed is written again, to the store and served by the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from api.feeds import FeedUrls, render_feed
from api.jobs import JobRunner
from storage import keys as K
from storage.catalog import Catalog
from storage.models import Clip, Episode, Job, Programme
from storage.store import ObjectStore

log = logging.getLogger(__name__)

ARTWORK_TYPES = {b"\xff\xd8\xff": ("jpg", "image/jpeg"), b"\x89PNG\r\n\x1a\n": ("png", "image/png")}
MAX_ARTWORK_BYTES = 10 * 1024 * 1024


class EpisodeRefused(ValueError):
    """An episode recipe that cannot be rendered (the API answers 422)."""


class Programmes:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        public_url: str,
        media_url: Callable[[str], str],
        public_media_base_url: str | None,
        work_dir: Path,
        workers: int = 1,
        job_limit: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.job_limit = job_limit  # jobs queued or running per creator (clips included)
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.media_url = media_url
        self.public_media_base_url = public_media_base_url
        self.jobs = JobRunner(
            catalog=catalog,
            kind="episode",
            work=self._work,
            work_dir=work_dir,
            on_failure=self._failed,
            # Listed in the feed once its job is done.
            on_success=lambda job: self.write_feed(self._episode_of(job).programme_id),
            workers=workers,
        )

    # -- programmes ------------------------------------------------------------------------------

    def set_artwork(self, programme: Programme, data: bytes) -> Programme:
        kind = next((v for magic, v in ARTWORK_TYPES.items() if data.startswith(magic)), None)
        if kind is None:
            raise EpisodeRefused("artwork must be a JPEG or PNG image")
        if len(data) > MAX_ARTWORK_BYTES:
            raise EpisodeRefused(f"artwork is larger than {MAX_ARTWORK_BYTES // 2**20} MB")
        ext, _ = kind
        key = K.programme_artwork(programme.id, ext)
        self.store.put_bytes(key, data)
        if programme.artwork_key and programme.artwork_key != key:
            self.store.delete(programme.artwork_key)
        programme = self.catalog.update_programme(programme.id, artwork_key=key)
        self.write_feed(programme.id)
        return programme

    def delete(self, programme: Programme) -> None:
        self.store.delete_prefix(K.programme_prefix(programme.id))
        self.catalog.delete_programme(programme.id)

    # -- feed ------------------------------------------------------------------------------------

    def feed_urls(self, programme: Programme) -> FeedUrls:
        base = f"{self.public_url}/api/programmes/{programme.id}"

        def enclosure(episode: Episode) -> str:
            if self.public_media_base_url and episode.audio_key:
                return f"{self.public_media_base_url}/{episode.audio_key}"
            return f"{self.public_url}/api/episodes/{episode.id}/audio.mp3"

        artwork = None
        if programme.artwork_key:
            artwork = (
                f"{self.public_media_base_url}/{programme.artwork_key}"
                if self.public_media_base_url
                else f"{base}/artwork"
            )
        return FeedUrls(feed=f"{base}/feed.xml", site=base, artwork=artwork, enclosure=enclosure)

    def feed(self, programme: Programme) -> bytes:
        return render_feed(
            programme,
            self.catalog.episodes_of(programme.id),
            self.feed_urls(programme),
            built_at=self.catalog.now(),
        )

    def write_feed(self, programme_id: str) -> bytes:
        """Render the feed and keep a copy in the store, where a CDN can serve it."""
        programme = self.catalog.programme(programme_id)
        if programme is None:
            raise KeyError(programme_id)
        body = self.feed(programme)
        self.store.put_bytes(K.programme_feed(programme_id), body)
        return body

    # -- episodes --------------------------------------------------------------------------------

    def create_episode(
        self,
        programme: Programme,
        *,
        creator_id: str,
        title: str,
        description: str,
        clips: list[str],
        intro_clip: str | None,
        outro_clip: str | None,
        crossfade_s: float,
        chapters: str = "clips",
    ) -> tuple[Episode, Job]:
        """`chapters` "speakers": each clip's speaker turns are read now, onto the clip's own
        timeline, and kept in the recipe (a recording's turns go when it expires)."""
        turns: dict[str, list] = {}
        for clip_id in [*clips, intro_clip, outro_clip]:
            if clip_id is None:
                continue
            clip = self.catalog.clip(clip_id)
            if clip is None:
                raise EpisodeRefused(f"no clip {clip_id}")
            if clip.creator_id != creator_id:
                raise PermissionError(f"clip {clip_id} belongs to another creator")
            if clip.status != "done":
                raise EpisodeRefused(f"clip {clip_id} is {clip.status}, not done yet")
            if crossfade_s > 0 and (clip.duration_s or 0) <= crossfade_s:
                raise EpisodeRefused(
                    f"clip {clip_id} ({clip.duration_s:.1f} s) is not longer than the "
                    f"crossfade ({crossfade_s:g} s)"
                )
            if chapters == "speakers":
                turns[clip_id] = self._clip_turns(clip)
        episode, job = self.catalog.start_episode(
            programme_id=programme.id,
            creator_id=creator_id,
            job_limit=self.job_limit,
            title=title,
            description=description,
            recipe={
                "clips": clips,
                "intro_clip": intro_clip,
                "outro_clip": outro_clip,
                "crossfade_s": crossfade_s,
                "chapters": chapters,
                "turns": turns,
            },
        )
        self.jobs.submit(job.id)
        return episode, job

    def _clip_turns(self, clip: Clip) -> list[tuple[float, float, str]]:
        """The speaker turns inside a clip, (start, end, host) in seconds from its start."""
        return [
            (round(t.start_s - clip.start_s, 3), round(t.end_s - clip.start_s, 3), t.host)
            for t in self.catalog.timeline_turns(clip.recording_id)
            if t.end_s > clip.start_s and t.start_s < clip.end_s
        ]

    def resume(self) -> int:
        return self.jobs.resume()

    def close(self) -> None:
        self.jobs.close()

    def _episode_of(self, job: Job) -> Episode:
        episode = self.catalog.episode(job.payload["episode_id"])
        if episode is None:
            raise EpisodeRefused("its programme was deleted")
        return episode

    def _work(self, job: Job, work: Path, progress: Callable[[float], None]) -> dict:
        episode = self._episode_of(job)
        rendered = self._render(episode, work, progress)
        log.info("episode %s rendered: %.1f s", episode.id, rendered["duration_s"])
        return {"duration_s": rendered["duration_s"]}

    def _failed(self, job: Job) -> None:
        episode = self.catalog.episode(job.payload["episode_id"])
        if episode is not None:
            self.store.delete_prefix(K.episode_prefix(episode.programme_id, episode.id))

    def _render(self, episode: Episode, work: Path, progress: Callable[[float], None]) -> dict:
        from transcode.episode import EpisodeMeta, EpisodePart, render_episode

        programme = self.catalog.programme(episode.programme_id)
        recipe = episode.recipe or {}

        def part(clip_id: str | None) -> EpisodePart | None:
            if clip_id is None:
                return None
            clip = self.catalog.clip(clip_id)
            if clip is None:
                raise EpisodeRefused(f"clip {clip_id} is gone")
            path = work / f"{clip_id}.m4a"
            self.store.download(K.clip_audio(clip_id), path)
            turns = [tuple(t) for t in recipe.get("turns", {}).get(clip_id, [])]
            return EpisodePart(path=path, title=clip.title, turns=turns)

        artwork = None
        if programme.artwork_key:
            artwork = work / f"artwork.{programme.artwork_key.rsplit('.', 1)[1]}"
            self.store.download(programme.artwork_key, artwork)
        result = render_episode(
            [part(c) for c in recipe.get("clips", [])],
            intro=part(recipe.get("intro_clip")),
            outro=part(recipe.get("outro_clip")),
            crossfade_s=recipe.get("crossfade_s", 1.0),
            meta=EpisodeMeta(
                title=episode.title,
                programme=programme.title,
                author=programme.author,
                description=episode.description,
                artwork=artwork,
                episode_number=episode.number,
                pub_date=self.catalog.now(),
            ),
            directory=work / "out",
            progress=progress,
        )
        prefix = K.episode_prefix(episode.programme_id, episode.id)
        hls_dir = result.hls_playlist_path.parent
        for path in sorted(hls_dir.iterdir()):
            if path != result.hls_playlist_path:
                self.store.put_file(f"{prefix}hls/{path.name}", path)
        self.store.put_file(f"{prefix}hls/index.m3u8", result.hls_playlist_path)
        self.store.put_file(
            K.episode_audio(episode.programme_id, episode.id, "m4a"), result.m4a_path
        )
        mp3_key = K.episode_audio(episode.programme_id, episode.id, "mp3")
        self.store.put_file(mp3_key, result.mp3_path)
        rendered = {
            "duration_s": round(result.duration_s, 3),
            "m4a_key": K.episode_audio(episode.programme_id, episode.id, "m4a"),
            "m4a_bytes": result.m4a_path.stat().st_size,
            "hls_key": f"{prefix}hls/index.m3u8",
            "chapters": [
                {"title": c.title, "start_s": round(c.start_s, 3), "end_s": round(c.end_s, 3)}
                for c in result.chapters
            ],
        }
        self.catalog.update_episode(
            episode.id,
            audio_key=mp3_key,
            audio_bytes=result.mp3_path.stat().st_size,
            duration_s=result.duration_s,
            published_at=self.catalog.now(),
            rendered=rendered,
        )
        return rendered
