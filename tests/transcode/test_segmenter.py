"""The copy segmenter on real media made by ffmpeg: where it cuts, what it reports, bad input."""

from __future__ import annotations

import io
import itertools
import subprocess
from pathlib import Path

import av
import pytest

from tests.utils.flvfile import read_tags, write_flv
from tests.utils.media import FFMPEG, synthetic_input
from transcode.errors import TranscodeError
from transcode.flv import FlvSegmenter
from transcode.segmenter import SegmentClosed, Segmenter, StreamInfo


def make_flv(path: Path, **media) -> Path:
    args = [a for a in synthetic_input(**media) if a != "-re"]
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, "-f", "flv", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def av_flv(tmp_path_factory) -> Path:
    return make_flv(tmp_path_factory.mktemp("m") / "av.flv", seconds=10)


@pytest.fixture(scope="module")
def audio_flv(tmp_path_factory) -> Path:
    return make_flv(tmp_path_factory.mktemp("m") / "a.flv", video=False, seconds=10)


def run_segmenter(
    path: Path, out: Path, way: str = "demuxer", **kwargs
) -> tuple[StreamInfo, list[SegmentClosed]]:
    """Segment an FLV file through the demuxer (as an HTTP push is), or as RTMP hands it over:
    tag bodies in batches to FlvSegmenter."""
    infos: list[StreamInfo] = []
    segments: list[SegmentClosed] = []
    callbacks = {"on_start": infos.append, "on_segment": segments.append}
    if way == "demuxer":
        with path.open("rb") as source:
            Segmenter(source=source, input_format="flv", directory=out, **callbacks, **kwargs).run()
    else:
        segmenter = FlvSegmenter(label=str(out), directory=out, **callbacks, **kwargs)
        tags = [(t.type_id, t.timestamp, t.body) for t in read_tags(path)]
        for i in range(0, len(tags), 5):
            segmenter.push(tags[i : i + 5])
        segmenter.finish()
    return infos[0], segments


@pytest.fixture(params=["demuxer", "tags"])
def segment(request):
    """Each test below runs both ways."""
    return lambda path, out, **kwargs: run_segmenter(path, out, request.param, **kwargs)


def of(segments, rendition):
    return [s for s in segments if s.rendition == rendition]


def first_video_frame_is_key(path: Path) -> bool:
    with av.open(str(path)) as c:
        for packet in c.demux(c.streams.video[0]):
            if packet.size:
                return packet.is_keyframe
    return False


def test_video_is_cut_at_keyframes_into_two_renditions(segment, av_flv, tmp_path) -> None:
    info, segments = segment(av_flv, tmp_path, first_sequence=7)
    assert info.renditions == ["source", "audio"]
    assert info.video_codecs.startswith("avc1.") and info.audio_codecs == "mp4a.40.2"
    assert (info.width, info.height, info.frame_rate) == (320, 240, 30.0)
    source, audio = of(segments, "source"), of(segments, "audio")
    assert [s.sequence for s in source] == [s.sequence for s in audio] == list(range(7, 12))
    assert all(abs(s.duration_s - 2.0) < 0.05 for s in source[:-1])
    assert sum(s.duration_s for s in source) == pytest.approx(10, abs=0.1)
    assert all(first_video_frame_is_key(s.path) for s in source)
    # Segments follow each other on one timeline, and the audio rendition cuts where video does.
    for a, b in itertools.pairwise(source):
        assert b.start_s == pytest.approx(a.start_s + a.duration_s)
    for s, a in zip(source, audio, strict=True):
        assert abs(s.start_s - a.start_s) < 0.05
    assert not any(s.discontinuity for s in segments)


def test_audio_only_is_cut_on_time(segment, audio_flv, tmp_path) -> None:
    info, segments = segment(audio_flv, tmp_path, target_s=2.0)
    assert info.renditions == ["source"] and not info.has_video
    assert all(abs(s.duration_s - 2.0) < 0.03 for s in segments[:-1])
    assert sum(s.duration_s for s in segments) == pytest.approx(10, abs=0.1)


def test_first_segment_after_a_reconnect_is_a_discontinuity(segment, audio_flv, tmp_path) -> None:
    _, segments = segment(audio_flv, tmp_path, first_sequence=40, discontinuity=True)
    assert [s.discontinuity for s in segments] == [True] + [False] * (len(segments) - 1)


@pytest.mark.parametrize("jump_ms", [-5000, +3_600_000])
def test_a_timestamp_jump_starts_a_new_timeline_and_loses_nothing(
    segment, av_flv, tmp_path, jump_ms
):
    tags = read_tags(av_flv)
    video_packets = sum(1 for t in tags if t.type_id == 9 and t.body[1] == 1)  # AVC NALU tags
    for tag in tags:
        if tag.timestamp >= 5000:
            tag.timestamp += jump_ms
    jumped = write_flv(tmp_path / "jumped.flv", tags)
    _, segments = segment(jumped, tmp_path / "out")
    source = of(segments, "source")
    flags = [s.discontinuity for s in source]
    assert flags.count(True) == 1 and not flags[0]
    assert [s.discontinuity for s in of(segments, "audio")] == flags
    assert sum(s.duration_s for s in source) == pytest.approx(10, abs=0.2)
    # The segment after the jump starts mid-GOP and runs to the first keyframe after the target.
    assert max(s.duration_s for s in source) < 2 * 2.0 + 0.1
    kept = 0
    for seg in source:  # every packet is kept, in segments that each open on their own
        with av.open(str(seg.path)) as c:
            kept += sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    assert kept == video_packets


@pytest.mark.parametrize("data", [b"this is not flv at all" * 100, b""])
def test_garbage_or_nothing_is_a_transcode_error_in_words(tmp_path, data: bytes) -> None:
    with pytest.raises(TranscodeError) as raised:  # a stream, as an HTTP push body is
        Segmenter(source=io.BytesIO(data), input_format="flv", directory=tmp_path).run()
    # What a publisher can act on, not FFmpeg's "[Errno 541478725] End of file: '<none>'".
    assert "no FLV audio or video in the input (it was empty, or not FLV)" in str(raised.value)
    assert "Errno" not in str(raised.value)


def test_camera_off_mid_publish_is_cut_on_time_and_back_on_at_a_keyframe(segment, av_flv, tmp_path):
    """The host turns the camera off from 3 s to 8 s (no video tags, audio goes on): segments
    stay near the target instead of one 5 s segment, and video comes back at a keyframe."""
    tags = [t for t in read_tags(av_flv) if not (t.type_id == 9 and 3000 <= t.timestamp < 8000)]
    camera_off = write_flv(tmp_path / "camera-off.flv", tags)
    _, segments = segment(camera_off, tmp_path / "out")
    source, audio = of(segments, "source"), of(segments, "audio")
    assert sum(s.duration_s for s in source) == pytest.approx(10, abs=0.1)
    # Cut on time while the camera is off (before this, one segment ran from 2 s to 10 s);
    # once it is back, at the first keyframe past the target again (8 s is 1.94 s into the
    # segment, so the cut waits for the one at 10 s).
    assert [round(s.start_s) for s in source] == [0, 2, 4, 6]
    assert max(s.duration_s for s in source) < 2 * 2.0 + 0.1
    assert [s.sequence for s in audio] == [s.sequence for s in source]
    for seg in source:  # every segment opens on its own: audio only, or a keyframe first
        with av.open(str(seg.path)) as c:
            if c.streams.video and any(p.size for p in c.demux(c.streams.video[0])):
                assert first_video_frame_is_key(seg.path), seg
    assert not any(s.discontinuity for s in segments)


def test_next_cut_hints_follow_both_renditions(segment, av_flv, tmp_path) -> None:
    """What the segmenter tells its source about when it next needs data: after a cut of the
    source, the audio rendition's cut (the next audio frame), then the source's earliest next
    cut a target later. A live channel holds bytes back until then."""
    hints: list[float] = []
    _, segments = segment(av_flv, tmp_path, on_next_cut=hints.append)
    source = of(segments, "source")
    for seg in source[1:]:
        at = hints.index(seg.start_s)  # the audio rendition's pending cut
        assert hints[at + 1] == pytest.approx(seg.start_s + 2.0 - 0.001)
    assert hints[0] == pytest.approx(source[0].start_s + 2.0 - 0.001)
    assert hints == sorted(hints)
