"""Waveform peaks of real recordings: the production segmenter's segments of marked media (silence
with a 1 s tone burst at a known time), decoded by `transcode.waveform`; and the studio's waveform
route on such segments put in the real store."""

from __future__ import annotations

import math
import time
from datetime import timedelta

import numpy as np
import pytest

from storage import keys as K
from tests.api.conftest import Api, api, api_factory, clock, seed_recording  # noqa: F401
from tests.api.test_recordings_api import expire
from tests.transcode.test_clipper import make_flv, record
from transcode.clipper import SourceSegment
from transcode.errors import TranscodeError
from transcode.waveform import PeakMeter, downsample, peaks

SECONDS = 12
TONE_AT_S = 5.0
TONE_S = 1.0
PPS = 10
# AAC smears a burst's edges by a frame or two, and the encoders' priming moves the audio a few
# tens of ms along the timeline: this far from an edge, a bucket must be clearly loud or silent.
MARGIN_S = 0.25


@pytest.fixture(scope="module")
def renditions(tmp_path_factory) -> dict[str, list[SourceSegment]]:
    """A 12 s video room (rendition `source` is H.264 + AAC, `audio` is AAC alone)."""
    work = tmp_path_factory.mktemp("waveform-av")
    flv = make_flv(work / "av.flv", seconds=SECONDS, tone_at_s=TONE_AT_S, tone_s=TONE_S)
    return record(flv, work / "segments")


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory) -> list[SourceSegment]:
    work = tmp_path_factory.mktemp("waveform-a")
    flv = make_flv(work / "a.flv", video=False, seconds=SECONDS, tone_at_s=TONE_AT_S, tone_s=TONE_S)
    return record(flv, work / "segments")["source"]


def assert_burst_only(values: list[float], points_per_second: float) -> None:
    loud = [i for i, v in enumerate(values) if v > 0.5]
    quiet_before = values[: math.floor((TONE_AT_S - MARGIN_S) * points_per_second)]
    quiet_after = values[math.ceil((TONE_AT_S + TONE_S + MARGIN_S) * points_per_second) :]
    inside = values[
        math.ceil((TONE_AT_S + MARGIN_S) * points_per_second) : math.floor(
            (TONE_AT_S + TONE_S - MARGIN_S) * points_per_second
        )
    ]
    assert loud, "no loud bucket at all"
    assert max(quiet_before) < 0.02 and max(quiet_after) < 0.02, (quiet_before, quiet_after)
    assert min(inside) > 0.7, inside  # the burst is 0.8 of full scale on both channels
    assert max(values) <= 1.0
    assert loud[0] / points_per_second == pytest.approx(TONE_AT_S, abs=MARGIN_S)
    assert (loud[-1] + 1) / points_per_second == pytest.approx(TONE_AT_S + TONE_S, abs=MARGIN_S)


@pytest.mark.parametrize("rendition", ["source", "audio"])
def test_peaks_are_high_only_at_the_burst_and_cover_the_whole_recording(renditions, rendition):
    segments = renditions[rendition]
    assert len(segments) >= 5  # decoded segment after segment, not as one file
    values = peaks([s.path for s in segments], points_per_second=PPS)
    duration = sum(s.duration_s for s in segments)
    assert len(values) == pytest.approx(duration * PPS, abs=1)
    assert_burst_only(values, PPS)


def test_audio_only_recording(audio_only):
    values = peaks([s.path for s in audio_only], points_per_second=PPS)
    assert len(values) == pytest.approx(SECONDS * PPS, abs=1)
    assert_burst_only(values, PPS)


def test_given_durations_put_the_points_on_the_playlist_timeline(renditions):
    segments = renditions["audio"]
    meter = PeakMeter(points_per_second=PPS)
    for segment in segments:
        meter.feed(segment.path, duration_s=segment.duration_s)
    duration = sum(s.duration_s for s in segments)
    assert meter.duration_s == pytest.approx(duration)
    assert len(meter.peaks()) == math.ceil(duration * PPS - 1e-6)
    assert_burst_only(meter.peaks(), PPS)


def test_a_meter_fed_in_steps_equals_one_fed_at_once(renditions):
    """A live recording's waveform grows by its new segments only: same answer."""
    segments = renditions["audio"]
    whole = PeakMeter(points_per_second=25)
    for segment in segments:
        whole.feed(segment.path, duration_s=segment.duration_s)
    grown = PeakMeter(points_per_second=25)
    for segment in segments[:2]:
        grown.feed(segment.path, duration_s=segment.duration_s)
    assert len(grown.peaks()) < len(whole.peaks())
    for segment in segments[2:]:
        grown.feed(segment.path, duration_s=segment.duration_s)
    assert grown.peaks() == whole.peaks()
    assert grown.segments == len(segments)


def test_an_undecodable_segment_is_silence_of_its_duration(renditions, tmp_path):
    segments = renditions["audio"]
    broken = tmp_path / "broken.ts"
    broken.write_bytes(b"not a transport stream" * 100)
    meter = PeakMeter(points_per_second=PPS)
    meter.feed(segments[0].path, duration_s=segments[0].duration_s)
    meter.feed(broken, duration_s=2.0)
    meter.feed(segments[1].path, duration_s=segments[1].duration_s)
    start = math.ceil(segments[0].duration_s * PPS)
    assert meter.peaks()[start : start + 2 * PPS] == [0.0] * (2 * PPS)
    assert meter.duration_s == pytest.approx(segments[0].duration_s + 2 + segments[1].duration_s)
    # Without a duration there is no way to place what follows: an error.
    with pytest.raises(TranscodeError, match=r"broken\.ts"):
        peaks([broken], points_per_second=PPS)


def test_decoding_is_fast(renditions):
    segments = renditions["source"]
    t0 = time.perf_counter()
    peaks([s.path for s in segments], points_per_second=50)
    elapsed = time.perf_counter() - t0
    # Video is demuxed but never decoded: 100-350x real time measured on 2 cores; 10x leaves
    # room for a busy machine.
    assert elapsed < SECONDS / 10, elapsed


def test_downsample_keeps_peaks():
    values = np.array([0.1, 0.9, 0.2, 0.3, 0.0, 0.5, 0.4], dtype=np.float32)
    out, factor = downsample(values, points=3)
    assert factor == 3 and out.tolist() == pytest.approx([0.9, 0.5, 0.4])
    same, factor = downsample(values, points=100)
    assert factor == 1 and same is values
    with pytest.raises(TranscodeError):
        downsample(values, points=0)


# -- the studio's route, in process, on the real store ---------------------------------------------


def add_audio_segments(
    service: Api, recording_id: str, segments: list[SourceSegment], *, first: int = 0
) -> None:
    """Real segments stored and indexed as the recorder does, as the `audio` rendition."""
    start = service.clock()
    for seq, segment in enumerate(segments, start=first):
        at = start + timedelta(seconds=2 * seq)
        key = K.media_segment(recording_id, "audio", at, seq, "ts")
        service.store.put_file(key, segment.path)
        service.catalog.add_segment(
            recording_id=recording_id,
            rendition="audio",
            sequence=seq,
            start_at=at,
            duration_s=segment.duration_s,
            key=key,
            size_bytes=segment.path.stat().st_size,
        )


def test_route_draws_the_real_audio_rendition_and_grows_with_a_live(api: Api, renditions):  # noqa: F811
    creator, headers = api.creator()
    segments = renditions["audio"]
    # A live recording: seed_recording's placeholder `source` next to a real `audio`.
    recording = seed_recording(api, creator, segments=1, renditions=("source",), ended=False)
    add_audio_segments(api, recording.id, segments[:2])
    url = f"/api/recordings/{recording.id}/waveform"

    reply = api.client.get(f"{url}?points=2000", headers=headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    first = sum(s.duration_s for s in segments[:2])
    assert body["duration_s"] == pytest.approx(first, abs=0.001)
    assert body["seconds_per_point"] == pytest.approx(0.02)
    assert len(body["points"]) == math.ceil(first * 50 - 1e-6)
    assert max(body["points"]) < 0.02  # the burst comes later

    # The rest of the segments arrive, the burst among them: the waveform grows.
    add_audio_segments(api, recording.id, segments[2:], first=2)
    body = api.client.get(f"{url}?points=120", headers=headers).json()
    total = sum(s.duration_s for s in segments)
    assert body["duration_s"] == pytest.approx(total, abs=0.001)
    assert len(body["points"]) <= 120
    spp = body["seconds_per_point"]
    assert len(body["points"]) * spp == pytest.approx(total, abs=spp)
    assert_burst_only(body["points"], 1 / spp)
    assert not list((api.runtime.settings.data_dir / "work").iterdir())  # temp files removed


def test_route_answers_401_403_404_410_and_422(api: Api):  # noqa: F811
    owner, headers = api.creator()
    _, stranger = api.creator()
    recording = seed_recording(api, owner)  # placeholder bytes, not media: drawn as silence
    url = f"/api/recordings/{recording.id}/waveform"
    body = api.client.get(url, headers=headers).json()
    assert body == {"duration_s": 6.0, "points": [0.0] * 300, "seconds_per_point": 0.02}

    assert api.client.get(url).status_code == 401
    reply = api.client.get(url, headers=stranger)
    assert reply.status_code == 403 and "another creator" in reply.json()["detail"]
    assert api.client.get("/api/recordings/nope/waveform", headers=headers).status_code == 404
    for bad in ("points=0", "points=100000", "points=x"):
        assert api.client.get(f"{url}?{bad}", headers=headers).status_code == 422

    expire(api, recording.id)
    reply = api.client.get(url, headers=headers)
    assert reply.status_code == 410 and "expired" in reply.json()["detail"]
