"""Clips: a creator's cut of a recording, made by a job and kept in the store under `clips/`.

`Clips.create` checks the range and records the clip with its job (which pins the recording
against expiry); a worker thread then, for every rendition of the recording, fetches only the
source segments the cut opens (the two partial ends), lets `transcode.clipper` cut them, copies
the whole segments inside the range server-side in the store (no download, no re-encode), and
writes the clip's playlists and its audio file (.m4a, trimmed to the sample).

A clip of one seat (`seat`) is that host's copied video with the room mix as its sound, over the
same wall-clock span: the video is cut to the frame on the seat's own timeline, the mix's frames
over the span are copied in beside it, and `transcode.seatclip` puts both on one clock by their
EXT-X-PROGRAM-DATE-TIME (one rendition, "host", that every player plays as any muxed stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from api.jobs import JobRunner
from storage import keys as K
from storage.catalog import MIX, SOURCE, Catalog
from storage.models import Clip, Job, Recording, Rendition, Segment
from storage.seats import CREATOR_SEAT, seat_rendition
from storage.store import ObjectStore
from storage.timeline import timeline_position
from transcode.clipper import ClipRangeError, SourceSegment, cut_clip, plan_clip, write_audio_file
from transcode.playlists import MasterPlaylist, Variant
from transcode.seatclip import DatedSegment, mux_seat_clip

log = logging.getLogger(__name__)

# Downloads and server-side copies in flight per clip job.
STORE_REQUESTS_AT_ONCE = 8
# EXTINF durations are written to the millisecond: this much past the recorded end is the end.
_END_TOLERANCE_S = 0.0005
# A seat clip's rendition: the host's video and the room mix, muxed.
HOST = "host"


class SeatUnavailable(Exception):
    """A seat clip that cannot be made; `status` is the API's answer (404, 409, 410, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Timeline:
    """A rendition's segments as one timeline: positions (the sum of the EXTINF durations, as
    clips and players count) against wall-clock times (EXT-X-PROGRAM-DATE-TIME). A gap (a
    reconnect, a host away) takes no position."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.positions = [0.0]
        for seg in self.segments:
            self.positions.append(self.positions[-1] + seg.duration_s)

    @property
    def length_s(self) -> float:
        return self.positions[-1]

    def position(self, moment: datetime) -> float | None:
        """Where `moment` is: inside a segment, or at the start of the next one after a gap;
        0 before the first; None after the last."""
        return timeline_position(self.segments, moment)

    def wall(self, position: float, *, end: bool = False) -> datetime:
        """The wall-clock time at `position`; on a boundary, the next segment's start (or the
        previous one's end, with `end`)."""
        for seg, start, stop in zip(
            self.segments, self.positions, self.positions[1:], strict=False
        ):
            if position < stop - _END_TOLERANCE_S or (end and position <= stop + _END_TOLERANCE_S):
                return seg.start_at + timedelta(seconds=position - start)
        last = self.segments[-1]
        return last.start_at + timedelta(seconds=last.duration_s)

    def sources(self, directory: Path) -> tuple[list[SourceSegment], dict[Path, str]]:
        """The segments for the clipper (local paths under `directory`) and their keys."""
        sources, key_of = [], {}
        for seg, position in zip(self.segments, self.positions, strict=False):
            path = directory / seg.key.rsplit("/", 1)[1]
            sources.append(
                SourceSegment(
                    path=path,
                    start_s=position,
                    duration_s=seg.duration_s,
                    discontinuity=seg.discontinuity,
                )
            )
            key_of[path] = seg.key
        return sources, key_of


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
        seat: int | None = None,
    ) -> tuple[Clip, Job]:
        """Validate the range (ClipRangeError) and the seat (SeatUnavailable), record the clip
        and its job, start the job."""
        if start_at is not None or end_at is not None:
            if start_at is None or end_at is None:
                raise ClipRangeError("give both start_at and end_at, or start_s and end_s")
            start_s, end_s = self.offsets(recording.id, start_at, end_at)
        if start_s is None or end_s is None:
            raise ClipRangeError("give start_s and end_s (seconds into the recording)")
        check_range(start_s, end_s, recording.media_s)
        if seat is not None:
            self.seat_video(recording, seat, start_s, end_s)
        clip, job = self.catalog.start_clip(
            creator_id=creator_id,
            job_limit=self.job_limit,
            recording_id=recording.id,
            title=title,
            start_s=start_s,
            end_s=end_s,
            seat=seat,
        )
        self.jobs.submit(job.id)
        log.info(
            "clip %s of recording %s%s [%.3f, %.3f) s queued (job %s)",
            clip.id,
            recording.id,
            "" if seat is None else f" seat {seat}",
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
        timeline = Timeline(
            self.catalog.find_segments(recording_id, self.catalog.timeline_rendition(recording_id))
        )
        if not timeline.segments:
            raise ClipRangeError(f"recording {recording_id} has no media yet")
        first = timeline.segments[0].start_at
        if start_at < first:
            raise ClipRangeError(
                f"start_at {start_at.isoformat()} is before the recording's start "
                f"({first.isoformat()})"
            )
        last = timeline.wall(timeline.length_s, end=True)

        def offset(moment: datetime, what: str) -> float:
            position = timeline.position(moment)
            if position is None:
                raise ClipRangeError(
                    f"{what} {moment.isoformat()} is after the recording's end ({last.isoformat()})"
                )
            return position

        return offset(start_at, "start_at"), offset(end_at, "end_at")

    def seat_video(
        self, recording: Recording, seat: int, start_s: float, end_s: float
    ) -> str | None:
        """The rendition a clip of `seat` takes its video from (None: a room without a mix,
        whose seat 1 is the recording itself), or SeatUnavailable saying why there is none."""
        rid = recording.id
        renditions = {r.name: r for r in self.catalog.renditions(rid)}
        seats = {s.seat: s for s in self.catalog.recording_seats(rid)}
        if MIX not in renditions and seat == CREATOR_SEAT:
            return None
        sat = seats.get(seat)
        if sat is None:
            present = ", ".join(str(n) for n in sorted(seats)) or "none"
            raise SeatUnavailable(
                404, f"nobody sat in seat {seat} of recording {rid} (its seats: {present})"
            )
        removal = self.catalog.seat_removal(rid, seat)
        if removal == "removed":
            raise SeatUnavailable(
                410,
                f"the host of seat {seat} was removed from recording {rid}: nothing of them is "
                "kept, so no clip can show them",
            )
        if removal == "being removed":
            raise SeatUnavailable(
                409, f"the host of seat {seat} is being removed from recording {rid}"
            )
        if not sat.recorded:
            raise SeatUnavailable(
                422,
                f'seat {seat} ({sat.name}) was not recorded: they were live as "not recorded", '
                "nothing of them is stored",
            )
        name = seat_rendition(seat, SOURCE)
        rendition = renditions.get(name)
        if rendition is None or rendition.width is None:
            raise SeatUnavailable(
                422,
                f"seat {seat} ({sat.name}) has no video: they published without a camera "
                "(clip without a seat to get the room's sound)",
            )
        mix = Timeline(self.catalog.find_segments(rid, MIX))
        if not mix.segments:
            raise ClipRangeError(f"recording {rid} has no mix yet")
        video = Timeline(self.catalog.find_segments(rid, name))
        start, end = mix.wall(start_s), mix.wall(end_s, end=True)
        if not any(
            seg.start_at < end and start < seg.start_at + timedelta(seconds=seg.duration_s)
            for seg in video.segments
        ):
            raise SeatUnavailable(
                422,
                f"seat {seat} ({sat.name}) has no video in [{start_s:g}, {end_s:g}) s: "
                f"their video runs at {_runs(mix, video)} s of the recording",
            )
        return name

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
        if clip.seat is not None:
            # Checked again: the host may have been removed while the job waited.
            video = self.seat_video(recording, clip.seat, clip.start_s, clip.end_s)
            if video is not None:
                return self._cut_seat(clip, video, renditions, work, progress)
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

    def _cut_seat(
        self,
        clip: Clip,
        video_name: str,
        renditions: list[Rendition],
        work: Path,
        progress: Callable[[float], None],
    ) -> dict:
        """The host's video over the clip's wall-clock span, cut to the frame on the seat's own
        timeline (where the host was live), and the mix's sound over what that video covers."""
        rid = clip.recording_id
        by_name = {r.name: r for r in renditions}
        mix = Timeline(self.catalog.find_segments(rid, MIX))
        video = Timeline(self.catalog.find_segments(rid, video_name))
        start, end = mix.wall(clip.start_s), mix.wall(clip.end_s, end=True)
        # The span on the seat's timeline: a host who joined (or left) inside the range gives
        # the part they were there for.
        v_start = video.position(start)
        v_end = video.position(end)
        v_end = video.length_s if v_end is None else v_end
        if v_start is None or v_end - v_start <= _END_TOLERANCE_S:
            raise ClipRangeError(f"seat {clip.seat} has no video in this clip's range")
        sources, key_of = video.sources(work / "video" / "source")
        sources[0].path.parent.mkdir(parents=True, exist_ok=True)
        plan = plan_clip(sources, v_start, v_end)
        self._download(plan.local_files_needed(audio_file=False, copy_inner=True), key_of)
        cut = cut_clip(
            sources,
            start_s=v_start,
            end_s=v_end,
            directory=work / "video" / "out",
            has_video=True,
            name="video",
            progress=lambda f: progress(0.8 * f),
            label=f"clip {clip.id} {video_name}",
        )
        first = cut.segments[0]
        origin = video.wall(first.start_s)
        last = cut.segments[-1]
        until = video.wall(last.start_s + last.duration_s, end=True)
        duration = (until - origin).total_seconds()
        opens = {id(sources[0])} | {id(s) for s in sources if s.discontinuity}
        dated_video = [
            DatedSegment(
                path=seg.path,
                at_s=(video.wall(seg.start_s) - origin).total_seconds(),
                # A copied segment that opens its timeline is dated by its earliest packet.
                anchor_earliest=seg.copied_from is not None and id(seg.source) in opens,
                discontinuity=seg.discontinuity,
            )
            for seg in cut.segments
        ]

        # The mix over the same span, to the sample in the .m4a and frame by frame beside the
        # picture.
        m_start = mix.position(origin)
        m_end = mix.position(until)
        m_end = mix.length_s if m_end is None else m_end
        m_sources, m_keys = mix.sources(work / "mix" / "source")
        m_sources[0].path.parent.mkdir(parents=True, exist_ok=True)
        m_plan = plan_clip(m_sources, m_start, m_end)
        self._download(m_plan.local_files_needed(audio_file=True, copy_inner=True), m_keys)
        audio_path = work / "audio.m4a"
        write_audio_file(m_plan, audio_path, has_video=False, label=f"clip {clip.id} mix")
        heard = ([m_plan.previous] if m_plan.previous is not None else []) + m_plan.selected
        dated_audio = [
            DatedSegment(path=s.path, at_s=(mix.wall(s.start_s) - origin).total_seconds())
            for s in heard
        ]
        segments, playlist = mux_seat_clip(
            dated_video,
            dated_audio,
            duration_s=duration,
            directory=work / HOST,
            name="seg",
            label=f"clip {clip.id} seat {clip.seat}",
        )
        progress(0.9)
        with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix="clip-io") as io:
            list(
                io.map(
                    lambda seg: self.store.put_file(
                        K.clip_segment(clip.id, HOST, seg.path.name), seg.path
                    ),
                    segments,
                )
            )
        self.store.put_bytes(K.clip_media_playlist(clip.id, HOST), playlist.encode())
        self.store.put_file(K.clip_audio(clip.id), audio_path)
        source = by_name[video_name]
        picture = [c for c in source.codecs.split(",") if not c.startswith("mp4a")]
        variant = Variant(
            uri=f"{HOST}/index.m3u8",
            bandwidth=max(source.bandwidth, 1) + max(by_name[MIX].bandwidth, 1),
            codecs=",".join([*picture, by_name[MIX].codecs]),
            resolution=(source.width, source.height) if source.width and source.height else None,
            name=f"seat {clip.seat}",
        )
        self.store.put_bytes(
            K.clip_master(clip.id), MasterPlaylist(variants=[variant]).render().encode()
        )
        log.info(
            "clip %s: seat %d's video from %s, %.3f s after the range's start, %.3f s",
            clip.id,
            clip.seat,
            origin.isoformat(),
            (origin - start).total_seconds(),
            duration,
        )
        return {"duration_s": round(duration, 3), "renditions": [HOST], "seat": clip.seat}

    def _download(self, needed: list[SourceSegment], key_of: dict[Path, str]) -> None:
        with ThreadPoolExecutor(STORE_REQUESTS_AT_ONCE, thread_name_prefix="clip-io") as io:
            list(io.map(lambda s: self.store.download(key_of[s.path], s.path), needed))

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
        timeline = Timeline(self.catalog.find_segments(clip.recording_id, rendition.name))
        sources, key_of = timeline.sources(source_dir)
        plan = plan_clip(sources, clip.start_s, clip.end_s)
        needed = plan.local_files_needed(audio_file=audio_path is not None, copy_inner=False)
        # Store round trips, not media work, are most of a long clip's time: several at once.
        self._download(needed, key_of)
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


def _runs(mix: Timeline, video: Timeline) -> str:
    """A seat's video runs as positions on the mix's timeline, e.g. "2.0-9.9, 14.1-20.0"."""
    runs: list[list[float]] = []
    for seg in video.segments:
        a = mix.position(seg.start_at)
        b = mix.position(seg.start_at + timedelta(seconds=seg.duration_s))
        a = mix.length_s if a is None else a
        b = mix.length_s if b is None else b
        if runs and not seg.discontinuity and abs(runs[-1][1] - a) < 0.1:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return ", ".join(f"{a:.1f}-{b:.1f}" for a, b in runs) or "nowhere"
