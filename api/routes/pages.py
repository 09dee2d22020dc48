"""The catch-up, admin and studio pages: public HTML, their static files and the local copy of
hls.js. The admin and studio pages hold no data: their scripts ask for the admin's or a
creator's token, then call the API."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import HTTPException, Request, status
from fastapi.responses import FileResponse, Response

from api.assets import WEB_DIR, default_assets_dir, hls_js_path
from api.edge import edge_router

router = edge_router(include_in_schema=False, tags=["pages"])

STATIC_DIR = WEB_DIR / "static"
# Files keep stable names across releases, so browsers revalidate them (a 304 is cheap)
# rather than keep a stale app.js next to a newer page.
REVALIDATE = "no-cache"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _file(path: Path, request: Request, *, media_type: str | None = None) -> Response:
    media_type = media_type or _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    response = FileResponse(
        path, media_type=media_type, headers={"Cache-Control": REVALIDATE}, stat_result=path.stat()
    )
    etag = response.headers["etag"]
    if etag in request.headers.get("if-none-match", ""):
        return Response(
            status_code=status.HTTP_304_NOT_MODIFIED,
            headers={"ETag": etag, "Cache-Control": REVALIDATE},
        )
    return response


def _assets_dir(request: Request) -> Path:
    """`app.state.assets_dir` if the app was given one, else the running service's setting."""
    state = request.app.state
    if (given := getattr(state, "assets_dir", None)) is not None:
        return Path(given)
    runtime = getattr(state, "runtime", None)
    return runtime.settings.assets_dir if runtime is not None else default_assets_dir()


@router.get("/")
def catch_up_page(request: Request) -> Response:
    return _file(WEB_DIR / "index.html", request, media_type="text/html; charset=utf-8")


@router.get("/admin")
def admin_page(request: Request) -> Response:
    return _file(WEB_DIR / "admin.html", request, media_type="text/html; charset=utf-8")


@router.get("/studio")
def studio_page(request: Request) -> Response:
    return _file(WEB_DIR / "studio.html", request, media_type="text/html; charset=utf-8")


@router.get("/static/{name}")
def static_file(name: str, request: Request) -> Response:
    path = STATIC_DIR / name
    # Only files directly in static/: `name` never holds a "/", and ".." is refused here.
    if name.startswith(".") or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
    return _file(path, request)


@router.get("/assets/hls.min.js")
def hls_js(request: Request) -> Response:
    path = hls_js_path(_assets_dir(request))
    if path is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail="hls.js is not installed; run `afterlive assets`"
        )
    return _file(path, request)
