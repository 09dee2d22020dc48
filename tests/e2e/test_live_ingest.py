"""Live ingest end to end: `afterlive serve` with its embedded store, real ffmpeg publishers over
RTMP and HTTP push, playlists read back from the store and decoded by a real player (PyAV)."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from storage import keys as K
from tests.utils.media import publish_http, publish_rtmp
from tests.utils.net import wait_until
from tests.utils.player import play
from tests.utils.service import Service, module_service
from transcode.playlists import parse_master_playlist, parse_media_playlist

GRACE_S = 3


service = module_service(
    "live", AFTERLIVE_RECONNECT_GRACE=f"{GRACE_S}s", AFTERLIVE_PUBLISHER_TIMEOUT="4s"
)


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Live Tester")


def check_replay(
    service: Service, recording_id: str, seconds: float, *, video: bool, tmp_path: Path
) -> None:
    """The recording in the store is a complete, decodable replay of `seconds` of media."""
    store = service.store()
    master = parse_master_playlist(store.get(K.master_playlist(recording_id)).decode())
    names = [v.uri.split("/")[0] for v in master.variants]
    assert names == (["source", "audio"] if video else ["source"])
    source = master.variants[0]
    if video:
        assert source.codecs.startswith("avc1.") and source.codecs.endswith(",mp4a.40.2")
        assert source.resolution == (320, 240)
        assert master.variants[1].codecs == "mp4a.40.2"
    else:
        assert source.codecs == "mp4a.40.2" and source.resolution is None
    assert all(v.bandwidth > 0 for v in master.variants)

    stored = {info.key for info in store.list(K.recording_prefix(recording_id))}
    for name in names:
        key = K.media_playlist(recording_id, name)
        playlist = parse_media_playlist(store.get(key).decode())
        assert playlist.ended and playlist.playlist_type == "EVENT"
        total = playlist.duration_s()
        assert abs(total - seconds) <= 2.1, f"{name}: {total} s of {seconds}"
        assert all(s.program_date_time is not None for s in playlist.segments)
        for seg in playlist.segments:  # every segment listed is in the store
            assert f"{key.rsplit('/', 1)[0]}/{seg.uri}" in stored
        played = play(store, key, tmp_path)
        assert abs(played.duration_s - seconds) <= 2.1
        assert played.audio_frames > seconds * 40  # 44.1 kHz AAC: ~43 frames a second
        if video and name == "source":
            assert played.video_frames >= (seconds - 2) * 30
            assert played.width == 320
        else:
            assert played.video_frames == 0


def test_rtmp_video_room_is_recorded_and_grows_while_live(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    assert room["rtmp_url"].startswith("rtmp://") and room["rtmp_url"].endswith(room["stream_key"])
    publisher = publish_rtmp(room["rtmp_url"], seconds=20)
    store = service.store()

    # While live: the playlist is in the store, EVENT, dated, growing, not ended.
    recording = wait_until(lambda: service.recordings_of(room["id"]), timeout=15, what="recording")[
        0
    ]
    key = K.media_playlist(recording.id, "source")
    wait_until(lambda: store.head(key), timeout=15, what="first playlist")
    first = parse_media_playlist(store.get(key).decode())
    time.sleep(4.5)
    later = parse_media_playlist(store.get(key).decode())
    assert later.playlist_type == "EVENT" and not later.ended
    assert len(later.segments) >= len(first.segments) + 2
    assert all(s.program_date_time for s in later.segments)
    assert store.head(K.master_playlist(recording.id)) is not None

    assert publisher.wait(60) == 0, publisher.stderr.read()
    [ended] = service.wait_ended(room["id"])
    assert ended.ended_at is not None and ended.expires_at is not None
    check_replay(service, ended.id, 20, video=True, tmp_path=tmp_path)


def test_rtmp_audio_room(service, token, tmp_path) -> None:
    room = service.new_room(token, "audio")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=20)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    check_replay(service, recording.id, 20, video=False, tmp_path=tmp_path)


def test_http_push(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    assert room["http_push_url"].endswith(f"/ingest/{room['stream_key']}")
    publisher = publish_http(room["http_push_url"], seconds=20)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    check_replay(service, recording.id, 20, video=True, tmp_path=tmp_path)


def test_wrong_key_is_refused_before_anything_is_stored(service, token) -> None:
    room = service.new_room(token, "video")
    bad = room["stream_key"][:-4] + "AAAA"
    publisher = publish_rtmp(f"{service.rtmp}/{bad}", seconds=3)
    assert publisher.wait(30) != 0
    assert "unknown or revoked stream key" in publisher.stderr.read()
    push = httpx.put(f"{service.api}/ingest/{bad}", content=b"\x47" * 188 * 10, timeout=10)
    assert push.status_code == 403 and "unknown" in push.json()["detail"]
    assert service.recordings_of(room["id"]) == []
    assert "publish refused" in service.log.read_text()


def test_rotated_key_stops_working(service, token) -> None:
    room = service.new_room(token, "audio")
    rotated = httpx.post(
        f"{service.api}/api/rooms/{room['id']}/rotate-key",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert rotated["stream_key"] != room["stream_key"]
    old = publish_rtmp(room["rtmp_url"], video=False, seconds=2)
    assert old.wait(30) != 0
    assert service.recordings_of(room["id"]) == []


def test_second_publisher_on_a_live_key_is_refused(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    first = publish_rtmp(room["rtmp_url"], seconds=10)
    wait_until(lambda: service.recordings_of(room["id"]), timeout=15, what="first publisher live")
    second = publish_rtmp(room["rtmp_url"], seconds=3)
    assert second.wait(30) != 0
    assert "already live" in second.stderr.read()
    assert first.wait(60) == 0
    [recording] = service.wait_ended(room["id"])
    check_replay(service, recording.id, 10, video=True, tmp_path=tmp_path)


def test_five_rooms_at_once(service, token, tmp_path) -> None:
    rooms = [
        service.new_room(token, kind, f"room {i}")
        for i, kind in enumerate(["video", "video", "video", "audio", "audio"])
    ]
    publishers = [
        publish_rtmp(r["rtmp_url"], video=r["kind"] == "video", seconds=10) for r in rooms
    ]
    assert [p.wait(60) for p in publishers] == [0] * 5
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        ended = list(pool.map(lambda r: service.wait_ended(r["id"])[0], rooms))
    for room, recording in zip(rooms, ended, strict=True):
        check_replay(service, recording.id, 10, video=room["kind"] == "video", tmp_path=tmp_path)


def test_reconnect_within_grace_continues_the_recording(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    first = publish_rtmp(room["rtmp_url"], seconds=30)
    time.sleep(6)
    first.kill()  # a dropped connection, not a clean unpublish
    first.wait()
    time.sleep(1)
    second = publish_rtmp(room["rtmp_url"], seconds=6)
    assert second.wait(60) == 0, second.stderr.read()
    [recording] = service.wait_ended(room["id"])
    playlist = parse_media_playlist(
        service.store().get(K.media_playlist(recording.id, "source")).decode()
    )
    flags = [s.discontinuity for s in playlist.segments]
    assert flags.count(True) == 1 and not flags[0]
    assert [r.id for r in service.recordings_of(room["id"])] == [recording.id]
    played = play(service.store(), K.media_playlist(recording.id, "source"), tmp_path)
    assert played.video_frames >= 9 * 30


def test_reconnect_after_grace_starts_a_new_recording(service, token) -> None:
    room = service.new_room(token, "audio")
    first = publish_rtmp(room["rtmp_url"], video=False, seconds=30)
    time.sleep(4)
    first.kill()
    first.wait()
    time.sleep(GRACE_S + 2)
    second = publish_rtmp(room["rtmp_url"], video=False, seconds=4)
    assert second.wait(60) == 0
    recordings = service.wait_ended(room["id"], count=2)
    assert len(recordings) == 2


def test_garbage_and_broken_handshakes_do_not_disturb_a_live_room(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    good = publish_rtmp(room["rtmp_url"], seconds=10)
    port = int(service.env["AFTERLIVE_RTMP_PORT"])
    time.sleep(1)
    for payload in (
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x03" + b"\x00" * 700,
        b"\x03",
        bytes(range(256)) * 20,
        b"\x03" + b"\x01" * 1536 + b"\x02" * 1536 + b"\xff" * 500,
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(15)
            try:
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    bad_push = httpx.put(
        f"{service.api}/ingest/{service.new_room(token, 'video')['stream_key']}",
        content=b"this is not mpeg-ts" * 1000,
        timeout=30,
    )
    assert bad_push.status_code == 422, bad_push.text
    assert good.wait(60) == 0, good.stderr.read()
    [recording] = service.wait_ended(room["id"])
    check_replay(service, recording.id, 10, video=True, tmp_path=tmp_path)
    assert service.proc.poll() is None


def test_mp3_audio_is_recorded_with_its_own_codec(service, token, tmp_path) -> None:
    room = service.new_room(token, "audio")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=8, audio_codec="libmp3lame")
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    store = service.store()
    master = parse_master_playlist(store.get(K.master_playlist(recording.id)).decode())
    assert [v.codecs for v in master.variants] == ["mp4a.40.34"]
    played = play(store, K.media_playlist(recording.id, "source"), tmp_path)
    assert abs(played.duration_s - 8) <= 2.1 and played.audio_frames > 0


def test_unsupported_audio_codec_is_refused_clearly_and_leaves_no_recording(service, token):
    room = service.new_room(token, "audio")
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=6, audio_codec="nellymoser")
    assert publisher.wait(60) != 0  # the server closed the connection
    wait_until(
        lambda: "audio codec 'nellymoser' is not supported" in service.log.read_text(),
        timeout=15,
        what="a clear log line",
    )
    wait_until(lambda: service.recordings_of(room["id"]) == [], timeout=15, what="no recording")
    assert service.proc.poll() is None


def test_a_20_s_gop_still_gives_a_playable_recording(service, token, tmp_path) -> None:
    room = service.new_room(token, "video")
    publisher = publish_rtmp(room["rtmp_url"], seconds=24, gop_s=20)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    playlist = parse_media_playlist(
        service.store().get(K.media_playlist(recording.id, "source")).decode()
    )
    # Cut only at keyframes: a long first segment, then the rest.
    assert playlist.segments[0].duration_s == pytest.approx(20, abs=0.1)
    assert playlist.target_duration >= 20
    check_replay(service, recording.id, 24, video=True, tmp_path=tmp_path)


@pytest.mark.parametrize("door", ["rtmp", "http"])
def test_a_stalled_publisher_is_disconnected_and_the_recording_ends(service, token, tmp_path, door):
    room = service.new_room(token, "video")
    publish = publish_rtmp if door == "rtmp" else publish_http
    publisher = publish(room["rtmp_url"] if door == "rtmp" else room["http_push_url"], seconds=60)
    try:
        time.sleep(7)
        publisher.send_signal(signal.SIGSTOP)  # a real publisher that stops sending mid-live
        [recording] = service.wait_ended(room["id"], timeout=30)  # 4 s timeout + 3 s grace
        played = play(service.store(), K.media_playlist(recording.id, "source"), tmp_path)
        assert 3 <= played.duration_s <= 8
        assert "timed out" in service.log.read_text() or "stalled" in service.log.read_text()
    finally:
        publisher.kill()
        publisher.wait()
