"""The spool's disk fills while the store is down: the live keeps what fits and ends cleanly,
new lives are refused with a message that says why, nothing in the store is corrupt, and once
the store is back and the spool drains, lives are taken again.

The spool is a small tmpfs of its own (mounted by the test: CI runs as root), with most of it
taken by a ballast file so that a modest stream fills the rest in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from storage import keys as K
from tests.utils.media import publish_http, publish_rtmp
from tests.utils.net import wait_until
from tests.utils.player import play
from tests.utils.service import Service, service_env
from transcode.playlists import parse_media_playlist

pytestmark = pytest.mark.slow

MB = 1 << 20
TMPFS_MB = 64
MIN_FREE_MB = 12  # new lives refused under this
RESERVE_MB = 6  # a live ends under this


@pytest.fixture
def spool(tmp_path):
    mount = tmp_path / "spool"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"this test mounts a tmpfs (as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free_mb(path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / MB


def _ballast(spool, leave_mb: float) -> None:
    """Fill the tmpfs so that `leave_mb` stays free."""
    size = int((_free_mb(spool) - leave_mb) * MB)
    with open(spool / "ballast", "wb") as fh:
        fh.write(b"\0" * size)  # tmpfs allocates what is written


def test_a_full_spool_disk_ends_the_live_cleanly_and_refuses_new_ones(spool, tmp_path) -> None:
    env = service_env(
        tmp_path / "data",
        AFTERLIVE_SPOOL_DIR=str(spool),
        AFTERLIVE_MIN_SPOOL_FREE_MB=str(MIN_FREE_MB),
        AFTERLIVE_SPOOL_RESERVE_MB=str(RESERVE_MB),
        AFTERLIVE_RECONNECT_GRACE="30s",
    )
    service = Service(env, tmp_path / "serve.log")
    try:
        _fill_and_drain(service, spool, tmp_path)
    finally:
        service.kill()  # a failed assertion must not leave the service running


def _fill_and_drain(service: Service, spool, tmp_path) -> None:
    weed = service.wait_healthy()["store"]["pid"]
    try:
        token = service.new_creator("Full disk")
        room = service.new_room(token, "video", "fills the disk")
        other = service.new_room(token, "video", "comes too late")
        _ballast(spool, MIN_FREE_MB + 3)

        os.kill(weed, signal.SIGSTOP)  # the store is down: segments stay in the spool
        t0 = time.monotonic()
        publisher = publish_rtmp(room["rtmp_url"], seconds=120, video_bitrate="3M")
        # ~0.4 MB/s into the spool: past the reserve in about 20 s. Then the server ends it.
        code = publisher.wait(90)
        ended_after = time.monotonic() - t0
        stderr = publisher.stderr.read()
        assert code != 0 and ended_after < 60, (code, ended_after, stderr[-2000:])
        assert _free_mb(spool) > 1  # it stopped before the disk was full: journals still fit

        # A new live is refused before anything is stored, and says why.
        refused = publish_rtmp(other["rtmp_url"], seconds=5)
        assert refused.wait(30) != 0
        reply = httpx.put(f"{service.api}/ingest/{other['stream_key']}", content=b"", timeout=30)
        assert reply.status_code == 503, reply.text
        assert "spool disk" in reply.json()["detail"]
        assert reply.headers["retry-after"] == "60"

        log = service.log.read_text()
        assert "disk is full" in log and "min_spool_free" in log
        assert "protocol error" not in log.split("disk is full")[0][-400:]  # not misleading
        metrics = httpx.get(f"{service.api}/metrics", timeout=10).text
        assert "afterlive_lives_ended_spool_full_total 1.0" in metrics
    finally:
        os.kill(weed, signal.SIGCONT)

    # The store is back: what was kept uploads, the recording ends, nothing is corrupt.
    [recording] = service.wait_ended(room["id"], timeout=120)
    assert service.recordings_of(other["id"]) == []
    store = service.store()
    key = K.media_playlist(recording.id, "source")
    playlist = parse_media_playlist(store.get(key).decode())
    assert playlist.ended
    kept = playlist.duration_s()
    assert 10 < kept < ended_after + 1, (kept, ended_after)
    indexed = service.catalog().find_segments(recording.id, "source")
    assert [s.sequence for s in indexed] == list(range(len(playlist.segments)))
    played = play(store, key, tmp_path)  # every segment listed decodes
    assert abs(played.duration_s - kept) < 0.5
    assert played.video_frames >= (kept - 0.5) * 30

    # The spool drained (the ended recording's directory went): lives are taken again.
    wait_until(
        lambda: not any(p.name != "ballast" for p in spool.iterdir()),
        timeout=60,
        what="the spool to drain",
    )
    (spool / "ballast").unlink()
    time.sleep(1)  # the free-space reading is cached for half a second
    later = publish_http(f"{service.api}/ingest/{other['stream_key']}", seconds=4)
    assert later.wait(60) == 0, later.stderr.read()
    assert service.stop() == 0
