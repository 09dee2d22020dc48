"""RTMP media to packets without a demuxer: the same packets FFmpeg's FLV demuxer makes, and the
same segments, byte for byte, on media made by the ffmpeg binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from tests.utils.flvfile import read_tags, write_flv
from tests.utils.media import FFMPEG
from transcode.errors import TranscodeError
from transcode.flv import AUDIO, VIDEO, FlvPackets, FlvSegmenter, is_frame
from transcode.segmenter import SegmentClosed, Segmenter

ENCODINGS = {
    # B-frames make composition offsets (pts != dts); a 1 s GOP makes several keyframes.
    "h264+aac": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "30", "-c:a", "aac"],
    # ffmpeg writes H.265 in FLV with the extended (Enhanced RTMP) video header.
    "hevc+aac": [
        *("-c:v", "libx265", "-x265-params", "log-level=error:bframes=2", "-g", "30"),
        *("-c:a", "aac"),
    ],
    "h264+mp3": ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "libmp3lame"],
    "aac": ["-vn", "-c:a", "aac"],
}


@pytest.fixture(scope="module", params=sorted(ENCODINGS))
def media(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flv") / f"{request.param}.flv"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
        + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
        + ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "5"]
        + ENCODINGS[request.param]
        + ["-f", "flv", str(path)],
        check=True,
    )
    return path


def test_packets_are_the_demuxers(media) -> None:
    with av.open(str(media)) as demuxer:
        streams = (next(iter(demuxer.streams.video), None), next(iter(demuxer.streams.audio), None))
        theirs = [
            (p.stream.index, p.pts, p.dts, p.is_keyframe, bytes(p))
            for p in demuxer.demux()
            if p.size
        ]
        packets = FlvPackets(*streams)
        ours = []
        for t in read_tags(media):
            found = packets.packet(t.type_id, t.timestamp, t.body)
            if found is not None:
                packet, index = found
                ours.append((index, packet.pts, packet.dts, packet.is_keyframe, bytes(packet)))
    assert len(theirs) > 100
    assert ours == theirs
    assert packets.dropped == 0


def segments_both_ways(path: Path, out: Path, batch: int = 7) -> tuple[list, list]:
    """Segment one FLV file with the demuxer and as RTMP would hand it over (tag bodies in
    batches)."""
    by_demuxer: list[SegmentClosed] = []
    with path.open("rb") as source:
        Segmenter(
            source=source, input_format="flv", directory=out / "demux", on_segment=by_demuxer.append
        ).run()
    by_tags: list[SegmentClosed] = []
    segmenter = FlvSegmenter(label="t", directory=out / "tags", on_segment=by_tags.append)
    tags = [(t.type_id, t.timestamp, t.body) for t in read_tags(path)]
    for i in range(0, len(tags), batch):
        segmenter.push(tags[i : i + batch])
    segmenter.finish()
    return by_demuxer, by_tags


def test_segments_are_the_same_bytes_as_through_the_demuxer(media, tmp_path) -> None:
    by_demuxer, by_tags = segments_both_ways(media, tmp_path)
    assert len(by_demuxer) >= 3
    assert [(s.rendition, s.sequence, s.start_s, s.size_bytes) for s in by_tags] == [
        (s.rendition, s.sequence, s.start_s, s.size_bytes) for s in by_demuxer
    ]
    for ours, theirs in zip(by_tags, by_demuxer, strict=True):
        assert ours.path.read_bytes() == theirs.path.read_bytes(), ours.path.name
        assert ours.duration_s == pytest.approx(theirs.duration_s, abs=0.03)


def test_a_track_that_starts_later_is_dropped_and_counted(tmp_path, caplog) -> None:
    """A publish that began audio-only (camera off): video tags that come later have no stream
    to go to. They are counted and logged; the audio is recorded whole."""
    source = tmp_path / "av.flv"
    subprocess.run(
        [
            *(FFMPEG, "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"),
            *("-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "4"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(source)),
        ],
        check=True,
    )
    tags = [
        (t.type_id, t.timestamp, t.body)
        for t in read_tags(source)
        if t.type_id == AUDIO or (t.timestamp >= 2000 and is_frame(t.type_id, t.body))
    ]
    later_video = sum(1 for t in tags if t[0] == VIDEO)
    segments: list[SegmentClosed] = []
    segmenter = FlvSegmenter(label="late", directory=tmp_path / "out", on_segment=segments.append)
    for t in tags:
        segmenter.push([t])
    segmenter.finish()
    assert {s.rendition for s in segments} == {"source"}
    assert sum(s.duration_s for s in segments) == pytest.approx(4, abs=0.1)
    assert f"late: {later_video} frames of a track that was not there" in caplog.text


def test_unsupported_codecs_and_garbage_are_transcode_errors(tmp_path) -> None:
    # Speex audio (SoundFormat 11): the probe finds it, the segmenter refuses it by name.
    speex = [(AUDIO, ts, bytes([0xB2]) + bytes(40)) for ts in range(0, 1000, 20)]
    with pytest.raises(TranscodeError, match="not supported: publish AAC or MP3"):
        FlvSegmenter(label="s", directory=tmp_path / "s").push(speex)
    garbage = [(VIDEO, ts, b"\x17\x01\x00\x00\x00" + bytes(30)) for ts in range(0, 1000, 33)]
    # H.264 tags whose NAL units are zeros: the muxer refuses them; that is an error to stop
    # on, and what was written is still closed.
    segmenter = FlvSegmenter(label="g", directory=tmp_path / "g")
    with pytest.raises(TranscodeError, match="g: the media could not be segmented"):
        segmenter.push(garbage)
    segmenter.finish()


def test_a_publish_shorter_than_the_probe_is_recorded(media, tmp_path) -> None:
    """Everything is held until the probe; a publish that ends first is segmented at the end."""
    tags = [(t.type_id, t.timestamp, t.body) for t in read_tags(media) if t.timestamp < 300]
    segments: list[SegmentClosed] = []
    segmenter = FlvSegmenter(label="s", directory=tmp_path, on_segment=segments.append)
    segmenter.push(tags[:2])
    assert segmenter.segmenter is None  # headers only: still probing
    segmenter.push(tags[2:])
    segmenter.finish()
    assert segments and all(s.path.stat().st_size for s in segments)


def test_write_flv_round_trips(media, tmp_path) -> None:
    tags = read_tags(media)
    assert read_tags(write_flv(tmp_path / "copy.flv", tags)) == tags
