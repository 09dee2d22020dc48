"""The catch-up page in a real browser: Debian's Chromium driven by Playwright, hls.js installed
by npm (the page's local fallback), `afterlive serve` with its embedded store, real ffmpeg
publishers. This machine is offline, and a networked CI must not depend on the CDN either: each
page aborts its request to the CDN, so the fallback is what plays, except where a test serves
the CDN's answer itself."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from api.assets import hls_js_path, hls_js_version, install_hls_js
from tests.utils.media import publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, service_env

CHROMIUM = os.environ.get("AFTERLIVE_CHROMIUM", "/usr/bin/chromium")
# FACTS.md: what Chromium needs as root on a closed network. Playwright gives every launch a
# fresh temporary profile (its own --user-data-dir).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CDN_URL = f"https://cdn.jsdelivr.net/npm/hls.js@{hls_js_version()}/dist/hls.min.js"
TTL_S = 6  # presigned segment URLs; short, so one test can watch them run out
SECONDS = 12
CURRENT_TIME = "document.getElementById('media').currentTime"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("assets")
    install_hls_js(directory)
    return directory


@pytest.fixture(scope="module")
def service(tmp_path_factory, assets) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("browser")
    env = service_env(
        data / "data", AFTERLIVE_ASSETS_DIR=str(assets), AFTERLIVE_PLAYBACK_URL_TTL=f"{TTL_S}s"
    )
    svc = Service(env, data / "serve.log")
    try:
        svc.wait_healthy()
        yield svc
    finally:
        assert svc.stop() == 0, svc.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Browser Host")


@pytest.fixture(scope="module")
def replays(service: Service, token: str) -> dict[str, dict]:
    """A finished video room and a finished audio room, published at the same time."""
    rooms = {
        "video": service.new_room(token, "video", title="Garden tour replay"),
        "audio": service.new_room(token, "audio", title="Evening radio replay"),
    }

    def publish(kind: str) -> None:
        publisher = publish_rtmp(rooms[kind]["rtmp_url"], seconds=SECONDS, video=kind == "video")
        assert publisher.wait(60) == 0, publisher.stderr.read()
        service.wait_ended(rooms[kind]["id"])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(publish, rooms))
    return rooms


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: these tests drive a real browser. Install Debian's "
            "(`apt-get install -y chromium`) or set AFTERLIVE_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@dataclass(kw_only=True)
class Tab:
    page: Page
    api: str
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    responses: dict[str, list[int]] = field(default_factory=dict)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.api + path)

    def play(self, title: str) -> None:
        self.page.locator(".card", has_text=title).click()

    def current_time(self) -> float:
        return self.page.evaluate(CURRENT_TIME)

    def wait_time_past(self, seconds: float, timeout_s: float = 30) -> float:
        self.page.wait_for_function(f"{CURRENT_TIME} > {seconds}", timeout=timeout_s * 1000)
        return self.current_time()

    def dataset(self, element_id: str, key: str) -> str | None:
        return self.page.evaluate(f"document.getElementById('{element_id}').dataset.{key}")

    def errors(self, *expected_urls: str) -> list[str]:
        """Console errors and uncaught exceptions, less failed loads of `expected_urls`."""
        unexpected = [
            f"{m.text} ({m.location.get('url')})"
            for m in self.console
            if m.type == "error"
            and not (
                m.text.startswith("Failed to load resource")
                and m.location.get("url", "").split("?")[0] in expected_urls
            )
        ]
        return unexpected + self.page_errors


@pytest.fixture
def tab(browser: Browser, service: Service) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(30_000)
    tab = Tab(page=page, api=service.api)
    page.on("console", lambda message: tab.console.append(message))
    page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
    page.on(
        "response",
        lambda r: tab.responses.setdefault(r.url.split("?")[0], []).append(r.status),
    )
    page.route(CDN_URL, lambda route: route.abort())
    yield tab
    context.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    """Where screenshots of the page go, to look at after a run (pytest's temp dir)."""
    return tmp_path_factory.mktemp("screens")


def screenshot(tab: Tab, screens: Path, name: str) -> None:
    tab.page.screenshot(path=str(screens / f"{name}.png"), full_page=True)


def test_replay_plays_in_the_browser_with_the_local_hls_js(tab, replays, screens):
    title = replays["video"]["title"]
    tab.open()
    card = tab.page.locator("#replay-list .card", has_text=title)
    card.wait_for()
    assert "Browser Host" in card.inner_text()
    assert re.search(r"expires in (23 h 5\d|24 h 00) min", card.inner_text())
    tab.play(title)
    tab.wait_time_past(3)

    assert tab.page.evaluate("document.documentElement.dataset.hlsSource") == "local"
    assert tab.responses[f"{tab.api}/assets/hls.min.js"] == [200]
    assert tab.page.locator("#now-title").inner_text() == title
    assert tab.dataset("stage", "kind") == "video"
    assert tab.page.locator("#golive").is_hidden()  # a replay: nothing to go live to
    seek_max = float(tab.page.locator("#seek").get_attribute("max"))
    assert abs(seek_max - SECONDS) <= 2.1
    assert re.fullmatch(r"0:0\d / 0:1\d", tab.page.locator("#time").inner_text())
    screenshot(tab, screens, "replay-video")

    # Keyboard: the play button has focus after opening, Space pauses and plays.
    tab.page.keyboard.press("Space")
    tab.page.wait_for_function("document.getElementById('media').paused")
    tab.page.keyboard.press("Space")
    tab.page.wait_for_function("!document.getElementById('media').paused")
    tab.page.locator('.speed button[data-rate="2"]').click()
    assert tab.page.evaluate("document.getElementById('media').playbackRate") == 2
    assert tab.errors(CDN_URL) == []


def test_audio_room_plays_in_the_audio_layout(tab, replays, screens):
    title = replays["audio"]["title"]
    tab.open()
    tab.play(title)
    tab.wait_time_past(3)
    assert tab.dataset("stage", "kind") == "audio"
    assert tab.page.locator("#audio-card").is_visible()
    assert tab.page.locator("#audio-title").inner_text() == title
    assert tab.page.locator("#audio-avatar").inner_text() == "BH"
    # The level meter follows the 440 Hz tone through Web Audio (no CSS stand-in needed here).
    tab.page.wait_for_function(
        "[...document.querySelectorAll('#meter span')]"
        ".some(b => parseFloat(b.style.transform.slice(7)) > 0.3)"
    )
    assert "css-meter" not in (tab.page.locator("#stage").get_attribute("class") or "")
    screenshot(tab, screens, "replay-audio")
    assert tab.errors(CDN_URL) == []


def test_live_room_plays_at_the_live_edge_then_from_the_start(tab, service, token, screens):
    title = "Live in the browser"
    room = service.new_room(token, "video", title=title)
    publisher = publish_rtmp(room["rtmp_url"], seconds=30)
    try:

        def live_for(seconds: float) -> dict | None:
            items = httpx.get(
                f"{service.api}/api/recordings",
                params={"status": "live", "room_id": room["id"]},
                timeout=10,
            ).json()["items"]
            return items[0] if items and items[0]["duration_s"] >= seconds else None

        wait_until(lambda: live_for(8), timeout=30, interval=0.5, what="8 s of live media")
        tab.open()
        card = tab.page.locator("#live-list .card", has_text=title)
        assert card.locator(".badge.live").inner_text() == "LIVE"
        assert "started" in card.inner_text()
        tab.play(title)
        tab.wait_time_past(0)
        start, edge = tab.page.evaluate(
            "(m => [m.currentTime, m.seekable.end(0)])(document.getElementById('media'))"
        )
        assert start >= 2 and edge - start < 10, (start, edge)  # at the live edge, not from 0
        tab.wait_time_past(start + 2)
        assert tab.page.locator("#golive").is_visible()
        assert tab.page.locator("#now-meta .badge.live").is_visible()
        screenshot(tab, screens, "live")

        tab.page.get_by_role("button", name="Watch from the beginning").click()
        tab.page.wait_for_function(f"{CURRENT_TIME} < 3")
        tab.wait_time_past(3)  # the DVR window plays from its start
        assert tab.page.locator("#golive").inner_text() == "Go live"
        tab.page.locator("#golive").click()
        tab.page.wait_for_function(
            "(() => { const m = document.getElementById('media');"
            " return m.seekable.end(0) - m.currentTime < 10 && !m.paused; })()"
        )
        assert publisher.wait(60) == 0, publisher.stderr.read()
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    # The list refresh moves it to the replays, and the player says so; playback goes on.
    tab.page.locator("#replay-list .card", has_text=title).wait_for(timeout=30_000)
    assert "replay" in tab.page.locator("#now-meta").inner_text()
    assert tab.errors(CDN_URL) == []


def test_expired_segment_urls_make_the_page_reload_and_resume(tab, service, replays):
    """The store refuses a segment URL past its TTL (a real 403, from the real store); the
    page reloads the playlists, which carry fresh URLs, and plays on. The route only delays
    segment requests until their URLs have expired."""
    store = f"http://127.0.0.1:{service.env['AFTERLIVE_STORE_PORT']}/**"
    release_at = time.monotonic() + TTL_S + 2
    held: list[Route] = []
    tab.page.route(
        store,
        lambda route: held.append(route) if time.monotonic() < release_at else route.continue_(),
    )
    tab.open()
    tab.play(replays["video"]["title"])
    while time.monotonic() < release_at:
        tab.page.wait_for_timeout(200)  # let the browser's requests reach the route
    assert held, "no segment request reached the store"
    for route in held:
        with contextlib.suppress(PlaywrightError):  # hls.js gave up on it and asked again
            route.continue_()
    tab.wait_time_past(3)
    statuses = [s for url, got in tab.responses.items() if url.endswith(".ts") for s in got]
    assert 403 in statuses and 200 in statuses
    assert any("reloading the source" in m.text for m in tab.console if m.type == "info")
    refused = [url for url, got in tab.responses.items() if 403 in got]
    assert tab.errors(CDN_URL, *refused) == []


def test_cdn_copy_is_used_only_when_it_matches_its_integrity_hash(tab, assets, replays):
    genuine = hls_js_path(assets).read_bytes()
    served = {"body": genuine}

    def cdn(route: Route) -> None:
        route.fulfill(
            status=200,
            body=served["body"],
            headers={"Content-Type": "text/javascript", "Access-Control-Allow-Origin": "*"},
        )

    tab.page.unroute(CDN_URL)
    tab.page.route(CDN_URL, cdn)
    for body, source in ((genuine, "cdn"), (genuine + b"\n// changed", "local")):
        served["body"] = body
        tab.console.clear()
        tab.open()
        tab.play(replays["video"]["title"])
        tab.wait_time_past(1)
        assert tab.page.evaluate("document.documentElement.dataset.hlsSource") == source
        blocked = [m.text for m in tab.console if "integrity" in m.text and CDN_URL in m.text]
        assert bool(blocked) == (source == "local")
        assert [e for e in tab.errors() if e.split(" (")[0] not in blocked] == []


def test_unknown_deep_link_says_so(tab):
    tab.open("/#/r/no-such-recording")
    tab.page.get_by_text("This recording does not exist").wait_for()
    assert tab.page.locator("#now-title").inner_text() == "Not available"
    assert tab.errors(CDN_URL, f"{tab.api}/api/recordings/no-such-recording") == []
