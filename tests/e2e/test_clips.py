"""Clips end to end: a real ffmpeg publisher, `afterlive serve`, the clips API, PyAV playing the
clip from its playback URL, and the clip outliving its recording."""

from __future__ import annotations

import av
import httpx
import pytest

from storage import keys as K
from tests.e2e.test_playback import decode
from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service

service = module_service("clips")


@pytest.fixture(scope="module")
def creator(service: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.new_creator('Clipper')}"}


@pytest.fixture(scope="module")
def recording(service: Service, creator) -> dict:
    room = httpx.post(
        f"{service.api}/api/rooms",
        json={"title": "Clip source", "kind": "video"},
        headers=creator,
        timeout=10,
    ).json()
    publisher = publish_rtmp(room["rtmp_url"], seconds=12)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [rec] = service.wait_ended(room["id"])
    return httpx.get(f"{service.api}/api/recordings/{rec.id}", timeout=10).json()


def wait_done(service: Service, creator, clip: dict) -> dict:
    def done():
        body = httpx.get(clip["status_url"], headers=creator, timeout=10).json()
        assert body["status"] != "failed", body["error"]
        return body if body["status"] == "done" else None

    return wait_until(done, timeout=60, interval=0.3, what="the clip job")


def test_a_clip_is_cut_copied_and_playable(service, creator, recording) -> None:
    reply = httpx.post(
        f"{service.api}/api/recordings/{recording['id']}/clips",
        json={"title": "Best bit", "start_s": 3.5, "end_s": 9.2},
        headers=creator,
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    queued = reply.json()
    assert queued["status"] in ("queued", "running") and queued["playback_url"] is None
    clip = wait_done(service, creator, queued)
    assert clip["progress"] == 100 and abs(clip["duration_s"] - 5.7) < 0.05
    assert clip["source"] == {
        "recording_id": recording["id"],
        "available": True,
        "playback_url": recording["playback_url"],
    }

    seconds, video, audio = decode(clip["playback_url"])
    assert abs(seconds - 5.7) < 0.1
    assert abs(video - 5.7 * 30) <= 2 and audio > 5 * 40

    # Inner segments are byte-identical copies of the recording's; only the ends were cut.
    store = service.store()
    source = {
        store.get(info.key)
        for info in store.list(K.recording_prefix(recording["id"]) + "source/")
        if info.key.endswith(".ts")
    }
    clip_segments = sorted(
        info.key
        for info in store.list(K.clip_prefix(clip["id"]) + "source/")
        if info.key.endswith(".ts")
    )
    copied = [k for k in clip_segments if store.get(k) in source]
    assert len(clip_segments) >= 3 and copied == clip_segments[1:-1]

    m4a = httpx.get(clip["audio_url"], timeout=10)
    assert m4a.status_code == 200
    path = service.data_dir / "clip.m4a"
    path.write_bytes(m4a.content)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert abs(float(stream.duration * stream.time_base) - 5.7) < 0.03


def test_clip_errors_are_specific(service, creator, recording) -> None:
    url = f"{service.api}/api/recordings/{recording['id']}/clips"
    for body, code, words in (
        ({"title": "x", "start_s": 5, "end_s": 5}, 422, "must be after"),
        ({"title": "x", "start_s": -1, "end_s": 3}, 422, "before the recording's start"),
        ({"title": "x", "start_s": 2, "end_s": 60}, 422, "outside the recording"),
        ({"title": "x"}, 422, "give start_s and end_s"),
    ):
        reply = httpx.post(url, json=body, headers=creator, timeout=10)
        assert reply.status_code == code, (body, reply.text)
        assert words in reply.json()["detail"], reply.json()
    other = {"Authorization": f"Bearer {service.new_creator()}"}
    reply = httpx.post(url, json={"title": "x", "start_s": 1, "end_s": 2}, headers=other)
    assert reply.status_code == 403
    reply = httpx.post(
        f"{service.api}/api/recordings/nope/clips",
        json={"title": "x", "start_s": 1, "end_s": 2},
        headers=creator,
    )
    assert reply.status_code == 404
    assert httpx.post(url, json={"title": "x", "start_s": 1, "end_s": 2}).status_code == 401


def test_a_clip_outlives_its_recording(service, creator) -> None:
    room = httpx.post(
        f"{service.api}/api/rooms",
        json={"title": "Gone soon", "kind": "audio"},
        headers=creator,
        timeout=10,
    ).json()
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=6)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [rec] = service.wait_ended(room["id"])
    clip = httpx.post(
        f"{service.api}/api/recordings/{rec.id}/clips",
        json={"title": "Keep", "start_s": 1, "end_s": 4},
        headers=creator,
        timeout=10,
    ).json()
    clip = wait_done(service, creator, clip)

    admin = {"Authorization": f"Bearer {(service.data_dir / 'admin_token').read_text().strip()}"}
    reply = httpx.delete(f"{service.api}/api/admin/recordings/{rec.id}", headers=admin, timeout=30)
    assert reply.status_code == 200
    stranger = {"Authorization": f"Bearer {service.new_creator()}"}
    assert httpx.get(clip["status_url"], headers=stranger, timeout=10).status_code == 403
    after = httpx.get(clip["status_url"], headers=creator, timeout=10).json()
    assert after["status"] == "done"
    assert after["source"] == {"recording_id": rec.id, "available": False, "playback_url": None}
    seconds, _, audio = decode(after["playback_url"])
    assert abs(seconds - 3) < 0.1 and audio > 2 * 40
    # A clip cannot be started on what is gone.
    reply = httpx.post(
        f"{service.api}/api/recordings/{rec.id}/clips",
        json={"title": "late", "start_s": 1, "end_s": 2},
        headers=creator,
    )
    assert reply.status_code == 410 and "taken down" in reply.json()["detail"]


def test_a_clip_by_wall_clock_time(service, creator, recording) -> None:
    from datetime import timedelta

    from transcode.playlists import parse_media_playlist

    media = httpx.get(
        recording["playback_url"].replace("master.m3u8", "source/index.m3u8"), timeout=10
    ).text
    first = parse_media_playlist(media).segments[0].program_date_time
    reply = httpx.post(
        f"{service.api}/api/recordings/{recording['id']}/clips",
        json={
            "title": "by the clock",
            "start_at": (first + timedelta(seconds=2)).isoformat(),
            "end_at": (first + timedelta(seconds=5)).isoformat(),
        },
        headers=creator,
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    clip = wait_done(service, creator, reply.json())
    # PROGRAM-DATE-TIME is written to the millisecond; the catalog keeps microseconds.
    assert abs(clip["start_s"] - 2.0) < 0.002 and abs(clip["end_s"] - 5.0) < 0.002
    assert abs(clip["duration_s"] - 3.0) < 0.05
    reply = httpx.post(
        f"{service.api}/api/recordings/{recording['id']}/clips",
        json={
            "title": "too early",
            "start_at": (first - timedelta(seconds=30)).isoformat(),
            "end_at": first.isoformat(),
        },
        headers=creator,
    )
    assert reply.status_code == 422 and "before the recording's start" in reply.json()["detail"]


def test_cli_clip_shows_progress_and_prints_the_urls(service, creator, recording) -> None:
    import json
    import subprocess

    from tests.utils.service import AFTERLIVE

    token = creator["Authorization"].removeprefix("Bearer ")
    done = subprocess.run(
        [*AFTERLIVE, "clip", recording["id"], "0:01", "0:04.5", "--title", "from the CLI"],
        env=service.env | {"AFTERLIVE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "clip done" in done.stderr and "100%" in done.stderr
    urls = json.loads(done.stdout)
    assert urls["playback_url"].endswith("/master.m3u8") and urls["audio_url"]
    bad = subprocess.run(
        [*AFTERLIVE, "clip", recording["id"], "5", "3"],
        env=service.env | {"AFTERLIVE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "422: end_s 3 must be after start_s 5" in bad.stderr
    no_token = subprocess.run(
        [*AFTERLIVE, "clip", recording["id"], "1", "2"],
        env={k: v for k, v in service.env.items() if k != "AFTERLIVE_TOKEN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_token.returncode == 1 and "a creator token is needed" in no_token.stderr


def test_a_published_marker_lands_where_the_clip_says(service, creator, tmp_path) -> None:
    """A real publisher sends frame numbers in the picture and a tone burst at 7.300 s; the
    clip [6.5, 13.1) made through the API must start on frame 195 and hold the burst 0.800 s
    after its first picture (within 25 ms)."""
    import subprocess

    import numpy as np

    from tests.utils.media import FFMPEG, frame_number, marked_input, tone_onset_s
    from tests.utils.player import WHITELIST

    room = httpx.post(
        f"{service.api}/api/rooms", json={"title": "Marked", "kind": "video"}, headers=creator
    ).json()
    publisher = subprocess.run(
        [FFMPEG, "-v", "error", "-re", *marked_input(seconds=15), "-f", "flv", room["rtmp_url"]],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert publisher.returncode == 0, publisher.stderr
    [rec] = service.wait_ended(room["id"])
    clip = httpx.post(
        f"{service.api}/api/recordings/{rec.id}/clips",
        json={"title": "around the burst", "start_s": 6.5, "end_s": 13.1},
        headers=creator,
    ).json()
    clip = wait_done(service, creator, clip)

    container = av.open(clip["playback_url"], options=WHITELIST, timeout=20)
    try:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames, chunks, first_audio = [], [], None
        for frame in container.decode(video, audio):
            t = float(frame.pts * frame.time_base)
            if isinstance(frame, av.VideoFrame):
                frames.append((t, frame_number(frame)))
            else:
                first_audio = t if first_audio is None else first_audio
                chunks.append(frame.to_ndarray()[0])
    finally:
        container.close()
    frames.sort()
    assert frames[0][1] == round(6.5 * 30)
    assert frames[-1][1] == round(13.1 * 30) - 1
    onset = first_audio + tone_onset_s(np.concatenate(chunks), 44100)
    assert abs(onset - frames[0][0] - 0.800) <= 0.025, onset - frames[0][0]
