"""The studio page in a real browser: Debian's Chromium driven by Playwright (as in
test_browser.py) against `afterlive serve` with its embedded store, one recording made by a real
ffmpeg publisher. A creator signs in with their token, picks the recording, sees its waveform,
types a range, makes a clip and plays it, creates a programme with artwork, and assembles an
episode of the clip (when the episode renderer, transcode/episode.py, is in the tree)."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from api.assets import WEB_DIR, install_hls_js
from tests.e2e.test_browser import CDN_URL, Tab, browser  # noqa: F401 (the module's Chromium)
from tests.utils.media import publish_rtmp
from tests.utils.service import Service, service_env

TITLE = "Studio session"
HOST = "Studio Page Host"
SECONDS = 12
EPISODES = (Path(__file__).parents[2] / "transcode" / "episode.py").exists()
PIXELS = """(() => {
  const c = document.getElementById('wave');
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) drawn += data[i] > 0;
  return drawn;
})()"""


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("studio-page")
    assets = data / "assets"
    install_hls_js(assets)
    svc = Service(service_env(data / "data", AFTERLIVE_ASSETS_DIR=str(assets)), data / "serve.log")
    try:
        svc.wait_healthy()
        yield svc
    finally:
        assert svc.stop() == 0, svc.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def creator_token(service: Service) -> str:
    return service.new_creator(HOST)


@pytest.fixture(scope="module")
def recording_id(service: Service, creator_token: str) -> str:
    """One ended video recording (H.264 + AAC), published for real."""
    room = service.new_room(creator_token, "video", title=TITLE)
    publisher = publish_rtmp(room["rtmp_url"], seconds=SECONDS)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    return recording.id


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


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio-screens")


def png(size: int = 64) -> bytes:
    """A small RGB gradient PNG, written by hand (no imaging library in the test deps)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(size) for v in (x * 4, y * 4, 160)) for y in range(size)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def play_past(tab: Tab, element_id: str, seconds: float) -> None:
    """Play a player of the page (muted: no user gesture needed) until it is past `seconds`."""
    tab.page.evaluate(
        "id => { const m = document.getElementById(id); m.muted = true; m.play(); }", element_id
    )
    tab.page.wait_for_function(
        f"document.getElementById('{element_id}').currentTime > {seconds}", timeout=30_000
    )


def test_cut_a_clip_on_the_waveform_and_make_an_episode_of_it(
    tab, service, creator_token, recording_id, screens, tmp_path
):
    page = tab.page
    tab.open("/studio")
    page.get_by_label("Creator token").fill(creator_token)
    page.get_by_role("button", name="Sign in").click()
    assert page.evaluate("sessionStorage.getItem('afterlive.creatorToken')") == creator_token

    # 1. The recording, with its duration and expiry; picking it opens the editor.
    pick = page.locator(f'button.rec-pick[data-id="{recording_id}"]')
    expect(pick).to_contain_text(TITLE)
    assert re.search(r"1\d s · expires in (23 h 5\d|24 h 00) min", pick.inner_text())
    pick.click()
    expect(pick).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#ed-title")).to_have_text(TITLE)
    expect(page.locator("#wave-status")).to_be_empty()
    expect(page.locator("#ed-meta")).to_contain_text(re.compile(r"0:1\d\.\d long"))
    duration = float(page.locator("#wave").get_attribute("aria-valuemax"))
    assert abs(duration - SECONDS) <= 2.1
    assert page.evaluate(PIXELS) > 5000  # the waveform, the axis and the playhead are drawn
    expect(page.locator("#ed-time")).to_have_text(re.compile(r"0:00\.\d / 0:1\d\.\d"))

    # The timeline is a keyboard slider: arrows seek, Space plays.
    page.locator("#wave").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("Math.abs(document.getElementById('rec-media').currentTime - 2) < 0.3")
    expect(page.locator("#wave")).to_have_attribute("aria-valuetext", re.compile(r"^0:02\.0 of"))
    page.keyboard.press("Space")
    page.wait_for_function("!document.getElementById('rec-media').paused")
    expect(page.locator("#ed-play")).to_have_text("Pause")
    page.keyboard.press("Space")
    page.wait_for_function("document.getElementById('rec-media').paused")

    # A click on the waveform seeks there.
    box = page.locator("#wave").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    page.wait_for_function("document.getElementById('rec-media').currentTime > 8")
    at = page.evaluate("document.getElementById('rec-media').currentTime")
    assert abs(at - 0.75 * duration) < 0.5, at

    # A drag on the waveform chooses a range (to the tenth of a second).
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    start = float(page.get_by_label("Start", exact=True).input_value().split(":")[1])
    end = float(page.get_by_label("End", exact=True).input_value().split(":")[1])
    assert abs(start - 0.25 * duration) < 0.2 and abs(end - 0.5 * duration) < 0.2, (start, end)
    expect(page.locator("#range-len")).to_have_text(f"{end - start:.1f} s")

    # A typed range, checked; then previewed (plays from the start, stops at the end).
    page.get_by_label("Start", exact=True).fill("0:06.0")
    page.get_by_label("End", exact=True).fill("0:02.0")
    page.get_by_role("button", name="Preview range").click()
    expect(page.locator("#clip-msg")).to_have_text("The end must come after the start.")
    expect(page.get_by_label("End", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Start", exact=True).fill("0:02.0")
    page.get_by_label("End", exact=True).fill("0:06.0")
    page.get_by_label("End", exact=True).press("Tab")
    expect(page.locator("#range-len")).to_have_text("4.0 s")
    page.evaluate("document.getElementById('rec-media').muted = true")
    page.get_by_role("button", name="Preview range").click()
    page.wait_for_function("document.getElementById('rec-media').currentTime > 3")
    page.wait_for_function("document.getElementById('rec-media').paused", timeout=15_000)
    stopped = page.evaluate("document.getElementById('rec-media').currentTime")
    assert 5.9 <= stopped < 6.5, stopped
    page.screenshot(path=str(screens / "studio-range.png"), full_page=True)

    # Make the clip: progress, then done, played and linked.
    page.get_by_label("Clip title").fill("The good part")
    page.get_by_role("button", name="Make clip").click()
    expect(page.locator("#clip-msg")).to_contain_text("“The good part” is done", timeout=90_000)
    expect(page.locator("#clip-result")).to_be_visible()
    audio_href = page.locator("#clip-audio").get_attribute("href")
    assert httpx.get(audio_href, timeout=10).status_code == 200
    play_past(tab, "clip-media", 1)
    row = page.locator("#clips-list tr", has_text="The good part")
    expect(row).to_have_attribute("data-status", "done")
    expect(row).to_contain_text("0:02.0\u20130:06.0")  # an en dash
    clip_id = row.get_attribute("data-id")
    clip = httpx.get(
        f"{service.api}/api/clips/{clip_id}",
        headers={"Authorization": f"Bearer {creator_token}"},
        timeout=10,
    ).json()
    assert clip["status"] == "done" and clip["start_s"] == 2.0 and clip["end_s"] == 6.0
    page.screenshot(path=str(screens / "studio-clip.png"), full_page=True)

    # 3. A programme, with artwork; its feed URL is shown, with a copy button.
    expect(page.locator("#prog-new")).to_have_attribute("open", "")
    page.get_by_label("Title", exact=True).fill("The Studio Show")
    page.get_by_label("Author").fill(HOST)
    page.get_by_label("Description").first.fill("Best bits of the studio sessions.")
    page.get_by_label("Category").fill("Technology")
    page.get_by_role("button", name="Create programme").click()
    card = page.locator(".prog", has_text="The Studio Show")
    expect(card).to_contain_text("Technology")
    feed_url = card.locator(".feed-url").input_value()
    assert re.fullmatch(rf"{re.escape(service.api)}/api/programmes/\w+/feed\.xml", feed_url)
    assert httpx.get(feed_url, timeout=10).status_code == 200
    card.get_by_role("button", name="Copy feed URL").click()
    expect(page.locator("#prog-msg")).to_contain_text(re.compile("copied|selected"))
    artwork = tmp_path / "art.png"
    artwork.write_bytes(png())
    card.locator("input[type=file]").set_input_files(artwork)
    expect(page.locator("#prog-msg")).to_have_text("Artwork uploaded: art.png.")
    expect(card.locator(".prog-art img")).to_have_js_property("complete", True)
    assert card.locator(".prog-art img").evaluate("img => img.naturalWidth") == 64

    if not EPISODES:
        assert tab.errors(CDN_URL) == []
        return

    # 4. An episode of the clip: added, added again and removed; progress, done, chapters.
    add = row.get_by_role("button", name="Add to episode: The good part")
    add.click()
    add.click()
    expect(page.locator("#ep-order li")).to_have_count(2)
    expect(page.get_by_role("button", name="Move up “The good part” (clip 1)")).to_be_disabled()
    page.get_by_role("button", name="Move down “The good part” (clip 1)").click()
    # Focus stays with the moved clip: its "Move down" is disabled now, so on its "Move up".
    focused = "document.activeElement.getAttribute('aria-label')"
    assert page.evaluate(focused) == "Move up “The good part” (clip 2)"
    page.keyboard.press("Tab")  # skips the disabled "Move down": on "Remove"
    page.keyboard.press("Enter")
    expect(page.locator("#ep-order li")).to_have_count(1)
    assert page.evaluate(focused) == "Remove “The good part” (clip 1)"
    page.get_by_label("Episode title").fill("Episode one")
    page.get_by_label("Crossfade (seconds)").fill("0.5")
    page.get_by_role("button", name="Make episode").click()
    expect(page.locator("#ep-msg")).to_contain_text(
        "Episode “Episode one” is done", timeout=120_000
    )
    expect(page.locator("#ep-chapters li")).to_have_count(1)
    expect(page.locator("#ep-chapters")).to_contain_text("0:00.0 The good part")
    play_past(tab, "ep-media", 1)
    page.screenshot(path=str(screens / "studio-episode.png"), full_page=True)
    assert tab.errors(CDN_URL) == []


def test_a_wrong_token_is_refused_with_a_clear_message(tab):
    page = tab.page
    tab.open("/studio")
    page.get_by_label("Creator token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#auth-msg")).to_contain_text("This token was not accepted (401")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    refused = [m for m in tab.console if "status of 401" in m.text]
    assert tab.errors(CDN_URL, *{m.location["url"].split("?")[0] for m in refused}) == []


def test_another_creators_recording_has_no_waveform(service, recording_id):
    stranger = service.new_creator("Someone Else")
    reply = httpx.get(
        f"{service.api}/api/recordings/{recording_id}/waveform",
        headers={"Authorization": f"Bearer {stranger}"},
        timeout=10,
    )
    assert reply.status_code == 403, reply.text


def test_the_studio_loads_the_same_pinned_hls_js_as_the_catch_up_page():
    """One version and one SRI hash for both pages: a bump of one must not miss the other."""
    tag = re.compile(r"<script\b[^>]*\bid=\"hls-cdn\"[^>]*>", re.S)
    pages = [tag.search((WEB_DIR / page).read_text()) for page in ("index.html", "studio.html")]
    assert all(pages) and pages[0].group() == pages[1].group()
