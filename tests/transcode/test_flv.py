"""RTMP media to packets without a demuxer: the same packets FFmpeg's FLV demuxer makes, and the
same segments, byte for byte, on media made by the ffmpeg binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from tests.utils.flvfile import Tag, read_tags, write_flv
from tests.utils.media import FFMPEG
from transcode.errors import TranscodeError
from transcode.flv import AUDIO, MAX_RESTARTS, VIDEO, FlvPackets, FlvSegmenter, is_frame
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
    """AAC frames go to the muxer in runs (one PES for several ADTS frames): there the same
    cuts, the same decoded audio frame for frame and the same video packets; elsewhere (MP3)
    the same bytes."""
    by_demuxer, by_tags = segments_both_ways(media, tmp_path)
    assert len(by_demuxer) >= 3
    assert [(s.rendition, s.sequence, s.start_s) for s in by_tags] == [
        (s.rendition, s.sequence, s.start_s) for s in by_demuxer
    ]
    aac = media.stem.endswith("aac")
    for ours, theirs in zip(by_tags, by_demuxer, strict=True):
        assert ours.duration_s == pytest.approx(theirs.duration_s, abs=0.03)
        if aac:
            assert _decoded(ours.path) == _decoded(theirs.path), ours.path.name
            assert _video(ours.path) == _video(theirs.path), ours.path.name
            assert ours.size_bytes < theirs.size_bytes  # fewer PES headers and less padding
        else:
            assert ours.size_bytes == theirs.size_bytes
            assert ours.path.read_bytes() == theirs.path.read_bytes(), ours.path.name


def _decoded(path: Path) -> tuple[float, list[bytes]]:
    """The first frame's time and every frame's samples. Within a run of ADTS frames a
    player times frames by their sample counts, not FLV's whole milliseconds: only the
    first frame's time is the same to the tick."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    return float(frames[0].time), [bytes(f.planes[0]) for f in frames]


def _video(path: Path) -> list[tuple[int | None, int | None, bool, bytes]]:
    """Every video packet of a segment: timing, key flag and bytes (none in an audio one)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return []
        return [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in container.demux(video=0) if p.size]


def _halves(out: Path, encoding: str) -> list[list[Tag]]:
    """Two 3 s publishes of one encoder: 320x240 with 44.1 kHz audio, then 640x360 with
    22.05 kHz, each with its own sequence headers."""
    halves = []
    for i, size in enumerate(("320x240", "640x360")):
        half = out / f"{i}.flv"
        subprocess.run(
            [
                *(FFMPEG, "-hide_banner", "-loglevel", "error", "-y"),
                *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"),
                *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={44100 // (i + 1)}"),
                *("-t", "3", *ENCODINGS[encoding], "-f", "flv", str(half)),
            ],
            check=True,
        )
        halves.append(read_tags(half))
    return halves


@pytest.mark.parametrize("encoding", ["h264+aac", "hevc+aac"])
def test_an_encoder_restarted_with_new_parameters_is_recorded_after_a_discontinuity(
    encoding, tmp_path, caplog
) -> None:
    """A phone app that restarts its encoder at 3 s with a new resolution and audio rate but
    keeps the connection: new sequence headers come mid-stream. The segmenting starts over
    there with a new probe; every segment after it carries the new parameters and plays."""
    first, second = _halves(tmp_path, encoding)
    # The first encoder stops at 3 s (its audio ran on a few frames past), the second starts.
    tags = [t for t in first if t.timestamp < 3000]
    tags += [Tag(t.type_id, t.timestamp + 3000, t.body) for t in second if t.type_id != 18]

    bodies = [(t.type_id, t.timestamp, t.body) for t in tags]
    started, segments = _segment_in_batches(bodies, 7, "phone", tmp_path / "out")
    assert "phone: the encoder restarted with new parameters" in caplog.text
    # A new probe: the recorder hears the new size (the master playlist announces it).
    assert [(i.width, i.height) for i in started] == [(320, 240), (640, 360)]
    for rendition in ("source", "audio"):
        mine = [s for s in segments if s.rendition == rendition]
        assert sum(s.duration_s for s in mine) == pytest.approx(6, abs=0.1)
        assert [s.discontinuity for s in mine].count(True) == 1
        after = False
        for s in mine:
            after = after or s.discontinuity
            played = _play(s.path)
            assert played["audio"] == {22050 if after else 44100}, s.path.name
            if rendition == "source":
                assert played["video"] == {(640, 360) if after else (320, 240)}, s.path.name


def test_an_encoder_that_keeps_restarting_starts_over_at_most_max_restarts_times(
    tmp_path, caplog
) -> None:
    """A publisher that switches between two encoders every second, 12 times: the first
    MAX_RESTARTS switches start the segmenting over (one probe and one discontinuity each,
    even when a switch's video and audio sequence headers come in different batches), the
    rest are recorded as they come, and the recording runs to the end."""
    halves = _halves(tmp_path, "h264+aac")
    tags = []
    for k in range(12):  # each half's first second: its sequence headers, then a keyframe
        half = halves[k % 2]
        tags += [(t.type_id, t.timestamp + 1000 * k, t.body) for t in half if t.timestamp < 1000]
    # Batches of 7 split the two sequence headers of some switches (checked below).
    headers = [not is_frame(t, body) for t, _, body in tags]
    assert any(headers[i] and headers[i + 1] for i in range(6, len(tags) - 1, 7))
    started, segments = _segment_in_batches(tags, 7, "toggler", tmp_path / "out")
    assert MAX_RESTARTS < 11
    assert len(started) == 1 + MAX_RESTARTS
    assert caplog.text.count("toggler: the encoder restarted with new parameters") == MAX_RESTARTS
    assert f"toggler: started over {MAX_RESTARTS} times" in caplog.text
    source = [s for s in segments if s.rendition == "source"]
    # One segment per second up to the last start-over, 2 s segments after it.
    assert [s.discontinuity for s in source] == [False] + [True] * MAX_RESTARTS + [False] * (
        (11 - MAX_RESTARTS) // 2
    )
    assert sum(s.duration_s for s in source) == pytest.approx(12, abs=0.2)


def test_a_repeated_sequence_header_changes_nothing(tmp_path) -> None:
    """Some encoders send the same decoder configuration before every keyframe."""
    path = tmp_path / "plain.flv"
    subprocess.run(
        [
            *(FFMPEG, "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"),
            *("-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "5", *ENCODINGS["h264+aac"]),
            *("-f", "flv", str(path)),
        ],
        check=True,
    )
    tags = read_tags(path)
    headers = [t for t in tags if t.type_id in (AUDIO, VIDEO) and not is_frame(t.type_id, t.body)]
    repeated = []
    for t in tags:
        if t.type_id == VIDEO and t.body[0] >> 4 == 1 and is_frame(VIDEO, t.body):
            repeated += [Tag(h.type_id, t.timestamp, h.body) for h in headers]
        repeated.append(t)
    by_tags = []
    for source, out in ((tags, "plain"), (repeated, "repeated")):
        segments: list[SegmentClosed] = []
        segmenter = FlvSegmenter(label=out, directory=tmp_path / out, on_segment=segments.append)
        for t in source:
            segmenter.push([(t.type_id, t.timestamp, t.body)])
        segmenter.finish()
        by_tags.append(segments)
    plain, again = by_tags
    assert len(again) == len(plain) >= 4
    assert not any(s.discontinuity for s in again)
    for a, b in zip(plain, again, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()


def _segment_in_batches(
    tags: list, batch: int, label: str, out: Path
) -> tuple[list, list[SegmentClosed]]:
    """Tag bodies through an FlvSegmenter, `batch` at a time: what `on_start` and
    `on_segment` were told."""
    started: list = []
    segments: list[SegmentClosed] = []
    segmenter = FlvSegmenter(
        label=label, directory=out, on_start=started.append, on_segment=segments.append
    )
    for i in range(0, len(tags), batch):
        segmenter.push(tags[i : i + batch])
    segmenter.finish()
    return started, segments


def _play(path: Path) -> dict[str, set]:
    """Decode a whole segment (any decoder error fails the test): the video sizes and audio
    sample rates it carries."""
    seen: dict[str, set] = {"video": set(), "audio": set()}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                seen["video"].add((frame.width, frame.height))
            else:
                seen["audio"].add(frame.sample_rate)
    return seen


@pytest.fixture(scope="module")
def av_flv(tmp_path_factory) -> Path:
    """6 s of H.264 (a keyframe every second) and AAC."""
    source = tmp_path_factory.mktemp("av") / "av.flv"
    subprocess.run(
        [
            *(FFMPEG, "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"),
            *("-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "6"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", str(source)),
        ],
        check=True,
    )
    return source


def test_video_frames_without_a_sequence_header_are_dropped_and_counted(
    av_flv, tmp_path, caplog
) -> None:
    """A publish that began audio-only, then video frames with no decoder configuration: there
    is nothing to decode them with. They are counted and logged; the audio is recorded whole."""
    tags = [
        (t.type_id, t.timestamp, t.body)
        for t in read_tags(av_flv)
        if t.type_id == AUDIO or (t.timestamp >= 2000 and is_frame(t.type_id, t.body))
    ]
    later_video = sum(1 for t in tags if t[0] == VIDEO)
    segments: list[SegmentClosed] = []
    segmenter = FlvSegmenter(label="late", directory=tmp_path / "out", on_segment=segments.append)
    for t in tags:
        segmenter.push([t])
    segmenter.finish()
    assert {s.rendition for s in segments} == {"source"}
    assert sum(s.duration_s for s in segments) == pytest.approx(6, abs=0.1)
    assert f"late: {later_video} frames were not recorded" in caplog.text


@pytest.mark.parametrize("batch", [1, 7])
def test_a_camera_turned_on_mid_publish_is_recorded_from_its_first_keyframe(
    av_flv, tmp_path, caplog, batch
) -> None:
    """A video room whose host began with the camera off and turned it on at 2.5 s: the
    encoder sends its sequence header then, and frames; the first keyframe is at 3 s. From
    there the room is segmented with video (and gets its audio-only rendition) after a
    discontinuity, as if the publisher had reconnected; the audio before is kept whole."""
    tags = []
    for t in read_tags(av_flv):
        if t.type_id == AUDIO:
            tags.append((t.type_id, t.timestamp, t.body))
        elif t.type_id == VIDEO and not is_frame(VIDEO, t.body) and t.timestamp == 0:
            tags.append((VIDEO, 2500, t.body))  # the sequence header, when the camera starts
        elif t.type_id == VIDEO and t.timestamp >= 2500:
            tags.append((t.type_id, t.timestamp, t.body))
    tags.sort(key=lambda t: t[1])  # stable: the header stays before the frames at 2500
    before_key = sum(1 for t in tags if t[0] == VIDEO and 2500 <= t[1] < 3000 and t[2][1] == 1)
    caplog.set_level("INFO", logger="transcode.flv")
    started, segments = _segment_in_batches(tags, batch, "cam", tmp_path / "out")

    assert [info.renditions for info in started] == [["source"], ["source", "audio"]]
    assert (started[1].width, started[1].height) == (320, 240)
    assert "cam: video started mid-publish" in caplog.text
    assert f"cam: {before_key} frames were not recorded" in caplog.text
    source = [s for s in segments if s.rendition == "source"]
    audio = [s for s in segments if s.rendition == "audio"]
    assert [s.sequence for s in source] == list(range(len(source)))  # no gap in the numbering
    (turn,) = [s for s in source if s.discontinuity]
    assert turn.start_s == pytest.approx(3.0, abs=0.05)
    assert sum(s.duration_s for s in source) == pytest.approx(6, abs=0.1)
    assert audio[0].sequence == turn.sequence and audio[0].discontinuity
    assert sum(s.duration_s for s in audio) == pytest.approx(3, abs=0.1)
    for s in source:
        played = _play(s.path)
        assert played["audio"] == {44100}
        assert played["video"] == ({(320, 240)} if s.sequence >= turn.sequence else set())


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
