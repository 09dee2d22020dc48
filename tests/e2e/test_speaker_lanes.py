"""Who spoke when, in the studio and in episodes: three hosts of a real audio room (real ffmpeg
publishers over RTMP, the embedded store) taking turns, each with their own tone; the studio
page in Debian's Chromium (Playwright, as test_studio_page.py) shows a lane per host with their
turns where the API and the mix playlist put them, a click on a turn makes the clip range, and
the clip cut from it holds that host's voice; an episode with chapters "speakers" has one
chapter per turn, read back from its MP3 (mutagen) and M4A (PyAV)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta

import av
import httpx
import numpy as np
import pytest
from mutagen.id3 import ID3
from playwright.sync_api import Browser, expect

from api.assets import install_hls_js
from storage import keys as K
from tests.e2e.test_browser import CDN_URL, Tab, browser  # noqa: F401 (the module's Chromium)
from tests.utils.media import publish_rtmp, tones_per_second
from tests.utils.net import wait_until
from tests.utils.service import Service, service_env
from transcode.playlists import parse_media_playlist

SECONDS = 16
# Each host speaks (their tone sounds) only in these spans of their publish, silence between.
SPEAKS = {
    "Ana": (300, [(0.5, 4.0), (11.5, 15.0)]),
    # Three short bursts 0.8 s apart (three turns for the detector, whose hangover is 0.5 s):
    # each too short for a chapter, together one turn, one chapter.
    "Bea": (500, [(4.6, 5.3), (6.1, 6.8), (7.6, 8.3)]),
    "Cai": (700, [(9.2, 10.9), (12.6, 13.8)]),  # the second inside Ana's: an interjection
}
TONES = [tone for tone, _ in SPEAKS.values()]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("speaker-lanes")
    assets = data / "assets"
    install_hls_js(assets)
    svc = Service(service_env(data / "data", AFTERLIVE_ASSETS_DIR=str(assets)), data / "serve.log")
    try:
        svc.wait_healthy()
        yield svc
    finally:
        assert svc.stop() == 0, svc.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Ana")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def recording(service: Service, token: str) -> dict:
    """An ended three-host recording, its speaker turns (from the API) and each turn's place
    on the mix's timeline, worked out here from the mix playlist's PROGRAM-DATE-TIMEs."""
    room = service.new_room(token, "audio", "Three of us")
    urls = {"Ana": room["rtmp_url"]}
    for name in ("Bea", "Cai"):
        reply = httpx.post(
            f"{service.api}/api/rooms/{room['id']}/hosts",
            json={"name": name},
            headers=auth(token),
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        urls[name] = reply.json()["rtmp_url"]
    publishers = [
        publish_rtmp(urls[name], seconds=SECONDS, video=False, tone_hz=tone, tone_spans=spans)
        for name, (tone, spans) in SPEAKS.items()
    ]
    for publisher in publishers:
        _, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err
    [rec] = service.wait_ended(room["id"], timeout=30)
    turns = httpx.get(f"{service.api}/api/recordings/{rec.id}/speakers", timeout=10).json()
    # The detector's turns follow the published spans (checked within 0.5 s by
    # test_live_rooms): a turn per span at least (a publisher's audio stalling for longer than
    # the detector's 0.5 s hangover on a loaded machine splits one, as it would a real
    # host's); the lanes and chapters below are checked against the turns the API gives.
    counts = {name: sum(t["host"] == name for t in turns) for name in SPEAKS}
    found = [(t["host"], t["start_s"], t["end_s"]) for t in turns]
    assert all(counts[name] >= len(spans) for name, (_, spans) in SPEAKS.items()), found
    mix = parse_media_playlist(service.store().get(K.media_playlist(rec.id, "mix")).decode())
    for turn in turns:
        turn["at_s"] = on_timeline(mix.segments, datetime.fromisoformat(turn["start_at"]))
        turn["until_s"] = on_timeline(mix.segments, datetime.fromisoformat(turn["end_at"]))
    return {"id": rec.id, "turns": turns, "duration_s": mix.duration_s()}


def on_timeline(segments, moment: datetime) -> float:
    """Seconds into a playlist's timeline at which a wall-clock moment plays."""
    position = 0.0
    for seg in segments:
        if moment < seg.program_date_time + timedelta(seconds=seg.duration_s):
            return position + max(0.0, (moment - seg.program_date_time).total_seconds())
        position += seg.duration_s
    return position


def turns_of(recording: dict, host: str) -> list[dict]:
    return [t for t in recording["turns"] if t["host"] == host]


@pytest.fixture
def tab(browser: Browser, service: Service) -> Iterator[Tab]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    tab = Tab(page=page, api=service.api)
    page.on("console", lambda message: tab.console.append(message))
    page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
    page.route(CDN_URL, lambda route: route.abort())  # offline: the local hls.js plays
    yield tab
    context.close()


def test_studio_lanes_show_who_spoke_when_and_a_turn_makes_the_clip(
    tab, service, token, recording, tmp_path
):
    page = tab.page
    tab.open("/studio")
    page.get_by_label("Creator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.locator(f'button.rec-pick[data-id="{recording["id"]}"]').click()
    expect(page.locator("#wave-status")).to_be_empty()

    # A lane per host, in seat order, named.
    lanes = page.locator("#lanes .lane")
    expect(lanes).to_have_count(3)
    assert [n.strip() for n in page.locator("#lanes .lane-name").all_inner_texts()] == list(SPEAKS)
    expect(page.get_by_role("group", name="Who spoke when")).to_be_visible()

    # Each turn's bar sits where the mix's timeline puts that turn, on the waveform's axis.
    duration = float(page.locator("#wave").get_attribute("aria-valuemax"))
    assert abs(duration - recording["duration_s"]) < 0.1, (duration, recording["duration_s"])
    wave = page.locator("#wave").bounding_box()
    left, width = wave["x"] + 1, wave["width"] - 2  # the canvas's content box (1 px border)
    for i, host in enumerate(SPEAKS):
        bars = lanes.nth(i).locator("button.turn")
        theirs = turns_of(recording, host)
        expect(bars).to_have_count(len(theirs))
        for bar, turn in zip(bars.all(), theirs, strict=True):
            box = bar.bounding_box()
            start = (box["x"] - left) / width * duration
            end = (box["x"] + box["width"] - left) / width * duration
            tolerance = 0.1  # a few pixels
            assert abs(start - turn["at_s"]) <= tolerance, (host, start, turn)
            assert abs(end - turn["until_s"]) <= tolerance, (host, end, turn)

    # A click on Cai's first turn sets the range to it (widened to the tenth), playhead there.
    cai = turns_of(recording, "Cai")[0]
    bar = lanes.nth(2).locator("button.turn").first
    bar.click()
    expect(bar).to_have_attribute("aria-pressed", "true")
    start = seconds(page.get_by_label("Start", exact=True).input_value())
    end = seconds(page.get_by_label("End", exact=True).input_value())
    assert start <= cai["at_s"] + 0.01 and cai["at_s"] - start <= 0.15, (start, cai)
    assert end >= cai["until_s"] - 0.01 and end - cai["until_s"] <= 0.15, (end, cai)
    page.wait_for_function(
        f"Math.abs(document.getElementById('rec-media').currentTime - {start}) < 0.3"
    )
    page.locator("#editor").screenshot(path=str(tmp_path / "studio-lanes.png"))
    # Another range unpresses it.
    page.get_by_label("Start", exact=True).fill("0:01.0")
    page.get_by_label("Start", exact=True).press("Tab")
    expect(bar).to_have_attribute("aria-pressed", "false")
    bar.click()

    # The clip made from it covers that turn, and is Cai's voice alone.
    page.get_by_label("Clip title").fill("Cai's turn")
    page.get_by_role("button", name="Make clip").click()
    expect(page.locator("#clip-msg")).to_contain_text("“Cai's turn” is done", timeout=90_000)
    row = page.locator("#clips-list tr", has_text="Cai's turn")
    clip = httpx.get(
        f"{service.api}/api/clips/{row.get_attribute('data-id')}", headers=auth(token), timeout=10
    ).json()
    assert clip["start_s"] == start and clip["end_s"] == end, clip
    assert clip["start_s"] <= cai["at_s"] + 0.01 and clip["end_s"] >= cai["until_s"] - 0.01
    m4a = tmp_path / "clip.m4a"
    m4a.write_bytes(httpx.get(clip["audio_url"], timeout=10, follow_redirects=True).content)
    with av.open(str(m4a)) as media:
        samples = np.concatenate([f.to_ndarray()[0] for f in media.decode(audio=0)])
        rate = media.streams.audio[0].rate
    heard = tones_per_second(samples, rate, TONES)
    assert heard and all(t == {700} for t in heard), heard
    assert tab.errors(CDN_URL) == []


def test_a_single_host_recording_has_no_lanes(tab, service, token):
    room = service.new_room(token, "audio", "Alone")
    publisher = publish_rtmp(room["rtmp_url"], seconds=5, video=False)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [rec] = service.wait_ended(room["id"])
    reply = httpx.get(f"{service.api}/api/recordings/{rec.id}/lanes", headers=auth(token))
    assert reply.status_code == 200 and reply.json() == {"lanes": []}
    stranger = httpx.get(
        f"{service.api}/api/recordings/{rec.id}/lanes", headers=auth(service.new_creator())
    )
    assert stranger.status_code == 403

    page = tab.page
    tab.open("/studio")
    page.get_by_label("Creator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    with page.expect_response(lambda r: r.url.endswith(f"/{rec.id}/lanes")):
        page.locator(f'button.rec-pick[data-id="{rec.id}"]').click()
    expect(page.locator("#wave-status")).to_be_empty()
    expect(page.locator("#lanes")).to_be_hidden()
    expect(page.locator("#lanes .lane")).to_have_count(0)
    assert tab.errors(CDN_URL) == []


def test_an_episode_with_a_chapter_per_speaker_turn(service, token, recording, tmp_path):
    """Two clips joined by a 0.5 s crossfade: each clip's turns become chapters on the
    episode's timeline (the second clip starts at the first's length less the crossfade)."""
    ana = turns_of(recording, "Ana")
    ana1, ana2 = ana[0], next(t for t in ana if t["at_s"] > 8)
    bea1, bea_last = turns_of(recording, "Bea")[0], turns_of(recording, "Bea")[-1]
    cai1 = turns_of(recording, "Cai")[0]
    ranges = [
        (math.floor(ana1["at_s"] * 10) / 10, bea_last["until_s"] + 0.3),
        (cai1["at_s"] - 0.2, min(ana2["until_s"] + 0.2, recording["duration_s"] - 0.05)),
    ]
    clips = [
        cut(service, token, recording["id"], f"Part {n}", a, b)
        for n, (a, b) in enumerate(ranges, 1)
    ]
    crossfade = 0.5
    programme = httpx.post(
        f"{service.api}/api/programmes",
        json={"title": "Three of us", "author": "Ana"},
        headers=auth(token),
        timeout=10,
    ).json()
    reply = httpx.post(
        f"{service.api}/api/programmes/{programme['id']}/episodes",
        json={
            "title": "Who said what",
            "clips": [c["id"] for c in clips],
            "crossfade_s": crossfade,
            "chapters": "speakers",
        },
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    episode = wait_until(
        lambda: done(f"{service.api}/api/episodes/{reply.json()['id']}", token),
        timeout=120,
        what="the episode",
    )
    # Where each host starts speaking on the episode's timeline: Bea's three short turns are
    # one chapter, Cai's interjection inside Ana's turn none.
    second = clips[0]["duration_s"] - crossfade
    expected = [
        ("Ana", ana1["at_s"] - clips[0]["start_s"]),
        ("Bea", bea1["at_s"] - clips[0]["start_s"]),
        ("Cai", second + cai1["at_s"] - clips[1]["start_s"]),
        ("Ana", second + ana2["at_s"] - clips[1]["start_s"]),
    ]

    def check(chapters: list[tuple[str, float]]) -> None:
        assert [title for title, _ in chapters] == [title for title, _ in expected], chapters
        for (_, got), (_, want) in zip(chapters, expected, strict=True):
            assert abs(got - want) <= 0.5, (chapters, expected)

    check([(c["title"], c["start_s"]) for c in episode["chapters"]])
    mp3, m4a = tmp_path / "episode.mp3", tmp_path / "episode.m4a"
    mp3.write_bytes(httpx.get(episode["audio_url"], timeout=30, follow_redirects=True).content)
    m4a.write_bytes(httpx.get(episode["m4a_url"], timeout=30, follow_redirects=True).content)
    chaps = sorted(ID3(mp3).getall("CHAP"), key=lambda c: c.start_time)
    check([(str(c.sub_frames["TIT2"]), c.start_time / 1000) for c in chaps])
    with av.open(str(m4a)) as media:
        check(
            [(c["metadata"]["title"], float(c["start"] * c["time_base"])) for c in media.chapters()]
        )

    # The default is still one chapter per clip.
    again = httpx.post(
        f"{service.api}/api/programmes/{programme['id']}/episodes",
        json={"title": "By clip", "clips": [c["id"] for c in clips], "crossfade_s": crossfade},
        headers=auth(token),
        timeout=10,
    )
    assert again.status_code == 202, again.text
    by_clip = wait_until(
        lambda: done(f"{service.api}/api/episodes/{again.json()['id']}", token),
        timeout=120,
        what="the second episode",
    )
    assert [c["title"] for c in by_clip["chapters"]] == ["Part 1", "Part 2"]


def cut(service: Service, token: str, recording_id: str, title: str, start_s, end_s) -> dict:
    reply = httpx.post(
        f"{service.api}/api/recordings/{recording_id}/clips",
        json={"title": title, "start_s": round(start_s, 3), "end_s": round(end_s, 3)},
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    return wait_until(lambda: done(reply.json()["status_url"], token), timeout=60, what="clip")


def done(url: str, token: str) -> dict | None:
    body = httpx.get(url, headers=auth(token), timeout=10).json()
    assert body["status"] != "failed", body["error"]
    return body if body["status"] == "done" else None


def seconds(text: str) -> float:
    minutes, rest = text.split(":")
    return int(minutes) * 60 + float(rest)
