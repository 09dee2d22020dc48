"""A host's camera and microphone go off and on mid-live, against `afterlive serve` fed by
real ffmpeg publishers over RTMP: none of it stalls the room, its mix or the other host."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import av
import httpx
import pytest

from storage import keys as K
from tests.e2e.test_live_rooms import at, audio_of, finished, invite, mix_dropped, spans
from tests.utils.flvfile import read_tags, write_flv
from tests.utils.media import FFMPEG, publish_rtmp, synthetic_input, tones_per_second
from tests.utils.service import Service, module_service
from transcode import flv
from transcode.playlists import parse_media_playlist

service = module_service(
    "room-devices", AFTERLIVE_RECONNECT_GRACE="3s", AFTERLIVE_PUBLISHER_TIMEOUT="4s"
)

ANA_HZ, BEA_HZ = 300, 500
LIVE_S = 14
CAMERA_OFF = (4.0, 8.0)  # Bea's camera: no video from 4 s to 8 s
MUTED = (6.0, 10.0)  # Bea's microphone: muted, her app sends no audio from 6 s to 10 s


def bea_media(tmp_path) -> str:
    """Bea's 14 s (a picture, a 500 Hz tone), encoded once, with her camera off and her
    microphone muted as an app does it: no tags of that kind for a while."""
    whole = tmp_path / "bea-whole.flv"
    args = [a for a in synthetic_input(seconds=LIVE_S, tone_hz=BEA_HZ) if a != "-re"]
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, "-f", "flv", str(whole)],
        check=True,
    )

    def dropped(tag) -> bool:
        t = tag.timestamp / 1000
        if tag.type_id == flv.VIDEO and CAMERA_OFF[0] <= t < CAMERA_OFF[1]:
            return True
        return tag.type_id == flv.AUDIO and MUTED[0] <= t < MUTED[1]

    tags = [t for t in read_tags(whole) if not dropped(t)]
    assert len(tags) < len(read_tags(whole)) - 100
    return str(write_flv(tmp_path / "bea.flv", tags))


def replay_rtmp(path: str, url: str) -> subprocess.Popen[str]:
    """A real publisher sending a file as it is, paced: ffmpeg -re -c copy. Its muxer would hold
    the audio back while no video comes (waiting up to 10 s to interleave); an app whose camera
    is off sends its audio on, so the wait is cut to 100 ms."""
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-i", path, "-c", "copy"]
    return subprocess.Popen(
        [*args, "-max_interleave_delta", "100000", "-f", "flv", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def frame_times(service: Service, recording_id: str, rendition: str, tmp_path) -> list[float]:
    """Wall times (s after the playlist's first PROGRAM-DATE-TIME) of a rendition's video
    frames, decoded."""
    store = service.store()
    key = K.media_playlist(recording_id, rendition)
    playlist = parse_media_playlist(store.get(key).decode())
    origin = playlist.segments[0].program_date_time
    times = []
    for seg in playlist.segments:
        offset = (seg.program_date_time - origin).total_seconds()
        path = tmp_path / f"{rendition.replace('/', '-')}-{seg.uri}"
        path.write_bytes(store.get(f"{key.rsplit('/', 1)[0]}/{seg.uri}"))
        with av.open(str(path)) as media:
            if not media.streams.video:
                continue
            stream = media.streams.video[0]
            frames = list(media.decode(stream))
            if frames:
                first = frames[0].time
                times += [offset + f.time - first for f in frames]
    return times


def test_camera_off_and_microphone_muted_mid_live_never_stall_the_room(service, tmp_path) -> None:
    token = service.new_creator("Ana")
    room = service.new_room(token, "video", "Devices")
    bea = invite(service, token, room, "Bea")
    media = bea_media(tmp_path)
    dropped_before = mix_dropped(service)

    ana_live = publish_rtmp(room["rtmp_url"], seconds=LIVE_S, tone_hz=ANA_HZ)
    bea_live = replay_rtmp(media, bea["rtmp_url"])
    finished(ana_live, bea_live)
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id

    # Ana's seat never waited for Bea's: every second carries her tone, segments on time.
    ana, samples, rate = audio_of(service, rid, "audio", tmp_path)
    assert abs(ana.duration_s() - LIVE_S) <= 2.1, ana.duration_s()
    assert all(t == {ANA_HZ} for t in tones_per_second(samples, rate, [ANA_HZ, BEA_HZ]))
    assert max(s.duration_s for s in ana.segments) <= 2.1

    # Bea's seat: one publish, her pictures before the camera went off and after it came back,
    # none in between; her recording runs to the end of what she sent.
    bea_source = parse_media_playlist(
        service.store().get(K.media_playlist(rid, "hosts/2/source")).decode()
    )
    assert not any(s.discontinuity for s in bea_source.segments)
    assert abs(bea_source.duration_s() - LIVE_S) <= 2.1, bea_source.duration_s()
    frames = frame_times(service, rid, "hosts/2/source", tmp_path)
    assert any(t < CAMERA_OFF[0] - 0.5 for t in frames) and any(
        t > CAMERA_OFF[1] + 1 for t in frames
    )
    off = [t for t in frames if CAMERA_OFF[0] + 0.2 <= t < CAMERA_OFF[1] - 0.2]
    assert not off, off[:5]

    # The mix: Ana all along; Bea while her microphone was on, and not while it was muted.
    mix, samples, rate = audio_of(service, rid, "mix", tmp_path)
    origin = mix.segments[0].program_date_time
    bea_start = bea_source.segments[0].program_date_time
    heard = tones_per_second(samples, rate, [ANA_HZ, BEA_HZ])
    assert len(heard) >= LIVE_S - 2
    muted = (bea_start + timedelta(seconds=MUTED[0]), bea_start + timedelta(seconds=MUTED[1]))
    [(ana_from, ana_to)] = spans(service, rid, "audio")
    checked = {"ana": 0, "bea on": 0, "bea muted": 0}
    margin = timedelta(seconds=0.5)
    for second, tones in enumerate(heard):
        lo, hi = origin + timedelta(seconds=second), origin + timedelta(seconds=second + 1)
        if ana_from + margin <= lo and hi <= ana_to - margin:
            assert ANA_HZ in tones, (second, tones)
            checked["ana"] += 1
        if muted[0] + margin <= lo and hi <= muted[1] - margin:
            assert BEA_HZ not in tones, (second, tones)
            checked["bea muted"] += 1
        elif (
            bea_start + margin <= lo
            and hi <= bea_start + timedelta(seconds=LIVE_S) - margin
            and (hi <= muted[0] - margin or lo >= muted[1] + margin)
        ):
            assert BEA_HZ in tones, (second, tones)
            checked["bea on"] += 1
    assert checked["ana"] >= LIVE_S - 3 and checked["bea on"] >= 6 and checked["bea muted"] >= 2
    dropped = mix_dropped(service)
    assert all(dropped[why] - dropped_before[why] < 0.05 for why in dropped), dropped

    # Who spoke when: Bea's muted stretch splits her into two turns.
    turns = httpx.get(f"{service.api}/api/recordings/{rid}/speakers", timeout=10).json()
    bea_turns = [t for t in turns if t["seat"] == 2]
    assert len(bea_turns) == 2, bea_turns
    gap_from = (at(bea_turns[0]["end_at"]) - bea_start).total_seconds()
    gap_to = (at(bea_turns[1]["start_at"]) - bea_start).total_seconds()
    assert gap_from == pytest.approx(MUTED[0], abs=0.6) and gap_to == pytest.approx(
        MUTED[1], abs=0.6
    )
