"""The catch-up page, its static files and the local hls.js: the app without a runtime (pages
need none), and hls.js installed once for the module by the machine's real npm."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.assets import (
    WEB_DIR,
    AssetsError,
    ensure_hls_js_in_background,
    hls_js_path,
    hls_js_version,
    install_hls_js,
    sri_sha384,
)
from api.settings import load_settings

CDN_SCRIPT = re.compile(r"<script\b[^>]*\bid=\"hls-cdn\"[^>]*>", re.S)


def client_for(tmp_path: Path, assets_dir: Path) -> TestClient:
    # Not entered as a context manager: no lifespan, so no runtime, store or catalog is started.
    app = create_app(load_settings(data_dir=tmp_path / "data"))
    app.state.assets_dir = assets_dir
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """An assets dir with hls.js installed by `npm ci` (a few seconds)."""
    assets = tmp_path_factory.mktemp("assets")
    install_hls_js(assets)
    return assets


def cdn_script_tag(html: str) -> dict[str, str]:
    tag = CDN_SCRIPT.search(html)
    assert tag, "no <script id=hls-cdn> in the page"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group()))


def test_page_loads_pinned_hls_js_from_the_cdn_with_sri_and_a_local_fallback(tmp_path):
    page = client_for(tmp_path, tmp_path / "assets").get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    script = cdn_script_tag(page.text)
    version = hls_js_version()
    assert script["src"] == f"https://cdn.jsdelivr.net/npm/hls.js@{version}/dist/hls.min.js"
    assert re.fullmatch(r"sha384-[A-Za-z0-9+/]{64}", script["integrity"])
    assert script["crossorigin"] == "anonymous"
    assert script["data-fallback"] == "/assets/hls.min.js"
    assert "onerror" in script and "async" in CDN_SCRIPT.search(page.text).group()
    assert '<script type="module" src="/static/app.js">' in page.text
    assert '<link rel="stylesheet" href="/static/style.css">' in page.text


def test_version_is_pinned_once_and_the_lock_names_no_registry():
    manifest = json.loads((WEB_DIR / "package.json").read_text())
    lock = json.loads((WEB_DIR / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/hls.js"]
    assert manifest["dependencies"] == {"hls.js": hls_js_version()}
    assert re.fullmatch(r"\d+\.\d+\.\d+", hls_js_version())  # exact, not a range
    assert entry["version"] == hls_js_version()
    assert entry["integrity"].startswith("sha512-")
    assert "resolved" not in entry  # npm uses whatever registry the machine is configured for


def test_static_files_have_their_types_and_revalidate(tmp_path):
    client = client_for(tmp_path, tmp_path / "assets")
    js = client.get("/static/app.js")
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["cache-control"] == "no-cache"
    assert "loadSource" in js.text
    css = client.get("/static/style.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    again = client.get("/static/app.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for missing in ("/static/nope.js", "/static/..%2fassets.py", "/static/.hidden"):
        assert client.get(missing).status_code == 404, missing


def test_admin_page_is_public_html_that_loads_admin_js(tmp_path):
    client = client_for(tmp_path, tmp_path / "assets")
    page = client.get("/admin")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/admin.js">' in page.text
    assert '<link rel="stylesheet" href="/static/style.css">' in page.text
    assert 'type="password"' in page.text and "hls" not in page.text  # no player here
    again = client.get("/admin", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_admin_js_is_served_and_calls_the_admin_api(tmp_path):
    client = client_for(tmp_path, tmp_path / "assets")
    js = client.get("/static/admin.js")
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["cache-control"] == "no-cache"
    assert "/api/admin/recordings" in js.text and "/api/admin/audit" in js.text
    assert "sessionStorage" in js.text and "localStorage" not in js.text  # the token: tab only
    css = client.get("/static/style.css").text
    assert ".token-form" in css and ".cards" in css  # both pages' styles in the one sheet


def test_local_hls_js_is_404_with_what_to_do_until_installed(tmp_path):
    reply = client_for(tmp_path, tmp_path / "empty").get("/assets/hls.min.js")
    assert reply.status_code == 404
    assert reply.json() == {"detail": "hls.js is not installed; run `afterlive assets`"}


def test_installed_hls_js_is_served_and_is_the_file_the_page_pins(tmp_path, installed):
    path = hls_js_path(installed)
    assert path == installed / "web" / f"hls.js-{hls_js_version()}" / "hls.min.js"
    assert (path.parent / "LICENSE").is_file()
    assert not [p for p in (installed / "web").iterdir() if p.name.startswith(".")]  # no temp
    client = client_for(tmp_path, installed)
    reply = client.get("/assets/hls.min.js")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.content == path.read_bytes()
    # The CDN copy is only accepted by browsers if it hashes to this: the same npm file.
    assert cdn_script_tag(client.get("/").text)["integrity"] == sri_sha384(path)


def test_install_is_idempotent(installed):
    path = hls_js_path(installed)
    stamp = path.stat().st_mtime_ns
    assert install_hls_js(installed) == path
    assert path.stat().st_mtime_ns == stamp
    assert ensure_hls_js_in_background(installed) is None  # nothing to do: no thread


def test_background_install_installs_when_missing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="api.assets")
    thread = ensure_hls_js_in_background(tmp_path)
    assert thread is not None and thread.name == "hls-js-install"
    thread.join(120)
    assert hls_js_path(tmp_path) is not None
    assert f"hls.js {hls_js_version()} installed at" in caplog.text


def test_background_install_failure_is_one_warning_not_an_exception(tmp_path, caplog):
    thread = ensure_hls_js_in_background(tmp_path, npm="/bin/false")
    thread.join(60)
    assert hls_js_path(tmp_path) is None
    [warning] = [r for r in caplog.records if r.name == "api.assets"]
    assert warning.levelname == "WARNING"
    assert "failed (exit 1)" in warning.getMessage()
    assert "afterlive assets" in warning.getMessage()


def test_missing_npm_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no npm on it
    with pytest.raises(AssetsError, match=r"npm is not installed.*afterlive assets"):
        install_hls_js(tmp_path / "assets")
