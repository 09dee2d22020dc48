"""The clip cutter on real recordings made by the segmenter from marked media.

The source shows its frame number in every picture and carries a 1 kHz tone burst at 7.300 s of
the same clock, so a clip's accuracy is read from the decoded output: which frames come first
and last, and where the tone starts. Clips are played by PyAV's HLS demuxer, as a player would.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest

from tests.utils.flvfile import read_tags, write_flv
from tests.utils.media import FFMPEG, frame_number, marked_input, tone_onset_s
from tests.utils.player import WHITELIST
from transcode.clipper import (
    ClipRangeError,
    ClipResult,
    SourceSegment,
    cut_clip,
    plan_clip,
)
from transcode.playlists import parse_media_playlist
from transcode.segmenter import Segmenter

RATE = 30
FRAME_S = 1 / RATE
AAC_FRAME_S = 1024 / 44100
TONE_AT_S = 7.3  # on the generator's clock, where video frame n is at n / RATE


@dataclass
class Recording:
    segments: list[SourceSegment]
    # Where the tone starts on the recording's timeline (the sum of EXTINF), measured by
    # decoding the source: the encoders' priming shifts both streams a little from t = 0.
    tone_s: float
    # Where each frame (by number) sits on the recording's timeline: FLV rounds to the ms.
    frames_s: list[float]


def make_flv(path: Path, *, codec: str = "h264", **media) -> Path:
    """`codec`: h264 (no B-frames), h264-bframes (x264 medium), or hevc (closed GOPs)."""
    args = marked_input(**media)
    if codec == "h264-bframes":
        args[args.index("ultrafast")] = "medium"
    elif codec == "hevc":
        args[args.index("libx264")] = "libx265"
        # Closed GOPs: an open one (x265's default) starts segments with pictures that refer to
        # the previous segment, which no clip of it can decode cleanly.
        args += ["-x265-params", "log-level=1:keyint=60:min-keyint=60:scenecut=0:open-gop=0"]
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, "-f", "flv", str(path)]
    subprocess.run(command, check=True)
    return path


def record(flv: Path, directory: Path) -> dict[str, list[SourceSegment]]:
    """Run the production segmenter; list each rendition's segments as the catalog would."""
    closed = []
    with flv.open("rb") as source:
        Segmenter(
            source=source, input_format="flv", directory=directory, on_segment=closed.append
        ).run()
    renditions: dict[str, list[SourceSegment]] = {}
    for seg in closed:
        listed = renditions.setdefault(seg.rendition, [])
        start = listed[-1].end_s if listed else 0.0
        listed.append(
            SourceSegment(
                path=seg.path,
                start_s=start,
                duration_s=seg.duration_s,
                discontinuity=seg.discontinuity,
            )
        )
    return renditions


def measure(segments: list[SourceSegment]) -> Recording:
    """The markers' positions on the recording's timeline, from the source segments' clock.

    One timeline: a position is a time on the input's clock minus that of the first packet.
    """
    origin = None
    audio: list[np.ndarray] = []
    audio_start = None
    frames: list[float] = []
    codec = None
    for seg in segments:
        with av.open(str(seg.path)) as c:
            for packet in c.demux():
                if not packet.size:
                    continue
                t = float(packet.pts * packet.time_base)
                if seg is segments[0]:
                    origin = t if origin is None else min(origin, t)
                if packet.stream.type == "video":
                    frames.append(t)
                elif packet.stream.type == "audio":
                    if codec is None:
                        codec = av.CodecContext.create("aac", "r")
                        codec.extradata = packet.stream.codec_context.extradata
                    for frame in codec.decode(packet):
                        audio_start = t if audio_start is None else audio_start
                        audio.append(frame.to_ndarray()[0])
    assert origin is not None and audio_start is not None
    onset = tone_onset_s(np.concatenate(audio), 44100)
    assert onset is not None
    return Recording(segments, audio_start + onset - origin, [f - origin for f in sorted(frames)])


@pytest.fixture(scope="module")
def av_renditions(tmp_path_factory) -> dict[str, Recording]:
    """A 20 s video room: its `source` rendition and the `audio` one made next to it."""
    work = tmp_path_factory.mktemp("av")
    renditions = record(make_flv(work / "av.flv", seconds=20), work / "segments")
    return {name: measure(segments) for name, segments in renditions.items()}


@pytest.fixture(scope="module")
def av_recording(av_renditions) -> Recording:
    return av_renditions["source"]


@pytest.fixture(scope="module")
def audio_recording(tmp_path_factory) -> Recording:
    work = tmp_path_factory.mktemp("a")
    renditions = record(make_flv(work / "a.flv", video=False, seconds=20), work / "segments")
    return measure(renditions["source"])


@dataclass
class Played:
    frames: list[int]  # frame numbers, in presentation order
    first_video_s: float | None
    first_audio_s: float
    audio: np.ndarray  # channel 0, every decoded sample from first_audio_s on
    errors: list[str]
    dts_backwards: int

    def tone_after_first_video(self) -> float:
        assert self.first_video_s is not None
        return self.first_audio_s + self.onset() - self.first_video_s

    def onset(self) -> float:
        onset = tone_onset_s(self.audio, 44100)
        assert onset is not None, "no tone in the decoded audio"
        return onset


def play(path: Path) -> Played:
    """Decode every packet of a playlist (or file) through FFmpeg, collecting its complaints."""
    frames: list[tuple[float, int]] = []
    audio: list[np.ndarray] = []
    first_audio = None
    last_dts: dict[int, int] = {}
    backwards = 0
    saved_level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # PyAV passes FFmpeg's messages on only when set
    try:
        with (
            av.logging.Capture(local=True) as logs,
            av.open(str(path), options=WHITELIST) as container,
        ):
            for packet in container.demux():
                if packet.dts is not None:
                    previous = last_dts.get(packet.stream.index)
                    backwards += previous is not None and packet.dts <= previous
                    last_dts[packet.stream.index] = packet.dts
                for frame in packet.decode():
                    t = float(frame.pts * frame.time_base)
                    if isinstance(frame, av.VideoFrame):
                        frames.append((t, frame_number(frame)))
                    else:
                        first_audio = t if first_audio is None else first_audio
                        audio.append(frame.to_ndarray()[0])
    finally:
        av.logging.set_level(saved_level)
    frames.sort()
    assert first_audio is not None
    return Played(
        frames=[n for _, n in frames],
        first_video_s=frames[0][0] if frames else None,
        first_audio_s=first_audio,
        audio=np.concatenate(audio),
        errors=[f"{name}: {message}" for level, name, message in logs if level <= av.logging.ERROR],
        dts_backwards=backwards,
    )


def cut(recording: Recording, tmp_path: Path, start: float, end: float, **kwargs) -> ClipResult:
    kwargs.setdefault("has_video", True)
    return cut_clip(
        recording.segments, start_s=start, end_s=end, directory=tmp_path / "clip", **kwargs
    )


def expected_frames(recording: Recording, start: float, end: float) -> list[int]:
    """The numbers of the frames whose position is in [start, end): what the clip must show."""
    return [n for n, t in enumerate(recording.frames_s) if start - 1e-6 <= t < end - 1e-6]


# --- video ---------------------------------------------------------------------------------------


def test_source_has_markers_where_the_generator_put_them(av_recording) -> None:
    # The test's own ruler: tone and frames keep their generator's spacing in the recording.
    assert av_recording.tone_s - av_recording.frames_s[0] == pytest.approx(TONE_AT_S, abs=0.002)
    assert len(av_recording.frames_s) == 20 * RATE
    assert [s.discontinuity for s in av_recording.segments] == [False] * 10


def test_video_clip_is_frame_accurate_and_keeps_the_tone_in_place(av_recording, tmp_path) -> None:
    progress: list[float] = []
    result = cut(
        av_recording, tmp_path, 6.5, 13.1, audio_path=tmp_path / "a.m4a", progress=progress.append
    )
    played = play(result.playlist_path)
    assert played.errors == [] and played.dts_backwards == 0
    assert (played.frames[0], played.frames[-1]) == (
        195,
        392,
    )  # round(6.5 * 30), round(13.1 * 30) - 1
    assert played.frames == list(range(195, 393))  # no frame lost or doubled at the junctions
    assert played.frames == expected_frames(av_recording, 6.5, 13.1)
    assert result.duration_s == pytest.approx(6.6, abs=FRAME_S)
    assert parse_media_playlist(result.playlist).duration_s() == pytest.approx(6.6, abs=0.002)
    # The tone sits 0.8 s after the first picture, as in the source.
    assert played.tone_after_first_video() == pytest.approx(0.8, abs=0.025)
    # Audio starts with the frame that contains the start: before the first picture (which is
    # at most a frame after the start), by at most an audio frame and a video frame.
    assert 0 < played.first_video_s - played.first_audio_s < AAC_FRAME_S + FRAME_S
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_only_the_end_segments_are_re_encoded(av_recording, tmp_path) -> None:
    result = cut(av_recording, tmp_path, 6.5, 13.1)
    head, *inner, tail = result.segments
    assert head.reencoded and tail.reencoded and head.copied_from is tail.copied_from is None
    assert [s.source for s in inner] == av_recording.segments[4:6]
    for seg in inner:
        assert not seg.reencoded
        assert seg.copied_from == seg.source.path
        assert seg.path.read_bytes() == seg.source.path.read_bytes()
    playlist = parse_media_playlist(result.playlist)
    assert playlist.playlist_type == "VOD" and playlist.ended
    assert [s.uri for s in playlist.segments] == [s.path.name for s in result.segments]
    # The encoder changes where re-encoded meets copied: marked, timestamps still continuous.
    assert [s.discontinuity for s in playlist.segments] == [False, True, False, True]
    with av.open(str(head.path)) as c:
        first = next(p for p in c.demux(c.streams.video[0]) if p.size)
        assert first.is_keyframe
        assert c.streams.video[0].codec_context.width == 320
    assert head.start_s == pytest.approx(6.5, abs=FRAME_S)
    assert head.start_s + head.duration_s == pytest.approx(inner[0].source.start_s)


def test_the_audio_file_is_trimmed_to_the_sample(av_recording, tmp_path) -> None:
    result = cut(av_recording, tmp_path, 6.5, 13.1, audio_path=tmp_path / "clip.m4a")
    assert result.audio_duration_s == pytest.approx(6.6, abs=1 / 44100)
    with av.open(str(result.audio_path)) as c:
        stream = c.streams.audio[0]
        assert c.format.name in ("mov,mp4,m4a,3gp,3g2,mj2",) and stream.codec_context.name == "aac"
        # The edit list: exactly the range, to the sample.
        assert stream.time_base == Fraction(1, 44100) and stream.duration == 6.6 * 44100
        # Every AAC frame holds 1024 samples, whatever the source's (ms-rounded) timestamps said.
        durations = [p.duration for p in c.demux(stream) if p.size]
        assert set(durations[:-1]) == {1024} and 0 < durations[-1] <= 1024
    # FFmpeg's decoder drops the warm-up frame as the edit list says, but decodes the last
    # frame whole: the edit list's end is for players that honour it (podcast apps do).
    played = play(result.audio_path)
    assert played.errors == []
    assert len(played.audio) / 44100 == pytest.approx(6.6, abs=AAC_FRAME_S)
    assert played.first_audio_s == pytest.approx(0, abs=1e-6)
    assert played.onset() == pytest.approx(av_recording.tone_s - 6.5, abs=0.025)


@pytest.mark.parametrize(
    ("start", "end"), [(8.3, 9.1), (4.05, 9.0), (6.03, 7.0), (7.29, 7.5), (2.5, 17.9)]
)
def test_clips_show_exactly_the_frames_in_range(av_recording, tmp_path, start, end) -> None:
    result = cut(av_recording, tmp_path, start, end, audio_path=tmp_path / "a.m4a")
    played = play(result.playlist_path)
    assert played.frames == expected_frames(av_recording, start, end)
    assert played.errors == [] and played.dts_backwards == 0
    assert result.duration_s == pytest.approx(end - start, abs=FRAME_S)
    assert result.audio_duration_s == pytest.approx(end - start, abs=1 / 44100)
    if start < TONE_AT_S < end:
        assert play(result.audio_path).onset() == pytest.approx(
            av_recording.tone_s - start, abs=0.025
        )


def test_a_clip_inside_one_segment_is_one_re_encoded_segment(av_recording, tmp_path) -> None:
    result = cut(av_recording, tmp_path, 8.3, 9.1)
    assert len(result.segments) == 1 and result.segments[0].reencoded
    assert "#EXT-X-DISCONTINUITY" not in result.playlist


@pytest.mark.parametrize("codec", ["h264-bframes", "hevc"])
def test_other_sources_are_cut_to_the_frame(tmp_path, codec) -> None:
    """B-frames put dts behind pts, and junctions must not rewind; HEVC re-encodes with x265."""
    flv = make_flv(tmp_path / "src.flv", codec=codec, seconds=10)
    recording = measure(record(flv, tmp_path / "segments")["source"])
    result = cut_clip(
        recording.segments, start_s=2.5, end_s=7.1, directory=tmp_path / "c", has_video=True
    )
    played = play(result.playlist_path)
    assert played.frames == expected_frames(recording, 2.5, 7.1)
    assert played.errors == [] and played.dts_backwards == 0
    with av.open(str(result.segments[0].path)) as c:
        assert c.streams.video[0].codec_context.name == codec.split("-")[0]
    if codec == "h264-bframes":
        with av.open(str(recording.segments[1].path)) as c:
            assert any(p.pts != p.dts for p in c.demux(c.streams.video[0]) if p.size)


def test_a_clip_starting_on_a_segment_boundary_re_encodes_nothing_at_the_head(
    av_recording, tmp_path
) -> None:
    boundary = av_recording.segments[3]
    result = cut(av_recording, tmp_path, boundary.start_s, 11.0)
    head = result.segments[0]
    assert head.copied_from == boundary.path and not head.reencoded
    assert [s.reencoded for s in result.segments] == [False, False, True]
    played = play(result.playlist_path)
    assert played.frames == expected_frames(av_recording, boundary.start_s, 11.0)
    assert played.errors == []
    assert played.frames[0] == 3 * 2 * RATE  # the keyframe that opens the segment


def test_a_clip_on_boundaries_at_both_ends_is_all_copies(av_recording, tmp_path) -> None:
    segments = av_recording.segments
    result = cut(av_recording, tmp_path, segments[2].start_s, segments[4].end_s)
    assert [s.copied_from for s in result.segments] == [s.path for s in segments[2:5]]
    assert "#EXT-X-DISCONTINUITY" not in result.playlist
    assert result.duration_s == pytest.approx(sum(s.duration_s for s in segments[2:5]))


def test_inner_segments_need_not_be_local(av_recording, tmp_path) -> None:
    """The store copies inner segments server-side: the cutter must not open them."""
    plan = plan_clip(av_recording.segments, 6.5, 13.1)
    needed = plan.local_files_needed(audio_file=False, copy_inner=False)
    assert needed == [av_recording.segments[i] for i in (2, 3, 6)]  # previous, head, tail
    remote = [
        s
        if s in needed
        else SourceSegment(
            path=tmp_path / "not-here.ts", start_s=s.start_s, duration_s=s.duration_s
        )
        for s in av_recording.segments
    ]
    result = cut_clip(
        remote, start_s=6.5, end_s=13.1, directory=tmp_path / "c", has_video=True, copy_inner=False
    )
    inner = result.segments[1:-1]
    assert [s.copied_from for s in inner] == [tmp_path / "not-here.ts"] * 2
    assert not any(s.path.exists() for s in inner)


def test_a_clip_across_a_new_timeline(tmp_path) -> None:
    """A publisher's clock jump at 6 s starts a new timeline; the clip plays straight across."""
    flv = make_flv(tmp_path / "src.flv", seconds=12)
    tags = read_tags(flv)
    keyframe_at = next(
        t.timestamp for t in tags if t.type_id == 9 and t.body[0] >> 4 == 1 and t.timestamp > 5000
    )
    for tag in tags:
        if tag.timestamp >= keyframe_at:
            tag.timestamp += 3_600_000
    segments = record(write_flv(tmp_path / "jumped.flv", tags), tmp_path / "segments")["source"]
    assert [s.discontinuity for s in segments] == [False] * 3 + [True] + [False] * 2
    result = cut_clip(
        segments,
        start_s=5.0,
        end_s=9.0,
        directory=tmp_path / "clip",
        has_video=True,
        audio_path=tmp_path / "a.m4a",
    )
    assert [s.discontinuity for s in result.segments] == [False, True, True]
    assert [s.reencoded for s in result.segments] == [True, False, True]
    played = play(result.playlist_path)
    assert played.errors == []
    # Before the jump frame n sits at frame0 + n / RATE; after it, the new timeline starts with
    # the keyframe (frame 180) where the playlist puts segment 3.
    frame0 = measure(segments).frames_s[0]  # before the jump, one timeline
    first = math.ceil((5.0 - frame0) * RATE - 1e-6)
    last = 180 + math.ceil((9.0 - segments[3].start_s) * RATE - 1e-6) - 1
    assert played.frames == list(range(first, last + 1))
    assert result.audio_duration_s == pytest.approx(4.0, abs=1 / 44100)
    assert len(play(tmp_path / "a.m4a").audio) / 44100 == pytest.approx(4.0, abs=AAC_FRAME_S)


# --- audio only ----------------------------------------------------------------------------------


def test_audio_only_clip_is_cut_on_audio_frames(audio_recording, tmp_path) -> None:
    result = cut(
        audio_recording, tmp_path, 6.5, 13.1, has_video=False, audio_path=tmp_path / "a.m4a"
    )
    head, *inner, tail = result.segments
    assert not any(s.reencoded for s in result.segments)
    assert head.copied_from is None and tail.copied_from is None
    for seg in inner:
        assert seg.path.read_bytes() == seg.source.path.read_bytes()
    assert "#EXT-X-DISCONTINUITY" not in result.playlist  # one encoding throughout
    # At most one AAC frame of slack at each end.
    assert 6.5 - AAC_FRAME_S < head.start_s <= 6.5
    assert 6.6 <= result.duration_s < 6.6 + 2 * AAC_FRAME_S
    played = play(result.playlist_path)
    assert played.errors == [] and played.dts_backwards == 0
    # Where a player starts (the first sample it decodes) to the tone.
    assert played.onset() == pytest.approx(audio_recording.tone_s - 6.5, abs=0.025)
    audio_file = play(result.audio_path)
    assert audio_file.onset() == pytest.approx(audio_recording.tone_s - 6.5, abs=0.025)
    assert len(audio_file.audio) / 44100 == pytest.approx(6.6, abs=AAC_FRAME_S)


def test_the_audio_rendition_of_a_video_room_lines_up_with_its_video(
    av_renditions, tmp_path
) -> None:
    """Variants of one clip must match discontinuity for discontinuity (RFC 8216)."""
    video = cut_clip(
        av_renditions["source"].segments,
        start_s=6.5,
        end_s=13.1,
        directory=tmp_path / "source",
        has_video=True,
    )
    audio = cut_clip(
        av_renditions["audio"].segments,
        start_s=6.5,
        end_s=13.1,
        directory=tmp_path / "audio",
        has_video=False,
        boundary_discontinuities=True,
    )
    assert [s.discontinuity for s in audio.segments] == [s.discontinuity for s in video.segments]
    for a, v in zip(audio.segments, video.segments, strict=True):
        assert a.start_s == pytest.approx(v.start_s, abs=AAC_FRAME_S + FRAME_S)
    played = play(audio.playlist_path)
    assert played.errors == []
    assert played.onset() == pytest.approx(av_renditions["audio"].tone_s - 6.5, abs=0.025)


def test_audio_only_clip_inside_one_segment(audio_recording, tmp_path) -> None:
    result = cut(audio_recording, tmp_path, 7.0, 7.9, has_video=False)
    assert len(result.segments) == 1
    played = play(result.playlist_path)
    assert played.onset() == pytest.approx(audio_recording.tone_s - 7.0, abs=0.025)
    assert result.duration_s == pytest.approx(0.9, abs=2 * AAC_FRAME_S)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (5.0, 5.0, r"clip end 5\.000 s is not after its start 5\.000 s"),
        (6.0, 2.0, r"clip end 2\.000 s is not after its start 6\.000 s"),
        (-1.0, 3.0, r"clip start -1\.000 s is before the recording's start"),
        (15.0, 25.0, r"clip end 25\.000 s is beyond the recording's end \(20\.0\d\d s\)"),
        (math.nan, 3.0, r"not a pair of numbers"),
    ],
)
def test_bad_ranges_are_clip_range_errors(av_recording, tmp_path, start, end, message) -> None:
    with pytest.raises(ClipRangeError, match=message):
        cut(av_recording, tmp_path, start, end)
    assert not (tmp_path / "clip" / "clip.m3u8").exists()


def test_no_segments_is_a_clip_range_error(tmp_path) -> None:
    with pytest.raises(ClipRangeError, match="no segments"):
        cut_clip([], start_s=0, end_s=1, directory=tmp_path, has_video=False)


def test_a_range_between_two_frames_is_a_clip_range_error(av_recording, tmp_path) -> None:
    seg = av_recording.segments[4]
    with pytest.raises(ClipRangeError, match="holds no video frame"):
        cut(av_recording, tmp_path, seg.end_s - 0.02, seg.end_s - 0.01)
