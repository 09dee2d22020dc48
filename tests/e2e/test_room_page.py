"""The catch-up page for rooms with several hosts, in a real browser (the fixtures of
test_browser: Debian's Chromium, the local hls.js), against `afterlive serve` fed by real ffmpeg
publishers over RTMP.

Each host speaks in turn: a tone of their own for 2 s of every 6, the hosts 2 s apart, so the
speaker turns rotate (Ana, Bea, Cai, Ana, ...) and finished turns keep coming while live."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.e2e import test_browser
from tests.e2e.test_browser import CDN_URL, Tab, screenshot
from tests.utils.media import FFMPEG
from tests.utils.net import wait_until
from tests.utils.service import Service, service_env

# The browser page's fixtures: Chromium, hls.js installed for the module, a tab that records
# console errors.
assets, browser, tab = test_browser.assets, test_browser.browser, test_browser.tab
screens = test_browser.screens

LIVE_S = 30
AUDIO_S = 12
TILES = "#room-grid .tile"
VIDEOS = "[...document.querySelectorAll('#room-grid .tile[data-kind=video] video')]"
CLOCK = "Number(document.getElementById('room-grid').dataset.clock)"


def publish_turns(
    url: str, *, seconds: float, tone_hz: int, phase_s: float, video: bool = True
) -> subprocess.Popen[str]:
    """ffmpeg publishing H.264 + AAC (or AAC alone) over RTMP; its audio is a tone for 2 s of
    every 6, from `phase_s` on, silence otherwise."""
    tone = f"if(lt(mod(t-{phase_s},6),2),0.5*sin(2*PI*{tone_hz}*t),0)"
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re"]
    if video:
        args += ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
    args += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{tone}':s=44100", "-t", str(seconds)]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
        args += ["-g", "60", "-keyint_min", "60", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-ar", "44100", "-b:a", "64k", "-f", "flv", url]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory, assets) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("room-page")
    env = service_env(
        data / "data",
        AFTERLIVE_ASSETS_DIR=str(assets),
        AFTERLIVE_RECONNECT_GRACE="2s",
        AFTERLIVE_PUBLISHER_TIMEOUT="4s",
    )
    svc = Service(env, data / "serve.log")
    try:
        svc.wait_healthy()
        yield svc
    finally:
        assert svc.stop() == 0, svc.log.read_text()[-3000:]


def invite(service: Service, token: str, room: dict, name: str, **body) -> dict:
    reply = httpx.post(
        f"{service.api}/api/rooms/{room['id']}/hosts",
        json={"name": name, **body},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def rooms(service: Service) -> Iterator[dict[str, dict]]:
    """A video room (Ana and Bea on camera, Cai on audio alone) live for LIVE_S, and an audio
    room (Ana, Bea, and Dan who is not recorded) for AUDIO_S, all publishing from the start."""
    token = service.new_creator("Ana")
    video = service.new_room(token, "video", title="Three of us")
    audio = service.new_room(token, "audio", title="Radio of three")
    bea, cai = (invite(service, token, video, name) for name in ("Bea", "Cai"))
    bea_radio = invite(service, token, audio, "Bea")
    dan_radio = invite(service, token, audio, "Dan", recorded=False)
    publishers = [
        publish_turns(video["rtmp_url"], seconds=LIVE_S, tone_hz=300, phase_s=0),
        publish_turns(bea["rtmp_url"], seconds=LIVE_S, tone_hz=500, phase_s=2),
        publish_turns(cai["rtmp_url"], seconds=LIVE_S, tone_hz=700, phase_s=4, video=False),
        publish_turns(audio["rtmp_url"], seconds=AUDIO_S, tone_hz=300, phase_s=0, video=False),
        publish_turns(bea_radio["rtmp_url"], seconds=AUDIO_S, tone_hz=500, phase_s=2, video=False),
        publish_turns(dan_radio["rtmp_url"], seconds=AUDIO_S, tone_hz=900, phase_s=4, video=False),
    ]
    try:
        yield {"video": video, "audio": audio, "publishers": publishers}
    finally:
        for publisher in publishers:
            if publisher.poll() is None:
                publisher.kill()
            publisher.wait()


def recording_of(service: Service, room: dict, min_s: float = 0) -> dict | None:
    items = httpx.get(
        f"{service.api}/api/recordings", params={"room_id": room["id"]}, timeout=10
    ).json()["items"]
    return items[0] if items and items[0]["duration_s"] >= min_s else None


def turn_starts(service: Service, recording_id: str) -> list[float]:
    turns = httpx.get(f"{service.api}/api/recordings/{recording_id}/speakers", timeout=10).json()
    return [t["start_s"] for t in turns]


def tiles(tab: Tab) -> list[tuple[str, str]]:
    """(name, kind) of each tile, in seat order."""
    found = tab.page.evaluate(
        "[...document.querySelectorAll('#room-grid .tile')]"
        ".sort((a, b) => a.dataset.seat - b.dataset.seat)"
        ".map(t => [t.querySelector('.tile-name').textContent, t.dataset.kind])"
    )
    return [tuple(pair) for pair in found]


def wait_videos_advance(tab: Tab, seconds: float = 1.0) -> None:
    """Every video tile plays: its currentTime moves on by `seconds`."""
    before = tab.page.evaluate(f"{VIDEOS}.map(v => v.currentTime)")
    assert len(before) == 2
    tab.page.wait_for_function(
        f"{VIDEOS}.every((v, i) => v.currentTime > {before}[i] + {seconds})", timeout=20_000
    )


def wait_in_sync(tab: Tab) -> None:
    """Each video tile's wall time is within 0.4 s of the mix's (the page measures the drift)."""
    tab.page.wait_for_function(
        "[...document.querySelectorAll('#room-grid .tile[data-kind=video]')]"
        ".every(t => t.dataset.presence === 'in' && Math.abs(Number(t.dataset.drift)) < 400)",
        timeout=20_000,
    )


def next_speaker_seeks_to_a_turn_start(tab: Tab, service: Service, recording: dict) -> None:
    # Paused, so that "where it was" holds still while the button is clicked.
    tab.page.get_by_role("button", name="Pause").click()
    tab.page.wait_for_function("document.getElementById('media').paused")
    started = tab.page.evaluate(CLOCK)
    origin = time_of(recording["started_at"])
    tab.page.get_by_role("button", name="Next speaker").click()
    landed = tab.page.evaluate(CLOCK)
    assert landed > started + 250
    starts = [origin + s * 1000 for s in turn_starts(service, recording["id"])]
    # On a turn's start: the first one after where it was (within rounding of the wall clock).
    assert min(abs(landed - s) for s in starts) < 50, (landed, starts)
    skipped = [s for s in starts if started + 250 < s < landed - 50]
    assert skipped == [], [(x - origin) / 1000 for x in (started, landed, *starts)]
    tab.page.get_by_role("button", name="Play", exact=True).click()
    tab.page.wait_for_function(f"{CLOCK} > {landed} + 1500", timeout=15_000)  # and plays on
    tab.page.locator(f"{TILES}[data-speaking=true]").first.wait_for()


def time_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def test_live_room_shows_a_tile_per_host_and_who_speaks(tab, service, rooms, screens):
    room = rooms["video"]
    recording = wait_until(
        lambda: recording_of(service, room, min_s=10), timeout=30, interval=0.5, what="10 s live"
    )
    assert recording["status"] == "live"
    tab.open()
    tab.page.locator("#live-list .card", has_text=room["title"]).click()
    tab.page.locator(TILES).nth(2).wait_for()
    assert tiles(tab) == [("Ana", "video"), ("Bea", "video"), ("Cai", "voice")]
    assert tab.page.locator(f"{TILES}[data-kind=voice]").inner_text().split("\n")[0] == "C"
    assert tab.page.locator("#room-grid").evaluate("g => g.style.getPropertyValue('--cols')") == "2"
    assert tab.page.locator("#audio-card").is_hidden()
    wait_videos_advance(tab)
    wait_in_sync(tab)
    tab.page.locator(f"{TILES}[data-speaking=true]").first.wait_for(timeout=15_000)
    assert tab.page.locator("#speaking").inner_text().startswith("Speaking: ")
    screenshot(tab, screens, "room-live")

    tab.page.get_by_role("button", name="Watch from the beginning").click()
    origin = time_of(recording["started_at"])
    tab.page.wait_for_function(f"{CLOCK} < {origin} + 3000")
    next_speaker_seeks_to_a_turn_start(tab, service, recording)
    wait_videos_advance(tab)
    wait_in_sync(tab)
    assert tab.errors(CDN_URL) == []


def test_replay_of_the_room_plays_and_a_tile_enlarges(tab, service, rooms, screens):
    for publisher in rooms["publishers"]:
        _, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err
    service.wait_ended(rooms["video"]["id"], timeout=30)
    recording = recording_of(service, rooms["video"])
    tab.open()
    tab.page.locator("#replay-list .card", has_text=rooms["video"]["title"]).click()
    tab.page.locator(TILES).nth(2).wait_for()
    assert tiles(tab) == [("Ana", "video"), ("Bea", "video"), ("Cai", "voice")]
    wait_videos_advance(tab)
    wait_in_sync(tab)

    grid = tab.page.locator("#room-grid")
    bea = tab.page.locator(f"{TILES}[data-seat='2']")
    small = bea.bounding_box()
    bea.click()
    assert tab.page.locator(f"{TILES}:visible").count() == 1
    large, whole = bea.bounding_box(), grid.bounding_box()
    assert large["width"] > 1.8 * small["width"] and large["width"] > 0.95 * whole["width"] - 12
    assert bea.get_attribute("aria-pressed") == "true"
    screenshot(tab, screens, "room-enlarged")
    wait_videos_advance(tab)  # the others keep time, hidden, for the way back
    bea.click()
    assert tab.page.locator(f"{TILES}:visible").count() == 3
    assert abs(bea.bounding_box()["width"] - small["width"]) < 2

    next_speaker_seeks_to_a_turn_start(tab, service, recording)
    at = tab.page.evaluate(CLOCK)
    tab.page.get_by_role("button", name="Previous speaker").click()
    assert tab.page.evaluate(CLOCK) < at - 1500
    wait_in_sync(tab)
    assert tab.errors(CDN_URL) == []


def test_audio_room_of_several_speakers_shows_name_tiles(tab, service, rooms, screens):
    service.wait_ended(rooms["audio"]["id"], timeout=30)
    tab.open()
    tab.page.locator("#replay-list .card", has_text=rooms["audio"]["title"]).click()
    tab.page.locator(TILES).nth(2).wait_for()
    assert tiles(tab) == [("Ana", "voice"), ("Bea", "voice"), ("Dan", "not-recorded")]
    assert "not recorded" in tab.page.locator(f"{TILES}[data-seat='3']").inner_text()
    assert tab.page.locator("#room-grid video").count() == 0
    assert tab.page.locator("#audio-card").is_hidden()
    tab.wait_time_past(1)
    tab.page.locator(f"{TILES}[data-speaking=true]").first.wait_for(timeout=15_000)
    speaking = tab.page.locator(f"{TILES}[data-speaking=true] .tile-name").all_inner_texts()
    assert set(speaking) <= {"Ana", "Bea"}  # Dan, not recorded, is never heard
    screenshot(tab, screens, "room-audio")
    tab.page.get_by_role("button", name="Next speaker").click()
    tab.wait_time_past(3)
    assert tab.errors(CDN_URL) == []


def test_layout_and_timing_are_pure_functions(tab):
    """room.js's pure parts, run in the page's own module (no media needed)."""
    tab.open()
    got = tab.page.evaluate(
        """async () => {
        const r = await import('/static/room.js');
        const grid = (n, focus) => {
          const { shown, cols, rows } = r.roomLayout([...Array(n).keys()].map(i => i + 1), focus);
          return [shown.length, cols, rows];
        };
        // two fragments of 2 s from wall 10 000 ms, then a gap, then one from 20 000 ms
        const frags = [
          { start: 0, duration: 2, programDateTime: 10000 },
          { start: 2, duration: 2, programDateTime: 12000 },
          { start: 4, duration: 2, programDateTime: 20000 },
        ];
        const turns = r.parseTurns([
          { seat: 2, host: 'Bea', start_at: '2026-01-01T00:00:02.000001Z',
            end_at: '2026-01-01T00:00:04Z' },
          { seat: 1, host: 'Ana', start_at: '2026-01-01T00:00:00Z',
            end_at: '2026-01-01T00:00:03Z' },
        ]);
        const t0 = Date.parse('2026-01-01T00:00:00Z');
        return {
          grids: [1, 2, 3, 4, 5].map(n => grid(n)), focused: grid(3, 2),
          timeAt: [9999, 10000, 13500, 15000, 21000].map(w => r.timeAt(frags, w)),
          wallAt: [0, 3.5, 5].map(t => r.wallAt(frags, t)),
          presence: [9000, 11000, 15000, 23000].map(w => r.presence(frags, w)),
          speaking: [1000, 2500, 3500, 5000].map(w => [...r.speakingAt(turns, t0 + w)].sort()),
          next: [-1000, 0, 1000, 2100].map(w => r.nextTurn(turns, t0 + w)?.seat ?? null),
          previous: [1000, 3000, 4000].map(w => r.previousTurn(turns, t0 + w)?.seat ?? null),
          kinds: [
            { seat: 1, recorded: true }, { seat: 2, recorded: true },
            { seat: 3, recorded: false },
          ].map(h => r.tileKind({ kind: 'video', renditions: [
            { name: 'source', seat: 1, codecs: 'avc1.64001f,mp4a.40.2', width: 320, height: 240 },
            { name: 'hosts/2/source', seat: 2, codecs: 'mp4a.40.2', width: null, height: null },
          ] }, h)),
          rooms: [
            { renditions: [{ seat: 0 }], hosts: [{}] }, { renditions: [{ seat: 1 }], hosts: [{}] },
          ].map(r.isRoom),
        };
      }"""
    )
    assert got["grids"] == [[1, 1, 1], [2, 2, 1], [3, 2, 2], [4, 2, 2], [5, 3, 2]]
    assert got["focused"] == [1, 1, 1]
    assert got["timeAt"] == [None, 0, 3.5, None, 5]
    assert got["wallAt"] == [10000, 13500, 21000]
    assert got["presence"] == ["before", "in", "away", "away"]
    assert got["speaking"] == [[1], [1, 2], [2], []]
    assert got["next"] == [1, 2, 2, None]
    assert got["previous"] == [None, 1, 2]
    assert got["kinds"] == ["video", "voice", "not-recorded"]
    assert got["rooms"] == [True, False]
    assert tab.errors(CDN_URL) == []
