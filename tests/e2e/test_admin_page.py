"""The admin page in a real browser: Debian's Chromium driven by Playwright (as in
test_browser.py) against `afterlive serve` with its embedded store, one recording made by a real
ffmpeg publisher. An admin holds it, releases it, extends it and takes it down from the page, and
reads each step back in the page's audit log; the public API then answers 410."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, expect

from tests.e2e.test_browser import Tab, browser  # noqa: F401 (the module's Chromium fixture)
from tests.utils.media import publish_rtmp
from tests.utils.service import Service, module_service

TITLE = "Night shift radio"
HOST = "Admin Page Host"
REASON = "legal request #42"


service = module_service("admin-page")


@pytest.fixture(scope="module")
def admin_token(service: Service) -> str:
    return (service.data_dir / "admin_token").read_text().strip()


@pytest.fixture(scope="module")
def creator_token(service: Service) -> str:
    return service.new_creator(HOST)


@pytest.fixture(scope="module")
def recording_id(service: Service, creator_token: str) -> str:
    """One ended audio recording, published for real."""
    room = service.new_room(creator_token, "audio", title=TITLE)
    publisher = publish_rtmp(room["rtmp_url"], video=False, seconds=6)
    assert publisher.wait(60) == 0, publisher.stderr.read()
    [recording] = service.wait_ended(room["id"])
    assert recording.object_count > 0
    return recording.id


@pytest.fixture
def tab(browser: Browser, service: Service) -> Iterator[Tab]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    tab = Tab(page=page, api=service.api)
    page.on("console", lambda message: tab.console.append(message))
    page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
    yield tab
    context.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("admin-screens")


def sign_in(tab: Tab, token: str) -> None:
    tab.open("/admin")
    tab.page.get_by_label("Admin token").fill(token)
    tab.page.get_by_role("button", name="Sign in").click()


def audit_row(tab: Tab, action: str, recording_id: str) -> Locator:
    return tab.page.locator(
        f'#audit-list tr[data-action="{action}"][data-recording="{recording_id}"]'
    )


def expires_at(row: Locator) -> datetime:
    return datetime.fromisoformat(
        row.locator("td").nth(2).locator("time").get_attribute("datetime")
    )


def confirm(tab: Tab, button: str) -> None:
    """The page's own modal <dialog> (not a browser prompt): its confirm button."""
    dialog = tab.page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


def test_hold_release_extend_and_take_down_from_the_page(
    tab, service, admin_token, recording_id, screens
):
    page = tab.page
    sign_in(tab, admin_token)
    row = page.locator(f'#exp-list tr[data-id="{recording_id}"]')
    expect(row).to_contain_text(TITLE)
    expect(row).to_contain_text(HOST)
    assert re.search(r"expires in (23 h 5\d|24 h 00) min", row.inner_text())
    assert re.search(r"\d+(\.\d)? kB\s+\d+ segments", row.inner_text())
    expect(page.locator("#live-empty")).to_have_text("Nobody is live right now.")
    assert page.evaluate("sessionStorage.getItem('afterlive.adminToken')") == admin_token

    # Hold, with a reason: the badge, the Holds section and the audit log show it.
    row.get_by_role("button", name="Hold").click()
    page.get_by_label("Reason").fill(REASON)
    confirm(tab, "Hold")
    expect(row.locator(".badge.held")).to_have_text("HELD")
    expect(row).to_contain_text("paused: held")
    held = page.locator(f'#hold-list tr[data-id="{recording_id}"]')
    expect(held).to_contain_text(REASON)
    expect(audit_row(tab, "hold", recording_id)).to_contain_text(REASON)
    expect(audit_row(tab, "hold", recording_id)).to_contain_text("admin")
    expect(page.locator("#exp-msg")).to_have_text(f"Held “{TITLE}”.")
    page.screenshot(path=str(screens / "admin-held.png"), full_page=True)

    # Release: the expiry is back (the later of it and an hour from now: still ~24 h).
    row.get_by_role("button", name="Release").click()
    expect(row.locator(".badge.held")).to_have_count(0)
    expect(held).to_have_count(0)
    expect(audit_row(tab, "release", recording_id)).to_have_count(1)
    expect(page.locator("#hold-empty")).to_be_visible()

    # Extend by 2 h: the expiry moves by exactly that.
    before = expires_at(row)
    row.get_by_role("button", name="Extend").click()
    page.get_by_label("Hours to add").fill("2")
    confirm(tab, "Extend")
    expect(audit_row(tab, "extend", recording_id)).to_have_count(1)
    assert expires_at(row) - before == timedelta(hours=2)
    assert re.search(r"expires in (25 h 5\d|26 h 00) min", row.inner_text())
    expect(page.locator("#exp-msg")).to_contain_text(f"Extended “{TITLE}” by 2 h")

    # A dry run finds nothing due; the recording is not touched.
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.locator("#sweep-msg")).to_contain_text("Nothing is due")

    # Take down, with its clips: confirmed in the dialog, gone from the list, audited.
    row.get_by_role("button", name="Take down").click()
    expect(page.get_by_role("dialog")).to_contain_text("It cannot be undone.")
    page.get_by_label("Also delete clips made from it").check()
    confirm(tab, "Take down")
    expect(row).to_have_count(0)
    takedown = audit_row(tab, "takedown", recording_id)
    expect(takedown).to_contain_text(TITLE)  # the page still knows the title of what it removed
    assert int(takedown.locator("td").nth(4).inner_text()) > 0
    # The DELETE reply counts the clips deleted with it (none were cut from this one).
    expect(page.locator("#exp-msg")).to_contain_text(f"Took down “{TITLE}”")
    expect(page.locator("#exp-msg")).to_contain_text("deleted (and 0 clips cut from it).")
    actions = page.locator(f'#audit-list tr[data-recording="{recording_id}"]')
    newest_first = [a.get_attribute("data-action") for a in actions.all()]
    assert newest_first == ["takedown", "extend", "release", "hold"]
    page.screenshot(path=str(screens / "admin-after-takedown.png"), full_page=True)

    public = httpx.get(f"{service.api}/api/recordings/{recording_id}", timeout=10)
    assert public.status_code == 410, public.text

    # Forgetting the token hides the data and leaves nothing in the tab's storage.
    page.get_by_role("button", name="Forget token").click()
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert tab.errors() == []


def test_a_wrong_token_or_a_creator_token_is_refused_with_a_clear_message(
    tab, creator_token, screens
):
    page = tab.page
    message = page.locator("#auth-msg")
    sign_in(tab, "not-the-admin-token")
    expect(message).to_contain_text("This token was not accepted (401: unknown admin token)")
    expect(page.locator("#console")).to_be_hidden()
    page.screenshot(path=str(screens / "admin-401.png"), full_page=True)
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept

    page.get_by_label("Admin token").fill(creator_token)
    page.get_by_role("button", name="Sign in").click()
    expect(message).to_contain_text("This is a creator's token, not the admin token (403")
    expect(page.locator("#console")).to_be_hidden()
    # The browser logs each refused request; nothing else may show up.
    refused = [m for m in tab.console if "status of 401" in m.text or "status of 403" in m.text]
    assert refused and all("/api/admin/" in m.location.get("url", "") for m in refused)
    admin_urls = {m.location["url"].split("?")[0] for m in refused}
    assert tab.errors(*admin_urls) == []
