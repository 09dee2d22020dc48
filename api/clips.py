"""Clips: a creator's cut of a recording, made by a job and kept in the store under `clips/`.

`Clips.create` checks the range and records the clip with its job (which pins the recording
against expiry); a worker thread then, for every rendition of the recording, fetches only the
source segments the cut opens (the two partial ends), lets `transcode.clipper` cut them, copies
the whole segments inside the range server-side in the store (no download, no re-encode), and
writes the clip's playlists and its audio file (.m4a, trimmed to the sample).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from api.jobs import JobRunner
from storage import keys as K
from storage.catalog import MIX, SOURCE, Catalog
from storage.models import Clip, Job, Recording, Rendition
from storage.store import ObjectStore
from storage.timeline import timeline_position
from transcode.clipper import ClipRangeError, SourceSegment, cut_clip, plan_clip
from transcode.playlists import MasterPlaylist, Variant

log = logging.getLogger(__name__)

# Downloads and server-side copies in flight per clip job.
STORE_REQUESTS_AT_ONCE = 8
# EXTINF durations are written to the millisecond: this much past the recorded end is the end.
_END_TOLERANCE_S = 0.0005


class Clips:
    def __init__(
        self,
        *,
        catalog: Catalog,
        store: ObjectStore,
        work_dir: Path,
        workers: int = 1,
        job_limit: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.job_limit = job_limit  # jobs queued or running per creator (episodes included)
        self.jobs = JobRunner(
            catalog=catalog,
            kind="clip",
            work=self._work,
            work_dir=work_dir,
            on_failure=lambda job: store.delete_prefix(K.clip_prefix(job.payload["clip_id"])),
            workers=workers,
        )

    # -- requests --------------------------------------------------------------------------------

    def create(
        self,
        recording: Recording,
        *,
        creator_id: str,
        title: str,
        start_s: float | None = None,
        end_s: float | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> tuple[Clip, Job]:
        """Validate the range (ClipRangeError), record the clip and its job, start the job."""
        if start_at is not None or end_at is not None:
            if start_at is None or end_at is None:
                raise ClipRangeError("give both start_at and end_at, or start_s and end_s")
            start_s, end_s = self.offsets(recording.id, start_at, end_at)
        if start_s is None or end_s is None:
            raise ClipRangeError("give start_s and end_s (seconds into the recording)")
        check_range(start_s, end_s, recording.media_s)
        clip, job = self.catalog.start_clip(
            creator_id=creator_id,
            job_limit=self.job_limit,
            recording_id=recording.id,
            title=title,
            start_s=start_s,
            end_s=end_s,
        )
        self.jobs.submit(job.id)
        log.info(
            "clip %s of recording %s [%.3f, %.3f) s queued (job %s)",
            clip.id,
            recording.id,
            start_s,
            end_s,
            job.id,
        )
        return clip, job

    def offsets(
        self, recording_id: str, start_at: datetime, end_at: datetime
    ) -> tuple[float, float]:
        """Wall-clock times to seconds into the recording, through the segments' start times
        (EXT-X-PROGRAM-DATE-TIME): a reconnect gap counts for nothing, as in the player."""
        timeline = self.catalog.timeline_rendition(recording_id)
        segments = self.catalog.find_segments(recording_id, timeline)
        if not segments:
            raise ClipRangeError(f"recording {recording_id} has no media yet")

        def offset(moment: datetime, what: str) -> float:
            position = timeline_position(segments, moment)
            if position is None:
                last = segments[-1].start_at + timedelta(seconds=segments[-1].duration_s)
                raise ClipRangeError(
                    f"{what} {moment.isoformat()} is after the recording's end ({last.isoformat()})"
                )
            return position

        first = segments[0].start_at
        if start_at < first:
            raise ClipRangeError(
                f"start_at {start_at.isoformat()} is before the recording's start "
                f"({first.isoformat()})"
            )
        return offset(start_at, "start_at"), offset(end_at, "end_at")

    def resume(self) -> int:
        return self.jobs.resume()

    def close(self) -> None:
        self.jobs.close()

    # -- the job ---------------------------------------------------------------------------------

    def _work(self, job: Job, work: Path, progress: Callable[[float], None]) -> dict:
        return self._cut(self.catalog.clip(job.payload["clip_id"]), work, progress)

    def _cut(self, clip: Clip, work: Path, progress: Callable[[float], None]) -> dict:
        recording = self.catalog.recording(clip.recording_id)
        if recording is not None and recording.status not in ("live", "ended"):
            # It waited in the queue past AFTERLIVE_JOB_PIN_MAX and the recording expired.
            state = "being deleted" if recording.status == "deleting" else recording.status
            raise ClipRangeError(
                f"recording {clip.recording_id} was {state} before the job ran (it waited "
                "longer than AFTERLIVE_JOB_PIN_MAX): nothing left to cut"
            )
        renditions = list(self.catalog.renditions(clip.recording_id))
        if recording is None or not renditions:
            raise ClipRangeError(f"recording {clip.recording_id} has no renditions")
        timeline = SOURCE
        if any(r.name == MIX for r in renditions):
            # A conversation: the clip is the room mix, on the mix's timeline (the hosts'
            # own renditions start and stop with each host).
            timeline = MIX
            renditions = [r for r in renditions if r.name == MIX]
        names = [r.name for r in renditions]
        audio_from = "audio" if "audio" in names else timeline
        video_room = recording.kind == "video"
        variants: list[Variant] = []
        duration = 0.0
        for index, rendition in enumerate(renditions):
            has_video = rendition.width is not None

            def step(fraction: float, index: int = index) -> None:
                progress((index + fraction) / len(renditions))

            cut = self._cut_rendition(
                clip,
                rendition,
                work / rendition.name,
                has_video=has_video,
                audio_path=work / "audio.m4a" if rendition.name == audio_from else None,
                # The audio rendition of a video room keeps its discontinuities in step with
                # the video's, as variants must (RFC 8216, "Providing Variant Streams").
                boundary_discontinuities=True if video_room and not has_video else None,
                progress=step,
            )
            if rendition.name == timeline:
                duration = cut.duration_s
            variants.append(
                Variant(
                    uri=f"{rendition.name}/index.m3u8",
                    bandwidth=max(rendition.bandwidth, 1),
                    codecs=rendition.codecs,
                    resolution=(rendition.width, rendition.height)
                    if rendition.width and rendition.height
                    else None,
                    name=rendition.name,
                )
            )
        self.store.put_file(K.clip_audio(clip.id), work / "audio.m4a")
        self.store.put_bytes(
            K.clip_master(clip.id), MasterPlaylist(variants=variants).render().encode()
        )
        return {"duration_s": round(duration, 3), "renditions": names}

    def _cut_rendition(
        self,
        clip: Clip,
        rendition: Rendition,
        directory: Path,
        *,
        has_video: bool,
        audio_path: Path | None,
        boundary_discontinuities: bool | None,
        progress: Callable[[float], None],
    ):
        source_dir = directory / "source"
        source_dir.mkdir(parents=True, exist_ok=True)
        sources: list[SourceSegment] = []
        key_of: dict[Path, str] = {}
        position = 0.0
        for seg in self.catalog.find_segments(clip.recording_id, rendition.name):
            path = source_dir / seg.key.rsplit("/", 1)[1]
            sources.append(
                SourceSegment(
                    path=path,
                    start_s=position,
                    duration_s=seg.duration_s,
                    discontinuity=seg.discontinuity,
                )
            )
            key_of[path] = seg.key
            position += seg.duration_s
        plan = plan_clip(sources, clip.start_s, clip.end_s)
        needed = plan.local_files_needed(audio_file=audio_path is not None, copy_inner=False)
        # Store round trips, not media work, are most of a long clip's time: several at once.
        with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix="clip-io") as io:
            list(io.map(lambda s: self.store.download(key_of[s.path], s.path), needed))
        result = cut_clip(
            sources,
            start_s=clip.start_s,
            end_s=clip.end_s,
            directory=directory / "out",
            has_video=has_video,
            name="seg",
            audio_path=audio_path,
            copy_inner=False,
            boundary_discontinuities=boundary_discontinuities,
            progress=progress,
            label=f"clip {clip.id} {rendition.name}",
        )

        # Segments before the playlist that lists them; whole segments copied inside the store.
        def store_segment(seg) -> None:
            target = K.clip_segment(clip.id, rendition.name, seg.path.name)
            if seg.copied_from is not None:
                self.store.copy(key_of[seg.copied_from], target)
            else:
                self.store.put_file(target, seg.path)

        with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix="clip-io") as io:
            list(io.map(store_segment, result.segments))
        self.store.put_bytes(
            K.clip_media_playlist(clip.id, rendition.name), result.playlist.encode()
        )
        return result


def check_range(start_s: float, end_s: float, recorded_s: float) -> None:
    """The range against what is recorded so far (all of it, for a live recording)."""
    if start_s < 0:
        raise ClipRangeError(f"start_s {start_s:g} is before the recording's start (0 s)")
    if end_s <= start_s:
        raise ClipRangeError(f"end_s {end_s:g} must be after start_s {start_s:g}")
    if end_s > recorded_s + _END_TOLERANCE_S:
        raise ClipRangeError(
            f"[{start_s:g}, {end_s:g}) s is outside the recording: it holds "
            f"{recorded_s:.3f} s so far"
        )
