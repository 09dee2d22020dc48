"""Third-party browser code for the catch-up page, installed locally and never committed.

The page loads hls.js from a CDN, pinned by version and SRI hash, and falls back to
`/assets/hls.min.js` when that fails. The fallback file is installed by the machine's npm
(`npm ci` from api/web/package.json and package-lock.json, so npm checks the lock's integrity)
under a cache directory (setting AFTERLIVE_ASSETS_DIR, default `~/.cache/afterlive`), one
directory per version: `~/.cache/afterlive/web/hls.js-1.7.4/hls.min.js`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
HLS_JS_FILE = "hls.min.js"
_NPM_FILES = ("package.json", "package-lock.json")
_NPM_TIMEOUT_S = 300


class AssetsError(RuntimeError):
    """A web asset cannot be installed; the message says what to do."""


def default_assets_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "afterlive"


def hls_js_version() -> str:
    """The pinned hls.js version: api/web/package.json is the one place it is written."""
    manifest = json.loads((WEB_DIR / "package.json").read_text())
    return manifest["dependencies"]["hls.js"]


def hls_js_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "web" / f"hls.js-{hls_js_version()}"


def hls_js_path(cache_dir: Path) -> Path | None:
    """The installed hls.min.js of the pinned version, or None."""
    path = hls_js_dir(cache_dir) / HLS_JS_FILE
    return path if path.is_file() else None


def sri_sha384(path: Path) -> str:
    """The Subresource Integrity value of a file, as written in an `integrity` attribute."""
    digest = hashlib.sha384(Path(path).read_bytes()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


def install_hls_js(cache_dir: Path, *, npm: str | None = None) -> Path:
    """Install the pinned hls.js into `cache_dir` with `npm ci`; returns hls.min.js's path.

    npm runs in a temporary directory inside `cache_dir`; the finished version directory is
    renamed into place, so a reader sees a whole install or none, and concurrent installs
    (two services starting at once) leave one.
    """
    if (done := hls_js_path(cache_dir)) is not None:
        return done
    npm = npm or shutil.which("npm")
    if npm is None:
        raise AssetsError(
            "npm is not installed, so hls.js cannot be installed; install Node.js with npm "
            "(Debian: `apt-get install npm`), then run `afterlive assets`"
        )
    version = hls_js_version()
    target = hls_js_dir(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as tmp:
        work = Path(tmp)
        for name in _NPM_FILES:
            shutil.copyfile(WEB_DIR / name, work / name)
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done_npm = subprocess.run(
                command,
                cwd=work,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT_S,
                env=os.environ | {"npm_config_update_notifier": "false"},
            )
        except subprocess.TimeoutExpired as exc:
            raise AssetsError(f"`npm ci` for hls.js {version} ran over {_NPM_TIMEOUT_S} s") from exc
        except OSError as exc:
            raise AssetsError(f"cannot run npm ({npm}): {exc}") from exc
        if done_npm.returncode != 0:
            output = (done_npm.stderr or done_npm.stdout).strip() or "(npm printed nothing)"
            tail = "\n".join(output.splitlines()[-8:])
            raise AssetsError(
                f"`npm ci` for hls.js {version} failed (exit {done_npm.returncode}):\n{tail}"
            )
        package = work / "node_modules" / "hls.js"
        installed = json.loads((package / "package.json").read_text())["version"]
        if installed != version:
            raise AssetsError(f"npm installed hls.js {installed}, not the pinned {version}")
        staged = work / target.name
        staged.mkdir()
        shutil.copyfile(package / "dist" / HLS_JS_FILE, staged / HLS_JS_FILE)
        shutil.copyfile(package / "LICENSE", staged / "LICENSE")
        try:
            staged.rename(target)
        except OSError:
            if hls_js_path(cache_dir) is None:  # not a concurrent install that won the race
                raise
    path = hls_js_dir(cache_dir) / HLS_JS_FILE
    log.info("hls.js %s installed at %s", version, path)
    return path


def ensure_hls_js_in_background(
    cache_dir: Path, *, npm: str | None = None
) -> threading.Thread | None:
    """Install hls.js in a named thread if it is missing; logs the outcome and never raises.

    Returns the thread, or None when hls.js is already installed.
    """
    if hls_js_path(cache_dir) is not None:
        return None

    def install() -> None:
        try:
            install_hls_js(cache_dir, npm=npm)
        except Exception as exc:  # a missing fallback must never stop the service
            log.warning(
                "hls.js fallback not installed (%s); the catch-up page works while its CDN is "
                "reachable. Run `afterlive assets` to install it",
                exc,
            )

    thread = threading.Thread(target=install, name="hls-js-install", daemon=True)
    thread.start()
    return thread
